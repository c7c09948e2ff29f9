/* saga_json — see saga_json.h. */
#include "saga_json.h"

#include <stdio.h>
#include <time.h>

#include "json_util.h"
#include "saga.h"
#include "wire.h"

static json_t *state_name(int state)
{
    if (state == SAGA__V1__SAGA_STATE__SAGA_SCHEDULED) /* a start, not a saga state */
        return json_string("SCHEDULED");
    return json_string(saga_state_name((saga_state)state));
}

/* An outcome, null for OUTCOME_UNSPECIFIED (no reply yet / not a reply). */
static json_t *outcome_or_null(int outcome)
{
    return outcome == OUTCOME_UNSPECIFIED ? json_null() : json_string(wire_outcome_name(outcome));
}

/* A wall-clock time as ISO 8601 UTC with milliseconds ("...T12:00:00.000Z"),
 * null for 0 (not yet, none): beside every *_ms field. */
static json_t *iso_or_null(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char buf[40];
    if (gmtime_r(&secs, &tm) == NULL)
        return json_null();
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}

/* COMPLETED, COMPENSATED or FAILED: the saga's times stay put until an
 * operator acts, so its duration is a fact both doors read alike. */
static int settled(int state)
{
    return saga_is_final((saga_state)state) || state == SAGA_FAILED;
}

/* to - from, null unless both are known (a duration still running has no
 * fixed value: the two doors, read at different times, must agree). */
static json_t *duration_or_null(int64_t from, int64_t to)
{
    return from > 0 && to >= from ? json_integer(to - from) : json_null();
}

/* A map's entries (protobuf-c lays every map<string, string> entry out
 * alike) as an object. */
typedef struct {
    ProtobufCMessage base;
    char *key;
    char *value;
} kv_entry;

static json_t *map_object(void *const *entries, size_t n)
{
    json_t *obj = json_object();
    int bad = obj == NULL;
    for (size_t i = 0; i < n && !bad; i++) {
        const kv_entry *e = entries[i];
        bad = ju_set(obj, e->key, ju_str(e->value));
    }
    if (bad)
        json_decref(obj);
    return bad ? NULL : obj;
}

static json_t *map_input(Saga__V1__SagaStatus__InputEntry **e, size_t n)
{
    json_t *obj = json_object();
    int bad = obj == NULL;
    for (size_t i = 0; i < n && !bad; i++)
        bad = ju_set(obj, e[i]->key, ju_str(e[i]->value));
    if (bad)
        json_decref(obj);
    return bad ? NULL : obj;
}

static json_t *map_result(Saga__V1__StepStatus__ResultEntry **e, size_t n)
{
    json_t *obj = json_object();
    int bad = obj == NULL;
    for (size_t i = 0; i < n && !bad; i++)
        bad = ju_set(obj, e[i]->key, ju_str(e[i]->value));
    if (bad)
        json_decref(obj);
    return bad ? NULL : obj;
}

/* Hands back obj, or frees it and gives NULL when building it failed. */
static json_t *done(json_t *obj, int bad)
{
    if (obj != NULL && !bad)
        return obj;
    json_decref(obj);
    return NULL;
}

static json_t *step_json(const Saga__V1__StepStatus *st)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = ju_set(o, "name", ju_str(st->name)) |
              ju_set(o, "participant", ju_str_or_null(st->participant)) |
              ju_set(o, "action", ju_str_or_null(st->action)) |
              ju_set(o, "compensation", ju_str_or_null(st->compensation)) |
              ju_set(o, "state", json_string(step_state_name((step_state)st->state))) |
              ju_set(o, "action_attempts", json_integer(st->action_attempts)) |
              ju_set(o, "compensation_attempts", json_integer(st->compensation_attempts)) |
              ju_set(o, "last_outcome", outcome_or_null(st->last_outcome)) |
              ju_set(o, "result", map_result(st->result, st->n_result)) |
              ju_set(o, "last_error", ju_str_or_null(st->last_error)) |
              ju_set(o, "next_attempt_at_ms", json_integer(st->next_attempt_at_ms)) |
              ju_set(o, "started_at_ms", json_integer(st->started_at_ms)) |
              ju_set(o, "finished_at_ms", json_integer(st->finished_at_ms)) |
              ju_set(o, "next_attempt_at", iso_or_null(st->next_attempt_at_ms)) |
              ju_set(o, "started_at", iso_or_null(st->started_at_ms)) |
              ju_set(o, "finished_at", iso_or_null(st->finished_at_ms)) |
              ju_set(o, "duration_ms", duration_or_null(st->started_at_ms, st->finished_at_ms)) |
              ju_set(o, "params", map_object((void *const *)st->params, st->n_params)) |
              ju_set(o, "failed", json_boolean(st->failed));
    return done(o, bad);
}

json_t *saga_json_status(const Saga__V1__SagaStatus *s)
{
    json_t *o = json_object(), *steps = json_array();
    int bad = o == NULL || steps == NULL;
    for (size_t i = 0; i < s->n_steps && !bad; i++)
        bad = ju_append(steps, step_json(s->steps[i]));
    if (bad) {
        json_decref(steps);
        return done(o, 1);
    }
    int failed = s->state == SAGA__V1__SAGA_STATE__SAGA_FAILED;
    json_t *failed_phase = failed ? json_string(wire_phase_name(s->failed_phase)) : json_null();
    int final = settled(s->state);
    bad = ju_set(o, "saga_id", ju_str(s->saga_id)) | ju_set(o, "type", ju_str(s->type)) |
          ju_set(o, "state", state_name(s->state)) |
          ju_set(o, "client_key", ju_str_or_null(s->client_key)) |
          ju_set(o, "input", map_input(s->input, s->n_input)) |
          ju_set(o, "created_at_ms", json_integer(s->created_at_ms)) |
          ju_set(o, "updated_at_ms", json_integer(s->updated_at_ms)) |
          ju_set(o, "deadline_at_ms", json_integer(s->deadline_at_ms)) |
          ju_set(o, "start_at_ms", json_integer(s->start_at_ms)) |
          ju_set(o, "last_error", ju_str_or_null(s->last_error)) |
          ju_set(o, "failed_phase", failed_phase) |
          ju_set(o, "failed_step", failed ? ju_str_or_null(s->failed_step) : json_null()) |
          ju_set(o, "root_cause", ju_str_or_null(s->root_cause)) |
          ju_set(o, "created_at", iso_or_null(s->created_at_ms)) |
          ju_set(o, "updated_at", iso_or_null(s->updated_at_ms)) |
          ju_set(o, "deadline_at", iso_or_null(s->deadline_at_ms)) |
          ju_set(o, "duration_ms",
                 final ? duration_or_null(s->created_at_ms, s->updated_at_ms) : json_null()) |
          ju_set(o, "steps", steps);
    return done(o, bad);
}

static json_t *summary_json(const Saga__V1__SagaSummary *r)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = ju_set(o, "saga_id", ju_str(r->saga_id)) | ju_set(o, "type", ju_str(r->type)) |
              ju_set(o, "state", state_name(r->state)) |
              ju_set(o, "created_at_ms", json_integer(r->created_at_ms)) |
              ju_set(o, "updated_at_ms", json_integer(r->updated_at_ms)) |
              ju_set(o, "last_error", ju_str_or_null(r->last_error)) |
              ju_set(o, "start_at_ms", json_integer(r->start_at_ms)) |
              ju_set(o, "root_cause", ju_str_or_null(r->root_cause)) |
              ju_set(o, "client_key", ju_str_or_null(r->client_key)) |
              ju_set(o, "created_at", iso_or_null(r->created_at_ms)) |
              ju_set(o, "updated_at", iso_or_null(r->updated_at_ms)) |
              ju_set(o, "duration_ms",
                     settled(r->state) ? duration_or_null(r->created_at_ms, r->updated_at_ms)
                                       : json_null());
    return done(o, bad);
}

json_t *saga_json_list(const Saga__V1__SagaList *l)
{
    static const Saga__V1__StateCounts none = SAGA__V1__STATE_COUNTS__INIT;
    const Saga__V1__StateCounts *c = l->counts != NULL ? l->counts : &none;
    json_t *o = json_object(), *counts = json_object(), *sagas = json_array();
    int bad = o == NULL || counts == NULL || sagas == NULL;
    for (size_t i = 0; i < l->n_sagas && !bad; i++)
        bad = ju_append(sagas, summary_json(l->sagas[i]));
    if (!bad)
        bad = ju_set(counts, "RUNNING", json_integer((json_int_t)c->running)) |
              ju_set(counts, "COMPENSATING", json_integer((json_int_t)c->compensating)) |
              ju_set(counts, "COMPLETED", json_integer((json_int_t)c->completed)) |
              ju_set(counts, "COMPENSATED", json_integer((json_int_t)c->compensated)) |
              ju_set(counts, "FAILED", json_integer((json_int_t)c->failed)) |
              ju_set(counts, "SCHEDULED", json_integer((json_int_t)c->scheduled));
    if (bad) {
        json_decref(counts);
        json_decref(sagas);
        return done(o, 1);
    }
    bad = ju_set(o, "counts", counts) | ju_set(o, "sagas", sagas) |
          ju_set(o, "next_after", ju_str_or_null(l->next_after));
    return done(o, bad);
}

json_t *saga_json_event(const Saga__V1__HistoryEvent *ev)
{
    int saga_level = ev->step == NULL || ev->step[0] == '\0';
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad =
        ju_set(o, "seq", json_integer((json_int_t)ev->seq)) |
        ju_set(o, "at_ms", json_integer(ev->at_ms)) | ju_set(o, "kind", ju_str(ev->kind)) |
        ju_set(o, "step", ju_str_or_null(ev->step)) |
        ju_set(o, "phase", saga_level ? json_null() : json_string(wire_phase_name(ev->phase))) |
        ju_set(o, "attempt", json_integer(ev->attempt)) |
        ju_set(o, "outcome", outcome_or_null(ev->outcome)) |
        ju_set(o, "replayed", json_boolean(ev->replayed)) |
        ju_set(o, "detail", ju_str_or_null(ev->detail)) | ju_set(o, "at", iso_or_null(ev->at_ms)) |
        ju_set(o, "params",
               ev->n_params ? map_object((void *const *)ev->params, ev->n_params) : json_null()) |
        ju_set(o, "result",
               ev->n_result ? map_object((void *const *)ev->result, ev->n_result) : json_null());
    return done(o, bad);
}

json_t *saga_json_history(const Saga__V1__SagaHistory *h)
{
    json_t *o = json_object(), *events = json_array();
    int bad = o == NULL || events == NULL;
    for (size_t i = 0; i < h->n_events && !bad; i++)
        bad = ju_append(events, saga_json_event(h->events[i]));
    if (bad) {
        json_decref(events);
        return done(o, 1);
    }
    bad = ju_set(o, "saga_id", ju_str(h->saga_id)) | ju_set(o, "state", state_name(h->state)) |
          ju_set(o, "final", json_boolean(saga_is_final((saga_state)h->state))) |
          ju_set(o, "events", events) | ju_set(o, "more", json_boolean(h->more));
    return done(o, bad);
}

json_t *saga_json_stats(const Saga__V1__Stats *st)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = ju_set(o, "running", json_integer((json_int_t)st->running)) |
              ju_set(o, "compensating", json_integer((json_int_t)st->compensating)) |
              ju_set(o, "completed", json_integer((json_int_t)st->completed)) |
              ju_set(o, "compensated", json_integer((json_int_t)st->compensated)) |
              ju_set(o, "failed", json_integer((json_int_t)st->failed)) |
              ju_set(o, "in_flight", json_integer((json_int_t)st->in_flight)) |
              ju_set(o, "steps_sent", json_integer((json_int_t)st->steps_sent)) |
              ju_set(o, "retries", json_integer((json_int_t)st->retries)) |
              ju_set(o, "timeouts", json_integer((json_int_t)st->timeouts)) |
              ju_set(o, "replayed_replies", json_integer((json_int_t)st->replayed_replies));
    return done(o, bad);
}
