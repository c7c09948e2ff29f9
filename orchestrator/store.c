/*
 * store — chooses the implementation of store.h a database names and
 * dispatches every call to it (store_backend.h). Holds no state of its own.
 */
#include "db_url.h"
#include "store_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

store *store_open(const char *database, int durability_full, int read_only, char *err,
                  size_t errlen)
{
    if (db_url_is_postgresql(database))
        return store_pg_open(database, durability_full, read_only, err, errlen);
    return store_sqlite_open(database, durability_full, read_only, err, errlen);
}

void store_close(store *st)
{
    if (st != NULL)
        st->be->close(st);
}

const char *store_errmsg(store *st)
{
    return st == NULL ? "no store" : st->be->errmsg(st);
}

const char *store_backend_name(const store *st)
{
    return st->be->name;
}

int store_begin(store *st)
{
    return st->be->begin(st);
}

int store_commit(store *st)
{
    return st->be->commit(st);
}

void store_rollback(store *st)
{
    st->be->rollback(st);
}

int store_save_saga(store *st, const saga *s)
{
    return st->be->save_saga(st, s);
}

int store_append_history(store *st, const char *saga_id, int64_t at_ms, const saga_event *ev,
                         const char *step_name)
{
    return st->be->append_history(st, saga_id, at_ms, ev, step_name);
}

int store_find_client_key(store *st, const char *client_key, char id_out[37])
{
    return st->be->find_client_key(st, client_key, id_out);
}

int store_load_saga(store *st, const char *id, saga **out)
{
    return st->be->load_saga(st, id, out);
}

int store_load_unfinished(store *st, int (*fn)(saga *s, void *arg), void *arg)
{
    return st->be->load_unfinished(st, fn, arg);
}

int store_list(store *st, int state, const char *type, const char *after_id, uint32_t limit,
               int (*fn)(const store_summary *row, void *arg), void *arg)
{
    return st->be->list(st, state, type, after_id, limit, fn, arg);
}

int store_search(store *st, const store_search_filter *f,
                 int (*fn)(const store_summary *row, void *arg), void *arg)
{
    store_search_filter g = *f;
    char end[40] = "";
    size_t n = g.id_prefix != NULL ? strlen(g.id_prefix) : 0;
    if (n >= sizeof end)
        return 0; /* longer than any id: nothing matches */
    if (n > 0) {
        /* The ids beginning with the prefix are those in [prefix, end), end
         * being the prefix with its last character raised by one: ids are
         * ASCII, so bytewise order is the BINARY collation's. */
        memcpy(end, g.id_prefix, n + 1);
        end[n - 1] = (char)(end[n - 1] + 1);
        g.id_prefix_end = end;
    } else {
        g.id_prefix_end = NULL;
    }
    return st->be->search(st, &g, fn, arg);
}

int store_history(store *st, const char *saga_id, int (*fn)(const store_event *ev, void *arg),
                  void *arg)
{
    return st->be->history(st, saga_id, fn, arg);
}

int store_count_by_state(store *st, uint64_t counts[6])
{
    return st->be->count_by_state(st, counts);
}

int store_oldest_created(store *st, int state, int64_t *ms)
{
    return st->be->oldest_created(st, state, ms);
}

int store_definition_version(store *st, const char *type, const char *hash, uint32_t *version)
{
    return st->be->definition_version(st, type, hash, version);
}

int store_definition_max(store *st, const char *type, uint32_t *version)
{
    return st->be->definition_max(st, type, version);
}

int store_definition_add(store *st, const store_definition *d)
{
    return st->be->definition_add(st, d);
}

int store_definition_get(store *st, const char *type, uint32_t version,
                         int (*fn)(const store_definition *d, void *arg), void *arg)
{
    return st->be->definition_get(st, type, version, fn, arg);
}

int store_definitions(store *st, int (*fn)(const store_definition *d, void *arg), void *arg)
{
    return st->be->definitions(st, fn, arg);
}

int store_count_by_version(store *st,
                           int (*fn)(const char *type, uint32_t version, int state, uint64_t n,
                                     void *arg),
                           void *arg)
{
    return st->be->count_by_version(st, fn, arg);
}

int store_pin_unversioned(store *st, const char *type, uint32_t version)
{
    return st->be->pin_unversioned(st, type, version);
}

int store_error_is_transient(const store *st)
{
    return st->be->error_is_transient(st);
}

int store_error_is_corrupt_row(const store *st)
{
    return st->be->error_is_corrupt_row(st);
}

void store_set_corrupt_row_handler(store *st,
                                   int (*fn)(const char *saga_id, const char *why, void *arg),
                                   void *arg)
{
    st->be->set_corrupt_row_handler(st, fn, arg);
}

int store_quarantine_saga(store *st, const char *saga_id, const char *why, int64_t now_ms)
{
    return st->be->quarantine_saga(st, saga_id, why, now_ms);
}

int store_purge_finished(store *st, int64_t cutoff_ms, int batch, uint64_t *purged)
{
    return st->be->purge_finished(st, cutoff_ms, batch, purged);
}

/* ---- Several nodes: a backend without them has exactly one ---------------- */

int store_is_shared(const store *st)
{
    return st->be->node_join != NULL;
}

int store_node_join(store *st, const char *node_name, int64_t lease_ms)
{
    return st->be->node_join ? st->be->node_join(st, node_name, lease_ms) : 0;
}

int store_node_renew(store *st)
{
    return st->be->node_renew ? st->be->node_renew(st) : 0;
}

int store_node_leave(store *st)
{
    return st->be->node_leave ? st->be->node_leave(st) : 0;
}

int store_claim_orphans(store *st, uint32_t max, int (*fn)(const char *saga_id, void *arg),
                        void *arg)
{
    return st->be->claim_orphans ? st->be->claim_orphans(st, max, fn, arg) : 0;
}

int store_claim_saga(store *st, const char *saga_id)
{
    return st->be->claim_saga ? st->be->claim_saga(st, saga_id) : 0;
}

enum store_rejection store_rejection(const store *st, const char **saga_id)
{
    if (st->be->rejection)
        return st->be->rejection(st, saga_id);
    *saga_id = NULL;
    return STORE_REJECT_NONE;
}

void store_schedule_clear(store_schedule *s)
{
    free(s->type);
    free(s->client_key);
    kv_free(&s->input);
    memset(s, 0, sizeof *s);
}

int store_schedule_add(store *st, const store_schedule *s)
{
    return st->be->schedule_add(st, s);
}

int store_schedule_fire(store *st, const char *id)
{
    return st->be->schedule_fire(st, id);
}

int store_schedule_due(store *st, int64_t now_ms, uint32_t max,
                       int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    return st->be->schedule_due(st, now_ms, max, fn, arg);
}

int store_schedule_postpone(store *st, const char *id, int64_t retry_at_ms)
{
    return st->be->schedule_postpone(st, id, retry_at_ms);
}

int store_schedule_cancel(store *st, const char *id)
{
    return st->be->schedule_cancel(st, id);
}

int store_schedule_get(store *st, const char *id, const char *client_key, store_schedule *out)
{
    return st->be->schedule_get(st, id, client_key, out);
}

int store_schedule_list(store *st, const char *type, const char *after_id, uint32_t limit,
                        int (*fn)(const store_schedule *s, void *arg), void *arg)
{
    return st->be->schedule_list(st, type, after_id, limit, fn, arg);
}

int store_schedule_count(store *st, uint64_t *n)
{
    return st->be->schedule_count(st, n);
}
