/* metrics — see metrics.h. */
#include "metrics.h"

#include <string.h>

const double mt_duration_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10,   30};
const size_t mt_duration_n = sizeof mt_duration_bounds / sizeof mt_duration_bounds[0];
const double mt_size_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
const size_t mt_size_n = sizeof mt_size_bounds / sizeof mt_size_bounds[0];

void mt_hist_init(mt_histogram *h, const double *bounds, size_t n)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n > MT_MAX_BUCKETS ? MT_MAX_BUCKETS : n;
}

void mt_hist_observe(mt_histogram *h, double value)
{
    size_t i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    mt_add(&h->buckets[i], 1);
    mt_add(&h->count, 1);
    if (value > 0)
        mt_add(&h->sum_micro, (uint64_t)(value * 1e6 + 0.5));
}

void mt_header(strbuf *sb, const char *name, const char *type, const char *help)
{
    sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void mt_sample(strbuf *sb, const char *name, const char *labels, uint64_t value)
{
    if (labels && *labels)
        sb_printf(sb, "%s{%s} %llu\n", name, labels, (unsigned long long)value);
    else
        sb_printf(sb, "%s %llu\n", name, (unsigned long long)value);
}

void mt_hist_write(strbuf *sb, const char *name, const char *labels, const mt_histogram *h)
{
    const char *sep = labels && *labels ? "," : "";
    if (labels == NULL)
        labels = "";
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cumulative += mt_get(&h->buckets[i]);
        if (i < h->n_bounds)
            sb_printf(sb, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
                      (unsigned long long)cumulative);
        else
            sb_printf(sb, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                      (unsigned long long)cumulative);
    }
    double sum = (double)mt_get(&h->sum_micro) / 1e6;
    if (*labels) {
        sb_printf(sb, "%s_sum{%s} %.6f\n", name, labels, sum);
        sb_printf(sb, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cumulative);
    } else {
        sb_printf(sb, "%s_sum %.6f\n", name, sum);
        sb_printf(sb, "%s_count %llu\n", name, (unsigned long long)cumulative);
    }
}
