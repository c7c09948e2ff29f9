/*
 * Versioned saga definitions, end to end (docs/CONFIG.md#definition-versions):
 * real sagad, sagactl and participants (orch_fixture.h), plus a second
 * inventory service, "inventory2", declared in the orchestrator file.
 *
 * 100 sagas wait at reserve_stock: inventory processes every request but its
 * replies are dropped (--faults drop_reply=1), so each saga keeps retrying
 * with a key inventory has already recorded. The saga file is then changed:
 * reserve_stock moves to inventory2 and loses its order_id input. A broken
 * file is refused first (file:line, nothing changes), the new one is loaded
 * by `sagactl reload` and by SIGHUP, sagad is restarted, and inventory is
 * restarted without faults. Every old saga must complete exactly once on
 * the definition it started with (its reservation made by inventory, none
 * by inventory2), and new sagas must run on the new version (inventory2).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "orch_fixture.h"
#include "util.h"

#define N_OLD 100
#define N_NEW 5

static const char saga_v2_fmt[] =
    "# reserve_stock moved to inventory2, without order_id\n"
    "name = \"order_fulfillment\";\n"
    "inputs = [\"customer\", \"sku\", \"quantity\", \"amount\", \"destination\"];\n"
    "steps = (\n"
    "  { name = \"create_order\"; participant = \"order\"; action = \"create\";\n"
    "    compensation = \"cancel\"; inputs = [\"customer\", \"sku\", \"quantity\", \"amount\"];\n"
    "    outputs = [\"order_id\"]; },\n"
    "  { name = \"charge_payment\"; participant = \"payment\"; action = \"charge\";\n"
    "    compensation = \"refund\"; inputs = [\"customer\", \"amount\", \"order_id\"];\n"
    "    outputs = [\"charge_id\"]; },\n"
    "  { name = \"reserve_stock\"; participant = \"inventory2\"; action = \"reserve\";\n"
    "    compensation = \"release\"; inputs = [\"sku\", \"quantity\"];\n"
    "    outputs = [\"reservation_id\"]; },\n"
    "  { name = \"schedule_shipping\"; participant = \"shipping\"; action = \"schedule\";\n"
    "    compensation = \"cancel\"; inputs = [\"destination\", \"order_id\", \"customer\"];\n"
    "    outputs = [\"shipment_id\"]; },\n"
    "  { name = \"approve_order\"; participant = \"order\"; action = \"approve\";\n"
    "    compensation = \"none\"; inputs = [\"order_id\"];\n"
    "    retry = { max_attempts = 40; }; }\n"
    ");\n";

/* The broken file: line 4 names a participant the orchestrator file lacks. */
static const char saga_broken[] = "name = \"order_fulfillment\";\n"
                                  "inputs = [\"sku\"];\n"
                                  "steps = (\n"
                                  "  { name = \"x\"; participant = \"nowhere\"; action = \"a\";\n"
                                  "    compensation = \"none\"; }\n"
                                  ");\n";

typedef struct {
    ofx f;
    ofx_proc inv2;
    char *saga_file;
} world;

static int start_inventory2(world *w)
{
    char *seed = th_source_path("participants/seeds/inventory.cfg");
    const char *args[] = {"--listen", w->inv2.url, "--db", w->inv2.db, "--seed", seed, NULL};
    int rc = seed ? th_spawn("inventory-svc", args, NULL, w->inv2.log, &w->inv2.pid) : -1;
    free(seed);
    if (rc == 0 && th_wait_dial(w->inv2.url, w->inv2.pid, OFX_START_MS) != 0)
        rc = -1;
    return rc;
}

/* Adds inventory2 to the orchestrator file the fixture wrote. */
static int declare_inventory2(world *w)
{
    char *cfg = th_read_file(w->f.cfg);
    char *at = cfg ? strstr(cfg, "participants = {\n") : NULL;
    if (at == NULL) {
        free(cfg);
        return -1;
    }
    at += strlen("participants = {\n");
    char *text =
        util_asprintf("%.*s  inventory2 = \"%s\";\n%s", (int)(at - cfg), cfg, w->inv2.url, at);
    int rc = text ? th_write_file(w->f.cfg, text) : -1;
    free(cfg);
    free(text);
    return rc;
}

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    *state = w;
    /* Slow retries: 100 sagas retry against a participant that drops every reply. */
    ofx_opts o = {.action_attempts = 1000, .timeout_ms = 300, .max_backoff_ms = 1000};
    if (w == NULL || ofx_init(&w->f, &o) != 0)
        return -1;
    w->inv2.name = "inventory2";
    w->inv2.url = th_ipc_url(w->f.dir, "inventory2");
    w->inv2.db = th_path(w->f.dir, "inventory2.db");
    w->inv2.log = th_path(w->f.dir, "inventory2.log");
    w->saga_file = th_path(w->f.dir, "sagas/order_fulfillment.cfg");
    if (declare_inventory2(w) != 0 || start_inventory2(w) != 0)
        return -1;
    if (ofx_start_svc(&w->f, SVC_ORDER, NULL) != 0 ||
        ofx_start_svc(&w->f, SVC_PAYMENT, NULL) != 0 ||
        ofx_start_svc(&w->f, SVC_INVENTORY, "drop_reply=1") != 0 ||
        ofx_start_svc(&w->f, SVC_SHIPPING, NULL) != 0 || ofx_start_sagad(&w->f, NULL) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    if (w == NULL)
        return 0;
    if (w->inv2.pid > 0)
        th_kill(w->inv2.pid);
    free(w->inv2.url);
    free(w->inv2.db);
    free(w->inv2.log);
    free(w->saga_file);
    ofx_destroy(&w->f);
    free(w);
    return 0;
}

/* sagactl --json ARGS...: the parsed document (exit 0 expected), or NULL. */
static json_t *ctl_json(ofx *f, const char *a, const char *b, const char *c, const char *d)
{
    char *out = NULL;
    int rc = ofx_ctl(f, &out, "--json", a, b, c, d, NULL);
    json_t *doc = rc == 0 && out != NULL ? tj_parse(out) : NULL;
    if (doc == NULL)
        print_message("sagactl --json %s %s: exit %d: %s\n", a, b ? b : "", rc, out ? out : "");
    free(out);
    return doc;
}

/* The participant of step `step` in `sagactl describe` of version (NULL: current). */
static char *described_participant(ofx *f, const char *version, int step)
{
    json_t *d = version ? ctl_json(f, "describe", "order_fulfillment", "--version", version)
                        : ctl_json(f, "describe", "order_fulfillment", NULL, NULL);
    const json_t *steps = d ? json_object_get(d, "steps") : NULL;
    const json_t *st = steps ? json_array_get(steps, (size_t)step) : NULL;
    const char *p = st ? tj_str(st, "participant") : NULL;
    char *copy = p ? util_strdup(p) : NULL;
    json_decref(d);
    return copy;
}

static void old_sagas_finish_on_their_version(void **state)
{
    world *w = *state;
    ofx *f = &w->f;
    static char ids[N_OLD][37];
    for (int i = 0; i < N_OLD; i++) {
        char key[32];
        snprintf(key, sizeof key, "old-%d", i);
        assert_int_equal(
            ofx_start_order(f, key, "alice", "WIDGET-1", "1", "10", "paris", ids[i], NULL, NULL),
            0);
    }
    /* Every old saga's reservation is made by inventory, its reply dropped. */
    for (int tries = 0;; tries++) {
        int64_t n = ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations");
        if (n == N_OLD)
            break;
        assert_true(tries < OFX_WAIT_MS / 100);
        usleep(100 * 1000);
    }
    char *p = described_participant(f, NULL, 2);
    OFX_ASSERT_STR(p, "inventory");
    free(p);

    /* A broken file is refused with its file:line; the old definition stays. */
    assert_int_equal(th_write_file(w->saga_file, saga_broken), 0);
    char *out = NULL;
    assert_int_equal(ofx_ctl(f, &out, "reload", NULL), 1);
    char *where = util_asprintf("%s:4:", w->saga_file);
    if (out == NULL || strstr(out, where) == NULL)
        print_message("reload of a broken file said: %s\n", out ? out : "(nothing)");
    assert_non_null(out);
    assert_non_null(strstr(out, where));
    assert_non_null(strstr(out, "nowhere"));
    free(where);
    free(out);
    p = described_participant(f, NULL, 2);
    OFX_ASSERT_STR(p, "inventory");
    free(p);

    /* The new definition: loaded by sagactl reload, then by SIGHUP too. */
    assert_int_equal(th_write_file(w->saga_file, saga_v2_fmt), 0);
    json_t *r = ctl_json(f, "reload", NULL, NULL, NULL);
    assert_non_null(r);
    json_decref(r);
    p = described_participant(f, NULL, 2);
    OFX_ASSERT_STR(p, "inventory2");
    free(p);
    p = described_participant(f, "1", 2);
    OFX_ASSERT_STR(p, "inventory");
    free(p);
    assert_int_equal(kill(f->sagad.pid, SIGHUP), 0);
    usleep(300 * 1000);
    out = NULL;
    assert_int_equal(ofx_ctl(f, &out, "stats", NULL), 0); /* SIGHUP did not stop it */
    free(out);

    /* types: version 1 holds the 100 old sagas, version 2 is current. */
    json_t *types = ctl_json(f, "types", NULL, NULL, NULL);
    assert_non_null(types);
    const json_t *t0 = json_array_get(types, 0);
    OFX_ASSERT_STR(tj_str(t0, "type"), "order_fulfillment");
    const json_t *versions = json_object_get(t0, "versions");
    assert_int_equal(json_array_size(versions), 2);
    assert_int_equal(tj_int(json_array_get(versions, 0), "running", -1), N_OLD);
    assert_int_equal(tj_int(json_array_get(versions, 0), "current", -1), 0);
    assert_int_equal(tj_int(json_array_get(versions, 1), "current", -1), 1);
    json_decref(types);

    /* A restart reads the pinned versions from the store, not the file. */
    assert_int_equal(ofx_stop_sagad(f), 0);
    assert_int_equal(ofx_start_sagad(f, NULL), 0);
    static char new_ids[N_NEW][37];
    for (int i = 0; i < N_NEW; i++) {
        char key[32];
        snprintf(key, sizeof key, "new-%d", i);
        assert_int_equal(
            ofx_start_order(f, key, "bob", "WIDGET-1", "1", "10", "paris", new_ids[i], NULL, NULL),
            0);
    }
    assert_int_equal(ofx_stop_svc(f, SVC_INVENTORY), 0);
    assert_int_equal(ofx_start_svc(f, SVC_INVENTORY, NULL), 0);

    for (int i = 0; i < N_OLD; i++) {
        json_t *st = ofx_wait_final(f, ids[i], OFX_WAIT_MS * 4);
        assert_non_null(st);
        OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
        OFX_ASSERT_STR(tj_str(ofx_step(st, "reserve_stock"), "participant"), "inventory");
        json_decref(st);
        /* Exactly once, on the old participant, with the old inputs. */
        assert_int_equal(ofx_sql(f, SVC_INVENTORY,
                                 "SELECT count(*) FROM reservations WHERE saga_id = %Q "
                                 "AND state = 'reserved' AND order_id IS NOT NULL",
                                 ids[i]),
                         1);
        assert_int_equal(th_sql_int(w->inv2.db,
                                    "SELECT count(*) FROM pt_idempotency WHERE saga_id = %Q",
                                    ids[i]),
                         0);
    }
    for (int i = 0; i < N_NEW; i++) {
        json_t *st = ofx_wait_final(f, new_ids[i], OFX_WAIT_MS);
        assert_non_null(st);
        OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
        OFX_ASSERT_STR(tj_str(ofx_step(st, "reserve_stock"), "participant"), "inventory2");
        json_decref(st);
        assert_int_equal(th_sql_int(w->inv2.db,
                                    "SELECT count(*) FROM reservations WHERE saga_id = %Q "
                                    "AND order_id IS NULL",
                                    new_ids[i]),
                         1);
        assert_int_equal(ofx_sql(f, SVC_INVENTORY,
                                 "SELECT count(*) FROM reservations WHERE saga_id = %Q",
                                 new_ids[i]),
                         0);
    }
    assert_int_equal(ofx_sql(f, SVC_INVENTORY, "SELECT count(*) FROM reservations"), N_OLD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(old_sagas_finish_on_their_version, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
