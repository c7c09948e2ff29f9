/*
 * participant_bench — saga-bench --participant: one participant service
 * (payment-svc, its `charge`) driven directly over nng, without sagad, on
 * each of the runtime's two databases: its SQLite file and a database of a
 * private PostgreSQL server (docs/PARTICIPANTS.md, `--db postgresql://`).
 *
 * What it prints, for 1 and 64 requests in flight: requests/s and the p50 of
 * one request (send to reply), on SQLite and on PostgreSQL with the barrier
 * (the idempotency record and barrier row in the business transaction), and
 * on PostgreSQL without them (bench-payment-svc, built with
 * PT_BENCH_NO_BARRIER): the barrier's cost on PostgreSQL as a ratio measured
 * in the same run.
 *
 * Every request is a first delivery (a new key), so each one commits: the
 * figure is the runtime's write path, not replays. Both databases are
 * durable as shipped: the services' SQLite default (synchronous=FULL, WAL)
 * and PostgreSQL's (fsync, synchronous_commit on).
 */
#include "participant_bench.h"

#include <errno.h>
#include <fcntl.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "kv.h"
#include "pg_cluster.h"
#include "saga.pb-c.h"
#include "util.h"
#include "wire.h"

#define PB_MAX_SAMPLES (1u << 21) /* latencies kept per point; more are counted, not kept */
#define PB_CUSTOMERS   16

/* One request in flight: its context and aio, resent with a new key as soon
 * as its reply is in. */
typedef struct {
    nng_ctx ctx;
    nng_aio *aio;
    int receiving;
    int64_t sent_ns;
    uint64_t n;
} pb_slot;

static struct {
    nng_socket sock;
    atomic_int stop, active;
    atomic_ullong completed, bad, seq;
    atomic_uint n_samples;
    atomic_int sampling;
    double *samples; /* ms */
} g;

static int64_t pb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void pb_send(pb_slot *s)
{
    char saga_id[37], key[128], customer[16];
    util_uuid7(saga_id);
    snprintf(key, sizeof key, "%s/charge_payment/action", saga_id);
    snprintf(customer, sizeof customer, "bench%02d", (int)(s->n % PB_CUSTOMERS));
    kvmap params = KVMAP_INIT;
    kv_set(&params, "customer", customer);
    kv_set(&params, "amount", "1");
    kv_set(&params, "order_id", saga_id);
    size_t len;
    uint8_t *buf =
        wire_pack_request(key, saga_id, "charge_payment", PHASE_ACTION, "charge", 1, &params, &len);
    kv_free(&params);
    nng_msg *m;
    if (buf == NULL || nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, buf, len) != 0) {
        fprintf(stderr, "saga-bench: out of memory\n");
        exit(1);
    }
    free(buf);
    s->receiving = 0;
    s->sent_ns = pb_now_ns();
    nng_aio_set_msg(s->aio, m);
    nng_aio_set_timeout(s->aio, 30000);
    nng_ctx_send(s->ctx, s->aio);
}

static void pb_next(pb_slot *s)
{
    if (atomic_load(&g.stop)) {
        g.active--;
        return;
    }
    s->n = g.seq++;
    pb_send(s);
}

static void pb_cb(void *arg)
{
    pb_slot *s = arg;
    int rv = nng_aio_result(s->aio);
    if (!s->receiving) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            g.bad++;
            pb_next(s);
            return;
        }
        s->receiving = 1;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    int ok = 0;
    if (rv == 0) {
        nng_msg *m = nng_aio_get_msg(s->aio);
        StepReply *rep = saga__v1__step_reply__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
        ok = rep != NULL && (int)rep->outcome == OUTCOME_OK && !rep->replayed;
        if (rep)
            saga__v1__step_reply__free_unpacked(rep, NULL);
    }
    if (ok) {
        g.completed++;
        if (atomic_load(&g.sampling)) {
            unsigned i = atomic_fetch_add(&g.n_samples, 1);
            if (i < PB_MAX_SAMPLES)
                g.samples[i] = (double)(pb_now_ns() - s->sent_ns) / 1e6;
        }
    } else {
        g.bad++;
    }
    pb_next(s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double rate, p50;
    uint64_t bad;
} pb_point;

/* conc requests in flight against url for warm_s, then secs measured. */
static pb_point pb_drive(const char *url, int conc, double warm_s, double secs)
{
    pb_point r = {0};
    if (nng_req0_open(&g.sock) != 0 || nng_dial(g.sock, url, NULL, 0) != 0) {
        fprintf(stderr, "saga-bench: cannot dial %s\n", url);
        exit(1);
    }
    nng_socket_set_ms(g.sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    pb_slot *slots = calloc((size_t)conc, sizeof *slots);
    atomic_store(&g.stop, 0);
    atomic_store(&g.sampling, 0);
    atomic_store(&g.n_samples, 0);
    g.completed = g.bad = 0;
    g.active = conc;
    for (int i = 0; i < conc; i++)
        if (nng_ctx_open(&slots[i].ctx, g.sock) != 0 ||
            nng_aio_alloc(&slots[i].aio, pb_cb, &slots[i]) != 0) {
            fprintf(stderr, "saga-bench: out of nng resources\n");
            exit(1);
        }
    for (int i = 0; i < conc; i++)
        pb_next(&slots[i]);
    util_sleep_ms((int64_t)(warm_s * 1000));
    uint64_t c0 = g.completed;
    atomic_store(&g.sampling, 1);
    int64_t t0 = pb_now_ns();
    util_sleep_ms((int64_t)(secs * 1000));
    uint64_t c1 = g.completed;
    int64_t t1 = pb_now_ns();
    atomic_store(&g.sampling, 0);
    atomic_store(&g.stop, 1);
    while (atomic_load(&g.active) > 0)
        util_sleep_ms(5);
    r.rate = (double)(c1 - c0) / ((double)(t1 - t0) / 1e9);
    r.bad = g.bad;
    unsigned n = atomic_load(&g.n_samples);
    if (n > PB_MAX_SAMPLES)
        n = PB_MAX_SAMPLES;
    qsort(g.samples, n, sizeof *g.samples, cmp_double);
    r.p50 = n ? g.samples[n / 2] : 0;
    for (int i = 0; i < conc; i++) {
        nng_aio_free(slots[i].aio);
        nng_ctx_close(slots[i].ctx);
    }
    free(slots);
    nng_close(g.sock);
    return r;
}

static void pb_write_seed(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "saga-bench: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fputs("accounts = (\n", f);
    for (int i = 0; i < PB_CUSTOMERS; i++)
        fprintf(f, "  { customer = \"bench%02d\"; balance = 100000000000000; }%s\n", i,
                i + 1 < PB_CUSTOMERS ? "," : "");
    fputs(");\n", f);
    fclose(f);
}

/* Starts program (payment-svc or bench-payment-svc) on db; waits until it
 * answers a dial. */
static pid_t pb_start(const char *bindir, const char *dir, const char *program, const char *db,
                      const char *url)
{
    char prog[600], seed[600], logp[600];
    snprintf(prog, sizeof prog, "%s/%s", bindir, program);
    snprintf(seed, sizeof seed, "%s/payment.seed", dir);
    snprintf(logp, sizeof logp, "%s/%s.log", dir, program);
    char *argv[] = {prog,     "--listen", (char *)url,   "--db", (char *)db,
                    "--seed", seed,       "--log-level", "warn", NULL};
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "saga-bench: cannot open %s: %s\n", logp, strerror(errno));
        exit(1);
    }
    pid_t pid = bench_spawn(argv, fd);
    close(fd);
    if (bench_wait_dial(url, 30000) != 0) {
        fprintf(stderr, "saga-bench: %s does not listen on %s (see %s)\n", program, url, logp);
        exit(1);
    }
    return pid;
}

static void pb_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    bench_untrack(pid);
}

int participant_bench_run(const char *bindir, const char *tmp, double warm_s, double secs)
{
    static const int concs[2] = {1, 64};
    static const struct {
        const char *label, *program;
        int pg;
    } setups[3] = {
        {"sqlite", "payment-svc", 0},
        {"postgresql", "payment-svc", 1},
        {"postgresql, no barrier", "bench-payment-svc", 1},
    };
    pb_point res[3][2];
    g.samples = malloc(PB_MAX_SAMPLES * sizeof *g.samples);
    if (g.samples == NULL)
        return 1;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/participant", tmp);
    mkdir(dir, 0700);
    char seed[600];
    snprintf(seed, sizeof seed, "%s/payment.seed", dir);
    pb_write_seed(seed);
    setenv("SAGA_BIN_DIR", bindir, 0); /* pg_cluster's initdb template beside the binaries */
    char err[1024];
    pg_cluster *pg = pgc_start(1, err, sizeof err);
    if (pg == NULL) {
        fprintf(stderr, "saga-bench: cannot start a PostgreSQL server: %s\n", err);
        return 1;
    }
    bench_note("participant: PostgreSQL server in %s (durable)", pgc_dir(pg));
    for (int s = 0; s < 3; s++) {
        char db[600], url[600], name[32];
        snprintf(url, sizeof url, "ipc://%s/payment-%d.ipc", dir, s);
        char *pg_url = NULL;
        if (setups[s].pg) {
            snprintf(name, sizeof name, "payment%d", s);
            if (pgc_create_db(pg, name) != 0 || (pg_url = pgc_url(pg, name)) == NULL) {
                fprintf(stderr, "saga-bench: cannot create database %s\n", name);
                pgc_destroy(pg);
                return 1;
            }
            snprintf(db, sizeof db, "%s", pg_url);
        } else {
            snprintf(db, sizeof db, "%s/payment.db", dir);
        }
        pid_t pid = pb_start(bindir, dir, setups[s].program, db, url);
        for (int k = 0; k < 2; k++) {
            bench_note("participant: %s, %d in flight", setups[s].label, concs[k]);
            res[s][k] = pb_drive(url, concs[k], warm_s, secs);
        }
        pb_stop(pid);
        free(pg_url);
    }
    pgc_destroy(pg);
    free(g.samples);
    printf("saga-bench --participant: payment-svc `charge`, a new key per request, driven "
           "directly over ipc:// (no sagad); %.1f s measured per point after %.1f s warm-up\n",
           secs, warm_s);
    printf("  sqlite = the service's file (synchronous=FULL, WAL); postgresql = a private server "
           "as shipped (fsync, synchronous_commit on)\n");
    printf("%-24s %12s %10s %12s %10s %8s\n", "database", "req/s at 1", "p50 ms", "req/s at 64",
           "p50 ms", "errors");
    for (int s = 0; s < 3; s++)
        printf("%-24s %12.0f %10.2f %12.0f %10.2f %8llu\n", setups[s].label, res[s][0].rate,
               res[s][0].p50, res[s][1].rate, res[s][1].p50,
               (unsigned long long)(res[s][0].bad + res[s][1].bad));
    printf("  postgresql / sqlite: %.2f at 1, %.2f at 64 (req/s)\n",
           res[1][0].rate / res[0][0].rate, res[1][1].rate / res[0][1].rate);
    printf("  the barrier on postgresql, with / without: %.2f at 1, %.2f at 64 (req/s)\n",
           res[1][0].rate / res[2][0].rate, res[1][1].rate / res[2][1].rate);
    return 0;
}
