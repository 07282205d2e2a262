/*
 * common/keytab_json.c - configuration key tables (common/keytab.h) on
 * jansson values: decode a JSON value and store it through the typed
 * setters of common/keytab.c (common/keytab_impl.h), which hold every
 * bound and name; print a field back as JSON.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <surge/error.h>

#include "common/keytab.h"
#include "common/keytab_impl.h"

/* The value the user gave, short: ' (got -1)', ' (got "foo")'. */
static void
got_json(json_t *v, char *buf, size_t cap)
{
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (text == NULL) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, cap, " (got %.64s%s)", text, strlen(text) > 64 ? "..." : "");
    free(text);
}

static int
set_intv(const struct surge_key *k, void *base, const char *path, json_t *v,
         char *err, size_t errlen)
{
    char got[96];
    if (!json_is_array(v)) {
        got_json(v, got, sizeof got);
        return surge_keytab_error(
            err, errlen, "%s: must be an array of integers%s", path, got);
    }
    int64_t a[256];
    size_t n = json_array_size(v);
    for (size_t i = 0; i < n && i < sizeof a / sizeof a[0]; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e)) {
            char epath[256];
            snprintf(epath, sizeof epath, "%s[%zu]", path, i);
            got_json(e, got, sizeof got);
            return keytab_bad(k, epath, got, err, errlen);
        }
        a[i] = (int64_t)json_integer_value(e);
    }
    /* More than a holds is more than any field holds: the setter says so
     * with the count. */
    return keytab_put_intv(k, base, path, a, n, err, errlen);
}

int
surge_keytab_set(const struct surge_key *k, void *base, const char *path,
                 json_t *v, char *err, size_t errlen)
{
    char got[96];
    got_json(v, got, sizeof got);
    switch (k->type) {
    case SURGE_KEY_STR:
        if (!json_is_string(v)) {
            return surge_keytab_error(err, errlen, "%s: must be a string%s",
                                      path, got);
        }
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            return surge_keytab_error(
                err, errlen, "%s: must not contain NUL characters", path);
        }
        return keytab_put_str(k, base, path, json_string_value(v), got, err,
                              errlen);
    case SURGE_KEY_INT:
        if (!json_is_integer(v)) {
            return keytab_bad(k, path, got, err, errlen);
        }
        return keytab_put_int(k, base, path, (int64_t)json_integer_value(v),
                              got, err, errlen);
    case SURGE_KEY_SIZE:
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            return keytab_put_size(k, base, path,
                                   (uint64_t)json_integer_value(v), got, err,
                                   errlen);
        }
        if (!json_is_string(v)) {
            return keytab_bad(k, path, got, err, errlen);
        }
        return keytab_put_size_text(k, base, path, json_string_value(v), got,
                                    err, errlen);
    case SURGE_KEY_NUM:
        if (!json_is_number(v)) {
            return surge_keytab_error(err, errlen, "%s: must be a number%s",
                                      path, got);
        }
        return keytab_put_num(k, base, path, json_number_value(v), got, err,
                              errlen);
    case SURGE_KEY_BOOL:
        if (!json_is_boolean(v)) {
            return surge_keytab_error(err, errlen,
                                      "%s: must be true or false%s", path, got);
        }
        keytab_put_bool(k, base, json_is_true(v));
        return 0;
    case SURGE_KEY_ENUM:
        if (!json_is_string(v)) {
            return keytab_bad(k, path, got, err, errlen);
        }
        return keytab_put_enum(k, base, path, json_string_value(v), got, err,
                               errlen);
    case SURGE_KEY_INTV:
        return set_intv(k, base, path, v, err, errlen);
    case SURGE_KEY_TABLE:
    case SURGE_KEY_CUSTOM:
        break;
    }
    return surge_keytab_error(
        err, errlen, "%s: not a value the key table sets (a bug)", path);
}

json_t *
surge_keytab_to_json(const struct surge_key *k, const void *base)
{
    const char *slot = (const char *)base + k->off;
    switch (k->type) {
    case SURGE_KEY_STR: {
        const char *s = slot;
        if (k->size == 0) {
            memcpy(&s, slot, sizeof s);
        }
        return s != NULL ? json_string(s) : NULL;
    }
    case SURGE_KEY_INT:
        return json_integer((json_int_t)keytab_get_int(k, base));
    case SURGE_KEY_SIZE: {
        uint64_t x;
        memcpy(&x, slot, sizeof x);
        return json_integer((json_int_t)x);
    }
    case SURGE_KEY_NUM: {
        double x;
        memcpy(&x, slot, sizeof x);
        return json_real(x);
    }
    case SURGE_KEY_BOOL:
        return json_boolean(keytab_get_bool(k, base));
    case SURGE_KEY_ENUM: {
        int x;
        memcpy(&x, slot, sizeof x);
        return json_string(surge_keytab_choice(k, x));
    }
    case SURGE_KEY_INTV: {
        int n;
        memcpy(&n, (const char *)base + k->off2, sizeof n);
        json_t *a = json_array();
        for (int i = 0; a != NULL && i < n; i++) {
            int x;
            memcpy(&x, slot + (size_t)i * sizeof x, sizeof x);
            if (json_array_append_new(a, json_integer(x)) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case SURGE_KEY_TABLE:
    case SURGE_KEY_CUSTOM:
        break;
    }
    return NULL;
}
