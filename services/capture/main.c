/* msrs-capture — USB cameras as devices of their node. Every
 * capture.scan_ms it looks for V4L2 cameras (capture.devices, a glob),
 * opens each with libv4l2 and makes it a device of the node's agent
 * through the device SDK, exactly as a phone is one: it proves its
 * credential (derived from the lab key, as `msrs devices credential`
 * does), registers its video stream, answers clock probes from
 * CLOCK_MONOTONIC — the clock the driver stamps frames with — and sends
 * each frame (H.264, or MJPEG as the camera made it) as a media packet at
 * the driver's time. The agent does the rest as for any device: master
 * times, session tags, counts, gaps, RecordingReport.
 *
 * A frame's number (seq) counts the frames the camera made: frames the
 * driver lost, frames dropped here (queue full, the agent's slow_down, not
 * registered) and the time a camera was unplugged or stalled all skip
 * numbers, so the agent counts them as the session's gap. One thread per
 * camera (dequeue, encode, send): the driver's buffers are the only queue
 * before the encoder, so a slow encoder makes the driver skip frames,
 * never a queue grow. Why a process and not part of the agent: an encoder
 * or a driver that hangs or crashes takes a camera down, not the node's
 * device endpoint, and the agent stays one thread with nothing
 * camera-specific in it. */
#include "capture.h"
#include "cli.h"
#include "rxstamp.h"
#include "security.h"

#include <errno.h>
#include <glob.h>
#include <libavutil/log.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CP_MAX_CAMERAS 32

typedef struct cp_capture {
    char agent_url[512], prefix[64], devices[512], prefer[16];
    int width, height, fps, preview_fps, preview_width;
    int64_t scan_ms, stall_ms, keyframe_ms;
    size_t max_queued;
    cp_encode_params enc;
    char preset[32], tune[32];
    cli_tls tls;
    unsigned char key[CLI_AUTH_KEY_BYTES];
    int have_key;
    md_client *client;
    cp_camera *cams[CP_MAX_CAMERAS];
    int ncams;
    struct {
        char path[256], why[512];
    } refused[CP_MAX_CAMERAS]; /* paths not taken, and why (said once) */
    int nrefused;
    cp_preview *preview;
} cp_capture;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: msrs-capture [options]\n"
            "Makes every V4L2 camera of this machine a device of its node's agent: finds\n"
            "them, encodes their frames (H.264 with libx264, MJPEG passed through) and\n"
            "sends them as media at the driver's timestamps; serves each camera's latest\n"
            "JPEG (the camera proxy). The agent starts it when the node's plan names\n"
            "capture; it runs on its own as well.\n\n" CLI_COMMON_HELP
            "\nconfig keys (defaults; docs/config.md): capture.agent "
            "(wss://127.0.0.1:8620/v1/devices),\n"
            "capture.devices (/dev/video*), capture.id_prefix (the host name and '.'),\n"
            "capture.format (auto: mjpeg, yuyv, then yuv420), capture.width (1280),\n"
            "capture.height (720), capture.fps (30), capture.keyframe_interval_ms (1000),\n"
            "capture.h264.preset (ultrafast), capture.h264.tune (zerolatency), capture.h264.crf\n"
            "(23; 0: capture.h264.bitrate), capture.h264.threads (1), capture.scan_ms (1000),\n"
            "capture.stall_ms (2000), capture.max_queued_bytes (16777216), capture.preview_listen\n"
            "(127.0.0.1:8630; off: none), capture.preview_fps (1), capture.preview_width (640),\n"
            "tls.ca, tls.cert, tls.key, tls.plain, auth.key_file, auth.required\n"
            "exit: 0 after SIGINT/SIGTERM, 1 could not start, 2 usage or configuration\n");
}

/* ------------------------------------------------------------ cameras */

/* The device id of a camera: prefix "cam-" and its bus (or path), each
 * character outside [A-Za-z0-9._:-] made '-', at most 63 characters. */
/* The device id of a camera: prefix "cam-" and its bus (or path), each
 * character outside [A-Za-z0-9._:-] made '-'. Longer than 63 characters
 * (a long node id): the prefix cut to 40 and the rest replaced by a hash
 * of the whole, so that two cameras never share an id. */
static void camera_id(const cp_capture *c, const char *bus, const char *path, char *out,
                      size_t size)
{
    char id[256];
    const char *from = *bus ? bus : path;
    if (!*bus && strrchr(path, '/'))
        from = strrchr(path, '/') + 1;
    snprintf(id, sizeof(id), "%scam-%s", c->prefix, from);
    for (char *p = id; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-", *p))
            *p = '-';
    if (strlen(id) < MD_ID_MAX) {
        snprintf(out, size, "%s", id);
        return;
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    snprintf(out, size, "%.40scam-%016llx", id, (unsigned long long)h);
}

static cp_camera *camera_find(cp_capture *c, const char *id)
{
    for (int i = 0; i < c->ncams; i++)
        if (strcmp(c->cams[i]->device_id, id) == 0)
            return c->cams[i];
    return NULL;
}

/* Remembers why path was not taken: 1 when it is the reason said last
 * time (not said again), 0 when it is new. A path is tried again at every
 * scan (a camera plugged back in comes back within capture.scan_ms). */
static int said_before(cp_capture *c, const char *path, const char *why)
{
    for (int i = 0; i < c->nrefused; i++)
        if (strcmp(c->refused[i].path, path) == 0) {
            int same = strcmp(c->refused[i].why, why) == 0;
            snprintf(c->refused[i].why, sizeof(c->refused[i].why), "%s", why);
            return same;
        }
    if (c->nrefused < CP_MAX_CAMERAS) {
        snprintf(c->refused[c->nrefused].path, sizeof(c->refused[0].path), "%s", path);
        snprintf(c->refused[c->nrefused++].why, sizeof(c->refused[0].why), "%s", why);
    }
    return 0;
}

static int path_in_use(const cp_capture *c, const char *path)
{
    for (int i = 0; i < c->ncams; i++)
        if (c->cams[i]->running && strcmp(c->cams[i]->path, path) == 0)
            return 1;
    return 0;
}

static void camera_start(cp_capture *c, const char *path)
{
    char err[512], card[64], bus[64], id[MD_ID_MAX];
    cp_format fmt;
    cp_v4l2 *v = cp_v4l2_open(path, c->prefer, c->width, c->height, c->fps, &fmt, card,
                              sizeof(card), bus, sizeof(bus), err, sizeof(err));
    if (!v) {
        if (!said_before(c, path, err)) /* said once per path and reason */
            fprintf(stderr, "msrs-capture: %s\n", err);
        return;
    }
    for (int i = 0; i < c->nrefused; i++) /* opens now: a later failure is news again */
        if (strcmp(c->refused[i].path, path) == 0)
            c->refused[i] = c->refused[--c->nrefused];
    camera_id(c, bus, path, id, sizeof(id));
    cp_camera *k = camera_find(c, id);
    if (k && k->running) { /* a second node of one camera */
        cp_v4l2_close(v);
        return;
    }
    cp_encoder *enc = cp_encoder_new(&fmt, &c->enc, err, sizeof(err));
    if (!enc) {
        if (!said_before(c, path, err))
            fprintf(stderr, "msrs-capture: %s (%s): %s\n", path, id, err);
        cp_v4l2_close(v);
        return;
    }
    if (!k) {
        if (c->ncams == CP_MAX_CAMERAS) {
            fprintf(stderr, "msrs-capture: %s: more than %d cameras: not taken\n", path,
                    CP_MAX_CAMERAS);
            cp_encoder_destroy(enc);
            cp_v4l2_close(v);
            return;
        }
        k = calloc(1, sizeof(*k));
        if (!k) {
            cp_encoder_destroy(enc);
            cp_v4l2_close(v);
            return;
        }
        snprintf(k->device_id, sizeof(k->device_id), "%s", id);
        pthread_mutex_init(&k->mu, NULL);
        c->cams[c->ncams++] = k;
    }
    pthread_mutex_lock(&k->mu); /* the camera proxy's thread reads these */
    snprintf(k->path, sizeof(k->path), "%s", path);
    snprintf(k->card, sizeof(k->card), "%s", card);
    snprintf(k->bus, sizeof(k->bus), "%s", bus);
    snprintf(k->codec, sizeof(k->codec), "%s", cp_encoder_codec(enc));
    k->fmt = fmt;
    pthread_mutex_unlock(&k->mu);
    k->v = v;
    k->enc = enc;
    k->stall_ms = c->stall_ms;
    k->max_queued = c->max_queued;
    k->preview_fps = c->preview_fps;
    k->preview_width = c->preview_width;
    char credential[80] = "";
    if (c->have_key)
        cli_auth_device_credential(c->key, id, 1, credential, sizeof(credential));
    static const char *const caps[] = {"rgb_video", "usb_camera"};
    md_stream stream = {CP_STREAM, "rgb_video", (double)fmt.fps, 3, k->codec};
    md_device_config dc = {.device_id = id,
                           .name = card,
                           .version = "msrs-capture " MSRS_VERSION,
                           .credential = c->have_key ? credential : NULL,
                           .capabilities = caps,
                           .capability_count = 2,
                           .streams = &stream,
                           .stream_count = 1,
                           .clock_ns = cp_camera_clock,
                           .on_event = cp_camera_on_event,
                           .arg = k,
                           .max_queued_bytes = c->max_queued};
    k->dev = md_device_add(c->client, &dc, err, sizeof(err));
    if (!k->dev || cp_camera_run(k) != 0) {
        fprintf(stderr, "msrs-capture: %s: %s\n", id, k->dev ? "cannot start a thread" : err);
        cp_camera_stop(k);
        return;
    }
    char t[5];
    cp_fourcc_text(fmt.pixfmt, t);
    fprintf(stderr, "msrs-capture: %s: '%s' (%s) as %s: %s %dx%d@%d%s%s%s -> %s\n", path, card,
            *bus ? bus : "no bus", id, t, fmt.width, fmt.height, fmt.fps,
            fmt.emulated ? " (converted by libv4l2 from the camera's own " : "",
            fmt.emulated ? fmt.native : "", fmt.emulated ? ")" : "", k->codec);
}

static void scan(cp_capture *c)
{
    for (int i = 0; i < c->ncams; i++) {
        cp_camera *k = c->cams[i];
        if (k->running && cp_camera_gone(k)) {
            fprintf(stderr, "msrs-capture: %s gone: %s (frames after it return counted as a gap)\n",
                    k->device_id, k->why);
            cp_camera_stop(k);
        }
    }
    glob_t g;
    if (glob(c->devices, 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (!path_in_use(c, g.gl_pathv[i]))
            camera_start(c, g.gl_pathv[i]);
    globfree(&g);
}

/* Every 10 s: each camera's status to the agent (DeviceStatus: recording
 * while a session holds its frames) and its counts on stderr. */
static void status_line(cp_capture *c)
{
    for (int i = 0; i < c->ncams; i++) {
        cp_camera *k = c->cams[i];
        char session[MD_ID_MAX];
        if (k->running && md_device_registered(k->dev))
            md_device_send_status(
                k->dev, -1, md_device_session_at(k->dev, cp_mono_ns(), session, sizeof(session)));
        pthread_mutex_lock(&k->mu);
        fprintf(stderr,
                "msrs-capture: %s %s: %lld frames, %lld sent, %lld lost by the driver or while "
                "away, dropped: %lld queue, %lld slowed, %lld not registered; %lld stalls\n",
                k->device_id, k->running ? (k->stalled ? "stalled" : "live") : "gone",
                (long long)k->frames, (long long)k->sent, (long long)k->lost,
                (long long)k->dropped_queue, (long long)k->dropped_slow, (long long)k->dropped_away,
                (long long)k->stalls);
        pthread_mutex_unlock(&k->mu);
    }
}

/* ------------------------------------------------------------ preview */

static char *preview_list(void *arg)
{
    cp_capture *c = arg;
    json_t *all = json_array();
    for (int i = 0; i < c->ncams; i++) {
        cp_camera *k = c->cams[i];
        pthread_mutex_lock(&k->mu);
        json_array_append_new(
            all, json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:b}",
                           "device_id", k->device_id, "card", k->card, "state",
                           k->running ? (k->stalled ? "stalled" : "live") : "gone", "codec",
                           k->codec, "width", k->fmt.width, "height", k->fmt.height, "fps",
                           k->fmt.fps, "frames", (json_int_t)k->frames, "sent", (json_int_t)k->sent,
                           "lost", (json_int_t)k->lost, "dropped",
                           (json_int_t)(k->dropped_queue + k->dropped_slow + k->dropped_away),
                           "preview", k->jpeg != NULL));
        pthread_mutex_unlock(&k->mu);
    }
    char *text = json_dumps(all, JSON_COMPACT);
    json_decref(all);
    return text;
}

static int preview_jpeg(void *arg, const char *device_id, unsigned char **data, size_t *len)
{
    cp_capture *c = arg;
    int rc = -1;
    for (int i = 0; i < c->ncams && rc; i++) {
        cp_camera *k = c->cams[i];
        pthread_mutex_lock(&k->mu);
        if (strcmp(k->device_id, device_id) == 0 && k->jpeg && (*data = malloc(k->jpeg_len))) {
            memcpy(*data, k->jpeg, k->jpeg_len);
            *len = k->jpeg_len;
            rc = 0;
        }
        pthread_mutex_unlock(&k->mu);
    }
    return rc;
}

/* ---------------------------------------------------------- configure */

static int conf_int(const ev_conf *conf, const char *key, int64_t def, int64_t min, int64_t max,
                    int64_t *out, char *errstr, size_t errstr_size)
{
    if (ev_conf_get_int(conf, key, def, out, errstr, errstr_size))
        return -1;
    if (*out < min || *out > max) {
        snprintf(errstr, errstr_size, "config %s: expected %lld..%lld, got %lld", key,
                 (long long)min, (long long)max, (long long)*out);
        return -1;
    }
    return 0;
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    cp_capture *c = arg;
    int64_t w, h, fps, crf, bitrate, threads, pfps, pw, queued;
    if (conf_int(conf, "capture.width", 1280, 16, 8192, &w, errstr, errstr_size) ||
        conf_int(conf, "capture.height", 720, 16, 8192, &h, errstr, errstr_size) ||
        conf_int(conf, "capture.fps", 30, 1, 240, &fps, errstr, errstr_size) ||
        conf_int(conf, "capture.keyframe_interval_ms", 1000, 1, 60000, &c->keyframe_ms, errstr,
                 errstr_size) ||
        conf_int(conf, "capture.h264.crf", 23, 0, 51, &crf, errstr, errstr_size) ||
        conf_int(conf, "capture.h264.bitrate", 0, 0, 1000000000, &bitrate, errstr, errstr_size) ||
        conf_int(conf, "capture.h264.threads", 1, 1, 16, &threads, errstr, errstr_size) ||
        conf_int(conf, "capture.scan_ms", 1000, 50, 600000, &c->scan_ms, errstr, errstr_size) ||
        conf_int(conf, "capture.stall_ms", 2000, 100, 600000, &c->stall_ms, errstr, errstr_size) ||
        conf_int(conf, "capture.max_queued_bytes", 16 << 20, 1 << 20, (int64_t)1 << 32, &queued,
                 errstr, errstr_size) ||
        conf_int(conf, "capture.preview_fps", 1, 0, 30, &pfps, errstr, errstr_size) ||
        conf_int(conf, "capture.preview_width", 640, 16, 8192, &pw, errstr, errstr_size))
        return -1;
    if (crf == 0 && bitrate == 0) {
        snprintf(errstr, errstr_size,
                 "config capture.h264.crf = 0 needs capture.h264.bitrate (bits/s) > 0");
        return -1;
    }
    c->width = (int)w, c->height = (int)h, c->fps = (int)fps;
    c->preview_fps = (int)pfps, c->preview_width = (int)pw;
    c->max_queued = (size_t)queued;
    snprintf(c->prefer, sizeof(c->prefer), "%s", ev_conf_get(conf, "capture.format", "auto"));
    if (strcmp(c->prefer, "auto") && strcmp(c->prefer, "mjpeg") && strcmp(c->prefer, "yuyv") &&
        strcmp(c->prefer, "yuv420")) {
        snprintf(errstr, errstr_size,
                 "config capture.format: expected auto, mjpeg, yuyv or yuv420, got '%s'",
                 c->prefer);
        return -1;
    }
    snprintf(c->preset, sizeof(c->preset), "%s",
             ev_conf_get(conf, "capture.h264.preset", "ultrafast"));
    snprintf(c->tune, sizeof(c->tune), "%s", ev_conf_get(conf, "capture.h264.tune", "zerolatency"));
    c->enc =
        (cp_encode_params){c->preset, c->tune, (int)crf, bitrate, c->keyframe_ms, (int)threads};
    snprintf(c->devices, sizeof(c->devices), "%s",
             ev_conf_get(conf, "capture.devices", "/dev/video*"));
    if (cli_tls_load(&c->tls, conf, "msrs-capture", 0, errstr, errstr_size))
        return -1;
    snprintf(c->agent_url, sizeof(c->agent_url), "%s",
             ev_conf_get(conf, "capture.agent",
                         c->tls.plain ? "ws://127.0.0.1:8620/v1/devices"
                                      : "wss://127.0.0.1:8620/v1/devices"));
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    char def_prefix[80];
    snprintf(def_prefix, sizeof(def_prefix), "%.40s.", host);
    snprintf(c->prefix, sizeof(c->prefix), "%s",
             ev_conf_get(conf, "capture.id_prefix", def_prefix));
    const char *key_file = ev_conf_get(conf, "auth.key_file", "");
    if (*key_file) {
        if (cli_auth_read_key(key_file, c->key, errstr, errstr_size))
            return -1;
        c->have_key = 1;
    }
    return 0;
}

static int run(void *arg, ev_conf *conf, ev_log *unused)
{
    cp_capture *c = arg;
    char err[512];
    (void)unused;
    /* probes stamped with the kernel's receive time (common/rxstamp.c,
     * linked on purpose), or when read if recv and read are not ours */
    int kernel_stamps = rxstamp_check(err, sizeof(err)) == 0;
    if (!kernel_stamps)
        fprintf(stderr, "msrs-capture: clock probes stamped when read: %s\n", err);
    md_client_config mc = {.url = c->agent_url,
                           .ca_file = *c->tls.ca ? c->tls.ca : NULL,
                           .stamp_on_read = !kernel_stamps};
    lws_set_log_level(LLL_ERR, NULL);
    av_log_set_level(AV_LOG_ERROR);
    c->client = md_client_new(&mc, err, sizeof(err));
    if (!c->client) {
        fprintf(stderr, "msrs-capture: config capture.agent: %s\n", err);
        return strstr(err, "url") ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    cp_preview_source src = {preview_list, preview_jpeg, c};
    const char *listen = ev_conf_get(conf, "capture.preview_listen", "127.0.0.1:8630");
    if (strcmp(listen, "off") != 0 && *listen) {
        c->preview = cp_preview_start(md_client_lws_context(c->client), conf, listen, &src, err,
                                      sizeof(err));
        if (!c->preview) {
            fprintf(stderr, "msrs-capture: camera proxy: %s\n", err);
            md_client_destroy(c->client);
            return strstr(err, "config") ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        }
    }
    fprintf(stderr,
            "msrs-capture: cameras %s -> %s as %scam-*, %s %dx%d@%d (H.264 %s/%s, keyframe "
            "every %lld ms), camera proxy %s\n",
            c->devices, c->agent_url, c->prefix, c->prefer, c->width, c->height, c->fps, c->preset,
            c->tune, (long long)c->keyframe_ms, c->preview ? listen : "off");
    cli_ready("looking for cameras");
    int64_t next_scan = 0, next_status = cp_mono_ns() + 10000000000LL;
    while (!cli_stop) {
        int64_t now = cp_mono_ns();
        if (now >= next_scan) {
            scan(c);
            next_scan = now + c->scan_ms * 1000000;
        }
        if (now >= next_status) {
            status_line(c);
            next_status = now + 10000000000LL;
        }
        if (md_client_service(c->client, 50) != MD_OK) {
            fprintf(stderr, "msrs-capture: the WebSocket loop failed\n");
            break;
        }
    }
    cp_preview_stop(c->preview);
    for (int i = 0; i < c->ncams; i++)
        cp_camera_stop(c->cams[i]);
    status_line(c);
    md_client_destroy(c->client);
    for (int i = 0; i < c->ncams; i++) {
        free(c->cams[i]->jpeg);
        pthread_mutex_destroy(&c->cams[i]->mu);
        free(c->cams[i]);
    }
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    static cp_capture c;
    cli_svc svc = {.name = "msrs-capture",
                   .source = "capture",
                   .usage = usage,
                   .configure = configure,
                   .run = run,
                   .arg = &c,
                   .no_log = 1};
    return cli_svc_main(&svc, argc, argv);
}
