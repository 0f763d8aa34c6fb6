/* A Kafka broker for unit tests: librdkafka's mock cluster (a real Kafka wire-protocol
 * broker inside the test process), one topic, and a producer to fill it. */
#ifndef EVENTSINK_TEST_MOCK_KAFKA_H
#define EVENTSINK_TEST_MOCK_KAFKA_H

#include <stdio.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

struct mock_kafka {
    rd_kafka_t *owner; /* hosts the cluster */
    rd_kafka_mock_cluster_t *mc;
    const char *bootstrap;
    rd_kafka_t *prod;
};

static inline void mock_kafka_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[512];
    assert_int_equal(rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr), RD_KAFKA_CONF_OK);
}

static inline void mock_kafka_start(struct mock_kafka *k, const char *topic, int partitions)
{
    char errstr[512];
    rd_kafka_conf_t *oc = rd_kafka_conf_new();
    /* the handle only hosts the cluster: no bootstrap of its own, no warning about it */
    mock_kafka_set(oc, "log_level", "3");
    k->owner = rd_kafka_new(RD_KAFKA_PRODUCER, oc, errstr, sizeof errstr);
    assert_non_null(k->owner);
    k->mc = rd_kafka_mock_cluster_new(k->owner, 1);
    assert_non_null(k->mc);
    assert_int_equal(rd_kafka_mock_topic_create(k->mc, topic, partitions, 1), 0);
    k->bootstrap = rd_kafka_mock_cluster_bootstraps(k->mc);
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    mock_kafka_set(pc, "bootstrap.servers", k->bootstrap);
    k->prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
    assert_non_null(k->prod);
}

/* n records into the partition, keyed "k-<i>", and waits for them. */
static inline void mock_kafka_produce(struct mock_kafka *k, const char *topic, int partition, int n)
{
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "k-%d", i);
        assert_int_equal(rd_kafka_producev(k->prod, RD_KAFKA_V_TOPIC(topic),
                                           RD_KAFKA_V_PARTITION(partition),
                                           RD_KAFKA_V_KEY(key, strlen(key)),
                                           RD_KAFKA_V_VALUE("{}", 2), RD_KAFKA_V_END),
                         0);
    }
    assert_int_equal(rd_kafka_flush(k->prod, 10000), 0);
}

static inline void mock_kafka_stop(struct mock_kafka *k)
{
    rd_kafka_destroy(k->prod);
    rd_kafka_mock_cluster_destroy(k->mc);
    rd_kafka_destroy(k->owner);
}

#endif
