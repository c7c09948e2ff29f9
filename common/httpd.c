/* httpd — see httpd.h. */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_conn.h"
#include "json_util.h"
#include "log.h"
#include "security.h"
#include "util.h"

typedef struct route {
    struct route *next;
    httpd *owner;
    char *path;
    int tree;
    int auth;
    httpd_fn fn; /* NULL: static data */
    void *arg;
    const void *data;
    size_t len;
    const char *content_type;
} route;

/* A request for a route function, waiting for the worker. */
typedef struct job {
    struct job *next;
    http_conn *conn;
    route *r;
    char *path; /* malloc'd; the query points into it */
    const char *query;
} job;

struct httpd {
    const char *name;
    const char *token, *read_token; /* either opens the auth routes; NULL: not set */
    char *host;                     /* the URL's host, for the Host header check */
    const char *url;
    nng_tls_config *tls; /* https:// only */
    http_listener_opts limits;
    http_listener *listener; /* after httpd_start */
    route *routes;
    /* Route functions run on this thread, not on nng's: they read SQLite,
     * and nng's few shared threads also carry sagad's step replies, which
     * must not wait behind a dashboard's query. */
    nng_thread *worker;
    nng_mtx *mtx; /* guards jobs and stopping */
    nng_cv *cv;
    job *jobs, *jobs_tail;
    int stopping;
};

/* ---- Policy ---------------------------------------------------------------- */

static int url_is_https(const char *url)
{
    return strncmp(url, "https://", 8) == 0;
}

/* Does the URL's authority end in ":port"? nng_url_parse fills in 80 or 443
 * when it does not, so this looks at the text. */
static int url_names_port(const char *url)
{
    const char *auth = strstr(url, "://") + 3;
    size_t len = strcspn(auth, "/?#");
    const char *host_end = auth;
    if (*auth == '[') { /* [v6]:port */
        host_end = memchr(auth, ']', len);
        if (host_end == NULL)
            return 0;
    }
    const char *colon = memchr(host_end, ':', len - (size_t)(host_end - auth));
    return colon != NULL && colon + 1 < auth + len;
}

int httpd_check_url(const char *what, const char *url, int tls_ok, int token_ok, char *err,
                    size_t errlen)
{
    nng_url *u = NULL;
    if ((strncmp(url, "http://", 7) != 0 && !url_is_https(url)) || nng_url_parse(&u, url) != 0) {
        snprintf(err, errlen, "%s: \"%s\" is not an http:// or https:// URL", what, url);
        return -1;
    }
    nng_url_free(u);
    if (!url_names_port(url)) {
        snprintf(err, errlen, "%s: %s needs a port (http://127.0.0.1:9464)", what, url);
        return -1;
    }
    if (url_is_https(url) && !tls_ok) {
        snprintf(err, errlen, "%s: %s is https:// but no certificate and key are configured", what,
                 url);
        return -1;
    }
    if (sec_url_is_local(url) || (url_is_https(url) && tls_ok && token_ok))
        return sec_check_listen_host(what, url, err, errlen);
    snprintf(err, errlen,
             "%s: refusing to serve %s, which other hosts can reach, without TLS and a token: "
             "use https:// with a certificate and an admin token, or a loopback address "
             "(http://127.0.0.1:PORT) (see docs/OBSERVABILITY.md)",
             what, url);
    return -1;
}

/* ---- Requests ----------------------------------------------------------------- */

/* Is the Host header one we answer (see httpd.h: DNS rebinding)? */
static int host_allowed(const httpd *h, const char *host_header)
{
    if (host_header == NULL || *host_header == '\0')
        return 1; /* HTTP/1.0 without Host: no name was resolved */
    char host[256];
    size_t n = 0;
    if (host_header[0] == '[') { /* [v6]:port */
        const char *end = strchr(host_header, ']');
        if (end == NULL || (size_t)(end - host_header) >= sizeof host)
            return 0;
        n = (size_t)(end - host_header - 1);
        memcpy(host, host_header + 1, n);
        host[n] = '\0';
        unsigned char buf[16];
        return inet_pton(AF_INET6, host, buf) == 1;
    }
    while (host_header[n] && host_header[n] != ':' && n + 1 < sizeof host) {
        host[n] = host_header[n];
        n++;
    }
    host[n] = '\0';
    unsigned char buf[4];
    if (inet_pton(AF_INET, host, buf) == 1 || strcasecmp(host, "localhost") == 0)
        return 1;
    return h->host[0] != '\0' && strcasecmp(host, h->host) == 0;
}

static int authorized(const httpd *h, const http_request *req)
{
    if (h->token == NULL && h->read_token == NULL)
        return 1;
    const char *auth = http_request_header(req, "Authorization");
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    const char *given = auth + 7;
    size_t len = strlen(given);
    /* Both compared, whatever the first gives: the time tells nothing. */
    int ok_admin = h->token != NULL && sec_equal(given, len, h->token, strlen(h->token));
    int ok_read =
        h->read_token != NULL && sec_equal(given, len, h->read_token, strlen(h->read_token));
    return ok_admin | ok_read;
}

static void respond(http_conn *c, int status, const char *content_type, const void *body,
                    size_t len, int html)
{
    char headers[512];
    snprintf(headers, sizeof headers,
             "Content-Type: %s\r\n"
             "X-Content-Type-Options: nosniff\r\n"
             "Cache-Control: no-store\r\n"
             "Referrer-Policy: no-referrer\r\n"
             "%s%s",
             content_type,
             html ? "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n" : "",
             status == 401 ? "WWW-Authenticate: Bearer realm=\"saga\"\r\n" : "");
    http_conn_respond(c, status, headers, body, len);
}

static void respond_error(http_conn *c, int status, const char *msg)
{
    size_t n = 0;
    char *body = ju_error_line(status, msg, &n); /* NULL (out of memory): the status alone */
    respond(c, status, "application/json", body ? body : "", n, 0);
    free(body);
}

/* The route for path: an exact one, else the longest tree route above it. */
static route *find_route(const httpd *h, const char *path, size_t len)
{
    route *best = NULL;
    size_t best_len = 0;
    for (route *r = h->routes; r; r = r->next) {
        size_t rlen = strlen(r->path);
        if (rlen == len && strncmp(r->path, path, len) == 0)
            return r;
        if (r->tree && rlen < len && strncmp(r->path, path, rlen) == 0 &&
            (path[rlen] == '/' || (rlen > 0 && r->path[rlen - 1] == '/')) && rlen >= best_len) {
            best = r;
            best_len = rlen;
        }
    }
    return best;
}

/* Every request, from http_conn (on nng's threads). */
static void on_request(void *arg, http_conn *c, const http_request *req)
{
    httpd *h = arg;
    const char *target = req->target;
    size_t path_len = strcspn(target, "?");
    route *r = find_route(h, target, path_len);

    if (!host_allowed(h, http_request_header(req, "Host"))) {
        respond_error(c, 403, "host not allowed");
        return;
    }
    if (r == NULL) {
        respond_error(c, 404, "not found");
        return;
    }
    if (r->fn == NULL) {
        const char *ct = r->content_type;
        respond(c, 200, ct, r->data, r->len, strncmp(ct, "text/html", 9) == 0);
        return;
    }
    if (r->auth && !authorized(h, req)) {
        respond_error(c, 401, "missing or wrong token (Authorization: Bearer TOKEN)");
        return;
    }
    job *j = calloc(1, sizeof *j);
    char *path = util_strdup(target);
    if (j == NULL || path == NULL) {
        free(j);
        free(path);
        respond_error(c, 500, "out of memory");
        return;
    }
    char *q = strchr(path, '?');
    j->query = "";
    if (q != NULL) {
        *q = '\0';
        j->query = q + 1;
    }
    j->conn = c;
    j->r = r;
    j->path = path;
    /* The connection waits for its answer (also when stopping the server):
     * the worker always answers, and runs until the server has stopped. */
    nng_mtx_lock(h->mtx);
    if (h->jobs_tail)
        h->jobs_tail->next = j;
    else
        h->jobs = j;
    h->jobs_tail = j;
    nng_cv_wake1(h->cv);
    nng_mtx_unlock(h->mtx);
}

static void run_job(job *j)
{
    httpd_response res = {200, "application/json", NULL, 0};
    j->r->fn(j->r->arg, j->path, j->query, &res);
    if (res.body == NULL && res.status == 200)
        respond_error(j->conn, 500, "out of memory");
    else
        respond(j->conn, res.status, res.content_type, res.body ? res.body : "",
                res.body ? res.len : 0, strncmp(res.content_type, "text/html", 9) == 0);
    free(res.body);
    free(j->path);
    free(j);
}

static void worker_main(void *arg)
{
    httpd *h = arg;
    nng_mtx_lock(h->mtx);
    for (;;) {
        while (h->jobs == NULL && !h->stopping)
            nng_cv_wait(h->cv);
        job *j = h->jobs;
        if (j == NULL)
            break; /* stopping, and nothing left to answer */
        h->jobs = j->next;
        if (h->jobs == NULL)
            h->jobs_tail = NULL;
        nng_mtx_unlock(h->mtx);
        run_job(j);
        nng_mtx_lock(h->mtx);
    }
    nng_mtx_unlock(h->mtx);
}

/* ---- Server -------------------------------------------------------------------- */

static char *read_pem(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    char *buf = malloc(1024 * 1024 + 1);
    size_t n = buf ? fread(buf, 1, 1024 * 1024, f) : 0;
    fclose(f);
    if (buf == NULL || n == 0) {
        free(buf);
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static int setup_tls(httpd *h, const httpd_opts *o, char *err, size_t errlen)
{
    char *cert = read_pem(o->tls_cert_file, err, errlen);
    char *key = cert ? read_pem(o->tls_key_file, err, errlen) : NULL;
    int rv = -1;
    if (key == NULL)
        goto out;
    if ((rv = nng_tls_config_alloc(&h->tls, NNG_TLS_MODE_SERVER)) != 0 ||
        (rv = nng_tls_config_own_cert(h->tls, cert, key, NULL)) != 0)
        snprintf(err, errlen, "TLS for %s: %s", o->url, nng_strerror(rv));
out:
    if (key)
        sec_wipe(key, strlen(key));
    free(key);
    free(cert);
    return rv;
}

httpd *httpd_open(const httpd_opts *o, char *err, size_t errlen)
{
    int tls_ok = o->tls_cert_file != NULL && o->tls_key_file != NULL;
    if (httpd_check_url(o->name, o->url, tls_ok, o->token != NULL || o->read_token != NULL, err,
                        errlen) != 0)
        return NULL;
    httpd *h = calloc(1, sizeof *h);
    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->name = o->name;
    h->token = o->token;
    h->read_token = o->read_token;
    h->url = o->url;
    h->limits = (http_listener_opts){.max_conns = o->max_connections,
                                     .header_timeout_ms = o->header_timeout_ms,
                                     .idle_timeout_ms = o->idle_timeout_ms};
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, o->url);
    if (rv == 0) {
        h->host = util_strdup(u->u_hostname);
        rv = h->host ? 0 : NNG_ENOMEM;
    }
    nng_url_free(u);
    if (rv != 0) {
        snprintf(err, errlen, "%s: cannot serve %s: %s", o->name, o->url, nng_strerror(rv));
        httpd_close(h);
        return NULL;
    }
    if (url_is_https(o->url) && setup_tls(h, o, err, errlen) != 0) {
        httpd_close(h);
        return NULL;
    }
    if ((rv = nng_mtx_alloc(&h->mtx)) != 0 || (rv = nng_cv_alloc(&h->cv, h->mtx)) != 0 ||
        (rv = nng_thread_create(&h->worker, worker_main, h)) != 0) {
        snprintf(err, errlen, "%s: cannot start the HTTP worker: %s", o->name, nng_strerror(rv));
        httpd_close(h);
        return NULL;
    }
    return h;
}

static int add_route(httpd *h, const char *path, int tree, route *r)
{
    r->owner = h;
    r->tree = tree;
    for (route *o = h->routes; o; o = o->next)
        if (strcmp(o->path, path) == 0) {
            free(r);
            return -1;
        }
    r->path = util_strdup(path);
    if (r->path == NULL) {
        free(r);
        return -1;
    }
    r->next = h->routes;
    h->routes = r;
    return 0;
}

int httpd_route(httpd *h, const char *path, int tree, int auth, httpd_fn fn, void *arg)
{
    route *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    r->auth = auth;
    r->fn = fn;
    r->arg = arg;
    return add_route(h, path, tree, r);
}

int httpd_static(httpd *h, const char *path, const void *data, size_t len, const char *content_type)
{
    route *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    r->data = data;
    r->len = len;
    r->content_type = content_type;
    return add_route(h, path, 0, r);
}

int httpd_start(httpd *h, char *err, size_t errlen)
{
    http_listener_opts lo = h->limits;
    lo.name = h->name;
    lo.url = h->url;
    lo.tls = h->tls;
    lo.fn = on_request;
    lo.arg = h;
    return http_listener_start(&h->listener, &lo, err, errlen);
}

int httpd_port(httpd *h)
{
    return h ? http_listener_port(h->listener) : -1;
}

int httpd_connections(httpd *h)
{
    return h && h->listener ? http_listener_conns(h->listener) : 0;
}

void httpd_close(httpd *h)
{
    if (h == NULL)
        return;
    http_listener_stop(h->listener); /* the worker still answers meanwhile */
    if (h->worker) {
        nng_mtx_lock(h->mtx);
        h->stopping = 1;
        nng_cv_wake(h->cv);
        nng_mtx_unlock(h->mtx);
        nng_thread_destroy(h->worker); /* joins, once the queue is empty */
    }
    if (h->cv)
        nng_cv_free(h->cv);
    if (h->mtx)
        nng_mtx_free(h->mtx);
    for (route *r = h->routes, *next; r; r = next) {
        next = r->next;
        free(r->path);
        free(r);
    }
    if (h->tls)
        nng_tls_config_free(h->tls);
    free(h->host);
    free(h);
}

/* ---- Queries ----------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int httpd_query_param(const char *query, const char *name, char *buf, size_t buflen)
{
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *end = strchr(p, '&');
        size_t seg = end ? (size_t)(end - p) : strlen(p);
        if (seg > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t o = 0;
            for (size_t i = nlen + 1; i < seg; i++) {
                int c = (unsigned char)p[i];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && i + 2 < seg && hexval(p[i + 1]) >= 0 &&
                           hexval(p[i + 2]) >= 0) {
                    c = hexval(p[i + 1]) * 16 + hexval(p[i + 2]);
                    i += 2;
                }
                if (o + 1 >= buflen)
                    return -1;
                buf[o++] = (char)c;
            }
            buf[o] = '\0';
            return 0;
        }
        p = end ? end + 1 : NULL;
    }
    return -1;
}
