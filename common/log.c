/* log — see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json_util.h"
#include "util.h"

static const char *log_program = "saga";
static enum log_level log_threshold = LOG_INFO;
static int log_json;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

#define LOG_LINE_MAX 4096 /* = PIPE_BUF: one write of at most this never interleaves */

/* The calling thread's held lines (log_hold). */
static _Thread_local struct {
    int on;
    size_t len;
    char buf[LOG_LINE_MAX];
} held;

static void write_all_or_drop(const char *buf, size_t len)
{
    ssize_t ignored = write(STDERR_FILENO, buf, len);
    (void)ignored; /* a log line that cannot be written is dropped */
}

static void held_flush(void)
{
    if (held.len > 0)
        write_all_or_drop(held.buf, held.len);
    held.len = 0;
}

void log_hold(void)
{
    held.on = 1;
}

void log_release(void)
{
    held_flush();
    held.on = 0;
}

void log_init(const char *program)
{
    log_program = program;
}

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

void log_set_json(int on)
{
    log_json = on;
}

int log_level_parse(const char *name)
{
    static const char *const lower[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, lower[i]) == 0)
            return i;
    return -1;
}

/*
 * The JSON form of one line into line (cap bytes, newline included); returns
 * its length, or 0 when it cannot be built. msg is repaired to valid UTF-8
 * and, when the escaped line would not fit, cut (at a character boundary) and
 * marked with "truncated": a log line is always one whole JSON object.
 */
static size_t json_line(char *line, size_t cap, const char *stamp, const char *level,
                        const char *msg)
{
    json_t *obj = json_object();
    char *text = util_utf8_repair(msg);
    size_t len = 0;
    if (obj == NULL || text == NULL ||
        (ju_set(obj, "ts", json_string(stamp)) | ju_set(obj, "level", json_string(level)) |
         ju_set(obj, "program", ju_str(log_program))) != 0)
        goto out;
    size_t keep = strlen(text);
    for (;;) {
        text[keep] = '\0';
        if (ju_set(obj, "msg", json_string(text)) != 0)
            goto out;
        size_t n = json_dumpb(obj, line, cap - 1, JSON_COMPACT);
        if (n > 0 && n < cap - 1) {
            line[n] = '\n';
            len = n + 1;
            break;
        }
        if (keep == 0)
            goto out;
        keep /= 2; /* escapes grow a byte up to 6: halving fits in a few rounds */
        while (keep > 0 && ((unsigned char)text[keep] & 0xC0) == 0x80)
            keep--; /* not inside a character */
        if (ju_set(obj, "truncated", json_true()) != 0)
            goto out;
    }
out:
    free(text);
    json_decref(obj);
    return len;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < log_threshold)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    char line[LOG_LINE_MAX];
    size_t len;
    if (log_json) {
        len = json_line(line, sizeof line, stamp, level_names[level], msg);
        if (len == 0)
            return; /* out of memory: the line is dropped, never written half-built */
    } else {
        len = (size_t)snprintf(line, sizeof line, "%s %-5s %s: %s\n", stamp, level_names[level],
                               log_program, msg);
    }
    if (len >= sizeof line) {
        len = sizeof line - 1;
        line[len - 1] = '\n';
    }
    if (!held.on || level >= LOG_WARN) {
        held_flush(); /* keeps this thread's lines in order */
        write_all_or_drop(line, len);
        return;
    }
    if (held.len + len > sizeof held.buf)
        held_flush();
    memcpy(held.buf + held.len, line, len);
    held.len += len;
}

uint64_t log_throttle_hit(log_throttle *t, int64_t now_ms)
{
    t->unreported++;
    if (t->logged_ms != 0 && now_ms - t->logged_ms < LOG_THROTTLE_MS)
        return 0;
    uint64_t count = t->unreported;
    t->unreported = 0;
    t->logged_ms = now_ms;
    return count;
}
