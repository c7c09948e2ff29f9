/*
 * metrics — the primitives of the project's Prometheus metrics: lock-free
 * counters and histograms that one thread updates and another reads, and
 * the helpers that write them in the Prometheus text exposition format
 * (version 0.0.4).
 *
 * Updates are relaxed atomic additions, so the hot path (sagad's engine
 * thread, a participant's worker) takes no lock; a scrape reads each value
 * once, so a histogram seen mid-update may have its _count one ahead of a
 * bucket, which Prometheus tolerates (every value is monotonic).
 *
 * Conventions (https://prometheus.io/docs/practices/naming/): names are
 * saga_<what>_<unit>, counters end in _total, durations are in seconds.
 * Who writes what: orchestrator/obs_metrics.c (sagad) and
 * participants/service.c (the services); docs/OBSERVABILITY.md lists them.
 */
#ifndef SAGA_METRICS_H
#define SAGA_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

typedef atomic_uint_fast64_t mt_counter;

static inline void mt_add(mt_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t mt_get(const mt_counter *c)
{
    return atomic_load_explicit((mt_counter *)c, memory_order_relaxed);
}

#define MT_MAX_BUCKETS 16

/* A histogram with fixed upper bounds (ascending, without +Inf). The sum is
 * kept in micro-units (microseconds for durations) to stay an integer. */
typedef struct {
    const double *bounds;
    size_t n_bounds;                        /* <= MT_MAX_BUCKETS */
    mt_counter buckets[MT_MAX_BUCKETS + 1]; /* not cumulative; the last is +Inf */
    mt_counter count;
    mt_counter sum_micro;
} mt_histogram;

/* Default bounds: step durations in seconds (1 ms .. 30 s) and batch sizes. */
extern const double mt_duration_bounds[];
extern const size_t mt_duration_n;
extern const double mt_size_bounds[];
extern const size_t mt_size_n;

void mt_hist_init(mt_histogram *h, const double *bounds, size_t n);
/* Records one value (seconds for durations, a count for sizes). */
void mt_hist_observe(mt_histogram *h, double value);

/* "# HELP name help\n# TYPE name type\n". type: counter, gauge, histogram. */
void mt_header(strbuf *sb, const char *name, const char *type, const char *help);
/* One sample line: name{labels} value. labels is the inside of the braces,
 * already escaped (NULL or "" for none). */
void mt_sample(strbuf *sb, const char *name, const char *labels, uint64_t value);
/* The _bucket, _sum and _count lines of h under name with labels. */
void mt_hist_write(strbuf *sb, const char *name, const char *labels, const mt_histogram *h);

/* The Content-Type of the text format. */
#define MT_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
