/*
 * bench/online_offline/offline_train.c - the offline side of
 * `make bench-online-offline`: the same C trainer (trainer/trainer.h) as
 * the server's, fed from the files the "writer" consumer wrote
 * (samples.f32 + samples.json), for several epochs within a time budget,
 * reading every batch back from the file (pread per row, shuffled each
 * epoch) as a DataLoader over files does. Also evaluates any model file on
 * such a file, so the online and offline models are judged by the same
 * code on the same held-out simulations.
 *
 *   offline_train train DIR STUDY.json BUDGET_S MODEL.safetensors
 *   offline_train eval MODEL.safetensors DIR
 *
 * Each prints one JSON object on stdout. Exit 0, or 1 with a message.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/util.h"
#include "trainer/trainer.h"

struct data {
    int fd;
    uint32_t nin;
    uint64_t nout;
    uint64_t rows;
    size_t row; /* bytes per row */
};

static int
data_open(struct data *d, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/samples.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (j == NULL) {
        fprintf(stderr, "offline_train: %s: %s\n", path, je.text);
        return -1;
    }
    json_int_t nin = json_integer_value(json_object_get(j, "nin"));
    json_int_t nout = json_integer_value(json_object_get(j, "nout"));
    json_int_t rows = json_integer_value(json_object_get(j, "rows"));
    json_decref(j);
    if (nin < 1 || nin > 1024 || nout < 1 || nout > SURGE_TRAINER_MAX_WIDTH ||
        rows < 1) {
        fprintf(stderr, "offline_train: %s: bad nin/nout/rows\n", path);
        return -1;
    }
    d->nin = (uint32_t)nin;
    d->nout = (uint64_t)nout;
    d->rows = (uint64_t)rows;
    d->row = ((size_t)nin + (size_t)nout) * sizeof(float);
    snprintf(path, sizeof path, "%s/samples.f32", dir);
    d->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (d->fd < 0 || fstat(d->fd, &st) != 0 ||
        (uint64_t)st.st_size != d->rows * d->row) {
        fprintf(stderr, "offline_train: %s: missing or not %" PRIu64 " rows\n",
                path, d->rows);
        if (d->fd >= 0) {
            close(d->fd);
        }
        return -1;
    }
    return 0;
}

/* Read row r into x (nin) and y (nout). */
static int
data_row(const struct data *d, uint64_t r, float *x, float *y, float *tmp)
{
    off_t off = (off_t)(r * d->row);
    size_t got = 0;
    while (got < d->row) {
        ssize_t k =
            pread(d->fd, (char *)tmp + got, d->row - got, off + (off_t)got);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        got += (size_t)k;
    }
    memcpy(x, tmp, (size_t)d->nin * sizeof(float));
    memcpy(y, tmp + d->nin, (size_t)d->nout * sizeof(float));
    return 0;
}

static uint64_t
xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The study's trainer section without the server loop's keys, and its
 * input ranges (parameters, time). */
static int
study_config(const char *path, struct surge_trainer_config *cfg, float *lo,
             float *hi, uint32_t nin)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (root == NULL) {
        fprintf(stderr, "offline_train: %s: %s\n", path, je.text);
        return -1;
    }
    json_t *params = json_object_get(root, "parameters");
    json_t *tr = json_deep_copy(json_object_get(root, "trainer"));
    int rc = -1;
    if (!json_is_array(params) || json_array_size(params) + 1 != nin ||
        !json_is_object(tr)) {
        fprintf(stderr,
                "offline_train: %s: parameters + time must be the "
                "samples' %u inputs, and a trainer section\n",
                path, nin);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(params); i++) {
        json_t *p = json_array_get(params, i);
        lo[i] = (float)json_number_value(json_object_get(p, "min"));
        hi[i] = (float)json_number_value(json_object_get(p, "max"));
    }
    lo[nin - 1] = (float)json_number_value(json_object_get(tr, "time_min"));
    hi[nin - 1] = (float)json_number_value(json_object_get(tr, "time_max"));
    static const char *const loop[] = {"enabled",
                                       "max_steps",
                                       "max_wall_s",
                                       "steps_after_end",
                                       "eval_every",
                                       "checkpoint_every",
                                       "checkpoint_every_s",
                                       "time_min",
                                       "time_max"};
    for (size_t k = 0; k < sizeof loop / sizeof loop[0]; k++) {
        json_object_del(tr, loop[k]);
    }
    char *text = json_dumps(tr, JSON_COMPACT);
    char err[512];
    if (text == NULL || surge_trainer_config_from_json(cfg, text, strlen(text),
                                                       err, sizeof err) != 0) {
        fprintf(stderr, "offline_train: %s: %s\n", path,
                text ? err : "out of memory");
        free(text);
        goto out;
    }
    free(text);
    rc = 0;
out:
    json_decref(tr);
    json_decref(root);
    return rc;
}

static int
cmd_train(const char *dir, const char *study, double budget, const char *out)
{
    uint64_t t0 = surge_now_ns();
    struct data d;
    if (data_open(&d, dir) != 0) {
        return 1;
    }
    struct surge_trainer_config cfg;
    surge_trainer_config_defaults(&cfg);
    float lo[1024], hi[1024];
    if (study_config(study, &cfg, lo, hi, d.nin) != 0) {
        close(d.fd);
        return 1;
    }
    cfg.n_inputs = (int)d.nin;
    cfg.n_outputs = (int)d.nout;
    char err[512];
    surge_trainer *t = NULL;
    if (surge_trainer_create(&cfg, &t, err, sizeof err) != 0 ||
        surge_trainer_set_input_range(t, lo, hi, err, sizeof err) != 0) {
        fprintf(stderr, "offline_train: %s\n", err);
        surge_trainer_destroy(&t);
        close(d.fd);
        return 1;
    }
    int B = cfg.batch_size;
    float *x = surge_trainer_host_alloc(t, (size_t)B * d.nin * 4);
    float *y = surge_trainer_host_alloc(t, (size_t)B * d.nout * 4);
    float *tmp = malloc(d.row);
    uint64_t *idx = malloc(d.rows * sizeof *idx);
    int status = 1;
    if (x == NULL || y == NULL || tmp == NULL || idx == NULL) {
        fprintf(stderr, "offline_train: out of memory\n");
        goto out;
    }
    /* Output statistics: the first out_norm_samples rows, in arrival
     * order, as online. */
    uint64_t nobs = (uint64_t)cfg.out_norm_samples < d.rows
                        ? (uint64_t)cfg.out_norm_samples
                        : d.rows;
    for (uint64_t r = 0; r < nobs; r++) {
        if (data_row(&d, r, x, y, tmp) != 0) {
            fprintf(stderr, "offline_train: read error\n");
            goto out;
        }
        (void)surge_trainer_observe_outputs(t, y, 1);
    }
    surge_trainer_freeze_outputs(t);
    for (uint64_t r = 0; r < d.rows; r++) {
        idx[r] = r;
    }
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ cfg.seed;
    uint64_t batches = 0, rows_seen = 0, epochs = 0;
    double loss = NAN;
    uint64_t ts = surge_now_ns();
    double deadline = budget;
    int done = 0;
    while (!done) {
        for (uint64_t i = d.rows - 1; i > 0; i--) { /* Fisher-Yates */
            uint64_t j = xorshift(&rng) % (i + 1);
            uint64_t a = idx[i];
            idx[i] = idx[j];
            idx[j] = a;
        }
        for (uint64_t s = 0; s < d.rows && !done; s += (uint64_t)B) {
            int n = (int)(d.rows - s < (uint64_t)B ? d.rows - s : (uint64_t)B);
            for (int i = 0; i < n; i++) {
                if (data_row(&d, idx[s + (uint64_t)i], x + (size_t)i * d.nin,
                             y + (size_t)i * d.nout, tmp) != 0) {
                    fprintf(stderr, "offline_train: read error\n");
                    goto out;
                }
            }
            struct surge_trainer_step_info si;
            if (surge_trainer_step(t, x, y, NULL, n, NULL, &si) == 0) {
                loss = si.loss;
            }
            batches++;
            rows_seen += (uint64_t)n;
            if ((surge_now_ns() - ts) / 1e9 >= deadline) {
                done = 1;
            }
        }
        if (!done) {
            epochs++;
        }
    }
    double train_s = (surge_now_ns() - ts) / 1e9;
    if (surge_trainer_save_model(t, out, NULL) != 0) {
        fprintf(stderr, "offline_train: cannot write %s\n", out);
        goto out;
    }
    printf("{\"batches\": %" PRIu64 ", \"rows\": %" PRIu64
           ", \"epochs\": %.3f, \"train_s\": %.3f, \"batches_per_s\": %.2f, "
           "\"distinct_samples\": %" PRIu64 ", \"final_loss\": %.6g, "
           "\"wall_s\": %.3f}\n",
           batches, rows_seen, (double)rows_seen / (double)d.rows, train_s,
           batches / train_s, rows_seen < d.rows ? rows_seen : d.rows, loss,
           (surge_now_ns() - t0) / 1e9);
    (void)epochs;
    status = 0;
out:
    surge_trainer_host_free(t, x, (size_t)B * d.nin * 4);
    surge_trainer_host_free(t, y, (size_t)B * d.nout * 4);
    free(tmp);
    free(idx);
    surge_trainer_destroy(&t);
    close(d.fd);
    return status;
}

static int
cmd_eval(const char *model, const char *dir)
{
    struct data d;
    if (data_open(&d, dir) != 0) {
        return 1;
    }
    char err[1024];
    surge_model *m = NULL;
    if (surge_model_load(model, &m, err, sizeof err) != 0) {
        fprintf(stderr, "offline_train: %s\n", err);
        close(d.fd);
        return 1;
    }
    const struct surge_model_info *mi = surge_model_get_info(m);
    int status = 1;
    float *x = malloc((size_t)d.nin * 4), *y = malloc((size_t)d.nout * 4);
    float *p = malloc((size_t)d.nout * 4), *tmp = malloc(d.row);
    if ((uint64_t)mi->n_inputs != d.nin || (uint64_t)mi->n_outputs != d.nout ||
        x == NULL || y == NULL || p == NULL || tmp == NULL) {
        fprintf(stderr, "offline_train: model and data shapes differ\n");
        goto out;
    }
    double se = 0, sy = 0;
    for (uint64_t r = 0; r < d.rows; r++) {
        if (data_row(&d, r, x, y, tmp) != 0 ||
            surge_model_predict(m, x, 1, p) != 0) {
            fprintf(stderr, "offline_train: read or predict error\n");
            goto out;
        }
        for (uint64_t j = 0; j < d.nout; j++) {
            double e = (double)p[j] - y[j];
            se += e * e;
            sy += (double)y[j] * y[j];
        }
    }
    printf("{\"samples\": %" PRIu64 ", \"mse\": %.6g, \"rel_l2\": %.6g}\n",
           d.rows, se / ((double)d.rows * (double)d.nout),
           sy > 0 ? sqrt(se / sy) : NAN);
    status = 0;
out:
    free(x);
    free(y);
    free(p);
    free(tmp);
    surge_model_destroy(&m);
    close(d.fd);
    return status;
}

int
main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "train") == 0) {
        double budget;
        if (surge_parse_double(argv[4], &budget) != 0 || !(budget > 0)) {
            fprintf(stderr, "offline_train: BUDGET_S must be > 0\n");
            return 2;
        }
        return cmd_train(argv[2], argv[3], budget, argv[5]);
    }
    if (argc == 4 && strcmp(argv[1], "eval") == 0) {
        return cmd_eval(argv[2], argv[3]);
    }
    fprintf(stderr, "usage: offline_train train DIR STUDY.json BUDGET_S "
                    "MODEL\n       offline_train eval MODEL DIR\n");
    return 2;
}
