/*
 * test_sec_admin_net — the admin API on a network address, with the real
 * sagad and sagactl:
 *
 *   - tcp://127.0.0.1 with admin_token_file: sagactl without a token, or
 *     with a wrong one, is refused (exit 1, "missing or wrong admin token")
 *     for reads and writes alike, and nothing is started; the right token
 *     from --token-file, SAGA_ADMIN_TOKEN_FILE or SAGA_ADMIN_TOKEN works;
 *     sagad logs refusals at WARN, at most one line a minute, never the
 *     token;
 *   - tls+tcp://127.0.0.1 with the tls group's certificate: sagactl with
 *     --tls-ca (and the token) is served; without --tls-ca, with a CA that
 *     did not sign sagad's certificate, or in plain tcp:// to the TLS port,
 *     it gets nothing (exit 5).
 * sagad runs with participant URLs nobody listens on: these tests only
 * talk to its admin API (a started saga just waits for its participants).
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
#include <sys/wait.h>
#include <unistd.h>

#include "sec_fixture.h"
#include "util.h"

#define TOKEN "correct-horse-battery-staple-42"

typedef struct {
    char *dir;
    sfx_certs certs;
    char *token_file, *wrong_file;
    int ctl_runs;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    *state = f;
    char *cdir = th_path(f->dir, "certs");
    int rc = cdir == NULL || mkdir(cdir, 0700) != 0 || sfx_certs_make(&f->certs, cdir) != 0;
    free(cdir);
    f->token_file = th_path(f->dir, "admin.token");
    f->wrong_file = th_path(f->dir, "wrong.token");
    if (rc || th_write_file(f->token_file, TOKEN "\n") != 0 ||
        th_write_file(f->wrong_file, "not-the-token\n") != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sfx_certs_free(&f->certs);
    if (getenv("SAGA_TEST_KEEP"))
        fprintf(stderr, "kept %s\n", f->dir);
    else
        th_rmtree(f->dir);
    free(f->token_file);
    free(f->wrong_file);
    free(f->dir);
    free(f);
    return 0;
}

/* Writes sagad.cfg for admin_url (with the token file, and the tls group when
 * tls) and starts sagad; *log gets its log path. Returns its pid. */
static pid_t start_sagad(fixture *f, const char *admin_url, int tls, char **log)
{
    char *cfg = th_path(f->dir, "sagad.cfg"), *sagas = th_source_path("sagas");
    char *p[5];
    const char *names[] = {"order", "payment", "inventory", "shipping", "loyalty"};
    for (int i = 0; i < 5; i++)
        p[i] = th_ipc_url(f->dir, names[i]);
    char *tls_group = tls ? util_asprintf("tls = {\n  ca_file = \"%s\";\n  cert_file = \"%s\";\n"
                                          "  key_file = \"%s\";\n};\n",
                                          f->certs.ca, f->certs.server_cert, f->certs.server_key)
                          : util_strdup("");
    char *text = util_asprintf(
        "admin_url = \"%s\";\nadmin_token_file = \"admin.token\";\ndatabase = \"%s\";\n"
        "sagas_dir = \"%s\";\nparticipants = {\n  order = \"%s\";\n  payment = \"%s\";\n"
        "  inventory = \"%s\";\n  shipping = \"%s\";\n  loyalty = \"%s\";\n};\n%s",
        admin_url, tls ? "sagad-tls.db" : "sagad.db", sagas, p[0], p[1], p[2], p[3], p[4],
        tls_group);
    assert_int_equal(th_write_file(cfg, text), 0);
    *log = th_path(f->dir, tls ? "sagad-tls.log" : "sagad.log");
    const char *args[] = {"--config", cfg, NULL};
    pid_t pid;
    assert_int_equal(th_spawn("sagad", args, NULL, *log, &pid), 0);
    for (int i = 0; i < 5; i++)
        free(p[i]);
    free(cfg);
    free(sagas);
    free(tls_group);
    free(text);
    return pid;
}

/* Runs sagactl with args and env (both NULL-terminated); its exit code, its
 * output in *out (malloc'd). */
static int ctl(fixture *f, const char *const *env, char **out, const char *const *args)
{
    char name[32];
    snprintf(name, sizeof name, "ctl-%d.out", ++f->ctl_runs);
    char *path = th_path(f->dir, name);
    pid_t pid;
    int status = -1;
    assert_int_equal(th_spawn("sagactl", args, env, path, &pid), 0);
    if (th_wait_exit(pid, SFX_TIMEOUT_MS * 2, &status) != 0)
        th_kill(pid);
    *out = th_read_file(path);
    assert_non_null(*out);
    free(path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* How many sagas sagad holds (asked with the right token). */
static int saga_count(fixture *f, const char *url, const char *const *tls_args)
{
    const char *args[16] = {"--url", url, "--token-file", f->token_file, "--json"};
    int n = 5;
    for (int i = 0; tls_args != NULL && tls_args[i] != NULL; i++)
        args[n++] = tls_args[i];
    args[n++] = "list";
    args[n] = NULL;
    char *out = NULL;
    int code = ctl(f, NULL, &out, args);
    if (code != 0)
        print_message("list: %s\n", out);
    assert_int_equal(code, 0);
    int count = 0;
    for (const char *p = out; (p = strstr(p, "\"saga_id\"")) != NULL; p++)
        count++;
    free(out);
    return count;
}

static void test_token_on_tcp(void **state)
{
    fixture *f = *state;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", sfx_free_port());
    char *log = NULL, *out = NULL;
    pid_t pid = start_sagad(f, url, 0, &log);
    assert_int_equal(th_wait_dial(url, pid, SFX_TIMEOUT_MS), 0);

    /* No token, a wrong token (file or environment): refused, reads and
     * writes alike. */
    const char *wrong_env[] = {"SAGA_ADMIN_TOKEN=not-the-token", NULL};
    const char *start_no[] = {
        "--url",        url,          "start",      "order_fulfillment", "customer=alice",
        "sku=WIDGET-1", "quantity=1", "amount=100", "destination=paris", NULL};
    const char *start_wrong[] = {"--url",
                                 url,
                                 "--token-file",
                                 f->wrong_file,
                                 "start",
                                 "order_fulfillment",
                                 "customer=alice",
                                 "sku=WIDGET-1",
                                 "quantity=1",
                                 "amount=100",
                                 "destination=paris",
                                 NULL};
    const char *list_no[] = {"--url", url, "list", NULL};
    const char *stats_no[] = {"--url", url, "stats", NULL};
    const char *status_no[] = {"--url", url, "status", "0b7e3c1a-4f6d-4c2e-9a8b-1d2e3f405162",
                               NULL};
    struct {
        const char *const *args, *const *env;
    } refused[] = {{start_no, NULL}, {start_wrong, NULL}, {start_no, wrong_env}, {list_no, NULL},
                   {stats_no, NULL}, {status_no, NULL},   {stats_no, wrong_env}};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        assert_int_equal(ctl(f, refused[i].env, &out, refused[i].args), 1);
        assert_non_null(strstr(out, "missing or wrong admin token"));
        free(out);
    }
    /* Nothing was started. */
    assert_int_equal(saga_count(f, url, NULL), 0);

    /* The right token: from --token-file, SAGA_ADMIN_TOKEN_FILE, SAGA_ADMIN_TOKEN. */
    const char *start_ok[] = {"--url",
                              url,
                              "--token-file",
                              f->token_file,
                              "--json",
                              "start",
                              "order_fulfillment",
                              "customer=alice",
                              "sku=WIDGET-1",
                              "quantity=1",
                              "amount=100",
                              "destination=paris",
                              NULL};
    assert_int_equal(ctl(f, NULL, &out, start_ok), 0);
    assert_non_null(strstr(out, "\"saga_id\""));
    free(out);
    char *file_env_var = util_asprintf("SAGA_ADMIN_TOKEN_FILE=%s", f->token_file);
    const char *file_env[] = {file_env_var, NULL};
    const char *token_env[] = {"SAGA_ADMIN_TOKEN=" TOKEN, NULL};
    assert_int_equal(ctl(f, file_env, &out, stats_no), 0);
    free(out);
    assert_int_equal(ctl(f, token_env, &out, list_no), 0);
    free(out);
    /* --token-file wins over a wrong SAGA_ADMIN_TOKEN. */
    const char *stats_file[] = {"--url", url, "--token-file", f->token_file, "stats", NULL};
    assert_int_equal(ctl(f, wrong_env, &out, stats_file), 0);
    free(out);
    assert_int_equal(saga_count(f, url, NULL), 1);

    /* The first refusal was logged at WARN, the others counted toward the next
     * report (one line a minute at most: guessing cannot flood the log); the
     * token never was. */
    int status;
    assert_int_equal(th_stop(pid, SFX_TIMEOUT_MS, &status), 0);
    char *text = th_read_file(log);
    assert_non_null(text);
    assert_non_null(strstr(text, "refused a start request: missing or wrong admin token"));
    const char *first = strstr(text, "refused a start request");
    assert_non_null(first);
    assert_null(strstr(first + 1, "refused a "));
    assert_null(strstr(text, TOKEN));
    assert_null(strstr(text, "not-the-token"));
    free(text);
    free(file_env_var);
    free(log);
}

static void test_tls_admin(void **state)
{
    fixture *f = *state;
    sfx_certs *c = &f->certs;
    char url[64], plain[64];
    int port = sfx_free_port();
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", port);
    snprintf(plain, sizeof plain, "tcp://127.0.0.1:%d", port);
    char *log = NULL, *out = NULL;
    pid_t pid = start_sagad(f, url, 1, &log);
    sec_tls_files trust = {.ca_file = c->ca};
    assert_int_equal(sfx_wait_tls(url, &trust, pid, SFX_TIMEOUT_MS), 0);

    /* With the CA and the token: served. */
    const char *ok[] = {"--url",        url,           "--tls-ca", c->ca,
                        "--token-file", f->token_file, "stats",    NULL};
    assert_int_equal(ctl(f, NULL, &out, ok), 0);
    free(out);
    /* A client certificate is accepted too (sagad does not ask for one). */
    const char *with_cert[] = {
        "--url",     url,           "--tls-ca",     c->ca,         "--tls-cert", c->client_cert,
        "--tls-key", c->client_key, "--token-file", f->token_file, "list",       NULL};
    assert_int_equal(ctl(f, NULL, &out, with_cert), 0);
    free(out);
    /* TLS but no token: refused by sagad. */
    const char *no_token[] = {"--url", url, "--tls-ca", c->ca, "stats", NULL};
    assert_int_equal(ctl(f, NULL, &out, no_token), 1);
    assert_non_null(strstr(out, "missing or wrong admin token"));
    free(out);
    /* No CA: sagactl does not connect. */
    const char *no_ca[] = {"--url", url, "--token-file", f->token_file, "stats", NULL};
    assert_int_equal(ctl(f, NULL, &out, no_ca), 5);
    assert_non_null(strstr(out, "--tls-ca"));
    free(out);
    /* A CA that did not sign sagad's certificate: the handshake fails. */
    char *rogue_ca = th_path(c->dir, "rogue-ca.pem");
    const char *wrong_ca[] = {"--url",
                              url,
                              "--tls-ca",
                              rogue_ca,
                              "--token-file",
                              f->token_file,
                              "--timeout",
                              "2000",
                              "start",
                              "order_fulfillment",
                              "customer=alice",
                              "sku=WIDGET-1",
                              "quantity=1",
                              "amount=100",
                              "destination=paris",
                              NULL};
    assert_int_equal(ctl(f, NULL, &out, wrong_ca), 5);
    free(out);
    /* Plain TCP to the TLS port. */
    const char *cleartext[] = {"--url",     plain,  "--token-file", f->token_file,
                               "--timeout", "2000", "stats",        NULL};
    assert_int_equal(ctl(f, NULL, &out, cleartext), 5);
    free(out);
    /* None of the refused starts reached sagad. */
    const char *tls_args[] = {"--tls-ca", c->ca, NULL};
    assert_int_equal(saga_count(f, url, tls_args), 0);

    int status;
    assert_int_equal(th_stop(pid, SFX_TIMEOUT_MS, &status), 0);
    assert_true(th_exited_with(status, 0));
    free(rogue_ca);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_on_tcp),
        cmocka_unit_test(test_tls_admin),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
