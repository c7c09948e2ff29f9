/*
 * external — in-flight markers for effects outside the database
 * (participant.h, pt_external_begin): a handler that calls an external
 * system (a card network, a carrier) records, before the call, the attempt
 * and the idempotency key it passes downstream, so that a retry after a
 * crash between the call and the commit repeats the call under the SAME
 * downstream key and the external system, which deduplicates on it, makes
 * no second effect.
 *
 * Why a file of its own (<database>.external, ":memory:" for an in-memory
 * participant): handlers run inside the batch transaction, which holds the
 * participant database's write lock until COMMIT, so a marker that must be
 * durable before the handler returns cannot be written there. Opened on
 * the first pt_external_begin, so a service that never calls out has no
 * such file.
 *
 *   pt_external   one row per (idempotency_key, target)
 *     saga_id, step,   the request's: a compensation looks for its action's
 *     phase            marker (pt_external_pending)
 *     downstream_key   a version 7 UUID made at the first attempt; never
 *                      changed afterwards
 *     attempts         calls begun under it (1 at the first)
 *     created_at       wall-clock ms; purged with the idempotency records
 *
 * Invariants:
 *   1. pt_external_begin returns PT_OK only after the marker's COMMIT
 *      (synchronous FULL unless the participant runs --unsafe-no-fsync).
 *   2. A marker's downstream_key never changes: every attempt of the key,
 *      in any process, passes the same one downstream.
 *   3. Markers are kept at least as long as the idempotency records (the
 *      purge deletes those older than the same retention): a retry that
 *      still runs the handler still finds its marker.
 * On PostgreSQL (store_pg.c) the markers are a table of the participant's
 * database, written on a connection of their own in autocommit (the batch
 * transaction's connection cannot commit early either), and claimed with
 * one INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so replicas sharing
 * the database share one downstream key per (key, target) too; the
 * functions below hand over to the backend's table for that.
 *
 * Used by the serving thread only (handlers and the purge run one at a
 * time), like the rest of the store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crashpoint.h"
#include "db_files.h"
#include "log.h"
#include "pt_internal.h"

#define PT_EXTERNAL_BUSY_TIMEOUT_MS 2000

static const char pt_external_schema[] = "CREATE TABLE IF NOT EXISTS pt_external ("
                                         "  idempotency_key TEXT NOT NULL,"
                                         "  target TEXT NOT NULL,"
                                         "  saga_id TEXT NOT NULL,"
                                         "  step TEXT NOT NULL,"
                                         "  phase INTEGER NOT NULL,"
                                         "  downstream_key TEXT NOT NULL,"
                                         "  attempts INTEGER NOT NULL CHECK (attempts >= 1),"
                                         "  created_at INTEGER NOT NULL,"
                                         "  updated_at INTEGER NOT NULL,"
                                         "  PRIMARY KEY (idempotency_key, target));";

int pt_external_path(const char *db_path, char **out)
{
    *out = strcmp(db_path, ":memory:") == 0 || db_path[0] == '\0'
               ? util_strdup(":memory:")
               : util_asprintf("%s.external", db_path);
    return *out ? 0 : -1;
}

/* Opens the marker file on first use. Returns 0, or -1 with the reason in err. */
static int pt_external_open(participant *p, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    if (p->external_db != NULL)
        return 0;
    const char *path = p->external_path;
    if (dbf_before_open("participant external-call markers", path, 1, err, errlen) != 0)
        return -1;
    int rc = sqlite3_open_v2(path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX |
                                 DBF_SQLITE_OPEN_FLAGS,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, PT_EXTERNAL_BUSY_TIMEOUT_MS);
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, p->synchronous_off ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=FULL",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db, pt_external_schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return -1;
    }
    if (dbf_check_private("participant external-call markers", path, err, errlen) != 0) {
        sqlite3_close(db);
        return -1;
    }
    p->external_db = db;
    return 0;
}

void pt_external_close(participant *p)
{
    if (p->external_db != NULL)
        sqlite3_close(p->external_db);
    p->external_db = NULL;
}

/* Is target a name: 1..WIRE_MAX_NAME bytes of printable ASCII? */
static int pt_external_target_ok(const char *target)
{
    size_t n = target ? strlen(target) : 0;
    if (n == 0 || n > WIRE_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (target[i] < 0x21 || target[i] > 0x7e)
            return 0;
    return 1;
}

/*
 * In one IMMEDIATE transaction: finds the marker of (key, target) and counts
 * one more attempt, or makes it with a fresh downstream key. Returns an
 * SQLite code.
 */
static int pt_external_mark(sqlite3 *db, const pt_request *req, const char *target,
                            pt_external_call *call)
{
    sqlite3_stmt *find = NULL, *write = NULL;
    int64_t now = util_wall_ms();
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_prepare_v2(db,
                            "SELECT downstream_key, attempts FROM pt_external"
                            " WHERE idempotency_key = ?1 AND target = ?2",
                            -1, &find, NULL);
    if (rc != SQLITE_OK)
        goto out;
    sqlite3_bind_text(find, 1, req->idempotency_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(find, 2, target, -1, SQLITE_STATIC);
    rc = sqlite3_step(find);
    if (rc == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(find, 0);
        snprintf(call->downstream_key, sizeof call->downstream_key, "%s", key ? key : "");
        call->attempt = (uint32_t)sqlite3_column_int64(find, 1) + 1;
        rc = sqlite3_prepare_v2(db,
                                "UPDATE pt_external SET attempts = ?3, updated_at = ?4"
                                " WHERE idempotency_key = ?1 AND target = ?2",
                                -1, &write, NULL);
    } else if (rc == SQLITE_DONE) {
        if (util_uuid7(call->downstream_key) != 0) {
            rc = SQLITE_ERROR;
            goto out;
        }
        call->attempt = 1;
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO pt_external (idempotency_key, target, attempts,"
                                " updated_at, created_at, saga_id, step, downstream_key, phase)"
                                " VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8)",
                                -1, &write, NULL);
        if (rc == SQLITE_OK) {
            sqlite3_bind_text(write, 5, req->saga_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(write, 6, req->step, -1, SQLITE_STATIC);
            sqlite3_bind_text(write, 7, call->downstream_key, -1, SQLITE_STATIC);
            sqlite3_bind_int(write, 8, req->phase);
        }
    }
    if (rc != SQLITE_OK)
        goto out;
    sqlite3_bind_text(write, 1, req->idempotency_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(write, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_int64(write, 3, call->attempt);
    sqlite3_bind_int64(write, 4, now);
    rc = sqlite3_step(write);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
out:
    sqlite3_finalize(find);
    sqlite3_finalize(write);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int pt_external_begin(const pt_request *req, pt_reply *reply, const char *target,
                      pt_external_call *call)
{
    participant *p = req->runtime;
    char err[256], key[96];
    memset(call, 0, sizeof *call);
    if (!pt_external_target_ok(target)) {
        log_error("%s: pt_external_begin: the target must be 1..%d bytes of printable ASCII",
                  p->name, WIRE_MAX_NAME);
        return pt_retry(reply, "invalid external target name (a defect of the service)");
    }
    if (p->be->external_mark != NULL) {
        if (p->be->external_mark(p, req, target, call->downstream_key, &call->attempt, err,
                                 sizeof err) != 0) {
            log_warn("%s: external call '%s' not attempted: %s", p->name, target, err);
            return pt_retry(reply, "external call not attempted: its marker cannot be stored (%s)",
                            err);
        }
        goto marked;
    }
    if (pt_external_open(p, err, sizeof err) != 0) {
        log_warn("%s: external-call markers unavailable: %s", p->name, err);
        return pt_retry(reply, "external call not attempted: its marker cannot be stored (%s)",
                        err);
    }
    int rc = pt_external_mark(p->external_db, req, target, call);
    if (rc != SQLITE_OK) {
        log_warn("%s: external call '%s' not attempted: %s", p->name, target,
                 sqlite3_errmsg(p->external_db));
        return pt_retry(reply, "external call not attempted: its marker cannot be stored (%s)",
                        sqlite3_errstr(rc));
    }
marked:
    if (call->attempt > 1) {
        pt_printable(key, sizeof key, req->idempotency_key);
        log_info("%s: key %s: external call '%s' begun before without a recorded outcome; "
                 "calling again with the same downstream key %s (attempt %u)",
                 p->name, key, target, call->downstream_key, call->attempt);
    }
    crashpoint("participant.external_marked");
    return PT_OK;
}

int pt_external_pending(participant *p, const char *saga_id, const char *step, char *target,
                        size_t target_len)
{
    sqlite3_stmt *st = NULL;
    char err[256];
    if (p->be->external_pending != NULL)
        return p->be->external_pending(p, saga_id, step, target, target_len);
    if (p->external_db == NULL) {
        /* A file left by an earlier process counts too: open it if it exists. */
        if (strcmp(p->external_path, ":memory:") == 0 || access(p->external_path, F_OK) != 0)
            return 0;
        if (pt_external_open(p, err, sizeof err) != 0) {
            log_warn("%s: external-call markers unavailable: %s", p->name, err);
            return -1;
        }
    }
    int rc = sqlite3_prepare_v2(p->external_db,
                                "SELECT target FROM pt_external WHERE saga_id = ?1 AND step = ?2"
                                " AND phase = ?3 LIMIT 1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, step, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, PHASE_ACTION);
    rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found)
        snprintf(target, target_len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? found : -1;
}

int pt_external_purge(participant *p, int64_t cutoff_ms, int limit)
{
    sqlite3_stmt *st = NULL;
    if (p->be->external_purge != NULL)
        return p->be->external_purge(p, cutoff_ms, limit);
    if (p->external_db == NULL)
        return 0;
    int rc = sqlite3_prepare_v2(p->external_db,
                                "DELETE FROM pt_external WHERE rowid IN (SELECT rowid FROM"
                                " pt_external WHERE created_at < ?1 LIMIT ?2)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, cutoff_ms);
        sqlite3_bind_int(st, 2, limit);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? sqlite3_changes(p->external_db) : -1;
}
