/* capture.h — msrs-capture internals (prefix cp_): USB cameras through
 * libv4l2 (v4l2.c), their frames encoded with libavcodec or passed through
 * (encode.c), the latest JPEG of each for the camera proxy (preview.c), and
 * main.c, which finds cameras and makes each a device of its node through
 * the device SDK (msrs_device.h).
 * Threads: main.c's loop owns the SDK client, its context (the camera
 * proxy is a vhost of it) and the camera list; each camera has one thread
 * (DQBUF, encode, send).
 * What a camera thread shares is under its camera's mutex. */
#ifndef MSRS_CAPTURE_H
#define MSRS_CAPTURE_H
#include "ev.h"
#include "msrs_device.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CP_STREAM "video" /* a camera's one stream */

/* CLOCK_MONOTONIC in ns: the clock V4L2 stamps buffers with, and so the
 * cameras' device clock. */
static inline int64_t cp_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A fourcc as text: "YUYV". */
static inline void cp_fourcc_text(uint32_t f, char out[5])
{
    out[0] = (char)(f & 0xff), out[1] = (char)((f >> 8) & 0xff);
    out[2] = (char)((f >> 16) & 0xff), out[3] = (char)(f >> 24), out[4] = '\0';
}

/* ------------------------------------------------------------ v4l2.c */

typedef struct cp_v4l2 cp_v4l2;

typedef struct cp_frame {
    const unsigned char *data; /* valid until cp_v4l2_release */
    size_t len;
    int64_t time_ns;  /* CLOCK_MONOTONIC: the driver's stamp, or dequeue time */
    int64_t sequence; /* the driver's frame counter */
    int driver_stamp; /* 1: the driver's monotonic stamp; 0: taken at dequeue */
} cp_frame;

typedef struct cp_format {
    uint32_t pixfmt; /* V4L2_PIX_FMT_MJPEG, _YUYV or _YUV420 */
    int width, height, fps;
    int bytesperline; /* of a raw format's first plane (the driver may pad lines) */
    int emulated;     /* libv4l2 converts to it from the camera's own format */
    char native[64];  /* what the camera offers, e.g. "YUYV,MJPG" */
} cp_format;

/* Opens path with libv4l2 and negotiates a format (prefer: "auto" —
 * MJPEG, then YUYV, then YU12 through libv4l2's conversion — or "mjpeg",
 * "yuyv", "yuv420"), the size and rate asked, and mmap streaming. NULL
 * with errstr naming the path and what was wrong. card and bus get
 * QUERYCAP's names. */
cp_v4l2 *cp_v4l2_open(const char *path, const char *prefer, int width, int height, int fps,
                      cp_format *fmt, char *card, size_t card_size, char *bus, size_t bus_size,
                      char *errstr, size_t errstr_size);
/* Waits up to timeout_ms for a frame. 1 with *f, 0 none yet, -1 the camera
 * is gone or failed (errstr). */
int cp_v4l2_next(cp_v4l2 *v, int timeout_ms, cp_frame *f, char *errstr, size_t errstr_size);
/* Gives the frame's buffer back to the driver (the camera's thread). */
void cp_v4l2_release(cp_v4l2 *v);
/* Stops streaming, unmaps and closes; NULL is a no-op. */
void cp_v4l2_close(cp_v4l2 *v);

/* ---------------------------------------------------------- encode.c */

typedef struct cp_encoder cp_encoder;

typedef struct cp_encode_params {
    const char *preset;  /* libx264 preset: "ultrafast" */
    const char *tune;    /* "zerolatency" */
    int crf;             /* 0: bit rate instead */
    int64_t bitrate;     /* bits/s when crf = 0 */
    int64_t keyframe_ms; /* a keyframe this often (as frames of the camera's rate) */
    int threads;
} cp_encode_params;

typedef struct cp_packet {
    const unsigned char *data;
    size_t len;
    int keyframe;
    int64_t seq, time_ns; /* of the frame it encodes (an encoder may hold frames) */
} cp_packet;

/* An encoder for frames of fmt: H.264 (libx264) for raw formats, MJPEG
 * passed through. NULL with errstr. */
cp_encoder *cp_encoder_new(const cp_format *fmt, const cp_encode_params *p, char *errstr,
                           size_t errstr_size);
/* "h264" or "mjpeg" */
const char *cp_encoder_codec(const cp_encoder *e);
/* Encodes (or passes) one frame numbered seq; force_key: make it a
 * keyframe. 1 with *out (valid until the next call; its seq and time are
 * the encoded frame's), 0 no packet (the encoder holds it), -1 failed
 * (errstr). */
int cp_encoder_put(cp_encoder *e, const cp_frame *f, int64_t seq, int force_key, cp_packet *out,
                   char *errstr, size_t errstr_size);
/* A JPEG of the frame, at most max_width wide, into *jpeg (malloc'd, the
 * caller frees). 0 or -1. */
int cp_encoder_preview(cp_encoder *e, const cp_frame *f, int max_width, unsigned char **jpeg,
                       size_t *len);
/* Frees it; NULL is a no-op. */
void cp_encoder_destroy(cp_encoder *e);

/* ---------------------------------------------------------- camera.c */

/* One camera: main.c fills it and starts its thread (cp_camera_run); the
 * thread dequeues, numbers, encodes and sends. Fields marked (mu) are
 * shared with the thread and the camera proxy; the rest are the main
 * thread's, or set before the thread starts and read-only while it runs. */
typedef struct cp_camera {
    char device_id[MD_ID_MAX], path[256], card[64], bus[64], codec[8]; /* (mu) */
    cp_format fmt;                                                     /* (mu) */
    int64_t stall_ms;
    size_t max_queued;
    int preview_fps, preview_width;
    cp_v4l2 *v;
    cp_encoder *enc;
    md_device *dev;
    pthread_t thread;
    int running; /* a thread runs (main thread only) */
    int stop;    /* main -> thread (atomic) */
    int gone;    /* thread -> main (atomic, release): the camera failed, why says how */
    char why[512];
    pthread_mutex_t mu;
    int64_t next_seq;     /* (mu) the next frame's number: kept while unplugged */
    int64_t last_time_ns; /* (mu) the last frame's time; 0 none yet */
    int64_t frames, sent, lost, dropped_queue, dropped_slow, dropped_away, stalls; /* (mu) */
    int stalled;                                                                   /* (mu) */
    unsigned char *jpeg; /* (mu) the latest preview */
    size_t jpeg_len;     /* (mu) */
    int64_t jpeg_at_ns;
    int warned_stamp;
} cp_camera;

/* The SDK's callbacks for a camera's device (arg: the camera), on the
 * client's thread: the device clock (CLOCK_MONOTONIC) and the events. */
int64_t cp_camera_clock(void *arg, int64_t realtime_ns);
void cp_camera_on_event(void *arg, md_device *dev, const md_event *ev);
/* Starts k's thread (k->v, k->enc and k->dev set). 0 or -1. */
int cp_camera_run(cp_camera *k);
/* 1 once the thread has ended because the camera failed (k->why). */
int cp_camera_gone(cp_camera *k);
/* Stops the thread, removes the device and closes the camera (main
 * thread); the counts and the frame numbering stay. */
void cp_camera_stop(cp_camera *k);

/* --------------------------------------------------------- preview.c */

typedef struct cp_preview cp_preview;

/* The camera proxy: GET /v1/cameras (JSON: each camera's id, state,
 * counts) and GET /v1/cameras/ID.jpg (its latest JPEG), over TLS unless
 * tls.plain, with a bearer token of any role unless auth.required =
 * false: a vhost of ctx (the SDK client's context), served by the thread
 * that services it. list() returns a JSON text (malloc'd); jpeg() copies a
 * camera's latest JPEG (malloc'd) or returns -1; both on that thread. */
typedef struct cp_preview_source {
    char *(*list)(void *arg);
    int (*jpeg)(void *arg, const char *device_id, unsigned char **data, size_t *len);
    void *arg;
} cp_preview_source;

/* Starts the proxy on listen ("HOST:PORT") with conf's tls.* and auth.*;
 * src is borrowed until cp_preview_stop. NULL with errstr ("config ..."
 * for a configuration error). */
cp_preview *cp_preview_start(struct lws_context *ctx, const ev_conf *conf, const char *listen,
                             const cp_preview_source *src, char *errstr, size_t errstr_size);
/* Closes its listener and connections and frees it (before the context is
 * destroyed); NULL is a no-op. */
void cp_preview_stop(cp_preview *p);

#endif
