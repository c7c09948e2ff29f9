/*
 * bank — a toy service for the participant runtime's tests.
 *
 * Schema: accounts(id, balance >= 0) seeded with alice = 100 and bob = 0,
 * and ledger(id, account, kind, amount): one row per committed effect.
 * Operations:
 *   debit  (action)       params account, amount in [1, 1000000]: writes a
 *                         ledger row FIRST, then refuses with "insufficient
 *                         funds" when the balance is short (so a refusal
 *                         that leaked SQL would show in the ledger);
 *                         result debit_id, balance.
 *   credit (compensation) undoes the debit named by action_result's
 *                         debit_id; result credit_id.
 *   hold / release        a second pair, to check a compensation is only
 *                         accepted for its own action.
 * Knobs in bank_state make handlers misbehave on purpose (retry, oversized
 * results, invalid outcomes).
 *
 * Handlers use the neutral pt_tx API, so every test runs on either backend.
 * Helpers build requests with wire_pack_request, run them through
 * pt_process_batch and decode the replies with saga__v1__step_reply__unpack.
 */
#ifndef SAGA_TEST_BANK_H
#define SAGA_TEST_BANK_H

#include <stddef.h>
#include <stdint.h>

#include "participant.h"
#include "wire.h"

typedef struct {
    int debit_calls;
    int credit_calls;
    int hold_calls;
    int release_calls;
    int retry_remaining;    /* debit: do its SQL, then PT_RETRY, this many times */
    int oversize_result;    /* debit: return a result beyond the wire limits */
    int invalid_outcome;    /* debit: return 7 */
    char last_debit_id[32]; /* credit: the debit_id its action_result carried */
} bank_state;

/* A request as a test writes it; NULL account/amount leave the param out. */
typedef struct {
    const char *key;
    const char *saga;
    const char *step;
    int phase;
    const char *op;
    const char *account;
    const char *amount;
} bank_req;

/* A decoded reply. */
typedef struct {
    int outcome;
    int replayed;
    char key[300];
    char error[600];
    kvmap result;
    size_t len; /* bytes on the wire */
} bank_reply;

/* A fresh temp directory (mkdtemp) and the paths in it. */
typedef struct {
    char dir[64];
    char db[128];
    char ipc[160]; /* "ipc://<dir>/bank.ipc" */
} bank_dir;

int bank_dir_make(bank_dir *d);
/* Removes the files in the directory and the directory. */
void bank_dir_remove(bank_dir *d);

/* Opens the runtime on path with the bank schema, seed and handlers. */
participant *bank_open(const pt_options *base, const char *path, bank_state *st);
/* The same with defaults; faults may be NULL. Fails the test on error. */
participant *bank_open_simple(const char *path, bank_state *st, const char *faults);

/* What most runtime tests share: a temp directory, the bank's state and the
 * participant (NULL until opened). */
typedef struct {
    bank_dir dir;
    bank_state st;
    participant *p;
} bank_fixture;

/* Makes the directory and, with open, opens the bank there (bank_open_simple).
 * Fails the test on error. */
void bank_fixture_init(bank_fixture *b, int open);
/* Destroys the participant and removes the directory. */
void bank_fixture_fini(bank_fixture *b);
/* cmocka setup and teardown around a malloc'd bank_fixture: with the bank
 * opened, or with the directory only (the test opens the bank itself). */
int bank_fixture_setup_open(void **state);
int bank_fixture_setup_dir(void **state);
int bank_fixture_teardown(void **state);

/* Packs r (malloc'd; caller frees). */
uint8_t *bank_pack(const bank_req *r, size_t *len);
/* Decodes a reply into out; returns 0 or -1. */
int bank_decode(const uint8_t *buf, size_t len, bank_reply *out);
void bank_reply_free(bank_reply *r);

/* Runs n requests as one batch; fails the test when the batch fails. */
void bank_batch(participant *p, size_t n, const bank_req *reqs, bank_reply *out);
/* Runs raw messages as one batch. */
void bank_batch_raw(participant *p, size_t n, const uint8_t *const *msgs, const size_t *lens,
                    bank_reply *out);
/* One request as its own batch. */
void bank_call(participant *p, const bank_req *r, bank_reply *out);

/* Balance of an account (-1 when absent), read on the runtime's connection (pt_run). */
int64_t bank_balance(participant *p, const char *account);
/* The integer a one-row, one-column query returns (-1 on error). */
int64_t bank_query(participant *p, const char *sql);
/* The persisted counter name from pt_counters. */
int64_t bank_counter(participant *p, const char *name);
/* Runs statements (no parameters) in one transaction on p's connection. 0 / -1. */
int bank_sql(participant *p, const char *sql);

/*
 * The backend: SQLite files, or with SAGA_TEST_DATABASE=postgresql databases
 * of ONE private PostgreSQL cluster per test program (pg_cluster.h), started
 * at the first use. bank_db_url maps a test's database path to what
 * pt_options.db_path takes: the path itself, or the URL of a database made
 * for that path (the same path gives the same database, so restarts find
 * their data). malloc'd; NULL on failure (printed).
 */
int bank_on_pg(void);
/* The program's cluster (NULL before the first bank_db_url on PostgreSQL). */
typedef struct pg_cluster pg_cluster;
pg_cluster *bank_pg_cluster(void);
char *bank_db_url(const char *path);

#endif
