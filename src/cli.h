/* The one-shot commands: check, migrate, policy-eval, retention. Each returns the exit
 * code. */
#ifndef EVENTSINK_CLI_H
#define EVENTSINK_CLI_H

#include <stdbool.h>

#include "config.h"

int cli_check(const struct config *cfg);
int cli_migrate(const struct config *cfg);
int cli_policy_eval(const struct config *cfg, const char *events_file);
/* Applies retention now (or with dry_run prints what would go), as the service does hourly. */
int cli_retention(const struct config *cfg, bool dry_run);

#endif
