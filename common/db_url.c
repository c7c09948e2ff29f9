/* db_url — see db_url.h. */
#include "db_url.h"

#include <stdio.h>
#include <string.h>

int db_url_is_postgresql(const char *where)
{
    return where != NULL &&
           (strncmp(where, "postgresql://", 13) == 0 || strncmp(where, "postgres://", 11) == 0);
}

void db_url_display(const char *where, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", where ? where : "");
    if (!db_url_is_postgresql(out))
        return;
    char *authority = strstr(out, "://") + 3;
    char *at = strchr(authority, '@');
    char *colon = strchr(authority, ':');
    if (at != NULL && colon != NULL && colon < at)
        memmove(colon, at, strlen(at) + 1);
    for (char *pw = strstr(out, "password="); pw != NULL; pw = strstr(pw + 9, "password=")) {
        char *end = pw + 9 + strcspn(pw + 9, "&");
        memmove(pw + 9, end, strlen(end) + 1);
    }
}
