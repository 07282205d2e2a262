/*
 * tests/unit/trainer/test_backend.c - the backend contract through the
 * public API, on whatever this machine has: the asynchronous step (scalars
 * stay on the backend, read back by poll/sync) takes bit-identical steps to
 * the synchronous one, with device batches too, and reports a skipped
 * non-finite step late but exactly; backend selection: "auto" falls back to
 * the CPU without a device, "cuda" without a device (or without a CUDA
 * build) fails with a clear error; trainer.precision is parsed and
 * validated.
 *
 * Runs on the CPU here; on a GPU machine the backend cases take their
 * device branch (test_backend_cuda checks the numerics there).
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <surge/error.h>

#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"

enum { IN = 4, OUT = 24, B = 16, STEPS = 12 };

/* 1 when a CUDA backend is compiled in and a device answers. */
static int
cuda_present(void)
{
    const struct surge_backend_ops *ops = surge_backend_find("cuda");
    void *ctx = NULL;
    if (ops == NULL || ops->create(0, 0, &ctx, NULL, 0) != 0) {
        return 0;
    }
    ops->destroy(ctx);
    return 1;
}

static void
config(struct surge_trainer_config *c, int optimizer, double clip)
{
    surge_trainer_config_defaults(c);
    c->n_inputs = IN;
    c->n_outputs = OUT;
    c->n_layers = 2;
    c->layers[0] = 32;
    c->layers[1] = 16;
    c->batch_size = B;
    c->threads = 1;
    c->optimizer = optimizer;
    c->grad_clip = clip;
    c->schedule = SURGE_SCHED_COSINE;
    c->warmup_steps = 3;
    c->total_steps = 20;
    c->min_lr = 1e-4;
    c->weight_decay = 0.01;
}

static surge_trainer *
make(const struct surge_trainer_config *c)
{
    surge_trainer *t = NULL;
    char err[256];
    int rc = surge_trainer_create(c, &t, err, sizeof err);
    if (rc != 0) {
        fail_msg("create: %d %s", rc, err);
    }
    return t;
}

static void
batch(int step, float *x, float *y)
{
    uint64_t s = 1000 + (uint64_t)step;
    for (int i = 0; i < B * IN; i++) {
        x[i] = mlp_rand_sym(&s);
    }
    for (int i = 0; i < B * OUT; i++) {
        y[i] = 3.0f + 2.0f * mlp_rand_sym(&s);
    }
}

/* STEPS synchronous steps on one trainer, STEPS queued ones on another:
 * same weights bit for bit, same numbers, same per-row losses. */
static void
check_async_matches_sync(int optimizer, double clip)
{
    struct surge_trainer_config c;
    config(&c, optimizer, clip);
    surge_trainer *a = make(&c), *b = make(&c);
    float x[B * IN], y[B * OUT], w[B], rla[B], rlb[B];
    for (int r = 0; r < B; r++) {
        w[r] = 0.5f + (float)r / B;
    }
    struct surge_trainer_step_info ia, ib;
    for (int s = 0; s < STEPS; s++) {
        batch(s, x, y);
        assert_int_equal(surge_trainer_step(a, x, y, w, B, rla, &ia), 0);
        assert_int_equal(surge_trainer_step_async(b, x, y, w, B, rlb, 0), 0);
        assert_int_equal(surge_trainer_sync(b, &ib), 0);
        assert_true(ia.loss == ib.loss);
        assert_true(ia.grad_norm == ib.grad_norm);
        assert_true(ia.lr == ib.lr);
        assert_int_equal(ia.step, ib.step);
        assert_memory_equal(rla, rlb, sizeof rla);
        /* Nothing new since the sync. */
        assert_int_equal(surge_trainer_poll(b, &ib), 0);
    }
    size_t np = surge_trainer_num_params(a);
    float *pa = malloc(np * sizeof *pa), *pb = malloc(np * sizeof *pb);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_int_equal(surge_trainer_get_params(a, pa, np), 0);
    assert_int_equal(surge_trainer_get_params(b, pb, np), 0);
    assert_memory_equal(pa, pb, np * sizeof *pa);
    assert_int_equal(surge_trainer_steps(b), STEPS);
    free(pa);
    free(pb);
    surge_trainer_destroy(&a);
    surge_trainer_destroy(&b);
}

static void
test_async_adam_clip(void **state)
{
    (void)state;
    check_async_matches_sync(SURGE_OPT_ADAM, 0.5);
}

static void
test_async_adamw(void **state)
{
    (void)state;
    check_async_matches_sync(SURGE_OPT_ADAMW, 0.0);
}

static void
test_async_sgd_clip(void **state)
{
    (void)state;
    check_async_matches_sync(SURGE_OPT_SGD, 0.1);
}

/* Device batches (SURGE_TRAINER_BATCH_DEVICE) in the backend's memory
 * (host memory on cpu; test_backend_cuda fills real device memory), and
 * per-row losses written there when the step finishes. */
static void
test_async_device_batches(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, SURGE_OPT_ADAM, 0.0);
    surge_trainer *a = make(&c), *b = make(&c);
    float x[B * IN], y[B * OUT], w[B], rla[B];
    for (int r = 0; r < B; r++) {
        w[r] = 2.0f - (float)r / B;
    }
    float *dx = surge_trainer_device_alloc(b, sizeof x);
    float *dy = surge_trainer_device_alloc(b, sizeof y);
    float *dw = surge_trainer_device_alloc(b, sizeof w);
    float *drl = surge_trainer_device_alloc(b, sizeof rla);
    assert_non_null(dx);
    assert_non_null(dy);
    assert_non_null(dw);
    assert_non_null(drl);
    memcpy(dw, w, sizeof w);
    struct surge_trainer_step_info ia, ib;
    for (int s = 0; s < STEPS; s++) {
        batch(s, x, y);
        memcpy(dx, x, sizeof x);
        memcpy(dy, y, sizeof y);
        assert_int_equal(surge_trainer_step(a, x, y, w, B, rla, &ia), 0);
        assert_int_equal(surge_trainer_step_async(b, dx, dy, dw, B, drl,
                                                  SURGE_TRAINER_BATCH_DEVICE),
                         0);
        assert_int_equal(surge_trainer_sync(b, &ib), 0);
        assert_true(ia.loss == ib.loss);
        assert_memory_equal(rla, drl, sizeof rla);
    }
    assert_int_equal(surge_trainer_steps(b), STEPS);
    surge_trainer_device_free(b, dx, sizeof x);
    surge_trainer_device_free(b, dy, sizeof y);
    surge_trainer_device_free(b, dw, sizeof w);
    surge_trainer_device_free(b, drl, sizeof rla);
    surge_trainer_destroy(&a);
    surge_trainer_destroy(&b);
}

/* A non-finite target after the statistics froze: the queued step returns
 * 0, the device skips the update, and the next sync says so; the weights
 * and the counter do not move; poll then reports nothing new. */
static void
test_async_skip(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, SURGE_OPT_ADAM, 0.0);
    surge_trainer *t = make(&c);
    float x[B * IN], y[B * OUT];
    batch(0, x, y);
    struct surge_trainer_step_info info;
    assert_int_equal(surge_trainer_step_async(t, x, y, NULL, B, NULL, 0), 0);
    assert_int_equal(surge_trainer_poll(t, &info), 1);
    assert_int_equal(info.step, 1);
    assert_int_equal(surge_trainer_poll(t, &info), 0);
    size_t np = surge_trainer_num_params(t);
    float *p0 = malloc(np * sizeof *p0), *p1 = malloc(np * sizeof *p1);
    assert_non_null(p0);
    assert_non_null(p1);
    assert_int_equal(surge_trainer_get_params(t, p0, np), 0);
    y[3] = NAN;
    assert_int_equal(surge_trainer_step_async(t, x, y, NULL, B, NULL, 0), 0);
    assert_int_equal(surge_trainer_sync(t, &info), SURGE_ESTATE);
    assert_false(isfinite(info.loss));
    assert_int_equal(info.step, 1);
    assert_int_equal(surge_trainer_steps(t), 1);
    assert_int_equal(surge_trainer_get_params(t, p1, np), 0);
    assert_memory_equal(p0, p1, np * sizeof *p0);
    assert_int_equal(surge_trainer_poll(t, &info), 0);
    /* And training goes on: the next good step is step 2. */
    y[3] = 3.0f;
    assert_int_equal(surge_trainer_step(t, x, y, NULL, B, NULL, &info), 0);
    assert_int_equal(info.step, 2);
    /* Bad arguments. */
    assert_int_equal(surge_trainer_step_async(t, x, y, NULL, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(surge_trainer_step_async(t, x, NULL, NULL, B, NULL, 0),
                     -EINVAL);
    assert_int_equal(surge_trainer_step_async(t, x, y, NULL, B, NULL, 0x10),
                     -EINVAL);
    assert_null(surge_trainer_error(t));
    free(p0);
    free(p1);
    surge_trainer_destroy(&t);
}

/* "auto": CUDA when a device answers, else the CPU (and fp32). */
static void
test_backend_auto(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, SURGE_OPT_ADAM, 0.0);
    snprintf(c.backend, sizeof c.backend, "%s", "auto");
    c.precision = SURGE_PRECISION_BF16;
    char err[256] = "";
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err), 0);
    surge_trainer *t = make(&c);
    const struct surge_trainer_config *got = surge_trainer_config_get(t);
    if (cuda_present()) {
        assert_string_equal(surge_trainer_backend(t), "cuda");
        assert_string_equal(got->backend, "cuda");
        assert_int_equal(got->precision, SURGE_PRECISION_BF16);
        assert_non_null(surge_trainer_stream(t));
    } else {
        assert_string_equal(surge_trainer_backend(t), "cpu");
        assert_string_equal(got->backend, "cpu");
        assert_int_equal(got->precision, SURGE_PRECISION_FP32);
        assert_null(surge_trainer_stream(t));
    }
    surge_trainer_destroy(&t);
}

/* "cuda" without a device, or without a CUDA build: a clear error naming
 * the key and the reason, nothing created. */
static void
test_backend_cuda_unavailable(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, SURGE_OPT_ADAM, 0.0);
    snprintf(c.backend, sizeof c.backend, "%s", "cuda");
    char err[256] = "";
    surge_trainer *t = NULL;
    int rc = surge_trainer_create(&c, &t, err, sizeof err);
    if (surge_backend_find("cuda") == NULL) {
        assert_int_equal(rc, SURGE_ECONFIG);
        assert_non_null(strstr(err, "trainer.backend: cuda: this build has "
                                    "no CUDA backend"));
        assert_null(t);
    } else if (!cuda_present()) {
        assert_int_equal(rc, -ENODEV);
        assert_non_null(strstr(err, "trainer.backend: cuda: no CUDA device"));
        assert_null(t);
    } else {
        assert_int_equal(rc, 0);
        assert_string_equal(surge_trainer_backend(t), "cuda");
        surge_trainer_destroy(&t);
    }
}

static void
test_precision_config(void **state)
{
    (void)state;
    struct surge_trainer_config c;
    config(&c, SURGE_OPT_ADAM, 0.0);
    char err[256] = "";
    const char *ok = "{\"precision\": \"tf32\", \"backend\": \"auto\"}";
    assert_int_equal(
        surge_trainer_config_from_json(&c, ok, strlen(ok), err, sizeof err), 0);
    assert_int_equal(c.precision, SURGE_PRECISION_TF32);
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err), 0);
    const char *bad = "{\"precision\": \"fp8\"}";
    assert_int_equal(
        surge_trainer_config_from_json(&c, bad, strlen(bad), err, sizeof err),
        SURGE_ECONFIG);
    assert_non_null(strstr(
        err, "trainer.precision: must be one of: fp32, tf32, bf16 (got "));
    snprintf(c.backend, sizeof c.backend, "%s", "cpu");
    c.precision = SURGE_PRECISION_BF16;
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "trainer.precision: bf16 needs backend cuda"));
    c.precision = SURGE_PRECISION_FP32;
    snprintf(c.backend, sizeof c.backend, "%s", "tpu");
    assert_int_equal(surge_trainer_config_validate(&c, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(
        err, "trainer.backend: must be one of: cpu, cuda, auto (got \"tpu\")"));
    assert_string_equal(surge_trainer_precision_name(SURGE_PRECISION_BF16),
                        "bf16");
    assert_int_equal(surge_trainer_precision_parse("fp32"),
                     SURGE_PRECISION_FP32);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_adam_clip),
        cmocka_unit_test(test_async_adamw),
        cmocka_unit_test(test_async_sgd_clip),
        cmocka_unit_test(test_async_device_batches),
        cmocka_unit_test(test_async_skip),
        cmocka_unit_test(test_backend_auto),
        cmocka_unit_test(test_backend_cuda_unavailable),
        cmocka_unit_test(test_precision_config),
    };
    return cmocka_run_group_tests_name("trainer_backend", tests, NULL, NULL);
}
