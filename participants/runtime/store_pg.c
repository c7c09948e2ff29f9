/*
 * store_pg — the participant runtime on PostgreSQL (store.h's operations
 * over libpq): the runtime's tables (barrier.h's schema and invariants,
 * with BYTEA for BLOB and a created_at index for the purge), the batch
 * transaction with a savepoint per request, the neutral pt_tx SQL of
 * participant.h, and external.c's markers.
 *
 * Replicas. Several processes of one service may share one database. Each
 * batch runs READ COMMITTED (not SERIALIZABLE): every decision the runtime
 * stores inserts a row that any conflicting decision would insert too, so
 * the unique constraints, not the isolation level, keep the rules:
 *   - one key twice: pt_idempotency's primary key;
 *   - two keys for one phase, or an action racing its null compensation:
 *     pt_barrier's primary key (saga_id, step, phase); an action that ran
 *     its handler inserts its barrier row plainly and never takes over a
 *     fence (only a hanging action, answered SKIPPED, does), so an action
 *     that ran cannot swallow a fence committed meanwhile.
 * The second of two racing inserts waits for the first transaction and,
 * once it commits, fails with a unique violation: its request's savepoint
 * is rolled back (business effect included) and it is answered
 * OUTCOME_RETRY, nothing stored; the retry then finds the stored reply.
 * Under SERIALIZABLE the same races would end in serialization failures,
 * retried the same way, at the price of predicate locks on every read and
 * false conflicts between unrelated sagas touching one account; READ
 * COMMITTED leaves business check-then-write races to the handler (a
 * conditional UPDATE or a constraint: participant.h). A serialization
 * failure, deadlock or lock timeout (lock_timeout 2 s, like SQLite's busy
 * timeout) is SQLITE_BUSY and answers RETRY the same way.
 *
 * Fail closed: a lost connection fails the batch (every request RETRY,
 * nothing claimed); the next batch resets the connection (PQreset) and
 * goes on once the server is back. A COMMIT that PostgreSQL turned into a
 * ROLLBACK is a failure. A COMMIT whose answer was lost may have committed:
 * its requests were answered RETRY, and their retries replay what it stored.
 *
 * Setup (pt_create's schema, pt_run) holds a transaction-level advisory
 * lock, so replicas starting together create tables one after the other.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pt_internal.h"

/* pg_advisory_xact_lock key of setups ("PTSETUP\0" as a number). */
#define PG_SETUP_LOCK     "5788765023364825344"
#define PG_SCHEMA_VERSION 1

static const char pg_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS pt_idempotency ("
    "  idempotency_key TEXT PRIMARY KEY,"
    "  saga_id TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  phase INTEGER NOT NULL CHECK (phase IN (0, 1)),"
    "  operation TEXT NOT NULL,"
    "  fingerprint BYTEA NOT NULL,"
    "  outcome INTEGER NOT NULL,"
    "  reply BYTEA NOT NULL,"
    "  result TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS pt_idempotency_created ON pt_idempotency (created_at);"
    "CREATE TABLE IF NOT EXISTS pt_barrier ("
    "  saga_id TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  phase INTEGER NOT NULL CHECK (phase IN (0, 1)),"
    "  kind TEXT NOT NULL CHECK (kind = 'record' OR (kind = 'fence' AND phase = 0)),"
    "  owner_key TEXT NOT NULL,"
    "  PRIMARY KEY (saga_id, step, phase));"
    "CREATE TABLE IF NOT EXISTS pt_meta ("
    "  name TEXT PRIMARY KEY,"
    "  value BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pt_counters ("
    "  name TEXT PRIMARY KEY,"
    "  value BIGINT NOT NULL);"
    "INSERT INTO pt_counters(name, value) VALUES"
    "  ('requests', 0), ('effects', 0), ('replays', 0), ('conflicts', 0),"
    "  ('skipped', 0), ('rejected', 0), ('purged', 0) ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS pt_external ("
    "  idempotency_key TEXT NOT NULL,"
    "  target TEXT NOT NULL,"
    "  saga_id TEXT NOT NULL,"
    "  step TEXT NOT NULL,"
    "  phase INTEGER NOT NULL,"
    "  downstream_key TEXT NOT NULL,"
    "  attempts BIGINT NOT NULL CHECK (attempts >= 1),"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL,"
    "  PRIMARY KEY (idempotency_key, target));"
    "CREATE INDEX IF NOT EXISTS pt_external_step ON pt_external (saga_id, step);";

typedef struct {
    PGconn *conn; /* the batch transaction's */
    PGconn *ext;  /* external markers' (autocommit), opened on first use */
    char *url;
    int synchronous_off;
    char err[512];
} pg_store;

static pg_store *pg_of(participant *p)
{
    return p->pg;
}

/* Keeps msg (without its trailing newline) as the last error. */
static void pg_set_err(pg_store *s, const char *msg)
{
    snprintf(s->err, sizeof s->err, "%s", msg && *msg ? msg : "unknown PostgreSQL error");
    size_t n = strlen(s->err);
    while (n > 0 && (s->err[n - 1] == '\n' || s->err[n - 1] == ' '))
        s->err[--n] = '\0';
}

/* The runtime's status for a failed result (store.h). */
static int pg_code(PGconn *conn, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(conn) != CONNECTION_OK)
        return SQLITE_IOERR;
    if (state == NULL)
        return SQLITE_ERROR;
    if (strncmp(state, "23", 2) == 0)
        return SQLITE_CONSTRAINT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 ||
        strcmp(state, "57014") == 0)
        return SQLITE_BUSY;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return SQLITE_IOERR;
    return SQLITE_ERROR;
}

/*
 * One statement with parameters (text unless fmts says binary), results in
 * result_fmt. On success *out holds the result (the caller PQclears it) when
 * out is not NULL. Returns a store.h status, the message kept in s->err.
 */
/* Takes res: the status of a finished statement (see pg_params). */
static int pg_finish(pg_store *s, PGconn *conn, PGresult *res, PGresult **out)
{
    ExecStatusType st = PQresultStatus(res);
    if (out)
        *out = NULL;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out)
            *out = res;
        else
            PQclear(res);
        return SQLITE_OK;
    }
    int rc = pg_code(conn, res);
    const char *msg = res ? PQresultErrorMessage(res) : "";
    pg_set_err(s, msg && *msg ? msg : PQerrorMessage(conn));
    PQclear(res);
    return rc;
}

static int pg_params(pg_store *s, PGconn *conn, const char *sql, int n, const char *const *vals,
                     const int *lens, const int *fmts, int result_fmt, PGresult **out)
{
    return pg_finish(s, conn, PQexecParams(conn, sql, n, NULL, vals, lens, fmts, result_fmt), out);
}

/* Statements without parameters or results (several, ;-separated, allowed). */
static int pg_cmd(pg_store *s, PGconn *conn, const char *sql)
{
    return pg_finish(s, conn, PQexec(conn, sql), NULL);
}

/* Server notices (CREATE ... IF NOT EXISTS "already exists") are not errors. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    log_debug("postgresql: %s", message);
}

/* The session settings every connection of the runtime runs with. */
static int pg_session(pg_store *s, PGconn *conn)
{
    PQsetNoticeProcessor(conn, pg_notice, NULL);
    if (pg_cmd(s, conn, "SET lock_timeout = '2s'") != SQLITE_OK ||
        pg_cmd(s, conn, "SET default_transaction_isolation = 'read committed'") != SQLITE_OK)
        return -1;
    if (s->synchronous_off && pg_cmd(s, conn, "SET synchronous_commit = off") != SQLITE_OK)
        return -1;
    return 0;
}

static int pg_connect(pg_store *s, PGconn **out, char *err, size_t errlen)
{
    PGconn *conn = PQconnectdb(s->url);
    *out = NULL;
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        pg_set_err(s, conn ? PQerrorMessage(conn) : "out of memory");
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", s->err);
        PQfinish(conn);
        return -1;
    }
    if (pg_session(s, conn) != 0) {
        snprintf(err, errlen, "PostgreSQL session setup: %s", s->err);
        PQfinish(conn);
        return -1;
    }
    *out = conn;
    return 0;
}

/* Reconnects a connection that broke (the server restarted or went away). 0 or -1. */
static int pg_revive(participant *p, pg_store *s, PGconn *conn)
{
    PQreset(conn);
    if (PQstatus(conn) != CONNECTION_OK) {
        pg_set_err(s, PQerrorMessage(conn));
        return -1;
    }
    if (pg_session(s, conn) != 0)
        return -1;
    log_info("%s: reconnected to PostgreSQL", p->name);
    return 0;
}

static int pg_begin_on(participant *p, const char *extra)
{
    pg_store *s = pg_of(p);
    if (PQstatus(s->conn) != CONNECTION_OK && pg_revive(p, s, s->conn) != 0)
        return SQLITE_IOERR;
    int rc = pg_cmd(s, s->conn, "BEGIN");
    if (rc == SQLITE_IOERR && pg_revive(p, s, s->conn) == 0)
        rc = pg_cmd(s, s->conn, "BEGIN"); /* the server came back since the last batch */
    if (rc == SQLITE_OK && extra != NULL && (rc = pg_cmd(s, s->conn, extra)) != SQLITE_OK)
        pg_cmd(s, s->conn, "ROLLBACK");
    return rc;
}

static int pg_begin(participant *p)
{
    return pg_begin_on(p, NULL);
}

static int pg_setup_begin(participant *p)
{
    return pg_begin_on(p, "SELECT pg_advisory_xact_lock(" PG_SETUP_LOCK ")");
}

static int pg_commit(participant *p)
{
    pg_store *s = pg_of(p);
    PGresult *res = PQexec(s->conn, "COMMIT");
    int rc = SQLITE_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_code(s->conn, res);
        pg_set_err(s, PQerrorMessage(s->conn));
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        /* An aborted transaction's COMMIT is a ROLLBACK without an error. */
        pg_set_err(s, "the transaction was aborted: COMMIT rolled it back");
        rc = SQLITE_ABORT;
    }
    PQclear(res);
    return rc;
}

static int pg_in_txn(participant *p)
{
    PGTransactionStatusType t = PQtransactionStatus(pg_of(p)->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR;
}

static void pg_rollback(participant *p)
{
    pg_store *s = pg_of(p);
    if (pg_in_txn(p) && pg_cmd(s, s->conn, "ROLLBACK") != SQLITE_OK)
        log_error("%s: ROLLBACK failed: %s", p->name, s->err);
}

static int pg_sp(participant *p, const char *sql)
{
    pg_store *s = pg_of(p);
    return pg_cmd(s, s->conn, sql);
}

static const char *pg_errmsg(participant *p)
{
    return pg_of(p)->err;
}

/* Every committed batch wrote its counters, so it waited for the WAL flush. */
static int pg_changed(participant *p, int mark)
{
    (void)p;
    return !mark;
}

/* ---- The barrier (barrier_rules, on these tables) ------------------------ */

/*
 * barrier_rules' facts, one query per fact it asks for. The results stay
 * until the rules decide (the facts borrow their values).
 */
static int pg_decide(participant *p, const barrier_request *r, barrier_decision *d)
{
    pg_store *s = pg_of(p);
    barrier_facts f;
    PGresult *res[3] = {NULL, NULL, NULL};
    int nres = 0, rc;

    barrier_facts_init(&f);
    while ((rc = barrier_rules(r, &f, d)) < 0) {
        if (rc == BARRIER_NEED_KEY) {
            const char *vals[1] = {r->key};
            /* Binary results: fingerprint and reply are bytea. */
            rc = pg_params(s, s->conn,
                           "SELECT fingerprint, reply FROM pt_idempotency"
                           " WHERE idempotency_key = $1",
                           1, vals, NULL, NULL, 1, &res[nres]);
            if (rc != SQLITE_OK)
                break;
            PGresult *k = res[nres++];
            f.key_read = 1;
            if (PQntuples(k) > 0) {
                f.key_found = 1;
                f.fingerprint = PQgetvalue(k, 0, 0);
                f.fingerprint_len = (size_t)PQgetlength(k, 0, 0);
                f.reply = PQgetvalue(k, 0, 1);
                f.reply_len = (size_t)PQgetlength(k, 0, 1);
            }
        } else if (rc == BARRIER_NEED_ROWS) {
            const char *vals[2] = {r->saga_id, r->step};
            rc = pg_params(s, s->conn,
                           "SELECT phase, kind, owner_key FROM pt_barrier"
                           " WHERE saga_id = $1 AND step = $2",
                           2, vals, NULL, NULL, 0, &res[nres]);
            if (rc != SQLITE_OK)
                break;
            PGresult *rows = res[nres++];
            f.rows_read = 1;
            for (int i = 0; i < PQntuples(rows) && rc == SQLITE_OK; i++)
                rc = barrier_facts_row(&f, r, atoi(PQgetvalue(rows, i, 0)), PQgetvalue(rows, i, 1),
                                       PQgetvalue(rows, i, 2));
            if (rc != SQLITE_OK)
                break;
        } else {
            const char *vals[1] = {f.other_owner};
            rc = pg_params(s, s->conn,
                           "SELECT outcome, operation, result FROM pt_idempotency"
                           " WHERE idempotency_key = $1",
                           1, vals, NULL, NULL, 0, &res[nres]);
            if (rc != SQLITE_OK)
                break;
            PGresult *a = res[nres++];
            f.action_read = 1;
            if (PQntuples(a) > 0) {
                f.action_found = 1;
                f.action_outcome = atoi(PQgetvalue(a, 0, 0));
                f.action_operation = PQgetvalue(a, 0, 1);
                f.action_result = PQgetvalue(a, 0, 2);
            }
        }
    }
    for (int i = 0; i < nres; i++)
        PQclear(res[i]);
    return rc;
}

static int pg_store_record(participant *p, const barrier_request *r, int outcome,
                           const uint8_t *reply, size_t reply_len, const char *result_json,
                           int fence_action, int64_t now_ms)
{
    pg_store *s = pg_of(p);
    char phase[8], out[8], now[24];
    PGresult *res;
    snprintf(phase, sizeof phase, "%d", r->phase);
    snprintf(out, sizeof out, "%d", outcome);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *vals[10] = {
        r->key, r->saga_id,          r->step,     phase, r->operation, (const char *)r->fingerprint,
        out,    (const char *)reply, result_json, now};
    int lens[10] = {0, 0, 0, 0, 0, (int)r->fingerprint_len, 0, (int)reply_len, 0, 0};
    int fmts[10] = {0, 0, 0, 0, 0, 1, 0, 1, 0, 0};
    int rc = pg_params(s, s->conn,
                       "INSERT INTO pt_idempotency(idempotency_key, saga_id, step, phase,"
                       " operation, fingerprint, outcome, reply, result, created_at)"
                       " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                       10, vals, lens, fmts, 0, NULL);
    if (rc != SQLITE_OK)
        return rc;
    if (fence_action) {
        const char *fv[3] = {r->saga_id, r->step, r->key};
        rc = pg_params(s, s->conn,
                       "INSERT INTO pt_barrier(saga_id, step, phase, kind, owner_key)"
                       " VALUES ($1, $2, 0, 'fence', $3)",
                       3, fv, NULL, NULL, 0, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    /* Only a hanging action (SKIPPED) takes over a fence (invariant 4); an
     * action that ran inserts plainly, so a fence committed by another
     * replica meanwhile makes it fail and retry (see the top comment). */
    const char *sql = r->phase == PHASE_ACTION && outcome == OUTCOME_SKIPPED
                          ? "INSERT INTO pt_barrier(saga_id, step, phase, kind, owner_key)"
                            " VALUES ($1, $2, $3, 'record', $4)"
                            " ON CONFLICT (saga_id, step, phase) DO UPDATE"
                            " SET kind = 'record', owner_key = EXCLUDED.owner_key"
                            " WHERE pt_barrier.kind = 'fence'"
                          : "INSERT INTO pt_barrier(saga_id, step, phase, kind, owner_key)"
                            " VALUES ($1, $2, $3, 'record', $4)";
    const char *bv[4] = {r->saga_id, r->step, phase, r->key};
    rc = pg_params(s, s->conn, sql, 4, bv, NULL, NULL, 0, &res);
    if (rc != SQLITE_OK)
        return rc;
    int changed = strcmp(PQcmdTuples(res), "1") == 0;
    PQclear(res);
    if (!changed) {
        pg_set_err(s, "the phase already has a barrier row");
        return SQLITE_CONSTRAINT;
    }
    return SQLITE_OK;
}

static int pg_counts_add(participant *p, const barrier_counts *c)
{
    pg_store *s = pg_of(p);
    uint64_t v[6] = {c->requests, c->effects, c->replays, c->conflicts, c->skipped, c->rejected};
    char buf[6][24];
    const char *vals[6];
    int any = 0;
    for (int i = 0; i < 6; i++) {
        snprintf(buf[i], sizeof buf[i], "%llu", (unsigned long long)v[i]);
        vals[i] = buf[i];
        any |= v[i] != 0;
    }
    if (!any)
        return SQLITE_OK;
    /* One statement, rows in one order: replicas never deadlock on counters. */
    return pg_params(s, s->conn,
                     "UPDATE pt_counters SET value = value + CASE name"
                     " WHEN 'requests' THEN $1::bigint WHEN 'effects' THEN $2::bigint"
                     " WHEN 'replays' THEN $3::bigint WHEN 'conflicts' THEN $4::bigint"
                     " WHEN 'skipped' THEN $5::bigint WHEN 'rejected' THEN $6::bigint END"
                     " WHERE name IN ('requests', 'effects', 'replays', 'conflicts', 'skipped',"
                     " 'rejected')",
                     6, vals, NULL, NULL, 0, NULL);
}

/*
 * The oldest records by created_at (indexed: there is no rowid order to
 * scan), with the barrier rows they own, in one statement; SKIP LOCKED so
 * replicas purging at once share the work instead of waiting.
 */
static int pg_purge(participant *p, int64_t cutoff_ms, int limit, int *purged)
{
    pg_store *s = pg_of(p);
    char cutoff[24], lim[16], n[24];
    PGresult *res;
    *purged = 0;
    if (limit <= 0)
        return SQLITE_OK;
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)cutoff_ms);
    snprintf(lim, sizeof lim, "%d", limit);
    int rc = pg_begin(p);
    if (rc != SQLITE_OK)
        return rc;
    const char *vals[2] = {cutoff, lim};
    rc = pg_params(s, s->conn,
                   "WITH victims AS (SELECT idempotency_key, saga_id, step FROM pt_idempotency"
                   "   WHERE created_at < $1::bigint ORDER BY created_at LIMIT $2::int"
                   "   FOR UPDATE SKIP LOCKED),"
                   " owned AS (DELETE FROM pt_barrier b USING victims v"
                   "   WHERE b.saga_id = v.saga_id AND b.step = v.step"
                   "   AND b.owner_key = v.idempotency_key)"
                   " DELETE FROM pt_idempotency i USING victims v"
                   " WHERE i.idempotency_key = v.idempotency_key",
                   2, vals, NULL, NULL, 0, &res);
    int count = 0;
    if (rc == SQLITE_OK) {
        count = atoi(PQcmdTuples(res));
        PQclear(res);
        snprintf(n, sizeof n, "%d", count);
        const char *cv[1] = {n};
        if (count > 0)
            rc = pg_params(s, s->conn,
                           "UPDATE pt_counters SET value = value + $1::bigint"
                           " WHERE name = 'purged'",
                           1, cv, NULL, NULL, 0, NULL);
    }
    if (rc == SQLITE_OK)
        rc = pg_commit(p);
    if (rc == SQLITE_OK)
        *purged = count;
    else
        pg_rollback(p);
    return rc;
}

/* ---- The neutral SQL of pt_tx ------------------------------------------ */

/* The binds as libpq's text parameters (integers printed into nums). */
static void pg_bind_values(int n, const pt_bind *b, char nums[][24], const char **vals)
{
    for (int i = 0; i < n; i++) {
        if (b[i].type == 'i') {
            snprintf(nums[i], 24, "%lld", (long long)b[i].i);
            vals[i] = nums[i];
        } else {
            vals[i] = b[i].text;
        }
    }
}

static int pg_tx_run(pt_tx *tx, const char *sql, int n, const pt_bind *b, PGresult **res)
{
    pg_store *s = pg_of(tx->p);
    char nums[PT_SQL_MAX_PARAMS][24];
    const char *vals[PT_SQL_MAX_PARAMS];
    pg_bind_values(n, b, nums, vals);
    int rc = pg_params(s, s->conn, sql, n, vals, NULL, NULL, 0, res);
    if (rc != SQLITE_OK)
        snprintf(tx->err, sizeof tx->err, "%s", s->err);
    else
        tx->err[0] = '\0';
    return rc;
}

static int pg_exec(pt_tx *tx, const char *sql, int n, const pt_bind *b)
{
    PGresult *res;
    int rc = pg_tx_run(tx, sql, n, b, &res);
    if (rc == SQLITE_OK) {
        tx->affected = strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
    }
    return rc;
}

static int pg_query(pt_tx *tx, pt_rows *r, const char *sql, int n, const pt_bind *b)
{
    PGresult *res;
    int rc = pg_tx_run(tx, sql, n, b, &res);
    if (rc == SQLITE_OK) {
        r->st = res;
        r->nrows = PQntuples(res);
        r->row = -1;
    }
    return rc;
}

static int pg_script(pt_tx *tx, const char *sql)
{
    pg_store *s = pg_of(tx->p);
    int rc = pg_cmd(s, s->conn, sql);
    if (rc != SQLITE_OK)
        snprintf(tx->err, sizeof tx->err, "%s", s->err);
    return rc;
}

static int pg_next(pt_rows *r)
{
    if (r->row + 1 >= r->nrows)
        return 0;
    r->row++;
    return 1;
}

static const char *pg_text(pt_rows *r, int col)
{
    PGresult *res = r->st;
    if (r->row < 0 || r->row >= r->nrows || col < 0 || col >= PQnfields(res) ||
        PQgetisnull(res, r->row, col))
        return NULL;
    return PQgetvalue(res, r->row, col);
}

/* Integers as SQLite reads them; a boolean reads 1 or 0 as it does on SQLite. */
static int64_t pg_integer(pt_rows *r, int col)
{
    const char *v = pg_text(r, col);
    if (v == NULL)
        return 0;
    if (strcmp(v, "t") == 0)
        return 1;
    return strtoll(v, NULL, 10);
}

static int pg_is_null(pt_rows *r, int col)
{
    return pg_text(r, col) == NULL;
}

static void pg_rows_close(pt_rows *r)
{
    PQclear(r->st);
    r->st = NULL;
    r->nrows = 0;
}

static void pg_release(participant *p)
{
    (void)p;
}

/* ---- External-call markers (external.c) ---------------------------------- */

static int pg_external_mark(participant *p, const pt_request *req, const char *target,
                            char downstream_key[37], uint32_t *attempt, char *err, size_t errlen)
{
    pg_store *s = pg_of(p);
    char phase[8], now[24], fresh[37];
    PGresult *res;
    if (s->ext == NULL && pg_connect(s, &s->ext, err, errlen) != 0)
        return -1;
    if (PQstatus(s->ext) != CONNECTION_OK && pg_revive(p, s, s->ext) != 0) {
        snprintf(err, errlen, "%s", s->err);
        return -1;
    }
    if (util_uuid7(fresh) != 0) {
        snprintf(err, errlen, "no randomness for a downstream key");
        return -1;
    }
    snprintf(phase, sizeof phase, "%d", req->phase);
    snprintf(now, sizeof now, "%lld", (long long)util_wall_ms());
    const char *vals[7] = {
        req->idempotency_key, target, req->saga_id, req->step, phase, fresh, now};
    /* Autocommit: committed (and, synchronous_commit on, flushed) when it returns. */
    int rc = pg_params(s, s->ext,
                       "INSERT INTO pt_external (idempotency_key, target, saga_id, step, phase,"
                       " downstream_key, attempts, created_at, updated_at)"
                       " VALUES ($1, $2, $3, $4, $5::int, $6, 1, $7::bigint, $7::bigint)"
                       " ON CONFLICT (idempotency_key, target) DO UPDATE"
                       " SET attempts = pt_external.attempts + 1, updated_at = EXCLUDED.updated_at"
                       " RETURNING downstream_key, attempts",
                       7, vals, NULL, NULL, 0, &res);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", s->err);
        return -1;
    }
    snprintf(downstream_key, 37, "%s", PQgetvalue(res, 0, 0));
    *attempt = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return 0;
}

/* In the batch transaction (READ COMMITTED sees every committed marker). */
static int pg_external_pending(participant *p, const char *saga_id, const char *step, char *target,
                               size_t target_len)
{
    pg_store *s = pg_of(p);
    PGresult *res;
    const char *vals[2] = {saga_id, step};
    if (pg_params(s, s->conn,
                  "SELECT target FROM pt_external WHERE saga_id = $1 AND step = $2"
                  " AND phase = 0 LIMIT 1",
                  2, vals, NULL, NULL, 0, &res) != SQLITE_OK)
        return -1;
    int found = PQntuples(res) > 0;
    if (found)
        snprintf(target, target_len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return found;
}

static int pg_external_purge(participant *p, int64_t cutoff_ms, int limit)
{
    pg_store *s = pg_of(p);
    char cutoff[24], lim[16];
    PGresult *res;
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)cutoff_ms);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *vals[2] = {cutoff, lim};
    if (pg_params(s, s->conn,
                  "DELETE FROM pt_external WHERE ctid IN (SELECT ctid FROM pt_external"
                  " WHERE created_at < $1::bigint LIMIT $2::int)",
                  2, vals, NULL, NULL, 0, &res) != SQLITE_OK)
        return -1;
    int n = atoi(PQcmdTuples(res));
    PQclear(res);
    return n;
}

/* ---- Open and close ------------------------------------------------------ */

/* The runtime's tables, in the setup transaction (ctx: the participant).
 * 0, or -1 with err and *busy when another process held a lock. */
static int pg_schema_once(void *ctx, int *busy, char *err, size_t errlen)
{
    participant *p = ctx;
    pg_store *s = pg_of(p);
    PGresult *res;
    int rc = pg_setup_begin(p);
    if (rc == SQLITE_OK)
        rc = pg_cmd(s, s->conn, pg_schema_sql);
    if (rc == SQLITE_OK)
        rc = pg_params(s, s->conn,
                       "SELECT coalesce((SELECT value FROM pt_meta WHERE name = 'schema'), 0)", 0,
                       NULL, NULL, NULL, 0, &res);
    if (rc != SQLITE_OK) {
        *busy = rc == SQLITE_BUSY;
        snprintf(err, errlen, "creating the runtime's tables: %s", s->err);
        pg_rollback(p);
        return -1;
    }
    long version = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (version > PG_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "the database was written by a newer participant runtime (schema %ld, this one "
                 "knows %d)",
                 version, PG_SCHEMA_VERSION);
        pg_rollback(p);
        return -1;
    }
    if (pg_cmd(s, s->conn,
               "INSERT INTO pt_meta(name, value) VALUES ('schema', 1) ON CONFLICT DO NOTHING") !=
            SQLITE_OK ||
        pg_commit(p) != SQLITE_OK) {
        snprintf(err, errlen, "setting the runtime's schema version: %s", s->err);
        pg_rollback(p);
        return -1;
    }
    return 0;
}

/* A busy replica can hold the tables' locks past lock_timeout while this
 * one creates them IF NOT EXISTS: pt_retry_while_busy waits that out. */
static int pg_schema(participant *p, char *err, size_t errlen)
{
    return pt_retry_while_busy(p->name, pg_schema_once, p, err, errlen);
}

static int pg_open(participant *p, const char *where, int synchronous_off, char *err, size_t errlen)
{
    pg_store *s = calloc(1, sizeof *s);
    if (s == NULL || (s->url = util_strdup(where)) == NULL) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->synchronous_off = synchronous_off;
    p->pg = s;
    if (pg_connect(s, &s->conn, err, errlen) != 0)
        return -1;
    return pg_schema(p, err, errlen);
}

static void pg_close(participant *p)
{
    pg_store *s = pg_of(p);
    if (s == NULL)
        return;
    if (s->conn)
        PQfinish(s->conn);
    if (s->ext)
        PQfinish(s->ext);
    free(s->url);
    free(s);
    p->pg = NULL;
}

const pt_store_ops pt_store_pg = {
    .name = "postgresql",
    .backend = PT_BACKEND_POSTGRESQL,
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .in_txn = pg_in_txn,
    .sp = pg_sp,
    .errmsg = pg_errmsg,
    .changed = pg_changed,
    .decide = pg_decide,
    .store_record = pg_store_record,
    .counts_add = pg_counts_add,
    .purge = pg_purge,
    .exec = pg_exec,
    .query = pg_query,
    .script = pg_script,
    .next = pg_next,
    .text = pg_text,
    .integer = pg_integer,
    .is_null = pg_is_null,
    .rows_close = pg_rows_close,
    .release = pg_release,
    .setup_begin = pg_setup_begin,
    .external_mark = pg_external_mark,
    .external_pending = pg_external_pending,
    .external_purge = pg_external_purge,
};
