/*
 * test_inventory — inventory-svc end to end (seeded from
 * participants/seeds/inventory.cfg): reserve/release, the stock refusals,
 * parameter validation, replays and the per-SKU stock invariant
 * (available + reserved = stock, reserved = held by 'reserved' rows).
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
    return fx_setup(state, "inventory");
}

static int64_t available(fx_svc *s, const char *sku)
{
    return fx_sql_int(s, "SELECT available FROM skus WHERE sku = %Q", sku);
}

static int64_t reserved(fx_svc *s, const char *sku)
{
    return fx_sql_int(s, "SELECT reserved FROM skus WHERE sku = %Q", sku);
}

/* Every SKU keeps available + reserved = stock and reserved = sum of held reservations. */
static void assert_stock_conserved(fx_svc *s)
{
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM stock_audit WHERE NOT balanced"), 0);
    assert_int_equal(fx_sql_int(s, "SELECT SUM(available + reserved) FROM skus"),
                     fx_sql_int(s, "SELECT value FROM meta WHERE key = 'stock_total'"));
    assert_int_equal(fx_sql_int(s, "SELECT value FROM meta WHERE key = 'stock_total'"), 130);
}

static void test_seed_loaded(void **state)
{
    fx_svc *s = *state;
    assert_int_equal(available(s, "WIDGET-1"), 100);
    assert_int_equal(available(s, "GIZMO-9"), 0);
    assert_int_equal(reserved(s, "WIDGET-1"), 0);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM skus"), 4);
    assert_stock_conserved(s);
}

static void test_reserve_then_release(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *r =
        fx_step(s, saga, "hold", PHASE_ACTION, "reserve", "sku", "WIDGET-1", "quantity", "3", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_false(r->replayed);
    const char *id = th_result(r, "reservation_id");
    assert_non_null(id);
    assert_true(util_is_uuid(id));
    assert_int_equal(available(s, "WIDGET-1"), 97);
    assert_int_equal(reserved(s, "WIDGET-1"), 3);
    assert_int_equal(fx_sql_int(s,
                                "SELECT quantity FROM reservations WHERE reservation_id = %Q "
                                "AND state = 'reserved' AND sku = 'WIDGET-1' AND saga_id = %Q",
                                id, saga),
                     3);
    assert_stock_conserved(s);

    /* A redelivery replays the stored reply and holds nothing more. */
    StepReply *again =
        fx_step(s, saga, "hold", PHASE_ACTION, "reserve", "sku", "WIDGET-1", "quantity", "3", NULL);
    FX_ASSERT_OUTCOME(again, OUTCOME_OK);
    assert_true(again->replayed);
    assert_string_equal(th_result(again, "reservation_id"), id);
    assert_int_equal(available(s, "WIDGET-1"), 97);

    StepReply *c = fx_step(s, saga, "hold", PHASE_COMPENSATE, "release", "sku", "WIDGET-1",
                           "quantity", "3", NULL);
    FX_ASSERT_OUTCOME(c, OUTCOME_OK);
    assert_string_equal(th_result(c, "reservation_id"), id);
    assert_int_equal(available(s, "WIDGET-1"), 100);
    assert_int_equal(reserved(s, "WIDGET-1"), 0);
    char *st = fx_sql_text(s, "SELECT state FROM reservations WHERE reservation_id = %Q", id);
    assert_string_equal(st, "released");
    free(st);
    assert_stock_conserved(s);
    th_reply_free(r);
    th_reply_free(again);
    th_reply_free(c);
}

static void test_out_of_stock(void **state)
{
    fx_svc *s = *state;
    char saga1[37], saga2[37], saga3[37];
    fx_saga_id(saga1);
    fx_saga_id(saga2);
    fx_saga_id(saga3);

    StepReply *none =
        fx_step(s, saga1, "hold", PHASE_ACTION, "reserve", "sku", "GIZMO-9", "quantity", "1", NULL);
    FX_ASSERT_OUTCOME(none, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(none, "out of stock");
    StepReply *more = fx_step(s, saga2, "hold", PHASE_ACTION, "reserve", "sku", "SPROCKET-5",
                              "quantity", "6", NULL);
    FX_ASSERT_OUTCOME(more, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(more, "out of stock");
    assert_int_equal(available(s, "SPROCKET-5"), 5);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM reservations"), 0);

    /* All of it is fine and leaves zero. */
    StepReply *all = fx_step(s, saga3, "hold", PHASE_ACTION, "reserve", "sku", "SPROCKET-5",
                             "quantity", "5", NULL);
    FX_ASSERT_OUTCOME(all, OUTCOME_OK);
    assert_int_equal(available(s, "SPROCKET-5"), 0);
    assert_int_equal(reserved(s, "SPROCKET-5"), 5);
    assert_stock_conserved(s);
    th_reply_free(none);
    th_reply_free(more);
    th_reply_free(all);
}

static void test_unknown_sku_and_bad_params(void **state)
{
    fx_svc *s = *state;
    static const struct {
        const char *sku, *quantity, *needle;
    } cases[] = {
        {"sprocket", "1", "unknown sku"}, {NULL, "1", "'sku'"},
        {"WIDGET-1", NULL, "'quantity'"}, {"WIDGET-1", "abc", "'quantity'"},
        {"WIDGET-1", "0", "'quantity'"},  {"WIDGET-1", "100001", "'quantity'"},
        {"WIDGET-1", "-1", "'quantity'"}, {"WIDGET-1", "2.5", "'quantity'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char saga[37];
        StepReply *r;
        fx_saga_id(saga);
        if (cases[i].sku == NULL)
            r = fx_step(s, saga, "hold", PHASE_ACTION, "reserve", "quantity", cases[i].quantity,
                        NULL);
        else if (cases[i].quantity == NULL)
            r = fx_step(s, saga, "hold", PHASE_ACTION, "reserve", "sku", cases[i].sku, NULL);
        else
            r = fx_step(s, saga, "hold", PHASE_ACTION, "reserve", "sku", cases[i].sku, "quantity",
                        cases[i].quantity, NULL);
        FX_ASSERT_OUTCOME(r, OUTCOME_REJECTED);
        FX_ASSERT_ERROR_HAS(r, cases[i].needle);
        th_reply_free(r);
    }
    assert_int_equal(available(s, "WIDGET-1"), 100);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM reservations"), 0);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM skus"), 4);
    assert_stock_conserved(s);
}

static void test_release_before_reserve(void **state)
{
    fx_svc *s = *state;
    char saga[37];
    fx_saga_id(saga);

    StepReply *c = fx_step(s, saga, "hold", PHASE_COMPENSATE, "release", "sku", "GADGET-7",
                           "quantity", "2", NULL);
    FX_ASSERT_OUTCOME(c, OUTCOME_SKIPPED);
    StepReply *r =
        fx_step(s, saga, "hold", PHASE_ACTION, "reserve", "sku", "GADGET-7", "quantity", "2", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_SKIPPED);
    assert_int_equal(available(s, "GADGET-7"), 25);
    assert_int_equal(fx_sql_int(s, "SELECT count(*) FROM reservations"), 0);
    assert_stock_conserved(s);
    th_reply_free(c);
    th_reply_free(r);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_seed_loaded),
        T(test_reserve_then_release),
        T(test_out_of_stock),
        T(test_unknown_sku_and_bad_params),
        T(test_release_before_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
