/* `eventsink jobs ...`, `dlq ...`, `reload` and `status` (CONTRACT 9.4). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "op.h"
#include "op_out.h"

#define NCOLS(a) (sizeof(a) / sizeof((a)[0]))

static const struct op_col job_cols[] = {
    {"id", "id", true},
    {"kind", "kind", false},
    {"status", "status", false},
    {"total", "total", true},
    {"succeeded", "succeeded", true},
    {"failed", "failed", true},
    {"pending", "pending", true},
    {"source", "replay_source", false},
    {"by", "requested_by", false},
    {"created", "created_at", false},
    {"reason", "reason", false},
};

static const struct op_col dlq_cols[] = {
    {"id", "id", true},
    {"created", "created_at", false},
    {"status", "status", false},
    {"reason", "reason", false},
    {"tenant", "tenant_id", false},
    {"type", "event_type", false},
    {"topic", "topic", false},
    {"part", "kafka_partition", true},
    {"offset", "kafka_offset", true},
    {"attempts", "attempts", true},
    {"error", "error", false},
};

/* GET or POST path; prints the answer as JSON, or as a table of `list`'s rows, or as
 * fields. */
static int show(struct op_ctx *ctx, const char *method, const char *path, const char *list,
                const struct op_col *cols, size_t ncols)
{
    struct jsonv *v = NULL;
    int rc = op_call(ctx, method, path, strcmp(method, "POST") == 0 ? "{}" : NULL, &v);
    if (rc) return rc;
    if (!op_print_json(ctx)) {
        if (list)
            op_table(stdout, jsonv_get(v, list), cols, ncols);
        else
            op_fields(stdout, v);
    }
    jsonv_free(v);
    return OP_OK;
}

int op_jobs(struct op_ctx *ctx, const char *sub)
{
    if (!sub) return op_usage("`jobs` needs list, show J, watch J or cancel J");
    bool list = strcmp(sub, "list") == 0;
    if (!list && (ctx->o.status || ctx->o.limit))
        return op_usage("--status and --limit are options of `jobs list`");
    if (ctx->o.timeout && strcmp(sub, "watch") != 0)
        return op_usage("--timeout is an option of `jobs watch`");
    if (list) {
        if (ctx->nargs) return op_usage("`jobs list` takes options, not \"%s\"", ctx->args[0]);
        struct buf path = {0};
        buf_puts(&path, "/replay/jobs");
        op_query_add(&path, "status", ctx->o.status);
        op_query_add(&path, "limit", ctx->o.limit);
        int rc = show(ctx, "GET", path.data, "jobs", job_cols, NCOLS(job_cols));
        buf_free(&path);
        return rc;
    }
    char what[32];
    snprintf(what, sizeof what, "jobs %s", sub);
    if (strcmp(sub, "show") != 0 && strcmp(sub, "watch") != 0 && strcmp(sub, "cancel") != 0)
        return op_usage("`jobs` needs list, show J, watch J or cancel J, not \"%s\"", sub);
    int64_t id = op_one_id(ctx, what);
    if (!id) return OP_USAGE;
    if (strcmp(sub, "watch") == 0) return op_watch_job(ctx, id);
    char path[80];
    snprintf(path, sizeof path, "/replay/jobs/%" PRId64 "%s", id,
             strcmp(sub, "cancel") == 0 ? "/cancel" : "");
    return show(ctx, strcmp(sub, "cancel") == 0 ? "POST" : "GET", path, NULL, NULL, 0);
}

/* ---- the dead-letter queue --------------------------------------------------------------- */

static int dlq_list(struct op_ctx *ctx)
{
    if (ctx->nargs) return op_usage("`dlq list` takes options, not \"%s\"", ctx->args[0]);
    struct op_opts *o = &ctx->o;
    struct buf path = {0};
    buf_puts(&path, "/dlq");
    op_query_add(&path, "status", o->status);
    op_query_add(&path, "reason", o->reason);
    op_query_add(&path, "topic", o->topic);
    op_query_add(&path, "tenant", o->tenant);
    op_query_add(&path, "limit", o->limit);
    op_query_add(&path, "before_id", o->before_id);
    int rc = show(ctx, "GET", path.data, "entries", dlq_cols, NCOLS(dlq_cols));
    buf_free(&path);
    return rc;
}

static int dlq_retry(struct op_ctx *ctx)
{
    struct op_opts *o = &ctx->o;
    int64_t id = 0;
    if (ctx->nargs) {
        if (!(id = op_one_id(ctx, "dlq retry"))) return OP_USAGE;
        if (o->reason || o->topic || o->tenant || o->rate)
            return op_usage("`dlq retry ID` retries one entry: --reason, --topic, --tenant and "
                            "--rate choose entries for `dlq retry --reason R`");
    } else if (!o->reason && !o->topic && !o->tenant) {
        return op_usage("`dlq retry` needs an entry id, or --reason R (and/or --topic, "
                        "--tenant) to retry every pending entry that matches");
    }
    struct buf body = {0};
    buf_putc(&body, '{');
    char path[80] = "/dlq/retry";
    if (id) {
        snprintf(path, sizeof path, "/dlq/%" PRId64 "/retry", id);
        op_json_member(&body, "reason", o->why, false); /* the audit reason of one retry */
    } else {
        op_json_member(&body, "reason", o->reason, false);
        op_json_member(&body, "topic", o->topic, false);
        op_json_member(&body, "tenant", o->tenant, false);
        op_json_member(&body, "why", o->why, false);
        op_json_member(&body, "rate_per_s", o->rate, true);
    }
    buf_putc(&body, '}');
    struct jsonv *v = NULL;
    int rc = op_call(ctx, "POST", path, body.data, &v);
    buf_free(&body);
    if (!rc) rc = op_follow_job(ctx, v, "DLQ retry", NULL);
    jsonv_free(v);
    return rc;
}

int op_dlq(struct op_ctx *ctx, const char *sub)
{
    if (!sub) return op_usage("`dlq` needs list, show ID, retry or discard ID");
    struct op_opts *o = &ctx->o;
    bool retry = strcmp(sub, "retry") == 0, list = strcmp(sub, "list") == 0;
    if (!list && (o->status || o->limit || o->before_id))
        return op_usage("--status, --limit and --before-id are options of `dlq list`");
    if (!retry && (o->why || o->rate || o->wait || o->timeout))
        return op_usage("--why, --rate, --wait and --timeout are options of `dlq retry`");
    if (!retry && !list && (o->reason || o->topic || o->tenant))
        return op_usage("`dlq %s` takes an entry id, not filters", sub);
    if (list) return dlq_list(ctx);
    if (retry) {
        return dlq_retry(ctx); /* --rate and --timeout: checked in op_main.c check_words */
    }
    if (strcmp(sub, "show") != 0 && strcmp(sub, "discard") != 0)
        return op_usage("`dlq` needs list, show ID, retry or discard ID, not \"%s\"", sub);
    char what[32];
    snprintf(what, sizeof what, "dlq %s", sub);
    int64_t id = op_one_id(ctx, what);
    if (!id) return OP_USAGE;
    char path[80];
    snprintf(path, sizeof path, "/dlq/%" PRId64 "%s", id,
             strcmp(sub, "discard") == 0 ? "/discard" : "");
    return show(ctx, strcmp(sub, "discard") == 0 ? "POST" : "GET", path, NULL, NULL, 0);
}

/* ---- reload and status ------------------------------------------------------------------ */

int op_reload(struct op_ctx *ctx)
{
    struct jsonv *v = NULL;
    int rc = op_call(ctx, "POST", "/admin/reload", "{}", &v);
    if (rc) return rc;
    if (!op_print_json(ctx)) {
        const struct jsonv *ver = jsonv_get(v, "policy_version");
        printf("policies reloaded: version %" PRId64 "\n", ver && ver->is_int ? ver->i : 0);
        const struct jsonv *rn = jsonv_get(v, "restart_needed");
        if (rn && rn->type == JV_ARRAY && rn->n) {
            struct buf t = {0};
            for (size_t i = 0; i < rn->n; i++) {
                if (i) buf_puts(&t, ", ");
                op_value_text(&rn->items[i], &t);
            }
            printf("changed in the configuration file, taken at the next restart: %s\n",
                   buf_cstr(&t));
            buf_free(&t);
        }
    }
    jsonv_free(v);
    return OP_OK;
}

static void print_status(const struct jsonv *v)
{
    const struct jsonv *h = jsonv_get(v, "health");
    struct buf t = {0};
    op_value_text(op_member(h, "status"), &t);
    printf("service     %s", buf_cstr(&t));
    const struct jsonv *st = jsonv_get(h, "stalled");
    if (st && st->type == JV_ARRAY && st->n) {
        buf_reset(&t);
        op_value_text(st, &t);
        printf(" %s", buf_cstr(&t));
    }
    buf_reset(&t);
    op_value_text(op_member(h, "postgres"), &t);
    printf("\npostgres    %s\n", buf_cstr(&t));
    buf_reset(&t);
    op_value_text(op_member(h, "kafka"), &t);
    printf("kafka       %s\n", buf_cstr(&t));
    printf("policies    version %" PRId64 "\n", op_int(v, "health.policy_version"));
    printf("events      %" PRId64 " original, %" PRId64 " replayed in the last %" PRId64 " s\n",
           op_int(v, "events.original"), op_int(v, "events.replayed"), op_int(v, "window_s"));
    printf("journal     latest id %" PRId64 "\n", op_int(v, "journal.latest_id"));
    printf("jobs        %" PRId64 " running or pending\n", op_int(v, "jobs.active"));
    const struct jsonv *dlq = jsonv_get(v, "dlq");
    int64_t pending = 0;
    for (size_t i = 0; dlq && dlq->type == JV_ARRAY && i < dlq->n; i++) {
        const struct jsonv *s = jsonv_get(&dlq->items[i], "status");
        if (s && s->type == JV_STRING && strcmp(s->str, "pending") == 0)
            pending += op_int(&dlq->items[i], "count");
    }
    printf("dlq         %" PRId64 " pending\n", pending);
    static const struct op_col cols[] = {
        {"reason", "reason", false}, {"status", "status", false}, {"entries", "count", true}};
    if (dlq && dlq->type == JV_ARRAY && dlq->n) op_table(stdout, dlq, cols, NCOLS(cols));
    buf_free(&t);
}

int op_status(struct op_ctx *ctx)
{
    struct jsonv *v = NULL;
    int rc = op_call(ctx, "GET", "/stats", NULL, &v);
    if (rc) return rc;
    if (!op_print_json(ctx)) print_status(v);
    const struct jsonv *s = op_member(v, "health.status");
    bool ok = s && s->type == JV_STRING && strcmp(s->str, "ok") == 0;
    jsonv_free(v);
    (void)ok; /* a stalled service is reported, not an error of the command */
    return OP_OK;
}
