/*
 * deploy/control.h - the launcher's side of the control channel: control
 * requests (PING, SIM_FAILED, SIM_RETRY, END_RECEPTION, SHUTDOWN; see
 * common/protocol.h) sent to the server over a ZeroMQ DEALER socket, each
 * carrying the study token, and the server's control_reply.
 *
 * Requests are strictly one at a time. A reply carries no request id, so
 * after a timeout the socket is closed and reopened: a late reply to the
 * old request can never be taken for the answer to the next one.
 *
 * Threads: one thread per surge_control. Errors: 0 or SURGE_E* / -errno.
 */
#ifndef SURGE_DEPLOY_CONTROL_H
#define SURGE_DEPLOY_CONTROL_H

#include <stddef.h>
#include <stdint.h>

typedef struct surge_control surge_control;

/* surge_control_create - a control channel to the server at endpoint,
 * proving membership with token (both copied); with curve_keys (a CURVE
 * client key file, common/auth.h; NULL or "" for none) the channel is
 * encrypted and authenticated. Connecting is asynchronous in ZeroMQ: this
 * does not wait for the server. *out is set on success and untouched on
 * failure (-ENOMEM, SURGE_ECONFIG for a bad endpoint or key file). */
int surge_control_create(surge_control **out, const char *endpoint,
                         const char *token, const char *curve_keys);

/* surge_control_destroy - close the socket (nothing lingers) and free;
 * sets *c to NULL; NULL is a no-op. */
void surge_control_destroy(surge_control **c);

/* surge_control_call - send one request (op: enum surge_control_op; sim:
 * the simulation for SIM_*, else -1) and wait at most timeout_ms for the
 * reply. Returns 0 when a reply came: its code (0 or a SURGE_E* the server
 * chose) in *code and its text in msg (cap bytes, may be NULL). Returns
 * SURGE_ETIMEDOUT when no reply came in time, SURGE_EPROTO when the reply
 * was not a control_reply, or -errno from ZeroMQ. */
int surge_control_call(surge_control *c, int op, int64_t sim, int timeout_ms,
                       int32_t *code, char *msg, size_t cap);

/* surge_control_op_name - "ping", "sim_failed", ... for messages. */
const char *surge_control_op_name(int op);

#endif /* SURGE_DEPLOY_CONTROL_H */
