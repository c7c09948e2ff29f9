/*
 * test_powerloss_vfs — common/powerloss_vfs.c through the path the programs
 * use: a child process gets SAGA_TEST_VFS and SAGA_CRASH_POINT, calls
 * crashpoint_init, works on a database, and dies at crashpoint("test.cut");
 * the parent (default VFS) then reads what a power cut left.
 *
 * Proves: commits without a sync are lost (synchronous=OFF, and NORMAL in
 * WAL mode, which syncs only at checkpoints) while synchronous=FULL commits
 * survive, also across a checkpoint made and synced by another connection
 * (as the WAL checkpointer thread does); the same work ended by a plain
 * SIGKILL keeps everything (why a SIGKILL test cannot find a missing sync);
 * the -shm is gone; and at the file level, unsynced writes, appends and
 * truncates are undone and the last write is torn at a sector boundary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crashpoint.h"
#include "harness.h"
#include "powerloss_vfs.h"
#include "util.h"

#define SYNCED_ROWS   3
#define UNSYNCED_ROWS 20

/* The child's end when something it needed failed: not a SIGKILL, so the
 * parent's check of how it died fails. */
static void child_fail(const char *what, sqlite3 *db)
{
    fprintf(stderr, "child: %s: %s\n", what, db ? sqlite3_errmsg(db) : "");
    _exit(3);
}

static void child_exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        child_fail(sql, db);
}

/* Arms the crash point (and the VFS when power_cut) in this child. */
static void child_arm(int power_cut, unsigned seed)
{
    char vfs[64];
    snprintf(vfs, sizeof vfs, "powerloss:%u", seed);
    if (power_cut)
        setenv("SAGA_TEST_VFS", vfs, 1);
    else
        unsetenv("SAGA_TEST_VFS");
    setenv("SAGA_CRASH_POINT", "test.cut", 1);
    crashpoint_init();
}

/*
 * In a child: WAL database, SYNCED_ROWS rows committed with
 * synchronous=FULL, then UNSYNCED_ROWS more, one commit each, under
 * `mode`; then the crash point. Returns how the child ended.
 */
static int run_child(const char *path, const char *mode, int power_cut)
{
    pid_t pid = fork();
    if (pid == 0) {
        child_arm(power_cut, 1);
        sqlite3 *db = NULL;
        if (sqlite3_open(path, &db) != SQLITE_OK)
            child_fail("open", db);
        child_exec(db, "PRAGMA journal_mode=WAL");
        child_exec(db, "PRAGMA synchronous=FULL");
        child_exec(db, "CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)");
        for (int i = 0; i < SYNCED_ROWS; i++)
            child_exec(db, "INSERT INTO t (pad) VALUES (zeroblob(600))");
        child_exec(db, mode);
        for (int i = 0; i < UNSYNCED_ROWS; i++)
            child_exec(db, "INSERT INTO t (pad) VALUES (zeroblob(600))");
        crashpoint("test.cut");
        _exit(4); /* the crash point did not fire */
    }
    int st = 0;
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void assert_killed(int st)
{
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);
}

static void test_sync_off_commits_are_lost(void **state)
{
    th_db_dir *f = *state;
    assert_killed(run_child(f->db, "PRAGMA synchronous=OFF", 1));
    char *shm = util_asprintf("%s-shm", f->db);
    assert_false(exists(shm)); /* the WAL index is modelled as lost */
    free(shm);
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), SYNCED_ROWS);
}

static void test_sync_normal_in_wal_loses_commits_after_checkpoint(void **state)
{
    /* WAL + NORMAL syncs only when it checkpoints: SQLite documents that
     * such commits may roll back after a power loss, and here they do. */
    th_db_dir *f = *state;
    assert_killed(run_child(f->db, "PRAGMA synchronous=NORMAL", 1));
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), SYNCED_ROWS);
}

static void test_sync_full_commits_survive(void **state)
{
    th_db_dir *f = *state;
    assert_killed(run_child(f->db, "PRAGMA synchronous=FULL", 1));
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), SYNCED_ROWS + UNSYNCED_ROWS);
}

/*
 * As sagad and the services do (common/wal_checkpointer.c): a second
 * connection checkpoints the WAL into the database file and truncates the
 * log, with its own syncs; the writer then commits more. Every commit
 * survives: a sync counts for the file, whichever connection made it.
 */
static void test_checkpoint_by_another_connection_survives(void **state)
{
    th_db_dir *f = *state;
    pid_t pid = fork();
    if (pid == 0) {
        child_arm(1, 1);
        sqlite3 *db = NULL, *ckpt = NULL;
        if (sqlite3_open(f->db, &db) != SQLITE_OK)
            child_fail("open", db);
        child_exec(db, "PRAGMA journal_mode=WAL");
        child_exec(db, "PRAGMA synchronous=FULL");
        child_exec(db, "CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)");
        for (int i = 0; i < SYNCED_ROWS; i++)
            child_exec(db, "INSERT INTO t (pad) VALUES (zeroblob(600))");
        if (sqlite3_open(f->db, &ckpt) != SQLITE_OK)
            child_fail("open the checkpointer", ckpt);
        child_exec(ckpt, "PRAGMA synchronous=FULL");
        child_exec(ckpt, "PRAGMA wal_checkpoint(TRUNCATE)");
        for (int i = 0; i < UNSYNCED_ROWS; i++)
            child_exec(db, "INSERT INTO t (pad) VALUES (zeroblob(600))");
        crashpoint("test.cut");
        _exit(4);
    }
    int st = 0;
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_killed(st);
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), SYNCED_ROWS + UNSYNCED_ROWS);
}

static void test_sigkill_alone_keeps_unsynced_commits(void **state)
{
    /* Why the VFS exists: the same missing sync, seen by a plain SIGKILL. */
    th_db_dir *f = *state;
    assert_killed(run_child(f->db, "PRAGMA synchronous=OFF", 0));
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), SYNCED_ROWS + UNSYNCED_ROWS);
}

#define FILE_SIZE 8192
#define PAGE      4096

static void file_op(int rc, const char *what)
{
    if (rc != SQLITE_OK)
        child_fail(what, NULL);
}

/*
 * In a child, through the VFS's own methods: 8 KiB of 'A' synced; then,
 * unsynced, a truncate to 4 KiB, an append of 'C', and 4 KiB of 'B' over
 * the start (the last write, the one torn). Returns the file's contents
 * after the cut (*len bytes).
 */
static unsigned char *torn_file_after_cut(const char *path, unsigned seed, size_t *len)
{
    pid_t pid = fork();
    if (pid == 0) {
        child_arm(1, seed);
        sqlite3_vfs *vfs = sqlite3_vfs_find(POWERLOSS_VFS_NAME);
        if (vfs == NULL || vfs != sqlite3_vfs_find(NULL))
            child_fail("the powerloss VFS is not the default", NULL);
        sqlite3_file *fh = calloc(1, (size_t)vfs->szOsFile);
        char full[1024];
        int out = 0;
        static unsigned char a[FILE_SIZE], b[PAGE], c[1000];
        memset(a, 'A', sizeof a);
        memset(b, 'B', sizeof b);
        memset(c, 'C', sizeof c);
        file_op(vfs->xFullPathname(vfs, path, sizeof full, full), "full path");
        file_op(vfs->xOpen(vfs, full, fh,
                           SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &out),
                "open");
        file_op(fh->pMethods->xWrite(fh, a, sizeof a, 0), "write A");
        file_op(fh->pMethods->xSync(fh, SQLITE_SYNC_FULL), "sync");
        file_op(fh->pMethods->xTruncate(fh, PAGE), "truncate");
        file_op(fh->pMethods->xWrite(fh, c, sizeof c, PAGE), "append C");
        file_op(fh->pMethods->xWrite(fh, b, sizeof b, 0), "write B");
        crashpoint("test.cut");
        _exit(4);
    }
    int st = 0;
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_killed(st);
    FILE *in = fopen(path, "rb");
    assert_non_null(in);
    unsigned char *buf = malloc(FILE_SIZE + 1);
    assert_non_null(buf);
    *len = fread(buf, 1, FILE_SIZE + 1, in);
    fclose(in);
    return buf;
}

static void test_unsynced_changes_undone_and_last_write_torn(void **state)
{
    th_db_dir *f = *state;
    int torn_seen = 0;
    for (unsigned seed = 1; seed <= 8; seed++) {
        unlink(f->db);
        size_t len = 0;
        unsigned char *got = torn_file_after_cut(f->db, seed, &len);
        /* The truncate and the append are undone: 8 KiB again. */
        assert_int_equal(len, FILE_SIZE);
        size_t kept = 0;
        while (kept < PAGE && got[kept] == 'B')
            kept++;
        /* Whole sectors of 'B', never the whole write, then the synced 'A'. */
        assert_int_equal(kept % POWERLOSS_SECTOR, 0);
        assert_true(kept < PAGE);
        for (size_t i = kept; i < FILE_SIZE; i++)
            if (got[i] != 'A')
                fail_msg("seed %u: byte %zu is '%c', expected 'A' (%zu bytes of B kept)", seed, i,
                         got[i], kept);
        torn_seen += kept > 0;
        free(got);
    }
    assert_true(torn_seen > 0); /* some seed kept a part of the last write */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_off_commits_are_lost, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_sync_normal_in_wal_loses_commits_after_checkpoint,
                                        th_db_dir_setup, th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_sync_full_commits_survive, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_by_another_connection_survives,
                                        th_db_dir_setup, th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_alone_keeps_unsynced_commits, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_unsynced_changes_undone_and_last_write_torn,
                                        th_db_dir_setup, th_db_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
