/* wal_checkpointer — see wal_checkpointer.h. */
#include "wal_checkpointer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db_files.h"
#include "log.h"
#include "util.h"

struct wal_checkpointer {
    sqlite3 *writer; /* the connection whose WAL hook this is */
    sqlite3 *db;     /* its own connection to the same file */
    const char *name;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int due;      /* a pass is asked for (under mu) */
    int stop;     /* wal_checkpointer_stop is waiting for the thread (under mu) */
    int asked_at; /* log size in frames at the last request; writer's thread only */
    /* Growing ahead (wal_checkpointer.h); the writer's thread only. */
    int grow;            /* synchronous=FULL: commits sync, so appends cost */
    int frames;          /* the log's end in frames, at the writer's last commit */
    int64_t frame_bytes; /* a frame: the page and its 24-byte header */
    int64_t file_bytes;  /* the log file's size, as last seen or grown to */
    int wal_fd;          /* -1 until first needed */
    char *wal_path;
};

#define WAL_HEADER_BYTES       32
#define WAL_FRAME_HEADER_BYTES 24

static void *checkpointer_main(void *arg)
{
    wal_checkpointer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->due && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        c->due = 0;
        pthread_mutex_unlock(&c->mu);
        /* SQLITE_BUSY: the writer's own pass is running; nothing to do. */
        int rc = sqlite3_wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_warn("%s: background checkpoint: %s", c->name, sqlite3_errmsg(c->db));
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Runs in the writer's thread after each commit, with the log's size. */
static int wal_hook(void *arg, sqlite3 *db, const char *schema, int frames)
{
    wal_checkpointer *c = arg;
    if (frames < c->frames)
        c->file_bytes = 0; /* the log restarted (or was truncated): look at the file again */
    c->frames = frames;
    if (frames < c->asked_at)
        c->asked_at = 0; /* the log was restarted from its start */
    if (frames >= WAL_CKPT_INLINE_FRAMES) {
        int rc = sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            log_warn("%s: checkpoint: %s", c->name, sqlite3_errmsg(db));
    } else if (frames - c->asked_at >= WAL_CKPT_FRAMES) {
        c->asked_at = frames;
        pthread_mutex_lock(&c->mu);
        c->due = 1;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

wal_checkpointer *wal_checkpointer_start(sqlite3 *writer, const char *path, int synchronous_full,
                                         const char *name, char *err, size_t errlen)
{
    wal_checkpointer *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->writer = writer;
    c->name = name;
    c->wal_fd = -1;
    c->grow = synchronous_full;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(writer, "PRAGMA page_size", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        c->frame_bytes = sqlite3_column_int64(q, 0) + WAL_FRAME_HEADER_BYTES;
    sqlite3_finalize(q);
    if (c->frame_bytes <= WAL_FRAME_HEADER_BYTES) {
        snprintf(err, errlen, "checkpointer: cannot read the page size");
        free(c);
        return NULL;
    }
    if ((c->wal_path = util_asprintf("%s-wal", path)) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | DBF_SQLITE_OPEN_FLAGS, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "checkpointer: %s", c->db ? sqlite3_errmsg(c->db) : "out of memory");
        goto fail;
    }
    /* Its passes sync as the writer's would; reading the journal mode makes
     * the connection open the log. */
    if (sqlite3_exec(c->db, synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(c->db, "PRAGMA journal_mode", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "checkpointer: %s", sqlite3_errmsg(c->db));
        goto fail;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        goto fail_thread;
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        goto fail_thread;
    }
    if (pthread_create(&c->thread, NULL, checkpointer_main, c) != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        goto fail_thread;
    }
    sqlite3_wal_hook(writer, wal_hook, c);
    return c;
fail_thread:
    snprintf(err, errlen, "cannot start the checkpointer thread");
fail:
    sqlite3_close(c->db);
    free(c->wal_path);
    free(c);
    return NULL;
}

void wal_checkpointer_stop(wal_checkpointer *c)
{
    if (c == NULL)
        return;
    sqlite3_wal_hook(c->writer, NULL, NULL);
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    if (sqlite3_close(c->db) != SQLITE_OK)
        log_error("%s: close checkpointer: %s", c->name, sqlite3_errmsg(c->db));
    if (c->wal_fd >= 0)
        close(c->wal_fd);
    free(c->wal_path);
    free(c);
}

/* Appends zeros to the log file from its size up to `to`; 0 or -1 (errno). */
static int append_zeros(int fd, int64_t from, int64_t to)
{
    static const char zeros[64 * 1024];
    while (from < to) {
        size_t n = to - from < (int64_t)sizeof zeros ? (size_t)(to - from) : sizeof zeros;
        ssize_t w = pwrite(fd, zeros, n, from);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        from += w;
    }
    return 0;
}

void wal_checkpointer_writing(wal_checkpointer *c)
{
    if (c == NULL || !c->grow)
        return;
    int64_t end = WAL_HEADER_BYTES + (int64_t)c->frames * c->frame_bytes;
    int64_t bound = WAL_HEADER_BYTES + (int64_t)WAL_GROW_BOUND * c->frame_bytes;
    if (end + WAL_GROW_MARGIN <= c->file_bytes || c->file_bytes >= bound)
        return;
    if (c->wal_fd < 0 && (c->wal_fd = open(c->wal_path, O_WRONLY | O_CLOEXEC)) < 0) {
        log_warn("%s: cannot open %s to grow it ahead: %s", c->name, c->wal_path, strerror(errno));
        c->grow = 0;
        return;
    }
    /* Its real size: another process (a replica) may have grown it. */
    struct stat st;
    if (fstat(c->wal_fd, &st) != 0)
        return;
    c->file_bytes = st.st_size;
    if (end + WAL_GROW_MARGIN <= c->file_bytes || c->file_bytes >= bound)
        return;
    int64_t to = end + WAL_GROW_CHUNK < bound ? end + WAL_GROW_CHUNK : bound;
    if (append_zeros(c->wal_fd, c->file_bytes, to) != 0) {
        log_warn("%s: cannot grow %s ahead: %s; its commits append instead", c->name, c->wal_path,
                 strerror(errno));
        c->grow = 0;
        return;
    }
    c->file_bytes = to;
}
