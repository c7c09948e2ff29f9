/*
 * strbuf — a growable, always NUL-terminated byte buffer for building text
 * (Prometheus expositions; JSON is built with jansson, json_util.h) without counting lengths by
 * hand.
 *
 * An allocation failure is sticky: the buffer stops growing, sb->failed is
 * set and every later append is a no-op, so a caller checks once at the end
 * (sb_ok) instead of after every append. sb_free(NULL-initialised) is safe.
 */
#ifndef SAGA_STRBUF_H
#define SAGA_STRBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; /* NUL-terminated when len > 0; NULL before the first append */
    size_t len, cap;
    int failed;
} strbuf;

#define STRBUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

void sb_append(strbuf *sb, const char *s, size_t n);
void sb_puts(strbuf *sb, const char *s);
void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s escaped as a Prometheus label value (backslash, quote, newline). */
void sb_label_value(strbuf *sb, const char *s);
/* 1 when no append failed. */
int sb_ok(const strbuf *sb);
/* Hands the text to the caller (malloc'd, "" when empty) and resets sb; NULL after a failure. */
char *sb_take(strbuf *sb, size_t *len);
void sb_free(strbuf *sb);

#endif
