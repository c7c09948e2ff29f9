/*
 * db_files — the files of an SQLite database that a program of this project
 * owns (sagad's store, a participant's database): the database itself and
 * the -wal, -shm and -journal files SQLite keeps next to it.
 *
 * Rules (docs/SECURITY.md, "Private files"):
 *   1. Private: every one of these files that exists is a regular file (not
 *      a symbolic link) owned by this process's user, with no permission
 *      bit for group or others. They hold every saga's input, client keys
 *      and the participants' business data, and a user who can open them
 *      can also take SQLite's locks and stall or stop the program. An
 *      existing file that breaks the rule stops start-up with a message
 *      naming the file, its mode and owner, and the command that fixes it.
 *   2. Created private: a missing database is created 0600 here, before
 *      SQLite opens it; SQLite gives its -wal, -shm and -journal files the
 *      database's mode, so they are 0600 too whatever the umask (the
 *      programs also set umask 077 for everything else they create).
 *   3. No silent wait: a lock another process holds on the bytes SQLite
 *      must lock exclusively to open the database (the -shm's write,
 *      checkpoint and recovery locks; the database's write locks) is waited
 *      for at most DBF_LOCK_WAIT_MS, with a log line naming the file and the
 *      process after DBF_LOCK_REPORT_MS; then start-up fails with a message
 *      naming them. A holder that commits meanwhile (the -wal moves: another
 *      replica of a service, busy on the same database) is alive, not stuck,
 *      and ends the wait at once: SQLite's busy handling takes it from there.
 *      So does a lock seen free even once: the locks are looked at every
 *      2 ms, often enough to see the gap between two transactions of a twin
 *      that holds the write lock most of the time.
 *      Other processes' locks are read from /proc/locks (Linux)
 *      rather than probed with fcntl: closing a probe descriptor would drop
 *      every POSIX lock this process holds on the file, those of its open
 *      SQLite connections included.
 *
 * What the checks cover and what they do not: they run on the paths right
 * before SQLite opens them (rule 1 and 3) and again right after (rule 1, for
 * the -wal and -shm that exist only once a connection is open), and the
 * open refuses a symbolic link (SQLITE_OPEN_NOFOLLOW, see
 * DBF_SQLITE_OPEN_FLAGS). A user who can write the database's directory
 * could still swap a file between the check and the open; keep databases in
 * a directory only their user can write (as for the ipc:// sockets).
 * ":memory:" and "" (SQLite's private temporary databases) have no files
 * and pass.
 */
#ifndef SAGA_DB_FILES_H
#define SAGA_DB_FILES_H

#include <stddef.h>

#include <sqlite3.h>

/* How long a start waits for another process's lock before it gives up. */
#define DBF_LOCK_WAIT_MS 10000
/* A lock held this long is reported (WARN) while the start waits. */
#define DBF_LOCK_REPORT_MS 1000
/* Flags every open of a project database adds: no symbolic link. */
#define DBF_SQLITE_OPEN_FLAGS SQLITE_OPEN_NOFOLLOW

/*
 * Rule 1 for the database at path and its -wal, -shm and -journal files:
 * 0 when each is missing or private, -1 with "PATH: ...: chmod 600 PATH"
 * (or chown) in err for the first that is not. `what` names the program's
 * use of it in the message ("database", "participant database").
 */
int dbf_check_private(const char *what, const char *path, char *err, size_t errlen);

/*
 * Everything to do right before sqlite3_open_v2(path): rule 1; rule 2 when
 * create is set (a missing database is created 0600); rule 3 (bounded wait
 * for other processes' locks, logged). Returns 0, or -1 with the reason in
 * err.
 */
int dbf_before_open(const char *what, const char *path, int create, char *err, size_t errlen);

/*
 * Describes, in out, the locks other processes hold on path or its -shm
 * that keep SQLite from opening or writing it ("process 123 (uid 65534)
 * holds a read lock on /x.db-shm bytes 120-122"); "" when there are none or
 * /proc/locks cannot be read. For the message of a failed open or write.
 */
void dbf_describe_lock_holders(const char *path, char *out, size_t outlen);

#endif
