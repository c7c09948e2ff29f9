/*
 * tjson — reading JSON in tests with jansson (the project's one JSON
 * library): what `sagactl --json`, the HTTP API and `--log-format json`
 * print is parsed into json_t, so tests check fields by name rather than by
 * grepping text. Only the few one-liners jansson lacks are here.
 */
#ifndef SAGA_TEST_TJSON_H
#define SAGA_TEST_TJSON_H

#include <jansson.h>
#include <stdint.h>

/* The value of text, or NULL with the reason (line, column) on stderr. */
json_t *tj_parse(const char *text);
/* The string member key of v, or NULL when v is no object, key is absent
 * or its value is not a string (null included). */
const char *tj_str(const json_t *v, const char *key);
/* The integer (or boolean, as 0/1) member key of v; def otherwise. */
int64_t tj_int(const json_t *v, const char *key, int64_t def);

/* 0 when a and b are equal JSON values (objects field by field, whatever
 * their order; arrays element by element), else 1 with the path of the
 * first difference in where (e.g. "steps[2].last_error"). */
int tj_diff(const json_t *a, const json_t *b, char *where, size_t n);

#endif
