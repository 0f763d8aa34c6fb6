/* Files compiled into the binary: every lua/ and sql/ file, by scripts/gen-assets.sh. */
#ifndef EVENTSINK_ASSETS_H
#define EVENTSINK_ASSETS_H

#include <stddef.h>

struct asset {
    const char *name; /* path in the repo, e.g. "sql/001_init.sql" */
    const char *data; /* NUL-terminated */
    size_t len;
};

/* Sorted by name; ends with an entry whose name is NULL. */
extern const struct asset assets[];

const struct asset *asset_find(const char *name);

#endif
