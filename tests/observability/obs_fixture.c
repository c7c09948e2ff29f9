/* obs_fixture — see obs_fixture.h. */
#include "obs_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "util.h"

int obs_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int obs_append_config(ofx *f, const char *text)
{
    FILE *fp = fopen(f->cfg, "a");
    if (fp == NULL)
        return -1;
    int rc = fputs(text, fp) < 0 ? -1 : 0;
    return fclose(fp) != 0 ? -1 : rc;
}

int obs_enable_http(ofx *f, int port)
{
    char *token_path = th_path(f->dir, "admin.token");
    char *line = token_path ? util_asprintf("admin_token_file = \"%s\";\n"
                                            "http_url = \"http://127.0.0.1:%d\";\n",
                                            token_path, port)
                            : NULL;
    int rc = -1;
    if (line && th_write_file(token_path, OBS_TOKEN "\n") == 0 && obs_append_config(f, line) == 0) {
        free(f->token_file);
        f->token_file = token_path;
        token_path = NULL;
        rc = 0;
    }
    free(token_path);
    free(line);
    return rc;
}

static int connect_port(int port, int wait_ms)
{
    int64_t deadline = util_mono_ms() + wait_ms;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        struct timeval tv = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)port);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        close(fd);
        if (util_mono_ms() >= deadline) {
            fprintf(stderr, "obs_fixture: nothing listens on 127.0.0.1:%d\n", port);
            return -1;
        }
        util_sleep_ms(50);
    }
}

int obs_get(int port, const char *path, const char *host, const char *extra, int wait_ms,
            obs_response *res)
{
    return obs_request("GET", port, path, host, extra, wait_ms, res);
}

int obs_request(const char *method, int port, const char *path, const char *host, const char *extra,
                int wait_ms, obs_response *res)
{
    memset(res, 0, sizeof *res);
    int fd = connect_port(port, wait_ms);
    if (fd < 0)
        return -1;
    char hostbuf[64];
    if (host == NULL) {
        snprintf(hostbuf, sizeof hostbuf, "127.0.0.1:%d", port);
        host = hostbuf;
    }
    if (extra == NULL)
        extra = "Authorization: Bearer " OBS_TOKEN;
    char *req = util_asprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%s%sConnection: close\r\n\r\n", method,
                              path, host, extra, *extra ? "\r\n" : "");
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    int rc = -1;
    if (req == NULL || buf == NULL || write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        goto out;
    for (;;) {
        if (len + 1 >= cap) {
            char *n = realloc(buf, cap * 2);
            if (n == NULL)
                goto out;
            buf = n;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got < 0) {
            perror("obs_fixture: read");
            goto out;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (end == NULL || sscanf(buf, "HTTP/1.%*d %d", &res->status) != 1) {
        fprintf(stderr, "obs_fixture: not an HTTP response: %.200s\n", buf);
        goto out;
    }
    *end = '\0';
    res->headers = util_strdup(buf);
    res->body = util_strdup(end + 4);
    if (res->headers == NULL || res->body == NULL)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        obs_response_free(res);
    free(req);
    free(buf);
    close(fd);
    return rc;
}

void obs_response_free(obs_response *res)
{
    free(res->headers);
    free(res->body);
    res->headers = res->body = NULL;
}

double obs_metric(const char *text, const char *sample)
{
    size_t n = strlen(sample);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, sample, n) == 0 && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}
