/*
 * config — see config.h; the file format is documented in docs/CONFIG.md.
 *
 * config_load reads the orchestrator file, then every saga file of its sagas
 * directory in strcmp order of file name (so the result never depends on the
 * order readdir happens to return). Each file goes through the same pipeline:
 *   1. read_text:  the whole file into memory (at most CFG_MAX_FILE_BYTES);
 *   2. prescan:    checks on the raw text that libconfig 1.5 cannot make (it
 *                  silently wraps integers outside the int range, so
 *                  `timeout_ms = 4294967396;` would read as 100);
 *   3. libconfig:  parses the text; a syntax error is reported at its line;
 *   4. load_*:     walks the settings, rejecting unknown names, wrong types,
 *                  missing settings and out-of-range values, and copies what
 *                  it accepts into the orch_config.
 * The first problem found stops the load. Every message has the form
 * "FILE:LINE: what is wrong (setting path)", where the setting path is the
 * libconfig path of the offending setting (list elements zero-based, e.g.
 * "steps[1].retry.max_attempts"). Line 1 stands for the file as a whole
 * (a missing top-level setting, an unreadable file).
 *
 * Ownership: everything in an orch_config is malloc'd by this module and
 * freed by config_free, which accepts a half-built struct (every pointer is
 * either NULL or owned, every count covers only initialised or zeroed
 * entries), so every error path ends in one place: config_load's cleanup.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <libconfig.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <nng/nng.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "db_url.h"
#include "cpu_sched.h"
#include "http_conn.h"
#include "httpd.h"
#include "log.h"
#include "saga.h"
#include "saga_dag.h"
#include "security.h"
#include "store.h"
#include "strbuf.h"
#include "util.h"
#include "wire.h"

/* Limits of the format (docs/CONFIG.md lists them all). */
#define CFG_MAX_FILE_BYTES    (1024 * 1024)
#define CFG_NAME_MAX          64
#define CFG_TIMEOUT_MAX_MS    (3600 * 1000)
#define CFG_DEADLINE_MAX_S    (366 * 24 * 3600) /* deadline_s: a year */
#define CFG_ATTEMPTS_MAX      1000
#define CFG_MULTIPLIER_MIN    1.0
#define CFG_MULTIPLIER_MAX    10.0
#define CFG_IN_FLIGHT_MAX     1000000
#define CFG_RETENTION_MIN_S   60
#define CFG_RETENTION_MAX_S   (10LL * 365 * 86400)
#define CFG_SUGGEST_DISTANCE  2 /* "did you mean" for names this close */
#define CFG_COMPENSATION_NONE "none"

/* Built-in defaults, used when the orchestrator file omits a setting. */
#define DEFAULT_ADMIN_SOCKET    "sagad.ipc" /* admin_url = "ipc://sagad.ipc" */
#define DEFAULT_DATABASE        "sagad.db"
#define DEFAULT_SAGAS_DIR       "."
#define DEFAULT_MAX_IN_FLIGHT   10000
#define DEFAULT_TIMEOUT_MS      2000
#define DEFAULT_RETENTION_S     (7 * 86400) /* the participants' default --retention-s */
#define CFG_CONN_TIMEOUT_MIN_MS 100
#define CFG_CONN_TIMEOUT_MAX_MS 3600000
#define CFG_CONN_MAX            65536
/* finished_retention_s: how long a COMPLETED/COMPENSATED saga stays in sagad.db
 * (and its client key deduplicates). Below a minute a client retrying a start
 * could see its finished saga gone and start a second one. */
#define DEFAULT_FINISHED_RETENTION_S (30 * 86400)
#define CFG_FINISHED_RETENTION_MIN_S 60
static const retry_policy default_retry = {5, 100, 5000, 2.0};
static const retry_policy default_compensation_retry = {10, 200, 10000, 2.0};

/* The setting names each kind of group accepts: anything else is a typo. */
static const char *const orchestrator_settings[] = {
    "admin_url",
    "database",
    "sagas_dir",
    "durability",
    "max_in_flight",
    "participants",
    "defaults",
    "admin_token_file",
    "metrics_token_file",
    "tls", /* security: see load_security */
    "http_url",
    "alert_command",
    "alert_max_running",
    "alert_timeout_s",            /* see load_observability */
    "insecure_participant_links", /* see check_participant_links */
    "idempotency_retention_s",
    "finished_retention_s",
    "cpu_scheduling",
    "frame_max",
    "conn_header_timeout_ms", /* see load_connection_limits */
    "conn_idle_timeout_ms",
    "conn_max_unauthenticated",
    "node_name", /* several nodes on PostgreSQL: see load_node */
    "lease_ms",
    NULL,
};
static const char *const defaults_settings[] = {"timeout_ms", "retry", "compensation_retry", NULL};
static const char *const retry_settings[] = {"max_attempts", "initial_backoff_ms", "max_backoff_ms",
                                             "multiplier", NULL};
static const char *const saga_settings[] = {"name", "inputs", "deadline_s", "steps", NULL};
static const char *const step_settings[] = {
    "name",  "participant",        "action", "compensation", "inputs", "outputs", "timeout_ms",
    "retry", "compensation_retry", "after",  NULL,
};

/* The file being loaded, and where its error message goes. */
typedef struct {
    const char *file; /* as named in messages */
    char *err;
    size_t errlen;
} loader;

/* ---- Error messages ------------------------------------------------------ */

/* Appends s's setting path to buf at *pos: "a.b[2].c". The root is "". */
static void path_append(const config_setting_t *s, char *buf, size_t len, size_t *pos)
{
    if (s == NULL || s->parent == NULL)
        return;
    path_append(s->parent, buf, len, pos);
    int n;
    if (config_setting_is_list(s->parent) || config_setting_is_array(s->parent))
        n = snprintf(buf + *pos, len - *pos, "[%d]", config_setting_index(s));
    else
        n = snprintf(buf + *pos, len - *pos, "%s%s", *pos > 0 ? "." : "", s->name);
    if (n > 0)
        *pos = (size_t)n >= len - *pos ? len - 1 : *pos + (size_t)n;
}

/*
 * Writes "FILE:LINE: message (path)" into the loader's buffer and returns -1.
 * FILE:LINE is where s is defined (line 1 when s is NULL or the root); path
 * is s's setting path, extended by ".member" when member names a setting that
 * s lacks; the parenthesis is left out when the path is empty.
 */
static int fail(loader *ld, const config_setting_t *s, const char *member, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(loader *ld, const config_setting_t *s, const char *member, const char *fmt, ...)
{
    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    char path[256];
    size_t pos = 0;
    path[0] = '\0';
    path_append(s, path, sizeof path, &pos);
    if (member != NULL)
        snprintf(path + pos, sizeof path - pos, "%s%s", pos > 0 ? "." : "", member);

    const char *file = ld->file;
    unsigned line = 1;
    if (s != NULL && s->parent != NULL) {
        if (config_setting_source_file(s) != NULL)
            file = config_setting_source_file(s);
        if (config_setting_source_line(s) > 0)
            line = config_setting_source_line(s);
    }
    int n = snprintf(ld->err, ld->errlen, "%s:%u: ", file, line);
    if (n < 0 || (size_t)n >= ld->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)(n + m) >= ld->errlen || path[0] == '\0')
        return -1;
    snprintf(ld->err + n + m, ld->errlen - (size_t)(n + m), " (%s)", path);
    return -1;
}

/* Like fail, at an explicit line and with no setting path: for the raw text. */
static int fail_line(loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_line(loader *ld, int line, const char *fmt, ...)
{
    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    int n = snprintf(ld->err, ld->errlen, "%s:%d: ", ld->file, line > 0 ? line : 1);
    if (n < 0 || (size_t)n >= ld->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_oom(loader *ld)
{
    return fail_line(ld, 1, "out of memory");
}

static const char *type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a number with a fraction";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "of no known type";
    }
}

/* Levenshtein distance of two short names (longer names are cut at 63). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strnlen(a, 63), lb = strnlen(b, 63);
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* ---- Typed access to settings -------------------------------------------- */

/* Rejects any member of group whose name is not in allowed (NULL-terminated). */
static int check_known(loader *ld, const config_setting_t *group, const char *const *allowed)
{
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *best = NULL;
        size_t best_distance = CFG_SUGGEST_DISTANCE + 1;
        int known = 0;
        for (const char *const *a = allowed; *a != NULL && !known; a++) {
            size_t d = edit_distance(s->name, *a);
            known = d == 0;
            if (d < best_distance) {
                best_distance = d;
                best = *a;
            }
        }
        if (known)
            continue;
        if (best != NULL)
            return fail(ld, s, NULL, "unknown setting \"%s\"; did you mean \"%s\"?", s->name, best);
        return fail(ld, s, NULL, "unknown setting \"%s\"", s->name);
    }
    return 0;
}

/* A name the engine can put in keys and logs: 1..64 of [A-Za-z0-9_.-]. */
static int valid_name(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.')
            return 0;
    }
    return n >= 1 && n <= CFG_NAME_MAX;
}

static int check_name(loader *ld, const config_setting_t *s, const char *what, const char *name)
{
    if (valid_name(name))
        return 0;
    return fail(ld, s, NULL,
                "%s \"%s\" is not a valid name (1 to %d letters, digits, '_', '-' or '.')", what,
                name, CFG_NAME_MAX);
}

/*
 * The member called name of group, checked to have type type, in *out
 * (NULL when absent). A missing member is an error only when required.
 */
static int get_member(loader *ld, const config_setting_t *group, const char *name, int type,
                      int required, const config_setting_t **out)
{
    const config_setting_t *s = config_setting_get_member(group, name);
    *out = s;
    if (s == NULL)
        return required ? fail(ld, group, name, "missing setting \"%s\"", name) : 0;
    /* A list of names may be written [...] or (...); an empty list is [] or (). */
    int either = type == CONFIG_TYPE_LIST;
    if (s->type != type && !(either && s->type == CONFIG_TYPE_ARRAY))
        return fail(ld, s, NULL, "\"%s\" must be %s, not %s", name,
                    either ? "a list or array" : type_name(type), type_name(s->type));
    return 0;
}

/* A non-empty string member; *out is NULL when absent and not required. */
static int get_string(loader *ld, const config_setting_t *group, const char *name, int required,
                      const char **out)
{
    const config_setting_t *s;
    *out = NULL;
    if (get_member(ld, group, name, CONFIG_TYPE_STRING, required, &s) != 0)
        return -1;
    if (s == NULL)
        return 0;
    const char *v = config_setting_get_string(s);
    if (v == NULL || v[0] == '\0')
        return fail(ld, s, NULL, "\"%s\" must not be empty", name);
    *out = v;
    return 0;
}

/* An integer member in [min, max] into *inout, left unchanged when absent. */
static int get_int(loader *ld, const config_setting_t *group, const char *name, int64_t min,
                   int64_t max, int64_t *inout)
{
    const config_setting_t *s = config_setting_get_member(group, name);
    if (s == NULL)
        return 0;
    if (s->type != CONFIG_TYPE_INT && s->type != CONFIG_TYPE_INT64)
        return fail(ld, s, NULL, "\"%s\" must be an integer, not %s", name, type_name(s->type));
    int64_t v = config_setting_get_int64(s);
    if (v < min || v > max)
        return fail(ld, s, NULL, "\"%s\" must be between %lld and %lld, not %lld", name,
                    (long long)min, (long long)max, (long long)v);
    *inout = v;
    return 0;
}

/* A number member (integer or not) in [min, max], left unchanged when absent. */
static int get_number(loader *ld, const config_setting_t *group, const char *name, double min,
                      double max, double *inout)
{
    const config_setting_t *s = config_setting_get_member(group, name);
    if (s == NULL)
        return 0;
    double v;
    if (s->type == CONFIG_TYPE_FLOAT)
        v = config_setting_get_float(s);
    else if (s->type == CONFIG_TYPE_INT || s->type == CONFIG_TYPE_INT64)
        v = (double)config_setting_get_int64(s);
    else
        return fail(ld, s, NULL, "\"%s\" must be a number, not %s", name, type_name(s->type));
    if (!isfinite(v) || v < min || v > max)
        return fail(ld, s, NULL, "\"%s\" must be between %.1f and %.1f, not %g", name, min, max, v);
    *inout = v;
    return 0;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int name_in(const char *name, char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

/*
 * A member holding a list or array of distinct valid names, copied into
 * *names / *n (caller frees with free_names). *present says whether the
 * member exists; when it does not, *names is NULL and *n is 0.
 */
static int get_names(loader *ld, const config_setting_t *group, const char *name, char ***names,
                     size_t *n, int *present)
{
    const config_setting_t *s;
    *names = NULL;
    *n = 0;
    *present = 0;
    if (get_member(ld, group, name, CONFIG_TYPE_LIST, 0, &s) != 0)
        return -1;
    if (s == NULL)
        return 0;
    *present = 1;
    int len = config_setting_length(s);
    if (len == 0)
        return 0;
    char **out = calloc((size_t)len, sizeof *out);
    if (out == NULL)
        return fail_oom(ld);
    size_t count = 0;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (e->type != CONFIG_TYPE_STRING) {
            fail(ld, e, NULL, "elements of \"%s\" must be strings, not %s", name,
                 type_name(e->type));
            goto error;
        }
        const char *v = config_setting_get_string(e);
        if (check_name(ld, e, name, v) != 0)
            goto error;
        if (name_in(v, out, count)) {
            fail(ld, e, NULL, "\"%s\" appears twice in \"%s\"", v, name);
            goto error;
        }
        out[count] = util_strdup(v);
        if (out[count] == NULL) {
            fail_oom(ld);
            goto error;
        }
        count++;
    }
    *names = out;
    *n = count;
    return 0;
error:
    free_names(out, count);
    return -1;
}

/*
 * The retry policy in member name of group: starts from *base, overrides the
 * fields the group sets, then checks the combination (initial <= max).
 */
static int get_retry(loader *ld, const config_setting_t *group, const char *name,
                     const retry_policy *base, retry_policy *out)
{
    const config_setting_t *s;
    *out = *base;
    if (get_member(ld, group, name, CONFIG_TYPE_GROUP, 0, &s) != 0)
        return -1;
    if (s == NULL)
        return 0;
    if (check_known(ld, s, retry_settings) != 0)
        return -1;
    int64_t attempts = out->max_attempts;
    if (get_int(ld, s, "max_attempts", 1, CFG_ATTEMPTS_MAX, &attempts) != 0 ||
        get_int(ld, s, "initial_backoff_ms", 1, CFG_TIMEOUT_MAX_MS, &out->initial_backoff_ms) !=
            0 ||
        get_int(ld, s, "max_backoff_ms", 1, CFG_TIMEOUT_MAX_MS, &out->max_backoff_ms) != 0 ||
        get_number(ld, s, "multiplier", CFG_MULTIPLIER_MIN, CFG_MULTIPLIER_MAX, &out->multiplier) !=
            0)
        return -1;
    out->max_attempts = (uint32_t)attempts;
    if (out->initial_backoff_ms > out->max_backoff_ms) {
        const config_setting_t *at = config_setting_get_member(s, "initial_backoff_ms");
        return fail(ld, at != NULL ? at : s, NULL,
                    "initial_backoff_ms %lld exceeds max_backoff_ms %lld%s",
                    (long long)out->initial_backoff_ms, (long long)out->max_backoff_ms,
                    config_setting_get_member(s, "max_backoff_ms") != NULL
                        ? ""
                        : " (max_backoff_ms is inherited: set it here too)");
    }
    return 0;
}

/* ---- Paths and URLs ------------------------------------------------------ */

/* path when absolute, else dir/path (without a leading "./"); malloc'd. */
static char *resolve_path(const char *dir, const char *path)
{
    if (path[0] == '/')
        return util_strdup(path);
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    if (strcmp(path, ".") == 0 || path[0] == '\0')
        return util_strdup(dir);
    return util_asprintf("%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", path);
}

/* "ipc://" and path resolved against dir; malloc'd. */
static char *ipc_url(const char *dir, const char *path)
{
    char *resolved = resolve_path(dir, path);
    char *url = resolved != NULL ? util_asprintf("ipc://%s", resolved) : NULL;
    free(resolved);
    return url;
}

/* Transports sagad can use: plain sockets, and TLS with the tls group's certificates. */
static int scheme_supported(const char *scheme)
{
    static const char *const schemes[] = {
        "ipc", "abstract", "inproc",  "tcp",      "tcp4",     "tcp6", "ws",
        "ws4", "ws6",      "tls+tcp", "tls+tcp4", "tls+tcp6", NULL,
    };
    for (const char *const *p = schemes; *p != NULL; p++)
        if (strcmp(scheme, *p) == 0)
            return 1;
    return 0;
}

/*
 * Checks the URL in string setting s and returns it resolved in *out
 * (malloc'd): a relative ipc:// path becomes absolute against dir. For a URL
 * sagad dials (dial = 1), a TCP or WebSocket URL needs a host.
 */
static int check_url(loader *ld, const config_setting_t *s, const char *dir, int dial, char **out)
{
    const char *raw = config_setting_get_string(s);
    nng_url *u = NULL;
    int rc = -1;
    *out = NULL;
    int rv = nng_url_parse(&u, raw);
    if (rv != 0) {
        fail(ld, s, NULL, "\"%s\" is not a valid URL: %s", raw, nng_strerror(rv));
        goto done;
    }
    if (!scheme_supported(u->u_scheme)) {
        fail(ld, s, NULL,
             "\"%s\": unsupported transport \"%s\" (use ipc, abstract, inproc, tcp, tls+tcp or ws)",
             raw, u->u_scheme);
        goto done;
    }
    int is_ipc = strcmp(u->u_scheme, "ipc") == 0;
    int is_path =
        is_ipc || strcmp(u->u_scheme, "abstract") == 0 || strcmp(u->u_scheme, "inproc") == 0;
    if (is_path) {
        if (u->u_path[0] == '\0') {
            fail(ld, s, NULL, "\"%s\" has no path after \"%s://\"", raw, u->u_scheme);
            goto done;
        }
    } else {
        char *end = NULL;
        long port = u->u_port[0] != '\0' ? strtol(u->u_port, &end, 10) : -1;
        if (port < 1 || port > 65535 || *end != '\0') {
            fail(ld, s, NULL, "\"%s\" needs a port between 1 and 65535", raw);
            goto done;
        }
        if (dial && u->u_hostname[0] == '\0') {
            fail(ld, s, NULL, "\"%s\" needs a host to connect to", raw);
            goto done;
        }
    }
    *out = is_ipc ? ipc_url(dir, u->u_path) : util_strdup(raw);
    if (*out == NULL) {
        fail_oom(ld);
        goto done;
    }
    /* sun_path holds the path and its NUL: longer paths fail only at bind time. */
    const size_t ipc_path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (is_ipc && strlen(*out) - strlen("ipc://") > ipc_path_max) {
        fail(ld, s, NULL, "\"%s\": the socket path %s is longer than %zu bytes", raw,
             *out + strlen("ipc://"), ipc_path_max);
        goto done;
    }
    rc = 0;
done:
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    nng_url_free(u);
    return rc;
}

/* ---- Reading and parsing one file ---------------------------------------- */

/* The whole of path as a NUL-terminated string in *text (caller frees). */
static int read_text(loader *ld, const char *path, char **text)
{
    FILE *f = NULL;
    char *buf = NULL;
    int rc = -1;
    *text = NULL;
    f = fopen(path, "rb");
    if (f == NULL) {
        fail_line(ld, 1, "cannot open: %s", strerror(errno));
        goto done;
    }
    buf = malloc(CFG_MAX_FILE_BYTES + 1);
    if (buf == NULL) {
        fail_oom(ld);
        goto done;
    }
    size_t n = fread(buf, 1, CFG_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        fail_line(ld, 1, "cannot read: %s", strerror(errno));
        goto done;
    }
    if (n > CFG_MAX_FILE_BYTES) {
        fail_line(ld, 1, "larger than %d bytes", CFG_MAX_FILE_BYTES);
        goto done;
    }
    if (memchr(buf, '\0', n) != NULL) {
        fail_line(ld, 1, "contains a NUL byte: not a text file");
        goto done;
    }
    buf[n] = '\0';
    *text = buf;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    if (f != NULL)
        fclose(f);
    return rc;
}

static int is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '*';
}

/*
 * Checks on the raw text, with libconfig's lexical rules: every integer
 * literal without the L suffix must fit in an int (libconfig 1.5 would wrap
 * it silently into a plausible value), and @include is refused (every
 * setting must come from the file the messages name).
 */
static int prescan(loader *ld, const char *text)
{
    int line = 1;
    const char *p = text;
    while (*p != '\0') {
        if (*p == '\n') {
            line++;
            p++;
        } else if (*p == '"') { /* a string: skip it, escapes included */
            for (p++; *p != '\0' && *p != '"'; p++) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                if (*p == '\n')
                    line++;
            }
            if (*p == '"')
                p++;
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            while (*p != '\0' && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            for (p += 2; *p != '\0' && !(p[0] == '*' && p[1] == '/'); p++)
                if (*p == '\n')
                    line++;
            if (*p != '\0')
                p += 2;
        } else if (*p == '@') {
            return fail_line(ld, line, "@include is not supported");
        } else if (isalpha((unsigned char)*p) || *p == '*') { /* a setting name */
            while (is_ident_char(*p))
                p++;
        } else if (isdigit((unsigned char)*p) || *p == '.' ||
                   ((*p == '-' || *p == '+') && isdigit((unsigned char)p[1]))) {
            const char *start = p++;
            while (isalnum((unsigned char)*p) || *p == '.' ||
                   ((*p == '-' || *p == '+') && (p[-1] == 'e' || p[-1] == 'E')))
                p++;
            size_t len = (size_t)(p - start);
            const char *digits = start + (*start == '-' || *start == '+');
            int hex = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X');
            int is_float = 0;
            for (size_t i = 0; i < len && !hex; i++)
                is_float |= start[i] == '.' || start[i] == 'e' || start[i] == 'E';
            if (is_float || start[len - 1] == 'L' || len > 64 || (hex && digits != start))
                continue; /* a float, an int64, or what libconfig refuses itself */
            char tok[65];
            memcpy(tok, start, len);
            tok[len] = '\0';
            errno = 0;
            char *end = NULL;
            long long v = hex ? (long long)strtoull(tok + (digits - start), &end, 16)
                              : strtoll(tok, &end, 10);
            if (end == NULL || *end != '\0')
                continue; /* not a number: libconfig reports the syntax error */
            if (errno == ERANGE || v > INT_MAX || v < INT_MIN)
                return fail_line(ld, line,
                                 "integer %s is out of range (libconfig reads integers "
                                 "beyond %d incorrectly)",
                                 tok, INT_MAX);
        } else {
            p++;
        }
    }
    return 0;
}

/* Parses text into the initialised config c, checking syntax. */
static int parse_text(loader *ld, const char *text, config_t *c)
{
    if (prescan(ld, text) != 0)
        return -1;
    if (config_read_string(c, text) != CONFIG_TRUE)
        return fail_line(ld, config_error_line(c), "%s",
                         config_error_text(c) != NULL ? config_error_text(c) : "syntax error");
    return 0;
}

/* Reads path into the initialised config c, checking syntax. */
static int parse_file(loader *ld, const char *path, config_t *c)
{
    char *text = NULL;
    int rc = -1;
    if (read_text(ld, path, &text) == 0)
        rc = parse_text(ld, text, c);
    free(text);
    return rc;
}

/* ---- Security settings (docs/SECURITY.md) -------------------------------- */

static const char *const tls_settings[] = {"ca_file", "cert_file", "key_file", NULL};

/* The optional string member name of group as a path resolved against dir. */
static int get_path(loader *ld, const config_setting_t *group, const char *name, const char *dir,
                    char **out)
{
    const char *v;
    if (get_string(ld, group, name, 0, &v) != 0)
        return -1;
    if (v != NULL && (*out = resolve_path(dir, v)) == NULL)
        return fail_oom(ld);
    return 0;
}

/* The secret in the owner-only file named by setting name (a path resolved
 * against dir) into *out; nothing when the setting is absent. */
static int load_secret(loader *ld, const config_setting_t *root, const char *name, const char *dir,
                       char **out)
{
    char *path = NULL, why[512];
    if (get_path(ld, root, name, dir, &path) != 0)
        return -1;
    if (path == NULL)
        return 0;
    int rc = sec_read_secret_file(path, out, why, sizeof why);
    free(path);
    if (rc != 0)
        return fail(ld, config_setting_get_member(root, name), NULL, "%s", why);
    return 0;
}

/* The setting of URL j of participant member s: s itself for a single string. */
static const config_setting_t *participant_url_setting(const config_setting_t *s, size_t j)
{
    return s->type == CONFIG_TYPE_STRING ? s : config_setting_get_elem(s, (unsigned)j);
}

/* The rule of check_participant_links for URL j of participant p. */
static int check_participant_link(loader *ld, const config_setting_t *group, const orch_config *cfg,
                                  const participant_def *p, size_t j)
{
    const char *url = p->urls[j];
    char why[1024];
    const config_setting_t *s = config_setting_get_member(group, p->name);
    if (s != NULL)
        s = participant_url_setting(s, j);
    if (sec_url_has_scheme(url, "ipc")) {
        if (sec_check_socket_dir(url + 6, why, sizeof why) != 0)
            return fail(ld, s, NULL, "participant \"%s\": %s", p->name, why);
    } else if (sec_url_is_tls(url)) {
        if (cfg->tls_ca_file == NULL || cfg->tls_cert_file == NULL)
            return fail(ld, s, NULL,
                        "participant \"%s\" is a tls+tcp:// URL: set tls.ca_file (the CA "
                        "that signs its certificate), tls.cert_file and tls.key_file (sagad's "
                        "client certificate, which the participant must require: mutual TLS)",
                        p->name);
    } else if (!cfg->insecure_participant_links) {
        return fail(ld, s, NULL,
                    "participant \"%s\" = %s authenticates nobody: sagad would send steps "
                    "and customer data %s; use an ipc:// path, or tls+tcp:// with "
                    "tls.ca_file, tls.cert_file and tls.key_file (mutual TLS) "
                    "(insecure_participant_links = true; allows it, for tests only)",
                    p->name, url,
                    sec_url_is_local(url) ? "to whichever user of this host listens there"
                                          : "in clear text to whoever answers");
    } else {
        log_warn("%s:%d: INSECURE participant link: \"%s\" = %s authenticates nobody and is "
                 "not encrypted; allowed by insecure_participant_links, which is for tests "
                 "only",
                 ld->file, s != NULL ? config_setting_source_line(s) : 1, p->name, url);
    }
    return 0;
}

/*
 * The links sagad dials carry steps and customer data, so each must prove
 * who is at the other end: an ipc:// socket (the transport hangs up on a
 * peer run by another uid) in a directory nobody else can write, or
 * tls+tcp:// with the CA and sagad's client certificate (mutual TLS).
 * Anything else authenticates nobody (abstract:// has no file permissions,
 * any local user can listen on a loopback port) and is refused unless
 * insecure_participant_links = true, which warns about each link at every
 * load. Runs after the tls group is read.
 */
static int check_participant_links(loader *ld, const config_setting_t *root, orch_config *cfg)
{
    const config_setting_t *group = config_setting_get_member(root, "participants");
    const config_setting_t *insecure =
        config_setting_get_member(root, "insecure_participant_links");
    if (insecure != NULL) {
        if (insecure->type != CONFIG_TYPE_BOOL)
            return fail(ld, insecure, NULL,
                        "\"insecure_participant_links\" must be true or false, not %s",
                        type_name(insecure->type));
        cfg->insecure_participant_links = config_setting_get_bool(insecure);
    }
    for (size_t i = 0; i < cfg->n_participants; i++) {
        for (size_t j = 0; j < cfg->participants[i].n_urls; j++)
            if (check_participant_link(ld, group, cfg, &cfg->participants[i], j) != 0)
                return -1;
    }
    return 0;
}

/*
 * admin_token_file, metrics_token_file and the tls group, then the policy over the URLs already
 * loaded: every tls+tcp:// URL has the certificates it needs, a TCP-family
 * admin_url has a token, and one that other hosts can reach has TLS too.
 */
static int load_security(loader *ld, const config_setting_t *root, const char *dir,
                         orch_config *cfg)
{
    const config_setting_t *tls, *admin = config_setting_get_member(root, "admin_url");
    char why[512];
    if (load_secret(ld, root, "admin_token_file", dir, &cfg->admin_token) != 0 ||
        load_secret(ld, root, "metrics_token_file", dir, &cfg->metrics_token) != 0)
        return -1;
    if (cfg->admin_token != NULL && cfg->metrics_token != NULL &&
        strcmp(cfg->admin_token, cfg->metrics_token) == 0)
        return fail(ld, config_setting_get_member(root, "metrics_token_file"), NULL,
                    "metrics_token_file holds the admin token: give readers a token of their "
                    "own, which cannot act");
    if (get_member(ld, root, "tls", CONFIG_TYPE_GROUP, 0, &tls) != 0)
        return -1;
    if (tls != NULL && (check_known(ld, tls, tls_settings) != 0 ||
                        get_path(ld, tls, "ca_file", dir, &cfg->tls_ca_file) != 0 ||
                        get_path(ld, tls, "cert_file", dir, &cfg->tls_cert_file) != 0 ||
                        get_path(ld, tls, "key_file", dir, &cfg->tls_key_file) != 0))
        return -1;
    if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL))
        return fail(ld, tls, cfg->tls_cert_file ? "key_file" : "cert_file",
                    "\"tls\" needs both cert_file and key_file, or neither");
    if (check_participant_links(ld, root, cfg) != 0)
        return -1;
    const char *url = cfg->admin_url;
    if (sec_url_has_scheme(url, "ipc") && sec_check_socket_dir(url + 6, why, sizeof why) != 0)
        return fail(ld, admin, admin ? NULL : "admin_url", "admin_url: %s", why);
    if (sec_url_is_tls(url) && cfg->tls_cert_file == NULL)
        return fail(ld, admin, admin ? NULL : "admin_url",
                    "admin_url %s is a tls+tcp:// URL: set tls.cert_file and tls.key_file", url);
    if (!sec_url_is_owner_only(url) && cfg->admin_token == NULL)
        return fail(ld, admin, admin ? NULL : "admin_url",
                    "admin_url %s is an address that every local user (or host) can "
                    "connect to: set admin_token_file (an owner-only file holding the admin "
                    "token), or use an ipc:// path",
                    url);
    if (sec_check_exposure("admin_url", url, cfg->tls_cert_file != NULL, cfg->admin_token != NULL,
                           "tls.cert_file and tls.key_file", "admin_token_file", why,
                           sizeof why) != 0)
        return fail(ld, admin, admin ? NULL : "admin_url", "%s", why);
    return 0;
}

/* ---- Observability settings (docs/OBSERVABILITY.md) ------------------------ */

#define DEFAULT_ALERT_MAX_RUNNING 4
#define DEFAULT_ALERT_TIMEOUT_S   30

/*
 * http_url (metrics, JSON API, dashboard: always with admin_token_file;
 * loopback http://, or https:// with tls.cert_file), alert_command (an executable
 * file only sagad's user or root can have written, path resolved like the
 * others), alert_max_running and alert_timeout_s. Runs after
 * load_security, whose token and certificates the HTTP policy needs.
 */
static int load_observability(loader *ld, const config_setting_t *root, const char *dir,
                              orch_config *cfg)
{
    const char *v;
    char why[512];
    const config_setting_t *http = config_setting_get_member(root, "http_url");
    if (get_string(ld, root, "http_url", 0, &v) != 0)
        return -1;
    if (v != NULL) {
        int token = cfg->admin_token != NULL || cfg->metrics_token != NULL;
        if (httpd_check_url("http_url", v, cfg->tls_cert_file != NULL, token, why, sizeof why) != 0)
            return fail(ld, http, NULL, "%s", why);
        /* Its JSON API shows every saga's input and results, and every local
         * user can reach a loopback port. */
        if (!token)
            return fail(ld, http, NULL,
                        "http_url %s serves saga inputs and results, and every user of this "
                        "host can reach it: set metrics_token_file (a token that can only read: "
                        "it then guards /metrics and /api; the dashboard asks for it) or "
                        "admin_token_file",
                        v);
        if ((cfg->http_url = util_strdup(v)) == NULL)
            return fail_oom(ld);
    }
    const config_setting_t *cmd = config_setting_get_member(root, "alert_command");
    if (get_path(ld, root, "alert_command", dir, &cfg->alert_command) != 0)
        return -1;
    /* It runs as sagad's user: only that user or root may have written it. */
    if (cfg->alert_command != NULL &&
        sec_check_trusted_path(cfg->alert_command, 1, why, sizeof why) != 0)
        return fail(ld, cmd, NULL, "alert_command %s", why);
    int64_t running = DEFAULT_ALERT_MAX_RUNNING;
    if (get_int(ld, root, "alert_max_running", 1, 64, &running) != 0)
        return -1;
    cfg->alert_max_running = (int)running;
    int64_t timeout_s = DEFAULT_ALERT_TIMEOUT_S;
    if (get_int(ld, root, "alert_timeout_s", 1, 3600, &timeout_s) != 0)
        return -1;
    cfg->alert_timeout_ms = timeout_s * 1000;
    return 0;
}

/*
 * The limits on connections that have not authenticated (docs/SECURITY.md,
 * "Bounded connections"): on the admin API and on http_url.
 */
static int load_connection_limits(loader *ld, const config_setting_t *root, orch_config *cfg)
{
    int64_t header = HTTP_HEADER_TIMEOUT, idle = HTTP_IDLE_TIMEOUT, max = HTTP_MAX_CONNS;
    if (get_int(ld, root, "conn_header_timeout_ms", CFG_CONN_TIMEOUT_MIN_MS,
                CFG_CONN_TIMEOUT_MAX_MS, &header) != 0 ||
        get_int(ld, root, "conn_idle_timeout_ms", CFG_CONN_TIMEOUT_MIN_MS, CFG_CONN_TIMEOUT_MAX_MS,
                &idle) != 0 ||
        get_int(ld, root, "conn_max_unauthenticated", 1, CFG_CONN_MAX, &max) != 0)
        return -1;
    cfg->conn_header_timeout_ms = (int)header;
    cfg->conn_idle_timeout_ms = (int)idle;
    cfg->conn_max_unauthenticated = (int)max;
    return 0;
}

/* ---- The orchestrator file ----------------------------------------------- */

/*
 * One participant: name = "URL"; or name = ["URL", "URL", ...]; (a list in
 * parentheses too): the replicas of one service, each checked like a single
 * URL, none twice (after relative ipc:// paths are resolved).
 */
static int load_participant(loader *ld, const config_setting_t *s, const char *dir,
                            participant_def *p)
{
    int is_list = s->type == CONFIG_TYPE_ARRAY || s->type == CONFIG_TYPE_LIST;
    if (s->type != CONFIG_TYPE_STRING && !is_list)
        return fail(ld, s, NULL,
                    "participant \"%s\" must be a URL string or a list of URL strings (its "
                    "replicas), not %s",
                    s->name, type_name(s->type));
    if (check_name(ld, s, "participant", s->name) != 0)
        return -1;
    if ((p->name = util_strdup(s->name)) == NULL)
        return fail_oom(ld);
    int n = is_list ? config_setting_length(s) : 1;
    if (n == 0)
        return fail(ld, s, NULL, "participant \"%s\" has an empty list of URLs: give at least one",
                    s->name);
    if (n > CFG_MAX_REPLICAS)
        return fail(ld, s, NULL, "participant \"%s\" lists %d URLs; at most %d replicas", s->name,
                    n, CFG_MAX_REPLICAS);
    if ((p->urls = calloc((size_t)n, sizeof *p->urls)) == NULL)
        return fail_oom(ld);
    for (size_t j = 0; j < (size_t)n; j++) {
        const config_setting_t *u = participant_url_setting(s, j);
        if (u->type != CONFIG_TYPE_STRING)
            return fail(ld, u, NULL, "participant \"%s\": URL %zu must be a string, not %s",
                        s->name, j + 1, type_name(u->type));
        if (check_url(ld, u, dir, 1, &p->urls[j]) != 0)
            return -1;
        p->n_urls = j + 1;
        for (size_t k = 0; k < j; k++)
            if (strcmp(p->urls[k], p->urls[j]) == 0)
                return fail(ld, u, NULL,
                            "participant \"%s\": URL %zu (%s) repeats URL %zu: list each "
                            "replica once",
                            s->name, j + 1, p->urls[j], k + 1);
    }
    return 0;
}

static int load_participants(loader *ld, const config_setting_t *root, const char *dir,
                             orch_config *cfg)
{
    const config_setting_t *group;
    if (get_member(ld, root, "participants", CONFIG_TYPE_GROUP, 1, &group) != 0)
        return -1;
    int n = config_setting_length(group);
    if (n == 0)
        return fail(ld, group, NULL, "\"participants\" must name at least one participant");
    cfg->participants = calloc((size_t)n, sizeof *cfg->participants);
    if (cfg->participants == NULL)
        return fail_oom(ld);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        participant_def *p = &cfg->participants[cfg->n_participants++];
        if (load_participant(ld, s, dir, p) != 0)
            return -1;
    }
    return 0;
}

/*
 * node_name and lease_ms: this sagad's identity and lease among the nodes
 * sharing a PostgreSQL database (docs/SCALE-OUT.md). node_name defaults to
 * host name and pid, unique per process; a fixed name makes a restarted node
 * wait for its previous life's lease to expire. With a SQLite file there is
 * one node, and both are refused rather than silently ignored.
 */
#define DEFAULT_LEASE_MS 5000
#define CFG_LEASE_MIN_MS 500
#define CFG_LEASE_MAX_MS 600000
static int load_node(loader *ld, const config_setting_t *root, orch_config *cfg)
{
    const char *name;
    int shared = db_url_is_postgresql(cfg->database);
    if (get_string(ld, root, "node_name", 0, &name) != 0)
        return -1;
    const config_setting_t *lease_s = config_setting_get_member(root, "lease_ms");
    const config_setting_t *name_s = config_setting_get_member(root, "node_name");
    if (!shared && (name_s || lease_s))
        return fail(ld, name_s ? name_s : lease_s, NULL,
                    "\"%s\" applies to a PostgreSQL database only (database is a SQLite file: "
                    "one node)",
                    name_s ? "node_name" : "lease_ms");
    cfg->lease_ms = DEFAULT_LEASE_MS;
    if (get_int(ld, root, "lease_ms", CFG_LEASE_MIN_MS, CFG_LEASE_MAX_MS, &cfg->lease_ms) != 0)
        return -1;
    if (name != NULL) {
        size_t len = strlen(name);
        if (len == 0 || len > 100 || !util_utf8_valid(name, len))
            return fail(ld, name_s, NULL, "\"node_name\" must be 1 to 100 bytes of UTF-8");
        cfg->node_name = util_strdup(name);
    } else {
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
            snprintf(host, sizeof host, "sagad");
        char buf[300];
        snprintf(buf, sizeof buf, "%.80s-%d", host, (int)getpid());
        cfg->node_name = util_strdup(buf);
    }
    return cfg->node_name ? 0 : fail_oom(ld);
}

static int load_orchestrator(loader *ld, const config_setting_t *root, const char *dir,
                             orch_config *cfg, const config_setting_t **sagas_dir_setting)
{
    const char *v;
    if (check_known(ld, root, orchestrator_settings) != 0)
        return -1;

    if (get_string(ld, root, "admin_url", 0, &v) != 0)
        return -1;
    if (v != NULL) {
        if (check_url(ld, config_setting_get_member(root, "admin_url"), dir, 0, &cfg->admin_url) !=
            0)
            return -1;
    } else {
        cfg->admin_url = ipc_url(dir, DEFAULT_ADMIN_SOCKET);
        if (cfg->admin_url == NULL)
            return fail_oom(ld);
    }

    if (get_string(ld, root, "database", 0, &v) != 0)
        return -1;
    if (db_url_is_postgresql(v)) { /* PostgreSQL: the URI goes to libpq as it is */
        char *why = NULL;
        PQconninfoOption *opts = PQconninfoParse(v, &why);
        PQconninfoFree(opts);
        if (opts == NULL) {
            if (why != NULL)
                why[strcspn(why, "\n")] = '\0'; /* libpq ends its messages with one */
            int r =
                fail(ld, config_setting_get_member(root, "database"), NULL,
                     "\"database\" is not a valid PostgreSQL URI: %s", why ? why : "out of memory");
            PQfreemem(why);
            return r;
        }
        cfg->database = util_strdup(v);
    } else {
        cfg->database = resolve_path(dir, v != NULL ? v : DEFAULT_DATABASE);
    }
    if (cfg->database == NULL)
        return fail_oom(ld);
    if (load_node(ld, root, cfg) != 0)
        return -1;

    if (get_string(ld, root, "sagas_dir", 0, &v) != 0)
        return -1;
    *sagas_dir_setting = config_setting_get_member(root, "sagas_dir");
    cfg->sagas_dir = resolve_path(dir, v != NULL ? v : DEFAULT_SAGAS_DIR);
    if (cfg->sagas_dir == NULL)
        return fail_oom(ld);
    struct stat st;
    if (stat(cfg->sagas_dir, &st) != 0)
        return fail(ld, *sagas_dir_setting, *sagas_dir_setting ? NULL : "sagas_dir",
                    "sagas directory %s: %s", cfg->sagas_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fail(ld, *sagas_dir_setting, *sagas_dir_setting ? NULL : "sagas_dir",
                    "sagas directory %s is not a directory", cfg->sagas_dir);

    cfg->durability_full = 1;
    if (get_string(ld, root, "durability", 0, &v) != 0)
        return -1;
    if (v != NULL && strcmp(v, "off") == 0)
        cfg->durability_full = 0;
    else if (v != NULL && strcmp(v, "full") != 0)
        return fail(ld, config_setting_get_member(root, "durability"), NULL,
                    "\"durability\" must be \"full\" or \"off\", not \"%s\"", v);

    cfg->cpu_scheduling = CPU_SCHED_BATCH;
    if (get_string(ld, root, "cpu_scheduling", 0, &v) != 0)
        return -1;
    if (v != NULL && (cfg->cpu_scheduling = cpu_scheduling_parse(v)) < 0)
        return fail(ld, config_setting_get_member(root, "cpu_scheduling"), NULL,
                    "\"cpu_scheduling\" must be \"batch\" or \"normal\", not \"%s\"", v);

    if (load_connection_limits(ld, root, cfg) != 0)
        return -1;

    int64_t frame_max = WIRE_BATCH_MAX;
    if (get_int(ld, root, "frame_max", 1, WIRE_BATCH_MAX, &frame_max) != 0)
        return -1;
    cfg->frame_max = (int)frame_max;

    int64_t in_flight = DEFAULT_MAX_IN_FLIGHT;
    if (get_int(ld, root, "max_in_flight", 1, CFG_IN_FLIGHT_MAX, &in_flight) != 0)
        return -1;
    cfg->max_in_flight = (uint32_t)in_flight;

    int64_t retention_s = DEFAULT_RETENTION_S;
    if (get_int(ld, root, "idempotency_retention_s", CFG_RETENTION_MIN_S, CFG_RETENTION_MAX_S,
                &retention_s) != 0)
        return -1;
    cfg->retention_ms = retention_s * 1000;

    cfg->finished_retention_s = DEFAULT_FINISHED_RETENTION_S;
    if (get_int(ld, root, "finished_retention_s", CFG_FINISHED_RETENTION_MIN_S, CFG_RETENTION_MAX_S,
                &cfg->finished_retention_s) != 0)
        return -1;

    if (load_participants(ld, root, dir, cfg) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_participants; i++)
        for (size_t j = 0; j < cfg->participants[i].n_urls; j++)
            if (strcmp(cfg->participants[i].urls[j], cfg->admin_url) == 0)
                return fail(ld, config_setting_get_member(root, "admin_url"),
                            config_setting_get_member(root, "admin_url") ? NULL : "admin_url",
                            "admin_url %s is also the URL of participant \"%s\"", cfg->admin_url,
                            cfg->participants[i].name);

    const config_setting_t *defaults;
    if (get_member(ld, root, "defaults", CONFIG_TYPE_GROUP, 0, &defaults) != 0)
        return -1;
    cfg->default_timeout_ms = DEFAULT_TIMEOUT_MS;
    cfg->default_retry = default_retry;
    cfg->default_compensation_retry = default_compensation_retry;
    if (defaults != NULL &&
        (check_known(ld, defaults, defaults_settings) != 0 ||
         get_int(ld, defaults, "timeout_ms", 1, CFG_TIMEOUT_MAX_MS, &cfg->default_timeout_ms) !=
             0 ||
         get_retry(ld, defaults, "retry", &default_retry, &cfg->default_retry) != 0 ||
         get_retry(ld, defaults, "compensation_retry", &default_compensation_retry,
                   &cfg->default_compensation_retry) != 0))
        return -1;
    if (load_security(ld, root, dir, cfg) != 0)
        return -1;
    return load_observability(ld, root, dir, cfg);
}

/* ---- Saga files ----------------------------------------------------------- */

static int find_participant(const orch_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_participants; i++)
        if (strcmp(cfg->participants[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Every participant name, comma-separated, for messages. */
static void participant_list(const orch_config *cfg, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cfg->n_participants && pos < len; i++) {
        int n =
            snprintf(buf + pos, len - pos, "%s%s", i > 0 ? ", " : "", cfg->participants[i].name);
        if (n < 0)
            break;
        pos += (size_t)n;
    }
}

static int load_step(loader *ld, const config_setting_t *s, const orch_config *cfg,
                     const saga_def *def, size_t index, step_def *step)
{
    const char *v;
    int present;
    step->line = (int)config_setting_source_line(s);
    if (s->type != CONFIG_TYPE_GROUP)
        return fail(ld, s, NULL, "a step must be a group { ... }, not %s", type_name(s->type));
    if (check_known(ld, s, step_settings) != 0)
        return -1;

    if (get_string(ld, s, "name", 1, &v) != 0 ||
        check_name(ld, config_setting_get_member(s, "name"), "step name", v) != 0)
        return -1;
    for (size_t j = 0; j < index; j++)
        if (strcmp(def->steps[j].name, v) == 0)
            return fail(ld, config_setting_get_member(s, "name"), NULL,
                        "step name \"%s\" is already used by steps[%zu] at line %d", v, j,
                        def->steps[j].line);
    if ((step->name = util_strdup(v)) == NULL)
        return fail_oom(ld);

    if (get_string(ld, s, "participant", 1, &v) != 0)
        return -1;
    int pi = find_participant(cfg, v);
    if (pi < 0) {
        char known[512];
        participant_list(cfg, known, sizeof known);
        return fail(ld, config_setting_get_member(s, "participant"), NULL,
                    "unknown participant \"%s\" (the orchestrator file %s defines: %s)", v,
                    cfg->file, known);
    }
    step->participant_index = (size_t)pi;
    if ((step->participant = util_strdup(v)) == NULL)
        return fail_oom(ld);

    if (get_string(ld, s, "action", 1, &v) != 0 ||
        check_name(ld, config_setting_get_member(s, "action"), "action", v) != 0)
        return -1;
    if ((step->action = util_strdup(v)) == NULL)
        return fail_oom(ld);

    if (get_string(ld, s, "compensation", 1, &v) != 0)
        return -1;
    if (strcmp(v, CFG_COMPENSATION_NONE) != 0) {
        if (check_name(ld, config_setting_get_member(s, "compensation"), "compensation", v) != 0)
            return -1;
        if ((step->compensation = util_strdup(v)) == NULL)
            return fail_oom(ld);
    }

    step->timeout_ms = cfg->default_timeout_ms;
    if (get_int(ld, s, "timeout_ms", 1, CFG_TIMEOUT_MAX_MS, &step->timeout_ms) != 0 ||
        get_retry(ld, s, "retry", &cfg->default_retry, &step->retry) != 0)
        return -1;
    const config_setting_t *cr = config_setting_get_member(s, "compensation_retry");
    if (cr != NULL && step->compensation == NULL)
        return fail(ld, cr, NULL,
                    "\"compensation_retry\" is set but the step has compensation \"none\"");
    if (get_retry(ld, s, "compensation_retry", &cfg->default_compensation_retry,
                  &step->compensation_retry) != 0)
        return -1;

    if (get_names(ld, s, "inputs", &step->inputs, &step->n_inputs, &present) != 0)
        return -1;
    step->has_input_list = present;
    if (get_names(ld, s, "outputs", &step->outputs, &step->n_outputs, &present) != 0)
        return -1;
    return 0;
}

/*
 * Which step declares name as an output: its index, -1 for a saga input,
 * -2 for none. Outputs are unique (check_data_flow), so there is one at most.
 */
static int name_source(const saga_def *def, const char *name)
{
    if (name_in(name, def->inputs, def->n_inputs))
        return -1;
    for (size_t j = 0; j < def->n_steps; j++)
        if (name_in(name, def->steps[j].outputs, def->steps[j].n_outputs))
            return (int)j;
    return -2;
}

/*
 * The `after` lists, once every step's name is known: each names another
 * step of the saga, and the steps wait for one another without a cycle
 * (saga_dag.h). A step without the list waits for the one before it.
 */
static int resolve_after(loader *ld, const config_setting_t *steps, saga_def *def)
{
    for (size_t i = 0; i < def->n_steps; i++) {
        step_def *st = &def->steps[i];
        const config_setting_t *s = config_setting_get_elem(steps, (unsigned)i);
        char **names;
        size_t n;
        if (get_names(ld, s, "after", &names, &n, &st->has_after) != 0)
            return -1;
        if (n > 0 && (st->after = calloc(n, sizeof *st->after)) == NULL) {
            free_names(names, n);
            return fail_oom(ld);
        }
        const config_setting_t *list = config_setting_get_member(s, "after");
        for (size_t k = 0; k < n; k++) {
            int j = config_step_index(def, names[k]);
            if (j < 0 || (size_t)j == i) {
                fail(ld, config_setting_get_elem(list, (unsigned)k), NULL,
                     j < 0 ? "\"after\" of step \"%s\" names \"%s\", which is not a step of "
                             "this saga"
                           : "step \"%s\" cannot wait for itself (\"after\" names \"%s\")",
                     st->name, names[k]);
                free_names(names, n);
                return -1;
            }
            st->after[st->n_after++] = j;
        }
        free_names(names, n);
    }
    int cyc = saga_dag_find_cycle(def);
    if (cyc >= 0) {
        const config_setting_t *s = config_setting_get_elem(steps, (unsigned)cyc);
        const config_setting_t *at = config_setting_get_member(s, "after");
        return fail(ld, at != NULL ? at : s, NULL,
                    "the steps wait for one another in a cycle: step \"%s\" is (through "
                    "\"after\") among the steps it waits for",
                    def->steps[cyc].name);
    }
    return 0;
}

/*
 * The data flow of a saga, once all its steps are read: each input of a step
 * must be provided by the saga's inputs or by the outputs of a step it waits
 * for (directly or not: only those are sure to be done before it starts),
 * and each output must be a new name (a step's params merge the results of
 * the steps before it, so a repeated name would silently replace a value).
 */
static int check_data_flow(loader *ld, const config_setting_t *steps, const saga_def *def)
{
    for (size_t i = 0; i < def->n_steps; i++) {
        const step_def *st = &def->steps[i];
        const config_setting_t *s = config_setting_get_elem(steps, (unsigned)i);
        const config_setting_t *in = config_setting_get_member(s, "inputs");
        uint64_t before = saga_dag_ancestors(def, i);
        for (size_t k = 0; k < st->n_inputs; k++) {
            int src = name_source(def, st->inputs[k]);
            if (src == -1 || (src >= 0 && (before & SAGA_DAG_BIT(src))))
                continue;
            const config_setting_t *at = config_setting_get_elem(in, (unsigned)k);
            if (src >= 0)
                return fail(ld, at, NULL,
                            "input \"%s\" of step \"%s\" is an output of step \"%s\", which %s",
                            st->inputs[k], st->name, def->steps[src].name,
                            (size_t)src == i ? "runs as this very step"
                            : (saga_dag_descendants(def, i) & SAGA_DAG_BIT(src))
                                ? "runs later"
                                : "may run at the same time (name it, or a step after it, in "
                                  "\"after\")");
            return fail(ld, at, NULL,
                        "input \"%s\" of step \"%s\" is neither a saga input nor an output of "
                        "a step it waits for",
                        st->inputs[k], st->name);
        }
        const config_setting_t *out = config_setting_get_member(s, "outputs");
        for (size_t k = 0; k < st->n_outputs; k++) {
            const config_setting_t *at = config_setting_get_elem(out, (unsigned)k);
            if (name_in(st->outputs[k], def->inputs, def->n_inputs))
                return fail(ld, at, NULL, "output \"%s\" of step \"%s\" is already a saga input",
                            st->outputs[k], st->name);
            for (size_t j = 0; j < i; j++)
                if (name_in(st->outputs[k], def->steps[j].outputs, def->steps[j].n_outputs))
                    return fail(ld, at, NULL,
                                "output \"%s\" of step \"%s\" is already an output of step "
                                "\"%s\"",
                                st->outputs[k], st->name, def->steps[j].name);
        }
    }
    return 0;
}

/* The longest a policy's attempts may take: each waits its timeout, then
 * at most max_backoff before the next. */
static double policy_span_ms(const retry_policy *p, int64_t timeout_ms)
{
    return (double)p->max_attempts * (double)(timeout_ms + p->max_backoff_ms);
}

/*
 * A saga's retries must end well inside the participants' idempotency
 * retention: a retry after its key was purged would run the step again. Half
 * of it, so that the time a saga may wait for sagad to restart, or a FAILED
 * saga for its operator, is not eaten up by retries alone.
 */
static int check_retry_span(loader *ld, const config_setting_t *steps, const saga_def *def)
{
    double span = 0;
    for (size_t i = 0; i < def->n_steps; i++) {
        const step_def *sd = &def->steps[i];
        span += policy_span_ms(&sd->retry, sd->timeout_ms);
        if (sd->compensation != NULL)
            span += policy_span_ms(&sd->compensation_retry, sd->timeout_ms);
    }
    if (span <= (double)def->retention_ms / 2)
        return 0;
    return fail(ld, steps, NULL,
                "the retries of saga \"%s\" may last up to %.0f s, more than half of "
                "idempotency_retention_s (%lld s), after which participants forget its keys: "
                "lower max_attempts, timeout_ms or max_backoff_ms, or raise the retention (and "
                "the participants' --retention-s with it)",
                def->name, span / 1000, (long long)(def->retention_ms / 1000));
}

/*
 * Fills def (zeroed) from the saga file's root group. A pinned definition
 * (the stored text of a version sagas already run on) is not one of cfg's
 * files, so its name is not checked against them; nor is its retry span
 * checked again: it was when the version was loaded from its file, and
 * sagas running on it must finish on it whatever the retention says now
 * (sagad still sends nothing to a saga older than the retention).
 */
static int load_saga(loader *ld, const config_setting_t *root, const orch_config *cfg,
                     saga_def *def, int pinned)
{
    const char *v;
    const config_setting_t *s;
    int present;
    if (check_known(ld, root, saga_settings) != 0)
        return -1;

    if (get_string(ld, root, "name", 1, &v) != 0 ||
        check_name(ld, config_setting_get_member(root, "name"), "saga name", v) != 0)
        return -1;
    for (size_t i = 0; !pinned && i < cfg->n_sagas; i++)
        if (&cfg->sagas[i] != def && cfg->sagas[i].name != NULL &&
            strcmp(cfg->sagas[i].name, v) == 0)
            return fail(ld, config_setting_get_member(root, "name"), NULL,
                        "saga name \"%s\" is already defined in %s", v, cfg->sagas[i].file);
    if ((def->name = util_strdup(v)) == NULL)
        return fail_oom(ld);

    if (get_names(ld, root, "inputs", &def->inputs, &def->n_inputs, &present) != 0)
        return -1;

    int64_t deadline_s = 0;
    if (get_int(ld, root, "deadline_s", 1, CFG_DEADLINE_MAX_S, &deadline_s) != 0)
        return -1;
    def->deadline_ms = deadline_s * 1000;

    if (get_member(ld, root, "steps", CONFIG_TYPE_LIST, 1, &s) != 0)
        return -1;
    int n = config_setting_length(s);
    if (n == 0)
        return fail(ld, s, NULL, "a saga needs at least one step");
    if (n > SAGA_MAX_STEPS)
        return fail(ld, config_setting_get_elem(s, SAGA_MAX_STEPS), NULL,
                    "too many steps: %d, at most %d", n, SAGA_MAX_STEPS);
    def->steps = calloc((size_t)n, sizeof *def->steps);
    if (def->steps == NULL)
        return fail_oom(ld);
    def->n_steps = (size_t)n; /* calloc'd: every entry is safe to free */
    for (int i = 0; i < n; i++)
        if (load_step(ld, config_setting_get_elem(s, (unsigned)i), cfg, def, (size_t)i,
                      &def->steps[i]) != 0)
            return -1;
    def->retention_ms = cfg->retention_ms;
    if (!pinned && check_retry_span(ld, s, def) != 0)
        return -1;
    if (resolve_after(ld, s, def) != 0)
        return -1;
    return check_data_flow(ld, s, def);
}

/* Appends a saga, defined by root in the file path, to cfg. */
static int append_saga(loader *ld, const config_setting_t *root, orch_config *cfg, const char *path)
{
    saga_def *grown = realloc(cfg->sagas, (cfg->n_sagas + 1) * sizeof *cfg->sagas);
    if (grown == NULL)
        return fail_oom(ld);
    cfg->sagas = grown;
    saga_def *def = &cfg->sagas[cfg->n_sagas++];
    memset(def, 0, sizeof *def);
    if ((def->file = util_strdup(path)) == NULL)
        return fail_oom(ld);
    return load_saga(ld, root, cfg, def, 0);
}

/*
 * Appends the saga defined in path to cfg. Returns 0, or 1 when the file is
 * an orchestrator file (it sets "participants") and was skipped, so that an
 * orchestrator file, like the shipped sagas/sagad.cfg, may lie among the
 * saga files of another one; -1 on error.
 */
static int load_saga_file(orch_config *cfg, const char *path, char *err, size_t errlen)
{
    loader ld = {path, err, errlen};
    config_t c;
    const config_setting_t *root;
    int rc = -1;
    config_init(&c);
    if (parse_file(&ld, path, &c) != 0)
        goto done;
    root = config_root_setting(&c);
    if (config_setting_get_member(root, "participants") != NULL) {
        log_info("%s: an orchestrator file (it sets participants), not a saga: skipped", path);
        rc = 1;
        goto done;
    }
    rc = append_saga(&ld, root, cfg, path);
done:
    config_destroy(&c);
    return rc;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The candidate saga files of cfg->sagas_dir, sorted, as full paths in
 * *paths (possibly none): regular files named "*.cfg" not starting with '.',
 * except the orchestrator file (self, a realpath). where is the sagas_dir
 * setting, for messages.
 */
static int list_saga_files(loader *ld, const config_setting_t *where, const orch_config *cfg,
                           const char *self, char ***paths, size_t *n)
{
    DIR *d = NULL;
    char *real = NULL;
    char **list = NULL;
    size_t count = 0, cap = 0;
    int rc = -1;
    const char *member = where != NULL ? NULL : "sagas_dir";
    d = opendir(cfg->sagas_dir);
    if (d == NULL) {
        fail(ld, where, member, "sagas directory %s: %s", cfg->sagas_dir, strerror(errno));
        goto done;
    }
    struct dirent *e;
    while ((errno = 0, e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 4 || strcmp(e->d_name + len - 4, ".cfg") != 0)
            continue;
        char *path = resolve_path(cfg->sagas_dir, e->d_name);
        if (path == NULL) {
            fail_oom(ld);
            goto done;
        }
        struct stat st;
        free(real);
        real = realpath(path, NULL);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
            (real != NULL && strcmp(real, self) == 0)) {
            free(path);
            continue;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char **grown = realloc(list, ncap * sizeof *grown);
            if (grown == NULL) {
                free(path);
                fail_oom(ld);
                goto done;
            }
            list = grown;
            cap = ncap;
        }
        list[count++] = path;
    }
    if (errno != 0) {
        fail(ld, where, member, "sagas directory %s: %s", cfg->sagas_dir, strerror(errno));
        goto done;
    }
    if (count > 1)
        qsort(list, count, sizeof *list, compare_names);
    *paths = list;
    *n = count;
    list = NULL;
    rc = 0;
done:
    if (list != NULL)
        free_names(list, count);
    free(real);
    if (d != NULL)
        closedir(d);
    return rc;
}

/* ---- Public functions ---------------------------------------------------- */

int config_load(const char *path, orch_config *out, char *err, size_t errlen)
{
    loader ld = {path, err, errlen};
    config_t c;
    char *copy = NULL, *dir = NULL, *self = NULL, **files = NULL;
    size_t n_files = 0;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    config_init(&c);

    if (parse_file(&ld, path, &c) != 0)
        goto done;
    /* The file's directory, absolute, so resolved paths survive a chdir. */
    self = realpath(path, NULL);
    copy = util_strdup(path);
    if (self == NULL || copy == NULL) {
        fail_line(&ld, 1, "cannot resolve the file's path: %s",
                  self == NULL ? strerror(errno) : "out of memory");
        goto done;
    }
    char *slash = strrchr(copy, '/');
    if (slash == copy)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    dir = realpath(slash != NULL ? copy : ".", NULL);
    out->file = util_strdup(path);
    if (dir == NULL || out->file == NULL) {
        fail_line(&ld, 1, "cannot resolve the file's directory: %s",
                  dir == NULL ? strerror(errno) : "out of memory");
        goto done;
    }

    const config_setting_t *sagas_dir_setting = NULL;
    if (load_orchestrator(&ld, config_root_setting(&c), dir, out, &sagas_dir_setting) != 0 ||
        list_saga_files(&ld, sagas_dir_setting, out, self, &files, &n_files) != 0)
        goto done;
    for (size_t i = 0; i < n_files; i++)
        if (load_saga_file(out, files[i], err, errlen) < 0)
            goto done;
    if (out->n_sagas == 0) {
        fail(&ld, sagas_dir_setting, sagas_dir_setting != NULL ? NULL : "sagas_dir",
             "no saga files (*.cfg) in the sagas directory %s", out->sagas_dir);
        goto done;
    }
    rc = 0;
done:
    config_destroy(&c);
    free_names(files, n_files);
    free(copy);
    free(dir);
    free(self);
    if (rc != 0)
        config_free(out); /* leaves *out zeroed */
    return rc;
}

void config_free_saga(saga_def *d)
{
    if (d == NULL)
        return;
    for (size_t j = 0; j < d->n_steps; j++) {
        step_def *st = &d->steps[j];
        free(st->name);
        free(st->participant);
        free(st->action);
        free(st->compensation);
        free_names(st->inputs, st->n_inputs);
        free_names(st->outputs, st->n_outputs);
        free(st->after);
    }
    free(d->steps);
    free(d->name);
    free(d->file);
    free_names(d->inputs, d->n_inputs);
    memset(d, 0, sizeof *d);
}

void config_free_sagas(saga_def *defs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        config_free_saga(&defs[i]);
    free(defs);
}

void config_free(orch_config *cfg)
{
    if (cfg == NULL)
        return;
    config_free_sagas(cfg->sagas, cfg->n_sagas);
    for (size_t i = 0; i < cfg->n_participants; i++) {
        free(cfg->participants[i].name);
        for (size_t j = 0; j < cfg->participants[i].n_urls; j++)
            free(cfg->participants[i].urls[j]);
        free(cfg->participants[i].urls);
    }
    free(cfg->participants);
    free(cfg->file);
    free(cfg->admin_url);
    free(cfg->database);
    free(cfg->node_name);
    free(cfg->sagas_dir);
    if (cfg->metrics_token != NULL) {
        sec_wipe(cfg->metrics_token, strlen(cfg->metrics_token));
        free(cfg->metrics_token);
    }
    if (cfg->admin_token != NULL) {
        sec_wipe(cfg->admin_token, strlen(cfg->admin_token));
        free(cfg->admin_token);
    }
    free(cfg->tls_ca_file);
    free(cfg->tls_cert_file);
    free(cfg->tls_key_file);
    free(cfg->http_url);
    free(cfg->alert_command);
    memset(cfg, 0, sizeof *cfg);
}

const saga_def *config_find_saga(const orch_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_sagas; i++)
        if (strcmp(cfg->sagas[i].name, name) == 0)
            return &cfg->sagas[i];
    return NULL;
}

int config_step_index(const saga_def *def, const char *name)
{
    for (size_t i = 0; i < def->n_steps; i++)
        if (strcmp(def->steps[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* ---- Definition versions: canonical text, and reading it back ------------- */

static void canonical_names(strbuf *sb, const char *key, char *const *names, size_t n)
{
    sb_printf(sb, "%s = [", key);
    for (size_t i = 0; i < n; i++)
        sb_printf(sb, "%s\"%s\"", i > 0 ? ", " : "", names[i]);
    sb_puts(sb, "];\n");
}

static void canonical_retry(strbuf *sb, const char *key, const retry_policy *p)
{
    /* %.17g gives back the same double; the ".0" keeps it a float in the text. */
    char mult[40];
    snprintf(mult, sizeof mult, "%.17g", p->multiplier);
    if (strpbrk(mult, ".e") == NULL)
        strcat(mult, ".0");
    sb_printf(sb,
              "    %s = { max_attempts = %u; initial_backoff_ms = %lld; max_backoff_ms = %lld; "
              "multiplier = %s; };\n",
              key, p->max_attempts, (long long)p->initial_backoff_ms, (long long)p->max_backoff_ms,
              mult);
}

/*
 * Every setting is written out, defaults resolved, in one fixed order and
 * layout; names need no escaping (valid_name allows none of '"' or '\\').
 * The file name, line numbers and comments are not part of it.
 */
char *config_saga_canonical(const saga_def *def)
{
    strbuf sb = STRBUF_INIT;
    sb_printf(&sb, "name = \"%s\";\n", def->name);
    canonical_names(&sb, "inputs", def->inputs, def->n_inputs);
    /* Written only when set, like after: a definition that uses neither keeps
     * the text (and so the version) it had before they existed. */
    if (def->deadline_ms > 0)
        sb_printf(&sb, "deadline_s = %lld;\n", (long long)(def->deadline_ms / 1000));
    sb_puts(&sb, "steps = (\n");
    for (size_t i = 0; i < def->n_steps; i++) {
        const step_def *st = &def->steps[i];
        sb_printf(&sb, "  {\n    name = \"%s\";\n    participant = \"%s\";\n", st->name,
                  st->participant);
        sb_printf(&sb, "    action = \"%s\";\n    compensation = \"%s\";\n", st->action,
                  st->compensation != NULL ? st->compensation : CFG_COMPENSATION_NONE);
        if (st->has_input_list) {
            sb_puts(&sb, "    ");
            canonical_names(&sb, "inputs", st->inputs, st->n_inputs);
        }
        sb_puts(&sb, "    ");
        canonical_names(&sb, "outputs", st->outputs, st->n_outputs);
        if (st->has_after) {
            sb_puts(&sb, "    after = [");
            for (size_t k = 0; k < st->n_after; k++)
                sb_printf(&sb, "%s\"%s\"", k > 0 ? ", " : "", def->steps[st->after[k]].name);
            sb_puts(&sb, "];\n");
        }
        sb_printf(&sb, "    timeout_ms = %lld;\n", (long long)st->timeout_ms);
        canonical_retry(&sb, "retry", &st->retry);
        if (st->compensation != NULL)
            canonical_retry(&sb, "compensation_retry", &st->compensation_retry);
        sb_printf(&sb, "  }%s\n", i + 1 < def->n_steps ? "," : "");
    }
    sb_puts(&sb, ");\n");
    return sb_take(&sb, NULL);
}

int config_parse_saga_text(const orch_config *cfg, const char *text, const char *origin,
                           saga_def *out, char *err, size_t errlen)
{
    loader ld = {origin, err, errlen};
    config_t c;
    int rc = -1;
    memset(out, 0, sizeof *out);
    config_init(&c);
    if (parse_text(&ld, text, &c) == 0) {
        if ((out->file = util_strdup(origin)) == NULL)
            fail_oom(&ld);
        else
            rc = load_saga(&ld, config_root_setting(&c), cfg, out, 1);
    }
    config_destroy(&c);
    if (rc != 0)
        config_free_saga(out);
    return rc;
}

int config_load_sagas(const orch_config *cfg, saga_def **out, size_t *n, char *err, size_t errlen)
{
    /* A shallow copy whose saga list starts empty: load_saga_file appends to
     * it and checks names against it; everything else is cfg's, borrowed. */
    orch_config fresh = *cfg;
    loader ld = {cfg->file, err, errlen};
    char *self = realpath(cfg->file, NULL);
    char **files = NULL;
    size_t n_files = 0;
    int rc = -1;
    fresh.sagas = NULL;
    fresh.n_sagas = 0;
    *out = NULL;
    *n = 0;
    if (self == NULL) {
        fail_line(&ld, 1, "cannot resolve the file's path: %s", strerror(errno));
        goto done;
    }
    if (list_saga_files(&ld, NULL, &fresh, self, &files, &n_files) != 0)
        goto done;
    for (size_t i = 0; i < n_files; i++)
        if (load_saga_file(&fresh, files[i], err, errlen) < 0)
            goto done;
    if (fresh.n_sagas == 0) {
        fail_line(&ld, 1, "no saga files (*.cfg) in the sagas directory %s", cfg->sagas_dir);
        goto done;
    }
    *out = fresh.sagas;
    *n = fresh.n_sagas;
    fresh.sagas = NULL;
    fresh.n_sagas = 0;
    rc = 0;
done:
    config_free_sagas(fresh.sagas, fresh.n_sagas);
    free_names(files, n_files);
    free(self);
    return rc;
}
