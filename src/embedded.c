#include "embedded.h"

#include <stdlib.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "buf.h"
#include "log.h"

struct embedded_kafka {
    rd_kafka_t *owner; /* the mock cluster lives inside this handle */
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;
};

struct embedded_kafka *embedded_kafka_start(const struct config *cfg, char **err)
{
    struct embedded_kafka *k = xcalloc(1, sizeof *k);
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    /* rd_kafka_new takes ownership of conf on success only */
    k->owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!k->owner) {
        rd_kafka_conf_destroy(conf);
        *err = xstrdup(errstr);
        goto error;
    }
    k->mock = rd_kafka_mock_cluster_new(k->owner, 1);
    if (!k->mock) {
        *err = xstrdup("cannot start the embedded Kafka (librdkafka mock cluster)");
        goto error;
    }
    for (size_t i = 0; i < cfg->kafka.topics.n; i++) {
        const char *t = cfg->kafka.topics.items[i];
        if (t[0] != '^') rd_kafka_mock_topic_create(k->mock, t, 4, 1);
    }
    k->bootstrap = xstrdup(rd_kafka_mock_cluster_bootstraps(k->mock));
    log_warn("embedded Kafka (librdkafka mock cluster, in memory, NOT durable) listening at %s",
             k->bootstrap);
    return k;
error:
    embedded_kafka_stop(k);
    return NULL;
}

const char *embedded_kafka_bootstrap(const struct embedded_kafka *k)
{
    return k->bootstrap;
}

void embedded_kafka_stop(struct embedded_kafka *k)
{
    if (!k) return;
    if (k->mock) rd_kafka_mock_cluster_destroy(k->mock);
    if (k->owner) rd_kafka_destroy(k->owner);
    free(k->bootstrap);
    free(k);
}
