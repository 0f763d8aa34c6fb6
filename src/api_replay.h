/* Job creation shared by the replay endpoints and the signed webhook. */
#ifndef EVENTSINK_API_REPLAY_H
#define EVENTSINK_API_REPLAY_H

#include "http.h"
#include "jsonv.h"

/* The members each kind of body takes (strict input, CONTRACT 9.3). */
#define BATCH_FIELDS "ids reason rate_per_s"
#define RANGE_FIELDS                                                                               \
    "start end from_id to_id topic tenant only_original dry_run confirm rate_per_s reason"

/* body {"ids": [...], "reason"?, "rate_per_s"?} -> a pending job of `kind`; answers 202
 * {"job_id", "total"} or the error. */
void api_batch_job(struct http_req *rq, struct http_resp *rs, const struct jsonv *body,
                   const char *kind, const char *requested_by);
/* body or query: start, end, topic, tenant, only_original, dry_run, confirm, rate_per_s,
 * reason -> 200 {"matched"} (dry run) or 202 {"job_id", "matched"}. */
void api_range_job(struct http_req *rq, struct http_resp *rs, const struct jsonv *body,
                   const char *kind, const char *requested_by);

/* 409 replayed_signature: a webhook signature that was used already. */
void api_webhook_replayed(struct http_resp *rs);

#endif
