/* encode.c — a camera's frames as packets: H.264 through libavcodec's
 * libx264 for raw formats (YUYV converted to 4:2:0 with libswscale, YU12 as
 * it is), MJPEG passed through untouched; and a small JPEG now and then for
 * the camera proxy. */
#include "capture.h"

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CP_HELD 64 /* frames an encoder may hold (x264's lookahead is far less) */

struct cp_encoder {
    cp_format fmt;
    AVCodecContext *enc; /* NULL: MJPEG passed through */
    AVFrame *frame;
    AVPacket *pkt;
    struct SwsContext *sws;
    int64_t frames, last_pts;
    struct {
        int64_t pts, seq, time_ns;
    } held[CP_HELD]; /* frames given to the encoder, by pts: a packet names its frame */
    int preview_failed;
    /* the preview: a JPEG encoder of its own, at a smaller size */
    AVCodecContext *jpeg;
    AVFrame *small;
    struct SwsContext *sws_small;
    int small_w;
    int64_t previews;
};

static enum AVPixelFormat av_format_of(uint32_t pixfmt)
{
    return pixfmt == V4L2_PIX_FMT_YUYV ? AV_PIX_FMT_YUYV422 : AV_PIX_FMT_YUV420P;
}

cp_encoder *cp_encoder_new(const cp_format *fmt, const cp_encode_params *p, char *errstr,
                           size_t errstr_size)
{
    cp_encoder *e = calloc(1, sizeof(*e));
    if (!e) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    e->fmt = *fmt;
    if (fmt->pixfmt == V4L2_PIX_FMT_MJPEG)
        return e; /* passed through: every frame is a keyframe */
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec) {
        snprintf(errstr, errstr_size, "libavcodec has no libx264 encoder");
        goto fail;
    }
    e->enc = avcodec_alloc_context3(codec);
    e->frame = av_frame_alloc();
    e->pkt = av_packet_alloc();
    if (!e->enc || !e->frame || !e->pkt) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    e->enc->width = fmt->width;
    e->enc->height = fmt->height;
    /* pts in frame periods (from the frame's time: a dropped frame leaves a
     * hole): libx264 works per frame, and a 1 us time base cost ~10 % more */
    e->enc->time_base = (AVRational){1, fmt->fps};
    e->enc->framerate = (AVRational){fmt->fps, 1};
    e->enc->pix_fmt = AV_PIX_FMT_YUV420P;
    e->enc->gop_size = (int)((p->keyframe_ms * fmt->fps + 999) / 1000);
    if (e->enc->gop_size < 1)
        e->enc->gop_size = 1;
    e->enc->max_b_frames = 0; /* packets in capture order, one per frame */
    e->enc->thread_count = p->threads > 0 ? p->threads : 1;
    if (p->crf <= 0 && p->bitrate > 0)
        e->enc->bit_rate = p->bitrate;
    av_opt_set(e->enc->priv_data, "preset", p->preset, 0);
    av_opt_set(e->enc->priv_data, "tune", p->tune, 0);
    if (p->crf > 0)
        av_opt_set_int(e->enc->priv_data, "crf", p->crf, 0);
    /* every keyframe carries SPS/PPS: a session's video decodes from its
     * first packet (docs/protocol.md, Media) */
    av_opt_set(e->enc->priv_data, "x264-params", "repeat-headers=1", 0);
    int rc = avcodec_open2(e->enc, codec, NULL);
    if (rc < 0) {
        snprintf(errstr, errstr_size, "libx264 %dx%d (preset %s, tune %s): %s", fmt->width,
                 fmt->height, p->preset, p->tune, av_err2str(rc));
        goto fail;
    }
    e->frame->format = AV_PIX_FMT_YUV420P;
    e->frame->width = fmt->width;
    e->frame->height = fmt->height;
    if (av_frame_get_buffer(e->frame, 0) < 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (fmt->pixfmt == V4L2_PIX_FMT_YUYV) {
        e->sws =
            sws_getContext(fmt->width, fmt->height, AV_PIX_FMT_YUYV422, fmt->width, fmt->height,
                           AV_PIX_FMT_YUV420P, SWS_FAST_BILINEAR, NULL, NULL, NULL);
        if (!e->sws) {
            snprintf(errstr, errstr_size, "libswscale cannot convert YUYV to 4:2:0");
            goto fail;
        }
    }
    return e;
fail:
    cp_encoder_destroy(e);
    return NULL;
}

const char *cp_encoder_codec(const cp_encoder *e)
{
    return e->enc ? "h264" : "mjpeg";
}

/* Points src/stride at the raw frame's planes. -1 when it is short. */
static int planes(const cp_encoder *e, const cp_frame *f, const uint8_t *src[4], int stride[4])
{
    enum AVPixelFormat pf = av_format_of(e->fmt.pixfmt);
    int need = av_image_get_buffer_size(pf, e->fmt.width, e->fmt.height, 1);
    if (need < 0 || f->len < (size_t)need)
        return -1;
    if (av_image_fill_arrays((uint8_t **)src, stride, f->data, pf, e->fmt.width, e->fmt.height, 1) <
        0)
        return -1;
    if (pf == AV_PIX_FMT_YUYV422 && e->fmt.bytesperline > stride[0]) { /* padded lines */
        if (f->len < (size_t)e->fmt.bytesperline * (size_t)e->fmt.height)
            return -1;
        stride[0] = e->fmt.bytesperline;
    }
    return 0;
}

int cp_encoder_put(cp_encoder *e, const cp_frame *f, int64_t seq, int force_key, cp_packet *out,
                   char *errstr, size_t errstr_size)
{
    if (!e->enc) {
        if (f->len < 4 || f->data[0] != 0xFF || f->data[1] != 0xD8) {
            snprintf(errstr, errstr_size, "an MJPEG frame of %zu bytes that is not a JPEG", f->len);
            return -1;
        }
        *out = (cp_packet){f->data, f->len, 1, seq, f->time_ns};
        e->frames++;
        return 1;
    }
    const uint8_t *src[4] = {0};
    int stride[4] = {0};
    if (planes(e, f, src, stride)) {
        snprintf(errstr, errstr_size, "a frame of %zu bytes, short for %dx%d", f->len, e->fmt.width,
                 e->fmt.height);
        return -1;
    }
    if (av_frame_make_writable(e->frame) < 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (e->sws)
        sws_scale(e->sws, src, stride, 0, e->fmt.height, e->frame->data, e->frame->linesize);
    else
        av_image_copy(e->frame->data, e->frame->linesize, src, stride, AV_PIX_FMT_YUV420P,
                      e->fmt.width, e->fmt.height);
    int64_t pts = (f->time_ns / 1000) * e->fmt.fps / 1000000;
    e->frame->pts = pts > e->last_pts ? pts : e->last_pts + 1;
    e->last_pts = e->frame->pts;
    int slot = (int)(e->frame->pts % CP_HELD);
    e->held[slot].pts = e->frame->pts, e->held[slot].seq = seq, e->held[slot].time_ns = f->time_ns;
    e->frame->pict_type = force_key ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
    int rc = avcodec_send_frame(e->enc, e->frame);
    if (rc < 0) {
        snprintf(errstr, errstr_size, "libx264: %s", av_err2str(rc));
        return -1;
    }
    e->frames++;
    av_packet_unref(e->pkt);
    rc = avcodec_receive_packet(e->enc, e->pkt);
    if (rc == AVERROR(EAGAIN))
        return 0;
    if (rc < 0) {
        snprintf(errstr, errstr_size, "libx264: %s", av_err2str(rc));
        return -1;
    }
    int got = (int)(e->pkt->pts % CP_HELD);
    if (e->pkt->pts < 0 || e->held[got].pts != e->pkt->pts) {
        snprintf(errstr, errstr_size,
                 "libx264 gave a packet of pts %lld, held longer than %d frames",
                 (long long)e->pkt->pts, CP_HELD);
        return -1;
    }
    *out = (cp_packet){e->pkt->data, (size_t)e->pkt->size, (e->pkt->flags & AV_PKT_FLAG_KEY) != 0,
                       e->held[got].seq, e->held[got].time_ns};
    return 1;
}

static int preview_open(cp_encoder *e, int max_width)
{
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    int w = e->fmt.width > max_width ? max_width : e->fmt.width;
    int h = (int)((int64_t)e->fmt.height * w / e->fmt.width) & ~1;
    w &= ~1;
    if (!codec || w < 2 || h < 2)
        return -1;
    e->jpeg = avcodec_alloc_context3(codec);
    e->small = av_frame_alloc();
    if (!e->jpeg || !e->small)
        return -1;
    e->jpeg->width = w;
    e->jpeg->height = h;
    e->jpeg->time_base = (AVRational){1, 25};
    e->jpeg->pix_fmt = AV_PIX_FMT_YUVJ420P;
    e->jpeg->flags |= AV_CODEC_FLAG_QSCALE;
    e->jpeg->global_quality = FF_QP2LAMBDA * 5;
    if (avcodec_open2(e->jpeg, codec, NULL) < 0)
        return -1;
    e->small->format = AV_PIX_FMT_YUVJ420P;
    e->small->width = w;
    e->small->height = h;
    if (av_frame_get_buffer(e->small, 0) < 0)
        return -1;
    e->sws_small = sws_getContext(e->fmt.width, e->fmt.height, av_format_of(e->fmt.pixfmt), w, h,
                                  AV_PIX_FMT_YUVJ420P, SWS_FAST_BILINEAR, NULL, NULL, NULL);
    e->small_w = w;
    return e->sws_small ? 0 : -1;
}

int cp_encoder_preview(cp_encoder *e, const cp_frame *f, int max_width, unsigned char **jpeg,
                       size_t *len)
{
    if (!e->enc) { /* an MJPEG camera's frame is a JPEG already */
        if (f->len < 4 || !(*jpeg = malloc(f->len)))
            return -1;
        memcpy(*jpeg, f->data, f->len);
        *len = f->len;
        return 0;
    }
    const uint8_t *src[4] = {0};
    int stride[4] = {0};
    if (e->preview_failed)
        return -1;
    if (!e->jpeg && preview_open(e, max_width)) {
        e->preview_failed = 1; /* said by the proxy: no image from this camera */
        return -1;
    }
    if (planes(e, f, src, stride) || av_frame_make_writable(e->small) < 0)
        return -1;
    sws_scale(e->sws_small, src, stride, 0, e->fmt.height, e->small->data, e->small->linesize);
    e->small->pts = e->previews++;
    AVPacket *pkt = av_packet_alloc();
    int rc = -1;
    if (pkt && avcodec_send_frame(e->jpeg, e->small) == 0 &&
        avcodec_receive_packet(e->jpeg, pkt) == 0 && (*jpeg = malloc((size_t)pkt->size))) {
        memcpy(*jpeg, pkt->data, (size_t)pkt->size);
        *len = (size_t)pkt->size;
        rc = 0;
    }
    av_packet_free(&pkt);
    return rc;
}

void cp_encoder_destroy(cp_encoder *e)
{
    if (!e)
        return;
    avcodec_free_context(&e->enc);
    av_frame_free(&e->frame);
    av_packet_free(&e->pkt);
    sws_freeContext(e->sws);
    avcodec_free_context(&e->jpeg);
    av_frame_free(&e->small);
    sws_freeContext(e->sws_small);
    free(e);
}
