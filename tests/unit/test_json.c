/* Unit tests for src/json.c: json_check (strict RFC 8259 + jsonb's refusals) and
 * json_write_string / json_write_cstr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "json.h"

/* json_check on a C string (the terminating NUL is not part of the input). */
static enum json_status check(const char *s, struct json_info *info)
{
    return json_check(s, strlen(s), info);
}

static void expect_ok(const char *s, bool is_object)
{
    struct json_info info = {0};
    enum json_status st = check(s, &info);
    if (st != JSON_OK)
        fail_msg("expected valid JSON: %s (status %d, error '%s' at %zu)", s, (int)st,
                 info.error ? info.error : "(none)", info.error_at);
    if (info.is_object != is_object)
        fail_msg("is_object for %s: expected %d, got %d", s, is_object, info.is_object);
}

static size_t expect_invalid(const char *s, size_t n)
{
    struct json_info info = {0};
    enum json_status st = json_check(s, n, &info);
    if (st != JSON_INVALID)
        fail_msg("expected JSON_INVALID for [%.*s], got status %d", (int)n, s, (int)st);
    assert_non_null(info.error);
    assert_true(info.error_at <= n);
    return info.error_at;
}

static void test_valid_scalars_at_top_level(void **state)
{
    (void)state;
    expect_ok("0", false);
    expect_ok("-0", false);
    expect_ok("42", false);
    expect_ok("-12.5", false);
    expect_ok("true", false);
    expect_ok("false", false);
    expect_ok("null", false);
    expect_ok("\"hello\"", false);
    expect_ok("\"\"", false);
    expect_ok("  \t\r\n 7 \n", false);
}

static void test_valid_objects_and_arrays(void **state)
{
    (void)state;
    expect_ok("{}", true);
    expect_ok("  {}  ", true);
    expect_ok("{\"a\":1}", true);
    expect_ok("{ \"a\" : [1, 2, {\"b\": null}], \"c\": {\"d\": {\"e\": \"f\"}} }", true);
    expect_ok("[]", false);
    expect_ok("[1,\"two\",true,false,null,{},[]]", false);
    expect_ok("[[[[[[]]]]]]", false);
    expect_ok("{\"\":\"empty key\"}", true);
    expect_ok("{\"a\":1,\"a\":2}", true); /* duplicate keys are valid JSON */
}

static void test_valid_numbers(void **state)
{
    (void)state;
    expect_ok("1e10", false);
    expect_ok("1E10", false);
    expect_ok("1e+10", false);
    expect_ok("1e-10", false);
    expect_ok("-1.5E-3", false);
    expect_ok("0.000001", false);
    expect_ok("0e0", false);
    expect_ok("123456789012345678901234567890", false);
    expect_ok("[0,-0,0.5,-0.5,10,1.0e+2]", false);
}

static void test_valid_escapes_and_surrogates(void **state)
{
    (void)state;
    expect_ok("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", false);
    expect_ok("\"\\u0041\\u00e9\\u20AC\\uFFFF\"", false);
    expect_ok("\"\\uD83D\\uDE00\"", false); /* U+1F600 as a surrogate pair */
    expect_ok("\"\\ud83d\\ude00\"", false); /* lower-case hex */
    expect_ok("\"\\uDBFF\\uDFFF\"", false); /* U+10FFFF */
    expect_ok("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", false); /* raw UTF-8 */
    expect_ok("\"\\\\u0000\"", false); /* an escaped backslash then "u0000": fine */
    expect_ok("{\"k\\u0001\":\"\\u001f\"}", true);
}

static void test_invalid_texts(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[1,2,]",
        "{\"a\":1,}",
        "{'a':1}",
        "['x']",
        "01",
        "-01",
        "00",
        "1.",
        ".5",
        "1e",
        "1e+",
        "-",
        "+1",
        "0x10",
        "NaN",
        "Infinity",
        "tru",
        "nul",
        "True",
        "[1 2]",
        "{\"a\" 1}",
        "{\"a\":}",
        "{1:2}",
        "{\"a\"}",
        "[",
        "{",
        "\"abc",
        "[1,",
        "{\"a\":",
        "\"\\",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\x41\"",
        "\"\\U0041\"",
        "\"\\uD83D\"",
        "\"\\uD83Dx\"",
        "\"\\uD83D\\u0041\"",
        "\"\\uDE00\"",
        "\"\\uDE00\\uD83D\"",
        "{} x",
        "[] []",
        "1 2",
        "nullx",
        "\"a\"\"b\"",
        "",
        "   ",
        "\n",
        "]",
        "}",
        ",",
        ":",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_invalid(bad[i], strlen(bad[i]));
}

static void test_invalid_control_characters(void **state)
{
    (void)state;
    char s[] = "\"a?b\"";
    for (int c = 1; c < 0x20; c++) {
        s[2] = (char)c;
        assert_int_equal(expect_invalid(s, strlen(s)), 2);
    }
    /* a raw NUL byte inside a string */
    static const char nul[] = {'"', 'a', '\0', '"'};
    expect_invalid(nul, sizeof nul);
    /* a NUL byte after a valid value is trailing garbage */
    static const char trail[] = {'{', '}', '\0'};
    assert_int_equal(expect_invalid(trail, sizeof trail), 2);
}

static void test_truncated_input(void **state)
{
    (void)state;
    const char *full = "{\"a\":[1,2.5e3,\"x\\u00e9\",{\"b\":true}]}";
    size_t n = strlen(full);
    expect_ok(full, true);
    /* every proper prefix is invalid, and the error is reported within the input */
    for (size_t k = 0; k < n; k++)
        expect_invalid(full, k);
}

static void test_error_offsets(void **state)
{
    (void)state;
    assert_int_equal(expect_invalid("[1,2,]", 6), 5);  /* at the ']' */
    assert_int_equal(expect_invalid("{} x", 4), 3);    /* at the 'x' */
    assert_int_equal(expect_invalid("[1, 01]", 7), 5); /* the second digit of 01 */
    assert_int_equal(expect_invalid("{'a':1}", 7), 1);
    assert_in_range(expect_invalid("\"\\uDE00\"", 8), 1, 7);
    size_t at = expect_invalid("\"abc", 4);
    assert_int_equal(at, 4);
}

static void test_nul_escape(void **state)
{
    (void)state;
    struct json_info info = {0};
    assert_int_equal(check("\"\\u0000\"", &info), JSON_NUL_ESCAPE);
    assert_int_equal(info.error_at, 1);
    assert_non_null(info.error);
    assert_int_equal(check("{\"a\":\"x\\u0000y\"}", &info), JSON_NUL_ESCAPE);
    assert_true(info.is_object);
    assert_int_equal(info.error_at, 7);
    assert_int_equal(check("{\"k\\u0000\":1}", &info), JSON_NUL_ESCAPE); /* in a key */
    assert_int_equal(check("\"\\\\u0000\"", &info), JSON_OK);
    assert_int_equal(check("\"\\\\\\u0000\"", &info), JSON_NUL_ESCAPE); /* \\ then \u0000 */
}

/* BUG (json.c): once a \u0000 escape has been seen, later syntax errors no longer change
 * the status, so an invalid text is reported as JSON_NUL_ESCAPE ("valid JSON, but ...")
 * instead of JSON_INVALID; record_check then files it as nul_character, not invalid_json. */
static void test_nul_escape_then_invalid_is_invalid(void **state)
{
    (void)state;
    struct json_info info = {0};
    assert_int_equal(check("[\"\\u0000\",]", &info), JSON_INVALID);
    assert_int_equal(check("\"\\u0000", &info), JSON_INVALID);
    assert_int_equal(check("{\"a\":\"\\u0000\"} garbage", &info), JSON_INVALID);
}

static void test_depth_limit(void **state)
{
    (void)state;
    size_t n = JSON_MAX_DEPTH + 1;
    char *s = malloc(2 * n + 1);
    /* exactly JSON_MAX_DEPTH levels: accepted */
    memset(s, '[', JSON_MAX_DEPTH);
    memset(s + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    struct json_info info = {0};
    assert_int_equal(json_check(s, 2 * JSON_MAX_DEPTH, &info), JSON_OK);
    /* one more: refused */
    memset(s, '[', n);
    memset(s + n, ']', n);
    assert_int_equal(json_check(s, 2 * n, &info), JSON_INVALID);
    assert_int_equal(info.error_at, JSON_MAX_DEPTH);
    /* objects count too */
    struct buf b = {0};
    for (size_t i = 0; i < n; i++)
        buf_puts(&b, "{\"a\":");
    buf_putc(&b, '1');
    for (size_t i = 0; i < n; i++)
        buf_putc(&b, '}');
    assert_int_equal(json_check(b.data, b.len, &info), JSON_INVALID);
    assert_true(info.is_object);
    /* very deep input must not overflow the stack */
    size_t deep = 200000;
    char *d = malloc(deep);
    memset(d, '[', deep);
    assert_int_equal(json_check(d, deep, &info), JSON_INVALID);
    free(d);
    buf_free(&b);
    free(s);
}

static void test_is_object(void **state)
{
    (void)state;
    struct json_info info = {0};
    assert_int_equal(check("  {\"a\":1}", &info), JSON_OK);
    assert_true(info.is_object);
    assert_int_equal(check("[{}]", &info), JSON_OK);
    assert_false(info.is_object);
    assert_int_equal(check("\"{}\"", &info), JSON_OK);
    assert_false(info.is_object);
    /* a NULL info is allowed */
    assert_int_equal(json_check("{}", 2, NULL), JSON_OK);
    assert_int_equal(json_check("{", 1, NULL), JSON_INVALID);
}

static void roundtrip(const char *s, size_t n, const char *expected)
{
    struct buf b = {0};
    json_write_string(&b, s, n);
    if (expected) assert_string_equal(b.data, expected);
    struct json_info info = {0};
    if (json_check(b.data, b.len, &info) != JSON_OK)
        fail_msg("json_write_string produced invalid JSON: %s (%s at %zu)", b.data, info.error,
                 info.error_at);
    assert_false(info.is_object);
    /* no raw control character survives */
    for (size_t i = 0; i < b.len; i++)
        assert_true((unsigned char)b.data[i] >= 0x20);
    buf_free(&b);
}

static void test_write_string_escapes(void **state)
{
    (void)state;
    roundtrip("", 0, "\"\"");
    roundtrip("plain text", 10, "\"plain text\"");
    roundtrip("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    roundtrip("a\\b", 3, "\"a\\\\b\"");
    roundtrip("l1\nl2\r\t", 7, "\"l1\\nl2\\r\\t\"");
    roundtrip("\b\f", 2, "\"\\b\\f\"");
    roundtrip("\x01\x1f", 2, "\"\\u0001\\u001f\"");
    roundtrip("x\x7fy", 3, "\"x\x7fy\"");
    roundtrip("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
    roundtrip("/", 1, "\"/\"");
    roundtrip("\\u0000", 6, "\"\\\\u0000\"");
}

static void test_write_string_nul_and_all_controls(void **state)
{
    (void)state;
    static const char nul[] = {'a', '\0', 'b'};
    struct buf b = {0};
    json_write_string(&b, nul, sizeof nul);
    assert_string_equal(b.data, "\"a\\u0000b\"");
    buf_free(&b);
    char all[0x7f]; /* every ASCII byte but NUL */
    for (int i = 1; i < 0x80; i++)
        all[i - 1] = (char)i;
    roundtrip(all, sizeof all, NULL);
    /* appends to what is there */
    buf_puts(&b, "x=");
    json_write_string(&b, "\"", 1);
    assert_string_equal(b.data, "x=\"\\\"\"");
    buf_free(&b);
}

static void test_write_cstr(void **state)
{
    (void)state;
    struct buf b = {0};
    json_write_cstr(&b, NULL);
    buf_putc(&b, ',');
    json_write_cstr(&b, "q\"");
    assert_string_equal(b.data, "null,\"q\\\"\"");
    buf_free(&b);
}

static void test_write_long_string(void **state)
{
    (void)state;
    size_t n = 100000;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++)
        s[i] = (i % 97 == 0) ? '"' : (i % 89 == 0) ? '\n' : 'a' + (char)(i % 26);
    roundtrip(s, n, NULL);
    free(s);
}

static void compacted(const char *in, const char *want)
{
    struct buf b = {0};
    buf_puts(&b, in);
    json_compact(&b);
    assert_string_equal(buf_cstr(&b), want);
    buf_free(&b);
}

static void test_compact(void **state)
{
    (void)state;
    /* PostgreSQL's json_build_object and json_agg spacing */
    compacted("{\"events\" : [{\"id\":1}, \n {\"id\":2}]}",
              "{\"events\":[{\"id\":1},{\"id\":2}]}\n");
    /* whitespace inside strings stays, escaped quotes and backslashes do not end them */
    compacted("{\"a b\" : \"x \\\" y\", \"c\" : \"\\\\\" , \"d\" : \" \\n \"}",
              "{\"a b\":\"x \\\" y\",\"c\":\"\\\\\",\"d\":\" \\n \"}\n");
    compacted("\t[ 1 ,\r\n 2 ]  ", "[1,2]\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_scalars_at_top_level),
        cmocka_unit_test(test_valid_objects_and_arrays),
        cmocka_unit_test(test_valid_numbers),
        cmocka_unit_test(test_valid_escapes_and_surrogates),
        cmocka_unit_test(test_invalid_texts),
        cmocka_unit_test(test_invalid_control_characters),
        cmocka_unit_test(test_truncated_input),
        cmocka_unit_test(test_error_offsets),
        cmocka_unit_test(test_nul_escape),
        cmocka_unit_test(test_nul_escape_then_invalid_is_invalid),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_is_object),
        cmocka_unit_test(test_write_string_escapes),
        cmocka_unit_test(test_compact),
        cmocka_unit_test(test_write_string_nul_and_all_controls),
        cmocka_unit_test(test_write_cstr),
        cmocka_unit_test(test_write_long_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
