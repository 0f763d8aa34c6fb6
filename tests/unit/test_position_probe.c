/* Unit tests for src/position_probe.c against librdkafka's mock cluster: a record the
 * consumer read is fetched again with the probe's own client and compared. The log holds
 * it: nothing to do. Another record at its offset, or a log that ends before it (a topic
 * deleted and created again, which the mock cluster cannot do, looks like this to the
 * probe): the partition is reported replaced, once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "mock_kafka.h"
#include "position_probe.h"

#define TOPIC "unit.probe"
#define HOUR_MS (3600 * 1000) /* the probe's own rounds never come during a test */

struct fixture {
    struct mock_kafka k;
    struct position_probe *p;
    int64_t ts[5]; /* the records' Kafka timestamps, as a consumer read them */
};

/* Reads the 5 records of partition 0 as the consumer would, to learn their timestamps. */
static void read_timestamps(struct fixture *f)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    mock_kafka_set(conf, "bootstrap.servers", f->k.bootstrap);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, TOPIC, NULL);
    assert_int_equal(rd_kafka_consume_start(rkt, 0, 0), 0);
    for (int got = 0; got < 5;) {
        rd_kafka_message_t *m = rd_kafka_consume(rkt, 0, 10000);
        assert_non_null(m);
        if (!m->err) f->ts[got++] = rd_kafka_message_timestamp(m, NULL);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consume_stop(rkt, 0);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    mock_kafka_start(&f->k, TOPIC, 1);
    mock_kafka_produce(&f->k, TOPIC, 0, 5);
    read_timestamps(f);
    struct config cfg = {0};
    cfg.kafka.brokers = "embedded";
    cfg.kafka.group_id = "unit-probe";
    char *err = NULL;
    f->p = position_probe_start(&cfg, f->k.bootstrap, HOUR_MS, &err);
    if (!f->p) fail_msg("position_probe_start: %s", err ? err : "?");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    position_probe_stop(f->p);
    mock_kafka_stop(&f->k);
    free(f);
    return 0;
}

static void saw(struct fixture *f, int64_t offset, int64_t ts, const char *key)
{
    position_probe_saw(f->p, TOPIC, 0, offset, ts, key, strlen(key), 2);
}

static void test_a_log_that_holds_what_was_read_is_left_alone(void **state)
{
    struct fixture *f = *state;
    saw(f, 0, f->ts[0], "k-0");
    saw(f, 3, f->ts[3], "k-3");
    /* first round: the first record read since the assignment; second: the last one */
    assert_int_equal(position_probe_round(f->p), 0);
    assert_int_equal(position_probe_round(f->p), 0);
    assert_null(position_probe_replaced(f->p));
}

static void test_another_record_at_the_offset_is_a_replaced_log(void **state)
{
    struct fixture *f = *state;
    /* what the consumer read at offset 2 had another key: the log there is another one */
    saw(f, 2, f->ts[2], "k-old-2");
    assert_int_equal(position_probe_round(f->p), 1);
    rd_kafka_topic_partition_list_t *r = position_probe_replaced(f->p);
    assert_non_null(r);
    assert_int_equal(r->cnt, 1);
    assert_string_equal(r->elems[0].topic, TOPIC);
    assert_int_equal(r->elems[0].offset, 2);
    rd_kafka_topic_partition_list_destroy(r);
    assert_null(position_probe_replaced(f->p)); /* taken once */
    /* another timestamp is as good as another key */
    position_probe_forget(f->p);
    saw(f, 1, f->ts[1] - 1000, "k-1");
    assert_int_equal(position_probe_round(f->p), 1);
    rd_kafka_topic_partition_list_destroy(position_probe_replaced(f->p));
}

static void test_a_log_that_ends_before_the_record_is_a_replaced_log(void **state)
{
    struct fixture *f = *state;
    saw(f, 0, f->ts[0], "k-0");
    saw(f, 9, f->ts[4] + 1, "k-9");                  /* the old log was longer: 5 records now */
    assert_int_equal(position_probe_round(f->p), 0); /* checks the first: it holds */
    assert_int_equal(position_probe_round(f->p), 1); /* then the last read: gone */
    rd_kafka_topic_partition_list_t *r = position_probe_replaced(f->p);
    assert_non_null(r);
    assert_int_equal(r->elems[0].offset, 9);
    rd_kafka_topic_partition_list_destroy(r);
}

static void test_a_revocation_drops_what_was_seen(void **state)
{
    struct fixture *f = *state;
    saw(f, 2, f->ts[2], "k-old-2");
    position_probe_forget(f->p);
    assert_int_equal(position_probe_round(f->p), 0);
    assert_null(position_probe_replaced(f->p));
}

int main(void)
{
    log_configure("info", NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_log_that_holds_what_was_read_is_left_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_another_record_at_the_offset_is_a_replaced_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_log_that_ends_before_the_record_is_a_replaced_log,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_revocation_drops_what_was_seen, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
