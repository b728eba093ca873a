/* gsr.c — a GSR sensor as an msrs device: 128 samples a second in batches
 * of 16 until SIGINT.  gsr URL DEVICE_ID [CREDENTIAL]  (MSRS_CA: the CA) */
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

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* the SDK's default device clock */
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
    if (argc < 3)
        return fprintf(stderr, "usage: gsr URL DEVICE_ID [CREDENTIAL]\n"), 2;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    md_client_config cc = {.url = argv[1], .ca_file = getenv("MSRS_CA")};
    md_stream gsr = {"gsr", "gsr", 128, 1, "float64"};
    md_device_config dc = {.device_id = argv[2],
                           .credential = argc > 3 ? argv[3] : NULL,
                           .streams = &gsr,
                           .stream_count = 1,
                           .on_event = on_event};
    md_client *c = md_client_new(&cc, err, sizeof(err));
    md_device *d = c ? md_device_add(c, &dc, err, sizeof(err)) : NULL;
    if (!d)
        return fprintf(stderr, "gsr: %s\n", err), md_client_destroy(c), 1;
    int64_t seq = 0, next = now_ns(), t[16];
    double v[16];
    while (!stop && md_client_service(c, 10) == MD_OK) {
        if (now_ns() < next + 15 * PERIOD_NS)
            continue; /* a batch goes when its last sample is taken */
        for (int i = 0; i < 16; i++)
            t[i] = next + i * PERIOD_NS, v[i] = 0.4 + 0.05 * sin((double)t[i] / 1e9);
        /* not registered or the queue full: lost, and a gap the agent counts */
        md_device_send_samples(d, "gsr", seq, t, v, 16, 1);
        seq += 16, next += 16 * PERIOD_NS;
    }
    md_client_destroy(c);
    return 0;
}
