/*
 * saga_table — the engine's index of the sagas in memory: an open-addressing
 * hash table from a string key (a saga id, or a client key) to the saga.
 *
 * Invariants:
 *   1. Keys are not copied: each points into the saga it maps to, so a saga
 *      must leave every table before it is freed.
 *   2. A deleted slot becomes a tombstone, never moves other entries: a walk
 *      over the slots (saga_table_slot) may delete the entry it is at.
 *   3. The capacity is a power of two and at most half the slots are used
 *      (tombstones included); a table mostly of tombstones is rehashed in
 *      place instead of grown.
 *
 * Only the engine thread uses it (engine.c, invariant 1); no locking.
 */
#ifndef SAGA_TABLE_H
#define SAGA_TABLE_H

#include <stddef.h>

#include "saga.h"

typedef struct {
    const char **keys; /* point into the saga they map to */
    saga **vals;
    size_t cap, len, used; /* used counts tombstones too */
} saga_table;

/* The saga under key, or NULL. */
saga *saga_table_get(const saga_table *t, const char *key);

/* Maps key (which must stay valid while it is in the table) to s: 0, or -1
 * when out of memory. The key must not be in the table already. */
int saga_table_put(saga_table *t, const char *key, saga *s);

/* Removes key if it is there. */
void saga_table_del(saga_table *t, const char *key);

/* Slot i (0 <= i < t->cap): its saga, or NULL when it is empty or deleted. */
saga *saga_table_slot(const saga_table *t, size_t i);

/* Frees the table's memory, not the sagas; the table is then empty. */
void saga_table_free(saga_table *t);

#endif
