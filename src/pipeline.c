#include "pipeline.h"

#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "consumer.h"
#include "db.h"
#include "embedded.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "policy_ctl.h"
#include "producer.h"
#include "replay_worker.h"
#include "scheduler.h"
#include "shutdown_guard.h"
#include "status.h"
#include "record.h"
#include "reload.h"
#include "replay_auth.h"
#include "writer.h"

volatile sig_atomic_t pipeline_stop_requested = 0;

#define SHUTDOWN_FLUSH_MS 6000 /* SIGTERM: the contract allows 10 s in all */
#define SHUTDOWN_TOTAL_MS 8500
#define REVOKE_FLUSH_MS 5000
#define CANCEL_WAIT_MS 1500 /* a cancelled write comes back within this */
#define CONFLICT_TRIES 5
#define BACKOFF_MAX_MS 5000
#define IDLE_PING_MS 2000
#define LINGER_MS 5            /* a batch waits this long for more records when a writer is free */
#define COMMIT_INTERVAL_MS 100 /* offsets of written batches go to Kafka at most this often */

struct slot {
    rd_kafka_message_t *msg;
    struct record rec;
    struct record_header *headers;
};

/* The records of one transaction, and their decisions once taken. */
struct batch {
    struct slot *slots;
    size_t n, cap;
    struct batch_item *items;    /* items[i] decides slots[i], for i < ndecided */
    struct policy_input *inputs; /* what decide() hands the policies, icap of them */
    size_t ndecided, icap;
    int64_t started_ms; /* its first record arrived */
    int64_t write_ms;   /* handed to PostgreSQL */
};

#define MAX_LANES 8

/* A batch handed to a writer thread, and what it needs to write it. */
struct lane {
    struct batch b;
    struct writer *writer;
    struct writer_job job;
    struct db *db;  /* this lane's connection: its writer's while submitted */
    bool submitted; /* handed to the writer (else it failed before that: retried) */
    /* per partition, the lowest offset of this batch kept at a reused position (written by
     * the writer thread's callbacks, read once the write is done) */
    rd_kafka_topic_partition_list_t *reused;
};

struct pipeline {
    struct config *cfg;
    struct consumer *consumer;
    struct producer *producer;
    struct policy_ctl *ctl;
    struct db *db; /* migrations and the idle ping */
    struct policy_set *policies;
    int policy_version;

    struct batch cur; /* being gathered from Kafka */
    /* batches being written, oldest first from lanes[head]: each lane has a writer thread
     * and a connection of its own, so that up to batch.writers transactions run at once
     * while this thread polls and decides the next batch */
    struct lane lanes[MAX_LANES];
    int nlanes, head, count;
    rd_kafka_topic_partition_list_t *unsynced; /* committed asynchronously since commit_sync */
    rd_kafka_topic_partition_list_t *pending;  /* written, not yet sent to Kafka */
    int64_t last_commit_ms;
    rd_kafka_message_t **held; /* arrived while a flush waited for PostgreSQL */
    size_t nheld, capheld;

    int64_t keys_loaded_ms; /* the replay key ring was last read */
    bool flushing;          /* a flush is waiting for PostgreSQL */
    bool abandoned;         /* a rebalance took the partitions while the flush waited */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 0 while the service runs; after SIGTERM/SIGINT, when the writes in flight must be done
 * (fixed the first time it is asked, so that every wait of the shutdown shares it). */
static int64_t stop_deadline(void)
{
    static int64_t deadline;
    if (!pipeline_stop_requested) return 0;
    if (!deadline) deadline = now_ms() + SHUTDOWN_FLUSH_MS;
    return deadline;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !pipeline_stop_requested) {
    }
}

/* ---- the batch -------------------------------------------------------------------------- */

static void slot_fill(struct slot *s, rd_kafka_message_t *m)
{
    memset(s, 0, sizeof *s);
    s->msg = m;
    s->rec.topic = rd_kafka_topic_name(m->rkt);
    s->rec.partition = m->partition;
    s->rec.offset = m->offset;
    s->rec.key = m->key;
    s->rec.key_len = m->key_len;
    s->rec.value = m->payload;
    s->rec.value_len = m->len;
    rd_kafka_timestamp_type_t tstype;
    s->rec.timestamp_ms = rd_kafka_message_timestamp(m, &tstype);
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        size_t cnt = rd_kafka_header_cnt(hdrs);
        s->headers = xcalloc(cnt, sizeof *s->headers);
        for (size_t i = 0; i < cnt; i++) {
            const char *name;
            const void *val;
            size_t size;
            if (rd_kafka_header_get_all(hdrs, i, &name, &val, &size)) break;
            s->headers[i].name = name;
            s->headers[i].value = val;
            s->headers[i].value_len = size;
            s->rec.nheaders++;
        }
        s->rec.headers = s->headers;
    }
}

/* The record a partition was started at, one before its committed offset, when it is
 * stored already (position_check.h): a redelivery, dropped before the policies decide it
 * again (they may decide otherwise since a reload, and it would then be stored twice). */
static bool stored_check_record(struct pipeline *p, rd_kafka_message_t *m)
{
    if (p->flushing || !consumer_take_check(p->consumer, m)) return false;
    struct slot s;
    slot_fill(&s, m);
    int held = db_position_holds(p->db, &s.rec);
    free(s.headers);
    return held == 1;
}

static void add_message(struct pipeline *p, rd_kafka_message_t *m)
{
    if (stored_check_record(p, m)) {
        metrics_events_consumed(rd_kafka_topic_name(m->rkt), 1);
        rd_kafka_message_destroy(m);
        return;
    }
    if (p->flushing) {
        if (p->nheld == p->capheld) {
            p->capheld = p->capheld ? p->capheld * 2 : 64;
            p->held = xrealloc(p->held, p->capheld * sizeof *p->held);
        }
        p->held[p->nheld++] = m;
        return;
    }
    struct batch *b = &p->cur;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->slots = xrealloc(b->slots, b->cap * sizeof *b->slots);
    }
    if (b->n == 0) b->started_ms = now_ms();
    slot_fill(&b->slots[b->n++], m);
}

/* Gives the batch's messages back to librdkafka, and drops its decisions. */
static void batch_release(struct batch *b)
{
    for (size_t i = 0; i < b->ndecided; i++)
        decision_clear(&b->items[i].d);
    for (size_t i = 0; i < b->n; i++) {
        rd_kafka_message_destroy(b->slots[i].msg);
        free(b->slots[i].headers);
    }
    b->n = b->ndecided = 0;
}

static void batch_free(struct batch *b)
{
    batch_release(b);
    free(b->slots);
    free(b->items);
    free(b->inputs);
}

/* Messages that arrived while a flush waited for PostgreSQL join the batch being
 * gathered, after what it holds (they came later). */
static void take_held(struct pipeline *p)
{
    size_t nheld = p->nheld;
    p->nheld = 0;
    for (size_t i = 0; i < nheld; i++)
        add_message(p, p->held[i]);
}

/* m's offset into back, unless an earlier record of its partition set it. */
static void first_offset(rd_kafka_topic_partition_list_t *back, const rd_kafka_message_t *m)
{
    if (!rd_kafka_topic_partition_list_find(back, rd_kafka_topic_name(m->rkt), m->partition))
        rd_kafka_topic_partition_list_add(back, rd_kafka_topic_name(m->rkt), m->partition)->offset =
            m->offset;
}

static void first_offsets(const struct batch *b, rd_kafka_topic_partition_list_t *back)
{
    for (size_t i = 0; i < b->n; i++)
        first_offset(back, b->slots[i].msg);
}

static struct lane *lane_at(struct pipeline *p, int k)
{
    return &p->lanes[(p->head + k) % p->nlanes];
}

/* Drops every uncommitted record (the batches in flight, the one gathered, what is held)
 * without committing: Kafka delivers them again, to this instance (it seeks back) or to
 * whoever owns their partitions now (rows already written are skipped then). Each
 * partition's records are in consumption order across the lanes (oldest first), cur and
 * held, so the first one seen is the one to go back to. */
static void offsets_clear(rd_kafka_topic_partition_list_t **l);
static void await_writer(struct lane *l, int64_t deadline);

static void abandon_all(struct pipeline *p)
{
    rd_kafka_topic_partition_list_t *back = rd_kafka_topic_partition_list_new(16);
    size_t n = p->cur.n;
    for (int k = 0; k < p->count; k++) {
        struct lane *l = lane_at(p, k);
        if (l->submitted) await_writer(l, now_ms() + 200); /* dropped anyway: cancelled */
        l->submitted = false;
        free(l->job.err);
        l->job.err = NULL;
        offsets_clear(&l->reused); /* read again by whoever gets the records */
        first_offsets(&l->b, back);
        n += l->b.n;
    }
    first_offsets(&p->cur, back);
    for (size_t i = 0; i < p->nheld; i++) {
        first_offset(back, p->held[i]);
        rd_kafka_message_destroy(p->held[i]);
    }
    p->nheld = 0;
    if (n)
        log_warn("dropping %zu unwritten event(s) without committing: Kafka delivers them "
                 "again",
                 n);
    for (int k = 0; k < p->count; k++)
        batch_release(&lane_at(p, k)->b);
    p->count = 0;
    batch_release(&p->cur);
    consumer_seek(p->consumer, back);
    rd_kafka_topic_partition_list_destroy(back);
}

static bool ensure_conn(struct pipeline *p, struct db **db, char **err);

#define KEY_RELOAD_MS 5000 /* at most this often, when a record is signed with an unknown key */

/* Only markers that this deployment signed carry authority (replay_auth.h). A signature
 * by a key this instance has not loaded yet (rotated by another instance) reloads the
 * key ring, at most every KEY_RELOAD_MS. */
static void check_markers(struct pipeline *p, struct batch_item *it)
{
    struct decision saved = it->d; /* the ids, before an unverified check clears them */
    if (replay_auth_check(it->rec, &it->d) != REPLAY_AUTH_UNKNOWN_KEY) return;
    if (now_ms() - p->keys_loaded_ms < KEY_RELOAD_MS) return;
    p->keys_loaded_ms = now_ms();
    char *err = NULL;
    if (!ensure_conn(p, &p->db, &err) || !db_load_replay_keys(p->db, &err)) {
        log_warn("cannot reload the replay keys (%s); a replay signed with a new key counts as "
                 "unverified",
                 err);
        free(err);
        return;
    }
    it->d.replay_job_id = saved.replay_job_id;
    it->d.replayed_from_dlq_id = saved.replayed_from_dlq_id;
    replay_auth_check(it->rec, &it->d);
}

/* Checks and decides the records of b not yet decided (counted as consumed here). */
static void decide(struct pipeline *p, struct batch *b)
{
    if (b->ndecided == b->n) return;
    if (b->icap < b->cap) {
        b->icap = b->cap;
        b->items = xrealloc(b->items, b->icap * sizeof *b->items);
        b->inputs = xrealloc(b->inputs, b->icap * sizeof *b->inputs);
    }
    for (size_t i = b->ndecided; i < b->n; i++) {
        struct record *r = &b->slots[i].rec;
        struct batch_item *it = &b->items[i];
        struct policy_input *in = &b->inputs[i - b->ndecided];
        in->bad_detail = NULL;
        in->bad_reason = record_check(r, (size_t)p->cfg->kafka.max_message_bytes, &it->is_object,
                                      &in->bad_detail);
        in->rec = it->rec = r;
        in->out = &it->d;
    }
    /* one hand-over to the policy thread for the lot (its watchdog bounds every call) */
    policy_decide_batch(p->policies, b->inputs, b->n - b->ndecided);
    for (size_t i = b->ndecided; i < b->n; i++)
        check_markers(p, &b->items[i]);
    /* consumed, counted per topic (a batch rarely spans more than a few) */
    for (size_t i = b->ndecided; i < b->n;) {
        const char *t = b->slots[i].rec.topic;
        size_t j = i;
        while (j < b->n && strcmp(b->slots[j].rec.topic, t) == 0)
            j++;
        metrics_events_consumed(t, j - i);
        i = j;
    }
    b->ndecided = b->n;
}

static void publish_dead_letters(struct pipeline *p, const struct batch *b);

/* A record whose Kafka position held another record: the topic was created again, the
 * cluster replaced or the offsets reset. It was kept, at a new generation of the position;
 * its partition is read again once the batch is done (complete_oldest). */
static void warn_reused(struct lane *l, const char *topic, int32_t partition, int64_t offset,
                        const char *where)
{
    rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_find(l->reused, topic, partition);
    if (!e) {
        e = rd_kafka_topic_partition_list_add(l->reused, topic, partition);
        e->offset = offset;
    }
    if (offset < e->offset) e->offset = offset;
    metrics_offset_reuse(topic);
    log_warn("a record of %s arrived at a Kafka position that already holds another record "
             "(the topic was recreated, the cluster replaced or its offsets reset): kept it in "
             "the %s at a new generation of that position",
             topic, where);
}

static void on_persisted(void *opaque, const struct persisted_row *row)
{
    metrics_events_persisted(row->topic, row->source != NULL, 1);
    if (row->reused) warn_reused(opaque, row->topic, row->partition, row->offset, "journal");
    if (row->unlinked)
        log_warn("event %" PRId64 " (tenant %s) names event %" PRId64 " as the one it replays, "
                 "which does not exist or belongs to another tenant: journaled as a replay "
                 "without that link",
                 row->id, row->tenant, row->unlinked);
    if (!log_enabled(LOG_INFO)) return;
    const char *type = row->event_type ? row->event_type : "event";
    if (row->from_event)
        log_info("Persisted REPLAYED %s for tenant %s (from event %" PRId64 ")", type, row->tenant,
                 row->from_event);
    else if (row->from_dlq)
        log_info("Persisted REPLAYED %s for tenant %s (from DLQ entry %" PRId64 ")", type,
                 row->tenant, row->from_dlq);
    else if (row->source)
        log_info("Persisted REPLAYED %s for tenant %s", type, row->tenant);
    else
        log_info("Persisted %s for tenant %s", type, row->tenant);
}

static void on_dlq(void *opaque, const struct dlq_row *row)
{
    metrics_dlq_event(row->reason, 1);
    if (row->reused)
        warn_reused(opaque, row->topic, row->partition, row->offset, "dead-letter queue");
    if (row->retry)
        log_warn("DLQ entry %" PRId64 " was retried and failed again (%s); counted one more "
                 "attempt",
                 row->id, row->reason);
    else
        log_warn("Dead-lettered an event of tenant %s as %s (DLQ entry %" PRId64 ")%s%s",
                 row->tenant ? row->tenant : "(none)", row->reason, row->id,
                 row->detail ? ": " : "",
                 row->detail                                    ? row->detail
                 : strcmp(row->reason, "duplicate_replay") == 0 ? ": a second copy of a replay "
                                                                  "already in the journal, kept "
                                                                  "resolved"
                                                                : "");
}

static bool ensure_conn(struct pipeline *p, struct db **db, char **err)
{
    if (db_alive(*db)) return true;
    db_close(*db);
    *db = db_connect(p->cfg->postgres.dsn, "eventsink", err);
    return *db != NULL;
}

/* Raises each partition's offset in `into` to the next one after b's records. */
static void merge_offsets(rd_kafka_topic_partition_list_t *into, const struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        rd_kafka_message_t *m = b->slots[i].msg;
        rd_kafka_topic_partition_t *e =
            rd_kafka_topic_partition_list_find(into, rd_kafka_topic_name(m->rkt), m->partition);
        if (!e) {
            e = rd_kafka_topic_partition_list_add(into, rd_kafka_topic_name(m->rkt), m->partition);
            e->offset = 0;
        }
        if (m->offset + 1 > e->offset) e->offset = m->offset + 1;
    }
}

static void offsets_clear(rd_kafka_topic_partition_list_t **l)
{
    rd_kafka_topic_partition_list_destroy(*l);
    *l = rd_kafka_topic_partition_list_new(16);
}

/* Sends the offsets gathered since the last commit, asynchronously (queued in order
 * behind earlier commits). */
static void commit_pending(struct pipeline *p)
{
    if (p->pending->cnt) {
        consumer_commit(p->consumer, p->pending, true);
        offsets_clear(&p->pending);
    }
    p->last_commit_ms = now_ms();
}

/* Records the offsets of a written batch (its transaction has committed). In the stream
 * they are committed asynchronously, at most every COMMIT_INTERVAL_MS (the loop sends what
 * waits once that has passed, also when the stream has stopped): at a few hundred small batches a
 * second a commit per batch would keep the group coordinator busy for nothing, while a later commit
 * only means more records redelivered (and skipped) after a crash. The offsets are also kept until
 * the next synchronous commit (commit_sync), which repeats them all, so that no commit is still on
 * its way when partitions are given up or the process exits. */
static void commit_offsets(struct pipeline *p, const struct batch *b, bool async)
{
    merge_offsets(p->unsynced, b);
    if (!async) return; /* commit_sync() follows */
    merge_offsets(p->pending, b);
    if (now_ms() - p->last_commit_ms >= COMMIT_INTERVAL_MS) commit_pending(p);
}

/* Commits, and waits for, every offset written since the last time. */
static void commit_sync(struct pipeline *p)
{
    if (p->pending->cnt) offsets_clear(&p->pending); /* they are in unsynced too */
    if (!p->unsynced->cnt) return;
    consumer_commit(p->consumer, p->unsynced, false);
    offsets_clear(&p->unsynced);
}

/* Wakes the loop's poll when the writer is done (from the writer thread). */
static void writer_done_cb(void *arg)
{
    consumer_wake(arg);
}

/* Hands cur (decided) to the next free lane's writer; cur starts empty. There must be a
 * free lane (count < nlanes). */
static void submit(struct pipeline *p)
{
    struct lane *l = lane_at(p, p->count);
    p->count++;
    struct batch t = l->b;
    l->b = p->cur;
    p->cur = t; /* the empty one, its buffers reused */
    struct batch *b = &l->b;
    for (size_t i = 0; i < b->n; i++)
        b->items[i].rec = &b->slots[i].rec; /* slots may have moved since decide() */
    b->write_ms = now_ms();
    l->job = (struct writer_job){
        .db = NULL,
        .items = b->items,
        .n = b->n,
        .policy_version = p->policy_version,
        .on_persisted = on_persisted,
        .on_dlq = on_dlq,
        .opaque = l,
        .done = writer_done_cb,
        .done_arg = p->consumer,
        .rc = DB_RETRY,
    };
    l->submitted = false;
    char *err = NULL;
    if (!ensure_conn(p, &l->db, &err)) {
        l->job.err = err; /* complete() retries */
        return;
    }
    l->job.db = l->db;
    writer_submit(l->writer, &l->job);
    l->submitted = true;
}

/* Writes fly again until it succeeds, the deadline passes (0: none) or a rebalance takes
 * the partitions; PostgreSQL is down meanwhile, so Kafka fetching is paused and what
 * still arrives is held. may_poll is false inside a rebalance callback. */
static bool retry_write(struct pipeline *p, struct lane *l, int64_t deadline, bool may_poll,
                        char *err)
{
    int backoff = 100;
    bool ok = false;
    bool paused = false;
    p->flushing = true;
    p->abandoned = false;
    for (;;) {
        status_set_postgres_up(false);
        log_warn("PostgreSQL unavailable (%s); holding a batch of %zu event(s), offsets not "
                 "committed, retrying in %d ms",
                 err ? err : "?", l->b.n, backoff);
        free(err);
        err = NULL;
        if (!paused) {
            consumer_pause(p->consumer, true);
            paused = true;
        }
        int64_t until = now_ms() + backoff;
        while (now_ms() < until && !p->abandoned) {
            health_progress(HEALTH_CONSUMER); /* waiting for PostgreSQL is not a stall */
            if (may_poll) {
                rd_kafka_message_t *m = consumer_poll(p->consumer, 100);
                if (m) add_message(p, m);
            } else {
                sleep_ms(100);
            }
        }
        if (p->abandoned) break;
        if (deadline && now_ms() >= deadline) break;
        if (!deadline) deadline = stop_deadline();
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        struct write_stats st;
        if (ensure_conn(p, &l->db, &err) &&
            db_write_batch(l->db, l->b.items, l->b.n, l->job.policy_version, &st, on_persisted,
                           on_dlq, l, &err) == DB_OK) {
            ok = true;
            break;
        }
    }
    free(err);
    p->flushing = false;
    if (paused) consumer_pause(p->consumer, false);
    if (ok) log_info("PostgreSQL is back; the held batch is written");
    return ok;
}

/* Waits for the lane's write. With a deadline (a rebalance or a shutdown) a write still
 * running then (waiting on a lock, a slow statement) is cancelled: it fails, nothing of
 * it is committed, and its records are delivered again. */
static void await_writer(struct lane *l, int64_t deadline)
{
    while (!deadline) { /* in the stream: until it is done, or SIGTERM sets a deadline */
        if (writer_wait_for(l->writer, 200)) return;
        deadline = stop_deadline();
    }
    int64_t left = deadline - now_ms();
    if (writer_wait_for(l->writer, left > 0 ? (int)left : 0)) return;
    log_warn("a journal write of %zu event(s) is still running at the deadline; cancelling it "
             "(its events are delivered again)",
             l->b.n);
    db_cancel_write(l->db);
    if (writer_wait_for(l->writer, CANCEL_WAIT_MS)) return;
    log_error("the cancelled journal write does not come back; waiting for it");
    writer_wait(l->writer);
}

/* A write PostgreSQL aborted for a conflict with another transaction (a deadlock, a lock
 * timeout): nothing of it was written, and PostgreSQL is up. It is written again at once
 * (a few times, a little later each time); false when it still fails (err then says why,
 * and retry_write takes over). */
static bool rewrite_after_conflict(struct lane *l, char **err)
{
    for (int attempt = 1; attempt <= CONFLICT_TRIES; attempt++) {
        log_warn("a journal write of %zu event(s) met another transaction (%s); it is written "
                 "again (attempt %d)",
                 l->b.n, *err ? *err : "?", attempt);
        metrics_write_conflict();
        free(*err);
        *err = NULL;
        sleep_ms(20 * attempt);
        struct write_stats st;
        enum db_result rc = db_write_batch(l->db, l->b.items, l->b.n, l->job.policy_version, &st,
                                           on_persisted, on_dlq, l, err);
        if (rc == DB_OK) return true;
        if (rc != DB_CONFLICT) return false;
    }
    return false;
}

/* Takes the outcome of the oldest batch in flight, waiting for it: on success its offsets
 * are committed; while PostgreSQL is down it is written again (retry_write). False when
 * it was given up: then every uncommitted record was dropped for Kafka to deliver again.
 * Outcomes are taken oldest first, so offsets are committed in consumption order. */
static bool complete_oldest(struct pipeline *p, int64_t deadline, bool may_poll, bool async_commit)
{
    if (!p->count) return true;
    struct lane *l = lane_at(p, 0);
    if (l->submitted) await_writer(l, deadline);
    l->submitted = false;
    char *err = l->job.err;
    l->job.err = NULL;
    bool ok = l->job.rc == DB_OK;
    if (!ok && l->job.rc == DB_CONFLICT) ok = rewrite_after_conflict(l, &err);
    if (ok) {
        free(err);
        status_set_postgres_up(true);
    } else {
        ok = retry_write(p, l, deadline, may_poll, err);
    }
    if (!ok) {
        abandon_all(p);
        return false;
    }
    commit_offsets(p, &l->b, async_commit);
    if (l->reused->cnt) {
        consumer_reread(p->consumer, l->reused);
        offsets_clear(&l->reused);
    }
    metrics_batch(l->b.n, (double)(now_ms() - l->b.write_ms) / 1000.0);
    if (p->cfg->kafka.dlq_topic) publish_dead_letters(p, &l->b);
    batch_release(&l->b);
    p->head = (p->head + 1) % p->nlanes;
    p->count--;
    if (p->nheld) take_held(p);
    return true;
}

static bool complete_all(struct pipeline *p, int64_t deadline, bool may_poll, bool async_commit)
{
    while (p->count)
        if (!complete_oldest(p, deadline, may_poll, async_commit)) return false;
    return true;
}

/* Takes the outcomes that are there, oldest first, without waiting. */
static void complete_ready(struct pipeline *p)
{
    while (p->count) {
        struct lane *l = lane_at(p, 0);
        if (l->submitted && !writer_idle(l->writer)) return;
        if (!complete_oldest(p, 0, true, true)) return;
    }
}

/* Writes what was gathered, in the next free lane (waiting for the oldest batch when every
 * lane is busy). cur is decided before that wait, so deciding overlaps the writes. sync:
 * also waits for every batch in flight and commits all offsets synchronously (rebalance,
 * shutdown). */
static bool flush(struct pipeline *p, int64_t deadline, bool may_poll, bool sync)
{
    decide(p, &p->cur);
    if (p->count == p->nlanes && !complete_oldest(p, deadline, may_poll, !sync)) return false;
    if (p->cur.n) {
        decide(p, &p->cur); /* records held during a retry joined it */
        submit(p);
    }
    if (!sync) return true;
    bool ok = complete_all(p, deadline, may_poll, false);
    commit_sync(p); /* also what went asynchronously before, even when this failed */
    return ok;
}

/* kafka.dlq_topic: a copy of each dead-lettered record, after PostgreSQL has it (best
 * effort: the DLQ table is the record of truth). */
static void publish_dead_letters(struct pipeline *p, const struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        const struct batch_item *it = &b->items[i];
        if (!it->d.to_dlq) continue;
        const struct record *r = it->rec;
        struct record_header *h = xcalloc(r->nheaders + 2, sizeof *h);
        memcpy(h, r->headers, r->nheaders * sizeof *h);
        char src[300];
        snprintf(src, sizeof src, "%s/%d/%" PRId64, r->topic, (int)r->partition, r->offset);
        h[r->nheaders] =
            (struct record_header){"x-eventsink-dlq-reason", it->d.reason, strlen(it->d.reason)};
        h[r->nheaders + 1] = (struct record_header){"x-eventsink-source", src, strlen(src)};
        char *err = NULL;
        if (!producer_send(p->producer, p->cfg->kafka.dlq_topic, r->key, r->key_len,
                           r->value ? r->value : "", r->value_len, h, r->nheaders + 2, NULL,
                           &err)) {
            log_warn("kafka.dlq_topic: %s", err);
            free(err);
        }
        free(h);
    }
}

static void on_revoke(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
    (void)parts;
    struct pipeline *p = opaque;
    if (p->flushing) {
        /* the flush in progress gives up; Kafka delivers its events again */
        p->abandoned = true;
        return;
    }
    flush(p, now_ms() + REVOKE_FLUSH_MS, false, true);
}

/* ---- policies --------------------------------------------------------------------------- */

static struct lua_host_limits policy_limits(const struct config *cfg)
{
    struct lua_host_limits lim = {
        .max_memory_bytes = (size_t)cfg->sandbox.max_memory_bytes,
        .max_instructions = cfg->sandbox.max_instructions,
        .max_call_ms = cfg->sandbox.max_call_ms,
    };
    return lim;
}

static void reload_failed(struct pipeline *p, const char *err)
{
    log_error("policy reload failed, the previous policies (version %d) stay: %s",
              p->policy_version, err);
    status_policies_failed(err);
    metrics_policy_reload(false);
    reload_done(false, p->policy_version, err, NULL);
}

/* Reads the configuration file again, for its `policies` list and `sandbox` limits, and
 * loads that set; other options that changed are named (they take a restart). */
static void reload_policies(struct pipeline *p)
{
    reload_begin();
    char *err = NULL;
    struct config *fresh = config_load(p->cfg->path, &err);
    if (!fresh) {
        struct buf m = {0};
        buf_printf(&m, "the configuration file: %s", err);
        reload_failed(p, m.data);
        buf_free(&m);
        free(err);
        return;
    }
    struct lua_host_limits lim = policy_limits(fresh);
    struct policy_set *ps = policy_set_load(&fresh->policies, &lim, p->policy_version + 1, &err);
    struct policy_set *ctl = ps ? policy_set_clone(ps, &err) : NULL;
    if (!ctl) {
        policy_set_destroy(ps);
        reload_failed(p, err);
        free(err);
        config_free(fresh);
        return;
    }
    policy_set_destroy(p->policies);
    p->policies = ps;
    policy_ctl_swap(p->ctl, ctl);
    p->policy_version++;
    status_policies_loaded(p->policy_version, fresh->policies.items, fresh->policies.n);
    metrics_policy_reload(true);
    char *restart = config_restart_needed(p->cfg, fresh);
    log_info("policies reloaded: version %d (%zu file(s))", p->policy_version, fresh->policies.n);
    if (restart)
        log_warn("the configuration file also changes %s: that takes effect only at a restart",
                 restart);
    reload_done(true, p->policy_version, NULL, restart);
    free(restart);
    config_free(fresh);
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Everything the running service owns besides the pipeline itself, in start order. */
struct services {
    struct embedded_kafka *embedded;
    struct replay_env env;
    struct http_server *http;
    bool worker;
};

static void services_stop(struct pipeline *p, struct services *sv)
{
    if (sv->worker) {
        scheduler_stop();
        replay_worker_stop();
    }
    http_stop(sv->http);
    producer_destroy(p->producer);
    p->producer = NULL;
}

int pipeline_run(struct config *cfg)
{
    struct pipeline pl = {.cfg = cfg, .policy_version = 1};
    struct pipeline *p = &pl;
    struct services sv = {0};
    int rc = 1;
    char *err = NULL;
    struct lua_host_limits lim = policy_limits(cfg);
    struct policy_set *ctl = NULL;
    health_configure(cfg->health.stall_after_s);
    shutdown_guard_start(&pipeline_stop_requested);
    p->policies = policy_set_load(&cfg->policies, &lim, 1, &err);
    if (p->policies) ctl = policy_set_clone(p->policies, &err);
    if (!ctl) {
        log_error("cannot load the policies: %s", err);
        free(err);
        policy_set_destroy(p->policies);
        shutdown_guard_stop();
        return 2;
    }
    p->ctl = policy_ctl_create(ctl);
    p->unsynced = rd_kafka_topic_partition_list_new(16);
    p->pending = rd_kafka_topic_partition_list_new(16);
    status_policies_loaded(1, cfg->policies.items, cfg->policies.n);

    const char *bootstrap = cfg->kafka.brokers;
    if (strcmp(cfg->kafka.brokers, "embedded") == 0) {
        sv.embedded = embedded_kafka_start(cfg, &err);
        if (!sv.embedded) {
            log_error("%s", err);
            free(err);
            goto out;
        }
        bootstrap = embedded_kafka_bootstrap(sv.embedded);
    }
    p->producer = producer_create(cfg, bootstrap, &err);
    if (!p->producer) {
        log_error("cannot start the Kafka producer: %s", err);
        free(err);
        rc = 2;
        goto out;
    }
    sv.env = (struct replay_env){.cfg = cfg, .producer = p->producer, .ctl = p->ctl};
    sv.http = http_start(cfg, &sv.env, &err);
    if (!sv.http) {
        log_error("cannot start the HTTP API: %s", err);
        free(err);
        goto out;
    }

    /* PostgreSQL first: the schema must be there before any event is taken */
    int backoff = 500;
    while (!pipeline_stop_requested) {
        int applied = 0;
        if (ensure_conn(p, &p->db, &err) && db_migrate(p->db, &applied, &err) &&
            db_load_replay_keys(p->db, &err)) {
            if (applied) log_info("applied %d migration(s)", applied);
            p->keys_loaded_ms = now_ms();
            status_set_postgres_up(true);
            break;
        }
        status_set_postgres_up(false);
        /* the consumer does not exist yet: /health gets Kafka's state from the producer */
        status_set_kafka_up(producer_kafka_reachable(p->producer, 1000));
        log_warn("PostgreSQL not ready (%s); retrying in %d ms", err, backoff);
        free(err);
        err = NULL;
        db_close(p->db);
        p->db = NULL;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    if (pipeline_stop_requested) {
        rc = 0;
        goto out;
    }
    replay_worker_start(&sv.env);
    scheduler_start(&sv.env);
    sv.worker = true;
    p->nlanes = (int)cfg->batch.writers;
    for (int k = 0; k < p->nlanes; k++) {
        p->lanes[k].reused = rd_kafka_topic_partition_list_new(4);
        p->lanes[k].writer = writer_start(&err);
        if (!p->lanes[k].writer) {
            log_error("%s", err);
            free(err);
            goto out;
        }
    }

    p->consumer = consumer_create(cfg, bootstrap, on_revoke, p, &err);
    if (!p->consumer) {
        log_error("cannot start the Kafka consumer: %s", err);
        free(err);
        rc = 2;
        goto out;
    }
    struct buf topics = {0};
    for (size_t i = 0; i < cfg->kafka.topics.n; i++)
        buf_printf(&topics, "%s%s", i ? ", " : "", cfg->kafka.topics.items[i]);
    log_info("eventsink started: consuming %s as group %s (policy version %d)", topics.data,
             cfg->kafka.group_id, p->policy_version);
    buf_free(&topics);

    int64_t last_ping = now_ms();
    health_busy(HEALTH_CONSUMER); /* the loop always has work: it moves once a poll at least */
    while (!pipeline_stop_requested) {
        health_progress(HEALTH_CONSUMER);
        bool idle = p->cur.n == 0 && p->count == 0;
        /* offsets of written batches wait at most COMMIT_INTERVAL_MS (the poll below
         * blocks no longer than that), also when the stream has stopped */
        if (p->pending->cnt && now_ms() - p->last_commit_ms >= COMMIT_INTERVAL_MS)
            commit_pending(p);
        if (idle && now_ms() - last_ping >= IDLE_PING_MS) {
            /* keep /health and the postgres_up metric true while no event flows */
            char *perr = NULL;
            status_set_postgres_up(ensure_conn(p, &p->db, &perr) && db_ping(p->db));
            free(perr);
            last_ping = now_ms();
        }
        /* between batches: the one in flight was decided with the policies it had */
        if (p->cur.n == 0 && reload_wanted()) reload_policies(p);
        bool lane_free = p->count < p->nlanes;
        int timeout = COMMIT_INTERVAL_MS;
        if (p->cur.n) {
            int64_t now = now_ms();
            int64_t left = p->cur.started_ms + cfg->batch.max_wait_ms - now;
            if (lane_free && p->cur.started_ms + LINGER_MS - now < left)
                left = p->cur.started_ms + LINGER_MS - now;
            timeout = left < 0 ? 0 : (int)left;
        }
        rd_kafka_message_t *m = consumer_poll(p->consumer, timeout);
        if (m) add_message(p, m);
        /* writes that are done: commit their offsets now (consumer_poll() returns early
         * when a writer finishes) */
        complete_ready(p);
        /* a batch closes when full, when its first record has waited batch.max_wait_ms,
         * or, while a writer is free, once it has waited LINGER_MS and librdkafka has
         * nothing more queued (group commit): under load batches fill up while the
         * writers work, at low rates records are written within a few milliseconds */
        int64_t waited = p->cur.n ? now_ms() - p->cur.started_ms : 0;
        if (p->cur.n &&
            (p->cur.n >= (size_t)cfg->batch.max_events || waited >= cfg->batch.max_wait_ms ||
             (!m && p->count < p->nlanes && waited >= LINGER_MS)))
            flush(p, 0, true, false);
    }
    health_idle(HEALTH_CONSUMER);
    log_info("stopping on %s: writing the batch in flight and committing",
             pipeline_stop_requested == SIGINT ? "SIGINT" : "SIGTERM");
    int64_t deadline = stop_deadline();
    bool flushed = flush(p, deadline, true, true);
    int64_t left = deadline - SHUTDOWN_FLUSH_MS + SHUTDOWN_TOTAL_MS - now_ms();
    consumer_close(p->consumer, left < 500 ? 500 : (int)left);
    rc = flushed ? 0 : 1; /* 1: not everything in flight was committed (CONTRACT 9.1) */
    if (!flushed)
        log_warn("stopped with events not committed: Kafka delivers them again after a restart");
out:
    /* every message goes back to librdkafka before its handle is destroyed */
    for (int k = 0; k < p->nlanes; k++) {
        struct lane *l = &p->lanes[k];
        if (l->writer) writer_wait(l->writer);
        l->submitted = false;
        free(l->job.err);
        l->job.err = NULL;
        batch_release(&l->b);
    }
    p->count = 0;
    for (size_t i = 0; i < p->nheld; i++)
        rd_kafka_message_destroy(p->held[i]);
    p->nheld = 0;
    batch_release(&p->cur);
    consumer_destroy(p->consumer);
    for (int k = 0; k < p->nlanes; k++) {
        writer_stop(p->lanes[k].writer);
        batch_free(&p->lanes[k].b);
        db_close(p->lanes[k].db);
        if (p->lanes[k].reused) rd_kafka_topic_partition_list_destroy(p->lanes[k].reused);
    }
    services_stop(p, &sv);
    embedded_kafka_stop(sv.embedded);
    batch_free(&p->cur);
    rd_kafka_topic_partition_list_destroy(p->unsynced);
    rd_kafka_topic_partition_list_destroy(p->pending);
    free(p->held);
    db_close(p->db);
    policy_set_destroy(p->policies);
    policy_ctl_destroy(p->ctl);
    if (rc == 0) log_info("eventsink stopped");
    shutdown_guard_stop();
    return rc;
}
