/*
 * tests/unit/clients/test_fortran_glue.c - the C half of the Fortran module
 * (clients/fortran/glue.c) on its own, without MPI and without a server:
 * blank-padded messages as Fortran strings, the parameters and simulation
 * id from the environment (and their errors), and every check surge_f_open,
 * surge_f_send and surge_f_close make before they need MPI or a peer.
 * The paths with a server are fortran_study.sh's.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <surge/client.h>

/* glue.c's entries (only the Fortran module declares them otherwise). */
void surge_f_set_error(const char *text);
void surge_f_error(char *buf, int len);
void surge_f_strerror(int code, char *buf, int len);
int surge_f_params(double *values, int cap, int *n, int64_t *sim_id);
int surge_f_open(surge_client **out, int comm, int nfields, const char *names,
                 const int64_t *global_size, const int64_t *offset,
                 const int64_t *count, const char *endpoint, const char *token,
                 int64_t sim_id, const double *params, int nparams,
                 int timeout_ms);
int surge_f_send(surge_client *c, const char *field, int64_t step, double time,
                 const void *data, int dtype);
int surge_f_flush(surge_client *c);
int surge_f_close(surge_client **c);

/* The last detail as a C string (trailing blanks cut). */
static const char *
detail(void)
{
    static char buf[1025];
    surge_f_error(buf, 1024);
    int n = 1024;
    while (n > 0 && buf[n - 1] == ' ') {
        n--;
    }
    buf[n] = '\0';
    return buf;
}

static void
test_messages_are_blank_padded(void **state)
{
    (void)state;
    char buf[8];
    surge_f_set_error("abc");
    surge_f_error(buf, (int)sizeof buf);
    assert_memory_equal(buf, "abc     ", 8);
    /* Longer than the Fortran string: cut, never overrun. */
    surge_f_set_error("0123456789");
    memset(buf, 'x', sizeof buf);
    surge_f_error(buf, 4);
    assert_memory_equal(buf, "0123xxxx", 8);

    char text[200];
    surge_f_strerror(SURGE_ETIMEDOUT, text, (int)sizeof text);
    const char *want = surge_strerror(SURGE_ETIMEDOUT);
    assert_memory_equal(text, want, strlen(want));
    assert_int_equal(text[sizeof text - 1], ' ');
}

static void
test_params_from_the_environment(void **state)
{
    (void)state;
    double v[4] = {0};
    int n = -1;
    int64_t sim = -1;
    setenv("SURGE_PARAMS", "1.5,-2,3e2", 1);
    setenv("SURGE_SIM_ID", "7", 1);
    assert_int_equal(surge_f_params(v, 4, &n, &sim), 0);
    assert_int_equal(n, 3);
    assert_int_equal(sim, 7);
    assert_true(v[0] == 1.5 && v[1] == -2 && v[2] == 300);

    /* Too small an array: what fits is copied, and the call says so. */
    memset(v, 0, sizeof v);
    assert_int_equal(surge_f_params(v, 2, &n, &sim), SURGE_ELIMIT);
    assert_int_equal(n, 3);
    assert_true(v[0] == 1.5 && v[1] == -2 && v[2] == 0);
    assert_non_null(strstr(detail(), "holds only 2"));

    setenv("SURGE_PARAMS", "1,x", 1);
    assert_int_equal(surge_f_params(v, 4, &n, &sim), SURGE_ECONFIG);
    assert_non_null(strstr(detail(), "SURGE_PARAMS"));
    unsetenv("SURGE_PARAMS");
    unsetenv("SURGE_SIM_ID");
}

static void
test_open_checks_before_mpi(void **state)
{
    (void)state;
    surge_client *c = NULL;
    char names[65] = "u";
    int64_t g = 4;
    int64_t off = 0;
    int64_t cnt = 4;
    double p = 1;
    assert_int_equal(
        surge_f_open(&c, 0, 0, names, &g, &off, &cnt, "", "", -1, &p, -1, 0),
        SURGE_ECONFIG);
    assert_non_null(strstr(detail(), "0 fields declared"));
    assert_int_equal(
        surge_f_open(&c, 0, 65, names, &g, &off, &cnt, "", "", -1, &p, -1, 0),
        SURGE_ECONFIG);
    assert_int_equal(
        surge_f_open(&c, 0, 1, names, &g, &off, &cnt, "", "", -1, &p, 65, 0),
        SURGE_ECONFIG);
    assert_non_null(strstr(detail(), "65 params"));
    /* This test never calls MPI_Init: open must say so, not crash. */
    assert_int_equal(
        surge_f_open(&c, 0, 1, names, &g, &off, &cnt, "", "", -1, &p, -1, 0),
        SURGE_ECONFIG);
    assert_non_null(strstr(detail(), "MPI is not initialized"));
    assert_null(c);
}

static void
test_calls_on_a_closed_client(void **state)
{
    (void)state;
    float u[4] = {0};
    assert_int_equal(surge_f_send(NULL, "u", 1, 0.0, u, SURGE_FLOAT32),
                     SURGE_ESTATE);
    assert_non_null(strstr(detail(), "not open"));
    assert_int_equal(surge_f_flush(NULL), SURGE_ESTATE);
    surge_client *c = NULL;
    assert_int_equal(surge_f_close(&c), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_are_blank_padded),
        cmocka_unit_test(test_params_from_the_environment),
        cmocka_unit_test(test_open_checks_before_mpi),
        cmocka_unit_test(test_calls_on_a_closed_client),
    };
    return cmocka_run_group_tests_name("fortran_glue", tests, NULL, NULL);
}
