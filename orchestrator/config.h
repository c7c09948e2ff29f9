/*
 * config — loads sagad's configuration and the saga definitions it names.
 *
 * Two kinds of libconfig file (examples: sagas/sagad.cfg and
 * sagas/order_fulfillment.cfg; the format is documented in docs/CONFIG.md):
 *   - the orchestrator file: admin URL, database path, sagas directory,
 *     participant URLs, default timeouts and retry policies, in-flight limit;
 *   - one file per saga type ("*.cfg" in the sagas directory, except the
 *     orchestrator file itself and any other file that sets participants):
 *     its name, required inputs, ordered steps.
 *
 * Invariants of a loaded orch_config (config_load checks them all, and on any
 * violation returns an error naming the file and line and frees everything:
 * nothing half-loaded is ever returned):
 *   - every participant has a non-empty name and a URL nng accepts;
 *   - saga names are unique; step names are unique within a saga;
 *   - every step names a known participant, a non-empty action, and either a
 *     compensation or the explicit `compensation = "none"`;
 *   - every input a step receives is a saga input or an output declared by an
 *     earlier step;
 *   - numbers are in range: timeouts 1 ms..1 h, 1..1000 attempts, backoffs
 *     1 ms..1 h with initial <= max, multiplier 1.0..10.0, in-flight 1..10^6.
 *   - every saga has 1..SAGA_MAX_STEPS steps; saga, step, participant,
 *     operation, input and output names are 1..64 of [A-Za-z0-9_.-];
 *   - no step output repeats a saga input or an earlier step's output;
 *   - admin_url is a valid URL distinct from every participant's;
 *   - sagas_dir is an existing directory holding at least one saga file;
 *   - every saga's retries end well inside idempotency_retention_s: the sum
 *     over its steps of attempts x (timeout + max backoff), action and
 *     compensation, is at most half of it;
 *   - the files hold no unknown setting names (typos) and no value of the
 *     wrong type;
 *   - security (docs/SECURITY.md): a tls+tcp:// URL comes with the tls
 *     certificates it needs; an admin_url other than ipc://, abstract:// or
 *     inproc:// has an admin token; an admin_url other hosts can reach is
 *     tls+tcp:// (with a token). admin_token_file is an owner-only file.
 * Relative paths in the orchestrator file (database, sagas_dir, ipc:// socket
 * paths) are resolved against its directory; the loaded paths are absolute.
 */
#ifndef SAGA_CONFIG_H
#define SAGA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t max_attempts;      /* total attempts, the first included (>= 1) */
    int64_t initial_backoff_ms; /* delay before the 2nd attempt */
    int64_t max_backoff_ms;     /* cap on any delay */
    double multiplier;          /* growth per attempt */
} retry_policy;

typedef struct {
    char *name;        /* unique within its saga */
    char *participant; /* a key of orch_config.participants */
    size_t participant_index;
    char *action;                    /* operation for PHASE_ACTION */
    char *compensation;              /* operation for PHASE_COMPENSATE; NULL: the step has none */
    int64_t timeout_ms;              /* per attempt */
    retry_policy retry;              /* for the action */
    retry_policy compensation_retry; /* for the compensation */
    char **inputs;                   /* names it receives; all available when has_input_list == 0 */
    size_t n_inputs;
    int has_input_list;
    char **outputs; /* result names later steps may ask for (declared, for checking) */
    size_t n_outputs;
    int line; /* where it is defined, for messages */
} step_def;

typedef struct {
    char *name; /* the saga type, e.g. "order_fulfillment" */
    char *file;
    char **inputs; /* inputs a start must provide */
    size_t n_inputs;
    step_def *steps;
    size_t n_steps;
    /* orch_config.retention_ms: a saga older than this is sent nothing more */
    int64_t retention_ms;
} saga_def;

typedef struct {
    char *name;
    char *url;
} participant_def;

typedef struct {
    char *file; /* the orchestrator file, as given */
    char *admin_url;
    char *database;         /* resolved path */
    char *sagas_dir;        /* resolved path */
    int durability_full;    /* 1: synchronous=FULL (default); 0: OFF, benchmarks only */
    int cpu_scheduling;     /* enum cpu_scheduling (cpu_sched.h): batch by default */
    int frame_max;          /* steps to one participant in one message (1..WIRE_BATCH_MAX) */
    uint32_t max_in_flight; /* sagas not finished that sagad holds at once */
    /* How long the participants keep idempotency records (their --retention-s
     * must be at least this): after it, a request could repeat an effect or
     * skip an undo, so no saga older than it is sent anything. */
    int64_t retention_ms;
    /* COMPLETED and COMPENSATED sagas (and their history and client keys) are
     * deleted this long after they finished; FAILED ones are kept. */
    int64_t finished_retention_s;
    int64_t default_timeout_ms;
    retry_policy default_retry;
    retry_policy default_compensation_retry;
    participant_def *participants;
    size_t n_participants;
    saga_def *sagas;
    size_t n_sagas;
    /* Security settings (docs/SECURITY.md); NULL when unset. */
    char *admin_token; /* the token read from admin_token_file (wiped by config_free) */
    /* metrics_token_file's token: it opens /metrics, /api and the dashboard,
     * never the admin API, so a scraper or viewer can read and not act. */
    char *metrics_token;
    char *tls_ca_file; /* resolved paths of the tls group */
    char *tls_cert_file;
    char *tls_key_file;
    /* Observability settings (docs/OBSERVABILITY.md, load_observability). */
    char *http_url;        /* metrics, JSON API and dashboard; NULL: off */
    char *alert_command;   /* resolved path run when a saga becomes FAILED; NULL: none */
    int alert_max_running; /* alert commands running at once */
} orch_config;

/* Loads path and every saga file of its sagas directory into *out.
 * Returns 0, or -1 with "file:line: what is wrong" in err (and *out zeroed). */
int config_load(const char *path, orch_config *out, char *err, size_t errlen);
/* Frees everything config_load allocated; safe on a zeroed struct. */
void config_free(orch_config *cfg);
const saga_def *config_find_saga(const orch_config *cfg, const char *name);
/* Index of the step named name in def, or -1. */
int config_step_index(const saga_def *def, const char *name);

#endif
