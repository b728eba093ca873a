/*
 * archive.h — the session archive of msrs: the one public header of the
 * archive library (prefix ar_), the one place that knows the format.
 * msrs-archiver writes archives with it; msrs-replay (--archive, --refit)
 * reads them with it.
 *
 * An archive is a folder ROOT/SESSION (SESSION: the session id made safe
 * as a path component; "-2", "-3"... when another session of that id is
 * there already):
 *   manifest.json                 session, labels, devices (sync, clock fit,
 *                                 streams and their counts), marks, the
 *                                 reported counts, SHA-256 and size of
 *                                 every file ("format": "msrs-archive/1")
 *   events.avro                   the session's records (sessions topic) and
 *                                 its devices' registrations, framed as on
 *                                 the log with id, source and time
 *   DEVICE/clock.avro             the device's ClockOffsetMeasured records
 *                                 from 30 s before the start to 30 s after
 *                                 the stop (every probe: refits)
 *   DEVICE/STREAM.avro            SensorSampleBatch records as on the log
 *   DEVICE/STREAM.frames.avro     MediaPacket records without their bytes
 *   DEVICE/STREAM.h264|.m4v|...   the video's bytes from its first keyframe
 *   sub-S_ses-S_task-T_run-R.xdf  the sensor streams and sync marks in XDF
 * It is built in ROOT/.staging/SESSION and renamed into place when finished.
 *
 * Conventions (those of ev.h; see docs/style.md):
 *   - Every function returning int returns 0 on success or a negative ev_err
 *     (EV_ERR_IO: a file could not be read or written; EV_ERR_CORRUPT: a
 *     file is not what the format says; EV_ERR_INVALID: a bad argument);
 *     some return 1 for a documented second outcome. The detail, naming
 *     the file (and the record or field), goes into a caller-supplied
 *     errstr of errstr_size bytes, always NUL-terminated when size > 0.
 *   - Handles are opaque, created by X_new/X_open, freed by X_destroy (or
 *     ar_xdf_close); X_destroy(NULL) is a no-op.
 *   - Nothing here prints or exits. No handle is thread-safe: use one per
 *     thread. Callbacks run on the caller's thread, inside the call that
 *     names them.
 */
#ifndef MSRS_ARCHIVE_H
#define MSRS_ARCHIVE_H

#include "ev.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Clock rounds this long before a session's start and after its stop go
 * into its DEVICE/clock.avro and its manifest's clock fit. */
#define AR_CLOCK_MARGIN_NS 30000000000LL
/* Clock rounds an ar_devices keeps per device (the newest). */
#define AR_CLOCK_RING 4096

/* ------------------------------------------------------------------ files */

/* SHA-256 of the file at path (OpenSSL): hex gets 64 lowercase digits and
 * a NUL, *bytes the file's size. 0 or EV_ERR_IO. */
int ar_sha256_file(const char *path, char hex[65], int64_t *bytes, char *errstr,
                   size_t errstr_size);
/* Copies the file from to the file to (created or truncated). 0 or EV_ERR_IO. */
int ar_copy_file(const char *from, const char *to, char *errstr, size_t errstr_size);
/* rm -rf path (never follows links); a missing path is not an error. */
void ar_rm_tree(const char *path);

/* What a file of the archive is, from its path relative to the folder. */
typedef enum ar_file_kind {
    AR_FILE_OTHER = 0,
    AR_FILE_MANIFEST, /* manifest.json */
    AR_FILE_EVENTS,   /* events.avro */
    AR_FILE_CLOCK,    /* DEVICE/clock.avro */
    AR_FILE_STREAM,   /* DEVICE/STREAM.avro, DEVICE/STREAM.frames.avro: records with
                         device_time_ns and master_time_ns */
    AR_FILE_XDF,      /* *.xdf */
    AR_FILE_MEDIA,    /* DEVICE/STREAM.h264 ...: the video's bytes */
} ar_file_kind;

ar_file_kind ar_file_kind_of(const char *rel);

/* -------------------------------------------------------------------- XDF */

/* An XDF 1.0 writer: the file format of LSL's LabRecorder, so pyxdf,
 * MATLAB's load_xdf and SigViewer read msrs sessions. A file is "XDF:" then
 * chunks [NumLengthBytes 1|4|8][Length][Tag u16][content], little-endian:
 * FileHeader (1), StreamHeader (2), Samples (3), ClockOffset (4), Boundary
 * (5), StreamFooter (6). Timestamps are seconds on the stream's own clock;
 * ClockOffset chunks say how far that clock is behind the recorder's at a
 * time on the stream's clock (the reader fits them), as LabRecorder writes
 * them. Write errors are remembered and reported by ar_xdf_close. */
typedef struct ar_xdf ar_xdf;

/* Creates the file at path and writes the magic and the FileHeader. */
int ar_xdf_open(ar_xdf **out, const char *path, char *errstr, size_t errstr_size);
/* Stream header of a numeric ("double64") or string stream (channels 1,
 * format "string"); srate 0 = irregular. Strings are copied (XML-escaped). */
void ar_xdf_stream_header(ar_xdf *x, uint32_t id, const char *name, const char *type, int channels,
                          double srate, const char *format, const char *source_id);
/* One Samples chunk of n samples of a double64 stream: t[i] in seconds,
 * values row-major (n x channels). Both borrowed. */
void ar_xdf_samples(ar_xdf *x, uint32_t id, size_t n, const double *t, int channels,
                    const double *values);
/* One sample of a string stream. */
void ar_xdf_string_sample(ar_xdf *x, uint32_t id, double t, const char *text);
/* At collection_time (stream clock, s) the stream's clock was offset (s)
 * behind the recorder's. */
void ar_xdf_clock_offset(ar_xdf *x, uint32_t id, double collection_time, double offset);
void ar_xdf_boundary(ar_xdf *x);
/* Samples chunks written since the last Boundary (a writer adds one every
 * few hundred, so a reader can resynchronise). */
int64_t ar_xdf_chunks_since_boundary(const ar_xdf *x);
/* StreamFooter: first and last timestamps, the sample count and the
 * stream's clock offsets again (arrays of offsets entries, borrowed). */
void ar_xdf_stream_footer(ar_xdf *x, uint32_t id, double first, double last, int64_t count,
                          const double *offset_times, const double *offset_values, size_t offsets);
/* Closes the file and frees x. 0 when every write succeeded, else EV_ERR_IO.
 * NULL: 0. */
int ar_xdf_close(ar_xdf *x);

/* -------------------------------------------------------- device history */

/* What an archive needs of its devices that is not state: each device's
 * last DeviceRegistered record as framed on the log (events.avro holds it)
 * and its newest AR_CLOCK_RING ClockOffsetMeasured records (clock.avro and
 * the manifest's clock fit). A writer of the log's devices topic keeps one
 * for every session it builds. */
typedef struct ar_devices ar_devices;

ar_devices *ar_devices_new(void);
void ar_devices_destroy(ar_devices *d);
/* Keeps ev (copied: its frame ev->msg is required, id, source and time)
 * when it is a DeviceRegistered or ClockOffsetMeasured. Returns 0 kept,
 * 1 another record type (nothing kept), EV_ERR_INVALID (no frame, or a
 * record that does not read) or EV_ERR_NOMEM. */
int ar_devices_add(ar_devices *d, const ev_event *ev, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------ writer */

/* One session being written into ROOT/.staging/SESSION. Every record the
 * writer is given is copied: nothing passed is kept. A failed write is
 * returned (errstr names the file) and remembered: the manifest then says
 * "complete": false. */
typedef struct ar_writer ar_writer;

/* Starts session_id's archive under root (which must exist): removes what
 * an earlier process left in its staging folder, creates it and
 * events.avro. On an error *out is still a writer (it archives what it can,
 * marked incomplete) unless the error is EV_ERR_NOMEM or EV_ERR_INVALID. */
int ar_writer_new(ar_writer **out, const char *root, const char *session_id, char *errstr,
                  size_t errstr_size);
/* Whether video is also written as Matroska (DEVICE/STREAM.mkv, for
 * players) beside its elementary stream; on unless set off before the
 * first packet. Off, each video byte is written to disk once instead of
 * twice (archive.matroska, docs/config.md). */
void ar_writer_set_matroska(ar_writer *w, int on);
/* Abandons an unfinished archive: closes its files; the staging folder
 * stays (the next ar_writer_new of the session or a clean start removes it). */
void ar_writer_destroy(ar_writer *w);
/* The staging folder (borrowed from w). */
const char *ar_writer_staging(const ar_writer *w);
/* Streams written so far. */
size_t ar_writer_stream_count(const ar_writer *w);

/* Appends a record of the session (sessions topic; key: its key on the log)
 * to events.avro. ev->msg (the frame) is required. The manifest's
 * "requested" is its CollectionRequested record (which also names the XDF
 * file from its labels: give it before the data) and "marks" are its
 * SyncMark records in this order. */
int ar_writer_event(ar_writer *w, const char *topic, const char *key, const ev_event *ev,
                    char *errstr, size_t errstr_size);

/* The session's stop instant (master clock), once known: a batch or a
 * packet whose first master time is at or after it is not the session's
 * (its node counted it as late_stop: the stop command reached it late);
 * it is left out and counted per stream (the manifest's
 * after_stop_samples). */
void ar_writer_stop_at(ar_writer *w, int64_t stop_at_ns);

/* Appends a SensorSampleBatch of the session to DEVICE/STREAM.avro and the
 * XDF. device: the device's state (ev_state_to_json's devices.DEVICE, for
 * its declared streams: XDF type and rate), borrowed, may be NULL.
 * Returns 0 written; 1 skipped: a redelivered seq (counted as a duplicate),
 * a batch without samples or one after the stop instant; <0 an error (the
 * batch is counted): EV_ERR_CORRUPT for a batch whose arrays disagree (not
 * as many master as device times, not channels values for each). */
int ar_writer_samples(ar_writer *w, const avro_value_t *batch, const json_t *device, char *errstr,
                      size_t errstr_size);
/* 1 when w writes device_id's stream_id already: ar_writer_samples reads
 * device only for a stream it opens, so the caller need not find it. */
int ar_writer_has_stream(const ar_writer *w, const char *device_id, const char *stream_id);

/* Appends a MediaPacket of the session: its bytes to the elementary stream
 * (from the stream's first keyframe: a decoder cannot start before), the
 * record without them to DEVICE/STREAM.frames.avro. packet is changed (its
 * data field emptied). Returns as ar_writer_samples. */
int ar_writer_media(ar_writer *w, avro_value_t *packet, char *errstr, size_t errstr_size);

/* The differences between the counts the session reports (session: its
 * state, ev_state_to_json's sessions.SESSION; "streams" of its
 * CollectionStopped) and what w holds, as the manifest's "mismatches"
 * array: [] when every stream is complete. New reference. */
json_t *ar_writer_mismatches(const ar_writer *w, const json_t *session);

/* Finishes the archive: the devices' registrations into events.avro, each
 * device's DEVICE/clock.avro (its rounds in history from AR_CLOCK_MARGIN_NS
 * before the start to as long after the stop), the XDF's offsets, footers
 * and marks stream, the SHA-256 of every file, manifest.json; then renames
 * the staging folder to ROOT/SESSION, or ROOT/SESSION-2... when another
 * session of that id has it. session: its state (borrowed); devices:
 * ev_state_to_json's "devices" (borrowed); history may be NULL (no clock
 * rounds). The manifest's clock_fit per device is ev_clock_fit_probes over
 * every probe of those rounds, at the session's start.
 * Every file, its folder, the manifest and the rename are fsynced: a
 * manifest names only what is on disk (a file that could not be hashed or
 * synced is left out and named in its "incomplete").
 * Returns 0: archived in final_dir (*complete: 1 when nothing was missing
 * and no write failed); 2: archived there, but the rename could not be
 * synced (errstr); 1: this very session (same id and start) was archived
 * before in final_dir, which is left as it is, and the staging folder is
 * removed; <0: the manifest could not be written or synced, or the rename
 * failed (errstr names the file; the staging folder stays). Either way w is
 * then only good for ar_writer_destroy. */
int ar_writer_finish(ar_writer *w, const json_t *session, const json_t *devices,
                     const ar_devices *history, char *final_dir, size_t final_size, int *complete,
                     char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------ reader */

/* An archive folder opened for reading: its manifest, parsed and checked. */
typedef struct ar_reader ar_reader;

/* Reads dir/manifest.json. EV_ERR_IO when it is missing or unreadable,
 * EV_ERR_CORRUPT when it is not JSON or not an msrs archive's manifest
 * (no "files" object); errstr names the file. */
int ar_reader_open(ar_reader **out, const char *dir, char *errstr, size_t errstr_size);
void ar_reader_destroy(ar_reader *r);
/* The manifest (borrowed from r; do not modify). */
const json_t *ar_reader_manifest(const ar_reader *r);
/* dir/rel into buf; EV_ERR_INVALID when it does not fit. */
int ar_reader_path(const ar_reader *r, const char *rel, char *buf, size_t size);
/* Checks every file the manifest lists: present, of its size and SHA-256.
 * EV_ERR_IO (missing) or EV_ERR_CORRUPT (another size or digest), errstr
 * naming the first such file. */
int ar_reader_verify(const ar_reader *r, char *errstr, size_t errstr_size);

/* Called for each record of an Avro object container file; record is
 * owned by the iteration and valid during the call (fn may change it when
 * rewriting). A non-zero return stops the iteration and is returned. */
typedef int (*ar_record_cb)(void *arg, avro_value_t *record);

/* Calls fn for each record of the Avro object container file at path.
 * *records (may be NULL): records read. 0; fn's non-zero; EV_ERR_IO when
 * the file cannot be opened; EV_ERR_CORRUPT when it cannot be read to its
 * end ("PATH: after record N: ... (a truncated file?)"). */
int ar_each_record(const char *path, ar_record_cb fn, void *arg, int64_t *records, char *errstr,
                   size_t errstr_size);

/* Copies the Avro file from into to (same schema, created), letting fn
 * change each record first (a refit rewrites master_time_ns). fn returns 0
 * or a negative ev_err with its errstr filled. Errors as ar_each_record,
 * plus the writer's; a partial to is left for the caller to remove. */
typedef int (*ar_rewrite_cb)(void *arg, avro_value_t *record, char *errstr, size_t errstr_size);
int ar_rewrite_records(const char *from, const char *to, ar_rewrite_cb fn, void *arg,
                       int64_t *records, char *errstr, size_t errstr_size);

/* Called for each record of events.avro or clock.avro as an event: ev (and
 * everything it points to) is valid during the call only. A record that
 * does not decode comes as ev NULL and error naming the file and record
 * ("DIR/events.avro: record 3: field value: ..."); the iteration goes on.
 * A non-zero return stops it and is returned. */
typedef int (*ar_event_cb)(void *arg, const ev_event *ev, const char *error);

/* The records of events.avro as the log held them (ev->msg NULL; id,
 * source and time as on the log). EV_ERR_CORRUPT when the manifest lists
 * no events.avro (an archive written before msrs kept it) or it does not
 * read to its end; EV_ERR_IO when it cannot be opened. */
int ar_reader_events(ar_reader *r, ar_event_cb fn, void *arg, char *errstr, size_t errstr_size);

/* The ClockOffsetMeasured records of every DEVICE/clock.avro the manifest
 * lists, each as an event with id "clock/DEVICE/T1", time t4 and source
 * "archive" (what the log held is not kept). A file that does not read
 * does not stop the others: the first error is returned. */
int ar_reader_clock(ar_reader *r, ar_event_cb fn, void *arg, char *errstr, size_t errstr_size);

/* Writes manifest as dir/manifest.json the way every archive has it
 * (indented, keys sorted). 0 or EV_ERR_IO. */
int ar_manifest_save(const char *dir, const json_t *manifest, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* MSRS_ARCHIVE_H */
