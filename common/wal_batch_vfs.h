/*
 * wal_batch_vfs — an SQLite VFS that writes a commit's WAL frames with one
 * system call per 64 KiB instead of two per page.
 *
 * Why: SQLite writes each WAL frame as two pwrite calls (its 24-byte header,
 * then the page), so a commit of 27 pages, sagad's at 64 sagas in flight,
 * is 54 system calls before its fdatasync. On this kind of virtual machine
 * a system call costs several microseconds of CPU, and at load the cluster
 * is CPU-bound: the calls were ~10% of sagad's CPU and ~17% of a
 * participant's (perf, 2026-12-03, docs/BENCHMARKS.md).
 *
 * How: a shim over the default VFS (over the power-loss VFS in tests, so a
 * power cut still sees every write). For a WAL file it keeps writes that
 * extend the pending run contiguously in a buffer (up to WAL_BATCH_MAX
 * bytes) and hands the run to the VFS below in writes of 64 KiB (the most
 * the unix VFS takes at once). Everything else passes straight through.
 *
 * Invariants (what makes it invisible to SQLite and to other connections):
 *   1. Bytes written are never reordered: a write that does not extend the
 *      pending run flushes the run first, then goes through.
 *   2. A read, truncate, size query or close of a WAL file flushes the run
 *      first, so this connection reads back what it wrote.
 *   3. xSync flushes before it syncs. With synchronous=FULL SQLite syncs
 *      the WAL at every commit before it publishes the commit's frames in
 *      the WAL index, so no other connection or process can see a frame
 *      that is still buffered. That is why only connections that sync each
 *      commit may use this VFS (the callers pass it only then).
 *   4. Nothing stays buffered once this connection gives up the WAL write
 *      lock (xShmLock unlocking WAL_WRITE_LOCK on its database file flushes
 *      the WAL run first): the frames of a transaction that spilled and then
 *      rolled back are written while the lock is still held, exactly as
 *      SQLite alone would, and never later over frames another connection
 *      or a replica process committed in the meantime.
 *   5. A failed flush drops the run and fails the call that flushed with
 *      the lower file's error; from then until the write lock is released
 *      every write and sync of that WAL fails the same way, and a read of
 *      the lost bytes fails: SQLite believes the lost frames written (a
 *      cache spill's) and may absorb the first error in a savepoint, so the
 *      transaction must never reach a commit. A run is never written twice
 *      or late.
 *   6. Batching needs the WAL linked to its database file (both opened
 *      through this VFS by one connection) and power-safe files
 *      (SQLITE_IOCAP_POWERSAFE_OVERWRITE, the unix VFS's default): without
 *      it SQLite writes the end of a commit's padding after its sync. Any
 *      other WAL passes straight through. Not for connections in exclusive
 *      locking mode (PRAGMA locking_mode=EXCLUSIVE), which end a write
 *      transaction without xShmLock: nothing here uses it.
 *
 * Threading: a file is used by one connection, which SQLite serializes;
 * the counters are atomic.
 */
#ifndef SAGA_WAL_BATCH_VFS_H
#define SAGA_WAL_BATCH_VFS_H

#include <stdint.h>

#define WAL_BATCH_VFS_NAME "saga-wal-batch"
#define WAL_BATCH_MAX      (1 << 20) /* bytes of one pending run */

/*
 * Registers the VFS over the current default one (once per process; the
 * power-loss VFS, when a test installed it, must be installed first).
 * Returns the name to pass to sqlite3_open_v2 for a connection that syncs
 * each commit, or NULL when it could not be registered: open with the
 * default VFS then (the same results, more system calls).
 */
const char *wal_batch_vfs(void);

/* Process-wide totals: WAL writes SQLite asked for, and writes made below. */
void wal_batch_vfs_counts(uint64_t *asked, uint64_t *made);

#endif
