/* json_util — see json_util.h. */
#include "json_util.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

json_t *ju_str(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *v = json_string(s);
    if (v != NULL)
        return v;
    char *fixed = util_utf8_repair(s); /* json_string refuses invalid UTF-8 */
    if (fixed == NULL)
        return NULL;
    v = json_string(fixed);
    free(fixed);
    return v;
}

json_t *ju_str_or_null(const char *s)
{
    return s == NULL || s[0] == '\0' ? json_null() : ju_str(s);
}

int ju_set(json_t *obj, const char *key, json_t *value)
{
    if (value == NULL)
        return -1;
    if (util_utf8_valid(key, strlen(key)))
        return json_object_set_new(obj, key, value) == 0 ? 0 : -1;
    char *fixed = util_utf8_repair(key); /* keys come from stored maps too */
    int rc = fixed != NULL && json_object_set_new(obj, fixed, value) == 0 ? 0 : -1;
    if (fixed == NULL)
        json_decref(value);
    free(fixed);
    return rc;
}

int ju_append(json_t *arr, json_t *value)
{
    if (value == NULL)
        return -1;
    return json_array_append_new(arr, value) == 0 ? 0 : -1;
}

char *ju_line(json_t *v, size_t *len)
{
    char *text = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (text == NULL)
        return NULL;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (line == NULL) {
        free(text);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

char *ju_error_line(int status, const char *message, size_t *len)
{
    json_t *o = json_object();
    if (o != NULL && (ju_set(o, "error", ju_str(message)) != 0 ||
                      ju_set(o, "status", json_integer(status)) != 0)) {
        json_decref(o);
        return NULL;
    }
    return ju_line(o, len);
}
