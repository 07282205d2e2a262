/*
 * tests/integration/trainer_torch_gen.c - writes what trainer_torch.sh
 * checks in PyTorch: a model trained a few steps by the C trainer, saved as
 * safetensors, plus inputs and the C predictions of the model loaded back
 * from the file (surge_model_predict, the code surge predict uses).
 *
 * Usage: trainer_torch_gen DIR ACTIVATION OUT_NORM OPTIMIZER CLIP
 * Trains STEPS steps (lr 1e-2; adamw with weight_decay 0.01, sgd with
 * momentum 0.9; gradient clipping at CLIP, 0 = off) on batches of B rows
 * at offsets (s * B) % (N - B). Writes DIR/model0.safetensors (before the
 * first step, normalisation frozen), DIR/model.safetensors (after),
 * DIR/x.f32 (N, n_inputs), DIR/ytrain.f32 (N, n_outputs) the training
 * targets and DIR/y.f32 (N, n_outputs) the C predictions of the final
 * model, raw little-endian float32, and prints "N n_in n_out B STEPS".
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/trainer.h"

#define NIN 3
#define NOUT 20
#define N 100
#define B 32
#define STEPS 60

static uint64_t rng = 12345;

static float
uniform(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)(rng >> 40) / 16777216.0f;
}

static int
write_f32(const char *dir, const char *name, const float *v, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    int ok = fwrite(v, sizeof(float), n, f) == n;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

int
main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr,
                "usage: %s DIR relu|gelu|tanh global|element adam|adamw|sgd "
                "CLIP\n",
                argv[0]);
        return 2;
    }
    struct surge_trainer_config c;
    char err[512];
    surge_trainer_config_defaults(&c);
    c.n_inputs = NIN;
    c.n_outputs = NOUT;
    c.n_layers = 2;
    c.layers[0] = 32;
    c.layers[1] = 16;
    c.threads = 1;
    c.batch_size = B;
    c.lr = 1e-2;
    c.activation = surge_trainer_activation_parse(argv[2]);
    c.out_norm = strcmp(argv[3], "element") == 0 ? SURGE_OUTNORM_ELEMENT
                                                 : SURGE_OUTNORM_GLOBAL;
    c.out_norm_samples = N;
    c.optimizer = surge_trainer_optimizer_parse(argv[4]);
    c.weight_decay = c.optimizer == SURGE_OPT_ADAMW ? 0.01 : 0.0;
    c.momentum = 0.9;
    char *end = NULL;
    c.grad_clip = strtod(argv[5], &end);
    if (end == argv[5] || *end != '\0') {
        fprintf(stderr, "bad CLIP '%s'\n", argv[5]);
        return 2;
    }
    surge_trainer *t = NULL;
    if (surge_trainer_create(&c, &t, err, sizeof err) != 0) {
        fprintf(stderr, "create: %s\n", err);
        return 1;
    }
    /* Physical inputs in [lo, hi] per input, outputs around 300 K. */
    const float lo[NIN] = {0.5f, -2.0f, 0.0f}, hi[NIN] = {2.0f, 2.0f, 10.0f};
    static float x[N * NIN], y[N * NOUT], yc[N * NOUT];
    for (int r = 0; r < N; r++) {
        for (int i = 0; i < NIN; i++) {
            x[r * NIN + i] = lo[i] + (hi[i] - lo[i]) * uniform();
        }
        for (int j = 0; j < NOUT; j++) {
            y[r * NOUT + j] =
                300.0f +
                20.0f * x[r * NIN] * sinf(0.3f * (float)j + x[r * NIN + 1]) +
                0.5f * (float)j * x[r * NIN + 2];
        }
    }
    if (surge_trainer_set_input_range(t, lo, hi, err, sizeof err) != 0) {
        fprintf(stderr, "range: %s\n", err);
        return 1;
    }
    (void)surge_trainer_observe_outputs(t, y, N);
    char path[1024];
    snprintf(path, sizeof path, "%s/model0.safetensors", argv[1]);
    if (surge_trainer_save_model(t, path, NULL) != 0) {
        fprintf(stderr, "save failed\n");
        return 1;
    }
    for (int s = 0; s < STEPS; s++) {
        int off = (s * B) % (N - B);
        if (surge_trainer_step(t, x + off * NIN, y + off * NOUT, NULL, B, NULL,
                               NULL) != 0) {
            fprintf(stderr, "step failed\n");
            return 1;
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
    const char *meta[] = {"input_names", "a,b,time", NULL};
    if (surge_trainer_save_model(t, path, meta) != 0) {
        fprintf(stderr, "save failed\n");
        return 1;
    }
    surge_trainer_destroy(&t);

    surge_model *m = NULL;
    if (surge_model_load(path, &m, err, sizeof err) != 0) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    if (surge_model_predict(m, x, N, yc) != 0) {
        fprintf(stderr, "predict failed\n");
        return 1;
    }
    surge_model_destroy(&m);
    if (write_f32(argv[1], "x.f32", x, N * NIN) != 0 ||
        write_f32(argv[1], "ytrain.f32", y, N * NOUT) != 0 ||
        write_f32(argv[1], "y.f32", yc, N * NOUT) != 0) {
        return 1;
    }
    printf("%d %d %d %d %d\n", N, NIN, NOUT, B, STEPS);
    return 0;
}
