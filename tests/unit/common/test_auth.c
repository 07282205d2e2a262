/*
 * tests/unit/common/test_auth.c - run keys (known answers computed with
 * Python's hmac module), constant-time comparison, CURVE key files
 * (generated, loaded, refused when unsafe or malformed) and the ZAP
 * decision.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "common/auth.h"
#include "surge/error.h"

static char dir[64];
static char path[128];
static char err[512];

/* hmac.new(token, b"surge run key v1 sim=%d" % sim, sha256).hexdigest() */
static void
run_key_known_answers(void **state)
{
    (void)state;
    char k[SURGE_RUN_KEY_HEX + 1];
    assert_int_equal(surge_run_key("secret", 3, k), 0);
    assert_string_equal(k, "65876a87add0540aa9e9bbe69abe5c99"
                           "9ff3fa3aab5f47728a5ca480a64e8c1b");
    assert_int_equal(surge_run_key("", 0, k), 0);
    assert_string_equal(k, "775c66dd5240f8148e194e3e7fb300cf"
                           "0e7a48cca5ab931a4522801869e2f847");
    char longtok[129];
    memset(longtok, 'k', 128);
    longtok[128] = '\0';
    assert_int_equal(surge_run_key(longtok, INT64_MAX, k), 0);
    assert_string_equal(k, "7d66eeabd8d4a6360c78e010db218100"
                           "fea5169badd5ab6f9a747fbd3b1d7917");
    /* Each run's key differs from its neighbours'. */
    char k4[SURGE_RUN_KEY_HEX + 1];
    assert_int_equal(surge_run_key("secret", 4, k4), 0);
    assert_string_not_equal(k, k4);
    assert_int_equal(surge_run_key("secret", -1, k), -EINVAL);
    assert_int_equal(surge_run_key(NULL, 1, k), -EINVAL);
}

static void
ct_equal(void **state)
{
    (void)state;
    assert_true(surge_ct_equal("abc", 3, "abc", 3));
    assert_false(surge_ct_equal("abd", 3, "abc", 3));
    assert_false(surge_ct_equal("ab", 2, "abc", 3));
    assert_false(surge_ct_equal("abcd", 4, "abc", 3));
    assert_false(surge_ct_equal("abc", 3, "", 0));
    assert_true(surge_ct_equal("", 0, "", 0));
    /* A prefix of the secret followed by a NUL is not the secret. */
    assert_false(surge_ct_equal("ab\0", 3, "abc", 3));
}

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/surge-test-auth-XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    static const char *const names[] = {"server.key", "client.key", "k",
                                        "keys/server.key", "keys/client.key"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/keys", dir);
    rmdir(path);
    return rmdir(dir);
}

static void
write_file(const char *text, mode_t mode)
{
    snprintf(path, sizeof path, "%s/k", dir);
    unlink(path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

/* Generated files: mode 0600 in a 0700 folder, and they load as a
 * matching pair: the client's server key is the server's public key, the
 * server accepts the client's public key (and nothing else). */
static void
key_files_generated_and_loaded(void **state)
{
    (void)state;
    char keys[96];
    struct stat sb;
    surge_curve_keys s, c;
    snprintf(keys, sizeof keys, "%s/keys", dir);
    assert_int_equal(surge_curve_keys_generate(keys, err, sizeof err), 0);
    assert_int_equal(stat(keys, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    snprintf(path, sizeof path, "%s/server.key", keys);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(surge_curve_keys_load(path, 1, &s, err, sizeof err), 0);
    /* A server file is not a client file. */
    assert_int_equal(surge_curve_keys_load(path, 0, &c, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "role = client"));
    snprintf(path, sizeof path, "%s/client.key", keys);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &c, err, sizeof err), 0);
    assert_string_equal(c.server_key, s.public_key);
    assert_int_equal(s.nclients, 1);
    uint8_t bin[32];
    assert_non_null(zmq_z85_decode(bin, c.public_key));
    assert_true(surge_curve_zap_ok(&s, "CURVE", 5, bin, 32));
    assert_false(surge_curve_zap_ok(&s, "NULL", 4, bin, 32));
    assert_false(surge_curve_zap_ok(&s, "CURVE", 5, bin, 31));
    bin[7] ^= 1;
    assert_false(surge_curve_zap_ok(&s, "CURVE", 5, bin, 32));
}

static void
key_files_refused(void **state)
{
    (void)state;
    char pub[41], sec[41], pub2[41], sec2[41], text[1024];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_int_equal(zmq_curve_keypair(pub2, sec2), 0);
    snprintf(text, sizeof text,
             "# comment\n\nrole = client\npublic = %s\nsecret = %s\n"
             "server = %s\n",
             pub, sec, pub2);
    surge_curve_keys k;
    write_file(text, 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err), 0);
    /* Readable by the group: refused, naming the fix. */
    write_file(text, 0640);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "chmod 600"));
    /* A public key that is not the secret key's. */
    snprintf(text, sizeof text,
             "role = client\npublic = %s\nsecret = %s\nserver = %s\n", pub2,
             sec, pub2);
    write_file(text, 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "not the secret key's"));
    /* Bad lines name the line. */
    write_file("role = client\npublic = short\n", 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, ":2: not a 40-character Z85 key"));
    write_file("role = client\ncolour = blue\n", 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, ":2: unknown name"));
    write_file("role client\n", 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, ":1: not 'name = value'"));
    /* A server file without client keys lets nobody in: refused. */
    snprintf(text, sizeof text, "role = server\npublic = %s\nsecret = %s\n",
             pub, sec);
    write_file(text, 0600);
    assert_int_equal(surge_curve_keys_load(path, 1, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "needs a client key"));
    /* Missing file, and a folder instead of a file. */
    assert_int_equal(
        surge_curve_keys_load("/nonexistent/k", 0, &k, err, sizeof err),
        SURGE_ECONFIG);
    assert_non_null(strstr(err, "/nonexistent/k"));
    assert_int_equal(surge_curve_keys_load(dir, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    /* A symbolic link is not followed. */
    char link[160];
    snprintf(link, sizeof link, "%s/link", dir);
    write_file(text, 0600);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(surge_curve_keys_load(link, 1, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "symbolic link"));
    unlink(link);
    /* Too large. */
    char big[SURGE_CURVE_FILE_MAX + 64];
    memset(big, '#', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_file(big, 0600);
    assert_int_equal(surge_curve_keys_load(path, 0, &k, err, sizeof err),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "larger than"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(run_key_known_answers),
        cmocka_unit_test(ct_equal),
        cmocka_unit_test_setup_teardown(key_files_generated_and_loaded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(key_files_refused, setup, teardown),
    };
    return cmocka_run_group_tests_name("common/auth", tests, NULL, NULL);
}
