/*
 * daemon_notify — see daemon_notify.h. A thin wrapper over libsystemd's
 * sd_notify, kept in its own library (saga_daemon_notify) so that only the
 * daemons link libsystemd, never libsaga_participant or sagactl.
 */
#include "daemon_notify.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"

static void notify(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0)
        log_warn("could not notify the service manager (%s): %s", state, strerror(-rc));
}

void daemon_notify_ready(const char *status)
{
    char state[512];
    snprintf(state, sizeof state, "READY=1\nSTATUS=%s", status != NULL ? status : "serving");
    notify(state);
}

void daemon_notify_stopping(void)
{
    notify("STOPPING=1\nSTATUS=stopping");
}
