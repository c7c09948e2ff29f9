/* vfs_shim — see vfs_shim.h. */
#include "vfs_shim.h"

#include <stddef.h>

#define BELOW(f) VFS_SHIM_BELOW(f)

sqlite3_file *vfs_shim_below_of(sqlite3_file *f, int file_bytes)
{
    return (sqlite3_file *)((char *)f + ((file_bytes + 7) & ~7));
}

int vfs_shim_open_below(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int file_bytes,
                        int flags, int *out_flags)
{
    sqlite3_file *below = vfs_shim_below_of(f, file_bytes);
    BELOW(f) = below;
    below->pMethods = NULL;
    sqlite3_vfs *lower = VFS_SHIM_LOWER(vfs);
    int rc = lower->xOpen(lower, name, below, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (below->pMethods != NULL)
            below->pMethods->xClose(below);
        f->pMethods = NULL;
    }
    return rc;
}

/* ---- File methods ------------------------------------------------------------ */

int vfs_shim_close(sqlite3_file *f)
{
    return BELOW(f)->pMethods->xClose(BELOW(f));
}

int vfs_shim_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return BELOW(f)->pMethods->xWrite(BELOW(f), buf, n, off);
}

int vfs_shim_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return BELOW(f)->pMethods->xTruncate(BELOW(f), size);
}

int vfs_shim_sync(sqlite3_file *f, int flags)
{
    return BELOW(f)->pMethods->xSync(BELOW(f), flags);
}

int vfs_shim_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return BELOW(f)->pMethods->xRead(BELOW(f), buf, n, off);
}

int vfs_shim_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return BELOW(f)->pMethods->xFileSize(BELOW(f), size);
}

int vfs_shim_lock(sqlite3_file *f, int level)
{
    return BELOW(f)->pMethods->xLock(BELOW(f), level);
}

int vfs_shim_unlock(sqlite3_file *f, int level)
{
    return BELOW(f)->pMethods->xUnlock(BELOW(f), level);
}

int vfs_shim_check_reserved_lock(sqlite3_file *f, int *out)
{
    return BELOW(f)->pMethods->xCheckReservedLock(BELOW(f), out);
}

int vfs_shim_file_control(sqlite3_file *f, int op, void *arg)
{
    return BELOW(f)->pMethods->xFileControl(BELOW(f), op, arg);
}

int vfs_shim_sector_size(sqlite3_file *f)
{
    return BELOW(f)->pMethods->xSectorSize(BELOW(f));
}

int vfs_shim_device_characteristics(sqlite3_file *f)
{
    return BELOW(f)->pMethods->xDeviceCharacteristics(BELOW(f));
}

int vfs_shim_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
    return BELOW(f)->pMethods->xShmMap(BELOW(f), region, size, extend, out);
}

int vfs_shim_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return BELOW(f)->pMethods->xShmLock(BELOW(f), offset, n, flags);
}

void vfs_shim_shm_barrier(sqlite3_file *f)
{
    BELOW(f)->pMethods->xShmBarrier(BELOW(f));
}

int vfs_shim_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return BELOW(f)->pMethods->xShmUnmap(BELOW(f), delete_flag);
}

/* Memory-mapped reads need the lower file's version 3 methods; without
 * them SQLite reads with xRead (a NULL page means "not mapped"). */
int vfs_shim_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out)
{
    if (BELOW(f)->pMethods->iVersion < 3) {
        *out = NULL;
        return SQLITE_OK;
    }
    return BELOW(f)->pMethods->xFetch(BELOW(f), off, n, out);
}

int vfs_shim_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    if (BELOW(f)->pMethods->iVersion < 3)
        return SQLITE_OK;
    return BELOW(f)->pMethods->xUnfetch(BELOW(f), off, p);
}

void vfs_shim_forwarding_methods(sqlite3_io_methods *m)
{
    *m = (sqlite3_io_methods){
        .iVersion = 3,
        .xClose = vfs_shim_close,
        .xRead = vfs_shim_read,
        .xWrite = vfs_shim_write,
        .xTruncate = vfs_shim_truncate,
        .xSync = vfs_shim_sync,
        .xFileSize = vfs_shim_file_size,
        .xLock = vfs_shim_lock,
        .xUnlock = vfs_shim_unlock,
        .xCheckReservedLock = vfs_shim_check_reserved_lock,
        .xFileControl = vfs_shim_file_control,
        .xSectorSize = vfs_shim_sector_size,
        .xDeviceCharacteristics = vfs_shim_device_characteristics,
        .xShmMap = vfs_shim_shm_map,
        .xShmLock = vfs_shim_shm_lock,
        .xShmBarrier = vfs_shim_shm_barrier,
        .xShmUnmap = vfs_shim_shm_unmap,
        .xFetch = vfs_shim_fetch,
        .xUnfetch = vfs_shim_unfetch,
    };
}

/* ---- VFS methods ------------------------------------------------------------- */

static int shim_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return VFS_SHIM_LOWER(vfs)->xDelete(VFS_SHIM_LOWER(vfs), name, sync_dir);
}

static int shim_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    return VFS_SHIM_LOWER(vfs)->xAccess(VFS_SHIM_LOWER(vfs), name, flags, out);
}

static int shim_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    return VFS_SHIM_LOWER(vfs)->xFullPathname(VFS_SHIM_LOWER(vfs), name, n, out);
}

static void *shim_dl_open(sqlite3_vfs *vfs, const char *name)
{
    return VFS_SHIM_LOWER(vfs)->xDlOpen(VFS_SHIM_LOWER(vfs), name);
}

static void shim_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    VFS_SHIM_LOWER(vfs)->xDlError(VFS_SHIM_LOWER(vfs), n, out);
}

static void (*shim_dl_sym(sqlite3_vfs *vfs, void *lib, const char *sym))(void)
{
    return VFS_SHIM_LOWER(vfs)->xDlSym(VFS_SHIM_LOWER(vfs), lib, sym);
}

static void shim_dl_close(sqlite3_vfs *vfs, void *lib)
{
    VFS_SHIM_LOWER(vfs)->xDlClose(VFS_SHIM_LOWER(vfs), lib);
}

static int shim_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    return VFS_SHIM_LOWER(vfs)->xRandomness(VFS_SHIM_LOWER(vfs), n, out);
}

static int shim_sleep(sqlite3_vfs *vfs, int us)
{
    return VFS_SHIM_LOWER(vfs)->xSleep(VFS_SHIM_LOWER(vfs), us);
}

static int shim_current_time(sqlite3_vfs *vfs, double *out)
{
    return VFS_SHIM_LOWER(vfs)->xCurrentTime(VFS_SHIM_LOWER(vfs), out);
}

static int shim_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    return VFS_SHIM_LOWER(vfs)->xGetLastError(VFS_SHIM_LOWER(vfs), n, out);
}

static int shim_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    return VFS_SHIM_LOWER(vfs)->xCurrentTimeInt64(VFS_SHIM_LOWER(vfs), out);
}

void vfs_shim_init(sqlite3_vfs *shim, sqlite3_vfs *below, const char *name, int file_bytes,
                   int (*open)(sqlite3_vfs *, sqlite3_filename, sqlite3_file *, int, int *))
{
    *shim = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = ((file_bytes + 7) & ~7) + below->szOsFile,
        .mxPathname = below->mxPathname,
        .zName = name,
        .pAppData = below,
        .xOpen = open,
        .xDelete = shim_delete,
        .xAccess = shim_access,
        .xFullPathname = shim_full_pathname,
        .xDlOpen = shim_dl_open,
        .xDlError = shim_dl_error,
        .xDlSym = shim_dl_sym,
        .xDlClose = shim_dl_close,
        .xRandomness = shim_randomness,
        .xSleep = shim_sleep,
        .xCurrentTime = shim_current_time,
        .xGetLastError = shim_get_last_error,
        .xCurrentTimeInt64 = shim_current_time_int64,
    };
}
