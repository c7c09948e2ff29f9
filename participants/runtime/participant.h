/*
 * participant.h — the participant runtime: turn a C service into a saga
 * participant that processes every step exactly once.
 *
 * A service registers one handler per operation and writes only business
 * SQL. The runtime serves saga.v1 StepRequests (proto/saga.proto) on an nng
 * REP socket with several contexts in flight, and runs each handler inside
 * the same transaction as the idempotency record of the request (SQLite,
 * or PostgreSQL where replicas may share one database: see the neutral
 * pt_tx API below), so that the business effect and the record commit
 * together or not at all.
 *
 * Rules the runtime enforces (all in the service's own database):
 *   1. First delivery of a key: run the handler, store the reply with the
 *      request's fingerprint, commit, and only then reply.
 *   2. Repeated key, same fingerprint: the stored reply, replayed = true, no
 *      effect, also after a restart (until the key's retention expires).
 *   3. Repeated key, other fingerprint: OUTCOME_CONFLICT, no effect.
 *   4. Copies of one request in flight at once: one effect; the others get
 *      the stored reply (or OUTCOME_RETRY), never a second effect.
 *   5. Barrier per (saga_id, step): a compensation whose action never ran is
 *      OUTCOME_SKIPPED and fences the action; a later ("hanging") action is
 *      OUTCOME_SKIPPED. A compensation after an action with no effect
 *      (REJECTED, SKIPPED) is OUTCOME_SKIPPED. A compensation after an OK
 *      action runs its handler once.
 *   6. A handler's OUTCOME_REJECTED is stored like any reply; its SQL is
 *      rolled back (a refusal has no effect).
 *   7. Database busy, locked or failing: OUTCOME_RETRY, nothing stored.
 *   8. Idempotency records older than the retention (default 7 days) are
 *      purged in small batches in the background: the retention is the
 *      bound on how late a retry may arrive.
 *   9. A request of a saga older than the retention (its id, a version 7
 *      UUID, carries its start time) runs nothing: a key still on record is
 *      replayed; otherwise it is OUTCOME_CONFLICT (the effect may have
 *      happened and its record been purged, so no outcome can be claimed;
 *      sagad stops the saga for an operator). The check needs no
 *      configuration to agree with sagad's.
 *  10. A call to an external system goes through pt_external_begin: its
 *      downstream key is committed (a file of its own) before the call and
 *      reused by every later attempt, so a crash between the call and the
 *      commit never makes a second external effect; while such an action
 *      has no recorded outcome, its compensation is OUTCOME_RETRY, never a
 *      null compensation.
 *
 * Threads: handlers run one at a time, never concurrently, so they need no
 * locking of their own; they run on whichever runtime thread serves at that
 * moment (an nng callback thread, or the purge worker), so they must not
 * keep state in thread-locals. Requests that arrive together are processed
 * as one batch in one transaction (each in its own savepoint) and answered
 * after its commit.
 */
#ifndef SAGA_PARTICIPANT_H
#define SAGA_PARTICIPANT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* The parameter and result maps: opaque here, read with pt_param and
 * pt_action_result (this header is installed on its own). */
typedef struct kvmap kvmap;

/* libsaga_participant is built with -fvisibility=hidden: what this header
 * declares is its whole exported API (and libsaga_participant.map keeps
 * everything else local). */
#pragma GCC visibility push(default)

/* What a handler returns: the step's outcome (values of saga.v1 Outcome). */
enum pt_outcome {
    PT_OK = 0,       /* effect done; commit it */
    PT_REJECTED = 1, /* business refusal: roll the handler's SQL back, store the reply */
    PT_RETRY = 2,    /* transient: roll back, store nothing, the caller retries */
};

/* Which half of a step a request is (values of saga.v1 Phase). */
enum pt_phase {
    PT_PHASE_ACTION = 0,     /* do the step's effect */
    PT_PHASE_COMPENSATE = 1, /* undo it */
};

typedef struct pt_stmt_cache pt_stmt_cache;
typedef struct participant participant;

/* A request as handlers see it. Everything is read-only and lives for the call. */
typedef struct {
    const char *idempotency_key;
    const char *saga_id;
    const char *step;
    const char *operation;
    int phase;        /* PT_PHASE_ACTION or PT_PHASE_COMPENSATE */
    uint32_t attempt; /* informational: 1 for the first delivery */
    const kvmap *params;
    /* For a compensation: the result map of its action's OK reply (so a
     * refund can find the charge it undoes). Empty for actions. */
    const kvmap *action_result;
    /* The runtime's prepared statements, for pt_prepare (not for handlers to touch). */
    pt_stmt_cache *stmts;
    /* The runtime itself, for pt_external_begin (not for handlers to touch). */
    participant *runtime;
} pt_request;

typedef struct pt_reply pt_reply;

/*
 * A handler of a SQLite-only participant: does the business SQL of one
 * operation on db, inside a savepoint the runtime opened (pt_tx_handler is
 * the same on the neutral API, for either backend). Returns PT_OK, PT_REJECTED or PT_RETRY. Any
 * SQLite error should be returned as pt_db_error(reply, db), which makes
 * the whole request OUTCOME_RETRY with nothing stored.
 */
typedef int (*pt_handler)(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg);

/* ---- Backend-neutral SQL: handlers for SQLite or PostgreSQL ------------ */

/*
 * A participant's database is a SQLite file (pt_options.db_path is a path)
 * or a PostgreSQL database (db_path is a "postgresql://" or "postgres://"
 * libpq URI). A handler registered with pt_register_tx gets a pt_tx: the
 * batch transaction of whichever backend is in use, inside a savepoint the
 * runtime opened, the same transaction that stores the request's
 * idempotency record and barrier row. It runs its business SQL there with
 * the calls below and never commits, rolls back or opens transactions
 * itself.
 *
 * SQL: one statement per call, parameters written $1..$n (rewritten to ?n
 * on SQLite) and bound from the varargs, one per character of types:
 * 't' a const char * (NULL binds NULL), 'i' an int64_t (pass int64_t, not
 * int); at most PT_SQL_MAX_PARAMS. Write SQL both engines accept (standard
 * DML, INSERT ... ON CONFLICT, RETURNING, CASE instead of boolean columns);
 * schemas may differ per backend (pt_tx_backend). On PostgreSQL the
 * transaction is READ COMMITTED and other replicas may write the same rows
 * meanwhile: make a check-then-write atomic with a conditional UPDATE
 * (... WHERE balance >= $2, then pt_affected) or a constraint, not with a
 * SELECT followed by a write.
 *
 * Errors: these calls return PT_DB_OK, PT_DB_CONSTRAINT (a unique, check
 * or foreign-key constraint refused the statement) or PT_DB_ERROR; a
 * handler returns pt_tx_error(reply, tx) on anything it does not expect,
 * which answers OUTCOME_RETRY with nothing stored. After an error on
 * PostgreSQL the handler's savepoint is unusable: return at once (PT_RETRY
 * or PT_REJECTED, both roll its SQL back).
 */
#define PT_SQL_MAX_PARAMS 16

enum pt_db_status {
    PT_DB_OK = 0,
    PT_DB_ERROR = -1,
    PT_DB_CONSTRAINT = -2,
};

enum pt_backend {
    PT_BACKEND_SQLITE = 0,
    PT_BACKEND_POSTGRESQL = 1,
};

typedef struct pt_tx pt_tx;
typedef struct pt_rows pt_rows;

/* A handler on the neutral API (see pt_handler for the contract). */
typedef int (*pt_tx_handler)(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg);

/* Which backend tx runs on (PT_BACKEND_*). */
int pt_tx_backend(const pt_tx *tx);
/* Runs a statement returning no rows. PT_DB_OK, PT_DB_CONSTRAINT or PT_DB_ERROR. */
int pt_exec(pt_tx *tx, const char *sql, const char *types, ...);
/* Rows inserted, updated or deleted by tx's last successful pt_exec. */
int64_t pt_affected(const pt_tx *tx);
/*
 * Runs a query; *rows is the cursor (NULL on error). Read it with pt_next,
 * then pt_rows_close it (whatever is left open is closed when the handler
 * returns). Returns PT_DB_OK or PT_DB_ERROR.
 */
int pt_query(pt_tx *tx, pt_rows **rows, const char *sql, const char *types, ...);
/* Moves to the next row: 1 a row, 0 no more rows, PT_DB_ERROR. */
int pt_next(pt_rows *rows);
/* The current row's column col (from 0): text (NULL for SQL NULL; valid
 * until the next pt_next or pt_rows_close), integer (0 for NULL or not an
 * integer), SQL NULL or not. */
const char *pt_text(pt_rows *rows, int col);
int64_t pt_int(pt_rows *rows, int col);
int pt_is_null(pt_rows *rows, int col);
void pt_rows_close(pt_rows *rows);
/* The first column of the first row as an integer: 1 with *out set, 0 when
 * there is no row, PT_DB_ERROR. */
int pt_query_int(pt_tx *tx, int64_t *out, const char *sql, const char *types, ...);
/* Runs several ;-separated statements without parameters (schemas). Status as pt_exec. */
int pt_exec_script(pt_tx *tx, const char *sql);
/* The backend's message for tx's last error. */
const char *pt_tx_errmsg(const pt_tx *tx);
/* Records pt_tx_errmsg(tx) in the reply and returns PT_RETRY. */
int pt_tx_error(pt_reply *reply, const pt_tx *tx);
/* The SQLite connection under tx, or NULL on PostgreSQL (for SQLite-only code). */
sqlite3 *pt_tx_sqlite(pt_tx *tx);

/* ---- Helpers for handlers ---------------------------------------------- */

/* Adds a result entry (copied). Returns 0, or -1 when out of memory. */
int pt_result_set(pt_reply *reply, const char *key, const char *value);
int pt_result_set_i64(pt_reply *reply, const char *key, int64_t value);
/* Sets the error text and returns PT_REJECTED, e.g. return pt_reject(r, "insufficient funds"). */
int pt_reject(pt_reply *reply, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets the error text and returns PT_RETRY. */
int pt_retry(pt_reply *reply, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records sqlite3_errmsg(db) and returns PT_RETRY. */
int pt_db_error(pt_reply *reply, sqlite3 *db);

/*
 * The prepared statement for sql (one SQL statement) on the handler's
 * connection, from the participant's cache: each distinct SQL text is parsed
 * and planned once (SQLITE_PREPARE_PERSISTENT), not once per request.
 * Returns SQLITE_OK with *st ready to bind and step, or the SQLite error of
 * the prepare with *st NULL (return pt_db_error(reply, db) then).
 *
 * The statement belongs to the runtime: never finalize it. It is the
 * handler's until the handler returns; then the runtime resets it and clears
 * its bindings, whatever happened (error, PT_REJECTED, rollback). Call
 * sqlite3_reset(st) to end a read early (e.g. before writing the rows it
 * read). Asking again for the same SQL in the same call gives the same
 * statement, reset and cleared, once its earlier use has finished (stepped
 * to SQLITE_DONE, or reset); while it is still in use (a row pending, or
 * bound but not yet stepped) it gives a second statement, so nested loops
 * over one query are safe. The cache is keyed by the SQL text, so constant
 * SQL strings are best; it holds up to PT_STMT_CACHE_MAX statements and
 * evicts the least recently used.
 */
#define PT_STMT_CACHE_MAX 128
int pt_prepare(const pt_request *req, const char *sql, sqlite3_stmt **st);

/* The parameter's value, or NULL when absent. */
const char *pt_param(const pt_request *req, const char *name);
/* For a compensation: the value of name in its action's result, or NULL
 * when absent (and always for an action). */
const char *pt_action_result(const pt_request *req, const char *name);
/*
 * Required parameters: on success store the value and return 0; when the
 * parameter is missing or malformed, set a reply error naming it (e.g.
 * "missing parameter 'amount'", "parameter 'amount' must be an integer in
 * [1, 1000000000]") and return -1; the handler then returns PT_REJECTED.
 */
int pt_param_str(const pt_request *req, pt_reply *reply, const char *name, const char **out);
int pt_param_i64(const pt_request *req, pt_reply *reply, const char *name, int64_t min, int64_t max,
                 int64_t *out);

/* ---- Effects outside the database -------------------------------------- */

/*
 * A handler whose step calls an external system (a card network, a carrier)
 * cannot put that effect in its transaction. Before the call it asks the
 * runtime for the key to pass downstream:
 *
 *   pt_external_call call;
 *   int rc = pt_external_begin(req, reply, "carrier-book", &call);
 *   if (rc != PT_OK)
 *       return rc;                          // PT_RETRY: nothing was called
 *   ... call the system with call.downstream_key as ITS idempotency key ...
 *   if (the call failed or timed out)
 *       return pt_retry(reply, "...");      // undetermined: sagad retries
 *   ... record what it returned in the service's tables, return PT_OK ...
 *
 * pt_external_begin records an in-flight marker (the attempt and the
 * downstream key) and COMMITS it in a file of its own before returning, so
 * the key survives any crash. A later delivery of the same request that
 * runs the handler again (a crash between the call and the commit, a
 * PT_RETRY, a lost batch) gets the SAME downstream key with attempt + 1,
 * and the external system, which deduplicates on it, answers the first
 * call's result: one external effect, never a second under a new key. The
 * external system must therefore honour idempotency keys (as Stripe's and
 * most payment and carrier APIs do), for at least the participant's
 * retention. target names the call (1..64 printable ASCII bytes), so one
 * handler may make several.
 *
 * While an action's marker exists without a recorded outcome, its
 * compensation is not skipped as a null compensation (the external effect
 * may exist): it is answered OUTCOME_RETRY, nothing stored, until the
 * action is retried; sagad stops the saga as FAILED when that never comes.
 *
 * Returns PT_OK with call filled, or PT_RETRY (reply's error set) when the
 * marker cannot be stored: the handler returns that without calling out.
 */
typedef struct {
    char downstream_key[37]; /* a version 7 UUID, fixed at the first attempt */
    uint32_t attempt;        /* 1: first call under this key; more: an earlier one may have acted */
} pt_external_call;
int pt_external_begin(const pt_request *req, pt_reply *reply, const char *target,
                      pt_external_call *call);

/* ---- The runtime ------------------------------------------------------- */

typedef struct {
    const char *name;       /* service name, for logs ("payment") */
    const char *listen_url; /* e.g. "ipc:///tmp/payment.ipc"; NULL: no socket (tests) */
    const char *db_path;    /* SQLite file (created when missing), or a
                               postgresql:// URI of an existing database */
    int contexts;           /* requests in flight on the socket; 0: 64 */
    int64_t retention_ms;   /* idempotency record retention; 0: 7 days */
    int purge_batch;        /* records deleted per purge transaction; 0: 500 */
    int64_t purge_every_ms; /* how often the purge runs; 0: 60 s */
    int synchronous_off;    /* 1: PRAGMA synchronous=OFF (benchmarks only) */
    const char *faults;     /* fault-injection spec (see pt_faults_help), or NULL */
    /*
     * TLS, for a tls+tcp:// listen_url (docs/SECURITY.md): our certificate
     * and key (required for TLS), the CA that signs client certificates, and
     * whether a client must present one (mutual TLS: the participant's
     * authentication). PEM file paths; NULL: not set. pt_create refuses a
     * listen_url other hosts can reach unless it is tls+tcp:// with a
     * required client certificate, and TLS files without a tls+tcp:// URL.
     */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_ca_file;
    int tls_require_client_cert;
} pt_options;

/*
 * The listen address's security policy alone (pt_create checks it first),
 * the directory of an ipc:// socket included (sec_check_socket_dir):
 * returns 0, or -1 with what to configure in err. For a program that wants
 * to refuse a command line before it touches anything.
 */
int pt_check_security(const pt_options *opts, char *err, size_t errlen);
/*
 * Opens (creating if needed) the database and the runtime's own tables, and
 * parses the fault spec. Returns NULL with a reason in err on failure.
 */
participant *pt_create(const pt_options *opts, char *err, size_t errlen);
/* The runtime's SQLite connection: for the service's schema and seed, before
 * pt_start. NULL on PostgreSQL (use pt_run). */
sqlite3 *pt_db(participant *p);
/* The backend of p's database (PT_BACKEND_*). */
int pt_backend(const participant *p);
/*
 * Runs fn in one transaction on the runtime's connection, outside serving
 * (before pt_start, or between pt_process_batch calls): schema, seed,
 * audits, tests. Commits when fn returns 0, rolls back otherwise. On
 * PostgreSQL the transaction first takes an advisory lock, so replicas
 * starting together run their setups one after the other. A transaction
 * that failed on another process's lock (busy, lock timeout, deadlock: a
 * replica busy on the same database) is rolled back and run again, fn
 * included, every 2 s for up to a minute, with a log line each time; fn
 * must therefore do nothing outside the transaction that a second run
 * would repeat wrongly. Returns 0, or -1 with the reason in err (fn's own
 * return value when it is not 0 and err is left as fn wrote it through
 * pt_tx_errmsg).
 */
int pt_run(participant *p, int (*fn)(pt_tx *tx, void *arg), void *arg, char *err, size_t errlen);
/*
 * Registers an action operation and its compensation (compensation may be
 * NULL when the action needs none). The same arg is passed to both. Returns
 * 0, or -1 for a duplicate or invalid name. Names are unique across actions
 * and compensations. Register before pt_start: the serving threads read the
 * registry without a lock, so pt_register refuses (-1) once started.
 */
int pt_register(participant *p, const char *action_op, pt_handler action,
                const char *compensation_op, pt_handler compensation, void *arg);
/* pt_register for handlers on the neutral API (any backend). */
int pt_register_tx(participant *p, const char *action_op, pt_tx_handler action,
                   const char *compensation_op, pt_tx_handler compensation, void *arg);
/* Listens and starts serving and the purge worker. Returns 0 or an nng error code. */
int pt_start(participant *p, char *err, size_t errlen);
/* Stops serving; in-flight batches finish and reply first. Idempotent. */
void pt_stop(participant *p);
/* Stops if needed and frees everything. pt_destroy(NULL) is a no-op. */
void pt_destroy(participant *p);

/*
 * Processes encoded StepRequests synchronously as one batch (one transaction,
 * exactly as the socket path does) and returns encoded StepReplies in
 * replies[i] / reply_lens[i] (malloc'd; caller frees). A malformed message
 * gets an error reply. For tests and fuzzing; not thread-safe against a
 * started participant. Returns 0, or -1 when out of memory.
 */
int pt_process_batch(participant *p, size_t n, const uint8_t *const *msgs, const size_t *lens,
                     uint8_t **replies, size_t *reply_lens);

/* Deletes up to purge_batch records older than the retention; returns how many, or -1. */
int pt_purge_once(participant *p, int64_t now_wall_ms);

/* Counters since start, for logs, tests and metrics. */
typedef struct {
    uint64_t requests;          /* well-formed requests processed */
    uint64_t effects;           /* handler calls that committed PT_OK */
    uint64_t replays;           /* replies served from a stored record */
    uint64_t conflicts;         /* key reuse with another fingerprint */
    uint64_t skipped;           /* barrier: null compensations and hanging actions */
    uint64_t retries;           /* OUTCOME_RETRY answers (busy, handler, faults) */
    uint64_t malformed;         /* messages that failed to decode or validate */
    uint64_t purged;            /* records purged */
    uint64_t frames;            /* frames received (several requests in one message) */
    uint64_t outlived;          /* refused: the saga is older than the retention (rule 9) */
    uint64_t listener_restarts; /* ipc:// listener found deaf and restarted (common/listener.h) */
    uint64_t syncs; /* batch commits that waited for an fdatasync (not synchronous_off) */
} pt_stats;
void pt_get_stats(participant *p, pt_stats *out);

/*
 * The per-operation metrics in the Prometheus text format, for a service's
 * /metrics (docs/OBSERVABILITY.md): saga_participant_requests_total
 * {service,operation,phase,outcome} and the histogram
 * saga_participant_request_seconds{service,operation,phase}, one series per
 * registered operation from pt_start on (their sum is pt_stats.requests).
 * service is the label's value (escaped here). Returns a malloc'd
 * NUL-terminated text the caller frees, its length in *len (may be NULL),
 * or NULL when out of memory. Any thread, at any time after pt_start.
 */
char *pt_metrics_text(participant *p, const char *service, size_t *len);

/* One line per fault-spec option, for --help. */
const char *pt_faults_help(void);

#pragma GCC visibility pop

#endif
