/*
 * test_sec_peer_uid — an ipc:// address taken first by another user.
 *
 * A socket file is owner-only once its owner made it, but whoever creates it
 * first owns it: a user could start a fake participant, or a fake sagad, on
 * the address in the configuration before the real one. sagad and sagactl
 * therefore hang up on an ipc:// peer run by another user (other than root):
 * no step and no token ever reaches it.
 *
 * Needs root (to run the impostor as "nobody" with setpriv); skipped
 * otherwise.
 *
 *   - sagactl against a socket of uid 65534: exit 5, saying whose socket it is;
 *   - sagad with a participant URL on such a socket: logs the refusal (with the
 *     uid), and the impostor receives no request (its database records none).
 *     The socket lies in a directory sagad trusts (root's, 0711): the
 *     impostor made it while the directory was still its own, so the
 *     socket-directory rule alone would not have stopped it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "util.h"

#define SETPRIV "/usr/bin/setpriv"
#define WAIT_MS 15000
#define NOBODY  "65534"

typedef struct {
    char *dir, *url, *db, *log;
    pid_t impostor;
} fixture;

static int setup(void **state)
{
    if (geteuid() != 0 || access(SETPRIV, X_OK) != 0) {
        *state = NULL;
        return 0;
    }
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL || chmod(f->dir, 0711) != 0)
        return -1;
    *state = f;
    /* The impostor's own directories: its database, and the socket's, which
     * is first its own (a listener refuses a directory others can write) and
     * then root's: a directory sagad trusts, holding another user's socket.
     * Only the peer-uid check stands between sagad and that socket. */
    char *home = th_path(f->dir, "impostor"), *sock = th_path(f->dir, "sock");
    int ok = home && sock && mkdir(home, 0700) == 0 && chown(home, 65534, 65534) == 0 &&
             mkdir(sock, 0711) == 0 && chown(sock, 65534, 65534) == 0;
    f->url = th_ipc_url(sock, "payment");
    f->db = th_path(home, "impostor.db");
    f->log = th_path(f->dir, "impostor.log");
    char *svc = util_asprintf("%s/payment-svc", getenv("SAGA_BIN_DIR"));
    const char *args[] = {"--reuid=" NOBODY,
                          "--regid=" NOBODY,
                          "--clear-groups",
                          svc,
                          "--listen",
                          f->url,
                          "--db",
                          f->db,
                          NULL};
    int rc = ok && svc && th_spawn(SETPRIV, args, NULL, f->log, &f->impostor) == 0 &&
                     th_wait_dial(f->url, f->impostor, WAIT_MS) == 0 && chown(sock, 0, 0) == 0
                 ? 0
                 : -1;
    free(svc);
    free(home);
    free(sock);
    return rc;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f == NULL)
        return 0;
    if (f->impostor > 0)
        th_kill(f->impostor);
    th_rmtree(f->dir);
    free(f->dir);
    free(f->url);
    free(f->db);
    free(f->log);
    free(f);
    return 0;
}

static void test_sagactl_hangs_up(void **state)
{
    fixture *f = *state;
    if (f == NULL) {
        print_message("needs root and " SETPRIV ": skipped\n");
        skip();
    }
    char *out = th_path(f->dir, "ctl.out");
    const char *args[] = {"--url", f->url, "--timeout", "2000", "stats", NULL};
    const char *env[] = {"SAGA_ADMIN_TOKEN=secret-that-must-not-leak", NULL};
    pid_t pid;
    int status;
    assert_int_equal(th_spawn("sagactl", args, env, out, &pid), 0);
    assert_int_equal(th_wait_exit(pid, WAIT_MS, &status), 0);
    assert_true(th_exited_with(status, 5));
    char *text = th_read_file(out);
    assert_non_null(text);
    if (strstr(text, "uid 65534") == NULL)
        print_message("sagactl said: %s\n", text);
    assert_non_null(strstr(text, "belongs to a process of uid 65534"));
    free(text);
    free(out);
}

static void test_sagad_hangs_up(void **state)
{
    fixture *f = *state;
    if (f == NULL) {
        print_message("needs root and " SETPRIV ": skipped\n");
        skip();
    }
    char *sagas = th_path(f->dir, "sagas");
    assert_int_equal(mkdir(sagas, 0700), 0);
    char *saga_file = th_path(sagas, "pay.cfg");
    assert_int_equal(th_write_file(saga_file,
                                   "name = \"pay\";\ninputs = [\"customer\", \"amount\"];\n"
                                   "steps = ( { name = \"charge\"; participant = \"payment\";\n"
                                   "  action = \"charge\"; compensation = \"refund\"; } );\n"),
                     0);
    char *cfg_path = th_path(f->dir, "sagad.cfg");
    char *admin = th_ipc_url(f->dir, "sagad");
    char *cfg = util_asprintf("admin_url = \"%s\";\ndatabase = \"sagad.db\";\n"
                              "sagas_dir = \"%s\";\nparticipants = { payment = \"%s\"; };\n"
                              "defaults = { timeout_ms = 200; retry = { max_attempts = 2; }; "
                              "compensation_retry = { max_attempts = 1; }; };\n",
                              admin, sagas, f->url);
    assert_int_equal(th_write_file(cfg_path, cfg), 0);
    char *log = th_path(f->dir, "sagad.log");
    const char *args[] = {"--config", cfg_path, NULL};
    pid_t sagad;
    assert_int_equal(th_spawn("sagad", args, NULL, log, &sagad), 0);
    assert_int_equal(th_wait_dial(admin, sagad, WAIT_MS), 0);

    char *out = th_path(f->dir, "start.out");
    const char *start[] = {"--url", admin, "start", "pay", "customer=alice", "amount=10", NULL};
    pid_t ctl;
    int status;
    assert_int_equal(th_spawn("sagactl", start, NULL, out, &ctl), 0);
    assert_int_equal(th_wait_exit(ctl, WAIT_MS, &status), 0);
    assert_true(th_exited_with(status, 0));

    /* The refusal is logged; the saga's step never reaches the impostor. */
    char *text = NULL;
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (util_mono_ms() < deadline) {
        free(text);
        text = th_read_file(log);
        if (text && strstr(text, "refusing the connection"))
            break;
        util_sleep_ms(50);
    }
    assert_non_null(text);
    if (strstr(text, "refusing the connection") == NULL)
        print_message("sagad log:\n%s\n", text);
    assert_non_null(strstr(text, "participant payment: refusing the connection"));
    assert_non_null(strstr(text, "uid 65534"));
    free(text);
    assert_int_equal(th_stop(sagad, WAIT_MS, &status), 0);
    assert_int_equal(th_sql_int(f->db, "SELECT count(*) FROM pt_idempotency"), 0);

    free(out);
    free(log);
    free(cfg);
    free(admin);
    free(cfg_path);
    free(saga_file);
    free(sagas);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sagactl_hangs_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sagad_hangs_up, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
