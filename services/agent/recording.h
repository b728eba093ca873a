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
/* A sequence gap of `missing` samples (packets) in d's stream (cnt: its
 * session counter, or NULL). */
void ag_recording_gap(ag_agent *a, ag_device *d, ag_count *cnt, int64_t missing);

/* Where a batch (or a media packet) of a device belongs. */
typedef struct ag_tag {
    const char *session;           /* the session id the record carries; "" for none */
    ag_count *cnt;                 /* that session's counter of the stream, or NULL */
    int after_stop;                /* the session's, but its first master time is at or after the
                                      stop instant: counted as late_stop, left out of the archive */
    int64_t first_t, first_master; /* its first device time, and that as master time
                                      exactly as the record has it */
} ag_tag;

/* The tag of a record of the restored session s read back from the log
 * (restore.c), as ag_recording_tag gave it when it came: cnt from
 * ag_recording_restore_count, after_stop by the same rule. */
ag_tag ag_recording_restore_tag(ag_session *s, ag_count *cnt, int64_t first_t,
                                int64_t first_master);
/* Where data of d at device time first_t (first_master: the master time the
 * record carries) belongs. claimed: the envelope's session_id, or NULL.
 * Unclaimed data is the session's when first_t is within the start and
 * stop instants exactly as they were sent to the device (its clock), so the
 * device and the agent draw the same line; claimed data is the session's.
 * Either is after_stop when first_master is at or after the stop instant
 * (the stop command came late, or the clock's fit moved by a hair): the
 * archive draws its line there too (docs/architecture.md). */
ag_tag ag_recording_tag(ag_agent *a, ag_device *d, const char *claimed, int64_t first_t,
                        int64_t first_master, const char *stream);
/* Accounts n samples (bytes of data) of d's stream: delivered to the log,
 * or dropped because the log refused them (tag NULL: before it was
 * known). Remembers the batch for a start or a stop command that comes
 * after its instant. */
void ag_recording_account(ag_agent *a, ag_device *d, const ag_tag *tag, const char *stream,
                          int delivered, int64_t n, int64_t bytes);
/* Reports sessions whose stop instant passed (see recording.c); called by
 * the tick, never waits. */
void ag_recording_tick(ag_agent *a, int64_t now_ns);
/* 1 while a session has not reported yet (the tick stays busy). */
int ag_recording_active(const ag_agent *a);
/* At exit, before the log's last flush: emits the reports still waiting
 * for the log's acknowledgement (the flush then waits for them). */
void ag_recording_drain(ag_agent *a);
void ag_recording_free(ag_agent *a);

#endif
