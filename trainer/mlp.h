/*
 * trainer/mlp.h - the multilayer perceptron: parameters, workspace, and
 * forward/backward in pairs, all through a backend's ops table.
 *
 * Internal to trainer/ (and its tests). Shapes use B for the rows of the
 * current batch (<= the workspace's batch), W_k for width[k]:
 *   width[0]        = n_inputs
 *   width[k + 1]    = output width of linear layer k, k = 0..n_linear-1
 *   width[n_linear] = n_outputs
 * Linear layer k maps (B, width[k]) -> (B, width[k + 1]); every layer but
 * the last is followed by the activation.
 */
#ifndef SURGE_TRAINER_MLP_H
#define SURGE_TRAINER_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/backend.h"
#include "trainer/trainer.h"

#define MLP_MAX_LINEAR (SURGE_TRAINER_MAX_LAYERS + 1)

struct mlp_linear {
    int in, out;   /* width[k], width[k + 1] */
    size_t offset; /* of w in the flat parameter vector; b follows w */
    float *w;      /* (out, in)  = params + offset, torch.nn.Linear layout */
    float *b;      /* (out)      = w + out * in */
    float *dw;     /* (out, in)  = grads + offset */
    float *db;     /* (out) */
};

struct mlp {
    const struct surge_backend_ops *ops; /* backend of all memory below */
    void *ctx;                           /* its context (not owned) */
    int n_linear;                        /* hidden layers + 1 */
    int act;                             /* enum surge_trainer_activation */
    int width[MLP_MAX_LINEAR + 1];       /* see above */
    int batch;                           /* workspace rows */
    size_t n_params;                     /* floats in params (and grads) */
    float *params;                       /* (n_params): W_0 b_0 W_1 b_1 ...
                                            ONE allocation, device memory */
    float *grads;                        /* (n_params): same layout */
    struct mlp_linear lin[MLP_MAX_LINEAR];
    size_t ws_floats; /* size of ws */
    /* Workspace: one device allocation, carved below. */
    float *ws;
    float *xn;                /* (batch, width[0]) normalised input */
    float *a[MLP_MAX_LINEAR]; /* a[k] (batch, width[k + 1]): output of
                                 layer k after its activation; the
                                 last is the network output */
    float *z[MLP_MAX_LINEAR]; /* gelu only: z[k] (batch, width[k + 1])
                                 pre-activation; else NULL */
    float *d[2];              /* (batch, max hidden width) gradient
                                 ping-pong for dL/da */
    float *out_phys;          /* (batch, n_outputs) denormalised */
    float *stage_x;           /* non-unified: (batch, width[0]) */
    float *stage_y;           /* non-unified: (batch, n_outputs) */
    float *stage_w;           /* (batch) importance weights */
    float *row_loss;          /* (batch) per-row losses */
};

/* mlp_init - allocate parameters, gradients and workspace on the backend
 * (zeroed). widths are the hidden widths. 0 or -ENOMEM; on failure
 * everything allocated is freed. */
int mlp_init(struct mlp *m, const struct surge_backend_ops *ops, void *ctx,
             int n_inputs, int n_outputs, int n_hidden, const int *hidden,
             int act, int batch);
void mlp_fini(struct mlp *m);

/* mlp_count_params - the parameter count of an architecture, or 0 when it
 * exceeds SURGE_TRAINER_MAX_PARAMS. */
size_t mlp_count_params(int n_inputs, int n_outputs, int n_hidden,
                        const int *hidden);

/* mlp_init_weights - fan-in initialisation (trainer.h MODEL) from seed,
 * computed on the host in host_tmp (n_params floats) and uploaded. */
int mlp_init_weights(struct mlp *m, uint64_t seed, float *host_tmp);

/* mlp_forward - a[n_linear - 1] (B, n_outputs) = network(xn (B, W_0)),
 * normalised units. Keeps what backward needs. */
void mlp_forward(struct mlp *m, const float *xn, int rows);

/* mlp_layer_cb - called by mlp_backward once layer k's gradients (dw, db)
 * are final and its parameters are no longer needed by the pass, so the
 * caller may update them right away, while they are still in cache. */
typedef void (*mlp_layer_cb)(void *arg, int k);

/* mlp_backward - given dL/dout in a[n_linear - 1] (B, n_outputs) (it is
 * overwritten) and the last bias gradient already in lin[last].db (the loss
 * op computes both), fill grads for every layer, last layer first, calling
 * done(arg, k) (when not NULL) after each. Needs the state of the
 * mlp_forward on the same xn and rows. */
void mlp_backward(struct mlp *m, const float *xn, int rows, mlp_layer_cb done,
                  void *arg);

/* The pieces, in pairs (exposed for the gradient checks). */
void mlp_linear_forward(struct mlp *m, int k, const float *in, int rows,
                        float *z);
void mlp_linear_backward(struct mlp *m, int k, const float *in, const float *dz,
                         int rows, float *din);

/* Deterministic generator for initialisation and tests: splitmix64. */
uint64_t mlp_rand_next(uint64_t *state);
/* Uniform in [-1, 1), 24 random bits. */
float mlp_rand_sym(uint64_t *state);

#endif /* SURGE_TRAINER_MLP_H */
