/*
 * deploy/study_config.h - the study's reservoir and trainer sections as the
 * configuration structs of reservoir/reservoir.h and trainer/trainer.h.
 *
 * The study file parser (deploy/study.c) checks every key on its own; these
 * functions map the result onto the libraries' structs and run the
 * libraries' own validation, so combination rules that only they know
 * (e.g. the rate limiter's window against the batch size) are caught before
 * a study starts. The server, which knows the real sample sizes, can use
 * the same mapping.
 *
 * Threads: reentrant. Errors: 0 or SURGE_ECONFIG with the key's path first
 * in err.
 */
#ifndef SURGE_DEPLOY_STUDY_CONFIG_H
#define SURGE_DEPLOY_STUDY_CONFIG_H

#include <stddef.h>

#include "deploy/study.h"
#include "reservoir/reservoir.h"
#include "trainer/trainer.h"

/* surge_study_reservoir_config - fill *cfg from the study's reservoir
 * section for samples of input_dim + output_dim floats; max_batch 0 in the
 * study becomes trainer.batch_size. Always succeeds (values were checked
 * by the parser). */
void surge_study_reservoir_config(const surge_study *s, size_t input_dim,
                                  size_t output_dim,
                                  surge_reservoir_config *cfg);

/* surge_study_trainer_config - fill *cfg from the study's trainer section
 * for a model of n_inputs -> n_outputs. Always succeeds. */
void surge_study_trainer_config(const surge_study *s, int n_inputs,
                                int n_outputs,
                                struct surge_trainer_config *cfg);

/* surge_study_check_components - run surge_reservoir_config_check() and
 * surge_trainer_config_validate() on the study's sections, with inputs =
 * parameters + time and a one-float output standing in for the fields (the
 * launcher does not know their size; the server checks again with the real
 * sizes). 0 or SURGE_ECONFIG with the libraries' message in err. */
int surge_study_check_components(const surge_study *s, char *err,
                                 size_t errcap);

#endif /* SURGE_DEPLOY_STUDY_CONFIG_H */
