/*
 * test_pg_cluster — tests/support/pg_cluster.c against a real PostgreSQL:
 * a cluster starts (its start time printed), takes a database and queries,
 * keeps its data across a stop and start of the server, reports a server
 * that cannot start, takes a database name with quotes and spaces, and
 * leaves no process and no dir behind once destroyed; durable=0 turns fsync
 * off and durable=1 keeps it; a missing server binary is named;
 * a test that exits without clean-up or dies by abort() leaves nothing
 * behind; pg-test-cluster starts a cluster that outlives it and stops it,
 * and refuses to remove anything but a cluster dir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "pg_cluster.h"
#include "util.h"

/* How long a dead test's guard may take to stop the server and remove the dir. */
#define GUARD_TIMEOUT_MS 40000

/* ---- Processes ---------------------------------------------------------- */

/* Does any process's command line contain needle? (pgrep -f, without procps) */
static int any_process_mentions(const char *needle)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    assert_non_null(d);
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == (int)getpid())
            continue;
        char path[300], cmd[8192];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL)
            continue;
        size_t n = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        cmd[n] = '\0';
        found = strstr(cmd, needle) != NULL;
    }
    closedir(d);
    return found;
}

/* The pids whose parent is ppid (the server's backends and workers), up to max. */
static size_t children_of(pid_t ppid, pid_t *out, size_t max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while (n < max && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], stat[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t len = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[len] = '\0';
        const char *after_comm = strrchr(stat, ')'); /* "pid (comm) S ppid ..." */
        int parent = 0;
        if (after_comm && sscanf(after_comm, ") %*c %d", &parent) == 1 && parent == (int)ppid)
            out[n++] = (pid_t)atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* Is pid gone (not even a zombie of ours)? */
static int process_gone(pid_t pid)
{
    return kill(pid, 0) != 0 && errno == ESRCH;
}

/* Waits, bounded, until pid is gone, dir removed and no process names dir
 * (the guard itself exits last): what a guard does. */
static int wait_gone(pid_t pid, const char *dir, int timeout_ms)
{
    int64_t deadline = util_mono_ms() + timeout_ms;
    while (!(process_gone(pid) && access(dir, F_OK) != 0 && !any_process_mentions(dir))) {
        if (util_mono_ms() >= deadline)
            return -1;
        util_sleep_ms(50);
    }
    return 0;
}

/* ---- Lifecycle ------------------------------------------------------------ */

/* Any text names a database: quoted by pgc_create_db, percent-encoded by pgc_url. */
static void check_odd_database_name(pg_cluster *c)
{
    const char *name = "we\"ird db&x=1?é/%";
    assert_int_equal(pgc_create_db(c, name), 0);
    char *url = pgc_url(c, name);
    char *current = pgc_sql_text(url, "SELECT current_database()");
    assert_non_null(current);
    assert_string_equal(current, name);
    free(current);
    free(url);
}

/* A server that cannot start (a bad setting) fails pgc_start_server, bounded,
 * with the log tail on stderr; fixed, it starts with the data kept. */
static void check_bad_config_reported(pg_cluster *c, const char *url)
{
    char *conf = th_path(pgc_dir(c), "data/postgresql.conf");
    char *text = th_read_file(conf), *bad = util_asprintf("%s\nshared_buffers = banana\n", text);
    int64_t v = 0;
    assert_int_equal(pgc_stop_server(c), 0);
    assert_int_equal(th_write_file(conf, bad), 0); /* truncated in place: owner and mode kept */
    int64_t t0 = util_mono_ms();
    assert_int_equal(pgc_start_server(c), -1);
    assert_true(util_mono_ms() - t0 < 60000);
    assert_int_equal(pgc_server_pid(c), 0);
    assert_int_equal(th_write_file(conf, text), 0);
    assert_int_equal(pgc_start_server(c), 0);
    assert_int_equal(pgc_sql_int(url, &v, "SELECT sum(n) FROM t"), 0);
    assert_int_equal(v, 42);
    free(conf);
    free(text);
    free(bad);
}

static void test_start_query_restart_destroy(void **state)
{
    char err[4096];
    int64_t t0 = util_mono_ms();
    pg_cluster *c = pgc_start(0, err, sizeof err);
    int64_t started_ms = util_mono_ms() - t0;
    if (c == NULL)
        fail_msg("pgc_start: %s", err);
    print_message("pgc_start(durable=0) took %lld ms\n", (long long)started_ms);

    char *dir = util_strdup(pgc_dir(c)), *data = th_path(dir, "data");
    char *url = pgc_url(c, "app");
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : getpwuid(geteuid());
    assert_non_null(pw);
    char *expected = util_asprintf("postgresql:///app?host=%s&port=5432&user=%s", dir, pw->pw_name);
    assert_string_equal(url, expected);
    free(expected);

    int64_t v = -1;
    assert_int_equal(pgc_sql_int(url, &v, "SELECT 1"), -1); /* no database app yet */
    assert_int_equal(pgc_create_db(c, "app"), 0);
    assert_int_equal(pgc_create_db(c, "app"), -1); /* already exists */
    char *listen = pgc_sql_text(url, "SHOW listen_addresses");
    assert_non_null(listen);
    assert_string_equal(listen, ""); /* the socket is the only way in: no TCP listener */
    free(listen);
    assert_int_equal(pgc_sql_int(url, &v, "SHOW max_connections"), 0);
    assert_true(v >= 40);

    assert_int_equal(pgc_sql_exec(url, "CREATE TABLE t (n bigint); INSERT INTO t VALUES (41), (1)"),
                     0);
    assert_int_equal(pgc_sql_int(url, &v, "SELECT sum(n) FROM t"), 0);
    assert_int_equal(v, 42);
    assert_int_equal(pgc_sql_int(url, &v, "SELECT n FROM t"), -1); /* two rows */
    assert_int_equal(pgc_sql_int(url, &v, "SELECT 'x'"), -1);      /* not an integer */
    assert_int_equal(pgc_sql_exec(url, "INSERT INTO missing VALUES (1)"), -1);

    /* Database down: nothing answers; back: the data is there. */
    pid_t first = pgc_server_pid(c);
    assert_true(first > 0);
    assert_int_equal(pgc_stop_server(c), 0);
    assert_int_equal(pgc_server_pid(c), 0);
    assert_true(process_gone(first));
    assert_false(any_process_mentions(data));
    assert_int_equal(pgc_sql_int(url, &v, "SELECT 1"), -1);
    assert_int_equal(pgc_stop_server(c), -1); /* not running */
    assert_int_equal(pgc_start_server(c), 0);
    assert_int_equal(pgc_start_server(c), -1); /* already running */
    assert_int_equal(pgc_sql_int(url, &v, "SELECT sum(n) FROM t"), 0);
    assert_int_equal(v, 42);
    check_bad_config_reported(c, url);
    check_odd_database_name(c);

    /* Destroyed: the server, its backends and workers, the guard and the dir are gone. */
    pid_t server = pgc_server_pid(c), kids[64];
    size_t n_kids = children_of(server, kids, 64);
    assert_true(n_kids >= 3); /* checkpointer, background writer, walwriter, ... */
    assert_true(any_process_mentions(data));
    pgc_destroy(c);
    assert_true(process_gone(server));
    for (size_t i = 0; i < n_kids; i++)
        assert_true(process_gone(kids[i]));
    assert_false(any_process_mentions(dir)); /* the postmaster's and the guard's command lines */
    assert_int_equal(access(dir, F_OK), -1);
    pgc_destroy(NULL);
    free(url);
    free(data);
    free(dir);
}

static void test_durable_keeps_fsync_and_fast_turns_it_off(void **state)
{
    char err[4096];
    for (int durable = 0; durable <= 1; durable++) {
        int64_t t0 = util_mono_ms();
        pg_cluster *c = pgc_start(durable, err, sizeof err);
        if (c == NULL)
            fail_msg("pgc_start(%d): %s", durable, err);
        print_message("pgc_start(durable=%d) took %lld ms\n", durable,
                      (long long)(util_mono_ms() - t0));
        char *url = pgc_url(c, "postgres");
        const char *settings[] = {"fsync", "synchronous_commit", "full_page_writes"};
        for (size_t i = 0; i < 3; i++) {
            char *value = pgc_sql_text(url, "SHOW %s", settings[i]);
            assert_non_null(value);
            assert_string_equal(value, durable ? "on" : "off");
            free(value);
        }
        free(url);
        pgc_destroy(c);
    }
}

/* ---- Failures are reported ------------------------------------------------ */

static void test_missing_server_named(void **state)
{
    char err[4096] = "";
    setenv("SAGA_PG_BINDIR", "/nonexistent/pg/bin", 1);
    pg_cluster *c = pgc_start(0, err, sizeof err);
    unsetenv("SAGA_PG_BINDIR");
    assert_null(c);
    assert_non_null(strstr(err, "SAGA_PG_BINDIR=/nonexistent/pg/bin"));
}

/* ---- Nothing left behind when a test dies ------------------------------- */

/*
 * The child's side (PGC_TEST_CHILD=exit|abort:FILE): starts a cluster,
 * writes "<dir> <server pid>" to FILE and exits without clean-up, or dies.
 */
static int run_child(const char *spec)
{
    char err[4096];
    const char *file = strchr(spec, ':');
    if (file == NULL)
        return 2;
    pg_cluster *c = pgc_start(0, err, sizeof err);
    if (c == NULL) {
        fprintf(stderr, "child: pgc_start: %s\n", err);
        return 1;
    }
    char *line = util_asprintf("%s %d\n", pgc_dir(c), (int)pgc_server_pid(c));
    if (line == NULL || th_write_file(file + 1, line) != 0)
        return 1;
    free(line);
    if (strncmp(spec, "abort:", 6) == 0)
        abort();
    return 0; /* exit() with the cluster running: the atexit clean-up's job */
}

/* Runs this program as a child in mode; fills dir and the server's pid. */
static void spawn_child(const char *mode, int *status, char *dir, size_t dirlen, pid_t *server)
{
    char *tmp = th_tempdir(), *file = th_path(tmp, "child.out");
    char *exe = realpath("/proc/self/exe", NULL);
    char *spec = util_asprintf("PGC_TEST_CHILD=%s:%s", mode, file);
    const char *env[] = {spec, NULL};
    pid_t pid;
    assert_non_null(exe);
    assert_int_equal(th_spawn(exe, NULL, env, NULL, &pid), 0);
    assert_int_equal(th_wait_exit(pid, 120000, status), 0);
    char *text = th_read_file(file);
    assert_non_null(text);
    int server_pid = 0;
    char fmt[32];
    snprintf(fmt, sizeof fmt, "%%%zus %%d", dirlen - 1);
    assert_int_equal(sscanf(text, fmt, dir, &server_pid), 2);
    *server = (pid_t)server_pid;
    free(text);
    th_rmtree(tmp);
    free(tmp);
    free(file);
    free(exe);
    free(spec);
}

static void test_exit_without_destroy_leaves_nothing(void **state)
{
    char dir[256];
    pid_t server;
    int status;
    spawn_child("exit", &status, dir, sizeof dir, &server);
    assert_true(th_exited_with(status, 0));
    /* The atexit clean-up ran before the child exited: nothing to wait for. */
    assert_true(process_gone(server));
    assert_int_equal(access(dir, F_OK), -1);
}

static void test_abort_leaves_nothing(void **state)
{
    char dir[256];
    pid_t server;
    int status;
    spawn_child("abort", &status, dir, sizeof dir, &server);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    /* No clean-up ran in the child: its guard stops the server and removes the dir. */
    assert_int_equal(wait_gone(server, dir, GUARD_TIMEOUT_MS), 0);
}

/* ---- pg-test-cluster -------------------------------------------------------- */

/* Runs pg-test-cluster args; its exit code, output in *out (malloc'd). */
static int run_cli(const char *const *args, const char *dir, char **out)
{
    char *log = th_path(dir, "cli.out");
    pid_t pid;
    int status = 0;
    unlink(log);
    assert_int_equal(th_spawn("pg-test-cluster", args, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, 120000, &status), 0);
    *out = th_read_file(log);
    if (*out == NULL)
        *out = util_strdup("");
    free(log);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_cli_start_and_stop(void **state)
{
    char *tmp = th_tempdir(), *state_file = th_path(tmp, "cluster"), *out;
    const char *start[] = {"start", "--db", "bench", state_file, NULL};
    assert_int_equal(run_cli(start, tmp, &out), 0);
    char *url = util_strdup(out);
    url[strcspn(url, "\n")] = '\0';
    free(out);
    assert_non_null(strstr(url, "postgresql:///bench?host=/tmp/saga-pg-"));

    /* The server outlived the command. */
    int64_t v = 0;
    assert_int_equal(pgc_sql_int(url, &v, "SELECT 7 * 6"), 0);
    assert_int_equal(v, 42);
    char *dir = th_read_file(state_file);
    dir[strcspn(dir, "\n")] = '\0';

    /* An existing state file is not overwritten (it may name a running cluster). */
    assert_int_equal(run_cli(start, tmp, &out), 1);
    assert_non_null(strstr(out, "File exists"));
    free(out);

    const char *stop[] = {"stop", state_file, NULL};
    assert_int_equal(run_cli(stop, tmp, &out), 0);
    free(out);
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(access(state_file, F_OK), -1);
    assert_false(any_process_mentions(dir));
    assert_int_equal(pgc_sql_int(url, &v, "SELECT 1"), -1);

    /* stop removes nothing but a cluster dir, whatever the state file says. */
    const char *victims[] = {"/", "/tmp", tmp, "/tmp/saga-pg-../../etc", "/tmp/saga-pg-AAAAAA"};
    for (size_t i = 0; i < sizeof victims / sizeof victims[0]; i++) {
        char *line = util_asprintf("%s\n", victims[i]);
        assert_int_equal(th_write_file(state_file, line), 0);
        assert_int_equal(run_cli(stop, tmp, &out), 1);
        assert_non_null(strstr(out, "is not a cluster dir"));
        free(out);
        free(line);
    }
    assert_int_equal(access(tmp, F_OK), 0);
    const char *bad[] = {"begin", state_file, NULL};
    assert_int_equal(run_cli(bad, tmp, &out), 2);
    free(out);

    free(dir);
    free(url);
    th_rmtree(tmp);
    free(tmp);
    free(state_file);
}

int main(void)
{
    const char *child = getenv("PGC_TEST_CHILD");
    if (child != NULL)
        return run_child(child);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_query_restart_destroy),
        cmocka_unit_test(test_durable_keeps_fsync_and_fast_turns_it_off),
        cmocka_unit_test(test_missing_server_named),
        cmocka_unit_test(test_exit_without_destroy_leaves_nothing),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_cli_start_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
