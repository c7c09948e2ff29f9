/*
 * peers — the engines users would pick instead of sagad, measured by
 * saga-bench --peers on this machine beside our durable cluster (see
 * peers.c and docs/BENCHMARKS.md "Side by side with the peers").
 */
#ifndef SAGA_BENCH_PEERS_H
#define SAGA_BENCH_PEERS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct peer peer;

enum peer_kind { PEER_RESTATE, PEER_DBOS };

typedef struct {
    double secs;
    uint64_t completed, bad;
    double rate;          /* completed sagas/s */
    double p50, p99, max; /* ms, sagas finished in the measured window */
    double cpu_ms;        /* CPU per completed saga, every process of the peer */
} peer_result;

/* Installs what the peers need when it is missing: the npm packages of
 * peers_dir/package.json (npm ci, into peers_dir/node_modules) and
 * PostgreSQL 15 (apt-get, as root). 0, or -1 with the reason in err. */
int peers_install(const char *peers_dir, char *err, size_t errlen);

/* Starts one peer in a new directory under tmp; NULL with the reason. */
peer *peer_start(enum peer_kind kind, const char *peers_dir, const char *tmp, char *err,
                 size_t errlen);
/* "Restate 1.7.12 (...)": what was measured, versions included. */
const char *peer_label(const peer *p);
/* What the peer syncs per step, by its defaults (for the table). */
const char *peer_durability(const peer *p);
/* Closed loop at conc in flight for warm + secs, measured over secs. */
int peer_run(peer *p, int conc, double warm, double secs, peer_result *r);
/* Every process of the peer (its children included), into pids; how many. */
size_t peer_pids(const peer *p, pid_t *pids, size_t max);
/* Stops (SIGSTOP) or resumes (SIGCONT) every process of the peer, so that
 * an idle engine's background work (timers, flushes, checkpoints) does not
 * compete with the system being measured on a machine of two cores. */
void peer_pause(peer *p, int paused);
/* Resumes every peer started and not stopped (at exit: a paused process
 * left behind would never see its parent die). */
void peers_resume_all(void);
/* Runs n sagas one at a time (the caller's strace counts around it). */
int peer_run_sequential(peer *p, int n);
void peer_stop(peer *p);

/* Syncs (fsync, fdatasync, sync_file_range) made by pids and their threads
 * while run(arg) runs, counted with strace -f -c; -1 when strace cannot. */
long count_syncs(const pid_t *pids, size_t n, void (*run)(void *), void *arg, const char *log_dir);

#endif
