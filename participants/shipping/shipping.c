/*
 * shipping-svc — the shipping participant: schedules a shipment to a served
 * destination for a saga ("schedule") and cancels it when the saga is undone
 * ("cancel").
 *
 * Tables:
 *   destinations(destination)   the cities served, from the seed; matched
 *                               without regard to ASCII case
 *   shipments(shipment_id, saga_id, destination, order_id, customer, state, ...)
 *                               state 'scheduled' -> 'cancelled', never back;
 *                               names whom it is for: order_id or customer
 *                               (CHECK), and a served destination spelled as
 *                               in the destinations table
 *   meta('destination_count')   how many destinations the seed listed
 *   carrier_bookings(shipment_id, booking_ref, state)
 *                               with --carrier-url: the carrier's booking of
 *                               each shipment, 'booked' -> 'cancelled'
 *
 * With --carrier-url, schedule books the parcel with the carrier and cancel
 * cancels that booking: effects outside the database, each made under the
 * key pt_external_begin gives (participant.h), so a retry after a crash
 * between the carrier's answer and the commit books nothing twice.
 *
 * The handlers use the neutral pt_tx API, so shipping runs on SQLite or on
 * PostgreSQL (--db postgresql://...); there the in-flight markers are a
 * table of the same database (store_pg.c), shared by replicas.
 */
#include <stdio.h>
#include <string.h>

#include "carrier.h"
#include "log.h"
#include "service.h"
#include "util.h"

static const char shipping_schema[] =
    "CREATE TABLE IF NOT EXISTS destinations (\n"
    "  destination TEXT PRIMARY KEY COLLATE NOCASE\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS shipments (\n"
    "  shipment_id   TEXT PRIMARY KEY,\n"
    "  saga_id       TEXT NOT NULL,\n"
    "  destination   TEXT NOT NULL REFERENCES destinations (destination),\n"
    "  order_id      TEXT,\n"
    "  customer      TEXT,\n"
    "  state         TEXT NOT NULL CHECK (state IN ('scheduled', 'cancelled')),\n"
    "  created_at_ms INTEGER NOT NULL,\n"
    "  updated_at_ms INTEGER NOT NULL,\n"
    "  CHECK (order_id IS NOT NULL OR customer IS NOT NULL)\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS carrier_bookings (\n"
    "  shipment_id   TEXT PRIMARY KEY REFERENCES shipments (shipment_id),\n"
    "  booking_ref   TEXT NOT NULL,\n"
    "  state         TEXT NOT NULL CHECK (state IN ('booked', 'cancelled')),\n"
    "  updated_at_ms INTEGER NOT NULL\n"
    ");\n";

/*
 * The same tables on PostgreSQL. SQLite's COLLATE NOCASE folds ASCII letters
 * only; here the unique index on the ASCII-folded name does the same for
 * duplicates in the seed, and the lookup compares folded names
 * (destination_lookup_pg): translate() rather than lower(), which would also
 * fold non-ASCII letters by the database's locale.
 */
static const char shipping_schema_pg[] =
    "CREATE TABLE IF NOT EXISTS destinations (\n"
    "  destination TEXT PRIMARY KEY\n"
    ");\n"
    "CREATE UNIQUE INDEX IF NOT EXISTS destinations_folded ON destinations\n"
    "  (translate(destination, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'));\n"
    "CREATE TABLE IF NOT EXISTS shipments (\n"
    "  shipment_id   TEXT PRIMARY KEY,\n"
    "  saga_id       TEXT NOT NULL,\n"
    "  destination   TEXT NOT NULL REFERENCES destinations (destination),\n"
    "  order_id      TEXT,\n"
    "  customer      TEXT,\n"
    "  state         TEXT NOT NULL CHECK (state IN ('scheduled', 'cancelled')),\n"
    "  created_at_ms BIGINT NOT NULL,\n"
    "  updated_at_ms BIGINT NOT NULL,\n"
    "  CHECK (order_id IS NOT NULL OR customer IS NOT NULL)\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS carrier_bookings (\n"
    "  shipment_id   TEXT PRIMARY KEY REFERENCES shipments (shipment_id),\n"
    "  booking_ref   TEXT NOT NULL,\n"
    "  state         TEXT NOT NULL CHECK (state IN ('booked', 'cancelled')),\n"
    "  updated_at_ms BIGINT NOT NULL\n"
    ");\n";

static const char destination_lookup[] =
    "SELECT destination FROM destinations WHERE destination = $1";
static const char destination_lookup_pg[] =
    "SELECT destination FROM destinations WHERE"
    " translate(destination, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') ="
    " translate($1, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')";

static const char shipping_count[] = "SELECT (SELECT count(*) FROM destinations) + "
                                     "(SELECT count(*) FROM shipments)";

/*
 * One call to the carrier for req, under the downstream key of its
 * in-flight marker (pt_external_begin): PT_OK with the booking reference in
 * ref; PT_REJECTED when the carrier refused (no effect there); PT_RETRY
 * when the outcome is unknown, so that the retry repeats the call under the
 * same key.
 */
static int shipping_carrier(const pt_request *req, pt_reply *reply, const char *target,
                            const char *verb, const char *arg, char ref[CARRIER_REF_MAX + 1])
{
    pt_external_call call;
    char why[256];
    int rc = pt_external_begin(req, reply, target, &call);
    if (rc != PT_OK)
        return rc;
    switch (carrier_call(verb, call.downstream_key, arg, ref, why, sizeof why)) {
    case 0:
        return PT_OK;
    case 1:
        return pt_reject(reply, "%s", why);
    default:
        log_warn("saga %s: %s %s: %s", req->saga_id, verb, call.downstream_key, why);
        return pt_retry(reply, "%s", why);
    }
}

/* schedule(destination, [order_id], [customer]) -> shipment_id[, booking_ref] */
static int shipping_schedule(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *destination, *order_id, *customer;
    char served[SVC_MAX_NAME + 1], shipment_id[37], booking_ref[CARRIER_REF_MAX + 1] = "";
    int64_t now = util_wall_ms();
    pt_rows *row;
    int result;
    (void)arg;

    if (svc_param_name(req, reply, "destination", &destination) != 0 ||
        svc_param_name_opt(req, reply, "order_id", &order_id) != 0 ||
        svc_param_name_opt(req, reply, "customer", &customer) != 0)
        return PT_REJECTED;
    if (order_id == NULL && customer == NULL)
        return pt_reject(reply, "missing parameter 'order_id' (or 'customer'): "
                                "a shipment must name whom it is for");

    if (pt_query(tx, &row,
                 pt_tx_backend(tx) == PT_BACKEND_POSTGRESQL ? destination_lookup_pg
                                                            : destination_lookup,
                 "t", destination) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    switch (pt_next(row)) {
    case 1:
        /* The seeded spelling, so "berlin" is stored as "Berlin". */
        snprintf(served, sizeof served, "%s", pt_text(row, 0) ? pt_text(row, 0) : "");
        break;
    case 0:
        return pt_reject(reply, "destination not served: '%s'", destination);
    default:
        return pt_tx_error(reply, tx);
    }
    pt_rows_close(row); /* the read is over: nothing stays active across the carrier call */
    if (util_uuid7(shipment_id) != 0)
        return pt_retry(reply, "no randomness for a shipment id");
    if (carrier_enabled()) {
        result = shipping_carrier(req, reply, "carrier-book", "BOOK", served, booking_ref);
        if (result != PT_OK)
            return result;
    }
    if (pt_exec(tx,
                "INSERT INTO shipments (shipment_id, saga_id, destination, order_id, customer, "
                "state, created_at_ms, updated_at_ms) "
                "VALUES ($1, $2, $3, $4, $5, 'scheduled', $6, $6)",
                "ttttti", shipment_id, req->saga_id, served, order_id, customer, now) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (booking_ref[0] != '\0' &&
        pt_exec(tx,
                "INSERT INTO carrier_bookings (shipment_id, booking_ref, state, updated_at_ms) "
                "VALUES ($1, $2, 'booked', $3)",
                "tti", shipment_id, booking_ref, now) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    if (pt_result_set(reply, "shipment_id", shipment_id) != 0 ||
        (booking_ref[0] != '\0' && pt_result_set(reply, "booking_ref", booking_ref) != 0))
        return pt_retry(reply, "out of memory");
    log_debug("saga %s: scheduling shipment %s to %s", req->saga_id, shipment_id, served);
    return PT_OK;
}

/*
 * The carrier's booking of a scheduled shipment is cancelled first: if it
 * cannot be cancelled now, nothing here changes and the compensation is
 * retried. PT_OK when there is no booking or it is now cancelled.
 */
static int shipping_cancel_booking(pt_tx *tx, const pt_request *req, pt_reply *reply,
                                   const char *shipment_id, int64_t now)
{
    char ref[CARRIER_REF_MAX + 1], cancelled[CARRIER_REF_MAX + 1];
    pt_rows *row;
    int result;

    if (pt_query(tx, &row,
                 "SELECT booking_ref FROM carrier_bookings "
                 "WHERE shipment_id = $1 AND state = 'booked'",
                 "t", shipment_id) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    switch (pt_next(row)) {
    case 1:
        break;
    case 0:
        return PT_OK;
    default:
        return pt_tx_error(reply, tx);
    }
    snprintf(ref, sizeof ref, "%s", pt_text(row, 0) ? pt_text(row, 0) : "");
    pt_rows_close(row);
    result = shipping_carrier(req, reply, "carrier-cancel", "CANCEL", ref, cancelled);
    if (result != PT_OK)
        return result;
    if (pt_exec(tx,
                "UPDATE carrier_bookings SET state = 'cancelled', updated_at_ms = $2 "
                "WHERE shipment_id = $1",
                "ti", shipment_id, now) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    return PT_OK;
}

/* cancel: cancels the shipment named by the action's shipment_id. */
static int shipping_cancel(pt_tx *tx, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *shipment_id;
    int64_t now = util_wall_ms();
    int scheduled, own, result;
    pt_rows *row;
    (void)arg;

    if (svc_action_id(req, reply, "shipment_id", &shipment_id) != 0)
        return PT_REJECTED;

    if (pt_query(tx, &row,
                 "SELECT CASE WHEN state = 'scheduled' THEN 1 ELSE 0 END, "
                 "CASE WHEN saga_id = $2 THEN 1 ELSE 0 END FROM shipments "
                 "WHERE shipment_id = $1",
                 "tt", shipment_id, req->saga_id) != PT_DB_OK)
        return pt_tx_error(reply, tx);
    switch (pt_next(row)) {
    case 1:
        break;
    case 0:
        return pt_reject(reply, "unknown shipment '%s'", shipment_id);
    default:
        return pt_tx_error(reply, tx);
    }
    scheduled = pt_int(row, 0) == 1;
    own = pt_int(row, 1) == 1;
    pt_rows_close(row);
    if (!own)
        return pt_reject(reply, "shipment '%s' belongs to another saga", shipment_id);

    if (scheduled && carrier_enabled() &&
        (result = shipping_cancel_booking(tx, req, reply, shipment_id, now)) != PT_OK)
        return result;
    if (scheduled) {
        /* Conditional: on PostgreSQL a replica may have cancelled it meanwhile. */
        if (pt_exec(tx,
                    "UPDATE shipments SET state = 'cancelled', updated_at_ms = $2 "
                    "WHERE shipment_id = $1 AND state = 'scheduled'",
                    "ti", shipment_id, now) != PT_DB_OK)
            return pt_tx_error(reply, tx);
        log_debug("saga %s: cancelling shipment %s", req->saga_id, shipment_id);
    } else {
        log_warn("saga %s: shipment %s is already cancelled", req->saga_id, shipment_id);
    }
    if (pt_result_set(reply, "shipment_id", shipment_id) != 0)
        return pt_retry(reply, "out of memory");
    return PT_OK;
}

/* Seed: destinations = [ "Berlin", "Lisbon", ... ]; */
static int shipping_seed(pt_tx *tx, const config_t *cfg, char *err, size_t errlen)
{
    static const char *const top[] = {"destinations", NULL};
    const config_setting_t *list = config_lookup(cfg, "destinations");
    int rc, n;

    if ((rc = svc_seed_only_keys(cfg, NULL, top, err, errlen)) != SVC_SEED_OK)
        return rc;
    if (list == NULL || !config_setting_is_aggregate(list) || config_setting_is_group(list))
        return svc_seed_error(err, errlen, list ? list : config_root_setting(cfg),
                              "'destinations' must be an array of names");
    n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *d = config_setting_get_elem(list, (unsigned)i);
        const char *name = config_setting_get_string(d);

        if (name == NULL || !svc_name_ok(name))
            return svc_seed_error(err, errlen, d ? d : list,
                                  "destination %d must be a name of 1 to %d bytes", i + 1,
                                  SVC_MAX_NAME);
        rc = pt_exec(tx, "INSERT INTO destinations (destination) VALUES ($1)", "t", name);
        if (rc == PT_DB_CONSTRAINT)
            return svc_seed_error(err, errlen, list, "destination '%s' is listed twice", name);
        if (rc != PT_DB_OK) {
            snprintf(err, errlen, "cannot insert destination '%s': %s", name, pt_tx_errmsg(tx));
            return SVC_SEED_DB_ERROR;
        }
    }
    return svc_meta_set_tx(tx, "destination_count", n, err, errlen);
}

static int shipping_register(participant *p)
{
    return pt_register_tx(p, "schedule", shipping_schedule, "cancel", shipping_cancel, NULL);
}

static const svc_def shipping_def = {
    .name = "shipping",
    .summary = "Saga participant that schedules shipments and cancels them.",
    .operations = "  schedule (action)       params: destination, and order_id and/or customer\n"
                  "                          result: shipment_id\n"
                  "                          refused: \"destination not served: '<d>'\"\n"
                  "  cancel   (compensation) cancels the action's shipment_id\n",
    .schema_sql = shipping_schema,
    .schema_pg = shipping_schema_pg,
    .count_sql = shipping_count,
    .seed = shipping_seed,
    .audit_sql = NULL,
    .register_ops = shipping_register,
    .option_name = "carrier-url",
    .option_help =
        "  --carrier-url URL  ipc:// address of the carrier gateway: schedule books the\n"
        "                     parcel there and cancel cancels it, each under an\n"
        "                     idempotency key of its own (docs/PARTICIPANTS.md,\n"
        "                     \"Effects outside the database\"). Default: none\n",
    .option_set = carrier_set_url,
};

int main(int argc, char **argv)
{
    return svc_main(&shipping_def, argc, argv);
}
