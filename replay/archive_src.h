/* archive_src.h — msrs-replay --archive: state from a session archive
 * folder instead of a log. Folds its events.avro (the session's records
 * and its devices' registrations, framed as on the log, with their ids and
 * times) and every DEVICE/clock.avro (the clock rounds), read with
 * archive/'s reader, with the services' reducers. Commands and data are
 * not in an archive: start/stop commands per node and live device status
 * are not part of this state. */
#ifndef MSRS_ARCHIVE_SRC_H
#define MSRS_ARCHIVE_SRC_H
#include "ev.h"

/* Folds the archive folder dir into state. Returns 0, or 1 (a file is
 * missing, truncated or not an msrs archive: named on stderr; what was
 * read is folded). *records: how many were folded. */
int as_fold_archive(const char *dir, ev_state *state, int64_t *records);

#endif
