#include "webhook_sig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define SIGNATURE_PREFIX "sha256="

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

enum webhook_sig_result webhook_sig_verify(const char *secret, const char *timestamp,
                                           const char *signature, const char *body, size_t body_len,
                                           long tolerance_s, time_t now, long long *skew_s,
                                           char hex_out[65])
{
    if (!timestamp || !signature) return WEBHOOK_SIG_MISSING;
    char *end;
    long long t = strtoll(timestamp, &end, 10);
    if (!*timestamp || *end || t <= 0 || strlen(timestamp) > 18) return WEBHOOK_SIG_BAD_TIME;
    long long skew = (long long)now - t;
    if (skew < 0) skew = -skew;
    if (skew_s) *skew_s = skew;
    if (skew > tolerance_s) return WEBHOOK_SIG_STALE;

    unsigned char given[32] = {0};
    size_t plen = strlen(SIGNATURE_PREFIX);
    bool well_formed =
        strncmp(signature, SIGNATURE_PREFIX, plen) == 0 && strlen(signature) == plen + 64;
    for (size_t i = 0; well_formed && i < 32; i++) {
        int a = hexval(signature[plen + 2 * i]), b = hexval(signature[plen + 2 * i + 1]);
        if (a < 0 || b < 0) well_formed = false;
        given[i] = (unsigned char)(a * 16 + b);
    }
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (!ctx || !EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) ||
        !EVP_MAC_update(ctx, (const unsigned char *)timestamp, strlen(timestamp)) ||
        !EVP_MAC_update(ctx, (const unsigned char *)".", 1) ||
        !EVP_MAC_update(ctx, (const unsigned char *)(body ? body : ""), body_len) ||
        !EVP_MAC_final(ctx, mac, &maclen, sizeof mac))
        maclen = 0;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    /* always compare, even a malformed signature, so that timing says nothing */
    bool same = maclen == 32 && CRYPTO_memcmp(mac, given, 32) == 0;
    if (!well_formed || !same) return WEBHOOK_SIG_MISMATCH;
    for (int i = 0; i < 32; i++)
        snprintf(hex_out + 2 * i, 3, "%02x", mac[i]);
    return WEBHOOK_SIG_OK;
}
