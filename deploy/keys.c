/* deploy/keys.c - `surge keys`: the credentials of a study by hand, for
 * servers and clients started without `surge launch` (docs/protocol.md,
 * "Trust").
 *
 *   surge keys run-key SIM   the run key of simulation SIM, from the study
 *                            token in $SURGE_TOKEN (never on a command line)
 *   surge keys curve DIR     a CURVE key pair for the server and one for the
 *                            clients: DIR/server.key (for `surge serve
 *                            --curve-keys`) and DIR/client.key (for
 *                            SURGE_CURVE_KEYS), both mode 0600
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/protocol.h"
#include "common/util.h"
#include "deploy/keys.h"

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: surge keys run-key SIM\n"
            "       surge keys curve DIR\n\n"
            "  run-key SIM  print the run key of simulation SIM (what `surge "
            "launch`\n"
            "               gives each run as SURGE_RUN_KEY), from the study "
            "token\n"
            "               in $SURGE_TOKEN\n"
            "  curve DIR    write DIR/server.key (surge serve --curve-keys) "
            "and\n"
            "               DIR/client.key (SURGE_CURVE_KEYS): fresh CURVE "
            "key\n"
            "               pairs, mode 0600, DIR created with mode 0700\n");
}

int
surge_keys_main(int argc, char **argv)
{
    if (argc == 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "run-key") == 0) {
        int64_t sim;
        char key[SURGE_RUN_KEY_HEX + 1];
        const char *token = getenv("SURGE_TOKEN");
        if (surge_parse_int64(argv[2], &sim) != 0 || sim < 0) {
            fprintf(stderr, "surge keys: SIM '%s' is not an integer >= 0\n",
                    argv[2]);
            return 2;
        }
        if (token == NULL || token[0] == '\0' ||
            strlen(token) > SURGE_MAX_TOKEN) {
            fprintf(stderr, "surge keys: set SURGE_TOKEN to the study token "
                            "(1..128 bytes)\n");
            return 2;
        }
        if (surge_run_key(token, sim, key) != 0) {
            fprintf(stderr, "surge keys: cannot compute the run key\n");
            return 1;
        }
        printf("%s\n", key);
        return 0;
    }
    if (strcmp(argv[1], "curve") == 0) {
        char err[512];
        if (surge_curve_keys_generate(argv[2], err, sizeof err) != 0) {
            fprintf(stderr, "surge keys: %s\n", err);
            return 1;
        }
        printf("%s/server.key\n%s/client.key\n", argv[2], argv[2]);
        return 0;
    }
    fprintf(stderr, "surge keys: unknown action '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
