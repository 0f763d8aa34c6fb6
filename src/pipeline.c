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
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "policy_ctl.h"
#include "producer.h"
#include "replay_worker.h"
#include "scheduler.h"
#include "status.h"
#include "record.h"
#include "reload.h"

volatile sig_atomic_t pipeline_stop_requested = 0;

#define SHUTDOWN_FLUSH_MS 6000 /* SIGTERM: the contract allows 10 s in all */
#define SHUTDOWN_TOTAL_MS 8500
#define REVOKE_FLUSH_MS 5000
#define BACKOFF_MAX_MS 5000
#define IDLE_PING_MS 2000

struct slot {
    rd_kafka_message_t *msg;
    struct record rec;
    struct record_header *headers;
};

struct pipeline {
    struct config *cfg;
    struct consumer *consumer;
    struct producer *producer;
    struct policy_ctl *ctl;
    struct db *db;
    struct policy_set *policies;
    int policy_version;

    struct slot *slots; /* the batch being gathered */
    size_t n, cap;
    int64_t started_ms;
    rd_kafka_message_t **held; /* arrived while a flush waited for PostgreSQL */
    size_t nheld, capheld;
    struct batch_item *items;

    bool flushing;  /* a flush is waiting for PostgreSQL */
    bool abandoned; /* a rebalance took the partitions while the flush waited */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

static void add_message(struct pipeline *p, rd_kafka_message_t *m)
{
    if (p->flushing) {
        if (p->nheld == p->capheld) {
            p->capheld = p->capheld ? p->capheld * 2 : 64;
            p->held = xrealloc(p->held, p->capheld * sizeof *p->held);
        }
        p->held[p->nheld++] = m;
        return;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 256;
        p->slots = xrealloc(p->slots, p->cap * sizeof *p->slots);
    }
    if (p->n == 0) p->started_ms = now_ms();
    slot_fill(&p->slots[p->n++], m);
}

static void batch_clear(struct pipeline *p)
{
    for (size_t i = 0; i < p->n; i++) {
        rd_kafka_message_destroy(p->slots[i].msg);
        free(p->slots[i].headers);
    }
    p->n = 0;
    /* messages that arrived during the flush start the next batch */
    size_t nheld = p->nheld;
    p->nheld = 0;
    for (size_t i = 0; i < nheld; i++)
        add_message(p, p->held[i]);
}

/* Drops the batch and what is held without committing: Kafka delivers them again, to this
 * instance (it seeks back) or to whoever owns their partitions now. */
static void batch_abandon(struct pipeline *p)
{
    rd_kafka_topic_partition_list_t *back = rd_kafka_topic_partition_list_new((int)p->n + 1);
    for (size_t i = 0; i < p->n; i++) {
        rd_kafka_message_t *m = p->slots[i].msg;
        rd_kafka_topic_partition_t *e =
            rd_kafka_topic_partition_list_find(back, rd_kafka_topic_name(m->rkt), m->partition);
        if (!e)
            rd_kafka_topic_partition_list_add(back, rd_kafka_topic_name(m->rkt), m->partition)
                ->offset = m->offset;
        else if (m->offset < e->offset)
            e->offset = m->offset;
    }
    for (size_t i = 0; i < p->nheld; i++) {
        rd_kafka_message_t *m = p->held[i];
        if (!rd_kafka_topic_partition_list_find(back, rd_kafka_topic_name(m->rkt), m->partition))
            rd_kafka_topic_partition_list_add(back, rd_kafka_topic_name(m->rkt), m->partition)
                ->offset = m->offset;
        rd_kafka_message_destroy(m);
    }
    p->nheld = 0;
    if (p->n)
        log_warn("dropping an unwritten batch of %zu event(s) without committing: Kafka "
                 "delivers them again",
                 p->n);
    batch_clear(p);
    consumer_seek(p->consumer, back);
    rd_kafka_topic_partition_list_destroy(back);
}

static void publish_dead_letters(struct pipeline *p);

static void on_persisted(void *opaque, int64_t id, const char *tenant, const char *event_type,
                         const char *topic, int replay_count, int64_t from_event, int64_t from_dlq,
                         const char *source)
{
    (void)opaque;
    (void)replay_count;
    (void)id;
    metrics_events_persisted(topic, source != NULL, 1);
    if (!log_enabled(LOG_INFO)) return;
    const char *type = event_type ? event_type : "event";
    if (from_event)
        log_info("Persisted REPLAYED %s for tenant %s (from event %" PRId64 ")", type, tenant,
                 from_event);
    else if (from_dlq)
        log_info("Persisted REPLAYED %s for tenant %s (from DLQ entry %" PRId64 ")", type, tenant,
                 from_dlq);
    else if (source)
        log_info("Persisted REPLAYED %s for tenant %s", type, tenant);
    else
        log_info("Persisted %s for tenant %s", type, tenant);
}

static void on_dlq(void *opaque, int64_t id, const char *reason, bool retry)
{
    (void)opaque;
    metrics_dlq_event(reason, 1);
    if (retry)
        log_warn("DLQ entry %" PRId64 " was retried and failed again (%s); counted one more "
                 "attempt",
                 id, reason);
    else
        log_warn("Dead-lettered an event as %s (DLQ entry %" PRId64 ")%s", reason, id,
                 strcmp(reason, "duplicate_replay") == 0
                     ? ": a second copy of a replay already in the journal, kept resolved"
                     : "");
}

static bool ensure_db(struct pipeline *p, char **err)
{
    if (db_alive(p->db)) return true;
    db_close(p->db);
    p->db = db_connect(p->cfg->postgres.dsn, "eventsink", err);
    return p->db != NULL;
}

static void commit_offsets(struct pipeline *p)
{
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(16);
    for (size_t i = 0; i < p->n; i++) {
        rd_kafka_message_t *m = p->slots[i].msg;
        rd_kafka_topic_partition_t *e =
            rd_kafka_topic_partition_list_find(offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (!e)
            e = rd_kafka_topic_partition_list_add(offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > e->offset) e->offset = m->offset + 1;
    }
    char *err = NULL;
    if (!consumer_commit(p->consumer, offs, &err)) {
        /* harmless for the data: the rows are in PostgreSQL and writes are idempotent */
        log_warn("kafka: offset commit failed (%s); the events are safe in PostgreSQL and a "
                 "redelivery will be skipped",
                 err);
        free(err);
    }
    rd_kafka_topic_partition_list_destroy(offs);
}

/* Writes the batch and commits its offsets. While PostgreSQL is unavailable it retries with
 * backoff, Kafka fetching paused, until it succeeds, the deadline passes (0: none) or a
 * rebalance takes the partitions. may_poll is false inside a rebalance callback. */
static bool flush(struct pipeline *p, int64_t deadline, bool may_poll)
{
    if (p->n == 0) return true;
    if (p->cap > 0) p->items = xrealloc(p->items, p->cap * sizeof *p->items);
    for (size_t i = 0; i < p->n; i++) {
        struct record *r = &p->slots[i].rec;
        struct batch_item *it = &p->items[i];
        char *detail = NULL;
        const char *bad =
            record_check(r, (size_t)p->cfg->kafka.max_message_bytes, &it->is_object, &detail);
        it->rec = r;
        policy_decide(p->policies, r, bad, detail, &it->d);
    }

    /* consumed, counted per topic (a batch rarely spans more than a few) */
    for (size_t i = 0; i < p->n;) {
        const char *t = p->slots[i].rec.topic;
        size_t j = i;
        while (j < p->n && strcmp(p->slots[j].rec.topic, t) == 0)
            j++;
        metrics_events_consumed(t, j - i);
        i = j;
    }
    int64_t t0 = now_ms();
    int backoff = 100;
    bool ok = false;
    bool paused = false;
    p->flushing = true;
    p->abandoned = false;
    for (;;) {
        char *err = NULL;
        struct write_stats st;
        if (ensure_db(p, &err) && db_write_batch(p->db, p->items, p->n, p->policy_version, &st,
                                                 on_persisted, on_dlq, p, &err) == DB_OK) {
            ok = true;
            free(err);
            status_set_postgres_up(true);
            break;
        }
        status_set_postgres_up(false);
        log_warn("PostgreSQL unavailable (%s); holding a batch of %zu event(s), offsets not "
                 "committed, retrying in %d ms",
                 err ? err : "?", p->n, backoff);
        free(err);
        if (!paused) {
            consumer_pause(p->consumer, true);
            paused = true;
        }
        int64_t until = now_ms() + backoff;
        while (now_ms() < until && !p->abandoned) {
            if (may_poll) {
                rd_kafka_message_t *m = consumer_poll(p->consumer, 100);
                if (m) add_message(p, m);
            } else {
                sleep_ms(100);
            }
        }
        if (p->abandoned) break;
        if (deadline && now_ms() >= deadline) break;
        if (!deadline && pipeline_stop_requested) deadline = now_ms() + SHUTDOWN_FLUSH_MS;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    p->flushing = false;
    if (paused) consumer_pause(p->consumer, false);
    if (!ok) {
        for (size_t i = 0; i < p->n; i++)
            decision_clear(&p->items[i].d);
        batch_abandon(p);
        return false;
    }
    if (paused) log_info("PostgreSQL is back; the held batch is written");
    commit_offsets(p);
    metrics_batch(p->n, (double)(now_ms() - t0) / 1000.0);
    if (p->cfg->kafka.dlq_topic) publish_dead_letters(p);
    for (size_t i = 0; i < p->n; i++)
        decision_clear(&p->items[i].d);
    batch_clear(p);
    return true;
}

/* kafka.dlq_topic: a copy of each dead-lettered record, after PostgreSQL has it (best
 * effort: the DLQ table is the record of truth). */
static void publish_dead_letters(struct pipeline *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct batch_item *it = &p->items[i];
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
    flush(p, now_ms() + REVOKE_FLUSH_MS, false);
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

static void reload_policies(struct pipeline *p)
{
    struct lua_host_limits lim = policy_limits(p->cfg);
    char *err = NULL;
    struct policy_set *ps = policy_set_load(&p->cfg->policies, &lim, p->policy_version + 1, &err);
    struct policy_set *ctl =
        ps ? policy_set_load(&p->cfg->policies, &lim, p->policy_version + 1, &err) : NULL;
    if (!ctl) {
        policy_set_destroy(ps);
        log_error("policy reload failed, the previous policies (version %d) stay: %s",
                  p->policy_version, err);
        status_policies_failed(err);
        metrics_policy_reload(false);
        reload_done(false, p->policy_version, err);
        free(err);
        return;
    }
    policy_set_destroy(p->policies);
    p->policies = ps;
    policy_ctl_swap(p->ctl, ctl);
    p->policy_version++;
    status_policies_loaded(p->policy_version, p->cfg->policies.items, p->cfg->policies.n);
    metrics_policy_reload(true);
    log_info("policies reloaded: version %d", p->policy_version);
    reload_done(true, p->policy_version, NULL);
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
    p->policies = policy_set_load(&cfg->policies, &lim, 1, &err);
    if (p->policies) ctl = policy_set_load(&cfg->policies, &lim, 1, &err);
    if (!ctl) {
        log_error("cannot load the policies: %s", err);
        free(err);
        policy_set_destroy(p->policies);
        return 2;
    }
    p->ctl = policy_ctl_create(ctl);
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
        if (ensure_db(p, &err) && db_migrate(p->db, &applied, &err)) {
            if (applied) log_info("applied %d migration(s)", applied);
            status_set_postgres_up(true);
            break;
        }
        status_set_postgres_up(false);
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
    while (!pipeline_stop_requested) {
        if (p->n == 0 && now_ms() - last_ping >= IDLE_PING_MS) {
            /* keep /health and the postgres_up metric true while no event flows */
            char *perr = NULL;
            status_set_postgres_up(ensure_db(p, &perr) && db_ping(p->db));
            free(perr);
            last_ping = now_ms();
        }
        if (p->n == 0 && reload_wanted()) reload_policies(p);
        int timeout = 100;
        if (p->n) {
            int64_t left = p->started_ms + cfg->batch.max_wait_ms - now_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        rd_kafka_message_t *m = consumer_poll(p->consumer, timeout);
        if (m) add_message(p, m);
        if (p->n && (p->n >= (size_t)cfg->batch.max_events ||
                     now_ms() - p->started_ms >= cfg->batch.max_wait_ms))
            flush(p, 0, true);
    }
    log_info("stopping on %s: writing the batch in flight and committing",
             pipeline_stop_requested == SIGINT ? "SIGINT" : "SIGTERM");
    int64_t stop_started = now_ms();
    flush(p, stop_started + SHUTDOWN_FLUSH_MS, true);
    int64_t left = stop_started + SHUTDOWN_TOTAL_MS - now_ms();
    consumer_close(p->consumer, left < 500 ? 500 : (int)left);
    rc = 0;
out:
    /* every message goes back to librdkafka before its handle is destroyed */
    for (size_t i = 0; i < p->nheld; i++)
        rd_kafka_message_destroy(p->held[i]);
    p->nheld = 0;
    batch_clear(p);
    consumer_destroy(p->consumer);
    services_stop(p, &sv);
    embedded_kafka_stop(sv.embedded);
    free(p->slots);
    free(p->held);
    free(p->items);
    db_close(p->db);
    policy_set_destroy(p->policies);
    policy_ctl_destroy(p->ctl);
    if (rc == 0) log_info("eventsink stopped");
    return rc;
}
