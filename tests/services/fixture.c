/* fixture — see fixture.h. One participant service under test. */
#include "fixture.h"

#include <pthread.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_cluster.h"
#include "util.h"

int fx_on_pg(void)
{
    const char *db = getenv("SAGA_TEST_SVC_DB");
    return db != NULL && strcmp(db, "postgresql") == 0;
}

/* The test program's one private cluster, started on first use (pg_cluster.h
 * stops it at exit, on failure too). */
static pg_cluster *fx_cluster;
static pthread_mutex_t fx_cluster_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned fx_databases;

char *fx_pg_database(void)
{
    char err[1024], name[32];
    char *url = NULL;
    pthread_mutex_lock(&fx_cluster_lock);
    if (fx_cluster == NULL && (fx_cluster = pgc_start(0, err, sizeof err)) == NULL)
        fprintf(stderr, "fixture: no PostgreSQL cluster: %s\n", err);
    if (fx_cluster != NULL) {
        snprintf(name, sizeof name, "svc_%u", ++fx_databases);
        if (pgc_create_db(fx_cluster, name) == 0)
            url = pgc_url(fx_cluster, name);
    }
    pthread_mutex_unlock(&fx_cluster_lock);
    return url;
}

int fx_init(fx_svc *s, const char *name)
{
    memset(s, 0, sizeof *s);
    s->name = name;
    s->dir = th_tempdir();
    if (s->dir == NULL)
        return -1;
    s->url = th_ipc_url(s->dir, name);
    s->db = fx_on_pg() ? fx_pg_database() : th_path(s->dir, "service.db");
    char *rel = util_asprintf("participants/seeds/%s.cfg", name);
    s->seed = rel ? th_source_path(rel) : NULL;
    free(rel);
    if (s->seed && access(s->seed, R_OK) != 0) { /* a service without a seed file */
        free(s->seed);
        s->seed = NULL;
    }
    return s->url && s->db ? 0 : -1;
}

int fx_start(fx_svc *s, const char *faults)
{
    char program[64];
    const char *args[12];
    int n = 0;

    snprintf(program, sizeof program, "%s-svc", s->name);
    args[n++] = "--listen";
    args[n++] = s->url;
    args[n++] = "--db";
    args[n++] = s->db;
    if (s->seed) {
        args[n++] = "--seed";
        args[n++] = s->seed;
    }
    if (faults) {
        args[n++] = "--faults";
        args[n++] = faults;
    }
    args[n] = NULL;
    if (th_spawn(program, args, NULL, NULL, &s->pid) != 0)
        return -1;
    if (th_wait_dial(s->url, s->pid, FX_TIMEOUT_MS) != 0) {
        th_kill(s->pid);
        s->pid = 0;
        return -1;
    }
    return 0;
}

int fx_stop(fx_svc *s)
{
    int status = 0, rc;
    if (s->pid <= 0)
        return -1;
    rc = th_stop(s->pid, FX_TIMEOUT_MS, &status);
    s->pid = 0;
    if (rc != 0 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

void fx_destroy(fx_svc *s)
{
    if (s->pid > 0)
        th_kill(s->pid);
    s->pid = 0;
    if (s->dir)
        th_rmtree(s->dir);
    free(s->dir);
    free(s->url);
    free(s->db);
    free(s->seed);
    memset(s, 0, sizeof *s);
}

int fx_setup(void **state, const char *name)
{
    fx_svc *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    if (fx_init(s, name) != 0 || fx_start(s, NULL) != 0) {
        fx_destroy(s);
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

int fx_teardown(void **state)
{
    fx_svc *s = *state;
    int rc = 0;
    if (s) {
        /* Every test ends with a clean stop: a crash or (sanitizer) leak fails it. */
        if (s->pid > 0) {
            int code = fx_stop(s);
            if (code != 0) {
                fprintf(stderr, "fixture: %s-svc did not exit cleanly on SIGTERM (exit %d)\n",
                        s->name, code);
                rc = -1;
            }
        }
        fx_destroy(s);
        free(s);
    }
    *state = NULL;
    return rc;
}

void fx_saga_id(char out[37])
{
    if (util_uuid4(out) != 0)
        snprintf(out, 37, "no-randomness");
}

void fx_key(char *out, size_t outlen, const char *saga, const char *step, int phase)
{
    snprintf(out, outlen, "%s/%s/%s", saga, step, wire_phase_name(phase));
}

static StepReply *fx_vstep(fx_svc *s, int timeout_ms, int *rv, const char *saga, const char *step,
                           int phase, const char *operation, va_list ap)
{
    kvmap params = KVMAP_INIT;
    StepReply *reply = NULL;
    const char *name;
    char key[WIRE_MAX_KEY + 1];

    *rv = NNG_ENOMEM;
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        if (kv_set(&params, name, value) != 0)
            goto out;
    }
    fx_key(key, sizeof key, saga, step, phase);
    *rv = th_call(s->url, timeout_ms, key, saga, step, phase, operation, &params, &reply);
    if (*rv != 0 && *rv != NNG_ETIMEDOUT)
        fprintf(stderr, "fixture: %s %s: %s\n", key, operation,
                *rv > 0 ? nng_strerror(*rv) : "undecodable reply");

out:
    kv_free(&params);
    return reply;
}

StepReply *fx_step(fx_svc *s, const char *saga, const char *step, int phase, const char *operation,
                   ...)
{
    va_list ap;
    int rv;
    va_start(ap, operation);
    StepReply *r = fx_vstep(s, FX_TIMEOUT_MS, &rv, saga, step, phase, operation, ap);
    va_end(ap);
    if (rv == NNG_ETIMEDOUT)
        fprintf(stderr, "fixture: %s/%s: no reply within %d ms\n", saga, step, FX_TIMEOUT_MS);
    return r;
}

StepReply *fx_step_timeout(fx_svc *s, int timeout_ms, int *rv, const char *saga, const char *step,
                           int phase, const char *operation, ...)
{
    va_list ap;
    va_start(ap, operation);
    StepReply *r = fx_vstep(s, timeout_ms, rv, saga, step, phase, operation, ap);
    va_end(ap);
    return r;
}
