/*
 * json_util — the few helpers every JSON producer of the project needs on top
 * of jansson (the one JSON library: documents are built as json_t and written
 * by json_dumps, never by hand).
 *
 * Invariant: a string reaching a document through ju_str is valid UTF-8
 * (jansson refuses anything else, which would silently drop a field): bytes
 * that do not start a well-formed sequence are replaced by U+FFFD, so stored
 * or peer-supplied text can never make a document invalid or incomplete.
 * Functions returning json_t * give a new reference, NULL when out of memory.
 */
#ifndef SAGA_JSON_UTIL_H
#define SAGA_JSON_UTIL_H

#include <jansson.h>

/* s as a JSON string (invalid UTF-8 repaired); JSON null when s is NULL. */
json_t *ju_str(const char *s);
/* s as a JSON string, or null when s is NULL or "" (an absent optional text). */
json_t *ju_str_or_null(const char *s);
/* Sets obj[key] (repaired as ju_str) to value, taking the reference; -1 when value is NULL (it
 * could not be built) or out of memory, so builders can OR the results and
 * check once. */
int ju_set(json_t *obj, const char *key, json_t *value);
/* Appends value to arr, taking the reference; -1 as for ju_set. */
int ju_append(json_t *arr, json_t *value);

/* v as compact JSON text and a newline (one line: an HTTP body, an NDJSON
 * record), malloc'd, its length in *len; NULL when out of memory. Takes the
 * reference to v (NULL v gives NULL), so a builder's result can be passed. */
char *ju_line(json_t *v, size_t *len);
/* ju_line of {"error": message, "status": status}: how every HTTP refusal is
 * answered (the status repeated in the body, for clients that log bodies only). */
char *ju_error_line(int status, const char *message, size_t *len);

#endif
