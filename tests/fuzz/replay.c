/*
 * tests/fuzz/replay.c - runs a fuzz harness over its committed corpus
 * (tests/fuzz/corpus/<harness>/) without libFuzzer, in every build (gcc,
 * ASan+UBSan, valgrind): each seed and each input that once crashed is a
 * regression test. One TAP line per input; a harness that finds a broken
 * property aborts, so a failure shows as the test crashing on that input,
 * named in the line before.
 *
 * Built once per harness with FUZZ_NAME defined ("fuzz_protocol", ...).
 * The corpus is found under $SURGE_SRCDIR (set by the test harness).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a harness: libFuzzer calls it once when it is defined. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define MAX_FILE_BYTES (1u << 20)
#define MAX_FILES 4096

static int
by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads path into a malloc'd buffer of at most MAX_FILE_BYTES bytes. */
static int
read_input(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -errno;
    }
    uint8_t *buf = malloc(MAX_FILE_BYTES);
    if (buf == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES, f);
    int err = ferror(f) ? -EIO : 0;
    fclose(f);
    if (err != 0) {
        free(buf);
        return err;
    }
    *out = buf;
    *len = n;
    return 0;
}

int
main(int argc, char **argv)
{
    const char *src = getenv("SURGE_SRCDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src ? src : ".",
             FUZZ_NAME);
    DIR *d = opendir(dir);
    if (d == NULL) {
        printf("1..0 # SKIP no corpus at %s\n", dir);
        return 0;
    }
    char *names[MAX_FILES];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < MAX_FILES) {
        if (e->d_name[0] != '.') {
            names[n] = strdup(e->d_name);
            if (names[n] == NULL) {
                closedir(d);
                return 1;
            }
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    if (LLVMFuzzerInitialize != NULL) {
        LLVMFuzzerInitialize(&argc, &argv);
    }
    printf("1..%zu\n", n);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        uint8_t *buf = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        /* Flushed first: if the input crashes the harness, the log names
         * it. */
        printf("# %s: %s\n", FUZZ_NAME, names[i]);
        fflush(stdout);
        int rc = read_input(path, &buf, &len);
        if (rc != 0) {
            printf("not ok %zu - %s: cannot read (%s)\n", i + 1, names[i],
                   strerror(-rc));
            failed = 1;
        } else {
            (void)LLVMFuzzerTestOneInput(buf, len);
            printf("ok %zu - %s %s (%zu bytes)\n", i + 1, FUZZ_NAME, names[i],
                   len);
        }
        free(buf);
        free(names[i]);
    }
    return failed;
}
