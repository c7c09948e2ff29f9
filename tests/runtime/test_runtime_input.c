/*
 * Hostile and malformed input to the participant runtime: every bad
 * message is answered OUTCOME_REJECTED with an error naming the problem,
 * counted as malformed, and leaves the database untouched (not even a
 * transaction: it is answered while another connection holds the write
 * lock); good requests in the same batch are unaffected.
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

typedef bank_fixture fixture;

static int64_t records(participant *p)
{
    return bank_query(p, "SELECT count(*) FROM pt_idempotency");
}

/* Sends one raw message; asserts REJECTED naming `names`, no effect, DB unchanged. */
static void expect_rejected(fixture *f, const uint8_t *msg, size_t len, const char *names)
{
    pt_stats before, after;
    int changes = sqlite3_total_changes(pt_db(f->p));
    int64_t n = records(f->p);
    bank_reply r;
    pt_get_stats(f->p, &before);
    bank_batch_raw(f->p, 1, &msg, &len, &r);
    pt_get_stats(f->p, &after);
    assert_int_equal(r.outcome, OUTCOME_REJECTED);
    assert_false(r.replayed);
    if (strstr(r.error, names) == NULL)
        fail_msg("error '%s' does not name '%s'", r.error, names);
    assert_int_equal(r.result.len, 0);
    assert_int_equal(after.malformed, before.malformed + 1);
    assert_int_equal(after.requests, before.requests);
    assert_int_equal(sqlite3_total_changes(pt_db(f->p)), changes);
    assert_int_equal(records(f->p), n);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(f->st.debit_calls + f->st.credit_calls, 0);
    bank_reply_free(&r);
}

/* Packs a request with the given fields and alice/30 params. */
static uint8_t *pack(const char *key, const char *saga, const char *step, int phase, const char *op,
                     size_t *len)
{
    bank_req q = {key, saga, step, phase, op, "alice", "30"};
    return bank_pack(&q, len);
}

static void test_empty_message(void **state)
{
    fixture *f = *state;
    static const uint8_t nothing[1] = {0};
    expect_rejected(f, nothing, 0, "empty message");
}

static void test_garbage_bytes(void **state)
{
    fixture *f = *state;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x13};
    expect_rejected(f, garbage, sizeof garbage, "malformed message");
}

static void test_truncated_message(void **state)
{
    fixture *f = *state;
    size_t len;
    uint8_t *msg = pack("s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", &len);
    expect_rejected(f, msg, len - 3, "malformed message"); /* cut inside a param value */
    free(msg);
}

static void test_key_length_limit(void **state)
{
    fixture *f = *state;
    char key[WIRE_MAX_KEY + 2];
    size_t len;
    memset(key, 'k', WIRE_MAX_KEY + 1);
    key[WIRE_MAX_KEY + 1] = '\0';
    uint8_t *msg = pack(key, "s1", "pay", PHASE_ACTION, "debit", &len);
    expect_rejected(f, msg, len, "idempotency_key is 256 bytes");
    free(msg);
    /* 255 bytes is the limit, and accepted. */
    key[WIRE_MAX_KEY] = '\0';
    bank_req ok = {key, "s1", "pay", PHASE_ACTION, "debit", "alice", "30"};
    bank_reply r;
    bank_call(f->p, &ok, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    assert_string_equal(r.key, key);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&r);
}

static void test_missing_fields(void **state)
{
    fixture *f = *state;
    size_t len;
    uint8_t *msg;
    msg = pack("", "s1", "pay", PHASE_ACTION, "debit", &len);
    expect_rejected(f, msg, len, "missing idempotency_key");
    free(msg);
    msg = pack("k", "", "pay", PHASE_ACTION, "debit", &len);
    expect_rejected(f, msg, len, "missing saga_id");
    free(msg);
    msg = pack("k", "s1", "", PHASE_ACTION, "debit", &len);
    expect_rejected(f, msg, len, "missing step");
    free(msg);
    msg = pack("k", "s1", "pay", PHASE_ACTION, "", &len);
    expect_rejected(f, msg, len, "missing operation");
    free(msg);
}

static void test_unknown_operation(void **state)
{
    fixture *f = *state;
    size_t len;
    uint8_t *msg;
    msg = pack("k", "s1", "pay", PHASE_ACTION, "steal", &len);
    expect_rejected(f, msg, len, "unknown operation 'steal'");
    free(msg);
    /* A compensation's name is not an action, and the other way round. */
    msg = pack("k", "s1", "pay", PHASE_ACTION, "credit", &len);
    expect_rejected(f, msg, len, "unknown operation 'credit' for phase action");
    free(msg);
    msg = pack("k", "s1", "pay", PHASE_COMPENSATE, "debit", &len);
    expect_rejected(f, msg, len, "unknown operation 'debit' for phase compensate");
    free(msg);
}

static void test_unknown_phase(void **state)
{
    fixture *f = *state;
    size_t len;
    uint8_t *msg = pack("k", "s1", "pay", 7, "debit", &len);
    expect_rejected(f, msg, len, "unknown phase 7");
    free(msg);
}

static void test_params_limits(void **state)
{
    fixture *f = *state;
    kvmap params = KVMAP_INIT;
    size_t len;
    char name[16];
    for (int i = 0; i <= WIRE_MAX_PARAMS; i++) {
        snprintf(name, sizeof name, "p%02d", i);
        assert_int_equal(kv_set(&params, name, "v"), 0);
    }
    uint8_t *msg = wire_pack_request("k", "s1", "pay", PHASE_ACTION, "debit", 1, &params, &len);
    expect_rejected(f, msg, len, "65 params");
    free(msg);
    kv_free(&params);

    char *value = malloc(WIRE_MAX_VALUE + 2);
    assert_non_null(value);
    memset(value, 'v', WIRE_MAX_VALUE + 1);
    value[WIRE_MAX_VALUE + 1] = '\0';
    assert_int_equal(kv_set(&params, "memo", value), 0);
    msg = wire_pack_request("k", "s1", "pay", PHASE_ACTION, "debit", 1, &params, &len);
    expect_rejected(f, msg, len, "param 'memo' is longer");
    free(msg);
    free(value);
    kv_free(&params);

    char longname[WIRE_MAX_NAME + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(kv_set(&params, longname, "v"), 0);
    msg = wire_pack_request("k", "s1", "pay", PHASE_ACTION, "debit", 1, &params, &len);
    expect_rejected(f, msg, len, "param name is 65 bytes");
    free(msg);
    kv_free(&params);
}

static void test_duplicate_param(void **state)
{
    fixture *f = *state;
    StepRequest req = SAGA__V1__STEP_REQUEST__INIT;
    Saga__V1__StepRequest__ParamsEntry e[2] = {SAGA__V1__STEP_REQUEST__PARAMS_ENTRY__INIT,
                                               SAGA__V1__STEP_REQUEST__PARAMS_ENTRY__INIT};
    Saga__V1__StepRequest__ParamsEntry *ptrs[2] = {&e[0], &e[1]};
    e[0].key = e[1].key = "amount";
    e[0].value = "1";
    e[1].value = "100";
    req.idempotency_key = "k";
    req.saga_id = "s1";
    req.step = "pay";
    req.operation = "debit";
    req.n_params = 2;
    req.params = ptrs;
    uint8_t buf[256];
    size_t len = saga__v1__step_request__pack(&req, buf);
    expect_rejected(f, buf, len, "param 'amount' given twice");
}

static void test_oversized_message(void **state)
{
    fixture *f = *state;
    size_t len = WIRE_MAX_MSG + 1;
    uint8_t *msg = calloc(1, len);
    assert_non_null(msg);
    expect_rejected(f, msg, len, "larger than 65536");
    free(msg);
}

/* Bytes from the peer never reach a log line or an error raw. */
static void test_control_chars_sanitized(void **state)
{
    fixture *f = *state;
    size_t len;
    uint8_t *msg = pack("k", "s1", "pay", PHASE_ACTION, "x\ny\x1b[2J", &len);
    expect_rejected(f, msg, len, "unknown operation 'x?y?[2J'");
    free(msg);
}

/* Malformed messages are answered without the database: even while it is
 * locked. (An unknown operation is not among them: its key is looked up
 * first, rule 3, so it waits for the database like any request.) */
static void test_malformed_never_touches_db(void **state)
{
    fixture *f = *state;
    sqlite3 *other = NULL;
    static const uint8_t garbage[] = {0x0a, 0xff};
    size_t len;
    uint8_t *unknown = pack("k", "s1", "pay", 7, "debit", &len); /* no phase 7 */
    const uint8_t *msgs[2] = {garbage, unknown};
    size_t lens[2] = {sizeof garbage, len};
    bank_reply r[2];
    assert_int_equal(sqlite3_open(f->dir.db, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    int64_t t0 = util_mono_ms();
    bank_batch_raw(f->p, 2, msgs, lens, r);
    assert_true(util_mono_ms() - t0 < 1000); /* no wait on the busy timeout */
    assert_int_equal(r[0].outcome, OUTCOME_REJECTED);
    assert_int_equal(r[1].outcome, OUTCOME_REJECTED);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    free(unknown);
    bank_reply_free(&r[0]);
    bank_reply_free(&r[1]);
}

/* One bad message does not spoil the batch it arrived in. */
static void test_malformed_in_good_batch(void **state)
{
    fixture *f = *state;
    static const uint8_t garbage[] = {0xff, 0x01};
    size_t len;
    uint8_t *good = pack("s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", &len);
    const uint8_t *msgs[3] = {garbage, good, garbage};
    size_t lens[3] = {sizeof garbage, len, sizeof garbage};
    bank_reply r[3];
    bank_batch_raw(f->p, 3, msgs, lens, r);
    assert_int_equal(r[0].outcome, OUTCOME_REJECTED);
    assert_int_equal(r[1].outcome, OUTCOME_OK);
    assert_string_equal(r[1].key, "s1/pay/action");
    assert_int_equal(r[2].outcome, OUTCOME_REJECTED);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(records(f->p), 1);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.malformed, 2);
    assert_int_equal(s.requests, 1);
    free(good);
    for (int i = 0; i < 3; i++)
        bank_reply_free(&r[i]);
}

/* Random bytes and mutations of a valid request: always a decodable reply, never an effect
 * unless the mutation is still a valid debit. A small fuzz pass for the sanitizer builds. */
static void test_random_input(void **state)
{
    fixture *f = *state;
    util_prng rng;
    util_prng_seed(&rng, 20261122);
    size_t good_len;
    uint8_t *good = pack("s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", &good_len);
    uint8_t buf[512];
    for (int round = 0; round < 400; round++) {
        size_t len;
        if (round % 2 == 0) {
            len = 1 + util_prng_next(&rng) % sizeof buf;
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)util_prng_next(&rng);
        } else {
            len = good_len;
            memcpy(buf, good, len);
            for (int k = 0; k < 3; k++)
                buf[util_prng_next(&rng) % len] = (uint8_t)util_prng_next(&rng);
        }
        const uint8_t *m = buf;
        bank_reply r;
        bank_batch_raw(f->p, 1, &m, &len, &r);
        assert_true(r.outcome == OUTCOME_REJECTED || r.outcome == OUTCOME_OK ||
                    r.outcome == OUTCOME_CONFLICT || r.outcome == OUTCOME_SKIPPED);
        bank_reply_free(&r);
    }
    /* Whatever got through, money is conserved: balances + net committed debits = 100. */
    int64_t debited = bank_query(f->p, "SELECT coalesce(sum(CASE kind WHEN 'debit'"
                                              " THEN amount ELSE -amount END), 0) FROM ledger");
    int64_t balances = bank_query(f->p, "SELECT sum(balance) FROM accounts");
    assert_int_equal(balances + debited, 100);
    free(good);
}

#define T(t) cmocka_unit_test_setup_teardown(t, bank_fixture_setup_open, bank_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_empty_message),           T(test_garbage_bytes),
        T(test_truncated_message),       T(test_key_length_limit),
        T(test_missing_fields),          T(test_unknown_operation),
        T(test_unknown_phase),           T(test_params_limits),
        T(test_duplicate_param),         T(test_oversized_message),
        T(test_control_chars_sanitized), T(test_malformed_never_touches_db),
        T(test_malformed_in_good_batch), T(test_random_input),
    };
    return cmocka_run_group_tests_name("runtime_input", tests, NULL, NULL);
}
