#include "op_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define REQUEST_TIMEOUT_MS 30000L
#define CONNECT_TIMEOUT_MS 5000L
#define MAX_ANSWER_BYTES (64L * 1024 * 1024) /* a page of 1,000 events is a few MB */

struct op_api {
    CURL *curl;
    char *base;
    char *auth; /* "Authorization: Bearer ..." or NULL */
};

struct op_api *op_api_new(const char *base, const char *token)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
    struct op_api *api = xcalloc(1, sizeof *api);
    api->curl = curl_easy_init();
    if (!api->curl) {
        free(api);
        curl_global_cleanup();
        return NULL;
    }
    api->base = xstrdup(base);
    if (token) {
        struct buf a = {0};
        buf_printf(&a, "Authorization: Bearer %s", token);
        api->auth = a.data;
    }
    return api;
}

void op_api_free(struct op_api *api)
{
    if (!api) return;
    curl_easy_cleanup(api->curl);
    if (api->auth) memset(api->auth, 0, strlen(api->auth));
    free(api->auth);
    free(api->base);
    free(api);
    curl_global_cleanup();
}

const char *op_api_base(const struct op_api *api)
{
    return api->base;
}

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
    struct buf *b = user;
    if (b->len + size * n > (size_t)MAX_ANSWER_BYTES) return 0; /* libcurl ends the transfer */
    buf_append(b, p, size * n);
    return size * n;
}

long op_request(struct op_api *api, const char *method, const char *path, const char *body,
                struct op_resp *out)
{
    memset(out, 0, sizeof *out);
    struct buf url = {0};
    buf_printf(&url, "%s%s", api->base, path);
    CURL *c = api->curl;
    curl_easy_reset(c);
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (api->auth) h = curl_slist_append(h, api->auth);
    if (body) h = curl_slist_append(h, "Content-Type: application/json");
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url.data);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "eventsink-cli");
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MAX_ANSWER_BYTES);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    } else {
        if (rc == CURLE_WRITE_ERROR || rc == CURLE_FILESIZE_EXCEEDED)
            snprintf(out->error, sizeof out->error, "the answer is larger than %ld MiB",
                     MAX_ANSWER_BYTES >> 20);
        else
            snprintf(out->error, sizeof out->error, "%s",
                     errbuf[0] ? errbuf : curl_easy_strerror(rc));
        out->status = 0;
    }
    buf_cstr(&out->body);
    curl_slist_free_all(h);
    buf_free(&url);
    return out->status;
}

void op_resp_free(struct op_resp *r)
{
    buf_free(&r->body);
}

void op_query_add(struct buf *path, const char *key, const char *value)
{
    if (!value) return;
    char *v = curl_easy_escape(NULL, value, 0);
    buf_printf(path, "%c%s=%s", path->len && strchr(path->data, '?') ? '&' : '?', key, v ? v : "");
    curl_free(v);
}
