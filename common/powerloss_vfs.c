/* powerloss_vfs — see powerloss_vfs.h. */
#include "powerloss_vfs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "vfs_shim.h"

/*
 * One change not yet made durable by a sync, with what it takes to undo it:
 * size_before is the file's size just before the change; old holds the
 * bytes it overwrote (a write) or cut off (a truncate) below that size.
 * Undoing the changes of a file newest first gives back its synced state.
 */
typedef struct {
    uint64_t seq;        /* process-wide order of changes */
    int64_t offset;      /* a write's offset, or a truncate's new size */
    int64_t len;         /* bytes written (0 for a truncate or size hint) */
    int64_t size_before; /* file size before the change */
    unsigned char *old;  /* old_len bytes at offset, before the change */
    int64_t old_len;
} change;

/* A tracked file (database, WAL or rollback journal), by path: every
 * connection to it shares one record, since a sync is per file, not per
 * handle. Kept after the last close while it has unsynced changes (the
 * kernel still holds them). */
typedef struct file_record {
    struct file_record *next;
    char *path;
    int is_main_db; /* its -shm is deleted by a cut */
    int open_handles;
    change *changes;
    size_t n_changes, cap_changes;
} file_record;

typedef struct {
    vfs_shim_file shim;  /* base.pMethods = &tracked_methods; below: the unix VFS's file */
    file_record *record; /* NULL: not tracked (temp files) */
} pl_file;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* guards everything below */
static file_record *records;
static uint64_t last_seq;
static uint64_t tear_seed;
static sqlite3_vfs *real_vfs;
static sqlite3_vfs pl_vfs;
static int installed;

static sqlite3_io_methods tracked_methods; /* filled once, before installing */

#define REAL(f) VFS_SHIM_BELOW(f)

/* ---- Bookkeeping (callers hold mu) ----------------------------------------- */

static file_record *record_get(const char *path, int is_main_db)
{
    for (file_record *r = records; r; r = r->next)
        if (strcmp(r->path, path) == 0)
            return r;
    file_record *r = calloc(1, sizeof *r);
    if (r == NULL || (r->path = strdup(path)) == NULL) {
        free(r);
        return NULL;
    }
    r->is_main_db = is_main_db;
    r->next = records;
    records = r;
    return r;
}

static void record_forget_changes(file_record *r)
{
    for (size_t i = 0; i < r->n_changes; i++)
        free(r->changes[i].old);
    r->n_changes = 0;
}

/* Frees r once nothing refers to it and it has nothing to undo. */
static void record_release_if_idle(file_record *r)
{
    if (r->open_handles > 0 || r->n_changes > 0)
        return;
    for (file_record **p = &records; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    free(r->changes);
    free(r->path);
    free(r);
}

/* Records a change of f starting at offset: reads the bytes it is about to
 * replace in [offset, offset + span) that exist now. */
static int record_change(pl_file *f, int64_t offset, int64_t len, int64_t span)
{
    file_record *r = f->record;
    sqlite3_int64 size = 0;
    int rc = REAL(f)->pMethods->xFileSize(REAL(f), &size);
    if (rc != SQLITE_OK)
        return rc;
    if (r->n_changes == r->cap_changes) {
        size_t cap = r->cap_changes ? r->cap_changes * 2 : 16;
        change *grown = realloc(r->changes, cap * sizeof *grown);
        if (grown == NULL)
            return SQLITE_NOMEM;
        r->changes = grown;
        r->cap_changes = cap;
    }
    change c = {.seq = ++last_seq, .offset = offset, .len = len, .size_before = size};
    int64_t end = offset + span < size ? offset + span : size;
    if (end > offset) {
        c.old_len = end - offset;
        c.old = malloc((size_t)c.old_len);
        if (c.old == NULL)
            return SQLITE_NOMEM;
        rc = REAL(f)->pMethods->xRead(REAL(f), c.old, (int)c.old_len, offset);
        if (rc != SQLITE_OK) {
            free(c.old);
            return rc;
        }
    }
    r->changes[r->n_changes++] = c;
    return SQLITE_OK;
}

/* ---- Tracked file methods ---------------------------------------------------- */

static int pl_close(sqlite3_file *f)
{
    pl_file *p = (pl_file *)f;
    int rc = REAL(p)->pMethods->xClose(REAL(p));
    if (p->record) {
        pthread_mutex_lock(&mu);
        p->record->open_handles--;
        record_release_if_idle(p->record);
        pthread_mutex_unlock(&mu);
    }
    return rc;
}

static int pl_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    pl_file *p = (pl_file *)f;
    if (p->record == NULL)
        return REAL(p)->pMethods->xWrite(REAL(p), buf, n, off);
    pthread_mutex_lock(&mu);
    int rc = record_change(p, off, n, n);
    if (rc == SQLITE_OK)
        rc = REAL(p)->pMethods->xWrite(REAL(p), buf, n, off);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int pl_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    pl_file *p = (pl_file *)f;
    if (p->record == NULL)
        return REAL(p)->pMethods->xTruncate(REAL(p), size);
    pthread_mutex_lock(&mu);
    int rc = record_change(p, size, 0, INT64_MAX - size);
    if (rc == SQLITE_OK)
        rc = REAL(p)->pMethods->xTruncate(REAL(p), size);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int pl_sync(sqlite3_file *f, int flags)
{
    pl_file *p = (pl_file *)f;
    if (p->record == NULL)
        return REAL(p)->pMethods->xSync(REAL(p), flags);
    pthread_mutex_lock(&mu);
    int rc = REAL(p)->pMethods->xSync(REAL(p), flags);
    if (rc == SQLITE_OK)
        record_forget_changes(p->record); /* durable now, whoever wrote them */
    pthread_mutex_unlock(&mu);
    return rc;
}

static int pl_file_control(sqlite3_file *f, int op, void *arg)
{
    pl_file *p = (pl_file *)f;
    if (p->record == NULL || op != SQLITE_FCNTL_SIZE_HINT)
        return REAL(p)->pMethods->xFileControl(REAL(p), op, arg);
    /* A size hint may grow the file (chunked allocation): undo it like a
     * write of nothing that extended the file. */
    pthread_mutex_lock(&mu);
    int rc = record_change(p, 0, 0, 0);
    if (rc == SQLITE_OK)
        rc = REAL(p)->pMethods->xFileControl(REAL(p), op, arg);
    pthread_mutex_unlock(&mu);
    return rc;
}

/* ---- VFS methods ------------------------------------------------------------- */

/* What a power cut can roll back: the files SQLite syncs. Temp files die
 * with the process anyway. */
#define TRACKED_KINDS (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL)

static int pl_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    pl_file *p = (pl_file *)f;
    p->record = NULL;
    int rc = vfs_shim_open_below(vfs, name, f, (int)sizeof(pl_file), flags, out_flags);
    if (rc != SQLITE_OK)
        return rc;
    f->pMethods = &tracked_methods;
    if (name == NULL || (flags & TRACKED_KINDS) == 0)
        return SQLITE_OK;
    pthread_mutex_lock(&mu);
    p->record = record_get(name, (flags & SQLITE_OPEN_MAIN_DB) != 0);
    if (p->record)
        p->record->open_handles++;
    pthread_mutex_unlock(&mu);
    if (p->record == NULL) {
        REAL(p)->pMethods->xClose(REAL(p));
        f->pMethods = NULL;
        return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}

static int pl_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    pthread_mutex_lock(&mu);
    int rc = real_vfs->xDelete(real_vfs, name, sync_dir);
    /* Gone: there is nothing left to roll back (directory entries are not
     * modelled). */
    for (file_record *r = records; rc == SQLITE_OK && r; r = r->next)
        if (strcmp(r->path, name) == 0) {
            record_forget_changes(r);
            record_release_if_idle(r);
            break;
        }
    pthread_mutex_unlock(&mu);
    return rc;
}

int powerloss_vfs_install(uint64_t seed)
{
    pthread_mutex_lock(&mu);
    int rc = 0;
    if (!installed) {
        real_vfs = sqlite3_vfs_find(NULL);
        if (real_vfs == NULL || real_vfs->iVersion < 2) {
            rc = -1;
        } else {
            vfs_shim_forwarding_methods(&tracked_methods);
            tracked_methods.xClose = pl_close;
            tracked_methods.xWrite = pl_write;
            tracked_methods.xTruncate = pl_truncate;
            tracked_methods.xSync = pl_sync;
            tracked_methods.xFileControl = pl_file_control;
            vfs_shim_init(&pl_vfs, real_vfs, POWERLOSS_VFS_NAME, (int)sizeof(pl_file), pl_open);
            pl_vfs.xDelete = pl_delete;
            tear_seed = seed;
            rc = sqlite3_vfs_register(&pl_vfs, 1) == SQLITE_OK ? 0 : -1;
            installed = rc == 0;
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

int powerloss_vfs_install_from_env(char *err, size_t errlen)
{
    const char *spec = getenv("SAGA_TEST_VFS");
    if (spec == NULL || *spec == '\0')
        return 0;
    size_t name_len = strlen(POWERLOSS_VFS_NAME);
    uint64_t seed = 1;
    int ok = strncmp(spec, POWERLOSS_VFS_NAME, name_len) == 0;
    if (ok && spec[name_len] == ':') {
        int64_t n;
        ok = util_parse_i64(spec + name_len + 1, &n) == 0 && n >= 0;
        seed = (uint64_t)n;
    } else if (ok) {
        ok = spec[name_len] == '\0';
    }
    if (!ok) {
        snprintf(err, errlen, "SAGA_TEST_VFS='%s': expected '%s' or '%s:SEED'", spec,
                 POWERLOSS_VFS_NAME, POWERLOSS_VFS_NAME);
        return -1;
    }
    if (powerloss_vfs_install(seed) != 0) {
        snprintf(err, errlen, "SAGA_TEST_VFS: SQLite refused the %s VFS", POWERLOSS_VFS_NAME);
        return -1;
    }
    return 1;
}

int powerloss_vfs_active(void)
{
    pthread_mutex_lock(&mu);
    int on = installed;
    pthread_mutex_unlock(&mu);
    return on;
}

/* ---- The cut ------------------------------------------------------------------ */

static void write_all(int fd, const unsigned char *buf, int64_t len, int64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, (size_t)len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the process dies next: nothing better to do */
        buf += n;
        len -= n;
        off += n;
    }
}

/* How many bytes of change c (a write) survive a tear: whole sectors from
 * the one holding its first byte, fewer than all it touches. */
static int64_t torn_prefix(const change *c)
{
    int64_t first = c->offset / POWERLOSS_SECTOR;
    int64_t past = (c->offset + c->len + POWERLOSS_SECTOR - 1) / POWERLOSS_SECTOR;
    int64_t kept = (int64_t)(util_mix64(tear_seed ^ util_mix64(c->seq)) % (uint64_t)(past - first));
    int64_t end = (first + kept) * POWERLOSS_SECTOR;
    return end > c->offset ? end - c->offset : 0;
}

/* Puts r's file back as it was at its last sync; keeps the first torn bytes
 * of its change number torn_index (if any) as the disk would have. */
static void record_roll_back(file_record *r, size_t torn_index, int64_t torn)
{
    int fd = open(r->path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    unsigned char *survivor = NULL;
    const change *tc = torn > 0 ? &r->changes[torn_index] : NULL;
    if (tc && (survivor = malloc((size_t)torn)) != NULL &&
        pread(fd, survivor, (size_t)torn, (off_t)tc->offset) != (ssize_t)torn) {
        free(survivor);
        survivor = NULL;
    }
    for (size_t i = r->n_changes; i-- > 0;) {
        const change *c = &r->changes[i];
        if (c->old_len > 0)
            write_all(fd, c->old, c->old_len, c->offset);
        if (ftruncate(fd, (off_t)c->size_before) != 0)
            break;
    }
    if (survivor)
        write_all(fd, survivor, torn, tc->offset);
    free(survivor);
    close(fd);
}

void powerloss_vfs_cut(void)
{
    pthread_mutex_lock(&mu); /* never released: see powerloss_vfs.h */
    if (!installed)
        return;
    /* The newest unsynced change of all; torn if it is a write. */
    file_record *torn_file = NULL;
    size_t torn_index = 0;
    for (file_record *r = records; r; r = r->next)
        if (r->n_changes > 0 && r->changes[r->n_changes - 1].seq == last_seq) {
            torn_file = r;
            torn_index = r->n_changes - 1;
        }
    for (file_record *r = records; r; r = r->next) {
        int64_t torn = 0;
        if (r == torn_file && r->changes[torn_index].len > 0)
            torn = torn_prefix(&r->changes[torn_index]);
        if (r->n_changes > 0)
            record_roll_back(r, torn_index, torn);
        if (r->is_main_db) {
            char shm[4200];
            if ((size_t)snprintf(shm, sizeof shm, "%s-shm", r->path) < sizeof shm)
                unlink(shm);
        }
    }
}
