/*
 * common/protocol.c - the msgpack codec of the surge wire protocol v1.
 *
 * DESIGN. Encoding uses msgpack-c's packer with a write callback that
 * appends into the caller's capped buffer, so encoding never allocates.
 *
 * Decoding does NOT use msgpack_unpack(): msgpack-c allocates
 * n * sizeof(msgpack_object) from its zone as soon as it reads an array or
 * map header claiming n entries, before it has seen a single entry, so a
 * 5-byte header claiming 2^32 entries asks for ~100 GB. Instead a small
 * pull parser walks the frame in place: every length read from the frame is
 * checked against the bytes that remain (an entry takes at least one byte)
 * before anything is done with it, values are skipped iteratively (no
 * recursion, so nesting depth costs nothing), and results land in the
 * fixed-size surge_msg. Decoding allocates nothing at all.
 *
 * Decoding is two passes over the top-level map: the first records where
 * the value of each known key starts (rejecting duplicates, skipping
 * unknown keys, which a later minor version may add), the second reads the
 * values the message's type needs. Both encoder and decoder finish with
 * check_msg(), the one place where the semantic rules live, so that an
 * encoder never produces what a decoder refuses.
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "common/protocol.h"

/* ------------------------------------------------------------ errors */

/* The detail of the last decode/encode failure on this thread; *why points
 * here. Formatting happens only on the failure path. */
static _Thread_local char why_buf[160];

static int fail(const char **why, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(const char **why, int code, const char *fmt, ...)
{
    if (why != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why_buf, sizeof why_buf, fmt, ap);
        va_end(ap);
        *why = why_buf;
    }
    return code;
}

/* ------------------------------------------------------------ names */

static const char *const type_names[] = {NULL,      "hello",   "welcome",
                                         "reject",  "data",    "bye",
                                         "bye_ack", "control", "control_reply"};
#define NTYPES ((int)(sizeof type_names / sizeof type_names[0]))

static const char *const op_names[] = {
    NULL, "ping", "sim_failed", "sim_retry", "end_reception", "shutdown"};
#define NOPS ((int)(sizeof op_names / sizeof op_names[0]))

#define DTYPE_F32_NAME "f32"

const char *
surge_proto_type_name(int type)
{
    if (type > 0 && type < NTYPES) {
        return type_names[type];
    }
    return "unknown";
}

int
surge_proto_valid_name(const char *s)
{
    size_t n = 0;
    if (s == NULL) {
        return 0;
    }
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        if (n >= SURGE_MAX_NAME) {
            return 0;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
              ch == '-')) {
            return 0;
        }
    }
    return n > 0;
}

int
surge_proto_payload_bytes(const surge_msg_data *d, uint64_t *bytes)
{
    uint64_t elems = 0;
    for (uint32_t i = 0; i < d->nitems && i < SURGE_MAX_ITEMS; i++) {
        /* Each count is at most 2^30 (checked), 256 of them cannot wrap;
         * the guard keeps this safe for unchecked input too. */
        if (d->items[i].count > SURGE_MAX_PAYLOAD_BYTES) {
            return SURGE_ELIMIT;
        }
        elems += d->items[i].count;
    }
    if (elems > SURGE_MAX_PAYLOAD_BYTES / sizeof(float)) {
        return SURGE_ELIMIT;
    }
    *bytes = elems * sizeof(float);
    return 0;
}

/* ------------------------------------------------------------ checks */

/* 1 when s holds a NUL within its first cap + 1 bytes. */
static bool
str_fits(const char *s, size_t cap)
{
    return memchr(s, '\0', cap + 1) != NULL;
}

static int
check_hello(const surge_msg_hello *h, const char **why)
{
    if (!str_fits(h->token, SURGE_MAX_TOKEN)) {
        return fail(why, SURGE_ELIMIT, "hello.token: longer than %d bytes",
                    SURGE_MAX_TOKEN);
    }
    if (!str_fits(h->run_key, SURGE_MAX_RUN_KEY)) {
        return fail(why, SURGE_ELIMIT, "hello.run_key: longer than %d bytes",
                    SURGE_MAX_RUN_KEY);
    }
    if (h->sim < 0) {
        return fail(why, SURGE_EPROTO, "hello.sim: must be >= 0");
    }
    if (h->nranks < 1) {
        return fail(why, SURGE_EPROTO, "hello.nranks: must be >= 1");
    }
    if (h->nranks > SURGE_MAX_RANKS) {
        return fail(why, SURGE_ELIMIT, "hello.nranks: more than %d",
                    SURGE_MAX_RANKS);
    }
    if (h->rank >= h->nranks) {
        return fail(why, SURGE_EPROTO, "hello.rank: must be < nranks");
    }
    if (h->nparams > SURGE_MAX_PARAMS) {
        return fail(why, SURGE_ELIMIT, "hello.params: more than %d values",
                    SURGE_MAX_PARAMS);
    }
    for (uint32_t i = 0; i < h->nparams; i++) {
        if (!isfinite(h->params[i])) {
            return fail(why, SURGE_EPROTO,
                        "hello.params[%u]: must be a finite number", i);
        }
    }
    if (h->nfields < 1) {
        return fail(why, SURGE_EPROTO, "hello.fields: at least one field");
    }
    if (h->nfields > SURGE_MAX_FIELDS) {
        return fail(why, SURGE_ELIMIT, "hello.fields: more than %d fields",
                    SURGE_MAX_FIELDS);
    }
    for (uint32_t i = 0; i < h->nfields; i++) {
        const surge_field_desc *f = &h->fields[i];
        if (!str_fits(f->name, SURGE_MAX_NAME)) {
            return fail(why, SURGE_ELIMIT,
                        "hello.fields[%u].name: longer than %d bytes", i,
                        SURGE_MAX_NAME);
        }
        if (!surge_proto_valid_name(f->name)) {
            return fail(why, SURGE_EPROTO,
                        "hello.fields[%u].name: must be 1..%d bytes of "
                        "[A-Za-z0-9_.-]",
                        i, SURGE_MAX_NAME);
        }
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(h->fields[j].name, f->name) == 0) {
                return fail(why, SURGE_EPROTO,
                            "hello.fields[%u].name: \"%s\" declared twice", i,
                            f->name);
            }
        }
        if (f->global_size < 1) {
            return fail(why, SURGE_EPROTO,
                        "hello.fields[%u].size: must be >= 1", i);
        }
        if (f->global_size > SURGE_MAX_FIELD_ELEMS) {
            return fail(why, SURGE_ELIMIT,
                        "hello.fields[%u].size: more than 2^30 elements", i);
        }
        if (f->offset > f->global_size ||
            f->count > f->global_size - f->offset) {
            return fail(why, SURGE_EBOUNDS,
                        "hello.fields[%u]: offset + count exceeds size", i);
        }
    }
    if (h->dtype != SURGE_WIRE_F32) {
        return fail(why, SURGE_EDTYPE, "hello.dtype: only \"f32\" in v1");
    }
    if (h->steps > SURGE_MAX_STEPS) {
        return fail(why, SURGE_ELIMIT, "hello.steps: more than 2^53");
    }
    return 0;
}

static int
check_data(const surge_msg_data *d, const char **why)
{
    uint64_t bytes;
    if (d->sim < 0) {
        return fail(why, SURGE_EPROTO, "data.sim: must be >= 0");
    }
    if (d->rank >= SURGE_MAX_RANKS) {
        return fail(why, SURGE_ELIMIT, "data.rank: must be < %d",
                    SURGE_MAX_RANKS);
    }
    if (d->dtype != SURGE_WIRE_F32) {
        return fail(why, SURGE_EDTYPE, "data.dtype: only \"f32\" in v1");
    }
    if (d->nitems < 1) {
        return fail(why, SURGE_EPROTO, "data.items: at least one item");
    }
    if (d->nitems > SURGE_MAX_ITEMS) {
        return fail(why, SURGE_ELIMIT, "data.items: more than %d items",
                    SURGE_MAX_ITEMS);
    }
    for (uint32_t i = 0; i < d->nitems; i++) {
        const surge_data_item *it = &d->items[i];
        if (it->step < 0) {
            return fail(why, SURGE_EPROTO, "data.items[%u].step: must be >= 0",
                        i);
        }
        if (!isfinite(it->time)) {
            return fail(why, SURGE_EPROTO,
                        "data.items[%u].time: must be a finite number", i);
        }
        if (it->field >= SURGE_MAX_FIELDS) {
            return fail(why, SURGE_ELIMIT, "data.items[%u].field: must be < %d",
                        i, SURGE_MAX_FIELDS);
        }
        if (it->count < 1) {
            return fail(why, SURGE_EPROTO, "data.items[%u].count: must be >= 1",
                        i);
        }
        if (it->offset > SURGE_MAX_FIELD_ELEMS ||
            it->count > SURGE_MAX_FIELD_ELEMS - it->offset) {
            return fail(why, SURGE_EBOUNDS,
                        "data.items[%u]: offset + count beyond 2^30", i);
        }
    }
    if (surge_proto_payload_bytes(d, &bytes) != 0) {
        return fail(why, SURGE_ELIMIT, "data: payload over 2^31 bytes");
    }
    return 0;
}

static const char *const route_names[] = {"step", "sim"};

const char *
surge_proto_welcome_endpoint(const surge_msg_welcome *w, uint32_t i)
{
    if (w == NULL || i >= w->nservers) {
        return NULL;
    }
    const char *p = w->endpoints;
    const char *end = w->endpoints + w->endpoints_len;
    for (uint32_t k = 0; k < i && p < end; k++) {
        p += strnlen(p, (size_t)(end - p)) + 1;
    }
    return p < end ? p : NULL;
}

int
surge_proto_welcome_add_endpoint(surge_msg_welcome *w, const char *ep)
{
    size_t n = strlen(ep);
    if (n > SURGE_MAX_ENDPOINT || w->nservers >= SURGE_MAX_SERVER_RANKS ||
        w->endpoints_len + n + 1 > sizeof w->endpoints) {
        return SURGE_ELIMIT;
    }
    memcpy(w->endpoints + w->endpoints_len, ep, n + 1);
    w->endpoints_len += (uint32_t)n + 1;
    w->nservers++;
    return 0;
}

/* The server list of a welcome: absent (one rank), or 2..1024 distinct
 * tcp:// or ipc:// endpoints, the answering rank among them. A client
 * connects to what this list says, so nothing else may pass. */
static int
check_servers(const surge_msg_welcome *w, const char **why)
{
    if (w->nservers == 0) {
        return 0;
    }
    if (w->nservers < 2 || w->nservers > SURGE_MAX_SERVER_RANKS) {
        return fail(why, SURGE_ELIMIT,
                    "welcome.servers: %u entries, must be 2..%d", w->nservers,
                    SURGE_MAX_SERVER_RANKS);
    }
    if (w->server_rank >= w->nservers) {
        return fail(why, SURGE_EPROTO,
                    "welcome.server_rank: %u, must be < %u servers",
                    w->server_rank, w->nservers);
    }
    if (w->route > SURGE_ROUTE_SIM) {
        return fail(why, SURGE_EPROTO, "welcome.route: unknown");
    }
    for (uint32_t i = 0; i < w->nservers; i++) {
        const char *e = surge_proto_welcome_endpoint(w, i);
        if (e == NULL || e[0] == '\0') {
            return fail(why, SURGE_EPROTO, "welcome.servers[%u]: empty", i);
        }
        if (strncmp(e, "tcp://", 6) != 0 && strncmp(e, "ipc://", 6) != 0) {
            return fail(why, SURGE_EPROTO,
                        "welcome.servers[%u]: \"%.64s\" is not a tcp:// or "
                        "ipc:// endpoint",
                        i, e);
        }
        if (e[6] == '\0') {
            return fail(why, SURGE_EPROTO,
                        "welcome.servers[%u]: no address after the scheme", i);
        }
        for (uint32_t k = 0; k < i; k++) {
            if (strcmp(e, surge_proto_welcome_endpoint(w, k)) == 0) {
                return fail(why, SURGE_EPROTO,
                            "welcome.servers[%u]: same endpoint as "
                            "servers[%u]",
                            i, k);
            }
        }
    }
    return 0;
}

static int
check_msg(const surge_msg *m, const char **why)
{
    switch (m->type) {
    case SURGE_MSG_HELLO:
        return check_hello(&m->u.hello, why);
    case SURGE_MSG_WELCOME:
        if (m->u.welcome.sim < 0) {
            return fail(why, SURGE_EPROTO, "welcome.sim: must be >= 0");
        }
        if (m->u.welcome.max_payload_bytes < 1 ||
            m->u.welcome.max_payload_bytes > SURGE_MAX_PAYLOAD_BYTES) {
            return fail(why, SURGE_ELIMIT,
                        "welcome.max_payload: must be 1..2^31");
        }
        return check_servers(&m->u.welcome, why);
    case SURGE_MSG_REJECT:
        if (m->u.reject.code >= 0) {
            return fail(why, SURGE_EPROTO, "reject.code: must be negative");
        }
        if (!str_fits(m->u.reject.reason, SURGE_MAX_REASON)) {
            return fail(why, SURGE_ELIMIT, "reject.reason: longer than %d",
                        SURGE_MAX_REASON);
        }
        return 0;
    case SURGE_MSG_DATA:
        return check_data(&m->u.data, why);
    case SURGE_MSG_BYE:
        if (m->u.bye.sim < 0) {
            return fail(why, SURGE_EPROTO, "bye.sim: must be >= 0");
        }
        return 0;
    case SURGE_MSG_BYE_ACK:
        if (m->u.bye_ack.sim < 0) {
            return fail(why, SURGE_EPROTO, "bye_ack.sim: must be >= 0");
        }
        return 0;
    case SURGE_MSG_CONTROL:
        if (!str_fits(m->u.control.token, SURGE_MAX_TOKEN)) {
            return fail(why, SURGE_ELIMIT, "control.token: longer than %d",
                        SURGE_MAX_TOKEN);
        }
        if (m->u.control.op < 1 || m->u.control.op >= NOPS) {
            return fail(why, SURGE_EPROTO, "control.op: unknown operation");
        }
        if (m->u.control.sim < -1) {
            return fail(why, SURGE_EPROTO, "control.sim: must be >= -1");
        }
        if ((m->u.control.op == SURGE_CTL_SIM_FAILED ||
             m->u.control.op == SURGE_CTL_SIM_RETRY) &&
            m->u.control.sim < 0) {
            return fail(why, SURGE_EPROTO,
                        "control.sim: required (>= 0) for %s",
                        op_names[m->u.control.op]);
        }
        return 0;
    case SURGE_MSG_CONTROL_REPLY:
        if (m->u.control_reply.code > 0) {
            return fail(why, SURGE_EPROTO, "control_reply.code: must be <= 0");
        }
        if (!str_fits(m->u.control_reply.message, SURGE_MAX_REASON)) {
            return fail(why, SURGE_ELIMIT,
                        "control_reply.message: longer than %d",
                        SURGE_MAX_REASON);
        }
        return 0;
    }
    return fail(why, SURGE_EPROTO, "type: unknown message type %d",
                (int)m->type);
}

/* ------------------------------------------------------------ encoder */

typedef struct wbuf {
    char *buf;  /* caller's buffer */
    size_t cap; /* its capacity, bytes */
    size_t len; /* bytes written so far */
} wbuf;

static int
wbuf_write(void *data, const char *bytes, size_t n)
{
    wbuf *w = data;
    if (n > w->cap - w->len) {
        return -1;
    }
    /* The packer hands over tags and numbers of 1-9 bytes; a loop beats
     * a call to memcpy for those. */
    char *dst = w->buf + w->len;
    if (n <= 16) {
        for (size_t i = 0; i < n; i++) {
            dst[i] = bytes[i];
        }
    } else {
        memcpy(dst, bytes, n);
    }
    w->len += n;
    return 0;
}

static int
pk_strn(msgpack_packer *pk, const char *s, size_t n)
{
    if (msgpack_pack_str(pk, n) != 0) {
        return -1;
    }
    return msgpack_pack_str_body(pk, s, n);
}

static int
pk_str(msgpack_packer *pk, const char *s)
{
    return pk_strn(pk, s, strlen(s));
}

/* A literal key (its length known at compile time). Any failure means
 * "no room", because the message was validated first. */
#define KEY(pk, k) (pk_strn((pk), (k), sizeof(k) - 1) != 0)

static int
encode_fields(msgpack_packer *pk, const surge_msg_hello *h)
{
    if (msgpack_pack_array(pk, h->nfields) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < h->nfields; i++) {
        const surge_field_desc *f = &h->fields[i];
        if (msgpack_pack_map(pk, 4) != 0 || KEY(pk, "name") ||
            pk_str(pk, f->name) != 0 || KEY(pk, "size") ||
            msgpack_pack_uint64(pk, f->global_size) != 0 || KEY(pk, "offset") ||
            msgpack_pack_uint64(pk, f->offset) != 0 || KEY(pk, "count") ||
            msgpack_pack_uint64(pk, f->count) != 0) {
            return -1;
        }
    }
    return 0;
}

static int
encode_body(msgpack_packer *pk, const surge_msg *m)
{
    switch (m->type) {
    case SURGE_MSG_HELLO:
        /* "steps" and "run_key" are optional: sent only when known. */
        if (msgpack_pack_map(pk, 9 + (m->u.hello.steps > 0) +
                                     (m->u.hello.run_key[0] != '\0')) != 0) {
            return -1;
        }
        break;
    case SURGE_MSG_DATA:
        if (msgpack_pack_map(pk, 6) != 0) {
            return -1;
        }
        break;
    case SURGE_MSG_WELCOME:
        /* The server list only from a server of several ranks: a server
         * of one rank sends exactly the v1 welcome. */
        if (msgpack_pack_map(pk, 5 + (m->u.welcome.nservers > 0 ? 3 : 0) +
                                     (m->u.welcome.redirect != 0)) != 0) {
            return -1;
        }
        break;
    case SURGE_MSG_BYE:
    case SURGE_MSG_BYE_ACK:
    case SURGE_MSG_CONTROL:
        if (msgpack_pack_map(pk, 5) != 0) {
            return -1;
        }
        break;
    case SURGE_MSG_REJECT:
    case SURGE_MSG_CONTROL_REPLY:
        if (msgpack_pack_map(pk, 4) != 0) {
            return -1;
        }
        break;
    }
    if (KEY(pk, "v") || msgpack_pack_uint8(pk, SURGE_PROTOCOL_VERSION) != 0 ||
        KEY(pk, "type") || pk_str(pk, type_names[m->type]) != 0) {
        return -1;
    }
    switch (m->type) {
    case SURGE_MSG_HELLO: {
        const surge_msg_hello *h = &m->u.hello;
        if (KEY(pk, "token") || pk_str(pk, h->token) != 0 || KEY(pk, "sim") ||
            msgpack_pack_int64(pk, h->sim) != 0 || KEY(pk, "rank") ||
            msgpack_pack_uint32(pk, h->rank) != 0 || KEY(pk, "nranks") ||
            msgpack_pack_uint32(pk, h->nranks) != 0 || KEY(pk, "params") ||
            msgpack_pack_array(pk, h->nparams) != 0) {
            return -1;
        }
        for (uint32_t i = 0; i < h->nparams; i++) {
            if (msgpack_pack_double(pk, h->params[i]) != 0) {
                return -1;
            }
        }
        if (KEY(pk, "fields") || encode_fields(pk, h) != 0 ||
            KEY(pk, "dtype") || pk_str(pk, DTYPE_F32_NAME) != 0) {
            return -1;
        }
        if (h->steps > 0 &&
            (KEY(pk, "steps") || msgpack_pack_uint64(pk, h->steps) != 0)) {
            return -1;
        }
        if (h->run_key[0] != '\0' &&
            (KEY(pk, "run_key") || pk_str(pk, h->run_key) != 0)) {
            return -1;
        }
        return 0;
    }
    case SURGE_MSG_WELCOME:
        if (KEY(pk, "sim") || msgpack_pack_int64(pk, m->u.welcome.sim) != 0 ||
            KEY(pk, "rank") || msgpack_pack_uint32(pk, m->u.welcome.rank) ||
            KEY(pk, "max_payload") ||
            msgpack_pack_uint64(pk, m->u.welcome.max_payload_bytes) != 0) {
            return -1;
        }
        if (m->u.welcome.nservers == 0) {
            return 0;
        }
        if (KEY(pk, "servers") ||
            msgpack_pack_array(pk, m->u.welcome.nservers) != 0) {
            return -1;
        }
        for (uint32_t i = 0; i < m->u.welcome.nservers; i++) {
            if (pk_str(pk, surge_proto_welcome_endpoint(&m->u.welcome, i)) !=
                0) {
                return -1;
            }
        }
        if (KEY(pk, "server_rank") ||
            msgpack_pack_uint32(pk, m->u.welcome.server_rank) != 0 ||
            KEY(pk, "route") ||
            pk_str(pk, route_names[m->u.welcome.route]) != 0) {
            return -1;
        }
        if (m->u.welcome.redirect != 0 &&
            (KEY(pk, "redirect") || msgpack_pack_uint8(pk, 1) != 0)) {
            return -1;
        }
        return 0;
    case SURGE_MSG_REJECT:
        if (KEY(pk, "code") || msgpack_pack_int32(pk, m->u.reject.code) != 0 ||
            KEY(pk, "reason") || pk_str(pk, m->u.reject.reason) != 0) {
            return -1;
        }
        return 0;
    case SURGE_MSG_DATA: {
        const surge_msg_data *d = &m->u.data;
        if (KEY(pk, "sim") || msgpack_pack_int64(pk, d->sim) != 0 ||
            KEY(pk, "rank") || msgpack_pack_uint32(pk, d->rank) != 0 ||
            KEY(pk, "dtype") || pk_str(pk, DTYPE_F32_NAME) != 0 ||
            KEY(pk, "items") || msgpack_pack_array(pk, d->nitems) != 0) {
            return -1;
        }
        for (uint32_t i = 0; i < d->nitems; i++) {
            const surge_data_item *it = &d->items[i];
            if (msgpack_pack_map(pk, 5) != 0 || KEY(pk, "step") ||
                msgpack_pack_int64(pk, it->step) != 0 || KEY(pk, "time") ||
                msgpack_pack_double(pk, it->time) != 0 || KEY(pk, "field") ||
                msgpack_pack_uint32(pk, it->field) != 0 || KEY(pk, "offset") ||
                msgpack_pack_uint64(pk, it->offset) || KEY(pk, "count") ||
                msgpack_pack_uint64(pk, it->count) != 0) {
                return -1;
            }
        }
        return 0;
    }
    case SURGE_MSG_BYE:
    case SURGE_MSG_BYE_ACK: {
        /* bye and bye_ack share their layout. */
        const surge_msg_bye *b = &m->u.bye;
        if (KEY(pk, "sim") || msgpack_pack_int64(pk, b->sim) != 0 ||
            KEY(pk, "rank") || msgpack_pack_uint32(pk, b->rank) != 0 ||
            KEY(pk, "slices") || msgpack_pack_uint64(pk, b->slices) != 0) {
            return -1;
        }
        return 0;
    }
    case SURGE_MSG_CONTROL:
        if (KEY(pk, "token") || pk_str(pk, m->u.control.token) != 0 ||
            KEY(pk, "op") || pk_str(pk, op_names[m->u.control.op]) != 0 ||
            KEY(pk, "sim") || msgpack_pack_int64(pk, m->u.control.sim) != 0) {
            return -1;
        }
        return 0;
    case SURGE_MSG_CONTROL_REPLY:
        if (KEY(pk, "code") ||
            msgpack_pack_int32(pk, m->u.control_reply.code) != 0 ||
            KEY(pk, "message") || pk_str(pk, m->u.control_reply.message)) {
            return -1;
        }
        return 0;
    }
    return -1;
}

int
surge_proto_encode(const surge_msg *m, void *buf, size_t cap)
{
    wbuf w = {buf, cap, 0};
    msgpack_packer pk;
    int rc;

    if (m == NULL || buf == NULL) {
        return SURGE_EPROTO;
    }
    rc = check_msg(m, NULL);
    if (rc != 0) {
        return rc;
    }
    msgpack_packer_init(&pk, &w, wbuf_write);
    if (encode_body(&pk, m) != 0) {
        return SURGE_ELIMIT;
    }
    if (w.len > SURGE_MAX_HEADER_BYTES) {
        return SURGE_ELIMIT;
    }
    return (int)w.len;
}

/* ------------------------------------------------------------ reader */

enum rd_status {
    RD_OK = 0,
    RD_TRUNC = -1, /* ran past the end, or a length larger than the rest */
    RD_TYPE = -2,  /* another msgpack type than wanted */
    RD_RANGE = -3  /* right type, value out of the C type's range */
};

typedef struct rd {
    const uint8_t *p;   /* next byte */
    const uint8_t *end; /* one past the last byte */
} rd;

static inline size_t
rd_left(const rd *r)
{
    return (size_t)(r->end - r->p);
}

static inline uint64_t
be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Read n big-endian bytes after the tag byte. */
static inline int
rd_be(rd *r, int n, uint64_t *v)
{
    if (rd_left(r) < (size_t)n) {
        return RD_TRUNC;
    }
    *v = be(r->p, n);
    r->p += n;
    return RD_OK;
}

/* An integer of any msgpack format. Unsigned values above INT64_MAX are
 * returned in *u with *neg = false; negatives in *s with *neg = true. */
static int
rd_integer(rd *r, bool *neg, uint64_t *u, int64_t *s)
{
    uint64_t v;
    int rc;
    if (rd_left(r) < 1) {
        return RD_TRUNC;
    }
    uint8_t t = *r->p;
    if (t <= 0x7f) {
        r->p++;
        *neg = false;
        *u = t;
        return RD_OK;
    }
    if (t >= 0xe0) {
        r->p++;
        *neg = true;
        *s = (int8_t)t;
        return RD_OK;
    }
    static const int8_t widths[8] = {1, 2, 4, 8, 1, 2, 4, 8};
    if (t < 0xcc || t > 0xd3) {
        return RD_TYPE;
    }
    int w = widths[t - 0xcc];
    r->p++;
    rc = rd_be(r, w, &v);
    if (rc != RD_OK) {
        return rc;
    }
    if (t <= 0xcf) {
        *neg = false;
        *u = v;
        return RD_OK;
    }
    /* Sign-extend a w-byte two's complement value. */
    int64_t sv;
    if (w == 8) {
        memcpy(&sv, &v, sizeof sv);
    } else {
        uint64_t sign = UINT64_C(1) << (8 * w - 1);
        sv = (int64_t)(v ^ sign) - (int64_t)sign;
    }
    if (sv >= 0) {
        *neg = false;
        *u = (uint64_t)sv;
    } else {
        *neg = true;
        *s = sv;
    }
    return RD_OK;
}

static int
rd_uint(rd *r, uint64_t *out)
{
    bool neg;
    uint64_t u = 0;
    int64_t s = 0;
    int rc = rd_integer(r, &neg, &u, &s);
    if (rc != RD_OK) {
        return rc;
    }
    if (neg) {
        return RD_RANGE;
    }
    *out = u;
    return RD_OK;
}

static int
rd_int(rd *r, int64_t *out)
{
    bool neg;
    uint64_t u = 0;
    int64_t s = 0;
    int rc = rd_integer(r, &neg, &u, &s);
    if (rc != RD_OK) {
        return rc;
    }
    if (neg) {
        *out = s;
        return RD_OK;
    }
    if (u > (uint64_t)INT64_MAX) {
        return RD_RANGE;
    }
    *out = (int64_t)u;
    return RD_OK;
}

/* A number: float32, float64 or any integer (a peer's msgpack library may
 * encode 1.0 as the integer 1). */
static int
rd_number(rd *r, double *out)
{
    uint64_t v;
    int rc;
    if (rd_left(r) < 1) {
        return RD_TRUNC;
    }
    uint8_t t = *r->p;
    if (t == 0xca || t == 0xcb) {
        r->p++;
        rc = rd_be(r, t == 0xca ? 4 : 8, &v);
        if (rc != RD_OK) {
            return rc;
        }
        if (t == 0xca) {
            uint32_t b32 = (uint32_t)v;
            float f;
            memcpy(&f, &b32, sizeof f);
            *out = f;
        } else {
            memcpy(out, &v, sizeof *out);
        }
        return RD_OK;
    }
    bool neg;
    uint64_t u = 0;
    int64_t s = 0;
    rc = rd_integer(r, &neg, &u, &s);
    if (rc != RD_OK) {
        return rc;
    }
    *out = neg ? (double)s : (double)u;
    return RD_OK;
}

static int
rd_str(rd *r, const char **s, size_t *len)
{
    uint64_t n;
    int rc;
    if (rd_left(r) < 1) {
        return RD_TRUNC;
    }
    uint8_t t = *r->p;
    if (t >= 0xa0 && t <= 0xbf) {
        r->p++;
        n = t & 0x1f;
    } else if (t >= 0xd9 && t <= 0xdb) {
        r->p++;
        rc = rd_be(r, 1 << (t - 0xd9), &n);
        if (rc != RD_OK) {
            return rc;
        }
    } else {
        return RD_TYPE;
    }
    if (n > rd_left(r)) {
        return RD_TRUNC;
    }
    *s = (const char *)r->p;
    *len = (size_t)n;
    r->p += n;
    return RD_OK;
}

/* Array or map header; *n is the number of entries (pairs for a map),
 * already checked against the bytes left. */
static int
rd_container(rd *r, bool map, uint64_t *n)
{
    int rc;
    if (rd_left(r) < 1) {
        return RD_TRUNC;
    }
    uint8_t t = *r->p;
    uint8_t fix = map ? 0x80 : 0x90;
    uint8_t b16 = map ? 0xde : 0xdc;
    if (t >= fix && t <= fix + 0x0f) {
        r->p++;
        *n = t & 0x0f;
    } else if (t == b16 || t == b16 + 1) {
        r->p++;
        rc = rd_be(r, t == b16 ? 2 : 4, n);
        if (rc != RD_OK) {
            return rc;
        }
    } else {
        return RD_TYPE;
    }
    /* Every entry takes at least one byte (two for a map pair). */
    if (*n > rd_left(r) / (map ? 2 : 1)) {
        return RD_TRUNC;
    }
    return RD_OK;
}

/* Skip one value of any type, iteratively: `pending` counts the values
 * still to skip, and only grows by amounts already checked against the
 * bytes left, so it stays below the frame length. */
static int
rd_skip(rd *r)
{
    uint64_t pending = 1;
    while (pending > 0) {
        uint64_t n = 0;
        uint64_t body = 0;
        int rc;
        pending--;
        if (rd_left(r) < 1) {
            return RD_TRUNC;
        }
        uint8_t t = *r->p;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
            r->p++;
            continue;
        }
        if ((t >= 0x80 && t <= 0x8f) || t == 0xde || t == 0xdf) {
            rc = rd_container(r, true, &n);
            if (rc != RD_OK) {
                return rc;
            }
            pending += 2 * n;
            continue;
        }
        if ((t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd) {
            rc = rd_container(r, false, &n);
            if (rc != RD_OK) {
                return rc;
            }
            pending += n;
            continue;
        }
        r->p++;
        if (t >= 0xa0 && t <= 0xbf) {
            body = t & 0x1f;
        } else {
            switch (t) {
            case 0xc4: /* bin 8/16/32 */
            case 0xd9: /* str 8/16/32 */
                rc = rd_be(r, 1, &body);
                break;
            case 0xc5:
            case 0xda:
                rc = rd_be(r, 2, &body);
                break;
            case 0xc6:
            case 0xdb:
                rc = rd_be(r, 4, &body);
                break;
            case 0xc7: /* ext 8/16/32: length, then a type byte */
                rc = rd_be(r, 1, &body);
                body++;
                break;
            case 0xc8:
                rc = rd_be(r, 2, &body);
                body++;
                break;
            case 0xc9:
                rc = rd_be(r, 4, &body);
                body++;
                break;
            case 0xca:
                rc = RD_OK;
                body = 4;
                break;
            case 0xcb:
                rc = RD_OK;
                body = 8;
                break;
            case 0xcc:
            case 0xd0:
                rc = RD_OK;
                body = 1;
                break;
            case 0xcd:
            case 0xd1:
                rc = RD_OK;
                body = 2;
                break;
            case 0xce:
            case 0xd2:
                rc = RD_OK;
                body = 4;
                break;
            case 0xcf:
            case 0xd3:
                rc = RD_OK;
                body = 8;
                break;
            case 0xd4: /* fixext 1, 2, 4, 8, 16 (+ type byte) */
                rc = RD_OK;
                body = 2;
                break;
            case 0xd5:
                rc = RD_OK;
                body = 3;
                break;
            case 0xd6:
                rc = RD_OK;
                body = 5;
                break;
            case 0xd7:
                rc = RD_OK;
                body = 9;
                break;
            case 0xd8:
                rc = RD_OK;
                body = 17;
                break;
            default: /* 0xc1: never used */
                return RD_TYPE;
            }
            if (rc != RD_OK) {
                return rc;
            }
        }
        if (body > rd_left(r)) {
            return RD_TRUNC;
        }
        r->p += body;
    }
    return RD_OK;
}

/* ------------------------------------------------------------ decoder */

/* Top-level keys of every message type, one table: a key known to another
 * type is simply not read by this one (ignored, like an unknown key). */
enum top_key {
    K_V,
    K_TYPE,
    K_TOKEN,
    K_SIM,
    K_RANK,
    K_NRANKS,
    K_PARAMS,
    K_FIELDS,
    K_DTYPE,
    K_MAX_PAYLOAD,
    K_CODE,
    K_REASON,
    K_ITEMS,
    K_SLICES,
    K_OP,
    K_MESSAGE,
    K_STEPS,
    K_RUN_KEY,
    K_SERVERS,
    K_SERVER_RANK,
    K_ROUTE,
    K_REDIRECT,
    K_NTOP
};

static const char *const top_names[K_NTOP] = {
    "v",       "type",        "token", "sim",         "rank",  "nranks",
    "params",  "fields",      "dtype", "max_payload", "code",  "reason",
    "items",   "slices",      "op",    "message",     "steps", "run_key",
    "servers", "server_rank", "route", "redirect"};

enum field_key { F_NAME, F_SIZE, F_OFFSET, F_COUNT, F_N };
static const char *const field_names[F_N] = {"name", "size", "offset", "count"};

enum item_key { I_STEP, I_TIME, I_FIELD, I_OFFSET, I_COUNT, I_N };
static const char *const item_names[I_N] = {"step", "time", "field", "offset",
                                            "count"};

static int
key_index(const char *const *names, int n, const char *k, size_t len)
{
    /* Candidates start at the first name with k's first letter: the
     * tables are small, so a 256-entry start table would not pay; skipping
     * by first letter does. */
    if (len == 0) {
        return -1;
    }
    /* Keys are short and differ early: compare by hand rather than call
     * strncmp/strlen per candidate (this loop is most of a decode). */
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        size_t j = 0;
        if (name[0] != k[0]) {
            continue;
        }
        while (j < len && name[j] != '\0' && name[j] == k[j]) {
            j++;
        }
        if (j == len && name[j] == '\0') {
            return i;
        }
    }
    return -1;
}

/* Read a map whose keys are strings into pos[] (the start of each known
 * key's value, NULL when absent). `what` names the map in errors. */
static int
rd_keyed_map(rd *r, const char *const *names, int nnames, const uint8_t **pos,
             const char *what, const char **why)
{
    uint64_t n;
    int rc = rd_container(r, true, &n);
    if (rc == RD_TYPE) {
        return fail(why, SURGE_EPROTO, "%s: must be a map", what);
    }
    if (rc != RD_OK) {
        return fail(why, SURGE_EPROTO, "%s: truncated", what);
    }
    for (int i = 0; i < nnames; i++) {
        pos[i] = NULL;
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *k;
        size_t klen;
        rc = rd_str(r, &k, &klen);
        if (rc == RD_TYPE) {
            return fail(why, SURGE_EPROTO, "%s: keys must be strings", what);
        }
        if (rc != RD_OK) {
            return fail(why, SURGE_EPROTO, "%s: truncated", what);
        }
        int idx = key_index(names, nnames, k, klen);
        if (idx >= 0) {
            if (pos[idx] != NULL) {
                return fail(why, SURGE_EPROTO, "%s.%s: key appears twice", what,
                            names[idx]);
            }
            pos[idx] = r->p;
        }
        rc = rd_skip(r);
        if (rc != RD_OK) {
            return fail(why, SURGE_EPROTO, "%s: truncated or invalid msgpack",
                        what);
        }
    }
    return 0;
}

/* Value readers for a recorded position: they turn reader statuses into
 * protocol errors naming the key ("hello.sim: must be an integer"). A
 * missing required key is an error too. */
typedef struct vctx {
    const uint8_t *end; /* end of the frame */
    const char *what;   /* "hello", "data.items[]", ... */
    const char **why;
} vctx;

static int
missing(const vctx *v, const char *key)
{
    return fail(v->why, SURGE_EPROTO, "%s.%s: required key missing", v->what,
                key);
}

static int
get_uint(const vctx *v, const uint8_t *pos, const char *key, uint64_t max,
         uint64_t *out)
{
    if (pos == NULL) {
        return missing(v, key);
    }
    rd r = {pos, v->end};
    int rc = rd_uint(&r, out);
    if (rc == RD_RANGE) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: must be >= 0", v->what, key);
    }
    if (rc != RD_OK) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: must be an unsigned integer",
                    v->what, key);
    }
    if (*out > max) {
        return fail(v->why, SURGE_ELIMIT, "%s.%s: %llu is over the limit %llu",
                    v->what, key, (unsigned long long)*out,
                    (unsigned long long)max);
    }
    return 0;
}

static int
get_int(const vctx *v, const uint8_t *pos, const char *key, int64_t min,
        int64_t max, int64_t *out)
{
    if (pos == NULL) {
        return missing(v, key);
    }
    rd r = {pos, v->end};
    int rc = rd_int(&r, out);
    if (rc != RD_OK && rc != RD_RANGE) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: must be an integer", v->what,
                    key);
    }
    if (rc == RD_RANGE || *out < min || *out > max) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: out of range", v->what, key);
    }
    return 0;
}

static int
get_number(const vctx *v, const uint8_t *pos, const char *key, double *out)
{
    if (pos == NULL) {
        return missing(v, key);
    }
    rd r = {pos, v->end};
    if (rd_number(&r, out) != RD_OK) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: must be a number", v->what,
                    key);
    }
    return 0;
}

/* A string into dst (capacity cap + 1 with the NUL). Over cap: ELIMIT; an
 * embedded NUL: EPROTO (it would silently cut the string). */
static int
get_str(const vctx *v, const uint8_t *pos, const char *key, char *dst,
        size_t cap)
{
    const char *s;
    size_t len;
    if (pos == NULL) {
        return missing(v, key);
    }
    rd r = {pos, v->end};
    if (rd_str(&r, &s, &len) != RD_OK) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: must be a string", v->what,
                    key);
    }
    if (len > cap) {
        return fail(v->why, SURGE_ELIMIT, "%s.%s: longer than %zu bytes",
                    v->what, key, cap);
    }
    if (memchr(s, '\0', len) != NULL) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: contains a NUL byte", v->what,
                    key);
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

static int
get_dtype(const vctx *v, const uint8_t *pos, uint8_t *out)
{
    char name[16];
    int rc = get_str(v, pos, "dtype", name, sizeof name - 1);
    if (rc == SURGE_ELIMIT || (rc == 0 && strcmp(name, DTYPE_F32_NAME) != 0)) {
        return fail(v->why, SURGE_EDTYPE,
                    "%s.dtype: only \"f32\" is allowed in v1", v->what);
    }
    if (rc != 0) {
        return rc;
    }
    *out = SURGE_WIRE_F32;
    return 0;
}

/* An array header at pos: *n entries, at most max (else ELIMIT). */
static int
get_array(const vctx *v, const uint8_t *pos, const char *key, uint64_t max,
          rd *r, uint64_t *n)
{
    if (pos == NULL) {
        return missing(v, key);
    }
    r->p = pos;
    r->end = v->end;
    int rc = rd_container(r, false, n);
    if (rc != RD_OK) {
        return fail(v->why, SURGE_EPROTO, "%s.%s: must be an array", v->what,
                    key);
    }
    if (*n > max) {
        return fail(v->why, SURGE_ELIMIT, "%s.%s: %llu entries, limit %llu",
                    v->what, key, (unsigned long long)*n,
                    (unsigned long long)max);
    }
    return 0;
}

static int
decode_hello(const vctx *v, const uint8_t **pos, surge_msg_hello *h)
{
    uint64_t u, n;
    int64_t s;
    rd r;
    int rc;

    /* run_key is optional (a server without a token checks none). */
    h->run_key[0] = '\0';
    if ((rc = get_str(v, pos[K_TOKEN], "token", h->token, SURGE_MAX_TOKEN)) ||
        (pos[K_RUN_KEY] != NULL &&
         (rc = get_str(v, pos[K_RUN_KEY], "run_key", h->run_key,
                       SURGE_MAX_RUN_KEY))) ||
        (rc = get_int(v, pos[K_SIM], "sim", 0, INT64_MAX, &s))) {
        return rc;
    }
    h->sim = s;
    if ((rc = get_uint(v, pos[K_NRANKS], "nranks", SURGE_MAX_RANKS, &u))) {
        return rc;
    }
    h->nranks = (uint32_t)u;
    if ((rc = get_uint(v, pos[K_RANK], "rank", SURGE_MAX_RANKS, &u))) {
        return rc;
    }
    h->rank = (uint32_t)u;
    if ((rc =
             get_array(v, pos[K_PARAMS], "params", SURGE_MAX_PARAMS, &r, &n))) {
        return rc;
    }
    h->nparams = (uint32_t)n;
    for (uint64_t i = 0; i < n; i++) {
        if (rd_number(&r, &h->params[i]) != RD_OK) {
            return fail(v->why, SURGE_EPROTO,
                        "hello.params[%llu]: must be a number",
                        (unsigned long long)i);
        }
    }
    if ((rc =
             get_array(v, pos[K_FIELDS], "fields", SURGE_MAX_FIELDS, &r, &n))) {
        return rc;
    }
    h->nfields = (uint32_t)n;
    vctx fv = {v->end, "hello.fields[]", v->why};
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *fp[F_N];
        surge_field_desc *f = &h->fields[i];
        if ((rc = rd_keyed_map(&r, field_names, F_N, fp, "hello.fields[]",
                               v->why)) ||
            (rc = get_str(&fv, fp[F_NAME], "name", f->name, SURGE_MAX_NAME)) ||
            (rc = get_uint(&fv, fp[F_SIZE], "size", UINT64_MAX,
                           &f->global_size)) ||
            (rc = get_uint(&fv, fp[F_OFFSET], "offset", UINT64_MAX,
                           &f->offset)) ||
            (rc = get_uint(&fv, fp[F_COUNT], "count", UINT64_MAX, &f->count))) {
            return rc;
        }
    }
    h->steps = 0;
    if (pos[K_STEPS] != NULL &&
        (rc = get_uint(v, pos[K_STEPS], "steps", SURGE_MAX_STEPS, &h->steps))) {
        return rc;
    }
    return get_dtype(v, pos[K_DTYPE], &h->dtype);
}

static int
decode_data(const vctx *v, const uint8_t **pos, surge_msg_data *d)
{
    uint64_t u, n;
    int64_t s;
    rd r;
    int rc;

    if ((rc = get_int(v, pos[K_SIM], "sim", 0, INT64_MAX, &s))) {
        return rc;
    }
    d->sim = s;
    if ((rc = get_uint(v, pos[K_RANK], "rank", SURGE_MAX_RANKS - 1, &u))) {
        return rc;
    }
    d->rank = (uint32_t)u;
    if ((rc = get_dtype(v, pos[K_DTYPE], &d->dtype)) ||
        (rc = get_array(v, pos[K_ITEMS], "items", SURGE_MAX_ITEMS, &r, &n))) {
        return rc;
    }
    d->nitems = (uint32_t)n;
    vctx iv = {v->end, "data.items[]", v->why};
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *ip[I_N];
        surge_data_item *it = &d->items[i];
        if ((rc = rd_keyed_map(&r, item_names, I_N, ip, "data.items[]",
                               v->why)) ||
            (rc = get_int(&iv, ip[I_STEP], "step", 0, INT64_MAX, &s)) ||
            (rc = get_number(&iv, ip[I_TIME], "time", &it->time)) ||
            (rc = get_uint(&iv, ip[I_FIELD], "field", SURGE_MAX_FIELDS - 1,
                           &u))) {
            return rc;
        }
        it->step = s;
        it->field = (uint32_t)u;
        if ((rc = get_uint(&iv, ip[I_OFFSET], "offset", SURGE_MAX_FIELD_ELEMS,
                           &it->offset)) ||
            (rc = get_uint(&iv, ip[I_COUNT], "count", SURGE_MAX_FIELD_ELEMS,
                           &it->count))) {
            return rc;
        }
    }
    return 0;
}

/* The optional server list of a welcome (check_servers validates it). */
static int
decode_servers(const vctx *v, const uint8_t **pos, surge_msg_welcome *w)
{
    uint64_t n, u;
    rd r;
    int rc;
    w->nservers = 0;
    w->server_rank = 0;
    w->route = SURGE_ROUTE_STEP;
    w->redirect = 0;
    w->endpoints_len = 0;
    if (pos[K_SERVERS] == NULL) {
        if (pos[K_SERVER_RANK] != NULL || pos[K_ROUTE] != NULL ||
            pos[K_REDIRECT] != NULL) {
            return fail(v->why, SURGE_EPROTO,
                        "welcome: server_rank, route or redirect without "
                        "servers");
        }
        return 0;
    }
    if ((rc = get_array(v, pos[K_SERVERS], "servers", SURGE_MAX_SERVER_RANKS,
                        &r, &n))) {
        return rc;
    }
    for (uint64_t i = 0; i < n; i++) {
        const char *str;
        size_t len;
        if (rd_str(&r, &str, &len) != RD_OK) {
            return fail(v->why, SURGE_EPROTO,
                        "welcome.servers[%llu]: must be a string",
                        (unsigned long long)i);
        }
        if (len > SURGE_MAX_ENDPOINT ||
            w->endpoints_len + len + 1 > sizeof w->endpoints) {
            return fail(v->why, SURGE_ELIMIT,
                        "welcome.servers[%llu]: longer than %d bytes",
                        (unsigned long long)i, SURGE_MAX_ENDPOINT);
        }
        if (memchr(str, '\0', len) != NULL) {
            return fail(v->why, SURGE_EPROTO,
                        "welcome.servers[%llu]: contains a NUL byte",
                        (unsigned long long)i);
        }
        memcpy(w->endpoints + w->endpoints_len, str, len);
        w->endpoints[w->endpoints_len + len] = '\0';
        w->endpoints_len += (uint32_t)len + 1;
        w->nservers++;
    }
    if ((rc = get_uint(v, pos[K_SERVER_RANK], "server_rank",
                       SURGE_MAX_SERVER_RANKS, &u))) {
        return rc;
    }
    w->server_rank = (uint32_t)u;
    char route[8];
    rc = get_str(v, pos[K_ROUTE], "route", route, sizeof route - 1);
    if (rc == 0 && strcmp(route, "step") == 0) {
        w->route = SURGE_ROUTE_STEP;
    } else if (rc == 0 && strcmp(route, "sim") == 0) {
        w->route = SURGE_ROUTE_SIM;
    } else {
        return rc != 0 && rc != SURGE_ELIMIT
                   ? rc
                   : fail(v->why, SURGE_EPROTO,
                          "welcome.route: must be \"step\" or \"sim\"");
    }
    if (pos[K_REDIRECT] != NULL) {
        if ((rc = get_uint(v, pos[K_REDIRECT], "redirect", 1, &u))) {
            return rc;
        }
        w->redirect = (uint8_t)u;
    }
    return 0;
}

static int
decode_body(const vctx *v, const uint8_t **pos, surge_msg *m)
{
    uint64_t u;
    int64_t s;
    int rc;

    switch (m->type) {
    case SURGE_MSG_HELLO:
        return decode_hello(v, pos, &m->u.hello);
    case SURGE_MSG_DATA:
        return decode_data(v, pos, &m->u.data);
    case SURGE_MSG_WELCOME:
        if ((rc = get_int(v, pos[K_SIM], "sim", 0, INT64_MAX, &s)) ||
            (rc = get_uint(v, pos[K_RANK], "rank", SURGE_MAX_RANKS - 1, &u))) {
            return rc;
        }
        m->u.welcome.sim = s;
        m->u.welcome.rank = (uint32_t)u;
        if ((rc = get_uint(v, pos[K_MAX_PAYLOAD], "max_payload",
                           SURGE_MAX_PAYLOAD_BYTES,
                           &m->u.welcome.max_payload_bytes))) {
            return rc;
        }
        return decode_servers(v, pos, &m->u.welcome);
    case SURGE_MSG_REJECT:
        if ((rc = get_int(v, pos[K_CODE], "code", INT32_MIN, -1, &s))) {
            return rc;
        }
        m->u.reject.code = (int32_t)s;
        return get_str(v, pos[K_REASON], "reason", m->u.reject.reason,
                       SURGE_MAX_REASON);
    case SURGE_MSG_BYE:
    case SURGE_MSG_BYE_ACK:
        if ((rc = get_int(v, pos[K_SIM], "sim", 0, INT64_MAX, &s)) ||
            (rc = get_uint(v, pos[K_RANK], "rank", SURGE_MAX_RANKS - 1, &u))) {
            return rc;
        }
        m->u.bye.sim = s;
        m->u.bye.rank = (uint32_t)u;
        return get_uint(v, pos[K_SLICES], "slices", UINT64_MAX,
                        &m->u.bye.slices);
    case SURGE_MSG_CONTROL: {
        char op[32];
        if ((rc = get_str(v, pos[K_TOKEN], "token", m->u.control.token,
                          SURGE_MAX_TOKEN))) {
            return rc;
        }
        rc = get_str(v, pos[K_OP], "op", op, sizeof op - 1);
        if (rc == SURGE_ELIMIT) {
            return fail(v->why, SURGE_EPROTO, "control.op: unknown operation");
        }
        if (rc != 0) {
            return rc;
        }
        int idx = key_index(op_names + 1, NOPS - 1, op, strlen(op));
        if (idx < 0) {
            return fail(v->why, SURGE_EPROTO,
                        "control.op: unknown operation \"%s\"", op);
        }
        m->u.control.op = (uint8_t)(idx + 1);
        m->u.control.sim = -1;
        if (pos[K_SIM] != NULL &&
            (rc = get_int(v, pos[K_SIM], "sim", -1, INT64_MAX,
                          &m->u.control.sim))) {
            return rc;
        }
        return 0;
    }
    case SURGE_MSG_CONTROL_REPLY:
        if ((rc = get_int(v, pos[K_CODE], "code", INT32_MIN, 0, &s))) {
            return rc;
        }
        m->u.control_reply.code = (int32_t)s;
        return get_str(v, pos[K_MESSAGE], "message", m->u.control_reply.message,
                       SURGE_MAX_REASON);
    }
    return fail(v->why, SURGE_EPROTO, "type: unknown message type");
}

int
surge_proto_decode(const void *buf, size_t len, surge_msg *m, const char **why)
{
    const uint8_t *pos[K_NTOP];
    char tname[16];
    uint64_t version;
    int rc;

    if (buf == NULL || m == NULL) {
        return fail(why, SURGE_EPROTO, "no header frame");
    }
    /* Until the type is read, a failure has none (see protocol.h). */
    m->type = (enum surge_msg_type)0;
    if (len > SURGE_MAX_HEADER_BYTES) {
        return fail(why, SURGE_ELIMIT, "header: %zu bytes, limit %d", len,
                    SURGE_MAX_HEADER_BYTES);
    }
    if (len == 0) {
        return fail(why, SURGE_EPROTO, "header: empty frame");
    }
    rd r = {buf, (const uint8_t *)buf + len};
    rc = rd_keyed_map(&r, top_names, K_NTOP, pos, "header", why);
    if (rc != 0) {
        return rc;
    }
    if (r.p != r.end) {
        return fail(why, SURGE_EPROTO, "header: %zu trailing bytes after map",
                    rd_left(&r));
    }

    /* The version first: a v2 peer must learn that, not that some key of
     * its v2 layout looks wrong to us. */
    vctx v = {r.end, "header", why};
    if (pos[K_V] == NULL) {
        return missing(&v, "v");
    }
    rd vr = {pos[K_V], r.end};
    if (rd_uint(&vr, &version) != RD_OK) {
        return fail(why, SURGE_EPROTO, "header.v: must be an unsigned integer");
    }
    if (version != SURGE_PROTOCOL_VERSION) {
        return fail(why, SURGE_EVERSION,
                    "header.v: version %llu, this peer speaks %d",
                    (unsigned long long)version, SURGE_PROTOCOL_VERSION);
    }
    rc = get_str(&v, pos[K_TYPE], "type", tname, sizeof tname - 1);
    if (rc == SURGE_ELIMIT) {
        return fail(why, SURGE_EPROTO, "header.type: unknown message type");
    }
    if (rc != 0) {
        return rc;
    }
    int t = key_index(type_names + 1, NTYPES - 1, tname, strlen(tname));
    if (t < 0) {
        return fail(why, SURGE_EPROTO,
                    "header.type: unknown message type \"%s\"", tname);
    }
    m->type = (enum surge_msg_type)(t + 1);
    v.what = type_names[m->type];
    rc = decode_body(&v, pos, m);
    if (rc != 0) {
        return rc;
    }
    return check_msg(m, why);
}
