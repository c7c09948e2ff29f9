/*
 * pt_metrics — the participant runtime's per-operation metrics: for every
 * registered operation, a counter of the requests answered by outcome and a
 * histogram of how long they took (docs/OBSERVABILITY.md lists the names).
 *
 * Layout: laid out once, at pt_start, from the registry (which is frozen
 * then: pt_register refuses once started), one slot per registered
 * operation (its phase is the operation's) plus one per phase for
 * requests naming no registered operation ("_unknown": a stored key reused
 * with another operation, answered from the barrier). Label values thus
 * come from the service's own registry, never from a peer's bytes, so a
 * peer cannot grow the exposition.
 *
 * Threads: the serving thread (batch.c) observes with relaxed atomic
 * additions; any thread renders (pt_metrics_text). Nothing locks.
 *
 * What is counted: exactly the requests pt_stats.requests counts (well-formed,
 * an operation known for its phase or a key already on record), once each,
 * when its reply is final: after the batch's COMMIT, or when the batch was
 * rolled back and every request answers RETRY. So
 * sum(saga_participant_requests_total) equals pt_stats.requests. The time
 * is the batch's (decode, barrier, handlers, COMMIT), the same for every
 * request of one batch; the time queued before the batch is not in it
 * (sagad's saga_step_duration_seconds covers the whole round trip).
 */
#ifndef SAGA_PT_METRICS_H
#define SAGA_PT_METRICS_H

#include <stddef.h>

typedef struct pt_metrics pt_metrics;
struct participant;

/* From p's registry. NULL when out of memory. */
pt_metrics *pt_metrics_create(const struct participant *p);
void pt_metrics_free(pt_metrics *m);
/* A request answered with outcome (OUTCOME_OK .. OUTCOME_SKIPPED); op_index
 * is its operation's index in p->ops, or -1 for none (then phase says
 * which "_unknown" slot). Safe on m NULL (a participant never started). */
void pt_metrics_observe(pt_metrics *m, long op_index, int phase, int outcome, double seconds);
/* A monotonic clock in seconds, with the resolution a sub-millisecond request needs. */
double pt_metrics_now(void);

#endif
