/* emit.h — layer 2: records to the log, counted. Device data and device
 * events go out through here; a->produced counts every record the log took
 * (recording.c adds its RecordingReport). */
#ifndef MSRS_AG_EMIT_H
#define MSRS_AG_EMIT_H
#include "agent.h"

/* Emits a record of type short_name from JSON (stolen). EV_ERR_INVALID (the
 * JSON does not fit the record; err names the field) is counted as the
 * device's error; any other failure is the log's, counted and printed. err
 * may be NULL. */
int ag_emit(ag_agent *a, const char *short_name, const char *key, json_t *value, char *err,
            size_t err_size);
/* Emits a record already framed (the data paths: ev_codec_encode_samples,
 * ev_codec_encode_media; frame borrowed). Returns 1 when the log took it;
 * else counts and names the failure and returns 0. */
int ag_emit_encoded(ag_agent *a, const ev_schema *s, const char *key, const void *frame,
                    size_t len);
/* Counts and names a record of type short_name for key that could not be
 * made or queued (err: why). */
void ag_emit_failed(ag_agent *a, const char *short_name, const char *key, const char *err);

#endif
