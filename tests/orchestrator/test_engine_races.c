/*
 * test_engine_races — the engine (orchestrator/engine.c) in this process,
 * driving a scripted participant that the test answers by hand, to pin down
 * orderings that the end-to-end tests can only hit by luck:
 *
 *   - a late reply from an earlier time a saga was in memory: a saga whose
 *     action request is still unanswered is aborted, its compensation is
 *     refused (FAILED, the saga leaves memory), and the operator resumes it
 *     (loaded again, the compensation re-sent). The old action's OK arriving
 *     now must be ignored as late, never taken as the compensation's reply:
 *     the saga completes its compensation only on the compensation's own
 *     reply.
 *   - an operator command refused in the same round in which the saga became
 *     FAILED: the saga is still queued for saving and settling, and must stay
 *     in memory until then (under AddressSanitizer a premature free is a
 *     use-after-free). The engine is held in a commit by a write lock the test
 *     takes on its database, so that the compensation's refusal and the abort
 *     are queued together and applied in one round.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine.h"
#include "harness.h"
#include "log.h"
#include "util.h"
#include "wire.h"

#define WAIT_MS 20000

/* ---- A participant answered by hand --------------------------------------- */

typedef struct {
    nng_ctx ctx;
    StepRequest *req;
} held_request;

/* Receives the next request on its own context, kept open to reply later. */
static int fake_receive(nng_socket sock, held_request *h)
{
    nng_aio *aio = NULL;
    int rv = nng_ctx_open(&h->ctx, sock);
    if (rv == 0)
        rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv != 0)
        return rv;
    nng_aio_set_timeout(aio, WAIT_MS);
    nng_ctx_recv(h->ctx, aio);
    nng_aio_wait(aio);
    rv = nng_aio_result(aio);
    if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(aio);
        h->req = saga__v1__step_request__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
        rv = h->req ? 0 : NNG_EINVAL;
    }
    nng_aio_free(aio);
    return rv;
}

static void fake_answer(held_request *h, int outcome)
{
    size_t len = 0;
    uint8_t *buf = wire_pack_reply(h->req->idempotency_key, outcome, 0, NULL,
                                   outcome == OUTCOME_OK ? NULL : "refused by the test", &len);
    assert_non_null(buf);
    nng_msg *m = NULL;
    assert_int_equal(nng_msg_alloc(&m, 0), 0);
    assert_int_equal(nng_msg_append(m, buf, len), 0);
    free(buf);
    nng_aio *aio = NULL;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_msg(aio, m);
    nng_aio_set_timeout(aio, WAIT_MS);
    nng_ctx_send(h->ctx, aio);
    nng_aio_wait(aio);
    assert_int_equal(nng_aio_result(aio), 0);
    nng_aio_free(aio);
    nng_ctx_close(h->ctx);
    saga__v1__step_request__free_unpacked(h->req, NULL);
    h->req = NULL;
}

static void fake_drop(held_request *h)
{
    nng_ctx_close(h->ctx);
    if (h->req)
        saga__v1__step_request__free_unpacked(h->req, NULL);
    h->req = NULL;
}

static void assert_request(const held_request *h, int phase, const char *operation)
{
    assert_non_null(h->req);
    assert_int_equal(h->req->phase, phase);
    assert_string_equal(h->req->operation, operation);
}

/* ---- Commands and their answers ------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, status;
    char saga_id[37];
} command;

static void command_init(command *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void command_done(void *arg, int status, const char *error, const char *saga_id,
                         int existing)
{
    (void)error;
    (void)existing;
    command *c = arg;
    pthread_mutex_lock(&c->mu);
    c->status = status;
    if (saga_id)
        snprintf(c->saga_id, sizeof c->saga_id, "%s", saga_id);
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* The command's status, once answered. */
static int command_wait(command *c)
{
    int64_t deadline = util_mono_ms() + WAIT_MS;
    pthread_mutex_lock(&c->mu);
    while (!c->done && util_mono_ms() < deadline) {
        pthread_mutex_unlock(&c->mu);
        util_sleep_ms(5);
        pthread_mutex_lock(&c->mu);
    }
    int status = c->done ? c->status : -1;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    return status;
}

/* ---- Fixture --------------------------------------------------------------- */

typedef struct {
    char *dir, *db_path;
    nng_socket participant;
    orch_config cfg;
    int cfg_loaded;
    engine *eng;
} fixture;

/* One saga type, "race": a single step on the scripted participant, with a
 * compensation that gets one attempt, so that one refusal makes it FAILED. */
static int setup(void **state)
{
    log_set_level(LOG_WARN);
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    *state = f;
    char *url = th_ipc_url(f->dir, "fake");
    char *orch = th_path(f->dir, "sagad.cfg");
    char *saga_file = th_path(f->dir, "race.cfg");
    f->db_path = th_path(f->dir, "sagad.db");
    char *orch_text = util_asprintf("database = \"sagad.db\";\n"
                                    "participants = { fake = \"%s\"; };\n"
                                    "defaults = { timeout_ms = 60000; };\n",
                                    url);
    const char *saga_text = "name = \"race\";\n"
                            "inputs = [\"x\"];\n"
                            "steps = ( { name = \"only\"; participant = \"fake\";\n"
                            "  action = \"act\"; compensation = \"undo\"; inputs = [\"x\"];\n"
                            "  retry = { max_attempts = 1; };\n"
                            "  compensation_retry = { max_attempts = 1; }; } );\n";
    int rc = -1;
    char err[512] = "";
    if (url && orch && saga_file && f->db_path && orch_text &&
        th_write_file(orch, orch_text) == 0 && th_write_file(saga_file, saga_text) == 0 &&
        nng_rep0_open(&f->participant) == 0 && nng_listen(f->participant, url, NULL, 0) == 0 &&
        config_load(orch, &f->cfg, err, sizeof err) == 0) {
        f->cfg_loaded = 1;
        f->eng = engine_create(&f->cfg, err, sizeof err);
        if (f->eng && engine_run_start(f->eng, err, sizeof err) == 0)
            rc = 0;
    }
    if (rc != 0)
        fprintf(stderr, "setup: %s\n", err);
    free(url);
    free(orch);
    free(saga_file);
    free(orch_text);
    return rc;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f == NULL)
        return 0;
    if (f->eng) {
        engine_stop(f->eng);
        engine_destroy(f->eng);
    }
    nng_close(f->participant);
    if (f->cfg_loaded)
        config_free(&f->cfg);
    th_rmtree(f->dir);
    free(f->dir);
    free(f->db_path);
    free(f);
    return 0;
}

static char *start_race_saga(fixture *f, const char *x)
{
    kvmap input = KVMAP_INIT;
    assert_int_equal(kv_set(&input, "x", x), 0);
    command c;
    command_init(&c);
    engine_start_saga(f->eng, "race", NULL, &input, command_done, &c);
    kv_free(&input);
    assert_int_equal(command_wait(&c), ENGINE_OK);
    return util_strdup(c.saga_id);
}

static int operator(fixture *f, int abort, const char *id)
{
    command c;
    command_init(&c);
    if (abort)
        engine_abort_saga(f->eng, id, NULL, "test", command_done, &c);
    else
        engine_resume_saga(f->eng, id, NULL, NULL, command_done, &c);
    return command_wait(&c);
}

static int64_t saga_state_on_disk(fixture *f, const char *id)
{
    return th_sql_int(f->db_path, "SELECT state FROM sagas WHERE id = %Q", id);
}

static int wait_state(fixture *f, const char *id, int state)
{
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (util_mono_ms() < deadline) {
        if (saga_state_on_disk(f, id) == state)
            return 0;
        util_sleep_ms(10);
    }
    print_message("saga %s: state %lld, expected %d\n", id, (long long)saga_state_on_disk(f, id),
                  state);
    return -1;
}

static uint64_t late_completions(fixture *f)
{
    engine_counters c;
    engine_get_counters(f->eng, &c);
    return c.late_completions;
}

/* ---- Tests ------------------------------------------------------------------ */

static void test_late_reply_from_earlier_life(void **state)
{
    fixture *f = *state;
    char *id = start_race_saga(f, "1");
    held_request action = {0}, comp1 = {0}, comp2 = {0};
    assert_int_equal(fake_receive(f->participant, &action), 0);
    assert_request(&action, PHASE_ACTION, "act");

    /* Abort while the action is unanswered: its compensation is sent. */
    assert_int_equal(operator(f, 1, id), ENGINE_OK);
    assert_int_equal(fake_receive(f->participant, &comp1), 0);
    assert_request(&comp1, PHASE_COMPENSATE, "undo");
    fake_answer(&comp1, OUTCOME_REJECTED); /* the only attempt: FAILED */
    assert_int_equal(wait_state(f, id, 5 /* FAILED */), 0);

    /* Resume: the saga is read back from disk and compensates again. */
    assert_int_equal(operator(f, 0, id), ENGINE_OK);
    assert_int_equal(fake_receive(f->participant, &comp2), 0);
    assert_request(&comp2, PHASE_COMPENSATE, "undo");

    /* The first action's reply arrives only now: late, ignored. */
    uint64_t late_before = late_completions(f);
    fake_answer(&action, OUTCOME_OK);
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (late_completions(f) == late_before && util_mono_ms() < deadline)
        util_sleep_ms(5);
    assert_int_equal(late_completions(f), late_before + 1);
    assert_int_equal(saga_state_on_disk(f, id), 2 /* COMPENSATING */);
    assert_int_equal(th_sql_int(f->db_path,
                                "SELECT count(*) FROM saga_history WHERE saga_id = %Q "
                                "AND kind = 'step_reply' AND outcome = %d",
                                id, OUTCOME_OK),
                     0);

    /* The compensation's own reply ends it. */
    fake_answer(&comp2, OUTCOME_OK);
    assert_int_equal(wait_state(f, id, 4 /* COMPENSATED */), 0);
    free(id);
}

static void test_refused_command_in_the_round_of_failure(void **state)
{
    fixture *f = *state;
    char *id = start_race_saga(f, "1");
    held_request action = {0}, comp = {0}, other = {0};
    assert_int_equal(fake_receive(f->participant, &action), 0);
    assert_int_equal(operator(f, 1, id), ENGINE_OK);
    assert_int_equal(fake_receive(f->participant, &comp), 0);
    assert_request(&comp, PHASE_COMPENSATE, "undo");

    /* Hold the engine in the commit of another saga's start. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    kvmap input = KVMAP_INIT;
    assert_int_equal(kv_set(&input, "x", "2"), 0);
    command start;
    command_init(&start);
    engine_start_saga(f->eng, "race", NULL, &input, command_done, &start);
    kv_free(&input);
    util_sleep_ms(200); /* the engine takes the start and waits for the lock */

    /* Queued behind it, in this order: the compensation refused (FAILED),
     * then an abort, which a saga failed in compensation refuses. The engine
     * gives up on a lock after 5 s: both are queued well before. */
    fake_answer(&comp, OUTCOME_REJECTED);
    util_sleep_ms(200);
    command abort_cmd;
    command_init(&abort_cmd);
    engine_abort_saga(f->eng, id, NULL, "test", command_done, &abort_cmd);
    util_sleep_ms(100);
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_int_equal(command_wait(&start), ENGINE_OK);
    assert_int_equal(command_wait(&abort_cmd), ENGINE_INVALID_STATE);
    assert_int_equal(wait_state(f, id, 5 /* FAILED */), 0);

    /* The engine goes on serving: the failed saga can still be resumed. */
    assert_int_equal(fake_receive(f->participant, &other), 0); /* the second saga's action */
    assert_int_equal(operator(f, 0, id), ENGINE_OK);
    held_request comp2 = {0};
    assert_int_equal(fake_receive(f->participant, &comp2), 0);
    assert_request(&comp2, PHASE_COMPENSATE, "undo");
    fake_answer(&comp2, OUTCOME_OK);
    assert_int_equal(wait_state(f, id, 4 /* COMPENSATED */), 0);
    fake_drop(&action);
    fake_drop(&other);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_late_reply_from_earlier_life, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_command_in_the_round_of_failure, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
