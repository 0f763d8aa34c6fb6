#include "listen_addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "buf.h"

static bool parse_port(const char *s, uint16_t *out)
{
    long port = 0;
    if (!*s || strlen(s) > 5) return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        port = port * 10 + (*p - '0');
    }
    if (port <= 0 || port > 65535) return false;
    *out = (uint16_t)port;
    return true;
}

bool listen_addr_parse(const char *listen, struct sockaddr_storage *ss, char **err)
{
    memset(ss, 0, sizeof *ss);
    const char *colon = strrchr(listen, ':');
    uint16_t port;
    char host[128];
    size_t hl = colon ? (size_t)(colon - listen) : 0;
    if (!colon || hl >= sizeof host || !parse_port(colon + 1, &port)) goto bad;
    memcpy(host, listen, hl);
    host[hl] = '\0';
    if (host[0] == '[') {
        if (hl < 3 || host[hl - 1] != ']') goto bad;
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1) goto bad;
        return true;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    if (strcmp(host, "") == 0 || strcmp(host, "*") == 0) strcpy(host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) goto bad;
    return true;
bad : {
    struct buf m = {0};
    buf_printf(&m,
               "cannot read the listen address \"%s\" (expected HOST:PORT with an IP address, "
               "localhost or * and a port from 1 to 65535, or [IPv6]:PORT)",
               listen);
    *err = m.data;
    return false;
}
}

bool listen_addr_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)ss;
        return (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ss;
    return IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
}

static bool any_address(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                    : ((const struct sockaddr_in6 *)ss)->sin6_port;
}

bool listen_addr_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (port_of(a) != port_of(b)) return false;
    if (any_address(a) || any_address(b)) return true;
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}
