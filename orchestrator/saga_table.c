/*
 * saga_table — see saga_table.h.
 */
#include "saga_table.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A deleted slot: a probe goes on past it (invariant 2). */
static const char table_tombstone[] = "";

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int table_grow(saga_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 1024;
    if (t->len * 4 < t->cap)
        cap = t->cap; /* mostly tombstones: rehash in place */
    const char **keys = calloc(cap, sizeof *keys);
    saga **vals = calloc(cap, sizeof *vals);
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->keys[i] == NULL || t->keys[i] == table_tombstone)
            continue;
        size_t j = hash_str(t->keys[i]) & (cap - 1);
        while (keys[j] != NULL)
            j = (j + 1) & (cap - 1);
        keys[j] = t->keys[i];
        vals[j] = t->vals[i];
    }
    free(t->keys);
    free(t->vals);
    t->keys = keys;
    t->vals = vals;
    t->cap = cap;
    t->used = t->len;
    return 0;
}

saga *saga_table_get(const saga_table *t, const char *key)
{
    if (t->cap == 0)
        return NULL;
    for (size_t j = hash_str(key) & (t->cap - 1);; j = (j + 1) & (t->cap - 1)) {
        if (t->keys[j] == NULL)
            return NULL;
        if (t->keys[j] != table_tombstone && strcmp(t->keys[j], key) == 0)
            return t->vals[j];
    }
}

int saga_table_put(saga_table *t, const char *key, saga *s)
{
    if ((t->used + 1) * 2 > t->cap && table_grow(t) != 0)
        return -1;
    size_t j = hash_str(key) & (t->cap - 1);
    while (t->keys[j] != NULL && t->keys[j] != table_tombstone)
        j = (j + 1) & (t->cap - 1);
    if (t->keys[j] == NULL)
        t->used++;
    t->keys[j] = key;
    t->vals[j] = s;
    t->len++;
    return 0;
}

void saga_table_del(saga_table *t, const char *key)
{
    if (t->cap == 0)
        return;
    for (size_t j = hash_str(key) & (t->cap - 1);; j = (j + 1) & (t->cap - 1)) {
        if (t->keys[j] == NULL)
            return;
        if (t->keys[j] != table_tombstone && strcmp(t->keys[j], key) == 0) {
            t->keys[j] = table_tombstone;
            t->vals[j] = NULL;
            t->len--;
            return;
        }
    }
}

saga *saga_table_slot(const saga_table *t, size_t i)
{
    if (t->keys == NULL || t->keys[i] == NULL || t->keys[i] == table_tombstone)
        return NULL;
    return t->vals[i];
}

void saga_table_free(saga_table *t)
{
    free(t->keys);
    free(t->vals);
    t->keys = NULL;
    t->vals = NULL;
    t->cap = t->len = t->used = 0;
}
