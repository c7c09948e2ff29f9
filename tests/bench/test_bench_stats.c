/*
 * test_bench_stats — saga-bench's median and spread over repeated runs
 * (bench/bench_stats.c): odd and even counts, an unsorted input left as it
 * was, non-finite ratios left out and counted, and the printed form; the
 * quantiles of the disk probe's samples.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bench_stats.h"

static void test_odd_count_takes_the_middle(void **state)
{
    (void)state;
    const double v[] = {0.71, 0.62, 0.67};
    bs_summary s = bs_summarize(v, 3);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.dropped, 0);
    assert_float_equal(s.median, 0.67, 1e-12);
    assert_float_equal(s.min, 0.62, 1e-12);
    assert_float_equal(s.max, 0.71, 1e-12);
    assert_float_equal(s.spread, 0.09, 1e-12);
    /* The caller's order is kept (it prints the runs in order too). */
    assert_float_equal(v[0], 0.71, 0);
    assert_float_equal(v[1], 0.62, 0);
}

static void test_even_count_takes_the_mean_of_the_middle_two(void **state)
{
    (void)state;
    const double v[] = {4, 1, 3, 2};
    bs_summary s = bs_summarize(v, 4);
    assert_float_equal(s.median, 2.5, 1e-12);
    assert_float_equal(s.spread, 3, 1e-12);
}

static void test_one_value_has_no_spread(void **state)
{
    (void)state;
    const double v[] = {1.25};
    bs_summary s = bs_summarize(v, 1);
    assert_float_equal(s.median, 1.25, 0);
    assert_float_equal(s.spread, 0, 0);
}

static void test_non_finite_values_are_left_out_and_counted(void **state)
{
    (void)state;
    /* A ratio over a rate of 0 is inf or nan: it must not become the median. */
    const double v[] = {NAN, 0.9, INFINITY, 0.8, 1.0};
    bs_summary s = bs_summarize(v, 5);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.dropped, 2);
    assert_float_equal(s.median, 0.9, 1e-12);
    assert_float_equal(s.max, 1.0, 1e-12);
    const double none[] = {NAN};
    s = bs_summarize(none, 1);
    assert_int_equal(s.n, 0);
    assert_true(isnan(s.median));
    char buf[96];
    assert_string_equal(bs_format(&s, 2, buf, sizeof buf), "n/a (no finite value of 1)");
}

static void test_format(void **state)
{
    (void)state;
    const double v[] = {0.71, 0.62, 0.67};
    bs_summary s = bs_summarize(v, 3);
    char buf[96];
    assert_string_equal(bs_format(&s, 2, buf, sizeof buf), "0.67 (0.62-0.71, spread 0.09, 3 runs)");
    const double w[] = {5.5, NAN};
    s = bs_summarize(w, 2);
    assert_string_equal(bs_format(&s, 1, buf, sizeof buf),
                        "5.5 (5.5-5.5, spread 0.0, 1 run, some not finite)");
}

static void test_quantile_by_nearest_rank(void **state)
{
    (void)state;
    const double v[] = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
    assert_float_equal(bs_quantile(v, 10, 0.5), 5, 0);
    assert_float_equal(bs_quantile(v, 10, 0.9), 9, 0);
    assert_float_equal(bs_quantile(v, 10, 0.91), 10, 0);
    assert_float_equal(bs_quantile(v, 10, 1), 10, 0);
    assert_float_equal(bs_quantile(v, 10, 0), 1, 0);
    assert_float_equal(v[0], 10, 0); /* not reordered */
    const double w[] = {NAN, 3, INFINITY, 1};
    assert_float_equal(bs_quantile(w, 4, 0.5), 1, 0); /* of the finite 1 and 3 */
    assert_true(isnan(bs_quantile(w, 0, 0.5)));
    assert_true(isnan(bs_quantile(v, 10, 1.5)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odd_count_takes_the_middle),
        cmocka_unit_test(test_even_count_takes_the_mean_of_the_middle_two),
        cmocka_unit_test(test_one_value_has_no_spread),
        cmocka_unit_test(test_non_finite_values_are_left_out_and_counted),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_quantile_by_nearest_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
