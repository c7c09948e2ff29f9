/*
 * sagad — the saga orchestrator daemon.
 *
 * Loads the configuration (any error stops start-up with file:line), opens
 * the store, recovers every unfinished saga, then serves the admin API until
 * SIGINT or SIGTERM. The signal handler only sets a flag; the main thread
 * notices it and shuts down in order: admin API first (no new commands),
 * then the engine (the round in progress commits and sends), then storage.
 * SIGHUP likewise only sets a flag, on which the main thread asks the engine
 * to read the saga files again (engine_reload, the same as `sagactl
 * reload`): async-signal-safe, and the reload runs on the engine thread.
 * Under a Type=notify unit it tells systemd READY=1 once recovery is done
 * and the admin API listens, and STOPPING=1 when it starts shutting down.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db_url.h"
#include "admin.h"
#include "config.h"
#include "cpu_sched.h"
#include "crashpoint.h"
#include "daemon_notify.h"
#include "engine.h"
#include "fd_limit.h"
#include "log.h"
#include "store.h"
#include "obs_http.h"
#include "util.h"

static volatile sig_atomic_t stop_requested, reload_requested;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        reload_requested = 1;
    else
        stop_requested = 1;
}

/* The engine logs the outcome of a reload (its file:line when refused). */
static void on_reload_done(void *arg, int status, const char *error, const char *saga_id,
                           int existing)
{
    (void)arg;
    (void)status;
    (void)error;
    (void)saga_id;
    (void)existing;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: sagad --config FILE [--check] [--log-level LEVEL] [--log-format FORMAT]\n"
                 "\n"
                 "Runs sagas defined in libconfig files against participant services.\n"
                 "\n"
                 "  --config FILE        orchestrator configuration (see docs/CONFIG.md)\n"
                 "  --check              validate the configuration and saga files, then exit\n"
                 "  --log-level LEVEL    debug, info (default), warn or error\n"
                 "  --log-format FORMAT  text (default) or json, one object per line\n"
                 "  --version            print sagad's version\n"
                 "  --help               this text\n"
                 "\n"
                 "Environment: SAGA_CRASH_POINT=NAME[:N] kills the process at a named point\n"
                 "(tests only; see orchestrator/engine.h).\n"
                 "Signals: SIGINT, SIGTERM stop; SIGHUP reloads the saga files (as\n"
                 "`sagactl reload`; a broken file is refused, the definitions in force stay).\n"
                 "Exit status: 0 after a clean stop, 1 on a start-up error, 2 on bad usage.\n");
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int check_only = 0;
    /* Before anything is created: the database, its -wal and -shm, and the
     * socket file are this user's only (docs/SECURITY.md, "Private files"). */
    umask(077);
    log_init("sagad");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("sagad %s\n", SAGA_VERSION);
            return 0;
        } else if (strcmp(a, "--check") == 0) {
            check_only = 1;
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(a, "--log-level") == 0 && i + 1 < argc) {
            int level = log_level_parse(argv[++i]);
            if (level < 0) {
                fprintf(stderr, "sagad: unknown log level '%s'\n", argv[i]);
                return 2;
            }
            log_set_level((enum log_level)level);
        } else if (strcmp(a, "--log-format") == 0 && i + 1 < argc) {
            const char *f = argv[++i];
            if (strcmp(f, "json") != 0 && strcmp(f, "text") != 0) {
                fprintf(stderr, "sagad: unknown log format '%s' (text or json)\n", f);
                return 2;
            }
            log_set_json(strcmp(f, "json") == 0);
        } else {
            fprintf(stderr, "sagad: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL) {
        fprintf(stderr, "sagad: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    crashpoint_init();

    char err[1024];
    orch_config cfg;
    if (config_load(config_path, &cfg, err, sizeof err) != 0) {
        log_error("%s", err);
        return 1;
    }
    /* First, before nng or the engine start a thread: they inherit it. */
    if (!check_only && cpu_scheduling_apply(cfg.cpu_scheduling, err, sizeof err) != 0) {
        log_error("%s", err);
        config_free(&cfg);
        return 1;
    }
    if (check_only) {
        printf("%s: ok (%zu saga types, %zu participants)\n", config_path, cfg.n_sagas,
               cfg.n_participants);
        config_free(&cfg);
        return 0;
    }
    fd_limit_raise(); /* before a flood of connections can meet the soft limit */

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    store_set_interrupt(&stop_requested); /* a database that never answers: SIGTERM still stops */

    int status = 1;
    admin_server *admin = NULL;
    obs_http *web = NULL; /* http_url: metrics, JSON API, dashboard (docs/OBSERVABILITY.md) */
    engine *eng = engine_create(&cfg, err, sizeof err);
    if (eng == NULL) {
        log_error("%s", err);
        goto out;
    }
    if (engine_run_start(eng, err, sizeof err) != 0) {
        log_error("%s", err);
        goto out;
    }
    admin = admin_start(&cfg, eng, err, sizeof err);
    if (admin == NULL) {
        log_error("%s", err);
        goto out;
    }
    if (cfg.http_url != NULL && (web = obs_http_start(&cfg, eng, err, sizeof err)) == NULL) {
        log_error("%s", err);
        goto out;
    }
    char shown[512];
    db_url_display(cfg.database, shown, sizeof shown);
    log_info("serving %zu saga types on %s (database %s%s%s, durability %s, cpu scheduling %s)",
             cfg.n_sagas, cfg.admin_url, shown, db_url_is_postgresql(cfg.database) ? ", node " : "",
             db_url_is_postgresql(cfg.database) ? cfg.node_name : "",
             cfg.durability_full ? "full" : "off", cpu_scheduling_name(cfg.cpu_scheduling));
    /* Recovery ran in engine_create and every socket listens: a unit
     * ordered after sagad.service can use it now. */
    daemon_notify_ready("serving");
    while (!stop_requested) {
        if (reload_requested) {
            reload_requested = 0;
            log_info("SIGHUP: reloading the saga files");
            engine_reload(eng, on_reload_done, NULL);
        }
        util_sleep_ms(50);
    }
    log_info("stopping");
    daemon_notify_stopping();
    status = 0;
out:
    obs_http_stop(web);
    admin_stop(admin);
    engine_destroy(eng);
    config_free(&cfg);
    return status;
}
