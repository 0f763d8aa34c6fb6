/* Unit tests for src/consumer.c against librdkafka's mock cluster (a real Kafka
 * wire-protocol broker inside the test process): the pause state across a rebalance, and
 * a failed seek.
 *
 * The chaos run found it: the pipeline pauses fetching while PostgreSQL is down; a
 * rebalance then revoked the partitions, the pipeline resumed while they were not
 * assigned, and librdkafka, which keeps a partition's pause flag across a revoke and a
 * later assign, handed them back paused: they were never read again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "config.h"
#include "consumer.h"
#include "log.h"
#include "mock_kafka.h"

#define TOPIC "unit.consumer"
#define PER_PARTITION 20

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_revoke(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
    (void)parts;
    *(int *)opaque += 1;
}

static int assigned_count(rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a) return 0;
    int n = a->cnt;
    rd_kafka_topic_partition_list_destroy(a);
    return n;
}

/* Polls the plain consumer (it must keep polling to stay in the group), dropping what it
 * reads. */
static void poll_other(rd_kafka_t *other)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(other, 50);
    if (m) rd_kafka_message_destroy(m);
}

static void test_partitions_resumed_while_revoked_come_back_unpaused(void **state)
{
    (void)state;
    char errstr[512];

    /* the broker, with a two-partition topic holding records in both */
    struct mock_kafka k;
    mock_kafka_start(&k, TOPIC, 2);
    const char *bootstrap = k.bootstrap;
    for (int part = 0; part < 2; part++)
        mock_kafka_produce(&k, TOPIC, part, PER_PARTITION);

    /* our consumer, as the pipeline configures it */
    char *topics[] = {TOPIC};
    struct config cfg = {0};
    cfg.kafka.brokers = "embedded"; /* the mock cluster's timings */
    cfg.kafka.group_id = "unit-consumer";
    cfg.kafka.topics = (struct strlist){topics, 1};
    int revoked = 0;
    char *err = NULL;
    struct consumer *c = consumer_create(&cfg, bootstrap, on_revoke, &revoked, &err);
    if (!c) fail_msg("consumer_create: %s", err ? err : "?");
    rd_kafka_t *rk = consumer_handle(c);

    /* it reads, then PostgreSQL "goes down": fetching paused */
    int64_t deadline = mono_ms() + 30000;
    rd_kafka_message_t *m = NULL;
    while (!m && mono_ms() < deadline) {
        m = consumer_poll(c, 100);
        if (m && m->err) {
            rd_kafka_message_destroy(m);
            m = NULL;
        }
    }
    assert_non_null(m);
    rd_kafka_message_destroy(m);
    assert_int_equal(assigned_count(rk), 2);
    consumer_pause(c, true);

    /* a second member joins: every partition is revoked (eager protocol) */
    rd_kafka_conf_t *c2 = rd_kafka_conf_new();
    mock_kafka_set(c2, "bootstrap.servers", bootstrap);
    mock_kafka_set(c2, "group.id", "unit-consumer");
    mock_kafka_set(c2, "enable.auto.commit", "false");
    mock_kafka_set(c2, "session.timeout.ms", "6000");
    mock_kafka_set(c2, "heartbeat.interval.ms", "1000");
    rd_kafka_t *other = rd_kafka_new(RD_KAFKA_CONSUMER, c2, errstr, sizeof errstr);
    assert_non_null(other);
    rd_kafka_poll_set_consumer(other);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, TOPIC, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(other, sub), 0);
    rd_kafka_topic_partition_list_destroy(sub);

    deadline = mono_ms() + 60000;
    while (!revoked && mono_ms() < deadline) {
        m = consumer_poll(c, 50);
        if (m) rd_kafka_message_destroy(m); /* paused: at most what was already queued */
        poll_other(other);
    }
    assert_int_equal(revoked, 1);
    /* PostgreSQL is back while nothing is assigned: the resume reaches no partition */
    assert_int_equal(assigned_count(rk), 0);
    consumer_pause(c, false);

    /* the partition handed back must be read: nothing was committed, so from offset 0 */
    deadline = mono_ms() + 60000;
    int got = 0;
    while (!got && mono_ms() < deadline) {
        m = consumer_poll(c, 50);
        if (m) {
            if (!m->err) got++;
            rd_kafka_message_destroy(m);
        }
        poll_other(other);
    }
    int n = assigned_count(rk);
    if (!got)
        fail_msg("no record read in 60 s after the rebalance (%d partition(s) assigned): the "
                 "partition came back paused",
                 n);
    assert_int_equal(n, 1);

    rd_kafka_consumer_close(other);
    rd_kafka_destroy(other);
    consumer_destroy(c);
    mock_kafka_stop(&k);
}

static int failing_seeks;

/* a seek that fails for every partition, as librdkafka reports it */
static rd_kafka_error_t *failing_seek(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts,
                                      int timeout_ms)
{
    (void)rk;
    (void)timeout_ms;
    failing_seeks++;
    for (int i = 0; i < parts->cnt; i++)
        parts->elems[i].err = RD_KAFKA_RESP_ERR__STATE;
    return NULL;
}

/* The first record of partition 0 that arrives within ms, or -1 (partition 1's are read
 * and dropped). */
static int64_t next_offset_of_p0(struct consumer *c, int ms)
{
    int64_t deadline = mono_ms() + ms;
    while (mono_ms() < deadline) {
        rd_kafka_message_t *m = consumer_poll(c, 50);
        if (!m) continue;
        int64_t off = !m->err && m->partition == 0 ? m->offset : -1;
        rd_kafka_message_destroy(m);
        if (off >= 0) return off;
    }
    return -1;
}

static void test_a_failed_seek_pauses_the_partition_until_a_seek_works(void **state)
{
    (void)state;
    struct mock_kafka k;
    mock_kafka_start(&k, TOPIC ".seek", 2);
    const char *bootstrap = k.bootstrap;
    for (int part = 0; part < 2; part++)
        mock_kafka_produce(&k, TOPIC ".seek", part, PER_PARTITION);

    char *topics[] = {TOPIC ".seek"};
    struct config cfg = {0};
    cfg.kafka.brokers = "embedded";
    cfg.kafka.group_id = "unit-consumer-seek";
    cfg.kafka.topics = (struct strlist){topics, 1};
    int revoked = 0;
    char *err = NULL;
    struct consumer *c = consumer_create(&cfg, bootstrap, on_revoke, &revoked, &err);
    if (!c) fail_msg("consumer_create: %s", err ? err : "?");
    assert_int_equal(next_offset_of_p0(c, 30000), 0);

    /* the pipeline seeks partition 0 back to 0 (its first unwritten record): it fails */
    consumer_set_seek_impl(c, failing_seek);
    rd_kafka_topic_partition_list_t *back = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(back, TOPIC ".seek", 0)->offset = 0;
    consumer_seek(c, back);
    rd_kafka_topic_partition_list_destroy(back);
    /* nothing more of partition 0 while the seek fails, also when fetching is resumed */
    consumer_pause(c, true);
    consumer_pause(c, false);
    assert_int_equal(next_offset_of_p0(c, 2500), -1);
    assert_true(failing_seeks >= 2); /* sought again */

    /* the seek works again: partition 0 starts where it was sought to */
    consumer_set_seek_impl(c, NULL);
    assert_int_equal(next_offset_of_p0(c, 30000), 0);

    consumer_destroy(c);
    mock_kafka_stop(&k);
}

int main(void)
{
    log_configure("info", NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partitions_resumed_while_revoked_come_back_unpaused),
        cmocka_unit_test(test_a_failed_seek_pauses_the_partition_until_a_seek_works),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
