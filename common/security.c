/* security — see security.h. */
#define _GNU_SOURCE /* O_PATH, AT_EACCESS */
#include "security.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <limits.h>
#include <nng/supplemental/tls/tls.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define SEC_PEM_MAX (1024 * 1024) /* bytes in a certificate or key file */

/* Does url start with scheme "://", in any case (nng takes "TCP://" too)? */
int sec_url_has_scheme(const char *url, const char *scheme)
{
    size_t n = strlen(scheme);
    return strncasecmp(url, scheme, n) == 0 && strncmp(url + n, "://", 3) == 0;
}

int sec_url_is_tls(const char *url)
{
    return sec_url_has_scheme(url, "tls+tcp") || sec_url_has_scheme(url, "tls+tcp4") ||
           sec_url_has_scheme(url, "tls+tcp6");
}

int sec_url_is_owner_only(const char *url)
{
    return sec_url_has_scheme(url, "ipc") || sec_url_has_scheme(url, "inproc");
}

static int host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int sec_url_is_local(const char *url)
{
    if (sec_url_is_owner_only(url) || sec_url_has_scheme(url, "abstract"))
        return 1;
    nng_url *u = NULL;
    if (nng_url_parse(&u, url) != 0)
        return 0;
    int local = u->u_hostname[0] != '\0' && host_is_loopback(u->u_hostname);
    nng_url_free(u);
    return local;
}

char *sec_url_host(const char *url)
{
    nng_url *u = NULL;
    if (nng_url_parse(&u, url) != 0)
        return NULL;
    char *host = util_strdup(u->u_hostname);
    nng_url_free(u);
    return host;
}

/* A transport of nng that other hosts may reach. Others are local or do not
 * exist in nng 1.5 (nng itself refuses to listen on those). */
static int url_is_network(const char *url)
{
    static const char *const schemes[] = {"tcp",      "tcp4", "tcp6", "tls+tcp", "tls+tcp4",
                                          "tls+tcp6", "ws",   "ws4",  "ws6",     "wss",
                                          "wss4",     "wss6", NULL};
    for (const char *const *p = schemes; *p != NULL; p++)
        if (sec_url_has_scheme(url, *p))
            return 1;
    return 0;
}

#define LISTEN_ADDRS_MAX 8 /* addresses of a host name named in a message */

/* The URL with its host replaced by addr (an IP literal), for a message. */
static void url_with_host(const nng_url *u, const char *addr, char *out, size_t outlen)
{
    int v6 = strchr(addr, ':') != NULL;
    snprintf(out, outlen, "%s://%s%s%s%s%s%s", u->u_scheme, v6 ? "[" : "", addr, v6 ? "]" : "",
             u->u_port[0] ? ":" : "", u->u_port, u->u_path);
}

int sec_check_listen_host(const char *what, const char *url, char *err, size_t errlen)
{
    nng_url *u = NULL;
    if (sec_url_is_owner_only(url) || sec_url_has_scheme(url, "abstract") ||
        nng_url_parse(&u, url) != 0)
        return 0; /* no host; or nng itself refuses the URL, with its own error */
    const char *host = u->u_hostname;
    unsigned char buf[sizeof(struct in6_addr)];
    if (host[0] == '\0' || inet_pton(AF_INET, host, buf) == 1 ||
        inet_pton(AF_INET6, host, buf) == 1) {
        nng_url_free(u);
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s: cannot listen on %s: host %s does not resolve (%s)", what, url,
                 host, gai_strerror(gai));
        nng_url_free(u);
        return -1;
    }
    char addrs[LISTEN_ADDRS_MAX][INET6_ADDRSTRLEN];
    size_t n = 0;
    for (const struct addrinfo *ai = res; ai != NULL && n < LISTEN_ADDRS_MAX; ai = ai->ai_next) {
        char a[INET6_ADDRSTRLEN];
        if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a, sizeof a, NULL, 0, NI_NUMERICHOST) != 0)
            continue;
        size_t k = 0;
        while (k < n && strcmp(addrs[k], a) != 0)
            k++;
        if (k == n)
            memcpy(addrs[n++], a, sizeof a);
    }
    freeaddrinfo(res);
    int rc = 0;
    if (n > 1) {
        /* nng listens on one address of a name, and which one depends on the
         * resolver's order: clients that pick another (Prometheus dialing
         * 127.0.0.1 while localhost gave ::1 first) would find nothing. */
        char list[LISTEN_ADDRS_MAX * (INET6_ADDRSTRLEN + 2)] = "";
        char first[512], second[512];
        for (size_t k = 0; k < n; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "",
                     addrs[k]);
        url_with_host(u, addrs[0], first, sizeof first);
        url_with_host(u, addrs[1], second, sizeof second);
        snprintf(err, errlen,
                 "%s: %s names host %s, which resolves to several addresses (%s), but a "
                 "listener takes only one: write the address itself, e.g. %s or %s",
                 what, url, host, list, first, second);
        rc = -1;
    }
    nng_url_free(u);
    return rc;
}

int sec_check_exposure(const char *what, const char *url, int tls_ok, int auth_ok,
                       const char *how_tls, const char *how_auth, char *err, size_t errlen)
{
    if (sec_url_is_owner_only(url) ||
        (!url_is_network(url) && !sec_url_has_scheme(url, "abstract")))
        return 0;
    if (sec_url_is_local(url)) {
        /* A loopback port or an abstract socket: every user of this host can
         * connect, so only authentication keeps the others out. */
        if (auth_ok)
            return sec_check_listen_host(what, url, err, errlen);
        snprintf(err, errlen,
                 "%s: refusing to listen on %s, which every user of this host can reach, "
                 "without authentication (%s); or listen on an ipc:// path, which only this "
                 "user can reach (see docs/SECURITY.md)",
                 what, url, how_auth);
        return -1;
    }
    int tls = tls_ok && sec_url_is_tls(url);
    if (tls && auth_ok)
        return sec_check_listen_host(what, url, err, errlen);
    char todo[512];
    if (!tls && !auth_ok)
        snprintf(todo, sizeof todo, "TLS and authentication: use a tls+tcp:// URL, %s and %s",
                 how_tls, how_auth);
    else if (!tls)
        snprintf(todo, sizeof todo, "TLS: use a tls+tcp:// URL and %s", how_tls);
    else
        snprintf(todo, sizeof todo, "authentication: %s", how_auth);
    snprintf(err, errlen,
             "%s: refusing to listen on %s, which other hosts can reach, without %s; or listen "
             "on an ipc:// path (see docs/SECURITY.md)",
             what, url, todo);
    return -1;
}

int sec_pipe_peer_trusted(nng_pipe pipe, const char *url, uint64_t *uid)
{
    if (!sec_url_has_scheme(url, "ipc") && !sec_url_has_scheme(url, "abstract"))
        return 1;
    uint64_t peer = 0;
    if (nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &peer) != 0) {
        *uid = UINT64_MAX;
        return 0;
    }
    *uid = peer;
    return peer == (uint64_t)geteuid() || peer == 0;
}

/* ---- TLS ------------------------------------------------------------------ */

/* The whole PEM file at path, NUL-terminated, malloc'd; NULL with err set. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    buf = malloc(SEC_PEM_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, SEC_PEM_MAX + 1, f) : 0;
    if (buf == NULL || ferror(f) || n == 0 || n > SEC_PEM_MAX) {
        snprintf(err, errlen, "%s %s: %s", what, path,
                 buf == NULL ? "out of memory"
                 : n == 0    ? "empty or unreadable"
                             : "too large");
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

/* A TLS configuration for mode from t; NULL with err set. */
static nng_tls_config *make_config(nng_tls_mode mode, const sec_tls_files *t, int *rv, char *err,
                                   size_t errlen)
{
    nng_tls_config *c = NULL;
    char *cert = NULL, *key = NULL;
    if ((*rv = nng_tls_config_alloc(&c, mode)) != 0) {
        snprintf(err, errlen, "TLS: %s", nng_strerror(*rv));
        return NULL;
    }
    if (t->ca_file != NULL && (*rv = nng_tls_config_ca_file(c, t->ca_file)) != 0) {
        snprintf(err, errlen, "TLS CA file %s: %s", t->ca_file, nng_strerror(*rv));
        goto fail;
    }
    if (t->cert_file != NULL || t->key_file != NULL) {
        *rv = NNG_EINVAL;
        if (t->cert_file == NULL || t->key_file == NULL) {
            snprintf(err, errlen, "TLS: a certificate needs both a cert file and a key file");
            goto fail;
        }
        if ((cert = read_pem("TLS certificate", t->cert_file, err, errlen)) == NULL ||
            (key = read_pem("TLS key", t->key_file, err, errlen)) == NULL)
            goto fail;
        if ((*rv = nng_tls_config_own_cert(c, cert, key, NULL)) != 0) {
            snprintf(err, errlen, "TLS certificate %s with key %s: %s", t->cert_file, t->key_file,
                     nng_strerror(*rv));
            goto fail;
        }
    }
    if (key != NULL)
        sec_wipe(key, strlen(key));
    free(cert);
    free(key);
    return c;
fail:
    if (key != NULL)
        sec_wipe(key, strlen(key));
    free(cert);
    free(key);
    nng_tls_config_free(c);
    return NULL;
}

int sec_tls_listener(nng_listener l, const sec_tls_files *t, char *err, size_t errlen)
{
    int rv = NNG_EINVAL;
    if (t == NULL || t->cert_file == NULL || t->key_file == NULL) {
        snprintf(err, errlen, "TLS: a tls+tcp:// listener needs a certificate and its key");
        return rv;
    }
    if (t->require_peer_cert && t->ca_file == NULL) {
        snprintf(err, errlen, "TLS: requiring client certificates needs a CA file");
        return rv;
    }
    nng_tls_config *c = make_config(NNG_TLS_MODE_SERVER, t, &rv, err, errlen);
    if (c == NULL)
        return rv;
    rv = nng_tls_config_auth_mode(c, t->require_peer_cert ? NNG_TLS_AUTH_MODE_REQUIRED
                                                          : NNG_TLS_AUTH_MODE_NONE);
    if (rv == 0)
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, c);
    if (rv != 0)
        snprintf(err, errlen, "TLS: cannot configure the listener: %s", nng_strerror(rv));
    nng_tls_config_free(c); /* the listener holds its own reference */
    return rv;
}

int sec_listener_tls_hook(nng_listener l, void *arg, char *err, size_t errlen)
{
    char *url = NULL;
    int rv = nng_listener_get_string(l, NNG_OPT_URL, &url);
    if (rv != 0) {
        snprintf(err, errlen, "TLS: cannot read the listener's URL: %s", nng_strerror(rv));
        return rv;
    }
    int tls = sec_url_is_tls(url);
    nng_strfree(url);
    return tls ? sec_tls_listener(l, arg, err, errlen) : 0;
}

int sec_tls_dialer(nng_dialer d, const sec_tls_files *t, const char *server_name, char *err,
                   size_t errlen)
{
    int rv = NNG_EINVAL;
    if (t == NULL || t->ca_file == NULL) {
        snprintf(err, errlen, "TLS: a tls+tcp:// dialer needs a CA file to verify its peer");
        return rv;
    }
    nng_tls_config *c = make_config(NNG_TLS_MODE_CLIENT, t, &rv, err, errlen);
    if (c == NULL)
        return rv;
    rv = nng_tls_config_auth_mode(c, NNG_TLS_AUTH_MODE_REQUIRED);
    if (rv == 0 && server_name != NULL && server_name[0] != '\0')
        rv = nng_tls_config_server_name(c, server_name);
    if (rv == 0)
        rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, c);
    if (rv != 0)
        snprintf(err, errlen, "TLS: cannot configure the dialer: %s", nng_strerror(rv));
    nng_tls_config_free(c);
    return rv;
}

/* ---- Private files -------------------------------------------------------- */

/* "root (uid 0)", or "uid 1234" when the user has no name. */
static void user_text(uid_t uid, char *out, size_t outlen)
{
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != NULL)
        snprintf(out, outlen, "%s (uid %lu)", found->pw_name, (unsigned long)uid);
    else
        snprintf(out, outlen, "uid %lu", (unsigned long)uid);
}

int sec_check_private_stat(const char *what, const char *path, const struct stat *st, char *err,
                           size_t errlen)
{
    char owner[300], self[300];
    if (S_ISLNK(st->st_mode)) {
        snprintf(err, errlen, "%s %s: a symbolic link: give the real path of the file", what, path);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "%s %s: not a regular file", what, path);
        return -1;
    }
    user_text(st->st_uid, owner, sizeof owner);
    if (st->st_uid != geteuid()) {
        struct passwd pw, *found = NULL;
        char buf[1024];
        user_text(geteuid(), self, sizeof self);
        int named = getpwuid_r(geteuid(), &pw, buf, sizeof buf, &found) == 0 && found != NULL;
        snprintf(err, errlen,
                 "%s %s: owned by %s, not by this program's user %s: another user could read or "
                 "change it; if the file is this program's, make it so: chown %s %s && chmod 600 "
                 "%s",
                 what, path, owner, self, named ? found->pw_name : "USER", path, path);
        return -1;
    }
    if ((st->st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "%s %s: mode %04o, owner %s: group or others may %s it; make it private: chmod "
                 "600 %s",
                 what, path, (unsigned)(st->st_mode & 07777), owner,
                 (st->st_mode & 044) && (st->st_mode & 022) ? "read and write"
                 : (st->st_mode & 022)                      ? "write"
                 : (st->st_mode & 044)                      ? "read"
                                                            : "execute",
                 path);
        return -1;
    }
    return 0;
}

/* ---- Secrets -------------------------------------------------------------- */

int sec_read_secret_file(const char *path, char **out, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL;
    int fd = -1, rc = -1;
    *out = NULL;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
        goto done;
    }
    if (sec_check_private_stat("token file", path, &st, err, errlen) != 0)
        goto done;
    buf = malloc(SEC_SECRET_MAX + 3);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, SEC_SECRET_MAX + 2 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0 || (n += (size_t)r) == SEC_SECRET_MAX + 2)
            break;
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0 || n > SEC_SECRET_MAX) {
        snprintf(err, errlen, "token file %s: the token must be 1 to %d bytes", path,
                 SEC_SECRET_MAX);
        goto done;
    }
    if (memchr(buf, '\0', n) != NULL || memchr(buf, '\n', n) != NULL) {
        snprintf(err, errlen, "token file %s: the token must be one line without NUL bytes", path);
        goto done;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    rc = 0;
done:
    if (buf != NULL) {
        sec_wipe(buf, SEC_SECRET_MAX + 3);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- Paths --------------------------------------------------------------- */

#define SEC_LINKS_MAX 16 /* symbolic links followed in one path, as the kernel's ELOOP */

static int owner_trusted(uid_t uid)
{
    return uid == geteuid() || uid == 0;
}

/* Is the directory dir (lstat'ed or stat'ed into st) writable only by this
 * user or root? 0, or -1 with the reason in err. */
static int dir_trusted(const char *dir, const struct stat *st, char *err, size_t errlen)
{
    if (!owner_trusted(st->st_uid)) {
        snprintf(err, errlen,
                 "directory %s is owned by uid %u, neither this user (uid %u) nor root, who "
                 "could replace what it holds",
                 dir, (unsigned)st->st_uid, (unsigned)geteuid());
        return -1;
    }
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(err, errlen,
                 "directory %s is writable by %s (mode %04o), who could replace what it holds%s: "
                 "use a directory that only its owner can write",
                 dir, (st->st_mode & S_IWOTH) ? "every user" : "its group",
                 (unsigned)(st->st_mode & 07777),
                 (st->st_mode & S_ISVTX) ? " or put theirs there before it exists (a sticky "
                                           "directory such as /tmp is not enough)"
                                         : "");
        return -1;
    }
    return 0;
}

/* The checks on the file at the end of a trusted path (lstat'ed into st). */
static int file_trusted(const char *path, const struct stat *st, int want_exec, char *err,
                        size_t errlen)
{
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        return -1;
    }
    if (!owner_trusted(st->st_uid)) {
        snprintf(err, errlen,
                 "%s is owned by uid %u, neither this user (uid %u) nor root, who could change it",
                 path, (unsigned)st->st_uid, (unsigned)geteuid());
        return -1;
    }
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(err, errlen, "%s is writable by %s (mode %04o): chmod go-w %s", path,
                 (st->st_mode & S_IWOTH) ? "every user" : "its group",
                 (unsigned)(st->st_mode & 07777), path);
        return -1;
    }
    if (want_exec && faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) != 0) {
        snprintf(err, errlen, "%s is not executable: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int sec_check_trusted_path(const char *path, int want_exec, char *err, size_t errlen)
{
    char why[768];
    char *cur = NULL;
    int links = 0, rc = -1;
    struct stat st;
    if (path == NULL || path[0] != '/') {
        snprintf(err, errlen, "%s: not an absolute path", path ? path : "(null)");
        return -1;
    }
    if (lstat("/", &st) != 0) {
        snprintf(why, sizeof why, "/: %s", strerror(errno));
        goto done;
    }
    if (dir_trusted("/", &st, why, sizeof why) != 0)
        goto done;
    if ((cur = util_strdup(path)) == NULL) {
        snprintf(why, sizeof why, "out of memory");
        goto done;
    }
    /* cur[0, pos) is checked; each step lstats one more component. A link
     * restarts the walk on the path it leads to, from /, so the directories
     * of its target are checked too, and those holding each link before it. */
    size_t pos = 1;
    for (;;) {
        while (cur[pos] == '/')
            pos++;
        size_t end = pos;
        while (cur[end] != '\0' && cur[end] != '/')
            end++;
        size_t after = end;
        while (cur[after] == '/')
            after++;
        int last = cur[after] == '\0';
        char saved = cur[end];
        cur[end] = '\0';
        if (lstat(cur, &st) != 0) {
            snprintf(why, sizeof why, "%s: %s", cur, strerror(errno));
            goto done;
        }
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = ++links > SEC_LINKS_MAX ? -1 : readlink(cur, target, sizeof target - 1);
            if (n <= 0) {
                snprintf(why, sizeof why, "%s: %s", cur,
                         links > SEC_LINKS_MAX ? "too many symbolic links" : strerror(errno));
                goto done;
            }
            target[n] = '\0';
            cur[end] = saved;
            /* cur[0, pos) is the link's directory, with its trailing '/'. */
            char *next = target[0] == '/'
                             ? util_asprintf("%s%s", target, cur + end)
                             : util_asprintf("%.*s%s%s", (int)pos, cur, target, cur + end);
            if (next == NULL) {
                snprintf(why, sizeof why, "out of memory");
                goto done;
            }
            free(cur);
            cur = next;
            pos = 1;
            continue;
        }
        if (last) {
            rc = file_trusted(cur, &st, want_exec, why, sizeof why);
            goto done;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(why, sizeof why, "%s is not a directory", cur);
            goto done;
        }
        if (dir_trusted(cur, &st, why, sizeof why) != 0)
            goto done;
        cur[end] = saved;
        pos = end;
    }
done:
    if (rc != 0)
        snprintf(err, errlen, "%s: %s", path, why);
    free(cur);
    return rc;
}

/*
 * Could another user rename one of dir's ancestors away and put their own in
 * its place (the socket would then be theirs to plant)? Each ancestor of the
 * resolved path must be owned by this user or root, and not writable by
 * group or others unless sticky: in a sticky directory such as /tmp only an
 * entry's owner may rename it. 0, or -1 with the reason in err.
 */
static int ancestors_keep_their_entries(const char *dir, char *err, size_t errlen)
{
    char *real = realpath(dir, NULL);
    if (real == NULL) {
        snprintf(err, errlen, "directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (char *slash = strrchr(real, '/'); slash != NULL && rc == 0; slash = strrchr(real, '/')) {
        if (slash == real && real[1] == '\0')
            break;                           /* "/" was the last one checked */
        slash[slash == real ? 1 : 0] = '\0'; /* the parent; "/" for "/x" */
        struct stat st;
        if (stat(real, &st) != 0) {
            snprintf(err, errlen, "directory %s: %s", real, strerror(errno));
            rc = -1;
        } else if (!owner_trusted(st.st_uid)) {
            snprintf(err, errlen,
                     "directory %s is owned by uid %u, neither this user nor root, who could "
                     "rename what it holds and put theirs in its place",
                     real, (unsigned)st.st_uid);
            rc = -1;
        } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && !(st.st_mode & S_ISVTX)) {
            snprintf(err, errlen,
                     "directory %s is writable by %s (mode %04o) without the sticky bit: they "
                     "could rename what it holds and put theirs in its place",
                     real, (st.st_mode & S_IWOTH) ? "every user" : "its group",
                     (unsigned)(st.st_mode & 07777));
            rc = -1;
        }
    }
    free(real);
    return rc;
}

int sec_check_socket_dir(const char *socket_path, char *err, size_t errlen)
{
    char why[768];
    const char *slash = strrchr(socket_path, '/');
    char *dir = slash == NULL ? util_strdup(".")
                : slash == socket_path
                    ? util_strdup("/")
                    : util_asprintf("%.*s", (int)(slash - socket_path), socket_path);
    struct stat st;
    int rc = -1;
    if (dir == NULL)
        snprintf(why, sizeof why, "out of memory");
    else if (stat(dir, &st) != 0)
        snprintf(why, sizeof why, "directory %s: %s", dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        snprintf(why, sizeof why, "%s is not a directory", dir);
    else if (dir_trusted(dir, &st, why, sizeof why) == 0)
        rc = ancestors_keep_their_entries(dir, why, sizeof why);
    if (rc != 0)
        snprintf(err, errlen, "socket %s: %s", socket_path, why);
    free(dir);
    return rc;
}

int sec_socket_owner_only(const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int rc = -1;
    if (S_ISLNK(st.st_mode))
        snprintf(err, errlen, "socket %s is a symbolic link: left alone", path);
    else if (!S_ISSOCK(st.st_mode))
        snprintf(err, errlen, "socket %s is not a socket: left alone", path);
    else if (st.st_uid != geteuid())
        snprintf(err, errlen, "socket %s is owned by uid %u, not this user: left alone", path,
                 (unsigned)st.st_uid);
    else
        rc = 0;
    if (rc == 0 && (st.st_mode & 07777) != 0600) {
        /* No fchmod on an O_PATH descriptor; its /proc name is the socket
         * itself, never the link a path could have become since. */
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
        if (chmod(self, 0600) != 0 || fstat(fd, &st) != 0 || (st.st_mode & 07777) != 0600) {
            snprintf(err, errlen, "socket %s: cannot make it owner-only: %s", path,
                     strerror(errno));
            rc = -1;
        }
    }
    close(fd);
    return rc;
}

int sec_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = alen != blen;
    /* Always blen iterations: the time depends on the secret's length only. */
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? x[i] : 0) ^ y[i]);
    return diff == 0;
}

void sec_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n-- > 0)
        *v++ = 0;
}
