/*
 * test_store — the SQLite store (orchestrator/store_sqlite.c) on real files.
 *
 * Every test works on its own database in a fresh temporary directory and
 * checks what a later load, list or raw SQL query actually returns. Saga
 * definitions are built by hand, so no configuration file is involved.
 */
#include <dirent.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "db_url.h"
#include "saga.h"
#include "store.h"
#include "util.h"
#include "wire.h"

/* ---- Fixtures ---------------------------------------------------------------- */

static char tmp_dir[256];
static int db_counter;

static step_def order_steps[] = {
    {.name = "reserve", .participant = "inventory", .action = "reserve", .compensation = "release"},
    {.name = "charge", .participant = "payments", .action = "charge", .compensation = "refund"},
    {.name = "ship", .participant = "shipping", .action = "ship", .compensation = NULL},
};
static step_def trip_steps[] = {
    {.name = "flight", .participant = "airline", .action = "book", .compensation = "cancel"},
    {.name = "hotel", .participant = "hotels", .action = "book", .compensation = "cancel"},
};

static saga_def defs[] = {
    {.name = "order", .steps = order_steps, .n_steps = 3, .version = 3},
    {.name = "trip", .steps = trip_steps, .n_steps = 2, .version = 1},
};
/* Another type, to tell types apart in the recovery walk. */
static saga_def gone_def = {.name = "gone", .steps = trip_steps, .n_steps = 2, .version = 2};

static int group_setup(void **state)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/test_store.XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    DIR *d = opendir(tmp_dir);
    if (d == NULL)
        return -1;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(tmp_dir);
}

/* A fresh database path for one test. */
static void new_db_path(char *buf, size_t len)
{
    snprintf(buf, len, "%s/db%d.sqlite", tmp_dir, ++db_counter);
}

static store *open_rw(const char *path, int durability_full)
{
    char err[512] = "";
    store *st = store_open(path, durability_full, 0, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open(%s): %s", path, err);
    return st;
}

static store *open_ro(const char *path)
{
    char err[512] = "";
    store *st = store_open(path, 1, 1, err, sizeof err);
    if (st == NULL)
        fail_msg("store_open(%s, read-only): %s", path, err);
    return st;
}

static void make_id(char out[37], int n)
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", n);
}

/* A new saga as saga_new makes it (dirty NEW|ROW), created at `at`. */
static saga *new_saga(const saga_def *def, int n, const char *client_key, int64_t at)
{
    char id[37];
    kvmap input = KVMAP_INIT;
    make_id(id, n);
    assert_int_equal(kv_set(&input, "amount", "100"), 0);
    assert_int_equal(kv_set(&input, "customer", "c-42"), 0);
    saga *s = saga_new(def, id, client_key, &input, at);
    kv_free(&input);
    assert_non_null(s);
    return s;
}

static void save_one(store *st, const saga *s)
{
    assert_int_equal(store_begin(st), 0);
    if (store_save_saga(st, s) != 0)
        fail_msg("store_save_saga(%s): %s", s->id, store_errmsg(st));
    assert_int_equal(store_commit(st), 0);
}

static void set_str(char **slot, const char *value)
{
    free(*slot);
    *slot = value ? util_strdup(value) : NULL;
    assert_true(value == NULL || *slot != NULL);
}

static void assert_str_or_null(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_kv_equal(const kvmap *a, const kvmap *b)
{
    assert_int_equal(a->len, b->len);
    for (size_t i = 0; i < a->len; i++) {
        assert_string_equal(a->items[i].key, b->items[i].key);
        assert_string_equal(a->items[i].value, b->items[i].value);
    }
    assert_true(kv_equal(a, b));
}

static void assert_step_equal(const step_run *a, const step_run *b)
{
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->action_attempts, b->action_attempts);
    assert_int_equal(a->compensation_attempts, b->compensation_attempts);
    assert_int_equal(a->last_outcome, b->last_outcome);
    assert_kv_equal(&a->result, &b->result);
    assert_str_or_null(a->last_error, b->last_error);
    assert_int_equal(a->next_attempt_at_ms, b->next_attempt_at_ms);
    assert_int_equal(a->started_at_ms, b->started_at_ms);
    assert_int_equal(a->finished_at_ms, b->finished_at_ms);
}

/* Every stored field equal; the loaded one (b) has its volatile fields zero. */
static void assert_saga_equal(const saga *a, const saga *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->type, b->type);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->failed_phase, b->failed_phase);
    assert_str_or_null(a->client_key, b->client_key);
    assert_kv_equal(&a->input, &b->input);
    assert_int_equal(a->created_at_ms, b->created_at_ms);
    assert_int_equal(a->updated_at_ms, b->updated_at_ms);
    assert_int_equal(a->deadline_at_ms, b->deadline_at_ms);
    assert_str_or_null(a->last_error, b->last_error);
    assert_str_or_null(a->root_cause, b->root_cause);
    assert_int_equal(a->cursor, b->cursor);
    assert_int_equal(a->n_steps, b->n_steps);
    for (size_t i = 0; i < a->n_steps; i++)
        assert_step_equal(&a->steps[i], &b->steps[i]);
    assert_int_equal(b->dirty, 0);
    assert_int_equal(b->dirty_steps, 0);
    assert_int_equal(b->token, 0);
    assert_int_equal(b->in_flight, 0);
    assert_int_equal(b->timer_due, 0);
    assert_null(b->engine_data);
}

static saga *load(store *st, const char *id)
{
    saga *s = NULL;
    int rc = store_load_saga(st, id, &s);
    if (rc != 0)
        fail_msg("store_load_saga(%s) = %d: %s", id, rc, store_errmsg(st));
    assert_non_null(s);
    return s;
}

/* ---- Round trip ------------------------------------------------------------------ */

static void roundtrip_insert_update_load(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 1);
    saga *s = new_saga(&defs[0], 1, "client-1", 1000);
    s->deadline_at_ms = 61000;        /* a deadline is stored with the saga */
    s->steps[0].started_at_ms = 1001; /* and when each step ran */
    s->steps[0].finished_at_ms = 1009;

    save_one(st, s);
    assert_int_equal(s->dirty, SAGA_DIRTY_NEW | SAGA_DIRTY_ROW); /* flags left alone */
    saga *got = load(st, s->id);
    assert_null(got->def); /* the caller binds it (catalog_bind) */
    assert_int_equal(got->def_version, 3);
    assert_saga_equal(s, got);
    assert_int_equal(got->steps[2].last_outcome, OUTCOME_UNSPECIFIED);
    saga_free(got);

    /* Change the saga row and steps 0 and 1; step 2 changes in memory only. */
    s->dirty = SAGA_DIRTY_ROW;
    s->dirty_steps = (1u << 0) | (1u << 1);
    s->state = SAGA_COMPENSATING;
    s->cursor = 1;
    s->failed_phase = PHASE_COMPENSATE;
    set_str(&s->last_error, "charge declined");
    s->updated_at_ms = 2000;
    s->steps[0].state = STEP_DONE;
    s->steps[0].action_attempts = 2;
    s->steps[0].last_outcome = OUTCOME_OK;
    assert_int_equal(kv_set(&s->steps[0].result, "reservation", "r-1"), 0);
    assert_int_equal(kv_set(&s->steps[0].result, "warehouse", "w-9"), 0);
    s->steps[1].state = STEP_COMPENSATING;
    s->steps[1].started_at_ms = 1500; /* updated like the other step fields */
    s->steps[1].finished_at_ms = 1900;
    s->steps[1].action_attempts = 3;
    s->steps[1].compensation_attempts = 1;
    s->steps[1].last_outcome = OUTCOME_REJECTED;
    set_str(&s->steps[1].last_error, "card declined");
    s->steps[1].next_attempt_at_ms = 5000;
    s->steps[2].state = STEP_ACTION_SENT;
    s->steps[2].action_attempts = 9;
    save_one(st, s);

    got = load(st, s->id);
    assert_int_equal(got->state, SAGA_COMPENSATING);
    assert_int_equal(got->cursor, 1);
    assert_int_equal(got->failed_phase, PHASE_COMPENSATE);
    assert_string_equal(got->last_error, "charge declined");
    assert_int_equal(got->updated_at_ms, 2000);
    assert_int_equal(got->created_at_ms, 1000);
    assert_string_equal(kv_get(&got->steps[0].result, "reservation"), "r-1");
    assert_step_equal(&s->steps[0], &got->steps[0]);
    assert_step_equal(&s->steps[1], &got->steps[1]);
    /* Step 2 was not marked dirty: the store still has it as inserted. */
    assert_int_equal(got->steps[2].state, STEP_PENDING);
    assert_int_equal(got->steps[2].action_attempts, 0);
    saga_free(got);

    s->dirty = 0;
    s->dirty_steps = 1u << 2;
    save_one(st, s);
    got = load(st, s->id);
    assert_saga_equal(s, got);
    saga_free(got);

    /* Clearing a step's result and error is stored too. */
    kv_free(&s->steps[0].result);
    set_str(&s->steps[1].last_error, NULL);
    set_str(&s->last_error, NULL);
    s->dirty = SAGA_DIRTY_ROW;
    s->dirty_steps = 3;
    save_one(st, s);
    got = load(st, s->id);
    assert_int_equal(got->steps[0].result.len, 0);
    assert_null(got->steps[1].last_error);
    assert_null(got->last_error);
    assert_saga_equal(s, got);
    saga_free(got);

    saga_free(s);
    store_close(st);
}

/* The definition columns and the idempotency keys, as an operator sees them. */
static void step_rows_hold_definition_and_keys(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[0], 2, NULL, 1000);
    save_one(st, s);
    store_close(st);

    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT idx, name, participant, action, compensation, "
                                        "action_key, compensation_key FROM saga_steps "
                                        "WHERE saga_id = ?1 ORDER BY idx",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(q, 1, s->id, -1, SQLITE_STATIC);
    for (int i = 0; i < 3; i++) {
        char key[WIRE_MAX_KEY + 1];
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(q, 0), i);
        assert_string_equal(sqlite3_column_text(q, 1), order_steps[i].name);
        assert_string_equal(sqlite3_column_text(q, 2), order_steps[i].participant);
        assert_string_equal(sqlite3_column_text(q, 3), order_steps[i].action);
        saga_step_key(s, i, PHASE_ACTION, key, sizeof key);
        assert_string_equal(sqlite3_column_text(q, 5), key);
        if (order_steps[i].compensation != NULL) {
            assert_string_equal(sqlite3_column_text(q, 4), order_steps[i].compensation);
            saga_step_key(s, i, PHASE_COMPENSATE, key, sizeof key);
            assert_string_equal(sqlite3_column_text(q, 6), key);
        } else {
            assert_int_equal(sqlite3_column_type(q, 4), SQLITE_NULL);
            assert_int_equal(sqlite3_column_type(q, 6), SQLITE_NULL);
        }
    }
    assert_string_equal(sqlite3_column_text(q, 5),
                        "00000000-0000-4000-8000-000000000002/ship/action");
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);

    int64_t version = -1;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    version = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    assert_int_equal(version, 6);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);
    saga_free(s);
}

/* Nothing dirty writes nothing; a step bit alone leaves the saga row. */
static void save_writes_only_what_is_dirty(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[1], 3, NULL, 1000);
    save_one(st, s);

    s->dirty = 0;
    s->dirty_steps = 0;
    s->state = SAGA_FAILED;
    s->steps[0].state = STEP_DONE;
    save_one(st, s);
    saga *got = load(st, s->id);
    assert_int_equal(got->state, SAGA_RUNNING);
    assert_int_equal(got->steps[0].state, STEP_PENDING);
    saga_free(got);

    s->dirty_steps = 1u << 0;
    save_one(st, s);
    got = load(st, s->id);
    assert_int_equal(got->state, SAGA_RUNNING);
    assert_int_equal(got->steps[0].state, STEP_DONE);
    saga_free(got);

    /* Outside a transaction a save commits on its own. */
    s->dirty = SAGA_DIRTY_ROW;
    s->dirty_steps = 0;
    set_str(&s->last_error, "boom");
    assert_int_equal(store_save_saga(st, s), 0);
    store_close(st);
    st = open_rw(path, 0);
    got = load(st, s->id);
    assert_int_equal(got->state, SAGA_FAILED);
    assert_string_equal(got->last_error, "boom");
    saga_free(got);
    saga_free(s);
    store_close(st);
}

static void save_errors_are_reported(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[0], 4, NULL, 1000);

    /* An update of a saga the store never saw. */
    s->dirty = SAGA_DIRTY_ROW;
    assert_int_equal(store_save_saga(st, s), -1);
    assert_non_null(strstr(store_errmsg(st), s->id));
    assert_non_null(strstr(store_errmsg(st), "not in the store"));
    s->dirty = 0;
    s->dirty_steps = 1u << 1;
    assert_int_equal(store_save_saga(st, s), -1);
    assert_non_null(strstr(store_errmsg(st), "not in the store"));

    /* A dirty bit past the last step. */
    s->dirty = SAGA_DIRTY_NEW | SAGA_DIRTY_ROW;
    s->dirty_steps = 0;
    save_one(st, s);
    s->dirty = 0;
    s->dirty_steps = 1u << 3;
    assert_int_equal(store_save_saga(st, s), -1);
    assert_non_null(strstr(store_errmsg(st), "dirty step"));

    /* A new saga without its definition cannot get its step rows. */
    saga *t = new_saga(&defs[0], 5, NULL, 1000);
    t->def = NULL;
    assert_int_equal(store_save_saga(st, t), -1);
    assert_int_equal(store_load_saga(st, t->id, &(saga *){NULL}), STORE_NOT_FOUND);

    /* The same id twice. */
    saga *dup = new_saga(&defs[0], 4, NULL, 1000);
    assert_int_equal(store_save_saga(st, dup), -1);
    assert_non_null(strstr(store_errmsg(st), "UNIQUE"));

    saga_free(dup);
    saga_free(t);
    saga_free(s);
    store_close(st);
}

/* ---- History ----------------------------------------------------------------------- */

typedef struct {
    uint64_t seq;
    int64_t at_ms;
    char kind[64];
    char step[64];
    int phase;
    uint32_t attempt;
    int outcome;
    int replayed;
    char *detail;
} seen_event;

typedef struct {
    seen_event ev[32];
    size_t n;
    size_t stop_after; /* 0: never stop */
} event_log;

static int collect_event(const store_event *ev, void *arg)
{
    event_log *log = arg;
    assert_true(log->n < 32);
    seen_event *e = &log->ev[log->n++];
    e->seq = ev->seq;
    e->at_ms = ev->at_ms;
    snprintf(e->kind, sizeof e->kind, "%s", ev->kind);
    assert_non_null(ev->step);
    snprintf(e->step, sizeof e->step, "%s", ev->step);
    e->phase = ev->phase;
    e->attempt = ev->attempt;
    e->outcome = ev->outcome;
    e->replayed = ev->replayed;
    assert_non_null(ev->detail);
    e->detail = util_strdup(ev->detail);
    return log->stop_after != 0 && log->n == log->stop_after ? 7 : 0;
}

static void event_log_free(event_log *log)
{
    for (size_t i = 0; i < log->n; i++)
        free(log->ev[i].detail);
    log->n = 0;
}

static void history_appends_in_order(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *a = new_saga(&defs[0], 10, NULL, 1000);
    saga *b = new_saga(&defs[1], 11, NULL, 1000);

    const saga_event evs[] = {
        {"saga_started", -1, PHASE_ACTION, 0, -1, 0, "client-9"},
        {"step_sent", 0, PHASE_ACTION, 1, -1, 0, NULL},
        {"step_reply", 0, PHASE_ACTION, 1, OUTCOME_OK, 1, "replayed ok"},
        {"step_sent", 1, PHASE_ACTION, 1, -1, 0, NULL},
        {"step_reply", 1, PHASE_ACTION, 1, OUTCOME_REJECTED, 0, "card declined"},
        {"step_sent", 0, PHASE_COMPENSATE, 3, -1, 0, NULL},
    };
    const size_t n = sizeof evs / sizeof evs[0];
    /* The first round appends history before it saves the new sagas: allowed,
     * foreign keys are checked at commit. */
    assert_int_equal(store_begin(st), 0);
    for (size_t i = 0; i < 3; i++) {
        const char *step_name = evs[i].step >= 0 ? order_steps[evs[i].step].name : NULL;
        assert_int_equal(store_append_history(st, a->id, 100 + (int64_t)i, &evs[i], step_name), 0);
        assert_int_equal(store_append_history(st, b->id, 500, &evs[n - 1 - i], "flight"), 0);
    }
    assert_int_equal(store_save_saga(st, a), 0);
    assert_int_equal(store_save_saga(st, b), 0);
    assert_int_equal(store_commit(st), 0);
    /* A later round continues the numbering. */
    assert_int_equal(store_begin(st), 0);
    for (size_t i = 3; i < n; i++) {
        const char *step_name = evs[i].step >= 0 ? order_steps[evs[i].step].name : NULL;
        assert_int_equal(store_append_history(st, a->id, 100 + (int64_t)i, &evs[i], step_name), 0);
    }
    assert_int_equal(store_commit(st), 0);

    event_log log = {.n = 0};
    assert_int_equal(store_history(st, a->id, collect_event, &log), 0);
    assert_int_equal(log.n, n);
    for (size_t i = 0; i < n; i++) {
        const seen_event *e = &log.ev[i];
        if (i > 0) /* rounds interleave the sagas: increasing, not dense */
            assert_true(e->seq > log.ev[i - 1].seq);
        else
            assert_true(e->seq >= 1);
        assert_int_equal(e->at_ms, 100 + (int64_t)i);
        assert_string_equal(e->kind, evs[i].kind);
        assert_string_equal(e->step, evs[i].step >= 0 ? order_steps[evs[i].step].name : "");
        assert_int_equal(e->phase, evs[i].phase);
        assert_int_equal(e->attempt, evs[i].attempt);
        assert_int_equal(e->outcome, evs[i].outcome);
        assert_int_equal(e->replayed, evs[i].replayed);
        assert_string_equal(e->detail, evs[i].detail ? evs[i].detail : "");
    }
    event_log_free(&log);

    /* The other saga's events are its own, in the order appended (they were
     * interleaved with a's: 2, 4, 6 of the first round). */
    uint64_t a_first = 0;
    assert_int_equal(store_history(st, a->id, collect_event, &log), 0);
    a_first = log.ev[0].seq;
    event_log_free(&log);
    assert_int_equal(store_history(st, b->id, collect_event, &log), 0);
    assert_int_equal(log.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(log.ev[i].seq, a_first + 2 * i + 1);
        assert_string_equal(log.ev[i].kind, evs[n - 1 - i].kind);
        assert_int_equal(log.ev[i].at_ms, 500);
    }
    assert_string_equal(log.ev[0].step, "flight");
    event_log_free(&log);

    /* A non-zero return stops the walk and is returned. */
    log.stop_after = 2;
    assert_int_equal(store_history(st, a->id, collect_event, &log), 7);
    assert_int_equal(log.n, 2);
    event_log_free(&log);
    log.stop_after = 0;

    /* No such saga: no events. */
    assert_int_equal(store_history(st, "no-such-saga", collect_event, &log), 0);
    assert_int_equal(log.n, 0);

    saga_free(a);
    saga_free(b);
    store_close(st);
}

/* ---- Listing and counting ---------------------------------------------------------- */

typedef struct {
    char ids[64][37];
    int states[64];
    char types[64][16];
    int64_t created[64];
    int has_error[64];
    size_t n;
    size_t stop_after;
} list_log;

static int collect_summary(const store_summary *row, void *arg)
{
    list_log *l = arg;
    assert_true(l->n < 64);
    snprintf(l->ids[l->n], 37, "%s", row->saga_id);
    snprintf(l->types[l->n], 16, "%s", row->type);
    l->states[l->n] = row->state;
    l->created[l->n] = row->created_at_ms;
    l->has_error[l->n] = row->last_error != NULL;
    if (row->last_error != NULL)
        assert_string_equal(row->last_error, "why");
    l->n++;
    return l->stop_after != 0 && l->n == l->stop_after ? 9 : 0;
}

/* Eight sagas, n = 100..107, created in that order. */
static const struct {
    int def;
    saga_state state;
} fleet[] = {
    {0, SAGA_RUNNING}, {1, SAGA_COMPLETED},    {0, SAGA_FAILED},      {0, SAGA_COMPLETED},
    {1, SAGA_FAILED},  {0, SAGA_COMPENSATING}, {1, SAGA_COMPENSATED}, {0, SAGA_FAILED},
};
#define FLEET_N (sizeof fleet / sizeof fleet[0])

static void insert_fleet(store *st)
{
    assert_int_equal(store_begin(st), 0);
    for (size_t i = 0; i < FLEET_N; i++) {
        saga *s = new_saga(&defs[fleet[i].def], 100 + (int)i, NULL, 1000 + (int64_t)i);
        s->state = fleet[i].state;
        if (s->state == SAGA_FAILED)
            set_str(&s->last_error, "why");
        assert_int_equal(store_save_saga(st, s), 0);
        saga_free(s);
    }
    assert_int_equal(store_commit(st), 0);
}

/* Expected ids, newest first, of the fleet members passing the filter. */
static size_t expect_list(int state, const char *type, char out[][37])
{
    size_t n = 0;
    for (size_t i = FLEET_N; i-- > 0;) {
        if (state != 0 && (int)fleet[i].state != state)
            continue;
        if (type != NULL && strcmp(defs[fleet[i].def].name, type) != 0)
            continue;
        make_id(out[n++], 100 + (int)i);
    }
    return n;
}

static void check_list(store *st, int state, const char *type)
{
    char want[FLEET_N][37];
    size_t n = expect_list(state, type, want);
    list_log l = {.n = 0};
    assert_int_equal(store_list(st, state, type, NULL, 0, collect_summary, &l), 0);
    assert_int_equal(l.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(l.ids[i], want[i]);
        if (state != 0)
            assert_int_equal(l.states[i], state);
        if (type != NULL)
            assert_string_equal(l.types[i], type);
        assert_int_equal(l.has_error[i], l.states[i] == SAGA_FAILED);
    }
}

static void list_filters_and_pages(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    insert_fleet(st);

    /* Everything, newest first, with its fields. */
    list_log l = {.n = 0};
    assert_int_equal(store_list(st, 0, "", NULL, 0, collect_summary, &l), 0);
    assert_int_equal(l.n, FLEET_N);
    for (size_t i = 0; i < FLEET_N; i++) {
        size_t f = FLEET_N - 1 - i;
        char id[37];
        make_id(id, 100 + (int)f);
        assert_string_equal(l.ids[i], id);
        assert_int_equal(l.states[i], fleet[f].state);
        assert_string_equal(l.types[i], defs[fleet[f].def].name);
        assert_int_equal(l.created[i], 1000 + (int64_t)f);
    }

    check_list(st, 0, NULL);
    check_list(st, SAGA_FAILED, NULL);
    check_list(st, SAGA_RUNNING, NULL);
    check_list(st, 0, "trip");
    check_list(st, SAGA_FAILED, "order");
    check_list(st, SAGA_FAILED, "trip");
    check_list(st, SAGA_COMPLETED, "trip");
    check_list(st, 0, "no-such-type");

    /* limit: the newest ones. */
    l.n = 0;
    assert_int_equal(store_list(st, 0, NULL, NULL, 3, collect_summary, &l), 0);
    assert_int_equal(l.n, 3);
    char id[37];
    make_id(id, 107);
    assert_string_equal(l.ids[0], id);
    make_id(id, 105);
    assert_string_equal(l.ids[2], id);

    /* Pages of 3 after the last id of each page cover the list exactly once. */
    list_log all = {.n = 0};
    char after[37] = "";
    for (int pages = 0;; pages++) {
        assert_true(pages < 10);
        l.n = 0;
        assert_int_equal(store_list(st, 0, NULL, after[0] ? after : NULL, 3, collect_summary, &l),
                         0);
        for (size_t i = 0; i < l.n; i++)
            memcpy(all.ids[all.n++], l.ids[i], 37);
        if (l.n < 3)
            break;
        memcpy(after, l.ids[l.n - 1], 37);
    }
    assert_int_equal(all.n, FLEET_N);
    for (size_t i = 0; i < FLEET_N; i++) {
        make_id(id, 100 + (int)(FLEET_N - 1 - i));
        assert_string_equal(all.ids[i], id);
    }

    /* Paging within a filter: FAILED are 107, 104, 102. */
    l.n = 0;
    make_id(after, 107);
    assert_int_equal(store_list(st, SAGA_FAILED, NULL, after, 1, collect_summary, &l), 0);
    assert_int_equal(l.n, 1);
    make_id(id, 104);
    assert_string_equal(l.ids[0], id);
    l.n = 0;
    assert_int_equal(store_list(st, SAGA_FAILED, "order", id, 0, collect_summary, &l), 0);
    assert_int_equal(l.n, 1);
    make_id(id, 102);
    assert_string_equal(l.ids[0], id);

    /* After the oldest: nothing. After an unknown id: nothing, no error. */
    l.n = 0;
    make_id(after, 100);
    assert_int_equal(store_list(st, 0, NULL, after, 0, collect_summary, &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(store_list(st, 0, NULL, "unknown", 0, collect_summary, &l), 0);
    assert_int_equal(l.n, 0);

    /* A non-zero return stops the walk and is returned. */
    l.stop_after = 2;
    assert_int_equal(store_list(st, 0, NULL, NULL, 0, collect_summary, &l), 9);
    assert_int_equal(l.n, 2);
    store_close(st);
}

static void count_by_state(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    uint64_t counts[6];
    memset(counts, 0xff, sizeof counts);
    assert_int_equal(store_count_by_state(st, counts), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(counts[i], 0);

    insert_fleet(st);
    assert_int_equal(store_count_by_state(st, counts), 0);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[SAGA_RUNNING], 1);
    assert_int_equal(counts[SAGA_COMPENSATING], 1);
    assert_int_equal(counts[SAGA_COMPLETED], 2);
    assert_int_equal(counts[SAGA_COMPENSATED], 1);
    assert_int_equal(counts[SAGA_FAILED], 3);

    /* The running one completes. */
    saga *s = load(st, "00000000-0000-4000-8000-000000000100");
    s->state = SAGA_COMPLETED;
    s->dirty = SAGA_DIRTY_ROW;
    save_one(st, s);
    saga_free(s);
    assert_int_equal(store_count_by_state(st, counts), 0);
    assert_int_equal(counts[SAGA_RUNNING], 0);
    assert_int_equal(counts[SAGA_COMPLETED], 3);
    store_close(st);
}

/* The minimum created_at, not the first row stored: a saga may be stored
 * after a newer one (another node, a clock step); read-only handles answer too. */
static void oldest_created(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    int64_t ms = -1;
    assert_int_equal(store_oldest_created(st, SAGA_FAILED, &ms), 0);
    assert_int_equal(ms, 0);

    static const struct {
        int n, state;
        int64_t created;
    } rows[] = {{200, SAGA_FAILED, 5000},
                {201, SAGA_FAILED, 3000},
                {202, SAGA_RUNNING, 4000},
                {203, SAGA_COMPLETED, 1000}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        saga *s = new_saga(&defs[0], rows[i].n, NULL, rows[i].created);
        s->state = rows[i].state;
        save_one(st, s);
        saga_free(s);
    }
    char err[256];
    store *ro = store_open(path, 0, 1, err, sizeof err);
    assert_non_null(ro);
    store *handles[] = {st, ro};
    for (int h = 0; h < 2; h++) {
        assert_int_equal(store_oldest_created(handles[h], SAGA_FAILED, &ms), 0);
        assert_int_equal(ms, 3000);
        assert_int_equal(store_oldest_created(handles[h], SAGA_RUNNING, &ms), 0);
        assert_int_equal(ms, 4000);
        assert_int_equal(store_oldest_created(handles[h], SAGA_COMPENSATING, &ms), 0);
        assert_int_equal(ms, 0);
    }
    store_close(ro);
    store_close(st);
}

/* ---- Client keys ------------------------------------------------------------------ */

static void client_keys(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *a = new_saga(&defs[0], 20, "order-7781", 1000);
    saga *b = new_saga(&defs[0], 21, NULL, 1000);
    saga *c = new_saga(&defs[1], 22, NULL, 1000);
    save_one(st, a);
    save_one(st, b); /* any number of sagas without a key */
    save_one(st, c);

    char id[37] = "untouched";
    assert_int_equal(store_find_client_key(st, "order-7781", id), 0);
    assert_string_equal(id, a->id);
    strcpy(id, "untouched");
    assert_int_equal(store_find_client_key(st, "order-7782", id), STORE_NOT_FOUND);
    assert_int_equal(store_find_client_key(st, "", id), STORE_NOT_FOUND);
    assert_int_equal(store_find_client_key(st, NULL, id), STORE_NOT_FOUND);
    assert_string_equal(id, "untouched");

    /* A second saga with the key is refused, on its own and in a round. */
    saga *dup = new_saga(&defs[1], 23, "order-7781", 1000);
    assert_int_equal(store_save_saga(st, dup), -1);
    assert_non_null(strstr(store_errmsg(st), "UNIQUE"));
    assert_non_null(strstr(store_errmsg(st), "client_key"));
    assert_int_equal(store_load_saga(st, dup->id, &(saga *){NULL}), STORE_NOT_FOUND);

    saga *other = new_saga(&defs[1], 24, "order-9", 1000);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_save_saga(st, other), 0);
    assert_int_equal(store_save_saga(st, dup), -1);
    /* The failed statement is undone; the round's other work can commit. */
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_find_client_key(st, "order-9", id), 0);
    assert_string_equal(id, other->id);
    assert_int_equal(store_find_client_key(st, "order-7781", id), 0);
    assert_string_equal(id, a->id);
    saga *got = load(st, other->id);
    saga_free(got);
    assert_int_equal(store_load_saga(st, dup->id, &(saga *){NULL}), STORE_NOT_FOUND);

    saga_free(other);
    saga_free(dup);
    saga_free(a);
    saga_free(b);
    saga_free(c);
    store_close(st);
}

/* ---- Recovery --------------------------------------------------------------------- */

typedef struct {
    char (*ids)[37];
    size_t n;
    size_t cap;
    size_t stop_after;
    int null_defs;
    store *st;
    const char *finish_id; /* saved as COMPLETED from the first callback */
} walk;

static int collect_unfinished(saga *s, void *arg)
{
    walk *w = arg;
    assert_true(w->n < w->cap);
    assert_true(s->state == SAGA_RUNNING || s->state == SAGA_COMPENSATING);
    assert_int_equal(s->dirty, 0);
    assert_null(s->def);
    if (strcmp(s->type, "gone") == 0)
        w->null_defs++;
    memcpy(w->ids[w->n++], s->id, 37);
    if (w->finish_id != NULL) {
        saga *other = load(w->st, w->finish_id);
        other->state = SAGA_COMPLETED;
        other->dirty = SAGA_DIRTY_ROW;
        assert_int_equal(store_save_saga(w->st, other), 0);
        saga_free(other);
        w->finish_id = NULL;
    }
    saga_free(s); /* the callback owns it */
    return w->stop_after != 0 && w->n == w->stop_after ? 42 : 0;
}

static void load_unfinished_oldest_first(void **state)
{
    enum { N = 700 }; /* more than one recovery batch */
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    static char want[N][37];
    size_t n_want = 0, n_gone = 0;
    const saga_state cycle[] = {SAGA_COMPLETED, SAGA_RUNNING, SAGA_FAILED, SAGA_COMPENSATING,
                                SAGA_COMPENSATED};
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < N; i++) {
        const saga_def *def = i % 7 == 0 ? &gone_def : &defs[i % 2];
        saga *s = new_saga(def, 1000 + i, NULL, 5000 - i); /* created_at deliberately reversed */
        s->state = cycle[i % 5];
        if (s->state == SAGA_RUNNING || s->state == SAGA_COMPENSATING) {
            memcpy(want[n_want++], s->id, 37);
            n_gone += def == &gone_def;
        }
        assert_int_equal(store_save_saga(st, s), 0);
        saga_free(s);
    }
    assert_int_equal(store_commit(st), 0);
    assert_true(n_want > 256 && n_gone > 0);

    static char got[N][37];
    walk w = {.ids = got, .cap = N, .st = st};
    assert_int_equal(store_load_unfinished(st, collect_unfinished, &w), 0);
    assert_int_equal(w.n, n_want);
    for (size_t i = 0; i < n_want; i++)
        assert_string_equal(got[i], want[i]);
    assert_int_equal(w.null_defs, n_gone);

    /* Oldest first means in the order the sagas were stored (created_at_ms,
     * a wall clock that may step back, was reversed above and is ignored).
     * A stop: its value is returned, the sagas after it are never handed out
     * (and not leaked: the sanitizer build checks). */
    w = (walk){.ids = got, .cap = N, .st = st, .stop_after = 3};
    assert_int_equal(store_load_unfinished(st, collect_unfinished, &w), 42);
    assert_int_equal(w.n, 3);

    /* The callback may write through the same handle; a saga it finishes is
     * not handed out later. */
    w = (walk){.ids = got, .cap = N, .st = st, .finish_id = want[5]};
    assert_int_equal(store_load_unfinished(st, collect_unfinished, &w), 0);
    assert_int_equal(w.n, n_want - 1);
    for (size_t i = 0; i < w.n; i++)
        assert_string_not_equal(got[i], want[5]);
    store_close(st);
}

/* A saga comes back pinned to the version it was stored with, whatever it is. */
static void load_keeps_the_pinned_version(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[0], 30, NULL, 1000);
    s->def_version = 4000000000u; /* the whole uint32 range */
    save_one(st, s);

    saga *got = NULL;
    assert_int_equal(store_load_saga(st, s->id, &got), 0);
    assert_null(got->def);
    assert_string_equal(got->type, "order");
    assert_int_equal(got->n_steps, 3);
    assert_int_equal(got->def_version, 4000000000u);
    saga_free(got);

    assert_int_equal(store_load_saga(st, "no-such-id", &got), STORE_NOT_FOUND);
    saga_free(s);
    store_close(st);
}

static int copy_definition(const store_definition *d, void *arg)
{
    store_definition *out = arg;
    *out = *d;
    out->type = strdup(d->type);
    out->hash = strdup(d->hash);
    out->text = strdup(d->text);
    return 0;
}

static void free_definition(store_definition *d)
{
    free((char *)d->type);
    free((char *)d->hash);
    free((char *)d->text);
}

static const char hash_a[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char hash_b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/* Each version once per type: found by hash, read back by number; a text is
 * never stored twice under one type. */
static void definitions_are_stored_once(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    uint32_t v = 99;
    assert_int_equal(store_definition_max(st, "order", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(store_definition_version(st, "order", hash_a, &v), STORE_NOT_FOUND);
    store_definition a = {"order", 1, hash_a, "name = \"order\";", 1000};
    store_definition b = {"order", 2, hash_b, "name = \"order\"; # v2", 2000};
    store_definition other = {"trip", 1, hash_a, "name = \"trip\";", 3000};
    assert_int_equal(store_definition_add(st, &a), 0);
    assert_int_equal(store_definition_add(st, &b), 0);
    assert_int_equal(store_definition_add(st, &other), 0);
    store_definition again = {"order", 3, hash_a, "name = \"order\";", 4000};
    assert_int_equal(store_definition_add(st, &again), -1); /* UNIQUE (type, hash) */
    assert_int_equal(store_definition_max(st, "order", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(store_definition_version(st, "order", hash_b, &v), 0);
    assert_int_equal(v, 2);

    store *ro = open_ro(path);
    store_definition got;
    assert_int_equal(store_definition_get(ro, "order", 2, copy_definition, &got), 0);
    assert_string_equal(got.text, b.text);
    assert_string_equal(got.hash, hash_b);
    assert_int_equal(got.loaded_at_ms, 2000);
    free_definition(&got);
    assert_int_equal(store_definition_get(ro, "order", 3, copy_definition, &got), STORE_NOT_FOUND);
    store_close(ro);
    store_close(st);
}

static int count_collect(const char *type, uint32_t version, int state, uint64_t n, void *arg)
{
    uint64_t *counts = arg; /* [version * 8 + state] for type "order" */
    if (strcmp(type, "order") == 0 && version < 8)
        counts[version * 8 + (unsigned)state] += n;
    return 0;
}

static void raw_exec(const char *path, const char *sql);

/*
 * A database of schema version 1 (before definition versions) opens, is
 * migrated, and its sagas come back unpinned (def_version 0) until
 * store_pin_unversioned pins them; sagas of other types stay unpinned.
 */
static void migration_from_schema_1_pins_old_sagas(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *running = new_saga(&defs[0], 40, "k40", 1000);
    saga *failed = new_saga(&defs[0], 41, NULL, 1000);
    saga *trip = new_saga(&defs[1], 42, NULL, 1000);
    failed->state = SAGA_FAILED;
    failed->last_error = strdup("stuck");
    running->steps[0].last_outcome = OUTCOME_REJECTED; /* one reply, the others none yet */
    save_one(st, running);
    save_one(st, failed);
    save_one(st, trip);
    store_close(st);
    /* What a sagad of schema version 1 left behind: protocol 1 numbered
     * outcomes from OK = 0, and stored "no reply yet" as -1. */
    raw_exec(path, "DROP TABLE scheduled_starts; ALTER TABLE sagas DROP COLUMN root_cause; "
                   "ALTER TABLE sagas DROP COLUMN deadline_at_ms; "
                   "ALTER TABLE saga_steps DROP COLUMN started_at_ms; "
                   "ALTER TABLE saga_steps DROP COLUMN finished_at_ms; "
                   "DROP INDEX sagas_unpinned; ALTER TABLE sagas DROP COLUMN def_version; "
                   "DROP TABLE saga_definitions; "
                   "UPDATE saga_steps SET last_outcome = last_outcome - 1; "
                   "UPDATE saga_history SET outcome = outcome - 1; PRAGMA user_version = 1");

    st = open_rw(path, 0);
    saga *got = load(st, running->id);
    assert_int_equal(got->def_version, 0);
    assert_saga_equal(running, got);
    saga_free(got);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_pin_unversioned(st, "order", 1), 0);
    assert_int_equal(store_commit(st), 0);
    got = load(st, running->id);
    assert_int_equal(got->def_version, 1);
    saga_free(got);
    got = load(st, failed->id);
    assert_int_equal(got->def_version, 1);
    saga_free(got);
    got = load(st, trip->id);
    assert_int_equal(got->def_version, 0);
    saga_free(got);
    uint64_t counts[64] = {0};
    assert_int_equal(store_count_by_version(st, count_collect, counts), 0);
    assert_int_equal(counts[1 * 8 + SAGA_RUNNING], 1);
    assert_int_equal(counts[1 * 8 + SAGA_FAILED], 1);
    store_close(st);
    /* The read-only handle knows the new schema. */
    store_close(open_ro(path));
    saga_free(running);
    saga_free(failed);
    saga_free(trip);
}

/*
 * A database of schema version 2 (before deadlines) opens, is migrated, and
 * its sagas come back with no deadline, their pinned versions kept; a new
 * saga's deadline is stored.
 */
static void migration_from_schema_2_adds_deadlines(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *old = new_saga(&defs[0], 43, "k43", 1000);
    save_one(st, old);
    store_close(st);
    /* What a sagad of schema version 2 left behind. */
    raw_exec(path, "DROP TABLE scheduled_starts; ALTER TABLE sagas DROP COLUMN root_cause; "
                   "ALTER TABLE sagas DROP COLUMN deadline_at_ms; "
                   "ALTER TABLE saga_steps DROP COLUMN started_at_ms; "
                   "ALTER TABLE saga_steps DROP COLUMN finished_at_ms; PRAGMA user_version = 2");

    st = open_rw(path, 0);
    saga *got = load(st, old->id);
    assert_int_equal(got->deadline_at_ms, 0);
    assert_int_equal(got->def_version, old->def_version);
    assert_saga_equal(old, got);
    saga_free(got);
    saga *fresh = new_saga(&defs[0], 44, NULL, 2000);
    fresh->deadline_at_ms = 32000;
    save_one(st, fresh);
    got = load(st, fresh->id);
    assert_int_equal(got->deadline_at_ms, 32000);
    saga_free(got);
    store_close(st);
    /* The read-only handle knows the new schema. */
    store_close(open_ro(path));
    saga_free(old);
    saga_free(fresh);
}

/* store_search's rows, with the fields the operator's views show. */
typedef struct {
    char ids[32][37];
    char keys[32][64];
    char causes[32][64];
    size_t n;
} search_log;

static int collect_search(const store_summary *row, void *arg)
{
    search_log *l = arg;
    assert_true(l->n < 32);
    snprintf(l->ids[l->n], sizeof l->ids[0], "%s", row->saga_id);
    snprintf(l->keys[l->n], sizeof l->keys[0], "%s", row->client_key ? row->client_key : "-");
    snprintf(l->causes[l->n], sizeof l->causes[0], "%s", row->root_cause ? row->root_cause : "-");
    l->n++;
    return 0;
}

/* Sagas 200..212, keys k200.., created at 1000 + i; every third FAILED with a
 * root cause distinct from its last error. */
static void insert_search_fleet(store *st)
{
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < 13; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", 200 + i);
        saga *s = new_saga(&defs[0], 200 + i, key, 1000 + i);
        if (i % 3 == 0) {
            s->state = SAGA_FAILED;
            set_str(&s->last_error, "compensation refused");
            set_str(&s->root_cause, "card declined");
        }
        assert_int_equal(store_save_saga(st, s), 0);
        saga_free(s);
    }
    assert_int_equal(store_commit(st), 0);
}

/* sagactl status PREFIX, list --key, --since/--until: each filter, combined,
 * paged; on the read-only handle sagactl's reads use. */
static void search_by_prefix_key_and_time(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *rw = open_rw(path, 0);
    insert_search_fleet(rw);
    store *st = open_ro(path);
    char id[37];

    search_log l = {.n = 0};
    store_search_filter f = {.id_prefix = "00000000-0000-4000-8000-00000000020"};
    assert_int_equal(store_search(st, &f, collect_search, &l), 0);
    assert_int_equal(l.n, 10); /* 200..209, newest first */
    for (size_t i = 0; i < 10; i++) {
        make_id(id, 209 - (int)i);
        assert_string_equal(l.ids[i], id);
    }
    /* A whole id is a prefix of itself; one past every id matches nothing. */
    l.n = 0;
    make_id(id, 211);
    f.id_prefix = id;
    assert_int_equal(store_search(st, &f, collect_search, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.ids[0], id);
    l.n = 0;
    f.id_prefix = "1";
    assert_int_equal(store_search(st, &f, collect_search, &l), 0);
    assert_int_equal(l.n, 0);

    /* By client key: that saga, its key and root cause in the row. */
    l.n = 0;
    store_search_filter k = {.client_key = "k206"};
    assert_int_equal(store_search(st, &k, collect_search, &l), 0);
    assert_int_equal(l.n, 1);
    make_id(id, 206);
    assert_string_equal(l.ids[0], id);
    assert_string_equal(l.keys[0], "k206");
    assert_string_equal(l.causes[0], "card declined");
    l.n = 0;
    k.client_key = "k9999";
    assert_int_equal(store_search(st, &k, collect_search, &l), 0);
    assert_int_equal(l.n, 0);

    /* Created in [1005, 1008): 207, 206, 205; with state FAILED: 206. */
    l.n = 0;
    store_search_filter t = {.created_after_ms = 1005, .created_before_ms = 1008};
    assert_int_equal(store_search(st, &t, collect_search, &l), 0);
    assert_int_equal(l.n, 3);
    make_id(id, 207);
    assert_string_equal(l.ids[0], id);
    make_id(id, 205);
    assert_string_equal(l.ids[2], id);
    l.n = 0;
    t.state = SAGA_FAILED;
    assert_int_equal(store_search(st, &t, collect_search, &l), 0);
    assert_int_equal(l.n, 1);
    make_id(id, 206);
    assert_string_equal(l.ids[0], id);
    assert_string_equal(l.causes[0], "card declined");

    /* Pages: limit and after_id, as store_list. */
    l.n = 0;
    store_search_filter p = {.created_after_ms = 1000, .limit = 4};
    assert_int_equal(store_search(st, &p, collect_search, &l), 0);
    assert_int_equal(l.n, 4);
    char after[37];
    snprintf(after, sizeof after, "%s", l.ids[3]);
    l.n = 0;
    p.after_id = after;
    assert_int_equal(store_search(st, &p, collect_search, &l), 0);
    assert_int_equal(l.n, 4);
    make_id(id, 208);
    assert_string_equal(l.ids[0], id);
    store_close(st);
    store_close(rw);
}

/* root_cause is stored apart from last_error, both ways and through
 * updates; schema 3 databases gain it: their last error is the best known
 * first cause, and a COMPLETED saga keeps it there only (saga.h "Errors"). */
static void root_cause_kept_and_migrated(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[0], 60, NULL, 1000);
    set_str(&s->last_error, "compensation refused");
    set_str(&s->root_cause, "card declined");
    s->state = SAGA_FAILED;
    save_one(st, s);
    saga *got = load(st, s->id);
    assert_saga_equal(s, got);
    saga_free(got);
    /* Completed after a resume: last_error cleared, root_cause kept. */
    set_str(&s->last_error, NULL);
    s->state = SAGA_COMPLETED;
    s->dirty = SAGA_DIRTY_ROW;
    save_one(st, s);
    got = load(st, s->id);
    assert_null(got->last_error);
    assert_string_equal(got->root_cause, "card declined");
    saga_free(got);

    saga *done = new_saga(&defs[0], 61, NULL, 1000);
    done->state = SAGA_COMPLETED;
    saga *failed = new_saga(&defs[0], 62, NULL, 1000);
    failed->state = SAGA_FAILED;
    set_str(&failed->last_error, "stuck");
    set_str(&failed->root_cause, "stuck");
    save_one(st, done);
    save_one(st, failed);
    store_close(st);
    /* What a sagad of schema version 4 left behind: a COMPLETED saga (resumed)
     * with its old error as last_error, a FAILED one. */
    raw_exec(path, "UPDATE sagas SET last_error = 'was stuck' WHERE state = 3; "
                   "ALTER TABLE sagas DROP COLUMN root_cause; PRAGMA user_version = 4");
    st = open_rw(path, 0);
    got = load(st, done->id);
    assert_null(got->last_error);
    assert_string_equal(got->root_cause, "was stuck");
    saga_free(got);
    got = load(st, failed->id);
    assert_saga_equal(failed, got);
    saga_free(got);
    store_close(st);
    store_close(open_ro(path));
    saga_free(s);
    saga_free(done);
    saga_free(failed);
}

/* Rows that would hand the engine garbage are refused with a message. */
static void load_refuses_corrupt_rows(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[0], 31, NULL, 1000);
    save_one(st, s);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *breakages[] = {
        "UPDATE sagas SET input = '{\"a\":' WHERE seq = 1",
        "UPDATE sagas SET cursor = 3 WHERE seq = 1",
        "UPDATE saga_steps SET result = 'not json' WHERE idx = 0",
        "DELETE FROM saga_steps WHERE idx = 2",
    };
    const char *want[] = {"unreadable input", "corrupt saga row", "unreadable result",
                          "2 step rows, expected 3"};
    const char *repairs[] = {
        "UPDATE sagas SET input = '{}' WHERE seq = 1",
        "UPDATE sagas SET cursor = 0 WHERE seq = 1",
        "UPDATE saga_steps SET result = NULL WHERE idx = 0",
        NULL,
    };
    for (size_t i = 0; i < sizeof breakages / sizeof breakages[0]; i++) {
        assert_int_equal(sqlite3_exec(db, breakages[i], NULL, NULL, NULL), SQLITE_OK);
        saga *got = NULL;
        assert_int_equal(store_load_saga(st, s->id, &got), -1);
        assert_null(got);
        assert_non_null(strstr(store_errmsg(st), s->id));
        if (strstr(store_errmsg(st), want[i]) == NULL)
            fail_msg("breakage %zu: '%s' lacks '%s'", i, store_errmsg(st), want[i]);
        if (repairs[i] != NULL)
            assert_int_equal(sqlite3_exec(db, repairs[i], NULL, NULL, NULL), SQLITE_OK);
    }
    /* The schema's CHECKs refuse out-of-range values written behind our back. */
    assert_int_not_equal(sqlite3_exec(db, "UPDATE sagas SET state = 9", NULL, NULL, NULL),
                         SQLITE_OK);
    sqlite3_close(db);
    saga_free(s);
    store_close(st);
}

/* ---- Transactions and durability --------------------------------------------------- */

static void rollback_discards(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *kept = new_saga(&defs[0], 40, NULL, 1000);
    save_one(st, kept);

    saga *s = new_saga(&defs[0], 41, "k-41", 1000);
    saga_event ev = {"saga_started", -1, PHASE_ACTION, 0, -1, 0, NULL};
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_save_saga(st, s), 0);
    assert_int_equal(store_append_history(st, s->id, 1, &ev, NULL), 0);
    kept->state = SAGA_FAILED;
    kept->dirty = SAGA_DIRTY_ROW;
    assert_int_equal(store_save_saga(st, kept), 0);
    saga *got = load(st, s->id); /* visible inside the transaction */
    saga_free(got);
    store_rollback(st);

    assert_int_equal(store_load_saga(st, s->id, &got), STORE_NOT_FOUND);
    char id[37];
    assert_int_equal(store_find_client_key(st, "k-41", id), STORE_NOT_FOUND);
    event_log log = {.n = 0};
    assert_int_equal(store_history(st, s->id, collect_event, &log), 0);
    assert_int_equal(log.n, 0);
    got = load(st, kept->id);
    assert_int_equal(got->state, SAGA_RUNNING);
    saga_free(got);

    store_rollback(st); /* nothing open: harmless */
    /* The handle is usable again: the same saga saves now. */
    save_one(st, s);
    saga_free(load(st, s->id));

    saga_free(s);
    saga_free(kept);
    store_close(st);
}

/* A commit that fails ends the transaction; the handle stays usable. */
static void failed_commit_rolls_back(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);
    saga *s = new_saga(&defs[0], 50, NULL, 1000);
    saga_event ev = {"step_sent", 0, PHASE_ACTION, 1, -1, 0, NULL};

    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_save_saga(st, s), 0);
    /* History of a saga that does not exist: caught at commit. */
    assert_int_equal(store_append_history(st, "orphan", 1, &ev, "reserve"), 0);
    assert_int_equal(store_commit(st), -1);
    assert_non_null(strstr(store_errmsg(st), "FOREIGN KEY"));

    assert_int_equal(store_load_saga(st, s->id, &(saga *){NULL}), STORE_NOT_FOUND);
    event_log log = {.n = 0};
    assert_int_equal(store_history(st, "orphan", collect_event, &log), 0);
    assert_int_equal(log.n, 0);
    save_one(st, s);
    saga_free(load(st, s->id));
    saga_free(s);
    store_close(st);
}

static void reopen_keeps_committed_data(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 1);
    saga *s = new_saga(&defs[1], 60, "reopen-key", 1000);
    s->steps[0].state = STEP_DONE;
    s->steps[0].action_attempts = 1;
    s->steps[0].last_outcome = OUTCOME_OK;
    assert_int_equal(kv_set(&s->steps[0].result, "pnr", "XY12"), 0);
    s->steps[1].state = STEP_ACTION_SENT;
    s->steps[1].action_attempts = 2;
    s->steps[1].next_attempt_at_ms = 99999;
    s->cursor = 1;
    saga_event ev = {"step_sent", 1, PHASE_ACTION, 2, -1, 0, "again"};
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_save_saga(st, s), 0);
    assert_int_equal(store_append_history(st, s->id, 77, &ev, "hotel"), 0);
    assert_int_equal(store_commit(st), 0);
    /* Uncommitted work at close is lost, not half-kept. */
    saga *t = new_saga(&defs[1], 61, NULL, 1000);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_save_saga(st, t), 0);
    store_close(st);

    st = open_rw(path, 1);
    saga *got = load(st, s->id);
    assert_int_equal(got->def_version, defs[1].version);
    assert_saga_equal(s, got);
    saga_free(got);
    assert_int_equal(store_load_saga(st, t->id, &(saga *){NULL}), STORE_NOT_FOUND);
    event_log log = {.n = 0};
    assert_int_equal(store_history(st, s->id, collect_event, &log), 0);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.ev[0].step, "hotel");
    assert_string_equal(log.ev[0].detail, "again");
    assert_int_equal(log.ev[0].attempt, 2);
    event_log_free(&log);
    store_close(st);

    store *ro = open_ro(path);
    got = load(ro, s->id);
    assert_saga_equal(s, got);
    saga_free(got);
    store_close(ro);
    saga_free(s);
    saga_free(t);
}

/* A process that dies without closing the store (a crash) loses only its
 * open round: the committed one is recovered from the WAL by the next open. */
static void crash_keeps_committed_round_only(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    saga *committed = new_saga(&defs[0], 65, "crash-a", 1000);
    saga *open_round = new_saga(&defs[0], 66, "crash-b", 1000);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* no cmocka in the child: the exit code says what failed */
        char err[256];
        store *st = store_open(path, 1, 0, err, sizeof err);
        if (st == NULL)
            _exit(2);
        if (store_begin(st) != 0 || store_save_saga(st, committed) != 0 || store_commit(st) != 0)
            _exit(3);
        if (store_begin(st) != 0 || store_save_saga(st, open_round) != 0)
            _exit(4);
        _exit(0); /* no commit, no close */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    store *st = open_ro(path); /* a reader first: it must see the recovered WAL */
    saga *got = load(st, committed->id);
    assert_saga_equal(committed, got);
    saga_free(got);
    assert_int_equal(store_load_saga(st, open_round->id, &(saga *){NULL}), STORE_NOT_FOUND);
    store_close(st);

    st = open_rw(path, 1);
    char id[37];
    assert_int_equal(store_find_client_key(st, "crash-a", id), 0);
    assert_int_equal(store_find_client_key(st, "crash-b", id), STORE_NOT_FOUND);
    save_one(st, open_round); /* its id and key are free */
    store_close(st);
    saga_free(committed);
    saga_free(open_round);
}

/* The admin's read-only handle works while the engine holds a round open. */
static void read_only_sees_committed_only(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *w = open_rw(path, 1);
    saga *a = new_saga(&defs[0], 70, NULL, 1000);
    save_one(w, a);

    saga *b = new_saga(&defs[0], 71, "b-key", 2000);
    assert_int_equal(store_begin(w), 0);
    assert_int_equal(store_save_saga(w, b), 0);
    a->state = SAGA_COMPENSATING;
    a->dirty = SAGA_DIRTY_ROW;
    assert_int_equal(store_save_saga(w, a), 0);

    store *r = open_ro(path); /* opened while the writer's round is open */
    saga *got = load(r, a->id);
    assert_int_equal(got->state, SAGA_RUNNING);
    saga_free(got);
    assert_int_equal(store_load_saga(r, b->id, &(saga *){NULL}), STORE_NOT_FOUND);
    list_log l = {.n = 0};
    assert_int_equal(store_list(r, 0, NULL, NULL, 0, collect_summary, &l), 0);
    assert_int_equal(l.n, 1);
    uint64_t counts[6];
    assert_int_equal(store_count_by_state(r, counts), 0);
    assert_int_equal(counts[SAGA_RUNNING], 1);
    assert_int_equal(counts[SAGA_COMPENSATING], 0);

    /* A read transaction is a snapshot: the commit happens during it. */
    assert_int_equal(store_begin(r), 0);
    assert_int_equal(store_count_by_state(r, counts), 0);
    assert_int_equal(store_commit(w), 0);
    assert_int_equal(store_load_saga(r, b->id, &(saga *){NULL}), STORE_NOT_FOUND);
    assert_int_equal(store_commit(r), 0);

    got = load(r, b->id);
    assert_saga_equal(b, got);
    saga_free(got);
    got = load(r, a->id);
    assert_int_equal(got->state, SAGA_COMPENSATING);
    saga_free(got);
    char id[37];
    assert_int_equal(store_find_client_key(r, "b-key", id), 0);
    assert_string_equal(id, b->id);

    /* Writes through the read-only handle fail cleanly. */
    saga *c = new_saga(&defs[0], 72, NULL, 1000);
    assert_int_equal(store_save_saga(r, c), -1);
    assert_non_null(strstr(store_errmsg(r), "read-only"));
    saga_event ev = {"x", -1, PHASE_ACTION, 0, -1, 0, NULL};
    assert_int_equal(store_append_history(r, a->id, 1, &ev, NULL), -1);

    saga_free(c);
    saga_free(a);
    saga_free(b);
    store_close(r);
    store_close(w);
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static void open_refuses_foreign_databases(void **state)
{
    char path[512], err[512];

    /* Read-only on a missing file: an error naming the file. */
    new_db_path(path, sizeof path);
    err[0] = '\0';
    assert_null(store_open(path, 1, 1, err, sizeof err));
    assert_non_null(strstr(err, path));

    /* Read-only on a database sagad never initialised. */
    new_db_path(path, sizeof path);
    raw_exec(path, "CREATE TABLE t (x)");
    err[0] = '\0';
    assert_null(store_open(path, 1, 1, err, sizeof err));
    assert_non_null(strstr(err, "no sagad schema"));

    /* Some other application's database. */
    new_db_path(path, sizeof path);
    raw_exec(path, "PRAGMA application_id = 7; PRAGMA user_version = 4");
    err[0] = '\0';
    assert_null(store_open(path, 1, 0, err, sizeof err));
    assert_non_null(strstr(err, "not a sagad database"));

    /* A newer sagad's database. */
    new_db_path(path, sizeof path);
    store_close(open_rw(path, 0));
    raw_exec(path, "PRAGMA user_version = 99");
    err[0] = '\0';
    assert_null(store_open(path, 1, 0, err, sizeof err));
    assert_non_null(strstr(err, "newer"));
    err[0] = '\0';
    assert_null(store_open(path, 1, 1, err, sizeof err));
    assert_non_null(strstr(err, "99"));

    /* An unversioned file whose tables clash: the migration fails whole. */
    new_db_path(path, sizeof path);
    raw_exec(path, "CREATE TABLE saga_steps (x)");
    err[0] = '\0';
    assert_null(store_open(path, 1, 0, err, sizeof err));
    assert_non_null(strstr(err, "migrate"));
    sqlite3 *db;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM sqlite_schema WHERE name = 'sagas'",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 0); /* nothing half-created */
    sqlite3_finalize(q);
    sqlite3_close(db);

    /* Reopening a current database is a no-op migration. */
    new_db_path(path, sizeof path);
    store_close(open_rw(path, 0));
    store_close(open_rw(path, 1));
    store_close(open_ro(path));
}

/* ---- Awkward strings ----------------------------------------------------------- */

static void awkward_strings_survive(void **state)
{
    char path[512];
    new_db_path(path, sizeof path);
    store *st = open_rw(path, 0);

    size_t big_len = 1u << 20;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + i % 26);
    big[big_len / 2] = '"';
    big[big_len / 3] = '\\';
    big[big_len] = '\0';

    const char *awkward[] = {
        "it's \"quoted\" and \\back\\slashed",
        "x'); DROP TABLE sagas; --",
        "line\nbreak\ttab\rreturn\x01\x1f\x7f",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac",
        "invalid utf-8: \xff\xfe\x80 \xc3",
        "{\"json\":\"in a string\"}",
        "",
    };
    const size_t n = sizeof awkward / sizeof awkward[0];

    saga *s = new_saga(&defs[0], 80, awkward[1], 1000);
    for (size_t i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%zu", i);
        assert_int_equal(kv_set(&s->input, key, awkward[i]), 0);
        assert_int_equal(kv_set(&s->input, awkward[i], key), 0); /* as keys too */
    }
    assert_int_equal(kv_set(&s->input, "big", big), 0);
    set_str(&s->last_error, awkward[2]);
    assert_int_equal(kv_set(&s->steps[0].result, awkward[3], awkward[4]), 0);
    assert_int_equal(kv_set(&s->steps[0].result, "big", big), 0);
    set_str(&s->steps[1].last_error, big);
    set_str(&s->steps[2].last_error, awkward[4]);
    save_one(st, s);

    /* Maps are stored as JSON (kv.h), which carries only UTF-8: there the
     * invalid bytes of awkward[4] come back as U+FFFD. Columns keep every byte. */
    const char *repaired = "invalid utf-8: \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd";
    kvmap want_input = KVMAP_INIT;
    for (size_t i = 0; i < s->input.len; i++) {
        const kv_pair *p = &s->input.items[i];
        int bad_key = strcmp(p->key, awkward[4]) == 0,
            bad_value = strcmp(p->value, awkward[4]) == 0;
        assert_int_equal(
            kv_set(&want_input, bad_key ? repaired : p->key, bad_value ? repaired : p->value), 0);
    }
    kv_free(&s->input);
    s->input = want_input;
    assert_int_equal(kv_set(&s->steps[0].result, awkward[3], repaired), 0);

    saga *got = load(st, s->id);
    assert_saga_equal(s, got);
    assert_string_equal(kv_get(&got->input, "big"), big);
    assert_string_equal(got->client_key, awkward[1]);
    saga_free(got);

    char id[37];
    assert_int_equal(store_find_client_key(st, awkward[1], id), 0);
    assert_string_equal(id, s->id);

    assert_int_equal(store_begin(st), 0);
    for (size_t i = 0; i < n; i++) {
        saga_event ev = {"step_reply", 0, PHASE_ACTION, 1, OUTCOME_OK, 0, awkward[i]};
        assert_int_equal(store_append_history(st, s->id, 1, &ev, awkward[i]), 0);
    }
    saga_event ev = {"big", -1, PHASE_ACTION, 0, -1, 0, big};
    assert_int_equal(store_append_history(st, s->id, 2, &ev, NULL), 0);
    assert_int_equal(store_commit(st), 0);
    event_log log = {.n = 0};
    assert_int_equal(store_history(st, s->id, collect_event, &log), 0);
    assert_int_equal(log.n, n + 1);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(log.ev[i].detail, awkward[i]);
    assert_string_equal(log.ev[n].detail, big);
    event_log_free(&log);

    /* And through a reopen. */
    store_close(st);
    st = open_ro(path);
    got = load(st, s->id);
    assert_saga_equal(s, got);
    saga_free(got);
    store_close(st);
    saga_free(s);
    free(big);
}

/* Checkpoints run off the commit path (a background pass per 1000 new WAL
 * frames); the committing thread finishes the copy past 8192 frames so the
 * log restarts: under a steady stream of commits the -wal file stays bounded,
 * and everything committed is there after a reopen. */
static void checkpoints_keep_the_log_bounded(void **state)
{
    (void)state;
    char path[512], wal[600];
    new_db_path(path, sizeof path);
    snprintf(wal, sizeof wal, "%s-wal", path);
    store *st = open_rw(path, 0);
    char detail[3001];
    memset(detail, 'h', sizeof detail - 1);
    detail[sizeof detail - 1] = '\0';
    const int n = 6000; /* each commit writes several pages: well past 8192 frames in all */
    const long frame = 4096 + 24, bound = 32 + 12000L * frame;
    long largest = 0;
    for (int i = 0; i < n; i++) {
        saga *s = new_saga(&defs[0], 100000 + i, NULL, 1000 + i);
        saga_event ev = {"step_sent", 0, PHASE_ACTION, 1, -1, 0, detail};
        assert_int_equal(store_begin(st), 0);
        assert_int_equal(store_save_saga(st, s), 0);
        assert_int_equal(store_append_history(st, s->id, 1000 + i, &ev, "reserve"), 0);
        assert_int_equal(store_commit(st), 0);
        saga_free(s);
        struct stat sb;
        if (i % 100 == 0 && stat(wal, &sb) == 0 && sb.st_size > largest)
            largest = (long)sb.st_size;
    }
    print_message("largest -wal seen: %ld bytes (%ld frames)\n", largest, largest / frame);
    assert_true(largest > 0);
    assert_true(largest <= bound);
    store_close(st);

    st = open_rw(path, 1);
    uint64_t counts[6] = {0};
    assert_int_equal(store_count_by_state(st, counts), 0);
    assert_int_equal(counts[SAGA_RUNNING], (uint64_t)n);
    char id[37];
    make_id(id, 100000 + n - 1);
    saga *last = load(st, id);
    saga_free(last);
    store_close(st);
}

/* A PostgreSQL URI's password never reaches a message or a log line
 * (docs/SECURITY.md); the rest of the URI stays, to say where. */
static void database_names_hide_passwords(void **state)
{
    (void)state;
    char out[256];
    db_url_display("postgresql://sagad:s3cret@db1/sagas?sslmode=require", out, sizeof out);
    assert_null(strstr(out, "s3cret"));
    assert_string_equal(out, "postgresql://sagad@db1/sagas?sslmode=require");
    db_url_display("postgres:///sagas?host=/run/pg&password=s3cret&user=u", out, sizeof out);
    assert_null(strstr(out, "s3cret"));
    assert_non_null(strstr(out, "user=u"));
    db_url_display("postgresql://h/db?password=a&password=s3cret", out, sizeof out);
    assert_null(strstr(out, "s3cret"));
    db_url_display("/var/lib/sagad/sagad.db", out, sizeof out);
    assert_string_equal(out, "/var/lib/sagad/sagad.db");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_insert_update_load),
        cmocka_unit_test(step_rows_hold_definition_and_keys),
        cmocka_unit_test(save_writes_only_what_is_dirty),
        cmocka_unit_test(save_errors_are_reported),
        cmocka_unit_test(history_appends_in_order),
        cmocka_unit_test(list_filters_and_pages),
        cmocka_unit_test(count_by_state),
        cmocka_unit_test(oldest_created),
        cmocka_unit_test(client_keys),
        cmocka_unit_test(load_unfinished_oldest_first),
        cmocka_unit_test(load_keeps_the_pinned_version),
        cmocka_unit_test(definitions_are_stored_once),
        cmocka_unit_test(migration_from_schema_1_pins_old_sagas),
        cmocka_unit_test(migration_from_schema_2_adds_deadlines),
        cmocka_unit_test(search_by_prefix_key_and_time),
        cmocka_unit_test(root_cause_kept_and_migrated),
        cmocka_unit_test(load_refuses_corrupt_rows),
        cmocka_unit_test(rollback_discards),
        cmocka_unit_test(failed_commit_rolls_back),
        cmocka_unit_test(reopen_keeps_committed_data),
        cmocka_unit_test(crash_keeps_committed_round_only),
        cmocka_unit_test(read_only_sees_committed_only),
        cmocka_unit_test(open_refuses_foreign_databases),
        cmocka_unit_test(awkward_strings_survive),
        cmocka_unit_test(checkpoints_keep_the_log_bounded),
        cmocka_unit_test(database_names_hide_passwords),
    };
    /* As sagad does: the databases this test makes with sqlite3_open are
     * private, or store_open refuses them (docs/SECURITY.md, "Private files"). */
    umask(077);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
