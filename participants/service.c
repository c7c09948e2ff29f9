/*
 * service — see service.h. The program skeleton shared by the four example
 * participants: command line, startup transaction (schema + seed), signal
 * wait loop and shutdown, plus small SQL / validation helpers.
 */
#include "service.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db_url.h"
#include "cpu_sched.h"
#include "crashpoint.h"
#include "daemon_notify.h"
#include "fd_limit.h"
#include "httpd.h"
#include "json_util.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/* Set by the SIGINT/SIGTERM handler; the main loop polls it. */
static volatile sig_atomic_t svc_stop_requested;

static void svc_on_signal(int sig)
{
    (void)sig;
    svc_stop_requested = 1;
}

/* ---- Command line ------------------------------------------------------ */

typedef struct {
    const char *listen_url; /* from argv, or owned_listen */
    const char *db_path;    /* from argv, or owned_db */
    char *owned_listen;     /* malloc'd defaults */
    char *owned_db;
    const char *seed_path;
    const char *faults;
    int log_level;
    int log_json;
    int contexts;
    int64_t retention_ms;
    int synchronous_off;
    int cpu_scheduling;   /* enum cpu_scheduling: batch unless --cpu-scheduling normal */
    const char *tls_cert; /* TLS for a tls+tcp:// --listen (docs/SECURITY.md) */
    const char *tls_key;
    const char *tls_ca;
    int tls_require_client_cert;
    const char *metrics_url; /* http://127.0.0.1:PORT for /metrics; NULL: off */
} svc_args;

static void svc_args_free(svc_args *a)
{
    free(a->owned_listen);
    free(a->owned_db);
}

static void svc_usage(const svc_def *def, const char *program, FILE *out)
{
    fprintf(out,
            "Usage: %s [options]\n"
            "%s\n"
            "\n"
            "Options:\n"
            "  --listen URL       nng address to serve saga.v1 steps on (ipc://, tcp://,\n"
            "                     tls+tcp://). An address other hosts can reach is refused\n"
            "                     unless it is tls+tcp:// with --tls-require-client-cert.\n"
            "                     Default: ipc://$XDG_RUNTIME_DIR/saga-%s.ipc; required when\n"
            "                     XDG_RUNTIME_DIR is not set (no shared /tmp default: another\n"
            "                     user could take the address first).\n"
            "  --db PATH|URL      SQLite database (created when missing), or the\n"
            "                     postgresql:// URI of an existing database (replicas of\n"
            "                     the service may share one). Default: %s.db\n"
            "  --seed FILE        libconfig seed file, loaded only into an empty database\n"
            "  --faults SPEC      fault injection for tests, comma-separated options:\n"
            "%s"
            "  --tls-cert FILE    PEM certificate (chain) served on a tls+tcp:// address\n"
            "  --tls-key FILE     its PEM private key (keep it owner-only)\n"
            "  --tls-ca FILE      PEM CA certificate(s) that sign client certificates\n"
            "  --tls-require-client-cert\n"
            "                     refuse clients without a certificate signed by --tls-ca\n"
            "                     (mutual TLS: how sagad authenticates to the service)\n"
            "  --contexts N       requests in flight on the socket (default 64)\n"
            "  --retention-s S    keep idempotency records S seconds (default 7 days): the\n"
            "                     bound on how late a retry may arrive\n"
            "  --unsafe-no-fsync  PRAGMA synchronous=OFF: loses commits on power loss;\n"
            "                     benchmarks only\n"
            "  --cpu-scheduling P batch (default: Linux SCHED_BATCH, fewer preemptions\n"
            "                     between the service's own threads) or normal (leave the\n"
            "                     policy the service was started with)\n"
            "  --log-level LEVEL  debug, info (default), warn or error\n"
            "  --log-format FMT   text (default) or json\n"
            "  --metrics-url URL  serve Prometheus metrics at URL/metrics and a health\n"
            "                     check at URL/healthz, e.g. http://127.0.0.1:9465\n"
            "                     (loopback only; see docs/OBSERVABILITY.md). Default: off\n"
            "  --version          print the version\n"
            "  --help             this text\n"
            "%s"
            "\n"
            "Operations (saga.v1 StepRequest.operation):\n"
            "%s"
            "\n"
            "Exit status: 0 after SIGINT/SIGTERM, 1 when the service cannot run,\n"
            "2 for a bad command line or seed file.\n",
            program, def->summary, def->name, def->name, pt_faults_help(),
            def->option_help ? def->option_help : "", def->operations);
}

/* Parses a positive integer option value in [min, max]; prints the error. */
static int svc_parse_count(const char *program, const char *option, const char *text, int64_t min,
                           int64_t max, int64_t *out)
{
    if (util_parse_i64(text, out) != 0 || *out < min || *out > max) {
        fprintf(stderr, "%s: %s must be an integer in [%lld, %lld], not '%s'\n", program, option,
                (long long)min, (long long)max, text);
        return -1;
    }
    return 0;
}

/* Returns 0 to run, or the exit status to return (0 for --help, 2 for errors). */
static int svc_parse_args(const svc_def *def, const char *program, int argc, char **argv,
                          svc_args *a, int *exit_now)
{
    enum {
        OPT_LISTEN = 256,
        OPT_DB,
        OPT_SEED,
        OPT_FAULTS,
        OPT_LEVEL,
        OPT_FORMAT,
        OPT_CONTEXTS,
        OPT_RETENTION,
        OPT_NOFSYNC,
        OPT_CPU_SCHED,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_TLS_CA,
        OPT_TLS_REQUIRE,
        OPT_METRICS_URL,
        OPT_HELP,
        OPT_VERSION,
        OPT_SERVICE /* def->option_name */
    };
    static const struct option common_options[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"db", required_argument, NULL, OPT_DB},
        {"seed", required_argument, NULL, OPT_SEED},
        {"faults", required_argument, NULL, OPT_FAULTS},
        {"log-level", required_argument, NULL, OPT_LEVEL},
        {"log-format", required_argument, NULL, OPT_FORMAT},
        {"contexts", required_argument, NULL, OPT_CONTEXTS},
        {"retention-s", required_argument, NULL, OPT_RETENTION},
        {"unsafe-no-fsync", no_argument, NULL, OPT_NOFSYNC},
        {"cpu-scheduling", required_argument, NULL, OPT_CPU_SCHED},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-require-client-cert", no_argument, NULL, OPT_TLS_REQUIRE},
        {"metrics-url", required_argument, NULL, OPT_METRICS_URL},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct option options[sizeof common_options / sizeof common_options[0] + 1];
    char err[256];
    int64_t n;
    int opt;

    /* The common options, then the service's own (if any), then the end mark. */
    size_t n_common = sizeof common_options / sizeof common_options[0] - 1;
    memcpy(options, common_options, sizeof common_options);
    if (def->option_name != NULL) {
        options[n_common] = (struct option){def->option_name, required_argument, NULL, OPT_SERVICE};
        options[n_common + 1] = common_options[n_common];
    }
    *exit_now = 0;
    a->log_level = LOG_INFO;
    a->cpu_scheduling = CPU_SCHED_BATCH;
    opterr = 0; /* we print our own messages */
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case OPT_LISTEN:
            a->listen_url = optarg;
            break;
        case OPT_DB:
            a->db_path = optarg;
            break;
        case OPT_SEED:
            a->seed_path = optarg;
            break;
        case OPT_FAULTS:
            a->faults = optarg;
            break;
        case OPT_LEVEL:
            a->log_level = log_level_parse(optarg);
            if (a->log_level < 0) {
                fprintf(stderr, "%s: --log-level must be debug, info, warn or error, not '%s'\n",
                        program, optarg);
                goto usage_error;
            }
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "json") == 0) {
                a->log_json = 1;
            } else if (strcmp(optarg, "text") == 0) {
                a->log_json = 0;
            } else {
                fprintf(stderr, "%s: --log-format must be text or json, not '%s'\n", program,
                        optarg);
                goto usage_error;
            }
            break;
        case OPT_CONTEXTS:
            if (svc_parse_count(program, "--contexts", optarg, 1, 4096, &n) != 0)
                goto usage_error;
            a->contexts = (int)n;
            break;
        case OPT_RETENTION:
            if (svc_parse_count(program, "--retention-s", optarg, 1, INT64_MAX / 1000, &n) != 0)
                goto usage_error;
            a->retention_ms = n * 1000;
            break;
        case OPT_NOFSYNC:
            a->synchronous_off = 1;
            break;
        case OPT_CPU_SCHED:
            a->cpu_scheduling = cpu_scheduling_parse(optarg);
            if (a->cpu_scheduling < 0) {
                fprintf(stderr, "%s: --cpu-scheduling must be batch or normal, not '%s'\n", program,
                        optarg);
                goto usage_error;
            }
            break;
        case OPT_TLS_CERT:
            a->tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            a->tls_key = optarg;
            break;
        case OPT_TLS_CA:
            a->tls_ca = optarg;
            break;
        case OPT_TLS_REQUIRE:
            a->tls_require_client_cert = 1;
            break;
        case OPT_METRICS_URL:
            a->metrics_url = optarg;
            break;
        case OPT_SERVICE:
            if (def->option_set(optarg, err, sizeof err) != 0) {
                fprintf(stderr, "%s: --%s: %s\n", program, def->option_name, err);
                goto usage_error;
            }
            break;
        case OPT_HELP:
            svc_usage(def, program, stdout);
            *exit_now = 1;
            return 0;
        case OPT_VERSION:
            printf("%s %s\n", program, SAGA_VERSION);
            *exit_now = 1;
            return 0;
        default: /* '?': unknown option or missing argument */
            if (optopt >= OPT_LISTEN)
                fprintf(stderr, "%s: option '%s' needs a value\n", program, argv[optind - 1]);
            else
                fprintf(stderr, "%s: unknown option '%s'\n", program, argv[optind - 1]);
            goto usage_error;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", program, argv[optind]);
        goto usage_error;
    }
    if ((a->listen_url && a->listen_url[0] == '\0') || (a->db_path && a->db_path[0] == '\0')) {
        fprintf(stderr, "%s: --listen and --db must not be empty\n", program);
        goto usage_error;
    }
    if (a->seed_path && def->seed == NULL) {
        fprintf(stderr, "%s: this service has no seed data; drop --seed\n", program);
        goto usage_error;
    }
    /* The default address is in the per-user runtime directory, never in shared /tmp. */
    if (a->listen_url == NULL) {
        const char *dir = getenv("XDG_RUNTIME_DIR");
        if (dir == NULL || dir[0] != '/') {
            fprintf(stderr,
                    "%s: --listen is required when XDG_RUNTIME_DIR is not set to an absolute "
                    "path\n",
                    program);
            goto usage_error;
        }
        a->listen_url = a->owned_listen = util_asprintf("ipc://%s/saga-%s.ipc", dir, def->name);
    }
    if (a->db_path == NULL)
        a->db_path = a->owned_db = util_asprintf("%s.db", def->name);
    if (a->listen_url == NULL || a->db_path == NULL) {
        fprintf(stderr, "%s: out of memory\n", program);
        *exit_now = 1;
        return 1;
    }
    return 0;

usage_error:
    fprintf(stderr, "Try '%s --help'.\n", program);
    *exit_now = 1;
    return 2;
}

/* ---- Startup transaction: schema and seed ------------------------------ */

static const char svc_meta_sql[] = "CREATE TABLE IF NOT EXISTS meta (\n"
                                   "  key   TEXT PRIMARY KEY,\n"
                                   "  value INTEGER NOT NULL\n"
                                   ");\n";

static const char svc_meta_sql_pg[] = "CREATE TABLE IF NOT EXISTS meta (\n"
                                      "  key   TEXT PRIMARY KEY,\n"
                                      "  value BIGINT NOT NULL\n"
                                      ");\n";

/* Runs a single-integer query. Returns 0, or -1 with err set. */
static int svc_query_i64(pt_tx *tx, const char *sql, int64_t *out, char *err, size_t errlen)
{
    if (pt_query_int(tx, out, sql, "") == 1)
        return 0;
    snprintf(err, errlen, "query failed: %s", pt_tx_errmsg(tx));
    return -1;
}

/* svc_prepare_db's transaction (pt_run). */
typedef struct {
    const svc_def *def;
    const config_t *seed;
    const char *seed_path;
    int rc; /* SVC_SEED_* */
    char *err;
    size_t errlen;
} svc_setup;

static int svc_setup_run(pt_tx *tx, void *arg)
{
    svc_setup *c = arg;
    const svc_def *def = c->def;
    char *err = c->err;
    size_t errlen = c->errlen;
    int pg = pt_tx_backend(tx) == PT_BACKEND_POSTGRESQL;
    int64_t version = 0, rows = 0;
    c->rc = SVC_SEED_DB_ERROR;

    if (pt_exec_script(tx, pg ? svc_meta_sql_pg : svc_meta_sql) != PT_DB_OK ||
        pt_exec(tx,
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)"
                " ON CONFLICT (key) DO NOTHING",
                "i", (int64_t)SVC_SCHEMA_VERSION) != PT_DB_OK) {
        snprintf(err, errlen, "cannot create the meta table: %s", pt_tx_errmsg(tx));
        return -1;
    }
    if (svc_query_i64(tx, "SELECT value FROM meta WHERE key = 'schema_version'", &version, err,
                      errlen) != 0)
        return -1;
    if (version != SVC_SCHEMA_VERSION) {
        snprintf(err, errlen, "database schema version is %lld, this program uses %d",
                 (long long)version, SVC_SCHEMA_VERSION);
        return -1;
    }
    if (pt_exec_script(tx, pg ? def->schema_pg : def->schema_sql) != PT_DB_OK) {
        snprintf(err, errlen, "cannot create the %s schema: %s", def->name, pt_tx_errmsg(tx));
        return -1;
    }
    if (c->seed != NULL) {
        if (svc_query_i64(tx, def->count_sql, &rows, err, errlen) != 0)
            return -1;
        if (rows == 0) {
            int rc = def->seed(tx, c->seed, err, errlen);
            if (rc == SVC_SEED_OK)
                rc = svc_meta_set_tx(tx, "seeded_at_ms", util_wall_ms(), err, errlen);
            if (rc != SVC_SEED_OK) {
                c->rc = rc;
                return -1;
            }
            log_info("seeded the empty database from %s", c->seed_path);
        } else {
            log_info("database already holds %lld business rows: seed %s not loaded",
                     (long long)rows, c->seed_path);
        }
    }
    if (def->audit_sql) {
        int64_t violations = 0;
        if (svc_query_i64(tx, def->audit_sql, &violations, err, errlen) != 0)
            return -1;
        if (violations != 0) {
            snprintf(err, errlen,
                     "the %s books do not balance (%lld invariant violations; see the audit "
                     "view in docs/PARTICIPANTS.md): refusing to serve",
                     def->name, (long long)violations);
            return -1;
        }
    }
    c->rc = SVC_SEED_OK;
    return 0;
}

/*
 * Creates meta and the service schema, checks the schema version and, when
 * a seed is given and the database holds no business rows, loads it; then
 * checks the service's invariants. All in one transaction (pt_run: on
 * PostgreSQL under the setup lock, so replicas starting together seed
 * once). Returns SVC_SEED_OK, or SVC_SEED_INVALID (bad seed content) or
 * SVC_SEED_DB_ERROR with err set.
 */
static int svc_prepare_db(const svc_def *def, participant *p, const config_t *seed,
                          const char *seed_path, char *err, size_t errlen)
{
    char why[512];
    svc_setup c = {def, seed, seed_path, SVC_SEED_DB_ERROR, err, errlen};
    sqlite3 *db = pt_db(p);
    err[0] = '\0';
    /* The business schemas declare REFERENCES; have SQLite enforce them (per
     * connection, outside any transaction). PostgreSQL always does. */
    if (db != NULL && sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot enable foreign keys: %s", sqlite3_errmsg(db));
        return SVC_SEED_DB_ERROR;
    }
    if (pt_run(p, svc_setup_run, &c, why, sizeof why) != 0) {
        if (err[0] == '\0')
            snprintf(err, errlen, "%s", why);
        return c.rc == SVC_SEED_OK ? SVC_SEED_DB_ERROR : c.rc;
    }
    return SVC_SEED_OK;
}

/*
 * Reads and parses the seed file into cfg (which the caller destroys).
 * Returns 0, or -1 after printing "file:line: error".
 */
static int svc_read_seed(const char *program, const char *path, config_t *cfg)
{
    if (config_read_file(cfg, path) == CONFIG_TRUE)
        return 0;
    if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
        fprintf(stderr, "%s: cannot read seed file %s: %s\n", program, path,
                config_error_text(cfg));
    else
        fprintf(stderr, "%s: %s:%d: %s\n", program,
                config_error_file(cfg) ? config_error_file(cfg) : path, config_error_line(cfg),
                config_error_text(cfg));
    return -1;
}

/*
 * After pt_create failed: was it the --faults spec? The runtime parses the
 * spec inside pt_create, next to opening the database, and has no separate
 * check, so try the spec alone on a scratch database in a private temp dir
 * (never on the real --db, which must not be created by a failed start).
 * Returns 1 when the spec is what pt_create refused.
 */
static int svc_faults_rejected(const char *faults)
{
    char dir[] = "/tmp/saga-faults-check-XXXXXX", path[sizeof dir + 16], err[256];
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    participant *p;

    if (faults == NULL || mkdtemp(dir) == NULL)
        return 0;
    snprintf(path, sizeof path, "%s/check.db", dir);
    pt_options check = {.name = "faults-check", .db_path = path, .faults = faults};
    p = pt_create(&check, err, sizeof err);
    pt_destroy(p);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char file[sizeof path + 16];
        snprintf(file, sizeof file, "%s%s", path, suffixes[i]);
        unlink(file);
    }
    rmdir(dir);
    return p == NULL;
}

/* ---- Metrics (docs/OBSERVABILITY.md) ------------------------------------ */

typedef struct {
    participant *p;
    const char *service;
    const char *db_path; /* /healthz reads it */
} svc_metrics;

static void svc_metrics_get(void *arg, const char *path, const char *query, httpd_response *res)
{
    const svc_metrics *m = arg;
    pt_stats st;
    pt_get_stats(m->p, &st);
    static const struct {
        const char *name, *help;
        size_t offset;
    } counters[] = {
        {"saga_participant_effects_total", "Handler calls that committed an effect (OK).",
         offsetof(pt_stats, effects)},
        {"saga_participant_replays_total",
         "Replies served from a stored idempotency record (duplicates absorbed).",
         offsetof(pt_stats, replays)},
        {"saga_participant_conflicts_total", "Idempotency keys reused with other parameters.",
         offsetof(pt_stats, conflicts)},
        {"saga_participant_barrier_skips_total",
         "Null compensations and hanging actions stopped by the barrier (SKIPPED).",
         offsetof(pt_stats, skipped)},
        {"saga_participant_retries_total", "RETRY answers (database busy, handler, faults).",
         offsetof(pt_stats, retries)},
        {"saga_participant_malformed_total", "Messages that failed to decode or validate.",
         offsetof(pt_stats, malformed)},
        {"saga_participant_idempotency_records_purged_total",
         "Idempotency records deleted after their retention.", offsetof(pt_stats, purged)},
        {"saga_participant_frames_total",
         "Frames received: several step requests in one message, answered in one.",
         offsetof(pt_stats, frames)},
        {"saga_participant_outlived_retention_total",
         "Requests refused because their saga is older than the idempotency retention.",
         offsetof(pt_stats, outlived)},
        {"saga_participant_listener_restarts_total",
         "Times the ipc:// listener was found deaf (nng 1.5.2 defect) and restarted.",
         offsetof(pt_stats, listener_restarts)},
        {"saga_participant_syncs_total",
         "Batch commits that waited for an fdatasync of the WAL (0 under --unsafe-no-fsync; "
         "purges and checkpoints not counted).",
         offsetof(pt_stats, syncs)},
    };
    strbuf sb = STRBUF_INIT, labels = STRBUF_INIT;
    sb_puts(&labels, "service=\"");
    sb_label_value(&labels, m->service);
    sb_puts(&labels, "\"");
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        mt_header(&sb, counters[i].name, "counter", counters[i].help);
        mt_sample(&sb, counters[i].name, labels.data,
                  *(const uint64_t *)((const char *)&st + counters[i].offset));
    }
    sb_free(&labels);
    /* Requests by operation, phase and outcome, and their latency (the runtime's). */
    size_t n = 0;
    char *per_op = pt_metrics_text(m->p, m->service, &n);
    if (per_op != NULL)
        sb_append(&sb, per_op, n);
    free(per_op);
    res->content_type = MT_CONTENT_TYPE;
    res->body = per_op ? sb_take(&sb, &res->len) : NULL; /* NULL: 500, out of memory */
    if (per_op == NULL)
        sb_free(&sb);
}

/* /healthz's read on SQLite: "" or the reason in why. */
static void svc_healthz_sqlite(const char *path, char *why, size_t whylen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 1000) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &st,
                           NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        snprintf(why, whylen, "database %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* /healthz's read on PostgreSQL (a connection of its own, 2 s to connect). */
static void svc_healthz_pg(const char *url, char *why, size_t whylen)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {url, "2", NULL};
    char shown[512];
    PGconn *conn = PQconnectdbParams(keys, vals, 1); /* dbname is expanded as the URI */
    PGresult *res = NULL;
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK)
        res = PQexec(conn, "SELECT value FROM meta WHERE key = 'schema_version'");
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
        db_url_display(url, shown, sizeof shown);
        snprintf(why, whylen, "database %s: %.*s", shown, (int)strcspn(msg, "\n"), msg);
    }
    PQclear(res);
    PQfinish(conn);
}

/*
 * /healthz, for probes, without a token (like sagad's): 200 {"status":"ok"}
 * when the service is serving and its database answers a read on a
 * connection of its own, opened for each probe (read-only on SQLite, so a
 * file that was removed, replaced or damaged shows at once); 503
 * {"status":"unavailable","reason":...} otherwise. The answer names no
 * customer, amount, key or password; the reason is the database's error
 * text, as in the log.
 */
static void svc_healthz_get(void *arg, const char *path, const char *query, httpd_response *res)
{
    const svc_metrics *m = arg;
    char why[768] = "";
    if (svc_stop_requested)
        snprintf(why, sizeof why, "stopping");
    else if (pt_backend(m->p) == PT_BACKEND_POSTGRESQL)
        svc_healthz_pg(m->db_path, why, sizeof why);
    else
        svc_healthz_sqlite(m->db_path, why, sizeof why);
    json_t *doc = why[0] ? json_pack("{s:s, s:o}", "status", "unavailable", "reason", ju_str(why))
                         : json_pack("{s:s}", "status", "ok");
    res->status = why[0] ? 503 : 200;
    res->content_type = "application/json";
    res->body = ju_line(doc, &res->len); /* NULL: 500 */
}

/* Serves /metrics on url; NULL (reason logged) when it cannot. */
static httpd *svc_metrics_start(const char *program, const char *url, svc_metrics *m)
{
    char err[512];
    httpd_opts o = {.name = program, .url = url}; /* the connection limits' defaults */
    httpd *h = httpd_open(&o, err, sizeof err);
    if (h == NULL) {
        log_error("--metrics-url: %s", err);
        return NULL;
    }
    if (httpd_route(h, "/metrics", 0, 0, svc_metrics_get, m) != 0 ||
        httpd_route(h, "/healthz", 0, 0, svc_healthz_get, m) != 0 ||
        httpd_start(h, err, sizeof err) != 0) {
        log_error("--metrics-url: %s", err[0] ? err : "cannot register /metrics and /healthz");
        httpd_close(h);
        return NULL;
    }
    log_info("metrics on %s/metrics, health check on %s/healthz (port %d)", url, url,
             httpd_port(h));
    return h;
}

/* ---- The program ------------------------------------------------------- */

static int svc_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = svc_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return -1;
    sa.sa_handler = SIG_IGN; /* a peer closing a socket must not kill the service */
    return sigaction(SIGPIPE, &sa, NULL);
}

int svc_main(const svc_def *def, int argc, char **argv)
{
    static char program[64];
    svc_args args = {0};
    config_t seed;
    int have_seed = 0, exit_now = 0, status;
    participant *p = NULL;
    httpd *metrics = NULL;
    svc_metrics metrics_arg = {NULL, def->name, NULL};
    char err[512] = "", shown[512];

    /* Before anything is created: the database, its -wal and -shm, and the
     * socket file are this user's only (docs/SECURITY.md, "Private files"). */
    umask(077);
    snprintf(program, sizeof program, "%s-svc", def->name);
    status = svc_parse_args(def, program, argc, argv, &args, &exit_now);
    if (exit_now)
        goto out;

    db_url_display(args.db_path, shown, sizeof shown); /* no password in the log */
    log_init(program);
    log_set_level((enum log_level)args.log_level);
    log_set_json(args.log_json);
    crashpoint_init();
    fd_limit_raise(); /* before a flood of connections can meet the soft limit */
    /* First, before nng or SQLite start a thread: they inherit it. */
    if (cpu_scheduling_apply(args.cpu_scheduling, err, sizeof err) != 0) {
        log_error("%s", err);
        status = 1;
        goto out;
    }

    if (args.seed_path) {
        config_init(&seed);
        have_seed = 1;
        if (svc_read_seed(program, args.seed_path, &seed) != 0) {
            status = 2;
            goto out;
        }
    }

    pt_options opts = {
        .name = def->name,
        .listen_url = args.listen_url,
        .db_path = args.db_path,
        .contexts = args.contexts,
        .retention_ms = args.retention_ms,
        .synchronous_off = args.synchronous_off,
        .faults = args.faults,
        .tls_cert_file = args.tls_cert,
        .tls_key_file = args.tls_key,
        .tls_ca_file = args.tls_ca,
        .tls_require_client_cert = args.tls_require_client_cert,
    };
    if (pt_check_security(&opts, err, sizeof err) != 0) {
        log_error("%s", err);
        status = 2;
        goto out;
    }
    if (args.metrics_url != NULL &&
        httpd_check_url("--metrics-url", args.metrics_url, 0, 0, err, sizeof err) != 0) {
        log_error("%s", err);
        status = 2;
        goto out;
    }
    p = pt_create(&opts, err, sizeof err);
    if (p == NULL) {
        if (svc_faults_rejected(args.faults)) {
            fprintf(stderr, "%s: bad --faults '%s': %s\nTry '%s --help'.\n", program, args.faults,
                    err, program);
            status = 2;
        } else {
            log_error("cannot open %s: %s", shown, err);
            status = 1;
        }
        goto out;
    }
    switch (svc_prepare_db(def, p, have_seed ? &seed : NULL, args.seed_path, err, sizeof err)) {
    case SVC_SEED_OK:
        break;
    case SVC_SEED_INVALID:
        log_error("bad seed file: %s", err);
        status = 2;
        goto out;
    default:
        log_error("%s: %s", shown, err);
        status = 1;
        goto out;
    }
    if (def->register_ops(p) != 0) {
        log_error("cannot register the %s operations", def->name);
        status = 1;
        goto out;
    }
    if (svc_install_signals() != 0) {
        log_error("cannot install signal handlers: %s", strerror(errno));
        status = 1;
        goto out;
    }
    if (pt_start(p, err, sizeof err) != 0) {
        log_error("cannot serve on %s: %s", args.listen_url, err);
        status = 1;
        goto out;
    }
    log_info("serving %s on %s, database %s", def->name, args.listen_url, shown);
    metrics_arg.p = p;
    metrics_arg.db_path = args.db_path;
    if (args.metrics_url != NULL &&
        (metrics = svc_metrics_start(program, args.metrics_url, &metrics_arg)) == NULL) {
        status = 1;
        pt_stop(p);
        goto out;
    }
    daemon_notify_ready("serving"); /* the socket (and metrics) listen: Type=notify */

    while (!svc_stop_requested)
        util_sleep_ms(50);

    log_info("stopping on signal");
    daemon_notify_stopping();
    httpd_close(metrics);
    metrics = NULL;
    pt_stop(p);
    pt_stats st;
    pt_get_stats(p, &st);
    log_info("stopped: %llu requests, %llu effects, %llu replays, %llu conflicts, %llu skipped, "
             "%llu retries, %llu malformed",
             (unsigned long long)st.requests, (unsigned long long)st.effects,
             (unsigned long long)st.replays, (unsigned long long)st.conflicts,
             (unsigned long long)st.skipped, (unsigned long long)st.retries,
             (unsigned long long)st.malformed);
    status = 0;

out:
    httpd_close(metrics);
    pt_destroy(p);
    if (have_seed)
        config_destroy(&seed);
    svc_args_free(&args);
    return status;
}

/* ---- Helpers for handlers ---------------------------------------------- */

int svc_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SVC_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static int svc_check_name(pt_reply *reply, const char *name, const char *value)
{
    if (svc_name_ok(value))
        return 0;
    pt_reject(reply, "parameter '%s' must be 1 to %d bytes without control characters", name,
              SVC_MAX_NAME);
    return -1;
}

int svc_param_name(const pt_request *req, pt_reply *reply, const char *name, const char **out)
{
    if (pt_param_str(req, reply, name, out) != 0)
        return -1;
    return svc_check_name(reply, name, *out);
}

int svc_param_name_opt(const pt_request *req, pt_reply *reply, const char *name, const char **out)
{
    *out = pt_param(req, name);
    return *out == NULL ? 0 : svc_check_name(reply, name, *out);
}

int svc_action_id(const pt_request *req, pt_reply *reply, const char *name, const char **out)
{
    *out = pt_action_result(req, name);
    if (*out == NULL || !svc_name_ok(*out)) {
        pt_reject(reply, "action result has no valid '%s'", name);
        return -1;
    }
    return 0;
}

/* ---- Helpers for seed loaders ------------------------------------------ */

int svc_seed_error(char *err, size_t errlen, const config_setting_t *s, const char *fmt, ...)
{
    const char *file = s ? config_setting_source_file(s) : NULL;
    int line = s ? (int)config_setting_source_line(s) : 0;
    int n = snprintf(err, errlen, "%s:%d: ", file ? file : "seed", line);
    if (n >= 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return SVC_SEED_INVALID;
}

int svc_seed_only_keys(const config_t *cfg, const config_setting_t *s, const char *const *allowed,
                       char *err, size_t errlen)
{
    const config_setting_t *group = s ? s : config_root_setting(cfg);
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(m);
        int known = 0;
        for (size_t j = 0; name && allowed[j]; j++)
            known |= strcmp(name, allowed[j]) == 0;
        if (!known)
            return svc_seed_error(err, errlen, m, "unknown setting '%s'", name ? name : "?");
    }
    return SVC_SEED_OK;
}

int svc_meta_set_tx(pt_tx *tx, const char *key, int64_t value, char *err, size_t errlen)
{
    if (pt_exec(tx,
                "INSERT INTO meta (key, value) VALUES ($1, $2)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                "ti", key, value) == PT_DB_OK)
        return SVC_SEED_OK;
    snprintf(err, errlen, "cannot set meta '%s': %s", key, pt_tx_errmsg(tx));
    return SVC_SEED_DB_ERROR;
}
