/* conformance.c — a device on the SDK that uses every message a device
 * sends, for tests/sdk/test_conformance.py against a real agent:
 * samples (gsr, 128 Hz, batches of 16, split at session instants), media
 * (a 10 Hz "cam" stream of small MJPEG-typed packets), status every second
 * and a sync mark every 2 s (inside a session: outside one the SDK refuses
 * it, as the agent would). Every event is a JSON line on stdout; at
 * SIGTERM the last line is what it sent:
 *   {"sent": {SESSION: {"gsr": n, "cam": n, "marks": n}}, "refused": {...},
 *    "discarded": {"gsr": n, "cam": n}, "registrations": n, "resumed_gsr": seq}
 * where SESSION "" is data outside any session, "refused" counts what the
 * SDK refused (not registered, queue full) and "discarded" what it accepted
 * and lost at a close (md_device_discarded): numbered all the same, so the
 * agent counts both as a gap. usage: conformance URL CA DEVICE_ID
 * CREDENTIAL */
#include "msrs_device.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;
static int registrations;
static json_t *sent, *refused;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void count(json_t *where, const char *session, const char *what, int64_t n)
{
    json_t *s = json_object_get(where, session);
    if (!s)
        json_object_set_new(where, session, s = json_object());
    json_object_set_new(s, what, json_integer(json_integer_value(json_object_get(s, what)) + n));
}

static void on_event(void *arg, md_device *dev, const md_event *ev)
{
    static const char *const kinds[] = {"registered", "refused", "start", "stop",
                                        "flow",       "error",   "closed"};
    (void)arg;
    (void)dev;
    registrations += ev->kind == MD_EV_REGISTERED;
    json_t *j = json_pack("{s:s, s:s, s:I, s:i, s:s, s:s}", "event", kinds[ev->kind], "session_id",
                          ev->session_id ? ev->session_id : "", "at_ns", (json_int_t)ev->at_ns,
                          "slow", ev->slow, "code", ev->code ? ev->code : "", "message",
                          ev->message ? ev->message : "");
    char *text = json_dumps(j, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(j);
}

/* n samples from seq at t0, 128 Hz, split where the session changes. */
static void send_gsr(md_device *d, int64_t *seq, int64_t t0, size_t n)
{
    int64_t t[16];
    double v[16];
    char session[MD_ID_MAX], first[MD_ID_MAX];
    size_t i = 0;
    while (i < n) {
        size_t k = 0;
        md_device_session_at(d, t0 + (int64_t)i * 7812500, first, sizeof(first));
        for (; i < n; i++, k++) {
            t[k] = t0 + (int64_t)i * 7812500;
            md_device_session_at(d, t[k], session, sizeof(session));
            if (strcmp(session, first) != 0)
                break;
            v[k] = (double)(*seq + (int64_t)k) * 0.01;
        }
        int rc = md_device_send_samples(d, "gsr", *seq, t, v, k, 1);
        count(rc == MD_OK ? sent : refused, first, "gsr", (int64_t)k);
        *seq += (int64_t)k;
    }
}

int main(int argc, char **argv)
{
    char err[512];
    if (argc != 5) {
        fprintf(stderr, "usage: conformance URL CA DEVICE_ID CREDENTIAL\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    sent = json_object();
    refused = json_object();
    md_client_config cc = {.url = argv[1], .ca_file = argv[2]};
    md_client *c = md_client_new(&cc, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "conformance: %s\n", err);
        return 1;
    }
    static const md_stream streams[] = {{"gsr", "gsr", 128, 1, "float64"},
                                        {"cam", "rgb_video", 10, 3, "mjpeg"}};
    md_device_config dc = {.device_id = argv[3],
                           .credential = argv[4],
                           .streams = streams,
                           .stream_count = 2,
                           .on_event = on_event};
    md_device *d = md_device_add(c, &dc, err, sizeof(err));
    if (!d) {
        fprintf(stderr, "conformance: %s\n", err);
        md_client_destroy(c);
        return 1;
    }
    static const unsigned char jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0,    16,
                                         'J',  'F',  'I',  'F',  0xff, 0xd9};
    int64_t gsr_seq = 0, cam_seq = 0, marks = 0, started = now_ns();
    int64_t next_gsr = started, next_cam = started, next_status = started, next_mark = started;
    int64_t resumed = -1;
    int was_registered = 0;
    while (!stop) {
        md_client_service(c, 5);
        int64_t now = now_ns();
        int reg = md_device_registered(d);
        if (reg && !was_registered) /* (re)registered: the agent's resume, as it said it */
            resumed = md_device_resume_seq(d, "gsr");
        was_registered = reg;
        if (now >= next_gsr) { /* 16 samples a batch, 8 batches a second */
            send_gsr(d, &gsr_seq, next_gsr, 16);
            next_gsr += 125000000;
        }
        if (now >= next_cam) {
            char session[MD_ID_MAX];
            md_media m = {.stream_id = "cam",
                          .codec = "mjpeg",
                          .pts_ns = next_cam - started,
                          .keyframe = 1,
                          .seq = cam_seq++,
                          .device_time_ns = next_cam,
                          .width = 8,
                          .height = 8};
            md_device_session_at(d, next_cam, session, sizeof(session));
            int rc = md_device_send_media(d, &m, jpeg, sizeof(jpeg));
            count(rc == MD_OK ? sent : refused, session, "cam", 1);
            next_cam += 100000000;
        }
        if (now >= next_status) {
            md_device_send_status(d, 0.5, 0);
            next_status += 1000000000;
        }
        if (now >= next_mark) {
            char id[32], session[MD_ID_MAX];
            snprintf(id, sizeof(id), "mark-%lld", (long long)marks++);
            md_device_session_at(d, now, session, sizeof(session));
            int rc = md_device_send_sync_mark(d, id, "conformance \"mark\"", now);
            if (*session || rc != MD_ERR_INVALID) /* outside a session: no mark, by design */
                count(rc == MD_OK ? sent : refused, session, "marks", 1);
            next_mark += 2000000000;
        }
    }
    /* what is queued goes out before the count is said */
    for (int i = 0; i < 200 && md_device_queued_bytes(d); i++)
        md_client_service(c, 10);
    json_t *out = json_pack("{s:o, s:o, s:{s:I, s:I}, s:i, s:I}", "sent", sent, "refused", refused,
                            "discarded", "gsr", (json_int_t)md_device_discarded(d, "gsr"), "cam",
                            (json_int_t)md_device_discarded(d, "cam"), "registrations",
                            registrations, "resumed_gsr", (json_int_t)resumed);
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(out);
    md_client_destroy(c);
    return 0;
}
