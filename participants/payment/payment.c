/*
 * payment-svc — the payment participant: debits customer accounts for a
 * saga ("charge") and credits them back when the saga is undone ("refund").
 *
 * Tables (money in integer minor units):
 *   accounts(customer, balance)       balance >= 0 (CHECK)
 *   charges(charge_id, saga_id, customer, order_id, amount, state, ...)
 *                                     state 'charged' -> 'refunded', never back
 *   meta('money_total')               sum of the seeded balances
 *   money_audit (view)                seeded_total, balances, charged, balanced
 *
 * Invariant (money is conserved): sum(accounts.balance) + sum(amount of
 * charges in state 'charged') = meta.money_total, at every commit. charge
 * moves `amount` from a balance into a 'charged' row; refund moves it back
 * and marks the row 'refunded'; nothing else writes either table.
 *
 * Exactly-once delivery, barriers and replays are the runtime's job
 * (participant.h); the handlers here run once per committed effect. They
 * use the neutral pt_tx API, so payment runs on SQLite or on PostgreSQL
 * (--db postgresql://...), where several replicas may share one database:
 * every check-then-write is a conditional UPDATE, so two replicas charging
 * one account at once never overdraw it.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service.h"
#include "util.h"

static const char payment_schema[] =
    "CREATE TABLE IF NOT EXISTS accounts (\n"
    "  customer TEXT PRIMARY KEY,\n"
    "  balance  INTEGER NOT NULL CHECK (typeof(balance) = 'integer' AND balance >= 0)\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS charges (\n"
    "  charge_id     TEXT PRIMARY KEY,\n"
    "  saga_id       TEXT NOT NULL,\n"
    "  customer      TEXT NOT NULL REFERENCES accounts (customer),\n"
    "  order_id      TEXT,\n"
    "  amount        INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),\n"
    "  state         TEXT NOT NULL CHECK (state IN ('charged', 'refunded')),\n"
    "  created_at_ms INTEGER NOT NULL,\n"
    "  updated_at_ms INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS charges_by_customer ON charges (customer);\n"
    "CREATE VIEW IF NOT EXISTS money_audit AS\n"
    "  SELECT seeded_total, balances, charged, balances + charged = seeded_total AS balanced\n"
    "  FROM (SELECT COALESCE((SELECT value FROM meta WHERE key = 'money_total'), 0)\n"
    "                 AS seeded_total,\n"
    "               (SELECT COALESCE(SUM(balance), 0) FROM accounts) AS balances,\n"
    "               (SELECT COALESCE(SUM(amount), 0) FROM charges WHERE state = 'charged')\n"
    "                 AS charged);\n";

/* The same tables on PostgreSQL (types checked by the column types). */
static const char payment_schema_pg[] =
    "CREATE TABLE IF NOT EXISTS accounts (\n"
    "  customer TEXT PRIMARY KEY,\n"
    "  balance  BIGINT NOT NULL CHECK (balance >= 0)\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS charges (\n"
    "  charge_id     TEXT PRIMARY KEY,\n"
    "  saga_id       TEXT NOT NULL,\n"
    "  customer      TEXT NOT NULL REFERENCES accounts (customer),\n"
    "  order_id      TEXT,\n"
    "  amount        BIGINT NOT NULL CHECK (amount > 0),\n"
    "  state         TEXT NOT NULL CHECK (state IN ('charged', 'refunded')),\n"
    "  created_at_ms BIGINT NOT NULL,\n"
    "  updated_at_ms BIGINT NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS charges_by_customer ON charges (customer);\n"
    "CREATE OR REPLACE VIEW money_audit AS\n"
    "  SELECT seeded_total, balances, charged, balances + charged = seeded_total AS balanced\n"
    "  FROM (SELECT COALESCE((SELECT value FROM meta WHERE key = 'money_total'), 0)\n"
    "                 AS seeded_total,\n"
    "               (SELECT COALESCE(SUM(balance), 0) FROM accounts) AS balances,\n"
    "               (SELECT COALESCE(SUM(amount), 0) FROM charges WHERE state = 'charged')\n"
    "                 AS charged) AS totals;\n";

static const char payment_count[] = "SELECT (SELECT count(*) FROM accounts) + "
                                    "(SELECT count(*) FROM charges)";

/* charge(customer, amount, [order_id]) -> charge_id */
static int payment_charge(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *customer, *order_id;
    int64_t amount, balance = 0, now = util_wall_ms();
    char charge_id[37];
    (void)arg;

    if (svc_param_name(req, reply, "customer", &customer) != 0 ||
        pt_param_i64(req, reply, "amount", 1, SVC_MAX_AMOUNT, &amount) != 0 ||
        svc_param_name_opt(req, reply, "order_id", &order_id) != 0)
        return PT_REJECTED;

    switch (pt_query_int(tx, &balance, "SELECT balance FROM accounts WHERE customer = $1", "t",
                         customer)) {
    case 1:
        break;
    case 0:
        return pt_reject(reply, "unknown customer '%s'", customer);
    default:
        return pt_tx_error(reply, tx);
    }
    if (balance < amount)
        return pt_reject(reply, "insufficient funds");
    if (util_uuid7(charge_id) != 0)
        return pt_retry(reply, "no randomness for a charge id");
    /* Conditional: on PostgreSQL another replica may have debited meanwhile. */
    if (pt_exec(tx,
                "UPDATE accounts SET balance = balance - $2 WHERE customer = $1 AND balance >= $2",
                "ti", customer, amount) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_affected(tx) != 1)
        return pt_reject(reply, "insufficient funds");
    if (pt_exec(tx,
                "INSERT INTO charges (charge_id, saga_id, customer, order_id, amount, state, "
                "created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, 'charged', $6, $6)",
                "ttttii", charge_id, req->saga_id, customer, order_id, amount, now) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_result_set(reply, "charge_id", charge_id) != 0)
        return pt_retry(reply, "out of memory");
    log_debug("saga %s: charging %lld to '%s' as %s", req->saga_id, (long long)amount, customer,
              charge_id);
    return PT_OK;
}

/* refund: undoes the charge named by the action's result (charge_id). */
static int payment_refund(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *charge_id;
    char customer[SVC_MAX_NAME + 1];
    int64_t amount, now = util_wall_ms();
    int charged, own;
    pt_rows *row;
    (void)arg;

    if (svc_action_id(req, reply, "charge_id", &charge_id) != 0)
        return PT_REJECTED;

    if (pt_query(tx, &row,
                 "SELECT customer, amount, state, CASE WHEN saga_id = $2 THEN 1 ELSE 0 END "
                 "FROM charges WHERE charge_id = $1",
                 "tt", charge_id, req->saga_id) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    switch (pt_next(row)) {
    case 1:
        break;
    case 0:
        return pt_reject(reply, "unknown charge '%s'", charge_id);
    default:
        return pt_tx_error(reply, tx);
    }
    own = pt_int(row, 3) == 1;
    /* Copy the row out and end the read before writing the same tables. */
    snprintf(customer, sizeof customer, "%s", pt_text(row, 0) ? pt_text(row, 0) : "");
    amount = pt_int(row, 1);
    charged = pt_text(row, 2) != NULL && strcmp(pt_text(row, 2), "charged") == 0;
    pt_rows_close(row);
    if (!own)
        return pt_reject(reply, "charge '%s' belongs to another saga", charge_id);

    if (charged) {
        /* Conditional: a concurrent refund on another replica moves the money once. */
        if (pt_exec(tx,
                    "UPDATE charges SET state = 'refunded', updated_at_ms = $2 "
                    "WHERE charge_id = $1 AND state = 'charged'",
                    "ti", charge_id, now) != PT_DB_OK)
            return pt_tx_error(reply, tx);
        if (pt_affected(tx) == 1) {
            if (pt_exec(tx, "UPDATE accounts SET balance = balance + $2 WHERE customer = $1",
                        "ti", customer, amount) != PT_DB_OK)
                return pt_tx_error(reply, tx);
            if (pt_affected(tx) != 1)
                return pt_reject(reply, "account '%s' of charge '%s' is missing", customer,
                                 charge_id);
            log_debug("saga %s: refunding %lld to '%s' (%s)", req->saga_id, (long long)amount,
                      customer, charge_id);
        }
    } else {
        /* Already refunded: the state a refund wants holds; nothing to move. */
        log_warn("saga %s: charge %s is already refunded", req->saga_id, charge_id);
    }
    if (pt_result_set(reply, "charge_id", charge_id) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

/*
 * Seed: accounts = ( { customer = "alice"; balance = 100000; }, ... );
 * Records the sum of the balances as meta.money_total.
 */
static int payment_seed(pt_tx *tx, const config_t *cfg, char *err, size_t errlen)
{
    static const char *const top[] = {"accounts", NULL};
    static const char *const entry[] = {"customer", "balance", NULL};
    const config_setting_t *accounts = config_lookup(cfg, "accounts");
    int64_t total = 0;
    int rc;

    if ((rc = svc_seed_only_keys(cfg, NULL, top, err, errlen)) != SVC_SEED_OK)
        return rc;
    if (accounts == NULL || !config_setting_is_list(accounts))
        return svc_seed_error(err, errlen, accounts ? accounts : config_root_setting(cfg),
                              "'accounts' must be a list of { customer; balance; } groups");
    for (int i = 0; i < config_setting_length(accounts); i++) {
        const config_setting_t *a = config_setting_get_elem(accounts, (unsigned)i);
        const char *customer;
        long long balance;

        if (!config_setting_is_group(a))
            return svc_seed_error(err, errlen, a, "an account must be a { } group");
        if ((rc = svc_seed_only_keys(cfg, a, entry, err, errlen)) != SVC_SEED_OK)
            return rc;
        if (!config_setting_lookup_string(a, "customer", &customer) || !svc_name_ok(customer))
            return svc_seed_error(err, errlen, a, "account needs a customer name of 1 to %d bytes",
                                  SVC_MAX_NAME);
        if (!config_setting_lookup_int64(a, "balance", &balance) || balance < 0 ||
            balance > SVC_MAX_BALANCE)
            return svc_seed_error(err, errlen, a,
                                  "account '%s' needs an integer balance in [0, %lld]", customer,
                                  SVC_MAX_BALANCE);
        rc = pt_exec(tx, "INSERT INTO accounts (customer, balance) VALUES ($1, $2)", "ti",
                     customer, (int64_t)balance);
        if (rc == PT_DB_CONSTRAINT)
            return svc_seed_error(err, errlen, a, "customer '%s' is listed twice", customer);
        if (rc != PT_DB_OK) {
            snprintf(err, errlen, "cannot insert account '%s': %s", customer, pt_tx_errmsg(tx));
            return SVC_SEED_DB_ERROR;
        }
        total += balance;
    }
    return svc_meta_set_tx(tx, "money_total", total, err, errlen);
}

static int payment_register(participant *p)
{
    return pt_register_tx(p, "charge", payment_charge, "refund", payment_refund, NULL);
}

static const svc_def payment_def = {
    .name = "payment",
    .summary = "Saga participant that charges customer accounts and refunds them.",
    .operations =
        "  charge   (action)       params: customer, amount (minor units, 1..1000000000),\n"
        "                                  order_id (optional, recorded with the charge)\n"
        "                          result: charge_id\n"
        "                          refused: \"unknown customer '<c>'\", \"insufficient funds\"\n"
        "  refund   (compensation) undoes the charge named by the action's charge_id\n",
    .schema_sql = payment_schema,
    .schema_pg = payment_schema_pg,
    .count_sql = payment_count,
    .seed = payment_seed,
    .audit_sql = "SELECT NOT balanced FROM money_audit",
    .register_ops = payment_register,
};

int main(int argc, char **argv)
{
    return svc_main(&payment_def, argc, argv);
}
