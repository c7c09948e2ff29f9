/*
 * test_util — common/util.c: UUIDs of both versions (shape, version and
 * variant bits, uniqueness) and the time order of version 7 that the
 * databases' indexes rely on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util.h"

static void test_uuid4_shape(void **state)
{
    (void)state;
    char a[37], b[37];
    assert_int_equal(util_uuid4(a), 0);
    assert_int_equal(util_uuid4(b), 0);
    assert_true(util_is_uuid(a));
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_string_not_equal(a, b);
}

static void test_uuid7_shape_and_time(void **state)
{
    (void)state;
    char id[37];
    /* 2026-11-30T00:00:00.000Z = 1795996800000 ms = 0x01a229c05400 */
    assert_int_equal(util_uuid7_at(1795996800000LL, id), 0);
    assert_true(util_is_uuid(id));
    assert_memory_equal(id, "01a229c0-5400-7", 15); /* the time, then version 7 */
    assert_non_null(strchr("89ab", id[19]));        /* RFC 4122 variant */
}

static void test_uuid7_sorts_by_time(void **state)
{
    (void)state;
    char prev[37], next[37];
    assert_int_equal(util_uuid7_at(1000, prev), 0);
    for (int64_t ms = 1001; ms < 1200; ms++) {
        assert_int_equal(util_uuid7_at(ms, next), 0);
        assert_true(strcmp(prev, next) < 0); /* a later millisecond sorts after */
        memcpy(prev, next, sizeof prev);
    }
    /* Within one millisecond the random bits keep them apart. */
    char a[37], b[37];
    assert_int_equal(util_uuid7_at(5000, a), 0);
    assert_int_equal(util_uuid7_at(5000, b), 0);
    assert_string_not_equal(a, b);
    assert_memory_equal(a, b, 13);
    /* util_uuid7 uses the wall clock. */
    int64_t before = util_wall_ms();
    char now[37];
    assert_int_equal(util_uuid7(now), 0);
    char lo[37], hi[37];
    assert_int_equal(util_uuid7_at(before - 1, lo), 0);
    assert_int_equal(util_uuid7_at(util_wall_ms() + 1, hi), 0);
    assert_true(strcmp(lo, now) < 0 && strcmp(now, hi) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid4_shape),
        cmocka_unit_test(test_uuid7_shape_and_time),
        cmocka_unit_test(test_uuid7_sorts_by_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
