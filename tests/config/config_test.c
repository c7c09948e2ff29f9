/*
 * config_test — the configuration loader (orchestrator/config.c).
 *
 * The shipped sagas/sagad.cfg and sagas/order_fulfillment.cfg must load into
 * the expected structures. Then one test per class of error: each writes its
 * files into a fresh temporary directory and asserts that config_load fails,
 * that the message starts with the exact "FILE:LINE:" of the culprit (the line
 * is found by searching the fixture text, so fixtures can be edited freely),
 * that it names the problem and the setting path, and that *out is zeroed.
 */
#define _XOPEN_SOURCE 700 /* nftw, to remove the temporary directories */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "saga_dag.h"
#include "cpu_sched.h"
#include "wire.h"
#include "saga.h"

/* ---- Fixture: a temporary directory with an orchestrator and saga files ---- */

typedef struct {
    char dir[64];    /* realpath of the temp dir */
    char orch[128];  /* dir/sagad.cfg */
    char sagas[128]; /* dir/sagas */
    char err[1024];
    orch_config cfg;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    char tmpl[] = "/tmp/config_test-XXXXXX";
    if (mkdtemp(tmpl) == NULL || realpath(tmpl, f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->orch, sizeof f->orch, "%s/sagad.cfg", f->dir);
    snprintf(f->sagas, sizeof f->sagas, "%s/sagas", f->dir);
    if (mkdir(f->sagas, 0700) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    fixture *f = *state;
    config_free(&f->cfg);
    int rc = nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

/* Writes text into dir/name. */
static void put(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* The 1-based line of text on which needle first appears. */
static int line_of(const char *text, const char *needle)
{
    const char *at = strstr(text, needle);
    assert_non_null(at);
    int line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

static int is_zeroed(const orch_config *cfg)
{
    static const orch_config zero;
    return memcmp(cfg, &zero, sizeof zero) == 0;
}

/*
 * Loads f->orch, expecting failure with a message that starts with
 * "FILE:LINE: " and contains every further string given (NULL-terminated).
 */
static void expect_error(fixture *f, const char *file, int line, ...)
{
    memset(&f->cfg, 0xA5, sizeof f->cfg); /* garbage: config_load must zero it */
    int rc = config_load(f->orch, &f->cfg, f->err, sizeof f->err);
    if (rc != -1)
        memset(&f->cfg, 0, sizeof f->cfg); /* keep teardown safe; fail below */
    print_message("message: %s\n", f->err);
    assert_int_equal(rc, -1);
    assert_true(is_zeroed(&f->cfg));

    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s:%d: ", file, line);
    if (strncmp(f->err, prefix, strlen(prefix)) != 0)
        fail_msg("expected the message to start with \"%s\", got \"%s\"", prefix, f->err);
    va_list ap;
    va_start(ap, line);
    for (const char *want = va_arg(ap, const char *); want != NULL; want = va_arg(ap, const char *))
        if (strstr(f->err, want) == NULL)
            fail_msg("expected \"%s\" in \"%s\"", want, f->err);
    va_end(ap);
}

static void expect_ok(fixture *f)
{
    int rc = config_load(f->orch, &f->cfg, f->err, sizeof f->err);
    if (rc != 0)
        fail_msg("config_load failed: %s", f->err);
}

static char *saga_path(fixture *f, const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", f->sagas, name);
    return path;
}

/* A valid orchestrator file and saga file; tests vary one thing at a time. */
static const char orch_text[] = "admin_url = \"ipc://admin.ipc\";\n"
                                "database = \"state/sagad.db\";\n"
                                "sagas_dir = \"sagas\";\n"
                                "participants = {\n"
                                "  alpha = \"ipc://alpha.ipc\";\n"
                                "  beta = \"ipc://beta.ipc\";\n"
                                "};\n";

static const char saga_text[] =
    "name = \"transfer\";\n"
    "inputs = [\"from\", \"to\", \"amount\"];\n"
    "steps = (\n"
    "  { name = \"debit\"; participant = \"alpha\";\n"
    "    action = \"debit\"; compensation = \"credit\";\n"
    "    inputs = [\"from\", \"amount\"]; outputs = [\"debit_id\"]; },\n"
    "  { name = \"deposit\"; participant = \"beta\";\n"
    "    action = \"deposit\"; compensation = \"none\";\n"
    "    inputs = [\"to\", \"amount\", \"debit_id\"]; }\n"
    ");\n";

/* Writes the orchestrator file, dir/sagad.cfg. */
static void put_orch(fixture *f, const char *text)
{
    put(f->dir, "sagad.cfg", text);
}

/* Writes a saga file made of the valid one with `from` replaced by `to`. */
static const char *put_saga_edit(fixture *f, const char *name, const char *from, const char *to)
{
    static char text[8192];
    const char *at = strstr(saga_text, from);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - saga_text), saga_text, to,
             at + strlen(from));
    put(f->sagas, name, text);
    return text;
}

/* ---- The shipped configuration ------------------------------------------- */

static void test_shipped_config(void **state)
{
    fixture *f = *state;
    const char *src = getenv("SAGA_SOURCE_DIR");
    assert_non_null(src);
    char path[PATH_MAX], sagas[PATH_MAX], want[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/sagas/sagad.cfg", src);
    assert_non_null(realpath(path, sagas));
    *strrchr(sagas, '/') = '\0';

    /* Its sockets sit next to it: a checkout deeper than a socket path allows
     * (107 bytes) cannot use it as it is, which config_load would report. */
    if (strlen(sagas) + strlen("/saga-inventory.ipc") > 107) {
        print_message("source dir %s is too deep for the shipped ipc:// paths: skipped\n", sagas);
        skip();
    }
    orch_config *cfg = &f->cfg;
    if (config_load(path, cfg, f->err, sizeof f->err) != 0)
        fail_msg("the shipped config does not load: %s", f->err);

    assert_string_equal(cfg->file, path);
    snprintf(want, sizeof want, "ipc://%s/sagad.ipc", sagas);
    assert_string_equal(cfg->admin_url, want);
    snprintf(want, sizeof want, "%s/sagad.db", sagas);
    assert_string_equal(cfg->database, want);
    assert_string_equal(cfg->sagas_dir, sagas);
    assert_int_equal(cfg->durability_full, 1);
    assert_int_equal(cfg->cpu_scheduling, CPU_SCHED_BATCH);
    assert_int_equal(cfg->frame_max, WIRE_BATCH_MAX);
    assert_int_equal(cfg->max_in_flight, 10000);
    assert_int_equal(cfg->default_timeout_ms, 2000);
    assert_int_equal(cfg->default_retry.max_attempts, 5);
    assert_int_equal(cfg->default_retry.initial_backoff_ms, 100);
    assert_int_equal(cfg->default_retry.max_backoff_ms, 5000);
    assert_true(cfg->default_retry.multiplier == 2.0);
    assert_int_equal(cfg->default_compensation_retry.max_attempts, 10);
    assert_int_equal(cfg->default_compensation_retry.initial_backoff_ms, 200);
    assert_int_equal(cfg->default_compensation_retry.max_backoff_ms, 10000);
    assert_true(cfg->default_compensation_retry.multiplier == 2.0);

    static const char *const participants[] = {"order", "payment", "inventory", "shipping",
                                               "loyalty"};
    assert_int_equal(cfg->n_participants, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(cfg->participants[i].name, participants[i]);
        snprintf(want, sizeof want, "ipc://%s/saga-%s.ipc", sagas, participants[i]);
        assert_string_equal(cfg->participants[i].urls[0], want);
    }

    /* sagad.cfg itself is skipped; order_with_loyalty is checked below */
    assert_int_equal(cfg->n_sagas, 3);
    /* The parallel one: charge_payment and reserve_stock both wait for
     * create_order alone; schedule_shipping for both; approve_order for it. */
    const saga_def *par = config_find_saga(cfg, "order_fulfillment_parallel");
    assert_ptr_equal(par, &cfg->sagas[1]);
    assert_int_equal(par->n_steps, 5);
    assert_int_equal(saga_dag_deps(par, 0), 0);
    assert_int_equal(saga_dag_deps(par, 1), SAGA_DAG_BIT(0));
    assert_int_equal(saga_dag_deps(par, 2), SAGA_DAG_BIT(0));
    assert_int_equal(saga_dag_deps(par, 3), SAGA_DAG_BIT(1) | SAGA_DAG_BIT(2));
    assert_int_equal(saga_dag_deps(par, 4), SAGA_DAG_BIT(3));
    assert_int_equal(saga_dag_ancestors(par, 4), 0xF);
    assert_int_equal(saga_dag_descendants(par, 1), SAGA_DAG_BIT(3) | SAGA_DAG_BIT(4));
    const saga_def *d = config_find_saga(cfg, "order_fulfillment");
    assert_ptr_equal(d, &cfg->sagas[0]);
    assert_null(config_find_saga(cfg, "nope"));
    snprintf(want, sizeof want, "%s/order_fulfillment.cfg", sagas);
    assert_string_equal(d->file, want);
    assert_int_equal(d->n_inputs, 5);
    assert_string_equal(d->inputs[0], "customer");
    assert_string_equal(d->inputs[4], "destination");

    static const struct {
        const char *name, *participant, *action, *compensation, *first_input, *output;
        size_t participant_index, n_inputs;
    } want_steps[] = {
        {"create_order", "order", "create", "cancel", "customer", "order_id", 0, 4},
        {"charge_payment", "payment", "charge", "refund", "customer", "charge_id", 1, 3},
        {"reserve_stock", "inventory", "reserve", "release", "sku", "reservation_id", 2, 3},
        {"schedule_shipping", "shipping", "schedule", "cancel", "destination", "shipment_id", 3, 3},
        {"approve_order", "order", "approve", NULL, "order_id", NULL, 0, 1},
    };
    assert_int_equal(d->n_steps, 5);
    for (size_t i = 0; i < 5; i++) {
        const step_def *st = &d->steps[i];
        assert_string_equal(st->name, want_steps[i].name);
        assert_string_equal(st->participant, want_steps[i].participant);
        assert_int_equal(st->participant_index, want_steps[i].participant_index);
        assert_string_equal(cfg->participants[st->participant_index].name, st->participant);
        assert_string_equal(st->action, want_steps[i].action);
        if (want_steps[i].compensation == NULL)
            assert_null(st->compensation);
        else
            assert_string_equal(st->compensation, want_steps[i].compensation);
        assert_int_equal(st->has_input_list, 1);
        assert_int_equal(st->n_inputs, want_steps[i].n_inputs);
        assert_string_equal(st->inputs[0], want_steps[i].first_input);
        if (want_steps[i].output == NULL) {
            assert_int_equal(st->n_outputs, 0);
        } else {
            assert_int_equal(st->n_outputs, 1);
            assert_string_equal(st->outputs[0], want_steps[i].output);
        }
        assert_int_equal(st->timeout_ms, 2000);
        assert_memory_equal(&st->retry, &cfg->default_retry, sizeof st->retry);
        assert_memory_equal(&st->compensation_retry, &cfg->default_compensation_retry,
                            sizeof st->compensation_retry);
        assert_int_equal(config_step_index(d, st->name), (int)i);
    }
    assert_int_equal(config_step_index(d, "nope"), -1);
    assert_true(d->steps[0].line > 0 && d->steps[0].line < d->steps[4].line);

    /* order_with_loyalty: the same steps with the Python participant's award_points. */
    const saga_def *loyal = config_find_saga(cfg, "order_with_loyalty");
    assert_non_null(loyal);
    assert_int_equal(loyal->n_steps, 6);
    assert_int_equal(config_step_index(loyal, "award_points"), 2);
    const step_def *award = &loyal->steps[2];
    assert_string_equal(award->participant, "loyalty");
    assert_string_equal(cfg->participants[award->participant_index].name, "loyalty");
    assert_string_equal(award->action, "award");
    assert_string_equal(award->compensation, "revoke");

    config_free(cfg);
    assert_true(is_zeroed(cfg));
    config_free(cfg); /* safe on a zeroed struct */
}

/* ---- What a valid configuration resolves to ------------------------------ */

static void test_defaults_and_resolution(void **state)
{
    fixture *f = *state;
    put_orch(f, "participants = { alpha = \"ipc://alpha.ipc\"; beta = \"tcp://h:1\"; };\n"
                "insecure_participant_links = true;\n");
    put(f->dir, "transfer.cfg", saga_text); /* sagas_dir defaults to ".": this dir */
    expect_ok(f);
    char want[512];
    snprintf(want, sizeof want, "ipc://%s/sagad.ipc", f->dir);
    assert_string_equal(f->cfg.admin_url, want);
    snprintf(want, sizeof want, "ipc://%s/alpha.ipc", f->dir);
    assert_string_equal(f->cfg.participants[0].urls[0], want);
    assert_string_equal(f->cfg.participants[1].urls[0], "tcp://h:1");
    assert_int_equal(f->cfg.insecure_participant_links, 1);
    assert_int_equal(f->cfg.alert_timeout_ms, 30000);
    snprintf(want, sizeof want, "%s/sagad.db", f->dir);
    assert_string_equal(f->cfg.database, want);
    assert_string_equal(f->cfg.sagas_dir, f->dir);
    assert_int_equal(f->cfg.durability_full, 1);
    assert_int_equal(f->cfg.max_in_flight, 10000);
    assert_int_equal(f->cfg.default_timeout_ms, 2000);
    assert_int_equal(f->cfg.default_retry.max_attempts, 5);
    assert_int_equal(f->cfg.default_compensation_retry.initial_backoff_ms, 200);
    assert_int_equal(f->cfg.n_sagas, 1); /* sagad.cfg in the same dir is skipped */
    assert_int_equal(f->cfg.retention_ms, 7LL * 86400 * 1000);
    assert_int_equal(f->cfg.sagas[0].retention_ms, 7LL * 86400 * 1000);
}

static void test_overrides_field_by_field(void **state)
{
    fixture *f = *state;
    put_orch(f, "database = \"/var/tmp/x.db\";\n"
                "sagas_dir = \"./sagas\";\n"
                "durability = \"off\";\n"
                "cpu_scheduling = \"normal\";\n"
                "frame_max = 1;\n"
                "max_in_flight = 7;\n"
                "participants = { alpha = \"ipc:///a.ipc\"; beta = \"tcp://h:2\"; };\n"
                "insecure_participant_links = true;\n"
                "defaults = { timeout_ms = 300; retry = { max_attempts = 3; multiplier = 1.5; };\n"
                "  compensation_retry = { max_backoff_ms = 60000; multiplier = 3; }; };\n");
    put_saga_edit(f, "t.cfg", "compensation = \"credit\";",
                  "compensation = \"credit\"; timeout_ms = 50;\n"
                  "    retry = { initial_backoff_ms = 7; };\n"
                  "    compensation_retry = { max_attempts = 99; };");
    expect_ok(f);
    const orch_config *c = &f->cfg;
    assert_string_equal(c->database, "/var/tmp/x.db");
    assert_string_equal(c->sagas_dir, f->sagas);
    assert_int_equal(c->durability_full, 0);
    assert_int_equal(c->cpu_scheduling, CPU_SCHED_NORMAL);
    assert_int_equal(c->frame_max, 1);
    assert_int_equal(c->max_in_flight, 7);
    assert_int_equal(c->default_timeout_ms, 300);
    assert_int_equal(c->default_retry.max_attempts, 3);
    assert_int_equal(c->default_retry.initial_backoff_ms, 100);
    assert_true(c->default_retry.multiplier == 1.5);
    assert_int_equal(c->default_compensation_retry.max_backoff_ms, 60000);
    assert_true(c->default_compensation_retry.multiplier == 3.0);

    const step_def *debit = &c->sagas[0].steps[0], *deposit = &c->sagas[0].steps[1];
    assert_int_equal(debit->timeout_ms, 50);
    assert_int_equal(debit->retry.max_attempts, 3);       /* from defaults */
    assert_int_equal(debit->retry.initial_backoff_ms, 7); /* its own */
    assert_int_equal(debit->retry.max_backoff_ms, 5000);  /* built in */
    assert_true(debit->retry.multiplier == 1.5);
    assert_int_equal(debit->compensation_retry.max_attempts, 99);
    assert_int_equal(debit->compensation_retry.max_backoff_ms, 60000);
    assert_int_equal(deposit->timeout_ms, 300);
    assert_memory_equal(&deposit->retry, &c->default_retry, sizeof deposit->retry);
    assert_int_equal(deposit->participant_index, 1);
}

static void test_absent_inputs_means_everything(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    put_saga_edit(f, "t.cfg", "inputs = [\"to\", \"amount\", \"debit_id\"]; }", "}");
    expect_ok(f);
    const step_def *deposit = &f->cfg.sagas[0].steps[1];
    assert_int_equal(deposit->has_input_list, 0);
    assert_int_equal(deposit->n_inputs, 0);
    assert_int_equal(deposit->n_outputs, 0);
    assert_int_equal(f->cfg.sagas[0].steps[0].has_input_list, 1);
}

static void test_sorted_load_order(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    put_saga_edit(f, "b.cfg", "\"transfer\"", "\"bravo\"");
    put_saga_edit(f, "a.cfg", "\"transfer\"", "\"alpha_saga\"");
    put_saga_edit(f, "c.cfg", "\"transfer\"", "\"charlie\"");
    put_saga_edit(f, ".hidden.cfg", "\"transfer\"", "\"hidden\"");
    put(f->sagas, "notes.txt", "not a saga");
    expect_ok(f);
    assert_int_equal(f->cfg.n_sagas, 3);
    assert_string_equal(f->cfg.sagas[0].name, "alpha_saga");
    assert_string_equal(f->cfg.sagas[1].name, "bravo");
    assert_string_equal(f->cfg.sagas[2].name, "charlie");
    assert_string_equal(f->cfg.sagas[2].file, saga_path(f, "c.cfg"));
}

/* The demo's layout: an orchestrator file elsewhere naming the repo's sagas/,
 * which also holds the shipped orchestrator file: that one is skipped. */
static void test_repo_sagas_dir_from_elsewhere(void **state)
{
    fixture *f = *state;
    const char *src = getenv("SAGA_SOURCE_DIR");
    assert_non_null(src);
    char text[PATH_MAX + 256];
    snprintf(text, sizeof text,
             "sagas_dir = \"%s/sagas\";\n"
             "participants = { order = \"ipc://o.ipc\"; payment = \"ipc://p.ipc\";\n"
             "  inventory = \"ipc://i.ipc\"; shipping = \"ipc://s.ipc\";\n"
             "  loyalty = \"ipc://l.ipc\"; };\n",
             src);
    put_orch(f, text);
    expect_ok(f);
    assert_int_equal(f->cfg.n_sagas, 3);
    assert_string_equal(f->cfg.sagas[0].name, "order_fulfillment");
    assert_string_equal(f->cfg.sagas[1].name, "order_fulfillment_parallel");
    assert_string_equal(f->cfg.sagas[2].name, "order_with_loyalty");
}

static void test_err_only_orchestrator_files(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\n"
                       "sagas_dir = \"sagas\";\n";
    put_orch(f, text);
    put(f->sagas, "other.cfg", orch_text);
    expect_error(f, f->orch, line_of(text, "sagas_dir"), "no saga files", "(sagas_dir)", NULL);
}

static void test_max_steps_accepted(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    char text[16384];
    size_t pos = (size_t)snprintf(text, sizeof text, "name = \"long\";\nsteps = (\n");
    for (int i = 0; i < SAGA_MAX_STEPS; i++)
        pos += (size_t)snprintf(text + pos, sizeof text - pos,
                                "  { name = \"s%d\"; participant = \"alpha\"; action = \"a\"; "
                                "compensation = \"none\"; }%s\n",
                                i, i + 1 < SAGA_MAX_STEPS ? "," : "");
    snprintf(text + pos, sizeof text - pos, ");\n");
    put(f->sagas, "long.cfg", text);
    expect_ok(f);
    assert_int_equal(f->cfg.sagas[0].n_steps, SAGA_MAX_STEPS);
}

/* ---- Errors: one test per class ------------------------------------------ */

static void test_err_syntax_orchestrator(void **state)
{
    fixture *f = *state;
    const char *text = "database = \"x.db\";\n"
                       "participants = { alpha = \"ipc://a.ipc\"; };\n"
                       "max_in_flight = ;\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "max_in_flight"), "syntax error", NULL);
}

static void test_err_syntax_saga(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text =
        put_saga_edit(f, "t.cfg", "action = \"deposit\";", "action = = \"deposit\";");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "= ="), "syntax error", NULL);
}

static void test_err_duplicate_setting(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "action = \"debit\";",
                                     "action = \"debit\";\n    action = \"debit2\";");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "debit2"), "duplicate setting", NULL);
}

static void test_err_missing_file(void **state)
{
    fixture *f = *state;
    expect_error(f, f->orch, 1, "cannot open", "No such file", NULL);
}

static void test_err_unknown_participant(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text =
        put_saga_edit(f, "t.cfg", "participant = \"beta\"", "participant = \"gamma\"");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "gamma"), "unknown participant \"gamma\"",
                 "alpha, beta", "(steps[1].participant)", NULL);
}

static void test_err_duplicate_saga_name(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    put(f->sagas, "a.cfg", saga_text);
    put(f->sagas, "b.cfg", saga_text);
    expect_error(f, saga_path(f, "b.cfg"), line_of(saga_text, "name = \"transfer\""),
                 "saga name \"transfer\" is already defined in", "/sagas/a.cfg", "(name)", NULL);
}

static void test_err_duplicate_step_name(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "name = \"deposit\"", "name = \"debit\"");
    expect_error(f, saga_path(f, "t.cfg"),
                 line_of(text, "{ name = \"debit\"; participant = \"beta"),
                 "step name \"debit\" is already used by steps[0]", "(steps[1].name)", NULL);
}

static void test_err_missing_compensation(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", " compensation = \"none\";", "");
    /* reported at the step's opening line */
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "{ name = \"deposit\""),
                 "missing setting \"compensation\"", "(steps[1].compensation)", NULL);
}

static void test_err_missing_participants(void **state)
{
    fixture *f = *state;
    put_orch(f, "database = \"x.db\";\nsagas_dir = \"sagas\";\n");
    put(f->sagas, "t.cfg", saga_text);
    expect_error(f, f->orch, 1, "missing setting \"participants\"", "(participants)", NULL);
}

static void test_err_empty_participants(void **state)
{
    fixture *f = *state;
    const char *text = "sagas_dir = \"sagas\";\nparticipants = {\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "participants"), "at least one participant",
                 "(participants)", NULL);
}

static void test_err_wrong_type(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "action = \"debit\";",
                                     "action = \"debit\";\n    timeout_ms = \"2000\";");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "timeout_ms"),
                 "\"timeout_ms\" must be an integer, not a string", "(steps[0].timeout_ms)", NULL);
}

static void test_err_wrong_type_list(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text =
        put_saga_edit(f, "t.cfg", "outputs = [\"debit_id\"]", "outputs = \"debit_id\"");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "outputs"),
                 "must be a list or array, not a string", "(steps[0].outputs)", NULL);
}

static void test_err_range_attempts(void **state)
{
    fixture *f = *state;
    const char *text = "sagas_dir = \"sagas\";\n"
                       "participants = { alpha = \"ipc://a.ipc\"; beta = \"ipc://b.ipc\"; };\n"
                       "defaults = {\n"
                       "  retry = {\n"
                       "    max_attempts = 0;\n"
                       "  };\n"
                       "};\n";
    put_orch(f, text);
    put(f->sagas, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "max_attempts"), "between 1 and 1000, not 0",
                 "(defaults.retry.max_attempts)", NULL);
}

static void test_err_range_multiplier(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text =
        put_saga_edit(f, "t.cfg", "action = \"debit\";",
                      "action = \"debit\";\n    retry = {\n      multiplier = 10.5;\n    };");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "multiplier"), "\"multiplier\"",
                 "between 1.0 and 10.0", "(steps[0].retry.multiplier)", NULL);
}

static void test_err_range_timeout(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "action = \"deposit\";",
                                     "action = \"deposit\";\n    timeout_ms = 3600001;");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "3600001"), "between 1 and 3600000",
                 "(steps[1].timeout_ms)", NULL);
}

static void test_err_range_in_flight(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\nmax_in_flight = 1000001;\n";
    put_orch(f, text);
    put(f->dir, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "max_in_flight"), "between 1 and 1000000",
                 "(max_in_flight)", NULL);
}

static void test_err_range_retention(void **state)
{
    fixture *f = *state;
    const char *text =
        "participants = { alpha = \"ipc://a.ipc\"; };\nidempotency_retention_s = 59;\n";
    put_orch(f, text);
    put(f->dir, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "idempotency_retention_s"), "between 60 and",
                 "(idempotency_retention_s)", NULL);
}

/* Retries that could outlast half the participants' retention: a late retry
 * would find its key forgotten and run the step again. */
static void test_err_retries_outlast_retention(void **state)
{
    fixture *f = *state;
    put_orch(f, "participants = { alpha = \"ipc://a.ipc\"; beta = \"ipc://b.ipc\"; };\n"
                "idempotency_retention_s = 3600;\nsagas_dir = \"sagas\";\n");
    /* debit: 100 attempts x (20 s + 5 s) = 2500 s > 1800 s. */
    const char *text = put_saga_edit(f, "t.cfg", "action = \"debit\";",
                                     "action = \"debit\"; timeout_ms = 20000;\n"
                                     "    retry = { max_attempts = 100; };");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "steps"),
                 "saga \"transfer\" may last up to", "idempotency_retention_s (3600 s)", NULL);
    /* The same policy with a retention that leaves room: accepted. */
    put_orch(f, "participants = { alpha = \"ipc://a.ipc\"; beta = \"ipc://b.ipc\"; };\n"
                "idempotency_retention_s = 86400;\nsagas_dir = \"sagas\";\n");
    expect_ok(f);
    assert_int_equal(f->cfg.retention_ms, 86400LL * 1000);
}

/* libconfig 1.5 reads 4294967396 as 100: the loader must refuse it, not accept 100. */
static void test_err_range_wrapped_integer(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "action = \"debit\";",
                                     "action = \"debit\";\n    timeout_ms = 4294967396;");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "4294967396"),
                 "integer 4294967396 is out of range", NULL);
}

static void test_err_backoff_order(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    /* max_backoff_ms (5000) comes from the built-in defaults */
    const char *text = put_saga_edit(f, "t.cfg", "action = \"debit\";",
                                     "action = \"debit\";\n"
                                     "    retry = {\n"
                                     "      initial_backoff_ms = 6000; };");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "initial_backoff_ms"),
                 "initial_backoff_ms 6000 exceeds max_backoff_ms 5000", "inherited",
                 "(steps[0].retry.initial_backoff_ms)", NULL);
}

static void test_err_cpu_scheduling(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\ncpu_scheduling = \"fifo\";\n";
    put_orch(f, text);
    put(f->dir, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "cpu_scheduling"), "\"batch\" or \"normal\"",
                 "(cpu_scheduling)", NULL);
}

static void test_err_frame_max(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\nframe_max = 33;\n";
    put_orch(f, text);
    put(f->dir, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "frame_max"), "frame_max", NULL);
}

static void test_err_durability(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\n\ndurability = \"normal\";\n";
    put_orch(f, text);
    put(f->dir, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "durability"), "\"full\" or \"off\"", "(durability)",
                 NULL);
}

static void test_err_input_not_available(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text =
        put_saga_edit(f, "t.cfg", "[\"from\", \"amount\"]", "[\"from\",\n \"iban\"]");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "\"iban\""),
                 "input \"iban\" of step \"debit\" is neither a saga input nor an output of a "
                 "step it waits for",
                 "(steps[0].inputs[1])", NULL);
}

static void test_err_input_from_later_step(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = "name = \"t\";\n"
                       "inputs = [\"amount\"];\n"
                       "steps = (\n"
                       "  { name = \"first\"; participant = \"alpha\"; action = \"a\";\n"
                       "    compensation = \"none\"; inputs = [\"amount\", \"receipt\"]; },\n"
                       "  { name = \"second\"; participant = \"beta\"; action = \"b\";\n"
                       "    compensation = \"none\"; outputs = [\"receipt\"]; }\n"
                       ");\n";
    put(f->sagas, "t.cfg", text);
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "\"receipt\"]; }"),
                 "input \"receipt\" of step \"first\" is an output of step \"second\", which "
                 "runs later",
                 "(steps[0].inputs[1])", NULL);
}

static void test_err_input_from_same_step(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text =
        put_saga_edit(f, "t.cfg", "[\"from\", \"amount\"]", "[\"from\", \"debit_id\"]");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "\"debit_id\"]; outputs"),
                 "is an output of step \"debit\", which runs as this very step",
                 "(steps[0].inputs[1])", NULL);
}

static void test_err_output_shadows_input(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "outputs = [\"debit_id\"]",
                                     "outputs = [\"debit_id\", \"amount\"]");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "\"debit_id\", \"amount\"]"),
                 "output \"amount\" of step \"debit\" is already a saga input",
                 "(steps[0].outputs[1])", NULL);
}

static void test_err_too_many_steps(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    char text[16384];
    size_t pos = (size_t)snprintf(text, sizeof text, "name = \"long\";\nsteps = (\n");
    for (int i = 0; i <= SAGA_MAX_STEPS; i++)
        pos += (size_t)snprintf(text + pos, sizeof text - pos,
                                "  { name = \"s%d\"; participant = \"alpha\"; action = \"a\"; "
                                "compensation = \"none\"; }%s\n",
                                i, i < SAGA_MAX_STEPS ? "," : "");
    snprintf(text + pos, sizeof text - pos, ");\n");
    put(f->sagas, "long.cfg", text);
    expect_error(f, saga_path(f, "long.cfg"), line_of(text, "\"s64\""),
                 "too many steps: 65, at most 64", "(steps[64])", NULL);
}

static void test_err_zero_steps(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = "name = \"empty\";\n\nsteps = ();\n";
    put(f->sagas, "t.cfg", text);
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "steps"), "at least one step", "(steps)",
                 NULL);
}

static void test_err_invalid_url(void **state)
{
    fixture *f = *state;
    const char *text = "sagas_dir = \"sagas\";\n"
                       "participants = {\n"
                       "  alpha = \"ipc://a.ipc\";\n"
                       "  beta = \"not a url\";\n"
                       "};\n";
    put_orch(f, text);
    put(f->sagas, "t.cfg", saga_text);
    expect_error(f, f->orch, line_of(text, "beta"), "\"not a url\" is not a valid URL",
                 "(participants.beta)", NULL);
}

static void test_err_url_unsupported_scheme(void **state)
{
    fixture *f = *state;
    const char *text = "sagas_dir = \"sagas\";\n"
                       "admin_url = \"http://localhost:80\";\n"
                       "participants = { alpha = \"ipc://a.ipc\"; };\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "admin_url"), "unsupported transport \"http\"",
                 "(admin_url)", NULL);
}

/* ---- Participant links (docs/SECURITY.md) -------------------------------- */

/* A link that authenticates nobody is refused at its line, whatever its host. */
static void test_err_participant_link_unauthenticated(void **state)
{
    fixture *f = *state;
    static const char *const urls[] = {"tcp://10.1.2.3:7401",
                                       "ws://10.1.2.3:7401/saga",
                                       "tcp://127.0.0.1:7401",
                                       "TCP://127.0.0.1:7401",
                                       "abstract://saga-beta",
                                       "inproc://beta",
                                       NULL};
    put(f->sagas, "t.cfg", saga_text);
    for (const char *const *u = urls; *u != NULL; u++) {
        char text[512];
        snprintf(text, sizeof text,
                 "sagas_dir = \"sagas\";\nparticipants = {\n  alpha = \"ipc://a.ipc\";\n"
                 "  beta = \"%s\";\n};\n",
                 *u);
        put_orch(f, text);
        expect_error(f, f->orch, line_of(text, "beta"), "authenticates nobody", *u,
                     "use an ipc:// path, or tls+tcp://", "insecure_participant_links",
                     "(participants.beta)", NULL);
    }
}

/* tls+tcp:// without sagad's client certificate is not mutual TLS. */
static void test_err_participant_tls_without_client_cert(void **state)
{
    fixture *f = *state;
    const char *text = "sagas_dir = \"sagas\";\n"
                       "tls = { ca_file = \"ca.pem\"; };\n"
                       "participants = {\n  alpha = \"ipc://a.ipc\";\n"
                       "  beta = \"tls+tcp://10.1.2.3:7401\";\n};\n";
    put(f->sagas, "t.cfg", saga_text);
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "beta"), "tls.cert_file and tls.key_file", "mutual TLS",
                 "(participants.beta)", NULL);
}

/* The explicit test setting lets them through (and sagad warns: test_sec_hooks). */
static void test_insecure_participant_links_allowed(void **state)
{
    fixture *f = *state;
    put(f->sagas, "t.cfg", saga_text);
    put_orch(f, "sagas_dir = \"sagas\";\ninsecure_participant_links = true;\n"
                "participants = { alpha = \"abstract://a\"; beta = \"ws://10.1.2.3:7401/x\"; };\n");
    expect_ok(f);
    assert_int_equal(f->cfg.insecure_participant_links, 1);
    assert_string_equal(f->cfg.participants[1].urls[0], "ws://10.1.2.3:7401/x");
}

/* An ipc:// socket in a directory others can write could be swapped for theirs. */
static void test_err_socket_dir_writable(void **state)
{
    fixture *f = *state;
    char shared[512];
    snprintf(shared, sizeof shared, "%s/shared", f->dir);
    assert_int_equal(mkdir(shared, 0700), 0);
    assert_int_equal(chmod(shared, 0777), 0);
    put(f->sagas, "t.cfg", saga_text);
    const char *text = "sagas_dir = \"sagas\";\nparticipants = {\n"
                       "  alpha = \"ipc://shared/a.ipc\";\n  beta = \"ipc://b.ipc\";\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "alpha"),
                 "/shared is writable by every user (mode 0777)", "(participants.alpha)", NULL);
    /* Sticky, as /tmp: still refused. */
    assert_int_equal(chmod(shared, 01777), 0);
    expect_error(f, f->orch, line_of(text, "alpha"), "(mode 1777)",
                 "a sticky directory such as /tmp is not enough", "(participants.alpha)", NULL);
    /* The admin socket, too. */
    assert_int_equal(chmod(shared, 0770), 0);
    const char *admin =
        "sagas_dir = \"sagas\";\nadmin_url = \"ipc://shared/admin.ipc\";\n"
        "participants = {\n  alpha = \"ipc://a.ipc\";\n  beta = \"ipc://b.ipc\";\n};\n";
    put_orch(f, admin);
    expect_error(f, f->orch, line_of(admin, "admin_url"), "writable by its group", "(admin_url)",
                 NULL);
}

static void test_err_url_without_port(void **state)
{
    fixture *f = *state;
    const char *text = "participants = {\n  alpha = \"tcp://127.0.0.1\";\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "alpha"), "needs a port", "(participants.alpha)", NULL);
}

static void test_err_url_ipc_path_too_long(void **state)
{
    fixture *f = *state;
    char text[512];
    char name[121];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    snprintf(text, sizeof text, "participants = {\n  alpha = \"ipc://%s.ipc\";\n};\n", name);
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "alpha"), "longer than 107 bytes",
                 "(participants.alpha)", NULL);
}

static void test_err_admin_url_is_participant(void **state)
{
    fixture *f = *state;
    const char *text = "admin_url = \"ipc://alpha.ipc\";\n"
                       "participants = { alpha = \"ipc://alpha.ipc\"; };\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "admin_url"), "also the URL of participant \"alpha\"",
                 "(admin_url)", NULL);
}

/* ---- Replicas: several URLs for one participant ------------------------- */

static void test_replicas_loaded(void **state)
{
    fixture *f = *state;
    put_orch(f, "participants = {\n"
                "  alpha = [\"ipc://alpha-a.ipc\", \"ipc://alpha-b.ipc\"];\n"
                "  beta = (\"ipc://beta.ipc\");\n"
                "};\n");
    put(f->dir, "transfer.cfg", saga_text);
    expect_ok(f);
    char want[512];
    assert_int_equal(f->cfg.participants[0].n_urls, 2);
    snprintf(want, sizeof want, "ipc://%s/alpha-a.ipc", f->dir);
    assert_string_equal(f->cfg.participants[0].urls[0], want);
    snprintf(want, sizeof want, "ipc://%s/alpha-b.ipc", f->dir);
    assert_string_equal(f->cfg.participants[0].urls[1], want);
    assert_int_equal(f->cfg.participants[1].n_urls, 1);
    snprintf(want, sizeof want, "ipc://%s/beta.ipc", f->dir);
    assert_string_equal(f->cfg.participants[1].urls[0], want);
}

static void test_err_replicas_empty(void **state)
{
    fixture *f = *state;
    const char *text = "participants = {\n  beta = \"ipc://beta.ipc\";\n  alpha = [];\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "alpha"), "participant \"alpha\" has an empty list",
                 "(participants.alpha)", NULL);
}

static void test_err_replicas_duplicate(void **state)
{
    fixture *f = *state;
    /* The same socket written two ways: duplicates are found after resolution. */
    const char *text = "participants = {\n  alpha = [\"ipc://alpha.ipc\",\n"
                       "    \"ipc://./alpha.ipc\"];\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "./alpha"), "participant \"alpha\": URL 2",
                 "repeats URL 1", "(participants.alpha[1])", NULL);
}

static void test_err_replicas_not_string(void **state)
{
    fixture *f = *state;
    const char *text = "participants = {\n  alpha = (\"ipc://alpha.ipc\",\n    42);\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "42"), "participant \"alpha\": URL 2 must be a string",
                 "(participants.alpha[1])", NULL);
}

static void test_err_replicas_group(void **state)
{
    fixture *f = *state;
    const char *text = "participants = {\n  alpha = { url = \"ipc://alpha.ipc\"; };\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "alpha"),
                 "must be a URL string or a list of URL strings", NULL);
}

static void test_err_replicas_insecure_second(void **state)
{
    fixture *f = *state;
    /* Each replica's link is checked on its own line. */
    const char *text = "participants = {\n  alpha = [\"ipc://alpha.ipc\",\n"
                       "    \"tcp://h:7401\"];\n};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "tcp://"), "authenticates nobody", NULL);
}

static void test_err_replicas_admin_url(void **state)
{
    fixture *f = *state;
    const char *text = "admin_url = \"ipc://b.ipc\";\n"
                       "participants = { alpha = [\"ipc://a.ipc\", \"ipc://b.ipc\"]; };\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "admin_url"), "also the URL of participant \"alpha\"",
                 NULL);
}

static void test_err_unknown_setting_step(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "action = \"deposit\";",
                                     "action = \"deposit\";\n    timout_ms = 100;");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "timout_ms"),
                 "unknown setting \"timout_ms\"; did you mean \"timeout_ms\"?",
                 "(steps[1].timout_ms)", NULL);
}

static void test_err_unknown_setting_orchestrator(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\n"
                       "defaults = {\n"
                       "  retry = { max_attempts = 2; };\n"
                       "  compensation_retry = { backoff = 2; };\n"
                       "};\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "backoff"), "unknown setting \"backoff\"",
                 "(defaults.compensation_retry.backoff)", NULL);
}

static void test_err_compensation_retry_without_compensation(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "compensation = \"none\";",
                                     "compensation = \"none\";\n"
                                     "    compensation_retry = { max_attempts = 3; };");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "compensation_retry"),
                 "compensation \"none\"", "(steps[1].compensation_retry)", NULL);
}

static void test_err_invalid_name(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_saga_edit(f, "t.cfg", "name = \"debit\"", "name = \"de/bit\"");
    expect_error(f, saga_path(f, "t.cfg"), line_of(text, "de/bit"), "not a valid name",
                 "(steps[0].name)", NULL);
}

static void test_err_sagas_dir_empty(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\nsagas_dir = \"\";\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "sagas_dir"), "must not be empty", "(sagas_dir)", NULL);
}

static void test_err_sagas_dir_missing(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\n\nsagas_dir = \"nowhere\";\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "sagas_dir"), "/nowhere: No such file or directory",
                 "(sagas_dir)", NULL);
}

static void test_err_sagas_dir_is_file(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\nsagas_dir = \"sagad.cfg\";\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "sagas_dir"), "is not a directory", "(sagas_dir)", NULL);
}

static void test_err_no_saga_files(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\n\n\nsagas_dir = \"sagas\";\n";
    put_orch(f, text);
    put(f->sagas, "README", "saga files end in .cfg");
    expect_error(f, f->orch, line_of(text, "sagas_dir"), "no saga files (*.cfg)", "(sagas_dir)",
                 NULL);
}

static void test_err_no_saga_files_default_dir(void **state)
{
    fixture *f = *state;
    /* only the orchestrator file itself in "." */
    put_orch(f, "participants = { alpha = \"ipc://a.ipc\"; };\n");
    expect_error(f, f->orch, 1, "no saga files", "(sagas_dir)", NULL);
}

static void test_err_include_refused(void **state)
{
    fixture *f = *state;
    const char *text = "participants = { alpha = \"ipc://a.ipc\"; };\n@include \"other.cfg\"\n";
    put_orch(f, text);
    expect_error(f, f->orch, line_of(text, "@include"), "@include is not supported", NULL);
}

/* ---- Definition versions: the canonical text ------------------------------ */

/* The canonical text of the saga defined by text (with orch_text); malloc'd. */
static char *canonical_of(fixture *f, const char *text)
{
    config_free(&f->cfg);
    put_orch(f, orch_text);
    put(f->sagas, "t.cfg", text);
    expect_ok(f);
    char *c = config_saga_canonical(&f->cfg.sagas[0]);
    assert_non_null(c);
    return c;
}

static const char saga_text_reworded[] =
    "# the same saga, written another way\n"
    "steps = (\n"
    "  { participant = \"alpha\"; name = \"debit\";   // settings in another order\n"
    "    compensation = \"credit\"; action = \"debit\";\n"
    "    outputs = [\"debit_id\"]; inputs = (\"from\", \"amount\");\n"
    "    timeout_ms = 2000; /* the default, written out */\n"
    "    retry = { multiplier = 2; max_attempts = 5; }; },\n"
    "  { name = \"deposit\"; participant = \"beta\"; action = \"deposit\";\n"
    "    compensation = \"none\"; inputs = [\"to\", \"amount\", \"debit_id\"]; }\n"
    ");\n"
    "inputs = [\"from\", \"to\", \"amount\"];\n"
    "name = \"transfer\";\n";

/* Comments, spacing, the order of settings and defaults written out do not
 * make a new version. */
static void test_canonical_ignores_form(void **state)
{
    fixture *f = *state;
    char *a = canonical_of(f, saga_text);
    char *b = canonical_of(f, saga_text_reworded);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

/* Every change in what the saga does makes a new version. */
/* ---- Steps at once: after, and deadline_s --------------------------------- */

/* Three steps: a, then b and c at once (c names a), then d after both. */
static const char dag_text[] =
    "name = \"dag\";\n"
    "inputs = [\"amount\"];\n"
    "deadline_s = 90;\n"
    "steps = (\n"
    "  { name = \"a\"; participant = \"alpha\"; action = \"a\"; compensation = \"ua\";\n"
    "    outputs = [\"a_id\"]; },\n"
    "  { name = \"b\"; participant = \"beta\"; action = \"b\"; compensation = \"ub\";\n"
    "    inputs = [\"a_id\"]; outputs = [\"b_id\"]; },\n"
    "  { name = \"c\"; participant = \"alpha\"; action = \"c\"; compensation = \"uc\";\n"
    "    after = [\"a\"]; inputs = [\"amount\", \"a_id\"]; outputs = [\"c_id\"]; },\n"
    "  { name = \"d\"; participant = \"beta\"; action = \"d\"; compensation = \"none\";\n"
    "    after = [\"c\", \"b\"]; inputs = [\"b_id\", \"c_id\"]; }\n"
    ");\n";

/* dag_text with `from` replaced by `to`, written as sagas/dag.cfg. */
static const char *put_dag_edit(fixture *f, const char *from, const char *to)
{
    static char text[8192];
    const char *at = strstr(dag_text, from);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - dag_text), dag_text, to, at + strlen(from));
    put(f->sagas, "dag.cfg", text);
    return text;
}

static void test_after_and_deadline_resolve(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    put(f->sagas, "dag.cfg", dag_text);
    expect_ok(f);
    const saga_def *d = &f->cfg.sagas[0];
    assert_int_equal(d->deadline_ms, 90000);
    assert_int_equal(d->steps[1].has_after, 0); /* the step before it */
    assert_int_equal(saga_dag_deps(d, 1), SAGA_DAG_BIT(0));
    assert_int_equal(saga_dag_deps(d, 2), SAGA_DAG_BIT(0));
    assert_int_equal(d->steps[3].n_after, 2);
    assert_int_equal(d->steps[3].after[0], 2);
    assert_int_equal(d->steps[3].after[1], 1);
    assert_int_equal(saga_dag_descendants(d, 1), SAGA_DAG_BIT(3));
    assert_int_equal(saga_dag_descendants(d, 0), 0xE);

    /* The canonical text keeps after and deadline_s, and reads back the same. */
    char *text = config_saga_canonical(d);
    assert_non_null(strstr(text, "deadline_s = 90;\n"));
    assert_non_null(strstr(text, "after = [\"c\", \"b\"];\n"));
    saga_def back;
    char err[512];
    assert_int_equal(config_parse_saga_text(&f->cfg, text, "stored", &back, err, sizeof err), 0);
    char *again = config_saga_canonical(&back);
    assert_string_equal(again, text);
    assert_int_equal(saga_dag_deps(&back, 3), SAGA_DAG_BIT(1) | SAGA_DAG_BIT(2));
    free(again);
    free(text);
    config_free_saga(&back);

    /* A file without after or deadline_s keeps the canonical text it had:
     * neither key appears, so its version does not change with this sagad. */
    config_free(&f->cfg);
    assert_int_equal(remove(saga_path(f, "dag.cfg")), 0);
    char *plain = canonical_of(f, saga_text);
    assert_null(strstr(plain, "after"));
    assert_null(strstr(plain, "deadline_s"));
    free(plain);
}

/* A changed graph, or deadline, is a changed definition: a new version. */
static void test_canonical_follows_after(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *from, *to;
    } edits[] = {
        {"after = [\"a\"]; ", ""},                     /* c: after b, the step before */
        {"after = [\"c\", \"b\"]", "after = [\"c\"]"}, /* b's output would be missing: */
        {"deadline_s = 90;\n", "deadline_s = 91;\n"},
        {"deadline_s = 90;\n", ""},
    };
    put_orch(f, orch_text);
    put(f->sagas, "dag.cfg", dag_text);
    expect_ok(f);
    char *base = config_saga_canonical(&f->cfg.sagas[0]);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        if (i == 1)
            continue; /* refused: see test_err_input_not_guaranteed */
        config_free(&f->cfg);
        put_orch(f, orch_text);
        put_dag_edit(f, edits[i].from, edits[i].to);
        expect_ok(f);
        char *c = config_saga_canonical(&f->cfg.sagas[0]);
        if (strcmp(c, base) == 0)
            fail_msg("edit %zu (%s -> %s) kept the canonical text", i, edits[i].from, edits[i].to);
        free(c);
    }
    free(base);
}

static void test_err_after_unknown_step(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_dag_edit(f, "after = [\"a\"]", "after = [\"a\",\n \"z\"]");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "\"z\"]"),
                 "\"after\" of step \"c\" names \"z\", which is not a step of this saga",
                 "(steps[2].after[1])", NULL);
}

static void test_err_after_itself(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_dag_edit(f, "after = [\"a\"]", "after = [\"c\"]");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "after = [\"c\"]"),
                 "step \"c\" cannot wait for itself", "(steps[2].after[0])", NULL);
}

static void test_err_after_cycle(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    /* a waits for d, which waits (through b and c) for a. */
    const char *text = put_dag_edit(f, "compensation = \"ua\";\n",
                                    "compensation = \"ua\";\n    after = [\"d\"];\n");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "after = [\"d\"]"),
                 "the steps wait for one another in a cycle: step \"a\"", "(steps[0].after)", NULL);
}

static void test_err_after_wrong_type(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_dag_edit(f, "after = [\"a\"]", "after = \"a\"");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "after = \"a\""), "\"after\"", NULL);
}

/* An input from a step that may run at the same time is refused: it might
 * not exist yet when the step starts. */
static void test_err_input_not_guaranteed(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_dag_edit(f, "inputs = [\"amount\", \"a_id\"]",
                                    "inputs = [\"amount\", \"a_id\",\n \"b_id\"]");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "\"b_id\"]; outputs = [\"c_id\"]"),
                 "input \"b_id\" of step \"c\" is an output of step \"b\", which may run at the "
                 "same time (name it, or a step after it, in \"after\")",
                 "(steps[2].inputs[2])", NULL);
    config_free(&f->cfg);
    /* d waiting for c alone cannot count on b's output either. */
    text = put_dag_edit(f, "after = [\"c\", \"b\"]", "after = [\"c\"]");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "\"b_id\", \"c_id\"]"),
                 "input \"b_id\" of step \"d\" is an output of step \"b\", which may run at the "
                 "same time",
                 "(steps[3].inputs[0])", NULL);
}

static void test_err_deadline_range(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    const char *text = put_dag_edit(f, "deadline_s = 90;", "deadline_s = 0;");
    expect_error(f, saga_path(f, "dag.cfg"), line_of(text, "deadline_s"), "deadline_s", NULL);
}

static void test_canonical_follows_meaning(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *from, *to;
    } edits[] = {
        {"participant = \"alpha\"", "participant = \"beta\""},
        {"inputs = [\"from\", \"amount\"]", "inputs = [\"amount\"]"},
        {"inputs = [\"from\", \"amount\"]; ", ""}, /* no list: everything */
        {"outputs = [\"debit_id\"]; },", "outputs = [\"debit_id\"]; timeout_ms = 2001; },"},
        {"outputs = [\"debit_id\"]; },",
         "outputs = [\"debit_id\"]; retry = { max_attempts = 6; }; },"},
        {"outputs = [\"debit_id\"]; },",
         "outputs = [\"debit_id\"]; compensation_retry = { multiplier = 2.5; }; },"},
        {"compensation = \"credit\"", "compensation = \"refund\""},
        {"action = \"debit\"", "action = \"withdraw\""},
        {"inputs = [\"from\", \"to\", \"amount\"]",
         "inputs = [\"from\", \"to\", \"amount\", \"x\"]"},
        {"name = \"deposit\"", "name = \"credit_to\""},
    };
    char *base = canonical_of(f, saga_text);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        config_free(&f->cfg);
        put_orch(f, orch_text);
        put_saga_edit(f, "t.cfg", edits[i].from, edits[i].to);
        expect_ok(f);
        char *c = config_saga_canonical(&f->cfg.sagas[0]);
        if (strcmp(c, base) == 0)
            fail_msg("edit %zu (%s -> %s) kept the canonical text", i, edits[i].from, edits[i].to);
        free(c);
    }
    /* A participant's URL is not part of the definition: only its name is. */
    config_free(&f->cfg);
    const char *moved = "admin_url = \"ipc://admin.ipc\";\n"
                        "sagas_dir = \"sagas\";\n"
                        "participants = {\n"
                        "  alpha = \"ipc://elsewhere/alpha.ipc\";\n"
                        "  beta = \"ipc://beta-moved.ipc\";\n"
                        "};\n";
    char elsewhere[300];
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", f->dir);
    assert_int_equal(mkdir(elsewhere, 0700), 0);
    put_orch(f, moved);
    put(f->sagas, "t.cfg", saga_text);
    expect_ok(f);
    char *c = config_saga_canonical(&f->cfg.sagas[0]);
    assert_string_equal(c, base);
    free(c);
    free(base);
}

/* The canonical text reads back to the same definition, and to itself. */
static void test_canonical_reads_back(void **state)
{
    fixture *f = *state;
    char *text = canonical_of(f, saga_text_reworded);
    saga_def back;
    char err[512];
    assert_int_equal(config_parse_saga_text(&f->cfg, text, "stored", &back, err, sizeof err), 0);
    char *again = config_saga_canonical(&back);
    assert_string_equal(again, text);
    assert_string_equal(back.steps[1].participant, "beta");
    assert_int_equal(back.steps[1].participant_index, 1);
    assert_null(back.steps[1].compensation);
    assert_int_equal(back.steps[0].retry.max_attempts, 5);
    free(again);
    config_free_saga(&back);

    /* A stored text naming a participant the orchestrator file lost. */
    assert_int_equal(config_parse_saga_text(&f->cfg,
                                            "name = \"t\";\nsteps = (\n"
                                            "  { name = \"s\"; participant = \"gone\";\n"
                                            "    action = \"a\"; compensation = \"none\"; });\n",
                                            "t version 3 (stored)", &back, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "t version 3 (stored):3:"));
    assert_non_null(strstr(err, "gone"));
    free(text);
}

/* A reload reads the saga files again; a broken one is reported at its line. */
static void test_load_sagas_again(void **state)
{
    fixture *f = *state;
    put_orch(f, orch_text);
    put(f->sagas, "t.cfg", saga_text);
    expect_ok(f);
    saga_def *defs;
    size_t n;
    put_saga_edit(f, "t.cfg", "participant = \"alpha\"", "participant = \"beta\"");
    assert_int_equal(config_load_sagas(&f->cfg, &defs, &n, f->err, sizeof f->err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(defs[0].steps[0].participant, "beta");
    assert_string_equal(f->cfg.sagas[0].steps[0].participant, "alpha"); /* untouched */
    config_free_sagas(defs, n);

    put_saga_edit(f, "t.cfg", "participant = \"beta\"", "participant = \"nowhere\"");
    assert_int_equal(config_load_sagas(&f->cfg, &defs, &n, f->err, sizeof f->err), -1);
    char want[600];
    snprintf(want, sizeof want, "%s:7:", saga_path(f, "t.cfg"));
    if (strstr(f->err, want) == NULL)
        fail_msg("'%s' lacks '%s'", f->err, want);
    assert_null(defs);
    assert_int_equal(n, 0);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_shipped_config),
        T(test_canonical_ignores_form),
        T(test_canonical_follows_meaning),
        T(test_canonical_reads_back),
        T(test_after_and_deadline_resolve),
        T(test_canonical_follows_after),
        T(test_err_after_unknown_step),
        T(test_err_after_itself),
        T(test_err_after_cycle),
        T(test_err_after_wrong_type),
        T(test_err_input_not_guaranteed),
        T(test_err_deadline_range),
        T(test_load_sagas_again),
        T(test_defaults_and_resolution),
        T(test_overrides_field_by_field),
        T(test_absent_inputs_means_everything),
        T(test_sorted_load_order),
        T(test_repo_sagas_dir_from_elsewhere),
        T(test_max_steps_accepted),
        T(test_err_syntax_orchestrator),
        T(test_err_syntax_saga),
        T(test_err_duplicate_setting),
        T(test_err_missing_file),
        T(test_err_unknown_participant),
        T(test_err_duplicate_saga_name),
        T(test_err_duplicate_step_name),
        T(test_err_missing_compensation),
        T(test_err_missing_participants),
        T(test_err_empty_participants),
        T(test_err_wrong_type),
        T(test_err_wrong_type_list),
        T(test_err_range_attempts),
        T(test_err_range_multiplier),
        T(test_err_range_timeout),
        T(test_err_range_in_flight),
        T(test_err_range_retention),
        T(test_err_retries_outlast_retention),
        T(test_err_range_wrapped_integer),
        T(test_err_backoff_order),
        T(test_err_durability),
        T(test_err_cpu_scheduling),
        T(test_err_frame_max),
        T(test_err_input_not_available),
        T(test_err_input_from_later_step),
        T(test_err_input_from_same_step),
        T(test_err_output_shadows_input),
        T(test_err_too_many_steps),
        T(test_err_zero_steps),
        T(test_err_invalid_url),
        T(test_err_url_unsupported_scheme),
        T(test_err_participant_link_unauthenticated),
        T(test_err_participant_tls_without_client_cert),
        T(test_insecure_participant_links_allowed),
        T(test_err_socket_dir_writable),
        T(test_err_url_without_port),
        T(test_err_url_ipc_path_too_long),
        T(test_err_admin_url_is_participant),
        T(test_replicas_loaded),
        T(test_err_replicas_empty),
        T(test_err_replicas_duplicate),
        T(test_err_replicas_not_string),
        T(test_err_replicas_group),
        T(test_err_replicas_insecure_second),
        T(test_err_replicas_admin_url),
        T(test_err_unknown_setting_step),
        T(test_err_unknown_setting_orchestrator),
        T(test_err_compensation_retry_without_compensation),
        T(test_err_invalid_name),
        T(test_err_sagas_dir_empty),
        T(test_err_sagas_dir_missing),
        T(test_err_sagas_dir_is_file),
        T(test_err_no_saga_files),
        T(test_err_no_saga_files_default_dir),
        T(test_err_only_orchestrator_files),
        T(test_err_include_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
