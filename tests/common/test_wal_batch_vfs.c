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
 * every write the VFS makes.
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
        /* First: its child must register the VFS over the power-loss one,
         * before this process registers it over the default. */
        cmocka_unit_test_setup_teardown(test_every_commit_survives_a_power_cut, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_commits_make_few_writes, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_another_connection_sees_each_commit, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_rolled_back_frames_never_land_on_a_later_commit,
                                        th_db_dir_setup, th_db_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
