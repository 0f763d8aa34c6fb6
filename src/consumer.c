#include "consumer.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "assets.h"
#include "buf.h"
#include "deadline.h"
#include "kafka_util.h"
#include "log.h"
#include "lua_host.h"
#include "metrics.h"
#include "position_check.h"
#include "position_probe.h"
#include "status.h"

struct consumer {
    rd_kafka_t *rk;
    consumer_revoke_fn on_revoke;
    void *opaque;
    bool paused;
    bool closed;
    bool close_timed_out;
    atomic_bool kafka_up;
    struct lua_host *stats;  /* reads librdkafka's statistics JSON (lua/kafka_stats.lua) */
    int stats_fn;            /* registry reference to the reader function */
    rd_kafka_queue_t *queue; /* the consumer queue, for consumer_wake() */
    struct position_check *positions;
    struct position_probe *probe; /* a topic created again unnoticed (position_probe.h) */
    /* partitions whose seek failed: paused, and sought again (consumer_poll) until it works,
     * so that fetching never goes on past records that were not written */
    rd_kafka_topic_partition_list_t *failed_seeks;
    int64_t seek_retry_ms;
    consumer_seek_impl seek; /* rd_kafka_seek_partitions; tests force failures */
};

#define SEEK_RETRY_MS 1000
#define POSITION_PROBE_INTERVAL_MS 10000

/* A failed commit loses nothing: the events are in PostgreSQL, and a redelivery is
 * recognised there. */
static void commit_outcome(rd_kafka_resp_err_t err)
{
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) return;
    log_warn("kafka: offset commit failed (%s); the events are safe in PostgreSQL and a "
             "redelivery will be skipped",
             rd_kafka_err2str(err));
}

/* The outcome of an asynchronous commit, served from consumer_poll(). */
static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    (void)offsets;
    (void)opaque;
    commit_outcome(err);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        atomic_store(&c->kafka_up, false);
        status_set_kafka_up(false);
        log_warn("kafka: all brokers are down (%s); consumption waits and resumes by itself",
                 reason);
        return;
    }
    if (rd_kafka_fatal_error(rk, NULL, 0)) {
        log_error("kafka: fatal error: %s", reason);
        return;
    }
    log_warn("kafka: %s: %s", rd_kafka_err2name(err), reason);
}

/* Runs in the consumer thread, from consumer_poll(). */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    struct consumer *c = opaque;
    if (!c->stats) return 0;
    lua_State *L = lua_host_state(c->stats);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->stats_fn);
    lua_pushlstring(L, json, len);
    char *err = NULL;
    if (!lua_host_pcall(c->stats, 1, 2, &err)) {
        log_warn("kafka: cannot read librdkafka statistics: %s", err);
        free(err);
        return 0;
    }
    bool up = lua_toboolean(L, -2);
    atomic_store(&c->kafka_up, up);
    status_set_kafka_up(up);
    metrics_lag_begin();
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        lua_rawgeti(L, -3, 3);
        if (lua_type(L, -3) == LUA_TSTRING)
            metrics_lag_set(lua_tostring(L, -3), (int32_t)lua_tointeger(L, -2),
                            (int64_t)lua_tointeger(L, -1));
        lua_pop(L, 4);
    }
    metrics_lag_end();
    lua_pop(L, 2);
    return 0; /* librdkafka frees json */
}

static bool start_stats_reader(struct consumer *c, char **err)
{
    struct lua_host_limits lim = {.max_memory_bytes = 64 << 20, .max_instructions = 0};
    c->stats = lua_host_create(&lim, LUA_HOST_POLICY, err);
    const struct asset *a = asset_find("lua/kafka_stats.lua");
    if (!c->stats || !a) return false;
    if (!lua_host_load(c->stats, a->data, a->len, "@lua/kafka_stats.lua", err) ||
        !lua_host_pcall(c->stats, 0, 1, err))
        return false;
    c->stats_fn = luaL_ref(lua_host_state(c->stats), LUA_REGISTRYINDEX);
    return true;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_info("kafka: %d partition(s) assigned", parts->cnt);
        position_check_assign(c->positions, rk, parts);
        rd_kafka_error_t *e = NULL;
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (e) {
            log_error("kafka: incremental assign failed: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        /* librdkafka keeps a partition's pause flag across a revoke and a later assign: a
         * partition paused during a PostgreSQL outage, revoked, then resumed while it was
         * not assigned (so the resume did not reach it) would come back paused and never
         * be read again. The consumer's own state decides, both ways. */
        if (c->paused)
            rd_kafka_pause_partitions(rk, parts);
        else
            rd_kafka_resume_partitions(rk, parts);
        atomic_store(&c->kafka_up, true);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        log_info("kafka: %d partition(s) revoked; flushing and committing first", parts->cnt);
        if (c->on_revoke) c->on_revoke(c->opaque, parts);
        position_check_forget(c->positions);
        position_probe_forget(c->probe);
        for (int i = 0; i < parts->cnt; i++) /* whoever gets them starts at the committed offset */
            rd_kafka_topic_partition_list_del(c->failed_seeks, parts->elems[i].topic,
                                              parts->elems[i].partition);
    } else {
        log_warn("kafka: rebalance error: %s", rd_kafka_err2str(err));
    }
    if (cooperative) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e) rd_kafka_error_destroy(e);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

struct consumer *consumer_create(const struct config *cfg, const char *bootstrap,
                                 consumer_revoke_fn on_revoke, void *opaque, char **err)
{
    struct consumer *c = xcalloc(1, sizeof *c);
    c->on_revoke = on_revoke;
    c->opaque = opaque;
    c->positions = position_check_new();
    c->failed_seeks = rd_kafka_topic_partition_list_new(4);
    c->seek = rd_kafka_seek_partitions;
    atomic_init(&c->kafka_up, true);
    status_set_kafka_up(true);
    if (!start_stats_reader(c, err)) goto error;
    /* the guarantees depend on the settings of kafka_consumer_conf */
    rd_kafka_conf_t *conf = kafka_consumer_conf(cfg, bootstrap, err);
    if (!conf) goto error;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);

    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!c->rk) {
        *err = xstrdup(errstr);
        goto conf_error;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    c->probe = position_probe_start(cfg, bootstrap, POSITION_PROBE_INTERVAL_MS, err);
    if (!c->probe) goto error;

    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)cfg->kafka.topics.n);
    for (size_t i = 0; i < cfg->kafka.topics.n; i++)
        rd_kafka_topic_partition_list_add(topics, cfg->kafka.topics.items[i],
                                          RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        struct buf m = {0};
        buf_printf(&m, "kafka: cannot subscribe: %s", rd_kafka_err2str(e));
        *err = m.data;
        goto error;
    }
    return c;

conf_error:
    if (!c->rk) rd_kafka_conf_destroy(conf);
error:
    consumer_destroy(c);
    return NULL;
}

void consumer_close(struct consumer *c, int timeout_ms)
{
    if (!c || !c->rk || c->closed) return;
    c->closed = true;
    /* asynchronous, so that a broker that does not answer cannot hold the exit past the
     * deadline (a plain close may block for session.timeout.ms) */
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, q);
    if (e) {
        log_warn("kafka: leaving the consumer group: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            if (rd_kafka_consumer_closed(c->rk)) break;
            /* the event interface: messages fetched ahead are handed back as events and
             * dropped (they are not committed, so Kafka delivers them again); serving
             * them through the callback interface trips an assertion in librdkafka */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (ev) {
                if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                    rebalance_cb(c->rk, rd_kafka_event_error(ev),
                                 rd_kafka_event_topic_partition_list(ev), c);
                rd_kafka_event_destroy(ev);
            }
            clock_gettime(CLOCK_MONOTONIC, &t);
            long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (ms >= timeout_ms) {
                log_warn("kafka: the group did not confirm the leave within %d ms; the broker "
                         "will notice at session timeout",
                         timeout_ms);
                c->close_timed_out = true;
                break;
            }
        }
    }
    rd_kafka_queue_destroy(q);
}

void consumer_destroy(struct consumer *c)
{
    if (!c) return;
    position_probe_stop(c->probe);
    c->probe = NULL;
    if (c->queue) rd_kafka_queue_destroy(c->queue);
    c->queue = NULL;
    if (c->rk) {
        consumer_close(c, 5000);
        if (!kafka_destroy_bounded(c->rk,
                                   c->close_timed_out ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0,
                                   KAFKA_DESTROY_WAIT_MS))
            log_warn("kafka: the consumer client did not shut down within %d ms (librdkafka "
                     "still holds a deleted topic's partitions); exiting without waiting for it",
                     KAFKA_DESTROY_WAIT_MS);
        c->rk = NULL;
    }
    lua_host_destroy(c->stats);
    position_check_free(c->positions);
    rd_kafka_topic_partition_list_destroy(c->failed_seeks);
    free(c);
}

static void retry_failed_seeks(struct consumer *c);

/* What the probe found replaced is read again from its beginning. */
static void reread_replaced(struct consumer *c)
{
    rd_kafka_topic_partition_list_t *replaced = position_probe_replaced(c->probe);
    if (!replaced) return;
    position_check_reread_replaced(c->positions, c->rk, replaced);
    rd_kafka_topic_partition_list_destroy(replaced);
}

static void saw(struct consumer *c, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    position_check_consumed(c->positions, topic, m->partition, m->offset);
    position_probe_saw(c->probe, topic, m->partition, m->offset,
                       rd_kafka_message_timestamp(m, NULL), m->key, m->key_len, m->len);
}

rd_kafka_message_t *consumer_poll(struct consumer *c, int timeout_ms)
{
    retry_failed_seeks(c);
    reread_replaced(c);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (!m) return NULL;
    if (!m->err) {
        atomic_store(&c->kafka_up, true);
        saw(c, m);
        return m;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        /* nothing to say */
    } else if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
               m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
        log_warn("kafka: %s (the topic does not exist yet; waiting for it)",
                 rd_kafka_message_errstr(m));
    } else {
        log_warn("kafka: consumer error: %s", rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
    return NULL;
}

#define COMMIT_WAIT_MS 2000 /* a synchronous commit waits this long for the coordinator */

/* A synchronous commit with a bound: rd_kafka_commit() itself waits for the coordinator as
 * long as it takes (a coordinator that does not answer held a shutdown past 9 s). The
 * answer comes on a queue of its own; without it in time, the commit may still land, and
 * when it does not, the records are delivered again and skipped. */
static void commit_bounded(struct consumer *c, rd_kafka_topic_partition_list_t *offsets)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_resp_err_t e = rd_kafka_commit_queue(c->rk, offsets, q, NULL, NULL);
    if (!e) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, COMMIT_WAIT_MS);
        if (ev) {
            e = rd_kafka_event_error(ev);
            rd_kafka_event_destroy(ev);
        } else {
            e = RD_KAFKA_RESP_ERR__TIMED_OUT;
        }
    }
    rd_kafka_queue_destroy(q);
    commit_outcome(e);
}

void consumer_commit(struct consumer *c, rd_kafka_topic_partition_list_t *offsets, bool async)
{
    if (!offsets->cnt) return;
    if (async)
        commit_outcome(rd_kafka_commit(c->rk, offsets, 1));
    else
        commit_bounded(c, offsets);
}

void consumer_pause(struct consumer *c, bool pause)
{
    if (c->paused == pause) return;
    c->paused = pause;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts) return;
    if (pause)
        rd_kafka_pause_partitions(c->rk, parts);
    else
        rd_kafka_resume_partitions(c->rk, parts);
    if (!pause && c->failed_seeks->cnt) /* they stay paused until their seek works */
        rd_kafka_pause_partitions(c->rk, c->failed_seeks);
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Seeks the listed partitions that are still assigned. One whose seek fails is paused
 * (fetching must not go on past records that were never written) and kept in
 * failed_seeks, to be sought again. */
static void seek_assigned(struct consumer *c, const rd_kafka_topic_partition_list_t *positions)
{
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(c->rk, &assigned) != RD_KAFKA_RESP_ERR_NO_ERROR || !assigned) return;
    rd_kafka_topic_partition_list_t *todo = rd_kafka_topic_partition_list_new(positions->cnt);
    for (int i = 0; i < positions->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &positions->elems[i];
        if (rd_kafka_topic_partition_list_find(assigned, p->topic, p->partition))
            rd_kafka_topic_partition_list_add(todo, p->topic, p->partition)->offset = p->offset;
    }
    rd_kafka_error_t *e = todo->cnt ? c->seek(c->rk, todo, 5000) : NULL;
    for (int i = 0; i < todo->cnt; i++) {
        rd_kafka_topic_partition_t *t = &todo->elems[i];
        rd_kafka_topic_partition_t *failed =
            rd_kafka_topic_partition_list_find(c->failed_seeks, t->topic, t->partition);
        if (!e && !t->err) {
            if (!failed) continue;
            rd_kafka_topic_partition_list_del(c->failed_seeks, t->topic, t->partition);
            log_info("kafka: %s[%d] sought to offset %" PRId64 "; fetching again", t->topic,
                     (int)t->partition, t->offset);
            rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(one, t->topic, t->partition);
            if (!c->paused) rd_kafka_resume_partitions(c->rk, one);
            rd_kafka_topic_partition_list_destroy(one);
            continue;
        }
        if (!failed) {
            log_warn("kafka: seek of %s[%d] to offset %" PRId64 " failed (%s): the partition is "
                     "paused and sought again every %d ms",
                     t->topic, (int)t->partition, t->offset,
                     e ? rd_kafka_error_string(e) : rd_kafka_err2str(t->err), SEEK_RETRY_MS);
            failed = rd_kafka_topic_partition_list_add(c->failed_seeks, t->topic, t->partition);
            rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(one, t->topic, t->partition);
            rd_kafka_pause_partitions(c->rk, one);
            rd_kafka_topic_partition_list_destroy(one);
        }
        failed->offset = t->offset;
    }
    if (e) rd_kafka_error_destroy(e);
    c->seek_retry_ms = mono_now_ms() + SEEK_RETRY_MS;
    rd_kafka_topic_partition_list_destroy(todo);
    rd_kafka_topic_partition_list_destroy(assigned);
}

void consumer_seek(struct consumer *c, const rd_kafka_topic_partition_list_t *positions)
{
    seek_assigned(c, positions);
}

/* From consumer_poll(): seeks again what failed, once a second. */
static void retry_failed_seeks(struct consumer *c)
{
    if (!c->failed_seeks->cnt || mono_now_ms() < c->seek_retry_ms) return;
    rd_kafka_topic_partition_list_t *again = rd_kafka_topic_partition_list_copy(c->failed_seeks);
    seek_assigned(c, again);
    rd_kafka_topic_partition_list_destroy(again);
}

void consumer_set_seek_impl(struct consumer *c, consumer_seek_impl seek)
{
    c->seek = seek ? seek : rd_kafka_seek_partitions;
}

bool consumer_take_check(struct consumer *c, const rd_kafka_message_t *m)
{
    return position_check_take(c->positions, rd_kafka_topic_name(m->rkt), m->partition, m->offset);
}

void consumer_reread(struct consumer *c, const rd_kafka_topic_partition_list_t *reused)
{
    position_check_reread(c->positions, c->rk, reused);
}

void consumer_wake(struct consumer *c)
{
    if (c && c->queue) rd_kafka_queue_yield(c->queue);
}

bool consumer_kafka_up(struct consumer *c)
{
    return atomic_load(&c->kafka_up);
}

rd_kafka_t *consumer_handle(struct consumer *c)
{
    return c->rk;
}
