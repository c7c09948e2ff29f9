/*
 * fd_limit — raises the process's soft limit on open descriptors
 * (RLIMIT_NOFILE) to its hard limit, at start, in every server program.
 *
 * The usual soft limit (1024) is far below what a server with many clients
 * needs, and it is the one a flood of connections exhausts first: then
 * accept fails and the process stops answering even its operators. The
 * hard limit is what the administrator allows; the caps on connections
 * (common/listener.h, common/http_conn.h) keep well within it.
 */
#ifndef SAGA_FD_LIMIT_H
#define SAGA_FD_LIMIT_H

/* Raises the soft limit to the hard one and logs both at INFO (a failure at
 * WARN: the program still runs, with the limit it has). Returns the soft
 * limit in force afterwards, or -1 when it cannot be read. Call early in
 * main, after log_init and before any thread starts. */
long fd_limit_raise(void);

#endif
