/*
 * bench/gpu/bench-trainer-cuda.c - `make bench-trainer-cuda`: the CUDA
 * trainer on one GPU, side by side with PyTorch on the same GPU in the same
 * run, on the reference MLP 6-1024-1024-1024-4096 (ReLU, MSE, Adam) at
 * batch 256, 1024 and 4096 in fp32, tf32 and bf16:
 *   surge        the trainer's fast path: device batches queued with
 *                surge_trainer_step_async, the step replayed from its CUDA
 *                graph, no host round trip per step
 *   surge_eager  the same steps without the graph (every op launched)
 *   surge_gemm   the step's 11 matrix products alone, through the backend
 *   torch_eager, torch_graph, torch_gemm  bench_torch_cuda.py
 * Each figure is the median samples/s of --reps runs of --steps steps after
 * warm-up; batches sit on the device already (a pool of 4, cycled). Ends
 * with one JSON line: every cell, its ratios, and whether the targets of
 * issue 10 hold (>= 1.0x torch_graph everywhere, >= 2x torch_eager at batch
 * 256, >= 0.8 of the GEMM bound at batch >= 1024 in fp32 and tf32).
 *
 * Without a CUDA build or device it says so in its JSON line and exits 0.
 *
 * Usage: bench-trainer-cuda [--python PATH] [--script PY] [--steps N]
 *        [--reps R] [--batches 256,1024,4096] [--precisions fp32,tf32,bf16]
 *        [--no-torch]
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/util.h"
#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"
#include "trainer/trainer_internal.h"

#define MAX_REPS 32
#define POOL 4
#define MAX_CELLS 16

static const int hidden[] = {1024, 1024, 1024};
enum { NIN = 6, NOUT = 4096 };

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The 11 products of one step (backend's gemm, the step's shapes). */
static void
gemm_step(surge_trainer *t, int rows)
{
    struct mlp *m = &t->mlp;
    const float *in = m->xn;
    for (int k = 0; k < m->n_linear; k++) {
        mlp_linear_forward(m, k, in, rows, m->a[k]);
        in = m->a[k];
    }
    for (int k = m->n_linear - 1; k >= 0; k--) {
        mlp_linear_backward(m, k, k > 0 ? m->a[k - 1] : m->xn, m->a[k], rows,
                            k > 0 ? m->d[k & 1] : NULL);
    }
}

struct figures {
    double surge, surge_eager, surge_gemm; /* samples/s */
};

/* One (batch, precision) cell of surge. 0, or negative with err set. */
static int
run_cell(int batch, int precision, int steps, int reps, struct figures *f,
         char *err, size_t errlen)
{
    struct surge_trainer_config c;
    surge_trainer_config_defaults(&c);
    c.n_inputs = NIN;
    c.n_outputs = NOUT;
    c.n_layers = 3;
    memcpy(c.layers, hidden, sizeof hidden);
    c.batch_size = batch;
    c.lr = 1e-4;
    c.precision = precision;
    snprintf(c.backend, sizeof c.backend, "%s", "cuda");
    surge_trainer *t = NULL;
    int rc = surge_trainer_create(&c, &t, err, errlen);
    if (rc != 0) {
        return rc;
    }
    float mean = 0.0f, sd = 1.0f;
    size_t nx = (size_t)batch * NIN, ny = (size_t)batch * NOUT;
    float *hx = malloc(nx * sizeof *hx), *hy = malloc(ny * sizeof *hy);
    float *dx = surge_trainer_device_alloc(t, POOL * nx * sizeof(float));
    float *dy = surge_trainer_device_alloc(t, POOL * ny * sizeof(float));
    rc = hx != NULL && hy != NULL && dx != NULL && dy != NULL ? 0 : -ENOMEM;
    if (rc == 0) {
        rc = surge_trainer_set_output_norm(t, &mean, &sd, 1);
    }
    uint64_t s = 12345;
    for (int p = 0; rc == 0 && p < POOL; p++) {
        for (size_t i = 0; i < nx; i++) {
            hx[i] = mlp_rand_sym(&s);
        }
        for (size_t i = 0; i < ny; i++) {
            hy[i] = mlp_rand_sym(&s);
        }
        rc = t->ops->upload(t->ctx, dx + (size_t)p * nx, hx, nx);
        if (rc == 0) {
            rc = t->ops->upload(t->ctx, dy + (size_t)p * ny, hy, ny);
        }
    }
    double tv[MAX_REPS];
    for (int mode = 0; rc == 0 && mode < 3; mode++) {
        t->graph_off = mode == 1;
        int warm = 10;
        for (int r = -1; rc == 0 && r < reps; r++) {
            int n = r < 0 ? warm : steps;
            double t0 = surge_now_s();
            for (int i = 0; rc == 0 && i < n; i++) {
                int p = i % POOL;
                if (mode == 2) {
                    gemm_step(t, batch);
                } else {
                    rc = surge_trainer_step_async(
                        t, dx + (size_t)p * nx, dy + (size_t)p * ny, NULL,
                        batch, NULL, SURGE_TRAINER_BATCH_DEVICE);
                }
            }
            if (rc == 0) {
                rc = t->ops->sync(t->ctx);
            }
            if (r >= 0) {
                tv[r] = (double)batch * n / (surge_now_s() - t0);
            }
        }
        if (rc == 0) {
            double v = median(tv, reps);
            if (mode == 0) {
                f->surge = v;
            } else if (mode == 1) {
                f->surge_eager = v;
            } else {
                f->surge_gemm = v;
            }
        }
    }
    if (rc != 0 && surge_trainer_error(t) != NULL) {
        snprintf(err, errlen, "%s", surge_trainer_error(t));
    } else if (rc != 0) {
        snprintf(err, errlen, "step failed: %d", rc);
    }
    surge_trainer_device_free(t, dx, POOL * nx * sizeof(float));
    surge_trainer_device_free(t, dy, POOL * ny * sizeof(float));
    free(hx);
    free(hy);
    surge_trainer_destroy(&t);
    return rc;
}

/* Run the PyTorch side; its last stdout line is a JSON object. */
static json_t *
run_torch(const char *python, const char *script, const char *batches,
          const char *precs, int steps, int reps)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "'%s' '%s' --batches %s --precisions %s --steps %d --reps %d",
             python, script, batches, precs, steps, reps);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return NULL;
    }
    char line[65536], last[65536] = "";
    while (fgets(line, sizeof line, p) != NULL) {
        snprintf(last, sizeof last, "%s", line);
    }
    int st = pclose(p);
    json_error_t je;
    json_t *j = json_loads(last, 0, &je);
    if (st != 0 || !json_is_object(j)) {
        json_decref(j);
        return json_pack("{s:s}", "error", "the PyTorch script failed");
    }
    return j;
}

static double
torch_fig(json_t *torch, const char *cell, const char *key)
{
    json_t *c = torch != NULL ? json_object_get(torch, cell) : NULL;
    json_t *v = c != NULL ? json_object_get(c, key) : NULL;
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

int
main(int argc, char **argv)
{
    const char *python = "python3";
    const char *script = "bench/gpu/bench_torch_cuda.py";
    const char *batches = "256,1024,4096";
    const char *precs = "fp32,tf32,bf16";
    int steps = 50, reps = 5, torch = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--python") == 0 && i + 1 < argc) {
            python = argv[++i];
        } else if (strcmp(argv[i], "--script") == 0 && i + 1 < argc) {
            script = argv[++i];
        } else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc) {
            batches = argv[++i];
        } else if (strcmp(argv[i], "--precisions") == 0 && i + 1 < argc) {
            precs = argv[++i];
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            steps = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--no-torch") == 0) {
            torch = 0;
        } else {
            fprintf(stderr,
                    "usage: bench-trainer-cuda [--python PATH] [--script PY] "
                    "[--steps N] [--reps R] [--batches LIST] [--precisions "
                    "LIST] [--no-torch]\n");
            return 2;
        }
    }
    if (steps < 1 || reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench-trainer-cuda: --steps >= 1, --reps 1..%d\n",
                MAX_REPS);
        return 2;
    }
    /* No CUDA: say so, succeed. */
    const struct surge_backend_ops *ops = surge_backend_find("cuda");
    char why[512] = "no CUDA backend in this build (configure --with-cuda)";
    void *ctx = NULL;
    if (ops == NULL || ops->create(0, 0, &ctx, why, sizeof why) != 0) {
        json_t *o =
            json_pack("{s:s,s:s}", "bench", "trainer-cuda", "skipped", why);
        char *txt = json_dumps(o, JSON_COMPACT);
        printf("%s\n", txt != NULL ? txt : "{}");
        free(txt);
        json_decref(o);
        return 0;
    }
    ops->destroy(ctx);

    json_t *out =
        json_pack("{s:s,s:s,s:i,s:i}", "bench", "trainer-cuda", "model",
                  "6-1024-1024-1024-4096", "steps", steps, "reps", reps);
    json_t *cells = json_object();
    char cellname[MAX_CELLS][32];
    struct figures fig[MAX_CELLS];
    int ncell = 0, failed = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", batches);
    for (char *save = NULL, *b = strtok_r(list, ",", &save); b != NULL;
         b = strtok_r(NULL, ",", &save)) {
        int batch = (int)strtol(b, NULL, 10);
        char plist[64];
        snprintf(plist, sizeof plist, "%s", precs);
        for (char *save2 = NULL, *p = strtok_r(plist, ",", &save2); p != NULL;
             p = strtok_r(NULL, ",", &save2)) {
            int prec = surge_trainer_precision_parse(p);
            if (prec < 0 || batch < 1 || ncell == MAX_CELLS) {
                fprintf(stderr, "bench-trainer-cuda: bad cell %d/%s\n", batch,
                        p);
                return 2;
            }
            char err[512] = "";
            snprintf(cellname[ncell], sizeof cellname[ncell], "b%d_%s", batch,
                     p);
            memset(&fig[ncell], 0, sizeof fig[ncell]);
            int rc = run_cell(batch, prec, steps, reps, &fig[ncell], err,
                              sizeof err);
            fprintf(stderr,
                    "surge %s: %.0f samples/s (eager %.0f, gemm %.0f)%s%s\n",
                    cellname[ncell], fig[ncell].surge, fig[ncell].surge_eager,
                    fig[ncell].surge_gemm, rc != 0 ? " FAILED: " : "",
                    rc != 0 ? err : "");
            if (rc != 0) {
                json_object_set_new(cells, cellname[ncell],
                                    json_pack("{s:s}", "error", err));
                failed = 1;
            }
            ncell++;
        }
    }
    json_t *tj =
        torch ? run_torch(python, script, batches, precs, steps, reps) : NULL;
    int ok_graph = 1, ok_eager = 1, ok_gemm = 1, have_torch = tj != NULL;
    for (int i = 0; i < ncell; i++) {
        if (json_object_get(cells, cellname[i]) != NULL) {
            continue;
        }
        double te = torch_fig(tj, cellname[i], "eager");
        double tg = torch_fig(tj, cellname[i], "graph");
        double tm = torch_fig(tj, cellname[i], "gemm");
        struct figures *f = &fig[i];
        json_t *c = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "surge", f->surge,
                              "surge_eager", f->surge_eager, "surge_gemm",
                              f->surge_gemm, "torch_eager", te, "torch_graph",
                              tg, "torch_gemm", tm);
        if (tg > 0.0) {
            json_object_set_new(c, "vs_torch_graph", json_real(f->surge / tg));
            ok_graph = ok_graph && f->surge >= tg;
        } else {
            have_torch = 0;
        }
        if (te > 0.0) {
            json_object_set_new(c, "vs_torch_eager", json_real(f->surge / te));
            if (strncmp(cellname[i], "b256_", 5) == 0) {
                ok_eager = ok_eager && f->surge >= 2.0 * te;
            }
        }
        double bound = tm > f->surge_gemm ? tm : f->surge_gemm;
        if (bound > 0.0) {
            json_object_set_new(c, "vs_gemm_bound",
                                json_real(f->surge / bound));
            int big = strncmp(cellname[i], "b256_", 5) != 0;
            int not_bf16 = strstr(cellname[i], "bf16") == NULL;
            if (big && not_bf16) {
                ok_gemm = ok_gemm && f->surge >= 0.8 * bound;
            }
        }
        json_object_set_new(cells, cellname[i], c);
    }
    json_object_set_new(out, "cells", cells);
    if (tj != NULL && json_object_get(tj, "torch") != NULL) {
        json_object_set(out, "torch", json_object_get(tj, "torch"));
    }
    if (tj != NULL && json_object_get(tj, "error") != NULL) {
        json_object_set(out, "torch_error", json_object_get(tj, "error"));
    }
    if (have_torch && !failed) {
        json_object_set_new(
            out, "targets",
            json_pack("{s:b,s:b,s:b}", "ge_1x_torch_graph_all", ok_graph,
                      "ge_2x_torch_eager_b256", ok_eager,
                      "ge_0.8_gemm_bound_b1024plus_fp32_tf32", ok_gemm));
    }
    json_decref(tj);
    char *txt = json_dumps(out, JSON_COMPACT);
    printf("%s\n", txt != NULL ? txt : "{}");
    free(txt);
    json_decref(out);
    return failed ? 1 : 0;
}
