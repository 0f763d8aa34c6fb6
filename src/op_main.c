/* The operator commands' command line (CONTRACT 9.4): options by getopt_long, the API's
 * address from --api or the configuration file's http.listen, the token from
 * EVENTSINK_TOKEN or --token-file (never from an argument: it would show in ps and in the
 * shell's history). */
#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "duration.h"
#include "http.h"
#include "json.h"
#include "listen_addr.h"
#include "op.h"
#include "op_out.h"
#include "utf8.h"

enum opt_id {
    O_CONF = 'c',
    O_HELP = 'h',
    O_API = 1000,
    O_TOKEN_FILE,
    O_TOKEN,
    O_JSON,
    O_REASON,
    O_WHY,
    O_TENANT,
    O_TOPIC,
    O_STATUS,
    O_EVENT_TYPE,
    O_SINCE,
    O_UNTIL,
    O_START,
    O_END,
    O_BEFORE_ID,
    O_FROM_ID,
    O_TO_ID,
    O_LIMIT,
    O_RATE,
    O_IDS_FILE,
    O_TIMEOUT,
    O_REPLAYED,
    O_ORIGINALS,
    O_DRY_RUN,
    O_CONFIRM,
    O_WAIT,
    O_INCLUDE_REPLAYS,
};

static const struct option long_opts[] = {
    {"api", required_argument, NULL, O_API},
    {"token-file", required_argument, NULL, O_TOKEN_FILE},
    {"token", required_argument, NULL, O_TOKEN},
    {"json", no_argument, NULL, O_JSON},
    {"help", no_argument, NULL, O_HELP},
    {"reason", required_argument, NULL, O_REASON},
    {"why", required_argument, NULL, O_WHY},
    {"tenant", required_argument, NULL, O_TENANT},
    {"topic", required_argument, NULL, O_TOPIC},
    {"status", required_argument, NULL, O_STATUS},
    {"event-type", required_argument, NULL, O_EVENT_TYPE},
    {"since", required_argument, NULL, O_SINCE},
    {"until", required_argument, NULL, O_UNTIL},
    {"start", required_argument, NULL, O_START},
    {"end", required_argument, NULL, O_END},
    {"before-id", required_argument, NULL, O_BEFORE_ID},
    {"from-id", required_argument, NULL, O_FROM_ID},
    {"to-id", required_argument, NULL, O_TO_ID},
    {"limit", required_argument, NULL, O_LIMIT},
    {"rate", required_argument, NULL, O_RATE},
    {"ids-file", required_argument, NULL, O_IDS_FILE},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"replayed", no_argument, NULL, O_REPLAYED},
    {"originals", no_argument, NULL, O_ORIGINALS},
    {"dry-run", no_argument, NULL, O_DRY_RUN},
    {"confirm", no_argument, NULL, O_CONFIRM},
    {"wait", no_argument, NULL, O_WAIT},
    {"include-replays", no_argument, NULL, O_INCLUDE_REPLAYS},
    {NULL, 0, NULL, 0},
};

/* Each command: its words, the options it takes beside the common ones (-c, --api,
 * --token-file, --json, --help), and its help. */
struct command {
    const char *name;
    const char *options; /* long option names, space-separated */
    const char *help;
};

#define COMMON_HELP                                                                                 \
    "\nCommon options:\n"                                                                           \
    "  -c FILE            take the API address from FILE's http.listen (default ./sink.conf.lua)\n" \
    "  --api URL          the API's address instead, e.g. http://127.0.0.1:9106\n"                  \
    "  --token-file FILE  read the API token from FILE (else from $EVENTSINK_TOKEN)\n"              \
    "  --json             print one JSON document (for scripts)\n"                                  \
    "Exit codes: 0 success; 1 the API unreachable or a 5xx, a job that ended failed or\n"           \
    "cancelled, or --timeout passed; 2 a usage error or a 4xx.\n"

static const struct command commands[] = {
    {"events", "limit tenant topic replayed originals before-id since until event-type",
     "usage: eventsink events latest [filters]   newest first\n"
     "       eventsink events get ID\n"
     "       eventsink events lineage ID           its replay ancestors and descendants\n"
     "Filters: --limit N (1..1000, default 20), --tenant T, --topic T, --event-type T,\n"
     "  --replayed | --originals, --before-id N (the next page: ids below N),\n"
     "  --since TIME, --until TIME (ISO 8601, or a duration ago such as 30m, 2h, 7d)\n"},
    {"replay",
     "reason rate wait ids-file since start end from-id to-id tenant topic dry-run confirm "
     "include-replays timeout",
     "usage: eventsink replay ID... [--reason R] [--wait]\n"
     "       eventsink replay batch --ids-file FILE [--reason R] [--rate N] [--wait]\n"
     "       eventsink replay range (--since DURATION | --start ISO --end ISO |\n"
     "                               --from-id N --to-id M) [--tenant T] [--topic T]\n"
     "                               [--include-replays] [--dry-run] [--confirm] [--rate N]\n"
     "                               [--reason R] [--wait]\n"
     "One ID is replayed at once (the answer names its Kafka position); several are one\n"
     "batch job. FILE holds journal ids separated by spaces, commas or newlines (- reads\n"
     "stdin). A range takes original events only unless --include-replays; --from-id and\n"
     "--to-id are journal ids, both included. --dry-run counts what the range matches.\n"
     "--wait follows the job until it ends (--timeout DURATION bounds the wait).\n"},
    {"jobs", "status limit timeout",
     "usage: eventsink jobs list [--status S] [--limit N]\n"
     "       eventsink jobs show J\n"
     "       eventsink jobs watch J [--timeout DURATION]   live progress until the job ends\n"
     "       eventsink jobs cancel J\n"},
    {"dlq", "status reason topic tenant limit before-id why rate wait timeout",
     "usage: eventsink dlq list [--status S] [--reason R] [--topic T] [--tenant T]\n"
     "                          [--limit N] [--before-id N]\n"
     "       eventsink dlq show ID\n"
     "       eventsink dlq retry ID [--why TEXT] [--wait [--timeout DURATION]]\n"
     "       eventsink dlq retry --reason R [--topic T] [--tenant T] [--why TEXT] [--rate N]\n"
     "                           [--wait [--timeout DURATION]]   every pending entry that\n"
     "                                                            matches\n"
     "       eventsink dlq discard ID\n"
     "--reason is the entries' reason (db_reject, missing_tenant, ...); --why is recorded\n"
     "in the retry job's audit trail.\n"},
    {"reload", "",
     "usage: eventsink reload      reload the policies (like SIGHUP); names the options that\n"
     "                             need a restart when the configuration file changed them\n"},
    {"status", "",
     "usage: eventsink status      health, event rates, the DLQ and the replay jobs at a "
     "glance\n"},
    {NULL, NULL, NULL},
};

static const char *opt_name(int id)
{
    for (const struct option *o = long_opts; o->name; o++)
        if (o->val == id) return o->name;
    return "?";
}

static bool takes(const struct command *cmd, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = cmd->options; (p = strstr(p, name)); p += n)
        if ((p == cmd->options || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return true;
    return false;
}

static const struct command *find_command(const char *word)
{
    for (const struct command *c = commands; word && c->name; c++)
        if (strcmp(c->name, word) == 0) return c;
    return NULL;
}

bool op_is_command(const char *word)
{
    return find_command(word) != NULL;
}

int op_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("eventsink: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (--help tells more)\n", stderr);
    va_end(ap);
    return OP_USAGE;
}

int64_t op_one_id(struct op_ctx *ctx, const char *what)
{
    int64_t id;
    if (ctx->nargs != 1 || !op_parse_id(ctx->args[0], &id)) {
        op_usage("`%s` takes one id", what);
        return 0;
    }
    return id;
}

bool op_parse_id(const char *s, int64_t *id)
{
    return http_parse_id(s, id); /* the API's own reading of an id */
}

void op_json_member(struct buf *b, const char *key, const char *value, bool raw)
{
    if (!value) return;
    buf_printf(b, "%s\"%s\":", b->len > 1 ? "," : "", key);
    if (raw)
        buf_puts(b, value);
    else
        json_write_cstr(b, value);
}

bool op_parse_duration(const char *s, int64_t *seconds)
{
    return duration_parse(s, false, seconds);
}

void op_iso_ago(int64_t seconds, char *out)
{
    time_t t = time(NULL) - (time_t)seconds;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The server's {"error","message"} as one line, or the body's start. */
static void describe_error(struct op_ctx *ctx, long status, const struct buf *body)
{
    const char *jerr = NULL;
    size_t at = 0;
    struct jsonv *v = body->len ? jsonv_parse(body->data, body->len, &jerr, &at) : NULL;
    const struct jsonv *code = jsonv_get(v, "error"), *msg = jsonv_get(v, "message");
    if (code && code->type == JV_STRING && msg && msg->type == JV_STRING)
        snprintf(ctx->err, sizeof ctx->err, "%s: %s (HTTP %ld)", code->str, msg->str, status);
    else
        snprintf(ctx->err, sizeof ctx->err, "HTTP %ld from the API: %.200s", status,
                 body->len ? body->data : "(no body)");
    jsonv_free(v);
}

int op_call_quiet(struct op_ctx *ctx, const char *method, const char *path, const char *body,
                  struct jsonv **out, long *status)
{
    struct op_resp r;
    *status = op_request(ctx->api, method, path, body, &r);
    if (out) *out = NULL;
    int rc = OP_OK;
    if (*status == 0) {
        snprintf(ctx->err, sizeof ctx->err, "the API at %s did not answer: %s",
                 op_api_base(ctx->api), r.error);
        rc = OP_FAILED;
    } else if (*status < 200 || *status >= 300) {
        describe_error(ctx, *status, &r.body);
        rc = *status >= 400 && *status < 500 ? OP_USAGE : OP_FAILED;
    } else {
        buf_reset(&ctx->last);
        buf_append(&ctx->last, r.body.data ? r.body.data : "", r.body.len);
    }
    if (rc == OP_OK && out) {
        const char *jerr = NULL;
        size_t at = 0;
        *out = jsonv_parse(r.body.data ? r.body.data : "", r.body.len, &jerr, &at);
        if (!*out) {
            snprintf(ctx->err, sizeof ctx->err, "the API's answer is not JSON (%s at byte %zu)",
                     jerr, at);
            rc = OP_FAILED;
        }
    }
    op_resp_free(&r);
    return rc;
}

int op_call(struct op_ctx *ctx, const char *method, const char *path, const char *body,
            struct jsonv **out)
{
    long status;
    int rc = op_call_quiet(ctx, method, path, body, out, &status);
    if (rc != OP_OK) op_print_error(ctx);
    return rc;
}

void op_print_error(const struct op_ctx *ctx)
{
    struct buf t = {0};
    op_clean(&t, ctx->err, strlen(ctx->err)); /* the server's words may hold anything */
    fprintf(stderr, "eventsink: %s\n", buf_cstr(&t));
    buf_free(&t);
}

bool op_print_json(struct op_ctx *ctx)
{
    if (!ctx->json) return false;
    fwrite(ctx->last.data ? ctx->last.data : "", 1, ctx->last.len, stdout);
    if (!ctx->last.len || ctx->last.data[ctx->last.len - 1] != '\n') putchar('\n');
    return true;
}

/* http://HOST:PORT from http.listen: an "every address" listener is reached on loopback. */
static char *base_from_config(const char *conf, char **err)
{
    struct config *cfg = config_load(conf, err);
    if (!cfg) return NULL;
    struct sockaddr_storage ss;
    char *base = NULL;
    if (listen_addr_parse(cfg->http.listen, &ss, err)) {
        char host[INET6_ADDRSTRLEN] = "127.0.0.1";
        struct buf b = {0};
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
                strcpy(host, "::1");
            else
                inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            buf_printf(&b, "http://[%s]:%d", host, ntohs(a->sin6_port));
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            if (a->sin_addr.s_addr != htonl(INADDR_ANY))
                inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
            buf_printf(&b, "http://%s:%d", host, ntohs(a->sin_port));
        }
        base = b.data;
    }
    config_free(cfg);
    return base;
}

/* The token: --token-file's first line, else $EVENTSINK_TOKEN, else none (malloc'd). */
static int read_token(const char *file, char **token)
{
    *token = NULL;
    if (!file) {
        const char *env = getenv("EVENTSINK_TOKEN");
        if (env && *env) *token = xstrdup(env);
        return OP_OK;
    }
    FILE *f = fopen(file, "r");
    if (!f) return op_usage("cannot read the token file %s", file);
    char line[4096];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    bool whole = got && line[n] != '\0';
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    line[n] = '\0';
    int rc = !n ? op_usage("the token file %s is empty", file)
             : !whole && n >= sizeof line - 1
                 ? op_usage("the token file %s holds a line longer than %zu bytes", file,
                            sizeof line - 2)
                 : OP_OK;
    if (rc == OP_OK) *token = xstrdup(line);
    memset(line, 0, sizeof line);
    return rc;
}

/* A token goes into a header line: no control characters. */
static int check_token(const char *token)
{
    for (const char *p = token; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return op_usage("the token holds a control character (a line break?): it is "
                            "refused rather than sent");
    return OP_OK;
}

static void print_help(const struct command *cmd)
{
    if (cmd) {
        fputs(cmd->help, stdout);
        fputs(COMMON_HELP, stdout);
        return;
    }
    fputs("Operator commands (they talk to the running service's HTTP API):\n", stdout);
    for (const struct command *c = commands; c->name; c++)
        fputs(c->help, stdout);
    fputs(COMMON_HELP, stdout);
}

/* Stores one option; OP_OK or a usage error. */
static int take_option(int id, const char *arg, struct op_ctx *ctx, const char **conf,
                       const char **api, const char **token_file)
{
    struct op_opts *o = &ctx->o;
    switch (id) {
    case O_CONF:
        *conf = arg;
        break;
    case O_API:
        *api = arg;
        break;
    case O_TOKEN_FILE:
        *token_file = arg;
        break;
    case O_TOKEN:
        return op_usage("the token is not taken on the command line (ps and the shell's history "
                        "would show it): set EVENTSINK_TOKEN or use --token-file FILE");
    case O_JSON:
        ctx->json = true;
        break;
    case O_REASON:
        o->reason = arg;
        break;
    case O_WHY:
        o->why = arg;
        break;
    case O_TENANT:
        o->tenant = arg;
        break;
    case O_TOPIC:
        o->topic = arg;
        break;
    case O_STATUS:
        o->status = arg;
        break;
    case O_EVENT_TYPE:
        o->event_type = arg;
        break;
    case O_SINCE:
        o->since = arg;
        break;
    case O_UNTIL:
        o->until = arg;
        break;
    case O_START:
        o->start = arg;
        break;
    case O_END:
        o->end = arg;
        break;
    case O_BEFORE_ID:
        o->before_id = arg;
        break;
    case O_FROM_ID:
        o->from_id = arg;
        break;
    case O_TO_ID:
        o->to_id = arg;
        break;
    case O_LIMIT:
        o->limit = arg;
        break;
    case O_RATE:
        o->rate = arg;
        break;
    case O_IDS_FILE:
        o->ids_file = arg;
        break;
    case O_TIMEOUT:
        o->timeout = arg;
        break;
    case O_REPLAYED:
        o->replayed = true;
        break;
    case O_ORIGINALS:
        o->originals = true;
        break;
    case O_DRY_RUN:
        o->dry_run = true;
        break;
    case O_CONFIRM:
        o->confirm = true;
        break;
    case O_WAIT:
        o->wait = true;
        break;
    case O_INCLUDE_REPLAYS:
        o->include_replays = true;
        break;
    default:
        return op_usage("unknown option");
    }
    return OP_OK;
}

/* The options that are numbers, checked and written back as the digits of their value
 * ("007" -> "7"), so that they go into JSON bodies and queries as valid numbers. */
static bool canonical_numbers(struct op_ctx *ctx)
{
    struct {
        const char **v;
        const char *name;
    } nums[] = {{&ctx->o.limit, "--limit"},
                {&ctx->o.rate, "--rate"},
                {&ctx->o.from_id, "--from-id"},
                {&ctx->o.to_id, "--to-id"},
                {&ctx->o.before_id, "--before-id"}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        int64_t n;
        if (!*nums[i].v) continue;
        if (!op_parse_id(*nums[i].v, &n)) {
            op_usage("%s must be a positive integer, not \"%s\"", nums[i].name, *nums[i].v);
            return false;
        }
        snprintf(ctx->numbers[i], sizeof ctx->numbers[i], "%" PRId64, n);
        *nums[i].v = ctx->numbers[i];
    }
    return true;
}

/* What no single command checks: every word is UTF-8 (it goes into JSON and URLs as it
 * is), -c and --api are not both given, --timeout is a duration and bounds a wait. */
static int check_words(int argc, char **argv, struct op_ctx *ctx, const char *api, int ngiven,
                       const int *given)
{
    for (int i = 1; i < argc; i++)
        if (!utf8_valid(argv[i], strlen(argv[i]), NULL))
            return op_usage("argument %d is not UTF-8", i);
    for (int i = 0; api && i < ngiven; i++)
        if (given[i] == O_CONF) return op_usage("give -c FILE or --api URL, not both");
    int64_t s;
    if (!canonical_numbers(ctx)) return OP_USAGE;
    if (ctx->o.timeout && !op_parse_duration(ctx->o.timeout, &s))
        return op_usage("--timeout must be a duration such as 90s, 30m or 2h");
    bool watch = optind + 1 < argc && strcmp(argv[optind], "jobs") == 0 &&
                 strcmp(argv[optind + 1], "watch") == 0;
    if (ctx->o.timeout && !ctx->o.wait && !watch)
        return op_usage("--timeout bounds --wait or `jobs watch`");
    if (ctx->o.wait && ctx->o.dry_run) return op_usage("a dry run starts no job to --wait for");
    return OP_OK;
}

bool op_takes_value(const char *arg)
{
    if (strcmp(arg, "-c") == 0) return true;
    for (const struct option *o = long_opts; o->name; o++)
        if (o->has_arg == required_argument && strncmp(arg, "--", 2) == 0 &&
            strcmp(arg + 2, o->name) == 0)
            return true;
    return false;
}

static int dispatch(struct op_ctx *ctx, const struct command *cmd, const char *sub)
{
    if (strcmp(cmd->name, "events") == 0) return op_events(ctx, sub);
    if (strcmp(cmd->name, "replay") == 0) return op_replay(ctx, sub);
    if (strcmp(cmd->name, "jobs") == 0) return op_jobs(ctx, sub);
    if (strcmp(cmd->name, "dlq") == 0) return op_dlq(ctx, sub);
    if (sub) return op_usage("`%s` takes no argument, not \"%s\"", cmd->name, sub);
    if (strcmp(cmd->name, "reload") == 0) return op_reload(ctx);
    return op_status(ctx);
}

int op_main(int argc, char **argv)
{
    struct op_ctx ctx = {0};
    const char *conf = "./sink.conf.lua", *api = NULL, *token_file = NULL;
    bool help = false;
    int given[64], ngiven = 0;
    opterr = 0;
    optind = 1;
    int id;
    /* GNU getopt_long moves the words after the options, in their order */
    while ((id = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        if (id == '?' || id == ':')
            return op_usage("%s is not an option of the operator commands, or needs a value",
                            argv[optind - 1]);
        if (id == O_HELP) {
            help = true;
            continue;
        }
        if (ngiven == 64) return op_usage("more than 64 options");
        given[ngiven++] = id;
        int rc = take_option(id, optarg, &ctx, &conf, &api, &token_file);
        if (rc) return rc;
    }
    const struct command *cmd = optind < argc ? find_command(argv[optind]) : NULL;
    if (help) {
        print_help(cmd);
        return OP_OK;
    }
    if (!cmd) return op_usage("unknown command %s", optind < argc ? argv[optind] : "(none)");
    for (int i = 0; i < ngiven; i++)
        if (given[i] >= O_REASON && !takes(cmd, opt_name(given[i])))
            return op_usage("`%s` does not take --%s", cmd->name, opt_name(given[i]));
    int rc = check_words(argc, argv, &ctx, api, ngiven, given);
    if (rc) return rc;
    const char *sub = optind + 1 < argc ? argv[optind + 1] : NULL;
    ctx.nargs = argc - optind - 2 > 0 ? argc - optind - 2 : 0;
    ctx.args = argv + optind + 2;

    char *err = NULL, *base = NULL, *token = NULL;
    bool conf_given = false;
    for (int i = 0; i < ngiven; i++)
        conf_given |= given[i] == O_CONF;
    if (!api && !conf_given && getenv("EVENTSINK_API") && *getenv("EVENTSINK_API"))
        api = getenv("EVENTSINK_API"); /* like --api, for a shell that talks to one service */
    if (api) {
        if (strncmp(api, "http://", 7) != 0 && strncmp(api, "https://", 8) != 0)
            return op_usage("--api must be an http:// or https:// URL, not \"%s\"", api);
        base = xstrdup(api);
        size_t n = strlen(base);
        while (n > 8 && base[n - 1] == '/')
            base[--n] = '\0';
    } else if (!(base = base_from_config(conf, &err))) {
        fprintf(stderr, "%s", err ? err : "");
        fprintf(stderr, "eventsink: no API address: give --api URL, or -c FILE with http.listen\n");
        free(err);
        return OP_USAGE;
    }
    rc = read_token(token_file, &token);
    if (rc == OP_OK) rc = check_token(token);
    if (rc == OP_OK) {
        ctx.api = op_api_new(base, token);
        if (!ctx.api) {
            fprintf(stderr, "eventsink: libcurl could not start\n");
            rc = OP_FAILED;
        } else {
            rc = dispatch(&ctx, cmd, sub);
        }
    }
    op_api_free(ctx.api);
    buf_free(&ctx.last);
    if (token) memset(token, 0, strlen(token));
    free(token);
    free(base);
    return rc;
}
