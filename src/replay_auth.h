/* Authentic replay markers (CONTRACT 9.2). Every replay that eventsink produces carries
 * the header x-replay-signature: "v1.<key id>.<hex HMAC-SHA256>" over its job id and the
 * journal id or DLQ id it replays, with a key of the replay_keys table. The consumer
 * verifies it: only verified markers may resolve a DLQ entry, count for a job's item or
 * be a job's second copy. Keys are rotated by adding a row and retired by setting
 * retired_at, once nothing signed with the old one is still in flight: every key not
 * retired verifies, the newest signs. Any thread. */
#ifndef EVENTSINK_REPLAY_AUTH_H
#define EVENTSINK_REPLAY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "record.h"

#define REPLAY_SIG_HEADER "x-replay-signature"
#define REPLAY_SIG_MAX 96

struct replay_key {
    int id;
    unsigned char secret[64];
    size_t len;
};

/* Replaces the key ring (copied). The newest key (highest id) signs. */
void replay_auth_set_keys(const struct replay_key *keys, size_t n);
size_t replay_auth_key_count(void);

/* The header value for a replay of journal id (dlq false) or DLQ id (dlq true) by job.
 * False when no key is loaded. */
bool replay_auth_sign(int64_t job_id, bool dlq, int64_t id, char out[REPLAY_SIG_MAX]);

enum replay_auth_result {
    REPLAY_AUTH_NONE,       /* the record carries no replay markers */
    REPLAY_AUTH_VERIFIED,   /* markers signed by this deployment, matching the decision */
    REPLAY_AUTH_UNVERIFIED, /* markers anyone could have written */
    REPLAY_AUTH_UNKNOWN_KEY /* signed with a key id not in the ring (reload the ring) */
};

/* Checks a decided record's markers against its signature header and sets
 * d->replay_verified. Markers that are not verified lose their authority: the decision's
 * replay_job_id and replayed_from_dlq_id are cleared (its replay_source and
 * replayed_from_event_id stay, as any producer's markers do). */
enum replay_auth_result replay_auth_check(const struct record *r, struct decision *d);

#endif
