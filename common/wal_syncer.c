/* wal_syncer — see wal_syncer.h. */
#include "wal_syncer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "db_files.h"
#include "log.h"

struct wal_syncer {
    sqlite3 *db; /* its own connection: its WAL handle is what gets synced */
    const char *name;
    void (*on_synced)(void *arg);
    void *arg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t asked; /* the thread waits for a request or stop */
    pthread_cond_t done;  /* waiters wait for a sync */
    int stop;             /* under mu */
    _Atomic uint64_t requested, synced;
    atomic_int failed;
};

/* Syncs the WAL file through the connection's handle on it (the VFS's
 * xSync: the power-loss VFS sees it). SQLITE_OK or the error. */
static int sync_wal(wal_syncer *s)
{
    sqlite3_file *f = NULL;
    for (int tries = 0; tries < 2; tries++) {
        if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) == SQLITE_OK &&
            f != NULL && f->pMethods != NULL)
            return f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
        /* Not open (yet): a read opens the log. */
        sqlite3_exec(s->db, "PRAGMA journal_mode", NULL, NULL, NULL);
    }
    return SQLITE_CANTOPEN;
}

static void *syncer_main(void *arg)
{
    wal_syncer *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && atomic_load(&s->synced) >= atomic_load(&s->requested))
            pthread_cond_wait(&s->asked, &s->mu);
        uint64_t target = atomic_load(&s->requested);
        if (atomic_load(&s->synced) >= target)
            break; /* stopping, and nothing left to sync */
        pthread_mutex_unlock(&s->mu);
        int rc = sync_wal(s);
        if (rc != SQLITE_OK && !atomic_load(&s->failed)) {
            log_error("%s: cannot sync the log: %s; nothing committed since the last sync may "
                      "be acted on",
                      s->name, sqlite3_errstr(rc));
            atomic_store(&s->failed, 1);
        }
        pthread_mutex_lock(&s->mu);
        atomic_store(&s->synced, target); /* waiters wake, and see `failed` */
        pthread_cond_broadcast(&s->done);
        pthread_mutex_unlock(&s->mu);
        if (s->on_synced)
            s->on_synced(s->arg);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

wal_syncer *wal_syncer_start(const char *path, const char *name, void (*on_synced)(void *arg),
                             void *arg, char *err, size_t errlen)
{
    wal_syncer *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->name = name;
    s->on_synced = on_synced;
    s->arg = arg;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | DBF_SQLITE_OPEN_FLAGS, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(s->db, "PRAGMA journal_mode", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "syncer: %s", s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        goto fail_thread;
    if (pthread_cond_init(&s->asked, NULL) != 0 || pthread_cond_init(&s->done, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        goto fail_thread;
    }
    if (pthread_create(&s->thread, NULL, syncer_main, s) != 0) {
        pthread_cond_destroy(&s->asked);
        pthread_cond_destroy(&s->done);
        pthread_mutex_destroy(&s->mu);
        goto fail_thread;
    }
    return s;
fail_thread:
    snprintf(err, errlen, "cannot start the syncer thread");
fail:
    sqlite3_close(s->db);
    free(s);
    return NULL;
}

void wal_syncer_stop(wal_syncer *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->asked);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->asked);
    pthread_cond_destroy(&s->done);
    pthread_mutex_destroy(&s->mu);
    if (sqlite3_close(s->db) != SQLITE_OK)
        log_error("%s: close syncer: %s", s->name, sqlite3_errmsg(s->db));
    free(s);
}

uint64_t wal_syncer_request(wal_syncer *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t ticket = atomic_fetch_add(&s->requested, 1) + 1;
    pthread_cond_signal(&s->asked);
    pthread_mutex_unlock(&s->mu);
    return ticket;
}

int wal_syncer_done(wal_syncer *s, uint64_t ticket)
{
    return atomic_load(&s->synced) >= ticket;
}

int wal_syncer_wait(wal_syncer *s, uint64_t ticket)
{
    pthread_mutex_lock(&s->mu);
    while (atomic_load(&s->synced) < ticket)
        pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return atomic_load(&s->failed) ? -1 : 0;
}

int wal_syncer_failed(wal_syncer *s)
{
    return atomic_load(&s->failed);
}
