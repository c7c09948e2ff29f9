/*
 * carrier — shipping-svc's client of the carrier: the external system that
 * books a parcel, outside the service's database (docs/PARTICIPANTS.md,
 * "Effects outside the database").
 *
 * The carrier is reached over nng req0 at an ipc:// address (in production a
 * gateway in front of the carrier's HTTP API; in the tests
 * tests/services/carrier_sim.c). One text request, one text reply:
 *
 *   BOOK <key> <destination>   ->  OK <booking_ref>
 *   CANCEL <key> <booking_ref> ->  OK <booking_ref>
 *   anything refused           ->  ERR <reason>
 *
 * <key> is the caller's idempotency key for the carrier: the carrier makes
 * one booking (or one cancellation) per key and answers a repeated key with
 * the first answer. That is what lets shipping-svc redo a call whose outcome
 * a crash left unknown (pt_external_begin gives the same key again).
 */
#ifndef SAGA_SHIPPING_CARRIER_H
#define SAGA_SHIPPING_CARRIER_H

#include <stddef.h>

#define CARRIER_REF_MAX    64   /* bytes of a booking reference */
#define CARRIER_TIMEOUT_MS 2000 /* per call: well below sagad's default step timeout */

/* Checks and keeps the carrier's address (--carrier-url). 0, or -1 with err. */
int carrier_set_url(const char *url, char *err, size_t errlen);
/* Is a carrier configured? */
int carrier_enabled(void);
/*
 * Sends "<verb> <key> <arg>" and reads the answer. Returns 0 with the
 * booking reference in ref (OK), 1 with the carrier's reason in why (ERR:
 * the carrier refused, no effect), or -1 with why set when the outcome is
 * unknown (unreachable, timeout, unreadable answer): the caller answers
 * RETRY and the next attempt repeats the call under the same key.
 */
int carrier_call(const char *verb, const char *key, const char *arg, char ref[CARRIER_REF_MAX + 1],
                 char *why, size_t whylen);

#endif
