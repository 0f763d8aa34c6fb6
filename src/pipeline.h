/* The service's main loop: consume from Kafka, decide with the policies, write each batch
 * to PostgreSQL in one transaction, then commit the Kafka offsets. */
#ifndef EVENTSINK_PIPELINE_H
#define EVENTSINK_PIPELINE_H

#include <signal.h>

#include "config.h"

/* Set from the SIGTERM/SIGINT handler; read by the loop. */
extern volatile sig_atomic_t pipeline_stop_requested;

/* Runs until SIGTERM/SIGINT. Returns the process exit code. */
int pipeline_run(struct config *cfg);

#endif
