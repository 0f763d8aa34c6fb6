/* The operator commands (CONTRACT 9.4): `eventsink events|replay|jobs|dlq|reload|status`
 * talk to the running service's HTTP API. This header is what the command files share:
 * the parsed command line and the one way to call the API. */
#ifndef EVENTSINK_OP_H
#define EVENTSINK_OP_H

#include <stdbool.h>
#include <stdint.h>

#include "jsonv.h"
#include "op_http.h"

/* Exit codes (CONTRACT 9.4). */
#define OP_OK 0
#define OP_FAILED 1 /* the API unreachable, a 5xx, or a job that ended failed */
#define OP_USAGE 2  /* usage, or a 4xx */

struct op_opts {
    const char *reason, *why, *tenant, *topic, *status, *event_type;
    const char *since, *until, *start, *end, *before_id, *from_id, *to_id;
    const char *limit, *rate, *ids_file, *timeout;
    bool replayed, originals, dry_run, confirm, wait, include_replays;
};

struct op_ctx {
    struct op_api *api;
    bool json; /* --json: one JSON document on stdout, nothing else */
    int nargs; /* the words after the command and its subcommand */
    char **args;
    struct op_opts o;
    char err[600];       /* why the last call failed */
    struct buf last;     /* the body of the last 2xx answer, as the API wrote it */
    char numbers[5][24]; /* the numeric options, as digits (op_main.c canonical_numbers) */
};

/* Calls the API. On a 2xx answer: 0, with the parsed body in *out (NULL when not wanted).
 * Otherwise the error is printed on stderr and the exit code returned: OP_FAILED when the
 * API did not answer or answered 5xx, OP_USAGE on a 4xx. */
int op_call(struct op_ctx *ctx, const char *method, const char *path, const char *body,
            struct jsonv **out);
/* The same without printing: the error is in ctx->err, the HTTP status (0: no answer) in
 * *status. */
int op_call_quiet(struct op_ctx *ctx, const char *method, const char *path, const char *body,
                  struct jsonv **out, long *status);

/* Prints ctx->err on stderr, control characters as '?'. */
void op_print_error(const struct op_ctx *ctx);

/* With --json, prints the last 2xx answer as the API wrote it (compact, one newline) and
 * returns true; false without --json (the caller prints it for people). */
bool op_print_json(struct op_ctx *ctx);

/* Prints a usage error for the command and returns OP_USAGE. */
int op_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The one id argument of command `what`, or 0 after a usage error. */
int64_t op_one_id(struct op_ctx *ctx, const char *what);

/* After a 202 {"job_id": J, ...}: with --wait, "what: job J[, N noun]" (N: the answer's
 * "matched" or "total", when noun is given) and the job followed to its end; else the
 * answer, and how to follow it. */
int op_follow_job(struct op_ctx *ctx, const struct jsonv *answer, const char *what,
                  const char *noun);

/* "42" -> 42; false unless a positive integer. */
bool op_parse_id(const char *s, int64_t *id);
/* Appends ,"key":value to a JSON object being written (b holds at least its "{"): value as
 * a JSON string, or as it is when raw (a number, true). Nothing when value is NULL. */
void op_json_member(struct buf *b, const char *key, const char *value, bool raw);
/* "90s", "30m", "12h", "7d" or plain seconds -> seconds; false when not a duration. */
bool op_parse_duration(const char *s, int64_t *seconds);
/* now minus seconds, ISO 8601 in UTC ("2026-12-02T05:42:14Z"), into out (32 bytes). */
void op_iso_ago(int64_t seconds, char *out);

/* Follows job `id` until it ends: live progress on a terminal (done/total, rate, ETA, a
 * bar), one line per change otherwise, the final job as JSON with --json. OP_OK when the
 * job ended done, OP_FAILED when it failed or was cancelled, or when --timeout passed. */
int op_watch_job(struct op_ctx *ctx, int64_t id);

/* The commands, one file each for events and replays (op_events.c) and for jobs, the DLQ,
 * reload and status (op_admin.c). sub: the subcommand word or NULL. */
int op_events(struct op_ctx *ctx, const char *sub);
int op_replay(struct op_ctx *ctx, const char *sub);
int op_jobs(struct op_ctx *ctx, const char *sub);
int op_dlq(struct op_ctx *ctx, const char *sub);
int op_reload(struct op_ctx *ctx);
int op_status(struct op_ctx *ctx);

/* The entry point from main(): argv as main got it. */
bool op_is_command(const char *word);
/* Whether arg is an option of the commands that takes a value ("-c", "--tenant"). */
bool op_takes_value(const char *arg);
int op_main(int argc, char **argv);

#endif
