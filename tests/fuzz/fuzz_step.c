/*
 * fuzz_step — the participant runtime's step handler on untrusted bytes:
 * decode, validation, fingerprint, barrier and batch (pt_process_batch, the
 * function the socket path calls) with a toy handler, on a scratch database.
 *
 * Input: up to 8 messages, each a 2-byte big-endian length then that many
 * bytes (a short tail is one more message), processed as ONE batch, so the
 * fuzzer also reaches duplicate keys, conflicts and compensations within a
 * batch. An input that starts with the frame mark (WIRE_BATCH_MARK) is
 * instead one message as the socket receives it: a frame whose items run as
 * one batch and whose answer must be a frame of as many replies, or, when
 * it does not unpack, one message answered on its own. The database
 * persists across inputs (reset every 512 runs), so later inputs meet the
 * records of earlier ones, as a long-running service would. Every reply
 * must decode as a StepReply.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "participant.h"
#include "saga.pb-c.h"
#include "wire.h"

#define MAX_MSGS    8
#define RESET_EVERY 512

static participant *p;
static char dir[] = "/tmp/saga-fuzz-step-XXXXXX";
static char db[sizeof dir + 16];
static unsigned runs;

static int toy_do(sqlite3 *d, const pt_request *req, pt_reply *reply, void *arg)
{
    (void)arg;
    const char *who = NULL;
    int64_t amount = 0;
    if (pt_param_str(req, reply, "who", &who) != 0 ||
        pt_param_i64(req, reply, "amount", 1, 1000, &amount) != 0)
        return PT_REJECTED;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(d, "INSERT INTO toy (who, amount) VALUES (?1, ?2)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, who, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, amount);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK)
        return pt_db_error(reply, d);
    if (amount == 13)
        return pt_reject(reply, "unlucky %s", who);
    pt_result_set(reply, "toy_id", who);
    return pt_result_set_i64(reply, "amount", amount) == 0 ? PT_OK : PT_RETRY;
}

static int toy_undo(sqlite3 *d, const pt_request *req, pt_reply *reply, void *arg)
{
    (void)arg;
    const char *id = req->action_result ? kv_get(req->action_result, "toy_id") : NULL;
    if (id == NULL)
        return pt_reject(reply, "no toy_id");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d, "DELETE FROM toy WHERE who = ?1", -1, &st, NULL) != SQLITE_OK)
        return pt_db_error(reply, d);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PT_OK : pt_db_error(reply, d);
}

static void open_participant(void)
{
    char err[256];
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    pt_destroy(p);
    for (size_t i = 0; i < 3; i++) {
        char f[sizeof db + 8];
        snprintf(f, sizeof f, "%s%s", db, suffixes[i]);
        unlink(f);
    }
    pt_options o = {.name = "fuzz", .db_path = db, .synchronous_off = 1};
    p = pt_create(&o, err, sizeof err);
    if (p == NULL ||
        sqlite3_exec(pt_db(p), "CREATE TABLE IF NOT EXISTS toy (who TEXT, amount INTEGER)", NULL,
                     NULL, NULL) != SQLITE_OK ||
        pt_register(p, "do", toy_do, "undo", toy_undo, NULL) != 0) {
        fprintf(stderr, "fuzz_step: cannot set up: %s\n", err);
        abort();
    }
}

static void cleanup(void)
{
    pt_destroy(p);
    p = NULL;
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char f[sizeof db + 8];
        snprintf(f, sizeof f, "%s%s", db, suffixes[i]);
        unlink(f);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR); /* malformed requests are logged as warnings: keep quiet */
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(db, sizeof db, "%s/fuzz.db", dir);
    open_participant();
    atexit(cleanup);
    return 0;
}

/* Every reply decodes; frees them. */
static void check_replies(size_t n, uint8_t **replies, const size_t *reply_lens)
{
    for (size_t i = 0; i < n; i++) {
        Saga__V1__StepReply *r = saga__v1__step_reply__unpack(NULL, reply_lens[i], replies[i]);
        if (r == NULL) {
            fprintf(stderr, "fuzz_step: reply %zu does not decode\n", i);
            abort();
        }
        saga__v1__step_reply__free_unpacked(r, NULL);
        free(replies[i]);
    }
}

/* A message as the socket path sees it (participant.c): a frame, or one request. */
static void one_message(const uint8_t *data, size_t size)
{
    StepBatch *b = wire_unpack_batch(data, size);
    const uint8_t *msgs[WIRE_BATCH_MAX];
    size_t lens[WIRE_BATCH_MAX], n = 1, answer_len = 0;
    uint8_t *replies[WIRE_BATCH_MAX];
    size_t reply_lens[WIRE_BATCH_MAX];
    msgs[0] = data;
    lens[0] = size;
    if (b != NULL) {
        n = b->n_items;
        for (size_t i = 0; i < n; i++) {
            msgs[i] = b->items[i].data;
            lens[i] = b->items[i].len;
        }
    }
    if (pt_process_batch(p, n, msgs, lens, replies, reply_lens) == 0) {
        if (b != NULL) {
            uint8_t *answer =
                wire_pack_batch(n, (const uint8_t *const *)replies, reply_lens, &answer_len);
            StepBatch *back = answer ? wire_unpack_batch(answer, answer_len) : NULL;
            if (answer != NULL && (back == NULL || back->n_items != n)) {
                fprintf(stderr, "fuzz_step: the answer frame does not unpack\n");
                abort();
            }
            if (back != NULL)
                saga__v1__step_batch__free_unpacked(back, NULL);
            free(answer);
        }
        check_replies(n, replies, reply_lens);
    }
    if (b != NULL)
        saga__v1__step_batch__free_unpacked(b, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *msgs[MAX_MSGS];
    size_t lens[MAX_MSGS], n = 0;
    uint8_t *replies[MAX_MSGS];
    size_t reply_lens[MAX_MSGS];

    if (++runs % RESET_EVERY == 0)
        open_participant();
    if (wire_is_batch(data, size)) {
        one_message(data, size);
        return 0;
    }
    while (size > 0 && n < MAX_MSGS) {
        size_t len = size >= 2 ? (size_t)data[0] << 8 | data[1] : 0;
        size_t skip = size >= 2 ? 2 : size;
        data += skip;
        size -= skip;
        if (len > size)
            len = size;
        msgs[n] = data;
        lens[n++] = len;
        data += len;
        size -= len;
    }
    if (n == 0)
        return 0;
    if (pt_process_batch(p, n, msgs, lens, replies, reply_lens) != 0)
        return 0; /* out of memory */
    check_replies(n, replies, reply_lens);
    return 0;
}
