/* PostgreSQL array literals in text format, for passing a whole batch as one parameter per
 * column to a prepared statement (unnest). Values are data, never SQL. */
#ifndef EVENTSINK_PGARRAY_H
#define EVENTSINK_PGARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct pgarray {
    struct buf b;
    size_t n;
};

void pgarray_reset(struct pgarray *a);
void pgarray_free(struct pgarray *a);
void pgarray_str(struct pgarray *a, const char *s, size_t n); /* s NULL: NULL element */
void pgarray_cstr(struct pgarray *a, const char *s);
void pgarray_int(struct pgarray *a, int64_t v);
void pgarray_int_or_null(struct pgarray *a, int64_t v); /* 0 is NULL */
void pgarray_bytea(struct pgarray *a, const char *p, size_t n);
/* The literal ("{...}"), valid until the next change. */
const char *pgarray_text(struct pgarray *a);

#endif
