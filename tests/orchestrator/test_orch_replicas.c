/*
 * test_orch_replicas — several replicas of one participant service
 * (orchestrator/transport.h, "Replicas"), end to end: the real sagad, sagactl
 * and services (orch_fixture.h), payment listed as two URLs, two payment-svc
 * processes on the one payment.db (SQLite, WAL).
 *
 * Covered:
 *   - spreading: sagas started one after another reach both replicas (each
 *     answers, as sagad's per-replica metrics show), every charge once;
 *   - a replica SIGKILLed right after it committed a charge and before it
 *     replied (its crash_after_commit fault): the retry, same key, goes to
 *     the other replica, which replays the stored reply: every saga
 *     completes with one charge; the restarted replica is used again;
 *   - a replica SIGKILLed by the test while sagas flow (its replies delayed,
 *     so calls are in flight on it): every saga completes, one charge each;
 *   - a replica SIGSTOPped (connected but silent): the steps sent to it time
 *     out once and are retried on the other, the history names the silent
 *     replica, every saga completes; after SIGCONT it answers again;
 *   - the same key sent to both replicas at the same moment (raw requests,
 *     no sagad), for many keys: one charge per key; each replica answers OK
 *     with the one charge id (one of them replayed) or RETRY, and a RETRY
 *     repeated gets the replay.
 * Every case ends with the books balanced (money and stock, as seeded).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv.h"
#include "obs_fixture.h"
#include "util.h"
#include "wire.h"

typedef struct {
    ofx f;
    int port; /* sagad's http_url, for /metrics */
} fixture;

static int setup(void **state)
{
    fixture *x = calloc(1, sizeof *x);
    if (x == NULL)
        return -1;
    *state = x;
    ofx_opts opts = {.replicated = 1u << SVC_PAYMENT};
    if (ofx_init(&x->f, &opts) != 0)
        return -1; /* teardown still runs and cleans up */
    x->port = obs_free_port();
    if (x->port < 0 || obs_enable_http(&x->f, x->port) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    fixture *x = *state;
    if (x->f.replica[SVC_PAYMENT].pid > 0) /* it may be stopped: let SIGTERM in */
        kill(x->f.replica[SVC_PAYMENT].pid, SIGCONT);
    ofx_destroy(&x->f);
    free(x);
    return 0;
}

/* A per-replica sample of sagad's /metrics for payment's URL url; -1 when absent. */
static double replica_metric(fixture *x, const char *name, const char *url)
{
    obs_response r;
    if (obs_get(x->port, "/metrics", NULL, NULL, 5000, &r) != 0)
        return -1;
    char *sample = util_asprintf("%s{participant=\"payment\",url=\"%s\"}", name, url);
    double v = sample ? obs_metric(r.body, sample) : -1;
    free(sample);
    obs_response_free(&r);
    return v;
}

/* Waits until sagad holds a connection to both payment replicas. */
static void wait_both_connected(fixture *x)
{
    int64_t deadline = util_mono_ms() + OFX_WAIT_MS;
    while (replica_metric(x, "saga_replica_connected", x->f.svc[SVC_PAYMENT].url) != 1 ||
           replica_metric(x, "saga_replica_connected", x->f.replica[SVC_PAYMENT].url) != 1) {
        if (util_mono_ms() > deadline)
            fail_msg("sagad never connected to both payment replicas");
        usleep(50 * 1000);
    }
}

/* Starts a saga that completes (dave can pay; 1 of WIDGET-1's 100); its id into id. */
static void start_one(fixture *x, int n, char id[37])
{
    char key[32];
    snprintf(key, sizeof key, "replicas-%d", n);
    int rc = ofx_start_order(&x->f, key, "dave", "WIDGET-1", "1", "100", "paris", id, NULL, NULL);
    assert_int_equal(rc, 0);
}

static void expect_completed(fixture *x, const char *id)
{
    json_t *st = ofx_wait_final(&x->f, id, OFX_WAIT_MS);
    assert_non_null(st);
    if (strcmp(tj_str(st, "state") ? tj_str(st, "state") : "", "COMPLETED") != 0)
        print_message("saga %s: last_error %s\n", id,
                      tj_str(st, "last_error") ? tj_str(st, "last_error") : "none");
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
}

/* Every saga of ids charged exactly once, and the books as seeded. */
static void expect_charged_once(fixture *x, char (*ids)[37], int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(
            ofx_sql(&x->f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", ids[i]),
            1);
    assert_int_equal(ofx_sql(&x->f, SVC_PAYMENT, "SELECT count(*) FROM charges"), n);
    assert_int_equal(
        ofx_sql(&x->f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE state = %Q", "charged"), n);
    assert_int_equal(ofx_books_balanced(&x->f), 0);
}

/* Starts sagas (numbered from *n on) until replica url has answered more than
 * `before` requests; each must complete. Bounded: the replica is answering. */
static void expect_used_again(fixture *x, const char *url, double before, int *n, char (*ids)[37],
                              int max)
{
    int64_t deadline = util_mono_ms() + OFX_WAIT_MS;
    while (replica_metric(x, "saga_replica_answered_total", url) <= before) {
        if (*n >= max || util_mono_ms() > deadline)
            fail_msg("replica %s never answered again", url);
        start_one(x, *n, ids[*n]);
        expect_completed(x, ids[*n]);
        (*n)++;
    }
}

#define N_SAGAS 12
#define MAX_IDS 64

static void test_spread_over_both(void **state)
{
    fixture *x = *state;
    ofx *f = &x->f;
    assert_int_equal(ofx_start_all(f), 0);
    wait_both_connected(x);
    char ids[N_SAGAS][37];
    for (int i = 0; i < N_SAGAS; i++)
        start_one(x, i, ids[i]);
    for (int i = 0; i < N_SAGAS; i++)
        expect_completed(x, ids[i]);
    const char *a = f->svc[SVC_PAYMENT].url, *b = f->replica[SVC_PAYMENT].url;
    double answered_a = replica_metric(x, "saga_replica_answered_total", a);
    double answered_b = replica_metric(x, "saga_replica_answered_total", b);
    print_message("payment replica a answered %.0f, b %.0f\n", answered_a, answered_b);
    assert_true(answered_a >= 1);
    assert_true(answered_b >= 1);
    /* Every charge went to one of them; refunds none (all completed). */
    assert_true(answered_a + answered_b >= N_SAGAS);
    assert_int_equal((int)replica_metric(x, "saga_replica_failures_total", a), 0);
    assert_int_equal((int)replica_metric(x, "saga_replica_failures_total", b), 0);
    expect_charged_once(x, ids, N_SAGAS);
}

static void test_killed_after_commit(void **state)
{
    fixture *x = *state;
    ofx *f = &x->f;
    for (int i = 0; i < OFX_N_SVC; i++)
        assert_int_equal(ofx_start_svc(f, i, NULL), 0);
    /* b dies of SIGKILL right after committing its first batch, before any reply. */
    assert_int_equal(ofx_start_replica(f, SVC_PAYMENT, "crash_after_commit=1"), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    wait_both_connected(x);
    char ids[MAX_IDS][37];
    int n = 0;
    for (; n < N_SAGAS; n++)
        start_one(x, n, ids[n]);
    for (int i = 0; i < n; i++)
        expect_completed(x, ids[i]);
    /* b got one (round-robin among two answering replicas) and died of it. */
    int status = 0;
    assert_int_equal(th_wait_exit(f->replica[SVC_PAYMENT].pid, OFX_WAIT_MS, &status), 0);
    f->replica[SVC_PAYMENT].pid = 0;
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* Its committed charge was answered by a from the shared record: a replay. */
    assert_true(ofx_counter(f, SVC_PAYMENT, "replays") >= 1);
    const char *b = f->replica[SVC_PAYMENT].url;
    assert_true(replica_metric(x, "saga_replica_failures_total", b) >= 1);
    expect_charged_once(x, ids, n);

    /* Restarted, it is probed and used again. */
    double before = replica_metric(x, "saga_replica_answered_total", b);
    assert_int_equal(ofx_start_replica(f, SVC_PAYMENT, NULL), 0);
    expect_used_again(x, b, before, &n, ids, MAX_IDS);
    expect_charged_once(x, ids, n);
}

static void test_sigkill_mid_run(void **state)
{
    fixture *x = *state;
    ofx *f = &x->f;
    for (int i = 0; i < OFX_N_SVC; i++)
        assert_int_equal(ofx_start_svc(f, i, NULL), 0);
    /* b's replies wait 150 ms (within the 300 ms timeout): calls are in flight on it. */
    assert_int_equal(ofx_start_replica(f, SVC_PAYMENT, "delay=1,delay_ms=150"), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    wait_both_connected(x);
    char ids[2 * N_SAGAS][37];
    int n = 0;
    for (; n < N_SAGAS; n++)
        start_one(x, n, ids[n]);
    assert_int_equal(th_kill(f->replica[SVC_PAYMENT].pid), 0);
    f->replica[SVC_PAYMENT].pid = 0;
    for (; n < 2 * N_SAGAS; n++)
        start_one(x, n, ids[n]);
    for (int i = 0; i < n; i++)
        expect_completed(x, ids[i]);
    expect_charged_once(x, ids, n);
}

/* A history event step_no_reply of charge_payment that names replica url. */
static int history_names_replica(fixture *x, const char *id, const char *url)
{
    json_t *h = ofx_history(&x->f, id);
    if (h == NULL)
        return 0;
    char *want = util_asprintf("(replica %s)", url);
    int found = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(h, i, ev)
    {
        const char *kind = tj_str(ev, "kind"), *detail = tj_str(ev, "detail");
        if (kind && strcmp(kind, "step_no_reply") == 0 && detail && want &&
            strstr(detail, want) != NULL)
            found = 1;
    }
    free(want);
    json_decref(h);
    return found;
}

static void test_sigstop_one(void **state)
{
    fixture *x = *state;
    ofx *f = &x->f;
    assert_int_equal(ofx_start_all(f), 0);
    wait_both_connected(x);
    pid_t b_pid = f->replica[SVC_PAYMENT].pid;
    const char *b = f->replica[SVC_PAYMENT].url;
    assert_int_equal(kill(b_pid, SIGSTOP), 0);
    char ids[MAX_IDS][37];
    int n = 0;
    for (; n < N_SAGAS; n++)
        start_one(x, n, ids[n]);
    int named = 0;
    for (int i = 0; i < n; i++) {
        expect_completed(x, ids[i]);
        named += history_names_replica(x, ids[i], b);
    }
    /* At least one charge went to the silent b, timed out there, and was
     * retried on a; the history says which replica stayed silent. */
    assert_true(named >= 1);
    assert_true(replica_metric(x, "saga_replica_failures_total", b) >= 1);
    expect_charged_once(x, ids, n);

    /* Resumed, it answers again (its backlog, then probes). */
    double before = replica_metric(x, "saga_replica_answered_total", b);
    assert_int_equal(kill(b_pid, SIGCONT), 0);
    expect_used_again(x, b, before, &n, ids, MAX_IDS);
    expect_charged_once(x, ids, n);
}

/* ---- The same key at both replicas at once -------------------------------- */

#define DUP_KEYS 24

typedef struct {
    nng_socket sock;
    pthread_barrier_t *barrier;
    const uint8_t *req;
    size_t len;
    StepReply *reply; /* unpacked; NULL when none came */
} dup_sender;

static void *dup_send(void *arg)
{
    dup_sender *d = arg;
    nng_msg *msg = NULL;
    pthread_barrier_wait(d->barrier);
    if (nng_send(d->sock, (void *)d->req, d->len, 0) == 0 && nng_recvmsg(d->sock, &msg, 0) == 0) {
        d->reply = saga__v1__step_reply__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
        nng_msg_free(msg);
    }
    return NULL;
}

/* Sends req on sock (alone) until the answer is not RETRY; that answer. */
static StepReply *send_until_answered(nng_socket sock, const uint8_t *req, size_t len)
{
    for (int i = 0; i < 100; i++) {
        nng_msg *msg = NULL;
        if (nng_send(sock, (void *)req, len, 0) != 0 || nng_recvmsg(sock, &msg, 0) != 0)
            return NULL;
        StepReply *r = saga__v1__step_reply__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
        nng_msg_free(msg);
        if (r == NULL || (int)r->outcome != OUTCOME_RETRY)
            return r;
        saga__v1__step_reply__free_unpacked(r, NULL);
        usleep(20 * 1000);
    }
    return NULL;
}

static const char *charge_id_of(const StepReply *r)
{
    for (size_t i = 0; i < r->n_result; i++)
        if (strcmp(r->result[i]->key, "charge_id") == 0)
            return r->result[i]->value;
    return NULL;
}

static void test_same_key_both_at_once(void **state)
{
    fixture *x = *state;
    ofx *f = &x->f;
    assert_int_equal(ofx_start_svc(f, SVC_PAYMENT, NULL), 0);
    assert_int_equal(ofx_start_replica(f, SVC_PAYMENT, NULL), 0);
    dup_sender d[2];
    const char *urls[2] = {f->svc[SVC_PAYMENT].url, f->replica[SVC_PAYMENT].url};
    for (int i = 0; i < 2; i++) {
        memset(&d[i], 0, sizeof d[i]);
        assert_int_equal(nng_req0_open(&d[i].sock), 0);
        nng_socket_set_ms(d[i].sock, NNG_OPT_RECVTIMEO, OFX_WAIT_MS);
        nng_socket_set_ms(d[i].sock, NNG_OPT_SENDTIMEO, OFX_WAIT_MS);
        assert_int_equal(nng_dial(d[i].sock, urls[i], NULL, 0), 0);
    }
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    int replayed = 0, retried = 0;
    for (int k = 0; k < DUP_KEYS; k++) {
        char saga_id[40], key[80], order_id[16];
        snprintf(saga_id, sizeof saga_id, "00000000-0000-4000-8000-%012d", k);
        snprintf(key, sizeof key, "%s/charge_payment/action", saga_id);
        snprintf(order_id, sizeof order_id, "o-%d", k);
        kvmap params = KVMAP_INIT;
        assert_int_equal(
            th_kv(&params, "customer", "dave", "amount", "100", "order_id", order_id, NULL), 0);
        size_t len;
        uint8_t *req = wire_pack_request(key, saga_id, "charge_payment", PHASE_ACTION, "charge", 1,
                                         &params, &len);
        kv_free(&params);
        assert_non_null(req);
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            d[i].barrier = &barrier;
            d[i].req = req;
            d[i].len = len;
            d[i].reply = NULL;
            assert_int_equal(pthread_create(&th[i], NULL, dup_send, &d[i]), 0);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        const char *charge = NULL;
        for (int i = 0; i < 2; i++) {
            assert_non_null(d[i].reply);
            if ((int)d[i].reply->outcome == OUTCOME_RETRY) { /* fine: asked again, it replays */
                retried++;
                saga__v1__step_reply__free_unpacked(d[i].reply, NULL);
                d[i].reply = send_until_answered(d[i].sock, req, len);
                assert_non_null(d[i].reply);
            }
            assert_int_equal((int)d[i].reply->outcome, OUTCOME_OK);
            replayed += d[i].reply->replayed ? 1 : 0;
            const char *id = charge_id_of(d[i].reply);
            assert_non_null(id);
            if (charge == NULL)
                charge = id;
            else
                assert_string_equal(id, charge); /* one charge, whoever answered */
        }
        assert_int_equal(d[0].reply->replayed + d[1].reply->replayed, 1);
        for (int i = 0; i < 2; i++)
            saga__v1__step_reply__free_unpacked(d[i].reply, NULL);
        free(req);
        assert_int_equal(
            ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", saga_id), 1);
    }
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < 2; i++)
        nng_close(d[i].sock);
    print_message("%d keys at both replicas at once: %d replays, %d RETRY answers\n", DUP_KEYS,
                  replayed, retried);
    assert_int_equal(replayed, DUP_KEYS);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), DUP_KEYS);
    assert_int_equal(ofx_counter(f, SVC_PAYMENT, "effects"), DUP_KEYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spread_over_both, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_mid_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigstop_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_key_both_at_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
