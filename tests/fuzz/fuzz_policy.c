/* libFuzzer target: arbitrary record values through the shipped default policy
 * (lua_host.c, policy.c, lua/runtime.lua). Invariants: never a crash, and every decision
 * either goes to the DLQ with a reason or has a tenant (the journal needs one). */
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

static struct policy_set *ps;

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
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct record_header h[1] = {
        {"x-replayed-from-event-id", (const char *)data, size < 8 ? size : 8}};
    struct record r = {.topic = "fuzz",
                       .partition = 1,
                       .offset = 2,
                       .timestamp_ms = 3,
                       .value = (const char *)data,
                       .value_len = size,
                       .headers = h,
                       .nheaders = size > 0 && (data[0] & 1)};
    bool is_object;
    char *detail = NULL;
    const char *bad = record_check(&r, 1 << 20, &is_object, &detail);
    struct decision d;
    policy_decide(ps, &r, bad, detail, &d);
    assert(d.to_dlq ? d.reason != NULL : d.tenant_id != NULL);
    if (bad) assert(d.to_dlq && strcmp(d.reason, bad) == 0);
    decision_clear(&d);
    return 0;
}
