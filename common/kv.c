/* kv — see kv.h. */
#include "kv.h"

#include <stdlib.h>
#include <string.h>

#include "json_util.h"
#include "util.h"

/* A pair's key and value share one allocation, "key\0value\0", owned through
 * key: one malloc per pair instead of two (a saga in memory holds a map of
 * inputs per saga and one of results per step). */
static int pair_make(kv_pair *p, const char *key, const char *value)
{
    size_t klen = strlen(key), vlen = strlen(value);
    char *block = malloc(klen + vlen + 2);
    if (block == NULL)
        return -1;
    memcpy(block, key, klen + 1);
    memcpy(block + klen + 1, value, vlen + 1);
    p->key = block;
    p->value = block + klen + 1;
    return 0;
}

void kv_free(kvmap *m)
{
    for (size_t i = 0; i < m->len; i++)
        free(m->items[i].key); /* the value with it (pair_make) */
    free(m->items);
    m->items = NULL;
    m->len = m->cap = 0;
}

/* Binary search: index of key, or of where it would be inserted (*found = 0). */
static size_t kv_find(const kvmap *m, const char *key, int *found)
{
    size_t lo = 0, hi = m->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->items[mid].key, key);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

int kv_set(kvmap *m, const char *key, const char *value)
{
    int found;
    size_t at = kv_find(m, key, &found);
    kv_pair pair;
    if (pair_make(&pair, key, value) != 0)
        return -1;
    if (found) {
        free(m->items[at].key);
        m->items[at] = pair;
        return 0;
    }
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        kv_pair *items = realloc(m->items, cap * sizeof *items);
        if (items == NULL) {
            free(pair.key);
            return -1;
        }
        m->items = items;
        m->cap = cap;
    }
    memmove(&m->items[at + 1], &m->items[at], (m->len - at) * sizeof *m->items);
    m->items[at] = pair;
    m->len++;
    return 0;
}

const char *kv_get(const kvmap *m, const char *key)
{
    int found;
    size_t at = kv_find(m, key, &found);
    return found ? m->items[at].value : NULL;
}

int kv_merge(kvmap *dst, const kvmap *src)
{
    for (size_t i = 0; i < src->len; i++)
        if (kv_set(dst, src->items[i].key, src->items[i].value) != 0)
            return -1;
    return 0;
}

int kv_equal(const kvmap *a, const kvmap *b)
{
    if (a->len != b->len)
        return 0;
    for (size_t i = 0; i < a->len; i++)
        if (strcmp(a->items[i].key, b->items[i].key) != 0 ||
            strcmp(a->items[i].value, b->items[i].value) != 0)
            return 0;
    return 1;
}

char *kv_to_json(const kvmap *m)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return NULL;
    int bad = 0;
    for (size_t i = 0; i < m->len && !bad; i++)
        bad = ju_set(obj, m->items[i].key, ju_str(m->items[i].value));
    /* Keys are sorted and jansson keeps insertion order: equal maps, equal text. */
    char *text = bad ? NULL : json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

int kv_from_json(kvmap *m, const char *json)
{
    json_t *root = json_loads(json, 0, NULL);
    if (root == NULL && !util_utf8_valid(json, strlen(json))) {
        /* Text stored before jansson wrote it may hold raw invalid UTF-8,
         * which jansson refuses: read it with those bytes as U+FFFD. */
        char *fixed = util_utf8_repair(json);
        root = fixed != NULL ? json_loads(fixed, 0, NULL) : NULL;
        free(fixed);
    }
    int rc = json_is_object(root) ? 0 : -1;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (rc == 0 && (!json_is_string(value) || kv_set(m, key, json_string_value(value)) != 0))
            rc = -1;
    }
    json_decref(root);
    return rc;
}
