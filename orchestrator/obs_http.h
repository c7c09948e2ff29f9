/*
 * obs_http — sagad's HTTP listener for people and monitoring systems
 * (docs/OBSERVABILITY.md), on cfg->http_url, off when it is unset:
 *
 *   GET /metrics                    Prometheus text format (orch_metrics.h)
 *   GET /api/sagas?state=&type=&limit=&after=
 *                                   saga summaries, newest first, and the
 *                                   count of sagas in each state
 *   GET /api/sagas/ID               one saga with its steps (as sagactl status)
 *   GET /api/sagas/ID/history?after_seq=N
 *                                   its events after seq N, oldest first (as
 *                                   sagactl history), at most OBS_HISTORY_MAX
 *                                   ("more": true when more follow)
 *   GET /  /app.js  /style.css      the dashboard (orchestrator/web/, embedded
 *                                   in the binary at build time)
 *
 * Everything is read-only: the API answers from its own read-only store
 * handle (SQLite WAL lets it read while the engine writes), used by one
 * request at a time under a mutex; metrics are read from the engine's
 * atomics. Security follows the admin API (common/httpd.h): loopback-only
 * unless https:// with a certificate and the admin token, and with an admin
 * token configured, /metrics and /api/ require "Authorization: Bearer TOKEN".
 *
 * sagad's main starts it after the engine (which creates the database) and
 * stops it before the engine.
 */
#ifndef SAGA_OBS_HTTP_H
#define SAGA_OBS_HTTP_H

#include <stddef.h>

#include "config.h"
#include "engine.h"

#define OBS_LIST_DEFAULT 100
#define OBS_LIST_MAX     1000
#define OBS_HISTORY_MAX  2000 /* events in one history answer (the oldest after after_seq) */

typedef struct obs_http obs_http;

/* NULL with a reason in err; cfg->http_url must be set. */
obs_http *obs_http_start(const orch_config *cfg, engine *e, char *err, size_t errlen);
/* The TCP port it listens on (for http_url with port 0), or -1. */
int obs_http_port(obs_http *o);
void obs_http_stop(obs_http *o); /* safe on NULL */

#endif
