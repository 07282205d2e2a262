/*
 * clients/melissa/melissa.c - libsurge_melissa: Melissa's client API
 * (melissa_api.h) over libsurge.
 *
 * DESIGN. Melissa declares fields one melissa_init at a time and opens
 * nothing until data flows; libsurge declares every field in its hello.
 * So melissa_init only records the field (its local size, and its offset
 * and global size from one MPI_Exscan and one MPI_Allreduce over the
 * field's communicator: the ranks' slices follow rank order), and the
 * first melissa_send opens the surge client with all fields recorded so
 * far. Steps are counted per field, from 0, as Melissa counts them; the
 * step number is also the time input of the sample unless
 * melissa_send_with_metadata gives a "time".
 *
 * Melissa's calls return nothing, so a failure has no way back to the
 * solver: it is printed as one line on stderr ("time ERROR
 * melissa_api[rank] text") and the run is ended with MPI_Abort on the
 * field's communicator. surge launch then sees a failed run (and retries
 * it when the study allows), which is the only outcome that neither loses
 * data silently nor leaves the other ranks waiting in a collective.
 *
 * State is per process (Melissa's API has no handle); one thread calls.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include <surge/client.h>
#include <surge/client_mpi.h>

#include "melissa_api.h"

#define MAX_FIELDS 64
#define MAX_NAME 64

struct mfield {
    char name[MAX_NAME + 1]; /* NUL-terminated */
    uint64_t global;         /* elements over all ranks of comm */
    uint64_t offset;         /* this rank's first element */
    uint64_t count;          /* this rank's elements (local_vect_size) */
    int64_t step;            /* next step of this field (sends so far) */
};

static struct {
    struct mfield fields[MAX_FIELDS];
    int nfields;
    MPI_Comm comm;        /* the fields' communicator (first init's) */
    int rank;             /* rank in comm, for log lines */
    surge_client *client; /* opened by the first send */
    int finalized;        /* melissa_finalize was called */
} g = {.comm = MPI_COMM_NULL};

static void
log_line(const char *level, const char *fmt, va_list ap)
{
    char when[40] = "?";
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
        gmtime_r(&ts.tv_sec, &tm) != NULL) {
        size_t k = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + k, sizeof when - k, ".%03ldZ", ts.tv_nsec / 1000000);
    }
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    fprintf(stderr, "%s %s melissa_api[%d] %s\n", when, level, g.rank, text);
    fflush(stderr);
}

/* Report and end the run (see DESIGN). Does not return. */
__attribute__((format(printf, 1, 2), noreturn)) static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("ERROR", fmt, ap);
    va_end(ap);
    if (g.client != NULL) {
        surge_client_abort(&g.client);
    }
    MPI_Abort(g.comm != MPI_COMM_NULL ? g.comm : MPI_COMM_WORLD, 1);
    exit(1); /* MPI_Abort does not return; this keeps the promise */
}

__attribute__((format(printf, 1, 2))) static void
warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("WARN", fmt, ap);
    va_end(ap);
}

static const char *
detail(int rc, const char *text)
{
    return text != NULL && text[0] != '\0' ? text : surge_strerror(rc);
}

/* A field name as given, or NULL when it is not 1..64 bytes with its NUL
 * (Fortran callers forget the //char(0)). */
static const char *
checked_name(const char *name, const char *call)
{
    if (name == NULL) {
        die("%s: field_name is NULL", call);
    }
    size_t n = strnlen(name, MAX_NAME + 1);
    if (n == 0 || n > MAX_NAME) {
        die("%s: field_name is empty or longer than %d bytes (from Fortran, "
            "end it with //char(0))",
            call, MAX_NAME);
    }
    return name;
}

static struct mfield *
find(const char *name)
{
    for (int i = 0; i < g.nfields; i++) {
        if (strcmp(g.fields[i].name, name) == 0) {
            return &g.fields[i];
        }
    }
    return NULL;
}

MELISSA_SURGE_API void
melissa_init(const char *field_name, const int local_vect_size, MPI_Comm comm)
{
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        die("melissa_init: MPI is not initialized (call MPI_Init first)");
    }
    if (comm == MPI_COMM_NULL) {
        die("melissa_init: the communicator is MPI_COMM_NULL");
    }
    if (g.comm == MPI_COMM_NULL) {
        g.comm = comm;
    }
    MPI_Comm_rank(comm, &g.rank);
    const char *name = checked_name(field_name, "melissa_init");
    int same = MPI_UNEQUAL;
    if (MPI_Comm_compare(comm, g.comm, &same) != MPI_SUCCESS ||
        (same != MPI_IDENT && same != MPI_CONGRUENT)) {
        die("melissa_init(\"%s\"): every field must use the communicator of "
            "the first melissa_init",
            name);
    }
    if (g.finalized || g.client != NULL) {
        die("melissa_init(\"%s\"): called after %s; declare every field "
            "before the first melissa_send",
            name, g.finalized ? "melissa_finalize" : "melissa_send");
    }
    if (find(name) != NULL) {
        die("melissa_init(\"%s\"): the field was already declared", name);
    }
    if (g.nfields == MAX_FIELDS) {
        die("melissa_init(\"%s\"): more than %d fields", name, MAX_FIELDS);
    }
    if (local_vect_size < 0) {
        die("melissa_init(\"%s\"): local_vect_size %d is negative", name,
            local_vect_size);
    }
    /* Every rank reaches these collectives: the checks above give the
     * same answer on every rank of a correct program, and a rank that
     * dies aborts the whole run. */
    uint64_t local = (uint64_t)local_vect_size;
    uint64_t before = 0;
    uint64_t global = 0;
    if (MPI_Exscan(&local, &before, 1, MPI_UINT64_T, MPI_SUM, comm) !=
            MPI_SUCCESS ||
        MPI_Allreduce(&local, &global, 1, MPI_UINT64_T, MPI_SUM, comm) !=
            MPI_SUCCESS) {
        die("melissa_init(\"%s\"): MPI failed on the communicator", name);
    }
    if (g.rank == 0) {
        before = 0; /* MPI_Exscan leaves rank 0's result undefined */
    }
    if (global == 0) {
        die("melissa_init(\"%s\"): the field has no element on any rank", name);
    }
    struct mfield *f = &g.fields[g.nfields++];
    memset(f, 0, sizeof *f);
    memcpy(f->name, name, strlen(name) + 1);
    f->global = global;
    f->offset = before;
    f->count = local;
}

MELISSA_SURGE_API void
melissa_init_f(const char *field_name, int *local_vect_size, MPI_Fint *comm)
{
    if (local_vect_size == NULL || comm == NULL) {
        die("melissa_init_f: NULL argument");
    }
    melissa_init(field_name, *local_vect_size, MPI_Comm_f2c(*comm));
}

/* The simulation id when surge launch did not set SURGE_SIM_ID: Melissa's
 * MELISSA_SIMU_ID, parsed strictly. */
static void
melissa_sim_id(surge_client_options *o)
{
    if (getenv("SURGE_SIM_ID") != NULL) {
        return;
    }
    const char *v = getenv("MELISSA_SIMU_ID");
    if (v == NULL) {
        return;
    }
    char *end = NULL;
    errno = 0;
    long long id = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || id < 0) {
        die("MELISSA_SIMU_ID=\"%s\" is not a non-negative integer", v);
    }
    o->sim_id = (int64_t)id;
}

static void
open_client(void)
{
    surge_client_options o;
    int rc = surge_client_options_init(&o);
    if (rc != 0) {
        die("%s", detail(rc, surge_client_options_error()));
    }
    melissa_sim_id(&o);
    if (o.endpoint == NULL || o.endpoint[0] == '\0') {
        die("SURGE_ENDPOINT is not set: run this solver from a surge study "
            "(surge launch), which sets it");
    }
    rc = surge_client_options_set_comm(&o, g.comm);
    if (rc != 0) {
        die("MPI_Comm_rank/MPI_Comm_size failed on the fields' communicator");
    }
    surge_field fields[MAX_FIELDS] = {0}; /* members we do not set: 0 */
    for (int i = 0; i < g.nfields; i++) {
        fields[i].name = g.fields[i].name;
        fields[i].global_size = g.fields[i].global;
        fields[i].offset = g.fields[i].offset;
        fields[i].count = g.fields[i].count;
    }
    o.fields = fields;
    o.nfields = (size_t)g.nfields;
    rc = surge_client_open(&g.client, &o);
    if (rc != 0) {
        die("%s", detail(rc, surge_client_open_error()));
    }
}

static void
send_step(const char *call, const char *field_name, const double *send_vect,
          const double *time)
{
    const char *name = checked_name(field_name, call);
    if (g.finalized) {
        die("%s(\"%s\"): called after melissa_finalize", call, name);
    }
    struct mfield *f = find(name);
    if (f == NULL) {
        die("%s(\"%s\"): the field was not declared with melissa_init", call,
            name);
    }
    if (f->count > 0 && send_vect == NULL) {
        die("%s(\"%s\"): send_vect is NULL", call, name);
    }
    if (g.client == NULL) {
        open_client();
    }
    double t = time != NULL ? *time : (double)f->step;
    int rc =
        surge_client_send(g.client, name, f->step, t, send_vect, SURGE_FLOAT64);
    if (rc != 0) {
        die("%s(\"%s\") step %" PRId64 ": %s", call, name, f->step,
            detail(rc, surge_client_last_error(g.client)));
    }
    f->step++;
}

MELISSA_SURGE_API void
melissa_send(const char *field_name, const double *send_vect)
{
    send_step("melissa_send", field_name, send_vect, NULL);
}

MELISSA_SURGE_API void
melissa_send_with_metadata(const char *field_name, const double *send_vect,
                           const char *metadata_json)
{
    if (metadata_json == NULL) {
        die("melissa_send_with_metadata: metadata_json is NULL");
    }
    json_error_t err;
    json_t *meta = json_loads(metadata_json, JSON_REJECT_DUPLICATES, &err);
    if (meta == NULL || !json_is_object(meta)) {
        json_decref(meta);
        die("melissa_send_with_metadata: metadata_json is not a JSON "
            "object%s%s",
            meta == NULL ? ": " : "", meta == NULL ? err.text : "");
    }
    json_t *jt = json_object_get(meta, "time");
    double t = 0;
    int have_time = 0;
    if (jt != NULL) {
        if (!json_is_number(jt)) {
            json_decref(meta);
            die("melissa_send_with_metadata: \"time\" is not a number");
        }
        t = json_number_value(jt);
        have_time = 1;
    }
    json_decref(meta);
    send_step("melissa_send_with_metadata", field_name, send_vect,
              have_time ? &t : NULL);
}

MELISSA_SURGE_API void
melissa_finalize(void)
{
    if (g.finalized) {
        return;
    }
    g.finalized = 1;
    if (g.client == NULL) {
        if (g.nfields > 0) {
            warn("melissa_finalize: no step was sent (%d field(s) declared)",
                 g.nfields);
        }
        return;
    }
    /* A field sent fewer times than another leaves steps without it: the
     * server cannot assemble them and counts them dropped. Say so here,
     * where the solver's author will look. */
    for (int i = 1; i < g.nfields; i++) {
        if (g.fields[i].step != g.fields[0].step) {
            warn("melissa_finalize: field \"%s\" was sent %" PRId64
                 " times but \"%s\" %" PRId64
                 " times; steps missing a field are dropped",
                 g.fields[i].name, g.fields[i].step, g.fields[0].name,
                 g.fields[0].step);
        }
    }
    int rc = surge_client_close(&g.client);
    if (rc != 0) {
        die("melissa_finalize: %s", detail(rc, surge_client_close_error()));
    }
}
