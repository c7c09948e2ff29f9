/* obs_http — see obs_http.h. */
#include "obs_http.h"

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "orch_metrics.h"
#include "saga.h"
#include "catalog.h"
#include "store.h"
#include "strbuf.h"
#include "util.h"
#include "web_assets.h"
#include "wire.h"

struct obs_http {
    const orch_config *cfg;
    engine *eng;
    store *st; /* read-only handle; route functions run one at a time (httpd.h) */
    httpd *server;
};

/* ---- Helpers -------------------------------------------------------------------- */

static void set_json(httpd_response *res, strbuf *sb)
{
    sb_puts(sb, "\n");
    res->content_type = "application/json";
    res->body = sb_take(sb, &res->len);
    if (res->body == NULL)
        res->status = 500;
}

static void set_error(httpd_response *res, int status, const char *msg)
{
    strbuf sb = STRBUF_INIT;
    sb_puts(&sb, "{\"error\":");
    sb_json_str(&sb, msg);
    sb_puts(&sb, "}");
    res->status = status;
    set_json(res, &sb);
    res->status = status;
}

/* ---- /metrics ----------------------------------------------------------------------- */

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
    res->content_type = MT_CONTENT_TYPE;
    res->body = sb_take(&sb, &res->len);
}

/* ---- /api/sagas ---------------------------------------------------------------------- */

typedef struct {
    strbuf *sb;
    size_t n;
    char last_id[37];
} list_ctx;

static int list_row(const store_summary *row, void *arg)
{
    list_ctx *lc = arg;
    strbuf *sb = lc->sb;
    sb_puts(sb, lc->n++ ? ",\n  {" : "\n  {");
    sb_puts(sb, "\"saga_id\":");
    sb_json_str(sb, row->saga_id);
    sb_puts(sb, ",\"type\":");
    sb_json_str(sb, row->type);
    sb_printf(sb, ",\"state\":\"%s\",\"created_at_ms\":%lld,\"updated_at_ms\":%lld",
              saga_state_name((saga_state)row->state), (long long)row->created_at_ms,
              (long long)row->updated_at_ms);
    sb_puts(sb, ",\"last_error\":");
    sb_json_str(sb, row->last_error);
    sb_puts(sb, "}");
    snprintf(lc->last_id, sizeof lc->last_id, "%s", row->saga_id);
    return 0;
}

static void get_list(obs_http *o, const char *query, httpd_response *res)
{
    char state_arg[32] = "", type[256] = "", limit_arg[16] = "", after[64] = "";
    int state = 0;
    int64_t limit = OBS_LIST_DEFAULT;
    httpd_query_param(query, "state", state_arg, sizeof state_arg);
    httpd_query_param(query, "type", type, sizeof type);
    httpd_query_param(query, "limit", limit_arg, sizeof limit_arg);
    httpd_query_param(query, "after", after, sizeof after);
    if (state_arg[0] && (state = saga_state_parse(state_arg)) < 0) {
        set_error(res, 400,
                  "state must be RUNNING, COMPENSATING, COMPLETED, COMPENSATED or FAILED");
        return;
    }
    if (limit_arg[0] && (util_parse_i64(limit_arg, &limit) != 0 || limit < 1)) {
        set_error(res, 400, "limit must be a positive integer");
        return;
    }
    if (limit > OBS_LIST_MAX)
        limit = OBS_LIST_MAX;
    if (after[0] && !util_is_uuid(after)) {
        set_error(res, 400, "after must be a saga id");
        return;
    }
    strbuf sb = STRBUF_INIT;
    uint64_t counts[6] = {0};
    list_ctx lc = {&sb, 0, ""};
    int rc = store_count_by_state(o->st, counts);
    if (rc == 0) {
        sb_puts(&sb, "{\"counts\":{");
        for (int s = SAGA_RUNNING; s <= SAGA_FAILED; s++)
            sb_printf(&sb, "%s\"%s\":%llu", s > SAGA_RUNNING ? "," : "",
                      saga_state_name((saga_state)s), (unsigned long long)counts[s]);
        sb_puts(&sb, "},\"sagas\":[");
        rc =
            store_list(o->st, state, type, after[0] ? after : NULL, (uint32_t)limit, list_row, &lc);
    }
    char why[256];
    snprintf(why, sizeof why, "storage error: %s", store_errmsg(o->st));
    if (rc != 0) {
        sb_free(&sb);
        set_error(res, 500, why);
        return;
    }
    sb_puts(&sb, lc.n ? "\n],\"next_after\":" : "],\"next_after\":");
    sb_json_str(&sb, lc.n == (size_t)limit ? lc.last_id : NULL);
    sb_puts(&sb, "}");
    set_json(res, &sb);
}

/* ---- /api/sagas/ID --------------------------------------------------------------------- */

static void json_kv(strbuf *sb, const kvmap *m)
{
    sb_puts(sb, "{");
    for (size_t i = 0; i < m->len; i++) {
        if (i)
            sb_puts(sb, ",");
        sb_json_str(sb, m->items[i].key);
        sb_puts(sb, ":");
        sb_json_str(sb, m->items[i].value);
    }
    sb_puts(sb, "}");
}

static void json_status(strbuf *sb, const saga *s)
{
    sb_puts(sb, "{\"saga_id\":");
    sb_json_str(sb, s->id);
    sb_puts(sb, ",\"type\":");
    sb_json_str(sb, s->type);
    sb_printf(sb, ",\"state\":\"%s\",\"client_key\":", saga_state_name(s->state));
    sb_json_str(sb, s->client_key);
    sb_puts(sb, ",\"input\":");
    json_kv(sb, &s->input);
    sb_printf(sb,
              ",\"created_at_ms\":%lld,\"updated_at_ms\":%lld,\"deadline_at_ms\":%lld,"
              "\"last_error\":",
              (long long)s->created_at_ms, (long long)s->updated_at_ms,
              (long long)s->deadline_at_ms);
    sb_json_str(sb, s->last_error);
    sb_printf(sb, ",\"failed_phase\":%s",
              s->state != SAGA_FAILED               ? "null"
              : s->failed_phase == PHASE_COMPENSATE ? "\"compensate\""
                                                    : "\"action\"");
    sb_puts(sb, ",\"steps\":[");
    for (size_t i = 0; i < s->n_steps; i++) {
        const step_run *r = &s->steps[i];
        const step_def *d = s->def != NULL && i < s->def->n_steps ? &s->def->steps[i] : NULL;
        char name[32];
        snprintf(name, sizeof name, "#%zu", i + 1);
        sb_puts(sb, i ? ",\n  {\"name\":" : "\n  {\"name\":");
        sb_json_str(sb, d ? d->name : name);
        sb_puts(sb, ",\"participant\":");
        sb_json_str(sb, d ? d->participant : NULL);
        sb_puts(sb, ",\"action\":");
        sb_json_str(sb, d ? d->action : NULL);
        sb_puts(sb, ",\"compensation\":");
        sb_json_str(sb, d ? d->compensation : NULL);
        sb_printf(sb, ",\"state\":\"%s\",\"action_attempts\":%u,\"compensation_attempts\":%u",
                  step_state_name(r->state), r->action_attempts, r->compensation_attempts);
        sb_puts(sb, ",\"last_outcome\":");
        if (r->last_outcome <= OUTCOME_UNSPECIFIED)
            sb_puts(sb, "null");
        else
            sb_json_str(sb, wire_outcome_name(r->last_outcome));
        sb_puts(sb, ",\"result\":");
        json_kv(sb, &r->result);
        sb_puts(sb, ",\"last_error\":");
        sb_json_str(sb, r->last_error);
        sb_printf(sb,
                  ",\"next_attempt_at_ms\":%lld,\"started_at_ms\":%lld,\"finished_at_ms\":%lld}",
                  (long long)r->next_attempt_at_ms, (long long)r->started_at_ms,
                  (long long)r->finished_at_ms);
    }
    sb_puts(sb, s->n_steps ? "\n]}" : "]}");
}

static void get_status(obs_http *o, const char *id, httpd_response *res)
{
    saga *s = NULL;
    char why[256] = "";
    int rc = store_load_saga(o->st, id, &s);
    if (rc == 0) /* its steps are named by the version it runs on; unnamed if that cannot load */
        catalog_bind(engine_catalog(o->eng), o->st, s, why, sizeof why);
    if (rc < 0)
        snprintf(why, sizeof why, "storage error: %s", store_errmsg(o->st));
    if (rc == STORE_NOT_FOUND) {
        set_error(res, 404, "no such saga");
        return;
    }
    if (rc != 0) {
        set_error(res, 500, why);
        return;
    }
    strbuf sb = STRBUF_INIT;
    json_status(&sb, s);
    saga_free(s);
    set_json(res, &sb);
}

/* ---- /api/sagas/ID/history ----------------------------------------------------------------- */

typedef struct {
    strbuf *sb; /* events, each preceded by ",\n  " */
    uint64_t after_seq;
    size_t total;
    int more; /* events past OBS_HISTORY_MAX were left out: ask again with after_seq */
} hist_ctx;

static int hist_event(const store_event *ev, void *arg)
{
    hist_ctx *h = arg;
    if (ev->seq <= h->after_seq || h->more)
        return 0;
    if (h->total == OBS_HISTORY_MAX) {
        h->more = 1;
        return 0;
    }
    strbuf *sb = h->sb;
    int saga_level = ev->step == NULL || ev->step[0] == '\0';
    sb_printf(sb, ",\n  {\"seq\":%llu,\"at_ms\":%lld,\"kind\":", (unsigned long long)ev->seq,
              (long long)ev->at_ms);
    sb_json_str(sb, ev->kind);
    sb_puts(sb, ",\"step\":");
    sb_json_str(sb, ev->step ? ev->step : "");
    sb_puts(sb, ",\"phase\":");
    if (saga_level)
        sb_puts(sb, "null");
    else
        sb_json_str(sb, wire_phase_name(ev->phase));
    sb_printf(sb, ",\"attempt\":%u,\"outcome\":", ev->attempt);
    if (ev->outcome <= OUTCOME_UNSPECIFIED)
        sb_puts(sb, "null");
    else
        sb_json_str(sb, wire_outcome_name(ev->outcome));
    sb_printf(sb, ",\"replayed\":%s,\"detail\":", ev->replayed ? "true" : "false");
    sb_json_str(sb, ev->detail);
    sb_puts(sb, "}");
    h->total++;
    return 0;
}

static void get_history(obs_http *o, const char *id, const char *query, httpd_response *res)
{
    char after_arg[24] = "";
    int64_t after = 0;
    httpd_query_param(query, "after_seq", after_arg, sizeof after_arg);
    if (after_arg[0] && (util_parse_i64(after_arg, &after) != 0 || after < 0)) {
        set_error(res, 400, "after_seq must be a non-negative integer");
        return;
    }
    strbuf events = STRBUF_INIT;
    hist_ctx h = {&events, (uint64_t)after, 0, 0};
    char why[256] = "";
    saga *s = NULL;
    int rc = store_load_saga(o->st, id, &s); /* tells "no saga" from "no events" */
    if (rc == 0)
        rc = store_history(o->st, id, hist_event, &h);
    if (rc < 0)
        snprintf(why, sizeof why, "storage error: %s", store_errmsg(o->st));
    if (rc == STORE_NOT_FOUND) {
        sb_free(&events);
        set_error(res, 404, "no such saga");
        return;
    }
    if (rc != 0) {
        sb_free(&events);
        saga_free(s);
        set_error(res, 500, why);
        return;
    }
    strbuf sb = STRBUF_INIT;
    sb_puts(&sb, "{\"saga_id\":");
    sb_json_str(&sb, id);
    sb_printf(&sb, ",\"state\":\"%s\",\"final\":%s,\"events\":[", saga_state_name(s->state),
              saga_is_final(s->state) ? "true" : "false");
    saga_free(s);
    if (events.len > 2)
        sb_append(&sb, events.data + 1, events.len - 1); /* without the first comma */
    sb_printf(&sb, "%s,\"more\":%s}", h.total ? "\n]" : "]", h.more ? "true" : "false");
    if (!sb_ok(&events))
        sb.failed = 1;
    sb_free(&events);
    set_json(res, &sb);
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
        store_display_name(cfg->database, shown, sizeof shown);
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
             httpd_route(o->server, "/api", 1, 1, get_api_unknown, o);
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
    log_info("metrics, JSON API and dashboard on %s (port %d); /metrics and /api need the token",
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
