/*
 * test_sec_unit — common/security.c and the security settings of sagad's
 * configuration (orchestrator/config.c), without processes:
 *   - which addresses count as local (loopback, ipc://) and which not;
 *   - the exposure policy's refusals and their message;
 *   - constant-time comparison; token files: owner-only, non-empty, one
 *     trailing newline trimmed;
 *   - config_load: admin_token_file read and checked, a TCP admin_url needs
 *     a token, a non-loopback one needs TLS too, tls+tcp:// URLs need the
 *     tls group's files, with FILE:LINE messages.
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

#include "config.h"
#include "sec_fixture.h"

static void test_url_is_local(void **state)
{
    (void)state;
    const char *local[] = {"ipc:///tmp/x.ipc", "inproc://x", "abstract://x", "tcp://127.0.0.1:1",
                           "tcp://127.8.9.10:1", "tls+tcp://localhost:1", "tcp://[::1]:1",
                           "ws://127.0.0.1:1/x", NULL};
    const char *remote[] = {"tcp://0.0.0.0:1", "tcp://:1", "tcp://10.0.0.1:1",
                            "tls+tcp://example.com:1", "tcp://[::]:1", "tcp://128.0.0.1:1",
                            "ws://:1/x", "tcp://localhost.evil.com:1", "garbage", NULL};
    for (const char **u = local; *u; u++) {
        print_message("local %s\n", *u);
        assert_true(sec_url_is_local(*u));
    }
    for (const char **u = remote; *u; u++) {
        print_message("remote %s\n", *u);
        assert_false(sec_url_is_local(*u));
    }
}

static void test_check_exposure(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(sec_check_exposure("x", "tcp://127.0.0.1:1", 0, 0, "T", "A", err, sizeof err), 0);
    assert_int_equal(sec_check_exposure("x", "tcp://0.0.0.0:1", 0, 0, "T", "A", err, sizeof err), -1);
    assert_non_null(strstr(err, "without TLS and authentication"));
    assert_int_equal(sec_check_exposure("x", "tcp://0.0.0.0:1", 1, 1, "T", "A", err, sizeof err), -1);
    assert_non_null(strstr(err, "without TLS"));
    assert_int_equal(sec_check_exposure("x", "tls+tcp://0.0.0.0:1", 1, 0, "T", "A", err, sizeof err), -1);
    assert_non_null(strstr(err, "without authentication: A"));
    assert_int_equal(sec_check_exposure("x", "tls+tcp://0.0.0.0:1", 1, 1, "T", "A", err, sizeof err), 0);
}

static void test_equal(void **state)
{
    (void)state;
    assert_true(sec_equal("secret", 6, "secret", 6));
    assert_false(sec_equal("secreT", 6, "secret", 6));
    assert_false(sec_equal("secret!", 7, "secret", 6));
    assert_false(sec_equal("secre", 5, "secret", 6));
    assert_false(sec_equal("", 0, "secret", 6));
    assert_true(sec_equal("", 0, "", 0));
}

static char *g_dir;

static char *write_token(const char *name, const char *text, mode_t mode)
{
    char *p = th_path(g_dir, name);
    assert_int_equal(th_write_file(p, text), 0);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

static void test_secret_file(void **state)
{
    (void)state;
    char err[512], *tok = NULL;
    char *p = write_token("t1", "s3cret\n", 0600);
    assert_int_equal(sec_read_secret_file(p, &tok, err, sizeof err), 0);
    assert_string_equal(tok, "s3cret");
    free(tok);
    free(p);
    p = write_token("t2", "s3cret\r\n", 0400);
    assert_int_equal(sec_read_secret_file(p, &tok, err, sizeof err), 0);
    assert_string_equal(tok, "s3cret");
    free(tok);
    free(p);
    p = write_token("t3", "s3cret", 0640);
    assert_int_equal(sec_read_secret_file(p, &tok, err, sizeof err), -1);
    assert_non_null(strstr(err, "chmod 600"));
    assert_null(strstr(err, "s3cret"));
    free(p);
    p = write_token("t4", "\n", 0600);
    assert_int_equal(sec_read_secret_file(p, &tok, err, sizeof err), -1);
    free(p);
    p = write_token("t5", "two\nlines\n", 0600);
    assert_int_equal(sec_read_secret_file(p, &tok, err, sizeof err), -1);
    assert_null(strstr(err, "two"));
    free(p);
    assert_int_equal(sec_read_secret_file("/nonexistent/token", &tok, err, sizeof err), -1);
    assert_null(tok);
}

/* Writes sagad.cfg (orch text) and saga.cfg into g_dir, loads; returns rc, err in err. */
static int load(const char *orch, orch_config *cfg, char *err, size_t errlen)
{
    char *o = th_path(g_dir, "sagad.cfg"), *s = th_path(g_dir, "saga.cfg");
    assert_int_equal(th_write_file(o, orch), 0);
    assert_int_equal(th_write_file(s, "name = \"s\";\nsteps = ( { name = \"one\"; participant = "
                                      "\"a\"; action = \"do\"; compensation = \"none\"; } );\n"),
                     0);
    int rc = config_load(o, cfg, err, errlen);
    if (rc != 0)
        print_message("config_load: %s\n", err);
    free(o);
    free(s);
    return rc;
}

static void test_config_token_and_tls(void **state)
{
    (void)state;
    orch_config cfg;
    char err[1024];
    char *ok = write_token("admin.token", "tok-123\n", 0600);
    char *loose = write_token("loose.token", "tok-123\n", 0644);
    free(ok);
    free(loose);

    /* ipc:// without a token: fine (the socket file is owner-only). */
    assert_int_equal(load("admin_url = \"ipc://a.ipc\";\nparticipants = { a = \"ipc://p.ipc\"; };\n",
                          &cfg, err, sizeof err), 0);
    assert_null(cfg.admin_token);
    config_free(&cfg);
    /* ipc:// with a token: read and trimmed. */
    assert_int_equal(load("admin_token_file = \"admin.token\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n", &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.admin_token, "tok-123");
    config_free(&cfg);
    /* A token file others may read: refused at its line, without the token. */
    assert_int_equal(load("participants = { a = \"ipc://p.ipc\"; };\n"
                          "admin_token_file = \"loose.token\";\n", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "sagad.cfg:2: "));
    assert_non_null(strstr(err, "chmod 600"));
    assert_null(strstr(err, "tok-123"));
    /* Loopback TCP needs a token... */
    assert_int_equal(load("admin_url = \"tcp://127.0.0.1:7000\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "sagad.cfg:1: "));
    assert_non_null(strstr(err, "admin_token_file"));
    /* ...and is fine with one. */
    assert_int_equal(load("admin_url = \"tcp://127.0.0.1:7000\";\nadmin_token_file = \"admin.token\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n", &cfg, err, sizeof err), 0);
    config_free(&cfg);
    /* Every interface, token but no TLS: refused, saying what to configure. */
    assert_int_equal(load("admin_url = \"tcp://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "refusing to listen on tcp://0.0.0.0:7000"));
    assert_non_null(strstr(err, "tls.cert_file"));
    /* tls+tcp:// admin without certificates. */
    assert_int_equal(load("admin_url = \"tls+tcp://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n", &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "set tls.cert_file and tls.key_file"));
    /* With them: accepted, paths resolved against the file's directory. */
    assert_int_equal(load("admin_url = \"tls+tcp://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
                          "tls = { ca_file = \"ca.pem\"; cert_file = \"c.pem\"; key_file = \"c.key\"; };\n"
                          "participants = { a = \"tls+tcp://127.0.0.1:9\"; };\n", &cfg, err, sizeof err), 0);
    char *want = th_path(g_dir, "c.pem");
    char *real = realpath(g_dir, NULL);
    char *want_real = th_path(real, "c.pem");
    assert_string_equal(cfg.tls_cert_file, want_real);
    free(want);
    free(real);
    free(want_real);
    config_free(&cfg);
    /* A TLS participant needs the CA. */
    assert_int_equal(load("participants = {\n  a = \"tls+tcp://127.0.0.1:9\";\n};\n", &cfg, err,
                          sizeof err), -1);
    assert_non_null(strstr(err, "sagad.cfg:2: "));
    assert_non_null(strstr(err, "tls.ca_file"));
    /* Half a certificate; unknown names in the tls group. */
    assert_int_equal(load("tls = { cert_file = \"c.pem\"; };\nparticipants = { a = \"ipc://p.ipc\"; };\n",
                          &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "key_file"));
    assert_int_equal(load("tls = { ca_fil = \"c.pem\"; };\nparticipants = { a = \"ipc://p.ipc\"; };\n",
                          &cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "did you mean \"ca_file\""));
}

static int group_setup(void **state)
{
    (void)state;
    g_dir = th_tempdir();
    return g_dir ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    th_rmtree(g_dir);
    free(g_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_is_local),       cmocka_unit_test(test_check_exposure),
        cmocka_unit_test(test_equal),              cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_config_token_and_tls),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
