/*
 * barrier_rules — the idempotency and barrier rules of barrier.h as one pure
 * function, barrier_rules(), shared by both backends (barrier.c on SQLite,
 * store_pg.c on PostgreSQL). It does no I/O: a backend reads the facts the
 * rules ask for (the key's record, then the step's barrier rows, then the
 * action's record) and calls it again until it decides, so a rule changes
 * here and nowhere else, and each backend reads only what the decision needs
 * (a replay costs one lookup, a first action two).
 *
 * Invariants it relies on and checks (barrier.h): at most one barrier row per
 * (saga_id, step, phase); a fence only on the action phase; a 'record' row's
 * owner has a pt_idempotency row. A violation is SQLITE_CORRUPT, logged.
 */
#include "barrier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wire.h"

void barrier_decision_init(barrier_decision *d)
{
    memset(d, 0, sizeof *d);
    d->verdict = BARRIER_RUN;
}

void barrier_decision_free(barrier_decision *d)
{
    free(d->stored_reply);
    d->stored_reply = NULL;
    kv_free(&d->action_result);
}

void barrier_facts_init(barrier_facts *f)
{
    memset(f, 0, sizeof *f);
}

int barrier_facts_row(barrier_facts *f, const barrier_request *r, int phase, const char *kind,
                      const char *owner)
{
    barrier_row row = kind && strcmp(kind, "fence") == 0 ? BARRIER_ROW_FENCE : BARRIER_ROW_RECORD;
    if (owner == NULL || strlen(owner) > WIRE_MAX_KEY) {
        log_error("pt_barrier: bad owner key for saga %s step %s", r->saga_id, r->step);
        return SQLITE_CORRUPT;
    }
    if (phase == r->phase) {
        f->own = row;
        strcpy(f->own_owner, owner);
    } else {
        f->other = row;
        strcpy(f->other_owner, owner);
    }
    return SQLITE_OK;
}

/* Step 1: the key is stored: the same request replays, another one conflicts. */
static int rule_key(const barrier_request *r, const barrier_facts *f, barrier_decision *d)
{
    if (f->fingerprint_len == 0 || f->fingerprint_len != r->fingerprint_len ||
        memcmp(f->fingerprint, r->fingerprint, f->fingerprint_len) != 0) {
        d->verdict = BARRIER_CONFLICT;
        snprintf(d->reason, sizeof d->reason, "idempotency key reused with a different request");
        return SQLITE_OK;
    }
    d->stored_reply = malloc(f->reply_len ? f->reply_len : 1);
    if (d->stored_reply == NULL)
        return SQLITE_NOMEM;
    if (f->reply_len)
        memcpy(d->stored_reply, f->reply, f->reply_len);
    d->stored_reply_len = f->reply_len;
    d->verdict = BARRIER_REPLAY;
    return SQLITE_OK;
}

/* Step 3: a compensation after a recorded action: RUN after OK, SKIP after no effect. */
static int rule_action_record(const barrier_request *r, const barrier_facts *f, barrier_decision *d)
{
    if (!f->action_found) {
        log_error("pt_barrier: action of saga %s step %s has a barrier row but no record",
                  r->saga_id, r->step);
        return SQLITE_CORRUPT;
    }
    if (f->action_outcome != OUTCOME_OK) {
        d->verdict = BARRIER_SKIP;
        snprintf(d->reason, sizeof d->reason, "action had no effect (%s): nothing to compensate",
                 wire_outcome_name(f->action_outcome));
        return SQLITE_OK;
    }
    if (f->action_operation == NULL || strlen(f->action_operation) > WIRE_MAX_NAME ||
        f->action_result == NULL || kv_from_json(&d->action_result, f->action_result) != 0) {
        log_error("pt_idempotency: unreadable action record for saga %s step %s", r->saga_id,
                  r->step);
        return SQLITE_CORRUPT;
    }
    strcpy(d->action_operation, f->action_operation);
    d->verdict = BARRIER_RUN;
    return SQLITE_OK;
}

int barrier_rules(const barrier_request *r, const barrier_facts *f, barrier_decision *d)
{
    if (!f->key_read)
        return BARRIER_NEED_KEY;
    if (f->key_found)
        return rule_key(r, f, d);
    if (!f->rows_read)
        return BARRIER_NEED_ROWS;

    /* Step 2: the barrier rows of (saga_id, step). */
    if (f->own == BARRIER_ROW_RECORD && strcmp(f->own_owner, r->key) == 0) {
        /*
         * This very key, recorded between the key's lookup and this read: a
         * replica committed it meanwhile (PostgreSQL, READ COMMITTED: each
         * statement sees what committed before it). Not a conflict: RETRY,
         * whose redelivery finds the record and replays it. (On SQLite the
         * batch holds the write lock, so this cannot happen there.)
         */
        log_warn("pt_barrier: key %s was recorded concurrently: RETRY", r->key);
        return SQLITE_BUSY;
    }
    if (f->own == BARRIER_ROW_RECORD) {
        d->verdict = BARRIER_CONFLICT;
        snprintf(d->reason, sizeof d->reason,
                 "%s of this saga step is already recorded under another idempotency key",
                 wire_phase_name(r->phase));
        return SQLITE_OK;
    }
    if (r->phase == PHASE_ACTION) {
        if (f->own == BARRIER_ROW_FENCE || f->other != BARRIER_ROW_NONE) {
            d->verdict = BARRIER_SKIP;
            snprintf(d->reason, sizeof d->reason,
                     "action fenced: its compensation was processed first");
        } else {
            d->verdict = BARRIER_RUN;
        }
        return SQLITE_OK;
    }
    if (f->own == BARRIER_ROW_FENCE) { /* excluded by the CHECK constraint */
        log_error("pt_barrier: fence on a compensation of saga %s step %s", r->saga_id, r->step);
        return SQLITE_CORRUPT;
    }
    if (f->other == BARRIER_ROW_NONE) {
        d->verdict = BARRIER_SKIP;
        d->fence_action = 1;
        snprintf(d->reason, sizeof d->reason,
                 "action never ran here: nothing to compensate (action fenced)");
        return SQLITE_OK;
    }
    if (f->other == BARRIER_ROW_FENCE) {
        d->verdict = BARRIER_SKIP;
        snprintf(d->reason, sizeof d->reason, "action already fenced: nothing to compensate");
        return SQLITE_OK;
    }
    if (!f->action_read)
        return BARRIER_NEED_ACTION;
    return rule_action_record(r, f, d);
}
