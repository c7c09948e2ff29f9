/* transport — see transport.h. */
#include "transport.h"

#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "orch_metrics.h"
#include "security.h"
#include "util.h"
#include "wire.h"

#define PEER_MAX_PIPES      16    /* connections tracked per participant (normally one) */
#define REDIAL_AFTER_MS     2000  /* without a connection this long: replace the dialer */
#define PIPE_AUDIT_EVERY_MS 1000  /* how often the pipe sets are checked against nng */
#define AVOID_MIN_MS        500   /* a replica that failed: first pause before a probe */
#define AVOID_MAX_MS        10000 /* ... doubling per failure up to this */

/* What carries one message in flight (transport.h): the frame's first call
 * says which calls it answers. Taken and given back on the engine thread;
 * its callback runs on an nng thread. */
typedef struct transport_carrier {
    nng_ctx ctx;
    nng_aio *aio;
    transport_call *call; /* the first call of the frame it carries */
    struct transport_carrier *next_free;
    int receiving;
    int64_t deadline_mono;
} carrier;

/* One replica of a participant (one URL, one socket). The pipe fields are written by nng's pipe
 * callbacks and read by the engine thread, under mtx.
 *
 * nng runs a pipe's ADD_POST callback outside its socket lock, after the
 * pipe has started: a peer that hangs up at once can have the pipe's
 * REM_POST run first, on the reaper thread. Counted naively, that pipe
 * would stay "connected" forever and the redial below would never happen
 * (seen in the chaos run, with participants killed right after a restart).
 * So a REM_POST for a pipe not yet added is remembered (gone[]) and its
 * late ADD_POST ignored; and transport_maintain drops any pipe nng no longer
 * knows, whatever the order of events. */
typedef struct transport_peer {
    nng_socket sock;
    const char *name;
    const char *url;
    const sec_tls_files *tls; /* the transport's; used for tls+tcp:// URLs */
    char *tls_host;           /* the URL's host: the name its certificate must carry */
    nng_dialer dialer;
    transport_call *free_calls;
    carrier *free_carriers;
    transport_call *queued_head, *queued_tail; /* sent by transport_flush */
    nng_mtx *mtx;
    uint32_t pipes[PEER_MAX_PIPES]; /* ids of connected pipes; 0: free slot */
    int n_pipes;
    uint32_t gone[PEER_MAX_PIPES]; /* removed before their ADD_POST ran; 0: free slot */
    unsigned gone_next;            /* the slot gone[] overwrites next */
    int64_t disconnected_since;    /* monotonic ms; 0 while connected */
    unsigned redials;              /* in the current outage; 0 while connected */
    log_throttle untrusted_log;    /* reports of a socket of another user */
    log_throttle frame_error_log;  /* reports of a frame answered wrongly */
    /* Engine thread only: the choice of a replica (transport.h). */
    size_t participant, replica; /* indexes in the configuration */
    size_t n_replicas;           /* of its participant */
    uint64_t in_use;             /* calls queued, in flight, or not released yet */
    unsigned fails;              /* failures since its last answer */
    int64_t avoid_until;         /* monotonic ms; while fails > 0, no probe before */
    int connected_shown;         /* the metrics' gauge, as last set */
} peer;

/* The replicas of one participant: peers[first .. first + n). */
typedef struct {
    size_t first, n;
    size_t next; /* round-robin start among equally good replicas */
} service;

struct transport {
    peer *peers; /* every replica of every participant, participant by participant */
    size_t n_peers;
    service *services; /* one per participant */
    size_t n_services;
    orch_metrics *metrics; /* per-replica counters; NULL: none */
    transport_done_fn done;
    void *done_arg;
    sec_tls_files tls;        /* borrowed from the orch_config */
    int64_t pipes_audited_ms; /* last peer_drop_dead_pipes pass (engine thread) */
    size_t frame_max;         /* requests per frame; 1: never frames */
    /* Every call and carrier ever made, so destroy can free them. Engine
     * thread only. */
    transport_call **all;
    size_t n_all, cap_all;
    carrier **all_carriers;
    size_t n_carriers, cap_carriers;
};

static void carrier_callback(void *arg);

/* Is a throttled report of p due now (log.h: at most once a minute)? */
static int peer_report_due(peer *p, log_throttle *t)
{
    nng_mtx_lock(p->mtx);
    int due = log_throttle_hit(t, util_mono_ms()) > 0;
    nng_mtx_unlock(p->mtx);
    return due;
}

/* Before a connection to a participant is used: over ipc://, refuse one to a
 * process of another user, who may have created the socket first. */
static void peer_pipe_check(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    peer *p = arg;
    uint64_t uid = 0;
    (void)ev;
    if (sec_pipe_peer_trusted(pipe, p->url, &uid))
        return;
    nng_pipe_close(pipe);
    if (peer_report_due(p, &p->untrusted_log))
        log_error("participant %s: refusing the connection to %s: the socket belongs to a "
                  "process of uid %llu, not this user: another user may have taken the address",
                  p->name, p->url, (unsigned long long)uid);
}

/* With p->mtx held: removes pipe id from the connected set. Returns 1 when it was there. */
static int peer_forget_pipe(peer *p, uint32_t id)
{
    for (int i = 0; i < PEER_MAX_PIPES; i++) {
        if (p->pipes[i] == id) {
            p->pipes[i] = 0;
            p->n_pipes--;
            if (p->n_pipes == 0 && p->disconnected_since == 0)
                p->disconnected_since = util_mono_ms();
            return 1;
        }
    }
    return 0;
}

/* Drops the pipes nng no longer knows (closed and reaped) from p's set. */
static void peer_drop_dead_pipes(peer *p)
{
    uint32_t ids[PEER_MAX_PIPES];
    nng_mtx_lock(p->mtx);
    memcpy(ids, p->pipes, sizeof ids);
    nng_mtx_unlock(p->mtx);
    for (int i = 0; i < PEER_MAX_PIPES; i++) {
        if (ids[i] == 0)
            continue;
        nng_pipe pipe = {.id = ids[i]};
        nng_sockaddr sa;
        int rv = nng_pipe_get_addr(pipe, NNG_OPT_REMADDR, &sa);
        if (rv != NNG_ENOENT && rv != NNG_ECLOSED)
            continue;
        nng_mtx_lock(p->mtx);
        if (peer_forget_pipe(p, ids[i]))
            log_debug("participant %s: pipe %u had closed without a removal event", p->name,
                      ids[i]);
        nng_mtx_unlock(p->mtx);
    }
}

/* Keeps the set of connected pipes of a peer (nng thread). */
static void peer_pipe_event(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    peer *p = arg;
    uint32_t id = (uint32_t)nng_pipe_id(pipe);
    nng_mtx_lock(p->mtx);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        int removed_already = 0;
        for (int i = 0; i < PEER_MAX_PIPES; i++) {
            if (p->gone[i] == id) {
                p->gone[i] = 0;
                removed_already = 1;
            }
        }
        if (!removed_already) {
            for (int i = 0; i < PEER_MAX_PIPES; i++) {
                if (p->pipes[i] == 0) {
                    p->pipes[i] = id;
                    p->n_pipes++;
                    break;
                }
            }
            p->disconnected_since = 0;
            p->redials = 0;
        }
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        if (!peer_forget_pipe(p, id))
            p->gone[p->gone_next++ % PEER_MAX_PIPES] = id; /* its ADD_POST is still to come */
    }
    nng_mtx_unlock(p->mtx);
}

static int peer_dial(peer *p, char *err, size_t errlen)
{
    int rv = nng_dialer_create(&p->dialer, p->sock, p->url);
    if (rv == 0 && sec_url_is_tls(p->url) &&
        (rv = sec_tls_dialer(p->dialer, p->tls, p->tls_host, err, errlen)) != 0) {
        nng_dialer_close(p->dialer);
        char why[256];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "participant %s: %s: %s", p->name, p->url, why);
        return rv;
    }
    if (rv == 0) {
        nng_dialer_set_ms(p->dialer, NNG_OPT_RECONNMINT, 20);
        nng_dialer_set_ms(p->dialer, NNG_OPT_RECONNMAXT, 1000);
        rv = nng_dialer_start(p->dialer, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0)
        snprintf(err, errlen, "participant %s: cannot dial %s: %s", p->name, p->url,
                 nng_strerror(rv));
    return rv;
}

/* Opens and dials p's socket (p->name and p->url set). */
static int peer_open(transport *t, peer *p, char *err, size_t errlen)
{
    int rv = nng_req0_open(&p->sock);
    if (rv != 0) {
        snprintf(err, errlen, "participant %s: cannot open socket: %s", p->name, nng_strerror(rv));
        return rv;
    }
    p->tls = &t->tls;
    if (sec_url_is_tls(p->url) && (p->tls_host = sec_url_host(p->url)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NNG_ENOMEM;
    }
    if ((rv = nng_mtx_alloc(&p->mtx)) != 0) {
        snprintf(err, errlen, "out of memory");
        return rv;
    }
    p->disconnected_since = util_mono_ms();
    /* Our own attempts and timeouts decide when to resend; nng only
     * resends when the connection carrying a request is lost. */
    nng_socket_set_ms(p->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    /* The answer to a frame holds up to WIRE_BATCH_MAX replies; the engine
     * refuses a single reply over WIRE_MAX_MSG (wire.h, WIRE_RECV_SLACK). */
    nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ,
                        WIRE_RECV_MAX(t->frame_max > 1 ? WIRE_MAX_BATCH_REPLY : WIRE_MAX_MSG));
    if ((rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_ADD_PRE, peer_pipe_check, p)) != 0 ||
        (rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_ADD_POST, peer_pipe_event, p)) != 0 ||
        (rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_REM_POST, peer_pipe_event, p)) != 0) {
        snprintf(err, errlen, "participant %s: %s", p->name, nng_strerror(rv));
        return rv;
    }
    return peer_dial(p, err, errlen);
}

transport *transport_create(const orch_config *cfg, transport_done_fn done, void *arg, char *err,
                            size_t errlen)
{
    size_t n_urls = 0;
    for (size_t i = 0; i < cfg->n_participants; i++)
        n_urls += cfg->participants[i].n_urls;
    transport *t = calloc(1, sizeof *t);
    if (t == NULL || (t->peers = calloc(n_urls ? n_urls : 1, sizeof *t->peers)) == NULL ||
        (t->services =
             calloc(cfg->n_participants ? cfg->n_participants : 1, sizeof *t->services)) == NULL) {
        snprintf(err, errlen, "out of memory");
        if (t != NULL)
            free(t->peers);
        free(t);
        return NULL;
    }
    t->done = done;
    t->done_arg = arg;
    t->frame_max = cfg->frame_max >= 1 && cfg->frame_max <= WIRE_BATCH_MAX ? (size_t)cfg->frame_max
                                                                           : WIRE_BATCH_MAX;
    t->tls = (sec_tls_files){.ca_file = cfg->tls_ca_file,
                             .cert_file = cfg->tls_cert_file,
                             .key_file = cfg->tls_key_file};
    t->n_services = cfg->n_participants;
    for (size_t i = 0, k = 0; i < cfg->n_participants; i++) {
        const participant_def *pd = &cfg->participants[i];
        t->services[i] = (service){.first = k, .n = pd->n_urls, .next = 0};
        for (size_t j = 0; j < pd->n_urls; j++, k++) {
            peer *p = &t->peers[k];
            p->name = pd->name;
            p->url = pd->urls[j];
            p->participant = i;
            p->replica = j;
            p->n_replicas = pd->n_urls;
            t->n_peers = k + 1; /* destroy handles a half-opened peer */
            if (peer_open(t, p, err, errlen) != 0)
                goto fail;
        }
    }
    return t;
fail:
    transport_destroy(t);
    return NULL;
}

void transport_set_metrics(transport *t, orch_metrics *m)
{
    t->metrics = m;
}

size_t transport_replicas(const transport *t, size_t participant)
{
    return participant < t->n_services ? t->services[participant].n : 0;
}

const char *transport_replica_url(const transport *t, size_t participant, size_t replica)
{
    if (participant >= t->n_services || replica >= t->services[participant].n)
        return NULL;
    return t->peers[t->services[participant].first + replica].url;
}

static int peer_connected(peer *p)
{
    nng_mtx_lock(p->mtx);
    int connected = p->n_pipes > 0;
    nng_mtx_unlock(p->mtx);
    return connected;
}

int transport_replica_connected(transport *t, size_t participant, size_t replica)
{
    if (participant >= t->n_services || replica >= t->services[participant].n)
        return 0;
    return peer_connected(&t->peers[t->services[participant].first + replica]);
}

/*
 * The replica of sv that gets the next request (transport.h, "Replicas").
 * Usable: connected, and either answering (no failure since its last
 * answer) or due a probe (its pause is over and nothing of it is
 * outstanding). Among the usable, the fewest calls outstanding; when none
 * is usable, the fewest failures, then the fewest outstanding. Ties go
 * round-robin.
 */
static peer *choose_replica(transport *t, service *sv)
{
    if (sv->n == 1)
        return &t->peers[sv->first];
    int64_t now = util_mono_ms();
    peer *best = NULL;
    size_t best_k = 0;
    int best_usable = 0;
    for (size_t i = 0; i < sv->n; i++) {
        size_t k = (sv->next + i) % sv->n;
        peer *p = &t->peers[sv->first + k];
        int usable =
            peer_connected(p) && (p->fails == 0 || (now >= p->avoid_until && p->in_use == 0));
        int better;
        if (best == NULL || usable != best_usable)
            better = best == NULL || usable;
        else if (!usable && p->fails != best->fails)
            better = p->fails < best->fails;
        else
            better = p->in_use < best->in_use;
        if (better) {
            best = p;
            best_k = k;
            best_usable = usable;
        }
    }
    sv->next = (best_k + 1) % sv->n;
    return best;
}

/* Engine thread: c's replica answered (result 0) or did not. */
static void peer_note_result(transport *t, peer *p, int result)
{
    if (result == NNG_ECLOSED)
        return; /* shutting down: says nothing of the replica */
    om_on_replica_result(t->metrics, p->participant, p->replica, result == 0);
    if (result == 0) {
        if (p->fails > 0 && p->n_replicas > 1)
            log_info("participant %s: replica %s answers again", p->name, p->url);
        p->fails = 0;
        p->avoid_until = 0;
        return;
    }
    int64_t now = util_mono_ms();
    if (now < p->avoid_until)
        return; /* one failure per pause: a frame's calls fail together */
    unsigned shift = p->fails < 5 ? p->fails : 5;
    int64_t pause = (int64_t)AVOID_MIN_MS << shift;
    p->fails++;
    p->avoid_until = now + (pause < AVOID_MAX_MS ? pause : AVOID_MAX_MS);
    if (p->fails == 1 && p->n_replicas > 1)
        log_warn("participant %s: replica %s did not answer (%s): sending to the other "
                 "replicas, probing it again in %lld ms",
                 p->name, p->url, nng_strerror(result), (long long)(p->avoid_until - now));
}

static transport_call *call_get(transport *t, peer *p)
{
    transport_call *c = p->free_calls;
    if (c != NULL) {
        p->free_calls = c->next_free;
        p->in_use++;
        return c;
    }
    if (t->n_all == t->cap_all) {
        size_t cap = t->cap_all ? t->cap_all * 2 : 64;
        transport_call **all = realloc(t->all, cap * sizeof *all);
        if (all == NULL)
            return NULL;
        t->all = all;
        t->cap_all = cap;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->owner = t;
    c->peer = p;
    c->participant = p->participant;
    c->replica = p->replica;
    t->all[t->n_all++] = c;
    p->in_use++;
    return c;
}

/* Back to its replica's pool. */
static void call_put(transport_call *c)
{
    peer *p = c->peer;
    c->next_free = p->free_calls;
    p->free_calls = c;
    p->in_use--;
}

/* A carrier on p's socket, from its pool or new; NULL when out of memory. */
static carrier *carrier_get(transport *t, peer *p)
{
    carrier *k = p->free_carriers;
    if (k != NULL) {
        p->free_carriers = k->next_free;
        return k;
    }
    if (t->n_carriers == t->cap_carriers) {
        size_t cap = t->cap_carriers ? t->cap_carriers * 2 : 64;
        carrier **all = realloc(t->all_carriers, cap * sizeof *all);
        if (all == NULL)
            return NULL;
        t->all_carriers = all;
        t->cap_carriers = cap;
    }
    k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    if (nng_ctx_open(&k->ctx, p->sock) != 0) {
        free(k);
        return NULL;
    }
    if (nng_aio_alloc(&k->aio, carrier_callback, k) != 0) {
        nng_ctx_close(k->ctx);
        free(k);
        return NULL;
    }
    t->all_carriers[t->n_carriers++] = k;
    return k;
}

int transport_send(transport *t, size_t participant, const char *saga_id, uint64_t token, int step,
                   int phase, const void *buf, size_t len, int64_t timeout_ms)
{
    peer *p = choose_replica(t, &t->services[participant]);
    transport_call *c = call_get(t, p);
    if (c == NULL)
        return NNG_ENOMEM;
    nng_msg *msg;
    int rv = nng_msg_alloc(&msg, 0);
    if (rv == 0 && (rv = nng_msg_append(msg, buf, len)) != 0)
        nng_msg_free(msg);
    if (rv != 0) {
        call_put(c);
        return rv;
    }
    snprintf(c->saga_id, sizeof c->saga_id, "%s", saga_id);
    c->token = token;
    c->step = step;
    c->phase = phase;
    c->result = 0;
    c->reply = NULL;
    c->request = msg;
    c->timeout_ms = timeout_ms;
    c->frame_next = NULL;
    c->next_queued = NULL;
    c->carrier = NULL;
    if (p->queued_tail)
        p->queued_tail->next_queued = c;
    else
        p->queued_head = c;
    p->queued_tail = c;
    om_on_replica_sent(t->metrics, p->participant, p->replica);
    return 0;
}

static void frame_done(transport_call *c, int rv, nng_msg *answer);

/* Sends c's message (c->request, now the carrier's) and the frame that
 * follows c (frame_next) on a carrier of its replica. Without one (out of
 * memory) the frame completes at once with NNG_ENOMEM, as a failed send. */
static void call_start(transport_call *c)
{
    nng_msg *msg = c->request;
    c->request = NULL;
    carrier *k = carrier_get(c->owner, c->peer);
    if (k == NULL) {
        nng_msg_free(msg);
        frame_done(c, NNG_ENOMEM, NULL);
        return;
    }
    c->carrier = k;
    k->call = c;
    k->receiving = 0;
    k->deadline_mono = util_mono_ms() + c->timeout_ms;
    nng_aio_set_msg(k->aio, msg);
    nng_aio_set_timeout(k->aio, (nng_duration)c->timeout_ms);
    nng_ctx_send(k->ctx, k->aio);
}

/*
 * Sends the n calls of list (linked by frame_next) as one frame carried by
 * the first; alone when n is 1 or the frame cannot be built (out of memory).
 */
static void frame_send(transport_call *list, size_t n)
{
    const uint8_t *parts[WIRE_BATCH_MAX];
    size_t lens[WIRE_BATCH_MAX], k = 0, len = 0;
    uint8_t *buf = NULL;
    nng_msg *msg = NULL;
    if (n > 1) {
        for (transport_call *c = list; c; c = c->frame_next, k++) {
            parts[k] = nng_msg_body(c->request);
            lens[k] = nng_msg_len(c->request);
        }
        buf = wire_pack_batch(n, parts, lens, &len);
    }
    if (buf != NULL && nng_msg_alloc(&msg, 0) != 0) {
        msg = NULL;
    } else if (buf != NULL && nng_msg_append(msg, buf, len) != 0) {
        nng_msg_free(msg);
        msg = NULL;
    }
    free(buf);
    if (msg == NULL) { /* one at a time */
        for (transport_call *c = list, *next; c; c = next) {
            next = c->frame_next;
            c->frame_next = NULL;
            call_start(c);
        }
        return;
    }
    for (transport_call *c = list->frame_next; c; c = c->frame_next) {
        nng_msg_free(c->request); /* copied into the frame */
        c->request = NULL;
    }
    nng_msg_free(list->request);
    list->request = msg;
    call_start(list);
}

/*
 * Sends, in frames, every call of list (linked by next_queued) that has the
 * first call's timeout, in order; returns the others, in order.
 */
static transport_call *flush_one_timeout(transport *t, transport_call *list)
{
    int64_t timeout_ms = list->timeout_ms;
    transport_call *others = NULL, **others_tail = &others, *head = NULL, *tail = NULL;
    size_t n = 0, bytes = 0;
    for (transport_call *c = list, *next; c != NULL; c = next) {
        next = c->next_queued;
        c->next_queued = NULL;
        if (c->timeout_ms != timeout_ms) {
            *others_tail = c;
            others_tail = &c->next_queued;
            continue;
        }
        size_t len = nng_msg_len(c->request) + 8; /* with its field tag and length */
        /* Within the limits (the participant's receive limit counts nng's header too). */
        if (head != NULL && (n == t->frame_max || 1 + bytes + len > WIRE_MAX_MSG - 16)) {
            frame_send(head, n);
            head = NULL;
        }
        if (head == NULL) {
            head = c;
            n = bytes = 0;
        } else {
            tail->frame_next = c;
        }
        tail = c;
        n++;
        bytes += len;
    }
    if (head != NULL)
        frame_send(head, n);
    return others;
}

void transport_flush(transport *t)
{
    for (size_t i = 0; i < t->n_peers; i++) {
        peer *p = &t->peers[i];
        transport_call *rest = p->queued_head;
        p->queued_head = p->queued_tail = NULL;
        while (rest != NULL)
            rest = flush_one_timeout(t, rest);
    }
}

/* At most once a minute per participant: it would repeat for every frame. */
static void frame_error_report(peer *p, size_t n, int was_frame)
{
    if (peer_report_due(p, &p->frame_error_log))
        log_warn("participant %s: answered a frame of %zu requests with %s; taken as no answer "
                 "for each (a participant that does not accept frames needs frame_max = 1)",
                 p->name, n, was_frame ? "another number of replies" : "a single reply");
}

/*
 * Completes every call of c's frame: result rv, or (rv 0) each its own
 * reply out of the answer. Runs on an nng thread; the calls are handed over
 * only once the frame is taken apart, since each may be reused at once.
 */
static void frame_done(transport_call *c, int rv, nng_msg *answer)
{
    transport_call *calls[WIRE_BATCH_MAX];
    size_t n = 0;
    for (transport_call *m = c; m && n < WIRE_BATCH_MAX; m = m->frame_next)
        calls[n++] = m;
    StepBatch *b = NULL;
    if (rv == 0) {
        b = wire_unpack_batch(nng_msg_body(answer), nng_msg_len(answer));
        if (b == NULL || b->n_items != n) {
            frame_error_report(c->peer, n, b != NULL);
            rv = NNG_EPROTO;
        }
    }
    for (size_t i = 0; i < n; i++) {
        transport_call *m = calls[i];
        m->frame_next = NULL;
        m->result = rv;
        m->reply = NULL;
        if (rv != 0)
            continue;
        if (nng_msg_alloc(&m->reply, 0) != 0 ||
            nng_msg_append(m->reply, b->items[i].data, b->items[i].len) != 0) {
            nng_msg_free(m->reply);
            m->reply = NULL;
            m->result = NNG_ENOMEM;
        }
    }
    if (b != NULL)
        saga__v1__step_batch__free_unpacked(b, NULL);
    nng_msg_free(answer);
    transport *t = c->owner; /* c may be reused as soon as it is handed over */
    t->done(t->done_arg, calls, n);
}

/* Runs on an nng thread: advance SENDING -> RECEIVING -> DONE. */
static void carrier_callback(void *arg)
{
    carrier *k = arg;
    transport_call *c = k->call;
    int rv = nng_aio_result(k->aio);
    if (!k->receiving) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(k->aio)); /* a failed send leaves it with us */
            if (c->frame_next != NULL) {
                frame_done(c, rv, NULL);
                return;
            }
            c->result = rv;
            c->owner->done(c->owner->done_arg, &c, 1);
            return;
        }
        int64_t left = k->deadline_mono - util_mono_ms();
        k->receiving = 1;
        nng_aio_set_timeout(k->aio, (nng_duration)(left > 0 ? left : 1));
        nng_ctx_recv(k->ctx, k->aio);
        return;
    }
    if (c->frame_next != NULL) { /* a frame */
        frame_done(c, rv, rv == 0 ? nng_aio_get_msg(k->aio) : NULL);
        return;
    }
    c->result = rv;
    c->reply = rv == 0 ? nng_aio_get_msg(k->aio) : NULL;
    c->owner->done(c->owner->done_arg, &c, 1);
}

void transport_release(transport *t, transport_call *c)
{
    peer_note_result(t, c->peer, c->result);
    if (c->reply != NULL) {
        nng_msg_free(c->reply);
        c->reply = NULL;
    }
    if (c->carrier != NULL) { /* the first call of its frame: the carrier is done with */
        carrier *k = c->carrier;
        c->carrier = NULL;
        k->call = NULL;
        k->next_free = c->peer->free_carriers;
        c->peer->free_carriers = k;
    }
    call_put(c);
}

void transport_maintain(transport *t)
{
    int64_t now = util_mono_ms();
    char err[256];
    int audit = now - t->pipes_audited_ms >= PIPE_AUDIT_EVERY_MS;
    if (audit)
        t->pipes_audited_ms = now;
    for (size_t i = 0; i < t->n_peers; i++) {
        peer *p = &t->peers[i];
        if (audit)
            peer_drop_dead_pipes(p);
        nng_mtx_lock(p->mtx);
        int connected = p->n_pipes > 0;
        int stuck = p->n_pipes == 0 && p->disconnected_since != 0 &&
                    now - p->disconnected_since >= REDIAL_AFTER_MS;
        unsigned redials = 0;
        if (stuck) {
            p->disconnected_since = now; /* the next redial, if needed, is as far away */
            redials = ++p->redials;
        }
        nng_mtx_unlock(p->mtx);
        if (connected != p->connected_shown) {
            p->connected_shown = connected;
            om_set_replica_connected(t->metrics, p->participant, p->replica, connected);
        }
        if (!stuck)
            continue;
        /* Once per outage at WARN: a participant that is down stays quiet. */
        log_msg(redials == 1 ? LOG_WARN : LOG_DEBUG,
                "participant %s: no connection to %s for %d ms: dialing anew", p->name, p->url,
                REDIAL_AFTER_MS);
        nng_dialer_close(p->dialer);
        if (peer_dial(p, err, sizeof err) != 0)
            log_error("%s", err);
    }
}

void transport_close(transport *t)
{
    for (size_t i = 0; i < t->n_peers; i++)
        nng_close(t->peers[i].sock);
}

void transport_destroy(transport *t)
{
    if (t == NULL)
        return;
    transport_close(t);
    /* Every aio first: a frame's callback completes the frame's calls,
     * which must all still exist when it runs. */
    for (size_t i = 0; i < t->n_carriers; i++)
        nng_aio_stop(t->all_carriers[i]->aio); /* waits for a callback in progress */
    for (size_t i = 0; i < t->n_carriers; i++) {
        nng_aio_free(t->all_carriers[i]->aio);
        free(t->all_carriers[i]);
    }
    free(t->all_carriers);
    for (size_t i = 0; i < t->n_all; i++) {
        if (t->all[i]->reply)
            nng_msg_free(t->all[i]->reply);
        if (t->all[i]->request) /* queued, never flushed */
            nng_msg_free(t->all[i]->request);
        free(t->all[i]);
    }
    free(t->all);
    for (size_t i = 0; i < t->n_peers; i++) {
        if (t->peers[i].mtx)
            nng_mtx_free(t->peers[i].mtx);
        free(t->peers[i].tls_host);
    }
    free(t->peers);
    free(t->services);
    free(t);
}
