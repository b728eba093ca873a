/* bench_encode — the raw ceiling for msrs-capture: libavcodec's libx264
 * encoding the test camera's frames (tests/testcam/pattern.h, the frames
 * msrs-capture encodes in bench_capture.py) with msrs-capture's default
 * settings (ultrafast, zerolatency, crf 23, a keyframe a second,
 * repeat-headers, one thread per stream), YUYV converted to 4:2:0 by
 * libswscale as capture does: once as fast as one thread goes (the
 * ceiling), once as STREAMS cameras at FPS would give them (each thread
 * sleeps until its next frame is due: caches go cold between frames, as
 * they do in msrs-capture). Prints the CPU time per frame of conversion
 * and of encoding, and the frames per second of one core.
 *   bench_encode [WIDTH HEIGHT FRAMES [STREAMS FPS]]   default 1280 720 600 4 30 */
#include "pattern.h"

#include <libavcodec/avcodec.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct job {
    int w, h, frames, fps; /* fps 0: back to back */
    double convert, encode, pattern;
    int64_t bytes;
    int failed;
} job;

static void *encode_stream(void *arg)
{
    job *j = arg;
    int w = j->w, h = j->h;
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    AVCodecContext *enc = codec ? avcodec_alloc_context3(codec) : NULL;
    AVFrame *f = av_frame_alloc();
    AVPacket *pkt = av_packet_alloc();
    unsigned char *img = malloc((size_t)w * h * 2);
    j->failed = 1;
    if (!enc || !f || !pkt || !img)
        return NULL;
    enc->width = w;
    enc->height = h;
    enc->time_base = (AVRational){1, 30};
    enc->framerate = (AVRational){30, 1};
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->gop_size = 30;
    enc->max_b_frames = 0;
    enc->thread_count = 1;
    av_opt_set(enc->priv_data, "preset", "ultrafast", 0);
    av_opt_set(enc->priv_data, "tune", "zerolatency", 0);
    av_opt_set_int(enc->priv_data, "crf", 23, 0);
    av_opt_set(enc->priv_data, "x264-params", "repeat-headers=1", 0);
    if (avcodec_open2(enc, codec, NULL) < 0)
        return NULL;
    f->format = AV_PIX_FMT_YUV420P;
    f->width = w;
    f->height = h;
    if (av_frame_get_buffer(f, 0) < 0)
        return NULL;
    struct SwsContext *sws = sws_getContext(w, h, AV_PIX_FMT_YUYV422, w, h, AV_PIX_FMT_YUV420P,
                                            SWS_FAST_BILINEAR, NULL, NULL, NULL);
    int64_t start = mono_ns();
    for (int k = 0; k < j->frames; k++) {
        if (j->fps) { /* a camera's cadence: the frame when it is due */
            int64_t due = start + (int64_t)k * 1000000000 / j->fps, now = mono_ns();
            if (due > now) {
                struct timespec ts = {(due - now) / 1000000000, (due - now) % 1000000000};
                nanosleep(&ts, NULL);
            }
        }
        double tp = cpu_s();
        tc_pattern_yuyv(img, (uint32_t)w, (uint32_t)h, k);
        double t0 = cpu_s();
        const uint8_t *src[4] = {img, NULL, NULL, NULL};
        int stride[4] = {w * 2, 0, 0, 0};
        av_frame_make_writable(f);
        sws_scale(sws, src, stride, 0, h, f->data, f->linesize);
        double t1 = cpu_s();
        f->pts = k;
        if (avcodec_send_frame(enc, f) < 0)
            return NULL;
        while (avcodec_receive_packet(enc, pkt) == 0) {
            j->bytes += pkt->size;
            av_packet_unref(pkt);
        }
        double t2 = cpu_s();
        j->pattern += t0 - tp;
        j->convert += t1 - t0;
        j->encode += t2 - t1;
    }
    sws_freeContext(sws);
    free(img);
    av_packet_free(&pkt);
    av_frame_free(&f);
    avcodec_free_context(&enc);
    j->failed = 0;
    return NULL;
}

/* Runs streams encoders at once (each on a thread, fps 0: back to back)
 * and prints what a frame cost. 0 or 1. */
static int run(int w, int h, int frames, int streams, int fps, const char *what)
{
    job jobs[16];
    pthread_t t[16];
    double convert = 0, encode = 0, pattern = 0;
    int64_t bytes = 0;
    for (int i = 0; i < streams; i++) {
        jobs[i] = (job){w, h, frames, fps, 0, 0, 0, 0, 0};
        pthread_create(&t[i], NULL, encode_stream, &jobs[i]);
    }
    for (int i = 0; i < streams; i++) {
        pthread_join(t[i], NULL);
        if (jobs[i].failed) {
            fprintf(stderr, "bench_encode: no libx264 encoder, or out of memory\n");
            return 1;
        }
        convert += jobs[i].convert, encode += jobs[i].encode, pattern += jobs[i].pattern;
        bytes += jobs[i].bytes;
    }
    int n = frames * streams;
    double per = (convert + encode) / n;
    printf("%s: libswscale YUYV->4:2:0 %.3f ms/frame, libx264 %.3f ms/frame, together %.3f "
           "ms/frame (%.0f frames/s per core); %.1f KiB/frame; drawing the frame (the test "
           "camera's own work) %.3f ms/frame\n",
           what, convert / n * 1e3, encode / n * 1e3, per * 1e3, 1.0 / per,
           (double)bytes / n / 1024, pattern / n * 1e3);
    return 0;
}

int main(int argc, char **argv)
{
    int w = argc > 3 ? atoi(argv[1]) : 1280, h = argc > 3 ? atoi(argv[2]) : 720;
    int frames = argc > 3 ? atoi(argv[3]) : 600;
    int streams = argc > 5 ? atoi(argv[4]) : 4, fps = argc > 5 ? atoi(argv[5]) : 30;
    if (w < 16 || h < 16 || frames < 1 || streams < 1 || streams > 16 || fps < 1) {
        fprintf(stderr, "usage: bench_encode [WIDTH HEIGHT FRAMES [STREAMS FPS]]\n");
        return 2;
    }
    av_log_set_level(AV_LOG_ERROR);
    printf("bench_encode %d %d %d %d %d\n", w, h, frames, streams, fps);
    char what[128];
    snprintf(what, sizeof(what), "raw, back to back, 1 stream");
    if (run(w, h, frames, 1, 0, what))
        return 1;
    snprintf(what, sizeof(what), "raw, %d streams at %d fps each (a camera's cadence)", streams,
             fps);
    return run(w, h, frames, streams, fps, what);
}
