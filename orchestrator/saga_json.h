/*
 * saga_json — the JSON documents of sagas (status, list, history, stats),
 * built once from the admin API's replies (proto/admin.proto) and served
 * unchanged by both `sagactl --json` and sagad's HTTP API (/api/..., which
 * gets the same replies through admin_read): the two can never disagree.
 *
 * The contract (docs/SAGACTL.md "JSON output" lists every field):
 *  - an optional text that is absent is null, never "": client_key,
 *    last_error, a step's compensation (none), participant and action (its
 *    definition cannot be loaded), an event's step (saga-level), phase,
 *    outcome and detail;
 *  - states are the proto names without prefix ("RUNNING"); outcomes too
 *    ("OK"); phases are "action" / "compensate";
 *  - failed_phase is set only when state is FAILED;
 *  - a list's next_after is null when the page was not full.
 *  - every wall-clock *_ms field (milliseconds since the epoch, 0: none) has
 *    an ISO 8601 UTC twin without the suffix ("created_at":
 *    "2026-12-02T23:48:32.123Z"), null for 0;
 *  - duration_ms: a saga's (created to last update) once it is COMPLETED,
 *    COMPENSATED or FAILED, a step's (first request to the answer that
 *    settled its action) once answered; null before (a running duration
 *    would differ between two reads);
 *  - root_cause: the first cause of trouble (saga.h "Errors"), null when
 *    none; failed_step: the step a FAILED saga stopped at (its "failed":
 *    true), null otherwise;
 *  - a step's params: what its requests carry ({} while never sent); an
 *    event's params (step_sent) and result (step_reply OK of an action),
 *    null for the other events.
 * Every string is valid UTF-8 (json_util.h). Each function returns a new
 * reference, or NULL when out of memory.
 */
#ifndef SAGA_SAGA_JSON_H
#define SAGA_SAGA_JSON_H

#include <jansson.h>

#include "admin.pb-c.h"

json_t *saga_json_status(const Saga__V1__SagaStatus *s);
json_t *saga_json_list(const Saga__V1__SagaList *l);
json_t *saga_json_history(const Saga__V1__SagaHistory *h);
/* One history event: an element of saga_json_history's "events" (and a line
 * of `sagactl watch --json`). */
json_t *saga_json_event(const Saga__V1__HistoryEvent *ev);
json_t *saga_json_stats(const Saga__V1__Stats *st);

#endif
