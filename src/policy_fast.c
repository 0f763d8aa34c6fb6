#include "policy_fast.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "utf8.h"

#define MAX_NAME 256
#define MAX_ID 9007199254740991LL /* 2^53 - 1, as in runtime.lua's to_id */

enum vkind { V_ABSENT, V_NULL, V_STRING, V_NUMBER, V_OTHER };

struct val {
    enum vkind kind;
    const char *p; /* string: the characters between the quotes; number: the literal */
    size_t n;
    bool escaped; /* a string with backslash escapes */
};

struct fields {
    struct val tenant, event_type, type, from, source, dlq, job;
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at a '"'; returns the position after the closing quote. */
static const char *skip_string(const char *p, const char *end, bool *escaped)
{
    p++;
    while (p < end && *p != '"') {
        if (*p == '\\') {
            *escaped = true;
            p++;
        }
        p++;
    }
    return p + 1;
}

/* Skips one value (the text is valid JSON: json_check said so). */
static const char *skip_value(const char *p, const char *end)
{
    if (*p == '"') {
        bool e = false;
        return skip_string(p, end, &e);
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                bool e = false;
                p = skip_string(p, end, &e);
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return p;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++;
    return p;
}

static bool key_is(const char *k, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(k, name, n) == 0;
}

/* The top-level members that the defaults read. False when a key is escaped (it might
 * spell one of them). Later duplicates win, as in a decoded table. */
static bool scan(const char *p, const char *end, struct fields *f)
{
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return false;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        bool kesc = false;
        const char *k = p + 1;
        p = skip_string(p, end, &kesc);
        if (kesc) return false;
        size_t kn = (size_t)(p - 1 - k);
        p = skip_ws(p, end);
        p = skip_ws(p + 1, end); /* ':' */
        struct val v = {.kind = V_OTHER, .p = p};
        const char *vend;
        if (*p == '"') {
            v.kind = V_STRING;
            vend = skip_string(p, end, &v.escaped);
            v.p = p + 1;
            v.n = (size_t)(vend - 1 - v.p);
        } else {
            vend = skip_value(p, end);
            v.n = (size_t)(vend - p);
            if (*p == 'n')
                v.kind = V_NULL;
            else if (*p == '-' || (*p >= '0' && *p <= '9'))
                v.kind = V_NUMBER;
        }
        struct val *slot = NULL;
        if (key_is(k, kn, "tenant_id"))
            slot = &f->tenant;
        else if (key_is(k, kn, "event_type"))
            slot = &f->event_type;
        else if (key_is(k, kn, "type"))
            slot = &f->type;
        else if (key_is(k, kn, "_replayed_from_event_id"))
            slot = &f->from;
        else if (key_is(k, kn, "_replay_source"))
            slot = &f->source;
        else if (key_is(k, kn, "_replayed_from_dlq_id"))
            slot = &f->dlq;
        else if (key_is(k, kn, "_replay_job_id"))
            slot = &f->job;
        if (slot) *slot = v;
        p = skip_ws(vend, end);
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return true;
}

/* A plain integer literal as Lua would print it after tointeger(): digits, an optional
 * minus, no leading zero, at most 15 digits (exact in a double). */
static bool plain_int(const char *p, size_t n)
{
    size_t i = p[0] == '-' ? 1 : 0;
    if (n == i || n - i > 15) return false;
    if (p[i] == '0' && n - i > 1) return false;
    if (p[i] == '0' && i == 1) return false; /* -0 */
    for (; i < n; i++)
        if (p[i] < '0' || p[i] > '9') return false;
    return true;
}

/* name_of(): nil, or text of at most MAX_NAME bytes. 1 = name set, 0 = nil, -1 = ask Lua. */
static int name_of(const struct val *v, char **out)
{
    *out = NULL;
    if (v->kind == V_ABSENT || v->kind == V_NULL) return 0;
    if (v->kind == V_NUMBER) {
        if (!plain_int(v->p, v->n)) return -1;
        *out = xstrndup(v->p, v->n);
        return 1;
    }
    if (v->kind != V_STRING || v->escaped) return -1;
    if (v->n == 0) return 0;
    if (v->n > MAX_NAME || !utf8_valid(v->p, v->n, NULL)) return -1; /* Lua says why */
    *out = xstrndup(v->p, v->n);
    return 1;
}

/* to_id(): a positive integer given as a number or a decimal string. 1 = id, 0 = not an
 * id (nil), -1 = ask Lua (forms tonumber() reads that are not plain digits). */
static int to_id(const char *p, size_t n, bool is_string, int64_t *out)
{
    if (n == 0) return is_string ? 0 : -1;
    if (!plain_int(p, n)) return -1;
    if (p[0] == '-') return 0;
    long long v = 0; /* p is not NUL-terminated (a header value): only its n digits */
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    if (v < 1 || v > MAX_ID) return 0;
    (void)is_string;
    *out = v;
    return 1;
}

static int val_id(const struct val *v, int64_t *out)
{
    *out = 0;
    if (v->kind == V_ABSENT || v->kind == V_NULL) return 0;
    if (v->kind == V_STRING && !v->escaped) return to_id(v->p, v->n, true, out);
    if (v->kind == V_NUMBER) return to_id(v->p, v->n, false, out);
    if (v->kind == V_STRING) return -1;
    return 0; /* tonumber() of a table or boolean is nil */
}

/* The last header of that name (a Lua table of headers keeps the last one). */
static const struct record_header *header(const struct record *r, const char *name)
{
    const struct record_header *h = NULL;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0 && r->headers[i].value) h = &r->headers[i];
    return h;
}

static int header_id(const struct record *r, const char *name, int64_t *out)
{
    *out = 0;
    const struct record_header *h = header(r, name);
    if (!h) return 0;
    return to_id(h->value, h->value_len, true, out);
}

bool policy_fast_decide(const struct record *r, bool is_object, struct decision *out)
{
    struct fields f = {0};
    if (!is_object || !scan(r->value, r->value + r->value_len, &f)) return false;
    struct decision d = {0};
    int64_t from = 0, dlq = 0, job = 0;
    /* describe */
    if (name_of(&f.tenant, &d.tenant_id) < 0) goto lua;
    const struct val *et =
        (f.event_type.kind == V_ABSENT || f.event_type.kind == V_NULL) ? &f.type : &f.event_type;
    if (name_of(et, &d.event_type) < 0) goto lua;
    /* markers: from the payload, then from the headers */
    if (val_id(&f.dlq, &dlq) < 0 || val_id(&f.job, &job) < 0) goto lua;
    if (!dlq && header_id(r, "x-replayed-from-dlq-id", &dlq) < 0) goto lua;
    if (!job && header_id(r, "x-replay-job-id", &job) < 0) goto lua;
    /* detect_replay */
    if (val_id(&f.from, &from) < 0) goto lua;
    bool src_present = f.source.kind != V_ABSENT && f.source.kind != V_NULL;
    bool dlq_present = f.dlq.kind != V_ABSENT && f.dlq.kind != V_NULL;
    if (from || src_present || dlq_present) {
        if (src_present && (f.source.kind != V_STRING || f.source.escaped)) goto lua;
        if (src_present && f.source.n > 0) {
            struct val s = f.source;
            if (name_of(&s, &d.replay_source) < 0) goto lua;
        } else if (!src_present) {
            d.replay_source = xstrdup("unknown");
        }
        /* an empty _replay_source: name_of gives nil; with a parent it becomes "unknown" */
        if (!d.replay_source && from) d.replay_source = xstrdup("unknown");
    } else {
        int64_t hfrom = 0;
        if (header_id(r, "x-replayed-from-event-id", &hfrom) < 0) goto lua;
        const struct record_header *hs = header(r, "x-replay-source");
        if (hfrom || hs || header(r, "x-replayed-from-dlq-id")) {
            from = hfrom;
            if (hs) {
                struct val s = {.kind = V_STRING, .p = hs->value, .n = hs->value_len};
                if (memchr(hs->value, '\0', hs->value_len) || name_of(&s, &d.replay_source) < 0)
                    goto lua;
            } else {
                d.replay_source = xstrdup("unknown");
            }
            if (!d.replay_source && from) d.replay_source = xstrdup("unknown");
        }
    }
    d.replayed_from_event_id = from;
    d.replayed_from_dlq_id = dlq;
    d.replay_job_id = job;
    /* route, and the journal's need for a tenant */
    if (!d.tenant_id) {
        d.to_dlq = true;
        d.reason = "missing_tenant";
    }
    *out = d;
    return true;
lua:
    free(d.tenant_id);
    free(d.event_type);
    free(d.replay_source);
    return false;
}
