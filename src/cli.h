/* The one-shot commands: check, migrate, policy-eval. Each returns the exit code. */
#ifndef EVENTSINK_CLI_H
#define EVENTSINK_CLI_H

#include "config.h"

int cli_check(const struct config *cfg);
int cli_migrate(const struct config *cfg);
int cli_policy_eval(const struct config *cfg, const char *events_file);

#endif
