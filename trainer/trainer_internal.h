/*
 * trainer/trainer_internal.h - the trainer's state, shared by trainer.c
 * (the loop) and model.c (files). Internal to trainer/ and its tests.
 */
#ifndef SURGE_TRAINER_INTERNAL_H
#define SURGE_TRAINER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/backend.h"
#include "trainer/mlp.h"
#include "trainer/trainer.h"

struct surge_trainer {
    struct surge_trainer_config cfg;     /* validated copy */
    const struct surge_backend_ops *ops; /* backend */
    void *ctx;                           /* backend context (owned) */
    struct mlp mlp;                      /* parameters, grads, workspace */
    float *opt_state; /* optimizer state, ONE device allocation: */
    float *opt_m;     /* (n_params) adam first moment / sgd momentum buf */
    float *opt_v;     /* (n_params) adam second moment; NULL for sgd */
    /* Normalisation, host copies (one allocation, `norm_host`). Output
     * arrays hold out_n entries: 1 (global) or n_outputs (element). */
    float *norm_host;
    float *in_mean;  /* (n_inputs)  (min + max) / 2 */
    float *in_std;   /* (n_inputs)  (max - min) / 2, 1 when max == min */
    float *in_scale; /* (n_inputs)  1 / in_std */
    float *out_mean; /* (out_n) */
    float *out_std;  /* (out_n) */
    float *out_inv;  /* (out_n)     1 / out_std */
    /* The same six arrays on the device, same layout (unified backends:
     * the host arrays themselves). */
    float *norm_dev;
    float *in_mean_d, *in_scale_d, *out_mean_d, *out_std_d, *out_inv_d;
    int out_n;        /* 1 or n_outputs */
    int out_frozen;   /* output statistics frozen */
    long out_seen;    /* rows observed so far (<= out_norm_samples) */
    double *acc_mean; /* (out_n) running mean (Welford / Chan) */
    double *acc_m2;   /* (out_n) running sum of squared deviations */
    float *host_out;  /* non-unified: (batch, n_outputs) host buffer */
    uint64_t step;    /* optimizer steps taken, as of the last finished
                         step the host has seen (poll, sync, step) */
    /* Step scalars (backend.h SCALARS STAY ON THE DEVICE). */
    struct surge_opt_config opt;     /* constants, from cfg */
    struct surge_step_state *st_d;   /* device: the current step's scalars */
    struct surge_step_report *rep;   /* host view of the published report */
    struct surge_step_report *rep_d; /* the same, device pointer */
    uint64_t seen_seq;               /* rep->seq at the last poll/sync */
    uint64_t seen_skipped;           /* rep->skipped at the last poll/sync */
    /* CUDA graph of the step body (NULL: none yet or unsupported). */
    void *graph;
    unsigned graph_key; /* rows | weight << 21 | row_loss << 22 */
    int graph_off;      /* 1: capture failed once, run eagerly */
    /* Data parallelism (trainer/dp.c); rops NULL: off. */
    const struct surge_trainer_replicas_ops *rops;
    void *rarg;
    size_t bucket_floats; /* bucket size target */
    float *grad_host;     /* non-unified: (n_params) pinned staging */
    float *w_host;        /* (batch) scaled row weights, host */
    struct surge_trainer_dp_stats dp;
};

/* trainer_freeze_before_step - freeze the output statistics before the
 * first step from y (rows, n_outputs) host memory (trainer.h). */
int trainer_freeze_before_step(surge_trainer *t, const float *y, int rows);

/* trainer_read_report - fold the published step report into t->step;
 * 1 new steps, 0 none, SURGE_ESTATE one was skipped. */
int trainer_read_report(surge_trainer *t, struct surge_trainer_step_info *info);

/* trainer_backend_rc - rc, or -EIO once the backend recorded a failure. */
int trainer_backend_rc(surge_trainer *t, int rc);

/* trainer_update_layer - the optimizer update of layer k (arg is the
 * trainer), with the squared gradient norm added to the step's sumsq. */
void trainer_update_layer(void *arg, int k);

/* trainer_dp_release - free what surge_trainer_set_replicas allocated. */
void trainer_dp_release(surge_trainer *t);

/* trainer_lr_at - the scheduled learning rate before step s (0-based). */
double trainer_lr_at(const struct surge_trainer_config *cfg, uint64_t s);

/* trainer_set_step - set the step counter on host and device (checkpoint
 * load); waits for queued steps first. 0 or -EIO. */
int trainer_set_step(surge_trainer *t, uint64_t step);

/* trainer_norm_sync - recompute in_scale/out_inv from the std arrays and
 * upload the six arrays to the device. */
int trainer_norm_sync(surge_trainer *t);

/* trainer_freeze_from_acc - compute out_mean/out_std from the running
 * sums (see trainer.h NORMALISATION), mark frozen, sync. */
void trainer_freeze_from_acc(surge_trainer *t);

#endif /* SURGE_TRAINER_INTERNAL_H */
