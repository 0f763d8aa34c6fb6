/* libFuzzer target: what the API does with request input before any SQL runs — route
 * matching of the path, id parsing, and JSON bodies (jsonv.c). Invariants: no crash; a
 * matched {id} is a copy of one path segment; an id accepted by http_parse_id is positive
 * decimal. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "jsonv.h"

static const char *const patterns[] = {"/events/{id}/lineage", "/events/{id}",
                                       "/replay/jobs/{id}/cancel", "/dlq/{id}/retry", "/health"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = malloc(size + 1);
    memcpy(path, data, size);
    path[size] = '\0';
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        char scratch[64];
        const char *args[2] = {NULL, NULL};
        if (http_match_route(patterns[i], path, scratch, sizeof scratch, args) && args[0]) {
            assert(strchr(args[0], '/') == NULL && strlen(args[0]) > 0);
            int64_t id;
            if (http_parse_id(args[0], &id)) assert(id > 0);
        }
    }
    int64_t id;
    if (http_parse_id(path, &id)) assert(id > 0 && strspn(path, "0123456789") == strlen(path));
    const char *err;
    size_t at;
    struct jsonv *v = jsonv_parse((const char *)data, size, &err, &at);
    if (v) {
        const struct jsonv *ids = jsonv_get(v, "ids");
        if (ids && ids->type == JV_ARRAY)
            for (size_t i = 0; i < ids->n; i++)
                (void)ids->items[i].is_int;
        jsonv_free(v);
    } else {
        assert(err && at <= size);
    }
    free(path);
    return 0;
}
