/*
 * carrier-sim — a simulated carrier for the tests of effects outside the
 * database: the external system shipping-svc calls with --carrier-url
 * (protocol in participants/shipping/carrier.h). It keeps, in memory, one
 * booking per idempotency key and one cancellation per key, and counts
 * every call, so a test can tell "one effect, called twice" from "two
 * effects".
 *
 *   carrier-sim URL [REFUSED_DESTINATION]
 *
 *   BOOK <key> <dest>      new key: a booking BK-<n> (its effect); a key seen
 *                          before: the same answer again, no new booking;
 *                          dest = REFUSED_DESTINATION: ERR, no booking
 *   CANCEL <key> <ref>     new key: cancels booking ref (ERR if unknown);
 *                          a key seen before: the same answer again
 *   STATS                  OK bookings=<n> cancellations=<n> calls=<n>
 *                          (calls: BOOK and CANCEL requests received)
 * Runs until SIGTERM/SIGINT.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_KEYS 1024

static volatile sig_atomic_t sim_stop;

static void sim_on_signal(int sig)
{
    (void)sig;
    sim_stop = 1;
}

typedef struct {
    char key[64];
    char answer[128];
} sim_entry;

static sim_entry sim_seen[SIM_KEYS];
static int sim_n, sim_bookings, sim_cancellations, sim_calls;
static char sim_booked[SIM_KEYS][32]; /* refs of live bookings */

static const char *sim_find(const char *verb, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "%s:%s", verb, key);
    for (int i = 0; i < sim_n; i++)
        if (strcmp(sim_seen[i].key, k) == 0)
            return sim_seen[i].answer;
    return NULL;
}

static const char *sim_remember(const char *verb, const char *key, const char *answer)
{
    if (sim_n == SIM_KEYS)
        return "ERR carrier-sim is full";
    snprintf(sim_seen[sim_n].key, sizeof sim_seen[sim_n].key, "%s:%s", verb, key);
    snprintf(sim_seen[sim_n].answer, sizeof sim_seen[sim_n].answer, "%s", answer);
    return sim_seen[sim_n++].answer;
}

static const char *sim_answer(char *req, const char *refused)
{
    static char out[128];
    char *save = NULL, *verb = strtok_r(req, " ", &save);
    char *key = verb ? strtok_r(NULL, " ", &save) : NULL;
    char *arg = key ? strtok_r(NULL, "", &save) : NULL;
    if (verb && strcmp(verb, "STATS") == 0) {
        snprintf(out, sizeof out, "OK bookings=%d cancellations=%d calls=%d", sim_bookings,
                 sim_cancellations, sim_calls);
        return out;
    }
    if (verb == NULL || key == NULL || arg == NULL || strlen(key) > 40)
        return "ERR malformed request";
    sim_calls++;
    const char *seen = sim_find(verb, key);
    if (seen != NULL)
        return seen;
    if (strcmp(verb, "BOOK") == 0) {
        if (refused && strcmp(arg, refused) == 0)
            return sim_remember(verb, key, "ERR destination not served by the carrier");
        snprintf(out, sizeof out, "OK BK-%d", ++sim_bookings);
        snprintf(sim_booked[sim_bookings % SIM_KEYS], sizeof sim_booked[0], "BK-%d", sim_bookings);
        return sim_remember(verb, key, out);
    }
    if (strcmp(verb, "CANCEL") == 0) {
        for (int i = 0; i < SIM_KEYS; i++) {
            if (sim_booked[i][0] != '\0' && strcmp(sim_booked[i], arg) == 0) {
                sim_booked[i][0] = '\0';
                sim_cancellations++;
                snprintf(out, sizeof out, "OK %s", arg);
                return sim_remember(verb, key, out);
            }
        }
        return sim_remember(verb, key, "ERR unknown booking");
    }
    return "ERR unknown verb";
}

int main(int argc, char **argv)
{
    nng_socket s;
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: carrier-sim URL [REFUSED_DESTINATION]\n");
        return 2;
    }
    signal(SIGTERM, sim_on_signal);
    signal(SIGINT, sim_on_signal);
    if (nng_rep0_open(&s) != 0 || nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 100) != 0 ||
        nng_listen(s, argv[1], NULL, 0) != 0) {
        fprintf(stderr, "carrier-sim: cannot listen on %s\n", argv[1]);
        return 1;
    }
    while (!sim_stop) {
        char *buf = NULL, req[256];
        size_t len = 0;
        if (nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) != 0)
            continue;
        snprintf(req, sizeof req, "%.*s", (int)(len < 255 ? len : 255), buf);
        nng_free(buf, len);
        const char *answer = sim_answer(req, argc == 3 ? argv[2] : NULL);
        nng_send(s, (void *)answer, strlen(answer), 0);
    }
    nng_close(s);
    return 0;
}
