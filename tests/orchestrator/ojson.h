/*
 * ojson — a small JSON reader for the orchestrator tests: parses what
 * `sagactl --json` prints into a tree, so tests check fields by name rather
 * than by grepping text.
 *
 * Strict enough for a test (any syntax error gives NULL and says where on
 * stderr); numbers are kept as int64 (sagactl prints only integers). Every
 * string in the tree is NUL-terminated UTF-8; \u escapes are decoded.
 * One tree is one allocation set: oj_free(root) frees it all.
 */
#ifndef SAGA_TEST_OJSON_H
#define SAGA_TEST_OJSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum { OJ_NULL, OJ_BOOL, OJ_NUM, OJ_STR, OJ_ARR, OJ_OBJ } oj_type;

typedef struct oj {
    oj_type type;
    int64_t num; /* OJ_NUM, and OJ_BOOL (0/1) */
    char *str;   /* OJ_STR */
    size_t n;    /* OJ_ARR / OJ_OBJ: items */
    char **keys; /* OJ_OBJ: keys[i] names items[i] */
    struct oj *items;
} oj;

/* The tree of text, or NULL (reason printed) when it is not one JSON value. */
oj *oj_parse(const char *text);
void oj_free(oj *v);

/* Member of an object by key, or NULL (also when v is NULL or not an object). */
const oj *oj_get(const oj *v, const char *key);
/* Element i of an array, or NULL. */
const oj *oj_at(const oj *v, size_t i);
/* The string member key, or NULL when absent or not a string. */
const char *oj_str(const oj *v, const char *key);
/* The number (or bool) member key; def when absent or of another type. */
int64_t oj_int(const oj *v, const char *key, int64_t def);
/* Array length (0 for anything else). */
size_t oj_len(const oj *v);

#endif
