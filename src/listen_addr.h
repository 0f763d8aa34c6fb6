/* Listen addresses (http.listen, metrics.listen): HOST:PORT with an IPv4 address,
 * "localhost", "*" or nothing (every address) before the colon, or [IPv6]:PORT. One
 * reader for the configuration check and for the listeners themselves, so that
 * `eventsink check` refuses exactly what start-up would. */
#ifndef EVENTSINK_LISTEN_ADDR_H
#define EVENTSINK_LISTEN_ADDR_H

#include <stdbool.h>
#include <sys/socket.h>

/* Parses `listen`; false with *err (malloc'd) naming what is wrong. */
bool listen_addr_parse(const char *listen, struct sockaddr_storage *ss, char **err);
/* 127.0.0.0/8 or ::1. */
bool listen_addr_is_loopback(const struct sockaddr_storage *ss);
/* Would two listeners on these addresses collide (same port, and the same address or
 * one of them every address)? */
bool listen_addr_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

#endif
