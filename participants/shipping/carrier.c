/* carrier — see carrier.h. One req0 socket per call: calls are rare (one per
 * shipment) and a fresh socket carries no state of an earlier failure. */
#include "carrier.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static char carrier_url[256];

int carrier_set_url(const char *url, char *err, size_t errlen)
{
    /* ipc:// only: the gateway is a local process, reached through a socket
     * in a directory only this user can write (docs/SECURITY.md). */
    if (strncmp(url, "ipc://", 6) != 0 || strlen(url) <= 6 || strlen(url) >= sizeof carrier_url) {
        snprintf(err, errlen, "must be an ipc:// address of at most %zu bytes, not '%s'",
                 sizeof carrier_url - 1, url);
        return -1;
    }
    snprintf(carrier_url, sizeof carrier_url, "%s", url);
    return 0;
}

int carrier_enabled(void)
{
    return carrier_url[0] != '\0';
}

/* Copies in to out with every byte outside printable ASCII (and space in a
 * reference) as '?'. Returns 1 when nothing had to be replaced. */
static int carrier_printable(char *out, const char *in)
{
    int clean = 1;
    for (; *in; in++, out++) {
        int ok = *in >= 0x20 && *in < 0x7f;
        clean &= ok && *in != ' ';
        *out = ok ? *in : '?';
    }
    *out = '\0';
    return clean;
}

int carrier_call(const char *verb, const char *key, const char *arg, char ref[CARRIER_REF_MAX + 1],
                 char *why, size_t whylen)
{
    nng_socket s;
    char *msg = util_asprintf("%s %s %s", verb, key, arg);
    char *buf = NULL;
    size_t len = 0;
    int rv, rc = -1;

    if (msg == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    if ((rv = nng_req0_open(&s)) != 0) {
        snprintf(why, whylen, "carrier: %s", nng_strerror(rv));
        free(msg);
        return -1;
    }
    if ((rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, CARRIER_TIMEOUT_MS)) != 0 ||
        (rv = nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CARRIER_TIMEOUT_MS)) != 0 ||
        (rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 1024)) != 0 ||
        (rv = nng_dial(s, carrier_url, NULL, 0)) != 0 ||
        (rv = nng_send(s, msg, strlen(msg), 0)) != 0 ||
        (rv = nng_recv(s, &buf, &len, NNG_FLAG_ALLOC)) != 0) {
        /* Sent or not, answered or not: unknown. */
        snprintf(why, whylen, "carrier at %s: %s (outcome unknown)", carrier_url, nng_strerror(rv));
        goto out;
    }
    if (len > 3 && memcmp(buf, "OK ", 3) == 0 && len - 3 <= CARRIER_REF_MAX) {
        memcpy(ref, buf + 3, len - 3);
        ref[len - 3] = '\0';
        rc = carrier_printable(ref, ref) ? 0 : -1;
        if (rc != 0)
            snprintf(why, whylen, "carrier: unreadable booking reference (outcome unknown)");
    } else if (len >= 4 && memcmp(buf, "ERR ", 4) == 0) {
        char reason[201];
        size_t n = len - 4 < 200 ? len - 4 : 200;
        memcpy(reason, buf + 4, n);
        reason[n] = '\0';
        carrier_printable(reason, reason); /* it goes into a reply: no control bytes */
        snprintf(why, whylen, "carrier refused: %s", reason);
        rc = 1;
    } else {
        snprintf(why, whylen, "carrier: unreadable answer of %zu bytes (outcome unknown)", len);
    }
out:
    if (buf)
        nng_free(buf, len);
    nng_close(s);
    free(msg);
    return rc;
}
