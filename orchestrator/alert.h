/*
 * alert — runs the configured alert_command when a saga becomes FAILED
 * (needs attention), so an operator hears of it without watching.
 *
 * The command is started with posix_spawn (nng is not fork-safe: this is an
 * execve of the file itself, never through a shell, so nothing in its path
 * or arguments is interpreted), as
 *
 *     alert_command SAGA_ID REASON
 *
 * with an environment of its own, not sagad's: PATH=ALERT_PATH, SAGA_ID,
 * SAGA_TYPE and SAGA_REASON, nothing else. stdin is /dev/null, stdout and
 * stderr are shared with sagad (its log), no other descriptor of sagad's is
 * open in it, and it leads a process group of its own.
 *
 * Trust: right before each start, the file and every directory above it are
 * checked again with sec_check_trusted_path (config_load checked them at
 * start-up, but the file can change while sagad runs). A command that fails
 * the check is not run: logged at ERROR, counted as spawn_failed.
 *
 * Time limit: a command still running timeout_ms after it started has its
 * whole process group killed (SIGKILL), is logged at ERROR and counted as
 * timed_out. The pid is not reaped before the kill, so the group id cannot
 * have been reused. When sagad stops, commands still running after
 * alert_destroy's wait are killed the same way (nobody would enforce their
 * limit afterwards).
 *
 * It runs on the engine thread and never blocks it: at most max_running
 * commands run at once; further alerts wait in a bounded queue
 * (ALERT_QUEUE_MAX) and beyond that are dropped with a log line and a
 * metric. alert_poll, called every engine round (at least every 500 ms),
 * kills commands past their time limit, reaps finished ones with
 * waitpid(pid, WNOHANG) on their own pids only (no SIGCHLD handler, no other
 * child touched), logs their exit status and starts queued ones.
 *
 * An alert fires after the round that made the saga FAILED has committed,
 * once per transition to FAILED (a resumed saga that fails again alerts
 * again). It is best effort: an alert queued or running when sagad stops
 * is not repeated at the next start; `sagactl list --state FAILED` is the
 * durable record.
 */
#ifndef SAGA_ALERT_H
#define SAGA_ALERT_H

#include "orch_metrics.h"

#include <stdint.h>

#define ALERT_QUEUE_MAX 256
/* The command's whole search path: fixed, so sagad's own cannot leak in. */
#define ALERT_PATH "/usr/sbin:/usr/bin:/sbin:/bin"

typedef struct alerter alerter;

/* command: an absolute path (copied); timeout_ms: each command's time limit.
 * metrics may be NULL. NULL on OOM. */
alerter *alert_create(const char *command, int max_running, int64_t timeout_ms,
                      orch_metrics *metrics);
/* Engine thread: queues an alert and starts it if a slot is free. */
void alert_fire(alerter *a, const char *saga_id, const char *saga_type, const char *reason);
/* Engine thread: reaps finished commands, starts queued ones. */
void alert_poll(alerter *a);
/* Number of commands running now. */
int alert_running(const alerter *a);
/* Reaps what has finished, waiting up to wait_ms for the rest, kills the
 * process groups of those still running, then frees. Safe on NULL. */
void alert_destroy(alerter *a, int wait_ms);

#endif
