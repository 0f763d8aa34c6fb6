#include "kafka_util.h"

#include <string.h>

#include "buf.h"
#include "log.h"

void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-4 become warnings, the rest debug */
    log_msg(level <= 4 ? LOG_WARN : LOG_DEBUG, "kafka %s: %s", fac, buf);
}

bool kafka_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char **err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) == RD_KAFKA_CONF_OK) return true;
    struct buf m = {0};
    buf_printf(&m, "kafka property %s=%s: %s", k, v, errstr);
    *err = m.data;
    return false;
}

bool kafka_consumer_only_property(const char *name)
{
    static const char *const prefixes[] = {
        "group.",
        "enable.auto.",
        "auto.",
        "session.",
        "heartbeat.",
        "partition.assignment",
        "fetch.",
        "max.poll.",
        "queued.",
        "isolation.level",
        "check.crcs",
        "allow.auto.create",
        "enable.partition.eof",
        "consume.",
        "coordinator.",
        NULL,
    };
    for (const char *const *p = prefixes; *p; p++)
        if (strncmp(name, *p, strlen(*p)) == 0) return true;
    return false;
}
