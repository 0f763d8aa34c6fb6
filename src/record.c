#include "record.h"

#include <string.h>

#include "json.h"
#include "utf8.h"

const char *record_check(const struct record *r, size_t max_bytes, bool *is_object, char **detail)
{
    struct buf d = {0};
    const char *reason = NULL;
    size_t bad_at = 0;
    struct json_info info = {0};
    *is_object = false;
    if (r->value_len > max_bytes) {
        buf_printf(&d, "value is %zu bytes, over kafka.max_message_bytes (%zu)", r->value_len,
                   max_bytes);
        reason = "too_large";
    } else if (!utf8_valid(r->value ? r->value : "", r->value_len, &bad_at)) {
        buf_printf(&d, "value is not valid UTF-8 (first bad byte at offset %zu)", bad_at);
        reason = "invalid_utf8";
    } else if (r->value_len > 0 && memchr(r->value, '\0', r->value_len)) {
        buf_printf(&d, "value holds a NUL byte at offset %zu",
                   (size_t)((const char *)memchr(r->value, '\0', r->value_len) - r->value));
        reason = "nul_character";
    } else {
        switch (json_check(r->value ? r->value : "", r->value_len, &info)) {
        case JSON_OK:
            *is_object = info.is_object;
            break;
        case JSON_NUL_ESCAPE:
            buf_printf(&d, "%s (at offset %zu)", info.error, info.error_at);
            reason = "nul_character";
            break;
        case JSON_INVALID:
            if (r->value_len == 0)
                buf_puts(&d, "value is empty");
            else
                buf_printf(&d, "value is not JSON: %s at offset %zu", info.error, info.error_at);
            reason = "invalid_json";
            break;
        }
    }
    if (reason && detail) *detail = xstrdup(buf_cstr(&d));
    buf_free(&d);
    return reason;
}

bool record_text_is_hex(const char *p, size_t n)
{
    if (n < 2 || p[0] != '\\' || p[1] != 'x' || (n - 2) % 2) return false;
    for (size_t i = 2; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return false;
    return true;
}

void record_text(struct buf *b, const char *p, size_t n)
{
    if (utf8_valid(p, n, NULL) && (n == 0 || !memchr(p, '\0', n)) && !record_text_is_hex(p, n)) {
        buf_append(b, p, n);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    buf_reserve(b, 2 + 2 * n);
    buf_append(b, "\\x", 2);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char h[2] = {hex[c >> 4], hex[c & 15]};
        buf_append(b, h, 2);
    }
}

static void header_value(struct buf *b, const struct record_header *h, struct buf *tmp)
{
    if (!h->value) {
        buf_puts(b, "null");
        return;
    }
    buf_reset(tmp);
    record_text(tmp, h->value, h->value_len);
    json_write_string(b, tmp->data ? tmp->data : "", tmp->len);
}

void record_headers_json(const struct record *r, struct buf *b)
{
    if (r->nheaders == 0) {
        buf_puts(b, "null");
        return;
    }
    struct buf tmp = {0};
    buf_putc(b, '{');
    bool first = true;
    for (size_t i = 0; i < r->nheaders; i++) {
        const struct record_header *h = &r->headers[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(r->headers[j].name, h->name) == 0;
        if (seen) continue; /* written with its first occurrence */
        size_t count = 0;
        for (size_t j = i; j < r->nheaders; j++)
            count += strcmp(r->headers[j].name, h->name) == 0;
        if (!first) buf_putc(b, ',');
        first = false;
        buf_reset(&tmp);
        record_text(&tmp, h->name, strlen(h->name));
        json_write_string(b, tmp.data ? tmp.data : "", tmp.len);
        buf_putc(b, ':');
        if (count == 1) {
            header_value(b, h, &tmp);
            continue;
        }
        buf_putc(b, '[');
        bool f2 = true;
        for (size_t j = i; j < r->nheaders; j++) {
            if (strcmp(r->headers[j].name, h->name) != 0) continue;
            if (!f2) buf_putc(b, ',');
            f2 = false;
            header_value(b, &r->headers[j], &tmp);
        }
        buf_putc(b, ']');
    }
    buf_putc(b, '}');
    buf_free(&tmp);
}
