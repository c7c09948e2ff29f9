/*
 * test_sec_conns — bounded connections (docs/SECURITY.md, "Bounded
 * connections"):
 *
 *   - flood: the real sagad, started with the stock soft descriptor limit
 *     (1024), a tcp://127.0.0.1 admin_url with a token and an http_url, is
 *     held by 2,000 connections that never authenticate (HTTP: idle, and
 *     a request line sent a byte at a time; admin: an SP handshake alone,
 *     and a handshake then a length header announcing 256 KiB). Meanwhile
 *     `sagactl --timeout 1000 stats` with the token answers, an
 *     authenticated GET /metrics answers, sagad's usable address space and
 *     resident size grow by less than 64 MB, and after conn_header_timeout_ms
 *     sagad has closed every one of them; its log shows it raised its
 *     descriptor limit;
 *   - the HTTP rules, in process: a header over 8 KiB gets 431, another
 *     method 405, a request with a body 400, HEAD the headers alone; a
 *     header that never ends and an idle kept-alive connection are closed
 *     after their timeouts;
 *   - the caps, in process: an HTTP listener with room for 3 connections
 *     closes the one that has waited longest for a request (not the oldest
 *     connection: one that was just answered waited least); an admin-style
 *     listener with room for 3 unauthenticated pipes closes the oldest
 *     unauthenticated one, and never one that authenticated.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>

#include "httpd.h"
#include "listener.h"
#include "sec_fixture.h"
#include "util.h"

#define TOKEN             "correct-horse-battery-staple-42"
#define FLOOD             2000 /* connections, a quarter of each kind */
#define HEADER_TIMEOUT_MS 3000
#define GROWTH_MAX_KB     (64 * 1024)
#define CONNECT_WAIT_MS   60000 /* for 2,000 connects on a loaded machine */
#define CLOSE_WAIT_MS     (HEADER_TIMEOUT_MS + 20000)
#define FD_SLACK          8 /* sagad's own descriptors may vary a little (WAL, dialers) */

enum kind { HTTP_IDLE, HTTP_SLOW, ADMIN_IDLE, ADMIN_SLOW };

typedef struct {
    char *dir;
    char *token_file;
    pid_t sagad;
    int fds[FLOOD];
    int n_fds;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (f == NULL || (f->dir = th_tempdir()) == NULL)
        return -1;
    *state = f;
    f->token_file = th_path(f->dir, "admin.token");
    /* Our own 2,000 connections need more than the stock 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max < FLOOD + 200)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    return th_write_file(f->token_file, TOKEN "\n");
}

static void close_flood(fixture *f)
{
    for (int i = 0; i < f->n_fds; i++)
        if (f->fds[i] >= 0)
            close(f->fds[i]);
    f->n_fds = 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close_flood(f);
    if (f->sagad > 0)
        th_kill(f->sagad);
    if (getenv("SAGA_TEST_KEEP"))
        fprintf(stderr, "kept %s\n", f->dir);
    else
        th_rmtree(f->dir);
    free(f->token_file);
    free(f->dir);
    free(f);
    return 0;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A field of /proc/PID/status in kB, or -1. */
static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    long kb = -1;
    size_t n = strlen(field);
    while (fp && fgets(line, sizeof line, fp))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    if (fp)
        fclose(fp);
    return kb;
}

/*
 * The address space pid can hold data in, in kB: its mappings but those
 * without any access. glibc reserves 64 MB per malloc arena as PROT_NONE
 * and opens it as it grows, so VmSize moves by 64 MB when another of nng's
 * threads first allocates, whatever it allocates; an allocation (e.g. the
 * 256 KiB a length header announces) is always in an accessible mapping.
 */
static long usable_kb(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return -1;
    unsigned long long total = 0;
    while (fgets(line, sizeof line, fp)) {
        unsigned long long lo, hi;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s", &lo, &hi, perms) == 3 && strncmp(perms, "---", 3) != 0)
            total += hi - lo;
    }
    fclose(fp);
    return (long)(total / 1024);
}

/* How many descriptors pid has open, or -1. */
static int fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Starts connecting to 127.0.0.1:port without waiting; the fd or -1. */
static int connect_nonblocking(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A blocking connection to 127.0.0.1:port, or -1. */
static int connect_blocking(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Has the peer closed fd (EOF or reset), within wait_ms? 1, 0 (still open), or -1. */
static int peer_closed(int fd, int wait_ms)
{
    long long until = now_ms() + wait_ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long long left = until - now_ms();
        int r = poll(&p, 1, left > 0 ? (int)left : 0);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0) {
            char buf[4096];
            ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                return 1;
            continue; /* data (e.g. the SP handshake): keep reading */
        }
        if (left <= 0)
            return 0;
    }
}

/* The SP header of a req0 peer, and an 8-byte length announcing 256 KiB. */
static const unsigned char sp_req_header[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x30, 0x00, 0x00};
static const unsigned char sp_len_256k[8] = {0, 0, 0, 0, 0, 0x04, 0x00, 0x00};

static void send_quiet(int fd, const void *buf, size_t len)
{
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n; /* sagad may have closed it already: that is what it should do */
}

/* A GET with the token on a fresh connection; the status, or -1. */
static int http_get_status(int port, const char *path, const char *token)
{
    int fd = connect_blocking(port);
    if (fd < 0)
        return -1;
    char req[512];
    int n = snprintf(
        req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%sConnection: close\r\n\r\n",
        path, token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    char buf[512] = "";
    size_t got = 0;
    int status = -1;
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
        ssize_t r;
        while (got + 1 < sizeof buf && (r = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0)
            got += (size_t)r;
        buf[got] = '\0';
        if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
            status = -1;
    }
    close(fd);
    return status;
}

/* ---- The flood, against the real sagad --------------------------------- */

static pid_t start_sagad(fixture *f, int admin_port, int http_port, char **log)
{
    char *cfg = th_path(f->dir, "sagad.cfg"), *sagas = th_source_path("sagas");
    char *p[5];
    const char *names[] = {"order", "payment", "inventory", "shipping", "loyalty"};
    for (int i = 0; i < 5; i++)
        p[i] = th_ipc_url(f->dir, names[i]);
    char *text = util_asprintf(
        "admin_url = \"tcp://127.0.0.1:%d\";\nadmin_token_file = \"admin.token\";\n"
        "http_url = \"http://127.0.0.1:%d\";\ndatabase = \"sagad.db\";\nsagas_dir = \"%s\";\n"
        "conn_header_timeout_ms = %d;\nconn_max_unauthenticated = 64;\n"
        "participants = {\n  order = \"%s\";\n  payment = \"%s\";\n"
        "  inventory = \"%s\";\n  shipping = \"%s\";\n  loyalty = \"%s\";\n};\n",
        admin_port, http_port, sagas, HEADER_TIMEOUT_MS, p[0], p[1], p[2], p[3], p[4]);
    assert_int_equal(th_write_file(cfg, text), 0);
    *log = th_path(f->dir, "sagad.log");
    const char *args[] = {"--config", cfg, NULL};
    /* sagad starts with the stock soft limit, as from a login shell; it
     * must raise it itself. */
    struct rlimit mine, stock;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &mine), 0);
    stock = mine;
    stock.rlim_cur = 1024;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &stock), 0);
    pid_t pid = -1;
    int rc = th_spawn("sagad", args, NULL, *log, &pid);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &mine), 0);
    assert_int_equal(rc, 0);
    for (int i = 0; i < 5; i++)
        free(p[i]);
    free(cfg);
    free(sagas);
    free(text);
    return pid;
}

/* Runs `sagactl --timeout 1000 stats` with the token: its exit code; the
 * time it took in *ms. */
static int ctl_stats(fixture *f, const char *url, long long *ms)
{
    char *out = th_path(f->dir, "ctl.out");
    const char *args[] = {"--url",     url,    "--token-file", f->token_file,
                          "--timeout", "1000", "stats",        NULL};
    pid_t pid;
    int status = -1;
    long long t0 = now_ms();
    assert_int_equal(th_spawn("sagactl", args, NULL, out, &pid), 0);
    if (th_wait_exit(pid, SFX_TIMEOUT_MS, &status) != 0)
        th_kill(pid);
    *ms = now_ms() - t0;
    char *text = th_read_file(out);
    print_message("sagactl stats (%lld ms): %s\n", *ms, text ? text : "");
    free(text);
    free(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_flood(void **state)
{
    fixture *f = *state;
    int admin_port = sfx_free_port(), http_port = sfx_free_port();
    while (http_port == admin_port)
        http_port = sfx_free_port();
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", admin_port);
    char *log = NULL;
    f->sagad = start_sagad(f, admin_port, http_port, &log);
    assert_int_equal(th_wait_dial(url, f->sagad, SFX_TIMEOUT_MS), 0);
    long long until = now_ms() + SFX_TIMEOUT_MS;
    while (http_get_status(http_port, "/metrics", TOKEN) != 200 && now_ms() < until)
        usleep(50 * 1000);
    assert_int_equal(http_get_status(http_port, "/metrics", TOKEN), 200);
    long vm_before = usable_kb(f->sagad), rss_before = proc_kb(f->sagad, "VmRSS");
    int fds_before = fd_count(f->sagad);
    assert_true(vm_before > 0 && rss_before > 0 && fds_before > 0);

    /* Open the flood without waiting on any one connection. */
    enum kind kinds[FLOOD];
    int connected[FLOOD] = {0};
    for (int i = 0; i < FLOOD; i++) {
        kinds[i] = (enum kind)(i % 4);
        int port = kinds[i] == HTTP_IDLE || kinds[i] == HTTP_SLOW ? http_port : admin_port;
        f->fds[i] = connect_nonblocking(port);
        assert_true(f->fds[i] >= 0);
        f->n_fds = i + 1;
    }
    int n_connected = 0;
    until = now_ms() + CONNECT_WAIT_MS;
    static struct pollfd pfd[FLOOD];
    while (n_connected < FLOOD && now_ms() < until) {
        int n = 0;
        int which[FLOOD];
        for (int i = 0; i < FLOOD; i++)
            if (!connected[i]) {
                pfd[n] = (struct pollfd){.fd = f->fds[i], .events = POLLOUT};
                which[n++] = i;
            }
        if (poll(pfd, (nfds_t)n, 200) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (!(pfd[k].revents & (POLLOUT | POLLERR | POLLHUP)))
                continue;
            int i = which[k], err = 0;
            socklen_t len = sizeof err;
            getsockopt(f->fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
            connected[i] = 1;
            /* Reset: sagad took it and has already closed it (a newer one
             * took its place). Refused or timed out: never taken. */
            if (err != 0 && err != ECONNRESET && err != EPIPE) {
                print_message("connection %d: %s\n", i, strerror(err));
                continue;
            }
            n_connected++;
            if (kinds[i] == HTTP_SLOW)
                send_quiet(f->fds[i], "G", 1);
            else if (kinds[i] == ADMIN_IDLE)
                send_quiet(f->fds[i], sp_req_header, sizeof sp_req_header);
            else if (kinds[i] == ADMIN_SLOW) {
                unsigned char both[16];
                memcpy(both, sp_req_header, 8);
                memcpy(both + 8, sp_len_256k, 8);
                send_quiet(f->fds[i], both, sizeof both);
            }
        }
    }
    print_message("%d of %d connections established\n", n_connected, FLOOD);

    /* A slow request line, one more byte of it on each slow connection. */
    for (int i = 0; i < FLOOD; i++)
        if (kinds[i] == HTTP_SLOW)
            send_quiet(f->fds[i], "E", 1);

    /* Wait until sagad has taken every admin connection from its listen
     * queue (it answers the SP handshake; it may close at once): stats
     * must be answered in 1 s while they are held, not wait behind them
     * in the kernel's queue. */
    int answered[FLOOD] = {0}, n_answered = 0, n_admin = 0;
    for (int i = 0; i < FLOOD; i++)
        n_admin += kinds[i] == ADMIN_IDLE || kinds[i] == ADMIN_SLOW;
    until = now_ms() + CONNECT_WAIT_MS;
    while (n_answered < n_admin && now_ms() < until) {
        int n = 0, which[FLOOD];
        for (int i = 0; i < FLOOD; i++)
            if ((kinds[i] == ADMIN_IDLE || kinds[i] == ADMIN_SLOW) && answered[i] < 8) {
                pfd[n] = (struct pollfd){.fd = f->fds[i], .events = POLLIN};
                which[n++] = i;
            }
        if (poll(pfd, (nfds_t)n, 200) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            if (pfd[k].revents == 0)
                continue;
            int i = which[k];
            char buf[8];
            ssize_t r = recv(f->fds[i], buf, (size_t)(8 - answered[i]), MSG_DONTWAIT);
            if (r > 0)
                answered[i] += (int)r;
            else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                answered[i] = 8; /* taken, and closed already */
            n_answered += answered[i] == 8;
        }
    }
    print_message("%d of %d admin connections taken by sagad\n", n_answered, n_admin);

    /* While they are held: the operator is answered, within 1 s. */
    long long ms = 0;
    assert_int_equal(ctl_stats(f, url, &ms), 0);
    assert_int_equal(http_get_status(http_port, "/metrics", TOKEN), 200);
    assert_int_equal(n_connected, FLOOD); /* all were held while it answered */
    for (int i = 0; i < FLOOD; i++)
        if (kinds[i] == HTTP_SLOW)
            send_quiet(f->fds[i], "T", 1);
    long vm_after = usable_kb(f->sagad), rss_after = proc_kb(f->sagad, "VmRSS");
    print_message("sagad holds %d descriptors (%d before)\n", fd_count(f->sagad), fds_before);
    print_message(
        "sagad's usable address space %ld -> %ld kB (VmSize %ld kB), VmRSS %ld -> %ld kB\n",
        vm_before, vm_after, proc_kb(f->sagad, "VmSize"), rss_before, rss_after);
    assert_true(rss_after - rss_before < GROWTH_MAX_KB);
#if !defined(__SANITIZE_ADDRESS__)
    /* ASan reserves address space of its own as it allocates. */
    assert_true(vm_after - vm_before < GROWTH_MAX_KB);
#endif

    /* Unauthenticated, they are all closed by sagad after the header
     * timeout (most at once, as newer ones took their place): sagad is back
     * to the descriptors it had, and every connection that sent something
     * sees its end. (An idle connection the kernel completed with a SYN
     * cookie while the listen queue was full never reached sagad: as it
     * sends nothing, its client never learns; sagad holds nothing for it.) */
    until = now_ms() + CLOSE_WAIT_MS;
    while (fd_count(f->sagad) > fds_before + FD_SLACK && now_ms() < until)
        usleep(100 * 1000);
    print_message("sagad holds %d descriptors after the header timeout\n", fd_count(f->sagad));
    assert_true(fd_count(f->sagad) <= fds_before + FD_SLACK);
    int still_open = 0, open_by_kind[4] = {0};
    for (int i = 0; i < FLOOD; i++) {
        if (kinds[i] == HTTP_IDLE)
            continue;
        long long left = until - now_ms();
        if (peer_closed(f->fds[i], left > 0 ? (int)left : 0) != 1) {
            still_open++;
            open_by_kind[kinds[i]]++;
        }
    }
    print_message("%d connections still open after the header timeout (HTTP slow %d; "
                  "admin idle %d, slow %d)\n",
                  still_open, open_by_kind[HTTP_SLOW], open_by_kind[ADMIN_IDLE],
                  open_by_kind[ADMIN_SLOW]);
    assert_int_equal(still_open, 0);
    close_flood(f);

    /* sagad raised its own descriptor limit, and says so. */
    char *text = th_read_file(log);
    assert_non_null(text);
    assert_non_null(strstr(text, "open-file limit"));
    assert_non_null(strstr(text, "(was 1024;"));
    free(text);
    int status = 0;
    assert_int_equal(th_stop(f->sagad, SFX_TIMEOUT_MS, &status), 0);
    f->sagad = 0;
    assert_true(th_exited_with(status, 0));
    free(log);
}

/* ---- The caps, in process ---------------------------------------------- */

static void hello(void *arg, const char *path, const char *query, httpd_response *res)
{
    (void)arg, (void)path, (void)query;
    res->body = util_strdup("hello\n");
    res->len = 6;
    res->content_type = "text/plain";
}

static int wait_http_conns(httpd *h, int n)
{
    long long until = now_ms() + SFX_TIMEOUT_MS;
    while (httpd_connections(h) != n && now_ms() < until)
        usleep(10 * 1000);
    return httpd_connections(h) == n ? 0 : -1;
}

/* One keep-alive request on fd: the status, or -1. */
static int keepalive_get(int fd)
{
    const char req[] = "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1))
        return -1;
    char buf[1024];
    size_t got = 0;
    while (got + 1 < sizeof buf) {
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\nhello\n"))
            break;
    }
    int status = -1;
    return sscanf(buf, "HTTP/1.1 %d", &status) == 1 ? status : -1;
}

static void test_http_cap_oldest_idle_first(void **state)
{
    (void)state;
    char url[64], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", sfx_free_port());
    httpd_opts o = {.name = "test", .url = url, .max_connections = 3};
    httpd *h = httpd_open(&o, err, sizeof err);
    assert_non_null(h);
    assert_int_equal(httpd_route(h, "/hello", 0, 0, hello, NULL), 0);
    assert_int_equal(httpd_start(h, err, sizeof err), 0);
    int port = httpd_port(h);
    int a = connect_blocking(port), b, c, d, e;
    assert_true(a >= 0);
    assert_int_equal(wait_http_conns(h, 1), 0);
    assert_true((b = connect_blocking(port)) >= 0);
    assert_int_equal(wait_http_conns(h, 2), 0);
    assert_true((c = connect_blocking(port)) >= 0);
    assert_int_equal(wait_http_conns(h, 3), 0);
    /* b is answered: it now waits for its next request, the least of all. */
    usleep(20 * 1000);
    assert_int_equal(keepalive_get(b), 200);
    /* d closes a (the longest waiting), e then closes c, not b. */
    assert_true((d = connect_blocking(port)) >= 0);
    assert_int_equal(peer_closed(a, SFX_TIMEOUT_MS), 1);
    assert_true((e = connect_blocking(port)) >= 0);
    assert_int_equal(peer_closed(c, SFX_TIMEOUT_MS), 1);
    assert_int_equal(peer_closed(b, 200), 0);
    assert_int_equal(keepalive_get(b), 200);
    assert_int_equal(keepalive_get(e), 200);
    assert_int_equal(wait_http_conns(h, 3), 0);
    close(a), close(b), close(c), close(d), close(e);
    httpd_close(h);
}

/* Sends req on a fresh connection to port and reads until the server
 * closes (or 10 s): what came back, malloc'd. */
static char *exchange(int port, const char *req, size_t len)
{
    int fd = connect_blocking(port);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, got = 0;
    char *buf = calloc(1, cap);
    if (buf != NULL && send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len) {
        ssize_t r;
        while (got + 1 < cap && (r = recv(fd, buf + got, cap - 1 - got, 0)) > 0)
            got += (size_t)r;
    }
    close(fd);
    return buf;
}

static void test_http_limits(void **state)
{
    (void)state;
    char url[64], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", sfx_free_port());
    httpd_opts o = {.name = "test", .url = url, .header_timeout_ms = 300, .idle_timeout_ms = 300};
    httpd *h = httpd_open(&o, err, sizeof err);
    assert_non_null(h);
    assert_int_equal(httpd_route(h, "/hello", 0, 0, hello, NULL), 0);
    assert_int_equal(httpd_start(h, err, sizeof err), 0);
    int port = httpd_port(h);

    /* 8 KiB of header without its end: 431, closed. (No more than that:
     * bytes left unread would make the close a reset, which can discard
     * the answer before the client reads it.) */
    size_t big_len = 8192;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    memcpy(big, "GET /hello HTTP/1.1\r\nX-Pad: ", 29);
    memset(big + 29, 'a', big_len - 29);
    big[big_len] = '\0';
    char *r = exchange(port, big, big_len);
    free(big);
    assert_non_null(r);
    assert_non_null(strstr(r, "HTTP/1.1 431 "));
    free(r);
    /* Another method: 405 with Allow, closed; a body: 400. */
    const char post[] = "POST /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    r = exchange(port, post, sizeof post - 1);
    assert_non_null(r);
    assert_non_null(strstr(r, "HTTP/1.1 405 "));
    assert_non_null(strstr(r, "Allow: GET, HEAD\r\n"));
    free(r);
    const char body[] = "GET /hello HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    r = exchange(port, body, sizeof body - 1);
    assert_non_null(r);
    assert_non_null(strstr(r, "HTTP/1.1 400 "));
    free(r);
    /* HEAD: GET's headers, no body. */
    const char head[] = "HEAD /hello HTTP/1.1\r\nConnection: close\r\n\r\n";
    r = exchange(port, head, sizeof head - 1);
    assert_non_null(r);
    assert_non_null(strstr(r, "HTTP/1.1 200 "));
    assert_non_null(strstr(r, "Content-Length: 6\r\n"));
    assert_null(strstr(r, "hello"));
    free(r);
    /* A header that never ends is closed after the header timeout, with no
     * answer; so is a kept-alive connection after the idle timeout. */
    r = exchange(port, "GET /hel", 8);
    assert_non_null(r);
    assert_string_equal(r, "");
    free(r);
    int fd = connect_blocking(port);
    assert_true(fd >= 0);
    assert_int_equal(keepalive_get(fd), 200);
    assert_int_equal(peer_closed(fd, SFX_TIMEOUT_MS), 1);
    close(fd);
    httpd_close(h);
}

/* An SP connection to port (handshake sent, the server's read). */
static int sp_connect(int port)
{
    int fd = connect_blocking(port);
    unsigned char hdr[8];
    if (fd < 0 || send(fd, sp_req_header, 8, MSG_NOSIGNAL) != 8 ||
        recv(fd, hdr, 8, MSG_WAITALL) != 8) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int wait_pending(sp_listener *l, int n)
{
    long long until = now_ms() + SFX_TIMEOUT_MS;
    while (sp_listener_unauthenticated(l, NULL) != n && now_ms() < until)
        usleep(10 * 1000);
    return sp_listener_unauthenticated(l, NULL) == n ? 0 : -1;
}

static void test_admin_cap_oldest_first(void **state)
{
    (void)state;
    int port = sfx_free_port();
    char url[64], err[256];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    nng_socket sock;
    assert_int_equal(nng_rep0_open(&sock), 0);
    assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, SFX_TIMEOUT_MS), 0);
    sp_listener_opts lo = {.name = "test",
                           .url = url,
                           .recv_max = 1024,
                           .auth_timeout_ms = 60000,
                           .max_unauthenticated = 3};
    sp_listener *l = NULL;
    assert_int_equal(sp_listener_open(&l, sock, &lo, err, sizeof err), 0);
    int a = sp_connect(port), b, c, d, e, g;
    assert_true(a >= 0);
    assert_int_equal(wait_pending(l, 1), 0);
    assert_true((b = sp_connect(port)) >= 0);
    assert_int_equal(wait_pending(l, 2), 0);
    /* b sends a request and is marked authenticated: no longer counted. */
    const unsigned char msg[] = {0, 0, 0, 0, 0, 0, 0, 6, 0x80, 0, 0, 1, 'h', 'i'};
    assert_int_equal(send(b, msg, sizeof msg, MSG_NOSIGNAL), (ssize_t)sizeof msg);
    nng_msg *m = NULL;
    assert_int_equal(nng_recvmsg(sock, &m, 0), 0);
    sp_listener_authenticated(l, nng_msg_get_pipe(m));
    nng_msg_free(m);
    assert_int_equal(wait_pending(l, 1), 0);
    /* (Age counts from the end of the handshake: one at a time.) */
    assert_true((c = sp_connect(port)) >= 0);
    assert_int_equal(wait_pending(l, 2), 0);
    assert_true((d = sp_connect(port)) >= 0);
    assert_int_equal(wait_pending(l, 3), 0);
    /* A fourth unauthenticated one: a, the oldest, is closed; then c. */
    assert_true((e = sp_connect(port)) >= 0);
    assert_int_equal(peer_closed(a, SFX_TIMEOUT_MS), 1);
    assert_true((g = sp_connect(port)) >= 0);
    assert_int_equal(peer_closed(c, SFX_TIMEOUT_MS), 1);
    assert_int_equal(peer_closed(b, 200), 0);
    assert_int_equal(peer_closed(d, 0), 0);
    unsigned long closed = 0;
    assert_int_equal(sp_listener_unauthenticated(l, &closed), 3);
    assert_int_equal(closed, 2);
    close(a), close(b), close(c), close(d), close(e), close(g);
    sp_listener_close(l);
    nng_close(sock);
}

static void test_admin_auth_timeout(void **state)
{
    (void)state;
    int port = sfx_free_port();
    char url[64], err[256];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    nng_socket sock;
    assert_int_equal(nng_rep0_open(&sock), 0);
    sp_listener_opts lo = {.name = "test", .url = url, .auth_timeout_ms = 300};
    sp_listener *l = NULL;
    assert_int_equal(sp_listener_open(&l, sock, &lo, err, sizeof err), 0);
    int a = sp_connect(port);
    assert_true(a >= 0);
    /* Closed after the timeout (bounded wait: not a timing assertion). */
    assert_int_equal(peer_closed(a, SFX_TIMEOUT_MS), 1);
    assert_int_equal(wait_pending(l, 0), 0);
    close(a);
    sp_listener_close(l);
    nng_close(sock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_http_cap_oldest_idle_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_cap_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_auth_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
