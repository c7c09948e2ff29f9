/*
 * store_sqlite — the SQLite implementation of store.h.
 *
 * Responsibility: keep every saga, its steps and its history durably on disk,
 * and rebuild saga structs from them after a restart. One writable handle (the
 * engine thread, which batches a whole round into one transaction: group
 * commit) and any number of read-only handles (the admin server) share the
 * file through WAL, so readers never block the writer nor see half a round.
 *
 * Schema (version 4, PRAGMA user_version; PRAGMA application_id = 'SAGA'):
 *
 *   sagas        one row per saga. seq is the rowid: it orders sagas by
 *                insertion (= creation) and is the stable paging key of
 *                store_list (newest first, "continue after id"). id is the
 *                UUID (version 7: time-ordered, so its index grows at the
 *                right edge; see util_uuid7_at) and is UNIQUE; client_key
 *                is unique among the sagas that have one (a partial UNIQUE
 *                index over the non-NULL keys: any number of sagas may have
 *                none, at no index cost).
 *                input is the kv_to_json text of the saga's input. n_steps is
 *                the number of saga_steps rows. def_version is the version of
 *                its type's definition it runs on (saga_definitions); 0 for a
 *                saga stored by a sagad before versions existed, until
 *                store_pin_unversioned pins it (sagad does at start, to the
 *                definition its files then hold: docs/CONFIG.md).
 *                deadline_at_ms is the wall clock at which a saga still
 *                RUNNING compensates (saga.h), 0 for none; written once at
 *                insert, like created_at_ms.
 *                root_cause (schema 4) is the first error of the saga, NULL
 *                while it has none (saga.h "Errors"); last_error the latest.
 *   saga_definitions  each version of each saga type once: (type, version)
 *                the key, 1, 2, ... per type; text is its canonical text
 *                (config_saga_canonical), hash the SHA-256 of text, UNIQUE per
 *                type (the same text is always the same version). Rows are
 *                only ever inserted: a saga can always find the version it
 *                started on.
 *   saga_steps   one row per (saga_id, idx), idx 0..n_steps-1, WITHOUT ROWID so
 *                a saga's steps are contiguous in one b-tree. name,
 *                participant, action, compensation (NULL: none) and the two
 *                idempotency keys (saga_step_key(); compensation_key NULL when
 *                there is no compensation) are copied from the definition at
 *                insert so an operator reading the database sees exactly what
 *                was sent, even after the configuration changed. result is
 *                kv_to_json text, NULL when the map is empty.
 *                started_at_ms and finished_at_ms: when the step's first
 *                action request was sent and when its action was answered
 *                for good (wall clock; 0: not yet).
 *   saga_history append-only. seq is the rowid: global, so it increases
 *                within every saga too (a new rowid is above every existing
 *                one, and a saga's events are never deleted while it lives).
 *                The index on saga_id (SQLite appends the rowid to each
 *                entry, so it is ordered by (saga_id, seq)) reads a saga's
 *                events in order. step is the step name, NULL for saga-level
 *                events. See "Choices" for why not (saga_id, seq) WITHOUT
 *                ROWID with seq 1, 2, 3 per saga.
 *
 *   scheduled_starts  one row per start waiting for its time (store.h,
 *                invariants S1-S4), WITHOUT ROWID keyed by the id the saga
 *                will have, so a listing by id is by scheduling time. input
 *                is kv_to_json text; client_key is UNIQUE (NULLs apart), and
 *                unique with the sagas' keys because the one engine checks
 *                both before it schedules or starts (S3). Indexed by
 *                start_at_ms for the due walk.
 *
 *   Indexes: sagas(type) WHERE def_version = 0 (sagas_unpinned, empty once
 *   pinned); sagas(state) for listing and counting by state (rowid follows
 *   the key, so "state = ? ORDER BY seq DESC" needs no sort); sagas(type) for
 *   listing by type; a partial index on seq WHERE state IN (RUNNING,
 *   COMPENSATING) so recovery walks only unfinished sagas, oldest first,
 *   however many finished ones there are.
 *
 * Invariants (CHECK constraints and deferred foreign keys enforce what SQL
 * can; the load path re-checks what would otherwise corrupt memory):
 *   1. Every saga_steps and saga_history row belongs to a sagas row (foreign
 *      keys, checked at COMMIT so a round may append history before it saves
 *      a new saga).
 *   2. A saga has exactly n_steps step rows, idx 0..n_steps-1, n_steps <= 64.
 *   3. id, type, client_key, input, created_at_ms, deadline_at_ms, n_steps,
 *      def_version and all of a step's definition columns and keys are
 *      written once, at insert, and never updated (def_version 0 alone is pinned once, by
 *      store_pin_unversioned): the UPDATE statements do not name them, which
 *      also spares the client_key and type indexes any work on the hot path.
 *   4. States are the saga.h enum values (sagas.state 1..5, step state 0..5).
 *   5. History seq is strictly increasing per saga (and globally).
 *   6. A read-only handle refuses a database whose schema is not exactly the
 *      one it knows; a writable one creates version 1 in an empty file and
 *      refuses any newer version (migrations[] upgrades older ones).
 *
 * Choices:
 *   - Every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT)
 *     and all values are bound; nothing is ever built as SQL text at run time.
 *     Bound strings are SQLITE_STATIC (no copy): they live until the step,
 *     and bindings are cleared right after, so no statement keeps a pointer.
 *   - History layout, measured on this machine (WAL, synchronous=OFF, rounds
 *     of 1000 appends, sagas with 20 events each progressing 500-1000 at a
 *     time, 0.4 M and 2 M appends): a rowid table plus an index on saga_id
 *     appends 20-35 % faster than a (saga_id, seq) WITHOUT ROWID table with
 *     seq = max(seq) + 1 computed in the INSERT (the max seek itself costs
 *     ~5 %; the rest is wide rows inserted at random places, saga ids being
 *     random (v4) UUIDs then, against one narrow random index entry plus an
 *     append; ids are time-ordered v7 now, which favours both layouts).
 *     The clustered table reads a saga's history 1.5-2x faster, but appends
 *     are the hot path (several per step) and reads are an operator's query.
 *   - Foreign keys are declared DEFERRABLE INITIALLY DEFERRED and enforced
 *     (PRAGMA foreign_keys on the writer): a history row or step row for a
 *     saga that does not exist fails the COMMIT instead of leaving an orphan.
 *   - synchronous=FULL (durability_full) fsyncs the WAL at every commit: a
 *     committed round survives power loss. OFF is for benchmarks only.
 *   - BEGIN IMMEDIATE on the writer: the write lock is taken at the start of
 *     the round, so a commit never fails on a lock upgrade.
 *   - A failed COMMIT is rolled back here, so the handle is never left inside
 *     a transaction the engine believes is finished.
 *   - Checkpoints run on a thread of their own (common/wal_checkpointer.h,
 *     started and stopped with the writable handle), not inside the COMMIT
 *     that crossed SQLite's autocheckpoint threshold: inline, with random
 *     (v4) UUID keys in a large database, they took 25-30 ms per 1000-frame
 *     checkpoint at 200,000 finished sagas, a fifth of the engine thread's
 *     time. Durability is unchanged; the log stays bounded (about 32 MiB).
 *
 * Threads: a handle must be used by one thread at a time (the cached
 * statements are per handle); a writable one also owns its checkpointer
 * thread, which touches nothing but its own connection. Callbacks of
 * store_list, store_history and store_count_by_state run while their
 * statement is active: they must not use the same handle.
 * store_load_unfinished's callback may (it holds no statement open while fn
 * runs).
 */
#include "store_backend.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db_files.h"
#include "log.h"
#include "util.h"
#include "wal_batch_vfs.h"
#include "wal_checkpointer.h"
#include "wire.h"

#define STORE_SCHEMA_VERSION  6
#define STORE_APPLICATION_ID  0x53414741 /* "SAGA" = 1396787009 */
#define STORE_BUSY_TIMEOUT_MS 5000
/* Sagas the recovery walk reads per query (see store_load_unfinished). */
#define STORE_RECOVERY_BATCH 256

_Static_assert(SAGA_MAX_STEPS <= 64, "dirty_steps is a 64-bit mask and the schema allows 64 steps");

/* ---- Schema and migrations --------------------------------------------- */

/* migrations[v] upgrades a database from user_version v to v + 1 and ends by
 * setting user_version to v + 1 (PRAGMA takes no parameters, so the number is
 * written out). migrate() runs them all in one transaction: a crash leaves the
 * old schema or the new one, never half of one. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE sagas ("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE CHECK (length(id) BETWEEN 1 AND 36),"
    "  type TEXT NOT NULL,"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 5),"
    "  failed_phase INTEGER NOT NULL,"
    "  client_key TEXT,"
    "  input TEXT NOT NULL,"
    "  cursor INTEGER NOT NULL CHECK (cursor >= 0),"
    "  n_steps INTEGER NOT NULL CHECK (n_steps BETWEEN 0 AND 64),"
    "  last_error TEXT,"
    "  created_at_ms INTEGER NOT NULL,"
    "  updated_at_ms INTEGER NOT NULL"
    ") STRICT;"
    /* Partial: sagas started without a key cost no index entry. */
    "CREATE UNIQUE INDEX sagas_by_client_key ON sagas(client_key) WHERE client_key IS NOT NULL;"
    "CREATE INDEX sagas_by_state ON sagas(state);"
    "CREATE INDEX sagas_by_type ON sagas(type);"
    "CREATE INDEX sagas_unfinished ON sagas(seq) WHERE state IN (1, 2);"
    "CREATE TABLE saga_steps ("
    "  saga_id TEXT NOT NULL REFERENCES sagas(id) ON DELETE CASCADE"
    "    DEFERRABLE INITIALLY DEFERRED,"
    "  idx INTEGER NOT NULL CHECK (idx BETWEEN 0 AND 63),"
    "  name TEXT NOT NULL,"
    "  participant TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  compensation TEXT,"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 5),"
    "  action_key TEXT NOT NULL,"
    "  compensation_key TEXT,"
    "  action_attempts INTEGER NOT NULL CHECK (action_attempts >= 0),"
    "  compensation_attempts INTEGER NOT NULL CHECK (compensation_attempts >= 0),"
    "  last_outcome INTEGER NOT NULL,"
    "  result TEXT,"
    "  last_error TEXT,"
    "  next_attempt_at_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (saga_id, idx)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE saga_history ("
    "  seq INTEGER PRIMARY KEY,"
    "  saga_id TEXT NOT NULL REFERENCES sagas(id) ON DELETE CASCADE"
    "    DEFERRABLE INITIALLY DEFERRED,"
    "  at_ms INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  step TEXT,"
    "  phase INTEGER NOT NULL,"
    "  attempt INTEGER NOT NULL CHECK (attempt >= 0),"
    "  outcome INTEGER NOT NULL,"
    "  replayed INTEGER NOT NULL,"
    "  detail TEXT"
    ") STRICT;"
    /* Every index entry ends with the rowid: this one is (saga_id, seq). */
    "CREATE INDEX saga_history_by_saga ON saga_history(saga_id);"
    "PRAGMA application_id = 1396787009;" /* STORE_APPLICATION_ID */
    "PRAGMA user_version = 1;",
    /* 1 -> 2: definition versions. Sagas stored before have def_version 0
     * (unpinned) until store_pin_unversioned pins them; the partial index
     * makes that a walk over the unpinned ones only, none after the first
     * start. */
    "CREATE TABLE saga_definitions ("
    "  type TEXT NOT NULL,"
    "  version INTEGER NOT NULL CHECK (version >= 1),"
    "  hash TEXT NOT NULL CHECK (length(hash) = 64),"
    "  text TEXT NOT NULL,"
    "  loaded_at_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (type, version),"
    "  UNIQUE (type, hash)"
    ") STRICT;"
    "ALTER TABLE sagas ADD COLUMN def_version INTEGER NOT NULL DEFAULT 0"
    "  CHECK (def_version >= 0);"
    "CREATE INDEX sagas_unpinned ON sagas(type) WHERE def_version = 0;"
    /* Protocol 2 numbers Outcome from OUTCOME_UNSPECIFIED = 0 (OK was 0, now 1);
     * "no reply yet" was stored as -1 and is UNSPECIFIED now: +1 maps both. */
    "UPDATE saga_steps SET last_outcome = last_outcome + 1;"
    "UPDATE saga_history SET outcome = outcome + 1;"
    "PRAGMA user_version = 2;",
    /* 2 -> 3: saga deadlines (deadline_s, sagactl start --deadline). Sagas
     * stored before have none. */
    "ALTER TABLE sagas ADD COLUMN deadline_at_ms INTEGER NOT NULL DEFAULT 0"
    "  CHECK (deadline_at_ms >= 0);"
    /* ... and when each step's action started and was answered (0: not yet;
     * steps stored before have 0). */
    "ALTER TABLE saga_steps ADD COLUMN started_at_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE saga_steps ADD COLUMN finished_at_ms INTEGER NOT NULL DEFAULT 0;"
    "PRAGMA user_version = 3;",
    /* 3 -> 4: scheduled starts (store.h "Scheduled starts"). A table of its
     * own: nothing of the sagas tables changes. */
    "CREATE TABLE scheduled_starts ("
    "  id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 36),"
    "  type TEXT NOT NULL,"
    "  client_key TEXT UNIQUE,"
    "  input TEXT NOT NULL,"
    "  start_at_ms INTEGER NOT NULL,"
    "  deadline_ms INTEGER NOT NULL CHECK (deadline_ms >= 0),"
    "  created_at_ms INTEGER NOT NULL,"
    "  retry_at_ms INTEGER NOT NULL DEFAULT 0"
    ") STRICT, WITHOUT ROWID;"
    "CREATE INDEX scheduled_starts_due ON scheduled_starts(start_at_ms);"
    "PRAGMA user_version = 4;",
    /* 4 -> 5: root_cause, the first cause of trouble (saga.h "Errors"). The
     * best known for sagas stored before is their last error; a COMPLETED
     * one (after a resume) keeps it there only, as a new one would. */
    "ALTER TABLE sagas ADD COLUMN root_cause TEXT;"
    "UPDATE sagas SET root_cause = last_error WHERE last_error IS NOT NULL;"
    "UPDATE sagas SET last_error = NULL WHERE state = 3;"
    "PRAGMA user_version = 5;",
    /* 5 -> 6: nothing changes in the tables, but what they mean: a RUNNING
     * saga's PENDING step may have been sent (an early send, saga.h "Early
     * sends"), which only a sagad that owns such steps up may recover. The
     * number keeps an older sagad from opening the database. */
    "PRAGMA user_version = 6;",
};

/* ---- Statements ---------------------------------------------------------- */

enum stmt_id {
    /* Reads: prepared on every handle. */
    Q_BEGIN_READ,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_SAGA_BY_ID,
    Q_STEPS_OF,
    Q_UNFINISHED,
    Q_CLIENT_KEY,
    Q_SEQ_OF_ID,
    Q_LIST_ANY,
    Q_LIST_STATE,
    Q_LIST_TYPE,
    Q_LIST_STATE_TYPE,
    Q_SEARCH,
    Q_HISTORY,
    Q_COUNT,
    Q_OLDEST_CREATED,
    Q_DEF_BY_HASH,
    Q_DEF_MAX,
    Q_DEF_GET,
    Q_DEF_ALL,
    Q_COUNT_BY_VERSION,
    Q_SCHED_BY_ID,
    Q_SCHED_BY_KEY,
    Q_SCHED_DUE,
    Q_SCHED_LIST,
    Q_SCHED_COUNT,
    N_READ_STMTS,
    /* Writes: prepared on writable handles only. */
    Q_BEGIN_WRITE = N_READ_STMTS,
    Q_SAGA_INSERT,
    Q_SAGA_UPDATE,
    Q_STEP_INSERT,
    Q_STEP_UPDATE,
    Q_HISTORY_INSERT,
    Q_DEF_INSERT,
    Q_PIN_UNVERSIONED,
    Q_SCHED_INSERT,
    Q_SCHED_DELETE,
    Q_SCHED_POSTPONE,
    N_STMTS
};

/* The columns every saga read selects, in this order (see read_saga). */
#define SAGA_COLUMNS                                                                               \
    "id, type, state, failed_phase, client_key, input, cursor, n_steps, last_error, "              \
    "created_at_ms, updated_at_ms, def_version, deadline_at_ms, root_cause"

#define LIST_COLUMNS                                                                               \
    "id, type, state, created_at_ms, updated_at_ms, last_error, root_cause, client_key"

/* The columns of a scheduled start, in this order (see read_schedule). */
#define SCHED_COLUMNS                                                                              \
    "id, type, client_key, input, start_at_ms, deadline_ms, created_at_ms, retry_at_ms"

static const char *const stmt_sql[N_STMTS] = {
    [Q_BEGIN_READ] = "BEGIN DEFERRED",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_SAGA_BY_ID] = "SELECT " SAGA_COLUMNS " FROM sagas WHERE id = ?1",
    [Q_STEPS_OF] = "SELECT idx, name, state, action_attempts, compensation_attempts, "
                   "last_outcome, result, last_error, next_attempt_at_ms, started_at_ms, "
                   "finished_at_ms FROM saga_steps WHERE saga_id = ?1 ORDER BY idx",
    /* Without statistics the planner prefers sagas_by_state plus a sort of
     * every unfinished saga per batch; INDEXED BY makes each batch a range
     * scan (and a missing index an error at open, not a slow recovery). The
     * WHERE term repeats the partial index's own term, as SQLite requires. */
    [Q_UNFINISHED] = "SELECT seq, id FROM sagas INDEXED BY sagas_unfinished "
                     "WHERE state IN (1, 2) AND seq > ?1 ORDER BY seq LIMIT ?2",
    [Q_CLIENT_KEY] = "SELECT id FROM sagas WHERE client_key = ?1",
    [Q_SEQ_OF_ID] = "SELECT seq FROM sagas WHERE id = ?1",
    [Q_LIST_ANY] = "SELECT " LIST_COLUMNS " FROM sagas WHERE seq < ?1 "
                   "ORDER BY seq DESC LIMIT ?2",
    [Q_LIST_STATE] = "SELECT " LIST_COLUMNS " FROM sagas WHERE state = ?3 AND seq < ?1 "
                     "ORDER BY seq DESC LIMIT ?2",
    [Q_LIST_TYPE] = "SELECT " LIST_COLUMNS " FROM sagas WHERE type = ?3 AND seq < ?1 "
                    "ORDER BY seq DESC LIMIT ?2",
    [Q_LIST_STATE_TYPE] = "SELECT " LIST_COLUMNS " FROM sagas "
                          "WHERE state = ?3 AND type = ?4 AND seq < ?1 "
                          "ORDER BY seq DESC LIMIT ?2",
    /* store_search: every filter optional (0 or ''); a scan from the newest
     * down, stopped by the limit. The id prefix is a range of the id index's
     * order (BINARY collation): [?6, ?7). */
    [Q_SEARCH] = "SELECT " LIST_COLUMNS " FROM sagas WHERE seq < ?1 "
                 "AND (?3 = 0 OR state = ?3) AND (?4 = '' OR type = ?4) "
                 "AND (?5 = '' OR client_key = ?5) AND (?6 = '' OR (id >= ?6 AND id < ?7)) "
                 "AND (?8 = 0 OR created_at_ms >= ?8) AND (?9 = 0 OR created_at_ms < ?9) "
                 "ORDER BY seq DESC LIMIT ?2",
    [Q_HISTORY] = "SELECT seq, at_ms, kind, step, phase, attempt, outcome, replayed, detail "
                  "FROM saga_history WHERE saga_id = ?1 ORDER BY seq",
    [Q_COUNT] = "SELECT state, count(*) FROM sagas GROUP BY state",
    [Q_OLDEST_CREATED] = "SELECT coalesce(min(created_at_ms), 0) FROM sagas WHERE state = ?1",
    [Q_DEF_BY_HASH] = "SELECT version FROM saga_definitions WHERE type = ?1 AND hash = ?2",
    [Q_DEF_MAX] = "SELECT max(version) FROM saga_definitions WHERE type = ?1",
    [Q_DEF_GET] = "SELECT type, version, hash, text, loaded_at_ms FROM saga_definitions "
                  "WHERE type = ?1 AND version = ?2",
    [Q_DEF_ALL] = "SELECT type, version, hash, text, loaded_at_ms FROM saga_definitions "
                  "ORDER BY type, version",
    /* Unfinished sagas only (FAILED ones too: a resume continues on their
     * version): sagas_by_state reads just those. */
    [Q_COUNT_BY_VERSION] = "SELECT type, def_version, state, count(*) FROM sagas "
                           "WHERE state IN (1, 2, 5) GROUP BY type, def_version, state",
    [Q_SCHED_BY_ID] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts WHERE id = ?1",
    [Q_SCHED_BY_KEY] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts WHERE client_key = ?1",
    [Q_SCHED_DUE] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts WHERE start_at_ms <= ?1 "
                    "AND retry_at_ms <= ?1 ORDER BY start_at_ms LIMIT ?2",
    /* ?1: continue below this id ('' : from the newest); ?2 type ('' any). */
    [Q_SCHED_LIST] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts "
                     "WHERE (?1 = '' OR id < ?1) AND (?2 = '' OR type = ?2) "
                     "ORDER BY id DESC LIMIT ?3",
    [Q_SCHED_COUNT] = "SELECT count(*) FROM scheduled_starts",
    [Q_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [Q_SAGA_INSERT] = "INSERT INTO sagas (id, type, state, failed_phase, client_key, input, "
                      "cursor, n_steps, last_error, created_at_ms, updated_at_ms, def_version, "
                      "deadline_at_ms, root_cause) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [Q_SAGA_UPDATE] = "UPDATE sagas SET state = ?2, failed_phase = ?3, cursor = ?4, "
                      "last_error = ?5, updated_at_ms = ?6, root_cause = ?7 WHERE id = ?1",
    [Q_STEP_INSERT] = "INSERT INTO saga_steps (saga_id, idx, name, participant, action, "
                      "compensation, state, action_key, compensation_key, action_attempts, "
                      "compensation_attempts, last_outcome, result, last_error, "
                      "next_attempt_at_ms, started_at_ms, finished_at_ms) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                      "?16, ?17)",
    [Q_STEP_UPDATE] = "UPDATE saga_steps SET state = ?3, action_attempts = ?4, "
                      "compensation_attempts = ?5, last_outcome = ?6, result = ?7, "
                      "last_error = ?8, next_attempt_at_ms = ?9, started_at_ms = ?10, "
                      "finished_at_ms = ?11 WHERE saga_id = ?1 AND idx = ?2",
    [Q_HISTORY_INSERT] = "INSERT INTO saga_history (saga_id, at_ms, kind, step, phase, attempt, "
                         "outcome, replayed, detail) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [Q_DEF_INSERT] = "INSERT INTO saga_definitions (type, version, hash, text, loaded_at_ms) "
                     "VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_PIN_UNVERSIONED] = "UPDATE sagas INDEXED BY sagas_unpinned SET def_version = ?2 "
                          "WHERE type = ?1 AND def_version = 0",
    [Q_SCHED_INSERT] = "INSERT INTO scheduled_starts (" SCHED_COLUMNS ") "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [Q_SCHED_DELETE] = "DELETE FROM scheduled_starts WHERE id = ?1",
    /* ?1 NULL: every postponed start (store_schedule_postpone). */
    [Q_SCHED_POSTPONE] = "UPDATE scheduled_starts SET retry_at_ms = ?2 WHERE id = ?1 OR "
                         "(?1 IS NULL AND retry_at_ms > 0)",
};

typedef struct sq_store sq_store;
struct sq_store {
    store base; /* first: the handle store.c dispatches on */
    sqlite3 *db;
    int read_only;
    int in_txn; /* between a successful store_begin and its commit or rollback */
    sqlite3_stmt *stmt[N_STMTS];
    wal_checkpointer *ckpt; /* writable handles only */
    char err[512];
    /* What the last failure was, for store_error_is_transient and
     * store_error_is_corrupt_row: SQLite's extended code and errno. */
    int last_code, last_errno;
    int corrupt_row; /* the last failure was an unreadable row, not the storage */
    int (*on_corrupt)(const char *saga_id, const char *why, void *arg);
    void *on_corrupt_arg;
};

/* ---- Errors -------------------------------------------------------------- */

static void set_err(sq_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(sq_store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
}

/* Records "<what>: <SQLite's message> (code)" and returns -1. */
static int db_fail(sq_store *st, const char *what, const char *saga_id)
{
    int code = sqlite3_extended_errcode(st->db);
    st->last_code = code;
    st->last_errno = sqlite3_system_errno(st->db);
    st->corrupt_row = 0;
    if (saga_id != NULL)
        set_err(st, "%s %s: %s (%d)", what, saga_id, sqlite3_errmsg(st->db), code);
    else
        set_err(st, "%s: %s (%d)", what, sqlite3_errmsg(st->db), code);
    return -1;
}

static const char *sq_errmsg(store *base)
{
    sq_store *st = (sq_store *)base;
    if (st == NULL)
        return "no store";
    return st->err[0] ? st->err : "no error";
}

/* ---- Statement helpers ----------------------------------------------------- */

/* Makes q reusable and drops every binding (bound strings are SQLITE_STATIC and
 * may be freed by the caller right after). */
static void finish(sqlite3_stmt *q)
{
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
}

/* Binds s, or NULL when s is NULL. */
static int bind_text(sqlite3_stmt *q, int i, const char *s)
{
    if (s == NULL)
        return sqlite3_bind_null(q, i);
    return sqlite3_bind_text(q, i, s, -1, SQLITE_STATIC);
}

/* Steps a statement that returns no rows and finishes it: 0 or -1. */
static int run(sq_store *st, sqlite3_stmt *q, const char *what, const char *saga_id)
{
    int rc = sqlite3_step(q);
    int ret = rc == SQLITE_DONE ? 0 : db_fail(st, what, saga_id);
    finish(q);
    return ret;
}

/* A malloc'd copy of column i into *out (NULL for an SQL NULL): 0, or -1 when
 * out of memory. */
static int column_dup(sqlite3_stmt *q, int i, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(q, i) == SQLITE_NULL)
        return 0;
    const unsigned char *text = sqlite3_column_text(q, i);
    if (text == NULL)
        return -1; /* SQLite could not allocate the text form */
    *out = util_strdup((const char *)text);
    return *out == NULL ? -1 : 0;
}

/* Column i as text; "" for NULL (and for the out-of-memory case, which the
 * callers of this helper only display). Valid until the next step. */
static const char *column_text_or_empty(sqlite3_stmt *q, int i)
{
    const unsigned char *text = sqlite3_column_text(q, i);
    return text ? (const char *)text : "";
}

static const char *column_text_or_null(sqlite3_stmt *q, int i)
{
    if (sqlite3_column_type(q, i) == SQLITE_NULL)
        return NULL;
    return column_text_or_empty(q, i);
}

/* ---- Open, close, migrate ----------------------------------------------------- */

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 0 : -1;
}

/* Creates or upgrades the schema of a writable handle. */
static int migrate(sq_store *st)
{
    int64_t version, app_id;
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(st, "begin migration", NULL);
    /* Read under the write lock: a concurrent opener cannot migrate twice. */
    if (pragma_int(st->db, "PRAGMA user_version", &version) != 0 ||
        pragma_int(st->db, "PRAGMA application_id", &app_id) != 0) {
        db_fail(st, "read schema version", NULL);
        goto fail;
    }
    if (version > 0 && app_id != STORE_APPLICATION_ID) {
        set_err(st, "not a sagad database (application_id %" PRId64 ")", app_id);
        goto fail;
    }
    if (version > STORE_SCHEMA_VERSION) {
        set_err(st, "database schema version %" PRId64 " is newer than this sagad's (%d)", version,
                STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int64_t v = version; v < STORE_SCHEMA_VERSION; v++) {
        if (sqlite3_exec(st->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK) {
            db_fail(st, "migrate schema", NULL);
            goto fail;
        }
    }
    int64_t now_version = -1;
    if (version < STORE_SCHEMA_VERSION &&
        (pragma_int(st->db, "PRAGMA user_version", &now_version) != 0 ||
         now_version != STORE_SCHEMA_VERSION)) {
        set_err(st, "migration left schema version %" PRId64 ", not %d", now_version,
                STORE_SCHEMA_VERSION);
        goto fail;
    }
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(st, "commit migration", NULL);
        goto fail;
    }
    if (version == 0)
        log_info("store: created schema version %d", STORE_SCHEMA_VERSION);
    else if (version < STORE_SCHEMA_VERSION)
        log_info("store: schema upgraded from version %" PRId64 " to %d", version,
                 STORE_SCHEMA_VERSION);
    return 0;
fail:
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* A read-only handle cannot migrate: it accepts only the current schema. */
static int check_schema(sq_store *st)
{
    int64_t version, app_id;
    if (pragma_int(st->db, "PRAGMA user_version", &version) != 0 ||
        pragma_int(st->db, "PRAGMA application_id", &app_id) != 0)
        return db_fail(st, "read schema version", NULL);
    if (version == 0) {
        set_err(st, "database has no sagad schema yet (sagad creates it)");
        return -1;
    }
    if (app_id != STORE_APPLICATION_ID) {
        set_err(st, "not a sagad database (application_id %" PRId64 ")", app_id);
        return -1;
    }
    if (version != STORE_SCHEMA_VERSION) {
        set_err(st, "database schema version %" PRId64 ", this program knows %d", version,
                STORE_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

static int configure_writer(sq_store *st, int durability_full)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &q, NULL) != SQLITE_OK)
        return db_fail(st, "set journal_mode", NULL);
    int rc = sqlite3_step(q);
    int wal =
        rc == SQLITE_ROW && sqlite3_stricmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
    sqlite3_finalize(q);
    if (!wal) {
        if (rc != SQLITE_ROW)
            return db_fail(st, "set journal_mode", NULL);
        set_err(st, "cannot switch the database to WAL mode");
        return -1;
    }
    /* In WAL mode FULL syncs the log at every commit; OFF never syncs. */
    const char *sync = durability_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = OFF";
    if (sqlite3_exec(st->db, sync, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(st->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK ||
        /* 32 MiB of page cache: the working set of sagas in flight. */
        sqlite3_exec(st->db, "PRAGMA cache_size = -32768", NULL, NULL, NULL) != SQLITE_OK ||
        /* Truncate the WAL back to 64 MiB after a checkpoint. */
        sqlite3_exec(st->db, "PRAGMA journal_size_limit = 67108864", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(st, "configure database", NULL);
    return 0;
}

static void sq_close(store *base);

store *store_sqlite_open(const char *path, int durability_full, int read_only, char *err,
                         size_t errlen)
{
    sq_store *st = calloc(1, sizeof *st);
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->base.be = &store_sqlite_backend;
    st->read_only = read_only;
    /* The files are private and nobody holds a lock that would stall the
     * open (db_files.h); checked again once the -wal and -shm exist. */
    if (dbf_before_open("database", path, !read_only, err, errlen) != 0) {
        free(st);
        return NULL;
    }
    int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                DBF_SQLITE_OPEN_FLAGS;
    /* A writer that syncs each commit writes each commit's log with one
     * system call (wal_batch_vfs.h); it must sync each commit to use it. */
    const char *vfs = !read_only && durability_full ? wal_batch_vfs() : NULL;
    if (sqlite3_open_v2(path, &st->db, flags, vfs) != SQLITE_OK) {
        if (st->db == NULL)
            set_err(st, "out of memory");
        else
            db_fail(st, "open", NULL);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    if (read_only) {
        if (check_schema(st) != 0)
            goto fail;
    } else if (configure_writer(st, durability_full) != 0 || migrate(st) != 0) {
        goto fail;
    } else {
        char why[300];
        st->ckpt = wal_checkpointer_start(st->db, path, durability_full, "store", why, sizeof why);
        if (st->ckpt == NULL) {
            set_err(st, "%s", why);
            goto fail;
        }
    }
    /* The -wal and -shm this open created or found. */
    if (dbf_check_private("database", path, err, errlen) != 0) {
        sq_close(&st->base);
        return NULL;
    }
    int n = read_only ? N_READ_STMTS : N_STMTS;
    for (int i = 0; i < n; i++) {
        if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                               NULL) != SQLITE_OK) {
            db_fail(st, "prepare", NULL);
            goto fail;
        }
    }
    return &st->base;
fail:
    if (err != NULL && errlen > 0) {
        /* A lock another process holds is the usual reason for "database is
         * locked" here: name it. */
        char locks[1024];
        dbf_describe_lock_holders(path, locks, sizeof locks);
        snprintf(err, errlen, "%s: %s%s%s", path, st->err, locks[0] ? "; " : "", locks);
    }
    sq_close(&st->base);
    return NULL;
}

static void sq_close(store *base)
{
    sq_store *st = (sq_store *)base;
    if (st == NULL)
        return;
    wal_checkpointer_stop(st->ckpt); /* first: the writer's close is then the last one */
    for (int i = 0; i < N_STMTS; i++)
        sqlite3_finalize(st->stmt[i]); /* no-op on NULL */
    if (st->db != NULL && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    if (sqlite3_close(st->db) != SQLITE_OK)
        log_error("store: close: %s", sqlite3_errmsg(st->db));
    free(st);
}

/* ---- Transactions ------------------------------------------------------------ */

static int sq_begin(store *base)
{
    sq_store *st = (sq_store *)base;
    if (run(st, st->stmt[st->read_only ? Q_BEGIN_READ : Q_BEGIN_WRITE], "begin", NULL) != 0)
        return -1;
    st->in_txn = 1;
    wal_checkpointer_writing(st->ckpt); /* NULL on a read-only handle */
    return 0;
}

static int sq_commit(store *base)
{
    sq_store *st = (sq_store *)base;
    st->in_txn = 0;
    if (run(st, st->stmt[Q_COMMIT], "commit", NULL) == 0)
        return 0;
    /* SQLite may leave the transaction open after a failed COMMIT (busy, or a
     * deferred foreign key violated): end it, keeping the commit's message. */
    if (!sqlite3_get_autocommit(st->db)) {
        int rc = sqlite3_step(st->stmt[Q_ROLLBACK]);
        finish(st->stmt[Q_ROLLBACK]);
        if (rc != SQLITE_DONE)
            log_error("store: rollback after failed commit: %s", sqlite3_errmsg(st->db));
    }
    return -1;
}

static void sq_rollback(store *base)
{
    sq_store *st = (sq_store *)base;
    st->in_txn = 0;
    if (sqlite3_get_autocommit(st->db))
        return; /* nothing open (SQLite may already have rolled back on an error) */
    if (run(st, st->stmt[Q_ROLLBACK], "rollback", NULL) != 0)
        log_error("store: %s", st->err);
}

/* Checks before any write: a handle opened read-only fails here with a clear
 * message rather than on a NULL statement; and a write inside the caller's
 * transaction fails if SQLite already rolled that transaction back (it does
 * on some errors, e.g. SQLITE_FULL): executed in autocommit mode, the write
 * would be committed on its own, outside the round it belongs to. */
static int check_write(sq_store *st, const char *what)
{
    if (st->read_only) {
        set_err(st, "%s: the store was opened read-only", what);
        return -1;
    }
    if (st->in_txn && sqlite3_get_autocommit(st->db)) {
        set_err(st, "%s: the transaction was rolled back by an earlier error", what);
        return -1;
    }
    return 0;
}

/* ---- Saving ------------------------------------------------------------------ */

/* kv_to_json of m into *json, or NULL when m is empty and empty_is_null. */
static int to_json(sq_store *st, const kvmap *m, int empty_is_null, char **json,
                   const char *saga_id)
{
    *json = NULL;
    if (m->len == 0 && empty_is_null)
        return 0;
    *json = kv_to_json(m);
    if (*json == NULL) {
        set_err(st, "save saga %s: out of memory", saga_id);
        return -1;
    }
    return 0;
}

static int insert_step(sq_store *st, const saga *s, int i)
{
    const step_def *sd = &s->def->steps[i];
    const step_run *r = &s->steps[i];
    sqlite3_stmt *q = st->stmt[Q_STEP_INSERT];
    char action_key[WIRE_MAX_KEY + 1], compensation_key[WIRE_MAX_KEY + 1];
    char *result;

    saga_step_key(s, i, PHASE_ACTION, action_key, sizeof action_key);
    saga_step_key(s, i, PHASE_COMPENSATE, compensation_key, sizeof compensation_key);
    if (to_json(st, &r->result, 1, &result, s->id) != 0)
        return -1;
    int rc;
    if (sqlite3_bind_text(q, 1, s->id, -1, SQLITE_STATIC) || sqlite3_bind_int(q, 2, i) ||
        bind_text(q, 3, sd->name) || bind_text(q, 4, sd->participant) ||
        bind_text(q, 5, sd->action) || bind_text(q, 6, sd->compensation) ||
        sqlite3_bind_int(q, 7, (int)r->state) || bind_text(q, 8, action_key) ||
        bind_text(q, 9, sd->compensation ? compensation_key : NULL) ||
        sqlite3_bind_int64(q, 10, r->action_attempts) ||
        sqlite3_bind_int64(q, 11, r->compensation_attempts) ||
        sqlite3_bind_int(q, 12, r->last_outcome) || bind_text(q, 13, result) ||
        bind_text(q, 14, r->last_error) || sqlite3_bind_int64(q, 15, r->next_attempt_at_ms) ||
        sqlite3_bind_int64(q, 16, r->started_at_ms) || sqlite3_bind_int64(q, 17, r->finished_at_ms))
        rc = db_fail(st, "save step of saga", s->id);
    else
        rc = run(st, q, "save step of saga", s->id);
    finish(q);
    free(result);
    return rc;
}

static int insert_saga(sq_store *st, const saga *s)
{
    if (s->def == NULL || s->def->n_steps != s->n_steps) {
        set_err(st, "save saga %s: a new saga needs its definition (%zu steps)", s->id, s->n_steps);
        return -1;
    }
    sqlite3_stmt *q = st->stmt[Q_SAGA_INSERT];
    char *input;
    if (to_json(st, &s->input, 0, &input, s->id) != 0)
        return -1;
    int rc;
    if (sqlite3_bind_text(q, 1, s->id, -1, SQLITE_STATIC) || bind_text(q, 2, s->type) ||
        sqlite3_bind_int(q, 3, (int)s->state) || sqlite3_bind_int(q, 4, s->failed_phase) ||
        bind_text(q, 5, s->client_key) || bind_text(q, 6, input) ||
        sqlite3_bind_int(q, 7, s->cursor) || sqlite3_bind_int64(q, 8, (int64_t)s->n_steps) ||
        bind_text(q, 9, s->last_error) || sqlite3_bind_int64(q, 10, s->created_at_ms) ||
        sqlite3_bind_int64(q, 11, s->updated_at_ms) || sqlite3_bind_int64(q, 12, s->def_version) ||
        sqlite3_bind_int64(q, 13, s->deadline_at_ms) || bind_text(q, 14, s->root_cause))
        rc = db_fail(st, "save saga", s->id);
    else
        rc = run(st, q, "save saga", s->id);
    finish(q);
    free(input);
    for (size_t i = 0; rc == 0 && i < s->n_steps; i++)
        rc = insert_step(st, s, (int)i);
    return rc;
}

/* Runs an UPDATE that must change exactly one row. */
static int run_update(sq_store *st, sqlite3_stmt *q, const char *what, const char *saga_id)
{
    if (run(st, q, what, saga_id) != 0)
        return -1;
    if (sqlite3_changes(st->db) != 1) {
        set_err(st, "%s %s: not in the store", what, saga_id);
        return -1;
    }
    return 0;
}

static int update_saga_row(sq_store *st, const saga *s)
{
    sqlite3_stmt *q = st->stmt[Q_SAGA_UPDATE];
    if (sqlite3_bind_text(q, 1, s->id, -1, SQLITE_STATIC) ||
        sqlite3_bind_int(q, 2, (int)s->state) || sqlite3_bind_int(q, 3, s->failed_phase) ||
        sqlite3_bind_int(q, 4, s->cursor) || bind_text(q, 5, s->last_error) ||
        sqlite3_bind_int64(q, 6, s->updated_at_ms) || bind_text(q, 7, s->root_cause)) {
        finish(q);
        return db_fail(st, "save saga", s->id);
    }
    return run_update(st, q, "save saga", s->id);
}

static int update_step(sq_store *st, const saga *s, int i)
{
    const step_run *r = &s->steps[i];
    sqlite3_stmt *q = st->stmt[Q_STEP_UPDATE];
    char *result;
    if (to_json(st, &r->result, 1, &result, s->id) != 0)
        return -1;
    int rc;
    if (sqlite3_bind_text(q, 1, s->id, -1, SQLITE_STATIC) || sqlite3_bind_int(q, 2, i) ||
        sqlite3_bind_int(q, 3, (int)r->state) || sqlite3_bind_int64(q, 4, r->action_attempts) ||
        sqlite3_bind_int64(q, 5, r->compensation_attempts) ||
        sqlite3_bind_int(q, 6, r->last_outcome) || bind_text(q, 7, result) ||
        bind_text(q, 8, r->last_error) || sqlite3_bind_int64(q, 9, r->next_attempt_at_ms) ||
        sqlite3_bind_int64(q, 10, r->started_at_ms) ||
        sqlite3_bind_int64(q, 11, r->finished_at_ms)) {
        finish(q);
        rc = db_fail(st, "save step of saga", s->id);
    } else {
        rc = run_update(st, q, "save step of saga", s->id);
    }
    free(result);
    return rc;
}

static int save_saga(sq_store *st, const saga *s)
{
    if (s->dirty & SAGA_DIRTY_NEW)
        return insert_saga(st, s); /* the row and every step, as they are now */
    if (s->n_steps < SAGA_MAX_STEPS && (s->dirty_steps >> s->n_steps) != 0) {
        set_err(st, "save saga %s: dirty step beyond its %zu steps", s->id, s->n_steps);
        return -1;
    }
    if ((s->dirty & SAGA_DIRTY_ROW) && update_saga_row(st, s) != 0)
        return -1;
    for (uint64_t bits = s->dirty_steps; bits != 0; bits &= bits - 1) {
        if (update_step(st, s, __builtin_ctzll(bits)) != 0)
            return -1;
    }
    return 0;
}

/* Inside the caller's transaction, a failure leaves part of the saga written:
 * the caller rolls the round back (the engine does). Outside one, the saga is
 * written atomically in a transaction of its own. */
static int sq_save_saga(store *base, const saga *s)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "save saga") != 0)
        return -1;
    if (s->dirty == 0 && s->dirty_steps == 0)
        return 0;
    if (strlen(s->id) == 0 || s->n_steps > SAGA_MAX_STEPS) {
        set_err(st, "save saga '%s': invalid id or step count %zu", s->id, s->n_steps);
        return -1;
    }
    int own = !st->in_txn;
    if (own && sq_begin(&st->base) != 0)
        return -1;
    int rc = save_saga(st, s);
    if (own) {
        if (rc == 0)
            rc = sq_commit(&st->base);
        else
            sq_rollback(&st->base);
    }
    return rc;
}

static int sq_append_history(store *base, const char *saga_id, int64_t at_ms, const saga_event *ev,
                             const char *step_name)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "append history") != 0)
        return -1;
    sqlite3_stmt *q = st->stmt[Q_HISTORY_INSERT];
    if (bind_text(q, 1, saga_id) || sqlite3_bind_int64(q, 2, at_ms) || bind_text(q, 3, ev->kind) ||
        bind_text(q, 4, ev->step >= 0 ? step_name : NULL) || sqlite3_bind_int(q, 5, ev->phase) ||
        sqlite3_bind_int64(q, 6, ev->attempt) || sqlite3_bind_int(q, 7, ev->outcome) ||
        sqlite3_bind_int(q, 8, ev->replayed ? 1 : 0) || bind_text(q, 9, ev->detail)) {
        finish(q);
        return db_fail(st, "append history of saga", saga_id);
    }
    return run(st, q, "append history of saga", saga_id);
}

/* ---- Loading ------------------------------------------------------------------ */

/* Fills s->steps from saga_steps. */
static int load_steps(sq_store *st, saga *s)
{
    sqlite3_stmt *q = st->stmt[Q_STEPS_OF];
    int rc = -1;
    size_t n = 0;
    if (bind_text(q, 1, s->id) != SQLITE_OK) {
        db_fail(st, "load steps of saga", s->id);
        goto out;
    }
    for (;;) {
        int step = sqlite3_step(q);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            db_fail(st, "load steps of saga", s->id);
            goto out;
        }
        int64_t idx = sqlite3_column_int64(q, 0);
        int64_t state = sqlite3_column_int64(q, 2);
        int64_t a_att = sqlite3_column_int64(q, 3), c_att = sqlite3_column_int64(q, 4);
        int64_t outcome = sqlite3_column_int64(q, 5);
        if (n >= s->n_steps || idx != (int64_t)n || state < STEP_PENDING ||
            state > STEP_COMPENSATED || a_att < 0 || a_att > UINT32_MAX || c_att < 0 ||
            c_att > UINT32_MAX || outcome < INT_MIN || outcome > INT_MAX) {
            set_err(st, "load saga %s: corrupt step row %" PRId64, s->id, idx);
            st->corrupt_row = 1;
            goto out;
        }
        step_run *r = &s->steps[n];
        r->state = (step_state)state;
        r->action_attempts = (uint32_t)a_att;
        r->compensation_attempts = (uint32_t)c_att;
        r->last_outcome = (int)outcome;
        r->next_attempt_at_ms = sqlite3_column_int64(q, 8);
        r->started_at_ms = sqlite3_column_int64(q, 9);
        r->finished_at_ms = sqlite3_column_int64(q, 10);
        const char *result = column_text_or_null(q, 6);
        if (result != NULL && kv_from_json(&r->result, result) != 0) {
            set_err(st, "load saga %s: step %zu: unreadable result", s->id, n);
            st->corrupt_row = 1;
            goto out;
        }
        if (column_dup(q, 7, &r->last_error) != 0) {
            set_err(st, "load saga %s: out of memory", s->id);
            goto out;
        }
        n++;
    }
    if (n != s->n_steps) {
        set_err(st, "load saga %s: %zu step rows, expected %zu", s->id, n, s->n_steps);
        st->corrupt_row = 1;
        goto out;
    }
    rc = 0;
out:
    finish(q);
    return rc;
}

/* Builds a saga from the current row of a SAGA_COLUMNS statement q. */
static int read_saga(sq_store *st, sqlite3_stmt *q, saga **out)
{
    const char *id = column_text_or_empty(q, 0);
    int64_t state = sqlite3_column_int64(q, 2);
    int64_t failed_phase = sqlite3_column_int64(q, 3);
    int64_t cursor = sqlite3_column_int64(q, 6);
    int64_t n_steps = sqlite3_column_int64(q, 7);
    int64_t def_version = sqlite3_column_int64(q, 11);
    int64_t deadline_at_ms = sqlite3_column_int64(q, 12);
    if (deadline_at_ms < 0 || def_version < 0 || def_version > UINT32_MAX || strlen(id) == 0 ||
        strlen(id) > 36 || state < SAGA_RUNNING || state > SAGA_FAILED || n_steps < 0 ||
        n_steps > SAGA_MAX_STEPS || cursor < 0 || cursor >= (n_steps > 0 ? n_steps : 1) ||
        failed_phase < INT_MIN || failed_phase > INT_MAX) {
        set_err(st, "load saga '%s': corrupt saga row", id);
        st->corrupt_row = 1;
        return -1;
    }
    saga *s = saga_alloc((size_t)n_steps);
    if (s == NULL) {
        set_err(st, "load saga %s: out of memory", id);
        return -1;
    }
    memcpy(s->id, id, strlen(id) + 1);
    s->state = (saga_state)state;
    s->failed_phase = (int)failed_phase;
    s->cursor = (int)cursor;
    s->created_at_ms = sqlite3_column_int64(q, 9);
    s->updated_at_ms = sqlite3_column_int64(q, 10);
    s->def_version = (uint32_t)def_version;
    s->deadline_at_ms = deadline_at_ms;
    const char *input = column_text_or_empty(q, 5);
    if (column_dup(q, 1, &s->type) != 0 || s->type == NULL || column_dup(q, 4, &s->client_key) ||
        column_dup(q, 8, &s->last_error) != 0 || column_dup(q, 13, &s->root_cause) != 0) {
        set_err(st, "load saga %s: out of memory", s->id);
        goto fail;
    }
    if (kv_from_json(&s->input, input) != 0) {
        set_err(st, "load saga %s: unreadable input", s->id);
        st->corrupt_row = 1;
        goto fail;
    }
    if (load_steps(st, s) != 0)
        goto fail;
    /* Volatile fields: saga_alloc zeroed them; nothing is dirty or in flight. */
    *out = s;
    return 0;
fail:
    saga_free(s);
    return -1;
}

static int sq_load_saga(store *base, const char *id, saga **out)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_SAGA_BY_ID];
    int rc;
    if (bind_text(q, 1, id) != SQLITE_OK) {
        finish(q);
        return db_fail(st, "load saga", id);
    }
    st->corrupt_row = 0;
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW)
        rc = read_saga(st, q, out);
    else if (step == SQLITE_DONE)
        rc = STORE_NOT_FOUND;
    else
        rc = db_fail(st, "load saga", id);
    finish(q);
    return rc;
}

/*
 * Walks the unfinished sagas in batches of ids, oldest first: no statement is
 * open while fn runs, so fn may save (even finish) sagas through this handle,
 * and the seq cursor guarantees each saga is handed over at most once.
 */
static int sq_load_unfinished(store *base, int (*fn)(saga *s, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_UNFINISHED];
    char(*ids)[37] = malloc(STORE_RECOVERY_BATCH * sizeof *ids);
    int64_t after = 0;
    int rc = 0;
    if (ids == NULL) {
        set_err(st, "load unfinished sagas: out of memory");
        return -1;
    }
    for (;;) {
        size_t n = 0;
        if (sqlite3_bind_int64(q, 1, after) || sqlite3_bind_int(q, 2, STORE_RECOVERY_BATCH)) {
            rc = db_fail(st, "load unfinished sagas", NULL);
            finish(q);
            break;
        }
        int step;
        while ((step = sqlite3_step(q)) == SQLITE_ROW) {
            const char *id = column_text_or_empty(q, 1);
            size_t len = strlen(id);
            if (len == 0 || len >= sizeof ids[0]) {
                set_err(st, "load unfinished sagas: corrupt saga id '%.64s'", id);
                rc = -1;
                break;
            }
            memcpy(ids[n++], id, len + 1);
            after = sqlite3_column_int64(q, 0);
        }
        if (rc == 0 && step != SQLITE_DONE)
            rc = db_fail(st, "load unfinished sagas", NULL);
        finish(q);
        if (rc != 0 || n == 0)
            break;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            saga *s;
            int found = sq_load_saga(&st->base, ids[i], &s);
            if (found == STORE_NOT_FOUND)
                continue; /* removed by an earlier fn */
            if (found != 0 && st->corrupt_row && st->on_corrupt != NULL) {
                char why[sizeof st->err];
                memcpy(why, st->err, sizeof why);
                rc = st->on_corrupt(ids[i], why, st->on_corrupt_arg);
                continue;
            }
            if (found != 0) {
                rc = -1;
                break;
            }
            if (s->state != SAGA_RUNNING && s->state != SAGA_COMPENSATING) {
                saga_free(s); /* finished by an earlier fn */
                continue;
            }
            rc = fn(s, arg);
        }
        if (rc != 0 || n < STORE_RECOVERY_BATCH)
            break;
    }
    free(ids);
    return rc;
}

/* ---- Queries for the admin server ------------------------------------------ */

static int sq_find_client_key(store *base, const char *client_key, char id_out[37])
{
    sq_store *st = (sq_store *)base;
    if (client_key == NULL)
        return STORE_NOT_FOUND;
    sqlite3_stmt *q = st->stmt[Q_CLIENT_KEY];
    int rc;
    if (bind_text(q, 1, client_key) != SQLITE_OK) {
        finish(q);
        return db_fail(st, "find client key", NULL);
    }
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        const char *id = column_text_or_empty(q, 0);
        if (strlen(id) == 0 || strlen(id) > 36) {
            set_err(st, "find client key: corrupt saga id '%s'", id);
            rc = -1;
        } else {
            memcpy(id_out, id, strlen(id) + 1);
            rc = 0;
        }
    } else if (step == SQLITE_DONE) {
        rc = STORE_NOT_FOUND;
    } else {
        rc = db_fail(st, "find client key", NULL);
    }
    finish(q);
    return rc;
}

/* Steps q (bound, columns as Q_LIST and Q_SEARCH select them) and hands
 * fn each row; fn's non-zero return stops the walk and is returned. q is
 * reset either way. */
static int each_summary(sq_store *st, sqlite3_stmt *q, const char *what,
                        int (*fn)(const store_summary *row, void *arg), void *arg)
{
    int rc = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        store_summary row = {
            .saga_id = column_text_or_empty(q, 0),
            .type = column_text_or_empty(q, 1),
            .state = sqlite3_column_int(q, 2),
            .created_at_ms = sqlite3_column_int64(q, 3),
            .updated_at_ms = sqlite3_column_int64(q, 4),
            .last_error = column_text_or_null(q, 5),
            .root_cause = column_text_or_null(q, 6),
            .client_key = column_text_or_null(q, 7),
        };
        rc = fn(&row, arg);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(st, what, NULL);
    finish(q);
    return rc;
}

/*
 * limit 0 means no limit. An after_id that names no saga yields no rows: it
 * is a cursor the caller made up or a saga purged since (store_purge_finished),
 * and an empty page is the answer that cannot be misread as more data.
 */
static int sq_list(store *base, int state, const char *type, const char *after_id, uint32_t limit,
                   int (*fn)(const store_summary *row, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    int64_t before = INT64_MAX;
    if (after_id != NULL && after_id[0] != '\0') {
        sqlite3_stmt *q = st->stmt[Q_SEQ_OF_ID];
        int step = bind_text(q, 1, after_id) == SQLITE_OK ? sqlite3_step(q) : SQLITE_ERROR;
        if (step == SQLITE_ROW)
            before = sqlite3_column_int64(q, 0);
        else if (step != SQLITE_DONE)
            db_fail(st, "list sagas", NULL);
        finish(q);
        if (step == SQLITE_DONE)
            return 0;
        if (step != SQLITE_ROW)
            return -1;
    }
    int by_type = type != NULL && type[0] != '\0';
    enum stmt_id which = state != 0 ? (by_type ? Q_LIST_STATE_TYPE : Q_LIST_STATE)
                                    : (by_type ? Q_LIST_TYPE : Q_LIST_ANY);
    sqlite3_stmt *q = st->stmt[which];
    int bad = sqlite3_bind_int64(q, 1, before) ||
              sqlite3_bind_int64(q, 2, limit == 0 ? -1 : (int64_t)limit);
    if (!bad && state != 0)
        bad = sqlite3_bind_int(q, 3, state);
    if (!bad && by_type)
        bad = bind_text(q, state != 0 ? 4 : 3, type);
    if (bad) {
        finish(q);
        return db_fail(st, "list sagas", NULL);
    }
    return each_summary(st, q, "list sagas", fn, arg);
}

static int sq_search(store *base, const store_search_filter *f,
                     int (*fn)(const store_summary *row, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    int64_t before = INT64_MAX;
    if (f->after_id != NULL && f->after_id[0] != '\0') {
        sqlite3_stmt *q = st->stmt[Q_SEQ_OF_ID];
        int step = bind_text(q, 1, f->after_id) == SQLITE_OK ? sqlite3_step(q) : SQLITE_ERROR;
        if (step == SQLITE_ROW)
            before = sqlite3_column_int64(q, 0);
        else if (step != SQLITE_DONE)
            db_fail(st, "search sagas", NULL);
        finish(q);
        if (step == SQLITE_DONE)
            return 0;
        if (step != SQLITE_ROW)
            return -1;
    }
    sqlite3_stmt *q = st->stmt[Q_SEARCH];
    int bad = sqlite3_bind_int64(q, 1, before) ||
              sqlite3_bind_int64(q, 2, f->limit == 0 ? -1 : (int64_t)f->limit) ||
              sqlite3_bind_int(q, 3, f->state) || bind_text(q, 4, f->type ? f->type : "") ||
              bind_text(q, 5, f->client_key ? f->client_key : "") ||
              bind_text(q, 6, f->id_prefix ? f->id_prefix : "") ||
              bind_text(q, 7, f->id_prefix_end) || sqlite3_bind_int64(q, 8, f->created_after_ms) ||
              sqlite3_bind_int64(q, 9, f->created_before_ms);
    if (bad) {
        finish(q);
        return db_fail(st, "search sagas", NULL);
    }
    return each_summary(st, q, "search sagas", fn, arg);
}

static int sq_history(store *base, const char *saga_id, int (*fn)(const store_event *ev, void *arg),
                      void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_HISTORY];
    if (bind_text(q, 1, saga_id) != SQLITE_OK) {
        finish(q);
        return db_fail(st, "read history of saga", saga_id);
    }
    int rc = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t attempt = sqlite3_column_int64(q, 5);
        store_event ev = {
            .seq = (uint64_t)sqlite3_column_int64(q, 0),
            .at_ms = sqlite3_column_int64(q, 1),
            .kind = column_text_or_empty(q, 2),
            .step = column_text_or_empty(q, 3),
            .phase = sqlite3_column_int(q, 4),
            .attempt = attempt < 0 || attempt > UINT32_MAX ? 0 : (uint32_t)attempt,
            .outcome = sqlite3_column_int(q, 6),
            .replayed = sqlite3_column_int(q, 7),
            .detail = column_text_or_empty(q, 8),
        };
        rc = fn(&ev, arg);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(st, "read history of saga", saga_id);
    finish(q);
    return rc;
}

static int sq_count_by_state(store *base, uint64_t counts[6])
{
    sq_store *st = (sq_store *)base;
    uint64_t local[6] = {0};
    sqlite3_stmt *q = st->stmt[Q_COUNT];
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t state = sqlite3_column_int64(q, 0);
        if (state >= SAGA_RUNNING && state <= SAGA_FAILED)
            local[state] = (uint64_t)sqlite3_column_int64(q, 1);
    }
    int rc = step == SQLITE_DONE ? 0 : db_fail(st, "count sagas", NULL);
    finish(q);
    if (rc == 0)
        memcpy(counts, local, sizeof local);
    return rc;
}

static int sq_oldest_created(store *base, int state, int64_t *ms)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_OLDEST_CREATED];
    int rc = -1;
    if (sqlite3_bind_int(q, 1, state) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
        *ms = sqlite3_column_int64(q, 0);
        rc = 0;
    } else {
        rc = db_fail(st, "find the oldest saga", NULL);
    }
    finish(q);
    return rc;
}

/* ---- Definition versions ------------------------------------------------------ */

static int sq_definition_version(store *base, const char *type, const char *hash, uint32_t *version)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_DEF_BY_HASH];
    int rc;
    if (bind_text(q, 1, type) || bind_text(q, 2, hash)) {
        finish(q);
        return db_fail(st, "find definition of", type);
    }
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(q, 0);
        if (v < 1 || v > UINT32_MAX) {
            set_err(st, "definition of %s: corrupt version %" PRId64, type, v);
            rc = -1;
        } else {
            *version = (uint32_t)v;
            rc = 0;
        }
    } else if (step == SQLITE_DONE) {
        rc = STORE_NOT_FOUND;
    } else {
        rc = db_fail(st, "find definition of", type);
    }
    finish(q);
    return rc;
}

static int sq_definition_max(store *base, const char *type, uint32_t *version)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_DEF_MAX];
    if (bind_text(q, 1, type)) {
        finish(q);
        return db_fail(st, "read versions of", type);
    }
    int step = sqlite3_step(q);
    int64_t v = step == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1; /* NULL reads as 0 */
    int rc = 0;
    if (step != SQLITE_ROW) {
        rc = db_fail(st, "read versions of", type);
    } else if (v < 0 || v > UINT32_MAX) {
        set_err(st, "definition of %s: corrupt version %" PRId64, type, v);
        rc = -1;
    } else {
        *version = (uint32_t)v;
    }
    finish(q);
    return rc;
}

static int sq_definition_add(store *base, const store_definition *d)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "add definition") != 0)
        return -1;
    sqlite3_stmt *q = st->stmt[Q_DEF_INSERT];
    if (bind_text(q, 1, d->type) || sqlite3_bind_int64(q, 2, d->version) ||
        bind_text(q, 3, d->hash) || bind_text(q, 4, d->text) ||
        sqlite3_bind_int64(q, 5, d->loaded_at_ms)) {
        finish(q);
        return db_fail(st, "add definition of", d->type);
    }
    return run(st, q, "add definition of", d->type);
}

static int read_definition(sq_store *st, sqlite3_stmt *q, store_definition *d)
{
    int64_t v = sqlite3_column_int64(q, 1);
    if (v < 1 || v > UINT32_MAX) {
        set_err(st, "corrupt definition version %" PRId64, v);
        return -1;
    }
    d->type = column_text_or_empty(q, 0);
    d->version = (uint32_t)v;
    d->hash = column_text_or_empty(q, 2);
    d->text = column_text_or_empty(q, 3);
    d->loaded_at_ms = sqlite3_column_int64(q, 4);
    return 0;
}

static int sq_definition_get(store *base, const char *type, uint32_t version,
                             int (*fn)(const store_definition *d, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_DEF_GET];
    if (bind_text(q, 1, type) || sqlite3_bind_int64(q, 2, version)) {
        finish(q);
        return db_fail(st, "read definition of", type);
    }
    int rc, step = sqlite3_step(q);
    store_definition d;
    if (step == SQLITE_ROW)
        rc = read_definition(st, q, &d) == 0 ? fn(&d, arg) : -1;
    else if (step == SQLITE_DONE)
        rc = STORE_NOT_FOUND;
    else
        rc = db_fail(st, "read definition of", type);
    finish(q);
    return rc;
}

static int sq_definitions(store *base, int (*fn)(const store_definition *d, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_DEF_ALL];
    int rc = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        store_definition d;
        if ((rc = read_definition(st, q, &d)) != 0 || (rc = fn(&d, arg)) != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(st, "list definitions", NULL);
    finish(q);
    return rc;
}

static int sq_count_by_version(store *base,
                               int (*fn)(const char *type, uint32_t version, int state, uint64_t n,
                                         void *arg),
                               void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_COUNT_BY_VERSION];
    int rc = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(q, 1);
        rc = fn(column_text_or_empty(q, 0), v < 0 || v > UINT32_MAX ? 0 : (uint32_t)v,
                sqlite3_column_int(q, 2), (uint64_t)sqlite3_column_int64(q, 3), arg);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(st, "count sagas by version", NULL);
    finish(q);
    return rc;
}

static int sq_pin_unversioned(store *base, const char *type, uint32_t version)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "pin sagas") != 0)
        return -1;
    sqlite3_stmt *q = st->stmt[Q_PIN_UNVERSIONED];
    if (bind_text(q, 1, type) || sqlite3_bind_int64(q, 2, version)) {
        finish(q);
        return db_fail(st, "pin sagas of type", type);
    }
    return run(st, q, "pin sagas of type", type);
}

/* ---- Resilience: failure classes, quarantine, retention purge ---------------- */

/*
 * Transient: another process holds a lock (BUSY, LOCKED), or the disk is full
 * (FULL, or an I/O error whose errno is ENOSPC/EDQUOT, a failed fsync excepted). SQLite rolls the
 * transaction back on these and the handle stays usable, so the same writes
 * can be tried again once the lock is released or space is freed.
 */
static int sq_error_is_transient(const store *base)
{
    const sq_store *st = (const sq_store *)base;
    int primary = st->last_code & 0xff;
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_FULL)
        return 1;
    /* A failed fsync is never retried: the kernel may have dropped the pages
     * it could not write and report the next fsync as a success. */
    if (st->last_code == SQLITE_IOERR_FSYNC || st->last_code == SQLITE_IOERR_DIR_FSYNC)
        return 0;
    return primary == SQLITE_IOERR && (st->last_errno == ENOSPC || st->last_errno == EDQUOT);
}

static int sq_error_is_corrupt_row(const store *base)
{
    const sq_store *st = (const sq_store *)base;
    return st->corrupt_row;
}

static void sq_set_corrupt_row_handler(store *base,
                                       int (*fn)(const char *saga_id, const char *why, void *arg),
                                       void *arg)
{
    sq_store *st = (sq_store *)base;
    st->on_corrupt = fn;
    st->on_corrupt_arg = arg;
}

/* Prepares one of the rarely used statements below (not cached: they run at
 * recovery or once per purge batch). */
static sqlite3_stmt *prepare_once(sq_store *st, const char *sql, const char *what)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK) {
        db_fail(st, what, NULL);
        return NULL;
    }
    return q;
}

/*
 * Only the saga row's state, last_error and updated_at_ms are written (and a
 * history event): the columns that could not be read are left as they are,
 * for an operator to inspect.
 */
static int sq_quarantine_saga(store *base, const char *saga_id, const char *why, int64_t now_ms)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "quarantine saga") != 0)
        return -1;
    int own = !st->in_txn;
    if (own && sq_begin(&st->base) != 0)
        return -1;
    sqlite3_stmt *q = prepare_once(
        st,
        "UPDATE sagas SET state = 5, last_error = ?2, root_cause = coalesce(root_cause, ?2), "
        "updated_at_ms = ?3 WHERE id = ?1",
        "quarantine saga");
    int rc = -1;
    if (q != NULL) {
        if (bind_text(q, 1, saga_id) || bind_text(q, 2, why) || sqlite3_bind_int64(q, 3, now_ms))
            rc = db_fail(st, "quarantine saga", saga_id);
        else
            rc = run_update(st, q, "quarantine saga", saga_id);
        sqlite3_finalize(q);
    }
    if (rc == 0) {
        saga_event ev = {"saga_quarantined", -1, PHASE_ACTION, 0, -1, 0, why};
        rc = sq_append_history(&st->base, saga_id, now_ms, &ev, NULL);
    }
    if (own) {
        if (rc == 0)
            rc = sq_commit(&st->base);
        else
            sq_rollback(&st->base);
    }
    return rc;
}

/*
 * One transaction deleting up to `batch` COMPLETED or COMPENSATED sagas last
 * updated before cutoff_ms; their step and history rows go with them (ON
 * DELETE CASCADE). FAILED and unfinished sagas are never selected. The
 * sagas_by_state index hands finished sagas oldest first, so a batch finds
 * the expired ones without reading the rest, except on the pass's last batch.
 */
static int sq_purge_finished(store *base, int64_t cutoff_ms, int batch, uint64_t *purged)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "purge finished sagas") != 0)
        return -1;
    if (sq_begin(&st->base) != 0)
        return -1;
    sqlite3_stmt *q = prepare_once(st,
                                   "DELETE FROM sagas WHERE seq IN (SELECT seq FROM sagas "
                                   "WHERE state IN (3, 4) AND updated_at_ms < ?1 LIMIT ?2)",
                                   "purge finished sagas");
    int rc = -1;
    uint64_t n = 0;
    if (q != NULL) {
        if (sqlite3_bind_int64(q, 1, cutoff_ms) || sqlite3_bind_int(q, 2, batch))
            rc = db_fail(st, "purge finished sagas", NULL);
        else
            rc = run(st, q, "purge finished sagas", NULL);
        if (rc == 0)
            n = (uint64_t)sqlite3_changes(st->db); /* the sagas rows; cascades not counted */
        sqlite3_finalize(q);
    }
    if (rc == 0)
        rc = sq_commit(&st->base);
    else
        sq_rollback(&st->base);
    if (rc == 0)
        *purged = n;
    return rc;
}

/* ---- Scheduled starts (store.h) ------------------------------------------------ */

/* The current row of q (SCHED_COLUMNS) into *out: 0, or -1 (out of memory,
 * or an input that is not the JSON this store writes). */
static int read_schedule(sq_store *st, sqlite3_stmt *q, store_schedule *out)
{
    memset(out, 0, sizeof *out);
    const char *id = column_text_or_empty(q, 0);
    if (strlen(id) == 0 || strlen(id) > 36) {
        set_err(st, "read scheduled start: corrupt id '%s'", id);
        return -1;
    }
    memcpy(out->id, id, strlen(id) + 1);
    if (column_dup(q, 1, &out->type) != 0 || out->type == NULL ||
        column_dup(q, 2, &out->client_key) != 0 ||
        kv_from_json(&out->input, column_text_or_empty(q, 3)) != 0) {
        set_err(st, "read scheduled start %s: out of memory or unreadable input", out->id);
        store_schedule_clear(out);
        return -1;
    }
    out->start_at_ms = sqlite3_column_int64(q, 4);
    out->deadline_ms = sqlite3_column_int64(q, 5);
    out->created_at_ms = sqlite3_column_int64(q, 6);
    out->retry_at_ms = sqlite3_column_int64(q, 7);
    return 0;
}

/* Steps q (bound) and hands each row to fn; finishes q. */
static int walk_schedules(sq_store *st, sqlite3_stmt *q, const char *what,
                          int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    int rc = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        store_schedule s;
        if (read_schedule(st, q, &s) != 0) {
            rc = -1;
            break;
        }
        rc = fn(&s, arg);
        store_schedule_clear(&s);
        if (rc != 0)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(st, what, NULL);
    finish(q);
    return rc;
}

static int sq_schedule_add(store *base, const store_schedule *s)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "schedule start") != 0)
        return -1;
    char *input = NULL;
    if (to_json(st, &s->input, 0, &input, s->id) != 0)
        return -1;
    sqlite3_stmt *q = st->stmt[Q_SCHED_INSERT];
    int rc;
    if (bind_text(q, 1, s->id) || bind_text(q, 2, s->type) || bind_text(q, 3, s->client_key) ||
        bind_text(q, 4, input) || sqlite3_bind_int64(q, 5, s->start_at_ms) ||
        sqlite3_bind_int64(q, 6, s->deadline_ms) || sqlite3_bind_int64(q, 7, s->created_at_ms) ||
        sqlite3_bind_int64(q, 8, s->retry_at_ms)) {
        finish(q);
        rc = db_fail(st, "schedule start", s->id);
    } else {
        rc = run(st, q, "schedule start", s->id);
    }
    free(input);
    return rc;
}

/* Deletes the row of id: 0, STORE_NOT_FOUND when there was none, -1. */
static int delete_schedule(sq_store *st, const char *id, const char *what)
{
    sqlite3_stmt *q = st->stmt[Q_SCHED_DELETE];
    if (bind_text(q, 1, id) != SQLITE_OK) {
        finish(q);
        return db_fail(st, what, id);
    }
    if (run(st, q, what, id) != 0)
        return -1;
    return sqlite3_changes(st->db) == 1 ? 0 : STORE_NOT_FOUND;
}

/* One node: the engine fires only what it read and did not cancel, so a row
 * that is gone here is a bug, and the round must not commit (S1). */
static int sq_schedule_fire(store *base, const char *id)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "fire scheduled start") != 0)
        return -1;
    int rc = delete_schedule(st, id, "fire scheduled start");
    if (rc == STORE_NOT_FOUND) {
        set_err(st, "fire scheduled start %s: no such row", id);
        st->last_code = SQLITE_CONSTRAINT;
        st->last_errno = 0;
        return -1;
    }
    return rc;
}

static int sq_schedule_due(store *base, int64_t now_ms, uint32_t max,
                           int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_SCHED_DUE];
    if (sqlite3_bind_int64(q, 1, now_ms) || sqlite3_bind_int64(q, 2, max)) {
        finish(q);
        return db_fail(st, "read due starts", NULL);
    }
    return walk_schedules(st, q, "read due starts", fn, arg);
}

/* A write of its own transaction (the engine, between rounds). */
static int sq_schedule_postpone(store *base, const char *id, int64_t retry_at_ms)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "postpone scheduled start") != 0 || sq_begin(base) != 0)
        return -1;
    sqlite3_stmt *q = st->stmt[Q_SCHED_POSTPONE];
    int rc;
    if (bind_text(q, 1, id) || sqlite3_bind_int64(q, 2, retry_at_ms)) {
        finish(q);
        rc = db_fail(st, "postpone scheduled start", id);
    } else {
        rc = run(st, q, "postpone scheduled start", id);
    }
    if (rc == 0)
        return sq_commit(base);
    sq_rollback(base);
    return rc;
}

static int sq_schedule_cancel(store *base, const char *id)
{
    sq_store *st = (sq_store *)base;
    if (check_write(st, "cancel scheduled start") != 0 || sq_begin(base) != 0)
        return -1;
    int rc = delete_schedule(st, id, "cancel scheduled start");
    if (rc < 0) {
        sq_rollback(base);
        return rc;
    }
    return sq_commit(base) != 0 ? -1 : rc;
}

static int sq_schedule_get(store *base, const char *id, const char *client_key, store_schedule *out)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[id != NULL ? Q_SCHED_BY_ID : Q_SCHED_BY_KEY];
    if (bind_text(q, 1, id != NULL ? id : client_key) != SQLITE_OK) {
        finish(q);
        return db_fail(st, "read scheduled start", id);
    }
    int rc, step = sqlite3_step(q);
    if (step == SQLITE_ROW)
        rc = read_schedule(st, q, out);
    else if (step == SQLITE_DONE)
        rc = STORE_NOT_FOUND;
    else
        rc = db_fail(st, "read scheduled start", id);
    finish(q);
    return rc;
}

static int sq_schedule_list(store *base, const char *type, const char *after_id, uint32_t limit,
                            int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_SCHED_LIST];
    if (bind_text(q, 1, after_id ? after_id : "") || bind_text(q, 2, type ? type : "") ||
        sqlite3_bind_int64(q, 3, limit == 0 ? -1 : (int64_t)limit)) {
        finish(q);
        return db_fail(st, "list scheduled starts", NULL);
    }
    return walk_schedules(st, q, "list scheduled starts", fn, arg);
}

static int sq_schedule_count(store *base, uint64_t *n)
{
    sq_store *st = (sq_store *)base;
    sqlite3_stmt *q = st->stmt[Q_SCHED_COUNT];
    int rc = sqlite3_step(q) == SQLITE_ROW ? 0 : db_fail(st, "count scheduled starts", NULL);
    if (rc == 0)
        *n = (uint64_t)sqlite3_column_int64(q, 0);
    finish(q);
    return rc;
}

const store_backend store_sqlite_backend = {
    .name = "sqlite",
    .close = sq_close,
    .errmsg = sq_errmsg,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .save_saga = sq_save_saga,
    .append_history = sq_append_history,
    .find_client_key = sq_find_client_key,
    .load_saga = sq_load_saga,
    .load_unfinished = sq_load_unfinished,
    .list = sq_list,
    .search = sq_search,
    .history = sq_history,
    .count_by_state = sq_count_by_state,
    .oldest_created = sq_oldest_created,
    .definition_version = sq_definition_version,
    .definition_max = sq_definition_max,
    .definition_add = sq_definition_add,
    .definition_get = sq_definition_get,
    .definitions = sq_definitions,
    .count_by_version = sq_count_by_version,
    .pin_unversioned = sq_pin_unversioned,
    .error_is_transient = sq_error_is_transient,
    .error_is_corrupt_row = sq_error_is_corrupt_row,
    .set_corrupt_row_handler = sq_set_corrupt_row_handler,
    .quarantine_saga = sq_quarantine_saga,
    .purge_finished = sq_purge_finished,
    .schedule_add = sq_schedule_add,
    .schedule_fire = sq_schedule_fire,
    .schedule_due = sq_schedule_due,
    .schedule_postpone = sq_schedule_postpone,
    .schedule_cancel = sq_schedule_cancel,
    .schedule_get = sq_schedule_get,
    .schedule_list = sq_schedule_list,
    .schedule_count = sq_schedule_count,
};
