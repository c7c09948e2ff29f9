/*
 * broken-participant — a deliberately non-conforming saga.v1 participant,
 * for test_conformance only: it proves that participant-conformance catches
 * the defects it claims to catch (a kit that passes everything would be
 * worthless).
 *
 *   broken-participant URL MODE
 *
 * MODE picks the defect:
 *   no-replay  every well-formed request runs a new "effect": a fresh id,
 *              replayed = false, even for a key seen before (no idempotency)
 *   no-fence   keys are remembered and replayed (in memory), but there is
 *              no barrier: a compensation whose action never ran is OK,
 *              and so is the late action after it
 * Anything that does not decode as a StepRequest is answered REJECTED, so
 * the hostile rules pass and only the defect shows. Frames are not
 * understood (answered REJECTED). Runs until SIGTERM/SIGINT.
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "wire.h"

#define BP_KEYS_MAX 4096

static volatile sig_atomic_t bp_stop;

static void bp_on_signal(int sig)
{
    (void)sig;
    bp_stop = 1;
}

/* Stored replies of no-replay mode's opposite: key -> packed reply. */
static struct {
    char *key;
    uint8_t *reply;
    size_t len;
} bp_store[BP_KEYS_MAX];
static size_t bp_n;

static uint8_t *bp_answer(const uint8_t *msg, size_t len, int no_fence, size_t *out_len)
{
    static unsigned long effects;
    StepRequest *req = len <= WIRE_MAX_MSG ? saga__v1__step_request__unpack(NULL, len, msg) : NULL;
    if (req == NULL || wire_is_batch(msg, len)) {
        if (req)
            saga__v1__step_request__free_unpacked(req, NULL);
        return wire_pack_reply("", OUTCOME_REJECTED, 0, NULL, "malformed message", out_len);
    }
    if (no_fence) {
        for (size_t i = 0; i < bp_n; i++) {
            if (strcmp(bp_store[i].key, req->idempotency_key) == 0) {
                StepReply *r =
                    saga__v1__step_reply__unpack(NULL, bp_store[i].len, bp_store[i].reply);
                uint8_t *out = NULL;
                if (r != NULL) {
                    r->replayed = 1;
                    *out_len = saga__v1__step_reply__get_packed_size(r);
                    out = malloc(*out_len ? *out_len : 1);
                    if (out)
                        saga__v1__step_reply__pack(r, out);
                    saga__v1__step_reply__free_unpacked(r, NULL);
                }
                saga__v1__step_request__free_unpacked(req, NULL);
                return out;
            }
        }
    }
    kvmap result = KVMAP_INIT;
    char id[32];
    snprintf(id, sizeof id, "effect-%lu", ++effects);
    kv_set(&result, "effect_id", id);
    uint8_t *out = wire_pack_reply(req->idempotency_key, OUTCOME_OK, 0, &result, NULL, out_len);
    kv_free(&result);
    if (no_fence && out != NULL && bp_n < BP_KEYS_MAX) {
        bp_store[bp_n].key = strdup(req->idempotency_key);
        bp_store[bp_n].reply = malloc(*out_len);
        if (bp_store[bp_n].key && bp_store[bp_n].reply) {
            memcpy(bp_store[bp_n].reply, out, *out_len);
            bp_store[bp_n].len = *out_len;
            bp_n++;
        }
    }
    saga__v1__step_request__free_unpacked(req, NULL);
    return out;
}

int main(int argc, char **argv)
{
    nng_socket s;
    if (argc != 3 || (strcmp(argv[2], "no-replay") != 0 && strcmp(argv[2], "no-fence") != 0)) {
        fprintf(stderr, "usage: broken-participant URL no-replay|no-fence\n");
        return 2;
    }
    int no_fence = strcmp(argv[2], "no-fence") == 0;
    signal(SIGTERM, bp_on_signal);
    signal(SIGINT, bp_on_signal);
    if (nng_rep0_open(&s) != 0 || nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 100) != 0 ||
        nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, WIRE_RECV_MAX(WIRE_MAX_MSG)) != 0 ||
        nng_listen(s, argv[1], NULL, 0) != 0) {
        fprintf(stderr, "broken-participant: cannot listen on %s\n", argv[1]);
        return 1;
    }
    while (!bp_stop) {
        void *buf = NULL;
        size_t len = 0, out_len = 0;
        if (nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) != 0)
            continue;
        uint8_t *out = bp_answer(buf, len, no_fence, &out_len);
        nng_free(buf, len);
        if (out != NULL)
            nng_send(s, out, out_len, 0);
        free(out);
    }
    nng_close(s);
    for (size_t i = 0; i < bp_n; i++) {
        free(bp_store[i].key);
        free(bp_store[i].reply);
    }
    return 0;
}
