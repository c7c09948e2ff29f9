/* cpu_sched — see cpu_sched.h. */
#define _GNU_SOURCE /* SCHED_BATCH */
#include "cpu_sched.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

int cpu_scheduling_parse(const char *name)
{
    if (strcmp(name, "batch") == 0)
        return CPU_SCHED_BATCH;
    if (strcmp(name, "normal") == 0)
        return CPU_SCHED_NORMAL;
    return -1;
}

const char *cpu_scheduling_name(enum cpu_scheduling s)
{
    return s == CPU_SCHED_BATCH ? "batch" : "normal";
}

int cpu_scheduling_apply(enum cpu_scheduling s, char *err, size_t errlen)
{
    struct sched_param none = {.sched_priority = 0};
    if (s != CPU_SCHED_BATCH)
        return 0;
    if (sched_setscheduler(0, SCHED_BATCH, &none) != 0) {
        snprintf(err, errlen, "cannot set the batch CPU scheduling policy: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int cpu_scheduling_current(void)
{
    int p = sched_getscheduler(0);
    return p == SCHED_BATCH ? CPU_SCHED_BATCH : p == SCHED_OTHER ? CPU_SCHED_NORMAL : -1;
}
