"""tests/integration/trainer_torch.py MODE DIR N NIN NOUT B STEPS OPTIM CLIP

MODE predict: load DIR/model.safetensors with the lines of docs/model-file.md
(kept identical: the block between the markers is checked against the doc
by trainer_torch.sh), predict DIR/x.f32 and compare with the C predictions
DIR/y.f32. Tolerance: max |y_torch - y_c| <= 2e-6 * max |y_c| (float32
rounding of a different order of operations: torch's addmm and division by
std, surge's sgemm + bias and multiplication by 1/std).

MODE train: load DIR/model0.safetensors (the C trainer's initial weights),
train STEPS steps in PyTorch with torch.optim (OPTIM: adam, adamw with
weight_decay 0.01, sgd with momentum 0.9; lr 1e-2; clip_grad_norm_ at CLIP
when > 0) on the same batches, normalised with the file's statistics, and
compare every parameter with DIR/model.safetensors (the C trainer after the
same steps). Tolerance: max |p_torch - p_c| <= 1e-4 (lr 1e-2 x 60 steps
moves weights by up to ~0.6; float rounding differences stay ~1e-6).

Prints the errors; exit 1 when a tolerance is exceeded.
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
    predict.net, predict.norm = net, norm  # for fine-tuning
    return predict, meta
# --- end docs/model-file.md ---


def read(path, rows, cols):
    return torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(rows, cols))


def check_predict(d, n, nin, nout):
    predict, meta = load_surge_model(d + "/model.safetensors")
    yt = predict(read(d + "/x.f32", n, nin)).numpy()
    yc = read(d + "/y.f32", n, nout).numpy()
    err = float(np.max(np.abs(yt - yc)))
    scale = float(np.max(np.abs(yc)))
    tol = 2e-6 * scale
    print("predict: activation %s max_abs_err %.3g scale %.4g tolerance %.3g "
          "input_names %s" % (meta["surge.activation"], err, scale, tol,
                              meta.get("input_names")))
    return err <= tol


def check_train(d, n, nin, nout, b, steps, optim, clip):
    p0, _ = load_surge_model(d + "/model0.safetensors")
    p1, _ = load_surge_model(d + "/model.safetensors")
    net, norm = p0.net, p0.norm
    net.train()
    params = list(net.parameters())
    opt = {"adam": lambda: torch.optim.Adam(params, lr=1e-2),
           "adamw": lambda: torch.optim.AdamW(params, lr=1e-2,
                                              weight_decay=0.01),
           "sgd": lambda: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
           }[optim]()
    x = read(d + "/x.f32", n, nin)
    y = read(d + "/ytrain.f32", n, nout)
    for s in range(steps):
        off = (s * b) % (n - b)
        xb = (x[off:off + b] - norm["in_mean"]) / norm["in_std"]
        yb = (y[off:off + b] - norm["out_mean"]) / norm["out_std"]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(xb), yb)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    want = p1.net.state_dict()
    err = max(float((v - want[k]).abs().max())
              for k, v in net.state_dict().items())
    moved = max(float((v - p0_v).abs().max()) for (k, v), p0_v in
                zip(want.items(), load_surge_model(
                    d + "/model0.safetensors")[0].net.state_dict().values()))
    print("train: %s clip %g, %d steps: max |p_torch - p_c| %.3g (weights "
          "moved up to %.3g), tolerance 1e-4" % (optim, clip, steps, err,
                                                 moved))
    return err <= 1e-4


def main():
    mode, d = sys.argv[1], sys.argv[2]
    n, nin, nout, b, steps = (int(v) for v in sys.argv[3:8])
    optim, clip = sys.argv[8], float(sys.argv[9])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if mode == "predict":
        ok = check_predict(d, n, nin, nout)
    else:
        ok = check_train(d, n, nin, nout, b, steps, optim, clip)
    sys.exit(0 if ok else 1)


main()
