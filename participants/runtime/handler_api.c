/*
 * handler_api — the helpers handlers call: request parameters, result
 * entries and the error text of a reply (participant.h). Everything here
 * works on memory the runtime owns for the duration of one handler call;
 * nothing touches the database.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pt_internal.h"

/* participant.h spells the wire's phases without its generated headers. */
_Static_assert((int)PT_PHASE_ACTION == (int)PHASE_ACTION,
               "PT_PHASE_ACTION is saga.v1 PHASE_ACTION");
_Static_assert((int)PT_PHASE_COMPENSATE == (int)PHASE_COMPENSATE,
               "PT_PHASE_COMPENSATE is saga.v1 PHASE_COMPENSATE");

void pt_reply_init(pt_reply *r)
{
    kvmap empty = KVMAP_INIT;
    r->result = empty;
    r->error[0] = '\0';
}

void pt_reply_free(pt_reply *r)
{
    kv_free(&r->result);
}

void pt_printable(char *out, size_t outlen, const char *in)
{
    size_t n = 0;
    if (outlen == 0)
        return;
    for (const unsigned char *s = (const unsigned char *)in; *s && n + 1 < outlen; s++)
        out[n++] = (*s >= 0x20 && *s < 0x7f) ? (char)*s : '?';
    out[n] = '\0';
}

int pt_result_set(pt_reply *reply, const char *key, const char *value)
{
    return kv_set(&reply->result, key, value);
}

int pt_result_set_i64(pt_reply *reply, const char *key, int64_t value)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)value);
    return kv_set(&reply->result, key, buf);
}

static void pt_reply_vset_error(pt_reply *reply, const char *fmt, va_list ap)
{
    vsnprintf(reply->error, sizeof reply->error, fmt, ap);
}

int pt_reject(pt_reply *reply, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pt_reply_vset_error(reply, fmt, ap);
    va_end(ap);
    return PT_REJECTED;
}

int pt_retry(pt_reply *reply, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pt_reply_vset_error(reply, fmt, ap);
    va_end(ap);
    return PT_RETRY;
}

int pt_db_error(pt_reply *reply, sqlite3 *db)
{
    return pt_retry(reply, "database error: %s", sqlite3_errmsg(db));
}

const char *pt_param(const pt_request *req, const char *name)
{
    return kv_get(req->params, name);
}

const char *pt_action_result(const pt_request *req, const char *name)
{
    return req->action_result != NULL ? kv_get(req->action_result, name) : NULL;
}

int pt_param_str(const pt_request *req, pt_reply *reply, const char *name, const char **out)
{
    const char *v = pt_param(req, name);
    if (v == NULL) {
        pt_reject(reply, "missing parameter '%s'", name);
        return -1;
    }
    if (*v == '\0') {
        pt_reject(reply, "parameter '%s' must not be empty", name);
        return -1;
    }
    *out = v;
    return 0;
}

int pt_param_i64(const pt_request *req, pt_reply *reply, const char *name, int64_t min, int64_t max,
                 int64_t *out)
{
    const char *v = pt_param(req, name);
    int64_t n;
    if (v == NULL) {
        pt_reject(reply, "missing parameter '%s'", name);
        return -1;
    }
    if (util_parse_i64(v, &n) != 0 || n < min || n > max) {
        pt_reject(reply, "parameter '%s' must be an integer in [%lld, %lld]", name, (long long)min,
                  (long long)max);
        return -1;
    }
    *out = n;
    return 0;
}
