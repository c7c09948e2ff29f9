/*
 * test_shipping — shipping-svc end to end (seeded from
 * participants/seeds/shipping.cfg): schedule/cancel, "destination not
 * served", whom a shipment is for, parameter validation and replays.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "util.h"

static int setup(void **state)
{
    return fx_setup(state, "shipping");
}

static int64_t shipments(fx_svc *s)
{
    return fx_sql_int(s, "SELECT count(*) FROM shipments");
}

static void test_seed_loaded(void **state)
{
    fx_svc *s = *state;
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM destinations"), 5);
    assert_int_equal(fx_sql_int(s, "SELECT value FROM meta WHERE key = 'destination_count'"), 5);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM destinations WHERE destination = 'Tokyo'"),
                     0);
}

static void test_schedule_then_cancel(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *r = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "destination", "berlin",
                           "order_id", "order-1", "customer", "alice", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    const char *id = th_result(r, "shipment_id");
    assert_non_null(id);
    assert_true(util_is_uuid(id));
    /* Stored with the seeded spelling of the destination. */
    char *dest = fx_sql_text(s,
                             "SELECT destination FROM shipments WHERE shipment_id = %Q AND "
                             "state = 'scheduled' AND order_id = 'order-1' AND saga_id = %Q",
                             id, saga);
    assert_non_null(dest);
    assert_string_equal(dest, "Berlin");
    free(dest);

    StepReply *again = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "destination", "berlin",
                               "order_id", "order-1", "customer", "alice", NULL);
    FX_ASSERT_OUTCOME(again, OUTCOME_OK);
    assert_true(again->replayed);
    assert_string_equal(th_result(again, "shipment_id"), id);
    assert_int_equal(shipments(s), 1);

    StepReply *c = fx_step(s, saga, "ship", PHASE_COMPENSATE, "cancel", "destination", "berlin",
                           "order_id", "order-1", "customer", "alice", NULL);
    FX_ASSERT_OUTCOME(c, OUTCOME_OK);
    assert_string_equal(th_result(c, "shipment_id"), id);
    char *st = fx_sql_text(s, "SELECT state FROM shipments WHERE shipment_id = %Q", id);
    assert_string_equal(st, "cancelled");
    free(st);
    assert_int_equal(shipments(s), 1);
    th_reply_free(r);
    th_reply_free(again);
    th_reply_free(c);
}

static void test_customer_instead_of_order(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *r = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "destination", "Oslo",
                           "customer", "bob", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM shipments WHERE customer = 'bob' AND "
                                   "order_id IS NULL AND destination = 'Oslo'"),
                     1);
    th_reply_free(r);
}

static void test_refusals(void **state)
{
    fx_svc *s = *state;
    static const struct {
        const char *destination, *order_id, *needle;
    } cases[] = {
        {"Tokyo", "order-1", "destination not served"},
        {NULL, "order-1", "'destination'"},
        {"", "order-1", "'destination'"},
        {"Paris", NULL, "'order_id'"},
        {"Paris", "", "'order_id'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char saga[37];
        StepReply *r;
        fx_saga_id(saga);
        if (cases[i].destination == NULL)
            r = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "order_id", cases[i].order_id,
                        NULL);
        else if (cases[i].order_id == NULL)
            r = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "destination",
                        cases[i].destination, NULL);
        else
            r = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "destination",
                        cases[i].destination, "order_id", cases[i].order_id, NULL);
        FX_ASSERT_OUTCOME(r, OUTCOME_REJECTED);
        FX_ASSERT_ERROR_HAS(r, cases[i].needle);
        th_reply_free(r);
    }
    assert_int_equal(shipments(s), 0);
}

static void test_cancel_before_schedule(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *c = fx_step(s, saga, "ship", PHASE_COMPENSATE, "cancel", "destination", "Paris",
                           "order_id", "o", NULL);
    FX_ASSERT_OUTCOME(c, OUTCOME_SKIPPED);
    StepReply *r = fx_step(s, saga, "ship", PHASE_ACTION, "schedule", "destination", "Paris",
                           "order_id", "o", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_SKIPPED);
    assert_int_equal(shipments(s), 0);
    th_reply_free(c);
    th_reply_free(r);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_seed_loaded), T(test_schedule_then_cancel),   T(test_customer_instead_of_order),
        T(test_refusals),    T(test_cancel_before_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
