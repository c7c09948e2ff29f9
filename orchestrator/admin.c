/*
 * admin — sagad's admin API server; see admin.h for what it serves.
 *
 * Structure (after nng's demo/async/server.c): ADMIN_CONTEXTS rep0 contexts
 * on one socket, each a small state machine driven by its aio callback:
 *
 *        +------+  request   decode, authorize, validate
 *   +--->| RECV |----------+----------------------------------------+
 *   |    +------+          | status/history/list/stats              | refused
 *   |                      v                                        |
 *   |               +--------+ reader thread      +--------+        |
 *   |               | QUEUED |------------------->|        |<-------+
 *   |               +--------+                    |  SEND  |
 *   |  start/abort/resume  +--------+ done cb     |        |
 *   |  (from RECV) ------->| ENGINE |------------>|        |
 *   |                      +--------+             +--------+
 *   +------------------------ sent or failed ---------+
 *
 * Invariants:
 *  1. A context is in exactly one state, and only the party that owns that
 *     state touches its aio: nng (RECV, SEND), the reader thread (QUEUED),
 *     the engine (ENGINE: until its done callback has called nng_ctx_send).
 *  2. The read-only store handle is used by the reader thread only, so it
 *     needs no lock of its own. Reads run there rather than in aio callbacks
 *     because nng runs the callbacks of every socket (the engine's
 *     participant sockets too) on one small thread pool: a slow read must
 *     never hold up saga replies. srv->mu guards the reader queue, the
 *     closing flag, the engine command count and the malformed-request tally.
 *  3. Engine done callbacks run on the engine thread; they only pack a reply
 *     and call nng_ctx_send, never wait for anything.
 *  4. srv->engine_pending counts commands handed to the engine and not yet
 *     called back; admin_stop frees the contexts only once it is 0.
 *  5. Nothing invalid reaches the engine: every limit of admin.h is checked
 *     before an engine_* call.
 *
 * Ownership: an unpacked AdminRequest belongs to its context until its reply
 * is built, then is freed with saga__v1__admin_request__free_unpacked. A
 * message handed to nng_ctx_send belongs to nng once the send succeeds; when
 * it fails, the SEND callback frees it. Replies are built from borrowed
 * strings and from allocations in a per-reply arena, freed after packing.
 */
#include "admin.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <pwd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "admin.pb-c.h"
#include "catalog.h"
#include "kv.h"
#include "listener.h"
#include "log.h"
#include "saga.h"
#include "security.h"
#include "sha256.h"
#include "store.h"
#include "util.h"
#include "wire.h"

typedef Saga__V1__AdminRequest AdminRequest;
typedef Saga__V1__AdminReply AdminReply;

enum actx_state { ACTX_IDLE, ACTX_RECV, ACTX_QUEUED, ACTX_ENGINE, ACTX_SEND };

typedef struct admin_ctx {
    struct admin_server *srv;
    nng_ctx ctx;
    nng_aio *aio; /* NULL until allocated */
    enum actx_state state;
    AdminRequest *req;      /* while QUEUED: the read to serve */
    struct admin_ctx *next; /* reader queue link */
    AdminReply **captured;  /* admin_read: the reply goes here, unpacked, not to nng */
} admin_ctx;

struct admin_server {
    const orch_config *cfg;
    engine *eng;
    catalog *defs; /* the engine's: current types for starts, versions for reads */
    store *st;     /* read-only; reader thread only */

    nng_socket sock;
    int sock_open;
    sp_listener *listener;
    sec_tls_files tls; /* a tls+tcp:// admin_url: the config's certificate and key */
    admin_ctx ctxs[ADMIN_CONTEXTS];

    pthread_mutex_t mu;
    pthread_cond_t reader_cv;  /* queue not empty, or closing */
    pthread_cond_t pending_cv; /* engine_pending dropped to 0 */
    int closing;
    size_t engine_pending;
    admin_ctx *queue_head, *queue_tail;
    pthread_t reader;
    int reader_started;

    log_throttle malformed; /* malformed requests (log.h: a client could repeat them at will) */
    log_throttle refused;   /* requests with a missing or wrong token */
};

static void actx_recv(admin_ctx *c);

/* ---- Small helpers ----------------------------------------------------- */

/* protobuf-c's string fields are char * but packing only reads them: a
 * borrowed const string may be placed there. NULL becomes "". */
static char *pb_str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

static const char *nz(const char *s)
{
    return s != NULL ? s : "";
}

static int is_text(const char *s)
{
    return util_utf8_valid(s, strlen(s));
}

/*
 * A per-reply arena: every allocation made to build one reply is freed at
 * once by arena_free. Each block is one malloc with a header aligned for
 * any type.
 */
typedef struct arena_blk {
    struct arena_blk *next;
} arena_blk;
typedef struct {
    arena_blk *head;
} arena;

#define ARENA_HDR                                                                                  \
    ((sizeof(arena_blk) + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t))

/* Zeroed memory for n items of size bytes, or NULL. */
static void *arena_calloc(arena *a, size_t n, size_t size)
{
    if (n == 0)
        n = 1;
    if (size != 0 && n > (SIZE_MAX - ARENA_HDR) / size)
        return NULL;
    arena_blk *b = calloc(1, ARENA_HDR + n * size);
    if (b == NULL)
        return NULL;
    b->next = a->head;
    a->head = b;
    return (char *)b + ARENA_HDR;
}

static char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *d = arena_calloc(a, n + 1, 1);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static char *arena_strdup(arena *a, const char *s)
{
    s = nz(s);
    return arena_strndup(a, s, strlen(s));
}

static void arena_free(arena *a)
{
    arena_blk *b = a->head;
    while (b != NULL) {
        arena_blk *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- Replies ----------------------------------------------------------- */

/* Packs rep and sends it on c. Never blocks: safe on any thread. */
static void actx_reply(admin_ctx *c, const AdminReply *rep)
{
    size_t len = protobuf_c_message_get_packed_size(&rep->base);
    if (len > ADMIN_MAX_REPLY) {
        log_error("admin: a reply of %zu bytes exceeds the limit of %d; answering an error", len,
                  ADMIN_MAX_REPLY);
        AdminReply too_big = SAGA__V1__ADMIN_REPLY__INIT;
        too_big.status = SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL;
        too_big.error = "reply too large";
        actx_reply(c, &too_big);
        return;
    }
    if (c->captured != NULL) { /* admin_read: an unpacked copy the caller owns */
        uint8_t *buf = malloc(len ? len : 1);
        if (buf != NULL) {
            protobuf_c_message_pack(&rep->base, buf);
            *c->captured = saga__v1__admin_reply__unpack(NULL, len, buf);
        }
        free(buf);
        return;
    }
    nng_msg *msg;
    int rv = nng_msg_alloc(&msg, len);
    if (rv != 0) {
        /* The client times out and may retry; this context serves on. */
        log_error("admin: cannot allocate a reply: %s", nng_strerror(rv));
        actx_recv(c);
        return;
    }
    if (len > 0)
        protobuf_c_message_pack(&rep->base, nng_msg_body(msg));
    c->state = ACTX_SEND;
    nng_aio_set_msg(c->aio, msg);
    nng_ctx_send(c->ctx, c->aio);
}

static void actx_reply_error(admin_ctx *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void actx_reply_error(admin_ctx *c, int status, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    rep.status = (Saga__V1__AdminStatus)status;
    rep.error = text;
    actx_reply(c, &rep);
}

static void reply_store_error(admin_ctx *c, const char *what)
{
    log_error("admin: %s: %s", what, store_errmsg(c->srv->st));
    actx_reply_error(c, SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL, "storage error during %s", what);
}

static void reply_oom(admin_ctx *c, const char *what)
{
    log_error("admin: %s: out of memory", what);
    actx_reply_error(c, SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL, "out of memory during %s", what);
}

/* Counts one event; returns how many to report now (0: stay quiet). */
static uint64_t throttle_count(admin_server *srv, log_throttle *t)
{
    pthread_mutex_lock(&srv->mu);
    uint64_t count = log_throttle_hit(t, util_mono_ms());
    pthread_mutex_unlock(&srv->mu);
    return count;
}

static void note_malformed(admin_server *srv, const char *why)
{
    uint64_t count = throttle_count(srv, &srv->malformed);
    if (count > 0)
        log_warn("admin: malformed request (%s); %" PRIu64
                 " since the last report, answered ADMIN_BAD_REQUEST",
                 why, count);
}

static void note_refused(admin_server *srv, const char *kind)
{
    uint64_t count = throttle_count(srv, &srv->refused);
    if (count > 0)
        log_warn("admin: refused a %s request: missing or wrong admin token; %" PRIu64
                 " refused since the last report",
                 kind, count);
}

static int srv_closing(admin_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    int closing = srv->closing;
    pthread_mutex_unlock(&srv->mu);
    return closing;
}

/* ---- Authorization ----------------------------------------------------- */

/*
 * THE place where requests are authorized, for every kind of request. With
 * an admin token configured (admin_token_file), the request's token must
 * equal it, compared in constant time; without one, access is controlled by
 * the admin socket's permissions (ipc://, 0600) and the token is ignored
 * (config_load requires a token for any other admin_url). 0: allowed.
 */
static int admin_authorize(const orch_config *cfg, const AdminRequest *req)
{
    if (cfg->admin_token == NULL)
        return 0;
    const char *token = nz(req->token);
    return sec_equal(token, strlen(token), cfg->admin_token, strlen(cfg->admin_token)) ? 0 : -1;
}

/* ---- Decoding and validation (no network, store or engine) ----------- */

/* What check_request found in one request. */
typedef struct {
    AdminRequest *req;     /* unpacked; NULL when it did not decode */
    const saga_def *def;   /* start: the saga type */
    kvmap input;           /* start: the validated input (the engine copies it) */
    const char *malformed; /* not a well-formed request: why, for note_malformed */
} admin_checked;

static void checked_free(admin_checked *k)
{
    if (k->req != NULL)
        saga__v1__admin_request__free_unpacked(k->req, NULL);
    k->req = NULL;
    kv_free(&k->input);
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST;
}

static int check_saga_id(const char *id, char *err, size_t errlen)
{
    if (util_is_uuid(id))
        return SAGA__V1__ADMIN_STATUS__ADMIN_OK;
    if (*id == '\0')
        return bad(err, errlen, "missing saga id");
    return bad(err, errlen,
               "invalid saga id (expected a UUID; `sagactl status PREFIX` finds a saga by the "
               "beginning of its id)");
}

/* defs NULL: the types of cfg (admin_handle_request_bytes, which runs without an engine). */
static int check_start(const orch_config *cfg, catalog *defs, const Saga__V1__StartSaga *m,
                       admin_checked *k, char *err, size_t errlen)
{
    size_t total = 0;
    const char *type = nz(m->type), *key = nz(m->client_key);

    if (*type == '\0')
        return bad(err, errlen, "missing saga type");
    if (strlen(type) > ADMIN_MAX_TYPE || !is_text(type))
        return bad(err, errlen, "invalid saga type (at most %d bytes of UTF-8)", ADMIN_MAX_TYPE);
    k->def = defs != NULL ? catalog_current(defs, type) : config_find_saga(cfg, type);
    if (k->def == NULL) {
        if (defs != NULL)
            catalog_unknown_type_msg(defs, type, err, errlen);
        else
            config_unknown_type_msg(cfg->sagas, cfg->n_sagas, type, err, errlen);
        return SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST;
    }
    if (strlen(key) > ADMIN_MAX_CLIENT_KEY || !is_text(key))
        return bad(err, errlen, "invalid client key (at most %d bytes of UTF-8)",
                   ADMIN_MAX_CLIENT_KEY);
    if (m->n_input > ADMIN_MAX_INPUTS)
        return bad(err, errlen, "too many inputs (%zu, at most %d)", m->n_input, ADMIN_MAX_INPUTS);
    for (size_t i = 0; i < m->n_input; i++) {
        const char *name = nz(m->input[i]->key), *value = nz(m->input[i]->value);
        size_t nlen = strlen(name), vlen = strlen(value);
        if (nlen == 0 || nlen > ADMIN_MAX_INPUT_NAME || !util_utf8_valid(name, nlen))
            return bad(err, errlen, "invalid input name (1 to %d bytes of UTF-8)",
                       ADMIN_MAX_INPUT_NAME);
        if (vlen > ADMIN_MAX_INPUT_VALUE || !util_utf8_valid(value, vlen))
            return bad(err, errlen, "invalid value of input '%s' (at most %d bytes of UTF-8)", name,
                       ADMIN_MAX_INPUT_VALUE);
        if (kv_get(&k->input, name) != NULL)
            return bad(err, errlen, "input '%s' given twice", name);
        total += nlen + vlen;
        if (total > ADMIN_MAX_INPUT_TOTAL)
            return bad(err, errlen, "input too large (more than %d bytes in all)",
                       ADMIN_MAX_INPUT_TOTAL);
        if (kv_set(&k->input, name, value) != 0) {
            snprintf(err, errlen, "out of memory during start");
            return SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL;
        }
    }
    if (saga_missing_inputs_msg(k->def, &k->input, err, errlen) != 0)
        return SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST;
    if (m->deadline_s > ADMIN_MAX_DEADLINE_S)
        return bad(err, errlen, "deadline_s %u too large (at most %d, a year)", m->deadline_s,
                   ADMIN_MAX_DEADLINE_S);
    /* A start time a little in the past is a clock apart or a slow client:
     * it starts now. Further back, it is a mistake worth telling. */
    int64_t now = util_wall_ms();
    if (m->start_at_ms != 0 && m->start_at_ms < now - ADMIN_START_AT_PAST_MS)
        return bad(err, errlen, "start_at_ms %lld is in the past (now is %lld)",
                   (long long)m->start_at_ms, (long long)now);
    if (m->start_at_ms > now + ADMIN_MAX_START_AHEAD_MS)
        return bad(err, errlen, "start_at_ms %lld is more than %d days ahead",
                   (long long)m->start_at_ms, (int)(ADMIN_MAX_START_AHEAD_MS / 86400000));
    return SAGA__V1__ADMIN_STATUS__ADMIN_OK;
}

/* An id prefix: 1 to 36 of the characters of an id (lowercase hex digits
 * and '-'); uppercase digits are lowered in place. */
static int id_prefix_ok(char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 36)
        return 0;
    for (char *c = p; *c; c++) {
        if (*c >= 'A' && *c <= 'F')
            *c = (char)(*c - 'A' + 'a');
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || *c == '-'))
            return 0;
    }
    return 1;
}

static int check_list(Saga__V1__ListSagas *m, char *err, size_t errlen)
{
    const char *after = nz(m->after_id), *type = nz(m->type), *key = nz(m->client_key);
    if ((int)m->state < 0 || (int)m->state > SAGA__V1__SAGA_STATE__SAGA_SCHEDULED)
        return bad(err, errlen, "unknown saga state %d", (int)m->state);
    if (strlen(type) > ADMIN_MAX_TYPE || !is_text(type))
        return bad(err, errlen, "invalid saga type (at most %d bytes of UTF-8)", ADMIN_MAX_TYPE);
    if (*after != '\0' && !util_is_uuid(after))
        return bad(err, errlen, "invalid after_id (expected a UUID)");
    if (m->id_prefix != NULL && m->id_prefix[0] != '\0' && !id_prefix_ok(m->id_prefix))
        return bad(err, errlen,
                   "invalid id_prefix (1 to 36 hex digits and '-', the beginning of a saga id)");
    if (strlen(key) > ADMIN_MAX_CLIENT_KEY || !is_text(key))
        return bad(err, errlen, "invalid client key (at most %d bytes of UTF-8)",
                   ADMIN_MAX_CLIENT_KEY);
    if (m->created_after_ms < 0 || m->created_before_ms < 0)
        return bad(err, errlen, "created_after_ms and created_before_ms must not be negative");
    return SAGA__V1__ADMIN_STATUS__ADMIN_OK;
}

/*
 * Decodes len bytes at buf as an AdminRequest and checks it, in this order:
 * well-formed (at most ADMIN_MAX_REQUEST bytes, protobuf, every string
 * UTF-8 without a NUL byte, a command present), then
 * authorized, then within every limit of admin.h. Returns ADMIN_OK with
 * k->req (and for a start k->def and k->input) set, or another status with
 * the reply's text in err and, for a malformed request, k->malformed set.
 * Either way the caller frees k with checked_free.
 */
static int check_request(const orch_config *cfg, catalog *defs, const void *buf, size_t len,
                         admin_checked *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    if (len > ADMIN_MAX_REQUEST) { /* the socket admits WIRE_RECV_SLACK more: see wire.h */
        k->malformed = "request too large";
        return bad(err, errlen, "request of %zu bytes is larger than %d", len, ADMIN_MAX_REQUEST);
    }
    k->req = saga__v1__admin_request__unpack(NULL, len, buf);
    if (k->req == NULL) {
        k->malformed = "not a valid AdminRequest";
        return bad(err, errlen, "malformed request");
    }
    /* Before the token is looked at: a token cut at a NUL must not match;
     * and nothing that is not UTF-8 may reach a reply or the store. */
    const char *why = NULL;
    const char *field =
        wire_invalid_string_field(&saga__v1__admin_request__descriptor, buf, len, &why);
    if (field != NULL) {
        k->malformed = "a string field contains a NUL byte or is not UTF-8";
        return bad(err, errlen, "malformed request: field '%s' %s", field, why);
    }
    if (admin_authorize(cfg, k->req) != 0) {
        snprintf(err, errlen, "missing or wrong admin token");
        return SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED;
    }
    const AdminRequest *req = k->req;
    switch (req->body_case) {
    case SAGA__V1__ADMIN_REQUEST__BODY_START:
        return check_start(cfg, defs, req->start, k, err, errlen);
    case SAGA__V1__ADMIN_REQUEST__BODY_ABORT: {
        const char *reason = nz(req->abort->reason);
        int status = check_saga_id(nz(req->abort->saga_id), err, errlen);
        if (status == SAGA__V1__ADMIN_STATUS__ADMIN_OK &&
            (strlen(reason) > ADMIN_MAX_REASON || !is_text(reason)))
            status =
                bad(err, errlen, "invalid reason (at most %d bytes of UTF-8)", ADMIN_MAX_REASON);
        return status;
    }
    case SAGA__V1__ADMIN_REQUEST__BODY_RESUME: {
        const char *reason = nz(req->resume->reason);
        int status = check_saga_id(nz(req->resume->saga_id), err, errlen);
        if (status == SAGA__V1__ADMIN_STATUS__ADMIN_OK &&
            (strlen(reason) > ADMIN_MAX_REASON || !is_text(reason)))
            status =
                bad(err, errlen, "invalid reason (at most %d bytes of UTF-8)", ADMIN_MAX_REASON);
        return status;
    }
    case SAGA__V1__ADMIN_REQUEST__BODY_STATUS:
        return check_saga_id(nz(req->status->saga_id), err, errlen);
    case SAGA__V1__ADMIN_REQUEST__BODY_HISTORY:
        return check_saga_id(nz(req->history->saga_id), err, errlen);
    case SAGA__V1__ADMIN_REQUEST__BODY_LIST:
        return check_list(req->list, err, errlen);
    case SAGA__V1__ADMIN_REQUEST__BODY_STATS:
    case SAGA__V1__ADMIN_REQUEST__BODY_RELOAD:
    case SAGA__V1__ADMIN_REQUEST__BODY_TYPES:
        return SAGA__V1__ADMIN_STATUS__ADMIN_OK;
    case SAGA__V1__ADMIN_REQUEST__BODY_DESCRIBE: {
        const char *type = nz(req->describe->type);
        if (*type == '\0')
            return bad(err, errlen, "missing saga type");
        if (strlen(type) > ADMIN_MAX_TYPE || !is_text(type))
            return bad(err, errlen, "invalid saga type (at most %d bytes of UTF-8)",
                       ADMIN_MAX_TYPE);
        return SAGA__V1__ADMIN_STATUS__ADMIN_OK;
    }
    default:
        k->malformed = "no command in the request";
        return bad(err, errlen, "malformed request: no command");
    }
}

int admin_handle_request_bytes(const orch_config *cfg, const void *buf, size_t len, char *err,
                               size_t errlen)
{
    admin_checked k;
    int status = check_request(cfg, NULL, buf, len, &k, err, errlen);
    if (status == SAGA__V1__ADMIN_STATUS__ADMIN_OK && errlen > 0)
        err[0] = '\0';
    checked_free(&k);
    return status;
}

/* ---- Writes: validated here, performed by the engine ------------------ */

/* The AdminStatus of an engine_status (AdminStatus 0 is "no status", so the
 * two are mapped by name, not by value). */
static Saga__V1__AdminStatus admin_status_of(int engine_status)
{
    switch (engine_status) {
    case ENGINE_OK:
        return SAGA__V1__ADMIN_STATUS__ADMIN_OK;
    case ENGINE_BAD_REQUEST:
        return SAGA__V1__ADMIN_STATUS__ADMIN_BAD_REQUEST;
    case ENGINE_NOT_FOUND:
        return SAGA__V1__ADMIN_STATUS__ADMIN_NOT_FOUND;
    case ENGINE_CONFLICT:
        return SAGA__V1__ADMIN_STATUS__ADMIN_CONFLICT;
    case ENGINE_INVALID_STATE:
        return SAGA__V1__ADMIN_STATUS__ADMIN_INVALID_STATE;
    case ENGINE_BUSY:
        return SAGA__V1__ADMIN_STATUS__ADMIN_BUSY;
    case ENGINE_INVALID_CONFIG:
        return SAGA__V1__ADMIN_STATUS__ADMIN_INVALID_CONFIG;
    default:
        return SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL;
    }
}

/* The last touch of a context handed to the engine: from here on admin_stop
 * may free it (invariant 4). */
static void engine_call_finished(admin_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    if (--srv->engine_pending == 0)
        pthread_cond_broadcast(&srv->pending_cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Called once per command, on the engine thread (invariant 3). */
static void on_engine_done(void *arg, int status, const char *error, const char *saga_id,
                           int existing)
{
    admin_ctx *c = arg;
    admin_server *srv = c->srv;
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__StartReply started = SAGA__V1__START_REPLY__INIT;
    rep.status = admin_status_of(status);
    if (status != ENGINE_OK) {
        rep.error = pb_str(error != NULL && *error ? error : "the engine refused the command");
    } else if (saga_id != NULL) {
        started.saga_id = pb_str(saga_id);
        started.existing = existing != 0;
        rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_STARTED;
        rep.started = &started;
    }
    actx_reply(c, &rep);
    engine_call_finished(srv);
}

/* The current definitions, for a reload's answer (on the engine thread). */
typedef struct {
    arena *a;
    Saga__V1__SagaType **types;
    size_t n, cap;
    int oom;
} current_list;

static void add_current(const saga_def *def, void *arg)
{
    current_list *l = arg;
    if (l->oom || l->n == l->cap)
        return;
    Saga__V1__SagaType *t = arena_calloc(l->a, 1, sizeof *t);
    Saga__V1__TypeVersion *v = arena_calloc(l->a, 1, sizeof *v);
    Saga__V1__TypeVersion **vs = arena_calloc(l->a, 1, sizeof *vs);
    if (t == NULL || v == NULL || vs == NULL) {
        l->oom = 1;
        return;
    }
    saga__v1__saga_type__init(t);
    saga__v1__type_version__init(v);
    t->type = pb_str(def->name);
    v->version = def->version;
    v->current = 1;
    vs[0] = v;
    t->n_versions = 1;
    t->versions = vs;
    l->types[l->n++] = t;
}

/* Called once per reload, on the engine thread (invariant 3). */
static void on_reload_done(void *arg, int status, const char *error, const char *saga_id,
                           int existing)
{
    (void)saga_id;
    (void)existing;
    admin_ctx *c = arg;
    admin_server *srv = c->srv;
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__ReloadReply reloaded = SAGA__V1__RELOAD_REPLY__INIT;
    arena a = {NULL};
    rep.status = admin_status_of(status);
    if (status != ENGINE_OK) {
        rep.error = pb_str(error != NULL && *error ? error : "reload refused");
    } else {
        /* Defs are never freed while the engine lives (catalog.h): names may be borrowed. */
        current_list l = {&a, NULL, 0, ADMIN_LIST_MAX, 0};
        l.types = arena_calloc(&a, l.cap, sizeof *l.types);
        if (l.types != NULL)
            catalog_each_current(srv->defs, add_current, &l);
        if (l.types == NULL || l.oom) {
            rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL;
            rep.error = "reloaded, but out of memory describing the result";
        } else {
            reloaded.n_types = l.n;
            reloaded.types = l.types;
            rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_RELOADED;
            rep.reloaded = &reloaded;
        }
    }
    actx_reply(c, &rep);
    arena_free(&a);
    engine_call_finished(srv);
}

/* Marks c as waiting for the engine; call right before an engine_* call. */
static void actx_to_engine(admin_ctx *c)
{
    c->state = ACTX_ENGINE;
    pthread_mutex_lock(&c->srv->mu);
    c->srv->engine_pending++;
    pthread_mutex_unlock(&c->srv->mu);
}

/* ---- Reads: served by the reader thread -------------------------------- */

static Saga__V1__SagaStatus__InputEntry **status_inputs(arena *a, const kvmap *m)
{
    Saga__V1__SagaStatus__InputEntry **v = arena_calloc(a, m->len, sizeof *v);
    Saga__V1__SagaStatus__InputEntry *e = arena_calloc(a, m->len, sizeof *e);
    if (v == NULL || e == NULL)
        return NULL;
    for (size_t i = 0; i < m->len; i++) {
        saga__v1__saga_status__input_entry__init(&e[i]);
        e[i].key = m->items[i].key;
        e[i].value = m->items[i].value;
        v[i] = &e[i];
    }
    return v;
}

static Saga__V1__StepStatus__ResultEntry **step_results(arena *a, const kvmap *m)
{
    Saga__V1__StepStatus__ResultEntry **v = arena_calloc(a, m->len, sizeof *v);
    Saga__V1__StepStatus__ResultEntry *e = arena_calloc(a, m->len, sizeof *e);
    if (v == NULL || e == NULL)
        return NULL;
    for (size_t i = 0; i < m->len; i++) {
        saga__v1__step_status__result_entry__init(&e[i]);
        e[i].key = m->items[i].key;
        e[i].value = m->items[i].value;
        v[i] = &e[i];
    }
    return v;
}

/* Every map<string, string> entry protobuf-c generates has this layout. */
typedef struct {
    ProtobufCMessage base;
    char *key;
    char *value;
} pb_kv_entry;
_Static_assert(sizeof(pb_kv_entry) == sizeof(Saga__V1__StepStatus__ParamsEntry) &&
                   sizeof(pb_kv_entry) == sizeof(Saga__V1__HistoryEvent__ParamsEntry) &&
                   sizeof(pb_kv_entry) == sizeof(Saga__V1__HistoryEvent__ResultEntry),
               "map entries share one layout");

/* The entries of map m (copied into a: m may be freed before the reply is
 * packed), each begun as *init. NULL when out of memory. */
static void *map_entries(arena *a, const kvmap *m, const void *init)
{
    pb_kv_entry **v = arena_calloc(a, m->len, sizeof *v);
    pb_kv_entry *e = arena_calloc(a, m->len, sizeof *e);
    if (v == NULL || e == NULL)
        return NULL;
    for (size_t i = 0; i < m->len; i++) {
        memcpy(&e[i], init, sizeof e[i]);
        e[i].key = arena_strdup(a, m->items[i].key);
        e[i].value = arena_strdup(a, m->items[i].value);
        if (e[i].key == NULL || e[i].value == NULL)
            return NULL;
        v[i] = &e[i];
    }
    return v;
}

/* The params of step i's requests into *out (entries from a): none while it
 * was never sent, or when s has no definition. -1 when out of memory. */
static int step_params(arena *a, const saga *s, size_t i, size_t *n_out, void **out)
{
    static const Saga__V1__StepStatus__ParamsEntry init = SAGA__V1__STEP_STATUS__PARAMS_ENTRY__INIT;
    *n_out = 0;
    *out = NULL;
    if (s->def == NULL || s->steps[i].state == STEP_PENDING)
        return 0;
    kvmap params = KVMAP_INIT;
    if (saga_step_params(s, (int)i, &params) != 0) {
        kv_free(&params);
        return -1;
    }
    *out = map_entries(a, &params, &init);
    *n_out = params.len;
    kv_free(&params);
    return *out != NULL ? 0 : -1;
}

/* Fills out from s; strings are borrowed from s, arrays come from a. */
static int status_from_saga(arena *a, const saga *s, Saga__V1__SagaStatus *out)
{
    saga__v1__saga_status__init(out);
    out->saga_id = pb_str(s->id);
    out->type = pb_str(s->type);
    out->state = (Saga__V1__SagaState)s->state;
    out->client_key = pb_str(s->client_key);
    out->created_at_ms = s->created_at_ms;
    out->updated_at_ms = s->updated_at_ms;
    out->deadline_at_ms = s->deadline_at_ms;
    out->last_error = pb_str(s->last_error);
    out->failed_phase = (Saga__V1__Phase)(s->state == SAGA_FAILED ? s->failed_phase : PHASE_ACTION);
    out->root_cause = pb_str(s->root_cause);
    int stuck = s->state == SAGA_FAILED && s->cursor >= 0 && (size_t)s->cursor < s->n_steps
                    ? s->cursor
                    : -1;
    out->n_input = s->input.len;
    if ((out->input = status_inputs(a, &s->input)) == NULL)
        return -1;

    Saga__V1__StepStatus **v = arena_calloc(a, s->n_steps, sizeof *v);
    Saga__V1__StepStatus *st = arena_calloc(a, s->n_steps, sizeof *st);
    if (v == NULL || st == NULL)
        return -1;
    for (size_t i = 0; i < s->n_steps; i++) {
        const step_run *r = &s->steps[i];
        /* The definition is absent when the saga's type is no longer configured. */
        const step_def *d = s->def != NULL && i < s->def->n_steps ? &s->def->steps[i] : NULL;
        Saga__V1__StepStatus *o = &st[i];
        saga__v1__step_status__init(o);
        if (d != NULL) {
            o->name = pb_str(d->name);
            o->participant = pb_str(d->participant);
            o->action = pb_str(d->action);
            o->compensation = pb_str(d->compensation);
        } else {
            char name[32];
            snprintf(name, sizeof name, "#%zu", i + 1);
            if ((o->name = arena_strdup(a, name)) == NULL)
                return -1;
        }
        o->state = (Saga__V1__StepState)r->state;
        o->action_attempts = r->action_attempts;
        o->compensation_attempts = r->compensation_attempts;
        /* No reply yet (-1) is OUTCOME_UNSPECIFIED on the wire. */
        o->last_outcome =
            (Saga__V1__Outcome)(r->last_outcome < 0 ? OUTCOME_UNSPECIFIED : r->last_outcome);
        o->n_result = r->result.len;
        if ((o->result = step_results(a, &r->result)) == NULL)
            return -1;
        o->last_error = pb_str(r->last_error);
        o->next_attempt_at_ms = r->next_attempt_at_ms;
        o->started_at_ms = r->started_at_ms;
        o->finished_at_ms = r->finished_at_ms;
        o->failed = stuck == (int)i;
        if (o->failed)
            out->failed_step = o->name;
        void *params;
        if (step_params(a, s, i, &o->n_params, &params) != 0)
            return -1;
        o->params = params;
        v[i] = o;
    }
    out->n_steps = s->n_steps;
    out->steps = v;
    return 0;
}

/* The status of a start waiting for its time: no step has a state yet. */
static void reply_scheduled(admin_ctx *c, const store_schedule *sc)
{
    arena a = {NULL};
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__SagaStatus status = SAGA__V1__SAGA_STATUS__INIT;
    rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK;
    status.saga_id = pb_str(sc->id);
    status.type = pb_str(sc->type);
    status.state = SAGA__V1__SAGA_STATE__SAGA_SCHEDULED;
    status.client_key = pb_str(sc->client_key);
    status.created_at_ms = sc->created_at_ms;
    status.updated_at_ms = sc->created_at_ms;
    status.start_at_ms = sc->start_at_ms;
    status.n_input = sc->input.len;
    if ((status.input = status_inputs(&a, &sc->input)) == NULL) {
        reply_oom(c, "status");
    } else {
        rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_SAGA;
        rep.saga = &status;
        actx_reply(c, &rep);
    }
    arena_free(&a);
}

static void read_status(admin_ctx *c, const char *id)
{
    saga *s = NULL;
    arena a = {NULL};
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__SagaStatus status;
    rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK; /* 0 would be "no status" */

    int rc = store_load_saga(c->srv->st, id, &s);
    if (rc == STORE_NOT_FOUND) {
        store_schedule sc = {0};
        rc = store_schedule_get(c->srv->st, id, NULL, &sc);
        if (rc == 0)
            reply_scheduled(c, &sc);
        else if (rc == STORE_NOT_FOUND)
            actx_reply_error(c, SAGA__V1__ADMIN_STATUS__ADMIN_NOT_FOUND, "no saga %s", id);
        else
            reply_store_error(c, "status");
        store_schedule_clear(&sc);
        goto out;
    }
    if (rc != 0) {
        reply_store_error(c, "status");
        goto out;
    }
    /* Steps are named by the version the saga runs on; "#n" when it cannot load. */
    char why[256];
    catalog_bind(c->srv->defs, c->srv->st, s, why, sizeof why);
    if (status_from_saga(&a, s, &status) != 0) {
        reply_oom(c, "status");
        goto out;
    }
    rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_SAGA;
    rep.saga = &status;
    actx_reply(c, &rep);
out:
    arena_free(&a);
    saga_free(s);
}

/* Copies of the oldest ADMIN_HISTORY_MAX events after after_seq. */
typedef struct {
    uint64_t seq;
    int64_t at_ms;
    char *kind, *step, *detail;
    int phase;
    uint32_t attempt;
    int outcome;
    int replayed;
} hist_event;

typedef struct {
    hist_event events[ADMIN_HISTORY_MAX];
    size_t len;
    uint64_t after_seq;
    int more; /* events past the limit were left out */
    int oom;
} hist_acc;

static void hist_event_clear(hist_event *ev)
{
    free(ev->kind);
    free(ev->step);
    free(ev->detail);
    memset(ev, 0, sizeof *ev);
}

static int hist_collect(const store_event *in, void *arg)
{
    hist_acc *h = arg;
    if (in->seq <= h->after_seq)
        return 0;
    if (h->len == ADMIN_HISTORY_MAX) {
        h->more = 1;
        return 1; /* stops the walk: the page is full */
    }
    hist_event *ev = &h->events[h->len++];
    ev->seq = in->seq;
    ev->at_ms = in->at_ms;
    ev->phase = in->phase;
    ev->attempt = in->attempt;
    ev->outcome = in->outcome;
    ev->replayed = in->replayed;
    ev->kind = util_strdup(nz(in->kind));
    ev->step = util_strdup(nz(in->step));
    ev->detail = util_strdup(nz(in->detail));
    if (ev->kind == NULL || ev->step == NULL || ev->detail == NULL) {
        h->oom = 1;
        return 1; /* stops the walk */
    }
    return 0;
}

/* step_sent: the request's params; step_reply OK to an action: the step's
 * result. 0, or -1 when out of memory. */
static int hist_add_data(arena *a, const saga *s, const hist_event *ev, Saga__V1__HistoryEvent *out,
                         size_t *budget)
{
    static const Saga__V1__HistoryEvent__ResultEntry rinit =
        SAGA__V1__HISTORY_EVENT__RESULT_ENTRY__INIT;
    if (s->def == NULL || ev->step[0] == '\0')
        return 0;
    int i = config_step_index(s->def, ev->step);
    if (i < 0 || (size_t)i >= s->n_steps)
        return 0;
    if (strcmp(ev->kind, "step_sent") == 0) {
        void *params;
        if (step_params(a, s, (size_t)i, &out->n_params, &params) != 0)
            return -1;
        Saga__V1__HistoryEvent__ParamsEntry **entries = params;
        size_t bytes = 0;
        for (size_t k = 0; k < out->n_params; k++)
            bytes += strlen(entries[k]->key) + strlen(entries[k]->value);
        if (bytes > *budget) {
            out->n_params = 0; /* past the reply's share: left out (see ADMIN_HISTORY_DATA_MAX) */
            return 0;
        }
        *budget -= bytes;
        out->params = params;
    } else if (strcmp(ev->kind, "step_reply") == 0 && ev->phase == PHASE_ACTION &&
               ev->outcome == OUTCOME_OK && s->steps[i].result.len > 0) {
        size_t bytes = 0;
        for (size_t k = 0; k < s->steps[i].result.len; k++)
            bytes +=
                strlen(s->steps[i].result.items[k].key) + strlen(s->steps[i].result.items[k].value);
        if (bytes > *budget)
            return 0;
        *budget -= bytes;
        void *result = map_entries(a, &s->steps[i].result, &rinit);
        if (result == NULL)
            return -1;
        out->result = result;
        out->n_result = s->steps[i].result.len;
    }
    return 0;
}

static void read_history(admin_ctx *c, const Saga__V1__GetHistory *m)
{
    const char *id = m->saga_id;
    arena a = {NULL};
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__SagaHistory hist = SAGA__V1__SAGA_HISTORY__INIT;
    rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK; /* 0 would be "no status" */
    hist_acc *h = calloc(1, sizeof *h);
    saga *s = NULL;

    if (h == NULL) {
        reply_oom(c, "history");
        goto out;
    }
    h->after_seq = m->after_seq;
    /* The saga first: tells "no saga" from "no events", and gives its state. */
    int rc = store_load_saga(c->srv->st, id, &s);
    if (rc == STORE_NOT_FOUND) {
        actx_reply_error(c, SAGA__V1__ADMIN_STATUS__ADMIN_NOT_FOUND, "no saga %s", id);
        goto out;
    }
    if (rc == 0)
        rc = store_history(c->srv->st, id, hist_collect, h);
    if (h->oom) {
        reply_oom(c, "history");
        goto out;
    }
    if (rc < 0) {
        reply_store_error(c, "history");
        goto out;
    }
    Saga__V1__HistoryEvent **v = arena_calloc(&a, h->len, sizeof *v);
    Saga__V1__HistoryEvent *e = arena_calloc(&a, h->len, sizeof *e);
    if (v == NULL || e == NULL) {
        reply_oom(c, "history");
        goto out;
    }
    /* Params and results come from the saga (the same for every attempt of
     * a step): named by the version it runs on, none when it cannot load. */
    char why[256];
    catalog_bind(c->srv->defs, c->srv->st, s, why, sizeof why);
    size_t budget = ADMIN_HISTORY_DATA_MAX;
    for (size_t i = 0; i < h->len; i++) {
        const hist_event *ev = &h->events[i];
        saga__v1__history_event__init(&e[i]);
        if (hist_add_data(&a, s, ev, &e[i], &budget) != 0) {
            reply_oom(c, "history");
            goto out;
        }
        e[i].seq = ev->seq;
        e[i].at_ms = ev->at_ms;
        e[i].kind = ev->kind;
        e[i].step = ev->step;
        e[i].phase = (Saga__V1__Phase)ev->phase;
        e[i].attempt = ev->attempt;
        e[i].outcome = (Saga__V1__Outcome)(ev->outcome < 0 ? OUTCOME_UNSPECIFIED : ev->outcome);
        e[i].replayed = ev->replayed != 0;
        e[i].detail = ev->detail;
        v[i] = &e[i];
    }
    hist.saga_id = pb_str(id);
    hist.n_events = h->len;
    hist.events = v;
    hist.state = (Saga__V1__SagaState)s->state;
    hist.more = h->more != 0;
    rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_HISTORY;
    rep.history = &hist;
    actx_reply(c, &rep);
out:
    if (h != NULL) {
        for (size_t i = 0; i < h->len; i++)
            hist_event_clear(&h->events[i]);
        free(h);
    }
    arena_free(&a);
    saga_free(s);
}

typedef struct {
    arena *a;
    Saga__V1__SagaSummary **rows;
    size_t n, cap;
    int oom;
} list_acc;

/* Cuts s to at most max bytes without splitting a UTF-8 sequence, marking
 * the cut with "...". Returns an arena copy. */
static char *arena_clip(arena *a, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return arena_strndup(a, s, n);
    size_t keep = max - 3;
    while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
        keep--;
    char *d = arena_calloc(a, keep + 4, 1);
    if (d != NULL) {
        memcpy(d, s, keep);
        memcpy(d + keep, "...", 3);
    }
    return d;
}

static int list_collect(const store_summary *row, void *arg)
{
    list_acc *l = arg;
    if (l->n == l->cap) { /* the walk is bounded by the limit: cap is enough */
        l->oom = 1;
        return 1;
    }
    Saga__V1__SagaSummary *o = arena_calloc(l->a, 1, sizeof *o);
    if (o == NULL) {
        l->oom = 1;
        return 1;
    }
    saga__v1__saga_summary__init(o);
    o->saga_id = arena_strdup(l->a, row->saga_id);
    o->type = arena_strdup(l->a, row->type);
    o->state = (Saga__V1__SagaState)row->state;
    o->created_at_ms = row->created_at_ms;
    o->updated_at_ms = row->updated_at_ms;
    o->last_error = arena_clip(l->a, nz(row->last_error), ADMIN_SUMMARY_ERROR);
    o->root_cause = arena_clip(l->a, nz(row->root_cause), ADMIN_SUMMARY_ERROR);
    o->client_key = arena_strdup(l->a, row->client_key);
    if (o->saga_id == NULL || o->type == NULL || o->last_error == NULL || o->root_cause == NULL ||
        o->client_key == NULL) {
        l->oom = 1;
        return 1;
    }
    l->rows[l->n++] = o;
    return 0;
}

/* ListSagas with state SCHEDULED: the starts waiting, newest first. */
static int list_collect_scheduled(const store_schedule *sc, void *arg)
{
    store_summary row = {.saga_id = sc->id,
                         .type = sc->type,
                         .state = SAGA__V1__SAGA_STATE__SAGA_SCHEDULED,
                         .created_at_ms = sc->created_at_ms,
                         .updated_at_ms = sc->created_at_ms,
                         .client_key = sc->client_key};
    list_acc *l = arg;
    size_t n = l->n;
    int rc = list_collect(&row, arg);
    if (rc == 0 && l->n > n)
        l->rows[n]->start_at_ms = sc->start_at_ms;
    return rc;
}

static void read_list(admin_ctx *c, const Saga__V1__ListSagas *m)
{
    arena a = {NULL};
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__SagaList list = SAGA__V1__SAGA_LIST__INIT;
    rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK; /* 0 would be "no status" */
    uint32_t limit = m->limit == 0 ? ADMIN_LIST_DEFAULT : m->limit;
    if (limit > ADMIN_LIST_MAX)
        limit = ADMIN_LIST_MAX;
    list_acc l = {&a, NULL, 0, limit, 0};

    if ((l.rows = arena_calloc(&a, limit, sizeof *l.rows)) == NULL) {
        reply_oom(c, "list");
        goto out;
    }
    uint64_t counts[6] = {0};
    Saga__V1__StateCounts state_counts = SAGA__V1__STATE_COUNTS__INIT;
    uint64_t scheduled = 0;
    int rc = store_count_by_state(c->srv->st, counts);
    if (rc == 0)
        rc = store_schedule_count(c->srv->st, &scheduled);
    int search = nz(m->id_prefix)[0] != '\0' || nz(m->client_key)[0] != '\0' ||
                 m->created_after_ms > 0 || m->created_before_ms > 0;
    store_search_filter f = {.state = (int)m->state,
                             .type = nz(m->type),
                             .after_id = nz(m->after_id),
                             .limit = limit,
                             .id_prefix = nz(m->id_prefix),
                             .client_key = nz(m->client_key),
                             .created_after_ms = m->created_after_ms,
                             .created_before_ms = m->created_before_ms};
    if (rc == 0 && m->state == SAGA__V1__SAGA_STATE__SAGA_SCHEDULED)
        rc = store_schedule_list(c->srv->st, nz(m->type), nz(m->after_id), limit,
                                 list_collect_scheduled, &l);
    else if (rc == 0 && search)
        rc = store_search(c->srv->st, &f, list_collect, &l);
    else if (rc == 0)
        rc = store_list(c->srv->st, (int)m->state, nz(m->type), nz(m->after_id), limit,
                        list_collect, &l);
    if (l.oom) {
        reply_oom(c, "list");
        goto out;
    }
    if (rc != 0) {
        reply_store_error(c, "list");
        goto out;
    }
    list.n_sagas = l.n;
    list.sagas = l.rows;
    state_counts.running = counts[SAGA_RUNNING];
    state_counts.compensating = counts[SAGA_COMPENSATING];
    state_counts.completed = counts[SAGA_COMPLETED];
    state_counts.compensated = counts[SAGA_COMPENSATED];
    state_counts.failed = counts[SAGA_FAILED];
    state_counts.scheduled = scheduled;
    list.counts = &state_counts;
    /* A full page may have a successor; a short one is the last. */
    list.next_after = pb_str(l.n == limit ? l.rows[l.n - 1]->saga_id : NULL);
    rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_LIST;
    rep.list = &list;
    actx_reply(c, &rep);
out:
    arena_free(&a);
}

static void read_stats(admin_ctx *c)
{
    uint64_t counts[6] = {0};
    engine_counters ec;
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__Stats stats = SAGA__V1__STATS__INIT;
    rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK; /* 0 would be "no status" */

    if (store_count_by_state(c->srv->st, counts) != 0) {
        reply_store_error(c, "stats");
        return;
    }
    engine_get_counters(c->srv->eng, &ec);
    stats.running = counts[SAGA_RUNNING];
    stats.compensating = counts[SAGA_COMPENSATING];
    stats.completed = counts[SAGA_COMPLETED];
    stats.compensated = counts[SAGA_COMPENSATED];
    stats.failed = counts[SAGA_FAILED];
    stats.in_flight = ec.in_flight;
    stats.steps_sent = ec.steps_sent;
    stats.retries = ec.retries;
    stats.timeouts = ec.timeouts;
    stats.replayed_replies = ec.replayed_replies;
    rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_STATS;
    rep.stats = &stats;
    actx_reply(c, &rep);
}

/* ---- Definition versions: types and describe ---------------------------- */

typedef struct {
    arena *a;
    catalog *defs;
    Saga__V1__SagaType **types;
    size_t n, cap;
    int oom;
} types_ctx;

static Saga__V1__SagaType *find_type(types_ctx *t, const char *type)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->types[i]->type, type) == 0)
            return t->types[i];
    return NULL;
}

/* Appends one stored version (rows come by type, then version). */
static int types_collect(const store_definition *d, void *arg)
{
    types_ctx *t = arg;
    Saga__V1__SagaType *st = find_type(t, d->type);
    if (st == NULL) {
        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 16;
            Saga__V1__SagaType **grown = arena_calloc(t->a, cap, sizeof *grown);
            if (grown == NULL)
                return t->oom = 1;
            if (t->n > 0)
                memcpy(grown, t->types, t->n * sizeof *grown);
            t->types = grown;
            t->cap = cap;
        }
        if ((st = arena_calloc(t->a, 1, sizeof *st)) == NULL)
            return t->oom = 1;
        saga__v1__saga_type__init(st);
        if ((st->type = arena_strdup(t->a, d->type)) == NULL)
            return t->oom = 1;
        t->types[t->n++] = st;
    }
    Saga__V1__TypeVersion *v = arena_calloc(t->a, 1, sizeof *v);
    Saga__V1__TypeVersion **vs = arena_calloc(t->a, st->n_versions + 1, sizeof *vs);
    if (v == NULL || vs == NULL)
        return t->oom = 1;
    saga__v1__type_version__init(v);
    v->version = d->version;
    v->hash = arena_strdup(t->a, d->hash);
    v->loaded_at_ms = d->loaded_at_ms;
    const saga_def *cur = catalog_current(t->defs, d->type);
    v->current = cur != NULL && cur->version == d->version;
    if (v->hash == NULL)
        return t->oom = 1;
    if (st->n_versions > 0)
        memcpy(vs, st->versions, st->n_versions * sizeof *vs);
    vs[st->n_versions++] = v;
    st->versions = vs;
    return 0;
}

static int types_count(const char *type, uint32_t version, int state, uint64_t n, void *arg)
{
    types_ctx *t = arg;
    Saga__V1__SagaType *st = find_type(t, type);
    for (size_t i = 0; st != NULL && i < st->n_versions; i++) {
        if (st->versions[i]->version != version)
            continue;
        if (state == SAGA_FAILED)
            st->versions[i]->failed += n;
        else
            st->versions[i]->running += n;
    }
    return 0;
}

static void read_types(admin_ctx *c)
{
    arena a = {NULL};
    types_ctx t = {&a, c->srv->defs, NULL, 0, 0, 0};
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__TypeList list = SAGA__V1__TYPE_LIST__INIT;
    int rc = store_definitions(c->srv->st, types_collect, &t);
    if (rc == 0 && !t.oom)
        rc = store_count_by_version(c->srv->st, types_count, &t);
    if (t.oom)
        reply_oom(c, "types");
    else if (rc != 0)
        reply_store_error(c, "types");
    else {
        list.n_types = t.n;
        list.types = t.types;
        rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK; /* 0 would be "no status" */
        rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_TYPES;
        rep.types = &list;
        actx_reply(c, &rep);
    }
    arena_free(&a);
}

static Saga__V1__RetryPolicy *describe_retry(arena *a, const retry_policy *p)
{
    Saga__V1__RetryPolicy *r = arena_calloc(a, 1, sizeof *r);
    if (r == NULL)
        return NULL;
    saga__v1__retry_policy__init(r);
    r->max_attempts = p->max_attempts;
    r->initial_backoff_ms = p->initial_backoff_ms;
    r->max_backoff_ms = p->max_backoff_ms;
    r->multiplier = p->multiplier;
    return r;
}

/* def's steps into out (strings borrowed: defs live as long as the engine). */
static int describe_def(arena *a, const saga_def *def, Saga__V1__TypeDescription *out)
{
    out->type = pb_str(def->name);
    out->version = def->version;
    out->n_inputs = def->n_inputs;
    out->inputs = def->inputs;
    Saga__V1__StepDefinition **v = arena_calloc(a, def->n_steps, sizeof *v);
    Saga__V1__StepDefinition *st = arena_calloc(a, def->n_steps, sizeof *st);
    if (v == NULL || st == NULL)
        return -1;
    for (size_t i = 0; i < def->n_steps; i++) {
        const step_def *d = &def->steps[i];
        Saga__V1__StepDefinition *o = &st[i];
        saga__v1__step_definition__init(o);
        o->name = pb_str(d->name);
        o->participant = pb_str(d->participant);
        o->action = pb_str(d->action);
        o->compensation = pb_str(d->compensation);
        o->all_inputs = !d->has_input_list;
        o->n_inputs = d->n_inputs;
        o->inputs = d->inputs;
        o->n_outputs = d->n_outputs;
        o->outputs = d->outputs;
        o->timeout_ms = d->timeout_ms;
        if ((o->retry = describe_retry(a, &d->retry)) == NULL)
            return -1;
        if (d->compensation != NULL &&
            (o->compensation_retry = describe_retry(a, &d->compensation_retry)) == NULL)
            return -1;
        v[i] = o;
    }
    out->n_steps = def->n_steps;
    out->steps = v;
    return 0;
}

static void read_describe(admin_ctx *c, const Saga__V1__DescribeType *m)
{
    arena a = {NULL};
    AdminReply rep = SAGA__V1__ADMIN_REPLY__INIT;
    Saga__V1__TypeDescription desc = SAGA__V1__TYPE_DESCRIPTION__INIT;
    const saga_def *cur = catalog_current(c->srv->defs, m->type);
    const saga_def *def = cur;
    char why[300], hash[SHA256_HEX_LEN + 1];
    if (m->version == 0 && cur == NULL) {
        actx_reply_error(c, SAGA__V1__ADMIN_STATUS__ADMIN_NOT_FOUND,
                         "no saga file defines type '%.255s' now (sagactl types lists the stored "
                         "versions; add --version)",
                         m->type);
        return;
    }
    if (m->version != 0 && (def = catalog_get(c->srv->defs, c->srv->st, m->type, m->version, why,
                                              sizeof why)) == NULL) {
        actx_reply_error(c, SAGA__V1__ADMIN_STATUS__ADMIN_NOT_FOUND, "%s", why);
        return;
    }
    if (describe_def(&a, def, &desc) != 0) {
        reply_oom(c, "describe");
        arena_free(&a);
        return;
    }
    desc.current = def == cur;
    if (catalog_hash(c->srv->defs, def, hash, sizeof hash) == 0)
        desc.hash = hash;
    rep.status = SAGA__V1__ADMIN_STATUS__ADMIN_OK; /* 0 would be "no status" */
    rep.body_case = SAGA__V1__ADMIN_REPLY__BODY_DESCRIPTION;
    rep.description = &desc;
    actx_reply(c, &rep);
    arena_free(&a);
}

/* Answers one queued read; the request was validated on receipt. */
static void serve_read(admin_ctx *c, const AdminRequest *req)
{
    switch (req->body_case) {
    case SAGA__V1__ADMIN_REQUEST__BODY_STATUS:
        read_status(c, req->status->saga_id);
        break;
    case SAGA__V1__ADMIN_REQUEST__BODY_HISTORY:
        read_history(c, req->history);
        break;
    case SAGA__V1__ADMIN_REQUEST__BODY_LIST:
        read_list(c, req->list);
        break;
    case SAGA__V1__ADMIN_REQUEST__BODY_TYPES:
        read_types(c);
        break;
    case SAGA__V1__ADMIN_REQUEST__BODY_DESCRIBE:
        read_describe(c, req->describe);
        break;
    default:
        read_stats(c);
        break;
    }
}

AdminReply *admin_read(engine *e, store *st, const AdminRequest *req)
{
    admin_server srv = {.eng = e, .defs = engine_catalog(e), .st = st};
    AdminReply *rep = NULL;
    admin_ctx c = {.srv = &srv, .captured = &rep};
    serve_read(&c, req);
    return rep;
}

static void *reader_main(void *arg)
{
    admin_server *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        while (!srv->closing && srv->queue_head == NULL)
            pthread_cond_wait(&srv->reader_cv, &srv->mu);
        if (srv->closing) {
            /* Drop what is queued: the socket is closing, nobody can get an answer. */
            for (admin_ctx *q = srv->queue_head; q != NULL; q = q->next) {
                saga__v1__admin_request__free_unpacked(q->req, NULL);
                q->req = NULL;
                q->state = ACTX_IDLE;
            }
            srv->queue_head = srv->queue_tail = NULL;
            pthread_mutex_unlock(&srv->mu);
            return NULL;
        }
        admin_ctx *c = srv->queue_head;
        srv->queue_head = c->next;
        if (srv->queue_head == NULL)
            srv->queue_tail = NULL;
        pthread_mutex_unlock(&srv->mu);

        AdminRequest *req = c->req;
        c->req = NULL;
        c->next = NULL;
        serve_read(c, req);
        saga__v1__admin_request__free_unpacked(req, NULL);
    }
}

/* Hands c and its request to the reader thread (takes ownership of req). */
static void enqueue_read(admin_ctx *c, AdminRequest *req)
{
    admin_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (srv->closing) {
        pthread_mutex_unlock(&srv->mu);
        saga__v1__admin_request__free_unpacked(req, NULL);
        c->state = ACTX_IDLE;
        return;
    }
    c->state = ACTX_QUEUED;
    c->req = req;
    c->next = NULL;
    if (srv->queue_tail != NULL)
        srv->queue_tail->next = c;
    else
        srv->queue_head = c;
    srv->queue_tail = c;
    pthread_cond_signal(&srv->reader_cv);
    pthread_mutex_unlock(&srv->mu);
}

/* ---- Dispatch ---------------------------------------------------------- */

static const char *request_kind(const AdminRequest *req)
{
    switch (req->body_case) {
    case SAGA__V1__ADMIN_REQUEST__BODY_START:
        return "start";
    case SAGA__V1__ADMIN_REQUEST__BODY_ABORT:
        return "abort";
    case SAGA__V1__ADMIN_REQUEST__BODY_RESUME:
        return "resume";
    case SAGA__V1__ADMIN_REQUEST__BODY_STATUS:
        return "status";
    case SAGA__V1__ADMIN_REQUEST__BODY_HISTORY:
        return "history";
    case SAGA__V1__ADMIN_REQUEST__BODY_LIST:
        return "list";
    case SAGA__V1__ADMIN_REQUEST__BODY_STATS:
        return "stats";
    case SAGA__V1__ADMIN_REQUEST__BODY_RELOAD:
        return "reload";
    case SAGA__V1__ADMIN_REQUEST__BODY_TYPES:
        return "types";
    case SAGA__V1__ADMIN_REQUEST__BODY_DESCRIBE:
        return "describe";
    default:
        return "empty";
    }
}

/* Who sent a request, for the history and the log of abort and resume: on
 * an ipc:// socket the peer's uid (and user name); elsewhere the holder of
 * the admin token, with the peer's address when nng gives it. */
static void peer_name(nng_pipe pipe, const admin_server *srv, char *out, size_t len)
{
    uint64_t uid;
    if (nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid) == 0) {
        struct passwd pw, *found = NULL;
        char buf[1024];
        if (getpwuid_r((uid_t)uid, &pw, buf, sizeof buf, &found) == 0 && found != NULL)
            snprintf(out, len, "uid %" PRIu64 " (%s)", uid, found->pw_name);
        else
            snprintf(out, len, "uid %" PRIu64, uid);
        return;
    }
    nng_sockaddr sa;
    const char *holder = srv->cfg->admin_token != NULL ? "the admin token's holder" : "a client";
    if (nng_pipe_get_addr(pipe, NNG_OPT_REMADDR, &sa) == 0 &&
        (sa.s_family == NNG_AF_INET || sa.s_family == NNG_AF_INET6)) {
        char addr[64] = "";
        if (sa.s_family == NNG_AF_INET) {
            const uint8_t *b = (const uint8_t *)&sa.s_in.sa_addr;
            snprintf(addr, sizeof addr, "%u.%u.%u.%u:%u", b[0], b[1], b[2], b[3],
                     (unsigned)ntohs(sa.s_in.sa_port));
        } else {
            snprintf(addr, sizeof addr, "[ipv6]:%u", (unsigned)ntohs(sa.s_in6.sa_port));
        }
        snprintf(out, len, "%s at %s", holder, addr);
        return;
    }
    snprintf(out, len, "%s", holder);
}

/* Decodes, authorizes and validates one request (check_request), then
 * answers it, queues it for the reader or hands it to the engine. Takes
 * ownership of msg. */
static void handle_request(admin_ctx *c, nng_msg *msg)
{
    admin_server *srv = c->srv;
    admin_checked k;
    char err[512];
    int status = check_request(srv->cfg, srv->defs, nng_msg_body(msg), nng_msg_len(msg), &k, err,
                               sizeof err);
    char who[128] = "operator";
    if (status == SAGA__V1__ADMIN_STATUS__ADMIN_OK &&
        (k.req->body_case == SAGA__V1__ADMIN_REQUEST__BODY_ABORT ||
         k.req->body_case == SAGA__V1__ADMIN_REQUEST__BODY_RESUME))
        peer_name(nng_msg_get_pipe(msg), srv, who, sizeof who);
    /* Past the token check (or, without a token, well formed): the pipe is
     * no longer bounded as unauthenticated (common/listener.h). */
    if (k.malformed == NULL && status != SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED)
        sp_listener_authenticated(srv->listener, nng_msg_get_pipe(msg));
    nng_msg_free(msg);
    if (status != SAGA__V1__ADMIN_STATUS__ADMIN_OK) {
        if (k.malformed != NULL)
            note_malformed(srv, k.malformed);
        else if (status == SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED)
            note_refused(srv, request_kind(k.req));
        else if (status == SAGA__V1__ADMIN_STATUS__ADMIN_INTERNAL)
            log_error("admin: %s", err);
        actx_reply_error(c, status, "%s", err);
        goto done;
    }
    const AdminRequest *req = k.req;
    switch (req->body_case) {
    case SAGA__V1__ADMIN_REQUEST__BODY_START: {
        const char *key = nz(req->start->client_key);
        actx_to_engine(c);
        engine_start_options opts = {.deadline_ms = (int64_t)req->start->deadline_s * 1000,
                                     .start_at_ms = req->start->start_at_ms};
        engine_start_saga_opts(srv->eng, k.def->name, *key ? key : NULL, &k.input, &opts,
                               on_engine_done, c);
        break; /* the engine copied the input */
    }
    case SAGA__V1__ADMIN_REQUEST__BODY_ABORT: {
        const char *reason = nz(req->abort->reason);
        actx_to_engine(c);
        if (req->abort->scheduled_only)
            engine_cancel_start(srv->eng, req->abort->saga_id, on_engine_done, c);
        else
            engine_abort_saga(srv->eng, req->abort->saga_id, who, *reason ? reason : NULL,
                              on_engine_done, c);
        break;
    }
    case SAGA__V1__ADMIN_REQUEST__BODY_RESUME:
        actx_to_engine(c);
        engine_resume_saga(srv->eng, req->resume->saga_id, who,
                           *nz(req->resume->reason) ? req->resume->reason : NULL, on_engine_done,
                           c);
        break;
    case SAGA__V1__ADMIN_REQUEST__BODY_RELOAD:
        log_info("admin: reload requested");
        actx_to_engine(c);
        engine_reload(srv->eng, on_reload_done, c);
        break;
    default: /* status, history, list, stats, types, describe: nothing else passed check_request
              */
        enqueue_read(c, k.req);
        k.req = NULL; /* the reader frees it */
        break;
    }
done:
    checked_free(&k);
}

static void actx_recv(admin_ctx *c)
{
    if (srv_closing(c->srv)) {
        c->state = ACTX_IDLE;
        return;
    }
    c->state = ACTX_RECV;
    nng_ctx_recv(c->ctx, c->aio);
}

/* The aio callback of every context: runs on nng's threads. */
static void actx_cb(void *arg)
{
    admin_ctx *c = arg;
    int rv = nng_aio_result(c->aio);
    switch (c->state) {
    case ACTX_RECV:
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
            c->state = ACTX_IDLE;
        } else if (rv != 0) {
            log_warn("admin: receive failed: %s", nng_strerror(rv));
            actx_recv(c);
        } else {
            handle_request(c, nng_aio_get_msg(c->aio));
        }
        break;
    case ACTX_SEND:
        if (rv != 0) {
            /* The message is still ours when a send fails. */
            nng_msg_free(nng_aio_get_msg(c->aio));
            nng_aio_set_msg(c->aio, NULL);
            if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
                log_warn("admin: reply not sent: %s", nng_strerror(rv));
        }
        actx_recv(c);
        break;
    default:
        break; /* no operation was pending */
    }
}

/* ---- Lifecycle --------------------------------------------------------- */

/* Listens on the admin URL through common/listener (receive limit, ipc://
 * files owner-only, TLS from the config's tls group on tls+tcp://, and the
 * bounds on connections that have not authenticated: conn_* settings). */
static int listen_admin(admin_server *srv, char *err, size_t errlen)
{
    const orch_config *cfg = srv->cfg;
    srv->tls = (sec_tls_files){.ca_file = cfg->tls_ca_file,
                               .cert_file = cfg->tls_cert_file,
                               .key_file = cfg->tls_key_file,
                               .require_peer_cert = 0}; /* clients authenticate with the token */
    sp_listener_opts lo = {.name = "admin",
                           .url = cfg->admin_url,
                           .recv_max = WIRE_RECV_MAX(ADMIN_MAX_REQUEST),
                           .configure = sec_listener_tls_hook,
                           .configure_arg = &srv->tls,
                           .auth_timeout_ms = cfg->conn_header_timeout_ms,
                           .max_unauthenticated = cfg->conn_max_unauthenticated};
    char lerr[256];
    if (sp_listener_open(&srv->listener, srv->sock, &lo, lerr, sizeof lerr) != 0) {
        snprintf(err, errlen, "admin url: %s", lerr);
        return -1;
    }
    return 0;
}

admin_server *admin_start(const orch_config *cfg, engine *e, char *err, size_t errlen)
{
    int rv;
    admin_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    srv->cfg = cfg;
    srv->eng = e;
    srv->defs = engine_catalog(e);
    if (pthread_mutex_init(&srv->mu, NULL) != 0)
        goto fail_nosync;
    if (pthread_cond_init(&srv->reader_cv, NULL) != 0) {
        pthread_mutex_destroy(&srv->mu);
        goto fail_nosync;
    }
    if (pthread_cond_init(&srv->pending_cv, NULL) != 0) {
        pthread_cond_destroy(&srv->reader_cv);
        pthread_mutex_destroy(&srv->mu);
        goto fail_nosync;
    }

    char serr[1024];
    if ((srv->st = store_open(cfg->database, 1, 1, serr, sizeof serr)) == NULL) {
        snprintf(err, errlen, "admin: read-only store: %s", serr);
        goto fail;
    }
    if ((rv = nng_rep0_open(&srv->sock)) != 0) {
        snprintf(err, errlen, "admin: rep socket: %s", nng_strerror(rv));
        goto fail;
    }
    srv->sock_open = 1;
    if ((rv = nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ,
                                  WIRE_RECV_MAX(ADMIN_MAX_REQUEST))) != 0) {
        snprintf(err, errlen, "admin: %s: %s", NNG_OPT_RECVMAXSZ, nng_strerror(rv));
        goto fail;
    }
    for (size_t i = 0; i < ADMIN_CONTEXTS; i++) {
        admin_ctx *c = &srv->ctxs[i];
        c->srv = srv;
        if ((rv = nng_aio_alloc(&c->aio, actx_cb, c)) != 0 ||
            (rv = nng_ctx_open(&c->ctx, srv->sock)) != 0) {
            snprintf(err, errlen, "admin: context: %s", nng_strerror(rv));
            goto fail;
        }
    }
    if (pthread_create(&srv->reader, NULL, reader_main, srv) != 0) {
        snprintf(err, errlen, "admin: cannot start the reader thread");
        goto fail;
    }
    srv->reader_started = 1;
    if (listen_admin(srv, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < ADMIN_CONTEXTS; i++)
        actx_recv(&srv->ctxs[i]);
    log_info("admin: listening on %s", cfg->admin_url);
    return srv;

fail_nosync:
    snprintf(err, errlen, "admin: cannot initialize locks");
    free(srv);
    return NULL;
fail:
    admin_stop(srv);
    return NULL;
}

void admin_stop(admin_server *srv)
{
    if (srv == NULL)
        return;
    /* 1. No context starts anything new; the reader drops its queue. */
    pthread_mutex_lock(&srv->mu);
    srv->closing = 1;
    pthread_cond_broadcast(&srv->reader_cv);
    pthread_mutex_unlock(&srv->mu);
    /* 2. Close the listener (it joins its watchdog), then the socket:
     *    pending receives and sends fail with ECLOSED. */
    sp_listener_close(srv->listener);
    if (srv->sock_open)
        nng_close(srv->sock);
    if (srv->reader_started)
        pthread_join(srv->reader, NULL);
    /* 3. Wait for the engine to call back every command it was given. */
    pthread_mutex_lock(&srv->mu);
    while (srv->engine_pending > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        if (pthread_cond_timedwait(&srv->pending_cv, &srv->mu, &until) != 0 &&
            srv->engine_pending > 0)
            log_warn("admin: still waiting for the engine to answer %zu command(s)",
                     srv->engine_pending);
    }
    pthread_mutex_unlock(&srv->mu);
    /* 4. Wait for callbacks still running, then free. */
    for (size_t i = 0; i < ADMIN_CONTEXTS; i++) {
        admin_ctx *c = &srv->ctxs[i];
        if (c->aio != NULL) {
            nng_aio_stop(c->aio);
            nng_aio_free(c->aio);
        }
    }
    store_close(srv->st);
    pthread_cond_destroy(&srv->pending_cv);
    pthread_cond_destroy(&srv->reader_cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}
