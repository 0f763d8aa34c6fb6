/* Strict JSON (RFC 8259) checking and writing.
 *
 * json_check() decides, without building anything, whether bytes are a JSON text that
 * PostgreSQL's jsonb will accept: it rejects what the RFC rejects, plus the escapes jsonb
 * refuses (\u0000 and unpaired surrogates). The caller checks UTF-8 first (utf8_valid). */
#ifndef EVENTSINK_JSON_H
#define EVENTSINK_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define JSON_MAX_DEPTH 512

enum json_status {
    JSON_OK = 0,
    JSON_INVALID,    /* not JSON, or nested deeper than JSON_MAX_DEPTH */
    JSON_NUL_ESCAPE, /* valid JSON, but a string holds \u0000, which jsonb refuses */
};

struct json_info {
    bool is_object;    /* the top-level value is an object */
    size_t error_at;   /* byte offset of the first error */
    const char *error; /* static message for the first error */
};

enum json_status json_check(const char *p, size_t n, struct json_info *info);

/* Appends s (n bytes) as a quoted JSON string; bytes that are not valid UTF-8 become
 * U+FFFD, so the output is always valid JSON. */
void json_write_string(struct buf *b, const char *s, size_t n);
/* Appends a quoted JSON string, or null when s is NULL. */
void json_write_cstr(struct buf *b, const char *s);

/* Removes the whitespace outside strings (PostgreSQL's json_agg and json_build_object put
 * some in) and ends the text with one newline: one style for every answer. */
void json_compact(struct buf *b);

#endif
