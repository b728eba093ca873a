/* gsr.c — a GSR sensor as an msrs device on the device SDK: 128 samples a
 * second, sent in batches of 16, until SIGINT or SIGTERM.
 *   gsr URL DEVICE_ID [CREDENTIAL]      (MSRS_CA: the agent's CA, PEM) */
#include "msrs_device.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PERIOD_NS 7812500 /* 128 Hz */
static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    stop = sig;
}

static int64_t now_ns(void *arg)
{
    struct timespec ts;
    (void)arg;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_event(void *arg, md_device *dev, const md_event *ev)
{
    (void)arg, (void)dev;
    if (ev->kind == MD_EV_REFUSED || ev->kind == MD_EV_ERROR)
        fprintf(stderr, "gsr: the agent says %s\n", ev->message);
}

int main(int argc, char **argv)
{
    char err[256] = "";
    if (argc < 3) {
        fprintf(stderr, "usage: gsr URL DEVICE_ID [CREDENTIAL]\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    md_client_config cc = {argv[1], getenv("MSRS_CA")};
    md_stream gsr = {"gsr", "gsr", 128, 1, "float64"};
    md_device_config dc = {.device_id = argv[2],
                           .credential = argc > 3 ? argv[3] : NULL,
                           .streams = &gsr,
                           .stream_count = 1,
                           .clock_ns = now_ns,
                           .on_event = on_event};
    md_client *c = md_client_new(&cc, err, sizeof(err));
    md_device *d = c ? md_device_add(c, &dc, err, sizeof(err)) : NULL;
    if (!d) {
        fprintf(stderr, "gsr: %s\n", err);
        md_client_destroy(c);
        return 1;
    }
    int64_t seq = 0, next = now_ns(NULL), t[16];
    double v[16];
    while (!stop && md_client_service(c, 10) == MD_OK) {
        if (now_ns(NULL) < next + 15 * PERIOD_NS)
            continue; /* a batch goes when its last sample is taken */
        for (int i = 0; i < 16; i++) {
            t[i] = next + i * PERIOD_NS;
            v[i] = 0.4 + 0.05 * sin((double)t[i] / 1e9);
        }
        /* not registered (yet) or the queue full: these 16 are lost, and
         * the agent counts them as a gap when the numbering goes on */
        md_device_send_samples(d, "gsr", seq, t, v, 16, 1);
        seq += 16;
        next += 16 * PERIOD_NS;
    }
    md_client_destroy(c);
    return 0;
}
