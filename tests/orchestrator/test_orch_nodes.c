/*
 * test_orch_nodes — several sagad nodes on one PostgreSQL database
 * (docs/SCALE-OUT.md), each a real process, on a private server the test
 * starts (tests/support/pg_cluster.h), with the four real participants.
 *
 *   takeover        a node SIGKILLed with sagas in flight: the other node
 *                   claims them once its lease expires and finishes them,
 *                   every participant effect once.
 *   fencing         a node SIGSTOPped longer than its lease: the other claims
 *                   its sagas; after SIGCONT the paused node finds its lease
 *                   lost, drops them, joins again, keeps serving, and nothing
 *                   is done twice.
 *   client keys     the same key started on two nodes, one after the other and
 *                   at once: one saga, the same id from both. An immediate
 *                   start on one node and a scheduled start on the other
 *                   with one key (store_pg.c F6): first with node a's insert
 *                   held after its check while node b commits the other
 *                   kind, both ways; then 24 keys sent to both at once. Each
 *                   key holds one saga or scheduled start, both clients
 *                   were told its id, and every such id runs, once.
 *   any node        status, list and stats on one node see the sagas of the
 *                   other; abort on a node takes the saga over from the other.
 *   cancel race     a cancel on node b beats node a's firing of the start
 *                   (held mid-round): node a logs that it was cancelled, the
 *                   start never runs.
 *   scheduled       starts scheduled on both nodes, due at the same moment:
 *                   both nodes claim due starts (store_pg.c F7), each start
 *                   fires once; starts scheduled on a node SIGKILLed before
 *                   their time fire on the other.
 *   database faults the server stopped with sagas in flight and started again:
 *                   every saga finishes, each effect once; sagad started while
 *                   the server is down waits and serves once it is up; a
 *                   missing database is a clear error naming it.
 *
 * Payment is paused (SIGSTOP) to hold sagas in flight at charge_payment: its
 * requests time out and are retried, so the sagas stay RUNNING until it is
 * resumed, whatever the node running them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orch_fixture.h"
#include "pg_cluster.h"
#include <libpq-fe.h>
#include "util.h"

#define LEASE_MS 2000
#define N_NODES  2

/* The fixture drives one sagad (f->sagad, f->cfg); each node is swapped in
 * to be driven. nodes[0] starts as the fixture's own. */
typedef struct {
    ofx f;
    ofx_proc node[N_NODES];
    char *node_cfg[N_NODES];
    int current;
} cluster;

static void use_node(cluster *c, int i)
{
    if (c->current == i)
        return;
    c->node[c->current] = c->f.sagad;
    c->node_cfg[c->current] = c->f.cfg;
    c->f.sagad = c->node[i];
    c->f.cfg = c->node_cfg[i];
    c->current = i;
}

/* node 1's files: the same orchestrator file with its own admin socket and
 * node name. */
static int add_second_node(cluster *c)
{
    ofx *f = &c->f;
    char *text = th_read_file(f->cfg);
    if (text == NULL)
        return -1;
    char *url = th_ipc_url(f->dir, "sagad-b");
    char *at = strstr(text, f->sagad.url);
    if (url == NULL || at == NULL)
        return -1;
    *at = '\0';
    char *cfg_b =
        util_asprintf("%s%s%snode_name = \"node-b\";\n", text, url, at + strlen(f->sagad.url));
    c->node_cfg[1] = th_path(f->dir, "sagad-b.cfg");
    int rc = th_write_file(c->node_cfg[1], cfg_b);
    c->node[1].name = "sagad-b";
    c->node[1].url = url;
    c->node[1].db = util_strdup(f->sagad.db);
    c->node[1].log = th_path(f->dir, "sagad-b.log");
    free(text);
    free(cfg_b);
    return rc;
}

static int setup(void **state)
{
    cluster *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    *state = c;
    setenv("SAGA_TEST_DATABASE", "postgresql", 1);
    ofx_opts o = {.timeout_ms = 400, .action_attempts = 1000};
    if (ofx_init(&c->f, &o) != 0)
        return -1;
    if (add_second_node(c) != 0)
        return -1;
    char *text = th_read_file(c->f.cfg);
    char *with = text ? util_asprintf("%snode_name = \"node-a\";\n", text) : NULL;
    int rc = with ? th_write_file(c->f.cfg, with) : -1;
    free(text);
    free(with);
    if (rc != 0)
        return -1;
    for (int i = 0; i < OFX_N_SVC; i++)
        if (ofx_start_svc(&c->f, i, NULL) != 0)
            return -1;
    for (int i = N_NODES - 1; i >= 0; i--) {
        use_node(c, i);
        if (ofx_start_sagad(&c->f, NULL) != 0)
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    cluster *c = *state;
    if (c == NULL)
        return 0;
    if (c->f.svc[SVC_PAYMENT].pid > 0)
        kill(c->f.svc[SVC_PAYMENT].pid, SIGCONT);
    for (int i = 0; i < N_NODES; i++) {
        use_node(c, i);
        if (c->f.sagad.pid > 0)
            kill(c->f.sagad.pid, SIGCONT);
        if (i != 0) {
            ofx_kill_sagad(&c->f);
            free(c->f.sagad.url);
            free(c->f.sagad.db);
            free(c->f.sagad.log);
            free(c->f.cfg);
        }
    }
    use_node(c, 0);
    ofx_destroy(&c->f);
    free(c);
    return 0;
}

/* Starts a saga on node i that completes once payment answers. */
static void start_on(cluster *c, int i, const char *key, char id[37])
{
    use_node(c, i);
    assert_int_equal(
        ofx_start_order(&c->f, key, "alice", "WIDGET-1", "1", "100", "paris", id, NULL, NULL), 0);
}

static void pause_payment(cluster *c, int sig)
{
    assert_int_equal(kill(c->f.svc[SVC_PAYMENT].pid, sig), 0);
}

/* Every saga COMPLETED, and each took exactly one charge. */
static void assert_all_completed_once(cluster *c, char (*ids)[37], int n)
{
    for (int i = 0; i < n; i++) {
        json_t *st = ofx_wait_final(&c->f, ids[i], OFX_WAIT_MS);
        assert_non_null(st);
        OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
        json_decref(st);
        assert_int_equal(
            ofx_sql(&c->f, SVC_PAYMENT, "SELECT count(*) FROM charges WHERE saga_id = %Q", ids[i]),
            1);
        assert_int_equal(
            ofx_sql(&c->f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", ids[i]), 1);
    }
    assert_int_equal(ofx_books_balanced(&c->f), 0);
}

static int log_has(cluster *c, int i, const char *needle)
{
    use_node(c, i);
    char *text = th_read_file(c->f.sagad.log);
    int found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}

#define N_SAGAS 8

static void takeover_after_sigkill(void **state)
{
    cluster *c = *state;
    char ids[N_SAGAS][37];
    pause_payment(c, SIGSTOP);
    for (int i = 0; i < N_SAGAS; i++) {
        char key[32];
        snprintf(key, sizeof key, "kill-%d", i);
        start_on(c, 0, key, ids[i]);
    }
    use_node(c, 0);
    ofx_kill_sagad(&c->f);
    pause_payment(c, SIGCONT);
    use_node(c, 1); /* node b, which never ran them, finishes them */
    assert_all_completed_once(c, ids, N_SAGAS);
    assert_true(log_has(c, 1, "took over"));
    /* every one of them is node b's now */
    int64_t owned = -1;
    assert_int_equal(
        pgc_sql_int(c->f.sagad.db, &owned, "SELECT count(*) FROM sagas WHERE owner = 'node-b'"), 0);
    assert_int_equal(owned, N_SAGAS);
}

/* A clean stop (SIGTERM) hands the node's sagas over at once: it fences
 * itself (store_node_leave), so the other node claims them at its next pass,
 * and a restart under the same name joins without waiting out its lease. */
static void clean_stop_hands_over(void **state)
{
    cluster *c = *state;
    char ids[4][37];
    pause_payment(c, SIGSTOP);
    for (int i = 0; i < 4; i++) {
        char key[32];
        snprintf(key, sizeof key, "leave-%d", i);
        start_on(c, 0, key, ids[i]);
    }
    use_node(c, 0);
    assert_int_equal(ofx_stop_sagad(&c->f), 0);
    assert_true(log_has(c, 0, "node 'node-a' left"));
    assert_int_equal(ofx_start_sagad(&c->f, NULL), 0);
    assert_false(log_has(c, 0, "held by a live lease"));
    pause_payment(c, SIGCONT);
    use_node(c, 1);
    assert_all_completed_once(c, ids, 4);
}

static void paused_node_is_fenced(void **state)
{
    cluster *c = *state;
    char ids[N_SAGAS][37];
    pause_payment(c, SIGSTOP);
    for (int i = 0; i < N_SAGAS; i++) {
        char key[32];
        snprintf(key, sizeof key, "pause-%d", i);
        start_on(c, 0, key, ids[i]);
    }
    use_node(c, 0);
    pid_t a = c->f.sagad.pid;
    assert_int_equal(kill(a, SIGSTOP), 0);
    /* node b claims them once node a's lease has expired */
    use_node(c, 1);
    int64_t claimed = 0;
    for (int tries = 0; tries < 300 && claimed < N_SAGAS; tries++) {
        usleep(100 * 1000);
        assert_int_equal(pgc_sql_int(c->f.sagad.db, &claimed,
                                     "SELECT count(*) FROM sagas WHERE owner = 'node-b'"),
                         0);
    }
    assert_int_equal(claimed, N_SAGAS);
    assert_int_equal(kill(a, SIGCONT), 0);
    /* a finds its lease lost before anything else, and serves on */
    for (int tries = 0; tries < 300 && !log_has(c, 0, "lost its database lease"); tries++)
        usleep(100 * 1000);
    assert_true(log_has(c, 0, "lost its database lease"));
    pause_payment(c, SIGCONT);
    use_node(c, 1);
    assert_all_completed_once(c, ids, N_SAGAS);
    use_node(c, 0);
    char *out = NULL;
    assert_int_equal(ofx_ctl(&c->f, &out, "stats", NULL), 0);
    free(out);
    assert_true(log_has(c, 0, "joined as node 'node-a'"));
    /* No effect was repeated: each charge request of the paused node that
     * came back later was answered from payment's record. */
    assert_int_equal(ofx_sql(&c->f, SVC_PAYMENT, "SELECT count(*) FROM charges"), N_SAGAS);
}

/* The same client key on both nodes: one after the other, then at once. */
static void client_key_is_unique_across_nodes(void **state)
{
    cluster *c = *state;
    char id_a[37], id_b[37];
    int existing = 0;
    start_on(c, 0, "same-key", id_a);
    use_node(c, 1);
    assert_int_equal(ofx_start_order(&c->f, "same-key", "alice", "WIDGET-1", "1", "100", "paris",
                                     id_b, &existing, NULL),
                     0);
    assert_string_equal(id_a, id_b);
    assert_true(existing);
    /* At once: two sagactl processes, one per node, for each of 10 keys. */
    for (int k = 0; k < 10; k++) {
        char key[32], outs[2][300];
        snprintf(key, sizeof key, "race-%d", k);
        pid_t pid[2];
        char *files[2];
        for (int i = 0; i < 2; i++) {
            use_node(c, i);
            files[i] = th_path(c->f.dir, i ? "race-b.out" : "race-a.out");
            const char *args[] = {"--url",      c->f.sagad.url,      "--json",
                                  "start",      "order_fulfillment", "--key",
                                  key,          "customer=alice",    "sku=WIDGET-1",
                                  "quantity=1", "amount=100",        "destination=paris",
                                  NULL};
            unlink(files[i]);
            assert_int_equal(th_spawn("sagactl", args, NULL, files[i], &pid[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
            int status = 0;
            assert_int_equal(th_wait_exit(pid[i], OFX_CTL_MS, &status), 0);
            char *text = th_read_file(files[i]);
            assert_non_null(text);
            json_t *doc = tj_parse(text);
            if (doc == NULL || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                print_message("node %d: %s\n", i, text);
            assert_non_null(doc);
            snprintf(outs[i], sizeof outs[i], "%s",
                     tj_str(doc, "saga_id") ? tj_str(doc, "saga_id") : "");
            json_decref(doc);
            free(text);
            free(files[i]);
        }
        assert_true(outs[0][0] != '\0');
        assert_string_equal(outs[0], outs[1]);
        int64_t n = -1;
        assert_int_equal(pgc_sql_int(c->f.sagad.db, &n,
                                     "SELECT count(*) FROM sagas WHERE client_key = '%s'", key),
                         0);
        assert_int_equal(n, 1);
    }
}

/* Reads on one node see the other's sagas; abort on one takes the saga over. */
static void any_node_answers(void **state)
{
    cluster *c = *state;
    char id[37];
    pause_payment(c, SIGSTOP);
    start_on(c, 0, "other-node", id);
    use_node(c, 1);
    json_t *st = ofx_status(&c->f, id);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "RUNNING");
    json_decref(st);
    char *out = NULL;
    assert_int_equal(ofx_ctl(&c->f, &out, "list", NULL), 0);
    assert_non_null(strstr(out, id));
    free(out);
    /* abort on node b: b takes it over from a, which drops it */
    assert_int_equal(ofx_ctl(&c->f, &out, "abort", id, "--reason", "test", NULL), 0);
    free(out);
    pause_payment(c, SIGCONT);
    st = ofx_wait_final(&c->f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPENSATED");
    json_decref(st);
    int64_t owner_b = 0;
    assert_int_equal(pgc_sql_int(c->f.sagad.db, &owner_b,
                                 "SELECT count(*) FROM sagas WHERE id = '%s' AND owner = 'node-b'",
                                 id),
                     0);
    assert_int_equal(owner_b, 1);
    assert_int_equal(ofx_books_balanced(&c->f), 0);
    /* --url with both nodes: the first does not answer (it is stopped), the
     * second does */
    use_node(c, 0);
    ofx_kill_sagad(&c->f);
    char *urls = util_asprintf("%s,%s", c->f.sagad.url, c->node[1].url);
    char *saved = c->f.sagad.url;
    c->f.sagad.url = urls;
    int rc = ofx_ctl(&c->f, &out, "status", id, NULL);
    c->f.sagad.url = saved;
    if (rc != 0)
        print_message("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "trying the next node"));
    free(out);
    free(urls);
}

/* The server stopped with sagas in flight, then started again. */
static void database_restart_loses_nothing(void **state)
{
    cluster *c = *state;
    char ids[N_SAGAS][37];
    for (int i = 0; i < N_SAGAS; i++) {
        char key[32];
        snprintf(key, sizeof key, "restart-%d", i);
        start_on(c, i % 2, key, ids[i]);
    }
    pg_cluster *pg = ofx_postgresql_cluster();
    assert_non_null(pg);
    assert_int_equal(pgc_stop_server(pg), 0);
    usleep(500 * 1000);
    assert_int_equal(pgc_start_server(pg), 0);
    use_node(c, 1);
    assert_all_completed_once(c, ids, N_SAGAS);
    /* both nodes still serve */
    for (int i = 0; i < N_NODES; i++) {
        use_node(c, i);
        char *out = NULL;
        assert_int_equal(ofx_ctl(&c->f, &out, "stats", NULL), 0);
        free(out);
    }
}

/* sagad started while the server is down waits for it; a database that does
 * not exist is refused at once, by name. */
static void database_down_at_start(void **state)
{
    cluster *c = *state;
    pg_cluster *pg = ofx_postgresql_cluster();
    use_node(c, 0);
    ofx_kill_sagad(&c->f);
    assert_int_equal(pgc_stop_server(pg), 0);
    const char *args[] = {"--config", c->f.cfg, NULL};
    assert_int_equal(th_spawn("sagad", args, NULL, c->f.sagad.log, &c->f.sagad.pid), 0);
    for (int tries = 0; tries < 100 && !log_has(c, 0, "does not answer"); tries++)
        usleep(100 * 1000);
    assert_true(log_has(c, 0, "does not answer"));
    assert_int_equal(pgc_start_server(pg), 0);
    int dialed = th_wait_dial(c->f.sagad.url, c->f.sagad.pid, OFX_START_MS);
    if (dialed != 0)
        ofx_print_log_tail(&c->f.sagad, 30);
    assert_int_equal(dialed, 0);
    char id[37];
    start_on(c, 0, "after-down", id);
    json_t *st = ofx_wait_final(&c->f, id, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);

    /* A database that does not exist: exit 1 at once, naming it. */
    char *text = th_read_file(c->f.cfg);
    char *at = strstr(text, c->f.sagad.db);
    assert_non_null(at);
    char *q = strchr(at, '?');
    *at = '\0';
    char *bad = util_asprintf("%spostgresql:///no_such_db%s", text, q);
    char *bad_cfg = th_path(c->f.dir, "bad.cfg");
    char *bad_log = th_path(c->f.dir, "bad.log");
    assert_int_equal(th_write_file(bad_cfg, bad), 0);
    const char *bad_args[] = {"--config", bad_cfg, NULL};
    pid_t pid;
    int status = 0;
    assert_int_equal(th_spawn("sagad", bad_args, NULL, bad_log, &pid), 0);
    assert_int_equal(th_wait_exit(pid, OFX_START_MS, &status), 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char *log = th_read_file(bad_log);
    assert_non_null(log);
    assert_non_null(strstr(log, "database \"no_such_db\" does not exist"));
    free(log);
    free(text);
    free(bad);
    free(bad_cfg);
    free(bad_log);
}

/* How many times needle occurs in node i's log. */
static int log_count(cluster *c, int i, const char *needle)
{
    use_node(c, i);
    char *text = th_read_file(c->f.sagad.log);
    int n = 0;
    for (const char *p = text; p != NULL && (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(text);
    return n;
}

#define N_SCHED        10
#define N_SCHED_KILLED 4

static void scheduled_start_fires_once(void **state)
{
    cluster *c = *state;
    char ids[N_SCHED + N_SCHED_KILLED][37];
    for (int i = 0; i < N_SCHED + N_SCHED_KILLED; i++) {
        /* The last ones on node-a, which dies before their time. */
        use_node(c, i < N_SCHED ? i % 2 : 0);
        char key[64], *text = NULL;
        snprintf(key, sizeof key, "sched/nodes/%d", i);
        assert_int_equal(ofx_ctl(&c->f, &text, "--json", "start", "order_fulfillment", "--key", key,
                                 "--in", "5s", "customer=alice", "sku=WIDGET-1", "quantity=1",
                                 "amount=100", "destination=paris", NULL),
                         0);
        json_t *doc = tj_parse(text);
        assert_non_null(tj_str(doc, "saga_id"));
        snprintf(ids[i], sizeof ids[i], "%s", tj_str(doc, "saga_id"));
        json_decref(doc);
        free(text);
    }
    /* Whichever node claims a start fires it; each is listed on both. */
    use_node(c, 1);
    char *out = NULL;
    assert_int_equal(ofx_ctl(&c->f, &out, "list", "--state", "scheduled", NULL), 0);
    free(out);
    use_node(c, 0);
    ofx_kill_sagad(&c->f);
    use_node(c, 1);
    assert_all_completed_once(c, ids, N_SCHED + N_SCHED_KILLED);
    int fired = 0;
    for (int i = 0; i < N_SCHED + N_SCHED_KILLED; i++) {
        json_t *h = ofx_history(&c->f, ids[i]);
        assert_non_null(h);
        assert_int_equal(ofx_history_count(h, "saga_scheduled", NULL, NULL), 1);
        json_decref(h);
    }
    for (int i = 0; i < N_NODES; i++)
        fired += log_count(c, i, "started: scheduled for");
    /* Node-a may have fired some before it died; none fired twice. */
    assert_int_equal(fired, N_SCHED + N_SCHED_KILLED);
}

/* Spawns sagactl start of key on node i (--in 2s when scheduled), its
 * output into *file (the caller frees it). */
static pid_t spawn_start(cluster *c, int i, const char *key, int scheduled, char **file)
{
    char name[64];
    snprintf(name, sizeof name, "%s-%d.out", key, i);
    use_node(c, i);
    *file = th_path(c->f.dir, name);
    const char *args[16] = {
        "--url", c->f.sagad.url, "--json", "start", "order_fulfillment", "--key", key};
    int n = 7;
    if (scheduled) {
        args[n++] = "--in";
        args[n++] = "2s";
    }
    const char *input[] = {"customer=alice", "sku=WIDGET-1", "quantity=1", "amount=100",
                           "destination=paris"};
    for (size_t j = 0; j < sizeof input / sizeof input[0]; j++)
        args[n++] = input[j];
    args[n] = NULL;
    unlink(*file);
    pid_t pid = -1;
    assert_int_equal(th_spawn("sagactl", args, NULL, *file, &pid), 0);
    return pid;
}

/* Waits for a spawn_start; the saga id it was told into id, *existing. */
static void wait_start(pid_t pid, char *file, char id[37], int *existing)
{
    int status = 0;
    assert_int_equal(th_wait_exit(pid, OFX_CTL_MS, &status), 0);
    char *text = th_read_file(file);
    assert_non_null(text);
    json_t *doc = tj_parse(text);
    if (doc == NULL || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_message("%s: %s\n", file, text);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_non_null(doc);
    assert_non_null(tj_str(doc, "saga_id"));
    snprintf(id, 37, "%s", tj_str(doc, "saga_id"));
    *existing = (int)tj_int(doc, "existing", 0) == 1;
    json_decref(doc);
    free(text);
    free(file);
}

/* The key names exactly one saga or scheduled start (one snapshot): id.
 * Returns 1 when it is a scheduled start still. */
static int assert_key_holds(cluster *c, const char *key, const char *id)
{
    int64_t n = -1;
    assert_int_equal(pgc_sql_int(c->f.sagad.db, &n,
                                 "SELECT count(*) FROM (SELECT id FROM sagas WHERE client_key = "
                                 "'%s' UNION ALL SELECT id FROM scheduled_starts WHERE "
                                 "client_key = '%s') k",
                                 key, key),
                     0);
    assert_int_equal(n, 1);
    char *held = pgc_sql_text(c->f.sagad.db,
                              "SELECT id FROM sagas WHERE client_key = '%s' UNION ALL "
                              "SELECT id FROM scheduled_starts WHERE client_key = '%s'",
                              key, key);
    assert_non_null(held);
    assert_string_equal(held, id);
    free(held);
    int64_t sched = 0;
    assert_int_equal(pgc_sql_int(c->f.sagad.db, &sched,
                                 "SELECT count(*) FROM scheduled_starts WHERE id = '%s'", id),
                     0);
    return sched > 0;
}

/* Both nodes again with a lease of lease_ms (lock_timeout is a quarter of it). */
static void restart_nodes_with_lease(cluster *c, int lease_ms)
{
    for (int i = 0; i < N_NODES; i++) {
        use_node(c, i);
        assert_int_equal(ofx_stop_sagad(&c->f), 0);
        char *text = th_read_file(c->f.cfg);
        assert_non_null(text);
        char *at = strstr(text, "lease_ms = ");
        assert_non_null(at);
        char *end = strchr(at, ';');
        assert_non_null(end);
        *at = '\0';
        char *with = util_asprintf("%slease_ms = %d%s", text, lease_ms, end);
        assert_int_equal(th_write_file(c->f.cfg, with), 0);
        free(with);
        free(text);
    }
    for (int i = N_NODES - 1; i >= 0; i--) {
        use_node(c, i);
        assert_int_equal(ofx_start_sagad(&c->f, NULL), 0);
    }
}

/* Both nodes stopped cleanly: exit 0 (under ASan: no error, no leak in
 * what they ran). */
static void stop_nodes_cleanly(cluster *c)
{
    for (int i = 0; i < N_NODES; i++) {
        use_node(c, i);
        assert_int_equal(ofx_stop_sagad(&c->f), 0);
    }
}

/* One client key, an immediate start on one node and a start scheduled on
 * the other, sent at once (store_pg.c F6): whichever reserved the key first
 * is the key's one saga, and both clients are told its id; the scheduled
 * winners then fire and run (a promised id is never dropped).
 * First the worst interleaving, forced: node a's round is held (a table lock
 * the test takes) after node a checked that the key is free and before its
 * insert, while node b stores the other kind of start with the key. Then
 * many keys sent to both nodes at once. */
#define N_KEY_RACES 24
#define RACE_BATCH  6

static void immediate_and_scheduled_key_race(void **state)
{
    cluster *c = *state;
    char ids[N_KEY_RACES + 2][37];
    int n_ids = 0, scheduled_won = 0;
    /* A lease long enough for node a to stay held without being fenced;
     * lock_timeout, a quarter of it, long enough for node b to answer. */
    restart_nodes_with_lease(c, 12000);
    /* The test holds node a's insert with an uncommitted row of the same
     * key in the same table: its unique index makes node a's insert wait
     * for the test's transaction, which rolls back once node b answered. */
    static const char *const held_table[2] = {"sagas", "scheduled_starts"};
    for (int t = 0; t < 2; t++) {
        char key[32], *files[2], got[2][37];
        int existing[2];
        snprintf(key, sizeof key, "held-%s", held_table[t]);
        PGconn *hold = PQconnectdb(c->f.sagad.db);
        assert_int_equal(PQstatus(hold), CONNECTION_OK);
        char *sql = util_asprintf(
            t == 0 ? "BEGIN; INSERT INTO sagas (id, type, state, failed_phase, client_key, "
                     "input, cursor, n_steps, created_at_ms, updated_at_ms, def_version, owner, "
                     "owner_epoch, deadline_at_ms) VALUES ('held', 'held', 1, 0, '%s', '{}', 0, "
                     "0, 0, 0, 0, 'test', 0, 0)"
                   : "BEGIN; INSERT INTO scheduled_starts (id, type, client_key, input, "
                     "start_at_ms, deadline_ms, created_at_ms) VALUES ('held', 'held', '%s', "
                     "'{}', 0, 0, 0)",
            key);
        PGresult *res = PQexec(hold, sql);
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        free(sql);
        /* t = 0: node a's immediate start waits to insert its saga;
         * t = 1: node a's scheduled start waits to insert its row. */
        pid_t a = spawn_start(c, 0, key, t == 1, &files[0]);
        int64_t waiting = 0;
        for (int tries = 0; tries < 1000 && waiting == 0; tries++) {
            usleep(20 * 1000);
            assert_int_equal(pgc_sql_int(c->f.sagad.db, &waiting,
                                         "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "wait_event_type = 'Lock' AND query LIKE "
                                         "'WITH i AS (INSERT INTO %s %%'",
                                         held_table[t]),
                             0);
        }
        assert_true(waiting > 0);
        /* Node a has checked the key; node b takes the other path with it. */
        pid_t b = spawn_start(c, 1, key, t == 0, &files[1]);
        wait_start(b, files[1], got[1], &existing[1]);
        res = PQexec(hold, "ROLLBACK");
        assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);
        PQfinish(hold);
        wait_start(a, files[0], got[0], &existing[0]);
        if (strcmp(got[0], got[1]) != 0)
            print_message("key %s: node a said %s, node b said %s\n", key, got[0], got[1]);
        assert_string_equal(got[0], got[1]);
        assert_true(existing[0] != existing[1]);
        scheduled_won += assert_key_holds(c, key, got[0]);
        snprintf(ids[n_ids++], sizeof ids[0], "%s", got[0]);
    }
    /* Held, node a's round was refused and its start answered with node
     * b's: the immediate one, then the scheduled one. */
    assert_true(log_has(c, 0, "not started: client key taken by"));
    assert_true(log_has(c, 0, "not stored: client key taken on another sagad node"));
    /* Then at once, RACE_BATCH keys at a time; the kinds alternate nodes. */
    for (int b = 0; b < N_KEY_RACES; b += RACE_BATCH) {
        pid_t pid[RACE_BATCH][2];
        char *files[RACE_BATCH][2];
        for (int k = b; k < b + RACE_BATCH; k++)
            for (int i = 0; i < 2; i++) {
                char key[32];
                snprintf(key, sizeof key, "mixed-%d", k);
                pid[k - b][i] = spawn_start(c, i, key, (i + k) % 2 == 0, &files[k - b][i]);
            }
        for (int k = b; k < b + RACE_BATCH; k++) {
            char key[32], got[2][37];
            int existing[2];
            snprintf(key, sizeof key, "mixed-%d", k);
            for (int i = 0; i < 2; i++)
                wait_start(pid[k - b][i], files[k - b][i], got[i], &existing[i]);
            if (strcmp(got[0], got[1]) != 0)
                print_message("key %s: node a said %s, node b said %s\n", key, got[0], got[1]);
            assert_string_equal(got[0], got[1]);
            assert_true(existing[0] != existing[1]);
            scheduled_won += assert_key_holds(c, key, got[0]);
            snprintf(ids[n_ids++], sizeof ids[0], "%s", got[0]);
        }
    }
    print_message("%d of %d keys went to the scheduled start\n", scheduled_won, n_ids);
    /* The scheduled winners fire; every id runs, once. */
    use_node(c, 0);
    assert_all_completed_once(c, ids, n_ids);
    stop_nodes_cleanly(c);
}

/* A cancel on node b beats node a's firing of the same start (store_pg.c
 * F7): node a claimed it and its firing round is held (the test holds an
 * uncommitted saga row of the start's client key, on whose unique index the
 * saga's insert waits, after the round's delete locked the start's row);
 * node b's cancel waits for that row, deletes it once node a's attempt gives
 * up, and is answered; node a's next attempt is refused, and node a says
 * that the start was cancelled, not that a saga was taken over. The start
 * never runs. */
static void cancel_beats_firing(void **state)
{
    cluster *c = *state;
    restart_nodes_with_lease(c, 12000);
    use_node(c, 1);
    pid_t b = c->f.sagad.pid;
    assert_int_equal(kill(b, SIGSTOP), 0); /* node a alone claims it (far within b's lease) */
    use_node(c, 0);
    char id[37], *text = NULL;
    assert_int_equal(ofx_ctl(&c->f, &text, "--json", "start", "order_fulfillment", "--key",
                             "cancel-race", "--in", "2s", "customer=alice", "sku=WIDGET-1",
                             "quantity=1", "amount=100", "destination=paris", NULL),
                     0);
    json_t *doc = tj_parse(text);
    assert_non_null(tj_str(doc, "saga_id"));
    snprintf(id, sizeof id, "%s", tj_str(doc, "saga_id"));
    json_decref(doc);
    free(text);
    PGconn *hold = PQconnectdb(c->f.sagad.db);
    assert_int_equal(PQstatus(hold), CONNECTION_OK);
    PGresult *res =
        PQexec(hold, "BEGIN; INSERT INTO sagas (id, type, state, failed_phase, client_key, input, "
                     "cursor, n_steps, created_at_ms, updated_at_ms, def_version, owner, "
                     "owner_epoch, deadline_at_ms) VALUES ('held', 'held', 1, 0, 'cancel-race', "
                     "'{}', 0, 0, 0, 0, 0, 'test', 0, 0)");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    int64_t waiting = 0;
    for (int tries = 0; tries < 1000 && waiting == 0; tries++) {
        usleep(20 * 1000);
        assert_int_equal(pgc_sql_int(c->f.sagad.db, &waiting,
                                     "SELECT count(*) FROM pg_stat_activity WHERE "
                                     "wait_event_type = 'Lock' AND query LIKE "
                                     "'WITH i AS (INSERT INTO sagas %%'"),
                         0);
    }
    assert_true(waiting > 0); /* node a is firing it */
    assert_int_equal(kill(b, SIGCONT), 0);
    use_node(c, 1);
    char *out = NULL;
    int rc = ofx_ctl(&c->f, &out, "cancel", id, NULL);
    if (rc != 0)
        print_message("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    res = PQexec(hold, "ROLLBACK");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(hold);
    for (int tries = 0; tries < 500 && !log_has(c, 0, "was cancelled (on this node or another)");
         tries++)
        usleep(20 * 1000);
    assert_true(log_has(c, 0, "was cancelled (on this node or another) while it was being fired"));
    assert_int_equal(log_count(c, 0, "taken over by another node"), 0);
    assert_int_equal(log_count(c, 0, "started: scheduled for"), 0);
    /* Never ran: no saga, no start, no effect; node a serves on. */
    int64_t n = -1;
    assert_int_equal(pgc_sql_int(c->f.sagad.db, &n,
                                 "SELECT (SELECT count(*) FROM sagas WHERE id = '%s') + (SELECT "
                                 "count(*) FROM scheduled_starts WHERE id = '%s')",
                                 id, id),
                     0);
    assert_int_equal(n, 0);
    assert_int_equal(
        ofx_sql(&c->f, SVC_ORDER, "SELECT count(*) FROM orders WHERE saga_id = %Q", id), 0);
    char after[37];
    start_on(c, 0, "after-cancel-race", after);
    json_t *st = ofx_wait_final(&c->f, after, OFX_WAIT_MS);
    assert_non_null(st);
    OFX_ASSERT_STR(tj_str(st, "state"), "COMPLETED");
    json_decref(st);
    stop_nodes_cleanly(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(takeover_after_sigkill, setup, teardown),
        cmocka_unit_test_setup_teardown(paused_node_is_fenced, setup, teardown),
        cmocka_unit_test_setup_teardown(clean_stop_hands_over, setup, teardown),
        cmocka_unit_test_setup_teardown(client_key_is_unique_across_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(any_node_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(database_restart_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(database_down_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(scheduled_start_fires_once, setup, teardown),
        cmocka_unit_test_setup_teardown(immediate_and_scheduled_key_race, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_beats_firing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
