/*
 * test_transport_frames — orchestrator/transport.c against a participant
 * the test answers by hand (a raw rep0 socket in this process):
 *
 *   - requests queued for one participant with one timeout leave as one
 *     frame, and the frame's answer is split so that each call completes
 *     with its own reply, all of them in one completion;
 *   - requests with another timeout go in another message, one per timeout
 *     even when the two timeouts alternate in the queue;
 *   - frame_max = 1 sends every request alone, as before frames existed;
 *   - a participant that answers a frame with a single reply (one that does
 *     not know frames) completes every call of the frame with NNG_EPROTO:
 *     no answer for each, retried by the engine like a lost message.
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

#define WAIT_MS  10000
#define MAX_DONE 8

typedef struct {
    char *dir;
    char *url;
    nng_socket rep; /* the participant */
    transport *t;
    /* completions, from nng threads */
    nng_mtx *mtx;
    nng_cv *cv;
    transport_call *done[MAX_DONE];
    int n_done;
    int completions; /* on_done calls: a frame's calls complete together */
} fixture;

static void on_done(void *arg, transport_call *const *calls, size_t n)
{
    fixture *f = arg;
    nng_mtx_lock(f->mtx);
    for (size_t i = 0; i < n && f->n_done < MAX_DONE; i++)
        f->done[f->n_done++] = calls[i];
    f->completions++;
    nng_cv_wake(f->cv);
    nng_mtx_unlock(f->mtx);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    f->url = th_ipc_url(f->dir, "p");
    if (nng_rep0_open(&f->rep) != 0 || nng_listen(f->rep, f->url, NULL, 0) != 0)
        return -1;
    nng_socket_set_ms(f->rep, NNG_OPT_RECVTIMEO, WAIT_MS);
    if (nng_mtx_alloc(&f->mtx) != 0 || nng_cv_alloc(&f->cv, f->mtx) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->t) {
        for (int i = 0; i < f->n_done; i++)
            transport_release(f->t, f->done[i]);
        transport_destroy(f->t);
    }
    nng_close(f->rep);
    nng_cv_free(f->cv);
    nng_mtx_free(f->mtx);
    th_rmtree(f->dir);
    free(f->dir);
    free(f->url);
    free(f);
    return 0;
}

static void open_transport(fixture *f, int frame_max)
{
    participant_def pd = {.name = "p", .urls = &f->url, .n_urls = 1};
    orch_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.participants = &pd;
    cfg.n_participants = 1;
    cfg.frame_max = frame_max;
    char err[256];
    f->t = transport_create(&cfg, on_done, f, err, sizeof err);
    if (f->t == NULL)
        fail_msg("transport_create: %s", err);
}

/* Queues the request of step `step` of saga "s" (key "s/<step>/action"). */
static void queue(fixture *f, int step, int64_t timeout_ms)
{
    char key[32], name[8];
    snprintf(name, sizeof name, "st%d", step);
    snprintf(key, sizeof key, "s/%s/action", name);
    kvmap none = KVMAP_INIT;
    size_t len;
    uint8_t *buf = wire_pack_request(key, "s", name, PHASE_ACTION, "op", 1, &none, &len);
    assert_non_null(buf);
    assert_int_equal(
        transport_send(f->t, 0, "s", (uint64_t)step, step, PHASE_ACTION, buf, len, timeout_ms), 0);
    free(buf);
}

/* The next message the participant receives, kept to be answered. */
typedef struct {
    nng_msg *msg;
} received;

static received receive(fixture *f)
{
    received r = {NULL};
    assert_int_equal(nng_recvmsg(f->rep, &r.msg, 0), 0);
    return r;
}

/* The reply of a packed StepRequest: OK, its key echoed, result step=<its step>. */
static uint8_t *answer_of(const uint8_t *req, size_t len, size_t *out_len)
{
    StepRequest *q = saga__v1__step_request__unpack(NULL, len, req);
    assert_non_null(q);
    kvmap result = KVMAP_INIT;
    assert_int_equal(kv_set(&result, "step", q->step), 0);
    uint8_t *rep = wire_pack_reply(q->idempotency_key, OUTCOME_OK, 0, &result, NULL, out_len);
    kv_free(&result);
    saga__v1__step_request__free_unpacked(q, NULL);
    return rep;
}

static void reply_with(fixture *f, received *r, const uint8_t *buf, size_t len)
{
    nng_msg_clear(r->msg);
    assert_int_equal(nng_msg_append(r->msg, buf, len), 0);
    assert_int_equal(nng_sendmsg(f->rep, r->msg, 0), 0);
    r->msg = NULL;
}

/* Receives a frame of n requests and answers it with a frame of their replies. */
static void answer_frame(fixture *f, size_t n)
{
    received r = receive(f);
    StepBatch *sb = wire_unpack_batch(nng_msg_body(r.msg), nng_msg_len(r.msg));
    assert_non_null(sb);
    assert_int_equal(sb->n_items, n);
    const uint8_t *parts[WIRE_BATCH_MAX];
    size_t lens[WIRE_BATCH_MAX], flen;
    for (size_t i = 0; i < n; i++)
        parts[i] = answer_of(sb->items[i].data, sb->items[i].len, &lens[i]);
    uint8_t *frame = wire_pack_batch(n, parts, lens, &flen);
    reply_with(f, &r, frame, flen);
    free(frame);
    for (size_t i = 0; i < n; i++)
        free((void *)parts[i]);
    saga__v1__step_batch__free_unpacked(sb, NULL);
}

/* Receives a plain request (not a frame) and answers it. */
static void answer_one_alone(fixture *f)
{
    received r = receive(f);
    assert_false(wire_is_batch(nng_msg_body(r.msg), nng_msg_len(r.msg)));
    size_t len;
    uint8_t *one = answer_of(nng_msg_body(r.msg), nng_msg_len(r.msg), &len);
    reply_with(f, &r, one, len);
    free(one);
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

/* Each completed call carries its own reply: the one for its step. */
static void check_own_replies(fixture *f)
{
    for (int i = 0; i < f->n_done; i++) {
        transport_call *c = f->done[i];
        assert_int_equal(c->result, 0);
        assert_non_null(c->reply);
        StepReply *rep =
            saga__v1__step_reply__unpack(NULL, nng_msg_len(c->reply), nng_msg_body(c->reply));
        assert_non_null(rep);
        char want[32];
        snprintf(want, sizeof want, "s/st%d/action", c->step);
        assert_string_equal(rep->idempotency_key, want);
        assert_int_equal(rep->outcome, OUTCOME_OK);
        saga__v1__step_reply__free_unpacked(rep, NULL);
    }
}

static void test_one_frame_each_its_own_reply(void **state)
{
    fixture *f = *state;
    open_transport(f, WIRE_BATCH_MAX);
    for (int s = 0; s < 3; s++)
        queue(f, s, 5000);
    queue(f, 3, 7000); /* another timeout: another message */
    transport_flush(f->t);

    answer_frame(f, 3);

    answer_one_alone(f);
    wait_done(f, 4);
    check_own_replies(f);
    assert_int_equal(f->completions, 2); /* the frame's three at once, then the one alone */
}

/* Requests with two timeouts queued alternately still make one frame per timeout. */
static void test_one_frame_per_timeout_when_interleaved(void **state)
{
    fixture *f = *state;
    open_transport(f, WIRE_BATCH_MAX);
    for (int s = 0; s < 4; s++)
        queue(f, s, s % 2 ? 7000 : 5000);
    transport_flush(f->t);
    for (int m = 0; m < 2; m++)
        answer_frame(f, 2);
    wait_done(f, 4);
    check_own_replies(f);
}

static void test_frame_max_one_sends_alone(void **state)
{
    fixture *f = *state;
    open_transport(f, 1);
    for (int s = 0; s < 3; s++)
        queue(f, s, 5000);
    transport_flush(f->t);
    for (int i = 0; i < 3; i++)
        answer_one_alone(f);
    wait_done(f, 3);
    check_own_replies(f);
}

static void test_single_answer_to_a_frame_is_no_answer(void **state)
{
    fixture *f = *state;
    open_transport(f, WIRE_BATCH_MAX);
    for (int s = 0; s < 3; s++)
        queue(f, s, 5000);
    transport_flush(f->t);
    received r = receive(f);
    assert_true(wire_is_batch(nng_msg_body(r.msg), nng_msg_len(r.msg)));
    size_t len;
    kvmap none = KVMAP_INIT;
    uint8_t *rejected = wire_pack_reply("", OUTCOME_REJECTED, 0, &none, "malformed", &len);
    reply_with(f, &r, rejected, len);
    free(rejected);
    wait_done(f, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(f->done[i]->result, NNG_EPROTO);
        assert_null(f->done[i]->reply);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_frame_each_its_own_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_frame_per_timeout_when_interleaved, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_frame_max_one_sends_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_answer_to_a_frame_is_no_answer, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
