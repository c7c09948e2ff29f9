/*
 * The participant runtime's exactly-once and barrier rules, driven through
 * pt_process_batch on the toy bank (bank.h). Every test checks the replies
 * (outcome, replayed, error, result) AND the business state (balances,
 * ledger rows, runtime rows, counters), so a rule that silently breaks
 * fails here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "pg_cluster.h"

#include "bank.h"
#include "util.h"

typedef bank_fixture fixture;

static bank_req debit(const char *key, const char *saga, const char *amount)
{
    bank_req r = {key, saga, "pay", PHASE_ACTION, "debit", "alice", amount};
    return r;
}

static bank_req credit(const char *key, const char *saga)
{
    bank_req r = {key, saga, "pay", PHASE_COMPENSATE, "credit", "alice", "30"};
    return r;
}

static int64_t rows(participant *p, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    return bank_query(p, sql);
}

static int64_t ledger(participant *p, const char *kind)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM ledger WHERE kind = '%s'", kind);
    return bank_query(p, sql);
}

/* Rule 1: the first delivery runs, stores its reply, and answers OK. */
static void test_first_delivery_ok(void **state)
{
    fixture *f = *state;
    bank_reply r;
    bank_req q = debit("s1/pay/action", "s1", "30");
    bank_call(f->p, &q, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    assert_false(r.replayed);
    assert_string_equal(r.key, "s1/pay/action");
    assert_string_equal(r.error, "");
    assert_string_equal(kv_get(&r.result, "balance"), "70");
    assert_non_null(kv_get(&r.result, "debit_id"));
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(ledger(f->p, "debit"), 1);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    assert_int_equal(rows(f->p, "pt_barrier"), 1);
    assert_int_equal(bank_query(f->p, "SELECT outcome FROM pt_idempotency"), OUTCOME_OK);
    assert_int_equal(bank_counter(f->p, "effects"), 1);
    assert_int_equal(bank_counter(f->p, "requests"), 1);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.effects, 1);
    assert_int_equal(s.replays, 0);
    bank_reply_free(&r);
}

/* Rule 2: the same key and request again is the stored reply, replayed, no effect. */
static void test_same_key_replays(void **state)
{
    fixture *f = *state;
    bank_reply a, b;
    bank_req q = debit("s1/pay/action", "s1", "30");
    bank_call(f->p, &q, &a);
    bank_call(f->p, &q, &b);
    assert_int_equal(b.outcome, OUTCOME_OK);
    assert_true(b.replayed);
    assert_true(kv_equal(&a.result, &b.result));
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(ledger(f->p, "debit"), 1);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    assert_int_equal(bank_counter(f->p, "replays"), 1);
    assert_int_equal(bank_counter(f->p, "effects"), 1);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.replays, 1);
    assert_int_equal(s.effects, 1);
    bank_reply_free(&a);
    bank_reply_free(&b);
}

/* Rule 3: the same key with other params is a CONFLICT, with no effect. */
static void test_same_key_other_params_conflict(void **state)
{
    fixture *f = *state;
    bank_reply a, b;
    bank_req q = debit("s1/pay/action", "s1", "30");
    bank_req other = debit("s1/pay/action", "s1", "40");
    bank_call(f->p, &q, &a);
    bank_call(f->p, &other, &b);
    assert_int_equal(b.outcome, OUTCOME_CONFLICT);
    assert_false(b.replayed);
    assert_non_null(strstr(b.error, "different request"));
    assert_int_equal(b.result.len, 0);
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    assert_int_equal(bank_counter(f->p, "conflicts"), 1);
    /* Other saga id under the same key: also a conflict. */
    bank_req moved = debit("s1/pay/action", "s2", "30");
    bank_reply c;
    bank_call(f->p, &moved, &c);
    assert_int_equal(c.outcome, OUTCOME_CONFLICT);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&a);
    bank_reply_free(&b);
    bank_reply_free(&c);
}

/* Another key for an already-recorded (saga, step, phase) is a CONFLICT. */
static void test_other_key_same_phase_conflict(void **state)
{
    fixture *f = *state;
    bank_reply a, b, c, d;
    bank_req q = debit("k1", "s1", "30");
    bank_req q2 = debit("k2", "s1", "30");
    bank_call(f->p, &q, &a);
    bank_call(f->p, &q2, &b);
    assert_int_equal(b.outcome, OUTCOME_CONFLICT);
    assert_non_null(strstr(b.error, "already recorded"));
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    /* The same for compensations: the second key is refused, no second credit. */
    bank_req c1 = credit("c1", "s1"), c2 = credit("c2", "s1");
    bank_call(f->p, &c1, &c);
    bank_call(f->p, &c2, &d);
    assert_int_equal(c.outcome, OUTCOME_OK);
    assert_int_equal(d.outcome, OUTCOME_CONFLICT);
    assert_int_equal(f->st.credit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    bank_reply_free(&a);
    bank_reply_free(&b);
    bank_reply_free(&c);
    bank_reply_free(&d);
}

/* Rule 5: a compensation first is SKIPPED and fences the action, which is SKIPPED later. */
static void test_compensation_before_action(void **state)
{
    fixture *f = *state;
    bank_reply c, a, a2, c2;
    bank_req cq = credit("s1/pay/compensate", "s1");
    bank_req aq = debit("s1/pay/action", "s1", "30");
    bank_call(f->p, &cq, &c);
    assert_int_equal(c.outcome, OUTCOME_SKIPPED);
    assert_false(c.replayed);
    assert_non_null(strstr(c.error, "never ran"));
    assert_int_equal(f->st.credit_calls, 0);
    assert_int_equal(
        bank_query(f->p, "SELECT count(*) FROM pt_barrier WHERE kind = 'fence' AND phase = 0"), 1);
    bank_call(f->p, &aq, &a);
    assert_int_equal(a.outcome, OUTCOME_SKIPPED);
    assert_false(a.replayed);
    assert_non_null(strstr(a.error, "fenced"));
    assert_int_equal(f->st.debit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "debit"), 0);
    /* The hanging action's SKIPPED reply is stored like any reply. */
    assert_int_equal(rows(f->p, "pt_idempotency"), 2);
    assert_int_equal(
        bank_query(f->p,
                   "SELECT outcome FROM pt_idempotency WHERE idempotency_key = 's1/pay/action'"),
        OUTCOME_SKIPPED);
    bank_call(f->p, &aq, &a2);
    bank_call(f->p, &cq, &c2);
    assert_int_equal(a2.outcome, OUTCOME_SKIPPED);
    assert_true(a2.replayed);
    assert_int_equal(c2.outcome, OUTCOME_SKIPPED);
    assert_true(c2.replayed);
    assert_int_equal(f->st.debit_calls, 0);
    assert_int_equal(f->st.credit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(bank_counter(f->p, "skipped"), 2);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.skipped, 2);
    assert_int_equal(s.replays, 2);
    bank_reply_free(&c);
    bank_reply_free(&a);
    bank_reply_free(&a2);
    bank_reply_free(&c2);
}

/* A compensation after an OK action undoes it once, with the action's result. */
static void test_compensation_after_action(void **state)
{
    fixture *f = *state;
    bank_reply a, c, c2;
    bank_req aq = debit("s1/pay/action", "s1", "30");
    bank_req cq = credit("s1/pay/compensate", "s1");
    bank_call(f->p, &aq, &a);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_call(f->p, &cq, &c);
    assert_int_equal(c.outcome, OUTCOME_OK);
    assert_false(c.replayed);
    assert_non_null(kv_get(&c.result, "credit_id"));
    assert_string_equal(f->st.last_debit_id, kv_get(&a.result, "debit_id"));
    assert_int_equal(f->st.credit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    bank_call(f->p, &cq, &c2);
    assert_int_equal(c2.outcome, OUTCOME_OK);
    assert_true(c2.replayed);
    assert_true(kv_equal(&c.result, &c2.result));
    assert_int_equal(f->st.credit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "credit"), 1);
    /* A late copy of the action replays its OK: still no second debit. */
    bank_reply a2;
    bank_call(f->p, &aq, &a2);
    assert_int_equal(a2.outcome, OUTCOME_OK);
    assert_true(a2.replayed);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(f->st.debit_calls, 1);
    bank_reply_free(&a);
    bank_reply_free(&c);
    bank_reply_free(&c2);
    bank_reply_free(&a2);
}

/* Rule 6 and the barrier: a refusal is stored and replayed; its compensation is SKIPPED. */
static void test_rejected_action_then_compensation(void **state)
{
    fixture *f = *state;
    bank_reply a, a2, c;
    bank_req aq = debit("s1/pay/action", "s1", "500");
    bank_req cq = credit("s1/pay/compensate", "s1");
    bank_call(f->p, &aq, &a);
    assert_int_equal(a.outcome, OUTCOME_REJECTED);
    assert_false(a.replayed);
    assert_non_null(strstr(a.error, "insufficient funds"));
    /* The handler wrote a ledger row before refusing: rolled back. */
    assert_int_equal(ledger(f->p, "debit"), 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    assert_int_equal(bank_counter(f->p, "rejected"), 1);
    bank_call(f->p, &aq, &a2);
    assert_int_equal(a2.outcome, OUTCOME_REJECTED);
    assert_true(a2.replayed);
    assert_string_equal(a2.error, a.error);
    assert_int_equal(f->st.debit_calls, 1);
    bank_call(f->p, &cq, &c);
    assert_int_equal(c.outcome, OUTCOME_SKIPPED);
    assert_non_null(strstr(c.error, "no effect"));
    assert_int_equal(f->st.credit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "credit"), 0);
    bank_reply_free(&a);
    bank_reply_free(&a2);
    bank_reply_free(&c);
}

/* A handler's parameter errors are business refusals naming the parameter. */
static void test_param_errors_named(void **state)
{
    fixture *f = *state;
    bank_reply a, b, c;
    bank_req missing = debit("k1", "s1", NULL);
    bank_req bad = debit("k2", "s2", "12abc");
    bank_req big = debit("k3", "s3", "1000001");
    bank_call(f->p, &missing, &a);
    bank_call(f->p, &bad, &b);
    bank_call(f->p, &big, &c);
    assert_int_equal(a.outcome, OUTCOME_REJECTED);
    assert_string_equal(a.error, "missing parameter 'amount'");
    assert_int_equal(b.outcome, OUTCOME_REJECTED);
    assert_string_equal(b.error, "parameter 'amount' must be an integer in [1, 1000000]");
    assert_int_equal(c.outcome, OUTCOME_REJECTED);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "debit"), 0);
    assert_int_equal(rows(f->p, "pt_idempotency"), 3);
    bank_reply_free(&a);
    bank_reply_free(&b);
    bank_reply_free(&c);
}

/* A string field holding a NUL byte (protobuf-c would cut "al\0ice" to
 * "al"): refused as malformed, nothing stored. */
static void test_nul_byte_refused(void **state)
{
    fixture *f = *state;
    bank_req r = debit("k1", "s1", "30");
    r.account = "alXice";
    size_t len;
    uint8_t *msg = bank_pack(&r, &len);
    uint8_t *x = memchr(msg, 'X', len);
    assert_non_null(x);
    *x = 0;
    const uint8_t *msgs[] = {msg};
    bank_reply out;
    bank_batch_raw(f->p, 1, msgs, &len, &out);
    assert_int_equal(out.outcome, OUTCOME_REJECTED);
    assert_non_null(strstr(out.error, "field 'value' contains a NUL byte"));
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "debit"), 0);
    assert_int_equal(rows(f->p, "pt_idempotency"), 0);
    bank_reply_free(&out);
    free(msg);
}

/* Rule 4 in one batch: two copies of a key give one effect; the second replays. */
static void test_two_copies_one_batch(void **state)
{
    fixture *f = *state;
    bank_reply r[2];
    bank_req q[2] = {debit("s1/pay/action", "s1", "30"), debit("s1/pay/action", "s1", "30")};
    bank_batch(f->p, 2, q, r);
    assert_int_equal(r[0].outcome, OUTCOME_OK);
    assert_false(r[0].replayed);
    assert_int_equal(r[1].outcome, OUTCOME_OK);
    assert_true(r[1].replayed);
    assert_true(kv_equal(&r[0].result, &r[1].result));
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(ledger(f->p, "debit"), 1);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    bank_reply_free(&r[0]);
    bank_reply_free(&r[1]);
}

/* Action and compensation in one batch, in both orders. */
static void test_action_and_compensation_one_batch(void **state)
{
    fixture *f = *state;
    bank_reply r[4];
    bank_req q[4] = {
        debit("s1/a", "s1", "30"), credit("s1/c", "s1"), /* undone within the batch */
        credit("s2/c", "s2"), debit("s2/a", "s2", "30"), /* fenced within the batch */
    };
    bank_batch(f->p, 4, q, r);
    assert_int_equal(r[0].outcome, OUTCOME_OK);
    assert_int_equal(r[1].outcome, OUTCOME_OK);
    assert_int_equal(r[2].outcome, OUTCOME_SKIPPED);
    assert_int_equal(r[3].outcome, OUTCOME_SKIPPED);
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(f->st.credit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(rows(f->p, "pt_idempotency"), 4);
    for (int i = 0; i < 4; i++)
        bank_reply_free(&r[i]);
}

/* A compensation names the operation that undoes the recorded action, or conflicts. */
static void test_compensation_of_other_action_conflicts(void **state)
{
    fixture *f = *state;
    bank_reply a, c, c2;
    bank_req hold = {"s1/a", "s1", "pay", PHASE_ACTION, "hold", "alice", "5"};
    bank_req wrong = credit("s1/c", "s1");
    bank_req right = {"s1/c", "s1", "pay", PHASE_COMPENSATE, "release", "alice", "5"};
    bank_call(f->p, &hold, &a);
    assert_int_equal(a.outcome, OUTCOME_OK);
    bank_call(f->p, &wrong, &c);
    assert_int_equal(c.outcome, OUTCOME_CONFLICT);
    assert_non_null(strstr(c.error, "does not undo action 'hold'"));
    assert_int_equal(f->st.credit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    /* The right compensation under the same key still runs (nothing was stored). */
    bank_call(f->p, &right, &c2);
    assert_int_equal(c2.outcome, OUTCOME_OK);
    assert_false(c2.replayed);
    assert_int_equal(f->st.release_calls, 1);
    bank_reply_free(&a);
    bank_reply_free(&c);
    bank_reply_free(&c2);
}

/* A handler's PT_RETRY stores nothing and undoes its SQL; a later delivery runs. */
static void test_handler_retry_stores_nothing(void **state)
{
    fixture *f = *state;
    bank_reply a, b;
    bank_req q = debit("s1/pay/action", "s1", "30");
    f->st.retry_remaining = 1;
    bank_call(f->p, &q, &a);
    assert_int_equal(a.outcome, OUTCOME_RETRY);
    assert_string_equal(a.error, "bank is busy");
    assert_int_equal(ledger(f->p, "debit"), 0); /* written before the retry: rolled back */
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(rows(f->p, "pt_idempotency"), 0);
    assert_int_equal(rows(f->p, "pt_barrier"), 0);
    bank_call(f->p, &q, &b);
    assert_int_equal(b.outcome, OUTCOME_OK);
    assert_false(b.replayed);
    assert_int_equal(f->st.debit_calls, 2);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(ledger(f->p, "debit"), 1);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.retries, 1);
    assert_int_equal(s.effects, 1);
    bank_reply_free(&a);
    bank_reply_free(&b);
}

/* A handler returning something that is not a pt_outcome is a RETRY, nothing stored. */
static void test_handler_invalid_outcome(void **state)
{
    fixture *f = *state;
    bank_reply a;
    bank_req q = debit("k1", "s1", "30");
    f->st.invalid_outcome = 1;
    bank_call(f->p, &q, &a);
    assert_int_equal(a.outcome, OUTCOME_RETRY);
    assert_non_null(strstr(a.error, "invalid outcome 7"));
    assert_int_equal(rows(f->p, "pt_idempotency"), 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    bank_reply_free(&a);
}

/* A result beyond the wire limits cannot be an effect: REJECTED, SQL rolled back. */
static void test_oversize_result_rejected(void **state)
{
    fixture *f = *state;
    bank_reply a, b;
    bank_req q = debit("k1", "s1", "30");
    f->st.oversize_result = 1;
    bank_call(f->p, &q, &a);
    assert_int_equal(a.outcome, OUTCOME_REJECTED);
    assert_non_null(strstr(a.error, "wire limits"));
    assert_int_equal(a.result.len, 0);
    assert_true(a.len <= WIRE_MAX_MSG);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "debit"), 0);
    bank_call(f->p, &q, &b);
    assert_int_equal(b.outcome, OUTCOME_REJECTED);
    assert_true(b.replayed);
    assert_int_equal(f->st.debit_calls, 1);
    bank_reply_free(&a);
    bank_reply_free(&b);
}

/* Rule 7: a database held by another writer answers RETRY, stores nothing, then recovers. */
static void test_db_locked_retry(void **state)
{
    fixture *f = *state;
    sqlite3 *other = NULL;
    bank_reply r[2], ok;
    bank_req q[2] = {debit("k1", "s1", "30"), debit("k2", "s2", "10")};
    assert_int_equal(sqlite3_open(f->dir.db, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    int64_t t0 = util_mono_ms();
    bank_batch(f->p, 2, q, r);
    assert_true(util_mono_ms() - t0 < 10000); /* the busy timeout is modest */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].outcome, OUTCOME_RETRY);
        assert_non_null(strstr(r[i].error, "locked"));
        assert_non_null(strstr(r[i].error, "nothing stored"));
    }
    assert_int_equal(f->st.debit_calls, 0);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(rows(f->p, "pt_idempotency"), 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    bank_call(f->p, &q[0], &ok);
    assert_int_equal(ok.outcome, OUTCOME_OK);
    assert_false(ok.replayed);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.retries, 2);
    sqlite3_close(other);
    bank_reply_free(&r[0]);
    bank_reply_free(&r[1]);
    bank_reply_free(&ok);
}

/* A handler's own SQL error makes its request RETRY (nothing stored); the rest of the
 * batch still commits. */
static int broken_handler(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    (void)req, (void)arg;
    if (pt_exec(tx, "INSERT INTO no_such_table VALUES (1)", "") != PT_DB_OK)
        return pt_tx_error(reply, tx);
    return PT_OK;
}

/* The same, on the SQLite-only API (pt_register): for test_register_rules. */
static int broken_sqlite_handler(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    (void)req, (void)arg;
    if (sqlite3_exec(db, "INSERT INTO no_such_table VALUES (1)", NULL, NULL, NULL) != SQLITE_OK)
        return pt_db_error(reply, db);
    return PT_OK;
}

static void test_handler_db_error_isolated(void **state)
{
    fixture *f = *state;
    bank_reply r[2];
    assert_int_equal(pt_register_tx(f->p, "broken", broken_handler, NULL, NULL, NULL), 0);
    bank_req q[2] = {{"b1", "s9", "x", PHASE_ACTION, "broken", NULL, NULL},
                     debit("k1", "s1", "30")};
    bank_batch(f->p, 2, q, r);
    assert_int_equal(r[0].outcome, OUTCOME_RETRY);
    assert_non_null(strstr(r[0].error, bank_on_pg() ? "does not exist" : "no such table"));
    assert_int_equal(r[1].outcome, OUTCOME_OK);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&r[0]);
    bank_reply_free(&r[1]);
}

/* Inserts a row whose deferred foreign key fails only at COMMIT. */
static int orphan_handler(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    (void)req, (void)arg;
    if (pt_exec(tx, "INSERT INTO orphans(parent) VALUES ('nobody')", "") != PT_DB_OK)
        return pt_tx_error(reply, tx);
    return PT_OK;
}

/* A failing COMMIT turns every reply of the batch into RETRY, with nothing stored. */
static void test_commit_failure_all_retry(void **state)
{
    fixture *f = *state;
    bank_reply r[2], ok;
    if (!bank_on_pg()) /* a PRAGMA outside any transaction; PostgreSQL always checks */
        assert_int_equal(sqlite3_exec(pt_db(f->p), "PRAGMA foreign_keys = ON", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_equal(bank_sql(f->p, "CREATE TABLE parents(id TEXT PRIMARY KEY);"
                                    "CREATE TABLE orphans(parent TEXT REFERENCES parents(id)"
                                    " DEFERRABLE INITIALLY DEFERRED);"),
                     0);
    assert_int_equal(pt_register_tx(f->p, "orphan", orphan_handler, NULL, NULL, NULL), 0);
    bank_req q[2] = {debit("k1", "s1", "30"),
                     {"o1", "s2", "x", PHASE_ACTION, "orphan", NULL, NULL}};
    bank_batch(f->p, 2, q, r);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].outcome, OUTCOME_RETRY);
        assert_false(r[i].replayed);
        assert_non_null(strstr(r[i].error, "COMMIT"));
        assert_int_equal(r[i].result.len, 0);
    }
    assert_int_equal(f->st.debit_calls, 1); /* it ran, but its effect was rolled back */
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(ledger(f->p, "debit"), 0);
    assert_int_equal(rows(f->p, "pt_idempotency"), 0);
    assert_int_equal(rows(f->p, "orphans"), 0);
    assert_int_equal(bank_counter(f->p, "requests"), 0);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.effects, 0);
    assert_int_equal(s.retries, 2);
    /* The debit alone then commits: the failed batch left nothing behind. */
    bank_call(f->p, &q[0], &ok);
    assert_int_equal(ok.outcome, OUTCOME_OK);
    assert_false(ok.replayed);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&r[0]);
    bank_reply_free(&r[1]);
    bank_reply_free(&ok);
}

/* Rule 2 after a restart: the record survives pt_destroy + pt_create. */
static void test_restart_replay_survives(void **state)
{
    fixture *f = *state;
    bank_reply a, b;
    bank_req q = debit("s1/pay/action", "s1", "30");
    bank_call(f->p, &q, &a);
    pt_destroy(f->p);
    memset(&f->st, 0, sizeof f->st);
    f->p = bank_open_simple(f->dir.db, &f->st, NULL);
    bank_call(f->p, &q, &b);
    assert_int_equal(b.outcome, OUTCOME_OK);
    assert_true(b.replayed);
    assert_true(kv_equal(&a.result, &b.result));
    assert_int_equal(f->st.debit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    /* Persisted counters span both runs; in-memory ones start again. */
    assert_int_equal(bank_counter(f->p, "effects"), 1);
    assert_int_equal(bank_counter(f->p, "replays"), 1);
    assert_int_equal(bank_counter(f->p, "requests"), 2);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.effects, 0);
    assert_int_equal(s.replays, 1);
    bank_reply_free(&a);
    bank_reply_free(&b);
}

/* Rewrites every stored record as a runtime of protocol 1 wrote it: outcomes
 * numbered from OK = 0, in the column and inside the stored reply. */
static void downgrade_to_protocol_1(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *rows, *update;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT rowid, reply FROM pt_idempotency", -1, &rows, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE pt_idempotency SET outcome = outcome - 1, "
                                        "reply = ?1 WHERE rowid = ?2",
                                        -1, &update, NULL),
                     SQLITE_OK);
    while (sqlite3_step(rows) == SQLITE_ROW) {
        StepReply *r = saga__v1__step_reply__unpack(NULL, (size_t)sqlite3_column_bytes(rows, 1),
                                                    sqlite3_column_blob(rows, 1));
        assert_non_null(r);
        r->outcome = (Saga__V1__Outcome)(r->outcome - 1);
        uint8_t buf[4096];
        size_t len = saga__v1__step_reply__pack(r, buf);
        saga__v1__step_reply__free_unpacked(r, NULL);
        sqlite3_bind_blob(update, 1, buf, (int)len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(update, 2, sqlite3_column_int64(rows, 0));
        assert_int_equal(sqlite3_step(update), SQLITE_DONE);
        sqlite3_reset(update);
    }
    sqlite3_finalize(rows);
    sqlite3_finalize(update);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE pt_meta", NULL, NULL, NULL), SQLITE_OK);
    /* The service's own use of user_version is none of the runtime's business. */
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/*
 * A database of protocol 1 (OK = 0) is renumbered at open: a replay answers
 * OK, not "no outcome", and a compensation still finds its action done.
 */
static void test_protocol_1_records_renumbered(void **state)
{
    fixture *f = *state;
    bank_reply a, b, c;
    bank_req q = debit("s1/pay/action", "s1", "30");
    bank_req r = {"s2/pay/action", "s2", "pay", PHASE_ACTION, "debit", "alice", "900"};
    bank_call(f->p, &q, &a);
    bank_call(f->p, &r, &c);
    assert_int_equal(c.outcome, OUTCOME_REJECTED);
    bank_reply_free(&c);
    pt_destroy(f->p);
    downgrade_to_protocol_1(f->dir.db);
    memset(&f->st, 0, sizeof f->st);
    f->p = bank_open_simple(f->dir.db, &f->st, NULL);
    assert_non_null(f->p);
    bank_call(f->p, &q, &b);
    assert_int_equal(b.outcome, OUTCOME_OK);
    assert_true(b.replayed);
    bank_call(f->p, &r, &c);
    assert_int_equal(c.outcome, OUTCOME_REJECTED);
    assert_true(c.replayed);
    bank_reply_free(&c);
    bank_req undo = credit("s1/pay/compensate", "s1");
    bank_call(f->p, &undo, &c);
    assert_int_equal(c.outcome, OUTCOME_OK);
    assert_int_equal(f->st.credit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(bank_query(f->p, "SELECT value FROM pt_meta WHERE name = 'schema'"), 1);
    assert_int_equal(bank_query(f->p, "PRAGMA user_version"), 7);
    bank_reply_free(&a);
    bank_reply_free(&b);
    bank_reply_free(&c);
}

/* Rule 8: the purge deletes only expired records, in batches, with their barrier rows. */
static void test_purge_old_records_in_batches(void **state)
{
    fixture *f = *state;
    pt_destroy(f->p);
    pt_options o = {.name = "bank", .retention_ms = 5000, .purge_batch = 2};
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    bank_reply r[6];
    bank_req q[6] = {
        debit("old1", "o1", "10"), debit("old2", "o2", "10"), credit("oldc", "o3"), /* fence */
        debit("new1", "n1", "10"), debit("new2", "n2", "10"), credit("newc", "n3"),
    };
    bank_batch(f->p, 6, q, r);
    for (int i = 0; i < 6; i++)
        bank_reply_free(&r[i]);
    assert_int_equal(rows(f->p, "pt_idempotency"), 6);
    assert_int_equal(rows(f->p, "pt_barrier"), 8); /* 6 records + 2 fences */
    assert_int_equal(pt_purge_once(f->p, util_wall_ms()), 0);
    assert_int_equal(bank_sql(f->p, "UPDATE pt_idempotency SET created_at = created_at - 10000"
                                    " WHERE idempotency_key LIKE 'old%'"),
                     0);
    int64_t now = util_wall_ms();
    assert_int_equal(pt_purge_once(f->p, now), 2);
    assert_int_equal(rows(f->p, "pt_idempotency"), 4);
    assert_int_equal(pt_purge_once(f->p, now), 1);
    assert_int_equal(pt_purge_once(f->p, now), 0);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM pt_idempotency"
                                      " WHERE idempotency_key LIKE 'old%'"),
                     0);
    assert_int_equal(rows(f->p, "pt_idempotency"), 3);
    /* The old records' barrier rows and the old fence went with them. */
    assert_int_equal(rows(f->p, "pt_barrier"), 4);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM pt_barrier"
                                      " WHERE saga_id LIKE 'o%'"),
                     0);
    assert_int_equal(bank_counter(f->p, "purged"), 3);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.purged, 3);
    /* The records within retention still replay. */
    bank_reply again;
    bank_call(f->p, &q[3], &again);
    assert_true(again.replayed);
    assert_int_equal(bank_balance(f->p, "alice"), 60);
    bank_reply_free(&again);
}

/*
 * An action's record purged before its compensation's (it is older): a very
 * late copy of the action must not run again while the compensation is on
 * record — the compensation's barrier row fences it.
 */
static void test_late_action_after_purge_still_fenced(void **state)
{
    fixture *f = *state;
    pt_destroy(f->p);
    pt_options o = {.name = "bank", .retention_ms = 5000};
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    bank_reply a, c, late;
    bank_req aq = debit("s1/pay/action", "s1", "30");
    bank_req cq = credit("s1/pay/compensate", "s1");
    bank_call(f->p, &aq, &a);
    bank_call(f->p, &cq, &c);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(bank_sql(f->p, "UPDATE pt_idempotency SET created_at = created_at - 10000"
                                    " WHERE idempotency_key = 's1/pay/action'"),
                     0);
    assert_int_equal(pt_purge_once(f->p, util_wall_ms()), 1);
    bank_call(f->p, &aq, &late);
    assert_int_equal(late.outcome, OUTCOME_SKIPPED);
    assert_non_null(strstr(late.error, "fenced"));
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    bank_reply_free(&a);
    bank_reply_free(&c);
    bank_reply_free(&late);
}

/*
 * Rule 9: a request of a saga whose v7 id says it began longer ago than the
 * retention runs nothing. A key still on record is replayed (the truth, even
 * if late); one without a record answers CONFLICT, never REJECTED: REJECTED
 * would tell sagad the action had no effect, and its compensation would be
 * skipped although the effect may have happened and its record been purged.
 */
static void test_saga_older_than_retention_refused(void **state)
{
    fixture *f = *state;
    char old_id[37], young_id[37], kept_id[37], old_key[64], young_key[64], comp_key[64],
        kept_key[64];
    assert_int_equal(util_uuid7_at(util_wall_ms() - 61000, old_id), 0);
    assert_int_equal(util_uuid7_at(util_wall_ms() - 50000, young_id), 0);
    assert_int_equal(util_uuid7_at(util_wall_ms() - 61000, kept_id), 0);
    snprintf(old_key, sizeof old_key, "%s/pay/action", old_id);
    snprintf(comp_key, sizeof comp_key, "%s/pay/compensate", old_id);
    snprintf(young_key, sizeof young_key, "%s/pay/action", young_id);
    snprintf(kept_key, sizeof kept_key, "%s/pay/action", kept_id);

    /* Under a longer retention, kept_id's debit ran and is on record. */
    pt_destroy(f->p);
    pt_options longer = {.name = "bank", .retention_ms = 120000};
    f->p = bank_open(&longer, f->dir.db, &f->st);
    assert_non_null(f->p);
    bank_reply r;
    bank_req kept = debit(kept_key, kept_id, "10");
    bank_call(f->p, &kept, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    bank_reply_free(&r);
    pt_destroy(f->p);
    pt_options o = {.name = "bank", .retention_ms = 60000};
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    memset(&f->st, 0, sizeof f->st);

    bank_req old = debit(old_key, old_id, "10");
    bank_call(f->p, &old, &r);
    assert_int_equal(r.outcome, OUTCOME_CONFLICT);
    assert_non_null(strstr(r.error, "longer than this participant's retention of 60 s"));
    bank_reply_free(&r);
    bank_req comp = credit(comp_key, old_id);
    bank_call(f->p, &comp, &r);
    assert_int_equal(r.outcome, OUTCOME_CONFLICT);
    bank_reply_free(&r);
    /* On record: replayed, not refused. */
    bank_call(f->p, &kept, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    assert_true(r.replayed);
    bank_reply_free(&r);
    assert_int_equal(f->st.debit_calls + f->st.credit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 90);
    /* Nothing on record for the refused ones, not even a barrier row. */
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    assert_int_equal(rows(f->p, "pt_barrier"), 1);
    pt_stats st;
    pt_get_stats(f->p, &st);
    assert_int_equal(st.outlived, 2);

    bank_req young = debit(young_key, young_id, "10");
    bank_call(f->p, &young, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    bank_reply_free(&r);
    assert_int_equal(bank_balance(f->p, "alice"), 80);
}

/* pt_register refuses duplicates, clashing and invalid names, and half pairs. */
static void test_register_rules(void **state)
{
    fixture *f = *state;
    assert_int_equal(pt_register_tx(f->p, "debit", broken_handler, NULL, NULL, NULL), -1);
    assert_int_equal(pt_register_tx(f->p, "x", broken_handler, "credit", broken_handler, NULL), -1);
    assert_int_equal(pt_register_tx(f->p, "y", broken_handler, "y", broken_handler, NULL), -1);
    assert_int_equal(pt_register_tx(f->p, "", broken_handler, NULL, NULL, NULL), -1);
    assert_int_equal(pt_register_tx(f->p, "z", NULL, NULL, NULL, NULL), -1);
    assert_int_equal(pt_register_tx(f->p, "z", broken_handler, "zz", NULL, NULL), -1);
    char longname[WIRE_MAX_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(pt_register_tx(f->p, longname, broken_handler, NULL, NULL, NULL), -1);
    /* The refused "x" did not half-register. */
    assert_int_equal(pt_register_tx(f->p, "x", broken_handler, NULL, NULL, NULL), 0);
    /* A SQLite-only handler is refused on PostgreSQL, accepted on SQLite. */
    assert_int_equal(pt_register(f->p, "raw", broken_sqlite_handler, NULL, NULL, NULL),
                     bank_on_pg() ? -1 : 0);
}

/* ---- PostgreSQL only ----------------------------------------------------- */

/*
 * Rule 7 on PostgreSQL: the server down answers RETRY with nothing stored,
 * the participant keeps serving, and the next batch after the server is
 * back reconnects and commits.
 */
static void test_pg_server_down_retry(void **state)
{
    fixture *f = *state;
    bank_reply r, ok, again;
    bank_req q = debit("k1", "s1", "30");
    assert_int_equal(pgc_stop_server(bank_pg_cluster()), 0);
    bank_call(f->p, &q, &r);
    assert_int_equal(r.outcome, OUTCOME_RETRY);
    assert_non_null(strstr(r.error, "nothing stored"));
    assert_int_equal(f->st.debit_calls, 0);
    bank_call(f->p, &q, &again); /* still down: still RETRY, no crash */
    assert_int_equal(again.outcome, OUTCOME_RETRY);
    assert_int_equal(pgc_start_server(bank_pg_cluster()), 0);
    bank_call(f->p, &q, &ok);
    assert_int_equal(ok.outcome, OUTCOME_OK);
    assert_false(ok.replayed);
    assert_int_equal(f->st.debit_calls, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(rows(f->p, "pt_idempotency"), 1);
    bank_reply_free(&r);
    bank_reply_free(&again);
    bank_reply_free(&ok);
}

/* One replica's batches of the same new key, run on its own thread. */
typedef struct {
    participant *p;
    const bank_req *reqs;
    size_t n;
    bank_reply out[16];
} replica_run;

static void *replica_thread(void *arg)
{
    replica_run *r = arg;
    bank_batch(r->p, r->n, r->reqs, r->out);
    return NULL;
}

/*
 * Rule 4 across replicas: two participants on ONE database (two
 * connections, as two processes of a service would have), each receiving 8
 * copies of the same new key at the same moment, and then 8 copies of a
 * compensation racing its action: one effect, every other copy replayed or
 * RETRY, never a second effect; the retries then replay the stored reply.
 */
static void test_pg_two_replicas_same_key(void **state)
{
    fixture *f = *state;
    bank_state st2;
    memset(&st2, 0, sizeof st2);
    participant *p2 = bank_open_simple(f->dir.db, &st2, NULL);
    bank_req q[8];
    for (int i = 0; i < 8; i++)
        q[i] = debit("k1", "s1", "30");
    replica_run a = {f->p, q, 8, {{0}}}, b = {p2, q, 8, {{0}}};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, replica_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, replica_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(f->st.debit_calls + st2.debit_calls >= 1, 1);
    assert_int_equal(bank_balance(f->p, "alice"), 70); /* one effect */
    assert_int_equal(ledger(f->p, "debit"), 1);
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        const bank_reply *rs[2] = {&a.out[i], &b.out[i]};
        for (int k = 0; k < 2; k++) {
            assert_true(rs[k]->outcome == OUTCOME_OK || rs[k]->outcome == OUTCOME_RETRY);
            ok += rs[k]->outcome == OUTCOME_OK && !rs[k]->replayed;
        }
    }
    assert_int_equal(ok, 1);
    /* A retry of the key on either replica replays the one stored reply. */
    bank_reply r1, r2;
    bank_call(f->p, &q[0], &r1);
    bank_call(p2, &q[0], &r2);
    assert_int_equal(r1.outcome, OUTCOME_OK);
    assert_true(r1.replayed);
    assert_int_equal(r2.outcome, OUTCOME_OK);
    assert_true(r2.replayed);
    assert_string_equal(kv_get(&r1.result, "debit_id"), kv_get(&r2.result, "debit_id"));

    /* An action and its null compensation racing on the two replicas: the
     * barrier rows' key admits one of them; never an effect left uncompensated. */
    bank_req act = debit("s2/act", "s2", "10"), comp = credit("s2/comp", "s2");
    act.step = comp.step = "pay";
    replica_run ra = {f->p, &act, 1, {{0}}}, rc = {p2, &comp, 1, {{0}}};
    assert_int_equal(pthread_create(&ta, NULL, replica_thread, &ra), 0);
    assert_int_equal(pthread_create(&tb, NULL, replica_thread, &rc), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    /* Retry whatever answered RETRY until both have final answers. */
    for (int round = 0;
         round < 20 && (ra.out[0].outcome == OUTCOME_RETRY || rc.out[0].outcome == OUTCOME_RETRY);
         round++) {
        if (ra.out[0].outcome == OUTCOME_RETRY) {
            bank_reply_free(&ra.out[0]);
            bank_call(f->p, &act, &ra.out[0]);
        }
        if (rc.out[0].outcome == OUTCOME_RETRY) {
            bank_reply_free(&rc.out[0]);
            bank_call(p2, &comp, &rc.out[0]);
        }
    }
    int acted = ra.out[0].outcome == OUTCOME_OK;
    if (acted) /* the action ran first: the compensation undid it */
        assert_int_equal(rc.out[0].outcome, OUTCOME_OK);
    else /* the compensation came first: both skipped */
        assert_true(ra.out[0].outcome == OUTCOME_SKIPPED && rc.out[0].outcome == OUTCOME_SKIPPED);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    for (int i = 0; i < 8; i++) {
        bank_reply_free(&a.out[i]);
        bank_reply_free(&b.out[i]);
    }
    bank_reply_free(&ra.out[0]);
    bank_reply_free(&rc.out[0]);
    bank_reply_free(&r1);
    bank_reply_free(&r2);
    pt_destroy(p2);
}

#define T(t) cmocka_unit_test_setup_teardown(t, bank_fixture_setup_open, bank_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_first_delivery_ok),
        T(test_same_key_replays),
        T(test_same_key_other_params_conflict),
        T(test_other_key_same_phase_conflict),
        T(test_compensation_before_action),
        T(test_compensation_after_action),
        T(test_rejected_action_then_compensation),
        T(test_param_errors_named),
        T(test_nul_byte_refused),
        T(test_two_copies_one_batch),
        T(test_action_and_compensation_one_batch),
        T(test_compensation_of_other_action_conflicts),
        T(test_handler_retry_stores_nothing),
        T(test_handler_invalid_outcome),
        T(test_oversize_result_rejected),
        T(test_db_locked_retry),
        T(test_handler_db_error_isolated),
        T(test_commit_failure_all_retry),
        T(test_restart_replay_survives),
        T(test_protocol_1_records_renumbered),
        T(test_purge_old_records_in_batches),
        T(test_late_action_after_purge_still_fenced),
        T(test_saga_older_than_retention_refused),
        T(test_register_rules),
    };
    /* SAGA_TEST_DATABASE=postgresql (the _pg entry in CMakeLists.txt): the
     * rules again on one private PostgreSQL cluster, minus what is about
     * SQLite's files, plus what only a server has (going away, replicas). */
    const struct CMUnitTest pg_tests[] = {
        T(test_first_delivery_ok),
        T(test_same_key_replays),
        T(test_same_key_other_params_conflict),
        T(test_other_key_same_phase_conflict),
        T(test_compensation_before_action),
        T(test_compensation_after_action),
        T(test_rejected_action_then_compensation),
        T(test_param_errors_named),
        T(test_nul_byte_refused),
        T(test_two_copies_one_batch),
        T(test_action_and_compensation_one_batch),
        T(test_compensation_of_other_action_conflicts),
        T(test_handler_retry_stores_nothing),
        T(test_handler_invalid_outcome),
        T(test_oversize_result_rejected),
        T(test_handler_db_error_isolated),
        T(test_commit_failure_all_retry),
        T(test_restart_replay_survives),
        T(test_purge_old_records_in_batches),
        T(test_late_action_after_purge_still_fenced),
        T(test_saga_older_than_retention_refused),
        T(test_register_rules),
        T(test_pg_server_down_retry),
        T(test_pg_two_replicas_same_key),
    };
    if (bank_on_pg())
        return cmocka_run_group_tests_name("runtime_rules_pg", pg_tests, NULL, NULL);
    return cmocka_run_group_tests_name("runtime_rules", tests, NULL, NULL);
}
