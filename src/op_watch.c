/* `eventsink jobs watch J` and `--wait`: follows a replay job through GET
 * /replay/jobs/{id} once a second until it ends. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "op.h"
#include "op_out.h"

#define POLL_MS 1000
#define RATE_SAMPLES 10  /* the rate is taken over the last 10 polls */
#define UNREACHABLE_S 60 /* the API may be away this long before watching gives up */
#define BAR_WIDTH 24

struct sample {
    int64_t t_ms;
    int64_t done;
};

struct progress {
    struct sample s[RATE_SAMPLES];
    int n, next;
    int64_t start_ms;
};

static const char *str(const struct jsonv *job, const char *key)
{
    const struct jsonv *v = jsonv_get(job, key);
    return v && v->type == JV_STRING ? v->str : "?";
}

static bool ended(const char *status)
{
    return strcmp(status, "done") == 0 || strcmp(status, "failed") == 0 ||
           strcmp(status, "cancelled") == 0;
}

/* events per second over the samples kept, or a negative value when not known yet */
static double rate_of(struct progress *p, int64_t now, int64_t done)
{
    p->s[p->next] = (struct sample){now, done};
    p->next = (p->next + 1) % RATE_SAMPLES;
    if (p->n < RATE_SAMPLES) p->n++;
    const struct sample *old = &p->s[p->n < RATE_SAMPLES ? 0 : p->next];
    if (now - old->t_ms < 500) return -1;
    return (double)(done - old->done) * 1000.0 / (double)(now - old->t_ms);
}

static void eta_text(char *out, size_t n, double rate, int64_t left)
{
    if (rate <= 0 || left <= 0) {
        snprintf(out, n, left <= 0 ? "0s" : "?");
        return;
    }
    int64_t s = (int64_t)((double)left / rate + 0.5);
    if (s >= 3600)
        snprintf(out, n, "%" PRId64 "h%02" PRId64 "m", s / 3600, s / 60 % 60);
    else if (s >= 60)
        snprintf(out, n, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else
        snprintf(out, n, "%" PRId64 "s", s);
}

/* "job 12 running [#####-----] 340/1000 34.0% 85.2/s ETA 8s" */
static void line_of(struct buf *b, int64_t id, const struct jsonv *job, double rate, bool bar)
{
    int64_t total = op_int(job, "total"), done = op_int(job, "succeeded") + op_int(job, "failed");
    double frac = total > 0 ? (double)done / (double)total : 0;
    buf_printf(b, "job %" PRId64 " %s ", id, str(job, "status"));
    if (bar) {
        int fill = (int)(frac * BAR_WIDTH + 0.5);
        buf_putc(b, '[');
        for (int i = 0; i < BAR_WIDTH; i++)
            buf_putc(b, i < fill ? '#' : '-');
        buf_puts(b, "] ");
    }
    char eta[32];
    eta_text(eta, sizeof eta, rate, total - done);
    buf_printf(b, "%" PRId64 "/%" PRId64 " %.1f%%", done, total, 100.0 * frac);
    if (op_int(job, "failed")) buf_printf(b, " (%" PRId64 " failed)", op_int(job, "failed"));
    if (rate >= 0)
        buf_printf(b, " %.1f/s ETA %s", rate, eta);
    else
        buf_puts(b, " -/s ETA ?");
}

static void final_line(int64_t id, const struct jsonv *job, int64_t elapsed_ms)
{
    printf("job %" PRId64 " %s: %" PRId64 " of %" PRId64 " succeeded, %" PRId64
           " failed, in %.1f s\n",
           id, str(job, "status"), op_int(job, "succeeded"), op_int(job, "total"),
           op_int(job, "failed"), (double)elapsed_ms / 1000.0);
    const struct jsonv *err = jsonv_get(job, "error");
    if (err && err->type == JV_STRING) {
        struct buf t = {0};
        op_value_text(err, &t);
        printf("error: %s\n", buf_cstr(&t));
        buf_free(&t);
    }
    if (strcmp(str(job, "status"), "done") != 0)
        printf("see: eventsink jobs show %" PRId64 "\n", id);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The job now, or NULL (with *rc set) when the API refused; an API that does not answer
 * or answers 5xx is asked again for UNREACHABLE_S. */
static struct jsonv *poll_job(struct op_ctx *ctx, const char *path, int *rc)
{
    int64_t away_since = mono_now_ms();
    for (;;) {
        struct jsonv *job = NULL;
        long status = 0;
        *rc = op_call_quiet(ctx, "GET", path, NULL, &job, &status);
        if (*rc == OP_OK) return job;
        if (*rc == OP_USAGE || mono_now_ms() - away_since > UNREACHABLE_S * 1000) {
            op_print_error(ctx);
            if (*rc != OP_USAGE)
                fprintf(stderr,
                        "eventsink: stopped watching after %d s without an answer; "
                        "the job goes on in the service\n",
                        UNREACHABLE_S);
            return NULL;
        }
        sleep_ms(POLL_MS);
    }
}

int op_watch_job(struct op_ctx *ctx, int64_t id)
{
    int64_t limit_s = 0; /* checked before any request (op_main.c check_words) */
    if (ctx->o.timeout) op_parse_duration(ctx->o.timeout, &limit_s);
    char path[64];
    snprintf(path, sizeof path, "/replay/jobs/%" PRId64, id);
    bool tty = !ctx->json && isatty(STDOUT_FILENO);
    struct progress p = {.start_ms = mono_now_ms()};
    struct buf last = {0};
    int64_t last_print = 0;
    for (;;) {
        int rc = OP_OK;
        struct jsonv *job = poll_job(ctx, path, &rc);
        if (!job) {
            if (tty) putchar('\n');
            buf_free(&last);
            return rc ? rc : OP_FAILED;
        }
        int64_t now = mono_now_ms();
        double rate = rate_of(&p, now, op_int(job, "succeeded") + op_int(job, "failed"));
        const char *status = str(job, "status");
        if (ended(status)) {
            if (tty) fputs("\r\033[2K", stdout);
            if (!op_print_json(ctx)) final_line(id, job, now - p.start_ms);
            int out = strcmp(status, "done") == 0 ? OP_OK : OP_FAILED;
            jsonv_free(job);
            buf_free(&last);
            return out;
        }
        struct buf line = {0};
        line_of(&line, id, job, rate, tty);
        if (tty) {
            printf("\r\033[2K%s", buf_cstr(&line));
            fflush(stdout);
        } else if (!ctx->json && (!last.len || now - last_print >= POLL_MS) &&
                   (!last.len || strcmp(buf_cstr(&line), buf_cstr(&last)) != 0)) {
            printf("%s\n", buf_cstr(&line));
            fflush(stdout);
            buf_reset(&last);
            buf_puts(&last, buf_cstr(&line));
            last_print = now;
        }
        buf_free(&line);
        jsonv_free(job);
        if (limit_s && now - p.start_ms > limit_s * 1000) {
            if (tty) putchar('\n');
            fprintf(stderr,
                    "eventsink: job %" PRId64 " still runs after --timeout %s; it goes on in "
                    "the service (eventsink jobs watch %" PRId64 ")\n",
                    id, ctx->o.timeout, id);
            buf_free(&last);
            return OP_FAILED;
        }
        sleep_ms(POLL_MS);
    }
}

int op_follow_job(struct op_ctx *ctx, const struct jsonv *answer, const char *what,
                  const char *noun)
{
    int64_t job = op_int(answer, "job_id");
    if (ctx->o.wait && job) {
        if (!ctx->json) {
            const struct jsonv *n = jsonv_get(answer, "matched");
            if (!n) n = jsonv_get(answer, "total");
            printf("%s: job %" PRId64, what, job);
            if (noun && n && n->is_int) printf(", %" PRId64 " %s", n->i, noun);
            printf("\n");
            fflush(stdout);
        }
        return op_watch_job(ctx, job);
    }
    if (!op_print_json(ctx)) {
        op_fields(stdout, answer);
        if (job) printf("follow it: eventsink jobs watch %" PRId64 "\n", job);
    }
    return OP_OK;
}
