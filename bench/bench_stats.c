/*
 * bench_stats — median and spread of repeated figures (see bench_stats.h).
 */
#include "bench_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

bs_summary bs_summarize(const double *v, size_t n)
{
    bs_summary s = {0, 0, NAN, NAN, NAN, NAN};
    double *sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (sorted == NULL)
        return s;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(v[i]))
            sorted[s.n++] = v[i];
        else
            s.dropped++;
    }
    if (s.n > 0) {
        qsort(sorted, s.n, sizeof *sorted, cmp_double);
        s.median = s.n % 2 ? sorted[s.n / 2] : (sorted[s.n / 2 - 1] + sorted[s.n / 2]) / 2;
        s.min = sorted[0];
        s.max = sorted[s.n - 1];
        s.spread = s.max - s.min;
    }
    free(sorted);
    return s;
}

const char *bs_format(const bs_summary *s, int decimals, char *buf, size_t len)
{
    if (s->n == 0)
        snprintf(buf, len, "n/a (no finite value of %zu)", s->dropped);
    else
        snprintf(buf, len, "%.*f (%.*f-%.*f, spread %.*f, %zu run%s%s)", decimals, s->median,
                 decimals, s->min, decimals, s->max, decimals, s->spread, s->n,
                 s->n == 1 ? "" : "s", s->dropped ? ", some not finite" : "");
    return buf;
}
