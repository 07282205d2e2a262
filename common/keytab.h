/*
 * common/keytab.h - tables of configuration keys: each key of a JSON
 * configuration section as one row of data (name, type, place in the
 * struct it fills, bounds or allowed names, default), and the one setter,
 * checker and printer that every parser of such keys shares.
 *
 * DESIGN. A key lives in exactly one table, owned by the folder whose
 * struct it fills: the trainer's keys in trainer/config.c
 * (surge_trainer_keys, over struct surge_trainer_config), the
 * reservoir's in reservoir/config.c (surge_reservoir_keys, over
 * surge_reservoir_config), the launcher's own in deploy/study.c. A parser
 * that reads a section of another folder (the study file's "trainer"
 * section) takes that folder's table as a row of kind SURGE_KEY_TABLE
 * rather than writing the keys again (where it keeps the section in
 * fields of its own, as the study does the "reservoir" section, the
 * TABLE's rows are that table's rows with only off and size changed), so
 * a bound, a name or a default changed in the table changes every parser,
 * the defaults and the value checks at once.
 *
 * Messages start with the key's path as the caller names it
 * ("trainer.lr: must be > 0 (got -1)"), say what is expected in the words
 * of docs/configuration.md, and quote the value given (control characters
 * shown as '?', so that a message stays one line).
 *
 * Two libraries. The row type, the defaults, the value checks and the
 * message formatter (common/keytab.c) need no JSON library: they are part
 * of libsurge_common, so that a folder without jansson (reservoir/, whose
 * keys are surge_reservoir_keys) applies its own defaults and checks from
 * its table. Reading and writing JSON values (common/keytab_json.c) is
 * libsurge_keytab, with jansson.
 *
 * A default is the key's value as JSON text, as docs/configuration.md
 * shows it ("0.6", "\"1GiB\"", "[256, 256]"): a number, an integer, a
 * string without escapes, true or false, or an array of integers. The
 * core reads that small subset itself and stores it through the same
 * checks as a user's value (surge_keytab_set), so a default can never
 * bypass them.
 *
 * Threads: tables are constant data; every function is reentrant.
 * Errors: 0, SURGE_ECONFIG with the message in err, or -ENOMEM.
 */
#ifndef SURGE_COMMON_KEYTAB_H
#define SURGE_COMMON_KEYTAB_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct json_t; /* jansson's json_t; callers of the JSON calls include it */

enum surge_key_type {
    SURGE_KEY_INT,   /* integer in bounds: an int field (size 4) or an
                        8-byte one (int64_t, long; size 0 = 8); with
                        SURGE_KEY_UNSIGNED, unsigned or uint64_t, size_t */
    SURGE_KEY_SIZE,  /* uint64_t bytes: an integer or "256MiB" */
    SURGE_KEY_NUM,   /* double, finite, in bounds */
    SURGE_KEY_BOOL,  /* int 0 or 1; a bool when size is sizeof(bool) */
    SURGE_KEY_ENUM,  /* int: index of the value in choices */
    SURGE_KEY_STR,   /* size 0: char * owned by the struct (freed by
                        surge_keytab_free); size > 0: char[size]; with
                        choices, one of them */
    SURGE_KEY_INTV,  /* array of int at off, size bytes (its capacity),
                        with the count in an int at off2; each element
                        in bounds */
    SURGE_KEY_TABLE, /* a section whose keys are the table sub, filling
                        the struct at off (another folder's keys) */
    SURGE_KEY_CUSTOM /* parsed by the table's owner itself (a type only
                        it knows); surge_keytab_set refuses it */
};

enum surge_key_flag {
    SURGE_KEY_MIN_EXCL = 1 << 0, /* value > min (else >= min) */
    SURGE_KEY_MAX_EXCL = 1 << 1, /* value < max (else <= max) */
    SURGE_KEY_NO_MAX = 1 << 2,   /* no upper bound */
    SURGE_KEY_NONEMPTY = 1 << 3, /* STR, INTV, CUSTOM lists: not empty */
    SURGE_KEY_NAME = 1 << 4,     /* STR: [A-Za-z0-9_.-], 1..64 bytes */
    SURGE_KEY_NO_MIN = 1 << 5,   /* NUM: no lower bound */
    SURGE_KEY_UNSIGNED = 1 << 6  /* INT: the field is unsigned (min >= 0) */
};

struct surge_key {
    const char *name;            /* path under the table's section
                                    ("lr", "rate.min_diff"); NULL ends a
                                    table */
    enum surge_key_type type;    /* what the value is, where it goes */
    size_t off;                  /* offset of the field in the struct */
    size_t off2;                 /* INTV: offset of the int count */
    const char *def;             /* default as JSON text (see above),
                                    applied through the setter's checks;
                                    NULL: no default */
    double min;                  /* lower bound (INT, SIZE, NUM, INTV) */
    double max;                  /* upper bound unless SURGE_KEY_NO_MAX */
    unsigned flags;              /* enum surge_key_flag */
    const char *const *choices;  /* ENUM, STR: allowed names, NULL-ended;
                                    an ENUM's index order is its enum's */
    size_t size;                 /* sizeof the field; 0: see the type */
    const struct surge_key *sub; /* TABLE: the section's table */
};

/* SURGE_KEY_CHOICES("a", "b") - a NULL-terminated list for choices. */
#define SURGE_KEY_CHOICES(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- libsurge_common (common/keytab.c): no JSON library ---- */

/* surge_keytab_error - format a configuration error into err (errlen
 * bytes, always terminated; nothing when err is NULL or errlen 0) as one
 * line: control characters of keys and values quoted from a file become
 * '?'. Returns SURGE_ECONFIG, for `return surge_keytab_error(...)`. */
int surge_keytab_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* surge_keytab_verror - the same with a va_list. */
int surge_keytab_verror(char *err, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* surge_keytab_find - the row of table t called name, or NULL. */
const struct surge_key *surge_keytab_find(const struct surge_key *t,
                                          const char *name);

/* surge_keytab_defaults - set every key of table t that has a default,
 * at base (CUSTOM rows are their owner's to default). A default that
 * does not read, or that its own key refuses, is a bug in the table:
 * SURGE_EINTERNAL with the key named in err. -ENOMEM. */
int surge_keytab_defaults(const struct surge_key *t, void *base, char *err,
                          size_t errlen);

/* surge_keytab_check - check the value in the field of key k at base
 * against the key's bounds or names (for a struct filled by code, not by
 * the setter). 0 or SURGE_ECONFIG ("path: must be ... (got X)"). */
int surge_keytab_check(const struct surge_key *k, const void *base,
                       const char *path, char *err, size_t errlen);

/* surge_keytab_free - free what key k owns in the struct at base (an
 * owned string); the field becomes NULL. */
void surge_keytab_free(const struct surge_key *k, void *base);

/* surge_keytab_choice - the name of value i of key k (ENUM, STR with
 * choices), or "?" when out of range. Static storage. */
const char *surge_keytab_choice(const struct surge_key *k, int i);

/* surge_keytab_choice_index - the index of name among k's choices, or -1
 * (also for name NULL). */
int surge_keytab_choice_index(const struct surge_key *k, const char *name);

/* ---- libsurge_keytab (common/keytab_json.c): JSON values ---- */

/* surge_keytab_set - parse JSON value v for key k into the struct at base
 * (the struct the table describes). path names the key in messages.
 * Returns 0, SURGE_ECONFIG (err: "path: must be ..."), -ENOMEM;
 * SURGE_EINTERNAL for a TABLE or CUSTOM row. On error the field keeps
 * its value. */
int surge_keytab_set(const struct surge_key *k, void *base, const char *path,
                     struct json_t *v, char *err, size_t errlen);

/* surge_keytab_to_json - the value of key k at base as a new JSON
 * reference, in the form the setter reads back; NULL for an owned string
 * that is not set, on -ENOMEM, and for TABLE and CUSTOM rows. */
struct json_t *surge_keytab_to_json(const struct surge_key *k,
                                    const void *base);

#ifdef __cplusplus
}
#endif

#endif /* SURGE_COMMON_KEYTAB_H */
