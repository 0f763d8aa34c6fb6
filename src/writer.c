#include "writer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "deadline.h"
#include "health.h"

struct writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct writer_job *job; /* submitted, not yet done */
    bool stop;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->job && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->job) break; /* stopping, and nothing left to write */
        struct writer_job *job = w->job;
        pthread_mutex_unlock(&w->mu);

        job->err = NULL;
        memset(&job->st, 0, sizeof job->st);
        job->rc = db_write_batch(job->db, job->items, job->n, job->policy_version, &job->st,
                                 job->on_persisted, job->on_dlq, job->opaque, &job->err);
        void (*done)(void *) = job->done;
        void *done_arg = job->done_arg;

        health_idle(HEALTH_WRITER);
        pthread_mutex_lock(&w->mu);
        w->job = NULL; /* from here on the job is the submitter's again */
        pthread_cond_broadcast(&w->cv);
        if (done) done(done_arg);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct writer *writer_start(char **err)
{
    struct writer *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        *err = xstrdup("cannot start the batch writer thread");
        return NULL;
    }
    return w;
}

void writer_stop(struct writer *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void writer_submit(struct writer *w, struct writer_job *job)
{
    pthread_mutex_lock(&w->mu);
    while (w->job) /* callers wait first; this only keeps the invariant */
        pthread_cond_wait(&w->cv, &w->mu);
    w->job = job;
    health_busy(HEALTH_WRITER); /* until the writer is done with it */
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

bool writer_idle(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    bool idle = w->job == NULL;
    pthread_mutex_unlock(&w->mu);
    return idle;
}

bool writer_wait_for(struct writer *w, int timeout_ms)
{
    struct timespec until = deadline_after_ms(timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (w->job)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) != 0) break;
    bool idle = w->job == NULL;
    pthread_mutex_unlock(&w->mu);
    return idle;
}

void writer_wait(struct writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->job)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}
