/* ojson — see ojson.h. A recursive-descent JSON reader for test output. */
#include "ojson.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OJ_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t pos;
    const char *err;
} oj_parser;

static void oj_release(oj *v)
{
    if (v == NULL)
        return;
    free(v->str);
    for (size_t i = 0; i < v->n; i++) {
        oj_release(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

void oj_free(oj *v)
{
    oj_release(v);
    free(v);
}

static void skip_ws(oj_parser *p)
{
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
           p->s[p->pos] == '\r')
        p->pos++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At an opening quote: the decoded string (malloc'd), or NULL. */
static char *parse_string(oj_parser *p)
{
    if (p->s[p->pos] != '"') {
        p->err = "expected a string";
        return NULL;
    }
    p->pos++;
    size_t start = p->pos, end = start;
    while (p->s[end] != '"') { /* the decoded text is never longer than the raw one */
        if (p->s[end] == '\0') {
            p->err = "unterminated string";
            return NULL;
        }
        end += p->s[end] == '\\' && p->s[end + 1] != '\0' ? 2 : 1;
    }
    char *out = malloc(end - start + 1), *o = out;
    if (out == NULL) {
        p->err = "out of memory";
        return NULL;
    }
    while (p->pos < end) {
        char c = p->s[p->pos++];
        if ((unsigned char)c < 0x20) {
            p->err = "control character in a string";
            free(out);
            return NULL;
        }
        if (c != '\\') {
            *o++ = c;
            continue;
        }
        char e = p->s[p->pos++];
        unsigned cp;
        switch (e) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '/':
            *o++ = '/';
            break;
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u':
            if (p->pos + 4 > end || hex4(p->s + p->pos, &cp) != 0) {
                p->err = "bad \\u escape";
                free(out);
                return NULL;
            }
            p->pos += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p->pos + 6 <= end && p->s[p->pos] == '\\' &&
                p->s[p->pos + 1] == 'u') {
                unsigned lo;
                if (hex4(p->s + p->pos + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p->pos += 6;
                }
            }
            o += put_utf8(o, cp); /* at most 4 bytes for 6 or 12 raw ones */
            break;
        default:
            p->err = "bad escape";
            free(out);
            return NULL;
        }
    }
    *o = '\0';
    p->pos = end + 1;
    return out;
}

static int parse_value(oj_parser *p, oj *v, int depth);

static int push_item(oj *v, char *key, oj *item)
{
    oj *items = realloc(v->items, (v->n + 1) * sizeof *items);
    if (items == NULL)
        return -1;
    v->items = items;
    if (v->type == OJ_OBJ) {
        char **keys = realloc(v->keys, (v->n + 1) * sizeof *keys);
        if (keys == NULL)
            return -1;
        v->keys = keys;
        v->keys[v->n] = key;
    }
    v->items[v->n++] = *item;
    return 0;
}

static int parse_container(oj_parser *p, oj *v, int depth)
{
    char close = p->s[p->pos] == '{' ? '}' : ']';
    v->type = close == '}' ? OJ_OBJ : OJ_ARR;
    p->pos++;
    skip_ws(p);
    if (p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        oj item;
        memset(&item, 0, sizeof item);
        skip_ws(p);
        if (v->type == OJ_OBJ) {
            if ((key = parse_string(p)) == NULL)
                return -1;
            skip_ws(p);
            if (p->s[p->pos] != ':') {
                free(key);
                p->err = "expected ':'";
                return -1;
            }
            p->pos++;
        }
        if (parse_value(p, &item, depth + 1) != 0 || push_item(v, key, &item) != 0) {
            free(key);
            oj_release(&item);
            if (p->err == NULL)
                p->err = "out of memory";
            return -1;
        }
        skip_ws(p);
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] == close) {
            p->pos++;
            return 0;
        }
        p->err = "expected ',' or the end of the container";
        return -1;
    }
}

static int parse_value(oj_parser *p, oj *v, int depth)
{
    memset(v, 0, sizeof *v);
    if (depth > OJ_MAX_DEPTH) {
        p->err = "nested too deeply";
        return -1;
    }
    skip_ws(p);
    const char *s = p->s + p->pos;
    if (*s == '{' || *s == '[')
        return parse_container(p, v, depth);
    if (*s == '"') {
        v->type = OJ_STR;
        v->str = parse_string(p);
        return v->str ? 0 : -1;
    }
    if (strncmp(s, "true", 4) == 0 || strncmp(s, "false", 5) == 0) {
        v->type = OJ_BOOL;
        v->num = *s == 't';
        p->pos += *s == 't' ? 4 : 5;
        return 0;
    }
    if (strncmp(s, "null", 4) == 0) {
        v->type = OJ_NULL;
        p->pos += 4;
        return 0;
    }
    if (*s == '-' || (*s >= '0' && *s <= '9')) {
        char *end;
        v->type = OJ_NUM;
        v->num = strtoll(s, &end, 10);
        if (*end == '.' || *end == 'e' || *end == 'E')
            strtod(s, &end); /* accepted, truncated: sagactl prints integers */
        p->pos += (size_t)(end - s);
        return 0;
    }
    p->err = "unexpected character";
    return -1;
}

oj *oj_parse(const char *text)
{
    if (text == NULL)
        return NULL;
    oj_parser p = {text, 0, NULL};
    oj *v = calloc(1, sizeof *v);
    if (v == NULL)
        return NULL;
    if (parse_value(&p, v, 0) == 0) {
        skip_ws(&p);
        if (text[p.pos] == '\0')
            return v;
        p.err = "text after the value";
    }
    fprintf(stderr, "ojson: %s at offset %zu of:\n%s\n", p.err ? p.err : "error", p.pos, text);
    oj_free(v);
    return NULL;
}

const oj *oj_get(const oj *v, const char *key)
{
    if (v == NULL || v->type != OJ_OBJ)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0)
            return &v->items[i];
    return NULL;
}

const oj *oj_at(const oj *v, size_t i)
{
    if (v == NULL || v->type != OJ_ARR || i >= v->n)
        return NULL;
    return &v->items[i];
}

const char *oj_str(const oj *v, const char *key)
{
    const oj *m = oj_get(v, key);
    return m && m->type == OJ_STR ? m->str : NULL;
}

int64_t oj_int(const oj *v, const char *key, int64_t def)
{
    const oj *m = oj_get(v, key);
    return m && (m->type == OJ_NUM || m->type == OJ_BOOL) ? m->num : def;
}

size_t oj_len(const oj *v)
{
    return v && v->type == OJ_ARR ? v->n : 0;
}
