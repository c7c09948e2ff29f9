/* crashpoint — see crashpoint.h. */
#include "crashpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char armed_name[128];
static long armed_at = 1;
static atomic_long hits;

void crashpoint_init(void)
{
    const char *spec = getenv("SAGA_CRASH_POINT");
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
    log_warn("crash point '%s' reached: killing the process", name);
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
