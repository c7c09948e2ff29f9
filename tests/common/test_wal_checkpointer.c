/*
 * test_wal_checkpointer — the log's file growing ahead of the writer
 * (common/wal_checkpointer.h), on real SQLite files.
 *
 * Proves: with synchronous=FULL a commit overwrites zeros written ahead
 * instead of appending (the file's size does not change across COMMIT once
 * grown), the zeros cost no commit (every row is there after a reopen,
 * after a SIGKILL, and after a power cut through the power-loss VFS, with
 * an intact database), and with synchronous=OFF nothing is written ahead.
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
#include "util.h"
#include "wal_checkpointer.h"

#define COMMITS 400 /* about 3 MiB of log: more than one growth */

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* A writer as sagad's store and the participants open theirs. */
static sqlite3 *open_writer(const char *path, int full, wal_checkpointer **ckpt)
{
    sqlite3 *db = NULL;
    char err[256];
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        th_sqlite_exec(db, "PRAGMA journal_mode=WAL") != SQLITE_OK ||
        th_sqlite_exec(db, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF") !=
            SQLITE_OK ||
        th_sqlite_exec(db, "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, pad BLOB)") !=
            SQLITE_OK)
        return NULL;
    *ckpt = wal_checkpointer_start(db, path, full, "test", err, sizeof err);
    if (*ckpt == NULL) {
        fprintf(stderr, "checkpointer: %s\n", err);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* One row per transaction, begun as the programs begin theirs. Counts the
 * commits that changed the log file's size into *appended. */
static int write_rows(sqlite3 *db, wal_checkpointer *ckpt, const char *wal, int n, int *appended)
{
    *appended = 0;
    for (int i = 0; i < n; i++) {
        if (th_sqlite_exec(db, "BEGIN IMMEDIATE") != SQLITE_OK)
            return -1;
        wal_checkpointer_writing(ckpt);
        if (th_sqlite_exec(db, "INSERT INTO t (pad) VALUES (zeroblob(3000))") != SQLITE_OK)
            return -1;
        long long before = file_size(wal);
        if (th_sqlite_exec(db, "COMMIT") != SQLITE_OK)
            return -1;
        *appended += file_size(wal) != before;
    }
    return 0;
}

static void test_commits_overwrite_what_was_grown_ahead(void **state)
{
    th_db_dir *f = *state;
    wal_checkpointer *ckpt = NULL;
    sqlite3 *db = open_writer(f->db, 1, &ckpt);
    assert_non_null(db);
    int appended = 0;
    assert_int_equal(write_rows(db, ckpt, f->wal, COMMITS, &appended), 0);
    /* The first commits may append (the log's end is learnt at a commit);
     * after that none does. Without growing ahead each of them would. */
    assert_in_range(appended, 0, 2);
    assert_true(file_size(f->wal) >= WAL_GROW_MARGIN);
    wal_checkpointer_stop(ckpt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), COMMITS);
}

static void test_no_growing_without_syncs(void **state)
{
    th_db_dir *f = *state;
    wal_checkpointer *ckpt = NULL;
    sqlite3 *db = open_writer(f->db, 0, &ckpt);
    assert_non_null(db);
    int appended = 0;
    assert_int_equal(write_rows(db, ckpt, f->wal, 50, &appended), 0);
    assert_true(appended >= 45); /* every commit appends: nothing to gain without syncs */
    wal_checkpointer_stop(ckpt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* In a child: COMMITS rows, each committed with synchronous=FULL into a log
 * grown ahead, then the crash point (a power cut under the power-loss VFS,
 * else a SIGKILL). Every row was committed, so every row must be there. */
static void crash_after_rows(const th_db_dir *f, int power_cut)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (power_cut)
            setenv("SAGA_TEST_VFS", "powerloss:7", 1);
        setenv("SAGA_CRASH_POINT", "test.cut", 1);
        crashpoint_init();
        wal_checkpointer *ckpt = NULL;
        sqlite3 *db = open_writer(f->db, 1, &ckpt);
        int appended = 0;
        if (db == NULL || write_rows(db, ckpt, f->wal, COMMITS, &appended) != 0)
            _exit(3);
        crashpoint("test.cut");
        _exit(4);
    }
    assert_true(th_died_of_sigkill(pid));
    assert_int_equal(th_sqlite_intact_rows(f->db, "t"), COMMITS);
}

static void test_grown_log_survives_a_sigkill(void **state)
{
    crash_after_rows(*state, 0);
}

static void test_grown_log_survives_a_power_cut(void **state)
{
    crash_after_rows(*state, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_overwrite_what_was_grown_ahead,
                                        th_db_dir_setup, th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_no_growing_without_syncs, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_grown_log_survives_a_sigkill, th_db_dir_setup,
                                        th_db_dir_teardown),
        cmocka_unit_test_setup_teardown(test_grown_log_survives_a_power_cut, th_db_dir_setup,
                                        th_db_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
