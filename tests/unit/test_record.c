/* Unit tests for src/record.c: record_check, record_text and record_headers_json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "json.h"
#include "record.h"

#define MAX_BYTES 1024

static struct record rec(const char *value, size_t len)
{
    struct record r = {
        .topic = "t",
        .partition = 0,
        .offset = 1,
        .value = value,
        .value_len = len,
        .timestamp_ms = -1,
    };
    return r;
}

/* record_check on a value; returns the reason (NULL when fine), *detail_out when given. */
static const char *check(const char *value, size_t len, size_t max, bool *is_object,
                         char **detail_out)
{
    struct record r = rec(value, len);
    bool obj = true;
    char *detail = NULL;
    const char *reason = record_check(&r, max, &obj, &detail);
    if (is_object) *is_object = obj;
    if (reason) {
        assert_non_null(detail);
        assert_true(strlen(detail) > 0);
    } else {
        assert_null(detail);
        assert_false(!obj && len > 0 && value[0] == '{');
    }
    if (detail_out)
        *detail_out = detail;
    else
        free(detail);
    return reason;
}

#define CHECK(lit, obj, det) check(lit, sizeof(lit) - 1, MAX_BYTES, obj, det)

static void test_check_ok(void **state)
{
    (void)state;
    bool obj = false;
    assert_null(CHECK("{\"tenant_id\":\"acme\"}", &obj, NULL));
    assert_true(obj);
    assert_null(CHECK("[1,2]", &obj, NULL));
    assert_false(obj);
    assert_null(CHECK("\"just a string\"", &obj, NULL));
    assert_false(obj);
    assert_null(CHECK(" {\"k\":\"caf\xc3\xa9\"} ", &obj, NULL));
    assert_true(obj);
    assert_null(CHECK("{\"a\":\"\\\\u0000\"}", &obj, NULL)); /* escaped backslash: fine */
    /* exactly at the limit is fine */
    char *big = malloc(MAX_BYTES);
    memset(big, ' ', MAX_BYTES);
    big[0] = '{';
    big[MAX_BYTES - 1] = '}';
    assert_null(check(big, MAX_BYTES, MAX_BYTES, &obj, NULL));
    assert_true(obj);
    free(big);
}

static void test_check_too_large(void **state)
{
    (void)state;
    char *big = malloc(MAX_BYTES + 1);
    memset(big, ' ', MAX_BYTES + 1);
    big[0] = '{';
    big[MAX_BYTES] = '}';
    char *detail = NULL;
    bool obj = true;
    assert_string_equal(check(big, MAX_BYTES + 1, MAX_BYTES, &obj, &detail), "too_large");
    assert_false(obj);
    assert_non_null(strstr(detail, "1025"));
    assert_non_null(strstr(detail, "1024"));
    free(detail);
    /* size wins over every other problem */
    big[5] = (char)0xff;
    big[6] = '\0';
    assert_string_equal(check(big, MAX_BYTES + 1, MAX_BYTES, NULL, NULL), "too_large");
    free(big);
}

static void test_check_invalid_utf8(void **state)
{
    (void)state;
    char *detail = NULL;
    assert_string_equal(CHECK("{\"a\":\"\xff\"}", NULL, &detail), "invalid_utf8");
    assert_non_null(strstr(detail, "offset 6"));
    free(detail);
    assert_string_equal(CHECK("{\"a\":\"\xed\xa0\x80\"}", NULL, NULL), "invalid_utf8");
    assert_string_equal(CHECK("{\"a\":\"\xc0\x80\"}", NULL, NULL), "invalid_utf8");
    assert_string_equal(CHECK("\xc3", NULL, NULL), "invalid_utf8");
    /* invalid UTF-8 and a NUL byte: UTF-8 is checked first */
    assert_string_equal(CHECK("\xff\0", NULL, NULL), "invalid_utf8");
}

static void test_check_nul_character(void **state)
{
    (void)state;
    char *detail = NULL;
    bool obj = true;
    /* a raw NUL byte */
    assert_string_equal(CHECK("{\"a\":\"x\0y\"}", &obj, &detail), "nul_character");
    assert_false(obj);
    assert_non_null(strstr(detail, "offset 7"));
    free(detail);
    assert_string_equal(CHECK("{}\0", NULL, NULL), "nul_character");
    /* the \u0000 escape, refused by jsonb */
    assert_string_equal(CHECK("{\"a\":\"x\\u0000y\"}", NULL, &detail), "nul_character");
    assert_non_null(strstr(detail, "\\u0000"));
    free(detail);
    assert_string_equal(CHECK("[\"\\u0000\"]", NULL, NULL), "nul_character");
}

static void test_check_invalid_json(void **state)
{
    (void)state;
    char *detail = NULL;
    bool obj = true;
    assert_string_equal(CHECK("{\"a\":1,}", &obj, &detail), "invalid_json");
    assert_false(obj);
    assert_non_null(strstr(detail, "offset 7"));
    free(detail);
    assert_string_equal(CHECK("not json", NULL, NULL), "invalid_json");
    assert_string_equal(CHECK("{'a':1}", NULL, NULL), "invalid_json");
    assert_string_equal(CHECK("{\"a\":1} x", NULL, NULL), "invalid_json");
    /* empty value */
    assert_string_equal(CHECK("", NULL, &detail), "invalid_json");
    assert_non_null(strstr(detail, "empty"));
    free(detail);
    assert_string_equal(CHECK("   ", NULL, NULL), "invalid_json");
}

static void test_check_null_value_and_null_detail(void **state)
{
    (void)state;
    /* a tombstone (NULL value) is treated as empty */
    struct record r = rec(NULL, 0);
    bool obj = true;
    char *detail = NULL;
    assert_string_equal(record_check(&r, MAX_BYTES, &obj, &detail), "invalid_json");
    assert_false(obj);
    assert_non_null(detail);
    free(detail);
    /* detail may be NULL: the reason still comes back and nothing leaks */
    assert_string_equal(record_check(&r, MAX_BYTES, &obj, NULL), "invalid_json");
    struct record r2 = rec("\xff", 1);
    assert_string_equal(record_check(&r2, MAX_BYTES, &obj, NULL), "invalid_utf8");
    struct record r3 = rec("{}", 2);
    assert_null(record_check(&r3, MAX_BYTES, &obj, NULL));
    assert_true(obj);
    struct record r4 = rec("{}", 2);
    assert_string_equal(record_check(&r4, 1, &obj, NULL), "too_large");
}

static char *text_of(const char *p, size_t n)
{
    struct buf b = {0};
    record_text(&b, p, n);
    char *s = strdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

static void test_record_text(void **state)
{
    (void)state;
    char *s = text_of("hello", 5);
    assert_string_equal(s, "hello");
    free(s);
    s = text_of("caf\xc3\xa9", 5);
    assert_string_equal(s, "caf\xc3\xa9");
    free(s);
    s = text_of("", 0);
    assert_string_equal(s, "");
    free(s);
    s = text_of("a\xff", 2);
    assert_string_equal(s, "\\x61ff");
    free(s);
    s = text_of("a\0b", 3); /* valid UTF-8, but NUL cannot go in a text column */
    assert_string_equal(s, "\\x610062");
    free(s);
    s = text_of("\xed\xa0\x80\x0a", 4);
    assert_string_equal(s, "\\xeda0800a");
    free(s);
    /* appends */
    struct buf b = {0};
    buf_puts(&b, "k=");
    record_text(&b, "\x80", 1);
    assert_string_equal(buf_cstr(&b), "k=\\x80");
    buf_free(&b);
}

static char *headers_json(const struct record_header *h, size_t n)
{
    struct record r = rec("{}", 2);
    r.headers = h;
    r.nheaders = n;
    struct buf b = {0};
    record_headers_json(&r, &b);
    struct json_info info = {0};
    if (json_check(b.data, b.len, &info) != JSON_OK)
        fail_msg("record_headers_json gave invalid JSON: %s (%s at %zu)", b.data, info.error,
                 info.error_at);
    char *s = strdup(b.data);
    buf_free(&b);
    return s;
}

static void test_headers_none(void **state)
{
    (void)state;
    struct record r = rec("{}", 2);
    struct buf b = {0};
    record_headers_json(&r, &b);
    assert_string_equal(buf_cstr(&b), "null");
    buf_free(&b);
}

static void test_headers_simple(void **state)
{
    (void)state;
    struct record_header h[] = {
        {"x-replay-source", "operator_api", 12},
        {"content-type", "application/json", 16},
    };
    char *s = headers_json(h, 2);
    assert_string_equal(
        s, "{\"x-replay-source\":\"operator_api\",\"content-type\":\"application/json\"}");
    free(s);
}

static void test_headers_repeated_and_null(void **state)
{
    (void)state;
    struct record_header h[] = {
        {"a", "1", 1}, {"b", NULL, 0}, {"a", "2", 1}, {"c", "", 0}, {"a", NULL, 0},
    };
    char *s = headers_json(h, 5);
    assert_string_equal(s, "{\"a\":[\"1\",\"2\",null],\"b\":null,\"c\":\"\"}");
    free(s);
    struct record_header twice[] = {{"k", "v", 1}, {"k", "v", 1}};
    s = headers_json(twice, 2);
    assert_string_equal(s, "{\"k\":[\"v\",\"v\"]}");
    free(s);
}

static void test_headers_escaping(void **state)
{
    (void)state;
    struct record_header h[] = {
        {"q\"uote", "back\\slash \"x\"", 14},
        {"bin", "\xff\x00\x01", 3},    /* not UTF-8: hex */
        {"nul", "a\0b", 3},            /* NUL: hex */
        {"ctl", "line1\nline2\t", 12}, /* control characters: escaped */
        {"utf", "caf\xc3\xa9", 5},
        {"bad\xffname", "v", 1}, /* a non-UTF-8 name: hex too */
    };
    char *s = headers_json(h, sizeof h / sizeof h[0]);
    assert_string_equal(s, "{\"q\\\"uote\":\"back\\\\slash \\\"x\\\"\","
                           "\"bin\":\"\\\\xff0001\","
                           "\"nul\":\"\\\\x610062\","
                           "\"ctl\":\"line1\\nline2\\t\","
                           "\"utf\":\"caf\xc3\xa9\","
                           "\"\\\\x626164ff6e616d65\":\"v\"}");
    free(s);
}

static void test_headers_value_with_length(void **state)
{
    (void)state;
    /* value_len is honoured: bytes past it are not part of the value */
    struct record_header h[] = {{"k", "abcdef", 3}};
    char *s = headers_json(h, 1);
    assert_string_equal(s, "{\"k\":\"abc\"}");
    free(s);
}

static void test_headers_many(void **state)
{
    (void)state;
    enum { N = 300 };
    struct record_header *h = calloc(N, sizeof *h);
    char names[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "h%d", i % 50);
        h[i].name = names[i];
        h[i].value = (i % 7 == 0) ? NULL : "\x01\"v\\";
        h[i].value_len = 4;
    }
    char *s = headers_json(h, N);
    assert_non_null(strstr(s, "\"h0\":["));
    assert_non_null(strstr(s, "\"h49\":["));
    free(s);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_ok),
        cmocka_unit_test(test_check_too_large),
        cmocka_unit_test(test_check_invalid_utf8),
        cmocka_unit_test(test_check_nul_character),
        cmocka_unit_test(test_check_invalid_json),
        cmocka_unit_test(test_check_null_value_and_null_detail),
        cmocka_unit_test(test_record_text),
        cmocka_unit_test(test_headers_none),
        cmocka_unit_test(test_headers_simple),
        cmocka_unit_test(test_headers_repeated_and_null),
        cmocka_unit_test(test_headers_escaping),
        cmocka_unit_test(test_headers_value_with_length),
        cmocka_unit_test(test_headers_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
