/*
 * test_orch_parallel — sagas whose steps run at once, end to end: the real
 * sagad, sagactl and the four participant services (orch_fixture.h), with
 * the shipped sagas/order_fulfillment_parallel.cfg beside the fixture's
 * sequential order_fulfillment.
 *
 * Covered:
 *   - the parallel saga completes: charge_payment and reserve_stock are both
 *     sent before either answers (one round, the history shows it), every
 *     step takes effect once, the books balance;
 *   - a branch refused while the other is in flight: nothing new starts, the
 *     other branch is awaited, then every step that took effect is
 *     compensated, a step only after those depending on it; schedule_shipping
 *     and approve_order are never sent; net zero;
 *   - a deadline (sagactl start --deadline) while a step keeps timing out:
 *     the saga stops starting steps and compensates; a bad --deadline is
 *     refused with a message, and sagad keeps serving.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orch_fixture.h"
#include "util.h"

#define PARALLEL "order_fulfillment_parallel"

static int setup(void **state)
{
    ofx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f;
    if (ofx_init(f, NULL) != 0)
        return -1; /* teardown still runs and cleans up */
    /* The shipped file as it is: what a user would run. */
    const char *src = getenv("SAGA_SOURCE_DIR");
    char *from = src ? util_asprintf("%s/sagas/" PARALLEL ".cfg", src) : NULL;
    char *text = from ? th_read_file(from) : NULL;
    char *sagas = th_path(f->dir, "sagas");
    char *to = sagas ? th_path(sagas, PARALLEL ".cfg") : NULL;
    int rc = text && to && th_write_file(to, text) == 0 ? 0 : -1;
    free(from);
    free(text);
    free(sagas);
    free(to);
    if (rc != 0 || ofx_start_all(f) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    ofx *f = *state;
    int rc = 0;
    if (f == NULL)
        return 0;
    if (f->sagad.pid > 0 && ofx_stop_sagad(f) != 0)
        rc = -1;
    ofx_destroy(f);
    free(f);
    *state = NULL;
    return rc;
}

/* sagactl --json start order_fulfillment_parallel [extra] with these inputs;
 * the saga id into id. Returns sagactl's exit code; *out its output. */
static int start_parallel(ofx *f, const char *customer, const char *sku, const char *extra1,
                          const char *extra2, char id[37], char **out)
{
    char *c = util_asprintf("customer=%s", customer);
    char *s = util_asprintf("sku=%s", sku);
    char *text = NULL;
    int code = extra1 ? ofx_ctl(f, &text, "--json", "start", PARALLEL, extra1, extra2, c, s,
                                "quantity=2", "amount=2500", "destination=paris", NULL)
                      : ofx_ctl(f, &text, "--json", "start", PARALLEL, c, s, "quantity=2",
                                "amount=2500", "destination=paris", NULL);
    id[0] = '\0';
    if (code == 0) {
        json_t *doc = tj_parse(text);
        const char *sid = tj_str(doc, "saga_id");
        if (sid)
            snprintf(id, 37, "%s", sid);
        json_decref(doc);
    }
    if (out)
        *out = text;
    else
        free(text);
    free(c);
    free(s);
    return code;
}

/* Index in the history of the first event of kind for step (and phase); -1: none. */
static int first_event(const json_t *h, const char *kind, const char *step, const char *phase)
{
    for (size_t i = 0; i < json_array_size(h); i++) {
        const json_t *ev = json_array_get(h, i);
        const char *k = tj_str(ev, "kind"), *s = tj_str(ev, "step"), *p = tj_str(ev, "phase");
        if (k && strcmp(k, kind) == 0 && s && strcmp(s, step) == 0 &&
            (phase == NULL || (p && strcmp(p, phase) == 0)))
            return (int)i;
    }
    return -1;
}

static const char *step_state(const json_t *st, const char *step)
{
    return tj_str(ofx_step(st, step), "state");
}

/* ---- The parallel saga completes, its branches side by side --------------- */

static void test_parallel_completes(void **state)
{
    ofx *f = *state;
    char id[37];
    assert_int_equal(start_parallel(f, "alice", "WIDGET-1", NULL, NULL, id, NULL), 0);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    OFX_ASSERT_STR(tj_str(st, "type"), PARALLEL);

    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    /* Both branches left in one round, before either answered. */
    int charge_sent = first_event(h, "step_sent", "charge_payment", "action");
    int reserve_sent = first_event(h, "step_sent", "reserve_stock", "action");
    int charge_reply = first_event(h, "step_reply", "charge_payment", "action");
    int reserve_reply = first_event(h, "step_reply", "reserve_stock", "action");
    assert_true(charge_sent >= 0 && reserve_sent >= 0);
    assert_true(charge_sent < reserve_reply && reserve_sent < charge_reply);
    assert_true(charge_sent < charge_reply && reserve_sent < reserve_reply);
    /* The join: shipping only after both, approval after shipping. */
    int ship_sent = first_event(h, "step_sent", "schedule_shipping", "action");
    assert_true(ship_sent > charge_reply && ship_sent > reserve_reply);
    assert_true(first_event(h, "step_sent", "approve_order", "action") >
                first_event(h, "step_reply", "schedule_shipping", "action"));
    assert_true(first_event(h, "step_sent", "create_order", "action") < charge_sent);
    assert_int_equal(ofx_history_count(h, "step_sent", NULL, "compensate"), 0);
    json_decref(h);

    /* status shows when each step ran: the two branches' spans overlap, and
     * shipping starts once both ended. */
    const json_t *charge = ofx_step(st, "charge_payment"), *reserve = ofx_step(st, "reserve_stock");
    const json_t *ship = ofx_step(st, "schedule_shipping");
    int64_t c0 = tj_int(charge, "started_at_ms", 0), c1 = tj_int(charge, "finished_at_ms", 0);
    int64_t r0 = tj_int(reserve, "started_at_ms", 0), r1 = tj_int(reserve, "finished_at_ms", 0);
    assert_true(c0 > 0 && r0 > 0 && c1 >= c0 && r1 >= r0);
    assert_true(c0 <= r1 && r0 <= c1);
    assert_true(tj_int(ship, "started_at_ms", 0) >= (c1 > r1 ? c1 : r1));
    char *text = NULL;
    assert_int_equal(ofx_ctl(f, &text, "status", id, NULL), 0);
    assert_non_null(strstr(text, "RAN (ms)"));
    free(text);
    /* history names the steps a step was sent beside. */
    assert_int_equal(ofx_ctl(f, &text, "history", id, NULL), 0);
    if (strstr(text, "beside charge_payment") == NULL &&
        strstr(text, "beside reserve_stock") == NULL)
        print_message("history without 'beside':\n%s\n", text);
    assert_true(strstr(text, "beside charge_payment") || strstr(text, "beside reserve_stock"));
    free(text);

    /* Exactly once, as the sequential saga. */
    assert_int_equal(ofx_counter(f, SVC_ORDER, "effects"), 2);
    assert_int_equal(ofx_counter(f, SVC_PAYMENT, "effects"), 1);
    assert_int_equal(ofx_counter(f, SVC_INVENTORY, "effects"), 1);
    assert_int_equal(ofx_counter(f, SVC_SHIPPING, "effects"), 1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = 'alice'"),
                     SEED_ALICE - 2500);
    assert_int_equal(ofx_books_balanced(f), 0);
    json_decref(st);
}

/* ---- A branch refused while the other is in flight ------------------------- */

static void test_branch_refused_compensates_the_other(void **state)
{
    ofx *f = *state;
    /* payment answers late: its charge is still in flight when inventory
     * refuses (GIZMO-9 is out of stock). The assertions hold either way. */
    assert_int_equal(ofx_stop_svc(f, SVC_PAYMENT), 0);
    assert_int_equal(ofx_start_svc(f, SVC_PAYMENT, "delay=1,delay_ms=150"), 0);
    char id[37];
    assert_int_equal(start_parallel(f, "alice", "GIZMO-9", NULL, NULL, id, NULL), 0);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    assert_non_null(strstr(tj_str(st, "last_error"), "out of stock"));
    OFX_ASSERT_STR(step_state(st, "reserve_stock"), "REJECTED");
    OFX_ASSERT_STR(step_state(st, "charge_payment"), "COMPENSATED");
    OFX_ASSERT_STR(step_state(st, "create_order"), "COMPENSATED");
    OFX_ASSERT_STR(step_state(st, "schedule_shipping"), "PENDING");
    OFX_ASSERT_STR(step_state(st, "approve_order"), "PENDING");

    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    /* Reverse dependency order: the order is cancelled after the refund. */
    char *order = ofx_history_steps(h, "step_sent", "compensate");
    OFX_ASSERT_STR(order, "charge_payment,create_order");
    free(order);
    /* The charge was awaited, not cut short: its answer came before its refund. */
    assert_true(first_event(h, "step_reply", "charge_payment", "action") <
                first_event(h, "step_sent", "charge_payment", "compensate"));
    assert_int_equal(ofx_history_count(h, "step_sent", "schedule_shipping", NULL), 0);
    assert_int_equal(ofx_history_count(h, "compensation_started", NULL, NULL), 1);
    json_decref(h);

    /* Net zero: the charge refunded, the order cancelled, no stock held. */
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = 'alice'"),
                     SEED_ALICE);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE state = 'charged'"), 0);
    assert_int_equal(
        ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state <> 'cancelled'"), 0);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT sum(reserved) FROM skus"), 0);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), 0);
    assert_int_equal(ofx_books_balanced(f), 0);
    json_decref(st);
}

/* ---- A deadline ------------------------------------------------------------ */

static int is_compensating_or_final(const json_t *st, const void *arg)
{
    (void)arg;
    const char *s = tj_str(st, "state");
    return s && strcmp(s, "RUNNING") != 0;
}

static void test_deadline_compensates(void **state)
{
    ofx *f = *state;
    char *out = NULL;
    char id[37];
    /* Bad deadlines are refused before anything is sent. */
    assert_int_not_equal(start_parallel(f, "alice", "WIDGET-1", "--deadline", "soon", id, &out),
                         0);
    assert_non_null(strstr(out, "bad --deadline 'soon'"));
    free(out);
    assert_int_not_equal(start_parallel(f, "alice", "WIDGET-1", "--deadline", "0", id, NULL), 0);
    assert_int_not_equal(start_parallel(f, "alice", "WIDGET-1", "--deadline", "400d", id, NULL),
                         0);

    /* Shipping is down: schedule_shipping times out again and again, for
     * longer than the deadline. */
    assert_int_equal(ofx_stop_svc(f, SVC_SHIPPING), 0);
    assert_int_equal(start_parallel(f, "alice", "WIDGET-1", "--deadline", "1s", id, NULL), 0);
    json_t *st = ofx_wait(f, id, is_compensating_or_final, NULL, OFX_WAIT_MS);
    assert_non_null(st);
    assert_non_null(strstr(tj_str(st, "last_error"), "deadline passed"));
    json_decref(st);
    /* Its compensation needs shipping back (the barrier answers it). */
    assert_int_equal(ofx_start_svc(f, SVC_SHIPPING, NULL), 0);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    OFX_ASSERT_STR(step_state(st, "approve_order"), "PENDING");
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "deadline_passed", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "step_sent", "approve_order", NULL), 0);
    json_decref(h);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = 'alice'"),
                     SEED_ALICE);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments WHERE state = "
                                              "'scheduled'"),
                     0);
    assert_int_equal(ofx_books_balanced(f), 0);
    json_decref(st);

    /* sagad kept serving: the sequential saga still completes. */
    assert_int_equal(ofx_start_order(f, NULL, "bob", "WIDGET-1", "1", "100", "paris", id, NULL,
                                     NULL),
                     0);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parallel_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_branch_refused_compensates_the_other, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deadline_compensates, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
