/* msrs-devsim — N simulated devices in one process, each a real WebSocket
 * client of the agent's device endpoint with its own clock behind a
 * simulated network.
 *
 * Clock of device i: device(t) = t + offset_i + drift_i * (t - t0) + noise,
 * where t is this machine's clock (which is the agent's), offset and drift
 * are drawn at start and noise is gaussian timestamp jitter. The true
 * offsets go to --truth FILE (one JSON line per device) so a benchmark can
 * compare the agent's estimates with them.
 *
 * Network: every message waits a one-way delay before it "arrives" at the
 * device or leaves it: uniform in [min, max] ms, plus an extra uplink delay
 * (asymmetry), plus rare spikes; order per connection is kept (TCP). A
 * device may lose its connection (--loss-per-min) and reconnects, resuming
 * its sequence numbers (samples made while away are lost: gaps).
 *
 * Streams: GSR (1 channel, 128 Hz, batches of 16) and IMU (6 channels,
 * 100 Hz, batches of 10), with device timestamps; with --video WxH@FPS a
 * synthetic moving picture encoded with libavcodec (--video-codec, default
 * mpeg4; h264 where libavcodec has libx264) sent as binary media frames. */
#include "cli.h"
#include "msrs_device.h"
#include "rxstamp.h"
#include "security.h"

#include <endian.h>
#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libwebsockets.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS 1000000LL

typedef struct ds_profile {
    double delay_min_ms, delay_max_ms, asym_ms, spike_prob, spike_ms, jitter_us;
} ds_profile;

typedef struct ds_msg {
    struct ds_msg *next;
    size_t len;
    int binary;
    /* a time_resp: its text is made when it is written (sim.kernel_stamps),
     * with t3 up_ns before that instant; len is then the buffer's room */
    int probe;
    int64_t t1, t2, up_ns;
    unsigned char buf[];
} ds_msg;

typedef struct ds_stream {
    const char *id, *type;
    int channels, batch;
    double rate_hz;
    int64_t seq, next_ns;
} ds_stream;

typedef struct ds_device {
    int index;
    char id[64];
    struct lws *wsi;
    int rx_fd; /* kernel receive stamps of this socket give arrivals; -1: none */
    int connected, registered, closing;
    int64_t offset_ns, t0_ns;
    double drift; /* ns per ns */
    ds_stream streams[2];
    ds_msg *out_head, *out_tail;
    int64_t last_down_ns, last_up_ns; /* FIFO per direction: due times strictly increase */
    int64_t reconnect_at_ns, drop_at_ns;
    /* a full node named another (register.redirect): connect there instead */
    char host[128], path[128];
    int port, tls;
    char credential[96]; /* "G.HEX" (security.h), derived from auth.key_file */
    unsigned char rx[65536];
    size_t rx_len;
    int64_t probes, errors, reconnects, samples_sent;
    /* video */
    AVCodecContext *enc;
    AVFrame *frame;
    AVPacket *pkt;
    int64_t frame_index, next_frame_ns, video_seq, packets_sent;
    int need_keyframe; /* after (re)registering: the next frame is a keyframe */
    /* flow: while the agent says slow_down, video is one keyframe a second */
    int slowed, await_key;
    /* the session it records: data stamped in [rec_start, rec_stop) (device clock) carries it */
    char session[64];
    int64_t rec_start, rec_stop;
    int frame_in_session;
} ds_device;

/* Scheduled actions, in a binary heap by due time. */
enum { EV_DELIVER_PROBE, EV_SEND };
typedef struct ds_event {
    int64_t due_ns;
    int kind;
    int device;
    int64_t t1;  /* EV_DELIVER_PROBE */
    ds_msg *msg; /* EV_SEND */
} ds_event;

typedef struct ds_packet {
    uint8_t *data;
    size_t size;
    int key;
} ds_packet;

typedef struct ds_sim {
    struct lws_context *ctx;
    lws_sorted_usec_list_t tick; /* due network events: scheduled at the heap's top */
    lws_sorted_usec_list_t scan; /* samples, reconnects, losses: every 2 ms */
    int64_t last_scan_ns;
    char host[128], path[128];
    int port;
    ds_device *devs;
    int n;
    ds_profile net;
    double loss_per_min;
    ds_event *heap;
    size_t heap_len, heap_cap;
    uint64_t rng;
    int64_t started_ns, duration_ns;
    int64_t connected, errors_seen;
    int64_t slow_downs, resumes, frames_skipped; /* flow messages obeyed */
    int64_t moved;                               /* devices a full node sent elsewhere */
    int video_w, video_h, video_fps;
    const char *video_codec;
    json_t *stats; /* session -> device -> stream -> {samples, bytes}: what was sent */
    int64_t video_bitrate;
    int loop_n;         /* --video-loop */
    int binary_samples; /* --samples binary (default) | json */
    int no_samples;     /* --samples none: register, sync, status only */
    int kernel_stamps;  /* --stamps kernel (default) | loop */
    int tls;            /* --url wss://: TLS, verified against tls.ca */
    int auth;           /* auth.key_file: every device proves its credential */
    ds_packet *loop;
    uint8_t *loop_headers;
    size_t loop_headers_size;
    char loop_codec[32];
} ds_sim;

static ds_sim sim;

static void schedule_tick(void);

static int64_t now_ns(void)
{
    return ev_now_ns();
}

/* xorshift64*: reproducible with --seed */
static double urand(void)
{
    sim.rng ^= sim.rng >> 12;
    sim.rng ^= sim.rng << 25;
    sim.rng ^= sim.rng >> 27;
    return (double)((sim.rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static double gauss(void)
{
    double u = urand(), v = urand();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2 * M_PI * v);
}

static int64_t dev_clock(const ds_device *d, int64_t t)
{
    int64_t noise = sim.net.jitter_us > 0 ? (int64_t)(gauss() * sim.net.jitter_us * 1000.0) : 0;
    return t + d->offset_ns + (int64_t)(d->drift * (double)(t - d->t0_ns)) + noise;
}

static int64_t one_way_ns(int up)
{
    double ms = sim.net.delay_min_ms + urand() * (sim.net.delay_max_ms - sim.net.delay_min_ms);
    if (up)
        ms += sim.net.asym_ms;
    if (sim.net.spike_prob > 0 && urand() < sim.net.spike_prob)
        ms += sim.net.spike_ms * (0.5 + urand());
    return (int64_t)(ms * 1e6);
}

/* ------------------------------------------------------------------ heap */

static void heap_push(ds_event e)
{
    if (sim.heap_len == sim.heap_cap) {
        sim.heap_cap = sim.heap_cap ? sim.heap_cap * 2 : 1024;
        sim.heap = realloc(sim.heap, sim.heap_cap * sizeof(*sim.heap));
    }
    size_t i = sim.heap_len++;
    while (i > 0 && sim.heap[(i - 1) / 2].due_ns > e.due_ns) {
        sim.heap[i] = sim.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    sim.heap[i] = e;
}

static ds_event heap_pop(void)
{
    ds_event top = sim.heap[0], last = sim.heap[--sim.heap_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= sim.heap_len)
            break;
        if (c + 1 < sim.heap_len && sim.heap[c + 1].due_ns < sim.heap[c].due_ns)
            c++;
        if (sim.heap[c].due_ns >= last.due_ns)
            break;
        sim.heap[i] = sim.heap[c];
        i = c;
    }
    if (sim.heap_len)
        sim.heap[i] = last;
    return top;
}

/* --------------------------------------------------------------- sending */

static ds_msg *msg_new(const char *text, size_t len)
{
    ds_msg *m = malloc(sizeof(*m) + LWS_PRE + len);
    m->next = NULL;
    m->len = len;
    m->binary = 0;
    m->probe = 0;
    memcpy(m->buf + LWS_PRE, text, len);
    return m;
}

/* due, moved after the direction's last due time (*last_ns, updated): the
 * messages of one direction keep their order, as on TCP, and the heap does
 * not keep the order of equal times. */
static int64_t fifo_due(int64_t *last_ns, int64_t due)
{
    if (due <= *last_ns)
        due = *last_ns + 1;
    return *last_ns = due;
}

/* A time_resp's text in buf; t3 no earlier than t2 (each stamp has its own
 * noise; a device clock never runs back). Returns its length, or -1. */
static int probe_text(const ds_device *d, char *buf, size_t size, int64_t t1, int64_t t2,
                      int64_t t3)
{
    int n = snprintf(buf, size,
                     "{\"type\":\"time_resp\",\"device_id\":\"%s\",\"payload\":{\"t1\":%lld,"
                     "\"t2\":%lld,\"t3\":%lld}}",
                     d->id, (long long)t1, (long long)t2, (long long)(t3 < t2 ? t2 : t3));
    return n < 0 || (size_t)n >= size ? -1 : n;
}

/* Sends text after the uplink delay, in order. */
static void send_later(ds_device *d, const char *text, size_t len)
{
    int64_t due = fifo_due(&d->last_up_ns, now_ns() + one_way_ns(1));
    heap_push((ds_event){due, EV_SEND, d->index, 0, msg_new(text, len)});
}

static void send_json(ds_device *d, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    send_later(d, text, strlen(text));
    free(text);
    json_decref(j);
}

/* Queues a binary frame after the uplink delay, in order: 4-byte big-endian
 * header length, the JSON header, then the body in two parts (a, b). */
static int send_binary(ds_device *d, int64_t now, const char *hdr, size_t hl, const void *a,
                       size_t alen, const void *b, size_t blen)
{
    size_t len = 4 + hl + alen + blen;
    ds_msg *m = malloc(sizeof(*m) + LWS_PRE + len);
    if (!m)
        return -1;
    unsigned char *p = m->buf + LWS_PRE;
    m->next = NULL;
    m->len = len;
    m->binary = 1;
    m->probe = 0;
    p[0] = (unsigned char)(hl >> 24);
    p[1] = (unsigned char)(hl >> 16);
    p[2] = (unsigned char)(hl >> 8);
    p[3] = (unsigned char)hl;
    memcpy(p + 4, hdr, hl);
    if (alen)
        memcpy(p + 4 + hl, a, alen);
    if (blen)
        memcpy(p + 4 + hl + alen, b, blen);
    heap_push((ds_event){fifo_due(&d->last_up_ns, now + one_way_ns(1)), EV_SEND, d->index, 0, m});
    return 0;
}

/* nonce: the agent's challenge, when devices authenticate (NULL: none). */
static void send_hello(ds_device *d, const char *nonce)
{
    json_t *hello =
        json_pack("{s:s, s:s, s:I, s:s, s:{s:s, s:[s,s], s:[{s:s,s:s,s:f,s:i,s:s},"
                  "{s:s,s:s,s:f,s:i,s:s}], s:f, s:s}}",
                  "id", "hello", "type", "hello", "ts", (json_int_t)dev_clock(d, now_ns()),
                  "device_id", d->id, "payload", "name", d->id, "capabilities", "gsr", "imu",
                  "streams", "stream_id", "gsr", "type", "gsr", "rate_hz", 128.0, "channels", 1,
                  "format", "float64", "stream_id", "imu", "type", "imu", "rate_hz", 100.0,
                  "channels", 6, "format", "float64", "battery", 0.9, "version", "msrs-devsim");
    if (d->enc || sim.loop_n) {
        json_t *payload = json_object_get(hello, "payload");
        json_array_append_new(json_object_get(payload, "capabilities"), json_string("rgb_video"));
        json_array_append_new(json_object_get(payload, "streams"),
                              json_pack("{s:s, s:s, s:i, s:i, s:s}", "stream_id", "rgb", "type",
                                        "rgb_video", "rate_hz", sim.video_fps, "channels", 3,
                                        "format",
                                        sim.loop_n ? sim.loop_codec : d->enc->codec->name));
    }
    char proof[65];
    if (nonce && md_auth_proof(d->credential, nonce, d->id, proof) == MD_OK)
        json_object_set_new(json_object_get(hello, "payload"), "auth",
                            json_pack("{s:I, s:s}", "generation",
                                      (json_int_t)strtoll(d->credential, NULL, 10), "proof",
                                      proof));
    send_json(d, hello);
}

/* The session data stamped at device time t belongs to, or NULL. */
static const char *session_at(const ds_device *d, int64_t t)
{
    return d->session[0] && t >= d->rec_start && t < d->rec_stop ? d->session : NULL;
}

static void count_sent(const ds_device *d, const char *session, const char *stream, int64_t n,
                       int64_t bytes)
{
    json_t *o = sim.stats, *next;
    const char *path[3] = {session, d->id, stream};
    for (int i = 0; i < 3; i++, o = next)
        if (!(next = json_object_get(o, path[i])))
            json_object_set_new(o, path[i], next = json_object());
    json_object_set_new(o, "samples",
                        json_integer(json_integer_value(json_object_get(o, "samples")) + n));
    json_object_set_new(o, "bytes",
                        json_integer(json_integer_value(json_object_get(o, "bytes")) + bytes));
}

/* Sends samples [from, to) of a batch: one message, tagged with the session
 * they belong to. */
static double sample_value(const ds_stream *s, int i, int c)
{
    return sin((double)(s->seq + i) * 0.05 + c) + 0.001 * c;
}

static void send_part(ds_device *d, ds_stream *s, int64_t now, const int64_t *t, int from, int to,
                      const char *session)
{
    if (session)
        count_sent(d, session, s->id, to - from, (int64_t)(to - from) * s->channels * 8);
    if (sim.binary_samples) { /* little-endian int64 times, then float64 values, row-major */
        char hdr[256];
        uint64_t times[64], vals[64 * 8];
        int n = to - from, hl;
        for (int i = 0; i < n; i++) {
            times[i] = htole64((uint64_t)t[from + i]);
            for (int c = 0; c < s->channels; c++) {
                double x = sample_value(s, from + i, c);
                memcpy(&vals[i * s->channels + c], &x, 8);
                vals[i * s->channels + c] = htole64(vals[i * s->channels + c]);
            }
        }
        hl = snprintf(hdr, sizeof(hdr),
                      "{\"type\":\"samples\",\"stream_id\":\"%s\",\"seq\":%lld,\"n\":%d,"
                      "\"channels\":%d,\"session_id\":\"%s\"}",
                      s->id, (long long)(s->seq + from), n, s->channels, session ? session : "");
        send_binary(d, now, hdr, (size_t)hl, times, (size_t)n * 8, vals,
                    (size_t)(n * s->channels) * 8);
        return;
    }
    json_t *times = json_array(), *values = json_array();
    for (int i = from; i < to; i++) {
        json_array_append_new(times, json_integer(t[i]));
        json_t *row = json_array();
        for (int c = 0; c < s->channels; c++)
            json_array_append_new(row, json_real(sample_value(s, i, c)));
        json_array_append_new(values, row);
    }
    json_t *m = json_pack("{s:s, s:I, s:s, s:{s:s, s:I, s:o, s:o}}", "type", "samples", "ts",
                          (json_int_t)dev_clock(d, now), "device_id", d->id, "payload", "stream_id",
                          s->id, "seq", (json_int_t)(s->seq + from), "t", times, "values", values);
    if (session)
        json_object_set_new(m, "session_id", json_string(session));
    send_json(d, m);
}

/* A batch of samples of stream s, device timestamps from the device clock;
 * split where it crosses a session's start or stop. */
static void send_samples(ds_device *d, ds_stream *s, int64_t now)
{
    int64_t period = (int64_t)(1e9 / s->rate_hz), t[64];
    int n = s->batch < 64 ? s->batch : 64;
    for (int i = 0; i < n; i++)
        t[i] = dev_clock(d, s->next_ns + i * period);
    s->next_ns += n * period;
    if (d->registered) {
        int from = 0;
        for (int i = 1; i <= n; i++)
            if (i == n || session_at(d, t[i]) != session_at(d, t[from])) {
                send_part(d, s, now, t, from, i, session_at(d, t[from]));
                from = i;
            }
    }
    s->seq += n; /* while away, samples are lost: the agent sees a gap */
    d->samples_sent += d->registered ? n : 0;
}

/* ------------------------------------------------------------------ video */

static int video_open(ds_device *d)
{
    const AVCodec *codec = avcodec_find_encoder_by_name(sim.video_codec);
    if (!codec && strcmp(sim.video_codec, "h264") == 0)
        codec = avcodec_find_encoder_by_name("libx264");
    if (!codec)
        return -1;
    d->enc = avcodec_alloc_context3(codec);
    d->frame = av_frame_alloc();
    d->pkt = av_packet_alloc();
    if (!d->enc || !d->frame || !d->pkt)
        return -1;
    d->enc->width = sim.video_w;
    d->enc->height = sim.video_h;
    d->enc->time_base = (AVRational){1, sim.video_fps};
    d->enc->framerate = (AVRational){sim.video_fps, 1};
    d->enc->pix_fmt = AV_PIX_FMT_YUV420P;
    d->enc->gop_size = sim.video_fps; /* a keyframe a second */
    d->enc->max_b_frames = 0;         /* packets in capture order */
    d->enc->bit_rate = sim.video_bitrate ? sim.video_bitrate
                                         : (int64_t)sim.video_w * sim.video_h * sim.video_fps / 8;
    if (sim.video_bitrate) /* hold the rate: noise at a high rate would drift otherwise */
        d->enc->rc_max_rate = d->enc->rc_min_rate = sim.video_bitrate,
        d->enc->rc_buffer_size = (int)(sim.video_bitrate / sim.video_fps * 2);
    /* Every keyframe carries the codec headers (SPS/PPS, VOL), as the
     * protocol asks (Android: KEY_PREPEND_HEADER_TO_SYNC_FRAMES): a session
     * begins at any keyframe and its video must decode from there. */
    if (strstr(codec->name, "264")) {
        av_opt_set(d->enc->priv_data, "preset", "ultrafast", 0);
        av_opt_set(d->enc->priv_data, "tune", "zerolatency", 0); /* a packet per frame, at once */
        av_opt_set(d->enc->priv_data, "x264-params", "repeat-headers=1", 0);
    } else {
        d->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER; /* headers in extradata: prepended below */
    }
    if (avcodec_open2(d->enc, codec, NULL) < 0)
        return -1;
    d->frame->format = AV_PIX_FMT_YUV420P;
    d->frame->width = sim.video_w;
    d->frame->height = sim.video_h;
    return av_frame_get_buffer(d->frame, 0) < 0 ? -1 : 0;
}

static void video_close(ds_device *d)
{
    avcodec_free_context(&d->enc);
    av_frame_free(&d->frame);
    av_packet_free(&d->pkt);
}

/* Encodes the next frame (a gradient that moves, different per device) and
 * sends each packet as a binary frame: 4-byte length, JSON header, packet. */
/* Sends one encoded packet (headers, if given, in front of it) as a binary
 * media frame. */
static void send_packet(ds_device *d, int64_t now, const uint8_t *headers, size_t extra,
                        const uint8_t *data, size_t size, int keyframe, int64_t pts_ns,
                        int64_t frame_dev_ns, const char *codec)
{
    char hdr[512];
    const char *session = session_at(d, frame_dev_ns);
    int hl =
        snprintf(hdr, sizeof(hdr),
                 "{\"stream_id\":\"rgb\",\"codec\":\"%s\",\"pts\":%lld,\"keyframe\":%s,"
                 "\"seq\":%lld,\"ts\":%lld,\"width\":%d,\"height\":%d,\"session_id\":\"%s\"}",
                 codec, (long long)pts_ns, keyframe ? "true" : "false", (long long)d->video_seq++,
                 (long long)frame_dev_ns, sim.video_w, sim.video_h, session ? session : "");
    if (session)
        count_sent(d, session, "rgb", 1, (int64_t)(size + extra));
    if (send_binary(d, now, hdr, (size_t)hl, headers, extra, data, size) == 0)
        d->packets_sent++;
}

static void video_frame(ds_device *d, int64_t now)
{
    AVFrame *f = d->frame;
    int64_t i = d->frame_index;
    int64_t frame_dev_ns = dev_clock(d, d->next_frame_ns);
    d->frame_index++;
    d->next_frame_ns += 1000000000LL / sim.video_fps;
    if (!d->registered) { /* frames made while away are lost, like samples */
        d->video_seq++;
        return;
    }
    if (sim.loop_n) { /* --video-loop: the pre-encoded clip, again and again */
        ds_packet *k = &sim.loop[i % sim.loop_n];
        /* slowed: a frame a second, a keyframe; after resume, on from a keyframe */
        if ((d->slowed && i % sim.video_fps != 0) || ((d->slowed || d->await_key) && !k->key)) {
            sim.frames_skipped++;
            return;
        }
        d->await_key = 0;
        send_packet(d, now, sim.loop_headers, k->key ? sim.loop_headers_size : 0, k->data, k->size,
                    k->key, i * (1000000000LL / sim.video_fps), frame_dev_ns, sim.loop_codec);
        return;
    }
    if (d->slowed && i % sim.video_fps != 0) { /* slowed: a keyframe a second */
        sim.frames_skipped++;
        d->need_keyframe = 1;
        return;
    }
    if (av_frame_make_writable(f) < 0)
        return;
    for (int y = 0; y < f->height; y++)
        for (int x = 0; x < f->width; x++)
            f->data[0][y * f->linesize[0] + x] = (uint8_t)(x + y + i * 3 + d->index * 17);
    for (int y = 0; y < f->height / 2; y++)
        for (int x = 0; x < f->width / 2; x++) {
            f->data[1][y * f->linesize[1] + x] = (uint8_t)(128 + y + i * 2);
            f->data[2][y * f->linesize[2] + x] = (uint8_t)(64 + x + i * 5);
        }
    f->pts = i;
    int in_session = session_at(d, frame_dev_ns) != NULL;
    if (in_session && !d->frame_in_session)
        d->need_keyframe = 1; /* a session's video starts with a keyframe */
    d->frame_in_session = in_session;
    f->pict_type = d->need_keyframe ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
    d->need_keyframe = 0;
    if (avcodec_send_frame(d->enc, f) < 0)
        return;
    while (avcodec_receive_packet(d->enc, d->pkt) == 0) {
        int keyframe = (d->pkt->flags & AV_PKT_FLAG_KEY) != 0;
        size_t extra = keyframe && (d->enc->flags & AV_CODEC_FLAG_GLOBAL_HEADER)
                           ? (size_t)d->enc->extradata_size
                           : 0;
        send_packet(d, now, d->enc->extradata, extra, d->pkt->data, (size_t)d->pkt->size, keyframe,
                    av_rescale_q(d->pkt->pts, d->enc->time_base, (AVRational){1, 1000000000}),
                    frame_dev_ns, d->enc->codec->name);
        av_packet_unref(d->pkt);
    }
}

/* --video-loop N: N frames of noise (incompressible: packets as large as the
 * bit rate allows) encoded once, with a keyframe first; every device sends
 * them in a loop, so the fleet can reach rates no 2-core encoder could. */
static int video_loop_encode(void)
{
    ds_device tmp;
    memset(&tmp, 0, sizeof(tmp));
    if (video_open(&tmp) != 0)
        return -1;
    sim.loop = calloc((size_t)sim.loop_n, sizeof(*sim.loop));
    snprintf(sim.loop_codec, sizeof(sim.loop_codec), "%s", tmp.enc->codec->name);
    if (tmp.enc->extradata_size && (tmp.enc->flags & AV_CODEC_FLAG_GLOBAL_HEADER)) {
        sim.loop_headers = malloc((size_t)tmp.enc->extradata_size);
        memcpy(sim.loop_headers, tmp.enc->extradata, (size_t)tmp.enc->extradata_size);
        sim.loop_headers_size = (size_t)tmp.enc->extradata_size;
    }
    int got = 0;
    for (int i = 0; got < sim.loop_n && i < sim.loop_n * 4; i++) {
        AVFrame *f = tmp.frame;
        if (i < sim.loop_n) {
            av_frame_make_writable(f);
            for (int p = 0; p < 3; p++)
                for (int y = 0; y < f->height >> (p ? 1 : 0); y++)
                    for (int x = 0; x < f->width >> (p ? 1 : 0); x++)
                        f->data[p][y * f->linesize[p] + x] = (uint8_t)(urand() * 256);
            f->pts = i;
            f->pict_type = i == 0 ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
            avcodec_send_frame(tmp.enc, f);
        } else if (i == sim.loop_n) {
            avcodec_send_frame(tmp.enc, NULL); /* drain */
        }
        while (got < sim.loop_n && avcodec_receive_packet(tmp.enc, tmp.pkt) == 0) {
            ds_packet *k = &sim.loop[got++];
            k->data = malloc((size_t)tmp.pkt->size);
            memcpy(k->data, tmp.pkt->data, (size_t)tmp.pkt->size);
            k->size = (size_t)tmp.pkt->size;
            k->key = (tmp.pkt->flags & AV_PKT_FLAG_KEY) != 0;
            av_packet_unref(tmp.pkt);
        }
    }
    video_close(&tmp);
    sim.loop_n = got;
    return got ? 0 : -1;
}

static int parse_ws_url(const char *url, char *host, int *port, char *path, int *tls);

/* -------------------------------------------------------------- receiving */

/* arrival_ns: when the message reached this host (the kernel's stamp, or
 * when the loop read it) */
static void on_text(ds_device *d, const char *text, size_t len, int64_t arrival_ns)
{
    json_t *m = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(m, "type"));
    json_t *payload = json_object_get(m, "payload");
    if (!type) {
        json_decref(m);
        return;
    }
    if (strcmp(type, "time_req") == 0) {
        /* It arrives after the downlink delay; the device stamps it then. */
        int64_t due = fifo_due(&d->last_down_ns, arrival_ns + one_way_ns(0));
        heap_push((ds_event){due, EV_DELIVER_PROBE, d->index,
                             json_integer_value(json_object_get(payload, "t1")), NULL});
        schedule_tick();
    } else if (strcmp(type, "challenge") == 0) {
        const char *nonce = json_string_value(json_object_get(payload, "nonce"));
        send_hello(d, nonce ? nonce : "");
    } else if (strcmp(type, "register") == 0) {
        d->registered = json_is_true(json_object_get(payload, "accepted"));
        d->need_keyframe = 1;
        json_t *resume = json_object_get(payload, "resume");
        for (int i = 0; i < 2; i++) { /* rejoin: continue where the agent expects */
            json_t *r = json_object_get(resume, d->streams[i].id);
            if (json_is_integer(r) && json_integer_value(r) > d->streams[i].seq)
                d->streams[i].seq = json_integer_value(r);
        }
        const char *redirect = json_string_value(json_object_get(payload, "redirect"));
        if (!d->registered)
            fprintf(stderr, "msrs-devsim: %s refused: %s%s%s\n", d->id,
                    json_string_value(json_object_get(payload, "reason")),
                    redirect ? "; moving to " : "", redirect ? redirect : "");
        if (!d->registered) {
            /* Told where to go: reconnect there; otherwise try again later
             * (a full node may have room then). */
            if (redirect && parse_ws_url(redirect, d->host, &d->port, d->path, &d->tls) == 0)
                sim.moved++;
            d->closing = 1; /* closed on the next writable callback; reconnects after */
            lws_callback_on_writable(d->wsi);
        }
    } else if (strcmp(type, "flow") == 0) {
        /* The agent's log is behind: send less (video keyframes only) until
         * resume. Frames not captured are not gaps: the sequence goes on. */
        int slow =
            strcmp(json_string_value(json_object_get(payload, "state")) ?: "", "slow_down") == 0;
        if (slow && !d->slowed) {
            sim.slow_downs++;
            d->await_key = 1;
        }
        sim.resumes += !slow && d->slowed;
        d->slowed = slow;
        if (sim.slow_downs + sim.resumes <= 8)
            fprintf(stderr, "msrs-devsim: %s: flow %s at %.3f s\n", d->id,
                    slow ? "slow_down" : "resume", (double)(now_ns() - sim.started_ns) / 1e9);
    } else if (strcmp(type, "error") == 0) {
        d->errors++;
        sim.errors_seen++;
        if (d->errors <= 3)
            fprintf(stderr, "msrs-devsim: %s: error %s: %s\n", d->id,
                    json_string_value(json_object_get(payload, "code")),
                    json_string_value(json_object_get(payload, "message")));
    } else if (strcmp(type, "start") == 0 || strcmp(type, "stop") == 0) {
        const char *session = json_string_value(json_object_get(payload, "session_id"));
        if (type[2] == 'a' && session && strlen(session) < sizeof(d->session)) {
            if (strcmp(d->session, session) != 0) { /* a resend after a rejoin keeps the stop */
                snprintf(d->session, sizeof(d->session), "%s", session);
                d->rec_stop = INT64_MAX;
            }
            d->rec_start = json_integer_value(json_object_get(payload, "start_at"));
        } else if (type[2] == 'o' && session && strcmp(session, d->session) == 0) {
            d->rec_stop = json_integer_value(json_object_get(payload, "stop_at"));
        }
        send_json(d, json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "ack", "device_id", d->id,
                               "payload", "ref_id",
                               json_string_value(json_object_get(m, "id")) ?: "", "status", "ok"));
    }
    json_decref(m);
}

static void connect_device(ds_device *d);

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    ds_device *d = user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        d->connected = 1;
        d->rx_len = 0;
        d->rx_fd = -1;
        if (sim.kernel_stamps && rxstamp_enable(lws_get_socket_fd(wsi)) == 0)
            d->rx_fd = lws_get_socket_fd(wsi);
        sim.connected++;
        if (!sim.auth) /* otherwise hello answers the agent's challenge */
            send_hello(d, NULL);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (d->rx_len + len <= sizeof(d->rx)) {
            memcpy(d->rx + d->rx_len, in, len);
            d->rx_len += len;
        }
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            int64_t now = now_ns();
            on_text(d, (const char *)d->rx, d->rx_len,
                    d->rx_fd >= 0 ? rxstamp_arrival(d->rx_fd, now) : now);
            d->rx_len = 0;
        }
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        if (d->closing)
            return -1;
        ds_msg *m = d->out_head;
        if (!m)
            break;
        d->out_head = m->next;
        if (!d->out_head)
            d->out_tail = NULL;
        if (m->probe) { /* sent up_ns ago, as the network has held it since */
            int n = probe_text(d, (char *)m->buf + LWS_PRE, m->len, m->t1, m->t2,
                               dev_clock(d, now_ns() - m->up_ns));
            if (n < 0) { /* cannot happen: ids are < 64 characters */
                free(m);
                if (d->out_head)
                    lws_callback_on_writable(wsi);
                break;
            }
            m->len = (size_t)n;
        }
        int w =
            lws_write(wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        free(m);
        if (w < 0)
            return -1;
        if (d->out_head)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (d->connected)
            sim.connected--;
        d->connected = d->registered = d->closing = 0;
        d->wsi = NULL;
        while (d->out_head) {
            ds_msg *m = d->out_head;
            d->out_head = m->next;
            free(m);
        }
        d->out_tail = NULL;
        d->reconnect_at_ns = now_ns() + (int64_t)((200 + urand() * 800) * MS);
        d->reconnects++;
        break;
    default: break;
    }
    return 0;
}

static struct lws_protocols protocols[] = {{"msrs.v1", callback, 0, 65536, 0, NULL, 0},
                                           {NULL, NULL, 0, 0, 0, NULL, 0}};

static void connect_device(ds_device *d)
{
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof(i));
    i.context = sim.ctx;
    i.address = *d->host ? d->host : sim.host;
    i.port = *d->host ? d->port : sim.port;
    i.path = *d->host ? d->path : sim.path;
    i.host = i.address;
    i.origin = i.address;
    i.protocol = "msrs.v1";
    i.ssl_connection = (*d->host ? d->tls : sim.tls) ? LCCSCF_USE_SSL : 0;
    i.userdata = d;
    i.pwsi = &d->wsi;
    d->reconnect_at_ns = 0;
    if (!lws_client_connect_via_info(&i))
        d->reconnect_at_ns = now_ns() + 500 * MS;
}

/* --------------------------------------------------------------- the tick */

/* Runs every network event that is due, then sleeps until the next one:
 * the simulated delays are kept to the event loop's precision, not to a
 * fixed tick (a coarse tick would add asymmetric delay of its own). */
static void on_tick(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    while (sim.heap_len && sim.heap[0].due_ns <= now_ns()) {
        ds_event e = heap_pop();
        ds_device *d = &sim.devs[e.device];
        if (e.kind == EV_DELIVER_PROBE) {
            if (!d->connected)
                continue;
            /* t2 is the instant the probe arrives (the simulated network's),
             * not when this loop, busy with 1023 other devices, gets to it:
             * a phone stamps on its own */
            int64_t t2 = dev_clock(d, e.due_ns);
            d->probes++;
            if (sim.kernel_stamps) {
                /* t3 is stamped when the reply is written, as sent the
                 * uplink delay before: the time this loop takes to get to
                 * it is the device's processing time, which the four
                 * stamps cancel, not network delay */
                ds_msg *r = calloc(1, sizeof(*r) + LWS_PRE + 256);
                if (!r)
                    continue;
                int64_t now = now_ns(), due = fifo_due(&d->last_up_ns, now + one_way_ns(1));
                r->probe = 1;
                r->len = 256;
                r->t1 = e.t1;
                r->t2 = t2;
                r->up_ns = due - now;
                heap_push((ds_event){due, EV_SEND, d->index, 0, r});
            } else {
                char text[256];
                int len = probe_text(d, text, sizeof(text), e.t1, t2, dev_clock(d, now_ns()));
                if (len > 0)
                    send_later(d, text, (size_t)len);
            }
        } else if (e.kind == EV_SEND) {
            if (!d->connected || !d->wsi) {
                free(e.msg);
                continue;
            }
            if (d->out_tail)
                d->out_tail->next = e.msg;
            else
                d->out_head = e.msg;
            d->out_tail = e.msg;
            lws_callback_on_writable(d->wsi);
        }
    }
    schedule_tick();
}

static void schedule_tick(void)
{
    int64_t wait_us = 2000;
    if (sim.heap_len) {
        int64_t until = (sim.heap[0].due_ns - now_ns()) / 1000;
        wait_us = until < 0 ? 0 : until < wait_us ? until : wait_us;
    }
    lws_sul_schedule(sim.ctx, 0, &sim.tick, on_tick, wait_us);
}

static void on_scan(lws_sorted_usec_list_t *sul)
{
    int64_t now = now_ns();
    (void)sul;
    for (int i = 0; i < sim.n; i++) {
        ds_device *d = &sim.devs[i];
        for (int k = 0; k < 2 && !sim.no_samples; k++)
            /* a batch goes as soon as its last sample is taken */
            while (d->streams[k].next_ns +
                       (int64_t)((d->streams[k].batch - 1) * 1e9 / d->streams[k].rate_hz) <=
                   now)
                send_samples(d, &d->streams[k], now);
        while ((d->enc || sim.loop_n) && d->next_frame_ns <= now)
            video_frame(d, now);
        if (!d->wsi && d->reconnect_at_ns && now >= d->reconnect_at_ns)
            connect_device(d);
        if (d->connected && sim.loss_per_min > 0 && now >= d->drop_at_ns) {
            d->drop_at_ns = now + (int64_t)(-log(urand() + 1e-12) * 60e9 / sim.loss_per_min);
            if (d->drop_at_ns != now && d->wsi) {
                d->closing = 1; /* lose the connection */
                lws_callback_on_writable(d->wsi);
            }
        }
    }
    if (sim.duration_ns && now - sim.started_ns >= sim.duration_ns)
        cli_stop = 1;
    schedule_tick(); /* samples were queued: the tick must see them */
    lws_sul_schedule(sim.ctx, 0, &sim.scan, on_scan, 2000);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: msrs-devsim --url wss://HOST:PORT/v1/devices [options]\n"
            "(wss: the agent's certificate is verified against tls.ca; every device proves\n"
            "the credential auth.key_file's lab key gives its id; docs/security.md)\n"
            "Runs N simulated devices, each a WebSocket client with its own clock.\n\n"
            "  --devices N         number of devices (1-4096, default 4)\n"
            "  --prefix P          device ids are P1..PN (default sim-)\n"
            "  --profile NAME      network: lan (0.1-2 ms one-way), wifi (1-20 ms, spikes),\n"
            "                      none (no added delay); default lan\n"
            "  --delay-ms MIN:MAX  one-way delay, uniform (overrides the profile)\n"
            "  --asym-ms X         extra uplink delay (asymmetry)\n"
            "  --spike-prob P      probability of a delay spike per message\n"
            "  --spike-ms X        size of a spike\n"
            "  --jitter-us X       timestamp noise of device clocks (sd)\n"
            "  --offset-ms X       device clock offsets drawn in [-X, X] (default 500)\n"
            "  --drift-ppm X       device clock drifts drawn in [-X, X] (default 50)\n"
            "  --loss-per-min X    connection losses per device per minute (default 0)\n"
            "  --duration S        stop after S seconds (default: until SIGINT/SIGTERM)\n"
            "  --truth FILE        write each device's true clock (JSON lines)\n"
            "  --stats FILE        at exit, write what was sent per session, device and stream:\n"
            "                      {\"SESSION\": {\"DEVICE\": {\"STREAM\": {\"samples\", "
            "\"bytes\"}}}}\n"
            "  --seed N            random seed (default 1)\n"
            "  --video WxH@FPS     also stream synthetic video, e.g. 320x240@15\n"
            "  --video-codec NAME  libavcodec encoder (default mpeg4; h264 uses libx264)\n"
            "  --video-bitrate BPS encoder bit rate (default W*H*FPS/8)\n"
            "  --video-loop N      encode N frames of noise once and loop them on every device\n"
            "                      (for throughput benchmarks: no encoding at run time)\n"
            "  --samples FORMAT    binary (default: binary frames, little-endian) or json\n"
            "                      (text messages), see docs/protocol.md; none: no sample\n"
            "                      streams (control-plane and clock benchmarks)\n"
            "  --stamps WHERE      where a device stamps a probe: kernel (default: arrival is\n"
            "                      the socket's receive stamp plus the downlink delay, t3 is\n"
            "                      the moment of writing less the uplink delay, as a device\n"
            "                      with a CPU of its own) or loop (when this process's loop,\n"
            "                      shared by every simulated device, gets to them)\n"
            "Each option can also be set as the config key devsim.NAME (NAME: the option\n"
            "without '--', '-' written '_', e.g. devsim.drift_ppm = 100); the command line\n"
            "wins. devsim never opens a log: --log is accepted like every binary's and\n"
            "otherwise ignored (the devices talk to the agent at --url). Common "
            "options:\n" CLI_COMMON_HELP "exit: 0 ok, 1 could not run, 2 usage or configuration\n");
}

/* ws[s]://HOST:PORT[/PATH] into host[128], port, path[128] (default
 * /v1/devices) and tls (wss). 0, or -1 when url is not one. */
static int parse_ws_url(const char *url, char *host, int *port, char *path, int *tls)
{
    *tls = strncmp(url, "wss://", 6) == 0;
    if (!*tls && strncmp(url, "ws://", 5) != 0)
        return -1;
    path[0] = '\0';
    if (sscanf(url + (*tls ? 6 : 5), "%127[^:/]:%d%127s", host, port, path) < 2)
        return -1;
    if (!path[0])
        snprintf(path, 128, "/v1/devices");
    return 0;
}

/* The options below, set from the command line or from the config key
 * devsim.NAME (NAME: the long option with '-' written '_'). */
static struct {
    const char *url, *prefix, *truth, *stats, *profile, *delay;
    double offset_ms, drift_ppm, asym, spike_prob, spike_ms, jitter;
} opt_args = {
    "wss://127.0.0.1:8620/v1/devices", "sim-", NULL, NULL, "lan", NULL, 500, 50, -1, -1, -1, -1};

static const struct option ds_longopts[] = {CLI_COMMON_LONGOPTS,
                                            {"url", required_argument, NULL, 'u'},
                                            {"devices", required_argument, NULL, 'n'},
                                            {"prefix", required_argument, NULL, 'p'},
                                            {"profile", required_argument, NULL, 'P'},
                                            {"delay-ms", required_argument, NULL, 'd'},
                                            {"asym-ms", required_argument, NULL, 'a'},
                                            {"spike-prob", required_argument, NULL, 's'},
                                            {"spike-ms", required_argument, NULL, 'S'},
                                            {"jitter-us", required_argument, NULL, 'j'},
                                            {"offset-ms", required_argument, NULL, 'o'},
                                            {"drift-ppm", required_argument, NULL, 'r'},
                                            {"loss-per-min", required_argument, NULL, 'L'},
                                            {"duration", required_argument, NULL, 'D'},
                                            {"truth", required_argument, NULL, 't'},
                                            {"seed", required_argument, NULL, 'e'},
                                            {"video", required_argument, NULL, 'v'},
                                            {"video-codec", required_argument, NULL, 'C'},
                                            {"stats", required_argument, NULL, 'T'},
                                            {"video-bitrate", required_argument, NULL, 'B'},
                                            {"video-loop", required_argument, NULL, 'O'},
                                            {"samples", required_argument, NULL, 'F'},
                                            {"stamps", required_argument, NULL, 'K'},
                                            {NULL, 0, NULL, 0}};
/* The first of ds_longopts that is devsim's own (after the common four). */
#define DS_OWN_OPTS CLI_COMMON_LONGOPT_COUNT

/* Applies one of devsim's own options (opt: its ds_longopts val). 0, or
 * -1 after printing what was wrong. */
static int apply_opt(int opt, const char *arg)
{
    switch (opt) {
    case 'u': opt_args.url = arg; break;
    case 'n': sim.n = atoi(arg); break;
    case 'p': opt_args.prefix = arg; break;
    case 'P': opt_args.profile = arg; break;
    case 'd': opt_args.delay = arg; break;
    case 'a': opt_args.asym = atof(arg); break;
    case 's': opt_args.spike_prob = atof(arg); break;
    case 'S': opt_args.spike_ms = atof(arg); break;
    case 'j': opt_args.jitter = atof(arg); break;
    case 'o': opt_args.offset_ms = atof(arg); break;
    case 'r': opt_args.drift_ppm = atof(arg); break;
    case 'L': sim.loss_per_min = atof(arg); break;
    case 'D': sim.duration_ns = (int64_t)(atof(arg) * 1e9); break;
    case 't': opt_args.truth = arg; break;
    case 'T': opt_args.stats = arg; break;
    case 'B': sim.video_bitrate = (int64_t)atof(arg); break;
    case 'O': sim.loop_n = atoi(arg); break;
    case 'e': sim.rng = strtoull(arg, NULL, 10) | 1; break;
    case 'v':
        if (sscanf(arg, "%dx%d@%d", &sim.video_w, &sim.video_h, &sim.video_fps) != 3 ||
            sim.video_w < 16 || sim.video_h < 16 || sim.video_w % 2 || sim.video_h % 2 ||
            sim.video_fps < 1 || sim.video_fps > 120) {
            fprintf(stderr, "msrs-devsim: --video '%s': expected WxH@FPS, even sizes >= 16\n", arg);
            return -1;
        }
        break;
    case 'C': sim.video_codec = arg; break;
    case 'F':
        if (strcmp(arg, "binary") != 0 && strcmp(arg, "json") != 0 && strcmp(arg, "none") != 0) {
            fprintf(stderr, "msrs-devsim: --samples '%s': expected binary, json or none\n", arg);
            return -1;
        }
        sim.binary_samples = strcmp(arg, "binary") == 0;
        sim.no_samples = strcmp(arg, "none") == 0;
        break;
    case 'K':
        if (strcmp(arg, "kernel") != 0 && strcmp(arg, "loop") != 0) {
            fprintf(stderr, "msrs-devsim: --stamps '%s': expected kernel or loop\n", arg);
            return -1;
        }
        sim.kernel_stamps = strcmp(arg, "kernel") == 0;
        break;
    default: return -1;
    }
    return 0;
}

static const char *given[128]; /* by option val: the command line's value */

static int on_opt(void *arg, int opt, const char *val)
{
    if (opt < 0 || opt >= 128)
        return -1;
    given[opt] = val;
    return 0;
}

/* Every option is also the key devsim.NAME (dashes as underscores); the
 * command line wins. */
static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    for (size_t i = DS_OWN_OPTS; ds_longopts[i].name; i++) {
        char key[64];
        int val = ds_longopts[i].val;
        snprintf(key, sizeof(key), "devsim.%s", ds_longopts[i].name);
        for (char *c = key; *c; c++)
            if (*c == '-')
                *c = '_';
        const char *v = given[val] ? given[val] : ev_conf_get(conf, key, NULL);
        if (v && apply_opt(val, v))
            return -1;
    }
    /* The values taken from conf are borrowed: conf lives until run returns. */
    const char *url = opt_args.url;
    const char *profile = opt_args.profile, *delay = opt_args.delay;
    double asym = opt_args.asym, spike_prob = opt_args.spike_prob, spike_ms = opt_args.spike_ms,
           jitter = opt_args.jitter;
    if (sim.n < 1 || sim.n > 4096 || parse_ws_url(url, sim.host, &sim.port, sim.path, &sim.tls)) {
        fprintf(stderr,
                "msrs-devsim: expected --url wss://HOST:PORT[/PATH] (ws:// unencrypted) and "
                "1-4096 devices\n");
        return -1;
    }
    if (strcmp(profile, "lan") == 0)
        sim.net = (ds_profile){0.1, 2.0, 0, 0, 0, 2};
    else if (strcmp(profile, "wifi") == 0)
        sim.net = (ds_profile){1.0, 20.0, 0, 0.01, 50, 20};
    else if (strcmp(profile, "none") == 0)
        sim.net = (ds_profile){0, 0, 0, 0, 0, 0};
    else {
        fprintf(stderr, "msrs-devsim: --profile '%s': expected lan, wifi or none\n", profile);
        return -1;
    }
    if (delay && sscanf(delay, "%lf:%lf", &sim.net.delay_min_ms, &sim.net.delay_max_ms) != 2) {
        fprintf(stderr, "msrs-devsim: --delay-ms '%s': expected MIN:MAX\n", delay);
        return -1;
    }
    if (asym >= 0)
        sim.net.asym_ms = asym;
    if (spike_prob >= 0)
        sim.net.spike_prob = spike_prob;
    if (spike_ms >= 0)
        sim.net.spike_ms = spike_ms;
    if (jitter >= 0)
        sim.net.jitter_us = jitter;
    char err[512];
    if (sim.kernel_stamps && rxstamp_check(err, sizeof(err))) {
        fprintf(stderr, "msrs-devsim: --stamps kernel: %s\n", err);
        return -1;
    }

    return 0;
}

/* --log is accepted like every binary's, and only checked for a value:
 * devsim talks to an agent over WebSocket and never opens a log. */
static int run(void *arg, ev_conf *conf, ev_log *unused)
{
    int exit_code = 0;
    const char *url = opt_args.url, *profile = opt_args.profile;
    const char *prefix = opt_args.prefix, *truth = opt_args.truth, *stats = opt_args.stats;
    double offset_ms = opt_args.offset_ms, drift_ppm = opt_args.drift_ppm;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.fd_limit_per_thread = (unsigned int)(sim.n * 2 + 64);
    /* wss: the agent's certificate verified against tls.ca (else the
     * system's trust store) */
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (*ev_conf_get(conf, "tls.ca", ""))
        info.client_ssl_ca_filepath = ev_conf_get(conf, "tls.ca", "");
    /* Each simulated device's credential, derived from the lab key as
     * `msrs devices credential` does (a real device holds only its own). */
    unsigned char key[CLI_AUTH_KEY_BYTES];
    char err[512];
    const char *key_file = ev_conf_get(conf, "auth.key_file", "");
    if (*key_file) {
        if (cli_auth_read_key(key_file, key, err, sizeof(err))) {
            fprintf(stderr, "msrs-devsim: %s\n", err);
            return 2;
        }
        sim.auth = 1;
    }
    lws_set_log_level(LLL_ERR, NULL);
    av_log_set_level(AV_LOG_ERROR);
    sim.ctx = lws_create_context(&info);
    if (!sim.ctx) {
        fprintf(stderr, "msrs-devsim: cannot create the WebSocket context\n");
        return 1;
    }
    FILE *tf = truth ? fopen(truth, "w") : NULL;
    if (truth && !tf) {
        fprintf(stderr, "msrs-devsim: %s: cannot write\n", truth);
        return 1;
    }
    if (sim.loop_n > 0 && (!sim.video_w || video_loop_encode() != 0)) {
        fprintf(stderr, "msrs-devsim: --video-loop needs --video and a working %s encoder\n",
                sim.video_codec);
        return 2;
    }
    sim.started_ns = now_ns();
    sim.stats = json_object();
    sim.devs = calloc((size_t)sim.n, sizeof(*sim.devs));
    for (int i = 0; i < sim.n; i++) {
        ds_device *d = &sim.devs[i];
        d->index = i;
        snprintf(d->id, sizeof(d->id), "%s%d", prefix, i + 1);
        if (sim.auth)
            cli_auth_device_credential(key, d->id, 1, d->credential, sizeof(d->credential));
        d->offset_ns = (int64_t)((urand() * 2 - 1) * offset_ms * 1e6);
        d->drift = (urand() * 2 - 1) * drift_ppm * 1e-6;
        d->t0_ns = sim.started_ns;
        d->streams[0] = (ds_stream){"gsr", "gsr", 1, 16, 128.0, 0, sim.started_ns};
        d->streams[1] = (ds_stream){"imu", "imu", 6, 10, 100.0, 0, sim.started_ns};
        d->next_frame_ns = sim.started_ns;
        if (sim.video_w && !sim.loop_n && video_open(d) != 0) {
            fprintf(stderr, "msrs-devsim: cannot open the %s encoder for %dx%d\n", sim.video_codec,
                    sim.video_w, sim.video_h);
            return 1;
        }
        d->drop_at_ns =
            sim.started_ns +
            (sim.loss_per_min > 0 ? (int64_t)(-log(urand() + 1e-12) * 60e9 / sim.loss_per_min) : 0);
        if (tf)
            fprintf(tf,
                    "{\"device_id\":\"%s\",\"offset_ns\":%lld,\"drift_ppm\":%.6f,\"t0_ns\":%lld}\n",
                    d->id, (long long)d->offset_ns, d->drift * 1e6, (long long)d->t0_ns);
        connect_device(d);
    }
    if (tf)
        fclose(tf);
    fprintf(stderr,
            "msrs-devsim: %d devices -> %s (%s: %.1f-%.1f ms one-way, asym %.1f ms, spikes %.3f x "
            "%.0f ms, jitter %.0f us)\n",
            sim.n, url, profile, sim.net.delay_min_ms, sim.net.delay_max_ms, sim.net.asym_ms,
            sim.net.spike_prob, sim.net.spike_ms, sim.net.jitter_us);
    lws_sul_schedule(sim.ctx, 0, &sim.scan, on_scan, 2000);
    schedule_tick();
    time_t last = time(NULL);
    while (!cli_stop) {
        if (lws_service(sim.ctx, 0) < 0)
            break;
        if (time(NULL) - last >= 5) {
            last = time(NULL);
            int64_t probes = 0, samples = 0;
            for (int i = 0; i < sim.n; i++) {
                probes += sim.devs[i].probes;
                samples += sim.devs[i].samples_sent;
            }
            int64_t packets = 0;
            for (int i = 0; i < sim.n; i++)
                packets += sim.devs[i].packets_sent;
            fprintf(stderr,
                    "msrs-devsim: %lld/%d connected, %lld probes answered, %lld samples and %lld "
                    "video packets sent, %lld errors\n",
                    (long long)sim.connected, sim.n, (long long)probes, (long long)samples,
                    (long long)packets, (long long)sim.errors_seen);
        }
    }
    lws_context_destroy(sim.ctx);
    fprintf(stderr,
            "msrs-devsim: flow: %lld slow_down, %lld resume, %lld video frames skipped; "
            "%lld moved to another node\n",
            (long long)sim.slow_downs, (long long)sim.resumes, (long long)sim.frames_skipped,
            (long long)sim.moved);
    if (stats && json_dump_file(sim.stats, stats, JSON_INDENT(1) | JSON_SORT_KEYS)) {
        fprintf(stderr, "msrs-devsim: %s: cannot write\n", stats);
        exit_code = 1;
    }
    json_decref(sim.stats);
    while (sim.heap_len) {
        ds_event e = heap_pop();
        free(e.msg);
    }
    free(sim.heap);
    for (int i = 0; i < sim.n; i++)
        video_close(&sim.devs[i]);
    free(sim.devs);
    for (int i = 0; i < sim.loop_n; i++)
        free(sim.loop[i].data);
    free(sim.loop);
    free(sim.loop_headers);
    return exit_code;
}

int main(int argc, char **argv)
{
    sim.n = 4;
    sim.rng = 1;
    sim.video_codec = "mpeg4";
    sim.binary_samples = 1;
    sim.kernel_stamps = 1;
    cli_svc svc = {.name = "msrs-devsim",
                   .usage = usage,
                   .opts = ds_longopts + DS_OWN_OPTS,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .no_log = 1};
    return cli_svc_main(&svc, argc, argv);
}
