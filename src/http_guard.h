/* The connection guard of an HTTP listener (slow clients, CONTRACT 9.1 "bounds"). Every
 * connection has a deadline for its whole request, head and body, counted from the moment
 * it was accepted or its previous response was sent: a client that trickles a byte a
 * second is closed when it passes it (an inactivity timeout would be reset by every
 * byte). When the listener is near its connection limit (7/8 of it), each new connection
 * closes one still sending its request: the oldest of the address that holds the most of
 * them, so that slow clients from any number of addresses cannot keep /health and /ready
 * from being answered. Only when every other connection is busy is the newcomer closed.
 *
 * libmicrohttpd cannot be told to drop a connection from another thread; the guard
 * shuts its socket down (shutdown(2)), and the connection's own thread then sees the end
 * of the stream and closes it. The guard knows each socket between libmicrohttpd's
 * "started" and "closed" notifications, which come before the socket is closed, and holds
 * its lock across both, so it never shuts down a socket number that was reused. */
#ifndef EVENTSINK_HTTP_GUARD_H
#define EVENTSINK_HTTP_GUARD_H

#include <stdbool.h>

#include <microhttpd.h>

struct http_guard;

/* deadline_ms: for one request, head and body; max: connections open at once (the guard
 * closes what is past it), 7/8 of it the point from which newcomers make room. */
struct http_guard *http_guard_create(const char *name, long deadline_ms, unsigned max, char **err);
/* libmicrohttpd's MHD_OPTION_CONNECTION_LIMIT for a guard of max: above max by the
 * sockets the guard shut down whose threads have not closed them yet. */
unsigned http_guard_socket_limit(unsigned max);
/* Stops the sweeper. Call after MHD_stop_daemon (every connection is closed then). */
void http_guard_destroy(struct http_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION, with the guard as its closure. */
void http_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);
/* The request is in, head and body: no deadline while it is handled and answered. */
void http_guard_request_in(struct MHD_Connection *conn);
/* Its answer was sent (MHD_OPTION_NOTIFY_COMPLETED): the next request's deadline starts. */
void http_guard_request_done(struct MHD_Connection *conn);

#endif
