/*
 * bench.h — what saga_bench.c lends the other files of bench/: its list of
 * child processes (started with bench_spawn; every one is killed when
 * saga-bench exits, on failure too), its progress notes on stderr, and its
 * per-process CPU reading.
 */
#ifndef SAGA_BENCH_H
#define SAGA_BENCH_H

#include <sys/types.h>

/* Starts argv[0] with stdout and stderr on out_fd, tracked (below); exits
 * saga-bench when it cannot. */
pid_t bench_spawn(char *const argv[], int out_fd);
/* 0 once url accepts a dial, -1 after timeout_ms. */
int bench_wait_dial(const char *url, int timeout_ms);
/* pid is killed (SIGKILL) at exit unless bench_untrack(pid) came first. */
void bench_track(pid_t pid);
void bench_untrack(pid_t pid);
/* "saga-bench: [elapsed] ..." on stderr. */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* utime + stime of pid in seconds (0 when gone). */
double bench_proc_cpu(pid_t pid);
/* A TCP port free on 127.0.0.1 just now, or -1. */
int bench_free_port(void);

#endif
