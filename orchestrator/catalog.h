/*
 * catalog — the saga definitions sagad runs: every version of every saga
 * type it has met, and which version of each type new sagas start on.
 *
 * A version is the canonical text of a definition (config_saga_canonical:
 * every setting resolved, participants by name) and its SHA-256; the store
 * keeps each once (saga_definitions), numbered 1, 2, ... per type, and every
 * saga row names the version it started on (def_version). The catalog keeps
 * in memory the versions in use, each parsed back from its canonical text:
 * a saga runs on exactly the same saga_def whether it started in this
 * process or was recovered from the store, never on what the files say now.
 *
 * Invariants:
 *   1. A saga_def handed out (catalog_current, catalog_bind, catalog_get) is
 *      never changed or freed before catalog_free: sagas and readers on other
 *      threads hold the pointer without a lock.
 *   2. A version is current only once it is committed to the store, so no
 *      saga is ever stored pinned to a version the store does not hold.
 *   3. The canonical text of every version in memory reads back to the same
 *      text (checked when it is installed or loaded).
 *   4. A definition is only ever looked up by (type, version); the name alone
 *      finds only the current version, for new starts.
 * Thread safety: every function may be called from any thread (one mutex);
 * the store handle passed in must be the caller's own. catalog_install needs
 * the writable handle (the engine thread's).
 */
#ifndef SAGA_CATALOG_H
#define SAGA_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "saga.h"
#include "store.h"

typedef struct catalog catalog;

/* cfg (participants, retention) must outlive the catalog. NULL when out of memory. */
catalog *catalog_create(const orch_config *cfg);
void catalog_free(catalog *c);

/*
 * Makes defs (as config_load or config_load_sagas returned them; the caller
 * still owns and frees them) the current definitions: each gets the version
 * whose text is the same, or the next number, stored in one transaction of
 * st (which also pins the sagas stored before versions existed to it). A
 * type not in defs has no current version any more: new starts of it are
 * refused, sagas running on it finish. Returns 0, or -1 with the reason in
 * err and nothing changed, in memory or in the store.
 */
int catalog_install(catalog *c, store *st, const saga_def *defs, size_t n, char *err,
                    size_t errlen);

/* The current definition of type, or NULL when no file defines it now. */
const saga_def *catalog_current(catalog *c, const char *type);

/*
 * Version `version` of type: from memory, else read from st and parsed (and
 * kept). NULL with the reason in why when it is not stored or cannot be
 * parsed (e.g. a participant it names is no longer in the orchestrator file).
 */
const saga_def *catalog_get(catalog *c, store *st, const char *type, uint32_t version, char *why,
                            size_t whylen);

/* Sets s->def to the version s is pinned to (catalog_get), checking that it
 * has s's number of steps. 0, or -1 with the reason in why (s->def NULL). */
int catalog_bind(catalog *c, store *st, saga *s, char *why, size_t whylen);

/* The hash of a version in memory into hash (SHA256_HEX_LEN + 1 bytes): 0, or -1. */
int catalog_hash(catalog *c, const saga_def *def, char *hash, size_t len);

/* Calls fn for each current definition, in type order. */
void catalog_each_current(catalog *c, void (*fn)(const saga_def *def, void *arg), void *arg);
/* The refusal of a start of an unknown type, naming the known ones, into buf. */
void catalog_unknown_type_msg(catalog *c, const char *type, char *buf, size_t len);
/* The same for the types of a configuration (no catalog: the fuzz target's checks). */
void config_unknown_type_msg(const saga_def *defs, size_t n, const char *type, char *buf,
                             size_t len);

#endif
