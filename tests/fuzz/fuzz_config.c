/*
 * fuzz_config — the configuration loader (orchestrator/config.c) on
 * untrusted bytes: config_load on an orchestrator file and a saga file
 * written from the input into a scratch directory.
 *
 * Input: the orchestrator file's text, then optionally "\n%%\n" and the
 * text of a saga file (saga.cfg in the same directory; "sagas_dir" defaults
 * to that directory). A load must either succeed or fail with a message of
 * the form "FILE:LINE: ..." and leave the orch_config zeroed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char dir[] = "/tmp/saga-fuzz-config-XXXXXX";
static char orch_path[sizeof dir + 16], saga_path[sizeof dir + 16];

static void put(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size > 0 && fwrite(data, 1, size, f) != size))
        abort();
    fclose(f);
}

static void cleanup(void)
{
    unlink(orch_path);
    unlink(saga_path);
    rmdir(dir);
}

/* Does msg hold "...:LINE: " (a file name, a line number, the reason)? */
static int has_file_line(const char *msg)
{
    for (const char *c = strchr(msg, ':'); c != NULL; c = strchr(c + 1, ':')) {
        const char *d = c + 1;
        while (*d >= '0' && *d <= '9')
            d++;
        if (d > c + 1 && d[0] == ':' && d[1] == ' ')
            return 1;
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR); /* skipped files are logged at INFO */
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(orch_path, sizeof orch_path, "%s/sagad.cfg", dir);
    snprintf(saga_path, sizeof saga_path, "%s/saga.cfg", dir);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char sep[] = "\n%%\n";
    const uint8_t *saga = NULL;
    size_t orch_len = size, saga_len = 0;
    for (size_t i = 0; i + 4 <= size; i++) {
        if (memcmp(data + i, sep, 4) == 0) {
            orch_len = i;
            saga = data + i + 4;
            saga_len = size - i - 4;
            break;
        }
    }
    put(orch_path, data, orch_len);
    if (saga != NULL)
        put(saga_path, saga, saga_len);
    else
        unlink(saga_path);

    orch_config cfg;
    char err[1024];
    if (config_load(orch_path, &cfg, err, sizeof err) == 0) {
        config_free(&cfg);
        return 0;
    }
    /* A refusal names the file and a line, and leaves nothing behind. */
    if (!has_file_line(err)) {
        fprintf(stderr, "fuzz_config: message without FILE:LINE: %s\n", err);
        abort();
    }
    static const orch_config zero;
    if (memcmp(&cfg, &zero, sizeof cfg) != 0) {
        fprintf(stderr, "fuzz_config: a failed load left data in the orch_config\n");
        abort();
    }
    return 0;
}
