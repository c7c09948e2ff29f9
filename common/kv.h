/*
 * kv — an ordered string-to-string map: saga inputs, step params and results.
 *
 * Invariants: keys are unique and kept sorted by strcmp, so iteration order,
 * the JSON text and the canonical encoding are the same for equal maps.
 * The map owns copies of every key and value. JSON carries only UTF-8: in
 * the JSON text, invalid UTF-8 bytes of a key or value are U+FFFD (the admin
 * API and the wire refuse such strings before they reach a stored map). kv_free on a zeroed map is
 * a no-op. Functions returning int give 0 on success and -1 on out-of-memory (or, for kv_from_json,
 * malformed text).
 */
#ifndef SAGA_KV_H
#define SAGA_KV_H

#include <stddef.h>

typedef struct {
    char *key;
    char *value;
} kv_pair;

typedef struct kvmap { /* tagged: participant.h names it without this header */
    kv_pair *items;
    size_t len;
    size_t cap;
} kvmap;

#define KVMAP_INIT {NULL, 0, 0}

void kv_free(kvmap *m);
/* Inserts or replaces; copies both strings. */
int kv_set(kvmap *m, const char *key, const char *value);
/* The value for key, or NULL. Points into the map. */
const char *kv_get(const kvmap *m, const char *key);
/* Copies every pair of src into dst, replacing values of equal keys. */
int kv_merge(kvmap *dst, const kvmap *src);
int kv_equal(const kvmap *a, const kvmap *b);

/* A compact JSON object of strings, e.g. {"a":"1"}, written by jansson (the
 * stored form of inputs and results); malloc'd, caller frees. */
char *kv_to_json(const kvmap *m);
/* Parses a flat JSON object of strings (what kv_to_json writes, and what
 * older versions wrote by hand: the same JSON) into m. */
int kv_from_json(kvmap *m, const char *json);

#endif
