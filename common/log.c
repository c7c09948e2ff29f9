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

    char line[4096];
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
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}
