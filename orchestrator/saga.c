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
    /* Results of earlier steps, in order: a later output of the same name wins. */
    for (int j = 0; rc == 0 && j < step; j++)
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

static void emit(saga *s, const saga_env *env, const char *kind, int step, int phase,
                 uint32_t attempt, int outcome, int replayed, const char *detail)
{
    saga_event ev = {kind, step, phase, attempt, outcome, replayed, detail};
    env->history(env->ctx, s, &ev);
}

static void cancel_timer(saga *s, const saga_env *env)
{
    if (s->timer_due != 0) {
        s->timer_due = 0;
        env->schedule(env->ctx, s, 0);
    }
}

static int current_phase(const saga *s)
{
    return s->state == SAGA_COMPENSATING ? PHASE_COMPENSATE : PHASE_ACTION;
}

static const retry_policy *policy_for(const saga *s, int step, int phase)
{
    const step_def *sd = &s->def->steps[step];
    return phase == PHASE_ACTION ? &sd->retry : &sd->compensation_retry;
}

/* Has the saga outlived the participants' idempotency records? Then any
 * request could run a step again or skip an undo: send nothing more. */
static int beyond_retention(const saga *s, const saga_env *env)
{
    return s->def != NULL && s->def->retention_ms > 0 &&
           env->now_wall(env->ctx) - s->created_at_ms >= s->def->retention_ms;
}

#define BEYOND_RETENTION_MSG                                                                       \
    "the saga is older than idempotency_retention_s: the participants may have forgotten its "     \
    "keys, so a request now could repeat an effect or skip an undo; settle it by hand"

static void fail(saga *s, const saga_env *env, int phase, const char *why);

/* Records the intent of the next attempt and asks for the send. */
static void send_attempt(saga *s, const saga_env *env, int step, int phase)
{
    /* Every request passes here: retries, the next step, compensations. */
    if (beyond_retention(s, env)) {
        fail(s, env, phase, BEYOND_RETENTION_MSG);
        return;
    }
    step_run *r = &s->steps[step];
    uint32_t attempt;
    if (phase == PHASE_ACTION) {
        r->state = STEP_ACTION_SENT;
        attempt = ++r->action_attempts;
    } else {
        r->state = STEP_COMPENSATING;
        attempt = ++r->compensation_attempts;
    }
    r->next_attempt_at_ms = 0;
    s->cursor = step;
    s->token++;
    s->in_flight = 1;
    touch_step(s, env, step);
    emit(s, env, "step_sent", step, phase, attempt, OUTCOME_UNSPECIFIED, 0, NULL);
    env->send(env->ctx, s, step, phase, attempt, s->token);
}

static void settle(saga *s, const saga_env *env, saga_state final, const char *kind,
                   const char *detail)
{
    int phase = final == SAGA_FAILED ? s->failed_phase : current_phase(s);
    s->state = final;
    s->in_flight = 0;
    s->token++; /* anything still in flight is stale from now on */
    cancel_timer(s, env);
    touch(s, env);
    emit(s, env, kind, -1, phase, 0, OUTCOME_UNSPECIFIED, 0, detail);
    env->settled(env->ctx, s);
}

static void fail(saga *s, const saga_env *env, int phase, const char *why)
{
    s->failed_phase = phase;
    set_text(&s->last_error, why);
    settle(s, env, SAGA_FAILED, "saga_failed", why);
}

/* Compensates, from step `from` down to 0, every step that may have had an
 * effect; a step that cannot be undone is left as it is and noted. */
static void compensate_from(saga *s, const saga_env *env, int from)
{
    for (int i = from; i >= 0; i--) {
        step_run *r = &s->steps[i];
        int maybe_effect =
            r->state == STEP_DONE || r->state == STEP_ACTION_SENT || r->state == STEP_COMPENSATING;
        if (!maybe_effect)
            continue;
        if (s->def->steps[i].compensation != NULL) {
            send_attempt(s, env, i, PHASE_COMPENSATE);
            return;
        }
        emit(s, env, "compensation_not_defined", i, PHASE_COMPENSATE, 0, OUTCOME_UNSPECIFIED, 0,
             "the step has no compensation; its effect stays");
    }
    s->cursor = 0;
    settle(s, env, SAGA_COMPENSATED, "saga_compensated", s->last_error);
}

static void begin_compensation(saga *s, const saga_env *env, int from, const char *why)
{
    s->state = SAGA_COMPENSATING;
    set_text(&s->last_error, why);
    touch(s, env);
    emit(s, env, "compensation_started", -1, PHASE_COMPENSATE, 0, OUTCOME_UNSPECIFIED, 0, why);
    compensate_from(s, env, from);
}

/* A transient failure of the attempt in flight: retry after a backoff, or,
 * when the step's attempts are spent, move on as the policy says. */
static void retry_or_give_up(saga *s, const saga_env *env, int phase, const char *why)
{
    int step = s->cursor;
    step_run *r = &s->steps[step];
    const retry_policy *p = policy_for(s, step, phase);
    uint32_t attempts = phase == PHASE_ACTION ? r->action_attempts : r->compensation_attempts;
    const char *name = s->def->steps[step].name;
    char msg[512];

    if (attempts < p->max_attempts) {
        int64_t delay = saga_backoff_ms(p, attempts + 1, env->random_unit(env->ctx));
        s->timer_due = env->now_mono(env->ctx) + delay;
        r->next_attempt_at_ms = env->now_wall(env->ctx) + delay;
        touch_step(s, env, step);
        snprintf(msg, sizeof msg, "attempt %u in %lld ms", attempts + 1, (long long)delay);
        emit(s, env, "retry_scheduled", step, phase, attempts, OUTCOME_UNSPECIFIED, 0, msg);
        env->schedule(env->ctx, s, s->timer_due);
        return;
    }
    if (phase == PHASE_COMPENSATE) {
        snprintf(msg, sizeof msg, "compensation of step '%s' failed after %u attempts: %s", name,
                 attempts, why);
        fail(s, env, PHASE_COMPENSATE, msg);
    } else if (s->def->steps[step].compensation == NULL) {
        snprintf(msg, sizeof msg,
                 "step '%s' has no compensation and its outcome is unknown after %u attempts: %s",
                 name, attempts, why);
        fail(s, env, PHASE_ACTION, msg);
    } else {
        /* Outcome unknown: compensate it too; the participant's barrier makes
         * that safe whether or not the action happened. */
        snprintf(msg, sizeof msg, "step '%s' failed after %u attempts: %s", name, attempts, why);
        begin_compensation(s, env, step, msg);
    }
}

/* ---- Events ----------------------------------------------------------- */

void saga_begin(saga *s, const saga_env *env)
{
    assert(s->state == SAGA_RUNNING && s->cursor == 0 && s->def != NULL);
    emit(s, env, "saga_started", -1, PHASE_ACTION, 0, OUTCOME_UNSPECIFIED, 0, s->client_key);
    send_attempt(s, env, 0, PHASE_ACTION);
}

void saga_recover(saga *s, const saga_env *env)
{
    if (s->state != SAGA_RUNNING && s->state != SAGA_COMPENSATING)
        return;
    int phase = current_phase(s);
    int step = s->cursor;
    step_run *r = &s->steps[step];
    emit(s, env, "recovered", step, phase, 0, OUTCOME_UNSPECIFIED, 0, "orchestrator restarted");
    /* send_attempt checks this too; here it also ends a saga whose retry was
     * waiting out its backoff, at once rather than when the timer fires. */
    if (beyond_retention(s, env)) {
        fail(s, env, phase, BEYOND_RETENTION_MSG);
        return;
    }
    if (phase == PHASE_ACTION && r->state == STEP_PENDING) {
        send_attempt(s, env, step, PHASE_ACTION);
        return;
    }
    if (phase == PHASE_COMPENSATE && r->state != STEP_COMPENSATING) {
        compensate_from(s, env, step);
        return;
    }
    const retry_policy *p = policy_for(s, step, phase);
    uint32_t attempts = phase == PHASE_ACTION ? r->action_attempts : r->compensation_attempts;
    int64_t wait = r->next_attempt_at_ms - env->now_wall(env->ctx);
    if (r->next_attempt_at_ms != 0 && wait > 0) {
        /* A retry was waiting out its backoff: keep waiting, not resend early.
         * Never longer than the policy allows: the wall clock may have been
         * set back since the wait was stored. */
        if (wait > p->max_backoff_ms)
            wait = p->max_backoff_ms;
        s->timer_due = env->now_mono(env->ctx) + wait;
        env->schedule(env->ctx, s, s->timer_due);
    } else if (attempts < p->max_attempts ||
               (r->next_attempt_at_ms == 0 && attempts == p->max_attempts)) {
        /* Same key: the participant replays or acts once. The last attempt,
         * in flight at the crash (no retry scheduled), lost its reply with
         * sagad, not with the participant: it is asked once more rather than
         * given up on an outcome that may be known. Once only: a crash loop
         * must not retry forever. */
        send_attempt(s, env, step, phase);
    } else {
        retry_or_give_up(s, env, phase, "attempts spent before the restart");
    }
}

void saga_on_reply(saga *s, const saga_env *env, uint64_t token, int outcome, int replayed,
                   const kvmap *result, const char *error)
{
    if (!s->in_flight || token != s->token)
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
    s->in_flight = 0;
    int step = s->cursor, phase = current_phase(s);
    step_run *r = &s->steps[step];
    const char *name = s->def->steps[step].name;
    uint32_t attempt = phase == PHASE_ACTION ? r->action_attempts : r->compensation_attempts;
    char msg[512];

    emit(s, env, "step_reply", step, phase, attempt, outcome, replayed,
         error && *error ? error : NULL);
    r->last_outcome = outcome;
    set_text(&r->last_error, outcome == OUTCOME_OK ? NULL : error);
    touch_step(s, env, step);

    if (outcome == OUTCOME_CONFLICT) {
        snprintf(msg, sizeof msg, "idempotency conflict at step '%s' (%s): %s", name,
                 wire_phase_name(phase), error ? error : "");
        fail(s, env, phase, msg);
        return;
    }
    if (outcome == OUTCOME_RETRY) {
        retry_or_give_up(s, env, phase, error && *error ? error : "participant asked to retry");
        return;
    }
    if (phase == PHASE_ACTION) {
        if (outcome == OUTCOME_OK) {
            r->state = STEP_DONE;
            kv_free(&r->result);
            if (result && kv_merge(&r->result, result) != 0) {
                /* Out of memory: keep the step unknown and retry; the replay
                 * brings the result back. */
                r->state = STEP_ACTION_SENT;
                retry_or_give_up(s, env, phase, "out of memory storing the result");
                return;
            }
            if ((size_t)step + 1 == s->n_steps)
                settle(s, env, SAGA_COMPLETED, "saga_completed", NULL);
            else
                send_attempt(s, env, step + 1, PHASE_ACTION);
            return;
        }
        /* REJECTED or SKIPPED: the action had no effect. */
        r->state = STEP_REJECTED;
        snprintf(msg, sizeof msg, "step '%s' %s: %s", name,
                 outcome == OUTCOME_REJECTED ? "refused" : "had no effect",
                 error && *error ? error : wire_outcome_name(outcome));
        begin_compensation(s, env, step - 1, msg);
        return;
    }
    if (outcome == OUTCOME_OK || outcome == OUTCOME_SKIPPED) {
        r->state = STEP_COMPENSATED;
        compensate_from(s, env, step - 1);
        return;
    }
    snprintf(msg, sizeof msg, "compensation of step '%s' refused: %s", name,
             error && *error ? error : wire_outcome_name(outcome));
    fail(s, env, PHASE_COMPENSATE, msg);
}

void saga_on_no_reply(saga *s, const saga_env *env, uint64_t token, const char *why)
{
    if (!s->in_flight || token != s->token)
        return;
    s->in_flight = 0;
    int step = s->cursor, phase = current_phase(s);
    step_run *r = &s->steps[step];
    uint32_t attempt = phase == PHASE_ACTION ? r->action_attempts : r->compensation_attempts;
    emit(s, env, "step_no_reply", step, phase, attempt, OUTCOME_UNSPECIFIED, 0, why);
    set_text(&r->last_error, why);
    touch_step(s, env, step);
    retry_or_give_up(s, env, phase, why);
}

void saga_on_timer(saga *s, const saga_env *env)
{
    s->timer_due = 0;
    if ((s->state != SAGA_RUNNING && s->state != SAGA_COMPENSATING) || s->in_flight)
        return;
    send_attempt(s, env, s->cursor, current_phase(s));
}

int saga_abort(saga *s, const saga_env *env, const char *reason)
{
    int from = s->cursor;
    if (s->def == NULL)
        return -1;
    if (s->state == SAGA_RUNNING) {
        /* A step that cannot be undone while its outcome is unknown: wait. */
        if (s->steps[from].state == STEP_ACTION_SENT && s->def->steps[from].compensation == NULL)
            return -1;
    } else if (!(s->state == SAGA_FAILED && s->failed_phase == PHASE_ACTION)) {
        return -1;
    }
    if (beyond_retention(s, env))
        return -2;
    s->in_flight = 0;
    s->token++;
    cancel_timer(s, env);
    s->steps[from].next_attempt_at_ms = 0;
    touch_step(s, env, from);
    char msg[512];
    snprintf(msg, sizeof msg, "aborted by operator%s%s", reason && *reason ? ": " : "",
             reason && *reason ? reason : "");
    emit(s, env, "abort_requested", -1, PHASE_ACTION, 0, OUTCOME_UNSPECIFIED, 0, msg);
    begin_compensation(s, env, from, msg);
    return 0;
}

int saga_resume(saga *s, const saga_env *env)
{
    if (s->state != SAGA_FAILED || s->def == NULL)
        return -1;
    if (beyond_retention(s, env))
        return -2;
    int step = s->cursor;
    step_run *r = &s->steps[step];
    emit(s, env, "resumed", step, s->failed_phase, 0, OUTCOME_UNSPECIFIED, 0, s->last_error);
    /* A fresh budget of attempts for the step that failed. */
    if (s->failed_phase == PHASE_COMPENSATE) {
        r->compensation_attempts = 0;
        s->state = SAGA_COMPENSATING;
        touch_step(s, env, step);
        compensate_from(s, env, step);
    } else {
        r->action_attempts = 0;
        s->state = SAGA_RUNNING;
        send_attempt(s, env, step, PHASE_ACTION);
    }
    return 0;
}

/* ---- Invariants ------------------------------------------------------- */

const char *saga_check_invariants(const saga *s)
{
    int c = s->cursor;
    if (c < 0 || (size_t)c >= s->n_steps)
        return "cursor out of range";
    switch (s->state) {
    case SAGA_RUNNING:
        for (int i = 0; i < c; i++)
            if (s->steps[i].state != STEP_DONE)
                return "RUNNING: a step before the cursor is not DONE";
        if (s->steps[c].state != STEP_ACTION_SENT && s->steps[c].state != STEP_PENDING)
            return "RUNNING: the step at the cursor is neither sent nor pending";
        for (size_t i = (size_t)c + 1; i < s->n_steps; i++)
            if (s->steps[i].state != STEP_PENDING)
                return "RUNNING: a step after the cursor is not PENDING";
        break;
    case SAGA_COMPENSATING:
        for (size_t i = 0, pending_seen = 0; i < s->n_steps; i++) {
            if (s->steps[i].state == STEP_PENDING)
                pending_seen = 1;
            else if (pending_seen && s->steps[i].state == STEP_DONE)
                return "COMPENSATING: a step is PENDING below a DONE one";
        }
        for (size_t i = (size_t)c + 1; i < s->n_steps; i++) {
            step_state st = s->steps[i].state;
            int undoable = s->def == NULL || s->def->steps[i].compensation != NULL;
            if (undoable && (st == STEP_DONE || st == STEP_ACTION_SENT || st == STEP_COMPENSATING))
                return "COMPENSATING: a step after the cursor is still to undo";
        }
        break;
    case SAGA_COMPLETED:
        for (size_t i = 0; i < s->n_steps; i++)
            if (s->steps[i].state != STEP_DONE)
                return "COMPLETED: a step is not DONE";
        break;
    case SAGA_COMPENSATED:
        for (size_t i = 0; i < s->n_steps; i++) {
            step_state st = s->steps[i].state;
            int undoable = s->def == NULL || s->def->steps[i].compensation != NULL;
            if (undoable && (st == STEP_DONE || st == STEP_ACTION_SENT || st == STEP_COMPENSATING))
                return "COMPENSATED: a step with a compensation may still have its effect";
        }
        break;
    case SAGA_FAILED:
        if (s->last_error == NULL)
            return "FAILED without last_error";
        break;
    default:
        return "unknown saga state";
    }
    return NULL;
}
