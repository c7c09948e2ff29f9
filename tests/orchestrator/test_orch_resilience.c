/*
 * test_orch_resilience — sagad does not crash-loop, and its database stays
 * bounded (README "When the store fails"; docs/CONFIG.md finished_retention_s).
 *
 *   corrupt rows       with sagad stopped, one saga's row gets unreadable
 *                      input JSON and another's steps break an invariant:
 *                      sagad starts, both are FAILED ("quarantined: ...") in
 *                      `sagactl list --state FAILED`, the alert command ran,
 *                      resume is refused, the other sagas complete.
 *   lock held          another connection holds the write lock longer than
 *                      SQLite's busy timeout: sagad keeps running and logs the
 *                      retries, a start is not acknowledged (nor its saga
 *                      stored) before the lock goes, a new start meanwhile
 *                      gets BUSY; afterwards everything completes, books
 *                      balanced.
 *   disk full          sagad.db on a small tmpfs (own mount namespace), filled
 *                      by a file: commits fail with SQLITE_FULL, sagad keeps
 *                      running and answers starts with BUSY; once the file is
 *                      deleted every start is repeated with its key and every
 *                      saga completes exactly once.
 *   retention          finished sagas updated before finished_retention_s
 *                      are purged; FAILED ones stay.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "orch_fixture.h"
#include "util.h"

static const char alert_script[] = "#!/bin/sh\n"
                                   "printf '%%s\\n' \"$@\" >> \"%s\"\n";

typedef struct {
    ofx f;
    char *alert_out;
    char *hook_dir;  /* the alert command's: a directory sagad trusts, not under /tmp */
    char *mount_dir; /* the tmpfs, when mounted */
    char *filler;
} sys;

static int append_config(ofx *f, const char *line)
{
    char *text = th_read_file(f->cfg);
    char *all = text ? util_asprintf("%s%s", text, line) : NULL;
    int rc = all ? th_write_file(f->cfg, all) : -1;
    free(text);
    free(all);
    return rc;
}

/* Participants up (shipping with these faults), an alert command, sagad not started. */
static int setup_with(void **state, const char *shipping_faults, int timeout_ms)
{
    sys *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    *state = s;
    ofx_opts o = {.timeout_ms = timeout_ms, .action_attempts = 30, .comp_attempts = 30};
    if (ofx_init(&s->f, &o) != 0)
        return -1;
    s->alert_out = th_path(s->f.dir, "alert.out");
    if ((s->hook_dir = th_trusted_tempdir()) == NULL)
        return -1;
    char *script_path = th_path(s->hook_dir, "alert.sh");
    char *script = util_asprintf(alert_script, s->alert_out);
    char *line = util_asprintf("alert_command = \"%s\";\n", script_path);
    int rc = script && line && th_write_file(script_path, script) == 0 &&
                     chmod(script_path, 0700) == 0 && append_config(&s->f, line) == 0
                 ? 0
                 : -1;
    free(script_path);
    free(script);
    free(line);
    for (int i = 0; rc == 0 && i < OFX_N_SVC; i++)
        rc = ofx_start_svc(&s->f, i, i == SVC_SHIPPING ? shipping_faults : NULL);
    return rc;
}

static int setup(void **state)
{
    return setup_with(state, NULL, 0);
}

/* shipping holds every reply 2 s: sagas stay in flight long enough to kill sagad. */
static int setup_slow_shipping(void **state)
{
    return setup_with(state, "seed=1,delay=1,delay_ms=2000", 6000);
}

static int teardown(void **state)
{
    sys *s = *state;
    if (s == NULL)
        return 0;
    int rc = 0;
    if (s->f.sagad.pid > 0 && ofx_stop_sagad(&s->f) != 0)
        rc = -1;
    if (s->filler)
        unlink(s->filler);
    /* Unmounted before the fixture removes the directory holding it. */
    if (s->mount_dir && umount2(s->mount_dir, MNT_DETACH) != 0) {
        print_message("umount %s: %s\n", s->mount_dir, strerror(errno));
        rc = -1;
    }
    ofx_destroy(&s->f); /* kills whatever still runs */
    if (s->hook_dir) {
        th_rmtree(s->hook_dir);
        free(s->hook_dir);
    }
    free(s->filler);
    free(s->mount_dir);
    free(s->alert_out);
    free(s);
    *state = NULL;
    return rc;
}

static int sagad_alive(ofx *f)
{
    int status;
    return f->sagad.pid > 0 && th_waitpid(f->sagad.pid, &status, WNOHANG) == 0;
}

static int log_contains(const ofx_proc *p, const char *needle)
{
    char *text = th_read_file(p->log);
    int found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}

static void assert_completed(ofx *f, const char *id)
{
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
}

/* ---- corrupt rows ---------------------------------------------------------- */

static void test_corrupt_rows_are_quarantined(void **state)
{
    sys *s = *state;
    ofx *f = &s->f;
    enum { N = 4 };
    char ids[N][37];
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    /* Shipping paused: the four sagas stay RUNNING at schedule_shipping for
     * as long as the test needs, however slowly a loaded machine starts
     * them (its held reply alone, 2 s, was not always enough). */
    assert_int_equal(kill(f->svc[SVC_SHIPPING].pid, SIGSTOP), 0);
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof key, "corrupt-%d", i);
        assert_int_equal(
            ofx_start_order(f, key, "bob", "WIDGET-1", "1", "700", "oslo", ids[i], NULL, NULL), 0);
    }
    /* All four wait on shipping: kill sagad with them in flight. */
    for (int i = 0; i < N; i++) {
        json_t *st = ofx_wait_attempts(f, ids[i], "schedule_shipping", 1, OFX_WAIT_MS);
        assert_non_null(st);
        json_decref(st);
    }
    ofx_kill_sagad(f);
    /* Saga 0: input that is not JSON. Saga 1: decodable, but its last step is
     * DONE while it runs an earlier one (RUNNING: steps after cursor are PENDING). */
    assert_int_equal(
        th_sql_exec(f->sagad.db, "UPDATE sagas SET input = '{not json' WHERE id = %Q", ids[0]), 0);
    assert_int_equal(th_sql_exec(f->sagad.db,
                                 "UPDATE saga_steps SET state = 2 WHERE saga_id = %Q AND idx = 4",
                                 ids[1]),
                     0);

    assert_int_equal(kill(f->svc[SVC_SHIPPING].pid, SIGCONT), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    assert_completed(f, ids[2]);
    assert_completed(f, ids[3]);
    assert_true(sagad_alive(f));

    char *out = NULL;
    assert_int_equal(ofx_ctl(f, &out, "list", "--state", "FAILED", NULL), 0);
    assert_non_null(out);
    print_message("%s", out);
    assert_non_null(strstr(out, ids[0]));
    assert_non_null(strstr(out, ids[1]));
    assert_null(strstr(out, ids[2]));
    free(out);
    json_t *st = ofx_status(f, ids[1]);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    assert_non_null(strstr(tj_str(st, "last_error"), "quarantined: "));
    json_decref(st);
    assert_int_equal(th_sql_int(f->sagad.db, "SELECT count(*) FROM sagas WHERE state = 5 AND "
                                             "last_error LIKE 'quarantined: unreadable row:%%'"),
                     1);

    /* Both alerted (the alert command appends its arguments). */
    for (int tries = 0; tries < 100; tries++) {
        char *alerts = th_read_file(s->alert_out);
        int both = alerts && strstr(alerts, ids[0]) && strstr(alerts, ids[1]);
        free(alerts);
        if (both)
            break;
        usleep(100 * 1000);
    }
    char *alerts = th_read_file(s->alert_out);
    assert_non_null(alerts);
    assert_non_null(strstr(alerts, ids[0]));
    assert_non_null(strstr(alerts, ids[1]));
    free(alerts);

    /* Resume is refused, with the reason; sagad still serves. */
    for (int i = 0; i < 2; i++) {
        out = NULL;
        assert_int_not_equal(ofx_ctl(f, &out, "resume", ids[i], NULL), 0);
        assert_non_null(out);
        print_message("resume %s: %s", ids[i], out);
        assert_non_null(strstr(out, "quarantined"));
        free(out);
    }
    assert_true(sagad_alive(f));
    char id[37];
    assert_int_equal(
        ofx_start_order(f, "corrupt-after", "bob", "WIDGET-1", "1", "700", "oslo", id, NULL, NULL),
        0);
    assert_completed(f, id);
}

/* ---- lock held by another process ------------------------------------------ */

typedef struct {
    ofx *f;
    const char *key;
    char id[37];
    int code;
    atomic_int done;
} bg_start;

static void *bg_start_main(void *arg)
{
    bg_start *b = arg;
    b->code =
        ofx_start_order(b->f, b->key, "carol", "WIDGET-1", "1", "100", "oslo", b->id, NULL, NULL);
    atomic_store(&b->done, 1);
    return NULL;
}

static void test_lock_held_by_another_process(void **state)
{
    sys *s = *state;
    ofx *f = &s->f;
    char first[37];
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    assert_int_equal(
        ofx_start_order(f, "lock-0", "carol", "WIDGET-1", "1", "100", "oslo", first, NULL, NULL),
        0);
    assert_completed(f, first);

    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->sagad.db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);

    f->ctl_timeout_ms = 60000;
    bg_start b = {.f = f, .key = "lock-A", .code = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, bg_start_main, &b), 0);
    /* Longer than SQLite's 5 s busy timeout: the engine's commit fails BUSY. */
    for (int i = 0; i < 300 && !log_contains(&f->sagad, "store unavailable"); i++)
        usleep(100 * 1000);
    int saw_retry = log_contains(&f->sagad, "store unavailable");
    int acked_early = atomic_load(&b.done);
    int alive = sagad_alive(f);
    /* A start meanwhile: BUSY at once, not queued. */
    f->ctl_timeout_ms = 5000;
    char *out = NULL;
    char id_b[37];
    int code_b =
        ofx_start_order(f, "lock-B", "carol", "WIDGET-1", "1", "100", "oslo", id_b, NULL, &out);
    sqlite3_stmt *q = NULL;
    int64_t stored_a = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sagas WHERE client_key = 'lock-A'", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        stored_a = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sleep(1);
    acked_early |= atomic_load(&b.done);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL); /* releases the lock, whatever failed */
    sqlite3_close(db);
    pthread_join(t, NULL);
    f->ctl_timeout_ms = 0;

    print_message("start during the lock: exit %d: %s", code_b, out ? out : "");
    assert_true(saw_retry);
    assert_true(alive);
    assert_false(acked_early);
    assert_int_equal(stored_a, 0);
    assert_int_not_equal(code_b, 0);
    assert_non_null(out);
    assert_non_null(strstr(out, "unavailable"));
    free(out);

    assert_int_equal(b.code, 0);
    assert_completed(f, b.id);
    assert_int_equal(
        ofx_start_order(f, "lock-B", "carol", "WIDGET-1", "1", "100", "oslo", id_b, NULL, NULL), 0);
    assert_completed(f, id_b);
    assert_true(sagad_alive(f));
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), 3);
    assert_int_equal(ofx_books_balanced(f), 0);
}

/* ---- disk full ----------------------------------------------------------------- */

/* Set by main: 0 once this process has its own mount namespace. */
static int private_mounts_errno = -1;

/* sagad.db moves to a 16 MiB tmpfs mounted in this process's own mount
 * namespace (sagad, started later, inherits it). Mounting must work: CI runs
 * as root, and a test that cannot provoke the failure must not pass. */
static int setup_tmpfs(void **state)
{
    if (setup(state) != 0)
        return -1;
    sys *s = *state;
    ofx *f = &s->f;
    if (private_mounts_errno != 0) {
        print_message("cannot get a private mount namespace: %s\n", strerror(private_mounts_errno));
        return -1;
    }
    s->mount_dir = th_path(f->dir, "small");
    if (s->mount_dir == NULL || mkdir(s->mount_dir, 0700) != 0 ||
        mount("tmpfs", s->mount_dir, "tmpfs", 0, "size=16m") != 0) {
        print_message("cannot mount a tmpfs: %s\n", strerror(errno));
        free(s->mount_dir);
        s->mount_dir = NULL;
        return -1;
    }
    char *db = th_path(s->mount_dir, "sagad.db");
    char *text = th_read_file(f->cfg);
    char *at = text ? strstr(text, f->sagad.db) : NULL;
    int rc = -1;
    if (db && at) {
        *at = '\0';
        char *cfg = util_asprintf("%s%s%s", text, db, at + strlen(f->sagad.db));
        rc = cfg ? th_write_file(f->cfg, cfg) : -1;
        free(cfg);
    }
    free(text);
    if (rc == 0) {
        free(f->sagad.db);
        f->sagad.db = db;
        s->filler = th_path(s->mount_dir, "filler");
    } else {
        free(db);
    }
    return rc;
}

/* Writes the filler until the file system is full. */
static int fill(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0)
        return -1;
    static char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    ssize_t n;
    while ((n = write(fd, chunk, sizeof chunk)) > 0) {
    }
    int full = n < 0 && errno == ENOSPC;
    close(fd);
    return full ? 0 : -1;
}

static void test_disk_full(void **state)
{
    sys *s = *state;
    ofx *f = &s->f;
    enum { MAX_TRIES = 60 };
    char keys[MAX_TRIES][32], ids[MAX_TRIES][37];
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    assert_int_equal(ofx_start_order(f, "full-warmup", "dave", "WIDGET-1", "1", "10", "oslo",
                                     ids[0], NULL, NULL),
                     0);
    assert_completed(f, ids[0]);

    assert_int_equal(fill(s->filler), 0);
    /* Starts until one is refused: the WAL may first reuse space it has. */
    f->ctl_timeout_ms = 3000;
    int tried = 0, refused = 0;
    while (tried < MAX_TRIES && !refused) {
        snprintf(keys[tried], sizeof keys[tried], "full-%d", tried);
        int code = ofx_start_order(f, keys[tried], "dave", "WIDGET-1", "1", "10", "oslo",
                                   ids[tried], NULL, NULL);
        tried++;
        refused = code != 0;
    }
    assert_true(refused);
    assert_true(sagad_alive(f));
    /* Now sagad knows: a start is answered BUSY at once. */
    for (int i = 0; i < 100 && !log_contains(&f->sagad, "store unavailable"); i++)
        usleep(100 * 1000);
    assert_true(log_contains(&f->sagad, "store unavailable"));
    char *out = NULL;
    char id[37];
    assert_int_not_equal(
        ofx_start_order(f, "full-busy", "dave", "WIDGET-1", "1", "10", "oslo", id, NULL, &out), 0);
    assert_non_null(out);
    print_message("start on a full disk: %s", out);
    assert_non_null(strstr(out, "unavailable"));
    free(out);
    sleep(1);
    assert_true(sagad_alive(f));

    assert_int_equal(unlink(s->filler), 0);
    f->ctl_timeout_ms = 0;
    /* Every client repeats its start with its key until it is answered (BUSY
     * until sagad's next commit retry finds the space): one saga per key. */
    for (int i = 0; i < tried; i++) {
        int code = -1;
        for (int attempt = 0; attempt < 150 && code != 0; attempt++) {
            code = ofx_start_order(f, keys[i], "dave", "WIDGET-1", "1", "10", "oslo", ids[i], NULL,
                                   NULL);
            if (code != 0)
                usleep(200 * 1000);
        }
        assert_int_equal(code, 0);
    }
    for (int i = 0; i < tried; i++)
        assert_completed(f, ids[i]);
    assert_true(sagad_alive(f));
    int n = tried + 1; /* and the warm-up */
    assert_int_equal(th_sql_int(f->sagad.db, "SELECT count(*) FROM sagas"), n);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), n);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), n);
    assert_int_equal(ofx_counter(f, SVC_PAYMENT, "effects"), n);
    assert_int_equal(ofx_books_balanced(f), 0);
}

/* ---- retention ------------------------------------------------------------------ */

static void test_finished_retention(void **state)
{
    sys *s = *state;
    ofx *f = &s->f;
    char old_done[37], old_failed[37], recent[37];
    assert_int_equal(append_config(f, "finished_retention_s = 60;\n"), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    assert_int_equal(
        ofx_start_order(f, "ret-1", "alice", "WIDGET-1", "1", "10", "oslo", old_done, NULL, NULL),
        0);
    assert_int_equal(
        ofx_start_order(f, "ret-2", "alice", "WIDGET-1", "1", "10", "oslo", old_failed, NULL, NULL),
        0);
    assert_int_equal(
        ofx_start_order(f, "ret-3", "alice", "WIDGET-1", "1", "10", "oslo", recent, NULL, NULL), 0);
    assert_completed(f, old_done);
    assert_completed(f, old_failed);
    assert_completed(f, recent);
    /* Two finished two days ago; one of them FAILED (an operator's to settle: kept). */
    assert_int_equal(th_sql_exec(f->sagad.db,
                                 "UPDATE sagas SET updated_at_ms = updated_at_ms - 172800000 "
                                 "WHERE id IN (%Q, %Q)",
                                 old_done, old_failed),
                     0);
    assert_int_equal(th_sql_exec(f->sagad.db,
                                 "UPDATE sagas SET state = 5, last_error = 'test' WHERE id = %Q",
                                 old_failed),
                     0);
    int64_t left = -1;
    for (int i = 0; i < 300; i++) { /* a pass every 10 s */
        left = th_sql_int(f->sagad.db, "SELECT count(*) FROM sagas WHERE id = %Q", old_done);
        if (left == 0)
            break;
        usleep(100 * 1000);
    }
    assert_int_equal(left, 0);
    assert_int_equal(
        th_sql_int(f->sagad.db, "SELECT count(*) FROM saga_history WHERE saga_id = %Q", old_done),
        0);
    assert_int_equal(
        th_sql_int(f->sagad.db, "SELECT count(*) FROM saga_steps WHERE saga_id = %Q", old_done), 0);
    char *out = NULL;
    assert_int_equal(ofx_ctl(f, &out, "list", NULL), 0);
    assert_non_null(out);
    assert_null(strstr(out, old_done));
    assert_non_null(strstr(out, old_failed));
    assert_non_null(strstr(out, recent));
    free(out);
    /* The key of a purged saga is free again: the dedup window is the retention. */
    char again[37];
    int existing = -1;
    assert_int_equal(
        ofx_start_order(f, "ret-1", "alice", "WIDGET-1", "1", "10", "oslo", again, &existing, NULL),
        0);
    assert_int_equal(existing, 0);
    assert_string_not_equal(again, old_done);
    assert_completed(f, again);
}

int main(void)
{
    /* Before any thread exists (unshare of the mount namespace requires it). */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        private_mounts_errno = errno;
    else
        private_mounts_errno = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_corrupt_rows_are_quarantined, setup_slow_shipping,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lock_held_by_another_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, setup_tmpfs, teardown),
        cmocka_unit_test_setup_teardown(test_finished_retention, setup, teardown),
    };
    return cmocka_run_group_tests_name("orchestrator resilience", tests, NULL, NULL);
}
