/* Unit tests for src/pgarray.c: PostgreSQL array literals in text format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pgarray.h"

static void test_empty(void **state)
{
    (void)state;
    struct pgarray a = {0};
    assert_string_equal(pgarray_text(&a), "{}");
    assert_string_equal(pgarray_text(&a), "{}"); /* asking twice changes nothing */
    pgarray_free(&a);
}

static void test_strings_plain(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_cstr(&a, "acme");
    assert_string_equal(pgarray_text(&a), "{\"acme\"}");
    pgarray_cstr(&a, "");
    pgarray_cstr(&a, "with space, comma {brace}");
    assert_string_equal(pgarray_text(&a), "{\"acme\",\"\",\"with space, comma {brace}\"}");
    assert_int_equal(a.n, 3);
    pgarray_free(&a);
}

static void test_quoting(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_cstr(&a, "say \"hi\"");
    pgarray_cstr(&a, "back\\slash");
    pgarray_cstr(&a, "\"");
    pgarray_cstr(&a, "\\");
    pgarray_cstr(&a, "\\\"\\\"");
    pgarray_cstr(&a, "NULL"); /* the word, quoted: not a NULL element */
    assert_string_equal(pgarray_text(&a), "{\"say \\\"hi\\\"\",\"back\\\\slash\",\"\\\"\","
                                          "\"\\\\\",\"\\\\\\\"\\\\\\\"\",\"NULL\"}");
    pgarray_free(&a);
}

static void test_str_with_length(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_str(&a, "abcdef", 3);
    pgarray_str(&a, "{\"x\":1}", 7);       /* a JSON document as one element */
    pgarray_str(&a, "caf\xc3\xa9\n\t", 7); /* UTF-8 and control characters pass through */
    assert_string_equal(pgarray_text(&a), "{\"abc\",\"{\\\"x\\\":1}\",\"caf\xc3\xa9\n\t\"}");
    pgarray_free(&a);
}

static void test_null_elements(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_cstr(&a, NULL);
    pgarray_str(&a, NULL, 0);
    pgarray_cstr(&a, "x");
    pgarray_int_or_null(&a, 0);
    assert_string_equal(pgarray_text(&a), "{NULL,NULL,\"x\",NULL}");
    assert_int_equal(a.n, 4);
    pgarray_free(&a);
}

static void test_ints(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_int(&a, 0);
    pgarray_int(&a, 42);
    pgarray_int(&a, -7);
    pgarray_int(&a, INT64_MAX);
    pgarray_int(&a, INT64_MIN);
    pgarray_int_or_null(&a, 5);
    pgarray_int_or_null(&a, -1);
    assert_string_equal(pgarray_text(&a),
                        "{0,42,-7,9223372036854775807,-9223372036854775808,5,-1}");
    pgarray_free(&a);
}

static void test_bytea(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_bytea(&a, "", 0);
    pgarray_bytea(&a, "\x00\x01\xff", 3);
    pgarray_bytea(&a, "AB\"\\", 4);
    /* the array parser turns \\ into \, then bytea reads \x and hex */
    assert_string_equal(pgarray_text(&a), "{\"\\\\x\",\"\\\\x0001ff\",\"\\\\x4142225c\"}");
    pgarray_free(&a);
}

static void test_mixed_and_text_then_append(void **state)
{
    (void)state;
    struct pgarray a = {0};
    pgarray_cstr(&a, "a");
    assert_string_equal(pgarray_text(&a), "{\"a\"}");
    /* adding after reading continues the same array */
    pgarray_int(&a, 1);
    assert_string_equal(pgarray_text(&a), "{\"a\",1}");
    pgarray_bytea(&a, "\x10", 1);
    pgarray_cstr(&a, NULL);
    assert_string_equal(pgarray_text(&a), "{\"a\",1,\"\\\\x10\",NULL}");
    assert_string_equal(pgarray_text(&a), "{\"a\",1,\"\\\\x10\",NULL}");
    pgarray_free(&a);
}

static void test_reset_and_reuse(void **state)
{
    (void)state;
    struct pgarray a = {0};
    for (int round = 0; round < 3; round++) {
        pgarray_cstr(&a, "first");
        pgarray_int(&a, round);
        char want[64];
        snprintf(want, sizeof want, "{\"first\",%d}", round);
        assert_string_equal(pgarray_text(&a), want);
        pgarray_reset(&a);
        assert_int_equal(a.n, 0);
        assert_string_equal(pgarray_text(&a), "{}");
    }
    /* after an empty text, the next element starts a fresh array */
    pgarray_cstr(&a, "z");
    assert_string_equal(pgarray_text(&a), "{\"z\"}");
    pgarray_reset(&a);
    pgarray_int(&a, 9);
    assert_string_equal(pgarray_text(&a), "{9}");
    /* free, then use again */
    pgarray_free(&a);
    assert_string_equal(pgarray_text(&a), "{}");
    pgarray_cstr(&a, "again");
    assert_string_equal(pgarray_text(&a), "{\"again\"}");
    pgarray_free(&a);
}

static void test_large(void **state)
{
    (void)state;
    struct pgarray a = {0};
    enum { N = 10000 };
    for (int i = 0; i < N; i++)
        pgarray_cstr(&a, "x\"y");
    const char *t = pgarray_text(&a);
    size_t len = strlen(t);
    /* "{", N times "x\"y" quoted (6 bytes), N-1 commas, "}" */
    assert_int_equal(len, 2 + N * 6 + (N - 1));
    assert_int_equal(t[0], '{');
    assert_int_equal(t[len - 1], '}');
    pgarray_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),           cmocka_unit_test(test_strings_plain),
        cmocka_unit_test(test_quoting),         cmocka_unit_test(test_str_with_length),
        cmocka_unit_test(test_null_elements),   cmocka_unit_test(test_ints),
        cmocka_unit_test(test_bytea),           cmocka_unit_test(test_mixed_and_text_then_append),
        cmocka_unit_test(test_reset_and_reuse), cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
