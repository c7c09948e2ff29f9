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

enum event_kind { EV_CALL_DONE, EV_START, EV_ABORT, EV_RESUME, EV_RELOAD, EV_CANCEL };

typedef struct event {
    struct event *next;
    enum event_kind kind;
    transport_call *call; /* EV_CALL_DONE */
    char *type;           /* EV_START */
    char *client_key;
    kvmap input;
    int64_t deadline_ms; /* EV_START: 0, the type's deadline_s */
    int64_t start_at_ms; /* EV_START: > 0, a scheduled start (engine_sched.c) */
    char saga_id[40];    /* EV_ABORT, EV_RESUME, EV_CANCEL */
    char *reason;
    char *who; /* abort/resume: the operator, for the history and the log; may be NULL */
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

/* A scheduled start fired in this round: its row is deleted with the
 * saga's insert (store.h S1). */
typedef struct {
    char id[37];
    char detail[128]; /* "scheduled for ..., started ... ms after it": logged once committed */
} pending_fire;

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
    VEC(pending_send) early; /* send_early's, taken out of sends; kept for its capacity */
    VEC(pending_answer) answers;
    VEC(pending_history) history;
    VEC(store_schedule) sched_adds; /* scheduled starts to insert (engine_sched.c) */
    VEC(pending_fire) fires;        /* scheduled starts whose saga the round inserts */
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

    int64_t next_sched_poll_ms; /* monotonic: the next look for due scheduled starts */
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

/* Queues the answer to a command, delivered once the round has committed. */
void eng_answer(engine *e, event *ev, int status, const char *error, const char *saga_id,
                int existing);
/* Brings a new saga into memory (by_id, by_key): 0 or -1 (out of memory). */
int eng_add_saga(engine *e, saga *s);
saga_env eng_env(engine *e);

/* ---- engine_sched.c: scheduled starts ------------------------------------- */

/* EV_START with start_at_ms in the future, once the type and input passed
 * and no saga holds the client key: the start is stored in this round and
 * answered with the id its saga will have. */
void eng_sched_add(engine *e, event *ev, const saga_def *def);
/* A client key held by a scheduled start (stored, or in this round): 1 with
 * the start answered (existing, or a conflict), 0 when none, -1 after an
 * answer saying the store failed. */
int eng_sched_twin(engine *e, event *ev);
/* EV_CANCEL, and EV_ABORT of an id that names no saga: 1 when answered. */
int eng_sched_cancel(engine *e, event *ev, int from_abort);
/* Between rounds: fires the starts that are due (one round), unless the
 * store is unavailable or memory full. 0, or -1 when the engine must stop. */
int eng_sched_fire_due(engine *e);
/* The round's scheduled-start writes, in store_begin .. store_commit:
 * deletes of fired starts first (before their sagas' inserts), then new
 * starts. */
int eng_sched_write(engine *e);
/* After the round committed (crash points), or was abandoned. */
void eng_sched_committed(engine *e);
void eng_sched_abandon(engine *e);
/* The database refused the round for saga_id: 1 when that was one of the
 * round's scheduled starts (dealt with: the caller writes the rest again). */
int eng_sched_rejected(engine *e, enum store_rejection why, const char *saga_id);
/* s leaves memory with its round's traces: a firing of it too. */
void eng_sched_forget(engine *e, const char *saga_id);
/* After STORE_REJECT_NOT_OWNER for saga_id: 1 when it is a start this round
 * fires, whose claim was lost (cancelled meanwhile, on any node): what
 * happened is logged, and the caller drops the saga from memory. 0 when it
 * is no firing of this round. */
int eng_sched_fire_refused(engine *e, const char *saga_id);
/* After a reload: the starts postponed for want of their type or input are
 * tried again at the next poll, not a minute later. */
void eng_sched_definitions_changed(engine *e);

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
