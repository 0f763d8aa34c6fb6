/* The configuration: sink.conf.lua, evaluated in a sandboxed Lua state and validated into
 * this struct before anything is started. Every option is declared once, in config.c. */
#ifndef EVENTSINK_CONFIG_H
#define EVENTSINK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct strlist {
    char **items;
    size_t n;
};

struct kv {
    char *key;
    char *value;
};

struct kvlist {
    struct kv *items;
    size_t n;
};

struct api_token {
    char *name;
    char *token;
    char *role;             /* "viewer" or "operator" */
    struct strlist tenants; /* empty: every tenant */
};

struct config {
    char *path; /* the configuration file, absolute */
    char *dir;  /* its folder: relative paths resolve against it */
    struct {
        char *brokers;
        char *group_id;
        struct strlist topics;
        char *dlq_topic;
        struct kvlist properties;
        long max_message_bytes;
    } kafka;
    struct {
        char *dsn;
    } postgres;
    struct {
        char *listen;
        struct api_token *tokens;
        size_t ntokens;
        long max_body_bytes;
        long max_connections;        /* open at once, in all */
        long max_connections_per_ip; /* open at once from one address */
        long request_timeout_s;      /* for a whole request, head and body */
    } http;
    struct {
        char *listen;
    } metrics;
    struct {
        char *secret;
        long tolerance_s;
    } webhooks;
    struct strlist policies; /* absolute paths */
    struct {
        long max_events;
        long max_wait_ms;
        long writers; /* batches written at once, each on its own connection */
    } batch;
    struct {
        long max_depth;
        long rate_per_s;
        long max_batch_ids;
        long confirm_above; /* a range over more events needs "confirm": true */
    } replay;
    struct {
        char *level;
        char *format;
    } log;
    struct {
        long max_instructions;
        long max_memory_bytes;
        long max_call_ms;
    } sandbox;
    struct {
        char *timezone; /* of the policies' cron schedules */
    } scheduler;
    struct {
        long stall_after_s; /* a component with work and no progress this long is stalled */
    } health;
    struct {
        char *journal, *dlq, *jobs;       /* as written: a duration, "forever", or NULL (forever) */
        int64_t journal_s, dlq_s, jobs_s; /* the same in seconds, 0 for forever */
    } retention;
};

/* Loads and validates FILE. On failure returns NULL and *err holds every problem found,
 * one a line (malloc'd). */
struct config *config_load(const char *file, char **err);
void config_free(struct config *c);
/* The options that differ between the running configuration and a fresh load of its file
 * and take effect only at a restart (all but `policies` and `sandbox`, which a reload
 * takes), as their names separated by ", " (malloc'd), or NULL when none differ. */
char *config_restart_needed(const struct config *running, const struct config *fresh);

#endif
