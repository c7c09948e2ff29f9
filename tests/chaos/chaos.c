/*
 * saga-chaos — proof under faults that every saga is processed exactly once.
 *
 * The program runs the real system (sagad and the four participant services)
 * in a private temp dir, hurts it on purpose while clients start sagas, lets
 * it heal, and then checks what the orchestrator and the participants'
 * databases say against invariants that must hold whatever the faults were.
 *
 * What it injects (all decisions come from --seed, printed first, so a run
 * can be repeated; thread timing still varies):
 *   - participant faults via --faults: dropped replies, replies delayed past
 *     sagad's timeout, spurious OUTCOME_RETRY, SIGKILL just before and just
 *     after a batch's COMMIT;
 *   - --kills SIGKILLs of sagad at random points of the start phase (the
 *     first one only once many sagas are in flight), each followed by a
 *     restart, and --participant-kills SIGKILLs of random participants;
 *   - clients that behave like real ones: a start whose reply does not come
 *     (timeout, sagad gone, BUSY, INTERNAL) is retried with the SAME client
 *     key; some starts are deliberately repeated (same key, same input: the
 *     same saga id must come back) and a few reuse a key with another input
 *     (ADMIN_CONFLICT, no new saga).
 *
 * The life of a run:
 *   1. setup: temp dir, seeds with known totals, sagad.cfg with short
 *      timeouts and generous attempts, the order_fulfillment saga and its
 *      parallel twin (charge_payment and reserve_stock at once; every other
 *      saga of the run is one of those), checked by the same invariants;
 *   2. chaos: --clients threads start --sagas sagas (a seeded mix of inputs
 *      that complete and inputs refused at each step) while the main thread
 *      supervises the processes (restarts whatever died: waitpid WNOHANG)
 *      and performs the planned kills;
 *   3. settle: participants are restarted WITHOUT faults, and the main
 *      thread polls sagad's stats until no saga is RUNNING or COMPENSATING
 *      (bounded by --duration-limit);
 *   4. check: every saga is listed (ListSagas) and read (GetStatus); the four
 *      databases are attached read-only to one in-memory SQLite and every
 *      invariant is one query. Each invariant prints PASS or FAIL; a failure
 *      prints the seed, the offending saga ids and their histories.
 *
 * --crash-matrix instead runs one small scenario per named crash point
 * (engine.* in sagad, participant.* in each service): the process runs with
 * SAGA_CRASH_POINT=<name>:<k>, dies there (SIGKILL, which the supervisor
 * sees), is restarted without it, and the same invariants are checked.
 * With --power-loss the crashed incarnation also runs with
 * SAGA_TEST_VFS=powerloss (common/powerloss_vfs.h): at the crash point its
 * databases lose every write not yet synced and the last write is torn, as
 * in a power cut, which a SIGKILL alone never shows. --no-sync runs every
 * process without fsync (sagad durability "off", services
 * --unsafe-no-fsync) and --expect-loss inverts the verdict of each row: it
 * passes only when an invariant FAILED, which proves that the matrix sees a
 * missing sync (and that the VFS did not quietly become a no-op).
 *
 * --nodes N --database postgresql runs N sagad nodes (1..5) on one database
 * of a private PostgreSQL server (tests/support/pg_cluster.h; lease_ms
 * NODE_LEASE_MS) instead of one sagad on its SQLite file; several nodes need
 * postgresql, and the power-loss VFS is SQLite's, so --power-loss is refused
 * with it. Clients' sockets dial every node (nng spreads the requests and a
 * retry with the same key goes to another node when one is down or paused);
 * --kills SIGKILL random nodes, each restarted after a random delay (the
 * first one always longer than the lease, so another node must claim its
 * sagas), and --pauses SIGSTOP random nodes and participants, SIGCONT after a
 * pause either shorter or longer than the lease (a node paused longer is
 * fenced, finds its lease lost and joins again). On top of the invariants
 * below, each saga a killed node owned unfinished at its death must end
 * final, moved on by another node or a later life of it (never the dead
 * one), and with such sagas at least one takeover must be logged ("took over
 * N sagas", nodes run at log level info). The sagas are read through the
 * admin API of any node, as with SQLite; the ownership facts straight from
 * PostgreSQL (libpq, pgc_sql_*).
 *
 * --replicas 2 runs every service as two processes on its one
 * database, both listed in sagad's file (orchestrator/transport.h,
 * "Replicas"): the second replica, <svc>-b, starts once the first has seeded
 * the database; --participant-kills and --pauses hit either replica at random
 * (the supervisor restarts a killed one), and every invariant below must
 * hold as with one process per service: a step retried on the other replica
 * carries the same key, and the shared barrier gives one effect.
 *
 * --participants-database postgresql puts each service's database on the
 * private PostgreSQL server (one database per service, `--db postgresql://`;
 * participants/runtime/store_pg.c) instead of its SQLite file; with
 * --replicas 2 the two processes of a service share it as replicas would in
 * production. The checks below are SQL over SQLite: the services' tables are
 * copied out of PostgreSQL into the checks' in-memory database first, with
 * their integer columns as integers (load_participants).
 *
 * No assertion here depends on timing: every wait polls with a deadline, and
 * reaching a deadline is reported as what did not happen.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db_url.h"
#include "admin.pb-c.h"
#include "harness.h"
#include "kv.h"
#include "pg_cluster.h"
#include "strbuf.h"
#include "util.h"

typedef Saga__V1__AdminRequest AdminRequest;
typedef Saga__V1__AdminReply AdminReply;

/* sagad's settings for the run: short timeouts so faults cost little time.
 * Actions get few attempts: spending them under faults is allowed and
 * exercises compensation. Compensations and the pivot (approve_order: no
 * undo, so spent attempts mean FAILED) get attempts that outlast any run
 * (1000 at most 1 s apart, about 20 min > --duration-limit): faults stop when
 * the settle phase starts, so every retry still going then succeeds, however
 * slow the machine made the chaos phase (a participant crash-looping under
 * crash faults on a loaded machine once spent 30 attempts in 25 s). A FAILED
 * saga in a run is therefore a defect, never bad luck. */
#define STEP_TIMEOUT_MS      400
#define FAULT_DELAY_MS       (STEP_TIMEOUT_MS + 300) /* a delayed reply always misses */
#define ACTION_ATTEMPTS      10
#define PIVOT_ATTEMPTS       1000
#define COMPENSATION_ATTEMPT 1000
#define MAX_IN_FLIGHT        64 /* small, so that clients also meet ADMIN_BUSY */

#define ADMIN_CALL_MS   2000 /* one admin request of a client */
#define MONITOR_CALL_MS 500  /* one stats poll of the main loop */
#define READY_MS        15000
#define TICK_MS         20
#define MAX_NODES       5    /* --nodes */
#define MAX_REPLICAS    2    /* --replicas */
#define NODE_LEASE_MS   2000 /* sagad's lease_ms on PostgreSQL: takeovers come quickly */
#define HISTORY_SHOWN   3    /* sagas whose history a failing invariant prints */
#define IDS_SHOWN       10   /* offending ids printed per invariant */

/* ---- Options ------------------------------------------------------------ */

typedef struct {
    uint64_t seed;
    int sagas;
    int clients;
    int kills;
    int participant_kills;
    double faults_rate;
    int duration_limit_s;
    const char *bin_dir;
    int keep;
    int crash_matrix;
    int power_loss;         /* the crashed incarnation runs under the power-loss VFS */
    int no_sync;            /* every process runs without fsync (test of the test) */
    int expect_loss;        /* a matrix row passes only if an invariant fails */
    const char *crash_only; /* "proc:point,...": the matrix rows to run; NULL all */
    int nodes;              /* sagad processes (several only on PostgreSQL) */
    int postgresql;         /* sagad's database: a private PostgreSQL server */
    int pauses;             /* SIGSTOP/SIGCONT of random nodes and participants */
    int replicas;           /* processes per service, 1 or 2, on one database */
    int svc_postgresql;     /* the services' databases: on the private PostgreSQL server */
} chaos_opts;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: saga-chaos [options]\n"
            "Runs sagad and the four participant services under faults and checks that\n"
            "every saga was processed exactly once. Exit 0 only if every invariant holds.\n"
            "\n"
            "  --seed N               schedule and fault seed (default: random; printed first)\n"
            "  --sagas N              sagas started in total (default 300)\n"
            "  --clients N            client threads starting them (default 4)\n"
            "  --kills N              SIGKILLs of sagad during the run (default 3)\n"
            "  --participant-kills N  SIGKILLs of random participants (default 4)\n"
            "  --faults-rate P        drop/delay/retry probability per request (default 0.05;\n"
            "                         crashes before/after commit get P/10 per batch)\n"
            "  --duration-limit S     give up settling after S seconds (default 600)\n"
            "  --bin-dir DIR          where sagad and the services are (default $SAGA_BIN_DIR,\n"
            "                         else the directory of this program)\n"
            "  --keep                 keep the temp dir (it is also kept on failure)\n"
            "  --crash-matrix         one scenario per named crash point instead\n"
            "  --crash-only LIST      with --crash-matrix: only these rows, PROC:POINT,...\n"
            "  --power-loss           the crashed process also loses its unsynced writes\n"
            "                         (SAGA_TEST_VFS=powerloss: a power cut, not a SIGKILL)\n"
            "  --no-sync              run sagad and the services without fsync (durability\n"
            "                         \"off\", --unsafe-no-fsync): to prove the checks see it\n"
            "  --expect-loss          with --crash-matrix: a row passes only if an invariant\n"
            "                         fails (use with --power-loss --no-sync)\n"
            "  --database KIND        sqlite (default: sagad's own file) or postgresql (a\n"
            "                         private server; not with --power-loss)\n"
            "  --nodes N              sagad nodes on that database, 1..5 (default 1; more\n"
            "                         than 1 needs --database postgresql)\n"
            "  --pauses N             SIGSTOP/SIGCONT of random nodes and participants,\n"
            "                         shorter or longer than the lease (default 0 with one\n"
            "                         node, 3 with several)\n"
            "  --replicas N           processes per participant service, 1 or 2 (default 1):\n"
            "                         two share the service's database, sagad lists both URLs,\n"
            "                         kills and pauses hit either one\n"
            "  --participants-database KIND\n"
            "                         sqlite (default: a file per service) or postgresql (a\n"
            "                         database per service on the private server)\n");
}

static int parse_int_opt(const char *name, const char *v, int min, int max, int *out)
{
    int64_t n;
    if (v == NULL || util_parse_i64(v, &n) != 0 || n < min || n > max) {
        fprintf(stderr, "saga-chaos: %s needs an integer in [%d, %d]\n", name, min, max);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse_database_opt(const char *name, const char *v, int *postgresql)
{
    if (v != NULL && (strcmp(v, "sqlite") == 0 || strcmp(v, "postgresql") == 0)) {
        *postgresql = strcmp(v, "postgresql") == 0;
        return 0;
    }
    fprintf(stderr, "saga-chaos: %s needs 'sqlite' or 'postgresql', not '%s'\n", name,
            v ? v : "(nothing)");
    return -1;
}

/* The combinations of --nodes, --database and the crash modes that make
 * sense; the default of --pauses. */
static int check_node_opts(chaos_opts *o)
{
    if (o->nodes > 1 && !o->postgresql) {
        fprintf(stderr,
                "saga-chaos: --nodes %d needs --database postgresql: sagad nodes share "
                "only a PostgreSQL database (SQLite is one node's own file)\n",
                o->nodes);
        return -1;
    }
    if (o->power_loss && o->svc_postgresql) {
        fprintf(stderr, "saga-chaos: --power-loss cuts the power under SQLite files (the "
                        "power-loss VFS); it cannot be combined with --participants-database "
                        "postgresql\n");
        return -1;
    }
    if (o->power_loss && o->postgresql) {
        fprintf(stderr, "saga-chaos: --power-loss cuts the power under SQLite files (the "
                        "power-loss VFS); it cannot be combined with --database postgresql\n");
        return -1;
    }
    if (o->pauses < 0)
        o->pauses = o->nodes > 1 ? 3 : 0;
    return 0;
}

static int parse_opts(int argc, char **argv, chaos_opts *o)
{
    memset(o, 0, sizeof *o);
    o->sagas = 300;
    o->clients = 4;
    o->kills = 3;
    o->participant_kills = 4;
    o->faults_rate = 0.05;
    o->duration_limit_s = 600;
    o->bin_dir = getenv("SAGA_BIN_DIR");
    o->nodes = 1;
    o->replicas = 1;
    o->pauses = -1; /* default after parsing: it depends on --nodes */
    int have_seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, takes = 1;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--seed") == 0) {
            char *end = NULL;
            errno = 0;
            o->seed = v ? strtoull(v, &end, 10) : 0;
            rc = v == NULL || *v == '\0' || *end != '\0' || errno != 0 ? -1 : 0;
            if (rc != 0)
                fprintf(stderr, "saga-chaos: --seed needs an unsigned integer\n");
            have_seed = 1;
        } else if (strcmp(a, "--sagas") == 0) {
            rc = parse_int_opt(a, v, 1, 10000000, &o->sagas);
        } else if (strcmp(a, "--clients") == 0) {
            rc = parse_int_opt(a, v, 1, 256, &o->clients);
        } else if (strcmp(a, "--kills") == 0) {
            rc = parse_int_opt(a, v, 0, 10000, &o->kills);
        } else if (strcmp(a, "--participant-kills") == 0) {
            rc = parse_int_opt(a, v, 0, 10000, &o->participant_kills);
        } else if (strcmp(a, "--duration-limit") == 0) {
            rc = parse_int_opt(a, v, 1, 86400, &o->duration_limit_s);
        } else if (strcmp(a, "--faults-rate") == 0) {
            char *end = NULL;
            o->faults_rate = v ? strtod(v, &end) : -1;
            if (v == NULL || *end != '\0' || !(o->faults_rate >= 0 && o->faults_rate <= 0.5)) {
                fprintf(stderr, "saga-chaos: --faults-rate needs a probability in [0, 0.5]\n");
                rc = -1;
            }
        } else if (strcmp(a, "--bin-dir") == 0) {
            o->bin_dir = v;
            rc = v ? 0 : -1;
        } else if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
            takes = 0;
        } else if (strcmp(a, "--crash-matrix") == 0) {
            o->crash_matrix = 1;
            takes = 0;
        } else if (strcmp(a, "--crash-only") == 0) {
            o->crash_only = v;
            rc = v ? 0 : -1;
        } else if (strcmp(a, "--power-loss") == 0) {
            o->power_loss = 1;
            takes = 0;
        } else if (strcmp(a, "--no-sync") == 0) {
            o->no_sync = 1;
            takes = 0;
        } else if (strcmp(a, "--expect-loss") == 0) {
            o->expect_loss = 1;
            takes = 0;
        } else if (strcmp(a, "--nodes") == 0) {
            rc = parse_int_opt(a, v, 1, MAX_NODES, &o->nodes);
        } else if (strcmp(a, "--replicas") == 0) {
            rc = parse_int_opt(a, v, 1, MAX_REPLICAS, &o->replicas);
        } else if (strcmp(a, "--pauses") == 0) {
            rc = parse_int_opt(a, v, 0, 10000, &o->pauses);
        } else if (strcmp(a, "--database") == 0) {
            rc = parse_database_opt(a, v, &o->postgresql);
        } else if (strcmp(a, "--participants-database") == 0) {
            rc = parse_database_opt(a, v, &o->svc_postgresql);
        } else {
            fprintf(stderr, "saga-chaos: unknown option '%s'\n", a);
            rc = -1;
        }
        if (rc != 0) {
            usage(stderr);
            return -1;
        }
        i += takes;
    }
    if ((o->expect_loss || o->crash_only) && !o->crash_matrix) {
        fprintf(stderr, "saga-chaos: --expect-loss and --crash-only need --crash-matrix\n");
        usage(stderr);
        return -1;
    }
    if (check_node_opts(o) != 0) {
        usage(stderr);
        return -1;
    }
    if (!have_seed) {
        uint32_t r = 0;
        util_random_bytes(&r, sizeof r);
        o->seed = r;
    }
    if (o->bin_dir == NULL) {
        /* Built into build/bin beside sagad: default to our own directory. */
        static char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        char *slash = n > 0 ? (self[n] = '\0', strrchr(self, '/')) : NULL;
        if (slash == NULL) {
            fprintf(stderr, "saga-chaos: give --bin-dir DIR or set SAGA_BIN_DIR\n");
            return -1;
        }
        *slash = '\0';
        o->bin_dir = self;
    }
    return 0;
}

/* ---- The workload: seeds and saga inputs -------------------------------- */

/*
 * Seeds written for the run, so that the totals are known here and not only
 * read back from meta. Rich customers never run out of money and the plain
 * SKUs never run out of stock, so their sagas are expected to complete;
 * SCARCE is contended on purpose (its sagas may complete or compensate).
 */
#define N_RICH       8
#define RICH_BALANCE 1000000000000LL /* 10^12 minor units each */
#define POOR_BALANCE 50              /* below every amount a "no funds" saga asks */
#define N_PLAIN_SKUS 4
#define PLAIN_STOCK  1000000000LL
#define SCARCE_STOCK 40
#define EXPECT_MONEY (N_RICH * RICH_BALANCE + POOR_BALANCE)
#define EXPECT_STOCK (N_PLAIN_SKUS * PLAIN_STOCK + SCARCE_STOCK)

static const char *const served[] = {"Paris", "berlin", "LISBON", "Oslo", "madrid"};

/* What a saga's input is meant to provoke. */
typedef enum {
    CLS_COMPLETE,       /* every step succeeds */
    CLS_SCARCE,         /* may run out of stock under contention */
    CLS_BAD_QUANTITY,   /* refused by order.create (quantity 0) */
    CLS_NO_FUNDS,       /* refused by payment.charge */
    CLS_NO_STOCK,       /* refused by inventory.reserve (stock 0) */
    CLS_NO_DESTINATION, /* refused by shipping.schedule */
    CLS_COUNT
} saga_class;

static const char *const class_names[CLS_COUNT] = {"complete", "scarce",   "bad-quantity",
                                                   "no-funds", "no-stock", "no-destination"};

/* Classes from CLS_BAD_QUANTITY on are refused by a participant: such a saga
 * must end COMPENSATED, never COMPLETED. */

/* One saga the clients start: its input is a pure function of (seed, index). */
typedef struct {
    char key[64];
    saga_class cls;
    int parallel; /* order_fulfillment_parallel rather than order_fulfillment */
    char customer[16], sku[16], destination[16];
    int64_t quantity, amount;
    /* Written by the client that starts it. */
    char id[37];
    int acked;
    int start_error;         /* 1: refused or never acknowledged */
    int dup_mismatch;        /* a repeated start answered another id */
    int conflict_unexpected; /* a key reuse with another input was not refused */
} saga_rec;

static void rec_init(saga_rec *r, uint64_t seed, int index, const char *tag)
{
    util_prng rng;
    util_prng_seed(&rng, util_mix64(seed) ^ util_mix64((uint64_t)index + 1));
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "chaos-%s-%" PRIu64 "-%d", tag, seed, index);
    unsigned roll = (unsigned)(util_prng_next(&rng) % 100);
    r->parallel = index % 2;
    r->cls = roll < 50   ? CLS_COMPLETE
             : roll < 60 ? CLS_SCARCE
             : roll < 70 ? CLS_BAD_QUANTITY
             : roll < 80 ? CLS_NO_FUNDS
             : roll < 90 ? CLS_NO_STOCK
                         : CLS_NO_DESTINATION;
    snprintf(r->customer, sizeof r->customer, "c%u", (unsigned)(util_prng_next(&rng) % N_RICH));
    snprintf(r->sku, sizeof r->sku, "SKU-%u", (unsigned)(util_prng_next(&rng) % N_PLAIN_SKUS));
    snprintf(r->destination, sizeof r->destination, "%s",
             served[util_prng_next(&rng) % (sizeof served / sizeof served[0])]);
    r->quantity = 1 + (int64_t)(util_prng_next(&rng) % 5);
    r->amount = 100 + (int64_t)(util_prng_next(&rng) % 9900);
    switch (r->cls) {
    case CLS_SCARCE:
        snprintf(r->sku, sizeof r->sku, "SCARCE");
        break;
    case CLS_BAD_QUANTITY:
        r->quantity = 0;
        break;
    case CLS_NO_FUNDS:
        snprintf(r->customer, sizeof r->customer, "poor");
        break;
    case CLS_NO_STOCK:
        snprintf(r->sku, sizeof r->sku, "EMPTY");
        break;
    case CLS_NO_DESTINATION:
        snprintf(r->destination, sizeof r->destination, "Atlantis");
        break;
    default:
        break;
    }
}

static int rec_input(const saga_rec *r, kvmap *in)
{
    char q[24], a[24];
    snprintf(q, sizeof q, "%" PRId64, r->quantity);
    snprintf(a, sizeof a, "%" PRId64, r->amount);
    return th_kv(in, "customer", r->customer, "sku", r->sku, "quantity", q, "amount", a,
                 "destination", r->destination, NULL);
}

/* ---- Processes ------------------------------------------------------------ */

enum { SVC_ORDER, SVC_PAYMENT, SVC_INVENTORY, SVC_SHIPPING, N_SVC };
static const char *const svc_names[N_SVC] = {"order", "payment", "inventory", "shipping"};
/* The second replica of each service (--replicas 2). */
static const char *const replica_names[N_SVC] = {"order-b", "payment-b", "inventory-b",
                                                 "shipping-b"};

/* One supervised program: a participant service or sagad. */
typedef struct {
    const char *name;     /* "payment", "sagad" */
    char program[32];     /* in the bin dir */
    char *url;            /* where it listens: participant URL or admin URL */
    char *db, *seed;      /* participants only */
    char *log;            /* stdout+stderr, appended across restarts */
    pid_t pid;            /* > 0 while it runs */
    int incarnation;      /* starts so far */
    int kill_planned;     /* we sent the SIGKILL that ends this incarnation */
    int armed;            /* this incarnation runs with armed_point */
    char armed_point[96]; /* its crash point's name, without ":k" */
    char crash_point[96]; /* SAGA_CRASH_POINT for the next start; "" none */
    int power_loss;       /* ... and with the power-loss VFS */
    int armed_power_loss; /* this incarnation runs with it */
    char *cfg;            /* sagad nodes only: its configuration file */
    char node_name[16];   /* sagad nodes on PostgreSQL: node_name */
    int64_t restart_at;   /* mono ms: the supervisor restarts it no earlier */
    int64_t resume_at;    /* mono ms: > 0 while SIGSTOPped, SIGCONT then */
    /* Deaths by cause. */
    int planned_deaths, fault_deaths, crash_point_hits, unexpected_deaths;
} proc;

/* The sagas a node owned unfinished when it was SIGKILLed (PostgreSQL):
 * "id:owner_epoch,..." as PostgreSQL listed them. */
typedef struct {
    char node_name[16];
    char *sagas; /* NULL when it owned none */
    int n;
    int restart_ms; /* its restart delay: beyond the lease, only others can claim */
} node_death;

typedef struct {
    uint64_t seed;
    char *dir;
    /* Participant processes: svc[i] for service i, and with --replicas 2 its
     * second replica svc[N_SVC + i] on the same database; n_svc of them. */
    proc svc[N_SVC * MAX_REPLICAS];
    int n_svc;
    proc sagad;                      /* node 0: the only one on SQLite */
    proc extra_nodes[MAX_NODES - 1]; /* nodes 1.. (cluster_node) */
    int n_nodes;
    char *admin_urls; /* every node's admin URL, comma-separated */
    pg_cluster *pg;   /* PostgreSQL: the private server, else NULL */
    char *db_url;     /* PostgreSQL: sagad's database */
    node_death *deaths;
    int n_deaths;
    int faults_on;
    double faults_rate;
    int no_sync; /* sagad durability "off", services --unsafe-no-fsync */
    /* Engine counter replayed_replies is per sagad incarnation: the highest
     * value seen in the current one, plus the total of the earlier ones. */
    uint64_t replayed_seen, replayed_before;
    uint64_t last_in_flight, last_unsettled, last_settled;
    int stats_fresh;      /* the last poll answered */
    int monitor_failures; /* polls in a row without a reply */
} cluster;

static void proc_init(proc *p, const char *dir, const char *name, int participant)
{
    memset(p, 0, sizeof *p);
    p->name = name;
    snprintf(p->program, sizeof p->program, participant ? "%s-svc" : "%s", name);
    p->url = th_ipc_url(dir, name);
    char file[64];
    snprintf(file, sizeof file, "%s.log", name);
    p->log = th_path(dir, file);
    if (participant) {
        snprintf(file, sizeof file, "%s.db", name);
        p->db = th_path(dir, file);
        snprintf(file, sizeof file, "%s-seed.cfg", name);
        p->seed = th_path(dir, file);
    }
}

static void proc_free(proc *p)
{
    free(p->cfg);
    free(p->url);
    free(p->db);
    free(p->seed);
    free(p->log);
}

/* Did the process log that its armed crash point killed it (common/crashpoint.c),
 * after cutting the power if it was asked to? A SIGKILL alone could come
 * from elsewhere, and a crash without the power cut asked for proves less. */
static int log_says_reached(const proc *p)
{
    char needle[192];
    snprintf(needle, sizeof needle, "crash point '%s' reached: %s", p->armed_point,
             p->armed_power_loss ? "cutting the power" : "");
    char *text = th_read_file(p->log);
    int found = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return found;
}

/* Records why an incarnation ended. */
static void proc_died(cluster *c, proc *p, int status)
{
    const char *why;
    if (p->kill_planned) {
        p->planned_deaths++;
        why = "planned kill";
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && p->armed &&
               log_says_reached(p)) {
        p->crash_point_hits++;
        why = "crash point hit";
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && p->db != NULL &&
               c->faults_on) {
        p->fault_deaths++;
        why = "injected crash";
    } else {
        p->unexpected_deaths++;
        why = "UNEXPECTED";
        fprintf(stderr, "saga-chaos: %s (pid %d) died unexpectedly: %s %d; see %s\n", p->name,
                (int)p->pid, WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), p->log);
    }
    if (p->armed && !p->kill_planned)
        printf("  %s died (%s)\n", p->name, why);
    p->pid = 0;
    p->kill_planned = 0;
    p->armed = 0;
    p->armed_power_loss = 0;
}

/* Reaps p if it exited; returns 1 if it did. */
static int proc_reap(cluster *c, proc *p)
{
    int st;
    if (p->pid <= 0)
        return 0;
    pid_t r = th_waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
        proc_died(c, p, st);
        return 1;
    }
    return 0;
}

/* Node i (0 on SQLite): sagad's database, and on PostgreSQL its name and
 * lease. */
static proc *cluster_node(cluster *c, int i)
{
    return i == 0 ? &c->sagad : &c->extra_nodes[i - 1];
}

/* SIGCONT for whatever was paused and is due (or every paused process). */
static void cluster_resume_due(cluster *c, int all)
{
    int64_t now = util_mono_ms();
    for (int i = 0; i < c->n_svc + c->n_nodes; i++) {
        proc *p = i < c->n_svc ? &c->svc[i] : cluster_node(c, i - c->n_svc);
        if (p->pid > 0 && p->resume_at > 0 && (all || now >= p->resume_at)) {
            kill(p->pid, SIGCONT);
            p->resume_at = 0;
        }
    }
}

/* Waits until p's socket accepts a dial (without reaping anyone else).
 * Paused processes are resumed when due meanwhile: p may be a replica whose
 * twin this supervisor paused holding the database's write lock, and p's
 * start waits for that lock; the supervisor blocked here would hold the
 * SIGCONT back, and both would wait until p gave up. */
static int proc_wait_ready(cluster *c, proc *p)
{
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return -1;
    int64_t deadline = util_mono_ms() + READY_MS;
    int rc = -1;
    while (p->pid > 0 && util_mono_ms() < deadline) {
        if (nng_dial(s, p->url, NULL, 0) == 0) {
            rc = 0;
            break;
        }
        if (proc_reap(c, p))
            break;
        cluster_resume_due(c, 0);
        util_sleep_ms(10);
    }
    nng_close(s);
    return rc;
}

static int proc_start(cluster *c, proc *p)
{
    const char *args[16];
    int n = 0;
    char faults[256];
    if (p->db != NULL) { /* a participant */
        args[n++] = "--listen";
        args[n++] = p->url;
        args[n++] = "--db";
        args[n++] = p->db;
        args[n++] = "--seed";
        args[n++] = p->seed;
        if (c->faults_on && c->faults_rate > 0) {
            double r = c->faults_rate;
            /* A new fault seed per incarnation, so a restart does not replay
             * the same sequence of decisions from the start. */
            snprintf(faults, sizeof faults,
                     "seed=%" PRIu64 ",drop_reply=%g,crash_before_commit=%g,"
                     "crash_after_commit=%g,delay=%g,delay_ms=%d,retry=%g",
                     util_mix64(c->seed + (uint64_t)p->incarnation * 131 + (uint64_t)(p - c->svc)),
                     r, r / 10, r / 10, r, FAULT_DELAY_MS, r);
            args[n++] = "--faults";
            args[n++] = faults;
        }
        if (c->no_sync)
            args[n++] = "--unsafe-no-fsync";
    } else {
        args[n++] = "--config";
        args[n++] = p->cfg;
    }
    args[n++] = "--log-level";
    /* info: "took over N sagas" (nodes), "stopped: N requests" (replicas) */
    args[n++] = c->db_url || c->n_svc > N_SVC ? "info" : "warn";
    args[n] = NULL;

    char env_cp[128], env_vfs[64];
    const char *env[3] = {NULL, NULL, NULL};
    p->armed = p->crash_point[0] != '\0';
    p->armed_power_loss = p->armed && p->power_loss;
    if (p->armed) {
        snprintf(env_cp, sizeof env_cp, "SAGA_CRASH_POINT=%s", p->crash_point);
        env[0] = env_cp;
        if (p->armed_power_loss) {
            /* The tear (how much of the last write survives) follows the seed. */
            snprintf(env_vfs, sizeof env_vfs, "SAGA_TEST_VFS=powerloss:%" PRIu64,
                     util_mix64(c->seed ^ 0x9077e5) >> 1);
            env[1] = env_vfs;
        }
        snprintf(p->armed_point, sizeof p->armed_point, "%s", p->crash_point);
        p->armed_point[strcspn(p->armed_point, ":")] = '\0';
        p->crash_point[0] = '\0'; /* only this incarnation */
    }
    p->incarnation++;
    p->kill_planned = 0;
    p->resume_at = 0;
    if (th_spawn(p->program, args, env, p->log, &p->pid) != 0) {
        p->pid = 0;
        return -1;
    }
    return proc_wait_ready(c, p);
}

/* SIGKILL a running process on purpose; the supervisor restarts it. */
static void proc_kill(cluster *c, proc *p)
{
    if (p->pid <= 0)
        return;
    p->kill_planned = 1;
    p->resume_at = 0;
    kill(p->pid, SIGKILL);
    int st;
    if (th_waitpid(p->pid, &st, 0) == p->pid)
        proc_died(c, p, st);
}

/* SIGTERM and reap; a clean stop is not a death to account for. */
static void proc_stop(proc *p)
{
    if (p->pid <= 0)
        return;
    int st;
    if (p->resume_at > 0)
        kill(p->pid, SIGCONT); /* a stopped process would not see the SIGTERM */
    p->resume_at = 0;
    th_stop(p->pid, 10000, &st);
    p->pid = 0;
}

/* ---- Cluster setup --------------------------------------------------------- */

static int write_seeds(cluster *c)
{
    char buf[2048];
    size_t len = 0;
    len += (size_t)snprintf(buf + len, sizeof buf - len, "# saga-chaos: total %lld\naccounts = (\n",
                            (long long)EXPECT_MONEY);
    for (int i = 0; i < N_RICH; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len,
                                "  { customer = \"c%d\"; balance = %lldL; },\n", i,
                                (long long)RICH_BALANCE);
    snprintf(buf + len, sizeof buf - len, "  { customer = \"poor\"; balance = %d; }\n);\n",
             POOR_BALANCE);
    if (th_write_file(c->svc[SVC_PAYMENT].seed, buf) != 0)
        return -1;

    len = (size_t)snprintf(buf, sizeof buf, "skus = (\n");
    for (int i = 0; i < N_PLAIN_SKUS; i++)
        len +=
            (size_t)snprintf(buf + len, sizeof buf - len,
                             "  { sku = \"SKU-%d\"; stock = %lld; },\n", i, (long long)PLAIN_STOCK);
    snprintf(buf + len, sizeof buf - len,
             "  { sku = \"SCARCE\"; stock = %d; },\n  { sku = \"EMPTY\"; stock = 0; }\n);\n",
             SCARCE_STOCK);
    if (th_write_file(c->svc[SVC_INVENTORY].seed, buf) != 0)
        return -1;

    if (th_write_file(
            c->svc[SVC_SHIPPING].seed,
            "destinations = [ \"Paris\", \"Berlin\", \"Lisbon\", \"Oslo\", \"Madrid\" ];\n") != 0)
        return -1;
    return th_write_file(c->svc[SVC_ORDER].seed, "# orders only come from sagas\n");
}

/*
 * The order_fulfillment saga of sagas/order_fulfillment.cfg, step for step,
 * with the run's retry policy on the pivot step: its outcome must become
 * known, or the saga would (correctly) stop in FAILED.
 */
static const char saga_def_text[] =
    "name = \"order_fulfillment\";\n"
    "inputs = [\"customer\", \"sku\", \"quantity\", \"amount\", \"destination\"];\n"
    "steps = (\n"
    "  { name = \"create_order\"; participant = \"order\"; action = \"create\";\n"
    "    compensation = \"cancel\"; inputs = [\"customer\", \"sku\", \"quantity\", \"amount\"];\n"
    "    outputs = [\"order_id\"]; },\n"
    "  { name = \"charge_payment\"; participant = \"payment\"; action = \"charge\";\n"
    "    compensation = \"refund\"; inputs = [\"customer\", \"amount\", \"order_id\"];\n"
    "    outputs = [\"charge_id\"]; },\n"
    "  { name = \"reserve_stock\"; participant = \"inventory\"; action = \"reserve\";\n"
    "    compensation = \"release\"; inputs = [\"sku\", \"quantity\", \"order_id\"];\n"
    "    outputs = [\"reservation_id\"]; },\n"
    "  { name = \"schedule_shipping\"; participant = \"shipping\"; action = \"schedule\";\n"
    "    compensation = \"cancel\"; inputs = [\"destination\", \"order_id\", \"customer\"];\n"
    "    outputs = [\"shipment_id\"]; },\n"
    "  { name = \"approve_order\"; participant = \"order\"; action = \"approve\";\n"
    "    compensation = \"none\"; inputs = [\"order_id\"];\n"
    "    retry = { max_attempts = %d; }; }\n"
    ");\n";

/* The same steps as sagas/order_fulfillment_parallel.cfg: charge_payment and
 * reserve_stock at once after create_order, schedule_shipping after both. */
static const char parallel_def_text[] =
    "name = \"order_fulfillment_parallel\";\n"
    "inputs = [\"customer\", \"sku\", \"quantity\", \"amount\", \"destination\"];\n"
    "steps = (\n"
    "  { name = \"create_order\"; participant = \"order\"; action = \"create\";\n"
    "    compensation = \"cancel\"; inputs = [\"customer\", \"sku\", \"quantity\", \"amount\"];\n"
    "    outputs = [\"order_id\"]; },\n"
    "  { name = \"charge_payment\"; participant = \"payment\"; action = \"charge\";\n"
    "    compensation = \"refund\"; inputs = [\"customer\", \"amount\", \"order_id\"];\n"
    "    outputs = [\"charge_id\"]; },\n"
    "  { name = \"reserve_stock\"; participant = \"inventory\"; action = \"reserve\";\n"
    "    compensation = \"release\"; after = [\"create_order\"];\n"
    "    inputs = [\"sku\", \"quantity\", \"order_id\"]; outputs = [\"reservation_id\"]; },\n"
    "  { name = \"schedule_shipping\"; participant = \"shipping\"; action = \"schedule\";\n"
    "    compensation = \"cancel\"; after = [\"charge_payment\", \"reserve_stock\"];\n"
    "    inputs = [\"destination\", \"order_id\", \"customer\"]; outputs = [\"shipment_id\"]; },\n"
    "  { name = \"approve_order\"; participant = \"order\"; action = \"approve\";\n"
    "    compensation = \"none\"; inputs = [\"order_id\"];\n"
    "    retry = { max_attempts = %d; }; }\n"
    ");\n";

static int write_node_config(cluster *c, proc *node, const char *sagas_dir)
{
    char *db = c->db_url ? util_strdup(c->db_url) : th_path(c->dir, "sagad.db");
    char *node_lines = c->db_url ? util_asprintf("node_name = \"%s\";\nlease_ms = %d;\n",
                                                 node->node_name, NODE_LEASE_MS)
                                 : util_strdup("");
    /* Each service's URL, or the list of its replicas' URLs. */
    char *urls[N_SVC];
    for (int i = 0; i < N_SVC; i++)
        urls[i] = c->n_svc > N_SVC
                      ? util_asprintf("[\"%s\", \"%s\"]", c->svc[i].url, c->svc[N_SVC + i].url)
                      : util_asprintf("\"%s\"", c->svc[i].url);
    char *cfg = util_asprintf(
        "admin_url = \"%s\";\n"
        "database = \"%s\";\n"
        "sagas_dir = \"%s\";\n"
        "max_in_flight = %d;\n"
        "durability = \"%s\";\n"
        "participants = {\n  order = %s;\n  payment = %s;\n"
        "  inventory = %s;\n  shipping = %s;\n};\n"
        "defaults = {\n  timeout_ms = %d;\n"
        "  retry = { max_attempts = %d; initial_backoff_ms = 20; max_backoff_ms = 400;"
        " multiplier = 2.0; };\n"
        "  compensation_retry = { max_attempts = %d; initial_backoff_ms = 20;"
        " max_backoff_ms = 1000; multiplier = 2.0; };\n};\n%s",
        node->url, db, sagas_dir, MAX_IN_FLIGHT, c->no_sync ? "off" : "full", urls[SVC_ORDER],
        urls[SVC_PAYMENT], urls[SVC_INVENTORY], urls[SVC_SHIPPING], STEP_TIMEOUT_MS,
        ACTION_ATTEMPTS, COMPENSATION_ATTEMPT, node_lines);
    int rc = db && node_lines && cfg && th_write_file(node->cfg, cfg) == 0 ? 0 : -1;
    for (int i = 0; i < N_SVC; i++)
        free(urls[i]);
    free(db);
    free(node_lines);
    free(cfg);
    return rc;
}

/* The saga definition and every node's configuration. */
static int write_sagad_config(cluster *c)
{
    char *sagas_dir = th_path(c->dir, "sagas");
    char *saga_file = th_path(sagas_dir, "order_fulfillment.cfg");
    char *parallel_file = th_path(sagas_dir, "order_fulfillment_parallel.cfg");
    char *def = util_asprintf(saga_def_text, PIVOT_ATTEMPTS);
    char *parallel_def = util_asprintf(parallel_def_text, PIVOT_ATTEMPTS);
    int rc = -1;
    if (sagas_dir && saga_file && parallel_file && def && parallel_def &&
        mkdir(sagas_dir, 0700) == 0 && th_write_file(saga_file, def) == 0 &&
        th_write_file(parallel_file, parallel_def) == 0) {
        rc = 0;
        for (int i = 0; i < c->n_nodes && rc == 0; i++)
            rc = write_node_config(c, cluster_node(c, i), sagas_dir);
    }
    free(sagas_dir);
    free(saga_file);
    free(parallel_file);
    free(def);
    free(parallel_def);
    return rc;
}

/* The private PostgreSQL server, and on it sagad's database (sagad) and
 * one per service (services): each service's first replica gets its URL as
 * its --db. Not durable: the chaos kills sagad nodes and participants, never
 * the server, and the power-loss mode (the one that would need it) is
 * SQLite's only. */
static int cluster_setup_postgresql(cluster *c, int sagad, int services)
{
    char err[1024];
    c->pg = pgc_start(0, err, sizeof err);
    if (c->pg == NULL) {
        fprintf(stderr, "saga-chaos: cannot start a PostgreSQL server: %s\n", err);
        return -1;
    }
    if (sagad &&
        (pgc_create_db(c->pg, "chaos") != 0 || (c->db_url = pgc_url(c->pg, "chaos")) == NULL)) {
        fprintf(stderr, "saga-chaos: cannot create the database 'chaos'\n");
        return -1;
    }
    if (sagad)
        printf("  sagad's database: %s\n", c->db_url);
    for (int i = 0; services && i < N_SVC; i++) {
        proc *p = &c->svc[i];
        char *url = NULL;
        if (pgc_create_db(c->pg, svc_names[i]) != 0 ||
            (url = pgc_url(c->pg, svc_names[i])) == NULL) {
            fprintf(stderr, "saga-chaos: cannot create the database '%s'\n", svc_names[i]);
            return -1;
        }
        free(p->db);
        p->db = url;
    }
    if (services)
        printf("  the services' databases: one per service on the same server\n");
    return 0;
}

/* The n_nodes sagad processes: node 0 keeps the single node's files
 * (sagad.cfg, sagad.log, the sagad socket); node i is sagad-<letter>. */
static int cluster_init_nodes(cluster *c, const char *dir, int n_nodes)
{
    static const char *const names[MAX_NODES] = {"sagad", "sagad-b", "sagad-c", "sagad-d",
                                                 "sagad-e"};
    c->n_nodes = n_nodes;
    size_t urls_len = 1;
    for (int i = 0; i < n_nodes; i++) {
        proc *p = cluster_node(c, i);
        proc_init(p, dir, names[i], 0);
        snprintf(p->program, sizeof p->program, "sagad");
        snprintf(p->node_name, sizeof p->node_name, "node-%c", 'a' + i);
        char file[32];
        snprintf(file, sizeof file, "%s.cfg", names[i]);
        p->cfg = th_path(dir, file);
        urls_len += strlen(p->url) + 1;
    }
    c->admin_urls = calloc(1, urls_len);
    if (c->admin_urls == NULL)
        return -1;
    for (int i = 0; i < n_nodes; i++) {
        if (i > 0)
            strcat(c->admin_urls, ",");
        strcat(c->admin_urls, cluster_node(c, i)->url);
    }
    return 0;
}

/* Makes dir's files and starts everything (participants first). */
static int cluster_setup(cluster *c, const char *dir, uint64_t seed, double faults_rate,
                         int no_sync, int n_nodes, int postgresql, int svc_postgresql, int replicas)
{
    memset(c, 0, sizeof *c);
    c->seed = seed;
    c->no_sync = no_sync;
    c->dir = util_strdup(dir);
    c->faults_rate = faults_rate;
    c->faults_on = faults_rate > 0;
    c->n_svc = N_SVC * replicas;
    for (int i = 0; i < N_SVC; i++)
        proc_init(&c->svc[i], dir, svc_names[i], 1);
    if ((postgresql || svc_postgresql) &&
        cluster_setup_postgresql(c, postgresql, svc_postgresql) != 0)
        return -1;
    for (int i = N_SVC; i < c->n_svc; i++) { /* same program, database and seed */
        proc *p = &c->svc[i], *first = &c->svc[i - N_SVC];
        proc_init(p, dir, replica_names[i - N_SVC], 1);
        memcpy(p->program, first->program, sizeof p->program);
        free(p->db);
        free(p->seed);
        p->db = util_strdup(first->db);
        p->seed = util_strdup(first->seed);
    }
    if (cluster_init_nodes(c, dir, n_nodes) != 0)
        return -1;
    if (write_seeds(c) != 0 || write_sagad_config(c) != 0) {
        fprintf(stderr, "saga-chaos: cannot write the configuration in %s\n", dir);
        return -1;
    }
    return 0;
}

static int cluster_start(cluster *c)
{
    /* First replicas first: each seeds its database before a second opens it. */
    for (int i = 0; i < c->n_svc; i++)
        if (proc_start(c, &c->svc[i]) != 0) {
            fprintf(stderr, "saga-chaos: %s did not start; see %s\n", c->svc[i].name,
                    c->svc[i].log);
            return -1;
        }
    for (int i = 0; i < c->n_nodes; i++) {
        proc *p = cluster_node(c, i);
        if (proc_start(c, p) != 0) {
            fprintf(stderr, "saga-chaos: %s did not start; see %s\n", p->name, p->log);
            return -1;
        }
    }
    return 0;
}

static void cluster_stop(cluster *c)
{
    for (int i = 0; i < c->n_nodes; i++)
        proc_stop(cluster_node(c, i));
    for (int i = 0; i < c->n_svc; i++)
        proc_stop(&c->svc[i]);
}

static void cluster_free(cluster *c)
{
    for (int i = 0; i < c->n_svc; i++)
        proc_free(&c->svc[i]);
    for (int i = 0; i < c->n_nodes; i++)
        proc_free(cluster_node(c, i));
    for (int i = 0; i < c->n_deaths; i++)
        free(c->deaths[i].sagas);
    free(c->deaths);
    free(c->admin_urls);
    free(c->db_url);
    pgc_destroy(c->pg); /* after every node stopped */
    free(c->dir);
}

/* Reaps whatever died and restarts it: the supervisor's one round. */
static void cluster_supervise(cluster *c)
{
    for (int i = 0; i < c->n_svc; i++) {
        proc *p = &c->svc[i];
        proc_reap(c, p);
        if (p->pid <= 0 && proc_start(c, p) != 0)
            fprintf(stderr, "saga-chaos: cannot restart %s (will retry)\n", p->name);
    }
    proc_reap(c, &c->sagad);
    if (c->sagad.pid <= 0 && util_mono_ms() >= c->sagad.restart_at) {
        c->replayed_before += c->replayed_seen;
        c->replayed_seen = 0;
        c->stats_fresh = 0;
        if (proc_start(c, &c->sagad) != 0)
            fprintf(stderr, "saga-chaos: cannot restart sagad (will retry)\n");
    }
    for (int i = 1; i < c->n_nodes; i++) {
        proc *p = cluster_node(c, i);
        proc_reap(c, p);
        if (p->pid <= 0 && util_mono_ms() >= p->restart_at && proc_start(c, p) != 0)
            fprintf(stderr, "saga-chaos: cannot restart %s (will retry)\n", p->name);
    }
    cluster_resume_due(c, 0);
}

/* ---- The admin protocol ------------------------------------------------------ */

/* urls: one admin URL or several, comma-separated (every sagad node). */
static int admin_open(nng_socket *s, const char *urls)
{
    int rv;
    if ((rv = nng_req0_open(s)) != 0)
        return rv;
    /* No automatic resend: a retry is a decision of the caller, with the
     * same request (and so the same client key). The dial runs in the
     * background and keeps reconnecting while sagad is down. */
    if ((rv = nng_socket_set_ms(*s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
        (rv = nng_socket_set_ms(*s, NNG_OPT_RECONNMINT, 20)) != 0 ||
        (rv = nng_socket_set_ms(*s, NNG_OPT_RECONNMAXT, 200)) != 0 ||
        (rv = nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, 32 * 1024 * 1024)) != 0) {
        nng_close(*s);
        return rv;
    }
    /* One dialer per node: req0 hands each request to the next connected
     * node in turn, so starts spread over the nodes and a retry after a
     * node stopped answering goes to another. */
    for (const char *at = urls; *at != '\0';) {
        size_t len = strcspn(at, ",");
        char url[512];
        snprintf(url, sizeof url, "%.*s", (int)len, at);
        if ((rv = nng_dial(*s, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
            nng_close(*s);
            return rv;
        }
        at += len + (at[len] == ',');
    }
    return 0;
}

/*
 * Why not nng_send/nng_recv with NNG_OPT_SENDTIMEO: with nng 1.5.2, a
 * blocking nng_send on a req0 socket whose pipe went away as sagad was
 * killed was seen to wait forever, send timeout or not (seed 4242, 3000
 * sagas, 16 clients, 20 kills). So every call runs on its own context with
 * an aio, and this program bounds the wait itself: at the deadline it
 * cancels, and an aio that nng still does not complete is abandoned
 * (counted, kept on a list until the program exits, never touched again)
 * rather than blocking the client for good. Kept, not dropped: an op that
 * only nng's own structures point to would be reported by LeakSanitizer.
 */
typedef struct admin_op {
    nng_aio *aio;
    atomic_int done;
    struct admin_op *next_abandoned;
} admin_op;

static atomic_int admin_abandoned; /* aios nng never completed */
static admin_op *abandoned_ops;
static pthread_mutex_t abandoned_mu = PTHREAD_MUTEX_INITIALIZER;

static void admin_op_abandon(admin_op *op)
{
    pthread_mutex_lock(&abandoned_mu);
    op->next_abandoned = abandoned_ops;
    abandoned_ops = op;
    pthread_mutex_unlock(&abandoned_mu);
    atomic_fetch_add(&admin_abandoned, 1);
}

static void admin_op_done(void *arg)
{
    admin_op *op = arg;
    atomic_store(&op->done, 1);
}

/* Waits for op until deadline (mono ms), cancelling at the deadline.
 * Returns the aio's result, or -2 when nng never completed it. */
static int admin_op_wait(admin_op *op, int64_t deadline)
{
    while (!atomic_load(&op->done) && util_mono_ms() < deadline)
        util_sleep_ms(1);
    if (!atomic_load(&op->done)) {
        nng_aio_cancel(op->aio);
        int64_t grace = util_mono_ms() + 2000;
        while (!atomic_load(&op->done) && util_mono_ms() < grace)
            util_sleep_ms(1);
        if (!atomic_load(&op->done))
            return -2;
    }
    return nng_aio_result(op->aio);
}

/*
 * One request and its reply (*out, freed by the caller with
 * saga__v1__admin_reply__free_unpacked). Returns 0, an nng error code
 * (NNG_ETIMEDOUT, NNG_ECONNRESET, ...), or -1 for an unreadable reply.
 */
static int admin_call(nng_socket s, const AdminRequest *req, int timeout_ms, AdminReply **out)
{
    size_t len = protobuf_c_message_get_packed_size(&req->base);
    int64_t deadline = util_mono_ms() + timeout_ms;
    nng_ctx ctx;
    nng_msg *msg = NULL;
    int rv;
    admin_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NNG_ENOMEM;
    if ((rv = nng_aio_alloc(&op->aio, admin_op_done, op)) != 0) {
        free(op);
        return rv;
    }
    if ((rv = nng_ctx_open(&ctx, s)) != 0) {
        nng_aio_free(op->aio);
        free(op);
        return rv;
    }
    nng_ctx_set_ms(ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if ((rv = nng_msg_alloc(&msg, len)) != 0)
        goto out;
    protobuf_c_message_pack(&req->base, nng_msg_body(msg));
    nng_aio_set_timeout(op->aio, timeout_ms);
    nng_aio_set_msg(op->aio, msg);
    nng_ctx_send(ctx, op->aio);
    if ((rv = admin_op_wait(op, deadline)) != 0) {
        if (rv != -2)
            nng_msg_free(nng_aio_get_msg(op->aio)); /* a failed send leaves it ours */
        goto out;
    }
    atomic_store(&op->done, 0);
    nng_aio_set_timeout(op->aio, timeout_ms);
    nng_ctx_recv(ctx, op->aio);
    if ((rv = admin_op_wait(op, deadline + 100)) != 0)
        goto out;
    msg = nng_aio_get_msg(op->aio);
    *out = saga__v1__admin_reply__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    nng_msg_free(msg);
    rv = *out ? 0 : -1;
out:
    if (rv == -2) {
        admin_op_abandon(op); /* op and ctx stay with nng: never touched again */
        return NNG_ETIMEDOUT;
    }
    nng_ctx_close(ctx);
    nng_aio_free(op->aio);
    free(op);
    return rv;
}

static AdminReply *admin_stats(nng_socket s, int timeout_ms)
{
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetStats body = SAGA__V1__GET_STATS__INIT;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATS;
    req.stats = &body;
    AdminReply *rep = NULL;
    if (admin_call(s, &req, timeout_ms, &rep) != 0)
        return NULL;
    if (rep->status != SAGA__V1__ADMIN_STATUS__ADMIN_OK ||
        rep->body_case != SAGA__V1__ADMIN_REPLY__BODY_STATS) {
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        return NULL;
    }
    return rep;
}

/* GetStatus or GetHistory of one saga, retried until the deadline. */
static AdminReply *admin_read(nng_socket s, const char *saga_id, int history, int64_t deadline)
{
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetStatus st = SAGA__V1__GET_STATUS__INIT;
    Saga__V1__GetHistory hi = SAGA__V1__GET_HISTORY__INIT;
    if (history) {
        hi.saga_id = (char *)saga_id;
        req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_HISTORY;
        req.history = &hi;
    } else {
        st.saga_id = (char *)saga_id;
        req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATUS;
        req.status = &st;
    }
    do {
        AdminReply *rep = NULL;
        if (admin_call(s, &req, ADMIN_CALL_MS, &rep) == 0) {
            if (rep->status == SAGA__V1__ADMIN_STATUS__ADMIN_OK)
                return rep;
            int transient = rep->status == SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL;
            saga__v1__admin_reply__free_unpacked(rep, NULL);
            if (!transient)
                return NULL;
        }
        util_sleep_ms(50);
    } while (util_mono_ms() < deadline);
    return NULL;
}

/* ---- Clients --------------------------------------------------------------- */

typedef struct {
    const chaos_opts *o;
    cluster *c;
    saga_rec *recs;
    int n;
    int duplicate_pct; /* starts repeated at once, and again at the end */
    int conflict_pct;  /* keys reused with another input */
    int64_t deadline;  /* mono ms: clients give up */
    atomic_int next;   /* next rec to start */
    atomic_int acked;  /* starts acknowledged */
    atomic_int clients_done;
    atomic_int start_retries, busy, dup_checks, conflict_checks, reopened;
    pthread_barrier_t barrier;
} workload;

typedef struct {
    workload *w;
    int index;
    pthread_t thread;
    util_prng rng;
    nng_socket sock;
    int failures_in_row; /* admin calls without any reply */
    int sock_tainted;    /* an aio of sock was abandoned: never close it */
} client;

/*
 * A new socket after REOPEN_AFTER calls in a row got no reply. nng 1.5.2's
 * dialer can stop redialing for good when the peer dies while a connection
 * is being set up (seen here when sagad is killed; cf. nanomsg/nng#970), so
 * a robust client starts over, as this one does.
 */
#define REOPEN_AFTER 3
static int socket_reopen(nng_socket *s, const char *url, int tainted)
{
    nng_socket fresh;
    if (admin_open(&fresh, url) != 0)
        return -1;
    if (!tainted)
        nng_close(*s);
    *s = fresh; /* a tainted socket is left to nng, never touched again */
    return 0;
}

/* admin_call for a client: counts failures and starts over when needed. */
static int client_call(client *cl, const AdminRequest *req, AdminReply **out)
{
    int abandoned = atomic_load(&admin_abandoned);
    int rv = admin_call(cl->sock, req, ADMIN_CALL_MS, out);
    if (atomic_load(&admin_abandoned) != abandoned)
        cl->sock_tainted = 1;
    if (rv == 0) {
        cl->failures_in_row = 0;
    } else if (++cl->failures_in_row >= REOPEN_AFTER &&
               socket_reopen(&cl->sock, cl->w->c->admin_urls, cl->sock_tainted) == 0) {
        cl->failures_in_row = 0;
        cl->sock_tainted = 0;
        atomic_fetch_add(&cl->w->reopened, 1);
    }
    return rv;
}

/*
 * StartSaga(key, input) until an answer that is not transient. Returns the
 * AdminStatus, or -1 when the deadline passed; *id gets the saga id of OK
 * (and CONFLICT) answers, *existing the reply's flag.
 */
static int client_start(client *cl, const char *type, const char *key, const kvmap *input,
                        char id[37], int *existing)
{
    workload *w = cl->w;
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__StartSaga start = SAGA__V1__START_SAGA__INIT;
    Saga__V1__StartSaga__InputEntry entries[8], *ptrs[8];
    start.type = (char *)type;
    start.client_key = (char *)key;
    for (size_t i = 0; i < input->len && i < 8; i++) {
        Saga__V1__StartSaga__InputEntry e = SAGA__V1__START_SAGA__INPUT_ENTRY__INIT;
        e.key = input->items[i].key;
        e.value = input->items[i].value;
        entries[i] = e;
        ptrs[i] = &entries[i];
    }
    start.n_input = input->len < 8 ? input->len : 8;
    start.input = ptrs;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_START;
    req.start = &start;

    for (int first = 1; util_mono_ms() < w->deadline; first = 0) {
        if (!first)
            atomic_fetch_add(&w->start_retries, 1);
        AdminReply *rep = NULL;
        int rv = client_call(cl, &req, &rep);
        if (rv != 0) { /* timeout, sagad gone, unreadable: the same request again */
            util_sleep_ms(20 + (int64_t)(util_prng_next(&cl->rng) % 80));
            continue;
        }
        int status = (int)rep->status;
        if (status == SAGA__V1__ADMIN_STATUS__ADMIN_BUSY ||
            status == SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL) {
            if (status == SAGA__V1__ADMIN_STATUS__ADMIN_BUSY)
                atomic_fetch_add(&w->busy, 1);
            saga__v1__admin_reply__free_unpacked(rep, NULL);
            util_sleep_ms(20 + (int64_t)(util_prng_next(&cl->rng) % 80));
            continue;
        }
        id[0] = '\0';
        *existing = 0;
        if (rep->body_case == SAGA__V1__ADMIN_REPLY__BODY_STARTED && rep->started) {
            snprintf(id, 37, "%s", rep->started->saga_id);
            *existing = rep->started->existing;
        }
        if (status != SAGA__V1__ADMIN_STATUS__ADMIN_OK &&
            status != SAGA__V1__ADMIN_STATUS__ADMIN_CONFLICT)
            fprintf(stderr, "saga-chaos: start %s refused: status %d: %s\n", key, status,
                    rep->error);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        return status;
    }
    return -1;
}

static const char *rec_type(const saga_rec *r)
{
    return r->parallel ? "order_fulfillment_parallel" : "order_fulfillment";
}

/* Starts rec r; repeats it at once with some probability. */
static void client_run_one(client *cl, saga_rec *r)
{
    workload *w = cl->w;
    kvmap input = KVMAP_INIT;
    char id[37];
    int existing;
    if (rec_input(r, &input) != 0) {
        r->start_error = 1;
        return;
    }
    int status = client_start(cl, rec_type(r), r->key, &input, id, &existing);
    if (status != SAGA__V1__ADMIN_STATUS__ADMIN_OK || id[0] == '\0') {
        r->start_error = 1;
        if (status == -1)
            fprintf(stderr, "saga-chaos: start %s never acknowledged\n", r->key);
        kv_free(&input);
        return;
    }
    memcpy(r->id, id, sizeof r->id);
    r->acked = 1;
    atomic_fetch_add(&w->acked, 1);

    if ((int)(util_prng_next(&cl->rng) % 100) < w->duplicate_pct) {
        atomic_fetch_add(&w->dup_checks, 1);
        status = client_start(cl, rec_type(r), r->key, &input, id, &existing);
        if (status != SAGA__V1__ADMIN_STATUS__ADMIN_OK || strcmp(id, r->id) != 0 || !existing)
            r->dup_mismatch = 1;
    }
    if ((int)(util_prng_next(&cl->rng) % 100) < w->conflict_pct) {
        /* Same key, another input: must be refused and create nothing. */
        char other[24];
        snprintf(other, sizeof other, "%" PRId64, r->amount + 1);
        kv_set(&input, "amount", other);
        atomic_fetch_add(&w->conflict_checks, 1);
        status = client_start(cl, rec_type(r), r->key, &input, id, &existing);
        if (status != SAGA__V1__ADMIN_STATUS__ADMIN_CONFLICT)
            r->conflict_unexpected = 1;
    }
    kv_free(&input);
}

/* A late repeat of a start acknowledged long ago (the saga may be settled:
 * sagad must find the key in its store, not only in memory). */
static void client_late_duplicate(client *cl, saga_rec *r)
{
    kvmap input = KVMAP_INIT;
    char id[37];
    int existing;
    if (!r->acked || rec_input(r, &input) != 0) {
        kv_free(&input);
        return;
    }
    atomic_fetch_add(&cl->w->dup_checks, 1);
    int status = client_start(cl, rec_type(r), r->key, &input, id, &existing);
    if (status != SAGA__V1__ADMIN_STATUS__ADMIN_OK || strcmp(id, r->id) != 0 || !existing)
        r->dup_mismatch = 1;
    kv_free(&input);
}

static void *client_main(void *arg)
{
    client *cl = arg;
    workload *w = cl->w;
    for (;;) {
        int i = atomic_fetch_add(&w->next, 1);
        if (i >= w->n)
            break;
        client_run_one(cl, &w->recs[i]);
    }
    pthread_barrier_wait(&w->barrier); /* every first start is answered */
    for (int i = cl->index; i < w->n; i += w->o->clients)
        if ((int)(util_prng_next(&cl->rng) % 100) < w->duplicate_pct)
            client_late_duplicate(cl, &w->recs[i]);
    atomic_fetch_add(&w->clients_done, 1);
    return NULL;
}

/* ---- Supervision and the kill schedule ------------------------------------ */

/* A planned SIGKILL: of sagad (svc < 0) or of participant svc, once `after`
 * sagas have settled (the count spans the whole busy period, unlike the
 * count of acknowledged starts, which may all come early). */
typedef struct {
    int after;
    int svc;      /* -1: a sagad node */
    int node;     /* which node (several nodes) */
    int pause_ms; /* > 0: SIGSTOP for that long instead of SIGKILL */
} planned_kill;

static int kill_cmp(const void *a, const void *b)
{
    const planned_kill *x = a, *y = b;
    return (x->after > y->after) - (x->after < y->after);
}

/* Polls sagad's stats (short timeout); updates the cluster's view. */
static void monitor_poll(cluster *c, nng_socket *mon)
{
    int running = 0;
    for (int i = 0; i < c->n_nodes; i++)
        running += cluster_node(c, i)->pid > 0;
    if (running == 0) {
        c->stats_fresh = 0;
        return;
    }
    int abandoned = atomic_load(&admin_abandoned);
    AdminReply *rep = admin_stats(*mon, MONITOR_CALL_MS);
    c->stats_fresh = rep != NULL;
    if (rep == NULL) {
        /* The same remedy as the clients' (socket_reopen). */
        if (++c->monitor_failures >= REOPEN_AFTER &&
            socket_reopen(mon, c->admin_urls, atomic_load(&admin_abandoned) != abandoned) == 0)
            c->monitor_failures = 0;
        return;
    }
    c->monitor_failures = 0;
    const Saga__V1__Stats *st = rep->stats;
    if (st->replayed_replies > c->replayed_seen)
        c->replayed_seen = st->replayed_replies;
    c->last_in_flight = st->in_flight;
    c->last_unsettled = st->running + st->compensating;
    c->last_settled = st->completed + st->compensated + st->failed;
    saga__v1__admin_reply__free_unpacked(rep, NULL);
}

/* ---- Checks -------------------------------------------------------------- */

typedef struct {
    int passed, failed;
    uint64_t seed;
    nng_socket admin;
    int64_t deadline;
} verdicts;

/* A list of offending saga ids for one invariant. */
typedef struct {
    char (*ids)[37];
    size_t n, cap;
} id_list;

static void ids_add(id_list *l, const char *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        void *p = realloc(l->ids, cap * sizeof *l->ids);
        if (p == NULL)
            return;
        l->ids = p;
        l->cap = cap;
    }
    snprintf(l->ids[l->n++], 37, "%s", id);
}

static void print_history(verdicts *v, const char *id)
{
    AdminReply *rep = admin_read(v->admin, id, 1, util_mono_ms() + 5000);
    if (rep == NULL || rep->history == NULL) {
        printf("      (no history for %s)\n", id);
    } else {
        printf("      history of %s:\n", id);
        for (size_t i = 0; i < rep->history->n_events; i++) {
            const Saga__V1__HistoryEvent *e = rep->history->events[i];
            printf("        %4" PRIu64 " %-16s %-18s %-10s attempt %u outcome %d%s %s\n", e->seq,
                   e->kind, e->step, e->phase == 1 ? "compensate" : "action", e->attempt,
                   (int)e->outcome, e->replayed ? " replayed" : "", e->detail);
        }
    }
    if (rep)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
}

/* Prints one invariant's verdict; on failure the seed, ids and histories. */
static void verdict(verdicts *v, int ok, id_list *ids, const char *name, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    printf("%s  %-22s %s\n", ok ? "PASS" : "FAIL", name, detail);
    if (ok) {
        v->passed++;
    } else {
        v->failed++;
        printf("      seed %" PRIu64 "\n", v->seed);
        if (ids && ids->n > 0) {
            printf("      sagas (%zu):", ids->n);
            for (size_t i = 0; i < ids->n && i < IDS_SHOWN; i++)
                printf(" %s", ids->ids[i]);
            printf("%s\n", ids->n > IDS_SHOWN ? " ..." : "");
            for (size_t i = 0; i < ids->n && i < HISTORY_SHOWN; i++)
                print_history(v, ids->ids[i]);
        }
    }
    fflush(stdout);
    if (ids) {
        free(ids->ids);
        memset(ids, 0, sizeof *ids);
    }
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "saga-chaos: SQL failed: %s\n  in: %s\n", err ? err : "?", sql);
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

static int64_t sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = TH_SQL_ERROR;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "saga-chaos: query failed: %s\n  in: %s\n", sqlite3_errmsg(db), sql);
    sqlite3_finalize(st);
    return v;
}

/* Runs a query whose first column is a saga id; collects them; -1 on error. */
static int sql_ids(sqlite3 *db, const char *sql, id_list *out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "saga-chaos: query failed: %s\n  in: %s\n", sqlite3_errmsg(db), sql);
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ids_add(out, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static const char *state_name(int st)
{
    static const char *const names[] = {"UNSPECIFIED", "RUNNING",     "COMPENSATING",
                                        "COMPLETED",   "COMPENSATED", "FAILED"};
    return st >= 0 && st <= 5 ? names[st] : "UNKNOWN";
}

/* The offending ids and a count of a check query. */
static int check_query(sqlite3 *db, const char *sql, id_list *ids)
{
    return sql_ids(db, sql, ids) == 0 ? (int)ids->n : -1;
}

/*
 * Lists every saga, reads each one's status and fills the in-memory table
 * `sagas`. Returns the number of sagas, or -1.
 */
static int load_sagas(verdicts *v, sqlite3 *db, const workload *w)
{
    if (exec_sql(db, "CREATE TABLE sagas(id TEXT PRIMARY KEY, state TEXT, client_key TEXT,"
                     " rec INTEGER, cls INTEGER, amount INTEGER, quantity INTEGER,"
                     " sku TEXT, customer TEXT, type TEXT, want_type TEXT)") != 0)
        return -1;
    sqlite3_stmt *ins = NULL;
    if (sqlite3_prepare_v2(
            db, "INSERT INTO sagas VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)", -1, &ins,
            NULL) != SQLITE_OK)
        return -1;
    exec_sql(db, "BEGIN");
    char after[37] = "";
    int total = 0, rc = 0;
    for (;;) {
        AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
        Saga__V1__ListSagas list = SAGA__V1__LIST_SAGAS__INIT;
        list.limit = 1000;
        list.after_id = after;
        req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_LIST;
        req.list = &list;
        AdminReply *rep = NULL;
        int rv = admin_call(v->admin, &req, 10000, &rep);
        if (rv != 0 || rep->status != SAGA__V1__ADMIN_STATUS__ADMIN_OK || rep->list == NULL) {
            fprintf(stderr, "saga-chaos: ListSagas failed (%d)\n", rv);
            if (rep)
                saga__v1__admin_reply__free_unpacked(rep, NULL);
            rc = -1;
            break;
        }
        size_t n = rep->list->n_sagas;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const char *id = rep->list->sagas[i]->saga_id;
            AdminReply *s = admin_read(v->admin, id, 0, v->deadline);
            if (s == NULL || s->saga == NULL) {
                fprintf(stderr, "saga-chaos: GetStatus %s failed\n", id);
                rc = -1;
                break;
            }
            const char *key = s->saga->client_key;
            /* Our keys end in "-<index>"; the rec must agree on the key. */
            const char *dash = strrchr(key, '-');
            int64_t idx = -1;
            if (dash == NULL || util_parse_i64(dash + 1, &idx) != 0 || idx < 0 || idx >= w->n ||
                strcmp(w->recs[idx].key, key) != 0)
                idx = -1;
            const saga_rec *r = idx >= 0 ? &w->recs[idx] : NULL;
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 2, state_name((int)s->saga->state), -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 3, key, -1, SQLITE_TRANSIENT);
            if (r) {
                sqlite3_bind_int64(ins, 4, idx);
                sqlite3_bind_int(ins, 5, (int)r->cls);
                sqlite3_bind_int64(ins, 6, r->amount);
                sqlite3_bind_int64(ins, 7, r->quantity);
                sqlite3_bind_text(ins, 8, r->sku, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(ins, 9, r->customer, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(ins, 11, rec_type(r), -1, SQLITE_STATIC);
            } else {
                for (int k = 4; k <= 9; k++)
                    sqlite3_bind_null(ins, k);
                sqlite3_bind_null(ins, 11);
            }
            sqlite3_bind_text(ins, 10, s->saga->type, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(ins) != SQLITE_DONE) {
                fprintf(stderr, "saga-chaos: saga %s listed twice?: %s\n", id, sqlite3_errmsg(db));
                rc = -1;
            }
            sqlite3_reset(ins);
            sqlite3_clear_bindings(ins);
            saga__v1__admin_reply__free_unpacked(s, NULL);
            total++;
        }
        if (n > 0)
            snprintf(after, sizeof after, "%s", rep->list->sagas[n - 1]->saga_id);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        if (rc != 0 || n < 1000)
            break;
    }
    exec_sql(db, "COMMIT");
    sqlite3_finalize(ins);
    return rc == 0 ? total : -1;
}

/* The clients' records: acknowledged key -> id, as a table. */
static int load_acks(sqlite3 *db, const workload *w)
{
    if (exec_sql(db, "CREATE TABLE acks(rec INTEGER PRIMARY KEY, client_key TEXT, id TEXT,"
                     " acked INTEGER, start_error INTEGER, dup_mismatch INTEGER,"
                     " conflict_unexpected INTEGER)") != 0)
        return -1;
    sqlite3_stmt *ins = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO acks VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &ins,
                           NULL) != SQLITE_OK)
        return -1;
    exec_sql(db, "BEGIN");
    for (int i = 0; i < w->n; i++) {
        const saga_rec *r = &w->recs[i];
        sqlite3_bind_int(ins, 1, i);
        sqlite3_bind_text(ins, 2, r->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, r->id, -1, SQLITE_STATIC);
        sqlite3_bind_int(ins, 4, r->acked);
        sqlite3_bind_int(ins, 5, r->start_error);
        sqlite3_bind_int(ins, 6, r->dup_mismatch);
        sqlite3_bind_int(ins, 7, r->conflict_unexpected);
        sqlite3_step(ins);
        sqlite3_reset(ins);
    }
    exec_sql(db, "COMMIT");
    sqlite3_finalize(ins);
    return 0;
}

/* One column of a PostgreSQL result as SQLite should hold it: the integer
 * types (and booleans, 0/1) as integers, so that the checks' sums and
 * comparisons mean what they mean on the services' SQLite files. */
static int pg_column_is_integer(Oid type)
{
    return type == 16 /* bool */ || type == 20 /* int8 */ || type == 21 /* int2 */ ||
           type == 23 /* int4 */;
}

/* Copies every table of the PostgreSQL database at url into the attached
 * in-memory database alias, rows and all: the services' tables as the
 * checks read them from a SQLite file. 0 or -1 (said on stderr). */
static int import_pg_database(sqlite3 *db, const char *alias, const char *url)
{
    PGconn *pg = PQconnectdb(url);
    int rc = -1;
    PGresult *tables = NULL, *rows = NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "saga-chaos: cannot read %s: %s", url, PQerrorMessage(pg));
        goto out;
    }
    tables = PQexec(pg, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
    if (PQresultStatus(tables) != PGRES_TUPLES_OK)
        goto pg_fail;
    for (int t = 0; t < PQntuples(tables); t++) {
        const char *table = PQgetvalue(tables, t, 0);
        char *q = util_asprintf("SELECT * FROM \"%s\"", table);
        rows = PQexec(pg, q);
        free(q);
        if (PQresultStatus(rows) != PGRES_TUPLES_OK)
            goto pg_fail;
        int nf = PQnfields(rows);
        strbuf create = STRBUF_INIT, insert = STRBUF_INIT;
        sb_printf(&create, "CREATE TABLE %s.\"%s\" (", alias, table);
        sb_printf(&insert, "INSERT INTO %s.\"%s\" VALUES (", alias, table);
        for (int f = 0; f < nf; f++) {
            sb_printf(&create, "%s\"%s\" %s", f ? ", " : "", PQfname(rows, f),
                      pg_column_is_integer(PQftype(rows, f)) ? "INTEGER" : "TEXT");
            sb_printf(&insert, "%s?", f ? ", " : "");
        }
        sb_printf(&create, ")");
        sb_printf(&insert, ")");
        sqlite3_stmt *ins = NULL;
        int ok = sb_ok(&create) && sb_ok(&insert) && exec_sql(db, create.data) == 0 &&
                 sqlite3_prepare_v2(db, insert.data, -1, &ins, NULL) == SQLITE_OK;
        for (int r = 0; ok && r < PQntuples(rows); r++) {
            for (int f = 0; f < nf; f++) {
                const char *v = PQgetvalue(rows, r, f);
                if (PQgetisnull(rows, r, f))
                    sqlite3_bind_null(ins, f + 1);
                else if (PQftype(rows, f) == 16)
                    sqlite3_bind_int(ins, f + 1, v[0] == 't');
                else if (pg_column_is_integer(PQftype(rows, f)))
                    sqlite3_bind_int64(ins, f + 1, strtoll(v, NULL, 10));
                else
                    sqlite3_bind_text(ins, f + 1, v, -1, SQLITE_TRANSIENT);
            }
            ok = sqlite3_step(ins) == SQLITE_DONE && sqlite3_reset(ins) == SQLITE_OK;
        }
        sqlite3_finalize(ins);
        sb_free(&create);
        sb_free(&insert);
        PQclear(rows);
        rows = NULL;
        if (!ok) {
            fprintf(stderr, "saga-chaos: cannot copy table %s of %s: %s\n", table, url,
                    sqlite3_errmsg(db));
            goto out;
        }
    }
    rc = 0;
    goto out;
pg_fail:
    fprintf(stderr, "saga-chaos: cannot read %s: %s", url, PQerrorMessage(pg));
out:
    PQclear(rows);
    PQclear(tables);
    PQfinish(pg);
    return rc;
}

/* Attaches the four participant databases read-only (or, on PostgreSQL, a
 * copy of each) and aggregates their rows per saga_id. */
static int load_participants(sqlite3 *db, const cluster *c)
{
    static const char *const alias[N_SVC] = {"o", "p", "i", "s"};
    for (int k = 0; k < N_SVC; k++) {
        int on_pg = db_url_is_postgresql(c->svc[k].db);
        char *sql = on_pg
                        ? sqlite3_mprintf("ATTACH ':memory:' AS %s", alias[k])
                        : sqlite3_mprintf("ATTACH 'file:%q?mode=ro' AS %s", c->svc[k].db, alias[k]);
        int rc = sql ? exec_sql(db, sql) : -1;
        sqlite3_free(sql);
        if (rc == 0 && on_pg)
            rc = import_pg_database(db, alias[k], c->svc[k].db);
        if (rc != 0)
            return -1;
    }
    return exec_sql(
        db, "CREATE TABLE ag_orders AS SELECT saga_id, count(*) n,"
            "  sum(state = 'approved') approved, sum(state = 'pending') pending,"
            "  sum(amount) amount, sum(quantity) quantity, max(customer) customer, max(sku) sku"
            "  FROM o.orders GROUP BY saga_id;"
            "CREATE UNIQUE INDEX ag_orders_id ON ag_orders(saga_id);"
            "CREATE TABLE ag_charges AS SELECT saga_id, count(*) n,"
            "  sum(state = 'charged') charged, sum(amount) amount, max(customer) customer"
            "  FROM p.charges GROUP BY saga_id;"
            "CREATE UNIQUE INDEX ag_charges_id ON ag_charges(saga_id);"
            "CREATE TABLE ag_reservations AS SELECT saga_id, count(*) n,"
            "  sum(state = 'reserved') reserved, sum(quantity) quantity, max(sku) sku"
            "  FROM i.reservations GROUP BY saga_id;"
            "CREATE UNIQUE INDEX ag_reservations_id ON ag_reservations(saga_id);"
            "CREATE TABLE ag_shipments AS SELECT saga_id, count(*) n,"
            "  sum(state = 'scheduled') scheduled FROM s.shipments GROUP BY saga_id;"
            "CREATE UNIQUE INDEX ag_shipments_id ON ag_shipments(saga_id);");
}

/* Everything a run produced, checked. */
typedef struct {
    int settled_in_time;
    uint64_t replays_sagad;
    int require_replays;
    int unexpected_deaths;
} run_facts;

static void check_invariants(verdicts *v, const cluster *c, const workload *w, const run_facts *f)
{
    sqlite3 *db = NULL;
    id_list ids = {0};
    if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, NULL) !=
        SQLITE_OK) {
        verdict(v, 0, NULL, "checks", "cannot open SQLite");
        sqlite3_close(db);
        return;
    }
    int n_sagas = load_sagas(v, db, w);
    if (n_sagas < 0 || load_acks(db, w) != 0 || load_participants(db, c) != 0) {
        verdict(v, 0, NULL, "checks", "cannot load the sagas or the participant databases");
        sqlite3_close(db);
        return;
    }

    /* 1. Everything settled, nothing stuck or FAILED. */
    int bad = check_query(
        db, "SELECT id FROM sagas WHERE state NOT IN ('COMPLETED', 'COMPENSATED')", &ids);
    verdict(v, bad == 0 && f->settled_in_time, &ids, "all settled",
            "%d sagas: %" PRId64 " COMPLETED, %" PRId64 " COMPENSATED, %" PRId64 " FAILED, %" PRId64
            " RUNNING/COMPENSATING%s",
            n_sagas, sql_int(db, "SELECT count(*) FROM sagas WHERE state = 'COMPLETED'"),
            sql_int(db, "SELECT count(*) FROM sagas WHERE state = 'COMPENSATED'"),
            sql_int(db, "SELECT count(*) FROM sagas WHERE state = 'FAILED'"),
            sql_int(db, "SELECT count(*) FROM sagas WHERE state IN ('RUNNING','COMPENSATING')"),
            f->settled_in_time ? "" : " (not quiet before the duration limit)");

    /* 2. Starts: each acknowledged key is one saga with that id, no saga
     *    without a key we started, every repeat answered the same id, every
     *    reuse with another input refused. */
    bad = check_query(db,
                      "SELECT a.id FROM acks a WHERE a.acked AND NOT EXISTS (SELECT 1 FROM sagas s"
                      "  WHERE s.id = a.id AND s.client_key = a.client_key)"
                      " UNION ALL SELECT s.id FROM sagas s WHERE s.rec IS NULL"
                      " UNION ALL SELECT s.id FROM sagas s JOIN acks a ON a.rec = s.rec"
                      "  WHERE s.id IS NOT a.id"
                      " UNION ALL SELECT a.id FROM acks a WHERE a.dup_mismatch"
                      "  OR a.conflict_unexpected",
                      &ids);
    int64_t unacked = sql_int(db, "SELECT count(*) FROM acks WHERE NOT acked OR start_error");
    verdict(v, bad == 0 && unacked == 0, &ids, "exactly once per key",
            "%" PRId64 " keys acknowledged, %d sagas exist, %d repeats same id, %d reuses refused, "
            "%d start retries, %d BUSY, %d client sockets reopened, %" PRId64 " never acknowledged",
            sql_int(db, "SELECT count(*) FROM acks WHERE acked"), n_sagas,
            atomic_load(&w->dup_checks), atomic_load(&w->conflict_checks),
            atomic_load(&w->start_retries), atomic_load(&w->busy), atomic_load(&w->reopened),
            unacked);

    /* 3. Money: balances + charged = seeded total = what we seeded. */
    int64_t money_total = sql_int(db, "SELECT value FROM p.meta WHERE key = 'money_total'");
    int64_t balances = sql_int(db, "SELECT COALESCE(sum(balance), 0) FROM p.accounts");
    int64_t charged =
        sql_int(db, "SELECT COALESCE(sum(amount), 0) FROM p.charges WHERE state = 'charged'");
    verdict(v, money_total == EXPECT_MONEY && balances + charged == money_total, NULL,
            "money conserved",
            "balances %" PRId64 " + charged %" PRId64 " = %" PRId64 ", meta money_total %" PRId64
            ", seeded %lld",
            balances, charged, balances + charged, money_total, (long long)EXPECT_MONEY);

    /* 4. Stock: per SKU available + reserved = stock and reserved = what the
     *    reservations hold; totals = meta = what we seeded. */
    int64_t stock_total = sql_int(db, "SELECT value FROM i.meta WHERE key = 'stock_total'");
    int64_t stock = sql_int(db, "SELECT COALESCE(sum(stock), 0) FROM i.skus");
    int64_t avail_res = sql_int(db, "SELECT COALESCE(sum(available + reserved), 0) FROM i.skus");
    int64_t unbalanced =
        sql_int(db, "SELECT count(*) FROM i.skus k WHERE k.available + k.reserved != k.stock"
                    " OR k.reserved != (SELECT COALESCE(sum(quantity), 0) FROM i.reservations r"
                    "  WHERE r.sku = k.sku AND r.state = 'reserved')");
    verdict(v,
            stock_total == EXPECT_STOCK && stock == stock_total && avail_res == stock &&
                unbalanced == 0,
            NULL, "stock conserved",
            "available + reserved %" PRId64 " = stock %" PRId64 ", meta stock_total %" PRId64
            ", seeded %lld, %" PRId64 " SKUs unbalanced",
            avail_res, stock, stock_total, (long long)EXPECT_STOCK, unbalanced);

    /* 5. COMPLETED: exactly one approved order, one charge still charged, one
     *    reservation still reserved, one shipment scheduled, matching the input. */
    bad = check_query(
        db,
        "SELECT s.id FROM sagas s"
        " LEFT JOIN ag_orders o ON o.saga_id = s.id"
        " LEFT JOIN ag_charges c ON c.saga_id = s.id"
        " LEFT JOIN ag_reservations r ON r.saga_id = s.id"
        " LEFT JOIN ag_shipments h ON h.saga_id = s.id"
        " WHERE s.state = 'COMPLETED' AND NOT ("
        "  o.n IS 1 AND o.approved IS 1 AND o.amount IS s.amount AND o.quantity IS s.quantity"
        "  AND c.n IS 1 AND c.charged IS 1 AND c.amount IS s.amount AND c.customer IS s.customer"
        "  AND r.n IS 1 AND r.reserved IS 1 AND r.quantity IS s.quantity AND r.sku IS s.sku"
        "  AND h.n IS 1 AND h.scheduled IS 1)",
        &ids);
    verdict(v, bad == 0, &ids, "completed = one effect",
            "%d COMPLETED sagas without exactly one approved order, charge, reservation and "
            "shipment",
            bad);

    /* 6. COMPENSATED: net zero everywhere, and never two rows for one saga. */
    bad = check_query(db,
                      "SELECT s.id FROM sagas s"
                      " LEFT JOIN ag_orders o ON o.saga_id = s.id"
                      " LEFT JOIN ag_charges c ON c.saga_id = s.id"
                      " LEFT JOIN ag_reservations r ON r.saga_id = s.id"
                      " LEFT JOIN ag_shipments h ON h.saga_id = s.id"
                      " WHERE s.state = 'COMPENSATED' AND ("
                      "  IFNULL(o.approved, 0) + IFNULL(o.pending, 0) + IFNULL(c.charged, 0)"
                      "  + IFNULL(r.reserved, 0) + IFNULL(h.scheduled, 0) > 0"
                      "  OR IFNULL(o.n, 0) > 1 OR IFNULL(c.n, 0) > 1 OR IFNULL(r.n, 0) > 1"
                      "  OR IFNULL(h.n, 0) > 1)",
                      &ids);
    verdict(v, bad == 0, &ids, "compensated = net zero",
            "%d COMPENSATED sagas with an effect left (order pending/approved, charge charged, "
            "reservation reserved, shipment scheduled) or a doubled row",
            bad);

    /* 7. No effect belongs to a saga sagad does not know. */
    bad = check_query(db,
                      "SELECT saga_id FROM ag_orders WHERE saga_id NOT IN (SELECT id FROM sagas)"
                      " UNION SELECT saga_id FROM ag_charges WHERE saga_id NOT IN"
                      "  (SELECT id FROM sagas)"
                      " UNION SELECT saga_id FROM ag_reservations WHERE saga_id NOT IN"
                      "  (SELECT id FROM sagas)"
                      " UNION SELECT saga_id FROM ag_shipments WHERE saga_id NOT IN"
                      "  (SELECT id FROM sagas)",
                      &ids);
    verdict(v, bad == 0, &ids, "no orphan effects",
            "%d saga ids in participant tables that sagad does not know", bad);

    /* 8. Outcomes fit the inputs: a refused input never completes. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT id FROM sagas WHERE state = 'COMPLETED' AND cls >= %d",
             (int)CLS_BAD_QUANTITY);
    bad = check_query(db, sql, &ids);
    printf("      outcomes by input:");
    for (int k = 0; k < CLS_COUNT; k++) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FILTER (WHERE state = 'COMPLETED') * 1000000"
                 " + count(*) FILTER (WHERE state = 'COMPENSATED') FROM sagas WHERE cls = %d",
                 k);
        int64_t both = sql_int(db, sql);
        printf(" %s %" PRId64 "/%" PRId64, class_names[k], both / 1000000, both % 1000000);
    }
    printf(" (completed/compensated)\n");
    int64_t complete_comp =
        sql_int(db, "SELECT count(*) FROM sagas WHERE cls = 0 AND state = 'COMPENSATED'");
    verdict(v, bad == 0, &ids, "outcomes fit inputs",
            "%d refused inputs COMPLETED; %" PRId64 " completable inputs compensated "
            "(attempts spent under faults: allowed)",
            bad, complete_comp);

    /* 9. Duplicates were delivered and absorbed (only required with faults). */
    int64_t replays = sql_int(db, "SELECT (SELECT value FROM o.pt_counters WHERE name = 'replays')"
                                  " + (SELECT value FROM p.pt_counters WHERE name = 'replays')"
                                  " + (SELECT value FROM i.pt_counters WHERE name = 'replays')"
                                  " + (SELECT value FROM s.pt_counters WHERE name = 'replays')");
    if (f->require_replays)
        verdict(v, replays > 0, NULL, "duplicates absorbed",
                "%" PRId64 " replays in the participants' pt_counters, %" PRIu64
                " replayed replies seen by sagad",
                replays, f->replays_sagad);
    else
        printf("info  duplicates absorbed   %" PRId64 " participant replays, %" PRIu64
               " replayed replies seen by sagad\n",
               replays, f->replays_sagad);

    /* 10. Both saga types ran, each saga as the type it was started as: the
     *     invariants above held for the parallel one as for the sequential. */
    bad = check_query(db, "SELECT id FROM sagas WHERE type IS NOT want_type", &ids);
    int64_t n_parallel =
        sql_int(db, "SELECT count(*) FROM sagas WHERE type = 'order_fulfillment_parallel'");
    verdict(v, bad == 0 && (n_sagas < 2 || (n_parallel > 0 && n_parallel < n_sagas)), &ids,
            "both saga types",
            "%" PRId64 " order_fulfillment_parallel, %" PRId64 " order_fulfillment, %d of another "
            "type than started",
            n_parallel, (int64_t)n_sagas - n_parallel, bad);

    /* 11. Processes died only as planned or injected. */
    verdict(v, f->unexpected_deaths == 0, NULL, "no unexpected deaths",
            "%d processes died other than by a planned or injected SIGKILL", f->unexpected_deaths);

    sqlite3_close(db);
}

/* ---- One run --------------------------------------------------------------- */

typedef struct {
    const char *label; /* for the key tag */
    int sagas, clients;
    int kills, participant_kills, pauses;
    double faults_rate;
    int duplicate_pct, conflict_pct;
    const char *crash_proc;  /* "sagad" or a service name, or NULL */
    const char *crash_point; /* SAGA_CRASH_POINT value for its first incarnation */
} scenario;

typedef struct {
    int passed, failed;
    int crash_hits;
    int sagad_kills_done, participant_kills_done;
    int pauses_done, long_pauses_done;
} run_result;

static proc *cluster_find(cluster *c, const char *name)
{
    if (strcmp(name, "sagad") == 0)
        return &c->sagad;
    for (int i = 0; i < N_SVC; i++)
        if (strcmp(name, svc_names[i]) == 0)
            return &c->svc[i];
    return NULL;
}

/* ---- Several nodes: pauses, node kills and what they leave ---------------- */

/* The pauses of the plan: the first of a node, longer than the lease (it is
 * fenced), then any node or participant, every other one longer than the
 * lease (or than a step's timeout), the others shorter. */
static void plan_pause(planned_kill *k, int j, int n_nodes, int n_svc, util_prng *rng)
{
    int target = j == 0 ? (int)(util_prng_next(rng) % (uint64_t)n_nodes)
                        : (int)(util_prng_next(rng) % (uint64_t)(n_nodes + n_svc));
    int is_long = j % 2 == 0;
    k->svc = target < n_nodes ? -1 : target - n_nodes;
    k->node = target < n_nodes ? target : 0;
    if (k->svc < 0)
        k->pause_ms = is_long
                          ? NODE_LEASE_MS * 2 + (int)(util_prng_next(rng) % NODE_LEASE_MS)
                          : NODE_LEASE_MS / 4 + (int)(util_prng_next(rng) % (NODE_LEASE_MS / 4));
    else
        k->pause_ms = is_long ? STEP_TIMEOUT_MS * 3 + (int)(util_prng_next(rng) % 2000)
                              : 50 + (int)(util_prng_next(rng) % (STEP_TIMEOUT_MS / 2));
}

/* The process a planned kill or pause hits: a node down at that moment is
 * replaced by the next one running (nothing when none is). */
static proc *planned_target(cluster *c, const planned_kill *k)
{
    if (k->svc >= 0)
        return &c->svc[k->svc];
    for (int i = 0; i < c->n_nodes; i++) {
        proc *p = cluster_node(c, (k->node + i) % c->n_nodes);
        if (p->pid > 0)
            return p;
    }
    return NULL;
}

/* How many unfinished sagas node p owns in the database (-1 on error). */
static int64_t node_unfinished(const cluster *c, const proc *p)
{
    int64_t n = -1;
    if (pgc_sql_int(c->db_url, &n,
                    "SELECT count(*) FROM sagas WHERE owner = '%s' AND state IN (1, 2)",
                    p->node_name) != 0)
        return -1;
    return n;
}

/* Right after node p was SIGKILLed: which unfinished sagas it owned (its
 * life can commit nothing more), for check_node_deaths. */
static void record_node_death(cluster *c, const proc *p, int restart_ms)
{
    node_death *d = realloc(c->deaths, ((size_t)c->n_deaths + 1) * sizeof *d);
    if (d == NULL)
        return;
    c->deaths = d;
    d = &c->deaths[c->n_deaths++];
    memset(d, 0, sizeof *d);
    snprintf(d->node_name, sizeof d->node_name, "%s", p->node_name);
    d->restart_ms = restart_ms;
    d->sagas =
        pgc_sql_text(c->db_url,
                     "SELECT COALESCE(string_agg(id || ':' || owner_epoch, ',' ORDER BY id), '')"
                     " FROM sagas WHERE owner = '%s' AND state IN (1, 2)",
                     p->node_name);
    if (d->sagas == NULL)
        fprintf(stderr, "saga-chaos: cannot read the sagas %s owned\n", p->node_name);
    for (const char *at = d->sagas; at != NULL && *at != '\0'; at = strchr(at + 1, ','))
        d->n++;
    printf("  %s (%s) killed owning %d unfinished sagas, restarted in %d ms\n", p->name,
           p->node_name, d->n, restart_ms);
}

/* The next planned event on PostgreSQL: SIGSTOP (resumed by the supervisor)
 * or SIGKILL (restarted after a random delay: the first kill of a node
 * waits longer than the lease, so that another node must claim its sagas). */
/* Nodes other than p that run and are not paused: those that can claim p's
 * sagas once its lease expires. */
static int nodes_serving_besides(cluster *c, const proc *p)
{
    int n = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        const proc *q = cluster_node(c, i);
        n += q != p && q->pid > 0 && q->resume_at == 0;
    }
    return n;
}

static void perform_planned(cluster *c, const planned_kill *k, run_result *res, util_prng *rng)
{
    proc *p = planned_target(c, k);
    if (p == NULL || p->pid <= 0)
        return;
    /* A node is killed or paused only while another one serves: the check
     * "takeover seen" needs a node to take its sagas over. (A lone node is
     * killed regardless: its later life takes over.) */
    if (k->svc < 0 && c->n_nodes > 1 && nodes_serving_besides(c, p) == 0)
        return;
    if (k->svc < 0 && k->pause_ms > 0 && nodes_serving_besides(c, p) < c->n_nodes - 1)
        return; /* pause a node only while every other one serves */
    if (k->pause_ms > 0) {
        if (p->resume_at > 0)
            return; /* already paused */
        kill(p->pid, SIGSTOP);
        p->resume_at = util_mono_ms() + k->pause_ms;
        res->pauses_done++;
        res->long_pauses_done +=
            k->pause_ms > (k->svc < 0 ? NODE_LEASE_MS : STEP_TIMEOUT_MS) ? 1 : 0;
        printf("  %s paused for %d ms\n", p->name, k->pause_ms);
        return;
    }
    proc_kill(c, p);
    if (k->svc >= 0) {
        res->participant_kills_done++;
        return;
    }
    int delay = res->sagad_kills_done == 0
                    ? NODE_LEASE_MS * 2 + (int)(util_prng_next(rng) % NODE_LEASE_MS)
                    : (int)(util_prng_next(rng) % (NODE_LEASE_MS * 5 / 2));
    p->restart_at = util_mono_ms() + delay;
    res->sagad_kills_done++;
    record_node_death(c, p, delay);
}

/* The sum of N over a log's "took over N sagas" lines, or of the count of
 * lines holding needle when counting is 0. */
static int64_t log_count(const char *path, const char *needle, int counting)
{
    char *text = th_read_file(path);
    int64_t total = 0;
    for (const char *at = text; at != NULL && (at = strstr(at, needle)) != NULL;
         at += strlen(needle))
        total += counting ? strtoll(at + strlen(needle), NULL, 10) : 1;
    free(text);
    return total;
}

/*
 * Every saga a killed node owned unfinished ends final, moved on by another
 * node or a later life of the same one (never by the life that died); and
 * when there were such sagas, a takeover was logged.
 */
static void check_node_deaths(verdicts *v, cluster *c, const run_result *res)
{
    id_list ids = {0};
    int owned = 0, owned_long = 0, errors = 0;
    int64_t by_other_node = 0, by_other_long = 0;
    for (int i = 0; i < c->n_deaths; i++) {
        const node_death *d = &c->deaths[i];
        if (d->sagas == NULL)
            errors++;
        if (d->n == 0)
            continue;
        owned += d->n;
        int restarted_late = d->restart_ms > NODE_LEASE_MS + 1000; /* the claim pass: <= 1 s */
        owned_long += restarted_late ? d->n : 0;
        /* "id:epoch,..." as a VALUES list; ids are sagad's UUIDs. */
        size_t cap = strlen(d->sagas) * 2 + 16, len = 0;
        char *values = malloc(cap);
        if (values == NULL) {
            errors++;
            continue;
        }
        for (const char *at = d->sagas; *at != '\0';) {
            size_t item = strcspn(at, ","), colon = strcspn(at, ":");
            len += (size_t)snprintf(values + len, cap - len, "%s('%.*s', %.*s)", len ? "," : "",
                                    (int)colon, at, (int)(item - colon - 1), at + colon + 1);
            at += item + (at[item] == ',');
        }
        char *bad =
            pgc_sql_text(c->db_url,
                         "SELECT COALESCE(string_agg(k.id, ','), '') FROM (VALUES %s) k(id, epoch)"
                         " LEFT JOIN sagas s ON s.id = k.id WHERE s.id IS NULL"
                         " OR s.state NOT IN (3, 4, 5)"
                         " OR (s.owner = '%s' AND s.owner_epoch = k.epoch)",
                         values, d->node_name);
        if (bad == NULL)
            errors++;
        for (const char *at = bad; at != NULL && *at != '\0';) {
            char id[37];
            size_t item = strcspn(at, ",");
            snprintf(id, sizeof id, "%.*s", (int)item, at);
            ids_add(&ids, id);
            at += item + (at[item] == ',');
        }
        free(bad);
        int64_t moved = 0;
        if (pgc_sql_int(c->db_url, &moved,
                        "SELECT count(*) FROM (VALUES %s) k(id, epoch) JOIN sagas s ON s.id = k.id"
                        " WHERE s.owner <> '%s'",
                        values, d->node_name) != 0)
            errors++;
        by_other_node += moved;
        by_other_long += restarted_late ? moved : 0;
        free(values);
    }
    int64_t taken_over = 0, leases_lost = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        const proc *p = cluster_node(c, i);
        taken_over += log_count(p->log, "took over ", 1);
        leases_lost += log_count(p->log, "lost its database lease", 0);
    }
    int n_bad = (int)ids.n;
    verdict(v, n_bad == 0 && errors == 0, &ids, "killed nodes' sagas",
            "%d node kills left %d unfinished sagas: %d not final or not moved on since, "
            "%" PRId64 " now owned by another node%s",
            res->sagad_kills_done, owned, n_bad, by_other_node,
            errors ? " (some queries FAILED)" : "");
    /* A node restarted later than the lease finds its sagas claimed by the
     * others (they may pass back to it only if their new owner dies too).
     * A single node can only take over from its earlier life, and only when
     * a kill caught it with sagas unfinished (not required: one node runs
     * few at a time). */
    int proven = c->n_nodes == 1 ? owned == 0 || taken_over > 0
                                 : owned_long > 0 && by_other_long > 0 && taken_over > 0;
    verdict(v, res->sagad_kills_done == 0 || proven, NULL, "takeover seen",
            "%" PRId64 " of %d sagas of nodes restarted after their lease now owned by another "
            "node; %" PRId64
            " sagas taken over (\"took over N sagas\" in the nodes' logs), %" PRId64
            " leases lost, %d pauses (%d longer than the lease or step timeout)",
            by_other_long, owned_long, taken_over, leases_lost, res->pauses_done,
            res->long_pauses_done);
}

static int run_scenario(const chaos_opts *o, const scenario *sc, const char *dir, run_result *res)
{
    cluster c;
    workload w;
    client *clients = NULL;
    nng_socket mon;
    int mon_open = 0, started = 0, rc = -1;
    util_prng sched;
    planned_kill *plan = NULL;
    int n_plan = sc->kills + sc->participant_kills + sc->pauses, next_kill = 0;
    int64_t t0 = util_mono_ms();

    memset(res, 0, sizeof *res);
    memset(&w, 0, sizeof w);
    if (cluster_setup(&c, dir, o->seed, sc->faults_rate, o->no_sync, o->nodes, o->postgresql,
                      o->svc_postgresql, o->replicas) != 0)
        goto out;
    if (sc->crash_proc) {
        proc *p = cluster_find(&c, sc->crash_proc);
        snprintf(p->crash_point, sizeof p->crash_point, "%s", sc->crash_point);
        p->power_loss = o->power_loss;
    }
    if (cluster_start(&c) != 0)
        goto out;

    /* The kill schedule: at random points of the run. */
    util_prng_seed(&sched, util_mix64(o->seed ^ 0x5eed));
    plan = calloc((size_t)n_plan + 1, sizeof *plan);
    for (int i = 0; i < n_plan; i++) {
        plan[i].after = (int)(sc->sagas * (0.05 + 0.85 * util_prng_unit(&sched)));
        plan[i].svc = i < sc->kills ? -1 : (int)(util_prng_next(&sched) % (uint64_t)c.n_svc);
        if (i < sc->kills && o->nodes > 1)
            plan[i].node = (int)(util_prng_next(&sched) % (uint64_t)o->nodes);
        if (i >= sc->kills + sc->participant_kills)
            plan_pause(&plan[i], i - sc->kills - sc->participant_kills, o->nodes, c.n_svc, &sched);
    }
    qsort(plan, (size_t)n_plan, sizeof *plan, kill_cmp);

    /* The workload. */
    w.o = o;
    w.c = &c;
    w.n = sc->sagas;
    w.duplicate_pct = sc->duplicate_pct;
    w.conflict_pct = sc->conflict_pct;
    w.deadline = t0 + (int64_t)o->duration_limit_s * 1000;
    w.recs = calloc((size_t)w.n, sizeof *w.recs);
    clients = calloc((size_t)sc->clients, sizeof *clients);
    if (w.recs == NULL || clients == NULL || plan == NULL)
        goto out;
    for (int i = 0; i < w.n; i++)
        rec_init(&w.recs[i], o->seed, i, sc->label);
    pthread_barrier_init(&w.barrier, NULL, (unsigned)sc->clients);
    if (admin_open(&mon, c.admin_urls) != 0)
        goto out;
    mon_open = 1;
    for (int i = 0; i < sc->clients; i++) {
        client *cl = &clients[i];
        cl->w = &w;
        cl->index = i;
        util_prng_seed(&cl->rng, util_mix64(o->seed + 1000 + (uint64_t)i));
        if (admin_open(&cl->sock, c.admin_urls) != 0 ||
            pthread_create(&cl->thread, NULL, client_main, cl) != 0) {
            fprintf(stderr, "saga-chaos: cannot start client %d\n", i);
            goto out; /* the clients started so far stop at the deadline */
        }
        started++;
    }

    /* Chaos: supervise, kill as planned, until every client is done. */
    int64_t waited_in_flight_since = 0, last_poll = 0, last_kill_at = 0;
    while (atomic_load(&w.clients_done) < sc->clients || next_kill < n_plan) {
        cluster_supervise(&c);
        if (util_mono_ms() - last_poll >= 50) {
            monitor_poll(&c, &mon);
            last_poll = util_mono_ms();
        }
        /* Kills are spaced, and sagad must have answered since its restart. */
        if (next_kill < n_plan && c.stats_fresh && util_mono_ms() - last_kill_at >= 300 &&
            c.last_settled >= (uint64_t)plan[next_kill].after) {
            planned_kill *k = &plan[next_kill];
            if (c.db_url != NULL || k->pause_ms > 0) {
                /* A node kill waits (a bounded while) until the node owns
                 * unfinished sagas, so that another must resume them. */
                proc *target = planned_target(&c, k);
                if (c.db_url != NULL && k->svc < 0 && k->pause_ms == 0 && target != NULL) {
                    if (waited_in_flight_since == 0)
                        waited_in_flight_since = util_mono_ms();
                    if (util_mono_ms() - waited_in_flight_since < 5000 &&
                        node_unfinished(&c, target) < 1) {
                        util_sleep_ms(100);
                        continue;
                    }
                }
                waited_in_flight_since = 0;
                perform_planned(&c, k, res, &sched);
                last_kill_at = util_mono_ms();
                next_kill++;
                continue;
            } else if (k->svc < 0 && res->sagad_kills_done == 0) {
                /* The first kill of sagad waits (a bounded while) for many
                 * sagas in flight, so that recovery has work to do. */
                if (waited_in_flight_since == 0)
                    waited_in_flight_since = util_mono_ms();
                uint64_t many = (uint64_t)(sc->sagas / 4 < MAX_IN_FLIGHT / 2 ? sc->sagas / 4
                                                                             : MAX_IN_FLIGHT / 2);
                if (c.last_in_flight < many && util_mono_ms() - waited_in_flight_since < 5000) {
                    util_sleep_ms(TICK_MS);
                    continue;
                }
                printf("  first kill of sagad: %" PRIu64 " sagas in flight, %" PRIu64
                       " settled, %d acknowledged\n",
                       c.last_in_flight, c.last_settled, atomic_load(&w.acked));
            }
            proc *p = k->svc < 0 ? &c.sagad : &c.svc[k->svc];
            proc_kill(&c, p);
            last_kill_at = util_mono_ms();
            if (k->svc < 0)
                res->sagad_kills_done++;
            else
                res->participant_kills_done++;
            next_kill++;
        }
        if (util_mono_ms() > w.deadline + 30000)
            break; /* clients are stuck beyond their own deadline */
        util_sleep_ms(TICK_MS);
    }
    printf("  chaos done after %.1f s: %d acknowledged, %d planned kills of sagad, %d of "
           "participants\n",
           (double)(util_mono_ms() - t0) / 1000, atomic_load(&w.acked), res->sagad_kills_done,
           res->participant_kills_done);

    /* Settle: nothing paused or waiting for a restart, participants without
     * faults, then wait for quiet. */
    cluster_resume_due(&c, 1);
    for (int i = 0; i < c.n_nodes; i++)
        cluster_node(&c, i)->restart_at = 0;
    if (c.faults_on) {
        c.faults_on = 0;
        for (int i = 0; i < c.n_svc; i++) {
            proc_stop(&c.svc[i]);
            if (proc_start(&c, &c.svc[i]) != 0)
                fprintf(stderr, "saga-chaos: cannot restart %s\n", c.svc[i].name);
        }
    }
    int quiet = 0;
    while (util_mono_ms() < w.deadline) {
        cluster_supervise(&c);
        monitor_poll(&c, &mon);
        if (c.stats_fresh && c.last_unsettled == 0 && c.last_in_flight == 0) {
            quiet = 1;
            break;
        }
        util_sleep_ms(100);
    }
    printf("  %s after %.1f s\n", quiet ? "quiet" : "NOT quiet",
           (double)(util_mono_ms() - t0) / 1000);

    /* Check. */
    for (int i = 0; i < c.n_svc; i++)
        proc_stop(&c.svc[i]); /* stable databases to read */
    run_facts f = {.settled_in_time = quiet,
                   .replays_sagad = c.replayed_before + c.replayed_seen,
                   .require_replays = sc->faults_rate > 0};
    for (int i = 0; i < c.n_svc; i++) {
        f.unexpected_deaths += c.svc[i].unexpected_deaths;
        res->crash_hits += c.svc[i].crash_point_hits;
    }
    for (int i = 0; i < c.n_nodes; i++) {
        f.unexpected_deaths += cluster_node(&c, i)->unexpected_deaths;
        res->crash_hits += cluster_node(&c, i)->crash_point_hits;
    }
    printf("  deaths:");
    for (int i = 0; i < c.n_nodes; i++)
        printf("%s %s %d planned, %d crash point", i ? "," : "", cluster_node(&c, i)->name,
               cluster_node(&c, i)->planned_deaths, cluster_node(&c, i)->crash_point_hits);
    printf("; participants:");
    for (int i = 0; i < c.n_svc; i++)
        printf(" %s %d planned/%d injected/%d crash point", c.svc[i].name, c.svc[i].planned_deaths,
               c.svc[i].fault_deaths, c.svc[i].crash_point_hits);
    printf("\n");
    fflush(stdout);

    if (c.n_svc > N_SVC) {
        /* How the requests spread: what each replica's clean stops logged
         * (an incarnation SIGKILLed takes its count along, so this is a
         * lower bound, for information, not an invariant). */
        printf("info  requests served by replicas a/b (logged at clean stops):");
        for (int i = 0; i < N_SVC; i++)
            printf(" %s %" PRId64 "/%" PRId64, svc_names[i],
                   log_count(c.svc[i].log, "stopped: ", 1),
                   log_count(c.svc[N_SVC + i].log, "stopped: ", 1));
        printf("\n");
    }
    verdicts v = {.seed = o->seed, .admin = mon, .deadline = util_mono_ms() + 120000};
    check_invariants(&v, &c, &w, &f);
    if (c.db_url != NULL)
        check_node_deaths(&v, &c, res);
    res->passed = v.passed;
    res->failed = v.failed;
    rc = 0;

out:
    /* Clients stop on their own: all starts answered, or the deadline. */
    for (int i = 0; i < started; i++)
        pthread_join(clients[i].thread, NULL);
    if (clients) {
        for (int i = 0; i < started; i++)
            nng_close(clients[i].sock);
        pthread_barrier_destroy(&w.barrier);
    }
    if (mon_open)
        nng_close(mon);
    cluster_stop(&c);
    cluster_free(&c);
    free(clients);
    free(w.recs);
    free(plan);
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

static int run_chaos(const chaos_opts *o, const char *dir)
{
    scenario sc = {.label = "run",
                   .sagas = o->sagas,
                   .clients = o->clients,
                   .kills = o->kills,
                   .participant_kills = o->participant_kills,
                   .pauses = o->pauses,
                   .faults_rate = o->faults_rate,
                   .duplicate_pct = 10,
                   .conflict_pct = 2};
    run_result res;
    printf("chaos: %d sagas, %d clients, %d sagad kills, %d participant kills, faults rate %g\n",
           o->sagas, o->clients, o->kills, o->participant_kills, o->faults_rate);
    if (o->replicas > 1)
        printf("chaos: %d replicas of each participant service on its one database\n", o->replicas);
    if (o->svc_postgresql)
        printf("chaos: the participant services' databases on PostgreSQL\n");
    if (o->postgresql)
        printf("chaos: %d sagad node%s on PostgreSQL (lease %d ms), %d pauses\n", o->nodes,
               o->nodes > 1 ? "s" : "", NODE_LEASE_MS, o->pauses);
    else if (o->pauses > 0)
        printf("chaos: %d pauses\n", o->pauses);
    if (run_scenario(o, &sc, dir, &res) != 0) {
        printf("FAIL  setup                  the run could not be set up (seed %" PRIu64 ")\n",
               o->seed);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    if (atomic_load(&admin_abandoned) > 0)
        printf("info  nng never completed %d admin requests (abandoned, retried)\n",
               atomic_load(&admin_abandoned));
    printf("%d passed, %d failed\n", res.passed, res.failed);
    return res.failed == 0 ? 0 : 1;
}

/*
 * Every named crash point (grep crashpoint(" in orchestrator/ and
 * participants/): sagad's engine.*, and the runtime's participant.* in each
 * of the four services. hit_at is k in NAME:k: late enough to be mid-run in
 * a scenario of MATRIX_SAGAS sagas, early enough to be reached for sure.
 * engine.after_answer and participant.after_reply come right after starts
 * were acknowledged and replies sent: what was promised must survive.
 */
#define MATRIX_SAGAS 30
static const struct {
    const char *proc;
    const char *point;
    int hit_at;
} matrix[] = {
    {"sagad", "engine.after_intent_commit", 8},    {"sagad", "engine.after_send", 8},
    {"sagad", "engine.before_outcome_commit", 8},  {"sagad", "engine.in_compensation", 3},
    {"sagad", "engine.after_answer", 8},           {"sagad", "engine.after_early_send", 8},
    {"order", "participant.before_commit", 4},     {"order", "participant.after_commit", 4},
    {"order", "participant.after_reply", 4},       {"payment", "participant.before_commit", 4},
    {"payment", "participant.after_commit", 4},    {"payment", "participant.after_reply", 4},
    {"inventory", "participant.before_commit", 3}, {"inventory", "participant.after_commit", 3},
    {"inventory", "participant.after_reply", 3},   {"shipping", "participant.before_commit", 2},
    {"shipping", "participant.after_commit", 2},   {"shipping", "participant.after_reply", 2},
};
#define MATRIX_N (sizeof matrix / sizeof matrix[0])

/* Is row i in the comma-separated PROC:POINT list (NULL: every row)? */
static int matrix_selected(const char *only, size_t i)
{
    if (only == NULL)
        return 1;
    char row[128];
    int len = snprintf(row, sizeof row, "%s:%s", matrix[i].proc, matrix[i].point);
    for (const char *at = only; (at = strstr(at, row)) != NULL; at += len)
        if ((at == only || at[-1] == ',') && (at[len] == '\0' || at[len] == ','))
            return 1;
    return 0;
}

static int run_crash_matrix(const chaos_opts *o, const char *dir)
{
    int hit[MATRIX_N], ok[MATRIX_N], ran[MATRIX_N];
    int passed = 0, failed = 0;
    if (o->power_loss || o->no_sync || o->expect_loss)
        printf("crash matrix:%s%s%s\n", o->power_loss ? " power cut at each point" : "",
               o->no_sync ? ", no fsync anywhere" : "",
               o->expect_loss ? ", every row must break an invariant" : "");
    for (size_t i = 0; i < MATRIX_N; i++) {
        char spec[96], label[16], *sub;
        ran[i] = matrix_selected(o->crash_only, i);
        if (!ran[i])
            continue;
        snprintf(spec, sizeof spec, "%s:%d", matrix[i].point, matrix[i].hit_at);
        snprintf(label, sizeof label, "m%zu", i);
        printf("crash matrix %zu/%zu: %s SAGA_CRASH_POINT=%s\n", i + 1, MATRIX_N, matrix[i].proc,
               spec);
        scenario sc = {.label = label,
                       .sagas = MATRIX_SAGAS,
                       .clients = 3,
                       .duplicate_pct = 10,
                       .crash_proc = matrix[i].proc,
                       .crash_point = spec};
        run_result res;
        char name[32];
        snprintf(name, sizeof name, "matrix-%zu", i);
        sub = th_path(dir, name);
        int rc = sub && mkdir(sub, 0700) == 0 ? run_scenario(o, &sc, sub, &res) : -1;
        free(sub);
        hit[i] = rc == 0 && res.crash_hits > 0;
        ok[i] = rc == 0 && res.failed == 0;
        /* A row passes when the point was hit and every invariant held; with
         * --expect-loss, when it was hit and some invariant was broken. */
        if (hit[i] && (o->expect_loss ? rc == 0 && res.failed > 0 : ok[i]))
            passed++;
        else
            failed++;
    }
    printf("\n%-10s %-30s %-5s %s\n", "process", "crash point", "hit?", "invariants");
    for (size_t i = 0; i < MATRIX_N; i++)
        if (ran[i])
            printf("%-10s %-30s %-5s %s%s\n", matrix[i].proc, matrix[i].point,
                   hit[i] ? "yes" : "NO", ok[i] ? "PASS" : "FAIL",
                   o->expect_loss ? (ok[i] ? " (loss NOT caught)" : " (loss caught, as expected)")
                                  : "");
    if (passed + failed == 0) {
        printf("FAIL  --crash-only '%s' names no row of the matrix\n", o->crash_only);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    chaos_opts o;
    if (parse_opts(argc, argv, &o) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines show up in ctest logs as they come */
    printf("saga-chaos: seed %" PRIu64 "\n", o.seed);
    /* Children find their programs here (th_spawn); none inherits a crash
     * point meant for us. */
    setenv("SAGA_BIN_DIR", o.bin_dir, 1);
    unsetenv("SAGA_CRASH_POINT");
    signal(SIGPIPE, SIG_IGN);

    char *dir = th_tempdir();
    if (dir == NULL) {
        fprintf(stderr, "saga-chaos: cannot make a temp dir\n");
        return 1;
    }
    printf("saga-chaos: working in %s\n", dir);
    int status = o.crash_matrix ? run_crash_matrix(&o, dir) : run_chaos(&o, dir);
    if (o.keep || status != 0) {
        printf("saga-chaos: kept %s (logs, databases)\n", dir);
    } else {
        th_rmtree(dir);
    }
    free(dir);
    printf("saga-chaos: seed %" PRIu64 "\n", o.seed);
    return status;
}
