/* pg_cluster — see pg_cluster.h. A private PostgreSQL server per test, and its clean-up. */
#define _GNU_SOURCE /* pipe2 */
#include "pg_cluster.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "util.h"

/* The socket is .s.PGSQL.5432 in the cluster's private dir: no other server uses that dir. */
#define PGC_PORT 5432
/* Bounds for slow, loaded machines: initdb / cp / fsync, and a server starting or stopping. */
#define PGC_TOOL_TIMEOUT_MS  180000
#define PGC_READY_TIMEOUT_MS 60000
#define PGC_STOP_TIMEOUT_MS  60000
#define PGC_LOG_TAIL         1500

struct pg_cluster {
    char *dir;    /* /tmp/saga-pg-XXXXXX */
    char *data;   /* dir/data */
    char *log;    /* dir/server.log */
    char *bindir; /* holds initdb and postgres */
    char *user;   /* the superuser, also the OS user the server runs as */
    int as_root;  /* run initdb / postgres as user through setpriv */
    int durable;
    int detached; /* pgc_start_detached: no guard, not in the live list */
    pid_t server; /* 0 while stopped */
    pid_t guard;  /* 0 when detached */
    int guard_fd; /* write end of the guard's stdin pipe; -1 when detached */
};

/* ---- Clusters still alive, destroyed at exit ---------------------------- */

#define PGC_LIVE_MAX 64
static pg_cluster *pgc_live[PGC_LIVE_MAX];
static pthread_mutex_t pgc_live_mu = PTHREAD_MUTEX_INITIALIZER;

static void pgc_destroy_all_at_exit(void)
{
    for (;;) {
        pg_cluster *c = NULL;
        pthread_mutex_lock(&pgc_live_mu);
        for (size_t i = 0; i < PGC_LIVE_MAX && c == NULL; i++)
            c = pgc_live[i];
        pthread_mutex_unlock(&pgc_live_mu);
        if (c == NULL)
            return;
        fprintf(stderr, "pg_cluster: cluster %s was still running at exit: destroyed\n", c->dir);
        pgc_destroy(c);
    }
}

/* Registered after the cluster's first th_spawn, so that (atexit handlers
 * run last-registered first) the servers are shut down properly before the
 * harness SIGKILLs whatever children remain. */
static int pgc_live_add(pg_cluster *c)
{
    static int registered;
    int rc = -1;
    pthread_mutex_lock(&pgc_live_mu);
    if (!registered && atexit(pgc_destroy_all_at_exit) == 0)
        registered = 1;
    for (size_t i = 0; i < PGC_LIVE_MAX && registered; i++)
        if (pgc_live[i] == NULL) {
            pgc_live[i] = c;
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&pgc_live_mu);
    return rc;
}

static void pgc_live_remove(pg_cluster *c)
{
    pthread_mutex_lock(&pgc_live_mu);
    for (size_t i = 0; i < PGC_LIVE_MAX; i++)
        if (pgc_live[i] == c)
            pgc_live[i] = NULL;
    pthread_mutex_unlock(&pgc_live_mu);
}

/* ---- Helpers ------------------------------------------------------------ */

/* The last PGC_LOG_TAIL bytes of path from a line start, malloc'd ("" when unreadable). */
static char *pgc_log_tail(const char *path)
{
    char *text = path ? th_read_file(path) : NULL;
    if (text == NULL)
        return util_strdup("(no log)");
    size_t len = strlen(text);
    const char *from = text;
    if (len > PGC_LOG_TAIL) {
        from = text + len - PGC_LOG_TAIL;
        const char *nl = strchr(from, '\n');
        if (nl && nl[1])
            from = nl + 1;
    }
    char *tail = util_strdup(from);
    free(text);
    return tail;
}

/* "/usr/lib/postgresql/15/bin" -> 15.0 (9.6 -> 9.6), for picking the newest. */
static double pgc_bindir_version(const char *bindir)
{
    const char *v = bindir + strlen("/usr/lib/postgresql/");
    return strtod(v, NULL);
}

static int pgc_has_server(const char *bindir)
{
    char *initdb = util_asprintf("%s/initdb", bindir),
         *postgres = util_asprintf("%s/postgres", bindir);
    int ok = initdb && postgres && access(initdb, X_OK) == 0 && access(postgres, X_OK) == 0;
    free(initdb);
    free(postgres);
    return ok;
}

/* $SAGA_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin with a server; malloc'd or NULL. */
static char *pgc_find_bindir(char *err, size_t errlen)
{
    const char *env = getenv("SAGA_PG_BINDIR");
    if (env != NULL && env[0] != '\0') {
        if (env[0] != '/' || !pgc_has_server(env)) {
            snprintf(err, errlen,
                     "SAGA_PG_BINDIR=%s is not an absolute path holding executable initdb and "
                     "postgres",
                     env);
            return NULL;
        }
        return util_strdup(env);
    }
    glob_t g;
    char *best = NULL;
    double best_version = -1;
    if (glob("/usr/lib/postgresql/*/bin", GLOB_ONLYDIR, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            double v = pgc_bindir_version(g.gl_pathv[i]);
            if (v > best_version && pgc_has_server(g.gl_pathv[i])) {
                best_version = v;
                free(best);
                best = util_strdup(g.gl_pathv[i]);
            }
        }
        globfree(&g);
    }
    if (best == NULL)
        snprintf(err, errlen,
                 "no PostgreSQL server in /usr/lib/postgresql/*/bin (install the postgresql "
                 "package, or set SAGA_PG_BINDIR to the dir holding initdb and postgres)");
    return best;
}

/* Starts bindir/tool args as the cluster's user (through setpriv when root,
 * which execs: *pid is the tool's), in the cluster's dir, output appended to log. */
static int pgc_spawn_tool(const pg_cluster *c, const char *tool, const char *const *args,
                          const char *log, int detach, pid_t *pid)
{
    const char *argv[32];
    size_t n = 0;
    char *path = util_asprintf("%s/%s", c->bindir, tool);
    char *reuid = util_asprintf("--reuid=%s", c->user),
         *regid = util_asprintf("--regid=%s", c->user);
    int rc = -1;
    if (path == NULL || reuid == NULL || regid == NULL)
        goto out;
    if (c->as_root) {
        argv[n++] = reuid;
        argv[n++] = regid;
        argv[n++] = "--init-groups";
        argv[n++] = "--";
        argv[n++] = path;
    }
    for (size_t i = 0; args[i] != NULL && n < sizeof argv / sizeof argv[0] - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    /* Started in the cluster's dir (the tools need a working directory their
     * user can read), reading nothing: a detached server must not hold a terminal. */
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0)
        goto out;
    th_spawn_opts opts = {.cwd = c->dir, .stdin_fd = devnull, .detach = detach};
    rc = th_spawn_with(&opts, c->as_root ? "/usr/bin/setpriv" : path, argv, NULL, log, pid);
    close(devnull);
out:
    free(path);
    free(reuid);
    free(regid);
    return rc;
}

/* Runs a tool to completion (bounded). 0 when it exited 0; else err has the log tail. */
static int pgc_run_tool(const pg_cluster *c, const char *tool, const char *const *args,
                        const char *log, char *err, size_t errlen)
{
    pid_t pid;
    int status = 0;
    if (pgc_spawn_tool(c, tool, args, log, 0, &pid) != 0) {
        snprintf(err, errlen, "cannot start %s/%s", c->bindir, tool);
        return -1;
    }
    if (th_wait_exit(pid, PGC_TOOL_TIMEOUT_MS, &status) != 0) {
        th_kill(pid);
        snprintf(err, errlen, "%s did not finish in %d s", tool, PGC_TOOL_TIMEOUT_MS / 1000);
        return -1;
    }
    if (!th_exited_with(status, 0)) {
        char *tail = pgc_log_tail(log);
        snprintf(err, errlen, "%s failed (wait status %d); %s says:\n%s", tool, status, log,
                 tail ? tail : "");
        free(tail);
        return -1;
    }
    return 0;
}

/* Runs a program of the system (cp) as this process; 0 when it exited 0. */
static int pgc_run_program(const char *program, const char *const *args, char *err, size_t errlen)
{
    pid_t pid;
    int status = 0;
    if (th_spawn(program, args, NULL, NULL, &pid) != 0 ||
        th_wait_exit(pid, PGC_TOOL_TIMEOUT_MS, &status) != 0 || !th_exited_with(status, 0)) {
        snprintf(err, errlen, "%s %s %s failed (wait status %d)", program, args[0],
                 args[1] ? args[1] : "", status);
        return -1;
    }
    return 0;
}

/* "abc/def" with every byte but [A-Za-z0-9-._~] (and '/' when keep_slash) as %XX; malloc'd. */
static char *pgc_percent_encode(const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-._~", *p) || (keep_slash && *p == '/')) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---- The template: initdb once per build -------------------------------- */

/* $SAGA_BIN_DIR/../pg-template-<bindir>-<user>, malloc'd; NULL without SAGA_BIN_DIR. */
static char *pgc_template_path(const pg_cluster *c)
{
    const char *bin = getenv("SAGA_BIN_DIR");
    if (bin == NULL || bin[0] != '/')
        return NULL;
    char *key = util_asprintf("%s-%s", c->bindir, c->user);
    if (key == NULL)
        return NULL;
    for (char *p = key; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-')
            *p = '_';
    char *path = util_asprintf("%s/../pg-template%s", bin, key); /* key starts with '_' */
    free(key);
    return path;
}

/* Copies c->data (just made by initdb, never started) into the template
 * path, atomically: a temp dir renamed into place. Failing only costs speed. */
static void pgc_save_template(const pg_cluster *c, const char *template_dir)
{
    char *tmp = util_asprintf("%s.tmp.XXXXXX", template_dir), err[512];
    if (tmp == NULL || mkdtemp(tmp) == NULL) {
        free(tmp);
        return;
    }
    char *dst = util_asprintf("%s/data", tmp);
    const char *args[] = {"-a", c->data, dst, NULL};
    if (dst && pgc_run_program("/bin/cp", args, err, sizeof err) == 0 &&
        rename(tmp, template_dir) == 0) {
        free(dst);
        free(tmp);
        return;
    }
    /* Another test saved it first (rename: ENOTEMPTY), or the copy failed. */
    th_rmtree(tmp);
    free(dst);
    free(tmp);
}

/* c->data as a copy of the template when there is one, else by initdb (saving the template). */
static int pgc_make_data(pg_cluster *c, char *err, size_t errlen)
{
    char *template_dir = pgc_template_path(c);
    char *template_data = template_dir ? util_asprintf("%s/data", template_dir) : NULL;
    int rc = -1;
    if (template_data && access(template_data, F_OK) == 0) {
        const char *args[] = {"-a", template_data, c->data, NULL};
        rc = pgc_run_program("/bin/cp", args, err, errlen);
        /* A crash test's cluster must be on disk before the server starts. */
        if (rc == 0 && c->durable) {
            const char *sync_args[] = {"--sync-only", "-D", c->data, NULL};
            char *log = th_path(c->dir, "initdb.log");
            rc = log ? pgc_run_tool(c, "initdb", sync_args, log, err, errlen) : -1;
            free(log);
        }
    } else {
        char *user = util_asprintf("--username=%s", c->user), *log = th_path(c->dir, "initdb.log");
        /* --no-sync last, so that a durable cluster drops it: its files are fsynced. */
        const char *args[] = {"-D", c->data, user,         "--auth=trust",
                              "-E", "UTF8",  "--locale=C", c->durable ? NULL : "--no-sync",
                              NULL};
        if (user && log)
            rc = pgc_run_tool(c, "initdb", args, log, err, errlen);
        if (rc == 0 && template_dir)
            pgc_save_template(c, template_dir);
        free(user);
        free(log);
    }
    free(template_data);
    free(template_dir);
    return rc;
}

/* ---- The server ---------------------------------------------------------- */

/* Starts the server and waits until it accepts connections. 0, or -1 with err. */
static int pgc_launch(pg_cluster *c, char *err, size_t errlen)
{
    char *sockdir = util_asprintf("unix_socket_directories=%s", c->dir);
    char *port = util_asprintf("port=%d", PGC_PORT);
    char *url = pgc_url(c, "postgres");
    const char *args[24] = {"-D", c->data, "-c", "listen_addresses=",  "-c", sockdir,
                            "-c", port,    "-c", "max_connections=100"};
    size_t n = 10;
    int rc = -1;
    if (sockdir == NULL || port == NULL || url == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (!c->durable) {
        const char *fast[] = {"fsync=off", "synchronous_commit=off", "full_page_writes=off"};
        for (size_t i = 0; i < 3; i++) {
            args[n++] = "-c";
            args[n++] = fast[i];
        }
    }
    args[n] = NULL;
    if (pgc_spawn_tool(c, "postgres", args, c->log, c->detached, &c->server) != 0) {
        snprintf(err, errlen, "cannot start %s/postgres", c->bindir);
        c->server = 0;
        goto out;
    }
    int64_t deadline = util_mono_ms() + PGC_READY_TIMEOUT_MS;
    for (;;) {
        if (PQping(url) == PQPING_OK) {
            rc = 0;
            break;
        }
        int status = 0, exited = th_waitpid(c->server, &status, WNOHANG) == c->server;
        const char *why = exited ? "the server exited" : NULL;
        if (!exited && util_mono_ms() >= deadline)
            why = "the server did not accept connections within 60 s";
        if (why != NULL) {
            if (!exited)
                th_kill(c->server);
            c->server = 0;
            char *tail = pgc_log_tail(c->log);
            snprintf(err, errlen, "%s (wait status %d); %s says:\n%s", why, status, c->log,
                     tail ? tail : "");
            free(tail);
            break;
        }
        util_sleep_ms(20);
    }
out:
    free(sockdir);
    free(port);
    free(url);
    return rc;
}

/* Sends sig to the server and waits for it up to timeout_ms. 0 when it exited. */
static int pgc_signal_and_wait(pg_cluster *c, int sig, int timeout_ms)
{
    if (kill(c->server, sig) != 0 && errno != ESRCH)
        return -1;
    return th_wait_exit(c->server, timeout_ms, NULL);
}

/* Stops the server with sig (SIGINT fast, SIGQUIT immediate), escalating when it hangs. */
static int pgc_shutdown(pg_cluster *c, int sig)
{
    int rc = 0;
    if (c->server <= 0)
        return 0;
    if (pgc_signal_and_wait(c, sig, PGC_STOP_TIMEOUT_MS) != 0) {
        fprintf(stderr, "pg_cluster: server %d of %s ignored signal %d for %d s: killing it\n",
                (int)c->server, c->dir, sig, PGC_STOP_TIMEOUT_MS / 1000);
        rc = -1;
        if (pgc_signal_and_wait(c, SIGQUIT, 10000) != 0)
            th_kill(c->server);
    }
    c->server = 0;
    return rc;
}

/* ---- The guard ------------------------------------------------------------ */

/*
 * Reads its stdin, a pipe only this process can write, until EOF: when
 * pgc_destroy closes it (the dir is gone by then: nothing to do) or when
 * this process died without clean-up. It then stops the server found in
 * postmaster.pid (checking that the pid is still this cluster's server, not
 * a stranger who reused it) and removes the dir.
 */
static const char pgc_guard_script[] =
    "while read -r _; do :; done\n"
    "pidfile=\"$1/data/postmaster.pid\"\n"
    "pid=$(head -n 1 \"$pidfile\" 2>/dev/null)\n"
    "case \"$pid\" in ''|*[!0-9]*) pid= ;; esac\n"
    "if [ -n \"$pid\" ] && tr '\\0' '\\n' <\"/proc/$pid/cmdline\" 2>/dev/null | "
    "grep -qxF -- \"$1/data\"; then\n"
    "  kill -QUIT \"$pid\"\n"
    "  i=0\n"
    "  while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done\n"
    "  kill -KILL \"$pid\" 2>/dev/null\n"
    "fi\n"
    "rm -rf -- \"$1\"\n";

static int pgc_start_guard(pg_cluster *c, char *err, size_t errlen)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    th_spawn_opts opts = {.stdin_fd = fds[0]};
    const char *args[] = {"-c", pgc_guard_script, "pg-cluster-guard", c->dir, NULL};
    int rc = th_spawn_with(&opts, "/bin/sh", args, NULL, NULL, &c->guard);
    close(fds[0]);
    if (rc != 0) {
        close(fds[1]);
        c->guard = 0;
        snprintf(err, errlen, "cannot start the guard process (/bin/sh)");
        return -1;
    }
    c->guard_fd = fds[1];
    return 0;
}

static void pgc_stop_guard(pg_cluster *c)
{
    if (c->guard_fd >= 0)
        close(c->guard_fd);
    c->guard_fd = -1;
    if (c->guard > 0 && th_wait_exit(c->guard, 10000, NULL) != 0)
        th_kill(c->guard);
    c->guard = 0;
}

/* ---- Public ---------------------------------------------------------------- */

static void pgc_free(pg_cluster *c)
{
    free(c->dir);
    free(c->data);
    free(c->log);
    free(c->bindir);
    free(c->user);
    free(c);
}

static pg_cluster *pgc_start_mode(int durable, int detached, char *err, size_t errlen)
{
    char dummy[1];
    if (err == NULL || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    pg_cluster *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->durable = durable != 0;
    c->detached = detached;
    c->guard_fd = -1;
    c->as_root = geteuid() == 0;
    struct passwd *pw = c->as_root ? getpwnam("postgres") : getpwuid(geteuid());
    if (pw == NULL) {
        snprintf(err, errlen,
                 c->as_root ? "running as root, but there is no user postgres to run the server"
                            : "the current user has no passwd entry");
        goto fail;
    }
    c->user = util_strdup(pw->pw_name);
    c->dir = util_strdup("/tmp/saga-pg-XXXXXX");
    if (c->user == NULL || c->dir == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((c->bindir = pgc_find_bindir(err, errlen)) == NULL)
        goto fail;
    if (mkdtemp(c->dir) == NULL) {
        snprintf(err, errlen, "mkdtemp %s: %s", c->dir, strerror(errno));
        free(c->dir);
        c->dir = NULL;
        goto fail;
    }
    if (c->as_root && chown(c->dir, pw->pw_uid, pw->pw_gid) != 0) {
        snprintf(err, errlen, "chown %s to postgres: %s", c->dir, strerror(errno));
        goto fail;
    }
    c->data = th_path(c->dir, "data");
    c->log = th_path(c->dir, "server.log");
    if (c->data == NULL || c->log == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* The guard first: from here on, this process dying removes the dir. */
    if (!detached && pgc_start_guard(c, err, errlen) != 0)
        goto fail;
    if (pgc_make_data(c, err, errlen) != 0 || pgc_launch(c, err, errlen) != 0)
        goto fail;
    if (!detached && pgc_live_add(c) != 0) {
        snprintf(err, errlen, "more than %d clusters at once", PGC_LIVE_MAX);
        goto fail;
    }
    return c;

fail:
    pgc_shutdown(c, SIGQUIT);
    if (c->dir)
        th_rmtree(c->dir);
    pgc_stop_guard(c);
    pgc_free(c);
    return NULL;
}

pg_cluster *pgc_start(int durable, char *err, size_t errlen)
{
    return pgc_start_mode(durable, 0, err, errlen);
}

pg_cluster *pgc_start_detached(int durable, char *err, size_t errlen)
{
    return pgc_start_mode(durable, 1, err, errlen);
}

void pgc_release(pg_cluster *c)
{
    if (c != NULL)
        pgc_free(c);
}

char *pgc_url(const pg_cluster *c, const char *dbname)
{
    char *db = pgc_percent_encode(dbname, 0), *host = pgc_percent_encode(c->dir, 1);
    char *user = pgc_percent_encode(c->user, 0), *url = NULL;
    if (db && host && user)
        url = util_asprintf("postgresql:///%s?host=%s&port=%d&user=%s", db, host, PGC_PORT, user);
    free(db);
    free(host);
    free(user);
    return url;
}

const char *pgc_dir(const pg_cluster *c)
{
    return c->dir;
}

pid_t pgc_server_pid(const pg_cluster *c)
{
    return c->server;
}

int pgc_stop_server(pg_cluster *c)
{
    if (c->server <= 0) {
        fprintf(stderr, "pg_cluster: the server of %s is not running\n", c->dir);
        return -1;
    }
    return pgc_shutdown(c, SIGINT);
}

int pgc_start_server(pg_cluster *c)
{
    char err[2048];
    if (c->server > 0) {
        fprintf(stderr, "pg_cluster: the server of %s is already running\n", c->dir);
        return -1;
    }
    if (pgc_launch(c, err, sizeof err) != 0) {
        fprintf(stderr, "pg_cluster: cannot start the server of %s: %s\n", c->dir, err);
        return -1;
    }
    return 0;
}

void pgc_destroy(pg_cluster *c)
{
    if (c == NULL)
        return;
    pgc_live_remove(c);
    pgc_shutdown(c, SIGQUIT); /* immediate: the data is thrown away */
    if (th_rmtree(c->dir) != 0)
        fprintf(stderr, "pg_cluster: could not remove %s\n", c->dir);
    pgc_stop_guard(c);
    pgc_free(c);
}

/* Is dir a name mkdtemp("/tmp/saga-pg-XXXXXX") gives? What pgc_stop_dir may remove. */
static int pgc_is_cluster_dir_name(const char *dir)
{
    const char *prefix = "/tmp/saga-pg-";
    size_t n = strlen(prefix);
    if (strncmp(dir, prefix, n) != 0 || strlen(dir + n) != 6)
        return 0;
    for (const char *p = dir + n; *p; p++)
        if (!isalnum((unsigned char)*p))
            return 0;
    return 1;
}

int pgc_stop_dir(const char *dir, char *err, size_t errlen)
{
    char *data = th_path(dir, "data"), *pidfile = th_path(dir, "data/postmaster.pid");
    char *cmdline_path = NULL, *text = NULL;
    struct stat st;
    int rc = -1;
    if (data == NULL || pidfile == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* It is about to be removed: only a dir pgc_start made, not a symlink to elsewhere. */
    if (!pgc_is_cluster_dir_name(dir) || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
        lstat(data, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a cluster dir (/tmp/saga-pg-XXXXXX holding data/)", dir);
        goto out;
    }
    text = th_read_file(pidfile);
    int64_t pid = 0;
    if (text != NULL) {
        char *nl = strchr(text, '\n');
        if (nl)
            *nl = '\0';
        if (util_parse_i64(text, &pid) != 0 || pid <= 1)
            pid = 0;
    }
    if (pid > 0) {
        /* Only the server of this data dir: a stale pid may belong to a stranger now. */
        cmdline_path = util_asprintf("/proc/%lld/cmdline", (long long)pid);
        FILE *f = cmdline_path ? fopen(cmdline_path, "rb") : NULL;
        char cmd[4096];
        size_t n = f ? fread(cmd, 1, sizeof cmd - 1, f) : 0;
        if (f)
            fclose(f);
        int ours = 0;
        cmd[n] = '\0';
        for (size_t i = 0; i < n; i += strlen(cmd + i) + 1)
            if (strcmp(cmd + i, data) == 0)
                ours = 1;
        if (ours && kill((pid_t)pid, SIGINT) == 0) {
            int64_t deadline = util_mono_ms() + PGC_STOP_TIMEOUT_MS;
            while (kill((pid_t)pid, 0) == 0 && util_mono_ms() < deadline)
                util_sleep_ms(20);
            if (kill((pid_t)pid, 0) == 0) {
                kill((pid_t)pid, SIGKILL);
                snprintf(err, errlen, "server %lld ignored fast shutdown for %d s: killed",
                         (long long)pid, PGC_STOP_TIMEOUT_MS / 1000);
            }
        }
    }
    if (th_rmtree(dir) != 0) {
        snprintf(err, errlen, "could not remove %s", dir);
        goto out;
    }
    rc = 0;
out:
    free(data);
    free(pidfile);
    free(cmdline_path);
    free(text);
    return rc;
}

int pgc_create_db(pg_cluster *c, const char *name)
{
    char *url = pgc_url(c, "postgres");
    PGconn *conn = url ? PQconnectdb(url) : NULL;
    int rc = -1;
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "pg_cluster: cannot connect to %s: %s", url ? url : "(no memory)",
                conn ? PQerrorMessage(conn) : "\n");
        goto out;
    }
    char *ident = PQescapeIdentifier(conn, name, strlen(name));
    char *sql = ident ? util_asprintf("CREATE DATABASE %s", ident) : NULL;
    PGresult *res = sql ? PQexec(conn, sql) : NULL;
    if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK)
        rc = 0;
    else
        fprintf(stderr, "pg_cluster: CREATE DATABASE %s: %s", ident ? ident : name,
                PQerrorMessage(conn));
    PQclear(res);
    free(sql);
    PQfreemem(ident);
out:
    PQfinish(conn);
    free(url);
    return rc;
}

/* ---- SQL helpers ------------------------------------------------------------ */

/*
 * Connects to url and runs the formatted statement. The result (any status;
 * *sql_out set) or NULL when it could not be run (reason printed).
 */
static PGresult *pgc_query(const char *url, const char *fmt, va_list ap, PGconn **conn_out,
                           char **sql_out)
{
    *sql_out = NULL;
    *conn_out = PQconnectdb(url);
    if (*conn_out == NULL || PQstatus(*conn_out) != CONNECTION_OK) {
        fprintf(stderr, "pg_cluster: cannot connect to %s: %s", url,
                *conn_out ? PQerrorMessage(*conn_out) : "out of memory\n");
        return NULL;
    }
    va_list copy;
    va_copy(copy, ap);
    int len = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (len < 0 || (*sql_out = malloc((size_t)len + 1)) == NULL) {
        fprintf(stderr, "pg_cluster: cannot format %s\n", fmt);
        return NULL;
    }
    vsnprintf(*sql_out, (size_t)len + 1, fmt, ap);
    PGresult *res = PQexec(*conn_out, *sql_out);
    if (res == NULL)
        fprintf(stderr, "pg_cluster: %s: %s", *sql_out, PQerrorMessage(*conn_out));
    return res;
}

/* The single value of a one-row result (from pgc_query); NULL (reason printed) otherwise. */
static const char *pgc_scalar(PGconn *conn, PGresult *res, const char *sql)
{
    if (res == NULL)
        return NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pg_cluster: %s: %s", sql, PQerrorMessage(conn));
        return NULL;
    }
    if (PQntuples(res) != 1 || PQnfields(res) < 1) {
        fprintf(stderr, "pg_cluster: %s: %d rows, not one\n", sql, PQntuples(res));
        return NULL;
    }
    if (PQgetisnull(res, 0, 0)) {
        fprintf(stderr, "pg_cluster: %s: the value is NULL\n", sql);
        return NULL;
    }
    return PQgetvalue(res, 0, 0);
}

int pgc_sql_int(const char *url, int64_t *out, const char *fmt, ...)
{
    PGconn *conn;
    char *sql;
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = pgc_query(url, fmt, ap, &conn, &sql);
    va_end(ap);
    const char *value = pgc_scalar(conn, res, sql);
    int rc = -1;
    if (value != NULL) {
        if (util_parse_i64(value, out) == 0)
            rc = 0;
        else
            fprintf(stderr, "pg_cluster: %s: '%s' is not an integer\n", sql, value);
    }
    PQclear(res);
    PQfinish(conn);
    free(sql);
    return rc;
}

char *pgc_sql_text(const char *url, const char *fmt, ...)
{
    PGconn *conn;
    char *sql;
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = pgc_query(url, fmt, ap, &conn, &sql);
    va_end(ap);
    const char *value = pgc_scalar(conn, res, sql);
    char *copy = value ? util_strdup(value) : NULL;
    PQclear(res);
    PQfinish(conn);
    free(sql);
    return copy;
}

int pgc_sql_exec(const char *url, const char *fmt, ...)
{
    PGconn *conn;
    char *sql;
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = pgc_query(url, fmt, ap, &conn, &sql);
    va_end(ap);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc != 0 && res != NULL)
        fprintf(stderr, "pg_cluster: %s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
    free(sql);
    return rc;
}
