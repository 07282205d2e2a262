/*
 * solvers/heat2d/solver.c - the numerics of surge-heat2d.
 *
 * DESIGN. Implicit Euler for u_t = alpha * Laplacian(u) with the 5-point
 * stencil gives, per step, the linear system
 *
 *     M u_new = u + cx (g_left + g_right) + cy (g_bottom + g_top)
 *     M = I - dt alpha A_h,   cx = dt alpha / hx^2,  cy = dt alpha / hy^2
 *
 * where A_h is the 5-point Laplacian with homogeneous Dirichlet conditions
 * and g_* put the boundary temperature on the points next to each wall.
 * M is symmetric positive definite with every eigenvalue >= 1, so CG
 * converges, and ||u_new - exact||_2 <= ||residual||_2 <= cg_tol ||b||_2:
 * the tests use this bound to state their tolerances.
 *
 * M is never stored: heat2d_step applies it point by point. Only the CG
 * direction p needs neighbour rows, exchanged with MPI_Sendrecv before each
 * product (and u once, for the initial residual). The two dot products per
 * iteration are MPI_Allreduce sums, so every rank takes the same decisions
 * (iteration count, convergence, failure) and no extra agreement is needed.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "heat2d.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

void
heat2d_rows(int ny, int rank, int nranks, int *row0, int *nrows)
{
    int base = ny / nranks;
    int extra = ny % nranks;
    *nrows = base + (rank < extra ? 1 : 0);
    *row0 = rank * base + (rank < extra ? rank : extra);
}

int
heat2d_grid_init(heat2d_grid *g, MPI_Comm comm, const heat2d_config *cfg,
                 const double *params)
{
    memset(g, 0, sizeof *g);
    g->comm = comm;
    MPI_Comm_rank(comm, &g->rank);
    MPI_Comm_size(comm, &g->nranks);
    if (cfg->nx < 1 || cfg->ny < g->nranks) {
        return -EINVAL;
    }
    g->nx = cfg->nx;
    g->ny = cfg->ny;
    heat2d_rows(g->ny, g->rank, g->nranks, &g->row0, &g->nrows);
    g->down = g->rank > 0 ? g->rank - 1 : MPI_PROC_NULL;
    g->up = g->rank < g->nranks - 1 ? g->rank + 1 : MPI_PROC_NULL;
    g->hx = 1.0 / (g->nx + 1);
    g->hy = 1.0 / (g->ny + 1);
    g->cx = cfg->dt * cfg->alpha / (g->hx * g->hx);
    g->cy = cfg->dt * cfg->alpha / (g->hy * g->hy);
    g->diag = 1.0 + 2.0 * g->cx + 2.0 * g->cy;
    g->bc[0] = params[HEAT2D_P_LEFT];
    g->bc[1] = params[HEAT2D_P_RIGHT];
    g->bc[2] = params[HEAT2D_P_BOTTOM];
    g->bc[3] = params[HEAT2D_P_TOP];

    /* nx <= 65536 and nrows <= 65536 were checked by the flag parser, so
     * the product cannot overflow size_t. calloc zeroes the halo rows,
     * which must stay zero at the walls. */
    size_t len = (size_t)(g->nrows + 2) * (size_t)g->nx;
    g->mem = calloc(5 * len, sizeof *g->mem);
    if (g->mem == NULL) {
        return -ENOMEM;
    }
    g->u = g->mem;
    g->b = g->mem + len;
    g->r = g->mem + 2 * len;
    g->p = g->mem + 3 * len;
    g->q = g->mem + 4 * len;

    double *u = g->u + g->nx;
    for (int l = 0; l < g->nrows; l++) {
        double y = (g->row0 + l + 1) * g->hy;
        for (int i = 0; i < g->nx; i++) {
            double v = params[HEAT2D_P_INITIAL];
            if (cfg->init == HEAT2D_INIT_SINE) {
                double x = (i + 1) * g->hx;
                v *= sin(M_PI * x) * sin(M_PI * y);
            }
            u[(size_t)l * g->nx + i] = v;
        }
    }
    return 0;
}

void
heat2d_grid_fini(heat2d_grid *g)
{
    free(g->mem);
    g->mem = NULL;
    g->u = g->b = g->r = g->p = g->q = NULL;
}

/* Fill the halo rows of v from the neighbours. Rows sent up are received
 * from below and the other way round; MPI_PROC_NULL at the walls leaves
 * those halo rows untouched (zero). */
static void
halo_exchange(heat2d_grid *g, double *v)
{
    int nx = g->nx;
    double *bottom_halo = v;
    double *first = v + nx;
    double *last = v + (size_t)g->nrows * nx;
    double *top_halo = v + (size_t)(g->nrows + 1) * nx;
    MPI_Sendrecv(last, nx, MPI_DOUBLE, g->up, 1, bottom_halo, nx, MPI_DOUBLE,
                 g->down, 1, g->comm, MPI_STATUS_IGNORE);
    MPI_Sendrecv(first, nx, MPI_DOUBLE, g->down, 2, top_halo, nx, MPI_DOUBLE,
                 g->up, 2, g->comm, MPI_STATUS_IGNORE);
}

/* out = M v on the owned rows; v's halo rows must be current. The terms
 * are added in the same order on every rank count, so the product is
 * bitwise independent of the decomposition. */
static void
apply_m(const heat2d_grid *g, const double *v, double *out)
{
    int nx = g->nx;
    for (int l = 1; l <= g->nrows; l++) {
        const double *c = v + (size_t)l * nx;
        const double *s = c - nx;
        const double *n = c + nx;
        double *o = out + (size_t)l * nx;
        for (int i = 0; i < nx; i++) {
            double west = i > 0 ? c[i - 1] : 0.0;
            double east = i < nx - 1 ? c[i + 1] : 0.0;
            o[i] =
                g->diag * c[i] - g->cx * (west + east) - g->cy * (s[i] + n[i]);
        }
    }
}

/* The global dot product of two vectors over the owned rows. */
static double
dot(const heat2d_grid *g, const double *a, const double *b)
{
    size_t n = (size_t)g->nrows * g->nx;
    const double *x = a + g->nx;
    const double *y = b + g->nx;
    double local = 0.0;
    for (size_t k = 0; k < n; k++) {
        local += x[k] * y[k];
    }
    double global = 0.0;
    MPI_Allreduce(&local, &global, 1, MPI_DOUBLE, MPI_SUM, g->comm);
    return global;
}

/* b = u + the boundary terms of the points next to a wall. */
static void
build_rhs(heat2d_grid *g)
{
    int nx = g->nx;
    for (int l = 0; l < g->nrows; l++) {
        int j = g->row0 + l;
        const double *u = g->u + (size_t)(l + 1) * nx;
        double *b = g->b + (size_t)(l + 1) * nx;
        double add_y = 0.0;
        if (j == 0) {
            add_y += g->cy * g->bc[2];
        }
        if (j == g->ny - 1) {
            add_y += g->cy * g->bc[3];
        }
        for (int i = 0; i < nx; i++) {
            double add = add_y;
            if (i == 0) {
                add += g->cx * g->bc[0];
            }
            if (i == nx - 1) {
                add += g->cx * g->bc[1];
            }
            b[i] = u[i] + add;
        }
    }
}

int
heat2d_step(heat2d_grid *g, double cg_tol, int cg_maxit, heat2d_cg_result *res)
{
    size_t n = (size_t)g->nrows * g->nx;
    double *u = g->u + g->nx;
    double *b = g->b + g->nx;
    double *r = g->r + g->nx;
    double *p = g->p + g->nx;
    double *q = g->q + g->nx;

    res->iterations = 0;
    res->rel_resid = 0.0;
    build_rhs(g);
    double bb = dot(g, g->b, g->b);
    if (!isfinite(bb)) {
        res->rel_resid = NAN;
        return -1;
    }
    if (bb == 0.0) {
        /* M is non-singular: a zero right side has the zero solution. */
        memset(u, 0, n * sizeof *u);
        return 0;
    }
    double stop = cg_tol * cg_tol * bb;

    halo_exchange(g, g->u);
    apply_m(g, g->u, g->q);
    for (size_t k = 0; k < n; k++) {
        r[k] = b[k] - q[k];
        p[k] = r[k];
    }
    double rr = dot(g, g->r, g->r);
    int it = 0;
    while (isfinite(rr) && rr > stop && it < cg_maxit) {
        halo_exchange(g, g->p);
        apply_m(g, g->p, g->q);
        double pq = dot(g, g->p, g->q);
        if (!(pq > 0.0)) {
            /* Impossible for SPD M unless p vanished or a value overflowed:
             * stop and let the residual test below report it. */
            break;
        }
        double a = rr / pq;
        for (size_t k = 0; k < n; k++) {
            u[k] += a * p[k];
            r[k] -= a * q[k];
        }
        double rr_new = dot(g, g->r, g->r);
        double beta = rr_new / rr;
        for (size_t k = 0; k < n; k++) {
            p[k] = r[k] + beta * p[k];
        }
        rr = rr_new;
        it++;
    }
    res->iterations = it;
    res->rel_resid = sqrt(rr / bb);
    return isfinite(rr) && rr <= stop ? 0 : -1;
}
