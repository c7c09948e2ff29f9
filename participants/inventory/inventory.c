/*
 * inventory-svc — the inventory participant: holds stock of a SKU for a saga
 * ("reserve") and puts it back when the saga is undone ("release").
 *
 * Tables:
 *   skus(sku, available, reserved, stock)
 *                    available >= 0, reserved >= 0 and available + reserved =
 *                    stock (CHECK), where stock is the seeded quantity and is
 *                    never written after seeding
 *   reservations(reservation_id, saga_id, sku, order_id, quantity, state, ...)
 *                    state 'reserved' -> 'released', never back
 *   meta('stock_total')  sum of the seeded stock of all SKUs
 *   stock_audit (view)   per SKU: stock, available, reserved, held (sum of
 *                        the quantities of its 'reserved' rows), balanced
 *
 * Invariants: per SKU, available + reserved = stock at every commit (the
 * CHECK makes a violating statement fail), and reserved = the sum of the
 * quantities of the SKU's reservations in state 'reserved' (reserve and
 * release move the same quantity in the same transaction as the row).
 *
 * The handlers use the neutral pt_tx API, so inventory runs on SQLite or on
 * PostgreSQL (--db postgresql://...), where several replicas may share one
 * database: the stock check is part of the UPDATE (WHERE available >= n)
 * and a release moves its stock only if its own conditional UPDATE turned
 * the reservation to 'released', so racing replicas never oversell nor
 * return stock twice.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service.h"
#include "util.h"

static const char inventory_schema[] =
    "CREATE TABLE IF NOT EXISTS skus (\n"
    "  sku       TEXT PRIMARY KEY,\n"
    "  available INTEGER NOT NULL CHECK (typeof(available) = 'integer' AND available >= 0),\n"
    "  reserved  INTEGER NOT NULL CHECK (typeof(reserved) = 'integer' AND reserved >= 0),\n"
    "  stock     INTEGER NOT NULL CHECK (typeof(stock) = 'integer'),\n"
    "  CHECK (available + reserved = stock)\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS reservations (\n"
    "  reservation_id TEXT PRIMARY KEY,\n"
    "  saga_id        TEXT NOT NULL,\n"
    "  sku            TEXT NOT NULL REFERENCES skus (sku),\n"
    "  order_id       TEXT,\n"
    "  quantity       INTEGER NOT NULL CHECK (typeof(quantity) = 'integer' AND quantity > 0),\n"
    "  state          TEXT NOT NULL CHECK (state IN ('reserved', 'released')),\n"
    "  created_at_ms  INTEGER NOT NULL,\n"
    "  updated_at_ms  INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS reservations_by_sku ON reservations (sku, state);\n"
    "CREATE VIEW IF NOT EXISTS stock_audit AS\n"
    "  SELECT sku, stock, available, reserved, held,\n"
    "         available + reserved = stock AND reserved = held AS balanced\n"
    "  FROM (SELECT s.sku, s.stock, s.available, s.reserved,\n"
    "               (SELECT COALESCE(SUM(r.quantity), 0) FROM reservations r\n"
    "                WHERE r.sku = s.sku AND r.state = 'reserved') AS held\n"
    "        FROM skus s);\n";

/* The same tables on PostgreSQL (types checked by the column types). */
static const char inventory_schema_pg[] =
    "CREATE TABLE IF NOT EXISTS skus (\n"
    "  sku       TEXT PRIMARY KEY,\n"
    "  available BIGINT NOT NULL CHECK (available >= 0),\n"
    "  reserved  BIGINT NOT NULL CHECK (reserved >= 0),\n"
    "  stock     BIGINT NOT NULL,\n"
    "  CHECK (available + reserved = stock)\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS reservations (\n"
    "  reservation_id TEXT PRIMARY KEY,\n"
    "  saga_id        TEXT NOT NULL,\n"
    "  sku            TEXT NOT NULL REFERENCES skus (sku),\n"
    "  order_id       TEXT,\n"
    "  quantity       BIGINT NOT NULL CHECK (quantity > 0),\n"
    "  state          TEXT NOT NULL CHECK (state IN ('reserved', 'released')),\n"
    "  created_at_ms  BIGINT NOT NULL,\n"
    "  updated_at_ms  BIGINT NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS reservations_by_sku ON reservations (sku, state);\n"
    "CREATE OR REPLACE VIEW stock_audit AS\n"
    "  SELECT sku, stock, available, reserved, held,\n"
    "         available + reserved = stock AND reserved = held AS balanced\n"
    "  FROM (SELECT s.sku, s.stock, s.available, s.reserved,\n"
    "               (SELECT COALESCE(SUM(r.quantity), 0) FROM reservations r\n"
    "                WHERE r.sku = s.sku AND r.state = 'reserved') AS held\n"
    "        FROM skus s) AS per_sku;\n";

static const char inventory_count[] = "SELECT (SELECT count(*) FROM skus) + "
                                      "(SELECT count(*) FROM reservations)";

/* reserve(sku, quantity, [order_id]) -> reservation_id */
static int inventory_reserve(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *sku, *order_id;
    int64_t quantity, available = 0, now = util_wall_ms();
    char reservation_id[37];
    (void)arg;

    if (svc_param_name(req, reply, "sku", &sku) != 0 ||
        pt_param_i64(req, reply, "quantity", 1, SVC_MAX_QUANTITY, &quantity) != 0 ||
        svc_param_name_opt(req, reply, "order_id", &order_id) != 0)
        return PT_REJECTED;

    switch (pt_query_int(tx, &available, "SELECT available FROM skus WHERE sku = $1", "t", sku)) {
    case 1:
        break;
    case 0:
        return pt_reject(reply, "unknown sku '%s'", sku);
    default:
        return pt_tx_error(reply, tx);
    }
    if (available < quantity)
        return pt_reject(reply, "out of stock: sku '%s' has %lld available, %lld requested", sku,
                         (long long)available, (long long)quantity);
    if (util_uuid7(reservation_id) != 0)
        return pt_retry(reply, "no randomness for a reservation id");
    /* Conditional: on PostgreSQL another replica may have reserved meanwhile. */
    if (pt_exec(tx,
                "UPDATE skus SET available = available - $2, reserved = reserved + $2 "
                "WHERE sku = $1 AND available >= $2",
                "ti", sku, quantity) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_affected(tx) != 1)
        return pt_reject(reply, "out of stock: sku '%s' has fewer than %lld available", sku,
                         (long long)quantity);
    if (pt_exec(tx,
                "INSERT INTO reservations (reservation_id, saga_id, sku, order_id, quantity, "
                "state, created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $4, $5, 'reserved', $6, $6)",
                "ttttii", reservation_id, req->saga_id, sku, order_id, quantity, now) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_result_set(reply, "reservation_id", reservation_id) != 0)
        return pt_retry(reply, "out of memory");
    log_debug("saga %s: reserving %lld of '%s' as %s", req->saga_id, (long long)quantity, sku,
              reservation_id);
    return PT_OK;
}

/* release: returns the stock held by the action's reservation_id. */
static int inventory_release(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *reservation_id;
    char sku[SVC_MAX_NAME + 1];
    int64_t quantity, now = util_wall_ms();
    int reserved, own;
    pt_rows *row;
    (void)arg;

    if (svc_action_id(req, reply, "reservation_id", &reservation_id) != 0)
        return PT_REJECTED;

    if (pt_query(tx, &row,
                 "SELECT sku, quantity, state, CASE WHEN saga_id = $2 THEN 1 ELSE 0 END "
                 "FROM reservations WHERE reservation_id = $1",
                 "tt", reservation_id, req->saga_id) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    switch (pt_next(row)) {
    case 1:
        break;
    case 0:
        return pt_reject(reply, "unknown reservation '%s'", reservation_id);
    default:
        return pt_tx_error(reply, tx);
    }
    own = pt_int(row, 3) == 1;
    /* Copy the row out and end the read before writing the same tables. */
    snprintf(sku, sizeof sku, "%s", pt_text(row, 0) ? pt_text(row, 0) : "");
    quantity = pt_int(row, 1);
    reserved = pt_text(row, 2) != NULL && strcmp(pt_text(row, 2), "reserved") == 0;
    pt_rows_close(row);
    if (!own)
        return pt_reject(reply, "reservation '%s' belongs to another saga", reservation_id);

    if (reserved) {
        /* Conditional: a concurrent release on another replica returns the stock once. */
        if (pt_exec(tx,
                    "UPDATE reservations SET state = 'released', updated_at_ms = $2 "
                    "WHERE reservation_id = $1 AND state = 'reserved'",
                    "ti", reservation_id, now) != PT_DB_OK)
            return pt_tx_error(reply, tx);
        if (pt_affected(tx) == 1) {
            if (pt_exec(tx,
                        "UPDATE skus SET available = available + $2, reserved = reserved - $2 "
                        "WHERE sku = $1",
                        "ti", sku, quantity) != PT_DB_OK)
                return pt_tx_error(reply, tx);
            if (pt_affected(tx) != 1)
                return pt_reject(reply, "sku '%s' of reservation '%s' is missing", sku,
                                 reservation_id);
            log_debug("saga %s: releasing %lld of '%s' (%s)", req->saga_id, (long long)quantity,
                      sku, reservation_id);
        }
    } else {
        /* Already released: the state a release wants holds; nothing to move. */
        log_warn("saga %s: reservation %s is already released", req->saga_id, reservation_id);
    }
    if (pt_result_set(reply, "reservation_id", reservation_id) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

/*
 * Seed: skus = ( { sku = "widget"; stock = 100; }, ... );
 * Every SKU starts fully available; meta.stock_total is the sum.
 */
static int inventory_seed(pt_tx *tx, const config_t *cfg, char *err, size_t errlen)
{
    static const char *const top[] = {"skus", NULL};
    static const char *const entry[] = {"sku", "stock", NULL};
    const config_setting_t *skus = config_lookup(cfg, "skus");
    int64_t total = 0;
    int rc;

    if ((rc = svc_seed_only_keys(cfg, NULL, top, err, errlen)) != SVC_SEED_OK)
        return rc;
    if (skus == NULL || !config_setting_is_list(skus))
        return svc_seed_error(err, errlen, skus ? skus : config_root_setting(cfg),
                              "'skus' must be a list of { sku; stock; } groups");
    for (int i = 0; i < config_setting_length(skus); i++) {
        const config_setting_t *s = config_setting_get_elem(skus, (unsigned)i);
        const char *sku;
        long long stock;

        if (!config_setting_is_group(s))
            return svc_seed_error(err, errlen, s, "a sku must be a { } group");
        if ((rc = svc_seed_only_keys(cfg, s, entry, err, errlen)) != SVC_SEED_OK)
            return rc;
        if (!config_setting_lookup_string(s, "sku", &sku) || !svc_name_ok(sku))
            return svc_seed_error(err, errlen, s, "entry needs a sku name of 1 to %d bytes",
                                  SVC_MAX_NAME);
        if (!config_setting_lookup_int64(s, "stock", &stock) || stock < 0 || stock > SVC_MAX_STOCK)
            return svc_seed_error(err, errlen, s, "sku '%s' needs an integer stock in [0, %lld]",
                                  sku, SVC_MAX_STOCK);
        rc =
            pt_exec(tx, "INSERT INTO skus (sku, available, reserved, stock) VALUES ($1, $2, 0, $2)",
                    "ti", sku, (int64_t)stock);
        if (rc == PT_DB_CONSTRAINT)
            return svc_seed_error(err, errlen, s, "sku '%s' is listed twice", sku);
        if (rc != PT_DB_OK) {
            snprintf(err, errlen, "cannot insert sku '%s': %s", sku, pt_tx_errmsg(tx));
            return SVC_SEED_DB_ERROR;
        }
        total += stock;
    }
    return svc_meta_set_tx(tx, "stock_total", total, err, errlen);
}

static int inventory_register(participant *p)
{
    return pt_register_tx(p, "reserve", inventory_reserve, "release", inventory_release, NULL);
}

static const svc_def inventory_def = {
    .name = "inventory",
    .summary = "Saga participant that reserves stock of a SKU and releases it.",
    .operations =
        "  reserve  (action)       params: sku, quantity (1..100000),\n"
        "                                  order_id (optional, recorded with the reservation)\n"
        "                          result: reservation_id\n"
        "                          refused: \"unknown sku '<s>'\", \"out of stock: ...\"\n"
        "  release  (compensation) returns the stock of the action's reservation_id\n",
    .schema_sql = inventory_schema,
    .schema_pg = inventory_schema_pg,
    .count_sql = inventory_count,
    .seed = inventory_seed,
    .audit_sql = "SELECT count(*) FROM stock_audit WHERE NOT balanced",
    .register_ops = inventory_register,
};

int main(int argc, char **argv)
{
    return svc_main(&inventory_def, argc, argv);
}
