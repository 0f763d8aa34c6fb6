#include "http_guard.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "log.h"

#define SWEEP_MS 200
#define LOG_EVERY_MS 10000

/* One open connection; owned by the guard's list between "started" and "closed". */
struct guarded {
    struct http_guard *g;
    struct guarded *prev, *next;
    int fd;
    int64_t since_ms; /* accepted, or its previous answer sent */
    bool busy;        /* its request is in: being handled or answered */
    bool shut;        /* shut down by the guard; libmicrohttpd closes it */
};

struct http_guard {
    char *name;
    long deadline_ms;
    unsigned evict_at;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct guarded *head, *tail; /* every open connection */
    unsigned open;
    bool stop;
    bool started;
    pthread_t sweeper;
    /* closed since the last log line */
    unsigned late, evicted;
    int64_t logged_ms;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Caller holds the lock. */
static void shut(struct guarded *c)
{
    if (c->shut) return;
    c->shut = true;
    shutdown(c->fd, SHUT_RDWR);
}

/* Caller holds the lock. */
static void note_closed(struct http_guard *g, int64_t now)
{
    if ((!g->late && !g->evicted) || now - g->logged_ms < LOG_EVERY_MS) return;
    log_warn("%s: closed %u connection(s) that did not send a whole request within %ld ms and "
             "%u still sending one to make room for new ones (%u open)",
             g->name, g->late, g->deadline_ms, g->evicted, g->open);
    g->late = g->evicted = 0;
    g->logged_ms = now;
}

static void *sweep(void *arg)
{
    struct http_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SWEEP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->wake, &g->lock, &ts);
        int64_t now = now_ms();
        for (struct guarded *c = g->head; c; c = c->next)
            if (!c->busy && !c->shut && now - c->since_ms > g->deadline_ms) {
                shut(c);
                g->late++;
            }
        note_closed(g, now);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

struct http_guard *http_guard_create(const char *name, long deadline_ms, unsigned evict_at,
                                     char **err)
{
    struct http_guard *g = xcalloc(1, sizeof *g);
    g->name = xstrdup(name);
    g->deadline_ms = deadline_ms;
    g->evict_at = evict_at;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->wake, NULL);
    int e = pthread_create(&g->sweeper, NULL, sweep, g);
    if (e != 0) {
        struct buf m = {0};
        buf_printf(&m, "%s: cannot start the connection sweeper: %s", name, strerror(e));
        *err = m.data;
        http_guard_destroy(g);
        return NULL;
    }
    g->started = true;
    return g;
}

void http_guard_destroy(struct http_guard *g)
{
    if (!g) return;
    if (g->started) {
        pthread_mutex_lock(&g->lock);
        g->stop = true;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->sweeper, NULL);
    }
    /* after MHD_stop_daemon every connection was notified closed; free what is left */
    for (struct guarded *c = g->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->lock);
    free(g->name);
    free(g);
}

void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code)
{
    struct http_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct guarded *c = xcalloc(1, sizeof *c);
        c->g = g;
        c->fd = fd ? fd->connect_fd : -1;
        c->since_ms = now_ms();
        c->shut = c->fd < 0;
        pthread_mutex_lock(&g->lock);
        if (++g->open > g->evict_at) {
            /* near the limit: the connection that has been sending its request (or
             * idling after its answer) the longest makes room */
            struct guarded *oldest = NULL;
            for (struct guarded *o = g->head; o; o = o->next)
                if (!o->busy && !o->shut && (!oldest || o->since_ms < oldest->since_ms)) oldest = o;
            if (oldest) {
                shut(oldest);
                g->evicted++;
            }
        }
        c->prev = g->tail;
        if (g->tail)
            g->tail->next = c;
        else
            g->head = c;
        g->tail = c;
        pthread_mutex_unlock(&g->lock);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct guarded *c = *socket_context;
        if (!c) return;
        pthread_mutex_lock(&g->lock);
        if (c->prev)
            c->prev->next = c->next;
        else
            g->head = c->next;
        if (c->next)
            c->next->prev = c->prev;
        else
            g->tail = c->prev;
        g->open--;
        pthread_mutex_unlock(&g->lock);
        free(c);
        *socket_context = NULL;
    }
}

static struct guarded *guarded_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

static void set_busy(struct MHD_Connection *conn, bool busy)
{
    struct guarded *c = guarded_of(conn);
    if (!c) return;
    pthread_mutex_lock(&c->g->lock);
    c->busy = busy;
    c->since_ms = now_ms();
    pthread_mutex_unlock(&c->g->lock);
}

void http_guard_request_in(struct MHD_Connection *conn)
{
    set_busy(conn, true);
}

void http_guard_request_done(struct MHD_Connection *conn)
{
    set_busy(conn, false);
}
