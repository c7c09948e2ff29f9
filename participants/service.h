/*
 * service — the shared skeleton of the four example participants (order,
 * payment, inventory, shipping), so that each service is only its schema,
 * its seed loader and its handlers.
 *
 * svc_main() is the whole program around a service: it parses the command
 * line, starts logging and crash points, opens the participant runtime
 * (participant.h) on the service's database, creates the service schema and
 * loads the seed file, registers the handlers, serves until SIGINT/SIGTERM,
 * then stops the runtime (in-flight batches finish and reply first) and
 * returns the process exit status.
 *
 * Invariants kept here for every service:
 *   1. Schema creation, the emptiness check and the seed load run in ONE
 *      immediate transaction: a seed is applied completely to an empty
 *      database or not at all, and never on top of existing business data
 *      (a restart with the same --seed is therefore harmless).
 *   2. Every service database has a `meta` table (key TEXT PRIMARY KEY,
 *      value INTEGER) holding schema_version and the totals recorded at seed
 *      time, against which an operator audits the conservation invariants.
 *   3. The service's conservation invariants (svc_def.audit_sql) hold in
 *      its database when it starts serving; otherwise it does not start.
 *   4. The seed file is always parsed, even when it will not be applied,
 *      so a syntax error fails every start the same way (exit 2, with
 *      file:line); its content (names, amounts, duplicates) is checked as it
 *      is loaded into an empty database (also exit 2, with file:line).
 *
 * Under a Type=notify unit (packaging/systemd/) it tells systemd READY=1
 * once the socket (and metrics) listen, and STOPPING=1 when it stops.
 *
 * Exit status: 0 after a clean stop, 1 when the service cannot run (database,
 * socket, broken invariants), 2 for a bad command line or seed file.
 *
 * Also here: small helpers for handlers and seed loaders (name validation,
 * seed error reporting, meta), used by the four services only. The handlers
 * use the runtime's neutral pt_tx API (participant.h), so every service runs
 * on SQLite or PostgreSQL (--db postgresql://...) with the same rules.
 */
#ifndef SAGA_SERVICE_H
#define SAGA_SERVICE_H

#include <libconfig.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "participant.h"

/* Business limits shared by the services (money in integer minor units). */
#define SVC_MAX_AMOUNT   1000000000LL       /* one charge or order: 10 million major units */
#define SVC_MAX_QUANTITY 100000LL           /* units of one SKU in one order or reservation */
#define SVC_MAX_BALANCE  1000000000000000LL /* a seeded balance (sums stay far from INT64_MAX) */
#define SVC_MAX_STOCK    1000000000LL       /* seeded stock of one SKU */
#define SVC_MAX_NAME     128                /* bytes in a customer, sku, destination or id */

#define SVC_SCHEMA_VERSION 1

/* What a seed loader returns. */
enum svc_seed_status {
    SVC_SEED_OK = 0,
    SVC_SEED_DB_ERROR = -1, /* the database failed: exit 1 */
    SVC_SEED_INVALID = -2,  /* the seed file's content is wrong: exit 2 */
};

/* What a service tells svc_main about itself. */
typedef struct {
    const char *name;       /* "payment": logs, default paths; program is "<name>-svc" */
    const char *summary;    /* one line for --help */
    const char *operations; /* --help text describing each operation (lines end in \n) */
    /*
     * CREATE TABLE IF NOT EXISTS ... for the business tables on SQLite and on
     * PostgreSQL (the meta table is created by svc_main). Both required: every
     * service runs on either backend. Runs inside the startup transaction.
     */
    const char *schema_sql;
    const char *schema_pg;
    /*
     * SELECT returning one integer: how many business rows exist. The seed is
     * only loaded when it returns 0.
     */
    const char *count_sql;
    /*
     * Loads the parsed seed into the (empty) database inside the startup
     * transaction (pt_tx, either backend), including its totals in meta.
     * Returns SVC_SEED_OK, SVC_SEED_INVALID for bad content (from
     * svc_seed_error, with file:line in err) or SVC_SEED_DB_ERROR (err set).
     * NULL: the service has no seed data and refuses --seed.
     */
    int (*seed)(pt_tx *tx, const config_t *cfg, char *err, size_t errlen);
    /*
     * SELECT returning one integer: how many of the service's conservation
     * invariants are violated (0 when the books balance), or NULL when the
     * service has none. Checked at every start, after the seed: a service
     * whose database breaks them refuses to serve (fail closed, exit 1)
     * until an operator has looked.
     */
    const char *audit_sql;
    /* Registers the operations with pt_register_tx. Returns 0 or -1. */
    int (*register_ops)(participant *p);
    /*
     * One command-line option of the service's own, or NULL:
     * "--<option_name> VALUE", described in --help by option_help (lines
     * end in \n). option_set checks and keeps the value; it runs while the
     * command line is parsed, before anything is opened, and returns 0, or
     * -1 with the reason in err (exit 2).
     */
    const char *option_name;
    const char *option_help;
    int (*option_set)(const char *value, char *err, size_t errlen);
} svc_def;

/* The program: returns the exit status for main() to return. */
int svc_main(const svc_def *def, int argc, char **argv);

/* ---- Helpers for handlers ---------------------------------------------- */

/*
 * A required name-like parameter (customer, sku, destination, ids): like
 * pt_param_str, and also refused unless it is 1..SVC_MAX_NAME bytes of
 * printable ASCII or UTF-8 without control characters. Returns 0 or -1 with
 * the reply error set (the handler then returns PT_REJECTED).
 */
int svc_param_name(const pt_request *req, pt_reply *reply, const char *name, const char **out);
/* The same check for an optional parameter: *out is NULL when absent. */
int svc_param_name_opt(const pt_request *req, pt_reply *reply, const char *name, const char **out);
/*
 * An id a compensation needs from its action's result (e.g. charge_id).
 * Returns 0, or -1 with the reply error set ("action result has no
 * 'charge_id'").
 */
int svc_action_id(const pt_request *req, pt_reply *reply, const char *name, const char **out);

/* Is s acceptable as a name (see svc_param_name)? */
int svc_name_ok(const char *s);

/* ---- Helpers for seed loaders ------------------------------------------ */

/*
 * Formats "file:line: message" for the setting s into err and returns
 * SVC_SEED_INVALID, so that a loader can `return svc_seed_error(err, errlen,
 * s, "...")`.
 */
int svc_seed_error(char *err, size_t errlen, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/*
 * Refuses top-level or group members of s other than the NULL-terminated
 * list allowed (so a typo in a seed file is an error, not silently ignored).
 * s NULL means the root. Returns SVC_SEED_OK or SVC_SEED_INVALID with err set.
 */
int svc_seed_only_keys(const config_t *cfg, const config_setting_t *s, const char *const *allowed,
                       char *err, size_t errlen);
/*
 * Sets meta[key] = value (inside the caller's transaction). Returns
 * SVC_SEED_OK or SVC_SEED_DB_ERROR with err set.
 */
int svc_meta_set_tx(pt_tx *tx, const char *key, int64_t value, char *err, size_t errlen);

#endif
