/*
 * server/server.h - the surge server: the I/O thread's libuv loop with the
 * ZeroMQ ROUTER socket, the stores and the consumer thread.
 *
 * DESIGN. surge_server_run() runs the loop on the calling thread (the I/O
 * thread). It owns the ZeroMQ context and every socket: the ROUTER the
 * clients talk to and the PAIR that receives the ROUTER's monitor events.
 * Both are watched with uv_poll on their ZMQ_FD, which is edge-triggered:
 * each wake-up reads until EAGAIN and re-checks ZMQ_EVENTS. Messages go to
 * server/ingest.c; replies go back with ZMQ_DONTWAIT (a peer that cannot
 * take a reply loses it and the loss is counted). When the training store
 * is full the server holds: it reads on, handles at once what peers
 * without a session send and keeps the messages of peers with a session,
 * in order, up to --max-held-bytes; past that the poll is stopped
 * (ZeroMQ's high-water mark then fills and the clients' sends block:
 * backpressure) until the consumer frees space: the store's space callback
 * wakes the loop with uv_async_send, and a 1 ms timer retries as a
 * fallback; held messages are then handled first. A peer without a
 * session that sends more than --max-presession-bytes in one message is
 * dropped unread, then cut; connections over --max-connections are cut as
 * the monitor reports them.
 *
 * Stopping. SIGINT, SIGTERM or a SHUTDOWN control: stop reading, drop the
 * partial steps (counted), let the consumer drain the store (at most
 * --stop-timeout), write server-stats.json, return 0. After END_RECEPTION
 * the server stops the same way once every simulation that said hello has
 * finished or failed; nothing is dropped then.
 *
 * Files in the output folder, written atomically: server.json at start
 * ({"endpoint", "pid"}, how the launcher finds the server) and
 * server-stats.json at exit (every counter; see docs/architecture.md).
 *
 * Threads: the I/O thread (the caller of run) and one consumer thread.
 * Data crosses only through the stores; the consumer wakes the loop only
 * with uv_async_send. No lock is held while calling ZeroMQ.
 */
#ifndef SURGE_SERVER_SERVER_H
#define SURGE_SERVER_SERVER_H

#include "server/counters.h"
#include "server/options.h"

typedef struct surge_server surge_server;

struct surge_ranks; /* server/ranks.h */

/* surge_server_create - bind the socket, start nothing yet. o and ranks
 * (this process's place in the server's MPI job: server/ranks.h) are
 * borrowed and must outlive the server. 0; SURGE_ECONFIG (bad bind endpoint,
 * output folder not writable; logged), -ENOMEM. *out untouched on failure. */
int surge_server_create(surge_server **out, const surge_server_options *o,
                        const struct surge_ranks *ranks);

/* surge_server_run - write server.json, start the consumer thread, run the
 * loop until a stop, write server-stats.json. Returns 0 on a clean stop,
 * a negative code when the stats could not be written or the consumer
 * failed. Call once. */
int surge_server_run(surge_server *srv);

/* surge_server_endpoint - the bound endpoint (port resolved). */
const char *surge_server_endpoint(const surge_server *srv);

/* surge_serve_main - `surge serve [options]`; argv[0] is "serve". Returns
 * the process exit status: 0 ok, 1 failure, 2 usage error. */
int surge_serve_main(int argc, char **argv);

/* surge_server_destroy - close everything; sets *srv to NULL. */
void surge_server_destroy(surge_server **srv);

#endif /* SURGE_SERVER_SERVER_H */
