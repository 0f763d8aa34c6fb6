/* libFuzzer target: arbitrary record values through the shipped default policy
 * (lua_host.c, policy.c, policy_fast.c, lua/runtime.lua). Invariants: never a crash; every
 * decision either goes to the DLQ with a reason or has a tenant (the journal needs one);
 * and the built-in defaults decided in C (policy_fast.c) agree exactly with the same
 * rules run in Lua (a policy file that defines them, forcing the Lua path). */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "record.h"

static struct policy_set *ps, *ps_lua;

/* The defaults of lua/runtime.lua, defined in a policy file: the Lua path. */
static const char lua_defaults[] =
    "local null = sink.json.null\n"
    "local function present(v) return v ~= nil and v ~= null end\n"
    "local function to_id(v)\n"
    "  if not present(v) then return nil end\n"
    "  local n = tonumber(v)\n"
    "  if n == nil or n ~= n or n < 1 or n > 9007199254740991 then return nil end\n"
    "  return math.tointeger(n)\n"
    "end\n"
    "return {\n"
    " describe = function(ev)\n"
    "  local p = ev.payload\n"
    "  if type(p) ~= 'table' then return nil, nil end\n"
    "  local t, e = p.tenant_id, p.event_type\n"
    "  if not present(e) then e = p.type end\n"
    "  return present(t) and t or nil, present(e) and e or nil\n"
    " end,\n"
    " detect_replay = function(ev)\n"
    "  local p = ev.payload\n"
    "  if type(p) == 'table' then\n"
    "   local from, src = to_id(p._replayed_from_event_id), p._replay_source\n"
    "   if from or present(src) or present(p._replayed_from_dlq_id) then\n"
    "    local t = type(src)\n"
    "    return (t == 'string' or t == 'number') and tostring(src) or 'unknown', from end\n"
    "  end\n"
    "  local h = ev.headers\n"
    "  if h then\n"
    "   local from, src = to_id(h['x-replayed-from-event-id']), h['x-replay-source']\n"
    "   if from or src or h['x-replayed-from-dlq-id'] then return src or 'unknown', from end\n"
    "  end\n"
    "  return nil, nil\n"
    " end,\n"
    " route = function(ev, info)\n"
    "  if info.tenant_id == nil then return 'dlq', 'missing_tenant' end\n"
    " end,\n"
    "}\n";

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_configure("error", "text");
    char *path = "policies/default.lua";
    if (access(path, R_OK) != 0) path = "../../policies/default.lua";
    struct strlist files = {&path, 1};
    struct lua_host_limits lim = {.max_memory_bytes = 64 << 20, .max_instructions = 1000000};
    char *err = NULL;
    ps = policy_set_load(&files, &lim, 1, &err);
    if (!ps) {
        fprintf(stderr, "fuzz_policy: %s\n", err);
        abort();
    }
    char lpath[] = "/tmp/eventsink-fuzz-policy-XXXXXX";
    int fd = mkstemp(lpath);
    if (fd < 0 || write(fd, lua_defaults, sizeof lua_defaults - 1) < 0) abort();
    close(fd);
    char *lp = lpath;
    struct strlist lfiles = {&lp, 1};
    ps_lua = policy_set_load(&lfiles, &lim, 1, &err);
    unlink(lpath);
    if (!ps_lua) {
        fprintf(stderr, "fuzz_policy: %s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* headers from the first bytes: replay markers with fuzzed values */
    size_t j = size > 4 ? 4 : 0;
    struct record_header h[3] = {
        {"x-replayed-from-event-id", (const char *)data, size < 8 ? size : 8},
        {"x-replay-source", (const char *)data, size < 3 ? size : 3},
        {"x-replay-job-id", (const char *)data + j, size - j < 5 ? size - j : 5},
    };
    struct record r = {.topic = "fuzz",
                       .partition = 1,
                       .offset = 2,
                       .timestamp_ms = 3,
                       .value = (const char *)data,
                       .value_len = size,
                       .headers = h,
                       .nheaders = size > 0 ? data[0] % 4 : 0};
    bool is_object;
    char *detail = NULL;
    const char *bad = record_check(&r, 1 << 20, &is_object, &detail);
    char *detail2 = detail ? strdup(detail) : NULL;
    struct decision d, l;
    policy_decide(ps, &r, bad, detail, &d);
    policy_decide(ps_lua, &r, bad, detail2, &l);
    assert(d.to_dlq ? d.reason != NULL : d.tenant_id != NULL);
    if (bad) assert(d.to_dlq && strcmp(d.reason, bad) == 0);
    /* C and Lua decide alike (the Lua path's error texts are only compared by reason) */
    assert(d.to_dlq == l.to_dlq && same(d.reason, l.reason));
    assert(same(d.tenant_id, l.tenant_id) && same(d.event_type, l.event_type));
    assert(same(d.replay_source, l.replay_source));
    assert(d.replayed_from_event_id == l.replayed_from_event_id);
    if (d.replayed_from_dlq_id != l.replayed_from_dlq_id || d.replay_job_id != l.replay_job_id)
        fprintf(stderr, "C: dlq %lld job %lld; Lua: dlq %lld job %lld\n",
                (long long)d.replayed_from_dlq_id, (long long)d.replay_job_id,
                (long long)l.replayed_from_dlq_id, (long long)l.replay_job_id);
    assert(d.replayed_from_dlq_id == l.replayed_from_dlq_id && d.replay_job_id == l.replay_job_id);
    decision_clear(&d);
    decision_clear(&l);
    return 0;
}
