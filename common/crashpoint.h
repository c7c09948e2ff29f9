/*
 * crashpoint — named places where a test can make a process die abruptly.
 *
 * Off by default. A test sets SAGA_CRASH_POINT=NAME (or NAME:N to die at the
 * Nth hit) in the environment of the process it starts; when execution
 * reaches crashpoint("NAME") that many times, the process is killed with
 * SIGKILL on the spot: no atexit handlers, no flushing. That is a process
 * crash, not a power cut: the kernel keeps every write() the process made,
 * synced or not. With SAGA_TEST_VFS=powerloss[:SEED] as well, SQLite's files
 * go through the power-loss VFS (common/powerloss_vfs.h) and the crash point
 * first rolls them back to their last fsync (tearing the last write), so
 * the process dies as in a power cut. Names in use are listed where they
 * are hit; grep for crashpoint(" to find them all.
 */
#ifndef SAGA_CRASHPOINT_H
#define SAGA_CRASHPOINT_H

/* Reads SAGA_CRASH_POINT and SAGA_TEST_VFS once; call before any thread
 * starts and before any database is opened. A SAGA_TEST_VFS value it cannot
 * honour, or SAGA_TEST_VFS without SAGA_CRASH_POINT, ends the process
 * (status 2) with the reason logged. */
void crashpoint_init(void);
/* Dies here if this is the armed point and its hit count is reached. */
void crashpoint(const char *name);

#endif
