/*
 * wal_syncer — makes a SQLite database's commits durable from a thread of
 * its own, so that the writing thread goes on while they sync.
 *
 * Why (flush pipelining): with synchronous=FULL a commit returns only once
 * its WAL frames are on disk, so the writer (sagad's engine thread) does
 * nothing during each fdatasync. Its writer instead commits with
 * synchronous=NORMAL (in WAL mode: the log is synced only by checkpoints,
 * and the database stays consistent through a power cut) and asks this
 * thread for a sync after each round; it applies the next round meanwhile,
 * and acts on a round (sends, answers) only once a sync that began after
 * the round's commit has finished.
 *
 * How: a second connection to the same file; its handle on the WAL file
 * (SQLITE_FCNTL_JOURNAL_POINTER) is synced through the VFS, so the power-loss
 * VFS of the tests sees the sync as it sees SQLite's own. An fdatasync of
 * any handle makes every write made to the file before it durable.
 *
 * Tickets: wal_syncer_request() returns a ticket; the ticket is synced once
 * a sync started after the request has returned. Tickets only grow: a sync
 * that covers ticket t covers every earlier one. on_synced (optional) runs
 * on the syncer's thread after each sync: it must only wake the owner.
 *
 * Errors: a failed sync is final (after a failed fsync the kernel may have
 * dropped the dirty pages, so a retry could report success for data that is
 * gone): every later wait returns -1, and the owner must stop.
 */
#ifndef SAGA_WAL_SYNCER_H
#define SAGA_WAL_SYNCER_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wal_syncer wal_syncer;

/* Opens a second connection to path (a database in WAL mode) and starts the
 * thread. NULL with a reason in err. */
wal_syncer *wal_syncer_start(const char *path, const char *name, void (*on_synced)(void *arg),
                             void *arg, char *err, size_t errlen);
/* Joins the thread (after a last sync of what was asked for) and closes
 * its connection; call before closing the writer. NULL: no-op. */
void wal_syncer_stop(wal_syncer *s);

/* Asks for a sync of everything committed so far; the ticket to wait for. */
uint64_t wal_syncer_request(wal_syncer *s);
/* 1 once ticket is synced (or the syncer failed: wal_syncer_wait says). */
int wal_syncer_done(wal_syncer *s, uint64_t ticket);
/* Blocks until ticket is synced: 0, or -1 when a sync failed. */
int wal_syncer_wait(wal_syncer *s, uint64_t ticket);
/* 1 once a sync has failed (logged with the reason). */
int wal_syncer_failed(wal_syncer *s);

#endif
