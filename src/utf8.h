/* UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
#ifndef EVENTSINK_UTF8_H
#define EVENTSINK_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when p[0..n) is valid UTF-8; otherwise *bad_at (if given) is the offset of the
 * first invalid byte. NUL bytes are valid UTF-8 here; callers that refuse them check. */
bool utf8_valid(const char *p, size_t n, size_t *bad_at);

#endif
