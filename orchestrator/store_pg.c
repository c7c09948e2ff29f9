/*
 * store_pg — the PostgreSQL implementation of store.h: several sagad nodes
 * on one database (docs/SCALE-OUT.md).
 *
 * Responsibility: the same durable saga state as store_sqlite.c (same
 * tables, same columns, same invariants 1-5 stated there), in a database
 * that several nodes write at once, each only the sagas it owns.
 *
 * Schema (version 3, in saga_meta 'schema'; created under an advisory lock so
 * that nodes starting together create it once, as version 1 followed by the
 * upgrades of pg_migrations[], which also upgrade an older database):
 *   saga_nodes   one row per node name: epoch (bumped at every join and at
 *                every fencing), alive, lease_until (database time).
 *   sagas        as in SQLite, plus owner (node name) and owner_epoch: the
 *                life of the node that runs it. seq is an identity column.
 *                root_cause (version 3): as in SQLite's schema 5.
 *   saga_steps, saga_history, saga_definitions: as in SQLite.
 *   scheduled_starts  as in SQLite (version 2), plus owner and owner_epoch:
 *                the node that claimed it to fire it ('' and 0: none yet).
 *
 * Ownership and fencing (the rules every node follows):
 *   F1. A node joins with a fresh epoch; it renews its lease (lease_until =
 *       now + lease) while `alive AND epoch = its epoch`.
 *   F2. Any node fences a node whose lease has expired: alive = false,
 *       epoch + 1, in an UPDATE of that node's row. Renewal and fencing
 *       update the same row, so PostgreSQL orders them: a node is either
 *       renewed or fenced, never both.
 *   F3. Every round of a node begins with a statement that holds its node
 *       row FOR SHARE and raises when the node is not `alive` in its epoch;
 *       fencing (F2) waits for that lock, so once a node is fenced no round
 *       of it can commit, and a round that committed did so before.
 *   F4. A node claims only sagas whose owner is fenced, or an earlier life
 *       of any node (owner_epoch differs), FOR UPDATE SKIP LOCKED; and
 *       store_claim_saga takes one saga for an operator's command.
 *   F5. Every saga update of a round is conditional on owner and epoch, and
 *       raises when it changes no row: a saga claimed away (F4) is refused,
 *       even when its old owner still holds its lease.
 *   F6. A client key names one start, a saga or a scheduled start,
 *       whichever reserved it first, on whatever node. Every insert with
 *       a key (a saga's, a scheduled start's) is two statements of its
 *       round: pg_advisory_xact_lock(PG_LOCK_CLIENT_KEY, hashtext(key)),
 *       then the insert, which raises key_taken when the key is held in
 *       the other table (a saga's insert ignores the scheduled start of
 *       its own id: the one it fires) or, ON CONFLICT DO NOTHING, in its
 *       own. The lock is held to the end of the round's transaction, so
 *       two rounds with one key run their inserts one after the other; and
 *       the check is a statement of its own after the lock because at READ
 *       COMMITTED each statement reads a fresh snapshot, taken once its
 *       predecessor returned: the second round's check sees the first
 *       round's committed row. (In the lock's statement it would not: its
 *       snapshot predates the wait.) Without the lock the two tables'
 *       unique indexes see only themselves, and an immediate start and a
 *       scheduled start of one key sent to two nodes at once could both
 *       commit, one client told an id that never runs.
 *       Why a lock and not one key table with a unique index that both
 *       paths insert into (which would serialize the same way): the lock
 *       needs no schema change and no row to keep in step with two others
 *       through cancels, firings and purges; it costs a statement per keyed
 *       insert, queued in the same pipeline (the round stays one round
 *       trip), and a hash collision only makes two keys wait for each
 *       other. Two rounds locking two keys in opposite orders deadlock as
 *       their unique indexes already could: PostgreSQL (or lock_timeout)
 *       ends one, whose round is retried (transient) and then refused.
 *       The refused round's engine answers with the key's holder.
 *   F7. A node fires a scheduled start only after claiming it (owner,
 *       owner_epoch) in a committed UPDATE ... FOR UPDATE SKIP LOCKED of
 *       rows unclaimed, claimed by itself, or by a fenced or earlier life;
 *       the firing round deletes the row conditionally on that claim and
 *       raises not_owner otherwise (a cancel, or a takeover after this node
 *       was fenced): a start fires once (store.h S4).
 * The raise is `saga_reject(why, saga_id)`, SQLSTATE SG001: the round, which
 * is one implicit transaction of a pipeline, is rolled back whole, and
 * store_commit returns STORE_REJECTED with why and the saga.
 *
 * One round, one round trip: store_begin enters libpq's pipeline mode, each
 * write of the round is queued (PQsendQueryPrepared), and store_commit sends
 * one Sync and reads every result. Statements between two Syncs run in one
 * implicit transaction, committed at the Sync (synchronous_commit = on when
 * durability is full: the commit is on disk, and on a synchronous standby
 * when one is configured, before it is acknowledged).
 *
 * A read on the writable handle while writes are queued first syncs them,
 * committing them: only catalog_install does so (each definition row stands
 * alone), and it serializes with other nodes on an advisory lock.
 *
 * Errors: a lost connection, a serialization failure, a lock wait beyond
 * lock_timeout and running out of connections are transient (the engine
 * retries the round; the next call reconnects); any other is not.
 *
 * Threads: a handle is used by one thread at a time, like SQLite's.
 */
#include "store_backend.h"

#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db_url.h"
#include "log.h"
#include "util.h"
#include "wire.h"

#define PG_SCHEMA_VERSION 4
/* pg_advisory_lock keys: schema creation, definition registration. */
#define PG_LOCK_SCHEMA      0x53414741001
#define PG_LOCK_DEFINITIONS 0x53414741002
/* pg_advisory_xact_lock(class, hashtext(key)) of F6: a two-key lock, so it
 * never meets the one-key locks above. 0x53474B59 ("SGKY"), in decimal: it
 * is pasted into SQL, which has no hexadecimal literals before PostgreSQL 16. */
#define PG_LOCK_CLIENT_KEY 1397181273
#define PG_STR_(x)         #x
#define PG_STR(x)          PG_STR_(x)
#define PG_RECOVERY_BATCH  256
#define PG_MAX_PARAMS      18

/* store_set_interrupt's flag: the waits for the server end when it is set. */
static volatile sig_atomic_t *wait_interrupt;

void store_set_interrupt(volatile sig_atomic_t *flag)
{
    wait_interrupt = flag;
}

/* Sleeps ms, unless a stop was asked for: 0, or -1 when it was. */
static int wait_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    if (wait_interrupt != NULL && *wait_interrupt)
        return -1;
    nanosleep(&ts, NULL); /* a signal cuts it short */
    return wait_interrupt != NULL && *wait_interrupt ? -1 : 0;
}

/* ---- Schema -------------------------------------------------------------- */

static const char schema_sql[] =
    "CREATE TABLE saga_meta (key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE saga_nodes ("
    "  name text PRIMARY KEY,"
    "  epoch bigint NOT NULL,"
    "  alive boolean NOT NULL,"
    "  lease_until timestamptz NOT NULL,"
    "  joined_at timestamptz NOT NULL,"
    "  pid integer NOT NULL"
    ");"
    "CREATE TABLE sagas ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  id text NOT NULL UNIQUE CHECK (length(id) BETWEEN 1 AND 36),"
    "  type text NOT NULL,"
    "  state integer NOT NULL CHECK (state BETWEEN 1 AND 5),"
    "  failed_phase integer NOT NULL,"
    "  client_key text,"
    "  input text NOT NULL,"
    "  cursor integer NOT NULL CHECK (cursor >= 0),"
    "  n_steps integer NOT NULL CHECK (n_steps BETWEEN 0 AND 64),"
    "  last_error text,"
    "  created_at_ms bigint NOT NULL,"
    "  updated_at_ms bigint NOT NULL,"
    "  def_version bigint NOT NULL CHECK (def_version >= 0),"
    "  owner text NOT NULL,"
    "  owner_epoch bigint NOT NULL,"
    "  deadline_at_ms bigint NOT NULL CHECK (deadline_at_ms >= 0)"
    ");"
    "CREATE UNIQUE INDEX sagas_by_client_key ON sagas(client_key) WHERE client_key IS NOT NULL;"
    "CREATE INDEX sagas_by_state ON sagas(state, seq);"
    "CREATE INDEX sagas_by_type ON sagas(type, seq);"
    "CREATE INDEX sagas_unfinished ON sagas(seq) WHERE state IN (1, 2);"
    "CREATE TABLE saga_steps ("
    "  saga_id text NOT NULL REFERENCES sagas(id) ON DELETE CASCADE"
    "    DEFERRABLE INITIALLY DEFERRED,"
    "  idx integer NOT NULL CHECK (idx BETWEEN 0 AND 63),"
    "  name text NOT NULL,"
    "  participant text NOT NULL,"
    "  action text NOT NULL,"
    "  compensation text,"
    "  state integer NOT NULL CHECK (state BETWEEN 0 AND 5),"
    "  action_key text NOT NULL,"
    "  compensation_key text,"
    "  action_attempts bigint NOT NULL CHECK (action_attempts >= 0),"
    "  compensation_attempts bigint NOT NULL CHECK (compensation_attempts >= 0),"
    "  last_outcome integer NOT NULL,"
    "  result text,"
    "  last_error text,"
    "  next_attempt_at_ms bigint NOT NULL,"
    "  started_at_ms bigint NOT NULL,"
    "  finished_at_ms bigint NOT NULL,"
    "  PRIMARY KEY (saga_id, idx)"
    ");"
    "CREATE TABLE saga_history ("
    "  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  saga_id text NOT NULL REFERENCES sagas(id) ON DELETE CASCADE"
    "    DEFERRABLE INITIALLY DEFERRED,"
    "  at_ms bigint NOT NULL,"
    "  kind text NOT NULL,"
    "  step text,"
    "  phase integer NOT NULL,"
    "  attempt bigint NOT NULL CHECK (attempt >= 0),"
    "  outcome integer NOT NULL,"
    "  replayed integer NOT NULL,"
    "  detail text"
    ");"
    "CREATE INDEX saga_history_by_saga ON saga_history(saga_id, seq);"
    "CREATE TABLE saga_definitions ("
    "  type text NOT NULL,"
    "  version bigint NOT NULL CHECK (version >= 1),"
    "  hash text NOT NULL CHECK (length(hash) = 64),"
    "  text text NOT NULL,"
    "  loaded_at_ms bigint NOT NULL,"
    "  PRIMARY KEY (type, version),"
    "  UNIQUE (type, hash)"
    ");"
    /* F5, F6: a rule broken inside a round raises, so the implicit
     * transaction of the pipeline rolls back whole. */
    "CREATE FUNCTION saga_reject(why text, saga_id text) RETURNS integer LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION USING ERRCODE = 'SG001', MESSAGE = why, DETAIL = coalesce(saga_id, '');"
    " END $$;"
    "INSERT INTO saga_meta VALUES ('schema', '1'), ('application', 'sagad');";

/* pg_migrations[v - 1] upgrades the schema from version v to v + 1 and
 * records it, in one transaction (migrate() runs it under the schema lock). */
static const char *const pg_migrations[PG_SCHEMA_VERSION - 1] = {
    /* 1 -> 2: scheduled starts (store.h). A table of its own. */
    "CREATE TABLE scheduled_starts ("
    "  id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 36),"
    "  type text NOT NULL,"
    "  client_key text UNIQUE,"
    "  input text NOT NULL,"
    "  start_at_ms bigint NOT NULL,"
    "  deadline_ms bigint NOT NULL CHECK (deadline_ms >= 0),"
    "  created_at_ms bigint NOT NULL,"
    "  retry_at_ms bigint NOT NULL DEFAULT 0,"
    "  owner text NOT NULL DEFAULT '',"
    "  owner_epoch bigint NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX scheduled_starts_due ON scheduled_starts(start_at_ms);"
    "UPDATE saga_meta SET value = '2' WHERE key = 'schema';",
    /* 2 -> 3: root_cause (store_sqlite.c's 4 -> 5). */
    "ALTER TABLE sagas ADD COLUMN root_cause text;"
    "UPDATE sagas SET root_cause = last_error WHERE last_error IS NOT NULL;"
    "UPDATE sagas SET last_error = NULL WHERE state = 3;"
    "UPDATE saga_meta SET value = '3' WHERE key = 'schema';",
    /* 3 -> 4: early sends (store_sqlite.c's 5 -> 6): the tables are the
     * same, their meaning is not; an older sagad must not open them. */
    "UPDATE saga_meta SET value = '4' WHERE key = 'schema';",
};

/* ---- Statements ---------------------------------------------------------- */

enum pg_stmt {
    P_FENCE,
    P_SAGA_INSERT,
    P_KEY_LOCK,
    P_SAGA_INSERT_KEYED,
    P_SAGA_UPDATE,
    P_SAGA_OWNED,
    P_STEP_INSERT,
    P_STEP_UPDATE,
    P_HISTORY_INSERT,
    P_SAGA_BY_ID,
    P_STEPS_OF,
    P_CLIENT_KEY,
    P_HISTORY,
    P_COUNT,
    P_OLDEST_CREATED,
    P_DEF_BY_HASH,
    P_DEF_MAX,
    P_DEF_GET,
    P_DEF_ALL,
    P_DEF_INSERT,
    P_COUNT_BY_VERSION,
    P_NODE_RENEW,
    P_FENCE_EXPIRED,
    P_CLAIM,
    P_CLAIM_ONE,
    P_QUARANTINE,
    P_PURGE,
    P_LIST,
    P_ABORT,
    P_SCHED_INSERT,
    P_SCHED_FIRE,
    P_SCHED_CLAIM,
    P_SCHED_POSTPONE,
    P_SCHED_DELETE,
    P_SCHED_BY_ID,
    P_SCHED_BY_KEY,
    P_SCHED_LIST,
    P_SCHED_COUNT,
    N_PG_STMTS
};

#define SAGA_COLUMNS                                                                               \
    "id, type, state, failed_phase, client_key, input, cursor, n_steps, last_error, "              \
    "created_at_ms, updated_at_ms, def_version, deadline_at_ms, root_cause"

/* The columns of a scheduled start, in this order (see read_schedule). */
#define SCHED_COLUMNS                                                                              \
    "id, type, client_key, input, start_at_ms, deadline_ms, created_at_ms, retry_at_ms"
#define SCHED_N_COLUMNS 8

static const char *const pg_sql[N_PG_STMTS] = {
    [P_FENCE] = "SELECT CASE WHEN EXISTS (SELECT 1 FROM saga_nodes WHERE name = $1 AND epoch = $2 "
                "AND alive FOR SHARE) THEN 1 ELSE saga_reject('lease_lost', NULL) END",
    [P_SAGA_INSERT] =
        "INSERT INTO sagas (id, type, state, failed_phase, client_key, input, cursor, "
        "n_steps, last_error, created_at_ms, updated_at_ms, def_version, owner, "
        "owner_epoch, deadline_at_ms, root_cause) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
        "$10, $11, $12, $13, $14, $15, $16)",
    [P_SAGA_INSERT_KEYED] =
        "WITH i AS (INSERT INTO sagas (id, type, state, failed_phase, client_key, input, cursor, "
        "n_steps, last_error, created_at_ms, updated_at_ms, def_version, owner, owner_epoch, "
        "deadline_at_ms, root_cause) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
        "$13, $14, $15, $16) "
        "ON CONFLICT (client_key) WHERE client_key IS NOT NULL DO NOTHING RETURNING 1) "
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM i) AND NOT EXISTS (SELECT 1 FROM "
        "scheduled_starts WHERE client_key = $5 AND id <> $1) THEN 1 "
        "ELSE saga_reject('key_taken', $1) END",
    /* F6: queued before any insert with a key, as a statement of its own. */
    [P_KEY_LOCK] = "SELECT pg_advisory_xact_lock(" PG_STR(PG_LOCK_CLIENT_KEY) ", hashtext($1))",
    [P_SAGA_UPDATE] = "WITH u AS (UPDATE sagas SET state = $2, failed_phase = $3, cursor = $4, "
                      "last_error = $5, updated_at_ms = $6, root_cause = $9 WHERE id = $1 AND "
                      "owner = $7 AND owner_epoch = $8 RETURNING 1) "
                      "SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN 1 "
                      "ELSE saga_reject('not_owner', $1) END",
    [P_SAGA_OWNED] = "SELECT CASE WHEN EXISTS (SELECT 1 FROM sagas WHERE id = $1 AND owner = $2 "
                     "AND owner_epoch = $3 FOR UPDATE) THEN 1 "
                     "ELSE saga_reject('not_owner', $1) END",
    [P_STEP_INSERT] = "INSERT INTO saga_steps (saga_id, idx, name, participant, action, "
                      "compensation, state, action_key, compensation_key, action_attempts, "
                      "compensation_attempts, last_outcome, result, last_error, "
                      "next_attempt_at_ms, started_at_ms, finished_at_ms) "
                      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
                      "$16, $17)",
    [P_STEP_UPDATE] = "UPDATE saga_steps SET state = $3, action_attempts = $4, "
                      "compensation_attempts = $5, last_outcome = $6, result = $7, "
                      "last_error = $8, next_attempt_at_ms = $9, started_at_ms = $10, "
                      "finished_at_ms = $11 WHERE saga_id = $1 AND idx = $2",
    [P_HISTORY_INSERT] = "INSERT INTO saga_history (saga_id, at_ms, kind, step, phase, attempt, "
                         "outcome, replayed, detail) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    [P_SAGA_BY_ID] = "SELECT " SAGA_COLUMNS " FROM sagas WHERE id = $1",
    [P_STEPS_OF] = "SELECT idx, name, state, action_attempts, compensation_attempts, "
                   "last_outcome, result, last_error, next_attempt_at_ms, started_at_ms, "
                   "finished_at_ms FROM saga_steps WHERE saga_id = $1 ORDER BY idx",
    [P_CLIENT_KEY] = "SELECT id FROM sagas WHERE client_key = $1",
    [P_HISTORY] = "SELECT seq, at_ms, kind, step, phase, attempt, outcome, replayed, detail "
                  "FROM saga_history WHERE saga_id = $1 ORDER BY seq",
    [P_COUNT] = "SELECT state, count(*) FROM sagas GROUP BY state",
    [P_OLDEST_CREATED] = "SELECT coalesce(min(created_at_ms), 0) FROM sagas WHERE state = $1",
    [P_DEF_BY_HASH] = "SELECT version FROM saga_definitions WHERE type = $1 AND hash = $2",
    [P_DEF_MAX] = "SELECT coalesce(max(version), 0) FROM saga_definitions WHERE type = $1",
    [P_DEF_GET] = "SELECT type, version, hash, text, loaded_at_ms FROM saga_definitions "
                  "WHERE type = $1 AND version = $2",
    [P_DEF_ALL] = "SELECT type, version, hash, text, loaded_at_ms FROM saga_definitions "
                  "ORDER BY type, version",
    [P_DEF_INSERT] = "INSERT INTO saga_definitions (type, version, hash, text, loaded_at_ms) "
                     "VALUES ($1, $2, $3, $4, $5)",
    [P_COUNT_BY_VERSION] = "SELECT type, def_version, state, count(*) FROM sagas "
                           "WHERE state IN (1, 2, 5) GROUP BY type, def_version, state",
    [P_NODE_RENEW] =
        "UPDATE saga_nodes SET lease_until = clock_timestamp() + "
        "$3::bigint * interval '1 millisecond' WHERE name = $1 AND epoch = $2 AND alive",
    [P_FENCE_EXPIRED] = "UPDATE saga_nodes SET alive = false, epoch = epoch + 1 "
                        "WHERE alive AND lease_until < clock_timestamp() AND name <> $1",
    /* F4: owner fenced, gone, or an earlier life. */
    [P_CLAIM] = "UPDATE sagas SET owner = $1, owner_epoch = $2 WHERE seq IN ("
                "SELECT s.seq FROM sagas s WHERE s.state IN (1, 2) AND NOT EXISTS ("
                "SELECT 1 FROM saga_nodes n WHERE n.name = s.owner AND n.epoch = s.owner_epoch "
                "AND n.alive) ORDER BY s.seq LIMIT $3 FOR UPDATE OF s SKIP LOCKED) "
                "RETURNING id, seq",
    [P_CLAIM_ONE] = "UPDATE sagas SET owner = $2, owner_epoch = $3 WHERE id = $1 RETURNING 1",
    [P_QUARANTINE] = "UPDATE sagas SET state = 5, last_error = $2, "
                     "root_cause = coalesce(root_cause, $2), updated_at_ms = $3 WHERE id = $1",
    [P_PURGE] = "DELETE FROM sagas WHERE seq IN (SELECT seq FROM sagas WHERE state IN (3, 4) "
                "AND updated_at_ms < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
    /* Newest first, continuing below seq $1; $2 state (0 any), $3 type ('' any),
     * $5 client key, $6 id prefix (left(): equality is bytewise under any
     * deterministic collation, a range would not be), $7/$8 created at or
     * after / before (0: any). */
    [P_LIST] = "SELECT id, type, state, created_at_ms, updated_at_ms, last_error, seq, "
               "root_cause, client_key FROM sagas "
               "WHERE seq < $1 AND ($2 = 0 OR state = $2) AND ($3 = '' OR type = $3) "
               "AND ($5 = '' OR client_key = $5) AND ($6 = '' OR left(id, length($6)) = $6) "
               "AND ($7::bigint = 0 OR created_at_ms >= $7::bigint) "
               "AND ($8::bigint = 0 OR created_at_ms < $8::bigint) "
               "ORDER BY seq DESC LIMIT $4",
    /* Ends a pipeline that must not commit: the failure rolls it back. */
    [P_ABORT] = "SELECT saga_reject('rollback', NULL)",
    /* F6 for scheduled starts: its key free among starts and sagas. */
    [P_SCHED_INSERT] =
        "WITH i AS (INSERT INTO scheduled_starts (" SCHED_COLUMNS ") "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING 1) "
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM i) AND NOT EXISTS (SELECT 1 FROM sagas "
        "WHERE client_key = $3) THEN 1 ELSE saga_reject('key_taken', $1) END",
    /* F7: fired only under this node's claim. */
    [P_SCHED_FIRE] = "WITH d AS (DELETE FROM scheduled_starts WHERE id = $1 AND owner = $2 AND "
                     "owner_epoch = $3 RETURNING 1) "
                     "SELECT CASE WHEN EXISTS (SELECT 1 FROM d) THEN 1 "
                     "ELSE saga_reject('not_owner', $1) END",
    [P_SCHED_CLAIM] = "UPDATE scheduled_starts SET owner = $1, owner_epoch = $2 WHERE id IN ("
                      "SELECT s.id FROM scheduled_starts s WHERE s.start_at_ms <= $3 AND "
                      "s.retry_at_ms <= $3 AND ((s.owner = $1 AND s.owner_epoch = $2) OR "
                      "NOT EXISTS (SELECT 1 FROM saga_nodes n WHERE n.name = s.owner AND "
                      "n.epoch = s.owner_epoch AND n.alive)) "
                      "ORDER BY s.start_at_ms LIMIT $4 FOR UPDATE OF s SKIP LOCKED) "
                      "RETURNING " SCHED_COLUMNS,
    /* $1 NULL: every postponed start (store_schedule_postpone). */
    [P_SCHED_POSTPONE] = "UPDATE scheduled_starts SET retry_at_ms = $2 WHERE id = $1 OR "
                         "($1::text IS NULL AND retry_at_ms > 0)",
    [P_SCHED_DELETE] = "DELETE FROM scheduled_starts WHERE id = $1",
    [P_SCHED_BY_ID] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts WHERE id = $1",
    [P_SCHED_BY_KEY] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts WHERE client_key = $1",
    [P_SCHED_LIST] = "SELECT " SCHED_COLUMNS " FROM scheduled_starts "
                     "WHERE ($1 = '' OR id < $1) AND ($2 = '' OR type = $2) "
                     "ORDER BY id DESC LIMIT $3",
    [P_SCHED_COUNT] = "SELECT count(*) FROM scheduled_starts",
};

/* What a queued statement of the pipeline was, to read its result. */
typedef struct {
    enum pg_stmt stmt;
    char saga_id[37];
} pg_pending;

typedef struct pg_store {
    store base; /* first: the handle store.c dispatches on */
    PGconn *conn;
    char *url;
    int read_only, durability_full;
    int schema_ready; /* the schema exists: statements are prepared at each connect */
    int in_txn;       /* between store_begin and store_commit / store_rollback */
    int in_pipeline;  /* writes queued, not yet synced */
    pg_pending *pending;
    size_t n_pending, cap_pending;
    int defs_locked; /* holds PG_LOCK_DEFINITIONS until the end of the transaction */
    char err[768];
    int transient, corrupt_row;
    enum store_rejection rejection;
    char rejected_saga[37];
    int (*on_corrupt)(const char *saga_id, const char *why, void *arg);
    void *on_corrupt_arg;
    /* This node (store_node_join); node[0] == 0 before. */
    char node[128];
    char epoch[24];
    int64_t lease_ms;
} pg_store;

/* ---- Errors -------------------------------------------------------------- */

static void set_err(pg_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(pg_store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
}

/* The connection's last message, on one line. */
static const char *conn_msg(pg_store *st)
{
    static __thread char line[512];
    snprintf(line, sizeof line, "%s", st->conn ? PQerrorMessage(st->conn) : "not connected");
    for (char *p = line; *p; p++)
        if (*p == '\n')
            *p = (p[1] == '\0') ? '\0' : ' ';
    return line;
}

static int is_transient_state(const char *sqlstate)
{
    if (sqlstate == NULL)
        return 0;
    return strncmp(sqlstate, "08", 2) == 0 || /* connection exception */
           strcmp(sqlstate, "40001") == 0 ||  /* serialization failure */
           strcmp(sqlstate, "40P01") == 0 ||  /* deadlock detected */
           strcmp(sqlstate, "55P03") == 0 ||  /* lock_timeout */
           strncmp(sqlstate, "53", 2) == 0 || /* insufficient resources */
           strncmp(sqlstate, "57P0", 4) == 0; /* admin shutdown, crash, cannot connect now */
}

/* Records "<what>: <message>" for a failed result (res may be NULL: the
 * connection's message) and returns -1. */
static int res_fail(pg_store *st, PGresult *res, const char *what, const char *saga_id)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (msg == NULL || msg[0] == '\0')
        msg = conn_msg(st);
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    st->transient = is_transient_state(sqlstate) || PQstatus(st->conn) != CONNECTION_OK;
    st->corrupt_row = 0;
    char line[512];
    snprintf(line, sizeof line, "%s", msg);
    line[strcspn(line, "\n")] = '\0';
    if (saga_id != NULL)
        set_err(st, "%s %s: %s", what, saga_id, line);
    else
        set_err(st, "%s: %s", what, line);
    return -1;
}

static const char *pg_errmsg(store *base)
{
    pg_store *st = (pg_store *)base;
    return st->err[0] ? st->err : "no error";
}

/* ---- Parameters ---------------------------------------------------------- */

typedef struct {
    const char *v[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
    int n;
} params;

static void p_text(params *p, const char *s)
{
    p->v[p->n++] = s;
}

static void p_int(params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof p->num[0], "%" PRId64, x);
    p->v[p->n] = p->num[p->n];
    p->n++;
}

/* ---- Connection ------------------------------------------------------------ */

static int prepare_all(pg_store *st)
{
    for (int i = 0; i < N_PG_STMTS; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        PGresult *res = PQprepare(st->conn, name, pg_sql[i], 0, NULL);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            res_fail(st, res, "prepare", NULL);
        PQclear(res);
        if (!ok)
            return -1;
    }
    return 0;
}

static int exec_simple(pg_store *st, const char *sql, const char *what)
{
    PGresult *res = PQexec(st->conn, sql);
    ExecStatusType s = PQresultStatus(res);
    int rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? 0 : res_fail(st, res, what, NULL);
    PQclear(res);
    return rc;
}

/* Session settings: durability, bounded lock waits, and an open transaction
 * of a stopped node (SIGSTOP between two messages of a pipeline) ended by
 * the server, so that its locks never hold another node's takeover. */
static int configure_session(pg_store *st)
{
    char sql[512];
    int64_t lease = st->lease_ms > 0 ? st->lease_ms : 5000;
    snprintf(sql, sizeof sql,
             "SET synchronous_commit = %s; SET lock_timeout = %" PRId64
             "; SET idle_in_transaction_session_timeout = %" PRId64
             "; SET default_transaction_read_only = %s",
             st->durability_full ? "on" : "off", lease / 4 > 100 ? lease / 4 : 100, lease,
             st->read_only ? "on" : "off");
    return exec_simple(st, sql, "configure session");
}

/* One connection attempt: 0, or -1 with st->err set and *refused = 1 when the
 * server answered and refused (credentials, no such database, bad URI): no
 * point in trying again. */
static int connect_once(pg_store *st, int *refused)
{
    const char *const keys[] = {"fallback_application_name", "connect_timeout", "dbname", NULL};
    const char *const vals[] = {"sagad", "5", st->url, NULL};
    *refused = 0;
    if (st->conn != NULL)
        PQfinish(st->conn);
    /* libpq does not say why a connection failed, so PQping tells: a server
     * that accepts connections refused ours for good (credentials, database,
     * URI). But the server may have become ready between our attempt and the
     * ping ("the database system is starting up", then OK): a refusal counts
     * only when an attempt made after a ping that said OK fails too. */
    for (int attempt = 0;; attempt++) {
        st->conn = PQconnectdbParams(keys, vals, 1);
        if (st->conn == NULL) {
            set_err(st, "out of memory");
            return -1;
        }
        if (PQstatus(st->conn) == CONNECTION_OK)
            break;
        set_err(st, "cannot connect: %s", conn_msg(st));
        PQfinish(st->conn);
        st->conn = NULL;
        PGPing ping = PQpingParams(keys, vals, 1);
        int server_accepts = ping == PQPING_OK || ping == PQPING_NO_ATTEMPT;
        if (server_accepts && attempt == 0 && ping == PQPING_OK)
            continue;
        *refused = server_accepts;
        st->transient = !*refused;
        return -1;
    }
    st->in_pipeline = 0;
    st->n_pending = 0;
    st->defs_locked = 0;
    /* The statements name the tables: prepared once the schema is there. */
    if (configure_session(st) != 0 || (st->schema_ready && prepare_all(st) != 0)) {
        *refused = !st->transient;
        PQfinish(st->conn);
        st->conn = NULL;
        return -1;
    }
    return 0;
}

/* Reconnects a connection that was lost (the server restarted, the network
 * dropped): 0, or -1 (transient) with the reason. */
static int ensure_connected(pg_store *st)
{
    if (st->conn != NULL && PQstatus(st->conn) == CONNECTION_OK)
        return 0;
    int refused;
    if (connect_once(st, &refused) != 0) {
        st->transient = !refused;
        return -1;
    }
    log_info("store: reconnected to PostgreSQL");
    return 0;
}

/* ---- Schema creation ---------------------------------------------------- */

static int migrate(pg_store *st)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long)PG_LOCK_SCHEMA);
    if (exec_simple(st, sql, "lock schema") != 0)
        return -1;
    int rc = -1;
    PGresult *res = PQexec(st->conn, "SELECT to_regclass('saga_meta') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        res_fail(st, res, "read schema", NULL);
        PQclear(res);
        goto out;
    }
    int exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists) {
        /* One transaction: a crash leaves no schema or all of it. */
        char *all = malloc(sizeof schema_sql + 32);
        if (all == NULL) {
            set_err(st, "out of memory");
            goto out;
        }
        snprintf(all, sizeof schema_sql + 32, "BEGIN;%sCOMMIT;", schema_sql);
        rc = exec_simple(st, all, "create schema");
        free(all);
        if (rc != 0) {
            exec_simple(st, "ROLLBACK", "rollback");
            goto out;
        }
        log_info("store: created PostgreSQL schema version %d", PG_SCHEMA_VERSION);
    }
    res = PQexec(st->conn, "SELECT value FROM saga_meta WHERE key = 'schema'");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            set_err(st, "not a sagad database (saga_meta has no schema version)");
        else
            res_fail(st, res, "read schema version", NULL);
        PQclear(res);
        rc = -1;
        goto out;
    }
    long version = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    for (long from = version; from >= 1 && from < PG_SCHEMA_VERSION; from++) {
        size_t len = strlen(pg_migrations[from - 1]) + 32;
        char *step = malloc(len);
        if (step == NULL) {
            set_err(st, "out of memory");
            rc = -1;
            goto out;
        }
        snprintf(step, len, "BEGIN;%sCOMMIT;", pg_migrations[from - 1]);
        rc = exec_simple(st, step, "upgrade schema");
        free(step);
        if (rc != 0) {
            exec_simple(st, "ROLLBACK", "rollback");
            goto out;
        }
        if (exists) /* a new database is created at 1 and brought up quietly */
            log_info("store: PostgreSQL schema upgraded from version %ld to %ld", from, from + 1);
        version = from + 1;
    }
    if (version != PG_SCHEMA_VERSION) {
        set_err(st, "database schema version %ld, this sagad knows %d", version, PG_SCHEMA_VERSION);
        rc = -1;
        goto out;
    }
    rc = 0;
out:
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", (long long)PG_LOCK_SCHEMA);
    if (st->conn && PQstatus(st->conn) == CONNECTION_OK)
        PQclear(PQexec(st->conn, sql));
    return rc;
}

/* A read-only handle cannot create the schema: sagad's engine, which opens
 * the writable one first, does. */
static int check_schema(pg_store *st)
{
    PGresult *res = PQexec(st->conn, "SELECT CASE WHEN to_regclass('saga_meta') IS NULL THEN NULL "
                                     "ELSE (SELECT value FROM saga_meta WHERE key = 'schema') END");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        res_fail(st, res, "read schema version", NULL);
        PQclear(res);
        return -1;
    }
    int rc = 0;
    if (PQgetisnull(res, 0, 0)) {
        set_err(st, "database has no sagad schema yet (sagad creates it)");
        rc = -1;
    } else if (strtol(PQgetvalue(res, 0, 0), NULL, 10) != PG_SCHEMA_VERSION) {
        set_err(st, "database schema version %s, this program knows %d", PQgetvalue(res, 0, 0),
                PG_SCHEMA_VERSION);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static void pg_close(store *base);

store *store_pg_open(const char *url, int durability_full, int read_only, char *err, size_t errlen)
{
    pg_store *st = calloc(1, sizeof *st);
    char shown[512];
    db_url_display(url, shown, sizeof shown);
    if (st == NULL || (st->url = util_strdup(url)) == NULL) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->base.be = &store_pg_backend;
    st->read_only = read_only;
    st->durability_full = durability_full;
    /* A writer waits for a server that does not answer yet (started after
     * sagad, restarting): a line per try, never an exit loop. */
    int64_t delay_ms = 250;
    for (;;) {
        int refused;
        if (connect_once(st, &refused) == 0)
            break;
        if (refused || read_only) {
            snprintf(err, errlen, "%s: %s", shown, st->err);
            pg_close(&st->base);
            return NULL;
        }
        log_warn("store: PostgreSQL at %s does not answer (%s); trying again in %lld ms", shown,
                 st->err, (long long)delay_ms);
        if (wait_ms(delay_ms) != 0) {
            snprintf(err, errlen, "%s: stopped while waiting for the server", shown);
            pg_close(&st->base);
            return NULL;
        }
        delay_ms = delay_ms * 2 > 5000 ? 5000 : delay_ms * 2;
    }
    if ((read_only ? check_schema(st) : migrate(st)) != 0 || prepare_all(st) != 0) {
        snprintf(err, errlen, "%s: %s", shown, st->err);
        pg_close(&st->base);
        return NULL;
    }
    st->schema_ready = 1;
    return &st->base;
}

static void pg_close(store *base)
{
    pg_store *st = (pg_store *)base;
    if (st == NULL)
        return;
    if (st->conn != NULL)
        PQfinish(st->conn);
    free(st->pending);
    free(st->url);
    free(st);
}

/* ---- The pipeline of a round ------------------------------------------------ */

/* Queues a prepared statement of the round. */
static int queue(pg_store *st, enum pg_stmt q, const params *p, const char *saga_id)
{
    if (st->n_pending == st->cap_pending) {
        size_t ncap = st->cap_pending ? st->cap_pending * 2 : 64;
        pg_pending *n = realloc(st->pending, ncap * sizeof *n);
        if (n == NULL) {
            set_err(st, "out of memory");
            st->transient = 0;
            return -1;
        }
        st->pending = n;
        st->cap_pending = ncap;
    }
    if (!st->in_pipeline) {
        if (PQenterPipelineMode(st->conn) != 1)
            return res_fail(st, NULL, "enter pipeline mode", NULL);
        st->in_pipeline = 1;
    }
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)q);
    if (PQsendQueryPrepared(st->conn, name, p->n, p->v, NULL, NULL, 0) != 1)
        return res_fail(st, NULL, "send", saga_id);
    pg_pending *e = &st->pending[st->n_pending++];
    e->stmt = q;
    snprintf(e->saga_id, sizeof e->saga_id, "%s", saga_id ? saga_id : "");
    return 0;
}

/* F6: the round holds client_key's lock from here to its end. */
static int queue_key_lock(pg_store *st, const char *client_key, const char *saga_id)
{
    params p = {0};
    p_text(&p, client_key);
    return queue(st, P_KEY_LOCK, &p, saga_id);
}

/* Reads the result of every queued statement up to the Sync: 0 when all
 * succeeded, STORE_REJECTED when a rule of the round raised (the rest was
 * skipped and the implicit transaction rolled back), -1 otherwise. on_row,
 * when set, gets the rows of each result. */
static int sync_pipeline(pg_store *st, int (*on_row)(pg_store *st, PGresult *res, void *arg),
                         void *arg)
{
    if (!st->in_pipeline)
        return 0;
    int rc = 0;
    int sent = PQpipelineSync(st->conn) == 1;
    if (!sent)
        rc = res_fail(st, NULL, "sync", NULL);
    size_t idx = 0;
    int synced = rc != 0;
    while (!synced) {
        PGresult *res = PQgetResult(st->conn);
        if (res == NULL) {
            if (PQstatus(st->conn) != CONNECTION_OK) {
                if (rc == 0)
                    rc = res_fail(st, NULL, "commit", NULL);
                break;
            }
            idx++; /* the end of one statement's results */
            if (idx > st->n_pending + 1) {
                if (rc == 0) {
                    set_err(st, "commit: the pipeline returned more results than were sent");
                    rc = -1;
                }
                break;
            }
            continue;
        }
        ExecStatusType s = PQresultStatus(res);
        const char *saga_id = idx < st->n_pending ? st->pending[idx].saga_id : NULL;
        if (s == PGRES_PIPELINE_SYNC) {
            synced = 1;
        } else if (s == PGRES_FATAL_ERROR && rc == 0) {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (state != NULL && strcmp(state, "SG001") == 0) {
                const char *why = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
                const char *who = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
                why = why ? why : "";
                st->rejection = strcmp(why, "lease_lost") == 0  ? STORE_REJECT_LEASE_LOST
                                : strcmp(why, "key_taken") == 0 ? STORE_REJECT_KEY_TAKEN
                                                                : STORE_REJECT_NOT_OWNER;
                snprintf(st->rejected_saga, sizeof st->rejected_saga, "%s", who ? who : "");
                set_err(st, "round refused: %s %s", why, who ? who : "");
                rc = STORE_REJECTED;
            } else {
                rc = res_fail(st, res, "commit", saga_id && saga_id[0] ? saga_id : NULL);
            }
        } else if (s == PGRES_TUPLES_OK && rc == 0 && on_row != NULL) {
            if (on_row(st, res, arg) != 0)
                rc = -1;
        }
        PQclear(res);
    }
    /* The Sync left and the connection died before its answer: the round
     * may or may not have committed. Writing it again could repeat an insert;
     * acting on it could act on nothing. Only the database can tell. */
    if (sent && rc == -1 && PQstatus(st->conn) != CONNECTION_OK && st->n_pending > 0) {
        st->rejection = STORE_REJECT_OUTCOME_UNKNOWN;
        st->rejected_saga[0] = '\0';
        rc = STORE_REJECTED;
    }
    st->n_pending = 0;
    if (PQstatus(st->conn) == CONNECTION_OK && PQexitPipelineMode(st->conn) != 1 && rc == 0)
        rc = res_fail(st, NULL, "leave pipeline mode", NULL);
    st->in_pipeline = 0;
    return rc;
}

/* ---- Transactions ------------------------------------------------------------ */

static int pg_begin(store *base)
{
    pg_store *st = (pg_store *)base;
    st->rejection = STORE_REJECT_NONE;
    if (st->read_only) {
        st->in_txn = 1;
        return 0;
    }
    if (ensure_connected(st) != 0)
        return -1;
    st->in_txn = 1;
    if (st->node[0] != '\0') { /* F3 */
        params p = {0};
        p_text(&p, st->node);
        p_text(&p, st->epoch);
        if (queue(st, P_FENCE, &p, NULL) != 0)
            return -1;
    }
    return 0;
}

static void release_definitions_lock(pg_store *st)
{
    if (!st->defs_locked)
        return;
    st->defs_locked = 0;
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", (long long)PG_LOCK_DEFINITIONS);
    if (PQstatus(st->conn) == CONNECTION_OK)
        PQclear(PQexec(st->conn, sql));
}

static int pg_commit(store *base)
{
    pg_store *st = (pg_store *)base;
    st->in_txn = 0;
    int rc = sync_pipeline(st, NULL, NULL);
    release_definitions_lock(st);
    return rc;
}

/* Nothing of a round is sent until the Sync... except what was already
 * flushed: a pipeline cannot be taken back, so rollback ends it with a
 * statement that fails, which rolls the implicit transaction back. */
static void pg_rollback(store *base)
{
    pg_store *st = (pg_store *)base;
    st->in_txn = 0;
    if (st->in_pipeline && PQstatus(st->conn) == CONNECTION_OK) {
        char keep[sizeof st->err];
        memcpy(keep, st->err, sizeof keep);
        enum store_rejection rejection = st->rejection;
        params none = {0};
        if (queue(st, P_ABORT, &none, NULL) == 0)
            sync_pipeline(st, NULL, NULL);
        memcpy(st->err, keep, sizeof keep);
        st->rejection = rejection;
    }
    st->n_pending = 0;
    st->in_pipeline = 0;
    release_definitions_lock(st);
}

/* A synchronous read: queued writes are synced (committed) first. */
static PGresult *read_query(pg_store *st, enum pg_stmt q, const params *p, const char *what,
                            const char *saga_id)
{
    if (st->in_pipeline) {
        int rc = sync_pipeline(st, NULL, NULL);
        if (rc != 0)
            return NULL;
    }
    if (ensure_connected(st) != 0)
        return NULL;
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)q);
    PGresult *res = PQexecPrepared(st->conn, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(res);
    /* A connection that died while idle (the server restarted) is found
     * here: outside a transaction a read is asked again on a new one. */
    if (s == PGRES_FATAL_ERROR && PQstatus(st->conn) != CONNECTION_OK && !st->in_txn) {
        PQclear(res);
        if (ensure_connected(st) != 0)
            return NULL;
        res = PQexecPrepared(st->conn, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0);
        s = PQresultStatus(res);
    }
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        res_fail(st, res, what, saga_id);
        PQclear(res);
        return NULL;
    }
    return res;
}

/* A write outside a round (quarantine, definitions, claims): its own statement. */
static int write_now(pg_store *st, enum pg_stmt q, const params *p, const char *what,
                     const char *saga_id, int64_t *changed)
{
    PGresult *res = read_query(st, q, p, what, saga_id);
    if (res == NULL)
        return -1;
    if (changed != NULL)
        *changed = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return 0;
}

/* ---- Saving ------------------------------------------------------------------ */

static int check_write(pg_store *st, const char *what)
{
    if (st->read_only) {
        set_err(st, "%s: the store was opened read-only", what);
        st->transient = 0;
        return -1;
    }
    return 0;
}

static char *to_json(pg_store *st, const kvmap *m, int empty_is_null, int *failed)
{
    *failed = 0;
    if (m->len == 0 && empty_is_null)
        return NULL;
    char *json = kv_to_json(m);
    if (json == NULL) {
        set_err(st, "out of memory");
        st->transient = 0;
        *failed = 1;
    }
    return json;
}

static int insert_saga(pg_store *st, const saga *s)
{
    if (s->def == NULL || s->def->n_steps != s->n_steps) {
        set_err(st, "save saga %s: a new saga needs its definition (%zu steps)", s->id, s->n_steps);
        return -1;
    }
    int failed;
    char *input = to_json(st, &s->input, 0, &failed);
    if (failed)
        return -1;
    params p = {0};
    p_text(&p, s->id);
    p_text(&p, s->type);
    p_int(&p, s->state);
    p_int(&p, s->failed_phase);
    p_text(&p, s->client_key);
    p_text(&p, input);
    p_int(&p, s->cursor);
    p_int(&p, (int64_t)s->n_steps);
    p_text(&p, s->last_error);
    p_int(&p, s->created_at_ms);
    p_int(&p, s->updated_at_ms);
    p_int(&p, s->def_version);
    p_text(&p, st->node[0] ? st->node : "-");
    p_text(&p, st->node[0] ? st->epoch : "0");
    p_int(&p, s->deadline_at_ms);
    p_text(&p, s->root_cause);
    int rc = s->client_key ? queue_key_lock(st, s->client_key, s->id) : 0;
    if (rc == 0)
        rc = queue(st, s->client_key ? P_SAGA_INSERT_KEYED : P_SAGA_INSERT, &p, s->id);
    free(input);
    for (size_t i = 0; rc == 0 && i < s->n_steps; i++) {
        const step_def *sd = &s->def->steps[i];
        const step_run *r = &s->steps[i];
        char action_key[WIRE_MAX_KEY + 1], compensation_key[WIRE_MAX_KEY + 1];
        saga_step_key(s, (int)i, PHASE_ACTION, action_key, sizeof action_key);
        saga_step_key(s, (int)i, PHASE_COMPENSATE, compensation_key, sizeof compensation_key);
        char *result = to_json(st, &r->result, 1, &failed);
        if (failed)
            return -1;
        params q = {0};
        p_text(&q, s->id);
        p_int(&q, (int64_t)i);
        p_text(&q, sd->name);
        p_text(&q, sd->participant);
        p_text(&q, sd->action);
        p_text(&q, sd->compensation);
        p_int(&q, r->state);
        p_text(&q, action_key);
        p_text(&q, sd->compensation ? compensation_key : NULL);
        p_int(&q, r->action_attempts);
        p_int(&q, r->compensation_attempts);
        p_int(&q, r->last_outcome);
        p_text(&q, result);
        p_text(&q, r->last_error);
        p_int(&q, r->next_attempt_at_ms);
        p_int(&q, r->started_at_ms);
        p_int(&q, r->finished_at_ms);
        rc = queue(st, P_STEP_INSERT, &q, s->id);
        free(result);
    }
    return rc;
}

static int update_saga(pg_store *st, const saga *s)
{
    const char *owner = st->node[0] ? st->node : "-";
    const char *epoch = st->node[0] ? st->epoch : "0";
    params p = {0};
    p_text(&p, s->id);
    if (s->dirty & SAGA_DIRTY_ROW) { /* F5 */
        p_int(&p, s->state);
        p_int(&p, s->failed_phase);
        p_int(&p, s->cursor);
        p_text(&p, s->last_error);
        p_int(&p, s->updated_at_ms);
        p_text(&p, owner);
        p_text(&p, epoch);
        p_text(&p, s->root_cause);
        if (queue(st, P_SAGA_UPDATE, &p, s->id) != 0)
            return -1;
    } else {
        p_text(&p, owner);
        p_text(&p, epoch);
        if (queue(st, P_SAGA_OWNED, &p, s->id) != 0)
            return -1;
    }
    for (uint64_t bits = s->dirty_steps; bits != 0; bits &= bits - 1) {
        int i = __builtin_ctzll(bits);
        const step_run *r = &s->steps[i];
        int failed;
        char *result = to_json(st, &r->result, 1, &failed);
        if (failed)
            return -1;
        params q = {0};
        p_text(&q, s->id);
        p_int(&q, i);
        p_int(&q, r->state);
        p_int(&q, r->action_attempts);
        p_int(&q, r->compensation_attempts);
        p_int(&q, r->last_outcome);
        p_text(&q, result);
        p_text(&q, r->last_error);
        p_int(&q, r->next_attempt_at_ms);
        p_int(&q, r->started_at_ms);
        p_int(&q, r->finished_at_ms);
        int rc = queue(st, P_STEP_UPDATE, &q, s->id);
        free(result);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int pg_save_saga(store *base, const saga *s)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "save saga") != 0)
        return -1;
    if (s->dirty == 0 && s->dirty_steps == 0)
        return 0;
    if (strlen(s->id) == 0 || s->n_steps > SAGA_MAX_STEPS ||
        (s->n_steps < SAGA_MAX_STEPS && (s->dirty_steps >> s->n_steps) != 0)) {
        set_err(st, "save saga '%s': invalid id, step count %zu or dirty steps", s->id, s->n_steps);
        st->transient = 0;
        return -1;
    }
    int own = !st->in_txn;
    if (own && pg_begin(base) != 0)
        return -1;
    int rc = (s->dirty & SAGA_DIRTY_NEW) ? insert_saga(st, s) : update_saga(st, s);
    if (own) {
        if (rc == 0)
            return pg_commit(base);
        pg_rollback(base);
    }
    return rc;
}

static int pg_append_history(store *base, const char *saga_id, int64_t at_ms, const saga_event *ev,
                             const char *step_name)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "append history") != 0)
        return -1;
    int own = !st->in_txn;
    if (own && pg_begin(base) != 0)
        return -1;
    params p = {0};
    p_text(&p, saga_id);
    p_int(&p, at_ms);
    p_text(&p, ev->kind);
    p_text(&p, ev->step >= 0 ? step_name : NULL);
    p_int(&p, ev->phase);
    p_int(&p, ev->attempt);
    p_int(&p, ev->outcome);
    p_int(&p, ev->replayed ? 1 : 0);
    p_text(&p, ev->detail);
    int rc = queue(st, P_HISTORY_INSERT, &p, saga_id);
    if (own) {
        if (rc == 0)
            return pg_commit(base);
        pg_rollback(base);
    }
    return rc;
}

/* ---- Loading ------------------------------------------------------------------ */

static const char *val_or_null(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static int64_t val_int(PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static int dup_or_null(PGresult *res, int row, int col, char **out)
{
    const char *v = val_or_null(res, row, col);
    *out = v ? util_strdup(v) : NULL;
    return v != NULL && *out == NULL ? -1 : 0;
}

static int corrupt(pg_store *st, const char *fmt, const char *id)
{
    set_err(st, fmt, id);
    st->corrupt_row = 1;
    st->transient = 0;
    return -1;
}

static int load_steps(pg_store *st, saga *s)
{
    params p = {0};
    p_text(&p, s->id);
    PGresult *res = read_query(st, P_STEPS_OF, &p, "load steps of saga", s->id);
    if (res == NULL)
        return -1;
    int rc = -1;
    size_t n = (size_t)PQntuples(res);
    if (n != s->n_steps) {
        set_err(st, "load saga %s: %zu step rows, expected %zu", s->id, n, s->n_steps);
        st->corrupt_row = 1;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        int row = (int)i;
        int64_t idx = val_int(res, row, 0), state = val_int(res, row, 2);
        int64_t a_att = val_int(res, row, 3), c_att = val_int(res, row, 4);
        int64_t outcome = val_int(res, row, 5);
        if (idx != (int64_t)i || state < STEP_PENDING || state > STEP_COMPENSATED || a_att < 0 ||
            a_att > UINT32_MAX || c_att < 0 || c_att > UINT32_MAX || outcome < INT_MIN ||
            outcome > INT_MAX) {
            corrupt(st, "load saga %s: corrupt step row", s->id);
            goto out;
        }
        step_run *r = &s->steps[i];
        r->state = (step_state)state;
        r->action_attempts = (uint32_t)a_att;
        r->compensation_attempts = (uint32_t)c_att;
        r->last_outcome = (int)outcome;
        r->next_attempt_at_ms = val_int(res, row, 8);
        r->started_at_ms = val_int(res, row, 9);
        r->finished_at_ms = val_int(res, row, 10);
        const char *result = val_or_null(res, row, 6);
        if (result != NULL && kv_from_json(&r->result, result) != 0) {
            corrupt(st, "load saga %s: unreadable step result", s->id);
            goto out;
        }
        if (dup_or_null(res, row, 7, &r->last_error) != 0) {
            set_err(st, "load saga %s: out of memory", s->id);
            goto out;
        }
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static int pg_load_saga(store *base, const char *id, saga **out)
{
    pg_store *st = (pg_store *)base;
    st->corrupt_row = 0;
    params p = {0};
    p_text(&p, id);
    /* The saga row and its steps from one snapshot: a round of the owner
     * commits both at once. */
    int own_txn = !st->in_pipeline && !st->in_txn;
    if (own_txn && ensure_connected(st) != 0)
        return -1;
    if (own_txn && exec_simple(st, "BEGIN ISOLATION LEVEL REPEATABLE READ", "load saga") != 0 &&
        (PQstatus(st->conn) == CONNECTION_OK || ensure_connected(st) != 0 ||
         exec_simple(st, "BEGIN ISOLATION LEVEL REPEATABLE READ", "load saga") != 0))
        return -1; /* asked again once on a new connection when the old one had died */
    PGresult *res = read_query(st, P_SAGA_BY_ID, &p, "load saga", id);
    int rc = -1;
    saga *s = NULL;
    if (res == NULL)
        goto out;
    if (PQntuples(res) == 0) {
        rc = STORE_NOT_FOUND;
        goto out;
    }
    const char *sid = PQgetvalue(res, 0, 0);
    int64_t state = val_int(res, 0, 2), failed_phase = val_int(res, 0, 3);
    int64_t cursor = val_int(res, 0, 6), n_steps = val_int(res, 0, 7);
    int64_t def_version = val_int(res, 0, 11);
    if (def_version < 0 || def_version > UINT32_MAX || strlen(sid) == 0 || strlen(sid) > 36 ||
        state < SAGA_RUNNING || state > SAGA_FAILED || n_steps < 0 || n_steps > SAGA_MAX_STEPS ||
        cursor < 0 || cursor >= (n_steps > 0 ? n_steps : 1) || failed_phase < INT_MIN ||
        failed_phase > INT_MAX) {
        corrupt(st, "load saga '%s': corrupt saga row", id);
        goto out;
    }
    s = saga_alloc((size_t)n_steps);
    if (s == NULL) {
        set_err(st, "load saga %s: out of memory", id);
        goto out;
    }
    memcpy(s->id, sid, strlen(sid) + 1);
    s->state = (saga_state)state;
    s->failed_phase = (int)failed_phase;
    s->cursor = (int)cursor;
    s->created_at_ms = val_int(res, 0, 9);
    s->updated_at_ms = val_int(res, 0, 10);
    s->def_version = (uint32_t)def_version;
    s->deadline_at_ms = val_int(res, 0, 12);
    if (dup_or_null(res, 0, 1, &s->type) != 0 || s->type == NULL ||
        dup_or_null(res, 0, 4, &s->client_key) != 0 || dup_or_null(res, 0, 8, &s->last_error) ||
        dup_or_null(res, 0, 13, &s->root_cause) != 0) {
        set_err(st, "load saga %s: out of memory", id);
        goto out;
    }
    if (kv_from_json(&s->input, PQgetvalue(res, 0, 5)) != 0) {
        corrupt(st, "load saga %s: unreadable input", id);
        goto out;
    }
    if (load_steps(st, s) != 0)
        goto out;
    *out = s;
    s = NULL;
    rc = 0;
out:
    PQclear(res);
    saga_free(s);
    if (own_txn && st->conn != NULL && PQstatus(st->conn) == CONNECTION_OK) {
        char keep[sizeof st->err];
        memcpy(keep, st->err, sizeof keep);
        exec_simple(st, "COMMIT", "load saga");
        memcpy(st->err, keep, sizeof keep);
    }
    return rc;
}

/* Hands over the sagas whose ids are in ids (loaded one by one): the shared
 * part of recovery and claims. */
static int hand_over(pg_store *st, char (*ids)[37], size_t n, int (*fn)(saga *s, void *arg),
                     void *arg)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        saga *s;
        int found = pg_load_saga(&st->base, ids[i], &s);
        if (found == STORE_NOT_FOUND)
            continue;
        if (found != 0 && st->corrupt_row && st->on_corrupt != NULL) {
            char why[sizeof st->err];
            memcpy(why, st->err, sizeof why);
            rc = st->on_corrupt(ids[i], why, st->on_corrupt_arg);
            continue;
        }
        if (found != 0)
            return -1;
        if (s->state != SAGA_RUNNING && s->state != SAGA_COMPENSATING) {
            saga_free(s);
            continue;
        }
        rc = fn(s, arg);
    }
    return rc;
}

/* One node's recovery is its claims (store_claim_orphans): sagas are only
 * ever resumed by the node that owns them. This walk is what a single node
 * with no lease would do: every unfinished saga, oldest first. */
static int pg_load_unfinished(store *base, int (*fn)(saga *s, void *arg), void *arg)
{
    pg_store *st = (pg_store *)base;
    char(*ids)[37] = malloc(PG_RECOVERY_BATCH * sizeof *ids);
    if (ids == NULL) {
        set_err(st, "out of memory");
        return -1;
    }
    int64_t after = 0;
    int rc = 0;
    for (;;) {
        char sql[200];
        snprintf(sql, sizeof sql,
                 "SELECT seq, id FROM sagas WHERE state IN (1, 2) AND seq > %" PRId64
                 " ORDER BY seq LIMIT %d",
                 after, PG_RECOVERY_BATCH);
        if (ensure_connected(st) != 0) {
            rc = -1;
            break;
        }
        PGresult *res = PQexec(st->conn, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = res_fail(st, res, "load unfinished sagas", NULL);
            PQclear(res);
            break;
        }
        size_t n = (size_t)PQntuples(res);
        for (size_t i = 0; i < n; i++) {
            snprintf(ids[i], sizeof ids[i], "%s", PQgetvalue(res, (int)i, 1));
            after = val_int(res, (int)i, 0);
        }
        PQclear(res);
        rc = hand_over(st, ids, n, fn, arg);
        if (rc != 0 || n < PG_RECOVERY_BATCH)
            break;
    }
    free(ids);
    return rc;
}

/* ---- Queries for the admin server ------------------------------------------ */

static int pg_find_client_key(store *base, const char *client_key, char id_out[37])
{
    pg_store *st = (pg_store *)base;
    if (client_key == NULL)
        return STORE_NOT_FOUND;
    params p = {0};
    p_text(&p, client_key);
    PGresult *res = read_query(st, P_CLIENT_KEY, &p, "find client key", NULL);
    if (res == NULL)
        return -1;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(res) > 0) {
        const char *id = PQgetvalue(res, 0, 0);
        if (strlen(id) == 0 || strlen(id) > 36) {
            set_err(st, "find client key: corrupt saga id '%.40s'", id);
            rc = -1;
        } else {
            memcpy(id_out, id, strlen(id) + 1);
            rc = 0;
        }
    }
    PQclear(res);
    return rc;
}

static int pg_search(store *base, const store_search_filter *f,
                     int (*fn)(const store_summary *row, void *arg), void *arg)
{
    pg_store *st = (pg_store *)base;
    int64_t before = INT64_MAX;
    if (f->after_id != NULL && f->after_id[0] != '\0') {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT seq FROM sagas WHERE id = $1");
        if (ensure_connected(st) != 0)
            return -1;
        const char *v[1] = {f->after_id};
        PGresult *res = PQexecParams(st->conn, sql, 1, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            res_fail(st, res, "list sagas", NULL);
            PQclear(res);
            return -1;
        }
        if (PQntuples(res) == 0) {
            PQclear(res);
            return 0; /* a cursor that names no saga: an empty page (as in SQLite) */
        }
        before = val_int(res, 0, 0);
        PQclear(res);
    }
    params p = {0};
    p_int(&p, before);
    p_int(&p, f->state);
    p_text(&p, f->type ? f->type : "");
    if (f->limit == 0)
        p_text(&p, NULL); /* LIMIT NULL: all */
    else
        p_int(&p, f->limit);
    p_text(&p, f->client_key ? f->client_key : "");
    p_text(&p, f->id_prefix ? f->id_prefix : "");
    p_int(&p, f->created_after_ms);
    p_int(&p, f->created_before_ms);
    PGresult *res = read_query(st, P_LIST, &p, "list sagas", NULL);
    if (res == NULL)
        return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        store_summary row = {
            .saga_id = PQgetvalue(res, i, 0),
            .type = PQgetvalue(res, i, 1),
            .state = (int)val_int(res, i, 2),
            .created_at_ms = val_int(res, i, 3),
            .updated_at_ms = val_int(res, i, 4),
            .last_error = val_or_null(res, i, 5),
            .root_cause = val_or_null(res, i, 7),
            .client_key = val_or_null(res, i, 8),
        };
        rc = fn(&row, arg);
    }
    PQclear(res);
    return rc;
}

static int pg_list(store *base, int state, const char *type, const char *after_id, uint32_t limit,
                   int (*fn)(const store_summary *row, void *arg), void *arg)
{
    store_search_filter f = {.state = state, .type = type, .after_id = after_id, .limit = limit};
    return pg_search(base, &f, fn, arg);
}

static int pg_history(store *base, const char *saga_id, int (*fn)(const store_event *ev, void *arg),
                      void *arg)
{
    pg_store *st = (pg_store *)base;
    params p = {0};
    p_text(&p, saga_id);
    PGresult *res = read_query(st, P_HISTORY, &p, "read history of saga", saga_id);
    if (res == NULL)
        return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        int64_t attempt = val_int(res, i, 5);
        const char *step = val_or_null(res, i, 3), *detail = val_or_null(res, i, 8);
        store_event ev = {
            .seq = (uint64_t)val_int(res, i, 0),
            .at_ms = val_int(res, i, 1),
            .kind = PQgetvalue(res, i, 2),
            .step = step ? step : "",
            .phase = (int)val_int(res, i, 4),
            .attempt = attempt < 0 || attempt > UINT32_MAX ? 0 : (uint32_t)attempt,
            .outcome = (int)val_int(res, i, 6),
            .replayed = (int)val_int(res, i, 7),
            .detail = detail ? detail : "",
        };
        rc = fn(&ev, arg);
    }
    PQclear(res);
    return rc;
}

static int pg_count_by_state(store *base, uint64_t counts[6])
{
    pg_store *st = (pg_store *)base;
    PGresult *res = read_query(st, P_COUNT, NULL, "count sagas", NULL);
    if (res == NULL)
        return -1;
    uint64_t local[6] = {0};
    for (int i = 0; i < PQntuples(res); i++) {
        int64_t state = val_int(res, i, 0);
        if (state >= SAGA_RUNNING && state <= SAGA_FAILED)
            local[state] = (uint64_t)val_int(res, i, 1);
    }
    PQclear(res);
    memcpy(counts, local, sizeof local);
    return 0;
}

static int pg_oldest_created(store *base, int state, int64_t *ms)
{
    pg_store *st = (pg_store *)base;
    params p = {0};
    p_int(&p, state);
    PGresult *res = read_query(st, P_OLDEST_CREATED, &p, "find the oldest saga", NULL);
    if (res == NULL)
        return -1;
    *ms = PQntuples(res) == 1 ? val_int(res, 0, 0) : 0;
    PQclear(res);
    return 0;
}

/* ---- Definition versions ------------------------------------------------------ */

/* Nodes starting together register their definitions one after the other:
 * each finds the versions the others stored (the same text is the same
 * version everywhere). Held until the end of the caller's transaction. */
static int lock_definitions(pg_store *st)
{
    if (st->read_only || !st->in_txn || st->defs_locked)
        return 0;
    if (st->in_pipeline && sync_pipeline(st, NULL, NULL) != 0)
        return -1;
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long)PG_LOCK_DEFINITIONS);
    if (ensure_connected(st) != 0 || exec_simple(st, sql, "lock definitions") != 0)
        return -1;
    st->defs_locked = 1;
    return 0;
}

static int pg_definition_version(store *base, const char *type, const char *hash, uint32_t *version)
{
    pg_store *st = (pg_store *)base;
    if (lock_definitions(st) != 0)
        return -1;
    params p = {0};
    p_text(&p, type);
    p_text(&p, hash);
    PGresult *res = read_query(st, P_DEF_BY_HASH, &p, "find definition of", type);
    if (res == NULL)
        return -1;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(res) > 0) {
        int64_t v = val_int(res, 0, 0);
        if (v < 1 || v > UINT32_MAX) {
            set_err(st, "definition of %s: corrupt version %" PRId64, type, v);
            rc = -1;
        } else {
            *version = (uint32_t)v;
            rc = 0;
        }
    }
    PQclear(res);
    return rc;
}

static int pg_definition_max(store *base, const char *type, uint32_t *version)
{
    pg_store *st = (pg_store *)base;
    if (lock_definitions(st) != 0)
        return -1;
    params p = {0};
    p_text(&p, type);
    PGresult *res = read_query(st, P_DEF_MAX, &p, "read versions of", type);
    if (res == NULL)
        return -1;
    int64_t v = val_int(res, 0, 0);
    PQclear(res);
    if (v < 0 || v > UINT32_MAX) {
        set_err(st, "definition of %s: corrupt version %" PRId64, type, v);
        return -1;
    }
    *version = (uint32_t)v;
    return 0;
}

static int pg_definition_add(store *base, const store_definition *d)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "add definition") != 0)
        return -1;
    params p = {0};
    p_text(&p, d->type);
    p_int(&p, d->version);
    p_text(&p, d->hash);
    p_text(&p, d->text);
    p_int(&p, d->loaded_at_ms);
    return write_now(st, P_DEF_INSERT, &p, "add definition of", d->type, NULL);
}

static int read_definitions(pg_store *st, PGresult *res,
                            int (*fn)(const store_definition *d, void *arg), void *arg)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        int64_t v = val_int(res, i, 1);
        if (v < 1 || v > UINT32_MAX) {
            set_err(st, "corrupt definition version %" PRId64, v);
            return -1;
        }
        store_definition d = {
            .type = PQgetvalue(res, i, 0),
            .version = (uint32_t)v,
            .hash = PQgetvalue(res, i, 2),
            .text = PQgetvalue(res, i, 3),
            .loaded_at_ms = val_int(res, i, 4),
        };
        rc = fn(&d, arg);
    }
    return rc;
}

static int pg_definition_get(store *base, const char *type, uint32_t version,
                             int (*fn)(const store_definition *d, void *arg), void *arg)
{
    pg_store *st = (pg_store *)base;
    params p = {0};
    p_text(&p, type);
    p_int(&p, version);
    PGresult *res = read_query(st, P_DEF_GET, &p, "read definition of", type);
    if (res == NULL)
        return -1;
    int rc = PQntuples(res) == 0 ? STORE_NOT_FOUND : read_definitions(st, res, fn, arg);
    PQclear(res);
    return rc;
}

static int pg_definitions(store *base, int (*fn)(const store_definition *d, void *arg), void *arg)
{
    pg_store *st = (pg_store *)base;
    PGresult *res = read_query(st, P_DEF_ALL, NULL, "list definitions", NULL);
    if (res == NULL)
        return -1;
    int rc = read_definitions(st, res, fn, arg);
    PQclear(res);
    return rc;
}

static int pg_count_by_version(store *base,
                               int (*fn)(const char *type, uint32_t version, int state, uint64_t n,
                                         void *arg),
                               void *arg)
{
    pg_store *st = (pg_store *)base;
    PGresult *res = read_query(st, P_COUNT_BY_VERSION, NULL, "count sagas by version", NULL);
    if (res == NULL)
        return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        int64_t v = val_int(res, i, 1);
        rc = fn(PQgetvalue(res, i, 0), v < 0 || v > UINT32_MAX ? 0 : (uint32_t)v,
                (int)val_int(res, i, 2), (uint64_t)val_int(res, i, 3), arg);
    }
    PQclear(res);
    return rc;
}

/* Every saga in a PostgreSQL database was stored with its version. */
static int pg_pin_unversioned(store *base, const char *type, uint32_t version)
{
    (void)base;
    (void)type;
    (void)version;
    return 0;
}

/* ---- Resilience ---------------------------------------------------------------- */

static int pg_error_is_transient(const store *base)
{
    return ((const pg_store *)base)->transient;
}

static int pg_error_is_corrupt_row(const store *base)
{
    return ((const pg_store *)base)->corrupt_row;
}

static void pg_set_corrupt_row_handler(store *base,
                                       int (*fn)(const char *saga_id, const char *why, void *arg),
                                       void *arg)
{
    pg_store *st = (pg_store *)base;
    st->on_corrupt = fn;
    st->on_corrupt_arg = arg;
}

static int pg_quarantine_saga(store *base, const char *saga_id, const char *why, int64_t now_ms)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "quarantine saga") != 0)
        return -1;
    int own = !st->in_txn;
    if (own && pg_begin(base) != 0)
        return -1;
    params p = {0};
    p_text(&p, saga_id);
    p_text(&p, why);
    p_int(&p, now_ms);
    int rc = queue(st, P_QUARANTINE, &p, saga_id);
    if (rc == 0) {
        saga_event ev = {"saga_quarantined", -1, PHASE_ACTION, 0, -1, 0, why};
        rc = pg_append_history(base, saga_id, now_ms, &ev, NULL);
    }
    if (own) {
        if (rc == 0)
            return pg_commit(base);
        pg_rollback(base);
    }
    return rc;
}

static int pg_purge_finished(store *base, int64_t cutoff_ms, int batch, uint64_t *purged)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "purge finished sagas") != 0)
        return -1;
    params p = {0};
    p_int(&p, cutoff_ms);
    p_int(&p, batch);
    int64_t n = 0;
    if (write_now(st, P_PURGE, &p, "purge finished sagas", NULL, &n) != 0)
        return -1;
    *purged = (uint64_t)n;
    return 0;
}

/* ---- Several nodes ---------------------------------------------------------------- */

static int pg_node_join(store *base, const char *node_name, int64_t lease_ms)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "join") != 0)
        return -1;
    if (strlen(node_name) == 0 || strlen(node_name) >= sizeof st->node) {
        set_err(st, "node name '%s': 1 to %zu bytes", node_name, sizeof st->node - 1);
        return -1;
    }
    st->lease_ms = lease_ms;
    /* The same name alive in a lease that has not expired is another
     * process with this name (or this node's previous life, SIGKILLed less
     * than a lease ago): wait until it expires, then take the name with a new
     * epoch, which fences everything the previous life owned (F1, F4). */
    char lease[24], pid[24];
    snprintf(lease, sizeof lease, "%" PRId64, lease_ms);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    /* This node joining again (its lease lost, or a commit's outcome
     * unknown) may replace its own live epoch at once. */
    const char *v[4] = {node_name, lease, pid, st->node[0] ? st->epoch : "0"};
    int warned = 0;
    for (;;) {
        if (ensure_connected(st) != 0)
            return -1;
        PGresult *res = PQexecParams(
            st->conn,
            "INSERT INTO saga_nodes AS n (name, epoch, alive, lease_until, joined_at, pid) "
            "VALUES ($1, 1, true, clock_timestamp() + $2::bigint * interval '1 millisecond', "
            "clock_timestamp(), $3) ON CONFLICT (name) DO UPDATE SET epoch = n.epoch + 1, "
            "alive = true, lease_until = excluded.lease_until, joined_at = excluded.joined_at, "
            "pid = excluded.pid WHERE NOT n.alive OR n.lease_until < clock_timestamp() "
            "OR n.epoch = $4 RETURNING epoch",
            4, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            res_fail(st, res, "join as node", node_name);
            PQclear(res);
            return -1;
        }
        if (PQntuples(res) == 1) {
            snprintf(st->epoch, sizeof st->epoch, "%s", PQgetvalue(res, 0, 0));
            PQclear(res);
            break;
        }
        PQclear(res);
        if (!warned++)
            log_warn("store: node name '%s' is held by a live lease (another sagad with this "
                     "node_name, or this node's previous life); waiting for it to expire",
                     node_name);
        if (wait_ms(200) != 0) {
            set_err(st, "stopped while waiting for the name '%s'", node_name);
            return -1;
        }
    }
    snprintf(st->node, sizeof st->node, "%s", node_name);
    /* Session timeouts follow the lease. */
    if (configure_session(st) != 0)
        return -1;
    log_info("store: joined as node '%s' (epoch %s, lease %" PRId64 " ms)", st->node, st->epoch,
             lease_ms);
    return 0;
}

static int pg_node_renew(store *base)
{
    pg_store *st = (pg_store *)base;
    if (st->node[0] == '\0')
        return 0;
    char lease[24];
    snprintf(lease, sizeof lease, "%" PRId64, st->lease_ms);
    const char *v[3] = {st->node, st->epoch, lease};
    if (ensure_connected(st) != 0)
        return -1;
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)P_NODE_RENEW);
    PGresult *res = PQexecPrepared(st->conn, name, 3, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        res_fail(st, res, "renew the lease of node", st->node);
        PQclear(res);
        return -1;
    }
    int renewed = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!renewed) {
        set_err(st, "node '%s' lost its lease (epoch %s was fenced by another node)", st->node,
                st->epoch);
        st->rejection = STORE_REJECT_LEASE_LOST;
        st->rejected_saga[0] = '\0';
        return STORE_REJECTED;
    }
    return 0;
}

static int pg_node_leave(store *base)
{
    pg_store *st = (pg_store *)base;
    if (st->node[0] == '\0' || ensure_connected(st) != 0)
        return st->node[0] == '\0' ? 0 : -1;
    const char *v[2] = {st->node, st->epoch};
    PGresult *res = PQexecParams(st->conn,
                                 "UPDATE saga_nodes SET alive = false, epoch = epoch + 1 "
                                 "WHERE name = $1 AND epoch = $2 AND alive",
                                 2, NULL, v, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc != 0)
        res_fail(st, res, "leave as node", st->node);
    else
        log_info("store: node '%s' left: its unfinished sagas go to the other nodes now", st->node);
    PQclear(res);
    st->node[0] = '\0';
    return rc;
}

typedef struct {
    char (*ids)[37];
    size_t n, max;
} claimed;

static int collect_claimed(pg_store *st, PGresult *res, void *arg)
{
    claimed *c = arg;
    (void)st;
    if (PQnfields(res) != 2)
        return 0; /* the fence check's row */
    for (int i = 0; i < PQntuples(res) && c->n < c->max; i++)
        snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", PQgetvalue(res, i, 0));
    return 0;
}

static int pg_claim_orphans(store *base, uint32_t max, int (*fn)(const char *saga_id, void *arg),
                            void *arg)
{
    pg_store *st = (pg_store *)base;
    if (st->node[0] == '\0' || max == 0)
        return 0;
    claimed c = {malloc(max * sizeof *c.ids), 0, max};
    if (c.ids == NULL) {
        set_err(st, "out of memory");
        return -1;
    }
    /* One implicit transaction: this node's lease (F3), then the fencing of
     * expired ones (F2), then the claim (F4). */
    int rc = pg_begin(base);
    params fence = {0}, claim = {0};
    p_text(&fence, st->node);
    p_text(&claim, st->node);
    p_text(&claim, st->epoch);
    p_int(&claim, max);
    if (rc == 0)
        rc = queue(st, P_FENCE_EXPIRED, &fence, NULL);
    if (rc == 0)
        rc = queue(st, P_CLAIM, &claim, NULL);
    st->in_txn = 0;
    if (rc == 0)
        rc = sync_pipeline(st, collect_claimed, &c);
    else
        pg_rollback(base);
    if (rc == 0) {
        for (size_t i = 0; i < c.n; i++)
            if (fn(c.ids[i], arg) != 0)
                break;
        rc = (int)c.n;
    }
    free(c.ids);
    return rc;
}

static int pg_claim_saga(store *base, const char *saga_id)
{
    pg_store *st = (pg_store *)base;
    if (st->node[0] == '\0')
        return 0;
    params p = {0};
    p_text(&p, saga_id);
    p_text(&p, st->node);
    p_text(&p, st->epoch);
    int64_t n = 0;
    if (write_now(st, P_CLAIM_ONE, &p, "take over saga", saga_id, &n) != 0)
        return -1;
    return n == 1 ? 0 : STORE_NOT_FOUND;
}

static enum store_rejection pg_rejection(const store *base, const char **saga_id)
{
    const pg_store *st = (const pg_store *)base;
    *saga_id = st->rejected_saga[0] ? st->rejected_saga : NULL;
    return st->rejection;
}

/* ---- Scheduled starts (store.h; F6, F7) ------------------------------------ */

/* Row `row` of res (SCHED_COLUMNS) into *out: 0 or -1. */
static int read_schedule(pg_store *st, PGresult *res, int row, store_schedule *out)
{
    memset(out, 0, sizeof *out);
    const char *id = PQgetvalue(res, row, 0);
    if (strlen(id) == 0 || strlen(id) > 36)
        return corrupt(st, "read scheduled start: corrupt id '%.40s'", id);
    memcpy(out->id, id, strlen(id) + 1);
    if (dup_or_null(res, row, 1, &out->type) != 0 || out->type == NULL ||
        dup_or_null(res, row, 2, &out->client_key) != 0 ||
        kv_from_json(&out->input, PQgetvalue(res, row, 3)) != 0) {
        store_schedule_clear(out);
        return corrupt(st, "read scheduled start %s: out of memory or unreadable input", id);
    }
    out->start_at_ms = val_int(res, row, 4);
    out->deadline_ms = val_int(res, row, 5);
    out->created_at_ms = val_int(res, row, 6);
    out->retry_at_ms = val_int(res, row, 7);
    return 0;
}

/* Hands every row of res to fn (borrowed): fn's first non-zero return, or -1. */
static int walk_schedules(pg_store *st, PGresult *res,
                          int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        store_schedule s;
        if (read_schedule(st, res, i, &s) != 0)
            return -1;
        rc = fn(&s, arg);
        store_schedule_clear(&s);
    }
    return rc;
}

static int pg_schedule_add(store *base, const store_schedule *s)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "schedule start") != 0)
        return -1;
    int failed;
    char *input = to_json(st, &s->input, 0, &failed);
    if (failed)
        return -1;
    params p = {0};
    p_text(&p, s->id);
    p_text(&p, s->type);
    p_text(&p, s->client_key);
    p_text(&p, input);
    p_int(&p, s->start_at_ms);
    p_int(&p, s->deadline_ms);
    p_int(&p, s->created_at_ms);
    p_int(&p, s->retry_at_ms);
    int own = !st->in_txn;
    int rc = own ? pg_begin(base) : 0;
    if (rc == 0 && s->client_key != NULL)
        rc = queue_key_lock(st, s->client_key, s->id);
    if (rc == 0)
        rc = queue(st, P_SCHED_INSERT, &p, s->id);
    free(input);
    if (own) {
        if (rc == 0)
            return pg_commit(base);
        pg_rollback(base);
    }
    return rc;
}

static int pg_schedule_fire(store *base, const char *id)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "fire scheduled start") != 0)
        return -1;
    params p = {0};
    p_text(&p, id);
    p_text(&p, st->node[0] ? st->node : "-");
    p_text(&p, st->node[0] ? st->epoch : "0");
    return queue(st, P_SCHED_FIRE, &p, id);
}

typedef struct {
    PGresult *rows; /* the claim's result, kept */
} claim_rows;

static int keep_claimed(pg_store *st, PGresult *res, void *arg)
{
    claim_rows *c = arg;
    (void)st;
    if (PQnfields(res) != SCHED_N_COLUMNS || c->rows != NULL)
        return 0; /* the fence check's row */
    /* sync_pipeline clears res after this call: copy what fn needs. */
    c->rows = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    return c->rows == NULL ? -1 : 0;
}

/* F7: claimed in one committed transaction (this node's lease checked
 * first, F3), then handed out. */
static int pg_schedule_due(store *base, int64_t now_ms, uint32_t max,
                           int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "claim due starts") != 0)
        return -1;
    params p = {0};
    p_text(&p, st->node[0] ? st->node : "-");
    p_text(&p, st->node[0] ? st->epoch : "0");
    p_int(&p, now_ms);
    p_int(&p, max);
    claim_rows c = {NULL};
    int rc = pg_begin(base);
    if (rc == 0)
        rc = queue(st, P_SCHED_CLAIM, &p, NULL);
    st->in_txn = 0;
    if (rc == 0)
        rc = sync_pipeline(st, keep_claimed, &c);
    else
        pg_rollback(base);
    if (rc == STORE_REJECTED) /* this node is fenced: it claims nothing */
        rc = 0;
    if (rc == 0 && c.rows != NULL)
        rc = walk_schedules(st, c.rows, fn, arg);
    PQclear(c.rows);
    return rc;
}

static int pg_schedule_postpone(store *base, const char *id, int64_t retry_at_ms)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "postpone scheduled start") != 0)
        return -1;
    params p = {0};
    p_text(&p, id);
    p_int(&p, retry_at_ms);
    return write_now(st, P_SCHED_POSTPONE, &p, "postpone scheduled start", id, NULL);
}

static int pg_schedule_cancel(store *base, const char *id)
{
    pg_store *st = (pg_store *)base;
    if (check_write(st, "cancel scheduled start") != 0)
        return -1;
    params p = {0};
    p_text(&p, id);
    int64_t n = 0;
    if (write_now(st, P_SCHED_DELETE, &p, "cancel scheduled start", id, &n) != 0)
        return -1;
    return n == 1 ? 0 : STORE_NOT_FOUND;
}

static int pg_schedule_get(store *base, const char *id, const char *client_key, store_schedule *out)
{
    pg_store *st = (pg_store *)base;
    params p = {0};
    p_text(&p, id != NULL ? id : client_key);
    PGresult *res =
        read_query(st, id != NULL ? P_SCHED_BY_ID : P_SCHED_BY_KEY, &p, "read scheduled start", id);
    if (res == NULL)
        return -1;
    int rc = PQntuples(res) == 0 ? STORE_NOT_FOUND : read_schedule(st, res, 0, out);
    PQclear(res);
    return rc;
}

static int pg_schedule_list(store *base, const char *type, const char *after_id, uint32_t limit,
                            int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    pg_store *st = (pg_store *)base;
    params p = {0};
    p_text(&p, after_id ? after_id : "");
    p_text(&p, type ? type : "");
    if (limit == 0)
        p_text(&p, NULL); /* LIMIT NULL: none */
    else
        p_int(&p, limit);
    PGresult *res = read_query(st, P_SCHED_LIST, &p, "list scheduled starts", NULL);
    if (res == NULL)
        return -1;
    int rc = walk_schedules(st, res, fn, arg);
    PQclear(res);
    return rc;
}

static int pg_schedule_count(store *base, uint64_t *n)
{
    pg_store *st = (pg_store *)base;
    PGresult *res = read_query(st, P_SCHED_COUNT, NULL, "count scheduled starts", NULL);
    if (res == NULL)
        return -1;
    *n = (uint64_t)val_int(res, 0, 0);
    PQclear(res);
    return 0;
}

const store_backend store_pg_backend = {
    .name = "postgresql",
    .close = pg_close,
    .errmsg = pg_errmsg,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .save_saga = pg_save_saga,
    .append_history = pg_append_history,
    .find_client_key = pg_find_client_key,
    .load_saga = pg_load_saga,
    .load_unfinished = pg_load_unfinished,
    .list = pg_list,
    .search = pg_search,
    .history = pg_history,
    .count_by_state = pg_count_by_state,
    .oldest_created = pg_oldest_created,
    .definition_version = pg_definition_version,
    .definition_max = pg_definition_max,
    .definition_add = pg_definition_add,
    .definition_get = pg_definition_get,
    .definitions = pg_definitions,
    .count_by_version = pg_count_by_version,
    .pin_unversioned = pg_pin_unversioned,
    .error_is_transient = pg_error_is_transient,
    .error_is_corrupt_row = pg_error_is_corrupt_row,
    .set_corrupt_row_handler = pg_set_corrupt_row_handler,
    .quarantine_saga = pg_quarantine_saga,
    .purge_finished = pg_purge_finished,
    .node_join = pg_node_join,
    .node_renew = pg_node_renew,
    .node_leave = pg_node_leave,
    .claim_orphans = pg_claim_orphans,
    .claim_saga = pg_claim_saga,
    .rejection = pg_rejection,
    .schedule_add = pg_schedule_add,
    .schedule_fire = pg_schedule_fire,
    .schedule_due = pg_schedule_due,
    .schedule_postpone = pg_schedule_postpone,
    .schedule_cancel = pg_schedule_cancel,
    .schedule_get = pg_schedule_get,
    .schedule_list = pg_schedule_list,
    .schedule_count = pg_schedule_count,
};
