/* policy_bench — the per-event cost of the Lua policies, measured in-process.
 *
 * Links the service's own objects (every build/obj object but main.o) and runs, for realistic
 * ApexFlow CRM records, exactly what the pipeline runs per event before the database write:
 * record_check() (size, UTF-8, NUL, JSON validity) and policy_decide_batch() in batches of
 * 1,000 (the C fast path of the built-ins, or one hand-over to the policy thread a batch and
 * the Lua runtime's decide: JSON decode, markers, describe, detect_replay, route), then
 * decision_clear().
 *
 *   policy_bench [-n ITERATIONS] [-l LABEL] [-t MAX_CALL_MS] POLICY.lua...
 *
 * Prints one JSON object on stdout with, per record kind, microseconds per event (wall
 * clock and process CPU time) for record_check alone and for policy_decide alone. CPU time
 * is the steadier figure on a machine that runs other work at the same time. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "config.h"
#include "lua_host.h"
#include "policy.h"
#include "record.h"

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct kind {
    const char *name;
    const char *payload;
    const char *expect; /* "journal", "replay" or "dlq" */
};

/* The same shapes tests/bench/bench.py produces into Kafka (about 300 bytes each; the replay one carries the markers). */
static const struct kind kinds[] = {
    {"original",
     "{\"tenant_id\":\"globex\",\"event_type\":\"lead.updated\",\"event_id\":"
     "\"8a1f6f0e-3c55-4d8e-9d7c-0b5e2f1c9a47\",\"occurred_at\":\"2025-11-27T08:15:42.123Z\","
     "\"lead\":{\"id\":\"L-482913\",\"name\":\"Dana Whitfield\",\"email\":"
     "\"dana.whitfield@northwind.example\",\"source\":\"webinar\",\"score\":73},"
     "\"owner\":{\"id\":\"U-117\",\"team\":\"emea\"}}",
     "journal"},
    {"replay",
     "{\"tenant_id\":\"globex\",\"event_type\":\"lead.updated\",\"event_id\":"
     "\"8a1f6f0e-3c55-4d8e-9d7c-0b5e2f1c9a47\",\"occurred_at\":\"2025-11-27T08:15:42.123Z\","
     "\"lead\":{\"id\":\"L-482913\",\"name\":\"Dana Whitfield\",\"email\":"
     "\"dana.whitfield@northwind.example\",\"source\":\"webinar\",\"score\":73},"
     "\"owner\":{\"id\":\"U-117\",\"team\":\"emea\"},"
     "\"_replayed_from_event_id\":48211,\"_replay_source\":\"operator_api\"}",
     "replay"},
    {"poison",
     "{\"tenant_id\":\"globex\",\"event_type\":\"lead.updated\",\"lead\":{\"id\":\"L-482913\","
     "\"name\":\"Dana Whitfield\",\"email\":\"dana.whitfield@northwind.exa",
     "dlq"},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])
#define BATCH 1000 /* batch.max_events' default */

static struct policy_input in[BATCH];
static struct decision out[BATCH];

int main(int argc, char **argv)
{
    long iters = 1000000;
    const char *label = "policies";
    long call_ms = 2000; /* sandbox.max_call_ms's default */
    int argi = 1;
    while (argi < argc && argv[argi][0] == '-') {
        if (strcmp(argv[argi], "-n") == 0 && argi + 1 < argc) {
            iters = atol(argv[argi + 1]);
            argi += 2;
        } else if (strcmp(argv[argi], "-t") == 0 && argi + 1 < argc) {
            call_ms = atol(argv[argi + 1]);
            argi += 2;
        } else if (strcmp(argv[argi], "-l") == 0 && argi + 1 < argc) {
            label = argv[argi + 1];
            argi += 2;
        } else {
            fprintf(stderr, "usage: %s [-n ITERATIONS] [-l LABEL] [-t MAX_CALL_MS] POLICY.lua...\n", argv[0]);
            return 2;
        }
    }
    if (argi >= argc || iters <= 0) {
        fprintf(stderr, "usage: %s [-n ITERATIONS] [-l LABEL] [-t MAX_CALL_MS] POLICY.lua...\n", argv[0]);
        return 2;
    }
    struct strlist files = {.items = calloc((size_t)(argc - argi), sizeof(char *)), .n = 0};
    for (int i = argi; i < argc; i++) {
        char *abs = realpath(argv[i], NULL);
        if (!abs) {
            fprintf(stderr, "policy_bench: %s: not found\n", argv[i]);
            return 2;
        }
        files.items[files.n++] = abs;
    }
    /* the service's defaults (sandbox.max_instructions, max_memory_bytes, max_call_ms) */
    struct lua_host_limits lim = {.max_memory_bytes = 64L << 20, .max_instructions = 1000000,
                                  .max_call_ms = call_ms};
    char *err = NULL;
    struct policy_set *ps = policy_set_load(&files, &lim, 1, &err);
    if (!ps) {
        fprintf(stderr, "policy_bench: cannot load the policies: %s\n", err);
        return 1;
    }

    struct record_header hdr[] = {{"source", "apexflow-crm", 12}, {"schema", "3", 1}};
    printf("{\"label\":\"%s\",\"iterations\":%ld,\"kinds\":{", label, iters);
    for (size_t k = 0; k < NKINDS; k++) {
        struct record r = {
            .topic = "apexflow.bench",
            .partition = 7,
            .offset = 123456,
            .key = "lead-482913",
            .key_len = 11,
            .value = kinds[k].payload,
            .value_len = strlen(kinds[k].payload),
            .timestamp_ms = 1764231342123,
            .headers = hdr,
            .nheaders = 2,
        };
        /* sanity: the record is decided as intended */
        bool is_object = false;
        char *detail = NULL;
        const char *bad = record_check(&r, 1048576, &is_object, &detail);
        struct decision d;
        policy_decide(ps, &r, bad, detail, &d);
        const char *got = d.to_dlq ? "dlq" : d.replay_source ? "replay" : "journal";
        if (strcmp(got, kinds[k].expect) != 0 || (!d.to_dlq && !d.tenant_id)) {
            fprintf(stderr, "policy_bench: %s record decided as %s (expected %s)\n", kinds[k].name,
                    got, kinds[k].expect);
            return 1;
        }
        decision_clear(&d);

        long warm = iters / 20 < 10000 ? iters / 20 : 10000;
        for (long i = 0; i < warm; i++) {
            detail = NULL;
            bad = record_check(&r, 1048576, &is_object, &detail);
            policy_decide(ps, &r, bad, detail, &d);
            decision_clear(&d);
        }

        /* record_check alone */
        double w0 = wall_s(), c0 = cpu_s();
        long sink = 0;
        for (long i = 0; i < iters; i++) {
            detail = NULL;
            bad = record_check(&r, 1048576, &is_object, &detail);
            sink += bad != NULL;
            free(detail);
        }
        double check_wall = wall_s() - w0, check_cpu = cpu_s() - c0;

        /* policy_decide_batch (+ decision_clear), as the pipeline calls it: batches of
         * BATCH records, one hand-over to the policy thread each */
        detail = NULL;
        bad = record_check(&r, 1048576, &is_object, &detail);
        free(detail);
        w0 = wall_s();
        c0 = cpu_s();
        for (long i = 0; i < iters; i += BATCH) {
            long n = iters - i < BATCH ? iters - i : BATCH;
            for (long j = 0; j < n; j++)
                /* the pipeline hands a fresh detail string for a bad record; the set owns it */
                in[j] = (struct policy_input){.rec = &r, .bad_reason = bad,
                                              .bad_detail = bad ? strdup("bench") : NULL,
                                              .out = &out[j]};
            policy_decide_batch(ps, in, (size_t)n);
            for (long j = 0; j < n; j++) {
                sink += out[j].to_dlq;
                decision_clear(&out[j]);
            }
        }
        double dec_wall = wall_s() - w0, dec_cpu = cpu_s() - c0;
        printf("%s\"%s\":{\"payload_bytes\":%zu,\"record_check_us\":%.4f,"
               "\"record_check_cpu_us\":%.4f,\"policy_decide_us\":%.4f,"
               "\"policy_decide_cpu_us\":%.4f,\"check_sink\":%ld}",
               k ? "," : "", kinds[k].name, r.value_len, check_wall / (double)iters * 1e6,
               check_cpu / (double)iters * 1e6, dec_wall / (double)iters * 1e6,
               dec_cpu / (double)iters * 1e6, sink);
    }
    printf("}}\n");
    policy_set_destroy(ps);
    for (size_t i = 0; i < files.n; i++)
        free(files.items[i]);
    free(files.items);
    return 0;
}
