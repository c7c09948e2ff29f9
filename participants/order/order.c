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

static const char order_count[] = "SELECT count(*) FROM orders";

/* create(customer, sku, quantity, amount) -> order_id */
static int order_create(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *customer, *sku;
    int64_t quantity, amount, now = util_wall_ms();
    char order_id[37];

    if (svc_param_name(req, reply, "customer", &customer) != 0 ||
        svc_param_name(req, reply, "sku", &sku) != 0 ||
        pt_param_i64(req, reply, "quantity", 1, SVC_MAX_QUANTITY, &quantity) != 0 ||
        pt_param_i64(req, reply, "amount", 1, SVC_MAX_AMOUNT, &amount) != 0)
        return PT_REJECTED;

    if (util_uuid7(order_id) != 0)
        return pt_retry(reply, "no randomness for an order id");
    if (svc_run(req,
                "INSERT INTO orders (order_id, saga_id, customer, sku, quantity, amount, state, "
                "created_at_ms, updated_at_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
                "ttttiii", order_id, req->saga_id, customer, sku, quantity, amount,
                now) != SQLITE_OK)
        return pt_db_error(reply, db);
    if (pt_result_set(reply, "order_id", order_id) != 0)
        return pt_retry(reply, "out of memory");
    log_debug("saga %s: creating order %s for '%s'", req->saga_id, order_id, customer);
    return PT_OK;
}

/*
 * Reads the state of order_id into state[16] and whether it belongs to the
 * request's saga. Returns PT_OK, or a PT_REJECTED / PT_RETRY reply.
 */
static int order_lookup(sqlite3 *db, const pt_request *req, pt_reply *reply, const char *order_id,
                        char state[16])
{
    sqlite3_stmt *st = NULL;
    int result = PT_OK;

    if (svc_prepare(req, &st, "SELECT state, saga_id = ?2 FROM orders WHERE order_id = ?1", "tt",
                    order_id, req->saga_id) != SQLITE_OK)
        return pt_db_error(reply, db);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW:
        if (sqlite3_column_int(st, 1) != 1)
            result = pt_reject(reply, "order '%s' belongs to another saga", order_id);
        else
            snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 0));
        break;
    case SQLITE_DONE:
        result = pt_reject(reply, "unknown order '%s'", order_id);
        break;
    default:
        result = pt_db_error(reply, db);
        break;
    }
    sqlite3_reset(st); /* end the read: the caller may write the row next */
    return result;
}

/* Moves order_id to state to (the caller checked the current state). */
static int order_set_state(sqlite3 *db, const pt_request *req, pt_reply *reply,
                           const char *order_id, const char *to)
{
    if (svc_run(req, "UPDATE orders SET state = ?2, updated_at_ms = ?3 WHERE order_id = ?1", "tti",
                order_id, to, util_wall_ms()) != SQLITE_OK)
        return pt_db_error(reply, db);
    if (pt_result_set(reply, "order_id", order_id) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

/* cancel: compensation of create; pending -> cancelled. */
static int order_cancel(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *order_id;
    char state[16];
    int rc;

    if (svc_action_id(req, reply, "order_id", &order_id) != 0)
        return PT_REJECTED;
    if ((rc = order_lookup(db, req, reply, order_id, state)) != PT_OK)
        return rc;
    if (strcmp(state, "approved") == 0)
        return pt_reject(reply, "order '%s' is approved and cannot be cancelled", order_id);
    if (strcmp(state, "cancelled") == 0) {
        log_warn("saga %s: order %s is already cancelled", req->saga_id, order_id);
        return pt_result_set(reply, "order_id", order_id) == 0 ? PT_OK
                                                               : pt_retry(reply, "out of memory");
    }
    log_debug("saga %s: cancelling order %s", req->saga_id, order_id);
    return order_set_state(db, req, reply, order_id, "cancelled");
}

/* approve(order_id): pending -> approved; the saga's final step, no compensation. */
static int order_approve(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *order_id;
    char state[16];
    int rc;

    if (svc_param_name(req, reply, "order_id", &order_id) != 0)
        return PT_REJECTED;
    if ((rc = order_lookup(db, req, reply, order_id, state)) != PT_OK)
        return rc;
    if (strcmp(state, "pending") != 0)
        return pt_reject(reply, "order '%s' is %s, not pending", order_id, state);
    log_debug("saga %s: approving order %s", req->saga_id, order_id);
    return order_set_state(db, req, reply, order_id, "approved");
}

/*
 * Seed: orders come only from sagas, so a seed file has no settings; it is
 * accepted (every service starts the same way) and anything in it refused.
 */
static int order_seed(sqlite3 *db, const config_t *cfg, char *err, size_t errlen)
{
    static const char *const none[] = {NULL};
    return svc_seed_only_keys(cfg, NULL, none, err, errlen);
}

static int order_register(participant *p)
{
    if (pt_register(p, "create", order_create, "cancel", order_cancel, NULL) != 0)
        return -1;
    return pt_register(p, "approve", order_approve, NULL, NULL, NULL);
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
    .count_sql = order_count,
    .seed = order_seed,
    .audit_sql = NULL,
    .register_ops = order_register,
};

int main(int argc, char **argv)
{
    return svc_main(&order_def, argc, argv);
}
