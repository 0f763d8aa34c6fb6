/* One Kafka record as the pipeline sees it, independent of librdkafka so that the checks
 * and conversions here are unit-tested and fuzzed on plain bytes. */
#ifndef EVENTSINK_RECORD_H
#define EVENTSINK_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct record_header {
    const char *name;
    const char *value; /* NULL for a null header value */
    size_t value_len;
};

struct record {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key; /* NULL when the record has no key */
    size_t key_len;
    const char *value; /* may be NULL (a tombstone): treated as empty */
    size_t value_len;
    int64_t timestamp_ms; /* -1 when unknown */
    const struct record_header *headers;
    size_t nheaders;
};

/* Returns NULL when the value can go to the journal, else the DLQ reason code
 * ("too_large", "invalid_utf8", "invalid_json", "nul_character") with *detail (malloc'd)
 * saying what and where. *is_object tells whether the value is a JSON object. */
const char *record_check(const struct record *r, size_t max_bytes, bool *is_object, char **detail);

/* Text for bytes that must be stored in a text or jsonb column: the bytes themselves when
 * they are valid UTF-8 without NUL (and do not read as that notation themselves), else
 * "\x" and their hex (PostgreSQL's bytea notation). Appends to b. */
void record_text(struct buf *b, const char *p, size_t n);
/* True when text is in that notation ("\x" and an even number of lowercase hex digits):
 * record_text() writes such text as hex too, so that it comes back as the same text. */
bool record_text_is_hex(const char *p, size_t n);

/* The headers as a JSON object (name -> string or null; a name that repeats maps to an
 * array of its values, in order). Appends "null" when there are no headers. */
void record_headers_json(const struct record *r, struct buf *b);

#endif
