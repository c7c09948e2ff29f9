/*
 * httpd — the small HTTP server of the project's observability endpoints
 * (sagad's /metrics, JSON API and dashboard; each participant's /metrics):
 * routes and policy. Connections, parsing and their limits (header and idle
 * timeouts, a connection cap, GET and HEAD only) are http_conn's.
 *
 * What every endpoint gets, so that no caller can forget it:
 *   - exposure policy (httpd_check_url): an http:// URL must be loopback
 *     (127.0.0.0/8, ::1, localhost); any other host needs https:// with a
 *     certificate AND a token, like the admin API (docs/SECURITY.md);
 *   - authentication: with a token set (token or read_token), every route
 *     registered with auth=1 requires "Authorization: Bearer <either>"
 *     (constant-time compare) and
 *     answers 401 otherwise; static files (the dashboard's HTML, JS, CSS)
 *     hold no data and are served without it;
 *   - DNS rebinding defence: a request whose Host header names anything but
 *     an IP literal, "localhost" or the configured host is refused (403), so
 *     a web page elsewhere cannot read a loopback endpoint through a
 *     rebound name;
 *   - GET (and HEAD) only; responses carry nosniff, no-store and, for HTML,
 *     a Content-Security-Policy that allows nothing from other origins.
 *
 * Routes: an exact path first, else the longest tree route above it; none:
 * 404.
 *
 * Threads: route functions run one at a time on the server's own worker
 * thread, never on nng's shared threads (which also carry sagad's step
 * replies), so a slow query delays only other HTTP requests. Static files
 * and refusals (401, 403, 404) are answered at once on nng's thread.
 */
#ifndef SAGA_HTTPD_H
#define SAGA_HTTPD_H

#include <stddef.h>

typedef struct httpd httpd;

/* What a route function fills in. body is malloc'd (httpd frees it). */
typedef struct {
    int status;               /* 200 unless set */
    const char *content_type; /* static string; "application/json" unless set */
    char *body;
    size_t len;
} httpd_response;

/* path: the request path without the query ("/api/sagas/ID"); query: what
 * follows '?', or "" (decode with httpd_query_param). */
typedef void (*httpd_fn)(void *arg, const char *path, const char *query, httpd_response *res);

typedef struct {
    const char *name;          /* for logs: "sagad", "payment" */
    const char *url;           /* http://HOST:PORT or https://HOST:PORT */
    const char *token;         /* NULL: no authentication (loopback only) */
    const char *read_token;    /* also accepted (every route here only reads); may be NULL */
    const char *tls_cert_file; /* PEM, for https:// */
    const char *tls_key_file;
    /* Connection limits (http_conn.h); 0: its defaults. */
    int max_connections;
    int header_timeout_ms;
    int idle_timeout_ms;
} httpd_opts;

/*
 * The exposure policy alone, for configuration checks: 0, or -1 with what
 * to configure in err. what names the setting ("http_url", "--metrics-url").
 */
int httpd_check_url(const char *what, const char *url, int tls_ok, int token_ok, char *err,
                    size_t errlen);
/* Checks the policy and prepares a server; nothing listens before httpd_start.
 * NULL with a reason in err. The strings in o must outlive the server. */
httpd *httpd_open(const httpd_opts *o, char *err, size_t errlen);
/* Registers fn for path (tree: also for every path below it). 0 or -1. */
int httpd_route(httpd *h, const char *path, int tree, int auth, httpd_fn fn, void *arg);
/* Serves data (not copied: it must outlive the server) at path. 0 or -1. */
int httpd_static(httpd *h, const char *path, const void *data, size_t len,
                 const char *content_type);
/* Starts listening. 0, or an nng error with a reason in err. */
int httpd_start(httpd *h, char *err, size_t errlen);
/* The TCP port it listens on (useful with port 0), or -1. */
int httpd_port(httpd *h);
/* Connections open now (for tests and logs). */
int httpd_connections(httpd *h);
/* Stops and frees; safe on NULL. */
void httpd_close(httpd *h);

/* The percent-decoded value of name in query into buf; 0, or -1 when absent
 * or longer than buflen - 1. */
int httpd_query_param(const char *query, const char *name, char *buf, size_t buflen);

#endif
