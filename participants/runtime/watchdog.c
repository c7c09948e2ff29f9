/*
 * watchdog — keeps an ipc:// listener accepting.
 *
 * Why: with nng 1.5.2 (the Debian package this project builds against), an
 * ipc peer that connects and closes at once (a health check, a port probe,
 * an orchestrator killed while dialing) can make the listener stop
 * accepting for good: the socket file still exists and connect() still
 * succeeds, but no new connection is ever negotiated, so the participant
 * goes deaf while its existing connections keep working. Reproduced with
 * nngcat alone, without this runtime; tcp:// listeners are not affected.
 *
 * The stuck state: the transport still accepts and even answers the SP
 * header, so a dialer believes it is connected, but the new pipe is never
 * handed to the socket (no NNG_PIPE_EV_ADD_POST on it) and its requests go
 * nowhere.
 *
 * What: every PT_PROBE_EVERY_MS the watchdog thread dials the participant's
 * own URL with a throw-away req0 socket and waits up to
 * PT_PROBE_TIMEOUT_MS for a pipe to be added to the participant's socket
 * (pt_watchdog_pipe_added counts them). When none is, the listener is
 * closed and started again (pt_listener_restart). Closing a listener closes the pipes it accepted;
 * their requesters reconnect and re-send, which idempotency makes harmless.
 * A probe that cannot even be set up (out of memory) restarts nothing.
 *
 * Only this thread touches p->listener after pt_start; pt_stop joins it
 * before closing the socket.
 */
#include <stdio.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "log.h"
#include "pt_internal.h"

#define PT_PROBE_EVERY_MS   1000
#define PT_PROBE_TIMEOUT_MS 2000

void pt_watchdog_pipe_added(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    participant *p = arg;
    nng_mtx_lock(p->mtx);
    p->pipes_added++;
    nng_cv_wake(p->cv);
    nng_mtx_unlock(p->mtx);
}

/*
 * One probe. Returns 1 when a pipe reached the participant's socket in
 * time, 0 when none did (the listener is stuck), -1 when no probe could be
 * made or the runtime is stopping.
 */
static int pt_probe(participant *p)
{
    nng_socket s;
    nng_dialer d;
    int result = -1;

    if (nng_req0_open(&s) != 0)
        return -1;
    nng_mtx_lock(p->mtx);
    uint64_t before = p->pipes_added;
    nng_mtx_unlock(p->mtx);
    if (nng_dialer_create(&d, s, p->listen_url) == 0 &&
        nng_dialer_start(d, NNG_FLAG_NONBLOCK) == 0) {
        nng_time deadline = nng_clock() + PT_PROBE_TIMEOUT_MS;
        nng_mtx_lock(p->mtx);
        while (p->pipes_added == before && !p->stopping && nng_clock() < deadline)
            nng_cv_until(p->cv, deadline);
        result = p->stopping ? -1 : p->pipes_added != before;
        nng_mtx_unlock(p->mtx);
    }
    nng_close(s);
    return result;
}

void pt_watchdog_main(void *arg)
{
    participant *p = arg;
    char err[256];

    for (;;) {
        nng_time next = nng_clock() + PT_PROBE_EVERY_MS;
        nng_mtx_lock(p->mtx);
        while (!p->stopping && nng_clock() < next)
            nng_cv_until(p->cv, next);
        int stopping = p->stopping;
        nng_mtx_unlock(p->mtx);
        if (stopping)
            return;
        if (pt_probe(p) != 0)
            continue;
        log_warn("%s: %s stopped accepting connections: restarting the listener", p->name,
                 p->listen_url);
        if (pt_listener_restart(p, err, sizeof err) != 0)
            log_error("%s: cannot restart the listener: %s", p->name, err);
    }
}
