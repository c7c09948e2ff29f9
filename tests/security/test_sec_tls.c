/*
 * test_sec_tls — TLS and the exposure policy, with the real programs:
 *
 *   - a participant refuses to start on an address other hosts can reach
 *     without mutual TLS, and on TLS options without a tls+tcp:// address,
 *     before it creates its database;
 *   - a participant on tls+tcp:// with --tls-require-client-cert answers a
 *     client with a certificate from the CA, and gives nothing to a client
 *     without a certificate, with one from another CA, or speaking plain
 *     tcp:// to its port; its database stays as seeded;
 *   - a whole saga, sagad and the four services over mutual TLS on
 *     127.0.0.1, completes, and each service holds its effect.
 * Certificates are made at test time by gen-certs.sh (openssl).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sec_fixture.h"
#include "util.h"

#define ALICE_SEED 100000 /* participants/seeds/payment.cfg */

typedef struct {
    char *dir;
    sfx_certs certs;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    char *cdir = th_path(f->dir, "certs");
    int rc = cdir == NULL || mkdir(cdir, 0700) != 0 || sfx_certs_make(&f->certs, cdir) != 0;
    free(cdir);
    *state = f;
    return rc ? -1 : 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sfx_certs_free(&f->certs);
    if (getenv("SAGA_TEST_KEEP"))
        fprintf(stderr, "kept %s\n", f->dir);
    else
        th_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Runs payment-svc with args; its exit code, its output in *out (malloc'd). */
static int run_svc(fixture *f, const char *const *args, char **out)
{
    char *log = th_path(f->dir, "refused.log");
    pid_t pid;
    int status = -1;
    unlink(log);
    assert_int_equal(th_spawn("payment-svc", args, NULL, log, &pid), 0);
    if (th_wait_exit(pid, SFX_TIMEOUT_MS, &status) != 0)
        th_kill(pid);
    *out = th_read_file(log);
    free(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_exposure_refused(void **state)
{
    fixture *f = *state;
    sfx_certs *c = &f->certs;
    char *db = th_path(f->dir, "refused.db"), *out = NULL;
    char any[64], tls_any[64], loop[64];
    int port = sfx_free_port();
    snprintf(any, sizeof any, "tcp://0.0.0.0:%d", port);
    snprintf(tls_any, sizeof tls_any, "tls+tcp://0.0.0.0:%d", port);
    snprintf(loop, sizeof loop, "tcp://127.0.0.1:%d", port);

    /* Plain TCP on every interface. */
    const char *a1[] = {"--listen", any, "--db", db, NULL};
    assert_int_equal(run_svc(f, a1, &out), 2);
    assert_non_null(strstr(out, "refusing to listen on tcp://0.0.0.0"));
    assert_non_null(strstr(out, "--tls-require-client-cert"));
    free(out);
    /* TLS but no client authentication. */
    const char *a2[] = {"--listen",     tls_any,     "--db",        db,  "--tls-cert",
                        c->server_cert, "--tls-key", c->server_key, NULL};
    assert_int_equal(run_svc(f, a2, &out), 2);
    assert_non_null(strstr(out, "without authentication"));
    free(out);
    /* An empty host is every interface too. */
    char empty_host[64];
    snprintf(empty_host, sizeof empty_host, "tcp://:%d", port);
    const char *a3[] = {"--listen", empty_host, "--db", db, NULL};
    assert_int_equal(run_svc(f, a3, &out), 2);
    free(out);
    /* TLS files with a plain address: a mistake, not silently ignored. */
    const char *a4[] = {"--listen",     loop,        "--db",        db,  "--tls-cert",
                        c->server_cert, "--tls-key", c->server_key, NULL};
    assert_int_equal(run_svc(f, a4, &out), 2);
    assert_non_null(strstr(out, "not a tls+tcp:// URL"));
    free(out);
    /* A TLS address without a certificate. */
    const char *a5[] = {"--listen", tls_any, "--db", db, "--tls-require-client-cert", NULL};
    assert_int_equal(run_svc(f, a5, &out), 2);
    free(out);
    /* Plain TCP on loopback: every local user could charge and refund. */
    const char *a6[] = {"--listen", loop, "--db", db, NULL};
    assert_int_equal(run_svc(f, a6, &out), 2);
    assert_non_null(strstr(out, "every user of this host can reach"));
    free(out);
    /* Nor may a scheme in capitals slip past the check. */
    char upper[64];
    snprintf(upper, sizeof upper, "TCP://0.0.0.0:%d", port);
    const char *a7[] = {"--listen", upper, "--db", db, NULL};
    assert_int_equal(run_svc(f, a7, &out), 2);
    assert_non_null(strstr(out, "refusing to listen on TCP://0.0.0.0"));
    free(out);
    /* None of them created the database. */
    assert_int_not_equal(access(db, F_OK), 0);
    free(db);
}

/* Sends a charge of 10 for alice; the reply's outcome, or -1 when none came. */
static int charge(th_client *c, const char *saga)
{
    kvmap m = {0};
    StepReply *r = NULL;
    char key[128];
    snprintf(key, sizeof key, "%s/pay/action", saga);
    th_kv(&m, "customer", "alice", "amount", "10", NULL);
    int rv = th_client_step(c, key, saga, "pay", PHASE_ACTION, "charge", &m, &r);
    kv_free(&m);
    int outcome = rv == 0 && r != NULL ? (int)r->outcome : -1;
    th_reply_free(r);
    return outcome;
}

static void test_participant_requires_client_cert(void **state)
{
    fixture *f = *state;
    sfx_certs *c = &f->certs;
    char url[64], plain[64], saga[37];
    int port = sfx_free_port();
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", port);
    snprintf(plain, sizeof plain, "tcp://127.0.0.1:%d", port);
    char *db = th_path(f->dir, "alone-payment.db"),
         *seed = th_source_path("participants/seeds/payment.cfg");
    char *log = th_path(f->dir, "alone-payment.log");
    const char *args[] = {"--listen",
                          url,
                          "--db",
                          db,
                          "--seed",
                          seed,
                          "--tls-cert",
                          c->server_cert,
                          "--tls-key",
                          c->server_key,
                          "--tls-ca",
                          c->ca,
                          "--tls-require-client-cert",
                          NULL};
    pid_t pid;
    assert_int_equal(th_spawn("payment-svc", args, NULL, log, &pid), 0);
    sec_tls_files good = {.ca_file = c->ca, .cert_file = c->client_cert, .key_file = c->client_key};
    assert_int_equal(sfx_wait_tls(url, &good, pid, SFX_TIMEOUT_MS), 0);

    /* No client certificate, one from another CA, plain TCP: no answer. */
    sec_tls_files none = {.ca_file = c->ca};
    sec_tls_files rogue = {.ca_file = c->ca, .cert_file = c->rogue_cert, .key_file = c->rogue_key};
    const sec_tls_files *bad[] = {&none, &rogue, NULL};
    const char *bad_urls[] = {url, url, plain};
    for (int i = 0; i < 3; i++) {
        th_client cl;
        util_uuid4(saga);
        int rv = sfx_client_open(&cl, bad_urls[i], bad[i], 1500);
        if (rv == 0) {
            assert_int_equal(charge(&cl, saga), -1);
            th_client_close(&cl);
        }
        print_message("client %d: %s\n", i, rv == 0 ? "connected, no reply" : nng_strerror(rv));
    }
    assert_int_equal(th_sql_int(db, "SELECT count(*) FROM charges"), 0);
    assert_int_equal(th_sql_int(db, "SELECT balance FROM accounts WHERE customer = 'alice'"),
                     ALICE_SEED);
    assert_int_equal(th_sql_int(db, "SELECT count(*) FROM pt_idempotency"), 0);

    /* The right certificate: served. */
    th_client ok;
    util_uuid4(saga);
    assert_int_equal(sfx_client_open(&ok, url, &good, SFX_TIMEOUT_MS), 0);
    assert_int_equal(charge(&ok, saga), OUTCOME_OK);
    th_client_close(&ok);
    assert_int_equal(th_sql_int(db, "SELECT balance FROM accounts WHERE customer = 'alice'"),
                     ALICE_SEED - 10);

    int status;
    assert_int_equal(th_stop(pid, SFX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 0));
    free(db);
    free(seed);
    free(log);
}

static const char *const services[] = {"order", "payment", "inventory", "shipping"};

static void test_saga_over_mutual_tls(void **state)
{
    fixture *f = *state;
    sfx_certs *c = &f->certs;
    char urls[4][64];
    pid_t pids[5] = {0};
    char *dbs[4];
    sec_tls_files good = {.ca_file = c->ca, .cert_file = c->client_cert, .key_file = c->client_key};

    for (int i = 0; i < 4; i++) {
        snprintf(urls[i], sizeof urls[i], "tls+tcp://127.0.0.1:%d", sfx_free_port());
        char name[64], seedrel[96], prog[32];
        snprintf(name, sizeof name, "%s.db", services[i]);
        dbs[i] = th_path(f->dir, name);
        snprintf(name, sizeof name, "%s.log", services[i]);
        char *log = th_path(f->dir, name);
        snprintf(seedrel, sizeof seedrel, "participants/seeds/%s.cfg", services[i]);
        char *seed = th_source_path(seedrel);
        snprintf(prog, sizeof prog, "%s-svc", services[i]);
        const char *args[] = {"--listen",
                              urls[i],
                              "--db",
                              dbs[i],
                              "--seed",
                              seed,
                              "--tls-cert",
                              c->server_cert,
                              "--tls-key",
                              c->server_key,
                              "--tls-ca",
                              c->ca,
                              "--tls-require-client-cert",
                              NULL};
        const char *const *a = args;
        const char *no_seed[] = {"--listen",
                                 urls[i],
                                 "--db",
                                 dbs[i],
                                 "--tls-cert",
                                 c->server_cert,
                                 "--tls-key",
                                 c->server_key,
                                 "--tls-ca",
                                 c->ca,
                                 "--tls-require-client-cert",
                                 NULL};
        if (access(seed, F_OK) != 0)
            a = no_seed;
        assert_int_equal(th_spawn(prog, a, NULL, log, &pids[i]), 0);
        assert_int_equal(sfx_wait_tls(urls[i], &good, pids[i], SFX_TIMEOUT_MS), 0);
        free(log);
        free(seed);
    }

    char *cfg = th_path(f->dir, "sagad.cfg"), *admin = th_ipc_url(f->dir, "sagad");
    char *sagas = th_source_path("sagas");
    char *text = util_asprintf(
        "admin_url = \"%s\";\ndatabase = \"sagad.db\";\nsagas_dir = \"%s\";\n"
        "participants = {\n  order = \"%s\";\n  payment = \"%s\";\n  inventory = \"%s\";\n"
        "  shipping = \"%s\";\n  loyalty = \"ipc://%s/loyalty.ipc\";\n};\n"
        "tls = {\n  ca_file = \"%s\";\n  cert_file = \"%s\";\n  key_file = \"%s\";\n};\n",
        admin, sagas, urls[0], urls[1], urls[2], urls[3], f->dir, c->ca, c->client_cert,
        c->client_key);
    assert_int_equal(th_write_file(cfg, text), 0);
    char *sagad_log = th_path(f->dir, "sagad.log");
    const char *sargs[] = {"--config", cfg, NULL};
    assert_int_equal(th_spawn("sagad", sargs, NULL, sagad_log, &pids[4]), 0);
    assert_int_equal(th_wait_dial(admin, pids[4], SFX_TIMEOUT_MS), 0);

    char *ctl_out = th_path(f->dir, "ctl.out");
    const char *cargs[] = {"--url",
                           admin,
                           "--timeout",
                           "10000",
                           "start",
                           "order_fulfillment",
                           "--key",
                           "tls-order-1",
                           "--wait",
                           "customer=alice",
                           "sku=WIDGET-1",
                           "quantity=2",
                           "amount=2500",
                           "destination=paris",
                           NULL};
    pid_t ctl;
    int status = -1;
    assert_int_equal(th_spawn("sagactl", cargs, NULL, ctl_out, &ctl), 0);
    assert_int_equal(th_wait_exit(ctl, 180000, &status), 0); /* loaded machine, ASan, TLS */
    char *out = th_read_file(ctl_out);
    if (!th_exited_with(status, 0)) {
        char *sl = th_read_file(sagad_log);
        print_message("sagactl: %s\nsagad log:\n%s\n", out, sl ? sl : "");
        free(sl);
    }
    assert_true(th_exited_with(status, 0));
    assert_non_null(strstr(out, "COMPLETED"));
    free(out);
    /* Every service holds its effect, received over TLS. */
    assert_int_equal(th_sql_int(dbs[1], "SELECT count(*) FROM charges WHERE state = 'charged'"), 1);
    assert_int_equal(th_sql_int(dbs[1], "SELECT balance FROM accounts WHERE customer = 'alice'"),
                     ALICE_SEED - 2500);
    assert_int_equal(th_sql_int(dbs[0], "SELECT count(*) FROM pt_idempotency"), 2);

    for (int i = 4; i >= 0; i--) {
        assert_int_equal(th_stop(pids[i], SFX_TIMEOUT_MS, &status), 0);
        assert_true(th_exited_with(status, 0));
    }
    for (int i = 0; i < 4; i++)
        free(dbs[i]);
    free(cfg);
    free(admin);
    free(sagas);
    free(text);
    free(sagad_log);
    free(ctl_out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposure_refused),
        cmocka_unit_test(test_participant_requires_client_cert),
        cmocka_unit_test(test_saga_over_mutual_tls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
