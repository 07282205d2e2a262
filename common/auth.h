/*
 * common/auth.h - the credentials of a study (docs/protocol.md, "Trust"):
 * per-run keys derived from the study token, constant-time comparison of
 * secrets, and the ZeroMQ CURVE key files the launcher writes for the
 * server, the runs and itself.
 *
 * The study token is the study's master secret: the launcher, the server
 * and whoever starts `surge serve` by hand hold it. A run holds only its
 * own run key, HMAC-SHA256(token, "surge run key v1 sim=<sim>"), so it can
 * join its own simulation and no other one. All functions are thread-safe;
 * none prints or exits.
 */
#ifndef SURGE_COMMON_AUTH_H
#define SURGE_COMMON_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define SURGE_RUN_KEY_HEX 64       /* a run key: 32 bytes as lowercase hex */
#define SURGE_CURVE_KEY_Z85 40     /* a CURVE key in ZeroMQ's Z85 text */
#define SURGE_CURVE_KEY_BYTES 32   /* a CURVE key in binary */
#define SURGE_CURVE_MAX_CLIENTS 16 /* client keys one server file allows */
#define SURGE_CURVE_FILE_MAX 4096  /* bytes of a key file */

/* surge_run_key - the run key of simulation `sim` in the study whose token
 * is `token` (0..SURGE_MAX_TOKEN bytes): HMAC-SHA256 keyed with the token
 * over the ASCII text "surge run key v1 sim=" followed by sim in decimal,
 * written to out as 64 lowercase hex digits and a NUL. Returns 0, -EINVAL
 * for a NULL argument or a negative sim, SURGE_EINTERNAL when libsodium
 * cannot start. */
int surge_run_key(const char *token, int64_t sim,
                  char out[SURGE_RUN_KEY_HEX + 1]);

/* surge_ct_equal - 1 when the alen bytes at a equal the blen bytes at b,
 * else 0. It reads every byte of b whatever a holds, so its time depends
 * on blen only: pass the secret as b, the presented value as a. */
int surge_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* surge_curve_keys - one side's CURVE keys, from a key file.
 *
 * A key file is text, mode 0600, owned by the user, at most
 * SURGE_CURVE_FILE_MAX bytes, one `name = value` per line (blank lines and
 * lines starting with '#' ignored):
 *
 *     role = server | client
 *     public = <40 Z85 characters>   this side's public key
 *     secret = <40 Z85 characters>   this side's secret key
 *     client = <40 Z85 characters>   server file: a client public key it
 *                                    accepts (1..16 lines)
 *     server = <40 Z85 characters>   client file: the server's public key
 */
typedef struct surge_curve_keys {
    int server;                               /* 1: role = server */
    char public_key[SURGE_CURVE_KEY_Z85 + 1]; /* this side's, Z85 */
    char secret_key[SURGE_CURVE_KEY_Z85 + 1]; /* this side's, Z85 */
    char server_key[SURGE_CURVE_KEY_Z85 + 1]; /* client: the server's */
    size_t nclients;                          /* server: keys accepted */
    uint8_t clients[SURGE_CURVE_MAX_CLIENTS][SURGE_CURVE_KEY_BYTES];
} surge_curve_keys;

/* surge_curve_keys_load - read the key file at path into *k and check it:
 * a regular file owned by this user and readable by nobody else, every
 * line known, every key valid Z85 of 32 bytes, the public key the one of
 * the secret key, role `server` with 1..16 `client` lines or role
 * `client` with one `server` line, as `want_server` asks. Returns 0, or
 * SURGE_ECONFIG with the reason in err (naming the file and the line);
 * *k is then unspecified. */
int surge_curve_keys_load(const char *path, int want_server,
                          surge_curve_keys *k, char *err, size_t errcap);

/* surge_curve_keys_generate - make a study's keys: a server key pair and
 * a client key pair (zmq_curve_keypair), written to dir/server.key (the
 * server's pair, accepting the client key) and dir/client.key (the client
 * pair and the server's public key), both mode 0600, replacing old ones;
 * dir is created with mode 0700 when missing. Returns 0, or SURGE_ECONFIG
 * / -errno with the reason in err. */
int surge_curve_keys_generate(const char *dir, char *err, size_t errcap);

/* surge_curve_zap_ok - the answer of a ZAP handler (ZeroMQ's RFC 27) for a
 * connection that used `mechanism` (mlen bytes) and presented `credential`
 * (clen bytes: the client's binary public key for CURVE): 1 when the
 * mechanism is CURVE and the key is one of k's clients, else 0. Compares
 * every accepted key in constant time. */
int surge_curve_zap_ok(const surge_curve_keys *k, const void *mechanism,
                       size_t mlen, const void *credential, size_t clen);

#endif /* SURGE_COMMON_AUTH_H */
