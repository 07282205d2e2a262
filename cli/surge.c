/*
 * cli/surge.c - `surge`, the one program users run: dispatches to the
 * subcommands (serve, launch, top, predict, ...). Each subcommand parses its
 * own flags; this file only picks it and prints the overall usage.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <surge/client.h>

#include "cli/top.h"
#include "deploy/keys.h"
#include "deploy/launch.h"
#include "server/server.h"
#include "trainer/predict.h"

struct command {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"serve", surge_serve_main, "run the server: ingest, reservoir, trainer"},
    {"launch", surge_launch_main, "run a study: server, solver runs, retries"},
    {"top", surge_top_main, "watch a running server in the terminal"},
    {"predict", surge_predict_main, "evaluate a trained model: .npy and PNG"},
    {"keys", surge_keys_main, "a study's run keys and CURVE key files"},
};

static void
usage(FILE *out)
{
    fprintf(out, "usage: surge <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\n`surge <command> --help` describes a command's options.\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("surge %s\n", surge_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            return commands[i].main(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "surge: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
