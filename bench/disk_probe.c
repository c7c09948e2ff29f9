/*
 * disk_probe — the latency of a small durable write (see disk_probe.h).
 */
#include "disk_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"

#define PROBE_BLOCK       4096
#define PROBE_MAX_SAMPLES 100000

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One pwrite of a block at `off` and its fdatasync, in microseconds; -1 on failure. */
static double timed_durable_write(int fd, const unsigned char *block, off_t off)
{
    int64_t t0 = mono_ns();
    if (pwrite(fd, block, PROBE_BLOCK, off) != PROBE_BLOCK || fdatasync(fd) != 0)
        return -1;
    return (double)(mono_ns() - t0) / 1000.0;
}

int disk_probe(const char *dir, int samples, disk_probe_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (samples < 1 || samples > PROBE_MAX_SAMPLES) {
        snprintf(err, errlen, "disk probe: %d samples (1..%d)", samples, PROBE_MAX_SAMPLES);
        return -1;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/disk-probe-XXXXXX", dir) >= sizeof path) {
        snprintf(err, errlen, "disk probe: directory name too long");
        return -1;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(err, errlen, "disk probe: mkstemp in %s: %s", dir, strerror(errno));
        return -1;
    }
    unlink(path); /* gone whatever happens next; the open descriptor keeps it */

    unsigned char block[PROBE_BLOCK];
    memset(block, 0xa5, sizeof block);
    double *over = malloc((size_t)samples * sizeof *over);
    double *app = malloc((size_t)samples * sizeof *app);
    double *paused = malloc((size_t)samples * sizeof *paused);
    int rc = -1;
    if (over == NULL || app == NULL || paused == NULL) {
        snprintf(err, errlen, "disk probe: out of memory");
        goto done;
    }
    /* The region overwritten: written and synced once, so that its blocks
     * exist and the file's size no longer changes under it. The appends go
     * past it. */
    const int region = 64;
    for (int i = 0; i < region; i++)
        if (pwrite(fd, block, PROBE_BLOCK, (off_t)i * PROBE_BLOCK) != PROBE_BLOCK) {
            snprintf(err, errlen, "disk probe: pwrite: %s", strerror(errno));
            goto done;
        }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "disk probe: fsync: %s", strerror(errno));
        goto done;
    }
    const struct timespec pause = {0, DISK_PROBE_PAUSE_MS * 1000000L};
    for (int i = 0; i < samples; i++) {
        over[i] = timed_durable_write(fd, block, (off_t)(i % region) * PROBE_BLOCK);
        app[i] = timed_durable_write(fd, block, (off_t)(region + i) * PROBE_BLOCK);
        nanosleep(&pause, NULL);
        paused[i] = timed_durable_write(fd, block, (off_t)((i + 1) % region) * PROBE_BLOCK);
        if (over[i] < 0 || app[i] < 0 || paused[i] < 0) {
            snprintf(err, errlen, "disk probe: pwrite + fdatasync: %s", strerror(errno));
            goto done;
        }
    }
    out->samples = samples;
    out->overwrite_p50_us = bs_quantile(over, (size_t)samples, 0.5);
    out->overwrite_p90_us = bs_quantile(over, (size_t)samples, 0.9);
    out->append_p50_us = bs_quantile(app, (size_t)samples, 0.5);
    out->append_p90_us = bs_quantile(app, (size_t)samples, 0.9);
    out->paused_p50_us = bs_quantile(paused, (size_t)samples, 0.5);
    out->paused_p90_us = bs_quantile(paused, (size_t)samples, 0.9);
    rc = 0;
done:
    free(over);
    free(app);
    free(paused);
    close(fd);
    return rc;
}
