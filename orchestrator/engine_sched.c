/*
 * engine_sched — scheduled starts: `sagactl start --at TIME / --in 10m`.
 *
 * A scheduled start is a row of scheduled_starts (store.h "Scheduled
 * starts", invariants S1-S4), not a saga: nothing of saga.h exists for it
 * until it fires, so the state machine has no state for it and a saga is
 * RUNNING from its first row on. Its life:
 *
 *   start with a time in the future      (eng_sched_add)
 *        |  row inserted in the round, answered after the commit
 *        v
 *   [ waiting ] --- cancel / abort ---> (row deleted, committed before the
 *        |          (eng_sched_cancel)   answer; no saga ever exists)
 *        |  due: read (several nodes: claimed, store_pg.c F7) between rounds
 *        v  (eng_sched_fire_due)
 *   saga RUNNING, with the id promised: its insert and its first requests'
 *   intents commit with the row's delete, and only then are requests sent.
 *
 * Invariants, on top of engine.c's:
 *   1. Save before acting: the row is committed before sagactl hears of it
 *      (its answer is a round's answer); a fired start's saga and the row's
 *      delete are one commit (S1), so a crash before it leaves the row, which
 *      fires at the next start, and a crash after it leaves the saga, which
 *      recovery resumes: never lost, never doubled. The crash points
 *      engine.after_schedule_commit, engine.before_fire_commit and
 *      engine.after_fire_commit sit in these windows.
 *   2. One client key, one start: a key held by a saga or a scheduled start
 *      (stored, or added earlier in the same round) answers a repeat with
 *      that one ("existing"), or a conflict when the type or input differ.
 *      Across nodes the database decides which reserved it first (store_pg.c
 *      F6); the refused round's start, immediate or scheduled, is answered
 *      with the winner's id (eng_sched_rejected, engine_nodes.c key_taken):
 *      no client is told an id that will not run.
 *   3. A cancel never races a firing on one node: both run on the engine
 *      thread, and a start fired in the current round is a saga in memory,
 *      which a cancel refuses. On several nodes the claim and the
 *      conditional delete (F7) decide: the cancel's delete wins, or the
 *      firing's does.
 *   4. Late starts: a start that came due while sagad was down (or while
 *      memory was full: max_in_flight) fires as soon as it can, however late;
 *      its history says by how much. Its deadline counts from when it fires.
 *   5. A start that cannot fire (its type was removed by a reload, or the
 *      type now needs an input it lacks) stays, is logged, and is tried again
 *      every SCHED_RETRY_MS, and at once after every reload (the type may be
 *      back): nothing committed is dropped silently; it can be cancelled.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crashpoint.h"
#include "engine_internal.h"
#include "log.h"
#include "wire.h"

/* How often the due starts are looked for, how many fire per round at most,
 * and how long a start that cannot fire waits before the next try. */
#define SCHED_POLL_MS  1000
#define SCHED_BATCH    256
#define SCHED_RETRY_MS 60000

/* "2026-12-03T09:00:00Z" of a wall clock in ms. */
static void fmt_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void push_or_die(int rc, const char *what)
{
    if (rc != 0) {
        log_error("out of memory %s", what);
        _exit(71);
    }
}

/* ---- Scheduling ------------------------------------------------------------- */

int eng_sched_twin(engine *e, event *ev)
{
    store_schedule found = {0};
    const store_schedule *twin = NULL;
    for (size_t i = 0; i < e->sched_adds.len && twin == NULL; i++)
        if (e->sched_adds.items[i].client_key != NULL &&
            strcmp(e->sched_adds.items[i].client_key, ev->client_key) == 0)
            twin = &e->sched_adds.items[i];
    if (twin == NULL) {
        int rc = store_schedule_get(e->db, NULL, ev->client_key, &found);
        if (rc == STORE_NOT_FOUND)
            return 0;
        if (rc != 0) {
            eng_answer(e, ev, ENGINE_INTERNAL, store_errmsg(e->db), NULL, 0);
            return -1;
        }
        twin = &found;
    }
    if (strcmp(twin->type, ev->type) == 0 && kv_equal(&twin->input, &ev->input))
        eng_answer(e, ev, ENGINE_OK, NULL, twin->id, 1);
    else
        eng_answer(e, ev, ENGINE_CONFLICT,
                   "client key already used for a scheduled start with another type or input",
                   twin->id, 0);
    store_schedule_clear(&found);
    return 1;
}

void eng_sched_add(engine *e, event *ev, const saga_def *def)
{
    store_schedule s = {0};
    int64_t now = util_wall_ms();
    /* The id is the saga's from now on: time-ordered by when it was asked. */
    if (util_uuid7_at(now, s.id) != 0 || (s.type = util_strdup(def->name)) == NULL ||
        (ev->client_key && (s.client_key = util_strdup(ev->client_key)) == NULL) ||
        kv_merge(&s.input, &ev->input) != 0) {
        store_schedule_clear(&s);
        eng_answer(e, ev, ENGINE_INTERNAL, "out of memory", NULL, 0);
        return;
    }
    s.start_at_ms = ev->start_at_ms;
    s.deadline_ms = ev->deadline_ms;
    s.created_at_ms = now;
    push_or_die(VEC_PUSH(e->sched_adds, s), "scheduling a start");
    char when[32];
    fmt_time(s.start_at_ms, when, sizeof when);
    log_info("saga %s (%s) scheduled for %s", s.id, s.type, when);
    eng_answer(e, ev, ENGINE_OK, NULL, s.id, 0);
}

/* ---- Cancelling ------------------------------------------------------------- */

int eng_sched_cancel(engine *e, event *ev, int from_abort)
{
    char msg[400];
    const char *id = ev->saga_id;
    saga *running = saga_table_get(&e->by_id, id);
    if (running != NULL) {
        if (from_abort)
            return 0; /* handle_operator aborts it */
        snprintf(msg, sizeof msg,
                 "saga %s has already started (it is %s): only a scheduled start can be "
                 "cancelled; stop it with `sagactl abort %s`",
                 id, saga_state_name(running->state), id);
        eng_answer(e, ev, ENGINE_INVALID_STATE, msg, id, 0);
        return 1;
    }
    /* Scheduled in this very round: it is simply not written. */
    for (size_t i = 0; i < e->sched_adds.len; i++) {
        if (strcmp(e->sched_adds.items[i].id, id) != 0)
            continue;
        store_schedule_clear(&e->sched_adds.items[i]);
        e->sched_adds.items[i] = e->sched_adds.items[--e->sched_adds.len];
        log_info("scheduled start %s cancelled", id);
        eng_answer(e, ev, ENGINE_OK, NULL, id, 0);
        return 1;
    }
    int rc = store_schedule_cancel(e->db, id);
    if (rc == 0) {
        log_info("scheduled start %s cancelled%s", id, from_abort ? " (abort)" : "");
        eng_answer(e, ev, ENGINE_OK, NULL, id, 0);
        return 1;
    }
    if (rc < 0) {
        snprintf(msg, sizeof msg, "storage error: %s", store_errmsg(e->db));
        eng_answer(e, ev, ENGINE_INTERNAL, msg, NULL, 0);
        return 1;
    }
    if (from_abort)
        return 0; /* neither a saga nor a scheduled start: "no saga" */
    saga *s = NULL;
    rc = store_load_saga(e->db, id, &s);
    if (rc == STORE_NOT_FOUND) {
        snprintf(msg, sizeof msg, "no scheduled start %s", id);
        eng_answer(e, ev, ENGINE_NOT_FOUND, msg, NULL, 0);
    } else if (rc != 0) {
        snprintf(msg, sizeof msg, "storage error: %s", store_errmsg(e->db));
        eng_answer(e, ev, ENGINE_INTERNAL, msg, NULL, 0);
    } else if (saga_is_final(s->state)) {
        snprintf(msg, sizeof msg,
                 "saga %s has already started and is %s: there is nothing left to cancel "
                 "(`sagactl status %s` shows it)",
                 id, saga_state_name(s->state), id);
        eng_answer(e, ev, ENGINE_INVALID_STATE, msg, id, 0);
    } else {
        snprintf(msg, sizeof msg,
                 "saga %s has already started (it is %s): only a scheduled start can be "
                 "cancelled; stop it with `sagactl abort %s`",
                 id, saga_state_name(s->state), id);
        eng_answer(e, ev, ENGINE_INVALID_STATE, msg, id, 0);
    }
    saga_free(s);
    return 1;
}

/* ---- Firing ------------------------------------------------------------------- */

/* Its type or input no longer fit: tried again later (invariant 5). */
static void postpone(engine *e, const store_schedule *sc, const char *why)
{
    log_error("scheduled start %s (%s) cannot start: %s; it stays scheduled and is tried again "
              "in %d s (cancel it with `sagactl cancel %s`)",
              sc->id, sc->type, why, SCHED_RETRY_MS / 1000, sc->id);
    if (store_schedule_postpone(e->db, sc->id, util_wall_ms() + SCHED_RETRY_MS) != 0)
        log_warn("scheduled start %s: %s", sc->id, store_errmsg(e->db));
}

static int fire_one(const store_schedule *sc, void *arg)
{
    engine *e = arg;
    if (saga_table_get(&e->by_id, sc->id) != NULL)
        return 0; /* already running here (claimed twice in one pass) */
    const saga_def *def = catalog_current(e->defs, sc->type);
    char why[300];
    if (def == NULL) {
        snprintf(why, sizeof why, "saga type '%s' is not defined any more", sc->type);
        postpone(e, sc, why);
        return 0;
    }
    for (size_t i = 0; i < def->n_inputs; i++)
        if (kv_get(&sc->input, def->inputs[i]) == NULL) {
            snprintf(why, sizeof why, "the current definition of '%s' needs input '%s'", def->name,
                     def->inputs[i]);
            postpone(e, sc, why);
            return 0;
        }
    if (sc->client_key != NULL) {
        /* A saga of another id holding the key cannot happen since client
         * keys serialize across nodes (store_pg.c F6), but a database may
         * keep such a pair from a sagad before it. That client was told this
         * id: the start is neither run (the key is the saga's) nor deleted
         * behind anyone's back; it stays listed, logged, for an operator. */
        char other[37];
        int rc = store_find_client_key(e->db, sc->client_key, other);
        if (rc == 0 || saga_table_get(&e->by_key, sc->client_key) != NULL) {
            snprintf(why, sizeof why, "saga %s already holds its client key '%s'",
                     rc == 0 ? other : "(in memory)", sc->client_key);
            postpone(e, sc, why);
            return 0;
        }
        if (rc < 0) {
            log_warn("scheduled start %s: %s; tried again soon", sc->id, store_errmsg(e->db));
            return 0;
        }
    }
    int64_t now = util_wall_ms();
    saga *s = saga_new(def, sc->id, sc->client_key, &sc->input, now);
    if (s == NULL || eng_add_saga(e, s) != 0) {
        saga_free(s);
        log_error("out of memory firing scheduled start %s", sc->id);
        return 1;
    }
    if (sc->deadline_ms > 0)
        s->deadline_at_ms = now + sc->deadline_ms;
    pending_fire f;
    memcpy(f.id, sc->id, sizeof f.id);
    char due[32];
    fmt_time(sc->start_at_ms, due, sizeof due);
    snprintf(f.detail, sizeof f.detail, "scheduled for %s, started %" PRId64 " ms after it", due,
             now > sc->start_at_ms ? now - sc->start_at_ms : 0);
    push_or_die(VEC_PUSH(e->fires, f), "firing a scheduled start");
    saga_env env = eng_env(e);
    saga_event ev = {"saga_scheduled", -1, PHASE_ACTION, 0, OUTCOME_UNSPECIFIED, 0, f.detail};
    env.history(env.ctx, s, &ev);
    saga_begin(s, &env);
    om_on_saga_started(e->metrics, s);
    return 0; /* "started" is logged once it is committed (eng_sched_committed) */
}

void eng_sched_definitions_changed(engine *e)
{
    if (store_schedule_postpone(e->db, NULL, 0) != 0)
        log_warn("scheduled starts postponed for want of their type: %s; they are tried again "
                 "in at most %d s",
                 store_errmsg(e->db), SCHED_RETRY_MS / 1000);
    e->next_sched_poll_ms = util_mono_ms();
}

int eng_sched_fire_due(engine *e)
{
    int64_t now = util_mono_ms();
    if (now < e->next_sched_poll_ms || atomic_load(&e->store_unavailable))
        return 0;
    e->next_sched_poll_ms = now + SCHED_POLL_MS;
    if (e->by_id.len >= e->cfg->max_in_flight)
        return 0; /* memory is full: they fire once there is room (invariant 4) */
    size_t room = e->cfg->max_in_flight - e->by_id.len;
    uint32_t max = room < SCHED_BATCH ? (uint32_t)room : SCHED_BATCH;
    if (store_schedule_due(e->db, util_wall_ms(), max, fire_one, e) < 0) {
        log_warn("looking for due scheduled starts: %s; trying again in %d s", store_errmsg(e->db),
                 SCHED_POLL_MS / 1000);
        return 0;
    }
    if (e->fires.len == 0)
        return 0;
    if (e->fires.len == max)
        e->next_sched_poll_ms = now; /* more may be due */
    crashpoint("engine.before_fire_commit");
    return eng_finish_round(e);
}

/* ---- The round ---------------------------------------------------------------- */

int eng_sched_write(engine *e)
{
    for (size_t i = 0; i < e->fires.len; i++)
        if (store_schedule_fire(e->db, e->fires.items[i].id) != 0)
            return -1;
    for (size_t i = 0; i < e->sched_adds.len; i++)
        if (store_schedule_add(e->db, &e->sched_adds.items[i]) != 0)
            return -1;
    return 0;
}

void eng_sched_committed(engine *e)
{
    int added = e->sched_adds.len > 0, fired = e->fires.len > 0;
    for (size_t i = 0; i < e->fires.len; i++) {
        const saga *s = saga_table_get(&e->by_id, e->fires.items[i].id);
        log_info("saga %s (%s) started: %s", e->fires.items[i].id, s != NULL ? s->type : "?",
                 e->fires.items[i].detail);
    }
    eng_sched_abandon(e);
    if (added)
        crashpoint("engine.after_schedule_commit");
    if (fired)
        crashpoint("engine.after_fire_commit");
}

void eng_sched_abandon(engine *e)
{
    for (size_t i = 0; i < e->sched_adds.len; i++)
        store_schedule_clear(&e->sched_adds.items[i]);
    e->sched_adds.len = 0;
    e->fires.len = 0;
}

void eng_sched_forget(engine *e, const char *saga_id)
{
    for (size_t i = 0; i < e->fires.len; i++)
        if (strcmp(e->fires.items[i].id, saga_id) == 0) {
            e->fires.items[i] = e->fires.items[--e->fires.len];
            return;
        }
}

int eng_sched_fire_refused(engine *e, const char *saga_id)
{
    size_t i = 0;
    while (i < e->fires.len && strcmp(e->fires.items[i].id, saga_id) != 0)
        i++;
    if (i == e->fires.len)
        return 0;
    /* This node claimed the row and is alive in its epoch (the round's
     * lease check passed first), so no other node could claim it (F7): a
     * delete took it, which only a cancel or an abort does. */
    store_schedule row = {0};
    int rc = store_schedule_get(e->db, saga_id, NULL, &row);
    if (rc == STORE_NOT_FOUND)
        log_info("scheduled start %s was cancelled (on this node or another) while it was being "
                 "fired here: it does not start, nothing of it was sent",
                 saga_id);
    else
        log_warn("scheduled start %s: its firing here was refused (the row %s); it is not "
                 "started here, nothing of it was sent",
                 saga_id, rc == 0 ? "is claimed by another node now" : "cannot be read to say why");
    store_schedule_clear(&row);
    return 1;
}

int eng_sched_rejected(engine *e, enum store_rejection why, const char *saga_id)
{
    for (size_t i = 0; i < e->sched_adds.len; i++) {
        store_schedule *s = &e->sched_adds.items[i];
        if (strcmp(s->id, saga_id) != 0)
            continue;
        /* F6: another node's saga or scheduled start took the key first. Its
         * answer becomes the repeat of that one (or a conflict); the rest of
         * the round is written again. */
        char other[37] = "";
        store_schedule twin = {0};
        saga *loaded = NULL;
        const char *type = NULL;
        const kvmap *input = NULL;
        if (why == STORE_REJECT_KEY_TAKEN && s->client_key != NULL) {
            if (store_schedule_get(e->db, NULL, s->client_key, &twin) == 0) {
                memcpy(other, twin.id, sizeof other);
                type = twin.type;
                input = &twin.input;
            } else if (store_find_client_key(e->db, s->client_key, other) == 0 &&
                       store_load_saga(e->db, other, &loaded) == 0) {
                type = loaded->type;
                input = &loaded->input;
            }
        }
        for (size_t j = 0; j < e->answers.len; j++) {
            pending_answer *a = &e->answers.items[j];
            if (strcmp(a->saga_id, s->id) != 0 || a->status != ENGINE_OK)
                continue;
            free(a->error);
            a->error = NULL;
            if (type == NULL) {
                a->status = ENGINE_BUSY;
                a->error = util_strdup("the client key was taken on another sagad node at the "
                                       "same time, and its start cannot be read now; retry");
                a->saga_id[0] = '\0';
            } else if (strcmp(type, s->type) == 0 && kv_equal(input, &s->input)) {
                snprintf(a->saga_id, sizeof a->saga_id, "%s", other);
                a->existing = 1;
            } else {
                a->status = ENGINE_CONFLICT;
                a->error = util_strdup("client key already used for a saga with another type "
                                       "or input");
                snprintf(a->saga_id, sizeof a->saga_id, "%s", other);
            }
        }
        log_info("scheduled start %s not stored: client key taken on another sagad node by "
                 "%s %s",
                 s->id, loaded != NULL ? "saga" : "scheduled start",
                 type != NULL ? other : "(unreadable)");
        store_schedule_clear(&twin);
        saga_free(loaded);
        store_schedule_clear(s);
        e->sched_adds.items[i] = e->sched_adds.items[--e->sched_adds.len];
        return 1;
    }
    return 0;
}
