/*
 * test_sec_files — private files (docs/SECURITY.md, "Private files"), with
 * the real sagad and payment-svc:
 *
 *   - what they create (the database, its -wal and -shm, the ipc:// socket)
 *     is 0600, even when started with umask 022;
 *   - they refuse to start on an existing database, or a -wal next to it,
 *     that group or others may read, or that another user (nobody) owns,
 *     with a message naming the file, its mode or owner, and the command
 *     that fixes it;
 *   - a start while another process holds a lock on the database's -shm is
 *     never silent and never unbounded: it logs whose lock it waits for,
 *     and either opens once the lock goes or gives up with a message
 *     naming the file and the process.
 *
 * Runs as root (chown to nobody); the lock holder is a child of this test
 * that takes an fcntl read lock on the whole -shm, as the `sqlite3` shell
 * of another user did in issue 12.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "util.h"

#define WAIT_MS      15000
#define LOCK_WAIT_MS 60000 /* well above the programs' 10 s bound, for a loaded machine */
#define NOBODY_UID   65534

typedef struct {
    char *dir, *cfg, *db, *sagad_url, *svc_db, *svc_url;
    pid_t sagad, svc, holder;
    int hold_fd; /* closing it ends the lock holder */
    int runs;    /* one log file per program start */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    *state = f;
    f->hold_fd = -1;
    f->cfg = th_path(f->dir, "sagad.cfg");
    f->db = th_path(f->dir, "sagad.db");
    f->sagad_url = th_ipc_url(f->dir, "sagad");
    f->svc_db = th_path(f->dir, "payment.db");
    f->svc_url = th_ipc_url(f->dir, "payment");
    char *sagas = th_source_path("sagas");
    char *text =
        util_asprintf("admin_url = \"%s\";\ndatabase = \"sagad.db\";\nsagas_dir = \"%s\";\n"
                      "participants = {\n  order = \"ipc://%s/o.ipc\";\n  payment = \"%s\";\n"
                      "  inventory = \"ipc://%s/i.ipc\";\n  shipping = \"ipc://%s/s.ipc\";\n"
                      "  loyalty = \"ipc://%s/l.ipc\";\n};\n",
                      f->sagad_url, sagas, f->dir, f->svc_url, f->dir, f->dir, f->dir);
    int rc = sagas != NULL && text != NULL && th_write_file(f->cfg, text) == 0 ? 0 : -1;
    free(sagas);
    free(text);
    return rc;
}

static void release_lock(fixture *f)
{
    if (f->hold_fd >= 0)
        close(f->hold_fd);
    f->hold_fd = -1;
    if (f->holder > 0) {
        kill(f->holder, SIGKILL);
        waitpid(f->holder, NULL, 0);
    }
    f->holder = 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->sagad > 0)
        th_kill(f->sagad);
    if (f->svc > 0)
        th_kill(f->svc);
    release_lock(f);
    th_rmtree(f->dir);
    free(f->dir);
    free(f->cfg);
    free(f->db);
    free(f->sagad_url);
    free(f->svc_db);
    free(f->svc_url);
    free(f);
    return 0;
}

/* Starts sagad or payment-svc; *log gets the path of its output. */
static pid_t start(fixture *f, int sagad, char **log)
{
    *log = util_asprintf("%s/run%d.log", f->dir, ++f->runs);
    const char *sagad_args[] = {"--config", f->cfg, NULL};
    const char *svc_args[] = {"--listen", f->svc_url, "--db", f->svc_db, NULL};
    pid_t pid;
    assert_int_equal(
        th_spawn(sagad ? "sagad" : "payment-svc", sagad ? sagad_args : svc_args, NULL, *log, &pid),
        0);
    return pid;
}

/* Starts the program, waits until it serves, stops it: the database exists. */
static void run_once(fixture *f, int sagad)
{
    char *log;
    pid_t pid = start(f, sagad, &log);
    int status;
    if (th_wait_dial(sagad ? f->sagad_url : f->svc_url, pid, WAIT_MS) != 0) {
        char *out = th_read_file(log);
        th_kill(pid);
        fail_msg("%s did not start: %s", sagad ? "sagad" : "payment-svc", out ? out : "");
    }
    assert_int_equal(th_stop(pid, WAIT_MS, &status), 0);
    assert_true(th_exited_with(status, 0));
    free(log);
}

/* Starts the program and expects it to exit 1 within wait_ms with every
 * needle (NULL-terminated) in its output. */
static void expect_refusal(fixture *f, int sagad, int wait_ms, ...)
{
    char *log;
    pid_t pid = start(f, sagad, &log);
    int status;
    if (sagad)
        f->sagad = pid;
    else
        f->svc = pid;
    assert_int_equal(th_wait_exit(pid, wait_ms, &status), 0);
    if (sagad)
        f->sagad = 0;
    else
        f->svc = 0;
    char *out = th_read_file(log);
    assert_non_null(out);
    print_message("%s", out);
    assert_true(th_exited_with(status, 1));
    va_list ap;
    va_start(ap, wait_ms);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (strstr(out, needle) == NULL)
            fail_msg("'%s' is not in the output", needle);
    va_end(ap);
    free(out);
    free(log);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        fail_msg("%s does not exist", path);
    return st.st_mode & 07777;
}

static void test_created_files_are_private(void **state)
{
    fixture *f = *state;
    char *log1, *log2;
    f->sagad = start(f, 1, &log1);
    f->svc = start(f, 0, &log2);
    assert_int_equal(th_wait_dial(f->sagad_url, f->sagad, WAIT_MS), 0);
    assert_int_equal(th_wait_dial(f->svc_url, f->svc, WAIT_MS), 0);
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char *a = util_asprintf("%s%s", f->db, suffixes[i]);
        char *b = util_asprintf("%s%s", f->svc_db, suffixes[i]);
        assert_int_equal(mode_of(a), 0600);
        assert_int_equal(mode_of(b), 0600);
        free(a);
        free(b);
    }
    assert_int_equal(mode_of(f->sagad_url + 6), 0600);
    assert_int_equal(mode_of(f->svc_url + 6), 0600);
    int status;
    assert_int_equal(th_stop(f->sagad, WAIT_MS, &status), 0);
    f->sagad = 0;
    assert_int_equal(th_stop(f->svc, WAIT_MS, &status), 0);
    f->svc = 0;
    free(log1);
    free(log2);
}

/* A database others may read, one another user owns, a -wal another user
 * owns: each refused with its fix; the same database made private starts. */
static void refuses_loose_files(fixture *f, int sagad)
{
    const char *db = sagad ? f->db : f->svc_db;
    run_once(f, sagad);

    assert_int_equal(chmod(db, 0644), 0);
    char *fix = util_asprintf("chmod 600 %s", db);
    expect_refusal(f, sagad, WAIT_MS, db, "mode 0644", "owner root", fix, NULL);
    free(fix);

    assert_int_equal(chmod(db, 0600), 0);
    assert_int_equal(chown(db, NOBODY_UID, NOBODY_UID), 0);
    fix = util_asprintf("chown root %s && chmod 600 %s", db, db);
    expect_refusal(f, sagad, WAIT_MS, db, "owned by nobody (uid 65534)", fix, NULL);
    free(fix);
    assert_int_equal(chown(db, 0, 0), 0);

    char *wal = util_asprintf("%s-wal", db);
    assert_int_equal(th_write_file(wal, ""), 0);
    assert_int_equal(chown(wal, NOBODY_UID, NOBODY_UID), 0);
    expect_refusal(f, sagad, WAIT_MS, wal, "owned by nobody", NULL);
    assert_int_equal(unlink(wal), 0);
    free(wal);

    run_once(f, sagad); /* private again: served */
}

static void test_sagad_refuses_loose_database(void **state)
{
    refuses_loose_files(*state, 1);
}

static void test_service_refuses_loose_database(void **state)
{
    refuses_loose_files(*state, 0);
}

/* A child process that holds an fcntl read lock on the whole file at path
 * (created 0600 when missing) until release_lock. Only async-signal-safe
 * calls after fork: this process runs nng threads. */
static void hold_lock(fixture *f, const char *path)
{
    int ready[2], hold[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(hold), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(hold[1]);
        int fd = open(path, O_RDWR | O_CREAT, 0600);
        struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        if (fd < 0 || fcntl(fd, F_SETLK, &fl) != 0)
            _exit(1);
        char c = 'x';
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        while (read(hold[0], &c, 1) > 0)
            ;
        _exit(0);
    }
    f->holder = pid;
    close(ready[1]);
    close(hold[0]);
    f->hold_fd = hold[1];
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1); /* 0: the child could not lock */
    close(ready[0]);
}

static void lock_held_start_gives_up(fixture *f, int sagad)
{
    const char *db = sagad ? f->db : f->svc_db;
    run_once(f, sagad);
    char *shm = util_asprintf("%s-shm", db);
    hold_lock(f, shm);
    char *holder =
        util_asprintf("process %ld (uid 0) holds a read lock on %s", (long)f->holder, shm);
    expect_refusal(f, sagad, LOCK_WAIT_MS, holder, "waiting up to 10 s", "still after 10 s", NULL);
    release_lock(f);
    run_once(f, sagad); /* the lock gone, the database is fine */
    free(holder);
    free(shm);
}

static void test_sagad_start_with_lock_held_is_bounded(void **state)
{
    lock_held_start_gives_up(*state, 1);
}

static void test_service_start_with_lock_held_is_bounded(void **state)
{
    lock_held_start_gives_up(*state, 0);
}

/* The lock goes while sagad waits for it (after it said so): it serves. */
static void test_start_serves_once_the_lock_goes(void **state)
{
    fixture *f = *state;
    run_once(f, 1);
    char *shm = util_asprintf("%s-shm", f->db), *log;
    hold_lock(f, shm);
    f->sagad = start(f, 1, &log);
    char *out = NULL;
    int64_t t0 = util_mono_ms();
    while ((out = th_read_file(log)) != NULL && strstr(out, "waiting up to") == NULL &&
           util_mono_ms() - t0 < LOCK_WAIT_MS) {
        free(out);
        util_sleep_ms(50);
    }
    assert_non_null(out);
    print_message("%s", out);
    assert_non_null(strstr(out, "waiting up to"));
    free(out);
    release_lock(f);
    assert_int_equal(th_wait_dial(f->sagad_url, f->sagad, WAIT_MS), 0);
    int status;
    assert_int_equal(th_stop(f->sagad, WAIT_MS, &status), 0);
    f->sagad = 0;
    out = th_read_file(log);
    assert_non_null(strstr(out, "the lock is gone"));
    free(out);
    free(log);
    free(shm);
}

/* A busy writer on db, as another replica of the service: a real SQLite
 * connection (Python's sqlite3 module, on this machine's libsqlite3) that
 * commits one transaction after another, each holding the write lock 150 ms,
 * for at most 60 s, until release_lock. */
static void start_busy_writer(fixture *f, const char *db)
{
    static const char prog[] =
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
        "c.execute('CREATE TABLE IF NOT EXISTS busy_writer (x INTEGER)')\n"
        "end = time.time() + 60\n"
        "while time.time() < end:\n"
        "    c.execute('BEGIN IMMEDIATE')\n"
        "    c.execute('INSERT INTO busy_writer VALUES (1)')\n"
        "    time.sleep(0.15)\n"
        "    c.execute('COMMIT')\n"
        "    time.sleep(0.002)\n";
    char *log = util_asprintf("%s/busy-writer.log", f->dir);
    const char *args[] = {"-c", prog, db, NULL};
    assert_int_equal(th_spawn("/usr/bin/python3", args, NULL, log, &f->holder), 0);
    free(log);
}

/* A lock whose holder keeps committing is a busy replica, not a stuck
 * process: the start does not wait it out (db_files.h rule 3: the log
 * moves, or the lock is seen free between two of its transactions), and
 * serves once SQLite gets its turn. */
static void test_service_start_beside_a_busy_writer(void **state)
{
    fixture *f = *state;
    run_once(f, 0);
    start_busy_writer(f, f->svc_db);
    char *wal = util_asprintf("%s-wal", f->svc_db);
    for (int i = 0; i < 200 && access(wal, F_OK) != 0; i++) /* the writer is in */
        util_sleep_ms(50);
    char *log;
    f->svc = start(f, 0, &log);
    char *out = NULL;
    int64_t t0 = util_mono_ms();
    while ((out = th_read_file(log)) != NULL && strstr(out, "serving payment") == NULL &&
           strstr(out, "still after") == NULL && util_mono_ms() - t0 < LOCK_WAIT_MS) {
        free(out);
        util_sleep_ms(50);
    }
    assert_non_null(out);
    print_message("%s", out);
    assert_non_null(strstr(out, "serving payment")); /* beside the writer, still busy */
    assert_null(strstr(out, "still after"));
    free(out);
    release_lock(f); /* the busy writer stops; the service gets its turn */
    assert_int_equal(th_wait_dial(f->svc_url, f->svc, WAIT_MS), 0);
    int status;
    assert_int_equal(th_stop(f->svc, WAIT_MS, &status), 0);
    f->svc = 0;
    free(log);
    free(wal);
}

int main(void)
{
    /* What a careless shell would give them: the programs must not rely on it. */
    umask(022);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_created_files_are_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sagad_refuses_loose_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_refuses_loose_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sagad_start_with_lock_held_is_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_service_start_with_lock_held_is_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_start_serves_once_the_lock_goes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_start_beside_a_busy_writer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
