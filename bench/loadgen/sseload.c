/*
 * sseload: Taskstream's own load generator (one thread, epoll).
 *
 * SSE mode (default): open N HTTP/1.1 GET streams to one URL (or to the
 * paths of a file, one per connection, round robin), decode the body
 * (chunked, Content-Length or until close), parse the event stream by the
 * WHATWG rules and measure, per event, receive time - the `ts` of its JSON
 * data (both CLOCK_REALTIME on the same host).
 *
 * POST mode (-p): K keep-alive connections send `POST URL` with a JSON body
 * back to back for -d seconds; counts the answers by status.
 *
 * --selftest: runs the chunk decoder and the SSE parser on tricky input.
 *
 * It always stops by itself (-d), and prints one JSON object on stdout;
 * '#' lines on stderr ("#ramp_done ..." once every connection attempt has
 * resolved).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ time */
static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double t0_mono, t0_real;
static double now(void) { return clock_s(CLOCK_MONOTONIC) - t0_mono; } /* s since start */

/* ------------------------------------------- histogram (us, ~0.4% steps) */
#define HSUB 256
#define HN (2 * HSUB + 40 * HSUB)
typedef struct { uint64_t b[HN], n, negative; double sum, max; } hist_t;

static int hidx(uint64_t v) {
    if (v < 2 * HSUB) return (int)v;
    int e = 63 - __builtin_clzll(v); /* >= 9 */
    int i = 2 * HSUB + (e - 9) * HSUB + (int)((v >> (e - 8)) & (HSUB - 1));
    return i < HN ? i : HN - 1;
}
static double hmid(int i) { /* middle of bucket i, us */
    if (i < 2 * HSUB) return i;
    int e = (i - 2 * HSUB) / HSUB + 9, m = (i - 2 * HSUB) % HSUB + HSUB;
    double w = (double)(1ULL << (e - 8));
    return m * w + w / 2;
}
static void hadd(hist_t *h, double sec) {
    double us = sec * 1e6;
    if (us < 0) { h->negative++; us = 0; }
    h->b[hidx((uint64_t)us)]++;
    h->n++;
    h->sum += us;
    if (us > h->max) h->max = us;
}
static double hpct(const hist_t *h, double p) { /* ms */
    if (!h->n) return 0;
    uint64_t want = (uint64_t)ceil(p / 100 * h->n), seen = 0;
    for (int i = 0; i < HN; i++)
        if ((seen += h->b[i]) >= want) return fmin(hmid(i), h->max) / 1e3;
    return h->max / 1e3;
}
static void hjson(const char *name, const hist_t *h) {
    printf(" \"%s\": {\"n\": %llu, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f, "
           "\"mean\": %.3f, \"negative\": %llu},\n",
           name, (unsigned long long)h->n, hpct(h, 50), hpct(h, 90), hpct(h, 99), h->max / 1e3,
           h->n ? h->sum / h->n / 1e3 : 0.0, (unsigned long long)h->negative);
}

/* ------------------------------------------------------- SSE parser ---- */
/* WHATWG "interpreting an event stream": lines end in CRLF, LF or CR; an
 * empty line dispatches; ':' starts a comment; "field: value" with one
 * optional space; data lines are joined with '\n'; no data, no event. */
typedef struct sse sse_t;
typedef void (*sse_cb)(sse_t *p, const char *type, const char *data, int dlen);
struct sse {
    char *line; int llen, lcap;  /* partial line carried between reads */
    int after_cr;                /* last line ended in '\r': skip a '\n' */
    char type[32];
    char *data; int dlen, dcap;
    int id_in_event;             /* this event block had an id field */
    char last_id[32];            /* last event ID buffer */
    long long retry;             /* last retry value, -1 none */
    int fields, retry_first;     /* field lines seen; the first was retry */
    uint64_t comments, truncated;
    sse_cb on_event;
    void *user;
};

static void grow(char **buf, int *cap, int need) {
    if (need <= *cap) return;
    int c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    *buf = realloc(*buf, c);
    if (!*buf) { perror("realloc"); exit(3); }
    *cap = c;
}

#define LINE_MAX_BYTES (1 << 20)

static void sse_field(sse_t *p, const char *l, int n) {
    if (n == 0) { /* dispatch */
        if (p->dlen) {
            p->dlen--; /* the last '\n' */
            p->data[p->dlen] = 0;
            p->on_event(p, p->type[0] ? p->type : "message", p->data, p->dlen);
        }
        p->dlen = 0;
        p->type[0] = 0;
        p->id_in_event = 0;
        return;
    }
    if (l[0] == ':') { p->comments++; return; }
    const char *colon = memchr(l, ':', n);
    int fl = colon ? (int)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    int vl = (int)(l + n - v);
    if (vl && *v == ' ') { v++; vl--; }
    if (p->fields++ == 0) p->retry_first = fl == 5 && !memcmp(l, "retry", 5);
    if (fl == 4 && !memcmp(l, "data", 4)) {
        grow(&p->data, &p->dcap, p->dlen + vl + 2);
        memcpy(p->data + p->dlen, v, vl);
        p->dlen += vl;
        p->data[p->dlen++] = '\n';
    } else if (fl == 5 && !memcmp(l, "event", 5)) {
        int k = vl < 31 ? vl : 31;
        memcpy(p->type, v, k);
        p->type[k] = 0;
    } else if (fl == 2 && !memcmp(l, "id", 2)) {
        if (!memchr(v, 0, vl)) {
            int k = vl < 31 ? vl : 31;
            memcpy(p->last_id, v, k);
            p->last_id[k] = 0;
            p->id_in_event = 1;
        }
    } else if (fl == 5 && !memcmp(l, "retry", 5)) {
        int digits = vl > 0;
        for (int i = 0; i < vl; i++) digits &= v[i] >= '0' && v[i] <= '9';
        if (digits) p->retry = strtoll(v, NULL, 10);
    }
}

/* Feed decoded body bytes. */
static void sse_feed(sse_t *p, const char *s, int n) {
    const char *end = s + n;
    while (s < end) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (*s == '\n') { s++; continue; }
        }
        const char *q = s;
        while (q < end && *q != '\n' && *q != '\r') q++;
        int seg = (int)(q - s);
        if (q == end || p->llen) { /* (part of) a line that spans reads */
            int keep = seg;
            if (p->llen + keep > LINE_MAX_BYTES) { keep = LINE_MAX_BYTES - p->llen; p->truncated++; }
            grow(&p->line, &p->lcap, p->llen + keep + 1);
            memcpy(p->line + p->llen, s, keep);
            p->llen += keep;
            if (q == end) return;
            sse_field(p, p->line, p->llen);
            p->llen = 0;
        } else {
            sse_field(p, s, seg);
        }
        p->after_cr = *q == '\r';
        s = q + 1;
    }
}

static void sse_free(sse_t *p) {
    free(p->line); free(p->data);
    p->line = p->data = NULL;
    p->lcap = p->dcap = p->llen = p->dlen = 0;
}

/* ------------------------------------------------ HTTP body decoding ---- */
enum { B_CLOSE, B_LENGTH, B_CHUNKED };
enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_END };
typedef struct {
    int kind, st, trailer_len, bad;
    long long left; /* B_LENGTH: bytes left; B_CHUNKED: bytes left in this chunk */
} body_t;
typedef void (*body_sink)(void *ctx, const char *s, int n);

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Returns 1 once the body is complete (the 0 chunk and its trailer, or the
 * length reached); the bytes after it are not consumed. */
static int body_feed(body_t *b, const char *s, int n, body_sink sink, void *ctx, int *used) {
    const char *p = s, *end = s + n;
    if (b->kind == B_CLOSE) { if (n) sink(ctx, s, n); *used = n; return 0; }
    if (b->kind == B_LENGTH) {
        int k = (long long)n < b->left ? n : (int)b->left;
        if (k) sink(ctx, s, k);
        b->left -= k;
        *used = k;
        return b->left == 0;
    }
    while (p < end && b->st != C_END) {
        char c = *p;
        switch (b->st) {
        case C_SIZE: {
            int h = hexval(c);
            if (h >= 0) b->left = b->left * 16 + h;
            else if (c == ';' || c == ' ' || c == '\t') b->st = C_EXT;
            else if (c == '\r') b->st = C_SIZE_LF;
            else if (c == '\n') goto size_end;
            else b->bad = 1, b->st = C_EXT;
            p++;
            break;
        }
        case C_EXT:
            if (c == '\r') b->st = C_SIZE_LF;
            else if (c == '\n') { p++; goto size_end; }
            p++;
            break;
        case C_SIZE_LF:
            if (c != '\n') b->bad = 1;
            p++;
        size_end:
            if (b->left == 0) { b->st = C_TRAILER; b->trailer_len = 0; }
            else b->st = C_DATA;
            break;
        case C_DATA: {
            int k = (long long)(end - p) < b->left ? (int)(end - p) : (int)b->left;
            sink(ctx, p, k);
            p += k;
            b->left -= k;
            if (!b->left) b->st = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
            if (c == '\r') { b->st = C_DATA_LF; p++; break; }
            __attribute__((fallthrough)); /* tolerate a bare LF */
        case C_DATA_LF:
            if (c != '\n') b->bad = 1;
            else p++;
            b->st = C_SIZE;
            b->left = 0;
            break;
        case C_TRAILER: /* lines until an empty one */
            if (c == '\n') { if (b->trailer_len == 0) b->st = C_END; b->trailer_len = 0; }
            else if (c != '\r') b->trailer_len++;
            p++;
            break;
        }
    }
    *used = (int)(p - s);
    return b->st == C_END;
}

/* ------------------------------------------------------- connections ---- */
enum { ST_FREE, ST_CONNECTING, ST_HEADERS, ST_STREAM, ST_CLOSED };
enum { END_NONE, END_CONNECT, END_TIMEOUT, END_BADHDR, END_STATUS, END_DONE, END_EARLY, END_STOP };

typedef struct {
    int fd, state, end, slow, path;
    double t_start, t_est;
    char *hdr; int hlen;          /* response head, while reading it */
    int status, keepalive;
    body_t body;
    sse_t sse;
    /* per stream */
    unsigned long long last_id; int have_id;
    long long base, cur;          /* current at snapshot (or first progress - 1); last current seen */
    long long nprog, nev;
    double newest_prog_ts;        /* slow readers: ts of the newest progress seen */
    double tokens;                /* slow readers: bytes they may still read */
    int got_done, got_snapshot;
    /* POST mode */
    double t_req;
    int woff, sending;
} conn_t;

/* options */
static int N = 1, max_inflight = 256, nslow = 0, close_on_done = 1, quiet = 0, post_mode = 0;
static double duration = 60, hold = -1, hdr_timeout = 15, conn_rate = 0, slow_bps = 2000;
static char host[256], port[16], extra_headers[4096], post_body[4096] = "{}";
static char **paths;
static int npaths;

static struct sockaddr_storage addr;
static socklen_t addrlen;
static int ep;
static conn_t *conns;
static volatile sig_atomic_t interrupted;

/* results */
static hist_t h_lat, h_prog, h_done, h_slow, h_fresh, h_post;
#define MAXTYPES 16
static char type_name[MAXTYPES][32];
static uint64_t type_count[MAXTYPES];
static int ntypes;
static uint64_t events_total, bytes_total, id_violations, id_unparsed, current_went_back, chunk_errors;
static uint64_t progress_not_newer; /* progress whose current is not above what the stream had (snapshot included) */
static int launched, inflight, established, open_now, retry_first;
static int fail_connect, fail_timeout, fail_badhdr, fail_status, closed_done, closed_early;
static int status_codes[600];
static double t_first_ev = -1, t_last_ev = -1, t_ramp = -1, t_last_est = -1, t_first_done = -1, t_last_done = -1;
static long long max_current = -1;
static double recv_real; /* CLOCK_REALTIME of the read being parsed */
static uint64_t post_requests, post_errors, post_reconnects;

/* 100 ms buckets: the measurement window is chosen after the run */
#define BUCKET 0.1
typedef struct { uint64_t events, bytes; long long maxcur; } bucket_t;
static bucket_t *bk;
static int nbk;
static bucket_t *bucket(double t) {
    int i = (int)(t / BUCKET);
    return &bk[i < 0 ? 0 : i >= nbk ? nbk - 1 : i];
}

static int type_slot(const char *t) {
    for (int i = 0; i < ntypes; i++)
        if (!strcmp(type_name[i], t)) return i;
    if (ntypes == MAXTYPES) return MAXTYPES - 1;
    snprintf(type_name[ntypes], 32, "%s", t);
    return ntypes++;
}

/* the number after "key": in a JSON text (flat scan, enough for our records) */
static const char *json_num(const char *s, int n, const char *key) {
    int kl = (int)strlen(key);
    const char *end = s + n, *p = s;
    while ((p = memmem(p, end - p, key, kl))) {
        p += kl;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t')) p++;
            return (p < end && (*p == '-' || (*p >= '0' && *p <= '9'))) ? p : NULL;
        }
    }
    return NULL;
}

static void on_event(sse_t *p, const char *type, const char *data, int dlen) {
    conn_t *c = p->user;
    double t = now();
    int is_prog = !strcmp(type, "progress"), is_done = !strcmp(type, "done"),
        is_snap = !strcmp(type, "snapshot");
    type_count[type_slot(type)]++;
    events_total++;
    c->nev++;
    if (t_first_ev < 0) t_first_ev = t;
    t_last_ev = t;
    bucket(t)->events++;
    if (p->id_in_event) {
        char *e;
        unsigned long long id = strtoull(p->last_id, &e, 10);
        if (e == p->last_id || *e) id_unparsed++;
        else {
            if (c->have_id && id <= c->last_id) id_violations++;
            c->last_id = id;
            c->have_id = 1;
        }
    }
    const char *q = json_num(data, dlen, "\"ts\"");
    double ts = q ? strtod(q, NULL) : 0;
    if (q) {
        double lat = recv_real - ts;
        if (c->slow) hadd(&h_slow, lat);
        else {
            hadd(&h_lat, lat);
            if (is_prog) hadd(&h_prog, lat);
            if (is_done) hadd(&h_done, lat);
        }
    }
    q = json_num(data, dlen, "\"current\"");
    if (q) {
        long long cur = strtoll(q, NULL, 10);
        if (c->cur >= 0 && cur < c->cur && !is_snap) current_went_back++;
        if (is_prog && c->cur >= 0 && cur <= c->cur) progress_not_newer++;
        if (cur > max_current) max_current = cur;
        if (cur > bucket(t)->maxcur) bucket(t)->maxcur = cur;
        if (is_snap && c->base < 0) c->base = cur;
        if (is_prog && c->base < 0) c->base = cur - 1;
        c->cur = cur;
    } else if (is_snap && c->base < 0) {
        c->base = 0;
    }
    if (is_snap) c->got_snapshot = 1;
    if (is_prog) {
        c->nprog++;
        if (q && ts > c->newest_prog_ts) c->newest_prog_ts = ts;
    }
    if (is_done) {
        c->got_done = 1;
        if (t_first_done < 0) t_first_done = t;
        t_last_done = t;
    }
}

static void conn_close(conn_t *c, int why) {
    if (c->state == ST_FREE || c->state == ST_CLOSED) return;
    if (c->state == ST_CONNECTING || c->state == ST_HEADERS) inflight--;
    if (c->state == ST_STREAM) open_now--;
    if (c->fd >= 0) close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = ST_CLOSED;
    c->end = why;
    switch (why) {
    case END_CONNECT: fail_connect++; break;
    case END_TIMEOUT: fail_timeout++; break;
    case END_BADHDR: fail_badhdr++; break;
    case END_STATUS: fail_status++; break;
    case END_DONE: closed_done++; break;
    case END_EARLY: closed_early++; break;
    }
    if (c->sse.retry_first) retry_first++;
    free(c->hdr);
    c->hdr = NULL;
    sse_free(&c->sse);
}

static void conn_open(int i) {
    conn_t *c = &conns[i];
    memset(c, 0, sizeof *c);
    c->path = i % npaths;
    c->slow = i < nslow;
    c->base = c->cur = -1;
    c->sse.retry = -1;
    c->sse.on_event = on_event;
    c->sse.user = c;
    c->t_start = now();
    c->state = ST_CONNECTING;
    launched++;
    inflight++;
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { conn_close(c, END_CONNECT); return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->slow) { /* before connect, so the window is small from the start */
        int rb = 4096;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
    }
    if (connect(c->fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        conn_close(c, END_CONNECT);
        return;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
}

static int build_request(conn_t *c, char *buf, int cap) {
    if (post_mode)
        return snprintf(buf, cap,
                        "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nUser-Agent: sseload\r\n%s\r\n%s",
                        paths[c->path], host, port, strlen(post_body), extra_headers, post_body);
    return snprintf(buf, cap,
                    "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n"
                    "Cache-Control: no-cache\r\nUser-Agent: sseload\r\n%s\r\n",
                    paths[c->path], host, port, extra_headers);
}

/* send the request (small: one write); 0 on failure */
static int send_request(int i) {
    conn_t *c = &conns[i];
    char req[8192 + 4096];
    int n = build_request(c, req, sizeof req);
    c->sending = 1;
    while (c->woff < n) {
        ssize_t w = write(c->fd, req + c->woff, n - c->woff);
        if (w < 0) {
            if (errno == EAGAIN) { /* wait for EPOLLOUT */
                struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                return 1;
            }
            return 0;
        }
        c->woff += (int)w;
    }
    c->woff = c->sending = 0;
    c->t_req = now();
    c->state = ST_HEADERS;
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    return 1;
}

static void sink_sse(void *ctx, const char *s, int n) { sse_feed(&((conn_t *)ctx)->sse, s, n); }
static void sink_none(void *ctx, const char *s, int n) { (void)ctx; (void)s; (void)n; }

/* Parse a complete response head; returns the body bytes already read
 * after it through *rest / *nrest. 0 when malformed. */
static int parse_head(conn_t *c, int headlen) {
    char *h = c->hdr;
    h[headlen - 2] = 0;
    int major = 0, minor = 0;
    if (sscanf(h, "HTTP/%d.%d %d", &major, &minor, &c->status) != 3) return 0;
    c->keepalive = major == 1 && minor >= 1;
    c->body.kind = B_CLOSE;
    for (char *l = strstr(h, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        char *name = l + 2, *colon = strchr(name, ':');
        char *eol = strstr(name, "\r\n");
        if (!colon || (eol && colon > eol)) continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        int nl = (int)(colon - name);
        if (nl == 17 && !strncasecmp(name, "transfer-encoding", 17) && !strncasecmp(v, "chunked", 7))
            c->body.kind = B_CHUNKED;
        else if (nl == 14 && !strncasecmp(name, "content-length", 14) && c->body.kind != B_CHUNKED) {
            c->body.kind = B_LENGTH;
            c->body.left = strtoll(v, NULL, 10);
        } else if (nl == 10 && !strncasecmp(name, "connection", 10))
            c->keepalive = !strncasecmp(v, "keep-alive", 10) || (c->keepalive && strncasecmp(v, "close", 5));
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        c->body.kind = B_LENGTH;
        c->body.left = 0;
    }
    return 1;
}

static void post_finished(int i); /* POST mode: a response was complete */
static int post_stopping;

/* POST mode: a request failed (reset, closed kept-alive connection): count it, reconnect */
static void post_failed(int i) {
    post_errors++;
    conn_close(&conns[i], END_EARLY);
    if (!post_stopping) { post_reconnects++; conn_open(i); }
}

/* body bytes for conn i; returns 1 if the body ended */
static int feed_body(int i, const char *s, int n) {
    conn_t *c = &conns[i];
    int used = 0;
    int ended = body_feed(&c->body, s, n, post_mode ? sink_none : sink_sse, c, &used);
    if (c->body.bad) chunk_errors++, c->body.bad = 0;
    return ended;
}

static void stream_ended(conn_t *c) { conn_close(c, c->got_done ? END_DONE : END_EARLY); }

/* read what conn i has (at most `budget` bytes) and process it */
static void conn_read(int i, long budget) {
    static char buf[1 << 18];
    conn_t *c = &conns[i];
    while (budget > 0 && (c->state == ST_HEADERS || c->state == ST_STREAM)) {
        int want = budget < (long)sizeof buf ? (int)budget : (int)sizeof buf;
        if (c->state == ST_HEADERS && want > 4096) want = 4096;
        ssize_t r = read(c->fd, buf, want);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            if (post_mode) post_failed(i);
            else if (c->state == ST_HEADERS) conn_close(c, END_BADHDR);
            else stream_ended(c);
            return;
        }
        if (r == 0) { /* closed by the server */
            if (post_mode) {
                if (c->state == ST_STREAM && c->body.kind == B_CLOSE) post_finished(i);
                else post_failed(i);
            } else if (c->state == ST_HEADERS) conn_close(c, END_BADHDR);
            else stream_ended(c);
            return;
        }
        budget -= r;
        if (c->slow) c->tokens -= r;
        bytes_total += r;
        recv_real = clock_s(CLOCK_REALTIME);
        if (!post_mode) bucket(now())->bytes += r;
        const char *p = buf;
        int n = (int)r;
        if (c->state == ST_HEADERS) {
            if (!c->hdr) c->hdr = malloc(8192);
            int room = 8191 - c->hlen, k = n < room ? n : room;
            memcpy(c->hdr + c->hlen, p, k);
            c->hlen += k;
            c->hdr[c->hlen] = 0;
            char *e = strstr(c->hdr, "\r\n\r\n");
            if (!e) {
                if (c->hlen >= 8191) conn_close(c, END_BADHDR);
                continue;
            }
            int headlen = (int)(e - c->hdr) + 4, rest = c->hlen - headlen;
            /* the body bytes: those of this read after the head */
            p += k - rest;
            n = rest + (n - k);
            if (!parse_head(c, headlen)) { conn_close(c, END_BADHDR); return; }
            free(c->hdr);
            c->hdr = NULL;
            c->hlen = 0;
            if (c->status < 600) status_codes[c->status]++;
            if (!post_mode && c->status != 200) { conn_close(c, END_STATUS); return; }
            inflight--;
            open_now++;
            c->state = ST_STREAM;
            if (!post_mode) {
                c->t_est = now();
                t_last_est = c->t_est;
                established++;
                if (c->slow) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); /* from now on read by the clock */
            }
        }
        if (n > 0 || c->body.kind == B_LENGTH) {
            int ended = feed_body(i, p, n);
            if (c->state != ST_STREAM) return;
            if (ended) {
                if (post_mode) post_finished(i);
                else stream_ended(c);
                return;
            }
        }
        if (!post_mode && close_on_done && c->got_done) { /* as EventSource.close() after done */
            conn_close(c, END_DONE);
            return;
        }
        if (c->slow) return; /* one read per tick */
        if (r < want) return;
    }
}

/* ------------------------------------------------------------ POST mode */
static void post_finished(int i) {
    conn_t *c = &conns[i];
    post_requests++;
    hadd(&h_post, now() - c->t_req);
    if (!c->keepalive || post_stopping) {
        int ka = c->keepalive;
        open_now--;
        c->state = ST_CLOSED;
        close(c->fd);
        c->fd = -1;
        if (!ka && !post_stopping) { post_reconnects++; conn_open(i); }
        return;
    }
    memset(&c->body, 0, sizeof c->body);
    open_now--;
    inflight++;
    c->state = ST_HEADERS;
    if (!send_request(i)) post_failed(i);
}

/* ------------------------------------------------------------- selftest */
static char st_out[4096];
static void st_event(sse_t *p, const char *type, const char *data, int dlen) {
    size_t l = strlen(st_out);
    snprintf(st_out + l, sizeof st_out - l, "[%s|%.*s|%s]", type, dlen, data, p->id_in_event ? p->last_id : "-");
}
static void st_sink(void *ctx, const char *s, int n) { sse_feed(ctx, s, n); }

/* feed `in` in pieces of `step` bytes (0: all at once) through the chunk decoder if chunked */
static int st_case(const char *name, const char *in, int chunked, const char *want) {
    int fails = 0;
    for (int step = 0; step <= 7; step++) {
        sse_t p = {.retry = -1, .on_event = st_event};
        body_t b = {.kind = chunked ? B_CHUNKED : B_CLOSE};
        st_out[0] = 0;
        int n = (int)strlen(in), off = 0, ended = 0;
        while (off < n && !ended) {
            int k = step ? (n - off < step ? n - off : step) : n;
            int used = 0;
            ended = body_feed(&b, in + off, k, st_sink, &p, &used);
            off += used;
            if (!ended && used < k) break;
        }
        if (strcmp(st_out, want) || b.bad || (chunked && !ended)) {
            fprintf(stderr, "selftest %s (pieces of %d): got %s%s%s, want %s\n", name, step, st_out,
                    b.bad ? " (bad chunk)" : "", chunked && !ended ? " (not ended)" : "", want);
            fails++;
        }
        sse_free(&p);
    }
    return fails;
}

static int selftest(void) {
    int f = 0;
    const char *want = "[progress|{\"current\": 1}|7][done|{\"a\":1}\n{\"b\":2}|8]";
    f += st_case("LF", "retry: 2000\n\nid: 7\nevent: progress\ndata: {\"current\": 1}\n\n"
                       ": keep-alive\n\nid: 8\nevent:done\ndata:{\"a\":1}\ndata: {\"b\":2}\n\n", 0, want);
    f += st_case("CRLF", "retry: 2000\r\n\r\nid: 7\r\nevent: progress\r\ndata: {\"current\": 1}\r\n\r\n"
                         ": keep-alive\r\n\r\nid: 8\r\nevent:done\r\ndata:{\"a\":1}\r\ndata: {\"b\":2}\r\n\r\n", 0, want);
    f += st_case("CR", "retry: 2000\r\rid: 7\revent: progress\rdata: {\"current\": 1}\r\r"
                       ": keep-alive\r\rid: 8\revent:done\rdata:{\"a\":1}\rdata: {\"b\":2}\r\r", 0, want);
    f += st_case("mixed", "id: 7\revent: progress\r\ndata: {\"current\": 1}\n\r\n"
                          "id: 8\nevent:done\r\ndata:{\"a\":1}\rdata: {\"b\":2}\n\n", 0, want);
    /* no data: no event; a field without colon; a value's second space kept; unknown fields ignored */
    f += st_case("rules", "event: x\n\ndata\n\nfoo: bar\ndata:  two\n\nevent: y\nid: 5\n", 0,
                 "[message||-][message| two|-]");
    /* the same stream as HTTP chunks, split anywhere (chunk sizes in hex, an extension, a trailer) */
    f += st_case("chunked",
                 "c\r\nretry: 2000\n\r\n1;x=y\r\n\n\r\n1B\r\nid: 7\nevent: progress\ndata:\r\n"
                 "3e\r\n {\"current\": 1}\n\nid: 8\nevent:done\ndata:{\"a\":1}\ndata: {\"b\":2}\n\n\r\n"
                 "0\r\nX-T: 1\r\n\r\n",
                 1, want);
    long long bads = 0;
    /* histogram percentiles */
    hist_t *h = calloc(1, sizeof *h);
    for (int i = 1; i <= 1000; i++) hadd(h, i * 1e-3); /* 1..1000 ms */
    double p50 = hpct(h, 50), p99 = hpct(h, 99);
    if (fabs(p50 - 500) > 3 || fabs(p99 - 990) > 5) {
        fprintf(stderr, "selftest histogram: p50 %.3f p99 %.3f\n", p50, p99);
        bads++;
    }
    free(h);
    f += (int)bads;
    printf("{\"selftest\": \"%s\", \"failures\": %d}\n", f ? "failed" : "ok", f);
    return f ? 1 : 0;
}

/* ----------------------------------------------------------------- main */
static void on_signal(int s) { (void)s; interrupted = 1; }

static void usage(void) {
    fprintf(stderr,
            "usage: sseload [options] http://HOST:PORT/PATH\n"
            "       sseload -p [-c K] [-d SEC] [-B JSON] http://HOST:PORT/api/tasks\n"
            "       sseload --selftest\n"
            "  -c N      connections (default 1)\n"
            "  -P FILE   paths, one per line: connection i uses line i %% lines (the URL gives the host)\n"
            "  -b N      connection attempts in flight at once (connecting or awaiting headers; default 256)\n"
            "  -r RATE   at most RATE new connections per second (default: only -b limits)\n"
            "  -d SEC    hard time limit of the whole run (default 60)\n"
            "  -i SEC    hold mode: keep every stream SEC s after the ramp, then report how many are open\n"
            "  -t SEC    connect + response header timeout (default 15)\n"
            "  -k        keep reading after `done` (default: close, as EventSource.close() would)\n"
            "  -S K:BPS  the first K connections are slow readers: 4 KB SO_RCVBUF, read at most BPS bytes/s\n"
            "  -H HDR    extra request header (repeatable)\n"
            "  -p        POST mode: each connection POSTs back to back (keep-alive) for -d seconds\n"
            "  -B JSON   POST body (default {})\n"
            "  -q        no '#' progress lines on stderr\n");
    exit(2);
}

static void per_conn_json(const char *name, int slow, int last) {
    long long recv = 0, emitted = 0, with_base = 0, nconn = 0, done = 0, cur_min = -1, prog_min = -1, prog_max = 0;
    for (int i = 0; i < N; i++) {
        conn_t *c = &conns[i];
        if (c->slow != slow || c->t_est <= 0) continue;
        nconn++;
        done += c->got_done;
        if (prog_min < 0 || c->nprog < prog_min) prog_min = c->nprog;
        if (c->nprog > prog_max) prog_max = c->nprog;
        if (cur_min < 0 || c->cur < cur_min) cur_min = c->cur;
        if (c->base >= 0 && c->cur >= 0) {
            recv += c->nprog;
            emitted += c->cur > c->base ? c->cur - c->base : 0;
            with_base++;
        }
    }
    printf(" \"%s\": {\"conns\": %lld, \"got_done\": %lld, \"progress_min\": %lld, \"progress_mean\": %.1f, "
           "\"progress_max\": %lld, \"last_current_min\": %lld, \"emitted_while_connected_mean\": %.1f, "
           "\"received_over_emitted\": %.4f}%s\n",
           name, nconn, done, prog_min < 0 ? 0 : prog_min, with_base ? (double)recv / with_base : 0.0, prog_max,
           cur_min, with_base ? (double)emitted / with_base : 0.0, emitted ? (double)recv / emitted : 0.0,
           last ? "" : ",");
}

static void report_sse(const char *url, const char *stop_reason, double t_end, int open_at_end) {
    /* window: from the end of the ramp (or the last connection made, if the ramp never
       ended) to the last event (stream mode) or to the end (hold mode) */
    int ramp_complete = t_ramp >= 0;
    double w0 = ramp_complete ? t_ramp : t_last_est, w1 = hold >= 0 ? t_end : t_last_ev;
    uint64_t wev = 0, wbytes = 0;
    long long cur0 = -1, cur1 = -1;
    double cur1_t = -1, span = 0;
    if (w0 >= 0 && w1 > w0) {
        int b0 = (int)ceil(w0 / BUCKET - 1e-9);
        w0 = b0 * BUCKET;
        span = w1 - w0;
        for (int i = 0; i < nbk; i++) {
            if (i < b0) { if (bk[i].maxcur > cur0) cur0 = bk[i].maxcur; continue; }
            wev += bk[i].events;
            wbytes += bk[i].bytes;
            if (bk[i].maxcur > cur1) { cur1 = bk[i].maxcur; cur1_t = fmin((i + 1) * BUCKET, w1); }
        }
        if (span < 0.5) span = 0, wev = wbytes = 0; /* too short to mean anything */
    }
    if (cur0 < 0) cur0 = 0;
    double steps_span = cur1_t > w0 ? cur1_t - w0 : 0;
    int got_done = 0, never = N - launched, still = 0;
    for (int i = 0; i < N; i++) {
        got_done += conns[i].got_done;
        still += conns[i].state == ST_CONNECTING || conns[i].state == ST_HEADERS;
    }
    double all_span = t_last_ev > t_first_ev ? t_last_ev - t_first_ev : 0;
    printf("{\"tool\": \"sseload\", \"mode\": \"%s\", \"url\": \"%s\", \"paths\": %d, \"connections\": %d,\n",
           hold >= 0 ? "hold" : "stream", url, npaths, N);
    printf(" \"stop_reason\": \"%s\", \"duration_s\": %.3f, \"ramp_s\": %.3f, \"last_established_s\": %.3f,\n",
           stop_reason, t_end, t_ramp, t_last_est);
    printf(" \"established\": %d, \"failed\": %d, \"failed_connect\": %d, \"failed_timeout\": %d, "
           "\"failed_bad_header\": %d, \"failed_status\": %d, \"never_launched\": %d, \"still_connecting\": %d,\n",
           established, fail_connect + fail_timeout + fail_badhdr + fail_status, fail_connect, fail_timeout,
           fail_badhdr, fail_status, never, still);
    printf(" \"status_codes\": {");
    for (int s = 0, first = 1; s < 600; s++)
        if (status_codes[s]) printf("%s\"%d\": %d", first ? "" : ", ", s, status_codes[s]), first = 0;
    printf("},\n \"closed_after_done\": %d, \"closed_early\": %d, \"open_at_end\": %d, \"got_done\": %d, "
           "\"retry_first\": %d,\n", closed_done, closed_early, open_at_end, got_done, retry_first);
    uint64_t comments = 0, truncated = 0;
    for (int i = 0; i < N; i++) comments += conns[i].sse.comments, truncated += conns[i].sse.truncated;
    printf(" \"events\": {");
    for (int i = 0; i < ntypes; i++) printf("%s\"%s\": %llu", i ? ", " : "", type_name[i], (unsigned long long)type_count[i]);
    printf("}, \"events_total\": %llu, \"comments\": %llu, \"id_violations\": %llu, \"id_unparsed\": %llu, "
           "\"current_went_back\": %llu, \"progress_not_newer\": %llu, \"chunk_errors\": %llu, \"lines_truncated\": %llu,\n",
           (unsigned long long)events_total, (unsigned long long)comments, (unsigned long long)id_violations,
           (unsigned long long)id_unparsed, (unsigned long long)current_went_back,
           (unsigned long long)progress_not_newer, (unsigned long long)chunk_errors, (unsigned long long)truncated);
    printf(" \"bytes\": %llu, \"first_event_s\": %.3f, \"last_event_s\": %.3f, \"max_current\": %lld,\n",
           (unsigned long long)bytes_total, t_first_ev, t_last_ev, max_current);
    printf(" \"events_per_s\": %.1f, \"bytes_per_s\": %.1f,\n", all_span ? events_total / all_span : 0.0,
           all_span ? bytes_total / all_span : 0.0);
    printf(" \"window\": {\"ramp_complete\": %s, \"from_s\": %.3f, \"span_s\": %.3f, \"events\": %llu, "
           "\"events_per_s\": %.1f, \"bytes_per_s\": %.1f, \"max_current_at_start\": %lld, \"max_current\": %lld, "
           "\"task_steps_per_s\": %.1f},\n",
           ramp_complete ? "true" : "false", w0, span, (unsigned long long)wev, span ? wev / span : 0.0,
           span ? wbytes / span : 0.0, cur0, cur1, steps_span > 0 && cur1 > cur0 ? (cur1 - cur0) / steps_span : 0.0);
    hjson("latency_ms", &h_lat);
    hjson("latency_progress_ms", &h_prog);
    hjson("latency_done_ms", &h_done);
    printf(" \"done_spread_ms\": %.3f,\n", t_first_done >= 0 ? (t_last_done - t_first_done) * 1e3 : -1.0);
    if (nslow) {
        printf(" \"slow\": {\"conns\": %d, \"bytes_per_s\": %.0f},\n", nslow, slow_bps);
        hjson("latency_slow_ms", &h_slow);
        hjson("freshness_slow_ms", &h_fresh);
        per_conn_json("per_conn_slow", 1, 0);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    printf(" \"client_cpu_s\": %.3f, \"client_cpu_pct\": %.1f,\n", cpu, t_end > 0 ? 100 * cpu / t_end : 0.0);
    per_conn_json("per_conn", 0, 1);
    printf("}\n");
    if (!quiet)
        fprintf(stderr, "#end %s: est %d failed %d early %d done %d open %d | %llu events, window %.0f ev/s | "
                        "latency ms p50 %.2f p99 %.2f max %.1f\n",
                stop_reason, established, fail_connect + fail_timeout + fail_badhdr + fail_status, closed_early,
                got_done, open_at_end, (unsigned long long)events_total, span ? wev / span : 0.0, hpct(&h_lat, 50),
                hpct(&h_lat, 99), h_lat.max / 1e3);
}

static void report_post(const char *url, double t_end, double t_send_end) {
    int ok = status_codes[202] + status_codes[200] + status_codes[201];
    printf("{\"tool\": \"sseload\", \"mode\": \"post\", \"url\": \"%s\", \"connections\": %d, \"duration_s\": %.3f,\n",
           url, N, t_end);
    printf(" \"requests\": %llu, \"status_codes\": {", (unsigned long long)post_requests);
    for (int s = 0, first = 1; s < 600; s++)
        if (status_codes[s]) printf("%s\"%d\": %d", first ? "" : ", ", s, status_codes[s]), first = 0;
    printf("}, \"ok_202\": %d, \"non_2xx\": %llu, \"errors\": %llu, \"failed_connect\": %d, \"reconnects\": %llu,\n",
           status_codes[202], (unsigned long long)post_requests - ok, (unsigned long long)post_errors, fail_connect,
           (unsigned long long)post_reconnects);
    printf(" \"req_per_s\": %.1f, \"ok_202_per_s\": %.1f,\n", post_requests / t_send_end, status_codes[202] / t_send_end);
    hjson("latency_ms", &h_post);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    printf(" \"client_cpu_pct\": %.1f}\n", t_end > 0 ? 100 * cpu / t_end : 0.0);
    if (!quiet)
        fprintf(stderr, "#end post: %llu requests, %d x 202, %.0f req/s, p50 %.2f p99 %.2f ms\n",
                (unsigned long long)post_requests, status_codes[202], post_requests / t_send_end, hpct(&h_post, 50),
                hpct(&h_post, 99));
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--selftest")) return selftest();
    int opt;
    const char *pathfile = NULL;
    while ((opt = getopt(argc, argv, "c:P:b:r:d:i:t:kS:H:pB:q")) != -1) {
        switch (opt) {
        case 'c': N = atoi(optarg); break;
        case 'P': pathfile = optarg; break;
        case 'b': max_inflight = atoi(optarg); break;
        case 'r': conn_rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'i': hold = atof(optarg); break;
        case 't': hdr_timeout = atof(optarg); break;
        case 'k': close_on_done = 0; break;
        case 'S':
            nslow = atoi(optarg);
            if (strchr(optarg, ':')) slow_bps = atof(strchr(optarg, ':') + 1);
            break;
        case 'H':
            if (strlen(extra_headers) + strlen(optarg) + 3 < sizeof extra_headers) {
                strcat(extra_headers, optarg);
                strcat(extra_headers, "\r\n");
            }
            break;
        case 'p': post_mode = 1; break;
        case 'B': snprintf(post_body, sizeof post_body, "%s", optarg); break;
        case 'q': quiet = 1; break;
        default: usage();
        }
    }
    if (optind != argc - 1 || N < 1 || max_inflight < 1 || duration <= 0) usage();
    const char *url = argv[optind];
    if (strncmp(url, "http://", 7)) usage();
    const char *hp = url + 7, *slash = strchr(hp, '/');
    int hl = slash ? (int)(slash - hp) : (int)strlen(hp);
    snprintf(host, sizeof host, "%.*s", hl, hp);
    char *colon = strrchr(host, ':');
    snprintf(port, sizeof port, "%s", colon ? colon + 1 : "80");
    if (colon) *colon = 0;
    if (pathfile) {
        FILE *f = fopen(pathfile, "r");
        if (!f) { perror(pathfile); return 2; }
        char line[4096];
        int cap = 0;
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (!line[0]) continue;
            if (npaths == cap) paths = realloc(paths, (cap = cap ? 2 * cap : 64) * sizeof *paths);
            paths[npaths++] = strdup(line);
        }
        fclose(f);
        if (!npaths) { fprintf(stderr, "no paths in %s\n", pathfile); return 2; }
    } else {
        paths = malloc(sizeof *paths);
        paths[0] = strdup(slash ? slash : "/");
        npaths = 1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai)) { fprintf(stderr, "cannot resolve %s\n", host); return 2; }
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    struct rlimit rl; /* one fd per connection */
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)N + 16)
        fprintf(stderr, "#warning: open files limit %llu < %d connections\n", (unsigned long long)rl.rlim_cur, N);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    conns = calloc(N, sizeof *conns);
    nbk = (int)((duration + 3) / BUCKET) + 2;
    bk = calloc(nbk, sizeof *bk);
    for (int i = 0; i < nbk; i++) bk[i].maxcur = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event evs[1024];
    t0_mono = clock_s(CLOCK_MONOTONIC);
    t0_real = clock_s(CLOCK_REALTIME);

    int next = 0;
    const char *stop_reason = "all_ended";
    double t_hold_end = -1, last_check = 0, last_tick = 0, last_fresh = 0, t_send_end = duration;
    for (;;) {
        double t = now();
        if (interrupted) { stop_reason = "signal"; break; }
        if (t >= duration + (post_mode ? 2 : 0)) { stop_reason = "time_limit"; break; }
        if (post_mode && t >= duration && !post_stopping) { /* then only the answers in flight */
            post_stopping = 1;
            t_send_end = t;
        }
        while (next < N && inflight < max_inflight && (conn_rate <= 0 || next < conn_rate * t + 1) && !post_stopping) {
            conn_open(next++);
        }
        if (next == N && inflight == 0 && t_ramp < 0 && !post_mode) {
            t_ramp = t;
            if (hold >= 0) t_hold_end = t + hold;
            if (!quiet)
                fprintf(stderr, "#ramp_done t=%.3f established=%d failed=%d open=%d\n", t, established,
                        fail_connect + fail_timeout + fail_badhdr + fail_status, open_now);
        }
        if (t_hold_end >= 0 && t >= t_hold_end) { stop_reason = "hold_elapsed"; break; }
        if (hold < 0 && next == N && inflight == 0 && open_now == 0) {
            if (post_mode && !post_stopping) t_send_end = t;
            break;
        }
        int n = epoll_wait(ep, evs, 1024, nslow ? 10 : 50);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            conn_t *c = &conns[i];
            if (c->state == ST_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || (evs[k].events & (EPOLLERR | EPOLLHUP))) { conn_close(c, END_CONNECT); continue; }
                if (!send_request(i)) conn_close(c, END_CONNECT);
            } else if (c->state == ST_HEADERS && c->sending) { /* POST: rest of the request */
                if (!send_request(i)) post_failed(i);
            } else if (c->state == ST_HEADERS || c->state == ST_STREAM) {
                conn_read(i, c->slow && c->state == ST_STREAM ? 0 : 1L << 30);
            }
        }
        t = now();
        if (nslow && t - last_tick >= 0.01) { /* slow readers: a share of their byte rate every 10 ms */
            double dt = last_tick ? t - last_tick : 0.01;
            last_tick = t;
            for (int i = 0; i < nslow && i < next; i++) {
                conn_t *c = &conns[i];
                if (c->state != ST_STREAM) continue;
                c->tokens += slow_bps * dt;
                if (c->tokens > slow_bps * 0.1) c->tokens = slow_bps * 0.1; /* no bursts after a pause */
                if (c->tokens >= 1) conn_read(i, (long)c->tokens);
            }
        }
        if (nslow && t - last_fresh >= 0.1) { /* freshness: age of the newest progress each slow reader has */
            last_fresh = t;
            double real = clock_s(CLOCK_REALTIME);
            for (int i = 0; i < nslow && i < next; i++)
                if (conns[i].state == ST_STREAM && conns[i].newest_prog_ts > 0 && !conns[i].got_done)
                    hadd(&h_fresh, real - conns[i].newest_prog_ts);
        }
        if (t - last_check > 0.2) {
            last_check = t;
            for (int i = 0; i < next; i++) {
                conn_t *c = &conns[i];
                if ((c->state == ST_CONNECTING || (c->state == ST_HEADERS && !post_mode)) && t - c->t_start > hdr_timeout)
                    conn_close(c, END_TIMEOUT);
                else if (post_mode && c->state == ST_HEADERS && t - c->t_req > hdr_timeout) {
                    post_errors++;
                    conn_close(c, END_TIMEOUT);
                }
            }
        }
    }
    double t_end = now();
    int open_at_end = open_now;
    for (int i = 0; i < N; i++)
        if (conns[i].state == ST_STREAM && conns[i].sse.retry_first) retry_first++;
    if (post_mode) report_post(url, t_end, t_send_end > 0 ? t_send_end : t_end);
    else report_sse(url, stop_reason, t_end, open_at_end);
    fflush(stdout);
    return 0;
}
