/* The built-in describe, detect_replay and route hooks in C: when no policy file defines
 * any of the three, a record's decision needs no Lua at all. The rules are those of
 * lua/runtime.lua's defaults, to the letter; whatever this code is not sure to decide
 * exactly as Lua would (escaped strings, numbers that are not plain integers, values of
 * unexpected types) it leaves to the Lua path, which remains the reference. */
#ifndef EVENTSINK_POLICY_FAST_H
#define EVENTSINK_POLICY_FAST_H

#include <stdbool.h>

#include "policy.h"
#include "record.h"

/* Decides a record whose value passed record_check (valid JSON). Returns false when the
 * Lua path must decide instead; out is then untouched. */
bool policy_fast_decide(const struct record *r, bool is_object, struct decision *out);

#endif
