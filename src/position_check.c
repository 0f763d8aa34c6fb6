#include "position_check.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "buf.h"

struct position_check {
    /* per partition re-read from its beginning: the last offset consumed when that began */
    rd_kafka_topic_partition_list_t *marks;
    /* per partition started one record back: that record's offset, until it arrives */
    rd_kafka_topic_partition_list_t *checks;
};

struct position_check *position_check_new(void)
{
    struct position_check *pc = xcalloc(1, sizeof *pc);
    pc->marks = rd_kafka_topic_partition_list_new(8);
    pc->checks = rd_kafka_topic_partition_list_new(8);
    return pc;
}

void position_check_free(struct position_check *pc)
{
    if (!pc) return;
    rd_kafka_topic_partition_list_destroy(pc->marks);
    rd_kafka_topic_partition_list_destroy(pc->checks);
    free(pc);
}

void position_check_forget(struct position_check *pc)
{
    rd_kafka_topic_partition_list_destroy(pc->marks);
    pc->marks = rd_kafka_topic_partition_list_new(8);
    rd_kafka_topic_partition_list_destroy(pc->checks);
    pc->checks = rd_kafka_topic_partition_list_new(8);
}

void position_check_consumed(struct position_check *pc, const char *topic, int32_t partition,
                             int64_t offset)
{
    if (!pc->marks->cnt) return;
    rd_kafka_topic_partition_t *mark =
        rd_kafka_topic_partition_list_find(pc->marks, topic, partition);
    /* the re-read is past what was in flight when it began: a later incident is another one */
    if (mark && offset > mark->offset)
        rd_kafka_topic_partition_list_del(pc->marks, topic, partition);
}

bool position_check_take(struct position_check *pc, const char *topic, int32_t partition,
                         int64_t offset)
{
    rd_kafka_topic_partition_t *c =
        rd_kafka_topic_partition_list_find(pc->checks, topic, partition);
    if (!c) return false;
    bool is = c->offset == offset;
    rd_kafka_topic_partition_list_del(pc->checks, topic, partition); /* the first one decides */
    return is;
}

#define POSITION_CHECK_MS 10000 /* at most this long reading committed offsets and watermarks */

/* Sets each assigned partition that has a committed offset c to start at c - 1: the record
 * there is one this group has stored, so it comes back as a redelivery (a no-op) — unless
 * the topic was created again and the old topic's offsets reached the new one (a commit
 * that raced the deletion). Then the record differs from the stored one, it is journaled as
 * a reused offset, and the pipeline reads the partition again from its beginning
 * (position_check_reread). Without this check a new topic at least as long as the old
 * one would start at the old offsets, and its first records would never be read. A
 * partition whose committed offset is its first one, or out of range, starts at it as
 * before (auto.offset.reset decides); so does every partition when the offsets cannot be
 * read in time. */
void position_check_assign(struct position_check *pc, rd_kafka_t *rk,
                           rd_kafka_topic_partition_list_t *parts)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, committed, POSITION_CHECK_MS);
    if (e) {
        log_warn("kafka: cannot read the committed offsets (%s): the partitions start at them "
                 "without checking the record before",
                 rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(committed);
        return;
    }
    int checked = 0, skipped = 0;
    for (int i = 0; i < committed->cnt; i++) {
        const rd_kafka_topic_partition_t *c = &committed->elems[i];
        if (c->err || c->offset <= 0) continue;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        int left = POSITION_CHECK_MS -
                   (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        int64_t lo = -1, hi = -1;
        if (left <= 0 || rd_kafka_query_watermark_offsets(rk, c->topic, c->partition, &lo, &hi,
                                                          left) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            skipped++;
            continue;
        }
        if (c->offset - 1 < lo || c->offset > hi) continue; /* out of range: reset decides */
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(parts, c->topic, c->partition);
        if (p) {
            p->offset = c->offset - 1;
            rd_kafka_topic_partition_t *k =
                rd_kafka_topic_partition_list_find(pc->checks, c->topic, c->partition);
            if (!k) k = rd_kafka_topic_partition_list_add(pc->checks, c->topic, c->partition);
            k->offset = p->offset;
            checked++;
        }
    }
    rd_kafka_topic_partition_list_destroy(committed);
    if (checked)
        log_info("kafka: %d partition(s) start one record before their committed offset, to "
                 "check that the record there is the one stored",
                 checked);
    if (skipped)
        log_warn("kafka: %d partition(s) start at their committed offset unchecked: their "
                 "watermarks could not be read in time",
                 skipped);
}

/* The last offset this consumer handed out for the partition, or -1. */
static int64_t last_consumed(rd_kafka_t *rk, const char *topic, int32_t partition)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    int64_t last = -1;
    if (rd_kafka_position(rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR && l->elems[0].offset >= 0)
        last = l->elems[0].offset - 1;
    rd_kafka_topic_partition_list_destroy(l);
    return last;
}

/* Marks the partition as being read again from its beginning and adds it to todo. The mark
 * is the last offset consumed now: the records of the partition fetched before it were in
 * flight when the re-read began, and it covers them. */
static void begin_reread(struct position_check *pc, rd_kafka_t *rk, const char *topic,
                         int32_t partition, int64_t offset, rd_kafka_topic_partition_list_t *todo)
{
    rd_kafka_topic_partition_t *mark =
        rd_kafka_topic_partition_list_find(pc->marks, topic, partition);
    if (!mark) mark = rd_kafka_topic_partition_list_add(pc->marks, topic, partition);
    mark->offset = last_consumed(rk, topic, partition);
    if (mark->offset < offset) mark->offset = offset;
    rd_kafka_topic_partition_list_add(todo, topic, partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
    metrics_partition_reread(topic);
}

static bool in_flight_at_last_reread(struct position_check *pc, const char *topic,
                                     int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_t *mark =
        rd_kafka_topic_partition_list_find(pc->marks, topic, partition);
    return mark && offset <= mark->offset;
}

/* Seeks every partition in todo to its beginning. */
static void seek_rereads(struct position_check *pc, rd_kafka_t *rk,
                         rd_kafka_topic_partition_list_t *todo)
{
    if (!todo->cnt) return;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(rk, todo, 5000);
    if (e) {
        log_error("kafka: cannot seek to the beginning to read again: %s",
                  rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    for (int i = 0; i < todo->cnt; i++)
        if (e || todo->elems[i].err) {
            /* the next finding on the partition tries again */
            rd_kafka_topic_partition_list_del(pc->marks, todo->elems[i].topic,
                                              todo->elems[i].partition);
            if (!todo->elems[i].err) continue;
            log_error("kafka: cannot seek %s[%d] to its beginning to read it again: %s",
                      todo->elems[i].topic, (int)todo->elems[i].partition,
                      rd_kafka_err2str(todo->elems[i].err));
        }
}

void position_check_reread(struct position_check *pc, rd_kafka_t *rk,
                           const rd_kafka_topic_partition_list_t *reused)
{
    rd_kafka_topic_partition_list_t *todo = rd_kafka_topic_partition_list_new(reused->cnt);
    for (int i = 0; i < reused->cnt; i++) {
        const rd_kafka_topic_partition_t *r = &reused->elems[i];
        if (in_flight_at_last_reread(pc, r->topic, r->partition, r->offset)) continue;
        int64_t lo = -1, hi = -1;
        rd_kafka_get_watermark_offsets(rk, r->topic, r->partition, &lo, &hi);
        if (r->offset == 0 || (lo >= 0 && r->offset <= lo)) continue; /* nothing before it */
        begin_reread(pc, rk, r->topic, r->partition, r->offset, todo);
        log_warn("kafka: %s[%d] holds other records than the ones stored at its offsets (the "
                 "first seen at %" PRId64 "): reading it again from its beginning, so that no "
                 "record of the new log before that is skipped (what is stored already is not "
                 "stored again)",
                 r->topic, (int)r->partition, r->offset);
    }
    seek_rereads(pc, rk, todo);
    rd_kafka_topic_partition_list_destroy(todo);
}

void position_check_reread_replaced(struct position_check *pc, rd_kafka_t *rk,
                                    const rd_kafka_topic_partition_list_t *replaced)
{
    rd_kafka_topic_partition_list_t *todo = rd_kafka_topic_partition_list_new(replaced->cnt);
    for (int i = 0; i < replaced->cnt; i++) {
        const rd_kafka_topic_partition_t *r = &replaced->elems[i];
        if (in_flight_at_last_reread(pc, r->topic, r->partition, r->offset)) continue;
        begin_reread(pc, rk, r->topic, r->partition, r->offset, todo);
        log_warn("kafka: %s[%d]: reading it again from its beginning, as its log was replaced "
                 "after this consumer read offset %" PRId64 " (what is stored already is not "
                 "stored again)",
                 r->topic, (int)r->partition, r->offset);
    }
    seek_rereads(pc, rk, todo);
    rd_kafka_topic_partition_list_destroy(todo);
}
