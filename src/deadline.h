/* Time helpers for bounded waits. deadline_after_ms: the absolute CLOCK_REALTIME time ms
 * milliseconds from now, as pthread_cond_timedwait() takes it; mono_now_ms: the monotonic
 * clock in milliseconds, for deadlines that a clock change cannot move. */
#ifndef EVENTSINK_DEADLINE_H
#define EVENTSINK_DEADLINE_H

#include <stdint.h>
#include <time.h>

static inline int64_t mono_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static inline struct timespec deadline_after_ms(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

#endif
