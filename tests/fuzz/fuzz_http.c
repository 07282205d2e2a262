/*
 * tests/fuzz/fuzz_http.c - libFuzzer harness for the monitoring HTTP
 * server's request handling (monitor/http.c): any bytes a client can send.
 *
 * The real server runs on a libuv loop in this thread, listening on
 * 127.0.0.1 (port chosen by the kernel, started once). Each input is sent
 * on a fresh connection, which is then half-closed; the loop runs until
 * the server has closed it. Input is fed in chunks whose sizes the input's
 * first byte chooses, so the parser sees requests split at every place.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - the server ends every connection (within a bound, or the harness
 *    aborts: a hung connection would be a slot lost for good);
 *  - what it sends back is a sequence of well-formed HTTP/1.1 responses
 *    with a status the server documents;
 *  - no connection stays open afterwards (the stats say 0 open).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <http_parser.h>
#include <uv.h>

#include "common/log.h"
#include "monitor/http.h"
#include "monitor/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_SEND 65536       /* bytes sent per connection */
#define MAX_ITERATIONS 20000 /* loop turns before declaring a hang */

static uv_loop_t loop;
static surge_metrics *metrics;
static surge_http *server;
static int port;

static void
fail(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

static void
quiet(int level, const char *component, const char *message, void *arg)
{
    (void)level;
    (void)component;
    (void)message;
    (void)arg;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Refusals are logged; the fuzzer's output is for findings. */
    surge_log_set_level(SURGE_LOG_ERROR);
    surge_log_set_handler(quiet, NULL);
    if (uv_loop_init(&loop) != 0 || surge_metrics_create(0, &metrics) != 0) {
        fail("setup");
    }
    struct surge_http_config cfg;
    surge_http_config_init(&cfg);
    /* Short deadlines: an input that stalls the server shows as a hang
     * quickly instead of after 10 s. Small limits: every limit is hit by
     * inputs of fuzzer size. */
    cfg.request_timeout_ms = 200;
    cfg.idle_timeout_ms = 200;
    cfg.max_header_bytes = 2048;
    cfg.max_request_bytes = 4096;
    cfg.max_url_bytes = 512;
    cfg.max_pending_write_bytes = 65536;
    if (surge_http_create(&loop, &cfg, metrics, &server) != 0) {
        fail("cannot listen on 127.0.0.1");
    }
    port = surge_http_port(server);
    return 0;
}

/* Response checker: every complete response must have a known status. */
struct check {
    int responses; /* complete responses */
    int bad;       /* a status the server does not send */
};

static int
on_complete(http_parser *p)
{
    struct check *c = p->data;
    static const int known[] = {200, 400, 401, 404, 405, 408,
                                413, 414, 431, 500, 503};
    int ok = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        ok |= (int)p->status_code == known[i];
    }
    c->bad |= !ok;
    c->responses++;
    return 0;
}

/* A HEAD answer has a Content-Length and no body. The parser cannot know
 * which requests were HEAD, so bodies are skipped only when the length is
 * absent: a response to a HEAD that says Content-Length then looks like a
 * truncated body at EOF, which is tolerated below. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > MAX_SEND) {
        return 0;
    }
    size_t chunk = 1 + (size_t)data[0] * 16; /* 1..4081 bytes per send */
    data++;
    size--;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        fail("socket");
    }
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Loopback connect completes in the kernel's backlog. Thousands of
     * connections a second leave their ports in TIME_WAIT for a minute:
     * when the kernel has no port left (EADDRNOTAVAIL), wait for some to
     * come free, running the server meanwhile. A connect interrupted by a
     * signal (EINTR: libFuzzer's own timers) is tried again on a fresh
     * socket too. Anything else (refused: the listener is gone) is a
     * finding. */
    int tries = 0;
    while (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if ((errno != EADDRNOTAVAIL && errno != EINTR) || ++tries > 2000) {
            fprintf(stderr, "fuzz_http: connect: %s\n", strerror(errno));
            fail("cannot connect to the server");
        }
        close(fd);
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            fail("socket");
        }
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    http_parser_settings st;
    http_parser_settings_init(&st);
    st.on_message_complete = on_complete;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    struct check chk = {0};
    p.data = &chk;
    size_t sent = 0;
    int half_closed = 0, eof = 0;
    char buf[65536];
    for (int it = 0; !eof; it++) {
        if (it > MAX_ITERATIONS) {
            fail("the server never closed the connection");
        }
        if (sent < size) {
            size_t n = size - sent < chunk ? size - sent : chunk;
            ssize_t w = send(fd, data + sent, n, MSG_NOSIGNAL);
            if (w > 0) {
                sent += (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                sent = size; /* the server closed: stop sending */
            }
        } else if (!half_closed) {
            (void)shutdown(fd, SHUT_WR);
            half_closed = 1;
        }
        uv_run(&loop, half_closed ? UV_RUN_ONCE : UV_RUN_NOWAIT);
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                http_parser_execute(&p, &st, buf, (size_t)n);
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                eof = 1;
            }
            break;
        }
    }
    close(fd);
    http_parser_execute(&p, &st, NULL, 0);
    if (chk.bad) {
        fail("a response with a status the server does not document");
    }
    /* Let the server finish closing its side. */
    struct surge_http_stats s;
    for (int i = 0; i < 100; i++) {
        surge_http_get_stats(server, &s);
        if (s.open == 0) {
            break;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    if (s.open != 0) {
        fail("a connection stayed open after its client left");
    }
    return 0;
}
