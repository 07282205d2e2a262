/*
 * cli/top.c - `surge top`: a terminal monitor of a running server.
 *
 * It polls the server's /api/v1/status (the same snapshot the dashboard and
 * the launcher read, so the numbers agree) and redraws one screen in place
 * with plain VT100 escapes: alternate screen, cursor home, erase to end of
 * line. No curses, so it works over ssh on any terminal. The terminal is put
 * in non-canonical mode without echo to read single keys; every exit path
 * (q, Ctrl-C, SIGTERM, SIGHUP, an error) restores it.
 *
 * --once prints one snapshot without escapes and exits (for scripts): 0 when
 * the server answered, 1 otherwise.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <surge/error.h>

#include "cli/top.h"
#include "monitor/http.h"

#define URL_MAX 512
#define SCREEN_MAX 65536 /* bytes of one frame */
#define BODY_MAX (8u << 20)

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t resized;

struct top {
    char base[URL_MAX];   /* http://host:port */
    char token[257];      /* study token or "" */
    double interval_s;    /* refresh period */
    int once;             /* print one snapshot and exit */
    int tty;              /* stdout is a terminal: redraw in place */
    int rows, cols;       /* terminal size */
    struct termios saved; /* terminal state to restore */
    int raw;              /* saved is valid and applied */
};

/* A frame under construction: lines are appended, each cut to cols. */
struct frame {
    char buf[SCREEN_MAX]; /* text */
    size_t len;           /* bytes used */
    int lines;            /* lines appended */
    int max_lines;        /* stop appending after this many */
    int cols;             /* line width limit (0: none) */
    int tty;              /* add erase-line escapes */
};

static void line(struct frame *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
line(struct frame *f, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    if (f->max_lines > 0 && f->lines >= f->max_lines) {
        return;
    }
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= sizeof tmp) {
        n = (int)sizeof tmp - 1;
    }
    if (f->cols > 0 && n > f->cols) {
        n = f->cols;
    }
    int w = snprintf(f->buf + f->len, sizeof f->buf - f->len, "%.*s%s\n", n,
                     tmp, f->tty ? "\033[K" : "");
    if (w > 0 && (size_t)w < sizeof f->buf - f->len) {
        f->len += (size_t)w;
        f->lines++;
    }
}

/* ------------------------------------------------------------ formatting */

static double
num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A number for people: "-" when unknown, thousands separated when large. */
static const char *
fmt(char *buf, size_t cap, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "-");
    } else if (fabs(v) >= 1e4 && fabs(v) < 1e15) {
        char digits[32];
        snprintf(digits, sizeof digits, "%.0f", fabs(v));
        size_t n = strlen(digits), o = 0;
        if (v < 0 && o + 1 < cap) {
            buf[o++] = '-';
        }
        for (size_t i = 0; i < n && o + 2 < cap; i++) {
            if (i > 0 && (n - i) % 3 == 0) {
                buf[o++] = ',';
            }
            buf[o++] = digits[i];
        }
        buf[o] = '\0';
    } else if (v != 0 && fabs(v) < 1e-3) {
        snprintf(buf, cap, "%.2e", v);
    } else if (fabs(v) >= 100) {
        snprintf(buf, cap, "%.0f", v);
    } else {
        snprintf(buf, cap, "%.3g", v);
    }
    return buf;
}

static const char *
pct(char *buf, size_t cap, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "-");
    } else {
        snprintf(buf, cap, "%.1f%%", 100.0 * v);
    }
    return buf;
}

/* The server's ranks (status "ranks", docs/monitoring.md): each rank's
 * ingest rate and count and its reservoir shard's occupancy, for a server
 * of 2 ranks or more (the totals above are their sums). At most 16 rows
 * and never more than half the screen, so the runs stay in view. */
static void
render_ranks(json_t *ranks, struct frame *f)
{
    size_t n = json_array_size(ranks);
    char a[40], b[40], c[40], d[40], e[40], g[40];
    if (n < 2) {
        return;
    }
    size_t shown = n;
    if (shown > 16) {
        shown = 16;
    }
    if (f->max_lines > 0 && shown > (size_t)(f->max_lines / 2)) {
        shown = (size_t)(f->max_lines / 2);
    }
    line(f, "%s", "");
    line(f, "%5s  %11s  %11s  %7s  %-21s %-16s %6s  %s", "RANK", "SAMPLES/S",
         "SAMPLES", "DROPPED", "RESERVOIR", "OCCUPANCY", "AGE", "ENDPOINT");
    for (size_t i = 0; i < shown; i++) {
        json_t *o = json_array_get(ranks, i);
        double size = num(o, "reservoir_size");
        double cap = num(o, "reservoir_capacity");
        double occ = num(o, "occupancy");
        if (!isfinite(occ) && isfinite(size) && cap > 0) {
            occ = size / cap;
        }
        char res[88], bar[64] = "-", age[24] = "-";
        snprintf(res, sizeof res, "%s/%s", fmt(d, sizeof d, size),
                 fmt(e, sizeof e, cap));
        if (isfinite(occ)) {
            int fill = (int)(fmin(1.0, fmax(0.0, occ)) * 8 + 0.5);
            snprintf(bar, sizeof bar, "[%-8.*s] %s", fill, "########",
                     pct(g, sizeof g, occ));
        }
        double age_s = num(o, "age_s");
        if (isfinite(age_s)) {
            snprintf(age, sizeof age, "%.1fs", fmin(age_s, 99999.0));
        }
        const char *ep = json_string_value(json_object_get(o, "endpoint"));
        line(f, "%5s  %11s  %11s  %7s  %-21s %-16s %6s  %s",
             fmt(a, sizeof a, num(o, "rank")),
             fmt(b, sizeof b, num(o, "received_per_s")),
             fmt(c, sizeof c, num(o, "samples")),
             fmt(g, sizeof g, num(o, "dropped")), res, bar, age,
             ep != NULL ? ep : "-");
    }
    if (shown < n) {
        line(f, "  ... %zu more ranks", n - shown);
    }
    line(f, "%s", "");
}

static void
render(struct top *t, json_t *st, const char *error, struct frame *f)
{
    char a[40], b[40], c[40], d[40], e[40];
    char clock[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(clock, sizeof clock, "%H:%M:%S", &tm);

    line(f, "surge top  %s  %s%s", t->base, clock,
         t->once ? "" : "   (q to quit)");
    if (st == NULL) {
        line(f, "%s", "");
        line(f, "cannot reach the server: %s", error);
        line(f, "%s", "(retrying)");
        return;
    }
    json_t *info = json_object_get(st, "info");
    const char *k;
    json_t *v;
    char infobuf[512] = "";
    size_t il = 0;
    json_object_foreach(info, k, v)
    {
        if (json_is_string(v) && il < sizeof infobuf) {
            int w = snprintf(infobuf + il, sizeof infobuf - il, "%s%s: %s",
                             il ? "  " : "", k, json_string_value(v));
            il = w > 0 ? il + (size_t)w : il;
        }
    }
    line(f, "up %s s  %s", fmt(a, sizeof a, num(st, "uptime_s")), infobuf);
    line(f, "%s", "");

    json_t *r = json_object_get(st, "rates");
    json_t *in = json_object_get(st, "ingest");
    json_t *res = json_object_get(st, "reservoir");
    json_t *tr = json_object_get(st, "trainer");
    line(f, "ingest     %s samples/s   %s MB/s   received %s   dropped %s",
         fmt(a, sizeof a, num(r, "samples_in_per_s")),
         fmt(b, sizeof b, num(r, "mb_in_per_s")),
         fmt(c, sizeof c, num(in, "samples")),
         fmt(d, sizeof d, num(in, "dropped")));
    line(f, "trainer    %s batches/s   %s samples/s   step %s",
         fmt(a, sizeof a, num(r, "batches_per_s")),
         fmt(b, sizeof b, num(r, "samples_trained_per_s")),
         fmt(c, sizeof c, num(tr, "step")));
    line(f, "loss       %s   validation %s", fmt(a, sizeof a, num(tr, "loss")),
         fmt(b, sizeof b, num(tr, "validation_loss")));
    line(f, "reservoir  %s full   %s samples   %s of %s MB   reuse %s",
         pct(a, sizeof a, num(res, "occupancy")),
         fmt(b, sizeof b, num(res, "samples")),
         fmt(c, sizeof c, num(res, "bytes") / 1e6),
         fmt(d, sizeof d, num(res, "capacity_bytes") / 1e6),
         fmt(e, sizeof e, num(res, "reuse_mean")));
    line(f, "waiting    producers %s   trainer %s",
         pct(a, sizeof a, num(r, "producer_wait")),
         pct(b, sizeof b, num(r, "trainer_wait")));

    render_ranks(json_object_get(st, "ranks"), f);

    json_t *runs = json_object_get(st, "runs");
    size_t nruns = json_array_size(runs);
    size_t running = 0, done = 0, failed = 0;
    for (size_t i = 0; i < nruns; i++) {
        const char *s = json_string_value(
            json_object_get(json_array_get(runs, i), "state"));
        if (s == NULL) {
            continue;
        }
        running += strcmp(s, "running") == 0;
        done += strcmp(s, "done") == 0;
        failed += strcmp(s, "failed") == 0;
    }
    line(f, "runs       %zu   running %zu   done %zu   failed %zu", nruns,
         running, done, failed);
    line(f, "%s", "");
    if (nruns == 0) {
        return;
    }
    line(f, "%8s  %-9s %5s  %13s  %-22s %6s %7s  %s", "SIM", "STATE", "RANKS",
         "STEPS", "PROGRESS", "ETA", "DROPPED", "LAST MSG");
    for (size_t i = 0; i < nruns; i++) {
        json_t *o = json_array_get(runs, i);
        double steps = num(o, "steps"), expect = num(o, "steps_expected");
        char ranks[24], stepbuf[48], bar[24] = "";
        /* Ranks that joined: a running run whose ranks are sending shows
         * them all, not the ranks that already said bye. */
        snprintf(ranks, sizeof ranks, "%.0f/%.0f", num(o, "ranks_joined"),
                 num(o, "ranks"));
        if (isfinite(expect) && expect > 0) {
            double frac = fmin(1.0, steps / expect);
            int fill = (int)(frac * 14 + 0.5);
            snprintf(stepbuf, sizeof stepbuf, "%.0f/%.0f", steps, expect);
            snprintf(bar, sizeof bar, "[%-14.*s] %3.0f%%", fill,
                     "##############", 100 * frac);
        } else {
            snprintf(stepbuf, sizeof stepbuf, "%.0f", steps);
        }
        const char *state = json_string_value(json_object_get(o, "state"));
        double last = num(o, "last_seen_s");
        char lastbuf[24] = "-", etabuf[16] = "-";
        if (isfinite(last)) {
            snprintf(lastbuf, sizeof lastbuf, "%.1fs ago", last);
        }
        double eta = num(o, "eta_s");
        if (isfinite(eta)) {
            snprintf(etabuf, sizeof etabuf, "%.0fs", fmin(eta, 999999.0));
        }
        line(f, "%8.0f  %-9s %5s  %13s  %-22s %6s %7.0f  %s", num(o, "sim"),
             state != NULL ? state : "?", ranks, stepbuf, bar, etabuf,
             num(o, "dropped"), lastbuf);
        if (f->max_lines > 0 && f->lines >= f->max_lines - 1 && i + 1 < nruns) {
            f->max_lines++; /* room for the note below */
            line(f, "  ... %zu more runs", nruns - i - 1);
            break;
        }
    }
}

/* ------------------------------------------------------------- terminal */

static void
on_signal(int sig)
{
    if (sig == SIGWINCH) {
        resized = 1;
    } else {
        stop_flag = 1;
    }
}

static void
term_size(struct top *t)
{
    struct winsize ws;
    t->rows = 24;
    t->cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 &&
        ws.ws_col > 0) {
        t->rows = ws.ws_row;
        t->cols = ws.ws_col;
    }
}

static void
write_all(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void
term_enter(struct top *t)
{
    static const char enter[] = "\033[?1049h\033[?25l\033[H\033[2J";
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &t->saved) == 0) {
        struct termios raw = t->saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) {
            t->raw = 1;
        }
    }
    write_all(enter, sizeof enter - 1);
}

static void
term_leave(struct top *t)
{
    static const char leave[] = "\033[?25h\033[?1049l";
    write_all(leave, sizeof leave - 1);
    if (t->raw) {
        tcsetattr(STDIN_FILENO, TCSANOW, &t->saved);
        t->raw = 0;
    }
}

/* ------------------------------------------------------------ arguments */

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: surge top [--endpoint URL | DIR] [options]\n"
            "\n"
            "Watch a running surge server: rates, reservoir, loss, runs.\n"
            "\n"
            "  --endpoint URL   the server's monitoring address,\n"
            "                   e.g. http://127.0.0.1:8080\n"
            "  DIR, --dir DIR   a study's output folder: reads the address\n"
            "                   from DIR/server.json (key \"http\"), or from\n"
            "                   the newest DIR/*/server.json (latest study)\n"
            "  --token TOKEN    study token (default: $SURGE_TOKEN), needed\n"
            "                   when the server is bound to a public address\n"
            "  --interval S     refresh period in seconds (default 1)\n"
            "  --once           print one snapshot and exit (for scripts)\n"
            "  -h, --help       this text\n"
            "\n"
            "Keys: q quits (Ctrl-C too).\n");
}

/* The newest server.json among DIR/server.json and DIR/ * /server.json (a
 * folder of studies: the latest one), into path. 0, or -1 when none. */
static int
find_server_json(const char *dir, char *path, size_t cap)
{
    struct stat st;
    time_t best = 0;
    int found = 0;
    char cand[1024];
    if ((size_t)snprintf(cand, sizeof cand, "%s/server.json", dir) <
            sizeof cand &&
        stat(cand, &st) == 0) {
        snprintf(path, cap, "%s", cand);
        return 0;
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        if ((size_t)snprintf(cand, sizeof cand, "%s/%s/server.json", dir,
                             e->d_name) >= sizeof cand ||
            stat(cand, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (!found || st.st_mtime > best) {
            best = st.st_mtime;
            found = 1;
            snprintf(path, cap, "%s", cand);
        }
    }
    closedir(d);
    return found ? 0 : -1;
}

/* Reads the "http" key of DIR's (latest) server.json into base. */
static int
from_dir(const char *dir, char *base, size_t cap)
{
    char path[1024];
    json_error_t jerr;
    if (find_server_json(dir, path, sizeof path) < 0) {
        fprintf(stderr,
                "surge top: no server.json in %s or its subfolders (is a "
                "server running with this output folder?)\n",
                dir);
        return -1;
    }
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        fprintf(stderr,
                "surge top: cannot read %s: %s (is a server running with "
                "this output folder?)\n",
                path, jerr.text);
        return -1;
    }
    const char *http = json_string_value(json_object_get(root, "http"));
    if (http == NULL || strlen(http) >= cap) {
        fprintf(stderr,
                "surge top: %s has no \"http\" address (the server runs "
                "without monitoring?)\n",
                path);
        json_decref(root);
        return -1;
    }
    snprintf(base, cap, "%s", http);
    json_decref(root);
    return 0;
}

static int
parse_args(struct top *t, int argc, char **argv)
{
    const char *endpoint = NULL, *dir = NULL;
    const char *env = getenv("SURGE_TOKEN");
    snprintf(t->token, sizeof t->token, "%s", env != NULL ? env : "");
    t->interval_s = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int takes = strcmp(a, "--endpoint") == 0 || strcmp(a, "--dir") == 0 ||
                    strcmp(a, "--token") == 0 || strcmp(a, "--interval") == 0;
        if (takes) {
            if (i + 1 >= argc) {
                fprintf(stderr, "surge top: %s needs a value\n", a);
                return 2;
            }
            val = argv[++i];
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--once") == 0) {
            t->once = 1;
        } else if (strcmp(a, "--endpoint") == 0) {
            endpoint = val;
        } else if (strcmp(a, "--dir") == 0) {
            dir = val;
        } else if (strcmp(a, "--token") == 0) {
            if (strlen(val) >= sizeof t->token) {
                fprintf(stderr, "surge top: --token too long\n");
                return 2;
            }
            snprintf(t->token, sizeof t->token, "%s", val);
        } else if (strcmp(a, "--interval") == 0) {
            char *end;
            errno = 0;
            t->interval_s = strtod(val, &end);
            if (errno != 0 || *end != '\0' || !(t->interval_s >= 0.1) ||
                t->interval_s > 3600) {
                fprintf(stderr,
                        "surge top: --interval wants seconds between 0.1 "
                        "and 3600, not '%s'\n",
                        val);
                return 2;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "surge top: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (dir == NULL && endpoint == NULL) {
            dir = a;
        } else {
            fprintf(stderr, "surge top: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if ((endpoint == NULL) == (dir == NULL)) {
        fprintf(stderr, "surge top: give --endpoint URL or an output folder "
                        "(see --help)\n");
        return 2;
    }
    if (dir != NULL) {
        if (from_dir(dir, t->base, sizeof t->base) < 0) {
            return 3;
        }
    } else {
        if (strncmp(endpoint, "http://", 7) != 0 ||
            strlen(endpoint) >= sizeof t->base) {
            fprintf(stderr,
                    "surge top: --endpoint wants http://HOST:PORT, not "
                    "'%s'\n",
                    endpoint);
            return 2;
        }
        snprintf(t->base, sizeof t->base, "%s", endpoint);
    }
    size_t n = strlen(t->base);
    while (n > 0 && t->base[n - 1] == '/') {
        t->base[--n] = '\0';
    }
    return 0;
}

/* ----------------------------------------------------------------- main */

/* Fetches the status; returns the parsed JSON or NULL with a reason. */
static json_t *
fetch(struct top *t, char *why, size_t cap)
{
    char url[URL_MAX + 32];
    struct surge_http_response resp;
    int timeout_ms = (int)(t->interval_s * 1000);
    if (timeout_ms < 2000) {
        timeout_ms = 2000;
    }
    snprintf(url, sizeof url, "%s/api/v1/status", t->base);
    int rc = surge_http_get(url, t->token, timeout_ms, BODY_MAX, &resp);
    if (rc < 0) {
        snprintf(why, cap, "%s", surge_strerror(rc));
        return NULL;
    }
    if (resp.status != 200) {
        snprintf(why, cap, "HTTP %d: %.200s", resp.status, resp.body);
        surge_http_response_fini(&resp);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(resp.body, resp.body_len, 0, &jerr);
    surge_http_response_fini(&resp);
    if (root == NULL) {
        snprintf(why, cap, "the status is not JSON: %s", jerr.text);
    }
    return root;
}

int
surge_top_main(int argc, char **argv)
{
    static struct top t;
    static struct frame f;
    char why[256];

    memset(&t, 0, sizeof t);
    int rc = parse_args(&t, argc, argv);
    if (rc != 0) {
        return rc == 1 ? 0 : rc == 3 ? 1 : 2;
    }
    t.tty = !t.once && isatty(STDOUT_FILENO);

    if (t.once) {
        json_t *st = fetch(&t, why, sizeof why);
        if (st == NULL) {
            fprintf(stderr, "surge top: %s: %s\n", t.base, why);
            return 1;
        }
        memset(&f, 0, sizeof f);
        render(&t, st, NULL, &f);
        json_decref(st);
        write_all(f.buf, f.len);
        return 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);

    if (t.tty) {
        term_enter(&t);
    }
    int status = 0;
    while (!stop_flag) {
        json_t *st = fetch(&t, why, sizeof why);
        memset(&f, 0, sizeof f);
        if (t.tty) {
            term_size(&t);
            f.tty = 1;
            f.cols = t.cols;
            f.max_lines = t.rows - 1;
            snprintf(f.buf, sizeof f.buf, "\033[H");
            f.len = strlen(f.buf);
        }
        render(&t, st, why, &f);
        json_decref(st);
        if (t.tty && f.len + 8 < sizeof f.buf) {
            memcpy(f.buf + f.len, "\033[J", 3);
            f.len += 3;
        } else if (!t.tty) {
            line(&f, "%s", "--");
        }
        write_all(f.buf, f.len);

        /* Wait for the next refresh, a key or a signal. */
        double left_ms = t.interval_s * 1000;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (!stop_flag && !resized && left_ms > 0) {
            struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
            int n = poll(&p, t.raw ? 1 : 0, (int)left_ms);
            if (n > 0 && (p.revents & POLLIN)) {
                char key[16];
                ssize_t k = read(STDIN_FILENO, key, sizeof key);
                for (ssize_t i = 0; i < k; i++) {
                    if (key[i] == 'q' || key[i] == 'Q' || key[i] == 3) {
                        stop_flag = 1;
                    }
                }
            } else if (n > 0 && (p.revents & (POLLHUP | POLLERR))) {
                stop_flag = 1; /* the terminal went away */
            }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            left_ms = t.interval_s * 1000 -
                      ((double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                       (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
        }
        resized = 0;
    }
    if (t.tty) {
        term_leave(&t);
    }
    return status;
}
