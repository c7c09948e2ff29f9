/* sec_fixture — see sec_fixture.h. */
#include "sec_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

int sfx_certs_make(sfx_certs *c, const char *dir)
{
    memset(c, 0, sizeof *c);
    char *script = th_source_path("tests/security/gen-certs.sh");
    const char *args[] = {script, dir, NULL};
    pid_t pid;
    int status = -1;
    if (script == NULL || th_spawn("/bin/sh", args, NULL, NULL, &pid) != 0 ||
        th_wait_exit(pid, 60000, &status) != 0 || !th_exited_with(status, 0)) {
        fprintf(stderr, "sfx_certs_make: gen-certs.sh failed (is openssl installed?)\n");
        free(script);
        return -1;
    }
    free(script);
    c->dir = util_strdup(dir);
    c->ca = th_path(dir, "ca.pem");
    c->server_cert = th_path(dir, "server.pem");
    c->server_key = th_path(dir, "server.key");
    c->client_cert = th_path(dir, "client.pem");
    c->client_key = th_path(dir, "client.key");
    c->rogue_cert = th_path(dir, "rogue.pem");
    c->rogue_key = th_path(dir, "rogue.key");
    return c->rogue_key != NULL ? 0 : -1;
}

void sfx_certs_free(sfx_certs *c)
{
    free(c->dir);
    free(c->ca);
    free(c->server_cert);
    free(c->server_key);
    free(c->client_cert);
    free(c->client_key);
    free(c->rogue_cert);
    free(c->rogue_key);
    memset(c, 0, sizeof *c);
}

int sfx_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

int sfx_client_open(th_client *c, const char *url, const sec_tls_files *t, int timeout_ms)
{
    nng_dialer d;
    char err[256];
    int rv;
    c->open = 0;
    if ((rv = nng_req0_open(&c->sock)) != 0)
        return rv;
    c->open = 1;
    nng_socket_set_ms(c->sock, NNG_OPT_SENDTIMEO, timeout_ms);
    nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, timeout_ms);
    nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if ((rv = nng_dialer_create(&d, c->sock, url)) != 0)
        goto fail;
    if (sec_url_is_tls(url)) {
        char *host = sec_url_host(url);
        rv = sec_tls_dialer(d, t, host, err, sizeof err);
        free(host);
        if (rv != 0) {
            fprintf(stderr, "sfx_client_open: %s\n", err);
            goto fail;
        }
    }
    if ((rv = nng_dialer_start(d, 0)) != 0)
        goto fail;
    return 0;
fail:
    th_client_close(c);
    return rv;
}

int sfx_wait_tls(const char *url, const sec_tls_files *t, pid_t pid, int timeout_ms)
{
    int64_t deadline = util_mono_ms() + timeout_ms;
    int rv = -1;
    while (util_mono_ms() < deadline) {
        th_client c;
        if ((rv = sfx_client_open(&c, url, t, 2000)) == 0) {
            th_client_close(&c);
            return 0;
        }
        int status;
        if (pid > 0 && th_waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "sfx_wait_tls: process %d exited before %s accepted\n", (int)pid, url);
            return -1;
        }
        util_sleep_ms(50);
    }
    fprintf(stderr, "sfx_wait_tls: %s: %s\n", url, nng_strerror(rv));
    return -1;
}
