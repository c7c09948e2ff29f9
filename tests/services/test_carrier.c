/*
 * test_carrier — effects outside the database (participant.h,
 * pt_external_begin), with the real shipping-svc calling carrier-sim, a
 * simulated carrier that counts its bookings per idempotency key:
 *
 *   - shipping-svc is killed (SAGA_CRASH_POINT=participant.before_commit)
 *     after the carrier booked the parcel and before the shipment's commit;
 *     the retry to the restarted service books under the same downstream
 *     key: the carrier counts two calls and ONE booking, and the reply
 *     carries the first call's booking reference;
 *   - a compensation that arrives while that action's outcome is unknown
 *     is answered RETRY (nothing stored), not a null compensation that
 *     would leave the booking in place; after the action's retry it
 *     cancels the booking once;
 *   - an unreachable carrier makes the step RETRY, and the retry books once;
 *     a carrier refusal is REJECTED with no shipment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "fixture.h"
#include "util.h"

typedef struct {
    fx_svc svc;
    char *carrier_url;
    pid_t carrier;
} carrier_fx;

static int setup(void **state)
{
    carrier_fx *f = calloc(1, sizeof *f);
    if (f == NULL || fx_init(&f->svc, "shipping") != 0)
        return -1;
    f->carrier_url = th_ipc_url(f->svc.dir, "carrier");
    *state = f;
    return f->carrier_url ? 0 : -1;
}

static int teardown(void **state)
{
    carrier_fx *f = *state;
    int status;
    if (f->carrier > 0)
        th_stop(f->carrier, FX_TIMEOUT_MS, &status);
    fx_destroy(&f->svc);
    free(f->carrier_url);
    free(f);
    return 0;
}

/* Starts carrier-sim (refusing `refused` when non-NULL). */
static void start_carrier(carrier_fx *f, const char *refused)
{
    const char *args[] = {f->carrier_url, refused, NULL};
    assert_int_equal(th_spawn("carrier-sim", args, NULL, NULL, &f->carrier), 0);
    assert_int_equal(th_wait_dial(f->carrier_url, f->carrier, FX_TIMEOUT_MS), 0);
}

/* Starts shipping-svc with --carrier-url, and SAGA_CRASH_POINT when crash_point is set. */
static void start_shipping(carrier_fx *f, const char *crash_point)
{
    fx_svc *s = &f->svc;
    char *env_crash = crash_point ? util_asprintf("SAGA_CRASH_POINT=%s", crash_point) : NULL;
    const char *env[] = {env_crash, NULL};
    const char *args[] = {"--listen", s->url,          "--db",         s->db, "--seed",
                          s->seed,    "--carrier-url", f->carrier_url, NULL};
    assert_int_equal(th_spawn("shipping-svc", args, crash_point ? env : NULL, NULL, &s->pid), 0);
    free(env_crash);
    assert_int_equal(th_wait_dial(s->url, s->pid, FX_TIMEOUT_MS), 0);
}

/* The carrier's counters: STATS over its socket. */
static void carrier_stats(carrier_fx *f, int *bookings, int *cancellations, int *calls)
{
    th_client c;
    uint8_t *reply = NULL;
    size_t len = 0;
    assert_int_equal(th_client_open(&c, f->carrier_url, FX_TIMEOUT_MS), 0);
    assert_int_equal(th_client_raw(&c, "STATS", 5, &reply, &len), 0);
    th_client_close(&c);
    char text[128];
    snprintf(text, sizeof text, "%.*s", (int)len, (const char *)reply);
    free(reply);
    assert_int_equal(
        sscanf(text, "OK bookings=%d cancellations=%d calls=%d", bookings, cancellations, calls),
        3);
}

/* The first schedule kills shipping-svc between the carrier's booking and the commit. */
static void crash_after_booking(carrier_fx *f, const char *saga)
{
    int rv = 0, status = 0;
    start_shipping(f, "participant.before_commit");
    StepReply *r = fx_step_timeout(&f->svc, 1000, &rv, saga, "ship", PHASE_ACTION, "schedule",
                                   "destination", "Paris", "order_id", "order-1", NULL);
    assert_null(r); /* no answer: it died before its commit */
    assert_int_equal(th_wait_exit(f->svc.pid, FX_TIMEOUT_MS, &status), 0);
    f->svc.pid = 0;
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(fx_sql_int(&f->svc, "SELECT count(*) FROM shipments"), 0);
    int bookings, cancellations, calls;
    carrier_stats(f, &bookings, &cancellations, &calls);
    assert_int_equal(bookings, 1); /* the external effect happened */
    assert_int_equal(calls, 1);
}

static StepReply *schedule(carrier_fx *f, const char *saga)
{
    return fx_step(&f->svc, saga, "ship", PHASE_ACTION, "schedule", "destination", "Paris",
                   "order_id", "order-1", NULL);
}

static StepReply *cancel(carrier_fx *f, const char *saga)
{
    return fx_step(&f->svc, saga, "ship", PHASE_COMPENSATE, "cancel", "destination", "Paris",
                   "order_id", "order-1", NULL);
}

static void test_crash_between_call_and_commit_books_once(void **state)
{
    carrier_fx *f = *state;
    char saga[37];
    int bookings, cancellations, calls;
    fx_saga_id(saga);
    start_carrier(f, NULL);
    crash_after_booking(f, saga);

    start_shipping(f, NULL);
    StepReply *r = schedule(f, saga);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_false(r->replayed);
    assert_string_equal(th_result(r, "booking_ref"), "BK-1"); /* the first call's booking */
    th_reply_free(r);
    carrier_stats(f, &bookings, &cancellations, &calls);
    assert_int_equal(calls, 2);    /* called again after the crash ... */
    assert_int_equal(bookings, 1); /* ... under the same key: one booking */

    /* Recorded now: a repeat is a replay, the carrier is not called again. */
    r = schedule(f, saga);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    assert_true(r->replayed);
    th_reply_free(r);
    carrier_stats(f, &bookings, &cancellations, &calls);
    assert_int_equal(calls, 2);
    assert_int_equal(fx_sql_int(&f->svc, "SELECT count(*) FROM carrier_bookings WHERE "
                                         "booking_ref = 'BK-1' AND state = 'booked'"),
                     1);
    /* The in-flight marker: a file of its own beside SQLite's database, a table of the
     * database itself on PostgreSQL (store_pg.c). */
    char *markers = fx_on_pg() ? util_strdup(f->svc.db) : util_asprintf("%s.external", f->svc.db);
    if (!fx_on_pg()) {
        struct stat st;
        assert_int_equal(stat(markers, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600); /* private, like the database */
    }
    assert_int_equal(th_sql_int(markers, "SELECT attempts FROM pt_external WHERE target = "
                                         "'carrier-book'"),
                     2);
    free(markers);
    assert_int_equal(fx_stop(&f->svc), 0);
}

static void test_compensation_waits_for_undetermined_action(void **state)
{
    carrier_fx *f = *state;
    char saga[37];
    int bookings, cancellations, calls;
    fx_saga_id(saga);
    start_carrier(f, NULL);
    crash_after_booking(f, saga);
    start_shipping(f, NULL);

    /* The booking may exist: not a null compensation, and the action is not fenced. */
    StepReply *r = cancel(f, saga);
    FX_ASSERT_OUTCOME(r, OUTCOME_RETRY);
    FX_ASSERT_ERROR_HAS(r, "called external system 'carrier-book'");
    th_reply_free(r);
    assert_int_equal(fx_sql_int(&f->svc, "SELECT count(*) FROM pt_idempotency"), 0);

    r = schedule(f, saga);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    th_reply_free(r);
    for (int i = 0; i < 2; i++) {
        r = cancel(f, saga);
        FX_ASSERT_OUTCOME(r, OUTCOME_OK);
        assert_int_equal(r->replayed, i == 1);
        th_reply_free(r);
    }
    carrier_stats(f, &bookings, &cancellations, &calls);
    assert_int_equal(bookings, 1);
    assert_int_equal(cancellations, 1);
    assert_int_equal(fx_sql_int(&f->svc, "SELECT count(*) FROM carrier_bookings WHERE "
                                         "state = 'cancelled'"),
                     1);
    assert_int_equal(fx_stop(&f->svc), 0);
}

static void test_unreachable_then_refusing_carrier(void **state)
{
    carrier_fx *f = *state;
    char saga[37], other[37];
    int bookings, cancellations, calls;
    fx_saga_id(saga);
    fx_saga_id(other);
    start_shipping(f, NULL); /* no carrier yet */
    StepReply *r = schedule(f, saga);
    FX_ASSERT_OUTCOME(r, OUTCOME_RETRY);
    FX_ASSERT_ERROR_HAS(r, "outcome unknown");
    th_reply_free(r);

    start_carrier(f, "Berlin");
    r = schedule(f, saga);
    FX_ASSERT_OUTCOME(r, OUTCOME_OK);
    th_reply_free(r);
    r = fx_step(&f->svc, other, "ship", PHASE_ACTION, "schedule", "destination", "berlin",
                "order_id", "order-2", NULL);
    FX_ASSERT_OUTCOME(r, OUTCOME_REJECTED);
    FX_ASSERT_ERROR_HAS(r, "carrier refused: destination not served by the carrier");
    th_reply_free(r);
    carrier_stats(f, &bookings, &cancellations, &calls);
    assert_int_equal(bookings, 1);
    assert_int_equal(fx_sql_int(&f->svc, "SELECT count(*) FROM shipments"), 1);
    assert_int_equal(fx_stop(&f->svc), 0);
}

/* The carrier is reached over an owner-only ipc:// socket: anything else is refused (exit 2). */
static void test_carrier_url_must_be_ipc(void **state)
{
    carrier_fx *f = *state;
    int status;
    pid_t pid;
    const char *args[] = {
        "--listen", f->svc.url, "--db", f->svc.db, "--carrier-url", "tcp://127.0.0.1:7409", NULL};
    char *log = th_path(f->svc.dir, "cli.log");
    assert_int_equal(th_spawn("shipping-svc", args, NULL, log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, FX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 2));
    char *out = th_read_file(log);
    assert_non_null(out);
    assert_non_null(strstr(out, "--carrier-url: must be an ipc:// address"));
    free(out);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crash_between_call_and_commit_books_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compensation_waits_for_undetermined_action, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_then_refusing_carrier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_carrier_url_must_be_ipc, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
