/*
 * bench/external/bench-external.c - `make bench-external`: samples/s that
 * surge serve --consumer external (server/external.c) delivers to a Python
 * consumer (surge.torch.ReservoirDataset on this host: batches gathered
 * into its shared-memory ring; and, for comparison, the same consumer
 * forced onto the ZeroMQ transfer a remote consumer gets), against (a) the
 * in-process C gather of the same batches (surge_store_get_batch from the
 * same store) and (b) a Melissa-style PyTorch DataLoader that takes one
 * sample at a time from a Python buffer that a receiver thread filled from
 * a ZeroMQ sender (bench/external/consume.py says exactly what; its
 * description goes into the JSON). Sample sizes 16 KiB and 1 MiB, batch
 * 256; the store holds POOL samples under policy reservoir (with
 * replacement: it serves forever). Both Python sides run with glibc's
 * trimming off (the peer at its best). The arms run interleaved, REPS
 * times; medians (rates, and per-repetition ratios); ends with one JSON
 * line.
 *
 *     bench-external --python PY --script consume.py --pythonpath DIR
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <surge/error.h>

#include "common/util.h"
#include "server/consumer.h"
#include "server/options.h"
#include "server/store.h"

#define BATCH 256
#define REPS 5
#define NIN 4
/* glibc keeps freed memory (PERF-NOTES: trimming costs PyTorch ~2x). */
#define MALLOC_ENV                                                             \
    "MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824"

struct runner {
    const surge_consumer_ops *ops;
    void *state;
    surge_consumer_ctx ctx;
    int rc;
};

static void *
run_main(void *arg)
{
    struct runner *r = arg;
    r->rc = r->ops->run(r->state, &r->ctx);
    return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Run cmd, return the number it printed (or -1); the rest of the line
 * that starts with tag goes to what (may be NULL). */
static double
run_python(const char *cmd, const char *tag, char *what, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return -1;
    }
    char line[1024] = "";
    double v = -1;
    while (fgets(line, sizeof line, p) != NULL) {
        char *end = NULL;
        double x = strtod(line, &end);
        if (end != line) {
            v = x;
        } else if (what != NULL && strncmp(line, tag, strlen(tag)) == 0) {
            snprintf(what, cap, "%s", line + strlen(tag));
            what[strcspn(what, "\n")] = '\0';
        }
    }
    if (pclose(p) != 0) {
        return -1;
    }
    return v;
}

static int
one_size(size_t sample_bytes, uint64_t pool, int batches, const char *py,
         const char *script, const char *pypath, json_t *out, char *peer,
         size_t peer_cap)
{
    uint64_t nout = sample_bytes / 4 - NIN;
    surge_server_options o;
    surge_server_options_init(&o);
    o.token[0] = '\0';
    o.batch_size = BATCH;
    snprintf(o.policy, sizeof o.policy, "%s", "reservoir");
    o.store_bytes = (pool + BATCH) * (sample_bytes + 256);
    /* ipc: what a consumer on the server's node uses (surge.torch takes
     * any endpoint); SURGE_BENCH_BIND overrides (e.g. tcp://127.0.0.1:*). */
    const char *bind = getenv("SURGE_BENCH_BIND");
    snprintf(o.external_bind, sizeof o.external_bind,
             "ipc:///tmp/surge-bench-external-%ld", (long)getpid());
    if (bind != NULL && bind[0] != '\0') {
        snprintf(o.external_bind, sizeof o.external_bind, "%s", bind);
    }
    surge_reservoir_config rc;
    if (surge_server_reservoir_config(&o, &rc) != 0) {
        return -1;
    }
    surge_store_config sc = {"train", SURGE_STORE_STREAM, 0, &rc};
    surge_store *s = NULL;
    if (surge_store_create(&s, &sc) != 0 ||
        surge_store_set_shape(s, NIN, nout) != 0) {
        fprintf(stderr, "bench-external: cannot create the store\n");
        return -1;
    }
    float *in = calloc(NIN, sizeof(float));
    float *outv = malloc(nout * sizeof(float));
    for (uint64_t j = 0; j < nout; j++) {
        outv[j] = (float)j;
    }
    for (uint64_t i = 0; i < pool; i++) {
        in[0] = (float)i;
        if (surge_store_try_put(s, 0, (int64_t)i, in, outv) != 0) {
            fprintf(stderr, "bench-external: put %llu refused\n",
                    (unsigned long long)i);
            return -1;
        }
    }
    /* The external consumer over the same store, idle between the
     * Python runs. */
    struct runner R = {0};
    R.ops = surge_consumer_find("external");
    surge_consumer_prep prep = {s, NULL, NULL, NULL};
    if (R.ops->create(&R.state, &o) != 0 ||
        R.ops->prepare(R.state, &prep) != 0) {
        return -1;
    }
    json_t *info = json_object();
    R.ops->info(R.state, info);
    char ep[256];
    snprintf(ep, sizeof ep, "%s",
             json_string_value(json_object_get(
                 json_object_get(info, "external"), "endpoint")));
    json_decref(info);
    R.ctx.train = s;
    R.ctx.opts = &o;
    pthread_t th;
    if (pthread_create(&th, NULL, run_main, &R) != 0) {
        return -1;
    }
    /* The arms interleaved, one repetition of each in turn, so that each
     * ratio compares arms measured under the same load (the machine is
     * shared): the ratios reported are medians of per-repetition ratios. */
    float *bx = surge_huge_alloc((size_t)BATCH * NIN * 4);
    float *by = surge_huge_alloc((size_t)BATCH * nout * 4);
    double gather[REPS], ext[REPS], ext_zmq[REPS], loader[REPS];
    double r_gather[REPS], r_loader[REPS], r_zmq[REPS];
    char cmd[2048], transport[64] = "", zmq_transport[64] = "";
    int status = 0;
    for (int r = 0; r < REPS && status == 0; r++) {
        /* (a) the in-process gather, into buffers allocated once. */
        uint64_t t0 = surge_now_ns(), rows = 0;
        for (int b = 0; b < batches; b++) {
            int n = surge_store_get_batch(s, BATCH, bx, by, NULL, NULL, 5000);
            if (n <= 0) {
                fprintf(stderr, "bench-external: get_batch: %s\n",
                        surge_strerror(n));
                status = -1;
                break;
            }
            rows += (uint64_t)n;
        }
        gather[r] = rows / ((surge_now_ns() - t0) / 1e9);
        snprintf(cmd, sizeof cmd,
                 "%s PYTHONPATH='%s' timeout 300 '%s' '%s' external '%s' %d "
                 "1 auto",
                 MALLOC_ENV, pypath, py, script, ep, batches);
        ext[r] = run_python(cmd, "transport ", transport, sizeof transport);
        snprintf(cmd, sizeof cmd,
                 "%s PYTHONPATH='%s' timeout 300 '%s' '%s' external '%s' %d "
                 "1 zmq",
                 MALLOC_ENV, pypath, py, script, ep, batches);
        ext_zmq[r] =
            run_python(cmd, "transport ", zmq_transport, sizeof zmq_transport);
        /* (b) the per-sample DataLoader. */
        snprintf(cmd, sizeof cmd,
                 "%s timeout 300 '%s' '%s' loader %d %llu %llu %d %d 1",
                 MALLOC_ENV, py, script, NIN, (unsigned long long)nout,
                 (unsigned long long)pool, BATCH, batches);
        loader[r] = run_python(cmd, "peer ", peer, peer_cap);
        if (ext[r] <= 0 || ext_zmq[r] <= 0 || loader[r] <= 0) {
            fprintf(stderr, "bench-external: the Python side failed\n");
            status = -1;
        } else if (strcmp(transport, "shm") != 0 ||
                   strcmp(zmq_transport, "zmq") != 0) {
            fprintf(stderr,
                    "bench-external: transports %s and %s, not shm and zmq\n",
                    transport, zmq_transport);
            status = -1;
        }
        r_gather[r] = ext[r] / gather[r];
        r_loader[r] = ext[r] / loader[r];
        r_zmq[r] = ext_zmq[r] / gather[r];
    }
    surge_huge_free(bx, (size_t)BATCH * NIN * 4);
    surge_huge_free(by, (size_t)BATCH * nout * 4);
    /* The ipc socket file goes with the consumer (ZeroMQ unlinks it). */
    surge_store_stop(s);
    pthread_join(th, NULL);
    surge_consumer_stats cs;
    R.ops->stats(R.state, &cs);
    R.ops->destroy(R.state);
    surge_store_destroy(&s);
    free(in);
    free(outv);
    if (status != 0) {
        return status;
    }
    json_t *reps_gather = json_array(), *reps_loader = json_array();
    for (int r = 0; r < REPS; r++) {
        json_array_append_new(reps_gather, json_real(r_gather[r]));
        json_array_append_new(reps_loader, json_real(r_loader[r]));
    }
    double *all[] = {gather, ext, ext_zmq, loader, r_gather, r_loader, r_zmq};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        qsort(all[k], REPS, sizeof(double), cmp_double);
    }
    int m = REPS / 2;
    printf("%7zu KiB  external %10.0f (shm), %10.0f (zmq)  in-process "
           "gather %10.0f  per-sample DataLoader %10.0f samples/s  (%.2fx "
           "gather, %.1fx loader: medians of %d interleaved repetitions)\n",
           sample_bytes / 1024, ext[m], ext_zmq[m], gather[m], loader[m],
           r_gather[m], r_loader[m], REPS);
    json_t *j = json_pack(
        "{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:o,s:o}", "external_sps", ext[m],
        "external_zmq_sps", ext_zmq[m], "gather_sps", gather[m], "loader_sps",
        loader[m], "vs_gather", r_gather[m], "vs_loader", r_loader[m],
        "zmq_vs_gather", r_zmq[m], "rows_served", (json_int_t)cs.samples,
        "vs_gather_reps", reps_gather, "vs_loader_reps", reps_loader);
    char key[32];
    snprintf(key, sizeof key, "%zuKiB", sample_bytes / 1024);
    json_object_set_new(out, key, j);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *py = "/usr/bin/python3", *script = NULL, *pypath = "python";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--python") == 0) {
            py = argv[i + 1];
        } else if (strcmp(argv[i], "--script") == 0) {
            script = argv[i + 1];
        } else if (strcmp(argv[i], "--pythonpath") == 0) {
            pypath = argv[i + 1];
        } else {
            fprintf(stderr, "bench-external: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (script == NULL) {
        fprintf(stderr, "usage: bench-external --python PY --script "
                        "consume.py --pythonpath DIR\n");
        return 2;
    }
    json_t *out = json_object();
    json_object_set_new(out, "bench", json_string("external"));
    json_object_set_new(out, "batch", json_integer(BATCH));
    char peer[512] = "";
    if (one_size(16 * 1024, 2048, 200, py, script, pypath, out, peer,
                 sizeof peer) != 0 ||
        one_size(1024 * 1024, 512, 8, py, script, pypath, out, peer,
                 sizeof peer) != 0) {
        json_decref(out);
        return 1;
    }
    json_object_set_new(out, "loader", json_string(peer));
    json_object_set_new(out, "external",
                        json_string("surge.torch over shared memory (same "
                                    "host); external_zmq: forced ZeroMQ"));
    char *line = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", line);
    free(line);
    json_decref(out);
    return 0;
}
