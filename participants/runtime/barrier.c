/*
 * barrier — the runtime's idempotency records, (saga_id, step, phase)
 * barrier, counters and purge in SQL. The schema and its invariants are
 * documented in barrier.h; this file only keeps them. The rules that decide
 * a request are barrier_rules.c's (shared with store_pg.c): this file reads
 * the facts they ask for.
 *
 * Every statement is prepared once at open (SQLITE_PREPARE_PERSISTENT) and
 * reset after each use, so no statement stays active across a COMMIT,
 * ROLLBACK or savepoint operation of the caller.
 */
#include "barrier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_files.h"
#include "log.h"
#include "util.h"
#include "wal_batch_vfs.h"
#include "wal_checkpointer.h"
#include "wire.h"

#define BARRIER_BUSY_TIMEOUT_MS 2000

static const char barrier_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS pt_idempotency ("
    "  idempotency_key TEXT NOT NULL UNIQUE,"
    "  saga_id TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  phase INTEGER NOT NULL CHECK (phase IN (0, 1)),"
    "  operation TEXT NOT NULL,"
    "  fingerprint BLOB NOT NULL,"
    "  outcome INTEGER NOT NULL,"
    "  reply BLOB NOT NULL,"
    "  result TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pt_barrier ("
    "  saga_id TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  phase INTEGER NOT NULL CHECK (phase IN (0, 1)),"
    "  kind TEXT NOT NULL CHECK (kind = 'record' OR (kind = 'fence' AND phase = 0)),"
    "  owner_key TEXT NOT NULL,"
    "  PRIMARY KEY (saga_id, step, phase)) WITHOUT ROWID;"
    /* Indexes of earlier versions: every commit paid for them, only the purge used them. */
    "DROP INDEX IF EXISTS pt_idempotency_created;"
    "DROP INDEX IF EXISTS pt_barrier_owner;"
    "CREATE TABLE IF NOT EXISTS pt_meta ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  value INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS pt_counters ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO pt_counters(name, value) VALUES"
    "  ('requests', 0), ('effects', 0), ('replays', 0), ('conflicts', 0),"
    "  ('skipped', 0), ('rejected', 0), ('purged', 0);";

/*
 * Version of the runtime's tables, in pt_meta (not PRAGMA user_version: the
 * database is the service's, which may version its own schema with it).
 * 0 (no row): written before protocol 2,
 * whose Outcome numbers start at OUTCOME_UNSPECIFIED = 0 (OK was 0, now 1):
 * migrate_outcomes() renumbers those records once, in the open's transaction.
 */
#define BARRIER_SCHEMA_VERSION 1

/* Stored outcomes and the outcome inside each stored reply, old numbering to
 * new (+1: OK 0 -> 1, ..., SKIPPED 4 -> 5). A stored reply that does not
 * decode is left as it is: replayed, it reads as no reply, which sagad
 * retries and then compensates, never counts as done. */
static int migrate_outcomes(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *rows = NULL, *update = NULL;
    int rc =
        sqlite3_prepare_v2(db, "SELECT rowid, outcome, reply FROM pt_idempotency", -1, &rows, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "UPDATE pt_idempotency SET outcome = ?1, reply = ?2"
                                " WHERE rowid = ?3",
                                -1, &update, NULL);
    long n = 0;
    while (rc == SQLITE_OK && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
        int outcome = sqlite3_column_int(rows, 1) + 1;
        const void *blob = sqlite3_column_blob(rows, 2);
        size_t len = (size_t)sqlite3_column_bytes(rows, 2);
        StepReply *r = saga__v1__step_reply__unpack(NULL, len, blob);
        uint8_t *packed = NULL;
        size_t packed_len = 0;
        if (r != NULL) {
            r->outcome = (Saga__V1__Outcome)outcome;
            packed_len = saga__v1__step_reply__get_packed_size(r);
            if ((packed = malloc(packed_len ? packed_len : 1)) != NULL)
                saga__v1__step_reply__pack(r, packed);
            saga__v1__step_reply__free_unpacked(r, NULL);
            if (packed == NULL) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        sqlite3_bind_int(update, 1, outcome);
        if (packed != NULL)
            sqlite3_bind_blob(update, 2, packed, (int)packed_len, SQLITE_TRANSIENT);
        else
            sqlite3_bind_blob(update, 2, blob, (int)len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(update, 3, sqlite3_column_int64(rows, 0));
        rc = sqlite3_step(update) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
        sqlite3_reset(update);
        free(packed);
        n++;
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "renumbering stored outcomes: %s", sqlite3_errmsg(db));
    else if (n > 0)
        log_info("participant database: %ld stored replies renumbered to protocol 2 outcomes", n);
    sqlite3_finalize(rows);
    sqlite3_finalize(update);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Inside the open's transaction, after the schema: brings an older database
 * up to BARRIER_SCHEMA_VERSION, refuses a newer one. */
static int barrier_migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT coalesce((SELECT value FROM pt_meta WHERE name = 'schema'), 0)",
                           -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (version < 0) {
        snprintf(err, errlen, "reading the runtime's schema version: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (version > BARRIER_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "%s was written by a newer participant runtime (schema %d, this one knows %d)",
                 path, version, BARRIER_SCHEMA_VERSION);
        return -1;
    }
    if (version == 0 && migrate_outcomes(db, err, errlen) != 0)
        return -1;
    char sql[96];
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO pt_meta(name, value) VALUES ('schema', %d)",
             BARRIER_SCHEMA_VERSION);
    if (version < BARRIER_SCHEMA_VERSION && sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "setting the runtime's schema version: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

enum {
    ST_LOOKUP_KEY,
    ST_BARRIER_ROWS,
    ST_ACTION_RECORD,
    ST_INSERT_RECORD,
    ST_UPSERT_BARRIER,
    ST_INSERT_FENCE,
    ST_COUNTER_ADD,
    ST_PURGE_SCAN,
    ST_PURGE_BARRIER,
    ST_PURGE_RECORD,
    ST_COUNT
};

static const char *const barrier_sql[ST_COUNT] = {
    [ST_LOOKUP_KEY] = "SELECT fingerprint, reply FROM pt_idempotency WHERE idempotency_key = ?1",
    [ST_BARRIER_ROWS] = "SELECT phase, kind, owner_key FROM pt_barrier"
                        " WHERE saga_id = ?1 AND step = ?2",
    [ST_ACTION_RECORD] = "SELECT outcome, operation, result FROM pt_idempotency"
                         " WHERE idempotency_key = ?1",
    [ST_INSERT_RECORD] = "INSERT INTO pt_idempotency(idempotency_key, saga_id, step, phase,"
                         " operation, fingerprint, outcome, reply, result, created_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    /* A hanging action takes over the fence (invariant 4); anything else conflicts. */
    [ST_UPSERT_BARRIER] = "INSERT INTO pt_barrier(saga_id, step, phase, kind, owner_key)"
                          " VALUES (?1, ?2, ?3, 'record', ?4)"
                          " ON CONFLICT(saga_id, step, phase) DO UPDATE"
                          " SET kind = 'record', owner_key = excluded.owner_key"
                          " WHERE kind = 'fence'",
    [ST_INSERT_FENCE] = "INSERT INTO pt_barrier(saga_id, step, phase, kind, owner_key)"
                        " VALUES (?1, ?2, 0, 'fence', ?3)",
    [ST_COUNTER_ADD] = "UPDATE pt_counters SET value = value + ?2 WHERE name = ?1",
    /* The purge window: the oldest records by insertion (rowid) order. */
    [ST_PURGE_SCAN] = "SELECT rowid, idempotency_key, saga_id, step, created_at"
                      " FROM pt_idempotency ORDER BY rowid LIMIT ?1",
    /* An owner's rows share its saga_id and step: its record and maybe a fence. */
    [ST_PURGE_BARRIER] = "DELETE FROM pt_barrier WHERE saga_id = ?1 AND step = ?2"
                         " AND owner_key = ?3",
    [ST_PURGE_RECORD] = "DELETE FROM pt_idempotency WHERE rowid = ?1",
};

struct barrier_store {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    wal_checkpointer *ckpt; /* checkpoints off the commit path: wal_checkpointer.h */
};

sqlite3 *barrier_db(barrier_store *s)
{
    return s->db;
}

/* Runs one or more statements without results. */
static int barrier_exec(barrier_store *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

/* Runs a PRAGMA that returns its new value and checks it; returns 0 or -1. */
static int barrier_pragma(sqlite3 *db, const char *sql, const char *expect, char *err,
                          size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int ok = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
        return -1;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *got = (const char *)sqlite3_column_text(st, 0);
        if (got && strcmp(got, expect) == 0)
            ok = 0;
        else
            snprintf(err, errlen, "%s: got '%s', need '%s'", sql, got ? got : "", expect);
    } else {
        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return ok;
}

/* Start-up waits for the write lock longer, and polls more often, than a
 * request does: a busy replica on the same database commits one
 * transaction after another and frees the lock for a moment between
 * them, which SQLite's default busy handler (sleeps of up to 100 ms, for
 * BARRIER_BUSY_TIMEOUT_MS) can miss every time. */
#define STARTUP_LOCK_WAIT_MS 60000
#define STARTUP_LOCK_POLL_MS 2

typedef struct {
    int64_t since;
    int reported;
} startup_wait;

static int startup_busy(void *arg, int tries)
{
    startup_wait *w = arg;
    (void)tries;
    int64_t waited = util_mono_ms() - w->since;
    if (waited >= STARTUP_LOCK_WAIT_MS)
        return 0;
    if (!w->reported && waited >= BARRIER_BUSY_TIMEOUT_MS) {
        log_info("participant database: another connection holds the write lock (a busy "
                 "replica?): waiting up to %d s for a turn",
                 STARTUP_LOCK_WAIT_MS / 1000);
        w->reported = 1;
    }
    util_sleep_ms(STARTUP_LOCK_POLL_MS);
    return 1;
}

static int begin_at_startup(sqlite3 *db)
{
    startup_wait w = {util_mono_ms(), 0};
    sqlite3_busy_handler(db, startup_busy, &w);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    sqlite3_busy_timeout(db, BARRIER_BUSY_TIMEOUT_MS);
    return rc;
}

/* A lock another process holds is the usual reason for "database is locked"
 * at open: name it after the reason already in err. */
static void append_lock_holders(const char *path, char *err, size_t errlen)
{
    char locks[1024];
    size_t used = strlen(err);
    dbf_describe_lock_holders(path, locks, sizeof locks);
    if (locks[0] != '\0' && used < errlen)
        snprintf(err + used, errlen - used, "; %s", locks);
}

int barrier_open(const char *path, int synchronous_off, barrier_store **out, char *err,
                 size_t errlen)
{
    barrier_store *s = calloc(1, sizeof *s);
    char *msg = NULL;
    *out = NULL;
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* The files are private and nobody holds a lock that would stall the
     * open (db_files.h); checked again once the -wal and -shm exist. */
    if (dbf_before_open("participant database", path, 1, err, errlen) != 0)
        goto fail;
    /* Syncing each commit, it writes each commit's log with one system
     * call (wal_batch_vfs.h); without syncs it must not. */
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX |
                                 DBF_SQLITE_OPEN_FLAGS,
                             synchronous_off ? NULL : wal_batch_vfs());
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail_locks;
    }
    /* Until the schema is in place, the start-up wait (a busy replica, or
     * one recovering the WAL after its twin was killed); then a request's. */
    startup_wait w = {util_mono_ms(), 0};
    sqlite3_busy_handler(s->db, startup_busy, &w);
    if (barrier_pragma(s->db, "PRAGMA journal_mode=WAL", "wal", err, errlen) != 0)
        goto fail_locks;
    if (sqlite3_exec(s->db, synchronous_off ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=FULL",
                     NULL, NULL, &msg) != SQLITE_OK)
        goto fail_msg;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(s->db));
        goto fail_locks;
    }
    if (sqlite3_exec(s->db, barrier_schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        goto fail_msg;
    }
    if (barrier_migrate(s->db, path, err, errlen) != 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        goto fail;
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        goto fail_msg;
    }
    sqlite3_busy_timeout(s->db, BARRIER_BUSY_TIMEOUT_MS);
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, barrier_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "preparing runtime statement %d: %s", i, sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    if (dbf_check_private("participant database", path, err, errlen) != 0)
        goto fail;
    if ((s->ckpt = wal_checkpointer_start(s->db, path, !synchronous_off, "participant", err,
                                          errlen)) == NULL)
        goto fail;
    *out = s;
    return 0;

fail_msg:
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg); /* sqlite3_exec's message is ours to free */
fail_locks:
    append_lock_holders(path, err, errlen);
fail:
    barrier_close(s);
    return -1;
}

void barrier_close(barrier_store *s)
{
    if (s == NULL)
        return;
    wal_checkpointer_stop(s->ckpt); /* first: the main close is then the last one */
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db)
        sqlite3_close(s->db);
    free(s);
}

int barrier_begin(barrier_store *s)
{
    int rc = barrier_exec(s, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        wal_checkpointer_writing(s->ckpt);
    return rc;
}

int barrier_begin_at_startup(barrier_store *s)
{
    return begin_at_startup(s->db);
}

int barrier_commit(barrier_store *s)
{
    return barrier_exec(s, "COMMIT");
}

void barrier_rollback(barrier_store *s)
{
    if (!sqlite3_get_autocommit(s->db) && barrier_exec(s, "ROLLBACK") != SQLITE_OK)
        log_error("ROLLBACK failed: %s", sqlite3_errmsg(s->db));
}

/* Resets st and returns rc, so a statement never stays active. */
static int barrier_done(sqlite3_stmt *st, int rc)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/*
 * barrier_rules' facts from the prepared statements. A statement that found
 * its row stays on it (the facts borrow its columns) until the rules decide.
 */
int barrier_decide(barrier_store *s, const barrier_request *r, barrier_decision *d)
{
    barrier_facts f;
    sqlite3_stmt *used[3];
    int nused = 0, rc;

    barrier_facts_init(&f);
    while ((rc = barrier_rules(r, &f, d)) < 0) {
        sqlite3_stmt *st;
        if (rc == BARRIER_NEED_KEY) {
            st = used[nused++] = s->st[ST_LOOKUP_KEY];
            sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
            f.key_read = 1;
            if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                f.key_found = 1;
                f.fingerprint = sqlite3_column_blob(st, 0);
                f.fingerprint_len = (size_t)sqlite3_column_bytes(st, 0);
                f.reply = sqlite3_column_blob(st, 1);
                f.reply_len = (size_t)sqlite3_column_bytes(st, 1);
            } else if (rc != SQLITE_DONE) {
                break;
            }
        } else if (rc == BARRIER_NEED_ROWS) {
            st = used[nused++] = s->st[ST_BARRIER_ROWS];
            sqlite3_bind_text(st, 1, r->saga_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, r->step, -1, SQLITE_STATIC);
            f.rows_read = 1;
            while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                rc = barrier_facts_row(&f, r, sqlite3_column_int(st, 0),
                                       (const char *)sqlite3_column_text(st, 1),
                                       (const char *)sqlite3_column_text(st, 2));
                if (rc != SQLITE_OK)
                    break;
            }
            if (rc != SQLITE_DONE)
                break;
        } else {
            st = used[nused++] = s->st[ST_ACTION_RECORD];
            sqlite3_bind_text(st, 1, f.other_owner, -1, SQLITE_STATIC);
            f.action_read = 1;
            if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                f.action_found = 1;
                f.action_outcome = sqlite3_column_int(st, 0);
                f.action_operation = (const char *)sqlite3_column_text(st, 1);
                f.action_result = (const char *)sqlite3_column_text(st, 2);
            } else if (rc != SQLITE_DONE) {
                break;
            }
        }
    }
    for (int i = 0; i < nused; i++)
        barrier_done(used[i], SQLITE_OK);
    return rc;
}

int barrier_store_record(barrier_store *s, const barrier_request *r, int outcome,
                         const uint8_t *reply, size_t reply_len, const char *result_json,
                         int fence_action, int64_t now_ms)
{
    sqlite3_stmt *st = s->st[ST_INSERT_RECORD];
    sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->step, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, r->phase);
    sqlite3_bind_text(st, 5, r->operation, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, r->fingerprint, (int)r->fingerprint_len, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, outcome);
    sqlite3_bind_blob(st, 8, reply, (int)reply_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, result_json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 10, now_ms);
    int rc = barrier_done(st, sqlite3_step(st));
    if (rc != SQLITE_DONE)
        return rc;

    if (fence_action) {
        st = s->st[ST_INSERT_FENCE];
        sqlite3_bind_text(st, 1, r->saga_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->step, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, r->key, -1, SQLITE_STATIC);
        rc = barrier_done(st, sqlite3_step(st));
        if (rc != SQLITE_DONE)
            return rc;
    }

    st = s->st[ST_UPSERT_BARRIER];
    sqlite3_bind_text(st, 1, r->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->step, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, r->phase);
    sqlite3_bind_text(st, 4, r->key, -1, SQLITE_STATIC);
    rc = barrier_done(st, sqlite3_step(st));
    if (rc != SQLITE_DONE)
        return rc;
    /* No change: the phase already had a record (barrier_decide excludes this). */
    return sqlite3_changes(s->db) == 1 ? SQLITE_OK : SQLITE_CONSTRAINT;
}

static int barrier_counter_add(barrier_store *s, const char *name, uint64_t delta)
{
    if (delta == 0)
        return SQLITE_OK;
    sqlite3_stmt *st = s->st[ST_COUNTER_ADD];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)delta);
    int rc = barrier_done(st, sqlite3_step(st));
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int barrier_counts_add(barrier_store *s, const barrier_counts *c)
{
    const struct {
        const char *name;
        uint64_t delta;
    } deltas[] = {
        {"requests", c->requests},   {"effects", c->effects}, {"replays", c->replays},
        {"conflicts", c->conflicts}, {"skipped", c->skipped}, {"rejected", c->rejected},
    };
    for (size_t i = 0; i < sizeof deltas / sizeof deltas[0]; i++) {
        int rc = barrier_counter_add(s, deltas[i].name, deltas[i].delta);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* One expired record of the purge window (the strings copied out of the scan). */
typedef struct {
    sqlite3_int64 rowid;
    char *key, *saga_id, *step;
} purge_row;

static char *column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? strdup((const char *)t) : NULL;
}

/* Reads the window's expired records into rows; sets *n. Returns an SQLite code. */
static int purge_window(barrier_store *s, int64_t cutoff_ms, int limit, purge_row *rows, int *n)
{
    sqlite3_stmt *st = s->st[ST_PURGE_SCAN];
    int rc;
    *n = 0;
    sqlite3_bind_int(st, 1, limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_int64(st, 4) >= cutoff_ms)
            continue; /* within retention: stays, even behind expired ones */
        purge_row *r = &rows[*n];
        r->rowid = sqlite3_column_int64(st, 0);
        r->key = column_dup(st, 1);
        r->saga_id = column_dup(st, 2);
        r->step = column_dup(st, 3);
        ++*n;
        if (r->key == NULL || r->saga_id == NULL || r->step == NULL)
            return barrier_done(st, SQLITE_NOMEM);
    }
    return barrier_done(st, rc == SQLITE_DONE ? SQLITE_OK : rc);
}

/* Deletes one record and the barrier rows it owns (invariant 1). */
static int purge_one(barrier_store *s, const purge_row *r)
{
    sqlite3_stmt *st = s->st[ST_PURGE_BARRIER];
    sqlite3_bind_text(st, 1, r->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->step, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->key, -1, SQLITE_STATIC);
    int rc = barrier_done(st, sqlite3_step(st));
    if (rc != SQLITE_DONE)
        return rc;
    st = s->st[ST_PURGE_RECORD];
    sqlite3_bind_int64(st, 1, r->rowid);
    rc = barrier_done(st, sqlite3_step(st));
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * Why a window in insertion order rather than an index on created_at: the
 * index cost every commit a b-tree page, for a purge that runs once a
 * minute. Records arrive in time order, so the window holds the oldest; a
 * wall clock stepped back only delays the purge of what sits behind a
 * newer record, never purges anything early (each row's own created_at
 * decides).
 */
int barrier_purge(barrier_store *s, int64_t cutoff_ms, int limit, int *purged)
{
    *purged = 0;
    if (limit <= 0)
        return SQLITE_OK;
    purge_row *rows = calloc((size_t)limit, sizeof *rows);
    int n = 0;
    if (rows == NULL)
        return SQLITE_NOMEM;
    int rc = barrier_begin(s);
    if (rc != SQLITE_OK)
        goto out;
    rc = purge_window(s, cutoff_ms, limit, rows, &n);
    for (int i = 0; rc == SQLITE_OK && i < n; i++)
        rc = purge_one(s, &rows[i]);
    if (rc == SQLITE_OK)
        rc = barrier_counter_add(s, "purged", (uint64_t)n);
    if (rc == SQLITE_OK)
        rc = barrier_commit(s);
    if (rc == SQLITE_OK)
        *purged = n;
    else
        barrier_rollback(s);
out:
    for (int i = 0; i < n; i++) {
        free(rows[i].key);
        free(rows[i].saga_id);
        free(rows[i].step);
    }
    free(rows);
    return rc;
}
