/*
 * faults — deterministic fault injection for chaos tests.
 *
 * A spec is a comma-separated list of name=value options (pt_faults_help).
 * Every fault decision is one draw from a xorshift generator seeded by
 * seed=N, taken in a fixed order by the single thread that processes
 * batches: per request "retry"; per batch "crash_before_commit" then
 * "crash_after_commit"; per reply "drop_reply" then "delay". The same seed
 * and the same traffic therefore give the same faults. A probability of 0
 * takes no draw, so adding a fault never shifts the others' sequence when
 * it is off.
 *
 * drop_reply and delay act where replies meet the socket (participant.c):
 * pt_process_batch returns every reply. retry and the crashes act in the
 * batch itself (batch.c), so they apply to both paths.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pt_internal.h"

#define PT_FAULT_DELAY_DEFAULT_MS 200
#define PT_FAULT_DELAY_MAX_MS     60000

static const char pt_faults_help_text[] =
    "  seed=N                 generator seed: same seed, same traffic, same faults (default 1)\n"
    "  drop_reply=P           after COMMIT, send no reply (the requester times out)\n"
    "  crash_before_commit=P  SIGKILL the process just before a batch's COMMIT\n"
    "  crash_after_commit=P   SIGKILL the process just after a batch's COMMIT, before replies\n"
    "  delay=P                hold a reply for delay_ms before sending it\n"
    "  delay_ms=N             that delay in milliseconds, 0..60000 (default 200)\n"
    "  retry=P                answer OUTCOME_RETRY without running or storing the request\n"
    "  P is a probability in [0, 1]; e.g. \"seed=7,drop_reply=0.1,crash_after_commit=0.01\"\n";

const char *pt_faults_help(void)
{
    return pt_faults_help_text;
}

/* Parses all of s as a probability in [0, 1]. */
static int pt_faults_parse_prob(const char *s, double *out)
{
    if (*s == '\0')
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0.0 || v > 1.0)
        return -1;
    *out = v;
    return 0;
}

/* Parses all of s as an unsigned decimal seed. */
static int pt_faults_parse_seed(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Applies one name=value option to f. */
static int pt_faults_option(pt_faults *f, char *opt, char *err, size_t errlen)
{
    struct {
        const char *name;
        double *prob;
    } probs[] = {
        {"drop_reply", &f->drop_reply},
        {"crash_before_commit", &f->crash_before_commit},
        {"crash_after_commit", &f->crash_after_commit},
        {"delay", &f->delay},
        {"retry", &f->retry},
    };
    char *eq = strchr(opt, '=');
    if (eq == NULL) {
        snprintf(err, errlen, "fault option '%s' needs a value (name=value)", opt);
        return -1;
    }
    *eq = '\0';
    const char *name = opt, *value = eq + 1;
    for (size_t i = 0; i < sizeof probs / sizeof probs[0]; i++) {
        if (strcmp(name, probs[i].name) != 0)
            continue;
        if (pt_faults_parse_prob(value, probs[i].prob) != 0) {
            snprintf(err, errlen, "fault option '%s' needs a probability in [0, 1], got '%s'", name,
                     value);
            return -1;
        }
        return 0;
    }
    if (strcmp(name, "seed") == 0) {
        if (pt_faults_parse_seed(value, &f->seed) != 0) {
            snprintf(err, errlen, "fault option 'seed' needs an unsigned integer, got '%s'", value);
            return -1;
        }
        return 0;
    }
    if (strcmp(name, "delay_ms") == 0) {
        if (util_parse_i64(value, &f->delay_ms) != 0 || f->delay_ms < 0 ||
            f->delay_ms > PT_FAULT_DELAY_MAX_MS) {
            snprintf(err, errlen, "fault option 'delay_ms' needs milliseconds in [0, %d], got '%s'",
                     PT_FAULT_DELAY_MAX_MS, value);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown fault option '%s'", name);
    return -1;
}

int pt_faults_parse(const char *spec, pt_faults *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->seed = 1;
    f->delay_ms = PT_FAULT_DELAY_DEFAULT_MS;
    if (spec != NULL && *spec != '\0') {
        char *copy = util_strdup(spec);
        if (copy == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        char *save = NULL;
        int rc = 0;
        /* strtok_r would skip empty options silently; walk the commas by hand. */
        for (char *opt = copy; rc == 0 && opt != NULL; opt = save) {
            char *comma = strchr(opt, ',');
            save = comma ? comma + 1 : NULL;
            if (comma)
                *comma = '\0';
            if (*opt == '\0') {
                snprintf(err, errlen, "empty fault option in '%s'", spec);
                rc = -1;
            } else {
                rc = pt_faults_option(f, opt, err, errlen);
            }
        }
        free(copy);
        if (rc != 0)
            return -1;
    }
    f->enabled = f->drop_reply > 0 || f->crash_before_commit > 0 || f->crash_after_commit > 0 ||
                 f->delay > 0 || f->retry > 0;
    util_prng_seed(&f->rng, f->seed);
    return 0;
}

int pt_faults_roll(pt_faults *f, double prob)
{
    if (!f->enabled || prob <= 0.0)
        return 0;
    return util_prng_unit(&f->rng) < prob;
}

void pt_faults_crash(const char *where)
{
    log_warn("fault injection: %s: killing the process", where);
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
