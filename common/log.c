/* log — see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* Appends s to buf as the inside of a JSON string; returns the new length. */
static size_t json_escape_into(char *buf, size_t len, size_t cap, const char *s)
{
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", c);
        } else {
            buf[len++] = (char)c;
        }
    }
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
        len = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"program\":\"",
                               stamp, level_names[level]);
        len = json_escape_into(line, len, sizeof line, log_program);
        len += (size_t)snprintf(line + len, sizeof line - len, "\",\"msg\":\"");
        len = json_escape_into(line, len, sizeof line - 3, msg);
        len += (size_t)snprintf(line + len, sizeof line - len, "\"}\n");
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
