/* msrs_device.h — the msrs device SDK (prefix md_): a device's side of the
 * WebSocket protocol of docs/protocol.md, over libwebsockets.
 *
 * Conventions (as libevents' ev.h):
 * - Opaque handles with _new/_destroy (md_client) or _add/_remove
 *   (md_device); _destroy(NULL) and _remove(NULL) are no-ops.
 * - Functions return 0 or a negative md_err; where a person needs the
 *   detail they fill errstr. The SDK never prints and never exits;
 *   md_client_new sets libwebsockets' own log to errors and warnings
 *   (lws_set_log_level after it for more).
 * - Threads: one thread owns an md_client — it calls md_client_service and
 *   every function not marked "any thread"; every callback runs on it but
 *   link_delay_ns (see there).
 *   Functions marked "any thread" may be called from other threads
 *   concurrently (a capture or encoder thread sending packets).
 * - Strings passed in are copied; pointers handed to callbacks live for the
 *   call only.
 *
 * What it does for the device: connects (ws:// or wss://, the agent's
 * certificate checked against ca_file), answers the agent's challenge with
 * the credential's proof (never the credential), says hello with the
 * streams, answers every clock probe from the device's clock (t2 at the
 * instant the probe reached the host — the kernel's receive stamp when the
 * program links kernel stamps, see md_client_config — t3 just before the
 * answer is written, ahead of queued data; with a link, in order), tags
 * data with the session whose [start_at, stop_at) holds its device time,
 * acknowledges start/stop,
 * reports flow (slow_down/resume), follows a placement redirect, and
 * reconnects after a close (0.5-1 s, then up to 4-8 s apart, drawn at
 * random so a fleet does not return at once) resuming the agent's sequence
 * numbers. What is queued is bounded (max_queued_bytes): a full queue
 * refuses a packet (MD_ERR_FULL), so the caller drops and counts it before
 * spending work on it. A device's sends reuse the buffers of messages
 * already written: in a steady stream the samples path allocates nothing.
 *
 * A simulator (msrs-devsim) puts a network between its devices and their
 * sockets with md_device_config.link_delay_ns: the SDK holds each message
 * for the delay it names, in order, and stamps probes at the simulated
 * arrival and departure. The protocol itself is the same code either way. */
#ifndef MSRS_DEVICE_H
#define MSRS_DEVICE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum md_err {
    MD_OK = 0,
    MD_ERR_INVALID = -1,        /* fatal for the call: an argument or configuration is wrong */
    MD_ERR_NOMEM = -2,          /* retriable: out of memory now */
    MD_ERR_FULL = -3,           /* retriable: the send queue is at max_queued_bytes */
    MD_ERR_NOT_REGISTERED = -4, /* retriable: not (yet) registered with an agent */
    MD_ERR_TRANSPORT = -5       /* fatal: libwebsockets could not be set up or its loop failed */
} md_err;

#define MD_MAX_STREAMS 8
#define MD_ID_MAX      64 /* ids are 1-63 of [A-Za-z0-9._:-] */

typedef struct md_client md_client;
typedef struct md_device md_device;

typedef struct md_stream {
    const char *stream_id; /* 1-63 of [A-Za-z0-9._:-] */
    const char *type;      /* "rgb_video", "gsr", ... */
    double rate_hz;        /* 0: irregular */
    int channels;
    const char *format; /* "h264", "mjpeg", "float64", ... */
} md_stream;

typedef enum md_event_kind {
    MD_EV_REGISTERED, /* the agent accepted the hello (md_device_resume_seq has its resume) */
    MD_EV_REFUSED,    /* the agent refused the hello: message says why, redirect where it goes */
    MD_EV_START,      /* session_id starts at at_ns (device clock) */
    MD_EV_STOP,       /* session_id stops at at_ns (device clock) */
    MD_EV_FLOW,       /* slow = 1: slow_down (send less), 0: resume */
    MD_EV_ERROR,      /* the agent answered a message with an error: code, message */
    MD_EV_CLOSED      /* the connection closed; it reconnects by itself */
} md_event_kind;

typedef struct md_event {
    md_event_kind kind;
    const char *session_id; /* START, STOP */
    int64_t at_ns;          /* START, STOP */
    int slow;               /* FLOW */
    const char *code;       /* REFUSED (the reason's code, e.g. "unauthorized"), ERROR */
    const char *message;    /* REFUSED, ERROR */
    const char *redirect;   /* REFUSED: the node the supervisor placed it on (it reconnects
                               there), or NULL: it tries the same agent again later */
} md_event;

typedef struct md_client_config {
    const char *url;     /* wss://HOST:PORT/v1/devices, or ws:// where the agent allows it */
    const char *ca_file; /* PEM CA for the agent's certificate; NULL: the system's */
    /* A probe's t2 is the kernel's receive stamp of the segment that
     * brought it when the program links common/rxstamp.c (CMake object
     * library rxstamp: it defines recv and read for the process, which a
     * library must not do on its own); otherwise, or with stamp_on_read,
     * the instant the SDK read it. On a busy loop the two differ by the
     * loop's wait, which lands on one side of the probe only. */
    int stamp_on_read;
    /* descriptors the loop may hold; 0: the process's open-file limit.
     * Below that limit libwebsockets finds each socket's connection by a
     * linear search of this many slots: a client of hundreds of
     * connections raises the limit (setrlimit) and leaves this 0. */
    unsigned max_connections;
} md_client_config;

typedef struct md_device_config {
    const char *device_id;
    const char *name;       /* NULL: the id */
    const char *version;    /* NULL: "" */
    const char *credential; /* "G.HEX" (msrs devices credential ID); NULL: no challenge expected */
    const char *const *capabilities;
    size_t capability_count;
    const md_stream *streams;
    size_t stream_count; /* 1..MD_MAX_STREAMS */
    /* The device's clock, ns, at the host's CLOCK_REALTIME instant
     * realtime_ns: the SDK asks for now (the envelopes' ts, a probe's t3)
     * and for other instants: a probe's t2 at its receive stamp, just past;
     * with a link its simulated arrival (maybe just ahead) and the answer's
     * simulated departure. A device whose clock is
     * another (CLOCK_MONOTONIC, a sensor's) returns its reading now less
     * (now - realtime_ns). Called on the client's thread. NULL: CLOCK_REALTIME. */
    int64_t (*clock_ns)(void *arg, int64_t realtime_ns);
    /* Every event, on the client's thread. May be NULL. */
    void (*on_event)(void *arg, md_device *dev, const md_event *ev);
    void *arg;
    size_t max_queued_bytes; /* 0: 16 MiB */
    /* A simulated network (msrs-devsim, tests): the one-way delay, ns, of
     * the next message (up = 1: device to agent; 0: a probe reaching the
     * device). Each message the device sends is held that long after it
     * was queued, in order as on TCP; a probe is held the downlink's delay
     * (its t2 the simulated arrival) and its answer, made then, the
     * uplink's, behind what was queued before (t3: the answer's simulated
     * departure). Other messages of the agent act at once. The times are
     * CLOCK_REALTIME: a step of the wall clock moves them (a simulation's
     * matter). Called by the thread that queues (up, under the device's
     * lock: it must not call the SDK) and the client's (down). NULL: no
     * link. */
    int64_t (*link_delay_ns)(void *arg, int up);
} md_device_config;

/* One media packet: the body is the encoded packet as is (keyframes carry
 * the codec's headers in band, docs/protocol.md). */
typedef struct md_media {
    const char *stream_id;
    const char *codec; /* "h264", "mjpeg", ... */
    int64_t pts_ns;
    int keyframe;
    int64_t seq;            /* the frame's number: a skipped number is a gap the agent counts */
    int64_t device_time_ns; /* when the frame was taken, on the device's clock */
    int width, height;
    /* Sent in front of the body, when the encoder gives a keyframe's
     * headers apart (MPEG-4's VOL in extradata); NULL, 0: none. */
    const void *prefix;
    size_t prefix_len;
} md_media;

/* A client: one libwebsockets context for any number of devices. NULL with
 * errstr on a bad url or when libwebsockets cannot start. */
md_client *md_client_new(const md_client_config *cfg, char *errstr, size_t errstr_size);
/* Runs the network for at most timeout_ms: connects, reads, writes, runs
 * callbacks, reconnects. 0, or MD_ERR_TRANSPORT when the loop failed. */
int md_client_service(md_client *c, int timeout_ms);
/* Any thread: makes a md_client_service that is waiting return soon (the
 * queues are looked at again). */
void md_client_wake(md_client *c);
/* Closes every device and frees the client. */
void md_client_destroy(md_client *c);
/* The client's libwebsockets context, for a program that serves something
 * of its own on the same loop (a vhost of its own, as msrs-capture's
 * camera proxy; one context per process keeps OpenSSL's set-up single).
 * Owned by the client; its thread only. */
struct lws_context;
struct lws_context *md_client_lws_context(md_client *c);

/* Adds a device and starts connecting it. The configuration is copied.
 * NULL with errstr when it is invalid (an id, a stream, a credential not
 * of the form "G.HEX") or out of memory. */
md_device *md_device_add(md_client *c, const md_device_config *cfg, char *errstr,
                         size_t errstr_size);
/* Closes the device's connection now, as a lost network would; it
 * reconnects after the usual wait (MD_EV_CLOSED, then MD_EV_REGISTERED).
 * Nothing when it is not connected. The client's thread. */
void md_device_reconnect(md_device *d);
/* Closes the device's connection and frees it; nothing may use it after
 * (other threads stopped first). The client's thread, never from inside
 * on_event. */
void md_device_remove(md_device *d);

/* Any thread: queues one media packet (copied). MD_ERR_NOT_REGISTERED when
 * the device is not registered now, MD_ERR_FULL when the queue holds
 * max_queued_bytes: the packet is not sent and the caller counts it. */
int md_device_send_media(md_device *d, const md_media *m, const void *data, size_t len);
/* Any thread: one batch of n samples of stream_id (1..65536), numbered
 * from seq: t[i] the device time of sample i, values[i * channels + c]
 * its channel c (copied; sent as a binary samples frame). Its session is
 * the one that holds t[0] (a caller that wants a batch split at a start
 * or stop instant sends two). Errors as md_device_send_media. */
int md_device_send_samples(md_device *d, const char *stream_id, int64_t seq, const int64_t *t,
                           const double *values, size_t n, int channels);
/* Any thread: a status message (battery 0..1 or < 0 for none). */
int md_device_send_status(md_device *d, double battery, int recording);
/* Any thread: a sync mark (an event a person or a stimulus program names,
 * e.g. "stimulus onset") at device time t: mark_id 1-63 of
 * [A-Za-z0-9._:-], label free text (may be NULL), tagged with the session
 * that holds t. The agent makes a SyncMark of it (device and master time).
 * Errors as md_device_send_media, and MD_ERR_INVALID for a bad mark_id or
 * when no session holds t (a mark belongs to a session). */
int md_device_send_sync_mark(md_device *d, const char *mark_id, const char *label, int64_t t);
/* Any thread: the session data taken at device time t belongs to, copied
 * to out (size >= MD_ID_MAX); 1 when there is one, 0 (out "") otherwise. */
int md_device_session_at(md_device *d, int64_t t, char *out, size_t size);
/* Any thread: the samples (media: packets) of stream_id the SDK accepted
 * and then lost because the connection closed before they were written —
 * since the device was added. Their numbers are a gap the agent counts;
 * the caller counts them as lost too. */
int64_t md_device_discarded(md_device *d, const char *stream_id);
/* Any thread: the sequence number the agent expects next on stream (its
 * resume at the last registration), or -1 when it named none. */
int64_t md_device_resume_seq(md_device *d, const char *stream_id);
/* Any thread: 1 while registered, 0 otherwise. */
int md_device_registered(md_device *d);
/* Any thread: 1 while the agent asked for less (slow_down), 0 otherwise. */
int md_device_slowed(md_device *d);
/* Any thread: bytes queued and not yet written. */
size_t md_device_queued_bytes(md_device *d);

/* The proof of a credential "G.HEX" over the agent's nonce:
 * hex(HMAC-SHA256(bytes of HEX, nonce ":" device_id)), 64 digits and a NUL
 * in out. 0, or MD_ERR_INVALID when the credential is not of that form. */
int md_auth_proof(const char *credential, const char *nonce, const char *device_id, char out[65]);

#ifdef __cplusplus
}
#endif
#endif
