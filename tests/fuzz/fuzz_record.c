/* libFuzzer target: a Kafka record's bytes -> the checks and conversions that turn it into
 * a journal row or a DLQ row (record.c, json.c, utf8.c). Invariants: a value that passes
 * record_check is JSON that jsonv_parse accepts; the headers JSON and the text form of any
 * bytes are always valid JSON / valid UTF-8. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "jsonv.h"
#include "record.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* layout: [n headers][value...] with header names/values carved from the tail */
    const char *p = (const char *)data;
    struct record r = {.topic = "fuzz", .partition = 0, .offset = 0, .timestamp_ms = -1};
    struct record_header h[4];
    char names[4][8];
    size_t nh = size ? data[0] % 5 : 0;
    if (nh > size) nh = 0;
    size_t rest = size ? size - 1 : 0;
    const char *v = size ? p + 1 : p;
    for (size_t i = 0; i < nh; i++) {
        size_t take = rest / (nh + 1 - i) / 2;
        names[i][0] = 'h';
        names[i][1] = (char)('0' + (i % 2)); /* repeats: h0 h1 h0 h1 */
        names[i][2] = '\0';
        h[i].name = names[i];
        h[i].value = take ? v + rest - take : NULL;
        h[i].value_len = take;
        rest -= take;
    }
    r.headers = h;
    r.nheaders = nh;
    r.value = v;
    r.value_len = rest;
    r.key = v;
    r.key_len = rest < 16 ? rest : 16;

    bool is_object = false;
    char *detail = NULL;
    const char *bad = record_check(&r, 4096, &is_object, &detail);
    if (!bad) {
        const char *err;
        size_t at;
        struct jsonv *jv = jsonv_parse(r.value, r.value_len, &err, &at);
        assert(jv);
        assert(is_object == (jv->type == JV_OBJECT));
        jsonv_free(jv);
    } else {
        assert(detail && utf8_valid(detail, strlen(detail), NULL));
    }
    free(detail);

    struct buf b = {0};
    record_headers_json(&r, &b);
    struct json_info info;
    assert(json_check(b.data, b.len, &info) == JSON_OK);
    buf_reset(&b);
    record_text(&b, r.value, r.value_len);
    assert(utf8_valid(b.data ? b.data : "", b.len, NULL));
    assert(b.len == 0 || !memchr(b.data, '\0', b.len));
    buf_reset(&b);
    json_write_string(&b, r.value, r.value_len);
    /* valid JSON; a NUL byte comes out as \u0000, which json_check flags for jsonb */
    enum json_status st = json_check(b.data, b.len, &info);
    assert(st == JSON_OK || (st == JSON_NUL_ESCAPE && memchr(r.value, '\0', r.value_len)));
    buf_free(&b);
    return 0;
}
