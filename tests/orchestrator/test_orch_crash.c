/*
 * test_orch_crash — sagad killed at every named crash point, and at a
 * random moment with many sagas in flight, then restarted on the same
 * database: every saga must end as it would have without the crash, and
 * every participant effect must be applied exactly once.
 *
 * Crash points (orchestrator/engine.h; grep crashpoint(" in orchestrator/):
 *   engine.after_intent_commit, engine.after_send,
 *   engine.before_outcome_commit   each at hits 1..5 of a saga that completes
 *                                  (a hit per step: the kill lands before,
 *                                  while and after each step's request);
 *   engine.in_compensation         at hits 1..3 of a saga refused by shipping
 *                                  (one hit per compensation sent);
 *   engine.after_early_send        at hits 1..3 (steps 2 to 4 leave before
 *                                  their intent is committed), of a saga that
 *                                  completes and of one refused by shipping;
 *                                  and with the deadline passing while sagad
 *                                  is down, so that the early step is owned
 *                                  up and compensated.
 * Each scenario: sagad runs with SAGA_CRASH_POINT=<point>:<hit>, a client
 * starts a saga with a key, sagad dies of SIGKILL by itself, it is restarted
 * without the variable, the client repeats its start (same key: the same
 * saga, "existing"), and the saga must reach its final state with one
 * "recovered" event in its history. Then the participants' rows of that saga
 * and the deltas of their effect counters prove exactly-once.
 *
 * The random kill: ~50 sagas (completing and refused ones) started at once
 * by concurrent sagactl processes; sagad is SIGKILLed after a random delay
 * (the seed is printed), restarted, each client repeats its start with its
 * key; every saga must end COMPLETED or COMPENSATED as its input says, and
 * orders, money and stock must add up exactly.
 *
 * And a clean stop (SIGTERM) with sagas in flight: exit 0, then the restart
 * finishes them, each effect once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "orch_fixture.h"
#include "util.h"

/* Four participants up (shipping with these faults), sagad not started. */
static int setup_with(void **state, const ofx_opts *o, const char *shipping_faults)
{
    ofx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f;
    if (ofx_init(f, o) != 0)
        return -1;
    for (int i = 0; i < OFX_N_SVC; i++)
        if (ofx_start_svc(f, i, i == SVC_SHIPPING ? shipping_faults : NULL) != 0)
            return -1;
    return 0; /* each test starts sagad as it needs */
}

static int setup(void **state)
{
    /* Generous attempts: only the crash may disturb a saga. */
    ofx_opts o = {.action_attempts = 30, .comp_attempts = 30, .pivot_attempts = 40};
    return setup_with(state, &o, NULL);
}

/* Every reply of shipping-svc is held BULK_HOLD_MS (well within the step
 * timeout): a saga stays in flight at least that long after its start. Long
 * enough that reaping fifty sagactl processes on a loaded two-core machine
 * (load average 40 seen) cannot outlast it, which would let every saga
 * finish before the kill the tests rely on. */
#define BULK_HOLD_MS 1500
static int setup_bulk(void **state)
{
    ofx_opts o = {
        .timeout_ms = 15000, .action_attempts = 30, .comp_attempts = 30, .pivot_attempts = 40};
    char faults[64];
    snprintf(faults, sizeof faults, "seed=1,delay=1,delay_ms=%d", BULK_HOLD_MS);
    return setup_with(state, &o, faults);
}

static int teardown(void **state)
{
    ofx *f = *state;
    int rc = 0;
    if (f == NULL)
        return 0;
    if (f->sagad.pid > 0 && ofx_stop_sagad(f) != 0)
        rc = -1;
    ofx_destroy(f);
    free(f);
    *state = NULL;
    return rc;
}

static int64_t balance(ofx *f, const char *customer)
{
    return ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = %Q", customer);
}

typedef struct {
    int64_t effects[OFX_N_SVC];
    int64_t alice;
    int64_t widgets;
} snapshot;

static void take_snapshot(ofx *f, snapshot *s)
{
    for (int i = 0; i < OFX_N_SVC; i++) {
        s->effects[i] = ofx_counter(f, i, "effects");
        assert_true(s->effects[i] >= 0);
    }
    s->alice = balance(f, "alice");
    s->widgets = ofx_sql(f, SVC_INVENTORY, "SELECT available FROM skus WHERE sku = 'WIDGET-1'");
}

/*
 * One scenario: a saga for alice (refused by shipping when refused is set)
 * with sagad armed to die at point:hit; restart; the same start again.
 */
static void crash_scenario(ofx *f, const char *point, int hit, int refused)
{
    char armed[96], key[128], amount[16], first_id[37] = "", id[37];
    int existing = -1;
    snapshot before, after;
    const char *dest = refused ? "tokyo" : "lisbon";
    snprintf(armed, sizeof armed, "%s:%d", point, hit);
    snprintf(key, sizeof key, "crash/%s/%d%s", point, hit, refused ? "/refused" : "");
    snprintf(amount, sizeof amount, "%d", 100 + hit);
    print_message("scenario %s%s\n", armed, refused ? " (refused by shipping)" : "");
    take_snapshot(f, &before);

    assert_int_equal(ofx_start_sagad(f, armed), 0);
    /* The start may go unanswered: the kill can come before its answer. */
    f->ctl_timeout_ms = 3000;
    int code =
        ofx_start_order(f, key, "alice", "WIDGET-1", "1", amount, dest, first_id, NULL, NULL);
    f->ctl_timeout_ms = 0;
    if (code != 0)
        first_id[0] = '\0';
    /* sagad dies by itself at the armed point, mid-saga. */
    assert_int_equal(ofx_wait_sagad_killed(f, OFX_WAIT_MS), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);

    /* The client repeats its start: the saga was committed before any
     * crash point, so it is the same one. */
    assert_int_equal(
        ofx_start_order(f, key, "alice", "WIDGET-1", "1", amount, dest, id, &existing, NULL), 0);
    assert_int_equal(existing, 1);
    if (first_id[0])
        assert_string_equal(id, first_id);

    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), refused ? "COMPENSATED" : "COMPLETED");
    json_decref(st);
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    /* It was recovered by the restart, not finished before the kill. */
    assert_int_equal(ofx_history_count(h, "recovered", NULL, NULL), 1);
    if (refused) {
        char *order = ofx_history_steps(h, "step_sent", "compensate");
        OFX_ASSERT_STR(order, "reserve_stock,charge_payment,create_order");
        free(order);
    }
    json_decref(h);

    /* Exactly once, in every participant. */
    take_snapshot(f, &after);
    assert_int_equal(ofx_sql(f, SVC_ORDER,
                             "SELECT count(*) FROM orders WHERE saga_id = %Q AND state = %Q", id,
                             refused ? "cancelled" : "approved"),
                     1);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", id),
                     1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT,
                             "SELECT count(*) FROM charges WHERE saga_id = %Q AND state = %Q", id,
                             refused ? "refunded" : "charged"),
                     1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", id),
                     1);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY,
                             "SELECT count(*) FROM reservations WHERE saga_id = %Q AND state = %Q",
                             id, refused ? "released" : "reserved"),
                     1);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE saga_id = %Q", id), 1);
    assert_int_equal(
        ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments WHERE saga_id = %Q", id),
        refused ? 0 : 1);
    if (refused) {
        /* Each done step: one effect and one undo. */
        assert_int_equal(after.effects[SVC_ORDER] - before.effects[SVC_ORDER], 2);
        assert_int_equal(after.effects[SVC_PAYMENT] - before.effects[SVC_PAYMENT], 2);
        assert_int_equal(after.effects[SVC_INVENTORY] - before.effects[SVC_INVENTORY], 2);
        assert_int_equal(after.effects[SVC_SHIPPING] - before.effects[SVC_SHIPPING], 0);
        assert_int_equal(after.alice, before.alice);
        assert_int_equal(after.widgets, before.widgets);
    } else {
        assert_int_equal(after.effects[SVC_ORDER] - before.effects[SVC_ORDER], 2);
        assert_int_equal(after.effects[SVC_PAYMENT] - before.effects[SVC_PAYMENT], 1);
        assert_int_equal(after.effects[SVC_INVENTORY] - before.effects[SVC_INVENTORY], 1);
        assert_int_equal(after.effects[SVC_SHIPPING] - before.effects[SVC_SHIPPING], 1);
        assert_int_equal(after.alice, before.alice - (100 + hit));
        assert_int_equal(after.widgets, before.widgets - 1);
    }
    assert_int_equal(ofx_books_balanced(f), 0);

    /* Ready for the next scenario: a clean stop. */
    assert_int_equal(ofx_stop_sagad(f), 0);
}

static void crash_point_matrix(ofx *f, const char *point, int hits, int refused)
{
    for (int hit = 1; hit <= hits; hit++)
        crash_scenario(f, point, hit, refused);
}

static void test_crash_after_intent_commit(void **state)
{
    crash_point_matrix(*state, "engine.after_intent_commit", 5, 0);
}

static void test_crash_after_send(void **state)
{
    crash_point_matrix(*state, "engine.after_send", 5, 0);
}

static void test_crash_before_outcome_commit(void **state)
{
    crash_point_matrix(*state, "engine.before_outcome_commit", 5, 0);
}

static void test_crash_in_compensation(void **state)
{
    crash_point_matrix(*state, "engine.in_compensation", 3, 1);
}

/* Steps 2 to 4 leave early, before the commit of their intent (approve_order,
 * a pivot, never does): killed there, the restart asks the step before
 * again, then sends the early one with the same key; both ways through. */
static void test_crash_after_early_send(void **state)
{
    crash_point_matrix(*state, "engine.after_early_send", 3, 0);
    crash_point_matrix(*state, "engine.after_early_send", 3, 1);
}

/*
 * Killed after step hit+1 left early, and the saga's deadline passes while
 * sagad is down: the restart compensates at once, before the step before
 * answers again. The early step is PENDING on disk; it is owned up
 * (step_maybe_sent) and compensated first, whether its request reached its
 * participant before the kill or not (the barrier makes that a null
 * compensation and fences the late action): nothing stays charged,
 * reserved or scheduled.
 */
#define EARLY_DEADLINE_S 6
static void crash_early_then_deadline(ofx *f, int hit)
{
    static const char *const early_step[] = {"charge_payment", "reserve_stock",
                                             "schedule_shipping"};
    char armed[64], key[64], amount[32], deadline[16];
    snprintf(armed, sizeof armed, "engine.after_early_send:%d", hit);
    snprintf(key, sizeof key, "early-deadline/%d", hit);
    snprintf(amount, sizeof amount, "amount=%d", 200 + hit);
    snprintf(deadline, sizeof deadline, "%ds", EARLY_DEADLINE_S);
    print_message("scenario %s, then the deadline passes\n", armed);
    snapshot before, after;
    take_snapshot(f, &before);

    assert_int_equal(ofx_start_sagad(f, armed), 0);
    int64_t started = util_mono_ms();
    f->ctl_timeout_ms = 3000;
    char *out = NULL;
    ofx_ctl(f, &out, "--json", "start", "order_fulfillment", "--key", key, "--deadline", deadline,
            "customer=alice", "sku=WIDGET-1", "quantity=1", amount, "destination=lisbon", NULL);
    free(out);
    f->ctl_timeout_ms = 0;
    assert_int_equal(ofx_wait_sagad_killed(f, OFX_WAIT_MS), 0);
    int64_t left = started + EARLY_DEADLINE_S * 1000 + 500 - util_mono_ms();
    if (left > 0)
        util_sleep_ms(left);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);

    char id[37];
    int existing = -1;
    assert_int_equal(ofx_start_order(f, key, "alice", "WIDGET-1", "1", amount + 7, "lisbon", id,
                                     &existing, NULL),
                     0);
    assert_int_equal(existing, 1);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    json_decref(st);
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "recovered", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "deadline_passed", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "step_maybe_sent", early_step[hit - 1], "action"), 1);
    assert_int_equal(ofx_history_count(h, "step_maybe_sent", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "step_sent", early_step[hit - 1], "compensate"), 1);
    json_decref(h);

    take_snapshot(f, &after);
    assert_int_equal(after.alice, before.alice);
    assert_int_equal(after.widgets, before.widgets);
    assert_int_equal(
        ofx_sql(f, SVC_ORDER,
                "SELECT count(*) FROM orders WHERE saga_id = %Q AND state <> 'cancelled'", id),
        0);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT,
                "SELECT count(*) FROM charges WHERE saga_id = %Q AND state = 'charged'", id),
        0);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY,
                "SELECT count(*) FROM reservations WHERE saga_id = %Q AND state = 'reserved'", id),
        0);
    assert_int_equal(
        ofx_sql(f, SVC_SHIPPING,
                "SELECT count(*) FROM shipments WHERE saga_id = %Q AND state = 'scheduled'", id),
        0);
    assert_int_equal(ofx_books_balanced(f), 0);
    assert_int_equal(ofx_stop_sagad(f), 0);
}

static void test_crash_after_early_send_then_deadline(void **state)
{
    for (int hit = 1; hit <= 3; hit++)
        crash_early_then_deadline(*state, hit);
}

/* ---- A kill at a random moment, ~50 sagas in flight ---------------------- */

#define BULK_SAGAS 50

enum bulk_class { BULK_COMPLETE, BULK_NO_FUNDS, BULK_NOT_SERVED };

typedef struct {
    enum bulk_class cls;
    char key[32];
    char customer[16], amount[16], destination[16];
    char *out_path;
    pid_t pid;
    int first_code;
    char id[37];
} bulk_saga;

static void bulk_plan(bulk_saga *b, int i)
{
    memset(b, 0, sizeof *b);
    b->cls = i % 5 == 1 ? BULK_NO_FUNDS : i % 5 == 3 ? BULK_NOT_SERVED : BULK_COMPLETE;
    snprintf(b->key, sizeof b->key, "bulk-%d", i);
    snprintf(b->customer, sizeof b->customer, "%s", b->cls == BULK_NO_FUNDS ? "carol" : "dave");
    snprintf(b->amount, sizeof b->amount, "%d", b->cls == BULK_NO_FUNDS ? 90000 : 1000 + i);
    snprintf(b->destination, sizeof b->destination, "%s",
             b->cls == BULK_NOT_SERVED ? "atlantis" : "madrid");
}

static int bulk_spawn(ofx *f, bulk_saga *b)
{
    char customer[32], amount[32], dest[48];
    snprintf(customer, sizeof customer, "customer=%s", b->customer);
    snprintf(amount, sizeof amount, "amount=%s", b->amount);
    snprintf(dest, sizeof dest, "destination=%s", b->destination);
    const char *args[] = {"--url",        f->sagad.url,        "--timeout", "10000", "--json",
                          "start",        "order_fulfillment", "--key",     b->key,  customer,
                          "sku=WIDGET-1", "quantity=1",        amount,      dest,    NULL};
    return th_spawn("sagactl", args, NULL, b->out_path, &b->pid);
}

static void bulk_reap(bulk_saga *b)
{
    int status = 0;
    if (b->pid <= 0)
        return; /* reaped already */
    b->first_code = -1;
    if (th_wait_exit(b->pid, OFX_CTL_MS, &status) != 0) {
        th_kill(b->pid);
    } else if (WIFEXITED(status)) {
        b->first_code = WEXITSTATUS(status);
    }
    b->pid = 0;
    if (b->first_code == 0) {
        char *text = th_read_file(b->out_path);
        json_t *doc = tj_parse(text);
        const char *id = tj_str(doc, "saga_id");
        if (id)
            snprintf(b->id, sizeof b->id, "%s", id);
        else
            b->first_code = -1;
        json_decref(doc);
        free(text);
    }
}

static void test_random_kill_many_in_flight(void **state)
{
    ofx *f = *state;
    bulk_saga *b = calloc(BULK_SAGAS, sizeof *b);
    assert_non_null(b);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const char *env_seed = getenv("SAGA_TEST_SEED");
    if (env_seed && *env_seed)
        seed = (unsigned)strtoul(env_seed, NULL, 10);
    util_prng rng;
    util_prng_seed(&rng, seed);
    /* Either during the starts (some go unanswered: their clients repeat
     * them after the restart), or within BULK_HOLD_MS of the last answered
     * start (that saga, at least, is in flight: it cannot have finished). */
    int during_starts = util_prng_unit(&rng) < 0.5;
    int delay_ms = (int)(util_prng_unit(&rng) * (during_starts ? 150 : BULK_HOLD_MS / 3));
    print_message("random kill: seed %u (SAGA_TEST_SEED), SIGKILL %d ms after %s\n", seed, delay_ms,
                  during_starts ? "the last start was sent" : "the last start's answer");

    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    for (int i = 0; i < BULK_SAGAS; i++) {
        char name[32];
        bulk_plan(&b[i], i);
        snprintf(name, sizeof name, "bulk-%d.out", i);
        b[i].out_path = th_path(f->dir, name);
        assert_int_equal(bulk_spawn(f, &b[i]), 0);
    }
    if (!during_starts)
        for (int i = 0; i < BULK_SAGAS; i++)
            bulk_reap(&b[i]);
    util_sleep_ms(delay_ms);
    ofx_kill_sagad(f);
    for (int i = 0; i < BULK_SAGAS; i++)
        bulk_reap(&b[i]);
    int answered = 0;
    for (int i = 0; i < BULK_SAGAS; i++)
        answered += b[i].first_code == 0;
    print_message("random kill: %d of %d starts answered before the kill\n", answered, BULK_SAGAS);
    if (!during_starts)
        assert_int_equal(answered, BULK_SAGAS);

    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    /* Every client repeats its start with its key, as a real one would. */
    int64_t expect_charged = 0;
    int n_complete = 0, n_no_funds = 0, n_not_served = 0;
    for (int i = 0; i < BULK_SAGAS; i++) {
        char id[37];
        int existing = -1;
        assert_int_equal(ofx_start_order(f, b[i].key, b[i].customer, "WIDGET-1", "1", b[i].amount,
                                         b[i].destination, id, &existing, NULL),
                         0);
        if (b[i].first_code == 0) { /* acknowledged: it must have survived */
            assert_string_equal(id, b[i].id);
            assert_int_equal(existing, 1);
        }
        snprintf(b[i].id, sizeof b[i].id, "%s", id);
        n_complete += b[i].cls == BULK_COMPLETE;
        n_no_funds += b[i].cls == BULK_NO_FUNDS;
        n_not_served += b[i].cls == BULK_NOT_SERVED;
        if (b[i].cls == BULK_COMPLETE)
            expect_charged += atoi(b[i].amount);
    }
    for (int i = 0; i < BULK_SAGAS; i++) {
        json_t *st = ofx_wait_final(f, b[i].id, OFX_WAIT_MS);
        assert_non_null(st);
        OFX_ASSERT_STR(tj_str(st, "state"),
                       b[i].cls == BULK_COMPLETE ? "COMPLETED" : "COMPENSATED");
        json_decref(st);
    }

    /* How many the restart had to recover. */
    int recovered = 0;
    for (int i = 0; i < BULK_SAGAS; i++) {
        json_t *h = ofx_history(f, b[i].id);
        assert_non_null(h);
        recovered += ofx_history_count(h, "recovered", NULL, NULL) > 0;
        json_decref(h);
    }
    print_message("random kill: %d sagas recovered by the restart\n", recovered);
    if (!during_starts)
        assert_true(recovered >= 1);

    /* One saga per key: the list holds exactly the 50. */
    char *out = NULL;
    assert_int_equal(ofx_ctl(f, &out, "--json", "list", "--limit", "1000", NULL), 0);
    json_t *list = tj_parse(out);
    free(out);
    assert_non_null(list);
    assert_int_equal(json_array_size(json_object_get(list, "sagas")), BULK_SAGAS);
    json_decref(list);

    /* Orders: one per saga, approved or cancelled as the input says. */
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders"), BULK_SAGAS);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state = 'approved'"),
                     n_complete);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state = 'cancelled'"),
                     n_no_funds + n_not_served);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(DISTINCT saga_id) FROM orders"),
                     BULK_SAGAS);
    /* Money: each completed saga charged once, the refused ones refunded or never charged. */
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE state = 'charged'"),
        n_complete);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE state = 'refunded'"),
        n_not_served);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"),
                     n_complete + n_not_served);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT,
                "SELECT coalesce(sum(amount), 0) FROM charges WHERE state = 'charged'"),
        expect_charged);
    assert_int_equal(balance(f, "dave"), SEED_DAVE - expect_charged);
    assert_int_equal(balance(f, "carol"), SEED_CAROL);
    /* Stock: one unit per completed saga. */
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE state = 'reserved'"),
        n_complete);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations"),
                     n_complete + n_not_served);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT available FROM skus WHERE sku = 'WIDGET-1'"),
                     SEED_WIDGET - n_complete);
    /* Shipments: one per completed saga. */
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), n_complete);
    assert_int_equal(
        ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments WHERE state = 'scheduled'"),
        n_complete);
    assert_int_equal(ofx_books_balanced(f), 0);

    for (int i = 0; i < BULK_SAGAS; i++)
        free(b[i].out_path);
    free(b);
}

/* A clean stop (SIGTERM) with sagas in flight: sagad exits 0 at once, and
 * the next start picks them up where they were; nothing twice. */
static void test_sigterm_in_flight(void **state)
{
    ofx *f = *state;
    enum { N = 10 };
    char ids[N][37];
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    for (int i = 0; i < N; i++) {
        char key[32], amount[16];
        snprintf(key, sizeof key, "term-%d", i);
        snprintf(amount, sizeof amount, "%d", 500 + i);
        assert_int_equal(
            ofx_start_order(f, key, "dave", "WIDGET-1", "1", amount, "oslo", ids[i], NULL, NULL),
            0);
    }
    /* The last one cannot be past shipping yet: BULK_HOLD_MS holds it. */
    assert_int_equal(ofx_stop_sagad(f), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    int recovered = 0;
    int64_t charged = 0;
    for (int i = 0; i < N; i++) {
        json_t *st = ofx_wait_final(f, ids[i], OFX_WAIT_MS);
        assert_non_null(st);
        OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
        json_decref(st);
        json_t *h = ofx_history(f, ids[i]);
        assert_non_null(h);
        recovered += ofx_history_count(h, "recovered", NULL, NULL);
        json_decref(h);
        charged += 500 + i;
    }
    print_message("sigterm: %d sagas recovered by the restart\n", recovered);
    assert_true(recovered >= 1);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state = 'approved'"),
                     N);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders"), N);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), N);
    assert_int_equal(balance(f, "dave"), SEED_DAVE - charged);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations"), N);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), N);
    for (int i = 0; i < OFX_N_SVC; i++)
        assert_int_equal(ofx_counter(f, i, "effects"), i == SVC_ORDER ? 2 * N : N);
    assert_int_equal(ofx_books_balanced(f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crash_after_intent_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_after_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_before_outcome_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_in_compensation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_after_early_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_after_early_send_then_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_kill_many_in_flight, setup_bulk, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_in_flight, setup_bulk, teardown),
    };
    return cmocka_run_group_tests_name("orchestrator crash recovery", tests, NULL, NULL);
}
