/*
 * alert — runs the configured alert_command when a saga becomes FAILED
 * (needs attention), so an operator hears of it without watching.
 *
 * The command is started with posix_spawn (nng is not fork-safe), never
 * through a shell, as
 *
 *     alert_command SAGA_ID REASON
 *
 * with SAGA_ID, SAGA_TYPE and SAGA_REASON also in its environment, stdin
 * from /dev/null, stdout and stderr shared with sagad (its log), and no
 * other descriptor of sagad's. It runs on the engine thread and never
 * blocks it: at most max_running commands run at once; further alerts wait
 * in a bounded queue (ALERT_QUEUE_MAX) and beyond that are dropped with a
 * log line and a metric. alert_poll, called every engine round (at least
 * every 500 ms), reaps finished commands with waitpid(pid, WNOHANG) on
 * their own pids only (no SIGCHLD handler, no other child touched), logs
 * their exit status and starts queued ones.
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

#define ALERT_QUEUE_MAX 256

typedef struct alerter alerter;

/* command: an absolute path (copied). metrics may be NULL. NULL on OOM. */
alerter *alert_create(const char *command, int max_running, orch_metrics *metrics);
/* Engine thread: queues an alert and starts it if a slot is free. */
void alert_fire(alerter *a, const char *saga_id, const char *saga_type, const char *reason);
/* Engine thread: reaps finished commands, starts queued ones. */
void alert_poll(alerter *a);
/* Number of commands running now. */
int alert_running(const alerter *a);
/* Reaps what has finished, waiting up to wait_ms for the rest, then frees
 * (commands still running are left to finish on their own). Safe on NULL. */
void alert_destroy(alerter *a, int wait_ms);

#endif
