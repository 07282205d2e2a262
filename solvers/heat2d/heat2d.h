/*
 * solvers/heat2d/heat2d.h - internals of surge-heat2d, the example solver:
 * the 2D heat equation u_t = alpha * Laplacian(u) on the unit square,
 * implicit Euler in time, 5-point finite differences in space, a row-block
 * MPI decomposition and a matrix-free conjugate gradient solve per step.
 * README.md next to this file is the user's documentation; this header
 * says how the three source files divide the work:
 *
 *   args.c    strict flag parsing into a heat2d_config
 *   solver.c  the numerics: decomposition, halo exchange, operator, CG
 *   main.c    MPI set-up, the time loop, libsurge, dumps, fault injection
 *
 * Not a library: nothing here is exported, and the solver uses only the
 * public client header <surge/client.h> plus MPI, like any user's solver.
 */
#ifndef SURGE_HEAT2D_H
#define SURGE_HEAT2D_H

#include <stddef.h>

#include <mpi.h>

/* The five parameters, in the order of --params and SURGE_PARAMS. */
enum {
    HEAT2D_P_INITIAL = 0, /* initial temperature (sine: its amplitude) */
    HEAT2D_P_LEFT = 1,    /* boundary x = 0 */
    HEAT2D_P_RIGHT = 2,   /* boundary x = 1 */
    HEAT2D_P_BOTTOM = 3,  /* boundary y = 0 */
    HEAT2D_P_TOP = 4,     /* boundary y = 1 */
    HEAT2D_NPARAMS = 5
};

/* Largest grid side, and largest nx * ny: keeps every MPI count in an int
 * and the dump's gather on rank 0 at most 2 GiB. */
#define HEAT2D_MAX_SIDE 65536
#define HEAT2D_MAX_POINTS (1L << 28)

typedef enum heat2d_init {
    HEAT2D_INIT_CONSTANT = 0, /* u0 = initial temperature everywhere */
    HEAT2D_INIT_SINE = 1      /* u0 = initial * sin(pi x) sin(pi y) */
} heat2d_init;

/* heat2d_config - what the command line asks for. Strings are borrowed
 * from argv. */
typedef struct heat2d_config {
    int nx;                        /* interior points along x (columns) */
    int ny;                        /* interior points along y (rows) */
    long steps;                    /* implicit Euler steps, >= 1 */
    double dt;                     /* time step, simulated time units */
    double alpha;                  /* diffusivity, > 0 */
    double cg_tol;                 /* stop when ||b - Mx|| <= tol ||b|| */
    int cg_maxit;                  /* CG iterations per step, then error */
    double params[HEAT2D_NPARAMS]; /* valid when have_params */
    int have_params;               /* --params given */
    heat2d_init init;              /* shape of the initial field */
    int no_surge;                  /* run without a server */
    const char *dump_path;         /* --dump FILE (.npy) or NULL */
    const char *checksums_path;    /* --checksums FILE or NULL */
    long fail_at_step;             /* exit 3 at this step; 0: never */
    long hang_at_step;             /* stop and sleep at this step; 0: never */
    long fail_attempts;            /* inject only while SURGE_ATTEMPT <= this;
                                      -1: on every attempt */
    long step_delay_ms;            /* sleep after each step, ms */
} heat2d_config;

/* heat2d_parse_args - fill *cfg from argv (defaults first). Returns 0 on
 * success, 1 when --help was asked, or -1 with a message naming the bad
 * flag or value in err (at most errlen bytes, always terminated). */
int heat2d_parse_args(heat2d_config *cfg, int argc, char **argv, char *err,
                      size_t errlen);

/* heat2d_usage - the --help text. */
const char *heat2d_usage(void);

/* heat2d_parse_params - parse "a,b,c,d,e" (exactly five finite numbers)
 * into out. Returns 0, or -1 with the reason in err. */
int heat2d_parse_params(const char *s, double *out, char *err, size_t errlen);

/* heat2d_parse_long - strict decimal integer in [lo, hi]: the whole string,
 * no blanks, no overflow. Returns 0 or -1. */
int heat2d_parse_long(const char *s, long lo, long hi, long *out);

/* heat2d_grid - one rank's share of the problem. The owned rows are
 * contiguous (row-block decomposition, sizes differ by at most one); each
 * vector holds them with one halo row below and one above, so an owned
 * point (i, l) of vector v is v[(l + 1) * nx + i] for l in [0, nrows). Rows
 * grow with y, columns with x; global point (i, j) sits at
 * x = (i + 1) * hx, y = (j + 1) * hy. Halo rows at a wall stay zero: they
 * are never received into, so the operator sees the homogeneous Dirichlet
 * condition there and the boundary values enter through the right side. */
typedef struct heat2d_grid {
    MPI_Comm comm; /* the simulation's ranks (borrowed) */
    int rank;      /* this rank in comm */
    int nranks;    /* ranks in comm */
    int down;      /* rank owning the rows below, or MPI_PROC_NULL */
    int up;        /* rank owning the rows above, or MPI_PROC_NULL */
    int nx;        /* global interior columns */
    int ny;        /* global interior rows */
    int row0;      /* first global row this rank owns */
    int nrows;     /* rows this rank owns, >= 1 */
    double hx;     /* 1 / (nx + 1) */
    double hy;     /* 1 / (ny + 1) */
    double cx;     /* dt * alpha / hx^2 */
    double cy;     /* dt * alpha / hy^2 */
    double diag;   /* 1 + 2 cx + 2 cy: the diagonal of M */
    double bc[4];  /* boundary temperatures: left, right, bottom, top */
    double *mem;   /* the one allocation behind the five vectors */
    double *u;     /* (nrows + 2, nx) temperature, the CG iterate */
    double *b;     /* (nrows + 2, nx) right side of the step */
    double *r;     /* (nrows + 2, nx) CG residual */
    double *p;     /* (nrows + 2, nx) CG direction (halo exchanged) */
    double *q;     /* (nrows + 2, nx) M p */
} heat2d_grid;

/* heat2d_rows - the row block of `rank` among `nranks` for ny rows:
 * the first ny % nranks ranks get one row more. */
void heat2d_rows(int ny, int rank, int nranks, int *row0, int *nrows);

/* heat2d_grid_init - decompose and allocate. Requires ny >= nranks (every
 * rank owns a row). Sets the initial field from cfg->init and params.
 * Returns 0, -EINVAL when the grid does not fit the ranks, -ENOMEM. On
 * success the caller calls heat2d_grid_fini(). */
int heat2d_grid_init(heat2d_grid *g, MPI_Comm comm, const heat2d_config *cfg,
                     const double *params);

/* heat2d_grid_fini - free the vectors. Safe on a zeroed grid. */
void heat2d_grid_fini(heat2d_grid *g);

/* heat2d_cg_result - what one implicit Euler step's solve did. */
typedef struct heat2d_cg_result {
    int iterations;   /* CG iterations (matrix-vector products after the
                         initial residual) */
    double rel_resid; /* ||b - M u|| / ||b|| of the recursive residual */
} heat2d_cg_result;

/* heat2d_step - advance u by one implicit Euler step: solve
 * (I - dt alpha A_h) u_new = u + dt alpha g, with A_h the 5-point Laplacian
 * and g the boundary values, by CG started from u. Collective over comm:
 * every rank gets the same result (the dot products are all-reduced).
 * Returns 0, or -1 when CG did not reach cg_tol in cg_maxit iterations or
 * met a non-finite value (*res says how far it got). */
int heat2d_step(heat2d_grid *g, double cg_tol, int cg_maxit,
                heat2d_cg_result *res);

/* heat2d_owned - this rank's owned rows, contiguous: nrows * nx values. */
static inline const double *
heat2d_owned(const heat2d_grid *g)
{
    return g->u + g->nx;
}

#endif /* SURGE_HEAT2D_H */
