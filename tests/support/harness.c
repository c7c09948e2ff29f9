/* harness — see harness.h. Test support: temp dirs, programs, steps, databases. */
#define _GNU_SOURCE /* nftw, posix_spawn_file_actions_addchdir_np, POSIX_SPAWN_SETSID */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "security.h"
#include "util.h"

extern char **environ;

/* ---- Files and addresses ----------------------------------------------- */

char *th_tempdir(void)
{
    char *dir = util_strdup("/tmp/saga-test-XXXXXX");
    if (dir == NULL || mkdtemp(dir) == NULL) {
        fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
        free(dir);
        return NULL;
    }
    return dir;
}

/* A 0700 dir made under base whose every ancestor sagad would trust (the
 * rule of sec_check_trusted_path, checked on a file made inside it), or NULL. */
static char *th_trusted_dir_under(const char *base)
{
    char *dir = util_asprintf("%s/saga-test-XXXXXX", base);
    if (dir == NULL || mkdtemp(dir) == NULL) {
        free(dir);
        return NULL;
    }
    char *probe = th_path(dir, "probe"), why[512];
    int ok = probe != NULL && th_write_file(probe, "") == 0 &&
             sec_check_trusted_path(probe, 0, why, sizeof why) == 0;
    if (probe != NULL)
        unlink(probe);
    free(probe);
    if (!ok) {
        rmdir(dir);
        free(dir);
        return NULL;
    }
    return dir;
}

char *th_trusted_tempdir(void)
{
    /* The build tree first; a checkout under /tmp (sticky, writable by all)
     * is not trusted, so then this user's home, then /run for root. */
    const char *bin = getenv("SAGA_BIN_DIR"), *home = getenv("HOME");
    char *parent = bin ? util_asprintf("%s/..", bin) : NULL;
    char *build = parent ? realpath(parent, NULL) : NULL;
    free(parent);
    const char *bases[] = {build, home, geteuid() == 0 ? "/run" : NULL};
    char *dir = NULL;
    for (size_t i = 0; i < sizeof bases / sizeof bases[0] && dir == NULL; i++)
        if (bases[i] != NULL && bases[i][0] == '/')
            dir = th_trusted_dir_under(bases[i]);
    if (dir == NULL)
        fprintf(stderr, "harness: no directory sagad would trust under %s, $HOME or /run\n",
                build ? build : "the build tree");
    free(build);
    return dir;
}

static int th_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "harness: remove %s: %s\n", path, strerror(errno));
    return 0; /* keep going: remove as much as possible */
}

int th_rmtree(const char *path)
{
    if (path == NULL)
        return 0;
    nftw(path, th_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return access(path, F_OK) == 0 ? -1 : 0;
}

char *th_path(const char *dir, const char *name)
{
    return util_asprintf("%s/%s", dir, name);
}

char *th_ipc_url(const char *dir, const char *name)
{
    return util_asprintf("ipc://%s/%s.ipc", dir, name);
}

char *th_source_path(const char *rel)
{
    const char *src = getenv("SAGA_SOURCE_DIR");
    if (src == NULL) {
        fprintf(stderr, "harness: SAGA_SOURCE_DIR is not set (run the test with ctest)\n");
        return NULL;
    }
    return util_asprintf("%s/%s", src, rel);
}

int th_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text), done = 0;
    if (fd < 0) {
        fprintf(stderr, "harness: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "harness: write %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    return close(fd);
}

char *th_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            char *grown = realloc(buf, cap + 8192);
            if (grown == NULL)
                goto fail;
            buf = grown;
            cap += 8192;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    buf[len] = '\0';
    return buf;

fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* ---- Programs ---------------------------------------------------------- */

/* Length of the NAME part of "NAME=VALUE". */
static size_t th_env_name_len(const char *entry)
{
    const char *eq = strchr(entry, '=');
    return eq ? (size_t)(eq - entry) : strlen(entry);
}

/* environ minus the names in extra, plus extra; the array is malloc'd, the strings borrowed. */
static char **th_build_env(const char *const *extra)
{
    size_t n_env = 0, n_extra = 0, k = 0;
    while (environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    char **env = calloc(n_env + n_extra + 1, sizeof *env);
    if (env == NULL)
        return NULL;
    for (size_t i = 0; i < n_env; i++) {
        size_t len = th_env_name_len(environ[i]);
        int replaced = 0;
        for (size_t j = 0; j < n_extra && !replaced; j++)
            replaced = th_env_name_len(extra[j]) == len && strncmp(extra[j], environ[i], len) == 0;
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        env[k++] = (char *)extra[j];
    return env;
}

/* ---- Children not reaped yet ----------------------------------------------- */

/* Slots of the children th_spawn started and th_wait_exit has not reaped;
 * 0 marks a free slot. Chaos supervisors spawn from several threads. */
#define TH_CHILDREN_MAX 1024
static pid_t th_children[TH_CHILDREN_MAX];
static pthread_mutex_t th_children_mu = PTHREAD_MUTEX_INITIALIZER;

/* At exit: SIGKILL and reap every child still running. */
static void th_kill_children(void)
{
    pthread_mutex_lock(&th_children_mu);
    for (size_t i = 0; i < TH_CHILDREN_MAX; i++) {
        pid_t pid = th_children[i];
        if (pid <= 0)
            continue;
        th_children[i] = 0;
        int st = 0;
        if (waitpid(pid, &st, WNOHANG) == pid)
            continue; /* it had exited: reaped */
        fprintf(stderr, "harness: process %d was still running at exit: killed\n", (int)pid);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    pthread_mutex_unlock(&th_children_mu);
}

static void th_children_track(pid_t pid)
{
    static int registered;
    pthread_mutex_lock(&th_children_mu);
    if (!registered && atexit(th_kill_children) == 0)
        registered = 1;
    for (size_t i = 0; i < TH_CHILDREN_MAX; i++)
        if (th_children[i] == 0) {
            th_children[i] = pid;
            break;
        }
    pthread_mutex_unlock(&th_children_mu);
}

static void th_children_forget(pid_t pid)
{
    if (pid <= 0)
        return;
    pthread_mutex_lock(&th_children_mu);
    for (size_t i = 0; i < TH_CHILDREN_MAX; i++)
        if (th_children[i] == pid)
            th_children[i] = 0;
    pthread_mutex_unlock(&th_children_mu);
}

pid_t th_waitpid(pid_t pid, int *status, int flags)
{
    pid_t r = waitpid(pid, status, flags);
    if (r > 0)
        th_children_forget(r);
    return r;
}

int th_spawn(const char *program, const char *const *args, const char *const *env,
             const char *output, pid_t *pid)
{
    return th_spawn_with(NULL, program, args, env, output, pid);
}

int th_spawn_with(const th_spawn_opts *opts, const char *program, const char *const *args,
                  const char *const *env, const char *output, pid_t *pid)
{
    static const th_spawn_opts defaults = {0};
    char *path = NULL, **argv = NULL, **envp = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int have_actions = 0, have_attr = 0, rc = -1;
    size_t n_args = 0;

    if (opts == NULL)
        opts = &defaults;

    if (strchr(program, '/')) {
        path = util_strdup(program);
    } else {
        const char *bin = getenv("SAGA_BIN_DIR");
        if (bin == NULL) {
            fprintf(stderr, "harness: SAGA_BIN_DIR is not set (run the test with ctest)\n");
            goto out;
        }
        path = util_asprintf("%s/%s", bin, program);
    }
    while (args && args[n_args])
        n_args++;
    argv = calloc(n_args + 2, sizeof *argv);
    envp = th_build_env(env);
    if (path == NULL || argv == NULL || envp == NULL) {
        fprintf(stderr, "harness: out of memory\n");
        goto out;
    }
    argv[0] = path;
    for (size_t i = 0; i < n_args; i++)
        argv[i + 1] = (char *)args[i];

    if (output || opts->cwd || opts->stdin_fd > 0) {
        if (posix_spawn_file_actions_init(&actions) != 0)
            goto out;
        have_actions = 1;
        /* The output file is opened before the chdir: a relative name is ours. */
        if (output &&
            (posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output,
                                              O_WRONLY | O_CREAT | O_APPEND, 0600) != 0 ||
             posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO) != 0))
            goto out;
        if (opts->stdin_fd > 0 &&
            posix_spawn_file_actions_adddup2(&actions, opts->stdin_fd, STDIN_FILENO) != 0)
            goto out;
        if (opts->cwd && posix_spawn_file_actions_addchdir_np(&actions, opts->cwd) != 0)
            goto out;
    }
    if (opts->detach) {
        if (posix_spawnattr_init(&attr) != 0)
            goto out;
        have_attr = 1;
        if (posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID) != 0)
            goto out;
    }
    int err = posix_spawn(pid, path, have_actions ? &actions : NULL, have_attr ? &attr : NULL, argv,
                          envp);
    if (err != 0) {
        fprintf(stderr, "harness: cannot start %s%s%s: %s\n", path, opts->cwd ? " in " : "",
                opts->cwd ? opts->cwd : "", strerror(err));
        goto out;
    }
    if (!opts->detach)
        th_children_track(*pid);
    rc = 0;

out:
    if (have_attr)
        posix_spawnattr_destroy(&attr);
    if (have_actions)
        posix_spawn_file_actions_destroy(&actions);
    free(envp);
    free(argv);
    free(path);
    return rc;
}

int th_wait_exit(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = util_mono_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = th_waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (status)
                *status = st;
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "harness: waitpid %d: %s\n", (int)pid, strerror(errno));
            return -1;
        }
        if (util_mono_ms() >= deadline)
            return -1;
        util_sleep_ms(5);
    }
}

int th_stop(pid_t pid, int timeout_ms, int *status)
{
    if (kill(pid, SIGTERM) != 0) {
        fprintf(stderr, "harness: kill %d: %s\n", (int)pid, strerror(errno));
        return -1;
    }
    if (th_wait_exit(pid, timeout_ms, status) == 0)
        return 0;
    fprintf(stderr, "harness: process %d ignored SIGTERM for %d ms: killing it\n", (int)pid,
            timeout_ms);
    return th_kill(pid) == 0 ? 1 : -1;
}

int th_kill(pid_t pid)
{
    if (kill(pid, SIGKILL) != 0 && errno != ESRCH) {
        fprintf(stderr, "harness: kill %d: %s\n", (int)pid, strerror(errno));
        return -1;
    }
    return th_wait_exit(pid, 10000, NULL);
}

int th_exited_with(int status, int code)
{
    return WIFEXITED(status) && WEXITSTATUS(status) == code;
}

int th_wait_dial(const char *url, pid_t pid, int timeout_ms)
{
    int64_t deadline = util_mono_ms() + timeout_ms;
    nng_socket s;
    int rv;

    if ((rv = nng_req0_open(&s)) != 0) {
        fprintf(stderr, "harness: nng_req0_open: %s\n", nng_strerror(rv));
        return -1;
    }
    for (;;) {
        rv = nng_dial(s, url, NULL, 0);
        if (rv == 0)
            break;
        if (pid > 0) {
            int st;
            if (th_waitpid(pid, &st, WNOHANG) == pid) {
                fprintf(stderr, "harness: process %d exited (status %d) before %s was ready\n",
                        (int)pid, st, url);
                break;
            }
        }
        if (util_mono_ms() >= deadline) {
            fprintf(stderr, "harness: %s not ready after %d ms: %s\n", url, timeout_ms,
                    nng_strerror(rv));
            break;
        }
        util_sleep_ms(10);
    }
    nng_close(s);
    return rv == 0 ? 0 : -1;
}

/* ---- Talking to a participant ------------------------------------------ */

int th_client_open(th_client *c, const char *url, int timeout_ms)
{
    int rv;
    c->open = 0;
    if ((rv = nng_req0_open(&c->sock)) != 0)
        return rv;
    c->open = 1;
    /* Resend only well after the receive timeout: each send is one delivery. */
    if ((rv = nng_socket_set_ms(c->sock, NNG_OPT_SENDTIMEO, timeout_ms)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, timeout_ms)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, (nng_duration)timeout_ms * 10)) !=
            0 ||
        (rv = nng_dial(c->sock, url, NULL, 0)) != 0) {
        fprintf(stderr, "harness: cannot dial %s: %s\n", url, nng_strerror(rv));
        th_client_close(c);
    }
    return rv;
}

void th_client_close(th_client *c)
{
    if (c->open)
        nng_close(c->sock);
    c->open = 0;
}

int th_ipc_hangs_up(const char *ipc_url, const void *msg, size_t len)
{
    const char *path = ipc_url + strlen("ipc://");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strncmp(ipc_url, "ipc://", 6) != 0 || strlen(path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    /* The SP header of a req0 peer; then a message: type 1, its length as
     * 8 bytes big-endian, req0's 4-byte request id (top bit set), msg. */
    static const uint8_t sp_req0[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x30, 0x00, 0x00};
    uint8_t peer[8], head[9 + 4] = {1};
    uint64_t body = (uint64_t)len + 4;
    for (int i = 0; i < 8; i++)
        head[1 + i] = (uint8_t)(body >> (56 - 8 * i));
    head[9] = 0x80;
    int rc = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        send(fd, sp_req0, sizeof sp_req0, MSG_NOSIGNAL) != (ssize_t)sizeof sp_req0 ||
        recv(fd, peer, sizeof peer, MSG_WAITALL) != (ssize_t)sizeof peer)
        goto out;
    /* A failed send from here on is the peer hanging up: the length alone
     * is enough for nng to refuse the message. */
    rc = 1;
    if (send(fd, head, sizeof head, MSG_NOSIGNAL) != (ssize_t)sizeof head)
        goto out;
    for (size_t sent = 0; sent < len;) {
        ssize_t n = send(fd, (const uint8_t *)msg + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            goto out;
        sent += (size_t)n;
    }
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    rc = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ? 1 : 0;
out:
    close(fd);
    return rc;
}

int th_client_raw(th_client *c, const void *msg, size_t len, uint8_t **reply, size_t *reply_len)
{
    nng_msg *m = NULL;
    int rv;

    *reply = NULL;
    *reply_len = 0;
    if ((rv = nng_msg_alloc(&m, 0)) != 0 || (rv = nng_msg_append(m, msg, len)) != 0)
        goto fail;
    if ((rv = nng_sendmsg(c->sock, m, 0)) != 0)
        goto fail; /* on failure we still own m */
    m = NULL;
    if ((rv = nng_recvmsg(c->sock, &m, 0)) != 0)
        goto fail;
    *reply_len = nng_msg_len(m);
    *reply = malloc(*reply_len ? *reply_len : 1);
    if (*reply == NULL) {
        rv = NNG_ENOMEM;
        goto fail;
    }
    memcpy(*reply, nng_msg_body(m), *reply_len);
    nng_msg_free(m);
    return 0;

fail:
    if (m != NULL)
        nng_msg_free(m);
    *reply_len = 0;
    return rv;
}

int th_client_step(th_client *c, const char *key, const char *saga_id, const char *step, int phase,
                   const char *operation, const kvmap *params, StepReply **out)
{
    static const kvmap no_params = KVMAP_INIT;
    uint8_t *req, *rep = NULL;
    size_t req_len, rep_len = 0;
    int rv;

    *out = NULL;
    req = wire_pack_request(key, saga_id, step, phase, operation, 1, params ? params : &no_params,
                            &req_len);
    if (req == NULL)
        return NNG_ENOMEM;
    rv = th_client_raw(c, req, req_len, &rep, &rep_len);
    free(req);
    if (rv != 0)
        return rv;
    *out = saga__v1__step_reply__unpack(NULL, rep_len, rep);
    free(rep);
    if (*out == NULL) {
        fprintf(stderr, "harness: the reply to %s does not decode as a StepReply\n", key);
        return -1;
    }
    return 0;
}

int th_call(const char *url, int timeout_ms, const char *key, const char *saga_id, const char *step,
            int phase, const char *operation, const kvmap *params, StepReply **out)
{
    th_client c;
    int rv;

    *out = NULL;
    if ((rv = th_client_open(&c, url, timeout_ms)) != 0)
        return rv;
    rv = th_client_step(&c, key, saga_id, step, phase, operation, params, out);
    th_client_close(&c);
    return rv;
}

void th_reply_free(StepReply *r)
{
    if (r)
        saga__v1__step_reply__free_unpacked(r, NULL);
}

const char *th_result(const StepReply *r, const char *key)
{
    for (size_t i = 0; r && i < r->n_result; i++)
        if (strcmp(r->result[i]->key, key) == 0)
            return r->result[i]->value;
    return NULL;
}

int th_kv(kvmap *m, ...)
{
    va_list ap;
    const char *name;
    int rc = 0;

    va_start(ap, m);
    while (rc == 0 && (name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        rc = value ? kv_set(m, name, value) : -1;
    }
    va_end(ap);
    return rc;
}

/* ---- Databases --------------------------------------------------------- */

/*
 * Opens db_path read-only and steps the formatted query to its first row.
 * Returns 0 with *db and *st to finalize/close, or -1 (everything released).
 */
static int th_sql_first_row(const char *db_path, const char *fmt, va_list ap, sqlite3 **db,
                            sqlite3_stmt **st)
{
    char *sql = sqlite3_vmprintf(fmt, ap);
    int rc;

    *db = NULL;
    *st = NULL;
    if (sql == NULL)
        return -1;
    rc = sqlite3_open_v2(db_path, db, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(*db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(*db, sql, -1, st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(*st);
    if (rc != SQLITE_ROW) {
        fprintf(stderr, "harness: %s: %s: %s\n", db_path, sql,
                rc == SQLITE_DONE ? "no row" : (*db ? sqlite3_errmsg(*db) : "cannot open"));
        sqlite3_finalize(*st);
        sqlite3_close(*db);
        *st = NULL;
        *db = NULL;
        sqlite3_free(sql);
        return -1;
    }
    sqlite3_free(sql);
    return 0;
}

/* Is db a PostgreSQL URI rather than a SQLite file? */
static int th_is_pg(const char *db)
{
    return strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0;
}

/*
 * Runs sql on the PostgreSQL database url (a connection of its own). Returns
 * the result (PQclear it), or NULL after printing why; with want_row, a
 * query that returns no row or a NULL first value is an error too.
 */
static PGresult *th_pg_run(const char *url, const char *sql, int want_row)
{
    PGconn *conn = PQconnectdb(url);
    PGresult *res = NULL;
    const char *why = NULL;
    if (PQstatus(conn) != CONNECTION_OK) {
        why = PQerrorMessage(conn);
    } else {
        res = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            why = PQerrorMessage(conn);
        else if (want_row && (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)))
            why = PQntuples(res) == 0 ? "no row" : "NULL value";
    }
    if (why != NULL) {
        fprintf(stderr, "harness: %s: %s: %s\n", url, sql, why);
        PQclear(res);
        res = NULL;
    }
    PQfinish(conn);
    return res;
}

/* The first value of sql's first row on PostgreSQL, malloc'd; NULL on error. */
static char *th_pg_value(const char *url, const char *fmt, va_list ap)
{
    char *sql = sqlite3_vmprintf(fmt, ap); /* %Q quotes as standard SQL: PostgreSQL reads it */
    if (sql == NULL)
        return NULL;
    PGresult *res = th_pg_run(url, sql, 1);
    char *value = res ? util_strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    sqlite3_free(sql);
    return value;
}

int64_t th_sql_int(const char *db_path, const char *fmt, ...)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t value = TH_SQL_ERROR;
    va_list ap;

    if (th_is_pg(db_path)) {
        va_start(ap, fmt);
        char *text = th_pg_value(db_path, fmt, ap), *end = NULL;
        va_end(ap);
        if (text == NULL)
            return TH_SQL_ERROR;
        /* A boolean reads as SQLite's 1 / 0, so one query serves both backends. */
        if (strcmp(text, "t") == 0 || strcmp(text, "f") == 0) {
            value = text[0] == 't';
        } else {
            errno = 0;
            long long v = strtoll(text, &end, 10);
            if (errno == 0 && end != text && *end == '\0')
                value = v;
            else
                fprintf(stderr, "harness: %s: the query's value '%s' is not an integer\n", db_path,
                        text);
        }
        free(text);
        return value;
    }
    va_start(ap, fmt);
    int rc = th_sql_first_row(db_path, fmt, ap, &db, &st);
    va_end(ap);
    if (rc != 0)
        return TH_SQL_ERROR;
    if (sqlite3_column_type(st, 0) == SQLITE_INTEGER)
        value = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "harness: %s: the query's value is not an integer\n", db_path);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return value;
}

char *th_sql_text(const char *db_path, const char *fmt, ...)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    char *value;
    va_list ap;

    if (th_is_pg(db_path)) {
        va_start(ap, fmt);
        value = th_pg_value(db_path, fmt, ap);
        va_end(ap);
        return value;
    }
    va_start(ap, fmt);
    int rc = th_sql_first_row(db_path, fmt, ap, &db, &st);
    va_end(ap);
    if (rc != 0)
        return NULL;
    value = util_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return value;
}

int th_sql_exec(const char *db_path, const char *fmt, ...)
{
    sqlite3 *db = NULL;
    char *sql, *errmsg = NULL;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    if (sql == NULL)
        return -1;
    if (th_is_pg(db_path)) {
        PGresult *res = th_pg_run(db_path, sql, 0);
        PQclear(res);
        sqlite3_free(sql);
        return res ? 0 : -1;
    }
    rc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &errmsg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "harness: %s: %s: %s\n", db_path, sql,
                errmsg ? errmsg : (db ? sqlite3_errmsg(db) : "cannot open"));
    sqlite3_free(errmsg);
    sqlite3_free(sql);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

int th_sqlite_intact_rows(const char *db_path, const char *table)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int n = -1;
    char *count = sqlite3_mprintf("SELECT count(*) FROM \"%w\"", table);
    if (count != NULL && sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(q, 0), "ok") == 0) {
        sqlite3_finalize(q);
        q = NULL;
        if (sqlite3_prepare_v2(db, count, -1, &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            n = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    sqlite3_free(count);
    return n;
}

int th_db_dir_setup(void **state)
{
    th_db_dir *d = calloc(1, sizeof *d);
    if (d == NULL || (d->dir = th_tempdir()) == NULL) {
        free(d);
        return -1;
    }
    d->db = th_path(d->dir, "t.db");
    d->wal = util_asprintf("%s-wal", d->db);
    *state = d;
    return 0;
}

int th_db_dir_teardown(void **state)
{
    th_db_dir *d = *state;
    th_rmtree(d->dir);
    free(d->dir);
    free(d->db);
    free(d->wal);
    free(d);
    return 0;
}

int th_sqlite_exec(void *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
    return rc;
}

int th_died_of_sigkill(pid_t pid)
{
    int st = 0;
    if (pid <= 0 || th_waitpid(pid, &st, 0) != pid) {
        fprintf(stderr, "child %ld: cannot wait for it\n", (long)pid);
        return 0;
    }
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
        return 1;
    fprintf(stderr, "child %ld: %s %d, not a SIGKILL\n", (long)pid,
            WIFSIGNALED(st) ? "killed by signal" : "exited with",
            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    return 0;
}
