/* obs_http — see obs_http.h. */
#include "obs_http.h"

#include <ctype.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db_url.h"
#include "admin.h"
#include "admin.pb-c.h"
#include "httpd.h"
#include "json_util.h"
#include "log.h"
#include "metrics.h"
#include "orch_metrics.h"
#include "saga.h"
#include "saga_json.h"
#include "store.h"
#include "strbuf.h"
#include "util.h"
#include "web_assets.h"

struct obs_http {
    const orch_config *cfg;
    engine *eng;
    store *st; /* read-only handle; route functions run one at a time (httpd.h) */
    httpd *server;
};

/* ---- Helpers -------------------------------------------------------------------- */

/* Sends doc (a new reference, NULL when it could not be built) as the body. */
static void set_json(httpd_response *res, json_t *doc)
{
    res->content_type = "application/json";
    res->body = ju_line(doc, &res->len);
    if (res->body == NULL)
        res->status = 500;
}

static void set_error(httpd_response *res, int status, const char *msg)
{
    res->status = status;
    res->content_type = "application/json";
    res->body = ju_error_line(status, msg, &res->len);
}

/* ---- /metrics ----------------------------------------------------------------------- */

/* The gauges read from the store at scrape time: they survive restarts (the
 * FAILED backlog an operator must clear) and count every node's sagas when
 * the store is shared. When the store cannot answer they are left out (a
 * warning is logged) rather than reported as 0, so that an alert on them
 * cannot be silenced by an unreadable store (docs/OBSERVABILITY.md). */
static void store_gauges(obs_http *o, strbuf *sb)
{
    uint64_t counts[6];
    int64_t oldest[2];
    static const int aged[2] = {SAGA_RUNNING, SAGA_FAILED};
    if (store_count_by_state(o->st, counts) != 0 ||
        store_oldest_created(o->st, aged[0], &oldest[0]) != 0 ||
        store_oldest_created(o->st, aged[1], &oldest[1]) != 0) {
        log_warn("/metrics: saga_sagas and saga_oldest_age_seconds left out: %s",
                 store_errmsg(o->st));
        return;
    }
    char labels[64];
    mt_header(sb, "saga_sagas", "gauge", "Sagas in the store, by state (read at scrape time).");
    for (int state = SAGA_RUNNING; state <= SAGA_FAILED; state++) {
        snprintf(labels, sizeof labels, "state=\"%s\"", saga_state_name(state));
        mt_sample(sb, "saga_sagas", labels, counts[state]);
    }
    mt_header(sb, "saga_oldest_age_seconds", "gauge",
              "Age (now - created) of the oldest saga in the state; 0 when there is none.");
    int64_t now = util_wall_ms();
    for (int i = 0; i < 2; i++) {
        int64_t age_ms = oldest[i] > 0 && now > oldest[i] ? now - oldest[i] : 0;
        snprintf(labels, sizeof labels, "state=\"%s\"", saga_state_name(aged[i]));
        mt_sample(sb, "saga_oldest_age_seconds", labels, (uint64_t)(age_ms / 1000));
    }
}

static void get_metrics(void *arg, const char *path, const char *query, httpd_response *res)
{
    obs_http *o = arg;
    strbuf sb = STRBUF_INIT;
    om_render(engine_metrics(o->eng), &sb);
    engine_counters c;
    engine_get_counters(o->eng, &c);
    mt_header(&sb, "saga_late_replies_total", "counter",
              "Replies and timeouts of requests the saga no longer waits for (it moved on, "
              "finished or was reloaded): ignored, their effect covered by idempotency.");
    mt_sample(&sb, "saga_late_replies_total", NULL, c.late_completions);
    mt_header(&sb, "saga_process_info", "gauge", "Always 1; the label says which program.");
    mt_sample(&sb, "saga_process_info", "program=\"sagad\"", 1);
    mt_header(&sb, "saga_build_info", "gauge", "Always 1; the label says which version runs.");
    mt_sample(&sb, "saga_build_info", "version=\"" SAGA_VERSION "\"", 1);
    store_gauges(o, &sb);
    res->content_type = MT_CONTENT_TYPE;
    res->body = sb_take(&sb, &res->len);
}

/* ---- /healthz ------------------------------------------------------------------------ */

/* For load balancers' and supervisors' probes, so served without the token:
 * the answer says only "ok" or why not (stopping, store unavailable), nothing
 * about any saga. The store read is the same one /metrics makes. */
static void get_healthz(void *arg, const char *path, const char *query, httpd_response *res)
{
    obs_http *o = arg;
    char why[512];
    uint64_t counts[6];
    int sick = engine_health(o->eng, why, sizeof why);
    if (!sick && store_count_by_state(o->st, counts) != 0) {
        snprintf(why, sizeof why, "the store cannot be read: %s", store_errmsg(o->st));
        sick = 1;
    }
    if (!sick) {
        set_json(res, json_pack("{s:s}", "status", "ok"));
        return;
    }
    res->status = 503;
    /* ju_str: the store's error text may hold bytes that are not UTF-8 (a file name). */
    json_t *doc = json_pack("{s:s, s:o}", "status", "unavailable", "reason", ju_str(why));
    set_json(res, doc);
}

/* ---- /api/sagas: the admin API's reads, as saga_json documents ------------------------ */

/* Serves req through admin_read and answers the document build makes of the
 * reply's body, or the reply's error with the matching HTTP status. */
static void serve(obs_http *o, const Saga__V1__AdminRequest *req, httpd_response *res,
                  json_t *(*build)(const Saga__V1__AdminReply *rep))
{
    Saga__V1__AdminReply *rep = admin_read(o->eng, o->st, req);
    if (rep == NULL) {
        set_error(res, 500, "out of memory");
        return;
    }
    switch (rep->status) {
    case SAGA__V1__ADMIN_STATUS__ADMIN_OK:
        set_json(res, build(rep));
        break;
    case SAGA__V1__ADMIN_STATUS__ADMIN_NOT_FOUND:
        set_error(res, 404, "no such saga");
        break;
    case SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST:
        set_error(res, 400, rep->error);
        break;
    default:
        set_error(res, 500, rep->error);
        break;
    }
    saga__v1__admin_reply__free_unpacked(rep, NULL);
}

static json_t *build_list(const Saga__V1__AdminReply *rep)
{
    return rep->body_case == SAGA__V1__ADMIN_REPLY__BODY_LIST ? saga_json_list(rep->list) : NULL;
}

static json_t *build_status(const Saga__V1__AdminReply *rep)
{
    return rep->body_case == SAGA__V1__ADMIN_REPLY__BODY_SAGA ? saga_json_status(rep->saga) : NULL;
}

static json_t *build_history(const Saga__V1__AdminReply *rep)
{
    return rep->body_case == SAGA__V1__ADMIN_REPLY__BODY_HISTORY ? saga_json_history(rep->history)
                                                                 : NULL;
}

static void get_list(obs_http *o, const char *query, httpd_response *res)
{
    char state_arg[32] = "", type[ADMIN_MAX_TYPE + 1] = "", limit_arg[16] = "", after[64] = "";
    char key[ADMIN_MAX_CLIENT_KEY + 1] = "", prefix[40] = "", since_arg[24] = "",
                                    until_arg[24] = "";
    int state = 0;
    int64_t limit = ADMIN_LIST_DEFAULT, since = 0, until = 0;
    httpd_query_param(query, "key", key, sizeof key);
    httpd_query_param(query, "id_prefix", prefix, sizeof prefix);
    httpd_query_param(query, "since_ms", since_arg, sizeof since_arg);
    httpd_query_param(query, "until_ms", until_arg, sizeof until_arg);
    if ((since_arg[0] && (util_parse_i64(since_arg, &since) != 0 || since < 0)) ||
        (until_arg[0] && (util_parse_i64(until_arg, &until) != 0 || until < 0))) {
        set_error(res, 400, "since_ms and until_ms must be milliseconds since the epoch");
        return;
    }
    for (char *c = prefix; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
        if (!isxdigit((unsigned char)*c) && *c != '-') {
            set_error(res, 400, "id_prefix must be the beginning of a saga id");
            return;
        }
    }
    if (!util_utf8_valid(key, strlen(key))) {
        set_error(res, 400, "key must be UTF-8");
        return;
    }
    httpd_query_param(query, "state", state_arg, sizeof state_arg);
    httpd_query_param(query, "type", type, sizeof type);
    httpd_query_param(query, "limit", limit_arg, sizeof limit_arg);
    httpd_query_param(query, "after", after, sizeof after);
    /* SCHEDULED: the starts waiting for their time (not a saga state, saga.h). */
    if (strcasecmp(state_arg, "SCHEDULED") == 0)
        state = SAGA__V1__SAGA_STATE__SAGA_SCHEDULED;
    else if (state_arg[0] && (state = saga_state_parse(state_arg)) < 0) {
        set_error(res, 400,
                  "state must be RUNNING, COMPENSATING, COMPLETED, COMPENSATED, FAILED or "
                  "SCHEDULED");
        return;
    }
    if (limit_arg[0] && (util_parse_i64(limit_arg, &limit) != 0 || limit < 1)) {
        set_error(res, 400, "limit must be a positive integer");
        return;
    }
    if (limit > ADMIN_LIST_MAX)
        limit = ADMIN_LIST_MAX;
    if (after[0] && !util_is_uuid(after)) {
        set_error(res, 400, "after must be a saga id");
        return;
    }
    Saga__V1__AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__ListSagas list = SAGA__V1__LIST_SAGAS__INIT;
    list.state = (Saga__V1__SagaState)state;
    list.type = type;
    list.limit = (uint32_t)limit;
    list.after_id = after;
    list.client_key = key;
    list.id_prefix = prefix;
    list.created_after_ms = since;
    list.created_before_ms = until;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_LIST;
    req.list = &list;
    serve(o, &req, res, build_list);
}

static void get_status(obs_http *o, char *id, httpd_response *res)
{
    Saga__V1__AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetStatus get = SAGA__V1__GET_STATUS__INIT;
    get.saga_id = id;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATUS;
    req.status = &get;
    serve(o, &req, res, build_status);
}

static void get_history(obs_http *o, char *id, const char *query, httpd_response *res)
{
    char after_arg[24] = "";
    int64_t after = 0;
    httpd_query_param(query, "after_seq", after_arg, sizeof after_arg);
    if (after_arg[0] && (util_parse_i64(after_arg, &after) != 0 || after < 0)) {
        set_error(res, 400, "after_seq must be a non-negative integer");
        return;
    }
    Saga__V1__AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetHistory get = SAGA__V1__GET_HISTORY__INIT;
    get.saga_id = id;
    get.after_seq = (uint64_t)after;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_HISTORY;
    req.history = &get;
    serve(o, &req, res, build_history);
}

/* /api/sagas, /api/sagas/ID, /api/sagas/ID/history */
static void get_api_sagas(void *arg, const char *path, const char *query, httpd_response *res)
{
    obs_http *o = arg;
    const char *rest = path + strlen("/api/sagas");
    if (*rest == '\0' || strcmp(rest, "/") == 0) {
        get_list(o, query, res);
        return;
    }
    char id[64];
    const char *slash = strchr(rest + 1, '/');
    size_t n = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
    if (n >= sizeof id) {
        set_error(res, 404, "no such saga");
        return;
    }
    memcpy(id, rest + 1, n);
    id[n] = '\0';
    if (!util_is_uuid(id)) {
        set_error(res, 404, "no such saga (ids are UUIDs)");
        return;
    }
    if (slash == NULL)
        get_status(o, id, res);
    else if (strcmp(slash, "/history") == 0)
        get_history(o, id, query, res);
    else
        set_error(res, 404, "unknown path: /api/sagas/ID or /api/sagas/ID/history");
}

static void get_api_unknown(void *arg, const char *path, const char *query, httpd_response *res)
{
    set_error(res, 404, "unknown path: GET /api/sagas, /api/sagas/ID, /api/sagas/ID/history");
}

/* ---- Server ------------------------------------------------------------------------------ */

static const char *content_type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (dot && strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (dot && strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (dot && strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    return "application/octet-stream";
}

obs_http *obs_http_start(const orch_config *cfg, engine *e, char *err, size_t errlen)
{
    obs_http *o = calloc(1, sizeof *o);
    if (o == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    o->cfg = cfg;
    o->eng = e;
    char serr[512];
    if ((o->st = store_open(cfg->database, 1, 1, serr, sizeof serr)) == NULL) {
        char shown[512];
        db_url_display(cfg->database, shown, sizeof shown);
        snprintf(err, errlen, "http_url: cannot open %s read-only: %s", shown, serr);
        goto fail;
    }
    httpd_opts ho = {.name = "http_url",
                     .url = cfg->http_url,
                     .token = cfg->admin_token,
                     .read_token = cfg->metrics_token,
                     .tls_cert_file = cfg->tls_cert_file,
                     .tls_key_file = cfg->tls_key_file,
                     .max_connections = cfg->conn_max_unauthenticated,
                     .header_timeout_ms = cfg->conn_header_timeout_ms,
                     .idle_timeout_ms = cfg->conn_idle_timeout_ms};
    if ((o->server = httpd_open(&ho, err, errlen)) == NULL)
        goto fail;
    int rc = httpd_route(o->server, "/metrics", 0, 1, get_metrics, o) |
             httpd_route(o->server, "/api/sagas", 1, 1, get_api_sagas, o) |
             httpd_route(o->server, "/api", 1, 1, get_api_unknown, o) |
             httpd_route(o->server, "/healthz", 0, 0, get_healthz, o);
    for (size_t i = 0; i < web_assets_count; i++) {
        const web_asset *a = &web_assets[i];
        char path[128];
        snprintf(path, sizeof path, "/%s", strcmp(a->name, "index.html") == 0 ? "" : a->name);
        rc |= httpd_static(o->server, path, a->data, a->len, content_type_of(a->name));
    }
    if (rc != 0) {
        snprintf(err, errlen, "http_url: cannot register the handlers");
        goto fail;
    }
    if (httpd_start(o->server, err, errlen) != 0)
        goto fail;
    log_info("metrics, JSON API and dashboard on %s (port %d); /metrics and /api need the token "
             "(/healthz does not)",
             cfg->http_url, httpd_port(o->server));
    return o;
fail:
    obs_http_stop(o);
    return NULL;
}

int obs_http_port(obs_http *o)
{
    return o ? httpd_port(o->server) : -1;
}

void obs_http_stop(obs_http *o)
{
    if (o == NULL)
        return;
    httpd_close(o->server); /* no handler runs after this */
    store_close(o->st);
    free(o);
}
