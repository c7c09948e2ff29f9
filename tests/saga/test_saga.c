/*
 * test_saga — the saga state machine (orchestrator/saga.c) against a fake
 * environment.
 *
 * The fake saga_env has a monotonic and a wall clock the tests advance by
 * hand, a settable random_unit, and records, in order, every send (step,
 * phase, attempt, token), every timer scheduled, every history event and
 * every settlement. Each event fed to the saga goes through a helper that
 * first "commits" (clears the dirty flags, as the engine does after storing)
 * and afterwards asserts saga_check_invariants() == NULL, so every test also
 * checks the invariants at every transition.
 *
 * The saga type is built by hand: five steps, the last without compensation.
 *
 *   step     participant  action   compensation     inputs
 *   reserve  inventory    reserve  release          (all)
 *   charge   payment      charge   refund           order_id amount reservation_id
 *   ship     shipping     ship     cancel_shipment  order_id payment_id amount gift_note
 *   invoice  billing      invoice  void_invoice     (all)
 *   notify   mailer       notify   (none)           invoice_id status
 *
 * The last three tests are regressions of defects these tests found in saga.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kv.h"
#include "saga.h"
#include "wire.h"

/* ---- The saga type -------------------------------------------------------- */

#define N_STEPS 5
#define LOG_MAX 256
#define BIT(i)  (1ull << (i))

enum { RESERVE, CHARGE, SHIP, INVOICE, NOTIFY };

static const char *const step_names[N_STEPS] = {"reserve", "charge", "ship", "invoice", "notify"};

static char *charge_inputs[] = {"order_id", "amount", "reservation_id"};
static char *ship_inputs[] = {"order_id", "payment_id", "amount", "gift_note"};
static char *notify_inputs[] = {"invoice_id", "status"};

/* Action: 3 attempts, 100 ms doubling up to 1 s. Compensation: 2 attempts, 40 ms. */
static const retry_policy action_retry = {3, 100, 1000, 2.0};
static const retry_policy compensation_retry = {2, 40, 40, 1.0};

#define T0_MONO 5000
#define T0_WALL 1700000000000LL

/* ---- The fixture: a saga type and a fake environment ------------------------ */

typedef struct {
    int step, phase;
    uint32_t attempt;
    uint64_t token;
} sent_rec;

typedef struct {
    char kind[40];
    int step, phase;
    uint32_t attempt;
    int outcome, replayed;
    int has_detail;
    char detail[512];
} event_rec;

typedef struct {
    saga_def def;
    step_def steps[N_STEPS];
    kvmap input;
    saga_env env;
    saga *s;

    int64_t mono, wall; /* fake clocks */
    double rnd;         /* what random_unit returns */

    sent_rec sends[LOG_MAX];
    size_t n_sends;
    uint64_t last_token; /* tokens of successive sends must grow */
    int64_t timers[LOG_MAX];
    size_t n_timers;
    int64_t armed; /* due time of the timer the env holds; 0: none */
    event_rec events[LOG_MAX];
    size_t n_events;
    size_t n_settled;
    saga_state settled_state;

    char text[8192]; /* scratch for the *_str helpers */
} fixture;

static int64_t fake_mono(void *ctx)
{
    return ((fixture *)ctx)->mono;
}

static int64_t fake_wall(void *ctx)
{
    return ((fixture *)ctx)->wall;
}

static double fake_random(void *ctx)
{
    return ((fixture *)ctx)->rnd;
}

static void fake_send(void *ctx, saga *s, int step, int phase, uint32_t attempt, uint64_t token)
{
    fixture *fx = ctx;
    assert_ptr_equal(s, fx->s);
    assert_true(fx->n_sends < LOG_MAX);
    /* Intent before request: the attempt is counted and the step marked
     * (state and dirty bit) before the send is asked for. */
    const step_run *r = &s->steps[step];
    assert_int_equal(r->state, phase == PHASE_ACTION ? STEP_ACTION_SENT : STEP_COMPENSATING);
    assert_int_equal(attempt,
                     phase == PHASE_ACTION ? r->action_attempts : r->compensation_attempts);
    assert_true(s->dirty & SAGA_DIRTY_ROW);
    assert_true(s->dirty_steps & BIT(step));
    assert_int_equal(s->cursor, step);
    /* The request carries the saga's current token, a fresh one. */
    assert_true(s->in_flight);
    assert_int_equal(token, s->token);
    assert_true(token > fx->last_token);
    fx->last_token = token;
    fx->sends[fx->n_sends++] = (sent_rec){step, phase, attempt, token};
}

static void fake_schedule(void *ctx, saga *s, int64_t due)
{
    fixture *fx = ctx;
    assert_ptr_equal(s, fx->s);
    assert_true(fx->n_timers < LOG_MAX);
    fx->timers[fx->n_timers++] = due;
    fx->armed = due;
}

static void fake_history(void *ctx, saga *s, const saga_event *ev)
{
    fixture *fx = ctx;
    assert_ptr_equal(s, fx->s);
    assert_true(fx->n_events < LOG_MAX);
    event_rec *e = &fx->events[fx->n_events++];
    memset(e, 0, sizeof *e);
    snprintf(e->kind, sizeof e->kind, "%s", ev->kind);
    e->step = ev->step;
    e->phase = ev->phase;
    e->attempt = ev->attempt;
    e->outcome = ev->outcome;
    e->replayed = ev->replayed;
    e->has_detail = ev->detail != NULL;
    snprintf(e->detail, sizeof e->detail, "%s", ev->detail ? ev->detail : "");
}

static void fake_settled(void *ctx, saga *s)
{
    fixture *fx = ctx;
    assert_ptr_equal(s, fx->s);
    assert_true(s->state == SAGA_COMPLETED || s->state == SAGA_COMPENSATED ||
                s->state == SAGA_FAILED);
    assert_false(s->in_flight);
    fx->n_settled++;
    fx->settled_state = s->state;
}

static void def_step(step_def *sd, char *name, char *participant, char *action, char *compensation,
                     char **inputs, size_t n_inputs)
{
    sd->name = name;
    sd->participant = participant;
    sd->action = action;
    sd->compensation = compensation;
    sd->timeout_ms = 1000;
    sd->retry = action_retry;
    sd->compensation_retry = compensation_retry;
    sd->inputs = inputs;
    sd->n_inputs = n_inputs;
    sd->has_input_list = inputs != NULL;
}

/* no_comp: bits of steps (besides notify, which never has one) whose
 * compensation is removed. */
static fixture *fixture_new(uint64_t no_comp)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    def_step(&fx->steps[RESERVE], "reserve", "inventory", "reserve", "release", NULL, 0);
    def_step(&fx->steps[CHARGE], "charge", "payment", "charge", "refund", charge_inputs, 3);
    def_step(&fx->steps[SHIP], "ship", "shipping", "ship", "cancel_shipment", ship_inputs, 4);
    def_step(&fx->steps[INVOICE], "invoice", "billing", "invoice", "void_invoice", NULL, 0);
    def_step(&fx->steps[NOTIFY], "notify", "mailer", "notify", NULL, notify_inputs, 2);
    for (int i = 0; i < N_STEPS; i++)
        if (no_comp & BIT(i))
            fx->steps[i].compensation = NULL;
    fx->def.name = "order";
    fx->def.steps = fx->steps;
    fx->def.n_steps = N_STEPS;
    assert_int_equal(kv_set(&fx->input, "order_id", "o-1"), 0);
    assert_int_equal(kv_set(&fx->input, "amount", "42"), 0);
    fx->env = (saga_env){.ctx = fx,
                         .now_mono = fake_mono,
                         .now_wall = fake_wall,
                         .random_unit = fake_random,
                         .send = fake_send,
                         .schedule = fake_schedule,
                         .history = fake_history,
                         .settled = fake_settled};
    fx->mono = T0_MONO;
    fx->wall = T0_WALL;
    return fx;
}

static void fixture_free(fixture *fx)
{
    if (fx == NULL)
        return;
    saga_free(fx->s);
    kv_free(&fx->input);
    free(fx);
}

static int setup(void **state)
{
    *state = fixture_new(0);
    return 0;
}

/* Variant where charge (step 1) cannot be undone either. */
static int setup_charge_irreversible(void **state)
{
    *state = fixture_new(BIT(CHARGE));
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static void clear_log(fixture *fx)
{
    fx->n_sends = fx->n_timers = fx->n_events = fx->n_settled = 0;
    fx->settled_state = 0;
}

/* ---- Driving the saga: each helper commits first and checks invariants after - */

static void check_invariants(const fixture *fx)
{
    const char *broken = saga_check_invariants(fx->s);
    if (broken != NULL)
        fail_msg("invariant broken in %s at cursor %d: %s", saga_state_name(fx->s->state),
                 fx->s->cursor, broken);
}

/* What the engine does once a round is stored. */
static void commit(fixture *fx)
{
    fx->s->dirty = 0;
    fx->s->dirty_steps = 0;
}

/* A fresh saga (replacing any earlier one), begun: the first step is sent. */
static void start(fixture *fx)
{
    saga_free(fx->s);
    clear_log(fx);
    fx->last_token = 0;
    fx->armed = 0;
    fx->s =
        saga_new(&fx->def, "11111111-2222-3333-4444-555555555555", "ck-1", &fx->input, fx->wall);
    assert_non_null(fx->s);
    check_invariants(fx);
    assert_int_equal(fx->s->dirty, SAGA_DIRTY_NEW | SAGA_DIRTY_ROW);
    saga_begin(fx->s, &fx->env);
    check_invariants(fx);
}

static uint64_t current_token(const fixture *fx)
{
    assert_true(fx->n_sends > 0);
    return fx->sends[fx->n_sends - 1].token;
}

static void reply_full(fixture *fx, uint64_t token, int outcome, int replayed, const kvmap *result,
                       const char *error)
{
    commit(fx);
    saga_on_reply(fx->s, &fx->env, token, outcome, replayed, result, error);
    check_invariants(fx);
}

/* A reply to the request in flight. */
static void reply(fixture *fx, int outcome, const char *error)
{
    reply_full(fx, current_token(fx), outcome, 0, NULL, error);
}

static void vkv(kvmap *m, va_list ap)
{
    const char *k;
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        assert_int_equal(kv_set(m, k, v), 0);
    }
}

/* OK to the request in flight, with a result of key, value, ..., NULL. The
 * error is "", as protobuf-c decodes an absent string. */
static void reply_ok(fixture *fx, ...)
{
    kvmap result = KVMAP_INIT;
    va_list ap;
    va_start(ap, fx);
    vkv(&result, ap);
    va_end(ap);
    reply_full(fx, current_token(fx), OUTCOME_OK, 0, &result, "");
    kv_free(&result);
}

static void no_reply_token(fixture *fx, uint64_t token, const char *why)
{
    commit(fx);
    saga_on_no_reply(fx->s, &fx->env, token, why);
    check_invariants(fx);
}

static void no_reply(fixture *fx, const char *why)
{
    no_reply_token(fx, current_token(fx), why);
}

/* Advances both clocks to the armed timer and fires it, as the engine does. */
static void fire_timer(fixture *fx)
{
    assert_true(fx->armed > 0);
    assert_int_equal(fx->armed, fx->s->timer_due);
    assert_true(fx->armed >= fx->mono);
    int64_t wait = fx->armed - fx->mono;
    fx->mono += wait;
    fx->wall += wait;
    fx->armed = 0;
    commit(fx);
    saga_on_timer(fx->s, &fx->env);
    check_invariants(fx);
}

static int do_abort(fixture *fx, const char *reason)
{
    commit(fx);
    int rc = saga_abort(fx->s, &fx->env, NULL, reason);
    check_invariants(fx);
    return rc;
}

static int do_resume(fixture *fx)
{
    commit(fx);
    int rc = saga_resume(fx->s, &fx->env, NULL, NULL);
    check_invariants(fx);
    return rc;
}

/* The volatile fields are lost in a restart; the store brings back the rest. */
static void restart(fixture *fx)
{
    saga *s = fx->s;
    s->dirty = 0;
    s->dirty_steps = 0;
    s->token = 0;
    s->in_flight = 0;
    s->maybe_sent = 0;
    s->timer_due = 0;
    for (size_t i = 0; i < s->n_steps; i++) {
        s->steps[i].token = 0;
        s->steps[i].in_flight = 0;
        s->steps[i].timer_due = 0;
        s->steps[i].noted = 0;
    }
    s->timer_slot = 0;
    fx->last_token = 0;
    fx->armed = 0;
    clear_log(fx);
    check_invariants(fx);
}

static void do_recover(fixture *fx)
{
    commit(fx);
    saga_recover(fx->s, &fx->env);
    check_invariants(fx);
}

/* The result each step answers OK with in these tests. */
static void reply_standard_ok(fixture *fx, int step)
{
    switch (step) {
    case RESERVE:
        reply_ok(fx, "reservation_id", "r-7", "status", "reserved", NULL);
        break;
    case CHARGE:
        reply_ok(fx, "payment_id", "p-9", "amount", "40", NULL); /* overrides the input */
        break;
    case SHIP:
        reply_ok(fx, "shipment_id", "s-3", "status", "shipped", NULL); /* overrides reserve's */
        break;
    case INVOICE:
        reply_ok(fx, "invoice_id", "i-1", NULL);
        break;
    default:
        reply_ok(fx, NULL);
        break;
    }
}

/* A fresh saga whose steps before k answered OK: step k is in flight. */
static void run_to_step(fixture *fx, int k)
{
    start(fx);
    for (int i = 0; i < k; i++)
        reply_standard_ok(fx, i);
    assert_int_equal(fx->s->state, SAGA_RUNNING);
    assert_int_equal(fx->s->cursor, k);
    assert_true(fx->s->in_flight);
}

/* A retry of the action in flight timed out until the attempts were spent:
 * no_reply, timer, no_reply, timer, no_reply. */
static void time_out_all_attempts(fixture *fx)
{
    for (uint32_t a = 1; a < action_retry.max_attempts; a++) {
        no_reply(fx, "timeout");
        fire_timer(fx);
    }
    no_reply(fx, "timeout");
}

/* ---- Asserts ---------------------------------------------------------------- */

/* Sends since index from, as "step:phase:attempt" separated by spaces. */
static const char *sends_str(fixture *fx, size_t from)
{
    size_t n = 0;
    fx->text[0] = '\0';
    for (size_t i = from; i < fx->n_sends; i++) {
        const sent_rec *r = &fx->sends[i];
        n += (size_t)snprintf(fx->text + n, sizeof fx->text - n, "%s%s:%s:%u", i > from ? " " : "",
                              step_names[r->step], wire_phase_name(r->phase), r->attempt);
    }
    return fx->text;
}

/* History since index from: "kind" for saga-level events, "kind(step/phase)"
 * for step events, separated by spaces. */
static const char *events_str(fixture *fx, size_t from)
{
    size_t n = 0;
    fx->text[0] = '\0';
    for (size_t i = from; i < fx->n_events; i++) {
        const event_rec *e = &fx->events[i];
        const char *sep = i > from ? " " : "";
        if (e->step < 0)
            n += (size_t)snprintf(fx->text + n, sizeof fx->text - n, "%s%s", sep, e->kind);
        else
            n += (size_t)snprintf(fx->text + n, sizeof fx->text - n, "%s%s(%s/%s)", sep, e->kind,
                                  step_names[e->step], wire_phase_name(e->phase));
    }
    return fx->text;
}

static const event_rec *last_event(const fixture *fx, const char *kind)
{
    for (size_t i = fx->n_events; i-- > 0;)
        if (strcmp(fx->events[i].kind, kind) == 0)
            return &fx->events[i];
    fail_msg("no '%s' event recorded", kind);
    return NULL;
}

static size_t count_events(const fixture *fx, const char *kind)
{
    size_t n = 0;
    for (size_t i = 0; i < fx->n_events; i++)
        n += strcmp(fx->events[i].kind, kind) == 0;
    return n;
}

static void assert_detail(const event_rec *e, const char *detail)
{
    if (detail == NULL) {
        assert_false(e->has_detail);
    } else {
        assert_true(e->has_detail);
        assert_string_equal(e->detail, detail);
    }
}

static void assert_last_send(const fixture *fx, int step, int phase, uint32_t attempt)
{
    assert_true(fx->n_sends > 0);
    const sent_rec *r = &fx->sends[fx->n_sends - 1];
    assert_string_equal(step_names[r->step], step_names[step]);
    assert_string_equal(wire_phase_name(r->phase), wire_phase_name(phase));
    assert_int_equal(r->attempt, attempt);
    assert_int_equal(r->token, fx->s->token);
}

/* The five step states, e.g. "DONE DONE ACTION_SENT PENDING PENDING". */
static void assert_steps(fixture *fx, const char *expected)
{
    size_t n = 0;
    fx->text[0] = '\0';
    for (size_t i = 0; i < fx->s->n_steps; i++)
        n += (size_t)snprintf(fx->text + n, sizeof fx->text - n, "%s%s", i ? " " : "",
                              step_state_name(fx->s->steps[i].state));
    assert_string_equal(fx->text, expected);
}

static void assert_attempts(const fixture *fx, int step, uint32_t action, uint32_t compensation)
{
    assert_int_equal(fx->s->steps[step].action_attempts, action);
    assert_int_equal(fx->s->steps[step].compensation_attempts, compensation);
}

static void assert_state(const fixture *fx, saga_state st)
{
    assert_string_equal(saga_state_name(fx->s->state), saga_state_name(st));
}

static void assert_last_error(const fixture *fx, const char *expected)
{
    if (expected == NULL) {
        assert_null(fx->s->last_error);
    } else {
        assert_non_null(fx->s->last_error);
        assert_string_equal(fx->s->last_error, expected);
    }
}

/* The row changed (and its timestamp), and exactly these steps. */
static void assert_dirty(const fixture *fx, uint64_t steps)
{
    assert_int_equal(fx->s->dirty & SAGA_DIRTY_ROW, SAGA_DIRTY_ROW);
    assert_int_equal(fx->s->dirty_steps, steps);
    assert_int_equal(fx->s->updated_at_ms, fx->wall);
}

static void assert_not_dirty(const fixture *fx)
{
    assert_int_equal(fx->s->dirty, 0);
    assert_int_equal(fx->s->dirty_steps, 0);
}

/* saga_step_params(step) equals exactly key, value, ..., NULL. */
static void assert_params(fixture *fx, int step, ...)
{
    kvmap want = KVMAP_INIT, got = KVMAP_INIT;
    va_list ap;
    va_start(ap, step);
    vkv(&want, ap);
    va_end(ap);
    assert_int_equal(saga_step_params(fx->s, step, &got), 0);
    if (!kv_equal(&want, &got)) {
        char *w = kv_to_json(&want), *g = kv_to_json(&got);
        snprintf(fx->text, sizeof fx->text, "params of step '%s': want %s, got %s",
                 step_names[step], w, g);
        free(w);
        free(g);
        kv_free(&want);
        kv_free(&got);
        fail_msg("%s", fx->text);
    }
    kv_free(&want);
    kv_free(&got);
}

/* Nothing observable happened since the marks and nothing was marked dirty. */
typedef struct {
    saga_state state;
    int cursor, in_flight;
    uint64_t token;
    size_t n_sends, n_timers, n_events, n_settled;
    step_run step;
} snapshot;

static snapshot take_snapshot(const fixture *fx)
{
    return (snapshot){fx->s->state, fx->s->cursor, fx->s->in_flight,
                      fx->s->token, fx->n_sends,   fx->n_timers,
                      fx->n_events, fx->n_settled, fx->s->steps[fx->s->cursor]};
}

static void assert_unchanged(const fixture *fx, snapshot before)
{
    snapshot now = take_snapshot(fx);
    assert_int_equal(now.state, before.state);
    assert_int_equal(now.cursor, before.cursor);
    assert_int_equal(now.in_flight, before.in_flight);
    assert_int_equal(now.token, before.token);
    assert_int_equal(now.n_sends, before.n_sends);
    assert_int_equal(now.n_timers, before.n_timers);
    assert_int_equal(now.n_events, before.n_events);
    assert_int_equal(now.n_settled, before.n_settled);
    assert_int_equal(now.step.state, before.step.state);
    assert_int_equal(now.step.action_attempts, before.step.action_attempts);
    assert_int_equal(now.step.compensation_attempts, before.step.compensation_attempts);
    assert_int_equal(now.step.last_outcome, before.step.last_outcome);
    assert_not_dirty(fx);
}

/* ---- Names ------------------------------------------------------------------ */

static void state_names_and_parse(void **state)
{
    (void)state;
    static const char *const names[] = {"RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED",
                                        "FAILED"};
    for (int st = SAGA_RUNNING; st <= SAGA_FAILED; st++) {
        assert_string_equal(saga_state_name((saga_state)st), names[st - 1]);
        assert_int_equal(saga_state_parse(names[st - 1]), st);
    }
    assert_int_equal(saga_state_parse("compensated"), SAGA_COMPENSATED);
    assert_int_equal(saga_state_parse("Running"), SAGA_RUNNING);
    assert_int_equal(saga_state_parse("UNSPECIFIED"), -1);
    assert_int_equal(saga_state_parse(""), -1);
    assert_int_equal(saga_state_parse("RUNNINGX"), -1);
    assert_string_equal(saga_state_name((saga_state)0), "UNKNOWN");
    assert_string_equal(saga_state_name((saga_state)6), "UNKNOWN");

    static const char *const steps[] = {"PENDING",  "ACTION_SENT",  "DONE",
                                        "REJECTED", "COMPENSATING", "COMPENSATED"};
    for (int st = STEP_PENDING; st <= STEP_COMPENSATED; st++)
        assert_string_equal(step_state_name((step_state)st), steps[st]);
    assert_string_equal(step_state_name((step_state)6), "UNKNOWN");
    assert_string_equal(step_state_name((step_state)-1), "UNKNOWN");

    assert_true(saga_is_final(SAGA_COMPLETED));
    assert_true(saga_is_final(SAGA_COMPENSATED));
    assert_false(saga_is_final(SAGA_RUNNING));
    assert_false(saga_is_final(SAGA_COMPENSATING));
    assert_false(saga_is_final(SAGA_FAILED)); /* resumable */
}

/* ---- Creation and the pure helpers ---------------------------------------------- */

static void new_saga_copies_its_arguments(void **state)
{
    fixture *fx = *state;
    kvmap input = KVMAP_INIT;
    assert_int_equal(kv_set(&input, "order_id", "o-1"), 0);
    char id[] = "11111111-2222-3333-4444-555555555555";
    char key[] = "client-key";
    fx->s = saga_new(&fx->def, id, key, &input, T0_WALL);
    assert_non_null(fx->s);
    /* Copies, not aliases. */
    id[0] = 'X';
    key[0] = 'X';
    assert_int_equal(kv_set(&input, "order_id", "changed"), 0);
    kv_free(&input);

    saga *s = fx->s;
    assert_string_equal(s->id, "11111111-2222-3333-4444-555555555555");
    assert_string_equal(s->client_key, "client-key");
    assert_string_equal(s->type, "order");
    assert_ptr_equal(s->def, &fx->def);
    assert_string_equal(kv_get(&s->input, "order_id"), "o-1");
    assert_int_equal(s->input.len, 1);
    assert_state(fx, SAGA_RUNNING);
    assert_int_equal(s->cursor, 0);
    assert_int_equal(s->n_steps, N_STEPS);
    assert_int_equal(s->created_at_ms, T0_WALL);
    assert_int_equal(s->updated_at_ms, T0_WALL);
    assert_int_equal(s->dirty, SAGA_DIRTY_NEW | SAGA_DIRTY_ROW);
    assert_int_equal(s->dirty_steps, 0);
    assert_int_equal(s->token, 0);
    assert_false(s->in_flight);
    assert_null(s->last_error);
    assert_steps(fx, "PENDING PENDING PENDING PENDING PENDING");
    for (int i = 0; i < N_STEPS; i++) {
        assert_attempts(fx, i, 0, 0);
        assert_int_equal(s->steps[i].last_outcome, OUTCOME_UNSPECIFIED);
        assert_int_equal(s->steps[i].result.len, 0);
    }
    assert_int_equal(fx->n_events + fx->n_sends + fx->n_timers, 0); /* nothing sent yet */
    assert_null(saga_check_invariants(s));

    saga *anon = saga_new(&fx->def, "22222222-2222-3333-4444-555555555555", NULL, &fx->input, 7);
    assert_non_null(anon);
    assert_null(anon->client_key);
    assert_int_equal(anon->input.len, 2);
    saga_free(anon);
    saga_free(NULL); /* a no-op */
}

static void step_keys(void **state)
{
    fixture *fx = *state;
    start(fx);
    char buf[256];
    for (int i = 0; i < N_STEPS; i++) {
        char want[256];
        saga_step_key(fx->s, i, PHASE_ACTION, buf, sizeof buf);
        snprintf(want, sizeof want, "11111111-2222-3333-4444-555555555555/%s/action",
                 step_names[i]);
        assert_string_equal(buf, want);
        saga_step_key(fx->s, i, PHASE_COMPENSATE, buf, sizeof buf);
        snprintf(want, sizeof want, "11111111-2222-3333-4444-555555555555/%s/compensate",
                 step_names[i]);
        assert_string_equal(buf, want);
    }
    /* Truncated, never overflowing. */
    char small[10];
    saga_step_key(fx->s, CHARGE, PHASE_ACTION, small, sizeof small);
    assert_string_equal(small, "11111111-");
}

/* ---- Happy path ------------------------------------------------------------------ */

static void happy_path_completes(void **state)
{
    fixture *fx = *state;
    start(fx);
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(events_str(fx, 0), "saga_started step_sent(reserve/action)");
    assert_detail(&fx->events[0], "ck-1"); /* saga_started names the client key */
    assert_string_equal(sends_str(fx, 0), "reserve:action:1");
    assert_int_equal(fx->sends[0].token, 1);
    assert_steps(fx, "ACTION_SENT PENDING PENDING PENDING PENDING");
    assert_dirty(fx, BIT(RESERVE));

    for (int i = 0; i < N_STEPS; i++) {
        assert_int_equal(fx->s->cursor, i);
        assert_last_send(fx, i, PHASE_ACTION, 1);
        reply_standard_ok(fx, i);
        const event_rec *r = last_event(fx, "step_reply");
        assert_int_equal(r->step, i);
        assert_int_equal(r->phase, PHASE_ACTION);
        assert_int_equal(r->attempt, 1);
        assert_int_equal(r->outcome, OUTCOME_OK);
        assert_int_equal(r->replayed, 0);
        assert_detail(r, NULL);
        if (i + 1 < N_STEPS)
            assert_dirty(fx, BIT(i) | BIT(i + 1));
        else
            assert_dirty(fx, BIT(i));
    }

    assert_state(fx, SAGA_COMPLETED);
    assert_steps(fx, "DONE DONE DONE DONE DONE");
    for (int i = 0; i < N_STEPS; i++) {
        assert_attempts(fx, i, 1, 0);
        assert_int_equal(fx->s->steps[i].last_outcome, OUTCOME_OK);
        assert_null(fx->s->steps[i].last_error);
        assert_int_equal(fx->s->steps[i].next_attempt_at_ms, 0);
    }
    assert_string_equal(kv_get(&fx->s->steps[RESERVE].result, "reservation_id"), "r-7");
    assert_string_equal(kv_get(&fx->s->steps[CHARGE].result, "amount"), "40");
    assert_int_equal(fx->s->steps[NOTIFY].result.len, 0);
    assert_string_equal(sends_str(fx, 0), "reserve:action:1 charge:action:1 ship:action:1 "
                                          "invoice:action:1 notify:action:1");
    for (size_t i = 0; i < fx->n_sends; i++)
        assert_int_equal(fx->sends[i].token, i + 1);
    assert_string_equal(events_str(fx, 0),
                        "saga_started step_sent(reserve/action) step_reply(reserve/action) "
                        "step_sent(charge/action) step_reply(charge/action) "
                        "step_sent(ship/action) step_reply(ship/action) "
                        "step_sent(invoice/action) step_reply(invoice/action) "
                        "step_sent(notify/action) step_reply(notify/action) saga_completed");
    assert_detail(last_event(fx, "saga_completed"), NULL);
    assert_int_equal(fx->n_timers, 0);
    assert_int_equal(fx->n_settled, 1);
    assert_int_equal(fx->settled_state, SAGA_COMPLETED);
    assert_last_error(fx, NULL);
    assert_false(fx->s->in_flight);
    assert_int_equal(fx->s->cursor, NOTIFY);
    assert_true(fx->s->token > fx->sends[fx->n_sends - 1].token); /* nothing in flight is valid */
    assert_true(saga_is_final(fx->s->state));
}

static void params_flow_between_steps(void **state)
{
    fixture *fx = *state;
    start(fx);
    /* No input list: the saga input. */
    assert_params(fx, RESERVE, "order_id", "o-1", "amount", "42", NULL);
    reply_standard_ok(fx, RESERVE);
    /* Input list: only the listed names, from the input and reserve's result. */
    assert_params(fx, CHARGE, "order_id", "o-1", "amount", "42", "reservation_id", "r-7", NULL);
    reply_standard_ok(fx, CHARGE);
    /* charge's amount overrides the input's; gift_note is listed but absent:
     * left out; reservation_id and status are not listed. */
    assert_params(fx, SHIP, "order_id", "o-1", "payment_id", "p-9", "amount", "40", NULL);
    reply_standard_ok(fx, SHIP);
    /* No input list: everything, later outputs overriding earlier ones. */
    assert_params(fx, INVOICE, "order_id", "o-1", "amount", "40", "reservation_id", "r-7", "status",
                  "shipped", "payment_id", "p-9", "shipment_id", "s-3", NULL);
    reply_standard_ok(fx, INVOICE);
    assert_params(fx, NOTIFY, "invoice_id", "i-1", "status", "shipped", NULL);
    /* Results of the step itself and later ones never flow back. */
    assert_params(fx, RESERVE, "order_id", "o-1", "amount", "42", NULL);

    /* The params are the same in every phase and attempt: compensation
     * of ship after a later rejection sees what its action saw. */
    reply(fx, OUTCOME_REJECTED, "bounced");
    assert_last_send(fx, INVOICE, PHASE_COMPENSATE, 1);
    reply(fx, OUTCOME_OK, NULL);
    assert_last_send(fx, SHIP, PHASE_COMPENSATE, 1);
    assert_params(fx, SHIP, "order_id", "o-1", "payment_id", "p-9", "amount", "40", NULL);

    /* Params are appended to what out already holds. */
    kvmap out = KVMAP_INIT;
    assert_int_equal(kv_set(&out, "extra", "x"), 0);
    assert_int_equal(saga_step_params(fx->s, NOTIFY, &out), 0);
    assert_int_equal(out.len, 3);
    assert_string_equal(kv_get(&out, "extra"), "x");
    kv_free(&out);
}

/* ---- Rejection and compensation ----------------------------------------------------- */

/* REJECTED at step k: the steps k-1..0 are compensated in reverse order, the
 * ones without compensation noted and skipped; the saga ends COMPENSATED.
 * Runs on both fixtures (charge undoable or not). */
static void rejected_at_each_step(void **state)
{
    fixture *fx = *state;
    for (int k = 0; k < N_STEPS; k++) {
        run_to_step(fx, k);
        size_t e0 = fx->n_events, s0 = fx->n_sends;
        reply(fx, OUTCOME_REJECTED, "out of stock");
        assert_int_equal(fx->s->steps[k].state, STEP_REJECTED);
        assert_int_equal(fx->s->steps[k].last_outcome, OUTCOME_REJECTED);
        assert_string_equal(fx->s->steps[k].last_error, "out of stock");

        char want_events[2048], want_sends[512], want_steps[256];
        size_t ne = 0, ns = 0, nst = 0;
        ne += (size_t)snprintf(want_events + ne, sizeof want_events - ne,
                               "step_reply(%s/action) compensation_started", step_names[k]);
        want_sends[0] = '\0';
        for (int i = k - 1; i >= 0; i--) {
            if (fx->steps[i].compensation == NULL) {
                ne += (size_t)snprintf(want_events + ne, sizeof want_events - ne,
                                       " compensation_not_defined(%s/compensate)", step_names[i]);
                continue;
            }
            ne += (size_t)snprintf(want_events + ne, sizeof want_events - ne,
                                   " step_sent(%s/compensate) step_reply(%s/compensate)",
                                   step_names[i], step_names[i]);
            ns += (size_t)snprintf(want_sends + ns, sizeof want_sends - ns, "%s%s:compensate:1",
                                   ns ? " " : "", step_names[i]);
            assert_state(fx, SAGA_COMPENSATING);
            assert_int_equal(fx->s->cursor, i);
            assert_last_send(fx, i, PHASE_COMPENSATE, 1);
            reply(fx, OUTCOME_OK, NULL);
            assert_int_equal(fx->s->steps[i].state, STEP_COMPENSATED);
        }
        snprintf(want_events + ne, sizeof want_events - ne, " saga_compensated");
        for (int i = 0; i < N_STEPS; i++) {
            const char *st = i > k                               ? "PENDING"
                             : i == k                            ? "REJECTED"
                             : fx->steps[i].compensation == NULL ? "DONE"
                                                                 : "COMPENSATED";
            nst += (size_t)snprintf(want_steps + nst, sizeof want_steps - nst, "%s%s", i ? " " : "",
                                    st);
            assert_int_equal(fx->s->steps[i].action_attempts, i <= k ? 1 : 0);
            assert_int_equal(fx->s->steps[i].compensation_attempts,
                             i < k && fx->steps[i].compensation != NULL ? 1 : 0);
        }

        assert_state(fx, SAGA_COMPENSATED);
        assert_steps(fx, want_steps);
        assert_string_equal(events_str(fx, e0), want_events);
        assert_string_equal(sends_str(fx, s0), want_sends);
        char want_error[128];
        snprintf(want_error, sizeof want_error, "step '%s' refused: out of stock", step_names[k]);
        assert_last_error(fx, want_error);
        assert_detail(last_event(fx, "compensation_started"), want_error);
        assert_detail(last_event(fx, "saga_compensated"), want_error);
        assert_int_equal(fx->n_settled, 1);
        assert_int_equal(fx->settled_state, SAGA_COMPENSATED);
        assert_false(fx->s->in_flight);
        assert_int_equal(fx->s->cursor, 0);
        assert_int_equal(fx->n_timers, 0);
    }
}

static void skipped_action_behaves_as_rejected(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    size_t e0 = fx->n_events;
    reply(fx, OUTCOME_SKIPPED, NULL);
    assert_state(fx, SAGA_COMPENSATING);
    assert_steps(fx, "COMPENSATING REJECTED PENDING PENDING PENDING");
    assert_last_error(fx, "step 'charge' had no effect: SKIPPED");
    assert_last_send(fx, RESERVE, PHASE_COMPENSATE, 1);
    assert_string_equal(events_str(fx, e0), "step_reply(charge/action) compensation_started "
                                            "step_sent(reserve/compensate)");
    assert_int_equal(last_event(fx, "step_reply")->outcome, OUTCOME_SKIPPED);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
    assert_steps(fx, "COMPENSATED REJECTED PENDING PENDING PENDING");

    /* With the participant's reason in the message. */
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_SKIPPED, "hanging action");
    assert_last_error(fx, "step 'ship' had no effect: hanging action");
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
}

/* ---- Retries, timeouts, the pivot rule ---------------------------------------------- */

static void retry_then_ok(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    size_t e0 = fx->n_events;
    fx->rnd = 0.0;
    reply(fx, OUTCOME_RETRY, "busy");
    assert_state(fx, SAGA_RUNNING);
    assert_steps(fx, "DONE ACTION_SENT PENDING PENDING PENDING");
    assert_false(fx->s->in_flight);
    assert_int_equal(fx->s->steps[CHARGE].last_outcome, OUTCOME_RETRY);
    assert_string_equal(fx->s->steps[CHARGE].last_error, "busy");
    assert_string_equal(events_str(fx, e0),
                        "step_reply(charge/action) retry_scheduled(charge/action)");
    const event_rec *ev = last_event(fx, "retry_scheduled");
    assert_int_equal(ev->attempt, 1);
    assert_detail(ev, "attempt 2 in 50 ms");
    /* Timer: 100 ms before attempt 2, jittered down to 50 by random 0. */
    assert_int_equal(fx->n_timers, 1);
    assert_int_equal(fx->timers[0], T0_MONO + 50);
    assert_int_equal(fx->s->timer_due, T0_MONO + 50);
    assert_int_equal(fx->s->steps[CHARGE].next_attempt_at_ms, T0_WALL + 50);
    assert_dirty(fx, BIT(CHARGE));
    assert_int_equal(fx->n_sends, 2);

    uint64_t old = current_token(fx);
    fire_timer(fx);
    assert_last_send(fx, CHARGE, PHASE_ACTION, 2);
    assert_true(current_token(fx) > old);
    assert_int_equal(fx->s->timer_due, 0);
    assert_int_equal(fx->s->steps[CHARGE].next_attempt_at_ms, 0);
    assert_dirty(fx, BIT(CHARGE));

    reply_standard_ok(fx, CHARGE);
    assert_steps(fx, "DONE DONE ACTION_SENT PENDING PENDING");
    assert_attempts(fx, CHARGE, 2, 0);
    assert_null(fx->s->steps[CHARGE].last_error); /* OK clears the step's error */
    assert_int_equal(fx->s->steps[CHARGE].last_outcome, OUTCOME_OK);
    assert_string_equal(sends_str(fx, 0),
                        "reserve:action:1 charge:action:1 charge:action:2 ship:action:1");
    assert_string_equal(events_str(fx, e0),
                        "step_reply(charge/action) retry_scheduled(charge/action) "
                        "step_sent(charge/action) step_reply(charge/action) "
                        "step_sent(ship/action)");
    assert_int_equal(fx->n_settled, 0);
}

/* Timeouts until the attempts are spent: the step's outcome is unknown, so its
 * own compensation runs too, then the earlier ones. */
static void timeouts_then_compensation_includes_the_step(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    size_t e0 = fx->n_events, s0 = fx->n_sends;
    fx->rnd = 0.0;

    no_reply(fx, "timeout");
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(events_str(fx, e0),
                        "step_no_reply(ship/action) retry_scheduled(ship/action)");
    assert_detail(last_event(fx, "step_no_reply"), "timeout");
    assert_detail(last_event(fx, "retry_scheduled"), "attempt 2 in 50 ms");
    assert_string_equal(fx->s->steps[SHIP].last_error, "timeout");
    assert_int_equal(fx->s->steps[SHIP].last_outcome,
                     OUTCOME_UNSPECIFIED); /* no reply, no outcome */
    assert_int_equal(fx->armed, T0_MONO + 50);
    assert_dirty(fx, BIT(SHIP));

    fire_timer(fx);
    assert_last_send(fx, SHIP, PHASE_ACTION, 2);
    no_reply(fx, "unreachable");
    /* 200 ms before attempt 3, jittered to 100. */
    assert_int_equal(fx->armed, T0_MONO + 50 + 100);
    assert_detail(last_event(fx, "retry_scheduled"), "attempt 3 in 100 ms");
    fire_timer(fx);
    assert_last_send(fx, SHIP, PHASE_ACTION, 3);

    size_t e1 = fx->n_events;
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_COMPENSATING);
    assert_last_error(fx, "step 'ship' failed after 3 attempts: timeout");
    assert_string_equal(events_str(fx, e1), "step_no_reply(ship/action) compensation_started "
                                            "step_sent(ship/compensate)");
    assert_last_send(fx, SHIP, PHASE_COMPENSATE, 1);
    assert_steps(fx, "DONE DONE COMPENSATING PENDING PENDING");
    assert_attempts(fx, SHIP, 3, 1);
    assert_dirty(fx, BIT(SHIP));

    reply(fx, OUTCOME_OK, NULL);
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
    reply(fx, OUTCOME_SKIPPED, NULL); /* nothing to undo: as good as OK */
    assert_last_send(fx, RESERVE, PHASE_COMPENSATE, 1);
    reply(fx, OUTCOME_OK, NULL);

    assert_state(fx, SAGA_COMPENSATED);
    assert_steps(fx, "COMPENSATED COMPENSATED COMPENSATED PENDING PENDING");
    assert_string_equal(sends_str(fx, s0), "ship:action:2 ship:action:3 ship:compensate:1 "
                                           "charge:compensate:1 reserve:compensate:1");
    assert_int_equal(fx->n_timers, 2);
    assert_int_equal(fx->n_settled, 1);
    assert_last_error(fx, "step 'ship' failed after 3 attempts: timeout");
}

/* The pivot rule: a step without compensation whose outcome is still unknown
 * when its attempts are spent fails the saga (nothing is undone by itself). */
static void pivot_step_attempts_spent_fails_saga(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, NOTIFY);
    size_t s0 = fx->n_sends;
    time_out_all_attempts(fx);

    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_ACTION);
    const char *why = "step 'notify' has no compensation and its outcome is unknown after 3 "
                      "attempts: timeout";
    assert_last_error(fx, why);
    assert_steps(fx, "DONE DONE DONE DONE ACTION_SENT");
    assert_attempts(fx, NOTIFY, 3, 0);
    assert_int_equal(fx->s->cursor, NOTIFY);
    assert_false(fx->s->in_flight);
    assert_string_equal(sends_str(fx, s0), "notify:action:2 notify:action:3");
    assert_string_equal(events_str(fx, fx->n_events - 2),
                        "step_no_reply(notify/action) saga_failed");
    assert_detail(last_event(fx, "saga_failed"), why);
    assert_int_equal(count_events(fx, "step_no_reply"), 3);
    assert_int_equal(count_events(fx, "retry_scheduled"), 2);
    assert_int_equal(count_events(fx, "compensation_started"), 0); /* nothing undone by itself */
    assert_int_equal(fx->n_settled, 1);
    assert_int_equal(fx->settled_state, SAGA_FAILED);
}

/* The operator's abort of that FAILED saga notes the pivot as not undoable
 * and compensates the steps before it. */
static void pivot_failed_saga_abort_compensates_earlier_steps(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, NOTIFY);
    time_out_all_attempts(fx);
    assert_state(fx, SAGA_FAILED);
    size_t e0 = fx->n_events, s0 = fx->n_sends;

    assert_int_equal(do_abort(fx, "give up"), 0);
    assert_state(fx, SAGA_COMPENSATING);
    assert_last_error(fx, "aborted by operator: give up");
    assert_string_equal(events_str(fx, e0), "abort_requested compensation_started "
                                            "compensation_not_defined(notify/compensate) "
                                            "step_sent(invoice/compensate)");
    assert_detail(last_event(fx, "abort_requested"), "aborted by operator: give up");
    assert_dirty(fx, BIT(NOTIFY) | BIT(INVOICE));
    for (int i = INVOICE; i >= RESERVE; i--) {
        assert_last_send(fx, i, PHASE_COMPENSATE, 1);
        reply(fx, OUTCOME_OK, NULL);
    }
    assert_state(fx, SAGA_COMPENSATED);
    assert_steps(fx, "COMPENSATED COMPENSATED COMPENSATED COMPENSATED ACTION_SENT");
    assert_string_equal(sends_str(fx, s0), "invoice:compensate:1 ship:compensate:1 "
                                           "charge:compensate:1 reserve:compensate:1");
    assert_int_equal(fx->n_settled, 2); /* FAILED, then COMPENSATED */
    assert_int_equal(fx->settled_state, SAGA_COMPENSATED);
}

static void resume_failed_action_gets_fresh_budget(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, NOTIFY);
    time_out_all_attempts(fx);
    assert_state(fx, SAGA_FAILED);
    size_t e0 = fx->n_events;
    uint64_t old = current_token(fx);

    assert_int_equal(do_resume(fx), 0);
    assert_state(fx, SAGA_RUNNING);
    assert_attempts(fx, NOTIFY, 1, 0);
    assert_last_send(fx, NOTIFY, PHASE_ACTION, 1);
    assert_true(current_token(fx) > old);
    assert_string_equal(events_str(fx, e0), "resumed(notify/action) step_sent(notify/action)");
    assert_detail(last_event(fx, "resumed"), "step 'notify' has no compensation and its outcome "
                                             "is unknown after 3 attempts: timeout");
    assert_dirty(fx, BIT(NOTIFY));

    /* A late reply to the attempt before the failure is stale. */
    snapshot before = take_snapshot(fx);
    reply_full(fx, old, OUTCOME_OK, 0, NULL, NULL);
    assert_unchanged(fx, before);

    /* The fresh budget is the full policy again. */
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_RUNNING);
    fire_timer(fx);
    assert_last_send(fx, NOTIFY, PHASE_ACTION, 2);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPLETED);
    assert_steps(fx, "DONE DONE DONE DONE DONE");
}

/* ---- Backoff ----------------------------------------------------------------------- */

static void backoff_bounds(void **state)
{
    (void)state;
    const retry_policy p = {10, 100, 1000, 2.0};
    /* d for attempts 2..8: 100 200 400 800 1000(capped) 1000 1000 */
    const int64_t d[] = {0, 0, 100, 200, 400, 800, 1000, 1000, 1000};
    assert_int_equal(saga_backoff_ms(&p, 0, 0.5), 0);
    assert_int_equal(saga_backoff_ms(&p, 1, 0.5), 0);
    for (uint32_t a = 2; a <= 8; a++) {
        int64_t lo = saga_backoff_ms(&p, a, 0.0);
        int64_t mid = saga_backoff_ms(&p, a, 0.5);
        int64_t hi = saga_backoff_ms(&p, a, 0.999999);
        assert_int_equal(lo, d[a] / 2);
        assert_int_equal(mid, d[a] * 3 / 4);
        assert_int_equal(hi, d[a] - 1);
        assert_true(2 * lo >= d[a] && hi <= d[a]);
        assert_true(lo <= mid && mid <= hi);
        assert_true(hi <= p.max_backoff_ms);
    }
    /* Grows by the multiplier until the cap. */
    for (uint32_t a = 2; a < 5; a++)
        assert_int_equal(saga_backoff_ms(&p, a + 1, 0.0), 2 * saga_backoff_ms(&p, a, 0.0));

    /* A non-integer multiplier: 100 150 225 337.5 */
    const retry_policy q = {10, 100, 5000, 1.5};
    assert_int_equal(saga_backoff_ms(&q, 3, 0.0), 75);
    assert_int_equal(saga_backoff_ms(&q, 4, 0.0), 112);
    assert_int_equal(saga_backoff_ms(&q, 5, 0.0), 168);
    assert_int_equal(saga_backoff_ms(&q, 5, 0.999999), 337);

    /* Huge attempt numbers overflow pow(): still the cap. */
    assert_int_equal(saga_backoff_ms(&p, 1000, 0.0), 500);
    assert_int_equal(saga_backoff_ms(&p, 1000, 0.999999), 999);
    assert_int_equal(saga_backoff_ms(&p, UINT32_MAX, 0.0), 500);

    /* Never 0 once a delay is due. */
    const retry_policy tiny = {3, 1, 1, 1.0};
    assert_int_equal(saga_backoff_ms(&tiny, 2, 0.0), 1);
    assert_int_equal(saga_backoff_ms(&tiny, 3, 0.999999), 1);

    /* Multiplier 1: constant. */
    assert_int_equal(saga_backoff_ms(&compensation_retry, 2, 0.0), 20);
    assert_int_equal(saga_backoff_ms(&compensation_retry, 9, 0.0), 20);
}

/* The timers a run of retries schedules are exactly the backoff of the next
 * attempt from "now", and each fires a new attempt with a new token. */
static void retry_timers_follow_backoff(void **state)
{
    fixture *fx = *state;
    const retry_policy p = {6, 100, 500, 3.0}; /* d: 100 300 500 500 500 */
    fx->steps[RESERVE].retry = p;
    start(fx);
    const double rnd[] = {0.0, 0.999999, 0.5, 0.25, 0.0};
    const int64_t want[] = {50, 299, 375, 312, 250};
    const int64_t d[] = {100, 300, 500, 500, 500};
    for (uint32_t a = 2; a <= 6; a++) {
        fx->rnd = rnd[a - 2];
        int64_t mono = fx->mono, wall = fx->wall;
        uint64_t token = current_token(fx);
        size_t n_timers = fx->n_timers;
        no_reply(fx, "timeout");
        assert_int_equal(fx->n_timers, n_timers + 1);
        int64_t delay = fx->timers[fx->n_timers - 1] - mono;
        assert_int_equal(delay, want[a - 2]);
        assert_int_equal(delay, saga_backoff_ms(&p, a, rnd[a - 2]));
        assert_true(2 * delay >= d[a - 2] && delay <= d[a - 2]);
        assert_int_equal(fx->s->steps[RESERVE].next_attempt_at_ms, wall + delay);
        char detail[64];
        snprintf(detail, sizeof detail, "attempt %u in %lld ms", a, (long long)delay);
        assert_detail(last_event(fx, "retry_scheduled"), detail);
        assert_int_equal(last_event(fx, "retry_scheduled")->attempt, a - 1);

        /* Nothing is sent before the timer fires. */
        assert_int_equal(fx->sends[fx->n_sends - 1].attempt, a - 1);
        fire_timer(fx);
        assert_int_equal(fx->mono, mono + delay);
        assert_last_send(fx, RESERVE, PHASE_ACTION, a);
        assert_true(current_token(fx) > token);
        assert_attempts(fx, RESERVE, a, 0);
    }
    /* The sixth attempt times out: spent, reserve is compensated. */
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_COMPENSATING);
    assert_last_error(fx, "step 'reserve' failed after 6 attempts: timeout");
    assert_last_send(fx, RESERVE, PHASE_COMPENSATE, 1);
    assert_int_equal(fx->n_timers, 5);
}

static void timer_without_retry_does_nothing(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    /* A timer that fires while a request is in flight sends nothing. */
    snapshot before = take_snapshot(fx);
    commit(fx);
    saga_on_timer(fx->s, &fx->env);
    check_invariants(fx);
    assert_unchanged(fx, before);
    assert_int_equal(fx->s->timer_due, 0);

    /* Nor after the saga settled. */
    reply(fx, OUTCOME_REJECTED, "no");
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
    before = take_snapshot(fx);
    commit(fx);
    saga_on_timer(fx->s, &fx->env);
    check_invariants(fx);
    assert_unchanged(fx, before);
}

/* ---- Stale replies ---------------------------------------------------------------- */

static void stale_replies_are_ignored(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    uint64_t t1 = current_token(fx);
    no_reply(fx, "timeout");
    assert_true(fx->armed > 0);

    /* While the retry waits, nothing is in flight: even the latest token is stale. */
    snapshot before = take_snapshot(fx);
    reply_full(fx, t1, OUTCOME_OK, 0, NULL, NULL);
    assert_unchanged(fx, before);
    no_reply_token(fx, t1, "timeout");
    assert_unchanged(fx, before);

    fire_timer(fx);
    uint64_t t2 = current_token(fx);
    assert_true(t2 != t1);

    /* In flight again: the older token, or one never issued, changes nothing. */
    before = take_snapshot(fx);
    reply_full(fx, t1, OUTCOME_REJECTED, 0, NULL, "late refusal");
    assert_unchanged(fx, before);
    no_reply_token(fx, t1, "timeout");
    assert_unchanged(fx, before);
    reply_full(fx, t2 + 1, OUTCOME_OK, 0, NULL, NULL);
    assert_unchanged(fx, before);
    reply_full(fx, 0, OUTCOME_CONFLICT, 0, NULL, NULL);
    assert_unchanged(fx, before);
    assert_string_equal(fx->s->steps[CHARGE].last_error, "timeout");

    /* The current one is taken, with the replayed flag. */
    kvmap result = KVMAP_INIT;
    assert_int_equal(kv_set(&result, "payment_id", "p-9"), 0);
    reply_full(fx, t2, OUTCOME_OK, 1, &result, NULL);
    kv_free(&result);
    assert_steps(fx, "DONE DONE ACTION_SENT PENDING PENDING");
    const event_rec *ev = last_event(fx, "step_reply");
    assert_int_equal(ev->replayed, 1);
    assert_int_equal(ev->attempt, 2);
    assert_int_equal(ev->step, CHARGE);

    /* The same reply twice: the second is stale. */
    before = take_snapshot(fx);
    reply_full(fx, t2, OUTCOME_OK, 1, NULL, NULL);
    assert_unchanged(fx, before);

    /* After the saga settled, even its last token is stale. */
    reply(fx, OUTCOME_REJECTED, "no");
    reply(fx, OUTCOME_OK, NULL);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
    before = take_snapshot(fx);
    reply(fx, OUTCOME_OK, NULL);
    assert_unchanged(fx, before);
    no_reply(fx, "timeout");
    assert_unchanged(fx, before);
}

/* ---- Errors: root_cause and last_error ------------------------------------------- */

/* The first cause stays when a later error replaces last_error; a resume
 * records who and why and clears last_error; a saga COMPLETED after it has
 * no error left, only what it recovered from. */
static void root_cause_outlives_later_errors(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, NOTIFY);
    assert_null(fx->s->root_cause);
    time_out_all_attempts(fx);
    assert_state(fx, SAGA_FAILED);
    const char *why = "step 'notify' has no compensation and its outcome is unknown after 3 "
                      "attempts: timeout";
    assert_last_error(fx, why);
    assert_string_equal(fx->s->root_cause, why);

    commit(fx);
    assert_int_equal(saga_resume(fx->s, &fx->env, "uid 7 (ops)", "network fixed"), 0);
    check_invariants(fx);
    assert_detail(last_event(fx, "resumed"),
                  "resumed by uid 7 (ops): network fixed; it had failed with: step 'notify' has "
                  "no compensation and its outcome is unknown after 3 attempts: timeout");
    assert_null(fx->s->last_error);
    assert_string_equal(fx->s->root_cause, why);
    assert_true(fx->s->dirty & SAGA_DIRTY_ROW);
    reply_standard_ok(fx, NOTIFY);
    assert_state(fx, SAGA_COMPLETED);
    assert_null(fx->s->last_error);
    assert_string_equal(fx->s->root_cause, why);
    assert_detail(last_event(fx, "saga_completed"), "recovered after a resume");
}

/* A refusal, then a compensation that fails: last_error says the latter,
 * root_cause the former. */
static void root_cause_is_the_first_error(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, "address invalid");
    assert_state(fx, SAGA_COMPENSATING);
    const char *first = "step 'ship' refused: address invalid";
    assert_last_error(fx, first);
    assert_string_equal(fx->s->root_cause, first);
    for (uint32_t a = 1; a < compensation_retry.max_attempts; a++) {
        no_reply(fx, "timeout");
        fire_timer(fx);
    }
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_FAILED);
    assert_last_error(fx, "compensation of step 'charge' failed after 2 attempts: timeout");
    assert_string_equal(fx->s->root_cause, first);
    /* Resumed, it compensates to the end: the settle event names the first cause. */
    assert_int_equal(do_resume(fx), 0);
    assert_null(fx->s->last_error);
    reply(fx, OUTCOME_OK, NULL);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
    assert_detail(last_event(fx, "saga_compensated"), first);
}

/* An abort names who asked and why, in last_error and its event. */
static void abort_names_who_and_why(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    commit(fx);
    assert_int_equal(saga_abort(fx->s, &fx->env, "uid 7 (ops)", "customer called"), 0);
    check_invariants(fx);
    assert_last_error(fx, "aborted by uid 7 (ops): customer called");
    assert_string_equal(fx->s->root_cause, "aborted by uid 7 (ops): customer called");
    assert_detail(last_event(fx, "abort_requested"), "aborted by uid 7 (ops): customer called");
}

/* ---- Compensation failures --------------------------------------------------------- */

static void compensation_spent_fails_then_resume(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, "address invalid");
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
    fx->rnd = 0.0;

    reply(fx, OUTCOME_RETRY, "ledger busy");
    assert_state(fx, SAGA_COMPENSATING);
    assert_int_equal(fx->armed, T0_MONO + 20); /* 40 ms, jittered to 20 */
    assert_detail(last_event(fx, "retry_scheduled"), "attempt 2 in 20 ms");
    assert_int_equal(last_event(fx, "retry_scheduled")->phase, PHASE_COMPENSATE);
    assert_string_equal(fx->s->steps[CHARGE].last_error, "ledger busy");
    fire_timer(fx);
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 2);

    size_t e0 = fx->n_events;
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_COMPENSATE);
    const char *why = "compensation of step 'charge' failed after 2 attempts: timeout";
    assert_last_error(fx, why);
    assert_int_equal(fx->s->cursor, CHARGE);
    assert_steps(fx, "DONE COMPENSATING REJECTED PENDING PENDING");
    assert_attempts(fx, CHARGE, 1, 2);
    assert_string_equal(events_str(fx, e0), "step_no_reply(charge/compensate) saga_failed");
    assert_detail(last_event(fx, "saga_failed"), why);
    assert_int_equal(fx->n_settled, 1);
    assert_int_equal(fx->settled_state, SAGA_FAILED);
    assert_false(fx->s->in_flight);

    /* Resume: a fresh budget for the compensation that failed. */
    e0 = fx->n_events;
    size_t s0 = fx->n_sends;
    assert_int_equal(do_resume(fx), 0);
    assert_state(fx, SAGA_COMPENSATING);
    assert_attempts(fx, CHARGE, 1, 1);
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
    assert_string_equal(events_str(fx, e0),
                        "resumed(charge/compensate) step_sent(charge/compensate)");
    assert_detail(last_event(fx, "resumed"), why);
    assert_dirty(fx, BIT(CHARGE));

    reply(fx, OUTCOME_OK, NULL);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
    assert_steps(fx, "COMPENSATED COMPENSATED REJECTED PENDING PENDING");
    assert_string_equal(sends_str(fx, s0), "charge:compensate:1 reserve:compensate:1");
    assert_int_equal(fx->n_settled, 2);
    assert_int_equal(fx->settled_state, SAGA_COMPENSATED);
}

static void compensation_rejected_fails(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, "address invalid");
    size_t e0 = fx->n_events, s0 = fx->n_sends;
    reply(fx, OUTCOME_REJECTED, "cannot refund");
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_COMPENSATE);
    assert_last_error(fx, "compensation of step 'charge' refused: cannot refund");
    assert_steps(fx, "DONE COMPENSATING REJECTED PENDING PENDING");
    assert_int_equal(fx->s->steps[CHARGE].last_outcome, OUTCOME_REJECTED);
    assert_string_equal(fx->s->steps[CHARGE].last_error, "cannot refund");
    assert_string_equal(events_str(fx, e0), "step_reply(charge/compensate) saga_failed");
    assert_int_equal(fx->n_sends, s0); /* reserve is not compensated */
    assert_int_equal(fx->n_settled, 1);
    assert_dirty(fx, BIT(CHARGE));

    /* Without a reason, the outcome names itself. */
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, NULL);
    reply(fx, OUTCOME_REJECTED, NULL);
    assert_last_error(fx, "compensation of step 'charge' refused: REJECTED");
}

static void conflict_in_action_fails(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    size_t e0 = fx->n_events, s0 = fx->n_sends;
    reply(fx, OUTCOME_CONFLICT, "key reused with other params");
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_ACTION);
    assert_last_error(
        fx, "idempotency conflict at step 'charge' (action): key reused with other params");
    assert_steps(fx, "DONE ACTION_SENT PENDING PENDING PENDING");
    assert_int_equal(fx->s->steps[CHARGE].last_outcome, OUTCOME_CONFLICT);
    assert_string_equal(events_str(fx, e0), "step_reply(charge/action) saga_failed");
    assert_int_equal(fx->n_sends, s0); /* no compensation, no retry */
    assert_int_equal(fx->n_timers, 0);
    assert_int_equal(fx->n_settled, 1);
    assert_false(fx->s->in_flight);
}

static void conflict_in_compensation_fails(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, INVOICE);
    reply(fx, OUTCOME_REJECTED, "no");
    assert_last_send(fx, SHIP, PHASE_COMPENSATE, 1);
    size_t e0 = fx->n_events, s0 = fx->n_sends;
    reply(fx, OUTCOME_CONFLICT, NULL);
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_COMPENSATE);
    assert_last_error(fx, "idempotency conflict at step 'ship' (compensate): ");
    assert_steps(fx, "DONE DONE COMPENSATING REJECTED PENDING");
    assert_string_equal(events_str(fx, e0), "step_reply(ship/compensate) saga_failed");
    assert_int_equal(fx->n_sends, s0);
    assert_int_equal(fx->n_settled, 1);
    assert_int_equal(fx->s->cursor, SHIP);
}

/* ---- Operator commands --------------------------------------------------------------- */

static void abort_running_compensates_in_flight_step(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    uint64_t action_token = current_token(fx);
    size_t e0 = fx->n_events, s0 = fx->n_sends;

    assert_int_equal(do_abort(fx, "customer cancelled"), 0);
    assert_state(fx, SAGA_COMPENSATING);
    assert_last_error(fx, "aborted by operator: customer cancelled");
    assert_string_equal(events_str(fx, e0),
                        "abort_requested compensation_started step_sent(ship/compensate)");
    assert_detail(last_event(fx, "compensation_started"),
                  "aborted by operator: customer cancelled");
    assert_last_send(fx, SHIP, PHASE_COMPENSATE, 1);
    assert_steps(fx, "DONE DONE COMPENSATING PENDING PENDING");
    assert_dirty(fx, BIT(SHIP));

    /* The action's answer arrives late: stale. */
    snapshot before = take_snapshot(fx);
    reply_full(fx, action_token, OUTCOME_OK, 0, NULL, NULL);
    assert_unchanged(fx, before);

    reply(fx, OUTCOME_OK, NULL);
    reply(fx, OUTCOME_OK, NULL);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
    assert_steps(fx, "COMPENSATED COMPENSATED COMPENSATED PENDING PENDING");
    assert_string_equal(sends_str(fx, s0),
                        "ship:compensate:1 charge:compensate:1 reserve:compensate:1");
    assert_int_equal(fx->n_settled, 1);

    /* Without a reason. */
    run_to_step(fx, RESERVE);
    assert_int_equal(do_abort(fx, ""), 0);
    assert_last_error(fx, "aborted by operator");
    run_to_step(fx, RESERVE);
    assert_int_equal(do_abort(fx, NULL), 0);
    assert_last_error(fx, "aborted by operator");
}

static void abort_running_refused_for_irreversible_step_in_flight(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, NOTIFY);
    snapshot before = take_snapshot(fx);
    assert_int_equal(do_abort(fx, "stop"), -1);
    assert_unchanged(fx, before);
    assert_last_error(fx, NULL);

    /* Also while it waits for a retry: its outcome is still unknown. */
    no_reply(fx, "timeout");
    before = take_snapshot(fx);
    int64_t armed = fx->armed;
    assert_int_equal(do_abort(fx, "stop"), -1);
    assert_unchanged(fx, before);
    assert_int_equal(fx->armed, armed);

    /* The saga goes on as before. */
    fire_timer(fx);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPLETED);
}

static void abort_during_backoff_cancels_the_timer(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    no_reply(fx, "timeout");
    assert_true(fx->armed > 0);
    assert_true(fx->s->steps[CHARGE].next_attempt_at_ms > 0);
    size_t t0 = fx->n_timers;

    assert_int_equal(do_abort(fx, "late"), 0);
    assert_int_equal(fx->n_timers, t0 + 1);
    assert_int_equal(fx->timers[fx->n_timers - 1], 0); /* cancelled */
    assert_int_equal(fx->armed, 0);
    assert_int_equal(fx->s->timer_due, 0);
    assert_int_equal(fx->s->steps[CHARGE].next_attempt_at_ms, 0);
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
    assert_state(fx, SAGA_COMPENSATING);
    assert_dirty(fx, BIT(CHARGE));

    /* A timer the engine fires anyway does nothing: the compensation is in flight. */
    snapshot before = take_snapshot(fx);
    commit(fx);
    saga_on_timer(fx->s, &fx->env);
    check_invariants(fx);
    assert_unchanged(fx, before);
}

static void abort_refused_in_other_states(void **state)
{
    fixture *fx = *state;
    snapshot before;

    run_to_step(fx, NOTIFY); /* COMPLETED */
    reply(fx, OUTCOME_OK, NULL);
    before = take_snapshot(fx);
    assert_int_equal(do_abort(fx, "x"), -1);
    assert_unchanged(fx, before);
    assert_state(fx, SAGA_COMPLETED);
    assert_last_error(fx, NULL);

    run_to_step(fx, RESERVE); /* COMPENSATED */
    reply(fx, OUTCOME_REJECTED, "no");
    before = take_snapshot(fx);
    assert_int_equal(do_abort(fx, "x"), -1);
    assert_unchanged(fx, before);
    assert_last_error(fx, "step 'reserve' refused: no");

    run_to_step(fx, SHIP); /* COMPENSATING */
    reply(fx, OUTCOME_REJECTED, "no");
    before = take_snapshot(fx);
    assert_int_equal(do_abort(fx, "x"), -1);
    assert_unchanged(fx, before);
    assert_state(fx, SAGA_COMPENSATING);

    reply(fx, OUTCOME_REJECTED, "no"); /* FAILED in compensation */
    assert_state(fx, SAGA_FAILED);
    before = take_snapshot(fx);
    assert_int_equal(do_abort(fx, "x"), -1);
    assert_unchanged(fx, before);
}

static void resume_refused_unless_failed(void **state)
{
    fixture *fx = *state;
    snapshot before;

    run_to_step(fx, CHARGE); /* RUNNING */
    before = take_snapshot(fx);
    assert_int_equal(do_resume(fx), -1);
    assert_unchanged(fx, before);

    reply(fx, OUTCOME_REJECTED, "no"); /* COMPENSATING */
    before = take_snapshot(fx);
    assert_int_equal(do_resume(fx), -1);
    assert_unchanged(fx, before);

    reply(fx, OUTCOME_OK, NULL); /* COMPENSATED */
    assert_state(fx, SAGA_COMPENSATED);
    before = take_snapshot(fx);
    assert_int_equal(do_resume(fx), -1);
    assert_unchanged(fx, before);

    run_to_step(fx, NOTIFY); /* COMPLETED */
    reply(fx, OUTCOME_OK, NULL);
    before = take_snapshot(fx);
    assert_int_equal(do_resume(fx), -1);
    assert_unchanged(fx, before);
}

/* ---- Early sends (saga.h "Early sends") -------------------------------------- */

/* A crash after ship was sent early (charge's OK not yet committed): going
 * forward, charge is asked again and ship then goes with attempt 1 as usual;
 * nothing is owned up. */
static void early_send_forward_changes_nothing(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    restart(fx);
    do_recover(fx);
    assert_int_equal(fx->s->maybe_sent, BIT(SHIP));
    assert_string_equal(sends_str(fx, 0), "charge:action:2");
    reply_standard_ok(fx, CHARGE);
    assert_last_send(fx, SHIP, PHASE_ACTION, 1);
    assert_int_equal(fx->s->maybe_sent, 0);
    assert_int_equal(do_abort(fx, "changed my mind"), 0);
    assert_null(strstr(events_str(fx, 0), "step_maybe_sent"));
}

/* Aborted before charge answers again: ship, which may have been sent, is
 * owned up in the same change as COMPENSATING and undone first. */
static void early_send_owned_up_on_abort(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    restart(fx);
    do_recover(fx);
    size_t from = fx->n_sends;
    size_t ev = fx->n_events;
    assert_int_equal(do_abort(fx, "stop"), 0);
    assert_state(fx, SAGA_COMPENSATING);
    assert_string_equal(events_str(fx, ev),
                        "abort_requested step_maybe_sent(ship/action) compensation_started "
                        "step_sent(ship/compensate)");
    assert_steps(fx, "DONE ACTION_SENT COMPENSATING PENDING PENDING");
    assert_true(fx->s->dirty_steps & BIT(SHIP));
    assert_string_equal(sends_str(fx, from), "ship:compensate:1");
    reply(fx, OUTCOME_OK, NULL); /* the barrier: a null compensation */
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
    reply(fx, OUTCOME_OK, NULL);
    assert_last_send(fx, RESERVE, PHASE_COMPENSATE, 1);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);
}

/* The deadline has passed at the restart: the same; a pivot never leaves
 * early, so notify is not owned up and its action is never sent. */
static void early_send_owned_up_at_deadline(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, INVOICE);
    fx->s->deadline_at_ms = fx->wall + 1000;
    restart(fx);
    fx->wall += 2000;
    do_recover(fx);
    assert_state(fx, SAGA_COMPENSATING);
    assert_steps(fx, "DONE DONE DONE COMPENSATING PENDING");
    assert_null(strstr(events_str(fx, 0), "step_maybe_sent"));
    assert_null(strstr(sends_str(fx, 0), "notify:action"));
    assert_null(strstr(sends_str(fx, 0), "invoice:action"));
    assert_string_equal(sends_str(fx, 0), "invoice:compensate:1");
}

/* Failed while ship may have been sent early: owned up with FAILED. A
 * resume turns ship PENDING again (never sent before charge is DONE); an
 * abort then owns it up again. */
static void early_send_owned_up_on_failure_and_resume(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    restart(fx);
    do_recover(fx);
    reply(fx, OUTCOME_CONFLICT, "key reused with other params");
    assert_state(fx, SAGA_FAILED);
    assert_steps(fx, "DONE ACTION_SENT ACTION_SENT PENDING PENDING");
    size_t from = fx->n_sends;
    assert_int_equal(do_resume(fx), 0);
    assert_state(fx, SAGA_RUNNING);
    assert_steps(fx, "DONE ACTION_SENT PENDING PENDING PENDING");
    assert_int_equal(fx->s->maybe_sent, BIT(SHIP));
    assert_string_equal(sends_str(fx, from), "charge:action:1");
    assert_int_equal(do_abort(fx, "stop"), 0);
    assert_steps(fx, "DONE ACTION_SENT COMPENSATING PENDING PENDING");
}

/* A saga made FAILED at the restart without saga_recover (its definition
 * could not be loaded), after ship left early: once bound again, an abort
 * or a resume still owns ship up and undoes it (found in review). */
static void fail_without_recovery(fixture *fx)
{
    run_to_step(fx, CHARGE); /* charge's OK came, ship left early, then the kill */
    restart(fx);
    fx->s->failed_phase = PHASE_ACTION; /* what engine.c eng_recover_one writes */
    saga_set_error(fx->s, "cannot load its definition (type 'x' version 1): ...");
    fx->s->state = SAGA_FAILED;
    commit(fx);
    restart(fx); /* a later start: find_or_load binds it */
}

static void early_send_owned_up_when_failed_unrecovered_is_aborted(void **state)
{
    fixture *fx = *state;
    fail_without_recovery(fx);
    assert_int_equal(do_abort(fx, "stop"), 0);
    assert_non_null(strstr(events_str(fx, 0), "step_maybe_sent(ship/action)"));
    assert_last_send(fx, SHIP, PHASE_COMPENSATE, 1);
    while (fx->s->state == SAGA_COMPENSATING)
        reply(fx, OUTCOME_OK, NULL);
    assert_steps(fx, "COMPENSATED COMPENSATED COMPENSATED PENDING PENDING");
    assert_state(fx, SAGA_COMPENSATED);
}

static void early_send_owned_up_when_failed_unrecovered_is_resumed(void **state)
{
    fixture *fx = *state;
    /* charge's participant stays unreachable: attempts spent. */
    fail_without_recovery(fx);
    assert_int_equal(do_resume(fx), 0);
    assert_int_equal(fx->s->maybe_sent, BIT(SHIP));
    time_out_all_attempts(fx);
    while (fx->s->state == SAGA_COMPENSATING)
        reply(fx, OUTCOME_OK, NULL);
    assert_steps(fx, "COMPENSATED COMPENSATED COMPENSATED PENDING PENDING");
    assert_state(fx, SAGA_COMPENSATED);

    /* The deadline passes before charge answers again. */
    fx->wall += 1;
    fail_without_recovery(fx);
    fx->s->deadline_at_ms = fx->wall + 1000;
    fx->wall += 5000;
    assert_int_equal(do_resume(fx), 0);
    fire_timer(fx);
    reply_standard_ok(fx, CHARGE); /* the replay of the OK that let ship leave */
    while (fx->s->state == SAGA_COMPENSATING)
        reply(fx, OUTCOME_OK, NULL);
    assert_steps(fx, "COMPENSATED COMPENSATED COMPENSATED PENDING PENDING");
    assert_state(fx, SAGA_COMPENSATED);
}

/* ---- Recovery after a restart ------------------------------------------------------- */

static void recover_running_resends_the_step(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    restart(fx);
    do_recover(fx);
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(events_str(fx, 0), "recovered(charge/action) step_sent(charge/action)");
    assert_detail(&fx->events[0], "orchestrator restarted");
    assert_string_equal(sends_str(fx, 0), "charge:action:2");
    assert_int_equal(fx->sends[0].token, fx->s->token);
    assert_true(fx->s->in_flight);
    assert_attempts(fx, CHARGE, 2, 0);
    assert_steps(fx, "DONE ACTION_SENT PENDING PENDING PENDING");
    assert_dirty(fx, BIT(CHARGE));

    /* The saga goes on from there. */
    reply_standard_ok(fx, CHARGE);
    assert_last_send(fx, SHIP, PHASE_ACTION, 1);
}

static void recover_last_attempt_in_flight_is_asked_again(void **state)
{
    fixture *fx = *state;
    /* charge has a compensation. Its last attempt was in flight at the
     * crash: its reply was lost with sagad, so it is asked once more (same
     * key: the participant replays) rather than given up on. */
    run_to_step(fx, CHARGE);
    no_reply(fx, "timeout");
    fire_timer(fx);
    no_reply(fx, "timeout");
    fire_timer(fx);
    assert_attempts(fx, CHARGE, 3, 0); /* the last attempt was in flight at the crash */
    restart(fx);
    do_recover(fx);
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(events_str(fx, 0), "recovered(charge/action) step_sent(charge/action)");
    assert_string_equal(sends_str(fx, 0), "charge:action:4");
    /* Once only: crashing again with that one in flight gives up (a crash
     * loop must not retry forever), compensating charge too, after ship:
     * had charge's OK come back just before the crash, ship may have been
     * sent early (saga.h "Early sends"). */
    restart(fx);
    do_recover(fx);
    assert_state(fx, SAGA_COMPENSATING);
    assert_last_error(fx, "step 'charge' failed after 4 attempts: attempts spent before the "
                          "restart");
    assert_string_equal(sends_str(fx, 0), "ship:compensate:1");
    reply(fx, OUTCOME_OK, NULL);
    assert_attempts(fx, CHARGE, 4, 1);

    /* notify has none: asked again too, and the pivot rule fails the saga
     * only when that attempt goes unanswered as well. */
    run_to_step(fx, NOTIFY);
    no_reply(fx, "timeout");
    fire_timer(fx);
    no_reply(fx, "timeout");
    fire_timer(fx);
    restart(fx);
    do_recover(fx);
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(sends_str(fx, 0), "notify:action:4");
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_ACTION);
    assert_last_error(fx, "step 'notify' has no compensation and its outcome is unknown after 4 "
                          "attempts: timeout");
    assert_int_equal(fx->n_settled, 1);
}

/* Past the participants' idempotency retention a request could run a step
 * twice or skip an undo: recovery fails the saga, operators are refused. */
static void beyond_retention_nothing_is_sent(void **state)
{
    fixture *fx = *state;
    fx->def.retention_ms = 3600 * 1000;
    run_to_step(fx, CHARGE);
    restart(fx);
    fx->wall += 3600 * 1000 - 1; /* just inside: recovered as usual */
    do_recover(fx);
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(sends_str(fx, 0), "charge:action:2");

    /* A retry that falls due past the retention is not sent either. */
    no_reply(fx, "timeout");
    fx->wall += 1000; /* the backoff: now older than the retention */
    fire_timer(fx);
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->n_sends, 1);
    assert_non_null(strstr(fx->s->last_error, "older than idempotency_retention_s"));

    run_to_step(fx, CHARGE);
    restart(fx);
    fx->wall += 3600 * 1000; /* as old as the retention */
    do_recover(fx);
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->n_sends, 0);
    assert_non_null(strstr(fx->s->last_error, "older than idempotency_retention_s"));
    /* ship may have been sent early: owned up with the failure. */
    assert_string_equal(events_str(fx, 0),
                        "recovered(charge/action) step_maybe_sent(ship/action) saga_failed");

    clear_log(fx);
    assert_int_equal(saga_resume(fx->s, &fx->env, NULL, NULL), -2);
    assert_int_equal(saga_abort(fx->s, &fx->env, NULL, "too late"), -2);
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->n_sends, 0);
    assert_int_equal(fx->n_events, 0);
}

static void recover_compensating_resends_the_compensation(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, "no");
    assert_last_send(fx, CHARGE, PHASE_COMPENSATE, 1);
    restart(fx);
    do_recover(fx);
    assert_state(fx, SAGA_COMPENSATING);
    assert_string_equal(events_str(fx, 0),
                        "recovered(charge/compensate) step_sent(charge/compensate)");
    assert_string_equal(sends_str(fx, 0), "charge:compensate:2");
    assert_attempts(fx, CHARGE, 1, 2);
    assert_dirty(fx, BIT(CHARGE));
    reply(fx, OUTCOME_OK, NULL);
    reply(fx, OUTCOME_OK, NULL);
    assert_state(fx, SAGA_COMPENSATED);

    /* Its last attempt in flight at the crash: asked once more. */
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, "no");
    no_reply(fx, "timeout");
    fire_timer(fx);
    restart(fx);
    do_recover(fx);
    assert_state(fx, SAGA_COMPENSATING);
    assert_string_equal(sends_str(fx, 0), "charge:compensate:3");
    no_reply(fx, "timeout");
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_COMPENSATE);
    assert_last_error(fx, "compensation of step 'charge' failed after 3 attempts: timeout");
}

static void recover_finished_or_failed_does_nothing(void **state)
{
    fixture *fx = *state;
    snapshot before;

    run_to_step(fx, NOTIFY);
    reply(fx, OUTCOME_OK, NULL);
    restart(fx);
    before = take_snapshot(fx);
    do_recover(fx);
    assert_unchanged(fx, before);
    assert_state(fx, SAGA_COMPLETED);

    run_to_step(fx, CHARGE);
    reply(fx, OUTCOME_REJECTED, "no");
    reply(fx, OUTCOME_OK, NULL);
    restart(fx);
    before = take_snapshot(fx);
    do_recover(fx);
    assert_unchanged(fx, before);
    assert_state(fx, SAGA_COMPENSATED);

    run_to_step(fx, CHARGE);
    reply(fx, OUTCOME_CONFLICT, "x");
    restart(fx);
    before = take_snapshot(fx);
    do_recover(fx);
    assert_unchanged(fx, before);
    assert_state(fx, SAGA_FAILED);
}

/* ---- Dirty flags ------------------------------------------------------------------- */

/* Every change marks the saga row and exactly the steps it changed; a stale
 * event marks nothing. (Most other tests assert these too at single points.) */
static void dirty_flags_follow_changes(void **state)
{
    fixture *fx = *state;
    start(fx);
    assert_int_equal(fx->s->dirty, SAGA_DIRTY_NEW | SAGA_DIRTY_ROW);
    assert_int_equal(fx->s->dirty_steps, BIT(RESERVE));

    fx->wall += 10;
    reply_standard_ok(fx, RESERVE);
    assert_int_equal(fx->s->dirty, SAGA_DIRTY_ROW); /* no longer NEW once committed */
    assert_dirty(fx, BIT(RESERVE) | BIT(CHARGE));

    fx->wall += 10;
    uint64_t t = current_token(fx);
    no_reply(fx, "timeout");
    assert_dirty(fx, BIT(CHARGE));

    fx->wall += 10;
    reply_full(fx, t, OUTCOME_OK, 0, NULL, NULL); /* stale */
    assert_not_dirty(fx);

    fire_timer(fx);
    assert_dirty(fx, BIT(CHARGE));

    fx->wall += 10;
    reply(fx, OUTCOME_RETRY, NULL);
    assert_dirty(fx, BIT(CHARGE));
    assert_detail(last_event(fx, "retry_scheduled"), "attempt 3 in 100 ms"); /* rnd 0: 200 / 2 */

    fire_timer(fx);
    fx->wall += 10;
    reply(fx, OUTCOME_REJECTED, "no");
    assert_dirty(fx, BIT(CHARGE) | BIT(RESERVE));

    fx->wall += 10;
    reply(fx, OUTCOME_OK, NULL); /* the last compensation: settles */
    assert_dirty(fx, BIT(RESERVE));
    assert_state(fx, SAGA_COMPENSATED);

    fx->wall += 10;
    commit(fx);
    assert_int_equal(do_abort(fx, "x"), -1);
    assert_not_dirty(fx);
    assert_int_equal(do_resume(fx), -1);
    assert_not_dirty(fx);

    /* Operator commands and recovery mark what they change. */
    run_to_step(fx, SHIP);
    fx->wall += 10;
    assert_int_equal(do_abort(fx, "x"), 0);
    assert_dirty(fx, BIT(SHIP));
    fx->wall += 10;
    reply(fx, OUTCOME_REJECTED, "no"); /* compensation refused: FAILED */
    assert_dirty(fx, BIT(SHIP));
    fx->wall += 10;
    assert_int_equal(do_resume(fx), 0);
    assert_dirty(fx, BIT(SHIP));
    restart(fx);
    fx->wall += 10;
    do_recover(fx);
    assert_dirty(fx, BIT(SHIP));
}

/* ---- The invariant checker itself ---------------------------------------------------- */

/* saga_check_invariants must name each broken fact, or the assertion after
 * every event in the other tests proves nothing. */
static void invariants_detect_broken_states(void **state)
{
    fixture *fx = *state;
    fx->s = saga_new(&fx->def, "i", NULL, &fx->input, 0);
    assert_non_null(fx->s);
    saga *s = fx->s;
    step_run *st = s->steps;
#define SET_STEPS(a, b, c, d, e)                                                                   \
    (st[0].state = (a), st[1].state = (b), st[2].state = (c), st[3].state = (d), st[4].state = (e))
#define BROKEN(msg) assert_string_equal(saga_check_invariants(s), (msg))
#define FINE()      assert_null(saga_check_invariants(s))

    s->cursor = -1;
    BROKEN("cursor out of range");
    s->cursor = N_STEPS;
    BROKEN("cursor out of range");

    s->state = SAGA_RUNNING;
    s->cursor = SHIP;
    SET_STEPS(STEP_DONE, STEP_DONE, STEP_ACTION_SENT, STEP_PENDING, STEP_PENDING);
    FINE();
    SET_STEPS(STEP_DONE, STEP_DONE, STEP_PENDING, STEP_PENDING, STEP_PENDING);
    FINE(); /* loaded before its first send */
    SET_STEPS(STEP_DONE, STEP_REJECTED, STEP_ACTION_SENT, STEP_PENDING, STEP_PENDING);
    BROKEN("a step was sent before a step it waits for was DONE");
    SET_STEPS(STEP_DONE, STEP_DONE, STEP_ACTION_SENT, STEP_PENDING, STEP_DONE);
    BROKEN("a step was sent before a step it waits for was DONE");
    SET_STEPS(STEP_DONE, STEP_REJECTED, STEP_PENDING, STEP_PENDING, STEP_PENDING);
    BROKEN("RUNNING: a step is rejected or on its way back");

    s->state = SAGA_COMPENSATING;
    s->cursor = CHARGE;
    SET_STEPS(STEP_DONE, STEP_COMPENSATING, STEP_COMPENSATED, STEP_REJECTED, STEP_PENDING);
    FINE();
    SET_STEPS(STEP_DONE, STEP_COMPENSATING, STEP_DONE, STEP_REJECTED, STEP_PENDING);
    BROKEN("a step is compensated before a step that depends on it is undone");
    SET_STEPS(STEP_DONE, STEP_COMPENSATING, STEP_COMPENSATING, STEP_REJECTED, STEP_PENDING);
    BROKEN("a step is compensated before a step that depends on it is undone");
    SET_STEPS(STEP_DONE, STEP_DONE, STEP_COMPENSATING, STEP_DONE, STEP_ACTION_SENT);
    st[SHIP].in_flight = st[NOTIFY].in_flight = 1;
    st[INVOICE].state = STEP_COMPENSATED;
    BROKEN("COMPENSATING: a compensation is in flight beside an action");
    st[SHIP].in_flight = st[NOTIFY].in_flight = 0;
    SET_STEPS(STEP_DONE, STEP_COMPENSATING, STEP_COMPENSATED, STEP_COMPENSATED, STEP_ACTION_SENT);
    FINE(); /* notify cannot be undone */

    s->state = SAGA_COMPLETED;
    SET_STEPS(STEP_DONE, STEP_DONE, STEP_DONE, STEP_DONE, STEP_DONE);
    FINE();
    SET_STEPS(STEP_DONE, STEP_DONE, STEP_DONE, STEP_DONE, STEP_ACTION_SENT);
    BROKEN("COMPLETED: a step is not DONE");

    s->state = SAGA_COMPENSATED;
    SET_STEPS(STEP_COMPENSATED, STEP_COMPENSATED, STEP_REJECTED, STEP_PENDING, STEP_PENDING);
    FINE();
    SET_STEPS(STEP_DONE, STEP_REJECTED, STEP_PENDING, STEP_PENDING, STEP_PENDING);
    BROKEN("COMPENSATED: a step with a compensation may still have its effect");
    SET_STEPS(STEP_COMPENSATED, STEP_COMPENSATED, STEP_COMPENSATED, STEP_COMPENSATED, STEP_DONE);
    FINE();

    s->state = SAGA_FAILED;
    BROKEN("FAILED without last_error");
    s->last_error = strdup("x");
    BROKEN("FAILED without root_cause");
    s->root_cause = strdup("x");
    FINE();

    s->state = (saga_state)0;
    BROKEN("unknown saga state");
#undef SET_STEPS
#undef BROKEN
#undef FINE
}

/* ---- Defects found in saga.c ----------------------------------------------------------- */

/*
 * BUG (saga.c settle): the saga_failed event of a saga that failed in its
 * compensation carries phase = PHASE_ACTION. settle() computes the event's
 * phase with current_phase(s) *after* it has set s->state = SAGA_FAILED, so
 * every settle event (saga_completed, saga_compensated, saga_failed) says
 * "action". The engine's own saga_failed (recover_one) uses failed_phase, and
 * the history then disagrees with failed_phase about what resume continues.
 * Expected: phase == PHASE_COMPENSATE (== s->failed_phase); actual: PHASE_ACTION.
 */
static void failed_event_names_compensate_phase(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, SHIP);
    reply(fx, OUTCOME_REJECTED, "no");
    reply(fx, OUTCOME_REJECTED, "cannot refund");
    assert_state(fx, SAGA_FAILED);
    assert_int_equal(fx->s->failed_phase, PHASE_COMPENSATE);
    const event_rec *ev = last_event(fx, "saga_failed");
    assert_string_equal(wire_phase_name(ev->phase), wire_phase_name(fx->s->failed_phase));
}

/*
 * BUG (saga.c saga_recover, contract mismatch with saga.h): "After a
 * restart: re-sends the step in flight (same key, next attempt), or re-arms
 * the retry timer." saga_recover never re-arms a timer: a saga stored while
 * it waited for a retry (step ACTION_SENT, next_attempt_at_ms in the future,
 * nothing in flight) is re-sent at once, skipping the backoff the
 * participant asked for with RETRY.
 * Expected: no send; a timer scheduled at now_mono + (next_attempt_at_ms -
 * now_wall); the attempt sent when it fires. Actual: charge:action:2 sent
 * immediately, no timer.
 */
static void recover_rearms_pending_retry_timer(void **state)
{
    fixture *fx = *state;
    run_to_step(fx, CHARGE);
    fx->rnd = 0.0;
    reply(fx, OUTCOME_RETRY, "overloaded");
    int64_t retry_at = fx->s->steps[CHARGE].next_attempt_at_ms;
    assert_int_equal(retry_at, fx->wall + 50);
    restart(fx);
    fx->wall += 10; /* restarted 10 ms later: 40 ms still to wait */
    fx->mono = 100000;
    do_recover(fx);
    assert_state(fx, SAGA_RUNNING);
    assert_string_equal(sends_str(fx, 0), "");
    assert_attempts(fx, CHARGE, 1, 0);
    assert_int_equal(fx->n_timers, 1);
    assert_int_equal(fx->armed, fx->mono + (retry_at - fx->wall));
    fire_timer(fx);
    assert_string_equal(sends_str(fx, 0), "charge:action:2");
}

/*
 * BUG (saga.c saga_check_invariants, gap against saga.h): saga.h lists for
 * COMPENSATING "no step is PENDING below a DONE one" among the facts
 * "asserted by saga_check_invariants", but the checker only looks at the
 * steps after the cursor. A corrupted COMPENSATING saga with a PENDING step
 * below a DONE one therefore passes the engine's pre-store check.
 * Expected: a non-NULL message for both layouts below; actual: NULL.
 */
static void invariants_catch_pending_below_done(void **state)
{
    fixture *fx = *state;
    fx->s = saga_new(&fx->def, "i", NULL, &fx->input, 0);
    assert_non_null(fx->s);
    step_run *st = fx->s->steps;
    fx->s->state = SAGA_COMPENSATING;

    /* Below the cursor: reserve PENDING under charge DONE. */
    fx->s->cursor = SHIP;
    st[RESERVE].state = STEP_PENDING;
    st[CHARGE].state = STEP_DONE;
    st[SHIP].state = STEP_COMPENSATING;
    st[INVOICE].state = STEP_REJECTED;
    st[NOTIFY].state = STEP_PENDING;
    assert_non_null(saga_check_invariants(fx->s));

    /* Above it: notify (no compensation) DONE over PENDING steps. */
    fx->s->cursor = RESERVE;
    st[RESERVE].state = STEP_COMPENSATING;
    st[CHARGE].state = st[SHIP].state = st[INVOICE].state = STEP_PENDING;
    st[NOTIFY].state = STEP_DONE;
    assert_non_null(saga_check_invariants(fx->s));
}

/* ---- Runner --------------------------------------------------------------------- */

#define T(fn)              cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T_IRREVERSIBLE(fn) cmocka_unit_test_setup_teardown(fn, setup_charge_irreversible, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(state_names_and_parse),
        T(new_saga_copies_its_arguments),
        T(step_keys),
        T(happy_path_completes),
        T(params_flow_between_steps),
        T(rejected_at_each_step),
        T_IRREVERSIBLE(rejected_at_each_step),
        T(skipped_action_behaves_as_rejected),
        T(retry_then_ok),
        T(timeouts_then_compensation_includes_the_step),
        T(pivot_step_attempts_spent_fails_saga),
        T(pivot_failed_saga_abort_compensates_earlier_steps),
        T(resume_failed_action_gets_fresh_budget),
        cmocka_unit_test(backoff_bounds),
        T(retry_timers_follow_backoff),
        T(timer_without_retry_does_nothing),
        T(stale_replies_are_ignored),
        T(compensation_spent_fails_then_resume),
        T(root_cause_outlives_later_errors),
        T(root_cause_is_the_first_error),
        T(abort_names_who_and_why),
        T(compensation_rejected_fails),
        T(conflict_in_action_fails),
        T(conflict_in_compensation_fails),
        T(abort_running_compensates_in_flight_step),
        T(abort_running_refused_for_irreversible_step_in_flight),
        T(abort_during_backoff_cancels_the_timer),
        T(abort_refused_in_other_states),
        T(resume_refused_unless_failed),
        T(recover_running_resends_the_step),
        T(early_send_forward_changes_nothing),
        T(early_send_owned_up_on_abort),
        T(early_send_owned_up_at_deadline),
        T(early_send_owned_up_on_failure_and_resume),
        T(early_send_owned_up_when_failed_unrecovered_is_aborted),
        T(early_send_owned_up_when_failed_unrecovered_is_resumed),
        T(recover_last_attempt_in_flight_is_asked_again),
        T(beyond_retention_nothing_is_sent),
        T(recover_compensating_resends_the_compensation),
        T(recover_finished_or_failed_does_nothing),
        T(dirty_flags_follow_changes),
        T(invariants_detect_broken_states),
        T(failed_event_names_compensate_phase),
        T(recover_rearms_pending_retry_timer),
        T(invariants_catch_pending_below_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
