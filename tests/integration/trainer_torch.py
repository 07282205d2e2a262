"""tests/integration/trainer_torch.py DIR N NIN NOUT - load DIR/model.safetensors
with the lines of docs/model-file.md (kept identical: the block between the
markers is checked against the doc by trainer_torch.sh), predict DIR/x.f32
and compare with the C predictions DIR/y.f32.

Tolerance: max |y_torch - y_c| <= 2e-6 * max |y_c| (float32 rounding of a
different order of operations: torch's addmm and division by std, surge's
sgemm + bias and multiplication by 1/std). Prints the error; exit 1 when
it is exceeded.
"""
import sys

import numpy as np

# --- begin docs/model-file.md ---
import json, struct, torch

def load_surge_model(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    meta = header.pop("__metadata__")
    state = {k: torch.frombuffer(data, dtype=torch.float32,
                                 offset=v["data_offsets"][0],
                                 count=(v["data_offsets"][1] - v["data_offsets"][0]) // 4
                                 ).reshape(v["shape"])
             for k, v in header.items()}
    widths = ([int(meta["surge.n_inputs"])] + json.loads(meta["surge.layers"])
              + [int(meta["surge.n_outputs"])])
    act = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU,
           "tanh": torch.nn.Tanh}[meta["surge.activation"]]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(act())
    net = torch.nn.Sequential(*layers)
    net.load_state_dict(state)
    net.eval()
    norm = {k: torch.tensor(json.loads(meta["surge." + k]))
            for k in ("in_mean", "in_std", "out_mean", "out_std")}
    def predict(x):  # x: (rows, n_inputs) in physical units
        with torch.no_grad():
            y = net((x - norm["in_mean"]) / norm["in_std"])
            return y * norm["out_std"] + norm["out_mean"]
    return predict, meta
# --- end docs/model-file.md ---


def main():
    d, n, nin, nout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    predict, meta = load_surge_model(d + "/model.safetensors")
    x = torch.from_numpy(np.fromfile(d + "/x.f32", dtype="<f4").reshape(n, nin))
    yc = np.fromfile(d + "/y.f32", dtype="<f4").reshape(n, nout)
    yt = predict(x).numpy()
    err = float(np.max(np.abs(yt - yc)))
    scale = float(np.max(np.abs(yc)))
    tol = 2e-6 * scale
    print("activation %s max_abs_err %.3g scale %.4g tolerance %.3g input_names %s"
          % (meta["surge.activation"], err, scale, tol, meta.get("input_names")))
    sys.exit(0 if err <= tol else 1)


main()
