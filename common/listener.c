/* listener — see listener.h. */
#include "listener.h"

#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"

#define PROBE_EVERY_MS   1000
#define PROBE_TIMEOUT_MS 2000

struct sp_listener {
    nng_socket sock;
    sp_listener_opts opts;
    nng_listener listener; /* after start, only the watchdog replaces it */
    nng_thread *watchdog;  /* ipc:// only */
    nng_mtx *mtx;          /* guards pipes_added and stopping */
    nng_cv *cv;
    unsigned long pipes_added;
    unsigned long probe_pipes; /* connections of the probe's own socket */
    int stopping;
    unsigned restarts;
};

static int is_ipc(const char *url)
{
    return strncasecmp(url, "ipc://", 6) == 0; /* nng takes "IPC://" too */
}

static void on_pipe_added(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    sp_listener *l = arg;
    nng_mtx_lock(l->mtx);
    l->pipes_added++;
    nng_cv_wake(l->cv);
    nng_mtx_unlock(l->mtx);
}

static void on_probe_pipe_added(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    sp_listener *l = arg;
    nng_mtx_lock(l->mtx);
    l->probe_pipes++;
    nng_cv_wake(l->cv);
    nng_mtx_unlock(l->mtx);
}

static int start_listener(sp_listener *l, char *err, size_t errlen)
{
    const char *url = l->opts.url;
    nng_listener nl;
    int rv = nng_listener_create(&nl, l->sock, url);
    if (rv != 0) {
        snprintf(err, errlen, "%s: %s", url, nng_strerror(rv));
        return rv;
    }
    if ((l->opts.recv_max &&
         (rv = nng_listener_set_size(nl, NNG_OPT_RECVMAXSZ, l->opts.recv_max)) != 0) ||
        (is_ipc(url) && (rv = nng_listener_set_int(nl, NNG_OPT_IPC_PERMISSIONS, 0600)) != 0)) {
        snprintf(err, errlen, "%s: cannot set the size limit or permissions: %s", url,
                 nng_strerror(rv));
        goto fail;
    }
    if (l->opts.configure && (rv = l->opts.configure(nl, l->opts.configure_arg, err, errlen)) != 0)
        goto fail;
    if ((rv = nng_listener_start(nl, 0)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", url, nng_strerror(rv));
        goto fail;
    }
    /* The option applies at bind; make sure the file is owner-only anyway. */
    if (is_ipc(url) && chmod(url + 6, 0600) != 0) {
        snprintf(err, errlen, "cannot make %s owner-only", url + 6);
        rv = NNG_EPERM;
        goto fail;
    }
    l->listener = nl;
    return 0;
fail:
    nng_listener_close(nl);
    return rv;
}

/* 1: a probe's pipe reached the socket in time; 0: none did (stuck);
 * -1: no probe could be made, or we are stopping. */
static int probe(sp_listener *l)
{
    nng_socket s;
    nng_dialer d;
    int result = -1;
    if (nng_req0_open(&s) != 0)
        return -1;
    nng_mtx_lock(l->mtx);
    unsigned long before = l->pipes_added, probe_before = l->probe_pipes;
    nng_mtx_unlock(l->mtx);
    if (nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, on_probe_pipe_added, l) == 0 &&
        nng_dialer_create(&d, s, l->opts.url) == 0 && nng_dialer_start(d, NNG_FLAG_NONBLOCK) == 0) {
        nng_time deadline = nng_clock() + PROBE_TIMEOUT_MS;
        nng_mtx_lock(l->mtx);
        /* Wait for both ends of the probe's connection, and do not cut the
         * wait short when stopping: closing a connection mid-handshake is the
         * very thing that trips the nng defect (and nng then leaks it). */
        while ((l->pipes_added == before || l->probe_pipes == probe_before) &&
               nng_clock() < deadline)
            nng_cv_until(l->cv, deadline);
        result = l->stopping ? -1 : l->pipes_added != before;
        nng_mtx_unlock(l->mtx);
    }
    nng_close(s);
    return result;
}

static void watchdog_main(void *arg)
{
    sp_listener *l = arg;
    char err[256];
    for (;;) {
        nng_time next = nng_clock() + PROBE_EVERY_MS;
        nng_mtx_lock(l->mtx);
        while (!l->stopping && nng_clock() < next)
            nng_cv_until(l->cv, next);
        int stopping = l->stopping;
        nng_mtx_unlock(l->mtx);
        if (stopping)
            return;
        if (probe(l) != 0)
            continue;
        log_warn("%s: %s stopped accepting connections: restarting the listener", l->opts.name,
                 l->opts.url);
        nng_listener_close(l->listener); /* also closes the pipes it accepted */
        l->restarts++;
        if (start_listener(l, err, sizeof err) != 0)
            log_error("%s: cannot restart the listener: %s", l->opts.name, err);
    }
}

int sp_listener_open(sp_listener **out, nng_socket sock, const sp_listener_opts *opts, char *err,
                     size_t errlen)
{
    sp_listener *l = calloc(1, sizeof *l);
    int rv = NNG_ENOMEM;
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return rv;
    }
    l->sock = sock;
    l->opts = *opts;
    if ((rv = nng_mtx_alloc(&l->mtx)) != 0 || (rv = nng_cv_alloc(&l->cv, l->mtx)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, on_pipe_added, l)) != 0) {
        snprintf(err, errlen, "%s: cannot set up the socket: %s", opts->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = start_listener(l, err, errlen)) != 0)
        goto fail;
    if (is_ipc(opts->url) && (rv = nng_thread_create(&l->watchdog, watchdog_main, l)) != 0) {
        snprintf(err, errlen, "cannot start the listener watchdog: %s", nng_strerror(rv));
        goto fail;
    }
    *out = l;
    return 0;
fail:
    sp_listener_close(l);
    return rv;
}

void sp_listener_close(sp_listener *l)
{
    if (l == NULL)
        return;
    if (l->mtx) {
        nng_mtx_lock(l->mtx);
        l->stopping = 1;
        nng_cv_wake(l->cv);
        nng_mtx_unlock(l->mtx);
    }
    if (l->watchdog)
        nng_thread_destroy(l->watchdog); /* joins */
    if (nng_listener_id(l->listener) > 0)
        nng_listener_close(l->listener);
    nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_POST, NULL, NULL);
    if (l->cv)
        nng_cv_free(l->cv);
    if (l->mtx)
        nng_mtx_free(l->mtx);
    free(l);
}

unsigned sp_listener_restarts(sp_listener *l)
{
    return l->restarts;
}
