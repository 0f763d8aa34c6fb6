/* Growable byte buffer. A zeroed struct buf is a valid empty buffer. */
#ifndef EVENTSINK_BUF_H
#define EVENTSINK_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* always NUL-terminated when len > 0 or after buf_cstr() */
    size_t len;
    size_t cap;
};

void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_putc(struct buf *b, char c);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
const char *buf_cstr(struct buf *b);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

/* Aborts with a message on allocation failure: the service cannot go on without memory. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
