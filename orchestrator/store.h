/*
 * store — durable saga state behind a narrow interface.
 *
 * The engine is the only writer of its handle: it batches the changes of many
 * sagas into one transaction (group commit) between store_begin and
 * store_commit. The admin server opens a second, read-only handle.
 * Everything above this interface is storage-agnostic.
 *
 * Two implementations, chosen by store_open from the `database` setting:
 *   - a path: SQLite (store_sqlite.c), one node. WAL journal,
 *     synchronous=FULL by default so a committed change survives a power loss.
 *   - a postgresql:// (or postgres://) libpq URI: PostgreSQL (store_pg.c),
 *     where several sagad nodes share one database. Each node holds a lease
 *     (store_node_join / store_node_renew) and owns the sagas it started or
 *     claimed; every write of a round is conditional on that ownership and
 *     on the lease (fencing), so a round of a node that lost either is
 *     refused whole (store_commit returns STORE_REJECTED) and nothing of it
 *     is acted on. docs/SCALE-OUT.md tells the protocol.
 * Tables in both: sagas (one row per saga, with its input as JSON and client
 * key unique), saga_steps (one row per step, with its idempotency keys,
 * attempts, state, result JSON and last error), saga_history (append-only
 * events), saga_definitions and scheduled_starts (starts waiting for their
 * time, "Scheduled starts" below). Schemas and invariants are documented at
 * the top of each implementation.
 *
 * What every backend must keep of a saga (store_save_saga / store_load_saga),
 * beyond the obvious: saga.deadline_at_ms (written once, at insert; 0: none)
 * and, per step, step_run.started_at_ms and finished_at_ms (written with the
 * rest of the step). They came with steps at once (schema 3, no new function):
 * the deadline must survive a restart, and the times show which steps ran
 * together. saga.root_cause (SQLite schema 4, PostgreSQL schema 2, each a
 * migration of its own) is written with last_error, both at insert and at
 * every update of the row: the first error must survive a restart apart
 * from the latest. Several steps of one saga may be ACTION_SENT or
 * COMPENSATING at once: nothing here may assume one step in flight per saga.
 *
 * Return convention: 0 success, STORE_NOT_FOUND or STORE_REJECTED where
 * stated, -1 on a storage error (store_errmsg says what). Out-pointers are
 * only written on success.
 */
#ifndef SAGA_STORE_H
#define SAGA_STORE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"
#include "saga.h"

#define STORE_NOT_FOUND 1
#define STORE_REJECTED  2 /* store_commit: refused by ownership rules (store_rejection) */

typedef struct store store;

/* Whether `database` names a PostgreSQL database (a libpq URI) rather than a
 * SQLite file, and how it is shown (without a password): db_url.h. */
/* Opens (creating and migrating when writable) the database: a SQLite path,
 * or a postgresql:// URI (a writable PostgreSQL handle waits, with backoff
 * and a log line per try, while the server does not answer; it fails at once
 * when the server refuses it: wrong credentials, no such database). */
store *store_open(const char *database, int durability_full, int read_only, char *err,
                  size_t errlen);
void store_close(store *st);
/* Makes the waits of store_open and store_node_join end (with an error) once
 * *flag is set: sagad passes its stop flag, set by SIGTERM. */
void store_set_interrupt(volatile sig_atomic_t *flag);
const char *store_errmsg(store *st);
/* "sqlite" or "postgresql". */
const char *store_backend_name(const store *st);

int store_begin(store *st);
/* 0, -1, or STORE_REJECTED (shared databases only): the round broke an
 * ownership rule and was rolled back whole; store_rejection says which. */
int store_commit(store *st);
void store_rollback(store *st);

/* Writes what s->dirty / s->dirty_steps say changed (insert when
 * SAGA_DIRTY_NEW). Does not clear the flags: the engine does after commit. */
int store_save_saga(store *st, const saga *s);
int store_append_history(store *st, const char *saga_id, int64_t at_ms, const saga_event *ev,
                         const char *step_name);

/* The saga started with this client key: its id into id_out. */
int store_find_client_key(store *st, const char *client_key, char id_out[37]);

/* Loads one saga (any state); *out is the caller's to saga_free. Its def is
 * NULL and its def_version the stored one: the caller binds the definition
 * (catalog_bind). STORE_NOT_FOUND if no such id. */
int store_load_saga(store *st, const char *id, saga **out);
/* Calls fn for each saga in RUNNING or COMPENSATING, oldest first; fn takes
 * ownership of s (loaded as by store_load_saga). A non-zero return from fn
 * stops the walk and is returned. */
int store_load_unfinished(store *st, int (*fn)(saga *s, void *arg), void *arg);

typedef struct {
    const char *saga_id;
    const char *type;
    int state;
    int64_t created_at_ms;
    int64_t updated_at_ms;
    const char *last_error; /* may be NULL */
    const char *root_cause; /* may be NULL */
    const char *client_key; /* may be NULL */
} store_summary;
/* Newest first; state 0 = any, type NULL/"" = any, after_id: continue after it. */
int store_list(store *st, int state, const char *type, const char *after_id, uint32_t limit,
               int (*fn)(const store_summary *row, void *arg), void *arg);
/* What an operator searches sagas by (sagactl list --key/--since/--until,
 * status PREFIX): every field optional (0, NULL or ""), all ANDed. */
typedef struct {
    int state;
    const char *type;
    const char *after_id;  /* continue after this saga, as store_list */
    uint32_t limit;        /* 0: no limit */
    const char *id_prefix; /* lowercase hex digits and '-' (the form of ids) */
    const char *client_key;
    int64_t created_after_ms;  /* > 0: created at or after */
    int64_t created_before_ms; /* > 0: created before */
    /* Internal: set by store_search from id_prefix. */
    const char *id_prefix_end;
} store_search_filter;
/* Like store_list, with the filters of f; newest first. A scan of the sagas
 * from the newest down that the limit stops: an operator's query, not a hot
 * path (no index serves the combinations). */
int store_search(store *st, const store_search_filter *f,
                 int (*fn)(const store_summary *row, void *arg), void *arg);

typedef struct {
    uint64_t seq;
    int64_t at_ms;
    const char *kind;
    const char *step; /* "" for saga-level events */
    int phase;
    uint32_t attempt;
    int outcome; /* OUTCOME_UNSPECIFIED: none */
    int replayed;
    const char *detail;
} store_event;
int store_history(store *st, const char *saga_id, int (*fn)(const store_event *ev, void *arg),
                  void *arg);
/* counts[state] for states 1..5 (index 0 unused). */
int store_count_by_state(store *st, uint64_t counts[6]);
/* *ms = the smallest created_at_ms of the sagas in state (1..5), 0 when there
 * is none: the age of the oldest stuck saga without walking them all. */
int store_oldest_created(store *st, int state, int64_t *ms);

/*
 * Definition versions (table saga_definitions: each version of each saga
 * type once, with its canonical text and its SHA-256; see catalog.h).
 * Strings of a store_definition handed to a callback live until it returns.
 */
typedef struct {
    const char *type;
    uint32_t version; /* 1, 2, ... per type */
    const char *hash; /* SHA-256 of text, hex */
    const char *text; /* config_saga_canonical() */
    int64_t loaded_at_ms;
} store_definition;
/* The version of type whose text has this hash, or STORE_NOT_FOUND. */
int store_definition_version(store *st, const char *type, const char *hash, uint32_t *version);
/* The highest version of type into *version, 0 when it has none. */
int store_definition_max(store *st, const char *type, uint32_t *version);
int store_definition_add(store *st, const store_definition *d);
/* Calls fn with version `version` of type (its return is returned), or STORE_NOT_FOUND. */
int store_definition_get(store *st, const char *type, uint32_t version,
                         int (*fn)(const store_definition *d, void *arg), void *arg);
/* Calls fn for every stored version, by type then version; stops at a non-zero return. */
int store_definitions(store *st, int (*fn)(const store_definition *d, void *arg), void *arg);
/* Calls fn with the number of unfinished sagas (RUNNING, COMPENSATING, FAILED) per type,
 * version and state. */
int store_count_by_version(store *st,
                           int (*fn)(const char *type, uint32_t version, int state, uint64_t n,
                                     void *arg),
                           void *arg);
/* Pins every saga of type stored before versions existed (def_version 0) to version. */
int store_pin_unversioned(store *st, const char *type, uint32_t version);
/* ---- Resilience (README "When the store fails") ---- */

/* After a -1: whether the failure may pass by itself (a lock held by another
 * process, a full disk): the same writes can be retried. */
int store_error_is_transient(const store *st);
/* After a -1 from store_load_saga: the row exists but cannot be decoded
 * (corrupt values, unreadable JSON), as opposed to a storage error. */
int store_error_is_corrupt_row(const store *st);
/* Makes store_load_unfinished hand each unreadable row to fn (its id and
 * why) and go on, instead of failing the walk; fn's non-zero return stops it. */
void store_set_corrupt_row_handler(store *st,
                                   int (*fn)(const char *saga_id, const char *why, void *arg),
                                   void *arg);
/* Marks the saga FAILED with why as its last_error (and a saga_quarantined
 * history event) without reading its row: for rows that cannot be loaded. */
int store_quarantine_saga(store *st, const char *saga_id, const char *why, int64_t now_ms);
/* Deletes, in one transaction, up to batch COMPLETED/COMPENSATED sagas last
 * updated before cutoff_ms, with their steps and history; *purged = how many. */
int store_purge_finished(store *st, int64_t cutoff_ms, int batch, uint64_t *purged);

/* ---- Several nodes on one database (docs/SCALE-OUT.md) ----
 * On SQLite there is one node: joining and renewing always succeed, there is
 * never anything to claim, and nothing is ever rejected. */

/* 1 when other sagad nodes may share the database (PostgreSQL). */
int store_is_shared(const store *st);
/* Registers this node under node_name with a lease of lease_ms (database
 * time), waiting while a live node holds that name. From then on every round
 * of this handle is fenced by the lease. */
int store_node_join(store *st, const char *node_name, int64_t lease_ms);
/* Renews the lease: 0; STORE_REJECTED when it was lost (it expired and
 * another node fenced this one): the caller drops every saga it holds and
 * joins again; -1 on a storage error. */
int store_node_renew(store *st);
/* A clean stop: this node fences itself (as F2 would once its lease
 * expired), so that the other nodes claim its unfinished sagas at their next
 * pass instead of a lease later, and a restart under the same name joins at
 * once. Nothing may be written through this handle afterwards. 0 or -1. */
int store_node_leave(store *st);
/* Fences every node whose lease has expired, then claims, in one
 * transaction, up to max unfinished (RUNNING, COMPENSATING) sagas owned by a
 * fenced node or by an earlier life of any node, oldest first. fn gets each
 * claimed id once the claim is committed; its non-zero return stops the
 * calls (the rest stay claimed: the caller must load them). Returns how many
 * were claimed, or -1. */
int store_claim_orphans(store *st, uint32_t max, int (*fn)(const char *saga_id, void *arg),
                        void *arg);
/* Takes one saga over for an operator's command, whoever owns it (its owner's
 * next write for it is rejected): 0, STORE_NOT_FOUND when no such saga, -1. */
int store_claim_saga(store *st, const char *saga_id);

/* ---- Scheduled starts (sagactl start --at / --in) ----
 *
 * A start asked for a later time is a row of scheduled_starts, not a saga:
 * no saga row, no step, no state of saga.h exists before it fires, so the
 * state machine is untouched and a saga is RUNNING from its first row on.
 * The row carries the id the saga will have, its type, client key, input,
 * due time (start_at_ms) and the start's own deadline.
 *
 * Invariants (both backends; the engine relies on them):
 *   S1. A scheduled start and a saga never both exist for one id: firing
 *       deletes the row (store_schedule_fire) in the very transaction that
 *       inserts the saga (store_save_saga), so a crash leaves the row (it
 *       fires again, once) or the saga (it is recovered), never both, never
 *       neither.
 *   S2. A row is written at once, whole, and never updated but for its
 *       claim and retry_at_ms (below): what sagactl was told is what fires.
 *   S3. A client key is held by at most one row, or by one saga, never
 *       both (but the saga the row fires, of its own id), and
 *       store_schedule_get finds it, so the engine answers a repeat with
 *       the scheduled start. One node: the engine checks both before it
 *       writes. Several nodes: the inserts serialize on the key and each
 *       checks the other table (store_pg.c F6), so whichever start, now or
 *       scheduled, committed first holds the key, and the other's round is
 *       refused (STORE_REJECT_KEY_TAKEN).
 *   S4. Shared database: a row fires only on the node that claimed it
 *       (store_schedule_due: claimed in a committed UPDATE ... FOR UPDATE
 *       SKIP LOCKED, taken over only from a fenced node or an earlier life),
 *       and its delete in the firing round is conditional on that claim
 *       (F5-like): a start cancelled or claimed away meanwhile refuses the
 *       round (STORE_REJECT_NOT_OWNER naming its id), so it fires at most
 *       once, and by S1 at least once.
 */
typedef struct {
    char id[37];         /* the id of the saga it starts */
    char *type;          /* the saga type, as asked */
    char *client_key;    /* NULL: none */
    kvmap input;         /* checked against the type when scheduled, and again when it fires */
    int64_t start_at_ms; /* wall clock: due then */
    int64_t deadline_ms; /* > 0: the start's own deadline, counted from when it fires */
    int64_t created_at_ms;
    int64_t retry_at_ms; /* not fired before this (it could not start: unknown type); 0 */
} store_schedule;
/* Frees what s holds (not s itself); s is zeroed. */
void store_schedule_clear(store_schedule *s);
/* In a round: inserts the row (a new id). On a shared database a client
 * key another node's saga or scheduled start holds refuses the round at
 * commit (STORE_REJECT_KEY_TAKEN naming s->id). */
int store_schedule_add(store *st, const store_schedule *s);
/* In a round, with the saga's insert: deletes the row (S1, S4). */
int store_schedule_fire(store *st, const char *id);
/* Outside a round: the starts due at now_ms (start_at_ms and retry_at_ms
 * past), earliest first, at most max; fn borrows each (a non-zero return
 * stops the walk and is returned). On a shared database each is claimed for
 * this node first, in its own committed transaction (S4). */
int store_schedule_due(store *st, int64_t now_ms, uint32_t max,
                       int (*fn)(const store_schedule *s, void *arg), void *arg);
/* Outside a round, committed at once: a start that cannot fire now is not
 * tried again before retry_at_ms. id NULL: every start postponed so far
 * (retry_at_ms > 0), which the engine does with 0 when the saga files are
 * reloaded, as the type a start lacked may be back. */
int store_schedule_postpone(store *st, const char *id, int64_t retry_at_ms);
/* Outside a round, committed at once: deletes the row, whoever claimed it.
 * 0, or STORE_NOT_FOUND when there is none (it fired, or never was). */
int store_schedule_cancel(store *st, const char *id);
/* The row with this id (client_key NULL) or this client key (id NULL) into
 * *out (the caller clears it), or STORE_NOT_FOUND. */
int store_schedule_get(store *st, const char *id, const char *client_key, store_schedule *out);
/* Newest first (by id: ids are time-ordered), continuing after after_id
 * (NULL or "": from the newest), type NULL/"" = any. */
int store_schedule_list(store *st, const char *type, const char *after_id, uint32_t limit,
                        int (*fn)(const store_schedule *s, void *arg), void *arg);
/* How many starts wait. */
int store_schedule_count(store *st, uint64_t *n);

enum store_rejection {
    STORE_REJECT_NONE = 0,
    STORE_REJECT_LEASE_LOST, /* this node's lease expired and it was fenced */
    STORE_REJECT_NOT_OWNER,  /* another node claimed the saga */
    STORE_REJECT_KEY_TAKEN,  /* another node started a saga with the client key */
    /* The connection died after the round was sent: it may have committed or
     * not. Only the database knows what is true now. */
    STORE_REJECT_OUTCOME_UNKNOWN,
};
/* After STORE_REJECTED: why, and the saga concerned (*saga_id, valid until the
 * next call on st; NULL for STORE_REJECT_LEASE_LOST and _OUTCOME_UNKNOWN). */
enum store_rejection store_rejection(const store *st, const char **saga_id);

#endif
