/*
 * bench/common/harness.c - see harness.h.
 */
#include "config.h"

#include "bench/common/harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <surge/client.h>

#include "common/util.h"

int
bench_read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double
bench_quantile(const double *v, int n, double q)
{
    double s[BENCH_MAX_VALUES];
    if (n > BENCH_MAX_VALUES) {
        n = BENCH_MAX_VALUES;
    }
    if (n < 1) {
        return 0;
    }
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double x = q * (double)(n - 1);
    int i = (int)x;
    return i + 1 < n ? s[i] + (x - i) * (s[i + 1] - s[i]) : s[n - 1];
}

double
bench_median(const double *v, int n)
{
    return bench_quantile(v, n, 0.5);
}

float *
bench_make_field(uint64_t n)
{
    float *v = malloc(n * sizeof(float));
    if (v == NULL) {
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++) {
        v[i] = (float)(i % 1000) * 0.001f;
    }
    return v;
}

void
bench_surge_sender(int res_fd, int go_fd, const char *endpoint, int64_t sim,
                   uint64_t n, uint64_t steps, int timeout_ms)
{
    struct bench_result r;
    memset(&r, 0, sizeof r);
    float *v = bench_make_field(n);
    surge_client_options o;
    surge_field f = {"u", n, 0, n};
    surge_client *c = NULL;

    surge_client_options_init(&o);
    o.endpoint = endpoint;
    o.sim_id = sim;
    o.rank = 0;
    o.nranks = 1;
    o.fields = &f;
    o.nfields = 1;
    o.timeout_ms = timeout_ms;
    r.rc = v == NULL ? -ENOMEM : surge_client_open(&c, &o);
    if (r.rc != 0) {
        snprintf(r.err, sizeof r.err, "open: %s", surge_client_open_error());
    }
    char ready = 'R';
    surge_write_all(res_fd, &ready, 1);
    char go;
    bench_read_all(go_fd, &go, 1);
    r.start_ns = surge_now_ns();
    for (uint64_t s = 0; r.rc == 0 && s < steps; s++) {
        r.rc =
            surge_client_send(c, "u", (int64_t)s, (double)s, v, SURGE_FLOAT32);
        if (r.rc != 0) {
            snprintf(r.err, sizeof r.err, "send: %s",
                     surge_client_last_error(c));
        } else {
            r.count++;
        }
    }
    if (c != NULL) {
        int rc = surge_client_close(&c);
        if (r.rc == 0 && rc != 0) {
            r.rc = rc;
            snprintf(r.err, sizeof r.err, "close: %s",
                     surge_client_close_error());
        }
    }
    r.end_ns = surge_now_ns();
    surge_write_all(res_fd, &r, sizeof r);
    free(v);
}
