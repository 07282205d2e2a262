/*
 * common/keytab.c - the setter, checker and printer of configuration key
 * tables (common/keytab.h), on jansson values.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <surge/error.h>

#include "common/keytab.h"
#include "common/protocol.h"

int
surge_keytab_verror(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err == NULL || errlen == 0) {
        return SURGE_ECONFIG;
    }
    vsnprintf(err, errlen, fmt, ap);
    /* Keys and values come from a file and are quoted in the message,
     * which must stay one line (a log line, a terminal): control
     * characters (a key "r\nks" decoded from JSON) become '?'. */
    for (char *c = err; *c != '\0'; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            *c = '?';
        }
    }
    return SURGE_ECONFIG;
}

int
surge_keytab_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = surge_keytab_verror(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

const struct surge_key *
surge_keytab_find(const struct surge_key *t, const char *name)
{
    for (; t->name != NULL; t++) {
        if (strcmp(t->name, name) == 0) {
            return t;
        }
    }
    return NULL;
}

static int
n_choices(const struct surge_key *k)
{
    int n = 0;
    while (k->choices != NULL && k->choices[n] != NULL) {
        n++;
    }
    return n;
}

const char *
surge_keytab_choice(const struct surge_key *k, int i)
{
    return i >= 0 && i < n_choices(k) ? k->choices[i] : "?";
}

int
surge_keytab_choice_index(const struct surge_key *k, const char *name)
{
    for (int j = 0; name != NULL && k->choices != NULL && k->choices[j] != NULL;
         j++) {
        if (strcmp(k->choices[j], name) == 0) {
            return j;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ text */

/* The shortest decimal that reads back as v. */
static void
fmt_num(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            snprintf(buf, cap, "%s", tmp);
            return;
        }
    }
    snprintf(buf, cap, "%.17g", v);
}

/* "must be > 0", "must be in [0, 1)", "must be an integer >= 1",
 * "must be one of: a, b" ... what key k expects, in the words of
 * docs/configuration.md. */
static void
expected(const struct surge_key *k, char *buf, size_t cap)
{
    if (k->choices != NULL) {
        size_t used = (size_t)snprintf(buf, cap, "must be one of: ");
        for (int j = 0; k->choices[j] != NULL && used < cap; j++) {
            used += (size_t)snprintf(buf + used, cap - used, "%s%s",
                                     j > 0 ? ", " : "", k->choices[j]);
        }
        return;
    }
    char lo[64], hi[64];
    fmt_num(lo, sizeof lo, k->min);
    fmt_num(hi, sizeof hi, k->max);
    const char *what =
        k->type == SURGE_KEY_INT || k->type == SURGE_KEY_INTV ? "an integer "
        : k->type == SURGE_KEY_SIZE ? "a size in bytes (an integer or "
                                      "a string like \"256MiB\") "
                                    : "";
    if (k->flags & SURGE_KEY_NO_MIN) {
        snprintf(buf, cap, "must be %sa finite number", what);
    } else if (k->flags & SURGE_KEY_NO_MAX) {
        snprintf(buf, cap, "must be %s%s %s", what,
                 (k->flags & SURGE_KEY_MIN_EXCL) ? ">" : ">=", lo);
    } else {
        snprintf(buf, cap, "must be %sin %c%s, %s%c", what,
                 (k->flags & SURGE_KEY_MIN_EXCL) ? '(' : '[', lo, hi,
                 (k->flags & SURGE_KEY_MAX_EXCL) ? ')' : ']');
    }
}

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

static bool
in_bounds(const struct surge_key *k, double v)
{
    if (!isfinite(v)) {
        return false;
    }
    if (!(k->flags & SURGE_KEY_NO_MIN)) {
        if ((k->flags & SURGE_KEY_MIN_EXCL) ? !(v > k->min) : !(v >= k->min)) {
            return false;
        }
    }
    if (!(k->flags & SURGE_KEY_NO_MAX)) {
        if ((k->flags & SURGE_KEY_MAX_EXCL) ? !(v < k->max) : !(v <= k->max)) {
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------ fields */

static bool
int_is_narrow(const struct surge_key *k)
{
    return k->size == sizeof(int);
}

static int64_t
get_int(const struct surge_key *k, const void *slot)
{
    if (int_is_narrow(k)) {
        int x;
        memcpy(&x, slot, sizeof x);
        return x;
    }
    int64_t x;
    memcpy(&x, slot, sizeof x);
    return x;
}

/* x in the field's width, false when it does not fit. */
static bool
put_int(const struct surge_key *k, void *slot, int64_t x)
{
    if (int_is_narrow(k)) {
        if (x < INT_MIN || x > INT_MAX) {
            return false;
        }
        int v = (int)x;
        memcpy(slot, &v, sizeof v);
        return true;
    }
    memcpy(slot, &x, sizeof x);
    return true;
}

static int
parse_size_text(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"B", 1},
        {"KiB", UINT64_C(1) << 10},
        {"MiB", UINT64_C(1) << 20},
        {"GiB", UINT64_C(1) << 30},
        {"TiB", UINT64_C(1) << 40},
        {"kB", 1000},
        {"KB", 1000},
        {"MB", 1000000},
        {"GB", 1000000000},
        {"TB", UINT64_C(1000000000000)},
    };
    char *end = NULL;
    if (s[0] < '0' || s[0] > '9') {
        return -EINVAL;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE) {
        return -ERANGE;
    }
    while (*end == ' ') {
        end++;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mult) {
                return -ERANGE;
            }
            *out = (uint64_t)v * units[i].mult;
            return 0;
        }
    }
    return -EINVAL;
}

static int
set_str(const struct surge_key *k, char *slot, const char *path, json_t *v,
        char *err, size_t errlen)
{
    char bt[256], got[96];
    if (!json_is_string(v)) {
        got_json(v, got, sizeof got);
        return surge_keytab_error(err, errlen, "%s: must be a string%s", path,
                                  got);
    }
    const char *str = json_string_value(v);
    if (strlen(str) != json_string_length(v)) {
        return surge_keytab_error(err, errlen,
                                  "%s: must not contain NUL characters", path);
    }
    if (k->choices != NULL && surge_keytab_choice_index(k, str) < 0) {
        expected(k, bt, sizeof bt);
        got_json(v, got, sizeof got);
        return surge_keytab_error(err, errlen, "%s: %s%s", path, bt, got);
    }
    if ((k->flags & SURGE_KEY_NAME) && !surge_proto_valid_name(str)) {
        return surge_keytab_error(
            err, errlen, "%s: must be 1 to 64 characters of [A-Za-z0-9_.-]",
            path);
    }
    if ((k->flags & SURGE_KEY_NONEMPTY) && str[0] == '\0') {
        return surge_keytab_error(err, errlen, "%s: must not be empty", path);
    }
    if (k->size > 0) {
        if (strlen(str) >= k->size) {
            return surge_keytab_error(err, errlen,
                                      "%s: too long (at most %zu bytes)", path,
                                      k->size - 1);
        }
        snprintf(slot, k->size, "%s", str);
        return 0;
    }
    char *copy = strdup(str);
    if (copy == NULL) {
        return -ENOMEM;
    }
    char *old;
    memcpy(&old, slot, sizeof old);
    free(old);
    memcpy(slot, &copy, sizeof copy);
    return 0;
}

static int
set_intv(const struct surge_key *k, void *base, const char *path, json_t *v,
         char *err, size_t errlen)
{
    char bt[256], got[96];
    size_t cap = k->size / sizeof(int);
    if (!json_is_array(v)) {
        got_json(v, got, sizeof got);
        return surge_keytab_error(
            err, errlen, "%s: must be an array of integers%s", path, got);
    }
    size_t n = json_array_size(v);
    if ((k->flags & SURGE_KEY_NONEMPTY) && n == 0) {
        return surge_keytab_error(err, errlen, "%s: must not be empty", path);
    }
    if (n > cap) {
        return surge_keytab_error(
            err, errlen, "%s: at most %zu entries (got %zu)", path, cap, n);
    }
    int a[256];
    if (cap > sizeof a / sizeof a[0]) {
        return SURGE_EINTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) ||
            !in_bounds(k, (double)json_integer_value(e)) ||
            json_integer_value(e) < INT_MIN ||
            json_integer_value(e) > INT_MAX) {
            expected(k, bt, sizeof bt);
            got_json(e, got, sizeof got);
            return surge_keytab_error(err, errlen, "%s[%zu]: %s%s", path, i, bt,
                                      got);
        }
        a[i] = (int)json_integer_value(e);
    }
    int count = (int)n;
    memcpy((char *)base + k->off, a, n * sizeof(int));
    memcpy((char *)base + k->off2, &count, sizeof count);
    return 0;
}

/* The message for value v of key k out of its type or bounds. */
static int
bad(const struct surge_key *k, const char *path, json_t *v, char *err,
    size_t errlen)
{
    char bt[256], got[96];
    expected(k, bt, sizeof bt);
    got_json(v, got, sizeof got);
    return surge_keytab_error(err, errlen, "%s: %s%s", path, bt, got);
}

int
surge_keytab_set(const struct surge_key *k, void *base, const char *path,
                 json_t *v, char *err, size_t errlen)
{
    char *slot = (char *)base + k->off;
    char got[96];
    switch (k->type) {
    case SURGE_KEY_STR:
        return set_str(k, slot, path, v, err, errlen);
    case SURGE_KEY_INT:
        if (!json_is_integer(v) ||
            !in_bounds(k, (double)json_integer_value(v)) ||
            !put_int(k, slot, (int64_t)json_integer_value(v))) {
            return bad(k, path, v, err, errlen);
        }
        return 0;
    case SURGE_KEY_SIZE: {
        uint64_t x = 0;
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            x = (uint64_t)json_integer_value(v);
        } else if (!json_is_string(v) ||
                   parse_size_text(json_string_value(v), &x) != 0) {
            return bad(k, path, v, err, errlen);
        }
        if (!in_bounds(k, (double)x)) {
            return bad(k, path, v, err, errlen);
        }
        memcpy(slot, &x, sizeof x);
        return 0;
    }
    case SURGE_KEY_NUM: {
        if (!json_is_number(v)) {
            got_json(v, got, sizeof got);
            return surge_keytab_error(err, errlen, "%s: must be a number%s",
                                      path, got);
        }
        double x = json_number_value(v);
        if (!in_bounds(k, x)) {
            return bad(k, path, v, err, errlen);
        }
        memcpy(slot, &x, sizeof x);
        return 0;
    }
    case SURGE_KEY_BOOL: {
        if (!json_is_boolean(v)) {
            got_json(v, got, sizeof got);
            return surge_keytab_error(err, errlen,
                                      "%s: must be true or false%s", path, got);
        }
        int b = json_is_true(v) ? 1 : 0;
        memcpy(slot, &b, sizeof b);
        return 0;
    }
    case SURGE_KEY_ENUM: {
        int i = json_is_string(v)
                    ? surge_keytab_choice_index(k, json_string_value(v))
                    : -1;
        if (i < 0) {
            return bad(k, path, v, err, errlen);
        }
        memcpy(slot, &i, sizeof i);
        return 0;
    }
    case SURGE_KEY_INTV:
        return set_intv(k, base, path, v, err, errlen);
    case SURGE_KEY_TABLE:
    case SURGE_KEY_CUSTOM:
        break;
    }
    return surge_keytab_error(
        err, errlen, "%s: not a value the key table sets (a bug)", path);
}

int
surge_keytab_defaults(const struct surge_key *t, void *base, char *err,
                      size_t errlen)
{
    for (; t->name != NULL; t++) {
        int rc = 0;
        if (t->type == SURGE_KEY_TABLE) {
            rc = surge_keytab_defaults(t->sub, (char *)base + t->off, err,
                                       errlen);
        } else if (t->def != NULL && t->type != SURGE_KEY_CUSTOM) {
            json_error_t jerr;
            json_t *v = json_loads(t->def, JSON_DECODE_ANY, &jerr);
            if (v == NULL) {
                return surge_keytab_error(
                    err, errlen, "%s: bad built-in default (a bug)", t->name);
            }
            rc = surge_keytab_set(t, base, t->name, v, err, errlen);
            json_decref(v);
        }
        if (rc != 0) {
            return rc == SURGE_ECONFIG ? SURGE_EINTERNAL : rc;
        }
    }
    return 0;
}

int
surge_keytab_check(const struct surge_key *k, const void *base,
                   const char *path, char *err, size_t errlen)
{
    const char *slot = (const char *)base + k->off;
    char bt[256], got[64];
    expected(k, bt, sizeof bt);
    switch (k->type) {
    case SURGE_KEY_INT: {
        int64_t x = get_int(k, slot);
        if (!in_bounds(k, (double)x)) {
            return surge_keytab_error(err, errlen, "%s: %s (got %lld)", path,
                                      bt, (long long)x);
        }
        return 0;
    }
    case SURGE_KEY_SIZE: {
        uint64_t x;
        memcpy(&x, slot, sizeof x);
        if (!in_bounds(k, (double)x)) {
            return surge_keytab_error(err, errlen, "%s: %s (got %llu)", path,
                                      bt, (unsigned long long)x);
        }
        return 0;
    }
    case SURGE_KEY_NUM: {
        double x;
        memcpy(&x, slot, sizeof x);
        if (!in_bounds(k, x)) {
            fmt_num(got, sizeof got, x);
            return surge_keytab_error(err, errlen, "%s: %s (got %s)", path, bt,
                                      got);
        }
        return 0;
    }
    case SURGE_KEY_BOOL:
    case SURGE_KEY_ENUM: {
        int x;
        memcpy(&x, slot, sizeof x);
        bool ok = k->type == SURGE_KEY_BOOL ? (x == 0 || x == 1)
                                            : x >= 0 && x < n_choices(k);
        if (!ok) {
            return surge_keytab_error(
                err, errlen, "%s: %s (got the value %d)", path,
                k->type == SURGE_KEY_BOOL ? "must be true or false" : bt, x);
        }
        return 0;
    }
    case SURGE_KEY_STR: {
        const char *s = slot;
        if (k->size == 0) {
            memcpy(&s, slot, sizeof s);
        } else if (memchr(slot, '\0', k->size) == NULL) {
            return surge_keytab_error(err, errlen,
                                      "%s: not a terminated string", path);
        }
        if (s == NULL) {
            return 0;
        }
        if (k->choices != NULL && surge_keytab_choice_index(k, s) < 0) {
            return surge_keytab_error(err, errlen, "%s: %s (got \"%.64s\")",
                                      path, bt, s);
        }
        if ((k->flags & SURGE_KEY_NONEMPTY) && s[0] == '\0') {
            return surge_keytab_error(err, errlen, "%s: must not be empty",
                                      path);
        }
        return 0;
    }
    case SURGE_KEY_INTV: {
        int n;
        memcpy(&n, (const char *)base + k->off2, sizeof n);
        if (n < 0 || (size_t)n > k->size / sizeof(int)) {
            return surge_keytab_error(err, errlen,
                                      "%s: at most %zu entries (got %d)", path,
                                      k->size / sizeof(int), n);
        }
        for (int i = 0; i < n; i++) {
            int x;
            memcpy(&x, slot + (size_t)i * sizeof x, sizeof x);
            if (!in_bounds(k, x)) {
                return surge_keytab_error(err, errlen, "%s[%d]: %s (got %d)",
                                          path, i, bt, x);
            }
        }
        return 0;
    }
    case SURGE_KEY_TABLE:
    case SURGE_KEY_CUSTOM:
        break;
    }
    return 0;
}

void
surge_keytab_free(const struct surge_key *k, void *base)
{
    if (k->type == SURGE_KEY_STR && k->size == 0) {
        char *slot = (char *)base + k->off;
        char *s;
        memcpy(&s, slot, sizeof s);
        free(s);
        s = NULL;
        memcpy(slot, &s, sizeof s);
    }
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
        return json_integer((json_int_t)get_int(k, slot));
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
    case SURGE_KEY_ENUM: {
        int x;
        memcpy(&x, slot, sizeof x);
        return k->type == SURGE_KEY_BOOL
                   ? json_boolean(x)
                   : json_string(surge_keytab_choice(k, x));
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
