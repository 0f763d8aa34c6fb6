#include "db_watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "log.h"

/* One watched call per thread at a time; slots are claimed and released under `lock`, so
 * the watchdog only touches a socket while its owner is inside the call (the connection
 * cannot be closed meanwhile: that takes the same thread). */
#define SLOTS 256
#define SCAN_MS 500

struct slot {
    bool used, cut;
    int sock;
    int bound_ms;
    _Atomic int64_t since_ms; /* the start of the call waited on */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[SLOTS];
static pthread_once_t started = PTHREAD_ONCE_INIT;
static atomic_ulong cut_total;

static _Thread_local int mine = -1;
static _Thread_local int depth;
static _Thread_local int thread_bound_ms = DB_WATCHDOG_BOUND_MS;

static void *watch(void *arg)
{
    (void)arg;
    const struct timespec scan = {.tv_sec = 0, .tv_nsec = SCAN_MS * 1000000L};
    for (;;) {
        nanosleep(&scan, NULL);
        int64_t now = mono_now_ms();
        int cut = 0, waited_s = 0;
        pthread_mutex_lock(&lock);
        for (int i = 0; i < SLOTS; i++) {
            struct slot *s = &slots[i];
            int64_t since = atomic_load(&s->since_ms);
            if (!s->used || s->cut || now - since <= s->bound_ms) continue;
            shutdown(s->sock, SHUT_RDWR);
            s->cut = true;
            cut++;
            waited_s = (int)((now - since) / 1000);
        }
        pthread_mutex_unlock(&lock);
        if (!cut) continue;
        atomic_fetch_add(&cut_total, (unsigned long)cut);
        log_warn("PostgreSQL has not answered a call for %d s, past its statement_timeout: the "
                 "server is frozen or the network holds its packets; the connection is cut "
                 "(%d call(s)) and the work is done again on a new one",
                 waited_s, cut);
    }
    return NULL;
}

static void start(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, watch, NULL) == 0)
        pthread_detach(t);
    else
        log_error("PostgreSQL watchdog: cannot start its thread; calls are not bounded");
}

void db_watchdog_begin(PGconn *c, int bound_ms)
{
    if (depth++ > 0) return;
    /* a socket of our own onto the connection: shutdown() through it reaches the
     * connection's, and never another one that took the number after libpq closed its */
    int sock = c && PQsocket(c) >= 0 ? dup(PQsocket(c)) : -1;
    if (sock < 0) return;
    pthread_once(&started, start);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < SLOTS && mine < 0; i++) {
        if (slots[i].used) continue;
        slots[i] = (struct slot){
            .used = true, .sock = sock, .bound_ms = bound_ms > 0 ? bound_ms : thread_bound_ms};
        atomic_store(&slots[i].since_ms, mono_now_ms());
        mine = i;
    }
    pthread_mutex_unlock(&lock);
    if (mine < 0) close(sock); /* every slot taken: this call goes unwatched */
}

void db_watchdog_progress(void)
{
    if (mine >= 0) atomic_store(&slots[mine].since_ms, mono_now_ms());
}

bool db_watchdog_end(void)
{
    if (depth > 0 && --depth > 0) return false;
    if (mine < 0) return false;
    pthread_mutex_lock(&lock);
    bool cut = slots[mine].cut;
    int sock = slots[mine].sock;
    slots[mine].used = false;
    pthread_mutex_unlock(&lock);
    close(sock);
    mine = -1;
    return cut;
}

int db_watchdog_thread_bound(int bound_ms)
{
    int before = thread_bound_ms;
    thread_bound_ms = bound_ms > 0 ? bound_ms : DB_WATCHDOG_BOUND_MS;
    return before;
}

unsigned long db_watchdog_cut_total(void)
{
    return atomic_load(&cut_total);
}
