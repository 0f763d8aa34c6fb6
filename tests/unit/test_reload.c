/* reload.c: no reload request is ever lost, whether it comes from SIGHUP or the API and
 * whenever it comes (also while a reload is running). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "reload.h"

/* what the pipeline thread does: take the request, load, report */
static void serve_one(bool ok)
{
    assert_true(reload_wanted());
    reload_begin();
    reload_done(ok, 1, ok ? NULL : "refused", NULL);
}

static void test_a_signal_during_a_reload_causes_one_more(void **state)
{
    (void)state;
    reload_request_from_signal();
    assert_true(reload_wanted());
    reload_begin();
    reload_request_from_signal(); /* arrives while the files are being loaded */
    reload_done(true, 2, NULL, NULL);
    assert_true(reload_wanted()); /* one more reload, which sees the newer files */
    serve_one(true);
    assert_false(reload_wanted());
}

static void test_a_storm_of_signals_is_one_reload_more_not_lost(void **state)
{
    (void)state;
    reload_request_from_signal();
    reload_begin();
    for (int i = 0; i < 100; i++)
        reload_request_from_signal();
    reload_done(true, 3, NULL, NULL);
    serve_one(true);
    assert_false(reload_wanted());
}

static void *api_request(void *arg)
{
    int *rc = arg;
    int version = 0;
    char *err = NULL;
    *rc = reload_request_wait(5000, &version, &err, NULL);
    free(err);
    return NULL;
}

static void test_an_api_request_during_a_reload_is_served_by_the_next(void **state)
{
    (void)state;
    reload_request_from_signal();
    reload_begin();
    int rc = 99;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, api_request, &rc), 0);
    while (!reload_pending())
        ;                             /* the request is registered */
    reload_done(true, 4, NULL, NULL); /* began before the request: does not answer it */
    assert_true(reload_wanted());
    serve_one(true);
    pthread_join(t, NULL);
    assert_int_equal(rc, 1);
    assert_false(reload_wanted());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_signal_during_a_reload_causes_one_more),
        cmocka_unit_test(test_a_storm_of_signals_is_one_reload_more_not_lost),
        cmocka_unit_test(test_an_api_request_during_a_reload_is_served_by_the_next),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
