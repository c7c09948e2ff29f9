/*
 * bench_stats — median, spread and quantiles of figures (see bench_stats.h).
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

/* The finite values of v[0..n), sorted, in a malloc'd copy (*kept of them). */
static double *sorted_finite(const double *v, size_t n, size_t *kept)
{
    double *sorted = malloc((n ? n : 1) * sizeof *sorted);
    *kept = 0;
    if (sorted == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]))
            sorted[(*kept)++] = v[i];
    qsort(sorted, *kept, sizeof *sorted, cmp_double);
    return sorted;
}

double bs_quantile(const double *v, size_t n, double q)
{
    size_t kept;
    double *sorted = sorted_finite(v, n, &kept);
    double x = NAN;
    if (sorted != NULL && kept > 0 && q >= 0 && q <= 1) {
        size_t rank = (size_t)ceil(q * (double)kept); /* 1-based; 0 for q = 0 */
        x = sorted[rank == 0 ? 0 : rank - 1];
    }
    free(sorted);
    return x;
}

bs_summary bs_summarize(const double *v, size_t n)
{
    bs_summary s = {0, 0, NAN, NAN, NAN, NAN};
    double *sorted = sorted_finite(v, n, &s.n);
    if (sorted == NULL)
        return s;
    s.dropped = n - s.n;
    if (s.n > 0) {
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
