/*
 * sagactl — the command-line client of sagad's admin API.
 *
 * One invocation sends one AdminRequest (proto/admin.proto) over nng REQ/REP
 * to sagad's admin URL and prints the reply as aligned text or, with --json,
 * as one JSON document; `start --wait` and `status --wait` then poll the
 * saga's status until it settles. docs/SAGACTL.md documents every command.
 *
 * Invariants:
 *  - The exit status says what happened (usage() and docs/SAGACTL.md list
 *    them): 0 ok, 1 sagad answered an error, 2 bad arguments, 3/4 a waited-on
 *    saga ended COMPENSATED/FAILED, 5 sagad could not be reached.
 *  - stdout carries only results; every diagnostic goes to stderr, prefixed
 *    "sagactl: ".
 *  - --json output is always valid JSON, written by jansson: status, list,
 *    history and stats are saga_json's documents (the very ones sagad's
 *    /api serves), invalid UTF-8 becomes U+FFFD (json_util.h). watch and
 *    list --watch print NDJSON: one document per line. Text output escapes
 *    control characters, so stored data cannot drive the terminal.
 *  - Every request is bounded by --timeout; REQ resends are disabled so a
 *    request is sent once per connection (a start without --key is only
 *    safe to retry by hand when its first attempt is known to have failed).
 *
 * Memory: allocation failure ends the program (exit 1, "out of memory"), as
 * in most command-line tools; every unpacked reply is freed by its command.
 */
#define _GNU_SOURCE /* strptime, timegm: list --since/--until */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "admin.h"
#include "admin.pb-c.h"
#include "json_util.h"
#include "saga_json.h"
#include "security.h"
#include "util.h"
#include "wire.h"

enum sagactl_status {
    STATUS_OK = 0,
    STATUS_SERVER_ERROR = 1, /* sagad answered an error (or sagactl itself failed) */
    STATUS_USAGE = 2,
    STATUS_COMPENSATED = 3, /* --wait: the saga ended COMPENSATED */
    STATUS_FAILED = 4,      /* --wait: the saga ended FAILED */
    STATUS_UNREACHABLE = 5, /* no connection or no reply in time */
};

#define DEFAULT_TIMEOUT_MS 10000
#define MAX_TIMEOUT_MS     3600000
#define WAIT_FIRST_MS      50
#define WAIT_MAX_MS        200

typedef Saga__V1__AdminRequest AdminRequest;
typedef Saga__V1__AdminReply AdminReply;

typedef struct {
    const char *url; /* the node being asked */
    char *url_list;  /* --url A,B,C: a copy, cut at the commas */
    char *url_next;  /* the nodes not tried yet, or NULL */
    int sent;        /* the current request left (a node that got it may have acted) */
    int json;
    int timeout_ms;
    nng_socket sock;
    int connected;
    int unanswered;            /* a request got no reply: see client_close */
    char *token;               /* the admin token (see load_token), or NULL; wiped at exit */
    sec_tls_files tls;         /* --tls-ca, --tls-cert, --tls-key for a tls+tcp:// URL */
    atomic_ullong refused_uid; /* 1 + uid of an ipc peer of another user we hung up on; 0: none */
} client;

/* Before a connection is used: over ipc://, hang up on a process of another
 * user, who may have created the socket before sagad (it would get the token). */
static void client_pipe_check(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    client *cl = arg;
    uint64_t uid = 0;
    (void)ev;
    if (!sec_pipe_peer_trusted(pipe, cl->url, &uid)) {
        atomic_store(&cl->refused_uid, (unsigned long long)uid + 1);
        nng_pipe_close(pipe);
    }
}

static const char usage_text[] =
    "usage: sagactl [--url URL] [--json] [--timeout MS] [--token-file FILE]\n"
    "               [--tls-ca FILE [--tls-cert FILE --tls-key FILE]] COMMAND [ARGS...]\n"
    "\n"
    "Commands:\n"
    "  start TYPE [--key KEY] [--deadline D] [--at TIME | --in D] [--wait]\n"
    "        [NAME=VALUE ...]\n"
    "                      start a saga of TYPE with these inputs; prints its id.\n"
    "                      --key KEY  idempotency key: the same key and input give the\n"
    "                                 same saga (\"(existing)\" on stderr), another input\n"
    "                                 is an error naming that saga\n"
    "                      --deadline D  compensate if still RUNNING D after the start\n"
    "                                 (90, 90s, 10m, 2h or 1d; overrides deadline_s)\n"
    "                      --at TIME  start it then, not now: RFC 3339 with a zone,\n"
    "                                 2026-12-03T09:00:00Z or ...T10:00:00+01:00; sagad\n"
    "                                 stores it (list --state scheduled) until then\n"
    "                      --in D     start it D from now (90s, 10m, 2h, 1d)\n"
    "                      --wait     then wait until it is COMPLETED, COMPENSATED or\n"
    "                                 FAILED and print that state\n"
    "  status ID [--wait]  state, input, root cause, durations and steps (with their\n"
    "                      params and results) of one saga; --wait first waits\n"
    "                      until it is COMPLETED, COMPENSATED or FAILED. Wherever a\n"
    "                      command takes an ID, the beginning of one does when only\n"
    "                      one saga's ID begins so (else the candidates are listed)\n"
    "  history ID          all its events, oldest first (times in UTC), with the\n"
    "                      params of each request and the result of each action\n"
    "  watch ID            follow one saga live: print each new event as it\n"
    "                      happens until the saga is COMPLETED, COMPENSATED or\n"
    "                      FAILED (exit status as for --wait); --json: one JSON\n"
    "                      object per event and line\n"
    "  list [--state STATE] [--type TYPE] [--key KEY] [--since T] [--until T]\n"
    "       [--limit N] [--after ID] [--watch]\n"
    "                      sagas, newest first; STATE is running, compensating,\n"
    "                      completed, compensated, failed or scheduled (starts\n"
    "                      waiting for their time, with it); N is 1..1000 (100);\n"
    "                      --after ID continues a list after saga ID;\n"
    "                      --key KEY: the saga started with this client key;\n"
    "                      --since/--until T: created at or after / before T, a\n"
    "                      span back from now (90s, 10m, 2h, 7d), a date\n"
    "                      (2026-12-02) or time (2026-12-02T23:00[:05]), UTC\n"
    "                      unless it ends in Z or +HH:MM/-HH:MM, or epoch ms;\n"
    "                      --watch redraws counts and the list every second until\n"
    "                      interrupted (not a terminal: prints them every second;\n"
    "                      --json: one list document per line)\n"
    "  abort ID [--reason TEXT]\n"
    "                      stop a RUNNING saga (or one FAILED in its actions) and\n"
    "                      compensate the steps it has done; the reason and who\n"
    "                      asked go into its history and sagad's log\n"
    "  cancel ID           cancel a scheduled start before it fires (once its\n"
    "                      saga started: refused, use abort); abort does it too\n"
    "  resume ID [--reason TEXT]\n"
    "                      continue a FAILED saga where it stopped (once its\n"
    "                      cause is fixed); reason and who as for abort\n"
    "  stats               saga counts by state and engine counters\n"
    "  reload              read the saga files again: new sagas start on what they\n"
    "                      define now, sagas in flight finish on the definition\n"
    "                      they started with; a broken file is refused with its\n"
    "                      file:line and nothing changes (exit 1)\n"
    "  types               saga types, each with its definition versions, the\n"
    "                      current one marked, and the sagas running on each\n"
    "  describe TYPE [--version V]\n"
    "                      steps, participants, actions, compensations, inputs,\n"
    "                      outputs and retry policies of TYPE's current definition\n"
    "                      (or of version V)\n"
    "  help                this text\n"
    "\n"
    "Options (anywhere on the line):\n"
    "  --url URL[,URL...]  sagad's admin URL (its config's admin_url); several\n"
    "                      nodes of one cluster: the next is tried when one\n"
    "                      cannot be reached or does not answer\n"
    "  --json              print one JSON document instead of text\n"
    "  --version           (before the command) print sagactl's version and exit\n"
    "  --timeout MS        give up on a request after MS milliseconds (10000)\n"
    "  --token-file FILE   send the admin token held in FILE (owner-only, one\n"
    "                      line): required when sagad sets admin_token_file.\n"
    "                      There is no option taking the token itself: a\n"
    "                      command line is visible to every user\n"
    "  --tls-ca FILE       for a tls+tcp:// URL: the CA (PEM) that signed sagad's\n"
    "                      certificate; required for tls+tcp://\n"
    "  --tls-cert FILE, --tls-key FILE\n"
    "                      for a tls+tcp:// URL: a client certificate and its key\n"
    "  -h, --help          this text\n"
    "  --                  end of options: what follows are arguments\n"
    "\n"
    "Environment:\n"
    "  SAGA_ADMIN_URL      the admin URL when --url is not given; one of the two\n"
    "                      is required\n"
    "  SAGA_ADMIN_TOKEN_FILE  the token file when --token-file is not given\n"
    "  SAGA_ADMIN_TOKEN    the token itself, when neither of the two is given\n"
    "\n"
    "Exit status:\n"
    "  0  success (--wait, watch: the saga COMPLETED)\n"
    "  1  sagad answered an error (unknown saga type, no such saga, ...), or\n"
    "     its reply was unreadable\n"
    "  2  usage error: a bad or missing argument\n"
    "  3  --wait, watch: the saga ended COMPENSATED\n"
    "  4  --wait, watch: the saga ended FAILED\n"
    "  5  sagad could not be reached (refused, no socket, no reply in time)\n";

/* ---- Diagnostics and memory ------------------------------------------- */

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sagactl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sagactl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'sagactl --help'.\n", stderr);
    va_end(ap);
    return STATUS_USAGE;
}

static _Noreturn void die_oom(void)
{
    fputs("sagactl: out of memory\n", stderr);
    exit(STATUS_SERVER_ERROR);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        die_oom();
    return p;
}

static char *xstrdup(const char *s)
{
    char *d = util_strdup(s != NULL ? s : "");
    if (d == NULL)
        die_oom();
    return d;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        die_oom();
    char *s = xcalloc((size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static const char *nz(const char *s)
{
    return s != NULL ? s : "";
}

/* ---- Names of protocol values ----------------------------------------- */

/* The proto name of value v of an enum, without prefix ("SAGA_RUNNING" ->
 * "RUNNING"); NULL for a value the descriptor does not know. */
static const char *enum_name(const ProtobufCEnumDescriptor *d, int v, const char *prefix)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    if (ev == NULL)
        return NULL;
    size_t n = strlen(prefix);
    return strncmp(ev->name, prefix, n) == 0 ? ev->name + n : ev->name;
}

static const char *saga_state_str(int v)
{
    const char *s = enum_name(&saga__v1__saga_state__descriptor, v, "SAGA_");
    return s != NULL ? s : "UNKNOWN";
}

static const char *step_state_str(int v)
{
    const char *s = enum_name(&saga__v1__step_state__descriptor, v, "STEP_");
    return s != NULL ? s : "UNKNOWN";
}

/* "running", "RUNNING" or "SAGA_RUNNING" -> 1; -1 when unknown or UNSPECIFIED. */
static int saga_state_parse_arg(const char *arg)
{
    char name[64] = "SAGA_";
    size_t off = strncasecmp(arg, "SAGA_", 5) == 0 ? 5 : 0;
    if (strlen(arg + off) + 6 > sizeof name)
        return -1;
    for (size_t i = 0; arg[off + i]; i++)
        name[5 + i] = (char)toupper((unsigned char)arg[off + i]);
    const ProtobufCEnumValue *ev =
        protobuf_c_enum_descriptor_get_value_by_name(&saga__v1__saga_state__descriptor, name);
    return ev == NULL || ev->value == SAGA__V1__SAGA_STATE__SAGA_STATE_UNSPECIFIED ? -1 : ev->value;
}

/* A step or event without a reply to show reads OUTCOME_UNSPECIFIED (the
 * protocol's "none"): sagactl shows "-" / null for it. */
static int step_has_outcome(const Saga__V1__StepStatus *st)
{
    return st->last_outcome != SAGA__V1__OUTCOME__OUTCOME_UNSPECIFIED;
}

static int event_has_outcome(const Saga__V1__HistoryEvent *ev)
{
    return ev->outcome != SAGA__V1__OUTCOME__OUTCOME_UNSPECIFIED;
}

/* ---- Text output ------------------------------------------------------- */

/* ISO-8601 UTC with milliseconds into buf; "-" for 0. */
static const char *iso_time(int64_t ms, char buf[32])
{
    if (ms == 0)
        return "-";
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL)
        return "?";
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03dZ", frac);
    return buf;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A span of time for people: "850 ms", "12.3 s", "4m 05s", "2h 03m", "3d 4h". */
static void fmt_span(int64_t ms, char *buf, size_t len)
{
    if (ms < 0)
        ms = -ms;
    if (ms < 1000)
        snprintf(buf, len, "%" PRId64 " ms", ms);
    else if (ms < 60000)
        snprintf(buf, len, "%.1f s", (double)ms / 1000);
    else if (ms < 3600000)
        snprintf(buf, len, "%" PRId64 "m %02" PRId64 "s", ms / 60000, ms / 1000 % 60);
    else if (ms < 86400000)
        snprintf(buf, len, "%" PRId64 "h %02" PRId64 "m", ms / 3600000, ms / 60000 % 60);
    else
        snprintf(buf, len, "%" PRId64 "d %" PRId64 "h", ms / 86400000, ms / 3600000 % 24);
}

/* A wall-clock time for people: how long ago (or from now) and when, the
 * zone stated: "2m 05s ago (2026-12-02 23:46:32 UTC)"; "-" for 0. */
static const char *rel_time(int64_t ms, char buf[96])
{
    if (ms == 0)
        return "-";
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    char when[40] = "?", span[32];
    if (gmtime_r(&secs, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    int64_t d = now_ms() - ms;
    fmt_span(d, span, sizeof span);
    if (d >= 0 && d < 1000)
        snprintf(buf, 96, "just now (%s)", when);
    else
        snprintf(buf, 96, "%s%s%s (%s)", d < 0 ? "in " : "", span, d < 0 ? "" : " ago", when);
    return buf;
}

/* Only how long ago, for tables: "2m 05s ago"; "-" for 0. */
static const char *ago(int64_t ms, char buf[48])
{
    if (ms == 0)
        return "-";
    char span[32];
    int64_t d = now_ms() - ms;
    fmt_span(d, span, sizeof span);
    snprintf(buf, 48, "%s%s%s", d < 0 ? "in " : "", span, d < 0 ? "" : " ago");
    return buf;
}

/*
 * A span of time on the command line: digits and a unit, "90s", "10m", "2h",
 * "7d" (plain digits count default_unit_ms each; 0: a unit is required),
 * into *ms, from 1 unit to max_ms. 0, or -1 when it is none of these.
 */
static int parse_span_ms(const char *text, int64_t default_unit_ms, int64_t max_ms, int64_t *ms)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)text[0]))
        return -1;
    unsigned long long v = strtoull(text, &end, 10);
    int64_t unit = *end == '\0'  ? default_unit_ms
                   : *end == 's' ? 1000
                   : *end == 'm' ? 60000
                   : *end == 'h' ? 3600000
                   : *end == 'd' ? 86400000
                                 : 0;
    if (unit == 0 || (*end != '\0' && end[1] != '\0') || errno != 0 || v == 0 ||
        v > (unsigned long long)(max_ms / unit))
        return -1;
    *ms = (int64_t)v * unit;
    return 0;
}

/*
 * A date and time on the command line, RFC 3339 / ISO 8601:
 * "2026-12-03T09:00:00Z", "2026-12-03 10:00+01:00", seconds and a fraction
 * optional; the time may be left out for the date's midnight. With
 * zone_required, a time without a zone is refused (for --at: it would mean
 * the clock of whichever machine reads it); otherwise it is UTC. 0 with
 * *ms, or -1 with why.
 */
static int parse_datetime_ms(const char *text, int zone_required, int64_t *ms, const char **why)
{
    int y, mo, d, h = 0, mi = 0, n = 0;
    double sec = 0;
    *why = "expected YYYY-MM-DD[THH:MM[:SS]][Z|+HH:MM|-HH:MM]";
    if (sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    const char *p = text + n;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        int k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &k) != 2 || k != 5)
            return -1;
        p += 1 + k;
        if (*p == ':') {
            char *end;
            if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]))
                return -1;
            sec = strtod(p + 1, &end);
            p = end;
        }
    }
    int off_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
            return -1;
        off_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else if (zone_required) {
        *why = "no time zone: add Z (UTC) or an offset such as +01:00";
        return -1;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec < 0 ||
        sec >= 61)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != d) { /* 2026-02-30 normalized away */
        *why = "no such date";
        return -1;
    }
    *ms = ((int64_t)t - (int64_t)off_min * 60) * 1000 + (int64_t)(sec * 1000);
    return 0;
}

/*
 * A point in time for list --since/--until, into milliseconds since the
 * epoch: a span back from now ("90s", "10m", "2h", "7d"), a date or date and
 * time (parse_datetime_ms; UTC unless it names a zone), or epoch
 * milliseconds (digits only, as the JSON's *_ms fields). 0, or -1 when it is
 * none of these.
 */
static int parse_time_arg(const char *text, int64_t *out)
{
    int64_t span;
    const char *why;
    if (text[0] != '\0' && strspn(text, "0123456789") == strlen(text)) {
        errno = 0;
        unsigned long long v = strtoull(text, NULL, 10);
        if (errno != 0 || v > (unsigned long long)INT64_MAX)
            return -1;
        *out = (int64_t)v;
        return 0;
    }
    if (parse_span_ms(text, 0, INT64_MAX / 2, &span) == 0) {
        *out = now_ms() - span;
        return 0;
    }
    return parse_datetime_ms(text, 0, out, &why);
}

/* A copy of s safe to print on a terminal: C0/C1 controls and DEL escaped. */
static char *clean(const char *s)
{
    s = nz(s);
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p < 0x20 || *p == 0x7f || (*p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F)) ? 6 : 1;
    char *out = xcalloc(n + 1, 1), *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n') {
            o += sprintf(o, "\\n");
        } else if (*p == '\t') {
            o += sprintf(o, "\\t");
        } else if (*p == '\r') {
            o += sprintf(o, "\\r");
        } else if (*p < 0x20 || *p == 0x7f) {
            o += sprintf(o, "\\x%02x", *p);
        } else if (*p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) {
            o += sprintf(o, "\\u%04x", p[1]);
            p++;
        } else {
            *o++ = (char)*p;
        }
    }
    *o = '\0';
    return out;
}

/* Columns are measured in code points (clean text has no controls). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xC0) != 0x80)
            w++;
    return w;
}

/* An aligned table: a header row and data rows of cleaned, owned strings. */
typedef struct {
    size_t ncol;
    char **cells; /* row-major */
    size_t nrows, cap;
} table;

static void table_init(table *t, size_t ncol)
{
    t->ncol = ncol;
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* Adds a row of ncol strings (copied through clean(); NULL or "" shows "-"). */
static void table_row(table *t, const char *const *cols)
{
    if (t->nrows == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        char **n = realloc(t->cells, ncap * t->ncol * sizeof *n);
        if (n == NULL)
            die_oom();
        t->cells = n;
        t->cap = ncap;
    }
    for (size_t i = 0; i < t->ncol; i++)
        t->cells[t->nrows * t->ncol + i] = clean(cols[i] != NULL && *cols[i] ? cols[i] : "-");
    t->nrows++;
}

static void table_print(const table *t)
{
    size_t *w = xcalloc(t->ncol, sizeof *w);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncol; c++) {
            size_t cw = text_width(t->cells[r * t->ncol + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncol; c++) {
            const char *cell = t->cells[r * t->ncol + c];
            fputs(cell, stdout);
            if (c + 1 < t->ncol)
                printf("%*s", (int)(w[c] - text_width(cell) + 2), "");
        }
        putchar('\n');
    }
    free(w);
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncol; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* "label   value" lines with the labels padded to one width. */
static void print_field(const char *label, const char *value)
{
    char *v = clean(value != NULL && *value ? value : "-");
    printf("%-12s%s\n", label, v);
    free(v);
}

/* ---- JSON output ------------------------------------------------------- */

/* Prints doc (a new reference from a builder) indented, one field a line (so
 * line-based tools such as grep and sed find a field on its own line), and
 * frees it. A document that could not be built is out of memory. */
static void print_json(json_t *doc)
{
    if (doc == NULL || json_dumpf(doc, stdout, JSON_INDENT(2)) != 0)
        die_oom();
    putchar('\n');
    json_decref(doc);
}

/* Prints doc on one line (an NDJSON record: watch, list --watch) and frees it. */
static void print_json_line(json_t *doc)
{
    size_t len;
    char *line = ju_line(doc, &len);
    if (line == NULL)
        die_oom();
    fwrite(line, 1, len, stdout);
    free(line);
}

/* A new object, or the end of the program. */
static json_t *new_object(void)
{
    json_t *o = json_object();
    if (o == NULL)
        die_oom();
    return o;
}

/* obj[key] = value (a new reference); out of memory ends the program. */
static void put(json_t *obj, const char *key, json_t *value)
{
    if (ju_set(obj, key, value) != 0)
        die_oom();
}

/* ---- Transport --------------------------------------------------------- */

/* Dials a tls+tcp:// URL, verifying sagad's certificate against --tls-ca
 * and the URL's host; in the background, like any remote URL. */
static int client_dial_tls(client *cl)
{
    char err[512];
    nng_dialer d;
    if (cl->tls.ca_file == NULL) {
        complain("cannot reach sagad at %s: a tls+tcp:// URL needs --tls-ca FILE, the CA "
                 "that signed sagad's certificate",
                 cl->url);
        return STATUS_UNREACHABLE;
    }
    int rv = nng_dialer_create(&d, cl->sock, cl->url);
    if (rv != 0) {
        complain("invalid admin URL '%s': %s", cl->url, nng_strerror(rv));
        return STATUS_USAGE;
    }
    char *host = sec_url_host(cl->url);
    rv = sec_tls_dialer(d, &cl->tls, host, err, sizeof err);
    free(host);
    if (rv != 0) {
        complain("%s", err);
        return STATUS_USAGE; /* a certificate file that cannot be used */
    }
    if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
        complain("cannot reach sagad at %s: %s", cl->url, nng_strerror(rv));
        return STATUS_UNREACHABLE;
    }
    return STATUS_OK;
}

static int client_connect(client *cl)
{
    int rv;
    if ((rv = nng_req0_open(&cl->sock)) != 0) {
        complain("cannot open a request socket: %s", nng_strerror(rv));
        return STATUS_SERVER_ERROR;
    }
    cl->connected = 1;
    if ((rv = nng_pipe_notify(cl->sock, NNG_PIPE_EV_ADD_PRE, client_pipe_check, cl)) != 0 ||
        (rv = nng_socket_set_ms(cl->sock, NNG_OPT_SENDTIMEO, cl->timeout_ms)) != 0 ||
        (rv = nng_socket_set_ms(cl->sock, NNG_OPT_RECVTIMEO, cl->timeout_ms)) != 0 ||
        (rv = nng_socket_set_ms(cl->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
        (rv = nng_socket_set_size(cl->sock, NNG_OPT_RECVMAXSZ, ADMIN_MAX_REPLY + 4096)) != 0) {
        complain("cannot configure the request socket: %s", nng_strerror(rv));
        return STATUS_SERVER_ERROR;
    }
    /* A local ipc:// connect fails at once when sagad is not there: dial
     * synchronously to say so. A remote connect may hang for minutes, so
     * it runs in the background, bounded by the request's timeout. */
    int is_ipc = sec_url_has_scheme(cl->url, "ipc");
    if (sec_url_is_tls(cl->url))
        return client_dial_tls(cl);
    rv = nng_dial(cl->sock, cl->url, NULL, is_ipc ? 0 : NNG_FLAG_NONBLOCK);
    if (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL) {
        complain("invalid admin URL '%s': %s", cl->url, nng_strerror(rv));
        return STATUS_USAGE;
    }
    if (rv != 0) {
        complain("cannot reach sagad at %s: %s%s", cl->url, nng_strerror(rv),
                 rv == NNG_ENOENT || rv == NNG_ECONNREFUSED ? " (is sagad running?)" : "");
        return STATUS_UNREACHABLE;
    }
    return STATUS_OK;
}

/*
 * Closes the socket, unless a request is still unanswered: nng's REQ socket
 * may then hang in nng_close while it keeps resending (nng issue #648,
 * seen with 1.5.2 after the peer dropped the connection). sagactl exits
 * right after, which releases everything anyway, so --timeout stays a bound
 * on how long it runs.
 */
static void client_close(client *cl)
{
    if (cl->connected && !cl->unanswered)
        nng_close(cl->sock);
    cl->connected = 0;
}

/*
 * Sends req and receives the reply into *out (the caller frees it with
 * saga__v1__admin_reply__free_unpacked). Returns STATUS_OK, or the exit
 * status of a failure already reported on stderr. A reply whose status is
 * not ADMIN_OK is still STATUS_OK here: see reply_failed.
 */
static int client_call_one(client *cl, const AdminRequest *req, AdminReply **out)
{
    int rc;
    uint8_t *buf = NULL;
    void *answer = NULL;
    size_t answer_len = 0;

    /* A token in clear text over the network is a token given away. */
    if (cl->token != NULL && !sec_url_is_tls(cl->url) && !sec_url_is_local(cl->url)) {
        complain("refusing to send the admin token in clear text to %s: use a tls+tcp:// URL "
                 "(with --tls-ca) or a local address",
                 cl->url);
        return STATUS_USAGE;
    }
    if (!cl->connected && (rc = client_connect(cl)) != STATUS_OK)
        return rc;
    AdminRequest with_token = *req; /* a shallow copy: only the token differs */
    with_token.token = cl->token;
    req = &with_token;
    size_t len = protobuf_c_message_get_packed_size(&req->base);
    if (len > ADMIN_MAX_REQUEST) {
        complain("request too large (%zu bytes, at most %d): fewer or shorter inputs", len,
                 ADMIN_MAX_REQUEST);
        return STATUS_USAGE;
    }
    buf = xcalloc(len, 1);
    protobuf_c_message_pack(&req->base, buf);
    with_token.token = NULL;
    cl->unanswered = 1;
    int rv = nng_send(cl->sock, buf, len, 0);
    cl->sent = rv == 0;
    if (rv == 0)
        rv = nng_recv(cl->sock, &answer, &answer_len, NNG_FLAG_ALLOC);
    if (rv == 0)
        cl->unanswered = 0;
    unsigned long long refused = atomic_load(&cl->refused_uid);
    if (rv == NNG_ETIMEDOUT && refused != 0) {
        complain("refused the socket at %s: it belongs to a process of uid %llu, not this "
                 "user; another user may have taken sagad's address",
                 cl->url, refused - 1);
        rc = STATUS_UNREACHABLE;
        goto out;
    }
    if (rv == NNG_ETIMEDOUT) {
        complain("no reply from sagad at %s within %d ms%s", cl->url, cl->timeout_ms,
                 sec_url_is_tls(cl->url) ? " (or the TLS handshake failed: is --tls-ca the CA "
                                           "that signed sagad's certificate?)"
                                         : "");
        rc = STATUS_UNREACHABLE;
        goto out;
    }
    if (rv != 0) {
        complain("cannot reach sagad at %s: %s", cl->url, nng_strerror(rv));
        rc = STATUS_UNREACHABLE;
        goto out;
    }
    *out = saga__v1__admin_reply__unpack(NULL, answer_len, answer);
    if (*out == NULL) {
        complain("unreadable reply from sagad at %s (%zu bytes)", cl->url, answer_len);
        rc = STATUS_SERVER_ERROR;
        goto out;
    }
    rc = STATUS_OK;
out:
    if (answer != NULL)
        nng_free(answer, answer_len);
    if (buf != NULL)
        sec_wipe(buf, len); /* it holds the token */
    free(buf);
    return rc;
}

/*
 * Asks the nodes of --url in turn. A node that cannot be reached is skipped;
 * so is one that got the request and did not answer, except for a start
 * without a client key: that node may have started the saga, and asking
 * another would start a second one.
 */
static int client_call(client *cl, const AdminRequest *req, AdminReply **out)
{
    for (;;) {
        int rc = client_call_one(cl, req, out);
        if (rc != STATUS_UNREACHABLE || cl->url_next == NULL)
            return rc;
        if (cl->sent && req->start != NULL &&
            (req->start->client_key == NULL || req->start->client_key[0] == '\0')) {
            complain("not asking another node: %s may have started the saga; give the start a "
                     "--key to make repeating it safe",
                     cl->url);
            return rc;
        }
        client_close(cl);
        cl->url = cl->url_next;
        char *comma = strchr(cl->url_next, ',');
        cl->url_next = comma ? comma + 1 : NULL;
        if (comma)
            *comma = '\0';
        complain("trying the next node, %s", cl->url);
    }
}

/* Reports an error reply; 1 when rep is not ADMIN_OK, else 0. */
static int reply_failed(const AdminReply *rep)
{
    if (rep->status == SAGA__V1__ADMIN_STATUS__ADMIN_OK)
        return 0;
    /* A reply without a status (0) or with one this sagactl does not know
     * is an error too: never read as success. */
    char *text = clean(rep->error);
    if (rep->status == SAGA__V1__ADMIN_STATUS__ADMIN_STATUS_UNSPECIFIED) {
        complain("sagad's reply has no status%s%s", *text ? ": " : "", text);
    } else if (*text) {
        complain("%s", text);
        if (rep->status == SAGA__V1__ADMIN_STATUS__ADMIN_UNAUTHORIZED)
            complain("give the token file sagad's admin_token_file names: --token-file FILE or "
                     "SAGA_ADMIN_TOKEN_FILE");
    } else {
        const char *name = enum_name(&saga__v1__admin_status__descriptor, (int)rep->status, "");
        complain("sagad answered %s", name != NULL ? name : "an unknown error");
    }
    free(text);
    return 1;
}

/* One request whose reply must be ADMIN_OK with body_case `want` (or no body
 * when want is NOT_SET). Returns STATUS_OK with *out set, or an exit status. */
static int client_request(client *cl, const AdminRequest *req, int want, AdminReply **out)
{
    AdminReply *rep = NULL;
    int rc = client_call(cl, req, &rep);
    if (rc != STATUS_OK)
        return rc;
    if (reply_failed(rep)) {
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        return STATUS_SERVER_ERROR;
    }
    if (want != SAGA__V1__ADMIN_REPLY__BODY__NOT_SET && (int)rep->body_case != want) {
        complain("unexpected reply from sagad at %s", cl->url);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        return STATUS_SERVER_ERROR;
    }
    *out = rep;
    return STATUS_OK;
}

/* ---- Argument parsing -------------------------------------------------- */

/* An option of a command: a flag (flag != NULL) or one taking a value. */
typedef struct {
    const char *name;
    const char **value;
    int *flag;
} cmd_opt;

/*
 * Splits args into the command's options and its positional arguments
 * (returned in *pos, an array the caller frees). "--opt VALUE" and
 * "--opt=VALUE" both work; "--" ends the options.
 */
static int parse_cmd_args(const char *cmd, int argc, char **argv, const cmd_opt *opts, char ***pos,
                          int *npos)
{
    char **p = xcalloc((size_t)argc + 1, sizeof *p);
    int n = 0, ended = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (ended || a[0] != '-' || a[1] == '\0') {
            p[n++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            ended = 1;
            continue;
        }
        const cmd_opt *o = NULL;
        const char *eq = strchr(a, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - a) : strlen(a);
        for (const cmd_opt *c = opts; c != NULL && c->name != NULL; c++)
            if (strlen(c->name) == nlen && strncmp(c->name, a, nlen) == 0)
                o = c;
        if (o == NULL) {
            free(p);
            return usage_error("%s: unknown option '%s'", cmd, a);
        }
        if (o->flag != NULL) {
            if (eq != NULL) {
                free(p);
                return usage_error("%s: option %s takes no value", cmd, o->name);
            }
            *o->flag = 1;
        } else if (eq != NULL) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            free(p);
            return usage_error("%s: option %s needs a value", cmd, o->name);
        }
    }
    *pos = p;
    *npos = n;
    return STATUS_OK;
}

static int is_id_prefix(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 36)
        return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) && *s != '-')
            return 0;
    return 1;
}

#define PREFIX_CANDIDATES 10 /* shown when a prefix is ambiguous */

/* The saga ID a command names: a whole ID as given, or the one saga whose ID
 * begins with a prefix ("0193a1" finds 0193a1f2-...): like git's short
 * hashes. An ambiguous prefix lists the candidates (exit 1). */
static int want_saga_id(client *cl, const char *cmd, int npos, char **pos, const char **id)
{
    static char resolved[37];
    if (npos < 1)
        return usage_error("%s: missing saga ID", cmd);
    if (npos > 1)
        return usage_error("%s: unexpected argument '%s'", cmd, pos[1]);
    if (util_is_uuid(pos[0])) {
        *id = pos[0];
        return STATUS_OK;
    }
    if (!is_id_prefix(pos[0]))
        return usage_error("%s: '%s' is not a saga ID (a UUID) nor the beginning of one", cmd,
                           pos[0]);
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__ListSagas list = SAGA__V1__LIST_SAGAS__INIT;
    AdminReply *rep = NULL;
    list.id_prefix = pos[0];
    list.limit = PREFIX_CANDIDATES;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_LIST;
    req.list = &list;
    int rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_LIST, &rep);
    if (rc != STATUS_OK)
        return rc;
    const Saga__V1__SagaList *l = rep->list;
    if (l->n_sagas == 1) {
        snprintf(resolved, sizeof resolved, "%s", nz(l->sagas[0]->saga_id));
        *id = resolved;
    } else if (l->n_sagas == 0) {
        complain("%s: no saga whose ID begins with '%s' (`sagactl list` shows the sagas)", cmd,
                 pos[0]);
        rc = STATUS_SERVER_ERROR;
    } else {
        complain("%s: '%s' is ambiguous: %s%zu sagas begin with it; give more of the ID:", cmd,
                 pos[0], l->next_after && *l->next_after ? "at least " : "", l->n_sagas);
        for (size_t i = 0; i < l->n_sagas; i++) {
            char when[32];
            char *sid = clean(l->sagas[i]->saga_id), *type = clean(l->sagas[i]->type);
            fprintf(stderr, "  %s  %-12s %-12s created %s\n", sid,
                    saga_state_str(l->sagas[i]->state), type,
                    iso_time(l->sagas[i]->created_at_ms, when));
            free(sid);
            free(type);
        }
        rc = STATUS_SERVER_ERROR;
    }
    saga__v1__admin_reply__free_unpacked(rep, NULL);
    return rc;
}

/* ---- Commands ---------------------------------------------------------- */

static int fetch_status(client *cl, const char *id, AdminReply **out)
{
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetStatus get = SAGA__V1__GET_STATUS__INIT;
    get.saga_id = (char *)id;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATUS;
    req.status = &get;
    return client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_SAGA, out);
}

/* Polls the saga until it is COMPLETED, COMPENSATED or FAILED; its final
 * status into *out. */
static int wait_settled(client *cl, const char *id, AdminReply **out)
{
    int64_t delay = WAIT_FIRST_MS;
    for (;;) {
        AdminReply *rep = NULL;
        int rc = fetch_status(cl, id, &rep);
        if (rc != STATUS_OK)
            return rc;
        int st = rep->saga->state;
        if (st == SAGA__V1__SAGA_STATE__SAGA_COMPLETED ||
            st == SAGA__V1__SAGA_STATE__SAGA_COMPENSATED ||
            st == SAGA__V1__SAGA_STATE__SAGA_FAILED) {
            *out = rep;
            return STATUS_OK;
        }
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        util_sleep_ms(delay);
        delay = delay * 3 / 2 > WAIT_MAX_MS ? WAIT_MAX_MS : delay * 3 / 2;
    }
}

/* The exit status of a --wait that ended in state. */
static int settled_status(int state)
{
    if (state == SAGA__V1__SAGA_STATE__SAGA_COMPLETED)
        return STATUS_OK;
    return state == SAGA__V1__SAGA_STATE__SAGA_COMPENSATED ? STATUS_COMPENSATED : STATUS_FAILED;
}

/* A start that found the saga of its client key started nothing: said on
 * stderr, so that stdout stays the id alone for scripts. */
static void note_existing(int existing, const char *key)
{
    if (!existing)
        return;
    char *k = clean(key);
    fprintf(stderr,
            "(existing) a saga with client key '%s' and this input was started before: "
            "this is its id; nothing new was started\n",
            k);
    free(k);
}

static int cmd_start(client *cl, int argc, char **argv)
{
    const char *key = NULL;
    int wait = 0, rc, npos = 0;
    char **pos = NULL;
    Saga__V1__StartSaga__InputEntry *entries = NULL, **entry_ptrs = NULL;
    AdminReply *rep = NULL, *final = NULL;
    const char *deadline_arg = NULL, *at_arg = NULL, *in_arg = NULL;
    uint32_t deadline_s = 0;
    int64_t start_at_ms = 0;
    const cmd_opt opts[] = {{"--key", &key, NULL},   {"--deadline", &deadline_arg, NULL},
                            {"--at", &at_arg, NULL}, {"--in", &in_arg, NULL},
                            {"--wait", NULL, &wait}, {NULL, NULL, NULL}};

    if ((rc = parse_cmd_args("start", argc, argv, opts, &pos, &npos)) != STATUS_OK)
        return rc;
    int64_t deadline_ms = 0;
    if (deadline_arg != NULL &&
        parse_span_ms(deadline_arg, 1000, (int64_t)ADMIN_MAX_DEADLINE_S * 1000, &deadline_ms) !=
            0) {
        rc = usage_error("start: bad --deadline '%s' (a number with s, m, h or d, from 1 s to "
                         "%d days)",
                         deadline_arg, ADMIN_MAX_DEADLINE_S / 86400);
        goto out;
    }
    deadline_s = (uint32_t)(deadline_ms / 1000);
    if (at_arg != NULL && in_arg != NULL) {
        rc = usage_error("start: --at and --in both given: one start time only");
        goto out;
    }
    if (at_arg != NULL) {
        const char *why;
        if (parse_datetime_ms(at_arg, 1, &start_at_ms, &why) != 0) {
            rc = usage_error("start: bad --at '%s': %s", at_arg, why);
            goto out;
        }
        if (start_at_ms <= util_wall_ms()) {
            rc = usage_error("start: --at '%s' is in the past (leave --at out to start now)",
                             at_arg);
            goto out;
        }
    }
    if (in_arg != NULL) {
        int64_t delay;
        if (parse_span_ms(in_arg, 1000, ADMIN_MAX_START_AHEAD_MS, &delay) != 0) {
            rc = usage_error("start: bad --in '%s' (a number with s, m, h or d, from 1 s to "
                             "%d days)",
                             in_arg, (int)(ADMIN_MAX_START_AHEAD_MS / 86400000));
            goto out;
        }
        start_at_ms = util_wall_ms() + delay;
    }
    if (npos < 1) {
        rc = usage_error("start: missing saga TYPE");
        goto out;
    }
    size_t n_input = (size_t)npos - 1;
    entries = xcalloc(n_input, sizeof *entries);
    entry_ptrs = xcalloc(n_input, sizeof *entry_ptrs);
    for (size_t i = 0; i < n_input; i++) {
        char *arg = pos[i + 1], *eq = strchr(arg, '=');
        if (eq == NULL) {
            rc = usage_error("start: bad input '%s': expected NAME=VALUE", arg);
            goto out;
        }
        if (eq == arg) {
            rc = usage_error("start: bad input '%s': empty name", arg);
            goto out;
        }
        *eq = '\0'; /* split at the first '=': the value may hold more */
        for (size_t j = 0; j < i; j++)
            if (strcmp(entries[j].key, arg) == 0) {
                rc = usage_error("start: input '%s' given twice", arg);
                goto out;
            }
        saga__v1__start_saga__input_entry__init(&entries[i]);
        entries[i].key = arg;
        entries[i].value = eq + 1;
        entry_ptrs[i] = &entries[i];
    }

    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__StartSaga start = SAGA__V1__START_SAGA__INIT;
    start.type = pos[0];
    start.client_key = (char *)(key != NULL ? key : "");
    start.deadline_s = deadline_s;
    start.start_at_ms = start_at_ms;
    start.n_input = n_input;
    start.input = entry_ptrs;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_START;
    req.start = &start;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_STARTED, &rep)) != STATUS_OK)
        goto out;
    const char *id = nz(rep->started->saga_id);
    if (!wait) {
        if (cl->json) {
            json_t *doc = new_object();
            put(doc, "saga_id", ju_str(id));
            put(doc, "existing", json_boolean(rep->started->existing));
            if (start_at_ms > 0)
                put(doc, "start_at_ms", json_integer(start_at_ms));
            print_json(doc);
        } else {
            char *clean_id = clean(id);
            char when[32];
            if (start_at_ms > 0 && !rep->started->existing)
                printf("%s (scheduled for %s)\n", clean_id, iso_time(start_at_ms, when));
            else if (rep->started->existing)
                printf("%s (existing)\n", clean_id);
            else
                puts(clean_id);
            free(clean_id);
            note_existing(rep->started->existing, key);
        }
        rc = STATUS_OK;
        goto out;
    }
    if (!cl->json) { /* show the id at once: the wait may be long */
        char *clean_id = clean(id);
        puts(clean_id);
        free(clean_id);
        fflush(stdout);
        note_existing(rep->started->existing, key);
    }
    if ((rc = wait_settled(cl, id, &final)) != STATUS_OK) {
        if (cl->json) { /* stdout stays one JSON document or nothing: name it on stderr */
            char *clean_id = clean(id);
            complain("saga %s was started; waiting for it failed", clean_id);
            free(clean_id);
        }
        goto out;
    }
    const Saga__V1__SagaStatus *s = final->saga;
    if (cl->json) {
        json_t *doc = new_object();
        put(doc, "saga_id", ju_str(id));
        put(doc, "existing", json_boolean(rep->started->existing));
        put(doc, "state", ju_str(saga_state_str(s->state)));
        put(doc, "last_error", ju_str_or_null(s->last_error));
        print_json(doc);
    } else {
        puts(saga_state_str(s->state));
        if (nz(s->last_error)[0] != '\0')
            print_field("last error", s->last_error);
        else if (nz(s->root_cause)[0] != '\0')
            print_field("recovered from", s->root_cause);
    }
    rc = settled_status(s->state);
out:
    if (final != NULL)
        saga__v1__admin_reply__free_unpacked(final, NULL);
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(entry_ptrs);
    free(entries);
    free(pos);
    return rc;
}

/* "a=1, b=2" of a map's entries (every map<string, string> entry has one
 * layout); "" when empty. */
typedef struct {
    ProtobufCMessage base;
    char *key;
    char *value;
} kv_entry;

static char *map_text(void *const *entries, size_t n)
{
    char *out = xstrdup("");
    for (size_t j = 0; j < n; j++) {
        const kv_entry *e = entries[j];
        char *r = xasprintf("%s%s%s=%s", out, j ? ", " : "", nz(e->key), nz(e->value));
        free(out);
        out = r;
    }
    return out;
}

/* A step's state as an operator reads it: the step a FAILED saga stopped at
 * is FAILED (its action or its compensation), whatever its stored state. */
static char *step_state_text(const Saga__V1__SagaStatus *s, const Saga__V1__StepStatus *st)
{
    if (st->failed)
        return xasprintf("FAILED (%s)", s->failed_phase == SAGA__V1__PHASE__PHASE_COMPENSATE
                                            ? "compensation"
                                            : "action");
    if (s->state == SAGA__V1__SAGA_STATE__SAGA_FAILED &&
        (st->state == SAGA__V1__STEP_STATE__STEP_ACTION_SENT ||
         st->state == SAGA__V1__STEP_STATE__STEP_COMPENSATING))
        return xasprintf("HALTED (%s)", step_state_str(st->state)); /* nothing in flight */
    return xstrdup(step_state_str(st->state));
}

static void text_status(const Saga__V1__SagaStatus *s)
{
    char t1[96], t2[96];
    int completed = s->state == SAGA__V1__SAGA_STATE__SAGA_COMPLETED;
    print_field("saga", s->saga_id);
    print_field("type", s->type);
    if (s->state == SAGA__V1__SAGA_STATE__SAGA_FAILED) {
        char *st = xasprintf("FAILED at step %s (%s)", nz(s->failed_step),
                             s->failed_phase == SAGA__V1__PHASE__PHASE_COMPENSATE ? "compensation"
                                                                                  : "action");
        print_field("state", st);
        free(st);
    } else {
        print_field("state", saga_state_str(s->state));
    }
    print_field("client key", s->client_key);
    print_field("created", rel_time(s->created_at_ms, t1));
    print_field("updated", rel_time(s->updated_at_ms, t2));
    if (s->start_at_ms != 0) {
        char t4[96];
        print_field("starts at", rel_time(s->start_at_ms, t4));
    }
    char span[32];
    if (s->state >= SAGA__V1__SAGA_STATE__SAGA_COMPLETED && s->updated_at_ms >= s->created_at_ms) {
        fmt_span(s->updated_at_ms - s->created_at_ms, span, sizeof span);
        print_field("duration", span);
    } else if (s->created_at_ms > 0) {
        fmt_span(now_ms() - s->created_at_ms, span, sizeof span);
        char *d = xasprintf("%s so far", span);
        print_field("duration", d);
        free(d);
    }
    if (s->deadline_at_ms != 0) {
        char t3[96];
        print_field("deadline", rel_time(s->deadline_at_ms, t3));
    }
    /* The first cause apart from the latest error; on a COMPLETED saga
     * (resumed) it is history, not an error. */
    if (completed && nz(s->root_cause)[0] != '\0') {
        print_field("recovered from", s->root_cause);
    } else {
        print_field("last error", s->last_error);
        if (nz(s->root_cause)[0] != '\0' && strcmp(nz(s->root_cause), nz(s->last_error)) != 0)
            print_field("root cause", s->root_cause);
    }
    if (s->n_input == 0)
        print_field("input", NULL);
    for (size_t i = 0; i < s->n_input; i++) {
        char *kv = xasprintf("%s=%s", nz(s->input[i]->key), nz(s->input[i]->value));
        print_field(i == 0 ? "input" : "", kv);
        free(kv);
    }
    if (s->n_steps == 0)
        return;

    int any_next = 0;
    for (size_t i = 0; i < s->n_steps; i++)
        any_next |= s->steps[i]->next_attempt_at_ms != 0;
    table t;
    table_init(&t, any_next ? 12 : 11);
    /* RAN: when the action ran, in ms after the saga's start: steps that ran
     * at the same time (after = [...]) have overlapping spans. */
    const char *head[] = {"STEP",     "PARTICIPANT", "ACTION/COMPENSATION",
                          "STATE",    "RAN (ms)",    "TOOK",
                          "ATTEMPTS", "OUTCOME",     "PARAMS",
                          "RESULT",   "LAST ERROR",  "NEXT ATTEMPT"};
    if (any_next) { /* the next attempt goes before the (long) last error */
        head[10] = "NEXT ATTEMPT";
        head[11] = "LAST ERROR";
    }
    table_row(&t, head);
    for (size_t i = 0; i < s->n_steps; i++) {
        const Saga__V1__StepStatus *st = s->steps[i];
        char *ops =
            xasprintf("%s/%s", nz(st->action), nz(st->compensation)[0] ? st->compensation : "-");
        char *attempts =
            xasprintf("%" PRIu32 "/%" PRIu32, st->action_attempts, st->compensation_attempts);
        char *result = map_text((void *const *)st->result, st->n_result);
        char *params = map_text((void *const *)st->params, st->n_params);
        char *state = step_state_text(s, st);
        char tn[48], ran[48] = "", took[32] = "";
        if (st->started_at_ms != 0 && st->finished_at_ms >= st->started_at_ms)
            fmt_span(st->finished_at_ms - st->started_at_ms, took, sizeof took);
        if (st->started_at_ms != 0 && st->finished_at_ms >= st->started_at_ms)
            snprintf(ran, sizeof ran, "%" PRId64 "-%" PRId64, st->started_at_ms - s->created_at_ms,
                     st->finished_at_ms - s->created_at_ms);
        else if (st->started_at_ms != 0)
            snprintf(ran, sizeof ran, "%" PRId64 "-", st->started_at_ms - s->created_at_ms);
        const char *row[] = {st->name,
                             st->participant,
                             ops,
                             state,
                             ran[0] ? ran : NULL,
                             took[0] ? took : NULL,
                             attempts,
                             step_has_outcome(st) ? wire_outcome_name(st->last_outcome) : NULL,
                             params,
                             result,
                             st->last_error,
                             NULL};
        if (any_next) {
            row[10] = ago(st->next_attempt_at_ms, tn);
            row[11] = st->last_error;
        }
        table_row(&t, row);
        free(state);
        free(params);
        free(result);
        free(attempts);
        free(ops);
    }
    putchar('\n');
    table_print(&t);
    table_free(&t);
}

static int cmd_status(client *cl, int argc, char **argv)
{
    char **pos = NULL;
    int npos = 0, rc, wait = 0;
    const char *id = NULL;
    AdminReply *rep = NULL;
    const cmd_opt opts[] = {{"--wait", NULL, &wait}, {NULL, NULL, NULL}};
    if ((rc = parse_cmd_args("status", argc, argv, opts, &pos, &npos)) != STATUS_OK)
        return rc;
    if ((rc = want_saga_id(cl, "status", npos, pos, &id)) == STATUS_OK &&
        (rc = wait ? wait_settled(cl, id, &rep) : fetch_status(cl, id, &rep)) == STATUS_OK) {
        if (cl->json)
            print_json(saga_json_status(rep->saga));
        else
            text_status(rep->saga);
        if (wait)
            rc = settled_status(rep->saga->state);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    }
    free(pos);
    return rc;
}

static int fetch_history(client *cl, const char *id, uint64_t after_seq, AdminReply **out)
{
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetHistory get = SAGA__V1__GET_HISTORY__INIT;
    get.saga_id = (char *)id;
    get.after_seq = after_seq;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_HISTORY;
    req.history = &get;
    return client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_HISTORY, out);
}

/* Every event of the saga: the pages of ADMIN_HISTORY_MAX sagad sends, one
 * after the other, as one document (saga_json_history's, "more": false) or
 * one table. */
static int cmd_history(client *cl, int argc, char **argv)
{
    char **pos = NULL;
    int npos = 0, rc;
    const char *id = NULL;
    AdminReply *rep = NULL;
    json_t *doc = NULL;
    table t;
    table_init(&t, 8);
    if ((rc = parse_cmd_args("history", argc, argv, NULL, &pos, &npos)) != STATUS_OK)
        goto out;
    if ((rc = want_saga_id(cl, "history", npos, pos, &id)) != STATUS_OK)
        goto out;
    const char *head[] = {"TIME (UTC)", "KIND",    "STEP",     "PHASE",
                          "ATTEMPT",    "OUTCOME", "REPLAYED", "DETAIL"};
    table_row(&t, head);
    /* Steps whose request is out (sent, not answered yet): a step sent
     * while others are is shown "beside" them, i.e. at the same time.
     * Copied: a page's reply is freed before the next is read. */
    char out[64][WIRE_MAX_NAME + 1];
    size_t n_out = 0;
    uint64_t after_seq = 0;
    int more = 1;
    while (more) {
        if ((rc = fetch_history(cl, id, after_seq, &rep)) != STATUS_OK)
            goto out;
        const Saga__V1__SagaHistory *h = rep->history;
        if (h->n_events == 0 || h->events[h->n_events - 1]->seq <= after_seq)
            more = 0; /* no progress: a page with "more" always holds events */
        else
            more = h->more;
        json_t *page = cl->json ? saga_json_history(h) : NULL;
        if (cl->json && page == NULL)
            die_oom();
        if (doc == NULL) {
            doc = page;
        } else if (page != NULL) { /* this page's events after the others, its state */
            if (json_array_extend(json_object_get(doc, "events"), json_object_get(page, "events")))
                die_oom();
            put(doc, "state", json_incref(json_object_get(page, "state")));
            put(doc, "final", json_incref(json_object_get(page, "final")));
            json_decref(page);
        }
        for (size_t i = 0; i < h->n_events && !cl->json; i++) {
            const Saga__V1__HistoryEvent *ev = h->events[i];
            int saga_level = nz(ev->step)[0] == '\0';
            char when[32], attempt[16];
            char *detail = NULL;
            snprintf(attempt, sizeof attempt, "%" PRIu32, ev->attempt);
            if (strcmp(nz(ev->kind), "recovered") == 0 ||
                strcmp(nz(ev->kind), "abort_requested") == 0 ||
                (saga_level && strncmp(nz(ev->kind), "saga_", 5) == 0)) {
                n_out = 0; /* what was out is not awaited any more */
            } else if (!saga_level) {
                for (size_t k = 0; k < n_out; k++)
                    if (strcmp(out[k], ev->step) == 0 && k != --n_out)
                        memcpy(out[k--], out[n_out], sizeof out[0]);
                int sent = strcmp(nz(ev->kind), "step_sent") == 0;
                if (sent && n_out > 0) {
                    detail = xstrdup("beside");
                    for (size_t k = 0; k < n_out; k++) {
                        char *d = xasprintf("%s%s %s", detail, k ? "," : "", out[k]);
                        free(detail);
                        detail = d;
                    }
                }
                if (sent && n_out < 64)
                    snprintf(out[n_out++], sizeof out[0], "%s", ev->step);
            }
            /* What the request carried and what the action gave back. */
            if (ev->n_params > 0 || ev->n_result > 0) {
                char *data = ev->n_params > 0 ? map_text((void *const *)ev->params, ev->n_params)
                                              : map_text((void *const *)ev->result, ev->n_result);
                const char *first = detail != NULL ? detail : nz(ev->detail);
                char *d = xasprintf("%s%s%s: %s", first, *first ? "; " : "",
                                    ev->n_params > 0 ? "params" : "result", data);
                free(data);
                free(detail);
                detail = d;
            }
            const char *row[] = {iso_time(ev->at_ms, when),
                                 ev->kind,
                                 ev->step,
                                 saga_level ? NULL : wire_phase_name(ev->phase),
                                 ev->attempt ? attempt : NULL,
                                 event_has_outcome(ev) ? wire_outcome_name(ev->outcome) : NULL,
                                 ev->replayed ? "yes" : NULL,
                                 detail != NULL ? detail : ev->detail};
            table_row(&t, row);
            free(detail);
        }
        if (h->n_events > 0)
            after_seq = h->events[h->n_events - 1]->seq;
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        rep = NULL;
    }
    if (cl->json) {
        put(doc, "more", json_false());
        print_json(doc);
        doc = NULL;
    } else {
        table_print(&t);
    }
out:
    json_decref(doc);
    table_free(&t);
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(pos);
    return rc;
}

/* ---- watch: one saga, live ------------------------------------------------ */

#define WATCH_POLL_MS 200 /* how often watch asks for new events */

/* One event as text on one line: time, kind, step and phase, attempt,
 * outcome, replayed, detail (control characters escaped). */
static void print_event_line(const Saga__V1__HistoryEvent *ev)
{
    char when[32];
    char *kind = clean(ev->kind), *step = clean(ev->step), *detail = clean(ev->detail);
    printf("%s  %-24s", iso_time(ev->at_ms, when), kind);
    if (step[0] != '\0')
        printf(" %s/%s", step, wire_phase_name(ev->phase));
    if (ev->attempt)
        printf(" attempt %" PRIu32, ev->attempt);
    if (event_has_outcome(ev))
        printf(" -> %s", wire_outcome_name(ev->outcome));
    if (ev->replayed)
        printf(" (replayed)");
    if (detail[0] != '\0')
        printf(": %s", detail);
    putchar('\n');
    free(kind);
    free(step);
    free(detail);
}

/* Prints the events after *last_seq (every page of them) and advances it. */
static int print_new_events(client *cl, const char *id, uint64_t *last_seq)
{
    int more = 1;
    while (more) {
        AdminReply *rep = NULL;
        int rc = fetch_history(cl, id, *last_seq, &rep);
        if (rc != STATUS_OK)
            return rc;
        const Saga__V1__SagaHistory *h = rep->history;
        more = 0;
        for (size_t i = 0; i < h->n_events; i++) {
            const Saga__V1__HistoryEvent *ev = h->events[i];
            if (ev->seq <= *last_seq)
                continue;
            if (cl->json)
                print_json_line(saga_json_event(ev));
            else
                print_event_line(ev);
            *last_seq = ev->seq;
            more = h->more; /* only after progress: never loops on a stuck page */
        }
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    }
    fflush(stdout);
    return STATUS_OK;
}

/*
 * Follows one saga: polls its status and history every WATCH_POLL_MS and
 * prints each event once, as it is recorded, until the saga is COMPLETED,
 * COMPENSATED or FAILED. The status is read before the history, so the
 * history read after a final status holds every event up to the end.
 */
static int cmd_watch(client *cl, int argc, char **argv)
{
    char **pos = NULL;
    int npos = 0, rc;
    const char *id = NULL;
    uint64_t last_seq = 0;
    if ((rc = parse_cmd_args("watch", argc, argv, NULL, &pos, &npos)) != STATUS_OK)
        return rc;
    if ((rc = want_saga_id(cl, "watch", npos, pos, &id)) != STATUS_OK)
        goto out;
    for (;;) {
        AdminReply *st = NULL;
        if ((rc = fetch_status(cl, id, &st)) != STATUS_OK)
            goto out;
        int state = st->saga->state;
        saga__v1__admin_reply__free_unpacked(st, NULL);
        if ((rc = print_new_events(cl, id, &last_seq)) != STATUS_OK)
            goto out;
        if (state == SAGA__V1__SAGA_STATE__SAGA_COMPLETED ||
            state == SAGA__V1__SAGA_STATE__SAGA_COMPENSATED ||
            state == SAGA__V1__SAGA_STATE__SAGA_FAILED) {
            if (!cl->json)
                printf("saga %s %s\n", id, saga_state_str(state));
            rc = settled_status(state);
            goto out;
        }
        util_sleep_ms(WATCH_POLL_MS);
    }
out:
    free(pos);
    return rc;
}

#define LIST_WATCH_MS 1000 /* list --watch: one redraw a second */
#define TIME_ARG_FORMS                                                                             \
    "a span back from now such as 90s, 10m, 2h or 7d; a date 2026-12-02 or time "                  \
    "2026-12-02T23:00[:05], UTC unless it ends in Z or an offset such as +01:00; or epoch "        \
    "milliseconds"

/*
 * list --watch (text): before each list, the time and the counts by state
 * (stats). On a terminal the screen is cleared first (a redraw in place);
 * otherwise (a pipe, a file) each round follows the last, behind a "----"
 * line. With --json each round is one line instead: the list document (its
 * counts included), NDJSON.
 */
static int print_watch_header(client *cl)
{
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetStats get = SAGA__V1__GET_STATS__INIT;
    AdminReply *rep = NULL;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATS;
    req.stats = &get;
    int rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_STATS, &rep);
    if (rc != STATUS_OK)
        return rc;
    const Saga__V1__Stats *s = rep->stats;
    char now[32];
    if (isatty(STDOUT_FILENO))
        fputs("\033[H\033[2J", stdout);
    else
        puts("----");
    printf("%s  running %" PRIu64 "  compensating %" PRIu64 "  completed %" PRIu64
           "  compensated %" PRIu64 "  FAILED %" PRIu64 "\n\n",
           iso_time((int64_t)time(NULL) * 1000, now), s->running, s->compensating, s->completed,
           s->compensated, s->failed);
    saga__v1__admin_reply__free_unpacked(rep, NULL);
    return STATUS_OK;
}

static int cmd_list(client *cl, int argc, char **argv)
{
    const char *state_arg = NULL, *type = NULL, *limit_arg = NULL, *after = NULL;
    const char *key = NULL, *since = NULL, *until = NULL;
    char **pos = NULL;
    int npos = 0, rc, watch = 0;
    AdminReply *rep = NULL;
    const cmd_opt opts[] = {
        {"--state", &state_arg, NULL}, {"--type", &type, NULL},   {"--limit", &limit_arg, NULL},
        {"--after", &after, NULL},     {"--key", &key, NULL},     {"--since", &since, NULL},
        {"--until", &until, NULL},     {"--watch", NULL, &watch}, {NULL, NULL, NULL}};
    if ((rc = parse_cmd_args("list", argc, argv, opts, &pos, &npos)) != STATUS_OK)
        return rc;
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__ListSagas list = SAGA__V1__LIST_SAGAS__INIT;
    if (npos > 0) {
        rc = usage_error("list: unexpected argument '%s'", pos[0]);
        goto out;
    }
    if (state_arg != NULL) {
        int st = saga_state_parse_arg(state_arg);
        if (st < 0) {
            rc = usage_error("list: unknown state '%s' (running, compensating, completed, "
                             "compensated, failed or scheduled)",
                             state_arg);
            goto out;
        }
        list.state = (Saga__V1__SagaState)st;
    }
    if (limit_arg != NULL) {
        int64_t n;
        if (util_parse_i64(limit_arg, &n) != 0 || n < 1 || n > ADMIN_LIST_MAX) {
            rc = usage_error("list: bad --limit '%s' (1 to %d)", limit_arg, ADMIN_LIST_MAX);
            goto out;
        }
        list.limit = (uint32_t)n;
    }
    if (after != NULL && !util_is_uuid(after)) {
        rc = usage_error("list: --after '%s' is not a saga ID (a UUID)", after);
        goto out;
    }
    int64_t since_ms = 0, until_ms = 0;
    if (since != NULL && parse_time_arg(since, &since_ms) != 0) {
        rc = usage_error("list: bad --since '%s' (%s)", since, TIME_ARG_FORMS);
        goto out;
    }
    if (until != NULL && parse_time_arg(until, &until_ms) != 0) {
        rc = usage_error("list: bad --until '%s' (%s)", until, TIME_ARG_FORMS);
        goto out;
    }
    list.type = (char *)(type != NULL ? type : "");
    list.after_id = (char *)(after != NULL ? after : "");
    list.client_key = (char *)(key != NULL ? key : "");
    list.created_after_ms = since_ms;
    list.created_before_ms = until_ms;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_LIST;
    req.list = &list;
redraw:
    if (watch && !cl->json && (rc = print_watch_header(cl)) != STATUS_OK)
        goto out;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_LIST, &rep)) != STATUS_OK)
        goto out;
    const Saga__V1__SagaList *l = rep->list;
    if (cl->json && watch) {
        print_json_line(saga_json_list(l));
    } else if (cl->json) {
        print_json(saga_json_list(l));
    } else if (l->n_sagas == 0) {
        fputs("no sagas\n", stderr);
    } else {
        table t;
        /* Scheduled starts: when each starts, in place of UPDATED. */
        int scheduled = list.state == SAGA__V1__SAGA_STATE__SAGA_SCHEDULED;
        table_init(&t, 7);
        const char *head[] = {"SAGA ID",       "TYPE", "STATE",
                              "CREATED (UTC)", "AGE",  scheduled ? "STARTS" : "UPDATED",
                              "ERROR"};
        table_row(&t, head);
        for (size_t i = 0; i < l->n_sagas; i++) {
            const Saga__V1__SagaSummary *s = l->sagas[i];
            char t1[32], t2[48], t3[48];
            /* A COMPLETED saga's old error is what it recovered from, not an error. */
            char *err =
                s->state == SAGA__V1__SAGA_STATE__SAGA_COMPLETED
                    ? (nz(s->root_cause)[0] ? xasprintf("(recovered from: %s)", s->root_cause)
                                            : NULL)
                    : xstrdup(nz(s->last_error));
            const char *row[] = {s->saga_id,
                                 s->type,
                                 saga_state_str(s->state),
                                 iso_time(s->created_at_ms, t1),
                                 ago(s->created_at_ms, t2),
                                 ago(scheduled ? s->start_at_ms : s->updated_at_ms, t3),
                                 err};
            table_row(&t, row);
            free(err);
        }
        table_print(&t);
        table_free(&t);
        uint32_t asked = list.limit ? list.limit : ADMIN_LIST_DEFAULT;
        if (l->n_sagas >= asked && !watch) {
            char *last = clean(l->sagas[l->n_sagas - 1]->saga_id);
            fprintf(stderr, "(%zu shown; more may follow: --after %s)\n", l->n_sagas, last);
            free(last);
        }
    }
    if (watch) { /* until interrupted (SIGINT ends the process) */
        fflush(stdout);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
        rep = NULL;
        util_sleep_ms(LIST_WATCH_MS);
        goto redraw;
    }
out:
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(pos);
    return rc;
}

/* abort and resume: no body in the reply, only its status. */
static void print_accepted(const client *cl, const char *what, const char *id)
{
    if (cl->json) {
        json_t *doc = new_object();
        put(doc, "saga_id", ju_str(id));
        put(doc, "accepted", json_true());
        print_json(doc);
    } else {
        printf("%s %s\n", what, id);
    }
}

static int cmd_abort(client *cl, int argc, char **argv)
{
    const char *reason = NULL, *id = NULL;
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    const cmd_opt opts[] = {{"--reason", &reason, NULL}, {NULL, NULL, NULL}};
    if ((rc = parse_cmd_args("abort", argc, argv, opts, &pos, &npos)) != STATUS_OK)
        return rc;
    if ((rc = want_saga_id(cl, "abort", npos, pos, &id)) != STATUS_OK)
        goto out;
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__AbortSaga abort_msg = SAGA__V1__ABORT_SAGA__INIT;
    abort_msg.saga_id = (char *)id;
    abort_msg.reason = (char *)(reason != NULL ? reason : "");
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_ABORT;
    req.abort = &abort_msg;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY__NOT_SET, &rep)) == STATUS_OK) {
        print_accepted(cl, "abort accepted:", id);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    }
out:
    free(pos);
    return rc;
}

/* cancel ID: an abort that touches only a scheduled start (AbortSaga.scheduled_only). */
static int cmd_cancel(client *cl, int argc, char **argv)
{
    const char *id = NULL;
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    if ((rc = parse_cmd_args("cancel", argc, argv, NULL, &pos, &npos)) != STATUS_OK)
        return rc;
    if ((rc = want_saga_id(cl, "cancel", npos, pos, &id)) != STATUS_OK)
        goto out;
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__AbortSaga cancel = SAGA__V1__ABORT_SAGA__INIT;
    cancel.saga_id = (char *)id;
    cancel.reason = "";
    cancel.scheduled_only = 1;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_ABORT;
    req.abort = &cancel;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY__NOT_SET, &rep)) == STATUS_OK) {
        print_accepted(cl, "cancelled:", id);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    }
out:
    free(pos);
    return rc;
}

static int cmd_resume(client *cl, int argc, char **argv)
{
    const char *id = NULL, *reason = NULL;
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    const cmd_opt opts[] = {{"--reason", &reason, NULL}, {NULL, NULL, NULL}};
    if ((rc = parse_cmd_args("resume", argc, argv, opts, &pos, &npos)) != STATUS_OK)
        return rc;
    if ((rc = want_saga_id(cl, "resume", npos, pos, &id)) != STATUS_OK)
        goto out;
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__ResumeSaga resume = SAGA__V1__RESUME_SAGA__INIT;
    resume.saga_id = (char *)id;
    resume.reason = (char *)(reason != NULL ? reason : "");
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_RESUME;
    req.resume = &resume;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY__NOT_SET, &rep)) == STATUS_OK) {
        print_accepted(cl, "resume accepted:", id);
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    }
out:
    free(pos);
    return rc;
}

static int cmd_stats(client *cl, int argc, char **argv)
{
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    if ((rc = parse_cmd_args("stats", argc, argv, NULL, &pos, &npos)) != STATUS_OK)
        return rc;
    if (npos > 0) {
        rc = usage_error("stats: unexpected argument '%s'", pos[0]);
        goto out;
    }
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__GetStats get = SAGA__V1__GET_STATS__INIT;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_STATS;
    req.stats = &get;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_STATS, &rep)) != STATUS_OK)
        goto out;
    const Saga__V1__Stats *s = rep->stats;
    const struct {
        const char *label;
        uint64_t value;
    } rows[] = {
        {"running", s->running},       {"compensating", s->compensating},
        {"completed", s->completed},   {"compensated", s->compensated},
        {"failed", s->failed},         {"in flight", s->in_flight},
        {"steps sent", s->steps_sent}, {"retries", s->retries},
        {"timeouts", s->timeouts},     {"replayed replies", s->replayed_replies},
    };
    size_t n = sizeof rows / sizeof rows[0];
    if (cl->json) {
        print_json(saga_json_stats(s));
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%-18s%" PRIu64 "\n", rows[i].label, rows[i].value);
    }
out:
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(pos);
    return rc;
}

/* ---- Definitions: reload, types, describe -------------------------------- */

static int cmd_reload(client *cl, int argc, char **argv)
{
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    if ((rc = parse_cmd_args("reload", argc, argv, NULL, &pos, &npos)) != STATUS_OK)
        return rc;
    if (npos > 0) {
        rc = usage_error("reload: unexpected argument '%s'", pos[0]);
        goto out;
    }
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__Reload reload = SAGA__V1__RELOAD__INIT;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_RELOAD;
    req.reload = &reload;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_RELOADED, &rep)) != STATUS_OK)
        goto out;
    const Saga__V1__ReloadReply *r = rep->reloaded;
    if (cl->json) {
        json_t *doc = new_object(), *types = json_array();
        for (size_t i = 0; i < r->n_types; i++) {
            json_t *o = new_object();
            put(o, "type", ju_str(r->types[i]->type));
            put(o, "version",
                json_integer(r->types[i]->n_versions > 0 ? r->types[i]->versions[0]->version : 0));
            if (ju_append(types, o) != 0)
                die_oom();
        }
        put(doc, "types", types);
        print_json(doc);
    } else {
        printf("reloaded: %zu saga types\n", r->n_types);
        for (size_t i = 0; i < r->n_types; i++) {
            char *type = clean(r->types[i]->type);
            printf("  %-32s version %u\n", type,
                   r->types[i]->n_versions > 0 ? r->types[i]->versions[0]->version : 0);
            free(type);
        }
    }
out:
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(pos);
    return rc;
}

static int cmd_types(client *cl, int argc, char **argv)
{
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    if ((rc = parse_cmd_args("types", argc, argv, NULL, &pos, &npos)) != STATUS_OK)
        return rc;
    if (npos > 0) {
        rc = usage_error("types: unexpected argument '%s'", pos[0]);
        goto out;
    }
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__ListTypes list = SAGA__V1__LIST_TYPES__INIT;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_TYPES;
    req.types = &list;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_TYPES, &rep)) != STATUS_OK)
        goto out;
    const Saga__V1__TypeList *l = rep->types;
    char when[32];
    if (cl->json) {
        json_t *doc = json_array();
        for (size_t i = 0; i < l->n_types; i++) {
            const Saga__V1__SagaType *t = l->types[i];
            json_t *o = new_object(), *versions = json_array();
            put(o, "type", ju_str(t->type));
            for (size_t j = 0; j < t->n_versions; j++) {
                const Saga__V1__TypeVersion *v = t->versions[j];
                json_t *vo = new_object();
                put(vo, "version", json_integer(v->version));
                put(vo, "current", json_boolean(v->current));
                put(vo, "hash", ju_str(v->hash));
                put(vo, "loaded_at", ju_str(iso_time(v->loaded_at_ms, when)));
                put(vo, "running", json_integer((json_int_t)v->running));
                put(vo, "failed", json_integer((json_int_t)v->failed));
                if (ju_append(versions, vo) != 0)
                    die_oom();
            }
            put(o, "versions", versions);
            if (ju_append(doc, o) != 0)
                die_oom();
        }
        print_json(doc);
    } else if (l->n_types == 0) {
        printf("no saga types stored\n");
    } else {
        printf("%-32s %-9s %-8s %-8s %-12s %s\n", "TYPE", "VERSION", "RUNNING", "FAILED", "HASH",
               "LOADED");
        for (size_t i = 0; i < l->n_types; i++) {
            const Saga__V1__SagaType *t = l->types[i];
            char *type = clean(t->type);
            for (size_t j = 0; j < t->n_versions; j++) {
                const Saga__V1__TypeVersion *v = t->versions[j];
                char version[16], *hash = clean(v->hash);
                snprintf(version, sizeof version, "%u%s", v->version, v->current ? "*" : "");
                printf("%-32s %-9s %-8" PRIu64 " %-8" PRIu64 " %-12.12s %s\n", type, version,
                       v->running, v->failed, hash, iso_time(v->loaded_at_ms, when));
                free(hash);
            }
            free(type);
        }
        printf("(* current: new sagas of the type start on it)\n");
    }
out:
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(pos);
    return rc;
}

static void fmt_double(double v, char buf[40])
{
    snprintf(buf, 40, "%.17g", v);
    /* The shortest of %g's forms that reads back the same, for people. */
    for (int prec = 1; prec < 17; prec++) {
        char tmp[40];
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            memcpy(buf, tmp, strlen(tmp) + 1);
            break;
        }
    }
}

/* A retry policy as JSON; null when there is none. The multiplier is a number
 * (an integer when it is whole, as 2 rather than 2.0). */
static json_t *retry_json(const Saga__V1__RetryPolicy *p)
{
    if (p == NULL)
        return json_null();
    json_t *o = new_object();
    double m = p->multiplier;
    put(o, "max_attempts", json_integer(p->max_attempts));
    put(o, "initial_backoff_ms", json_integer(p->initial_backoff_ms));
    put(o, "max_backoff_ms", json_integer(p->max_backoff_ms));
    put(o, "multiplier", m == (double)(json_int_t)m ? json_integer((json_int_t)m) : json_real(m));
    return o;
}

static json_t *names_json(char **names, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (ju_append(arr, ju_str(names[i])) != 0)
            die_oom();
    return arr;
}

/* "a, b, c" with control characters escaped; malloc'd. */
static char *joined(char **names, size_t n)
{
    size_t len = 1;
    char **c = xcalloc(n + 1, sizeof *c);
    for (size_t i = 0; i < n; i++) {
        c[i] = clean(names[i]);
        len += strlen(c[i]) + 2;
    }
    char *out = xcalloc(len, 1);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(out, ", ");
        strcat(out, c[i]);
        free(c[i]);
    }
    free(c);
    return out;
}

static void print_retry(const char *label, const Saga__V1__RetryPolicy *p)
{
    char mult[40];
    if (p == NULL)
        return;
    fmt_double(p->multiplier, mult);
    printf("    %-19s%u attempts, backoff %" PRId64 "..%" PRId64 " ms x%s\n", label,
           p->max_attempts, p->initial_backoff_ms, p->max_backoff_ms, mult);
}

static int cmd_describe(client *cl, int argc, char **argv)
{
    const char *version_arg = NULL;
    char **pos = NULL;
    int npos = 0, rc;
    AdminReply *rep = NULL;
    const cmd_opt opts[] = {{"--version", &version_arg, NULL}, {NULL, NULL, NULL}};
    if ((rc = parse_cmd_args("describe", argc, argv, opts, &pos, &npos)) != STATUS_OK)
        return rc;
    if (npos != 1) {
        rc = npos == 0 ? usage_error("describe: missing saga type")
                       : usage_error("describe: unexpected argument '%s'", pos[1]);
        goto out;
    }
    uint32_t version = 0;
    if (version_arg != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(version_arg, &end, 10);
        if (errno != 0 || end == version_arg || *end != '\0' || version_arg[0] == '-' || v < 1 ||
            v > UINT32_MAX) {
            rc = usage_error("describe: --version must be a version number (1, 2, ...), not '%s'",
                             version_arg);
            goto out;
        }
        version = (uint32_t)v;
    }
    AdminRequest req = SAGA__V1__ADMIN_REQUEST__INIT;
    Saga__V1__DescribeType d = SAGA__V1__DESCRIBE_TYPE__INIT;
    d.type = pos[0];
    d.version = version;
    req.body_case = SAGA__V1__ADMIN_REQUEST__BODY_DESCRIBE;
    req.describe = &d;
    if ((rc = client_request(cl, &req, SAGA__V1__ADMIN_REPLY__BODY_DESCRIPTION, &rep)) != STATUS_OK)
        goto out;
    const Saga__V1__TypeDescription *t = rep->description;
    if (cl->json) {
        json_t *doc = new_object(), *steps = json_array();
        put(doc, "type", ju_str(t->type));
        put(doc, "version", json_integer(t->version));
        put(doc, "current", json_boolean(t->current));
        put(doc, "hash", ju_str(t->hash));
        put(doc, "inputs", names_json(t->inputs, t->n_inputs));
        for (size_t i = 0; i < t->n_steps; i++) {
            const Saga__V1__StepDefinition *st = t->steps[i];
            json_t *o = new_object();
            put(o, "name", ju_str(st->name));
            put(o, "participant", ju_str(st->participant));
            put(o, "action", ju_str(st->action));
            put(o, "compensation", ju_str_or_null(st->compensation));
            put(o, "inputs", st->all_inputs ? json_null() : names_json(st->inputs, st->n_inputs));
            put(o, "outputs", names_json(st->outputs, st->n_outputs));
            put(o, "timeout_ms", json_integer(st->timeout_ms));
            put(o, "retry", retry_json(st->retry));
            put(o, "compensation_retry", retry_json(st->compensation_retry));
            if (ju_append(steps, o) != 0)
                die_oom();
        }
        put(doc, "steps", steps);
        print_json(doc);
    } else {
        char *type = clean(t->type), *hash = clean(t->hash), *in = joined(t->inputs, t->n_inputs);
        printf("%s version %u%s\nhash    %s\ninputs  %s\nsteps\n", type, t->version,
               t->current ? " (current)" : "", hash, in);
        free(type);
        free(hash);
        free(in);
        for (size_t i = 0; i < t->n_steps; i++) {
            const Saga__V1__StepDefinition *st = t->steps[i];
            char *name = clean(st->name), *part = clean(st->participant), *act = clean(st->action),
                 *comp = clean(st->compensation);
            char *ins = st->all_inputs ? NULL : joined(st->inputs, st->n_inputs);
            char *outs = joined(st->outputs, st->n_outputs);
            printf("  %zu. %s\n", i + 1, name);
            printf("    %-19s%s\n", "participant", part);
            printf("    %-19s%s\n", "action", act);
            printf("    %-19s%s\n", "compensation", *comp ? comp : "none (pivot)");
            printf("    %-19s%s\n", "inputs", ins != NULL ? ins : "(everything available)");
            printf("    %-19s%s\n", "outputs", *outs ? outs : "-");
            printf("    %-19s%" PRId64 " ms\n", "timeout", st->timeout_ms);
            print_retry("retry", st->retry);
            print_retry("compensation retry", st->compensation_retry);
            free(name);
            free(part);
            free(act);
            free(comp);
            free(ins);
            free(outs);
        }
    }
out:
    if (rep != NULL)
        saga__v1__admin_reply__free_unpacked(rep, NULL);
    free(pos);
    return rc;
}

/* ---- Main -------------------------------------------------------------- */

static const struct {
    const char *name;
    int (*run)(client *cl, int argc, char **argv);
} commands[] = {
    {"start", cmd_start}, {"status", cmd_status},     {"history", cmd_history},
    {"list", cmd_list},   {"abort", cmd_abort},       {"resume", cmd_resume},
    {"stats", cmd_stats}, {"watch", cmd_watch},       {"reload", cmd_reload},
    {"types", cmd_types}, {"describe", cmd_describe}, {"cancel", cmd_cancel},
};

/* Command options that take a value: the global pass must not read that
 * value as an option of its own (e.g. `abort ID --reason --json`). */
static int takes_value(const char *arg)
{
    static const char *const names[] = {"--key",   "--state",   "--type",     "--limit", "--reason",
                                        "--after", "--version", "--deadline", "--at",    "--in"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(arg, names[i]) == 0)
            return 1;
    return 0;
}

/*
 * A global option that takes a value (--url, --timeout, --token-file,
 * --tls-ca, --tls-cert, --tls-key): where its value goes, and in *value the
 * value of the "--opt=VALUE" form (NULL for "--opt VALUE"). NULL when arg is
 * none of them.
 */
static const char **global_value(const char *arg, const char **value, client *cl,
                                 const char **timeout_arg, const char **token_file)
{
    const struct {
        const char *name;
        const char **slot;
    } opts[] = {
        {"--url", &cl->url},
        {"--timeout", timeout_arg},
        {"--token-file", token_file},
        {"--tls-ca", &cl->tls.ca_file},
        {"--tls-cert", &cl->tls.cert_file},
        {"--tls-key", &cl->tls.key_file},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        size_t n = strlen(opts[i].name);
        if (strncmp(arg, opts[i].name, n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
            *value = arg[n] == '=' ? arg + n + 1 : NULL;
            return opts[i].slot;
        }
    }
    return NULL;
}

/* TLS options make sense only together and with a tls+tcp:// URL. */
static int check_tls_options(const client *cl)
{
    const sec_tls_files *t = &cl->tls;
    int any = t->ca_file != NULL || t->cert_file != NULL || t->key_file != NULL;
    if (any && !sec_url_is_tls(cl->url))
        return usage_error("--tls-ca, --tls-cert and --tls-key are for a tls+tcp:// URL, not %s",
                           cl->url);
    if ((t->cert_file != NULL) != (t->key_file != NULL))
        return usage_error("--tls-cert and --tls-key go together");
    return STATUS_OK;
}

/*
 * The admin token, from (in this order) --token-file FILE,
 * SAGA_ADMIN_TOKEN_FILE or SAGA_ADMIN_TOKEN; none of them: no token. A token
 * file must be owner-only (sec_read_secret_file). The token is never printed.
 */
static int load_token(client *cl, const char *token_file)
{
    char err[512];
    const char *how = "--token-file";
    if (token_file == NULL || *token_file == '\0') {
        token_file = getenv("SAGA_ADMIN_TOKEN_FILE");
        how = "SAGA_ADMIN_TOKEN_FILE";
    }
    if (token_file != NULL && *token_file != '\0') {
        if (sec_read_secret_file(token_file, &cl->token, err, sizeof err) != 0)
            return usage_error("%s: %s", how, err);
        return STATUS_OK;
    }
    const char *token = getenv("SAGA_ADMIN_TOKEN");
    if (token != NULL && *token != '\0') {
        if (strlen(token) > SEC_SECRET_MAX)
            return usage_error("SAGA_ADMIN_TOKEN: longer than %d bytes", SEC_SECRET_MAX);
        cl->token = xstrdup(token);
    }
    return STATUS_OK;
}

int main(int argc, char **argv)
{
    client cl = {.url = NULL, .json = 0, .timeout_ms = DEFAULT_TIMEOUT_MS, .connected = 0};
    const char *timeout_arg = NULL, *token_file = NULL, *value, **slot;
    int help = 0, n = 0, ended = 0, rc;
    char **rest = xcalloc((size_t)argc + 1, sizeof *rest);

    /* Global options may appear anywhere; everything else is kept in order
     * for the command's own parser. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ended) {
            rest[n++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            rest[n++] = argv[i];
            ended = 1;
        } else if (strcmp(a, "--json") == 0) {
            cl.json = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help = 1;
        } else if (strcmp(a, "--version") == 0 && n == 0) {
            /* Before the command only: after it, --version V is describe's. */
            printf("sagactl %s\n", SAGA_VERSION);
            rc = STATUS_OK;
            goto out;
        } else if (strcmp(a, "--token") == 0 || strncmp(a, "--token=", 8) == 0) {
            rc = usage_error("there is no --token option: a command line is visible to every "
                             "user; use --token-file FILE, SAGA_ADMIN_TOKEN_FILE or "
                             "SAGA_ADMIN_TOKEN");
            goto out;
        } else if ((slot = global_value(a, &value, &cl, &timeout_arg, &token_file)) != NULL) {
            if (value == NULL) {
                if (i + 1 >= argc) {
                    rc = usage_error("option %s needs a value", a);
                    goto out;
                }
                value = argv[++i];
            }
            *slot = value;
        } else if (takes_value(a) && i + 1 < argc) {
            rest[n++] = argv[i];
            rest[n++] = argv[++i];
        } else {
            rest[n++] = argv[i];
        }
    }
    if (help || (n > 0 && strcmp(rest[0], "help") == 0)) {
        fputs(usage_text, stdout);
        rc = STATUS_OK;
        goto out;
    }
    if (n == 0) {
        fputs(usage_text, stderr);
        rc = STATUS_USAGE;
        goto out;
    }
    if (timeout_arg != NULL) {
        int64_t ms;
        if (util_parse_i64(timeout_arg, &ms) != 0 || ms < 1 || ms > MAX_TIMEOUT_MS) {
            rc = usage_error("bad --timeout '%s' (milliseconds, 1 to %d)", timeout_arg,
                             MAX_TIMEOUT_MS);
            goto out;
        }
        cl.timeout_ms = (int)ms;
    }
    int (*run)(client *, int, char **) = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(rest[0], commands[i].name) == 0)
            run = commands[i].run;
    if (run == NULL) {
        rc = usage_error("unknown command '%s'", rest[0]);
        goto out;
    }
    if (cl.url == NULL || *cl.url == '\0')
        cl.url = getenv("SAGA_ADMIN_URL");
    if (cl.url == NULL || *cl.url == '\0') {
        rc = usage_error("no admin URL: give --url URL or set SAGA_ADMIN_URL "
                         "(the admin_url of sagad's configuration)");
        goto out;
    }
    cl.url_list = xstrdup(cl.url);
    cl.url = cl.url_list;
    char *comma = strchr(cl.url_list, ',');
    if (comma != NULL) {
        *comma = '\0';
        cl.url_next = comma + 1;
    }
    if ((rc = check_tls_options(&cl)) != STATUS_OK ||
        (rc = load_token(&cl, token_file)) != STATUS_OK)
        goto out;
    rc = run(&cl, n - 1, rest + 1);
out:
    client_close(&cl);
    if (cl.token != NULL) {
        sec_wipe(cl.token, strlen(cl.token));
        free(cl.token);
    }
    free(cl.url_list);
    free(rest);
    return rc;
}
