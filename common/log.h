/*
 * log — one line per event on stderr, for every program of the project.
 *
 * Lines look like "2026-11-22T07:15:14.123Z INFO  sagad: message" or, with
 * log_set_json(1), one JSON object per line for log collectors:
 * {"ts","level","program","msg"} (and "truncated":true when msg was cut to
 * fit), always valid JSON: invalid UTF-8 in a message (a saga type or key
 * from a peer) becomes U+FFFD. Thread-safe:
 * each line is formatted into a local buffer and written with one write(2).
 * Messages longer than the buffer are truncated, never split.
 */
#ifndef SAGA_LOG_H
#define SAGA_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Names the program in every line; the string must outlive all logging. */
void log_init(const char *program);
void log_set_level(enum log_level level);
void log_set_json(int on);
/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *name);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Between log_hold() and log_release(), the calling thread's DEBUG and INFO
 * lines are gathered and written together, at most 4096 bytes (PIPE_BUF) per
 * write(2), so that they still never interleave with other threads' lines.
 * A WARN or ERROR line writes what is held, then itself, at once. For a
 * loop that logs a line per item (sagad's settled sagas): one system call
 * instead of one per line. Hold only around code that cannot die half-way.
 */
void log_hold(void);
void log_release(void);

/*
 * A report a peer could make us repeat at will (malformed requests, a
 * refused connection): logged at most once per LOG_THROTTLE_MS, the first
 * at once, with the number of events since the last report. Not locked:
 * the caller guards it.
 */
#define LOG_THROTTLE_MS 60000
typedef struct {
    uint64_t unreported; /* events since the last report */
    int64_t logged_ms;   /* monotonic time of that report; 0: never */
} log_throttle;
/* Counts one event at now_ms; returns the events to report now (the count
 * since the last report), or 0 when no report is due. */
uint64_t log_throttle_hit(log_throttle *t, int64_t now_ms);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
