/* wal_batch_vfs — see wal_batch_vfs.h. */
#include "wal_batch_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "vfs_shim.h"

#define RUN_FIRST_CAP (64 * 1024) /* a run's first buffer; doubled up to WAL_BATCH_MAX */

/* The unix VFS writes at most 0x1ffff bytes per system call and reports a
 * write it cannot finish that way as SQLITE_FULL (os_unix.c, seekAndWriteFd:
 * SQLite's own writes are pages, never that large), so a run goes down in
 * pieces no larger. */
#define WRITE_PIECE (64 * 1024)

/* The index of the WAL write lock among the WAL index's locks (SQLite's
 * wal.c WAL_WRITE_LOCK; byte 120 of the -shm file). */
#define SHM_WAL_WRITE_LOCK 0

typedef struct wb_file {
    vfs_shim_file shim;
    /* A WAL file and the main database file of the same connection point to
     * each other while both are open (invariant 4 of wal_batch_vfs.h); a
     * WAL gathers writes only while linked (invariant 6). */
    struct wb_file *wal;
    struct wb_file *db;
    /* The pending run of a WAL file: len bytes for offset off. */
    unsigned char *run;
    size_t len, cap;
    sqlite3_int64 off;
    /* A flush failed during this write-lock tenure with failed_rc:
     * [lost_from, lost_to) never reached the file though SQLite wrote it
     * (invariant 5). */
    int failed_rc;
    sqlite3_int64 lost_from, lost_to;
} wb_file;

#define BELOW(f) VFS_SHIM_BELOW(f)

static sqlite3_vfs wb_vfs;
static sqlite3_io_methods wb_methods; /* filled once, before registering */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int registered;
static atomic_uint_fast64_t writes_asked, writes_made;

/* Hands the pending run to the lower file, in writes of at most
 * WRITE_PIECE bytes. The run is gone whatever the outcome; on failure the
 * file remembers what was lost and refuses writes, syncs and reads of it
 * until the write lock goes (invariant 5): SQLite may absorb the error in a
 * savepoint (an SQLITE_FULL rolls back only the statement) and believes the
 * lost frames written, so the transaction must not reach a commit. The
 * lower file's error is kept (a full disk stays SQLITE_FULL, which sagad
 * waits out rather than stopping). */
static int flush_run(wb_file *f)
{
    size_t len = f->len;
    f->len = 0;
    int rc = SQLITE_OK;
    for (size_t done = 0; done < len && rc == SQLITE_OK; done += WRITE_PIECE) {
        size_t n = len - done < WRITE_PIECE ? len - done : WRITE_PIECE;
        atomic_fetch_add_explicit(&writes_made, 1, memory_order_relaxed);
        rc = BELOW(f)->pMethods->xWrite(BELOW(f), f->run + done, (int)n,
                                        f->off + (sqlite3_int64)done);
    }
    if (rc == SQLITE_OK)
        return SQLITE_OK;
    sqlite3_int64 to = f->off + (sqlite3_int64)len;
    int failed = f->failed_rc != SQLITE_OK;
    f->lost_from = failed && f->lost_from < f->off ? f->lost_from : f->off;
    f->lost_to = failed && f->lost_to > to ? f->lost_to : to;
    if (!failed)
        f->failed_rc = rc;
    return rc;
}

/* The write lock is released: a new transaction starts from what the file
 * holds. */
static void forget_failure(wb_file *f)
{
    f->failed_rc = SQLITE_OK;
}

/* Room for n more bytes in the run; 0 when the buffer cannot grow. */
static int run_room(wb_file *f, size_t n)
{
    if (f->len + n <= f->cap)
        return 1;
    size_t cap = f->cap ? f->cap : RUN_FIRST_CAP;
    while (cap < f->len + n)
        cap *= 2;
    if (cap > WAL_BATCH_MAX)
        return 0;
    unsigned char *grown = realloc(f->run, cap);
    if (grown == NULL)
        return 0;
    f->run = grown;
    f->cap = cap;
    return 1;
}

static int wb_write(sqlite3_file *file, const void *buf, int n, sqlite3_int64 off)
{
    wb_file *f = (wb_file *)file;
    if (f->db == NULL) /* not a WAL, or one not gathered: see wb_open */
        return BELOW(f)->pMethods->xWrite(BELOW(f), buf, n, off);
    if (f->failed_rc != SQLITE_OK)
        return f->failed_rc; /* the transaction lost frames: it must not go on */
    atomic_fetch_add_explicit(&writes_asked, 1, memory_order_relaxed);
    int extends = f->len > 0 && off == f->off + (sqlite3_int64)f->len;
    if (!extends) {
        int rc = flush_run(f); /* invariant 1: what was written before goes first */
        if (rc != SQLITE_OK)
            return rc;
        f->off = off;
    }
    if (!run_room(f, (size_t)n)) {
        /* Too large for one run, or no memory: written as it comes. */
        int rc = flush_run(f);
        if (rc != SQLITE_OK)
            return rc;
        atomic_fetch_add_explicit(&writes_made, 1, memory_order_relaxed);
        return BELOW(f)->pMethods->xWrite(BELOW(f), buf, n, off);
    }
    memcpy(f->run + f->len, buf, (size_t)n);
    f->len += (size_t)n;
    return SQLITE_OK;
}

static int wb_read(sqlite3_file *file, void *buf, int n, sqlite3_int64 off)
{
    wb_file *f = (wb_file *)file;
    if (f->len > 0 && off < f->off + (sqlite3_int64)f->len && off + n > f->off) {
        int rc = flush_run(f); /* invariant 2 */
        if (rc != SQLITE_OK)
            return rc;
    }
    if (f->failed_rc != SQLITE_OK && off < f->lost_to && off + n > f->lost_from)
        return SQLITE_IOERR_READ; /* those bytes never reached the file */
    return BELOW(f)->pMethods->xRead(BELOW(f), buf, n, off);
}

static int wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    wb_file *f = (wb_file *)file;
    int rc = flush_run(f);
    return rc != SQLITE_OK ? rc : BELOW(f)->pMethods->xTruncate(BELOW(f), size);
}

static int wb_sync(sqlite3_file *file, int flags)
{
    wb_file *f = (wb_file *)file;
    int rc = flush_run(f); /* invariant 3 */
    if (rc == SQLITE_OK)
        rc = f->failed_rc; /* nothing of this transaction may count as written */
    return rc != SQLITE_OK ? rc : BELOW(f)->pMethods->xSync(BELOW(f), flags);
}

static int wb_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    wb_file *f = (wb_file *)file;
    int rc = flush_run(f);
    return rc != SQLITE_OK ? rc : BELOW(f)->pMethods->xFileSize(BELOW(f), size);
}

/* On the main database file: the connection gives up the WAL write lock,
 * so its WAL must hold nothing back any more (invariant 4). */
static int wb_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    wb_file *f = (wb_file *)file;
    if ((flags & SQLITE_SHM_UNLOCK) && f->wal != NULL && offset <= SHM_WAL_WRITE_LOCK &&
        SHM_WAL_WRITE_LOCK < offset + n) {
        /* Only frames no commit owns can be pending: a failure loses nothing. */
        if (f->wal->len > 0 && flush_run(f->wal) != SQLITE_OK)
            log_warn("a rolled-back transaction's WAL frames could not be written (harmless)");
        forget_failure(f->wal);
    }
    return BELOW(f)->pMethods->xShmLock(BELOW(f), offset, n, flags);
}

static int wb_close(sqlite3_file *file)
{
    wb_file *f = (wb_file *)file;
    int rc = flush_run(f);
    if (f->db != NULL)
        f->db->wal = NULL;
    if (f->wal != NULL) {
        int wal_rc = flush_run(f->wal);
        f->wal->db = NULL;
        if (rc == SQLITE_OK)
            rc = wal_rc;
    }
    free(f->run);
    int below_rc = BELOW(f)->pMethods->xClose(BELOW(f));
    return rc != SQLITE_OK ? rc : below_rc;
}

static int wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    wb_file *f = (wb_file *)file;
    memset(f, 0, sizeof *f);
    int rc = vfs_shim_open_below(vfs, name, file, (int)sizeof(wb_file), flags, out_flags);
    if (rc != SQLITE_OK)
        return rc;
    file->pMethods = &wb_methods;
    if ((flags & SQLITE_OPEN_WAL) && name != NULL) {
        /* Batched only with its database file's link (invariant 4) and on
         * power-safe files: without POWERSAFE_OVERWRITE SQLite pads a
         * commit and writes the padding's end after the sync (wal.c,
         * walWriteToLog), which would stay buffered past publishing. */
        sqlite3_file *db = sqlite3_database_file_object(name);
        if (db != NULL && db->pMethods == &wb_methods &&
            (db->pMethods->xDeviceCharacteristics(db) & SQLITE_IOCAP_POWERSAFE_OVERWRITE)) {
            f->db = (wb_file *)db;
            f->db->wal = f;
        }
    }
    return SQLITE_OK;
}

static void register_once(void)
{
    sqlite3_vfs *lower = sqlite3_vfs_find(NULL);
    if (lower == NULL || lower->iVersion < 2) {
        log_warn("SQLite's default VFS is too old to batch WAL writes over it");
        return;
    }
    vfs_shim_forwarding_methods(&wb_methods);
    wb_methods.xClose = wb_close;
    wb_methods.xRead = wb_read;
    wb_methods.xWrite = wb_write;
    wb_methods.xTruncate = wb_truncate;
    wb_methods.xSync = wb_sync;
    wb_methods.xFileSize = wb_file_size;
    wb_methods.xShmLock = wb_shm_lock;
    vfs_shim_init(&wb_vfs, lower, WAL_BATCH_VFS_NAME, (int)sizeof(wb_file), wb_open);
    registered = sqlite3_vfs_register(&wb_vfs, 0) == SQLITE_OK;
    if (!registered)
        log_warn("cannot register the SQLite VFS %s: WAL writes are not batched",
                 WAL_BATCH_VFS_NAME);
}

const char *wal_batch_vfs(void)
{
    pthread_once(&once, register_once);
    return registered ? WAL_BATCH_VFS_NAME : NULL;
}

void wal_batch_vfs_counts(uint64_t *asked, uint64_t *made)
{
    *asked = atomic_load_explicit(&writes_asked, memory_order_relaxed);
    *made = atomic_load_explicit(&writes_made, memory_order_relaxed);
}
