/* Liveness (CONTRACT 9.1): each component says when it has work and when it makes
 * progress; one that has work and has made no progress for health.stall_after_s is
 * "stalled" on /health, /ready and eventsink_stalled{component}, until it moves again.
 * Any thread; a component may be busy from several threads at once (two writer lanes):
 * every health_busy() needs its health_idle(). */
#ifndef EVENTSINK_HEALTH_H
#define EVENTSINK_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

enum health_component {
    HEALTH_CONSUMER,
    HEALTH_WRITER,
    HEALTH_POLICY,
    HEALTH_REPLAY_WORKER,
    HEALTH_SCHEDULER,
    HEALTH_NCOMPONENTS,
};

void health_configure(long stall_after_s);
void health_busy(enum health_component c);     /* has work from now on */
void health_progress(enum health_component c); /* moved just now */
void health_idle(enum health_component c);     /* one piece of work is over */

const char *health_component_name(enum health_component c);
/* True when c is stalled; *since_ms is then the wall-clock time (Unix ms) of its last
 * progress. */
bool health_stalled(enum health_component c, int64_t *since_ms);
/* Appends [{"component":"writer","since":"2026-..Z"},...] for the stalled components and
 * returns how many there are. */
int health_stalled_json(struct buf *out);

#endif
