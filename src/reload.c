#include "reload.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "buf.h"
#include "deadline.h"

static volatile sig_atomic_t signalled;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static unsigned long asked, taking, finished; /* generations: asked, being served, served */
static bool last_ok;
static int last_version;
static char *last_err;
static char *last_restart;

void reload_request_from_signal(void)
{
    signalled = 1;
}

bool reload_wanted(void)
{
    if (signalled) return true;
    pthread_mutex_lock(&lock);
    bool w = asked > finished;
    pthread_mutex_unlock(&lock);
    return w;
}

bool reload_pending(void)
{
    pthread_mutex_lock(&lock);
    bool p = asked > taking;
    pthread_mutex_unlock(&lock);
    return p;
}

void reload_begin(void)
{
    signalled = 0; /* a signal from now on asks for one more */
    pthread_mutex_lock(&lock);
    taking = asked;
    pthread_mutex_unlock(&lock);
}

void reload_done(bool ok, int version, const char *err, const char *restart_needed)
{
    pthread_mutex_lock(&lock);
    finished = taking; /* requests made since reload_begin() wait for the next one */
    last_ok = ok;
    last_version = version;
    free(last_err);
    last_err = err ? xstrdup(err) : NULL;
    free(last_restart);
    last_restart = restart_needed ? xstrdup(restart_needed) : NULL;
    pthread_cond_broadcast(&done);
    pthread_mutex_unlock(&lock);
}

int reload_request_wait(int timeout_ms, int *version, char **err, char **restart_needed)
{
    struct timespec until = deadline_after_ms(timeout_ms);
    pthread_mutex_lock(&lock);
    unsigned long mine = ++asked;
    int rc = -1;
    while (finished < mine) {
        if (pthread_cond_timedwait(&done, &lock, &until) == ETIMEDOUT) break;
    }
    if (finished >= mine) {
        rc = last_ok ? 1 : 0;
        *version = last_version;
        if (!last_ok) *err = xstrdup(last_err ? last_err : "reload failed");
        if (restart_needed) *restart_needed = last_restart ? xstrdup(last_restart) : NULL;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
