/*
 * test_cpu_sched — common/cpu_sched.c: parsing, and that "batch" sets
 * SCHED_BATCH on the calling thread and on the threads it creates later
 * (what sagad and the services rely on: they set it before nng starts its
 * threads), while "normal" leaves the policy alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "cpu_sched.h"

static void test_parse(void **state)
{
    (void)state;
    assert_int_equal(cpu_scheduling_parse("batch"), CPU_SCHED_BATCH);
    assert_int_equal(cpu_scheduling_parse("normal"), CPU_SCHED_NORMAL);
    assert_int_equal(cpu_scheduling_parse("BATCH"), -1);
    assert_int_equal(cpu_scheduling_parse("fifo"), -1);
    assert_int_equal(cpu_scheduling_parse(""), -1);
    assert_string_equal(cpu_scheduling_name(CPU_SCHED_BATCH), "batch");
    assert_string_equal(cpu_scheduling_name(CPU_SCHED_NORMAL), "normal");
}

static void *report_policy(void *arg)
{
    *(int *)arg = cpu_scheduling_current();
    return NULL;
}

/* In a thread of its own, so the test's main thread keeps its policy. */
static void *apply_then_spawn(void *arg)
{
    int *out = arg; /* [0] rc, [1] own policy, [2] child's policy */
    char err[128];
    pthread_t child;
    out[0] = cpu_scheduling_apply((enum cpu_scheduling)out[0], err, sizeof err);
    out[1] = cpu_scheduling_current();
    if (pthread_create(&child, NULL, report_policy, &out[2]) == 0)
        pthread_join(child, NULL);
    return NULL;
}

static void run_in_thread(int which, int out[3])
{
    pthread_t t;
    out[0] = which;
    out[1] = out[2] = -9;
    assert_int_equal(pthread_create(&t, NULL, apply_then_spawn, out), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

static void test_batch_is_inherited(void **state)
{
    (void)state;
    int out[3];
    run_in_thread(CPU_SCHED_BATCH, out);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], CPU_SCHED_BATCH);
    assert_int_equal(out[2], CPU_SCHED_BATCH);
}

static void test_normal_leaves_the_policy(void **state)
{
    (void)state;
    int before = cpu_scheduling_current(), out[3];
    run_in_thread(CPU_SCHED_NORMAL, out);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], before);
    assert_int_equal(out[2], before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_batch_is_inherited),
        cmocka_unit_test(test_normal_leaves_the_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
