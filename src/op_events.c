/* `eventsink events ...` and `eventsink replay ...` (CONTRACT 9.4). */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "op.h"
#include "op_out.h"

static const struct op_col event_cols[] = {
    {"id", "id", true},
    {"received", "received_at", false},
    {"tenant", "tenant_id", false},
    {"type", "event_type", false},
    {"topic", "topic", false},
    {"part", "kafka_partition", true},
    {"offset", "kafka_offset", true},
    {"depth", "replay_count", true},
    {"source", "replay_source", false},
    {"from", "replayed_from_event_id", true},
    {"job", "replay_job_id", true},
};
#define NCOLS(a) (sizeof(a) / sizeof((a)[0]))

/* --since/--until: ISO 8601 as it is, or a duration ago. */
static const char *time_arg(const char *v, char *iso)
{
    int64_t s;
    if (v && op_parse_duration(v, &s)) {
        op_iso_ago(s, iso);
        return iso;
    }
    return v;
}

static int64_t last_id(const struct jsonv *list)
{
    if (!list || list->type != JV_ARRAY || !list->n) return 0;
    const struct jsonv *id = jsonv_get(&list->items[list->n - 1], "id");
    return id && id->is_int ? id->i : 0;
}

static int events_latest(struct op_ctx *ctx)
{
    struct op_opts *o = &ctx->o;
    if (o->replayed && o->originals)
        return op_usage("--replayed and --originals exclude each other");
    char since[32], until[32];
    struct buf path = {0};
    buf_puts(&path, "/events/latest");
    op_query_add(&path, "limit", o->limit);
    op_query_add(&path, "tenant", o->tenant);
    op_query_add(&path, "topic", o->topic);
    op_query_add(&path, "event_type", o->event_type);
    op_query_add(&path, "replayed", o->replayed ? "true" : o->originals ? "false" : NULL);
    op_query_add(&path, "before_id", o->before_id);
    op_query_add(&path, "since", time_arg(o->since, since));
    op_query_add(&path, "until", time_arg(o->until, until));
    struct jsonv *v = NULL;
    int rc = op_call(ctx, "GET", path.data, NULL, &v);
    buf_free(&path);
    if (rc) return rc;
    if (!op_print_json(ctx)) {
        const struct jsonv *list = jsonv_get(v, "events");
        op_table(stdout, list, event_cols, NCOLS(event_cols));
        size_t limit = o->limit ? (size_t)atol(o->limit) : 20;
        if (list && list->n && list->n >= limit)
            fprintf(stderr, "older: add --before-id %" PRId64 "\n", last_id(list));
    }
    jsonv_free(v);
    return OP_OK;
}

static int one_event(struct op_ctx *ctx, const char *what)
{
    char cmd[32];
    snprintf(cmd, sizeof cmd, "events %s", what);
    int64_t id = op_one_id(ctx, cmd);
    if (!id) return OP_USAGE;
    char path[80];
    snprintf(path, sizeof path, "/events/%" PRId64 "%s", id,
             strcmp(what, "lineage") == 0 ? "/lineage" : "");
    struct jsonv *v = NULL;
    int rc = op_call(ctx, "GET", path, NULL, &v);
    if (rc) return rc;
    if (!op_print_json(ctx)) {
        if (strcmp(what, "get") == 0) {
            op_fields(stdout, v);
        } else {
            static const struct op_col lin_cols[] = {
                {"id", "id", true},
                {"received", "received_at", false},
                {"depth", "replay_count", true},
                {"source", "replay_source", false},
                {"from", "replayed_from_event_id", true},
                {"job", "replay_job_id", true},
                {"dlq", "replayed_from_dlq_id", true},
            };
            printf("ancestors (root first):\n");
            int64_t gone = op_int(v, "ancestor_gone");
            if (gone)
                printf("(event %" PRId64 ", older, is no longer in the journal: retention)\n",
                       gone);
            op_table(stdout, jsonv_get(v, "ancestors"), lin_cols, NCOLS(lin_cols));
            printf("\nevent %" PRId64 ":\n", id);
            struct jsonv one = {
                .type = JV_ARRAY, .n = 1, .items = (struct jsonv *)jsonv_get(v, "event")};
            op_table(stdout, one.items ? &one : NULL, lin_cols, NCOLS(lin_cols));
            printf("\ndescendants:\n");
            op_table(stdout, jsonv_get(v, "descendants"), lin_cols, NCOLS(lin_cols));
        }
    }
    jsonv_free(v);
    return OP_OK;
}

int op_events(struct op_ctx *ctx, const char *sub)
{
    if (!sub) return op_usage("`events` needs latest, get ID or lineage ID");
    bool filters = ctx->o.limit || ctx->o.tenant || ctx->o.topic || ctx->o.event_type ||
                   ctx->o.replayed || ctx->o.originals || ctx->o.before_id || ctx->o.since ||
                   ctx->o.until;
    if (strcmp(sub, "latest") == 0) {
        if (ctx->nargs) return op_usage("`events latest` takes filters, not \"%s\"", ctx->args[0]);
        return events_latest(ctx);
    }
    if (strcmp(sub, "get") == 0 || strcmp(sub, "lineage") == 0) {
        if (filters) return op_usage("`events %s` takes no filters", sub);
        return one_event(ctx, sub);
    }
    return op_usage("`events` needs latest, get ID or lineage ID, not \"%s\"", sub);
}

/* ---- replay ------------------------------------------------------------------------------ */

static int post_job(struct op_ctx *ctx, const char *path, const char *body, const char *what)
{
    struct jsonv *v = NULL;
    int rc = op_call(ctx, "POST", path, body, &v);
    if (rc == OP_USAGE && strstr(ctx->err, "confirmation_required"))
        fprintf(stderr, "eventsink: add --confirm to replay them, or narrow the range\n");
    if (rc) return rc;
    rc = op_follow_job(ctx, v, what, "event(s)");
    jsonv_free(v);
    return rc;
}

/* ids separated by spaces, commas or newlines; false with the offending word printed */
static bool read_ids(FILE *f, struct buf *json, size_t *n)
{
    char word[32];
    size_t len = 0;
    int c;
    *n = 0;
    buf_putc(json, '[');
    do {
        c = fgetc(f);
        if (c == EOF || isspace(c) || c == ',' || c == '[' || c == ']') {
            if (!len) continue;
            word[len] = '\0';
            int64_t id;
            if (!op_parse_id(word, &id)) {
                op_usage("\"%s\" in the ids file is not a journal id", word);
                return false;
            }
            buf_printf(json, "%s%" PRId64, *n ? "," : "", id);
            (*n)++;
            len = 0;
        } else if (len + 1 < sizeof word) {
            word[len++] = (char)c;
        } else {
            word[len] = '\0';
            op_usage("\"%s...\" in the ids file is not a journal id", word);
            return false;
        }
    } while (c != EOF);
    buf_putc(json, ']');
    return true;
}

static int replay_batch_of(struct op_ctx *ctx, const char *ids_json)
{
    struct buf body = {0};
    buf_puts(&body, "{\"ids\":");
    buf_puts(&body, ids_json);
    op_json_member(&body, "reason", ctx->o.reason, false);
    op_json_member(&body, "rate_per_s", ctx->o.rate, true);
    buf_putc(&body, '}');
    int rc = post_job(ctx, "/replay/batch", body.data, "batch replay");
    buf_free(&body);
    return rc;
}

/* The options of a range, which a list of ids does not take. */
static bool range_options(const struct op_opts *o)
{
    return o->since || o->start || o->end || o->from_id || o->to_id || o->tenant || o->topic ||
           o->dry_run || o->confirm || o->include_replays;
}

static int replay_batch(struct op_ctx *ctx)
{
    if (range_options(&ctx->o))
        return op_usage("`replay batch` takes --ids-file, --reason, --rate and --wait (a range: "
                        "`replay range`)");
    if (!ctx->o.ids_file) return op_usage("`replay batch` needs --ids-file FILE");
    if (ctx->nargs) return op_usage("`replay batch` takes its ids from --ids-file");
    FILE *f = strcmp(ctx->o.ids_file, "-") == 0 ? stdin : fopen(ctx->o.ids_file, "r");
    if (!f) return op_usage("cannot read %s", ctx->o.ids_file);
    struct buf ids = {0};
    size_t n;
    bool ok = read_ids(f, &ids, &n);
    if (f != stdin) fclose(f);
    int rc = !ok ? OP_USAGE
             : n ? replay_batch_of(ctx, ids.data)
                 : op_usage("%s holds no journal id", ctx->o.ids_file);
    buf_free(&ids);
    return rc;
}

/* The range: exactly one of --since, --start/--end, --from-id/--to-id (the API also takes
 * times and ids together; the command keeps to one way of saying it). */
static int replay_range(struct op_ctx *ctx)
{
    struct op_opts *o = &ctx->o;
    if (ctx->nargs) return op_usage("`replay range` takes options, not \"%s\"", ctx->args[0]);
    if (o->ids_file) return op_usage("--ids-file goes with `replay batch`");
    int ways = !!o->since + !!(o->start || o->end) + !!(o->from_id || o->to_id);
    if (ways != 1)
        return op_usage("`replay range` needs one of --since DURATION, --start ISO --end ISO, "
                        "or --from-id N --to-id M");
    int64_t s, a, b;
    if (o->since && !op_parse_duration(o->since, &s))
        return op_usage("--since must be a duration such as 90s, 30m, 2h or 7d");
    if ((o->start || o->end) && !(o->start && o->end))
        return op_usage("--start and --end go together");
    if ((o->from_id || o->to_id) && !(op_parse_id(o->from_id, &a) && op_parse_id(o->to_id, &b)))
        return op_usage("--from-id and --to-id go together, as journal ids");
    char start[32], end[32];
    struct buf body = {0};
    buf_putc(&body, '{');
    if (o->since) { /* the last DURATION, up to now */
        op_iso_ago(s, start);
        op_iso_ago(-1, end); /* the end is exclusive: this second included */
        op_json_member(&body, "start", start, false);
        op_json_member(&body, "end", end, false);
    }
    op_json_member(&body, "start", o->start, false);
    op_json_member(&body, "end", o->end, false);
    op_json_member(&body, "from_id", o->from_id, true);
    op_json_member(&body, "to_id", o->to_id, true);
    op_json_member(&body, "tenant", o->tenant, false);
    op_json_member(&body, "topic", o->topic, false);
    op_json_member(&body, "reason", o->reason, false);
    op_json_member(&body, "rate_per_s", o->rate, true);
    if (o->include_replays) op_json_member(&body, "only_original", "false", true);
    if (o->dry_run) op_json_member(&body, "dry_run", "true", true);
    if (o->confirm) op_json_member(&body, "confirm", "true", true);
    buf_putc(&body, '}');
    int rc;
    if (o->dry_run) {
        struct jsonv *v = NULL;
        rc = op_call(ctx, "POST", "/replay/range", body.data, &v);
        if (!rc && !op_print_json(ctx)) {
            const struct jsonv *m = jsonv_get(v, "matched");
            printf("the range matches %" PRId64 " event(s); nothing was replayed (dry run)\n",
                   m && m->is_int ? m->i : 0);
        }
        jsonv_free(v);
    } else {
        rc = post_job(ctx, "/replay/range", body.data, "range replay");
    }
    buf_free(&body);
    return rc;
}

/* `replay ID...`: one id at once (POST /replay/{id}), several as one batch. */
static int replay_ids(struct op_ctx *ctx, const char *first)
{
    struct op_opts *o = &ctx->o;
    if (range_options(o) || o->ids_file)
        return op_usage(
            "`replay ID...` takes --reason, --rate and --wait (a range: `replay range`)");
    struct buf ids = {0};
    buf_putc(&ids, '[');
    for (int i = -1; i < ctx->nargs; i++) {
        const char *w = i < 0 ? first : ctx->args[i];
        int64_t id;
        if (!op_parse_id(w, &id)) {
            buf_free(&ids);
            return op_usage("\"%s\" is not a journal id", w);
        }
        buf_printf(&ids, "%s%" PRId64, i < 0 ? "" : ",", id);
    }
    buf_putc(&ids, ']');
    int rc;
    if (ctx->nargs == 0 && !o->rate) {
        char path[64];
        snprintf(path, sizeof path, "/replay/%s", first);
        struct buf body = {0};
        buf_putc(&body, '{');
        op_json_member(&body, "reason", o->reason, false);
        buf_putc(&body, '}');
        rc = post_job(ctx, path, body.data, "replay");
        buf_free(&body);
    } else {
        rc = replay_batch_of(ctx, ids.data);
    }
    buf_free(&ids);
    return rc;
}

int op_replay(struct op_ctx *ctx, const char *sub)
{
    if (!sub) return op_usage("`replay` needs ID..., batch or range");
    if (strcmp(sub, "batch") == 0) return replay_batch(ctx);
    if (strcmp(sub, "range") == 0) return replay_range(ctx);
    return replay_ids(ctx, sub);
}
