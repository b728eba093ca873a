/* writer.h — the ar_writer's insides, shared by writer.c (records as they
 * come) and finish.c (the manifest and the rename). Not public. */
#ifndef MSRS_ARCHIVE_WRITER_H
#define MSRS_ARCHIVE_WRITER_H
#include "internal.h"

#include <stdio.h>

enum { AR__SAMPLES, AR__MEDIA };

/* video.c: a video stream as Matroska at master times. */
typedef struct ar__mkv ar__mkv;
/* 1 when codec ("h264", "libx264", "mpeg4", "mjpeg", "hevc") has a
 * Matroska mapping here. */
int ar__mkv_codec_known(const char *codec);
/* Opens path at the stream's first keyframe (its headers from key). NULL
 * with *code (an EV_ERR_ code) and errstr. */
ar__mkv *ar__mkv_open(const char *path, const char *codec, int width, int height, const void *key,
                      size_t len, int *code, char *errstr, size_t errstr_size);
/* One packet at master_ns. 0 or an EV_ERR_ code (errstr). */
int ar__mkv_write(ar__mkv *m, const void *data, size_t len, int64_t master_ns, int keyframe,
                  char *errstr, size_t errstr_size);
/* Writes the index and closes; NULL is a no-op. 0 or -1. */
int ar__mkv_close(ar__mkv *m);

typedef struct ar__stream {
    char device_id[128], stream_id[128];
    char base[260]; /* DEVICE/STREAM as folder and file names: its files' names */
    int kind;
    avro_file_writer_t ocf;    /* DEVICE/STREAM.avro or .frames.avro */
    FILE *es;                  /* the video's elementary stream */
    int64_t es_unsynced_bytes; /* written since its last ar__writeback */
    int64_t es_started_to;     /* bytes that ar__writeback started writing */
    ar__mkv *mkv;              /* the video as Matroska, from its first keyframe */
    int seen_keyframe, mkv_tried;
    int64_t next_seq, samples, bytes, gaps, duplicates, before_keyframe;
    int64_t after_stop_samples, after_stop_bytes; /* left out: first master time at or after
                                                     the stop instant */
    int64_t first_master, last_master;
    uint32_t xdf_id;
    int channels;
    double first_t, last_t;
    int64_t xdf_count;
    char codec[32];
} ar__stream;

struct ar_writer {
    char id[128];
    char root[1024];
    char staging[1200];
    json_t *requested; /* the CollectionRequested record, or NULL */
    json_t *marks;     /* the SyncMark records */
    json_t *files;     /* every file written, relative to staging */
    ar__stream **streams;
    size_t stream_count;
    ar_xdf *xdf;
    char xdf_name[272];
    uint32_t next_xdf_id;
    double *xdf_t, *xdf_x; /* a batch's times and values for the XDF, reused */
    size_t xdf_t_cap, xdf_x_cap;
    int failed;         /* a write failed: the manifest says complete: false */
    int matroska;       /* video also as Matroska (ar_writer_set_matroska) */
    int64_t stop_at_ns; /* the session's stop instant, INT64_MAX until known */
    ev_codec *codec;
    avro_schema_t event_schema;
    avro_value_iface_t *event_iface;
    avro_file_writer_t events; /* events.avro */
    const ev_schema *requested_schema, *mark_schema;
};

const char *ar__jstr(const json_t *o, const char *k);
int64_t ar__jint(const json_t *o, const char *k);
/* The declared stream info of device's state {type, rate_hz, ...}, or NULL. */
const json_t *ar__stream_info(const json_t *device, const char *stream);
/* Appends a framed record to events.avro. */
int ar__writer_append_event(ar_writer *w, const char *topic, const char *key, const ar__frame *f,
                            char *errstr, size_t errstr_size);
/* path = staging/rel, its folder made; rel is listed in the manifest. */
void ar__writer_file(ar_writer *w, char *path, size_t size, const char *rel);
/* Closes every open file (failures set w->failed). */
void ar__writer_close_files(ar_writer *w);

#endif
