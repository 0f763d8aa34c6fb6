#include "shutdown_guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static pthread_t thread;
static bool started;
static atomic_bool done;
static volatile sig_atomic_t *flag;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void)
{
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
}

static void *guard(void *arg)
{
    (void)arg;
    while (!*flag && !atomic_load(&done))
        nap();
    int64_t deadline = now_ms() + SHUTDOWN_GUARD_MS;
    while (!atomic_load(&done)) {
        if (now_ms() >= deadline) {
            log_error("stopping took %d ms and is still waiting (PostgreSQL, Kafka or a thread "
                      "does not answer); exiting now with code 1: nothing is lost, what was not "
                      "committed is delivered again after a restart",
                      SHUTDOWN_GUARD_MS);
            _exit(1);
        }
        nap();
    }
    return NULL;
}

void shutdown_guard_start(volatile sig_atomic_t *stop_flag)
{
    flag = stop_flag;
    atomic_store(&done, false);
    started = pthread_create(&thread, NULL, guard, NULL) == 0;
}

void shutdown_guard_stop(void)
{
    if (!started) return;
    atomic_store(&done, true);
    pthread_join(thread, NULL);
    started = false;
}
