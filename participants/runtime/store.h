/*
 * store — the seam between the participant runtime and its database: one
 * table of operations per backend (store_sqlite.c on SQLite, store_pg.c on
 * PostgreSQL), chosen by pt_create from the form of pt_options.db_path.
 * batch.c, participant.c, external.c and handler_api.c reach the database
 * only through p->be, so both backends keep the same rules (participant.h)
 * with the same code deciding them.
 *
 * Status codes: SQLite's (SQLITE_OK, SQLITE_BUSY, SQLITE_CONSTRAINT,
 * SQLITE_ERROR, SQLITE_NOMEM, SQLITE_CORRUPT, ...) are the runtime's
 * vocabulary on both backends; store_pg.c maps PostgreSQL's SQLSTATEs onto
 * them (a unique violation is SQLITE_CONSTRAINT, a serialization failure,
 * deadlock or lock timeout SQLITE_BUSY, a lost connection SQLITE_IOERR).
 *
 * Every operation runs on the serving thread only (or pt_process_batch's
 * or pt_run's caller), like the rest of the store.
 */
#ifndef SAGA_PT_STORE_H
#define SAGA_PT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "barrier.h"
#include "participant.h"

typedef struct participant participant;

/* One bound parameter of a handler's statement. */
typedef struct {
    char type;        /* 't' or 'i' */
    const char *text; /* 't' (NULL: SQL NULL) */
    int64_t i;        /* 'i' */
} pt_bind;

/* A handler's transaction (participant.h's pt_tx): the participant and what
 * the last statement left. */
struct pt_tx {
    participant *p;
    int backend;
    int64_t affected;
    pt_rows *rows; /* every cursor opened in this call, freed by pt_tx_release */
    int busy;      /* a statement failed on another process's lock (pt_run retries) */
    char err[512]; /* the last error ("" when none) */
};

/* A cursor (participant.h's pt_rows). */
struct pt_rows {
    pt_tx *tx;
    pt_rows *next; /* tx->rows chain */
    int closed;
    void *st;       /* SQLite: the cached sqlite3_stmt; PG: the PGresult */
    int row, nrows; /* PG: current row (-1 before the first), rows in the result */
    char num[24];   /* scratch for pt_text of an integer column (SQLite) */
};

typedef struct pt_store_ops {
    const char *name; /* "sqlite", "postgresql" */
    int backend;      /* PT_BACKEND_* */

    /* Opens the database at where and the runtime's tables. 0 or -1 with err. */
    int (*open)(participant *p, const char *where, int synchronous_off, char *err, size_t errlen);
    void (*close)(participant *p);

    /* The batch transaction; rollback never fails from the caller's view. */
    int (*begin)(participant *p);
    int (*commit)(participant *p);
    void (*rollback)(participant *p);
    /* 1 while a transaction is open (0: it disappeared under us). */
    int (*in_txn)(participant *p);
    /* SAVEPOINT name, RELEASE name, ROLLBACK TO name (constant SQL). */
    int (*sp)(participant *p, const char *sql);
    /* The last error's text, for logs. */
    const char *(*errmsg)(participant *p);
    /* Did the transaction being committed write anything (for stats.syncs)? Called before
     * begin (mark = 1) and after commit (mark = 0): returns 1 when rows changed between. */
    int (*changed)(participant *p, int mark);

    /* barrier.h's operations, on this backend's tables. */
    int (*decide)(participant *p, const barrier_request *r, barrier_decision *d);
    int (*store_record)(participant *p, const barrier_request *r, int outcome, const uint8_t *reply,
                        size_t reply_len, const char *result_json, int fence_action,
                        int64_t now_ms);
    int (*counts_add)(participant *p, const barrier_counts *c);
    int (*purge)(participant *p, int64_t cutoff_ms, int limit, int *purged);

    /* The neutral SQL of pt_tx (participant.h); SQLite codes. */
    int (*exec)(pt_tx *tx, const char *sql, int n, const pt_bind *b);
    int (*query)(pt_tx *tx, pt_rows *r, const char *sql, int n, const pt_bind *b);
    int (*script)(pt_tx *tx, const char *sql);
    int (*next)(pt_rows *r);
    const char *(*text)(pt_rows *r, int col);
    int64_t (*integer)(pt_rows *r, int col);
    int (*is_null)(pt_rows *r, int col);
    void (*rows_close)(pt_rows *r);
    /* After each handler call: statements it used are reset. */
    void (*release)(participant *p);
    /* pt_run's transaction (PG: with the setup advisory lock). */
    int (*setup_begin)(participant *p);

    /* external.c's markers: committed on their own, outside the batch transaction. */
    int (*external_mark)(participant *p, const pt_request *req, const char *target,
                         char downstream_key[37], uint32_t *attempt, char *err, size_t errlen);
    int (*external_pending)(participant *p, const char *saga_id, const char *step, char *target,
                            size_t target_len);
    int (*external_purge)(participant *p, int64_t cutoff_ms, int limit);
} pt_store_ops;

extern const pt_store_ops pt_store_sqlite;
extern const pt_store_ops pt_store_pg;

/* Frees tx's cursors (after a handler call or pt_run). */
void pt_tx_release(pt_tx *tx);

#endif
