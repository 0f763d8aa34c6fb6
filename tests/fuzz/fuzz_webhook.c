/* libFuzzer target: webhook signature checking (webhook_sig.c) on arbitrary headers and
 * bodies. Invariants: no crash; a random signature never verifies; the correct one for the
 * same input always does. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "webhook_sig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* [timestamp bytes up to 20][signature bytes up to 80][body...] split by the first two 0xff */
    const char *p = (const char *)data;
    const char *e1 = memchr(p, 0xff, size);
    const char *e2 = e1 ? memchr(e1 + 1, 0xff, size - (size_t)(e1 + 1 - p)) : NULL;
    char ts[32], sig[96];
    size_t tl = e1 ? (size_t)(e1 - p) : 0, sl = e2 ? (size_t)(e2 - e1 - 1) : 0;
    if (tl >= sizeof ts || sl >= sizeof sig) return 0;
    memcpy(ts, p, tl);
    ts[tl] = '\0';
    memcpy(sig, e1 ? e1 + 1 : "", sl);
    sig[sl] = '\0';
    const char *body = e2 ? e2 + 1 : p;
    size_t blen = e2 ? size - (size_t)(body - p) : size;
    char hex[65];
    long long skew;
    time_t now = 1800000000;
    enum webhook_sig_result r = webhook_sig_verify("fuzz-secret", tl ? ts : NULL, sl ? sig : NULL,
                                                   body, blen, 300, now, &skew, hex);
    (void)r;
    /* the right signature for this body at time now verifies */
    char good_ts[] = "1800000000";
    unsigned char mac[32];
    unsigned int ml = 32;
    struct {
        const char *ts;
    } in = {good_ts};
    size_t msglen = strlen(in.ts) + 1 + blen;
    unsigned char *msg = malloc(msglen + 1);
    memcpy(msg, in.ts, strlen(in.ts));
    msg[strlen(in.ts)] = '.';
    memcpy(msg + strlen(in.ts) + 1, body, blen);
    HMAC(EVP_sha256(), "fuzz-secret", 11, msg, msglen, mac, &ml);
    free(msg);
    char good[80] = "sha256=";
    for (int i = 0; i < 32; i++)
        snprintf(good + 7 + 2 * i, 3, "%02x", mac[i]);
    assert(webhook_sig_verify("fuzz-secret", good_ts, good, body, blen, 300, now, &skew, hex) ==
           WEBHOOK_SIG_OK);
    if (sl && strcmp(sig, good) != 0 && strcasecmp(sig, good) != 0 && tl &&
        strcmp(ts, good_ts) == 0)
        assert(webhook_sig_verify("fuzz-secret", ts, sig, body, blen, 300, now, &skew, hex) !=
               WEBHOOK_SIG_OK);
    return 0;
}
