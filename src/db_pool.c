#include "db_pool.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <libpq-fe.h>

#include "buf.h"
#include "db.h"
#include "deadline.h"
#include "log.h"

struct db_pool {
    char *dsn;
    int statement_timeout_ms;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    PGconn **idle;
    int nidle;
    int total; /* idle + lent out */
    int max;
};

struct db_pool *db_pool_create(const char *dsn, int max_conns, int statement_timeout_ms)
{
    struct db_pool *p = xcalloc(1, sizeof *p);
    p->dsn = xstrdup(dsn);
    /* every API query has a time limit: a stuck one answers 503 instead of hanging */
    p->statement_timeout_ms = statement_timeout_ms;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->freed, NULL);
    p->max = max_conns;
    p->idle = xcalloc((size_t)max_conns, sizeof(PGconn *));
    return p;
}

void db_pool_destroy(struct db_pool *p)
{
    if (!p) return;
    for (int i = 0; i < p->nidle; i++)
        PQfinish(p->idle[i]);
    free(p->idle);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->freed);
    free(p->dsn);
    free(p);
}

static PGconn *connect_one(struct db_pool *p)
{
    char *err = NULL;
    PGconn *c = db_open(p->dsn, "eventsink-api", p->statement_timeout_ms, &err);
    if (!c) {
        log_warn("API: %s", err);
        free(err);
    }
    return c;
}

PGconn *db_pool_get(struct db_pool *p, int wait_ms, const char **err)
{
    struct timespec until = deadline_after_ms(wait_ms);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->nidle > 0) {
            PGconn *c = p->idle[--p->nidle];
            pthread_mutex_unlock(&p->lock);
            if (PQstatus(c) == CONNECTION_OK) return c;
            PQfinish(c);
            pthread_mutex_lock(&p->lock);
            p->total--;
            continue;
        }
        if (p->total < p->max) {
            p->total++;
            pthread_mutex_unlock(&p->lock);
            PGconn *c = connect_one(p);
            if (c) return c;
            pthread_mutex_lock(&p->lock);
            p->total--;
            pthread_cond_signal(&p->freed);
            pthread_mutex_unlock(&p->lock);
            *err = "PostgreSQL is unreachable";
            return NULL;
        }
        if (pthread_cond_timedwait(&p->freed, &p->lock, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->lock);
            *err = "every PostgreSQL connection of the API is busy";
            return NULL;
        }
    }
}

void db_pool_put(struct db_pool *p, PGconn *c)
{
    if (!c) return;
    bool broken = PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE;
    if (broken) PQfinish(c);
    pthread_mutex_lock(&p->lock);
    if (broken)
        p->total--;
    else
        p->idle[p->nidle++] = c;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}
