/* http_conn — see http_conn.h. */
#include "http_conn.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json_util.h"
#include "log.h"

#define ACCEPT_RETRY_MS 100 /* after a failed accept (out of descriptors) */

enum conn_state { CONN_READ, CONN_BUSY, CONN_SEND };

struct http_conn {
    http_listener *l;
    http_conn *prev, *next; /* live list, or (next only) the janitor's list */
    nng_stream *s;
    nng_aio *aio;
    enum conn_state state;  /* under l->mtx */
    int closed;             /* under l->mtx: evicted or stopping; the stream is closed */
    nng_time waiting_since; /* under l->mtx: when it began waiting for its request */
    /* Owned by whoever owns the state (http_conn.h). */
    nng_time deadline; /* of the current read or send */
    int started;       /* a byte of the current request arrived */
    int keep_alive;
    int head;
    size_t used;     /* bytes in buf */
    size_t consumed; /* bytes of buf the current request's header takes */
    char buf[HTTP_HEADER_MAX + 1];
    http_request req;
    char *out;
    size_t out_len, out_off;
};

struct http_listener {
    http_listener_opts o;
    nng_stream_listener *sl;
    nng_aio *accept_aio;
    nng_mtx *mtx; /* guards everything below and each conn's state/closed/waiting_since */
    nng_cv *cv;
    http_conn *live;
    int n_live;
    http_conn *dead; /* for the janitor to free */
    int accept_backoff;
    log_throttle accept_failed; /* a flood can make accept fail at will */
    int stopping;
    nng_thread *janitor;
};

static void conn_cb(void *arg);
static void conn_next_request(http_conn *c);

/* ---- Connection table -------------------------------------------------- */

/* Hands c to the janitor. Called with l->mtx held, by the party owning c. */
static void conn_retire_locked(http_conn *c)
{
    http_listener *l = c->l;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->n_live--;
    c->closed = 1;
    c->next = l->dead;
    l->dead = c;
    nng_cv_wake(l->cv);
}

static void conn_retire(http_conn *c)
{
    nng_mtx_lock(c->l->mtx);
    conn_retire_locked(c);
    nng_mtx_unlock(c->l->mtx);
}

/* Closes c's stream so that its pending read or send ends (its callback then
 * retires it). nng finishes an aborted aio on its task threads, never inside
 * nng_stream_close, so holding l->mtx here is safe. */
static void conn_close_locked(http_conn *c)
{
    if (!c->closed) {
        c->closed = 1;
        nng_stream_close(c->s);
    }
}

/* Makes room for one more connection: closes the one that has waited
 * longest for a request (the list is newest first: on a tie, the older);
 * when all are being answered, returns 0. */
static int make_room_locked(http_listener *l)
{
    http_conn *victim = NULL;
    for (http_conn *c = l->live; c; c = c->next)
        if (c->state == CONN_READ && !c->closed &&
            (victim == NULL || c->waiting_since <= victim->waiting_since))
            victim = c;
    if (victim == NULL)
        return 0;
    conn_close_locked(victim);
    return 1;
}

static int live_open_locked(http_listener *l)
{
    int n = 0;
    for (http_conn *c = l->live; c; c = c->next)
        n += !c->closed;
    return n;
}

static void janitor_main(void *arg)
{
    http_listener *l = arg;
    nng_mtx_lock(l->mtx);
    for (;;) {
        while (l->dead == NULL && !(l->stopping && l->live == NULL))
            nng_cv_wait(l->cv);
        http_conn *c = l->dead;
        if (c == NULL)
            break; /* stopping, and every connection is freed */
        l->dead = c->next;
        nng_mtx_unlock(l->mtx);
        nng_aio_free(c->aio); /* waits for its callback to return */
        nng_stream_free(c->s);
        free(c->out);
        free(c);
        nng_mtx_lock(l->mtx);
    }
    nng_mtx_unlock(l->mtx);
}

/* ---- Responses --------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

static void conn_send_more(http_conn *c)
{
    nng_iov iov = {.iov_buf = c->out + c->out_off, .iov_len = c->out_len - c->out_off};
    nng_time now = nng_clock();
    nng_aio_set_iov(c->aio, 1, &iov);
    nng_aio_set_timeout(c->aio, c->deadline > now ? (nng_duration)(c->deadline - now) : 1);
    nng_stream_send(c->s, c->aio);
}

void http_conn_respond(http_conn *c, int status, const char *headers, const void *body, size_t len)
{
    http_listener *l = c->l;
    nng_mtx_lock(l->mtx);
    if (c->closed) { /* stopping */
        conn_retire_locked(c);
        nng_mtx_unlock(l->mtx);
        return;
    }
    c->state = CONN_SEND;
    nng_mtx_unlock(l->mtx);
    char head[256];
    int n =
        snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: %s\r\n",
                 status, reason_phrase(status), len, c->keep_alive ? "keep-alive" : "close");
    size_t hlen = headers ? strlen(headers) : 0;
    size_t blen = c->head ? 0 : len;
    free(c->out);
    c->out_len = (size_t)n + hlen + 2 + blen;
    c->out_off = 0;
    c->out = malloc(c->out_len);
    if (c->out == NULL) {
        conn_retire(c);
        return;
    }
    memcpy(c->out, head, (size_t)n);
    if (hlen)
        memcpy(c->out + n, headers, hlen);
    memcpy(c->out + n + hlen, "\r\n", 2);
    if (blen)
        memcpy(c->out + n + hlen + 2, body, blen);
    c->deadline = nng_clock() + (nng_time)l->o.idle_timeout_ms;
    conn_send_more(c);
}

/* Answers a request the transport refuses, then closes. */
static void respond_refusal(http_conn *c, int status, const char *extra, const char *msg)
{
    char headers[128];
    size_t n = 0;
    char *body = ju_error_line(status, msg, &n); /* NULL (out of memory): the status alone */
    snprintf(headers, sizeof headers, "Content-Type: application/json\r\n%s", extra);
    c->keep_alive = 0;
    c->head = 0;
    http_conn_respond(c, status, headers, body ? body : "", n);
    free(body);
}

/* ---- Requests ---------------------------------------------------------- */

const char *http_request_header(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/*
 * Parses the header in c->buf[0..end) (end: just past the blank line) into
 * c->req, in place. 0, or the status to refuse it with (*why: the reason).
 */
static int parse_request(http_conn *c, size_t end, const char **why)
{
    http_request *r = &c->req;
    char *p = c->buf;
    c->buf[end - 2] = '\0'; /* the last CRLF of the blank line */
    memset(r, 0, sizeof *r);
    char *line_end = strstr(p, "\r\n");
    if (line_end)
        *line_end = '\0';
    char *sp1 = strchr(p, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || sp1[1] != '/') {
        *why = "malformed request line";
        return 400;
    }
    *sp1 = *sp2 = '\0';
    r->method = p;
    r->target = sp1 + 1;
    c->keep_alive = strcmp(sp2 + 1, "HTTP/1.1") == 0;
    for (p = line_end ? line_end + 2 : NULL; p && *p;) {
        char *next = strstr(p, "\r\n");
        if (next)
            *next = '\0';
        char *colon = strchr(p, ':');
        if (colon == NULL || colon == p) {
            *why = "malformed header line";
            return 400;
        }
        if (r->n_headers == HTTP_HEADERS_MAX) {
            *why = "too many header lines";
            return 431;
        }
        *colon = '\0';
        r->headers[r->n_headers].name = p;
        r->headers[r->n_headers].value = trim(colon + 1);
        r->n_headers++;
        p = next ? next + 2 : NULL;
    }
    const char *conn = http_request_header(r, "Connection");
    if (conn && strcasecmp(conn, "close") == 0)
        c->keep_alive = 0;
    const char *length = http_request_header(r, "Content-Length");
    if (http_request_header(r, "Transfer-Encoding") || (length && strcmp(length, "0") != 0)) {
        *why = "a request body is not accepted";
        return 400;
    }
    c->head = strcmp(r->method, "HEAD") == 0;
    if (strcmp(r->method, "GET") != 0 && !c->head) {
        *why = "only GET and HEAD are served";
        return 405;
    }
    return 0;
}

/* The end of the header in buf (just past its blank line), or 0. */
static size_t header_end(const char *buf, size_t used)
{
    for (size_t i = 3; i < used; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

/* What is in buf holds a whole header: parse it and hand it on. */
static void dispatch(http_conn *c, size_t end)
{
    http_listener *l = c->l;
    nng_mtx_lock(l->mtx);
    if (c->closed) {
        conn_retire_locked(c);
        nng_mtx_unlock(l->mtx);
        return;
    }
    c->state = CONN_BUSY;
    nng_mtx_unlock(l->mtx);
    c->consumed = end;
    const char *why = NULL;
    int status = parse_request(c, end, &why);
    if (status == 405)
        respond_refusal(c, 405, "Allow: GET, HEAD\r\n", why);
    else if (status != 0)
        respond_refusal(c, status, "", why);
    else
        l->o.fn(l->o.arg, c, &c->req);
}

static void conn_read_more(http_conn *c)
{
    nng_time now = nng_clock();
    if (now >= c->deadline) {
        conn_retire(c); /* too slow: no answer, the client is not waiting for one */
        return;
    }
    nng_iov iov = {.iov_buf = c->buf + c->used, .iov_len = HTTP_HEADER_MAX - c->used};
    nng_aio_set_iov(c->aio, 1, &iov);
    nng_aio_set_timeout(c->aio, (nng_duration)(c->deadline - now));
    nng_stream_recv(c->s, c->aio);
}

/* Looks for a whole header in what has arrived; reads more when there is
 * none yet. */
static void conn_scan(http_conn *c)
{
    size_t end = header_end(c->buf, c->used);
    if (end > 0) {
        dispatch(c, end);
        return;
    }
    if (c->used >= HTTP_HEADER_MAX) {
        http_listener *l = c->l;
        nng_mtx_lock(l->mtx);
        int closed = c->closed;
        if (closed)
            conn_retire_locked(c);
        else
            c->state = CONN_BUSY;
        nng_mtx_unlock(l->mtx);
        if (!closed)
            respond_refusal(c, 431, "", "request header larger than 8 KiB");
        return;
    }
    if (c->used > 0 && !c->started) {
        nng_time by = nng_clock() + (nng_time)c->l->o.header_timeout_ms;
        if (by < c->deadline)
            c->deadline = by;
        c->started = 1;
    }
    conn_read_more(c);
}

/* After a response on a kept-alive connection (or at connect: first). */
static void conn_wait_request(http_conn *c, int first)
{
    http_listener *l = c->l;
    nng_time now = nng_clock();
    /* Bytes after the last header: the next request, already sent. */
    memmove(c->buf, c->buf + c->consumed, c->used - c->consumed);
    c->used -= c->consumed;
    c->consumed = 0;
    c->started = 0;
    c->deadline = now + (nng_time)(first ? l->o.header_timeout_ms : l->o.idle_timeout_ms);
    nng_mtx_lock(l->mtx);
    int closed = c->closed;
    if (closed) {
        conn_retire_locked(c);
    } else {
        c->state = CONN_READ;
        c->waiting_since = now;
    }
    nng_mtx_unlock(l->mtx);
    if (!closed)
        conn_scan(c);
}

static void conn_next_request(http_conn *c)
{
    conn_wait_request(c, 0);
}

static void conn_cb(void *arg)
{
    http_conn *c = arg;
    int rv = nng_aio_result(c->aio);
    size_t n = nng_aio_count(c->aio);
    if (rv != 0) {
        conn_retire(c); /* closed, timed out, or the peer went away */
        return;
    }
    if (c->out != NULL) { /* sending */
        c->out_off += n;
        if (c->out_off < c->out_len) {
            conn_send_more(c);
            return;
        }
        free(c->out);
        c->out = NULL;
        if (!c->keep_alive) {
            conn_retire(c);
            return;
        }
        conn_next_request(c);
        return;
    }
    c->used += n;
    conn_scan(c);
}

/* ---- Listener ---------------------------------------------------------- */

static void accept_cb(void *arg)
{
    http_listener *l = arg;
    int rv = nng_aio_result(l->accept_aio);
    nng_mtx_lock(l->mtx);
    if (l->stopping) {
        nng_mtx_unlock(l->mtx);
        if (rv == 0)
            nng_stream_free(nng_aio_get_output(l->accept_aio, 0));
        return;
    }
    if (l->accept_backoff) { /* the pause after a failed accept is over */
        l->accept_backoff = 0;
        nng_mtx_unlock(l->mtx);
        nng_stream_listener_accept(l->sl, l->accept_aio);
        return;
    }
    if (rv != 0) {
        /* Out of descriptors or memory: try again shortly, not in a loop. */
        uint64_t n = log_throttle_hit(&l->accept_failed, (int64_t)nng_clock());
        if (n > 0)
            log_warn("%s: cannot accept an HTTP connection: %s (%" PRIu64 " since the last report)",
                     l->o.name, nng_strerror(rv), n);
        l->accept_backoff = 1;
        nng_mtx_unlock(l->mtx);
        nng_sleep_aio(ACCEPT_RETRY_MS, l->accept_aio);
        return;
    }
    nng_stream *s = nng_aio_get_output(l->accept_aio, 0);
    http_conn *c = calloc(1, sizeof *c);
    if (c == NULL || nng_aio_alloc(&c->aio, conn_cb, c) != 0) {
        free(c);
        nng_mtx_unlock(l->mtx);
        nng_stream_free(s);
        nng_stream_listener_accept(l->sl, l->accept_aio);
        return;
    }
    c->l = l;
    c->s = s;
    int room = live_open_locked(l) < l->o.max_conns || make_room_locked(l);
    c->next = l->live;
    if (l->live)
        l->live->prev = c;
    l->live = c;
    l->n_live++;
    c->state = CONN_READ;
    c->waiting_since = nng_clock();
    if (!room)
        conn_close_locked(c); /* every connection is being answered */
    nng_mtx_unlock(l->mtx);
    conn_wait_request(c, 1);
    nng_stream_listener_accept(l->sl, l->accept_aio);
}

int http_listener_start(http_listener **out, const http_listener_opts *o, char *err, size_t errlen)
{
    http_listener *l = calloc(1, sizeof *l);
    nng_url *u = NULL;
    int rv = NNG_ENOMEM;
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return rv;
    }
    l->o = *o;
    if (l->o.max_conns <= 0)
        l->o.max_conns = HTTP_MAX_CONNS;
    if (l->o.header_timeout_ms <= 0)
        l->o.header_timeout_ms = HTTP_HEADER_TIMEOUT;
    if (l->o.idle_timeout_ms <= 0)
        l->o.idle_timeout_ms = HTTP_IDLE_TIMEOUT;
    char stream_url[300];
    if ((rv = nng_url_parse(&u, o->url)) != 0 ||
        (size_t)snprintf(stream_url, sizeof stream_url, "%s://%s", o->tls ? "tls+tcp" : "tcp",
                         u->u_host) >= sizeof stream_url) {
        snprintf(err, errlen, "%s: cannot serve %s: %s", o->name, o->url,
                 nng_strerror(rv ? rv : NNG_EINVAL));
        nng_url_free(u);
        free(l);
        return rv ? rv : NNG_EINVAL;
    }
    nng_url_free(u);
    if ((rv = nng_mtx_alloc(&l->mtx)) != 0 || (rv = nng_cv_alloc(&l->cv, l->mtx)) != 0 ||
        (rv = nng_aio_alloc(&l->accept_aio, accept_cb, l)) != 0 ||
        (rv = nng_stream_listener_alloc(&l->sl, stream_url)) != 0 ||
        (o->tls && (rv = nng_stream_listener_set_ptr(l->sl, NNG_OPT_TLS_CONFIG, o->tls)) != 0)) {
        snprintf(err, errlen, "%s: cannot serve %s: %s", o->name, o->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_stream_listener_listen(l->sl)) != 0) {
        snprintf(err, errlen, "%s: cannot listen on %s: %s", o->name, o->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_thread_create(&l->janitor, janitor_main, l)) != 0) {
        snprintf(err, errlen, "%s: cannot start the HTTP janitor: %s", o->name, nng_strerror(rv));
        goto fail;
    }
    nng_stream_listener_accept(l->sl, l->accept_aio);
    *out = l;
    return 0;
fail:
    http_listener_stop(l);
    return rv;
}

int http_listener_port(http_listener *l)
{
    nng_sockaddr sa;
    if (l == NULL || nng_stream_listener_get_addr(l->sl, NNG_OPT_LOCADDR, &sa) != 0)
        return -1;
    if (sa.s_family == NNG_AF_INET)
        return ntohs(sa.s_in.sa_port);
    if (sa.s_family == NNG_AF_INET6)
        return ntohs(sa.s_in6.sa_port);
    return -1;
}

int http_listener_conns(http_listener *l)
{
    nng_mtx_lock(l->mtx);
    int n = live_open_locked(l);
    nng_mtx_unlock(l->mtx);
    return n;
}

void http_listener_stop(http_listener *l)
{
    if (l == NULL)
        return;
    if (l->mtx) {
        nng_mtx_lock(l->mtx);
        l->stopping = 1;
        nng_mtx_unlock(l->mtx);
    }
    if (l->sl)
        nng_stream_listener_close(l->sl);
    if (l->accept_aio)
        nng_aio_stop(l->accept_aio); /* no accept callback runs after this */
    if (l->janitor) {
        nng_mtx_lock(l->mtx);
        /* Connections being answered are retired by http_conn_respond. */
        for (http_conn *c = l->live; c; c = c->next)
            if (c->state != CONN_BUSY)
                conn_close_locked(c);
            else
                c->closed = 1;
        nng_cv_wake(l->cv);
        nng_mtx_unlock(l->mtx);
        nng_thread_destroy(l->janitor); /* joins once every connection is freed */
    }
    if (l->accept_aio)
        nng_aio_free(l->accept_aio);
    if (l->sl)
        nng_stream_listener_free(l->sl);
    if (l->cv)
        nng_cv_free(l->cv);
    if (l->mtx)
        nng_mtx_free(l->mtx);
    free(l);
}
