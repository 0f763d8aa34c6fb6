#include "config.h"
#include "duration.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "buf.h"
#include "kafka_util.h"
#include "listen_addr.h"
#include "log.h"
#include "lua_host.h"

enum opt_type { OPT_STRING, OPT_INT, OPT_STRLIST, OPT_KV, OPT_TABLE, OPT_TOKENS };

struct opt {
    const char *name;
    enum opt_type type;
    size_t offset;         /* into struct config (or struct api_token for token fields) */
    const char *def;       /* OPT_STRING default (NULL = no value) */
    long idef, min, max;   /* OPT_INT default and range */
    const struct opt *sub; /* OPT_TABLE members */
};

#define OFF(field) offsetof(struct config, field)
#define STR(n, f, d)                                                                               \
    {                                                                                              \
        n, OPT_STRING, OFF(f), d, 0, 0, 0, NULL                                                    \
    }
#define INT(n, f, d, lo, hi)                                                                       \
    {                                                                                              \
        n, OPT_INT, OFF(f), NULL, d, lo, hi, NULL                                                  \
    }
#define END                                                                                        \
    {                                                                                              \
        NULL, 0, 0, NULL, 0, 0, 0, NULL                                                            \
    }

/* Every option, its type, default and range: the one place they are declared. */
static const struct opt kafka_opts[] = {
    STR("brokers", kafka.brokers, "127.0.0.1:9092"),
    STR("group_id", kafka.group_id, "eventsink"),
    {"topics", OPT_STRLIST, OFF(kafka.topics), NULL, 0, 0, 0, NULL},
    STR("dlq_topic", kafka.dlq_topic, NULL),
    {"properties", OPT_KV, OFF(kafka.properties), NULL, 0, 0, 0, NULL},
    INT("max_message_bytes", kafka.max_message_bytes, 1048576, 1024, 100 * 1048576L),
    END,
};
static const struct opt postgres_opts[] = {STR("dsn", postgres.dsn, NULL), END};
static const struct opt http_opts[] = {
    STR("listen", http.listen, "127.0.0.1:9106"),
    {"tokens", OPT_TOKENS, OFF(http.tokens), NULL, 0, 0, 0, NULL},
    INT("max_body_bytes", http.max_body_bytes, 1048576, 1024, 64 * 1048576L),
    /* each connection has a thread of its own (the handlers block on PostgreSQL and Kafka) */
    INT("max_connections", http.max_connections, 512, 16, 4096),
    INT("max_connections_per_ip", http.max_connections_per_ip, 64, 1, 4096),
    INT("request_timeout_s", http.request_timeout_s, 10, 1, 3600),
    END,
};
static const struct opt metrics_opts[] = {STR("listen", metrics.listen, "127.0.0.1:9105"), END};
static const struct opt webhooks_opts[] = {
    STR("secret", webhooks.secret, NULL),
    INT("tolerance_s", webhooks.tolerance_s, 300, 1, 86400),
    END,
};
static const struct opt batch_opts[] = {
    INT("max_events", batch.max_events, 1000, 1, 100000),
    INT("max_wait_ms", batch.max_wait_ms, 50, 0, 60000),
    INT("writers", batch.writers, 2, 1, 8),
    END,
};
static const struct opt replay_opts[] = {
    INT("max_depth", replay.max_depth, 3, 1, 1000),
    INT("rate_per_s", replay.rate_per_s, 1000, 1, 1000000),
    INT("max_batch_ids", replay.max_batch_ids, 10000, 1, 1000000),
    INT("confirm_above", replay.confirm_above, 10000, 0, 100000000),
    END,
};
static const struct opt log_opts[] = {
    STR("level", log.level, "info"),
    STR("format", log.format, "text"),
    END,
};
static const struct opt sandbox_opts[] = {
    INT("max_instructions", sandbox.max_instructions, 1000000, 1000, 1000000000L),
    INT("max_memory_bytes", sandbox.max_memory_bytes, 64L << 20, 1L << 20, 4096L << 20),
    INT("max_call_ms", sandbox.max_call_ms, 2000, 10, 600000),
    END,
};
static const struct opt scheduler_opts[] = {
    STR("timezone", scheduler.timezone, "UTC"),
    END,
};
static const struct opt health_opts[] = {
    INT("stall_after_s", health.stall_after_s, 15, 1, 86400),
    END,
};
static const struct opt retention_opts[] = {
    STR("journal", retention.journal, NULL),
    STR("dlq", retention.dlq, "30d"),
    STR("jobs", retention.jobs, "90d"),
    END,
};
static const struct opt root_opts[] = {
    {"kafka", OPT_TABLE, 0, NULL, 0, 0, 0, kafka_opts},
    {"postgres", OPT_TABLE, 0, NULL, 0, 0, 0, postgres_opts},
    {"http", OPT_TABLE, 0, NULL, 0, 0, 0, http_opts},
    {"metrics", OPT_TABLE, 0, NULL, 0, 0, 0, metrics_opts},
    {"webhooks", OPT_TABLE, 0, NULL, 0, 0, 0, webhooks_opts},
    {"policies", OPT_STRLIST, OFF(policies), NULL, 0, 0, 0, NULL},
    {"batch", OPT_TABLE, 0, NULL, 0, 0, 0, batch_opts},
    {"replay", OPT_TABLE, 0, NULL, 0, 0, 0, replay_opts},
    {"log", OPT_TABLE, 0, NULL, 0, 0, 0, log_opts},
    {"sandbox", OPT_TABLE, 0, NULL, 0, 0, 0, sandbox_opts},
    {"scheduler", OPT_TABLE, 0, NULL, 0, 0, 0, scheduler_opts},
    {"health", OPT_TABLE, 0, NULL, 0, 0, 0, health_opts},
    {"retention", OPT_TABLE, 0, NULL, 0, 0, 0, retention_opts},
    END,
};

struct loader {
    lua_State *L;
    struct config *c;
    struct buf errors;
};

static void problem(struct loader *ld, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct loader *ld, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_printf(&ld->errors, "%s: %s: ", ld->c->path, path);
    buf_vprintf(&ld->errors, fmt, ap);
    buf_putc(&ld->errors, '\n');
    va_end(ap);
}

static void set_defaults(struct config *c, const struct opt *opts)
{
    for (const struct opt *o = opts; o->name; o++) {
        char *field = (char *)c + o->offset;
        switch (o->type) {
        case OPT_STRING:
            *(char **)field = o->def ? xstrdup(o->def) : NULL;
            break;
        case OPT_INT:
            *(long *)field = o->idef;
            break;
        case OPT_TABLE:
            set_defaults(c, o->sub);
            break;
        default:
            break;
        }
    }
}

/* Stack: [.., table] -> [.., table]; reads a list of strings. */
static bool read_strlist(struct loader *ld, const char *path, struct strlist *out)
{
    lua_State *L = ld->L;
    if (!lua_istable(L, -1)) {
        problem(ld, path, "expected a list of strings, got %s", luaL_typename(L, -1));
        return false;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        bool is_index =
            lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n;
        lua_pop(L, 1);
        if (!is_index) {
            problem(ld, path, "expected a list of strings, found a non-index key");
            lua_pop(L, 1);
            return false;
        }
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            problem(ld, path, "item %lld is a %s, expected a string", (long long)i,
                    luaL_typename(L, -1));
            lua_pop(L, 1);
            return false;
        }
        out->items = xrealloc(out->items, (out->n + 1) * sizeof(char *));
        out->items[out->n++] = xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return true;
}

/* Stack: [.., table] -> [.., table]; reads a map of string to string (numbers and
 * booleans are turned into their text, as librdkafka expects). */
static void read_kv(struct loader *ld, const char *path, struct kvlist *out)
{
    lua_State *L = ld->L;
    if (!lua_istable(L, -1)) {
        problem(ld, path, "expected a table of name = value, got %s", luaL_typename(L, -1));
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            problem(ld, path, "keys must be strings");
        } else {
            const char *v = NULL;
            if (lua_type(L, -1) == LUA_TBOOLEAN)
                v = lua_toboolean(L, -1) ? "true" : "false";
            else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
                v = lua_tostring(L, -1); /* converts numbers in place: key stays a string */
            if (!v) {
                problem(ld, path, "%s: expected a string, number or boolean", lua_tostring(L, -2));
            } else {
                out->items = xrealloc(out->items, (out->n + 1) * sizeof(struct kv));
                out->items[out->n].key = xstrdup(lua_tostring(L, -2));
                out->items[out->n].value = xstrdup(v);
                out->n++;
            }
        }
        lua_pop(L, 1);
    }
}

/* Stack: [.., list] -> [.., list] */
static void read_tokens(struct loader *ld, const char *path)
{
    lua_State *L = ld->L;
    struct config *c = ld->c;
    if (!lua_istable(L, -1)) {
        problem(ld, path, "expected a list of tokens");
        return;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        bool is_index =
            lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= n;
        lua_pop(L, 1);
        if (!is_index) {
            /* a map of tokens would otherwise be read as no tokens: no authentication */
            problem(ld, path, "expected a list of tokens { {name=, token=, role=}, ... }");
            lua_pop(L, 1);
            return;
        }
    }
    c->http.tokens = xcalloc((size_t)n + 1, sizeof(struct api_token));
    for (lua_Integer i = 1; i <= n; i++) {
        char where[400];
        snprintf(where, sizeof where, "%s[%lld]", path, (long long)i);
        lua_rawgeti(L, -1, i);
        struct api_token *t = &c->http.tokens[c->http.ntokens++];
        if (!lua_istable(L, -1)) {
            problem(ld, where, "expected a table {name=, token=, role=, tenants=}");
            lua_pop(L, 1);
            continue;
        }
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            char **dst = NULL;
            if (strcmp(k, "name") == 0)
                dst = &t->name;
            else if (strcmp(k, "token") == 0)
                dst = &t->token;
            else if (strcmp(k, "role") == 0)
                dst = &t->role;
            if (dst) {
                if (lua_type(L, -1) != LUA_TSTRING)
                    problem(ld, where, "%s must be a string", k);
                else
                    *dst = xstrdup(lua_tostring(L, -1));
            } else if (strcmp(k, "tenants") == 0) {
                read_strlist(ld, where, &t->tenants);
            } else {
                problem(ld, where, "unknown key '%s'", k);
            }
            lua_pop(L, 1);
        }
        if (!t->name || !t->token) problem(ld, where, "name and token are required");
        if (t->token && strlen(t->token) < 8)
            problem(ld, where, "token is shorter than 8 characters");
        if (!t->role) t->role = xstrdup("viewer");
        if (strcmp(t->role, "viewer") != 0 && strcmp(t->role, "operator") != 0)
            problem(ld, where, "role must be \"viewer\" or \"operator\", not \"%s\"", t->role);
        lua_pop(L, 1);
    }
}

/* Stack: [.., table] -> [.., table] */
static void read_table(struct loader *ld, const char *prefix, const struct opt *opts)
{
    lua_State *L = ld->L;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        char path[256 + 64];
        if (lua_type(L, -2) != LUA_TSTRING) {
            problem(ld, *prefix ? prefix : "(top level)", "keys must be names, found a %s key",
                    luaL_typename(L, -2));
            lua_pop(L, 1);
            continue;
        }
        const char *key = lua_tostring(L, -2);
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
        const struct opt *o = opts;
        while (o->name && strcmp(o->name, key) != 0)
            o++;
        if (!o->name) {
            problem(ld, path, "unknown key");
            lua_pop(L, 1);
            continue;
        }
        char *field = (char *)ld->c + o->offset;
        switch (o->type) {
        case OPT_STRING:
            if (lua_type(L, -1) != LUA_TSTRING) {
                problem(ld, path, "expected a string, got %s", luaL_typename(L, -1));
            } else {
                free(*(char **)field);
                *(char **)field = xstrdup(lua_tostring(L, -1));
            }
            break;
        case OPT_INT:
            if (!lua_isinteger(L, -1)) {
                problem(ld, path, "expected an integer, got %s", luaL_typename(L, -1));
            } else {
                lua_Integer v = lua_tointeger(L, -1);
                if (v < o->min || v > o->max)
                    problem(ld, path, "%lld is out of range %ld..%ld", (long long)v, o->min,
                            o->max);
                else
                    *(long *)field = (long)v;
            }
            break;
        case OPT_STRLIST: {
            struct strlist *sl = (struct strlist *)field;
            for (size_t i = 0; i < sl->n; i++)
                free(sl->items[i]);
            free(sl->items);
            sl->items = NULL;
            sl->n = 0;
            read_strlist(ld, path, sl);
            break;
        }
        case OPT_KV:
            read_kv(ld, path, (struct kvlist *)field);
            break;
        case OPT_TOKENS:
            read_tokens(ld, path);
            break;
        case OPT_TABLE:
            if (!lua_istable(L, -1))
                problem(ld, path, "expected a table, got %s", luaL_typename(L, -1));
            else
                read_table(ld, path, o->sub);
            break;
        }
        lua_pop(L, 1);
    }
}

static char *resolve(const char *dir, const char *p)
{
    if (p[0] == '/') return xstrdup(p);
    struct buf b = {0};
    buf_printf(&b, "%s/%s", dir, p);
    return b.data;
}

/* The listen addresses, read as the listeners read them (listen_addr.c). */
static void validate_listen(struct loader *ld)
{
    struct config *c = ld->c;
    struct sockaddr_storage api, metrics;
    char *err = NULL;
    bool api_ok = listen_addr_parse(c->http.listen, &api, &err);
    if (!api_ok) {
        problem(ld, "http.listen", "%s", err);
        free(err);
        err = NULL;
    } else if (c->http.ntokens == 0 && !listen_addr_is_loopback(&api)) {
        problem(ld, "http.listen",
                "%s is not a loopback address and http.tokens is empty: configure tokens "
                "or listen on 127.0.0.1",
                c->http.listen);
    }
    if (!listen_addr_parse(c->metrics.listen, &metrics, &err)) {
        problem(ld, "metrics.listen", "%s", err);
        free(err);
    } else if (api_ok && listen_addr_overlap(&api, &metrics)) {
        problem(ld, "metrics.listen", "%s and http.listen (%s) cannot both listen there",
                c->metrics.listen, c->http.listen);
    }
}

/* A retention: NULL or "forever" keeps forever (0), else a duration with its unit, at
 * least an hour (the service applies retention hourly). */
static int64_t retention_of(struct loader *ld, const char *path, const char *v)
{
    int64_t s = 0;
    if (!v || strcmp(v, "forever") == 0) return 0;
    if (!duration_parse(v, true, &s) || s < 3600)
        problem(ld, path,
                "must be a duration of an hour or more such as \"30d\" or \"12h\", or "
                "\"forever\", not \"%s\"",
                v);
    return s;
}

static void validate_retention(struct loader *ld)
{
    struct config *c = ld->c;
    c->retention.journal_s = retention_of(ld, "retention.journal", c->retention.journal);
    c->retention.dlq_s = retention_of(ld, "retention.dlq", c->retention.dlq);
    c->retention.jobs_s = retention_of(ld, "retention.jobs", c->retention.jobs);
}

static void validate(struct loader *ld)
{
    struct config *c = ld->c;
    if (!c->postgres.dsn) problem(ld, "postgres.dsn", "is required");
    if (c->kafka.topics.n == 0) problem(ld, "kafka.topics", "needs at least one topic");
    enum log_level lv;
    if (!log_level_parse(c->log.level, &lv))
        problem(ld, "log.level", "must be debug, info, warn or error, not \"%s\"", c->log.level);
    if (strcmp(c->log.format, "text") != 0 && strcmp(c->log.format, "json") != 0)
        problem(ld, "log.format", "must be \"text\" or \"json\", not \"%s\"", c->log.format);
    validate_listen(ld);
    validate_retention(ld);
    if (c->http.max_connections_per_ip > c->http.max_connections)
        problem(ld, "http.max_connections_per_ip", "%ld is over http.max_connections (%ld)",
                c->http.max_connections_per_ip, c->http.max_connections);
    char *kerr = NULL;
    if (!kafka_conf_check(c, &kerr)) {
        /* the consumer and the producer would refuse it at start-up */
        problem(ld, "kafka.properties", "%s", kerr);
        free(kerr);
    }
    for (size_t i = 0; i < c->http.ntokens; i++)
        for (size_t j = 0; j < i; j++)
            if (c->http.tokens[i].name && c->http.tokens[j].name &&
                strcmp(c->http.tokens[i].name, c->http.tokens[j].name) == 0)
                problem(ld, "http.tokens", "two tokens are named \"%s\"", c->http.tokens[i].name);
    if (c->policies.n == 0) problem(ld, "policies", "needs at least one policy file");
    if (strcmp(c->scheduler.timezone, "UTC") != 0) {
        struct buf zone = {0};
        buf_printf(&zone, "/usr/share/zoneinfo/%s", c->scheduler.timezone);
        if (strstr(c->scheduler.timezone, "..") || access(zone.data, R_OK) != 0)
            problem(ld, "scheduler.timezone",
                    "unknown time zone \"%s\" (expected a name such as "
                    "\"Europe/Berlin\" from the tz database)",
                    c->scheduler.timezone);
        buf_free(&zone);
    }
    for (size_t i = 0; i < c->policies.n; i++) {
        char *abs = resolve(c->dir, c->policies.items[i]);
        free(c->policies.items[i]);
        c->policies.items[i] = abs;
        if (access(abs, R_OK) != 0) problem(ld, "policies", "cannot read %s", abs);
    }
}

struct config *config_load(const char *file, char **err)
{
    struct config *c = xcalloc(1, sizeof *c);
    struct loader ld = {.c = c};
    char real[PATH_MAX];
    if (!realpath(file, real)) {
        buf_printf(&ld.errors, "%s: cannot open the configuration file\n", file);
        c->path = xstrdup(file);
        goto fail;
    }
    c->path = xstrdup(real);
    char *slash = strrchr(real, '/');
    c->dir = xstrndup(real, slash && slash != real ? (size_t)(slash - real) : 1);
    set_defaults(c, root_opts);
    c->policies.items = xcalloc(1, sizeof(char *));
    c->policies.items[0] = xstrdup("policies/default.lua");
    c->policies.n = 1;
    c->kafka.topics.items = xcalloc(1, sizeof(char *));
    c->kafka.topics.items[0] = xstrdup("apexflow.leads.created");
    c->kafka.topics.n = 1;

    struct lua_host_limits lim = {.max_memory_bytes = 16 << 20, .max_instructions = 10000000};
    char *lerr = NULL;
    struct lua_host *h = lua_host_create(&lim, LUA_HOST_CONFIG, &lerr);
    if (!h) {
        buf_printf(&ld.errors, "%s: %s\n", c->path, lerr);
        free(lerr);
        goto fail;
    }
    ld.L = lua_host_state(h);
    FILE *f = fopen(c->path, "rb");
    struct buf src = {0};
    if (f) {
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
            buf_append(&src, chunk, n);
        fclose(f);
    }
    char chunkname[PATH_MAX + 2];
    snprintf(chunkname, sizeof chunkname, "@%s", c->path);
    if (!lua_host_load(h, src.data ? src.data : "", src.len, chunkname, &lerr) ||
        !lua_host_pcall(h, 0, 1, &lerr)) {
        buf_printf(&ld.errors, "%s\n", lerr);
        free(lerr);
    } else if (!lua_istable(ld.L, -1)) {
        buf_printf(&ld.errors, "%s: must return a table, returned %s\n", c->path,
                   luaL_typename(ld.L, -1));
    } else {
        read_table(&ld, "", root_opts);
        validate(&ld);
    }
    buf_free(&src);
    lua_host_destroy(h);
    if (ld.errors.len == 0) return c;
fail:
    if (err) *err = xstrdup(buf_cstr(&ld.errors));
    buf_free(&ld.errors);
    config_free(c);
    return NULL;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_strlist(const struct strlist *a, const struct strlist *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++)
        if (!same_str(a->items[i], b->items[i])) return false;
    return true;
}

/* The same pairs in any order (a Lua table's order differs from one load to the next). */
static bool same_kv(const struct kvlist *a, const struct kvlist *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        size_t j = 0;
        while (j < b->n && !same_str(a->items[i].key, b->items[j].key))
            j++;
        if (j == b->n || !same_str(a->items[i].value, b->items[j].value)) return false;
    }
    return true;
}

static bool same_tokens(const struct config *a, const struct config *b)
{
    if (a->http.ntokens != b->http.ntokens) return false;
    for (size_t i = 0; i < a->http.ntokens; i++) {
        const struct api_token *x = &a->http.tokens[i], *y = &b->http.tokens[i];
        if (!same_str(x->name, y->name) || !same_str(x->token, y->token) ||
            !same_str(x->role, y->role) || !same_strlist(&x->tenants, &y->tenants))
            return false;
    }
    return true;
}

static bool same_option(const struct opt *o, const struct config *a, const struct config *b)
{
    const char *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;
    switch (o->type) {
    case OPT_STRING:
        return same_str(*(char *const *)fa, *(char *const *)fb);
    case OPT_INT:
        return *(const long *)fa == *(const long *)fb;
    case OPT_STRLIST:
        return same_strlist((const struct strlist *)fa, (const struct strlist *)fb);
    case OPT_KV:
        return same_kv((const struct kvlist *)fa, (const struct kvlist *)fb);
    case OPT_TOKENS:
        return same_tokens(a, b);
    case OPT_TABLE:
        break;
    }
    return true;
}

static void list_changes(const struct opt *opts, const char *prefix, const struct config *a,
                         const struct config *b, struct buf *out)
{
    for (const struct opt *o = opts; o->name; o++) {
        char path[128];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", o->name);
        /* what a reload takes: the policy files and their sandbox */
        if (strcmp(path, "policies") == 0 || strcmp(path, "sandbox") == 0) continue;
        if (o->type == OPT_TABLE) {
            list_changes(o->sub, path, a, b, out);
        } else if (!same_option(o, a, b)) {
            buf_printf(out, "%s%s", out->len ? ", " : "", path);
        }
    }
}

char *config_restart_needed(const struct config *running, const struct config *fresh)
{
    struct buf out = {0};
    list_changes(root_opts, "", running, fresh, &out);
    return out.data; /* NULL when nothing differs */
}

static void strlist_free(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
}

void config_free(struct config *c)
{
    if (!c) return;
    free(c->path);
    free(c->dir);
    free(c->kafka.brokers);
    free(c->kafka.group_id);
    strlist_free(&c->kafka.topics);
    free(c->kafka.dlq_topic);
    for (size_t i = 0; i < c->kafka.properties.n; i++) {
        free(c->kafka.properties.items[i].key);
        free(c->kafka.properties.items[i].value);
    }
    free(c->kafka.properties.items);
    free(c->postgres.dsn);
    free(c->http.listen);
    for (size_t i = 0; i < c->http.ntokens; i++) {
        free(c->http.tokens[i].name);
        free(c->http.tokens[i].token);
        free(c->http.tokens[i].role);
        strlist_free(&c->http.tokens[i].tenants);
    }
    free(c->http.tokens);
    free(c->metrics.listen);
    free(c->webhooks.secret);
    strlist_free(&c->policies);
    free(c->log.level);
    free(c->log.format);
    free(c->scheduler.timezone);
    free(c->retention.journal);
    free(c->retention.dlq);
    free(c->retention.jobs);
    free(c);
}
