/*
 * engine — runs every saga in flight: one thread, one writer, group commit.
 *
 * The engine thread owns all in-memory sagas and the writable store. Replies
 * and timeouts (from nng's aio callbacks), admin commands and retry timers
 * reach it as events on one queue. It works in rounds:
 *   1. take every queued event and every due timer, and apply them to the
 *      state machines (saga.c), which record what to send and what to save;
 *   2. write every changed saga, step and history event in ONE transaction
 *      and commit it (one fsync for the whole round: group commit);
 *   3. only then send the requests and answer the admin commands of the
 *      round (save before act: an acknowledged start, and every intent, is
 *      on disk before anyone hears of it).
 * One exception to 3, the early sends (engine.c, saga.h "Early sends"): the
 * next actions of a saga already stored as RUNNING leave before step 2, so
 * that its participant's commit overlaps ours; their replies are applied
 * only in a later round, after this commit, and a crash before the commit
 * is covered by saga_recover owning those steps up. Starts, compensations,
 * resumes and aborts still wait for the commit.
 * If the commit fails, nothing of the round is acknowledged, and nothing
 * sent but the early sends. A
 * transient failure (another process holds the lock, disk full) is retried
 * with backoff, writing the same round again, while new commands are
 * answered BUSY; any other makes sagad log the error and exit (status 70),
 * because memory is now ahead of the disk: at the next start recovery
 * rebuilds every saga from the last committed state, which never ran ahead
 * of the network. Clients whose start was not acknowledged retry with their
 * client key. A saga whose row cannot be read at recovery, or whose state
 * breaks an invariant, is quarantined (FAILED, alert); the others go on.
 * Between rounds, finished sagas older than finished_retention_s are purged
 * in small batches.
 *
 * At start it registers the definitions of the saga files (catalog.h: each
 * version stored once), then loads every saga that is RUNNING or
 * COMPENSATING, binds it to the definition version it started on, and
 * re-sends its in-flight step with its original idempotency key, at once.
 * A saga whose version cannot be loaded becomes FAILED with the reason.
 *
 * Crash points (SAGA_CRASH_POINT, see common/crashpoint.h):
 *   engine.after_early_send      early sends handed to nng, their intents not
 *                                committed yet
 *   engine.after_intent_commit   intents committed, requests not sent yet
 *                                (early ones sent)
 *   engine.after_send            requests handed to nng, replies not seen
 *   engine.before_outcome_commit replies applied in memory, not committed
 *   engine.in_compensation       a compensation intent committed, not sent
 *   engine.after_answer          admin answers (started saga ids) handed out
 *   engine.after_schedule_commit a scheduled start committed, not answered
 *   engine.before_fire_commit    due starts fired in memory, not committed
 *   engine.after_fire_commit     their sagas and the rows' deletes committed,
 *                                nothing sent
 *
 * Scheduled starts (sagactl start --at / --in; engine_sched.c, store.h)
 * are rows of their own until they fire: between rounds the engine reads
 * (on several nodes: claims) the due ones, about every second, and starts
 * each as a saga of the id it was promised, deleting the row in the same
 * commit. One that comes due while sagad is down fires at the next start,
 * however late ("saga_scheduled" in its history says how late).
 */
#ifndef SAGA_ENGINE_H
#define SAGA_ENGINE_H

#include <stdint.h>

#include "config.h"
#include "kv.h"

typedef struct engine engine;

/* Admin-level result codes (admin.c maps them to saga.v1 AdminStatus by name). */
enum engine_status {
    ENGINE_OK = 0,
    ENGINE_BAD_REQUEST = 1,
    ENGINE_NOT_FOUND = 2,
    ENGINE_CONFLICT = 3,
    ENGINE_INVALID_STATE = 4,
    ENGINE_BUSY = 5,
    ENGINE_INTERNAL = 6,
    ENGINE_INVALID_CONFIG = 7, /* a reload found a broken saga file: nothing changed */
};

/* Called once the command's outcome is durable (or refused). error is NULL on success; saga_id is
 * set for starts. */
typedef void (*engine_done_fn)(void *arg, int status, const char *error, const char *saga_id,
                               int existing);

typedef struct {
    uint64_t in_flight;
    uint64_t steps_sent;
    uint64_t retries;
    uint64_t timeouts;
    uint64_t replayed_replies;
    uint64_t late_completions; /* replies/timeouts of requests no longer awaited: ignored */
    uint64_t commits;          /* transactions committed */
    uint64_t committed_sagas;  /* saga rows written by them: their ratio is the batch size */
} engine_counters;

/* Opens the store, connects to the participants and recovers unfinished
 * sagas. Returns NULL with a reason in err. cfg must outlive the engine. */
engine *engine_create(const orch_config *cfg, char *err, size_t errlen);
int engine_run_start(engine *e, char *err, size_t errlen); /* starts the thread */
void engine_stop(engine *e);                               /* drains and joins */
void engine_destroy(engine *e);

/* Asynchronous commands: done(arg, ...) is called exactly once: on the engine
 * thread, or on the caller's thread before the call returns when the command
 * cannot be queued (sagad stopping, out of memory). Inputs are copied before
 * these return. */
void engine_start_saga(engine *e, const char *type, const char *client_key, const kvmap *input,
                       engine_done_fn done, void *arg);
/* What a start may set beyond the type's definition. */
typedef struct {
    int64_t deadline_ms; /* > 0: compensate if still RUNNING this long after the start;
                            0: the type's deadline_s */
    int64_t start_at_ms; /* > 0 and in the future (wall clock): store the start and run it
                            then (engine_sched.c); otherwise: now */
} engine_start_options;
/* engine_start_saga with options; opts NULL: none. */
void engine_start_saga_opts(engine *e, const char *type, const char *client_key, const kvmap *input,
                            const engine_start_options *opts, engine_done_fn done, void *arg);
/* Operator commands. who names the operator for the history and the log
 * ("uid 1000 (alice)"; NULL: "operator"); reason says why (NULL: none). */
void engine_abort_saga(engine *e, const char *saga_id, const char *who, const char *reason,
                       engine_done_fn done, void *arg);
/* Cancels a scheduled start that has not fired: ENGINE_NOT_FOUND when there
 * is none, ENGINE_INVALID_STATE (naming its state) when its saga started. */
void engine_cancel_start(engine *e, const char *saga_id, engine_done_fn done, void *arg);
void engine_resume_saga(engine *e, const char *saga_id, const char *who, const char *reason,
                        engine_done_fn done, void *arg);
/* Reads the saga files again (config_load_sagas) and, when every one is
 * valid, makes them the current definitions (catalog_install); done gets
 * ENGINE_INVALID_CONFIG with "file:line: ..." otherwise. Sagas in flight
 * finish on the version they started on. */
void engine_reload(engine *e, engine_done_fn done, void *arg);
/* The definitions (catalog.h): lives as long as the engine. */
struct catalog *engine_catalog(engine *e);
void engine_get_counters(engine *e, engine_counters *out);
/* Any thread: 0 while the engine takes commands; otherwise 1 with the reason
 * in why (sagad is stopping, or the store refuses commits: the BUSY case). */
int engine_health(engine *e, char *why, size_t whylen);
/* The engine's Prometheus metrics (orch_metrics.h): the engine thread updates
 * them, any thread may render them. Lives as long as the engine. */
struct orch_metrics *engine_metrics(engine *e);

#endif
