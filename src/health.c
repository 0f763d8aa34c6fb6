#include "health.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "json.h"

static const char *const names[HEALTH_NCOMPONENTS] = {"consumer", "writer", "policy",
                                                      "replay_worker", "scheduler"};

static struct {
    atomic_int busy;
    _Atomic int64_t last_progress; /* CLOCK_MONOTONIC ms */
} comp[HEALTH_NCOMPONENTS];

static atomic_long stall_after_ms = 15000;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void health_configure(long stall_after_s)
{
    atomic_store(&stall_after_ms, stall_after_s * 1000);
}

void health_busy(enum health_component c)
{
    if (atomic_fetch_add(&comp[c].busy, 1) == 0) atomic_store(&comp[c].last_progress, mono_ms());
}

void health_progress(enum health_component c)
{
    atomic_store(&comp[c].last_progress, mono_ms());
}

void health_idle(enum health_component c)
{
    atomic_store(&comp[c].last_progress, mono_ms());
    atomic_fetch_sub(&comp[c].busy, 1);
}

const char *health_component_name(enum health_component c)
{
    return names[c];
}

bool health_stalled(enum health_component c, int64_t *since_ms)
{
    if (atomic_load(&comp[c].busy) <= 0) return false;
    int64_t now = mono_ms();
    int64_t last = atomic_load(&comp[c].last_progress);
    if (now - last < atomic_load(&stall_after_ms)) return false;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    *since_ms = (int64_t)rt.tv_sec * 1000 + rt.tv_nsec / 1000000 - (now - last);
    return true;
}

int health_stalled_json(struct buf *out)
{
    int n = 0;
    buf_putc(out, '[');
    for (int c = 0; c < HEALTH_NCOMPONENTS; c++) {
        int64_t since;
        if (!health_stalled((enum health_component)c, &since)) continue;
        time_t s = (time_t)(since / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        char iso[40];
        size_t k = strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(iso + k, sizeof iso - k, ".%03dZ", (int)(since % 1000));
        buf_printf(out, "%s{\"component\":\"%s\",\"since\":", n ? "," : "", names[c]);
        json_write_cstr(out, iso);
        buf_putc(out, '}');
        n++;
    }
    buf_putc(out, ']');
    return n;
}
