/*
 * trainer/peek.c - surge_trainer_checkpoint_peek: what a checkpoint holds,
 * without a trainer (the server needs the sample shape and its own blob
 * before it can create one when it resumes).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/util.h"
#include "trainer/safetensors.h"
#include "trainer/trainer.h"

int
surge_trainer_checkpoint_peek(const char *path, int *n_inputs, int *n_outputs,
                              uint64_t *steps, void **extra, size_t *extra_len,
                              char *err, size_t errlen)
{
    struct st_file f;
    int rc = st_read(path, &f, "surge.crc32c", err, errlen);
    if (rc != 0) {
        return rc;
    }
    const char *fmt = st_meta(&f, "surge.format");
    long long nin, nout, st;
    if (fmt == NULL || strcmp(fmt, "surge-checkpoint") != 0) {
        surge_set_err(err, errlen, "%s: not a surge checkpoint (surge.format)",
                      path);
        rc = SURGE_EPROTO;
        goto out;
    }
    const char *ver = st_meta(&f, "surge.version");
    if (ver == NULL || strcmp(ver, "1") != 0) {
        surge_set_err(err, errlen,
                      "%s: surge-checkpoint version '%.16s', this surge reads "
                      "version 1",
                      path, ver != NULL ? ver : "missing");
        rc = SURGE_EVERSION;
        goto out;
    }
    if (st_meta_int(&f, "surge.n_inputs", 1, SURGE_TRAINER_MAX_WIDTH, &nin) !=
            0 ||
        st_meta_int(&f, "surge.n_outputs", 1, SURGE_TRAINER_MAX_WIDTH, &nout) !=
            0 ||
        st_meta_int(&f, "surge.steps", 0, INT64_MAX, &st) != 0) {
        surge_set_err(
            err, errlen,
            "%s: surge.n_inputs, surge.n_outputs or surge.steps missing "
            "or out of range",
            path);
        rc = SURGE_EPROTO;
        goto out;
    }
    void *blob = NULL;
    uint64_t blen = 0;
    char why[256];
    rc = st_get_bytes(&f, "extra", extra != NULL ? &blob : NULL, &blen, why,
                      sizeof why);
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: %s", path, why);
        goto out;
    }
    *n_inputs = (int)nin;
    *n_outputs = (int)nout;
    if (steps != NULL) {
        *steps = (uint64_t)st;
    }
    if (extra != NULL) {
        *extra = blob;
    }
    if (extra_len != NULL) {
        *extra_len = (size_t)blen;
    }
out:
    st_close(&f);
    return rc;
}
