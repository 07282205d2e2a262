/*
 * server/options.c - defaults, flag table, strict parsing and --help of
 * `surge serve` (see options.h).
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "server/consumer.h"
#include "server/options.h"

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

void
surge_server_options_init(surge_server_options *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->bind, sizeof o->bind, "%s", "tcp://127.0.0.1:*");
    o->max_message_bytes = 64 * MIB;
    o->rcvhwm_bytes = 64 * MIB;
    o->max_connections = 2048;
    o->max_presession_bytes = 64 * KIB;
    o->max_held_bytes = 64 * MIB;
    o->max_partial_bytes = 256 * MIB;
    o->sim_timeout_s = 600.0;
    o->join_timeout_s = 120.0;
    o->max_joining_sims = 1024;
    snprintf(o->policy, sizeof o->policy, "%s", "fifo");
    o->store_bytes = 256 * MIB;
    surge_reservoir_config_init(&o->reservoir);
    snprintf(o->storage, sizeof o->storage, "%s", "auto");
    snprintf(o->prefetch, sizeof o->prefetch, "%s", "auto");
    o->validation_bytes = 64 * MIB;
    o->validation_every = 0;
    snprintf(o->consumer, sizeof o->consumer, "%s", "discard");
    snprintf(o->external_bind, sizeof o->external_bind, "%s",
             "tcp://127.0.0.1:*");
    o->external_timeout_s = 30;
    o->external_shm_bytes = 1024 * MIB;
    o->batch_size = 64;
    o->max_steps = o->max_wall_s = o->steps_after_end = -1;
    o->eval_every = o->checkpoint_every = o->checkpoint_interval_s = -1;
    o->progress_interval_s = -1;
    snprintf(o->output_dir, sizeof o->output_dir, "%s", ".");
    snprintf(o->http, sizeof o->http, "%s", "127.0.0.1:0");
    o->stop_timeout_s = 10.0;
    o->log_level = SURGE_LOG_INFO;
    const char *tok = getenv("SURGE_TOKEN");
    if (tok != NULL && strlen(tok) <= SURGE_MAX_TOKEN) {
        snprintf(o->token, sizeof o->token, "%s", tok);
    }
}

/* A size: decimal digits, optionally followed by K, M or G (powers of
 * 1024, "KiB" and "KB" spellings too), at most max. */
static int
parse_size(const char *s, uint64_t max, int sizes, uint64_t *out)
{
    char digits[32];
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n >= sizeof digits) {
        return -1;
    }
    memcpy(digits, s, n);
    digits[n] = '\0';
    uint64_t v;
    if (surge_parse_uint64(digits, &v) < 0) {
        return -1;
    }
    const char *end = s + n;
    uint64_t mult = 1;
    if (sizes && *end != '\0') {
        switch (*end) {
        case 'K':
        case 'k':
            mult = KIB;
            break;
        case 'M':
        case 'm':
            mult = MIB;
            break;
        case 'G':
        case 'g':
            mult = GIB;
            break;
        default:
            return -1;
        }
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0) {
            end += strlen(end);
        }
    }
    if (*end != '\0' || v > max / mult) {
        return -1;
    }
    *out = v * mult;
    return 0;
}

static int
parse_double(const char *s, double min, double max, double *out)
{
    double v;
    if (surge_parse_double(s, &v) < 0 || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
read_token_file(surge_server_options *o, const char *path, char *err,
                size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        surge_set_err(err, errlen, "--token-file: cannot open '%s': %s", path,
                      strerror(errno));
        return SURGE_ECONFIG;
    }
    char buf[SURGE_MAX_TOKEN + 3];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        surge_set_err(err, errlen, "--token-file: cannot read '%s'", path);
        return SURGE_ECONFIG;
    }
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        buf[--n] = '\0';
    }
    if (n == 0 || n > SURGE_MAX_TOKEN || strlen(buf) != n) {
        surge_set_err(err, errlen,
                      "--token-file: '%s' must hold one token of 1..%d bytes",
                      path, SURGE_MAX_TOKEN);
        return SURGE_ECONFIG;
    }
    memcpy(o->token, buf, n + 1);
    return 0;
}

/* One entry "name=D1xD2x..." of a --field-shapes list (len bytes at e):
 * the name into name (cap bytes) and the dims. Returns the number of dims
 * (1..maxd), or -1 when the entry is malformed. */
static int
shape_entry(const char *e, size_t len, char *name, size_t cap, uint64_t *dims,
            int maxd)
{
    const char *eq = memchr(e, '=', len);
    if (eq == NULL || eq == e || (size_t)(eq - e) >= cap) {
        return -1;
    }
    memcpy(name, e, (size_t)(eq - e));
    name[eq - e] = '\0';
    const char *p = eq + 1, *end = e + len;
    int n = 0;
    while (p < end) {
        char num[24];
        const char *x = memchr(p, 'x', (size_t)(end - p));
        size_t dl = (size_t)((x != NULL ? x : end) - p);
        int64_t v;
        if (dl == 0 || dl >= sizeof num || n >= maxd) {
            return -1;
        }
        memcpy(num, p, dl);
        num[dl] = '\0';
        if (surge_parse_int64(num, &v) != 0 || v < 1 ||
            (uint64_t)v > SURGE_MAX_FIELD_ELEMS) {
            return -1;
        }
        dims[n++] = (uint64_t)v;
        if (x == NULL) {
            break;
        }
        p = x + 1;
        if (p == end) {
            return -1; /* a trailing 'x' */
        }
    }
    return n > 0 ? n : -1;
}

#define MAX_SHAPE_DIMS 8

static int
parse_field_shapes(surge_server_options *o, const char *s, char *err,
                   size_t errlen)
{
    if (strlen(s) >= sizeof o->field_shapes) {
        surge_set_err(err, errlen, "--field-shapes: list too long");
        return SURGE_ECONFIG;
    }
    for (const char *p = s; *p != '\0';) {
        size_t len = strcspn(p, ",");
        char name[SURGE_MAX_NAME + 1];
        uint64_t dims[MAX_SHAPE_DIMS];
        if (shape_entry(p, len, name, sizeof name, dims, MAX_SHAPE_DIMS) < 0) {
            surge_set_err(err, errlen,
                          "--field-shapes: '%.*s' is not NAME=D1xD2... "
                          "(at most %d dimensions, each >= 1)",
                          (int)len, p, MAX_SHAPE_DIMS);
            return SURGE_ECONFIG;
        }
        p += len + (p[len] == ',');
    }
    snprintf(o->field_shapes, sizeof o->field_shapes, "%s", s);
    return 0;
}

int
surge_server_field_shape(const surge_server_options *o, const char *name,
                         uint64_t *dims, int maxd)
{
    for (const char *p = o->field_shapes; *p != '\0';) {
        size_t len = strcspn(p, ",");
        char n[SURGE_MAX_NAME + 1];
        int nd = shape_entry(p, len, n, sizeof n, dims, maxd);
        if (nd > 0 && strcmp(n, name) == 0) {
            return nd;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

static int
parse_sim_list(surge_server_options *o, const char *s, char *err, size_t errlen)
{
    char buf[4096];
    if (strlen(s) >= sizeof buf) {
        surge_set_err(err, errlen, "--validation-sims: list too long");
        return SURGE_ECONFIG;
    }
    snprintf(buf, sizeof buf, "%s", s);
    o->nvalidation_sims = 0;
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        int64_t v;
        if (surge_parse_int64(p, &v) < 0 || v < 0) {
            surge_set_err(err, errlen,
                          "--validation-sims: '%s' is not a simulation id", p);
            return SURGE_ECONFIG;
        }
        if (o->nvalidation_sims == SURGE_SERVER_MAX_VALIDATION_SIMS) {
            surge_set_err(err, errlen, "--validation-sims: more than %d ids",
                          SURGE_SERVER_MAX_VALIDATION_SIMS);
            return SURGE_ECONFIG;
        }
        o->validation_sims[o->nvalidation_sims++] = v;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    return 0;
}

enum opt_kind {
    K_STR,      /* char[len] */
    K_SIZE,     /* uint64_t bytes, K/M/G suffixes */
    K_U32,      /* uint32_t */
    K_UNSIGNED, /* unsigned */
    K_SIZET,    /* size_t count */
    K_U64,      /* uint64_t count */
    K_SECONDS,  /* double >= 0 */
    K_MS,       /* double >= 0 */
    K_REAL,     /* double, any finite value */
    K_BOOL,     /* bool: true/false/1/0/yes/no */
    K_SPECIAL   /* handled by name in apply() */
};

struct flag {
    const char *name;
    const char *arg;
    enum opt_kind kind;
    size_t off; /* offsetof the field */
    size_t len; /* capacity for K_STR */
    const char *help;
    int show_default; /* --help adds "(default X)", X the field's value
                         after surge_server_options_init: a default set
                         there (the reservoir's: its table of keys,
                         reservoir/config.c) is written once */
};

#define F(field) offsetof(surge_server_options, field)
#define S(field) sizeof(((surge_server_options *)0)->field)

static const struct flag flags[] = {
    {"bind", "ENDPOINT", K_STR, F(bind), S(bind),
     "ZeroMQ endpoint to listen on (default tcp://127.0.0.1:*, a free "
     "port). A non-loopback address needs a study token.",
     0},
    {"token-file", "FILE", K_SPECIAL, 0, 0,
     "read the study token from FILE (default: $SURGE_TOKEN; without one "
     "tokens are not checked)",
     0},
    {"curve-keys", "FILE", K_STR, F(curve_keys), S(curve_keys),
     "encrypt and authenticate every connection with ZeroMQ CURVE, with the "
     "server key file FILE (mode 0600, e.g. from `surge keys curve DIR`): "
     "only its client keys get in",
     0},
    {"bind-simulation", "BOOL", K_BOOL, F(bind_simulation), 0,
     "with several server ranks (mpirun -np R surge serve), send every step "
     "of simulation s to rank s % R instead of step t to rank t % R",
     1},
    {"output-dir", "DIR", K_STR, F(output_dir), S(output_dir),
     "write server.json (endpoint, pid) and server-stats.json here", 1},
    {"checksum-log", "FILE", K_STR, F(checksum_log), S(checksum_log),
     "append 'sim step checksum' for every assembled sample (checksum of "
     "surge_checksum_f32 over the output vector, decimal)",
     0},
    {"max-message-bytes", "SIZE", K_SIZE, F(max_message_bytes), 0,
     "largest message frame accepted; bigger ones close the connection", 1},
    {"rcvhwm-bytes", "SIZE", K_SIZE, F(rcvhwm_bytes), 0,
     "receive queue per client connection before its sends block", 1},
    {"max-connections", "N", K_U32, F(max_connections), 0,
     "client connections open at once (tcp or ipc); a connection over the "
     "limit is cut as it comes, counted and logged; mind ulimit -n",
     1},
    {"max-presession-bytes", "SIZE", K_SIZE, F(max_presession_bytes), 0,
     "largest message a peer without a session (no accepted hello) may "
     "send: a bigger one is dropped unread and the peer told to say hello; "
     "one more and its connection is cut; at least 20K",
     1},
    {"max-held-bytes", "SIZE", K_SIZE, F(max_held_bytes), 0,
     "under backpressure (store full) the server goes on reading: messages of "
     "peers with a session are held, up to this many bytes, while those of "
     "peers without one are answered or dropped at once; past it reading stops",
     1},
    {"max-partial-bytes", "SIZE", K_SIZE, F(max_partial_bytes), 0,
     "memory for partially assembled steps; when full the oldest partial step "
     "is dropped",
     1},
    {"sim-timeout", "SECONDS", K_SECONDS, F(sim_timeout_s), 0,
     "a simulation that sends nothing this long is failed and its partial "
     "steps dropped; 0 = never",
     1},
    {"join-timeout", "SECONDS", K_SECONDS, F(join_timeout_s), 0,
     "a simulation whose ranks have not all said hello this long after its "
     "first did is failed (its partial steps dropped as sim_not_joined); at "
     "the end of reception such simulations are failed at once; 0 = never",
     1},
    {"max-joining-sims", "N", K_U32, F(max_joining_sims), 0,
     "simulations that may wait for their ranks at once; a hello that would "
     "open one more is rejected",
     1},
    {"policy", "NAME", K_STR, F(policy), S(policy),
     "training store policy: fifo (oldest first, each used once), firo "
     "(random, each used --epochs times) or reservoir (watermark, with "
     "replacement, evicts used samples)",
     1},
    {"store-bytes", "SIZE", K_SIZE, F(store_bytes), 0,
     "training store (reservoir) capacity; when the policy makes a put wait, "
     "the server stops reading (backpressure)",
     1},
    {"watermark", "N", K_SIZET, F(reservoir.watermark), 0,
     "samples present before the first batch (policy reservoir: default "
     "the batch size; fifo/firo: at least a batch)",
     0},
    {"seed", "N", K_U64, F(reservoir.seed), 0,
     "seed of the store's random draws", 1},
    {"epochs", "N", K_UNSIGNED, F(reservoir.epochs), 0,
     "policy firo: times each sample is used", 1},
    {"max-uses", "N", K_UNSIGNED, F(reservoir.max_uses), 0,
     "policy reservoir: remove a sample after N uses; 0 = no cap", 1},
    {"samples-per-insert", "X", K_REAL, F(reservoir.rate.samples_per_insert), 0,
     "policy reservoir: rate limiter target of rows served per sample put; 0 = "
     "off",
     1},
    {"rate-min-diff", "X", K_REAL, F(reservoir.rate.min_diff), 0,
     "rate limiter: a batch waits while puts*spi - served - B < X", 1},
    {"rate-max-diff", "X", K_REAL, F(reservoir.rate.max_diff), 0,
     "rate limiter: a put waits while (puts+1)*spi - served > X", 1},
    {"balance-sims", "BOOL", K_BOOL, F(reservoir.balance_sims), 0,
     "firo/reservoir: spread each batch over the simulations present", 1},
    {"prioritized", "BOOL", K_BOOL, F(reservoir.prioritized.enabled), 0,
     "firo/reservoir: loss-prioritized draws (the trainer reports losses)", 1},
    {"priority-alpha", "X", K_REAL, F(reservoir.prioritized.alpha), 0,
     "prioritized: exponent on priorities, in [0, 1]", 1},
    {"priority-beta", "X", K_REAL, F(reservoir.prioritized.beta), 0,
     "prioritized: importance weight exponent, in [0, 1]", 1},
    {"priority-epsilon", "X", K_REAL, F(reservoir.prioritized.epsilon), 0,
     "prioritized: added to each loss, > 0", 1},
    {"reservoir-storage", "NAME", K_STR, F(storage), S(storage),
     "where the training store keeps samples: host, device (a copy on the CUDA "
     "device, batches gathered there; a CUDA build) or auto (device when the "
     "trainer's backend is cuda and a device is present, else host)",
     1},
    {"reservoir-device", "N", K_UNSIGNED, F(reservoir.device), 0,
     "CUDA device ordinal of the device storage", 1},
    {"prefetch", "NAME", K_STR, F(prefetch), S(prefetch),
     "trainer fed from a host store: on (gather batch k+1 while batch k "
     "trains; not with --prioritized), off, or auto (on for a GPU trainer)",
     1},
    {"validation-bytes", "SIZE", K_SIZE, F(validation_bytes), 0,
     "validation store capacity", 1},
    {"validation-every", "N", K_U32, F(validation_every), 0,
     "hold out simulations with id % N == N-1 for validation; 0 = none", 1},
    {"validation-sims", "LIST", K_SPECIAL, 0, 0,
     "comma-separated simulation ids also held out for validation", 0},
    {"field-shapes", "LIST", K_SPECIAL, 0, 0,
     "the output fields' shapes for the model file, e.g. "
     "temperature=64x64,u=2000 (default: each field 1-D; "
     "study: solver.field_shapes)",
     0},
    {"consumer", "NAME", K_STR, F(consumer), S(consumer),
     "what drains the training store: discard (gather each batch into its "
     "buffers, as a trainer does, and drop it) or count (take each batch with "
     "the same counts but read nothing: no gather), trainer (train the "
     "surrogate: docs/trainer.md) or writer (append every sample to "
     "<output-dir>/samples.f32, as an offline pipeline would)",
     1},
    {"study", "FILE", K_STR, F(study), S(study),
     "trainer: the study file whose \"parameters\" (input ranges) and "
     "\"trainer\" section configure it (default "
     "<output-dir>/study.resolved.json when it exists)",
     0},
    {"resume", "[FILE]", K_SPECIAL, 0, 0,
     "trainer: continue from this checkpoint (default "
     "<output-dir>/checkpoint.safetensors): weights, optimizer, "
     "normalization, step, reservoir, and the steps already assembled",
     0},
    {"study-id", "ID", K_STR, F(study_id), S(study_id),
     "trainer: the identity of the study, kept in its checkpoints: --resume "
     "refuses a checkpoint written for another study (surge launch gives "
     "its own; default none)",
     0},
    {"max-steps", "N", K_REAL, F(max_steps), 0,
     "trainer: stop training after N steps; 0 = no limit (default: "
     "trainer.max_steps)",
     0},
    {"max-wall", "SECONDS", K_REAL, F(max_wall_s), 0,
     "trainer: stop training after this long; 0 = no limit (default: "
     "trainer.max_wall_s)",
     0},
    {"steps-after-end", "N", K_REAL, F(steps_after_end), 0,
     "trainer: stop N steps after reception ended; 0 = when the reservoir "
     "has served what it holds (default: trainer.steps_after_end)",
     0},
    {"eval-every", "N", K_REAL, F(eval_every), 0,
     "trainer: steps between validations (default: trainer.eval_every)", 0},
    {"checkpoint-every", "N", K_REAL, F(checkpoint_every), 0,
     "trainer: steps between checkpoints; 0 = none (default: "
     "trainer.checkpoint_every)",
     0},
    {"checkpoint-interval", "SECONDS", K_REAL, F(checkpoint_interval_s), 0,
     "trainer: seconds between checkpoints; 0 = none (default: "
     "trainer.checkpoint_every_s)",
     0},
    {"progress-interval", "SECONDS", K_REAL, F(progress_interval_s), 0,
     "trainer: seconds between progress lines (default: "
     "study.progress_interval_s, else 5)",
     0},
    {"batch-size", "N", K_U32, F(batch_size), 0, "samples per consumer batch",
     1},
    {"external-bind", "ENDPOINT", K_STR, F(external_bind), S(external_bind),
     "external consumer: where trainers in other processes (surge.torch) "
     "connect; the bound address goes to server.json as "
     "\"external\".\"endpoint\"",
     1},
    {"external-timeout", "SECONDS", K_SECONDS, F(external_timeout_s), 0,
     "external consumer: a consumer silent this long is dropped (its unacked "
     "rows counted as such); also how long to wait for consumers after "
     "reception ended",
     1},
    {"external-shm", "SIZE", K_SIZE, F(external_shm_bytes), 0,
     "external consumer: shared memory for the batch rings of consumers on "
     "this host (each consumer gets 2 to 4 slots of one batch, while this "
     "budget lasts; the others, and consumers on other hosts, get their "
     "batches over ZeroMQ); 0 = ZeroMQ only",
     1},
    {"consumer-delay-ms", "MS", K_MS, F(consumer_delay_ms), 0,
     "discard consumer: sleep this long per batch, to emulate a slow trainer",
     1},
    {"http", "ADDR", K_STR, F(http), S(http),
     "monitoring HTTP server (dashboard, /metrics, /api/v1): HOST:PORT, "
     "PORT or off; a non-loopback HOST needs the study token; its address "
     "goes to server.json as \"http\" (default 127.0.0.1:0, a free port)",
     0},
    {"stop-timeout", "SECONDS", K_SECONDS, F(stop_timeout_s), 0,
     "after a stop, wait at most this long for the consumer to drain", 1},
    {"exit-idle", "SECONDS", K_SECONDS, F(exit_idle_s), 0,
     "exit when no simulation is active and nothing arrived for this long; 0 = "
     "never",
     1},
    {"log-level", "LEVEL", K_SPECIAL, 0, 0,
     "error, warn, info or debug (default info or $SURGE_LOG_LEVEL)", 0},
};

/* Print text wrapped at 79 columns, continuation lines indented by
 * indent spaces; the first line starts at column `col`. */
static void
print_wrapped(FILE *out, const char *text, int col, int indent)
{
    const char *p = text;
    while (*p != '\0') {
        int room = 79 - col;
        size_t n = strlen(p);
        if ((int)n > room) {
            n = (size_t)room;
            while (n > 0 && p[n] != ' ') {
                n--;
            }
            if (n == 0) {
                n = strcspn(p, " ");
            }
        }
        fprintf(out, "%.*s\n", (int)n, p);
        p += n;
        while (*p == ' ') {
            p++;
        }
        if (*p != '\0') {
            fprintf(out, "%*s", indent, "");
            col = indent;
        }
    }
}

static_assert(sizeof(unsigned) == sizeof(uint32_t), "K_UNSIGNED is 32 bits");
static_assert(sizeof(size_t) == sizeof(uint64_t), "K_SIZET is 64 bits");

/* The value of flag f's field in o, as the flag takes it: "64M", "0.6",
 * "true", "fifo". */
static void
field_text(const surge_server_options *o, const struct flag *f, char *buf,
           size_t cap)
{
    const char *base = (const char *)o + f->off;
    uint64_t u = 0;
    double d;
    switch (f->kind) {
    case K_STR:
        snprintf(buf, cap, "%s", base);
        return;
    case K_SIZE: {
        static const struct {
            uint64_t mult;
            const char *unit;
        } units[] = {{GIB, "G"}, {MIB, "M"}, {KIB, "K"}, {1, ""}};
        memcpy(&u, base, sizeof u);
        size_t i = 0;
        while (u == 0 ? units[i].mult != 1 : u % units[i].mult != 0) {
            i++;
        }
        snprintf(buf, cap, "%llu%s", (unsigned long long)(u / units[i].mult),
                 units[i].unit);
        return;
    }
    case K_U32:
    case K_UNSIGNED: { /* uint32_t, unsigned: the same (asserted below) */
        uint32_t x;
        memcpy(&x, base, sizeof x);
        u = x;
        break;
    }
    case K_SIZET: /* size_t, uint64_t: the same (asserted below) */
    case K_U64:
        memcpy(&u, base, sizeof u);
        break;
    case K_SECONDS:
    case K_MS:
    case K_REAL:
        memcpy(&d, base, sizeof d);
        snprintf(buf, cap, "%g", d);
        return;
    case K_BOOL: {
        bool b;
        memcpy(&b, base, sizeof b);
        snprintf(buf, cap, "%s", b ? "true" : "false");
        return;
    }
    case K_SPECIAL:
        snprintf(buf, cap, "?");
        return;
    }
    snprintf(buf, cap, "%llu", (unsigned long long)u);
}

void
surge_server_options_usage(FILE *out)
{
    surge_server_options dflt;
    surge_server_options_init(&dflt);
    fprintf(out,
            "usage: surge serve [options]\n\n"
            "Run the surge server: receive simulation fields from libsurge "
            "clients,\nassemble them into samples and feed the store. Stops "
            "on SIGINT/SIGTERM,\nSHUTDOWN, or END_RECEPTION once every "
            "simulation finished.\n\noptions:\n");
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s %s", flags[i].name, flags[i].arg);
        fprintf(out, "  %-27s ", lhs);
        char help[1024], value[128];
        snprintf(help, sizeof help, "%s", flags[i].help);
        if (flags[i].show_default) {
            field_text(&dflt, &flags[i], value, sizeof value);
            snprintf(help, sizeof help, "%s (default %s)", flags[i].help,
                     value);
        }
        print_wrapped(out, help, 30, 30);
    }
    fprintf(out, "  %-27s %s\n", "--help", "show this text");
    fprintf(out, "\nenvironment: SURGE_TOKEN (study token), SURGE_LOG_LEVEL\n");
}

static int
apply(surge_server_options *o, const struct flag *f, const char *v, char *err,
      size_t errlen)
{
    char *base = (char *)o;
    uint64_t u;
    double d;
    switch (f->kind) {
    case K_STR:
        if (strlen(v) >= f->len || *v == '\0') {
            surge_set_err(err, errlen, "--%s: value must have 1..%zu bytes",
                          f->name, f->len - 1);
            return SURGE_ECONFIG;
        }
        snprintf(base + f->off, f->len, "%s", v);
        return 0;
    case K_SIZE:
        if (parse_size(v, UINT64_MAX, 1, &u) < 0) {
            surge_set_err(err, errlen,
                          "--%s: '%s' is not a size (bytes, or with K, M, G)",
                          f->name, v);
            return SURGE_ECONFIG;
        }
        memcpy(base + f->off, &u, sizeof u);
        return 0;
    case K_U32: {
        if (parse_size(v, UINT32_MAX, 0, &u) < 0) {
            surge_set_err(err, errlen, "--%s: '%s' is not an integer 0..%u",
                          f->name, v, UINT32_MAX);
            return SURGE_ECONFIG;
        }
        uint32_t u32 = (uint32_t)u;
        memcpy(base + f->off, &u32, sizeof u32);
        return 0;
    }
    case K_UNSIGNED:
    case K_SIZET:
    case K_U64: {
        uint64_t max = f->kind == K_UNSIGNED ? UINT32_MAX
                       : f->kind == K_SIZET  ? SIZE_MAX
                                             : UINT64_MAX;
        if (parse_size(v, max, 0, &u) < 0) {
            surge_set_err(err, errlen, "--%s: '%s' is not an integer >= 0",
                          f->name, v);
            return SURGE_ECONFIG;
        }
        if (f->kind == K_UNSIGNED) {
            unsigned x = (unsigned)u;
            memcpy(base + f->off, &x, sizeof x);
        } else if (f->kind == K_SIZET) {
            size_t x = (size_t)u;
            memcpy(base + f->off, &x, sizeof x);
        } else {
            memcpy(base + f->off, &u, sizeof u);
        }
        return 0;
    }
    case K_REAL:
        if (surge_parse_double(v, &d) < 0) {
            surge_set_err(err, errlen, "--%s: '%s' is not a finite number",
                          f->name, v);
            return SURGE_ECONFIG;
        }
        memcpy(base + f->off, &d, sizeof d);
        return 0;
    case K_BOOL: {
        bool b;
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
            strcmp(v, "yes") == 0) {
            b = true;
        } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 ||
                   strcmp(v, "no") == 0) {
            b = false;
        } else {
            surge_set_err(err, errlen, "--%s: '%s' is not true or false",
                          f->name, v);
            return SURGE_ECONFIG;
        }
        memcpy(base + f->off, &b, sizeof b);
        return 0;
    }
    case K_SECONDS:
    case K_MS:
        if (parse_double(v, 0.0, 1e9, &d) < 0) {
            surge_set_err(err, errlen, "--%s: '%s' is not a number >= 0",
                          f->name, v);
            return SURGE_ECONFIG;
        }
        memcpy(base + f->off, &d, sizeof d);
        return 0;
    case K_SPECIAL:
        if (strcmp(f->name, "token-file") == 0) {
            return read_token_file(o, v, err, errlen);
        }
        if (strcmp(f->name, "validation-sims") == 0) {
            return parse_sim_list(o, v, err, errlen);
        }
        if (strcmp(f->name, "field-shapes") == 0) {
            return parse_field_shapes(o, v, err, errlen);
        }
        if (strcmp(f->name, "resume") == 0) {
            o->resume_default = v[0] == '\0';
            if (strlen(v) >= sizeof o->resume) {
                surge_set_err(err, errlen, "--resume: path too long");
                return SURGE_ECONFIG;
            }
            snprintf(o->resume, sizeof o->resume, "%s", v);
            return 0;
        }
        if (strcmp(f->name, "log-level") == 0) {
            int lvl = surge_log_level_parse(v);
            if (lvl < 0) {
                surge_set_err(err, errlen,
                              "--log-level: '%s' is not error, warn, info or "
                              "debug",
                              v);
                return SURGE_ECONFIG;
            }
            o->log_level = lvl;
            return 0;
        }
        break;
    }
    surge_set_err(err, errlen, "--%s: internal error", f->name);
    return SURGE_EINTERNAL;
}

int
surge_server_options_parse(surge_server_options *o, int argc, char **argv,
                           char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            surge_set_err(err, errlen, "unexpected argument '%s'", a);
            return SURGE_ECONFIG;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const struct flag *f = NULL;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++) {
            if (strlen(flags[k].name) == nlen &&
                strncmp(flags[k].name, name, nlen) == 0) {
                f = &flags[k];
                break;
            }
        }
        if (f == NULL) {
            surge_set_err(err, errlen, "unknown option '--%.*s' (see --help)",
                          (int)(nlen > 64 ? 64 : nlen), name);
            return SURGE_ECONFIG;
        }
        const char *v;
        if (eq != NULL) {
            v = eq + 1;
        } else if (strcmp(f->name, "resume") == 0 &&
                   (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)) {
            v = ""; /* --resume alone: the default checkpoint */
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            surge_set_err(err, errlen, "--%s needs a value (%s)", f->name,
                          f->arg);
            return SURGE_ECONFIG;
        }
        int rc = apply(o, f, v, err, errlen);
        if (rc < 0) {
            return rc;
        }
    }
    return surge_server_options_check(o, err, errlen);
}

int
surge_server_endpoint_is_local(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0) {
        return 1;
    }
    if (strncmp(ep, "tcp://", 6) != 0) {
        return 0;
    }
    const char *h = ep + 6;
    if (strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
        strncmp(h, "[::1]:", 6) == 0) {
        return 1;
    }
    return 0;
}

int
surge_server_options_check(const surge_server_options *o, char *err,
                           size_t errlen)
{
    if (strncmp(o->bind, "tcp://", 6) != 0 &&
        strncmp(o->bind, "ipc://", 6) != 0 &&
        strncmp(o->bind, "inproc://", 9) != 0) {
        surge_set_err(
            err, errlen,
            "--bind: '%s' is not a tcp://, ipc:// or inproc:// endpoint",
            o->bind);
        return SURGE_ECONFIG;
    }
    if (!surge_server_endpoint_is_local(o->bind) && o->token[0] == '\0') {
        surge_set_err(err, errlen,
                      "--bind: '%s' accepts peers from other machines; give a "
                      "study token (SURGE_TOKEN or --token-file) first",
                      o->bind);
        return SURGE_ECONFIG;
    }
    if (!surge_server_endpoint_is_local(o->external_bind) &&
        o->token[0] == '\0') {
        surge_set_err(err, errlen,
                      "--external-bind: '%s' accepts peers from other "
                      "machines; give a study token (SURGE_TOKEN or "
                      "--token-file) first",
                      o->external_bind);
        return SURGE_ECONFIG;
    }
    if (o->max_message_bytes < 4096 ||
        o->max_message_bytes > SURGE_MAX_PAYLOAD_BYTES) {
        surge_set_err(err, errlen,
                      "--max-message-bytes: must be 4K..2G, got %llu",
                      (unsigned long long)o->max_message_bytes);
        return SURGE_ECONFIG;
    }
    if (o->rcvhwm_bytes < 64 * KIB) {
        surge_set_err(err, errlen, "--rcvhwm-bytes: must be at least 64K");
        return SURGE_ECONFIG;
    }
    if (o->max_connections == 0) {
        surge_set_err(err, errlen, "--max-connections: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (o->max_presession_bytes < SURGE_MAX_HEADER_BYTES + 4 * KIB) {
        surge_set_err(err, errlen,
                      "--max-presession-bytes: must be at least 20K (a "
                      "hello header takes up to 16K)");
        return SURGE_ECONFIG;
    }
    if (o->max_held_bytes < 64 * KIB) {
        surge_set_err(err, errlen, "--max-held-bytes: must be at least 64K");
        return SURGE_ECONFIG;
    }
    if (o->max_joining_sims == 0) {
        surge_set_err(err, errlen, "--max-joining-sims: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (o->max_partial_bytes < 4096) {
        surge_set_err(err, errlen, "--max-partial-bytes: must be at least 4K");
        return SURGE_ECONFIG;
    }
    if (o->store_bytes < 4096) {
        surge_set_err(err, errlen, "--store-bytes: must be at least 4K");
        return SURGE_ECONFIG;
    }
    if (surge_consumer_find(o->consumer) == NULL) {
        surge_set_err(err, errlen,
                      "--consumer: unknown consumer '%s' (discard, count, "
                      "trainer, writer)",
                      o->consumer);
        return SURGE_ECONFIG;
    }
    const struct {
        const char *flag;
        double v;
        int integer;
    } tr[] = {{"max-steps", o->max_steps, 1},
              {"max-wall", o->max_wall_s, 0},
              {"steps-after-end", o->steps_after_end, 1},
              {"eval-every", o->eval_every, 1},
              {"checkpoint-every", o->checkpoint_every, 1},
              {"checkpoint-interval", o->checkpoint_interval_s, 0},
              {"progress-interval", o->progress_interval_s, 0}};
    for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++) {
        if (tr[i].v != -1 && (!(tr[i].v >= 0 && tr[i].v <= 1e15) ||
                              (tr[i].integer && tr[i].v != floor(tr[i].v)))) {
            surge_set_err(err, errlen, "--%s: must be %s >= 0", tr[i].flag,
                          tr[i].integer ? "an integer" : "a number");
            return SURGE_ECONFIG;
        }
    }
    if (o->eval_every == 0) {
        surge_set_err(err, errlen, "--eval-every: must be >= 1");
        return SURGE_ECONFIG;
    }
    if (o->batch_size == 0 || o->batch_size > 65536) {
        surge_set_err(err, errlen, "--batch-size: must be 1..65536");
        return SURGE_ECONFIG;
    }
    if (o->validation_every == 1) {
        surge_set_err(
            err, errlen,
            "--validation-every: 1 would hold out every simulation; use "
            "0 (none) or N >= 2");
        return SURGE_ECONFIG;
    }
    if (o->output_dir[0] == '\0') {
        surge_set_err(err, errlen, "--output-dir: must not be empty");
        return SURGE_ECONFIG;
    }
    if (strcmp(o->storage, "auto") != 0 && strcmp(o->storage, "host") != 0 &&
        strcmp(o->storage, "device") != 0) {
        surge_set_err(err, errlen,
                      "--reservoir-storage: unknown storage '%s' (auto, host "
                      "or device)",
                      o->storage);
        return SURGE_ECONFIG;
    }
    if (strcmp(o->prefetch, "auto") != 0 && strcmp(o->prefetch, "on") != 0 &&
        strcmp(o->prefetch, "off") != 0) {
        surge_set_err(err, errlen,
                      "--prefetch: must be auto, on or off (not '%s')",
                      o->prefetch);
        return SURGE_ECONFIG;
    }
    surge_reservoir_config rc;
    if (surge_server_reservoir_config(o, &rc) < 0) {
        surge_set_err(err, errlen,
                      "--policy: unknown policy '%s' (fifo, firo or reservoir)",
                      o->policy);
        return SURGE_ECONFIG;
    }
    /* The sample shape comes with the first hello; check the options that
     * do not depend on it now, with the smallest shape, so a bad flag is
     * named at start-up rather than at the first client. */
    rc.input_dim = 1;
    rc.output_dim = 1;
    char rerr[256];
    if (surge_reservoir_config_check(&rc, rerr, sizeof rerr) < 0) {
        surge_set_err(err, errlen, "store options: %s", rerr);
        return SURGE_ECONFIG;
    }
    return 0;
}

int
surge_server_reservoir_config(const surge_server_options *o,
                              surge_reservoir_config *out)
{
    *out = o->reservoir;
    if (surge_reservoir_policy_parse(o->policy, &out->policy) < 0) {
        return SURGE_ECONFIG;
    }
    out->capacity_bytes = (size_t)o->store_bytes;
    out->max_batch = o->batch_size;
    out->storage = strcmp(o->storage, "device") == 0
                       ? SURGE_RESERVOIR_STORAGE_DEVICE
                       : SURGE_RESERVOIR_STORAGE_HOST;
    out->input_dim = 0;
    out->output_dim = 0;
    return 0;
}

int
surge_server_is_validation(const surge_server_options *o, int64_t sim)
{
    if (o->validation_every > 0 && sim >= 0 &&
        sim % o->validation_every == o->validation_every - 1) {
        return 1;
    }
    for (size_t i = 0; i < o->nvalidation_sims; i++) {
        if (o->validation_sims[i] == sim) {
            return 1;
        }
    }
    return 0;
}
