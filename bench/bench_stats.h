/*
 * bench_stats — the statistics saga-bench prints: over repeated runs
 * (--repeat N), the median of a set of figures and their spread, so that a
 * verdict rests on the middle run and says how far the others were; over
 * samples (the disk probe's), their quantiles.
 *
 * Invariants: the input is never reordered (a copy is sorted);
 * values that are not finite (a ratio over a zero rate) are left out and
 * counted, so one failed point neither poisons the median nor hides.
 */
#ifndef SAGA_BENCH_STATS_H
#define SAGA_BENCH_STATS_H

#include <stddef.h>

typedef struct {
    size_t n;       /* finite values summarized */
    size_t dropped; /* values left out: NaN or infinite */
    double median;  /* the middle value; the mean of the two middle ones when n is even */
    double min, max;
    double spread; /* max - min */
} bs_summary;

/* Summarizes v[0..n). With no finite value, n is 0 and the figures are NaN. */
bs_summary bs_summarize(const double *v, size_t n);

/* The q-quantile (0 <= q <= 1) of the finite values of v[0..n), by the
 * nearest rank (q 0.5 of 1..10 is 5, q 0.9 is 9); NaN when there is none. */
double bs_quantile(const double *v, size_t n, double q);

/* "0.67 (0.62-0.71, spread 0.09, 3 runs)" with `decimals` digits, into buf. */
const char *bs_format(const bs_summary *s, int decimals, char *buf, size_t len);

#endif
