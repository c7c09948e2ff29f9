/*
 * saga — the saga state machine; see saga.h for the states, the transitions
 * and the facts that hold in each.
 *
 * Every function here changes the saga in memory, marks what changed
 * (s->dirty, s->dirty_steps) and asks the environment for effects. The
 * environment (engine.c) commits the changes before it performs any send, so
 * "intent before request" holds by construction: send_attempt() counts the
 * attempt and sets the step's state in the same round that asks for the send.
 */
#include "saga.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga_dag.h"
#include "util.h"
#include "wire.h"

/* ---- Allocation ------------------------------------------------------- */

saga *saga_alloc(size_t n_steps)
{
    saga *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->steps = calloc(n_steps ? n_steps : 1, sizeof *s->steps);
    if (s->steps == NULL) {
        free(s);
        return NULL;
    }
    s->n_steps = n_steps;
    for (size_t i = 0; i < n_steps; i++)
        s->steps[i].last_outcome = OUTCOME_UNSPECIFIED;
    return s;
}

saga *saga_new(const saga_def *def, const char *id, const char *client_key, const kvmap *input,
               int64_t now_wall_ms)
{
    saga *s = saga_alloc(def->n_steps);
    if (s == NULL)
        return NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->def = def;
    s->def_version = def->version;
    s->type = util_strdup(def->name);
    s->state = SAGA_RUNNING;
    s->client_key = client_key ? util_strdup(client_key) : NULL;
    s->created_at_ms = s->updated_at_ms = now_wall_ms;
    s->deadline_at_ms = def->deadline_ms > 0 ? now_wall_ms + def->deadline_ms : 0;
    s->dirty = SAGA_DIRTY_NEW | SAGA_DIRTY_ROW;
    if (s->type == NULL || (client_key && s->client_key == NULL) || kv_merge(&s->input, input)) {
        saga_free(s);
        return NULL;
    }
    return s;
}

void saga_free(saga *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_steps; i++) {
        kv_free(&s->steps[i].result);
        free(s->steps[i].last_error);
    }
    free(s->steps);
    kv_free(&s->input);
    free(s->type);
    free(s->client_key);
    free(s->last_error);
    free(s->root_cause);
    free(s);
}

/* ---- Names ------------------------------------------------------------ */

static const char *const saga_state_names[] = {"UNSPECIFIED", "RUNNING",     "COMPENSATING",
                                               "COMPLETED",   "COMPENSATED", "FAILED"};
static const char *const step_state_names[] = {"PENDING",  "ACTION_SENT",  "DONE",
                                               "REJECTED", "COMPENSATING", "COMPENSATED"};

const char *saga_state_name(saga_state st)
{
    return (st >= SAGA_RUNNING && st <= SAGA_FAILED) ? saga_state_names[st] : "UNKNOWN";
}

int saga_state_parse(const char *name)
{
    for (int st = SAGA_RUNNING; st <= SAGA_FAILED; st++)
        if (strcasecmp(name, saga_state_names[st]) == 0)
            return st;
    return -1;
}

const char *step_state_name(step_state st)
{
    return (st >= STEP_PENDING && st <= STEP_COMPENSATED) ? step_state_names[st] : "UNKNOWN";
}

int saga_is_final(saga_state st)
{
    return st == SAGA_COMPLETED || st == SAGA_COMPENSATED;
}

/* ---- Pure helpers ----------------------------------------------------- */

void saga_step_key(const saga *s, int step, int phase, char *buf, size_t len)
{
    const char *name = s->def ? s->def->steps[step].name : "?";
    snprintf(buf, len, "%s/%s/%s", s->id, name, wire_phase_name(phase));
}

int saga_step_params(const saga *s, int step, kvmap *out)
{
    kvmap all = KVMAP_INIT;
    int rc = kv_merge(&all, &s->input);
    /* Results of the steps it waits for, in index order (a later output of
     * the same name wins): never of a step that may run beside it, whose
     * result could appear between two attempts and change the fingerprint. */
    uint64_t before = saga_dag_ancestors(s->def, (size_t)step);
    for (int j = 0; rc == 0 && (size_t)j < s->n_steps; j++)
        if (before & SAGA_DAG_BIT(j))
            rc = kv_merge(&all, &s->steps[j].result);
    const step_def *sd = &s->def->steps[step];
    if (rc == 0 && !sd->has_input_list) {
        rc = kv_merge(out, &all);
    } else {
        for (size_t k = 0; rc == 0 && k < sd->n_inputs; k++) {
            const char *v = kv_get(&all, sd->inputs[k]);
            if (v != NULL) /* absent: the participant refuses, naming it */
                rc = kv_set(out, sd->inputs[k], v);
        }
    }
    kv_free(&all);
    return rc;
}

int64_t saga_backoff_ms(const retry_policy *p, uint32_t attempt, double unit_random)
{
    if (attempt < 2)
        return 0;
    double d = (double)p->initial_backoff_ms * pow(p->multiplier, (double)(attempt - 2));
    if (d > (double)p->max_backoff_ms || !isfinite(d))
        d = (double)p->max_backoff_ms;
    double low = d / 2;
    int64_t ms = (int64_t)(low + unit_random * (d - low));
    return ms < 1 ? 1 : ms;
}

/* ---- Effects ---------------------------------------------------------- */

static void touch(saga *s, const saga_env *env)
{
    s->updated_at_ms = env->now_wall(env->ctx);
    s->dirty |= SAGA_DIRTY_ROW;
}

static void touch_step(saga *s, const saga_env *env, int step)
{
    touch(s, env);
    s->dirty_steps |= 1ull << step;
}

static void set_text(char **slot, const char *text)
{
    char *copy = text ? util_strdup(text) : NULL;
    free(*slot);
    *slot = copy; /* on out-of-memory the message is lost, never the state */
}

void saga_set_error(saga *s, const char *why)
{
    set_text(&s->last_error, why);
    if (s->root_cause == NULL && why != NULL)
        set_text(&s->root_cause, why);
}

static void emit(saga *s, const saga_env *env, const char *kind, int step, int phase,
                 uint32_t attempt, int outcome, int replayed, const char *detail)
{
    saga_event ev = {kind, step, phase, attempt, outcome, replayed, detail};
    env->history(env->ctx, s, &ev);
}

static int is_live(const saga *s)
{
    return s->state == SAGA_RUNNING || s->state == SAGA_COMPENSATING;
}

static int current_phase(const saga *s)
{
    return s->state == SAGA_COMPENSATING ? PHASE_COMPENSATE : PHASE_ACTION;
}

/* The phase of the request a step has (or had last) in flight. */
static int step_phase(const step_run *r)
{
    return r->state == STEP_COMPENSATING ? PHASE_COMPENSATE : PHASE_ACTION;
}

/* Is every step it waits for DONE? Only then may its action be sent (a
 * step owned up as maybe sent early may wait for one still unknown). */
static int deps_done(const saga *s, int step)
{
    uint64_t deps = saga_dag_deps(s->def, (size_t)step);
    for (size_t j = 0; j < s->n_steps; j++)
        if ((deps & SAGA_DAG_BIT(j)) && s->steps[j].state != STEP_DONE)
            return 0;
    return 1;
}

static int has_compensation(const saga *s, int step)
{
    return s->def->steps[step].compensation != NULL;
}

/* A request in flight, or a retry waiting for its time. */
static int awaited(const saga *s, int step)
{
    return s->steps[step].in_flight || s->steps[step].timer_due != 0;
}

/* May the step have had an effect that is not undone yet? */
static int maybe_effect(step_state st)
{
    return st == STEP_DONE || st == STEP_ACTION_SENT || st == STEP_COMPENSATING;
}

static const retry_policy *policy_for(const saga *s, int step, int phase)
{
    const step_def *sd = &s->def->steps[step];
    return phase == PHASE_ACTION ? &sd->retry : &sd->compensation_retry;
}

static uint32_t attempts_of(const step_run *r, int phase)
{
    return phase == PHASE_ACTION ? r->action_attempts : r->compensation_attempts;
}

/* Arms the saga's one timer at the earliest of its steps' retries and, while
 * it runs, its deadline; cancels it when there is none. */
static void rearm(saga *s, const saga_env *env)
{
    int64_t due = 0;
    if (is_live(s)) {
        for (size_t i = 0; i < s->n_steps; i++) {
            int64_t d = s->steps[i].timer_due;
            if (d != 0 && (due == 0 || d < due))
                due = d;
        }
        if (s->state == SAGA_RUNNING && s->deadline_at_ms != 0) {
            int64_t now = env->now_mono(env->ctx);
            int64_t left = s->deadline_at_ms - env->now_wall(env->ctx);
            int64_t d = now + (left > 0 ? left : 0);
            if (d == 0)
                d = 1; /* 0 means none */
            if (due == 0 || d < due)
                due = d;
        }
    }
    if (due != s->timer_due) {
        s->timer_due = due;
        env->schedule(env->ctx, s, due);
    }
}

static void forget_in_flight(saga *s)
{
    for (size_t i = 0; i < s->n_steps; i++) {
        s->steps[i].in_flight = 0;
        s->steps[i].timer_due = 0;
    }
    s->in_flight = 0;
    s->token++; /* anything still in flight is stale from now on */
}

void saga_forget_in_flight(saga *s)
{
    forget_in_flight(s);
}

/* Has the saga outlived the participants' idempotency records? Then any
 * request could run a step again or skip an undo: send nothing more. */
static int beyond_retention(const saga *s, const saga_env *env)
{
    return s->def != NULL && s->def->retention_ms > 0 &&
           env->now_wall(env->ctx) - s->created_at_ms >= s->def->retention_ms;
}

/* COMPENSATING, and no compensation has begun: actions are still awaited. */
static int draining(const saga *s)
{
    if (s->state != SAGA_COMPENSATING)
        return 0;
    for (size_t i = 0; i < s->n_steps; i++)
        if (s->steps[i].state == STEP_COMPENSATING || s->steps[i].state == STEP_COMPENSATED)
            return 0;
    return 1;
}

static int past_deadline(const saga *s, const saga_env *env)
{
    return s->deadline_at_ms != 0 && env->now_wall(env->ctx) >= s->deadline_at_ms;
}

#define BEYOND_RETENTION_MSG                                                                       \
    "the saga is older than idempotency_retention_s: the participants may have forgotten its "     \
    "keys, so a request now could repeat an effect or skip an undo; settle it by hand"

static void fail(saga *s, const saga_env *env, int phase, int step, const char *why);

/* Records the intent of the next attempt and asks for the send. */
static void send_attempt(saga *s, const saga_env *env, int step, int phase)
{
    /* Every request passes here: retries, the next steps, compensations. */
    if (beyond_retention(s, env)) {
        fail(s, env, phase, step, BEYOND_RETENTION_MSG);
        return;
    }
    step_run *r = &s->steps[step];
    uint32_t attempt;
    if (phase == PHASE_ACTION) {
        r->state = STEP_ACTION_SENT;
        s->maybe_sent &= ~SAGA_DAG_BIT(step);
        attempt = ++r->action_attempts;
        if (r->started_at_ms == 0)
            r->started_at_ms = env->now_wall(env->ctx);
    } else {
        r->state = STEP_COMPENSATING;
        attempt = ++r->compensation_attempts;
    }
    r->next_attempt_at_ms = 0;
    r->timer_due = 0;
    s->cursor = step;
    r->token = ++s->token;
    if (!r->in_flight)
        s->in_flight++;
    r->in_flight = 1;
    touch_step(s, env, step);
    emit(s, env, "step_sent", step, phase, attempt, OUTCOME_UNSPECIFIED, 0, NULL);
    env->send(env->ctx, s, step, phase, attempt, r->token);
}

/* A RUNNING saga's PENDING steps that may have been sent early before a
 * crash: with a compensation (a pivot never leaves early), and every step
 * they wait for DONE or ACTION_SENT (with need_one_sent, one at least
 * ACTION_SENT; see "Early sends" in saga.h). */
static uint64_t early_send_candidates(const saga *s, int need_one_sent)
{
    uint64_t done = 0, sent = 0, found = 0;
    for (size_t i = 0; i < s->n_steps; i++) {
        if (s->steps[i].state == STEP_DONE)
            done |= SAGA_DAG_BIT(i);
        else if (s->steps[i].state == STEP_ACTION_SENT)
            sent |= SAGA_DAG_BIT(i);
    }
    for (size_t i = 0; i < s->n_steps; i++) {
        uint64_t deps = saga_dag_deps(s->def, i);
        if (s->steps[i].state == STEP_PENDING && has_compensation(s, (int)i) &&
            (!need_one_sent || (deps & sent) != 0) && (deps & ~(done | sent)) == 0)
            found |= SAGA_DAG_BIT(i);
    }
    return found;
}

/* The saga leaves RUNNING: a step whose request may have left early becomes
 * ACTION_SENT with an unknown outcome, so that it is undone (or, without a
 * compensation, noted as staying) like any step that was sent. */
static void own_up_maybe_sent(saga *s, const saga_env *env)
{
    /* Only while every step it waits for is DONE or may be: one known to
     * have failed never answered the OK an early send needs. */
    s->maybe_sent &= early_send_candidates(s, 0);
    for (size_t i = 0; i < s->n_steps && s->maybe_sent != 0; i++) {
        if (!(s->maybe_sent & SAGA_DAG_BIT(i)))
            continue;
        s->maybe_sent &= ~SAGA_DAG_BIT(i);
        if (s->steps[i].state != STEP_PENDING)
            continue;
        s->steps[i].state = STEP_ACTION_SENT;
        touch_step(s, env, (int)i);
        emit(s, env, "step_maybe_sent", (int)i, PHASE_ACTION, s->steps[i].action_attempts,
             OUTCOME_UNSPECIFIED, 0,
             "its request may have left just before the orchestrator stopped (an early "
             "send); its outcome is unknown and it is undone like a step that was sent");
    }
}

/* Step `failed` answered REJECTED or SKIPPED: a step owned up as maybe
 * sent early that waits for it never left (an early send needs the OK of
 * every step it waits for), so it is PENDING again, with nothing to undo. */
static void disown_dependents(saga *s, const saga_env *env, int failed)
{
    for (size_t i = 0; i < s->n_steps; i++) {
        step_run *r = &s->steps[i];
        if (r->state != STEP_ACTION_SENT || r->in_flight || r->timer_due != 0 ||
            !(saga_dag_deps(s->def, i) & SAGA_DAG_BIT(failed)))
            continue;
        r->state = STEP_PENDING;
        touch_step(s, env, (int)i);
        emit(s, env, "step_not_sent", (int)i, PHASE_ACTION, r->action_attempts, OUTCOME_UNSPECIFIED,
             0, "a step it waits for was refused: its request never left, nothing to undo");
    }
}

static void settle(saga *s, const saga_env *env, saga_state final, const char *kind,
                   const char *detail)
{
    int phase = final == SAGA_FAILED ? s->failed_phase : current_phase(s);
    s->state = final;
    forget_in_flight(s);
    rearm(s, env);
    touch(s, env);
    emit(s, env, kind, -1, phase, 0, OUTCOME_UNSPECIFIED, 0, detail);
    env->settled(env->ctx, s);
}

static void fail(saga *s, const saga_env *env, int phase, int step, const char *why)
{
    if (s->state == SAGA_RUNNING)
        own_up_maybe_sent(s, env);
    s->failed_phase = phase;
    s->cursor = step;
    saga_set_error(s, why);
    settle(s, env, SAGA_FAILED, "saga_failed", why);
}

/* RUNNING: sends every PENDING step whose dependencies are all DONE; the saga
 * is COMPLETED when every step is. */
static void run_ready_steps(saga *s, const saga_env *env)
{
    uint64_t done = 0;
    for (size_t i = 0; i < s->n_steps; i++)
        if (s->steps[i].state == STEP_DONE)
            done |= SAGA_DAG_BIT(i);
    if (s->n_steps == 64 ? done == ~0ull : done == SAGA_DAG_BIT(s->n_steps) - 1) {
        /* Nothing is wrong any more; root_cause keeps what it recovered from. */
        set_text(&s->last_error, NULL);
        settle(s, env, SAGA_COMPLETED, "saga_completed",
               s->root_cause != NULL ? "recovered after a resume" : NULL);
        return;
    }
    for (size_t i = 0; i < s->n_steps && s->state == SAGA_RUNNING; i++)
        if (s->steps[i].state == STEP_PENDING && (saga_dag_deps(s->def, i) & ~done) == 0)
            send_attempt(s, env, (int)i, PHASE_ACTION);
}

/* COMPENSATING: once no action is awaited, sends the compensation of every
 * step that may have had an effect and whose dependents (directly or not)
 * are all undone; the saga is COMPENSATED when nothing is left to undo. A
 * step without compensation is passed over, its effect noted as staying. */
static void compensate_ready_steps(saga *s, const saga_env *env)
{
    uint64_t to_undo = 0;
    for (size_t i = 0; i < s->n_steps; i++) {
        if (s->steps[i].state == STEP_ACTION_SENT && awaited(s, (int)i))
            return; /* draining: its outcome decides what there is to undo */
        if (maybe_effect(s->steps[i].state) && has_compensation(s, (int)i))
            to_undo |= SAGA_DAG_BIT(i);
    }
    for (int i = (int)s->n_steps - 1; i >= 0 && s->state == SAGA_COMPENSATING; i--) {
        step_run *r = &s->steps[i];
        if (!maybe_effect(r->state) || awaited(s, i) ||
            (saga_dag_descendants(s->def, (size_t)i) & to_undo) != 0)
            continue;
        if (has_compensation(s, i)) {
            send_attempt(s, env, i, PHASE_COMPENSATE);
        } else if (!r->noted) {
            r->noted = 1;
            emit(s, env, "compensation_not_defined", i, PHASE_COMPENSATE, 0, OUTCOME_UNSPECIFIED, 0,
                 "the step has no compensation; its effect stays");
        }
    }
    if (to_undo == 0 && s->state == SAGA_COMPENSATING) {
        s->cursor = 0;
        settle(s, env, SAGA_COMPENSATED, "saga_compensated",
               s->last_error != NULL ? s->last_error : s->root_cause);
    }
}

/* Starts what the saga's state allows; the end of every event. */
static void advance(saga *s, const saga_env *env)
{
    if (s->state == SAGA_RUNNING)
        run_ready_steps(s, env);
    else if (s->state == SAGA_COMPENSATING)
        compensate_ready_steps(s, env);
    rearm(s, env);
}

static void begin_compensation(saga *s, const saga_env *env, const char *why)
{
    if (s->state == SAGA_COMPENSATING)
        return; /* already on its way back: the first reason stays */
    own_up_maybe_sent(s, env);
    s->state = SAGA_COMPENSATING;
    saga_set_error(s, why);
    touch(s, env);
    emit(s, env, "compensation_started", -1, PHASE_COMPENSATE, 0, OUTCOME_UNSPECIFIED, 0, why);
}

/* A transient failure of the step's attempt: retry after a backoff, or,
 * when its attempts are spent, move on as the policy says. */
static void retry_or_give_up(saga *s, const saga_env *env, int step, int phase, const char *why)
{
    step_run *r = &s->steps[step];
    const retry_policy *p = policy_for(s, step, phase);
    uint32_t attempts = attempts_of(r, phase);
    const char *name = s->def->steps[step].name;
    char msg[512];

    if (phase == PHASE_ACTION && s->state == SAGA_COMPENSATING && has_compensation(s, step))
        return; /* draining: no more tries; its compensation's barrier covers both outcomes */
    if (attempts < p->max_attempts) {
        int64_t delay = saga_backoff_ms(p, attempts + 1, env->random_unit(env->ctx));
        r->timer_due = env->now_mono(env->ctx) + delay;
        r->next_attempt_at_ms = env->now_wall(env->ctx) + delay;
        touch_step(s, env, step);
        snprintf(msg, sizeof msg, "attempt %u in %lld ms", attempts + 1, (long long)delay);
        emit(s, env, "retry_scheduled", step, phase, attempts, OUTCOME_UNSPECIFIED, 0, msg);
        return;
    }
    if (phase == PHASE_COMPENSATE) {
        snprintf(msg, sizeof msg, "compensation of step '%s' failed after %u attempts: %s", name,
                 attempts, why);
        fail(s, env, PHASE_COMPENSATE, step, msg);
    } else if (!has_compensation(s, step)) {
        snprintf(msg, sizeof msg,
                 "step '%s' has no compensation and its outcome is unknown after %u attempts: %s",
                 name, attempts, why);
        fail(s, env, PHASE_ACTION, step, msg);
    } else {
        /* Outcome unknown: compensate it too; the participant's barrier makes
         * that safe whether or not the action happened. */
        snprintf(msg, sizeof msg, "step '%s' failed after %u attempts: %s", name, attempts, why);
        begin_compensation(s, env, msg);
    }
}

static void on_deadline(saga *s, const saga_env *env)
{
    char msg[128];
    snprintf(msg, sizeof msg, "deadline passed: still running %lld s after its start",
             (long long)((s->deadline_at_ms - s->created_at_ms) / 1000));
    emit(s, env, "deadline_passed", -1, PHASE_ACTION, 0, OUTCOME_UNSPECIFIED, 0, msg);
    begin_compensation(s, env, msg);
}

/* After a restart, the request of step i (state ACTION_SENT or COMPENSATING)
 * may or may not have reached its participant. */
static void recover_step(saga *s, const saga_env *env, int step)
{
    step_run *r = &s->steps[step];
    int phase = step_phase(r);
    const retry_policy *p = policy_for(s, step, phase);
    uint32_t attempts = attempts_of(r, phase);
    int64_t wait = r->next_attempt_at_ms - env->now_wall(env->ctx);
    if (r->next_attempt_at_ms != 0 && wait > 0) {
        /* A retry was waiting out its backoff: keep waiting, not resend early.
         * Never longer than the policy allows: the wall clock may have been
         * set back since the wait was stored. */
        if (wait > p->max_backoff_ms)
            wait = p->max_backoff_ms;
        r->timer_due = env->now_mono(env->ctx) + wait;
    } else if (attempts < p->max_attempts ||
               (r->next_attempt_at_ms == 0 && attempts == p->max_attempts)) {
        /* Same key: the participant replays or acts once. The last attempt,
         * in flight at the crash (no retry scheduled), lost its reply with
         * sagad, not with the participant: it is asked once more rather than
         * given up on an outcome that may be known. Once only: a crash loop
         * must not retry forever. */
        send_attempt(s, env, step, phase);
    } else {
        retry_or_give_up(s, env, step, phase, "attempts spent before the restart");
    }
}

/* ---- Events ----------------------------------------------------------- */

void saga_begin(saga *s, const saga_env *env)
{
    assert(s->state == SAGA_RUNNING && s->cursor == 0 && s->def != NULL);
    emit(s, env, "saga_started", -1, PHASE_ACTION, 0, OUTCOME_UNSPECIFIED, 0, s->client_key);
    advance(s, env);
}

void saga_recover(saga *s, const saga_env *env)
{
    if (!is_live(s))
        return;
    emit(s, env, "recovered", s->cursor, current_phase(s), 0, OUTCOME_UNSPECIFIED, 0,
         "orchestrator restarted");
    s->maybe_sent = s->state == SAGA_RUNNING ? early_send_candidates(s, 1) : 0;
    /* send_attempt checks this too; here it also ends a saga whose retry was
     * waiting out its backoff, at once rather than when the timer fires. */
    if (beyond_retention(s, env)) {
        fail(s, env, current_phase(s), s->cursor, BEYOND_RETENTION_MSG);
        return;
    }
    if (s->state == SAGA_RUNNING && past_deadline(s, env))
        on_deadline(s, env);
    for (size_t i = 0; i < s->n_steps && is_live(s); i++) {
        step_run *r = &s->steps[i];
        if (r->state == STEP_COMPENSATING) {
            recover_step(s, env, (int)i);
        } else if (r->state == STEP_ACTION_SENT) {
            /* Draining: an action with a compensation is compensated through
             * the barrier; a pivot's outcome is still to be learnt. Once
             * compensations have begun, the drain is over: an abort gave up
             * on the pivots left unknown. */
            if ((s->state == SAGA_RUNNING || (!has_compensation(s, (int)i) && draining(s))) &&
                deps_done(s, (int)i)) /* else owned up as maybe sent early: not asked again */
                recover_step(s, env, (int)i);
        }
    }
    if (is_live(s))
        advance(s, env);
}

static int find_request(const saga *s, uint64_t token)
{
    if (s->in_flight == 0)
        return -1;
    for (size_t i = 0; i < s->n_steps; i++)
        if (s->steps[i].in_flight && s->steps[i].token == token)
            return (int)i;
    return -1;
}

int saga_request_current(const saga *s, int step, int phase, uint64_t token)
{
    if (step < 0 || (size_t)step >= s->n_steps || !is_live(s))
        return 0;
    const step_run *r = &s->steps[step];
    return r->in_flight && r->token == token &&
           r->state == (phase == PHASE_ACTION ? STEP_ACTION_SENT : STEP_COMPENSATING);
}

/* The request of step i is answered, or given up on. */
static void end_request(saga *s, int step)
{
    s->steps[step].in_flight = 0;
    s->in_flight--;
    s->cursor = step;
}

void saga_on_reply(saga *s, const saga_env *env, uint64_t token, int outcome, int replayed,
                   const kvmap *result, const char *error)
{
    int step = find_request(s, token);
    if (step < 0)
        return; /* stale: an earlier attempt, or the saga moved on */
    if (!wire_outcome_known(outcome)) {
        /* Unspecified (a reply without an outcome) or from a newer protocol:
         * it says nothing of the effect, so it is no reply at all. */
        char why[128];
        snprintf(why, sizeof why, "reply without a known outcome (%s, %d)",
                 wire_outcome_name(outcome), outcome);
        saga_on_no_reply(s, env, token, why);
        return;
    }
    end_request(s, step);
    step_run *r = &s->steps[step];
    int phase = step_phase(r);
    const char *name = s->def->steps[step].name;
    char msg[512];

    emit(s, env, "step_reply", step, phase, attempts_of(r, phase), outcome, replayed,
         error && *error ? error : NULL);
    r->last_outcome = outcome;
    set_text(&r->last_error, outcome == OUTCOME_OK ? NULL : error);
    touch_step(s, env, step);
    if (phase == PHASE_ACTION && outcome != OUTCOME_RETRY && outcome != OUTCOME_CONFLICT)
        r->finished_at_ms = env->now_wall(env->ctx);

    if (outcome == OUTCOME_CONFLICT) {
        snprintf(msg, sizeof msg, "idempotency conflict at step '%s' (%s): %s", name,
                 wire_phase_name(phase), error ? error : "");
        fail(s, env, phase, step, msg);
        return;
    }
    if (outcome == OUTCOME_RETRY) {
        retry_or_give_up(s, env, step, phase,
                         error && *error ? error : "participant asked to retry");
    } else if (phase == PHASE_ACTION && outcome == OUTCOME_OK) {
        r->state = STEP_DONE;
        kv_free(&r->result);
        if (result && kv_merge(&r->result, result) != 0) {
            /* Out of memory: keep the step unknown and retry; the replay
             * brings the result back. */
            r->state = STEP_ACTION_SENT;
            retry_or_give_up(s, env, step, phase, "out of memory storing the result");
        }
    } else if (phase == PHASE_ACTION) {
        /* REJECTED or SKIPPED: the action had no effect. */
        r->state = STEP_REJECTED;
        disown_dependents(s, env, step);
        snprintf(msg, sizeof msg, "step '%s' %s: %s", name,
                 outcome == OUTCOME_REJECTED ? "refused" : "had no effect",
                 error && *error ? error : wire_outcome_name(outcome));
        begin_compensation(s, env, msg);
    } else if (outcome == OUTCOME_OK || outcome == OUTCOME_SKIPPED) {
        r->state = STEP_COMPENSATED;
    } else {
        snprintf(msg, sizeof msg, "compensation of step '%s' refused: %s", name,
                 error && *error ? error : wire_outcome_name(outcome));
        fail(s, env, PHASE_COMPENSATE, step, msg);
        return;
    }
    if (is_live(s))
        advance(s, env);
}

void saga_on_no_reply(saga *s, const saga_env *env, uint64_t token, const char *why)
{
    int step = find_request(s, token);
    if (step < 0)
        return;
    end_request(s, step);
    step_run *r = &s->steps[step];
    int phase = step_phase(r);
    emit(s, env, "step_no_reply", step, phase, attempts_of(r, phase), OUTCOME_UNSPECIFIED, 0, why);
    set_text(&r->last_error, why);
    touch_step(s, env, step);
    retry_or_give_up(s, env, step, phase, why);
    if (is_live(s))
        advance(s, env);
}

void saga_on_timer(saga *s, const saga_env *env)
{
    s->timer_due = 0; /* the engine's timer fired: rearm decides the next */
    if (!is_live(s))
        return;
    if (s->state == SAGA_RUNNING && past_deadline(s, env))
        on_deadline(s, env);
    int64_t now = env->now_mono(env->ctx);
    for (size_t i = 0; i < s->n_steps && is_live(s); i++) {
        step_run *r = &s->steps[i];
        if (r->in_flight || r->timer_due == 0 || r->timer_due > now)
            continue;
        r->timer_due = 0;
        if (r->state == STEP_ACTION_SENT && s->state == SAGA_COMPENSATING &&
            has_compensation(s, (int)i))
            continue; /* draining: compensated through the barrier instead */
        send_attempt(s, env, (int)i, step_phase(r));
    }
    if (is_live(s))
        advance(s, env);
    else
        rearm(s, env);
}

int saga_abort(saga *s, const saga_env *env, const char *who, const char *reason)
{
    if (s->def == NULL)
        return -1;
    if (s->state == SAGA_RUNNING) {
        /* A step that cannot be undone while its outcome is unknown: wait. */
        for (size_t i = 0; i < s->n_steps; i++)
            if (s->steps[i].state == STEP_ACTION_SENT && !has_compensation(s, (int)i))
                return -1;
    } else if (!(s->state == SAGA_FAILED && s->failed_phase == PHASE_ACTION)) {
        return -1;
    }
    if (beyond_retention(s, env))
        return -2;
    /* Nothing more is awaited: what is in flight is compensated through the barrier. */
    forget_in_flight(s);
    for (size_t i = 0; i < s->n_steps; i++) {
        if (s->steps[i].next_attempt_at_ms != 0) {
            s->steps[i].next_attempt_at_ms = 0;
            touch_step(s, env, (int)i);
        }
    }
    touch_step(s, env, s->cursor);
    char msg[512];
    snprintf(msg, sizeof msg, "aborted by %s%s%s", who && *who ? who : "operator",
             reason && *reason ? ": " : "", reason && *reason ? reason : "");
    emit(s, env, "abort_requested", -1, PHASE_ACTION, 0, OUTCOME_UNSPECIFIED, 0, msg);
    if (s->state == SAGA_FAILED) {
        s->state = SAGA_RUNNING; /* begin_compensation leaves RUNNING only */
        /* Made FAILED without saga_recover (a definition that could not be
         * loaded at the restart): what may have left early is not owned up
         * yet. Too many costs only a null compensation. */
        s->maybe_sent |= early_send_candidates(s, 1);
    }
    begin_compensation(s, env, msg);
    advance(s, env);
    return 0;
}

/* Back to RUNNING: a step made ACTION_SENT by own_up_maybe_sent while a
 * step it waits for is not DONE is PENDING (and maybe_sent) again, so that
 * it is sent only after that step is DONE. */
static void unsend_early_steps(saga *s, const saga_env *env)
{
    uint64_t done = 0;
    for (size_t i = 0; i < s->n_steps; i++)
        if (s->steps[i].state == STEP_DONE)
            done |= SAGA_DAG_BIT(i);
    for (size_t i = 0; i < s->n_steps; i++) {
        if (s->steps[i].state != STEP_ACTION_SENT || (saga_dag_deps(s->def, i) & ~done) == 0)
            continue;
        s->steps[i].state = STEP_PENDING;
        s->maybe_sent |= SAGA_DAG_BIT(i);
        touch_step(s, env, (int)i);
    }
}

int saga_resume(saga *s, const saga_env *env, const char *who, const char *reason)
{
    if (s->state != SAGA_FAILED || s->def == NULL)
        return -1;
    if (beyond_retention(s, env))
        return -2;
    int step = s->cursor;
    step_run *r = &s->steps[step];
    /* Who and why, then what it had failed with (the error stays last_error
     * until the saga settles again). */
    char msg[2048];
    if ((who && *who) || (reason && *reason))
        snprintf(msg, sizeof msg, "resumed by %s%s%s; it had failed with: %s",
                 who && *who ? who : "operator", reason && *reason ? ": " : "",
                 reason && *reason ? reason : "", s->last_error ? s->last_error : "");
    else
        snprintf(msg, sizeof msg, "%s", s->last_error ? s->last_error : "");
    emit(s, env, "resumed", step, s->failed_phase, 0, OUTCOME_UNSPECIFIED, 0, msg);
    /* The saga moves on: the error is history now (root_cause, and this
     * event's detail), not the state of a saga an operator sent back to work. */
    set_text(&s->last_error, NULL);
    /* A fresh budget of attempts for the step that failed. */
    if (s->failed_phase == PHASE_COMPENSATE) {
        r->compensation_attempts = 0;
        s->state = SAGA_COMPENSATING;
        touch_step(s, env, step);
        /* Compensations cut short by the failure are asked again (same keys). */
        for (size_t i = 0; i < s->n_steps && is_live(s); i++)
            if (s->steps[i].state == STEP_COMPENSATING)
                send_attempt(s, env, (int)i, PHASE_COMPENSATE);
    } else {
        int rejected = 0;
        for (size_t i = 0; i < s->n_steps; i++)
            rejected |= s->steps[i].state == STEP_REJECTED;
        r->action_attempts = 0;
        touch_step(s, env, step);
        /* A branch that failed for good keeps the saga on its way back: only
         * the actions still to learn (pivots) are asked again. */
        s->state = rejected ? SAGA_COMPENSATING : SAGA_RUNNING;
        if (!rejected)
            unsend_early_steps(s, env);
        s->maybe_sent |= early_send_candidates(s, 1); /* as in saga_abort */
        if (rejected)
            own_up_maybe_sent(s, env); /* back to COMPENSATING at once */
        for (size_t i = 0; i < s->n_steps && is_live(s); i++)
            if (s->steps[i].state == STEP_ACTION_SENT &&
                (!rejected || !has_compensation(s, (int)i)) && deps_done(s, (int)i))
                send_attempt(s, env, (int)i, PHASE_ACTION);
    }
    if (is_live(s))
        advance(s, env);
    return 0;
}

int saga_missing_inputs_msg(const saga_def *def, const kvmap *input, char *buf, size_t len)
{
    char missing[512] = "", needs[512] = "";
    size_t n_missing = 0, m = 0, k = 0;
    for (size_t i = 0; i < def->n_inputs; i++) {
        const char *name = def->inputs[i];
        if (k < sizeof needs) {
            int w = snprintf(needs + k, sizeof needs - k, "%s%s", i ? ", " : "", name);
            k += w > 0 ? (size_t)w : 0;
        }
        if (kv_get(input, name) != NULL)
            continue;
        if (m < sizeof missing) {
            int w =
                snprintf(missing + m, sizeof missing - m, "%s'%s'", n_missing ? ", " : "", name);
            m += w > 0 ? (size_t)w : 0;
        }
        n_missing++;
    }
    if (n_missing == 0)
        return 0;
    snprintf(buf, len, "missing input%s %s for saga type '%s' (it needs %s)",
             n_missing > 1 ? "s" : "", missing, def->name, needs);
    return 1;
}

/* ---- Invariants ------------------------------------------------------- */

const char *saga_check_invariants(const saga *s)
{
    if (s->cursor < 0 || (size_t)s->cursor >= s->n_steps)
        return "cursor out of range";
    if (s->def != NULL) {
        for (size_t i = 0; i < s->n_steps; i++) {
            step_state st = s->steps[i].state;
            if (st == STEP_PENDING)
                continue;
            uint64_t deps = saga_dag_deps(s->def, i);
            for (size_t j = 0; j < s->n_steps; j++) {
                step_state dj = s->steps[j].state;
                /* Outside RUNNING, a step owned up as maybe sent early waits
                 * for one whose outcome is unknown (saga.h, "Early sends");
                 * it is then sent or being undone, never DONE or REJECTED. */
                int unknown_ok =
                    dj == STEP_ACTION_SENT && s->state != SAGA_RUNNING &&
                    (st == STEP_ACTION_SENT || st == STEP_COMPENSATING || st == STEP_COMPENSATED);
                if ((deps & SAGA_DAG_BIT(j)) && dj != STEP_DONE && dj != STEP_COMPENSATING &&
                    dj != STEP_COMPENSATED && !unknown_ok)
                    return "a step was sent before a step it waits for was DONE";
            }
            if (st != STEP_COMPENSATING && st != STEP_COMPENSATED)
                continue;
            uint64_t after = saga_dag_descendants(s->def, i);
            for (size_t j = 0; j < s->n_steps; j++)
                if ((after & SAGA_DAG_BIT(j)) && maybe_effect(s->steps[j].state) &&
                    has_compensation(s, (int)j))
                    return "a step is compensated before a step that depends on it is undone";
        }
    }
    int actions = 0, compensations = 0;
    for (size_t i = 0; i < s->n_steps; i++) {
        if (s->steps[i].in_flight && s->steps[i].state == STEP_ACTION_SENT)
            actions++;
        if (s->steps[i].in_flight && s->steps[i].state == STEP_COMPENSATING)
            compensations++;
    }
    switch (s->state) {
    case SAGA_RUNNING:
        for (size_t i = 0; i < s->n_steps; i++) {
            step_state st = s->steps[i].state;
            if (st == STEP_REJECTED || st == STEP_COMPENSATING || st == STEP_COMPENSATED)
                return "RUNNING: a step is rejected or on its way back";
        }
        break;
    case SAGA_COMPENSATING:
        if (actions > 0 && compensations > 0)
            return "COMPENSATING: a compensation is in flight beside an action";
        break;
    case SAGA_COMPLETED:
        if (s->last_error != NULL)
            return "COMPLETED with a last_error";
        for (size_t i = 0; i < s->n_steps; i++)
            if (s->steps[i].state != STEP_DONE)
                return "COMPLETED: a step is not DONE";
        break;
    case SAGA_COMPENSATED:
        for (size_t i = 0; i < s->n_steps; i++) {
            step_state st = s->steps[i].state;
            int undoable = s->def == NULL || s->def->steps[i].compensation != NULL;
            if (undoable && maybe_effect(st))
                return "COMPENSATED: a step with a compensation may still have its effect";
        }
        break;
    case SAGA_FAILED:
        if (s->last_error == NULL)
            return "FAILED without last_error";
        if (s->root_cause == NULL)
            return "FAILED without root_cause";
        break;
    default:
        return "unknown saga state";
    }
    return NULL;
}
