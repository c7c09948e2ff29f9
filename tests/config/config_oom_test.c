/*
 * config_oom_test — config_load under allocation failure.
 *
 * The test is linked with -Wl,--wrap for malloc, calloc and realloc, so every
 * allocation made by config.c and the saga_common helpers it calls goes
 * through the wrappers below (libconfig, nng and libc allocate on their own,
 * unaffected). It loads the shipped configuration once per allocation,
 * failing the Nth one for N = 1, 2, ... until a load succeeds, and asserts
 * that each failed load reports "out of memory" and leaves the struct
 * zeroed. Under AddressSanitizer, any leak on one of those error paths fails
 * the run.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

/* The allocation that fails: the Nth from now; 0 = none. */
static long fail_countdown;
static long allocations;

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static int should_fail(void)
{
    allocations++;
    return fail_countdown > 0 && --fail_countdown == 0;
}

void *__wrap_malloc(size_t size)
{
    return should_fail() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return should_fail() ? NULL : __real_realloc(p, size);
}

static void test_every_allocation_failure(void **state)
{
    const char *src = getenv("SAGA_SOURCE_DIR");
    assert_non_null(src);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/sagas/sagad.cfg", src);

    static const orch_config zero;
    orch_config cfg;
    char err[1024];
    long n;
    for (n = 1; n < 100000; n++) {
        fail_countdown = n;
        allocations = 0;
        int rc = config_load(path, &cfg, err, sizeof err);
        fail_countdown = 0;
        if (rc == 0)
            break;
        assert_int_equal(rc, -1);
        if (strstr(err, "out of memory") == NULL)
            fail_msg("allocation %ld failed but the message is: %s", n, err);
        assert_memory_equal(&cfg, &zero, sizeof cfg);
    }
    /* the load that succeeded made fewer allocations than the failure point */
    assert_true(allocations < n);
    assert_true(n > 20); /* the wrappers did intercept config.c's allocations */
    print_message("%ld allocation failure points checked\n", n - 1);
    assert_int_equal(cfg.n_sagas, 3); /* order_fulfillment, its parallel twin, order_with_loyalty */
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
