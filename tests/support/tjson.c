/* tjson — see tjson.h. */
#include "tjson.h"

#include <stdio.h>
#include <string.h>

json_t *tj_parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text != NULL ? text : "", JSON_DECODE_ANY, &err);
    if (v == NULL)
        fprintf(stderr, "tjson: not JSON: line %d, column %d: %s\n", err.line, err.column,
                err.text);
    return v;
}

const char *tj_str(const json_t *v, const char *key)
{
    return json_string_value(json_object_get(v, key));
}

int64_t tj_int(const json_t *v, const char *key, int64_t def)
{
    const json_t *m = json_object_get(v, key);
    if (json_is_integer(m))
        return json_integer_value(m);
    if (json_is_boolean(m))
        return json_is_true(m);
    return def;
}

static int diff_at(const json_t *a, const json_t *b, char *where, size_t n, size_t at)
{
    if (json_typeof(a) != json_typeof(b) || (!json_is_object(a) && !json_is_array(a))) {
        if (json_equal(a, b))
            return 0;
        return 1; /* where holds the path so far */
    }
    if (json_is_array(a)) {
        size_t len =
            json_array_size(a) > json_array_size(b) ? json_array_size(a) : json_array_size(b);
        for (size_t i = 0; i < len; i++) {
            snprintf(where + at, n - at, "[%zu]", i);
            const json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
            if (x == NULL || y == NULL)
                return 1;
            if (diff_at(x, y, where, n, strlen(where)))
                return 1;
        }
        where[at] = '\0';
        return 0;
    }
    const char *key;
    const json_t *v;
    for (int pass = 0; pass < 2; pass++) { /* keys of a, then keys only b has */
        const json_t *from = pass == 0 ? a : b, *other = pass == 0 ? b : a;
        json_object_foreach((json_t *)from, key, v)
        {
            snprintf(where + at, n - at, "%s%s", at > 0 ? "." : "", key);
            const json_t *w = json_object_get(other, key);
            if (w == NULL)
                return 1;
            if (pass == 0 && diff_at(v, w, where, n, strlen(where)))
                return 1;
        }
    }
    where[at] = '\0';
    return 0;
}

int tj_diff(const json_t *a, const json_t *b, char *where, size_t n)
{
    where[0] = '\0';
    if (a == NULL || b == NULL)
        return a != b;
    return diff_at(a, b, where, n, 0);
}
