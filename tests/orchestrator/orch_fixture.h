/*
 * orch_fixture — one whole system under test for the sagad integration
 * tests: the four participant services and sagad, each a real process, in a
 * fresh temp dir with fresh ipc addresses, a generated orchestrator file and
 * a generated order_fulfillment saga (same steps as sagas/order_fulfillment.cfg)
 * whose timeouts and backoffs are short so that retries cost little time.
 *
 * sagad is driven with the real sagactl binary (--json output parsed with
 * jansson, tjson.h); the participants' databases are read with the harness
 * (tests/support/harness.h). Every wait polls with a deadline; nothing here
 * depends on timing for correctness, only for speed.
 *
 * Layout of the temp dir: sagad.cfg, sagad.db, sagas/order_fulfillment.cfg,
 * <svc>.db and <svc>.ipc per service, <proc>.log per process (appended across
 * restarts), ctl-<n>.out for each sagactl run. A service of opts.replicated
 * has a second replica, <svc>-b.ipc and <svc>-b.log, on the same <svc>.db:
 * the orchestrator file lists both URLs for it. Set SAGA_TEST_KEEP=1 to keep
 * the dir after the test (its path is printed).
 */
#ifndef SAGA_TEST_ORCH_FIXTURE_H
#define SAGA_TEST_ORCH_FIXTURE_H

#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "tjson.h"

/* Generous bounds: a loaded 2-core machine running the sanitizer build. */
#define OFX_WAIT_MS  30000 /* a saga reaching a state, a process starting */
#define OFX_CTL_MS   20000 /* one sagactl run */
#define OFX_START_MS 15000 /* a process accepting dials */

enum { SVC_ORDER, SVC_PAYMENT, SVC_INVENTORY, SVC_SHIPPING, OFX_N_SVC };

/* Seeded data (participants/seeds/), the reference of every net-zero check. */
#define SEED_ALICE       100000
#define SEED_BOB         250000
#define SEED_CAROL       500
#define SEED_DAVE        1000000
#define SEED_MONEY       (SEED_ALICE + SEED_BOB + SEED_CAROL + SEED_DAVE)
#define SEED_WIDGET      100
#define SEED_STOCK_TOTAL (100 + 25 + 5 + 0)

/* sagad's settings for a test; zero fields take the defaults in brackets. */
typedef struct {
    int timeout_ms;         /* per attempt of every step [300] */
    int action_attempts;    /* defaults.retry.max_attempts [20] */
    int comp_attempts;      /* defaults.compensation_retry.max_attempts [30] */
    int pivot_attempts;     /* approve_order's retry.max_attempts [40] */
    int initial_backoff_ms; /* both policies [20] */
    int max_backoff_ms;     /* both policies [200] */
    unsigned replicated;    /* bits 1 << SVC_*: services with a second replica [none] */
} ofx_opts;

typedef struct {
    const char *name; /* "payment", ..., "sagad" */
    char *url;        /* ipc:// address (sagad: its admin URL) */
    char *db;         /* database file */
    char *log;        /* stdout + stderr, appended */
    pid_t pid;        /* > 0 while running */
} ofx_proc;

typedef struct {
    char *dir;
    char *cfg; /* the orchestrator file */
    ofx_proc svc[OFX_N_SVC];
    ofx_proc replica[OFX_N_SVC]; /* the second replica ("<svc>-b") of a replicated service */
    unsigned replicated;         /* opts.replicated */
    ofx_proc sagad;
    int ctl_runs;
    int ctl_timeout_ms; /* sagactl --timeout for each request; 0: 10000 */
    char *token_file;   /* set: sagactl gets SAGA_ADMIN_TOKEN_FILE (freed by ofx_destroy) */
} ofx;

/* SAGA_TEST_DATABASE=postgresql (ctest's *_pg variants): sagad's database
 * is a fresh one in a private PostgreSQL server the test program starts once
 * (tests/support/pg_cluster.h) and f->sagad.db its URI; otherwise sagad.db. */
int ofx_on_postgresql(void);
/* SAGA_TEST_SVC_DB=postgresql: the four services' databases are fresh ones
 * in that same private server too (ofx_sql and the books read them there). */
int ofx_services_on_postgresql(void);
/* A fresh database in that server: its URI (malloc'd), or NULL. */
char *ofx_postgresql_database(void);
/* That server (NULL before the first fixture on PostgreSQL), to stop and start it. */
struct pg_cluster *ofx_postgresql_cluster(void);

/* Makes the temp dir and writes the configuration; starts nothing. 0 or -1. */
int ofx_init(ofx *f, const ofx_opts *opts);
/* Starts participant i (with --faults faults when non-NULL); waits until it
 * accepts dials. 0 or -1. */
int ofx_start_svc(ofx *f, int i, const char *faults);
/* SIGTERM and reap participant i. 0 when it exited 0. */
int ofx_stop_svc(ofx *f, int i);
/* The same for the second replica of service i (replicated in opts). */
int ofx_start_replica(ofx *f, int i, const char *faults);
int ofx_stop_replica(ofx *f, int i);
/* Starts sagad (with SAGA_CRASH_POINT=crash_point when non-NULL) and waits
 * until its admin socket accepts dials. 0 or -1. */
int ofx_start_sagad(ofx *f, const char *crash_point);
/* SIGTERM and reap sagad. Its exit code, or -1 when it did not exit by itself. */
int ofx_stop_sagad(ofx *f);
/* SIGKILL and reap sagad. */
void ofx_kill_sagad(ofx *f);
/* Waits up to timeout_ms for sagad to die by itself; 0 when it died of SIGKILL. */
int ofx_wait_sagad_killed(ofx *f, int timeout_ms);
/* All four participants (and their second replicas), then sagad. 0 or -1. */
int ofx_start_all(ofx *f);
/* Kills whatever runs and removes the dir (unless SAGA_TEST_KEEP). */
void ofx_destroy(ofx *f);

/* Prints the last lines of a process's log to stderr (for failure reports). */
void ofx_print_log_tail(const ofx_proc *p, int lines);

/*
 * Runs sagactl --url <admin> <args...> (NULL-terminated) and waits for it.
 * Returns its exit code (-1 when it did not exit normally in OFX_CTL_MS);
 * *out (when out is non-NULL) gets its stdout and stderr, malloc'd.
 */
int ofx_ctl(ofx *f, char **out, ...) __attribute__((sentinel));

/*
 * sagactl --json start order_fulfillment [--key key] with these inputs
 * (NULL customer etc. leave that input out). On exit 0, the id into id and
 * the "existing" flag into *existing (may be NULL). Returns the exit code;
 * *out as for ofx_ctl.
 */
int ofx_start_order(ofx *f, const char *key, const char *customer, const char *sku,
                    const char *quantity, const char *amount, const char *destination, char id[37],
                    int *existing, char **out);

/* sagactl --json status id: the parsed document, or NULL. */
json_t *ofx_status(ofx *f, const char *id);
/* sagactl --json history id: its "events" array, or NULL. */
json_t *ofx_history(ofx *f, const char *id);
/* The step object named name in a status document, or NULL. */
const json_t *ofx_step(const json_t *status, const char *name);

/* Polls the status every ~100 ms until pred(status, arg) is true; returns
 * that status, or NULL at the deadline (printing the last one and sagad's log). */
json_t *ofx_wait(ofx *f, const char *id, int (*pred)(const json_t *status, const void *arg),
                 const void *arg, int timeout_ms);
/* Until the saga is COMPLETED, COMPENSATED or FAILED. */
json_t *ofx_wait_final(ofx *f, const char *id, int timeout_ms);
/* Until step `step` has at least n action attempts and the saga is still RUNNING. */
json_t *ofx_wait_attempts(ofx *f, const char *id, const char *step, int n, int timeout_ms);

/* The step names of the history's events of this kind and phase ("action",
 * "compensate"), in order, joined with ','; consecutive events of one step
 * (its retries) count once; malloc'd ("" when none). */
char *ofx_history_steps(const json_t *history, const char *kind, const char *phase);
/* Events of this kind (and step and phase when non-NULL) that match. */
int ofx_history_count(const json_t *history, const char *kind, const char *step, const char *phase);

/* th_sql_int on participant i's database. */
#define ofx_sql(f, i, ...) th_sql_int((f)->svc[i].db, __VA_ARGS__)
/* A pt_counters value of participant i (requests, effects, replays, ...). */
int64_t ofx_counter(ofx *f, int i, const char *name);

/*
 * The books balance: payment's money_audit and inventory's stock_audit say
 * balanced, with the seeded totals. 0, or -1 after printing what is off.
 */
int ofx_books_balanced(ofx *f);

/* cmocka-level checks with a message (the test includes cmocka.h first). */
#define OFX_ASSERT_STR(actual, expected)                                                           \
    do {                                                                                           \
        const char *ofx_a_ = (actual), *ofx_e_ = (expected);                                       \
        if (ofx_a_ == NULL || strcmp(ofx_a_, ofx_e_) != 0)                                         \
            print_message("%s:%d: got '%s', expected '%s'\n", __FILE__, __LINE__,                  \
                          ofx_a_ ? ofx_a_ : "(null)", ofx_e_);                                     \
        assert_non_null(ofx_a_);                                                                   \
        assert_string_equal(ofx_a_, ofx_e_);                                                       \
    } while (0)

#endif
