#include "http_guard.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>

#include "buf.h"
#include "deadline.h"
#include "log.h"

#define SWEEP_MS 200
#define LOG_EVERY_MS 10000

/* One open connection; owned by the guard's list between "started" and "closed". */
struct guarded {
    struct http_guard *g;
    struct guarded *prev, *next;
    int fd;
    unsigned char addr[16]; /* the client's address (4 or 16 bytes), alen of them */
    unsigned char alen;
    int64_t since_ms; /* accepted, or its previous answer sent */
    uint64_t seq;     /* order of arrival: breaks ties of since_ms */
    bool busy;        /* its request is in: being handled or answered */
    bool shut;        /* shut down by the guard; libmicrohttpd closes it */
};

struct http_guard {
    char *name;
    long deadline_ms;
    unsigned max, evict_at;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct guarded *head, *tail; /* every open connection */
    unsigned open;               /* known to the guard, shut down or not */
    unsigned shutting;           /* shut down, not yet closed by libmicrohttpd */
    uint64_t seq;
    bool stop;
    bool started;
    pthread_t sweeper;
    /* closed since the last log line */
    unsigned late, evicted, refused;
    int64_t logged_ms;
};

/* Caller holds the lock. */
static void shut(struct guarded *c)
{
    if (c->shut) return;
    c->shut = true;
    c->g->shutting++;
    shutdown(c->fd, SHUT_RDWR);
}

/* Caller holds the lock. */
static void note_closed(struct http_guard *g, int64_t now)
{
    if ((!g->late && !g->evicted && !g->refused) || now - g->logged_ms < LOG_EVERY_MS) return;
    log_warn("%s: closed %u connection(s) that did not send a whole request within %ld ms and "
             "%u still sending one to make room for new ones; refused %u at the limit of %u "
             "(%u open)",
             g->name, g->late, g->deadline_ms, g->evicted, g->refused, g->max,
             g->open - g->shutting);
    g->late = g->evicted = g->refused = 0;
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
        int64_t now = mono_now_ms();
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

unsigned http_guard_socket_limit(unsigned max)
{
    return max + max / 2;
}

struct http_guard *http_guard_create(const char *name, long deadline_ms, unsigned max, char **err)
{
    struct http_guard *g = xcalloc(1, sizeof *g);
    g->name = xstrdup(name);
    g->deadline_ms = deadline_ms;
    g->max = max;
    g->evict_at = max - max / 8;
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

/* The socket and the client's address of a new connection. */
static void describe(struct MHD_Connection *conn, struct guarded *c)
{
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = fd ? fd->connect_fd : -1;
    c->shut = c->fd < 0;
    c->since_ms = mono_now_ms();
    const union MHD_ConnectionInfo *a =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!a || !a->client_addr) return;
    if (a->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a->client_addr;
        memcpy(c->addr, &in->sin_addr, 4);
        c->alen = 4;
    } else if (a->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a->client_addr;
        memcpy(c->addr, &in6->sin6_addr, 16);
        c->alen = 16;
    }
}

static bool same_address(const struct guarded *a, const struct guarded *b)
{
    return a->alen == b->alen && memcmp(a->addr, b->addr, a->alen) == 0;
}

static bool older(const struct guarded *a, const struct guarded *b)
{
    return a->since_ms < b->since_ms || (a->since_ms == b->since_ms && a->seq < b->seq);
}

/* qsort: by address, then oldest first */
static int by_address_then_age(const void *pa, const void *pb)
{
    const struct guarded *a = *(struct guarded *const *)pa, *b = *(struct guarded *const *)pb;
    if (a->alen != b->alen) return a->alen < b->alen ? -1 : 1;
    int d = memcmp(a->addr, b->addr, a->alen);
    if (d) return d;
    return older(a, b) ? -1 : older(b, a) ? 1 : 0;
}

/* The connection that makes room for a newcomer: of those still sending a request (or idle
 * after an answer), one from the address that holds the most of them, the oldest of that
 * address (the oldest of all on a tie). A client from an address with fewer unfinished
 * connections than a flood's addresses is never the one closed. Caller holds the lock. */
static struct guarded *victim(struct http_guard *g)
{
    size_t n = 0;
    for (struct guarded *o = g->head; o; o = o->next)
        n += !o->busy && !o->shut;
    if (!n) return NULL;
    struct guarded **v = xcalloc(n, sizeof *v);
    size_t k = 0;
    for (struct guarded *o = g->head; o; o = o->next)
        if (!o->busy && !o->shut) v[k++] = o;
    qsort(v, n, sizeof *v, by_address_then_age);
    struct guarded *best = NULL;
    size_t most = 0;
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && same_address(v[i], v[j]); j++) {
        }
        if (j - i > most || (j - i == most && older(v[i], best))) {
            best = v[i];
            most = j - i;
        }
    }
    free(v);
    return best;
}

/* A new connection c, not yet in the list: past evict_at live connections one makes room;
 * past max (every other one busy) c itself is closed. libmicrohttpd's own limit
 * (http_guard_socket_limit) is higher, for the sockets shut down but not yet closed by
 * their threads: a burst of newcomers is not refused while those threads run. Caller
 * holds the lock. */
static void admit(struct http_guard *g, struct guarded *c)
{
    g->open++;
    if (c->shut) g->shutting++;
    if (g->open - g->shutting <= g->evict_at) return;
    struct guarded *v = victim(g);
    if (v) {
        shut(v);
        g->evicted++;
    }
    if (g->open - g->shutting > g->max) {
        shut(c);
        g->refused++;
    }
}

void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code)
{
    struct http_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct guarded *c = xcalloc(1, sizeof *c);
        c->g = g;
        describe(conn, c);
        pthread_mutex_lock(&g->lock);
        c->seq = ++g->seq;
        admit(g, c);
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
        if (c->shut) g->shutting--;
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
    c->since_ms = mono_now_ms();
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
