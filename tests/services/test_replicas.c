/*
 * test_replicas — two processes of one service on ONE PostgreSQL database
 * (a private cluster, tests/support/pg_cluster.h), for each of the four
 * services: both start with the seed (the second finds it applied and loads
 * nothing), then every key is sent to BOTH replicas at the same moment, and each
 * replica's answer is repeated while it is OUTCOME_RETRY (a serialization
 * or constraint failure of the loser, participant.h). In the end:
 *   - both replicas answer OK with the same result (the same id): one of
 *     them ran the handler, the other replayed its stored reply;
 *   - the service's table holds exactly one effect per key, and the
 *     service's own audit (books, stock) balances.
 * Always on PostgreSQL: it is the replicas' test, not a variant.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fixture.h"
#include "util.h"

#define KEYS     20
#define ATTEMPTS 200 /* RETRY answers one request may get before the test gives up */

typedef struct {
    const char *name;      /* service */
    const char *operation; /* its action */
    const char *params;    /* name=value,... */
    const char *id;        /* the result entry naming the effect */
    const char *effects;   /* SELECT count(*) of the effects */
    const char *audit;     /* SELECT count of violated invariants, or NULL */
} svc_case;

/* One replica's side of one key. */
typedef struct {
    const char *url;
    const char *saga;
    const svc_case *c;
    pthread_barrier_t *start;
    StepReply *reply; /* the last answer (not RETRY unless ATTEMPTS ran out) */
    int rv;
} sender;

static void *send_key(void *arg)
{
    sender *s = arg;
    kvmap params = KVMAP_INIT;
    char key[WIRE_MAX_KEY + 1], list[256];
    snprintf(list, sizeof list, "%s", s->c->params);
    for (char *save = NULL, *kv = strtok_r(list, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        *eq = '\0';
        kv_set(&params, kv, eq + 1);
    }
    fx_key(key, sizeof key, s->saga, "step", PHASE_ACTION);
    pthread_barrier_wait(s->start); /* both replicas get the key at the same moment */
    for (int i = 0; i < ATTEMPTS; i++) {
        th_reply_free(s->reply);
        s->reply = NULL;
        s->rv = th_call(s->url, FX_TIMEOUT_MS, key, s->saga, "step", PHASE_ACTION, s->c->operation,
                        &params, &s->reply);
        if (s->rv != 0 || (int)s->reply->outcome != (int)OUTCOME_RETRY)
            break;
        usleep(1000 * (i < 10 ? i : 10)); /* the winner's transaction commits meanwhile */
    }
    kv_free(&params);
    return NULL;
}

static void replicas_one_effect(const svc_case *c)
{
    fx_svc a, b;
    char *db = fx_pg_database();
    assert_non_null(db);
    assert_int_equal(fx_init(&a, c->name), 0);
    assert_int_equal(fx_init(&b, c->name), 0);
    /* Both on the one database. */
    free(a.db);
    free(b.db);
    a.db = util_strdup(db);
    b.db = db;
    /* Both with the seed: the second finds business rows and loads nothing. */
    assert_int_equal(fx_start(&a, NULL), 0);
    assert_int_equal(fx_start(&b, NULL), 0);

    int replayed = 0;
    for (int k = 0; k < KEYS; k++) {
        char saga[37];
        pthread_barrier_t start;
        pthread_t ta, tb;
        fx_saga_id(saga);
        assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
        sender sa = {.url = a.url, .saga = saga, .c = c, .start = &start};
        sender sb = {.url = b.url, .saga = saga, .c = c, .start = &start};
        assert_int_equal(pthread_create(&ta, NULL, send_key, &sa), 0);
        assert_int_equal(pthread_create(&tb, NULL, send_key, &sb), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&start);
        assert_int_equal(sa.rv, 0);
        assert_int_equal(sb.rv, 0);
        FX_ASSERT_OUTCOME(sa.reply, OUTCOME_OK);
        FX_ASSERT_OUTCOME(sb.reply, OUTCOME_OK);
        /* One ran it, the other replayed its reply: the same effect id. */
        assert_non_null(th_result(sa.reply, c->id));
        assert_string_equal(th_result(sa.reply, c->id), th_result(sb.reply, c->id));
        assert_int_equal(sa.reply->replayed + sb.reply->replayed, 1);
        replayed += sa.reply->replayed + sb.reply->replayed;
        th_reply_free(sa.reply);
        th_reply_free(sb.reply);
    }
    assert_int_equal(replayed, KEYS);
    assert_int_equal(fx_sql_int(&a, "%s", c->effects), KEYS);
    if (c->audit)
        assert_int_equal(fx_sql_int(&a, "%s", c->audit), 0);
    /* One seed, though both replicas were given it. */
    assert_int_equal(fx_sql_int(&a, "SELECT count(*) FROM meta WHERE key = 'seeded_at_ms'"), 1);

    assert_int_equal(fx_stop(&a), 0);
    assert_int_equal(fx_stop(&b), 0);
    fx_destroy(&a);
    fx_destroy(&b);
}

static void test_payment_replicas(void **state)
{
    (void)state;
    static const svc_case c = {"payment",
                               "charge",
                               "customer=alice,amount=7",
                               "charge_id",
                               "SELECT count(*) FROM charges",
                               "SELECT count(*) FROM money_audit WHERE NOT balanced"};
    replicas_one_effect(&c);
}

static void test_inventory_replicas(void **state)
{
    (void)state;
    static const svc_case c = {"inventory",
                               "reserve",
                               "sku=WIDGET-1,quantity=2",
                               "reservation_id",
                               "SELECT count(*) FROM reservations",
                               "SELECT count(*) FROM stock_audit WHERE NOT balanced"};
    replicas_one_effect(&c);
}

static void test_order_replicas(void **state)
{
    (void)state;
    static const svc_case c = {"order",
                               "create",
                               "customer=alice,sku=WIDGET-1,quantity=1,amount=100",
                               "order_id",
                               "SELECT count(*) FROM orders",
                               NULL};
    replicas_one_effect(&c);
}

static void test_shipping_replicas(void **state)
{
    (void)state;
    static const svc_case c = {"shipping",
                               "schedule",
                               "destination=paris,customer=alice",
                               "shipment_id",
                               "SELECT count(*) FROM shipments",
                               NULL};
    replicas_one_effect(&c);
}

/* Holds an ACCESS EXCLUSIVE lock on the service's meta table for 3 s (past
 * the runtime's 2 s lock_timeout), as a replica's long transaction or an
 * operator's session would, then lets go. */
typedef struct {
    PGconn *conn;
} lock_holder;

static void *release_after_3s(void *arg)
{
    lock_holder *h = arg;
    sleep(3);
    PQclear(PQexec(h->conn, "COMMIT"));
    return NULL;
}

/* A replica that starts while another session holds a lock its set-up
 * transaction needs waits and tries again (pt_run), rather than exiting:
 * chaos_replicas_pg lost a restarting replica so ("cannot create the order
 * schema: ... lock timeout"). */
static void test_start_waits_out_a_held_table_lock(void **state)
{
    (void)state;
    fx_svc a, b;
    char *db = fx_pg_database();
    assert_non_null(db);
    assert_int_equal(fx_init(&a, "payment"), 0);
    assert_int_equal(fx_init(&b, "payment"), 0);
    free(a.db);
    free(b.db);
    a.db = util_strdup(db);
    b.db = db;
    assert_int_equal(fx_start(&a, NULL), 0); /* the schema exists */
    assert_int_equal(fx_stop(&a), 0);

    lock_holder h = {PQconnectdb(db)};
    assert_int_equal(PQstatus(h.conn), CONNECTION_OK);
    PGresult *r = PQexec(h.conn, "BEGIN; LOCK TABLE meta IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_after_3s, &h), 0);
    int started = fx_start(&b, NULL); /* first try times out at 2 s, the next one in */
    pthread_join(t, NULL);
    PQfinish(h.conn);
    assert_int_equal(started, 0);
    assert_int_equal(fx_stop(&b), 0);
    fx_destroy(&a);
    fx_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payment_replicas),
        cmocka_unit_test(test_inventory_replicas),
        cmocka_unit_test(test_order_replicas),
        cmocka_unit_test(test_shipping_replicas),
        cmocka_unit_test(test_start_waits_out_a_held_table_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
