/*
 * vfs_shim — what every SQLite VFS shim of ours shares: a VFS that forwards
 * each call it does not change to the VFS below it, and file methods that
 * forward to the file below.
 *
 * A shim's file struct begins with a vfs_shim_file, whose `below` points to
 * the lower VFS's file (allocated right after the shim's struct: its
 * szOsFile adds the lower one's). A shim's VFS keeps the lower VFS in
 * pAppData (vfs_shim_init), so the forwarding methods need no globals.
 * A shim overrides xOpen always, and whichever other method it changes.
 */
#ifndef SAGA_VFS_SHIM_H
#define SAGA_VFS_SHIM_H

#include <sqlite3.h>

typedef struct {
    sqlite3_file base;   /* pMethods: the shim's methods */
    sqlite3_file *below; /* the lower VFS's file */
} vfs_shim_file;

/* The lower file of a shim's file. */
#define VFS_SHIM_BELOW(f) (((vfs_shim_file *)(f))->below)

/*
 * Fills shim as a version-2 VFS named name over below, every method
 * forwarding to below except xOpen. file_bytes is the size of the shim's
 * file struct, rounded up to 8 (the lower file follows it).
 */
void vfs_shim_init(sqlite3_vfs *shim, sqlite3_vfs *below, const char *name, int file_bytes,
                   int (*open)(sqlite3_vfs *, sqlite3_filename, sqlite3_file *, int, int *));

/* The lower VFS of a shim filled by vfs_shim_init. */
#define VFS_SHIM_LOWER(vfs) ((sqlite3_vfs *)(vfs)->pAppData)

/* Where a shim's file struct of file_bytes puts the lower file. */
sqlite3_file *vfs_shim_below_of(sqlite3_file *f, int file_bytes);

/*
 * The first half of a shim's xOpen: points the shim's file (a struct of
 * file_bytes) at its lower file and opens that through the lower VFS. On
 * failure the lower file is closed and f->pMethods is NULL (nothing for
 * SQLite to close); on success the caller sets f->pMethods to its own.
 */
int vfs_shim_open_below(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int file_bytes,
                        int flags, int *out_flags);

/* Fills m with version-3 file methods that all forward to the lower file;
 * a shim then replaces the ones it changes. */
void vfs_shim_forwarding_methods(sqlite3_io_methods *m);

/* File methods that only forward to the lower file. */
int vfs_shim_close(sqlite3_file *f);
int vfs_shim_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off);
int vfs_shim_truncate(sqlite3_file *f, sqlite3_int64 size);
int vfs_shim_sync(sqlite3_file *f, int flags);
int vfs_shim_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off);
int vfs_shim_file_size(sqlite3_file *f, sqlite3_int64 *size);
int vfs_shim_lock(sqlite3_file *f, int level);
int vfs_shim_unlock(sqlite3_file *f, int level);
int vfs_shim_check_reserved_lock(sqlite3_file *f, int *out);
int vfs_shim_file_control(sqlite3_file *f, int op, void *arg);
int vfs_shim_sector_size(sqlite3_file *f);
int vfs_shim_device_characteristics(sqlite3_file *f);
int vfs_shim_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out);
int vfs_shim_shm_lock(sqlite3_file *f, int offset, int n, int flags);
void vfs_shim_shm_barrier(sqlite3_file *f);
int vfs_shim_shm_unmap(sqlite3_file *f, int delete_flag);
int vfs_shim_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out);
int vfs_shim_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p);

#endif
