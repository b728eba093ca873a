/* v4l2.c — one camera through libv4l2: format negotiation (the camera's own
 * formats first, libv4l2's emulated ones after), mmap streaming, frames
 * with the driver's timestamps. */
#include "capture.h"

#include <errno.h>
#include <fcntl.h>
#include <libv4l2.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CP_BUFFERS 4

struct cp_v4l2 {
    int fd;
    char path[256];
    struct {
        void *start;
        size_t length;
    } bufs[CP_BUFFERS];
    int nbufs;
    int held; /* index of the buffer handed out, -1 none */
    struct v4l2_buffer cur;
    int streaming;
};

static int xioctl(int fd, unsigned long req, void *arg)
{
    int r;
    do
        r = v4l2_ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR);
    return r;
}

/* The format to ask for, from what ENUM_FMT lists (emulated ones too). */
static uint32_t choose(int fd, const char *prefer, cp_format *fmt)
{
    uint32_t want[3];
    int nwant = 0;
    if (strcmp(prefer, "mjpeg") == 0)
        want[nwant++] = V4L2_PIX_FMT_MJPEG;
    else if (strcmp(prefer, "yuyv") == 0)
        want[nwant++] = V4L2_PIX_FMT_YUYV;
    else if (strcmp(prefer, "yuv420") == 0)
        want[nwant++] = V4L2_PIX_FMT_YUV420;
    else
        want[0] = V4L2_PIX_FMT_MJPEG, want[1] = V4L2_PIX_FMT_YUYV, want[2] = V4L2_PIX_FMT_YUV420,
        nwant = 3;
    uint32_t have[32];
    int emulated[32], n = 0;
    fmt->native[0] = '\0';
    for (struct v4l2_fmtdesc d = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
         n < 32 && xioctl(fd, VIDIOC_ENUM_FMT, &d) == 0; d.index++) {
        have[n] = d.pixelformat;
        emulated[n++] = (d.flags & V4L2_FMT_FLAG_EMULATED) != 0;
        if (!(d.flags & V4L2_FMT_FLAG_EMULATED)) {
            char t[5];
            cp_fourcc_text(d.pixelformat, t);
            size_t l = strlen(fmt->native);
            snprintf(fmt->native + l, sizeof(fmt->native) - l, "%s%s", l ? "," : "", t);
        }
    }
    for (int w = 0; w < nwant; w++)
        for (int i = 0; i < n; i++)
            if (have[i] == want[w]) {
                fmt->emulated = emulated[i];
                return want[w];
            }
    return 0;
}

cp_v4l2 *cp_v4l2_open(const char *path, const char *prefer, int width, int height, int fps,
                      cp_format *fmt, char *card, size_t card_size, char *bus, size_t bus_size,
                      char *errstr, size_t errstr_size)
{
    cp_v4l2 *v = calloc(1, sizeof(*v));
    if (!v) {
        snprintf(errstr, errstr_size, "%s: out of memory", path);
        return NULL;
    }
    v->held = -1;
    snprintf(v->path, sizeof(v->path), "%s", path);
    memset(fmt, 0, sizeof(*fmt));
    /* read-write: libv4l2 maps the buffers shared to convert them */
    v->fd = v4l2_open(path, O_RDWR | O_NONBLOCK);
    if (v->fd < 0) {
        snprintf(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        free(v);
        return NULL;
    }
    struct v4l2_capability cap;
    memset(&cap, 0, sizeof(cap));
    if (xioctl(v->fd, VIDIOC_QUERYCAP, &cap) < 0) {
        snprintf(errstr, errstr_size, "%s: not a V4L2 device (VIDIOC_QUERYCAP: %s)", path,
                 strerror(errno));
        goto fail;
    }
    uint32_t caps = (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps : cap.capabilities;
    if (!(caps & V4L2_CAP_VIDEO_CAPTURE) || !(caps & V4L2_CAP_STREAMING)) {
        snprintf(errstr, errstr_size,
                 "%s: '%s' is not a streaming capture device (capabilities 0x%08x: expected "
                 "VIDEO_CAPTURE and STREAMING)",
                 path, (const char *)cap.card, caps);
        goto fail;
    }
    snprintf(card, card_size, "%s", (const char *)cap.card);
    snprintf(bus, bus_size, "%s", (const char *)cap.bus_info);
    uint32_t pixfmt = choose(v->fd, prefer, fmt);
    if (!pixfmt) {
        snprintf(errstr, errstr_size,
                 "%s: '%s' offers no format msrs-capture encodes (it offers %s; expected %s)", path,
                 card, *fmt->native ? fmt->native : "none",
                 strcmp(prefer, "auto") == 0 ? "MJPG, YUYV or YU12 (directly or converted by "
                                               "libv4l2)"
                                             : prefer);
        goto fail;
    }
    struct v4l2_format f = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    f.fmt.pix.width = (uint32_t)width;
    f.fmt.pix.height = (uint32_t)height;
    f.fmt.pix.pixelformat = pixfmt;
    f.fmt.pix.field = V4L2_FIELD_NONE;
    errno = 0;
    if (xioctl(v->fd, VIDIOC_S_FMT, &f) < 0 || f.fmt.pix.pixelformat != pixfmt) {
        /* libv4l2 lists its emulated formats whatever the camera has, and
         * passes S_FMT through when it cannot convert from it */
        char t[5], got[5];
        cp_fourcc_text(pixfmt, t);
        cp_fourcc_text(f.fmt.pix.pixelformat, got);
        snprintf(errstr, errstr_size,
                 "%s: '%s' offers no format msrs-capture encodes (it offers %s%s): VIDIOC_S_FMT "
                 "%s %dx%d %s%s",
                 path, card, *fmt->native ? fmt->native : "none",
                 fmt->emulated ? ", which libv4l2 cannot convert" : "", t, width, height,
                 errno ? "failed: " : "gave ", errno ? strerror(errno) : got);
        goto fail;
    }
    fmt->pixfmt = pixfmt;
    fmt->width = (int)f.fmt.pix.width;
    fmt->height = (int)f.fmt.pix.height;
    fmt->bytesperline = (int)f.fmt.pix.bytesperline;
    struct v4l2_streamparm parm = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    parm.parm.capture.timeperframe.numerator = 1;
    parm.parm.capture.timeperframe.denominator = (uint32_t)fps;
    fmt->fps = fps;
    if (xioctl(v->fd, VIDIOC_S_PARM, &parm) == 0 && parm.parm.capture.timeperframe.numerator)
        fmt->fps = (int)(parm.parm.capture.timeperframe.denominator /
                         parm.parm.capture.timeperframe.numerator);
    if (fmt->fps < 1)
        fmt->fps = fps;
    errno = 0;
    struct v4l2_requestbuffers req = {
        .count = CP_BUFFERS, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP};
    if (xioctl(v->fd, VIDIOC_REQBUFS, &req) < 0 || req.count < 2) {
        snprintf(errstr, errstr_size, "%s: VIDIOC_REQBUFS (mmap) failed: %s", path,
                 req.count < 2 && errno == 0 ? "fewer than 2 buffers" : strerror(errno));
        goto fail;
    }
    v->nbufs = (int)(req.count > CP_BUFFERS ? CP_BUFFERS : req.count);
    for (int i = 0; i < v->nbufs; i++) {
        struct v4l2_buffer b = {
            .type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP, .index = (uint32_t)i};
        if (xioctl(v->fd, VIDIOC_QUERYBUF, &b) < 0) {
            snprintf(errstr, errstr_size, "%s: VIDIOC_QUERYBUF %d: %s", path, i, strerror(errno));
            goto fail;
        }
        v->bufs[i].length = b.length;
        v->bufs[i].start =
            v4l2_mmap(NULL, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, b.m.offset);
        if (v->bufs[i].start == MAP_FAILED) {
            v->bufs[i].start = NULL;
            snprintf(errstr, errstr_size, "%s: mmap of buffer %d: %s", path, i, strerror(errno));
            goto fail;
        }
        if (xioctl(v->fd, VIDIOC_QBUF, &b) < 0) {
            snprintf(errstr, errstr_size, "%s: VIDIOC_QBUF %d: %s", path, i, strerror(errno));
            goto fail;
        }
    }
    enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (xioctl(v->fd, VIDIOC_STREAMON, &type) < 0) {
        snprintf(errstr, errstr_size, "%s: VIDIOC_STREAMON: %s", path, strerror(errno));
        goto fail;
    }
    v->streaming = 1;
    return v;
fail:
    cp_v4l2_close(v);
    return NULL;
}

int cp_v4l2_next(cp_v4l2 *v, int timeout_ms, cp_frame *f, char *errstr, size_t errstr_size)
{
    struct pollfd p = {.fd = v->fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r < 0 && errno != EINTR) {
        snprintf(errstr, errstr_size, "%s: poll: %s", v->path, strerror(errno));
        return -1;
    }
    if (r <= 0)
        return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
        snprintf(errstr, errstr_size, "%s: the camera is gone (poll: %s)", v->path,
                 p.revents & POLLHUP ? "hang-up" : "error");
        return -1;
    }
    memset(&v->cur, 0, sizeof(v->cur));
    v->cur.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    v->cur.memory = V4L2_MEMORY_MMAP;
    if (xioctl(v->fd, VIDIOC_DQBUF, &v->cur) < 0) {
        if (errno == EAGAIN)
            return 0;
        snprintf(errstr, errstr_size, "%s: VIDIOC_DQBUF: %s", v->path,
                 errno == ENODEV ? "the camera is gone (unplugged)" : strerror(errno));
        return -1;
    }
    int64_t now = cp_mono_ns();
    if (v->cur.index >= (uint32_t)v->nbufs) {
        snprintf(errstr, errstr_size, "%s: VIDIOC_DQBUF gave buffer %u of %d", v->path,
                 v->cur.index, v->nbufs);
        return -1;
    }
    v->held = (int)v->cur.index;
    if (v->cur.flags & V4L2_BUF_FLAG_ERROR) { /* the driver says the data is bad: lost */
        cp_v4l2_release(v);
        return 0;
    }
    f->data = v->bufs[v->held].start;
    f->len = v->cur.bytesused;
    f->sequence = v->cur.sequence;
    f->driver_stamp =
        (v->cur.flags & V4L2_BUF_FLAG_TIMESTAMP_MASK) == V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
    f->time_ns = f->driver_stamp ? (int64_t)v->cur.timestamp.tv_sec * 1000000000 +
                                       (int64_t)v->cur.timestamp.tv_usec * 1000
                                 : now;
    return 1;
}

void cp_v4l2_release(cp_v4l2 *v)
{
    if (v->held < 0)
        return;
    struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
                            .memory = V4L2_MEMORY_MMAP,
                            .index = (uint32_t)v->held};
    xioctl(v->fd, VIDIOC_QBUF, &b); /* a gone camera fails here too: next says so */
    v->held = -1;
}

void cp_v4l2_close(cp_v4l2 *v)
{
    if (!v)
        return;
    if (v->streaming) {
        enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
        xioctl(v->fd, VIDIOC_STREAMOFF, &type);
    }
    for (int i = 0; i < CP_BUFFERS; i++)
        if (v->bufs[i].start)
            v4l2_munmap(v->bufs[i].start, v->bufs[i].length);
    if (v->fd >= 0)
        v4l2_close(v->fd);
    free(v);
}
