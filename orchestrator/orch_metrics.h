/*
 * orch_metrics — sagad's Prometheus metrics (docs/OBSERVABILITY.md lists
 * every name, type and label).
 *
 * The engine thread calls the om_on_* hooks as things happen (a saga starts
 * or settles, a request is sent, a reply or timeout arrives, a round
 * commits); each hook is a few relaxed atomic additions on arrays laid out
 * once at creation from the configuration (per saga type, and per
 * participant and operation), so the hot path neither locks nor allocates.
 * The HTTP thread calls om_render at any time to write the exposition.
 *
 * Labels: saga_type (a configured saga name, or "_unconfigured" for a
 * stored saga whose type is gone), participant and operation (from the step
 * definitions: one series per distinct pair), outcome (OK, REJECTED, RETRY,
 * CONFLICT, SKIPPED), state (the final state of saga_duration_seconds:
 * COMPLETED, COMPENSATED, FAILED); per replica of a participant
 * (transport.h), participant and url (one of its configured URLs).
 */
#ifndef SAGA_ORCH_METRICS_H
#define SAGA_ORCH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "saga.h"
#include "strbuf.h"

typedef struct orch_metrics orch_metrics;

/* cfg must outlive the metrics. NULL when out of memory. */
orch_metrics *om_create(const orch_config *cfg);
void om_free(orch_metrics *m);

/* ---- Engine thread ------------------------------------------------------ */
void om_on_saga_started(orch_metrics *m, const saga *s);
/* s reached COMPLETED, COMPENSATED or FAILED (after its round committed):
 * counted, and its duration (updated_at_ms - created_at_ms) observed. */
void om_on_saga_settled(orch_metrics *m, const saga *s);
void om_on_step_sent(orch_metrics *m, const saga *s, int step, int phase, uint32_t attempt);
void om_on_step_reply(orch_metrics *m, const saga *s, int step, int phase, int outcome,
                      int replayed, double seconds);
/* An attempt without a usable reply; timeout = 1 when it timed out. */
void om_on_step_no_reply(orch_metrics *m, const saga *s, int step, int phase, int timeout);
void om_on_commit(orch_metrics *m, size_t sagas_written);
void om_set_in_flight(orch_metrics *m, uint64_t n);
/* n action requests left before the commit of their intent (engine.c "Early sends"). */
void om_on_early_sends(orch_metrics *m, size_t n);
/* A round's commit failed for a transient reason and will be retried. */
void om_on_commit_retry(orch_metrics *m);
void om_set_store_unavailable(orch_metrics *m, int unavailable);
/* A saga was quarantined: FAILED because it could not be read or broke an invariant. */
void om_on_quarantined(orch_metrics *m);
/* Several nodes: this node lost its lease; it claimed sagas of fenced nodes. */
void om_on_lease_lost(orch_metrics *m);
void om_on_taken_over(orch_metrics *m, uint64_t sagas);
/* Any thread: finished sagas deleted by the retention purge. */
void om_on_purged(orch_metrics *m, uint64_t sagas);
/* An alert command: started, not started (spawn failed or the file is no
 * longer trusted), dropped (too many waiting), or killed at its time limit. */
enum om_alert { OM_ALERT_STARTED, OM_ALERT_SPAWN_FAILED, OM_ALERT_DROPPED, OM_ALERT_TIMED_OUT };
#define OM_ALERT_RESULTS 4
void om_on_alert(orch_metrics *m, enum om_alert what);

/* Per replica of a participant (the transport, on the engine thread): a
 * request queued for it; a call released answered or not (timeout, error);
 * its connection, as transport_maintain last saw it. */
void om_on_replica_sent(orch_metrics *m, size_t participant, size_t replica);
void om_on_replica_result(orch_metrics *m, size_t participant, size_t replica, int answered);
void om_set_replica_connected(orch_metrics *m, size_t participant, size_t replica, int connected);

/* ---- Any thread ------------------------------------------------------------ */
/* Appends the whole exposition to sb. */
void om_render(orch_metrics *m, strbuf *sb);

#endif
