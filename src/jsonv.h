/* A small JSON reader for request bodies: parses into a tree of values. Strict RFC 8259
 * (the same grammar as json_check), strings decoded to UTF-8. Bodies are bounded by
 * http.max_body_bytes, so the tree is too. */
#ifndef EVENTSINK_JSONV_H
#define EVENTSINK_JSONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum jsonv_type { JV_NULL, JV_BOOL, JV_NUMBER, JV_STRING, JV_ARRAY, JV_OBJECT };

struct jsonv {
    enum jsonv_type type;
    bool b;
    double num;
    bool is_int; /* a number written without fraction or exponent, within int64 */
    int64_t i;
    char *str; /* JV_STRING: decoded, NUL-terminated (len excludes the NUL) */
    size_t len;
    struct jsonv *items; /* JV_ARRAY: n values; JV_OBJECT: n values, keys[] beside them */
    char **keys;
    size_t n;
};

/* NULL on a syntax error, with *err (static text) and *err_at (byte offset). */
struct jsonv *jsonv_parse(const char *p, size_t n, const char **err, size_t *err_at);
void jsonv_free(struct jsonv *v);

/* Member of an object, or NULL (also when v is not an object). */
const struct jsonv *jsonv_get(const struct jsonv *v, const char *key);

#endif
