/*
 * test_cli — the shared service skeleton (participants/service.c) as a
 * program: --help, bad options (exit 2 with a message), the default
 * address under $XDG_RUNTIME_DIR, seed files (syntax and content errors
 * with file:line, exit 2; loaded only into an empty database), and runtime
 * failures (exit 1).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "fixture.h"
#include "util.h"

typedef struct {
    char *dir;
    char *out; /* the program's stdout + stderr */
} cli_env;

static int setup(void **state)
{
    cli_env *e = calloc(1, sizeof *e);
    if (e == NULL || (e->dir = th_tempdir()) == NULL || (e->out = th_path(e->dir, "out")) == NULL)
        return -1;
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    cli_env *e = *state;
    th_rmtree(e->dir);
    free(e->dir);
    free(e->out);
    free(e);
    return 0;
}

/*
 * Runs program with args (and extra env) to completion; returns its exit
 * code (-1 when it did not exit by itself in time) and leaves its output in
 * e->out, which it also prints for the test log.
 */
static int run(cli_env *e, const char *program, const char *const *args, const char *const *env)
{
    pid_t pid;
    int status;
    remove(e->out);
    if (th_spawn(program, args, env, e->out, &pid) != 0)
        return -1;
    if (th_wait_exit(pid, FX_TIMEOUT_MS, &status) != 0) {
        th_kill(pid);
        return -1;
    }
    char *text = th_read_file(e->out);
    print_message("%s exited with %d:\n%s", program, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                  text ? text : "(no output)\n");
    free(text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void assert_output_has(cli_env *e, const char *needle)
{
    char *text = th_read_file(e->out);
    assert_non_null(text);
    if (strstr(text, needle) == NULL)
        print_message("output lacks '%s'\n", needle);
    assert_non_null(strstr(text, needle));
    free(text);
}

static void test_help(void **state)
{
    cli_env *e = *state;
    const char *args[] = {"--help", NULL};
    assert_int_equal(run(e, "payment-svc", args, NULL), 0);
    assert_output_has(e, "--listen URL");
    assert_output_has(e, "charge");
    assert_output_has(e, "refund");
    assert_output_has(e, "crash_after_commit"); /* the runtime's fault options */
    assert_int_equal(run(e, "order-svc", args, NULL), 0);
    assert_output_has(e, "approve");
}

/* Every program says its version (CMake's project(VERSION)) and exits 0. */
static void test_version(void **state)
{
    cli_env *e = *state;
    const char *args[] = {"--version", NULL};
    const char *programs[] = {"order-svc", "payment-svc", "inventory-svc", "shipping-svc", "sagad",
                              "sagactl",   NULL};
    for (const char **p = programs; *p; p++) {
        char want[64];
        snprintf(want, sizeof want, "%s %s\n", *p, SAGA_VERSION);
        assert_int_equal(run(e, *p, args, NULL), 0);
        char *text = th_read_file(e->out);
        assert_non_null(text);
        assert_string_equal(text, want);
        free(text);
    }
}

static void test_bad_options_exit_2(void **state)
{
    cli_env *e = *state;
    char *url = th_ipc_url(e->dir, "x");
    char *db = th_path(e->dir, "x.db");
    static const struct {
        const char *args[5];
        const char *needle;
    } cases[] = {
        {{"--bogus", NULL}, "unknown option '--bogus'"},
        {{"--log-level", "loud", NULL}, "--log-level"},
        {{"--log-format", "xml", NULL}, "--log-format"},
        {{"--contexts", "0", NULL}, "--contexts"},
        {{"--contexts", "many", NULL}, "--contexts"},
        {{"--retention-s", "-1", NULL}, "--retention-s"},
        {{"--cpu-scheduling", "fast", NULL}, "--cpu-scheduling must be batch or normal"},
        {{"stray", NULL}, "unexpected argument 'stray'"},
        {{"--db", NULL}, "needs a value"},
        {{"--listen", "", NULL}, "must not be empty"},
        {{"--faults", "explode=1", NULL}, "--faults"},
        {{"--faults", "drop_reply=2", NULL}, "--faults"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[12];
        int n = 0;
        args[n++] = "--db";
        args[n++] = db;
        args[n++] = "--listen";
        args[n++] = url;
        for (int j = 0; cases[i].args[j]; j++)
            args[n++] = cases[i].args[j];
        args[n] = NULL;
        assert_int_equal(run(e, "payment-svc", args, NULL), 2);
        assert_output_has(e, cases[i].needle);
    }
    free(url);
    free(db);
}

/* Without --listen: $XDG_RUNTIME_DIR/saga-<name>.ipc, or a refusal when it is unset. */
static void test_default_listen_address(void **state)
{
    cli_env *e = *state;
    char *db = th_path(e->dir, "order.db");
    char *xdg = util_asprintf("XDG_RUNTIME_DIR=%s", e->dir);
    char *url = util_asprintf("ipc://%s/saga-order.ipc", e->dir);
    const char *args[] = {"--db", db, NULL};
    const char *no_xdg[] = {"XDG_RUNTIME_DIR=", NULL};
    const char *with_xdg[] = {xdg, NULL};
    pid_t pid;
    int status;

    assert_int_equal(run(e, "order-svc", args, no_xdg), 2);
    assert_output_has(e, "--listen is required");

    assert_int_equal(th_spawn("order-svc", args, with_xdg, NULL, &pid), 0);
    assert_int_equal(th_wait_dial(url, pid, FX_TIMEOUT_MS), 0);
    assert_int_equal(th_stop(pid, FX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 0));
    free(db);
    free(xdg);
    free(url);
}

/* The scheduling policy of every thread of pid: 3 (SCHED_BATCH), 0 (OTHER),
 * or -1 when the threads disagree or cannot be read. */
static int threads_policy(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    int policy = -2, n = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (de->d_name[0] == '.')
            continue;
        char stat_path[400], buf[2048];
        snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, de->d_name);
        FILE *f = fopen(stat_path, "r");
        if (f == NULL)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        /* Field 41 (policy), counted from field 3, just after the ")" of the name. */
        char *p = strrchr(buf, ')');
        int field = 2, value = -1;
        for (char *tok = p ? strtok(p + 1, " ") : NULL; tok; tok = strtok(NULL, " "))
            if (++field == 41) {
                value = atoi(tok);
                break;
            }
        if (policy == -2)
            policy = value;
        else if (policy != value)
            policy = -1;
        n++;
    }
    closedir(d);
    return n > 1 ? policy : -1; /* a serving service has nng's threads too */
}

/* By default every thread of a service is SCHED_BATCH; normal leaves SCHED_OTHER. */
static void test_cpu_scheduling_of_threads(void **state)
{
    cli_env *e = *state;
    static const struct {
        const char *value;
        int policy;
    } cases[] = {{NULL, 3}, {"batch", 3}, {"normal", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *db = th_path(e->dir, "sched.db");
        char *url = th_ipc_url(e->dir, "sched");
        const char *args[] = {"--db", db, "--listen", url, NULL, NULL, NULL};
        if (cases[i].value) {
            args[4] = "--cpu-scheduling";
            args[5] = cases[i].value;
        }
        pid_t pid;
        int status;
        assert_int_equal(th_spawn("shipping-svc", args, NULL, NULL, &pid), 0);
        assert_int_equal(th_wait_dial(url, pid, FX_TIMEOUT_MS), 0);
        assert_int_equal(threads_policy(pid), cases[i].policy);
        assert_int_equal(th_stop(pid, FX_TIMEOUT_MS, &status), 0);
        assert_true(th_exited_with(status, 0));
        free(db);
        free(url);
    }
}

/* Writes a seed file and runs payment-svc on it; returns the exit code. */
static int run_with_seed(cli_env *e, const char *program, const char *seed_text)
{
    char *seed = th_path(e->dir, "bad.cfg");
    char *db = th_path(e->dir, "seeded.db");
    char *url = th_ipc_url(e->dir, "seeded");
    const char *args[] = {"--listen", url, "--db", db, "--seed", seed, NULL};
    int rc = -1;

    remove(db);
    if (th_write_file(seed, seed_text) == 0)
        rc = run(e, program, args, NULL);
    free(seed);
    free(db);
    free(url);
    return rc;
}

static void test_bad_seed_files_exit_2(void **state)
{
    cli_env *e = *state;
    static const struct {
        const char *program, *text, *needle;
    } cases[] = {
        /* Syntax error: libconfig's file:line. */
        {"payment-svc", "accounts = (\n  { customer = \"a\"; balance = 1; },\n  { oops }\n);\n",
         "bad.cfg:3"},
        /* Content errors: the line of the offending setting. */
        {"payment-svc",
         "accounts = (\n  { customer = \"a\"; balance = 1; },\n  { customer = \"a\"; balance = 2; "
         "}\n);\n",
         "bad.cfg:3: customer 'a' is listed twice"},
        {"payment-svc", "accounts = (\n  { customer = \"a\"; balance = -1; }\n);\n", "bad.cfg:2"},
        {"payment-svc", "accounts = (\n  { customer = \"a\"; balanse = 1; }\n);\n",
         "unknown setting 'balanse'"},
        {"payment-svc", "acounts = ();\n", "unknown setting 'acounts'"},
        {"inventory-svc", "skus = ( { sku = \"w\"; stock = \"ten\"; } );\n", "bad.cfg:1"},
        {"shipping-svc", "destinations = [ \"Oslo\", \"oslo\" ];\n", "listed twice"},
        {"shipping-svc", "destinations = \"Oslo\";\n", "must be an array"},
        /* order-svc has no seed data: its seed file must be empty. */
        {"order-svc", "# nothing\norders = ();\n", "bad.cfg:2: unknown setting 'orders'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(run_with_seed(e, cases[i].program, cases[i].text), 2);
        assert_output_has(e, cases[i].needle);
    }

    char *db = th_path(e->dir, "m.db");
    char *url = th_ipc_url(e->dir, "m");
    const char *missing[] = {"--listen", url, "--db", db, "--seed", "/nonexistent/seed.cfg", NULL};
    assert_int_equal(run(e, "payment-svc", missing, NULL), 2);
    assert_output_has(e, "/nonexistent/seed.cfg");
    free(db);
    free(url);
}

/* A seed is loaded into an empty database only; a later seed is ignored. */
static void test_seed_only_into_empty_db(void **state)
{
    cli_env *e = *state;
    char *seed1 = th_path(e->dir, "one.cfg"), *seed2 = th_path(e->dir, "two.cfg");
    char *db = th_path(e->dir, "p.db"), *url = th_ipc_url(e->dir, "p");
    const char *args1[] = {"--listen", url, "--db", db, "--seed", seed1, NULL};
    const char *args2[] = {"--listen", url, "--db", db, "--seed", seed2, NULL};
    pid_t pid;
    int status;

    assert_int_equal(
        th_write_file(seed1, "accounts = ( { customer = \"zed\"; balance = 70; } );\n"), 0);
    assert_int_equal(
        th_write_file(seed2, "accounts = ( { customer = \"yan\"; balance = 9000; } );\n"), 0);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(th_spawn("payment-svc", round ? args2 : args1, NULL, NULL, &pid), 0);
        assert_int_equal(th_wait_dial(url, pid, FX_TIMEOUT_MS), 0);
        assert_int_equal(th_stop(pid, FX_TIMEOUT_MS, &status), 0);
        assert_true(th_exited_with(status, 0));
        assert_int_equal(th_sql_int(db, "SELECT count(*) FROM accounts"), 1);
        assert_int_equal(th_sql_int(db, "SELECT balance FROM accounts WHERE customer = 'zed'"), 70);
        assert_int_equal(th_sql_int(db, "SELECT value FROM meta WHERE key = 'money_total'"), 70);
    }
    free(seed1);
    free(seed2);
    free(db);
    free(url);
}

/* A database whose books do not balance is refused at start (fail closed). */
static void test_unbalanced_books_refused(void **state)
{
    cli_env *e = *state;
    static const struct {
        const char *service, *break_sql, *repair_sql;
    } cases[] = {
        /* Money from nowhere: balances no longer add up to the seeded total. */
        {"payment", "UPDATE accounts SET balance = balance + 1 WHERE customer = 'alice'",
         "UPDATE accounts SET balance = balance - 1 WHERE customer = 'alice'"},
        /* Stock held by no reservation (available + reserved still = stock). */
        {"inventory",
         "UPDATE skus SET available = available - 1, reserved = reserved + 1 "
         "WHERE sku = 'WIDGET-1'",
         "UPDATE skus SET available = available + 1, reserved = reserved - 1 "
         "WHERE sku = 'WIDGET-1'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char program[32], seed_rel[64];
        snprintf(program, sizeof program, "%s-svc", cases[i].service);
        snprintf(seed_rel, sizeof seed_rel, "participants/seeds/%s.cfg", cases[i].service);
        char *seed = th_source_path(seed_rel);
        char *db = th_path(e->dir, cases[i].service), *url = th_ipc_url(e->dir, "books");
        const char *args[] = {"--listen", url, "--db", db, "--seed", seed, NULL};
        pid_t pid;
        int status;

        assert_non_null(seed);
        assert_int_equal(th_spawn(program, args, NULL, NULL, &pid), 0);
        assert_int_equal(th_wait_dial(url, pid, FX_TIMEOUT_MS), 0);
        assert_int_equal(th_stop(pid, FX_TIMEOUT_MS, &status), 0);
        assert_true(th_exited_with(status, 0));

        assert_int_equal(th_sql_exec(db, cases[i].break_sql), 0);
        assert_int_equal(run(e, program, args, NULL), 1);
        assert_output_has(e, "do not balance");

        /* Repaired, it starts again. */
        assert_int_equal(th_sql_exec(db, cases[i].repair_sql), 0);
        assert_int_equal(th_spawn(program, args, NULL, NULL, &pid), 0);
        assert_int_equal(th_wait_dial(url, pid, FX_TIMEOUT_MS), 0);
        assert_int_equal(th_stop(pid, FX_TIMEOUT_MS, &status), 0);
        assert_true(th_exited_with(status, 0));
        free(seed);
        free(db);
        free(url);
    }
}

static void test_runtime_failures_exit_1(void **state)
{
    cli_env *e = *state;
    char *url = th_ipc_url(e->dir, "f");
    char *db = th_path(e->dir, "f.db");
    const char *bad_db[] = {"--listen", url, "--db", "/nonexistent/dir/f.db", NULL};
    const char *bad_url[] = {"--listen", "bogus://nowhere", "--db", db, NULL};

    assert_int_equal(run(e, "payment-svc", bad_db, NULL), 1);
    assert_int_equal(run(e, "payment-svc", bad_url, NULL), 1);
    assert_output_has(e, "bogus://nowhere");
    free(url);
    free(db);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_help),
        T(test_version),
        T(test_bad_options_exit_2),
        T(test_default_listen_address),
        T(test_cpu_scheduling_of_threads),
        T(test_bad_seed_files_exit_2),
        T(test_seed_only_into_empty_db),
        T(test_unbalanced_books_refused),
        T(test_runtime_failures_exit_1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
