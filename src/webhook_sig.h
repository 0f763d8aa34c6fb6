/* The signature check of POST /webhooks/replay, apart from HTTP so that it is unit-tested
 * and fuzzed on plain bytes: HMAC-SHA256(secret, timestamp + "." + body), given as
 * "sha256=<64 hex digits>", compared in constant time, with the timestamp (unix seconds)
 * at most tolerance_s away from now. */
#ifndef EVENTSINK_WEBHOOK_SIG_H
#define EVENTSINK_WEBHOOK_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum webhook_sig_result {
    WEBHOOK_SIG_OK = 0,
    WEBHOOK_SIG_MISSING,  /* a header is absent */
    WEBHOOK_SIG_BAD_TIME, /* the timestamp is not unix seconds */
    WEBHOOK_SIG_STALE,    /* outside the tolerance */
    WEBHOOK_SIG_MISMATCH, /* malformed or wrong signature */
};

/* On WEBHOOK_SIG_OK, hex_out (65 bytes) holds the signature in lower-case hex; *skew_s is
 * set whenever the timestamp could be read. */
enum webhook_sig_result webhook_sig_verify(const char *secret, const char *timestamp,
                                           const char *signature, const char *body, size_t body_len,
                                           long tolerance_s, time_t now, long long *skew_s,
                                           char hex_out[65]);

#endif
