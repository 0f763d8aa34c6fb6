#include "pgarray.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void sep(struct pgarray *a)
{
    if (a->n == 0) {
        buf_reset(&a->b);
        buf_putc(&a->b, '{');
    } else {
        buf_putc(&a->b, ',');
    }
    a->n++;
}

void pgarray_reset(struct pgarray *a)
{
    buf_reset(&a->b);
    a->n = 0;
}

void pgarray_free(struct pgarray *a)
{
    buf_free(&a->b);
    a->n = 0;
}

void pgarray_str(struct pgarray *a, const char *s, size_t n)
{
    sep(a);
    if (!s) {
        buf_append(&a->b, "NULL", 4);
        return;
    }
    buf_reserve(&a->b, n + 2);
    buf_putc(&a->b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"' && s[i] != '\\') continue;
        buf_append(&a->b, s + run, i - run);
        buf_putc(&a->b, '\\');
        run = i;
    }
    buf_append(&a->b, s + run, n - run);
    buf_putc(&a->b, '"');
}

void pgarray_cstr(struct pgarray *a, const char *s)
{
    pgarray_str(a, s, s ? strlen(s) : 0);
}

void pgarray_int(struct pgarray *a, int64_t v)
{
    sep(a);
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    buf_append(&a->b, tmp, (size_t)n);
}

void pgarray_int_or_null(struct pgarray *a, int64_t v)
{
    if (v == 0) {
        sep(a);
        buf_append(&a->b, "NULL", 4);
    } else {
        pgarray_int(a, v);
    }
}

void pgarray_bytea(struct pgarray *a, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sep(a);
    /* "\\x..." : the array parser turns \\ into \, then bytea reads \x and hex */
    buf_reserve(&a->b, 2 * n + 6);
    buf_append(&a->b, "\"\\\\x", 4);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char h[2] = {hex[c >> 4], hex[c & 15]};
        buf_append(&a->b, h, 2);
    }
    buf_putc(&a->b, '"');
}

const char *pgarray_text(struct pgarray *a)
{
    if (a->n == 0) {
        buf_reset(&a->b);
        buf_puts(&a->b, "{}");
        return a->b.data;
    }
    /* close, hand out, and reopen on the next element: callers read it once per batch */
    buf_putc(&a->b, '}');
    a->b.len--; /* the '}' stays in place past len; the next sep() overwrites it */
    return a->b.data;
}
