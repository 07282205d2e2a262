/*
 * deploy/sampler.h - design of experiments: the parameter sets of a study.
 *
 * Each run of a study gets one point of the parameter box
 * [min_1, max_1] x ... x [min_d, max_d]. The samplers:
 *   uniform  independent points from a seeded xoshiro256** generator;
 *   lhs      Latin hypercube: each parameter's range is cut into `runs`
 *            equal strata and every stratum holds exactly one point;
 *   halton   GSL's gsl_qrng_halton (up to 64 parameters here);
 *   sobol    GSL's gsl_qrng_sobol (up to 40 parameters);
 *   csv      rows of a file with one column per parameter.
 * Halton and Sobol are deterministic sequences; `sampler.skip` drops their
 * first points and `sampler.scramble` adds a random shift drawn from the
 * seed (a Cranley-Patterson rotation), which keeps their low discrepancy.
 * The same study file and seed give bit-identical points on every machine:
 * the generators are implemented here or in GSL, never libc's rand().
 *
 * Threads: call from one thread (GSL's error handler is switched off around
 * its calls so that GSL cannot abort the program, and that is global).
 */
#ifndef SURGE_DEPLOY_SAMPLER_H
#define SURGE_DEPLOY_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

#include "deploy/study.h"

/* surge_sampler_generate - the study's parameter sets. On success *out is a
 * new array of (*nruns, s->nparams) doubles, row-major, that the caller
 * frees with free(); each row lies in the parameter box. For csv, *nruns
 * is the number of rows used (sampler.runs if set, else all rows).
 * Returns 0, SURGE_ECONFIG with a message in err naming the file and line
 * (csv), or -ENOMEM. */
int surge_sampler_generate(const surge_study *s, double **out, size_t *nruns,
                           char *err, size_t errcap);

/* surge_sampler_unit - nruns points of the unit cube [0, 1)^d for kind
 * (uniform, lhs, halton or sobol) into u (nruns * d doubles, caller's
 * storage). Exposed for tests of stratification and sequences. Returns 0,
 * -EINVAL (bad kind or dimension), -ENOMEM. */
int surge_sampler_unit(int kind, size_t d, size_t nruns, uint64_t seed,
                       int scramble, uint64_t skip, double *u);

/* surge_sampler_write_csv - write "sim,<name>,..." then one row per run
 * (values as %.17g, so they read back bit-identical) to path, atomically.
 * Returns 0 or -errno. */
int surge_sampler_write_csv(const surge_study *s, const double *x, size_t nruns,
                            const char *path);

/* The samplers and the launcher draw from surge_rng (common/rng.h:
 * xoshiro256**, seeded through splitmix64). */

#endif /* SURGE_DEPLOY_SAMPLER_H */
