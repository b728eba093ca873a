/* restore.h — layer 6b: the recording state of an agent that starts again.
 * Its cursor on the commands topic only says which commands it handled,
 * not what it was doing: a StartRecording handled before a crash is never
 * delivered again. So at start the agent folds the sessions and commands
 * topics with the shared reducers (ev_projection) and rebuilds every
 * session this node got a StartRecording for that neither stopped nor has
 * its RecordingReport: the instants, the devices it expects back, their
 * clocks (the probes of their ClockOffsetMeasured records from this node)
 * and, from the samples and media topics (from the earliest start instant
 * less 10 s), what reached the log for the session per stream (samples,
 * bytes, gaps) and each stream's next sequence number. A device that comes
 * back resumes its numbering; what it sent while no agent ran, and what the
 * dead agent had not written, is the gap between that number and its first
 * batch: counted in the report as gaps / gap_samples. */
#ifndef MSRS_AG_RESTORE_H
#define MSRS_AG_RESTORE_H
#include "agent.h"

/* Rebuilds the sessions (see above) through log handles of its own opened
 * from conf (read during the call). Blocks until the log is read; returns
 * 0 or the log's error (err says why). */
int ag_restore(ag_agent *a, const ev_conf *conf, char *err, size_t err_size);

#endif
