#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "assets.h"
#include "buf.h"
#include "db.h"
#include "db_retention.h"
#include "db_rows.h"
#include "json.h"
#include "log.h"
#include "lua_host.h"
#include "policy.h"
#include "record.h"
#include "retention.h"

static struct lua_host_limits limits_of(const struct config *cfg)
{
    struct lua_host_limits lim = {
        .max_memory_bytes = (size_t)cfg->sandbox.max_memory_bytes,
        .max_instructions = cfg->sandbox.max_instructions,
        .max_call_ms = cfg->sandbox.max_call_ms,
    };
    return lim;
}

int cli_check(const struct config *cfg)
{
    struct lua_host_limits lim = limits_of(cfg);
    char *err = NULL;
    struct policy_set *ps = policy_set_load(&cfg->policies, &lim, 1, &err);
    if (!ps) {
        fprintf(stderr, "%s\n", err);
        fprintf(stderr, "eventsink: the policies are invalid\n");
        free(err);
        return 2;
    }
    policy_set_destroy(ps);
    printf("%s: OK (%zu policy file(s)", cfg->path, cfg->policies.n);
    for (size_t i = 0; i < cfg->policies.n; i++)
        printf("%s%s", i ? ", " : ": ", cfg->policies.items[i]);
    printf(")\n");
    return 0;
}

int cli_migrate(const struct config *cfg)
{
    char *err = NULL;
    struct db *db = db_connect(cfg->postgres.dsn, "eventsink-migrate", &err);
    if (!db) {
        fprintf(stderr, "eventsink: %s\n", err);
        free(err);
        return 1;
    }
    int applied = 0;
    bool ok = db_migrate(db, &applied, &err);
    db_close(db);
    if (!ok) {
        fprintf(stderr, "eventsink: %s\n", err);
        free(err);
        return 1;
    }
    printf("migrations: %d applied, schema up to date\n", applied);
    return 0;
}

/* Ends a line of `retention` with how many of its months went whole (partitions dropped). */
static void whole_months(int64_t parts, bool dry_run)
{
    if (parts)
        printf(" (%" PRId64 " month partitions %s whole, the rest row by row)", parts,
               dry_run ? "would be dropped" : "dropped");
    printf("\n");
}

int cli_retention(const struct config *cfg, bool dry_run)
{
    char *err = NULL;
    struct pg_conn *c = db_retention_connect(cfg->postgres.dsn, &err);
    if (!c) {
        fprintf(stderr, "eventsink: %s\n", err ? err : "PostgreSQL cannot be reached");
        free(err);
        return 1;
    }
    struct retention_report r;
    bool ok = retention_apply(c, cfg, dry_run, NULL, NULL, &r, &err);
    db_conn_close(c);
    if (!ok) {
        fprintf(stderr, "eventsink: %s\n", err);
        fprintf(stderr,
                "eventsink: removed before that: %" PRId64 " journal partitions (%" PRId64
                " rows), %" PRId64 " DLQ entries, %" PRId64 " replay jobs, %" PRId64 " items\n",
                r.journal_parts, r.journal_rows, r.dlq, r.jobs, r.items);
        free(err);
        return 1;
    }
    const char *dlq = cfg->retention.dlq_s ? cfg->retention.dlq : "forever";
    const char *jobs = cfg->retention.jobs_s ? cfg->retention.jobs : "forever";
    if (r.skipped) {
        printf("retention: another instance is applying it now; nothing done\n");
        return 0;
    }
    if (cfg->retention.journal_s)
        printf("journal:     %" PRId64 " partitions (%" PRId64 " rows, %" PRId64
               " bytes) older than %s %s\n",
               r.journal_parts, r.journal_rows, r.journal_bytes, cfg->retention.journal,
               dry_run ? "would go" : "removed");
    else
        printf("journal:     kept forever (retention.journal)\n");
    if (r.settled)
        printf("partitions:  the rows of %" PRId64 " months moved from a default partition "
               "to their own\n",
               r.settled);
    printf("dlq:         %" PRId64 " resolved or discarded entries older than %s %s", r.dlq, dlq,
           dry_run ? "would go" : "removed");
    whole_months(r.dlq_parts, dry_run);
    printf("replay jobs: %" PRId64 " ended longer ago than %s, with %" PRId64 " items, %s", r.jobs,
           jobs, r.items, dry_run ? "would go" : "removed");
    whole_months(r.jobs_parts, dry_run);
    if (dry_run) printf("(dry run: nothing was removed)\n");
    return 0;
}

/* Appends text that may hold any bytes as a JSON string (see record_text). */
static void json_text(struct buf *out, const char *s)
{
    if (!s) {
        buf_puts(out, "null");
        return;
    }
    struct buf t = {0};
    record_text(&t, s, strlen(s));
    json_write_string(out, t.data ? t.data : "", t.len);
    buf_free(&t);
}

static void print_decision(long line, const struct record *r, const struct decision *d)
{
    struct buf o = {0};
    buf_printf(&o, "{\"line\":%ld,\"topic\":", line);
    json_text(&o, r->topic);
    buf_printf(&o, ",\"partition\":%d,\"offset\":%" PRId64 ",\"tenant_id\":", (int)r->partition,
               r->offset);
    json_text(&o, d->tenant_id);
    buf_puts(&o, ",\"event_type\":");
    json_text(&o, d->event_type);
    buf_printf(&o, ",\"replay\":%s,\"replay_source\":",
               d->replay_source || d->replayed_from_event_id ? "true" : "false");
    json_text(&o, d->replay_source);
    buf_puts(&o, ",\"replayed_from_event_id\":");
    if (d->replayed_from_event_id)
        buf_printf(&o, "%" PRId64, d->replayed_from_event_id);
    else
        buf_puts(&o, "null");
    buf_puts(&o, ",\"replayed_from_dlq_id\":");
    if (d->replayed_from_dlq_id)
        buf_printf(&o, "%" PRId64, d->replayed_from_dlq_id);
    else
        buf_puts(&o, "null");
    buf_printf(&o, ",\"route\":\"%s\",\"reason\":", d->to_dlq ? "dlq" : "journal");
    json_text(&o, d->to_dlq ? d->reason : NULL);
    buf_puts(&o, ",\"detail\":");
    json_text(&o, d->detail);
    buf_puts(&o, "}\n");
    fwrite(o.data, 1, o.len, stdout);
    buf_free(&o);
}

static void print_line_error(long line, const char *msg)
{
    struct buf o = {0};
    buf_printf(&o, "{\"line\":%ld,\"error\":", line);
    json_text(&o, msg);
    buf_puts(&o, "}\n");
    fwrite(o.data, 1, o.len, stdout);
    buf_free(&o);
}

/* Stack of the reader host: [parse] -> [parse] ; evaluates one line into r (strings copied
 * into *store, freed by the caller). */
static bool parse_line(struct lua_host *h, const char *line, size_t len, struct record *r,
                       struct buf *store, struct record_header **hdrs, char **err)
{
    lua_State *L = lua_host_state(h);
    lua_pushvalue(L, -1);
    lua_pushlstring(L, line, len);
    if (!lua_host_pcall(h, 1, 7, err)) return false;
    /* copy everything out of the Lua stack: [.., topic, part, off, key, raw, names, values] */
    size_t n;
    const char *s;
    struct {
        size_t topic, key, raw;
        size_t topic_len, key_len, raw_len;
    } at = {0};
    buf_reset(store);
    s = lua_tolstring(L, -7, &n);
    at.topic = store->len;
    at.topic_len = n;
    buf_append(store, s, n);
    buf_putc(store, '\0');
    r->partition = (int32_t)lua_tointeger(L, -6);
    r->offset = lua_tointeger(L, -5);
    bool has_key = lua_type(L, -4) == LUA_TSTRING;
    if (has_key) {
        s = lua_tolstring(L, -4, &n);
        at.key = store->len;
        at.key_len = n;
        buf_append(store, s, n);
        buf_putc(store, '\0');
    }
    s = lua_tolstring(L, -3, &n);
    at.raw = store->len;
    at.raw_len = n;
    buf_append(store, s, n);
    buf_putc(store, '\0');
    lua_Integer nh = (lua_Integer)lua_rawlen(L, -2);
    size_t *offs = xcalloc((size_t)nh * 3 + 1, sizeof(size_t));
    for (lua_Integer i = 1; i <= nh; i++) {
        lua_rawgeti(L, -2, i);
        s = lua_tolstring(L, -1, &n);
        offs[(i - 1) * 3] = store->len;
        buf_append(store, s, n);
        buf_putc(store, '\0');
        lua_pop(L, 1);
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) == LUA_TSTRING) {
            s = lua_tolstring(L, -1, &n);
            offs[(i - 1) * 3 + 1] = store->len;
            offs[(i - 1) * 3 + 2] = n + 1; /* +1: 0 means a null value */
            buf_append(store, s, n);
            buf_putc(store, '\0');
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 7);
    /* the store no longer moves: point into it */
    r->topic = store->data + at.topic;
    r->key = has_key ? store->data + at.key : NULL;
    r->key_len = at.key_len;
    r->value = store->data + at.raw;
    r->value_len = at.raw_len;
    r->timestamp_ms = -1;
    *hdrs = nh ? xcalloc((size_t)nh, sizeof **hdrs) : NULL;
    for (lua_Integer i = 0; i < nh; i++) {
        (*hdrs)[i].name = store->data + offs[i * 3];
        if (offs[i * 3 + 2]) {
            (*hdrs)[i].value = store->data + offs[i * 3 + 1];
            (*hdrs)[i].value_len = offs[i * 3 + 2] - 1;
        }
    }
    r->headers = *hdrs;
    r->nheaders = (size_t)nh;
    free(offs);
    return true;
}

int cli_policy_eval(const struct config *cfg, const char *events_file)
{
    FILE *f = strcmp(events_file, "-") == 0 ? stdin : fopen(events_file, "rb");
    if (!f) {
        fprintf(stderr, "eventsink: cannot open %s\n", events_file);
        return 2;
    }
    struct lua_host_limits lim = limits_of(cfg);
    char *err = NULL;
    struct policy_set *ps = policy_set_load(&cfg->policies, &lim, 1, &err);
    if (!ps) {
        fprintf(stderr, "%s\neventsink: the policies are invalid\n", err);
        free(err);
        if (f != stdin) fclose(f);
        return 2;
    }
    struct lua_host_limits rlim = {.max_memory_bytes = 256 << 20, .max_instructions = 0};
    struct lua_host *reader = lua_host_create(&rlim, LUA_HOST_POLICY, &err);
    const struct asset *a = asset_find("lua/eval.lua");
    if (!reader || !a || !lua_host_load(reader, a->data, a->len, "@lua/eval.lua", &err) ||
        !lua_host_pcall(reader, 0, 1, &err)) {
        fprintf(stderr, "eventsink: %s\n", err ? err : "lua/eval.lua is missing");
        free(err);
        lua_host_destroy(reader);
        policy_set_destroy(ps);
        if (f != stdin) fclose(f);
        return 1;
    }
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    struct buf store = {0};
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0) continue;
        struct record r = {0};
        struct record_header *hdrs = NULL;
        if (!parse_line(reader, line, (size_t)len, &r, &store, &hdrs, &err)) {
            print_line_error(lineno, err);
            free(err);
            err = NULL;
            rc = 2;
            continue;
        }
        bool is_object;
        char *detail = NULL;
        const char *bad =
            record_check(&r, (size_t)cfg->kafka.max_message_bytes, &is_object, &detail);
        struct decision d;
        policy_decide(ps, &r, bad, detail, &d);
        print_decision(lineno, &r, &d);
        decision_clear(&d);
        free(hdrs);
    }
    buf_free(&store);
    free(line);
    lua_host_destroy(reader);
    policy_set_destroy(ps);
    if (f != stdin) fclose(f);
    return rc;
}
