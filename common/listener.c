/* listener — see listener.h. */
#include "listener.h"

#include <nng/supplemental/util/platform.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "security.h"

#define PROBE_EVERY_MS   1000
#define PROBE_TIMEOUT_MS 2000
#define PROBE_POLL_MS    100 /* how often a waiting probe looks at `stopping` */

/* A pipe that has not authenticated yet (opts.auth_timeout_ms > 0). */
typedef struct pending_pipe {
    struct pending_pipe *prev, *next;
    nng_pipe pipe;
    nng_time added;
} pending_pipe;

struct sp_listener {
    nng_socket sock;
    sp_listener_opts opts;
    nng_listener listener; /* after start, only the watchdog replaces it */
    nng_thread *watchdog;  /* ipc:// only */
    nng_thread *reaper;    /* with opts.auth_timeout_ms only */
    nng_mtx *mtx;          /* guards pipes_added, stopping and the pending list */
    nng_cv *cv;
    unsigned long pipes_added;
    int stopping;
    atomic_uint restarts; /* read by other threads (metrics) */
    /* Pipes not authenticated yet, oldest first. */
    pending_pipe *pending_head, *pending_tail;
    int n_pending;
    unsigned long pending_closed;
    uintptr_t id;             /* the pipe notifications' argument: see registry */
    struct sp_listener *next; /* in registry */
};

/*
 * nng calls a pipe notification outside its own lock, so one can still be
 * running after sp_listener_close has unregistered it, and pipes closed by
 * the close are notified later on nng's reaper. The notifications therefore
 * carry an id, not a pointer, and find their listener here: under
 * registry_mu, which sp_listener_close takes to remove it.
 */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static sp_listener *registry;
static uintptr_t registry_next_id = 1;

static sp_listener *registry_find(void *arg)
{
    for (sp_listener *l = registry; l; l = l->next)
        if (l->id == (uintptr_t)arg)
            return l;
    return NULL;
}

static void registry_remove(sp_listener *l)
{
    pthread_mutex_lock(&registry_mu);
    for (sp_listener **p = &registry; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    pthread_mutex_unlock(&registry_mu);
}

static int limits_on(const sp_listener *l)
{
    return l->opts.auth_timeout_ms > 0;
}

static void pending_unlink(sp_listener *l, pending_pipe *pp)
{
    if (pp->prev)
        pp->prev->next = pp->next;
    else
        l->pending_head = pp->next;
    if (pp->next)
        pp->next->prev = pp->prev;
    else
        l->pending_tail = pp->prev;
    l->n_pending--;
    free(pp);
}

static pending_pipe *pending_find(sp_listener *l, nng_pipe pipe)
{
    for (pending_pipe *pp = l->pending_head; pp; pp = pp->next)
        if (nng_pipe_id(pp->pipe) == nng_pipe_id(pipe))
            return pp;
    return NULL;
}

static void on_pipe_added(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    nng_pipe evict = NNG_PIPE_INITIALIZER;
    (void)ev;
    pthread_mutex_lock(&registry_mu);
    sp_listener *l = registry_find(arg);
    if (l == NULL) {
        pthread_mutex_unlock(&registry_mu);
        return;
    }
    nng_mtx_lock(l->mtx);
    l->pipes_added++;
    if (limits_on(l)) {
        pending_pipe *pp = calloc(1, sizeof *pp);
        if (pp != NULL) {
            pp->pipe = pipe;
            pp->added = nng_clock();
            pp->prev = l->pending_tail;
            if (l->pending_tail)
                l->pending_tail->next = pp;
            else
                l->pending_head = pp;
            l->pending_tail = pp;
            l->n_pending++;
        } else {
            evict = pipe; /* cannot track it: not kept */
        }
        if (nng_pipe_id(evict) <= 0 && l->n_pending > l->opts.max_unauthenticated) {
            evict = l->pending_head->pipe; /* the oldest */
            pending_unlink(l, l->pending_head);
        }
        if (nng_pipe_id(evict) > 0)
            l->pending_closed++;
    }
    nng_cv_wake(l->cv);
    nng_mtx_unlock(l->mtx);
    pthread_mutex_unlock(&registry_mu);
    /* nng runs the removal notice later on its reaper, not in here. */
    if (nng_pipe_id(evict) > 0)
        nng_pipe_close(evict);
}

static void on_pipe_removed(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    (void)ev;
    pthread_mutex_lock(&registry_mu);
    sp_listener *l = registry_find(arg);
    if (l != NULL) {
        nng_mtx_lock(l->mtx);
        pending_pipe *pp = pending_find(l, pipe);
        if (pp != NULL)
            pending_unlink(l, pp);
        nng_mtx_unlock(l->mtx);
    }
    pthread_mutex_unlock(&registry_mu);
}

void sp_listener_authenticated(sp_listener *l, nng_pipe pipe)
{
    if (l == NULL || !limits_on(l))
        return;
    nng_mtx_lock(l->mtx);
    pending_pipe *pp = pending_find(l, pipe);
    if (pp != NULL)
        pending_unlink(l, pp);
    nng_mtx_unlock(l->mtx);
}

int sp_listener_unauthenticated(sp_listener *l, unsigned long *closed)
{
    nng_mtx_lock(l->mtx);
    int n = l->n_pending;
    if (closed)
        *closed = l->pending_closed;
    nng_mtx_unlock(l->mtx);
    return n;
}

/* Closes the pipes that did not authenticate within auth_timeout_ms. */
static void reaper_main(void *arg)
{
    sp_listener *l = arg;
    nng_duration timeout = l->opts.auth_timeout_ms;
    nng_mtx_lock(l->mtx);
    while (!l->stopping) {
        nng_time now = nng_clock();
        pending_pipe *oldest = l->pending_head;
        if (oldest == NULL) {
            nng_cv_until(l->cv, now + timeout);
            continue;
        }
        if (now < oldest->added + (nng_time)timeout) {
            nng_cv_until(l->cv, oldest->added + (nng_time)timeout);
            continue;
        }
        nng_pipe pipe = oldest->pipe;
        pending_unlink(l, oldest);
        l->pending_closed++;
        nng_mtx_unlock(l->mtx);
        nng_pipe_close(pipe);
        nng_mtx_lock(l->mtx);
    }
    nng_mtx_unlock(l->mtx);
}

static int start_listener(sp_listener *l, char *err, size_t errlen)
{
    const char *url = l->opts.url;
    nng_listener nl;
    char why[1024];
    /* In a directory others can write, they could swap the socket for theirs. */
    if (sec_url_has_scheme(url, "ipc") && sec_check_socket_dir(url + 6, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", url, why);
        return NNG_EPERM;
    }
    int rv = nng_listener_create(&nl, l->sock, url);
    if (rv != 0) {
        snprintf(err, errlen, "%s: %s", url, nng_strerror(rv));
        return rv;
    }
    if ((l->opts.recv_max &&
         (rv = nng_listener_set_size(nl, NNG_OPT_RECVMAXSZ, l->opts.recv_max)) != 0) ||
        (sec_url_has_scheme(url, "ipc") &&
         (rv = nng_listener_set_int(nl, NNG_OPT_IPC_PERMISSIONS, 0600)) != 0)) {
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
    /* The option applies at bind; make sure the file is owner-only anyway,
     * without following a link that could have taken its place. */
    if (sec_url_has_scheme(url, "ipc") && sec_socket_owner_only(url + 6, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s", why);
        rv = NNG_EPERM;
        goto fail;
    }
    l->listener = nl;
    return 0;
fail:
    nng_listener_close(nl);
    return rv;
}

static int probe_stopping(sp_listener *l)
{
    nng_mtx_lock(l->mtx);
    int stopping = l->stopping;
    nng_mtx_unlock(l->mtx);
    return stopping;
}

/* The SP header a req0 peer opens with (the sockets served here are rep0). */
static const unsigned char probe_header[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x30, 0x00, 0x00};

/*
 * 1: a connection to the socket file completed the SP handshake and its pipe
 * reached the socket in time; 0: it did not (stuck); -1: no probe could be
 * made, or we are stopping.
 *
 * The probe is a plain AF_UNIX socket speaking the handshake, not an nng
 * socket: closing an nng socket whose pipe is stuck in the handshake can
 * hang in nng 1.5.2 (seen when a busy service was stopped), and a plain
 * socket's close never does.
 */
static int probe(sp_listener *l)
{
    const char *path = l->opts.url + 6; /* an ipc:// URL: "ipc://" + path */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    nng_mtx_lock(l->mtx);
    unsigned long before = l->pipes_added;
    nng_mtx_unlock(l->mtx);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {PROBE_TIMEOUT_MS / 1000, (PROBE_TIMEOUT_MS % 1000) * 1000};
    nng_time deadline = nng_clock() + PROBE_TIMEOUT_MS;
    unsigned char reply[8];
    size_t got = 0;
    /* SO_SNDTIMEO also bounds connect: a backlog nobody accepts from.
     * MSG_NOSIGNAL: a server that hung up must not kill us with SIGPIPE. */
    int sent =
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0 &&
        connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        send(fd, probe_header, sizeof probe_header, MSG_NOSIGNAL) == (ssize_t)sizeof probe_header;
    /* The server's header, in short waits so that stopping is not held up. */
    while (sent && got < sizeof reply && nng_clock() < deadline && !probe_stopping(l)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int ready = poll(&pfd, 1, PROBE_POLL_MS);
        if (ready < 0 && errno != EINTR)
            break;
        if (ready <= 0)
            continue;
        ssize_t n = recv(fd, reply + got, sizeof reply - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int shook = got == sizeof reply && reply[0] == 0x00 && reply[1] == 'S' && reply[2] == 'P';
    nng_mtx_lock(l->mtx);
    while (shook && l->pipes_added == before && !l->stopping && nng_clock() < deadline)
        nng_cv_until(l->cv, deadline);
    int result = l->stopping ? -1 : shook && l->pipes_added != before;
    nng_mtx_unlock(l->mtx);
    close(fd);
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
        atomic_fetch_add(&l->restarts, 1);
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
    if (l->opts.max_unauthenticated <= 0)
        l->opts.max_unauthenticated = SP_MAX_UNAUTHENTICATED;
    pthread_mutex_lock(&registry_mu);
    l->id = registry_next_id++;
    l->next = registry;
    registry = l;
    pthread_mutex_unlock(&registry_mu);
    if ((rv = nng_mtx_alloc(&l->mtx)) != 0 || (rv = nng_cv_alloc(&l->cv, l->mtx)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, on_pipe_added, (void *)l->id)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, on_pipe_removed, (void *)l->id)) != 0) {
        snprintf(err, errlen, "%s: cannot set up the socket: %s", opts->url, nng_strerror(rv));
        goto fail;
    }
    if ((rv = start_listener(l, err, errlen)) != 0)
        goto fail;
    if (sec_url_has_scheme(opts->url, "ipc") &&
        (rv = nng_thread_create(&l->watchdog, watchdog_main, l)) != 0) {
        snprintf(err, errlen, "cannot start the listener watchdog: %s", nng_strerror(rv));
        goto fail;
    }
    if (limits_on(l) && (rv = nng_thread_create(&l->reaper, reaper_main, l)) != 0) {
        snprintf(err, errlen, "cannot start the listener's reaper: %s", nng_strerror(rv));
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
    if (l->reaper)
        nng_thread_destroy(l->reaper);
    if (nng_listener_id(l->listener) > 0)
        nng_listener_close(l->listener);
    nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_POST, NULL, NULL);
    nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, NULL, NULL);
    registry_remove(l); /* after it, no notification can reach l */
    while (l->pending_head)
        pending_unlink(l, l->pending_head);
    if (l->cv)
        nng_cv_free(l->cv);
    if (l->mtx)
        nng_mtx_free(l->mtx);
    free(l);
}

unsigned sp_listener_restarts(sp_listener *l)
{
    return atomic_load(&l->restarts);
}
