/* fuzz_device_msg — the agent's device message handler (protocol.c's
 * ag_on_message, what the endpoint calls with each whole message) on an
 * agent with a real SQLite log in a temporary folder and a connection that
 * is not bound to a socket: with wsi NULL, ag_send queues replies and never
 * writes (endpoint.c wakes lws only for a real wsi), so no seam was needed.
 *
 * Input: messages separated by the two bytes 0xFF '\n'; a message that
 * starts with 'b' is a binary frame (the rest of it), any other a text
 * message. Unless the first message says "hello", a fixed hello goes first
 * so the rest reaches the registered paths; after it the node starts
 * recording a session, so data is tagged and counted too. Every
 * LOG_ROTATE inputs the log is closed, deleted and opened again. */
#include "agent.h"
#include "device.h"
#include "protocol.h"
#include "recording.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_ROTATE 5000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char hello[] =
    "{\"id\":\"h1\",\"type\":\"hello\",\"ts\":1795347000000000000,\"device_id\":\"phone-1\","
    "\"payload\":{\"name\":\"Pixel 7\",\"capabilities\":[\"gsr\",\"imu\"],\"battery\":0.9,"
    "\"version\":\"t\",\"streams\":[{\"stream_id\":\"gsr\",\"type\":\"gsr\",\"rate_hz\":128,"
    "\"channels\":1,\"format\":\"float64\"},{\"stream_id\":\"rgb\",\"type\":\"rgb_video\","
    "\"rate_hz\":30,\"channels\":3,\"format\":\"h264\"}]}}";

static char dir[256], db[320];
static ev_log *log_;
static long inputs;

static void remove_log(void)
{
    char p[340];
    ev_log_destroy(log_);
    log_ = NULL;
    unlink(db);
    snprintf(p, sizeof(p), "%s-wal", db);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", db);
    unlink(p);
}

static void at_exit(void)
{
    remove_log();
    rmdir(dir);
}

static void open_log(void)
{
    char err[512];
    ev_conf *conf = ev_conf_new();
    ev_conf_set(conf, "log", db);
    ev_conf_set(conf, "sqlite.synchronous", "NORMAL");
    ev_conf_set(conf, "source", "agent/fuzz");
    if (ev_log_open(&log_, conf, err, sizeof(err))) {
        fprintf(stderr, "fuzz_device_msg: %s\n", err);
        abort();
    }
    ev_conf_destroy(conf);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "%s/fuzz_device_msg.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(db, sizeof(db), "sqlite:%s/log.db", dir);
    open_log();
    atexit(at_exit);
}

static void agent_init(ag_agent *a)
{
    memset(a, 0, sizeof(*a));
    a->cfg.max_message_bytes = 1 << 20;
    a->cfg.max_devices = 4;
    a->cfg.rate_per_s = 2000;
    a->cfg.rate_burst = 1 << 30; /* the rate limit is not what is fuzzed */
    a->cfg.sync_interval_ms = 2000;
    a->cfg.sync_probes = 8;
    a->cfg.sync_burst_probes = 16;
    a->cfg.probe_spacing_ms = 15;
    a->cfg.round_timeout_ms = 500;
    a->cfg.flow_high_bytes = 64 << 20;
    a->cfg.flow_low_bytes = 16 << 20;
    a->cfg.report_delay_ms = 1000;
    snprintf(a->cfg.node_id, sizeof(a->cfg.node_id), "node-fuzz");
    a->log = log_;
    /* one codec for every input, as the agent keeps one */
    static ev_codec *codec;
    if (!codec)
        codec = ev_codec_new();
    a->codec = codec;
    ev_clock_est_init(&a->master_clock);
}

static void conn_init(ag_agent *a, ag_conn *c)
{
    memset(c, 0, sizeof(*c));
    cli_bucket_init(&c->rate, (double)a->cfg.rate_burst, ag_now_ns());
    c->rx_fd = -1;
}

/* What endpoint.c does at LWS_CALLBACK_CLOSED: closed_cb, then the queue. */
static void conn_close(ag_agent *a, ag_conn *c)
{
    ag_on_closed(a, c);
    while (c->out_head) {
        ag_out *o = c->out_head;
        c->out_head = o->next;
        free(o);
    }
    cli_buf_free(&c->rx);
}

static void deliver(ag_agent *a, ag_conn *c, const uint8_t *m, size_t len)
{
    if (len && m[0] == 'b')
        ag_on_message(a, c, m + 1, len - 1, 1);
    else
        ag_on_message(a, c, m, len, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ag_agent a;
    ag_conn c;

    if (!log_)
        setup();
    if (++inputs % LOG_ROTATE == 0) {
        remove_log();
        open_log();
    }
    agent_init(&a);
    conn_init(&a, &c);

    const uint8_t *end = data + size, *p = data;
    int first = 1;
    while (p <= end) {
        const uint8_t *sep = p;
        while (sep + 1 < end && !(sep[0] == 0xFF && sep[1] == '\n'))
            sep++;
        if (sep + 1 >= end)
            sep = end;
        size_t len = (size_t)(sep - p);
        if (first) {
            if (!memmem(p, len, "hello", 5))
                ag_on_message(&a, &c, (const unsigned char *)hello, strlen(hello), 0);
            deliver(&a, &c, p, len);
            if (!c.dev)
                deliver(&a, &c, (const uint8_t *)hello, strlen(hello));
            ag_start_recording(&a, "fuzz-session", NULL, 1000000000LL);
            first = 0;
        } else {
            deliver(&a, &c, p, len);
        }
        p = sep + 2;
    }

    conn_close(&a, &c);
    ag_device_free_all(&a);
    ag_recording_free(&a);
    cli_buf_free(&a.samples_times);
    cli_buf_free(&a.samples_values);
    return 0;
}
