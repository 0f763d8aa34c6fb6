#include "producer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "buf.h"
#include "deadline.h"
#include "kafka_util.h"
#include "log.h"

struct producer {
    rd_kafka_t *rk;
    int message_timeout_ms;
    pthread_t poller;
    bool poller_started;
    atomic_bool stop;
    pthread_mutex_t lock;
    pthread_cond_t delivered;
};

struct delivery {
    struct produce_result res; /* under the producer's lock */
    atomic_int refs;
};

void producer_release(struct delivery *d)
{
    if (d && atomic_fetch_sub(&d->refs, 1) == 1) free(d);
}

/* Whether Kafka may have written a message whose delivery failed. librdkafka says
 * "possibly persisted" for a request that timed out on the wire, and "not persisted" for a
 * message that timed out before its request was sent; yet behind a network that drops
 * packets, messages it reports as timed out and "not persisted" are written once the
 * network is back (librdkafka issue #1476; seen here with the broker's link cut,
 * tests/e2e/test_partitions.py). So a timeout counts as "not written" only for a message
 * that never had a partition: without metadata it never left the local queue. */
static bool may_be_written(const rd_kafka_message_t *m)
{
    if (!m->err) return false;
    if (m->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT) return m->partition != RD_KAFKA_PARTITION_UA;
    return rd_kafka_message_status(m) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct producer *p = opaque;
    struct delivery *d = m->_private;
    if (!d) return;
    pthread_mutex_lock(&p->lock);
    d->res.err = m->err;
    d->res.possibly_persisted = may_be_written(m);
    d->res.partition = m->partition;
    d->res.offset = m->offset;
    d->res.done = true;
    pthread_cond_broadcast(&p->delivered);
    pthread_mutex_unlock(&p->lock);
    producer_release(d);
}

void producer_result(struct producer *p, const struct delivery *d, struct produce_result *out)
{
    pthread_mutex_lock(&p->lock);
    *out = d->res;
    pthread_mutex_unlock(&p->lock);
}

bool producer_kafka_reachable(struct producer *p, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    bool up = md->broker_cnt > 0;
    rd_kafka_metadata_destroy(md);
    return up;
}

int producer_answer_bound_ms(const struct producer *p)
{
    return p->message_timeout_ms + 5000; /* the timeout scan runs about once a second */
}

static void *poll_loop(void *arg)
{
    struct producer *p = arg;
    while (!atomic_load(&p->stop))
        rd_kafka_poll(p->rk, 100);
    return NULL;
}

struct producer *producer_create(const struct config *cfg, const char *bootstrap, char **err)
{
    struct producer *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->delivered, NULL);
    rd_kafka_conf_t *conf = kafka_producer_conf(cfg, bootstrap, err);
    if (!conf) goto error;
    char timeout[32];
    size_t tlen = sizeof timeout;
    p->message_timeout_ms =
        rd_kafka_conf_get(conf, "message.timeout.ms", timeout, &tlen) == RD_KAFKA_CONF_OK
            ? atoi(timeout)
            : 300000;
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    char errstr[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        *err = xstrdup(errstr);
        goto conf_error;
    }
    if (pthread_create(&p->poller, NULL, poll_loop, p) != 0) {
        *err = xstrdup("cannot start the producer's delivery thread");
        goto error;
    }
    p->poller_started = true;
    return p;
conf_error:
    if (!p->rk) rd_kafka_conf_destroy(conf);
error:
    producer_destroy(p);
    return NULL;
}

void producer_destroy(struct producer *p)
{
    if (!p) return;
    if (p->rk) {
        rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, 5000);
        if (e)
            log_warn("kafka producer: messages still in flight at exit: %s", rd_kafka_err2str(e));
    }
    atomic_store(&p->stop, true);
    if (p->poller_started) pthread_join(p->poller, NULL);
    if (p->rk) rd_kafka_destroy(p->rk);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->delivered);
    free(p);
}

bool producer_send(struct producer *p, const char *topic, const char *key, size_t key_len,
                   const char *value, size_t value_len, const struct record_header *headers,
                   size_t nheaders, struct delivery **d, char **err)
{
    struct delivery *res = NULL;
    if (d) {
        res = xcalloc(1, sizeof *res);
        atomic_init(&res->refs, 2); /* the caller's and the delivery report's */
        *d = NULL;
    }
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(nheaders);
    for (size_t i = 0; i < nheaders; i++)
        rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                            headers[i].value ? (ssize_t)headers[i].value_len : 0);
    rd_kafka_resp_err_t e;
    for (int attempt = 0;; attempt++) {
        e = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? key_len : 0),
            RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(res), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt >= 50) break;
        struct timespec ts = {0, 20 * 1000000L}; /* the local queue drains as Kafka acks */
        nanosleep(&ts, NULL);
    }
    if (e) {
        rd_kafka_headers_destroy(hdrs); /* ownership passes to librdkafka only on success */
        free(res);
        struct buf m = {0};
        buf_printf(&m, "cannot queue the message for %s: %s", topic, rd_kafka_err2str(e));
        *err = m.data;
        return false;
    }
    if (d) *d = res;
    return true;
}

bool producer_wait(struct producer *p, struct delivery *const *d, size_t n, int timeout_ms)
{
    struct timespec until = deadline_after_ms(timeout_ms);
    pthread_mutex_lock(&p->lock);
    size_t i = 0;
    bool ok = true;
    while (i < n) {
        if (d[i]->res.done) {
            i++;
            continue;
        }
        if (pthread_cond_timedwait(&p->delivered, &p->lock, &until) == ETIMEDOUT) {
            ok = false;
            break;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

const char *producer_err_str(int err)
{
    return rd_kafka_err2str((rd_kafka_resp_err_t)err);
}
