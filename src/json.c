#include "json.h"

#include <string.h>

#include "utf8.h"

struct parser {
    const unsigned char *p;
    const unsigned char *end;
    const unsigned char *start;
    enum json_status status;
    const char *error;
    size_t error_at;
};

static bool fail(struct parser *ps, const char *msg)
{
    /* a syntax error wins over an earlier \u0000: the text is not JSON at all */
    if (ps->status != JSON_INVALID) {
        ps->status = JSON_INVALID;
        ps->error = msg;
        ps->error_at = (size_t)(ps->p - ps->start);
    }
    return false;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(struct parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4) return fail(ps, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0) return fail(ps, "bad hex digit in \\u escape");
        v = (v << 4) | (unsigned)h;
    }
    ps->p += 4;
    *out = v;
    return true;
}

static bool parse_string(struct parser *ps)
{
    ps->p++; /* opening quote */
    for (;;) {
        if (ps->p >= ps->end) return fail(ps, "unterminated string");
        unsigned char c = *ps->p;
        if (c == '"') {
            ps->p++;
            return true;
        }
        if (c < 0x20) return fail(ps, "control character in string");
        if (c != '\\') {
            ps->p++;
            continue;
        }
        ps->p++;
        if (ps->p >= ps->end) return fail(ps, "unterminated escape");
        c = *ps->p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            break;
        case 'u': {
            unsigned cp;
            if (!read_hex4(ps, &cp)) return false;
            if (cp == 0) {
                /* valid JSON, refused by jsonb: remember it, keep checking the rest */
                if (ps->status == JSON_OK) {
                    ps->status = JSON_NUL_ESCAPE;
                    ps->error = "string contains \\u0000, which PostgreSQL jsonb refuses";
                    ps->error_at = (size_t)(ps->p - ps->start) - 6;
                }
            } else if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                    return fail(ps, "high surrogate not followed by a low surrogate");
                ps->p += 2;
                if (!read_hex4(ps, &lo)) return false;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, "high surrogate not followed by a low surrogate");
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(ps, "low surrogate without a high surrogate");
            }
            break;
        }
        default:
            return fail(ps, "bad escape in string");
        }
    }
}

static bool parse_number(struct parser *ps)
{
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    if (ps->p >= ps->end) return fail(ps, "truncated number");
    if (*ps->p == '0') {
        ps->p++;
    } else if (*ps->p >= '1' && *ps->p <= '9') {
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    } else {
        return fail(ps, "bad number");
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, "bad fraction");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, "bad exponent");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    return true;
}

static bool parse_literal(struct parser *ps, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0)
        return fail(ps, "unexpected character");
    ps->p += n;
    return true;
}

static bool parse_value(struct parser *ps, int depth)
{
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unexpected end of input");
    switch (*ps->p) {
    case '{':
        if (depth >= JSON_MAX_DEPTH) return fail(ps, "nested too deeply");
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return true;
        }
        for (;;) {
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected object key");
            if (!parse_string(ps)) return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "expected ':'");
            ps->p++;
            if (!parse_value(ps, depth + 1)) return false;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == '}') {
                ps->p++;
                return true;
            }
            return fail(ps, "expected ',' or '}'");
        }
    case '[':
        if (depth >= JSON_MAX_DEPTH) return fail(ps, "nested too deeply");
        ps->p++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return true;
        }
        for (;;) {
            if (!parse_value(ps, depth + 1)) return false;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == ']') {
                ps->p++;
                return true;
            }
            return fail(ps, "expected ',' or ']'");
        }
    case '"':
        return parse_string(ps);
    case 't':
        return parse_literal(ps, "true");
    case 'f':
        return parse_literal(ps, "false");
    case 'n':
        return parse_literal(ps, "null");
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) return parse_number(ps);
        return fail(ps, "unexpected character");
    }
}

enum json_status json_check(const char *p, size_t n, struct json_info *info)
{
    struct parser ps = {
        .p = (const unsigned char *)p,
        .end = (const unsigned char *)p + n,
        .start = (const unsigned char *)p,
        .status = JSON_OK,
    };
    skip_ws(&ps);
    bool is_object = ps.p < ps.end && *ps.p == '{';
    if (parse_value(&ps, 0)) {
        skip_ws(&ps);
        if (ps.p != ps.end) fail(&ps, "trailing characters after the JSON value");
    }
    if (info) {
        info->is_object = is_object;
        info->error = ps.error;
        info->error_at = ps.error_at;
    }
    return ps.status;
}

static void write_escaped(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0; /* bytes copied verbatim in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            buf_append(b, "\\\"", 2);
            break;
        case '\\':
            buf_append(b, "\\\\", 2);
            break;
        case '\n':
            buf_append(b, "\\n", 2);
            break;
        case '\r':
            buf_append(b, "\\r", 2);
            break;
        case '\t':
            buf_append(b, "\\t", 2);
            break;
        case '\b':
            buf_append(b, "\\b", 2);
            break;
        case '\f':
            buf_append(b, "\\f", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, 6);
        }
        }
    }
    buf_append(b, s + run, n - run);
}

void json_write_string(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n + 2);
    buf_putc(b, '"');
    size_t bad;
    while (!utf8_valid(s, n, &bad)) {
        /* keep the output valid JSON whatever the input: U+FFFD for each bad byte */
        write_escaped(b, s, bad);
        buf_append(b, "\\ufffd", 6);
        s += bad + 1;
        n -= bad + 1;
    }
    write_escaped(b, s, n);
    buf_putc(b, '"');
}

void json_write_cstr(struct buf *b, const char *s)
{
    if (!s)
        buf_append(b, "null", 4);
    else
        json_write_string(b, s, strlen(s));
}

void json_compact(struct buf *b)
{
    size_t w = 0;
    bool in_string = false, escaped = false;
    for (size_t r = 0; r < b->len; r++) {
        char ch = b->data[r];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (ch == '\\')
                escaped = true;
            else if (ch == '"')
                in_string = false;
        } else if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
            continue;
        } else if (ch == '"') {
            in_string = true;
        }
        b->data[w++] = ch;
    }
    b->len = w;
    buf_append(b, "\n", 1);
}
