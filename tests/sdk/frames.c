/* frames.c — a device on the SDK whose media packets make WebSocket
 * payloads on both sides of the frame header's length boundaries (RFC 6455
 * 5.2: 125 | 126 bytes, 65535 | 65536), each masked by the SDK itself
 * (sdk/device.c frame_masked), for tests/sdk/test_frames.py: a server of
 * Python's websockets that unmasks and checks every byte. Packet seq i has
 * a body of sizes[i] bytes, byte k = (i * 7 + k) & 0xff; the sizes are
 * printed on stdout (one JSON line) once registered. usage: frames URL */
#include "msrs_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int registered;

static void on_event(void *arg, md_device *dev, const md_event *ev)
{
    (void)arg;
    (void)dev;
    registered |= ev->kind == MD_EV_REGISTERED;
}

int main(int argc, char **argv)
{
    /* bodies 0..40 bytes give payloads around 110..150 with this header;
     * 65300..65500 around 65410..65620 (test_frames.py checks that both
     * boundaries were crossed) */
    enum { SMALL = 41, LARGE = 201, N = SMALL + LARGE };
    char err[256];
    static unsigned char body[65500];
    size_t sizes[N];
    if (argc != 2) {
        fprintf(stderr, "usage: frames URL\n");
        return 2;
    }
    for (int i = 0; i < N; i++)
        sizes[i] = i < SMALL ? (size_t)i : (size_t)(65300 + i - SMALL);
    md_client_config cc = {.url = argv[1]};
    md_client *c = md_client_new(&cc, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "frames: %s\n", err);
        return 1;
    }
    md_stream stream = {"v", "rgb_video", 0, 0, "raw"};
    md_device_config dc = {.device_id = "frames-1",
                           .streams = &stream,
                           .stream_count = 1,
                           .on_event = on_event,
                           .max_queued_bytes = 64u << 20};
    md_device *d = md_device_add(c, &dc, err, sizeof(err));
    if (!d) {
        fprintf(stderr, "frames: %s\n", err);
        md_client_destroy(c);
        return 1;
    }
    time_t give_up = time(NULL) + 30;
    while (!registered && time(NULL) < give_up)
        md_client_service(c, 10);
    printf("[");
    for (int i = 0; i < N; i++) {
        for (size_t k = 0; k < sizes[i]; k++)
            body[k] = (unsigned char)(i * 7 + (int)k);
        md_media m = {.stream_id = "v", .codec = "raw", .seq = i};
        int rc;
        while ((rc = md_device_send_media(d, &m, body, sizes[i])) == MD_ERR_FULL)
            md_client_service(c, 10);
        if (rc != MD_OK) {
            fprintf(stderr, "frames: packet %d: error %d\n", i, rc);
            return 1;
        }
        printf("%s%zu", i ? ", " : "", sizes[i]);
    }
    printf("]\n");
    fflush(stdout);
    while (time(NULL) < give_up) /* until the server has read it all and it is stopped */
        md_client_service(c, 10);
    md_device_remove(d);
    md_client_destroy(c);
    return 0;
}
