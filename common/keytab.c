/*
 * common/keytab.c - the part of configuration key tables (common/keytab.h)
 * that needs no JSON library: rows, bounds, the typed setters that every
 * decoder shares (common/keytab_impl.h), defaults read from their text,
 * checks of a filled struct and the message formatter.
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

#include <surge/error.h>

#include "common/keytab.h"
#include "common/keytab_impl.h"
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

static bool
int_is_unsigned(const struct surge_key *k)
{
    return (k->flags & SURGE_KEY_UNSIGNED) != 0;
}

int64_t
keytab_get_int(const struct surge_key *k, const void *base)
{
    const char *slot = (const char *)base + k->off;
    if (int_is_narrow(k)) {
        if (int_is_unsigned(k)) {
            unsigned x;
            memcpy(&x, slot, sizeof x);
            return x;
        }
        int x;
        memcpy(&x, slot, sizeof x);
        return x;
    }
    int64_t x; /* a uint64_t field's value when <= INT64_MAX */
    memcpy(&x, slot, sizeof x);
    return x;
}

/* The INT field's value as a double, for bounds and messages (a uint64_t
 * field may hold more than INT64_MAX when code filled it). */
static double
int_value(const struct surge_key *k, const void *base)
{
    if (!int_is_narrow(k) && int_is_unsigned(k)) {
        uint64_t x;
        memcpy(&x, (const char *)base + k->off, sizeof x);
        return (double)x;
    }
    return (double)keytab_get_int(k, base);
}

/* x in the field's width and signedness, false when it does not fit. */
static bool
put_int(const struct surge_key *k, void *slot, int64_t x)
{
    if (int_is_unsigned(k) && x < 0) {
        return false;
    }
    if (int_is_narrow(k)) {
        if (int_is_unsigned(k) ? x > (int64_t)UINT_MAX
                               : (x < INT_MIN || x > INT_MAX)) {
            return false;
        }
        if (int_is_unsigned(k)) {
            unsigned v = (unsigned)x;
            memcpy(slot, &v, sizeof v);
        } else {
            int v = (int)x;
            memcpy(slot, &v, sizeof v);
        }
        return true;
    }
    memcpy(slot, &x, sizeof x); /* int64_t, or uint64_t with x >= 0 */
    return true;
}

static bool
bool_is_narrow(const struct surge_key *k)
{
    return k->size == sizeof(bool);
}

int
keytab_get_bool(const struct surge_key *k, const void *base)
{
    const char *slot = (const char *)base + k->off;
    if (bool_is_narrow(k)) {
        unsigned char b; /* a bool's byte: 0 or 1 when it is one */
        memcpy(&b, slot, sizeof b);
        return b;
    }
    int x;
    memcpy(&x, slot, sizeof x);
    return x;
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

/* ------------------------------------------------------------ setters */

int
keytab_bad(const struct surge_key *k, const char *path, const char *got,
           char *err, size_t errlen)
{
    char bt[256];
    expected(k, bt, sizeof bt);
    return surge_keytab_error(err, errlen, "%s: %s%s", path, bt, got);
}

int
keytab_put_int(const struct surge_key *k, void *base, const char *path,
               int64_t x, const char *got, char *err, size_t errlen)
{
    if (!in_bounds(k, (double)x) || !put_int(k, (char *)base + k->off, x)) {
        return keytab_bad(k, path, got, err, errlen);
    }
    return 0;
}

int
keytab_put_size(const struct surge_key *k, void *base, const char *path,
                uint64_t x, const char *got, char *err, size_t errlen)
{
    if (!in_bounds(k, (double)x)) {
        return keytab_bad(k, path, got, err, errlen);
    }
    memcpy((char *)base + k->off, &x, sizeof x);
    return 0;
}

int
keytab_put_size_text(const struct surge_key *k, void *base, const char *path,
                     const char *text, const char *got, char *err,
                     size_t errlen)
{
    uint64_t x = 0;
    if (parse_size_text(text, &x) != 0) {
        return keytab_bad(k, path, got, err, errlen);
    }
    return keytab_put_size(k, base, path, x, got, err, errlen);
}

int
keytab_put_num(const struct surge_key *k, void *base, const char *path,
               double x, const char *got, char *err, size_t errlen)
{
    if (!in_bounds(k, x)) {
        return keytab_bad(k, path, got, err, errlen);
    }
    memcpy((char *)base + k->off, &x, sizeof x);
    return 0;
}

void
keytab_put_bool(const struct surge_key *k, void *base, bool b)
{
    char *slot = (char *)base + k->off;
    if (bool_is_narrow(k)) {
        memcpy(slot, &b, sizeof b);
    } else {
        int x = b ? 1 : 0;
        memcpy(slot, &x, sizeof x);
    }
}

int
keytab_put_enum(const struct surge_key *k, void *base, const char *path,
                const char *name, const char *got, char *err, size_t errlen)
{
    int i = surge_keytab_choice_index(k, name);
    if (i < 0) {
        return keytab_bad(k, path, got, err, errlen);
    }
    memcpy((char *)base + k->off, &i, sizeof i);
    return 0;
}

int
keytab_put_str(const struct surge_key *k, void *base, const char *path,
               const char *str, const char *got, char *err, size_t errlen)
{
    char *slot = (char *)base + k->off;
    if (k->choices != NULL && surge_keytab_choice_index(k, str) < 0) {
        return keytab_bad(k, path, got, err, errlen);
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

int
keytab_put_intv(const struct surge_key *k, void *base, const char *path,
                const int64_t *a, size_t n, char *err, size_t errlen)
{
    size_t cap = k->size / sizeof(int);
    if ((k->flags & SURGE_KEY_NONEMPTY) && n == 0) {
        return surge_keytab_error(err, errlen, "%s: must not be empty", path);
    }
    if (n > cap) {
        return surge_keytab_error(
            err, errlen, "%s: at most %zu entries (got %zu)", path, cap, n);
    }
    int v[256];
    if (cap > sizeof v / sizeof v[0]) {
        return SURGE_EINTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!in_bounds(k, (double)a[i]) || a[i] < INT_MIN || a[i] > INT_MAX) {
            char bt[256];
            expected(k, bt, sizeof bt);
            return surge_keytab_error(err, errlen, "%s[%zu]: %s (got %lld)",
                                      path, i, bt, (long long)a[i]);
        }
        v[i] = (int)a[i];
    }
    int count = (int)n;
    memcpy((char *)base + k->off, v, n * sizeof(int));
    memcpy((char *)base + k->off2, &count, sizeof count);
    return 0;
}

/* ------------------------------------------------------------ defaults */

/* An integer that is the whole of text. */
static bool
text_int(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE) {
        return false;
    }
    *out = v;
    return true;
}

/* A JSON string literal without escapes: its contents into buf. */
static bool
text_string(const char *text, char *buf, size_t cap)
{
    size_t n = strlen(text);
    if (n < 2 || text[0] != '"' || text[n - 1] != '"' || n - 2 >= cap ||
        memchr(text + 1, '"', n - 2) != NULL ||
        memchr(text + 1, '\\', n - 2) != NULL) {
        return false;
    }
    memcpy(buf, text + 1, n - 2);
    buf[n - 2] = '\0';
    return true;
}

/* "[1, 2, 3]": at most cap integers. */
static bool
text_intv(const char *text, int64_t *a, size_t cap, size_t *n)
{
    const char *c = text;
    *n = 0;
    if (*c++ != '[') {
        return false;
    }
    while (*c == ' ') {
        c++;
    }
    if (*c == ']') {
        return c[1] == '\0';
    }
    for (;;) {
        char *end;
        errno = 0;
        long long v = strtoll(c, &end, 10);
        if (end == c || errno == ERANGE || *n == cap) {
            return false;
        }
        a[(*n)++] = v;
        c = end;
        while (*c == ' ') {
            c++;
        }
        if (*c == ']') {
            return c[1] == '\0';
        }
        if (*c++ != ',') {
            return false;
        }
    }
}

/* Set key k at base from its default's text (common/keytab.h). */
static int
set_default(const struct surge_key *k, void *base, char *err, size_t errlen)
{
    const char *t = k->def;
    char got[160], str[128], *end;
    int64_t i;
    size_t n;
    snprintf(got, sizeof got, " (got %.64s)", t);
    switch (k->type) {
    case SURGE_KEY_INT:
        if (text_int(t, &i)) {
            return keytab_put_int(k, base, k->name, i, got, err, errlen);
        }
        break;
    case SURGE_KEY_SIZE:
        if (text_int(t, &i) && i >= 0) {
            return keytab_put_size(k, base, k->name, (uint64_t)i, got, err,
                                   errlen);
        }
        if (text_string(t, str, sizeof str)) {
            return keytab_put_size_text(k, base, k->name, str, got, err,
                                        errlen);
        }
        break;
    case SURGE_KEY_NUM: {
        double x = strtod(t, &end);
        if (end != t && *end == '\0') {
            return keytab_put_num(k, base, k->name, x, got, err, errlen);
        }
        break;
    }
    case SURGE_KEY_BOOL:
        if (strcmp(t, "true") == 0 || strcmp(t, "false") == 0) {
            keytab_put_bool(k, base, t[0] == 't');
            return 0;
        }
        break;
    case SURGE_KEY_ENUM:
        if (text_string(t, str, sizeof str)) {
            return keytab_put_enum(k, base, k->name, str, got, err, errlen);
        }
        break;
    case SURGE_KEY_STR:
        if (text_string(t, str, sizeof str)) {
            return keytab_put_str(k, base, k->name, str, got, err, errlen);
        }
        break;
    case SURGE_KEY_INTV: {
        int64_t a[256];
        if (text_intv(t, a, sizeof a / sizeof a[0], &n)) {
            return keytab_put_intv(k, base, k->name, a, n, err, errlen);
        }
        break;
    }
    case SURGE_KEY_TABLE:
    case SURGE_KEY_CUSTOM:
        return 0;
    }
    return surge_keytab_error(
        err, errlen, "%s: bad built-in default %s (a bug)", k->name, t);
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
        } else if (t->def != NULL) {
            rc = set_default(t, base, err, errlen);
        }
        if (rc != 0) {
            return rc == SURGE_ECONFIG ? SURGE_EINTERNAL : rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ checks */

int
surge_keytab_check(const struct surge_key *k, const void *base,
                   const char *path, char *err, size_t errlen)
{
    const char *slot = (const char *)base + k->off;
    char bt[256], got[64];
    expected(k, bt, sizeof bt);
    switch (k->type) {
    case SURGE_KEY_INT: {
        double x = int_value(k, base);
        if (!in_bounds(k, x)) {
            fmt_num(got, sizeof got, x);
            return surge_keytab_error(err, errlen, "%s: %s (got %s)", path, bt,
                                      got);
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
        if (k->type == SURGE_KEY_BOOL) {
            x = keytab_get_bool(k, base);
        } else {
            memcpy(&x, slot, sizeof x);
        }
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
