/* catalog — see catalog.h. */
#include "catalog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sha256.h"
#include "util.h"

/* One version in memory; allocated once, never moved (def pointers escape). */
typedef struct {
    saga_def def; /* parsed back from text; def.version is the number */
    char hash[SHA256_HEX_LEN + 1];
    char *text;
} entry;

struct catalog {
    const orch_config *cfg;
    pthread_mutex_t mu;
    entry **all; /* every version in memory */
    size_t n_all, cap_all;
    const saga_def **current; /* sorted by type name */
    size_t n_current;
};

catalog *catalog_create(const orch_config *cfg)
{
    catalog *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->cfg = cfg;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void entry_free(entry *en)
{
    if (en == NULL)
        return;
    config_free_saga(&en->def);
    free(en->text);
    free(en);
}

void catalog_free(catalog *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_all; i++)
        entry_free(c->all[i]);
    free(c->all);
    free(c->current);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* With c->mu held. */
static entry *find_version(catalog *c, const char *type, uint32_t version)
{
    for (size_t i = 0; i < c->n_all; i++)
        if (c->all[i]->def.version == version && strcmp(c->all[i]->def.name, type) == 0)
            return c->all[i];
    return NULL;
}

/* With c->mu held. */
static entry *find_hash(catalog *c, const char *type, const char *hash)
{
    for (size_t i = 0; i < c->n_all; i++)
        if (strcmp(c->all[i]->hash, hash) == 0 && strcmp(c->all[i]->def.name, type) == 0)
            return c->all[i];
    return NULL;
}

/* With c->mu held. 0, or -1 when out of memory. */
static int add_entry(catalog *c, entry *en)
{
    if (c->n_all == c->cap_all) {
        size_t cap = c->cap_all ? c->cap_all * 2 : 16;
        entry **grown = realloc(c->all, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        c->all = grown;
        c->cap_all = cap;
    }
    c->all[c->n_all++] = en;
    return 0;
}

/*
 * An entry parsed from a canonical text, checked to read back to the same
 * text (invariant 3: what is stored is exactly what runs). origin names the
 * text in messages. NULL with the reason in why.
 */
static entry *entry_from_text(catalog *c, const char *text, const char *origin, char *why,
                              size_t whylen)
{
    entry *en = calloc(1, sizeof *en);
    if (en == NULL || (en->text = util_strdup(text)) == NULL) {
        snprintf(why, whylen, "out of memory");
        free(en);
        return NULL;
    }
    if (config_parse_saga_text(c->cfg, text, origin, &en->def, why, whylen) != 0) {
        entry_free(en);
        return NULL;
    }
    char *again = config_saga_canonical(&en->def);
    int same = again != NULL && strcmp(again, text) == 0;
    free(again);
    if (!same) {
        snprintf(why, whylen, "%s: the definition does not read back to its canonical text",
                 origin);
        entry_free(en);
        return NULL;
    }
    sha256_hex(text, strlen(text), en->hash);
    return en;
}

static int compare_defs(const void *a, const void *b)
{
    return strcmp((*(const saga_def *const *)a)->name, (*(const saga_def *const *)b)->name);
}

/* What catalog_install works out for one definition before changing anything. */
typedef struct {
    char *text;
    char hash[SHA256_HEX_LEN + 1];
    entry *fresh; /* parsed now: not in memory yet */
    uint32_t version;
} prepared;

int catalog_install(catalog *c, store *st, const saga_def *defs, size_t n, char *err, size_t errlen)
{
    prepared *p = calloc(n ? n : 1, sizeof *p);
    const saga_def **current = calloc(n ? n : 1, sizeof *current);
    int rc = -1, in_txn = 0;
    if (p == NULL || current == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    /* 1. Texts, hashes, and the versions not in memory parsed back: no lock held for long. */
    for (size_t i = 0; i < n; i++) {
        if ((p[i].text = config_saga_canonical(&defs[i])) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        sha256_hex(p[i].text, strlen(p[i].text), p[i].hash);
        pthread_mutex_lock(&c->mu);
        entry *known = find_hash(c, defs[i].name, p[i].hash);
        if (known != NULL)
            p[i].version = known->def.version;
        pthread_mutex_unlock(&c->mu);
        if (known == NULL) {
            char origin[128];
            snprintf(origin, sizeof origin, "canonical text of %s (from %s)", defs[i].name,
                     defs[i].file ? defs[i].file : "?");
            if ((p[i].fresh = entry_from_text(c, p[i].text, origin, err, errlen)) == NULL)
                goto done;
        }
    }
    /* 2. The store: a version for each, and sagas from before versions pinned. */
    if (store_begin(st) != 0)
        goto store_error;
    in_txn = 1;
    int64_t now = util_wall_ms();
    for (size_t i = 0; i < n; i++) {
        if (p[i].version == 0) {
            int found = store_definition_version(st, defs[i].name, p[i].hash, &p[i].version);
            if (found < 0)
                goto store_error;
            if (found == STORE_NOT_FOUND) {
                uint32_t max;
                if (store_definition_max(st, defs[i].name, &max) != 0)
                    goto store_error;
                p[i].version = max + 1;
                store_definition row = {defs[i].name, p[i].version, p[i].hash, p[i].text, now};
                if (store_definition_add(st, &row) != 0)
                    goto store_error;
                log_info("saga type %s: version %u (%.12s) stored", defs[i].name, p[i].version,
                         p[i].hash);
            }
        }
        if (store_pin_unversioned(st, defs[i].name, p[i].version) != 0)
            goto store_error;
    }
    if (store_commit(st) != 0)
        goto store_error;
    in_txn = 0;
    /* 3. Memory: committed versions only (invariant 2). */
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        entry *en = find_version(c, defs[i].name, p[i].version);
        if (en == NULL && p[i].fresh != NULL) {
            p[i].fresh->def.version = p[i].version;
            if (add_entry(c, p[i].fresh) != 0) {
                pthread_mutex_unlock(&c->mu);
                snprintf(err, errlen, "out of memory");
                goto done; /* stored versions stay: they are only ever added */
            }
            en = p[i].fresh;
            p[i].fresh = NULL;
        }
        if (en == NULL) { /* cannot happen: known or fresh */
            pthread_mutex_unlock(&c->mu);
            snprintf(err, errlen, "%s version %u lost", defs[i].name, p[i].version);
            goto done;
        }
        current[i] = &en->def;
    }
    qsort(current, n, sizeof *current, compare_defs);
    free(c->current);
    c->current = current;
    c->n_current = n;
    current = NULL;
    pthread_mutex_unlock(&c->mu);
    rc = 0;
    goto done;
store_error:
    snprintf(err, errlen, "storing the definitions: %s", store_errmsg(st));
    if (in_txn)
        store_rollback(st);
done:
    for (size_t i = 0; p != NULL && i < n; i++) {
        free(p[i].text);
        entry_free(p[i].fresh);
    }
    free(p);
    free(current);
    return rc;
}

const saga_def *catalog_current(catalog *c, const char *type)
{
    const saga_def *def = NULL;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_current && def == NULL; i++)
        if (strcmp(c->current[i]->name, type) == 0)
            def = c->current[i];
    pthread_mutex_unlock(&c->mu);
    return def;
}

void catalog_each_current(catalog *c, void (*fn)(const saga_def *def, void *arg), void *arg)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_current; i++)
        fn(c->current[i], arg);
    pthread_mutex_unlock(&c->mu);
}

int catalog_hash(catalog *c, const saga_def *def, char *hash, size_t len)
{
    int rc = -1;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_all && rc != 0; i++)
        if (&c->all[i]->def == def) {
            snprintf(hash, len, "%s", c->all[i]->hash);
            rc = 0;
        }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

typedef struct {
    catalog *c;
    entry *en;
    char *why;
    size_t whylen;
} load_arg;

static int load_stored(const store_definition *d, void *arg)
{
    load_arg *a = arg;
    char hash[SHA256_HEX_LEN + 1], origin[128];
    sha256_hex(d->text, strlen(d->text), hash);
    if (strcmp(hash, d->hash) != 0) {
        snprintf(a->why, a->whylen,
                 "the stored text of %s version %u does not match its hash: the database was "
                 "changed by hand",
                 d->type, d->version);
        return 1;
    }
    snprintf(origin, sizeof origin, "%s version %u (stored)", d->type, d->version);
    a->en = entry_from_text(a->c, d->text, origin, a->why, a->whylen);
    if (a->en == NULL)
        return 1;
    a->en->def.version = d->version;
    return 0;
}

const saga_def *catalog_get(catalog *c, store *st, const char *type, uint32_t version, char *why,
                            size_t whylen)
{
    if (version == 0) {
        snprintf(why, whylen,
                 "stored before definition versions existed, and no saga file defines type '%s' "
                 "any more",
                 type);
        return NULL;
    }
    /* Held across the read so that two threads never load the same version twice. */
    pthread_mutex_lock(&c->mu);
    entry *en = find_version(c, type, version);
    if (en == NULL) {
        load_arg a = {c, NULL, why, whylen};
        int rc = store_definition_get(st, type, version, load_stored, &a);
        if (rc == STORE_NOT_FOUND)
            snprintf(why, whylen, "definition %s version %u is not in the store", type, version);
        else if (rc < 0)
            snprintf(why, whylen, "reading definition %s version %u: %s", type, version,
                     store_errmsg(st));
        if (a.en != NULL && add_entry(c, a.en) != 0) {
            snprintf(why, whylen, "out of memory");
            entry_free(a.en);
            a.en = NULL;
        }
        en = a.en;
    }
    pthread_mutex_unlock(&c->mu);
    return en != NULL ? &en->def : NULL;
}

int catalog_bind(catalog *c, store *st, saga *s, char *why, size_t whylen)
{
    if (s->def != NULL)
        return 0;
    const saga_def *def = catalog_get(c, st, s->type, s->def_version, why, whylen);
    if (def == NULL)
        return -1;
    if (def->n_steps != s->n_steps) {
        snprintf(why, whylen, "definition %s version %u has %zu steps, the saga %zu", s->type,
                 s->def_version, def->n_steps, s->n_steps);
        return -1;
    }
    s->def = def;
    return 0;
}

/* ---- Messages ---------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, used;
    size_t n;
} names_acc;

static void add_name(names_acc *a, const char *name)
{
    if (a->used >= a->len)
        return;
    int w = snprintf(a->buf + a->used, a->len - a->used, "%s%s", a->n++ ? ", " : "", name);
    a->used += w > 0 ? (size_t)w : 0;
}

static void add_def_name(const saga_def *def, void *arg)
{
    add_name(arg, def->name);
}

/* "unknown saga type 'T'; known types: a, b (`sagactl types` lists their versions)". */
static void unknown_type_finish(names_acc *a, const char *type, char *buf, size_t len)
{
    if (a->n == 0)
        snprintf(buf, len,
                 "unknown saga type '%s': no saga type is defined (add a saga file to "
                 "sagas_dir, then `sagactl reload`)",
                 type);
    else
        snprintf(buf, len,
                 "unknown saga type '%s'; known types: %s (`sagactl describe TYPE` "
                 "shows one)",
                 type, a->buf);
}

void catalog_unknown_type_msg(catalog *c, const char *type, char *buf, size_t len)
{
    char names[768] = "";
    names_acc a = {names, sizeof names, 0, 0};
    catalog_each_current(c, add_def_name, &a);
    unknown_type_finish(&a, type, buf, len);
}

void config_unknown_type_msg(const saga_def *defs, size_t n, const char *type, char *buf,
                             size_t len)
{
    char names[768] = "";
    names_acc a = {names, sizeof names, 0, 0};
    for (size_t i = 0; i < n; i++)
        add_name(&a, defs[i].name);
    unknown_type_finish(&a, type, buf, len);
}
