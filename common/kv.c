/* kv — see kv.h. */
#include "kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void kv_free(kvmap *m)
{
    for (size_t i = 0; i < m->len; i++) {
        free(m->items[i].key);
        free(m->items[i].value);
    }
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
    char *v = util_strdup(value);
    if (v == NULL)
        return -1;
    if (found) {
        free(m->items[at].value);
        m->items[at].value = v;
        return 0;
    }
    char *k = util_strdup(key);
    if (k == NULL) {
        free(v);
        return -1;
    }
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        kv_pair *items = realloc(m->items, cap * sizeof *items);
        if (items == NULL) {
            free(k);
            free(v);
            return -1;
        }
        m->items = items;
        m->cap = cap;
    }
    memmove(&m->items[at + 1], &m->items[at], (m->len - at) * sizeof *m->items);
    m->items[at].key = k;
    m->items[at].value = v;
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

static int buf_reserve(char **buf, size_t *len, size_t *cap, size_t more)
{
    if (*len + more + 1 <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < *len + more + 1)
        ncap *= 2;
    char *nbuf = realloc(*buf, ncap);
    if (nbuf == NULL)
        return -1;
    *buf = nbuf;
    *cap = ncap;
    return 0;
}

int kv_json_quote(char **buf, size_t *len, size_t *cap, const char *s)
{
    /* Worst case every byte becomes \u00XX. */
    if (buf_reserve(buf, len, cap, strlen(s) * 6 + 2) != 0)
        return -1;
    char *out = *buf;
    size_t n = *len;
    out[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            out[n++] = '\\';
            out[n++] = '"';
            break;
        case '\\':
            out[n++] = '\\';
            out[n++] = '\\';
            break;
        case '\n':
            out[n++] = '\\';
            out[n++] = 'n';
            break;
        case '\t':
            out[n++] = '\\';
            out[n++] = 't';
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                n += (size_t)snprintf(out + n, 7, "\\u%04x", *p);
            } else {
                out[n++] = (char)*p;
            }
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    *len = n;
    return 0;
}

char *kv_to_json(const kvmap *m)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (buf_reserve(&buf, &len, &cap, 2) != 0)
        return NULL;
    buf[len++] = '{';
    for (size_t i = 0; i < m->len; i++) {
        if (buf_reserve(&buf, &len, &cap, 2) != 0)
            goto oom;
        if (i > 0)
            buf[len++] = ',';
        if (kv_json_quote(&buf, &len, &cap, m->items[i].key) != 0)
            goto oom;
        buf[len++] = ':';
        if (kv_json_quote(&buf, &len, &cap, m->items[i].value) != 0)
            goto oom;
    }
    if (buf_reserve(&buf, &len, &cap, 1) != 0)
        goto oom;
    buf[len++] = '}';
    buf[len] = '\0';
    return buf;
oom:
    free(buf);
    return NULL;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses a JSON string at *pp into a malloc'd C string; NULL on error. */
static char *parse_string(const char **pp)
{
    const char *p = *pp;
    if (*p != '"')
        return NULL;
    p++;
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    while (*p != '"') {
        if (*p == '\0')
            goto bad;
        if (n + 5 > cap) {
            cap *= 2;
            char *grown = realloc(out, cap);
            if (grown == NULL)
                goto bad;
            out = grown;
        }
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        switch (*p) {
        case '"':
        case '\\':
        case '/':
            out[n++] = *p;
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'u': {
            unsigned cp = 0;
            for (int i = 1; i <= 4; i++) {
                int h = hexval(p[i]);
                if (h < 0)
                    goto bad;
                cp = cp * 16 + (unsigned)h;
            }
            p += 4;
            if (cp == 0)
                goto bad; /* C strings cannot hold NUL */
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xc0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3f));
            } else {
                out[n++] = (char)(0xe0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[n++] = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default:
            goto bad;
        }
        p++;
    }
    out[n] = '\0';
    *pp = p + 1;
    return out;
bad:
    free(out);
    return NULL;
}

int kv_from_json(kvmap *m, const char *json)
{
    const char *p = skip_ws(json);
    if (*p++ != '{')
        return -1;
    p = skip_ws(p);
    if (*p == '}')
        return *skip_ws(p + 1) == '\0' ? 0 : -1;
    for (;;) {
        p = skip_ws(p);
        char *k = parse_string(&p);
        if (k == NULL)
            return -1;
        p = skip_ws(p);
        if (*p++ != ':') {
            free(k);
            return -1;
        }
        p = skip_ws(p);
        char *v = parse_string(&p);
        if (v == NULL) {
            free(k);
            return -1;
        }
        int rc = kv_set(m, k, v);
        free(k);
        free(v);
        if (rc != 0)
            return -1;
        p = skip_ws(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}')
            return *skip_ws(p + 1) == '\0' ? 0 : -1;
        return -1;
    }
}
