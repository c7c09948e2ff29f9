/*
 * engine — drives every saga in flight; see engine.h for the round structure.
 * What only a node of several on one database does is in engine_nodes.c.
 *
 * Invariants:
 *   1. Only the engine thread touches sagas, the writable store, the timer
 *      heap and the tables; other threads only append to the event queue.
 *   2. Nothing leaves the process (request, admin answer) before the round
 *      that produced it has committed: sends and answers are collected in
 *      `round` and performed after store_commit succeeds.
 *   3. A commit that fails for a transient reason (a lock held by another
 *      process, a full disk) is retried with backoff, writing the same round
 *      again: memory is ahead of the disk meanwhile, but nothing of the round
 *      has left the process, and new commands are answered BUSY. Any other
 *      commit failure is fatal: the process exits and recovery rebuilds every
 *      saga from what is on disk, which never ran ahead of the network.
 *   4. Every unfinished saga in memory is in `by_id`; one with a client key is
 *      also in `by_key`. A settled saga is freed after the round's commit.
 *   5. One saga's bad data never stops the others: a row that cannot be read
 *      at recovery, or a saga that breaks an invariant, is quarantined
 *      (FAILED, last_error beginning with QUARANTINE_PREFIX, alert) and
 *      refuses resume and abort.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db_url.h"
#include "crashpoint.h"
#include "db_files.h"
#include "engine_internal.h"
#include "log.h"
#include "wire.h"

static void event_free(event *ev)
{
    free(ev->type);
    free(ev->client_key);
    kv_free(&ev->input);
    free(ev->reason);
    free(ev->who);
    free(ev);
}

/* last_error of a quarantined saga begins with this. */
#define QUARANTINE_PREFIX "quarantined: "

static int is_quarantined(const saga *s)
{
    return s->state == SAGA_FAILED && s->last_error != NULL &&
           strncmp(s->last_error, QUARANTINE_PREFIX, strlen(QUARANTINE_PREFIX)) == 0;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- Fatal storage failure --------------------------------------------------- */

static void engine_fatal(engine *e, const char *what)
{
    /* "database is locked" from another process's lock: say whose. */
    char locks[1024] = "";
    if (!db_url_is_postgresql(e->cfg->database))
        dbf_describe_lock_holders(e->cfg->database, locks, sizeof locks);
    log_error("%s: %s%s%s; exiting so that recovery restarts from the committed state", what,
              store_errmsg(e->db), locks[0] ? "; " : "", locks);
    _exit(70);
}

/* ---- Timer heap ----------------------------------------------------------- */

static void heap_swap(engine *e, size_t a, size_t b)
{
    saga *x = e->timers.items[a];
    e->timers.items[a] = e->timers.items[b];
    e->timers.items[b] = x;
    e->timers.items[a]->timer_slot = a + 1;
    e->timers.items[b]->timer_slot = b + 1;
}

static void heap_up(engine *e, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (e->timers.items[parent]->timer_due <= e->timers.items[i]->timer_due)
            break;
        heap_swap(e, i, parent);
        i = parent;
    }
}

static void heap_down(engine *e, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->timers.len && e->timers.items[l]->timer_due < e->timers.items[m]->timer_due)
            m = l;
        if (r < e->timers.len && e->timers.items[r]->timer_due < e->timers.items[m]->timer_due)
            m = r;
        if (m == i)
            return;
        heap_swap(e, i, m);
        i = m;
    }
}

/* timer_slot is 1-based so that 0 means "not in the heap". */
void eng_timer_cancel(engine *e, saga *s)
{
    if (s->timer_slot == 0)
        return;
    size_t i = s->timer_slot - 1, last = e->timers.len - 1;
    if (i != last)
        heap_swap(e, i, last);
    e->timers.len--;
    s->timer_slot = 0;
    if (i < e->timers.len) {
        heap_up(e, i);
        heap_down(e, i);
    }
}

static void heap_set(engine *e, saga *s, int64_t due)
{
    eng_timer_cancel(e, s);
    if (due == 0)
        return;
    s->timer_due = due;
    if (VEC_PUSH(e->timers, s) != 0) {
        log_error("out of memory arming a retry timer for saga %s", s->id);
        _exit(71); /* recovery re-sends it */
    }
    s->timer_slot = e->timers.len;
    heap_up(e, e->timers.len - 1);
}

/* ---- The environment the state machines see ------------------------------- */

static void mark_dirty(engine *e, saga *s)
{
    if (s->engine_data == NULL) {
        s->engine_data = e; /* "already in this round's dirty list" */
        if (VEC_PUSH(e->dirty, s) != 0) {
            log_error("out of memory in a round");
            _exit(71);
        }
    }
}

static int64_t env_now_mono(void *ctx)
{
    return util_mono_ms();
}

static int64_t env_now_wall(void *ctx)
{
    return util_wall_ms();
}

static double env_random(void *ctx)
{
    engine *e = ctx;
    return util_prng_unit(&e->rng);
}

static void env_send(void *ctx, saga *s, int step, int phase, uint32_t attempt, uint64_t token)
{
    engine *e = ctx;
    if (token > e->token_high)
        e->token_high = token;
    pending_send ps = {.token = token, .step = step, .phase = phase, .attempt = attempt};
    memcpy(ps.saga_id, s->id, sizeof ps.saga_id);
    mark_dirty(e, s);
    if (VEC_PUSH(e->sends, ps) != 0) {
        log_error("out of memory queueing a send");
        _exit(71);
    }
}

static void env_schedule(void *ctx, saga *s, int64_t due)
{
    engine *e = ctx;
    mark_dirty(e, s);
    heap_set(e, s, due);
}

static void env_history(void *ctx, saga *s, const saga_event *ev)
{
    engine *e = ctx;
    mark_dirty(e, s);
    pending_history h = {0};
    h.saga_id = util_strdup(s->id);
    h.at_ms = util_wall_ms();
    h.ev = *ev;
    h.detail = ev->detail ? util_strdup(ev->detail) : NULL;
    h.ev.detail = h.detail;
    h.step_name = util_strdup(ev->step >= 0 && s->def ? s->def->steps[ev->step].name : "");
    if (h.saga_id == NULL || h.step_name == NULL || VEC_PUSH(e->history, h) != 0) {
        log_error("out of memory recording history");
        _exit(71);
    }
}

static void env_settled(void *ctx, saga *s)
{
    engine *e = ctx;
    mark_dirty(e, s);
    if (s->settle_pending)
        return;
    s->settle_pending = 1;
    if (VEC_PUSH(e->settled, s) != 0) {
        log_error("out of memory settling a saga");
        _exit(71);
    }
}

static saga_env engine_env(engine *e)
{
    saga_env env = {e,        env_now_mono, env_now_wall, env_random,
                    env_send, env_schedule, env_history,  env_settled};
    return env;
}

/* ---- Commands ------------------------------------------------------------- */

static void answer(engine *e, event *ev, int status, const char *error, const char *saga_id,
                   int existing)
{
    pending_answer a = {
        .done = ev->done, .arg = ev->done_arg, .status = status, .existing = existing};
    a.error = error ? util_strdup(error) : NULL;
    if (saga_id)
        snprintf(a.saga_id, sizeof a.saga_id, "%s", saga_id);
    if (VEC_PUSH(e->answers, a) != 0) {
        log_error("out of memory answering a command");
        _exit(71);
    }
}

void eng_answer(engine *e, event *ev, int status, const char *error, const char *saga_id,
                int existing)
{
    answer(e, ev, status, error, saga_id, existing);
}

saga_env eng_env(engine *e)
{
    return engine_env(e);
}

static int add_saga(engine *e, saga *s)
{
    s->token = e->token_high;
    if (saga_table_put(&e->by_id, s->id, s) != 0)
        return -1;
    if (s->client_key && saga_table_put(&e->by_key, s->client_key, s) != 0) {
        saga_table_del(&e->by_id, s->id);
        return -1;
    }
    e->in_flight = e->by_id.len;
    return 0;
}

int eng_add_saga(engine *e, saga *s)
{
    return add_saga(e, s);
}

/* Forgets s, added by add_saga and never scheduled, and frees it. */
static void drop_saga(engine *e, saga *s)
{
    saga_table_del(&e->by_id, s->id);
    if (s->client_key)
        saga_table_del(&e->by_key, s->client_key);
    e->in_flight = e->by_id.len;
    saga_free(s);
}

static void handle_start(engine *e, event *ev, const saga_env *env)
{
    const saga_def *def = catalog_current(e->defs, ev->type);
    char msg[1024];
    /* admin.c checked both against the definitions it saw; a reload may
     * have changed them since. */
    if (def == NULL) {
        catalog_unknown_type_msg(e->defs, ev->type, msg, sizeof msg);
        answer(e, ev, ENGINE_BAD_REQUEST, msg, NULL, 0);
        return;
    }
    if (saga_missing_inputs_msg(def, &ev->input, msg, sizeof msg) != 0) {
        answer(e, ev, ENGINE_BAD_REQUEST, msg, NULL, 0);
        return;
    }
    if (ev->client_key) {
        saga *twin = saga_table_get(&e->by_key, ev->client_key);
        saga *loaded = NULL;
        if (twin == NULL) {
            char id[37];
            int rc = store_find_client_key(e->db, ev->client_key, id);
            if (rc == 0)
                rc = store_load_saga(e->db, id, &loaded);
            if (rc < 0) {
                answer(e, ev, ENGINE_INTERNAL, store_errmsg(e->db), NULL, 0);
                return;
            }
            twin = loaded;
        }
        if (twin != NULL) {
            int same = strcmp(twin->type, ev->type) == 0 && kv_equal(&twin->input, &ev->input);
            if (same)
                answer(e, ev, ENGINE_OK, NULL, twin->id, 1);
            else {
                snprintf(msg, sizeof msg,
                         "client key already used by saga %s (type %s, %s) with another %s; "
                         "`sagactl status %s` shows it; start a new saga with another key",
                         twin->id, twin->type, saga_state_name(twin->state),
                         strcmp(twin->type, ev->type) != 0 ? "type" : "input", twin->id);
                answer(e, ev, ENGINE_CONFLICT, msg, twin->id, 0);
            }
            saga_free(loaded);
            return;
        }
        if (eng_sched_twin(e, ev) != 0) /* a scheduled start holds the key */
            return;
    }
    if (ev->start_at_ms > util_wall_ms()) {
        eng_sched_add(e, ev, def);
        return;
    }
    if (e->by_id.len >= e->cfg->max_in_flight) {
        snprintf(msg, sizeof msg, "%u sagas in flight, the configured limit; retry later",
                 e->cfg->max_in_flight);
        answer(e, ev, ENGINE_BUSY, msg, NULL, 0);
        return;
    }
    /* A version 7 UUID: unique, 74 random bits, and time-ordered, so the
     * indexes keyed by saga id here and in every participant (idempotency
     * keys begin with it) grow at their right edge, however large they are. */
    char id[37];
    saga *s = NULL;
    int64_t now = util_wall_ms();
    if (util_uuid7_at(now, id) != 0 ||
        (s = saga_new(def, id, ev->client_key, &ev->input, now)) == NULL || add_saga(e, s) != 0) {
        saga_free(s);
        answer(e, ev, ENGINE_INTERNAL, "out of memory", NULL, 0);
        return;
    }
    if (ev->deadline_ms > 0)
        s->deadline_at_ms = now + ev->deadline_ms;
    saga_begin(s, env);
    om_on_saga_started(e->metrics, s);
    answer(e, ev, ENGINE_OK, NULL, s->id, 0);
}

/* Finds a saga for abort/resume: in memory, or FAILED/finished on disk.
 * *loaded is set when it was read from disk just now (and added to memory). */
static saga *find_or_load(engine *e, event *ev, int *status, int *loaded_now, char *why,
                          size_t whylen)
{
    *loaded_now = 0;
    saga *s = saga_table_get(&e->by_id, ev->saga_id);
    if (s != NULL)
        return s;
    saga *loaded = NULL;
    /* On a shared database the saga may be another node's: an operator's
     * command takes it over (its owner's next write for it is refused). */
    int rc = store_claim_saga(e->db, ev->saga_id);
    if (rc == 0)
        rc = store_load_saga(e->db, ev->saga_id, &loaded);
    if (rc == STORE_NOT_FOUND) {
        *status = ENGINE_NOT_FOUND;
        return NULL;
    }
    if (rc != 0) {
        *status = store_error_is_corrupt_row(e->db) ? ENGINE_INVALID_STATE : ENGINE_INTERNAL;
        return NULL;
    }
    /* Taken over from another node: resumed here as at recovery, then the
     * command applies to it as to any saga in memory. */
    if (e->shared && (loaded->state == SAGA_RUNNING || loaded->state == SAGA_COMPENSATING)) {
        eng_recover_one(loaded, e);
        saga *s2 = saga_table_get(&e->by_id, ev->saga_id);
        if (s2 == NULL) {
            *status = ENGINE_INTERNAL;
            snprintf(why, whylen, "saga %s could not be taken over", ev->saga_id);
        }
        return s2;
    }
    /* Only FAILED sagas rest on disk unfinished; finished ones take no command.
     * A FAILED saga continues on the version it started on, or not at all. */
    if (loaded->state != SAGA_FAILED) {
        snprintf(why, whylen,
                 "saga %s is finished (%s): there is nothing to abort or resume; `sagactl "
                 "history %s` tells what happened, a new saga needs `sagactl start`",
                 ev->saga_id, saga_state_name(loaded->state), ev->saga_id);
        *status = ENGINE_INVALID_STATE;
        saga_free(loaded);
        return NULL;
    }
    char reason[256];
    if (catalog_bind(e->defs, e->db, loaded, reason, sizeof reason) != 0) {
        snprintf(why, whylen, "saga %s: its definition cannot be loaded: %s", ev->saga_id, reason);
        *status = ENGINE_INVALID_STATE;
        saga_free(loaded);
        return NULL;
    }
    if (add_saga(e, loaded) != 0) {
        *status = ENGINE_INTERNAL;
        saga_free(loaded);
        return NULL;
    }
    loaded->stored_state = loaded->state;
    *loaded_now = 1;
    return loaded;
}

/* Why a saga in this state refuses abort or resume, and the command that
 * helps instead: every refusal names what to do next. */
static void refusal_msg(const saga *s, int aborting, saga_state before, char *msg, size_t len)
{
    const char *id = s->id;
    if (aborting && before == SAGA_RUNNING)
        snprintf(msg, len,
                 "cannot abort saga %s yet: a step without compensation is in flight and could "
                 "not be undone; retry once it has answered (`sagactl watch %s` follows it)",
                 id, id);
    else if (aborting && before == SAGA_COMPENSATING)
        snprintf(msg, len,
                 "cannot abort saga %s: it is already COMPENSATING (undoing its steps); "
                 "`sagactl watch %s` follows it",
                 id, id);
    else if (aborting && before == SAGA_FAILED)
        snprintf(msg, len,
                 "cannot abort saga %s: it FAILED while compensating, so there is nothing left "
                 "to abort; fix the cause (`sagactl status %s`), then `sagactl resume %s` "
                 "retries the compensation",
                 id, id, id);
    else if (!aborting && (before == SAGA_RUNNING || before == SAGA_COMPENSATING))
        snprintf(msg, len,
                 "cannot resume saga %s: it is %s, not FAILED, so it is still on its way; "
                 "`sagactl watch %s` follows it%s",
                 id, saga_state_name(before), id,
                 before == SAGA_RUNNING ? ", `sagactl abort ID --reason TEXT` stops it" : "");
    else
        snprintf(msg, len, "cannot %s saga %s in state %s; `sagactl status %s` shows it",
                 aborting ? "abort" : "resume", id, saga_state_name(before), id);
}

static void handle_operator(engine *e, event *ev, const saga_env *env)
{
    int status = ENGINE_OK;
    char msg[700], why[350];
    int loaded_now;
    int aborting = ev->kind == EV_ABORT;
    const char *verb = aborting ? "abort" : "resume";
    const char *who = ev->who ? ev->who : "operator";
    saga *s = find_or_load(e, ev, &status, &loaded_now, why, sizeof why);
    /* No saga: aborting a start that has not fired yet cancels it. */
    if (s == NULL && status == ENGINE_NOT_FOUND && ev->kind == EV_ABORT &&
        eng_sched_cancel(e, ev, 1))
        return;
    if (s == NULL) {
        if (status == ENGINE_NOT_FOUND)
            snprintf(msg, sizeof msg,
                     "no saga %s; `sagactl list` shows the sagas, `sagactl status PREFIX` finds "
                     "one by the beginning of its id",
                     ev->saga_id);
        else if (status == ENGINE_INVALID_STATE && store_error_is_corrupt_row(e->db))
            snprintf(msg, sizeof msg,
                     "saga %s is quarantined: its stored row cannot be read (%s); inspect and "
                     "settle it by hand (`sagactl history %s`)",
                     ev->saga_id, store_errmsg(e->db), ev->saga_id);
        else if (status == ENGINE_INVALID_STATE)
            snprintf(msg, sizeof msg, "%s", why);
        else
            snprintf(msg, sizeof msg, "storage error: %s; nothing was changed, retry later",
                     store_errmsg(e->db));
        log_info("saga %s: %s by %s refused: %s", ev->saga_id, verb, who, msg);
        answer(e, ev, status, msg, NULL, 0);
        return;
    }
    saga_state before = s->state;
    if (is_quarantined(s)) {
        snprintf(msg, sizeof msg,
                 "cannot %s saga %s: it is quarantined (%s); its stored state cannot be trusted, "
                 "so a request could repeat an effect or skip an undo: inspect its history "
                 "(`sagactl history %s`) and settle it by hand",
                 verb, s->id, s->last_error + strlen(QUARANTINE_PREFIX), s->id);
        log_info("saga %s: %s by %s refused: %s", s->id, verb, who, msg);
        answer(e, ev, ENGINE_INVALID_STATE, msg, s->id, 0);
        if (loaded_now)
            drop_saga(e, s);
        return;
    }
    int rc = aborting ? saga_abort(s, env, ev->who, ev->reason)
                      : saga_resume(s, env, ev->who, ev->reason);
    if (rc != 0) {
        if (rc == -2)
            snprintf(msg, sizeof msg,
                     "cannot %s saga %s: it is older than idempotency_retention_s, so the "
                     "participants may have forgotten its keys and a request could repeat an "
                     "effect or skip an undo; settle it by hand (docs/CONFIG.md)",
                     verb, s->id);
        else
            refusal_msg(s, aborting, before, msg, sizeof msg);
        log_info("saga %s: %s by %s refused: %s", s->id, verb, who, msg);
        answer(e, ev, ENGINE_INVALID_STATE, msg, s->id, 0);
        /* Loaded just for this: drop it again. A saga that was already in
         * memory stays: it may have become FAILED earlier in this round and
         * be queued for saving and settling. */
        if (loaded_now)
            drop_saga(e, s);
        return;
    }
    /* Who and why, with the state it left: the audit trail of operator
     * actions (the history event holds the same). An abort undoes work: WARN. */
    log_msg(aborting ? LOG_WARN : LOG_INFO, "saga %s (%s): %s by %s (it was %s): %s", s->id,
            s->type, aborting ? "aborted" : "resumed", who, saga_state_name(before),
            ev->reason ? ev->reason : "no reason given");
    answer(e, ev, ENGINE_OK, NULL, s->id, 0);
}

/*
 * The saga files read again; on success their definitions become the
 * current ones (catalog_install). Sagas in flight keep the version they are
 * bound to. A broken file changes nothing; the answer carries its file:line.
 */
static void handle_reload(engine *e, event *ev)
{
    char err[1024];
    saga_def *defs = NULL;
    size_t n = 0;
    if (config_load_sagas(e->cfg, &defs, &n, err, sizeof err) != 0 ||
        catalog_install(e->defs, e->db, defs, n, err, sizeof err) != 0) {
        log_error("reload refused, the definitions in force stay: %s", err);
        answer(e, ev, ENGINE_INVALID_CONFIG, err, NULL, 0);
    } else {
        log_info("reloaded %zu saga types from %s", n, e->cfg->sagas_dir);
        eng_sched_definitions_changed(e);
        answer(e, ev, ENGINE_OK, NULL, NULL, 0);
    }
    config_free_sagas(defs, n);
}

static void handle_call_done(engine *e, transport_call *c, const saga_env *env)
{
    saga *s = saga_table_get(&e->by_id, c->saga_id);
    /* The token alone identifies the request in flight; the step and phase
     * are checked too, so that no bookkeeping slip can ever apply one step's
     * reply (an action's OK) to another (a compensation). */
    if (s == NULL || !saga_request_current(s, c->step, c->phase, c->token)) {
        e->late++; /* stale: the saga moved on or finished */
        transport_release(e->net, c);
        return;
    }
    e->round_had_replies = 1;
    char why[256];
    if (c->result != 0) {
        om_on_step_no_reply(e->metrics, s, c->step, c->phase, c->result == NNG_ETIMEDOUT);
        if (c->result == NNG_ETIMEDOUT) {
            e->timeouts++;
            snprintf(why, sizeof why, "timed out after %lld ms",
                     (long long)s->def->steps[c->step].timeout_ms);
        } else {
            snprintf(why, sizeof why, "participant %s unreachable: %s",
                     s->def->steps[c->step].participant, nng_strerror(c->result));
        }
        /* Which replica, when there are several: the history then shows the
         * retry moving to another one (transport.h, "Replicas"). */
        if (transport_replicas(e->net, c->participant) > 1) {
            size_t used = strlen(why);
            snprintf(why + used, sizeof why - used, " (replica %s)",
                     transport_replica_url(e->net, c->participant, c->replica));
        }
        saga_on_no_reply(s, env, c->token, why);
        transport_release(e->net, c);
        return;
    }
    const uint8_t *body = nng_msg_body(c->reply);
    size_t body_len = nng_msg_len(c->reply);
    StepReply *rep =
        body_len <= WIRE_MAX_MSG ? saga__v1__step_reply__unpack(NULL, body_len, body) : NULL;
    char key[WIRE_MAX_KEY + 1];
    saga_step_key(s, c->step, c->phase, key, sizeof key);
    const char *who = s->def->steps[c->step].participant, *text_problem = NULL, *bad_text;
    int malformed = 1;
    /* Nothing of a reply is used before it passes all of these. One without a
     * known outcome says nothing of the effect: it is no reply, retried with
     * the same key like a timeout (saga.proto, Outcome). */
    if (rep == NULL)
        snprintf(why, sizeof why, "malformed reply from %s (%zu bytes)", who, body_len);
    else if ((bad_text = wire_invalid_string_field(&saga__v1__step_reply__descriptor, body,
                                                   body_len, &text_problem)) != NULL)
        snprintf(why, sizeof why, "malformed reply from %s (field '%s' %s)", who, bad_text,
                 text_problem);
    else if (strcmp(rep->idempotency_key, key) != 0)
        snprintf(why, sizeof why, "malformed reply from %s (idempotency key does not match)", who);
    else if (!wire_outcome_known((int)rep->outcome))
        snprintf(why, sizeof why, "malformed reply from %s (outcome %s, %d: not an answer)", who,
                 wire_outcome_name((int)rep->outcome), (int)rep->outcome);
    else
        malformed = 0;
    if (malformed) {
        om_on_step_no_reply(e->metrics, s, c->step, c->phase, 0);
        saga_on_no_reply(s, env, c->token, why);
    } else {
        kvmap result = KVMAP_INIT;
        if (wire_result_to_kv(rep, &result) != 0) {
            saga_on_no_reply(s, env, c->token, "out of memory decoding a reply");
        } else {
            if (rep->replayed)
                e->replayed++;
            om_on_step_reply(e->metrics, s, c->step, c->phase, rep->outcome, rep->replayed,
                             (double)(mono_us() - s->steps[c->step].sent_at_us) / 1e6);
            saga_on_reply(s, env, c->token, rep->outcome, rep->replayed, &result, rep->error);
        }
        kv_free(&result);
    }
    if (rep)
        saga__v1__step_reply__free_unpacked(rep, NULL);
    transport_release(e->net, c);
}

/* ---- Rounds --------------------------------------------------------------- */

/* With e->mtx held: appends the events first..last (linked) to the queue and wakes the engine. */
static void queue_append_locked(engine *e, event *first, event *last)
{
    if (e->queue_tail)
        e->queue_tail->next = first;
    else
        e->queue_head = first;
    e->queue_tail = last;
    nng_cv_wake1(e->cv);
}

/* The calls of one completion (a frame's, or one) go in with one lock and one wake-up. */
static void transport_done(void *arg, transport_call *const *calls, size_t n)
{
    engine *e = arg;
    if (atomic_load(&e->closing) || n == 0)
        return;
    event *first = NULL, *last = NULL;
    for (size_t i = 0; i < n; i++) {
        event *ev = calloc(1, sizeof *ev);
        if (ev == NULL) {
            log_error("out of memory queueing a reply");
            _exit(71);
        }
        ev->kind = EV_CALL_DONE;
        ev->call = calls[i];
        if (last)
            last->next = ev;
        else
            first = ev;
        last = ev;
    }
    nng_mtx_lock(e->mtx);
    queue_append_locked(e, first, last);
    nng_mtx_unlock(e->mtx);
}

/* Writes the round's sagas and history in one transaction: 0, or -1 with
 * the transaction rolled back and the round's flags kept, so that the very
 * same writes can be tried again. */
static int write_round(engine *e)
{
    if (store_begin(e->db) != 0)
        return -1;
    if (eng_sched_write(e) != 0)
        goto fail;
    for (size_t i = 0; i < e->dirty.len; i++)
        if (store_save_saga(e->db, e->dirty.items[i]) != 0)
            goto fail;
    for (size_t i = 0; i < e->history.len; i++) {
        pending_history *h = &e->history.items[i];
        if (store_append_history(e->db, h->saga_id, h->at_ms, &h->ev, h->step_name) != 0)
            goto fail;
    }
    return store_commit(e->db); /* rolls back itself when it fails */
fail:
    store_rollback(e->db);
    return -1;
}

/* A saga whose state breaks an invariant (a programming error, or a stored
 * row that decodes but makes no sense) becomes FAILED instead of stopping
 * sagad: nothing more is sent for it, a reply to its request in flight is
 * stale, and only a person can settle it (resume and abort refuse it). */
static void quarantine_saga(engine *e, saga *s, const char *what, const char *broken)
{
    char msg[512];
    snprintf(msg, sizeof msg, QUARANTINE_PREFIX "%s in state %s: %s", what,
             saga_state_name(s->state), broken);
    log_error("saga %s: %s", s->id, msg);
    if (s->state != SAGA_FAILED)
        s->failed_phase = s->state == SAGA_COMPENSATING ? PHASE_COMPENSATE : PHASE_ACTION;
    saga_set_error(s, msg);
    s->state = SAGA_FAILED;
    saga_forget_in_flight(s);
    s->token = ++e->token_high; /* pending sends and late replies no longer match */
    eng_timer_cancel(e, s);
    s->updated_at_ms = util_wall_ms();
    s->dirty |= SAGA_DIRTY_ROW;
    mark_dirty(e, s);
    saga_event ev = {"saga_quarantined", -1, s->failed_phase, 0, OUTCOME_UNSPECIFIED, 0, msg};
    env_history(e, s, &ev);
    env_settled(e, s);
    om_on_quarantined(e->metrics);
}

/* Every saga of the round that breaks an invariant is quarantined before
 * anything of it is stored or sent (early sends included). quarantine_saga
 * may append to dirty: the loop sees those too, and they pass. */
static void quarantine_broken(engine *e)
{
    for (size_t i = 0; i < e->dirty.len; i++) {
        saga *s = e->dirty.items[i];
        const char *broken = saga_check_invariants(s);
        if (broken != NULL) /* never store it as it is */
            quarantine_saga(e, s, "internal invariant broken", broken);
    }
}

/* Backoff of the commit retries: 10 ms doubling to 5 s. */
#define STORE_RETRY_FIRST_MS 10
#define STORE_RETRY_MAX_MS   5000

/* Sleeps ms unless sagad is stopping; 1 when it is. Alert children are
 * reaped meanwhile. */
int eng_wait_unless_stopping(engine *e, int64_t ms)
{
    int64_t until = util_mono_ms() + ms;
    nng_mtx_lock(e->mtx);
    int64_t now;
    while (!e->stopping && (now = util_mono_ms()) < until)
        nng_cv_until(e->cv, nng_clock() + (nng_time)(until - now));
    int stop = e->stopping;
    nng_mtx_unlock(e->mtx);
    alert_poll(e->alerts);
    return stop;
}

/* Commits the round, retrying transient failures (invariant 3). 0 when
 * committed (or nothing to commit); -1 when sagad is stopping with the round
 * still uncommitted: the caller must then act on nothing of it. */
static int commit_round(engine *e)
{
    if (e->dirty.len == 0 && e->history.len == 0 && e->sched_adds.len == 0 && e->fires.len == 0)
        return 0;
    if (e->round_had_replies)
        crashpoint("engine.before_outcome_commit");
    quarantine_broken(e);
    int64_t delay = STORE_RETRY_FIRST_MS;
    unsigned retries = 0;
    int rc;
    while ((rc = write_round(e)) != 0) {
        if (rc == STORE_REJECTED) { /* another node's rule: drop what broke it, write the rest */
            eng_on_rejected(e);
            if (e->dirty.len == 0 && e->history.len == 0 && e->sched_adds.len == 0 &&
                e->fires.len == 0)
                break;
            continue;
        }
        if (!store_error_is_transient(e->db))
            engine_fatal(e, "cannot commit a round, and the error is not one that passes");
        retries++;
        om_on_commit_retry(e->metrics);
        if (retries == 1) {
            nng_mtx_lock(e->mtx);
            snprintf(e->store_unavailable_why, sizeof e->store_unavailable_why, "%s",
                     store_errmsg(e->db));
            nng_mtx_unlock(e->mtx);
            atomic_store(&e->store_unavailable, 1);
            om_set_store_unavailable(e->metrics, 1);
        }
        /* A line per backoff step; once at the cap, a line per retry (every 5 s). */
        log_warn("store unavailable: %s; nothing of this round (%zu sagas) is acknowledged, "
                 "nor sent but the actions that left early (their replies wait for the "
                 "commit); commit retry %u in %lld ms",
                 store_errmsg(e->db), e->dirty.len, retries, (long long)delay);
        if (eng_wait_unless_stopping(e, delay)) {
            log_error("stopping with a round not committed (%s): recovery at the next start "
                      "resumes from the last committed state",
                      store_errmsg(e->db));
            return -1;
        }
        delay = delay * 2 > STORE_RETRY_MAX_MS ? STORE_RETRY_MAX_MS : delay * 2;
    }
    if (retries > 0) {
        log_info("store available again: the round committed after %u retries", retries);
        atomic_store(&e->store_unavailable, 0);
        om_set_store_unavailable(e->metrics, 0);
    }
    for (size_t i = 0; i < e->dirty.len; i++)
        e->dirty.items[i]->stored_state = e->dirty.items[i]->state;
    e->commits++;
    e->committed_sagas += e->dirty.len;
    om_on_commit(e->metrics, e->dirty.len);
    eng_sched_committed(e);
    return 0;
}

/* Hands one queued request to the transport (not flushed). A request that
 * cannot leave counts as an attempt without a reply; what the saga does
 * about it may queue more sends. */
static void send_one(engine *e, pending_send ps)
{
    saga *s = saga_table_get(&e->by_id, ps.saga_id);
    if (s == NULL || !saga_request_current(s, ps.step, ps.phase, ps.token))
        return; /* superseded within the round */
    const step_def *sd = &s->def->steps[ps.step];
    const char *op = ps.phase == PHASE_ACTION ? sd->action : sd->compensation;
    char key[WIRE_MAX_KEY + 1];
    saga_step_key(s, ps.step, ps.phase, key, sizeof key);
    kvmap params = KVMAP_INIT;
    size_t len = 0;
    uint8_t *buf = NULL;
    if (saga_step_params(s, ps.step, &params) == 0)
        buf = wire_pack_request(key, s->id, sd->name, ps.phase, op, ps.attempt, &params, &len);
    kv_free(&params);
    int rv = buf ? transport_send(e->net, sd->participant_index, s->id, ps.token, ps.step, ps.phase,
                                  buf, len, sd->timeout_ms)
                 : NNG_ENOMEM;
    free(buf);
    /* An attempt even when it could not be handed to nng (its intent is, or
     * for an early send is being, committed), but only a request that left
     * counts as sent. */
    if (rv == 0)
        e->steps_sent++;
    if (ps.attempt > 1)
        e->retries++;
    s->steps[ps.step].sent_at_us = mono_us();
    om_on_step_sent(e->metrics, s, ps.step, ps.phase, ps.attempt);
    if (rv != 0) {
        /* Counts as an attempt without a reply: retried with backoff. */
        saga_env env = engine_env(e);
        char why[128];
        snprintf(why, sizeof why, "cannot send: %s", nng_strerror(rv));
        saga_on_no_reply(s, &env, ps.token, why);
    }
}

/* Sends the first n queued requests; requests queued meanwhile (a send that
 * failed at once and led to another step) wait for the next commit. */
static void perform_sends(engine *e, size_t n)
{
    int compensation = 0;
    for (size_t i = 0; i < n; i++)
        compensation |= e->sends.items[i].phase == PHASE_COMPENSATE;
    if (compensation)
        crashpoint("engine.in_compensation");
    for (size_t i = 0; i < n; i++)
        send_one(e, e->sends.items[i]); /* by value: the vector may grow meanwhile */
    transport_flush(e->net);            /* one frame per participant and timeout */
    e->sends.len -= n;
    memmove(e->sends.items, e->sends.items + n, e->sends.len * sizeof *e->sends.items);
    crashpoint("engine.after_send");
}

/*
 * Early sends (saga.h "Early sends"): the actions of sagas RUNNING both on
 * disk and in memory leave before the round's commit, so that a
 * participant's commit and ours sync at the same time instead of one after
 * the other. Safe because:
 *   - their replies are events of a later round, which runs after this
 *     round's commit (the engine thread does one thing at a time): nothing
 *     is acted on before the intent it depends on is durable;
 *   - a crash before the commit leaves the step PENDING on disk while its
 *     request may have left; saga_recover owns such steps up when the saga
 *     leaves RUNNING, and the participant's barrier covers an undo of an
 *     action that never ran;
 *   - never for a saga not yet stored (its id would not survive a crash),
 *     a compensation, a step without one (a pivot: its outcome could not be
 *     learnt after a crash without running it), or a saga whose state
 *     changes in this round (a resume or an abort not yet durable must not
 *     act);
 *   - on a shared database only while the lease is surely held (no
 *     database call here: otherwise the sends wait for the commit).
 */
static size_t send_early(engine *e)
{
    if (e->sends.len == 0 || (e->shared && util_mono_ms() >= e->lease_sure_until_ms))
        return 0;
    quarantine_broken(e); /* a broken saga sends nothing, early or not */
    /* Out of the queue first: a send that fails may queue more. */
    e->early.len = 0;
    size_t kept = 0;
    for (size_t i = 0; i < e->sends.len; i++) {
        pending_send ps = e->sends.items[i];
        saga *s = saga_table_get(&e->by_id, ps.saga_id);
        if (s != NULL && ps.phase == PHASE_ACTION && s->state == SAGA_RUNNING &&
            s->stored_state == SAGA_RUNNING && s->def->steps[ps.step].compensation != NULL &&
            VEC_PUSH(e->early, ps) == 0)
            continue;
        e->sends.items[kept++] = ps; /* out of memory too: it leaves after the commit */
    }
    e->sends.len = kept;
    size_t n = e->early.len;
    for (size_t i = 0; i < n; i++)
        send_one(e, e->early.items[i]);
    if (n == 0)
        return 0;
    transport_flush(e->net);
    om_on_early_sends(e->metrics, n);
    crashpoint("engine.after_early_send");
    return n;
}

static void clear_round_changes(engine *e)
{
    for (size_t i = 0; i < e->dirty.len; i++) {
        saga *s = e->dirty.items[i];
        s->dirty = 0;
        s->dirty_steps = 0;
        s->engine_data = NULL;
    }
    e->dirty.len = 0;
    for (size_t i = 0; i < e->history.len; i++) {
        free(e->history.items[i].saga_id);
        free(e->history.items[i].detail);
        free(e->history.items[i].step_name);
    }
    e->history.len = 0;
    e->round_had_replies = 0;
}

/* sagad stops while the round cannot be committed: nothing of it is sent,
 * no start is acknowledged, no alert fires; the sagas stay in by_id for
 * engine_destroy to free, and the next start recovers the committed state. */
static void abandon_round(engine *e)
{
    clear_round_changes(e);
    eng_sched_abandon(e);
    e->sends.len = 0;
    for (size_t i = 0; i < e->answers.len; i++) {
        pending_answer *a = &e->answers.items[i];
        a->done(a->arg, ENGINE_INTERNAL, "sagad stopped before this command could be committed",
                NULL, 0);
        free(a->error);
    }
    e->answers.len = 0;
    for (size_t i = 0; i < e->settled.len; i++)
        e->settled.items[i]->settle_pending = 0;
    e->settled.len = 0;
}

/* Answers the round's commands: call only once what they did is committed. */
static void deliver_answers(engine *e)
{
    int answered = e->answers.len > 0;
    for (size_t i = 0; i < e->answers.len; i++) {
        pending_answer *a = &e->answers.items[i];
        a->done(a->arg, a->status, a->error, a->saga_id[0] ? a->saga_id : NULL, a->existing);
        free(a->error);
    }
    e->answers.len = 0;
    if (answered)
        crashpoint("engine.after_answer");
}

/*
 * Commit, then act: sends, answers, and freeing the sagas that settled.
 * Returns 0, or -1 when sagad stopped with changes of the round not
 * committed: the engine thread must then end at once (engine_main), since
 * memory is ahead of the disk and no later round may write on top of it.
 */
int eng_finish_round(engine *e)
{
    size_t early = send_early(e);
    for (int pass = 0;; pass++) {
        if (commit_round(e) != 0) {
            if (pass == 0) {
                abandon_round(e);
                return -1;
            }
            /* The commands and settlements of the round committed in the
             * first pass: their answers are true and go out. Only what the
             * failed sends changed since is dropped (recovery re-sends). */
            clear_round_changes(e);
            e->sends.len = 0;
            deliver_answers(e);
            for (size_t i = 0; i < e->settled.len; i++)
                e->settled.items[i]->settle_pending = 0;
            e->settled.len = 0;
            return -1;
        }
        clear_round_changes(e);
        int sent_early = pass == 0 && early > 0;
        if (sent_early || e->sends.len > 0)
            crashpoint("engine.after_intent_commit");
        if (e->sends.len == 0) {
            if (sent_early)
                crashpoint("engine.after_send"); /* they left before the commit */
            break;
        }
        if (eng_lease_check_before_acting(e) != 0) {
            e->sends.len = 0; /* committed intents: the claiming node re-sends them */
            break;
        }
        perform_sends(e, e->sends.len);
        if (e->dirty.len == 0 && e->history.len == 0)
            break;
    }

    log_hold(); /* a line per settled saga: written together below */
    deliver_answers(e);

    for (size_t i = 0; i < e->settled.len; i++) {
        saga *s = e->settled.items[i];
        s->settle_pending = 0;
        if (s->state == SAGA_RUNNING || s->state == SAGA_COMPENSATING)
            continue; /* settled, then resumed in the same round */
        /* FAILED needs an operator: WARN, and ERROR when an undo could not be
         * done (money or stock may be held until someone acts). */
        enum log_level level = s->state != SAGA_FAILED               ? LOG_INFO
                               : s->failed_phase == PHASE_COMPENSATE ? LOG_ERROR
                                                                     : LOG_WARN;
        log_msg(level, "saga %s (%s) %s%s%s", s->id, s->type, saga_state_name(s->state),
                s->last_error ? ": " : "", s->last_error ? s->last_error : "");
        om_on_saga_settled(e->metrics, s);
        if (s->state == SAGA_FAILED) /* durable now: tell an operator */
            alert_fire(e->alerts, s->id, s->type, s->last_error);
        eng_timer_cancel(e, s);
        saga_table_del(&e->by_id, s->id);
        if (s->client_key)
            saga_table_del(&e->by_key, s->client_key);
        saga_free(s);
    }
    e->settled.len = 0;
    log_release();
    e->in_flight = e->by_id.len;
    om_set_in_flight(e->metrics, e->by_id.len);
    return 0;
}

/* One round: apply events and due timers, then finish_round (its return). */
static int run_round(engine *e, event *events)
{
    saga_env env = engine_env(e);
    while (events) {
        event *ev = events;
        events = ev->next;
        switch (ev->kind) {
        case EV_CALL_DONE:
            handle_call_done(e, ev->call, &env);
            break;
        case EV_START:
            handle_start(e, ev, &env);
            break;
        case EV_ABORT:
        case EV_RESUME:
            handle_operator(e, ev, &env);
            break;
        case EV_RELOAD:
            handle_reload(e, ev);
            break;
        case EV_CANCEL:
            eng_sched_cancel(e, ev, 0);
            break;
        }
        event_free(ev);
    }
    int64_t now = util_mono_ms();
    while (e->timers.len > 0 && e->timers.items[0]->timer_due <= now) {
        saga *s = e->timers.items[0];
        eng_timer_cancel(e, s);
        saga_on_timer(s, &env);
    }
    return eng_finish_round(e);
}

/* Retention (finished_retention_s): between rounds, at most one batch of
 * finished sagas is deleted, so a round waits for one batch at worst. A full
 * batch means more may be due: the next comes after the next round; otherwise
 * the next pass starts PURGE_PASS_MS later. */
#define PURGE_BATCH   500
#define PURGE_PASS_MS 10000

static void purge_some(engine *e)
{
    int64_t now = util_mono_ms();
    if (now < e->next_purge_ms || atomic_load(&e->store_unavailable))
        return;
    uint64_t purged = 0;
    int64_t cutoff = util_wall_ms() - e->cfg->finished_retention_s * 1000;
    if (store_purge_finished(e->db, cutoff, PURGE_BATCH, &purged) != 0) {
        log_warn("retention purge: %s; trying again in %d s", store_errmsg(e->db),
                 PURGE_PASS_MS / 1000);
        e->next_purge_ms = now + PURGE_PASS_MS;
        return;
    }
    if (purged > 0) {
        om_on_purged(e->metrics, purged);
        log_debug("retention purge: %" PRIu64 " finished sagas deleted", purged);
    }
    e->next_purge_ms = purged == PURGE_BATCH ? now : now + PURGE_PASS_MS;
}

/* How long the engine sleeps at most, so that transport_maintain runs. */
#define ENGINE_MAX_IDLE_MS 500

static void engine_main(void *arg)
{
    engine *e = arg;
    for (;;) {
        nng_mtx_lock(e->mtx);
        int64_t now = util_mono_ms(), wake = now + ENGINE_MAX_IDLE_MS;
        if (e->timers.len > 0 && e->timers.items[0]->timer_due < wake)
            wake = e->timers.items[0]->timer_due;
        while (e->queue_head == NULL && !e->stopping && (now = util_mono_ms()) < wake)
            nng_cv_until(e->cv, nng_clock() + (nng_time)(wake - now));
        event *events = e->queue_head;
        e->queue_head = e->queue_tail = NULL;
        int stop = e->stopping;
        nng_mtx_unlock(e->mtx);
        if (stop && events == NULL)
            break;
        if (run_round(e, events) != 0 || eng_sched_fire_due(e) != 0)
            break; /* stopped with the round not committed: nothing more may run */
        transport_maintain(e->net);
        alert_poll(e->alerts);
        purge_some(e);
        if (e->shared && (eng_renew_lease(e) != 0 || eng_take_over_some(e) != 0))
            break;
        if (stop)
            break;
    }
}

/* ---- Recovery --------------------------------------------------------------- */

int eng_recover_one(saga *s, void *arg)
{
    engine *e = arg;
    saga_env env = engine_env(e);
    if (add_saga(e, s) != 0) {
        saga_free(s);
        return -1;
    }
    char why[256];
    /* The version it started on, never the files' (catalog.h); one that
     * cannot be loaded quarantines this saga, not sagad. */
    if (catalog_bind(e->defs, e->db, s, why, sizeof why) != 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "cannot load its definition (type '%s' version %u): %s", s->type,
                 s->def_version, why);
        log_error("saga %s: %s", s->id, msg);
        s->failed_phase = s->state == SAGA_COMPENSATING ? PHASE_COMPENSATE : PHASE_ACTION;
        saga_set_error(s, msg);
        s->state = SAGA_FAILED;
        s->updated_at_ms = util_wall_ms();
        s->dirty |= SAGA_DIRTY_ROW;
        mark_dirty(e, s);
        saga_event ev = {"saga_failed", -1, s->failed_phase, 0, OUTCOME_UNSPECIFIED, 0, msg};
        env_history(e, s, &ev);
        env_settled(e, s);
        return 0;
    }
    /* stored_state stays 0 until the recovery round commits (a recovered
     * saga is always written: its "recovered" event): what recovery resends
     * waits for that commit, so a crash loop cannot resend a last attempt
     * forever (saga.c recover_step). */
    const char *broken = saga_check_invariants(s);
    if (broken != NULL) { /* decodable, but nothing could be sent safely from it */
        quarantine_saga(e, s, "stored state breaks an invariant", broken);
        return 0;
    }
    saga_recover(s, &env);
    return 0;
}

/* A row store_load_unfinished cannot decode: the saga is marked FAILED on
 * disk without being read, and recovery goes on with the others. When even
 * that write fails, sagad still starts: the saga is not in memory, so nothing
 * is sent for it, and the error says which one needs a person. */
int eng_recover_corrupt(const char *saga_id, const char *why, void *arg)
{
    engine *e = arg;
    char msg[700];
    snprintf(msg, sizeof msg, QUARANTINE_PREFIX "unreadable row: %s", why);
    om_on_quarantined(e->metrics);
    if (store_quarantine_saga(e->db, saga_id, msg, util_wall_ms()) != 0) {
        log_error("saga %s: %s; it could not be marked FAILED (%s): it is left out of "
                  "recovery and is sent nothing",
                  saga_id, msg, store_errmsg(e->db));
        return 0;
    }
    log_error("saga %s: %s; marked FAILED, the others are recovered", saga_id, msg);
    alert_fire(e->alerts, saga_id, "", msg);
    return 0;
}

/* ---- Public API --------------------------------------------------------------- */

engine *engine_create(const orch_config *cfg, char *err, size_t errlen)
{
    engine *e = calloc(1, sizeof *e);
    if (e == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->cfg = cfg;
    uint64_t seed;
    util_random_bytes(&seed, sizeof seed);
    util_prng_seed(&e->rng, seed);
    if (nng_mtx_alloc(&e->mtx) != 0 || nng_cv_alloc(&e->cv, e->mtx) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    e->db = store_open(cfg->database, cfg->durability_full, 0, err, errlen);
    if (e->db == NULL)
        goto fail;
    e->defs = catalog_create(cfg);
    if (e->defs == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (catalog_install(e->defs, e->db, cfg->sagas, cfg->n_sagas, err, errlen) != 0)
        goto fail;
    e->shared = store_is_shared(e->db);
    if (e->shared) {
        int64_t asked = util_mono_ms();
        if (store_node_join(e->db, cfg->node_name, cfg->lease_ms) != 0) {
            snprintf(err, errlen, "cannot join as node '%s': %s", cfg->node_name,
                     store_errmsg(e->db));
            goto fail;
        }
        e->lease_sure_until_ms = asked + cfg->lease_ms;
    }
    e->net = transport_create(cfg, transport_done, e, err, errlen);
    if (e->net == NULL)
        goto fail;
    e->metrics = om_create(cfg);
    if (e->metrics != NULL)
        transport_set_metrics(e->net, e->metrics);
    if (e->metrics == NULL ||
        (cfg->alert_command != NULL &&
         (e->alerts = alert_create(cfg->alert_command, cfg->alert_max_running,
                                   cfg->alert_timeout_ms, e->metrics)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return e;
fail:
    engine_destroy(e);
    return NULL;
}

int engine_run_start(engine *e, char *err, size_t errlen)
{
    /* Recovery runs before the thread starts taking commands: every
     * unfinished saga is back in memory and its step re-sent at once. */
    int rc = 0;
    if (e->shared) {
        /* Recovery on a shared database is a takeover: this node's previous
         * life was fenced when it joined, so its sagas are claimable too. */
        int n;
        while ((n = store_claim_orphans(e->db, CLAIM_BATCH, eng_recover_claimed, e)) == CLAIM_BATCH)
            ;
        rc = n < 0 ? -1 : 0;
        e->next_renew_ms = util_mono_ms() + e->cfg->lease_ms / 3;
    } else {
        store_set_corrupt_row_handler(e->db, eng_recover_corrupt, e);
        rc = store_load_unfinished(e->db, eng_recover_one, e);
        store_set_corrupt_row_handler(e->db, NULL, NULL);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot load unfinished sagas: %s", store_errmsg(e->db));
        return -1;
    }
    size_t recovered = e->by_id.len;
    if (eng_finish_round(e) != 0) {
        snprintf(err, errlen, "stopped before the recovery round was committed");
        return -1;
    }
    if (recovered > 0)
        log_info("recovered %zu unfinished sagas", recovered);
    rc = nng_thread_create(&e->thread, engine_main, e);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the engine thread: %s", nng_strerror(rc));
        return -1;
    }
    return 0;
}

int engine_health(engine *e, char *why, size_t whylen)
{
    int sick = 1;
    nng_mtx_lock(e->mtx);
    if (e->stopping)
        snprintf(why, whylen, "sagad is stopping");
    else if (atomic_load(&e->store_unavailable))
        snprintf(why, whylen, "the store is unavailable: %s", e->store_unavailable_why);
    else
        sick = 0;
    nng_mtx_unlock(e->mtx);
    return sick;
}

void engine_stop(engine *e)
{
    if (e == NULL || e->thread == NULL)
        return;
    nng_mtx_lock(e->mtx);
    e->stopping = 1;
    nng_cv_wake(e->cv);
    nng_mtx_unlock(e->mtx);
    nng_thread_destroy(e->thread); /* joins */
    e->thread = NULL;
}

void engine_destroy(engine *e)
{
    if (e == NULL)
        return;
    engine_stop(e);
    /* Nothing more is written: hand the sagas over now rather than when the
     * lease runs out (store_node_leave). */
    if (e->shared && e->db != NULL && store_node_leave(e->db) != 0)
        log_warn("could not leave the database's nodes cleanly (%s): the other nodes take "
                 "this node's sagas over once its lease expires",
                 store_errmsg(e->db));
    atomic_store(&e->closing, 1);
    transport_destroy(e->net);
    /* Completions that were queued but never run: their calls died with the
     * transport; only the events remain to free. */
    for (event *ev = e->queue_head, *next; ev; ev = next) {
        next = ev->next;
        if (ev->kind != EV_CALL_DONE && ev->done)
            ev->done(ev->done_arg, ENGINE_INTERNAL,
                     "sagad is shutting down: nothing was done; retry once it is back", NULL, 0);
        event_free(ev);
    }
    for (size_t i = 0; i < e->by_id.cap; i++)
        saga_free(saga_table_slot(&e->by_id, i));
    saga_table_free(&e->by_id);
    saga_table_free(&e->by_key);
    free(e->timers.items);
    free(e->dirty.items);
    free(e->settled.items);
    free(e->sends.items);
    free(e->early.items);
    free(e->answers.items);
    free(e->history.items);
    eng_sched_abandon(e);
    free(e->sched_adds.items);
    free(e->fires.items);
    store_close(e->db);
    catalog_free(e->defs);
    alert_destroy(e->alerts, 2000);
    om_free(e->metrics);
    if (e->cv)
        nng_cv_free(e->cv);
    if (e->mtx)
        nng_mtx_free(e->mtx);
    free(e);
}

static void enqueue(engine *e, event *ev)
{
    nng_mtx_lock(e->mtx);
    if (atomic_load(&e->store_unavailable)) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "the store is unavailable (%s): nothing can be committed now; retry later",
                 e->store_unavailable_why);
        nng_mtx_unlock(e->mtx);
        ev->done(ev->done_arg, ENGINE_BUSY, msg, NULL, 0);
        event_free(ev);
        return;
    }
    if (e->stopping) {
        nng_mtx_unlock(e->mtx);
        ev->done(ev->done_arg, ENGINE_INTERNAL,
                 "sagad is shutting down: nothing was done; retry once it is back", NULL, 0);
        event_free(ev);
        return;
    }
    queue_append_locked(e, ev, ev);
    nng_mtx_unlock(e->mtx);
}

static event *command(enum event_kind kind, engine_done_fn done, void *arg)
{
    event *ev = calloc(1, sizeof *ev);
    if (ev == NULL) {
        done(arg, ENGINE_INTERNAL, "out of memory", NULL, 0);
        return NULL;
    }
    ev->kind = kind;
    ev->done = done;
    ev->done_arg = arg;
    return ev;
}

void engine_start_saga(engine *e, const char *type, const char *client_key, const kvmap *input,
                       engine_done_fn done, void *arg)
{
    engine_start_saga_opts(e, type, client_key, input, NULL, done, arg);
}

void engine_start_saga_opts(engine *e, const char *type, const char *client_key, const kvmap *input,
                            const engine_start_options *opts, engine_done_fn done, void *arg)
{
    event *ev = command(EV_START, done, arg);
    if (ev == NULL)
        return;
    if (opts != NULL) {
        ev->deadline_ms = opts->deadline_ms;
        ev->start_at_ms = opts->start_at_ms;
    }
    ev->type = util_strdup(type);
    ev->client_key = client_key && *client_key ? util_strdup(client_key) : NULL;
    if (ev->type == NULL || (client_key && *client_key && ev->client_key == NULL) ||
        kv_merge(&ev->input, input) != 0) {
        done(arg, ENGINE_INTERNAL, "out of memory", NULL, 0);
        event_free(ev);
        return;
    }
    enqueue(e, ev);
}

static void operator_command(engine *e, enum event_kind kind, const char *saga_id, const char *who,
                             const char *reason, engine_done_fn done, void *arg)
{
    event *ev = command(kind, done, arg);
    if (ev == NULL)
        return;
    snprintf(ev->saga_id, sizeof ev->saga_id, "%s", saga_id);
    ev->reason = reason && *reason ? util_strdup(reason) : NULL;
    ev->who = who && *who ? util_strdup(who) : NULL;
    if ((reason && *reason && ev->reason == NULL) || (who && *who && ev->who == NULL)) {
        done(arg, ENGINE_INTERNAL, "out of memory", NULL, 0);
        event_free(ev);
        return;
    }
    enqueue(e, ev);
}

void engine_abort_saga(engine *e, const char *saga_id, const char *who, const char *reason,
                       engine_done_fn done, void *arg)
{
    operator_command(e, EV_ABORT, saga_id, who, reason, done, arg);
}

void engine_cancel_start(engine *e, const char *saga_id, engine_done_fn done, void *arg)
{
    operator_command(e, EV_CANCEL, saga_id, NULL, NULL, done, arg);
}

void engine_resume_saga(engine *e, const char *saga_id, const char *who, const char *reason,
                        engine_done_fn done, void *arg)
{
    operator_command(e, EV_RESUME, saga_id, who, reason, done, arg);
}

void engine_reload(engine *e, engine_done_fn done, void *arg)
{
    event *ev = command(EV_RELOAD, done, arg);
    if (ev != NULL)
        enqueue(e, ev);
}

struct catalog *engine_catalog(engine *e)
{
    return e->defs;
}

void engine_get_counters(engine *e, engine_counters *out)
{
    out->in_flight = e->in_flight;
    out->steps_sent = e->steps_sent;
    out->retries = e->retries;
    out->timeouts = e->timeouts;
    out->replayed_replies = e->replayed;
    out->late_completions = e->late;
    out->commits = e->commits;
    out->committed_sagas = e->committed_sagas;
}

struct orch_metrics *engine_metrics(engine *e)
{
    return e->metrics;
}
