/*
 * pg_cluster — a private PostgreSQL server for tests and benchmarks.
 *
 *   layout     pgc_start() makes /tmp/saga-pg-XXXXXX (mode 0700): data/ is
 *              the cluster, server.log the server's output, and the server
 *              listens only on the Unix socket .s.PGSQL.5432 in that dir
 *              (listen_addresses ''; the dir is private, so the port number
 *              only names the socket file and never collides). Authentication
 *              is trust; the superuser is `postgres` when run as root (the
 *              dir is then chowned to postgres and initdb / postgres run as
 *              postgres through setpriv, which execs without forking), else
 *              the current user. max_connections is 100 (10 sagad nodes x 3
 *              connections and the test's own with room to spare).
 *   binaries   $SAGA_PG_BINDIR when set, else the newest
 *              /usr/lib/postgresql/<version>/bin holding initdb and postgres
 *              (pg_config belongs to libpq-dev and may name no server).
 *   speed      initdb runs once per build: the first cluster initialises
 *              $SAGA_BIN_DIR/../pg-template<bindir, '/' as '_'>-<user> (made in a temp
 *              dir and renamed into place, so parallel tests never see a
 *              half-made one) and every cluster is a copy of it. Without
 *              SAGA_BIN_DIR each cluster runs initdb itself.
 *   durable    durable=0 (plain functional tests) runs the server with
 *              fsync, synchronous_commit and full_page_writes off; durable=1
 *              (crash tests) keeps PostgreSQL's defaults and fsyncs the
 *              copied cluster (initdb --sync-only) before starting it.
 *   lifetime   The server is this process's child. Every cluster not
 *              destroyed is destroyed at exit (atexit, before the harness
 *              kills its remaining children). A guard process per cluster
 *              (sh, reading a pipe only this process holds) sees the pipe
 *              close when this process dies any other way (abort(), a
 *              signal) and then stops that cluster's server and removes its
 *              dir. A ctest timeout SIGKILLs the whole process tree, server
 *              and guard included (the dir then stays in /tmp). So no test
 *              leaves a postgres behind.
 *
 * Conventions as in harness.h: 0 / -1 with the reason printed to stderr (or
 * written to err where there is one), malloc'd strings, no cmocka asserts.
 * One thread at a time per cluster; any thread may start one. The socket
 * dir is 0700 (owned by postgres when root): only this user (or root)
 * connects, so a sagad under test must run as the test's user.
 *
 * pg-test-cluster (tests/support/pg_test_cluster.c, built into bin/) is the
 * command-line form, for benchmarks and manual runs:
 *   pg-test-cluster start [--durable] [--db NAME] STATE-FILE
 *       starts a cluster that outlives the command (its own session, no
 *       guard), creates database NAME when given, writes the cluster's dir
 *       to STATE-FILE and prints the URL of NAME (default: postgres).
 *   pg-test-cluster stop STATE-FILE
 *       stops that server (fast shutdown), removes its dir and STATE-FILE.
 */
#ifndef SAGA_TEST_PG_CLUSTER_H
#define SAGA_TEST_PG_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct pg_cluster pg_cluster;

/*
 * Makes and starts a fresh cluster (see above), waiting until it accepts
 * connections. Returns NULL with the reason in err (with the tail of
 * initdb's or the server's log when one of them failed).
 */
pg_cluster *pgc_start(int durable, char *err, size_t errlen);
/*
 * libpq URI of database dbname (percent-encoded), e.g.
 * "postgresql:///db?host=/tmp/saga-pg-AbC123&port=5432&user=postgres";
 * malloc'd, NULL when out of memory.
 */
char *pgc_url(const pg_cluster *c, const char *dbname);
/* CREATE DATABASE name (any text: it is quoted as an identifier). 0 / -1. */
int pgc_create_db(pg_cluster *c, const char *name);
/* The cluster's dir (data dir = "<dir>/data"). */
const char *pgc_dir(const pg_cluster *c);
/* The server's pid, 0 while it is stopped. */
pid_t pgc_server_pid(const pg_cluster *c);
/*
 * Fast shutdown (clients are disconnected, the data kept), waiting until
 * the server has exited; it is killed if that takes over a minute. 0 / -1.
 */
int pgc_stop_server(pg_cluster *c);
/* Starts the stopped server again and waits until it accepts connections. 0 / -1. */
int pgc_start_server(pg_cluster *c);
/* Stops the server (immediate shutdown), removes the dir, frees c (NULL: no-op). */
void pgc_destroy(pg_cluster *c);

/*
 * One statement, formatted by vsnprintf (so only literals the test wrote go
 * in: nothing quotes), run on a new connection to url. pgc_sql_int gives
 * the first column of the only row as an integer in *out; pgc_sql_text the
 * same as a malloc'd string (NULL on error, no row or NULL); pgc_sql_exec
 * runs statements returning nothing or rows. 0 / -1 with the reason printed.
 */
int pgc_sql_int(const char *url, int64_t *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
char *pgc_sql_text(const char *url, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int pgc_sql_exec(const char *url, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- For pg-test-cluster ----------------------------------------------- */

/* pgc_start for a server that outlives this process: no guard, not
 * destroyed at exit, in its own session. */
pg_cluster *pgc_start_detached(int durable, char *err, size_t errlen);
/* Frees the handle and leaves the server running (pgc_stop_dir stops it). */
void pgc_release(pg_cluster *c);
/* Fast shutdown of the server of the cluster in dir (which must be one
 * pgc_start made), waiting until it exits, then removes dir. 0 / -1 with err. */
int pgc_stop_dir(const char *dir, char *err, size_t errlen);

#endif
