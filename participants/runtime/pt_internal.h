/*
 * pt_internal — what the participant runtime's files share and services
 * never see: the participant and reply structures, the operation registry,
 * the fault injector and the batch entry point.
 *
 * Files of the runtime and what each owns:
 *   participant.c  lifecycle, registry, stats, nng socket, worker thread
 *   batch.c        one batch: decode, validate, one transaction, replies
 *   store.h        the seam: one table of database operations per backend
 *   store_sqlite.c SQLite: transaction, barrier.c, statement cache, pt_tx
 *   barrier.c      the pt_ tables on SQLite: idempotency, barrier, counters, purge
 *   store_pg.c     PostgreSQL: the same tables and operations over libpq
 *   sql_api.c      participant.h's neutral pt_tx calls, onto the backend's table
 *   faults.c       the fault-injection spec and its deterministic draws
 *   handler_api.c  the helpers handlers call (params, results, errors)
 *   external.c     in-flight markers of calls to external systems
 *   pt_metrics.c   per-operation request counters and latency histograms
 */
#ifndef SAGA_PT_INTERNAL_H
#define SAGA_PT_INTERNAL_H

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <stddef.h>
#include <stdint.h>

#include "barrier.h"
#include "store.h"
#include "listener.h"
#include "security.h"
#include "participant.h"
#include "util.h"

#define PT_ERROR_MAX    512 /* bytes of a reply's error text, NUL included */
#define PT_BATCH_MAX    256 /* requests in one batch transaction */
#define PT_CONTEXTS     64  /* default nng contexts */
#define PT_CONTEXTS_MAX 4096

/* What a handler fills (participant.h declares it opaque). */
struct pt_reply {
    kvmap result;
    char error[PT_ERROR_MAX];
};

/* One registered operation. */
typedef struct {
    char *name;
    pt_handler handler;       /* SQLite-only handler (pt_register), or NULL */
    pt_tx_handler tx_handler; /* neutral handler (pt_register_tx), or NULL */
    void *arg;
    int phase; /* PHASE_ACTION or PHASE_COMPENSATE */
    /* An action: its compensation's name or NULL; a compensation: its action's name. */
    char *partner;
} pt_op;

/* The parsed fault spec and its generator; used by one thread at a time. */
typedef struct {
    int enabled; /* any probability above zero */
    uint64_t seed;
    double drop_reply;
    double crash_before_commit;
    double crash_after_commit;
    double delay;
    double retry;
    int64_t delay_ms;
    util_prng rng;
} pt_faults;

/* One message of a batch. */
typedef struct {
    const uint8_t *msg; /* in: the encoded request (borrowed) */
    size_t len;
    uint8_t *reply; /* out: the encoded reply (malloc'd; NULL when out of memory) */
    size_t reply_len;
} pt_item;

typedef struct pt_conn pt_conn;

struct participant {
    char *name;
    char *listen_url;
    sec_tls_files tls; /* strings owned (NULL when unset) */
    int contexts;
    int64_t retention_ms;
    int purge_batch;
    int64_t purge_every_ms;
    int synchronous_off;    /* commits skip fdatasync (benchmarks only): not counted as syncs */
    const pt_store_ops *be; /* the backend (store.h) */
    barrier_store *store;   /* SQLite: barrier.c's store */
    void *pg;               /* PostgreSQL: store_pg.c's connection state */
    int64_t changes_mark;   /* SQLite: total changes when the batch began */
    pt_tx tx;               /* the handler's transaction handle, reused per call */
    char *external_path;    /* external.c's marker file (malloc'd) */
    sqlite3 *external_db;   /* opened on first use; serving thread only */
    pt_stmt_cache
        *stmts; /* pt_prepare's statements on the store's connection; serving thread only */
    pt_op *ops;
    size_t n_ops;
    pt_faults faults;
    struct pt_metrics *metrics; /* pt_metrics.h: laid out at pt_start; NULL before */

    /* mtx guards stats, the queue, serving, serve_waiters, stopping and replies_pending. */
    nng_mtx *mtx;
    nng_cv *cv;
    pt_stats stats;

    /* Serving (participant.c). */
    int started;
    int stopping;
    int stopped;
    int sock_open;
    nng_socket sock;
    sp_listener *listener; /* common/listener.h: keeps an ipc:// listener accepting */
    pt_conn *conns;        /* contexts entries */
    pt_conn *queue_head, *queue_tail;
    int replies_pending; /* replies handed to nng (sending or delayed) */
    int serving;         /* a thread runs batches or the purge: it alone uses the store */
    int serve_waiters;   /* threads waiting for serving to clear */
    nng_thread *worker;
    pt_conn *batch_conns[PT_BATCH_MAX]; /* the serving thread's scratch */
    pt_item batch_items[PT_BATCH_MAX];
};

/* participant.c */
/* The operation named name, or NULL. */
const pt_op *pt_op_find(const participant *p, const char *name);
/* Adds delta to the in-memory counters (thread-safe). */
void pt_stats_add(participant *p, const pt_stats *delta);
/*
 * batch.c: processes n messages as one batch (see batch.c). Fills every
 * items[i].reply; returns 0, or -1 when out of memory before anything ran
 * (then no reply is set).
 */
int pt_batch_run(participant *p, pt_item *items, size_t n);

/* Runs once(ctx) again while it fails on a lock another process holds
 * (it sets *busy), up to 30 tries 2 s apart, logging each wait with who:
 * a replica of the service busy on the same database holds its tables'
 * locks a moment at a time (on PostgreSQL past lock_timeout, while this
 * one creates them IF NOT EXISTS); that is a wait, not a failure. Returns
 * 0, or -1 with once's reason in err. */
int pt_retry_while_busy(const char *who,
                        int (*once)(void *ctx, int *busy, char *err, size_t errlen), void *ctx,
                        char *err, size_t errlen);

/* external.c */
/* The marker file of the participant database db_path (malloc'd into *out). 0 or -1. */
int pt_external_path(const char *db_path, char **out);
void pt_external_close(participant *p);
/*
 * Is an in-flight marker on file for the action of (saga_id, step)? 1 with
 * its target in target, 0, or -1 when the markers cannot be read.
 */
int pt_external_pending(participant *p, const char *saga_id, const char *step, char *target,
                        size_t target_len);
/* Deletes up to limit markers created before cutoff_ms: how many, or -1. */
int pt_external_purge(participant *p, int64_t cutoff_ms, int limit);

/* faults.c */
/* Parses spec (NULL or "" = off) into f. Returns 0, or -1 with err naming the bad option. */
int pt_faults_parse(const char *spec, pt_faults *f, char *err, size_t errlen);
/* Draws once: 1 with probability prob when faults are on, else 0 (no draw). */
int pt_faults_roll(pt_faults *f, double prob);
/* Logs and kills the process with SIGKILL. */
void pt_faults_crash(const char *where) __attribute__((noreturn));

/* handler_api.c */
void pt_reply_init(pt_reply *r);
void pt_reply_free(pt_reply *r);
/* Copies printable ASCII of in into out (NUL-terminated), others as '?'; for logs and errors. */
void pt_printable(char *out, size_t outlen, const char *in);

/* store_sqlite.c: the batch hands p->stmts to each request and releases it
 * (resets what the handler used) after each handler call. */
void pt_stmt_cache_release(pt_stmt_cache *c);
/* store_sqlite.c: pt_prepare on the cache itself, for the runtime's own statements;
 * pt_stmt_get_as with dollar = 1 prepares the neutral API's $n form. */
int pt_stmt_get(pt_stmt_cache *c, const char *sql, sqlite3_stmt **st);
int pt_stmt_get_as(pt_stmt_cache *c, const char *sql, int dollar, sqlite3_stmt **st);
pt_stmt_cache *pt_stmt_cache_new(sqlite3 *db);
void pt_stmt_cache_free(pt_stmt_cache *c);

#endif
