/*
 * store — durable saga state behind a narrow interface.
 *
 * The engine is the only writer: it batches the changes of many sagas into
 * one transaction (group commit) between store_begin and store_commit. The
 * admin server opens a second, read-only handle. Everything above this
 * interface is storage-agnostic, so a PostgreSQL backend (several
 * orchestrators on one database) can implement the same functions.
 *
 * SQLite implementation (store_sqlite.c): WAL journal, synchronous=FULL by
 * default so a committed change survives a power loss. Tables: sagas (one row
 * per saga, with its input as JSON and client key unique), saga_steps (one row
 * per step, with its idempotency keys, attempts, state, result JSON and last
 * error) and saga_history (append-only events). Schema and invariants are
 * documented at the top of store_sqlite.c.
 *
 * What every backend must keep of a saga (store_save_saga / store_load_saga),
 * beyond the obvious: saga.deadline_at_ms (written once, at insert; 0: none)
 * and, per step, step_run.started_at_ms and finished_at_ms (written with the
 * rest of the step). They came with steps at once (schema 3, no new function):
 * the deadline must survive a restart, and the times show which steps ran
 * together. Several steps of one saga may be ACTION_SENT or COMPENSATING at
 * once: nothing here may assume one step in flight per saga.
 *
 * Return convention: 0 success, STORE_NOT_FOUND where stated, -1 on a storage
 * error (store_errmsg says what). Out-pointers are only written on success.
 */
#ifndef SAGA_STORE_H
#define SAGA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "saga.h"

#define STORE_NOT_FOUND 1

typedef struct store store;

/* Opens (creating and migrating when writable) the database at path. */
store *store_open(const char *path, int durability_full, int read_only, char *err, size_t errlen);
void store_close(store *st);
const char *store_errmsg(store *st);

int store_begin(store *st);
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
} store_summary;
/* Newest first; state 0 = any, type NULL/"" = any, after_id: continue after it. */
int store_list(store *st, int state, const char *type, const char *after_id, uint32_t limit,
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

#endif
