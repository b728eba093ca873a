/* recording.h — layer 6: the sessions this node records (StartRecording ..
 * RecordingReport). */
#ifndef MSRS_AG_RECORDING_H
#define MSRS_AG_RECORDING_H
#include "agent.h"

/* How long a report waits for the log to acknowledge what it counts. */
#define AG_REPORT_TIMEOUT_MS 10000

void ag_start_recording(ag_agent *a, const char *session_id, json_t *device_ids,
                        int64_t start_at_ns);
void ag_stop_recording(ag_agent *a, const char *session_id, int64_t stop_at_ns);
/* Sends `start` to a device that (re)registers during a session it records
 * (attaching it first when a session rebuilt after a restart expects it). */
void ag_recording_rejoin(ag_agent *a, ag_device *d);
/* A session this node was recording before it restarted (restore.c):
 * start and stop (INT64_MAX: not known) instants, and the devices it
 * expects back (borrowed). NULL when known already or out of memory. */
ag_session *ag_recording_restore(ag_agent *a, const char *session_id, int64_t start_at_ns,
                                 int64_t stop_at_ns, json_t *device_ids);
/* d joins the restored session s (not connected yet); returns the counter
 * of its stream to fill from the log, or NULL when d records another. */
ag_count *ag_recording_restore_count(ag_agent *a, ag_session *s, ag_device *d, const char *stream);
/* Remembers a batch of d written without a session (first device time,
 * samples, bytes): a start command that comes after its instant counts
 * the ones at or after it as late_start. */
void ag_recording_untagged(ag_agent *a, ag_device *d, const char *stream, int64_t first_t,
                           int64_t samples, int64_t bytes);
/* A sequence gap of `missing` samples (packets) in d's stream (cnt: its
 * session counter, or NULL). */
void ag_recording_gap(ag_agent *a, ag_device *d, ag_count *cnt, int64_t missing);
/* The counter of stream for data at device time t: NULL when the data is
 * not part of a session (claimed: the envelope's session_id or NULL).
 * Unclaimed data is the session's when t is within the start and stop
 * instants exactly as they were sent to the device (its clock), so the
 * device and the agent draw the same line. *session is set to the id. */
ag_count *ag_recording_count(ag_agent *a, ag_device *d, const char *claimed, int64_t t,
                             const char *stream, const char **session);
/* Accounts n samples (bytes of data) of a device: delivered to the log, or
 * dropped because the log refused them. cnt: from ag_recording_count. */
void ag_recording_account(ag_agent *a, ag_count *cnt, int delivered, int64_t n, int64_t bytes);
/* Reports sessions whose stop instant passed (see recording.c); called by
 * the tick, never waits. */
void ag_recording_tick(ag_agent *a, int64_t now_ns);
/* At exit, before the log's last flush: emits the reports still waiting
 * for the log's acknowledgement (the flush then waits for them). */
void ag_recording_drain(ag_agent *a);
void ag_recording_free(ag_agent *a);

#endif
