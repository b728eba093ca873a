/* camera.c — one camera's thread: dequeue a frame, number it, decide
 * whether it goes (registered, the agent's queue, slow_down), encode it,
 * hand the packet to the SDK, give the buffer back; a preview JPEG now and
 * then. The driver's buffers are the only queue before the encoder: a
 * slow encoder makes the driver skip frames (counted), never memory grow. */
#include "capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t cp_camera_clock(void *arg, int64_t realtime_ns)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* the clock V4L2 stamps buffers with, at that instant */
    return cp_mono_ns() - ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - realtime_ns);
}

void cp_camera_on_event(void *arg, md_device *dev, const md_event *ev)
{
    cp_camera *k = arg;
    switch (ev->kind) {
    case MD_EV_REGISTERED: {
        int64_t resume = md_device_resume_seq(dev, CP_STREAM);
        pthread_mutex_lock(&k->mu);
        if (resume > k->next_seq) /* the agent saw more: go on from there */
            k->next_seq = resume;
        pthread_mutex_unlock(&k->mu);
        fprintf(stderr, "msrs-capture: %s (%s, %s %dx%d@%d) registered\n", k->device_id, k->path,
                k->codec, k->fmt.width, k->fmt.height, k->fmt.fps);
        md_device_send_status(dev, -1, 0);
        break;
    }
    case MD_EV_REFUSED:
        fprintf(stderr, "msrs-capture: %s refused by the agent: %s\n", k->device_id, ev->message);
        break;
    case MD_EV_START:
    case MD_EV_STOP:
        fprintf(stderr, "msrs-capture: %s: session %s %s\n", k->device_id, ev->session_id,
                ev->kind == MD_EV_START ? "starts" : "stops");
        break;
    case MD_EV_FLOW:
        fprintf(stderr, "msrs-capture: %s: the agent says %s\n", k->device_id,
                ev->slow ? "slow_down (a keyframe a second until resume)" : "resume");
        break;
    case MD_EV_ERROR:
        fprintf(stderr, "msrs-capture: %s: agent error %s: %s\n", k->device_id, ev->code,
                ev->message);
        break;
    case MD_EV_CLOSED: break;
    }
}

/* The number of frame f, from the driver's sequence and the time since
 * the last frame: whichever says more frames passed (a driver that does
 * not count, a stall, an unplug). Under k->mu. */
static int64_t frame_number(cp_camera *k, const cp_frame *f, int64_t *last_seq_driver)
{
    if (!k->last_time_ns) {
        *last_seq_driver = f->sequence;
        return k->next_seq++;
    }
    int64_t period = 1000000000LL / k->fmt.fps;
    int64_t by_time = (f->time_ns - k->last_time_ns + period / 2) / period;
    int64_t by_seq = *last_seq_driver >= 0 ? f->sequence - *last_seq_driver : 0;
    int64_t step = by_time > by_seq ? by_time : by_seq;
    if (step < 1)
        step = 1;
    *last_seq_driver = f->sequence;
    k->lost += step - 1;
    k->next_seq += step;
    return k->next_seq - 1;
}

static void count(cp_camera *k, int64_t *counter)
{
    pthread_mutex_lock(&k->mu);
    (*counter)++;
    pthread_mutex_unlock(&k->mu);
}

/* 1 when the thread should stop (main set k->stop). */
static int stopping(cp_camera *k)
{
    return __atomic_load_n(&k->stop, __ATOMIC_ACQUIRE);
}

static void stalled_or_not(cp_camera *k, int64_t now, int64_t last_frame_at, int frame)
{
    pthread_mutex_lock(&k->mu);
    int was = k->stalled,
        now_stalled = frame ? 0 : was || now - last_frame_at > k->stall_ms * 1000000;
    k->stalled = now_stalled;
    k->stalls += now_stalled && !was;
    pthread_mutex_unlock(&k->mu);
    if (now_stalled && !was)
        fprintf(stderr, "msrs-capture: %s stalled: no frame for %.1f s\n", k->device_id,
                (double)(now - last_frame_at) / 1e9);
    else if (was && !now_stalled)
        fprintf(stderr, "msrs-capture: %s: frames again after %.1f s\n", k->device_id,
                (double)(now - last_frame_at) / 1e9);
}

/* Sends what the encoder gave for the frame; the counter of a drop, or NULL. */
static int64_t *send(cp_camera *k, const cp_packet *p, int *need_key)
{
    md_media m = {.stream_id = CP_STREAM,
                  .codec = k->codec,
                  .pts_ns = p->time_ns,
                  .keyframe = p->keyframe,
                  .seq = p->seq,
                  .device_time_ns = p->time_ns,
                  .width = k->fmt.width,
                  .height = k->fmt.height};
    int s = md_device_send_media(k->dev, &m, p->data, p->len);
    if (s != MD_OK)
        return s == MD_ERR_NOT_REGISTERED ? &k->dropped_away : &k->dropped_queue;
    *need_key = 0;
    count(k, &k->sent);
    return NULL;
}

static void preview(cp_camera *k, const cp_frame *f, int64_t now)
{
    unsigned char *jpeg = NULL;
    size_t len = 0;
    k->jpeg_at_ns = now;
    if (cp_encoder_preview(k->enc, f, k->preview_width, &jpeg, &len) != 0)
        return;
    pthread_mutex_lock(&k->mu);
    free(k->jpeg);
    k->jpeg = jpeg;
    k->jpeg_len = len;
    pthread_mutex_unlock(&k->mu);
}

static void *camera_thread(void *arg)
{
    cp_camera *k = arg;
    char err[512];
    int was_in = 0, need_key = 1;
    int64_t last_driver_seq = -1, last_sent_ns = 0, last_frame_at = cp_mono_ns();
    while (!stopping(k)) {
        cp_frame f;
        int r = cp_v4l2_next(k->v, 200, &f, err, sizeof(err));
        int64_t now = cp_mono_ns();
        if (r < 0) {
            snprintf(k->why, sizeof(k->why), "%s", err);
            break;
        }
        stalled_or_not(k, now, last_frame_at, r > 0);
        if (r == 0)
            continue;
        last_frame_at = now;
        if (!f.driver_stamp && !k->warned_stamp) {
            k->warned_stamp = 1;
            fprintf(stderr,
                    "msrs-capture: %s: the driver's timestamps are not CLOCK_MONOTONIC: frames "
                    "are stamped when dequeued (late by the driver's latency)\n",
                    k->device_id);
        }
        pthread_mutex_lock(&k->mu);
        int64_t seq = frame_number(k, &f, &last_driver_seq);
        k->last_time_ns = f.time_ns;
        k->frames++;
        pthread_mutex_unlock(&k->mu);

        char session[MD_ID_MAX];
        int in = md_device_session_at(k->dev, f.time_ns, session, sizeof(session));
        int force = need_key || (in && !was_in); /* a session begins at a keyframe */
        was_in = in;
        int64_t *drop = NULL;
        if (!md_device_registered(k->dev))
            drop = &k->dropped_away;
        else if (md_device_queued_bytes(k->dev) > k->max_queued / 2)
            drop = &k->dropped_queue; /* the agent reads slower than we make frames */
        else if (md_device_slowed(k->dev)) {
            if (now - last_sent_ns < 1000000000LL)
                drop = &k->dropped_slow;
            else
                force = 1;
        }
        if (!drop) {
            cp_packet p;
            int e = cp_encoder_put(k->enc, &f, seq, force, &p, err, sizeof(err));
            if (e < 0) {
                fprintf(stderr, "msrs-capture: %s: frame %lld: %s\n", k->device_id, (long long)seq,
                        err);
                drop = &k->dropped_queue;
            } else if (e > 0 && (drop = send(k, &p, &need_key)) == NULL) {
                last_sent_ns = now;
            }
        }
        if (drop) {
            need_key = 1; /* the next packet a decoder can start from */
            count(k, drop);
        }
        if (k->preview_fps > 0 && now - k->jpeg_at_ns >= 1000000000LL / k->preview_fps)
            preview(k, &f, now);
        cp_v4l2_release(k->v);
    }
    __atomic_store_n(&k->gone, 1, __ATOMIC_RELEASE); /* after why */
    return NULL;
}

int cp_camera_run(cp_camera *k)
{
    __atomic_store_n(&k->stop, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&k->gone, 0, __ATOMIC_RELEASE);
    k->why[0] = '\0';
    if (pthread_create(&k->thread, NULL, camera_thread, k) != 0)
        return -1;
    k->running = 1;
    return 0;
}

int cp_camera_gone(cp_camera *k)
{
    return __atomic_load_n(&k->gone, __ATOMIC_ACQUIRE);
}

void cp_camera_stop(cp_camera *k)
{
    if (k->running) {
        __atomic_store_n(&k->stop, 1, __ATOMIC_RELEASE);
        pthread_join(k->thread, NULL);
        k->running = 0;
    }
    md_device_remove(k->dev);
    k->dev = NULL;
    cp_encoder_destroy(k->enc);
    k->enc = NULL;
    cp_v4l2_close(k->v);
    k->v = NULL;
}
