/*
 * order-svc — the order participant: records a customer's order as
 * 'pending' when a saga starts ("create"), cancels it when the saga is
 * undone ("cancel") and approves it as the saga's last step ("approve").
 *
 * Table:
 *   orders(order_id, saga_id, customer, sku, quantity, amount, state, ...)
 *
 * State machine of an order (each transition by one handler, inside the
 * runtime's transaction; no other writer):
 *
 *              create             approve
 *     (none) ---------> pending ----------> approved
 *                          |
 *                          | cancel (compensation of create)
 *                          v
 *                      cancelled
 *
 *   - approve refuses an order that is not pending (or unknown, or of
 *     another saga): only a live order can complete.
 *   - cancel refuses an approved order (a completed saga is not undone by
 *     cancelling its order) and treats an already cancelled one as done.
 *
 * Order ids are random UUIDs: the runtime stores the reply of the first
 * delivery, so a retried create answers with the same id.
 *
 * The handlers use the neutral pt_tx API, so order runs on SQLite or on
 * PostgreSQL (--db postgresql://...), where several replicas may share one
 * database: every transition is a conditional UPDATE (WHERE state =
 * 'pending'), so an approve and a cancel racing on two replicas never both
 * apply.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "service.h"
#include "util.h"

static const char order_schema[] =
    "CREATE TABLE IF NOT EXISTS orders (\n"
    "  order_id      TEXT PRIMARY KEY,\n"
    "  saga_id       TEXT NOT NULL,\n"
    "  customer      TEXT NOT NULL,\n"
    "  sku           TEXT NOT NULL,\n"
    "  quantity      INTEGER NOT NULL CHECK (typeof(quantity) = 'integer' AND quantity > 0),\n"
    "  amount        INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),\n"
    "  state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'cancelled')),\n"
    "  created_at_ms INTEGER NOT NULL,\n"
    "  updated_at_ms INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS orders_by_saga ON orders (saga_id);\n";

/* The same table on PostgreSQL (types checked by the column types). */
static const char order_schema_pg[] =
    "CREATE TABLE IF NOT EXISTS orders (\n"
    "  order_id      TEXT PRIMARY KEY,\n"
    "  saga_id       TEXT NOT NULL,\n"
    "  customer      TEXT NOT NULL,\n"
    "  sku           TEXT NOT NULL,\n"
    "  quantity      BIGINT NOT NULL CHECK (quantity > 0),\n"
    "  amount        BIGINT NOT NULL CHECK (amount > 0),\n"
    "  state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'cancelled')),\n"
    "  created_at_ms BIGINT NOT NULL,\n"
    "  updated_at_ms BIGINT NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS orders_by_saga ON orders (saga_id);\n";

static const char order_count[] = "SELECT count(*) FROM orders";

/* create(customer, sku, quantity, amount) -> order_id */
static int order_create(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *customer, *sku;
    int64_t quantity, amount, now = util_wall_ms();
    char order_id[37];
    (void)arg;

    if (svc_param_name(req, reply, "customer", &customer) != 0 ||
        svc_param_name(req, reply, "sku", &sku) != 0 ||
        pt_param_i64(req, reply, "quantity", 1, SVC_MAX_QUANTITY, &quantity) != 0 ||
        pt_param_i64(req, reply, "amount", 1, SVC_MAX_AMOUNT, &amount) != 0)
        return PT_REJECTED;

    if (util_uuid7(order_id) != 0)
        return pt_retry(reply, "no randomness for an order id");
    if (pt_exec(tx,
                "INSERT INTO orders (order_id, saga_id, customer, sku, quantity, amount, state, "
                "created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)",
                "ttttiii", order_id, req->saga_id, customer, sku, quantity, amount,
                now) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_result_set(reply, "order_id", order_id) != 0)
        return pt_retry(reply, "out of memory");
    log_debug("saga %s: creating order %s for '%s'", req->saga_id, order_id, customer);
    return PT_OK;
}

/*
 * Reads the state of order_id into state[16] and whether it belongs to the
 * request's saga. Returns PT_OK, or a PT_REJECTED / PT_RETRY reply.
 */
static int order_lookup(pt_tx *tx, const pt_request *req, pt_reply *reply, const char *order_id,
                        char state[16])
{
    pt_rows *row;
    int result = PT_OK;

    if (pt_query(tx, &row,
                 "SELECT state, CASE WHEN saga_id = $2 THEN 1 ELSE 0 END FROM orders "
                 "WHERE order_id = $1",
                 "tt", order_id, req->saga_id) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    switch (pt_next(row)) {
    case 1:
        if (pt_int(row, 1) != 1)
            result = pt_reject(reply, "order '%s' belongs to another saga", order_id);
        else
            snprintf(state, 16, "%s", pt_text(row, 0) ? pt_text(row, 0) : "");
        break;
    case 0:
        result = pt_reject(reply, "unknown order '%s'", order_id);
        break;
    default:
        result = pt_tx_error(reply, tx);
        break;
    }
    pt_rows_close(row); /* end the read: the caller may write the row next */
    return result;
}

/*
 * Moves order_id from pending to state to (the caller saw it pending). The
 * UPDATE is conditional: on PostgreSQL a replica may have moved the order
 * meanwhile (an approve racing a cancel); then nothing is written and the
 * request answers RETRY, whose redelivery reads the new state.
 */
static int order_set_state(pt_tx *tx, const pt_request *req, pt_reply *reply, const char *order_id,
                           const char *to)
{
    (void)req;
    if (pt_exec(tx,
                "UPDATE orders SET state = $2, updated_at_ms = $3 "
                "WHERE order_id = $1 AND state = 'pending'",
                "tti", order_id, to, util_wall_ms()) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_affected(tx) != 1)
        return pt_retry(reply, "order '%s' changed meanwhile", order_id);
    if (pt_result_set(reply, "order_id", order_id) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

/* cancel: compensation of create; pending -> cancelled. */
static int order_cancel(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *order_id;
    char state[16];
    int rc;
    (void)arg;

    if (svc_action_id(req, reply, "order_id", &order_id) != 0)
        return PT_REJECTED;
    if ((rc = order_lookup(tx, req, reply, order_id, state)) != PT_OK)
        return rc;
    if (strcmp(state, "approved") == 0)
        return pt_reject(reply, "order '%s' is approved and cannot be cancelled", order_id);
    if (strcmp(state, "cancelled") == 0) {
        log_warn("saga %s: order %s is already cancelled", req->saga_id, order_id);
        return pt_result_set(reply, "order_id", order_id) == 0 ? PT_OK
                                                               : pt_retry(reply, "out of memory");
    }
    log_debug("saga %s: cancelling order %s", req->saga_id, order_id);
    return order_set_state(tx, req, reply, order_id, "cancelled");
}

/* approve(order_id): pending -> approved; the saga's final step, no compensation. */
static int order_approve(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *order_id;
    char state[16];
    int rc;
    (void)arg;

    if (svc_param_name(req, reply, "order_id", &order_id) != 0)
        return PT_REJECTED;
    if ((rc = order_lookup(tx, req, reply, order_id, state)) != PT_OK)
        return rc;
    if (strcmp(state, "pending") != 0)
        return pt_reject(reply, "order '%s' is %s, not pending", order_id, state);
    log_debug("saga %s: approving order %s", req->saga_id, order_id);
    return order_set_state(tx, req, reply, order_id, "approved");
}

/*
 * Seed: orders come only from sagas, so a seed file has no settings; it is
 * accepted (every service starts the same way) and anything in it refused.
 */
static int order_seed(pt_tx *tx, const config_t *cfg, char *err, size_t errlen)
{
    static const char *const none[] = {NULL};
    (void)tx;
    return svc_seed_only_keys(cfg, NULL, none, err, errlen);
}

static int order_register(participant *p)
{
    if (pt_register_tx(p, "create", order_create, "cancel", order_cancel, NULL) != 0)
        return -1;
    return pt_register_tx(p, "approve", order_approve, NULL, NULL, NULL);
}

static const svc_def order_def = {
    .name = "order",
    .summary = "Saga participant that records orders and approves or cancels them.",
    .operations = "  create   (action)       params: customer, sku, quantity (1..100000),\n"
                  "                                  amount (minor units, 1..1000000000)\n"
                  "                          result: order_id (a new order, state 'pending')\n"
                  "  cancel   (compensation) pending -> cancelled for the action's order_id\n"
                  "  approve  (action)       params: order_id; pending -> approved\n"
                  "                          result: order_id\n"
                  "                          refused: unknown order, order not pending\n",
    .schema_sql = order_schema,
    .schema_pg = order_schema_pg,
    .count_sql = order_count,
    .seed = order_seed,
    .audit_sql = NULL,
    .register_ops = order_register,
};

int main(int argc, char **argv)
{
    return svc_main(&order_def, argc, argv);
}
