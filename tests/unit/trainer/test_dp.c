/*
 * tests/unit/trainer/test_dp.c - data-parallel steps (trainer/dp.c)
 * without MPI: replicas ops of one replica (every sum is the value itself),
 * or of two replicas played by two threads in this process (sums meet at a
 * barrier), so the step's arithmetic and its bookkeeping are checked in
 * every build (the MPI run is tests/integration/trainer_dp.sh).
 *
 * Fixed seeds, one BLAS thread, small sizes.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <surge/error.h>

#include "trainer/trainer.h"

#define NIN 3
#define NOUT 5
#define B 8

static float X[B * NIN], Y[B * NOUT];

static void
make_data(void)
{
    uint64_t s = 12345;
    for (int i = 0; i < B * NIN; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        X[i] = (float)(s >> 40) / 16777216.0f * 2.0f - 1.0f;
    }
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < NOUT; j++) {
            Y[i * NOUT + j] = 1.0f + X[i * NIN] * (float)j - X[i * NIN + 1];
        }
    }
}

static surge_trainer *
make_trainer(int optimizer)
{
    struct surge_trainer_config c;
    surge_trainer_config_defaults(&c);
    c.n_inputs = NIN;
    c.n_outputs = NOUT;
    c.n_layers = 2;
    c.layers[0] = c.layers[1] = 16;
    c.optimizer = optimizer;
    c.momentum = 0;
    c.lr = 0.01;
    c.batch_size = B;
    c.threads = 1;
    c.out_norm_samples = B;
    char err[256];
    surge_trainer *t = NULL;
    assert_int_equal(surge_trainer_create(&c, &t, err, sizeof err), 0);
    return t;
}

/* One replica: every sum is the value itself. */
struct solo {
    int started, waited;
};

static int
solo_sum(void *arg, double *v, int n)
{
    (void)arg;
    (void)v;
    (void)n;
    return 0;
}

static int
solo_start(void *arg, float *buf, size_t n)
{
    (void)buf;
    (void)n;
    ((struct solo *)arg)->started++;
    return 0;
}

static int
solo_wait(void *arg)
{
    ((struct solo *)arg)->waited++;
    return 0;
}

static const struct surge_trainer_replicas_ops solo_ops = {solo_sum, solo_start,
                                                           solo_wait, NULL};

static void
test_errors(void **state)
{
    (void)state;
    surge_trainer *t = make_trainer(SURGE_OPT_SGD);
    struct surge_trainer_replicas_ops bad = {solo_sum, NULL, solo_wait, NULL};
    struct solo so = {0, 0};
    assert_int_equal(surge_trainer_set_replicas(t, &bad, &so, 0), -EINVAL);
    /* Not a replica yet. */
    assert_int_equal(
        surge_trainer_step_replicated(t, X, Y, NULL, B, B, NULL, NULL),
        -EINVAL);
    assert_int_equal(surge_trainer_set_replicas(t, &solo_ops, &so, 0), 0);
    /* Statistics not frozen: a replica must not freeze them alone. */
    assert_int_equal(
        surge_trainer_step_replicated(t, X, Y, NULL, B, B, NULL, NULL),
        -EINVAL);
    assert_int_equal(surge_trainer_replicas_freeze(t), 0);
    assert_int_equal(surge_trainer_outputs_frozen(t), 1);
    assert_int_equal(
        surge_trainer_step_replicated(t, X, Y, NULL, B + 1, B + 1, NULL, NULL),
        -EINVAL);
    assert_int_equal(
        surge_trainer_step_replicated(t, X, Y, NULL, B, B - 1, NULL, NULL),
        -EINVAL);
    assert_int_equal(
        surge_trainer_step_replicated(t, NULL, Y, NULL, 2, B, NULL, NULL),
        -EINVAL);
    assert_int_equal(
        surge_trainer_step_replicated(t, X, Y, NULL, 0, 0, NULL, NULL),
        -EINVAL);
    assert_int_equal(surge_trainer_steps(t), 0);
    surge_trainer_destroy(&t);
}

/* One replica with all the rows takes exactly the plain step: the same
 * passes in the same order, bit for bit. */
static void
test_solo_equals_plain(void **state)
{
    (void)state;
    int opts[3] = {SURGE_OPT_ADAM, SURGE_OPT_ADAMW, SURGE_OPT_SGD};
    for (int o = 0; o < 3; o++) {
        surge_trainer *a = make_trainer(opts[o]);
        surge_trainer *b = make_trainer(opts[o]);
        struct solo so = {0, 0};
        /* 1 byte: a bucket per layer (3 linear layers). */
        assert_int_equal(surge_trainer_set_replicas(b, &solo_ops, &so, 1), 0);
        surge_trainer_observe_outputs(a, Y, B);
        surge_trainer_observe_outputs(b, Y, B);
        assert_int_equal(surge_trainer_replicas_freeze(b), 0);
        float rla[B], rlb[B];
        for (int s = 0; s < 5; s++) {
            struct surge_trainer_step_info ia, ib;
            assert_int_equal(surge_trainer_step(a, X, Y, NULL, B, rla, &ia), 0);
            assert_int_equal(
                surge_trainer_step_replicated(b, X, Y, NULL, B, B, rlb, &ib),
                0);
            assert_true(ia.loss == ib.loss);
            assert_memory_equal(rla, rlb, sizeof rla);
        }
        assert_true(surge_trainer_params_hash(a) ==
                    surge_trainer_params_hash(b));
        assert_int_equal(so.started, 15);
        assert_int_equal(so.waited, 15);
        struct surge_trainer_dp_stats st;
        surge_trainer_dp_get_stats(b, &st);
        assert_int_equal(st.steps, 5);
        assert_int_equal(st.buckets, 15);
        surge_trainer_destroy(&a);
        surge_trainer_destroy(&b);
    }
}

/* A zero-row batch with SGD (no momentum, no decay): a zero gradient, the
 * weights do not move, the step counts. */
static void
test_zero_rows(void **state)
{
    (void)state;
    surge_trainer *t = make_trainer(SURGE_OPT_SGD);
    struct solo so = {0, 0};
    assert_int_equal(surge_trainer_set_replicas(t, &solo_ops, &so, 0), 0);
    surge_trainer_observe_outputs(t, Y, B);
    assert_int_equal(surge_trainer_replicas_freeze(t), 0);
    uint64_t h0 = surge_trainer_params_hash(t);
    struct surge_trainer_step_info info;
    assert_int_equal(
        surge_trainer_step_replicated(t, NULL, NULL, NULL, 0, 4, NULL, &info),
        0);
    assert_true(surge_trainer_params_hash(t) == h0);
    assert_true(info.loss == 0.0);
    assert_int_equal(surge_trainer_steps(t), 1);
    /* One bucket (default 4 MB holds the whole model). */
    assert_int_equal(so.started, 1);
    surge_trainer_destroy(&t);
}

/* Two replicas as two threads: sums meet at a barrier. */
struct pair {
    pthread_barrier_t bar;
    double dsum[16];
    float *fsum; /* the gradient buckets, one at a time */
    size_t fn;
};

struct side {
    struct pair *p;
    int id;
    float *pending[8];
    size_t pending_n[8];
    int np, nw;
};

static int
pair_sum(void *arg, double *v, int n)
{
    struct side *s = arg;
    struct pair *p = s->p;
    if (s->id == 0) {
        memcpy(p->dsum, v, (size_t)n * sizeof *v);
    }
    pthread_barrier_wait(&p->bar);
    if (s->id == 1) {
        for (int i = 0; i < n; i++) {
            p->dsum[i] += v[i];
        }
    }
    pthread_barrier_wait(&p->bar);
    memcpy(v, p->dsum, (size_t)n * sizeof *v);
    pthread_barrier_wait(&p->bar);
    return 0;
}

/* Buckets are summed at grad_wait, in order: the pairing is what matters
 * here, not the overlap. */
static int
pair_start(void *arg, float *buf, size_t n)
{
    struct side *s = arg;
    s->pending[s->np] = buf;
    s->pending_n[s->np++] = n;
    return 0;
}

static int
pair_wait(void *arg)
{
    struct side *s = arg;
    struct pair *p = s->p;
    float *buf = s->pending[s->nw];
    size_t n = s->pending_n[s->nw++];
    if (s->id == 0) {
        p->fsum = buf;
        p->fn = n;
    }
    pthread_barrier_wait(&p->bar);
    int same = p->fn == n; /* both replicas bucket alike */
    if (s->id == 1 && same) {
        for (size_t i = 0; i < n; i++) {
            p->fsum[i] += buf[i];
        }
    }
    pthread_barrier_wait(&p->bar);
    if (s->id == 1) {
        memcpy(buf, p->fsum, n * sizeof *buf);
    }
    pthread_barrier_wait(&p->bar);
    if (s->nw == s->np) {
        s->np = s->nw = 0;
    }
    return same ? 0 : -EIO;
}

static const struct surge_trainer_replicas_ops pair_ops = {pair_sum, pair_start,
                                                           pair_wait, NULL};

struct job {
    struct side side;
    surge_trainer *t;
    int rows0; /* rank 0's rows: [0, rows0), rank 1's the rest */
};

static void *
replica_main(void *arg)
{
    struct job *j = arg;
    int id = j->side.id;
    int off = id == 0 ? 0 : j->rows0, n = id == 0 ? j->rows0 : B - j->rows0;
    surge_trainer_observe_outputs(j->t, Y + off * NOUT, n);
    if (surge_trainer_replicas_freeze(j->t) != 0) {
        return (void *)1;
    }
    for (int s = 0; s < 10; s++) {
        if (surge_trainer_step_replicated(j->t, n ? X + off * NIN : NULL,
                                          n ? Y + off * NOUT : NULL, NULL, n, B,
                                          NULL, NULL) != 0) {
            return (void *)1;
        }
    }
    return NULL;
}

/* 2 replicas with 5 + 3 rows (and 8 + 0: zero rows on one) against one
 * trainer with the 8: the same within float rounding, and the replicas
 * the same bit for bit. */
static void
test_two_replicas(void **state)
{
    (void)state;
    int splits[2] = {5, 8};
    for (int k = 0; k < 2; k++) {
        surge_trainer *ref = make_trainer(SURGE_OPT_ADAM);
        surge_trainer_observe_outputs(ref, Y, B);
        surge_trainer_freeze_outputs(ref);
        for (int s = 0; s < 10; s++) {
            assert_int_equal(surge_trainer_step(ref, X, Y, NULL, B, NULL, NULL),
                             0);
        }
        struct pair p;
        memset(&p, 0, sizeof p);
        pthread_barrier_init(&p.bar, NULL, 2);
        struct job j[2];
        pthread_t th[2];
        memset(j, 0, sizeof j);
        for (int r = 0; r < 2; r++) {
            j[r].side.p = &p;
            j[r].side.id = r;
            j[r].t = make_trainer(SURGE_OPT_ADAM);
            j[r].rows0 = splits[k];
            assert_int_equal(
                surge_trainer_set_replicas(j[r].t, &pair_ops, &j[r].side, 1),
                0);
        }
        for (int r = 0; r < 2; r++) {
            assert_int_equal(pthread_create(&th[r], NULL, replica_main, &j[r]),
                             0);
        }
        for (int r = 0; r < 2; r++) {
            void *ret = NULL;
            pthread_join(th[r], &ret);
            assert_null(ret);
        }
        size_t np = surge_trainer_num_params(ref);
        float *pr = malloc(np * sizeof *pr), *p0 = malloc(np * sizeof *p0);
        float *p1 = malloc(np * sizeof *p1);
        surge_trainer_get_params(ref, pr, np);
        surge_trainer_get_params(j[0].t, p0, np);
        surge_trainer_get_params(j[1].t, p1, np);
        assert_memory_equal(p0, p1, np * sizeof *p0);
        double diff = 0;
        for (size_t i = 0; i < np; i++) {
            double d = fabs((double)pr[i] - (double)p0[i]);
            diff = d > diff ? d : diff;
        }
        assert_true(diff <= 1e-5);
        free(pr);
        free(p0);
        free(p1);
        surge_trainer_destroy(&ref);
        surge_trainer_destroy(&j[0].t);
        surge_trainer_destroy(&j[1].t);
        pthread_barrier_destroy(&p.bar);
    }
}

/* Evaluations of the parts of a set add up to the evaluation of the
 * whole (what the server sums over its ranks), within 1e-6: the forward
 * products of 3 and 5 rows round differently from those of 8. */
static void
test_eval_sums(void **state)
{
    (void)state;
    surge_trainer *t = make_trainer(SURGE_OPT_ADAM);
    surge_trainer_observe_outputs(t, Y, B);
    surge_trainer_freeze_outputs(t);
    struct surge_trainer_eval_result all, a, b;
    assert_int_equal(surge_trainer_evaluate(t, X, Y, B, &all), 0);
    assert_int_equal(surge_trainer_evaluate(t, X, Y, 3, &a), 0);
    assert_int_equal(
        surge_trainer_evaluate(t, X + 3 * NIN, Y + 3 * NOUT, B - 3, &b), 0);
    a.rows += b.rows;
    a.sum_se_n += b.sum_se_n;
    a.sum_se += b.sum_se;
    a.sum_yy += b.sum_yy;
    a.sum_rel += b.sum_rel;
    a.rel_rows += b.rel_rows;
    surge_trainer_eval_from_sums(&a, NOUT);
    assert_true(fabs(a.mse - all.mse) <= 1e-6 * all.mse);
    assert_true(fabs(a.mse_phys - all.mse_phys) <= 1e-6 * all.mse_phys);
    assert_true(fabs(a.rel_l2 - all.rel_l2) <= 1e-6 * all.rel_l2);
    assert_true(fabs(a.rel_l2_mean - all.rel_l2_mean) <=
                1e-6 * all.rel_l2_mean);
    surge_trainer_destroy(&t);
}

int
main(void)
{
    make_data();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_solo_equals_plain),
        cmocka_unit_test(test_zero_rows),
        cmocka_unit_test(test_two_replicas),
        cmocka_unit_test(test_eval_sums),
    };
    return cmocka_run_group_tests_name("trainer_dp", tests, NULL, NULL);
}
