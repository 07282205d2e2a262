/*
 * tests/integration/server_peer.c - a raw ZeroMQ peer for the server's
 * fault tests: it speaks the wire protocol through the codec directly
 * (no libsurge), so it can send what a correct client never would.
 *
 *   server_peer malformed ENDPOINT SIM ELEMS NPARAMS
 *                      send a series of bad messages, then hello (one rank,
 *                      one field "u" of ELEMS values, NPARAMS parameters;
 *                      the server wants every sim of a study to have the
 *                      same sample shape), one good step and bye
 *   server_peer control ENDPOINT OP [SIM] send a control request (OP: ping,
 *                                        failed, retry, end, shutdown) and
 *                                        print the reply
 *   server_peer badhello ENDPOINT      send a hello the codec refuses (dtype
 *                                      "f64"), print the server's answer
 *                                      ("reject CODE REASON"); exit 0 when
 *                                      it is a reject naming the dtype
 *   server_peer flood ENDPOINT CONNS FRAMES BYTES
 *                      a peer without a token: CONNS connections that never
 *                      say hello, each sending up to FRAMES frames of BYTES
 *                      bytes (a send waits at most 2 s); prints "sent N"
 *                      (frames ZeroMQ took) and "answered N" (connections
 *                      the server replied to)
 *
 * The token comes from SURGE_TOKEN; with SURGE_CURVE_KEYS (a client key
 * file) the connection uses CURVE. Prints one line per bad message sent
 * ("sent bad_header", ...) so the test knows what the server must count.
 * Every receive waits at most 5 s. Exit 0 when the server answered as
 * expected, 1 otherwise.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <zmq.h>

#include "common/auth.h"
#include "common/protocol.h"

static void *sock;
static unsigned char buf[SURGE_MAX_HEADER_BYTES * 2];
static surge_msg msg, reply;

static int
send_frames(const void *hdr, size_t hlen, const void *p1, size_t l1,
            const void *p2, size_t l2)
{
    int more1 = p1 != NULL ? ZMQ_SNDMORE : 0;
    if (zmq_send(sock, hdr, hlen, more1) < 0) {
        return -1;
    }
    if (p1 != NULL &&
        zmq_send(sock, p1, l1, p2 != NULL ? ZMQ_SNDMORE : 0) < 0) {
        return -1;
    }
    if (p2 != NULL && zmq_send(sock, p2, l2, 0) < 0) {
        return -1;
    }
    return 0;
}

static int
send_msg(const surge_msg *m, const void *p1, size_t l1, const void *p2,
         size_t l2)
{
    int n = surge_proto_encode(m, buf, sizeof buf);
    if (n <= 0) {
        fprintf(stderr, "server_peer: encode failed (%d)\n", n);
        exit(1);
    }
    return send_frames(buf, (size_t)n, p1, l1, p2, l2);
}

static int
recv_reply(void)
{
    int n = zmq_recv(sock, buf, sizeof buf, 0);
    if (n < 0) {
        fprintf(stderr, "server_peer: no reply within 5 s\n");
        return -1;
    }
    const char *why = NULL;
    if (surge_proto_decode(buf, (size_t)n, &reply, &why) < 0) {
        fprintf(stderr, "server_peer: bad reply: %s\n", why);
        return -1;
    }
    return (int)reply.type;
}

static void
data_msg(int64_t sim, int64_t step, uint32_t field, uint64_t off,
         uint64_t count)
{
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_DATA;
    msg.u.data.sim = sim;
    msg.u.data.rank = 0;
    msg.u.data.dtype = SURGE_WIRE_F32;
    msg.u.data.nitems = 1;
    msg.u.data.items[0].step = step;
    msg.u.data.items[0].field = field;
    msg.u.data.items[0].offset = off;
    msg.u.data.items[0].count = count;
}

static int
malformed(int64_t sim, int N, int nparams, const char *token)
{
    if (N < 4 || N > 65536 || nparams < 0 || nparams > SURGE_MAX_PARAMS) {
        fprintf(stderr, "server_peer: bad ELEMS or NPARAMS\n");
        return 2;
    }
    static float v[65536 + 4];
    for (int i = 0; i < N + 4; i++) {
        v[i] = (float)i;
    }
    /* Not msgpack. */
    memset(buf, 0xc1, 32);
    send_frames(buf, 32, NULL, 0, NULL, 0);
    printf("sent bad_header\n");
    /* A msgpack map missing every required key: {"x": 1}. */
    const unsigned char nokeys[] = {0x81, 0xa1, 'x', 0x01};
    send_frames(nokeys, sizeof nokeys, NULL, 0, NULL, 0);
    printf("sent bad_header\n");
    /* A header over the limit. */
    static unsigned char big[SURGE_MAX_HEADER_BYTES + 100];
    memset(big, 0x90, sizeof big);
    send_frames(big, sizeof big, NULL, 0, NULL, 0);
    printf("sent header_too_large\n");
    /* Data before hello: answered once with a reject. */
    data_msg(sim, 0, 0, 0, N);
    send_msg(&msg, v, N * 4, NULL, 0);
    printf("sent unknown_session\n");
    if (recv_reply() != SURGE_MSG_REJECT ||
        strcmp(reply.u.reject.reason, "send hello first") != 0) {
        fprintf(stderr, "server_peer: expected 'send hello first'\n");
        return 1;
    }
    /* Hello for a one-rank sim with a field of N elements. */
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_HELLO;
    surge_msg_hello *h = &msg.u.hello;
    /* As libsurge: the run key derived from the token, not the token. */
    if (token[0] != '\0' && surge_run_key(token, sim, h->run_key) != 0) {
        return 1;
    }
    h->sim = sim;
    h->rank = 0;
    h->nranks = 1;
    h->nparams = (uint32_t)nparams;
    for (int i = 0; i < nparams; i++) {
        h->params[i] = 0.5 * i;
    }
    h->nfields = 1;
    snprintf(h->fields[0].name, sizeof h->fields[0].name, "u");
    h->fields[0].global_size = N;
    h->fields[0].offset = 0;
    h->fields[0].count = N;
    h->dtype = SURGE_WIRE_F32;
    /* First with a stray payload frame: malformed. */
    send_msg(&msg, v, 4, NULL, 0);
    printf("sent bad_frames\n");
    send_msg(&msg, NULL, 0, NULL, 0);
    if (recv_reply() != SURGE_MSG_WELCOME) {
        fprintf(stderr, "server_peer: expected welcome, got %s: %s\n",
                surge_proto_type_name(reply.type), reply.u.reject.reason);
        return 1;
    }
    /* Payload one float short and one float long. */
    data_msg(sim, 0, 0, 0, N);
    send_msg(&msg, v, (N - 1) * 4, NULL, 0);
    printf("sent bad_payload_size\n");
    send_msg(&msg, v, (N + 1) * 4, NULL, 0);
    printf("sent bad_payload_size\n");
    /* No payload frame, then two payload frames. */
    send_msg(&msg, NULL, 0, NULL, 0);
    printf("sent bad_frames\n");
    send_msg(&msg, v, N * 4, v, 4);
    printf("sent bad_frames\n");
    /* Unknown field, wrong slice. */
    data_msg(sim, 0, 3, 0, N);
    send_msg(&msg, v, N * 4, NULL, 0);
    printf("sent bad_field\n");
    data_msg(sim, 0, 0, 2, N - 2);
    send_msg(&msg, v, (N - 2) * 4, NULL, 0);
    printf("sent bad_slice\n");
    /* Another sim than the session's. */
    data_msg(sim + 1, 0, 0, 0, N);
    send_msg(&msg, v, N * 4, NULL, 0);
    printf("sent session_mismatch\n");
    /* Now one good step, and bye: the server must have accepted 1. */
    data_msg(sim, 0, 0, 0, N);
    send_msg(&msg, v, N * 4, NULL, 0);
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_BYE;
    msg.u.bye.sim = sim;
    msg.u.bye.rank = 0;
    msg.u.bye.slices = 1;
    send_msg(&msg, NULL, 0, NULL, 0);
    if (recv_reply() != SURGE_MSG_BYE_ACK || reply.u.bye_ack.slices != 1) {
        fprintf(stderr, "server_peer: expected bye_ack with 1 slice\n");
        return 1;
    }
    printf("bye_ack slices=1\n");
    return 0;
}

static int
control(const char *opname, int64_t sim, const char *token)
{
    static const struct {
        const char *name;
        int op;
    } ops[] = {{"ping", SURGE_CTL_PING},
               {"failed", SURGE_CTL_SIM_FAILED},
               {"retry", SURGE_CTL_SIM_RETRY},
               {"end", SURGE_CTL_END_RECEPTION},
               {"shutdown", SURGE_CTL_SHUTDOWN}};
    int op = -1;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strcmp(ops[i].name, opname) == 0) {
            op = ops[i].op;
        }
    }
    if (op < 0) {
        fprintf(stderr, "server_peer: unknown control op '%s'\n", opname);
        return 2;
    }
    memset(&msg, 0, sizeof msg);
    msg.type = SURGE_MSG_CONTROL;
    snprintf(msg.u.control.token, sizeof msg.u.control.token, "%s", token);
    msg.u.control.op = (uint8_t)op;
    msg.u.control.sim = sim;
    send_msg(&msg, NULL, 0, NULL, 0);
    if (recv_reply() != SURGE_MSG_CONTROL_REPLY) {
        return 1;
    }
    printf("%d %s\n", reply.u.control_reply.code,
           reply.u.control_reply.message);
    return reply.u.control_reply.code == 0 ? 0 : 1;
}

static void
pk_cstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* A hello that a correct client never sends (its encoder refuses it): the
 * server must answer it with a reject and the reason (issue 9, item 6). */
static int
badhello(const char *token)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    pk_cstr(&pk, "v");
    msgpack_pack_uint64(&pk, SURGE_PROTOCOL_VERSION);
    pk_cstr(&pk, "type");
    pk_cstr(&pk, "hello");
    pk_cstr(&pk, "token");
    pk_cstr(&pk, token);
    pk_cstr(&pk, "sim");
    msgpack_pack_int64(&pk, 1);
    pk_cstr(&pk, "rank");
    msgpack_pack_uint64(&pk, 0);
    pk_cstr(&pk, "nranks");
    msgpack_pack_uint64(&pk, 1);
    pk_cstr(&pk, "params");
    msgpack_pack_array(&pk, 0);
    pk_cstr(&pk, "fields");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 4);
    pk_cstr(&pk, "name");
    pk_cstr(&pk, "u");
    pk_cstr(&pk, "size");
    msgpack_pack_uint64(&pk, 4);
    pk_cstr(&pk, "offset");
    msgpack_pack_uint64(&pk, 0);
    pk_cstr(&pk, "count");
    msgpack_pack_uint64(&pk, 4);
    pk_cstr(&pk, "dtype");
    pk_cstr(&pk, "f64");
    int rc = send_frames(sb.data, sb.size, NULL, 0, NULL, 0);
    msgpack_sbuffer_destroy(&sb);
    if (rc < 0 || recv_reply() != SURGE_MSG_REJECT) {
        printf("no reject\n");
        return 1;
    }
    printf("reject %d %s\n", reply.u.reject.code, reply.u.reject.reason);
    return strstr(reply.u.reject.reason, "dtype") != NULL ? 0 : 1;
}

/* Connections that say nothing valid and send large frames: what the
 * server holds for them must stay bounded (issue 9, item 1). */
static int
flood(void *ctx, const char *ep, int conns, int frames, int bytes)
{
    if (conns < 1 || conns > 4096 || frames < 1 || bytes < 1) {
        fprintf(stderr, "server_peer: bad CONNS, FRAMES or BYTES\n");
        return 2;
    }
    void **s = calloc((size_t)conns, sizeof *s);
    unsigned char *junk = malloc((size_t)bytes);
    if (s == NULL || junk == NULL) {
        return 1;
    }
    memset(junk, 0x90, (size_t)bytes);
    int ms = 2000, zero = 0;
    for (int i = 0; i < conns; i++) {
        s[i] = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(s[i], ZMQ_SNDTIMEO, &ms, sizeof ms);
        zmq_setsockopt(s[i], ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_connect(s[i], ep) != 0) {
            fprintf(stderr, "server_peer: connect %s: %s\n", ep,
                    zmq_strerror(zmq_errno()));
            return 1;
        }
    }
    long sent = 0;
    for (int f = 0; f < frames; f++) {
        for (int i = 0; i < conns; i++) {
            if (s[i] != NULL && zmq_send(s[i], junk, (size_t)bytes, 0) >= 0) {
                sent++;
            }
        }
    }
    int answered = 0;
    for (int i = 0; i < conns; i++) {
        zmq_pollitem_t it = {s[i], 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, i == 0 ? 1000 : 0) == 1) {
            answered++;
        }
        zmq_close(s[i]);
    }
    printf("sent %ld\nanswered %d\n", sent, answered);
    free(junk);
    free(s);
    return 0;
}

/* A non-negative int, or -1 when s is not one. */
static int
atoi_checked(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 0 || v > 1 << 30) {
        return -1;
    }
    return (int)v;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: server_peer malformed|control ENDPOINT ...\n");
        return 2;
    }
    const char *token = getenv("SURGE_TOKEN");
    if (token == NULL) {
        token = "";
    }
    void *ctx = zmq_ctx_new();
    sock = zmq_socket(ctx, ZMQ_DEALER);
    int ms = 5000, zero = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &ms, sizeof ms);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
    zmq_setsockopt(sock, ZMQ_LINGER, &ms, sizeof ms);
    (void)zero;
    const char *keys = getenv("SURGE_CURVE_KEYS");
    if (keys != NULL && keys[0] != '\0') {
        surge_curve_keys k;
        char err[512];
        if (surge_curve_keys_load(keys, 0, &k, err, sizeof err) != 0) {
            fprintf(stderr, "server_peer: %s\n", err);
            return 1;
        }
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, k.server_key, 41);
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k.public_key, 41);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k.secret_key, 41);
    }
    if (zmq_connect(sock, argv[2]) != 0) {
        fprintf(stderr, "server_peer: connect %s: %s\n", argv[2],
                zmq_strerror(zmq_errno()));
        return 1;
    }
    int rc;
    if (strcmp(argv[1], "malformed") == 0 && argc == 6) {
        rc = malformed(strtoll(argv[3], NULL, 10), atoi_checked(argv[4]),
                       atoi_checked(argv[5]), token);
    } else if (strcmp(argv[1], "badhello") == 0 && argc == 3) {
        rc = badhello(token);
    } else if (strcmp(argv[1], "flood") == 0 && argc == 6) {
        rc = flood(ctx, argv[2], atoi_checked(argv[3]), atoi_checked(argv[4]),
                   atoi_checked(argv[5]));
    } else if (strcmp(argv[1], "control") == 0 && argc >= 4) {
        rc =
            control(argv[3], argc > 4 ? strtoll(argv[4], NULL, 10) : -1, token);
    } else {
        fprintf(stderr, "server_peer: bad arguments\n");
        rc = 2;
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}
