/*
 * test_orch_outcome — a reply must say what happened: the real sagad,
 * sagactl and three of the services (orch_fixture.h), with the shipping
 * participant replaced by one written here by hand, outside the runtime. It
 * answers every action with StepReply bytes it builds itself: one without
 * an outcome field (proto3 reads it as 0, OUTCOME_UNSPECIFIED), and one
 * with outcome 99 (a value from a future protocol). Its compensations are
 * answered OK.
 *
 * Covered: such a reply is no reply. sagad retries the action with the same
 * key until the step's attempts are spent, then compensates INCLUDING that
 * step (its effect is unknown): the saga ends COMPENSATED, never COMPLETED,
 * the hand-written participant receives the step's compensation, and the
 * books balance.
 *
 * The admin wire too: sagactl against a hand-written "sagad" whose reply
 * has no status (0, ADMIN_STATUS_UNSPECIFIED) or a status from the future
 * reports an error and exits 1, never reads it as ADMIN_OK.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch_fixture.h"
#include "wire.h"

#define ACTION_ATTEMPTS 3

/* ---- The hand-written participant ----------------------------------------- */

typedef struct {
    nng_socket sock;
    pthread_t thread;
    atomic_int stop;
    int action_outcome; /* < 0: the action's reply has no outcome field */
    atomic_int actions, compensations, mismatched_keys;
    char action_key[128]; /* the first action's key; every retry must repeat it */
} fake_participant;

/* Appends a length-delimited field (tag, length, bytes); the length is < 128. */
static size_t put_bytes(uint8_t *out, size_t o, uint8_t tag, const char *s)
{
    size_t n = strlen(s);
    out[o++] = tag;
    out[o++] = (uint8_t)n;
    memcpy(out + o, s, n);
    return o + n;
}

/* A StepReply built byte by byte: field 1 (the key), field 2 (the outcome)
 * unless outcome < 0. */
static size_t hand_reply(uint8_t *out, const char *key, int outcome)
{
    size_t o = put_bytes(out, 0, 0x0A, key);
    if (outcome >= 0) {
        out[o++] = 0x10;             /* field 2, varint */
        out[o++] = (uint8_t)outcome; /* < 128: one byte */
    }
    return o;
}

/* The reply to one request (a StepRequest decoded with the generated code). */
static size_t fake_answer(fake_participant *fp, const uint8_t *msg, size_t len, uint8_t *out)
{
    StepRequest *rq = saga__v1__step_request__unpack(NULL, len, msg);
    if (rq == NULL)
        return 0;
    size_t n;
    if ((int)rq->phase == PHASE_ACTION) {
        if (atomic_fetch_add(&fp->actions, 1) == 0)
            snprintf(fp->action_key, sizeof fp->action_key, "%s", rq->idempotency_key);
        else if (strcmp(fp->action_key, rq->idempotency_key) != 0)
            atomic_fetch_add(&fp->mismatched_keys, 1);
        n = hand_reply(out, rq->idempotency_key, fp->action_outcome);
    } else {
        atomic_fetch_add(&fp->compensations, 1);
        n = hand_reply(out, rq->idempotency_key, 1); /* OUTCOME_OK in protocol version 2 */
    }
    saga__v1__step_request__free_unpacked(rq, NULL);
    return n;
}

static void *fake_serve(void *arg)
{
    fake_participant *fp = arg;
    while (!atomic_load(&fp->stop)) {
        nng_msg *m = NULL;
        if (nng_recvmsg(fp->sock, &m, 0) != 0)
            continue; /* the receive timeout: look at stop again */
        uint8_t reply[WIRE_BATCH_MAX][160];
        const uint8_t *items[WIRE_BATCH_MAX];
        size_t lens[WIRE_BATCH_MAX], n = 0, len = 0;
        uint8_t *frame = NULL;
        StepBatch *b = wire_unpack_batch(nng_msg_body(m), nng_msg_len(m));
        if (b != NULL) {
            for (n = 0; n < b->n_items; n++) {
                lens[n] = fake_answer(fp, b->items[n].data, b->items[n].len, reply[n]);
                items[n] = reply[n];
            }
            frame = wire_pack_batch(n, items, lens, &len);
            saga__v1__step_batch__free_unpacked(b, NULL);
        } else {
            len = fake_answer(fp, nng_msg_body(m), nng_msg_len(m), reply[0]);
        }
        nng_msg_clear(m);
        if (nng_msg_append(m, frame ? frame : reply[0], len) != 0 ||
            nng_sendmsg(fp->sock, m, 0) != 0)
            nng_msg_free(m);
        free(frame);
    }
    return NULL;
}

static int fake_start(fake_participant *fp, const char *url, int action_outcome)
{
    memset(fp, 0, sizeof *fp);
    fp->action_outcome = action_outcome;
    if (nng_rep0_open(&fp->sock) != 0)
        return -1;
    nng_socket_set_ms(fp->sock, NNG_OPT_RECVTIMEO, 100);
    if (nng_listen(fp->sock, url, NULL, 0) != 0 ||
        pthread_create(&fp->thread, NULL, fake_serve, fp) != 0) {
        nng_close(fp->sock);
        return -1;
    }
    return 0;
}

static void fake_stop(fake_participant *fp)
{
    atomic_store(&fp->stop, 1);
    pthread_join(fp->thread, NULL);
    nng_close(fp->sock);
}

/* ---- Fixture ---------------------------------------------------------------- */

typedef struct {
    ofx f;
    fake_participant fp;
    int fake_running;
} outcome_fixture;

static int setup(void **state)
{
    outcome_fixture *x = calloc(1, sizeof *x);
    if (x == NULL)
        return -1;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    outcome_fixture *x = *state;
    int rc = 0;
    if (x == NULL)
        return 0;
    if (x->f.sagad.pid > 0 && ofx_stop_sagad(&x->f) != 0)
        rc = -1; /* a crash or a (sanitizer) leak at shutdown fails the test */
    if (x->fake_running)
        fake_stop(&x->fp);
    ofx_destroy(&x->f);
    free(x);
    *state = NULL;
    return rc;
}

/*
 * Runs one saga against the hand-written shipping participant answering
 * its actions with action_outcome (< 0: no outcome field) and checks that
 * the step was retried with its key, then compensated with the others.
 */
static void run_against_fake(outcome_fixture *x, int action_outcome)
{
    ofx *f = &x->f;
    ofx_opts o = {.action_attempts = ACTION_ATTEMPTS};
    char id[37];
    assert_int_equal(ofx_init(f, &o), 0);
    for (int i = 0; i < OFX_N_SVC; i++)
        if (i != SVC_SHIPPING)
            assert_int_equal(ofx_start_svc(f, i, NULL), 0);
    assert_int_equal(fake_start(&x->fp, f->svc[SVC_SHIPPING].url, action_outcome), 0);
    x->fake_running = 1;
    assert_int_equal(ofx_start_sagad(f, NULL), 0);

    assert_int_equal(
        ofx_start_order(f, "outcome-1", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL),
        0);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    /* Never taken as OK (COMPLETED), never as "no effect" (the step's own
     * compensation skipped). */
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "schedule_shipping"), "state"), "COMPENSATED");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "approve_order"), "state"), "PENDING");
    json_decref(st);
    assert_int_equal(atomic_load(&x->fp.actions), ACTION_ATTEMPTS);
    assert_int_equal(atomic_load(&x->fp.mismatched_keys), 0);
    assert_true(atomic_load(&x->fp.compensations) >= 1);
    char expected_key[128];
    snprintf(expected_key, sizeof expected_key, "%s/schedule_shipping/action", id);
    assert_string_equal(x->fp.action_key, expected_key);

    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "step_no_reply", "schedule_shipping", "action"),
                     ACTION_ATTEMPTS);
    assert_int_equal(ofx_history_count(h, "step_reply", "schedule_shipping", "action"), 0);
    json_decref(h);
    assert_int_equal(ofx_books_balanced(f), 0);
}

static void test_reply_without_outcome(void **state)
{
    run_against_fake(*state, -1);
}

static void test_reply_with_future_outcome(void **state)
{
    run_against_fake(*state, 99);
}

/* sagactl stats against a socket that answers its one request with `reply`
 * (len bytes); returns sagactl's exit code, its output in *out. */
static int sagactl_against(const uint8_t *reply, size_t len, char **out)
{
    char *dir = th_tempdir();
    assert_non_null(dir);
    char *url = th_ipc_url(dir, "fake-sagad"), *out_path = th_path(dir, "ctl.out");
    nng_socket s;
    assert_int_equal(nng_rep0_open(&s), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 20000), 0);
    assert_int_equal(nng_listen(s, url, NULL, 0), 0);
    const char *args[] = {"--url", url, "--timeout", "20000", "stats", NULL};
    pid_t pid;
    assert_int_equal(th_spawn("sagactl", args, NULL, out_path, &pid), 0);
    nng_msg *req = NULL;
    assert_int_equal(nng_recvmsg(s, &req, 0), 0);
    nng_msg_free(req);
    assert_int_equal(nng_send(s, (void *)reply, len, 0), 0);
    int status = -1;
    assert_int_equal(th_wait_exit(pid, OFX_CTL_MS, &status), 0);
    nng_close(s);
    *out = th_read_file(out_path);
    th_rmtree(dir);
    free(out_path);
    free(url);
    free(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_admin_reply_without_status(void **state)
{
    (void)state;
    static const uint8_t empty[1];                /* no field at all: status 0, no body */
    static const uint8_t future[] = {0x08, 0x63}; /* status = 99 */
    char *out = NULL;
    assert_int_equal(sagactl_against(empty, 0, &out), 1);
    print_message("no status: %s", out);
    assert_non_null(strstr(out, "has no status"));
    free(out);
    assert_int_equal(sagactl_against(future, sizeof future, &out), 1);
    print_message("status 99: %s", out);
    assert_non_null(strstr(out, "unknown error"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reply_without_outcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_with_future_outcome, setup, teardown),
        cmocka_unit_test(test_admin_reply_without_status),
    };
    return cmocka_run_group_tests_name("orchestrator: replies without a known outcome", tests, NULL,
                                       NULL);
}
