/*
 * test_saga_property — the saga state machine (orchestrator/saga.c) over
 * random step graphs, random outcomes, lost requests and replies, timeouts,
 * operator commands, deadlines, and crashes at every point, against a fake
 * environment and a model of the participants.
 *
 * Each run draws a saga type (1 to 8 steps; each step waits for a random
 * subset of the steps before it, or, without `after`, for the one before
 * it; some steps have no compensation) and drives one saga until it is
 * COMPLETED or COMPENSATED. The environment works as the engine does: the
 * changes of an event are "committed" (the saga copied to `stored`) before
 * its requests leave, and a crash throws away what was not committed, every
 * request in flight and every volatile field, then runs saga_recover on the
 * stored copy. Requests that left may still reach their participant after
 * the saga gave up on them (ghosts): only the barrier stands between them
 * and an effect.
 *
 * The participants are modelled per step with an idempotency record: the
 * first action decides (OK with an effect, or REJECTED), a repeat gets the
 * same answer, and a compensation sets the barrier, undoing the effect when
 * there is one: an action arriving after it has no effect (SKIPPED).
 *
 * Checked at every event: saga_check_invariants; when an action leaves,
 * every step it waits for has its effect in place; when a compensation
 * leaves, no step that depends on it (directly or not) may still have an
 * effect to undo. Checked at the end, once every ghost has arrived:
 * COMPLETED means every step took effect and none was undone; COMPENSATED
 * means no step with a compensation keeps an effect (the compensated set
 * equals the set that took effect), and no step whose action never left was
 * compensated.
 *
 * Seeds: SAGA_PROPERTY_SEED=n runs from seed n (the default is fixed); a
 * failure names the seed of its run, which replays it alone with
 * SAGA_PROPERTY_RUNS=1. The run count keeps the test to a few seconds.
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
#include "saga_dag.h"
#include "util.h"
#include "wire.h"

#define MAX_STEPS    8
#define MAX_REQS     256
#define CHAOS_EVENTS 200  /* events with faults; then calm until final */
#define CALM_EVENTS  2000 /* more than any calm run needs */
#define T0_WALL      1700000000000LL

typedef struct {
    int step, phase;
    uint64_t token;
} request;

/* One participant's record of one step (both phases share the saga's key prefix). */
typedef struct {
    int action_outcome; /* OUTCOME_UNSPECIFIED until the first action arrives */
    int acted;          /* the action took effect */
    int barrier;        /* the compensation ran */
    int destiny;        /* what the first action will answer: OK or REJECTED */
    int action_left;    /* an action request of this step left sagad */
    int comp_left;      /* a compensation request left */
    int owned_up;       /* the saga owned it up as maybe sent early (step_maybe_sent) */
} model_step;

typedef struct {
    uint64_t seed;
    util_prng rng;
    saga_def def;
    step_def steps[MAX_STEPS];
    char names[MAX_STEPS][24];
    int after[MAX_STEPS][MAX_STEPS];
    saga_env env;
    saga *s;      /* in memory */
    saga *stored; /* as committed */
    int64_t mono, wall, armed;
    uint64_t token_high;       /* as the engine: a restarted saga's tokens start above it */
    request pending[MAX_REQS]; /* asked for in this event, not committed yet */
    size_t n_pending;
    request inflight[MAX_REQS]; /* left, awaited by the saga */
    size_t n_inflight;
    request ghosts[MAX_REQS]; /* left, given up on: may still arrive */
    size_t n_ghosts;
    model_step m[MAX_STEPS];
    char trace[4096]; /* the run's last events, for a failure message */
} world;

#define CHECK(w, cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char what_[512];                                                                       \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                            \
            fail_msg("seed %llu: %s\n  trace:%s", (unsigned long long)(w)->seed, what_,            \
                     (w)->trace);                                                                  \
        }                                                                                          \
    } while (0)

static void note(world *w, const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t len = strlen(w->trace);
    if (len + strlen(line) + 2 >= sizeof w->trace) {
        memmove(w->trace, w->trace + len / 2, len - len / 2 + 1);
        len = strlen(w->trace);
    }
    snprintf(w->trace + len, sizeof w->trace - len, " %s", line);
}

static uint64_t rnd(world *w, uint64_t n)
{
    return util_prng_next(&w->rng) % n;
}

static int chance(world *w, double p)
{
    return util_prng_unit(&w->rng) < p;
}

/* ---- The fake environment -------------------------------------------------- */

static int64_t env_mono(void *ctx)
{
    return ((world *)ctx)->mono;
}

static int64_t env_wall(void *ctx)
{
    return ((world *)ctx)->wall;
}

static double env_random(void *ctx)
{
    return util_prng_unit(&((world *)ctx)->rng);
}

static void env_send(void *ctx, saga *s, int step, int phase, uint32_t attempt, uint64_t token)
{
    world *w = ctx;
    (void)s;
    (void)attempt;
    CHECK(w, w->n_pending < MAX_REQS, "too many requests");
    if (token > w->token_high)
        w->token_high = token;
    w->pending[w->n_pending++] = (request){step, phase, token};
}

static void env_schedule(void *ctx, saga *s, int64_t due)
{
    (void)s;
    ((world *)ctx)->armed = due;
}

static void env_history(void *ctx, saga *s, const saga_event *ev)
{
    world *w = ctx;
    (void)s;
    note(w, "%s(%d/%d)", ev->kind, ev->step, ev->phase);
    if (strcmp(ev->kind, "step_maybe_sent") == 0)
        w->m[ev->step].owned_up = 1;
}

static void env_settled(void *ctx, saga *s)
{
    (void)ctx;
    (void)s;
}

/* ---- Saga copies: what the store would give back ----------------------------- */

static void set_copy(char **slot, const char *text)
{
    *slot = text ? util_strdup(text) : NULL;
}

/* The persisted fields of s, volatile ones zeroed (as store_load_saga does). */
static saga *copy_stored(const saga *s)
{
    saga *c = saga_alloc(s->n_steps);
    assert_non_null(c);
    memcpy(c->id, s->id, sizeof c->id);
    set_copy(&c->type, s->type);
    c->def = s->def;
    c->def_version = s->def_version;
    c->state = s->state;
    c->failed_phase = s->failed_phase;
    set_copy(&c->client_key, s->client_key);
    assert_int_equal(kv_merge(&c->input, &s->input), 0);
    c->created_at_ms = s->created_at_ms;
    c->updated_at_ms = s->updated_at_ms;
    c->deadline_at_ms = s->deadline_at_ms;
    set_copy(&c->last_error, s->last_error);
    set_copy(&c->root_cause, s->root_cause);
    c->cursor = s->cursor;
    for (size_t i = 0; i < s->n_steps; i++) {
        const step_run *a = &s->steps[i];
        step_run *b = &c->steps[i];
        b->state = a->state;
        b->action_attempts = a->action_attempts;
        b->compensation_attempts = a->compensation_attempts;
        b->last_outcome = a->last_outcome;
        assert_int_equal(kv_merge(&b->result, &a->result), 0);
        set_copy(&b->last_error, a->last_error);
        b->next_attempt_at_ms = a->next_attempt_at_ms;
    }
    return c;
}

/* ---- The participants' model --------------------------------------------------- */

/* A request reaches its participant: the outcome it answers. */
static int participant_handles(world *w, const request *r)
{
    model_step *m = &w->m[r->step];
    if (r->phase == PHASE_COMPENSATE) {
        if (!m->barrier) {
            m->barrier = 1;
            m->acted = 0; /* undone, when it had happened */
        }
        return OUTCOME_OK;
    }
    if (m->action_outcome == OUTCOME_UNSPECIFIED) {
        if (m->barrier) {
            m->action_outcome = OUTCOME_SKIPPED; /* compensated first: never takes effect */
        } else {
            m->action_outcome = m->destiny;
            m->acted = m->destiny == OUTCOME_OK;
        }
    }
    return m->action_outcome;
}

/* May step j still have an effect the saga must undo? */
static int effect_possible(const world *w, int j)
{
    const model_step *m = &w->m[j];
    if (m->barrier || !m->action_left)
        return 0;
    return m->action_outcome == OUTCOME_UNSPECIFIED || m->acted;
}

/* What must hold when a request leaves sagad. */
static void check_leaving(world *w, const request *r)
{
    const saga_def *d = &w->def;
    if (r->phase == PHASE_ACTION) {
        uint64_t deps = saga_dag_deps(d, (size_t)r->step);
        for (int j = 0; j < (int)d->n_steps; j++)
            if (deps & SAGA_DAG_BIT(j))
                CHECK(w, w->m[j].acted, "action of step %d left before step %d took effect",
                      r->step, j);
        w->m[r->step].action_left = 1;
    } else {
        CHECK(w, d->steps[r->step].compensation != NULL, "compensation of step %d, which has none",
              r->step);
        /* An owned-up step's action may never have left: the barrier makes
         * its compensation a null one. */
        CHECK(w, w->m[r->step].action_left || w->m[r->step].owned_up,
              "compensation of step %d whose action never left", r->step);
        uint64_t later = saga_dag_descendants(d, (size_t)r->step);
        for (int j = 0; j < (int)d->n_steps; j++)
            if ((later & SAGA_DAG_BIT(j)) && d->steps[j].compensation != NULL)
                CHECK(w, !effect_possible(w, j),
                      "step %d compensated while step %d, which depends on it, may keep its "
                      "effect",
                      r->step, j);
        w->m[r->step].comp_left = 1;
    }
}

/* ---- Rounds ---------------------------------------------------------------------- */

static void check_saga(world *w)
{
    const char *broken = saga_check_invariants(w->s);
    CHECK(w, broken == NULL, "invariant: %s (state %s)", broken, saga_state_name(w->s->state));
}

/* The event's changes are durable; its requests leave. */
static void commit(world *w)
{
    check_saga(w);
    saga_free(w->stored);
    w->stored = copy_stored(w->s);
    w->s->dirty = 0;
    w->s->dirty_steps = 0;
    for (size_t i = 0; i < w->n_pending; i++) {
        check_leaving(w, &w->pending[i]);
        CHECK(w, w->n_inflight < MAX_REQS, "too many in flight");
        w->inflight[w->n_inflight++] = w->pending[i];
    }
    w->n_pending = 0;
}

/* Requests the saga no longer awaits become ghosts. */
static void sweep_inflight(world *w)
{
    size_t k = 0;
    for (size_t i = 0; i < w->n_inflight; i++) {
        request *r = &w->inflight[i];
        if (saga_request_current(w->s, r->step, r->phase, r->token))
            w->inflight[k++] = *r;
        else if (w->n_ghosts < MAX_REQS)
            w->ghosts[w->n_ghosts++] = *r;
    }
    w->n_inflight = k;
}

static request take(request *list, size_t *n, size_t i)
{
    request r = list[i];
    list[i] = list[--*n];
    return r;
}

static void crash(world *w)
{
    note(w, "CRASH");
    /* Uncommitted changes are lost. Their requests too, but for the actions
     * of a saga RUNNING both as stored and in memory: the engine sends
     * those before the commit (saga.h "Early sends"), so the crash may come
     * after they left. What left may still arrive. */
    int early = w->stored != NULL && w->stored->state == SAGA_RUNNING &&
                w->s->state == SAGA_RUNNING && chance(w, 0.5);
    for (size_t i = 0; early && i < w->n_pending && w->n_ghosts < MAX_REQS; i++) {
        if (w->pending[i].phase != PHASE_ACTION)
            continue;
        note(w, "early(%d)", w->pending[i].step);
        check_leaving(w, &w->pending[i]);
        w->ghosts[w->n_ghosts++] = w->pending[i];
    }
    w->n_pending = 0;
    for (size_t i = 0; i < w->n_inflight && w->n_ghosts < MAX_REQS; i++)
        w->ghosts[w->n_ghosts++] = w->inflight[i];
    w->n_inflight = 0;
    saga_free(w->s);
    w->s = copy_stored(w->stored);
    w->s->token = w->token_high;
    w->armed = 0;
    check_saga(w);
    saga_recover(w->s, &w->env);
}

static int is_final(const saga *s)
{
    return s->state == SAGA_COMPLETED || s->state == SAGA_COMPENSATED;
}

/* One event, chosen at random; calm: no faults and no operator aborts. */
static void one_event(world *w, int calm)
{
    saga *s = w->s;
    uint64_t pick = rnd(w, 100);
    if (!calm && pick < 4) {
        crash(w); /* before the commit of nothing in particular: loses no request */
    } else if (w->n_inflight > 0 && pick < 75) {
        request r = take(w->inflight, &w->n_inflight, (size_t)rnd(w, w->n_inflight));
        if (!calm && chance(w, 0.15)) { /* lost on the way there */
            note(w, "lost(%d/%d)", r.step, r.phase);
            saga_on_no_reply(s, &w->env, r.token, "timed out");
        } else if (!calm && chance(w, 0.08)) {
            note(w, "retry(%d/%d)", r.step, r.phase);
            saga_on_reply(s, &w->env, r.token, OUTCOME_RETRY, 0, NULL, "busy");
        } else {
            int outcome = participant_handles(w, &r);
            if (!calm && chance(w, 0.15)) { /* the reply is lost */
                note(w, "reply-lost(%d/%d)", r.step, r.phase);
                saga_on_no_reply(s, &w->env, r.token, "timed out");
            } else {
                kvmap result = KVMAP_INIT;
                char key[16], val[24];
                snprintf(key, sizeof key, "out%d", r.step);
                snprintf(val, sizeof val, "v%d", r.step);
                if (r.phase == PHASE_ACTION && outcome == OUTCOME_OK)
                    assert_int_equal(kv_set(&result, key, val), 0);
                note(w, "reply(%d/%d=%d)", r.step, r.phase, outcome);
                saga_on_reply(s, &w->env, r.token, outcome, 0, &result, NULL);
                kv_free(&result);
            }
        }
    } else if (w->n_ghosts > 0 && pick < 85) {
        request r = take(w->ghosts, &w->n_ghosts, (size_t)rnd(w, w->n_ghosts));
        note(w, "ghost(%d/%d)", r.step, r.phase);
        participant_handles(w, &r);
        /* Its reply is stale for the saga, or lost: it must change nothing. */
        saga_on_reply(s, &w->env, r.token, OUTCOME_OK, 0, NULL, NULL);
    } else if (w->armed != 0) {
        if (w->armed > w->mono) {
            w->wall += w->armed - w->mono;
            w->mono = w->armed;
        }
        w->armed = 0;
        note(w, "timer");
        saga_on_timer(s, &w->env);
    } else if (s->state == SAGA_FAILED) {
        int rc = (!calm && chance(w, 0.3)) ? saga_abort(s, &w->env, NULL, "operator")
                                           : saga_resume(s, &w->env, NULL, NULL);
        if (rc != 0)
            rc = saga_resume(s, &w->env, NULL, NULL);
        note(w, "operator(%d)", rc);
        CHECK(w, rc == 0, "neither resume nor abort accepted a FAILED saga: %d", rc);
    } else if (!calm && s->state == SAGA_RUNNING && chance(w, 0.2)) {
        note(w, "abort(%d)", saga_abort(s, &w->env, NULL, "operator"));
    } else if (w->n_inflight == 0 && w->n_ghosts == 0 && !is_final(s)) {
        CHECK(w, 0, "stuck in %s: nothing in flight, no timer", saga_state_name(s->state));
    }
    sweep_inflight(w);
    if (!calm && chance(w, 0.05)) {
        crash(w); /* after the event, before its commit */
        sweep_inflight(w);
    }
    commit(w);
    if (!calm && chance(w, 0.04)) {
        crash(w); /* after the commit: its requests left, their replies are lost */
        commit(w);
    }
}

/* ---- One run ---------------------------------------------------------------------- */

static void build_def(world *w)
{
    size_t n = 1 + (size_t)rnd(w, MAX_STEPS);
    static const retry_policy quick = {2, 10, 40, 2.0}, patient = {3, 10, 40, 2.0};
    memset(w->steps, 0, sizeof w->steps);
    for (size_t i = 0; i < n; i++) {
        step_def *sd = &w->steps[i];
        snprintf(w->names[i], sizeof w->names[i], "s%zu", i);
        sd->name = w->names[i];
        sd->participant = "p";
        sd->action = "act";
        sd->compensation = chance(w, 0.2) ? NULL : "undo";
        sd->timeout_ms = 100;
        sd->retry = chance(w, 0.5) ? quick : patient;
        sd->compensation_retry = patient;
        if (i > 0 && chance(w, 0.7)) {
            sd->has_after = 1;
            sd->after = w->after[i];
            for (size_t j = 0; j < i; j++)
                if (chance(w, 0.4))
                    w->after[i][sd->n_after++] = (int)j;
        }
    }
    memset(&w->def, 0, sizeof w->def);
    w->def.name = "prop";
    w->def.steps = w->steps;
    w->def.n_steps = n;
    w->def.version = 1;
    assert_int_equal(saga_dag_find_cycle(&w->def), -1);
}

static void one_run(uint64_t seed)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->seed = seed;
    util_prng_seed(&w->rng, seed);
    w->env = (saga_env){w,        env_mono,     env_wall,    env_random,
                        env_send, env_schedule, env_history, env_settled};
    w->mono = 1000;
    w->wall = T0_WALL;
    build_def(w);
    for (size_t i = 0; i < w->def.n_steps; i++)
        w->m[i].destiny = chance(w, 0.12) ? OUTCOME_REJECTED : OUTCOME_OK;

    kvmap input = KVMAP_INIT;
    w->s = saga_new(&w->def, "00000000-0000-4000-8000-000000000001", NULL, &input, w->wall);
    assert_non_null(w->s);
    if (chance(w, 0.2))
        w->s->deadline_at_ms = w->wall + 20 + (int64_t)rnd(w, 200);
    w->stored = copy_stored(w->s);
    note(w, "steps=%zu", w->def.n_steps);
    saga_begin(w->s, &w->env);
    commit(w);

    int events = 0;
    while (!is_final(w->s)) {
        int calm = events >= CHAOS_EVENTS;
        CHECK(w, events < CHAOS_EVENTS + CALM_EVENTS, "no final state after %d events", events);
        one_event(w, calm);
        events++;
    }
    /* Every request that left arrives at last: nothing may change the outcome. */
    while (w->n_inflight > 0 || w->n_ghosts > 0) {
        request r = w->n_inflight > 0 ? take(w->inflight, &w->n_inflight, 0)
                                      : take(w->ghosts, &w->n_ghosts, 0);
        participant_handles(w, &r);
    }
    for (size_t i = 0; i < w->def.n_steps; i++) {
        const model_step *m = &w->m[i];
        if (w->s->state == SAGA_COMPLETED) {
            CHECK(w, m->acted && !m->barrier, "COMPLETED but step %zu has no effect", i);
        } else {
            if (w->def.steps[i].compensation != NULL)
                CHECK(w, !m->acted, "COMPENSATED but step %zu keeps its effect", i);
            CHECK(w, !m->comp_left || m->action_left || m->owned_up,
                  "step %zu compensated though its action never left", i);
        }
    }
    saga_free(w->s);
    saga_free(w->stored);
    free(w);
}

static uint64_t env_u64(const char *name, uint64_t fallback)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : fallback;
}

static void random_graphs_keep_effects_and_undo_in_order(void **state)
{
    (void)state;
    uint64_t first = env_u64("SAGA_PROPERTY_SEED", 20261202);
    uint64_t runs = env_u64("SAGA_PROPERTY_RUNS", 3000);
    for (uint64_t i = 0; i < runs; i++)
        one_run(first + i);
    print_message("%llu runs from seed %llu\n", (unsigned long long)runs,
                  (unsigned long long)first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(random_graphs_keep_effects_and_undo_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
