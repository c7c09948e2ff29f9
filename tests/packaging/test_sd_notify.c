/*
 * test_sd_notify — the daemons' half of Type=notify (packaging/systemd/,
 * common/daemon_notify.h), against the real programs: the test plays
 * systemd's notification socket (an AF_UNIX datagram socket named by
 * NOTIFY_SOCKET) and checks that
 *   - sagad sends READY=1 only once it answers on its admin socket (sagactl
 *     succeeds at once, with no retry), and STOPPING=1 on SIGTERM;
 *   - a participant service does the same for its step socket;
 *   - sagad that cannot start (a bad config) never says READY=1;
 *   - an unusable NOTIFY_SOCKET is logged and the service serves anyway.
 */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "util.h"

/* Generous: a loaded 2-core machine under ASan; nothing asserts a duration. */
#define START_TIMEOUT_MS 60000

typedef struct {
    char *dir;
    char *notify_path;
    char *notify_env; /* "NOTIFY_SOCKET=<path>" */
    int notify_fd;    /* our end: bound datagram socket */
    pid_t pid;        /* the program under test, or 0 */
} notify_env;

static int setup(void **state)
{
    notify_env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->dir = th_tempdir();
    assert_non_null(e->dir);
    e->notify_path = th_path(e->dir, "notify");
    assert_int_equal(asprintf(&e->notify_env, "NOTIFY_SOCKET=%s", e->notify_path) > 0, 1);
    e->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(e->notify_fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(e->notify_path) < sizeof sa.sun_path);
    strcpy(sa.sun_path, e->notify_path);
    assert_int_equal(bind(e->notify_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    notify_env *e = *state;
    if (e->pid > 0)
        th_kill(e->pid);
    close(e->notify_fd);
    th_rmtree(e->dir);
    free(e->notify_env);
    free(e->notify_path);
    free(e->dir);
    free(e);
    return 0;
}

/*
 * The next datagram, NUL-terminated into buf; waits at most timeout_ms.
 * Returns 0, or -1 when nothing came (or the program exited: pid reaped).
 */
static int next_message(notify_env *e, char *buf, size_t len, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        struct pollfd p = {.fd = e->notify_fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1) {
            ssize_t n = recv(e->notify_fd, buf, len - 1, 0);
            if (n < 0)
                return -1;
            buf[n] = '\0';
            return 0;
        }
        int status;
        if (e->pid > 0 && th_waitpid(e->pid, &status, WNOHANG) == e->pid) {
            e->pid = 0;
            return -1;
        }
    }
    return -1;
}

/* Waits for a datagram holding line (e.g. "READY=1"); other datagrams are skipped. */
static void expect_message(notify_env *e, const char *line)
{
    char buf[1024];
    for (;;) {
        if (next_message(e, buf, sizeof buf, START_TIMEOUT_MS) != 0)
            fail_msg("no %s from the program", line);
        for (char *tok = strtok(buf, "\n"); tok != NULL; tok = strtok(NULL, "\n"))
            if (strcmp(tok, line) == 0)
                return;
    }
}

static void stop_cleanly(notify_env *e)
{
    int status;
    assert_int_equal(kill(e->pid, SIGTERM), 0);
    expect_message(e, "STOPPING=1");
    assert_int_equal(th_wait_exit(e->pid, START_TIMEOUT_MS, &status), 0);
    e->pid = 0;
    assert_true(th_exited_with(status, 0));
}

/* sagactl stats once, with no retry: exit status. */
static int sagactl_stats(notify_env *e, const char *admin_url)
{
    const char *args[] = {"--url", admin_url, "stats", NULL};
    char *out = th_path(e->dir, "sagactl.out");
    pid_t pid;
    int status = -1;
    assert_int_equal(th_spawn("sagactl", args, NULL, out, &pid), 0);
    assert_int_equal(th_wait_exit(pid, START_TIMEOUT_MS, &status), 0);
    free(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *write_sagad_config(notify_env *e, const char *admin_url, const char *extra)
{
    char *cfg = th_path(e->dir, "sagad.cfg");
    char *sagas = th_source_path("sagas");
    char *text;
    assert_int_equal(asprintf(&text,
                              "admin_url = \"%s\";\n"
                              "database = \"%s/sagad.db\";\n"
                              "sagas_dir = \"%s\";\n"
                              "participants = { order = \"ipc://%s/o.ipc\"; payment = "
                              "\"ipc://%s/p.ipc\"; inventory = \"ipc://%s/i.ipc\"; shipping = "
                              "\"ipc://%s/s.ipc\"; loyalty = \"ipc://%s/l.ipc\"; };\n%s",
                              admin_url, e->dir, sagas, e->dir, e->dir, e->dir, e->dir, e->dir,
                              extra) > 0,
                     1);
    assert_int_equal(th_write_file(cfg, text), 0);
    free(text);
    free(sagas);
    return cfg;
}

static void test_sagad_ready_after_admin_listens(void **state)
{
    notify_env *e = *state;
    char *admin = th_ipc_url(e->dir, "sagad");
    char *cfg = write_sagad_config(e, admin, "");
    char *log = th_path(e->dir, "sagad.log");
    const char *args[] = {"--config", cfg, NULL};
    const char *env[] = {e->notify_env, NULL};
    assert_int_equal(th_spawn("sagad", args, env, log, &e->pid), 0);

    expect_message(e, "READY=1");
    assert_int_equal(sagactl_stats(e, admin), 0); /* READY means serving: no retry needed */
    stop_cleanly(e);
    free(log);
    free(cfg);
    free(admin);
}

static void test_sagad_never_ready_on_bad_config(void **state)
{
    notify_env *e = *state;
    char *admin = th_ipc_url(e->dir, "sagad");
    char *cfg = write_sagad_config(e, admin, "frame_max = \"many\";\n");
    char *log = th_path(e->dir, "sagad.log");
    const char *args[] = {"--config", cfg, NULL};
    const char *env[] = {e->notify_env, NULL};
    char buf[1024];
    int status;
    assert_int_equal(th_spawn("sagad", args, env, log, &e->pid), 0);
    assert_int_equal(th_wait_exit(e->pid, START_TIMEOUT_MS, &status), 0);
    e->pid = 0;
    assert_true(th_exited_with(status, 1));
    assert_int_equal(next_message(e, buf, sizeof buf, 200), -1); /* not a word */
    free(log);
    free(cfg);
    free(admin);
}

static pid_t start_payment(notify_env *e, const char *url, const char *notify_env_entry,
                           const char *log)
{
    char *db = th_path(e->dir, "payment.db");
    char *seed = th_source_path("participants/seeds/payment.cfg");
    const char *args[] = {"--listen", url, "--db", db, "--seed", seed, NULL};
    const char *env[] = {notify_env_entry, NULL};
    pid_t pid;
    assert_int_equal(th_spawn("payment-svc", args, env, log, &pid), 0);
    free(seed);
    free(db);
    return pid;
}

static void test_participant_ready_after_socket_listens(void **state)
{
    notify_env *e = *state;
    char *url = th_ipc_url(e->dir, "payment");
    char *log = th_path(e->dir, "payment.log");
    e->pid = start_payment(e, url, e->notify_env, log);

    expect_message(e, "READY=1");
    /* One request, no retry: the socket serves as soon as READY=1 is sent. */
    kvmap params = KVMAP_INIT;
    StepReply *r = NULL;
    char saga_id[37], key[64];
    assert_int_equal(util_uuid7(saga_id), 0);
    snprintf(key, sizeof key, "%s/charge/action", saga_id);
    assert_int_equal(th_kv(&params, "customer", "alice", "amount", "100", NULL), 0);
    assert_int_equal(
        th_call(url, START_TIMEOUT_MS, key, saga_id, "charge", PHASE_ACTION, "charge", &params, &r),
        0);
    assert_non_null(r);
    assert_int_equal(r->outcome, OUTCOME_OK);
    th_reply_free(r);
    kv_free(&params);
    stop_cleanly(e);
    free(log);
    free(url);
}

static void test_participant_serves_when_notify_socket_is_unusable(void **state)
{
    notify_env *e = *state;
    char *url = th_ipc_url(e->dir, "payment");
    char *log = th_path(e->dir, "payment.log");
    char *bogus;
    assert_int_equal(asprintf(&bogus, "NOTIFY_SOCKET=%s/nobody-listens", e->dir) > 0, 1);
    e->pid = start_payment(e, url, bogus, log);

    assert_int_equal(th_wait_dial(url, e->pid, START_TIMEOUT_MS), 0);
    int status;
    assert_int_equal(th_stop(e->pid, START_TIMEOUT_MS, &status), 0);
    e->pid = 0;
    assert_true(th_exited_with(status, 0));
    char *text = th_read_file(log);
    assert_non_null(text);
    assert_non_null(strstr(text, "could not notify the service manager (READY=1"));
    free(text);
    free(bogus);
    free(log);
    free(url);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sagad_ready_after_admin_listens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sagad_never_ready_on_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_participant_ready_after_socket_listens, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_participant_serves_when_notify_socket_is_unusable,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
