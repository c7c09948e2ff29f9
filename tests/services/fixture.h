/*
 * fixture — one participant service under test, for the tests in this
 * directory: a fresh temp dir holding its database and ipc address, the
 * shipped seed (participants/seeds/<name>.cfg, when the service has one) and
 * the running process. Built on the harness (tests/support/harness.h).
 *
 * With SAGA_TEST_SVC_DB=postgresql in the environment (the _pg variants of
 * the tests, CMakeLists.txt) the database is a fresh PostgreSQL database of
 * one private cluster per test program (tests/support/pg_cluster.h) instead
 * of a file: the same tests then prove the same rules on the other backend.
 *
 * Keys follow sagad's convention "<saga_id>/<step>/<action|compensate>", so
 * a test names a step by (saga, step) and the phase picks the key.
 */
#ifndef SAGA_TEST_FIXTURE_H
#define SAGA_TEST_FIXTURE_H

#include <sys/types.h>

#include "harness.h"

/* Generous: the sanitizer build is several times slower. */
#define FX_TIMEOUT_MS 10000

typedef struct {
    const char *name; /* "payment": runs payment-svc */
    char *dir;        /* temp dir, removed by fx_destroy */
    char *url;        /* ipc:// address inside dir */
    char *db;         /* database file inside dir, or a postgresql:// URI */
    char *seed;       /* shipped seed file, or NULL */
    pid_t pid;        /* > 0 while the process runs */
} fx_svc;

/* Does this run put the services on PostgreSQL (SAGA_TEST_SVC_DB=postgresql)? */
int fx_on_pg(void);
/* A fresh database of the program's private cluster (started on first use): its
 * URI, malloc'd, or NULL (reason printed). */
char *fx_pg_database(void);
/* Makes the temp dir and names the paths (a fresh database on PostgreSQL); the
 * process is not started. 0 or -1. */
int fx_init(fx_svc *s, const char *name);
/*
 * Starts <name>-svc on s->url and s->db with the seed, plus --faults faults
 * when non-NULL, and waits until it accepts a dial. 0 or -1.
 */
int fx_start(fx_svc *s, const char *faults);
/* SIGTERM and reap: the exit code, or -1 when it did not exit normally. */
int fx_stop(fx_svc *s);
/* Kills the process if it runs and removes the temp dir; s may be half-built. */
void fx_destroy(fx_svc *s);

/*
 * cmocka setup/teardown: *state becomes a started fx_svc for the named
 * service; the teardown stops it with SIGTERM and fails unless it exits 0.
 */
int fx_setup(void **state, const char *name);
int fx_teardown(void **state);

/*
 * Sends one step and returns the decoded reply (free with th_reply_free), or
 * NULL when no reply came within FX_TIMEOUT_MS (the reason is printed).
 * params are NULL-terminated name, value pairs.
 */
StepReply *fx_step(fx_svc *s, const char *saga, const char *step, int phase, const char *operation,
                   ...) __attribute__((sentinel));
/* The same with the timeout and the nng result in *rv (0, NNG_ETIMEDOUT, ...). */
StepReply *fx_step_timeout(fx_svc *s, int timeout_ms, int *rv, const char *saga, const char *step,
                           int phase, const char *operation, ...) __attribute__((sentinel));

/* A fresh random saga id. */
void fx_saga_id(char out[37]);
/* "<saga>/<step>/<action|compensate>" into out. */
void fx_key(char *out, size_t outlen, const char *saga, const char *step, int phase);

/*
 * cmocka assertions on a reply (the test includes cmocka.h): r is non-NULL
 * and has outcome o / its error text contains needle. On failure they print
 * the reply first, so the log says what came back.
 */
#define FX_ASSERT_OUTCOME(r, o)                                                                    \
    do {                                                                                           \
        const StepReply *fx_r_ = (r);                                                              \
        assert_non_null(fx_r_);                                                                    \
        if ((int)fx_r_->outcome != (int)(o))                                                       \
            print_message("expected %s, got %s: '%s'\n", wire_outcome_name(o),                     \
                          wire_outcome_name(fx_r_->outcome), fx_r_->error);                        \
        assert_int_equal(fx_r_->outcome, (o));                                                     \
    } while (0)
#define FX_ASSERT_ERROR_HAS(r, needle)                                                             \
    do {                                                                                           \
        const StepReply *fx_r_ = (r);                                                              \
        assert_non_null(fx_r_);                                                                    \
        if (strstr(fx_r_->error, (needle)) == NULL)                                                \
            print_message("error '%s' lacks '%s'\n", fx_r_->error, (needle));                      \
        assert_non_null(strstr(fx_r_->error, (needle)));                                           \
    } while (0)

/* th_sql_int / th_sql_text on the service's database. */
#define fx_sql_int(s, ...)  th_sql_int((s)->db, __VA_ARGS__)
#define fx_sql_text(s, ...) th_sql_text((s)->db, __VA_ARGS__)

#endif
