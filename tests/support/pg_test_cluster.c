/*
 * pg-test-cluster — pg_cluster (pg_cluster.h) from the command line, for
 * benchmarks and manual runs:
 *
 *   pg-test-cluster start [--durable] [--db NAME] STATE-FILE
 *       starts a private PostgreSQL server that outlives this command,
 *       creates database NAME when given, writes the cluster's dir to
 *       STATE-FILE (which must not exist yet: an existing one may name a
 *       running cluster) and prints the URL of NAME (default postgres).
 *   pg-test-cluster stop STATE-FILE
 *       fast-shuts that server down, removes its dir, then STATE-FILE.
 *
 * Exit status 0, 1 on failure (reason on stderr), 2 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "pg_cluster.h"
#include "util.h"

static int usage(void)
{
    fprintf(stderr, "usage: pg-test-cluster start [--durable] [--db NAME] STATE-FILE\n"
                    "       pg-test-cluster stop STATE-FILE\n");
    return 2;
}

/* The template of pg_cluster.h lives next to the build's bin dir: this program's. */
static void set_bin_dir(void)
{
    if (getenv("SAGA_BIN_DIR") != NULL)
        return;
    char *exe = realpath("/proc/self/exe", NULL);
    if (exe != NULL)
        setenv("SAGA_BIN_DIR", dirname(exe), 1);
    free(exe);
}

static int cmd_start(int durable, const char *db, const char *state_file)
{
    char err[4096];
    int fd = open(state_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "pg-test-cluster: %s: %s%s\n", state_file, strerror(errno),
                errno == EEXIST ? " (stop that cluster first, or remove the file)" : "");
        return 1;
    }
    set_bin_dir();
    pg_cluster *c = pgc_start_detached(durable, err, sizeof err);
    char *url = NULL, *line = NULL;
    if (c == NULL) {
        fprintf(stderr, "pg-test-cluster: %s\n", err);
        goto fail;
    }
    if (db != NULL && strcmp(db, "postgres") != 0 && pgc_create_db(c, db) != 0)
        goto fail;
    url = pgc_url(c, db ? db : "postgres");
    line = util_asprintf("%s\n", pgc_dir(c));
    if (url == NULL || line == NULL || write(fd, line, strlen(line)) != (ssize_t)strlen(line) ||
        close(fd) != 0) {
        fd = -1;
        fprintf(stderr, "pg-test-cluster: cannot write %s\n", state_file);
        goto fail;
    }
    printf("%s\n", url);
    free(url);
    free(line);
    pgc_release(c);
    return 0;

fail:
    if (c != NULL && pgc_stop_dir(pgc_dir(c), err, sizeof err) != 0)
        fprintf(stderr, "pg-test-cluster: %s\n", err);
    pgc_release(c);
    if (fd >= 0)
        close(fd);
    unlink(state_file);
    free(url);
    free(line);
    return 1;
}

static int cmd_stop(const char *state_file)
{
    char err[1024], *dir = th_read_file(state_file);
    if (dir == NULL) {
        fprintf(stderr, "pg-test-cluster: cannot read %s: %s\n", state_file, strerror(errno));
        return 1;
    }
    dir[strcspn(dir, "\n")] = '\0';
    int rc = pgc_stop_dir(dir, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "pg-test-cluster: %s (named by %s)\n", err, state_file);
    else
        unlink(state_file);
    free(dir);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "start") == 0) {
        int durable = 0, i = 2;
        const char *db = NULL;
        for (; i < argc - 1; i++) {
            if (strcmp(argv[i], "--durable") == 0)
                durable = 1;
            else if (strcmp(argv[i], "--db") == 0 && i + 1 < argc - 1)
                db = argv[++i];
            else
                return usage();
        }
        return cmd_start(durable, db, argv[argc - 1]);
    }
    if (argc == 3 && strcmp(argv[1], "stop") == 0)
        return cmd_stop(argv[2]);
    return usage();
}
