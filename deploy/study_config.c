/* deploy/study_config.c - study sections to library configs
 * (deploy/study_config.h). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "deploy/study_config.h"

void
surge_study_reservoir_config(const surge_study *s, size_t input_dim,
                             size_t output_dim, surge_reservoir_config *cfg)
{
    surge_reservoir_config_init(cfg);
    /* The study's enum indexes follow the library's enum (fifo, firo,
     * reservoir); see the choices in deploy/study.c. */
    cfg->policy = (enum surge_reservoir_policy)s->res_policy;
    cfg->capacity_bytes = (size_t)s->res_capacity_bytes;
    cfg->input_dim = input_dim;
    cfg->output_dim = output_dim;
    cfg->max_batch = (size_t)(s->res_max_batch > 0 ? s->res_max_batch
                                                   : s->trainer.batch_size);
    cfg->watermark = (size_t)s->res_watermark;
    cfg->seed = (uint64_t)s->res_seed;
    cfg->epochs = (unsigned)s->res_epochs;
    cfg->max_uses = (unsigned)s->res_max_uses;
    cfg->rate.samples_per_insert = s->res_rate_spi;
    cfg->rate.min_diff = s->res_rate_min_diff;
    cfg->rate.max_diff = s->res_rate_max_diff;
    cfg->balance_sims = s->res_balance_sims != 0;
    cfg->prioritized.enabled = s->res_prio_enabled != 0;
    cfg->prioritized.alpha = s->res_prio_alpha;
    cfg->prioritized.beta = s->res_prio_beta;
    cfg->prioritized.epsilon = s->res_prio_epsilon;
    /* auto is resolved by the server's trainer (device for a CUDA
     * trainer with a device present): host here. */
    cfg->storage = s->res_storage == 2 ? SURGE_RESERVOIR_STORAGE_DEVICE
                                       : SURGE_RESERVOIR_STORAGE_HOST;
    cfg->device = (int)s->res_device;
}

void
surge_study_trainer_config(const surge_study *s, int n_inputs, int n_outputs,
                           struct surge_trainer_config *cfg)
{
    *cfg = s->trainer;
    cfg->n_inputs = n_inputs;
    cfg->n_outputs = n_outputs;
}

int
surge_study_check_components(const surge_study *s, char *err, size_t errcap)
{
    surge_reservoir_config rc;
    surge_study_reservoir_config(s, s->nparams + 1, 1, &rc);
    int r = surge_reservoir_config_check(&rc, err, errcap);
    if (r != 0) {
        return SURGE_ECONFIG;
    }
    struct surge_trainer_config tc;
    surge_study_trainer_config(s, (int)s->nparams + 1, 1, &tc);
    r = surge_trainer_config_validate(&tc, err, errcap);
    return r != 0 ? SURGE_ECONFIG : 0;
}
