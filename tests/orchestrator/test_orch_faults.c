/*
 * test_orch_faults — sagad when participants are down or slow, and the
 * operator commands: the real sagad, sagactl and the four services
 * (orch_fixture.h), one fresh system per test, checked through sagactl and
 * the participants' databases.
 *
 * Covered:
 *   - a participant down for a while, then started: the step is retried
 *     (attempts > 1) and the saga completes, with one effect;
 *   - a slow participant (replies delayed past the step timeout, by its
 *     fault injection): the retry gets the stored reply (a replay), the saga
 *     completes and the charge is applied once;
 *   - abort of a saga stuck retrying a step whose participant is down:
 *     COMPENSATED, the done steps undone, the stuck step's compensation
 *     answered by the barrier; abort of a finished saga is refused;
 *   - resume of a FAILED saga: a compensation that cannot be delivered
 *     (participant down, few attempts) leaves the saga FAILED, listed by
 *     `sagactl list --state FAILED`, its effects still in place; after the
 *     participant is back, `sagactl resume` ends it COMPENSATED with net
 *     zero; resume of a non-FAILED saga is refused;
 *   - resume of a saga FAILED in its action phase: the pivot step (no
 *     compensation) whose participant is down is not compensated around;
 *     once it is back, resume completes the saga; abort instead compensates
 *     every step before the pivot.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orch_fixture.h"
#include "util.h"

static int setup_fixture(void **state)
{
    ofx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f; /* each test writes its config and starts what it needs */
    return 0;
}

static int teardown(void **state)
{
    ofx *f = *state;
    int rc = 0;
    if (f == NULL)
        return 0;
    if (f->sagad.pid > 0 && ofx_stop_sagad(f) != 0)
        rc = -1; /* a crash or a (sanitizer) leak at shutdown fails the test */
    ofx_destroy(f);
    free(f);
    *state = NULL;
    return rc;
}

static void assert_has(const char *text, const char *needle)
{
    if (text == NULL || strstr(text, needle) == NULL)
        print_message("'%s' lacks '%s'\n", text ? text : "(null)", needle);
    assert_non_null(text);
    assert_non_null(strstr(text, needle));
}

/* A line of sagad's log names saga id and holds both a and b. */
static void assert_log_has(ofx *f, const char *id, const char *a, const char *b)
{
    char *log = th_read_file(f->sagad.log);
    assert_non_null(log);
    int found = 0;
    for (char *line = strtok(log, "\n"); line != NULL && !found; line = strtok(NULL, "\n"))
        found = strstr(line, id) != NULL && strstr(line, a) != NULL && strstr(line, b) != NULL;
    if (!found)
        print_message("no log line of saga %s holds '%s' and '%s'\n", id, a, b);
    free(log);
    assert_true(found);
}

static int64_t balance(ofx *f, const char *customer)
{
    return ofx_sql(f, SVC_PAYMENT, "SELECT balance FROM accounts WHERE customer = %Q", customer);
}

/* Everything the saga did is undone: the databases are back to the seeds. */
static void assert_net_zero(ofx *f, const char *id)
{
    assert_int_equal(
        ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE state <> 'cancelled'"), 0);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE state = 'charged'"), 0);
    assert_int_equal(balance(f, "alice"), SEED_ALICE);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE state = 'reserved'"), 0);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT available FROM skus WHERE sku = 'WIDGET-1'"),
                     SEED_WIDGET);
    assert_int_equal(
        ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments WHERE state = 'scheduled'"), 0);
    assert_int_equal(ofx_books_balanced(f), 0);
    /* One order, charge and reservation were made (and undone), never two. */
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", id),
                     1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", id),
                     1);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE saga_id = %Q", id), 1);
}

/* The saga completed with each effect once (alice paid 2500 for 2 WIDGET-1). */
static void assert_completed_once(ofx *f, const char *id)
{
    assert_int_equal(
        ofx_sql(f, SVC_ORDER,
                "SELECT count(*) FROM orders WHERE saga_id = %Q AND state = 'approved'", id),
        1);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders"), 1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges"), 1);
    assert_int_equal(
        ofx_sql(f, SVC_PAYMENT,
                "SELECT count(*) FROM charges WHERE saga_id = %Q AND state = 'charged'", id),
        1);
    assert_int_equal(balance(f, "alice"), SEED_ALICE - 2500);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations"), 1);
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT available FROM skus WHERE sku = 'WIDGET-1'"),
                     SEED_WIDGET - 2);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), 1);
    assert_int_equal(ofx_counter(f, SVC_ORDER, "effects"), 2);
    assert_int_equal(ofx_counter(f, SVC_PAYMENT, "effects"), 1);
    assert_int_equal(ofx_counter(f, SVC_INVENTORY, "effects"), 1);
    assert_int_equal(ofx_counter(f, SVC_SHIPPING, "effects"), 1);
    assert_int_equal(ofx_books_balanced(f), 0);
}

static void start_all_but(ofx *f, int down)
{
    for (int i = 0; i < OFX_N_SVC; i++)
        if (i != down)
            assert_int_equal(ofx_start_svc(f, i, NULL), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
}

/* ---- 3. A participant down for a while ---------------------------------- */

static void test_participant_down_then_up(void **state)
{
    ofx *f = *state;
    /* 60 attempts, at most 200 ms apart: a budget of many seconds. */
    ofx_opts o = {.action_attempts = 60};
    assert_int_equal(ofx_init(f, &o), 0);
    start_all_but(f, SVC_PAYMENT);

    char id[37];
    assert_int_equal(
        ofx_start_order(f, "down-1", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL), 0);
    /* It is stuck on the charge, retrying. */
    json_t *st = ofx_wait_attempts(f, id, "charge_payment", 3, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "RUNNING");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "create_order"), "state"), "DONE");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "charge_payment"), "state"), "ACTION_SENT");
    assert_non_null(tj_str(ofx_step(st, "charge_payment"), "last_error"));
    assert_true(strlen(tj_str(ofx_step(st, "charge_payment"), "last_error")) > 0);
    json_decref(st);

    assert_int_equal(ofx_start_svc(f, SVC_PAYMENT, NULL), 0);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    assert_true(tj_int(ofx_step(st, "charge_payment"), "action_attempts", 0) >= 3);
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_true(ofx_history_count(h, "step_no_reply", "charge_payment", "action") >= 2);
    assert_true(ofx_history_count(h, "retry_scheduled", "charge_payment", "action") >= 2);
    assert_int_equal(ofx_history_count(h, "step_sent", NULL, "compensate"), 0);
    json_decref(h);
    json_decref(st);
    assert_completed_once(f, id);
}

/* ---- 4. A slow participant ---------------------------------------------- */

static void test_slow_participant(void **state)
{
    ofx *f = *state;
    /* Replies of payment-svc are held 1 s half of the time (the first one
     * with this seed), past the 300 ms step timeout: sagad retries, and the
     * retry finds the charge already committed. */
    ofx_opts o = {.timeout_ms = 300, .action_attempts = 40};
    assert_int_equal(ofx_init(f, &o), 0);
    start_all_but(f, SVC_PAYMENT);
    assert_int_equal(ofx_start_svc(f, SVC_PAYMENT, "seed=1,delay=0.5,delay_ms=1000"), 0);

    char id[37];
    assert_int_equal(
        ofx_start_order(f, "slow-1", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL), 0);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    assert_true(tj_int(ofx_step(st, "charge_payment"), "action_attempts", 0) >= 2);

    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_true(ofx_history_count(h, "step_no_reply", "charge_payment", "action") >= 1);
    /* The reply that counted was the stored one: replayed. */
    int replayed = 0;
    for (size_t i = 0; i < json_array_size(h); i++) {
        const json_t *ev = json_array_get(h, i);
        if (strcmp(tj_str(ev, "kind"), "step_reply") == 0 &&
            strcmp(tj_str(ev, "step"), "charge_payment") == 0) {
            OFX_ASSERT_STR(tj_str(ev, "outcome"), "OK");
            replayed += (int)tj_int(ev, "replayed", 0);
        }
    }
    assert_int_equal(replayed, 1);
    json_decref(h);
    json_decref(st);

    /* payment-svc saw the charge more than once and applied it once. */
    assert_true(ofx_counter(f, SVC_PAYMENT, "requests") >= 2);
    assert_true(ofx_counter(f, SVC_PAYMENT, "replays") >= 1);
    assert_completed_once(f, id);
}

/* ---- 5. Abort of a running saga ----------------------------------------- */

static void test_abort_running(void **state)
{
    ofx *f = *state;
    /* The stuck step would retry for minutes: only the abort ends it. */
    ofx_opts o = {.action_attempts = 1000, .comp_attempts = 1000};
    assert_int_equal(ofx_init(f, &o), 0);
    start_all_but(f, SVC_SHIPPING);

    char id[37];
    assert_int_equal(
        ofx_start_order(f, "abort-1", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL),
        0);
    json_t *st = ofx_wait_attempts(f, id, "schedule_shipping", 2, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "RUNNING");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "reserve_stock"), "state"), "DONE");
    json_decref(st);
    /* Its effects so far are in place. */
    assert_int_equal(balance(f, "alice"), SEED_ALICE - 2500);

    char *out = NULL;
    int code = ofx_ctl(f, &out, "--json", "abort", id, "--reason", "customer called", NULL);
    assert_int_equal(code, 0);
    json_t *ack = tj_parse(out);
    free(out);
    assert_non_null(ack);
    OFX_ASSERT_STR(tj_str(ack, "saga_id"), id);
    assert_int_equal(tj_int(ack, "accepted", 0), 1);
    json_decref(ack);

    /* The stuck step is compensated too (its outcome is unknown): shipping
     * must answer, and its barrier says there is nothing to undo. */
    assert_int_equal(ofx_start_svc(f, SVC_SHIPPING, NULL), 0);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    /* Who (the admin socket's peer) and why, in the error and the log. */
    char *by = util_asprintf("aborted by uid %u", (unsigned)geteuid());
    assert_has(tj_str(st, "last_error"), by);
    assert_has(tj_str(st, "last_error"), ": customer called");
    OFX_ASSERT_STR(tj_str(st, "root_cause"), tj_str(st, "last_error"));
    assert_log_has(f, id, by, "customer called");
    free(by);
    for (int i = 0; i < 4; i++)
        OFX_ASSERT_STR(tj_str(json_array_get(json_object_get(st, "steps"), (size_t)i), "state"),
                       "COMPENSATED");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "approve_order"), "state"), "PENDING");
    json_decref(st);

    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "abort_requested", NULL, NULL), 1);
    char *order = ofx_history_steps(h, "step_sent", "compensate");
    OFX_ASSERT_STR(order, "schedule_shipping,reserve_stock,charge_payment,create_order");
    free(order);
    json_decref(h);
    assert_net_zero(f, id);
    /* Every shipment that may have been made late is cancelled (normally none). */
    assert_int_equal(ofx_sql(f, SVC_SHIPPING,
                             "SELECT count(*) FROM shipments WHERE saga_id = %Q "
                             "AND state <> 'cancelled'",
                             id),
                     0);

    /* A finished saga cannot be aborted. */
    code = ofx_ctl(f, &out, "abort", id, NULL);
    assert_int_equal(code, 1);
    assert_has(out, "finished");
    free(out);
}

/* ---- 6. Resume of a FAILED saga ----------------------------------------- */

static int listed(ofx *f, const char *state_filter, const char *id)
{
    char *out = NULL;
    int code = ofx_ctl(f, &out, "--json", "list", "--state", state_filter, NULL);
    json_t *list = code == 0 ? tj_parse(out) : NULL;
    free(out);
    if (list == NULL)
        return -1;
    int found = 0;
    const json_t *sagas = json_object_get(list, "sagas");
    for (size_t i = 0; i < json_array_size(sagas); i++) {
        const char *sid = tj_str(json_array_get(sagas, i), "saga_id");
        found += sid && strcmp(sid, id) == 0;
    }
    json_decref(list);
    return found;
}

/* sagad's log has a line at level (as the text format writes it) naming
 * the saga as FAILED. */
static void assert_logged(ofx *f, const char *level, const char *id)
{
    char *log = th_read_file(f->sagad.log);
    assert_non_null(log);
    int found = 0;
    for (char *line = strtok(log, "\n"); line != NULL && !found; line = strtok(NULL, "\n"))
        found = strstr(line, level) != NULL && strstr(line, id) != NULL &&
                strstr(line, "FAILED") != NULL;
    if (!found)
        print_message("no %s line says saga %s is FAILED\n", level, id);
    free(log);
    assert_true(found);
}

static void test_resume_failed(void **state)
{
    ofx *f = *state;
    /* shipping-svc is down: its action gives up after 3 attempts, then its
     * compensation (the outcome is unknown) after 3 more: FAILED. A long
     * timeout keeps the steps that do answer from running out of attempts
     * on a loaded machine. */
    ofx_opts o = {.timeout_ms = 1000, .action_attempts = 3, .comp_attempts = 3};
    assert_int_equal(ofx_init(f, &o), 0);
    start_all_but(f, SVC_SHIPPING);

    char id[37];
    assert_int_equal(
        ofx_start_order(f, "resume-1", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL),
        0);
    json_t *st = ofx_wait_final(f, id, 60000);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    assert_has(tj_str(st, "last_error"), "compensation of step 'schedule_shipping' failed");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "schedule_shipping"), "state"), "COMPENSATING");
    assert_int_equal(tj_int(ofx_step(st, "schedule_shipping"), "compensation_attempts", 0), 3);
    OFX_ASSERT_STR(tj_str(ofx_step(st, "reserve_stock"), "state"), "DONE");
    json_decref(st);
    assert_int_equal(listed(f, "failed", id), 1);
    assert_int_equal(listed(f, "compensated", id), 0);
    /* FAILED holds: nothing undone yet, nothing retried any more. */
    assert_logged(f, "ERROR", id); /* an undo that could not be done */
    assert_int_equal(balance(f, "alice"), SEED_ALICE - 2500);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE state = 'reserved'"), 1);
    assert_int_equal(ofx_books_balanced(f), 0);

    /* sagad keeps it across a restart, still FAILED (not recovered). */
    assert_int_equal(ofx_stop_sagad(f), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    assert_int_equal(listed(f, "failed", id), 1);

    /* An abort has nothing left to do: the refusal names the command that does. */
    char *out = NULL;
    int code = ofx_ctl(f, &out, "abort", id, "--reason", "try", NULL);
    assert_int_equal(code, 1);
    assert_has(out, "it FAILED while compensating");
    char *next = util_asprintf("`sagactl resume %s` retries the compensation", id);
    assert_has(out, next);
    free(next);
    free(out);
    /* Its stuck step reads failed (compensation), the others left out halted. */
    st = ofx_status(f, id);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "failed_phase"), "compensate");
    const char *stuck = tj_str(st, "failed_step");
    assert_non_null(stuck);
    assert_true(json_is_true(json_object_get(ofx_step(st, stuck), "failed")));
    json_decref(st);

    assert_int_equal(ofx_start_svc(f, SVC_SHIPPING, NULL), 0);
    code = ofx_ctl(f, &out, "resume", id, NULL);
    if (code != 0)
        print_message("resume: %s\n", out);
    assert_int_equal(code, 0);
    free(out);

    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    for (int i = 0; i < 4; i++)
        OFX_ASSERT_STR(tj_str(json_array_get(json_object_get(st, "steps"), (size_t)i), "state"),
                       "COMPENSATED");
    OFX_ASSERT_STR(tj_str(ofx_step(st, "schedule_shipping"), "last_outcome"), "SKIPPED");
    json_decref(st);
    assert_int_equal(listed(f, "failed", id), 0);
    assert_int_equal(listed(f, "compensated", id), 1);

    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "saga_failed", NULL, NULL), 1);
    assert_int_equal(ofx_history_count(h, "resumed", NULL, NULL), 1);
    char *order = ofx_history_steps(h, "step_sent", "compensate");
    OFX_ASSERT_STR(order, "schedule_shipping,reserve_stock,charge_payment,create_order");
    free(order);
    json_decref(h);
    assert_net_zero(f, id);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments"), 0);

    /* Only a FAILED saga can be resumed. */
    code = ofx_ctl(f, &out, "resume", id, NULL);
    assert_int_equal(code, 1);
    free(out);
}

/* A FAILED saga in its action phase: the pivot step (approve_order, no
 * compensation) could not learn its outcome, so sagad stops instead of
 * compensating around it; resume retries the pivot and completes. */
static void test_resume_failed_pivot(void **state)
{
    ofx *f = *state;
    /* 3 s per attempt: after the resume, the restarted order-svc must answer
     * within the pivot's 3 attempts even on a loaded machine under ASan. */
    ofx_opts o = {.timeout_ms = 3000, .action_attempts = 200, .pivot_attempts = 3};
    assert_int_equal(ofx_init(f, &o), 0);
    start_all_but(f, SVC_SHIPPING);

    char id[37];
    assert_int_equal(
        ofx_start_order(f, "pivot-1", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL),
        0);
    /* Held at shipping while order-svc goes away; then shipping comes up,
     * and the pivot meets a dead order-svc. */
    json_t *st = ofx_wait_attempts(f, id, "schedule_shipping", 1, OFX_WAIT_MS);
    assert_non_null(st);
    json_decref(st);
    assert_int_equal(ofx_stop_svc(f, SVC_ORDER), 0);
    assert_int_equal(ofx_start_svc(f, SVC_SHIPPING, NULL), 0);

    st = ofx_wait_final(f, id, 60000);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    assert_has(tj_str(st, "last_error"), "has no compensation and its outcome is unknown");
    assert_logged(f, "WARN", id); /* FAILED needs an operator: not an INFO line */
    OFX_ASSERT_STR(tj_str(ofx_step(st, "approve_order"), "state"), "ACTION_SENT");
    assert_int_equal(tj_int(ofx_step(st, "approve_order"), "action_attempts", 0), 3);
    OFX_ASSERT_STR(tj_str(ofx_step(st, "schedule_shipping"), "state"), "DONE");
    /* The stuck step is the failed one, named; the first cause kept apart. */
    OFX_ASSERT_STR(tj_str(st, "failed_step"), "approve_order");
    assert_true(json_is_true(json_object_get(ofx_step(st, "approve_order"), "failed")));
    assert_true(json_is_false(json_object_get(ofx_step(st, "schedule_shipping"), "failed")));
    OFX_ASSERT_STR(tj_str(st, "root_cause"), tj_str(st, "last_error"));
    /* What each step was sent: the saga input its inputs name, and the
     * results of the steps before it. */
    const json_t *params = json_object_get(ofx_step(st, "charge_payment"), "params");
    OFX_ASSERT_STR(tj_str(params, "customer"), "alice");
    OFX_ASSERT_STR(tj_str(params, "amount"), "2500");
    assert_true(json_object_size(json_object_get(ofx_step(st, "approve_order"), "params")) > 0);
    assert_true(tj_int(ofx_step(st, "charge_payment"), "duration_ms", -1) >= 0);
    assert_true(json_is_null(json_object_get(st, "duration_ms")) == 0); /* FAILED is settled */
    json_decref(st);
    /* sagactl status, as an operator reads it: by the beginning of the id. */
    char prefix[14];
    snprintf(prefix, sizeof prefix, "%.13s", id);
    char *text = NULL;
    assert_int_equal(ofx_ctl(f, &text, "status", prefix, NULL), 0);
    assert_has(text, "FAILED at step approve_order (action)");
    assert_has(text, "FAILED (action)");
    assert_has(text, " ago (");
    assert_has(text, " UTC)");
    assert_has(text, "customer=alice");
    free(text);
    assert_int_equal(listed(f, "failed", id), 1);
    /* Nothing was compensated around the pivot. */
    assert_int_equal(balance(f, "alice"), SEED_ALICE - 2500);
    assert_int_equal(
        ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments WHERE state = 'scheduled'"), 1);

    assert_int_equal(ofx_start_svc(f, SVC_ORDER, NULL), 0);
    char *out = NULL;
    int code = ofx_ctl(f, &out, "resume", prefix, "--reason", "order-svc is back", NULL);
    if (code != 0)
        print_message("resume: %s\n", out);
    assert_int_equal(code, 0);
    free(out);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    /* Nothing is wrong any more: no last error; the first cause is what it
     * recovered from, and no step reads failed. */
    assert_true(json_is_null(json_object_get(st, "last_error")));
    assert_has(tj_str(st, "root_cause"), "has no compensation and its outcome is unknown");
    assert_true(json_is_null(json_object_get(st, "failed_step")));
    assert_true(json_is_false(json_object_get(ofx_step(st, "approve_order"), "failed")));
    json_decref(st);
    assert_int_equal(ofx_ctl(f, &text, "status", id, NULL), 0);
    assert_has(text, "recovered from");
    if (strstr(text, "last error  ") != NULL && strstr(text, "last error  -") == NULL)
        print_message("a COMPLETED saga shows a last error:\n%s\n", text);
    assert_true(strstr(text, "last error  ") == NULL || strstr(text, "last error  -") != NULL);
    free(text);
    /* Who resumed it and why: in its history and in sagad's log. */
    char *by = util_asprintf("resumed by uid %u", (unsigned)geteuid());
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "resumed", NULL, NULL), 1);
    for (size_t i = 0; i < json_array_size(h); i++) {
        const json_t *ev = json_array_get(h, i);
        if (strcmp(tj_str(ev, "kind"), "resumed") == 0) {
            assert_has(tj_str(ev, "detail"), by);
            assert_has(tj_str(ev, "detail"), ": order-svc is back; it had failed with: step");
        }
        if (strcmp(tj_str(ev, "kind"), "step_sent") == 0)
            assert_true(json_is_object(json_object_get(ev, "params")));
    }
    assert_log_has(f, id, by, "order-svc is back");
    free(by);
    /* A resume of the COMPLETED saga is refused, saying what to do instead. */
    code = ofx_ctl(f, &out, "resume", id, NULL);
    assert_int_equal(code, 1);
    assert_has(out, "is finished (COMPLETED)");
    assert_has(out, "sagactl history");
    free(out);
    assert_int_equal(ofx_history_count(h, "step_sent", NULL, "compensate"), 0);
    json_decref(h);
    assert_completed_once(f, id);
}

/* Abort of a saga FAILED at its pivot: the pivot has no undo, so it is
 * noted and skipped, and every step before it is compensated. */
static void test_abort_failed_pivot(void **state)
{
    ofx *f = *state;
    ofx_opts o = {.timeout_ms = 3000, .action_attempts = 200, .pivot_attempts = 2};
    assert_int_equal(ofx_init(f, &o), 0);
    start_all_but(f, SVC_SHIPPING);

    char id[37];
    assert_int_equal(
        ofx_start_order(f, "pivot-2", "alice", "WIDGET-1", "2", "2500", "paris", id, NULL, NULL),
        0);
    json_t *st = ofx_wait_attempts(f, id, "schedule_shipping", 1, OFX_WAIT_MS);
    assert_non_null(st);
    json_decref(st);
    assert_int_equal(ofx_stop_svc(f, SVC_ORDER), 0);
    assert_int_equal(ofx_start_svc(f, SVC_SHIPPING, NULL), 0);
    st = ofx_wait_final(f, id, 60000);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "FAILED");
    json_decref(st);

    assert_int_equal(ofx_start_svc(f, SVC_ORDER, NULL), 0);
    char *out = NULL;
    int code = ofx_ctl(f, &out, "abort", id, "--reason", "give up", NULL);
    if (code != 0)
        print_message("abort: %s\n", out);
    assert_int_equal(code, 0);
    free(out);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    for (int i = 0; i < 4; i++)
        OFX_ASSERT_STR(tj_str(json_array_get(json_object_get(st, "steps"), (size_t)i), "state"),
                       "COMPENSATED");
    json_decref(st);
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "compensation_not_defined", "approve_order", NULL), 1);
    char *order = ofx_history_steps(h, "step_sent", "compensate");
    OFX_ASSERT_STR(order, "schedule_shipping,reserve_stock,charge_payment,create_order");
    free(order);
    json_decref(h);
    /* The approval never reached order-svc: the order is cancelled, and
     * everything else is back to the seeds. */
    assert_net_zero(f, id);
    assert_int_equal(ofx_sql(f, SVC_SHIPPING,
                             "SELECT count(*) FROM shipments WHERE state = "
                             "'cancelled'"),
                     1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_participant_down_then_up, setup_fixture, teardown),
        cmocka_unit_test_setup_teardown(test_slow_participant, setup_fixture, teardown),
        cmocka_unit_test_setup_teardown(test_abort_running, setup_fixture, teardown),
        cmocka_unit_test_setup_teardown(test_resume_failed, setup_fixture, teardown),
        cmocka_unit_test_setup_teardown(test_resume_failed_pivot, setup_fixture, teardown),
        cmocka_unit_test_setup_teardown(test_abort_failed_pivot, setup_fixture, teardown),
    };
    return cmocka_run_group_tests_name("orchestrator faults", tests, NULL, NULL);
}
