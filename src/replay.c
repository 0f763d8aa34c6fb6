#include "replay.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db_rows.h"
#include "json.h"
#include "jsonv.h"
#include "log.h"
#include "metrics.h"
#include "pgarray.h"
#include "record.h"
#include "replay_auth.h"
#include "replay_sql.h"

#define RECORD_EVERY_MS 200 /* outcomes are written as their answers arrive, this often */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* hex text -> bytes appended to out; false on bad input */
static bool unhex(const char *h, size_t n, struct buf *out)
{
    if (n % 2) return false;
    buf_reserve(out, n / 2);
    for (size_t i = 0; i < n; i += 2) {
        int a = hexval(h[i]), b = hexval(h[i + 1]);
        if (a < 0 || b < 0) return false;
        out->data[out->len++] = (char)(a * 16 + b);
    }
    out->data[out->len] = '\0';
    return true;
}

/* Appends raw (a JSON object) to out with the markers added before its closing brace:
 * `from_key` (the id of what is replayed), _replay_source and _replay_job_id. */
static bool mark_payload(const char *raw, size_t len, const char *from_key, int64_t from_id,
                         const char *tag, int64_t job_id, struct buf *out)
{
    struct json_info info;
    if (json_check(raw, len, &info) != JSON_OK || !info.is_object) return false;
    size_t close = len;
    while (close > 0 && raw[close - 1] != '}')
        close--;
    if (close == 0) return false;
    close--; /* index of the final '}' */
    size_t open = 0;
    while (open < close && raw[open] != '{')
        open++;
    bool empty = true;
    for (size_t i = open + 1; i < close && empty; i++)
        empty = raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r';
    buf_append(out, raw, close);
    buf_printf(out, "%s\"%s\":%" PRId64 ",\"_replay_source\":", empty ? "" : ",", from_key,
               from_id);
    json_write_cstr(out, tag);
    buf_printf(out, ",\"_replay_job_id\":%" PRId64 "}", job_id);
    return true;
}

bool replay_mark_dlq_payload(const char *raw, size_t len, int64_t dlq_id, const char *tag,
                             int64_t job_id, struct buf *out)
{
    return mark_payload(raw, len, "_replayed_from_dlq_id", dlq_id, tag, job_id, out);
}

struct item {
    int seq;
    struct delivery *d; /* while queued */
    bool queued;
    bool recorded; /* its outcome is written */
    char *error;   /* refused before it was produced (nothing went to Kafka) */
    char *topic;
};

/* Appends one header (name, and value or NULL) to store/offs: offs holds, per header, the
 * offset of the name, of the value (SIZE_MAX for a null value) and the value's length. */
static void add_header(struct buf *store, size_t **offs, size_t *n, size_t *cap, const char *name,
                       const char *val, size_t len)
{
    if (*n + 1 > *cap) {
        *cap = *cap ? *cap * 2 : 8;
        *offs = xrealloc(*offs, *cap * 3 * sizeof(size_t));
    }
    size_t name_at = store->len;
    buf_append(store, name, strlen(name));
    buf_putc(store, '\0');
    size_t val_at = SIZE_MAX, val_len = 0;
    if (val) {
        val_at = store->len;
        /* "\x<hex>" is how record_text() keeps bytes that are not UTF-8 text */
        if (!record_text_is_hex(val, len) || !unhex(val + 2, len - 2, store)) {
            store->len = val_at;
            buf_append(store, val, len);
        }
        val_len = store->len - val_at;
        buf_putc(store, '\0');
    }
    (*offs)[*n * 3] = name_at;
    (*offs)[*n * 3 + 1] = val_at;
    (*offs)[*n * 3 + 2] = val_len;
    (*n)++;
}

/* One header value of the journal's headers object: a string (maybe "\x<hex>"), null, or
 * (not written by the service, accepted) another scalar as its JSON text. */
static void add_header_value(struct buf *store, size_t **offs, size_t *n, size_t *cap,
                             const char *name, const struct jsonv *v)
{
    char num[64];
    switch (v ? v->type : JV_NULL) {
    case JV_STRING:
        add_header(store, offs, n, cap, name, v->str, v->len);
        break;
    case JV_BOOL:
        add_header(store, offs, n, cap, name, v->b ? "true" : "false", v->b ? 4 : 5);
        break;
    case JV_NUMBER:
        if (v->is_int)
            snprintf(num, sizeof num, "%" PRId64, v->i);
        else
            snprintf(num, sizeof num, "%.17g", v->num);
        add_header(store, offs, n, cap, name, num, strlen(num));
        break;
    default: /* null, or a nested value */
        add_header(store, offs, n, cap, name, NULL, 0);
        break;
    }
}

/* The journal's headers (jsonb as text: {"name": value or [values]}) to the list produced
 * again, without the old x-replay-* markers (new ones are added). */
static size_t parse_headers(const char *json, size_t len, struct buf *store, size_t **offs)
{
    size_t n = 0, cap = 0;
    *offs = NULL;
    if (!json) return 0;
    const char *perr = NULL;
    size_t at = 0;
    struct jsonv *v = jsonv_parse(json, len, &perr, &at);
    if (v && v->type == JV_OBJECT) {
        for (size_t i = 0; i < v->n; i++) {
            const char *name = v->keys[i];
            if (strncmp(name, "x-replay", 8) == 0) continue;
            const struct jsonv *val = &v->items[i];
            if (val->type != JV_ARRAY) {
                add_header_value(store, offs, &n, &cap, name, val);
            } else if (val->n == 0) {
                add_header_value(store, offs, &n, &cap, name, NULL);
            } else {
                for (size_t k = 0; k < val->n; k++)
                    add_header_value(store, offs, &n, &cap, name, &val->items[k]);
            }
        }
    }
    jsonv_free(v);
    return n;
}

/* Items whose produce may have been written (no definite answer from Kafka: a timeout in
 * flight, or the service stopped before the answer) stay pending with an error. Before
 * they are produced again, the journal is asked: the replay that landed counts as sent,
 * with its position. What is not there is produced again; should the first copy land
 * too, the journal keeps one (SQL_JOURNAL_ROWS, `dup`). */
static bool resolve_unknown(struct pg_conn *c, const char *job, struct replay_outcome *out,
                            char **err)
{
    const char *p[] = {job};
    struct db_error e;
    struct db_rows *res = db_rows_exec(c, SQL_REPLAY_ITEMS_FOUND, 1, p, &e);
    bool ok = res != NULL;
    if (!ok) {
        struct buf m = {0};
        buf_printf(&m, "checking job %s's unanswered items against the journal: %s", job,
                   e.message);
        *err = m.data;
    } else if (db_rows_count(res) == 1) {
        out->sent += atoi(db_rows_text(res, 0, 0));
    }
    db_rows_free(res);
    return ok;
}

/* The outcomes to write now: each queued item Kafka has answered (sent, or failed when
 * Kafka did not write it, or unknown when it may have), each item refused before it was
 * produced, and (final) each item still unanswered, as unknown. */
struct outcomes {
    struct pgarray seqs, statuses, errors, topics, parts, offsets;
    int n;
};

static void outcome_add(struct outcomes *o, int seq, const char *status, const char *error,
                        const char *topic, const struct produce_result *res)
{
    pgarray_int(&o->seqs, seq);
    pgarray_cstr(&o->statuses, status);
    pgarray_cstr(&o->errors, error);
    pgarray_cstr(&o->topics, topic);
    if (res) {
        pgarray_int(&o->parts, res->partition);
        pgarray_int(&o->offsets, res->offset);
    } else {
        pgarray_str(&o->parts, NULL, 0);
        pgarray_str(&o->offsets, NULL, 0);
    }
    o->n++;
}

static void outcomes_free(struct outcomes *o)
{
    pgarray_free(&o->seqs);
    pgarray_free(&o->statuses);
    pgarray_free(&o->errors);
    pgarray_free(&o->topics);
    pgarray_free(&o->parts);
    pgarray_free(&o->offsets);
}

static void collect(struct producer *prod, struct item *items, int rows, bool final,
                    struct outcomes *o, struct replay_outcome *out)
{
    char why[300];
    for (int r = 0; r < rows; r++) {
        struct item *it = &items[r];
        if (it->recorded) continue;
        struct produce_result res = {0};
        if (it->queued) producer_result(prod, it->d, &res);
        if (it->queued && !res.done && !final) continue;
        it->recorded = true;
        if (!it->queued) {
            outcome_add(o, it->seq, "failed", it->error, it->topic, NULL);
            out->failed++;
            snprintf(out->error, sizeof out->error, "%s", it->error ? it->error : "failed");
        } else if (res.done && !res.err) {
            outcome_add(o, it->seq, "sent", NULL, it->topic, &res);
            out->sent++;
            snprintf(out->topic, sizeof out->topic, "%s", it->topic);
            out->partition = res.partition;
            out->offset = res.offset;
        } else if (res.done && !res.possibly_persisted) {
            outcome_add(o, it->seq, "failed", producer_err_str(res.err), it->topic, NULL);
            out->failed++;
            snprintf(out->error, sizeof out->error, "%s", producer_err_str(res.err));
        } else {
            snprintf(why, sizeof why,
                     "Kafka may have written it (%s): checked against the journal before it "
                     "is produced again",
                     res.done ? producer_err_str(res.err) : "no answer yet");
            outcome_add(o, it->seq, "pending", why, it->topic, NULL);
            out->unknown++;
            snprintf(out->error, sizeof out->error, "%.250s", why);
        }
    }
}

static bool write_outcomes(struct pg_conn *c, const char *job, struct outcomes *o, char **err)
{
    if (!o->n) return true;
    const char *p[] = {job,
                       pgarray_text(&o->seqs),
                       pgarray_text(&o->statuses),
                       pgarray_text(&o->errors),
                       pgarray_text(&o->topics),
                       pgarray_text(&o->parts),
                       pgarray_text(&o->offsets)};
    struct db_error e;
    struct db_rows *res = db_rows_exec(c, SQL_REPLAY_ITEMS_DONE, 7, p, &e);
    bool ok = res != NULL;
    if (!ok) {
        struct buf m = {0};
        buf_printf(&m, "recording the outcome of job %s: %s", job, e.message);
        *err = m.data;
    }
    db_rows_free(res);
    outcomes_free(o);
    memset(o, 0, sizeof *o);
    return ok;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for Kafka's answers, writing each item's outcome as it arrives (at most
 * RECORD_EVERY_MS late): a crash then produces again at most what had no answer yet. The
 * wait ends when all are answered, when the service stops, or once librdkafka's own bound
 * has passed; what has no answer then is unknown (collect). */
static bool await_outcomes(struct pg_conn *c, struct replay_env *env, const char *job,
                           struct item *items, int rows, const atomic_bool *abort,
                           struct replay_outcome *out, char **err)
{
    struct delivery **ds = xcalloc((size_t)rows, sizeof *ds);
    size_t nq = 0;
    for (int r = 0; r < rows; r++)
        if (items[r].queued) ds[nq++] = items[r].d;
    int64_t deadline = mono_ms() + producer_answer_bound_ms(env->producer);
    struct outcomes o = {0};
    bool ok = true, all = false;
    while (ok && !all) {
        all = producer_wait(env->producer, ds, nq, RECORD_EVERY_MS);
        bool final = all || (abort && atomic_load(abort)) || mono_ms() >= deadline;
        collect(env->producer, items, rows, final, &o, out);
        ok = write_outcomes(c, job, &o, err);
        all = all || final;
    }
    outcomes_free(&o);
    free(ds);
    return ok;
}

bool replay_run_chunk(struct pg_conn *c, struct replay_env *env, int64_t job_id, const char *tag,
                      int limit, const atomic_bool *abort, struct replay_outcome *out, char **err)
{
    memset(out, 0, sizeof *out);
    char job[24], lim[16];
    snprintf(job, sizeof job, "%" PRId64, job_id);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *pj[] = {job};
    db_rows_free(db_rows_exec(c, SQL_REPLAY_ITEMS_BACK, 1, pj, NULL)); /* retried next chunk */
    if (!resolve_unknown(c, job, out, err)) return false;
    const char *params[] = {job, lim, tag};
    struct db_error e;
    struct db_rows *res = db_rows_exec(c, SQL_REPLAY_ITEMS, 3, params, &e);
    if (!res) {
        struct buf m = {0};
        buf_printf(&m, "reading the job's items: %s", e.message);
        *err = m.data;
        return false;
    }
    int rows = db_rows_count(res);
    if (rows == 0) {
        db_rows_free(res);
        out->nothing_pending = true;
        return true;
    }
    struct item *items = xcalloc((size_t)rows, sizeof *items);
    struct buf body = {0}, store = {0};
    struct pgarray dlq_ids = {0};
    for (int r = 0; r < rows; r++)
        if (!db_rows_null(res, r, 2) && db_rows_text(res, r, 9)[0] != 't')
            pgarray_int(&dlq_ids, strtoll(db_rows_text(res, r, 2), NULL, 10));
    if (dlq_ids.n) {
        const char *pd[] = {pgarray_text(&dlq_ids)};
        db_rows_free(db_rows_exec(c, SQL_DLQ_MARK_RETRYING, 1, pd, NULL));
    }
    pgarray_free(&dlq_ids);
    for (int r = 0; r < rows; r++) {
        struct item *it = &items[r];
        it->seq = atoi(db_rows_text(res, r, 0));
        bool unknown = db_rows_text(res, r, 9)[0] == 't';
        bool from_dlq = !db_rows_null(res, r, 2);
        if (unknown) {
            it->error = xstrdup(from_dlq ? "no such DLQ entry" : "no such event");
            continue;
        }
        const char *topic = db_rows_text(res, r, 3);
        it->topic = xstrdup(topic);
        if (from_dlq && strcmp(db_rows_text(res, r, 10), "pending") != 0 &&
            strcmp(db_rows_text(res, r, 10), "retrying") != 0) {
            struct buf m = {0};
            buf_printf(&m, "DLQ entry %s is %s", db_rows_text(res, r, 2), db_rows_text(res, r, 10));
            it->error = m.data;
            continue;
        }
        if (!from_dlq && !db_rows_null(res, r, 8) &&
            atol(db_rows_text(res, r, 8)) + 1 > env->cfg->replay.max_depth) {
            struct buf m = {0};
            buf_printf(&m, "replay depth %ld would exceed replay.max_depth (%ld)",
                       atol(db_rows_text(res, r, 8)) + 1, env->cfg->replay.max_depth);
            it->error = m.data;
            continue;
        }
        buf_reset(&store);
        /* key */
        bool has_key = !db_rows_null(res, r, 4);
        size_t key_at = 0, key_len = 0;
        if (has_key) {
            key_at = store.len;
            unhex(db_rows_text(res, r, 4), db_rows_len(res, r, 4), &store);
            key_len = store.len - key_at;
            buf_putc(&store, '\0');
        }
        size_t *offs = NULL;
        size_t nh = parse_headers(db_rows_null(res, r, 5) ? NULL : db_rows_text(res, r, 5),
                                  db_rows_len(res, r, 5), &store, &offs);
        /* marker headers */
        char idtext[24], jobtext[24];
        snprintf(idtext, sizeof idtext, "%s", db_rows_text(res, r, from_dlq ? 2 : 1));
        snprintf(jobtext, sizeof jobtext, "%" PRId64, job_id);
        struct record_header *hdrs = xcalloc(nh + 4, sizeof *hdrs);
        for (size_t i = 0; i < nh; i++) {
            hdrs[i].name = store.data + offs[i * 3];
            if (offs[i * 3 + 1] != SIZE_MAX) {
                hdrs[i].value = store.data + offs[i * 3 + 1];
                hdrs[i].value_len = offs[i * 3 + 2];
            }
        }
        free(offs);
        hdrs[nh++] =
            (struct record_header){from_dlq ? "x-replayed-from-dlq-id" : "x-replayed-from-event-id",
                                   idtext, strlen(idtext)};
        hdrs[nh++] = (struct record_header){"x-replay-source", tag, strlen(tag)};
        hdrs[nh++] = (struct record_header){"x-replay-job-id", jobtext, strlen(jobtext)};
        /* the signature that gives these markers their authority (replay_auth.h) */
        char sig[REPLAY_SIG_MAX];
        if (replay_auth_sign(job_id, from_dlq, strtoll(idtext, NULL, 10), sig))
            hdrs[nh++] = (struct record_header){REPLAY_SIG_HEADER, sig, strlen(sig)};
        /* value */
        buf_reset(&body);
        if (from_dlq) {
            struct buf raw = {0};
            unhex(db_rows_text(res, r, 7), db_rows_len(res, r, 7), &raw);
            if (!replay_mark_dlq_payload(raw.data ? raw.data : "", raw.len,
                                         strtoll(idtext, NULL, 10), tag, job_id, &body)) {
                buf_reset(&body); /* not a JSON object: the markers travel in the headers */
                buf_append(&body, raw.data ? raw.data : "", raw.len);
            }
            buf_free(&raw);
        } else {
            /* an object without markers gets them here; one with older markers got them
             * replaced by PostgreSQL (jsonb ||), other values travel as they are */
            const char *v = db_rows_text(res, r, 6);
            size_t vlen = db_rows_len(res, r, 6);
            if (db_rows_text(res, r, 11)[0] != 't' ||
                !mark_payload(v, vlen, "_replayed_from_event_id", strtoll(idtext, NULL, 10), tag,
                              job_id, &body)) {
                buf_reset(&body);
                buf_append(&body, v, vlen);
            }
        }
        char *perr = NULL;
        it->queued =
            producer_send(env->producer, topic, has_key ? store.data + key_at : NULL, key_len,
                          body.data ? body.data : "", body.len, hdrs, nh, &it->d, &perr);
        if (!it->queued) it->error = perr;
        free(hdrs);
    }
    db_rows_free(res);
    buf_free(&body);
    buf_free(&store);

    bool ok = await_outcomes(c, env, job, items, rows, abort, out, err);
    metrics_replay(tag, "ok", (uint64_t)out->sent);
    metrics_replay(tag, "failed", (uint64_t)out->failed);
    metrics_replay(tag, "unknown", (uint64_t)out->unknown);
    for (int r = 0; r < rows; r++) {
        producer_release(items[r].d);
        free(items[r].error);
        free(items[r].topic);
    }
    free(items);
    out->nothing_pending = ok && rows < limit && !out->unknown;
    return ok;
}
