/*
 * test_obs_loyalty — loyalty-svc's --metrics-url (participants/loyalty/
 * loyalty_metrics.py, loyalty_http.py) against the C services' contract
 * (docs/OBSERVABILITY.md), from outside, over real HTTP and nng:
 *
 *   - the exposition has exactly payment-svc's metric families, help texts
 *     and histogram buckets (less the ipc listener's restarts, which only the
 *     C runtime has), so one dashboard covers all five participants;
 *   - requests are counted per operation, phase and outcome (OK, a replay, a
 *     refusal, a compensation, a null compensation, a key reused with an
 *     unknown operation, a frame, garbage) and timed once each;
 *   - /healthz: 200 while the database answers, 503 with the reason while the
 *     file is gone, 200 again once it is back;
 *   - the listener's rules: loopback-only URLs (exit 2 otherwise), Host
 *     check, JSON 404/405/431/400, at most 64 connections (the longest idle
 *     goes first) while steps are still answered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include "obs_fixture.h"
#include "tjson.h"
#include "util.h"

#define START_MS 20000 /* generous: a loaded machine, Python's start-up */

typedef struct {
    char *dir, *url, *db, *log;
    int port;
    pid_t pid;
} lfx;

/* Starts loyalty-svc (or prog with its seed) in f->dir with --metrics-url on a free port. */
static int lfx_start(lfx *f, const char *prog, const char *seed)
{
    f->port = obs_free_port();
    char murl[64];
    snprintf(murl, sizeof murl, "http://127.0.0.1:%d", f->port);
    const char *args[] = {
        "--listen", f->url, "--db", f->db, "--metrics-url", murl, seed ? "--seed" : NULL,
        seed,       NULL};
    if (th_spawn(prog, args, NULL, f->log, &f->pid) != 0 ||
        th_wait_dial(f->url, f->pid, START_MS) != 0)
        return -1;
    obs_response r;
    if (obs_get(f->port, "/healthz", NULL, "", START_MS, &r) != 0) /* the HTTP side listens too */
        return -1;
    obs_response_free(&r);
    return 0;
}

static int lfx_init(lfx *f, const char *name)
{
    memset(f, 0, sizeof *f);
    f->dir = th_tempdir();
    if (f->dir == NULL)
        return -1;
    f->url = th_ipc_url(f->dir, name);
    char file[64];
    snprintf(file, sizeof file, "%s.db", name);
    f->db = th_path(f->dir, file);
    snprintf(file, sizeof file, "%s.log", name);
    f->log = th_path(f->dir, file);
    return f->url && f->db && f->log ? 0 : -1;
}

static void lfx_destroy(lfx *f)
{
    int status;
    if (f->pid > 0 && th_stop(f->pid, START_MS, &status) != 0)
        print_message("the service did not stop on SIGTERM\n");
    th_rmtree(f->dir);
    free(f->dir);
    free(f->url);
    free(f->db);
    free(f->log);
}

static int setup(void **state)
{
    lfx *f = calloc(1, sizeof *f);
    if (f == NULL || lfx_init(f, "loyalty") != 0 || lfx_start(f, "loyalty-svc", NULL) != 0) {
        if (f)
            lfx_destroy(f);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

/* Stops it: it must exit 0 on SIGTERM, with its HTTP listener open. */
static int teardown(void **state)
{
    lfx *f = *state;
    int status = 0, rc = -1;
    if (th_stop(f->pid, START_MS, &status) == 0 && th_exited_with(status, 0))
        rc = 0;
    f->pid = 0;
    if (rc != 0) {
        char *log = th_read_file(f->log);
        print_message("loyalty-svc log:\n%s\n", log ? log : "(none)");
        free(log);
    }
    lfx_destroy(f);
    free(f);
    return rc;
}

/* The "# HELP" and "# TYPE" lines of an exposition, with service="..." left out. */
static char *families(const char *text, const char *skip)
{
    size_t cap = strlen(text) + 1, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        const char *found = skip ? strstr(line, skip) : NULL;
        if (strncmp(line, "# ", 2) == 0 && (found == NULL || found >= line + n)) {
            memcpy(out + len, line, n);
            len += n;
        }
        line += n;
    }
    out[len] = '\0';
    return out;
}

/* The le="..." values of the first histogram in text, comma-separated. */
static char *bucket_bounds(const char *text)
{
    char *out = calloc(1, 512);
    assert_non_null(out);
    const char *p = strstr(text, "saga_participant_request_seconds_bucket{");
    assert_non_null(p);
    const char *series_end = strstr(p, ",le=\"");
    assert_non_null(series_end);
    size_t prefix = (size_t)(series_end - p);
    while (p && strncmp(p, "saga_participant_request_seconds_bucket{", 40) == 0) {
        const char *le = strstr(p, ",le=\"");
        if ((size_t)(le - p) != prefix || strncmp(le - prefix, p, prefix) != 0)
            break;
        const char *end = strchr(le + 5, '"');
        strncat(out, le + 5, (size_t)(end - le - 5));
        strcat(out, ",");
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return out;
}

static void test_same_series_as_c_services(void **state)
{
    lfx *f = *state;
    lfx pay;
    assert_int_equal(lfx_init(&pay, "payment"), 0);
    char *seed = th_source_path("participants/seeds/payment.cfg");
    int started = lfx_start(&pay, "payment-svc", seed);
    obs_response lr = {0}, pr = {0};
    int lrc = obs_get(f->port, "/metrics", NULL, "", 5000, &lr);
    int prc = started == 0 ? obs_get(pay.port, "/metrics", NULL, "", 5000, &pr) : -1;
    lfx_destroy(&pay);
    free(seed);
    assert_int_equal(started, 0);
    assert_int_equal(lrc, 0);
    assert_int_equal(prc, 0);
    assert_int_equal(lr.status, 200);
    assert_non_null(strstr(lr.headers, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));

    char *lf = families(lr.body, NULL);
    char *pf = families(pr.body, "saga_participant_listener_restarts_total");
    if (strcmp(lf, pf) != 0)
        print_message("loyalty:\n%s\npayment:\n%s\n", lf, pf);
    assert_string_equal(lf, pf);
    char *lb = bucket_bounds(lr.body), *pb = bucket_bounds(pr.body);
    assert_string_equal(lb, pb);
    assert_string_equal(lb, "0.0001,0.00025,0.0005,0.001,0.0025,0.005,0.01,0.025,0.05,0.1,0.25,"
                            "0.5,1,2.5,5,10,+Inf,");
    /* Every operation from the start, with 0; no "_unknown" before one is used. */
    assert_int_equal((int)obs_metric(lr.body, "saga_participant_requests_total{service=\"loyalty\","
                                              "operation=\"revoke\",phase=\"compensate\","
                                              "outcome=\"SKIPPED\"}"),
                     0);
    assert_int_equal((int)obs_metric(lr.body, "saga_participant_request_seconds_count{service="
                                              "\"loyalty\",operation=\"award\",phase=\"action\"}"),
                     0);
    assert_null(strstr(lr.body, "_unknown"));
    free(lb);
    free(pb);
    free(lf);
    free(pf);
    obs_response_free(&lr);
    obs_response_free(&pr);
}

static StepReply *step(lfx *f, const char *saga, int phase, const char *operation,
                       const char *amount)
{
    char key[128];
    snprintf(key, sizeof key, "%s/points/%s", saga,
             phase == PHASE_ACTION ? "action" : "compensate");
    kvmap params = KVMAP_INIT;
    assert_int_equal(th_kv(&params, "customer", "alice", "amount", amount, NULL), 0);
    StepReply *r = NULL;
    assert_int_equal(th_call(f->url, 10000, key, saga, "points", phase, operation, &params, &r), 0);
    kv_free(&params);
    return r;
}

#define SERIES(op, phase) "{service=\"loyalty\",operation=\"" op "\",phase=\"" phase "\""
#define REQS(op, phase, outcome)                                                                   \
    obs_metric(r.body,                                                                             \
               "saga_participant_requests_total" SERIES(op, phase) ",outcome=\"" outcome "\"}")
#define COUNT(op, phase)                                                                           \
    obs_metric(r.body, "saga_participant_request_seconds_count" SERIES(op, phase) "}")
#define TOTAL(name) obs_metric(r.body, name "{service=\"loyalty\"}")

static void test_counts_by_operation_and_outcome(void **state)
{
    lfx *f = *state;
    char s1[37], s2[37], s3[37], s4[37], s5[37], old[37];
    util_uuid7(s1);
    util_uuid7(s2);
    util_uuid7(s3);
    util_uuid7(s4);
    util_uuid7(s5);
    assert_int_equal(util_uuid7_at(util_wall_ms() - 8LL * 86400 * 1000, old), 0);
    /* An award, its duplicate (replayed, counted under its stored OK) and its revoke. */
    for (int i = 0; i < 2; i++) {
        StepReply *rep = step(f, s1, PHASE_ACTION, "award", "2500");
        assert_int_equal(rep->outcome, OUTCOME_OK);
        assert_int_equal(rep->replayed, i == 1);
        th_reply_free(rep);
    }
    StepReply *rep = step(f, s1, PHASE_COMPENSATE, "revoke", "2500");
    assert_int_equal(rep->outcome, OUTCOME_OK);
    th_reply_free(rep);
    /* A refused award (bad amount), and a revoke whose award never came (SKIPPED). */
    rep = step(f, s2, PHASE_ACTION, "award", "0");
    assert_int_equal(rep->outcome, OUTCOME_REJECTED);
    th_reply_free(rep);
    rep = step(f, s3, PHASE_COMPENSATE, "revoke", "100");
    assert_int_equal(rep->outcome, OUTCOME_SKIPPED);
    th_reply_free(rep);
    /* s1's action key reused with an operation loyalty does not have: CONFLICT, "_unknown". */
    rep = step(f, s1, PHASE_ACTION, "bogus", "2500");
    assert_int_equal(rep->outcome, OUTCOME_CONFLICT);
    th_reply_free(rep);
    /* A saga older than the retention (7 days): CONFLICT, counted as outlived. */
    rep = step(f, old, PHASE_ACTION, "award", "2500");
    assert_int_equal(rep->outcome, OUTCOME_CONFLICT);
    th_reply_free(rep);
    /* A new key with an unknown operation is malformed, not a request. */
    rep = step(f, s5, PHASE_ACTION, "bogus", "2500");
    assert_int_equal(rep->outcome, OUTCOME_REJECTED);
    th_reply_free(rep);
    /* Two awards in one frame, and garbage. */
    kvmap params = KVMAP_INIT;
    assert_int_equal(th_kv(&params, "customer", "bob", "amount", "300", NULL), 0);
    char k4[64], k5[64];
    snprintf(k4, sizeof k4, "%s/points/action", s4);
    snprintf(k5, sizeof k5, "%s/other/action", s4);
    size_t l4, l5, flen, alen = 0;
    uint8_t *m4 = wire_pack_request(k4, s4, "points", PHASE_ACTION, "award", 1, &params, &l4);
    uint8_t *m5 = wire_pack_request(k5, s4, "other", PHASE_ACTION, "award", 1, &params, &l5);
    const uint8_t *parts[] = {m4, m5};
    const size_t lens[] = {l4, l5};
    uint8_t *frame = wire_pack_batch(2, parts, lens, &flen), *answer = NULL;
    th_client c;
    assert_int_equal(th_client_open(&c, f->url, 10000), 0);
    assert_int_equal(th_client_raw(&c, frame, flen, &answer, &alen), 0);
    StepBatch *sb = wire_unpack_batch(answer, alen);
    assert_non_null(sb);
    assert_int_equal(sb->n_items, 2);
    saga__v1__step_batch__free_unpacked(sb, NULL);
    free(answer);
    answer = NULL;
    assert_int_equal(th_client_raw(&c, "\xff\xfe garbage", 10, &answer, &alen), 0);
    th_client_close(&c);
    free(answer);
    free(frame);
    free(m4);
    free(m5);
    kv_free(&params);

    obs_response r;
    assert_int_equal(obs_get(f->port, "/metrics", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal((int)REQS("award", "action", "OK"), 4); /* s1, its replay, the frame's two */
    assert_int_equal((int)REQS("award", "action", "REJECTED"), 1);
    assert_int_equal((int)REQS("award", "action", "RETRY"), 0);
    assert_int_equal((int)REQS("award", "action", "CONFLICT"), 1); /* the outlived saga */
    assert_int_equal((int)REQS("revoke", "compensate", "OK"), 1);
    assert_int_equal((int)REQS("revoke", "compensate", "SKIPPED"), 1);
    assert_int_equal((int)REQS("_unknown", "action", "CONFLICT"), 1);
    assert_int_equal((int)REQS("_unknown", "action", "OK"), 0);
    assert_null(strstr(r.body, "operation=\"_unknown\",phase=\"compensate\""));
    /* Each request timed once; the buckets are cumulative up to +Inf = count. */
    assert_int_equal((int)COUNT("award", "action"), 6);
    assert_int_equal((int)COUNT("revoke", "compensate"), 2);
    assert_int_equal((int)COUNT("_unknown", "action"), 1);
    assert_int_equal((int)obs_metric(r.body, "saga_participant_request_seconds_bucket" SERIES(
                                                 "award", "action") ",le=\"+Inf\"}"),
                     6);
    assert_true(obs_metric(r.body, "saga_participant_request_seconds_bucket" SERIES(
                                       "award", "action") ",le=\"0.0001\"}") <= 6);
    assert_true(obs_metric(r.body, "saga_participant_request_seconds_sum" SERIES(
                                       "award", "action") "}") > 0);
    assert_int_equal((int)TOTAL("saga_participant_effects_total"), 4); /* 3 awards, 1 revoke */
    assert_int_equal((int)TOTAL("saga_participant_replays_total"), 1);
    assert_int_equal((int)TOTAL("saga_participant_conflicts_total"), 1); /* not the outlived */
    assert_int_equal((int)TOTAL("saga_participant_barrier_skips_total"), 1);
    assert_int_equal((int)TOTAL("saga_participant_retries_total"), 0);
    assert_int_equal((int)TOTAL("saga_participant_malformed_total"), 2); /* bogus op, garbage */
    assert_int_equal((int)TOTAL("saga_participant_frames_total"), 1);
    assert_int_equal((int)TOTAL("saga_participant_outlived_retention_total"), 1);
    /* Commits that wrote: s1, its revoke, the refusal, the skip, the frame (the replay, the
     * conflict and the unknown operation store nothing). */
    assert_int_equal((int)TOTAL("saga_participant_syncs_total"), 5);
    assert_true(TOTAL("saga_participant_listener_restarts_total") < 0);
    obs_response_free(&r);
}

static void test_healthz(void **state)
{
    lfx *f = *state;
    obs_response r;
    assert_int_equal(obs_get(f->port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Type: application/json"));
    assert_string_equal(r.body, "{\"status\":\"ok\"}\n");
    obs_response_free(&r);

    /* The file moved away: 503 naming it, while the service keeps its open file. */
    char *moved = th_path(f->dir, "loyalty.db.moved");
    assert_int_equal(rename(f->db, moved), 0);
    int rc = obs_get(f->port, "/healthz", NULL, "", 5000, &r);
    assert_int_equal(rename(moved, f->db), 0); /* first: the teardown needs it back */
    free(moved);
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 503);
    json_t *sick = tj_parse(r.body);
    assert_non_null(sick);
    assert_string_equal(tj_str(sick, "status"), "unavailable");
    assert_non_null(strstr(tj_str(sick, "reason"), "loyalty.db"));
    assert_non_null(strstr(tj_str(sick, "reason"), "unable to open database file"));
    json_decref(sick);
    obs_response_free(&r);

    assert_int_equal(obs_get(f->port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    /* HEAD: GET's status and headers, no body. */
    assert_int_equal(obs_request("HEAD", f->port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "Content-Length: 16"));
    assert_string_equal(r.body, "");
    obs_response_free(&r);
    /* And the service still serves steps. */
    char saga[37];
    util_uuid7(saga);
    StepReply *rep = step(f, saga, PHASE_ACTION, "award", "100");
    assert_int_equal(rep->outcome, OUTCOME_OK);
    th_reply_free(rep);
}

/* A JSON refusal {"error": ..., "status": status}. */
static void assert_json_refusal(const obs_response *r, int status)
{
    assert_int_equal(r->status, status);
    assert_non_null(strstr(r->headers, "Content-Type: application/json"));
    json_t *o = tj_parse(r->body);
    assert_non_null(o);
    assert_non_null(tj_str(o, "error"));
    assert_int_equal(json_integer_value(json_object_get(o, "status")), status);
    json_decref(o);
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {20, 0}; /* a hang fails the test rather than stalling it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Has the server closed fd (EOF or reset) within wait_ms? */
static int peer_closed(int fd, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b;
    return poll(&p, 1, wait_ms) == 1 && recv(fd, &b, 1, MSG_DONTWAIT) <= 0;
}

/* Sends req on a new connection; the whole answer until the server closes (malloc'd). */
static char *exchange(int port, const char *req, size_t len)
{
    int fd = connect_port(port);
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    char *buf = calloc(1, 65536);
    size_t used = 0;
    ssize_t n;
    while (used < 65535 && (n = recv(fd, buf + used, 65535 - used, 0)) > 0)
        used += (size_t)n;
    close(fd);
    return buf;
}

/* GET /healthz on the kept-alive fd and reads its whole answer (the body ends the JSON). */
static void keepalive_get(int fd)
{
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)(sizeof req - 1));
    char buf[2048];
    size_t used = 0;
    while (used < sizeof buf - 1) {
        ssize_t n = recv(fd, buf + used, sizeof buf - 1 - used, 0);
        assert_true(n > 0);
        used += (size_t)n;
        buf[used] = '\0';
        if (strstr(buf, "{\"status\":\"ok\"}\n") != NULL)
            break;
    }
    assert_non_null(strstr(buf, "HTTP/1.1 200 "));
    assert_non_null(strstr(buf, "Connection: keep-alive"));
}

static void test_http_rules(void **state)
{
    lfx *f = *state;
    obs_response r;
    assert_int_equal(obs_get(f->port, "/nope", NULL, "", 5000, &r), 0);
    assert_json_refusal(&r, 404);
    obs_response_free(&r);
    assert_int_equal(obs_request("POST", f->port, "/metrics", NULL, "", 5000, &r), 0);
    assert_json_refusal(&r, 405);
    assert_non_null(strstr(r.headers, "Allow: GET, HEAD"));
    obs_response_free(&r);
    /* DNS rebinding: a name other than localhost or the configured host. */
    assert_int_equal(obs_get(f->port, "/metrics", "attacker.example:80", "", 5000, &r), 0);
    assert_json_refusal(&r, 403);
    obs_response_free(&r);
    assert_int_equal(obs_get(f->port, "/healthz", "localhost:1", "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    /* No token on a service's listener (loopback only): a bearer changes nothing. */
    assert_int_equal(obs_get(f->port, "/metrics", NULL, "Authorization: Bearer x", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);

    /* 8 KiB of header without its end: 431 (no more than that: bytes left unread would make
     * the close a reset, which can discard the answer); a body: 400; both JSON. */
    size_t big = 8192;
    char *req = malloc(big);
    memcpy(req, "GET /metrics HTTP/1.1\r\nX-Pad: ", 30);
    memset(req + 30, 'a', big - 30);
    char *answer = exchange(f->port, req, big);
    assert_true(strncmp(answer, "HTTP/1.1 431 ", 13) == 0);
    assert_non_null(
        strstr(answer, "{\"error\":\"request header larger than 8 KiB\",\"status\":431}"));
    free(answer);
    free(req);
    const char *body_req =
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc";
    answer = exchange(f->port, body_req, strlen(body_req));
    assert_true(strncmp(answer, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(strstr(answer, "\"status\":400"));
    free(answer);

    /* 64 kept-alive connections, each answered once and now waiting for its next request
     * (60 s), fds[0] answered again last: a 65th is served, and fds[1], which has waited
     * longest, is closed for it; not fds[0], the oldest connection. Steps are answered all
     * the while. */
    int fds[64];
    for (int i = 0; i < 64; i++) {
        fds[i] = connect_port(f->port);
        keepalive_get(fds[i]);
    }
    keepalive_get(fds[0]);
    char saga[37];
    util_uuid7(saga);
    StepReply *rep = step(f, saga, PHASE_ACTION, "award", "100");
    assert_int_equal(rep->outcome, OUTCOME_OK);
    th_reply_free(rep);
    assert_int_equal(obs_get(f->port, "/healthz", NULL, "", 5000, &r), 0);
    assert_int_equal(r.status, 200);
    obs_response_free(&r);
    /* The eviction came before the 65th was answered: the close is on its way. */
    assert_true(peer_closed(fds[1], 10000));
    int open_ones = 0;
    for (int i = 0; i < 64; i++)
        open_ones += i != 1 && !peer_closed(fds[i], 0);
    assert_int_equal(open_ones, 63); /* only the longest idle went */
    for (int i = 0; i < 64; i++)
        close(fds[i]);
}

/* --metrics-url must be loopback http:// with a port, as for the C services: exit 2. */
static void test_metrics_url_refused(void **state)
{
    lfx *f = *state;
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"http://0.0.0.0:9", "which other hosts can reach"},
        {"http://192.0.2.1:9", "which other hosts can reach"},
        {"https://127.0.0.1:9", "no certificate and key"},
        {"http://127.0.0.1", "needs a port"},
        {"tcp://127.0.0.1:9", "is not an http:// or https:// URL"},
    };
    char *log = th_path(f->dir, "refused.log");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[] = {"--listen", f->url, "--db", f->db, "--metrics-url", bad[i].url, NULL};
        pid_t pid;
        int status;
        unlink(log);
        assert_int_equal(th_spawn("loyalty-svc", args, NULL, log, &pid), 0);
        assert_int_equal(th_wait_exit(pid, START_MS, &status), 0);
        char *out = th_read_file(log);
        if (!th_exited_with(status, 2) || out == NULL || strstr(out, bad[i].why) == NULL)
            print_message("%s: %s\n", bad[i].url, out ? out : "(no output)");
        assert_true(th_exited_with(status, 2));
        assert_non_null(strstr(out, bad[i].why));
        free(out);
    }
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_series_as_c_services, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_by_operation_and_outcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_url_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
