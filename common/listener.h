/*
 * listener — listens for an nng socket and keeps the listener accepting.
 *
 * Every server socket of the project (participants, sagad's admin API) goes
 * through here so that each gets the same treatment:
 *   - a receive size limit on the listener (oversized messages are dropped
 *     by nng before they reach us);
 *   - ipc:// socket files that only their owner may connect to (0600);
 *   - an optional hook to configure the listener before it starts (TLS);
 *   - for ipc://, a watchdog for a defect of nng 1.5.2 (the Debian 12
 *     package; upstream issue 1518): a peer that connects and closes during
 *     the SP handshake can leave the listener accepting connections that are
 *     never handed to the socket, so the server goes deaf to new clients
 *     while old connections keep working. Every second the watchdog connects
 *     to the socket file itself (a plain AF_UNIX socket speaking the SP
 *     handshake: closing an nng socket stuck in the handshake can hang) and
 *     waits up to 2 s for the handshake and for a pipe to reach the socket;
 *     when either fails, it closes and restarts the listener. Clients
 *     reconnect and re-send, which idempotency makes harmless. tcp:// is not
 *     affected.
 *
 *   - optionally (auth_timeout_ms > 0), bounds on pipes that have not
 *     authenticated: every pipe starts unauthenticated until its owner calls
 *     sp_listener_authenticated (e.g. after a request with the right
 *     token); one still unauthenticated auth_timeout_ms after it connected
 *     is closed, and beyond max_unauthenticated such pipes the oldest is
 *     closed at once. What a pipe can make nng buffer before it
 *     authenticates is then at most max_unauthenticated x recv_max (nng
 *     1.5.2 allocates a message's full announced length when its 8-byte
 *     header arrives; the receive limit is per listener, not per pipe, so it
 *     cannot be lowered before authentication). Authenticated pipes are
 *     neither timed out nor counted.
 *
 * The listener registers the socket's NNG_PIPE_EV_ADD_POST and REM_POST
 * notifications, so its owner must not use those itself. Close the listener before the
 * socket: sp_listener_close joins the watchdog, which may be restarting it.
 */
#ifndef SAGA_LISTENER_H
#define SAGA_LISTENER_H

#include <nng/nng.h>
#include <stddef.h>

typedef struct {
    const char *name; /* for logs, e.g. "payment" or "admin" */
    const char *url;
    size_t recv_max; /* bytes; 0: nng's default */
    /* Called on each new nng_listener before it starts (e.g. TLS settings);
     * NULL for none. Returns 0 or an nng error, with a reason in err. */
    int (*configure)(nng_listener l, void *arg, char *err, size_t errlen);
    void *configure_arg;
    /* Pipes that have not authenticated (see above); 0: no such bounds, every
     * pipe is trusted once connected (participants: see docs/SECURITY.md). */
    int auth_timeout_ms;
    int max_unauthenticated; /* 0: SP_MAX_UNAUTHENTICATED */
} sp_listener_opts;

#define SP_MAX_UNAUTHENTICATED 64

typedef struct sp_listener sp_listener;

/* Starts listening on opts->url for sock. Returns 0, or an nng error with a
 * reason naming the URL in err. opts->url and name must outlive the listener. */
int sp_listener_open(sp_listener **out, nng_socket sock, const sp_listener_opts *opts, char *err,
                     size_t errlen);
/* Stops the watchdog and closes the listener (and the pipes it accepted).
 * sp_listener_close(NULL) is a no-op. */
void sp_listener_close(sp_listener *l);
/* How many times the watchdog restarted the listener. */
unsigned sp_listener_restarts(sp_listener *l);
/* Pipe (e.g. nng_msg_get_pipe of a request) passed its owner's
 * authentication: no longer timed out or counted. Any thread; a pipe
 * already closed or authenticated is ignored; NULL l: no-op. */
void sp_listener_authenticated(sp_listener *l, nng_pipe pipe);
/* Pipes not authenticated now; in *closed (may be NULL), how many the
 * bounds have closed so far. */
int sp_listener_unauthenticated(sp_listener *l, unsigned long *closed);

#endif
