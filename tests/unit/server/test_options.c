/*
 * tests/unit/server/test_options.c - `surge serve` options: defaults,
 * strict parsing with the flag named in every error, sizes, the token
 * rules for non-loopback binds, validation sims; --help gives the
 * reservoir's defaults from its table of keys.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include <surge/error.h>

#include "common/keytab.h"
#include "reservoir/reservoir.h"
#include "server/options.h"

static char err[512];

static int
parse(surge_server_options *o, int argc, char **argv)
{
    err[0] = '\0';
    surge_server_options_init(o);
    o->token[0] = '\0';
    return surge_server_options_parse(o, argc, argv, err, sizeof err);
}

#define ARGV(...) ((char *[]){"serve", __VA_ARGS__, NULL})
#define ARGC(...)                                                              \
    ((int)(sizeof((char *[]){"serve", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(o, ...) parse((o), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void
defaults(void **state)
{
    (void)state;
    surge_server_options o;
    char *argv[] = {"serve", NULL};
    assert_int_equal(parse(&o, 1, argv), 0);
    assert_string_equal(o.bind, "tcp://127.0.0.1:*");
    assert_string_equal(o.policy, "fifo");
    assert_string_equal(o.consumer, "discard");
    assert_int_equal(o.max_partial_bytes, 256u << 20);
    assert_string_equal(o.output_dir, ".");
}

static void
values_and_sizes(void **state)
{
    (void)state;
    surge_server_options o;
    assert_int_equal(PARSE(&o, "--max-partial-bytes", "64M", "--store-bytes=2G",
                           "--batch-size", "32", "--sim-timeout", "2.5",
                           "--validation-every", "5", "--validation-sims",
                           "3,17", "--checksum-log", "/tmp/x"),
                     0);
    assert_int_equal(o.max_partial_bytes, 64u << 20);
    assert_int_equal(o.store_bytes, UINT64_C(2) << 30);
    assert_int_equal(o.batch_size, 32);
    assert_true(o.sim_timeout_s == 2.5);
    assert_string_equal(o.checksum_log, "/tmp/x");
    assert_true(surge_server_is_validation(&o, 4));
    assert_true(surge_server_is_validation(&o, 9));
    assert_true(surge_server_is_validation(&o, 3));
    assert_true(surge_server_is_validation(&o, 17));
    assert_false(surge_server_is_validation(&o, 0));
    assert_false(surge_server_is_validation(&o, 5));
    assert_int_equal(PARSE(&o, "--store-bytes", "1KiB"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--store-bytes"));
    assert_int_equal(PARSE(&o, "--store-bytes", "4KiB"), 0);
    assert_int_equal(o.store_bytes, 4096);
}

static void
errors_name_the_flag(void **state)
{
    (void)state;
    surge_server_options o;
    assert_int_equal(PARSE(&o, "--bogus", "1"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "unknown option '--bogus'"));
    assert_int_equal(PARSE(&o, "--batch-size"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--batch-size needs a value"));
    assert_int_equal(PARSE(&o, "--batch-size", "12x"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--batch-size: '12x'"));
    assert_int_equal(PARSE(&o, "--batch-size", "-1"), SURGE_ECONFIG);
    assert_int_equal(PARSE(&o, "--batch-size", "0"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--batch-size"));
    assert_int_equal(PARSE(&o, "--sim-timeout", "nan"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--sim-timeout"));
    assert_int_equal(PARSE(&o, "--max-partial-bytes", "10Q"), SURGE_ECONFIG);
    assert_int_equal(PARSE(&o, "--policy", "lifo"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--policy: unknown policy 'lifo'"));
    assert_int_equal(PARSE(&o, "--consumer", "x"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--consumer"));
    assert_int_equal(PARSE(&o, "--log-level", "loud"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--log-level"));
    assert_int_equal(PARSE(&o, "--validation-sims", "1,x"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "'x' is not a simulation id"));
    assert_int_equal(PARSE(&o, "--validation-every", "1"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--validation-every"));
    assert_int_equal(PARSE(&o, "stray"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "unexpected argument 'stray'"));
    assert_int_equal(PARSE(&o, "--field-shapes", "u=64x"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--field-shapes: 'u=64x'"));
    assert_int_equal(PARSE(&o, "--field-shapes", "u=64,=3"), SURGE_ECONFIG);
    assert_int_equal(PARSE(&o, "--field-shapes", "u=0"), SURGE_ECONFIG);
    assert_int_equal(PARSE(&o, "--help"), 1);
}

/* --field-shapes: each field's declared shape, looked up by name. */
static void
field_shapes(void **state)
{
    (void)state;
    surge_server_options o;
    assert_int_equal(
        PARSE(&o, "--field-shapes", "temperature=64x32,u=2000,v=2x3x4"), 0);
    uint64_t d[8];
    assert_int_equal(surge_server_field_shape(&o, "temperature", d, 8), 2);
    assert_true(d[0] == 64 && d[1] == 32);
    assert_int_equal(surge_server_field_shape(&o, "u", d, 8), 1);
    assert_true(d[0] == 2000);
    assert_int_equal(surge_server_field_shape(&o, "v", d, 8), 3);
    assert_int_equal(surge_server_field_shape(&o, "w", d, 8), 0);
}

/* The limits against broken or hostile peers (issue 9). */
static void
peer_limits(void **state)
{
    (void)state;
    surge_server_options o;
    char *argv[] = {"serve", NULL};
    assert_int_equal(parse(&o, 1, argv), 0);
    assert_int_equal(o.max_connections, 2048);
    assert_int_equal(o.max_presession_bytes, 64u << 10);
    assert_int_equal(o.max_held_bytes, 64u << 20);
    assert_true(o.join_timeout_s == 120.0);
    assert_int_equal(o.max_joining_sims, 1024);
    assert_int_equal(PARSE(&o, "--max-connections", "1100",
                           "--max-presession-bytes", "32K", "--max-held-bytes",
                           "1M", "--join-timeout", "0", "--max-joining-sims",
                           "3"),
                     0);
    assert_int_equal(o.max_connections, 1100);
    assert_int_equal(o.max_presession_bytes, 32u << 10);
    assert_int_equal(o.max_held_bytes, 1u << 20);
    assert_true(o.join_timeout_s == 0.0);
    assert_int_equal(o.max_joining_sims, 3);
    assert_int_equal(PARSE(&o, "--max-connections", "0"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--max-connections"));
    assert_int_equal(PARSE(&o, "--max-presession-bytes", "16K"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--max-presession-bytes"));
    assert_int_equal(PARSE(&o, "--max-held-bytes", "1K"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--max-held-bytes"));
    assert_int_equal(PARSE(&o, "--max-joining-sims", "0"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--max-joining-sims"));
    assert_int_equal(PARSE(&o, "--join-timeout", "-1"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--join-timeout"));
}

static void
reservoir_options(void **state)
{
    (void)state;
    surge_server_options o;
    assert_int_equal(PARSE(&o, "--policy", "reservoir", "--watermark", "10",
                           "--seed", "7", "--max-uses", "3", "--balance-sims",
                           "true", "--samples-per-insert", "2",
                           "--rate-min-diff", "-100", "--rate-max-diff", "100"),
                     0);
    surge_reservoir_config rc;
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    assert_int_equal(rc.policy, SURGE_RESERVOIR_RESERVOIR);
    assert_int_equal(rc.watermark, 10);
    assert_int_equal(rc.seed, 7);
    assert_int_equal(rc.max_uses, 3);
    assert_true(rc.balance_sims);
    assert_true(rc.rate.samples_per_insert == 2.0);
    assert_true(rc.rate.min_diff == -100.0);
    assert_int_equal(rc.capacity_bytes, o.store_bytes);
    assert_int_equal(rc.max_batch, o.batch_size);
    assert_int_equal(PARSE(&o, "--policy", "firo", "--epochs", "3"), 0);
    /* Combinations the reservoir refuses are named by its option key. */
    assert_int_equal(PARSE(&o, "--epochs", "2"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.epochs"));
    assert_int_equal(PARSE(&o, "--policy", "fifo", "--balance-sims", "1"),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.balance_sims"));
    assert_int_equal(PARSE(&o, "--policy", "reservoir", "--prioritized", "yes",
                           "--priority-alpha", "2"),
                     SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.prioritized.alpha"));
    assert_int_equal(PARSE(&o, "--balance-sims", "maybe"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--balance-sims: 'maybe'"));
    assert_int_equal(PARSE(&o, "--samples-per-insert", "inf"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--samples-per-insert"));
    /* Storage and the trainer's feed. */
    assert_int_equal(PARSE(&o, "--policy", "fifo"), 0);
    assert_string_equal(o.storage, "auto");
    assert_string_equal(o.prefetch, "auto");
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    assert_int_equal(rc.storage, SURGE_RESERVOIR_STORAGE_HOST);
    assert_int_equal(PARSE(&o, "--reservoir-storage", "host", "--prefetch",
                           "on", "--reservoir-device", "0"),
                     0);
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    assert_int_equal(rc.storage, SURGE_RESERVOIR_STORAGE_HOST);
    assert_int_equal(PARSE(&o, "--reservoir-storage", "gpu"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--reservoir-storage: unknown storage 'gpu'"));
    assert_int_equal(PARSE(&o, "--prefetch", "always"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--prefetch"));
#ifdef HAVE_CUDA
    assert_int_equal(PARSE(&o, "--reservoir-storage", "device"), 0);
    assert_int_equal(surge_server_reservoir_config(&o, &rc), 0);
    assert_int_equal(rc.storage, SURGE_RESERVOIR_STORAGE_DEVICE);
#else
    /* A build without CUDA says so at start-up. */
    assert_int_equal(PARSE(&o, "--reservoir-storage", "device"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "reservoir.storage: device needs a build "
                                "with CUDA"));
#endif
}

static void
bind_needs_token_off_loopback(void **state)
{
    (void)state;
    surge_server_options o;
    assert_int_equal(PARSE(&o, "--bind", "tcp://0.0.0.0:5555"), SURGE_ECONFIG);
    assert_non_null(strstr(err, "study token"));
    assert_int_equal(PARSE(&o, "--bind", "udp://x"), SURGE_ECONFIG);
    assert_int_equal(PARSE(&o, "--bind", "ipc:///tmp/s"), 0);
    assert_int_equal(PARSE(&o, "--bind", "tcp://127.0.0.1:9"), 0);
    assert_int_equal(PARSE(&o, "--bind", "tcp://localhost:9"), 0);
    char path[] = "/tmp/surge-token-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cret\n", 7), 7);
    close(fd);
    assert_int_equal(
        PARSE(&o, "--token-file", path, "--bind", "tcp://0.0.0.0:5555"), 0);
    assert_string_equal(o.token, "s3cret");
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    assert_int_equal(PARSE(&o, "--token-file", path), SURGE_ECONFIG);
    assert_non_null(strstr(err, "--token-file"));
    unlink(path);
    assert_int_equal(PARSE(&o, "--token-file", path), SURGE_ECONFIG);
    assert_non_null(strstr(err, "cannot open"));
}

/* The --help text, malloc'ed. */
static char *
usage_text(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    surge_server_options_usage(f);
    fclose(f);
    return buf;
}

static void
usage_lists_every_flag(void **state)
{
    (void)state;
    char *buf = usage_text();
    const char *flags[] = {
        "--bind",         "--token-file",        "--output-dir",
        "--checksum-log", "--max-partial-bytes", "--sim-timeout",
        "--policy",       "--store-bytes",       "--validation-every",
        "--consumer",     "--batch-size",        "--stop-timeout",
        "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        assert_non_null(strstr(buf, flags[i]));
    }
    free(buf);
}

/* The text of flag's entry in the usage text u, on one line (the
 * wrapping undone), into out. */
static void
usage_entry(const char *u, const char *flag, char *out, size_t cap)
{
    char head[64];
    snprintf(head, sizeof head, "\n  %s ", flag);
    const char *p = strstr(u, head);
    if (p == NULL) {
        fail_msg("--help has no %s", flag);
    }
    p += 1;
    const char *end = strstr(p, "\n  --");
    size_t o = 0;
    for (; p < end && o + 1 < cap; p++) {
        if (*p == '\n' || (*p == ' ' && o > 0 && out[o - 1] == ' ')) {
            if (o > 0 && out[o - 1] != ' ') {
                out[o++] = ' ';
            }
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

/* Each reservoir flag's "(default X)" is its key's default in the
 * reservoir's table (reservoir/config.c), not a copy in the help. */
static void
usage_defaults_come_from_the_table(void **state)
{
    (void)state;
    static const struct {
        const char *flag;
        const char *key;
    } pairs[] = {
        {"--seed", "seed"},
        {"--epochs", "epochs"},
        {"--max-uses", "max_uses"},
        {"--samples-per-insert", "rate.samples_per_insert"},
        {"--rate-min-diff", "rate.min_diff"},
        {"--rate-max-diff", "rate.max_diff"},
        {"--balance-sims", "balance_sims"},
        {"--prioritized", "prioritized.enabled"},
        {"--priority-alpha", "prioritized.alpha"},
        {"--priority-beta", "prioritized.beta"},
        {"--priority-epsilon", "prioritized.epsilon"},
        {"--reservoir-device", "device"},
    };
    char *buf = usage_text();
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const struct surge_key *k =
            surge_keytab_find(surge_reservoir_keys, pairs[i].key);
        assert_non_null(k);
        assert_non_null(k->def);
        char entry[1024];
        usage_entry(buf, pairs[i].flag, entry, sizeof entry);
        const char *d = strstr(entry, "(default ");
        if (d == NULL) {
            fail_msg("%s: no default in '%s'", pairs[i].flag, entry);
        }
        d += strlen("(default ");
        char shown[64];
        snprintf(shown, sizeof shown, "%.*s", (int)strcspn(d, ")"), d);
        if (k->type == SURGE_KEY_BOOL) {
            assert_string_equal(shown, k->def);
        } else if (strtod(shown, NULL) != strtod(k->def, NULL)) {
            fail_msg("%s: --help says %s, reservoir.%s's default is %s",
                     pairs[i].flag, shown, k->name, k->def);
        }
    }
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(values_and_sizes),
        cmocka_unit_test(errors_name_the_flag),
        cmocka_unit_test(peer_limits),
        cmocka_unit_test(reservoir_options),
        cmocka_unit_test(bind_needs_token_off_loopback),
        cmocka_unit_test(usage_lists_every_flag),
        cmocka_unit_test(usage_defaults_come_from_the_table),
        cmocka_unit_test(field_shapes),
    };
    return cmocka_run_group_tests_name("server_options", tests, NULL, NULL);
}
