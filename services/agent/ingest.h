/* ingest.h — layer 7: device data and reports into events (see ingest.c).
 * Each takes a message of a registered connection (c->dev set) as parsed by
 * protocol.c; env, payload and h are borrowed; ref is the message's id or
 * NULL. */
#ifndef MSRS_AG_INGEST_H
#define MSRS_AG_INGEST_H
#include "agent.h"

/* samples: payload {stream_id, seq, t [ns...], values [[...], ...]}. */
void ag_ingest_samples(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref);
/* Binary samples: header {type: "samples", stream_id, seq, n, channels,
 * session_id?}, body n int64 device timestamps then n x channels float64
 * values, row-major, all little-endian. */
void ag_ingest_samples_binary(ag_agent *a, ag_conn *c, const ev_jflat *h, const unsigned char *body,
                              size_t len);
/* Media: header {stream_id, seq, codec, pts, keyframe, ts, width, height,
 * session_id}, the encoded packet. */
void ag_ingest_media(ag_agent *a, ag_conn *c, const ev_jflat *h, const unsigned char *packet,
                     size_t bytes);
void ag_ingest_status(ag_agent *a, ag_conn *c, json_t *payload, const char *ref);
void ag_ingest_sync_mark(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref);

#endif
