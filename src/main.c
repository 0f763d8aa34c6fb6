/* eventsink: Kafka -> Lua policies -> PostgreSQL event journal, with audited replays.
 * Command line: see usage() and CONTRACT section 1. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "buf.h"
#include "cli.h"
#include "config.h"
#include "log.h"
#include "op.h"
#include "pipeline.h"
#include "reload.h"

#define EVENTSINK_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: eventsink [-c FILE]                 run the service\n"
            "       eventsink check [-c FILE]           validate the configuration and policies\n"
            "       eventsink migrate [-c FILE]         apply the database migrations\n"
            "       eventsink retention [-c FILE] [--dry-run]\n"
            "                                           remove what retention says is old\n"
            "       eventsink policy-eval [-c FILE] EVENTS.jsonl\n"
            "                                           print the policies' decisions\n"
            "       eventsink events|replay|jobs|dlq|reload|status ...\n"
            "                                           operator commands: they talk to the\n"
            "                                           running service's HTTP API (eventsink\n"
            "                                           replay --help, ...)\n"
            "       eventsink --version | --help\n"
            "FILE defaults to ./sink.conf.lua. Exit codes: 0 ok, 1 runtime failure,\n"
            "2 usage or configuration error.\n");
}

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        reload_request_from_signal();
    else
        pipeline_stop_requested = sig; /* the loop logs which signal it was */
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The first word that is not an option (nor -c's file). */
static const char *command_word(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (op_takes_value(argv[i]))
            i++;
        else if (argv[i][0] != '-')
            return argv[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (op_is_command(command_word(argc, argv))) return op_main(argc, argv);
    const char *conf = "./sink.conf.lua";
    const char *cmd = NULL;
    const char *arg = NULL;
    bool dry_run = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("eventsink %s (librdkafka %s)\n", EVENTSINK_VERSION, rd_kafka_version_str());
            return 0;
        } else if (strcmp(argv[i], "-c") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "eventsink: -c needs a file\n");
                usage(stderr);
                return 2;
            }
            conf = argv[i];
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            dry_run = true; /* retention's */
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "eventsink: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!cmd) {
            cmd = argv[i];
        } else if (!arg) {
            arg = argv[i];
        } else {
            fprintf(stderr, "eventsink: unexpected argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (cmd && strcmp(cmd, "check") != 0 && strcmp(cmd, "migrate") != 0 &&
        strcmp(cmd, "policy-eval") != 0 && strcmp(cmd, "retention") != 0) {
        fprintf(stderr, "eventsink: unknown command %s\n", cmd);
        usage(stderr);
        return 2;
    }
    if (dry_run && (!cmd || strcmp(cmd, "retention") != 0)) {
        fprintf(stderr, "eventsink: --dry-run goes with retention (or an operator command)\n");
        return 2;
    }
    if ((!cmd || strcmp(cmd, "policy-eval") != 0) && arg) {
        fprintf(stderr, "eventsink: unexpected argument %s\n", arg);
        return 2;
    }
    if (cmd && strcmp(cmd, "policy-eval") == 0 && !arg) {
        fprintf(stderr, "eventsink: policy-eval needs a file of events (one JSON object a line)\n");
        return 2;
    }

    char *err = NULL;
    struct config *cfg = config_load(conf, &err);
    if (!cfg) {
        fprintf(stderr, "%s", err);
        fprintf(stderr, "eventsink: the configuration is invalid\n");
        free(err);
        return 2;
    }
    log_configure(cfg->log.level, cfg->log.format);
    /* cron schedules are read in this zone; logs and timestamps stay UTC */
    setenv("TZ", cfg->scheduler.timezone, 1);
    tzset();

    int rc;
    if (cmd && strcmp(cmd, "check") == 0) {
        rc = cli_check(cfg);
    } else if (cmd && strcmp(cmd, "migrate") == 0) {
        rc = cli_migrate(cfg);
    } else if (cmd && strcmp(cmd, "policy-eval") == 0) {
        rc = cli_policy_eval(cfg, arg);
    } else if (cmd && strcmp(cmd, "retention") == 0) {
        rc = cli_retention(cfg, dry_run);
    } else {
        install_signals();
        log_info("eventsink %s starting with %s", EVENTSINK_VERSION, cfg->path);
        rc = pipeline_run(cfg);
    }
    config_free(cfg);
    return rc;
}
