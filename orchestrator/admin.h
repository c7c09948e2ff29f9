/*
 * admin — sagad's admin API server (proto/admin.proto over nng REQ/REP).
 *
 * sagad's main calls admin_start once the engine exists (engine_create
 * creates and migrates the database, which the admin server then opens a
 * second, read-only handle on) and admin_stop before engine_stop. sagactl is
 * the usual client; any nng/SP + protobuf client may speak the protocol.
 *
 * Requests and who answers them:
 *   start, abort, resume  validated here, then handed to the engine
 *                         (engine_start_saga, ...); the reply is sent from
 *                         the engine's done callback, i.e. only once the
 *                         outcome is durable (save before act).
 *   status, history,      answered from the read-only store handle (SQLite
 *   list, stats           WAL lets it read while the engine writes); stats
 *                         adds the engine's counters.
 * Anything malformed or out of limits is answered ADMIN_BAD_REQUEST, and a
 * request without the configured admin token ADMIN_UNAUTHORIZED; neither
 * reaches the engine or the store. The limits below are part of the protocol: sagactl
 * uses the same constants.
 */
#ifndef SAGA_ADMIN_H
#define SAGA_ADMIN_H

#include <stddef.h>

#include "config.h"
#include "engine.h"

#define ADMIN_CONTEXTS        16                 /* requests served concurrently */
#define ADMIN_MAX_REQUEST     (256 * 1024)       /* bytes in one AdminRequest, SP header aside */
#define ADMIN_MAX_REPLY       (16 * 1024 * 1024) /* bytes in one AdminReply */
#define ADMIN_MAX_CLIENT_KEY  255                /* bytes in StartSaga.client_key */
#define ADMIN_MAX_INPUTS      64                 /* entries in StartSaga.input */
#define ADMIN_MAX_INPUT_NAME  64                 /* bytes in an input name */
#define ADMIN_MAX_INPUT_VALUE 4096               /* bytes in an input value */
/* Bytes of all input names and values together: the input travels in step
 * requests, which must stay under WIRE_MAX_MSG with the results added. */
#define ADMIN_MAX_INPUT_TOTAL (32 * 1024)
#define ADMIN_MAX_REASON      1024          /* bytes in AbortSaga.reason */
#define ADMIN_MAX_DEADLINE_S  (366 * 86400) /* StartSaga.deadline_s: a year */
#define ADMIN_MAX_TYPE        255  /* bytes in a saga type (StartSaga, ListSagas filters) */
#define ADMIN_LIST_DEFAULT    100  /* ListSagas.limit == 0 */
#define ADMIN_LIST_MAX        1000 /* larger limits are lowered to this */
#define ADMIN_HISTORY_MAX     1000 /* events in a history reply: the oldest after after_seq */
/* Bytes of params and results (keys and values) one history reply carries at
 * most: 1000 events with 32 KiB of input each would pass ADMIN_MAX_REPLY.
 * The events past it have none (their step's status still shows them). */
#define ADMIN_HISTORY_DATA_MAX (4 * 1024 * 1024)
#define ADMIN_SUMMARY_ERROR    256 /* bytes of last_error kept in a list row */

/* StartSaga.start_at_ms: at most this far back (a clock apart: it starts
 * now), and this far ahead (ten years). */
#define ADMIN_START_AT_PAST_MS   (60 * 1000LL)
#define ADMIN_MAX_START_AHEAD_MS (3660 * 86400 * 1000LL)

typedef struct admin_server admin_server;

/*
 * Listens on cfg->admin_url (an ipc:// socket file is made owner-only, 0600;
 * a tls+tcp:// URL gets the certificate and key of cfg's tls group)
 * and serves requests until admin_stop. cfg and e must outlive the server.
 * Returns NULL with a reason in err on failure (nothing is left running).
 */
admin_server *admin_start(const orch_config *cfg, engine *e, char *err, size_t errlen);

/*
 * Decodes and checks len bytes as the server does on receipt, without any
 * network, store or engine: well-formed (protobuf, no NUL byte in a string
 * field, a command present), authorized (cfg->admin_token, compared in
 * constant time), within every limit above, and for a start, a configured
 * saga type with all its inputs. Returns the AdminStatus the server answers
 * before acting: ADMIN_OK (0) when it would serve the request, otherwise the
 * status with the reply's text in err. Used by tests and fuzz_admin.
 */
int admin_handle_request_bytes(const orch_config *cfg, const void *buf, size_t len, char *err,
                               size_t errlen);

/*
 * Stops listening, drops requests not answered yet, waits for the engine to
 * call back every command already handed to it (the engine must still be
 * running, or have been stopped after answering them: engine_done_fn is
 * called exactly once), then frees everything. Safe on NULL.
 */
void admin_stop(admin_server *srv);

/*
 * Serves one read request (status, history, list or stats) exactly as the
 * admin socket does, from st (read-only, used by the caller's thread only),
 * the engine's catalog and counters, and returns the reply, unpacked (free
 * it with saga__v1__admin_reply__free_unpacked); NULL when out of memory.
 * For sagad's HTTP API (obs_http.h), so that both serve the same documents
 * (saga_json.h) from the same reads.
 */
struct Saga__V1__AdminRequest;
struct Saga__V1__AdminReply;
struct store;
struct Saga__V1__AdminReply *admin_read(engine *e, struct store *st,
                                        const struct Saga__V1__AdminRequest *req);

#endif
