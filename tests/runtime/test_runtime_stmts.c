/*
 * The runtime's prepared-statement cache (pt_prepare, participant.h), driven
 * through pt_process_batch on the toy bank (bank.h) with handlers of its own:
 * a statement is prepared once per SQL text and reused by later requests,
 * different SQL gets different statements, a statement still in use is never
 * handed out twice, every statement is reset with its bindings cleared when
 * its handler returns (also after an SQL error, a refusal or a rolled-back
 * batch), the cache is bounded, and pt_destroy finalizes it (the connection
 * closes; a leak shows under LeakSanitizer).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bank.h"
#include "util.h"

#define SEEN_MAX 8

/* What the test handlers do and record. */
typedef struct {
    const char *sql; /* the SQL the handler asks for */
    int fail_after;  /* "insert": return PT_REJECTED after the insert */
    int leave_row;   /* "select": step once to a row and leave it pending */
    int rc;          /* pt_prepare's last code */
    int n_seen;      /* statements handed out in the last call */
    sqlite3_stmt *seen[SEEN_MAX];
    char expanded[SEEN_MAX][128]; /* sqlite3_expanded_sql of each, when handed out */
} probe;

typedef struct {
    bank_fixture b; /* the bank, opened */
    probe pr;
    int seq; /* for fresh keys */
} fixture;

/* Records a statement handed to the handler and its SQL with the bindings it came with. */
static void probe_seen(probe *pr, sqlite3_stmt *st)
{
    if (pr->n_seen >= SEEN_MAX)
        return;
    char *x = sqlite3_expanded_sql(st);
    snprintf(pr->expanded[pr->n_seen], sizeof pr->expanded[0], "%s", x ? x : "?");
    sqlite3_free(x);
    pr->seen[pr->n_seen++] = st;
}

/* select: one statement for pr->sql, binds ?1 to the amount param, reads one row. */
static int h_select(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    probe *pr = arg;
    sqlite3_stmt *st;
    pr->n_seen = 0;
    pr->rc = pt_prepare(req, pr->sql, &st);
    if (pr->rc != SQLITE_OK) {
        assert_null(st);
        return pt_db_error(reply, db);
    }
    probe_seen(pr, st);
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_text(st, 1, pt_param(req, "amount"), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW)
        return pt_db_error(reply, db);
    pt_result_set(reply, "v", (const char *)sqlite3_column_text(st, 0));
    if (!pr->leave_row)
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    return PT_OK;
}

/* insert: INSERT INTO items(id) VALUES (?1) with the amount param as id. */
static int h_insert(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    probe *pr = arg;
    sqlite3_stmt *st;
    pr->n_seen = 0;
    pr->rc = pt_prepare(req, "INSERT INTO items (id) VALUES (?1)", &st);
    if (pr->rc != SQLITE_OK)
        return pt_db_error(reply, db);
    probe_seen(pr, st);
    sqlite3_bind_text(st, 1, pt_param(req, "amount"), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return pt_db_error(reply, db); /* the statement is left un-reset: the runtime resets it */
    if (pr->fail_after)
        return pt_reject(reply, "refused after the insert");
    return PT_OK;
}

/* twice: the same SQL twice in one call, first still on a row (nested), then after both finish. */
static int h_twice(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    probe *pr = arg;
    sqlite3_stmt *a, *b, *c;
    const char *sql = "SELECT id FROM items ORDER BY id";
    pr->n_seen = 0;
    assert_int_equal(pt_prepare(req, sql, &a), SQLITE_OK);
    probe_seen(pr, a);
    assert_int_equal(sqlite3_step(a), SQLITE_ROW); /* a is in use: a row is pending */
    assert_int_equal(pt_prepare(req, sql, &b), SQLITE_OK);
    probe_seen(pr, b);
    assert_int_equal(sqlite3_step(b), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(a, 0),
                        (const char *)sqlite3_column_text(b, 0));
    sqlite3_reset(a); /* a's use has finished: asking again may give a back */
    assert_int_equal(pt_prepare(req, sql, &c), SQLITE_OK);
    probe_seen(pr, c);
    (void)db, (void)reply;
    return PT_OK;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    bank_fixture_init(&f->b, 1);
    assert_int_equal(
        sqlite3_exec(pt_db(f->b.p), "CREATE TABLE items (id TEXT PRIMARY KEY)", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(pt_register(f->b.p, "select", h_select, NULL, NULL, &f->pr), 0);
    assert_int_equal(pt_register(f->b.p, "insert", h_insert, NULL, NULL, &f->pr), 0);
    assert_int_equal(pt_register(f->b.p, "twice", h_twice, NULL, NULL, &f->pr), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    bank_fixture_fini(&f->b);
    free(f);
    return 0;
}

/* Is st one of the runtime's own savepoint statements (which it also keeps in the cache)? */
static int runtime_sp(sqlite3_stmt *st)
{
    const char *sql = sqlite3_sql(st);
    return strncmp(sql, "SAVEPOINT ", 10) == 0 || strncmp(sql, "RELEASE ", 8) == 0 ||
           strncmp(sql, "ROLLBACK TO ", 12) == 0;
}

/* Statements open on the runtime's connection, but the runtime's savepoint statements; with
 * mine != 0, only those. */
static int stmt_count_of(participant *p, int mine)
{
    int n = 0;
    for (sqlite3_stmt *s = sqlite3_next_stmt(pt_db(p), NULL); s; s = sqlite3_next_stmt(pt_db(p), s))
        n += runtime_sp(s) == mine;
    return n;
}

static int stmt_count(participant *p)
{
    return stmt_count_of(p, 0);
}

/* Is a statement with this SQL text open on the connection? */
static int sql_open(participant *p, const char *sql)
{
    for (sqlite3_stmt *s = sqlite3_next_stmt(pt_db(p), NULL); s; s = sqlite3_next_stmt(pt_db(p), s))
        if (strcmp(sqlite3_sql(s), sql) == 0)
            return 1;
    return 0;
}

/* Runs op with param amount = value as a fresh request; returns the outcome. */
static int call(fixture *f, const char *op, const char *value)
{
    char key[32], saga[32];
    bank_reply r;
    f->seq++;
    snprintf(key, sizeof key, "k%d", f->seq);
    snprintf(saga, sizeof saga, "s%d", f->seq);
    bank_req q = {key, saga, "x", PHASE_ACTION, op, NULL, value};
    bank_call(f->b.p, &q, &r);
    int outcome = r.outcome;
    bank_reply_free(&r);
    return outcome;
}

/* The statement the handler got after its call: reset, not busy, no bindings left. */
static void assert_clean(sqlite3_stmt *st, const char *expanded_unbound)
{
    assert_false(sqlite3_stmt_busy(st));
    char *x = sqlite3_expanded_sql(st);
    assert_non_null(x);
    assert_string_equal(x, expanded_unbound);
    sqlite3_free(x);
}

/* One SQL text: prepared once, the same statement for every later request, reset and cleared. */
static void test_reuse(void **state)
{
    fixture *f = *state;
    f->pr.sql = "SELECT ?1 || '!'";
    int before = stmt_count(f->b.p);
    assert_int_equal(call(f, "select", "7"), OUTCOME_OK);
    sqlite3_stmt *first = f->pr.seen[0];
    assert_int_equal(stmt_count(f->b.p), before + 1);
    int savepoints = stmt_count_of(f->b.p, 1); /* the runtime's own, cached the same way */
    assert_int_equal(savepoints, 4);           /* SAVEPOINT and RELEASE pt_request, pt_handler */
    assert_true(sqlite3_stmt_readonly(first));
    assert_clean(first, "SELECT NULL || '!'");
    for (int i = 0; i < 5; i++) {
        assert_int_equal(call(f, "select", "8"), OUTCOME_OK);
        assert_ptr_equal(f->pr.seen[0], first);
        /* Handed out with no binding left from the request before. */
        assert_string_equal(f->pr.expanded[0], "SELECT NULL || '!'");
    }
    assert_int_equal(stmt_count(f->b.p), before + 1);
    assert_int_equal(stmt_count_of(f->b.p, 1), savepoints);
    assert_clean(first, "SELECT NULL || '!'");

    /* Several requests of one batch share it too. */
    bank_req q[3] = {{"b1", "sb1", "x", PHASE_ACTION, "select", NULL, "1"},
                     {"b2", "sb2", "x", PHASE_ACTION, "select", NULL, "2"},
                     {"b3", "sb3", "x", PHASE_ACTION, "select", NULL, "3"}};
    bank_reply r[3];
    bank_batch(f->b.p, 3, q, r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].outcome, OUTCOME_OK);
        char want[8];
        snprintf(want, sizeof want, "%d!", i + 1);
        assert_string_equal(kv_get(&r[i].result, "v"), want);
        bank_reply_free(&r[i]);
    }
    assert_ptr_equal(f->pr.seen[0], first);
    assert_int_equal(stmt_count(f->b.p), before + 1);
}

/* A statement left on a pending row by its handler is reset when the handler returns. */
static void test_reset_after_handler(void **state)
{
    fixture *f = *state;
    f->pr.sql = "SELECT id FROM items";
    f->pr.leave_row = 1;
    assert_int_equal(call(f, "insert", "a"), OUTCOME_OK);
    assert_int_equal(call(f, "insert", "b"), OUTCOME_OK);
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    assert_clean(f->pr.seen[0], "SELECT id FROM items");
    /* And the batch committed with it: the rows are there for another connection. */
    assert_int_equal(bank_query(f->b.p, "SELECT count(*) FROM items"), 2);
}

/* Different SQL texts: different statements, each reused for its own text. */
static void test_different_sql(void **state)
{
    fixture *f = *state;
    int before = stmt_count(f->b.p);
    f->pr.sql = "SELECT 1";
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    sqlite3_stmt *one = f->pr.seen[0];
    f->pr.sql = "SELECT 2";
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    sqlite3_stmt *two = f->pr.seen[0];
    assert_ptr_not_equal(one, two);
    /* A copy of the text in another buffer finds the same statement: keyed by text. */
    char copy[16];
    snprintf(copy, sizeof copy, "SELECT %d", 1);
    f->pr.sql = copy;
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    assert_ptr_equal(f->pr.seen[0], one);
    assert_int_equal(stmt_count(f->b.p), before + 2);
}

/* The same SQL twice in one call: a second statement while the first is in use, the first
 * again once it has finished. */
static void test_same_sql_in_use(void **state)
{
    fixture *f = *state;
    assert_int_equal(call(f, "insert", "a"), OUTCOME_OK);
    int before = stmt_count(f->b.p);
    assert_int_equal(call(f, "twice", NULL), OUTCOME_OK);
    assert_int_equal(f->pr.n_seen, 3);
    assert_ptr_not_equal(f->pr.seen[0], f->pr.seen[1]);
    assert_ptr_equal(f->pr.seen[2], f->pr.seen[0]);
    assert_int_equal(stmt_count(f->b.p), before + 2);
    assert_clean(f->pr.seen[0], "SELECT id FROM items ORDER BY id");
    assert_clean(f->pr.seen[1], "SELECT id FROM items ORDER BY id");
    /* The next call reuses both; nothing new is prepared. */
    assert_int_equal(call(f, "twice", NULL), OUTCOME_OK);
    assert_int_equal(stmt_count(f->b.p), before + 2);
}

/* After an SQL error (RETRY, rolled back), a refusal (REJECTED, rolled back) and a batch whose
 * COMMIT failed, the cached statement works for the next request and nothing leaked. */
static void test_after_error_and_rollback(void **state)
{
    fixture *f = *state;
    assert_int_equal(call(f, "insert", "a"), OUTCOME_OK);
    sqlite3_stmt *ins = f->pr.seen[0];
    /* Constraint error inside the handler: RETRY, nothing stored. */
    assert_int_equal(call(f, "insert", "a"), OUTCOME_RETRY);
    assert_ptr_equal(f->pr.seen[0], ins);
    assert_clean(ins, "INSERT INTO items (id) VALUES (NULL)");
    assert_int_equal(call(f, "insert", "b"), OUTCOME_OK);
    assert_ptr_equal(f->pr.seen[0], ins);
    /* Refused after its insert: the insert is rolled back with the handler's savepoint. */
    f->pr.fail_after = 1;
    assert_int_equal(call(f, "insert", "c"), OUTCOME_REJECTED);
    f->pr.fail_after = 0;
    assert_int_equal(bank_query(f->b.p, "SELECT count(*) FROM items WHERE id = 'c'"), 0);
    assert_int_equal(call(f, "insert", "c"), OUTCOME_OK);
    assert_ptr_equal(f->pr.seen[0], ins);

    /* A batch rolled back as a whole (its COMMIT fails on a deferred foreign key). */
    assert_int_equal(sqlite3_exec(pt_db(f->b.p),
                                  "PRAGMA foreign_keys = ON;"
                                  "CREATE TABLE parents (id TEXT PRIMARY KEY);"
                                  "CREATE TABLE orphans (parent TEXT REFERENCES parents (id)"
                                  " DEFERRABLE INITIALLY DEFERRED);"
                                  "CREATE TRIGGER items_orphan AFTER INSERT ON items"
                                  " WHEN NEW.id = 'orphan'"
                                  " BEGIN INSERT INTO orphans VALUES ('nobody'); END;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    bank_req q[2] = {{"r1", "sr1", "x", PHASE_ACTION, "insert", NULL, "d"},
                     {"r2", "sr2", "x", PHASE_ACTION, "insert", NULL, "orphan"}};
    bank_reply r[2];
    bank_batch(f->b.p, 2, q, r);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].outcome, OUTCOME_RETRY);
        bank_reply_free(&r[i]);
    }
    assert_ptr_equal(f->pr.seen[0], ins);
    assert_clean(ins, "INSERT INTO items (id) VALUES (NULL)");
    assert_int_equal(bank_query(f->b.p, "SELECT count(*) FROM items WHERE id = 'd'"), 0);
    assert_int_equal(call(f, "insert", "d"), OUTCOME_OK);
    assert_ptr_equal(f->pr.seen[0], ins);
    assert_int_equal(bank_query(f->b.p, "SELECT count(*) FROM items"), 4); /* a b c d */
}

/* SQL that does not prepare: its error, no statement, nothing cached; and after a schema
 * change a cached statement is re-prepared by SQLite, not broken. */
static void test_prepare_error_and_schema_change(void **state)
{
    fixture *f = *state;
    int before = stmt_count(f->b.p);
    f->pr.sql = "SELEKT 1";
    assert_int_equal(call(f, "select", NULL), OUTCOME_RETRY);
    assert_int_equal(f->pr.rc, SQLITE_ERROR);
    f->pr.sql = "SELECT * FROM items";
    assert_int_equal(call(f, "insert", "a"), OUTCOME_OK);
    before = stmt_count(f->b.p);
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    sqlite3_stmt *st = f->pr.seen[0];
    assert_int_equal(
        sqlite3_exec(pt_db(f->b.p), "ALTER TABLE items ADD COLUMN note TEXT", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    assert_ptr_equal(f->pr.seen[0], st);
    assert_int_equal(stmt_count(f->b.p), before + 1);
}

/* The cache holds at most PT_STMT_CACHE_MAX statements and drops the least recently used. */
static void test_bounded(void **state)
{
    fixture *f = *state;
    char sql[PT_STMT_CACHE_MAX + 20][32];
    int before = stmt_count(f->b.p);
    f->pr.sql = "SELECT 'kept'";
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    sqlite3_stmt *kept = f->pr.seen[0];
    for (int i = 0; i < PT_STMT_CACHE_MAX + 20; i++) {
        snprintf(sql[i], sizeof sql[i], "SELECT %d", i);
        f->pr.sql = sql[i];
        assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
        /* 'kept' is used all along: it is never the least recently used. */
        f->pr.sql = "SELECT 'kept'";
        assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
        assert_ptr_equal(f->pr.seen[0], kept);
        assert_true(stmt_count(f->b.p) - before + stmt_count_of(f->b.p, 1) <= PT_STMT_CACHE_MAX);
    }
    /* Full: the handlers' statements and the runtime's savepoints share the bound. */
    assert_int_equal(stmt_count(f->b.p) - before + stmt_count_of(f->b.p, 1), PT_STMT_CACHE_MAX);
    assert_false(sql_open(f->b.p, "SELECT 0")); /* the least recently used went first */
    assert_true(sql_open(f->b.p, sql[PT_STMT_CACHE_MAX + 19]));
}

/* pt_destroy finalizes the cache and closes; a restart prepares afresh and works. */
static void test_close_and_restart(void **state)
{
    fixture *f = *state;
    f->pr.sql = "SELECT count(*) FROM items";
    assert_int_equal(call(f, "insert", "a"), OUTCOME_OK);
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    pt_destroy(f->b.p); /* would leak the connection if a statement were left open */
    memset(&f->b.st, 0, sizeof f->b.st);
    f->b.p = bank_open_simple(f->b.dir.db, &f->b.st, NULL);
    assert_int_equal(pt_register(f->b.p, "select", h_select, NULL, NULL, &f->pr), 0);
    assert_int_equal(pt_register(f->b.p, "insert", h_insert, NULL, NULL, &f->pr), 0);
    int before = stmt_count(f->b.p);
    assert_int_equal(call(f, "select", NULL), OUTCOME_OK);
    assert_int_equal(stmt_count(f->b.p), before + 1);
    assert_int_equal(call(f, "insert", "b"), OUTCOME_OK);
    assert_int_equal(bank_query(f->b.p, "SELECT count(*) FROM items"), 2);
}

/* pt_prepare without a runtime request: SQLITE_MISUSE, no statement. */
static void test_misuse(void **state)
{
    (void)state;
    sqlite3_stmt *st = (sqlite3_stmt *)&st;
    pt_request none;
    memset(&none, 0, sizeof none);
    assert_int_equal(pt_prepare(&none, "SELECT 1", &st), SQLITE_MISUSE);
    assert_null(st);
    st = (sqlite3_stmt *)&st;
    assert_int_equal(pt_prepare(NULL, "SELECT 1", &st), SQLITE_MISUSE);
    assert_null(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_after_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_different_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_sql_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_error_and_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_error_and_schema_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_and_restart, setup, teardown),
        cmocka_unit_test(test_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
