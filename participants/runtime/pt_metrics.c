/* pt_metrics — see pt_metrics.h. */
#include "pt_metrics.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "pt_internal.h"
#include "strbuf.h"
#include "wire.h"

#define N_OUTCOMES (OUTCOME_SKIPPED - OUTCOME_OK + 1) /* answers: OUTCOME_OK .. OUTCOME_SKIPPED */

/* A participant's own work, from a local commit to a slow handler: 100 us .. 10 s. */
static const double request_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};

typedef struct {
    const char *operation; /* the registry's name, or "_unknown" */
    int phase;
    mt_counter outcomes[N_OUTCOMES];
    mt_histogram seconds;
} op_slot;

struct pt_metrics {
    op_slot *slots; /* n_ops registered, then "_unknown" for each phase */
    size_t n_ops;
};

static void slot_init(op_slot *s, const char *operation, int phase)
{
    s->operation = operation;
    s->phase = phase;
    mt_hist_init(&s->seconds, request_bounds, sizeof request_bounds / sizeof request_bounds[0]);
}

pt_metrics *pt_metrics_create(const struct participant *p)
{
    pt_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->n_ops = p->n_ops;
    m->slots = calloc(p->n_ops + 2, sizeof *m->slots);
    if (m->slots == NULL) {
        free(m);
        return NULL;
    }
    /* The names stay valid: the registry is freed after the metrics (pt_destroy). */
    for (size_t i = 0; i < p->n_ops; i++)
        slot_init(&m->slots[i], p->ops[i].name, p->ops[i].phase);
    slot_init(&m->slots[p->n_ops], "_unknown", PHASE_ACTION);
    slot_init(&m->slots[p->n_ops + 1], "_unknown", PHASE_COMPENSATE);
    return m;
}

void pt_metrics_free(pt_metrics *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    free(m);
}

void pt_metrics_observe(pt_metrics *m, long op_index, int phase, int outcome, double seconds)
{
    if (m == NULL)
        return;
    op_slot *s;
    if (op_index >= 0 && (size_t)op_index < m->n_ops)
        s = &m->slots[op_index];
    else
        s = &m->slots[m->n_ops + (phase == PHASE_COMPENSATE)];
    if (wire_outcome_known(outcome))
        mt_add(&s->outcomes[outcome - OUTCOME_OK], 1);
    mt_hist_observe(&s->seconds, seconds < 0 ? 0 : seconds);
}

double pt_metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* service="S",operation="O",phase="P" into lb (replacing what it held). */
static void slot_labels(strbuf *lb, const char *service, const op_slot *s)
{
    lb->len = 0;
    sb_puts(lb, "service=\"");
    sb_label_value(lb, service);
    sb_puts(lb, "\",operation=\"");
    sb_label_value(lb, s->operation);
    sb_printf(lb, "\",phase=\"%s\"", s->phase == PHASE_COMPENSATE ? "compensate" : "action");
}

/* Is slot i an "_unknown" one that never served: left out (noise otherwise). */
static int slot_hidden(const pt_metrics *m, size_t i)
{
    return i >= m->n_ops && mt_get(&m->slots[i].seconds.count) == 0;
}

char *pt_metrics_text(participant *p, const char *service, size_t *len)
{
    pt_metrics *m = p ? p->metrics : NULL;
    strbuf sb = STRBUF_INIT, lb = STRBUF_INIT;
    mt_header(&sb, "saga_participant_requests_total", "counter",
              "Well-formed step requests answered, by operation, phase and outcome.");
    for (size_t i = 0; m && i < m->n_ops + 2; i++) {
        if (slot_hidden(m, i))
            continue;
        for (int k = 0; k < N_OUTCOMES; k++) {
            slot_labels(&lb, service, &m->slots[i]);
            sb_printf(&lb, ",outcome=\"%s\"", wire_outcome_name(OUTCOME_OK + k));
            mt_sample(&sb, "saga_participant_requests_total", lb.data,
                      mt_get(&m->slots[i].outcomes[k]));
        }
    }
    mt_header(&sb, "saga_participant_request_seconds", "histogram",
              "Time to answer a request: its batch's decode, handlers and COMMIT (not the "
              "time queued before it).");
    for (size_t i = 0; m && i < m->n_ops + 2; i++) {
        if (slot_hidden(m, i))
            continue;
        slot_labels(&lb, service, &m->slots[i]);
        mt_hist_write(&sb, "saga_participant_request_seconds", lb.data, &m->slots[i].seconds);
    }
    sb_free(&lb);
    size_t n = 0;
    char *text = sb_take(&sb, &n);
    if (len)
        *len = n;
    return text;
}
