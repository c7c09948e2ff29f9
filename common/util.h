/*
 * util — small helpers shared by every program: clocks, randomness, UUIDs,
 * strict number parsing, UTF-8 validation and repair, and temp-safe string copies.
 */
#ifndef SAGA_UTIL_H
#define SAGA_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic milliseconds: for timeouts and backoff, never stored. */
int64_t util_mono_ms(void);
/* Wall-clock milliseconds since the epoch: for stored timestamps. */
int64_t util_wall_ms(void);
/* Sleeps for ms milliseconds (restarts after signals). */
void util_sleep_ms(int64_t ms);

/* Fills buf with len bytes from the kernel's CSPRNG; returns 0 or -1. */
int util_random_bytes(void *buf, size_t len);
/* Writes a random (version 4) UUID, 36 characters and a NUL, into out[37]. */
int util_uuid4(char out[37]);
/* Writes a version 7 UUID (RFC 9562) for the wall-clock time at_ms: 48 bits of
 * Unix milliseconds, then 74 random bits: unique and not guessable in
 * practice, but ordered by time: ids made one after another sort together,
 * so a B-tree index keyed by them grows at its right edge instead of taking
 * every insert on a random page (see docs/BENCHMARKS.md, growth). */
int util_uuid7_at(int64_t at_ms, char out[37]);
/* util_uuid7_at(now). */
int util_uuid7(char out[37]);
/* Is s a syntactically valid lower- or upper-case UUID? */
int util_is_uuid(const char *s);
/* When s is a version 7 UUID (version nibble 7, RFC 9562 variant), its
 * 48-bit Unix millisecond time stamp into *ms and 0; otherwise -1. */
int util_uuid7_time_ms(const char *s, int64_t *ms);

/* Length (1..4) of the well-formed UTF-8 sequence at the start of s (avail
 * bytes, avail > 0), or 0 when it is not one: overlong forms, surrogates and
 * code points above U+10FFFF are not well-formed. The one UTF-8 decoder of the
 * project: the wire checks, the admin API, JSON output and sagactl use it. */
size_t util_utf8_seq_len(const unsigned char *s, size_t avail);
/* Is s (n bytes) well-formed UTF-8? NUL bytes count as valid here. */
int util_utf8_valid(const char *s, size_t n);
/* A malloc'd copy of s (NUL-terminated) with each byte that does not start a
 * well-formed sequence replaced by U+FFFD; NULL when out of memory. */
char *util_utf8_repair(const char *s);

/* Parses all of s as a decimal int64 (optional leading '-'); returns 0 or -1. */
int util_parse_i64(const char *s, int64_t *out);

/* Mixes the bits of x (MurmurHash3's 64-bit finalizer): turns related seeds
 * (a seed plus an index) into unrelated ones. Not for secrets. */
uint64_t util_mix64(uint64_t x);

/* A xorshift64* generator for reproducible test schedules (not for secrets). */
typedef struct {
    uint64_t state;
} util_prng;
void util_prng_seed(util_prng *rng, uint64_t seed);
uint64_t util_prng_next(util_prng *rng);
/* Uniform double in [0, 1). */
double util_prng_unit(util_prng *rng);

/* malloc'd copy of s, or NULL when s is NULL or memory is out. */
char *util_strdup(const char *s);
/* malloc'd printf; NULL on failure. */
char *util_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
