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

static void test_uuid7_time_read_back(void **state)
{
    (void)state;
    char id[37];
    int64_t ms = 0;
    const int64_t at[] = {0, 1, 1733000000123LL, (1LL << 48) - 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        assert_int_equal(util_uuid7_at(at[i], id), 0);
        assert_int_equal(util_uuid7_time_ms(id, &ms), 0);
        assert_int_equal(ms, at[i]);
    }
    assert_int_equal(util_uuid4(id), 0); /* version 4: no time */
    assert_int_equal(util_uuid7_time_ms(id, &ms), -1);
    assert_int_equal(util_uuid7_time_ms("0190b2c4-5d6e-7f80-9abc-def012345678", &ms), 0);
    assert_int_equal(ms, 0x0190b2c45d6eLL);
    assert_int_equal(util_uuid7_time_ms("0190B2C4-5D6E-7F80-BABC-DEF012345678", &ms), 0);
    assert_int_equal(util_uuid7_time_ms("0190b2c4-5d6e-7f80-cabc-def012345678", &ms), -1);
    assert_int_equal(util_uuid7_time_ms("saga-1", &ms), -1);
    assert_int_equal(util_uuid7_time_ms("", &ms), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid4_shape),
        cmocka_unit_test(test_uuid7_shape_and_time),
        cmocka_unit_test(test_uuid7_time_read_back),
        cmocka_unit_test(test_uuid7_sorts_by_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
