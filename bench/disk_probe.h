/*
 * disk_probe — what one small durable write costs on the file system under a
 * directory: the latency of a 4 KiB pwrite followed by fdatasync, where the
 * write overwrites a block inside the file (a WAL reused from its start),
 * where it appends (a new or growing WAL; the sync then writes the file's
 * size too), and where it overwrites after a pause longer than a clock tick.
 *
 * The pause matters because a write changes the file's mtime only when the
 * kernel's coarse clock has ticked since the last one (every 4 ms at
 * HZ=250). On ext4 without a journal, fdatasync then also writes the
 * inode's block (the changed time rides along with the inode's dirty
 * buffer), one more synchronous write; with a journal it does not. A
 * service committing a few hundred times a second pays it on nearly every
 * commit, so the paused figure is the one a saga's syncs come near when
 * sagas run one at a time; back to back writes show the disk alone.
 *
 * saga-bench prints it beside its figures: every sync a saga waits for costs
 * about this much, it moves about 2x from day to day on the development
 * machines, and some targets only apply on a day when it is near a value
 * ("fdatasync p50 near 200 µs").
 *
 * Invariants: the kinds of write alternate, so that the disk's drift during
 * the probe hits them alike; the probe's file is created in the
 * directory and removed before disk_probe returns, whether it succeeded or
 * not.
 */
#ifndef SAGA_BENCH_DISK_PROBE_H
#define SAGA_BENCH_DISK_PROBE_H

#include <stddef.h>

typedef struct {
    int samples; /* of each kind */
    double overwrite_p50_us, overwrite_p90_us;
    double append_p50_us, append_p90_us;
    double paused_p50_us, paused_p90_us; /* overwrite after DISK_PROBE_PAUSE_MS */
} disk_probe_result;

#define DISK_PROBE_PAUSE_MS 10 /* longer than a tick at HZ >= 100 */

/* Measures `samples` (1..100000) writes of each kind in dir (the paused ones
 * take samples x DISK_PROBE_PAUSE_MS). Returns 0, or -1 with a message
 * naming the failed call in err. */
int disk_probe(const char *dir, int samples, disk_probe_result *out, char *err, size_t errlen);

#endif
