/* alert — see alert.h. */
#define _GNU_SOURCE /* posix_spawn_file_actions_addclosefrom_np */
#include "alert.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

extern char **environ;

typedef struct pending_alert {
    struct pending_alert *next;
    char *saga_id, *type, *reason;
} pending_alert;

typedef struct {
    pid_t pid; /* 0: free slot */
    char saga_id[37];
} running_alert;

struct alerter {
    char *command;
    int max_running;
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

alerter *alert_create(const char *command, int max_running, orch_metrics *metrics)
{
    alerter *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->max_running = max_running > 0 ? max_running : 1;
    a->metrics = metrics;
    a->command = util_strdup(command);
    a->running = calloc((size_t)a->max_running, sizeof *a->running);
    if (a->command == NULL || a->running == NULL) {
        alert_destroy(a, 0);
        return NULL;
    }
    return a;
}

/* Starts p in a free slot; returns 0, or -1 when posix_spawn failed. */
static int spawn_one(alerter *a, const pending_alert *p)
{
    char *env_id = util_asprintf("SAGA_ID=%s", p->saga_id);
    char *env_type = util_asprintf("SAGA_TYPE=%s", p->type);
    char *env_reason = util_asprintf("SAGA_REASON=%s", p->reason);
    size_t n_env = 0;
    while (environ && environ[n_env])
        n_env++;
    char **envp = calloc(n_env + 4, sizeof *envp);
    int rc = -1;
    if (env_id == NULL || env_type == NULL || env_reason == NULL || envp == NULL) {
        log_error("alert for saga %s: out of memory", p->saga_id);
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "SAGA_ID=", 8) != 0 && strncmp(environ[i], "SAGA_TYPE=", 10) != 0 &&
            strncmp(environ[i], "SAGA_REASON=", 12) != 0)
            envp[k++] = environ[i];
    envp[k++] = env_id;
    envp[k++] = env_type;
    envp[k++] = env_reason;
    envp[k] = NULL;

    char *argv[] = {a->command, p->saga_id, p->reason, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* none of sagad's sockets or files */
#endif
    pid_t pid;
    int err = posix_spawn(&pid, a->command, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        log_error("alert for saga %s: cannot run %s: %s", p->saga_id, a->command, strerror(err));
        om_on_alert(a->metrics, OM_ALERT_SPAWN_FAILED);
        goto out;
    }
    for (int i = 0; i < a->max_running; i++) {
        if (a->running[i].pid == 0) {
            a->running[i].pid = pid;
            snprintf(a->running[i].saga_id, sizeof a->running[i].saga_id, "%s", p->saga_id);
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
    free(envp);
    return rc;
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
        else if (WIFSIGNALED(status))
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
    reap(a);
    start_queued(a);
}

void alert_poll(alerter *a)
{
    if (a == NULL || (a->n_running == 0 && a->head == NULL))
        return;
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
            reap(a);
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
