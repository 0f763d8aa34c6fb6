#include "duration.h"

#include <stdlib.h>
#include <string.h>

bool duration_parse(const char *s, bool need_unit, int64_t *seconds)
{
    if (!s || *s < '0' || *s > '9') return false;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (v <= 0 || v > 100LL * 365 * 86400) return false;
    int64_t unit;
    if (strcmp(end, "d") == 0)
        unit = 86400;
    else if (strcmp(end, "h") == 0)
        unit = 3600;
    else if (strcmp(end, "m") == 0)
        unit = 60;
    else if (strcmp(end, "s") == 0 || (!*end && !need_unit))
        unit = 1;
    else
        return false;
    if (v > 100LL * 365 * 86400 / unit) return false;
    *seconds = (int64_t)v * unit;
    return true;
}
