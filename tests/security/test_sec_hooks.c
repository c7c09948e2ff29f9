/*
 * test_sec_hooks — what sagad runs and what it dials (docs/SECURITY.md,
 * "Hooks" and "Participant links"), with the real sagad, services and
 * sagactl. Needs root (to give a hook to uid 65534), as the whole suite.
 *
 *   - `sagad --check` refuses an alert_command that is 0777, owned by
 *     nobody, in a directory others can write (sticky or not, /tmp
 *     included) or reached through a link from such a directory, each with
 *     FILE:LINE; it accepts one in a directory only root writes;
 *   - a hook whose path holds a space and ';' runs as one file (no shell),
 *     with PATH, SAGA_* and nothing of sagad's environment (a canary);
 *   - a hook that never ends is killed with its process group at
 *     alert_timeout_s, logged and counted, while sagad goes on serving;
 *   - a hook made 0777 after start-up is not run (ERROR, spawn_failed);
 *   - `sagad --check` on insecure participant links: refused with FILE:LINE,
 *     accepted with insecure_participant_links and a WARN naming each;
 *   - a service refuses --listen in a directory others can write;
 *   - sec_socket_owner_only leaves a symbolic link's target alone.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "obs_fixture.h"
#include "security.h"
#include "util.h"

#define WAIT_MS 30000
#define NOBODY  65534

/* ---- sagad --check on a generated configuration --------------------------------- */

typedef struct {
    char *dir;     /* /tmp temp dir: the configuration, sockets */
    char *trusted; /* under the build tree: hooks */
} check_fixture;

static int setup_check(void **state)
{
    check_fixture *c = calloc(1, sizeof *c);
    if (c == NULL || (c->dir = th_tempdir()) == NULL || (c->trusted = th_trusted_tempdir()) == NULL)
        return -1;
    char *sagas = th_path(c->dir, "sagas"), *saga = th_path(c->dir, "sagas/pay.cfg");
    int rc = sagas && saga && mkdir(sagas, 0700) == 0 &&
                     th_write_file(saga, "name = \"pay\";\ninputs = [\"customer\"];\n"
                                         "steps = ( { name = \"charge\"; participant = "
                                         "\"payment\";\n  action = \"charge\"; compensation = "
                                         "\"refund\"; } );\n") == 0
                 ? 0
                 : -1;
    free(sagas);
    free(saga);
    *state = c;
    return rc;
}

static int teardown_check(void **state)
{
    check_fixture *c = *state;
    if (c != NULL) {
        th_rmtree(c->dir);
        th_rmtree(c->trusted);
        free(c->dir);
        free(c->trusted);
        free(c);
    }
    return 0;
}

/* Writes sagad.cfg = body + participants and runs sagad --check on it;
 * its exit code, with its output in *out. */
static int run_check(check_fixture *c, const char *body, const char *participants, char **out)
{
    char *cfg = th_path(c->dir, "sagad.cfg"), *log = th_path(c->dir, "check.out");
    char *text = util_asprintf("sagas_dir = \"sagas\";\n%sparticipants = {\n%s};\n", body,
                               participants ? participants : "  payment = \"ipc://pay.ipc\";\n");
    assert_non_null(text);
    assert_int_equal(th_write_file(cfg, text), 0);
    unlink(log);
    const char *args[] = {"--config", cfg, "--check", NULL};
    pid_t pid;
    int status;
    assert_int_equal(th_spawn("sagad", args, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, WAIT_MS, &status), 0);
    *out = th_read_file(log);
    assert_non_null(*out);
    free(cfg);
    free(log);
    free(text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* sagad --check refuses the configuration at `line` with every string given. */
static void expect_refused(check_fixture *c, const char *body, const char *participants, int line,
                           ...)
{
    char *out = NULL;
    int code = run_check(c, body, participants, &out);
    char *where = util_asprintf("%s/sagad.cfg:%d: ", c->dir, line);
    if (code != 1 || strstr(out, where) == NULL)
        print_message("expected exit 1 and \"%s\"; got %d:\n%s\n", where, code, out);
    assert_int_equal(code, 1);
    assert_non_null(strstr(out, where));
    va_list ap;
    va_start(ap, line);
    for (const char *want = va_arg(ap, const char *); want != NULL; want = va_arg(ap, const char *))
        if (strstr(out, want) == NULL)
            fail_msg("expected \"%s\" in:\n%s", want, out);
    va_end(ap);
    free(where);
    free(out);
}

static char *make_hook(const char *dir, const char *name, mode_t mode)
{
    char *path = th_path(dir, name);
    assert_non_null(path);
    assert_int_equal(th_write_file(path, "#!/bin/sh\nexit 0\n"), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void test_check_refuses_untrusted_hooks(void **state)
{
    check_fixture *c = *state;
    char *line;

    /* Accepted: 0700, root's, in directories only root writes. */
    char *ok = make_hook(c->trusted, "ok.sh", 0700);
    line = util_asprintf("alert_command = \"%s\";\n", ok);
    char *out = NULL;
    int code = run_check(c, line, NULL, &out);
    if (code != 0)
        print_message("%s\n", out);
    assert_int_equal(code, 0);
    free(out);
    free(line);

    /* Writable by everyone. */
    char *open = make_hook(c->trusted, "open.sh", 0777);
    line = util_asprintf("# hooks\nalert_command = \"%s\";\n", open);
    expect_refused(c, line, NULL, 3, "alert_command ",
                   "open.sh is writable by every user (mode 0777)", "(alert_command)", NULL);
    free(line);

    /* Owned by somebody else. */
    char *theirs = make_hook(c->trusted, "theirs.sh", 0755);
    assert_int_equal(chown(theirs, NOBODY, NOBODY), 0);
    line = util_asprintf("alert_command = \"%s\";\n", theirs);
    expect_refused(c, line, NULL, 2, "theirs.sh is owned by uid 65534", NULL);
    free(line);

    /* In a directory others can write; sticky is no better. */
    char *shared = th_path(c->trusted, "shared");
    assert_int_equal(mkdir(shared, 0700), 0);
    assert_int_equal(chmod(shared, 0777), 0);
    char *in_shared = make_hook(shared, "hook.sh", 0700);
    line = util_asprintf("alert_command = \"%s\";\n", in_shared);
    expect_refused(c, line, NULL, 2, "/shared is writable by every user (mode 0777)", NULL);
    assert_int_equal(chmod(shared, 01777), 0);
    expect_refused(c, line, NULL, 2, "(mode 1777)", "a sticky directory such as /tmp is not enough",
                   NULL);
    assert_int_equal(chmod(shared, 0775), 0);
    expect_refused(c, line, NULL, 2, "/shared is writable by its group (mode 0775)", NULL);
    free(line);

    /* Under /tmp itself. */
    char *in_tmp = make_hook(c->dir, "hook.sh", 0700);
    line = util_asprintf("alert_command = \"%s\";\n", in_tmp);
    expect_refused(c, line, NULL, 2, "directory /tmp is writable by every user", NULL);
    free(line);

    /* Through a link, in a trusted directory, to a file in an untrusted one. */
    char *link = th_path(c->trusted, "link.sh");
    assert_int_equal(symlink(in_shared, link), 0);
    line = util_asprintf("alert_command = \"%s\";\n", link);
    expect_refused(c, line, NULL, 2, "/shared is writable by its group", NULL);
    free(line);

    free(ok);
    free(open);
    free(theirs);
    free(shared);
    free(in_shared);
    free(in_tmp);
    free(link);
}

static void test_check_participant_links(void **state)
{
    check_fixture *c = *state;
    static const char *const plain[] = {"tcp://10.1.2.3:7401", "ws://10.1.2.3:7401/saga",
                                        "tcp://127.0.0.1:7401", "abstract://saga-payment", NULL};
    for (const char *const *u = plain; *u != NULL; u++) {
        char *p = util_asprintf("  payment = \"%s\";\n", *u);
        expect_refused(c, "", p, 3, "participant \"payment\" = ", *u, "authenticates nobody",
                       "(participants.payment)", NULL);
        free(p);
    }
    /* tls+tcp:// needs sagad's client certificate, not only the CA. */
    expect_refused(c, "tls = { ca_file = \"ca.pem\"; };\n",
                   "  payment = \"tls+tcp://10.1.2.3:7401\";\n", 4,
                   "tls.cert_file and tls.key_file", NULL);
    /* The test setting lets them through, loudly, naming each. */
    char *out = NULL;
    const char *both =
        "  payment = \"tcp://127.0.0.1:7401\";\n  order = \"ws://10.1.2.3:7401/x\";\n";
    int code = run_check(c, "insecure_participant_links = true;\n", both, &out);
    if (code != 0)
        print_message("%s\n", out);
    assert_int_equal(code, 0);
    assert_non_null(strstr(out, "WARN"));
    assert_non_null(strstr(out, "INSECURE participant link: \"payment\" = tcp://127.0.0.1:7401"));
    assert_non_null(strstr(out, "INSECURE participant link: \"order\" = ws://10.1.2.3:7401/x"));
    free(out);
    /* An ipc:// socket in a directory others can write. */
    char *shared = th_path(c->dir, "shared");
    assert_int_equal(mkdir(shared, 0700), 0);
    assert_int_equal(chmod(shared, 0777), 0);
    expect_refused(c, "", "  payment = \"ipc://shared/pay.ipc\";\n", 3,
                   "/shared is writable by every user (mode 0777)", NULL);
    free(shared);
}

/* A service refuses to listen on a socket in a directory others can write. */
static void test_service_refuses_open_socket_dir(void **state)
{
    check_fixture *c = *state;
    char *shared = th_path(c->dir, "svc-shared");
    assert_int_equal(mkdir(shared, 0700), 0);
    assert_int_equal(chmod(shared, 01777), 0);
    char *url = th_ipc_url(shared, "payment"), *db = th_path(c->dir, "payment.db");
    char *log = th_path(c->dir, "payment.out");
    const char *args[] = {"--listen", url, "--db", db, NULL};
    pid_t pid;
    int status;
    assert_int_equal(th_spawn("payment-svc", args, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, WAIT_MS, &status), 0);
    char *out = th_read_file(log);
    assert_non_null(out);
    if (!th_exited_with(status, 2))
        print_message("%s\n", out);
    assert_true(th_exited_with(status, 2));
    assert_non_null(strstr(out, "--listen ipc://"));
    assert_non_null(strstr(out, "svc-shared is writable by every user (mode 1777)"));
    assert_int_equal(access(db, F_OK), -1); /* refused before anything was created */
    free(out);
    free(log);
    free(db);
    free(url);
    free(shared);
}

/* A link put where a socket should be: its target keeps its mode. */
static void test_socket_mode_not_through_link(void **state)
{
    check_fixture *c = *state;
    char *target = th_path(c->dir, "target"), *link = th_path(c->dir, "sock.ipc");
    char err[512];
    assert_int_equal(th_write_file(target, "x"), 0);
    assert_int_equal(chmod(target, 0644), 0);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(sec_socket_owner_only(link, err, sizeof err), -1);
    assert_non_null(strstr(err, "is a symbolic link"));
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    /* A real socket of ours is made owner-only. */
    char *sock_path = th_path(c->dir, "real.ipc");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(chmod(sock_path, 0666), 0);
    assert_int_equal(sec_socket_owner_only(sock_path, err, sizeof err), 0);
    assert_int_equal(lstat(sock_path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    close(fd);
    free(sock_path);
    free(target);
    free(link);
}

/* ---- Hooks run by a real sagad ------------------------------------------------------ */

typedef struct {
    ofx f;
    int port;
    char *trusted; /* the hooks' directory tree */
    char *hook;    /* the alert_command */
} hook_sys;

static hook_sys *current; /* freed by teardown_hook, on failure too */

/* sagad alone (order-svc never starts, so every saga FAILS quickly) with
 * http_url and alert_command = dir/name holding script. */
static hook_sys *start_hook_sys(const char *subdir, const char *name, const char *script,
                                const char *extra)
{
    hook_sys *s = calloc(1, sizeof *s);
    current = s; /* teardown_hook stops it, whatever fails below */
    ofx_opts o = {.timeout_ms = 100,
                  .action_attempts = 1,
                  .comp_attempts = 1,
                  .initial_backoff_ms = 10,
                  .max_backoff_ms = 20};
    assert_non_null(s);
    assert_int_equal(ofx_init(&s->f, &o), 0);
    assert_non_null(s->trusted = th_trusted_tempdir());
    char *dir = th_path(s->trusted, subdir);
    assert_non_null(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    s->hook = th_path(dir, name);
    assert_int_equal(th_write_file(s->hook, script), 0);
    assert_int_equal(chmod(s->hook, 0700), 0);
    char *line = util_asprintf("alert_command = \"%s\";\n%s", s->hook, extra ? extra : "");
    s->port = obs_free_port();
    assert_int_equal(obs_append_config(&s->f, line), 0);
    assert_int_equal(obs_enable_http(&s->f, s->port), 0);
    free(line);
    free(dir);
    return s;
}

static void stop_hook_sys(hook_sys *s)
{
    if (s == NULL)
        return;
    /* SIGTERM: sagad kills the process group of a hook still running. */
    if (s->f.sagad.pid > 0)
        ofx_stop_sagad(&s->f);
    ofx_destroy(&s->f);
    th_rmtree(s->trusted);
    free(s->trusted);
    free(s->hook);
    free(s);
}

static int teardown_hook(void **state)
{
    (void)state;
    stop_hook_sys(current);
    current = NULL;
    unsetenv("SAGA_HOOK_CANARY");
    return 0;
}

/* Starts a saga that FAILS; its id into id. */
static void fail_one_saga(hook_sys *s, const char *key, char id[37])
{
    assert_int_equal(
        ofx_start_order(&s->f, key, "alice", "WIDGET-1", "1", "1000", "paris", id, NULL, NULL), 0);
    json_t *st = ofx_wait_final(&s->f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    json_decref(st);
}

/* Waits until sagad's log holds needle; its text (malloc'd), or NULL. */
static char *wait_log(hook_sys *s, const char *needle)
{
    for (int64_t end = util_mono_ms() + WAIT_MS; util_mono_ms() < end; util_sleep_ms(50)) {
        char *log = th_read_file(s->f.sagad.log);
        if (log != NULL && strstr(log, needle) != NULL)
            return log;
        free(log);
    }
    ofx_print_log_tail(&s->f.sagad, 30);
    return NULL;
}

static double metric(hook_sys *s, const char *sample)
{
    obs_response r;
    assert_int_equal(obs_get(s->port, "/metrics", NULL, NULL, 5000, &r), 0);
    double v = obs_metric(r.body, sample);
    obs_response_free(&r);
    return v;
}

static void test_hook_runs_without_shell_and_clean_env(void **state)
{
    (void)state;
    /* Interpreted by a shell, this path would run `touch PWNED`. */
    start_hook_sys("dir with space;touch PWNED;x", "alert hook;touch PWNED",
                   "#!/bin/sh\n"
                   "out=\"$(dirname \"$0\")/env.out\"\n"
                   "{ env; echo \"args=$1|$2\"; } > \"$out.tmp\"\n"
                   "mv \"$out.tmp\" \"$out\"\n",
                   NULL);
    hook_sys *s = current;
    setenv("SAGA_HOOK_CANARY", "sagad-environment-leaked", 1);
    assert_int_equal(ofx_start_sagad(&s->f, NULL), 0);
    char id[37];
    fail_one_saga(s, "hook-env", id);
    char *dir = util_asprintf("%s/dir with space;touch PWNED;x", s->trusted);
    char *out_path = th_path(dir, "env.out");
    char *got = NULL;
    for (int64_t end = util_mono_ms() + WAIT_MS; got == NULL && util_mono_ms() < end;
         util_sleep_ms(50))
        if (access(out_path, F_OK) == 0)
            got = th_read_file(out_path);
    if (got == NULL)
        ofx_print_log_tail(&s->f.sagad, 30);
    assert_non_null(got);
    char *want_id = util_asprintf("\nSAGA_ID=%s\n", id), *want_args = util_asprintf("args=%s|", id);
    char *with_nl = util_asprintf("\n%s", got);
    assert_non_null(strstr(with_nl, "\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"));
    assert_non_null(strstr(with_nl, want_id));
    assert_non_null(strstr(with_nl, "\nSAGA_TYPE=order_fulfillment\n"));
    assert_non_null(strstr(with_nl, "\nSAGA_REASON="));
    assert_non_null(strstr(got, want_args));
    if (strstr(got, "SAGA_HOOK_CANARY") != NULL || strstr(got, "SAGA_BIN_DIR") != NULL)
        print_message("the hook's environment:\n%s\n", got);
    assert_null(strstr(got, "SAGA_HOOK_CANARY"));
    assert_null(strstr(got, "SAGA_BIN_DIR"));
    /* Nothing in the path was run: no PWNED anywhere it could land. */
    char *pwned_dir = th_path(dir, "PWNED"), *pwned_tmp = th_path(s->trusted, "PWNED"),
         *pwned_cwd = th_path(s->f.dir, "PWNED");
    assert_int_equal(access(pwned_dir, F_OK), -1);
    assert_int_equal(access(pwned_tmp, F_OK), -1);
    assert_int_equal(access(pwned_cwd, F_OK), -1);
    assert_int_equal(access("PWNED", F_OK), -1);
    free(pwned_dir);
    free(pwned_tmp);
    free(pwned_cwd);
    free(with_nl);
    free(want_id);
    free(want_args);
    free(got);
    free(out_path);
    free(dir);
}

/* The state letter of /proc/pid/stat, or 0 when pid is gone. */
static char proc_state(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    char *text = th_read_file(path);
    if (text == NULL)
        return 0;
    const char *paren = strrchr(text, ')');
    char state = paren && paren[1] == ' ' ? paren[2] : '?';
    free(text);
    return state;
}

static void test_hook_killed_at_time_limit(void **state)
{
    (void)state;
    /* The hook starts a child in its group and waits forever. */
    start_hook_sys("hooks", "hang.sh",
                   "#!/bin/sh\n"
                   "d=\"$(dirname \"$0\")\"\n"
                   "sleep 100000 &\n"
                   "echo $! > \"$d/child.tmp\" && mv \"$d/child.tmp\" \"$d/child\"\n"
                   "wait\n",
                   "alert_timeout_s = 3;\n");
    hook_sys *s = current;
    assert_int_equal(ofx_start_sagad(&s->f, NULL), 0);
    char id[37];
    fail_one_saga(s, "hook-hang", id);
    char *child_file = util_asprintf("%s/hooks/child", s->trusted);
    char *pid_text = NULL;
    for (int64_t end = util_mono_ms() + WAIT_MS; pid_text == NULL && util_mono_ms() < end;
         util_sleep_ms(20))
        if (access(child_file, F_OK) == 0)
            pid_text = th_read_file(child_file);
    assert_non_null(pid_text);
    pid_t child = (pid_t)atoi(pid_text);
    assert_true(child > 0);

    /* sagad serves while the hook runs (or after: either way, not blocked). */
    char *out = NULL;
    assert_int_equal(ofx_ctl(&s->f, &out, "stats", NULL), 0);
    free(out);

    char *log = wait_log(s, "still running after 3000 ms: killed its process group");
    assert_non_null(log);
    char *line = util_asprintf("alert for saga %s: ", id);
    assert_non_null(strstr(log, line));
    free(line);
    free(log);
    /* The child went with its group (a zombie at most, until init reaps it). */
    char st = 'R';
    for (int64_t end = util_mono_ms() + WAIT_MS; util_mono_ms() < end; util_sleep_ms(20))
        if ((st = proc_state(child)) == 0 || st == 'Z')
            break;
    if (st != 0 && st != 'Z')
        kill(child, SIGKILL); /* stop what the test started, then fail */
    assert_true(st == 0 || st == 'Z');
    assert_int_equal((int)metric(s, "saga_alerts_total{result=\"timed_out\"}"), 1);
    assert_int_equal((int)metric(s, "saga_alerts_total{result=\"started\"}"), 1);
    /* And sagad still serves. */
    assert_int_equal(ofx_ctl(&s->f, &out, "stats", NULL), 0);
    free(out);
    free(pid_text);
    free(child_file);
}

static void test_hook_changed_after_start_not_run(void **state)
{
    (void)state;
    start_hook_sys("hooks", "alert.sh", "#!/bin/sh\ntouch \"$(dirname \"$0\")/ran\"\n", NULL);
    hook_sys *s = current;
    assert_int_equal(ofx_start_sagad(&s->f, NULL), 0);
    assert_int_equal(chmod(s->hook, 0777), 0); /* anyone may now rewrite it */
    char id[37];
    fail_one_saga(s, "hook-changed", id);
    char *want = util_asprintf("alert for saga %s not run: alert_command ", id);
    char *log = wait_log(s, want);
    assert_non_null(log);
    assert_non_null(strstr(log, "ERROR"));
    assert_non_null(strstr(log, "alert.sh is writable by every user (mode 0777)"));
    assert_int_equal((int)metric(s, "saga_alerts_total{result=\"spawn_failed\"}"), 1);
    assert_int_equal((int)metric(s, "saga_alerts_total{result=\"started\"}"), 0);
    char *ran = util_asprintf("%s/hooks/ran", s->trusted);
    assert_int_equal(access(ran, F_OK), -1);
    free(ran);
    free(log);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_refuses_untrusted_hooks, setup_check,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_check_participant_links, setup_check, teardown_check),
        cmocka_unit_test_setup_teardown(test_service_refuses_open_socket_dir, setup_check,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_socket_mode_not_through_link, setup_check,
                                        teardown_check),
        cmocka_unit_test_teardown(test_hook_runs_without_shell_and_clean_env, teardown_hook),
        cmocka_unit_test_teardown(test_hook_killed_at_time_limit, teardown_hook),
        cmocka_unit_test_teardown(test_hook_changed_after_start_not_run, teardown_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
