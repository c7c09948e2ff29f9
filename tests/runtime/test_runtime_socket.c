/*
 * The participant runtime over its nng socket: concurrent copies of one
 * request from several req0 clients give exactly one effect; the ipc socket
 * file is owner-only; an oversized message makes nng hang up and the
 * service keeps serving; malformed bytes get a REJECTED reply; the
 * frames of several requests are answered with a frame of their replies;
 * drop_reply and delay faults behave (the delay never blocks serving);
 * the purge runs on the worker and hands serving back without stranding a
 * request; start and stop are well-behaved. (Stopping while many clients
 * close their sockets is not tested here: it can hang in nng 1.5.2's own
 * socket reaper, upstream nanomsg/nng#1543; see docs/PARTICIPANTS.md.)
 *
 * Client threads record what they saw; only the main thread asserts
 * (cmocka is not thread-safe).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "bank.h"
#include "harness.h"
#include "util.h"

#define CLIENTS 8
#define ROUNDS  5

typedef bank_fixture fixture;

/* Opens the bank with opts on the fixture's db and ipc URL, and starts it. */
/* A one-row integer query on a connection of the test's own (-1 on error). */
static int64_t reader_query(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void start_bank(fixture *f, pt_options o)
{
    char err[256] = "";
    o.name = "bank";
    o.listen_url = f->dir.ipc;
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    if (pt_start(f->p, err, sizeof err) != 0)
        fail_msg("pt_start: %s", err);
}

/* ---- A client ---------------------------------------------------------- */

typedef struct {
    const char *url;
    const uint8_t *msg;
    size_t len;
    int timeout_ms;
    /* start gate shared by a group of clients */
    nng_mtx *mtx;
    nng_cv *cv;
    int *go;
    int *ready;
    /* results */
    int rv; /* nng error, or 0 with reply set */
    bank_reply reply;
    int64_t elapsed_ms;
} client;

static void client_run(void *arg)
{
    client *c = arg;
    nng_socket s;
    void *buf = NULL;
    size_t n = 0;
    c->rv = nng_req0_open(&s);
    if (c->rv != 0)
        return;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, c->timeout_ms);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, c->timeout_ms);
    c->rv = nng_dial(s, c->url, NULL, 0);
    if (c->mtx) {
        nng_mtx_lock(c->mtx);
        (*c->ready)++;
        nng_cv_wake(c->cv);
        while (!*c->go)
            nng_cv_wait(c->cv);
        nng_mtx_unlock(c->mtx);
    }
    if (c->rv != 0)
        goto out;
    int64_t t0 = util_mono_ms();
    if ((c->rv = nng_send(s, (void *)c->msg, c->len, 0)) != 0)
        goto out;
    if ((c->rv = nng_recv(s, &buf, &n, NNG_FLAG_ALLOC)) != 0)
        goto out;
    c->elapsed_ms = util_mono_ms() - t0;
    c->rv = bank_decode(buf, n, &c->reply) == 0 ? 0 : NNG_EPROTO;
    nng_free(buf, n);
out:
    nng_close(s);
}

/* Runs n clients at once (all dialed before any sends). */
static void clients_run(client *cs, int n)
{
    nng_mtx *mtx;
    nng_cv *cv;
    nng_thread *th[CLIENTS];
    int go = 0, ready = 0;
    assert_true(n <= CLIENTS);
    assert_int_equal(nng_mtx_alloc(&mtx), 0);
    assert_int_equal(nng_cv_alloc(&cv, mtx), 0);
    for (int i = 0; i < n; i++) {
        cs[i].mtx = mtx;
        cs[i].cv = cv;
        cs[i].go = &go;
        cs[i].ready = &ready;
        assert_int_equal(nng_thread_create(&th[i], client_run, &cs[i]), 0);
    }
    nng_mtx_lock(mtx);
    while (ready < n)
        nng_cv_wait(cv);
    go = 1;
    nng_cv_wake(cv);
    nng_mtx_unlock(mtx);
    for (int i = 0; i < n; i++)
        nng_thread_destroy(th[i]);
    nng_cv_free(cv);
    nng_mtx_free(mtx);
}

/* One client, on the calling thread. */
static int client_call(const char *url, const uint8_t *msg, size_t len, int timeout_ms,
                       bank_reply *out)
{
    client c = {.url = url, .msg = msg, .len = len, .timeout_ms = timeout_ms};
    client_run(&c);
    *out = c.reply;
    return c.rv;
}

/* ---- Tests ------------------------------------------------------------- */

/* Rule 4 over the network: copies in flight at once give one effect. */
static void test_concurrent_copies_one_effect(void **state)
{
    fixture *f = *state;
    start_bank(f, (pt_options){.contexts = 4});

    struct stat sb;
    assert_int_equal(stat(f->dir.ipc + strlen("ipc://"), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    for (int round = 0; round < ROUNDS; round++) {
        char key[32], saga[32];
        snprintf(key, sizeof key, "s%d/pay/action", round);
        snprintf(saga, sizeof saga, "s%d", round);
        bank_req q = {key, saga, "pay", PHASE_ACTION, "debit", "alice", "10"};
        size_t len;
        uint8_t *msg = bank_pack(&q, &len);
        client cs[CLIENTS];
        memset(cs, 0, sizeof cs);
        for (int i = 0; i < CLIENTS; i++) {
            cs[i].url = f->dir.ipc;
            cs[i].msg = msg;
            cs[i].len = len;
            cs[i].timeout_ms = 10000;
        }
        clients_run(cs, CLIENTS);
        int first = 0, replayed = 0, retry = 0;
        for (int i = 0; i < CLIENTS; i++) {
            if (cs[i].rv != 0)
                fail_msg("client %d: %s", i, nng_strerror(cs[i].rv));
            bank_reply *r = &cs[i].reply;
            assert_string_equal(r->key, key);
            if (r->outcome == OUTCOME_OK && !r->replayed)
                first++;
            else if (r->outcome == OUTCOME_OK && r->replayed)
                replayed++;
            else if (r->outcome == OUTCOME_RETRY)
                retry++;
            else
                fail_msg("client %d: outcome %d (%s)", i, r->outcome, r->error);
            bank_reply_free(r);
        }
        assert_int_equal(first, 1);
        assert_int_equal(first + replayed + retry, CLIENTS);
        free(msg);
    }
    pt_stop(f->p);
    assert_int_equal(f->st.debit_calls, ROUNDS);
    assert_int_equal(bank_balance(f->p, "alice"), 100 - 10 * ROUNDS);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM ledger"), ROUNDS);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM pt_idempotency"), ROUNDS);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.effects, ROUNDS);
    assert_int_equal(s.requests, CLIENTS * ROUNDS);
    assert_int_equal(s.effects + s.replays + s.retries, CLIENTS * ROUNDS);
}

/* nng hangs up on a message above WIRE_MAX_MSG; the service goes on serving. */
static void test_oversized_dropped_then_serving(void **state)
{
    fixture *f = *state;
    start_bank(f, (pt_options){0});
    size_t big_len = WIRE_MAX_MSG + 4096;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    assert_int_equal(th_ipc_hangs_up(f->dir.ipc, big, big_len), 1);
    free(big);

    bank_reply r;
    bank_req q = {"k1", "s1", "pay", PHASE_ACTION, "debit", "alice", "30"};
    size_t len;
    uint8_t *msg = bank_pack(&q, &len);
    assert_int_equal(client_call(f->dir.ipc, msg, len, 5000, &r), 0);
    assert_int_equal(r.outcome, OUTCOME_OK);
    bank_reply_free(&r);
    free(msg);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.malformed, 0); /* never reached the runtime */
}

static void test_malformed_over_socket(void **state)
{
    fixture *f = *state;
    start_bank(f, (pt_options){0});
    static const uint8_t garbage[] = {0xff, 0xfe, 0x01};
    bank_reply r;
    assert_int_equal(client_call(f->dir.ipc, garbage, sizeof garbage, 5000, &r), 0);
    assert_int_equal(r.outcome, OUTCOME_REJECTED);
    assert_non_null(strstr(r.error, "malformed"));
    bank_reply_free(&r);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.malformed, 1);
}

/* Sends msg and returns the raw answer (nng_free it) in *out, *out_len. */
static int raw_call(const char *url, const uint8_t *msg, size_t len, void **out, size_t *out_len)
{
    nng_socket s;
    int rv = nng_req0_open(&s);
    if (rv != 0)
        return rv;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
    nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, WIRE_MAX_BATCH_REPLY);
    if ((rv = nng_dial(s, url, NULL, 0)) == 0 && (rv = nng_send(s, (void *)msg, len, 0)) == 0)
        rv = nng_recv(s, out, out_len, NNG_FLAG_ALLOC);
    nng_close(s);
    return rv;
}

/*
 * A frame: its requests run in one batch and its answer is a frame of their
 * replies in the same order; a copy of a key within the frame replays, a
 * malformed item is answered REJECTED on its own. A frame that does not
 * unpack gets one REJECTED reply, and the service goes on serving.
 */
static void test_frame_over_socket(void **state)
{
    fixture *f = *state;
    start_bank(f, (pt_options){0});
    bank_req qa = {"f1/pay/action", "f1", "pay", PHASE_ACTION, "debit", "alice", "10"};
    bank_req qb = {"f2/pay/action", "f2", "pay", PHASE_ACTION, "debit", "alice", "20"};
    static const uint8_t junk[] = {0xff, 0xfe, 0x01};
    size_t la, lb;
    uint8_t *ma = bank_pack(&qa, &la), *mb = bank_pack(&qb, &lb);
    const uint8_t *items[] = {ma, mb, ma, junk};
    const size_t lens[] = {la, lb, la, sizeof junk};
    size_t flen;
    uint8_t *frame = wire_pack_batch(4, items, lens, &flen);
    assert_non_null(frame);
    void *answer = NULL;
    size_t alen = 0;
    assert_int_equal(raw_call(f->dir.ipc, frame, flen, &answer, &alen), 0);
    StepBatch *sb = wire_unpack_batch(answer, alen);
    assert_non_null(sb);
    assert_int_equal(sb->n_items, 4);
    bank_reply r[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(bank_decode(sb->items[i].data, sb->items[i].len, &r[i]), 0);
    assert_string_equal(r[0].key, "f1/pay/action");
    assert_int_equal(r[0].outcome, OUTCOME_OK);
    assert_false(r[0].replayed);
    assert_string_equal(r[1].key, "f2/pay/action");
    assert_int_equal(r[1].outcome, OUTCOME_OK);
    assert_string_equal(r[2].key, "f1/pay/action");
    assert_true(r[2].replayed);
    assert_int_equal(r[3].outcome, OUTCOME_REJECTED);
    assert_non_null(strstr(r[3].error, "malformed"));
    for (int i = 0; i < 4; i++)
        bank_reply_free(&r[i]);
    saga__v1__step_batch__free_unpacked(sb, NULL);
    nng_free(answer, alen);
    assert_int_equal(f->st.debit_calls, 2);
    assert_int_equal(bank_balance(f->p, "alice"), 70);

    /* The mark, then something that is not a StepBatch. */
    static const uint8_t bad_frame[] = {WIRE_BATCH_MARK, 0xff, 0xff, 0xff};
    bank_reply one;
    assert_int_equal(client_call(f->dir.ipc, bad_frame, sizeof bad_frame, 5000, &one), 0);
    assert_int_equal(one.outcome, OUTCOME_REJECTED);
    assert_non_null(strstr(one.error, "malformed"));
    bank_reply_free(&one);
    assert_int_equal(client_call(f->dir.ipc, mb, lb, 5000, &one), 0);
    assert_true(one.replayed); /* still serving */
    bank_reply_free(&one);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.frames, 1);
    assert_int_equal(s.malformed, 2); /* the junk item and the bad frame */
    free(frame);
    free(ma);
    free(mb);
}

/* drop_reply: the effect commits but no reply comes; the retry gets the stored reply. */
static void test_drop_reply_fault(void **state)
{
    fixture *f = *state;
    start_bank(f, (pt_options){.faults = "drop_reply=1"});
    bank_req q = {"s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", "alice", "30"};
    size_t len;
    uint8_t *msg = bank_pack(&q, &len);
    bank_reply r;
    assert_int_equal(client_call(f->dir.ipc, msg, len, 700, &r), NNG_ETIMEDOUT);
    pt_destroy(f->p);
    memset(&f->st, 0, sizeof f->st);
    start_bank(f, (pt_options){0});
    assert_int_equal(client_call(f->dir.ipc, msg, len, 5000, &r), 0);
    assert_int_equal(r.outcome, OUTCOME_OK);
    assert_true(r.replayed);
    assert_int_equal(f->st.debit_calls, 0);
    pt_stop(f->p);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&r);
    free(msg);
}

/* delay: each reply is held delay_ms, on the context's aio, not on the worker. */
static void test_delay_fault_does_not_block_worker(void **state)
{
    fixture *f = *state;
    /* Long delays, so that the verdict does not hang on the machine's load:
     * served one after the other they take N * DELAY = 8 s at least; at once,
     * about DELAY, which leaves seconds of slack before the 7 s bound. */
    enum { N = 4, DELAY = 2000 };
    start_bank(f, (pt_options){.faults = "delay=1,delay_ms=2000"});
    client cs[N];
    uint8_t *msgs[N];
    memset(cs, 0, sizeof cs);
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        bank_req q = {key, key, "pay", PHASE_ACTION, "debit", "alice", "5"};
        msgs[i] = bank_pack(&q, &cs[i].len);
        cs[i].url = f->dir.ipc;
        cs[i].msg = msgs[i];
        cs[i].timeout_ms = 20000;
    }
    int64_t t0 = util_mono_ms();
    clients_run(cs, N);
    int64_t total = util_mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        if (cs[i].rv != 0)
            fail_msg("client %d: %s", i, nng_strerror(cs[i].rv));
        assert_int_equal(cs[i].reply.outcome, OUTCOME_OK);
        assert_true(cs[i].elapsed_ms >= DELAY - 20);
        bank_reply_free(&cs[i].reply);
        free(msgs[i]);
    }
    /* Serial delays on the worker would take N * DELAY. */
    if (total >= N * DELAY - DELAY / 2)
        fail_msg("4 delayed replies took %lld ms: the worker blocked", (long long)total);
    pt_stop(f->p);
    assert_int_equal(bank_balance(f->p, "alice"), 100 - 5 * N);
}

/* The worker purges expired records between batches. */
static void test_purge_runs_on_worker(void **state)
{
    fixture *f = *state;
    pt_options o = {.name = "bank", .retention_ms = 1000, .purge_every_ms = 50, .purge_batch = 1};
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    bank_req q[3] = {{"a", "s1", "pay", PHASE_ACTION, "debit", "alice", "1"},
                     {"b", "s2", "pay", PHASE_ACTION, "debit", "alice", "1"},
                     {"c", "s3", "pay", PHASE_ACTION, "debit", "alice", "1"}};
    bank_reply r[3];
    bank_batch(f->p, 3, q, r);
    for (int i = 0; i < 3; i++)
        bank_reply_free(&r[i]);
    assert_int_equal(sqlite3_exec(pt_db(f->p),
                                  "UPDATE pt_idempotency SET created_at = created_at - 60000"
                                  " WHERE idempotency_key IN ('a', 'b')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    char err[256];
    assert_int_equal(pt_start(f->p, err, sizeof err), 0); /* no URL: worker and purge only */
    sqlite3 *reader = NULL;
    assert_int_equal(sqlite3_open(f->dir.db, &reader), SQLITE_OK);
    int64_t left = -1;
    for (int i = 0; i < 100 && left != 1; i++) {
        util_sleep_ms(20);
        left = reader_query(reader, "SELECT count(*) FROM pt_idempotency");
    }
    assert_int_equal(left, 1);
    assert_int_equal(reader_query(reader, "SELECT count(*) FROM pt_idempotency"
                                          " WHERE idempotency_key = 'c'"),
                     1);
    sqlite3_close(reader);
    pt_stop(f->p);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.purged, 2);
}

/* Enough money for every debit of a test (before any request is in flight). */
static void fund_alice(fixture *f)
{
    assert_int_equal(
        sqlite3_exec(pt_db(f->p), "UPDATE accounts SET balance = 1000000000", NULL, NULL, NULL),
        SQLITE_OK);
}

/*
 * Serving hand-off: the callback that queues a request while nobody serves
 * runs the batch; the worker takes its turn for the purge every 1 ms. No
 * request may be left queued with nobody serving: each would time out.
 */
static void test_serving_handoff_with_purge(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    pt_options o = {.name = "bank",
                    .listen_url = f->dir.ipc,
                    .contexts = CLIENTS,
                    .purge_every_ms = 1,
                    .purge_batch = 1};
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    fund_alice(f);
    /* Expired records, purged one per transaction: the worker holds the
     * store most of the time while the requests come in. */
    assert_int_equal(sqlite3_exec(pt_db(f->p),
                                  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                                  " WHERE i < 20000) INSERT INTO pt_idempotency"
                                  " SELECT 'old' || i, 'old' || i, 'pay', 0, 'debit', x'00', 0,"
                                  " x'00', '{}', 0 FROM n",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    if (pt_start(f->p, err, sizeof err) != 0)
        fail_msg("pt_start: %s", err);
    int n = 0;
    for (int round = 0; round < ROUNDS * 4; round++) {
        client cs[CLIENTS];
        uint8_t *msgs[CLIENTS];
        char keys[CLIENTS][32], sagas[CLIENTS][32];
        memset(cs, 0, sizeof cs);
        for (int i = 0; i < CLIENTS; i++) {
            snprintf(keys[i], sizeof keys[i], "h%d-%d/pay/action", round, i);
            snprintf(sagas[i], sizeof sagas[i], "h%d-%d", round, i);
            bank_req q = {keys[i], sagas[i], "pay", PHASE_ACTION, "debit", "alice", "1"};
            msgs[i] = bank_pack(&q, &cs[i].len);
            cs[i].url = f->dir.ipc;
            cs[i].msg = msgs[i];
            cs[i].timeout_ms = 5000;
        }
        clients_run(cs, CLIENTS);
        for (int i = 0; i < CLIENTS; i++) {
            if (cs[i].rv != 0)
                fail_msg("round %d client %d: %s", round, i, nng_strerror(cs[i].rv));
            assert_int_equal(cs[i].reply.outcome, OUTCOME_OK);
            assert_false(cs[i].reply.replayed);
            bank_reply_free(&cs[i].reply);
            free(msgs[i]);
            n++;
        }
    }
    pt_stop(f->p);
    assert_int_equal(f->st.debit_calls, n);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM pt_idempotency"
                                      " WHERE idempotency_key LIKE 'h%'"),
                     n);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_true(s.purged > 0); /* the purges did run meanwhile */
}

static void test_start_stop(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    pt_options o = {.name = "bank", .listen_url = "nosuch://x"};
    f->p = bank_open(&o, f->dir.db, &f->st);
    assert_non_null(f->p);
    assert_int_not_equal(pt_start(f->p, err, sizeof err), 0);
    assert_true(strlen(err) > 0);
    pt_destroy(f->p);
    f->p = NULL;

    start_bank(f, (pt_options){.contexts = 2});
    assert_int_not_equal(pt_start(f->p, err, sizeof err), 0); /* already started */
    assert_int_equal(pt_register(f->p, "late", NULL, NULL, NULL, NULL), -1);
    pt_stop(f->p);
    pt_stop(f->p); /* idempotent */
    pt_destroy(NULL);
}

#define T(t) cmocka_unit_test_setup_teardown(t, bank_fixture_setup_dir, bank_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_concurrent_copies_one_effect),
        T(test_oversized_dropped_then_serving),
        T(test_malformed_over_socket),
        T(test_frame_over_socket),
        T(test_drop_reply_fault),
        T(test_delay_fault_does_not_block_worker),
        T(test_purge_runs_on_worker),
        T(test_serving_handoff_with_purge),
        T(test_start_stop),
    };
    return cmocka_run_group_tests_name("runtime_socket", tests, NULL, NULL);
}
