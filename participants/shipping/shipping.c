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
static int shipping_schedule(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *destination, *order_id, *customer;
    char served[SVC_MAX_NAME + 1], shipment_id[37], booking_ref[CARRIER_REF_MAX + 1] = "";
    int64_t now = util_wall_ms();
    sqlite3_stmt *st = NULL;
    int result = PT_OK;

    if (svc_param_name(req, reply, "destination", &destination) != 0 ||
        svc_param_name_opt(req, reply, "order_id", &order_id) != 0 ||
        svc_param_name_opt(req, reply, "customer", &customer) != 0)
        return PT_REJECTED;
    if (order_id == NULL && customer == NULL)
        return pt_reject(reply, "missing parameter 'order_id' (or 'customer'): "
                                "a shipment must name whom it is for");

    if (svc_prepare(req, &st, "SELECT destination FROM destinations WHERE destination = ?1", "t",
                    destination) != SQLITE_OK)
        return pt_db_error(reply, db);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW:
        /* The seeded spelling, so "berlin" is stored as "Berlin". */
        snprintf(served, sizeof served, "%s", (const char *)sqlite3_column_text(st, 0));
        break;
    case SQLITE_DONE:
        result = pt_reject(reply, "destination not served: '%s'", destination);
        goto done;
    default:
        result = pt_db_error(reply, db);
        goto done;
    }
    sqlite3_reset(st); /* the read is over: nothing stays active across the carrier call */
    if (util_uuid7(shipment_id) != 0) {
        result = pt_retry(reply, "no randomness for a shipment id");
        goto done;
    }
    if (carrier_enabled()) {
        result = shipping_carrier(req, reply, "carrier-book", "BOOK", served, booking_ref);
        if (result != PT_OK)
            goto done;
    }
    if (svc_run(req,
                "INSERT INTO shipments (shipment_id, saga_id, destination, order_id, customer, "
                "state, created_at_ms, updated_at_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5, 'scheduled', ?6, ?6)",
                "ttttti", shipment_id, req->saga_id, served, order_id, customer,
                now) != SQLITE_OK) {
        result = pt_db_error(reply, db);
        goto done;
    }
    if (booking_ref[0] != '\0' &&
        (svc_run(req,
                 "INSERT INTO carrier_bookings (shipment_id, booking_ref, state, updated_at_ms) "
                 "VALUES (?1, ?2, 'booked', ?3)",
                 "tti", shipment_id, booking_ref, now) != SQLITE_OK)) {
        result = pt_db_error(reply, db);
        goto done;
    }
    if (pt_result_set(reply, "shipment_id", shipment_id) != 0 ||
        (booking_ref[0] != '\0' && pt_result_set(reply, "booking_ref", booking_ref) != 0)) {
        result = pt_retry(reply, "out of memory");
        goto done;
    }
    log_debug("saga %s: scheduling shipment %s to %s", req->saga_id, shipment_id, served);

done:
    return result;
}

/* cancel: cancels the shipment named by the action's shipment_id. */
static int shipping_cancel(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *shipment_id;
    int64_t now = util_wall_ms();
    int scheduled;
    sqlite3_stmt *st = NULL;
    int result = PT_OK;

    if (svc_action_id(req, reply, "shipment_id", &shipment_id) != 0)
        return PT_REJECTED;

    if (svc_prepare(req, &st,
                    "SELECT state = 'scheduled', saga_id = ?2 FROM shipments "
                    "WHERE shipment_id = ?1",
                    "tt", shipment_id, req->saga_id) != SQLITE_OK)
        return pt_db_error(reply, db);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW:
        break;
    case SQLITE_DONE:
        result = pt_reject(reply, "unknown shipment '%s'", shipment_id);
        goto done;
    default:
        result = pt_db_error(reply, db);
        goto done;
    }
    if (sqlite3_column_int(st, 1) != 1) {
        result = pt_reject(reply, "shipment '%s' belongs to another saga", shipment_id);
        goto done;
    }
    scheduled = sqlite3_column_int(st, 0);
    sqlite3_reset(st);

    if (scheduled && carrier_enabled()) {
        /* The carrier's booking goes first: if it cannot be cancelled now,
         * nothing here changes and the compensation is retried. */
        char ref[CARRIER_REF_MAX + 1], cancelled[CARRIER_REF_MAX + 1];
        if (svc_prepare(req, &st,
                        "SELECT booking_ref FROM carrier_bookings "
                        "WHERE shipment_id = ?1 AND state = 'booked'",
                        "t", shipment_id) != SQLITE_OK)
            return pt_db_error(reply, db);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            snprintf(ref, sizeof ref, "%s", (const char *)sqlite3_column_text(st, 0));
            sqlite3_reset(st);
            result = shipping_carrier(req, reply, "carrier-cancel", "CANCEL", ref, cancelled);
            if (result != PT_OK)
                goto done;
            if (svc_run(req,
                        "UPDATE carrier_bookings SET state = 'cancelled', updated_at_ms = ?2 "
                        "WHERE shipment_id = ?1",
                        "ti", shipment_id, now) != SQLITE_OK) {
                result = pt_db_error(reply, db);
                goto done;
            }
        } else if (rc != SQLITE_DONE) {
            result = pt_db_error(reply, db);
            goto done;
        }
    }
    if (scheduled) {
        if (svc_run(req,
                    "UPDATE shipments SET state = 'cancelled', updated_at_ms = ?2 "
                    "WHERE shipment_id = ?1",
                    "ti", shipment_id, now) != SQLITE_OK) {
            result = pt_db_error(reply, db);
            goto done;
        }
        log_debug("saga %s: cancelling shipment %s", req->saga_id, shipment_id);
    } else {
        log_warn("saga %s: shipment %s is already cancelled", req->saga_id, shipment_id);
    }
    if (pt_result_set(reply, "shipment_id", shipment_id) != 0)
        result = pt_retry(reply, "out of memory");

done:
    return result;
}

/* Seed: destinations = [ "Berlin", "Lisbon", ... ]; */
static int shipping_seed(sqlite3 *db, const config_t *cfg, char *err, size_t errlen)
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
        rc = svc_exec(db, "INSERT INTO destinations (destination) VALUES (?1)", "t", name);
        if (rc == SQLITE_CONSTRAINT)
            return svc_seed_error(err, errlen, list, "destination '%s' is listed twice", name);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "cannot insert destination '%s': %s", name, sqlite3_errmsg(db));
            return SVC_SEED_DB_ERROR;
        }
    }
    return svc_meta_set(db, "destination_count", n, err, errlen);
}

static int shipping_register(participant *p)
{
    return pt_register(p, "schedule", shipping_schedule, "cancel", shipping_cancel, NULL);
}

static const svc_def shipping_def = {
    .name = "shipping",
    .summary = "Saga participant that schedules shipments and cancels them.",
    .operations = "  schedule (action)       params: destination, and order_id and/or customer\n"
                  "                          result: shipment_id\n"
                  "                          refused: \"destination not served: '<d>'\"\n"
                  "  cancel   (compensation) cancels the action's shipment_id\n",
    .schema_sql = shipping_schema,
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
