/*
 * obs_http — sagad's HTTP listener for people and monitoring systems
 * (docs/OBSERVABILITY.md), on cfg->http_url, off when it is unset:
 *
 *   GET /metrics                    Prometheus text format (orch_metrics.h),
 *                                   plus saga_sagas{state} and
 *                                   saga_oldest_age_seconds{state} read from
 *                                   the store at each scrape
 *   GET /healthz                    {"status":"ok"} (200) or {"status":
 *                                   "unavailable","reason":...} (503); no token:
 *                                   it names no saga
 *   GET /api/sagas?state=&type=&limit=&after=
 *                                   saga summaries, newest first, and the
 *                                   count of sagas in each state (as sagactl list)
 *   GET /api/sagas/ID               one saga with its steps (as sagactl status)
 *   GET /api/sagas/ID/history?after_seq=N
 *                                   its events after seq N, oldest first (as
 *                                   sagactl history), at most ADMIN_HISTORY_MAX
 *                                   ("more": true when more follow)
 *
 * The /api documents are the admin API's replies (admin_read: the same reads
 * as the admin socket) written by saga_json, so they are the documents of
 * `sagactl --json`, field for field. Every answer under /api, refusals (400,
 * 401, 404, 405) included, is JSON.
 *   GET /  /app.js  /style.css      the dashboard (orchestrator/web/, embedded
 *                                   in the binary at build time)
 *
 * Everything is read-only: the API answers from its own read-only store
 * handle (SQLite WAL lets it read while the engine writes), used by one
 * request at a time (httpd runs route functions one at a time); metrics are
 * read from the engine's atomics and, for the per-state gauges, from that
 * handle. Security follows the admin API (common/httpd.h): loopback-only
 * unless https:// with a certificate and the admin token, and with an admin
 * token configured, /metrics and /api/ require "Authorization: Bearer TOKEN"
 * (/healthz does not).
 *
 * sagad's main starts it after the engine (which creates the database) and
 * stops it before the engine.
 */
#ifndef SAGA_OBS_HTTP_H
#define SAGA_OBS_HTTP_H

#include <stddef.h>

#include "config.h"
#include "engine.h"

typedef struct obs_http obs_http;

/* NULL with a reason in err; cfg->http_url must be set. */
obs_http *obs_http_start(const orch_config *cfg, engine *e, char *err, size_t errlen);
/* The TCP port it listens on (for http_url with port 0), or -1. */
int obs_http_port(obs_http *o);
void obs_http_stop(obs_http *o); /* safe on NULL */

#endif
