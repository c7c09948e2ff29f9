/*
 * Observability, end to end: sagad's /metrics and JSON API after real sagas,
 * the HTTP listener's security (token, Host check, exposure refusal), a
 * participant's --metrics-url and the JSON log format.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include <sqlite3.h>

#include "obs_fixture.h"
#include "util.h"

#define SAMPLE_TYPE "{saga_type=\"order_fulfillment\"}"
#define OP(p, o)    "{participant=\"" p "\",operation=\"" o "\"}"

static int http_port;

static int setup_system(void **state)
{
    ofx *f = calloc(1, sizeof *f);
    /* The counts below are exact: a step must not time out and be sent again
     * because the machine is loaded (the fixture's default is 300 ms). */
    ofx_opts o = {.timeout_ms = 10000};
    if (f == NULL || ofx_init(f, &o) != 0)
        return -1;
    http_port = obs_free_port();
    if (obs_enable_http(f, http_port) != 0 || ofx_start_all(f) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown_system(void **state)
{
    ofx *f = *state;
    if (f != NULL) {
        ofx_destroy(f);
        free(f);
    }
    return 0;
}

/* Starts one order and waits until it is final; returns its final state. */
static void run_order(ofx *f, const char *key, const char *customer, const char *amount,
                      char id[37], const char *expect)
{
    assert_int_equal(
        ofx_start_order(f, key, customer, "WIDGET-1", "1", amount, "paris", id, NULL, NULL), 0);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), expect);
    json_decref(st);
}

static char *get_ok(int port, const char *path)
{
    obs_response r;
    assert_int_equal(obs_get(port, path, NULL, NULL, 5000, &r), 0);
    if (r.status != 200)
        print_message("GET %s: %d %s\n", path, r.status, r.body);
    assert_int_equal(r.status, 200);
    free(r.headers);
    return r.body;
}

static void test_metrics_after_sagas(void **state)
{
    ofx *f = *state;
    char ok_id[37], refused_id[37];
    run_order(f, "m-ok", "alice", "1000", ok_id, "COMPLETED");
    /* carol has 500: the charge is refused, create_order is compensated. */
    run_order(f, "m-refused", "carol", "2500", refused_id, "COMPENSATED");

    obs_response r;
    assert_int_equal(obs_get(http_port, "/metrics", NULL, NULL, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "text/plain; version=0.0.4"));
    const char *m = r.body;
    assert_int_equal((int)obs_metric(m, "saga_sagas_started_total" SAMPLE_TYPE), 2);
    assert_int_equal((int)obs_metric(m, "saga_sagas_completed_total" SAMPLE_TYPE), 1);
    assert_int_equal((int)obs_metric(m, "saga_sagas_compensated_total" SAMPLE_TYPE), 1);
    assert_int_equal((int)obs_metric(m, "saga_sagas_failed_total" SAMPLE_TYPE), 0);
    assert_int_equal((int)obs_metric(m, "saga_sagas_in_flight"), 0);
    assert_int_equal((int)obs_metric(m, "saga_step_attempts_total" OP("order", "create")), 2);
    assert_int_equal((int)obs_metric(m, "saga_step_attempts_total" OP("payment", "charge")), 2);
    assert_int_equal((int)obs_metric(m, "saga_step_attempts_total" OP("order", "cancel")), 1);
    assert_int_equal((int)obs_metric(m, "saga_step_attempts_total" OP("order", "approve")), 1);
    assert_int_equal((int)obs_metric(m, "saga_step_retries_total" OP("payment", "charge")), 0);
    assert_int_equal((int)obs_metric(m, "saga_step_timeouts_total" OP("payment", "charge")), 0);
    assert_int_equal((int)obs_metric(m, "saga_step_replies_total{participant=\"payment\","
                                        "operation=\"charge\",outcome=\"REJECTED\"}"),
                     1);
    assert_int_equal((int)obs_metric(m, "saga_step_replies_total{participant=\"payment\","
                                        "operation=\"charge\",outcome=\"OK\"}"),
                     1);
    /* Latency histogram: every reply observed once, +Inf bucket == count. */
    assert_int_equal((int)obs_metric(m, "saga_step_duration_seconds_count" OP("order", "create")),
                     2);
    assert_int_equal((int)obs_metric(m, "saga_step_duration_seconds_bucket{participant=\"order\","
                                        "operation=\"create\",le=\"+Inf\"}"),
                     2);
    assert_true(obs_metric(m, "saga_step_duration_seconds_sum" OP("order", "create")) > 0);
    assert_int_equal((int)obs_metric(m, "saga_replayed_replies_total"), 0);
    assert_int_equal((int)obs_metric(m, "saga_step_conflicts_total"), 0);
    assert_int_equal((int)obs_metric(m, "saga_barrier_skips_total"), 0);
    double commits = obs_metric(m, "saga_commits_total");
    assert_true(commits >= 2);
    assert_int_equal((int)obs_metric(m, "saga_commit_batch_sagas_count"), (int)commits);
    /* durability "full" (the default): every engine commit waited for its fdatasync. */
    assert_int_equal((int)obs_metric(m, "saga_store_syncs_total"), (int)commits);
    assert_non_null(strstr(m, "# TYPE saga_step_duration_seconds histogram\n"));
    assert_non_null(strstr(m, "# TYPE saga_sagas_started_total counter\n"));
    /* Saga durations by type and final state: one COMPLETED, one COMPENSATED,
     * each observed once (with a positive time) in the bucket +Inf and in the
     * one-day bucket; the FAILED series is there with 0. */
#define SD(suffix, state, extra)                                                                   \
    obs_metric(m, "saga_duration_seconds_" suffix                                                  \
                  "{saga_type=\"order_fulfillment\",state=\"" state "\"" extra "}")
    assert_int_equal((int)SD("count", "COMPLETED", ""), 1);
    assert_int_equal((int)SD("count", "COMPENSATED", ""), 1);
    assert_int_equal((int)SD("count", "FAILED", ""), 0);
    assert_int_equal((int)SD("bucket", "COMPLETED", ",le=\"+Inf\""), 1);
    assert_int_equal((int)SD("bucket", "COMPENSATED", ",le=\"86400\""), 1);
    assert_int_equal((int)SD("bucket", "FAILED", ",le=\"+Inf\""), 0);
    assert_true(SD("sum", "COMPLETED", "") > 0);
    assert_true(SD("sum", "COMPENSATED", "") < 86400);
#undef SD
    assert_non_null(strstr(m, "# TYPE saga_duration_seconds histogram\n"));
    obs_response_free(&r);

    /* ---- The JSON API mirrors list, status and history. */
    char *body = get_ok(http_port, "/api/sagas");
    json_t *list = tj_parse(body);
    free(body);
    assert_non_null(list);
    assert_int_equal(tj_int(json_object_get(list, "counts"), "COMPLETED", -1), 1);
    assert_int_equal(tj_int(json_object_get(list, "counts"), "COMPENSATED", -1), 1);
    assert_int_equal(tj_int(json_object_get(list, "counts"), "FAILED", -1), 0);
    const json_t *sagas = json_object_get(list, "sagas");
    assert_int_equal(json_array_size(sagas), 2);
    OFX_ASSERT_STR(tj_str(json_array_get(sagas, 0), "saga_id"), refused_id); /* newest first */
    OFX_ASSERT_STR(tj_str(json_array_get(sagas, 0), "state"), "COMPENSATED");
    OFX_ASSERT_STR(tj_str(json_array_get(sagas, 1), "saga_id"), ok_id);
    json_decref(list);

    body = get_ok(http_port, "/api/sagas?state=completed&type=order_fulfillment&limit=10");
    list = tj_parse(body);
    free(body);
    assert_int_equal(json_array_size(json_object_get(list, "sagas")), 1);
    OFX_ASSERT_STR(tj_str(json_array_get(json_object_get(list, "sagas"), 0), "saga_id"), ok_id);
    json_decref(list);

    body = get_ok(http_port, "/api/sagas?limit=1");
    list = tj_parse(body);
    free(body);
    assert_int_equal(json_array_size(json_object_get(list, "sagas")), 1);
    OFX_ASSERT_STR(tj_str(list, "next_after"), refused_id); /* paging */
    json_decref(list);

    char path[128];
    snprintf(path, sizeof path, "/api/sagas/%s", refused_id);
    body = get_ok(http_port, path);
    json_t *st = tj_parse(body);
    free(body);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    OFX_ASSERT_STR(tj_str(json_object_get(st, "input"), "customer"), "carol");
    const json_t *charge = ofx_step(st, "charge_payment");
    OFX_ASSERT_STR(tj_str(charge, "state"), "REJECTED");
    OFX_ASSERT_STR(tj_str(charge, "last_outcome"), "REJECTED");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "create_order"), "state"), "COMPENSATED");
    json_decref(st);

    snprintf(path, sizeof path, "/api/sagas/%s/history", refused_id);
    body = get_ok(http_port, path);
    json_t *h = tj_parse(body);
    free(body);
    assert_non_null(h);
    assert_true(json_is_true(json_object_get(h, "final")));
    const json_t *events = json_object_get(h, "events");
    assert_true(json_array_size(events) >= 6);
    OFX_ASSERT_STR(tj_str(json_array_get(events, 0), "kind"), "saga_started");
    OFX_ASSERT_STR(tj_str(json_array_get(events, json_array_size(events) - 1), "kind"),
                   "saga_compensated");
    assert_int_equal(ofx_history_count(events, "step_reply", "charge_payment", "action"), 1);
    int64_t last_seq = tj_int(json_array_get(events, json_array_size(events) - 2), "seq", -1);
    json_decref(h);
    /* after_seq: only what follows (how watchers poll). */
    snprintf(path, sizeof path, "/api/sagas/%s/history?after_seq=%lld", refused_id,
             (long long)last_seq);
    body = get_ok(http_port, path);
    h = tj_parse(body);
    free(body);
    assert_int_equal(json_array_size(json_object_get(h, "events")), 1);
    json_decref(h);

    /* Errors are JSON with a status: {"error": reason}, under /api and beside it,
     * for an unknown saga or path and for a method other than GET and HEAD. */
    const struct {
        const char *method, *path;
        int status;
    } refused[] = {
        {"GET", "/api/sagas/00000000-0000-4000-8000-000000000000", 404},
        {"GET", "/api/nothing-here", 404},
        {"GET", "/no-such-page", 404},
        {"POST", "/api/sagas", 405},
        {"DELETE", "/api/sagas/00000000-0000-4000-8000-000000000000", 405},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        assert_int_equal(
            obs_request(refused[i].method, http_port, refused[i].path, NULL, NULL, 5000, &r), 0);
        json_t *err = tj_parse(r.body);
        if (r.status != refused[i].status || err == NULL || tj_str(err, "error") == NULL)
            print_message("%s %s: %d %s\n", refused[i].method, refused[i].path, r.status, r.body);
        assert_int_equal(r.status, refused[i].status);
        assert_non_null(strstr(r.headers, "Content-Type: application/json"));
        assert_non_null(tj_str(err, "error"));
        assert_int_equal(tj_int(err, "status", -1), refused[i].status);
        /* 405 names what is allowed; nothing else carries Allow. */
        if (refused[i].status == 405) {
            const char *allow = strstr(r.headers, "\r\nAllow: GET, HEAD");
            assert_non_null(allow);
            allow += strlen("\r\nAllow: GET, HEAD");
            assert_true(*allow == '\r' || *allow == '\0'); /* the whole value */
        } else
            assert_null(strstr(r.headers, "Allow:"));
        json_decref(err);
        obs_response_free(&r);
    }
    assert_int_equal(obs_get(http_port, "/api/sagas?state=BOGUS", NULL, NULL, 5000, &r), 0);
    assert_int_equal(r.status, 400);
    obs_response_free(&r);
    assert_int_equal(obs_get(http_port, "/api/sagas/not-a-uuid", NULL, NULL, 5000, &r), 0);
    assert_int_equal(r.status, 404);
    obs_response_free(&r);
    /* A name that resolves elsewhere (DNS rebinding) is refused. */
    assert_int_equal(obs_get(http_port, "/api/sagas", "evil.example:80", NULL, 5000, &r), 0);
    assert_int_equal(r.status, 403);
    obs_response_free(&r);
    /* The dashboard is served from the binary. */
    assert_int_equal(obs_get(http_port, "/", NULL, NULL, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<script src=\"/app.js\">"));
    assert_non_null(strstr(r.headers, "Content-Security-Policy"));
    obs_response_free(&r);
    body = get_ok(http_port, "/app.js");
    assert_non_null(strstr(body, "/api/sagas"));
    free(body);
}

/* ---- Security of the listener --------------------------------------------------------- */

/* sagad --check on the fixture's file exits 1 with every string given
 * (NULL-terminated) in what it says. */
static void assert_check_refuses(ofx *f, ...)
{
    char *out = th_path(f->dir, "check.out");
    const char *check[] = {"--config", f->cfg, "--check", NULL};
    pid_t pid;
    int status;
    assert_int_equal(th_spawn("sagad", check, NULL, out, &pid), 0);
    assert_int_equal(th_wait_exit(pid, OFX_START_MS, &status), 0);
    assert_true(th_exited_with(status, 1));
    char *text = th_read_file(out);
    assert_non_null(text);
    va_list ap;
    va_start(ap, f);
    for (const char *want = va_arg(ap, const char *); want; want = va_arg(ap, const char *))
        if (strstr(text, want) == NULL)
            fail_msg("sagad --check said \"%s\", without \"%s\"", text, want);
    va_end(ap);
    free(text);
    free(out);
}

/*
 * metrics_token_file: a token that opens /metrics, /api and the dashboard
 * and nothing else, so Prometheus and viewers never hold the power to act.
 * HEAD answers like GET, without the body.
 */
static void test_read_only_token(void **state)
{
    ofx f;
    assert_int_equal(ofx_init(&f, NULL), 0);
    int port = obs_free_port();
    assert_int_equal(obs_enable_http(&f, port), 0);
    char *read_path = th_path(f.dir, "metrics.token");
    assert_int_equal(th_write_file(read_path, "read-only-token\n"), 0);
    char *line = util_asprintf("metrics_token_file = \"%s\";\n", read_path);
    assert_int_equal(obs_append_config(&f, line), 0);
    free(line);
    assert_int_equal(ofx_start_all(&f), 0);

    obs_response r;
    const char *bearer = "Authorization: Bearer read-only-token";
    assert_int_equal(obs_get(port, "/metrics", NULL, bearer, OFX_START_MS, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(obs_metric(r.body, "saga_sagas_in_flight") == 0);
    obs_response_free(&r);
    assert_int_equal(obs_get(port, "/api/sagas", NULL, bearer, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    assert_int_equal(obs_get(port, "/api/sagas", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 401);
    obs_response_free(&r);

    /* HEAD: GET's status and headers, no body. */
    obs_response get, head;
    assert_int_equal(obs_get(port, "/api/sagas", NULL, bearer, 5000, &get), 0);
    assert_int_equal(obs_request("HEAD", port, "/api/sagas", NULL, bearer, 5000, &head), 0);
    assert_int_equal(head.status, get.status);
    assert_string_equal(head.body, "");
    assert_non_null(strstr(head.headers, "Content-Type: application/json"));
    obs_response_free(&get);
    obs_response_free(&head);
    assert_int_equal(obs_request("HEAD", port, "/api/sagas", NULL, "", 5000, &head), 0);
    assert_int_equal(head.status, 401);
    obs_response_free(&head);

    /* The admin API does not take it: nothing can be started with it. */
    char *admin_token_file = f.token_file;
    f.token_file = read_path;
    char *out = NULL;
    int rc = ofx_ctl(&f, &out, "start", "order_fulfillment", "customer=alice", "sku=WIDGET-1",
                     "quantity=1", "amount=100", "destination=paris", NULL);
    print_message("sagactl with the read-only token: exit %d: %s\n", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "token"));
    free(out);
    f.token_file = admin_token_file;
    assert_int_equal(ofx_ctl(&f, &out, "list", NULL), 0);
    assert_null(strstr(out, "alice"));
    free(out);

    /* The same token for both would hand readers the power to act. */
    assert_int_equal(ofx_stop_sagad(&f), 0);
    assert_int_equal(th_write_file(read_path, OBS_TOKEN "\n"), 0);
    assert_check_refuses(&f, "metrics_token_file holds the admin token", NULL);
    free(read_path);
    ofx_destroy(&f);
}

static void test_token_and_exposure(void **state)
{
    ofx f;
    assert_int_equal(ofx_init(&f, NULL), 0);
    int port = obs_free_port();
    char *token_path = th_path(f.dir, "admin.token");
    assert_int_equal(th_write_file(token_path, "s3cret-token\n"), 0);
    char *line = util_asprintf("admin_token_file = \"%s\";\nhttp_url = \"http://127.0.0.1:%d\";\n",
                               token_path, port);
    assert_int_equal(obs_append_config(&f, line), 0);
    free(line);

    /* sagad with --log-format json: every line is one JSON object. */
    const char *args[] = {"--config", f.cfg, "--log-format", "json", NULL};
    assert_int_equal(th_spawn("sagad", args, NULL, f.sagad.log, &f.sagad.pid), 0);
    obs_response r;
    assert_int_equal(obs_get(port, "/metrics", NULL, "", OFX_START_MS, &r), 0);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    obs_response_free(&r);
    assert_int_equal(obs_get(port, "/api/sagas", NULL, "Authorization: Bearer wrong", 5000, &r), 0);
    assert_int_equal(r.status, 401);
    obs_response_free(&r);
    assert_int_equal(
        obs_get(port, "/metrics", NULL, "Authorization: Bearer s3cret-token", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(obs_metric(r.body, "saga_sagas_in_flight") == 0);
    obs_response_free(&r);
    assert_int_equal(
        obs_get(port, "/api/sagas", "localhost", "Authorization: Bearer s3cret-token", 5000, &r),
        0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    /* The dashboard's files hold no data: served without the token. */
    assert_int_equal(obs_get(port, "/style.css", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    assert_int_equal(ofx_stop_sagad(&f), 0);

    char *log = th_read_file(f.sagad.log);
    assert_non_null(log);
    char *nl = strchr(log, '\n');
    assert_non_null(nl);
    *nl = '\0';
    json_t *first = tj_parse(log);
    if (first == NULL)
        print_message("first log line: %s\n", log);
    assert_non_null(first);
    OFX_ASSERT_STR(tj_str(first, "program"), "sagad");
    assert_non_null(tj_str(first, "level"));
    assert_non_null(tj_str(first, "ts"));
    assert_non_null(tj_str(first, "msg"));
    json_decref(first);
    assert_null(strstr(nl + 1, "s3cret-token")); /* the token is never logged */
    free(log);

    /* An address other hosts can reach is refused at start-up. */
    char *cfg = th_read_file(f.cfg);
    char *at = strstr(cfg, "http_url");
    assert_non_null(at);
    *at = '\0';
    char *exposed = util_asprintf("%shttp_url = \"http://0.0.0.0:%d\";\n", cfg, port);
    assert_int_equal(th_write_file(f.cfg, exposed), 0);
    free(cfg);
    free(exposed);
    assert_check_refuses(&f, "http_url: refusing to serve http://0.0.0.0", NULL);

    /* Loopback without a token: every local user could read the sagas. */
    cfg = th_read_file(f.cfg);
    at = strstr(cfg, "admin_token_file");
    assert_non_null(at);
    *at = '\0';
    char *tokenless = util_asprintf("%shttp_url = \"http://127.0.0.1:%d\";\n", cfg, port);
    assert_int_equal(th_write_file(f.cfg, tokenless), 0);
    free(cfg);
    free(tokenless);
    assert_check_refuses(&f, "http_url", "admin_token_file", NULL);
    free(token_path);
    ofx_destroy(&f);
}

/* ---- --log-format json: always valid JSON ------------------------------------------------- */

/* Runs sagad --config config --log-format json (which refuses the file: it
 * does not exist), its log into dir/log_name, and returns each line of its log parsed,
 * NULL-terminated; fails the test when a line is not one JSON object. */
static json_t **json_log_of(const char *dir, const char *log_name, const char *config)
{
    char *log_path = th_path(dir, log_name);
    const char *args[] = {"--config", config, "--log-format", "json", NULL};
    pid_t pid;
    int status;
    assert_int_equal(th_spawn("sagad", args, NULL, log_path, &pid), 0);
    assert_int_equal(th_wait_exit(pid, OFX_CTL_MS, &status), 0);
    assert_true(th_exited_with(status, 1));
    char *log = th_read_file(log_path);
    assert_non_null(log);
    json_t **lines = calloc(64, sizeof *lines);
    size_t n = 0;
    for (char *line = log, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl); /* every line ends: nothing cut in the middle */
        *nl = '\0';
        json_t *obj = tj_parse(line); /* jansson refuses invalid UTF-8 */
        if (!json_is_object(obj))
            print_message("not a JSON object: %s\n", line);
        assert_true(json_is_object(obj));
        assert_true(n < 63);
        lines[n++] = obj;
    }
    assert_true(n >= 1);
    free(log);
    free(log_path);
    return lines;
}

static void free_lines(json_t **lines)
{
    for (size_t i = 0; lines[i] != NULL; i++)
        json_decref(lines[i]);
    free(lines);
}

static void test_json_log_always_valid(void **state)
{
    char *dir = th_tempdir();
    assert_non_null(dir);
    /* A name with invalid UTF-8 (a lone continuation byte, a truncated
     * sequence), a quote, a backslash and control characters reaches the
     * error line: the bytes that are no UTF-8 become U+FFFD. */
    char *config = util_asprintf("%s/bad\xff\xfe\"\\\x01\x7f\xc3.cfg", dir);
    json_t **lines = json_log_of(dir, "invalid-utf8.log", config);
    const char *msg = tj_str(lines[0], "msg");
    OFX_ASSERT_STR(tj_str(lines[0], "level"), "ERROR");
    OFX_ASSERT_STR(tj_str(lines[0], "program"), "sagad");
    char *want = util_asprintf("%s/bad\xef\xbf\xbd\xef\xbf\xbd\"\\\x01\x7f\xef\xbf\xbd.cfg", dir);
    assert_non_null(msg);
    if (strstr(msg, want) == NULL)
        print_message("msg: %s\n", msg);
    assert_non_null(strstr(msg, want));
    assert_null(json_object_get(lines[0], "truncated"));
    free_lines(lines);
    free(want);
    free(config);

    /* A message whose escapes would not fit a line (control characters
     * take six bytes each) is cut, said so, and still one JSON object. */
    char *ctl = calloc(1, 1601);
    memset(ctl, '\x01', 1600);
    config = util_asprintf("%s/%s\xff", dir, ctl);
    lines = json_log_of(dir, "too-long.log", config);
    assert_true(json_is_true(json_object_get(lines[0], "truncated")));
    assert_non_null(strstr(tj_str(lines[0], "msg"), "\x01\x01\x01"));
    free_lines(lines);
    free(config);
    free(ctl);
    th_rmtree(dir);
    free(dir);
}

/* ---- A participant's metrics and JSON log ------------------------------------------------- */

static void test_participant_metrics(void **state)
{
    char *dir = th_tempdir();
    char *url = th_ipc_url(dir, "payment");
    char *db = th_path(dir, "payment.db");
    char *logp = th_path(dir, "payment.log");
    char *seed = th_source_path("participants/seeds/payment.cfg");
    int port = obs_free_port();
    char murl[64];
    snprintf(murl, sizeof murl, "http://127.0.0.1:%d", port);
    const char *args[] = {"--listen",      url,  "--db",         db,     "--seed", seed,
                          "--metrics-url", murl, "--log-format", "json", NULL};
    pid_t pid;
    assert_int_equal(th_spawn("payment-svc", args, NULL, logp, &pid), 0);
    assert_int_equal(th_wait_dial(url, pid, OFX_START_MS), 0);

    kvmap params = KVMAP_INIT;
    assert_int_equal(th_kv(&params, "customer", "alice", "amount", "100", NULL), 0);
    for (int i = 0; i < 2; i++) { /* the second is a duplicate: replayed */
        StepReply *rep = NULL;
        assert_int_equal(th_call(url, 5000, "s1/charge/action", "s1", "charge", PHASE_ACTION,
                                 "charge", &params, &rep),
                         0);
        assert_int_equal(rep->outcome, OUTCOME_OK);
        assert_int_equal(rep->replayed, i == 1);
        th_reply_free(rep);
    }
    /* Two more charges in one frame (docs/PARTICIPANTS.md), answered in one. */
    size_t l2, l3, flen;
    uint8_t *m2 = wire_pack_request("s2/charge/action", "s2", "charge", PHASE_ACTION, "charge", 1,
                                    &params, &l2);
    uint8_t *m3 = wire_pack_request("s3/charge/action", "s3", "charge", PHASE_ACTION, "charge", 1,
                                    &params, &l3);
    const uint8_t *parts[] = {m2, m3};
    const size_t lens[] = {l2, l3};
    uint8_t *frame = wire_pack_batch(2, parts, lens, &flen), *answer = NULL;
    size_t alen = 0;
    th_client c;
    assert_int_equal(th_client_open(&c, url, 5000), 0);
    assert_int_equal(th_client_raw(&c, frame, flen, &answer, &alen), 0);
    th_client_close(&c);
    StepBatch *sb = wire_unpack_batch(answer, alen);
    assert_non_null(sb);
    assert_int_equal(sb->n_items, 2);
    saga__v1__step_batch__free_unpacked(sb, NULL);
    free(answer);
    free(frame);
    free(m2);
    free(m3);
    kv_free(&params);

    obs_response r;
    assert_int_equal(obs_get(port, "/metrics", NULL, NULL, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    const char *svc = "{service=\"payment\"}";
    char sample[256];
#define PM(name) (snprintf(sample, sizeof sample, "%s%s", name, svc), obs_metric(r.body, sample))
    /* Requests are counted per operation now (below): no series without it. */
    assert_true(PM("saga_participant_requests_total") < 0);
    assert_int_equal((int)PM("saga_participant_effects_total"), 3);
    assert_int_equal((int)PM("saga_participant_frames_total"), 1);
    assert_int_equal((int)PM("saga_participant_replays_total"), 1);
    assert_int_equal((int)PM("saga_participant_conflicts_total"), 0);
    assert_int_equal((int)PM("saga_participant_barrier_skips_total"), 0);
    assert_int_equal((int)PM("saga_participant_idempotency_records_purged_total"), 0);
    /* One durable commit per batch: the first charge, the duplicate (its replay is counted in
     * pt_counters, a write) and the frame. */
    assert_int_equal((int)PM("saga_participant_syncs_total"), 3);
#undef PM
    /* Per operation, phase and outcome: the four charges answered OK (the
     * replay included), each observed once in the latency histogram; the
     * refund is there with 0; no "_unknown" series (every request named an
     * operation of payment's). */
#define PO(name, op, phase, extra)                                                                 \
    (snprintf(sample, sizeof sample, "%s{service=\"payment\",operation=\"%s\",phase=\"%s\"%s}",    \
              name, op, phase, extra),                                                             \
     obs_metric(r.body, sample))
    assert_int_equal(
        (int)PO("saga_participant_requests_total", "charge", "action", ",outcome=\"OK\""), 4);
    assert_int_equal(
        (int)PO("saga_participant_requests_total", "charge", "action", ",outcome=\"REJECTED\""), 0);
    assert_int_equal(
        (int)PO("saga_participant_requests_total", "refund", "compensate", ",outcome=\"OK\""), 0);
    assert_int_equal((int)PO("saga_participant_request_seconds_count", "charge", "action", ""), 4);
    assert_int_equal(
        (int)PO("saga_participant_request_seconds_bucket", "charge", "action", ",le=\"+Inf\""), 4);
    assert_true(PO("saga_participant_request_seconds_sum", "charge", "action", "") > 0);
    assert_int_equal((int)PO("saga_participant_request_seconds_count", "refund", "compensate", ""),
                     0);
    assert_null(strstr(r.body, "operation=\"_unknown\""));
    assert_non_null(strstr(r.body, "# TYPE saga_participant_request_seconds histogram\n"));
    obs_response_free(&r);

    /* A refused charge (carol holds 500) and its refund (SKIPPED: the barrier
     * knows the charge had no effect) each show under their outcome. */
    kvmap big = KVMAP_INIT;
    assert_int_equal(th_kv(&big, "customer", "carol", "amount", "900", NULL), 0);
    StepReply *rep = NULL;
    assert_int_equal(
        th_call(url, 5000, "s4/charge/action", "s4", "charge", PHASE_ACTION, "charge", &big, &rep),
        0);
    assert_int_equal(rep->outcome, OUTCOME_REJECTED);
    th_reply_free(rep);
    assert_int_equal(th_call(url, 5000, "s4/charge/compensate", "s4", "charge", PHASE_COMPENSATE,
                             "refund", &big, &rep),
                     0);
    assert_int_equal(rep->outcome, OUTCOME_SKIPPED);
    th_reply_free(rep);
    kv_free(&big);
    assert_int_equal(obs_get(port, "/metrics", NULL, NULL, 5000, &r), 0);
    assert_int_equal(
        (int)PO("saga_participant_requests_total", "charge", "action", ",outcome=\"REJECTED\""), 1);
    assert_int_equal(
        (int)PO("saga_participant_requests_total", "refund", "compensate", ",outcome=\"SKIPPED\""),
        1);
    assert_int_equal((int)PO("saga_participant_request_seconds_count", "charge", "action", ""), 5);
#undef PO
    obs_response_free(&r);

    /* /healthz: no token, 200 while the database answers; 503 with the reason
     * while the file is gone (moved away), 200 again once it is back. */
    assert_int_equal(obs_get(port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Type: application/json"));
    assert_string_equal(r.body, "{\"status\":\"ok\"}\n");
    obs_response_free(&r);
    char *moved = th_path(dir, "payment.db.moved");
    assert_int_equal(rename(db, moved), 0);
    assert_int_equal(obs_get(port, "/healthz", NULL, "", 5000, &r), 0);
    int sick_status = r.status;
    json_t *sick = tj_parse(r.body);
    assert_int_equal(rename(moved, db), 0); /* first: the service keeps its file */
    assert_int_equal(sick_status, 503);
    OFX_ASSERT_STR(tj_str(sick, "status"), "unavailable");
    assert_non_null(strstr(tj_str(sick, "reason"), "payment.db"));
    json_decref(sick);
    obs_response_free(&r);
    free(moved);
    assert_int_equal(obs_get(port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    int status;
    assert_int_equal(th_stop(pid, OFX_START_MS, &status), 0);
    assert_true(th_exited_with(status, 0));

    /* Every line of the log is a JSON object with ts, level, program, msg. */
    char *log = th_read_file(logp);
    assert_non_null(log);
    assert_non_null(strstr(log, "metrics on http://127.0.0.1:"));
    int lines = 0;
    for (char *line = log, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        json_t *o = tj_parse(line);
        if (o == NULL)
            print_message("not JSON: %s\n", line);
        assert_non_null(o);
        OFX_ASSERT_STR(tj_str(o, "program"), "payment-svc");
        assert_non_null(tj_str(o, "level"));
        assert_non_null(tj_str(o, "msg"));
        json_decref(o);
        lines++;
    }
    assert_true(lines >= 3);
    free(log);

    /* --metrics-url on an address other hosts can reach: refused, exit 2. */
    char *bad = util_asprintf("http://0.0.0.0:%d", port);
    const char *bad_args[] = {"--listen", url, "--db", db, "--metrics-url", bad, NULL};
    assert_int_equal(th_spawn("payment-svc", bad_args, NULL, logp, &pid), 0);
    assert_int_equal(th_wait_exit(pid, OFX_START_MS, &status), 0);
    assert_true(th_exited_with(status, 2));
    free(bad);
    free(url);
    free(db);
    free(logp);
    free(seed);
    th_rmtree(dir);
    free(dir);
}

/* ---- The store's gauges and /healthz ------------------------------------------------- */

#define STATE(st) "{state=\"" st "\"}"

/* order-svc answers every request RETRY (--faults retry=1) and sagad gives
 * up after 3 attempts: an order becomes FAILED at once (neither create nor
 * its cancel ever succeeds). No step can time out on a loaded machine. */
static int setup_order_svc_retrying(void **state)
{
    ofx *f = calloc(1, sizeof *f);
    ofx_opts o = {.timeout_ms = 10000,
                  .action_attempts = 3,
                  .comp_attempts = 3,
                  .initial_backoff_ms = 20,
                  .max_backoff_ms = 50};
    *state = f;
    if (f == NULL || ofx_init(f, &o) != 0)
        return -1;
    http_port = obs_free_port();
    if (obs_enable_http(f, http_port) != 0)
        return -1;
    for (int i = 0; i < OFX_N_SVC; i++)
        if (ofx_start_svc(f, i, i == SVC_ORDER ? "retry=1" : NULL) != 0)
            return -1;
    return ofx_start_sagad(f, NULL);
}

typedef struct {
    ofx *f;
    int code;
} bg_order;

static void *bg_order_main(void *arg)
{
    bg_order *b = arg;
    char id[37];
    b->code = ofx_start_order(b->f, "g-locked", "alice", "WIDGET-1", "1", "1000", "paris", id, NULL,
                              NULL);
    return NULL;
}

/* GETs /healthz without a token until it answers want (up to 30 s); the last answer. */
static void wait_healthz(int port, int want, obs_response *r)
{
    for (int64_t end = util_mono_ms() + 30000;;) {
        assert_int_equal(obs_get(port, "/healthz", NULL, "", 5000, r), 0);
        if (r->status == want || util_mono_ms() > end)
            break;
        obs_response_free(r);
        usleep(100 * 1000);
    }
    if (r->status != want)
        print_message("/healthz: %d %s\n", r->status, r->body);
    assert_int_equal(r->status, want);
}

/* A FAILED saga, then a COMPLETED one once order-svc answers; saga_sagas counts them from the
 * store, so the FAILED one is still there after sagad restarts, when every in-memory counter is 0.
 */
static void test_store_gauges_and_healthz(void **state)
{
    ofx *f = *state;
    int port = http_port;

    /* Nothing yet: every state 0, no age. */
    char *m = get_ok(port, "/metrics");
    for (int i = 0; i < 5; i++) {
        static const char *const names[5] = {STATE("RUNNING"), STATE("COMPENSATING"),
                                             STATE("COMPLETED"), STATE("COMPENSATED"),
                                             STATE("FAILED")};
        char sample[64];
        snprintf(sample, sizeof sample, "saga_sagas%s", names[i]);
        assert_int_equal((int)obs_metric(m, sample), 0);
    }
    assert_int_equal((int)obs_metric(m, "saga_oldest_age_seconds" STATE("FAILED")), 0);
    assert_int_equal((int)obs_metric(m, "saga_oldest_age_seconds" STATE("RUNNING")), 0);
    assert_int_equal((int)obs_metric(m, "saga_build_info{version=\"" SAGA_VERSION "\"}"), 1);
    assert_non_null(strstr(m, "# TYPE saga_sagas gauge\n"));
    assert_non_null(strstr(m, "# TYPE saga_oldest_age_seconds gauge\n"));
    free(m);

    int64_t before_failed = util_wall_ms();
    char failed_id[37], ok_id[37];
    run_order(f, "g-fail", "alice", "1000", failed_id, "FAILED");
    int64_t failed_seen = util_wall_ms();
    assert_int_equal(ofx_stop_svc(f, SVC_ORDER), 0);
    assert_int_equal(ofx_start_svc(f, SVC_ORDER, NULL), 0);
    run_order(f, "g-ok", "alice", "1000", ok_id, "COMPLETED");
    /* The FAILED saga is at least a second old (its age is in whole seconds). */
    while (util_wall_ms() < failed_seen + 1100)
        usleep(50 * 1000);

    m = get_ok(port, "/metrics");
    int64_t scraped = util_wall_ms();
    assert_int_equal((int)obs_metric(m, "saga_sagas" STATE("COMPLETED")), 1);
    assert_int_equal((int)obs_metric(m, "saga_sagas" STATE("FAILED")), 1);
    assert_int_equal((int)obs_metric(m, "saga_sagas" STATE("RUNNING")), 0);
    assert_int_equal((int)obs_metric(m, "saga_sagas" STATE("COMPENSATED")), 0);
    assert_int_equal((int)obs_metric(m, "saga_sagas_failed_total" SAMPLE_TYPE), 1);
    /* The duration of the FAILED saga, observed when it became FAILED. */
    assert_int_equal((int)obs_metric(m,
                                     "saga_duration_seconds_count{saga_type=\"order_fulfillment\","
                                     "state=\"FAILED\"}"),
                     1);
    assert_int_equal((int)obs_metric(m,
                                     "saga_duration_seconds_count{saga_type=\"order_fulfillment\","
                                     "state=\"COMPLETED\"}"),
                     1);
    double age = obs_metric(m, "saga_oldest_age_seconds" STATE("FAILED"));
    assert_true(age >= 1);
    assert_true(age <= (double)(scraped - before_failed) / 1000 + 1);
    assert_int_equal((int)obs_metric(m, "saga_oldest_age_seconds" STATE("RUNNING")), 0);
    free(m);

    /* /healthz: no token needed, and it says nothing but "ok". */
    obs_response r;
    assert_int_equal(obs_get(port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "application/json"));
    assert_string_equal(r.body, "{\"status\":\"ok\"}\n");
    obs_response_free(&r);
    /* A wrong token changes nothing there, and still opens nothing else. */
    assert_int_equal(obs_get(port, "/healthz", NULL, "Authorization: Bearer wrong", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    assert_int_equal(obs_get(port, "/metrics", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 401);
    obs_response_free(&r);
    assert_int_equal(obs_get(port, "/healthz/../api/sagas", NULL, "", 5000, &r), 0);
    assert_int_not_equal(r.status, 200);
    obs_response_free(&r);

    /* A restart: the counters start again from 0, the store's gauge does not. */
    assert_int_equal(ofx_stop_sagad(f), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    m = get_ok(port, "/metrics");
    assert_int_equal((int)obs_metric(m, "saga_sagas_failed_total" SAMPLE_TYPE), 0);
    assert_int_equal((int)obs_metric(m, "saga_sagas" STATE("FAILED")), 1);
    assert_int_equal((int)obs_metric(m, "saga_sagas" STATE("COMPLETED")), 1);
    assert_true(obs_metric(m, "saga_oldest_age_seconds" STATE("FAILED")) >= 1);
    free(m);

    /* SQLite: another process holds the write lock past the engine's busy
     * timeout (5 s): commits are retried, /healthz says 503 and why, then 200
     * once the lock goes. */
    if (ofx_on_postgresql())
        return;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->sagad.db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    f->ctl_timeout_ms = 60000;
    bg_order b = {.f = f, .code = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, bg_order_main, &b), 0);
    obs_response r503 = {0};
    for (int64_t end = util_mono_ms() + 30000; util_mono_ms() < end;) {
        obs_response_free(&r503);
        if (obs_get(port, "/healthz", NULL, "", 5000, &r503) != 0 || r503.status == 503)
            break;
        usleep(100 * 1000);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL); /* releases the lock, whatever was seen */
    sqlite3_close(db);
    pthread_join(t, NULL);
    assert_int_equal(b.code, 0);
    assert_int_equal(r503.status, 503);
    json_t *doc = tj_parse(r503.body);
    assert_non_null(doc);
    OFX_ASSERT_STR(tj_str(doc, "status"), "unavailable");
    assert_non_null(strstr(tj_str(doc, "reason"), "store is unavailable"));
    json_decref(doc);
    obs_response_free(&r503);
    wait_healthz(port, 200, &r);
    obs_response_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_after_sagas, setup_system, teardown_system),
        cmocka_unit_test(test_token_and_exposure),
        cmocka_unit_test(test_read_only_token),
        cmocka_unit_test(test_participant_metrics),
        cmocka_unit_test(test_json_log_always_valid),
        cmocka_unit_test_setup_teardown(test_store_gauges_and_healthz, setup_order_svc_retrying,
                                        teardown_system),
    };
    return cmocka_run_group_tests_name("observability", tests, NULL, NULL);
}
