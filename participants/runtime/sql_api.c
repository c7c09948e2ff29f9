/*
 * sql_api — participant.h's backend-neutral SQL (pt_exec, pt_query, ...):
 * parses the types string into binds and hands the statement to the
 * backend's table (store.h). Cursors are tracked on their pt_tx so that
 * whatever a handler leaves open is closed when it returns
 * (pt_tx_release), before the runtime ends its savepoint.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt_internal.h"

/* Reads the varargs into b as types says. Returns the count, or -1 (err set). */
static int pt_binds(pt_tx *tx, const char *types, va_list ap, pt_bind *b)
{
    int n = 0;
    for (const char *t = types ? types : ""; *t; t++, n++) {
        if (n == PT_SQL_MAX_PARAMS) {
            snprintf(tx->err, sizeof tx->err, "more than %d parameters", PT_SQL_MAX_PARAMS);
            return -1;
        }
        b[n].type = *t;
        if (*t == 't') {
            b[n].text = va_arg(ap, const char *);
        } else if (*t == 'i') {
            b[n].i = va_arg(ap, int64_t);
        } else {
            snprintf(tx->err, sizeof tx->err, "parameter type '%c' is not 't' or 'i'", *t);
            return -1;
        }
    }
    return n;
}

/* The runtime's status as participant.h's; a lock another process held
 * (busy, lock timeout, deadlock) is remembered in tx->busy. */
static int pt_db_status(pt_tx *tx, int rc)
{
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        tx->busy = 1;
    if (rc == SQLITE_OK)
        return PT_DB_OK;
    return rc == SQLITE_CONSTRAINT ? PT_DB_CONSTRAINT : PT_DB_ERROR;
}

int pt_tx_backend(const pt_tx *tx)
{
    return tx->backend;
}

int pt_exec(pt_tx *tx, const char *sql, const char *types, ...)
{
    pt_bind b[PT_SQL_MAX_PARAMS];
    va_list ap;
    va_start(ap, types);
    int n = pt_binds(tx, types, ap, b);
    va_end(ap);
    if (n < 0)
        return PT_DB_ERROR;
    tx->affected = 0;
    return pt_db_status(tx, tx->p->be->exec(tx, sql, n, b));
}

int64_t pt_affected(const pt_tx *tx)
{
    return tx->affected;
}

static int pt_vquery(pt_tx *tx, pt_rows **rows, const char *sql, const char *types, va_list ap)
{
    pt_bind b[PT_SQL_MAX_PARAMS];
    *rows = NULL;
    int n = pt_binds(tx, types, ap, b);
    if (n < 0)
        return PT_DB_ERROR;
    pt_rows *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(tx->err, sizeof tx->err, "out of memory");
        return PT_DB_ERROR;
    }
    r->tx = tx;
    r->row = -1;
    int rc = tx->p->be->query(tx, r, sql, n, b);
    if (rc != SQLITE_OK) {
        free(r);
        return pt_db_status(tx, rc);
    }
    r->next = tx->rows;
    tx->rows = r;
    *rows = r;
    return PT_DB_OK;
}

int pt_query(pt_tx *tx, pt_rows **rows, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = pt_vquery(tx, rows, sql, types, ap);
    va_end(ap);
    return rc;
}

int pt_next(pt_rows *rows)
{
    if (rows == NULL || rows->closed)
        return PT_DB_ERROR;
    return rows->tx->p->be->next(rows);
}

const char *pt_text(pt_rows *rows, int col)
{
    return rows->tx->p->be->text(rows, col);
}

int64_t pt_int(pt_rows *rows, int col)
{
    return rows->tx->p->be->integer(rows, col);
}

int pt_is_null(pt_rows *rows, int col)
{
    return rows->tx->p->be->is_null(rows, col);
}

void pt_rows_close(pt_rows *rows)
{
    if (rows == NULL || rows->closed)
        return;
    rows->tx->p->be->rows_close(rows);
    rows->closed = 1; /* freed by pt_tx_release */
}

int pt_query_int(pt_tx *tx, int64_t *out, const char *sql, const char *types, ...)
{
    pt_rows *r;
    va_list ap;
    va_start(ap, types);
    int rc = pt_vquery(tx, &r, sql, types, ap);
    va_end(ap);
    if (rc != PT_DB_OK)
        return PT_DB_ERROR;
    rc = pt_next(r);
    if (rc == 1)
        *out = pt_int(r, 0);
    pt_rows_close(r);
    return rc;
}

int pt_exec_script(pt_tx *tx, const char *sql)
{
    return pt_db_status(tx, tx->p->be->script(tx, sql));
}

const char *pt_tx_errmsg(const pt_tx *tx)
{
    return tx->err[0] ? tx->err : "no error recorded";
}

int pt_tx_error(pt_reply *reply, const pt_tx *tx)
{
    return pt_retry(reply, "database error: %s", pt_tx_errmsg(tx));
}

sqlite3 *pt_tx_sqlite(pt_tx *tx)
{
    return tx->backend == PT_BACKEND_SQLITE ? barrier_db(tx->p->store) : NULL;
}

void pt_tx_release(pt_tx *tx)
{
    for (pt_rows *r = tx->rows, *next; r; r = next) {
        next = r->next;
        pt_rows_close(r);
        free(r);
    }
    tx->rows = NULL;
}
