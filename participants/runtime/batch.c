/*
 * batch — processes one batch of encoded StepRequests in ONE database
 * transaction (SQLite or PostgreSQL: the backend's table, store.h) and produces one encoded
 * StepReply per message. The socket path's serving thread (participant.c) and pt_process_batch()
 * both come through here, so tests exercise exactly what the network path runs.
 *
 * Flow of pt_batch_run():
 *
 *   1. Prepare, without touching the database: decode each message, check it
 *      (at most WIRE_MAX_MSG bytes, every string UTF-8 without NUL,
 *      wire_check_request), take its fingerprint. A bad message is answered
 *      REJECTED at once: error naming the problem, one log line,
 *      stats.malformed++, nothing stored, and a key that is not valid text
 *      not echoed. The "retry" fault answers RETRY here, before any handler
 *      or SQL.
 *   2. BEGIN IMMEDIATE.
 *   3. For each remaining request, in arrival order, inside SAVEPOINT
 *      pt_request: barrier_decide() gives REPLAY, CONFLICT, SKIP or RUN.
 *      Only then, for SKIP or RUN, an operation not registered for the
 *      request's phase is answered REJECTED, nothing stored: the key is
 *      looked at first, so a stored key reused with any other operation
 *      answers CONFLICT (rule 3).
 *        REPLAY    the stored reply with replayed = true
 *        CONFLICT  OUTCOME_CONFLICT, nothing stored
 *        SKIP      OUTCOME_SKIPPED, stored (with a fence when the barrier says so)
 *        RUN       the handler inside SAVEPOINT pt_handler:
 *                    PT_OK        its SQL kept, OUTCOME_OK stored
 *                    PT_REJECTED  its SQL rolled back, OUTCOME_REJECTED stored
 *                    PT_RETRY     pt_request rolled back: OUTCOME_RETRY, nothing stored
 *      Any SQLite error of the runtime's own statements rolls back
 *      pt_request and answers RETRY. A later copy of a key in the same batch
 *      sees the earlier copy's row and replays it.
 *   4. The transaction's counters go into pt_counters; crash points and
 *      crash faults fire around COMMIT.
 *   5. If BEGIN, a savepoint operation or COMMIT fails, or the transaction
 *      disappears under a handler, everything is rolled back and every
 *      request of the transaction answers RETRY: the replies built in 3 are
 *      discarded unsent.
 *
 * Invariants: a reply of a well-formed request (OK, REJECTED, SKIPPED,
 * CONFLICT, replays) leaves this file only after the COMMIT that made it
 * true; a RETRY reply, like the REJECTED reply of a malformed message, has
 * nothing stored behind it; a stored reply never exceeds WIRE_MAX_MSG, even
 * with replayed = true.
 *
 * PT_BENCH_NO_BARRIER (defined only by bench/CMakeLists.txt for its
 * bench-*-svc binaries, never for the shipped runtime) skips barrier_decide
 * and barrier_store_record, so that the benchmark can measure what the
 * exactly-once records cost. Such a build is not a conforming participant.
 *
 * Ownership: items[i].msg is borrowed; items[i].reply is malloc'd here and
 * owned by the caller afterwards. Unpacked requests (protobuf-c, NULL
 * allocator) are freed with saga__v1__step_request__free_unpacked here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crashpoint.h"
#include "log.h"
#include "pt_internal.h"
#include "pt_metrics.h"

/* Room left in a stored reply for the replayed flag (tag + varint). */
#define PT_REPLY_MAX (WIRE_MAX_MSG - 16)

/* One request's state through the batch. */
typedef struct {
    StepRequest *req;     /* unpacked; NULL when the message did not decode */
    const pt_op *op;      /* NULL: no operation of that name for the request's phase */
    int bad_text;         /* a string of the request is not UTF-8 or holds a NUL: never echoed */
    int outlived;         /* its saga is older than the retention (rule 9): only a replay is safe */
    uint8_t *fingerprint; /* malloc'd */
    size_t fingerprint_len;
    int in_txn;     /* well-formed: goes through the transaction */
    uint8_t *reply; /* malloc'd; moved into the item at the end */
    size_t reply_len;
    int outcome; /* of reply (pt_metrics) */
    int counted; /* in stats.requests: observed in pt_metrics once the batch is done */
} pt_work;

/* What one transaction counted: persisted and published only after COMMIT. */
typedef struct {
    barrier_counts counts;
    uint64_t retries;
    uint64_t malformed; /* requests refused after the key's lookup (unknown operation) */
    uint64_t outlived;  /* rule 9 refusals */
} pt_tally;

/* Runs one of the batch's savepoint statements (constant SQL) on the backend. */
static int pt_sp_exec(participant *p, const char *sql)
{
    return p->be->sp(p, sql);
}

/* A store error as a reply's error text (handlers' own: pt_tx_error). */
static int pt_store_error(participant *p, pt_reply *reply)
{
    return pt_retry(reply, "database error: %s", p->be->errmsg(p));
}

/* ROLLBACK TO a savepoint and RELEASE it: undone, and off the savepoint stack. */
static int pt_sp_rollback(participant *p, const char *rollback_to, const char *release)
{
    int rc = pt_sp_exec(p, rollback_to);
    return rc == SQLITE_OK ? pt_sp_exec(p, release) : rc;
}

/* Replaces w's reply with a freshly packed one. Returns 0, or -1 when out of memory. */
static int pt_work_answer(pt_work *w, int outcome, const kvmap *result, const char *error)
{
    const char *key = "";
    if (w->req && !w->bad_text && w->req->idempotency_key &&
        strlen(w->req->idempotency_key) <= WIRE_MAX_KEY)
        key = w->req->idempotency_key;
    free(w->reply);
    w->outcome = outcome;
    w->reply = wire_pack_reply(key, outcome, 0, result, error, &w->reply_len);
    return w->reply ? 0 : -1;
}

/* Answers a request that failed to decode or validate. */
static void pt_work_malformed(participant *p, pt_work *w, const char *why, pt_stats *stats)
{
    char clean[PT_ERROR_MAX];
    pt_printable(clean, sizeof clean, why);
    log_warn("%s: rejected a malformed request: %s", p->name, clean);
    stats->malformed++;
    pt_work_answer(w, OUTCOME_REJECTED, NULL, clean);
}

/*
 * Rule 9: a saga older than this participant's retention may have had its
 * keys purged here, so a late request could run its effect a second time.
 * Its age is read from its id when that is a version 7 UUID (as sagad's
 * are); any other id carries no time and is served as before. Checked after
 * the key's lookup (pt_request_run): a record still on file is replayed, as
 * it is the truth; without one nothing can tell whether the effect happened
 * and was purged, so the answer is CONFLICT, which claims no outcome and
 * makes sagad stop for an operator, never REJECTED, which would say "no
 * effect" and skip the step's compensation.
 */
static int pt_saga_outlived_retention(const participant *p, const char *saga_id, int64_t now,
                                      char *why, size_t whylen)
{
    int64_t born;
    if (util_uuid7_time_ms(saga_id, &born) != 0 || now - born <= p->retention_ms)
        return 0;
    snprintf(why, whylen,
             "saga %s began %lld s ago, longer than this participant's retention of %lld s: its "
             "idempotency records may be purged, so the request is refused without effect "
             "(sagad's idempotency_retention_s must stay below --retention-s)",
             saga_id, (long long)((now - born) / 1000), (long long)(p->retention_ms / 1000));
    return 1;
}

/* Step 1 for one message: decode, validate, fingerprint (no database). */
static void pt_work_prepare(participant *p, const pt_item *it, pt_work *w, int64_t now,
                            pt_stats *stats)
{
    char err[256], why[PT_ERROR_MAX];
    if (it->msg == NULL || it->len == 0) {
        pt_work_malformed(p, w, "empty message", stats);
        return;
    }
    if (it->len > WIRE_MAX_MSG) {
        snprintf(why, sizeof why, "message of %zu bytes is larger than %d", it->len, WIRE_MAX_MSG);
        pt_work_malformed(p, w, why, stats);
        return;
    }
    w->req = saga__v1__step_request__unpack(NULL, it->len, it->msg);
    if (w->req == NULL) {
        pt_work_malformed(p, w, "malformed message: not a saga.v1 StepRequest", stats);
        return;
    }
    const char *problem = NULL;
    const char *field =
        wire_invalid_string_field(&saga__v1__step_request__descriptor, it->msg, it->len, &problem);
    if (field != NULL) {
        /* Not echoed: the reply's key stays empty (pt_work_answer). */
        w->bad_text = 1;
        snprintf(why, sizeof why, "invalid request: field '%s' %s", field, problem);
        pt_work_malformed(p, w, why, stats);
        return;
    }
    if (wire_check_request(w->req, err, sizeof err) != 0) {
        snprintf(why, sizeof why, "invalid request: %s", err);
        pt_work_malformed(p, w, why, stats);
        return;
    }
    w->outlived = pt_saga_outlived_retention(p, w->req->saga_id, now, why, sizeof why);
    /* An operation that is not registered is refused in step 3, after the
     * key's lookup: a stored key reused with it answers CONFLICT (rule 3). */
    w->op = pt_op_find(p, w->req->operation);
    if (w->op != NULL && w->op->phase != (int)w->req->phase)
        w->op = NULL;
    stats->requests++;
    w->counted = 1;
    if (pt_faults_roll(&p->faults, p->faults.retry)) {
        stats->retries++;
        pt_work_answer(w, OUTCOME_RETRY, NULL, "fault injected: retry (nothing stored)");
        return;
    }
    w->fingerprint = wire_request_fingerprint(w->req, &w->fingerprint_len);
    if (w->fingerprint == NULL) {
        stats->retries++;
        pt_work_answer(w, OUTCOME_RETRY, NULL, "out of memory");
        return;
    }
    w->in_txn = 1;
}

/*
 * Checks a handler's result against the wire limits and the reply size.
 * Returns 0, or -1 with the reason in err.
 */
static int pt_result_check(const pt_work *w, const pt_reply *reply, char *err, size_t errlen)
{
    const kvmap *m = &reply->result;
    /* Upper bound of the packed reply: every field with its tag and length. */
    size_t size = 32 + strlen(w->req->idempotency_key) + strlen(reply->error);
    if (m->len > WIRE_MAX_PARAMS) {
        snprintf(err, errlen, "%zu result entries, more than %d", m->len, WIRE_MAX_PARAMS);
        return -1;
    }
    for (size_t i = 0; i < m->len; i++) {
        size_t klen = strlen(m->items[i].key), vlen = strlen(m->items[i].value);
        if (klen == 0 || klen > WIRE_MAX_NAME || vlen > WIRE_MAX_VALUE) {
            snprintf(err, errlen, "result entry %zu has a name of %zu or a value of %zu bytes", i,
                     klen, vlen);
            return -1;
        }
        size += klen + vlen + 12;
    }
    if (size > PT_REPLY_MAX) {
        snprintf(err, errlen, "reply of up to %zu bytes, more than %d", size, PT_REPLY_MAX);
        return -1;
    }
    return 0;
}

/*
 * Runs w's handler inside SAVEPOINT pt_handler. Returns PT_OK (SQL kept),
 * PT_REJECTED (SQL rolled back) or PT_RETRY (the caller rolls back the
 * request; reply->error says why), or -1 when the transaction is gone.
 */
static int pt_handler_run(participant *p, pt_work *w, const kvmap *action_result, pt_reply *reply)
{
    const StepRequest *rq = w->req;
    kvmap params = KVMAP_INIT, none = KVMAP_INIT;
    char why[256];
    int hr;

    if (wire_params_to_kv(rq, &params) != 0) {
        hr = pt_retry(reply, "out of memory");
        goto out;
    }
    pt_request hreq = {
        .idempotency_key = rq->idempotency_key,
        .saga_id = rq->saga_id,
        .step = rq->step,
        .operation = rq->operation,
        .phase = (int)rq->phase,
        .attempt = rq->attempt,
        .params = &params,
        .action_result = (int)rq->phase == PHASE_COMPENSATE ? action_result : &none,
        .stmts = p->stmts,
        .runtime = p,
    };
    if (pt_sp_exec(p, "SAVEPOINT pt_handler") != SQLITE_OK) {
        hr = pt_store_error(p, reply);
        goto out;
    }
    if (w->op->tx_handler != NULL) {
        p->tx.err[0] = '\0';
        hr = w->op->tx_handler(&p->tx, &hreq, reply, w->op->arg);
        pt_tx_release(&p->tx);
    } else {
        hr = w->op->handler(pt_db(p), &hreq, reply, w->op->arg);
    }
    /* Before the savepoint ends: no statement of the handler may stay active. */
    p->be->release(p);
    if (!p->be->in_txn(p)) {
        log_error("%s: the transaction ended inside handler '%s' (%s)", p->name, w->op->name,
                  p->be->errmsg(p));
        hr = -1;
        goto out;
    }
    if ((hr == PT_OK || hr == PT_REJECTED) && pt_result_check(w, reply, why, sizeof why) != 0) {
        log_error("%s: handler '%s' returned a result beyond the wire limits: %s", p->name,
                  w->op->name, why);
        kv_free(&reply->result);
        if (hr == PT_OK)
            pt_reject(reply, "handler result exceeds the wire limits: %s", why);
        hr = PT_REJECTED; /* no effect: its SQL is rolled back below */
    }
    switch (hr) {
    case PT_OK:
        reply->error[0] = '\0';
        if (pt_sp_exec(p, "RELEASE pt_handler") != SQLITE_OK)
            hr = pt_store_error(p, reply);
        break;
    case PT_REJECTED:
        if (reply->error[0] == '\0')
            snprintf(reply->error, sizeof reply->error, "rejected by '%s'", w->op->name);
        if (pt_sp_rollback(p, "ROLLBACK TO pt_handler", "RELEASE pt_handler") != SQLITE_OK)
            hr = pt_store_error(p, reply);
        break;
    case PT_RETRY:
        if (reply->error[0] == '\0')
            snprintf(reply->error, sizeof reply->error, "'%s' asked for a retry", w->op->name);
        break;
    default:
        log_error("%s: handler '%s' returned %d, not a pt_outcome", p->name, w->op->name, hr);
        hr = pt_retry(reply, "handler '%s' returned an invalid outcome %d", w->op->name, hr);
        break;
    }
out:
    kv_free(&params);
    return hr;
}

/* Packs w's reply (replayed = false) and stores it with its record. Returns an SQLite code. */
static int pt_work_store(participant *p, pt_work *w, const barrier_request *br, int outcome,
                         const kvmap *result, const char *error, int fence_action, int64_t now)
{
    kvmap none = KVMAP_INIT;
    if (result == NULL)
        result = &none;
    if (pt_work_answer(w, outcome, result, error) != 0)
        return SQLITE_NOMEM;
#ifdef PT_BENCH_NO_BARRIER
    (void)br, (void)fence_action, (void)now; /* benchmark build: nothing recorded */
    return SQLITE_OK;
#else
    char *json = kv_to_json(result); /* malloc'd; freed here */
    if (json == NULL)
        return SQLITE_NOMEM;
    int rc = p->be->store_record(p, br, outcome, w->reply, w->reply_len, json, fence_action, now);
    free(json);
    return rc;
#endif
}

/* Turns a stored reply into w's reply with replayed = true. Returns 0 or -1. */
static int pt_work_replay(pt_work *w, const barrier_decision *d)
{
    StepReply *stored = saga__v1__step_reply__unpack(NULL, d->stored_reply_len, d->stored_reply);
    if (stored == NULL)
        return -1;
    stored->replayed = 1;
    w->outcome = (int)stored->outcome;
    size_t n = saga__v1__step_reply__get_packed_size(stored);
    free(w->reply);
    w->reply = malloc(n ? n : 1);
    if (w->reply != NULL)
        w->reply_len = saga__v1__step_reply__pack(stored, w->reply);
    saga__v1__step_reply__free_unpacked(stored, NULL);
    return w->reply ? 0 : -1;
}

/* Answers CONFLICT (nothing stored) and logs it: key reuse is a defect upstream. */
static void pt_work_conflict(participant *p, pt_work *w, const char *why, pt_tally *t)
{
    char key[96];
    pt_printable(key, sizeof key, w->req->idempotency_key);
    log_warn("%s: CONFLICT for key %s: %s", p->name, key, why);
    t->counts.conflicts++;
    pt_work_answer(w, OUTCOME_CONFLICT, NULL, why);
}

/*
 * A compensation whose action has no record here would be a null
 * compensation and fence the action. But if the action began a call to an
 * external system (an in-flight marker, external.c) and never recorded its
 * outcome, the external effect may exist: skipping would leave it undone.
 * Such a compensation is answered RETRY, nothing stored, until the action's
 * retry records an outcome; sagad retries it and, when its attempts are
 * spent, stops the saga as FAILED for an operator (fail closed). Returns 1
 * when w was answered so, 0 when the compensation may be skipped.
 */
static int pt_compensation_waits(participant *p, pt_work *w, pt_tally *t)
{
    char target[WIRE_MAX_NAME + 1], why[PT_ERROR_MAX];
    int pending = pt_external_pending(p, w->req->saga_id, w->req->step, target, sizeof target);
    if (pending == 0)
        return 0;
    if (pending > 0)
        snprintf(why, sizeof why,
                 "the action called external system '%s' and its outcome is not recorded: "
                 "not compensated until the action is retried (nothing stored)",
                 target);
    else
        snprintf(why, sizeof why,
                 "external-call markers unreadable: cannot tell whether the "
                 "action had an effect (nothing stored)");
    log_warn("%s: compensation answered RETRY: %s", p->name, why);
    t->retries++;
    pt_work_answer(w, OUTCOME_RETRY, NULL, why);
    return 1;
}

/*
 * Step 3 for one request. Returns 0 with w->reply set (RETRY when this
 * request was rolled back), or -1 when the batch transaction is unusable.
 */
static int pt_request_run(participant *p, pt_work *w, int64_t now, pt_tally *t)
{
    const StepRequest *rq = w->req;
    barrier_request br = {
        .key = rq->idempotency_key,
        .saga_id = rq->saga_id,
        .step = rq->step,
        .operation = rq->operation,
        .phase = (int)rq->phase,
        .fingerprint = w->fingerprint,
        .fingerprint_len = w->fingerprint_len,
    };
    barrier_decision d;
    pt_reply reply;
    char why[PT_ERROR_MAX];
    int status = 0, rc = SQLITE_OK, hr;

    barrier_decision_init(&d);
    pt_reply_init(&reply);
    if (pt_sp_exec(p, "SAVEPOINT pt_request") != SQLITE_OK) {
        status = -1;
        goto out;
    }
#ifdef PT_BENCH_NO_BARRIER
    /* Benchmark build (bench/CMakeLists.txt only): no lookup, every request
     * runs its handler; compensations see no action result. */
    d.verdict = BARRIER_RUN;
    snprintf(d.action_operation, sizeof d.action_operation, "%s",
             w->op && w->op->partner ? w->op->partner : "");
#else
    rc = p->be->decide(p, &br, &d);
    if (rc != SQLITE_OK)
        goto rollback;
#endif
    if (w->outlived && d.verdict != BARRIER_REPLAY && d.verdict != BARRIER_CONFLICT) {
        pt_saga_outlived_retention(p, rq->saga_id, now, why, sizeof why);
        log_warn("%s: %s", p->name, why);
        t->outlived++;
        pt_work_answer(w, OUTCOME_CONFLICT, NULL, why);
        goto release;
    }
    if (w->op == NULL && d.verdict != BARRIER_REPLAY && d.verdict != BARRIER_CONFLICT) {
        /* The key is new here (or its own record says nothing against this
         * request): now the unknown operation is refused, nothing stored. */
        snprintf(why, sizeof why, "unknown operation '%s' for phase %s", rq->operation,
                 wire_phase_name(br.phase));
        pt_printable(reply.error, sizeof reply.error, why);
        log_warn("%s: rejected a malformed request: %s", p->name, reply.error);
        t->malformed++;
        t->counts.requests--; /* not a request processed: pt_counters stay as they were */
        w->counted = 0;       /* nor in pt_metrics (unless the batch fails: see below) */
        pt_work_answer(w, OUTCOME_REJECTED, NULL, reply.error);
        goto release;
    }
    switch (d.verdict) {
    case BARRIER_REPLAY:
        if (pt_work_replay(w, &d) != 0) {
            rc = SQLITE_CORRUPT;
            goto rollback;
        }
        t->counts.replays++;
        break;
    case BARRIER_CONFLICT:
        pt_work_conflict(p, w, d.reason, t);
        break;
    case BARRIER_SKIP:
        if (d.fence_action && pt_compensation_waits(p, w, t) != 0)
            goto release; /* answered RETRY, nothing stored */
        rc = pt_work_store(p, w, &br, OUTCOME_SKIPPED, NULL, d.reason, d.fence_action, now);
        if (rc != SQLITE_OK)
            goto rollback;
        t->counts.skipped++;
        break;
    case BARRIER_RUN:
        if (br.phase == PHASE_COMPENSATE && strcmp(d.action_operation, w->op->partner) != 0) {
            snprintf(why, sizeof why, "compensation '%s' does not undo action '%s'", w->op->name,
                     d.action_operation);
            pt_work_conflict(p, w, why, t);
            break;
        }
        hr = pt_handler_run(p, w, &d.action_result, &reply);
        if (hr < 0) {
            status = -1;
            goto out;
        }
        if (hr == PT_RETRY) {
            t->retries++;
            pt_work_answer(w, OUTCOME_RETRY, NULL, reply.error);
            goto rollback_answered;
        }
        rc = pt_work_store(p, w, &br, hr == PT_OK ? OUTCOME_OK : OUTCOME_REJECTED, &reply.result,
                           hr == PT_OK ? NULL : reply.error, 0, now);
        if (rc != SQLITE_OK)
            goto rollback;
        if (hr == PT_OK)
            t->counts.effects++;
        else
            t->counts.rejected++;
        break;
    }
release:
    if (pt_sp_exec(p, "RELEASE pt_request") != SQLITE_OK)
        status = -1;
    goto out;

rollback:
    t->retries++;
    snprintf(why, sizeof why, "database error, nothing stored: %s", sqlite3_errstr(rc));
    log_warn("%s: request answered RETRY: %s (%s)", p->name, why, p->be->errmsg(p));
    pt_work_answer(w, OUTCOME_RETRY, NULL, why);
rollback_answered:
    if (pt_sp_rollback(p, "ROLLBACK TO pt_request", "RELEASE pt_request") != SQLITE_OK)
        status = -1;
out:
    if (!p->be->in_txn(p))
        status = -1; /* the transaction is gone: nothing of the batch holds */
    barrier_decision_free(&d);
    pt_reply_free(&reply);
    return status;
}

/* Steps 2 to 5: the transaction around every well-formed request. */
static void pt_batch_transaction(participant *p, pt_work *work, size_t n, size_t in_txn,
                                 pt_stats *stats)
{
    pt_tally t;
    const char *stage = "BEGIN";
    char why[PT_ERROR_MAX];
    int64_t now = util_wall_ms();

    p->be->changed(p, 1);
    memset(&t, 0, sizeof t);
    if (p->be->begin(p) != SQLITE_OK)
        goto fail;
    stage = "processing";
    for (size_t i = 0; i < n; i++) {
        t.counts.requests += (uint64_t)work[i].in_txn;
        if (work[i].in_txn && pt_request_run(p, &work[i], now, &t) != 0)
            goto fail;
    }
    stage = "counters";
    if (p->be->counts_add(p, &t.counts) != SQLITE_OK)
        goto fail;
    if (pt_faults_roll(&p->faults, p->faults.crash_before_commit))
        pt_faults_crash("crash_before_commit");
    crashpoint("participant.before_commit");
    stage = "COMMIT";
    if (p->be->commit(p) != SQLITE_OK)
        goto fail;
    crashpoint("participant.after_commit");
    if (pt_faults_roll(&p->faults, p->faults.crash_after_commit))
        pt_faults_crash("crash_after_commit");

    stats->effects += t.counts.effects;
    stats->replays += t.counts.replays;
    stats->conflicts += t.counts.conflicts;
    stats->skipped += t.counts.skipped;
    stats->retries += t.retries;
    stats->malformed += t.malformed;
    stats->requests -= t.malformed;
    stats->outlived += t.outlived;
    stats->syncs += !p->synchronous_off && p->be->changed(p, 0);
    return;

fail:
    snprintf(why, sizeof why, "transaction not committed, nothing stored (%s: %s)", stage,
             p->be->errmsg(p));
    p->be->rollback(p);
    log_warn("%s: batch of %zu requests rolled back, all answer RETRY: %s", p->name, in_txn, why);
    for (size_t i = 0; i < n; i++) {
        if (!work[i].in_txn)
            continue;
        work[i].counted = 1; /* stats->requests keeps it: t.malformed is not subtracted */
        stats->retries++;
        pt_work_answer(&work[i], OUTCOME_RETRY, NULL, why);
    }
}

int pt_batch_run(participant *p, pt_item *items, size_t n)
{
    pt_work *work = calloc(n ? n : 1, sizeof *work);
    pt_stats stats;
    size_t in_txn = 0;
    if (work == NULL)
        return -1;
    memset(&stats, 0, sizeof stats);
    double started = pt_metrics_now();
    int64_t now = util_wall_ms();
    for (size_t i = 0; i < n; i++) {
        pt_work_prepare(p, &items[i], &work[i], now, &stats);
        in_txn += (size_t)work[i].in_txn;
    }
    if (in_txn > 0)
        pt_batch_transaction(p, work, n, in_txn, &stats);
    double seconds = pt_metrics_now() - started;
    for (size_t i = 0; i < n; i++) {
        if (work[i].counted)
            pt_metrics_observe(p->metrics, work[i].op ? work[i].op - p->ops : -1,
                               (int)work[i].req->phase, work[i].outcome, seconds);
        items[i].reply = work[i].reply; /* ownership moves to the item */
        items[i].reply_len = work[i].reply ? work[i].reply_len : 0;
        free(work[i].fingerprint);
        if (work[i].req)
            saga__v1__step_request__free_unpacked(work[i].req, NULL);
    }
    free(work);
    pt_stats_add(p, &stats);
    return 0;
}

int pt_process_batch(participant *p, size_t n, const uint8_t *const *msgs, const size_t *lens,
                     uint8_t **replies, size_t *reply_lens)
{
    if (n == 0)
        return 0;
    pt_item *items = calloc(n, sizeof *items);
    int rc = 0;
    if (items == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        items[i].msg = msgs[i];
        items[i].len = lens[i];
    }
    if (pt_batch_run(p, items, n) != 0) {
        free(items);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        replies[i] = items[i].reply; /* the caller owns them now */
        reply_lens[i] = items[i].reply_len;
        if (replies[i] == NULL)
            rc = -1;
    }
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            free(replies[i]);
            replies[i] = NULL;
        }
    }
    free(items);
    return rc;
}
