/* msrs-devsim — N simulated devices in one process, each a device of the
 * device SDK (sdk/include/msrs_device.h: the protocol lives there only)
 * with its own clock behind a simulated network.
 *
 * Clock of device i: device(t) = t + offset_i + drift_i * (t - t0) + noise,
 * where t is this machine's clock (which is the agent's), offset and drift
 * are drawn at start and noise is gaussian timestamp jitter. The true
 * offsets go to --truth FILE (one JSON line per device) so a benchmark can
 * compare the agent's estimates with them. The SDK asks each device's clock
 * at the instants it stamps (md_device_config.clock_ns).
 *
 * Network: every message waits a one-way delay before it "arrives" at the
 * device or leaves it: uniform in [min, max] ms, plus an extra uplink delay
 * (asymmetry), plus rare spikes; the SDK holds each message that long, in
 * order per direction as TCP would (md_device_config.link_delay_ns). A
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

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libwebsockets.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ds_profile {
    double delay_min_ms, delay_max_ms, asym_ms, spike_prob, spike_ms, jitter_us;
} ds_profile;

typedef struct ds_stream {
    const char *id, *type;
    int channels, batch;
    double rate_hz;
    int64_t seq, next_ns;
} ds_stream;

typedef struct ds_device {
    int index;
    char id[64];
    md_device *dev;
    int registered;
    int64_t offset_ns, t0_ns;
    double drift; /* ns per ns */
    ds_stream streams[2];
    int64_t drop_at_ns;
    char credential[96]; /* "G.HEX" (security.h), derived from auth.key_file */
    int64_t errors, samples_sent;
    /* video */
    AVCodecContext *enc;
    AVFrame *frame;
    AVPacket *pkt;
    int64_t frame_index, next_frame_ns, video_seq, packets_sent;
    int need_keyframe; /* after (re)registering: the next frame is a keyframe */
    /* flow: while the agent says slow_down, video is one keyframe a second */
    int slowed, await_key;
    int frame_in_session;
} ds_device;

typedef struct ds_packet {
    uint8_t *data;
    size_t size;
    int key;
} ds_packet;

typedef struct ds_sim {
    md_client *client;
    lws_sorted_usec_list_t scan; /* samples, video, losses: every 2 ms */
    ds_device *devs;
    int n;
    ds_profile net;
    double loss_per_min;
    uint64_t rng;
    int64_t started_ns, duration_ns;
    int64_t registered, errors_seen;
    int64_t slow_downs, resumes, frames_skipped; /* flow messages obeyed */
    int64_t moved;                               /* devices a full node sent elsewhere */
    int video_w, video_h, video_fps;
    const char *video_codec;
    json_t *stats; /* session -> device -> stream -> {samples, bytes}: what was sent */
    int64_t video_bitrate;
    int loop_n;        /* --video-loop */
    int no_samples;    /* --samples none: register, sync, status only */
    int kernel_stamps; /* --stamps kernel (default) | loop */
    int auth;          /* auth.key_file: every device proves its credential */
    ds_packet *loop;
    uint8_t *loop_headers;
    size_t loop_headers_size;
    char loop_codec[32];
} ds_sim;

static ds_sim sim;

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

/* The SDK's hooks: the device's clock at a host instant, the link's delay. */
static int64_t clock_hook(void *arg, int64_t realtime_ns)
{
    return dev_clock(arg, realtime_ns);
}

static int64_t link_hook(void *arg, int up)
{
    (void)arg;
    return one_way_ns(up);
}

/* The session data stamped at device time t belongs to, in out[64] ("" none). */
static const char *session_at(const ds_device *d, int64_t t, char out[MD_ID_MAX])
{
    md_device_session_at(d->dev, t, out, MD_ID_MAX);
    return out;
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

/* Sends samples [from, to) of a batch: one message, tagged by the SDK with
 * the session they belong to (session: its id, "" for none). */
static void send_part(ds_device *d, ds_stream *s, const int64_t *t, int from, int to,
                      const char *session)
{
    double values[64 * 8];
    int n = to - from;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < s->channels; c++)
            values[i * s->channels + c] = sample_value(s, from + i, c);
    if (md_device_send_samples(d->dev, s->id, s->seq + from, t + from, values, (size_t)n,
                               s->channels) != MD_OK)
        return; /* its numbers are a gap the agent counts */
    d->samples_sent += n;
    if (*session)
        count_sent(d, session, s->id, n, (int64_t)n * s->channels * 8);
}

/* A batch of samples of stream s, device timestamps from the device clock;
 * split where it crosses a session's start or stop. */
static void send_samples(ds_device *d, ds_stream *s)
{
    int64_t period = (int64_t)(1e9 / s->rate_hz), t[64];
    int n = s->batch < 1 ? 1 : s->batch > 64 ? 64 : s->batch;
    for (int i = 0; i < n; i++)
        t[i] = dev_clock(d, s->next_ns + i * period);
    s->next_ns += n * period;
    if (d->registered) {
        char first[MD_ID_MAX], here[MD_ID_MAX];
        int from = 0;
        session_at(d, t[0], first);
        for (int i = 1; i <= n; i++)
            if (i == n || strcmp(session_at(d, t[i], here), first) != 0) {
                send_part(d, s, t, from, i, first);
                from = i;
                if (i < n)
                    memcpy(first, here, sizeof(first));
            }
    }
    s->seq += n; /* while away, samples are lost: the agent sees a gap */
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

/* Sends one encoded packet (headers, if given, in front of it) as a binary
 * media frame. */
static void send_packet(ds_device *d, const uint8_t *headers, size_t extra, const uint8_t *data,
                        size_t size, int keyframe, int64_t pts_ns, int64_t frame_dev_ns,
                        const char *codec)
{
    char session[MD_ID_MAX];
    md_media m = {.stream_id = "rgb",
                  .codec = codec,
                  .pts_ns = pts_ns,
                  .keyframe = keyframe,
                  .seq = d->video_seq++,
                  .device_time_ns = frame_dev_ns,
                  .width = sim.video_w,
                  .height = sim.video_h,
                  .prefix = headers,
                  .prefix_len = extra};
    if (md_device_send_media(d->dev, &m, data, size) != MD_OK)
        return; /* a skipped number: the agent counts a gap */
    d->packets_sent++;
    if (*session_at(d, frame_dev_ns, session))
        count_sent(d, session, "rgb", 1, (int64_t)(size + extra));
}

static void video_frame(ds_device *d)
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
        send_packet(d, sim.loop_headers, k->key ? sim.loop_headers_size : 0, k->data, k->size,
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
    char session[MD_ID_MAX];
    int in_session = *session_at(d, frame_dev_ns, session) != '\0';
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
        send_packet(d, d->enc->extradata, extra, d->pkt->data, (size_t)d->pkt->size, keyframe,
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

/* ------------------------------------------------------------ the SDK's */

/* What the SDK tells a device (on the loop's thread). */
static void on_event(void *arg, md_device *dev, const md_event *ev)
{
    ds_device *d = arg;
    switch (ev->kind) {
    case MD_EV_REGISTERED:
        d->registered = 1;
        sim.registered++;
        d->need_keyframe = 1;
        for (int i = 0; i < 2; i++) { /* rejoin: continue where the agent expects */
            int64_t r = md_device_resume_seq(dev, d->streams[i].id);
            if (r > d->streams[i].seq)
                d->streams[i].seq = r;
        }
        md_device_send_status(dev, 0.9, 0);
        break;
    case MD_EV_REFUSED:
        /* told where to go, the SDK reconnects there; otherwise it tries
         * again later (a full node may have room then) */
        fprintf(stderr, "msrs-devsim: %s refused: %s%s%s\n", d->id, ev->message,
                ev->redirect ? "; moving to " : "", ev->redirect ? ev->redirect : "");
        sim.moved += ev->redirect != NULL;
        break;
    case MD_EV_FLOW:
        /* The agent's log is behind: send less (video keyframes only) until
         * resume. Frames not captured are not gaps: the sequence goes on. */
        if (ev->slow && !d->slowed) {
            sim.slow_downs++;
            d->await_key = 1;
        }
        sim.resumes += !ev->slow && d->slowed;
        d->slowed = ev->slow;
        if (sim.slow_downs + sim.resumes <= 8)
            fprintf(stderr, "msrs-devsim: %s: flow %s at %.3f s\n", d->id,
                    ev->slow ? "slow_down" : "resume", (double)(now_ns() - sim.started_ns) / 1e9);
        break;
    case MD_EV_ERROR:
        d->errors++;
        sim.errors_seen++;
        if (d->errors <= 3)
            fprintf(stderr, "msrs-devsim: %s: error %s: %s\n", d->id, ev->code, ev->message);
        break;
    case MD_EV_CLOSED:
        sim.registered -= d->registered;
        d->registered = d->slowed = 0;
        break;
    default: break; /* start, stop: the SDK tags the data */
    }
}

/* Every 2 ms: the samples and frames that are due, connection losses. */
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
                send_samples(d, &d->streams[k]);
        while ((d->enc || sim.loop_n) && d->next_frame_ns <= now)
            video_frame(d);
        if (d->registered && sim.loss_per_min > 0 && now >= d->drop_at_ns) {
            d->drop_at_ns = now + (int64_t)(-log(urand() + 1e-12) * 60e9 / sim.loss_per_min);
            md_device_reconnect(d->dev); /* lose the connection */
        }
    }
    if (sim.duration_ns && now - sim.started_ns >= sim.duration_ns)
        cli_stop = 1;
    lws_sul_schedule(md_client_lws_context(sim.client), 0, &sim.scan, on_scan, 2000);
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
            "  --samples FORMAT    binary (default: the SDK's binary frames) or none: no\n"
            "                      sample streams (control-plane and clock benchmarks)\n"
            "  --stamps WHERE      where a device stamps a probe: kernel (default: arrival is\n"
            "                      the socket's receive stamp plus the downlink delay, t3 is\n"
            "                      the moment of writing less the uplink delay, as a device\n"
            "                      with a CPU of its own) or loop (arrival is when the SDK,\n"
            "                      on the loop every simulated device shares, read it)\n"
            "Each option can also be set as the config key devsim.NAME (NAME: the option\n"
            "without '--', '-' written '_', e.g. devsim.drift_ppm = 100); the command line\n"
            "wins. devsim never opens a log: --log is accepted like every binary's and\n"
            "otherwise ignored (the devices talk to the agent at --url). Common "
            "options:\n" CLI_COMMON_HELP "exit: 0 ok, 1 could not run, 2 usage or configuration\n");
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
        if (strcmp(arg, "binary") != 0 && strcmp(arg, "none") != 0) {
            fprintf(stderr, "msrs-devsim: --samples '%s': expected binary or none\n", arg);
            return -1;
        }
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
    if (sim.n < 1 || sim.n > 4096) {
        fprintf(stderr, "msrs-devsim: --devices %d: expected 1-4096\n", sim.n);
        return -1;
    }
    if (strncmp(url, "wss://", 6) != 0 && strncmp(url, "ws://", 5) != 0) {
        fprintf(stderr,
                "msrs-devsim: --url '%s': expected wss://HOST:PORT[/PATH] (ws:// "
                "unencrypted)\n",
                url);
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
    /* wss: the agent's certificate verified against tls.ca (else the
     * system's trust store); kernel stamps: this binary links rxstamp */
    md_client_config cc = {
        .url = url,
        .ca_file = *ev_conf_get(conf, "tls.ca", "") ? ev_conf_get(conf, "tls.ca", "") : NULL,
        .stamp_on_read = !sim.kernel_stamps,
        /* 0: lws sizes its table from the open-file limit, raised to fit
         * every device (cli_fd_limit_raise), and indexes it by descriptor */
        .max_connections = 0};
    cli_fd_limit_raise((long)sim.n * 2 + 64);
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
    av_log_set_level(AV_LOG_ERROR);
    sim.client = md_client_new(&cc, err, sizeof(err));
    if (!sim.client) {
        fprintf(stderr, "msrs-devsim: %s\n", err);
        return 1;
    }
    lws_set_log_level(LLL_ERR, NULL);
    FILE *tf = truth ? fopen(truth, "w") : NULL;
    if (truth && !tf) {
        fprintf(stderr, "msrs-devsim: %s: cannot write\n", truth);
        md_client_destroy(sim.client);
        return 1;
    }
    if (sim.loop_n > 0 && (!sim.video_w || video_loop_encode() != 0)) {
        fprintf(stderr, "msrs-devsim: --video-loop needs --video and a working %s encoder\n",
                sim.video_codec);
        md_client_destroy(sim.client);
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
            exit_code = 1;
            goto out;
        }
        d->drop_at_ns =
            sim.started_ns +
            (sim.loss_per_min > 0 ? (int64_t)(-log(urand() + 1e-12) * 60e9 / sim.loss_per_min) : 0);
        if (tf)
            fprintf(tf,
                    "{\"device_id\":\"%s\",\"offset_ns\":%lld,\"drift_ppm\":%.6f,\"t0_ns\":%lld}\n",
                    d->id, (long long)d->offset_ns, d->drift * 1e6, (long long)d->t0_ns);
        md_stream streams[3] = {{"gsr", "gsr", 128.0, 1, "float64"},
                                {"imu", "imu", 100.0, 6, "float64"},
                                {"rgb", "rgb_video", sim.video_fps, 3,
                                 sim.loop_n ? sim.loop_codec
                                 : d->enc   ? d->enc->codec->name
                                            : ""}};
        const char *caps[3] = {"gsr", "imu", "rgb_video"};
        int video = d->enc || sim.loop_n;
        md_device_config dc = {.device_id = d->id,
                               .version = "msrs-devsim",
                               .credential = sim.auth ? d->credential : NULL,
                               .capabilities = caps,
                               .capability_count = video ? 3 : 2,
                               .streams = streams,
                               .stream_count = video ? 3 : 2,
                               .clock_ns = clock_hook,
                               .on_event = on_event,
                               .arg = d,
                               .link_delay_ns = link_hook};
        if (!(d->dev = md_device_add(sim.client, &dc, err, sizeof(err)))) {
            fprintf(stderr, "msrs-devsim: %s\n", err);
            exit_code = 1;
            goto out;
        }
    }
    if (tf) /* complete now: a benchmark reads it while the devices run */
        fclose(tf), tf = NULL;
    fprintf(stderr,
            "msrs-devsim: %d devices -> %s (%s: %.1f-%.1f ms one-way, asym %.1f ms, spikes %.3f x "
            "%.0f ms, jitter %.0f us)\n",
            sim.n, url, profile, sim.net.delay_min_ms, sim.net.delay_max_ms, sim.net.asym_ms,
            sim.net.spike_prob, sim.net.spike_ms, sim.net.jitter_us);
    lws_sul_schedule(md_client_lws_context(sim.client), 0, &sim.scan, on_scan, 2000);
    time_t last = time(NULL);
    while (!cli_stop) {
        if (md_client_service(sim.client, 100) != MD_OK)
            break;
        if (time(NULL) - last >= 5) {
            int64_t samples = 0, packets = 0;
            last = time(NULL);
            for (int i = 0; i < sim.n; i++) {
                samples += sim.devs[i].samples_sent;
                packets += sim.devs[i].packets_sent;
            }
            fprintf(stderr,
                    "msrs-devsim: %lld/%d registered, %lld samples and %lld video packets sent, "
                    "%lld errors\n",
                    (long long)sim.registered, sim.n, (long long)samples, (long long)packets,
                    (long long)sim.errors_seen);
        }
    }
    fprintf(stderr,
            "msrs-devsim: flow: %lld slow_down, %lld resume, %lld video frames skipped; "
            "%lld moved to another node\n",
            (long long)sim.slow_downs, (long long)sim.resumes, (long long)sim.frames_skipped,
            (long long)sim.moved);
    if (stats && json_dump_file(sim.stats, stats, JSON_INDENT(1) | JSON_SORT_KEYS)) {
        fprintf(stderr, "msrs-devsim: %s: cannot write\n", stats);
        exit_code = 1;
    }
out:
    if (tf)
        fclose(tf);
    md_client_destroy(sim.client); /* every device with it */
    json_decref(sim.stats);
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
