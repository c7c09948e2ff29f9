/*
 * engine_nodes — what a sagad node does because other nodes share its
 * database (docs/SCALE-OUT.md): its lease, taking over the sagas of nodes
 * whose lease expired, and rounds the database refused for breaking a
 * fencing rule (store_pg.c states rules F1-F6).
 *
 * Invariants, on top of engine.c's:
 *   1. Nothing of a round leaves the process unless the lease is surely held
 *      (eng_lease_check_before_acting): a paused node asks the database
 *      before sending.
 *   2. A saga another node owns now, or may own, leaves memory with every
 *      trace of it in the current round (forget_saga): no send, no history,
 *      no answer saying it went well.
 *   3. A node that lost its lease, or cannot tell whether its last commit
 *      landed, drops every saga and joins again with a new epoch: the
 *      database is the truth, and its sagas are claimed back from it.
 */
#include <stdio.h>
#include <string.h>

#include "engine_internal.h"
#include "log.h"

/* Removes every entry of this round that belongs to s (its writes, history
 * and settlement), then s itself from memory, and frees it. Replies to its
 * requests in flight find no saga and are ignored as late; its queued sends
 * find no saga and are skipped. */
static void forget_saga(engine *e, saga *s)
{
    size_t j = 0;
    for (size_t i = 0; i < e->dirty.len; i++)
        if (e->dirty.items[i] != s)
            e->dirty.items[j++] = e->dirty.items[i];
    e->dirty.len = j;
    j = 0;
    for (size_t i = 0; i < e->settled.len; i++)
        if (e->settled.items[i] != s)
            e->settled.items[j++] = e->settled.items[i];
    e->settled.len = j;
    j = 0;
    for (size_t i = 0; i < e->history.len; i++) {
        pending_history *h = &e->history.items[i];
        if (strcmp(h->saga_id, s->id) == 0) {
            free(h->saga_id);
            free(h->detail);
            free(h->step_name);
        } else {
            e->history.items[j++] = *h;
        }
    }
    e->history.len = j;
    eng_timer_cancel(e, s);
    eng_sched_forget(e, s->id);
    saga_table_del(&e->by_id, s->id);
    if (s->client_key)
        saga_table_del(&e->by_key, s->client_key);
    e->in_flight = e->by_id.len;
    om_set_in_flight(e->metrics, e->by_id.len);
    saga_free(s);
}

/* Rewrites the round's answers about saga_id (all of them when NULL) that
 * would have said it went well. */
static void refuse_answers(engine *e, const char *saga_id, int status, const char *why)
{
    for (size_t i = 0; i < e->answers.len; i++) {
        pending_answer *a = &e->answers.items[i];
        if (a->status != ENGINE_OK || (saga_id != NULL && strcmp(a->saga_id, saga_id) != 0))
            continue;
        a->status = status;
        a->existing = 0;
        free(a->error);
        a->error = util_strdup(why);
        if (saga_id == NULL)
            a->saga_id[0] = '\0';
    }
}

/* This node's lease is gone: another node fenced it and may run any of its
 * sagas now. Nothing of the round is acted on, every saga leaves memory (the
 * database is the truth; the other nodes, or this one after joining again,
 * claim them), and the node joins again with a new epoch. It never exits. */
static void lease_lost(engine *e)
{
    size_t n = e->by_id.len;
    const char *none;
    if (store_rejection(e->db, &none) != STORE_REJECT_OUTCOME_UNKNOWN)
        log_error("node '%s' lost its database lease (paused or cut off longer than lease_ms = "
                  "%lld): its %zu sagas in memory are dropped, another node (or this one) resumes "
                  "them from the database; nothing of the current round is sent or acknowledged",
                  e->cfg->node_name, (long long)e->cfg->lease_ms, n);
    for (size_t i = 0; i < e->by_id.cap; i++) {
        saga *s = saga_table_slot(&e->by_id, i);
        if (s != NULL)
            forget_saga(e, s); /* deleting the slot walked is safe (saga_table.h) */
    }
    e->sends.len = 0;
    eng_sched_abandon(e);
    refuse_answers(e, NULL, ENGINE_BUSY,
                   "this sagad node lost its database lease before the command was committed; "
                   "retry (a start with the same client key is safe to repeat)");
    om_on_lease_lost(e->metrics);
    while (store_node_join(e->db, e->cfg->node_name, e->cfg->lease_ms) != 0) {
        log_warn("joining again as node '%s': %s; retrying in 1 s", e->cfg->node_name,
                 store_errmsg(e->db));
        if (eng_wait_unless_stopping(e, 1000))
            return;
    }
    e->lease_sure_until_ms = util_mono_ms();
    e->next_renew_ms = e->lease_sure_until_ms; /* renewed at once: sure again */
    e->next_claim_ms = e->lease_sure_until_ms;
}

/* Another node reserved this one's client key first, for a saga or a
 * scheduled start (store_pg.c F6): the start is answered as a repeat of that
 * one (or a conflict, as in handle_start), never dropped unanswered. */
static void key_taken(engine *e, saga *s)
{
    char winner[37] = "", msg[300];
    saga *other = NULL;
    store_schedule twin = {0};
    const char *type = NULL, *what = "saga";
    const kvmap *input = NULL;
    /* The scheduled start first: firing moves a key from it to a saga in
     * one commit, never back, so read in this order a key held all along is
     * found in one place or the other. */
    int rc = store_schedule_get(e->db, NULL, s->client_key, &twin);
    if (rc == 0) {
        memcpy(winner, twin.id, sizeof winner);
        type = twin.type;
        input = &twin.input;
        what = "scheduled start";
    } else if (rc == STORE_NOT_FOUND &&
               (rc = store_find_client_key(e->db, s->client_key, winner)) == 0 &&
               (rc = store_load_saga(e->db, winner, &other)) == 0) {
        type = other->type;
        input = &other->input;
    }
    for (size_t i = 0; i < e->answers.len; i++) {
        pending_answer *a = &e->answers.items[i];
        if (strcmp(a->saga_id, s->id) != 0 || a->status != ENGINE_OK)
            continue;
        free(a->error);
        a->error = NULL;
        if (type == NULL) {
            /* Gone again (cancelled, purged) or unreadable: the client's
             * retry with the same key is safe and finds out. */
            snprintf(msg, sizeof msg,
                     "client key taken by another node's start, which cannot be read now: "
                     "%s; retry",
                     rc < 0 ? store_errmsg(e->db) : "it is gone again");
            a->status = ENGINE_BUSY;
            a->error = util_strdup(msg);
            a->saga_id[0] = '\0';
        } else if (strcmp(type, s->type) == 0 && kv_equal(input, &s->input)) {
            snprintf(a->saga_id, sizeof a->saga_id, "%s", winner);
            a->existing = 1;
        } else {
            a->status = ENGINE_CONFLICT;
            a->error = util_strdup(
                strcmp(what, "saga") == 0
                    ? "client key already used for a saga with another type or input"
                    : "client key already used for a scheduled start with another type or input");
            snprintf(a->saga_id, sizeof a->saga_id, "%s", winner);
        }
    }
    log_info("saga %s not started: client key taken by %s %s on another node", s->id, what,
             type != NULL ? winner : "(unreadable)");
    saga_free(other);
    store_schedule_clear(&twin);
    forget_saga(e, s);
}

/* store_commit refused the round (store.h, STORE_REJECTED): the saga that
 * broke a rule leaves it (or every saga, when the lease is gone) and the
 * caller writes the rest again. */
void eng_on_rejected(engine *e)
{
    const char *id;
    enum store_rejection why = store_rejection(e->db, &id);
    if (id != NULL && eng_sched_rejected(e, why, id))
        return;
    saga *s = id ? saga_table_get(&e->by_id, id) : NULL;
    switch (why) {
    case STORE_REJECT_KEY_TAKEN:
        if (s != NULL) {
            key_taken(e, s);
            return;
        }
        break;
    case STORE_REJECT_NOT_OWNER:
        if (s != NULL && eng_sched_fire_refused(e, s->id)) {
            forget_saga(e, s);
            return;
        }
        if (s != NULL) {
            log_warn("saga %s was taken over by another node: dropped here, nothing of it is sent "
                     "from this node",
                     s->id);
            refuse_answers(e, s->id, ENGINE_BUSY,
                           "the saga was taken over by another sagad node meanwhile; retry");
            forget_saga(e, s);
            return;
        }
        break;
    case STORE_REJECT_LEASE_LOST:
        lease_lost(e);
        return;
    case STORE_REJECT_OUTCOME_UNKNOWN:
        /* Memory may be ahead of the database or behind it. Starting clean
         * is what a restart would do, without the restart: joining again
         * (lease_lost) fences this node's previous life, so its sagas are
         * claimed back, this node included, from what was committed. */
        log_error("the connection to the database died during a commit: whether the round "
                  "(%zu sagas) committed is unknown, so the sagas are reloaded from the database",
                  e->dirty.len);
        lease_lost(e);
        return;
    case STORE_REJECT_NONE:
        break;
    }
    /* A rejection this engine cannot place would loop forever: treat it as
     * the loss of the lease, which drops everything and starts clean. */
    log_error("round refused (%s) for a saga not in memory: starting clean", store_errmsg(e->db));
    lease_lost(e);
}

/* Before anything of a round leaves the process, the lease must surely be
 * held: a node that was paused (SIGSTOP, a stalled VM) longer than its lease
 * checks with the database before sending, so it never acts for sagas that
 * another node may have claimed meanwhile. 0 to go on; -1: the lease is lost
 * (everything was dropped). */
int eng_lease_check_before_acting(engine *e)
{
    if (!e->shared || util_mono_ms() < e->lease_sure_until_ms)
        return 0;
    int64_t asked = util_mono_ms();
    int rc = store_node_renew(e->db);
    if (rc == 0) {
        e->lease_sure_until_ms = asked + e->cfg->lease_ms;
        return 0;
    }
    if (rc == STORE_REJECTED) {
        lease_lost(e);
        return -1;
    }
    /* Cannot tell (the database does not answer): hold the sends back; the
     * next round tries again, and a rejection then drops them. */
    log_warn("cannot confirm the lease before sending (%s): the round's requests wait",
             store_errmsg(e->db));
    return -1;
}

/* Renews the lease every third of it (docs/SCALE-OUT.md). 0, or -1 when the
 * engine must stop (it was stopping while joining again). */
int eng_renew_lease(engine *e)
{
    int64_t now = util_mono_ms();
    if (now < e->next_renew_ms)
        return 0;
    e->next_renew_ms = now + e->cfg->lease_ms / 3;
    int rc = store_node_renew(e->db);
    if (rc == 0) {
        e->lease_sure_until_ms = now + e->cfg->lease_ms;
        if (e->renew_failing)
            log_info("lease renewed again");
        e->renew_failing = 0;
        return 0;
    }
    if (rc == STORE_REJECTED) {
        lease_lost(e);
        return eng_finish_round(e); /* the refused commands are answered */
    }
    if (!e->renew_failing++)
        log_warn("cannot renew the lease of node '%s': %s; other nodes take its sagas over once "
                 "it expires",
                 e->cfg->node_name, store_errmsg(e->db));
    e->next_renew_ms = now + 200;
    return 0;
}

/* A saga just claimed from the database: loaded and resumed like at
 * recovery (its in-flight step re-sent with the same key). */
int eng_recover_claimed(const char *saga_id, void *arg)
{
    engine *e = arg;
    saga *s = NULL;
    int rc = store_load_saga(e->db, saga_id, &s);
    if (rc == STORE_NOT_FOUND)
        return 0;
    if (rc != 0 && store_error_is_corrupt_row(e->db))
        return eng_recover_corrupt(saga_id, store_errmsg(e->db), e);
    if (rc != 0) {
        log_error("claimed saga %s cannot be loaded: %s; it stays claimed and is taken again "
                  "when this node joins anew",
                  saga_id, store_errmsg(e->db));
        return 0;
    }
    if (s->state != SAGA_RUNNING && s->state != SAGA_COMPENSATING) {
        saga_free(s);
        return 0;
    }
    return eng_recover_one(s, e);
}

/* Claims the sagas of fenced nodes and resumes them: one batch per pass,
 * passes every quarter of a lease (at most a second apart), and at once
 * again while batches come back full. */
int eng_take_over_some(engine *e)
{
    int64_t now = util_mono_ms();
    if (now < e->next_claim_ms || atomic_load(&e->store_unavailable))
        return 0;
    int64_t every = e->cfg->lease_ms / 4 < 1000 ? e->cfg->lease_ms / 4 : 1000;
    e->next_claim_ms = now + every;
    size_t before = e->by_id.len;
    int n = store_claim_orphans(e->db, CLAIM_BATCH, eng_recover_claimed, e);
    if (n < 0) {
        log_warn("takeover pass: %s", store_errmsg(e->db));
        return 0;
    }
    if (n == 0)
        return 0;
    log_info("took over %d sagas of nodes whose lease expired", n);
    om_on_taken_over(e->metrics, (uint64_t)(e->by_id.len - before));
    if (n == CLAIM_BATCH)
        e->next_claim_ms = now;
    return eng_finish_round(e);
}
