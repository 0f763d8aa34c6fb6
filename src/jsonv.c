#include "jsonv.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

struct rd {
    const char *p, *end, *start;
    const char *err;
    size_t err_at;
};

static void ws(struct rd *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int h = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static void put_utf8(struct buf *b, unsigned cp)
{
    char o[4];
    if (cp < 0x80) {
        buf_putc(b, (char)cp);
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        buf_append(b, o, 2);
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        buf_append(b, o, 3);
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        buf_append(b, o, 4);
    }
}

/* The grammar was checked by json_check() first; this decodes. */
static bool string(struct rd *r, char **out, size_t *len)
{
    struct buf b = {0};
    r->p++;
    while (r->p < r->end && *r->p != '"') {
        if (*r->p != '\\') {
            const char *run = r->p;
            while (r->p < r->end && *r->p != '"' && *r->p != '\\')
                r->p++;
            buf_append(&b, run, (size_t)(r->p - run));
            continue;
        }
        r->p++;
        char c = *r->p++;
        switch (c) {
        case 'b':
            buf_putc(&b, '\b');
            break;
        case 'f':
            buf_putc(&b, '\f');
            break;
        case 'n':
            buf_putc(&b, '\n');
            break;
        case 'r':
            buf_putc(&b, '\r');
            break;
        case 't':
            buf_putc(&b, '\t');
            break;
        case 'u': {
            unsigned cp = (unsigned)hex4(r->p);
            r->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo = (unsigned)hex4(r->p + 2);
                r->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(&b, cp);
            break;
        }
        default:
            buf_putc(&b, c);
            break;
        }
    }
    r->p++; /* closing quote */
    buf_reserve(&b, 0);
    b.data[b.len] = '\0';
    *out = b.data;
    *len = b.len;
    return true;
}

static bool value(struct rd *r, struct jsonv *v);

static bool container(struct rd *r, struct jsonv *v, bool object)
{
    char close = object ? '}' : ']';
    size_t cap = 0;
    r->p++;
    ws(r);
    if (*r->p == close) {
        r->p++;
        return true;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            v->items = xrealloc(v->items, cap * sizeof *v->items);
            if (object) v->keys = xrealloc(v->keys, cap * sizeof *v->keys);
        }
        ws(r);
        if (object) {
            size_t kl;
            string(r, &v->keys[v->n], &kl);
            ws(r);
            r->p++; /* ':' */
        }
        memset(&v->items[v->n], 0, sizeof v->items[0]);
        v->n++;
        if (!value(r, &v->items[v->n - 1])) return false;
        ws(r);
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        r->p++; /* close */
        return true;
    }
}

static bool value(struct rd *r, struct jsonv *v)
{
    ws(r);
    switch (*r->p) {
    case '{':
        v->type = JV_OBJECT;
        return container(r, v, true);
    case '[':
        v->type = JV_ARRAY;
        return container(r, v, false);
    case '"':
        v->type = JV_STRING;
        return string(r, &v->str, &v->len);
    case 't':
        v->type = JV_BOOL;
        v->b = true;
        r->p += 4;
        return true;
    case 'f':
        v->type = JV_BOOL;
        r->p += 5;
        return true;
    case 'n':
        v->type = JV_NULL;
        r->p += 4;
        return true;
    default: {
        v->type = JV_NUMBER;
        const char *s = r->p;
        while (r->p < r->end && strchr("+-0123456789.eE", *r->p))
            r->p++;
        size_t n = (size_t)(r->p - s);
        char small[64];
        char *tmp = n < sizeof small ? small : xmalloc(n + 1); /* long numbers are valid JSON */
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        v->num = strtod(tmp, NULL);
        if (!strpbrk(tmp, ".eE")) {
            errno = 0;
            long long ll = strtoll(tmp, NULL, 10);
            v->is_int = errno == 0;
            v->i = ll;
        }
        if (tmp != small) free(tmp);
        return true;
    }
    }
}

struct jsonv *jsonv_parse(const char *p, size_t n, const char **err, size_t *err_at)
{
    struct json_info info;
    enum json_status st = json_check(p, n, &info);
    if (st == JSON_INVALID) {
        *err = info.error;
        *err_at = info.error_at;
        return NULL;
    }
    if (st == JSON_NUL_ESCAPE) {
        *err = "a string holds \\u0000";
        *err_at = info.error_at;
        return NULL;
    }
    struct rd r = {.p = p, .end = p + n, .start = p};
    struct jsonv *v = xcalloc(1, sizeof *v);
    if (!value(&r, v)) {
        *err = r.err;
        *err_at = r.err_at;
        jsonv_free(v);
        return NULL;
    }
    return v;
}

static void free_inner(struct jsonv *v)
{
    free(v->str);
    for (size_t i = 0; i < v->n; i++) {
        free_inner(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

void jsonv_free(struct jsonv *v)
{
    if (!v) return;
    free_inner(v);
    free(v);
}

const struct jsonv *jsonv_get(const struct jsonv *v, const char *key)
{
    if (!v || v->type != JV_OBJECT) return NULL;
    const struct jsonv *found = NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0) found = &v->items[i]; /* the last one wins */
    return found;
}
