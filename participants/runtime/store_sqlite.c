/*
 * store_sqlite — the participant runtime on SQLite (store.h's operations):
 * the batch transaction and savepoints, barrier.c's tables, the prepared
 * statement cache behind pt_prepare, and the neutral pt_tx SQL of
 * participant.h run on the cached statements.
 *
 * Behaviour and cost are those the runtime had before the seam: BEGIN
 * IMMEDIATE per batch, savepoints stepped from the cache, every statement
 * prepared once per SQL text. Markers of external calls stay in external.c
 * (a SQLite file of their own), so the table's external_* entries are NULL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pt_internal.h"

/* ---- Prepared-statement cache ------------------------------------------ */

/*
 * Why: SQLite's parse and plan of a handler's SQL cost more CPU than running
 * it, and handlers used to prepare and finalize every statement per request.
 * Only the serving thread (or pt_process_batch's caller) touches the cache.
 *
 * Entries hang in hash chains keyed by the SQL text. An entry is "lent"
 * from pt_prepare until pt_stmt_cache_release (after each handler call),
 * which resets it and clears its bindings; lent entries are never evicted
 * and never handed out twice while in use. batch.c keeps its savepoint
 * statements here too (pt_sp_exec), stepped and reset at once.
 */
#define PT_STMT_BUCKETS 64 /* power of two */

typedef struct pt_stmt_entry {
    struct pt_stmt_entry *next;      /* hash chain */
    struct pt_stmt_entry *lent_next; /* list of entries lent in this call */
    char *sql;
    sqlite3_stmt *st;
    uint64_t hash;
    uint64_t last_used; /* cache clock at the last release: eviction order */
    int lent;
    int runs_at_lend; /* SQLITE_STMTSTATUS_RUN when lent */
    int dollar;       /* prepared from the neutral API's $n form (rewritten to ?n) */
} pt_stmt_entry;

struct pt_stmt_cache {
    sqlite3 *db;
    pt_stmt_entry *buckets[PT_STMT_BUCKETS];
    pt_stmt_entry *lent;
    size_t count;
    uint64_t clock;
};

/* A cache for the statements of db (pt_create). NULL when out of memory. */
pt_stmt_cache *pt_stmt_cache_new(sqlite3 *db)
{
    pt_stmt_cache *c = calloc(1, sizeof *c);
    if (c != NULL)
        c->db = db;
    return c;
}

static uint64_t pt_stmt_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Lends e: records its run count, so a finished use can be told from one in progress. */
static void pt_stmt_lend(pt_stmt_cache *c, pt_stmt_entry *e)
{
    e->lent = 1;
    e->runs_at_lend = sqlite3_stmt_status(e->st, SQLITE_STMTSTATUS_RUN, 0);
    e->lent_next = c->lent;
    c->lent = e;
}

/* Finalizes and frees the least recently used entry not lent, if any. */
static void pt_stmt_evict(pt_stmt_cache *c)
{
    pt_stmt_entry **victim = NULL;
    for (size_t b = 0; b < PT_STMT_BUCKETS; b++)
        for (pt_stmt_entry **pe = &c->buckets[b]; *pe; pe = &(*pe)->next)
            if (!(*pe)->lent && (victim == NULL || (*pe)->last_used < (*victim)->last_used))
                victim = pe;
    if (victim == NULL)
        return; /* everything is in use: the cache grows until the handler returns */
    pt_stmt_entry *e = *victim;
    *victim = e->next;
    sqlite3_finalize(e->st);
    free(e->sql);
    free(e);
    c->count--;
}

int pt_prepare(const pt_request *req, const char *sql, sqlite3_stmt **st)
{
    return pt_stmt_get(req ? req->stmts : NULL, sql, st);
}

/*
 * The neutral API's placeholders $1..$n as SQLite's ?1..?n (SQLite reads $1
 * as a NAMED parameter, numbered by first appearance, so "$2 ... $1" would
 * bind the wrong values). Outside quotes only. malloc'd, NULL when out of memory.
 */
static char *pt_sql_dollar_to_qmark(const char *sql)
{
    char *out = util_strdup(sql);
    char quote = 0;
    if (out == NULL)
        return NULL;
    for (char *s = out; *s; s++) {
        if (quote) {
            if (*s == quote)
                quote = 0;
        } else if (*s == '\'' || *s == '"') {
            quote = *s;
        } else if (*s == '$' && s[1] >= '0' && s[1] <= '9') {
            *s = '?';
        }
    }
    return out;
}

int pt_stmt_get(pt_stmt_cache *c, const char *sql, sqlite3_stmt **st)
{
    return pt_stmt_get_as(c, sql, 0, st);
}

int pt_stmt_get_as(pt_stmt_cache *c, const char *sql, int dollar, sqlite3_stmt **st)
{
    *st = NULL;
    if (c == NULL || sql == NULL)
        return SQLITE_MISUSE;
    uint64_t h = pt_stmt_hash(sql) + (uint64_t)dollar;
    pt_stmt_entry **chain = &c->buckets[h & (PT_STMT_BUCKETS - 1)];
    for (pt_stmt_entry *e = *chain; e; e = e->next) {
        if (e->hash != h || e->dollar != dollar || strcmp(e->sql, sql) != 0)
            continue;
        if (!e->lent) {
            pt_stmt_lend(c, e);
            *st = e->st;
            return SQLITE_OK;
        }
        /* Lent earlier in this call: reusable once that use has finished. */
        if (!sqlite3_stmt_busy(e->st) &&
            sqlite3_stmt_status(e->st, SQLITE_STMTSTATUS_RUN, 0) != e->runs_at_lend) {
            sqlite3_reset(e->st);
            sqlite3_clear_bindings(e->st);
            e->runs_at_lend = sqlite3_stmt_status(e->st, SQLITE_STMTSTATUS_RUN, 0);
            *st = e->st;
            return SQLITE_OK;
        }
    }
    if (c->count >= PT_STMT_CACHE_MAX)
        pt_stmt_evict(c);
    sqlite3_stmt *fresh = NULL;
    char *text = dollar ? pt_sql_dollar_to_qmark(sql) : NULL;
    if (dollar && text == NULL)
        return SQLITE_NOMEM;
    int rc =
        sqlite3_prepare_v3(c->db, text ? text : sql, -1, SQLITE_PREPARE_PERSISTENT, &fresh, NULL);
    free(text);
    if (rc != SQLITE_OK)
        return rc;
    if (fresh == NULL)
        return SQLITE_MISUSE; /* empty SQL or only a comment */
    pt_stmt_entry *e = calloc(1, sizeof *e);
    if (e == NULL || (e->sql = util_strdup(sql)) == NULL) {
        free(e);
        sqlite3_finalize(fresh);
        return SQLITE_NOMEM;
    }
    e->st = fresh;
    e->hash = h;
    e->dollar = dollar;
    e->next = *chain;
    *chain = e;
    c->count++;
    pt_stmt_lend(c, e);
    *st = fresh;
    return SQLITE_OK;
}

void pt_stmt_cache_release(pt_stmt_cache *c)
{
    c->clock++;
    for (pt_stmt_entry *e = c->lent, *next; e; e = next) {
        next = e->lent_next;
        sqlite3_reset(e->st); /* its error, if any, was the handler's to see */
        sqlite3_clear_bindings(e->st);
        e->lent = 0;
        e->lent_next = NULL;
        e->last_used = c->clock;
    }
    c->lent = NULL;
}

/* Finalizes every statement (before the connection closes) and frees c. */
void pt_stmt_cache_free(pt_stmt_cache *c)
{
    if (c == NULL)
        return;
    for (size_t b = 0; b < PT_STMT_BUCKETS; b++) {
        for (pt_stmt_entry *e = c->buckets[b], *next; e; e = next) {
            next = e->next;
            sqlite3_finalize(e->st);
            free(e->sql);
            free(e);
        }
    }
    free(c);
}

/* ---- store.h's operations ---------------------------------------------- */

static sqlite3 *sq_db(participant *p)
{
    return barrier_db(p->store);
}

static int sq_open(participant *p, const char *where, int synchronous_off, char *err, size_t errlen)
{
    if (barrier_open(where, synchronous_off, &p->store, err, errlen) != 0)
        return -1;
    if ((p->stmts = pt_stmt_cache_new(barrier_db(p->store))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void sq_close(participant *p)
{
    pt_stmt_cache_free(p->stmts); /* first: sqlite3_close refuses open statements */
    p->stmts = NULL;
    barrier_close(p->store);
    p->store = NULL;
}

static int sq_begin(participant *p)
{
    return barrier_begin(p->store);
}

static int sq_commit(participant *p)
{
    return barrier_commit(p->store);
}

static void sq_rollback(participant *p)
{
    barrier_rollback(p->store);
}

static int sq_in_txn(participant *p)
{
    return !sqlite3_get_autocommit(sq_db(p));
}

/* One of the batch's savepoint statements (constant SQL) from the cache:
 * every request runs at least four, and sqlite3_exec would parse each. */
static int sq_sp(participant *p, const char *sql)
{
    sqlite3_stmt *st;
    int rc = pt_stmt_get(p->stmts, sql, &st);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    sqlite3_reset(st); /* finished, so the cache may lend it again at once */
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static const char *sq_errmsg(participant *p)
{
    return sqlite3_errmsg(sq_db(p));
}

/* A commit that wrote nothing writes no WAL frame and so does not sync. */
static int sq_changed(participant *p, int mark)
{
    int64_t now = (int64_t)sqlite3_total_changes64(sq_db(p));
    if (mark) {
        p->changes_mark = now;
        return 0;
    }
    return now != p->changes_mark;
}

static int sq_decide(participant *p, const barrier_request *r, barrier_decision *d)
{
    return barrier_decide(p->store, r, d);
}

static int sq_store_record(participant *p, const barrier_request *r, int outcome,
                           const uint8_t *reply, size_t reply_len, const char *result_json,
                           int fence_action, int64_t now_ms)
{
    return barrier_store_record(p->store, r, outcome, reply, reply_len, result_json, fence_action,
                                now_ms);
}

static int sq_counts_add(participant *p, const barrier_counts *c)
{
    return barrier_counts_add(p->store, c);
}

static int sq_purge(participant *p, int64_t cutoff_ms, int limit, int *purged)
{
    return barrier_purge(p->store, cutoff_ms, limit, purged);
}

/* The status of a finished statement, with the message kept in tx. */
static int sq_status(pt_tx *tx, int rc)
{
    if (rc == SQLITE_DONE || rc == SQLITE_ROW || rc == SQLITE_OK) {
        tx->err[0] = '\0';
        return SQLITE_OK;
    }
    snprintf(tx->err, sizeof tx->err, "%s", sqlite3_errmsg(sq_db(tx->p)));
    return (rc & 0xff) == SQLITE_CONSTRAINT ? SQLITE_CONSTRAINT : rc;
}

static int sq_prepare_bound(pt_tx *tx, const char *sql, int n, const pt_bind *b, sqlite3_stmt **out)
{
    sqlite3_stmt *st;
    int rc = pt_stmt_get_as(tx->p->stmts, sql, 1, &st);
    if (rc != SQLITE_OK)
        return sq_status(tx, rc);
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        if (b[i].type == 'i')
            rc = sqlite3_bind_int64(st, i + 1, b[i].i);
        else if (b[i].text == NULL)
            rc = sqlite3_bind_null(st, i + 1);
        else
            rc = sqlite3_bind_text(st, i + 1, b[i].text, -1, SQLITE_STATIC);
    }
    if (rc != SQLITE_OK) {
        sqlite3_reset(st);
        return sq_status(tx, rc);
    }
    *out = st;
    return SQLITE_OK;
}

static int sq_exec(pt_tx *tx, const char *sql, int n, const pt_bind *b)
{
    sqlite3_stmt *st;
    int rc = sq_prepare_bound(tx, sql, n, b, &st);
    if (rc != SQLITE_OK)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ; /* e.g. RETURNING rows nobody reads */
    rc = sq_status(tx, rc);
    sqlite3_reset(st);
    if (rc == SQLITE_OK)
        tx->affected = sqlite3_changes64(sq_db(tx->p));
    return rc;
}

static int sq_query(pt_tx *tx, pt_rows *r, const char *sql, int n, const pt_bind *b)
{
    sqlite3_stmt *st;
    int rc = sq_prepare_bound(tx, sql, n, b, &st);
    if (rc == SQLITE_OK)
        r->st = st;
    return rc;
}

static int sq_script(pt_tx *tx, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(sq_db(tx->p), sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        snprintf(tx->err, sizeof tx->err, "%s", msg ? msg : sqlite3_errmsg(sq_db(tx->p)));
    sqlite3_free(msg);
    return (rc & 0xff) == SQLITE_CONSTRAINT ? SQLITE_CONSTRAINT : rc;
}

static int sq_next(pt_rows *r)
{
    int rc = sqlite3_step(r->st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    sq_status(r->tx, rc);
    return -1;
}

static const char *sq_text(pt_rows *r, int col)
{
    return (const char *)sqlite3_column_text(r->st, col);
}

static int64_t sq_integer(pt_rows *r, int col)
{
    return sqlite3_column_int64(r->st, col);
}

static int sq_is_null(pt_rows *r, int col)
{
    return sqlite3_column_type(r->st, col) == SQLITE_NULL;
}

static void sq_rows_close(pt_rows *r)
{
    sqlite3_reset(r->st); /* the cache lends it again */
}

static void sq_release(participant *p)
{
    pt_stmt_cache_release(p->stmts);
}

static int sq_setup_begin(participant *p)
{
    return barrier_begin_at_startup(p->store);
}

const pt_store_ops pt_store_sqlite = {
    .name = "sqlite",
    .backend = PT_BACKEND_SQLITE,
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .in_txn = sq_in_txn,
    .sp = sq_sp,
    .errmsg = sq_errmsg,
    .changed = sq_changed,
    .decide = sq_decide,
    .store_record = sq_store_record,
    .counts_add = sq_counts_add,
    .purge = sq_purge,
    .exec = sq_exec,
    .query = sq_query,
    .script = sq_script,
    .next = sq_next,
    .text = sq_text,
    .integer = sq_integer,
    .is_null = sq_is_null,
    .rows_close = sq_rows_close,
    .release = sq_release,
    .setup_begin = sq_setup_begin,
};
