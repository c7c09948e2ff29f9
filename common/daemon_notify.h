/*
 * daemon_notify — tells a supervisor (systemd, Type=notify units in
 * packaging/systemd/) when the program is ready to serve and when it is
 * stopping, through sd_notify(3).
 *
 * Invariants:
 *   - READY=1 is sent only once the program answers on every socket it was
 *     asked to serve (for sagad: recovery done, admin API listening), so a
 *     unit ordered After= it never meets a dead address.
 *   - Without $NOTIFY_SOCKET (started by hand, by a test, by another
 *     supervisor) nothing is sent and nothing changes.
 *   - A failure to notify is logged and never stops the program: the
 *     supervisor's own timeout is what acts on a missing READY.
 */
#ifndef SAGA_DAEMON_NOTIFY_H
#define SAGA_DAEMON_NOTIFY_H

/* READY=1, with status as the unit's human-readable STATUS= line. */
void daemon_notify_ready(const char *status);
/* STOPPING=1: the program is shutting down in order. */
void daemon_notify_stopping(void);

#endif
