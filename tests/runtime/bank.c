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

#include "pg_cluster.h"
#include "util.h"

/* The same tables on both backends (ledger ids: SQLite's rowid alias, a PG identity). */
static const char bank_schema_sqlite[] =
    "CREATE TABLE IF NOT EXISTS accounts ("
    "  id TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0));"
    "CREATE TABLE IF NOT EXISTS ledger ("
    "  id INTEGER PRIMARY KEY, account TEXT NOT NULL, kind TEXT NOT NULL,"
    "  amount INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO accounts VALUES ('alice', 100), ('bob', 0);";
static const char bank_schema_pg[] =
    "CREATE TABLE IF NOT EXISTS accounts ("
    "  id TEXT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0));"
    "CREATE TABLE IF NOT EXISTS ledger ("
    "  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account TEXT NOT NULL,"
    "  kind TEXT NOT NULL, amount BIGINT NOT NULL);"
    "INSERT INTO accounts VALUES ('alice', 100), ('bob', 0) ON CONFLICT DO NOTHING;";

/* ---- Backend: SQLite files, or databases of one private PostgreSQL ------ */

static pg_cluster *bank_cluster;

int bank_on_pg(void)
{
    const char *b = getenv("SAGA_TEST_DATABASE");
    return b != NULL && strcmp(b, "postgresql") == 0;
}

pg_cluster *bank_pg_cluster(void)
{
    return bank_cluster;
}

char *bank_db_url(const char *path)
{
    char err[512], name[40];
    if (!bank_on_pg())
        return util_strdup(path);
    if (bank_cluster == NULL) { /* one per test program; pg_cluster stops it at exit */
        bank_cluster = pgc_start(0, err, sizeof err);
        if (bank_cluster == NULL) {
            print_error("pgc_start: %s\n", err);
            return NULL;
        }
    }
    /* One database per path, so a test that reopens its path finds its data. */
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = path; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    snprintf(name, sizeof name, "bank_%016llx", (unsigned long long)h);
    int64_t exists = 0;
    char *admin = pgc_url(bank_cluster, "postgres");
    if (admin == NULL ||
        pgc_sql_int(admin, &exists, "SELECT count(*) FROM pg_database WHERE datname = '%s'",
                    name) != 0 ||
        (exists == 0 && pgc_create_db(bank_cluster, name) != 0)) {
        free(admin);
        return NULL;
    }
    free(admin);
    return pgc_url(bank_cluster, name);
}

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

/* ---- Handlers (the neutral pt_tx API: the same on both backends) ------- */

static int bank_debit(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    const char *account;
    int64_t amount, debit_id, balance;
    st->debit_calls++;
    if (st->invalid_outcome)
        return 7;
    if (pt_param_str(req, reply, "account", &account) != 0 ||
        pt_param_i64(req, reply, "amount", 1, 1000000, &amount) != 0)
        return PT_REJECTED;
    /* The ledger row comes first: a refusal must roll it back. */
    if (pt_query_int(tx, &debit_id,
                     "INSERT INTO ledger(account, kind, amount) VALUES ($1, 'debit', $2)"
                     " RETURNING id",
                     "ti", account, amount) != 1)
        return pt_tx_error(reply, tx);
    if (st->retry_remaining > 0) {
        st->retry_remaining--;
        return pt_retry(reply, "bank is busy");
    }
    int rc = pt_query_int(tx, &balance, "SELECT balance FROM accounts WHERE id = $1", "t", account);
    if (rc == 0)
        return pt_reject(reply, "no account '%s'", account);
    if (rc != 1)
        return pt_tx_error(reply, tx);
    if (balance < amount)
        return pt_reject(reply, "insufficient funds: %lld < %lld", (long long)balance,
                         (long long)amount);
    if (pt_exec(tx, "UPDATE accounts SET balance = balance - $2 WHERE id = $1", "ti", account,
                amount) != PT_DB_OK)
        return pt_tx_error(reply, tx);
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

static int bank_credit(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    const char *id = kv_get(req->action_result, "debit_id");
    int64_t amount, debit_id, credit_id;
    st->credit_calls++;
    if (id == NULL || util_parse_i64(id, &debit_id) != 0)
        return pt_reject(reply, "action result has no 'debit_id'");
    snprintf(st->last_debit_id, sizeof st->last_debit_id, "%s", id);
    int rc = pt_query_int(tx, &amount, "SELECT amount FROM ledger WHERE id = $1", "i", debit_id);
    if (rc == 0)
        return pt_reject(reply, "no debit %s", id);
    if (rc != 1)
        return pt_tx_error(reply, tx);
    const char *account = pt_param(req, "account");
    if (account == NULL)
        return pt_reject(reply, "missing parameter 'account'");
    if (pt_query_int(tx, &credit_id,
                     "INSERT INTO ledger(account, kind, amount) VALUES ($1, 'credit', $2)"
                     " RETURNING id",
                     "ti", account, amount) != 1 ||
        pt_exec(tx, "UPDATE accounts SET balance = balance + $2 WHERE id = $1", "ti", account,
                amount) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_result_set_i64(reply, "credit_id", credit_id) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

static int bank_hold(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    (void)tx, (void)req;
    st->hold_calls++;
    return pt_result_set(reply, "hold_id", "h1") == 0 ? PT_OK : PT_RETRY;
}

static int bank_release(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    bank_state *st = arg;
    (void)tx, (void)req, (void)reply;
    st->release_calls++;
    return PT_OK;
}

/* ---- Setup ------------------------------------------------------------- */

static int bank_schema(pt_tx *tx, void *arg)
{
    (void)arg;
    return pt_exec_script(tx, pt_tx_backend(tx) == PT_BACKEND_POSTGRESQL ? bank_schema_pg
                                                                         : bank_schema_sqlite);
}

participant *bank_open(const pt_options *base, const char *path, bank_state *st)
{
    char err[512] = "";
    pt_options o = *base;
    char *url = bank_db_url(path);
    if (url == NULL)
        return NULL;
    o.db_path = url;
    participant *p = pt_create(&o, err, sizeof err);
    free(url);
    if (p == NULL) {
        print_error("pt_create: %s\n", err);
        return NULL;
    }
    if (pt_run(p, bank_schema, NULL, err, sizeof err) != 0) {
        print_error("schema: %s\n", err);
        pt_destroy(p);
        return NULL;
    }
    if (pt_register_tx(p, "debit", bank_debit, "credit", bank_credit, st) != 0 ||
        pt_register_tx(p, "hold", bank_hold, "release", bank_release, st) != 0) {
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

/* pt_run's callback of bank_scalar. */
typedef struct {
    const char *sql;
    const char *text; /* $1, or NULL */
    int64_t value;
    int found;
} bank_scalar_q;

static int bank_scalar_run(pt_tx *tx, void *arg)
{
    bank_scalar_q *q = arg;
    q->found = q->text ? pt_query_int(tx, &q->value, q->sql, "t", q->text)
                       : pt_query_int(tx, &q->value, q->sql, "");
    return q->found < 0 ? -1 : 0;
}

/* The integer sql returns on p's connection, -1 when no row or on error. */
static int64_t bank_scalar(participant *p, const char *sql, const char *text)
{
    char err[512];
    bank_scalar_q q = {sql, text, -1, 0};
    if (pt_run(p, bank_scalar_run, &q, err, sizeof err) != 0) {
        print_error("%s: %s\n", sql, err);
        return -1;
    }
    return q.found == 1 ? q.value : -1;
}

int64_t bank_balance(participant *p, const char *account)
{
    return bank_scalar(p, "SELECT balance FROM accounts WHERE id = $1", account);
}

int64_t bank_query(participant *p, const char *sql)
{
    return bank_scalar(p, sql, NULL);
}

int64_t bank_counter(participant *p, const char *name)
{
    return bank_scalar(p, "SELECT value FROM pt_counters WHERE name = $1", name);
}

typedef struct {
    const char *sql;
} bank_script_q;

static int bank_script_run(pt_tx *tx, void *arg)
{
    return pt_exec_script(tx, ((bank_script_q *)arg)->sql) == PT_DB_OK ? 0 : -1;
}

int bank_sql(participant *p, const char *sql)
{
    char err[512];
    bank_script_q q = {sql};
    if (pt_run(p, bank_script_run, &q, err, sizeof err) != 0) {
        print_error("%s: %s\n", sql, err);
        return -1;
    }
    return 0;
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
