/* crashpoint — see crashpoint.h. */
#include "crashpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "powerloss_vfs.h"

static char armed_name[128];
static long armed_at = 1;
static atomic_long hits;

void crashpoint_init(void)
{
    char err[256];
    const char *spec = getenv("SAGA_CRASH_POINT");
    const char *vfs_spec = getenv("SAGA_TEST_VFS");
    if (vfs_spec != NULL && *vfs_spec != '\0' && (spec == NULL || *spec == '\0')) {
        /* Without a crash point the VFS would only keep every unsynced
         * write's old bytes in memory: never in a process that is not a
         * crash test, whatever its environment says. */
        log_error("SAGA_TEST_VFS is set without SAGA_CRASH_POINT: refusing to run (tests only)");
        exit(2);
    }
    int vfs = powerloss_vfs_install_from_env(err, sizeof err);
    if (vfs < 0) {
        /* A test asked for a power cut it would not get: it must not pass
         * as if it had been proved. */
        log_error("%s", err);
        exit(2);
    }
    if (vfs > 0)
        log_warn("power-loss VFS active: a crash point also loses every unsynced write");
    if (spec == NULL || *spec == '\0')
        return;
    strncpy(armed_name, spec, sizeof armed_name - 1);
    char *colon = strchr(armed_name, ':');
    if (colon) {
        *colon = '\0';
        armed_at = strtol(colon + 1, NULL, 10);
        if (armed_at < 1)
            armed_at = 1;
    }
    log_warn("crash point '%s' armed at hit %ld", armed_name, armed_at);
}

void crashpoint(const char *name)
{
    if (armed_name[0] == '\0' || strcmp(name, armed_name) != 0)
        return;
    if (atomic_fetch_add(&hits, 1) + 1 < armed_at)
        return;
    int power_cut = powerloss_vfs_active();
    log_warn("crash point '%s' reached: %s", name,
             power_cut ? "cutting the power, then killing the process" : "killing the process");
    powerloss_vfs_cut(); /* a no-op without the VFS */
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
