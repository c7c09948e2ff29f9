/*
 * web_assets — the dashboard's files (orchestrator/web/), embedded in sagad
 * as byte arrays by the build (orchestrator/web/embed.cmake generates
 * web_assets.c), so sagad serves them with no file on disk and no CDN.
 */
#ifndef SAGA_WEB_ASSETS_H
#define SAGA_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name; /* file name under orchestrator/web/, e.g. "app.js" */
    const unsigned char *data;
    size_t len;
} web_asset;

extern const web_asset web_assets[];
extern const size_t web_assets_count;

#endif
