/*
 * test_transport_replicas — orchestrator/transport.c's choice of a replica
 * (transport.h, "Replicas") against two replicas the test answers by hand
 * (two raw rep0 sockets in this process), one participant listing both:
 *
 *   - two requests outstanding at once go one to each replica (fewest
 *     outstanding), and each call says which replica carried it;
 *   - after a replica leaves a request unanswered (timeout), it gets at most
 *     one request at a time (a probe) while the other answers: of several
 *     requests sent at once, at most one goes to it, whatever the timing;
 *   - the probe does come, and once the replica answers it, requests spread
 *     over both again;
 *   - a replica that is not connected gets nothing while the other is.
 * Nothing here depends on timing: every wait polls with a deadline.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "harness.h"
#include "transport.h"
#include "wire.h"

#define WAIT_MS   10000
#define MAX_DONE  64
#define SILENT_MS 200 /* the timeout of requests the test leaves unanswered */

typedef struct {
    char *dir;
    char *url[2];
    nng_socket rep[2]; /* the replicas */
    int listening[2];
    transport *t;
    nng_mtx *mtx;
    nng_cv *cv;
    transport_call *done[MAX_DONE]; /* completed, not released yet */
    int n_done;
    uint64_t token;
} fixture;

static void on_done(void *arg, transport_call *const *calls, size_t n)
{
    fixture *f = arg;
    nng_mtx_lock(f->mtx);
    for (size_t i = 0; i < n && f->n_done < MAX_DONE; i++)
        f->done[f->n_done++] = calls[i];
    nng_cv_wake(f->cv);
    nng_mtx_unlock(f->mtx);
}

static int listen_replica(fixture *f, int i)
{
    if (nng_rep0_open(&f->rep[i]) != 0 || nng_listen(f->rep[i], f->url[i], NULL, 0) != 0)
        return -1;
    nng_socket_set_ms(f->rep[i], NNG_OPT_RECVTIMEO, WAIT_MS);
    f->listening[i] = 1;
    return 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    *state = f;
    f->url[0] = th_ipc_url(f->dir, "a");
    f->url[1] = th_ipc_url(f->dir, "b");
    if (nng_mtx_alloc(&f->mtx) != 0 || nng_cv_alloc(&f->cv, f->mtx) != 0)
        return -1;
    return 0;
}

static void release_all(fixture *f)
{
    for (int i = 0; i < f->n_done; i++)
        transport_release(f->t, f->done[i]);
    f->n_done = 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->t) {
        transport_close(f->t);
        release_all(f);
        transport_destroy(f->t);
    }
    for (int i = 0; i < 2; i++)
        if (f->listening[i])
            nng_close(f->rep[i]);
    nng_cv_free(f->cv);
    nng_mtx_free(f->mtx);
    th_rmtree(f->dir);
    free(f->dir);
    free(f->url[0]);
    free(f->url[1]);
    free(f);
    return 0;
}

static void open_transport(fixture *f)
{
    participant_def pd = {.name = "p", .urls = f->url, .n_urls = 2};
    orch_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.participants = &pd;
    cfg.n_participants = 1;
    cfg.frame_max = 1; /* one message per request: one request per receive */
    char err[256];
    f->t = transport_create(&cfg, on_done, f, err, sizeof err);
    if (f->t == NULL)
        fail_msg("transport_create: %s", err);
    assert_int_equal(transport_replicas(f->t, 0), 2);
    assert_string_equal(transport_replica_url(f->t, 0, 1), f->url[1]);
}

static void wait_connected(fixture *f, int i)
{
    nng_time until = nng_clock() + WAIT_MS;
    while (!transport_replica_connected(f->t, 0, (size_t)i) && nng_clock() < until)
        nng_msleep(10);
    assert_true(transport_replica_connected(f->t, 0, (size_t)i));
}

/* Queues one request and flushes it; its token (the call's token). */
static uint64_t send_one(fixture *f, int64_t timeout_ms)
{
    uint64_t token = ++f->token;
    char key[32];
    snprintf(key, sizeof key, "s/st/action/%llu", (unsigned long long)token);
    kvmap none = KVMAP_INIT;
    size_t len;
    uint8_t *buf = wire_pack_request(key, "s", "st", PHASE_ACTION, "op", 1, &none, &len);
    assert_non_null(buf);
    assert_int_equal(transport_send(f->t, 0, "s", token, 0, PHASE_ACTION, buf, len, timeout_ms), 0);
    free(buf);
    transport_flush(f->t);
    return token;
}

/* Answers msg, a request replica i received, with OK for its key. */
static void reply_ok(fixture *f, int i, nng_msg *msg)
{
    StepRequest *q = saga__v1__step_request__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    assert_non_null(q);
    size_t len;
    uint8_t *rep = wire_pack_reply(q->idempotency_key, OUTCOME_OK, 0, NULL, NULL, &len);
    assert_non_null(rep);
    saga__v1__step_request__free_unpacked(q, NULL);
    nng_msg_clear(msg);
    assert_int_equal(nng_msg_append(msg, rep, len), 0);
    free(rep);
    assert_int_equal(nng_sendmsg(f->rep[i], msg, 0), 0);
}

/* Replica i receives one request and answers it OK. */
static void answer(fixture *f, int i)
{
    nng_msg *msg;
    assert_int_equal(nng_recvmsg(f->rep[i], &msg, 0), 0);
    reply_ok(f, i, msg);
}

/* Whichever replica has a request waiting answers it; returns which. */
static int answer_wherever(fixture *f)
{
    nng_time until = nng_clock() + WAIT_MS;
    while (nng_clock() < until) {
        for (int i = 0; i < 2; i++) {
            nng_msg *msg = NULL;
            if (f->listening[i] && nng_recvmsg(f->rep[i], &msg, NNG_FLAG_NONBLOCK) == 0) {
                reply_ok(f, i, msg);
                return i;
            }
        }
        nng_msleep(5);
    }
    fail_msg("no replica received a request within %d ms", WAIT_MS);
    return -1;
}

/* Replica i receives one request and leaves it unanswered. */
static void swallow(fixture *f, int i)
{
    nng_msg *msg;
    assert_int_equal(nng_recvmsg(f->rep[i], &msg, 0), 0);
    nng_msg_free(msg);
}

static void wait_done(fixture *f, int n)
{
    nng_time until = nng_clock() + WAIT_MS;
    nng_mtx_lock(f->mtx);
    while (f->n_done < n && nng_clock() < until)
        nng_cv_until(f->cv, until);
    int got = f->n_done;
    nng_mtx_unlock(f->mtx);
    assert_int_equal(got, n);
}

/* The replica of the completed call with this token (-1: none). */
static int replica_of(fixture *f, uint64_t token)
{
    for (int i = 0; i < f->n_done; i++)
        if (f->done[i]->token == token)
            return (int)f->done[i]->replica;
    return -1;
}

static int result_of(fixture *f, uint64_t token)
{
    for (int i = 0; i < f->n_done; i++)
        if (f->done[i]->token == token)
            return f->done[i]->result;
    return -1;
}

/* Two at once: one to each; answered by each. Returns nothing outstanding. */
static void expect_spread(fixture *f)
{
    uint64_t t1 = send_one(f, WAIT_MS), t2 = send_one(f, WAIT_MS);
    answer(f, 0);
    answer(f, 1);
    wait_done(f, 2);
    assert_int_equal(result_of(f, t1), 0);
    assert_int_equal(result_of(f, t2), 0);
    assert_int_not_equal(replica_of(f, t1), replica_of(f, t2));
    release_all(f);
}

static void test_spread_avoid_probe(void **state)
{
    fixture *f = *state;
    assert_int_equal(listen_replica(f, 0), 0);
    assert_int_equal(listen_replica(f, 1), 0);
    open_transport(f);
    wait_connected(f, 0);
    wait_connected(f, 1);

    expect_spread(f);

    /* b leaves one unanswered: two at once, a answers, b swallows. */
    uint64_t t1 = send_one(f, SILENT_MS), t2 = send_one(f, SILENT_MS);
    answer(f, 0);
    swallow(f, 1);
    wait_done(f, 2);
    uint64_t silent = replica_of(f, t1) == 1 ? t1 : t2;
    assert_int_equal(replica_of(f, silent), 1);
    assert_int_equal(result_of(f, silent), NNG_ETIMEDOUT);
    release_all(f); /* b has failed once */

    /* Six at once: at most one (a probe) for b, however long this took. */
    uint64_t tok[6];
    for (int i = 0; i < 6; i++)
        tok[i] = send_one(f, WAIT_MS);
    int to_b = 0;
    for (int i = 0; i < 6; i++)
        to_b += answer_wherever(f) == 1;
    wait_done(f, 6);
    int on_b = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(result_of(f, tok[i]), 0);
        on_b += replica_of(f, tok[i]) == 1;
    }
    assert_int_equal(on_b, to_b);
    assert_true(on_b <= 1);
    release_all(f);

    /* The probe comes (after b's pause), and b's answer brings it back. */
    int probed = on_b == 1;
    nng_time until = nng_clock() + WAIT_MS;
    while (!probed && nng_clock() < until) {
        uint64_t t = send_one(f, WAIT_MS);
        probed = answer_wherever(f) == 1;
        wait_done(f, 1);
        assert_int_equal(result_of(f, t), 0);
        assert_int_equal(replica_of(f, t), probed);
        release_all(f);
        nng_msleep(20);
    }
    assert_true(probed);
    expect_spread(f); /* b answers: both in use again */
}

static void test_unconnected_gets_nothing(void **state)
{
    fixture *f = *state;
    assert_int_equal(listen_replica(f, 0), 0); /* b does not listen */
    open_transport(f);
    wait_connected(f, 0);
    uint64_t tok[4];
    for (int i = 0; i < 4; i++)
        tok[i] = send_one(f, WAIT_MS);
    for (int i = 0; i < 4; i++)
        answer(f, 0);
    wait_done(f, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(result_of(f, tok[i]), 0);
        assert_int_equal(replica_of(f, tok[i]), 0);
    }
    release_all(f);
    /* b comes up: once connected, it gets its share. */
    assert_int_equal(listen_replica(f, 1), 0);
    wait_connected(f, 1);
    expect_spread(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spread_avoid_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unconnected_gets_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
