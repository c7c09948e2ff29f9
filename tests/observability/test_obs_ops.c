/*
 * Operator experience, end to end: a saga that becomes FAILED runs the
 * alert_command (which writes its arguments to a file), and the dashboard,
 * loaded in a real headless Chromium, shows the sagas (FAILED first) and a
 * saga's steps and timeline. Screenshots are saved in the test's temp dir
 * (kept with SAGA_TEST_KEEP=1).
 *
 * One system for the whole file: order-svc is down at first, so the first
 * saga's create_order and its compensation time out until their attempts
 * are spent (FAILED); then order-svc starts and two more sagas run, one
 * completing and one refused at the charge (COMPENSATED). Last, a saga of
 * the shipped order_fulfillment_parallel: its timeline shows charge_payment
 * and reserve_stock side by side. Then a start scheduled an hour ahead,
 * listed by /api/sagas?state=SCHEDULED and the dashboard with its start time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "obs_fixture.h"
#include "util.h"

typedef struct {
    ofx f;
    int port;
    char *alert_out;
    char *hook_dir; /* the alert command's: sagad trusts no file under /tmp */
    char failed_id[37], ok_id[37], refused_id[37];
} sys;

/* What a sagactl started here needs to pass sagad's admin token check. */
static const char *const obs_ctl_env[] = {"SAGA_ADMIN_TOKEN=" OBS_TOKEN, NULL};

static const char alert_script[] = "#!/bin/sh\n"
                                   "# test alert command: one argument per line\n"
                                   "printf '%%s\\n' \"$@\" > \"%s.tmp\"\n"
                                   "echo \"type=$SAGA_TYPE\" >> \"%s.tmp\"\n"
                                   "mv \"%s.tmp\" \"%s\"\n";

static int setup_sys(void **state)
{
    sys *s = calloc(1, sizeof *s);
    /* Two action attempts, many compensation attempts: a saga whose participant
     * is down compensates blindly and FAILS when the compensation's attempts are
     * spent; once it is up, a saga may at worst compensate (never fail). */
    ofx_opts o = {.timeout_ms = 150,
                  .action_attempts = 2,
                  .comp_attempts = 12,
                  .initial_backoff_ms = 10,
                  .max_backoff_ms = 20};
    if (s == NULL || ofx_init(&s->f, &o) != 0)
        return -1;
    *state = s;
    s->port = obs_free_port();
    s->alert_out = th_path(s->f.dir, "alert.out");
    if ((s->hook_dir = th_trusted_tempdir()) == NULL)
        return -1;
    char *script_path = th_path(s->hook_dir, "alert.sh");
    char *script =
        util_asprintf(alert_script, s->alert_out, s->alert_out, s->alert_out, s->alert_out);
    char *line = util_asprintf("alert_command = \"%s\";\n", script_path);
    const char *src = getenv("SAGA_SOURCE_DIR");
    char *par_from = src ? util_asprintf("%s/sagas/order_fulfillment_parallel.cfg", src) : NULL;
    char *par_text = par_from ? th_read_file(par_from) : NULL;
    char *par_to = util_asprintf("%s/sagas/order_fulfillment_parallel.cfg", s->f.dir);
    int rc = -1;
    if (script && line && par_text && par_to && th_write_file(par_to, par_text) == 0 &&
        th_write_file(script_path, script) == 0 && chmod(script_path, 0700) == 0 &&
        obs_append_config(&s->f, line) == 0 && obs_enable_http(&s->f, s->port) == 0)
        rc = 0;
    free(script_path);
    free(script);
    free(line);
    free(par_from);
    free(par_text);
    free(par_to);
    if (rc != 0)
        return -1;
    for (int i = SVC_PAYMENT; i < OFX_N_SVC; i++)
        if (ofx_start_svc(&s->f, i, NULL) != 0)
            return -1;
    return ofx_start_sagad(&s->f, NULL);
}

static int teardown_sys(void **state)
{
    sys *s = *state;
    if (s != NULL) {
        ofx_destroy(&s->f);
        th_rmtree(s->hook_dir);
        free(s->hook_dir);
        free(s->alert_out);
        free(s);
    }
    return 0;
}

/* ---- Alerts ----------------------------------------------------------------------- */

static void test_failed_saga_runs_alert(void **state)
{
    sys *s = *state;
    assert_int_equal(ofx_start_order(&s->f, "a-fail", "alice", "WIDGET-1", "1", "1000", "paris",
                                     s->failed_id, NULL, NULL),
                     0);
    /* sagactl watch follows it live, from now until it is FAILED. */
    char *watch_out = th_path(s->f.dir, "watch-failed.out");
    const char *watch_args[] = {"--url", s->f.sagad.url, "watch", s->failed_id, NULL};
    pid_t watcher;
    assert_int_equal(th_spawn("sagactl", watch_args, obs_ctl_env, watch_out, &watcher), 0);
    json_t *st = ofx_wait_final(&s->f, s->failed_id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    char *reason = util_strdup(tj_str(st, "last_error"));
    json_decref(st);

    char *got = NULL;
    for (int64_t end = util_mono_ms() + 10000; got == NULL && util_mono_ms() < end;) {
        if (access(s->alert_out, F_OK) == 0)
            got = th_read_file(s->alert_out);
        else
            util_sleep_ms(50);
    }
    if (got == NULL)
        ofx_print_log_tail(&s->f.sagad, 30);
    assert_non_null(got);
    char *expect = util_asprintf("%s\n%s\ntype=order_fulfillment\n", s->failed_id, reason);
    OFX_ASSERT_STR(got, expect);
    assert_non_null(strstr(reason, "compensation of step 'create_order' failed after 12"));
    free(expect);
    free(got);
    free(reason);

    int status;
    assert_int_equal(th_wait_exit(watcher, OFX_CTL_MS, &status), 0);
    assert_true(th_exited_with(status, 4)); /* like --wait: FAILED */
    char *text = th_read_file(watch_out);
    assert_non_null(text);
    /* Every event once, in order, step by step, then the final state. */
    const char *order[] = {"saga_started",
                           "step_sent                create_order/action attempt 1",
                           "step_no_reply            create_order/action attempt 1",
                           "retry_scheduled",
                           "step_sent                create_order/action attempt 2",
                           "compensation_started",
                           "step_sent                create_order/compensate attempt 1",
                           "step_sent                create_order/compensate attempt 12",
                           "saga_failed"};
    const char *at = text;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *next = strstr(at, order[i]);
        if (next == NULL)
            print_message("watch output lacks '%s' (in order):\n%s\n", order[i], text);
        assert_non_null(next);
        at = next;
    }
    char *final_line = util_asprintf("saga %s FAILED\n", s->failed_id);
    assert_non_null(strstr(at, final_line));
    free(final_line);
    int sent = 0;
    for (const char *p = text; (p = strstr(p, "step_sent ")) != NULL; p++)
        sent++;
    assert_int_equal(sent, 2 + 12); /* each attempt printed once, no repeats */
    free(text);
    free(watch_out);

    /* Logged, and counted. */
    char *log = th_read_file(s->f.sagad.log);
    char *line = util_asprintf("alert: saga %s FAILED; ran ", s->failed_id);
    assert_non_null(strstr(log, line));
    free(line);
    free(log);
    obs_response r;
    assert_int_equal(obs_get(s->port, "/metrics", NULL, NULL, 5000, &r), 0);
    assert_int_equal((int)obs_metric(r.body, "saga_alerts_total{result=\"started\"}"), 1);
    assert_int_equal(
        (int)obs_metric(r.body, "saga_sagas_failed_total{saga_type=\"order_fulfillment\"}"), 1);
    assert_true(obs_metric(r.body, "saga_step_timeouts_total{participant=\"order\","
                                   "operation=\"create\"}") >= 1);
    obs_response_free(&r);

    /* Now the rest of the system, and two sagas that settle normally. */
    assert_int_equal(ofx_start_svc(&s->f, SVC_ORDER, NULL), 0);
    /* sagad redials order-svc in the background: until it has, a saga may
     * compensate (its two create attempts time out); go on until one completes. */
    const char *state_now = NULL;
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "a-ok-%d", i);
        assert_int_equal(ofx_start_order(&s->f, key, "alice", "WIDGET-1", "1", "1000", "paris",
                                         s->ok_id, NULL, NULL),
                         0);
        st = ofx_wait_final(&s->f, s->ok_id, OFX_WAIT_MS);
        assert_non_null(st);
        int done = strcmp(tj_str(st, "state"), "COMPLETED") == 0;
        if (!done)
            assert_string_equal(tj_str(st, "state"), "COMPENSATED");
        json_decref(st);
        if (done) {
            state_now = "COMPLETED";
            break;
        }
    }
    OFX_ASSERT_STR(state_now, "COMPLETED");
    assert_int_equal(ofx_start_order(&s->f, "a-refused", "carol", "WIDGET-1", "1", "2500", "paris",
                                     s->refused_id, NULL, NULL),
                     0);
    st = ofx_wait_final(&s->f, s->refused_id, OFX_WAIT_MS);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    json_decref(st);
}

/* ---- One document, two doors: sagactl --json and /api ------------------------------------- */

/* sagactl --json with up to three arguments, parsed; fails the test otherwise. */
static json_t *ctl_doc(sys *s, const char *a, const char *b, const char *c)
{
    char *out = NULL;
    int code = ofx_ctl(&s->f, &out, "--json", a, b, c, NULL);
    if (code != 0)
        print_message("sagactl --json %s %s %s: exit %d: %s\n", a, b ? b : "", c ? c : "", code,
                      out ? out : "");
    assert_int_equal(code, 0);
    json_t *doc = tj_parse(out);
    assert_non_null(doc);
    free(out);
    return doc;
}

static json_t *api_doc(sys *s, const char *path)
{
    obs_response r;
    assert_int_equal(obs_get(s->port, path, NULL, NULL, 5000, &r), 0);
    if (r.status != 200)
        print_message("GET %s: %d %s\n", path, r.status, r.body);
    assert_int_equal(r.status, 200);
    json_t *doc = tj_parse(r.body);
    assert_non_null(doc);
    obs_response_free(&r);
    return doc;
}

/* The two documents are equal field by field; else names the first field
 * that differs and shows both. */
static void assert_same_doc(const json_t *ctl, const json_t *api, const char *what)
{
    char where[256];
    if (tj_diff(ctl, api, where, sizeof where) != 0) {
        char *a = json_dumps(ctl, JSON_INDENT(1)), *b = json_dumps(api, JSON_INDENT(1));
        print_message("%s: sagactl --json and /api differ at '%s'\nsagactl: %s\napi: %s\n", what,
                      where, a, b);
        free(a);
        free(b);
        fail();
    }
}

static void test_sagactl_and_api_agree(void **state)
{
    sys *s = *state;
    const char *ids[] = {s->failed_id, s->ok_id, s->refused_id};
    char path[128];
    for (size_t i = 0; i < 3; i++) { /* every saga is settled: neither read can see a change */
        snprintf(path, sizeof path, "/api/sagas/%s", ids[i]);
        json_t *ctl = ctl_doc(s, "status", ids[i], NULL), *api = api_doc(s, path);
        assert_same_doc(ctl, api, "status");
        json_decref(api);
        /* The contract: absent texts are null, failed_phase only when FAILED. */
        if (i == 0) {
            OFX_ASSERT_STR(tj_str(ctl, "state"), "FAILED");
            OFX_ASSERT_STR(tj_str(ctl, "failed_phase"), "compensate");
            assert_non_null(tj_str(ctl, "last_error"));
            OFX_ASSERT_STR(tj_str(ctl, "client_key"), "a-fail");
            /* The step it stopped at, named and flagged; the first cause
             * (its action's attempts spent) apart from the last error (its
             * compensation's). */
            OFX_ASSERT_STR(tj_str(ctl, "failed_step"), "create_order");
            assert_true(json_is_true(json_object_get(ofx_step(ctl, "create_order"), "failed")));
            assert_non_null(
                strstr(tj_str(ctl, "root_cause"), "step 'create_order' failed after 2"));
            assert_non_null(strstr(tj_str(ctl, "last_error"), "compensation of step"));
        } else {
            assert_true(json_is_null(json_object_get(ctl, "failed_phase")));
            assert_true(json_is_null(json_object_get(ctl, "failed_step")));
        }
        if (i == 1) {
            assert_true(json_is_null(json_object_get(ctl, "last_error")));
            assert_true(json_is_null(json_object_get(ctl, "root_cause")));
            const json_t *step = ofx_step(ctl, "create_order");
            assert_true(json_is_null(json_object_get(step, "last_error")));
            /* What the step was sent, when, and how long it took. */
            OFX_ASSERT_STR(tj_str(json_object_get(step, "params"), "customer"), "alice");
            assert_true(tj_int(step, "duration_ms", -1) >= 0);
            assert_true(tj_int(ctl, "duration_ms", -1) >= tj_int(step, "duration_ms", -1));
            const char *at = tj_str(ctl, "created_at");
            assert_non_null(at);
            assert_int_equal(strlen(at), 24); /* 2026-12-02T23:48:32.123Z */
            assert_int_equal(at[23], 'Z');
            assert_true(json_is_null(json_object_get(ctl, "deadline_at")));
        }
        if (i == 2) /* refused at the charge: that is its first cause */
            assert_non_null(strstr(tj_str(ctl, "root_cause"), "charge_payment"));
        json_decref(ctl);

        snprintf(path, sizeof path, "/api/sagas/%s/history", ids[i]);
        ctl = ctl_doc(s, "history", ids[i], NULL);
        api = api_doc(s, path);
        assert_same_doc(ctl, api, "history");
        const json_t *first = json_array_get(json_object_get(ctl, "events"), 0);
        OFX_ASSERT_STR(tj_str(first, "kind"), "saga_started"); /* saga-level: no step */
        assert_true(json_is_null(json_object_get(first, "step")));
        assert_true(json_is_null(json_object_get(first, "phase")));
        assert_true(json_is_false(json_object_get(ctl, "more")));
        /* Each request's params, each action's result. */
        int sent = 0, results = 0;
        const json_t *events = json_object_get(ctl, "events");
        for (size_t e = 0; e < json_array_size(events); e++) {
            const json_t *ev = json_array_get(events, e);
            const char *kind = tj_str(ev, "kind");
            if (strcmp(kind, "step_sent") == 0) {
                assert_true(json_is_object(json_object_get(ev, "params")));
                sent++;
            } else if (json_object_get(ev, "result") != NULL &&
                       json_is_object(json_object_get(ev, "result"))) {
                OFX_ASSERT_STR(kind, "step_reply");
                OFX_ASSERT_STR(tj_str(ev, "outcome"), "OK");
                results++;
            } else {
                assert_true(json_is_null(json_object_get(ev, "params")));
            }
            assert_non_null(tj_str(ev, "at"));
        }
        assert_true(sent > 0);
        if (i == 1)
            assert_true(results > 0);
        json_decref(ctl);
        json_decref(api);
    }
    /* By the beginning of its id, the same document as by its id. */
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%.12s", s->refused_id);
    snprintf(path, sizeof path, "/api/sagas/%s", s->refused_id);
    json_t *by_prefix = ctl_doc(s, "status", prefix, NULL), *by_id = api_doc(s, path);
    assert_same_doc(by_prefix, by_id, "status PREFIX");
    json_decref(by_prefix);
    json_decref(by_id);
    /* A prefix two sagas share is ambiguous: both are listed, nothing is shown. */
    size_t common = 0;
    while (s->failed_id[common] == s->ok_id[common])
        common++;
    assert_true(common >= 1 && common < 36);
    char shared[40];
    snprintf(shared, sizeof shared, "%.*s", (int)common, s->failed_id);
    char *out = NULL;
    int code = ofx_ctl(&s->f, &out, "status", shared, NULL);
    assert_int_equal(code, 1);
    assert_non_null(strstr(out, "is ambiguous"));
    assert_non_null(strstr(out, s->failed_id));
    assert_non_null(strstr(out, s->ok_id));
    assert_null(strstr(out, "state       ")); /* no status printed */
    free(out);
    code = ofx_ctl(&s->f, &out, "history", "ffffffff", NULL);
    assert_int_equal(code, 1);
    assert_non_null(strstr(out, "no saga whose ID begins with 'ffffffff'"));
    free(out);
    code = ofx_ctl(&s->f, &out, "status", "not-an-id", NULL);
    assert_int_equal(code, 2);
    free(out);
    /* Searches: by client key and creation time, the same on both. */
    by_prefix = ctl_doc(s, "list", "--key", "a-refused");
    by_id = api_doc(s, "/api/sagas?key=a-refused");
    assert_same_doc(by_prefix, by_id, "list --key");
    assert_int_equal(json_array_size(json_object_get(by_prefix, "sagas")), 1);
    OFX_ASSERT_STR(tj_str(json_array_get(json_object_get(by_prefix, "sagas"), 0), "client_key"),
                   "a-refused");
    json_decref(by_prefix);
    json_decref(by_id);
    by_prefix = ctl_doc(s, "list", "--since", "1");
    by_id = api_doc(s, "/api/sagas?since_ms=1");
    assert_same_doc(by_prefix, by_id, "list --since");
    json_decref(by_prefix);
    json_decref(by_id);

    json_t *ctl = ctl_doc(s, "list", NULL, NULL), *api = api_doc(s, "/api/sagas");
    assert_same_doc(ctl, api, "list");
    assert_int_equal(tj_int(json_object_get(ctl, "counts"), "FAILED", -1), 1);
    assert_true(json_is_null(json_object_get(ctl, "next_after"))); /* the one page */
    json_decref(ctl);
    json_decref(api);
    /* A full page names where the next begins, the same on both. */
    ctl = ctl_doc(s, "list", "--limit", "1");
    api = api_doc(s, "/api/sagas?limit=1");
    assert_same_doc(ctl, api, "list --limit 1");
    OFX_ASSERT_STR(tj_str(ctl, "next_after"),
                   tj_str(json_array_get(json_object_get(ctl, "sagas"), 0), "saga_id"));
    json_decref(ctl);
    json_decref(api);
}

/* ---- sagactl watch --json and list --watch ------------------------------------------------- */

static void test_watch_json_and_list_watch(void **state)
{
    sys *s = *state;
    char *out = NULL;
    /* A finished saga: everything at once, then the exit status of --wait. */
    int code = ofx_ctl(&s->f, &out, "--json", "watch", s->refused_id, NULL);
    assert_int_equal(code, 3); /* COMPENSATED */
    int lines = 0, rejected = 0;
    int64_t last_seq = 0;
    for (char *line = out, *nl; line && *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        json_t *ev = tj_parse(line); /* one JSON object per line */
        assert_non_null(ev);
        assert_true(tj_int(ev, "seq", -1) > last_seq);
        last_seq = tj_int(ev, "seq", -1);
        if (tj_str(ev, "outcome") && strcmp(tj_str(ev, "outcome"), "REJECTED") == 0)
            rejected++;
        json_decref(ev);
        lines++;
    }
    assert_true(lines >= 6);
    assert_int_equal(rejected, 1);
    free(out);
    assert_int_equal(ofx_ctl(&s->f, NULL, "watch", s->ok_id, NULL), 0);
    assert_int_equal(ofx_ctl(&s->f, &out, "watch", "not-an-id", NULL), 2);
    free(out);

    /* list --watch into a file (not a terminal): a block every second. */
    char *path = th_path(s->f.dir, "list-watch.out");
    const char *args[] = {"--url", s->f.sagad.url, "list", "--watch", NULL};
    pid_t pid;
    assert_int_equal(th_spawn("sagactl", args, obs_ctl_env, path, &pid), 0);
    char *text = NULL;
    for (int64_t end = util_mono_ms() + 15000; util_mono_ms() < end;) {
        util_sleep_ms(200);
        free(text);
        text = th_read_file(path);
        int blocks = 0;
        for (const char *p = text; p && (p = strstr(p, "----\n")) != NULL; p++)
            blocks++;
        if (blocks >= 3)
            break;
    }
    int status;
    th_stop(pid, 5000, &status);
    assert_non_null(text);
    int blocks = 0;
    for (const char *p = text; (p = strstr(p, "----\n")) != NULL; p++)
        blocks++;
    if (blocks < 3)
        print_message("list --watch wrote:\n%s\n", text);
    assert_true(blocks >= 3);
    assert_non_null(strstr(text, "FAILED 1"));
    assert_non_null(strstr(text, s->failed_id));
    assert_non_null(strstr(text, s->ok_id));
    assert_null(strstr(text, "\033[")); /* no screen control into a file */
    free(text);
    text = NULL;

    /* list --watch --json: NDJSON, each round one line, the list document. */
    free(path);
    path = th_path(s->f.dir, "list-watch-json.out");
    const char *json_args[] = {"--url", s->f.sagad.url, "--json", "list", "--watch", NULL};
    assert_int_equal(th_spawn("sagactl", json_args, obs_ctl_env, path, &pid), 0);
    int records = 0;
    for (int64_t end = util_mono_ms() + 15000; records < 2 && util_mono_ms() < end;) {
        util_sleep_ms(200);
        free(text);
        text = th_read_file(path);
        records = 0;
        for (const char *p = text; p && (p = strchr(p, '\n')) != NULL; p++)
            records++;
    }
    th_stop(pid, 5000, &status);
    free(text);
    text = th_read_file(path);
    assert_non_null(text);
    records = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        json_t *doc = tj_parse(line);
        if (doc == NULL)
            print_message("list --watch --json line %d: %s\n", records + 1, line);
        assert_non_null(doc);
        assert_int_equal(tj_int(json_object_get(doc, "counts"), "FAILED", -1), 1);
        assert_true(json_array_size(json_object_get(doc, "sagas")) >= 3);
        json_decref(doc);
        records++;
    }
    assert_true(records >= 2);
    free(text);
    free(path);
}

/* ---- The dashboard in a real browser ------------------------------------------------------ */

/* chromium's absolute path from PATH, or NULL. */
static char *find_chromium(void)
{
    const char *path = getenv("PATH");
    char *copy = util_strdup(path ? path : "/usr/bin:/bin");
    char *found = NULL;
    for (char *dir = strtok(copy, ":"); dir && !found; dir = strtok(NULL, ":")) {
        char *p = util_asprintf("%s/chromium", dir);
        if (p && access(p, X_OK) == 0)
            found = p;
        else
            free(p);
    }
    free(copy);
    return found;
}

/* Runs chromium headless on url with extra (--dump-dom or --screenshot=...);
 * its output goes to out. Returns 0 when it exited 0. */
static int run_chromium(sys *s, const char *chromium, const char *url, const char *extra,
                        const char *out)
{
    char *profile = util_asprintf("%s/chromium-profile-XXXXXX", s->f.dir);
    if (profile == NULL || mkdtemp(profile) == NULL)
        return -1;
    char *udd = util_asprintf("--user-data-dir=%s", profile);
    const char *args[] = {"--headless",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--disable-quic",
                          "--no-first-run",
                          "--disable-background-networking",
                          "--disable-component-update",
                          "--disable-sync",
                          "--disable-dev-shm-usage",
                          udd,
                          "--window-size=1280,900",
                          "--virtual-time-budget=4000",
                          extra,
                          url,
                          NULL};
    pid_t pid;
    int status = -1, rc = -1;
    if (th_spawn(chromium, args, NULL, out, &pid) == 0) {
        if (th_wait_exit(pid, 90000, &status) != 0)
            th_kill(pid);
        else if (th_exited_with(status, 0))
            rc = 0;
    }
    free(udd);
    free(profile);
    return rc;
}

static void assert_png(const char *path)
{
    char *data = th_read_file(path);
    assert_non_null(data);
    assert_memory_equal(data, "\x89PNG", 4);
    free(data);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size > 10000); /* a rendered page, not an empty one */
    print_message("screenshot: %s\n", path);
}

static void test_dashboard_in_browser(void **state)
{
    sys *s = *state;
    char *chromium = find_chromium();
    if (chromium == NULL) {
        print_message("chromium is not installed (apt-get install chromium; "
                      "scripts/install-deps.sh --test installs it): skipping the browser test\n");
        skip();
    }
    char url[256], dom_path[512];
    /* The token in the query, as a link an operator is given: the page moves
     * it into its session storage and out of the address bar. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/?token=%s", s->port, OBS_TOKEN);

    /* The list: ids, states, counts, and the FAILED saga under "needs attention". */
    snprintf(dom_path, sizeof dom_path, "%s/list.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, url, "--dump-dom", dom_path), 0);
    char *dom = th_read_file(dom_path);
    assert_non_null(dom);
    char probe[256];
    snprintf(probe, sizeof probe, "<tr data-saga=\"%s\" data-state=\"COMPLETED\">", s->ok_id);
    if (strstr(dom, probe) == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(strstr(dom, probe));
    snprintf(probe, sizeof probe, "<tr data-saga=\"%s\" data-state=\"COMPENSATED\">",
             s->refused_id);
    assert_non_null(strstr(dom, probe));
    snprintf(probe, sizeof probe, "<tr data-saga=\"%s\" data-state=\"FAILED\">", s->failed_id);
    char *failed_row = strstr(dom, probe);
    assert_non_null(failed_row);
    /* FAILED first: before the newer rows. */
    snprintf(probe, sizeof probe, "<tr data-saga=\"%s\"", s->ok_id);
    assert_true(failed_row < strstr(dom, probe));
    char *attention = strstr(dom, "id=\"needs-attention\"");
    assert_non_null(attention);
    assert_non_null(strstr(attention, s->failed_id));
    assert_non_null(strstr(dom, "Needs attention: 1 FAILED"));
    assert_non_null(strstr(dom, "data-state=\"FAILED\">FAILED</span><b>1</b>"));
    assert_non_null(strstr(dom, "data-state=\"COMPLETED\">COMPLETED</span><b>1</b>"));
    free(dom);
    char png[512];
    snprintf(png, sizeof png, "--screenshot=%s/dashboard-list.png", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, url, png, "/dev/null"), 0);
    assert_png(png + strlen("--screenshot="));

    /* One saga: steps and the timeline of its attempts. */
    char saga_url[300];
    snprintf(saga_url, sizeof saga_url, "%s#saga=%s", url, s->refused_id);
    snprintf(dom_path, sizeof dom_path, "%s/saga.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, "--dump-dom", dom_path), 0);
    dom = th_read_file(dom_path);
    assert_non_null(dom);
    snprintf(probe, sizeof probe, "<code id=\"saga-id\">%s</code>", s->refused_id);
    if (strstr(dom, probe) == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(strstr(dom, probe));
    assert_non_null(strstr(dom, "data-state=\"COMPENSATED\""));
    assert_non_null(strstr(dom, "<tr data-step=\"charge_payment\">"));
    assert_non_null(strstr(dom, "insufficient funds"));
    char *charge = strstr(dom, "data-kind=\"attempt\" data-step=\"charge_payment\"");
    assert_non_null(charge);
    assert_non_null(strstr(charge, "<b class=\"outcome\">REJECTED</b>"));
    char *undo = strstr(dom, "data-kind=\"attempt\" data-step=\"create_order\"");
    assert_non_null(undo);
    assert_non_null(strstr(dom, "compensation attempt"));
    assert_non_null(strstr(dom, "data-kind=\"saga_compensated\""));
    /* What each step was sent and gave back, in its row and its attempts. */
    assert_non_null(strstr(dom, "<td class=\"params\">"));
    assert_non_null(strstr(dom, "customer=carol"));
    assert_non_null(strstr(dom, "params: "));
    assert_non_null(strstr(dom, "result: "));
    assert_non_null(strstr(dom, " UTC)"));
    free(dom);

    /* The FAILED saga: the step it stopped at reads FAILED, in red, not a
     * blue COMPENSATING; the first cause apart from the last error. */
    snprintf(saga_url, sizeof saga_url, "%s#saga=%s", url, s->failed_id);
    snprintf(dom_path, sizeof dom_path, "%s/saga-failed.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, "--dump-dom", dom_path), 0);
    dom = th_read_file(dom_path);
    assert_non_null(dom);
    char *step_row = strstr(dom, "<tr data-step=\"create_order\">");
    if (step_row == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(step_row);
    char *step_end = strstr(step_row, "</tr>");
    assert_non_null(step_end);
    *step_end = '\0';
    assert_non_null(strstr(step_row, "<td class=\"st-FAILED\" data-failed=\"\">FAILED "
                                     "(compensation)</td>"));
    assert_null(strstr(step_row, "st-COMPENSATING"));
    *step_end = '<';
    assert_non_null(strstr(dom, "id=\"failed-step\">step create_order (compensation)"));
    assert_non_null(strstr(dom, "id=\"root-cause\">step 'create_order' failed after 2"));
    assert_non_null(strstr(dom, "sagactl resume "));
    free(dom);
    snprintf(png, sizeof png, "--screenshot=%s/dashboard-saga.png", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, png, "/dev/null"), 0);
    assert_png(png + strlen("--screenshot="));

    /* Steps that ran at the same time share a timeline row, side by side. */
    char *out = NULL;
    assert_int_equal(ofx_ctl(&s->f, &out, "--json", "start", "order_fulfillment_parallel",
                             "customer=bob", "sku=WIDGET-1", "quantity=1", "amount=100",
                             "destination=paris", NULL),
                     0);
    json_t *doc = tj_parse(out);
    char par_id[37];
    snprintf(par_id, sizeof par_id, "%s", tj_str(doc, "saga_id") ? tj_str(doc, "saga_id") : "");
    json_decref(doc);
    free(out);
    json_t *st = ofx_wait_final(&s->f, par_id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    snprintf(saga_url, sizeof saga_url, "%s#saga=%s", url, par_id);
    snprintf(dom_path, sizeof dom_path, "%s/saga-parallel.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, "--dump-dom", dom_path), 0);
    dom = th_read_file(dom_path);
    assert_non_null(dom);
    char *row = strstr(dom, "data-kind=\"together\"");
    if (row == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(row);
    char *row_end = strstr(row, "</li>");
    assert_non_null(row_end);
    *row_end = '\0'; /* both lanes inside this one row */
    assert_non_null(strstr(row, "2 at the same time"));
    assert_non_null(strstr(row, "data-step=\"charge_payment\""));
    assert_non_null(strstr(row, "data-step=\"reserve_stock\""));
    free(dom);
    snprintf(png, sizeof png, "--screenshot=%s/dashboard-parallel.png", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, png, "/dev/null"), 0);
    assert_png(png + strlen("--screenshot="));
    free(chromium);
}

/* ---- A saga COMPLETED after a resume: recovered, never red ------------------------------- */

/* A system of its own: long attempts, so that the pivot (approve_order, no
 * compensation) can be made to fail while everything before it is done. */
static int setup_pivot(void **state)
{
    sys *s = calloc(1, sizeof *s);
    ofx_opts o = {.timeout_ms = 3000, .action_attempts = 200, .pivot_attempts = 3};
    if (s == NULL || ofx_init(&s->f, &o) != 0)
        return -1;
    *state = s;
    s->port = obs_free_port();
    if (obs_enable_http(&s->f, s->port) != 0)
        return -1;
    for (int i = 0; i < OFX_N_SVC; i++)
        if (i != SVC_SHIPPING && ofx_start_svc(&s->f, i, NULL) != 0)
            return -1;
    return ofx_start_sagad(&s->f, NULL);
}

static void test_recovered_saga_in_browser(void **state)
{
    sys *s = *state;
    char *chromium = find_chromium();
    if (chromium == NULL) {
        print_message("chromium is not installed (apt-get install chromium; "
                      "scripts/install-deps.sh --test installs it): skipping the browser test\n");
        skip();
    }
    char id[37];
    assert_int_equal(
        ofx_start_order(&s->f, "r-1", "alice", "WIDGET-1", "1", "1000", "paris", id, NULL, NULL),
        0);
    /* Held at shipping while order-svc goes away; then the pivot meets it dead. */
    json_t *st = ofx_wait_attempts(&s->f, id, "schedule_shipping", 1, OFX_WAIT_MS);
    assert_non_null(st);
    json_decref(st);
    assert_int_equal(ofx_stop_svc(&s->f, SVC_ORDER), 0);
    assert_int_equal(ofx_start_svc(&s->f, SVC_SHIPPING, NULL), 0);
    st = ofx_wait_final(&s->f, id, 60000);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    char *cause = util_strdup(tj_str(st, "root_cause"));
    assert_non_null(cause);
    json_decref(st);
    assert_int_equal(ofx_start_svc(&s->f, SVC_ORDER, NULL), 0);
    char *out = NULL;
    assert_int_equal(ofx_ctl(&s->f, &out, "resume", id, "--reason", "order-svc restarted", NULL),
                     0);
    free(out);
    st = ofx_wait_final(&s->f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);

    char url[256], dom_path[512], probe[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/?token=%s", s->port, OBS_TOKEN);
    /* The list: its row says what it recovered from, muted; nothing red. */
    snprintf(dom_path, sizeof dom_path, "%s/list-recovered.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, url, "--dump-dom", dom_path), 0);
    char *dom = th_read_file(dom_path);
    assert_non_null(dom);
    snprintf(probe, sizeof probe, "<tr data-saga=\"%s\" data-state=\"COMPLETED\">", id);
    char *row = strstr(dom, probe);
    if (row == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(row);
    char *end = strstr(row, "</tr>");
    assert_non_null(end);
    *end = '\0';
    assert_non_null(strstr(row, "<td class=\"recovered\">recovered from: step 'approve_order'"));
    assert_null(strstr(row, "class=\"err\""));
    free(dom);
    /* The saga: "recovered from", no "last error", nothing in red. */
    char saga_url[320];
    snprintf(saga_url, sizeof saga_url, "%s#saga=%s", url, id);
    snprintf(dom_path, sizeof dom_path, "%s/saga-recovered.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, "--dump-dom", dom_path), 0);
    dom = th_read_file(dom_path);
    assert_non_null(dom);
    char *head = strstr(dom, "<dt>recovered from</dt>");
    if (head == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(head);
    assert_non_null(strstr(head, "<span class=\"recovered\" id=\"root-cause\">"));
    assert_non_null(strstr(head, cause));
    assert_null(strstr(dom, "<dt>last error</dt>"));
    assert_null(strstr(dom, "<dt>root cause</dt>"));
    assert_null(strstr(dom, "data-failed"));
    /* Its history still tells the story: the failure, then who resumed it. */
    assert_non_null(strstr(dom, "data-kind=\"saga_failed\""));
    assert_non_null(strstr(dom, "order-svc restarted"));
    free(dom);
    char png[512];
    snprintf(png, sizeof png, "--screenshot=%s/dashboard-recovered.png", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, saga_url, png, "/dev/null"), 0);
    assert_png(png + strlen("--screenshot="));
    free(cause);
    free(chromium);
}

/* ---- Scheduled starts: listed by the API and the dashboard ------------------------------ */

/* A start an hour ahead: GET /api/sagas?state=SCHEDULED lists it as sagactl
 * list --state scheduled does, with its start time; the dashboard's
 * SCHEDULED filter shows it with that time, and its page says when it
 * starts and how to cancel it. */
static void test_scheduled_starts_listed(void **state)
{
    sys *s = *state;
    char *out = NULL;
    int code = ofx_ctl(&s->f, &out, "--json", "start", "order_fulfillment", "--key", "dash-sched",
                       "--in", "1h", "customer=alice", "sku=WIDGET-1", "quantity=1", "amount=100",
                       "destination=paris", NULL);
    if (code != 0)
        print_message("%s\n", out);
    assert_int_equal(code, 0);
    json_t *doc = tj_parse(out);
    free(out);
    char id[37];
    assert_non_null(tj_str(doc, "saga_id"));
    snprintf(id, sizeof id, "%s", tj_str(doc, "saga_id"));
    json_decref(doc);

    json_t *ctl = ctl_doc(s, "list", "--state", "scheduled");
    json_t *api = api_doc(s, "/api/sagas?state=SCHEDULED");
    assert_same_doc(ctl, api, "list --state scheduled");
    json_decref(ctl);
    const json_t *row = json_array_get(json_object_get(api, "sagas"), 0);
    OFX_ASSERT_STR(tj_str(row, "saga_id"), id);
    OFX_ASSERT_STR(tj_str(row, "state"), "SCHEDULED");
    int64_t start_at = tj_int(row, "start_at_ms", 0);
    assert_true(start_at > util_wall_ms() + 50 * 60 * 1000);
    assert_int_equal(json_array_size(json_object_get(api, "sagas")), 1);
    assert_int_equal(tj_int(json_object_get(api, "counts"), "SCHEDULED", -1), 1);
    json_decref(api);
    api = api_doc(s, "/api/sagas?state=scheduled"); /* as sagactl, any case */
    assert_int_equal(json_array_size(json_object_get(api, "sagas")), 1);
    json_decref(api);
    /* The other filters list sagas only. */
    api = api_doc(s, "/api/sagas");
    for (size_t i = 0; i < json_array_size(json_object_get(api, "sagas")); i++)
        assert_string_not_equal(tj_str(json_array_get(json_object_get(api, "sagas"), i), "saga_id"),
                                id);
    json_decref(api);
    obs_response r;
    assert_int_equal(obs_get(s->port, "/api/sagas?state=LATER", NULL, NULL, 5000, &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "SCHEDULED"));
    obs_response_free(&r);

    char *chromium = find_chromium();
    if (chromium == NULL) {
        print_message("chromium is not installed (apt-get install chromium; "
                      "scripts/install-deps.sh --test installs it): skipping the browser test\n");
        skip();
    }
    /* What the page shows: the time as fmtTime writes it, "YYYY-MM-DD HH:MM:SS UTC". */
    char when[40], url[300], dom_path[512], probe[256];
    time_t secs = (time_t)(start_at / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/?token=%s#state=SCHEDULED", s->port, OBS_TOKEN);
    snprintf(dom_path, sizeof dom_path, "%s/list-scheduled.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, url, "--dump-dom", dom_path), 0);
    char *dom = th_read_file(dom_path);
    assert_non_null(dom);
    snprintf(probe, sizeof probe, "<tr data-saga=\"%s\" data-state=\"SCHEDULED\">", id);
    char *tr = strstr(dom, probe);
    if (tr == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(tr);
    char *td = strstr(tr, "<td class=\"starts\">");
    assert_non_null(td);
    assert_true(td < strstr(tr, "</tr>"));
    assert_non_null(strstr(td, when));
    assert_true(strstr(td, when) < strstr(td, "</td>"));
    assert_non_null(strstr(td, ">in ")); /* how long until then, beside the time */
    assert_non_null(strstr(dom, "<th id=\"col-when\">Starts</th>"));
    assert_non_null(strstr(dom, "data-state=\"SCHEDULED\">SCHEDULED</span><b>1</b>"));
    free(dom);
    char png[512];
    snprintf(png, sizeof png, "--screenshot=%s/dashboard-scheduled.png", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, url, png, "/dev/null"), 0);
    assert_png(png + strlen("--screenshot="));

    snprintf(url, sizeof url, "http://127.0.0.1:%d/?token=%s#saga=%s", s->port, OBS_TOKEN, id);
    snprintf(dom_path, sizeof dom_path, "%s/saga-scheduled.html", s->f.dir);
    assert_int_equal(run_chromium(s, chromium, url, "--dump-dom", dom_path), 0);
    dom = th_read_file(dom_path);
    assert_non_null(dom);
    char *starts = strstr(dom, "<span id=\"starts-at\">");
    if (starts == NULL)
        print_message("DOM:\n%s\n", dom);
    assert_non_null(starts);
    assert_non_null(strstr(starts, when));
    snprintf(probe, sizeof probe, "sagactl cancel %s", id);
    assert_non_null(strstr(dom, probe));
    assert_null(strstr(dom, "id=\"error\" class=\"error\">")); /* no error shown */
    free(dom);
    free(chromium);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_saga_runs_alert),
        cmocka_unit_test(test_sagactl_and_api_agree),
        cmocka_unit_test(test_watch_json_and_list_watch),
        cmocka_unit_test(test_dashboard_in_browser),
        cmocka_unit_test(test_scheduled_starts_listed),
    };
    const struct CMUnitTest pivot[] = {
        cmocka_unit_test(test_recovered_saga_in_browser),
    };
    int failed = cmocka_run_group_tests_name("observability_ops", tests, setup_sys, teardown_sys);
    return failed +
           cmocka_run_group_tests_name("observability_recovered", pivot, setup_pivot, teardown_sys);
}
