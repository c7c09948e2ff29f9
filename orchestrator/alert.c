/* alert — see alert.h. */
#define _GNU_SOURCE /* posix_spawn_file_actions_addclosefrom_np */
#include "alert.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "security.h"
#include "util.h"

typedef struct pending_alert {
    struct pending_alert *next;
    char *saga_id, *type, *reason;
} pending_alert;

typedef struct {
    pid_t pid; /* 0: free slot; also its process group */
    char saga_id[37];
    int64_t deadline_ms; /* util_mono_ms() after which its group is killed */
    int killed;          /* its group was sent SIGKILL (not reaped yet) */
} running_alert;

struct alerter {
    char *command;
    int max_running;
    int64_t timeout_ms;
    orch_metrics *metrics;
    running_alert *running;
    int n_running;
    pending_alert *head, *tail;
    size_t queued;
};

static void pending_free(pending_alert *p)
{
    if (p == NULL)
        return;
    free(p->saga_id);
    free(p->type);
    free(p->reason);
    free(p);
}

alerter *alert_create(const char *command, int max_running, int64_t timeout_ms,
                      orch_metrics *metrics)
{
    alerter *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->max_running = max_running > 0 ? max_running : 1;
    a->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    a->metrics = metrics;
    a->command = util_strdup(command);
    a->running = calloc((size_t)a->max_running, sizeof *a->running);
    if (a->command == NULL || a->running == NULL) {
        alert_destroy(a, 0);
        return NULL;
    }
    return a;
}

/* Starts p in a free slot; returns 0, or -1 when it was not started. */
static int spawn_one(alerter *a, const pending_alert *p)
{
    char why[1024];
    /* The file or a directory above it may have changed since start-up. */
    if (sec_check_trusted_path(a->command, 1, why, sizeof why) != 0) {
        log_error("alert for saga %s not run: alert_command %s", p->saga_id, why);
        om_on_alert(a->metrics, OM_ALERT_SPAWN_FAILED);
        return -1;
    }
    char *env_id = util_asprintf("SAGA_ID=%s", p->saga_id);
    char *env_type = util_asprintf("SAGA_TYPE=%s", p->type);
    char *env_reason = util_asprintf("SAGA_REASON=%s", p->reason);
    char env_path[] = "PATH=" ALERT_PATH;
    char *envp[] = {env_path, env_id, env_type, env_reason, NULL};
    int rc = -1;
    if (env_id == NULL || env_type == NULL || env_reason == NULL) {
        log_error("alert for saga %s: out of memory", p->saga_id);
        om_on_alert(a->metrics, OM_ALERT_SPAWN_FAILED);
        goto out;
    }

    char *argv[] = {a->command, p->saga_id, p->reason, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE); /* sagad ignores it; the command must not */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* none of sagad's sockets or files */
#endif
    posix_spawnattr_init(&attr);
    /* A group of its own, so that the time limit kills what it started too. */
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int err = posix_spawn(&pid, a->command, &fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        log_error("alert for saga %s: cannot run %s: %s", p->saga_id, a->command, strerror(err));
        om_on_alert(a->metrics, OM_ALERT_SPAWN_FAILED);
        goto out;
    }
    for (int i = 0; i < a->max_running; i++) {
        if (a->running[i].pid == 0) {
            running_alert *r = &a->running[i];
            r->pid = pid;
            r->deadline_ms = util_mono_ms() + a->timeout_ms;
            r->killed = 0;
            snprintf(r->saga_id, sizeof r->saga_id, "%s", p->saga_id);
            break;
        }
    }
    a->n_running++;
    om_on_alert(a->metrics, OM_ALERT_STARTED);
    log_info("alert: saga %s FAILED; ran %s (pid %d)", p->saga_id, a->command, (int)pid);
    rc = 0;
out:
    free(env_id);
    free(env_type);
    free(env_reason);
    return rc;
}

/* Kills the process group of every command past its time limit. Before
 * reap(): a pid not reaped yet keeps its group id from being reused. */
static void kill_overdue(alerter *a)
{
    int64_t now = util_mono_ms();
    for (int i = 0; i < a->max_running; i++) {
        running_alert *r = &a->running[i];
        if (r->pid == 0 || r->killed || now < r->deadline_ms)
            continue;
        kill(-r->pid, SIGKILL);
        r->killed = 1;
        log_error("alert for saga %s: %s (pid %d) still running after %lld ms: killed its "
                  "process group",
                  r->saga_id, a->command, (int)r->pid, (long long)a->timeout_ms);
        om_on_alert(a->metrics, OM_ALERT_TIMED_OUT);
    }
}

static void start_queued(alerter *a)
{
    while (a->head != NULL && a->n_running < a->max_running) {
        pending_alert *p = a->head;
        a->head = p->next;
        if (a->head == NULL)
            a->tail = NULL;
        a->queued--;
        spawn_one(a, p);
        pending_free(p);
    }
}

static void reap(alerter *a)
{
    for (int i = 0; i < a->max_running; i++) {
        running_alert *r = &a->running[i];
        if (r->pid == 0)
            continue;
        int status;
        pid_t got = waitpid(r->pid, &status, WNOHANG);
        if (got == 0)
            continue;
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            log_warn("alert for saga %s: cannot wait for pid %d: %s", r->saga_id, (int)r->pid,
                     strerror(errno));
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            log_info("alert for saga %s: command exited 0", r->saga_id);
        else if (WIFEXITED(status))
            log_warn("alert for saga %s: command exited %d", r->saga_id, WEXITSTATUS(status));
        else if (WIFSIGNALED(status) && !r->killed) /* killed: already logged */
            log_warn("alert for saga %s: command killed by signal %d", r->saga_id,
                     WTERMSIG(status));
        r->pid = 0;
        a->n_running--;
    }
}

void alert_fire(alerter *a, const char *saga_id, const char *saga_type, const char *reason)
{
    if (a == NULL)
        return;
    if (a->queued >= ALERT_QUEUE_MAX) {
        log_warn("alert for saga %s dropped: %zu alerts already waiting for a slot", saga_id,
                 a->queued);
        om_on_alert(a->metrics, OM_ALERT_DROPPED);
        return;
    }
    pending_alert *p = calloc(1, sizeof *p);
    if (p != NULL) {
        p->saga_id = util_strdup(saga_id);
        p->type = util_strdup(saga_type ? saga_type : "");
        p->reason = util_strdup(reason && *reason ? reason : "FAILED");
    }
    if (p == NULL || p->saga_id == NULL || p->type == NULL || p->reason == NULL) {
        pending_free(p);
        log_error("alert for saga %s dropped: out of memory", saga_id);
        om_on_alert(a->metrics, OM_ALERT_DROPPED);
        return;
    }
    if (a->tail)
        a->tail->next = p;
    else
        a->head = p;
    a->tail = p;
    a->queued++;
    kill_overdue(a);
    reap(a);
    start_queued(a);
}

void alert_poll(alerter *a)
{
    if (a == NULL || (a->n_running == 0 && a->head == NULL))
        return;
    kill_overdue(a);
    reap(a);
    start_queued(a);
}

int alert_running(const alerter *a)
{
    return a ? a->n_running : 0;
}

void alert_destroy(alerter *a, int wait_ms)
{
    if (a == NULL)
        return;
    int64_t deadline = util_mono_ms() + wait_ms;
    if (a->running) {
        reap(a);
        while (a->n_running > 0 && util_mono_ms() < deadline) {
            util_sleep_ms(20);
            kill_overdue(a);
            reap(a);
        }
        /* Nobody would enforce their time limit after this. */
        for (int i = 0; i < a->max_running; i++) {
            running_alert *r = &a->running[i];
            if (r->pid == 0)
                continue;
            log_warn("alert for saga %s: sagad is stopping: killing %s (pid %d)", r->saga_id,
                     a->command, (int)r->pid);
            kill(-r->pid, SIGKILL);
            r->killed = 1;
        }
        for (int64_t end = util_mono_ms() + 2000; a->n_running > 0 && util_mono_ms() < end;) {
            reap(a);
            if (a->n_running > 0)
                util_sleep_ms(10);
        }
    }
    if (a->queued > 0)
        log_warn("%zu alerts not run: sagad is stopping", a->queued);
    for (pending_alert *p = a->head, *next; p; p = next) {
        next = p->next;
        pending_free(p);
    }
    free(a->running);
    free(a->command);
    free(a);
}
