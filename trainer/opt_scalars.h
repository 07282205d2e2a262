/*
 * trainer/opt_scalars.h - the per-step optimizer scalars (schedule, bias
 * corrections, clip factor, skip on a non-finite loss or norm), written once
 * for the host (backend_cpu.c) and the device (backend_cuda.cu, where it
 * runs in a one-thread kernel), so that every backend applies the same
 * numbers and a step captured in a CUDA graph still follows the schedule:
 * the learning rate is a function of the step counter in device memory.
 * Arithmetic in double, rounded once to float (trainer.h OPTIMISERS).
 */
#ifndef SURGE_TRAINER_OPT_SCALARS_H
#define SURGE_TRAINER_OPT_SCALARS_H

#include <math.h>
#include <stdint.h>

#include "trainer/backend.h"
#include "trainer/trainer.h"

#ifdef __CUDACC__
#define SURGE_HD __host__ __device__
#else
#define SURGE_HD
#endif

/* surge_opt_lr_at - the scheduled learning rate before step s (0-based):
 * trainer.h SCHEDULES. */
static inline SURGE_HD double
surge_opt_lr_at(const struct surge_opt_config *c, uint64_t s)
{
    if (c->warmup_steps > 0 && s < (uint64_t)c->warmup_steps) {
        return c->lr * (double)(s + 1) / (double)c->warmup_steps;
    }
    double u = (double)(s - (uint64_t)c->warmup_steps);
    if (c->schedule == SURGE_SCHED_COSINE) {
        double horizon = (double)(c->total_steps - c->warmup_steps);
        double x = u < horizon ? u / horizon : 1.0;
        return c->min_lr + (c->lr - c->min_lr) * 0.5 *
                               (1.0 + cos(3.14159265358979323846 * x));
    }
    if (c->schedule == SURGE_SCHED_STEP) {
        return c->lr * pow(c->gamma, floor(u / (double)c->step_size));
    }
    return c->lr;
}

/* surge_opt_scalars_run - one phase (enum surge_opt_phase) on st; phase
 * END also fills rep (all but seq, which the caller publishes last). */
static inline SURGE_HD void
surge_opt_scalars_run(const struct surge_opt_config *c,
                      struct surge_step_state *st, int phase,
                      struct surge_step_report *rep)
{
    if (phase == SURGE_OPT_BEGIN) {
        double lr = surge_opt_lr_at(c, st->step);
        double tt = (double)(st->step + 1);
        struct surge_opt_step *s = &st->s;
        st->lr = lr;
        st->sumsq = 0.0;
        st->skip = isfinite(st->loss) ? 0 : 1;
        s->kind = c->kind;
        s->lr = (float)lr;
        s->beta1 = (float)c->beta1;
        s->beta2 = (float)c->beta2;
        s->eps = (float)c->eps;
        s->weight_decay = (float)c->weight_decay;
        s->momentum = (float)c->momentum;
        s->step_size = (float)(lr / (1.0 - pow(c->beta1, tt)));
        s->inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow(c->beta2, tt)));
        s->decay = (float)(1.0 - lr * c->weight_decay);
        s->grad_scale = 1.0f;
        s->first = st->step == 0;
    } else if (phase == SURGE_OPT_CLIP) {
        double norm = sqrt(st->sumsq);
        if (!isfinite(norm)) {
            st->skip = 1;
        } else if (c->grad_clip > 0.0 && norm > c->grad_clip) {
            st->s.grad_scale = (float)(c->grad_clip / norm);
        }
    } else {
        if (st->skip) {
            st->skipped++;
        } else {
            st->step++;
        }
        rep->step = st->step;
        rep->skipped = st->skipped;
        rep->loss = st->loss;
        rep->grad_norm = sqrt(st->sumsq);
        rep->lr = st->lr;
        rep->last_skipped = st->skip;
    }
}

#endif /* SURGE_TRAINER_OPT_SCALARS_H */
