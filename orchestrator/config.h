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
 *   - every participant has a non-empty name and 1..CFG_MAX_REPLICAS URLs
 *     nng accepts (a string, or a list of strings: several replicas of one
 *     service), none repeated within the participant;
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
 *   - admin_url is a valid URL distinct from every participant URL;
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
 *     Every participant URL authenticates the peer: ipc:// (whose socket
 *     directory only sagad's user or root can write, like admin_url's) or
 *     tls+tcp:// with tls.ca_file and a client certificate; anything else
 *     only with insecure_participant_links = true (tests). alert_command is
 *     a file only sagad's user or root can have written
 *     (sec_check_trusted_path).
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
    /* The steps it waits for (indices into saga_def.steps; `after` in the
     * file); has_after == 0: the step before it (saga_dag.h). */
    int *after;
    size_t n_after;
    int has_after;
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
    /* deadline_s: a saga still RUNNING this long after its start compensates; 0: none */
    int64_t deadline_ms;
    /* Its version (docs/CONFIG.md#definition-versions): set by the catalog when
     * it registers the definition; 0 for one that is not registered. */
    uint32_t version;
} saga_def;

/* Replicas of one participant service sagad may list (docs/CONFIG.md). */
#define CFG_MAX_REPLICAS 16

typedef struct {
    char *name;
    /* The replicas of the service, in file order: one URL each (1..CFG_MAX_REPLICAS).
     * Each runs the same service on one shared database, so any of them may
     * answer any step (transport.h spreads them). */
    char **urls;
    size_t n_urls;
} participant_def;

typedef struct {
    char *file; /* the orchestrator file, as given */
    char *admin_url;
    char *database;         /* resolved path, or a postgresql:// URI (store.h) */
    char *node_name;        /* this node among those sharing a PostgreSQL database */
    int64_t lease_ms;       /* its lease there (docs/SCALE-OUT.md) */
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
    char *http_url;           /* metrics, JSON API and dashboard; NULL: off */
    char *alert_command;      /* resolved path run when a saga becomes FAILED; NULL: none */
    int alert_max_running;    /* alert commands running at once */
    int64_t alert_timeout_ms; /* an alert command's time limit */
    /* 1: participant URLs that authenticate nobody (tcp://, ws://, abstract://,
     * inproc://) are accepted, with a WARN at each load. For tests only. */
    int insecure_participant_links;
    /* Connections not yet authenticated, per listener (admin and http_url;
     * docs/SECURITY.md "Bounded connections"). */
    int conn_header_timeout_ms;   /* to authenticate (admin) or send a request header (HTTP) */
    int conn_idle_timeout_ms;     /* HTTP keep-alive: between requests */
    int conn_max_unauthenticated; /* beyond it, the oldest idle one is closed */
} orch_config;

/* Loads path and every saga file of its sagas directory into *out.
 * Returns 0, or -1 with "file:line: what is wrong" in err (and *out zeroed). */
int config_load(const char *path, orch_config *out, char *err, size_t errlen);
/* Frees everything config_load allocated; safe on a zeroed struct. */
void config_free(orch_config *cfg);
const saga_def *config_find_saga(const orch_config *cfg, const char *name);

/*
 * Definition versions (docs/CONFIG.md#definition-versions).
 *
 * config_saga_canonical: the canonical text of def, malloc'd (NULL when out
 * of memory): a saga file in which every setting is written out with its
 * resolved value (defaults applied), in a fixed order and layout. Two
 * definitions that behave the same have the same text, however their files
 * were written (comments, spacing, the order of settings within a group,
 * inherited or repeated defaults, file name); any change in what a saga does
 * (steps, their order, participant names, operations, inputs, outputs,
 * timeouts, retry policies, saga inputs) changes it. Participants appear by
 * name: the URL a name stands for is the orchestrator file's, so a moved
 * socket is not a new version.
 *
 * config_parse_saga_text: reads such a text (or any saga file's text) back
 * into *out, with cfg's participants, as the loader reads a file, except that
 * the name is not checked against cfg's sagas and the retry span is not
 * checked again (see load_saga). origin names the text in messages
 * ("origin:line: ..."). Returns 0, or -1 with the message in err and *out
 * zeroed.
 *
 * config_load_sagas: the saga files of cfg->sagas_dir read again, as
 * config_load reads them (same checks, same messages), into a new array
 * *out of *n definitions; cfg is not changed. For a reload: on error (-1,
 * "file:line: ..." in err) nothing is returned.
 */
char *config_saga_canonical(const saga_def *def);
int config_parse_saga_text(const orch_config *cfg, const char *text, const char *origin,
                           saga_def *out, char *err, size_t errlen);
int config_load_sagas(const orch_config *cfg, saga_def **out, size_t *n, char *err, size_t errlen);
/* Frees what one saga_def owns and zeroes it; safe on a zeroed one. */
void config_free_saga(saga_def *def);
/* config_free_saga on each of the n, then the array. */
void config_free_sagas(saga_def *defs, size_t n);
/* Index of the step named name in def, or -1. */
int config_step_index(const saga_def *def, const char *name);

#endif
