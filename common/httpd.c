/* httpd — see httpd.h. */
#include "httpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "security.h"
#include "util.h"

typedef struct route {
    struct route *next;
    httpd *owner;
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
    nng_aio *aio;
    route *r;
    char *path; /* malloc'd; the query points into it */
    const char *query;
} job;

struct httpd {
    const char *name;
    const char *token, *read_token; /* either opens the auth routes; NULL: not set */
    char *host;                     /* the URL's host, for the Host header check */
    nng_url *url;
    nng_http_server *srv;
    route *routes;
    int started;
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

static int authorized(const httpd *h, nng_http_req *req)
{
    if (h->token == NULL && h->read_token == NULL)
        return 1;
    const char *auth = nng_http_req_get_header(req, "Authorization");
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

static void respond(nng_aio *aio, int status, const char *content_type, const void *body,
                    size_t len, int html)
{
    nng_http_res *res = NULL;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_http_res_set_status(res, (uint16_t)status);
    nng_http_res_set_header(res, "Content-Type", content_type);
    nng_http_res_set_header(res, "X-Content-Type-Options", "nosniff");
    nng_http_res_set_header(res, "Cache-Control", "no-store");
    nng_http_res_set_header(res, "Referrer-Policy", "no-referrer");
    if (html)
        nng_http_res_set_header(res, "Content-Security-Policy",
                                "default-src 'self'; frame-ancestors 'none'");
    if (status == 401)
        nng_http_res_set_header(res, "WWW-Authenticate", "Bearer realm=\"saga\"");
    if (len > 0 && nng_http_res_copy_data(res, body, len) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void respond_error(nng_aio *aio, int status, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
    respond(aio, status, "application/json", body, (size_t)n, 0);
}

static void httpd_cb(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_handler *hh = nng_aio_get_input(aio, 1);
    route *r = nng_http_handler_get_data(hh);
    httpd *h = r->owner;

    if (!host_allowed(h, nng_http_req_get_header(req, "Host"))) {
        respond_error(aio, 403, "host not allowed");
        return;
    }
    if (r->fn == NULL) {
        const char *ct = r->content_type;
        respond(aio, 200, ct, r->data, r->len, strncmp(ct, "text/html", 9) == 0);
        return;
    }
    if (r->auth && !authorized(h, req)) {
        respond_error(aio, 401, "missing or wrong token (Authorization: Bearer TOKEN)");
        return;
    }
    const char *uri = nng_http_req_get_uri(req);
    job *j = calloc(1, sizeof *j);
    char *path = util_strdup(uri ? uri : "/");
    if (j == NULL || path == NULL) {
        free(j);
        free(path);
        respond_error(aio, 500, "out of memory");
        return;
    }
    char *q = strchr(path, '?');
    j->query = "";
    if (q != NULL) {
        *q = '\0';
        j->query = q + 1;
    }
    j->aio = aio;
    j->r = r;
    j->path = path;
    /* nng waits for this aio to finish (also when stopping the server): the
     * worker always finishes it, and runs until the server has stopped. */
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
        respond_error(j->aio, 500, "out of memory");
    else
        respond(j->aio, res.status, res.content_type, res.body ? res.body : "",
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
    nng_tls_config *tc = NULL;
    char *cert = read_pem(o->tls_cert_file, err, errlen);
    char *key = cert ? read_pem(o->tls_key_file, err, errlen) : NULL;
    int rv = -1;
    if (key == NULL)
        goto out;
    if ((rv = nng_tls_config_alloc(&tc, NNG_TLS_MODE_SERVER)) != 0 ||
        (rv = nng_tls_config_own_cert(tc, cert, key, NULL)) != 0 ||
        (rv = nng_http_server_set_tls(h->srv, tc)) != 0)
        snprintf(err, errlen, "TLS for %s: %s", o->url, nng_strerror(rv));
out:
    if (key)
        sec_wipe(key, strlen(key));
    free(key);
    free(cert);
    if (tc)
        nng_tls_config_free(tc);
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
    int rv = nng_url_parse(&h->url, o->url);
    if (rv == 0) {
        h->host = util_strdup(h->url->u_hostname);
        rv = h->host ? nng_http_server_hold(&h->srv, h->url) : NNG_ENOMEM;
    }
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

/* One nng handler of r for method at path. 0 or -1. */
static int add_handler(httpd *h, const char *path, int tree, const char *method, route *r)
{
    nng_http_handler *hh = NULL;
    if (nng_http_handler_alloc(&hh, path, httpd_cb) != 0)
        return -1;
    if (nng_http_handler_set_method(hh, method) != 0 ||
        (tree && nng_http_handler_set_tree(hh) != 0) ||
        nng_http_handler_set_data(hh, r, NULL) != 0 ||
        nng_http_server_add_handler(h->srv, hh) != 0) {
        nng_http_handler_free(hh);
        return -1;
    }
    return 0;
}

/*
 * GET and HEAD each get a handler: nng 1.5.2 hands a HEAD request to the
 * first GET handler whose path matches, which for /api/sagas was the /api
 * tree (404). With a HEAD handler of its own, the route is matched like GET.
 */
static int add_route(httpd *h, const char *path, int tree, route *r)
{
    r->owner = h;
    r->next = h->routes; /* owned by the server from here on, freed by httpd_close */
    h->routes = r;
    if (add_handler(h, path, tree, "GET", r) != 0 || add_handler(h, path, tree, "HEAD", r) != 0)
        return -1;
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
    int rv = nng_http_server_start(h->srv);
    if (rv != 0) {
        snprintf(err, errlen, "%s: cannot listen on %s: %s", h->name, h->url->u_rawurl,
                 nng_strerror(rv));
        return rv;
    }
    h->started = 1;
    return 0;
}

int httpd_port(httpd *h)
{
    nng_sockaddr sa;
    if (h == NULL || nng_http_server_get_addr(h->srv, &sa) != 0)
        return -1;
    if (sa.s_family == NNG_AF_INET)
        return ntohs(sa.s_in.sa_port);
    if (sa.s_family == NNG_AF_INET6)
        return ntohs(sa.s_in6.sa_port);
    return -1;
}

void httpd_close(httpd *h)
{
    if (h == NULL)
        return;
    if (h->srv) {
        if (h->started)
            nng_http_server_stop(h->srv); /* the worker still answers meanwhile */
        nng_http_server_release(h->srv);
    }
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
        free(r);
    }
    if (h->url)
        nng_url_free(h->url);
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
