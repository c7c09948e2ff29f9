/*
 * test_orch_flow — sagad end to end on the happy path and on refusals: the
 * real sagad, sagactl and the four participant services (orch_fixture.h),
 * one fresh system per test. Every test checks what sagactl reports (status,
 * history) AND what the participants' databases hold.
 *
 * Covered:
 *   - a saga completes: COMPLETED, one approved order, one charge, one
 *     reservation, one shipment; balances and stock moved exactly once;
 *   - a refusal at each step (order.create with a bad quantity, payment
 *     with insufficient funds, inventory out of stock, shipping to a
 *     destination not served): COMPENSATED, the steps before it undone in
 *     reverse order (history), net zero in every database;
 *   - idempotent start: same key and input give the same saga ("existing"),
 *     before and after it finished; same key with another input, an unknown
 *     saga type and a missing input are refused with a clear message (exit
 *     1) and sagad keeps serving; concurrent starts with one key make one
 *     saga.
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

static const char *const step_names[] = {"create_order", "charge_payment", "reserve_stock",
                                         "schedule_shipping", "approve_order"};
enum { ST_CREATE, ST_CHARGE, ST_RESERVE, ST_SHIP, ST_APPROVE, N_STEPS };

static int setup(void **state)
{
    ofx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f;
    if (ofx_init(f, NULL) != 0 || ofx_start_all(f) != 0)
        return -1; /* teardown still runs and cleans up */
    return 0;
}

static int teardown(void **state)
{
    ofx *f = *state;
    int rc = 0;
    if (f == NULL)
        return 0;
    /* A clean stop is part of every test: a crash or a (sanitizer) leak at
     * shutdown fails it. */
    if (f->sagad.pid > 0 && ofx_stop_sagad(f) != 0)
        rc = -1;
    ofx_destroy(f);
    free(f);
    *state = NULL;
    return rc;
}

/* A step's field from a status document. */
static const char *step_str(const json_t *st, int step, const char *field)
{
    return tj_str(ofx_step(st, step_names[step]), field);
}

static const char *step_result(const json_t *st, int step, const char *key)
{
    return tj_str(json_object_get(ofx_step(st, step_names[step]), "result"), key);
}

static int64_t balance(ofx *f, const char *customer)
{
    return ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = %Q", customer);
}

static int64_t available(ofx *f, const char *sku)
{
    return ofx_sql(f, SVC_INVENTORY, "SELECT available FROM skus WHERE sku = %Q", sku);
}

/* ---- 1. A saga completes ------------------------------------------------ */

static void test_saga_completes(void **state)
{
    ofx *f = *state;
    char id[37];
    int existing = -1;
    assert_int_equal(ofx_start_order(f, "order-1", "alice", "WIDGET-1", "2", "2500", "paris", id,
                                     &existing, NULL),
                     0);
    assert_int_equal(existing, 0);

    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    OFX_ASSERT_STR(tj_str(st, "client_key"), "order-1");
    assert_true(json_is_null(json_object_get(st, "last_error"))); /* absent: null, never "" */
    for (int i = 0; i < N_STEPS; i++) {
        OFX_ASSERT_STR(step_str(st, i, "state"), "DONE");
        OFX_ASSERT_STR(step_str(st, i, "last_outcome"), "OK");
        assert_true(tj_int(ofx_step(st, step_names[i]), "action_attempts", 0) >= 1);
        assert_int_equal(tj_int(ofx_step(st, step_names[i]), "compensation_attempts", -1), 0);
    }
    const char *order_id = step_result(st, ST_CREATE, "order_id");
    const char *charge_id = step_result(st, ST_CHARGE, "charge_id");
    const char *reservation_id = step_result(st, ST_RESERVE, "reservation_id");
    const char *shipment_id = step_result(st, ST_SHIP, "shipment_id");
    assert_non_null(order_id);
    assert_non_null(charge_id);
    assert_non_null(reservation_id);
    assert_non_null(shipment_id);

    /* order-svc: one order, approved, of this saga. */
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders"), 1);
    assert_int_equal(ofx_sql(f, SVC_ORDER,
                             "SELECT count(*) FROM orders WHERE order_id = %Q AND saga_id = %Q"
                             " AND state = 'approved' AND customer = 'alice' AND quantity = 2"
                             " AND amount = 2500",
                             order_id, id),
                     1);
    /* payment-svc: one charge; alice paid once, nobody else. */
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), 1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT,
                             "SELECT count(*) FROM charges WHERE charge_id = %Q AND saga_id = %Q"
                             " AND state = 'charged' AND amount = 2500 AND order_id = %Q",
                             charge_id, id, order_id),
                     1);
    assert_int_equal(balance(f, "alice"), SEED_ALICE - 2500);
    assert_int_equal(balance(f, "bob"), SEED_BOB);
    /* inventory-svc: one reservation of 2. */
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations"), 1);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY,
                             "SELECT count(*) FROM reservations WHERE reservation_id = %Q"
                             " AND saga_id = %Q AND state = 'reserved' AND quantity = 2",
                             reservation_id, id),
                     1);
    assert_int_equal(available(f, "WIDGET-1"), SEED_WIDGET - 2);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT reserved FROM skus WHERE sku = 'WIDGET-1'"),
                     2);
    /* shipping-svc: one shipment, destination as seeded. */
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), 1);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING,
                             "SELECT count(*) FROM shipments WHERE shipment_id = %Q"
                             " AND saga_id = %Q AND state = 'scheduled' AND destination = 'Paris'",
                             shipment_id, id),
                     1);
    /* Exactly once: the runtimes counted one effect per step. */
    assert_int_equal(ofx_counter(f, SVC_ORDER, "effects"), 2); /* create + approve */
    assert_int_equal(ofx_counter(f, SVC_PAYMENT, "effects"), 1);
    assert_int_equal(ofx_counter(f, SVC_INVENTORY, "effects"), 1);
    assert_int_equal(ofx_counter(f, SVC_SHIPPING, "effects"), 1);
    assert_int_equal(ofx_books_balanced(f), 0);

    /* The history tells the same story: five actions, no compensation. */
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    char *sent = ofx_history_steps(h, "step_sent", "action");
    OFX_ASSERT_STR(sent,
                   "create_order,charge_payment,reserve_stock,schedule_shipping,approve_order");
    assert_int_equal(ofx_history_count(h, "step_sent", NULL, "compensate"), 0);
    assert_int_equal(ofx_history_count(h, "saga_completed", NULL, NULL), 1);
    free(sent);
    json_decref(h);
    json_decref(st);
}

/* ---- 2. A refusal at each step compensates the steps before it ----------- */

typedef struct {
    const char *customer, *sku, *quantity, *amount, *destination;
    int refused;                /* the step that refuses */
    const char *error_phrase;   /* in the saga's last_error */
    const char *expected_order; /* compensations sent, in order */
} refusal_case;

static void run_refusal(ofx *f, const refusal_case *c)
{
    char id[37];
    assert_int_equal(ofx_start_order(f, "refused-1", c->customer, c->sku, c->quantity, c->amount,
                                     c->destination, id, NULL, NULL),
                     0);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    const char *err = tj_str(st, "last_error");
    assert_non_null(err);
    if (strstr(err, c->error_phrase) == NULL)
        print_message("last_error '%s' lacks '%s'\n", err, c->error_phrase);
    assert_non_null(strstr(err, c->error_phrase));

    /* Steps: undone before the refusal, refused at it, untouched after. */
    for (int i = 0; i < N_STEPS; i++) {
        const json_t *step = ofx_step(st, step_names[i]);
        if (i < c->refused) {
            OFX_ASSERT_STR(tj_str(step, "state"), "COMPENSATED");
            assert_true(tj_int(step, "compensation_attempts", 0) >= 1);
        } else if (i == c->refused) {
            OFX_ASSERT_STR(tj_str(step, "state"), "REJECTED");
            OFX_ASSERT_STR(tj_str(step, "last_outcome"), "REJECTED");
            assert_int_equal(tj_int(step, "compensation_attempts", -1), 0);
        } else {
            OFX_ASSERT_STR(tj_str(step, "state"), "PENDING");
            assert_int_equal(tj_int(step, "action_attempts", -1), 0);
        }
    }

    /* History: compensations in reverse order, each answered OK. */
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    char *order = ofx_history_steps(h, "step_sent", "compensate");
    OFX_ASSERT_STR(order, c->expected_order);
    free(order);
    int replies = 0;
    for (size_t i = 0; i < json_array_size(h); i++) {
        const json_t *ev = json_array_get(h, i);
        if (strcmp(tj_str(ev, "kind"), "step_reply") == 0 &&
            strcmp(tj_str(ev, "phase") ? tj_str(ev, "phase") : "", "compensate") == 0) {
            OFX_ASSERT_STR(tj_str(ev, "outcome"), "OK");
            replies++;
        }
    }
    assert_int_equal(replies, c->refused);
    assert_int_equal(ofx_history_count(h, "compensation_started", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "saga_compensated", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "step_sent", step_names[ST_APPROVE], NULL), 0);
    json_decref(h);

    /* Net zero in every participant. */
    assert_int_equal(
        ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state <> 'cancelled'"), 0);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", id),
                     c->refused > ST_CREATE ? 1 : 0);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE state = 'charged'"), 0);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", id),
                     c->refused > ST_CHARGE ? 1 : 0);
    assert_int_equal(balance(f, "alice"), SEED_ALICE);
    assert_int_equal(balance(f, "carol"), SEED_CAROL);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE state = 'reserved'"), 0);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE saga_id = %Q", id),
        c->refused > ST_RESERVE ? 1 : 0);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT sum(reserved) FROM skus"), 0);
    assert_int_equal(available(f, "WIDGET-1"), SEED_WIDGET);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), 0);
    assert_int_equal(ofx_books_balanced(f), 0);
    /* Each step before the refusal: one effect and one undo, nothing more. */
    assert_int_equal(ofx_counter(f, SVC_ORDER, "effects"), c->refused > ST_CREATE ? 2 : 0);
    assert_int_equal(ofx_counter(f, SVC_PAYMENT, "effects"), c->refused > ST_CHARGE ? 2 : 0);
    assert_int_equal(ofx_counter(f, SVC_INVENTORY, "effects"), c->refused > ST_RESERVE ? 2 : 0);
    assert_int_equal(ofx_counter(f, SVC_SHIPPING, "effects"), 0);
    json_decref(st);
}

static void test_refused_at_create(void **state)
{
    refusal_case c = {"alice", "WIDGET-1", "0", "2500", "paris", ST_CREATE, "parameter 'quantity'",
                      ""};
    run_refusal(*state, &c);
}

static void test_refused_at_payment(void **state)
{
    refusal_case c = {"carol",   "WIDGET-1",           "1",           "90000", "paris",
                      ST_CHARGE, "insufficient funds", "create_order"};
    run_refusal(*state, &c);
}

static void test_refused_at_inventory(void **state)
{
    refusal_case c = {"alice",
                      "GIZMO-9",
                      "1",
                      "2500",
                      "paris",
                      ST_RESERVE,
                      "out of stock",
                      "charge_payment,create_order"};
    run_refusal(*state, &c);
}

static void test_refused_at_shipping(void **state)
{
    refusal_case c = {"alice",
                      "WIDGET-1",
                      "3",
                      "2500",
                      "tokyo",
                      ST_SHIP,
                      "destination not served",
                      "reserve_stock,charge_payment,create_order"};
    run_refusal(*state, &c);
}

/* ---- 7. Idempotent start, and refused starts ---------------------------- */

static void assert_output_has(const char *out, const char *needle)
{
    assert_non_null(out);
    if (strstr(out, needle) == NULL)
        print_message("sagactl output lacks '%s':\n%s\n", needle, out);
    assert_non_null(strstr(out, needle));
}

static void test_idempotent_start(void **state)
{
    ofx *f = *state;
    char id1[37], id2[37], id3[37];
    int existing = -1;
    char *out = NULL;

    assert_int_equal(
        ofx_start_order(f, "key-A", "bob", "GADGET-7", "1", "1000", "berlin", id1, &existing, NULL),
        0);
    assert_int_equal(existing, 0);
    /* Same key, same input: the same saga, flagged existing (in flight or not). */
    assert_int_equal(
        ofx_start_order(f, "key-A", "bob", "GADGET-7", "1", "1000", "berlin", id2, &existing, NULL),
        0);
    assert_string_equal(id2, id1);
    assert_int_equal(existing, 1);

    json_t *st = ofx_wait_final(f, id1, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    /* And once it has finished (found on disk, not in memory). */
    assert_int_equal(
        ofx_start_order(f, "key-A", "bob", "GADGET-7", "1", "1000", "berlin", id3, &existing, NULL),
        0);
    assert_string_equal(id3, id1);
    assert_int_equal(existing, 1);

    /* Same key, another input: refused, naming the reason; no new saga. */
    int code =
        ofx_start_order(f, "key-A", "bob", "GADGET-7", "1", "1001", "berlin", NULL, NULL, &out);
    assert_int_equal(code, 1);
    assert_output_has(out, "client key");
    /* ... naming the saga that holds the key, and what to run. */
    char *holder = util_asprintf("client key already used by saga %s (type order_fulfillment", id1);
    assert_output_has(out, holder);
    free(holder);
    holder = util_asprintf("`sagactl status %s`", id1);
    assert_output_has(out, holder);
    free(holder);
    free(out);
    /* The same start again in text: the id on stdout, "(existing)" beside it. */
    code = ofx_ctl(f, &out, "start", "order_fulfillment", "--key", "key-A", "customer=bob",
                   "sku=GADGET-7", "quantity=1", "amount=1000", "destination=berlin", NULL);
    assert_int_equal(code, 0);
    assert_output_has(out, id1);
    assert_output_has(out, "(existing)");
    free(out);
    /* Found by its key: list --key. */
    code = ofx_ctl(f, &out, "--json", "list", "--key", "key-A", NULL);
    assert_int_equal(code, 0);
    json_t *by_key = tj_parse(out);
    free(out);
    assert_non_null(by_key);
    assert_int_equal(json_array_size(json_object_get(by_key, "sagas")), 1);
    const json_t *row = json_array_get(json_object_get(by_key, "sagas"), 0);
    OFX_ASSERT_STR(tj_str(row, "saga_id"), id1);
    OFX_ASSERT_STR(tj_str(row, "client_key"), "key-A");
    json_decref(by_key);
    code = ofx_ctl(f, &out, "--json", "list", "--key", "no-such-key", NULL);
    assert_int_equal(code, 0);
    by_key = tj_parse(out);
    free(out);
    assert_int_equal(json_array_size(json_object_get(by_key, "sagas")), 0);
    json_decref(by_key);
    /* --since/--until, in the same forms: a span back from now, a UTC time. */
    code = ofx_ctl(f, &out, "--json", "list", "--since", "1h", NULL);
    assert_int_equal(code, 0);
    by_key = tj_parse(out);
    free(out);
    assert_int_equal(json_array_size(json_object_get(by_key, "sagas")), 1);
    json_decref(by_key);
    code = ofx_ctl(f, &out, "--json", "list", "--until", "2001-01-01T00:00Z", NULL);
    assert_int_equal(code, 0);
    by_key = tj_parse(out);
    free(out);
    assert_int_equal(json_array_size(json_object_get(by_key, "sagas")), 0);
    json_decref(by_key);
    /* ... a time with an offset, as start --at takes it. */
    code = ofx_ctl(f, &out, "--json", "list", "--since", "2001-01-01T01:00+01:00", NULL);
    assert_int_equal(code, 0);
    by_key = tj_parse(out);
    free(out);
    assert_int_equal(json_array_size(json_object_get(by_key, "sagas")), 1);
    json_decref(by_key);
    code = ofx_ctl(f, &out, "list", "--since", "yesterday", NULL);
    assert_int_equal(code, 2);
    assert_output_has(out, "bad --since 'yesterday'");
    free(out);

    /* An unknown saga type. */
    code = ofx_ctl(f, &out, "start", "no_such_saga", "--key", "key-B", "customer=bob", NULL);
    assert_int_equal(code, 1);
    assert_output_has(out, "unknown saga type 'no_such_saga'; known types: ");
    assert_output_has(out, "order_fulfillment");
    free(out);

    /* A missing input. */
    code = ofx_start_order(f, "key-C", "bob", "GADGET-7", "1", "1000", NULL, NULL, NULL, &out);
    assert_int_equal(code, 1);
    assert_output_has(out, "missing input 'destination'");
    free(out);
    /* Every missing input at once, not the first only. */
    code = ofx_ctl(f, &out, "start", "order_fulfillment", "--key", "key-D", "customer=bob",
                   "sku=GADGET-7", "quantity=1", NULL);
    assert_int_equal(code, 1);
    assert_output_has(out, "missing inputs 'amount', 'destination' for saga type "
                           "'order_fulfillment'");
    free(out);

    /* Nothing of the refused starts was created: one saga, one order. */
    code = ofx_ctl(f, &out, "--json", "list", NULL);
    assert_int_equal(code, 0);
    json_t *list = tj_parse(out);
    free(out);
    assert_non_null(list);
    const json_t *sagas = json_object_get(list, "sagas");
    assert_int_equal(json_array_size(sagas), 1);
    OFX_ASSERT_STR(tj_str(json_array_get(sagas, 0), "saga_id"), id1);
    json_decref(list);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders"), 1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), 1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = 'bob'"),
                     SEED_BOB - 1000);

    /* sagad still serves: the keys that were refused are free, and a start
     * without a key works. */
    code = ofx_ctl(f, NULL, "stats", NULL);
    assert_int_equal(code, 0);
    assert_int_equal(
        ofx_start_order(f, "key-C", "bob", "GADGET-7", "1", "1000", "berlin", id2, &existing, NULL),
        0);
    assert_int_equal(existing, 0);
    assert_string_not_equal(id2, id1);
    assert_int_equal(
        ofx_start_order(f, NULL, "dave", "WIDGET-1", "1", "700", "oslo", id3, &existing, NULL), 0);
    assert_int_equal(existing, 0);
    st = ofx_wait_final(f, id2, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    st = ofx_wait_final(f, id3, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state = 'approved'"),
                     3);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), 3);
    assert_int_equal(ofx_books_balanced(f), 0);
}

/* Many clients start with one key at the same moment: one saga. */
static void test_concurrent_same_key(void **state)
{
    ofx *f = *state;
    enum { N = 12 };
    pid_t pids[N];
    char *paths[N];
    const char *args[] = {"--url",      f->sagad.url,        "--json",
                          "start",      "order_fulfillment", "--key",
                          "same-key",   "customer=bob",      "sku=WIDGET-1",
                          "quantity=1", "amount=300",        "destination=madrid",
                          NULL};
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "same-%d.out", i);
        paths[i] = th_path(f->dir, name);
        assert_int_equal(th_spawn("sagactl", args, NULL, paths[i], &pids[i]), 0);
    }
    char first[37] = "";
    int fresh = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        assert_int_equal(th_wait_exit(pids[i], OFX_CTL_MS, &status), 0);
        assert_true(th_exited_with(status, 0));
        char *text = th_read_file(paths[i]);
        json_t *doc = tj_parse(text);
        free(text);
        assert_non_null(tj_str(doc, "saga_id"));
        if (first[0] == '\0')
            snprintf(first, sizeof first, "%s", tj_str(doc, "saga_id"));
        OFX_ASSERT_STR(tj_str(doc, "saga_id"), first);
        fresh += tj_int(doc, "existing", -1) == 0;
        json_decref(doc);
        free(paths[i]);
    }
    assert_int_equal(fresh, 1); /* exactly one client created it */
    json_t *st = ofx_wait_final(f, first, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders"), 1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), 1);
    assert_int_equal(balance(f, "bob"), SEED_BOB - 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_saga_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_at_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_at_payment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_at_inventory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_at_shipping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_same_key, setup, teardown),
    };
    return cmocka_run_group_tests_name("orchestrator flow", tests, NULL, NULL);
}
