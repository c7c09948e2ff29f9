/*
 * test_sec_unit — common/security.c and the security settings of sagad's
 * configuration (orchestrator/config.c), without processes:
 *   - which addresses count as local (loopback, ipc://) and which not;
 *   - the exposure policy's refusals and their message; a listen URL whose
 *     host name resolves to several addresses, and an http_url without a
 *     port, refused;
 *   - constant-time comparison; token files: owner-only, non-empty, one
 *     trailing newline trimmed;
 *   - config_load: admin_token_file read and checked, a TCP admin_url needs
 *     a token, a non-loopback one needs TLS too, tls+tcp:// URLs need the
 *     tls group's files, with FILE:LINE messages;
 *   - the admin request check (admin_handle_request_bytes): the token on
 *     every kind of request, NUL bytes and invalid UTF-8 in strings refused
 *     (admin and step requests, wire_invalid_string_field).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "admin.pb-c.h"
#include "config.h"
#include "httpd.h"
#include "sec_fixture.h"
#include "util.h"
#include "wire.h"

static void test_url_is_local(void **state)
{
    (void)state;
    const char *local[] = {"ipc:///tmp/x.ipc",  "inproc://x",         "abstract://x",
                           "tcp://127.0.0.1:1", "tcp://127.8.9.10:1", "tls+tcp://localhost:1",
                           "tcp://[::1]:1",     "ws://127.0.0.1:1/x", NULL};
    const char *remote[] = {
        "tcp://0.0.0.0:1", "tcp://:1",          "tcp://10.0.0.1:1",    "tls+tcp://example.com:1",
        "tcp://[::]:1",    "tcp://128.0.0.1:1", "ws://:1/x",           "tcp://localhost.evil.com:1",
        "garbage",         "TCP://0.0.0.0:1",   "Tls+Tcp://0.0.0.0:1", NULL};
    for (const char **u = local; *u; u++) {
        print_message("local %s\n", *u);
        assert_true(sec_url_is_local(*u));
    }
    for (const char **u = remote; *u; u++) {
        print_message("remote %s\n", *u);
        assert_false(sec_url_is_local(*u));
    }
    /* Only ipc:// (a 0600 file) and inproc:// keep other users of the host out. */
    assert_true(sec_url_is_owner_only("ipc:///tmp/x.ipc"));
    assert_true(sec_url_is_owner_only("IPC:///tmp/x.ipc"));
    assert_true(sec_url_is_owner_only("inproc://x"));
    assert_false(sec_url_is_owner_only("abstract://x"));
    assert_false(sec_url_is_owner_only("tcp://127.0.0.1:1"));
    assert_false(sec_url_is_owner_only("ipcx://x"));
    assert_true(sec_url_is_tls("TLS+TCP://0.0.0.0:1"));
    assert_false(sec_url_is_tls("tls+tcpx://0.0.0.0:1"));
}

static void test_check_exposure(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(sec_check_exposure("x", "ipc:///tmp/x.ipc", 0, 0, "T", "A", err, sizeof err),
                     0);
    /* Loopback and abstract sockets: every local user can connect. */
    assert_int_equal(sec_check_exposure("x", "tcp://127.0.0.1:1", 0, 0, "T", "A", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "every user of this host can reach, without authentication (A)"));
    assert_int_equal(sec_check_exposure("x", "abstract://x", 0, 0, "T", "A", err, sizeof err), -1);
    assert_int_equal(sec_check_exposure("x", "tcp://127.0.0.1:1", 0, 1, "T", "A", err, sizeof err),
                     0);
    /* A scheme in capitals is the same transport to nng: no way around the check. */
    assert_int_equal(sec_check_exposure("x", "TCP://0.0.0.0:1", 0, 1, "T", "A", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "without TLS"));
    assert_int_equal(sec_check_exposure("x", "tcp://0.0.0.0:1", 0, 0, "T", "A", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "without TLS and authentication"));
    assert_int_equal(sec_check_exposure("x", "tcp://0.0.0.0:1", 1, 1, "T", "A", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "without TLS"));
    assert_int_equal(
        sec_check_exposure("x", "tls+tcp://0.0.0.0:1", 1, 0, "T", "A", err, sizeof err), -1);
    assert_non_null(strstr(err, "without authentication: A"));
    assert_int_equal(
        sec_check_exposure("x", "tls+tcp://0.0.0.0:1", 1, 1, "T", "A", err, sizeof err), 0);
}

/* How many distinct addresses host resolves to here (0 when it does not). */
static int count_addresses(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return 0;
    char seen[8][INET6_ADDRSTRLEN];
    int n = 0;
    for (struct addrinfo *ai = res; ai != NULL && n < 8; ai = ai->ai_next) {
        char a[INET6_ADDRSTRLEN];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a, sizeof a, NULL, 0, NI_NUMERICHOST) != 0)
            continue;
        int k = 0;
        while (k < n && strcmp(seen[k], a) != 0)
            k++;
        if (k == n)
            memcpy(seen[n++], a, sizeof a);
    }
    freeaddrinfo(res);
    return n;
}

/*
 * A listener binds one address. On a stock Debian, localhost is 127.0.0.1
 * and ::1 (scripts/test.sh runs the suite with that /etc/hosts), and sagad
 * told to listen on http://localhost:PORT bound ::1 while Prometheus dialed
 * 127.0.0.1: a name with several addresses is refused, naming the literals.
 */
static void test_listen_host_names(void **state)
{
    (void)state;
    char err[1024];
    const char *literal[] = {"tcp://127.0.0.1:1",
                             "tcp://[::1]:1",
                             "tls+tcp://0.0.0.0:1",
                             "tcp://:1",
                             "ipc:///tmp/x.ipc",
                             "abstract://x",
                             NULL};
    for (const char **u = literal; *u; u++)
        assert_int_equal(sec_check_listen_host("x", *u, err, sizeof err), 0);
    assert_int_equal(sec_check_listen_host("x", "tcp://no-such-host.invalid:1", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "does not resolve"));

    int n = count_addresses("localhost");
    assert_true(n >= 1);
    print_message("localhost resolves to %d address(es) here\n", n);
    int want = n > 1 ? -1 : 0;
    assert_int_equal(sec_check_listen_host("admin_url", "tcp://localhost:7000", err, sizeof err),
                     want);
    assert_int_equal(
        sec_check_exposure("admin_url", "tcp://localhost:7000", 0, 1, "T", "A", err, sizeof err),
        want);
    assert_int_equal(httpd_check_url("http_url", "http://localhost:9464", 0, 1, err, sizeof err),
                     want);
    if (n > 1) {
        print_message("%s\n", err);
        assert_non_null(strstr(err, "http_url: http://localhost:9464 names host localhost, which "
                                    "resolves to several addresses"));
        assert_non_null(strstr(err, "127.0.0.1"));
        assert_non_null(strstr(err, "::1"));
        if (n == 2) { /* the stock pair: both literals are offered */
            assert_non_null(strstr(err, "http://127.0.0.1:9464"));
            assert_non_null(strstr(err, "http://[::1]:9464"));
        }
    }
}

/* http_url must name its port: nng would bind 80 (or 443) without one. */
static void test_http_url_port(void **state)
{
    (void)state;
    char err[1024];
    const char *refused[] = {"http://127.0.0.1", "http://127.0.0.1/", "http://[::1]",
                             "https://127.0.0.1/x", NULL};
    for (const char **u = refused; *u; u++) {
        print_message("%s\n", *u);
        assert_int_equal(httpd_check_url("http_url", *u, 1, 1, err, sizeof err), -1);
        assert_non_null(strstr(err, "needs a port"));
    }
    /* An empty port does not even parse. */
    assert_int_equal(httpd_check_url("http_url", "http://127.0.0.1:", 0, 1, err, sizeof err), -1);
    assert_int_equal(httpd_check_url("http_url", "http://127.0.0.1:9464", 0, 1, err, sizeof err),
                     0);
    assert_int_equal(httpd_check_url("http_url", "http://[::1]:9464/", 0, 1, err, sizeof err), 0);
}

/* A socket's directory and every directory above it: nobody else may be able
 * to rename one away and plant their own. */
static void test_socket_dir_ancestors(void **state)
{
    (void)state;
    char top[] = "/tmp/sec-sockdir-XXXXXX", err[1024];
    assert_non_null(mkdtemp(top));
    char *dir = util_asprintf("%s/run", top), *sock = util_asprintf("%s/run/x.ipc", top);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(top, 0755), 0);
    assert_int_equal(sec_check_socket_dir(sock, err, sizeof err), 0);
    assert_int_equal(chmod(top, 01777), 0); /* sticky: only run's owner may rename it */
    assert_int_equal(sec_check_socket_dir(sock, err, sizeof err), 0);
    assert_int_equal(chmod(top, 0777), 0);
    assert_int_equal(sec_check_socket_dir(sock, err, sizeof err), -1);
    print_message("%s\n", err);
    assert_non_null(strstr(err, "without the sticky bit"));
    assert_int_equal(chmod(dir, 0770), 0); /* the socket's own directory: no sticky excuse */
    assert_int_equal(chmod(top, 0755), 0);
    assert_int_equal(sec_check_socket_dir(sock, err, sizeof err), -1);
    rmdir(dir);
    rmdir(top);
    free(dir);
    free(sock);
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
    assert_int_equal(
        load("admin_url = \"ipc://a.ipc\";\nparticipants = { a = \"ipc://p.ipc\"; };\n", &cfg, err,
             sizeof err),
        0);
    assert_null(cfg.admin_token);
    config_free(&cfg);
    /* ipc:// with a token: read and trimmed. */
    assert_int_equal(load("admin_token_file = \"admin.token\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n",
                          &cfg, err, sizeof err),
                     0);
    assert_string_equal(cfg.admin_token, "tok-123");
    config_free(&cfg);
    /* A token file others may read: refused at its line, without the token. */
    assert_int_equal(load("participants = { a = \"ipc://p.ipc\"; };\n"
                          "admin_token_file = \"loose.token\";\n",
                          &cfg, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "sagad.cfg:2: "));
    assert_non_null(strstr(err, "chmod 600"));
    assert_null(strstr(err, "tok-123"));
    /* Loopback TCP needs a token... */
    assert_int_equal(load("admin_url = \"tcp://127.0.0.1:7000\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n",
                          &cfg, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "sagad.cfg:1: "));
    assert_non_null(strstr(err, "admin_token_file"));
    /* ...and is fine with one. */
    assert_int_equal(
        load("admin_url = \"tcp://127.0.0.1:7000\";\nadmin_token_file = \"admin.token\";\n"
             "participants = { a = \"ipc://p.ipc\"; };\n",
             &cfg, err, sizeof err),
        0);
    config_free(&cfg);
    /* An abstract socket has no file and no permissions: a token is needed too. */
    assert_int_equal(load("admin_url = \"abstract://sagad-admin\";\n"
                          "participants = { a = \"ipc://p.ipc\"; };\n",
                          &cfg, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "admin_token_file"));
    /* A scheme in capitals is still TCP on every interface. */
    assert_int_equal(
        load("admin_url = \"TCP://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
             "participants = { a = \"ipc://p.ipc\"; };\n",
             &cfg, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "refusing to listen on TCP://0.0.0.0:7000"));
    /* Every interface, token but no TLS: refused, saying what to configure. */
    assert_int_equal(
        load("admin_url = \"tcp://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
             "participants = { a = \"ipc://p.ipc\"; };\n",
             &cfg, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "refusing to listen on tcp://0.0.0.0:7000"));
    assert_non_null(strstr(err, "tls.cert_file"));
    /* tls+tcp:// admin without certificates. */
    assert_int_equal(
        load("admin_url = \"tls+tcp://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
             "participants = { a = \"ipc://p.ipc\"; };\n",
             &cfg, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "set tls.cert_file and tls.key_file"));
    /* With them: accepted, paths resolved against the file's directory. */
    assert_int_equal(
        load("admin_url = \"tls+tcp://0.0.0.0:7000\";\nadmin_token_file = \"admin.token\";\n"
             "tls = { ca_file = \"ca.pem\"; cert_file = \"c.pem\"; key_file = \"c.key\"; };\n"
             "participants = { a = \"tls+tcp://127.0.0.1:9\"; };\n",
             &cfg, err, sizeof err),
        0);
    char *want = th_path(g_dir, "c.pem");
    char *real = realpath(g_dir, NULL);
    char *want_real = th_path(real, "c.pem");
    assert_string_equal(cfg.tls_cert_file, want_real);
    free(want);
    free(real);
    free(want_real);
    config_free(&cfg);
    /* A TLS participant needs the CA. */
    assert_int_equal(
        load("participants = {\n  a = \"tls+tcp://127.0.0.1:9\";\n};\n", &cfg, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "sagad.cfg:2: "));
    assert_non_null(strstr(err, "tls.ca_file"));
    /* Half a certificate; unknown names in the tls group. */
    assert_int_equal(
        load("tls = { cert_file = \"c.pem\"; };\nparticipants = { a = \"ipc://p.ipc\"; };\n", &cfg,
             err, sizeof err),
        -1);
    assert_non_null(strstr(err, "key_file"));
    assert_int_equal(
        load("tls = { ca_fil = \"c.pem\"; };\nparticipants = { a = \"ipc://p.ipc\"; };\n", &cfg,
             err, sizeof err),
        -1);
    assert_non_null(strstr(err, "did you mean \"ca_file\""));
}

/* ---- Admin requests ---------------------------------------------------- */

#define UUID "0b7e3c1a-4f6d-4c2e-9a8b-1d2e3f405162"

static char *order_inputs[] = {"customer", "amount"};
static saga_def order_saga = {.name = "order", .inputs = order_inputs, .n_inputs = 2};

/* Packs req (malloc'd buffer, length in *len). */
static uint8_t *pack(const Saga__V1__AdminRequest *req, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&req->base);
    uint8_t *buf = malloc(*len + 1);
    assert_non_null(buf);
    protobuf_c_message_pack(&req->base, buf);
    return buf;
}

/* The status admin_handle_request_bytes gives req under cfg; its text in err. */
static int verdict(const orch_config *cfg, const Saga__V1__AdminRequest *req, char *err,
                   size_t errlen)
{
    size_t len;
    uint8_t *buf = pack(req, &len);
    int status = admin_handle_request_bytes(cfg, buf, len, err, errlen);
    free(buf);
    return status;
}

/* A start of "order" with customer=customer and amount=100. */
#define START_REQUEST(req, tok, customer)                                                          \
    Saga__V1__StartSaga__InputEntry e1_##req = SAGA__V1__START_SAGA__INPUT_ENTRY__INIT;            \
    Saga__V1__StartSaga__InputEntry e2_##req = SAGA__V1__START_SAGA__INPUT_ENTRY__INIT;            \
    Saga__V1__StartSaga__InputEntry *in_##req[] = {&e1_##req, &e2_##req};                          \
    Saga__V1__StartSaga start_##req = SAGA__V1__START_SAGA__INIT;                                  \
    Saga__V1__AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;                                    \
    e1_##req.key = "customer", e1_##req.value = (customer);                                        \
    e2_##req.key = "amount", e2_##req.value = "100";                                               \
    start_##req.type = "order", start_##req.n_input = 2, start_##req.input = in_##req;             \
    req.token = (tok), req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_START, req.start = &start_##req

static void test_admin_token_every_request(void **state)
{
    (void)state;
    char err[512];
    orch_config open = {.sagas = &order_saga, .n_sagas = 1};
    orch_config guarded = {.sagas = &order_saga, .n_sagas = 1, .admin_token = "s3cret-token"};

    START_REQUEST(start, NULL, "alice");
    assert_int_equal(verdict(&open, &start, err, sizeof err), SAGA__V1__ADMIN_STATUS__ADMIN_OK);
    /* Missing, wrong, a prefix, longer: refused with the same text. */
    const char *wrong[] = {NULL, "", "wrong", "s3cret", "s3cret-token2", "S3CRET-TOKEN"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        start.token = (char *)wrong[i];
        assert_int_equal(verdict(&guarded, &start, err, sizeof err),
                         SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED);
        assert_string_equal(err, "missing or wrong admin token");
    }
    start.token = "s3cret-token";
    assert_int_equal(verdict(&guarded, &start, err, sizeof err), SAGA__V1__ADMIN_STATUS__ADMIN_OK);

    /* Every other kind of request, valid in itself: refused without the
     * token, served with it. */
    Saga__V1__GetStatus st = SAGA__V1__GET_STATUS__INIT;
    Saga__V1__GetHistory hi = SAGA__V1__GET_HISTORY__INIT;
    Saga__V1__ListSagas li = SAGA__V1__LIST_SAGAS__INIT;
    Saga__V1__AbortSaga ab = SAGA__V1__ABORT_SAGA__INIT;
    Saga__V1__ResumeSaga re = SAGA__V1__RESUME_SAGA__INIT;
    Saga__V1__GetStats sa = SAGA__V1__GET_STATS__INIT;
    st.saga_id = hi.saga_id = ab.saga_id = re.saga_id = UUID;
    Saga__V1__AdminRequest reqs[6];
    for (int i = 0; i < 6; i++)
        reqs[i] = (Saga__V1__AdminRequest)SAGA__V1__ADMIN_REQUEST__INIT;
    reqs[0].body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATUS, reqs[0].status = &st;
    reqs[1].body_case = SAGA__V1__ADMIN_REQUEST__BODY_HISTORY, reqs[1].history = &hi;
    reqs[2].body_case = SAGA__V1__ADMIN_REQUEST__BODY_LIST, reqs[2].list = &li;
    reqs[3].body_case = SAGA__V1__ADMIN_REQUEST__BODY_ABORT, reqs[3].abort = &ab;
    reqs[4].body_case = SAGA__V1__ADMIN_REQUEST__BODY_RESUME, reqs[4].resume = &re;
    reqs[5].body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATS, reqs[5].stats = &sa;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(verdict(&open, &reqs[i], err, sizeof err),
                         SAGA__V1__ADMIN_STATUS__ADMIN_OK);
        assert_int_equal(verdict(&guarded, &reqs[i], err, sizeof err),
                         SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED);
        reqs[i].token = "nope";
        assert_int_equal(verdict(&guarded, &reqs[i], err, sizeof err),
                         SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED);
        reqs[i].token = "s3cret-token";
        assert_int_equal(verdict(&guarded, &reqs[i], err, sizeof err),
                         SAGA__V1__ADMIN_STATUS__ADMIN_OK);
    }
    /* The token is checked before the rest: a bad request without it is
     * unauthorized, not a bad request (nothing about it leaks). */
    st.saga_id = "not-a-uuid";
    reqs[0].token = NULL;
    assert_int_equal(verdict(&guarded, &reqs[0], err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED);
    reqs[0].token = "s3cret-token";
    assert_int_equal(verdict(&guarded, &reqs[0], err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    /* Bytes that are no AdminRequest, and no command. */
    assert_int_equal(admin_handle_request_bytes(&open, "\xff\xff\xff", 3, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    assert_string_equal(err, "malformed request");
    Saga__V1__AdminRequest empty = SAGA__V1__ADMIN_REQUEST__INIT;
    assert_int_equal(verdict(&open, &empty, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
}

/* Packs req, then turns the first byte 'X' of the buffer into a NUL. */
static uint8_t *pack_with_nul(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len + 1);
    assert_non_null(buf);
    protobuf_c_message_pack(m, buf);
    uint8_t *x = memchr(buf, 'X', *len);
    assert_non_null(x);
    *x = 0;
    return buf;
}

/* StartSaga.deadline_s: up to a year; beyond, refused naming it, before anything is stored. */
static void test_start_deadline_bounded(void **state)
{
    (void)state;
    char err[512];
    orch_config open = {.sagas = &order_saga, .n_sagas = 1};
    START_REQUEST(start, NULL, "alice");
    start.start->deadline_s = ADMIN_MAX_DEADLINE_S;
    assert_int_equal(verdict(&open, &start, err, sizeof err), SAGA__V1__ADMIN_STATUS__ADMIN_OK);
    start.start->deadline_s = ADMIN_MAX_DEADLINE_S + 1;
    assert_int_equal(verdict(&open, &start, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    assert_non_null(strstr(err, "deadline_s 31622401 too large"));
    start.start->deadline_s = UINT32_MAX;
    assert_int_equal(verdict(&open, &start, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
}

static void test_nul_bytes_refused(void **state)
{
    (void)state;
    char err[512];
    size_t len;
    orch_config open = {.sagas = &order_saga, .n_sagas = 1};
    orch_config guarded = {.sagas = &order_saga, .n_sagas = 1, .admin_token = "tok"};

    /* "al\0ice": protobuf-c would hand over "al"; refused instead. */
    START_REQUEST(start, "tok", "alXice");
    uint8_t *buf = pack_with_nul(&start.base, &len);
    assert_string_equal(
        wire_invalid_string_field(&saga__v1__admin_request__descriptor, buf, len, NULL), "value");
    assert_int_equal(admin_handle_request_bytes(&guarded, buf, len, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    assert_non_null(strstr(err, "contains a NUL byte"));
    free(buf);
    /* In a map key, and in the token itself: "tok\0..." must not pass as "tok". */
    START_REQUEST(start2, "tok", "alice");
    start2.start->input[0]->key = "cuXstomer";
    buf = pack_with_nul(&start2.base, &len);
    assert_string_equal(
        wire_invalid_string_field(&saga__v1__admin_request__descriptor, buf, len, NULL), "key");
    free(buf);
    Saga__V1__GetStats sa = SAGA__V1__GET_STATS__INIT;
    Saga__V1__AdminRequest stats = SAGA__V1__ADMIN_REQUEST__INIT;
    stats.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATS, stats.stats = &sa;
    stats.token = "tokXanything";
    buf = pack_with_nul(&stats.base, &len);
    assert_int_equal(admin_handle_request_bytes(&guarded, buf, len, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    assert_non_null(strstr(err, "field 'token' contains a NUL byte"));
    assert_int_equal(admin_handle_request_bytes(&open, buf, len, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    free(buf);
    /* Without a NUL: nothing found. */
    stats.token = "tok";
    buf = pack(&stats, &len);
    assert_null(wire_invalid_string_field(&saga__v1__admin_request__descriptor, buf, len, NULL));
    assert_int_equal(admin_handle_request_bytes(&guarded, buf, len, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_OK);
    free(buf);

    /* A step request (the participant runtime runs the same check). */
    Saga__V1__StepRequest__ParamsEntry pe = SAGA__V1__STEP_REQUEST__PARAMS_ENTRY__INIT;
    Saga__V1__StepRequest__ParamsEntry *pes[] = {&pe};
    StepRequest sr = SAGA__V1__STEP_REQUEST__INIT;
    sr.idempotency_key = "k", sr.saga_id = "s", sr.step = "pay", sr.operation = "charge";
    pe.key = "customer", pe.value = "boXb";
    sr.n_params = 1, sr.params = pes;
    buf = pack_with_nul(&sr.base, &len);
    assert_string_equal(
        wire_invalid_string_field(&saga__v1__step_request__descriptor, buf, len, NULL), "value");
    free(buf);
    sr.operation = "chXarge";
    pe.value = "bob";
    buf = pack_with_nul(&sr.base, &len);
    assert_string_equal(
        wire_invalid_string_field(&saga__v1__step_request__descriptor, buf, len, NULL),
        "operation");
    free(buf);
    /* Not UTF-8 (an invalid byte, an overlong '/'): refused like a NUL, in the
     * token too, before it is compared. */
    const char *why = NULL;
    stats.token = "tok\xff";
    buf = pack(&stats, &len);
    assert_string_equal(
        wire_invalid_string_field(&saga__v1__admin_request__descriptor, buf, len, &why), "token");
    assert_string_equal(why, "is not valid UTF-8");
    assert_int_equal(admin_handle_request_bytes(&open, buf, len, err, sizeof err),
                     SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST);
    assert_non_null(strstr(err, "field 'token' is not valid UTF-8"));
    free(buf);
    sr.operation = "charge";
    sr.idempotency_key = "k-\xc0\xaf";
    size_t n = saga__v1__step_request__get_packed_size(&sr);
    buf = malloc(n);
    assert_non_null(buf);
    len = saga__v1__step_request__pack(&sr, buf);
    assert_string_equal(
        wire_invalid_string_field(&saga__v1__step_request__descriptor, buf, len, &why),
        "idempotency_key");
    free(buf);
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
        cmocka_unit_test(test_url_is_local),
        cmocka_unit_test(test_check_exposure),
        cmocka_unit_test(test_listen_host_names),
        cmocka_unit_test(test_http_url_port),
        cmocka_unit_test(test_socket_dir_ancestors),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_config_token_and_tls),
        cmocka_unit_test(test_admin_token_every_request),
        cmocka_unit_test(test_nul_bytes_refused),
        cmocka_unit_test(test_start_deadline_bounded),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
