/*
 * barrier — the participant runtime's own tables in the service's SQLite
 * database: idempotency records, the (saga_id, step, phase) barrier, the
 * persistent counters and the purge. Private to the runtime (batch.c and
 * participant.c call it); services never touch these tables.
 *
 * Schema (all names prefixed pt_, created at open if missing):
 *
 *   pt_idempotency   one row per answered-and-stored request
 *     idempotency_key TEXT UNIQUE   the request's key (primary lookup)
 *     saga_id, step, phase          what the key was used for
 *     operation                     the operation that ran (compensations
 *                                   check they undo this one)
 *     fingerprint BLOB              wire_request_fingerprint(), compared
 *                                   byte for byte
 *     outcome INTEGER               OK, REJECTED or SKIPPED (never RETRY or
 *                                   CONFLICT: those are not stored)
 *     reply BLOB                    the packed StepReply, replayed = false
 *     result TEXT                   the reply's result map as JSON (kv.h);
 *                                   a compensation's action_result
 *     created_at INTEGER            wall-clock ms; the purge deletes by it,
 *                                   looking at the oldest rows by rowid
 *                                   (insertion order), so no index is kept
 *
 *   pt_barrier       at most one row per (saga_id, step, phase)
 *     kind 'record'                 the phase has a stored record, owned by
 *                                   owner_key (a pt_idempotency key)
 *     kind 'fence'                  action phase only: a compensation came
 *                                   first; owner_key is its key
 *
 *   pt_meta          (name, value); 'schema' = 1: Outcome numbers of protocol 2
 *                    (OUTCOME_UNSPECIFIED = 0, OK = 1). A database without
 *                    it (protocol 1, OK = 0) has its stored outcomes and
 *                    replies renumbered once at open, in the same transaction
 *                    as the schema. (Not PRAGMA user_version: that belongs to
 *                    the service, whose database this is.)
 *
 *   pt_counters      (name, value): requests, effects, replays, conflicts,
 *                    skipped, rejected, purged; updated in the same
 *                    transaction as what they count, so they survive crashes
 *                    exactly as the effects do.
 *
 * Invariants:
 *   1. Every pt_barrier row is owned by exactly one pt_idempotency row
 *      (owner_key) and is deleted in the same transaction as its owner.
 *   2. A 'record' row for (s, t, p) exists iff a pt_idempotency row with
 *      that (saga_id, step, phase) exists: one stored key per phase.
 *   3. A compensation is stored only together with a barrier row for its
 *      action: the action's own record, or a fence it inserted. So an action
 *      that arrives after its compensation always finds a row.
 *   4. A hanging action turns the fence into its own 'record' row (taking
 *      ownership), so the fence lives at least as long as the fenced record.
 *   5. Rows are written only inside the caller's transaction; nothing here
 *      commits except barrier_open (schema) and barrier_purge (its own).
 *
 * Ownership: barrier_decision.stored_reply and .action_result belong to the
 * decision (barrier_decision_free). Nothing else returned here is allocated.
 * All functions return SQLite result codes unless stated otherwise.
 */
#ifndef SAGA_PT_BARRIER_H
#define SAGA_PT_BARRIER_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"
#include "wire.h"

typedef struct barrier_store barrier_store;

/* What identifies a request to the barrier; every pointer is borrowed. */
typedef struct {
    const char *key;
    const char *saga_id;
    const char *step;
    const char *operation;
    int phase;
    const uint8_t *fingerprint;
    size_t fingerprint_len;
} barrier_request;

typedef enum {
    BARRIER_RUN,      /* first delivery with nothing in the way: call the handler */
    BARRIER_REPLAY,   /* the key is stored with the same fingerprint */
    BARRIER_CONFLICT, /* key reused for another request, or another key for the phase */
    BARRIER_SKIP,     /* no effect by the barrier rules: store an OUTCOME_SKIPPED reply */
} barrier_verdict;

typedef struct {
    barrier_verdict verdict;
    /* SKIP of a compensation whose action never came: fence the action. */
    int fence_action;
    /* REPLAY: the stored packed reply (malloc'd, owned by the decision). */
    uint8_t *stored_reply;
    size_t stored_reply_len;
    /* RUN of a compensation: its action's result and operation. */
    kvmap action_result;
    char action_operation[WIRE_MAX_NAME + 1];
    /* CONFLICT and SKIP: the reason, for the reply's error. */
    char reason[160];
} barrier_decision;

/* Counters persisted in pt_counters (deltas of one transaction). */
typedef struct {
    uint64_t requests;
    uint64_t effects;
    uint64_t replays;
    uint64_t conflicts;
    uint64_t skipped;
    uint64_t rejected;
} barrier_counts;

/*
 * Opens path (creating it), sets WAL, synchronous FULL (OFF when
 * synchronous_off), a 2000 ms busy timeout, creates the pt_ tables and
 * prepares the statements. Returns 0, or -1 with a reason in err.
 */
int barrier_open(const char *path, int synchronous_off, barrier_store **out, char *err,
                 size_t errlen);
/* Finalizes everything and closes the connection. barrier_close(NULL) is a no-op. */
void barrier_close(barrier_store *s);
/* The connection (owned by the store). */
sqlite3 *barrier_db(barrier_store *s);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK of the batch transaction. */
int barrier_begin(barrier_store *s);
/* BEGIN IMMEDIATE for start-up work: waits up to a minute for the write
 * lock (another replica may be busy), polling every few ms. */
int barrier_begin_at_startup(barrier_store *s);
int barrier_commit(barrier_store *s);
/* Rolls back if a transaction is open; never fails from the caller's view. */
void barrier_rollback(barrier_store *s);

void barrier_decision_init(barrier_decision *d);
void barrier_decision_free(barrier_decision *d);

/* ---- The rules (barrier_rules.c): pure, shared by both backends ---------- */

typedef enum { BARRIER_ROW_NONE, BARRIER_ROW_RECORD, BARRIER_ROW_FENCE } barrier_row;

/*
 * What a backend has read for one request, in the order barrier_rules asks
 * for it. Pointers are borrowed from the backend's result and must stay valid
 * until barrier_rules has decided (it copies what the decision keeps).
 */
typedef struct {
    /* BARRIER_NEED_KEY: the record of r->key, if any. */
    int key_read, key_found;
    const void *fingerprint, *reply;
    size_t fingerprint_len, reply_len;
    /* BARRIER_NEED_ROWS: the pt_barrier rows of (r->saga_id, r->step), each given to
     * barrier_facts_row. */
    int rows_read;
    barrier_row own, other;             /* of r's phase, of the other phase */
    char own_owner[WIRE_MAX_KEY + 1];   /* r's phase's owner_key */
    char other_owner[WIRE_MAX_KEY + 1]; /* the other phase's owner_key */
    /* BARRIER_NEED_ACTION: the record of other_owner (outcome, operation, result). */
    int action_read, action_found, action_outcome;
    const char *action_operation, *action_result;
} barrier_facts;

/* barrier_rules' requests for more facts (never SQLite codes, which are >= 0). */
enum { BARRIER_NEED_KEY = -101, BARRIER_NEED_ROWS = -102, BARRIER_NEED_ACTION = -103 };

void barrier_facts_init(barrier_facts *f);
/* Adds one pt_barrier row of the step to f: SQLITE_OK, or SQLITE_CORRUPT for a bad owner. */
int barrier_facts_row(barrier_facts *f, const barrier_request *r, int phase, const char *kind,
                      const char *owner);
/*
 * Applies the idempotency and barrier rules to r with what f holds. Returns
 * SQLITE_OK with d filled; a BARRIER_NEED_* (read that, set its *_read flag,
 * call again); SQLITE_BUSY when r's own key was recorded between the reads
 * (a replica on PostgreSQL: answer RETRY, the redelivery replays);
 * SQLITE_NOMEM; or SQLITE_CORRUPT when the tables break the invariants above
 * (logged).
 */
int barrier_rules(const barrier_request *r, const barrier_facts *f, barrier_decision *d);

/*
 * barrier_rules on this SQLite store's tables. Fills d. Returns SQLITE_OK,
 * an SQLite error, or SQLITE_CORRUPT (logged).
 */
int barrier_decide(barrier_store *s, const barrier_request *r, barrier_decision *d);
/*
 * Stores the record of r: its reply (packed, replayed = false), the result
 * JSON, and its barrier row; with fence_action, also the action's fence.
 */
int barrier_store_record(barrier_store *s, const barrier_request *r, int outcome,
                         const uint8_t *reply, size_t reply_len, const char *result_json,
                         int fence_action, int64_t now_ms);
/* Adds the deltas to pt_counters. */
int barrier_counts_add(barrier_store *s, const barrier_counts *c);
/*
 * In its own IMMEDIATE transaction: of the limit oldest records by
 * insertion order, deletes those created before cutoff_ms with the barrier
 * rows they own, and adds the count to pt_counters. Sets *purged (limit:
 * more may be due). Returns an SQLite code.
 */
int barrier_purge(barrier_store *s, int64_t cutoff_ms, int limit, int *purged);

#endif
