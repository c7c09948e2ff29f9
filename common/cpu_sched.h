/*
 * cpu_sched — the CPU scheduling policy sagad and the services run under.
 *
 * "batch" (Linux SCHED_BATCH, the default) tells the scheduler these are
 * throughput-bound, non-interactive threads: a thread they wake does not
 * preempt the thread that woke it. A step crosses several threads in two
 * processes; under the default policy every hand-off could preempt the
 * sender halfway through a round, and on a small machine that ping-pong,
 * not the work, was most of the CPU (docs/BENCHMARKS.md). Priorities and
 * nice values are untouched; no privilege is needed. "normal" leaves the
 * policy the process was started with (SCHED_OTHER unless its launcher,
 * e.g. systemd's CPUSchedulingPolicy=, chose another).
 *
 * The policy is set on the calling thread; threads it creates afterwards
 * (nng's, the engine, the checkpointers) and child processes inherit it, so
 * programs set it first thing, before any library starts a thread.
 */
#ifndef SAGA_CPU_SCHED_H
#define SAGA_CPU_SCHED_H

#include <stddef.h>

enum cpu_scheduling { CPU_SCHED_NORMAL = 0, CPU_SCHED_BATCH = 1 };

/* "batch" or "normal" -> the enum; -1 for anything else. */
int cpu_scheduling_parse(const char *name);
const char *cpu_scheduling_name(enum cpu_scheduling s);
/* Applies s to the calling thread (normal: nothing to do). Returns 0, or -1
 * with the reason in err. */
int cpu_scheduling_apply(enum cpu_scheduling s, char *err, size_t errlen);
/* The calling thread's policy as the enum, or -1 when it is another one. */
int cpu_scheduling_current(void);

#endif
