/*
 * fuzz_admin — sagad's admin request handler on untrusted bytes:
 * admin_handle_request_bytes (decode, NUL check, token, limits, validation),
 * the function the admin socket's receive path runs before anything reaches
 * the engine or the store.
 *
 * Input: one AdminRequest as it would arrive on the socket (the seed corpus
 * holds valid requests encoded with protoc --encode from text format). Each
 * input is checked twice, against a configuration with an admin token and
 * against one without, and the answer must be consistent:
 *   - a status of proto/admin.proto, with a reason whenever it is not OK;
 *   - without a token configured, never ADMIN_UNAUTHORIZED;
 *   - with one, ADMIN_OK only when the request decodes, carries exactly
 *     that token, and is accepted without the token too.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "admin.pb-c.h"
#include "config.h"
#include "log.h"

#define TOKEN "fuzz-token"

static char *saga_inputs[] = {"customer", "amount"};
static saga_def saga = {.name = "order", .inputs = saga_inputs, .n_inputs = 2};
static orch_config with_token = {.sagas = &saga, .n_sagas = 1, .admin_token = TOKEN};
static orch_config without_token = {.sagas = &saga, .n_sagas = 1};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR); /* the handler logs nothing itself; keep it that way */
    return 0;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_admin: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    int open = admin_handle_request_bytes(&without_token, data, size, err, sizeof err);
    check(open >= SAGA__V1__ADMIN_STATUS__ADMIN_OK &&
              open <= SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED,
          "status out of range");
    check(open != SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED, "unauthorized without a token");
    check(open == SAGA__V1__ADMIN_STATUS__ADMIN_OK || err[0] != '\0', "refused without a reason");

    int guarded = admin_handle_request_bytes(&with_token, data, size, err, sizeof err);
    check(guarded == SAGA__V1__ADMIN_STATUS__ADMIN_OK || err[0] != '\0',
          "refused without a reason (token)");
    Saga__V1__AdminRequest *req = saga__v1__admin_request__unpack(NULL, size, data);
    if (guarded == SAGA__V1__ADMIN_STATUS__ADMIN_OK) {
        check(req != NULL, "accepted bytes that do not decode");
        check(req->token != NULL && strcmp(req->token, TOKEN) == 0, "accepted a wrong token");
        check(open == SAGA__V1__ADMIN_STATUS__ADMIN_OK, "token changed the verdict");
    }
    if (req != NULL)
        saga__v1__admin_request__free_unpacked(req, NULL);
    return 0;
}
