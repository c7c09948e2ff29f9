/*
 * sec_fixture — what the security tests share (tests/support/harness.h does
 * the rest): a throw-away CA and certificates made at test time with
 * openssl (gen-certs.sh), fresh loopback TCP ports, and a req0 client that
 * dials a tls+tcp:// address with a chosen certificate, or none.
 */
#ifndef SAGA_TEST_SEC_FIXTURE_H
#define SAGA_TEST_SEC_FIXTURE_H

#include <nng/nng.h>

#include "harness.h"
#include "security.h"

#define SFX_TIMEOUT_MS 15000

/* Certificates in dir (see gen-certs.sh): "ca.pem", "server.pem", ... */
typedef struct {
    char *dir;
    char *ca, *server_cert, *server_key, *client_cert, *client_key;
    char *rogue_cert, *rogue_key; /* signed by another CA */
} sfx_certs;

/* Runs gen-certs.sh into dir. 0 or -1. */
int sfx_certs_make(sfx_certs *c, const char *dir);
void sfx_certs_free(sfx_certs *c);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int sfx_free_port(void);

/*
 * Opens a req0 client on url with send/receive timeouts of timeout_ms; for
 * a tls+tcp URL, with the TLS files in t (CA to verify the server; cert/key
 * optional). The dial is synchronous: returns 0 once connected, or the nng
 * error (a refused TLS handshake fails here or at the first receive).
 */
int sfx_client_open(th_client *c, const char *url, const sec_tls_files *t, int timeout_ms);
/* Waits up to timeout_ms until sfx_client_open succeeds (then closes it). 0 or -1. */
int sfx_wait_tls(const char *url, const sec_tls_files *t, pid_t pid, int timeout_ms);

#endif
