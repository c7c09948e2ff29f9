/*
 * test_loyalty — loyalty-svc, the participant written in Python
 * (participants/loyalty/loyalty.py), as a service and inside a saga:
 *
 *   - award gives one point per 100 minor units and stores the reply: the
 *     repeat after a restart of the process is the stored reply, and the
 *     balance moved once; revoke takes the points back once;
 *   - bad parameters are REJECTED naming the parameter, with no effect;
 *   - the shipped sagas/order_with_loyalty.cfg runs through the real sagad
 *     and the five services: a completed saga leaves the points, a saga
 *     whose shipping is refused revokes them (points_audit balanced).
 *
 * The wire rules every participant shares (replay, conflict, barrier,
 * frames, hostile input) are checked by the conformance kit
 * (tests/conformance), for this service as for the C ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <signal.h>

#include "fixture.h"
#include "util.h"

static int setup(void **state)
{
    return fx_setup(state, "loyalty");
}

static int teardown(void **state)
{
    return fx_teardown(state);
}

static void test_award_replayed_after_restart_and_revoked_once(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);
    StepReply *r = fx_step(s, saga, "points", PHASE_ACTION, "award", "customer", "alice", "amount",
                           "2599", "order_id", "order-1", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_string_equal(th_result(r, "points"), "25");
    char *award_id = util_strdup(th_result(r, "award_id"));
    th_reply_free(r);
    assert_int_equal(fx_sql_int(s, "SELECT points FROM accounts WHERE customer = 'alice'"), 25);

    /* The record is durable: a new process replays it, no second award. */
    assert_int_equal(fx_stop(s), 0);
    assert_int_equal(fx_start(s, NULL), 0);
    r = fx_step(s, saga, "points", PHASE_ACTION, "award", "customer", "alice", "amount", "2599",
                "order_id", "order-1", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_true(r->replayed);
    assert_string_equal(th_result(r, "award_id"), award_id);
    th_reply_free(r);
    assert_int_equal(fx_sql_int(s, "SELECT points FROM accounts WHERE customer = 'alice'"), 25);

    for (int i = 0; i < 2; i++) {
        r = fx_step(s, saga, "points", PHASE_COMPENSATE, "revoke", "customer", "alice", "amount",
                    "2599", "order_id", "order-1", NULL);
        FX_ASSERT_OUTCOME(r, OUTCOME_OK);
        assert_int_equal(r->replayed, i == 1);
        assert_string_equal(th_result(r, "award_id"), award_id);
        th_reply_free(r);
    }
    assert_int_equal(fx_sql_int(s, "SELECT points FROM accounts WHERE customer = 'alice'"), 0);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM awards WHERE state = 'revoked'"), 1);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM points_audit WHERE NOT balanced"), 0);
    free(award_id);
}

static void test_bad_params_rejected_without_effect(void **state)
{
    fx_svc *s = *state;
    static const struct {
        const char *customer, *amount, *error;
    } cases[] = {
        {NULL, "100", "missing parameter 'customer'"},
        {"alice", NULL, "missing parameter 'amount'"},
        {"alice", "0", "parameter 'amount' must be an integer in [1, 1000000000]"},
        {"alice", "1000000001", "parameter 'amount' must be an integer in [1, 1000000000]"},
        {"alice", "12.5", "parameter 'amount' must be an integer"},
        {"alice", "+5", "parameter 'amount' must be an integer"},
        {"", "100", "parameter 'customer' must be 1 to 128 bytes"},
        {"al\tice", "100", "parameter 'customer' must be 1 to 128 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char saga[37];
        fx_saga_id(saga);
        StepReply *r;
        if (cases[i].customer == NULL)
            r = fx_step(s, saga, "points", PHASE_ACTION, "award", "amount", cases[i].amount, NULL);
        else if (cases[i].amount == NULL)
            r = fx_step(s, saga, "points", PHASE_ACTION, "award", "customer", cases[i].customer,
                        NULL);
        else
            r = fx_step(s, saga, "points", PHASE_ACTION, "award", "customer", cases[i].customer,
                        "amount", cases[i].amount, NULL);
        FX_ASSERT_OUTCOME(r, OUTCOME_REJECTED);
        FX_ASSERT_ERROR_HAS(r, cases[i].error);
        th_reply_free(r);
    }
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM awards"), 0);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM accounts"), 0);
}

/*
 * The private-file and socket rules of docs/SECURITY.md hold for the Python
 * participant too: a database others may read is refused naming the fix
 * (exit 1), an address other than ipc:// is refused (exit 2).
 */
static void test_refuses_loose_database_and_non_ipc(void **state)
{
    fx_svc *s = *state;
    int status;
    pid_t pid;
    assert_int_equal(fx_stop(s), 0);
    assert_int_equal(chmod(s->db, 0644), 0);
    char *log = th_path(s->dir, "start.log");
    const char *args[] = {"--listen", s->url, "--db", s->db, NULL};
    assert_int_equal(th_spawn("loyalty-svc", args, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, FX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 1));
    char *out = th_read_file(log);
    assert_non_null(out);
    assert_non_null(strstr(out, "chmod 600"));
    free(out);
    assert_int_equal(chmod(s->db, 0600), 0);

    const char *tcp[] = {"--listen", "tcp://127.0.0.1:7408", "--db", s->db, NULL};
    assert_int_equal(th_spawn("loyalty-svc", tcp, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, FX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 2));
    out = th_read_file(log);
    assert_non_null(strstr(out, "only ipc:// addresses are served"));
    free(out);
    free(log);
    assert_int_equal(fx_start(s, NULL), 0); /* private again: it serves */
}

/*
 * --log-format json, as every program takes it (docs/OBSERVABILITY.md): each
 * line one JSON object with ts, level, program and msg, also for a message
 * carrying a quote, a backslash and a control character; an unknown format
 * is refused (exit 2).
 */
static void test_json_log_lines(void **state)
{
    fx_svc *s = *state;
    int status;
    pid_t pid;
    assert_int_equal(fx_stop(s), 0);
    char *log = th_path(s->dir, "json.log");
    const char *bad[] = {"--listen", s->url, "--db", s->db, "--log-format", "xml", NULL};
    assert_int_equal(th_spawn("loyalty-svc", bad, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, FX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 2));
    char *out = th_read_file(log);
    assert_non_null(strstr(out, "--log-format must be 'text' or 'json'"));
    free(out);

    free(log);
    log = th_path(s->dir, "json2.log");
    const char *args[] = {"--listen", s->url, "--db", s->db, "--log-format", "json", NULL};
    assert_int_equal(th_spawn("loyalty-svc", args, NULL, log, &pid), 0);
    assert_int_equal(th_wait_dial(s->url, pid, FX_TIMEOUT_MS), 0);
    /* A request with an operation it does not have is logged with its name. */
    char saga[37];
    fx_saga_id(saga);
    StepReply *r = fx_step(s, saga, "points", PHASE_ACTION, "no\"such\\op\x01", NULL);
    assert_non_null(r);
    th_reply_free(r);
    kill(pid, SIGTERM);
    assert_int_equal(th_wait_exit(pid, FX_TIMEOUT_MS, &status), 0);
    out = th_read_file(log);
    assert_non_null(out);
    int lines = 0, warned = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (o == NULL)
            fail_msg("not JSON: %s (%s)", line, jerr.text);
        assert_non_null(json_string_value(json_object_get(o, "ts")));
        assert_non_null(json_string_value(json_object_get(o, "msg")));
        assert_string_equal(json_string_value(json_object_get(o, "program")), "loyalty-svc");
        const char *level = json_string_value(json_object_get(o, "level"));
        assert_non_null(level);
        warned += strcmp(level, "WARN") == 0;
        json_decref(o);
    }
    assert_true(lines >= 2); /* serving ..., stopped ... */
    assert_true(warned >= 1);
    free(out);
    free(log);
    assert_int_equal(fx_start(s, NULL), 0);
}

/* ---- The shipped saga through sagad --------------------------------------- */

typedef struct {
    fx_svc svc[5];
    char *dir, *cfg, *admin, *log;
    pid_t sagad;
} system_fx;

static const char *const svc_names[5] = {"order", "payment", "inventory", "shipping", "loyalty"};

/* sagactl --url admin ARGS...: exit code; *out its output (malloc'd). */
static int ctl(system_fx *f, char **out, const char *const *args)
{
    const char *argv[16] = {"--url", f->admin, "--timeout", "20000"};
    size_t n = 4;
    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    char *path = th_path(f->dir, "ctl.out");
    pid_t pid;
    int status = 0;
    unlink(path);
    assert_int_equal(th_spawn("sagactl", argv, NULL, path, &pid), 0);
    assert_int_equal(th_wait_exit(pid, 60000, &status), 0);
    *out = th_read_file(path);
    free(path);
    assert_non_null(*out);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_saga_awards_and_revokes_points(void **state)
{
    system_fx f;
    memset(&f, 0, sizeof f);
    f.dir = th_tempdir();
    assert_non_null(f.dir);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fx_init(&f.svc[i], svc_names[i]), 0);
        assert_int_equal(fx_start(&f.svc[i], NULL), 0);
    }
    char *sagas = th_source_path("sagas");
    f.cfg = th_path(f.dir, "sagad.cfg");
    f.admin = th_ipc_url(f.dir, "sagad");
    f.log = th_path(f.dir, "sagad.log");
    char *text = util_asprintf(
        "admin_url = \"%s\";\ndatabase = \"sagad.db\";\nsagas_dir = \"%s\";\n"
        "participants = {\n  order = \"%s\";\n  payment = \"%s\";\n  inventory = \"%s\";\n"
        "  shipping = \"%s\";\n  loyalty = \"%s\";\n};\n",
        f.admin, sagas, f.svc[0].url, f.svc[1].url, f.svc[2].url, f.svc[3].url, f.svc[4].url);
    assert_int_equal(th_write_file(f.cfg, text), 0);
    const char *args[] = {"--config", f.cfg, NULL};
    assert_int_equal(th_spawn("sagad", args, NULL, f.log, &f.sagad), 0);
    assert_int_equal(th_wait_dial(f.admin, f.sagad, FX_TIMEOUT_MS), 0);

    char *out = NULL;
    const char *done[] = {"start",         "order_with_loyalty", "--wait",
                          "customer=dave", "sku=WIDGET-1",       "quantity=1",
                          "amount=2500",   "destination=berlin", NULL};
    int code = ctl(&f, &out, done);
    print_message("%s", out);
    free(out);
    assert_int_equal(code, 0); /* COMPLETED */
    const char *undone[] = {"start",         "order_with_loyalty", "--wait",
                            "customer=dave", "sku=WIDGET-1",       "quantity=1",
                            "amount=4000",   "destination=tokyo",  NULL};
    code = ctl(&f, &out, undone);
    print_message("%s", out);
    free(out);
    assert_int_equal(code, 3); /* COMPENSATED: shipping refused Tokyo */

    fx_svc *loyalty = &f.svc[4];
    assert_int_equal(fx_sql_int(loyalty, "SELECT points FROM accounts WHERE customer = 'dave'"),
                     25);
    assert_int_equal(fx_sql_int(loyalty, "SELECT count(*) FROM awards WHERE state = 'revoked' "
                                         "AND points = 40"),
                     1);
    assert_int_equal(fx_sql_int(loyalty, "SELECT count(*) FROM points_audit WHERE NOT balanced"),
                     0);

    int status;
    assert_int_equal(th_stop(f.sagad, FX_TIMEOUT_MS, &status), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fx_stop(&f.svc[i]), 0);
        fx_destroy(&f.svc[i]);
    }
    th_rmtree(f.dir);
    free(text);
    free(sagas);
    free(f.dir);
    free(f.cfg);
    free(f.admin);
    free(f.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_award_replayed_after_restart_and_revoked_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_params_rejected_without_effect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_loose_database_and_non_ipc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_log_lines, setup, teardown),
        cmocka_unit_test(test_saga_awards_and_revokes_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
