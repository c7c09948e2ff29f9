/* wal_checkpointer — see wal_checkpointer.h. */
#include "wal_checkpointer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "db_files.h"
#include "log.h"

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
};

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
    free(c);
}
