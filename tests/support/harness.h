/*
 * harness — what integration tests need to drive the project's real
 * programs (the participant services, sagad, sagactl) from a cmocka test:
 *
 *   temp dirs     th_tempdir() makes a private directory under /tmp (mkdtemp,
 *                 mode 0700); th_rmtree() removes it with everything inside.
 *                 th_path() / th_ipc_url() name files and fresh ipc://
 *                 addresses inside it, so parallel tests never share one.
 *   programs      th_spawn() starts $SAGA_BIN_DIR/<program> (set by ctest,
 *                 see saga_add_test) with posix_spawn (nng is not fork-safe)
 *                 and extra environment (e.g. SAGA_CRASH_POINT=...);
 *                 th_spawn_with() also sets its working directory, stdin,
 *                 or detaches it.
 *                 th_wait_dial() waits, bounded, until the program's socket
 *                 accepts a dial; th_wait_exit() / th_stop() / th_kill() end
 *                 it and reap it with a timeout, giving the waitpid status.
 *                 Every child th_spawn() started and nobody reaped is
 *                 SIGKILLed and reaped when the test program exits (a failed
 *                 cmocka assertion skips the test's own clean-up), so no test
 *                 leaves a process behind.
 *   steps         th_client_* keep one req0 socket to a participant and
 *                 exchange raw bytes or saga.v1 StepRequest/StepReply with a
 *                 receive timeout; th_call() is the one-shot form.
 *   databases     th_sql_int() / th_sql_text() run one scalar query on a
 *                 SQLite file (read-only), to check what a program stored;
 *                 th_sql_exec() changes one, to test how a program reacts.
 *
 * Conventions: functions returning int give 0 on success and -1 (or an nng
 * error code where said) on failure, after printing the reason to stderr so
 * that a failing assertion comes with an explanation. Returned strings are
 * malloc'd and freed by the caller; replies are freed with th_reply_free.
 * Nothing here calls cmocka's assert macros, so it is usable from helper
 * threads and from setup/teardown.
 */
#ifndef SAGA_TEST_HARNESS_H
#define SAGA_TEST_HARNESS_H

#include <nng/nng.h>
#include <stdint.h>
#include <sys/types.h>

#include "kv.h"
#include "wire.h"

/* ---- Files and addresses ----------------------------------------------- */

/* Makes /tmp/saga-test-XXXXXX (mode 0700); malloc'd path, or NULL. */
char *th_tempdir(void);
/*
 * Makes a 0700 temp dir for a file sagad must trust (an alert_command):
 * every directory above it must be writable by nobody but its owner, which
 * /tmp is not. Under the build tree ($SAGA_BIN_DIR/..) when that qualifies,
 * else under $HOME, else (root) /run. malloc'd path, or NULL (with the
 * reason printed).
 */
char *th_trusted_tempdir(void);
/* Removes path and everything below it (no-op for NULL). Returns 0 or -1. */
int th_rmtree(const char *path);
/* "dir/name", malloc'd. */
char *th_path(const char *dir, const char *name);
/* "ipc://dir/name.ipc", malloc'd: a fresh address inside a temp dir. */
char *th_ipc_url(const char *dir, const char *name);
/* "$SAGA_SOURCE_DIR/rel" (e.g. a shipped seed file), malloc'd; NULL when unset. */
char *th_source_path(const char *rel);
/* Writes text to path (created or truncated, mode 0600). Returns 0 or -1. */
int th_write_file(const char *path, const char *text);
/* The whole file as a NUL-terminated malloc'd string, or NULL. */
char *th_read_file(const char *path);

/* ---- Programs ---------------------------------------------------------- */

/*
 * Starts program with the NULL-terminated args (not including argv[0]).
 * program without a '/' is looked up in $SAGA_BIN_DIR. env (NULL or
 * NULL-terminated "NAME=VALUE" strings) is added to this process's
 * environment, replacing equal names. With output non-NULL, the child's
 * stdout and stderr are appended to that file; otherwise it shares ours.
 * Returns 0 with *pid set, or -1.
 */
int th_spawn(const char *program, const char *const *args, const char *const *env,
             const char *output, pid_t *pid);
/* What th_spawn_with adds to th_spawn; zero-initialised means "as th_spawn". */
typedef struct {
    const char *cwd; /* the child's working directory; NULL: ours */
    int stdin_fd;    /* > 0: becomes the child's stdin (its CLOEXEC flag does not matter) */
    /* In its own session and not tracked: the exit-time clean-up leaves it
     * running (a server that must outlive this process, e.g. pg-test-cluster's). */
    int detach;
} th_spawn_opts;
/* th_spawn with opts (NULL: none). Returns 0 with *pid set, or -1. */
int th_spawn_with(const th_spawn_opts *opts, const char *program, const char *const *args,
                  const char *const *env, const char *output, pid_t *pid);
/*
 * Waits until a req0 socket can dial url, for at most timeout_ms. With pid
 * > 0, gives up early (reaping it) when that process exits. Returns 0 or -1.
 */
int th_wait_dial(const char *url, pid_t pid, int timeout_ms);
/* waitpid() for a child of th_spawn: reaping it anywhere else would leave its
 * pid to the exit-time clean-up, which could then kill a stranger reusing it. */
pid_t th_waitpid(pid_t pid, int *status, int flags);
/* Waits for pid to exit, for at most timeout_ms; *status from waitpid. 0, or -1 on timeout. */
int th_wait_exit(pid_t pid, int timeout_ms, int *status);
/*
 * SIGTERM, then waits timeout_ms; if the process is still running, SIGKILL
 * and reap. Returns 0 when it exited on SIGTERM (status in *status), 1 when
 * it had to be killed, -1 on error.
 */
int th_stop(pid_t pid, int timeout_ms, int *status);
/* SIGKILL and reap. Returns 0 or -1. */
int th_kill(pid_t pid);
/* Is status a normal exit with code code? */
int th_exited_with(int status, int code);

/* ---- Talking to a participant ------------------------------------------ */

typedef struct {
    nng_socket sock;
    int open;
} th_client;

/*
 * Opens a req0 socket dialed to url, with send and receive timeouts of
 * timeout_ms and no automatic resend within that time. Returns 0 or an nng
 * error code.
 */
int th_client_open(th_client *c, const char *url, int timeout_ms);
void th_client_close(th_client *c);
/*
 * Sends msg (len bytes, may be 0) and receives the reply into a malloc'd
 * *reply / *reply_len. Returns 0 or an nng error code (NNG_ETIMEDOUT when
 * nothing came back in time).
 */
int th_client_raw(th_client *c, const void *msg, size_t len, uint8_t **reply, size_t *reply_len);
/*
 * Sends msg as one req0 request over a plain Unix socket speaking nng's IPC
 * framing (not an nng client) to ipc_url. 1 when the peer hangs up without
 * answering, 0 when it answers or keeps the connection open for 5 s, -1 on
 * a local error. For messages a service must refuse by closing the
 * connection: nng 1.5.2's req0 re-sends such a request on every
 * reconnection, and its close can then block for good (nanomsg/nng#1543).
 */
int th_ipc_hangs_up(const char *ipc_url, const void *msg, size_t len);
/*
 * Sends one StepRequest packed from the arguments (wire_pack_request) and
 * decodes the StepReply into *out (free with th_reply_free). Returns 0, an
 * nng error code, or -1 when the reply does not decode.
 */
int th_client_step(th_client *c, const char *key, const char *saga_id, const char *step, int phase,
                   const char *operation, const kvmap *params, StepReply **out);
/* th_client_open + th_client_step + th_client_close. */
int th_call(const char *url, int timeout_ms, const char *key, const char *saga_id, const char *step,
            int phase, const char *operation, const kvmap *params, StepReply **out);
void th_reply_free(StepReply *r);
/* The reply's result value for key, or NULL. */
const char *th_result(const StepReply *r, const char *key);
/*
 * Fills m from NULL-terminated name, value pairs:
 * th_kv(&m, "customer", "alice", "amount", "1000", NULL). Returns 0 or -1.
 */
int th_kv(kvmap *m, ...) __attribute__((sentinel));

/* ---- Databases --------------------------------------------------------- */

#define TH_SQL_ERROR INT64_MIN

/*
 * Runs one query, formatted by sqlite3_mprintf (so %Q quotes a string), on
 * the database file db_path opened read-only (or, when db_path is a
 * postgresql:// URI, on that database: a boolean reads as 1 / 0 there, as in
 * SQLite), and returns the first column of the first row as an integer;
 * TH_SQL_ERROR (after printing why) when the query fails or returns no row.
 */
int64_t th_sql_int(const char *db_path, const char *fmt, ...);
/* The same for a text value: malloc'd, or NULL on error, no row or NULL. */
char *th_sql_text(const char *db_path, const char *fmt, ...);
/*
 * Runs formatted statements read-write (e.g. to corrupt a database on
 * purpose while its program is stopped), on a file or a postgresql:// URI.
 * Returns 0 or -1 (reason printed).
 */
int th_sql_exec(const char *db_path, const char *fmt, ...);
/*
 * The rows of `table` in the SQLite file db_path, opened read-write (so
 * that a WAL left by a crash is recovered) after PRAGMA integrity_check
 * said "ok"; -1 when the database is not readable or not intact.
 */
int th_sqlite_intact_rows(const char *db_path, const char *table);

/* A test's private directory with a database path in it ("t.db") and its
 * log's path, for cmocka: th_db_dir_setup makes *state one, teardown
 * removes the directory and frees it. */
typedef struct {
    char *dir;
    char *db;
    char *wal;
} th_db_dir;
int th_db_dir_setup(void **state);
int th_db_dir_teardown(void **state);

/* sqlite3_exec (db is a sqlite3 *) printing the statement and SQLite's
 * error to stderr when it fails; SQLite's result code. */
int th_sqlite_exec(void *db, const char *sql);

/* Waits for child pid; 1 when a SIGKILL ended it, else 0 after saying on
 * stderr how it ended (a crash point's child must die of its own kill). */
int th_died_of_sigkill(pid_t pid);

#endif
