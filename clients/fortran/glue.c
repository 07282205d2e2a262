/*
 * clients/fortran/glue.c - the C half of the Fortran module `surge`
 * (clients/fortran/surge.f90): what ISO_C_BINDING cannot do by itself.
 *
 * DESIGN. The Fortran side passes plain C types only (ints, int64s,
 * doubles, NUL-terminated names packed in a char buffer); this file builds
 * the surge_client_options and surge_field structures from them against
 * the installed header, so the Fortran module never mirrors a C struct and
 * cannot drift from it when the structs grow. The communicator arrives as
 * a Fortran handle (MPI_Fint) and is converted with MPI_Comm_f2c, which
 * works for `use mpi`, `use mpi_f08` (comm%MPI_VAL) and `mpif.h` alike.
 *
 * Errors: every entry returns 0 or a negative code from surge/error.h; the
 * detail of the last failure on this thread is kept here, so the Fortran
 * routine surge_error_message has one place to read it whatever failed
 * (options, open, send, close, or a check done on the Fortran side).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <mpi.h>

#include <surge/client.h>
#include <surge/client_mpi.h>

/* Names are packed by the Fortran side in slots of this many bytes (64
 * characters of name plus the NUL), the protocol's limit on a name. */
#define NAME_SLOT 65
#define MAX_FIELDS 64
#define MAX_PARAMS 64

/* The entries, declared here because only the Fortran module calls them
 * (through its interface block in surge.f90, which must match these). */
SURGE_API void surge_f_set_error(const char *text);
SURGE_API void surge_f_error(char *buf, int len);
SURGE_API void surge_f_strerror(int code, char *buf, int len);
SURGE_API int surge_f_params(double *values, int cap, int *n, int64_t *sim_id);
SURGE_API int surge_f_open(surge_client **out, int comm, int nfields,
                           const char *names, const int64_t *global_size,
                           const int64_t *offset, const int64_t *count,
                           const char *endpoint, const char *token,
                           int64_t sim_id, const double *params, int nparams,
                           int timeout_ms);
SURGE_API int surge_f_send(surge_client *c, const char *field, int64_t step,
                           double time, const void *data, int dtype);
SURGE_API int surge_f_flush(surge_client *c);
SURGE_API int surge_f_close(surge_client **c);
SURGE_API void surge_f_abort(surge_client **c);

static _Thread_local char g_detail[1024]; /* last failure's detail */

static int
fail(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_detail, sizeof g_detail, fmt, ap);
    va_end(ap);
    return rc;
}

static int
fail_text(int rc, const char *text)
{
    if (text == NULL || text[0] == '\0') {
        text = surge_strerror(rc);
    }
    return fail(rc, "%s", text);
}

/* surge_f_set_error - record a failure detected on the Fortran side. */
SURGE_API void
surge_f_set_error(const char *text)
{
    snprintf(g_detail, sizeof g_detail, "%s", text != NULL ? text : "");
}

/* surge_f_error - copy the last failure's detail into buf (len bytes,
 * blank-padded as Fortran strings are, not NUL-terminated). */
SURGE_API void
surge_f_error(char *buf, int len)
{
    if (buf == NULL || len <= 0) {
        return;
    }
    size_t n = strlen(g_detail);
    if (n > (size_t)len) {
        n = (size_t)len;
    }
    memcpy(buf, g_detail, n);
    memset(buf + n, ' ', (size_t)len - n);
}

/* surge_f_strerror - the text of a code, blank-padded into buf. */
SURGE_API void
surge_f_strerror(int code, char *buf, int len)
{
    if (buf == NULL || len <= 0) {
        return;
    }
    const char *t = surge_strerror(code);
    size_t n = strlen(t);
    if (n > (size_t)len) {
        n = (size_t)len;
    }
    memcpy(buf, t, n);
    memset(buf + n, ' ', (size_t)len - n);
}

/* surge_f_params - the parameter values and the simulation id that the
 * launcher passed (SURGE_PARAMS, SURGE_SIM_ID): up to cap values into
 * values, their number into *n (it may exceed cap: then only cap were
 * copied and the call fails with SURGE_ELIMIT). */
SURGE_API int
surge_f_params(double *values, int cap, int *n, int64_t *sim_id)
{
    surge_client_options o;
    int rc = surge_client_options_init(&o);
    if (rc != 0) {
        return fail_text(rc, surge_client_options_error());
    }
    *n = (int)o.nparams;
    *sim_id = o.sim_id;
    size_t k = o.nparams < (size_t)(cap > 0 ? cap : 0)
                   ? o.nparams
                   : (size_t)(cap > 0 ? cap : 0);
    if (k > 0) {
        memcpy(values, o.params, k * sizeof *values);
    }
    if (o.nparams > k) {
        return fail(SURGE_ELIMIT,
                    "SURGE_PARAMS has %zu values; the array holds only %d",
                    o.nparams, cap);
    }
    return 0;
}

/* surge_f_open - surge_client_open for Fortran. names holds nfields slots
 * of NAME_SLOT bytes, each a NUL-terminated name. endpoint and token are
 * NUL-terminated; "" keeps what the environment says. sim_id < 0 and
 * nparams < 0 likewise; timeout_ms <= 0 keeps the default. */
SURGE_API int
surge_f_open(surge_client **out, int comm, int nfields, const char *names,
             const int64_t *global_size, const int64_t *offset,
             const int64_t *count, const char *endpoint, const char *token,
             int64_t sim_id, const double *params, int nparams, int timeout_ms)
{
    if (nfields < 1 || nfields > MAX_FIELDS) {
        return fail(SURGE_ECONFIG, "%d fields declared; 1..%d allowed", nfields,
                    MAX_FIELDS);
    }
    if (nparams > MAX_PARAMS) {
        return fail(SURGE_ECONFIG, "%d params given; at most %d allowed",
                    nparams, MAX_PARAMS);
    }
    surge_client_options o;
    int rc = surge_client_options_init(&o);
    if (rc != 0) {
        return fail_text(rc, surge_client_options_error());
    }
    int initialized = 0;
    if (MPI_Initialized(&initialized) != MPI_SUCCESS || !initialized) {
        return fail(SURGE_ECONFIG, "MPI is not initialized: call "
                                   "MPI_Init before surge_open");
    }
    rc = surge_client_options_set_comm(&o, MPI_Comm_f2c((MPI_Fint)comm));
    if (rc != 0) {
        return fail(rc, "the communicator handle %d is not valid", comm);
    }
    surge_field fields[MAX_FIELDS] = {0}; /* members we do not set: 0 */
    for (int i = 0; i < nfields; i++) {
        if (global_size[i] < 0 || offset[i] < 0 || count[i] < 0) {
            return fail(SURGE_EBOUNDS,
                        "field %d: sizes must not be negative (global_size "
                        "%lld, offset %lld, count %lld)",
                        i + 1, (long long)global_size[i], (long long)offset[i],
                        (long long)count[i]);
        }
        fields[i].name = names + (size_t)i * NAME_SLOT;
        fields[i].global_size = (uint64_t)global_size[i];
        fields[i].offset = (uint64_t)offset[i];
        fields[i].count = (uint64_t)count[i];
    }
    o.fields = fields;
    o.nfields = (size_t)nfields;
    if (endpoint != NULL && endpoint[0] != '\0') {
        o.endpoint = endpoint;
    }
    if (token != NULL && token[0] != '\0') {
        o.token = token;
    }
    if (sim_id >= 0) {
        o.sim_id = sim_id;
    }
    if (nparams >= 0) {
        o.params = params;
        o.nparams = (size_t)nparams;
    }
    if (timeout_ms > 0) {
        o.timeout_ms = timeout_ms;
    }
    rc = surge_client_open(out, &o);
    if (rc != 0) {
        return fail_text(rc, surge_client_open_error());
    }
    g_detail[0] = '\0';
    return 0;
}

/* surge_f_send - surge_client_send; dtype is SURGE_FLOAT32/64. */
SURGE_API int
surge_f_send(surge_client *c, const char *field, int64_t step, double time,
             const void *data, int dtype)
{
    if (c == NULL) {
        return fail(SURGE_ESTATE, "surge_send: the client is not open");
    }
    int rc = surge_client_send(c, field, step, time, data, (surge_dtype)dtype);
    if (rc != 0) {
        return fail_text(rc, surge_client_last_error(c));
    }
    return 0;
}

SURGE_API int
surge_f_flush(surge_client *c)
{
    if (c == NULL) {
        return fail(SURGE_ESTATE, "surge_flush: the client is not open");
    }
    int rc = surge_client_flush(c);
    if (rc != 0) {
        return fail_text(rc, surge_client_last_error(c));
    }
    return 0;
}

/* surge_f_close - surge_client_close; *c is NULL afterwards. A client
 * that was never opened closes without error. */
SURGE_API int
surge_f_close(surge_client **c)
{
    int rc = surge_client_close(c);
    if (rc != 0) {
        return fail_text(rc, surge_client_close_error());
    }
    return 0;
}

SURGE_API void
surge_f_abort(surge_client **c)
{
    surge_client_abort(c);
}
