/*
 * The ipc listener watchdog (common/listener.c): raw
 * connections closed at once (a health check, a dialer killed mid-connect)
 * leave the nng 1.5.2 ipc listener deaf; the watchdog notices within a few
 * seconds and restarts it, so a real request is still answered within its
 * timeout. The test requires the defect to have struck (the participant's
 * listener_restarts counter), twice.
 *
 * A test program of its own because the stuck pipes nng strands inside the
 * closed listener are never freed by nng: the leak checker is told to
 * ignore allocations made inside libnng for this program only (see
 * CMakeLists.txt), while every other runtime test keeps full leak checks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "bank.h"
#include "util.h"

/* Sends msg from a fresh req0 socket and decodes the reply; returns an nng error. */
static int call(const char *url, const uint8_t *msg, size_t len, int timeout_ms, bank_reply *out)
{
    nng_socket s;
    void *buf = NULL;
    size_t n = 0;
    int rv = nng_req0_open(&s);
    if (rv != 0)
        return rv;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
    if ((rv = nng_dial(s, url, NULL, 0)) == 0 && (rv = nng_send(s, (void *)msg, len, 0)) == 0 &&
        (rv = nng_recv(s, &buf, &n, NNG_FLAG_ALLOC)) == 0) {
        rv = bank_decode(buf, n, out) == 0 ? 0 : NNG_EPROTO;
        nng_free(buf, n);
    }
    nng_close(s);
    return rv;
}

/* Connects to the socket file and closes at once, without a byte of SP. */
static void connect_and_close(const char *path)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof addr.sun_path);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    close(fd);
}

/*
 * Abuse rounds go on until the watchdog has restarted the deaf listener
 * twice (the defect strikes about one round in two here), each round ending
 * with a real request that must be answered: the test fails if the defect
 * was never provoked, so it cannot pass without exercising the watchdog.
 */
#define ROUNDS_MAX      40
#define RESTARTS_WANTED 2

static void test_listener_survives_connect_close(void **state)
{
    bank_dir dir;
    bank_state st = {0};
    char err[256] = "";
    assert_int_equal(bank_dir_make(&dir), 0);
    pt_options o = {.name = "bank", .listen_url = dir.ipc};
    participant *p = bank_open(&o, dir.db, &st);
    assert_non_null(p);
    if (pt_start(p, err, sizeof err) != 0)
        fail_msg("pt_start: %s", err);

    int rounds = 0;
    pt_stats stats = {0};
    while (stats.listener_restarts < RESTARTS_WANTED && rounds < ROUNDS_MAX) {
        for (int i = 0; i < 3; i++)
            connect_and_close(dir.ipc + strlen("ipc://"));
        char key[16];
        snprintf(key, sizeof key, "k%d", rounds);
        bank_req q = {key, key, "pay", PHASE_ACTION, "debit", "alice", "1"};
        size_t len;
        uint8_t *msg = bank_pack(&q, &len);
        bank_reply r;
        int64_t t0 = util_mono_ms();
        int rv = call(dir.ipc, msg, len, 9000, &r);
        free(msg);
        if (rv != 0)
            fail_msg("round %d: no answer: %s", rounds, nng_strerror(rv));
        pt_get_stats(p, &stats);
        print_message("round %d answered after %lld ms, %llu listener restarts\n", rounds,
                      (long long)(util_mono_ms() - t0),
                      (unsigned long long)stats.listener_restarts);
        assert_int_equal(r.outcome, OUTCOME_OK);
        assert_false(r.replayed);
        bank_reply_free(&r);
        rounds++;
    }
    if (stats.listener_restarts < RESTARTS_WANTED)
        fail_msg("the listener went deaf %llu time(s) in %d rounds: the watchdog was not exercised",
                 (unsigned long long)stats.listener_restarts, rounds);
    pt_stop(p);
    assert_int_equal(bank_balance(p, "alice"), 100 - rounds);
    assert_int_equal(st.debit_calls, rounds);
    pt_destroy(p);
    bank_dir_remove(&dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listener_survives_connect_close),
    };
    return cmocka_run_group_tests_name("runtime_listener", tests, NULL, NULL);
}
