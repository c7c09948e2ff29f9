/* wire — see wire.h. */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *wire_outcome_name(int outcome)
{
    switch (outcome) {
    case OUTCOME_UNSPECIFIED:
        return "UNSPECIFIED";
    case OUTCOME_OK:
        return "OK";
    case OUTCOME_REJECTED:
        return "REJECTED";
    case OUTCOME_RETRY:
        return "RETRY";
    case OUTCOME_CONFLICT:
        return "CONFLICT";
    case OUTCOME_SKIPPED:
        return "SKIPPED";
    default:
        return "UNKNOWN";
    }
}

int wire_outcome_known(int outcome)
{
    return outcome >= OUTCOME_OK && outcome <= OUTCOME_SKIPPED;
}

const char *wire_phase_name(int phase)
{
    switch (phase) {
    case PHASE_ACTION:
        return "action";
    case PHASE_COMPENSATE:
        return "compensate";
    default:
        return "unknown";
    }
}

static int check_text(const char *field, const char *value, size_t max, char *err, size_t errlen)
{
    size_t n = value ? strlen(value) : 0;
    if (n == 0) {
        snprintf(err, errlen, "missing %s", field);
        return -1;
    }
    if (n > max) {
        snprintf(err, errlen, "%s is %zu bytes, longer than %zu", field, n, max);
        return -1;
    }
    return 0;
}

static int entry_cmp(const void *a, const void *b)
{
    const Saga__V1__StepRequest__ParamsEntry *x = *(Saga__V1__StepRequest__ParamsEntry *const *)a;
    const Saga__V1__StepRequest__ParamsEntry *y = *(Saga__V1__StepRequest__ParamsEntry *const *)b;
    return strcmp(x->key, y->key);
}

int wire_check_request(const StepRequest *req, char *err, size_t errlen)
{
    if (check_text("idempotency_key", req->idempotency_key, WIRE_MAX_KEY, err, errlen) ||
        check_text("saga_id", req->saga_id, WIRE_MAX_SAGA_ID, err, errlen) ||
        check_text("step", req->step, WIRE_MAX_NAME, err, errlen) ||
        check_text("operation", req->operation, WIRE_MAX_NAME, err, errlen))
        return -1;
    if ((int)req->phase != PHASE_ACTION && (int)req->phase != PHASE_COMPENSATE) {
        snprintf(err, errlen, "unknown phase %d", (int)req->phase);
        return -1;
    }
    if (req->n_params > WIRE_MAX_PARAMS) {
        snprintf(err, errlen, "%zu params, more than %d", req->n_params, WIRE_MAX_PARAMS);
        return -1;
    }
    for (size_t i = 0; i < req->n_params; i++) {
        const char *k = req->params[i]->key, *v = req->params[i]->value;
        if (check_text("param name", k, WIRE_MAX_NAME, err, errlen))
            return -1;
        if (v && strlen(v) > WIRE_MAX_VALUE) {
            snprintf(err, errlen, "param '%s' is longer than %d bytes", k, WIRE_MAX_VALUE);
            return -1;
        }
    }
    if (req->n_params > 1) {
        Saga__V1__StepRequest__ParamsEntry **sorted = malloc(req->n_params * sizeof *sorted);
        if (sorted == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(sorted, req->params, req->n_params * sizeof *sorted);
        qsort(sorted, req->n_params, sizeof *sorted, entry_cmp);
        for (size_t i = 1; i < req->n_params; i++) {
            if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0) {
                snprintf(err, errlen, "param '%s' given twice", sorted[i]->key);
                free(sorted);
                return -1;
            }
        }
        free(sorted);
    }
    return 0;
}

int wire_params_to_kv(const StepRequest *req, kvmap *m)
{
    for (size_t i = 0; i < req->n_params; i++)
        if (kv_set(m, req->params[i]->key, req->params[i]->value ? req->params[i]->value : "") != 0)
            return -1;
    return 0;
}

int wire_result_to_kv(const StepReply *rep, kvmap *m)
{
    for (size_t i = 0; i < rep->n_result; i++)
        if (kv_set(m, rep->result[i]->key, rep->result[i]->value ? rep->result[i]->value : "") != 0)
            return -1;
    return 0;
}

/* Packs msg into a fresh malloc'd buffer. */
static uint8_t *pack_message(const ProtobufCMessage *msg, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return NULL;
    *len = protobuf_c_message_pack(msg, buf);
    return buf;
}

uint8_t *wire_pack_request(const char *key, const char *saga_id, const char *step, int phase,
                           const char *operation, uint32_t attempt, const kvmap *params,
                           size_t *len)
{
    StepRequest req = SAGA__V1__STEP_REQUEST__INIT;
    Saga__V1__StepRequest__ParamsEntry *entries = NULL, **ptrs = NULL;
    if (params->len > 0) {
        entries = calloc(params->len, sizeof *entries);
        ptrs = calloc(params->len, sizeof *ptrs);
        if (entries == NULL || ptrs == NULL) {
            free(entries);
            free(ptrs);
            return NULL;
        }
    }
    for (size_t i = 0; i < params->len; i++) {
        Saga__V1__StepRequest__ParamsEntry init = SAGA__V1__STEP_REQUEST__PARAMS_ENTRY__INIT;
        entries[i] = init;
        entries[i].key = params->items[i].key;
        entries[i].value = params->items[i].value;
        ptrs[i] = &entries[i];
    }
    req.idempotency_key = (char *)key;
    req.saga_id = (char *)saga_id;
    req.step = (char *)step;
    req.phase = (Saga__V1__Phase)phase;
    req.operation = (char *)operation;
    req.attempt = attempt;
    req.n_params = params->len;
    req.params = ptrs;
    uint8_t *buf = pack_message(&req.base, len);
    free(entries);
    free(ptrs);
    return buf;
}

uint8_t *wire_pack_reply(const char *key, int outcome, int replayed, const kvmap *result,
                         const char *error, size_t *len)
{
    StepReply rep = SAGA__V1__STEP_REPLY__INIT;
    Saga__V1__StepReply__ResultEntry *entries = NULL, **ptrs = NULL;
    size_t n = result ? result->len : 0;
    if (n > 0) {
        entries = calloc(n, sizeof *entries);
        ptrs = calloc(n, sizeof *ptrs);
        if (entries == NULL || ptrs == NULL) {
            free(entries);
            free(ptrs);
            return NULL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        Saga__V1__StepReply__ResultEntry init = SAGA__V1__STEP_REPLY__RESULT_ENTRY__INIT;
        entries[i] = init;
        entries[i].key = result->items[i].key;
        entries[i].value = result->items[i].value;
        ptrs[i] = &entries[i];
    }
    rep.idempotency_key = (char *)(key ? key : "");
    rep.outcome = (Saga__V1__Outcome)outcome;
    rep.replayed = replayed ? 1 : 0;
    rep.n_result = n;
    rep.result = ptrs;
    rep.error = (char *)(error ? error : "");
    uint8_t *buf = pack_message(&rep.base, len);
    free(entries);
    free(ptrs);
    return buf;
}

uint8_t *wire_request_fingerprint(const StepRequest *req, size_t *len)
{
    kvmap params = KVMAP_INIT; /* sorted by construction */
    uint8_t *buf = NULL;
    if (wire_params_to_kv(req, &params) == 0)
        buf = wire_pack_request("", req->saga_id, req->step, req->phase, req->operation, 0, &params,
                                len);
    kv_free(&params);
    return buf;
}

/* Reads a varint at *i of p (len bytes); -1 when it runs past the end. */
static int scan_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *i < len; shift += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7F) << shift;
        if ((b & 0x80) == 0)
            return 0;
    }
    return -1;
}

#define STRING_SCAN_MAX_DEPTH 32

static const char *string_scan(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                               int depth, const char **why)
{
    size_t i = 0;
    while (i < len) {
        uint64_t key, n;
        if (scan_varint(p, len, &i, &key) != 0)
            return NULL;
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3))
                : NULL;
        switch (key & 7) {
        case 0: /* varint */
            if (scan_varint(p, len, &i, &n) != 0)
                return NULL;
            break;
        case 1: /* 64-bit */
            if (len - i < 8)
                return NULL;
            i += 8;
            break;
        case 5: /* 32-bit */
            if (len - i < 4)
                return NULL;
            i += 4;
            break;
        case 2: /* length-delimited: strings, bytes, messages, packed arrays */
            if (scan_varint(p, len, &i, &n) != 0 || n > len - i)
                return NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING) {
                if (memchr(p + i, 0, (size_t)n)) {
                    *why = "contains a NUL byte";
                    return f->name;
                }
                if (!util_utf8_valid((const char *)p + i, (size_t)n)) {
                    *why = "is not valid UTF-8";
                    return f->name;
                }
            }
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < STRING_SCAN_MAX_DEPTH) {
                const char *hit = string_scan(f->descriptor, p + i, (size_t)n, depth + 1, why);
                if (hit != NULL)
                    return hit;
            }
            i += (size_t)n;
            break;
        default: /* groups: not in proto3, and protobuf-c refused them already */
            return NULL;
        }
    }
    return NULL;
}

const char *wire_invalid_string_field(const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                                      size_t len, const char **why)
{
    const char *unused;
    return d != NULL && buf != NULL ? string_scan(d, buf, len, 0, why ? why : &unused) : NULL;
}

int wire_is_batch(const uint8_t *buf, size_t len)
{
    return buf != NULL && len > 0 && buf[0] == WIRE_BATCH_MARK;
}

uint8_t *wire_pack_batch(size_t n, const uint8_t *const *items, const size_t *lens, size_t *len)
{
    ProtobufCBinaryData *bins = calloc(n ? n : 1, sizeof *bins);
    if (bins == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bins[i].data = (uint8_t *)items[i]; /* only read by pack */
        bins[i].len = lens[i];
    }
    StepBatch b = SAGA__V1__STEP_BATCH__INIT;
    b.n_items = n;
    b.items = bins;
    size_t size = saga__v1__step_batch__get_packed_size(&b);
    uint8_t *out = malloc(size + 1);
    if (out != NULL) {
        out[0] = WIRE_BATCH_MARK;
        *len = 1 + saga__v1__step_batch__pack(&b, out + 1);
    }
    free(bins);
    return out;
}

StepBatch *wire_unpack_batch(const uint8_t *buf, size_t len)
{
    if (!wire_is_batch(buf, len))
        return NULL;
    StepBatch *b = saga__v1__step_batch__unpack(NULL, len - 1, buf + 1);
    if (b != NULL && (b->n_items == 0 || b->n_items > WIRE_BATCH_MAX)) {
        saga__v1__step_batch__free_unpacked(b, NULL);
        b = NULL;
    }
    return b;
}
