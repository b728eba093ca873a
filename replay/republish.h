/* republish.h — msrs-replay --republish: re-emits recorded records into a
 * log, in their recorded order across topics and at their recorded pace
 * (or scaled), so live services can run against an old session. Records
 * keep their keys, headers (event ids: services that fold them stay
 * idempotent) and timestamps; only the topic prefix may change. */
#ifndef MSRS_REPUBLISH_H
#define MSRS_REPUBLISH_H
#include "ev.h"

#include <stdint.h>

/* Reads topics (logical names) of the log src_conf names — all of it, or
 * with session the window from margin_ms before the session's first record
 * on the sessions topic to 5 s after its last — merges them by record time
 * and produces each into dst (its own topic prefix). speed 1 = the
 * recorded pace, 10 = ten times faster, 0 = as fast as the logs go.
 * Progress on stderr each second. Returns 0, 1 (a log failed; what was
 * produced before is flushed) or 2 (cannot open the source). */
int rp_republish(const ev_conf *src_conf, ev_log *dst, const char *const *topics,
                 size_t topic_count, const char *session, double speed, int64_t margin_ms);

#endif
