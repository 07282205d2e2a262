/* deploy/control.c - control requests to the server (deploy/control.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/protocol.h"
#include "common/util.h"
#include "deploy/control.h"

#define CONTROL_MAX_ENDPOINT 256

struct surge_control {
    void *ctx;                           /* own ZeroMQ context */
    void *sock;                          /* DEALER, NULL after a timeout
                                            until the next call reopens */
    char endpoint[CONTROL_MAX_ENDPOINT]; /* server endpoint */
    char token[SURGE_MAX_TOKEN + 1];     /* study token */
    surge_curve_keys *curve;             /* CURVE client keys, or NULL */
};

const char *
surge_control_op_name(int op)
{
    switch (op) {
    case SURGE_CTL_PING:
        return "ping";
    case SURGE_CTL_SIM_FAILED:
        return "sim_failed";
    case SURGE_CTL_SIM_RETRY:
        return "sim_retry";
    case SURGE_CTL_END_RECEPTION:
        return "end_reception";
    case SURGE_CTL_SHUTDOWN:
        return "shutdown";
    default:
        return "?";
    }
}

static int
open_socket(surge_control *c)
{
    int zero = 0;
    void *s = zmq_socket(c->ctx, ZMQ_DEALER);
    if (s == NULL) {
        return -zmq_errno();
    }
    /* linger 0: closing after a timeout must not wait for a dead server. */
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (c->curve != NULL &&
        (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->curve->server_key,
                        sizeof c->curve->server_key) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->curve->public_key,
                        sizeof c->curve->public_key) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->curve->secret_key,
                        sizeof c->curve->secret_key) != 0)) {
        int rc = -zmq_errno();
        zmq_close(s);
        return rc;
    }
    if (zmq_connect(s, c->endpoint) != 0) {
        int rc = zmq_errno() == EINVAL ? SURGE_ECONFIG : -zmq_errno();
        zmq_close(s);
        return rc;
    }
    c->sock = s;
    return 0;
}

static void
control_free(surge_control *c)
{
    if (c->curve != NULL) {
        explicit_bzero(c->curve, sizeof *c->curve);
        free(c->curve);
    }
    free(c);
}

int
surge_control_create(surge_control **out, const char *endpoint,
                     const char *token, const char *curve_keys)
{
    if (strlen(endpoint) >= CONTROL_MAX_ENDPOINT ||
        strlen(token) > SURGE_MAX_TOKEN) {
        return SURGE_ECONFIG;
    }
    surge_control *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return -ENOMEM;
    }
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    snprintf(c->token, sizeof c->token, "%s", token);
    if (curve_keys != NULL && curve_keys[0] != '\0') {
        char err[512];
        c->curve = calloc(1, sizeof *c->curve);
        if (c->curve == NULL) {
            control_free(c);
            return -ENOMEM;
        }
        if (surge_curve_keys_load(curve_keys, 0, c->curve, err, sizeof err) !=
            0) {
            SURGE_LOG(SURGE_LOG_ERROR, "launch", "control channel: %s", err);
            control_free(c);
            return SURGE_ECONFIG;
        }
    }
    c->ctx = zmq_ctx_new();
    if (c->ctx == NULL) {
        control_free(c);
        return -ENOMEM;
    }
    int rc = open_socket(c);
    if (rc != 0) {
        zmq_ctx_term(c->ctx);
        control_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void
surge_control_destroy(surge_control **cp)
{
    if (cp == NULL || *cp == NULL) {
        return;
    }
    surge_control *c = *cp;
    if (c->sock != NULL) {
        zmq_close(c->sock);
    }
    zmq_ctx_term(c->ctx);
    control_free(c);
    *cp = NULL;
}

static void
drop_socket(surge_control *c)
{
    if (c->sock != NULL) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
}

int
surge_control_call(surge_control *c, int op, int64_t sim, int timeout_ms,
                   int32_t *code, char *msg, size_t cap)
{
    unsigned char buf[SURGE_MAX_HEADER_BYTES];
    surge_msg m;
    int rc;
    if (c->sock == NULL) {
        rc = open_socket(c);
        if (rc != 0) {
            return rc;
        }
    }
    memset(&m, 0, sizeof m);
    m.type = SURGE_MSG_CONTROL;
    snprintf(m.u.control.token, sizeof m.u.control.token, "%s", c->token);
    m.u.control.op = (uint8_t)op;
    m.u.control.sim = sim;
    int len = surge_proto_encode(&m, buf, sizeof buf);
    if (len < 0) {
        return len;
    }
    /* DONTWAIT: a DEALER with no connected peer would otherwise block; the
     * message is queued while the connection is being made. */
    if (zmq_send(c->sock, buf, (size_t)len, ZMQ_DONTWAIT) < 0) {
        rc = zmq_errno() == EAGAIN ? SURGE_ETIMEDOUT : -zmq_errno();
        drop_socket(c);
        return rc;
    }
    uint64_t deadline = surge_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        uint64_t now = surge_now_ns();
        if (now >= deadline) {
            drop_socket(c);
            return SURGE_ETIMEDOUT;
        }
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        int left = (int)((deadline - now + 999999u) / 1000000u);
        int n = zmq_poll(&item, 1, left);
        if (n < 0) {
            if (zmq_errno() == EINTR) {
                /* A signal (Ctrl-C): let the caller look at its flags. */
                drop_socket(c);
                return -EINTR;
            }
            rc = -zmq_errno();
            drop_socket(c);
            return rc;
        }
        if (n == 0) {
            continue;
        }
        /* Read the whole multipart message; the header is the first
         * non-empty frame (a ROUTER peer may prepend an empty delimiter). */
        int got = -1;
        int more = 1;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, c->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                break;
            }
            size_t sz = zmq_msg_size(&part);
            if (got < 0 && sz > 0) {
                const char *why = NULL;
                got = surge_proto_decode(zmq_msg_data(&part), sz, &m, &why);
                if (got == 0 && m.type == SURGE_MSG_REJECT) {
                    /* A refused request (bad token) comes back as reject:
                     * report it like a reply with an error code. */
                    int32_t rcode = m.u.reject.code;
                    char reason[SURGE_MAX_REASON + 1];
                    snprintf(reason, sizeof reason, "%s", m.u.reject.reason);
                    m.type = SURGE_MSG_CONTROL_REPLY;
                    m.u.control_reply.code = rcode < 0 ? rcode : SURGE_EPROTO;
                    snprintf(m.u.control_reply.message,
                             sizeof m.u.control_reply.message, "%s", reason);
                } else if (got == 0 && m.type != SURGE_MSG_CONTROL_REPLY) {
                    got = SURGE_EPROTO;
                }
            }
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        if (got != 0) {
            drop_socket(c);
            return got < 0 ? got : SURGE_EPROTO;
        }
        *code = m.u.control_reply.code;
        if (msg != NULL && cap > 0) {
            snprintf(msg, cap, "%s", m.u.control_reply.message);
        }
        return 0;
    }
}
