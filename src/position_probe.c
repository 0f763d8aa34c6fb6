#include "position_probe.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "deadline.h"
#include "kafka_util.h"
#include "log.h"

#define FETCH_WAIT_MS 5000     /* for one fetch (a new connection's first takes a while) */
#define WATERMARK_WAIT_MS 2000 /* for one watermark query */
#define STOP_POLL_MS 200       /* a fetch looks at the stop flag this often */
#define ROUND_BUDGET_MS 10000  /* for all of a round; what is left waits for the next */

/* One record as the consumer saw it. */
struct seen {
    bool set;
    int64_t offset, timestamp;
    uint64_t key; /* FNV-1a of the key */
    size_t len;
};

/* One partition the consumer reads. */
struct track {
    char *topic;
    int32_t partition;
    struct seen last;    /* the last record read */
    struct seen first;   /* the first record read since the previous round */
    struct seen witness; /* to be fetched again at the next round */
};

struct position_probe {
    rd_kafka_t *rk;
    int interval_ms;
    pthread_mutex_t lock; /* tracks, replaced, epoch */
    pthread_cond_t wake;
    pthread_mutex_t round_lock; /* one round at a time */
    struct track *tracks;
    size_t ntracks, cap;
    size_t last; /* the track of the record seen last */
    rd_kafka_topic_partition_list_t *replaced;
    atomic_bool any_replaced;
    unsigned epoch; /* bumped by forget: a round in progress drops its findings */
    atomic_bool stop;
    bool started;
    pthread_t thread;
};

/* What a round is to check: copied out of the lock. */
struct check {
    char *topic;
    int32_t partition;
    struct seen w;
};

enum verdict { HOLDS, REPLACED, UNKNOWN };

static uint64_t fnv1a(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void position_probe_saw(struct position_probe *p, const char *topic, int32_t partition,
                        int64_t offset, int64_t timestamp, const void *key, size_t key_len,
                        size_t len)
{
    if (!p) return;
    struct seen s = {.set = true,
                     .offset = offset,
                     .timestamp = timestamp,
                     .key = key ? fnv1a(key, key_len) : 0,
                     .len = len};
    pthread_mutex_lock(&p->lock);
    /* records come in runs of one partition: the one seen last first */
    struct track *t = p->last < p->ntracks ? &p->tracks[p->last] : NULL;
    if (t && (t->partition != partition || strcmp(t->topic, topic) != 0)) t = NULL;
    for (size_t i = 0; i < p->ntracks && !t; i++)
        if (p->tracks[i].partition == partition && strcmp(p->tracks[i].topic, topic) == 0)
            t = &p->tracks[i];
    if (!t) {
        if (p->ntracks == p->cap) {
            p->cap = p->cap ? p->cap * 2 : 8;
            p->tracks = xrealloc(p->tracks, p->cap * sizeof *p->tracks);
        }
        t = &p->tracks[p->ntracks++];
        *t = (struct track){.topic = xstrdup(topic), .partition = partition};
    }
    t->last = s;
    if (!t->first.set) t->first = s;
    p->last = (size_t)(t - p->tracks);
    pthread_mutex_unlock(&p->lock);
}

static void clear_tracks(struct position_probe *p)
{
    for (size_t i = 0; i < p->ntracks; i++)
        free(p->tracks[i].topic);
    p->ntracks = 0;
}

void position_probe_forget(struct position_probe *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    clear_tracks(p);
    p->epoch++;
    rd_kafka_topic_partition_list_destroy(p->replaced);
    p->replaced = rd_kafka_topic_partition_list_new(4);
    atomic_store(&p->any_replaced, false);
    pthread_mutex_unlock(&p->lock);
}

rd_kafka_topic_partition_list_t *position_probe_replaced(struct position_probe *p)
{
    if (!p || !atomic_load(&p->any_replaced)) return NULL;
    pthread_mutex_lock(&p->lock);
    rd_kafka_topic_partition_list_t *l = p->replaced;
    p->replaced = rd_kafka_topic_partition_list_new(4);
    atomic_store(&p->any_replaced, false);
    pthread_mutex_unlock(&p->lock);
    if (l->cnt) return l;
    rd_kafka_topic_partition_list_destroy(l);
    return NULL;
}

/* The witnesses of this round, and the next round's: each partition's witness is the last
 * record read before now; one that had none yet is checked with the first record read
 * since it was assigned (read after the previous round). Caller holds the lock. */
static struct check *take_checks(struct position_probe *p, size_t *n)
{
    struct check *c = xcalloc(p->ntracks + 1, sizeof *c);
    *n = 0;
    for (size_t i = 0; i < p->ntracks; i++) {
        struct track *t = &p->tracks[i];
        struct seen w = t->witness.set ? t->witness : t->first;
        if (w.set) c[(*n)++] = (struct check){xstrdup(t->topic), t->partition, w};
        t->witness = t->last;
        t->first.set = false;
    }
    return c;
}

/* Fetches the record at w's offset with the probe's own client and compares it. */
static enum verdict fetch_and_compare(struct position_probe *p, const struct check *c)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, c->topic, NULL);
    if (!rkt) return UNKNOWN;
    enum verdict v = UNKNOWN;
    if (rd_kafka_consume_start(rkt, c->partition, c->w.offset) == -1) {
        rd_kafka_topic_destroy(rkt);
        return UNKNOWN;
    }
    int64_t end = mono_now_ms() + FETCH_WAIT_MS;
    for (int64_t left; (left = end - mono_now_ms()) > 0;) {
        if (atomic_load(&p->stop)) break;
        rd_kafka_message_t *m =
            rd_kafka_consume(rkt, c->partition, (int)(left < STOP_POLL_MS ? left : STOP_POLL_MS));
        if (!m) continue;
        bool done = true;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF || (!m->err && m->offset < c->w.offset)) {
            done = false;
        } else if (!m->err && m->offset == c->w.offset) {
            int64_t ts = rd_kafka_message_timestamp(m, NULL);
            uint64_t key = m->key ? fnv1a(m->key, m->key_len) : 0;
            v = ts == c->w.timestamp && key == c->w.key && m->len == c->w.len ? HOLDS : REPLACED;
        } /* an error, or a later offset (compacted away, or a control record): unknown */
        rd_kafka_message_destroy(m);
        if (done) break;
    }
    rd_kafka_consume_stop(rkt, c->partition);
    rd_kafka_topic_destroy(rkt);
    return v;
}

static enum verdict verify(struct position_probe *p, const struct check *c)
{
    int64_t lo = -1, hi = -1;
    if (rd_kafka_query_watermark_offsets(p->rk, c->topic, c->partition, &lo, &hi,
                                         WATERMARK_WAIT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return UNKNOWN; /* a topic being deleted, a broker away: the next round */
    if (c->w.offset >= hi) return REPLACED; /* the log ends before it */
    if (c->w.offset < lo) return UNKNOWN;   /* removed by retention */
    return fetch_and_compare(p, c);
}

static void report(struct position_probe *p, const struct check *c, unsigned epoch)
{
    pthread_mutex_lock(&p->lock);
    if (epoch == p->epoch) {
        rd_kafka_topic_partition_list_add(p->replaced, c->topic, c->partition)->offset =
            c->w.offset;
        atomic_store(&p->any_replaced, true);
    }
    pthread_mutex_unlock(&p->lock);
    log_warn("kafka: %s[%d] no longer holds at offset %" PRId64 " the record this consumer "
             "read there (the topic was deleted and created again, or its log cut short): the "
             "consumer's position may be in another log",
             c->topic, (int)c->partition, c->w.offset);
}

int position_probe_round(struct position_probe *p)
{
    pthread_mutex_lock(&p->round_lock);
    pthread_mutex_lock(&p->lock);
    size_t n;
    struct check *checks = take_checks(p, &n);
    unsigned epoch = p->epoch;
    pthread_mutex_unlock(&p->lock);
    int replaced = 0;
    int64_t end = mono_now_ms() + ROUND_BUDGET_MS;
    for (size_t i = 0; i < n; i++) {
        if (!atomic_load(&p->stop) && mono_now_ms() < end && verify(p, &checks[i]) == REPLACED) {
            report(p, &checks[i], epoch);
            replaced++;
        }
        free(checks[i].topic);
    }
    free(checks);
    pthread_mutex_unlock(&p->round_lock);
    return replaced;
}

static void *run(void *arg)
{
    struct position_probe *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!atomic_load(&p->stop)) {
        struct timespec ts = deadline_after_ms(p->interval_ms);
        pthread_cond_timedwait(&p->wake, &p->lock, &ts);
        if (atomic_load(&p->stop)) break;
        pthread_mutex_unlock(&p->lock);
        position_probe_round(p);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* The consumer's configuration (brokers, security, isolation), as a client that only
 * fetches what it is told: no commits, no offset store, an error rather than a reset. */
static rd_kafka_t *probe_client(const struct config *cfg, const char *bootstrap, char **err)
{
    rd_kafka_conf_t *conf = kafka_consumer_conf(cfg, bootstrap, err);
    if (!conf) return NULL;
    const char *own[][2] = {
        {"client.id", "eventsink-position-probe"},
        {"auto.offset.reset", "error"},
        {"statistics.interval.ms", "0"},
        {"enable.partition.eof", "false"},
        {"queued.min.messages", "1"},
        {"queued.max.messages.kbytes", "1024"},
        {"fetch.message.max.bytes", "65536"},
        {"fetch.wait.max.ms", "100"},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!kafka_conf_set(conf, own[i][0], own[i][1], err)) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        struct buf m = {0};
        buf_printf(&m, "kafka: cannot create the position probe's client: %s", errstr);
        *err = m.data;
    }
    return rk;
}

struct position_probe *position_probe_start(const struct config *cfg, const char *bootstrap,
                                            int interval_ms, char **err)
{
    struct position_probe *p = xcalloc(1, sizeof *p);
    p->interval_ms = interval_ms;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->round_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->replaced = rd_kafka_topic_partition_list_new(4);
    p->rk = probe_client(cfg, bootstrap, err);
    if (!p->rk) goto error;
    int e = pthread_create(&p->thread, NULL, run, p);
    if (e != 0) {
        struct buf m = {0};
        buf_printf(&m, "kafka: cannot start the position probe: %s", strerror(e));
        *err = m.data;
        goto error;
    }
    p->started = true;
    return p;
error:
    position_probe_stop(p);
    return NULL;
}

void position_probe_stop(struct position_probe *p)
{
    if (!p) return;
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->stop, true);
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    if (p->rk && !kafka_destroy_bounded(p->rk, 0, KAFKA_DESTROY_WAIT_MS))
        log_warn("kafka: the position probe's client did not shut down within %d ms; exiting "
                 "without waiting for it",
                 KAFKA_DESTROY_WAIT_MS);
    clear_tracks(p);
    free(p->tracks);
    rd_kafka_topic_partition_list_destroy(p->replaced);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->round_lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
