/* The automation thread: asks the dlq_retry hook when each dead-lettered entry should be
 * retried, starts the automated retries that are due (tagged "automated"), and runs the
 * policies' schedules (tagged "scheduled"). Every decision that must happen once across
 * instances is claimed in PostgreSQL (row locks, the schedule_runs primary key). */
#ifndef EVENTSINK_SCHEDULER_H
#define EVENTSINK_SCHEDULER_H

#include "replay.h"

void scheduler_start(struct replay_env *env);
void scheduler_stop(void);

#endif
