/*
 * test_order — order-svc end to end: create (pending), approve (pending ->
 * approved), cancel as create's compensation (pending -> cancelled), and
 * every refusal of the order state machine, with the rows checked.
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
    return fx_setup(state, "order");
}

static char *order_state(fx_svc *s, const char *order_id)
{
    return fx_sql_text(s, "SELECT state FROM orders WHERE order_id = %Q", order_id);
}

/* create for saga with the usual params; returns the reply (asserted OK). */
static StepReply *create(fx_svc *s, const char *saga)
{
    StepReply *r = fx_step(s, saga, "order", PHASE_ACTION, "create", "customer", "alice", "sku",
                           "WIDGET-1", "quantity", "2", "amount", "1998", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_non_null(th_result(r, "order_id"));
    return r;
}

static void assert_state(fx_svc *s, const char *order_id, const char *expected)
{
    char *st = order_state(s, order_id);
    assert_non_null(st);
    assert_string_equal(st, expected);
    free(st);
}

static void test_create_then_approve(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *r = create(s, saga);
    const char *id = th_result(r, "order_id");
    assert_true(util_is_uuid(id));
    assert_int_equal(fx_sql_int(s,
                                "SELECT count(*) FROM orders WHERE order_id = %Q AND saga_id = %Q "
                                "AND customer = 'alice' AND sku = 'WIDGET-1' AND quantity = 2 AND "
                                "amount = 1998 AND state = 'pending'",
                                id, saga),
                     1);

    StepReply *a = fx_step(s, saga, "approve", PHASE_ACTION, "approve", "order_id", id, NULL);
    FX_ASSERT_OUTCOME(a, OUTCOME_OK);
    assert_string_equal(th_result(a, "order_id"), id);
    assert_state(s, id, "approved");

    /* Approving again under another step: refused, the order is no longer pending. */
    StepReply *a2 =
        fx_step(s, saga, "approve-again", PHASE_ACTION, "approve", "order_id", id, NULL);
    FX_ASSERT_OUTCOME(a2, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(a2, "not pending");

    /* Undoing the create of a completed order is refused and changes nothing. */
    StepReply *c = fx_step(s, saga, "order", PHASE_COMPENSATE, "cancel", "customer", "alice", "sku",
                           "WIDGET-1", "quantity", "2", "amount", "1998", NULL);
    FX_ASSERT_OUTCOME(c, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(c, "approved");
    assert_state(s, id, "approved");
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM orders"), 1);
    th_reply_free(r);
    th_reply_free(a);
    th_reply_free(a2);
    th_reply_free(c);
}

static void test_create_then_cancel(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *r = create(s, saga);
    const char *id = th_result(r, "order_id");
    StepReply *c = fx_step(s, saga, "order", PHASE_COMPENSATE, "cancel", "customer", "alice", "sku",
                           "WIDGET-1", "quantity", "2", "amount", "1998", NULL);
    FX_ASSERT_OUTCOME(c, OUTCOME_OK);
    assert_string_equal(th_result(c, "order_id"), id);
    assert_state(s, id, "cancelled");

    StepReply *a = fx_step(s, saga, "approve", PHASE_ACTION, "approve", "order_id", id, NULL);
    FX_ASSERT_OUTCOME(a, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(a, "not pending");
    assert_state(s, id, "cancelled");
    th_reply_free(r);
    th_reply_free(c);
    th_reply_free(a);
}

static void test_approve_refusals(void **state)
{
    fx_svc *s = *state;
    char saga[37], other[37];
    fx_saga_id(saga);
    fx_saga_id(other);

    StepReply *r = create(s, saga);
    const char *id = th_result(r, "order_id");

    StepReply *unknown = fx_step(s, saga, "approve", PHASE_ACTION, "approve", "order_id",
                                 "7d0d5a5e-0000-4000-8000-000000000000", NULL);
    FX_ASSERT_OUTCOME(unknown, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(unknown, "unknown order");
    StepReply *missing = fx_step(s, saga, "approve2", PHASE_ACTION, "approve", NULL);
    FX_ASSERT_OUTCOME(missing, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(missing, "'order_id'");
    /* Another saga may not approve this saga's order. */
    StepReply *foreign =
        fx_step(s, other, "approve", PHASE_ACTION, "approve", "order_id", id, NULL);
    FX_ASSERT_OUTCOME(foreign, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(foreign, "another saga");
    assert_state(s, id, "pending");
    th_reply_free(r);
    th_reply_free(unknown);
    th_reply_free(missing);
    th_reply_free(foreign);
}

static void test_create_bad_params(void **state)
{
    fx_svc *s = *state;
    static const struct {
        const char *customer, *sku, *quantity, *amount, *needle;
    } cases[] = {
        {"alice", "WIDGET-1", "0", "100", "'quantity'"},
        {"alice", "WIDGET-1", "1", "1000000001", "'amount'"},
        {"alice", "WIDGET-1", "x", "100", "'quantity'"},
        {"alice", "WIDGET-1", "1", "-100", "'amount'"},
        {"", "WIDGET-1", "1", "100", "'customer'"},
        {"alice", "", "1", "100", "'sku'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char saga[37];
        fx_saga_id(saga);
        StepReply *r =
            fx_step(s, saga, "order", PHASE_ACTION, "create", "customer", cases[i].customer, "sku",
                    cases[i].sku, "quantity", cases[i].quantity, "amount", cases[i].amount, NULL);
        FX_ASSERT_OUTCOME(r, OUTCOME_REJECTED);
        FX_ASSERT_ERROR_HAS(r, cases[i].needle);
        th_reply_free(r);
    }
    char saga[37];
    fx_saga_id(saga);
    StepReply *r = fx_step(s, saga, "order", PHASE_ACTION, "create", "customer", "alice", "sku",
                           "WIDGET-1", "amount", "100", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(r, "missing parameter 'quantity'");
    th_reply_free(r);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM orders"), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_then_approve),
        T(test_create_then_cancel),
        T(test_approve_refusals),
        T(test_create_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
