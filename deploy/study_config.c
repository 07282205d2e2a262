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
    cfg->max_batch =
        (size_t)(s->res_max_batch > 0 ? s->res_max_batch : s->tr_batch_size);
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
    surge_trainer_config_defaults(cfg);
    cfg->n_inputs = n_inputs;
    cfg->n_outputs = n_outputs;
    cfg->n_layers = (int)s->tr_nlayers;
    for (size_t i = 0; i < s->tr_nlayers && i < SURGE_TRAINER_MAX_LAYERS; i++) {
        cfg->layers[i] = (int)s->tr_layers[i];
    }
    cfg->activation = s->tr_activation;
    cfg->optimizer = s->tr_optimizer;
    cfg->lr = s->tr_lr;
    cfg->beta1 = s->tr_beta1;
    cfg->beta2 = s->tr_beta2;
    cfg->eps = s->tr_eps;
    cfg->weight_decay = s->tr_weight_decay;
    cfg->momentum = s->tr_momentum;
    cfg->schedule = s->tr_schedule;
    cfg->warmup_steps = (long)s->tr_warmup_steps;
    cfg->total_steps = (long)s->tr_total_steps;
    cfg->min_lr = s->tr_min_lr;
    cfg->step_size = (long)s->tr_step_size;
    cfg->gamma = s->tr_gamma;
    cfg->grad_clip = s->tr_grad_clip;
    cfg->batch_size = (int)s->tr_batch_size;
    cfg->threads = (int)s->tr_threads;
    cfg->seed = (uint64_t)s->tr_seed;
    cfg->out_norm = s->tr_out_norm;
    cfg->out_norm_samples = (long)s->tr_out_norm_samples;
    snprintf(cfg->backend, sizeof cfg->backend, "%s", s->tr_backend);
    cfg->precision = s->tr_precision;
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
