/*
 * tests/fuzz/fuzz_study.c - libFuzzer harness for the study-file parser
 * (deploy/study.c): any text a user can put in study.json.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - a refused study says why (a non-empty one-line message);
 *  - an accepted study prints as JSON (surge_study_to_json) that parses
 *    again into a study that prints the same: the effective study is a
 *    fixed point, so what `surge launch` records is what it ran.
 * A broken property aborts, which libFuzzer reports as a crash.
 * With FUZZ_VERBOSE set, running the harness on files prints why each is
 * refused or its effective study (to check and to make seeds).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy/study.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Same bound as a study file (surge_study_load reads at most 1 MiB);
 * libFuzzer's -max_len keeps inputs far smaller anyway. */
#define MAX_TEXT (1u << 20)

static void
fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_study: %s: %s\n", what, detail);
    abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_TEXT) {
        return 0;
    }
    /* The parser takes a C string, as surge_study_load hands it one (a
     * file with a NUL byte is refused before parsing). */
    char *text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512] = "";
    surge_study *st = NULL;
    /* base_dir "/nonexistent": relative paths resolve somewhere harmless;
     * parsing never creates or runs anything. */
    int rc = surge_study_parse(&st, text, "fuzz.json", "/nonexistent", err,
                               sizeof err);
    free(text);
    if (rc != 0) {
        if (st != NULL || err[0] == '\0' || strchr(err, '\n') != NULL) {
            fail("a refused study must leave *out and give one line", err);
        }
        if (getenv("FUZZ_VERBOSE") != NULL) {
            fprintf(stderr, "refused: %s\n", err); /* checking seeds */
        }
        return 0;
    }
    char *json = surge_study_to_json(st);
    surge_study_destroy(&st);
    if (json == NULL) {
        return 0; /* out of memory */
    }
    if (getenv("FUZZ_VERBOSE") != NULL) {
        printf("%s\n", json); /* the effective study, for new seeds */
    }
    surge_study *again = NULL;
    rc = surge_study_parse(&again, json, "effective.json", "/nonexistent", err,
                           sizeof err);
    if (rc != 0) {
        fprintf(stderr, "%s\n", json);
        fail("the effective study does not parse again", err);
    }
    char *json2 = surge_study_to_json(again);
    surge_study_destroy(&again);
    if (json2 != NULL && strcmp(json, json2) != 0) {
        fprintf(stderr, "first:\n%s\nsecond:\n%s\n", json, json2);
        fail("the effective study is not a fixed point", "see above");
    }
    free(json);
    free(json2);
    return 0;
}
