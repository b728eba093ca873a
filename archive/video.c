/* video.c — a session's video stream as a file a person opens: Matroska
 * written by libavformat beside the elementary stream, each packet at its
 * master time. Matroska counts time in milliseconds (its usual timestamp
 * scale), so a packet's PTS is its master time rounded to the ms; the
 * exact ns stay in the stream's .frames.avro index. The codec's headers
 * (SPS/PPS, VOL) come from the first keyframe through libavcodec's
 * extract_extradata filter, as Matroska wants them in CodecPrivate. */
#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavformat/avformat.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct ar__mkv {
    char path[1024];
    int wb_fd;              /* the file, read-only: ar__writeback (avio keeps its own descriptor) */
    int64_t unsynced_bytes; /* written since the last ar__writeback */
    int64_t started_to;     /* bytes the last ar__writeback started writing */
    AVFormatContext *fmt;
    AVStream *st;
    AVPacket *pkt;
    int64_t last_ms;
};

static enum AVCodecID codec_id_of(const char *codec)
{
    if (strstr(codec, "264"))
        return AV_CODEC_ID_H264;
    if (strstr(codec, "265") || strcmp(codec, "hevc") == 0)
        return AV_CODEC_ID_HEVC;
    if (strcmp(codec, "mpeg4") == 0)
        return AV_CODEC_ID_MPEG4;
    if (strstr(codec, "jpeg"))
        return AV_CODEC_ID_MJPEG;
    return AV_CODEC_ID_NONE;
}

/* The codec's headers in key, into par->extradata. 0, or -1. */
static int extradata_of(AVCodecParameters *par, const void *key, size_t len)
{
    const AVBitStreamFilter *f = av_bsf_get_by_name("extract_extradata");
    AVBSFContext *bsf = NULL;
    AVPacket *pkt = av_packet_alloc();
    int rc = -1;
    if (!f || !pkt || av_bsf_alloc(f, &bsf) < 0 || avcodec_parameters_copy(bsf->par_in, par) < 0 ||
        av_bsf_init(bsf) < 0 || av_new_packet(pkt, (int)len) < 0)
        goto out;
    memcpy(pkt->data, key, len);
    if (av_bsf_send_packet(bsf, pkt) < 0 || av_bsf_receive_packet(bsf, pkt) < 0)
        goto out;
    size_t size = 0;
    const uint8_t *data = av_packet_get_side_data(pkt, AV_PKT_DATA_NEW_EXTRADATA, &size);
    if (!data || !size || !(par->extradata = av_mallocz(size + AV_INPUT_BUFFER_PADDING_SIZE)))
        goto out;
    memcpy(par->extradata, data, size);
    par->extradata_size = (int)size;
    rc = 0;
out:
    av_bsf_free(&bsf);
    av_packet_free(&pkt);
    return rc;
}

ar__mkv *ar__mkv_open(const char *path, const char *codec, int width, int height, const void *key,
                      size_t len, int *code, char *errstr, size_t errstr_size)
{
    enum AVCodecID id = codec_id_of(codec);
    ar__mkv *m = calloc(1, sizeof(*m));
    if (!m) {
        *code = ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    snprintf(m->path, sizeof(m->path), "%s", path);
    m->wb_fd = -1;
    if (len > INT_MAX - AV_INPUT_BUFFER_PADDING_SIZE) {
        *code =
            ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: a keyframe of %zu bytes", path, len);
        free(m);
        return NULL;
    }
    int rc = avformat_alloc_output_context2(&m->fmt, NULL, "matroska", path);
    if (rc < 0 || !(m->st = avformat_new_stream(m->fmt, NULL)) || !(m->pkt = av_packet_alloc())) {
        *code = ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "%s: libavformat: %s", path,
                         rc < 0 ? av_err2str(rc) : "out of memory");
        goto fail;
    }
    AVCodecParameters *par = m->st->codecpar;
    par->codec_type = AVMEDIA_TYPE_VIDEO;
    par->codec_id = id;
    par->width = width;
    par->height = height;
    m->st->time_base = (AVRational){1, 1000};
    if (id != AV_CODEC_ID_MJPEG && extradata_of(par, key, len)) {
        *code =
            ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                     "%s: the first keyframe carries no %s headers (SPS/PPS or VOL)", path, codec);
        goto fail;
    }
    /* No CRC-32 element in every cluster: the manifest's SHA-256 already
     * covers each file whole, and at 100 MB/s the CRCs were ~19 % of the
     * archiver's CPU (perf, bench/README.md) */
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "write_crc32", "0", 0);
    if ((rc = avio_open(&m->fmt->pb, path, AVIO_FLAG_WRITE)) < 0 ||
        (rc = avformat_write_header(m->fmt, &opts)) < 0) {
        av_dict_free(&opts);
        *code = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", path, av_err2str(rc));
        goto fail;
    }
    av_dict_free(&opts);
    m->wb_fd = open(path, O_RDONLY | O_CLOEXEC); /* -1: written, not written back early */
    m->last_ms = INT64_MIN;
    return m;
fail:
    if (m->fmt && m->fmt->pb)
        avio_closep(&m->fmt->pb);
    avformat_free_context(m->fmt);
    av_packet_free(&m->pkt);
    free(m);
    return NULL;
}

int ar__mkv_codec_known(const char *codec)
{
    return codec_id_of(codec) != AV_CODEC_ID_NONE;
}

int ar__mkv_write(ar__mkv *m, const void *data, size_t len, int64_t master_ns, int keyframe,
                  char *errstr, size_t errstr_size)
{
    int64_t ms = (master_ns + 500000) / 1000000;
    if (ms < m->last_ms) /* a clock fit that moved back by less than a frame */
        ms = m->last_ms;
    m->last_ms = ms;
    av_packet_unref(m->pkt);
    if (len > INT_MAX - AV_INPUT_BUFFER_PADDING_SIZE)
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: a packet of %zu bytes", m->path,
                        len);
    int rc = av_new_packet(m->pkt, (int)len);
    if (rc < 0)
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "%s: out of memory", m->path);
    memcpy(m->pkt->data, data, len);
    m->pkt->pts = m->pkt->dts = av_rescale_q(ms, (AVRational){1, 1000}, m->st->time_base);
    m->pkt->stream_index = m->st->index;
    m->pkt->flags = keyframe ? AV_PKT_FLAG_KEY : 0;
    rc = av_write_frame(m->fmt, m->pkt);
    if (rc < 0)
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", m->path, av_err2str(rc));
    if (ar__writeback_due(&m->unsynced_bytes, len)) {
        avio_flush(m->fmt->pb); /* avio's buffer into the file first */
        if (m->fmt->pb->error < 0)
            return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", m->path,
                            av_err2str(m->fmt->pb->error));
        if (ar__writeback(m->wb_fd, &m->started_to))
            return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: writing to disk: %s", m->path,
                            strerror(errno));
    }
    return 0;
}

int ar__mkv_close(ar__mkv *m)
{
    if (!m)
        return 0;
    int rc = av_write_trailer(m->fmt);
    if (avio_closep(&m->fmt->pb) < 0)
        rc = -1;
    avformat_free_context(m->fmt);
    av_packet_free(&m->pkt);
    if (m->wb_fd >= 0)
        close(m->wb_fd);
    free(m);
    return rc < 0 ? -1 : 0;
}
