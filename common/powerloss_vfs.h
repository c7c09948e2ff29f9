/*
 * powerloss_vfs — a test-only SQLite VFS that can cut the power.
 *
 * A SIGKILL keeps the kernel's page cache: every write() the process made
 * reaches the disk later, synced or not, so a test that only SIGKILLs cannot
 * see a missing or misplaced fsync. This VFS wraps the default (unix) one and
 * remembers, per file, every change made since that file's last successful
 * xSync. powerloss_vfs_cut() then puts each file back as it was at its last
 * sync, as a power cut would leave the disk, and the caller kills the process.
 *
 * What it models:
 *   - a write, truncate or size hint not followed by an xSync of the same
 *     file is lost (an xSync of one file makes only that file durable, as
 *     fsync does; any connection's xSync counts, since fsync is per inode);
 *   - a torn write: of the most recent unsynced write (of all files), a
 *     prefix of whole 512-byte disk sectors survives and the rest is lost
 *     (the prefix length comes from the seed; it may be empty, never the
 *     whole write). Nothing outside a written range changes, which is what
 *     the unix VFS promises SQLite (SQLITE_IOCAP_POWERSAFE_OVERWRITE);
 *   - the WAL index (<db>-shm, memory-mapped, never synced) is deleted:
 *     SQLite rebuilds it from the WAL when the database is next opened.
 * What it does not model (see "How we test correctness" in README.md):
 *   - directory entries: a file created or deleted since its directory was
 *     last synced keeps existing or stays deleted;
 *   - a disk that reorders or drops writes it claimed to have synced, or
 *     corrupts sectors other than the torn one;
 *   - the power cut of other processes: only the calling process's files are
 *     rolled back (each process is a machine of its own).
 * What a file held when this process first opened it counts as synced.
 *
 * Why compiled into the shipped programs rather than a test-only build: the
 * tests must run the very binaries that ship, as the crash points do
 * (common/crashpoint.h). The module is inert unless SAGA_TEST_VFS asks for
 * it (crashpoint_init reads it); no production code path names it, and the
 * store and the participant runtime open their databases with the default
 * VFS, which this one becomes only under that variable.
 *
 * Invariants: one process-wide mutex serializes every tracked change with
 * its bookkeeping, so a change is either on record (and undone by a cut) or
 * not made yet; the cut takes the mutex and never gives it back, so no
 * thread writes after the files were restored and before the process dies.
 */
#ifndef SAGA_POWERLOSS_VFS_H
#define SAGA_POWERLOSS_VFS_H

#include <stddef.h>
#include <stdint.h>

#define POWERLOSS_VFS_NAME "powerloss"
#define POWERLOSS_SECTOR   512

/*
 * Registers the VFS as SQLite's default; tear_seed picks how much of the
 * last write a cut keeps. Call before any database is opened. 0 on success
 * (also when already installed), -1 if SQLite refused.
 */
int powerloss_vfs_install(uint64_t tear_seed);

/*
 * Reads SAGA_TEST_VFS ("powerloss" or "powerloss:SEED"): 0 when unset or
 * empty, 1 when installed, -1 with a reason in err when the value is not
 * understood or the VFS could not be installed.
 */
int powerloss_vfs_install_from_env(char *err, size_t errlen);

/* 1 once installed. */
int powerloss_vfs_active(void);

/*
 * The power cut: restores every tracked file to its last synced contents
 * (keeping a torn prefix of the last write) and deletes each database's
 * -shm. Every later tracked change blocks forever: the caller must end the
 * process (SIGKILL) right after. A no-op when the VFS is not installed.
 */
void powerloss_vfs_cut(void);

#endif
