/*
 * db_url — where a program's database is, as its users write it: a SQLite
 * file path, or a libpq URI (postgresql://... or postgres://...), for sagad's
 * store and for every participant's --db alike.
 *
 * A URI may carry a password (user:password@host, or password=... among the
 * parameters); db_url_display is the only form that goes into a message or a
 * log line.
 */
#ifndef SAGA_DB_URL_H
#define SAGA_DB_URL_H

#include <stddef.h>

/* 1 when where names a PostgreSQL database (a libpq URI), 0 for a file. */
int db_url_is_postgresql(const char *where);

/* where for messages and logs, into out: a URI's password left out. */
void db_url_display(const char *where, char *out, size_t outlen);

#endif
