/*
 * test_wal_batch_vfs — a commit's WAL frames in few writes
 * (common/wal_batch_vfs.h), on real SQLite files.
 *
 * Proves: commits through the VFS make a fraction of the writes SQLite asks
 * for; another connection sees every commit at once (invariant 3); the
 * frames of a transaction that spilled and rolled back never land on a
 * commit another connection made afterwards (invariant 4: without the flush
 * at the write lock's release this test corrupts the log); and every commit
 * survives a power cut through the power-loss VFS beneath it, which sees
 * every write the VFS makes; and a write that fails under it (a full disk)
 * never lets a transaction commit around the frames it lost, even when
 * the failure surfaces in a read that SQLite would let a savepoint absorb;
 * and a commit whose frames fail to write (an I/O error at its sync) fails
 * whole while its connection goes on.
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
#include <sys/wait.h>
#include <unistd.h>

#include "crashpoint.h"
#include "harness.h"
#include "powerloss_vfs.h"
#include "util.h"
#include "vfs_shim.h"
#include "wal_batch_vfs.h"

/* A connection as the programs open theirs: vfs NULL is SQLite's default. */
static sqlite3 *open_db(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK ||
        th_sqlite_exec(db, "PRAGMA journal_mode=WAL") != SQLITE_OK ||
        th_sqlite_exec(db, "PRAGMA synchronous=FULL") != SQLITE_OK ||
        th_sqlite_exec(
            db, "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, who TEXT, pad BLOB)") !=
            SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int count_rows(sqlite3 *db, const char *where)
{
    char *sql = sqlite3_mprintf("SELECT count(*) FROM t WHERE %s", where);
    sqlite3_stmt *q = NULL;
    int n = -1;
    if (sql != NULL && sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_free(sql);
    return n;
}

/* One transaction of rows rows of pad bytes each, by who. */
static int insert_rows(sqlite3 *db, const char *who, int rows, int pad, int commit)
{
    char *sql = sqlite3_mprintf("WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k "
                                "WHERE i < %d) INSERT INTO t (who, pad) "
                                "SELECT %Q, randomblob(%d) FROM k",
                                rows, who, pad);
    int rc = sql == NULL ? SQLITE_NOMEM : th_sqlite_exec(db, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = th_sqlite_exec(db, sql);
    if (rc == SQLITE_OK)
        rc = th_sqlite_exec(db, commit ? "COMMIT" : "ROLLBACK");
    sqlite3_free(sql);
    return rc;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* In a child, first of all (the VFS must be registered over the power-loss
 * one): rows committed one transaction at a time, one more transaction left
 * open, then a power cut. Every committed row must be there, no other. */
static void test_every_commit_survives_a_power_cut(void **state)
{
    th_db_dir *f = *state;
    pid_t pid = fork();
    if (pid == 0) {
        setenv("SAGA_TEST_VFS", "powerloss:11", 1);
        setenv("SAGA_CRASH_POINT", "test.cut", 1);
        crashpoint_init();
        const char *vfs = wal_batch_vfs();
        sqlite3_vfs *batch = vfs ? sqlite3_vfs_find(vfs) : NULL;
        if (batch == NULL || batch->pAppData != sqlite3_vfs_find(POWERLOSS_VFS_NAME))
            _exit(5); /* not over the power-loss VFS: the cut would prove nothing */
        sqlite3 *db = open_db(f->db, vfs);
        if (db == NULL)
            _exit(3);
        for (int i = 0; i < 60; i++)
            if (insert_rows(db, "kept", 5, 1500, 1) != SQLITE_OK)
                _exit(3);
        if (th_sqlite_exec(db, "BEGIN IMMEDIATE") != SQLITE_OK ||
            th_sqlite_exec(db, "INSERT INTO t (who, pad) VALUES ('lost', randomblob(60000))") !=
                SQLITE_OK)
            _exit(3);
        crashpoint("test.cut");
        _exit(4);
    }
    assert_true(th_died_of_sigkill(pid));
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), 300);
}

/* A VFS beneath, for the child of the next test: fails every write to a
 * WAL file with SQLITE_FULL while fail_wal_writes is set, as a full disk. */
typedef struct {
    vfs_shim_file shim;
    int is_wal;
} full_disk_file;

static int fail_wal_writes; /* SQLITE_OK, or the error every WAL write returns */
static sqlite3_vfs full_disk_vfs;

static int full_disk_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    if (((full_disk_file *)f)->is_wal && fail_wal_writes != SQLITE_OK)
        return fail_wal_writes;
    return VFS_SHIM_BELOW(f)->pMethods->xWrite(VFS_SHIM_BELOW(f), buf, n, off);
}

static sqlite3_io_methods full_disk_methods; /* forwarding, but for xWrite */

static int full_disk_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                          int *out_flags)
{
    full_disk_file *f = (full_disk_file *)file;
    int rc = vfs_shim_open_below(vfs, name, file, (int)sizeof *f, flags, out_flags);
    if (rc != SQLITE_OK)
        return rc;
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    file->pMethods = &full_disk_methods;
    return SQLITE_OK;
}

static void child_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "child: %s\n", what);
        _exit(3);
    }
}

/* In a child: registers the failing VFS as the default, under the one tested. */
static void child_register_failing_vfs(void)
{
    sqlite3_vfs *below = sqlite3_vfs_find(NULL);
    vfs_shim_forwarding_methods(&full_disk_methods);
    full_disk_methods.xWrite = full_disk_write;
    vfs_shim_init(&full_disk_vfs, below, "full-disk", (int)sizeof(full_disk_file), full_disk_open);
    child_check(sqlite3_vfs_register(&full_disk_vfs, 1) == SQLITE_OK, "register");
}

/* In a child, after the connection's failure: the database holds `rows`
 * rows for another connection and for a crash's recovery of a copy. */
static void child_check_intact(const th_db_dir *f, int rows)
{
    sqlite3 *other = open_db(f->db, NULL);
    child_check(other != NULL && th_sqlite_exec(other, "PRAGMA integrity_check") == SQLITE_OK &&
                    count_rows(other, "1") == rows,
                "another connection");
    sqlite3_close(other);
    char *copy = th_path(f->dir, "copy.db");
    char *copy_wal = util_asprintf("%s-wal", copy);
    copy_file(f->db, copy);
    copy_file(f->wal, copy_wal);
    child_check(th_sqlite_intact_rows(copy, "t") == rows, "the log recovered after a crash");
    free(copy);
    free(copy_wal);
}

/* Runs body(f) in a child with the failing VFS registered as the default,
 * under the VFS tested, and fails unless the child exits 0. */
static void in_child_over_failing_vfs(void (*body)(const th_db_dir *f), const th_db_dir *f)
{
    pid_t pid = fork();
    if (pid == 0) {
        child_register_failing_vfs();
        body(f);
        _exit(0);
    }
    int st = 0;
    assert_true(pid > 0);
    assert_int_equal(th_waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* In a child, second (the VFS must be registered over the full disk):
 * the participant runtime's shape, a batch transaction with a savepoint
 * per request. A request spills frames; the next one rereads them while
 * the disk is full, so the spill's buffered frames cannot be written.
 * Whatever SQLite does with that error, the transaction must not commit:
 * nothing of it is in the database, which stays intact, live and after a
 * crash's recovery. */
static void lose_spilled_frames_to_a_full_disk(const th_db_dir *f)
{
    sqlite3 *db = open_db(f->db, wal_batch_vfs());
    child_check(db != NULL, "open");
    child_check(insert_rows(db, "before", 5, 100, 1) == SQLITE_OK, "first rows");
    child_check(th_sqlite_exec(db, "PRAGMA cache_size = 10") == SQLITE_OK, "cache_size");
    child_check(th_sqlite_exec(db, "BEGIN IMMEDIATE") == SQLITE_OK &&
                    th_sqlite_exec(db, "SAVEPOINT pt_request") == SQLITE_OK &&
                    th_sqlite_exec(db, "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT "
                                       "i + 1 FROM k WHERE i < 100) INSERT INTO t (who, pad) "
                                       "SELECT 'spilled', randomblob(3000) FROM k") == SQLITE_OK &&
                    th_sqlite_exec(db, "RELEASE pt_request") == SQLITE_OK &&
                    th_sqlite_exec(db, "SAVEPOINT pt_request") == SQLITE_OK,
                "the spilling request");
    fail_wal_writes = SQLITE_FULL;
    int update_rc =
        sqlite3_exec(db, "UPDATE t SET pad = zeroblob(10) WHERE who = 'spilled'", NULL, NULL, NULL);
    fail_wal_writes = SQLITE_OK;
    child_check(update_rc != SQLITE_OK, "the update rereading the spill succeeded");
    /* What the runtime does after a request's error: undo the request,
     * go on with the batch, commit it. */
    sqlite3_exec(db, "ROLLBACK TO pt_request", NULL, NULL, NULL);
    sqlite3_exec(db, "RELEASE pt_request", NULL, NULL, NULL);
    int commit_rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (commit_rc != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    child_check(count_rows(db, "who = 'spilled'") == 0, "the spilled rows were committed");
    child_check(insert_rows(db, "after", 5, 100, 1) == SQLITE_OK, "a later commit");
    child_check_intact(f, 10);
}

static void test_frames_lost_to_a_full_disk_never_commit(void **state)
{
    in_child_over_failing_vfs(lose_spilled_frames_to_a_full_disk, *state);
}

/* In a child, third (as the two before): an I/O error where it is most
 * likely, in the flush of a commit's frames at its sync. The COMMIT fails,
 * nothing of the transaction is seen by anyone, and the connection goes on:
 * its next transaction commits (the failure ends with the write lock). */
static void fail_the_frames_of_a_commit(const th_db_dir *f)
{
    sqlite3 *db = open_db(f->db, wal_batch_vfs());
    child_check(db != NULL, "open");
    child_check(insert_rows(db, "before", 5, 100, 1) == SQLITE_OK, "first rows");
    child_check(th_sqlite_exec(db, "BEGIN IMMEDIATE") == SQLITE_OK &&
                    th_sqlite_exec(db, "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT "
                                       "i + 1 FROM k WHERE i < 20) INSERT INTO t (who, pad) "
                                       "SELECT 'lost', randomblob(500) FROM k") == SQLITE_OK,
                "the rows to lose");
    fail_wal_writes = SQLITE_IOERR_WRITE;
    int commit_rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    fail_wal_writes = SQLITE_OK;
    child_check((commit_rc & 0xff) == SQLITE_IOERR, "the COMMIT did not fail with the error");
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    child_check(count_rows(db, "who = 'lost'") == 0, "the lost rows are seen");
    child_check(insert_rows(db, "after", 5, 100, 1) == SQLITE_OK, "a later commit");
    child_check_intact(f, 10);
}

static void test_a_commit_whose_frames_fail_to_write_never_commits(void **state)
{
    in_child_over_failing_vfs(fail_the_frames_of_a_commit, *state);
}

static void test_commits_make_few_writes(void **state)
{
    th_db_dir *f = *state;
    const char *vfs = wal_batch_vfs();
    assert_non_null(vfs);
    sqlite3 *db = open_db(f->db, vfs);
    assert_non_null(db);
    uint64_t asked0, made0, asked, made;
    wal_batch_vfs_counts(&asked0, &made0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(insert_rows(db, "w", 10, 1000, 1), SQLITE_OK);
    wal_batch_vfs_counts(&asked, &made);
    asked -= asked0;
    made -= made0;
    /* Each commit: several pages, two writes each, asked; one write made. */
    assert_true(asked >= 50 * 6);
    assert_true(made * 4 <= asked);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), 500);
}

/* Without POWERSAFE_OVERWRITE SQLite writes a commit's padding after its
 * sync: such a log is written as SQLite asks, nothing gathered. */
static void test_no_gathering_without_powersafe_overwrite(void **state)
{
    th_db_dir *f = *state;
    char *uri = util_asprintf("file:%s?psow=0", f->db);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(uri, &db,
                                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                                     wal_batch_vfs()),
                     SQLITE_OK);
    assert_int_equal(th_sqlite_exec(db,
                                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                                    "CREATE TABLE t (n INTEGER PRIMARY KEY, who TEXT, pad BLOB)"),
                     SQLITE_OK);
    uint64_t asked0, made0, asked, made;
    wal_batch_vfs_counts(&asked0, &made0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(insert_rows(db, "w", 10, 1000, 1), SQLITE_OK);
    wal_batch_vfs_counts(&asked, &made);
    assert_int_equal(asked - asked0, 0); /* passed straight through, not counted */
    assert_int_equal(made - made0, 0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), 100);
    free(uri);
}

static void test_another_connection_sees_each_commit(void **state)
{
    th_db_dir *f = *state;
    sqlite3 *writer = open_db(f->db, wal_batch_vfs());
    sqlite3 *reader = open_db(f->db, NULL);
    assert_non_null(writer);
    assert_non_null(reader);
    for (int i = 1; i <= 40; i++) {
        assert_int_equal(insert_rows(writer, "w", 3, 2000, 1), SQLITE_OK);
        assert_int_equal(count_rows(reader, "who = 'w'"), 3 * i);
        assert_int_equal(th_sqlite_exec(reader, "PRAGMA quick_check"), SQLITE_OK);
    }
    assert_int_equal(sqlite3_close(reader), SQLITE_OK);
    assert_int_equal(sqlite3_close(writer), SQLITE_OK);
}

static void test_rolled_back_frames_never_land_on_a_later_commit(void **state)
{
    th_db_dir *f = *state;
    sqlite3 *a = open_db(f->db, wal_batch_vfs());
    sqlite3 *b = open_db(f->db, NULL); /* as a replica in another process would */
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(insert_rows(a, "a", 1, 10, 1), SQLITE_OK);
    /* A transaction larger than a's cache spills frames into the log... */
    assert_int_equal(th_sqlite_exec(a, "PRAGMA cache_size = 10"), SQLITE_OK);
    uint64_t asked0, made0, asked, made;
    wal_batch_vfs_counts(&asked0, &made0);
    assert_int_equal(insert_rows(a, "spilled", 200, 3000, 0), SQLITE_OK);
    wal_batch_vfs_counts(&asked, &made);
    assert_true(asked - asked0 >= 100); /* it did spill */
    /* ...and rolls back; then b commits where those frames were, then a. */
    assert_int_equal(insert_rows(b, "b", 30, 3000, 1), SQLITE_OK);
    assert_int_equal(insert_rows(a, "a", 1, 10, 1), SQLITE_OK);
    assert_int_equal(count_rows(b, "who = 'b'"), 30);
    assert_int_equal(count_rows(a, "who = 'b'"), 30);
    assert_int_equal(count_rows(a, "who = 'spilled'"), 0);
    assert_int_equal(th_sqlite_exec(b, "PRAGMA integrity_check"), SQLITE_OK);
    /* The log as a crash would leave it, recovered from scratch. */
    char *copy = th_path(f->dir, "copy.db");
    char *copy_wal = util_asprintf("%s-wal", copy);
    copy_file(f->db, copy);
    copy_file(f->wal, copy_wal);
    assert_int_equal(th_sqlite_intact_rows(copy, "t"), 32);
    free(copy);
    free(copy_wal);
    assert_int_equal(sqlite3_close(b), SQLITE_OK);
    assert_int_equal(sqlite3_close(a), SQLITE_OK);
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* The first three first: their children register the VFS over another
         * one, before this process registers it over the default. */
        cmocka_unit_test_setup_teardown(test_every_commit_survives_a_power_cut, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_frames_lost_to_a_full_disk_never_commit,
                                        th_db_dir_setup, th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_a_commit_whose_frames_fail_to_write_never_commits,
                                        th_db_dir_setup, th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_commits_make_few_writes, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_no_gathering_without_powersafe_overwrite,
                                        th_db_dir_setup, th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_another_connection_sees_each_commit, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_frames_never_land_on_a_later_commit,
                                        th_db_dir_setup, th_db_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
