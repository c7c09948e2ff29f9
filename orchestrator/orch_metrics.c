/* orch_metrics — see orch_metrics.h. */
#include "orch_metrics.h"

#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "wire.h"

#define N_OUTCOMES (OUTCOME_SKIPPED - OUTCOME_OK + 1) /* answers: OUTCOME_OK .. OUTCOME_SKIPPED */

/* The final states a saga's duration is observed in, in this order. */
static const int settled_states[] = {SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_FAILED};
#define N_SETTLED 3

/* Saga durations (created to settled), in seconds: from a few milliseconds
 * (all steps local) to a day (long retry policies, a FAILED saga resumed
 * by an operator the next morning). */
static const double saga_duration_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,   1,
                                              2.5,   10,   60,    300,  900, 3600, 14400, 86400};

/* Counters of one saga type. */
typedef struct {
    mt_counter started, completed, compensated, failed;
    mt_histogram duration[N_SETTLED]; /* by settled_states */
} type_counters;

/* Counters of one (participant, operation) pair. */
typedef struct {
    const char *participant;
    const char *operation;
    mt_counter attempts, retries, timeouts, unreachable;
    mt_counter replies[N_OUTCOMES];
    mt_histogram duration;
} op_counters;

/* Counters of one replica (one URL) of a participant. */
typedef struct {
    const char *participant;
    const char *url;
    mt_counter requests, answered, failed;
    atomic_uint_fast64_t connected;
} replica_counters;

struct orch_metrics {
    const orch_config *cfg;
    replica_counters *replicas; /* every URL of every participant, in order */
    size_t *first_replica;      /* per participant: its first in replicas */
    size_t n_replicas;
    type_counters *types; /* cfg->n_sagas + 1: the last is "_unconfigured" */
    op_counters *ops;
    size_t n_ops;
    mt_counter replayed, conflicts, skips, commits;
    /* Commits under durability "full": each waits for one fdatasync of the WAL. */
    mt_counter syncs;
    mt_histogram batch;
    atomic_uint_fast64_t in_flight;
    mt_counter alerts[OM_ALERT_RESULTS];
    /* Resilience (docs/OBSERVABILITY.md "Store failures and retention"). */
    mt_counter commit_retries, quarantined, purged, early_sends;
    mt_counter lease_lost, taken_over; /* several nodes (docs/SCALE-OUT.md) */
    atomic_uint_fast64_t store_unavailable;
};

static size_t find_or_add_op(orch_metrics *m, const char *participant, const char *operation)
{
    for (size_t i = 0; i < m->n_ops; i++)
        if (strcmp(m->ops[i].participant, participant) == 0 &&
            strcmp(m->ops[i].operation, operation) == 0)
            return i;
    op_counters *o = &m->ops[m->n_ops];
    o->participant = participant;
    o->operation = operation;
    mt_hist_init(&o->duration, mt_duration_bounds, mt_duration_n);
    return m->n_ops++;
}

orch_metrics *om_create(const orch_config *cfg)
{
    orch_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->cfg = cfg;
    size_t slots = 0;
    for (size_t i = 0; i < cfg->n_sagas; i++)
        slots += cfg->sagas[i].n_steps * 2;
    m->types = calloc(cfg->n_sagas + 1, sizeof *m->types);
    m->ops = calloc(slots ? slots : 1, sizeof *m->ops);
    for (size_t i = 0; i < cfg->n_participants; i++)
        m->n_replicas += cfg->participants[i].n_urls;
    m->replicas = calloc(m->n_replicas ? m->n_replicas : 1, sizeof *m->replicas);
    m->first_replica =
        calloc(cfg->n_participants ? cfg->n_participants : 1, sizeof *m->first_replica);
    if (m->types == NULL || m->ops == NULL || m->replicas == NULL || m->first_replica == NULL) {
        om_free(m);
        return NULL;
    }
    for (size_t i = 0; i <= cfg->n_sagas; i++)
        for (int k = 0; k < N_SETTLED; k++)
            mt_hist_init(&m->types[i].duration[k], saga_duration_bounds,
                         sizeof saga_duration_bounds / sizeof saga_duration_bounds[0]);
    for (size_t i = 0; i < cfg->n_sagas; i++) {
        const saga_def *d = &cfg->sagas[i];
        for (size_t j = 0; j < d->n_steps; j++) {
            const step_def *sd = &d->steps[j];
            find_or_add_op(m, sd->participant, sd->action);
            if (sd->compensation)
                find_or_add_op(m, sd->participant, sd->compensation);
        }
    }
    for (size_t i = 0, k = 0; i < cfg->n_participants; i++) {
        m->first_replica[i] = k;
        for (size_t j = 0; j < cfg->participants[i].n_urls; j++, k++) {
            m->replicas[k].participant = cfg->participants[i].name;
            m->replicas[k].url = cfg->participants[i].urls[j];
        }
    }
    mt_hist_init(&m->batch, mt_size_bounds, mt_size_n);
    return m;
}

void om_free(orch_metrics *m)
{
    if (m == NULL)
        return;
    free(m->types);
    free(m->ops);
    free(m->replicas);
    free(m->first_replica);
    free(m);
}

/* The counters of s's type: its slot among the types configured at start, or
 * the "_unconfigured" one. By name: s->def is the version s runs on (catalog.h),
 * never one of cfg->sagas. */
static type_counters *type_of(orch_metrics *m, const saga *s)
{
    for (size_t i = 0; s->type != NULL && i < m->cfg->n_sagas; i++)
        if (strcmp(m->cfg->sagas[i].name, s->type) == 0)
            return &m->types[i];
    return &m->types[m->cfg->n_sagas];
}

/* The (participant, operation) counters of a step: NULL for a pair no
 * definition at start had (one added by a reload is not counted). */
static op_counters *op_of(orch_metrics *m, const saga *s, int step, int phase)
{
    if (s->def == NULL || step < 0 || (size_t)step >= s->def->n_steps)
        return NULL;
    const step_def *sd = &s->def->steps[step];
    const char *op = phase == PHASE_COMPENSATE ? sd->compensation : sd->action;
    if (op == NULL)
        return NULL;
    for (size_t i = 0; i < m->n_ops; i++)
        if (strcmp(m->ops[i].operation, op) == 0 &&
            strcmp(m->ops[i].participant, sd->participant) == 0)
            return &m->ops[i];
    return NULL;
}

void om_on_saga_started(orch_metrics *m, const saga *s)
{
    if (m)
        mt_add(&type_of(m, s)->started, 1);
}

void om_on_saga_settled(orch_metrics *m, const saga *s)
{
    if (m == NULL)
        return;
    type_counters *t = type_of(m, s);
    if (s->state == SAGA_COMPLETED)
        mt_add(&t->completed, 1);
    else if (s->state == SAGA_COMPENSATED)
        mt_add(&t->compensated, 1);
    else if (s->state == SAGA_FAILED)
        mt_add(&t->failed, 1);
    /* From its creation (wall clock, stored: it survives restarts) to the
     * transition just committed; a resumed saga's includes its time FAILED. */
    int64_t ms = s->updated_at_ms - s->created_at_ms;
    for (int k = 0; k < N_SETTLED; k++)
        if ((int)s->state == settled_states[k])
            mt_hist_observe(&t->duration[k], ms > 0 ? (double)ms / 1000.0 : 0);
}

void om_on_step_sent(orch_metrics *m, const saga *s, int step, int phase, uint32_t attempt)
{
    op_counters *o = m ? op_of(m, s, step, phase) : NULL;
    if (o == NULL)
        return;
    mt_add(&o->attempts, 1);
    if (attempt > 1)
        mt_add(&o->retries, 1);
}

void om_on_step_reply(orch_metrics *m, const saga *s, int step, int phase, int outcome,
                      int replayed, double seconds)
{
    if (m == NULL)
        return;
    if (replayed)
        mt_add(&m->replayed, 1);
    if (outcome == OUTCOME_CONFLICT)
        mt_add(&m->conflicts, 1);
    if (outcome == OUTCOME_SKIPPED)
        mt_add(&m->skips, 1);
    op_counters *o = op_of(m, s, step, phase);
    if (o == NULL)
        return;
    if (wire_outcome_known(outcome))
        mt_add(&o->replies[outcome - OUTCOME_OK], 1);
    mt_hist_observe(&o->duration, seconds < 0 ? 0 : seconds);
}

void om_on_step_no_reply(orch_metrics *m, const saga *s, int step, int phase, int timeout)
{
    op_counters *o = m ? op_of(m, s, step, phase) : NULL;
    if (o != NULL)
        mt_add(timeout ? &o->timeouts : &o->unreachable, 1);
}

void om_on_commit(orch_metrics *m, size_t sagas_written)
{
    if (m == NULL)
        return;
    mt_add(&m->commits, 1);
    if (m->cfg->durability_full)
        mt_add(&m->syncs, 1);
    mt_hist_observe(&m->batch, (double)sagas_written);
}

void om_set_in_flight(orch_metrics *m, uint64_t n)
{
    if (m)
        atomic_store_explicit(&m->in_flight, n, memory_order_relaxed);
}

void om_on_early_sends(orch_metrics *m, size_t n)
{
    if (m)
        mt_add(&m->early_sends, n);
}

void om_on_commit_retry(orch_metrics *m)
{
    if (m)
        mt_add(&m->commit_retries, 1);
}

void om_set_store_unavailable(orch_metrics *m, int unavailable)
{
    if (m)
        atomic_store_explicit(&m->store_unavailable, unavailable ? 1 : 0, memory_order_relaxed);
}

void om_on_quarantined(orch_metrics *m)
{
    if (m)
        mt_add(&m->quarantined, 1);
}

void om_on_lease_lost(orch_metrics *m)
{
    if (m)
        mt_add(&m->lease_lost, 1);
}

void om_on_taken_over(orch_metrics *m, uint64_t sagas)
{
    if (m)
        mt_add(&m->taken_over, sagas);
}

void om_on_purged(orch_metrics *m, uint64_t sagas)
{
    if (m)
        mt_add(&m->purged, sagas);
}

/* The counters of a replica; NULL out of range. */
static replica_counters *replica_of(orch_metrics *m, size_t participant, size_t replica)
{
    if (m == NULL || participant >= m->cfg->n_participants ||
        replica >= m->cfg->participants[participant].n_urls)
        return NULL;
    return &m->replicas[m->first_replica[participant] + replica];
}

void om_on_replica_sent(orch_metrics *m, size_t participant, size_t replica)
{
    replica_counters *r = replica_of(m, participant, replica);
    if (r != NULL)
        mt_add(&r->requests, 1);
}

void om_on_replica_result(orch_metrics *m, size_t participant, size_t replica, int answered)
{
    replica_counters *r = replica_of(m, participant, replica);
    if (r != NULL)
        mt_add(answered ? &r->answered : &r->failed, 1);
}

void om_set_replica_connected(orch_metrics *m, size_t participant, size_t replica, int connected)
{
    replica_counters *r = replica_of(m, participant, replica);
    if (r != NULL)
        atomic_store_explicit(&r->connected, connected ? 1 : 0, memory_order_relaxed);
}

void om_on_alert(orch_metrics *m, enum om_alert what)
{
    if (m)
        mt_add(&m->alerts[what], 1);
}

/* ---- Exposition ----------------------------------------------------------------- */

static void type_labels(strbuf *sb, const orch_metrics *m, size_t i)
{
    sb->len = 0;
    sb_puts(sb, "saga_type=\"");
    sb_label_value(sb, i < m->cfg->n_sagas ? m->cfg->sagas[i].name : "_unconfigured");
    sb_puts(sb, "\"");
}

static void op_labels(strbuf *sb, const op_counters *o)
{
    sb->len = 0;
    sb_puts(sb, "participant=\"");
    sb_label_value(sb, o->participant);
    sb_puts(sb, "\",operation=\"");
    sb_label_value(sb, o->operation);
    sb_puts(sb, "\"");
}

static void replica_labels(strbuf *sb, const replica_counters *r)
{
    sb->len = 0;
    sb_puts(sb, "participant=\"");
    sb_label_value(sb, r->participant);
    sb_puts(sb, "\",url=\"");
    sb_label_value(sb, r->url);
    sb_puts(sb, "\"");
}

static void per_replica(strbuf *sb, strbuf *lb, orch_metrics *m, const char *name, const char *type,
                        const char *help, size_t offset)
{
    mt_header(sb, name, type, help);
    for (size_t i = 0; i < m->n_replicas; i++) {
        const mt_counter *c = (const mt_counter *)((const char *)&m->replicas[i] + offset);
        replica_labels(lb, &m->replicas[i]);
        mt_sample(sb, name, lb->data, mt_get(c));
    }
}

static void per_type(strbuf *sb, strbuf *lb, orch_metrics *m, const char *name, const char *help,
                     size_t offset)
{
    mt_header(sb, name, "counter", help);
    for (size_t i = 0; i <= m->cfg->n_sagas; i++) {
        const mt_counter *c = (const mt_counter *)((const char *)&m->types[i] + offset);
        if (i == m->cfg->n_sagas && mt_get(c) == 0)
            continue; /* the "_unconfigured" series only once it has happened */
        type_labels(lb, m, i);
        mt_sample(sb, name, lb->data, mt_get(c));
    }
}

static void per_op(strbuf *sb, strbuf *lb, orch_metrics *m, const char *name, const char *help,
                   size_t offset)
{
    mt_header(sb, name, "counter", help);
    for (size_t i = 0; i < m->n_ops; i++) {
        const mt_counter *c = (const mt_counter *)((const char *)&m->ops[i] + offset);
        op_labels(lb, &m->ops[i]);
        mt_sample(sb, name, lb->data, mt_get(c));
    }
}

void om_render(orch_metrics *m, strbuf *sb)
{
    strbuf lb = STRBUF_INIT;
    per_type(sb, &lb, m, "saga_sagas_started_total", "Sagas started, by saga type.",
             offsetof(type_counters, started));
    per_type(sb, &lb, m, "saga_sagas_completed_total", "Sagas that reached COMPLETED.",
             offsetof(type_counters, completed));
    per_type(sb, &lb, m, "saga_sagas_compensated_total", "Sagas that reached COMPENSATED.",
             offsetof(type_counters, compensated));
    per_type(sb, &lb, m, "saga_sagas_failed_total", "Sagas that became FAILED (need an operator).",
             offsetof(type_counters, failed));
    mt_header(sb, "saga_duration_seconds", "histogram",
              "Time from a saga's creation to reaching COMPLETED, COMPENSATED or FAILED.");
    for (size_t i = 0; i <= m->cfg->n_sagas; i++)
        for (int k = 0; k < N_SETTLED; k++) {
            const mt_histogram *h = &m->types[i].duration[k];
            if (i == m->cfg->n_sagas && mt_get(&h->count) == 0)
                continue; /* "_unconfigured" only once it has happened */
            type_labels(&lb, m, i);
            sb_printf(&lb, ",state=\"%s\"", saga_state_name(settled_states[k]));
            mt_hist_write(sb, "saga_duration_seconds", lb.data, h);
        }
    mt_header(sb, "saga_sagas_in_flight", "gauge",
              "Unfinished sagas held in memory (RUNNING, COMPENSATING, or FAILED being handled).");
    mt_sample(sb, "saga_sagas_in_flight", NULL,
              atomic_load_explicit(&m->in_flight, memory_order_relaxed));

    per_op(sb, &lb, m, "saga_step_attempts_total", "Step requests sent (every attempt).",
           offsetof(op_counters, attempts));
    per_op(sb, &lb, m, "saga_step_retries_total", "Step requests that were not a first attempt.",
           offsetof(op_counters, retries));
    per_op(sb, &lb, m, "saga_step_timeouts_total", "Step attempts that got no reply in time.",
           offsetof(op_counters, timeouts));
    per_op(sb, &lb, m, "saga_step_unreachable_total",
           "Step attempts that failed to send or got a malformed reply.",
           offsetof(op_counters, unreachable));

    mt_header(sb, "saga_step_replies_total", "counter", "Step replies, by outcome.");
    for (size_t i = 0; i < m->n_ops; i++)
        for (int k = 0; k < N_OUTCOMES; k++) {
            op_labels(&lb, &m->ops[i]);
            sb_printf(&lb, ",outcome=\"%s\"", wire_outcome_name(OUTCOME_OK + k));
            mt_sample(sb, "saga_step_replies_total", lb.data, mt_get(&m->ops[i].replies[k]));
        }
    mt_header(sb, "saga_step_duration_seconds", "histogram",
              "Time from sending a step request to its reply.");
    for (size_t i = 0; i < m->n_ops; i++) {
        op_labels(&lb, &m->ops[i]);
        mt_hist_write(sb, "saga_step_duration_seconds", lb.data, &m->ops[i].duration);
    }

    per_replica(sb, &lb, m, "saga_replica_requests_total", "counter",
                "Step requests sent to this replica (URL) of the participant.",
                offsetof(replica_counters, requests));
    per_replica(sb, &lb, m, "saga_replica_answered_total", "counter",
                "Step requests this replica answered.", offsetof(replica_counters, answered));
    per_replica(sb, &lb, m, "saga_replica_failures_total", "counter",
                "Step requests this replica left unanswered (timeout, lost connection); the "
                "retry goes to another replica when one answers.",
                offsetof(replica_counters, failed));
    per_replica(sb, &lb, m, "saga_replica_connected", "gauge",
                "1 while sagad holds a connection to this replica.",
                offsetof(replica_counters, connected));

    mt_header(sb, "saga_replayed_replies_total", "counter",
              "Replies a participant served from its idempotency record (duplicates absorbed).");
    mt_sample(sb, "saga_replayed_replies_total", NULL, mt_get(&m->replayed));
    mt_header(sb, "saga_step_conflicts_total", "counter",
              "CONFLICT replies: an idempotency key reused with other parameters.");
    mt_sample(sb, "saga_step_conflicts_total", NULL, mt_get(&m->conflicts));
    mt_header(sb, "saga_barrier_skips_total", "counter",
              "SKIPPED replies: null compensations and hanging actions stopped by the barrier.");
    mt_sample(sb, "saga_barrier_skips_total", NULL, mt_get(&m->skips));
    mt_header(sb, "saga_commits_total", "counter", "Store transactions committed by the engine.");
    mt_sample(sb, "saga_commits_total", NULL, mt_get(&m->commits));
    mt_header(sb, "saga_store_syncs_total", "counter",
              "Engine commits that waited for an fdatasync of the WAL (durability full; "
              "checkpoints not counted).");
    mt_sample(sb, "saga_store_syncs_total", NULL, mt_get(&m->syncs));
    mt_header(sb, "saga_commit_batch_sagas", "histogram",
              "Sagas written per commit (group commit batch size).");
    mt_hist_write(sb, "saga_commit_batch_sagas", NULL, &m->batch);
    mt_header(sb, "saga_early_sends_total", "counter",
              "Action requests sent while the commit recording their intent was still "
              "syncing: each overlaps a participant's commit with sagad's.");
    mt_sample(sb, "saga_early_sends_total", NULL, mt_get(&m->early_sends));
    mt_header(sb, "saga_store_commit_retries_total", "counter",
              "Rounds whose commit failed for a transient reason (lock, disk full) and was "
              "retried.");
    mt_sample(sb, "saga_store_commit_retries_total", NULL, mt_get(&m->commit_retries));
    mt_header(sb, "saga_store_unavailable", "gauge",
              "1 while the engine cannot commit and retries with backoff; new commands get BUSY.");
    mt_sample(sb, "saga_store_unavailable", NULL,
              atomic_load_explicit(&m->store_unavailable, memory_order_relaxed));
    mt_header(sb, "saga_quarantined_total", "counter",
              "Sagas made FAILED because their row was unreadable or an invariant broke.");
    mt_sample(sb, "saga_quarantined_total", NULL, mt_get(&m->quarantined));
    mt_header(sb, "saga_lease_lost_total", "counter",
              "Times this node lost its database lease and dropped its sagas (PostgreSQL).");
    mt_sample(sb, "saga_lease_lost_total", NULL, mt_get(&m->lease_lost));
    mt_header(sb, "saga_taken_over_total", "counter",
              "Sagas of fenced nodes this node claimed and resumed (PostgreSQL).");
    mt_sample(sb, "saga_taken_over_total", NULL, mt_get(&m->taken_over));
    mt_header(sb, "saga_purged_total", "counter",
              "Finished sagas deleted after finished_retention_s.");
    mt_sample(sb, "saga_purged_total", NULL, mt_get(&m->purged));

    static const char *const alert_results[OM_ALERT_RESULTS] = {"started", "spawn_failed",
                                                                "dropped", "timed_out"};
    mt_header(sb, "saga_alerts_total", "counter", "Alert commands for FAILED sagas, by result.");
    for (int k = 0; k < OM_ALERT_RESULTS; k++) {
        lb.len = 0;
        sb_printf(&lb, "result=\"%s\"", alert_results[k]);
        mt_sample(sb, "saga_alerts_total", lb.data, mt_get(&m->alerts[k]));
    }
    sb_free(&lb);
}
