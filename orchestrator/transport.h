/*
 * transport — sends step requests to participants over nng, asynchronously.
 *
 * One req0 socket per participant URL (a participant can list several: its
 * replicas, below), dialed in the background (a tls+tcp://
 * participant with cfg's tls certificates: the participant must present a
 * certificate for its URL's host signed by tls.ca_file, and sagad presents
 * tls.cert_file as its client certificate; nng reconnects
 * by itself when a participant restarts, and transport_maintain replaces a
 * dialer that stopped trying). Each request owns a transport_call; each
 * message in flight (a frame of calls, or one call) a carrier: an nng
 * context and an aio driven by a small state machine
 *
 *     SENDING --sent--> RECEIVING --reply / timeout / error--> DONE
 *
 * A carrier is taken when a frame leaves and given back when its first call
 * is released, so a busy orchestrator holds one nng context and aio (most of
 * a request's memory) per frame in flight, not per step.
 * The attempt's timeout covers both halves: what the send used up is taken
 * off the receive. When a call is DONE, the completion function runs on an
 * nng thread and must only hand the call over (the engine queues it); the
 * owner then reads it and gives it back with transport_release(). Calls and
 * carriers are pooled per replica, so a busy orchestrator allocates nothing
 * per step.
 *
 * Replicas: `payment = ["ipc://.../payment-a.ipc", "ipc://.../payment-b.ipc"]`
 * runs one service as several processes on one shared database; any of them
 * may answer any step, and exactly-once never depends on which does (every
 * attempt of a step carries the same idempotency key, and the replicas'
 * shared barrier gives one effect per key). transport_send picks the replica
 * of each request, at the moment it is queued:
 *   - usable replicas are the connected ones that answer (no failure since
 *     their last answer), plus a failed one that is due a probe: its pause
 *     (AVOID_MIN_MS, doubling per failure up to AVOID_MAX_MS) is over and
 *     nothing of it is outstanding, so a probe is one request at a time;
 *   - among the usable, the one with the fewest calls outstanding (queued,
 *     in flight, or not yet released), ties round-robin: load spreads, and
 *     a replica that stops answering collects outstanding calls and stops
 *     being chosen even before its first timeout;
 *   - when none is usable (all down, or all failing), the fewest failures
 *     and then the fewest outstanding: requests still go somewhere, and
 *     wait for a connection as with one URL.
 * A failure is a call that completed without an answer (timeout, or a
 * frame answered wrongly); any answer clears the replica's failures. So a
 * replica that dies costs the steps in flight on it one attempt (nng fails
 * them at once with NNG_ECONNRESET when the connection drops), one that
 * hangs (SIGSTOP: connected, silent) one attempt timeout; the engine's
 * retry, same key, goes to another replica. A participant with one URL
 * behaves exactly as before (no choice, no pause).
 *
 * Why not one req0 socket with a dialer per replica, which nng load-balances
 * and resends on another connection when one drops: nng sends to whichever
 * connection can take a message, and a hung replica's connection keeps
 * taking them (the kernel buffers), so retries would keep landing on it at
 * random and a step could spend its attempts on one stopped process; nng
 * offers no way to keep a request off one of a socket's connections. A
 * socket per replica lets the choice above avoid a silent replica, and
 * count each one (/metrics: saga_replica_*).
 *
 * Frames: transport_send only queues a request; transport_flush sends what
 * is queued. Requests queued for one replica with the same timeout go
 * out together (in the order queued) as one frame (StepBatch in proto/saga.proto, at most
 * frame_max requests and WIRE_MAX_MSG bytes), carried by the first call of
 * the frame: one nng message each way instead of one per step, which is
 * most of the messaging cost at load. The answer is split into each call's
 * own reply, and every call of the frame completes on its own, exactly as
 * if sent alone (an error or a timeout of the frame is every call's). A
 * frame of one is sent as a plain StepRequest.
 *
 * Threading: transport_send, transport_flush and transport_release are
 * called from one thread (the engine's); only the completion callback runs
 * elsewhere.
 */
#ifndef SAGA_TRANSPORT_H
#define SAGA_TRANSPORT_H

#include <nng/nng.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct transport transport;

typedef struct transport_call {
    /* What the request was for, copied in by transport_send. */
    char saga_id[37];
    size_t participant; /* its index in the configuration */
    size_t replica;     /* which of its URLs carried it (transport_replica_url) */
    uint64_t token;
    int step;
    int phase;
    /* The outcome: result 0 and a reply message (owned by the call until
     * release), or an nng error (NNG_ETIMEDOUT, NNG_ECLOSED, ...). */
    int result;
    nng_msg *reply;

    /* Private to transport.c. */
    struct transport_call *next_free;
    struct transport_call *next_queued; /* the participant's queue, until flushed */
    struct transport_call *frame_next;  /* sent: the frame's next call (NULL: last or alone) */
    nng_msg *request;                   /* queued, not sent yet */
    int64_t timeout_ms;
    transport *owner;
    struct transport_peer *peer;       /* the replica it was queued for */
    struct transport_carrier *carrier; /* sent: what carries its frame (the first call's) */
} transport_call;

/* Completion of n calls: one, or every call of a frame at once. Runs on an
 * nng thread and must only hand them over. */
typedef void (*transport_done_fn)(void *arg, transport_call *const *calls, size_t n);

/* Opens and dials one socket per participant URL of cfg (cfg->frame_max: steps
 * per frame, 1 = never frames). NULL with err on failure. */
transport *transport_create(const orch_config *cfg, transport_done_fn done, void *arg, char *err,
                            size_t errlen);
/* Queues len bytes of buf (copied) for the participant, sent by the next
 * transport_flush; done() follows exactly once unless this returns non-zero
 * (an nng error, nothing queued). */
int transport_send(transport *t, size_t participant, const char *saga_id, uint64_t token, int step,
                   int phase, const void *buf, size_t len, int64_t timeout_ms);
/* Sends everything queued: frames where several requests share a participant
 * and a timeout. A send that fails completes its calls with the error. */
void transport_flush(transport *t);
/* Notes whether the call's replica answered (transport.h, "Replicas"),
 * frees the call's reply and returns it to its pool. */
void transport_release(transport *t, transport_call *call);
/* Per-replica counters go to m (orch_metrics.h; NULL: none): a request
 * queued, a call released with or without an answer, a connection that came
 * or went (seen by transport_maintain). Set before the first send. */
struct orch_metrics;
void transport_set_metrics(transport *t, struct orch_metrics *m);
/* How many URLs participant i has, and the URL of one (NULL out of range). */
size_t transport_replicas(const transport *t, size_t participant);
const char *transport_replica_url(const transport *t, size_t participant, size_t replica);
/* 1 while sagad holds a connection to that replica (any thread). */
int transport_replica_connected(transport *t, size_t participant, size_t replica);
/* Replaces the dialer of any replica that has had no connection for
 * 2 s. nng 1.5.2's dialer can stop reconnecting when its peer dies while a
 * connection is being set up (upstream issue 970): without this, sagad
 * could lose a participant until restarted. Engine thread; call often. */
void transport_maintain(transport *t);
/* Closes every socket (outstanding calls complete with NNG_ECLOSED first). */
void transport_close(transport *t);
void transport_destroy(transport *t);

#endif
