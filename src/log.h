/* Logging: one line per message on stderr, as text or as one JSON object a line. */
#ifndef EVENTSINK_LOG_H
#define EVENTSINK_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Returns false when level or format is not a known name. */
bool log_configure(const char *level, const char *format);
bool log_level_parse(const char *name, enum log_level *out);
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
