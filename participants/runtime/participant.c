/*
 * participant — the runtime's lifecycle, operation registry, counters, and
 * the serving machinery: an nng rep0 socket with `contexts` contexts whose
 * requests are run in batches (batch.c), and one worker thread for the purge.
 *
 * Each context is a small state machine driven by its aio callback, as in
 * nng's demo/async/server.c, with a queue in the middle:
 *
 *   RECV --recv ok--> QUEUED --served: reply----------------------> SEND
 *                       |-------served: delay fault--> DELAY --sleep done--> SEND
 *                       `-------served: drop fault, or no reply---------> RECV
 *   SEND --send done (ok or failed)--> RECV
 *   RECV, SEND, DELAY --socket closed, aio stopped, or stopping--> IDLE
 *
 *   state   who moves it              facts that hold
 *   RECV    pt_conn_recv              an nng_ctx_recv is pending; c->msg NULL
 *   QUEUED  pt_conn_cb (recv ok)      c->msg holds the request; c is on the queue
 *   SEND    pt_conn_reply_prepare,    the reply is in the aio; replies_pending counts it
 *           pt_conn_cb                (between prepare and pt_conn_reply_start the
 *                                     serving thread still holds c, the reply in c->msg)
 *   DELAY   pt_conn_reply_prepare     nng_sleep_aio pending; c->msg holds the reply;
 *                                     replies_pending counts it
 *   IDLE    pt_conn_cb                nothing pending; c->msg NULL
 *
 * Only the callback and the serving thread touch a context, never both at
 * once: a context is on the queue exactly while no aio operation is pending
 * on it. Nothing blocks on the network: a delayed reply sleeps on the
 * context's own aio.
 *
 * Serving: at most one thread at a time uses the store (p->serving, under
 * p->mtx). The callback that queues a request while nobody serves (and the
 * worker is not waiting for its turn) becomes the serving thread: it takes
 * everything queued (at most PT_BATCH_MAX requests) as one batch, runs it in
 * one transaction, hands the replies to nng only after COMMIT (batch.c), and
 * goes on while requests keep coming, for at most PT_CALLBACK_BATCHES
 * batches. Why not a dedicated thread: waking it cost a context switch per
 * batch, most of a request's cost at low load on a VM. Whoever stops serving
 * with requests still queued wakes the worker, which serves them, so no
 * request is left without a server (the queueing, the check of `serving`
 * and the hand-over happen under one mutex).
 *
 * The worker thread serves the queue a callback handed over, and every
 * purge_every_ms waits for its turn (callbacks step aside for it) and purges
 * purge_batch expired records per transaction, then serves what queued
 * meanwhile; while a purge fills its batch it goes on at once, so purges and
 * request batches alternate and neither starves the other.
 *
 * Stopping (pt_stop): the flag stops new requests from being queued, the
 * worker waits for the serving thread, answers the queue, then exits;
 * pt_stop waits (bounded) for replies in flight, closes the listener
 * (common/listener.h, whose ipc:// watchdog it joins), closes the socket
 * and stops every aio.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "db_url.h"
#include "crashpoint.h"
#include "log.h"
#include "pt_internal.h"
#include "pt_metrics.h"

#define PT_RETENTION_MS   (7LL * 24 * 3600 * 1000)
#define PT_PURGE_BATCH    500
#define PT_PURGE_EVERY_MS 60000
/* How long pt_stop waits for replies already handed to nng. */
#define PT_STOP_GRACE_MS 2000
/*
 * Batches a serving callback runs before it hands the queue to the worker,
 * and the worker before it looks at the purge again: under a load that
 * never empties the queue, neither the purge nor nng's thread (whose pipe
 * cannot be reaped while its callback runs) waits for long.
 */
#define PT_CALLBACK_BATCHES 4
#define PT_WORKER_BATCHES   16

typedef enum {
    PT_CONN_IDLE,
    PT_CONN_RECV,
    PT_CONN_QUEUED,
    PT_CONN_SEND,
    PT_CONN_DELAY,
} pt_conn_state;

struct pt_conn {
    participant *p;
    nng_ctx ctx;
    nng_aio *aio;
    pt_conn_state state;
    nng_msg *msg;     /* QUEUED: the request; DELAY: the reply (owned by the conn) */
    StepBatch *frame; /* QUEUED: the request unpacked when it is a frame, else NULL */
    size_t n_items;   /* QUEUED: requests in it (the frame's items, or 1) */
    pt_conn *next;    /* queue link */
};

/* ---- Registry and counters --------------------------------------------- */

const pt_op *pt_op_find(const participant *p, const char *name)
{
    for (size_t i = 0; i < p->n_ops; i++)
        if (strcmp(p->ops[i].name, name) == 0)
            return &p->ops[i];
    return NULL;
}

static int pt_op_name_ok(const participant *p, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n > 0 && n <= WIRE_MAX_NAME && pt_op_find(p, name) == NULL;
}

/* Appends one operation; copies the names. Returns 0 or -1. */
static int pt_op_add(participant *p, const char *name, pt_handler h, pt_tx_handler txh, void *arg,
                     int phase, const char *partner)
{
    pt_op *ops = realloc(p->ops, (p->n_ops + 1) * sizeof *ops);
    if (ops == NULL)
        return -1;
    p->ops = ops;
    pt_op *op = &ops[p->n_ops];
    op->name = util_strdup(name);
    op->partner = partner ? util_strdup(partner) : NULL;
    op->handler = h;
    op->tx_handler = txh;
    op->arg = arg;
    op->phase = phase;
    if (op->name == NULL || (partner && op->partner == NULL)) {
        free(op->name);
        free(op->partner);
        return -1;
    }
    p->n_ops++;
    return 0;
}

/* Registers an action and its compensation: SQLite handlers (a, c) or neutral ones (ta, tc). */
static int pt_register_pair(participant *p, const char *action_op, pt_handler a, pt_tx_handler ta,
                            const char *compensation_op, pt_handler c, pt_tx_handler tc, void *arg)
{
    if (p == NULL || p->started || (a == NULL && ta == NULL) || !pt_op_name_ok(p, action_op))
        return -1;
    if ((compensation_op == NULL) != (c == NULL && tc == NULL))
        return -1;
    if (compensation_op &&
        (!pt_op_name_ok(p, compensation_op) || strcmp(action_op, compensation_op) == 0))
        return -1;
    if (pt_op_add(p, action_op, a, ta, arg, PHASE_ACTION, compensation_op) != 0)
        return -1;
    if (compensation_op &&
        pt_op_add(p, compensation_op, c, tc, arg, PHASE_COMPENSATE, action_op) != 0) {
        p->n_ops--; /* undo the action: a half registration is none */
        free(p->ops[p->n_ops].name);
        free(p->ops[p->n_ops].partner);
        return -1;
    }
    return 0;
}

int pt_register(participant *p, const char *action_op, pt_handler action,
                const char *compensation_op, pt_handler compensation, void *arg)
{
    if (p != NULL && p->be->backend != PT_BACKEND_SQLITE) {
        log_error("%s: operation '%s' has a SQLite handler (pt_register) but the database is "
                  "%s: register handlers on the neutral API with pt_register_tx",
                  p->name, action_op ? action_op : "?", p->be->name);
        return -1;
    }
    if (action == NULL)
        return -1;
    return pt_register_pair(p, action_op, action, NULL, compensation_op, compensation, NULL, arg);
}

int pt_register_tx(participant *p, const char *action_op, pt_tx_handler action,
                   const char *compensation_op, pt_tx_handler compensation, void *arg)
{
    if (action == NULL)
        return -1;
    return pt_register_pair(p, action_op, NULL, action, compensation_op, NULL, compensation, arg);
}

void pt_stats_add(participant *p, const pt_stats *d)
{
    nng_mtx_lock(p->mtx);
    p->stats.requests += d->requests;
    p->stats.effects += d->effects;
    p->stats.replays += d->replays;
    p->stats.conflicts += d->conflicts;
    p->stats.skipped += d->skipped;
    p->stats.retries += d->retries;
    p->stats.malformed += d->malformed;
    p->stats.purged += d->purged;
    p->stats.frames += d->frames;
    p->stats.outlived += d->outlived;
    p->stats.syncs += d->syncs;
    nng_mtx_unlock(p->mtx);
}

void pt_get_stats(participant *p, pt_stats *out)
{
    nng_mtx_lock(p->mtx);
    *out = p->stats;
    nng_mtx_unlock(p->mtx);
    out->listener_restarts = p->listener ? sp_listener_restarts(p->listener) : 0;
}

/* ---- Lifecycle --------------------------------------------------------- */

/*
 * The security policy of the listen address (docs/SECURITY.md), checked
 * before anything is created: TLS settings only with a tls+tcp:// URL, a
 * certificate for such a URL, no address other hosts can reach without
 * mutual TLS, and an ipc:// socket only in a directory nobody else can write.
 */
int pt_check_security(const pt_options *o, char *err, size_t errlen)
{
    char why[1024];
    const char *url = o->listen_url;
    int any_tls =
        o->tls_cert_file || o->tls_key_file || o->tls_ca_file || o->tls_require_client_cert;
    if (url == NULL)
        return 0;
    if (!sec_url_is_tls(url)) {
        if (any_tls) {
            snprintf(err, errlen, "TLS options are set but %s is not a tls+tcp:// URL", url);
            return -1;
        }
    } else if (o->tls_cert_file == NULL || o->tls_key_file == NULL) {
        snprintf(err, errlen, "%s needs a certificate and its key (--tls-cert, --tls-key)", url);
        return -1;
    } else if (o->tls_require_client_cert && o->tls_ca_file == NULL) {
        snprintf(err, errlen,
                 "requiring client certificates needs the CA that signs them "
                 "(--tls-ca)");
        return -1;
    }
    if (sec_url_has_scheme(url, "ipc") && sec_check_socket_dir(url + 6, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: --listen %s: %s", o->name ? o->name : "participant", url, why);
        return -1;
    }
    return sec_check_exposure(
        o->name ? o->name : "participant", url, o->tls_cert_file != NULL && o->tls_key_file != NULL,
        o->tls_require_client_cert && o->tls_ca_file != NULL, "--tls-cert FILE --tls-key FILE",
        "--tls-ca FILE --tls-require-client-cert (mutual TLS)", err, errlen);
}

participant *pt_create(const pt_options *opts, char *err, size_t errlen)
{
    participant *p = NULL;
    if (opts == NULL || opts->db_path == NULL || *opts->db_path == '\0') {
        snprintf(err, errlen, "no database path");
        return NULL;
    }
    if (opts->contexts < 0 || opts->contexts > PT_CONTEXTS_MAX || opts->retention_ms < 0 ||
        opts->purge_batch < 0 || opts->purge_every_ms < 0) {
        snprintf(err, errlen, "bad options: contexts must be in [0, %d], durations and batch >= 0",
                 PT_CONTEXTS_MAX);
        return NULL;
    }
    if (pt_check_security(opts, err, errlen) != 0)
        return NULL;
    p = calloc(1, sizeof *p);
    if (p == NULL)
        goto oom;
    p->name = util_strdup(opts->name ? opts->name : "participant");
    if (p->name == NULL)
        goto oom;
    if (opts->listen_url && (p->listen_url = util_strdup(opts->listen_url)) == NULL)
        goto oom;
    if ((opts->tls_cert_file && (p->tls.cert_file = util_strdup(opts->tls_cert_file)) == NULL) ||
        (opts->tls_key_file && (p->tls.key_file = util_strdup(opts->tls_key_file)) == NULL) ||
        (opts->tls_ca_file && (p->tls.ca_file = util_strdup(opts->tls_ca_file)) == NULL))
        goto oom;
    p->tls.require_peer_cert = opts->tls_require_client_cert;
    p->contexts = opts->contexts ? opts->contexts : PT_CONTEXTS;
    p->retention_ms = opts->retention_ms ? opts->retention_ms : PT_RETENTION_MS;
    p->purge_batch = opts->purge_batch ? opts->purge_batch : PT_PURGE_BATCH;
    p->purge_every_ms = opts->purge_every_ms ? opts->purge_every_ms : PT_PURGE_EVERY_MS;
    p->synchronous_off = opts->synchronous_off;
    if (pt_faults_parse(opts->faults, &p->faults, err, errlen) != 0)
        goto fail;
    if (nng_mtx_alloc(&p->mtx) != 0 || nng_cv_alloc(&p->cv, p->mtx) != 0)
        goto oom;
    p->synchronous_off = opts->synchronous_off;
    if (pt_external_path(opts->db_path, &p->external_path) != 0)
        goto oom;
    p->be = db_url_is_postgresql(opts->db_path) ? &pt_store_pg : &pt_store_sqlite;
    p->tx.p = p;
    p->tx.backend = p->be->backend;
    if (p->be->open(p, opts->db_path, opts->synchronous_off, err, errlen) != 0)
        goto fail;
    if (p->faults.enabled)
        log_warn("%s: fault injection on: %s", p->name, opts->faults);
    return p;

oom:
    snprintf(err, errlen, "out of memory");
fail:
    pt_destroy(p);
    return NULL;
}

sqlite3 *pt_db(participant *p)
{
    return p->store != NULL ? barrier_db(p->store) : NULL;
}

int pt_backend(const participant *p)
{
    return p->be->backend;
}

#define PT_BUSY_TRIES    30
#define PT_BUSY_PAUSE_MS 2000

int pt_retry_while_busy(const char *who,
                        int (*once)(void *ctx, int *busy, char *err, size_t errlen), void *ctx,
                        char *err, size_t errlen)
{
    for (int attempt = 1;; attempt++) {
        int busy = 0;
        if (once(ctx, &busy, err, errlen) == 0)
            return 0;
        if (!busy || attempt >= PT_BUSY_TRIES)
            return -1;
        log_warn("%s: %s; another process holds a lock it needs (a busy replica?): trying again "
                 "in %d s",
                 who, err, PT_BUSY_PAUSE_MS / 1000);
        util_sleep_ms(PT_BUSY_PAUSE_MS);
    }
}

typedef struct {
    participant *p;
    int (*fn)(pt_tx *tx, void *arg);
    void *arg;
} pt_run_call;

static int pt_run_once(void *ctx, int *busy, char *err, size_t errlen)
{
    pt_run_call *call = ctx;
    participant *p = call->p;
    pt_tx *tx = &p->tx;
    tx->err[0] = '\0';
    tx->busy = 0;
    if (p->be->setup_begin(p) != SQLITE_OK) {
        snprintf(err, errlen, "cannot begin a transaction: %s", p->be->errmsg(p));
        return -1;
    }
    int rc = call->fn(tx, call->arg);
    pt_tx_release(tx);
    p->be->release(p);
    if (rc == 0 && p->be->commit(p) != SQLITE_OK) {
        snprintf(err, errlen, "commit failed: %s", p->be->errmsg(p));
        rc = -1;
    } else if (rc != 0) {
        snprintf(err, errlen, "%s", pt_tx_errmsg(tx));
    }
    p->be->rollback(p); /* no-op after a commit */
    *busy = tx->busy;
    return rc == 0 ? 0 : -1;
}

int pt_run(participant *p, int (*fn)(pt_tx *tx, void *arg), void *arg, char *err, size_t errlen)
{
    pt_run_call call = {p, fn, arg};
    return pt_retry_while_busy(p->name, pt_run_once, &call, err, errlen);
}

int pt_purge_once(participant *p, int64_t now_wall_ms)
{
    int purged = 0;
    int rc = p->be->purge(p, now_wall_ms - p->retention_ms, p->purge_batch, &purged);
    if (rc != SQLITE_OK) {
        log_warn("%s: purge failed: %s (%s)", p->name, sqlite3_errstr(rc), p->be->errmsg(p));
        return -1;
    }
    /* Markers go with the records of the same age (external.c, invariant 3). */
    if (pt_external_purge(p, now_wall_ms - p->retention_ms, p->purge_batch) < 0)
        log_warn("%s: purge of external-call markers failed", p->name);
    if (purged > 0) {
        pt_stats d = {.purged = (uint64_t)purged};
        pt_stats_add(p, &d);
        log_debug("%s: purged %d idempotency records", p->name, purged);
    }
    return purged;
}

/* ---- Contexts ---------------------------------------------------------- */

/*
 * p->stopping is written under p->mtx with an atomic store, so that this
 * per-request path reads it without taking the mutex the serving thread
 * and the other callbacks contend for. A receive armed just as stopping is set is
 * harmless: pt_conn_cb re-checks under the mutex before queueing, and
 * closing the socket ends the receive.
 */
static int pt_stopping(participant *p)
{
    return __atomic_load_n(&p->stopping, __ATOMIC_ACQUIRE);
}

static void pt_set_stopping(participant *p, int v)
{
    __atomic_store_n(&p->stopping, v, __ATOMIC_RELEASE);
}

/* Arms a receive, unless stopping. Called with no aio operation pending. */
static void pt_conn_recv(pt_conn *c)
{
    participant *p = c->p;
    assert(c->msg == NULL);
    if (pt_stopping(p)) {
        c->state = PT_CONN_IDLE;
        return;
    }
    c->state = PT_CONN_RECV;
    nng_ctx_recv(c->ctx, c->aio);
}

/*
 * A reply handed to nng has completed (sent, failed or cancelled). Only
 * pt_stop waits for replies_pending, and only once stopping is set (under
 * this mutex): waking the cv on every reply used to wake the idle worker,
 * which waits on the same cv, for nothing: one context switch per request.
 */
static void pt_conn_reply_done(participant *p)
{
    nng_mtx_lock(p->mtx);
    p->replies_pending--;
    if (p->stopping)
        nng_cv_wake(p->cv);
    nng_mtx_unlock(p->mtx);
}

static void pt_serve_queue(participant *p, int max_batches);
static void pt_serve_release(participant *p);

static void pt_conn_frame_free(pt_conn *c)
{
    if (c->frame != NULL)
        saga__v1__step_batch__free_unpacked(c->frame, NULL);
    c->frame = NULL;
    c->n_items = 0;
}

static void pt_conn_cb(void *arg)
{
    pt_conn *c = arg;
    participant *p = c->p;
    int rv = nng_aio_result(c->aio);
    nng_msg *msg;

    switch (c->state) {
    case PT_CONN_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
                c->state = PT_CONN_IDLE;
            else
                pt_conn_recv(c);
            return;
        }
        msg = nng_aio_get_msg(c->aio);
        /* Unpacked here, outside the mutex. A frame that does not unpack, or
         * is larger than WIRE_MAX_MSG (the socket admits WIRE_RECV_SLACK more
         * so that it can be answered), stays one message, which batch.c
         * answers REJECTED. */
        c->frame = nng_msg_len(msg) <= WIRE_MAX_MSG
                       ? wire_unpack_batch(nng_msg_body(msg), nng_msg_len(msg))
                       : NULL;
        c->n_items = c->frame ? c->frame->n_items : 1;
        nng_mtx_lock(p->mtx);
        if (p->stopping) {
            nng_mtx_unlock(p->mtx);
            nng_msg_free(msg); /* the requester retries elsewhere or later */
            pt_conn_frame_free(c);
            c->state = PT_CONN_IDLE;
            return;
        }
        c->msg = msg;
        c->state = PT_CONN_QUEUED;
        c->next = NULL;
        if (p->queue_tail)
            p->queue_tail->next = c;
        else
            p->queue_head = c;
        p->queue_tail = c;
        /* c is the queue's now: nothing below may touch it. The worker,
         * when it waits for its turn (a purge), goes first. */
        if (!p->serving && p->serve_waiters == 0) {
            p->serving = 1;
            pt_serve_queue(p, PT_CALLBACK_BATCHES);
            pt_serve_release(p);
        }
        nng_mtx_unlock(p->mtx);
        return;
    case PT_CONN_DELAY:
        assert(c->msg != NULL);
        msg = c->msg;
        c->msg = NULL;
        if (rv != 0) {
            nng_msg_free(msg);
            c->state = PT_CONN_IDLE;
            pt_conn_reply_done(p);
            return;
        }
        c->state = PT_CONN_SEND;
        nng_aio_set_msg(c->aio, msg);
        nng_ctx_send(c->ctx, c->aio);
        return;
    case PT_CONN_SEND:
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(c->aio)); /* a failed send leaves the msg to us */
        pt_conn_reply_done(p);
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
            c->state = PT_CONN_IDLE;
        else
            pt_conn_recv(c);
        return;
    case PT_CONN_QUEUED:
    case PT_CONN_IDLE:
        log_error("%s: context callback in state %d", p->name, (int)c->state);
        return;
    }
}

/*
 * Serving thread: puts c's reply (reply NULL: none, out of memory) into the
 * request's message and decides its fate (the fault draws happen here, in
 * batch order). Returns 1 when the reply is to be handed to nng (c->msg
 * holds it, c->state is SEND or DELAY, nothing started yet), 0 when it was
 * dropped (c is receiving again).
 */
static int pt_conn_reply_prepare(participant *p, pt_conn *c, const uint8_t *reply, size_t len)
{
    assert(c->state == PT_CONN_QUEUED && c->msg != NULL);
    nng_msg *msg = c->msg;
    int drop = reply == NULL || pt_faults_roll(&p->faults, p->faults.drop_reply);
    int delay = !drop && pt_faults_roll(&p->faults, p->faults.delay);
    if (!drop) {
        nng_msg_clear(msg); /* the reply reuses the request's message */
        if (nng_msg_append(msg, reply, len) != 0)
            drop = 1;
    }
    if (drop) {
        c->msg = NULL;
        nng_msg_free(msg);
        pt_conn_recv(c);
        return 0;
    }
    c->state = delay ? PT_CONN_DELAY : PT_CONN_SEND;
    return 1;
}

/* Serving thread: starts the send (or the fault's delay) that pt_conn_reply_prepare set up. */
static void pt_conn_reply_start(participant *p, pt_conn *c)
{
    if (c->state == PT_CONN_DELAY) {
        nng_sleep_aio((nng_duration)p->faults.delay_ms, c->aio); /* c->msg keeps the reply */
    } else {
        nng_msg *msg = c->msg;
        c->msg = NULL;
        nng_aio_set_msg(c->aio, msg);
        nng_ctx_send(c->ctx, c->aio);
    }
}

/* ---- Serving ----------------------------------------------------------- */

/*
 * c's answer from its items' replies: the one reply, or a frame of them
 * (malloc'd into *frame_out). NULL when one is missing (out of memory): the
 * requester then hears nothing and retries, as for a lost message.
 */
static const uint8_t *pt_conn_answer(pt_conn *c, const pt_item *items, size_t *len,
                                     uint8_t **frame_out)
{
    *frame_out = NULL;
    if (c->frame == NULL) {
        *len = items[0].reply_len;
        return items[0].reply;
    }
    const uint8_t *parts[WIRE_BATCH_MAX];
    size_t lens[WIRE_BATCH_MAX];
    for (size_t i = 0; i < c->n_items; i++) {
        if (items[i].reply == NULL)
            return NULL;
        parts[i] = items[i].reply;
        lens[i] = items[i].reply_len;
    }
    *frame_out = wire_pack_batch(c->n_items, parts, lens, len);
    return *frame_out;
}

/* The serving thread: runs the requests of n queued contexts as one batch and answers them. */
static void pt_serve_batch(participant *p, size_t n)
{
    pt_item *items = p->batch_items;
    size_t n_items = 0, frames = 0;
    for (size_t i = 0; i < n; i++) {
        pt_conn *c = p->batch_conns[i];
        if (c->frame == NULL) {
            items[n_items++] = (pt_item){nng_msg_body(c->msg), nng_msg_len(c->msg), NULL, 0};
            continue;
        }
        frames++;
        for (size_t k = 0; k < c->n_items; k++)
            items[n_items++] = (pt_item){c->frame->items[k].data, c->frame->items[k].len, NULL, 0};
    }
    if (pt_batch_run(p, items, n_items) != 0)
        log_error("%s: out of memory: dropping a batch of %zu requests", p->name, n_items);
    if (frames > 0) {
        pt_stats d = {.frames = frames};
        pt_stats_add(p, &d);
    }
    /*
     * Count the replies handed to nng once per batch, before any send can
     * complete (and decrement), rather than taking the mutex per reply
     * against the callbacks finishing earlier sends.
     */
    unsigned char start[PT_BATCH_MAX]; /* a dropped conn is the callbacks' again: no peeking */
    int sending = 0;
    pt_item *it = items;
    for (size_t i = 0; i < n; i++) {
        pt_conn *c = p->batch_conns[i];
        size_t len = 0, k = c->n_items;
        uint8_t *frame;
        const uint8_t *answer = pt_conn_answer(c, it, &len, &frame);
        pt_conn_frame_free(c); /* the items' requests are not read any more */
        start[i] = (unsigned char)pt_conn_reply_prepare(p, c, answer, len);
        sending += start[i];
        free(frame);
        for (; k > 0; k--, it++) {
            free(it->reply);
            it->reply = NULL;
        }
    }
    if (sending == 0)
        return;
    nng_mtx_lock(p->mtx);
    p->replies_pending += sending;
    nng_mtx_unlock(p->mtx);
    for (size_t i = 0; i < n; i++)
        if (start[i])
            pt_conn_reply_start(p, p->batch_conns[i]);
    crashpoint("participant.after_reply");
}

/*
 * With p->mtx held and p->serving set: runs batches until the queue is
 * empty, max_batches have run, or another thread waits for its turn (p->mtx
 * is released while a batch runs).
 */
static void pt_serve_queue(participant *p, int max_batches)
{
    for (int b = 0; b < max_batches && p->serve_waiters == 0; b++) {
        size_t n = 0, n_items = 0;
        /* Whole contexts, at most PT_BATCH_MAX requests (a frame holds several). */
        while (p->queue_head && n_items + p->queue_head->n_items <= PT_BATCH_MAX) {
            pt_conn *c = p->queue_head;
            n_items += c->n_items;
            p->queue_head = c->next;
            if (p->queue_head == NULL)
                p->queue_tail = NULL;
            p->batch_conns[n++] = c;
        }
        if (n == 0)
            return;
        nng_mtx_unlock(p->mtx);
        pt_serve_batch(p, n);
        nng_mtx_lock(p->mtx);
    }
}

/* With p->mtx held: waits until no thread serves, then serves. */
static void pt_serve_acquire(participant *p)
{
    p->serve_waiters++;
    while (p->serving)
        nng_cv_wait(p->cv);
    p->serve_waiters--;
    p->serving = 1;
}

/*
 * With p->mtx held: stops serving. Requests still queued (a callback's
 * batches ran out, or the worker waits for a purge) are the worker's: it is
 * woken for them, so none is left without a server.
 */
static void pt_serve_release(participant *p)
{
    p->serving = 0;
    if (p->serve_waiters > 0 || p->queue_head != NULL)
        nng_cv_wake(p->cv);
}

/*
 * The worker thread: the purge; the queue when a serving callback handed it
 * over; the queue's last requests at stop.
 */
static void pt_worker_main(void *arg)
{
    participant *p = arg;
    nng_time next_purge = nng_clock() + (nng_time)p->purge_every_ms;

    nng_mtx_lock(p->mtx);
    while (!p->stopping) {
        int purge_due = nng_clock() >= next_purge;
        if (!purge_due && (p->queue_head == NULL || p->serving)) {
            nng_cv_until(p->cv, next_purge);
            continue;
        }
        pt_serve_acquire(p);
        if (purge_due) {
            nng_mtx_unlock(p->mtx);
            int purged = pt_purge_once(p, util_wall_ms());
            /* A full purge batch means more is due: go on, the queue's requests first. */
            next_purge = nng_clock() + (purged == p->purge_batch ? 0 : (nng_time)p->purge_every_ms);
            nng_mtx_lock(p->mtx);
        }
        pt_serve_queue(p, PT_WORKER_BATCHES); /* then look at the purge again */
        pt_serve_release(p);
    }
    /* Stopping: nothing is queued any more; answer what is. */
    pt_serve_acquire(p);
    while (p->queue_head != NULL)
        pt_serve_queue(p, PT_WORKER_BATCHES);
    pt_serve_release(p);
    nng_mtx_unlock(p->mtx);
}

/* ---- Start and stop ---------------------------------------------------- */

/* Opens the socket, listens and allocates the contexts. Returns 0 or an nng error. */
static int pt_listen(participant *p, char *err, size_t errlen)
{
    int rv = nng_rep0_open(&p->sock);
    if (rv != 0) {
        snprintf(err, errlen, "cannot open a rep0 socket: %s", nng_strerror(rv));
        return rv;
    }
    p->sock_open = 1;
    if ((rv = nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, WIRE_RECV_MAX(WIRE_MAX_MSG))) != 0) {
        snprintf(err, errlen, "cannot set up the socket: %s", nng_strerror(rv));
        return rv;
    }
    sp_listener_opts lo = {.name = p->name,
                           .url = p->listen_url,
                           .recv_max = WIRE_RECV_MAX(WIRE_MAX_MSG),
                           .configure = sec_listener_tls_hook,
                           .configure_arg = &p->tls};
    if ((rv = sp_listener_open(&p->listener, p->sock, &lo, err, errlen)) != 0)
        return rv;
    p->conns = calloc((size_t)p->contexts, sizeof *p->conns);
    if (p->conns == NULL) {
        snprintf(err, errlen, "out of memory");
        return NNG_ENOMEM;
    }
    for (int i = 0; i < p->contexts; i++) {
        pt_conn *c = &p->conns[i];
        c->p = p;
        c->state = PT_CONN_IDLE;
        if ((rv = nng_aio_alloc(&c->aio, pt_conn_cb, c)) != 0 ||
            (rv = nng_ctx_open(&c->ctx, p->sock)) != 0) {
            snprintf(err, errlen, "cannot create context %d: %s", i, nng_strerror(rv));
            return rv;
        }
    }
    return 0;
}

/* Closes the socket and frees the contexts; safe on a half-built set. */
static void pt_unlisten(participant *p)
{
    sp_listener_close(p->listener); /* joins its watchdog first */
    p->listener = NULL;
    if (p->sock_open) {
        nng_close(p->sock); /* pending receives complete with NNG_ECLOSED */
        p->sock_open = 0;
    }
    if (p->conns == NULL)
        return;
    for (int i = 0; i < p->contexts; i++) {
        pt_conn *c = &p->conns[i];
        if (c->aio)
            nng_aio_free(c->aio); /* stops it: waits for its callback; a delay is cancelled */
        c->aio = NULL;
        nng_msg_free(c->msg); /* a queued request nobody will answer; NULL is a no-op */
        c->msg = NULL;
        pt_conn_frame_free(c);
    }
    free(p->conns);
    p->conns = NULL;
}

/* Asks the threads to stop and joins them (the worker answers its queue first). */
static void pt_threads_join(participant *p)
{
    nng_mtx_lock(p->mtx);
    pt_set_stopping(p, 1);
    nng_cv_wake(p->cv);
    nng_mtx_unlock(p->mtx);
    if (p->worker)
        nng_thread_destroy(p->worker);
    p->worker = NULL;
}

int pt_start(participant *p, char *err, size_t errlen)
{
    int rv;
    if (p->started) {
        snprintf(err, errlen, "already started");
        return NNG_ESTATE;
    }
    pt_set_stopping(p, 0);
    /* Before any thread serves: the registry is frozen from here on. */
    if (p->metrics == NULL && (p->metrics = pt_metrics_create(p)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NNG_ENOMEM;
    }
    if (p->listen_url && (rv = pt_listen(p, err, errlen)) != 0)
        goto fail;
    if ((rv = nng_thread_create(&p->worker, pt_worker_main, p)) != 0) {
        snprintf(err, errlen, "cannot start the worker: %s", nng_strerror(rv));
        goto fail;
    }
    nng_thread_set_name(p->worker, "pt-worker");
    p->started = 1;
    for (int i = 0; p->conns && i < p->contexts; i++)
        pt_conn_recv(&p->conns[i]);
    if (p->listen_url)
        log_info("%s: listening on %s with %d contexts", p->name, p->listen_url, p->contexts);
    return 0;

fail:
    pt_threads_join(p);
    pt_unlisten(p);
    return rv;
}

void pt_stop(participant *p)
{
    if (p == NULL || !p->started || p->stopped)
        return;
    nng_mtx_lock(p->mtx);
    pt_set_stopping(p, 1);
    nng_cv_wake(p->cv);
    nng_mtx_unlock(p->mtx);

    nng_thread_destroy(p->worker); /* joins after the queue is answered */
    p->worker = NULL;

    /* Let replies already handed to nng go out before the socket closes. */
    nng_time deadline = nng_clock() + PT_STOP_GRACE_MS + (nng_time)p->faults.delay_ms;
    nng_mtx_lock(p->mtx);
    while (p->replies_pending > 0 && nng_clock() < deadline)
        nng_cv_until(p->cv, deadline);
    nng_mtx_unlock(p->mtx);

    pt_threads_join(p);
    pt_unlisten(p);
    p->stopped = 1;
}

void pt_destroy(participant *p)
{
    if (p == NULL)
        return;
    pt_stop(p);
    pt_unlisten(p); /* a pt_start that failed half-way left nothing; harmless twice */
    if (p->be != NULL)
        p->be->close(p);
    pt_external_close(p);
    free(p->external_path);
    pt_metrics_free(p->metrics); /* before the registry: it borrows the names */
    for (size_t i = 0; i < p->n_ops; i++) {
        free(p->ops[i].name);
        free(p->ops[i].partner);
    }
    free(p->ops);
    if (p->cv)
        nng_cv_free(p->cv);
    if (p->mtx)
        nng_mtx_free(p->mtx);
    free(p->listen_url);
    free((char *)p->tls.cert_file);
    free((char *)p->tls.key_file);
    free((char *)p->tls.ca_file);
    free(p->name);
    free(p);
}
