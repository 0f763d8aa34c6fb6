#include "consumer.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka_mock.h>

#include "buf.h"
#include "log.h"

struct consumer {
    rd_kafka_t *rk;
    rd_kafka_t *mock_owner; /* embedded mode: the handle that owns the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;
    consumer_revoke_fn on_revoke;
    void *opaque;
    bool paused;
    bool closed;
    atomic_bool kafka_up;
};

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* librdkafka's syslog levels: 0-3 errors, 4 warning, 5-6 info, 7 debug */
    enum log_level lv = level <= 3   ? LOG_ERROR
                        : level == 4 ? LOG_WARN
                        : level <= 6 ? LOG_INFO
                                     : LOG_DEBUG;
    /* connection churn is reported through error_cb already; keep these at debug */
    if (lv == LOG_ERROR || lv == LOG_WARN) lv = LOG_WARN;
    if (lv == LOG_INFO) lv = LOG_DEBUG;
    log_msg(lv, "kafka %s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    struct consumer *c = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        atomic_store(&c->kafka_up, false);
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

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    (void)json;
    (void)len;
    (void)opaque;
    return 0;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_info("kafka: %d partition(s) assigned", parts->cnt);
        rd_kafka_error_t *e = NULL;
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        if (e) {
            log_error("kafka: incremental assign failed: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        if (c->paused) rd_kafka_pause_partitions(rk, parts);
        atomic_store(&c->kafka_up, true);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        log_info("kafka: %d partition(s) revoked; flushing and committing first", parts->cnt);
        if (c->on_revoke) c->on_revoke(c->opaque, parts);
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

static bool set(rd_kafka_conf_t *conf, const char *k, const char *v, char **err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) == RD_KAFKA_CONF_OK) return true;
    struct buf m = {0};
    buf_printf(&m, "kafka property %s=%s: %s", k, v, errstr);
    *err = m.data;
    return false;
}

static bool start_embedded(struct consumer *c, const struct config *cfg, char **err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    /* rd_kafka_new takes ownership of conf on success only */
    c->mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!c->mock_owner) {
        rd_kafka_conf_destroy(conf);
        *err = xstrdup(errstr);
        return false;
    }
    c->mock = rd_kafka_mock_cluster_new(c->mock_owner, 1);
    if (!c->mock) {
        *err = xstrdup("cannot start the embedded Kafka (librdkafka mock cluster)");
        return false;
    }
    for (size_t i = 0; i < cfg->kafka.topics.n; i++) {
        const char *t = cfg->kafka.topics.items[i];
        if (t[0] != '^') rd_kafka_mock_topic_create(c->mock, t, 4, 1);
    }
    c->bootstrap = xstrdup(rd_kafka_mock_cluster_bootstraps(c->mock));
    log_warn("embedded Kafka (librdkafka mock cluster, in memory, NOT durable) listening at %s",
             c->bootstrap);
    return true;
}

struct consumer *consumer_create(const struct config *cfg, consumer_revoke_fn on_revoke,
                                 void *opaque, char **err)
{
    struct consumer *c = xcalloc(1, sizeof *c);
    c->on_revoke = on_revoke;
    c->opaque = opaque;
    atomic_init(&c->kafka_up, true);
    bool embedded = strcmp(cfg->kafka.brokers, "embedded") == 0;
    if (embedded && !start_embedded(c, cfg, err)) goto error;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* the guarantees depend on these: offsets are committed by hand, after PostgreSQL */
    const char *defaults[][2] = {
        {"bootstrap.servers", embedded ? c->bootstrap : cfg->kafka.brokers},
        {"group.id", cfg->kafka.group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"client.id", "eventsink"},
        {"reconnect.backoff.max.ms", "2000"},
        {"queued.max.messages.kbytes", "65536"},
        {"statistics.interval.ms", "5000"},
        {"session.timeout.ms", embedded ? "6000" : "45000"},
        {"heartbeat.interval.ms", embedded ? "1000" : "3000"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (!set(conf, defaults[i][0], defaults[i][1], err)) goto conf_error;
    for (size_t i = 0; i < cfg->kafka.properties.n; i++) {
        const struct kv *p = &cfg->kafka.properties.items[i];
        if (strcmp(p->key, "enable.auto.commit") == 0 && strcmp(p->value, "false") != 0) {
            *err = xstrdup("kafka.properties: enable.auto.commit must stay false: offsets are "
                           "committed only after PostgreSQL has committed the events");
            goto conf_error;
        }
        if (strcmp(p->key, "enable.auto.offset.store") == 0) continue;
        if (!set(conf, p->key, p->value, err)) goto conf_error;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);

    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!c->rk) {
        *err = xstrdup(errstr);
        goto conf_error;
    }
    rd_kafka_poll_set_consumer(c->rk);

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

void consumer_close(struct consumer *c)
{
    if (!c || !c->rk || c->closed) return;
    c->closed = true;
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(c->rk);
    if (e) log_warn("kafka: leaving the consumer group: %s", rd_kafka_err2str(e));
}

void consumer_destroy(struct consumer *c)
{
    if (!c) return;
    if (c->rk) {
        consumer_close(c);
        rd_kafka_destroy(c->rk);
        c->rk = NULL;
    }
    if (c->mock) rd_kafka_mock_cluster_destroy(c->mock);
    c->mock = NULL;
    if (c->mock_owner) rd_kafka_destroy(c->mock_owner);
    c->mock_owner = NULL;
    free(c->bootstrap);
    free(c);
}

rd_kafka_message_t *consumer_poll(struct consumer *c, int timeout_ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (!m) return NULL;
    if (!m->err) {
        atomic_store(&c->kafka_up, true);
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

bool consumer_commit(struct consumer *c, rd_kafka_topic_partition_list_t *offsets, char **err)
{
    rd_kafka_resp_err_t e = rd_kafka_commit(c->rk, offsets, 0);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR__NO_OFFSET) return true;
    if (err) {
        struct buf m = {0};
        buf_printf(&m, "%s", rd_kafka_err2str(e));
        *err = m.data;
    }
    return false;
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
    rd_kafka_topic_partition_list_destroy(parts);
}

void consumer_seek(struct consumer *c, const rd_kafka_topic_partition_list_t *positions)
{
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(c->rk, &assigned) != RD_KAFKA_RESP_ERR_NO_ERROR || !assigned) return;
    rd_kafka_topic_partition_list_t *todo = rd_kafka_topic_partition_list_new(positions->cnt);
    for (int i = 0; i < positions->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &positions->elems[i];
        if (rd_kafka_topic_partition_list_find(assigned, p->topic, p->partition))
            rd_kafka_topic_partition_list_add(todo, p->topic, p->partition)->offset = p->offset;
    }
    if (todo->cnt) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(c->rk, todo, 5000);
        if (e) {
            log_warn("kafka: seek back failed: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
    }
    rd_kafka_topic_partition_list_destroy(todo);
    rd_kafka_topic_partition_list_destroy(assigned);
}

bool consumer_kafka_up(struct consumer *c)
{
    return atomic_load(&c->kafka_up);
}

const char *consumer_embedded_bootstrap(struct consumer *c)
{
    return c->bootstrap;
}

rd_kafka_t *consumer_handle(struct consumer *c)
{
    return c->rk;
}
