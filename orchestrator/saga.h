/*
 * saga — one saga instance and the state machine that drives it.
 *
 * This module is pure: it never touches the network, the disk or the clock
 * directly. Every effect goes through a saga_env supplied by the caller (the
 * engine in production, a fake in the unit tests), so the whole state machine
 * runs deterministically in tests with a fake clock and a fake transport.
 *
 * A saga type's steps form a graph (saga_dag.h): each step waits for the
 * steps its `after` names, or for the one before it. Every step whose
 * dependencies are all DONE is sent at once, so several requests of one
 * saga may be in flight together.
 *
 * Saga states (values equal saga.v1 SagaState in proto/admin.proto):
 *
 *              start
 *                |
 *                v         every step OK
 *           +---------+ ------------------------------> COMPLETED (final)
 *           | RUNNING |
 *           +---------+  REJECTED, attempts spent,
 *             |  |  ^    deadline or abort                 every sent step undone
 *   CONFLICT, |  |  |  +--------------+ ---------------> COMPENSATED (final)
 *   pivot     |  +--|->| COMPENSATING |
 *   unknown   |     |  +--------------+
 *             v     |     |   ^
 *           +--------+ <--+   |  compensation attempts spent, REJECTED or CONFLICT;
 *           | FAILED |        |  an action awaited meanwhile: CONFLICT, pivot unknown
 *           +--------+ -------+  operator resume (failed_phase = compensate, or
 *                 \               action with a step REJECTED), saga_abort
 *                  \-----------> RUNNING: operator resume (failed_phase = action)
 *
 * Transitions and the function that performs each:
 *   (new) -> RUNNING              saga_begin
 *   RUNNING -> COMPLETED          saga_on_reply (OK from the last step not yet DONE)
 *   RUNNING -> COMPENSATING       saga_on_reply (REJECTED/SKIPPED), attempts spent in
 *                                 saga_on_no_reply / saga_on_reply (RETRY), the
 *                                 deadline (saga_on_timer, saga_recover), saga_abort
 *   RUNNING -> FAILED             CONFLICT; or the outcome of a step without
 *                                 compensation is still unknown when its attempts
 *                                 are spent (a pivot: compensating blindly could undo
 *                                 work around a step that did happen)
 *   COMPENSATING -> COMPENSATED   no step with a compensation may still have its effect
 *   COMPENSATING -> FAILED        compensation attempts spent, REJECTED or CONFLICT;
 *                                 or, for an action still awaited, CONFLICT or a
 *                                 pivot unknown (failed_phase = action)
 *   FAILED -> COMPENSATING        saga_resume (failed in compensation, or in an
 *                                 action while a step is REJECTED), saga_abort
 *   FAILED -> RUNNING             saga_resume (failed in the action phase, no step REJECTED)
 *
 * COMPENSATING begins by draining: no new action starts, and the actions in
 * flight (or waiting for a retry) are awaited. An awaited action with a
 * compensation is not retried: its outcome stays unknown and the barrier of
 * its compensation covers both cases. One without (a pivot) keeps its
 * retries, and the pivot rule above applies to it. Once no action is awaited,
 * every step that is DONE, or ACTION_SENT (outcome unknown), is compensated
 * once all the steps that depend on it (directly or not) are undone:
 * independent steps at once, in reverse dependency order. A PENDING step
 * was never sent and is never compensated.
 *
 * Facts that hold in each state (asserted by saga_check_invariants):
 *   every state:  a step other than PENDING (it was sent) has every step it
 *                 waits for DONE, COMPENSATING or COMPENSATED (outside
 *                 RUNNING also ACTION_SENT: see "Early sends"); a step being
 *                 or already compensated has no step depending on it that
 *                 may still have an effect to undo (DONE, ACTION_SENT or
 *                 COMPENSATING, with a compensation).
 *   RUNNING:      no step is REJECTED, COMPENSATING or COMPENSATED.
 *   COMPENSATING: no compensation is in flight while an action is.
 *   COMPLETED:    every step is DONE.
 *   COMPENSATED:  no step with a compensation is DONE, ACTION_SENT or COMPENSATING.
 *   COMPLETED:    last_error is NULL (a saga completed after a resume keeps
 *                 what it recovered from in root_cause only).
 *   FAILED:       last_error and root_cause are set.
 * A request is in flight for at most one phase of a step at a time; every
 * request carries a token of its own (step_run.token), and a reply or
 * timeout whose token is not the step's current one is stale and ignored
 * (its effect, if any, is covered by the participant's idempotency: the
 * retry with the same key gets the replay). s->cursor is the step an event
 * last concerned: the one a resume gives a fresh budget of attempts.
 *
 * A scheduled start (sagactl start --at / --in) is not a state: it is a row
 * of its own until it fires (store.h "Scheduled starts", engine_sched.c),
 * and its saga begins here, RUNNING, through saga_begin.
 *
 * Errors: last_error is the latest reason the saga is off its way to
 * COMPLETED (why it compensates, why it is FAILED); root_cause is the first
 * one, kept when later errors replace last_error (a compensation that then
 * fails too): what an operator needs to fix before a resume. Both are set
 * together the first time. A resume clears last_error (the saga moves on;
 * the "resumed" event keeps what it had failed with), and so does reaching
 * COMPLETED: nothing is wrong any more, and root_cause tells what was.
 *
 * Early sends. The engine may send a RUNNING saga's next actions while the
 * commit that records their intent is still syncing (engine.c, "Early
 * sends"); it acts on their replies only after that commit. Only actions
 * with a compensation: were a pivot's request sent and its intent lost
 * with a crash, its outcome could not be learnt without running it. A crash in
 * that window leaves a stored saga RUNNING whose step k is ACTION_SENT (its
 * OK not recorded) while step k+1, PENDING on disk, may have been sent. So
 * saga_recover marks, in a RUNNING saga, every PENDING step with a
 * compensation whose dependencies are all DONE or ACTION_SENT, one at least
 * ACTION_SENT (maybe_sent). Going forward nothing changes: k is asked again (replay),
 * then k+1 is sent with the same key. If the saga leaves RUNNING first
 * (deadline, abort, attempts spent, a failure), those steps become
 * ACTION_SENT with an unknown outcome, in the same commit as the new state
 * ("step_maybe_sent" in the history), and are compensated like any: the
 * participant's barrier makes the compensation of an action that never ran
 * a null one and fences the late action. That is why, outside RUNNING, a
 * sent step may wait for a step that is ACTION_SENT; a resume back to
 * RUNNING turns such a step PENDING (maybe_sent) again, so it is never sent
 * before what it waits for is DONE.
 *
 * Step states (values equal saga.v1 StepState):
 *   PENDING -> ACTION_SENT -> DONE | REJECTED
 *   ACTION_SENT | DONE -> COMPENSATING -> COMPENSATED
 */
#ifndef SAGA_SAGA_H
#define SAGA_SAGA_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kv.h"

#define SAGA_MAX_STEPS 64

typedef enum {
    SAGA_RUNNING = 1,
    SAGA_COMPENSATING = 2,
    SAGA_COMPLETED = 3,
    SAGA_COMPENSATED = 4,
    SAGA_FAILED = 5,
} saga_state;

typedef enum {
    STEP_PENDING = 0,
    STEP_ACTION_SENT = 1,
    STEP_DONE = 2,
    STEP_REJECTED = 3,
    STEP_COMPENSATING = 4,
    STEP_COMPENSATED = 5,
} step_state;

typedef struct {
    step_state state;
    uint32_t action_attempts;       /* requests sent for the action, persisted before each */
    uint32_t compensation_attempts; /* likewise for the compensation */
    int last_outcome; /* saga.v1 Outcome of the latest reply; OUTCOME_UNSPECIFIED: none yet */
    kvmap result;     /* the action's OK result */
    char *last_error;
    int64_t next_attempt_at_ms; /* wall clock of a scheduled retry; 0: none */
    /* Wall clock of its first action request and of the answer that settled
     * the action (OK, REJECTED, SKIPPED); 0: not yet. What shows which steps
     * ran at the same time (sagactl status, the dashboard's timeline). */
    int64_t started_at_ms;
    int64_t finished_at_ms;

    /* Volatile: never stored. (The two ints side by side: no padding, as
     * every saga in memory holds one of these per step.) */
    uint64_t token;     /* of its request in flight */
    int in_flight;      /* 1 while that request is outstanding */
    int noted;          /* "compensation_not_defined" already recorded */
    int64_t timer_due;  /* monotonic ms of its scheduled retry; 0: none */
    int64_t sent_at_us; /* engine: monotonic us when its request was sent (metrics) */
} step_run;

/* Bits of saga.dirty: what the store must write at the next commit. */
enum {
    SAGA_DIRTY_NEW = 1u << 0, /* never stored: insert the saga and all its steps */
    SAGA_DIRTY_ROW = 1u << 1, /* the saga row changed */
};

typedef struct saga {
    char id[37];
    char *type;           /* saga type name, as stored */
    const saga_def *def;  /* the pinned version; NULL until bound (catalog_bind) */
    uint32_t def_version; /* the version it started on; 0: stored before versions existed */
    saga_state state;
    int failed_phase; /* when FAILED: PHASE_ACTION or PHASE_COMPENSATE, what resume continues */
    char *client_key; /* NULL when the start had none */
    kvmap input;
    int64_t created_at_ms;
    int64_t updated_at_ms;
    int64_t deadline_at_ms; /* wall clock: still RUNNING then, it compensates; 0: none */
    char *last_error;
    /* The first cause of trouble (see "Errors" above): set once, with the
     * first last_error; never replaced. NULL: the saga never left its way to
     * COMPLETED. */
    char *root_cause;
    int cursor; /* the step the latest event concerned */
    size_t n_steps;
    step_run *steps;

    /* Volatile: owned by the engine, never stored. */
    unsigned dirty;       /* SAGA_DIRTY_* */
    uint64_t dirty_steps; /* bit i: step i changed */
    uint64_t token;       /* the latest token handed out; steps hold their own */
    int in_flight;        /* requests outstanding (steps with in_flight set) */
    int64_t timer_due;    /* monotonic ms of the saga's timer (retries, deadline); 0: none */
    size_t timer_slot;    /* engine's timer heap position, 1-based; 0: none */
    int settle_pending;   /* engine: queued to be freed after the round's commit */
    /* engine: the state as last committed; 0 while never stored. Early
     * sends (below) go only to a saga RUNNING both here and in memory. */
    saga_state stored_state;
    void *engine_data; /* for the engine's own bookkeeping */
    /* Bit i: step i is PENDING but its request may have left before a crash
     * (see "Early sends" above); set by saga_recover, owned up to when the
     * saga leaves RUNNING. */
    uint64_t maybe_sent;
} saga;

/* One entry of a saga's append-only history. */
typedef struct {
    const char *kind; /* saga_started, step_sent, step_reply, step_timeout, ... */
    int step;         /* -1: saga-level */
    int phase;        /* PHASE_ACTION / PHASE_COMPENSATE */
    uint32_t attempt;
    int outcome; /* OUTCOME_UNSPECIFIED: none */
    int replayed;
    const char *detail; /* may be NULL */
} saga_event;

/* Everything the state machine may do to the outside world. */
typedef struct {
    void *ctx;
    int64_t (*now_mono)(void *ctx);   /* for timers */
    int64_t (*now_wall)(void *ctx);   /* for stored timestamps */
    double (*random_unit)(void *ctx); /* [0, 1) for backoff jitter */
    /* Send the request for (step, phase) with this attempt number and token,
     * once the state changes made so far are durably committed. */
    void (*send)(void *ctx, saga *s, int step, int phase, uint32_t attempt, uint64_t token);
    /* Call saga_on_timer(s) at monotonic time due (replaces any earlier timer). */
    void (*schedule)(void *ctx, saga *s, int64_t due_mono);
    void (*history)(void *ctx, saga *s, const saga_event *ev);
    /* The saga reached COMPLETED, COMPENSATED or FAILED. */
    void (*settled)(void *ctx, saga *s);
} saga_env;

/* Allocates a saga of def's shape in state RUNNING at cursor 0, nothing sent.
 * Copies id, client_key (may be NULL) and input. Its deadline is the def's
 * deadline_ms after now_wall_ms (none when 0; the caller may set another).
 * NULL when out of memory. */
saga *saga_new(const saga_def *def, const char *id, const char *client_key, const kvmap *input,
               int64_t now_wall_ms);
/* Allocates an empty saga with n_steps steps, for the store to fill in. */
saga *saga_alloc(size_t n_steps);
void saga_free(saga *s);

/* Starts a new saga: sends every step that waits for none. */
void saga_begin(saga *s, const saga_env *env);
/* After a restart: re-sends each step in flight (same key, next attempt; once
 * past max_attempts when the last attempt's reply was lost with sagad), or
 * re-arms the retry timer. A saga older than its def's retention_ms becomes
 * FAILED instead (every send checks this). Does nothing for finished or
 * FAILED sagas. */
void saga_recover(saga *s, const saga_env *env);
/* A reply to the attempt with this token. An outcome that is not one of
 * OK..SKIPPED (unspecified, or unknown) is taken as no reply at all
 * (saga_on_no_reply): retried, then compensated like a timeout. */
void saga_on_reply(saga *s, const saga_env *env, uint64_t token, int outcome, int replayed,
                   const kvmap *result, const char *error);
/* 1 when (step, phase, token) is the request the saga awaits: a reply to
 * anything else is stale. */
int saga_request_current(const saga *s, int step, int phase, uint64_t token);
/* Forgets every request in flight and every retry timer (the engine's
 * quarantine); replies to them are stale from then on. */
void saga_forget_in_flight(saga *s);
/* The attempt with this token got no usable reply: timeout, unreachable or a
 * malformed reply; why says which. */
void saga_on_no_reply(saga *s, const saga_env *env, uint64_t token, const char *why);
void saga_on_timer(saga *s, const saga_env *env);
/* Operator commands; return 0, -1 when the state does not allow it, or -2
 * when the saga is older than its def's retention_ms (participants may have
 * purged its idempotency records: only a person can settle it safely). */
/* who: the operator, for the history ("uid 1000 (alice)"); NULL: "operator".
 * reason: why, or NULL. Both go into the event's detail (and, for an abort,
 * into last_error). */
int saga_abort(saga *s, const saga_env *env, const char *who, const char *reason);
int saga_resume(saga *s, const saga_env *env, const char *who, const char *reason);
/* Sets last_error, and root_cause when the saga had none: every error of a
 * saga passes here (the store's quarantine aside). */
void saga_set_error(saga *s, const char *why);

/* The params of a step's request: the saga input plus the results of the
 * steps it waits for, directly or not (saga_dag_ancestors; results of steps
 * that may run at once are never mixed in), filtered by the step's input list. The same for every
 * attempt and phase, so a retry's fingerprint matches the first delivery's. */
int saga_step_params(const saga *s, int step, kvmap *out);
/* The inputs def requires that input lacks: 0 when none; otherwise 1 with
 * every missing one named in buf ("missing inputs 'a', 'b' for saga type
 * 'T' (it needs a, b, c)"): a caller fixes them all in one go. */
int saga_missing_inputs_msg(const saga_def *def, const kvmap *input, char *buf, size_t len);
/* "<saga_id>/<step name>/<action|compensate>" into buf. */
void saga_step_key(const saga *s, int step, int phase, char *buf, size_t len);
/* Backoff before attempt number `attempt` (>= 2): the capped exponential
 * delay d = min(max, initial * multiplier^(attempt-2)), jittered uniformly
 * in [d/2, d]. */
int64_t saga_backoff_ms(const retry_policy *p, uint32_t attempt, double unit_random);

int saga_is_final(saga_state st);
const char *saga_state_name(saga_state st); /* "RUNNING", ... */
int saga_state_parse(const char *name);     /* case-insensitive; -1 if unknown */
const char *step_state_name(step_state st); /* "PENDING", ... */
/* Checks the facts of the current state; returns NULL or what is violated. */
const char *saga_check_invariants(const saga *s);

#endif
