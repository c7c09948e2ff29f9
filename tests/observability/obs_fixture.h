/*
 * obs_fixture — what the observability tests add to the orchestrator
 * fixture (tests/orchestrator/orch_fixture.h): a free loopback port for
 * http_url, extra settings appended to the generated orchestrator file, a
 * plain HTTP/1.1 GET over a TCP socket (what Prometheus or a browser sends),
 * and reading one sample out of a Prometheus exposition.
 */
#ifndef SAGA_TEST_OBS_FIXTURE_H
#define SAGA_TEST_OBS_FIXTURE_H

#include "orch_fixture.h"

/* A TCP port on 127.0.0.1 that was free a moment ago; -1 on error. */
int obs_free_port(void);
/* Appends text to the fixture's orchestrator file. 0 or -1. */
int obs_append_config(ofx *f, const char *text);

/* The admin token obs_enable_http sets up; obs_get sends it by default. */
#define OBS_TOKEN "obs-test-token"

/* Appends http_url = "http://127.0.0.1:port" and admin_token_file (a 0600
 * file holding OBS_TOKEN, which http_url requires) to the orchestrator file,
 * and has the fixture's sagactl send the token. 0 or -1. */
int obs_enable_http(ofx *f, int port);

typedef struct {
    int status;    /* HTTP status code */
    char *headers; /* the header block, malloc'd */
    char *body;    /* malloc'd, NUL-terminated */
} obs_response;

/*
 * GET path from 127.0.0.1:port with Host: host (NULL: "127.0.0.1:port") and
 * the extra header line extra (NULL: "Authorization: Bearer OBS_TOKEN"; ""
 * for no extra header at all).
 * Retries the connection for up to wait_ms while nothing listens. 0 with
 * *res filled (free with obs_response_free), or -1.
 */
int obs_get(int port, const char *path, const char *host, const char *extra, int wait_ms,
            obs_response *res);
/* The same with another method ("HEAD", "POST"). */
int obs_request(const char *method, int port, const char *path, const char *host, const char *extra,
                int wait_ms, obs_response *res);
void obs_response_free(obs_response *res);

/* The value of the sample "name{labels}" (the exact text before the value,
 * e.g. "saga_sagas_started_total{saga_type=\"order_fulfillment\"}"), or -1
 * when the exposition has no such line. */
double obs_metric(const char *exposition, const char *sample);

#endif
