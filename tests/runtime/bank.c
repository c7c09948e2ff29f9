/* bank — the toy service of the runtime tests; see bank.h. */
#include "bank.h"

#include <dirent.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

static const char bank_schema[] =
    "CREATE TABLE IF NOT EXISTS accounts ("
    "  id TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0));"
    "CREATE TABLE IF NOT EXISTS ledger ("
    "  id INTEGER PRIMARY KEY, account TEXT NOT NULL, kind TEXT NOT NULL,"
    "  amount INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO accounts VALUES ('alice', 100), ('bob', 0);";

int bank_dir_make(bank_dir *d)
{
    snprintf(d->dir, sizeof d->dir, "/tmp/pt-test-XXXXXX");
    if (mkdtemp(d->dir) == NULL)
        return -1;
    snprintf(d->db, sizeof d->db, "%s/bank.db", d->dir);
    snprintf(d->ipc, sizeof d->ipc, "ipc://%s/bank.ipc", d->dir);
    return 0;
}

void bank_dir_remove(bank_dir *d)
{
    DIR *dir = opendir(d->dir);
    if (dir == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", d->dir, e->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(d->dir);
}

/* ---- Handlers ---------------------------------------------------------- */

static int64_t bank_scalar(sqlite3 *db, const char *sql, const char *text, int *rc)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    *rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (*rc != SQLITE_OK)
        return -1;
    if (text)
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    *rc = sqlite3_step(st);
    if (*rc == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
        *rc = SQLITE_OK;
    } else if (*rc == SQLITE_DONE) {
        *rc = SQLITE_NOTFOUND;
    }
    sqlite3_finalize(st);
    return v;
}

static int bank_exec(sqlite3 *db, const char *sql, const char *a, int64_t n)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, n);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bank_debit(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    const char *account;
    int64_t amount;
    int rc;
    st->debit_calls++;
    if (st->invalid_outcome)
        return 7;
    if (pt_param_str(req, reply, "account", &account) != 0 ||
        pt_param_i64(req, reply, "amount", 1, 1000000, &amount) != 0)
        return PT_REJECTED;
    /* The ledger row comes first: a refusal must roll it back. */
    if (bank_exec(db, "INSERT INTO ledger(account, kind, amount) VALUES (?1, 'debit', ?2)", account,
                  amount) != SQLITE_OK)
        return pt_db_error(reply, db);
    int64_t debit_id = sqlite3_last_insert_rowid(db);
    if (st->retry_remaining > 0) {
        st->retry_remaining--;
        return pt_retry(reply, "bank is busy");
    }
    int64_t balance = bank_scalar(db, "SELECT balance FROM accounts WHERE id = ?1", account, &rc);
    if (rc == SQLITE_NOTFOUND)
        return pt_reject(reply, "no account '%s'", account);
    if (rc != SQLITE_OK)
        return pt_db_error(reply, db);
    if (balance < amount)
        return pt_reject(reply, "insufficient funds: %lld < %lld", (long long)balance,
                         (long long)amount);
    if (bank_exec(db, "UPDATE accounts SET balance = balance - ?2 WHERE id = ?1", account,
                  amount) != SQLITE_OK)
        return pt_db_error(reply, db);
    if (pt_result_set_i64(reply, "debit_id", debit_id) != 0 ||
        pt_result_set_i64(reply, "balance", balance - amount) != 0)
        return pt_retry(reply, "out of memory");
    if (st->oversize_result) {
        static char big[4001];
        memset(big, 'x', sizeof big - 1);
        for (int i = 0; i < 20; i++) {
            char name[16];
            snprintf(name, sizeof name, "blob%02d", i);
            if (pt_result_set(reply, name, big) != 0)
                return pt_retry(reply, "out of memory");
        }
    }
    return PT_OK;
}

static int bank_credit(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    const char *id = kv_get(req->action_result, "debit_id");
    int rc;
    st->credit_calls++;
    if (id == NULL)
        return pt_reject(reply, "action result has no 'debit_id'");
    snprintf(st->last_debit_id, sizeof st->last_debit_id, "%s", id);
    int64_t amount = bank_scalar(db, "SELECT amount FROM ledger WHERE id = ?1", id, &rc);
    if (rc != SQLITE_OK)
        return pt_reject(reply, "no debit %s", id);
    const char *account = pt_param(req, "account");
    if (account == NULL)
        return pt_reject(reply, "missing parameter 'account'");
    if (bank_exec(db, "INSERT INTO ledger(account, kind, amount) VALUES (?1, 'credit', ?2)",
                  account, amount) != SQLITE_OK ||
        bank_exec(db, "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1", account,
                  amount) != SQLITE_OK)
        return pt_db_error(reply, db);
    if (pt_result_set_i64(reply, "credit_id", sqlite3_last_insert_rowid(db)) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

static int bank_hold(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    st->hold_calls++;
    return pt_result_set(reply, "hold_id", "h1") == 0 ? PT_OK : PT_RETRY;
}

static int bank_release(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    st->release_calls++;
    return PT_OK;
}

/* ---- Setup ------------------------------------------------------------- */

participant *bank_open(const pt_options *base, const char *path, bank_state *st)
{
    char err[256] = "";
    pt_options o = *base;
    o.db_path = path;
    participant *p = pt_create(&o, err, sizeof err);
    if (p == NULL) {
        print_error("pt_create: %s\n", err);
        return NULL;
    }
    char *msg = NULL;
    if (sqlite3_exec(pt_db(p), bank_schema, NULL, NULL, &msg) != SQLITE_OK) {
        print_error("schema: %s\n", msg);
        sqlite3_free(msg);
        pt_destroy(p);
        return NULL;
    }
    if (pt_register(p, "debit", bank_debit, "credit", bank_credit, st) != 0 ||
        pt_register(p, "hold", bank_hold, "release", bank_release, st) != 0) {
        pt_destroy(p);
        return NULL;
    }
    return p;
}

participant *bank_open_simple(const char *path, bank_state *st, const char *faults)
{
    pt_options o = {.name = "bank", .faults = faults};
    participant *p = bank_open(&o, path, st);
    assert_non_null(p);
    return p;
}

/* ---- Requests and replies ---------------------------------------------- */

uint8_t *bank_pack(const bank_req *r, size_t *len)
{
    kvmap params = KVMAP_INIT;
    if (r->account)
        assert_int_equal(kv_set(&params, "account", r->account), 0);
    if (r->amount)
        assert_int_equal(kv_set(&params, "amount", r->amount), 0);
    uint8_t *buf = wire_pack_request(r->key, r->saga, r->step, r->phase, r->op, 1, &params, len);
    kv_free(&params);
    assert_non_null(buf);
    return buf;
}

int bank_decode(const uint8_t *buf, size_t len, bank_reply *out)
{
    memset(out, 0, sizeof *out);
    StepReply *rep = saga__v1__step_reply__unpack(NULL, len, buf);
    if (rep == NULL)
        return -1;
    out->outcome = (int)rep->outcome;
    out->replayed = rep->replayed;
    snprintf(out->key, sizeof out->key, "%s", rep->idempotency_key);
    snprintf(out->error, sizeof out->error, "%s", rep->error);
    int rc = wire_result_to_kv(rep, &out->result);
    out->len = len;
    saga__v1__step_reply__free_unpacked(rep, NULL);
    return rc;
}

void bank_reply_free(bank_reply *r)
{
    kv_free(&r->result);
}

void bank_batch_raw(participant *p, size_t n, const uint8_t *const *msgs, const size_t *lens,
                    bank_reply *out)
{
    uint8_t **replies = calloc(n, sizeof *replies);
    size_t *rlens = calloc(n, sizeof *rlens);
    assert_non_null(replies);
    assert_non_null(rlens);
    assert_int_equal(pt_process_batch(p, n, msgs, lens, replies, rlens), 0);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(replies[i]);
        assert_true(rlens[i] <= WIRE_MAX_MSG);
        assert_int_equal(bank_decode(replies[i], rlens[i], &out[i]), 0);
        free(replies[i]);
    }
    free(replies);
    free(rlens);
}

void bank_batch(participant *p, size_t n, const bank_req *reqs, bank_reply *out)
{
    uint8_t **msgs = calloc(n, sizeof *msgs);
    size_t *lens = calloc(n, sizeof *lens);
    assert_non_null(msgs);
    assert_non_null(lens);
    for (size_t i = 0; i < n; i++)
        msgs[i] = bank_pack(&reqs[i], &lens[i]);
    bank_batch_raw(p, n, (const uint8_t *const *)msgs, lens, out);
    for (size_t i = 0; i < n; i++)
        free(msgs[i]);
    free(msgs);
    free(lens);
}

void bank_call(participant *p, const bank_req *r, bank_reply *out)
{
    bank_batch(p, 1, r, out);
}

int64_t bank_balance(participant *p, const char *account)
{
    int rc;
    int64_t v = bank_scalar(pt_db(p), "SELECT balance FROM accounts WHERE id = ?1", account, &rc);
    return rc == SQLITE_OK ? v : -1;
}

int64_t bank_query(sqlite3 *db, const char *sql)
{
    int rc;
    int64_t v = bank_scalar(db, sql, NULL, &rc);
    return rc == SQLITE_OK ? v : -1;
}

int64_t bank_counter(sqlite3 *db, const char *name)
{
    int rc;
    int64_t v = bank_scalar(db, "SELECT value FROM pt_counters WHERE name = ?1", name, &rc);
    return rc == SQLITE_OK ? v : -1;
}

void bank_fixture_init(bank_fixture *b, int open)
{
    memset(b, 0, sizeof *b);
    assert_int_equal(bank_dir_make(&b->dir), 0);
    if (open)
        b->p = bank_open_simple(b->dir.db, &b->st, NULL);
}

void bank_fixture_fini(bank_fixture *b)
{
    pt_destroy(b->p);
    b->p = NULL;
    bank_dir_remove(&b->dir);
}

static int bank_fixture_setup(void **state, int open)
{
    bank_fixture *b = malloc(sizeof *b);
    assert_non_null(b);
    bank_fixture_init(b, open);
    *state = b;
    return 0;
}

int bank_fixture_setup_open(void **state)
{
    return bank_fixture_setup(state, 1);
}

int bank_fixture_setup_dir(void **state)
{
    return bank_fixture_setup(state, 0);
}

int bank_fixture_teardown(void **state)
{
    bank_fixture_fini(*state);
    free(*state);
    return 0;
}
