/*
 * test_store_pg — what store_pg.c adds for operators, on a private
 * PostgreSQL server (tests/support/pg_cluster.h): the schema upgrade from
 * version 2 (root_cause, as SQLite's 4 -> 5 in test_store) and store_search
 * (id prefix, client key, creation time), whose PostgreSQL statement differs
 * from SQLite's. The rest of the PostgreSQL store is exercised end to end by
 * the *_pg orchestrator tests.
 *
 * Rows are written with SQL, as a sagad of the older schema left them, and
 * read back through store.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cluster.h"
#include "store.h"

typedef struct {
    pg_cluster *pg;
    char *url;
} fixture;

static int setup(void **state)
{
    char err[1024];
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    *state = f;
    f->pg = pgc_start(0, err, sizeof err);
    if (f->pg == NULL) {
        fprintf(stderr, "test_store_pg: no PostgreSQL server: %s\n", err);
        return -1;
    }
    if (pgc_create_db(f->pg, "sagas") != 0 || (f->url = pgc_url(f->pg, "sagas")) == NULL)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f != NULL) {
        pgc_destroy(f->pg);
        free(f->url);
        free(f);
    }
    return 0;
}

static store *open_store(const char *url, int read_only)
{
    char err[512];
    store *st = store_open(url, 0, read_only, err, sizeof err);
    if (st == NULL)
        print_message("store_open: %s\n", err);
    return st;
}

static void make_id(char out[37], int n)
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", n);
}

/* A saga row without steps (n_steps 0), created at `at`, as sagad writes it. */
static void insert_row(const char *url, int n, int state, const char *key, int64_t at,
                       const char *last_error)
{
    char id[37], keyq[64] = "NULL", errq[128] = "NULL";
    make_id(id, n);
    if (key != NULL)
        snprintf(keyq, sizeof keyq, "'%s'", key);
    if (last_error != NULL)
        snprintf(errq, sizeof errq, "'%s'", last_error);
    assert_int_equal(pgc_sql_exec(url,
                                  "INSERT INTO sagas (id, type, state, failed_phase, client_key, "
                                  "input, cursor, n_steps, last_error, created_at_ms, "
                                  "updated_at_ms, def_version, owner, owner_epoch, "
                                  "deadline_at_ms) VALUES ('%s', 'order', %d, 1, %s, '{}', 0, 0, "
                                  "%s, %lld, %lld, 1, '-', 0, 0)",
                                  id, state, keyq, errq, (long long)at, (long long)at + 5),
                     0);
}

/* Version 1 (before root_cause) is upgraded in place: a FAILED saga's last
 * error becomes its root cause; a COMPLETED one (resumed) keeps it there
 * only. A read-only handle refuses the old version until then. */
static void upgrade_from_schema_2(void **state)
{
    fixture *f = *state;
    store *st = open_store(f->url, 0); /* creates the current schema */
    assert_non_null(st);
    store_close(st);
    assert_int_equal(pgc_sql_exec(f->url, "ALTER TABLE sagas DROP COLUMN root_cause"), 0);
    assert_int_equal(pgc_sql_exec(f->url, "UPDATE saga_meta SET value = '2' WHERE key = 'schema'"),
                     0);
    insert_row(f->url, 1, SAGA_COMPLETED, NULL, 1000, "was stuck");
    insert_row(f->url, 2, SAGA_FAILED, "k2", 1001, "compensation refused");
    insert_row(f->url, 3, SAGA_COMPLETED, NULL, 1002, NULL);

    char err[512];
    assert_null(store_open(f->url, 0, 1, err, sizeof err));
    assert_non_null(strstr(err, "schema version 2"));

    st = open_store(f->url, 0);
    assert_non_null(st);
    int64_t version = 0;
    assert_int_equal(
        pgc_sql_int(f->url, &version, "SELECT value::int FROM saga_meta WHERE key = 'schema'"), 0);
    assert_int_equal(version, 4);
    char id[37];
    saga *s = NULL;
    make_id(id, 1);
    assert_int_equal(store_load_saga(st, id, &s), 0);
    assert_null(s->last_error);
    assert_string_equal(s->root_cause, "was stuck");
    saga_free(s);
    make_id(id, 2);
    assert_int_equal(store_load_saga(st, id, &s), 0);
    assert_string_equal(s->last_error, "compensation refused");
    assert_string_equal(s->root_cause, "compensation refused");
    saga_free(s);
    make_id(id, 3);
    assert_int_equal(store_load_saga(st, id, &s), 0);
    assert_null(s->last_error);
    assert_null(s->root_cause);
    saga_free(s);
    store_close(st);
    st = open_store(f->url, 1); /* the read-only handle knows the new schema */
    assert_non_null(st);
    store_close(st);
    assert_int_equal(pgc_sql_exec(f->url, "DELETE FROM sagas"), 0);
}

typedef struct {
    char ids[16][37];
    char keys[16][32];
    size_t n;
} rows;

static int collect(const store_summary *row, void *arg)
{
    rows *r = arg;
    assert_true(r->n < 16);
    snprintf(r->ids[r->n], sizeof r->ids[0], "%s", row->saga_id);
    snprintf(r->keys[r->n], sizeof r->keys[0], "%s", row->client_key ? row->client_key : "-");
    r->n++;
    return 0;
}

/* The same searches as test_store's, on PostgreSQL's statement. */
static void search_by_prefix_key_and_time(void **state)
{
    fixture *f = *state;
    store *st = open_store(f->url, 0);
    assert_non_null(st);
    for (int i = 0; i < 13; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", 200 + i);
        insert_row(f->url, 200 + i, i % 3 == 0 ? SAGA_FAILED : SAGA_RUNNING, key, 1000 + i,
                   i % 3 == 0 ? "stuck" : NULL);
    }
    store *ro = open_store(f->url, 1);
    assert_non_null(ro);
    char id[37];
    rows r = {.n = 0};
    store_search_filter p = {.id_prefix = "00000000-0000-4000-8000-00000000020"};
    assert_int_equal(store_search(ro, &p, collect, &r), 0);
    assert_int_equal(r.n, 10);
    make_id(id, 209);
    assert_string_equal(r.ids[0], id);
    make_id(id, 200);
    assert_string_equal(r.ids[9], id);
    r.n = 0;
    p.id_prefix = "1";
    assert_int_equal(store_search(ro, &p, collect, &r), 0);
    assert_int_equal(r.n, 0);

    r.n = 0;
    store_search_filter k = {.client_key = "k206"};
    assert_int_equal(store_search(ro, &k, collect, &r), 0);
    assert_int_equal(r.n, 1);
    make_id(id, 206);
    assert_string_equal(r.ids[0], id);
    assert_string_equal(r.keys[0], "k206");

    /* Created in [1005, 1008): 207, 206, 205; FAILED among them: 206. Times
     * beyond 32 bits, as real ones are. */
    r.n = 0;
    store_search_filter t = {.created_after_ms = 1005, .created_before_ms = 1008};
    assert_int_equal(store_search(ro, &t, collect, &r), 0);
    assert_int_equal(r.n, 3);
    r.n = 0;
    t.state = SAGA_FAILED;
    assert_int_equal(store_search(ro, &t, collect, &r), 0);
    assert_int_equal(r.n, 1);
    make_id(id, 206);
    assert_string_equal(r.ids[0], id);
    r.n = 0;
    store_search_filter late = {.created_after_ms = 1795337571766LL};
    assert_int_equal(store_search(ro, &late, collect, &r), 0);
    assert_int_equal(r.n, 0);

    /* Pages. */
    r.n = 0;
    store_search_filter pg = {.created_after_ms = 1000, .limit = 4};
    assert_int_equal(store_search(ro, &pg, collect, &r), 0);
    assert_int_equal(r.n, 4);
    char after[37];
    snprintf(after, sizeof after, "%s", r.ids[3]);
    r.n = 0;
    pg.after_id = after;
    assert_int_equal(store_search(ro, &pg, collect, &r), 0);
    assert_int_equal(r.n, 4);
    make_id(id, 208);
    assert_string_equal(r.ids[0], id);
    store_close(ro);
    store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(upgrade_from_schema_2),
        cmocka_unit_test(search_by_prefix_key_and_time),
    };
    return cmocka_run_group_tests_name("store_pg", tests, setup, teardown);
}
