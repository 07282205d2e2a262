/*
 * bench/common/harness.h - what the ingest and monitoring benchmarks share:
 * whole reads on the pipes between their processes (writes use
 * surge_write_all), medians and quantiles of repeated runs, and the
 * libsurge sender process both of them time (one simulation, one rank, one
 * float32 field "u").
 *
 * Benchmark code, not a library: functions return 0 / -1 (or a value) and
 * print nothing; each process uses them from its own thread only.
 */
#ifndef SURGE_BENCH_COMMON_HARNESS_H
#define SURGE_BENCH_COMMON_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* The most values bench_median / bench_quantile take. */
#define BENCH_MAX_VALUES 64

/* What a sender (or the ingest bench's bare receiver) reports through its
 * result pipe once done; sent as raw bytes between processes of the same
 * program. */
struct bench_result {
    uint64_t start_ns; /* sender released (surge_now_ns) */
    uint64_t end_ns;   /* sender done: close returned, or last message in */
    uint64_t count;    /* fields sent (received, for a receiver) */
    int rc;            /* 0 or an error code */
    char err[200];     /* what failed, "" when rc is 0 */
};

/* bench_read_all - read exactly n bytes from fd, retrying on EINTR (the
 * reading side of common/util.h's surge_write_all). Returns 0, or -1 on an
 * error or end of file. */
int bench_read_all(int fd, void *p, size_t n);

/* bench_quantile - the q-quantile (0..1) of v[0..n) by linear interpolation
 * between the sorted values; v is not changed. n is 1..BENCH_MAX_VALUES
 * (more are ignored). bench_median is bench_quantile(v, n, 0.5): the middle
 * value, or the mean of the two middle ones. */
double bench_quantile(const double *v, int n, double q);
double bench_median(const double *v, int n);

/* bench_make_field - n floats of a fixed pattern (i % 1000 * 0.001), so
 * that every run sends the same bytes. Caller frees; NULL when out of
 * memory. */
float *bench_make_field(uint64_t n);

/* bench_surge_sender - the body of a sender process: opens a libsurge
 * client to endpoint as simulation sim (rank 0 of 1, field "u" of n
 * floats, timeout_ms on every blocking call), writes one byte 'R' on
 * res_fd once connected, waits for one byte on go_fd, sends steps steps,
 * closes (which returns once the server confirmed every slice), then
 * writes its struct bench_result on res_fd. Failures go into the result. */
void bench_surge_sender(int res_fd, int go_fd, const char *endpoint,
                        int64_t sim, uint64_t n, uint64_t steps,
                        int timeout_ms);

#endif
