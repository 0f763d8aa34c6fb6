/* What the running service knows about itself, shared between the pipeline thread (which
 * writes it) and the HTTP threads (which read it): dependency health and the policy set. */
#ifndef EVENTSINK_STATUS_H
#define EVENTSINK_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

void status_set_postgres_up(bool up);
void status_set_kafka_up(bool up);
bool status_postgres_up(void);
bool status_kafka_up(void);

int status_policy_version(void);

/* After a successful load: the files (their sha256 is computed here), the version and the
 * time. Clears last_error. */
void status_policies_loaded(int version, char *const *files, size_t nfiles);
/* After a failed reload: the error, kept until the next successful load. */
void status_policies_failed(const char *error);

/* Appends {"policy_version":N,"loaded_at":"...","last_error_at":..}: what changes when
 * GET /admin/policies would answer something else. */
void status_policies_stamp_json(struct buf *out);

/* Appends {"policy_version":N,"loaded_at":"...","last_error":..,"files":[{"path","sha256"}]}. */
void status_policies_json(struct buf *out);

#endif
