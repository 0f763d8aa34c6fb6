/* What the operator commands print for people: tables and field lists (with --json they
 * print the API's JSON as it came). Values from the journal may hold anything, so control
 * characters are printed as '?' and never reach the terminal. No colour, no escape codes:
 * the only escape codes the commands write are the progress line's, on a terminal. */
#ifndef EVENTSINK_OP_OUT_H
#define EVENTSINK_OP_OUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "jsonv.h"

/* The width of the terminal on stdout, or 0 when stdout is not a terminal. */
int op_term_width(void);

/* A value as people read it: a string as it is (a time without its fraction of a second),
 * null as "-", anything else as compact JSON. Control characters become '?'. */
void op_value_text(const struct jsonv *v, struct buf *out);

/* Appends s (n bytes) with control characters (C0, DEL, C1) and bytes that are not UTF-8
 * as '?': what may reach a terminal. */
void op_clean(struct buf *out, const char *s, size_t n);

/* Appends v as compact JSON. */
void op_json_write(const struct jsonv *v, struct buf *out);

/* The member at key of obj; key may name a member of a member ("kafka.topic"). */
const struct jsonv *op_member(const struct jsonv *obj, const char *key);

/* The number at key (see op_member), or 0. */
int64_t op_int(const struct jsonv *obj, const char *key);

struct op_col {
    const char *head;
    const char *key; /* see op_member */
    bool right;      /* numbers: aligned right */
};

/* rows: a JSON array of objects. Columns wider than the terminal are cut, ending in "…",
 * widest first; nothing is cut when stdout is not a terminal. */
void op_table(FILE *out, const struct jsonv *rows, const struct op_col *cols, size_t ncols);

/* One "key  value" line per member of obj, in its order. */
void op_fields(FILE *out, const struct jsonv *obj);

#endif
