/*
 * peers — saga-bench --peers: the engines users would pick instead of sagad,
 * run on this machine beside our durable cluster, so that the comparison is
 * measured here and not read from figures taken on other machines.
 *
 *   - Restate: restate-server (the binary npm's @restatedev/restate-server
 *     ships), its defaults but for the ports, and one Node service
 *     (bench/peers/restate_service.mjs, TypeScript SDK) registered with it;
 *   - DBOS Transact: a Node app (bench/peers/dbos_app.mjs) on a private
 *     PostgreSQL 15 cluster (initdb in a temp directory, Unix socket only,
 *     run as the postgres user when we are root), its defaults.
 *
 * The workload and the load generator are the .mjs files of bench/peers/; this file
 * installs what is missing, starts and stops the processes and measures
 * them as saga_bench.c measures ours: closed-loop throughput, latency of
 * the sagas finished in the measured window, CPU per saga of every process
 * of the peer (children included: PostgreSQL's backends), and syncs per
 * saga one at a time (strace -f -c, which counts what the processes really
 * call, their background threads included).
 *
 * Invariants: every process started here is tracked by saga-bench
 * (bench_track), so any exit of saga-bench kills it; peer_stop stops them
 * in order and forgets them. Ports are picked free on 127.0.0.1 just before
 * use; nothing listens beyond loopback.
 */
#include "peers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

#define PG_BIN "/usr/lib/postgresql/15/bin"

struct peer {
    int paused; /* its processes are stopped (peer_pause) */
    enum peer_kind kind;
    char label[160];
    char dir[600];
    pid_t server; /* restate-server, or the postmaster */
    pid_t app;    /* the Node service (Restate) or app (DBOS) */
    pid_t driver;
    FILE *to_driver, *from_driver;
};

/* The peers started and not yet stopped: peers_resume_all's list. */
static peer *g_started[4];

/* ---- Processes ------------------------------------------------------------ */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Starts argv with the given descriptors (-1: /dev/null), tracked. */
static pid_t start(char *const argv[], int in_fd, int out_fd, int err_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    posix_spawn_file_actions_adddup2(&fa, in_fd >= 0 ? in_fd : null_fd, STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out_fd >= 0 ? out_fd : null_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err_fd >= 0 ? err_fd : null_fd, STDERR_FILENO);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(null_fd);
    if (rc != 0)
        return -1;
    bench_track(pid);
    return pid;
}

static int open_log(const char *dir, const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* Runs argv to its end, output appended to dir/log; its exit status or -1. */
static int run_to_end(char *const argv[], const char *dir, const char *log)
{
    int fd = log ? open_log(dir, log) : -1;
    pid_t pid = start(argv, -1, fd, fd);
    if (fd >= 0)
        close(fd);
    if (pid < 0)
        return -1;
    int st = 0;
    waitpid(pid, &st, 0);
    bench_untrack(pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void stop_pid(pid_t *pid, int sig)
{
    if (*pid <= 0)
        return;
    kill(*pid, sig);
    /* A clean stop gets 20 s, then it is killed. */
    for (int i = 0; i < 2000; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid)
            goto gone;
        sleep_ms(10);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
gone:
    bench_untrack(*pid);
    *pid = 0;
}

/* Waits until 127.0.0.1:port accepts, while pid lives; 0 or -1. */
static int wait_port(int port, pid_t pid, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
        if (s >= 0)
            close(s);
        if (ok)
            return 0;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            bench_untrack(pid);
            return -1;
        }
        sleep_ms(50);
    }
    return -1;
}

/* The "version" of node_modules/<pkg>/package.json, or "?". */
static const char *npm_version(const char *peers_dir, const char *pkg, char *buf, size_t len)
{
    char path[800], text[4096];
    snprintf(path, sizeof path, "%s/node_modules/%s/package.json", peers_dir, pkg);
    snprintf(buf, len, "?");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return buf;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *v = strstr(text, "\"version\"");
    if (v != NULL && (v = strchr(v + 9, '"')) != NULL)
        sscanf(v + 1, "%63[^\"]", buf);
    return buf;
}

/* ---- Installation ------------------------------------------------------------ */

static int exists(const char *dir, const char *rel)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return access(path, F_OK) == 0;
}

int peers_install(const char *peers_dir, char *err, size_t errlen)
{
    if (access("/usr/bin/node", X_OK) != 0 && access("/usr/local/bin/node", X_OK) != 0) {
        snprintf(err, errlen, "node is not installed (Node.js >= 20 is needed: DBOS requires it)");
        return -1;
    }
    static const char *const needed[] = {
        "node_modules/@restatedev/restate-server-linux-x64/bin/restate-server",
        "node_modules/@restatedev/restate-sdk/package.json",
        "node_modules/@dbos-inc/dbos-sdk/package.json",
        "node_modules/@dbos-inc/postgres-datasource/package.json",
        "node_modules/better-sqlite3/build/Release/better_sqlite3.node",
        "node_modules/postgres/package.json",
    };
    int missing = 0;
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
        missing |= !exists(peers_dir, needed[i]);
    if (missing) {
        bench_note("peers: installing the npm packages of %s/package.json (npm ci)", peers_dir);
        char prefix[700];
        snprintf(prefix, sizeof prefix, "%s", peers_dir);
        char *argv[] = {"npm",      "ci",   "--no-audit", "--no-fund", "--loglevel=error",
                        "--prefix", prefix, NULL};
        if (run_to_end(argv, peers_dir, "npm-install.log") != 0) {
            snprintf(err, errlen, "npm ci in %s failed (see %s/npm-install.log)", peers_dir,
                     peers_dir);
            return -1;
        }
    }
    if (access(PG_BIN "/initdb", X_OK) != 0) {
        if (geteuid() != 0) {
            snprintf(err, errlen,
                     "%s/initdb is missing: install postgresql-15 (as root: "
                     "apt-get install postgresql-15)",
                     PG_BIN);
            return -1;
        }
        bench_note("peers: installing postgresql-15 (apt-get)");
        char *argv[] = {"apt-get", "install", "-y", "-q", "postgresql-15", NULL};
        if (run_to_end(argv, peers_dir, "apt-get.log") != 0 || access(PG_BIN "/initdb", X_OK)) {
            snprintf(err, errlen, "apt-get install postgresql-15 failed (see %s/apt-get.log)",
                     peers_dir);
            return -1;
        }
    }
    return 0;
}

/* ---- The driver (bench/peers/driver.mjs) -------------------------------------- */

static int start_driver(peer *p, const char *peers_dir, const char *url)
{
    char script[700];
    snprintf(script, sizeof script, "%s/driver.mjs", peers_dir);
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    for (int i = 0; i < 2; i++)
        if (fcntl(in[i], F_SETFD, FD_CLOEXEC) != 0 || fcntl(out[i], F_SETFD, FD_CLOEXEC) != 0)
            return -1;
    int logfd = open_log(p->dir, "driver.log");
    char *argv[] = {"node", script, (char *)url, NULL};
    p->driver = start(argv, in[0], out[1], logfd);
    close(in[0]);
    close(out[1]);
    if (logfd >= 0)
        close(logfd);
    p->to_driver = fdopen(in[1], "w");
    p->from_driver = fdopen(out[0], "r");
    return p->driver > 0 && p->to_driver && p->from_driver ? 0 : -1;
}

/* The driver's next line; 0, or -1 when it ended. */
static int driver_line(peer *p, char *line, size_t len)
{
    if (fgets(line, (int)len, p->from_driver) == NULL)
        return -1;
    line[strcspn(line, "\n")] = 0;
    return 0;
}

/* ---- Every process of the peer -------------------------------------------------- */

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    int ppid = 0;
    if (close_paren == NULL || sscanf(close_paren + 2, "%*c %d", &ppid) != 1)
        return 0;
    return (pid_t)ppid;
}

size_t peer_pids(const peer *p, pid_t *pids, size_t max)
{
    size_t n = 0;
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < max) {
        pid_t pid = (pid_t)atoi(de->d_name);
        if (pid <= 0)
            continue;
        /* Descendants of the server or of the app (PostgreSQL's backends). */
        for (pid_t a = pid, depth = 0; a > 1 && depth < 16; a = parent_of(a), depth++)
            if (a == p->server || a == p->app) {
                pids[n++] = pid;
                break;
            }
    }
    closedir(d);
    return n;
}

static double peer_cpu(const peer *p)
{
    pid_t pids[512];
    size_t n = peer_pids(p, pids, 512);
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += bench_proc_cpu(pids[i]);
    return s;
}

/* ---- Restate ------------------------------------------------------------------ */

static int start_restate(peer *p, const char *peers_dir, char *err, size_t errlen)
{
    char v_server[64], v_sdk[64];
    snprintf(p->label, sizeof p->label, "Restate %s, TypeScript SDK %s",
             npm_version(peers_dir, "@restatedev/restate-server", v_server, sizeof v_server),
             npm_version(peers_dir, "@restatedev/restate-sdk", v_sdk, sizeof v_sdk));
    int ingress = bench_free_port(), admin = bench_free_port(), fabric = bench_free_port(),
        svc = bench_free_port();
    char base[700], dbdir[700], env[4][64];
    snprintf(base, sizeof base, "%s/data", p->dir);
    snprintf(dbdir, sizeof dbdir, "%s/db", p->dir);
    mkdir(dbdir, 0700);
    snprintf(env[0], sizeof env[0], "%d", ingress);
    snprintf(env[1], sizeof env[1], "%d", admin);
    snprintf(env[2], sizeof env[2], "%d", fabric);
    snprintf(env[3], sizeof env[3], "%d", svc);
    /* Only the ports and where its data goes differ from its defaults. */
    setenv("RESTATE_BASE_DIR", base, 1);
    setenv("RESTATE_INGRESS__BIND_PORT", env[0], 1);
    setenv("RESTATE_ADMIN__BIND_PORT", env[1], 1);
    setenv("RESTATE_BIND_PORT", env[2], 1);
    setenv("RESTATE_LOG_DISABLE_ANSI_CODES", "true", 1);
    char server[700];
    snprintf(server, sizeof server,
             "%s/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server", peers_dir);
    char *sargv[] = {server,      "--no-logo",     "--node-name", "bench", "--bind-ip",
                     "127.0.0.1", "--listen-mode", "tcp",         NULL};
    int fd = open_log(p->dir, "restate-server.log");
    p->server = start(sargv, -1, fd, fd);
    close(fd);
    unsetenv("RESTATE_BASE_DIR");
    unsetenv("RESTATE_INGRESS__BIND_PORT");
    unsetenv("RESTATE_ADMIN__BIND_PORT");
    unsetenv("RESTATE_BIND_PORT");
    unsetenv("RESTATE_LOG_DISABLE_ANSI_CODES");
    /* The SDK logs every invocation at INFO by default: that is not the engine's cost. */
    setenv("RESTATE_LOGGING", "WARN", 1);
    char script[700];
    snprintf(script, sizeof script, "%s/restate_service.mjs", peers_dir);
    char *aargv[] = {"node", script, env[3], dbdir, NULL};
    fd = open_log(p->dir, "service.log");
    p->app = start(aargv, -1, fd, fd);
    close(fd);
    unsetenv("RESTATE_LOGGING");
    if (p->server <= 0 || wait_port(admin, p->server, 60000) != 0 ||
        wait_port(ingress, p->server, 60000) != 0) {
        snprintf(err, errlen, "restate-server did not start (see %s/restate-server.log)", p->dir);
        return -1;
    }
    if (p->app <= 0 || wait_port(svc, p->app, 30000) != 0) {
        snprintf(err, errlen, "the Restate service did not start (see %s/service.log)", p->dir);
        return -1;
    }
    char reg[700], admin_url[64], svc_url[64];
    snprintf(reg, sizeof reg, "%s/restate_register.mjs", peers_dir);
    snprintf(admin_url, sizeof admin_url, "http://127.0.0.1:%d", admin);
    snprintf(svc_url, sizeof svc_url, "http://127.0.0.1:%d", svc);
    char *rargv[] = {"node", reg, admin_url, svc_url, NULL};
    if (run_to_end(rargv, p->dir, "register.log") != 0) {
        snprintf(err, errlen, "cannot register the service with Restate (see %s/register.log)",
                 p->dir);
        return -1;
    }
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/OrderFulfillment/run", ingress);
    return start_driver(p, peers_dir, url);
}

/* ---- DBOS on PostgreSQL -------------------------------------------------------- */

/* argv run as the postgres user when we are root (PostgreSQL refuses root). */
static pid_t start_as_postgres(char **argv, int out_fd)
{
    if (geteuid() != 0)
        return start(argv, -1, out_fd, out_fd);
    char *full[16] = {"setpriv",  "--reuid",       "postgres", "--regid",
                      "postgres", "--init-groups", "--"};
    size_t n = 7;
    for (size_t i = 0; argv[i] != NULL && n < 15; i++)
        full[n++] = argv[i];
    full[n] = NULL;
    return start(full, -1, out_fd, out_fd);
}

static int start_dbos(peer *p, const char *peers_dir, const char *tmp, char *err, size_t errlen)
{
    char v_dbos[64], v_pg[64] = "15";
    snprintf(p->label, sizeof p->label, "DBOS Transact %s on PostgreSQL %s",
             npm_version(peers_dir, "@dbos-inc/dbos-sdk", v_dbos, sizeof v_dbos), v_pg);
    if (geteuid() == 0) {
        /* PostgreSQL runs as postgres: its directory is theirs, and saga-bench's
         * private directory must let them through (not list it). */
        struct passwd *pw = getpwnam("postgres");
        if (pw == NULL || chown(p->dir, pw->pw_uid, pw->pw_gid) != 0 || chmod(tmp, 0711) != 0) {
            snprintf(err, errlen, "cannot give %s to the postgres user", p->dir);
            return -1;
        }
    }
    char data[700];
    snprintf(data, sizeof data, "%s/data", p->dir);
    int fd = open_log(p->dir, "postgres.log");
    /* --no-sync concerns initdb's own files only; the server runs with its defaults
     * (fsync on, synchronous_commit on, wal_sync_method fdatasync). */
    char *iargv[] = {PG_BIN "/initdb", "-D", data,   "-U",        "postgres",
                     "--auth=trust",   "-E", "UTF8", "--no-sync", NULL};
    pid_t ipid = start_as_postgres(iargv, fd);
    int st = 0;
    if (ipid > 0) {
        waitpid(ipid, &st, 0);
        bench_untrack(ipid);
    }
    if (ipid <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        close(fd);
        snprintf(err, errlen, "initdb failed (see %s/postgres.log)", p->dir);
        return -1;
    }
    char *pargv[] = {PG_BIN "/postgres", "-D", data, "-k", p->dir, "-c", "listen_addresses=", NULL};
    p->server = start_as_postgres(pargv, fd);
    close(fd);
    int created = 0;
    for (int i = 0; i < 300 && !created && p->server > 0; i++) {
        char *cargv[] = {PG_BIN "/createdb", "-h", p->dir, "-U", "postgres", "app", NULL};
        created = run_to_end(cargv, p->dir, "createdb.log") == 0;
        if (!created)
            sleep_ms(100);
    }
    char *c2argv[] = {PG_BIN "/createdb", "-h", p->dir, "-U", "postgres", "dbos_sys", NULL};
    if (!created || run_to_end(c2argv, p->dir, "createdb.log") != 0) {
        snprintf(err, errlen, "PostgreSQL did not start (see %s/postgres.log)", p->dir);
        return -1;
    }
    int port = bench_free_port();
    char script[700], port_s[16];
    snprintf(script, sizeof script, "%s/dbos_app.mjs", peers_dir);
    snprintf(port_s, sizeof port_s, "%d", port);
    char *aargv[] = {"node", script, port_s, p->dir, NULL};
    fd = open_log(p->dir, "app.log");
    p->app = start(aargv, -1, fd, fd);
    close(fd);
    if (p->app <= 0 || wait_port(port, p->app, 60000) != 0) {
        snprintf(err, errlen, "the DBOS app did not start (see %s/app.log)", p->dir);
        return -1;
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    return start_driver(p, peers_dir, url);
}

/* ---- The interface ------------------------------------------------------------- */

peer *peer_start(enum peer_kind kind, const char *peers_dir, const char *tmp, char *err,
                 size_t errlen)
{
    peer *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->kind = kind;
    snprintf(p->dir, sizeof p->dir, "%s/%s", tmp, kind == PEER_RESTATE ? "restate" : "dbos");
    if (mkdir(p->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %s: %s", p->dir, strerror(errno));
        free(p);
        return NULL;
    }
    int rc = kind == PEER_RESTATE ? start_restate(p, peers_dir, err, errlen)
                                  : start_dbos(p, peers_dir, tmp, err, errlen);
    if (rc != 0) {
        peer_stop(p);
        return NULL;
    }
    for (size_t i = 0; i < sizeof g_started / sizeof *g_started; i++)
        if (g_started[i] == NULL) {
            g_started[i] = p;
            break;
        }
    return p;
}

const char *peer_label(const peer *p)
{
    return p->label;
}

const char *peer_durability(const peer *p)
{
    if (p->kind == PEER_RESTATE)
        return "each ctx.run result appended to Restate's log (RocksDB WAL, fsync on: "
               "rocksdb-disable-wal-fsync = false by default) before the handler goes on; the "
               "step's SQLite commit in the service (WAL, synchronous=FULL: one fdatasync)";
    return "each step one PostgreSQL transaction (business rows, the key and DBOS's record "
           "of the step's output), committed with synchronous_commit = on (WAL fdatasync, "
           "shared by concurrent commits); the workflow's status row written at start and end";
}

int peer_run(peer *p, int conc, double warm, double secs, peer_result *r)
{
    char line[256];
    memset(r, 0, sizeof *r);
    fprintf(p->to_driver, "run %d %.3f %.3f\n", conc, warm, secs);
    fflush(p->to_driver);
    double cpu0 = 0, cpu1 = 0;
    unsigned long long done = 0, bad = 0;
    for (;;) {
        if (driver_line(p, line, sizeof line) != 0)
            return -1;
        if (strcmp(line, "measuring") == 0) {
            cpu0 = peer_cpu(p);
        } else if (sscanf(line, "stop %llu %llu %lf", &done, &bad, &r->secs) == 3) {
            cpu1 = peer_cpu(p);
        } else if (sscanf(line, "result %lf %lf %lf", &r->p50, &r->p99, &r->max) == 3) {
            break;
        } else {
            bench_note("peers: %s driver: %s", p->label, line);
            return -1;
        }
    }
    r->completed = done;
    r->bad = bad;
    r->rate = r->secs > 0 ? (double)done / r->secs : 0;
    r->cpu_ms = done ? (cpu1 - cpu0) * 1000.0 / (double)done : 0;
    return 0;
}

static void signal_all(const peer *p, int sig)
{
    pid_t pids[512];
    size_t n = peer_pids(p, pids, 512);
    for (size_t i = 0; i < n; i++)
        kill(pids[i], sig);
}

void peer_pause(peer *p, int paused)
{
    if (p == NULL || p->paused == paused)
        return;
    signal_all(p, paused ? SIGSTOP : SIGCONT);
    p->paused = paused;
}

void peers_resume_all(void)
{
    for (size_t i = 0; i < sizeof g_started / sizeof *g_started; i++)
        peer_pause(g_started[i], 0);
}

int peer_run_sequential(peer *p, int n)
{
    char line[256];
    unsigned long long got = 0, bad = 0;
    fprintf(p->to_driver, "count %d\n", n);
    fflush(p->to_driver);
    if (driver_line(p, line, sizeof line) != 0 ||
        sscanf(line, "counted %llu %llu", &got, &bad) != 2 || bad != 0)
        return -1;
    return 0;
}

void peer_stop(peer *p)
{
    if (p == NULL)
        return;
    peer_pause(p, 0);
    for (size_t i = 0; i < sizeof g_started / sizeof *g_started; i++)
        if (g_started[i] == p)
            g_started[i] = NULL;
    if (p->to_driver)
        fclose(p->to_driver); /* the driver exits when its input ends */
    if (p->driver > 0) {
        waitpid(p->driver, NULL, 0);
        bench_untrack(p->driver);
    }
    if (p->from_driver)
        fclose(p->from_driver);
    stop_pid(&p->app, SIGTERM);
    /* PostgreSQL: SIGINT is its fast shutdown. */
    stop_pid(&p->server, p->kind == PEER_DBOS ? SIGINT : SIGTERM);
    free(p);
}

/* ---- Syncs, counted with strace ------------------------------------------------- */

long count_syncs(const pid_t *pids, size_t n, void (*run)(void *), void *arg, const char *log_dir)
{
    if (access("/usr/bin/strace", X_OK) != 0 || n == 0 || n > 200)
        return -1;
    char out[700];
    snprintf(out, sizeof out, "%s/strace-syncs.txt", log_dir);
    unlink(out);
    char *argv[16 + 2 * 200];
    char pid_s[200][16];
    size_t a = 0;
    argv[a++] = "strace";
    argv[a++] = "-f";
    argv[a++] = "-qq";
    argv[a++] = "-c";
    argv[a++] = "-e";
    argv[a++] = "trace=fsync,fdatasync,sync_file_range,syncfs";
    argv[a++] = "-o";
    argv[a++] = out;
    for (size_t i = 0; i < n; i++) {
        snprintf(pid_s[i], sizeof pid_s[i], "%d", (int)pids[i]);
        argv[a++] = "-p";
        argv[a++] = pid_s[i];
    }
    argv[a] = NULL;
    int fd = open_log(log_dir, "strace.log");
    pid_t sp = start(argv, -1, fd, fd);
    if (fd >= 0)
        close(fd);
    if (sp <= 0)
        return -1;
    sleep_ms(1000); /* attaching to every thread */
    run(arg);
    kill(sp, SIGINT);
    waitpid(sp, NULL, 0);
    bench_untrack(sp);
    FILE *f = fopen(out, "r");
    if (f == NULL)
        return -1;
    /* "100.00    0.001234          12       100         total": calls is the 4th field. */
    char line[256];
    long total = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, " total") != NULL) {
            double pct, secs;
            long usecs, calls;
            if (sscanf(line, "%lf %lf %ld %ld", &pct, &secs, &usecs, &calls) == 4)
                total = calls;
        }
    fclose(f);
    return total;
}
