/* db_files — see db_files.h. */
#include "db_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "log.h"
#include "security.h"
#include "util.h"

/* Often enough to see the lock free between two transactions of a busy
 * twin (a replica of the service on the same database), which holds it
 * most of the time; a look at /proc/locks costs tens of microseconds. */
#define DBF_POLL_MS 2

/* SQLite's lock bytes (os_unix.c, unchanged since WAL exists): in the -shm,
 * the WAL write lock, checkpoint lock and recovery lock, which a connection
 * takes exclusively to recover the log at open and to write; in the
 * database, the PENDING and RESERVED bytes and the SHARED range, which a
 * writer of a rollback journal (or an exclusive-mode connection) locks. */
#define SHM_EXCLUSIVE_FIRST 120
#define SHM_EXCLUSIVE_LAST  122
#define DB_LOCK_FIRST       0x40000000LL
#define DB_LOCK_LAST        (0x40000000LL + 2 + 510 - 1)

static const char *const companions[] = {"", "-wal", "-shm", "-journal"};

static int is_memory(const char *path)
{
    return path[0] == '\0' || strcmp(path, ":memory:") == 0;
}

int dbf_check_private(const char *what, const char *path, char *err, size_t errlen)
{
    if (is_memory(path))
        return 0;
    for (size_t i = 0; i < sizeof companions / sizeof companions[0]; i++) {
        char file[4096];
        struct stat st;
        if ((size_t)snprintf(file, sizeof file, "%s%s", path, companions[i]) >= sizeof file) {
            snprintf(err, errlen, "%s %s: path too long", what, path);
            return -1;
        }
        /* lstat: a symbolic link is refused, not followed (the rule is
         * about the file SQLite will write, and the open refuses links). */
        if (lstat(file, &st) != 0) {
            if (errno == ENOENT)
                continue;
            snprintf(err, errlen, "%s %s: %s", what, file, strerror(errno));
            return -1;
        }
        if (sec_check_private_stat(what, file, &st, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Creates the missing database at path, empty and 0600 (rule 2). */
static int create_private(const char *what, const char *path, char *err, size_t errlen)
{
    /* O_EXCL | O_NOFOLLOW: never truncate or follow something that appeared
     * since the check; EEXIST means another process created it first, and
     * the check after the open judges that file. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return 0;
        snprintf(err, errlen, "%s %s: cannot create it: %s", what, path, strerror(errno));
        return -1;
    }
    close(fd); /* a new file: this process holds no lock on it to lose */
    return 0;
}

/* One lock of /proc/locks that another process holds on (dev, ino) over
 * [first, last]; 1 when found, with its holder and range. */
typedef struct {
    long pid; /* -1: an open-file-description lock, whose holder is not shown */
    char type[16];
    long long start;
    char end[32];
} foreign_lock;

static int find_foreign_lock(const char *file, long long first, long long last, int writes_only,
                             foreign_lock *out)
{
    struct stat st;
    if (stat(file, &st) != 0)
        return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (f == NULL)
        return 0;
    char line[256];
    int found = 0;
    long self = (long)getpid();
    while (!found && fgets(line, sizeof line, f) != NULL) {
        char kind[16], type[16], end[32];
        unsigned maj, min;
        unsigned long long ino;
        long pid;
        long long start;
        /* "1: POSIX  ADVISORY  READ 1234 fe:00:10952753 120 122"; waiters
         * ("1: -> POSIX ...") hold nothing and do not match. */
        if (sscanf(line, "%*d: %15s %*15s %15s %ld %x:%x:%llu %lld %31s", kind, type, &pid, &maj,
                   &min, &ino, &start, end) != 8)
            continue;
        if ((strcmp(kind, "POSIX") != 0 && strcmp(kind, "OFDLCK") != 0) || pid == self ||
            maj != major(st.st_dev) || min != minor(st.st_dev) ||
            ino != (unsigned long long)st.st_ino)
            continue;
        if (writes_only && strcmp(type, "WRITE") != 0)
            continue;
        long long stop = strcmp(end, "EOF") == 0 ? -1 : atoll(end);
        if (start > last || (stop >= 0 && stop < first))
            continue;
        out->pid = pid;
        snprintf(out->type, sizeof out->type, "%s", type);
        out->start = start;
        snprintf(out->end, sizeof out->end, "%s", end);
        found = 1;
    }
    fclose(f);
    return found;
}

/* "process 123 (uid 65534) holds a read lock on FILE bytes 120-122". */
static void describe(const char *file, const foreign_lock *l, char *out, size_t outlen)
{
    char holder[64] = "another process (an open-file-description lock)";
    if (l->pid > 0) {
        char proc[64];
        struct stat st;
        snprintf(proc, sizeof proc, "/proc/%ld", l->pid);
        if (stat(proc, &st) == 0)
            snprintf(holder, sizeof holder, "process %ld (uid %lu)", l->pid,
                     (unsigned long)st.st_uid);
        else
            snprintf(holder, sizeof holder, "process %ld", l->pid);
    }
    snprintf(out, outlen, "%s holds a %s lock on %s bytes %lld-%s", holder,
             strcmp(l->type, "READ") == 0 ? "read" : "write", file, l->start, l->end);
}

/* The first lock of another process that stops SQLite from opening path. */
static int find_blocking_lock(const char *path, char *file, size_t filelen, foreign_lock *l)
{
    snprintf(file, filelen, "%s-shm", path);
    if (find_foreign_lock(file, SHM_EXCLUSIVE_FIRST, SHM_EXCLUSIVE_LAST, 0, l))
        return 1;
    snprintf(file, filelen, "%s", path);
    return find_foreign_lock(file, DB_LOCK_FIRST, DB_LOCK_LAST, 1, l);
}

void dbf_describe_lock_holders(const char *path, char *out, size_t outlen)
{
    char file[4096 + 8];
    foreign_lock l;
    out[0] = '\0';
    if (!is_memory(path) && find_blocking_lock(path, file, sizeof file, &l))
        describe(file, &l, out, outlen);
}

/* Rule 3: waits, bounded and logged, until no other process holds a lock
 * that SQLite's open would wait for or fail on. */
/* The -wal's size and modification time: they move with every commit. */
static int wal_stamp(const char *path, struct stat *out)
{
    char wal[4096 + 8];
    snprintf(wal, sizeof wal, "%s-wal", path);
    return stat(wal, out);
}

static int wal_moved(const struct stat *a, const struct stat *b)
{
    return a->st_size != b->st_size || a->st_mtim.tv_sec != b->st_mtim.tv_sec ||
           a->st_mtim.tv_nsec != b->st_mtim.tv_nsec;
}

static int wait_for_locks(const char *what, const char *path, char *err, size_t errlen)
{
    char file[4096 + 8], text[4096 + 256];
    foreign_lock l;
    int64_t t0 = util_mono_ms();
    int reported = 0;
    /* A holder that keeps committing (another replica of a service on the
     * same database, busy) is alive, not stuck: SQLite's own busy handling
     * serves from there. Only a lock held while nothing moves is waited out. */
    struct stat wal0, wal1;
    int have_wal = wal_stamp(path, &wal0) == 0;
    while (find_blocking_lock(path, file, sizeof file, &l)) {
        if (have_wal && wal_stamp(path, &wal1) == 0 && wal_moved(&wal0, &wal1)) {
            describe(file, &l, text, sizeof text);
            log_info("%s %s: %s, and is writing (the log moves): opening beside it", what, path,
                     text);
            return 0;
        }
        int64_t waited = util_mono_ms() - t0;
        describe(file, &l, text, sizeof text);
        if (waited >= DBF_LOCK_WAIT_MS) {
            snprintf(err, errlen,
                     "%s %s: %s, still after %d s: stop that process (a sqlite3 shell, a backup "
                     "or another program on the same database), then start again",
                     what, path, text, DBF_LOCK_WAIT_MS / 1000);
            return -1;
        }
        if (!reported && waited >= DBF_LOCK_REPORT_MS) {
            log_warn("%s %s: %s: waiting up to %d s for it to go", what, path, text,
                     DBF_LOCK_WAIT_MS / 1000);
            reported = 1;
        }
        util_sleep_ms(DBF_POLL_MS);
    }
    if (reported)
        log_info("%s %s: the lock is gone, opening", what, path);
    return 0;
}

int dbf_before_open(const char *what, const char *path, int create, char *err, size_t errlen)
{
    if (is_memory(path))
        return 0;
    if (dbf_check_private(what, path, err, errlen) != 0)
        return -1;
    if (create && create_private(what, path, err, errlen) != 0)
        return -1;
    return wait_for_locks(what, path, err, errlen);
}
