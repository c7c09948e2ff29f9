/*
 * sha256 — SHA-256 (FIPS 180-4) of a byte string, as 64 lower-case hex digits.
 *
 * Small and dependency-free on purpose: sagad needs it only to name a saga
 * definition version by its content (docs/CONFIG.md#definition-versions), and
 * OpenSSL would be a new dependency for that alone. Checked against the FIPS
 * 180-2 test vectors in tests/common/test_sha256.c.
 */
#ifndef SAGA_SHA256_H
#define SAGA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_HEX_LEN 64

/* The digest of len bytes at data into out[32]. */
void sha256(const void *data, size_t len, uint8_t out[32]);
/* The digest as hex into hex[SHA256_HEX_LEN + 1], NUL-terminated. */
void sha256_hex(const void *data, size_t len, char hex[SHA256_HEX_LEN + 1]);

#endif
