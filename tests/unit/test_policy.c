/* Unit tests for src/policy.c (with lua/runtime.lua): loading policy files and deciding
 * what to do with records (CONTRACT section 6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "policy.h"
#include "policy_fixture.h"
#include "record.h"

static const struct lua_host_limits LIMITS = {.max_memory_bytes = 32u << 20,
                                              .max_instructions = 1000000};

static char msgcopy[4096];

static int setup(void **state)
{
    return fx_setup(state, "/tmp/es-pol-XXXXXX");
}

/* Writes the n texts to p1.lua.. and loads them with LIMITS; the set (also kept in fx->ps) or
 * NULL with fx->err set. */
static struct policy_set *load(struct fx *fx, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    struct policy_set *ps = fx_vload(fx, &LIMITS, 7, n, ap);
    va_end(ap);
    return ps;
}

static struct policy_set *load_ok(struct fx *fx, const char *text)
{
    if (!load(fx, 1, text)) fail_msg("policy_set_load failed: %s", fx->err);
    return fx->ps;
}

/* Expects the load to fail with a message holding each string of the NULL-ended list. */
static void expect_load_error(struct fx *fx, int n, const char *t1, const char *t2, ...)
{
    if (load(fx, n, t1, t2)) fail_msg("policy_set_load accepted:\n%s", t1);
    assert_non_null(fx->err);
    va_list ap;
    va_start(ap, t2);
    for (const char *want; (want = va_arg(ap, const char *));)
        if (!strstr(fx->err, want)) {
            va_end(ap);
            fail_msg("the load error should mention '%s'; it is: %s", want, fx->err);
        }
    va_end(ap);
}

/* A record with a JSON value (as text) and up to 4 headers (name, value pairs, NULL-ended). */
struct rec {
    struct record r;
    struct record_header h[4];
};

static void make_rec(struct rec *rc, const char *value, ...)
{
    memset(rc, 0, sizeof *rc);
    rc->r.topic = "apexflow.leads.created";
    rc->r.partition = 2;
    rc->r.offset = 99;
    rc->r.key = "k-1";
    rc->r.key_len = 3;
    rc->r.value = value;
    rc->r.value_len = value ? strlen(value) : 0;
    rc->r.timestamp_ms = 1700000000123;
    va_list ap;
    va_start(ap, value);
    for (const char *name; rc->r.nheaders < 4 && (name = va_arg(ap, const char *));) {
        const char *v = va_arg(ap, const char *);
        rc->h[rc->r.nheaders++] = (struct record_header){name, v, v ? strlen(v) : 0};
    }
    va_end(ap);
    rc->r.headers = rc->h;
}

/* Checks the record as the pipeline does, then decides. */
static void decide(struct policy_set *ps, const struct record *r, struct decision *d)
{
    bool obj;
    char *detail = NULL;
    const char *bad = record_check(r, 1 << 20, &obj, &detail);
    policy_decide(ps, r, bad, detail, d);
}

static void decide_json(struct policy_set *ps, const char *value, struct decision *d)
{
    struct rec rc;
    make_rec(&rc, value, NULL);
    decide(ps, &rc.r, d);
}

static void assert_str_or_null(const char *got, const char *want)
{
    if (!want && got) fail_msg("expected NULL, got \"%s\"", got);
    if (want && !got) fail_msg("expected \"%s\", got NULL", want);
    if (want) assert_string_equal(got, want);
}

static void expect_journal(struct policy_set *ps, const char *value, const char *tenant,
                           const char *etype)
{
    struct decision d;
    decide_json(ps, value, &d);
    if (d.to_dlq) {
        snprintf(msgcopy, sizeof msgcopy, "%s: %s", d.reason, d.detail ? d.detail : "");
        decision_clear(&d);
        fail_msg("%s\n  went to the DLQ: %s", value, msgcopy);
    }
    assert_str_or_null(d.tenant_id, tenant);
    assert_str_or_null(d.event_type, etype);
    decision_clear(&d);
}

/* Decides on value and expects the DLQ with reason; detail must hold `detail_has` (or be
 * NULL when detail_has is NULL). */
static void expect_dlq(struct policy_set *ps, const char *value, const char *reason,
                       const char *detail_has)
{
    struct decision d;
    decide_json(ps, value, &d);
    snprintf(msgcopy, sizeof msgcopy, "%s", d.detail ? d.detail : "(null)");
    bool ok = d.to_dlq && d.reason && strcmp(d.reason, reason) == 0 &&
              (detail_has ? d.detail && strstr(d.detail, detail_has) : !d.detail);
    const char *got = d.to_dlq ? d.reason : "(journal)";
    decision_clear(&d);
    if (!ok)
        fail_msg("%s\n  expected dlq %s with detail '%s'; got %s with detail '%s'", value, reason,
                 detail_has ? detail_has : "(null)", got, msgcopy);
}

static char default_policy[512];

static int find_default_policy(void)
{
    const char *prefixes[] = {"", "../", "../../", "../../../"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(default_policy, sizeof default_policy, "%spolicies/default.lua", prefixes[i]);
        if (access(default_policy, R_OK) == 0) return 0;
    }
    return -1;
}

static void test_default_policy_file(void **state)
{
    struct fx *fx = *state;
    char *items[] = {default_policy};
    struct strlist files = {.items = items, .n = 1};
    fx->ps = policy_set_load(&files, &LIMITS, 3, &fx->err);
    if (!fx->ps) fail_msg("policies/default.lua: %s", fx->err);
    assert_int_equal(policy_set_version(fx->ps), 3);
    expect_journal(fx->ps, "{\"tenant_id\":\"acme\",\"event_type\":\"lead.created\"}", "acme",
                   "lead.created");
    expect_journal(fx->ps, "{\"tenant_id\":\"acme\",\"type\":\"lead.updated\"}", "acme",
                   "lead.updated");
    expect_journal(fx->ps, "{\"tenant_id\":\"acme\",\"event_type\":null,\"type\":\"t\"}", "acme",
                   "t");
    expect_journal(fx->ps, "{\"tenant_id\":42}", "42", NULL);
    expect_dlq(fx->ps, "{\"event_type\":\"lead.created\"}", "missing_tenant", NULL);
    expect_dlq(fx->ps, "{\"tenant_id\":null}", "missing_tenant", NULL);
    expect_dlq(fx->ps, "[1,2,3]", "missing_tenant", NULL);
    expect_dlq(fx->ps, "\"acme\"", "missing_tenant", NULL);
    char longname[400];
    snprintf(longname, sizeof longname, "{\"tenant_id\":\"%0300d\"}", 0);
    expect_dlq(fx->ps, longname, "policy_error", "256"); /* names are at most 256 bytes */
    /* bad records keep the reason found by record_check */
    expect_dlq(fx->ps, "{\"tenant_id\":\"acme\",}", "invalid_json", "offset");
    expect_dlq(fx->ps, "", "invalid_json", "empty");
}

/* Decides on rc and checks the replay fields of a journal decision. */
static void expect_replay(struct policy_set *ps, struct rec *rc, const char *src, int64_t from,
                          int64_t dlq, int64_t job)
{
    struct decision d;
    decide(ps, &rc->r, &d);
    bool to_dlq = d.to_dlq;
    snprintf(msgcopy, sizeof msgcopy, "%s", d.replay_source ? d.replay_source : "(null)");
    int64_t got[3] = {d.replayed_from_event_id, d.replayed_from_dlq_id, d.replay_job_id};
    decision_clear(&d);
    if (to_dlq) fail_msg("%s: went to the DLQ", rc->r.value);
    if (src ? strcmp(msgcopy, src) != 0 : strcmp(msgcopy, "(null)") != 0)
        fail_msg("%s: replay_source %s, expected %s", rc->r.value, msgcopy, src ? src : "(null)");
    if (got[0] != from || got[1] != dlq || got[2] != job)
        fail_msg("%s: from/dlq/job %lld/%lld/%lld, expected %lld/%lld/%lld", rc->r.value,
                 (long long)got[0], (long long)got[1], (long long)got[2], (long long)from,
                 (long long)dlq, (long long)job);
}

static void test_builtin_defaults(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(fx, "return {}\n");
    expect_journal(ps, "{\"tenant_id\":\"globex\",\"event_type\":\"a.b\"}", "globex", "a.b");
    expect_journal(ps, "{\"tenant_id\":\"globex\",\"type\":\"c.d\"}", "globex", "c.d");
    expect_dlq(ps, "{\"type\":\"c.d\"}", "missing_tenant", NULL);
    struct rec rc;
    make_rec(&rc, "{\"tenant_id\":\"globex\"}", NULL);
    expect_replay(ps, &rc, NULL, 0, 0, 0); /* an original */
}

static void test_detect_replay_from_payload(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(fx, "return {}\n");
    struct rec rc;
    make_rec(&rc,
             "{\"tenant_id\":\"acme\",\"_replayed_from_event_id\":17,"
             "\"_replay_source\":\"operator_api\",\"_replay_job_id\":3}",
             NULL);
    expect_replay(ps, &rc, "operator_api", 17, 0, 3);
    /* ids as decimal strings */
    make_rec(&rc,
             "{\"tenant_id\":\"a\",\"_replayed_from_event_id\":\"18\",\"_replay_source\":\"x\"}",
             NULL);
    expect_replay(ps, &rc, "x", 18, 0, 0);
    /* a marker without a source still makes it a replay */
    make_rec(&rc, "{\"tenant_id\":\"acme\",\"_replayed_from_event_id\":19}", NULL);
    expect_replay(ps, &rc, "unknown", 19, 0, 0);
    /* a retry of a DLQ entry */
    make_rec(&rc,
             "{\"tenant_id\":\"acme\",\"_replayed_from_dlq_id\":7,\"_replay_job_id\":9,"
             "\"_replay_source\":\"automated\"}",
             NULL);
    expect_replay(ps, &rc, "automated", 0, 7, 9);
}

static void test_detect_replay_from_headers(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(fx, "return {}\n");
    struct rec rc;
    make_rec(&rc, "{\"tenant_id\":\"acme\"}", "x-replayed-from-event-id", "21", "x-replay-source",
             "webhook", "x-replay-job-id", "4", NULL);
    expect_replay(ps, &rc, "webhook", 21, 0, 4);
    make_rec(&rc, "{\"tenant_id\":\"acme\"}", "x-replayed-from-dlq-id", "11", "x-replay-job-id",
             "12", "x-replay-source", "operator_api", NULL);
    expect_replay(ps, &rc, "operator_api", 0, 11, 12);
    /* payload markers win over headers */
    make_rec(&rc, "{\"tenant_id\":\"a\",\"_replayed_from_event_id\":5,\"_replay_source\":\"o\"}",
             "x-replayed-from-event-id", "6", "x-replay-source", "webhook", NULL);
    expect_replay(ps, &rc, "o", 5, 0, 0);
    /* unrelated headers: an original */
    make_rec(&rc, "{\"tenant_id\":\"acme\"}", "content-type", "application/json", "nullhdr", NULL,
             NULL);
    expect_replay(ps, &rc, NULL, 0, 0, 0);
    /* a payload that is not an object carries the markers in the headers only */
    make_rec(&rc, "[\"acme\"]", "x-replayed-from-event-id", "8", "x-replay-source", "operator_api",
             NULL);
    struct decision d;
    decide(ps, &rc.r, &d);
    assert_true(d.to_dlq); /* no tenant: missing_tenant, but the replay is still seen */
    assert_string_equal(d.reason, "missing_tenant");
    assert_str_or_null(d.replay_source, "operator_api");
    assert_int_equal(d.replayed_from_event_id, 8);
    decision_clear(&d);
}

static void test_custom_route(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps =
        load_ok(fx, "return { route = function(ev, info)\n"
                    "  if ev.payload.spam then return 'dlq', 'spam' end\n"
                    "  if ev.payload.reject then return 'dlq', 'db_reject' end\n"
                    "  if ev.payload.plain then return 'dlq' end\n"
                    "  if ev.payload.weird then return 42 end\n"
                    "  if ev.payload.j then return 'journal' end\n"
                    "  return nil\n"
                    "end }\n");
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"spam\":true}", "policy_route", "spam");
    struct decision d;
    decide_json(ps, "{\"tenant_id\":\"a\",\"spam\":true}", &d);
    assert_string_equal(d.detail, "spam");
    assert_str_or_null(d.tenant_id, "a"); /* the tenant is kept for the DLQ row */
    decision_clear(&d);
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"reject\":true}", "db_reject", NULL);
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"plain\":true}", "policy_route", NULL);
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"weird\":true}", "policy_error", "route");
    expect_journal(ps, "{\"tenant_id\":\"a\",\"j\":true}", "a", NULL);
}

/* BUG (lua/runtime.lua, decide): a custom route that returns nil for a record without a
 * tenant yields a journal decision with tenant_id NULL, but event_journal.tenant_id is NOT
 * NULL: db.c then rolls the whole batch back, retries row by row and files the record as
 * db_reject. Expected: to_dlq with reason missing_tenant (decided before the database);
 * actual: to_dlq false, tenant_id NULL. */
static void test_journal_decision_always_has_a_tenant(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(fx, "return { route = function(ev, info) return nil end }\n");
    expect_dlq(ps, "{\"x\":1}", "missing_tenant", "without tenant_id");
}

static void test_hook_errors(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps =
        load_ok(fx, "local function check(p)\n"
                    "  if p.boom then error('describe exploded') end\n"
                    "  if p.loop then while true do end end\n"
                    "  if p.hog then local t = {} for i = 1, 1e9 do t[i] = tostring(i) end end\n"
                    "  if p.global then leaked = 1 end\n"
                    "  if p.tbl then return {} end\n"
                    "  if p.io then io.open('/etc/hostname') end\n"
                    "  return p.tenant_id, p.event_type\n"
                    "end\n"
                    "return { describe = function(ev) return check(ev.payload) end }\n");
    char where[160];
    snprintf(where, sizeof where, "%s:2: describe exploded", fx->paths[0]);
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"boom\":true}", "policy_error", where);
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"loop\":true}", "policy_error", "budget");
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"hog\":true}", "policy_error", "exceeded");
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"global\":true}", "policy_error", "leaked");
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"tbl\":true}", "policy_error", "table");
    expect_dlq(ps, "{\"tenant_id\":{\"id\":1}}", "policy_error", "tenant_id");
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"io\":true}", "policy_error", "io");
    /* the set is still usable after each of these */
    expect_journal(ps, "{\"tenant_id\":\"a\",\"event_type\":\"e\"}", "a", "e");
}

static void test_globals(void **state)
{
    struct fx *fx = *state;
    /* a global set while the file loads is the file's own; assigning a new one from a hook
     * at run time is an error */
    /* (the reload self-test runs describe on sample events first: count only ours) */
    struct policy_set *ps = load_ok(fx, "seen = 0\n"
                                        "return { describe = function(ev)\n"
                                        "  if ev.payload.count then seen = seen + 1 end\n"
                                        "  if ev.payload.new then another = true end\n"
                                        "  return ev.payload.tenant_id, tostring(seen)\n"
                                        "end }\n");
    expect_journal(ps, "{\"tenant_id\":\"a\",\"count\":1}", "a", "1");
    expect_journal(ps, "{\"tenant_id\":\"a\",\"count\":1}", "a", "2");
    expect_dlq(ps, "{\"tenant_id\":\"a\",\"new\":true}", "policy_error", "another");
}

static void test_load_errors(void **state)
{
    struct fx *fx = *state;
    const char *f1 = fx->paths[0], *f2 = fx->paths[1];
    expect_load_error(fx, 2, "return { describe = function(ev) return 'a' end }\n",
                      "return { describe = function(ev) return 'b' end }\n", f1, f2, "describe",
                      NULL);
    expect_load_error(fx, 1, "return 42\n", NULL, f1, "table", NULL);
    expect_load_error(fx, 1, "local x = 1\n", NULL, f1, "table", NULL);
    expect_load_error(fx, 1, "return { descibe = function() end }\n", NULL, f1, "descibe", NULL);
    expect_load_error(fx, 1, "return { route = 'dlq' }\n", NULL, f1, "route", "function", NULL);
    expect_load_error(fx, 1, "return { schedules = 5 }\n", NULL, f1, "schedules", NULL);
    char at[160];
    snprintf(at, sizeof at, "%s:3:", f1);
    expect_load_error(fx, 1, "return {\n  describe = function(ev)\n    return = 1\n  end }\n", NULL,
                      at, NULL);
    snprintf(at, sizeof at, "%s:2:", f1);
    expect_load_error(fx, 1, "local ok = true\nerror('refusing to load')\n", NULL, at,
                      "refusing to load", NULL);
    expect_load_error(fx, 1, "while true do end\n", NULL, "budget", NULL);
    expect_load_error(fx, 1, "local f = io.open('/etc/hostname')\nreturn {}\n", NULL, f1, "io",
                      NULL);
    /* a file that is not there */
    char *items[] = {"/nonexistent/policy.lua"};
    struct strlist files = {.items = items, .n = 1};
    char *err = NULL;
    assert_null(policy_set_load(&files, &LIMITS, 1, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/policy.lua"));
    free(err);
}

static void test_hooks_split_across_files(void **state)
{
    struct fx *fx = *state;
    if (!load(
            fx, 2, "return { describe = function(ev) return ev.key, ev.topic end }\n",
            "return { route = function(ev, info)\n"
            "  if info.tenant_id == 'k-1' then return 'dlq', 'from_second_file' end end,\n"
            "  schedules = { { name = 'nightly', cron = '0 2 * * *', action = 'dlq_retry' } } }\n"))
        fail_msg("%s", fx->err);
    expect_dlq(fx->ps, "{}", "policy_route", "from_second_file");
    /* files do not see each other's globals */
    if (!load(fx, 2, "shared = 'one'\nreturn {}\n",
              "return { describe = function(ev) return shared or 'isolated' end }\n"))
        fail_msg("%s", fx->err);
    expect_journal(fx->ps, "{}", "isolated", NULL);
}

static void test_event_fields(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(
        fx, "return { describe = function(ev)\n"
            "  return ev.headers and ev.headers['x-tenant'],\n"
            "    string.format('%s|%d|%d|%s|%d|%s|%s', ev.topic, ev.partition, ev.offset, ev.key,\n"
            "      ev.timestamp_ms, ev.raw, type(ev.payload))\n"
            "end }\n");
    struct rec rc;
    make_rec(&rc, "{\"a\":1}", "x-tenant", "hdr-tenant", NULL);
    struct decision d;
    decide(ps, &rc.r, &d);
    assert_false(d.to_dlq);
    assert_str_or_null(d.tenant_id, "hdr-tenant");
    assert_str_or_null(d.event_type,
                       "apexflow.leads.created|2|99|k-1|1700000000123|{\"a\":1}|table");
    decision_clear(&d);
}

/* A record with header tenant=acme and the given key, refused by record_check: expects the
 * DLQ with `reason`, a detail, and `tenant`. */
static void expect_bad(struct policy_set *ps, const char *value, const char *key,
                       const char *reason, const char *tenant)
{
    struct rec rc;
    struct decision d;
    make_rec(&rc, value, "tenant", "acme", NULL);
    rc.r.key = key;
    rc.r.key_len = strlen(key);
    decide(ps, &rc.r, &d);
    bool ok = d.to_dlq && d.reason && !strcmp(d.reason, reason) && d.detail &&
              (tenant ? d.tenant_id && !strcmp(d.tenant_id, tenant) : !d.tenant_id);
    snprintf(msgcopy, sizeof msgcopy, "%s/%s/%s", d.reason ? d.reason : "-",
             d.detail ? d.detail : "-", d.tenant_id ? d.tenant_id : "-");
    decision_clear(&d);
    if (!ok) fail_msg("%s: expected %s with tenant %s, got %s", value, reason, tenant, msgcopy);
}

/* A record that record_check refused goes to the DLQ with that reason whatever the hooks
 * say, but describe still runs to give the DLQ row a tenant. */
static void test_bad_record_keeps_reason(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(fx, "return { describe = function(ev)\n"
                                        "  if ev.key == 'boom' then error('cannot describe') end\n"
                                        "  if ev.key == 'loop' then while true do end end\n"
                                        "  return ev.headers and ev.headers.tenant, 'x'\n"
                                        "end, route = function() return nil end }\n");
    expect_bad(ps, "{not json", "k", "invalid_json", "acme");
    expect_bad(ps, "{\"a\":\"\xff\"}", "k", "invalid_utf8", "acme");
    expect_bad(ps, "{\"a\":\"\\u0000\"}", "k", "nul_character", "acme");
    /* describe failing or looping: the bad reason and its detail stay */
    expect_bad(ps, "", "boom", "invalid_json", NULL);
    expect_bad(ps, "", "loop", "invalid_json", NULL);
    /* a reason passed in directly, with no detail */
    struct rec rc;
    struct decision d;
    make_rec(&rc, "{}", "tenant", "acme", NULL);
    policy_decide(ps, &rc.r, "too_large", NULL, &d);
    assert_true(d.to_dlq);
    assert_string_equal(d.reason, "too_large");
    assert_null(d.detail);
    assert_str_or_null(d.tenant_id, "acme");
    decision_clear(&d);
}

/* BUG (lua/runtime.lua, decide): for a record refused by record_check, ev.payload is never
 * decoded, so the default describe (payload.tenant_id) can never find the tenant, even
 * when the value is a valid JSON object (too_large, or nul_character from a \u0000
 * escape). CONTRACT section 6: payload is "the decoded JSON (nil when it is not valid
 * JSON)". Expected: tenant "acme" on the DLQ decision; actual: NULL. */
static void test_bad_record_tenant_from_payload(void **state)
{
    struct fx *fx = *state;
    struct policy_set *ps = load_ok(fx, "return {}\n");
    struct rec rc;
    struct decision d;
    const char *values[] = {"{\"tenant_id\":\"acme\",\"note\":\"a\\u0000b\"}",
                            "{\"tenant_id\":\"acme\",\"big\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"};
    const char *reasons[] = {"nul_character", "too_large"};
    for (int i = 0; i < 2; i++) {
        make_rec(&rc, values[i], NULL);
        bool obj;
        char *detail = NULL;
        const char *bad = record_check(&rc.r, 48, &obj, &detail);
        assert_string_equal(bad, reasons[i]);
        policy_decide(ps, &rc.r, bad, detail, &d);
        bool ok = d.to_dlq && !strcmp(d.reason, reasons[i]) && d.tenant_id &&
                  !strcmp(d.tenant_id, "acme");
        decision_clear(&d);
        if (!ok) fail_msg("%s (%s): the default describe found no tenant", values[i], reasons[i]);
    }
}

int main(void)
{
    log_configure("error", NULL);
    if (find_default_policy() != 0) {
        fprintf(stderr, "policies/default.lua not found: run from the repository\n");
        return 1;
    }
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_default_policy_file),
        T(test_builtin_defaults),
        T(test_detect_replay_from_payload),
        T(test_detect_replay_from_headers),
        T(test_custom_route),
        T(test_journal_decision_always_has_a_tenant),
        T(test_hook_errors),
        T(test_globals),
        T(test_load_errors),
        T(test_hooks_split_across_files),
        T(test_event_fields),
        T(test_bad_record_keeps_reason),
        T(test_bad_record_tenant_from_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
