/*
 * test_conformance — participant-conformance (participants/conformance)
 * against real participants: each of the four C services and the Python
 * loyalty service passes every rule (exit 0, no FAIL line), and two
 * deliberately broken participants (broken_participant.c) make the kit exit
 * 1 naming the rule they break. The kit, the services and the broken
 * participant are the real programs, started in a temp dir each.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "fixture.h"

/*
 * Runs the kit against url with the given arguments (NULL-terminated, after
 * the URL); returns its exit code and its output (malloc'd) in *out.
 */
static int run_kit(const char *dir, const char *url, char **out, ...)
{
    const char *args[16];
    int n = 0, status = 0;
    va_list ap;
    char *log = th_path(dir, "kit.out");
    pid_t pid;

    args[n++] = url;
    va_start(ap, out);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 15;)
        args[n++] = a;
    va_end(ap);
    args[n++] = "--timeout-ms";
    args[n++] = "10000";
    args[n] = NULL;
    assert_non_null(log);
    assert_int_equal(th_spawn("participant-conformance", args, NULL, log, &pid), 0);
    /* Bounded: the kit's exchanges time out on their own long before this.
     * Past it, what the kit printed (a line per rule, flushed) names the
     * rule it was stuck at. */
    if (th_wait_exit(pid, 120000, &status) != 0) {
        th_kill(pid);
        char *partial = th_read_file(log);
        print_message("%s", partial ? partial : "(no output)\n");
        free(partial);
        free(log);
        fail_msg("participant-conformance did not finish within 120 s");
    }
    *out = th_read_file(log);
    free(log);
    assert_non_null(*out);
    print_message("%s", *out);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Starts <name>-svc (shipped seed), runs the kit on it, expects every rule to pass. */
static void conforms(const char *name, const char *operation, const char *compensation,
                     const char *params)
{
    fx_svc s;
    char *out = NULL;
    assert_int_equal(fx_init(&s, name), 0);
    if (fx_start(&s, NULL) != 0) {
        fx_destroy(&s);
        fail_msg("%s-svc did not start", name);
    }
    int code = run_kit(s.dir, s.url, &out, "--operation", operation, "--compensation", compensation,
                       "--params", params, NULL);
    int stopped = fx_stop(&s);
    int failures = strstr(out, "FAIL ") != NULL;
    int passes = 0;
    for (const char *p = out; (p = strstr(p, "PASS ")) != NULL; p++)
        passes++;
    free(out);
    fx_destroy(&s);
    assert_int_equal(code, 0);
    assert_false(failures);
    assert_true(passes >= 20); /* every rule ran, the barrier's included */
    assert_int_equal(stopped, 0);
}

static void test_payment_conforms(void **state)
{
    conforms("payment", "charge", "refund", "customer=alice,amount=100");
}

static void test_inventory_conforms(void **state)
{
    conforms("inventory", "reserve", "release", "sku=WIDGET-1,quantity=1");
}

static void test_order_conforms(void **state)
{
    conforms("order", "create", "cancel", "customer=alice,sku=WIDGET-1,quantity=1,amount=100");
}

static void test_shipping_conforms(void **state)
{
    conforms("shipping", "schedule", "cancel", "destination=Paris,customer=alice");
}

static void test_loyalty_conforms(void **state)
{
    conforms("loyalty", "award", "revoke", "customer=alice,amount=2500");
}

/* The broken participant in mode runs the kit; it must exit 1 with "FAIL rule". */
static void kit_catches(const char *mode, const char *rule)
{
    char *dir = th_tempdir(), *url, *out = NULL;
    const char *args[3];
    pid_t pid;
    assert_non_null(dir);
    url = th_ipc_url(dir, "broken");
    args[0] = url;
    args[1] = mode;
    args[2] = NULL;
    assert_int_equal(th_spawn("broken-participant", args, NULL, NULL, &pid), 0);
    if (th_wait_dial(url, pid, FX_TIMEOUT_MS) != 0) {
        th_kill(pid);
        th_rmtree(dir);
        fail_msg("broken-participant did not start");
    }
    int code = run_kit(dir, url, &out, "--operation", "charge", "--compensation", "refund",
                       "--params", "customer=alice,amount=100", NULL);
    int status;
    th_stop(pid, FX_TIMEOUT_MS, &status);
    char needle[128];
    snprintf(needle, sizeof needle, "FAIL %s:", rule);
    int named = strstr(out, needle) != NULL;
    free(out);
    free(url);
    th_rmtree(dir);
    free(dir);
    assert_int_equal(code, 1);
    assert_true(named);
}

/* No idempotency at all: the repeat runs a second effect. */
static void test_kit_catches_no_replay(void **state)
{
    kit_catches("no-replay", "repeat_replays_stored_reply");
}

/* Idempotent, but no barrier: a compensation before its action is not null. */
static void test_kit_catches_no_fence(void **state)
{
    kit_catches("no-fence", "compensation_first_is_null");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payment_conforms),     cmocka_unit_test(test_inventory_conforms),
        cmocka_unit_test(test_order_conforms),       cmocka_unit_test(test_shipping_conforms),
        cmocka_unit_test(test_loyalty_conforms),     cmocka_unit_test(test_kit_catches_no_replay),
        cmocka_unit_test(test_kit_catches_no_fence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
