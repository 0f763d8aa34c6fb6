#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "health.h"
#include "db_watchdog.h"
#include "policy_runner.h"
#include "status.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* A counter family keyed by up to two label values. */
struct series {
    char *l1, *l2;
    uint64_t value;
};

struct family {
    struct series *s;
    size_t n, cap;
};

static struct family consumed, persisted, dlq_events, replays, reloads, http_requests,
    jobs_finished, offset_reuse, partition_rereads;

static uint64_t *find_or_add(struct family *f, const char *l1, const char *l2)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->s[i].l1, l1) == 0 && (!l2 || strcmp(f->s[i].l2, l2) == 0))
            return &f->s[i].value;
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->s = xrealloc(f->s, f->cap * sizeof *f->s);
    }
    f->s[f->n].l1 = xstrdup(l1);
    f->s[f->n].l2 = l2 ? xstrdup(l2) : NULL;
    f->s[f->n].value = 0;
    return &f->s[f->n++].value;
}

/* Topics come from the data: past METRICS_MAX_TOPICS distinct values they fold into
 * "other" so that a regex subscription over many topics cannot grow the series without
 * bound. */
static const char *topic_label(struct family *f, const char *topic)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->s[i].l1, topic) == 0) return topic;
    size_t distinct = 0;
    for (size_t i = 0; i < f->n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(f->s[j].l1, f->s[i].l1) == 0;
        distinct += !seen;
    }
    return distinct >= METRICS_MAX_TOPICS ? "other" : topic;
}

/* Series that exist from the start, at 0, so that dashboards and alerts see them before
 * the first event of their kind. */
static void preset(void)
{
    static bool done = false;
    if (done) return;
    done = true;
    static const char *const reasons[] = {
        "invalid_json", "invalid_utf8", "nul_character", "too_large",        "missing_tenant",
        "policy_error", "policy_route", "db_reject",     "duplicate_replay", NULL};
    for (const char *const *r = reasons; *r; r++)
        find_or_add(&dlq_events, *r, NULL);
    static const char *const sources[] = {"operator_api", "scheduled", "automated", "webhook",
                                          NULL};
    for (const char *const *src = sources; *src; src++) {
        find_or_add(&replays, *src, "ok");
        find_or_add(&replays, *src, "failed");
    }
    find_or_add(&reloads, "ok", NULL);
    find_or_add(&reloads, "error", NULL);
    static const char *const kinds[] = {"single",    "batch",   "range", "scheduled",
                                        "dlq_retry", "webhook", NULL};
    static const char *const ends[] = {"done", "failed", "cancelled", NULL};
    for (const char *const *k = kinds; *k; k++)
        for (const char *const *e = ends; *e; e++)
            find_or_add(&jobs_finished, *k, *e);
}

void metrics_events_consumed(const char *topic, uint64_t n)
{
    pthread_mutex_lock(&lock);
    *find_or_add(&consumed, topic_label(&consumed, topic), NULL) += n;
    pthread_mutex_unlock(&lock);
}

void metrics_offset_reuse(const char *topic)
{
    pthread_mutex_lock(&lock);
    *find_or_add(&offset_reuse, topic_label(&offset_reuse, topic), NULL) += 1;
    pthread_mutex_unlock(&lock);
}

static atomic_ulong write_conflicts;
static atomic_ulong retention_removed[4]; /* DLQ entries, jobs, job items, journal rows */

void metrics_retention_removed(int64_t dlq, int64_t jobs, int64_t items)
{
    atomic_fetch_add(&retention_removed[0], (unsigned long)dlq);
    atomic_fetch_add(&retention_removed[1], (unsigned long)jobs);
    atomic_fetch_add(&retention_removed[2], (unsigned long)items);
}

void metrics_retention_journal(int64_t rows)
{
    atomic_fetch_add(&retention_removed[3], (unsigned long)rows);
}

void metrics_write_conflict(void)
{
    atomic_fetch_add(&write_conflicts, 1);
}

void metrics_partition_reread(const char *topic)
{
    pthread_mutex_lock(&lock);
    *find_or_add(&partition_rereads, topic_label(&partition_rereads, topic), NULL) += 1;
    pthread_mutex_unlock(&lock);
}

void metrics_events_persisted(const char *topic, bool replayed, uint64_t n)
{
    pthread_mutex_lock(&lock);
    *find_or_add(&persisted, topic_label(&persisted, topic), replayed ? "replayed" : "original") +=
        n;
    pthread_mutex_unlock(&lock);
}

void metrics_dlq_event(const char *reason, uint64_t n)
{
    pthread_mutex_lock(&lock);
    preset();
    *find_or_add(&dlq_events, reason, NULL) += n;
    pthread_mutex_unlock(&lock);
}

void metrics_replay(const char *source, const char *result, uint64_t n)
{
    pthread_mutex_lock(&lock);
    preset();
    *find_or_add(&replays, source, result) += n;
    pthread_mutex_unlock(&lock);
}

void metrics_job_finished(const char *kind, const char *status)
{
    pthread_mutex_lock(&lock);
    preset();
    *find_or_add(&jobs_finished, kind, status) += 1;
    pthread_mutex_unlock(&lock);
}

void metrics_policy_reload(bool ok)
{
    pthread_mutex_lock(&lock);
    preset();
    *find_or_add(&reloads, ok ? "ok" : "error", NULL) += 1;
    pthread_mutex_unlock(&lock);
}

void metrics_http_request(const char *route, int code)
{
    char c[8];
    snprintf(c, sizeof c, "%d", code);
    pthread_mutex_lock(&lock);
    *find_or_add(&http_requests, route, c) += 1;
    pthread_mutex_unlock(&lock);
}

/* ---- histograms --------------------------------------------------------------------------- */

static const double size_bounds[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
static const double dur_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,  0.5,    1,     2.5,  5,     10};
#define NSIZE (sizeof size_bounds / sizeof size_bounds[0])
#define NDUR (sizeof dur_bounds / sizeof dur_bounds[0])

static uint64_t size_buckets[NSIZE], dur_buckets[NDUR], batch_count;
static double size_sum, dur_sum;

void metrics_batch(size_t events, double seconds)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < NSIZE; i++)
        size_buckets[i] += (double)events <= size_bounds[i];
    for (size_t i = 0; i < NDUR; i++)
        dur_buckets[i] += seconds <= dur_bounds[i];
    batch_count++;
    size_sum += (double)events;
    dur_sum += seconds;
    pthread_mutex_unlock(&lock);
}

/* ---- lag ---------------------------------------------------------------------------------- */

struct lag {
    char *topic;
    int32_t partition;
    int64_t lag;
};
static struct lag *lags, *lags_next;
static size_t nlags, nlags_next, caplags_next;

static void lags_free(struct lag *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i].topic);
    free(l);
}

void metrics_lag_begin(void)
{
    /* only the consumer thread builds the next table */
    nlags_next = caplags_next = 0;
    lags_next = NULL;
}

void metrics_lag_set(const char *topic, int32_t partition, int64_t lag)
{
    if (nlags_next == caplags_next) {
        caplags_next = caplags_next ? caplags_next * 2 : 16;
        lags_next = xrealloc(lags_next, caplags_next * sizeof *lags_next);
    }
    lags_next[nlags_next++] = (struct lag){xstrdup(topic), partition, lag};
}

void metrics_lag_end(void)
{
    pthread_mutex_lock(&lock);
    struct lag *old = lags;
    size_t nold = nlags;
    lags = lags_next;
    nlags = nlags_next;
    pthread_mutex_unlock(&lock);
    lags_free(old, nold);
    lags_next = NULL;
    nlags_next = 0;
}

/* ---- rendering ---------------------------------------------------------------------------- */

void metrics_label_value(struct buf *out, const char *s)
{
    buf_putc(out, '"');
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(out, "\\\\");
        else if (*s == '"')
            buf_puts(out, "\\\"");
        else if (*s == '\n')
            buf_puts(out, "\\n");
        else
            buf_putc(out, *s);
    }
    buf_putc(out, '"');
}

static void header(struct buf *o, const char *name, const char *type, const char *help)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void family(struct buf *o, const char *name, const char *help, struct family *f,
                   const char *k1, const char *k2)
{
    header(o, name, "counter", help);
    for (size_t i = 0; i < f->n; i++) {
        buf_printf(o, "%s{%s=", name, k1);
        metrics_label_value(o, f->s[i].l1);
        if (k2) {
            buf_printf(o, ",%s=", k2);
            metrics_label_value(o, f->s[i].l2);
        }
        buf_printf(o, "} %" PRIu64 "\n", f->s[i].value);
    }
}

static void gauge(struct buf *o, const char *name, const char *help, double v)
{
    header(o, name, "gauge", help);
    buf_printf(o, "%s %.17g\n", name, v);
}

static void histogram(struct buf *o, const char *name, const char *help, const double *bounds,
                      const uint64_t *buckets, size_t nb, double sum)
{
    header(o, name, "histogram", help);
    for (size_t i = 0; i < nb; i++)
        buf_printf(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], buckets[i]);
    buf_printf(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, batch_count);
    buf_printf(o, "%s_sum %.17g\n%s_count %" PRIu64 "\n", name, sum, name, batch_count);
}

static void process_metrics(struct buf *o)
{
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long utime = 0, stime = 0, vsize = 0;
    unsigned long long starttime = 0;
    long rss = 0;
    if (f) {
        char line[2048];
        if (fgets(line, sizeof line, f)) {
            char *p = strrchr(line, ')'); /* the command name may hold spaces */
            if (p &&
                sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                       "%*d %llu %lu %ld",
                       &utime, &stime, &starttime, &vsize, &rss) != 5) {
                utime = stime = 0;
            }
        }
        fclose(f);
    }
    double boot = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "btime %lf", &boot) == 1) break;
        fclose(f);
    }
    size_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory handle itself */
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    header(o, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    buf_printf(o, "process_cpu_seconds_total %.17g\n", (double)(utime + stime) / (double)ticks);
    gauge(o, "process_resident_memory_bytes", "Resident memory size in bytes.",
          (double)rss * (double)page);
    gauge(o, "process_virtual_memory_bytes", "Virtual memory size in bytes.", (double)vsize);
    gauge(o, "process_open_fds", "Number of open file descriptors.", (double)fds);
    gauge(o, "process_max_fds", "Maximum number of open file descriptors.", (double)rl.rlim_cur);
    gauge(o, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
          boot + (double)starttime / (double)ticks);
}

void metrics_render(struct buf *o, const struct metrics_db_gauges *g)
{
    pthread_mutex_lock(&lock);
    preset();
    family(o, "eventsink_events_consumed_total", "Kafka records consumed.", &consumed, "topic",
           NULL);
    family(o, "eventsink_events_persisted_total", "Events written to the journal.", &persisted,
           "topic", "kind");
    family(o, "eventsink_offset_reuse_total",
           "Records at a Kafka position that held another record (topic recreated, offsets "
           "reset): kept at a new generation.",
           &offset_reuse, "topic", NULL);
    family(o, "eventsink_partition_rereads_total",
           "Partitions read again from their beginning because their log was replaced (a "
           "record at a reused position).",
           &partition_rereads, "topic", NULL);
    family(o, "eventsink_dlq_events_total", "Events written to the dead-letter queue.", &dlq_events,
           "reason", NULL);
    family(o, "eventsink_replays_total", "Events replayed, by replay source and result.", &replays,
           "source", "result");
    family(o, "eventsink_replay_jobs_finished_total",
           "Replay jobs that reached a final status, by kind and status.", &jobs_finished, "kind",
           "status");
    family(o, "eventsink_policy_reloads_total", "Policy reloads, by result.", &reloads, "result",
           NULL);
    family(o, "eventsink_http_requests_total", "HTTP API requests, by route and status code.",
           &http_requests, "route", "code");
    histogram(o, "eventsink_batch_size", "Events per written batch.", size_bounds, size_buckets,
              NSIZE, size_sum);
    histogram(o, "eventsink_batch_duration_seconds",
              "Time to write one batch to PostgreSQL and commit its offsets.", dur_bounds,
              dur_buckets, NDUR, dur_sum);
    header(o, "eventsink_consumer_lag", "gauge",
           "Messages between the committed position and the end of the partition.");
    for (size_t i = 0; i < nlags; i++) {
        buf_puts(o, "eventsink_consumer_lag{topic=");
        metrics_label_value(o, lags[i].topic);
        buf_printf(o, ",partition=\"%d\"} %" PRId64 "\n", (int)lags[i].partition, lags[i].lag);
    }
    pthread_mutex_unlock(&lock);

    if (g && g->dlq_pending >= 0)
        gauge(o, "eventsink_dlq_pending", "Dead-letter entries waiting (status pending).",
              (double)g->dlq_pending);
    if (g && g->replay_jobs_running >= 0)
        gauge(o, "eventsink_replay_jobs_running", "Replay jobs running now.",
              (double)g->replay_jobs_running);
    gauge(o, "eventsink_policy_version", "Version of the policy set in use.",
          (double)status_policy_version());
    gauge(o, "eventsink_postgres_up", "1 when the pipeline's PostgreSQL connection works.",
          status_postgres_up() ? 1 : 0);
    gauge(o, "eventsink_kafka_up", "1 when a Kafka broker connection is up.",
          status_kafka_up() ? 1 : 0);
    header(o, "eventsink_stalled", "gauge",
           "1 while the component has work and has made no progress for health.stall_after_s.");
    for (int c = 0; c < HEALTH_NCOMPONENTS; c++) {
        int64_t since;
        buf_printf(o, "eventsink_stalled{component=\"%s\"} %d\n",
                   health_component_name((enum health_component)c),
                   health_stalled((enum health_component)c, &since) ? 1 : 0);
    }
    header(o, "eventsink_write_conflicts_total", "counter",
           "Journal writes aborted by PostgreSQL for a conflict with another transaction "
           "(deadlock, lock timeout), or rolled back because another writer journaled records "
           "of the batch meanwhile (the sink_offsets fence), and written again.");
    buf_printf(o, "eventsink_write_conflicts_total %lu\n", atomic_load(&write_conflicts));
    header(o, "eventsink_pg_connections_cut_total", "counter",
           "PostgreSQL connections cut because a call got no answer past the server's "
           "statement_timeout and a margin (a frozen server, a network holding its packets); "
           "the work was done again on a new connection.");
    buf_printf(o, "eventsink_pg_connections_cut_total %lu\n", db_watchdog_cut_total());
    header(o, "eventsink_retention_removed_total", "counter",
           "Rows removed by retention (retention.dlq, retention.jobs, retention.journal: "
           "whole partitions), by table.");
    static const char *const tables[] = {"dead_letter_queue", "replay_jobs", "replay_job_items",
                                         "event_journal"};
    for (int t = 0; t < 4; t++)
        buf_printf(o, "eventsink_retention_removed_total{table=\"%s\"} %lu\n", tables[t],
                   atomic_load(&retention_removed[t]));
    header(o, "eventsink_policy_watchdog_total", "counter",
           "Policy calls abandoned by the watchdog (past sandbox.max_call_ms plus its margin).");
    buf_printf(o, "eventsink_policy_watchdog_total %ld\n", runner_abandoned_total());
    gauge(o, "eventsink_policy_abandoned_threads",
          "Abandoned policy calls whose thread has not come back yet (each holds a Lua state).",
          (double)runner_abandoned_alive());
    process_metrics(o);
}
