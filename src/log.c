#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "buf.h"
#include "json.h"

static enum log_level min_level = LOG_INFO;
static bool json_format = false;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

bool log_level_parse(const char *name, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *out = LOG_WARN;
        return true;
    }
    return false;
}

bool log_configure(const char *level, const char *format)
{
    enum log_level l;
    if (level && !log_level_parse(level, &l)) return false;
    if (format && strcmp(format, "text") != 0 && strcmp(format, "json") != 0) return false;
    if (level) min_level = l;
    if (format) json_format = strcmp(format, "json") == 0;
    return true;
}

bool log_enabled(enum log_level level)
{
    return level >= min_level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < min_level) return;
    char ts[40];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    struct buf msg = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);

    struct buf line = {0};
    if (json_format) {
        buf_puts(&line, "{\"ts\":\"");
        buf_puts(&line, ts);
        buf_puts(&line, "\",\"level\":\"");
        buf_puts(&line, level_names[level]);
        buf_puts(&line, "\",\"msg\":");
        /* messages may quote event data: keep the JSON valid whatever the bytes */
        json_write_string(&line, msg.data ? msg.data : "", msg.len);
        buf_puts(&line, "}\n");
    } else {
        buf_printf(&line, "%s %-5s %s\n", ts, level_names[level], msg.data ? msg.data : "");
    }
    pthread_mutex_lock(&log_lock);
    fwrite(line.data, 1, line.len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
    buf_free(&msg);
    buf_free(&line);
}
