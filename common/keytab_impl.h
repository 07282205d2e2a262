/*
 * common/keytab_impl.h - the typed setters of common/keytab.c that the
 * JSON setter (common/keytab_json.c) and the defaults share: whoever
 * decoded the value (jansson, or the default's text), the same bounds,
 * names and messages apply. Not for other folders: they go through
 * common/keytab.h.
 *
 * Each returns 0, SURGE_ECONFIG with "path: must be ...<got>" in err, or
 * -ENOMEM; got is the value as quoted in the message (" (got 1.5)"), from
 * the decoder. On error the field keeps its value.
 */
#ifndef SURGE_COMMON_KEYTAB_IMPL_H
#define SURGE_COMMON_KEYTAB_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/keytab.h"

/* "path: <what k expects><got>": a value of the wrong type or out of
 * bounds. */
int keytab_bad(const struct surge_key *k, const char *path, const char *got,
               char *err, size_t errlen);

/* INT: x in the key's bounds and in the field's width. */
int keytab_put_int(const struct surge_key *k, void *base, const char *path,
                   int64_t x, const char *got, char *err, size_t errlen);

/* SIZE: text "256MiB" or a count, in bounds. */
int keytab_put_size_text(const struct surge_key *k, void *base,
                         const char *path, const char *text, const char *got,
                         char *err, size_t errlen);
int keytab_put_size(const struct surge_key *k, void *base, const char *path,
                    uint64_t x, const char *got, char *err, size_t errlen);

/* NUM: finite and in bounds. */
int keytab_put_num(const struct surge_key *k, void *base, const char *path,
                   double x, const char *got, char *err, size_t errlen);

/* BOOL: always fits. */
void keytab_put_bool(const struct surge_key *k, void *base, bool b);

/* ENUM: name one of the choices. */
int keytab_put_enum(const struct surge_key *k, void *base, const char *path,
                    const char *name, const char *got, char *err,
                    size_t errlen);

/* STR: s (NUL-free) one of the choices when there are, a name when
 * SURGE_KEY_NAME, not empty when SURGE_KEY_NONEMPTY, fitting the field. */
int keytab_put_str(const struct surge_key *k, void *base, const char *path,
                   const char *s, const char *got, char *err, size_t errlen);

/* INTV: n integers, not empty when SURGE_KEY_NONEMPTY, at most the
 * field's capacity, each in bounds ("path[i]: ..."). */
int keytab_put_intv(const struct surge_key *k, void *base, const char *path,
                    const int64_t *a, size_t n, char *err, size_t errlen);

/* The value of INT key k at base, exact (a uint64_t field's when it is
 * <= INT64_MAX, as every value a setter stored is). */
int64_t keytab_get_int(const struct surge_key *k, const void *base);

/* The value of BOOL key k at base as stored: 0 or 1 when valid. */
int keytab_get_bool(const struct surge_key *k, const void *base);

#endif /* SURGE_COMMON_KEYTAB_IMPL_H */
