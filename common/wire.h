/*
 * wire — limits and conversions for the saga.v1 messages (proto/saga.proto).
 *
 * Both ends of the step protocol use these so that what sagad sends always
 * passes what a participant accepts. Everything decoded from the network is
 * untrusted until wire_check_request() has accepted it.
 */
#ifndef SAGA_WIRE_H
#define SAGA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "kv.h"
#include "saga.pb-c.h"

#define WIRE_MAX_MSG     (64 * 1024) /* bytes in one request or reply (the SP header not counted) */
#define WIRE_MAX_KEY     255         /* bytes in an idempotency key */
#define WIRE_MAX_PARAMS  64          /* entries in params or result */
#define WIRE_MAX_NAME    64          /* bytes in a param name, operation or step */
#define WIRE_MAX_VALUE   4096        /* bytes in a param value */
#define WIRE_MAX_SAGA_ID 64          /* bytes in a saga id */
#define WIRE_BATCH_MARK  0x07        /* first byte of a frame (StepBatch in saga.proto) */
#define WIRE_BATCH_MAX   32          /* steps in one frame */
/* A frame of requests is at most WIRE_MAX_MSG; its answer holds up to
 * WIRE_BATCH_MAX replies of up to WIRE_MAX_MSG each. */
#define WIRE_MAX_BATCH_REPLY (WIRE_BATCH_MAX * (WIRE_MAX_MSG + 16) + 16)
/*
 * nng's NNG_OPT_RECVMAXSZ counts the SP header too (4 bytes of request id on
 * REQ/REP, 4 more per device hop), and nng closes the connection on a bigger
 * message without a word. Every socket therefore admits this much more than
 * its documented payload limit, and the code behind it answers a payload
 * over the limit with an error: only messages beyond limit + slack are
 * dropped (the connection closed) by nng.
 */
#define WIRE_RECV_SLACK      4096
#define WIRE_RECV_MAX(limit) ((size_t)(limit) + WIRE_RECV_SLACK)

/* Short aliases for the generated names. */
typedef Saga__V1__StepRequest StepRequest;
typedef Saga__V1__StepReply StepReply;
typedef Saga__V1__StepBatch StepBatch;
enum {
    PHASE_ACTION = SAGA__V1__PHASE__PHASE_ACTION,
    PHASE_COMPENSATE = SAGA__V1__PHASE__PHASE_COMPENSATE,
};
typedef enum {
    OUTCOME_UNSPECIFIED = SAGA__V1__OUTCOME__OUTCOME_UNSPECIFIED, /* not an answer */
    OUTCOME_OK = SAGA__V1__OUTCOME__OUTCOME_OK,
    OUTCOME_REJECTED = SAGA__V1__OUTCOME__OUTCOME_REJECTED,
    OUTCOME_RETRY = SAGA__V1__OUTCOME__OUTCOME_RETRY,
    OUTCOME_CONFLICT = SAGA__V1__OUTCOME__OUTCOME_CONFLICT,
    OUTCOME_SKIPPED = SAGA__V1__OUTCOME__OUTCOME_SKIPPED,
} wire_outcome;

/* "OK", "REJECTED", ...; "UNSPECIFIED" for 0, "UNKNOWN" for other values. */
const char *wire_outcome_name(int outcome);
/* Is outcome an answer: OUTCOME_OK .. OUTCOME_SKIPPED? An unspecified or
 * unknown outcome says nothing about the effect: the reply counts as none. */
int wire_outcome_known(int outcome);
/* "action" or "compensate"; "unknown" for other values. */
const char *wire_phase_name(int phase);

/*
 * Checks a decoded request against the limits above and the protocol:
 * non-empty key, saga_id, step and operation, a known phase, unique param
 * names. Returns 0, or -1 with a reason naming the offending field in err.
 */
int wire_check_request(const StepRequest *req, char *err, size_t errlen);

/*
 * protobuf-c hands string fields to C as NUL-terminated strings without
 * checking them: a string holding a NUL byte would silently lose everything
 * after it, and one that is not UTF-8 breaks every strict proto3 decoder it
 * is echoed to. Scans buf (len bytes, the wire form of a message of
 * descriptor d that protobuf-c already unpacked) and its nested messages for
 * a string field whose bytes contain a NUL or are not well-formed UTF-8.
 * Returns that field's name (static, from the descriptor; "key" or "value"
 * for a map entry) with *why set to "contains a NUL byte" or "is not valid
 * UTF-8", or NULL when every string is valid. Call it before anything
 * decoded from buf is used or echoed.
 */
const char *wire_invalid_string_field(const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                                      size_t len, const char **why);

/* Copies the request's params / the reply's result into m (which it adds to). */
int wire_params_to_kv(const StepRequest *req, kvmap *m);
int wire_result_to_kv(const StepReply *rep, kvmap *m);

/*
 * The canonical bytes of what makes two deliveries "the same request":
 * saga_id, step, phase, operation and params sorted by name (the key and the
 * attempt are left out). Returns a malloc'd buffer (caller frees) and its
 * length in *len, or NULL when out of memory.
 */
uint8_t *wire_request_fingerprint(const StepRequest *req, size_t *len);

/*
 * Packs a request or reply whose map fields come from kvmaps, without copying
 * strings: fills entries arrays that live as long as the call. Each returns a
 * malloc'd buffer (caller frees) and its length, or NULL when out of memory.
 */
uint8_t *wire_pack_request(const char *key, const char *saga_id, const char *step, int phase,
                           const char *operation, uint32_t attempt, const kvmap *params,
                           size_t *len);
uint8_t *wire_pack_reply(const char *key, int outcome, int replayed, const kvmap *result,
                         const char *error, size_t *len);

/* Does buf hold a frame (its first byte is WIRE_BATCH_MARK)? */
int wire_is_batch(const uint8_t *buf, size_t len);
/* Packs n packed messages into a frame (the mark, then a StepBatch);
 * malloc'd, NULL when out of memory. */
uint8_t *wire_pack_batch(size_t n, const uint8_t *const *items, const size_t *lens, size_t *len);
/* Unpacks a frame: NULL unless buf is a frame of 1 to WIRE_BATCH_MAX items.
 * Free with saga__v1__step_batch__free_unpacked(b, NULL). */
StepBatch *wire_unpack_batch(const uint8_t *buf, size_t len);

#endif
