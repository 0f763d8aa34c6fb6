#include "kafka_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "log.h"

void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-4 become warnings, the rest debug */
    log_msg(level <= 4 ? LOG_WARN : LOG_DEBUG, "kafka %s: %s", fac, buf);
}

bool kafka_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char **err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) == RD_KAFKA_CONF_OK) return true;
    struct buf m = {0};
    buf_printf(&m, "kafka property %s=%s: %s", k, v, errstr);
    *err = m.data;
    return false;
}

bool kafka_consumer_only_property(const char *name)
{
    static const char *const prefixes[] = {
        "group.",
        "enable.auto.",
        "auto.",
        "session.",
        "heartbeat.",
        "partition.assignment",
        "fetch.",
        "max.poll.",
        "queued.",
        "isolation.level",
        "check.crcs",
        "allow.auto.create",
        "enable.partition.eof",
        "consume.",
        "coordinator.",
        NULL,
    };
    for (const char *const *p = prefixes; *p; p++)
        if (strncmp(name, *p, strlen(*p)) == 0) return true;
    return false;
}

rd_kafka_conf_t *kafka_consumer_conf(const struct config *cfg, const char *bootstrap, char **err)
{
    bool embedded = strcmp(cfg->kafka.brokers, "embedded") == 0;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* the guarantees depend on these: offsets are committed by hand, after PostgreSQL */
    const char *defaults[][2] = {
        {"bootstrap.servers", bootstrap},
        {"group.id", cfg->kafka.group_id},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"client.id", "eventsink"},
        {"reconnect.backoff.max.ms", "2000"},
        {"queued.max.messages.kbytes", "16384"}, /* bounds the prefetch (RSS) */
        {"statistics.interval.ms", "2000"},
        {"session.timeout.ms", embedded ? "6000" : "10000"},
        {"heartbeat.interval.ms", embedded ? "1000" : "3000"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (!kafka_conf_set(conf, defaults[i][0], defaults[i][1], err)) goto error;
    for (size_t i = 0; i < cfg->kafka.properties.n; i++) {
        const struct kv *p = &cfg->kafka.properties.items[i];
        if (strcmp(p->key, "enable.auto.commit") == 0 && strcmp(p->value, "false") != 0) {
            *err = xstrdup("kafka.properties: enable.auto.commit must stay false: offsets are "
                           "committed only after PostgreSQL has committed the events");
            goto error;
        }
        if (strcmp(p->key, "enable.auto.offset.store") == 0) continue;
        if (!kafka_conf_set(conf, p->key, p->value, err)) goto error;
    }
    return conf;
error:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_conf_t *kafka_producer_conf(const struct config *cfg, const char *bootstrap, char **err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *defaults[][2] = {
        {"bootstrap.servers", bootstrap},
        {"client.id", "eventsink-replay"},
        {"enable.idempotence", "true"}, /* no duplicate from a retried produce */
        {"acks", "all"},
        {"linger.ms", "5"},
        {"message.timeout.ms", "15000"}, /* Kafka unavailable: fail, answer 503 */
        {"reconnect.backoff.max.ms", "2000"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (!kafka_conf_set(conf, defaults[i][0], defaults[i][1], err)) goto error;
    for (size_t i = 0; i < cfg->kafka.properties.n; i++) {
        const struct kv *kv = &cfg->kafka.properties.items[i];
        if (kafka_consumer_only_property(kv->key)) continue;
        if (strcmp(kv->key, "enable.idempotence") == 0 || strcmp(kv->key, "acks") == 0) continue;
        if (!kafka_conf_set(conf, kv->key, kv->value, err)) goto error;
    }
    return conf;
error:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

bool kafka_conf_check(const struct config *cfg, char **err)
{
    /* the embedded cluster's address is only known once it runs: any host will do here */
    const char *bootstrap =
        strcmp(cfg->kafka.brokers, "embedded") == 0 ? "127.0.0.1:9092" : cfg->kafka.brokers;
    rd_kafka_conf_t *c = kafka_consumer_conf(cfg, bootstrap, err);
    if (!c) return false;
    rd_kafka_conf_destroy(c);
    rd_kafka_conf_t *p = kafka_producer_conf(cfg, bootstrap, err);
    if (!p) return false;
    rd_kafka_conf_destroy(p);
    return true;
}

struct destroying {
    rd_kafka_t *rk;
    int flags;
    atomic_bool done;
};

static void *destroy_thread(void *arg)
{
    struct destroying *d = arg;
    rd_kafka_destroy_flags(d->rk, d->flags);
    atomic_store(&d->done, true);
    return NULL;
}

bool kafka_destroy_bounded(rd_kafka_t *rk, int flags, int wait_ms)
{
    struct destroying *d = xcalloc(1, sizeof *d);
    d->rk = rk;
    d->flags = flags;
    pthread_t t;
    if (pthread_create(&t, NULL, destroy_thread, d) != 0) {
        rd_kafka_destroy_flags(rk, flags);
        free(d);
        return true;
    }
    for (int waited = 0; waited < wait_ms && !atomic_load(&d->done); waited += 20)
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    if (!atomic_load(&d->done)) {
        pthread_detach(t);
        return false; /* d stays with the thread */
    }
    pthread_join(t, NULL);
    free(d);
    return true;
}
