/*
 * http_conn — the connection layer of the project's HTTP endpoints: accepts
 * connections on nng's stream API (tcp://, or tls+tcp:// so that TLS still
 * comes from nng), reads and parses HTTP/1.1 request headers, hands each
 * request to one function, and writes its response. httpd (routes, tokens,
 * Host check, response headers) is its only user.
 *
 * nng's own HTTP server (1.5.2) has no limit on connections and no timeout
 * on a request header or on an idle connection, so any local user could
 * hold every descriptor of the process with slow connections. Here:
 *   - a request header must arrive whole within header_timeout_ms of the
 *     connection (or of its first byte, for a later request on a kept-alive
 *     connection), and be at most HTTP_HEADER_MAX bytes (431 beyond);
 *   - a kept-alive connection waits at most idle_timeout_ms for its next
 *     request, and a response must be taken by the client within it too;
 *   - at most max_conns connections per listener: a new one first closes
 *     the connection that has waited longest for a request (one whose
 *     request is being answered is never closed); when every connection is
 *     being answered, the new one is closed;
 *   - only GET and HEAD (HEAD: the GET's headers without the body); any
 *     other method gets 405, and a request with a body 400; both close.
 *
 * Invariants: a connection is in one state, and only the party that owns
 * it touches its buffer and aio: nng's callback (READ, SEND) or the request
 * function and whoever it hands the request to (BUSY, until http_conn_respond).
 * Connections are freed only by the listener's janitor thread, never in an
 * aio callback (nng_aio_free waits for its own callback).
 */
#ifndef SAGA_HTTP_CONN_H
#define SAGA_HTTP_CONN_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <stddef.h>

#define HTTP_HEADER_MAX     8192 /* bytes of request line and headers */
#define HTTP_HEADERS_MAX    64   /* header lines in one request */
#define HTTP_MAX_CONNS      64
#define HTTP_HEADER_TIMEOUT 10000 /* ms */
#define HTTP_IDLE_TIMEOUT   60000 /* ms */

typedef struct http_conn http_conn;
typedef struct http_listener http_listener;

typedef struct {
    const char *name;
    const char *value;
} http_header;

/* A parsed request; its strings live until http_conn_respond. */
typedef struct {
    const char *method; /* "GET" or "HEAD" */
    const char *target; /* as sent: "/path?query" */
    http_header headers[HTTP_HEADERS_MAX];
    size_t n_headers;
} http_request;

/* The value of header name (case-insensitive), or NULL. */
const char *http_request_header(const http_request *req, const char *name);

/* Called on nng's threads, once per request; the connection waits for
 * http_conn_respond, which the function (or a thread it hands c to) must
 * call exactly once. */
typedef void (*http_request_fn)(void *arg, http_conn *c, const http_request *req);

typedef struct {
    const char *name;      /* for logs */
    const char *url;       /* http://HOST:PORT or https://HOST:PORT */
    nng_tls_config *tls;   /* for https:// (the listener holds its own reference) */
    int max_conns;         /* 0: HTTP_MAX_CONNS */
    int header_timeout_ms; /* 0: HTTP_HEADER_TIMEOUT */
    int idle_timeout_ms;   /* 0: HTTP_IDLE_TIMEOUT */
    http_request_fn fn;
    void *arg;
} http_listener_opts;

/* Listens on o->url. 0, or an nng error with a reason in err. */
int http_listener_start(http_listener **out, const http_listener_opts *o, char *err, size_t errlen);
/* The TCP port it listens on, or -1. */
int http_listener_port(http_listener *l);
/* Connections open now (for tests). */
int http_listener_conns(http_listener *l);
/* Stops accepting, closes every connection and returns once all are freed:
 * requests being answered hold it until http_conn_respond. NULL: no-op. */
void http_listener_stop(http_listener *l);

/* Sends the response: status line, Content-Length, Connection, then headers
 * (zero or more "Name: value\r\n" lines, may be NULL) and body (not sent
 * for HEAD). Copies what it needs; callable from any thread. */
void http_conn_respond(http_conn *c, int status, const char *headers, const void *body, size_t len);

#endif
