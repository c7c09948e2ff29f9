/*
 * engine_internal.h — what the engine's source files share: the engine
 * itself, its events and the round it is building. Not for other modules:
 * they use engine.h.
 *
 * engine.c runs the rounds (engine.c states the invariants);
 * engine_nodes.c is what only a node of several on one database does
 * (lease, takeover, rounds the database refused; docs/SCALE-OUT.md).
 * Everything here runs on the engine thread, except the queue under mtx.
 */
#ifndef SAGA_ENGINE_INTERNAL_H
#define SAGA_ENGINE_INTERNAL_H

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "alert.h"
#include "catalog.h"
#include "engine.h"
#include "kv.h"
#include "orch_metrics.h"
#include "saga.h"
#include "saga_table.h"
#include "store.h"
#include "transport.h"
#include "util.h"

/* ---- Events --------------------------------------------------------------- */

enum event_kind { EV_CALL_DONE, EV_START, EV_ABORT, EV_RESUME, EV_RELOAD };

typedef struct event {
    struct event *next;
    enum event_kind kind;
    transport_call *call; /* EV_CALL_DONE */
    char *type;           /* EV_START */
    char *client_key;
    kvmap input;
    int64_t deadline_ms; /* EV_START: 0, the type's deadline_s */
    char saga_id[40];    /* EV_ABORT, EV_RESUME */
    char *reason;
    engine_done_fn done;
    void *done_arg;
} event;

/* What a round will do once its commit has succeeded. */
typedef struct {
    char saga_id[37];
    uint64_t token;
    int step, phase;
    uint32_t attempt;
} pending_send;

typedef struct {
    engine_done_fn done;
    void *arg;
    int status;
    char *error;
    char saga_id[37];
    int existing;
} pending_answer;

typedef struct {
    char *saga_id;
    int64_t at_ms;
    saga_event ev; /* strings below are owned copies */
    char *detail;
    char *step_name;
} pending_history;

#define VEC(T)                                                                                     \
    struct {                                                                                       \
        T *items;                                                                                  \
        size_t len, cap;                                                                           \
    }

static inline int vec_reserve(void **items, size_t *cap, size_t len, size_t size)
{
    if (len < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 64;
    void *n = realloc(*items, ncap * size);
    if (n == NULL)
        return -1;
    *items = n;
    *cap = ncap;
    return 0;
}
#define VEC_PUSH(v, x)                                                                             \
    (vec_reserve((void **)&(v).items, &(v).cap, (v).len, sizeof *(v).items) == 0                   \
         ? ((v).items[(v).len++] = (x), 0)                                                         \
         : -1)

struct engine {
    const orch_config *cfg;
    catalog *defs; /* every definition version in use, and the current ones */
    store *db;
    transport *net;
    nng_thread *thread;

    nng_mtx *mtx; /* guards the queue and `stopping` */
    nng_cv *cv;
    event *queue_head, *queue_tail;
    int stopping;
    atomic_int closing; /* transport completions are ignored from now on */

    saga_table by_id, by_key;
    VEC(saga *) timers; /* binary min-heap on timer_due */
    util_prng rng;

    /* The current round. */
    VEC(saga *) dirty;
    VEC(saga *) settled;
    VEC(pending_send) sends;
    VEC(pending_answer) answers;
    VEC(pending_history) history;
    int round_had_replies;

    /* The highest request token ever handed to the transport. A saga that
     * enters memory (new, recovered, or loaded again for an operator) starts
     * its tokens above it, so a reply still outstanding from an earlier time
     * the same saga was in memory can never match one of its new requests. */
    uint64_t token_high;

    atomic_uint_fast64_t in_flight, steps_sent, retries, timeouts, replayed, late, commits,
        committed_sagas;

    /* Observability (docs/OBSERVABILITY.md): metrics updated by the hooks
     * below, and the alert command run when a saga becomes FAILED. */
    orch_metrics *metrics;
    alerter *alerts;

    /* Set while a round's commit is being retried (invariant 3); why is
     * guarded by mtx, for the BUSY answers given on other threads. */
    atomic_int store_unavailable;
    char store_unavailable_why[256];
    int64_t next_purge_ms; /* monotonic time of the next retention purge batch */

    /* Several nodes on one database (store_is_shared; docs/SCALE-OUT.md). */
    int shared;
    int64_t lease_sure_until_ms; /* monotonic: the lease is surely held until then */
    int64_t next_renew_ms, next_claim_ms;
    int renew_failing; /* renewals failing for a storage error: logged once */
};

/* ---- engine.c, for engine_nodes.c ---------------------------------------- */

/* Takes s off the timer heap (nothing when it is not on it). */
void eng_timer_cancel(engine *e, saga *s);

/* Commits the round and performs what it produced; 0, or -1 when the engine
 * must stop with the round not committed. */
int eng_finish_round(engine *e);

/* Brings a saga read from the store into memory and resumes it (its step in
 * flight re-sent with the same key); arg is the engine. */
int eng_recover_one(saga *s, void *arg);

/* A stored row that cannot be decoded: the saga is quarantined on disk. */
int eng_recover_corrupt(const char *saga_id, const char *why, void *arg);

/* Sleeps ms unless sagad is stopping: 1 when it is. */
int eng_wait_unless_stopping(engine *e, int64_t ms);

/* ---- engine_nodes.c -------------------------------------------------------- */

/* Sagas claimed from the store in one takeover pass at most. */
#define CLAIM_BATCH 256

/* store_commit refused the round (store.h, STORE_REJECTED): the saga that
 * broke a fencing rule leaves it, or every saga when the lease is gone; the
 * caller writes the rest again. */
void eng_on_rejected(engine *e);

/* 0 when the lease is surely held (or the database is not shared), so the
 * round's requests may leave; -1 when they must wait or were dropped. */
int eng_lease_check_before_acting(engine *e);

/* The periodic duties of a node: renewing its lease, taking over the sagas
 * of fenced nodes. 0, or -1 when the engine must stop. */
int eng_renew_lease(engine *e);
int eng_take_over_some(engine *e);

/* store_claim_orphans's callback: loads the claimed saga and resumes it. */
int eng_recover_claimed(const char *saga_id, void *arg);

#endif
