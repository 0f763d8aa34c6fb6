/* Policy reload requests: SIGHUP and POST /admin/reload ask, the pipeline thread does it at
 * a batch boundary (so that no batch is decided by two policy sets) and reports back. */
#ifndef EVENTSINK_RELOAD_H
#define EVENTSINK_RELOAD_H

#include <stdbool.h>

/* From the HTTP thread: asks for a reload and waits for its outcome. Returns 1 when the new
 * set is in use (*version; *restart_needed, when not NULL: the other options the file
 * changes, malloc'd, or NULL), 0 when it was refused (*err, malloc'd: the old set stays),
 * -1 when the pipeline did not get to it within timeout_ms. */
int reload_request_wait(int timeout_ms, int *version, char **err, char **restart_needed);

/* From the pipeline thread: true when a reload was asked for (by signal or HTTP). */
bool reload_wanted(void);
/* From the pipeline thread, before it reads the files: the requests made until now are
 * the ones this reload serves; a SIGHUP or a request that comes later (while the files are
 * being loaded) asks for one more reload, so that none is lost. */
void reload_begin(void);
/* From the pipeline thread, after trying: wakes the requests it served. restart_needed:
 * the options the configuration file changes that take a restart, or NULL. */
void reload_done(bool ok, int version, const char *err, const char *restart_needed);
/* True while an API request waits that no reload has begun to serve. */
bool reload_pending(void);

/* From the SIGHUP handler (async-signal-safe). */
void reload_request_from_signal(void);

#endif
