/* Durations as operators write them: "90s", "30m", "12h", "7d". One reader for the
 * configuration (retention) and the operator commands (--since, --timeout). */
#ifndef EVENTSINK_DURATION_H
#define EVENTSINK_DURATION_H

#include <stdbool.h>
#include <stdint.h>

/* -> seconds (1 s .. 100 years). need_unit: a bare number is refused (in the
 * configuration "30" could mean anything); else it is seconds. */
bool duration_parse(const char *s, bool need_unit, int64_t *seconds);

#endif
