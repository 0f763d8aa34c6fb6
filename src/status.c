#include "status.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "json.h"

static atomic_bool postgres_up, kafka_up;
static atomic_int policy_version;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char **paths;
    char **sha256;
    size_t n;
    char loaded_at[40];
    char *last_error;
    char last_error_at[40];
} pol;

void status_set_postgres_up(bool up)
{
    atomic_store(&postgres_up, up);
}

void status_set_kafka_up(bool up)
{
    atomic_store(&kafka_up, up);
}

bool status_postgres_up(void)
{
    return atomic_load(&postgres_up);
}

bool status_kafka_up(void)
{
    return atomic_load(&kafka_up);
}

int status_policy_version(void)
{
    return atomic_load(&policy_version);
}

static void iso_now(char out[40])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static char *file_sha256(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return xstrdup("");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        EVP_DigestUpdate(ctx, chunk, n);
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    char *hex = xmalloc(2 * mdlen + 1);
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[2 * mdlen] = '\0';
    return hex;
}

void status_policies_loaded(int version, char *const *files, size_t nfiles)
{
    char **paths = xcalloc(nfiles + 1, sizeof(char *));
    char **sums = xcalloc(nfiles + 1, sizeof(char *));
    for (size_t i = 0; i < nfiles; i++) {
        paths[i] = xstrdup(files[i]);
        sums[i] = file_sha256(files[i]);
    }
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < pol.n; i++) {
        free(pol.paths[i]);
        free(pol.sha256[i]);
    }
    free(pol.paths);
    free(pol.sha256);
    pol.paths = paths;
    pol.sha256 = sums;
    pol.n = nfiles;
    iso_now(pol.loaded_at);
    free(pol.last_error);
    pol.last_error = NULL;
    atomic_store(&policy_version, version);
    pthread_mutex_unlock(&lock);
}

void status_policies_failed(const char *error)
{
    pthread_mutex_lock(&lock);
    free(pol.last_error);
    pol.last_error = xstrdup(error);
    iso_now(pol.last_error_at);
    pthread_mutex_unlock(&lock);
}

void status_policies_stamp_json(struct buf *out)
{
    pthread_mutex_lock(&lock);
    buf_printf(out, "{\"policy_version\":%d,\"loaded_at\":", atomic_load(&policy_version));
    json_write_cstr(out, pol.n ? pol.loaded_at : NULL);
    buf_puts(out, ",\"last_error_at\":");
    json_write_cstr(out, pol.last_error ? pol.last_error_at : NULL);
    buf_putc(out, '}');
    pthread_mutex_unlock(&lock);
}

void status_policies_json(struct buf *out)
{
    pthread_mutex_lock(&lock);
    buf_printf(out, "{\"policy_version\":%d,\"loaded_at\":", atomic_load(&policy_version));
    json_write_cstr(out, pol.n ? pol.loaded_at : NULL);
    buf_puts(out, ",\"last_error\":");
    json_write_cstr(out, pol.last_error);
    buf_puts(out, ",\"last_error_at\":");
    json_write_cstr(out, pol.last_error ? pol.last_error_at : NULL);
    buf_puts(out, ",\"files\":[");
    for (size_t i = 0; i < pol.n; i++) {
        buf_puts(out, i ? ",{\"path\":" : "{\"path\":");
        json_write_cstr(out, pol.paths[i]);
        buf_puts(out, ",\"sha256\":");
        json_write_cstr(out, pol.sha256[i]);
        buf_putc(out, '}');
    }
    buf_puts(out, "]}");
    pthread_mutex_unlock(&lock);
}
