/* testcam.c — a libv4l2 plugin that makes a regular file act as a V4L2
 * camera, so msrs-capture's real path (v4l2_open, ENUM_FMT/S_FMT/S_PARM,
 * REQBUFS/QUERYBUF/mmap/QBUF/DQBUF, libv4l2's conversion) runs on machines
 * without a camera, kernel module or CUSE. Installed as a .so in libv4l's
 * plugins folder (tests/testcam/install.sh), it claims only regular files
 * that begin with "MSRSCAM1"; every other open is left alone.
 *
 * A camera file is a 4096-byte text header, then the buffers' frames (each
 * at a page-aligned offset: libv4l2 and the application mmap the file
 * there). The header, re-read on every DQBUF, is key=value lines:
 *   card=..., bus=...           QUERYCAP's card and bus_info
 *   formats=YUYV,MJPG           what ENUM_FMT lists, in order (any fourcc)
 *   width=, height=, fps=       the one frame size and rate
 *   mjpeg=PATH                  MJPG frames: the JPEGs of PATH in a loop
 *   state=ok|stalled|unplugged  stalled: no frames (time goes on, so the
 *                               sequence jumps after); unplugged: every
 *                               ioctl fails with ENODEV
 *   clock=monotonic|unknown     the buffers' timestamp flag
 * The driver is modelled in time: frame k is due at STREAMON + k/fps and
 * fills the oldest queued buffer, or is lost when none is queued (its
 * sequence number skipped, as a real driver's). A YUYV frame's first 16
 * bytes are "MSRSFRM1" and k (little-endian), the rest a pattern moving
 * with k. DQBUF blocks until a frame is due; with O_NONBLOCK it waits at
 * most 200 ms and says EAGAIN, as a poll with that timeout would (a regular
 * file is always ready to poll, so a caller that polls first would spin
 * otherwise, and libv4l2 prints every EAGAIN). */
#include "pattern.h"
#include <errno.h>
#include <fcntl.h>

#include <libv4l-plugin.h>
#include <linux/videodev2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TC_HEADER      4096
#define TC_MAX_BUFS    8
#define TC_MAX_FORMATS 8

typedef struct tc_cam {
    int fd;
    char card[32], bus[32];
    uint32_t formats[TC_MAX_FORMATS];
    int format_count;
    uint32_t width, height, fps, pixfmt;
    int stalled, unplugged, clock_unknown;
    unsigned char *jpeg;
    size_t jpeg_len;
    size_t *jpeg_at, *jpeg_size;
    int jpeg_count;
    /* buffers */
    int nbufs;
    size_t buf_size;
    unsigned char *map; /* the buffers, mapped here too: frames written in place */
    size_t map_len;
    int queued[TC_MAX_BUFS]; /* FIFO of queued buffer indices */
    int nqueued;
    struct {
        int index;
        int64_t k, ts;
    } done[TC_MAX_BUFS];
    int ndone;
    int is_queued[TC_MAX_BUFS];
    int64_t t0, last_k;
    volatile int streaming;
    pthread_mutex_t mu;
} tc_cam;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t fourcc_of(const char *s)
{
    return (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
}

static size_t image_size(const tc_cam *c, uint32_t pixfmt)
{
    return pixfmt == V4L2_PIX_FMT_YUYV ? (size_t)c->width * c->height * 2
                                       : (size_t)c->width * c->height * 2; /* JPEGs fit */
}

static void load_jpegs(tc_cam *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n <= 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return;
    }
    c->jpeg = n > 0 ? malloc((size_t)n) : NULL;
    if (c->jpeg && fread(c->jpeg, 1, (size_t)n, f) == (size_t)n)
        c->jpeg_len = (size_t)n;
    fclose(f);
    /* the JPEGs: SOI (FFD8) to EOI (FFD9) */
    size_t cap = 0;
    for (size_t i = 0; i + 1 < c->jpeg_len;) {
        if (c->jpeg[i] != 0xFF || c->jpeg[i + 1] != 0xD8) {
            i++;
            continue;
        }
        size_t j = i + 2;
        while (j + 1 < c->jpeg_len && !(c->jpeg[j] == 0xFF && c->jpeg[j + 1] == 0xD9))
            j++;
        if (j + 1 >= c->jpeg_len)
            break;
        if (c->jpeg_count == (int)cap) {
            cap = cap ? cap * 2 : 64;
            size_t *at = realloc(c->jpeg_at, cap * sizeof(size_t));
            if (at)
                c->jpeg_at = at;
            size_t *size = at ? realloc(c->jpeg_size, cap * sizeof(size_t)) : NULL;
            if (!size)
                break; /* the JPEGs found so far */
            c->jpeg_size = size;
        }
        c->jpeg_at[c->jpeg_count] = i;
        c->jpeg_size[c->jpeg_count++] = j + 2 - i;
        i = j + 2;
    }
}

/* Reads the header; first: everything, else only the state. -1 when it is
 * not a camera file. */
static int read_header(tc_cam *c, int first)
{
    char h[TC_HEADER + 1];
    ssize_t n = pread(c->fd, h, TC_HEADER, 0);
    if (n < 9 || memcmp(h, "MSRSCAM1\n", 9) != 0)
        return -1;
    h[n] = '\0';
    c->stalled = c->unplugged = 0;
    for (char *save = NULL, *line = strtok_r(h + 9, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (strcmp(k, "state") == 0) {
            c->stalled = strcmp(v, "stalled") == 0;
            c->unplugged = strcmp(v, "unplugged") == 0;
        } else if (!first) {
            continue;
        } else if (strcmp(k, "card") == 0) {
            snprintf(c->card, sizeof(c->card), "%s", v);
        } else if (strcmp(k, "bus") == 0) {
            snprintf(c->bus, sizeof(c->bus), "%s", v);
        } else if (strcmp(k, "width") == 0) {
            c->width = (uint32_t)atoi(v);
        } else if (strcmp(k, "height") == 0) {
            c->height = (uint32_t)atoi(v);
        } else if (strcmp(k, "fps") == 0) {
            c->fps = (uint32_t)atoi(v);
        } else if (strcmp(k, "clock") == 0) {
            c->clock_unknown = strcmp(v, "unknown") == 0;
        } else if (strcmp(k, "mjpeg") == 0) {
            load_jpegs(c, v);
        } else if (strcmp(k, "formats") == 0) {
            for (const char *p = v; strlen(p) >= 4 && c->format_count < TC_MAX_FORMATS;) {
                c->formats[c->format_count++] = fourcc_of(p);
                p += 4;
                if (*p == ',')
                    p++;
            }
        }
    }
    return 0;
}

static void unmap(tc_cam *c)
{
    if (c->map)
        munmap(c->map, c->map_len);
    c->map = NULL;
    c->map_len = 0;
}

static void tc_close(void *priv);

static void *tc_init(int fd)
{
    struct stat st;
    char magic[9];
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || pread(fd, magic, 9, 0) != 9 ||
        memcmp(magic, "MSRSCAM1\n", 9) != 0)
        return NULL;
    tc_cam *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->fd = fd;
    c->width = 640, c->height = 480, c->fps = 30;
    pthread_mutex_init(&c->mu, NULL);
    if (read_header(c, 1) || !c->format_count || !c->width || !c->height || !c->fps) {
        tc_close(c);
        return NULL;
    }
    c->pixfmt = c->formats[0];
    return c;
}

static void tc_close(void *priv)
{
    tc_cam *c = priv;
    if (!c)
        return;
    unmap(c);
    pthread_mutex_destroy(&c->mu);
    free(c->jpeg);
    free(c->jpeg_at);
    free(c->jpeg_size);
    free(c);
}

static int has_format(const tc_cam *c, uint32_t f)
{
    for (int i = 0; i < c->format_count; i++)
        if (c->formats[i] == f)
            return 1;
    return 0;
}

static void fill_format(const tc_cam *c, struct v4l2_format *f, uint32_t pixfmt)
{
    memset(&f->fmt.pix, 0, sizeof(f->fmt.pix));
    f->fmt.pix.width = c->width;
    f->fmt.pix.height = c->height;
    f->fmt.pix.pixelformat = pixfmt;
    f->fmt.pix.field = V4L2_FIELD_NONE;
    f->fmt.pix.bytesperline = pixfmt == V4L2_PIX_FMT_YUYV ? c->width * 2 : 0;
    f->fmt.pix.sizeimage = (uint32_t)image_size(c, pixfmt);
    f->fmt.pix.colorspace =
        pixfmt == V4L2_PIX_FMT_MJPEG ? V4L2_COLORSPACE_JPEG : V4L2_COLORSPACE_SRGB;
}

/* Writes frame k into buffer index (in place, through the plugin's own
 * mapping of the file: the application sees it through its own); returns
 * its bytesused. */
static size_t write_frame(tc_cam *c, int index, int64_t k)
{
    unsigned char *at = c->map + (size_t)index * c->buf_size;
    if (c->pixfmt == V4L2_PIX_FMT_MJPEG) {
        if (!c->jpeg_count)
            return 0;
        int j = (int)(k % c->jpeg_count);
        size_t n = c->jpeg_size[j] < c->buf_size ? c->jpeg_size[j] : c->buf_size;
        memcpy(at, c->jpeg + c->jpeg_at[j], n);
        return n;
    }
    tc_pattern_yuyv(at, c->width, c->height, k);
    return (size_t)c->width * 2 * c->height;
}

/* The driver, up to now: frames due since the last one fill queued
 * buffers, or are lost. Under c->mu. */
static void advance(tc_cam *c, int64_t now)
{
    int64_t period = 1000000000LL / c->fps;
    int64_t k_now = (now - c->t0) / period;
    for (int64_t k = c->last_k + 1; k <= k_now; k++) {
        if (c->stalled || !c->nqueued)
            continue; /* lost: the sequence skips it */
        int index = c->queued[0];
        memmove(c->queued, c->queued + 1, (size_t)(--c->nqueued) * sizeof(int));
        c->done[c->ndone].index = index;
        c->done[c->ndone].k = k;
        c->done[c->ndone++].ts = c->t0 + k * period;
    }
    if (k_now > c->last_k)
        c->last_k = k_now;
}

static int dqbuf(tc_cam *c, int fd, struct v4l2_buffer *b)
{
    int nonblock = (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
    int64_t waited_until = mono_ns() + 200000000;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        read_header(c, 0);
        if (c->unplugged) {
            pthread_mutex_unlock(&c->mu);
            errno = ENODEV;
            return -1;
        }
        if (!c->streaming) {
            pthread_mutex_unlock(&c->mu);
            errno = EINVAL;
            return -1;
        }
        int64_t now = mono_ns();
        advance(c, now);
        if (c->ndone) {
            int index = c->done[0].index;
            int64_t k = c->done[0].k, ts = c->done[0].ts;
            memmove(c->done, c->done + 1, (size_t)(--c->ndone) * sizeof(c->done[0]));
            c->is_queued[index] = 0;
            pthread_mutex_unlock(&c->mu);
            memset(b, 0, sizeof(*b));
            b->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
            b->memory = V4L2_MEMORY_MMAP;
            b->index = (uint32_t)index;
            b->bytesused = (uint32_t)write_frame(c, index, k);
            b->length = (uint32_t)c->buf_size;
            b->m.offset = (uint32_t)(TC_HEADER + (size_t)index * c->buf_size);
            b->sequence = (uint32_t)k;
            b->field = V4L2_FIELD_NONE;
            b->flags = V4L2_BUF_FLAG_DONE | (c->clock_unknown ? V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN
                                                              : V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC);
            if (c->pixfmt == V4L2_PIX_FMT_MJPEG)
                b->flags |= V4L2_BUF_FLAG_KEYFRAME;
            b->timestamp.tv_sec = ts / 1000000000;
            b->timestamp.tv_usec = (ts % 1000000000) / 1000;
            return 0;
        }
        int64_t due = c->t0 + (c->last_k + 1) * (1000000000LL / c->fps);
        pthread_mutex_unlock(&c->mu);
        if (nonblock && now >= waited_until) {
            errno = EAGAIN;
            return -1;
        }
        int64_t wait = due - now;
        if (wait > 20000000)
            wait = 20000000;
        if (wait > 0) {
            struct timespec ts = {0, (long)wait};
            nanosleep(&ts, NULL);
        }
    }
}

static int tc_ioctl(void *priv, int fd, unsigned long int request, void *arg)
{
    tc_cam *c = priv;
    if (request == VIDIOC_DQBUF)
        return dqbuf(c, fd, arg);
    pthread_mutex_lock(&c->mu);
    read_header(c, 0);
    int rc = 0;
    if (c->unplugged) {
        errno = ENODEV;
        rc = -1;
        goto out;
    }
    switch (request) {
    case VIDIOC_QUERYCAP: {
        struct v4l2_capability *cap = arg;
        memset(cap, 0, sizeof(*cap));
        snprintf((char *)cap->driver, sizeof(cap->driver), "msrs-testcam");
        snprintf((char *)cap->card, sizeof(cap->card), "%s", c->card);
        snprintf((char *)cap->bus_info, sizeof(cap->bus_info), "%s", c->bus);
        cap->version = 0x050a00;
        cap->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        cap->capabilities = cap->device_caps | V4L2_CAP_DEVICE_CAPS;
        break;
    }
    case VIDIOC_ENUM_FMT: {
        struct v4l2_fmtdesc *f = arg;
        if (f->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || f->index >= (uint32_t)c->format_count) {
            errno = EINVAL;
            rc = -1;
            break;
        }
        uint32_t pf = c->formats[f->index];
        memset(f->description, 0, sizeof(f->description));
        snprintf((char *)f->description, sizeof(f->description), "%c%c%c%c", pf & 0xff,
                 (pf >> 8) & 0xff, (pf >> 16) & 0xff, pf >> 24);
        f->pixelformat = pf;
        f->flags = pf == V4L2_PIX_FMT_MJPEG ? V4L2_FMT_FLAG_COMPRESSED : 0;
        break;
    }
    case VIDIOC_ENUM_FRAMESIZES: {
        struct v4l2_frmsizeenum *s = arg;
        if (s->index != 0 || !has_format(c, s->pixel_format)) {
            errno = EINVAL;
            rc = -1;
            break;
        }
        s->type = V4L2_FRMSIZE_TYPE_DISCRETE;
        s->discrete.width = c->width;
        s->discrete.height = c->height;
        break;
    }
    case VIDIOC_ENUM_FRAMEINTERVALS: {
        struct v4l2_frmivalenum *s = arg;
        if (s->index != 0 || !has_format(c, s->pixel_format)) {
            errno = EINVAL;
            rc = -1;
            break;
        }
        s->type = V4L2_FRMIVAL_TYPE_DISCRETE;
        s->discrete.numerator = 1;
        s->discrete.denominator = c->fps;
        break;
    }
    case VIDIOC_G_FMT: fill_format(c, arg, c->pixfmt); break;
    case VIDIOC_TRY_FMT:
    case VIDIOC_S_FMT: {
        struct v4l2_format *f = arg;
        uint32_t want = f->fmt.pix.pixelformat;
        uint32_t pf = has_format(c, want) ? want : c->formats[0];
        if (request == VIDIOC_S_FMT) {
            if (c->streaming || c->nbufs) {
                errno = EBUSY;
                rc = -1;
                break;
            }
            c->pixfmt = pf;
        }
        fill_format(c, f, pf);
        break;
    }
    case VIDIOC_G_PARM:
    case VIDIOC_S_PARM: {
        struct v4l2_streamparm *p = arg;
        memset(&p->parm.capture, 0, sizeof(p->parm.capture));
        p->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
        p->parm.capture.timeperframe.numerator = 1;
        p->parm.capture.timeperframe.denominator = c->fps; /* the one rate it has */
        break;
    }
    case VIDIOC_REQBUFS: {
        struct v4l2_requestbuffers *r = arg;
        if (r->memory != V4L2_MEMORY_MMAP || c->streaming) {
            errno = r->memory != V4L2_MEMORY_MMAP ? EINVAL : EBUSY;
            rc = -1;
            break;
        }
        long page = sysconf(_SC_PAGESIZE);
        size_t size = image_size(c, c->pixfmt);
        c->buf_size = (size + (size_t)page - 1) / (size_t)page * (size_t)page;
        c->nbufs = r->count > TC_MAX_BUFS ? TC_MAX_BUFS : (int)r->count;
        r->count = (uint32_t)c->nbufs;
        c->nqueued = c->ndone = 0;
        memset(c->is_queued, 0, sizeof(c->is_queued));
        unmap(c);
        if (c->nbufs && ftruncate(fd, TC_HEADER + (off_t)c->nbufs * (off_t)c->buf_size)) {
            rc = -1;
            break;
        }
        if (c->nbufs) {
            c->map_len = (size_t)c->nbufs * c->buf_size;
            c->map = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, TC_HEADER);
            if (c->map == MAP_FAILED) {
                c->map = NULL;
                c->nbufs = 0;
                rc = -1;
            }
        }
        break;
    }
    case VIDIOC_QUERYBUF:
    case VIDIOC_QBUF: {
        struct v4l2_buffer *b = arg;
        if (b->index >= (uint32_t)c->nbufs || b->memory != V4L2_MEMORY_MMAP) {
            errno = EINVAL;
            rc = -1;
            break;
        }
        if (request == VIDIOC_QBUF) {
            if (c->is_queued[b->index]) {
                errno = EINVAL;
                rc = -1;
                break;
            }
            c->is_queued[b->index] = 1;
            c->queued[c->nqueued++] = (int)b->index;
        }
        b->length = (uint32_t)c->buf_size;
        b->m.offset = (uint32_t)(TC_HEADER + (size_t)b->index * c->buf_size);
        b->flags = c->is_queued[b->index] ? V4L2_BUF_FLAG_QUEUED : 0;
        b->flags |= V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC;
        break;
    }
    case VIDIOC_STREAMON:
        c->streaming = 1;
        c->t0 = mono_ns();
        c->last_k = -1;
        break;
    case VIDIOC_STREAMOFF:
        c->streaming = 0;
        c->nqueued = c->ndone = 0;
        memset(c->is_queued, 0, sizeof(c->is_queued));
        break;
    case VIDIOC_G_INPUT: *(int *)arg = 0; break;
    case VIDIOC_ENUMINPUT:
    case VIDIOC_QUERYCTRL:
    case VIDIOC_QUERY_EXT_CTRL:
        errno = EINVAL;
        rc = -1;
        break;
    default:
        errno = ENOTTY;
        rc = -1;
        break;
    }
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

__attribute__((visibility("default"))) const struct libv4l_dev_ops libv4l2_plugin = {
    .init = tc_init,
    .close = tc_close,
    .ioctl = tc_ioctl,
};
