/*
 * test_orch_sched — scheduled starts (sagactl start --at / --in, cancel;
 * orchestrator/engine_sched.c), with the real sagad, sagactl and the four
 * participants (orch_fixture.h).
 *
 *   fires_after_restart  a start scheduled 3 s ahead is listed SCHEDULED with
 *                        its time, a repeat with its key answers the same id
 *                        ("existing"), and so does an immediate start of the
 *                        key; sagad is stopped past the due time and
 *                        started again: the late start fires at recovery, as
 *                        the id it was promised, and completes once.
 *   cancel               cancel before it fires: gone, never started; cancel
 *                        of a start that already ran: refused, naming the
 *                        saga's state and `sagactl abort`; abort of a scheduled
 *                        start cancels it too; a time without a zone refused.
 *   type removed         the type of two scheduled starts removed from the
 *                        files (reload) before they fire: both stay
 *                        SCHEDULED and are logged; one is cancelled; with the
 *                        type back and reloaded the other fires at once and
 *                        completes once.
 *   crash windows        sagad SIGKILLed at engine.after_schedule_commit
 *                        (stored, not answered), engine.before_fire_commit
 *                        (fired in memory, not committed) and
 *                        engine.after_fire_commit (committed, nothing sent):
 *                        after the restart the client's repeat finds the
 *                        same id, the saga completes, and every participant
 *                        effect happened once (never lost, never doubled).
 * With SAGA_TEST_DATABASE=postgresql (test_orch_sched_pg) the same on
 * PostgreSQL; test_orch_nodes has two nodes firing one schedule.
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

static int setup(void **state)
{
    ofx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f;
    ofx_opts o = {.action_attempts = 30, .comp_attempts = 30, .pivot_attempts = 40};
    if (ofx_init(f, &o) != 0)
        return -1;
    for (int i = 0; i < OFX_N_SVC; i++)
        if (ofx_start_svc(f, i, NULL) != 0)
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

/* sagactl --json start order_fulfillment --key key <when> <value> for alice;
 * exit code, with the id and "existing" on success. */
static int sched_start(ofx *f, const char *key, const char *when, const char *value,
                       const char *amount, char id[37], int *existing)
{
    char *text = NULL, *amt = util_asprintf("amount=%s", amount);
    int code =
        ofx_ctl(f, &text, "--json", "start", "order_fulfillment", "--key", key, when, value,
                "customer=alice", "sku=WIDGET-1", "quantity=1", amt, "destination=lisbon", NULL);
    id[0] = '\0';
    if (code == 0) {
        json_t *doc = tj_parse(text);
        const char *sid = tj_str(doc, "saga_id");
        snprintf(id, 37, "%s", sid ? sid : "");
        if (existing)
            *existing = (int)tj_int(doc, "existing", -1);
        json_decref(doc);
    } else {
        print_message("sagactl start %s %s exited %d: %s\n", when, value, code, text ? text : "");
    }
    free(text);
    free(amt);
    return code;
}

/* The ids of `list --state SCHEDULED`, with their start times. */
static json_t *list_scheduled(ofx *f)
{
    char *text = NULL;
    int code = ofx_ctl(f, &text, "--json", "list", "--state", "scheduled", NULL);
    json_t *doc = code == 0 ? tj_parse(text) : NULL;
    free(text);
    return doc;
}

/* The entry of id in a list document, or NULL. */
static const json_t *listed(const json_t *list, const char *id)
{
    const json_t *sagas = json_object_get(list, "sagas");
    size_t i;
    const json_t *row;
    json_array_foreach(sagas, i, row)
    {
        const char *sid = tj_str(row, "saga_id");
        if (sid && strcmp(sid, id) == 0)
            return row;
    }
    return NULL;
}

/* One saga of this id took effect once in each participant, approved. */
static void assert_once(ofx *f, const char *id)
{
    assert_int_equal(
        ofx_sql(f, SVC_ORDER,
                "SELECT count(*) FROM orders WHERE saga_id = %Q AND state = 'approved'", id),
        1);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", id),
                     1);
    assert_int_equal(ofx_sql(f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", id),
                     1);
    assert_int_equal(
        ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations WHERE saga_id = %Q", id), 1);
    assert_int_equal(
        ofx_sql(f, SVC_SHIPPING, "SELECT count(*) FROM shipments WHERE saga_id = %Q", id), 1);
    json_t *h = ofx_history(f, id);
    assert_non_null(h);
    assert_int_equal(ofx_history_count(h, "saga_scheduled", NULL, NULL), 1);
    json_decref(h);
}

static void fires_after_restart(void **state)
{
    ofx *f = *state;
    char id[37], again[37];
    int existing = -1;
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    int64_t asked = util_wall_ms();
    assert_int_equal(sched_start(f, "sched/late", "--in", "3s", "201", id, &existing), 0);
    assert_int_equal(existing, 0);

    json_t *st = ofx_status(f, id);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "SCHEDULED");
    int64_t due = tj_int(st, "start_at_ms", 0);
    assert_true(due >= asked + 3000 && due <= util_wall_ms() + 3000);
    json_decref(st);
    json_t *l = list_scheduled(f);
    assert_non_null(l);
    const json_t *row = listed(l, id);
    assert_non_null(row);
    assert_int_equal(tj_int(row, "start_at_ms", 0), due);
    json_decref(l);

    /* The same key and input: the scheduled one. */
    assert_int_equal(sched_start(f, "sched/late", "--in", "3s", "201", again, &existing), 0);
    assert_string_equal(again, id);
    assert_int_equal(existing, 1);
    /* An immediate start of the key: the scheduled one too, not a second
     * saga (store.h S3; across nodes, test_orch_nodes). */
    assert_int_equal(ofx_start_order(f, "sched/late", "alice", "WIDGET-1", "1", "201", "lisbon",
                                     again, &existing, NULL),
                     0);
    assert_string_equal(again, id);
    assert_int_equal(existing, 1);

    /* Down past its time: it fires at the next start, late. */
    assert_int_equal(ofx_stop_sagad(f), 0);
    while (util_wall_ms() < due + 500)
        usleep(100 * 1000);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    assert_once(f, id);
    l = list_scheduled(f);
    assert_non_null(l);
    assert_null(listed(l, id));
    json_decref(l);
    /* A repeat now: the saga it became. */
    assert_int_equal(sched_start(f, "sched/late", "--in", "3s", "201", again, &existing), 0);
    assert_string_equal(again, id);
    assert_int_equal(existing, 1);
    assert_int_equal(ofx_books_balanced(f), 0);
}

static void cancel(void **state)
{
    ofx *f = *state;
    char id[37], ran[37], aborted[37];
    char *out = NULL;
    assert_int_equal(ofx_start_sagad(f, NULL), 0);

    assert_int_equal(
        sched_start(f, "sched/cancel", "--at", "2030-01-01T09:00:00+01:00", "202", id, NULL), 0);
    json_t *st = ofx_status(f, id);
    assert_non_null(st);
    assert_int_equal(tj_int(st, "start_at_ms", 0), 1893484800000LL);
    json_decref(st);
    assert_int_equal(ofx_ctl(f, NULL, "cancel", id, NULL), 0);
    assert_int_not_equal(ofx_ctl(f, &out, "status", id, NULL), 0);
    assert_non_null(strstr(out, "no saga"));
    free(out);
    assert_int_not_equal(ofx_ctl(f, &out, "cancel", id, NULL), 0);
    assert_non_null(strstr(out, "no scheduled start"));
    free(out);
    assert_int_equal(ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", id),
                     0);

    /* abort of a scheduled start cancels it too. */
    assert_int_equal(sched_start(f, "sched/abort", "--in", "1h", "203", aborted, NULL), 0);
    assert_int_equal(ofx_ctl(f, NULL, "abort", aborted, NULL), 0);
    assert_int_not_equal(ofx_ctl(f, NULL, "status", aborted, NULL), 0);

    /* Once it ran: refused, with its state and the next command. */
    assert_int_equal(sched_start(f, "sched/ran", "--in", "1s", "204", ran, NULL), 0);
    st = ofx_wait_final(f, ran, OFX_WAIT_MS);
    assert_non_null(st);
    json_decref(st);
    assert_int_not_equal(ofx_ctl(f, &out, "cancel", ran, NULL), 0);
    assert_non_null(strstr(out, "already started"));
    assert_non_null(strstr(out, "COMPLETED"));
    free(out);

    /* A time without a zone is refused by sagactl, with the rule. */
    assert_int_not_equal(
        sched_start(f, "sched/nozone", "--at", "2030-01-01T09:00:00", "205", id, NULL), 0);
    assert_int_not_equal(ofx_ctl(f, &out, "start", "order_fulfillment", "--at",
                                 "2030-01-01T09:00:00", "customer=alice", NULL),
                         0);
    assert_non_null(strstr(out, "no time zone"));
    free(out);
}

/* How many times needle is in sagad's log. */
static int log_count(ofx *f, const char *needle)
{
    char *text = th_read_file(f->sagad.log);
    int n = 0;
    for (const char *p = text; p != NULL && (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(text);
    return n;
}

/* sagactl --json start order_later --key key --in 2s for alice: the id. */
static void later_start(ofx *f, const char *key, char id[37])
{
    char *text = NULL;
    int code = ofx_ctl(f, &text, "--json", "start", "order_later", "--key", key, "--in", "2s",
                       "customer=alice", "sku=WIDGET-1", "quantity=1", "amount=206",
                       "destination=lisbon", NULL);
    if (code != 0)
        print_message("%s\n", text);
    assert_int_equal(code, 0);
    json_t *doc = tj_parse(text);
    assert_non_null(tj_str(doc, "saga_id"));
    snprintf(id, 37, "%s", tj_str(doc, "saga_id"));
    json_decref(doc);
    free(text);
}

/* A type removed from the saga files (and reloaded) before its scheduled
 * starts fire: they stay SCHEDULED, logged (engine_sched.c invariant 5), can
 * be cancelled, and fire as soon as the type is back and reloaded. */
static void type_removed_before_it_fires(void **state)
{
    ofx *f = *state;
    char *out = NULL;
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    char *dir = th_path(f->dir, "sagas");
    char *src = th_path(dir, "order_fulfillment.cfg"), *later = th_path(dir, "order_later.cfg");
    char *text = th_read_file(src);
    assert_non_null(text);
    char *name = strstr(text, "name = \"order_fulfillment\";");
    assert_non_null(name);
    *name = '\0';
    char *def = util_asprintf("%sname = \"order_later\";%s", text,
                              name + strlen("name = \"order_fulfillment\";"));
    assert_int_equal(th_write_file(later, def), 0);
    assert_int_equal(ofx_ctl(f, NULL, "reload", NULL), 0);

    char id[37], dropped[37];
    later_start(f, "sched/removed", id);
    later_start(f, "sched/removed-cancel", dropped);
    assert_int_equal(unlink(later), 0);
    assert_int_equal(ofx_ctl(f, NULL, "reload", NULL), 0);
    const char *why = "cannot start: saga type 'order_later' is not defined any more; it stays "
                      "scheduled";
    for (int tries = 0; tries < 600 && log_count(f, why) < 2; tries++)
        usleep(50 * 1000);
    assert_int_equal(log_count(f, why), 2);
    json_t *st = ofx_status(f, id);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "SCHEDULED");
    json_decref(st);
    json_t *l = list_scheduled(f);
    assert_non_null(l);
    assert_non_null(listed(l, id));
    assert_non_null(listed(l, dropped));
    json_decref(l);

    /* Cancellable meanwhile. */
    assert_int_equal(ofx_ctl(f, NULL, "cancel", dropped, NULL), 0);
    assert_int_not_equal(ofx_ctl(f, &out, "status", dropped, NULL), 0);
    assert_non_null(strstr(out, "no saga"));
    free(out);

    /* The type back: the start fires at the next poll, once. */
    assert_int_equal(th_write_file(later, def), 0);
    assert_int_equal(ofx_ctl(f, NULL, "reload", NULL), 0);
    st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    OFX_ASSERT_STR(tj_str(st, "type"), "order_later");
    json_decref(st);
    assert_once(f, id);
    assert_int_equal(
        ofx_sql(f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", dropped), 0);
    assert_int_equal(log_count(f, why), 2); /* tried once each while the type was gone */
    assert_int_equal(ofx_books_balanced(f), 0);
    free(text);
    free(def);
    free(src);
    free(later);
    free(dir);
}

/* sagad dies at point:1 around a scheduled start; the restart loses and
 * doubles nothing. */
static void crash_at(ofx *f, const char *point, const char *amount)
{
    char armed[96], key[96], first[37] = "", id[37];
    int existing = -1;
    snprintf(armed, sizeof armed, "%s:1", point);
    snprintf(key, sizeof key, "sched/crash/%s", point);
    print_message("crash at %s\n", armed);
    assert_int_equal(ofx_start_sagad(f, armed), 0);
    f->ctl_timeout_ms = 3000; /* unanswered when the kill comes first */
    if (sched_start(f, key, "--in", "2s", amount, first, NULL) != 0)
        first[0] = '\0';
    f->ctl_timeout_ms = 0;
    assert_int_equal(ofx_wait_sagad_killed(f, OFX_WAIT_MS), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    /* The client repeats: the start was committed before every point. */
    assert_int_equal(sched_start(f, key, "--in", "2s", amount, id, &existing), 0);
    assert_int_equal(existing, 1);
    if (first[0])
        assert_string_equal(id, first);
    json_t *st = ofx_wait_final(f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    assert_once(f, id);
    assert_int_equal(ofx_stop_sagad(f), 0);
}

static void crash_windows(void **state)
{
    ofx *f = *state;
    crash_at(f, "engine.after_schedule_commit", "301");
    crash_at(f, "engine.before_fire_commit", "302");
    crash_at(f, "engine.after_fire_commit", "303");
    assert_int_equal(ofx_books_balanced(f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(fires_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(type_removed_before_it_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_windows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
