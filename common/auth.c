/* common/auth.c - run keys, constant-time comparison, CURVE key files
 * (common/auth.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "common/auth.h"
#include "common/util.h"
#include "surge/error.h"

int
surge_run_key(const char *token, int64_t sim, char out[SURGE_RUN_KEY_HEX + 1])
{
    if (token == NULL || out == NULL || sim < 0) {
        return -EINVAL;
    }
    if (sodium_init() < 0) {
        return SURGE_EINTERNAL;
    }
    char msg[64];
    int n = snprintf(msg, sizeof msg, "surge run key v1 sim=%" PRId64, sim);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    if (crypto_auth_hmacsha256_init(&st, (const unsigned char *)token,
                                    strlen(token)) != 0 ||
        crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg,
                                      (unsigned long long)n) != 0 ||
        crypto_auth_hmacsha256_final(&st, mac) != 0) {
        sodium_memzero(&st, sizeof st);
        return SURGE_EINTERNAL;
    }
    sodium_memzero(&st, sizeof st);
    sodium_bin2hex(out, SURGE_RUN_KEY_HEX + 1, mac, sizeof mac);
    sodium_memzero(mac, sizeof mac);
    return 0;
}

int
surge_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const unsigned char *pa = a, *pb = b;
    /* volatile: the compiler may not turn the loop into an early exit. */
    volatile unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++) {
        unsigned char x = i < alen ? pa[i] : 0;
        diff = (unsigned char)(diff | (x ^ pb[i]));
    }
    return diff == 0;
}

/* ------------------------------------------------------------ key files */

/* Read the whole file, checking that it is ours and private. */
static int
read_private(const char *path, char *buf, size_t cap, char *err, size_t errcap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        /* A link could point anywhere (another user's file): not followed. */
        surge_set_err(err, errcap, "%s: %s", path,
                      errno == ELOOP ? "a symbolic link (a key file must be "
                                       "a regular file)"
                                     : strerror(errno));
        return SURGE_ECONFIG;
    }
    struct stat sb;
    int rc = SURGE_ECONFIG;
    if (fstat(fd, &sb) != 0) {
        surge_set_err(err, errcap, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        surge_set_err(err, errcap, "%s: not a regular file", path);
    } else if (sb.st_uid != geteuid()) {
        surge_set_err(err, errcap, "%s: owned by uid %ld, not by this user",
                      path, (long)sb.st_uid);
    } else if ((sb.st_mode & 077) != 0) {
        surge_set_err(err, errcap,
                      "%s: readable by others (mode %03o): it holds a "
                      "secret key, chmod 600 it",
                      path, (unsigned)(sb.st_mode & 0777));
    } else if (sb.st_size >= (off_t)cap) {
        surge_set_err(err, errcap, "%s: larger than %zu bytes", path, cap - 1);
    } else {
        size_t got = 0;
        for (;;) {
            ssize_t r = read(fd, buf + got, cap - 1 - got);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r < 0) {
                surge_set_err(err, errcap, "%s: %s", path, strerror(errno));
                break;
            }
            got += (size_t)r;
            if (r == 0 || got == cap - 1) {
                buf[got] = '\0';
                rc = r == 0 ? 0 : SURGE_ECONFIG;
                if (rc != 0) {
                    surge_set_err(err, errcap, "%s: larger than %zu bytes",
                                  path, cap - 1);
                }
                break;
            }
        }
    }
    close(fd);
    return rc;
}

/* A Z85 CURVE key: 40 characters that decode to 32 bytes. */
static int
z85_key(const char *s, size_t len, char z85[SURGE_CURVE_KEY_Z85 + 1],
        uint8_t bin[SURGE_CURVE_KEY_BYTES])
{
    if (len != SURGE_CURVE_KEY_Z85) {
        return -1;
    }
    memcpy(z85, s, len);
    z85[len] = '\0';
    return zmq_z85_decode(bin, z85) == NULL ? -1 : 0;
}

static int
parse_line(surge_curve_keys *k, const char *name, size_t nlen, const char *val,
           size_t vlen, int *role)
{
    char z85[SURGE_CURVE_KEY_Z85 + 1];
    uint8_t bin[SURGE_CURVE_KEY_BYTES];
    if (nlen == 4 && memcmp(name, "role", 4) == 0) {
        if (vlen == 6 && memcmp(val, "server", 6) == 0) {
            *role = 1;
        } else if (vlen == 6 && memcmp(val, "client", 6) == 0) {
            *role = 0;
        } else {
            return -1;
        }
        return 0;
    }
    static const char *const names[] = {"public", "secret", "server", "client"};
    size_t which = 4;
    for (size_t i = 0; i < 4; i++) {
        if (nlen == 6 && memcmp(name, names[i], 6) == 0) {
            which = i;
        }
    }
    if (which == 4) {
        return -3;
    }
    if (z85_key(val, vlen, z85, bin) != 0) {
        return -1;
    }
    char *dst[] = {k->public_key, k->secret_key, k->server_key};
    if (which < 3) {
        memcpy(dst[which], z85, sizeof z85);
    } else if (k->nclients == SURGE_CURVE_MAX_CLIENTS) {
        return -2;
    } else {
        memcpy(k->clients[k->nclients++], bin, sizeof bin);
    }
    sodium_memzero(z85, sizeof z85);
    return 0;
}

int
surge_curve_keys_load(const char *path, int want_server, surge_curve_keys *k,
                      char *err, size_t errcap)
{
    char buf[SURGE_CURVE_FILE_MAX + 1];
    memset(k, 0, sizeof *k);
    int rc = read_private(path, buf, sizeof buf, err, errcap);
    if (rc != 0) {
        return rc;
    }
    int role = -1, line = 0;
    const char *p = buf;
    while (*p != '\0' && rc == 0) {
        const char *eol = strchr(p, '\n');
        const char *end = eol != NULL ? eol : p + strlen(p);
        line++;
        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (p < end && *p != '#') {
            const char *eq = memchr(p, '=', (size_t)(end - p));
            const char *ne = eq != NULL ? eq : end;
            while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t')) {
                ne--;
            }
            const char *v = eq != NULL ? eq + 1 : end, *ve = end;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v &&
                   (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r')) {
                ve--;
            }
            int bad = eq == NULL ? -4
                                 : parse_line(k, p, (size_t)(ne - p), v,
                                              (size_t)(ve - v), &role);
            if (bad != 0) {
                surge_set_err(err, errcap, "%s:%d: %s", path, line,
                              bad == -4   ? "not 'name = value'"
                              : bad == -2 ? "more than 16 client keys"
                              : bad == -3 ? "unknown name (role, public, "
                                            "secret, server, client)"
                                          : "not a 40-character Z85 key (or "
                                            "role: server or client)");
                rc = SURGE_ECONFIG;
            }
        }
        p = eol != NULL ? eol + 1 : end;
    }
    sodium_memzero(buf, sizeof buf);
    if (rc != 0) {
        return rc;
    }
    char pub[SURGE_CURVE_KEY_Z85 + 1];
    const char *missing = NULL;
    if (role != (want_server ? 1 : 0)) {
        missing = want_server ? "role = server" : "role = client";
    } else if (k->secret_key[0] == '\0' || k->public_key[0] == '\0') {
        missing = "public and secret";
    } else if (want_server && k->nclients == 0) {
        missing = "a client key";
    } else if (!want_server && k->server_key[0] == '\0') {
        missing = "the server key";
    }
    if (missing != NULL) {
        surge_set_err(err, errcap, "%s: needs %s", path, missing);
        return SURGE_ECONFIG;
    }
    if (zmq_curve_public(pub, k->secret_key) != 0 ||
        strcmp(pub, k->public_key) != 0) {
        surge_set_err(err, errcap, "%s: the public key is not the secret key's",
                      path);
        return SURGE_ECONFIG;
    }
    k->server = want_server;
    return 0;
}

static int
write_keys(const char *path, const char *text, char *err, size_t errcap)
{
    int rc = surge_write_file_atomic_mode(path, text, strlen(text), 0600);
    if (rc != 0) {
        surge_set_err(err, errcap, "%s: %s", path, strerror(-rc));
    }
    return rc;
}

int
surge_curve_keys_generate(const char *dir, char *err, size_t errcap)
{
    char spub[SURGE_CURVE_KEY_Z85 + 1], ssec[SURGE_CURVE_KEY_Z85 + 1];
    char cpub[SURGE_CURVE_KEY_Z85 + 1], csec[SURGE_CURVE_KEY_Z85 + 1];
    char path[4096], text[512];
    int rc;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        surge_set_err(err, errcap, "%s: %s", dir, strerror(errno));
        return -errno;
    }
    if (zmq_curve_keypair(spub, ssec) != 0 ||
        zmq_curve_keypair(cpub, csec) != 0) {
        surge_set_err(err, errcap,
                      "zmq_curve_keypair: %s (is libzmq built with CURVE?)",
                      zmq_strerror(zmq_errno()));
        return SURGE_ECONFIG;
    }
    static const char head[] =
        "# surge CURVE keys (ZeroMQ Z85), written by surge. They hold a "
        "secret\n# key: keep this file readable by you only (mode 0600).\n";
    snprintf(path, sizeof path, "%s/server.key", dir);
    snprintf(text, sizeof text,
             "%srole = server\npublic = %s\nsecret = %s\nclient = %s\n", head,
             spub, ssec, cpub);
    rc = write_keys(path, text, err, errcap);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/client.key", dir);
        snprintf(text, sizeof text,
                 "%srole = client\npublic = %s\nsecret = %s\nserver = %s\n",
                 head, cpub, csec, spub);
        rc = write_keys(path, text, err, errcap);
    }
    sodium_memzero(ssec, sizeof ssec);
    sodium_memzero(csec, sizeof csec);
    sodium_memzero(text, sizeof text);
    return rc;
}

int
surge_curve_zap_ok(const surge_curve_keys *k, const void *mechanism,
                   size_t mlen, const void *credential, size_t clen)
{
    int found = 0;
    if (mlen != 5 || memcmp(mechanism, "CURVE", 5) != 0) {
        return 0;
    }
    for (size_t i = 0; i < k->nclients; i++) {
        found |= surge_ct_equal(credential, clen, k->clients[i],
                                SURGE_CURVE_KEY_BYTES);
    }
    return found;
}
