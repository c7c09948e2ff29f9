/*
 * store_backend — how store.c reaches the implementation of store.h that a
 * handle was opened with (store_sqlite.c, store_pg.c). Internal to the
 * store: nothing above store.h includes it.
 *
 * Every backend's handle begins with a `store` whose `be` points at its
 * table; store.c calls through it. A NULL entry means the backend has no
 * such notion and store.c answers for it (a SQLite file has one node: no
 * lease, nothing to claim, nothing ever rejected).
 */
#ifndef SAGA_STORE_BACKEND_H
#define SAGA_STORE_BACKEND_H

#include "store.h"

typedef struct store_backend store_backend;

struct store {
    const store_backend *be;
};

struct store_backend {
    const char *name; /* "sqlite", "postgresql" */
    void (*close)(store *st);
    const char *(*errmsg)(store *st);
    int (*begin)(store *st);
    int (*commit)(store *st);
    void (*rollback)(store *st);
    int (*save_saga)(store *st, const saga *s);
    int (*append_history)(store *st, const char *saga_id, int64_t at_ms, const saga_event *ev,
                          const char *step_name);
    int (*find_client_key)(store *st, const char *client_key, char id_out[37]);
    int (*load_saga)(store *st, const char *id, saga **out);
    int (*load_unfinished)(store *st, int (*fn)(saga *s, void *arg), void *arg);
    int (*list)(store *st, int state, const char *type, const char *after_id, uint32_t limit,
                int (*fn)(const store_summary *row, void *arg), void *arg);
    int (*search)(store *st, const store_search_filter *f,
                  int (*fn)(const store_summary *row, void *arg), void *arg);
    int (*history)(store *st, const char *saga_id, int (*fn)(const store_event *ev, void *arg),
                   void *arg);
    int (*count_by_state)(store *st, uint64_t counts[6]);
    int (*oldest_created)(store *st, int state, int64_t *ms);
    int (*definition_version)(store *st, const char *type, const char *hash, uint32_t *version);
    int (*definition_max)(store *st, const char *type, uint32_t *version);
    int (*definition_add)(store *st, const store_definition *d);
    int (*definition_get)(store *st, const char *type, uint32_t version,
                          int (*fn)(const store_definition *d, void *arg), void *arg);
    int (*definitions)(store *st, int (*fn)(const store_definition *d, void *arg), void *arg);
    int (*count_by_version)(store *st,
                            int (*fn)(const char *type, uint32_t version, int state, uint64_t n,
                                      void *arg),
                            void *arg);
    int (*pin_unversioned)(store *st, const char *type, uint32_t version);
    int (*error_is_transient)(const store *st);
    int (*error_is_corrupt_row)(const store *st);
    void (*set_corrupt_row_handler)(store *st,
                                    int (*fn)(const char *saga_id, const char *why, void *arg),
                                    void *arg);
    int (*quarantine_saga)(store *st, const char *saga_id, const char *why, int64_t now_ms);
    int (*purge_finished)(store *st, int64_t cutoff_ms, int batch, uint64_t *purged);
    /* Scheduled starts (store.h). */
    int (*schedule_add)(store *st, const store_schedule *s);
    int (*schedule_fire)(store *st, const char *id);
    int (*schedule_due)(store *st, int64_t now_ms, uint32_t max,
                        int (*fn)(const store_schedule *s, void *arg), void *arg);
    int (*schedule_postpone)(store *st, const char *id, int64_t retry_at_ms);
    int (*schedule_cancel)(store *st, const char *id);
    int (*schedule_get)(store *st, const char *id, const char *client_key, store_schedule *out);
    int (*schedule_list)(store *st, const char *type, const char *after_id, uint32_t limit,
                         int (*fn)(const store_schedule *s, void *arg), void *arg);
    int (*schedule_count)(store *st, uint64_t *n);
    /* Several nodes (NULL: one node only). */
    int (*node_join)(store *st, const char *node_name, int64_t lease_ms);
    int (*node_renew)(store *st);
    int (*node_leave)(store *st);
    int (*claim_orphans)(store *st, uint32_t max, int (*fn)(const char *saga_id, void *arg),
                         void *arg);
    int (*claim_saga)(store *st, const char *saga_id);
    enum store_rejection (*rejection)(const store *st, const char **saga_id);
};

extern const store_backend store_sqlite_backend;
extern const store_backend store_pg_backend;

store *store_sqlite_open(const char *path, int durability_full, int read_only, char *err,
                         size_t errlen);
store *store_pg_open(const char *url, int durability_full, int read_only, char *err, size_t errlen);

#endif
