/*
 * wal_checkpointer — SQLite WAL checkpoints on a thread of their own, for a
 * database with one writing connection (sagad's store, a participant's).
 *
 * Why: SQLite's autocheckpoint runs inside whichever COMMIT crosses 1000 WAL
 * frames. A checkpoint writes every page changed since the last one back
 * into the database file and fsyncs it; in a large database those pages are
 * many and scattered, so an inline checkpoint held the writer (a whole
 * round of sagad, a whole batch of a participant) for tens of milliseconds.
 *
 * How: a second connection to the same file, on its own thread, runs a
 * PASSIVE checkpoint each time the writer's log has grown by
 * WAL_CKPT_FRAMES; it copies what no reader needs and never waits for the
 * writer. The log restarts from its start only when a write begins on a
 * fully copied log, which background passes rarely leave under a steady
 * load, so once the log holds WAL_CKPT_INLINE_FRAMES the writer copies the
 * (by then small) rest itself, as the autocheckpoint would: the log stays
 * bounded. This replaces the writer's autocheckpoint (sqlite3_wal_hook).
 *
 * Durability is unchanged: a commit is durable once its WAL frames are
 * synced; a checkpoint only moves committed pages, with the same syncs as
 * the writer's own would (the checkpointer uses the writer's synchronous).
 *
 * The log's file grows ahead of the writer (synchronous=FULL only). A
 * commit that appends to the file makes its fdatasync also write (or, on a
 * journaled file system, journal) the file's new size and blocks, about
 * 1.5x the sync of a commit that overwrites (measured here: 449 against
 * 300 us). A log that has been
 * restarted is overwritten from its start, but every new log (each start
 * of the program) and every log still growing to its bound appends. So,
 * at the start of each write transaction, while the writer holds the write
 * lock, zeros are appended once the log's end comes within
 * WAL_GROW_MARGIN of the file's end, up to WAL_GROW_BOUND frames. Zeros
 * past the last frame are what SQLite's recovery stops at (a frame with
 * the wrong salt), so they never change what the log holds; they are
 * written under the write lock because another process sharing the file
 * (a participant's replica) appends frames only under that lock. They are
 * not synced here: the next commit's fdatasync writes them back with its
 * own frames, once per WAL_GROW_CHUNK.
 */
#ifndef SAGA_WAL_CHECKPOINTER_H
#define SAGA_WAL_CHECKPOINTER_H

#include <sqlite3.h>
#include <stddef.h>

#define WAL_CKPT_FRAMES        1000      /* a background pass per this many new frames */
#define WAL_CKPT_INLINE_FRAMES 8192      /* from this log size on, the writer copies the rest */
#define WAL_GROW_MARGIN        (1 << 20) /* bytes past the log's end kept written ahead */
#define WAL_GROW_CHUNK         (2 << 20) /* bytes appended at once */
#define WAL_GROW_BOUND         (WAL_CKPT_INLINE_FRAMES + 512) /* frames: no growing past */

typedef struct wal_checkpointer wal_checkpointer;

/*
 * Opens a second connection to path (a database in WAL mode whose writing
 * connection is writer), starts the thread and installs the WAL hook on
 * writer. name prefixes log lines ("store", "payment"). NULL with a reason in
 * err.
 */
wal_checkpointer *wal_checkpointer_start(sqlite3 *writer, const char *path, int synchronous_full,
                                         const char *name, char *err, size_t errlen);
/* Removes the hook, joins the thread and closes its connection; call it
 * before closing the writer, whose close is then the last one. NULL: no-op. */
void wal_checkpointer_stop(wal_checkpointer *c);

/*
 * Call in the writer's thread right after each BEGIN IMMEDIATE (the write
 * lock held): grows the log's file ahead of its end when due (above). An
 * error is logged and ignored: the commit then appends, as without this.
 * NULL: no-op.
 */
void wal_checkpointer_writing(wal_checkpointer *c);

#endif
