/* agent.h — msrs-agent internals (prefix ag_): the device endpoint
 * (endpoint.c, libwebsockets), the JSON device protocol (protocol.c), clock
 * sync rounds (clocksync.c) and the loop (main.c). One thread runs it all:
 * every callback here runs on the lws service thread. */
#ifndef MSRS_AGENT_H
#define MSRS_AGENT_H
#include "clocksync.h"
#include "ev.h"

#include <libwebsockets.h>

#define AG_ID_MAX          64
#define AG_MAX_STREAMS     8
#define AG_MAX_SUPERVISORS 8

typedef struct ag_config {
    char host[128];
    int port;
    char advertise[128]; /* the host devices reach us at (agent.advertise; default host) */
    char node_id[AG_ID_MAX];
    int64_t max_message_bytes; /* a bigger message gets error too_large */
    int64_t max_devices;
    int64_t rate_per_s, rate_burst; /* per connection token bucket */
    int64_t sync_interval_ms, sync_probes, probe_spacing_ms, round_timeout_ms;
    int64_t sync_burst_probes; /* probes per round while a device's window is not full */
    int64_t flow_high_bytes, flow_low_bytes; /* log backlog: slow_down above, resume below */
    int64_t report_delay_ms;   /* RecordingReport this long after a session's stop instant */
    int64_t kernel_timestamps; /* sync.kernel_timestamps: t4 is the kernel's receive stamp */
} ag_config;

typedef struct ag_conn ag_conn;

/* What one device stream delivered to the log for a session. */
typedef struct ag_count {
    char stream_id[AG_ID_MAX];
    int64_t samples, bytes, gaps, dropped;
} ag_count;

/* A session this node records (StartRecording .. RecordingReport). */
typedef struct ag_session {
    char session_id[AG_ID_MAX];
    int64_t start_at_ns, stop_at_ns; /* master clock; stop INT64_MAX until known */
    json_t *missing;                 /* devices asked for but not connected at the start */
} ag_session;

/* A device the agent has seen; survives reconnects so a rejoin resumes its
 * sequence numbers and clock history. */
typedef struct ag_device {
    char device_id[AG_ID_MAX];
    ag_conn *conn; /* NULL while disconnected */
    cs_clock clock;
    json_t *next_seq; /* stream_id -> next expected seq */
    int64_t gaps;
    char stream_ids[AG_MAX_STREAMS][AG_ID_MAX]; /* declared in hello */
    int stream_count;
    /* the session it records, if any: its counts per stream */
    ag_session *rec;
    int64_t rec_start_dev, rec_stop_dev; /* the instants as sent (device clock); stop INT64_MAX */
    ag_count counts[AG_MAX_STREAMS];
    int count_n;
    /* clock-sync round */
    int round_active;
    json_t *round_probes; /* this round's valid probes, for the record (refits) */
    int64_t probes_sent, probes_answered;
    int64_t next_probe_ns, round_deadline_ns, next_round_ns, round_started_ns;
    int64_t round_size; /* probes this round: sync.burst_probes or sync.probes */
} ag_device;

typedef struct ag_out {
    struct ag_out *next;
    int kind; /* AG_OUT_TEXT or AG_OUT_TIME_REQ (t1 stamped at write) */
    size_t len;
    unsigned char buf[]; /* LWS_PRE bytes of headroom, then the message */
} ag_out;

enum { AG_OUT_TEXT, AG_OUT_TIME_REQ };

struct ag_conn {
    struct lws *wsi;
    ag_device *dev; /* set once hello is accepted */
    unsigned char *rx;
    size_t rx_len, rx_cap;
    int rx_too_large, rx_binary;
    ag_out *out_head, *out_tail;
    size_t out_count;
    double tokens;
    int64_t tokens_at_ns;
    int64_t flood_strikes;
    int closing; /* ag_close was called: close at the next writable callback */
    int paused;  /* not read while the log is behind (flow slow_down) */
    char peer[64];
    int rx_fd; /* the socket whose kernel receive stamps give t4; -1: stamped on reading */
};

typedef struct ag_counters {
    int64_t connections, messages, bad_json, too_large, unknown_type, invalid, rate_limited,
        duplicates, not_registered, events, emit_errors, dropped, late, slow_downs;
    int64_t rx_bytes;     /* WebSocket payload received from devices */
    int64_t stamp_errors; /* connections whose kernel receive stamps could not be enabled */
} ag_counters;

/* The control plane (control.c): this node's registration, plan and
 * heartbeats with a supervisor, and its clock against the supervisor's. */
enum { AG_CTL_DISCOVER, AG_CTL_REGISTER, AG_CTL_PLAN, AG_CTL_PROBE, AG_CTL_HEARTBEAT };

typedef struct ag_control {
    int managed; /* a supervisor list or discovery is configured; 0: standalone */
    char hosts[AG_MAX_SUPERVISORS][128];
    int ports[AG_MAX_SUPERVISORS];
    int url_count, url_i; /* configured ones first, then discovered ones */
    /* discovery (tools/discovery.h): a query to the targets when no
     * supervisor is known or the known ones fail, at most one a second */
    int discover, discovery_fd, lead_hint; /* lead_hint: the index that said it leads, or -1 */
    int64_t discovery_port, discovery_wait_ns, query_started_ns, next_query_ns, queries;
    int64_t discovery_skipped;
    char discovery_targets[256];
    char prefix[128]; /* the log's topic prefix: which system to join */
    int phase, busy, planned;
    int64_t next_at_ns, heartbeat_ns;
    int64_t max_devices; /* the plan's; 0: no limit but agent.max_devices */
    char redirect[256];  /* where a device this node refuses should go */
    cs_clock clock;      /* the supervisor's clock (master) seen from here */
    int probes_left;
    int64_t clock_unc_ns, clock_rtt_ns;
    int64_t cpu_ns, cpu_at_ns, rx_bytes, rx_at_ns; /* at the last heartbeat */
    int64_t registered_at_ns, last_ok_ns, heartbeats, reregistered, failures;
} ag_control;

typedef struct ag_agent {
    ag_config cfg;
    ev_log *log;
    ev_codec *codec;
    struct lws_context *ctx;
    lws_sorted_usec_list_t tick;
    ag_device **devices;
    size_t device_count, device_cap;
    size_t connected;
    int slowed;              /* devices were told to slow down */
    int64_t backlog_bytes;   /* the log's, at the last tick */
    int64_t log_error_at_ns; /* last time a failing log writer was reported */
    int64_t next_id;
    ag_counters n;
    char commands_topic[320];
    ag_session **sessions;
    size_t session_count;
    ag_control ctl;
    int listening; /* the device endpoint's vhost exists */
} ag_agent;

/* protocol.c */
void ag_on_message(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len, int binary);
void ag_on_closed(ag_agent *a, ag_conn *c);
ag_device *ag_device_find(ag_agent *a, const char *id);
/* Queues a JSON message {"id","type","ts","device_id","payload"} to c. */
void ag_send(ag_agent *a, ag_conn *c, const char *type, json_t *payload /* stolen */);
void ag_send_error(ag_agent *a, ag_conn *c, const char *code, const char *message,
                   const char *ref_id);
/* Flow control, called by the tick: when the log's backlog passes
 * agent.flow.high_bytes every device is sent `flow` slow_down and is no
 * longer read; below agent.flow.low_bytes, `flow` resume and reading again. */
void ag_flow_tick(ag_agent *a, int64_t now_ns);
/* A device that registers while the log is behind is told so at once. */
void ag_flow_greet(ag_agent *a, ag_conn *c);
/* Runs clock-sync rounds that are due; called by the tick. */
void ag_sync_tick(ag_agent *a, int64_t now_ns);
/* Starts a round now for device_id (NULL: every connected device). */
void ag_sync_now(ag_agent *a, const char *device_id);
/* Emits a record of type short_name from JSON (stolen). EV_ERR_INVALID (the
 * JSON does not fit the record; err names the field) is counted as the
 * device's error; any other failure is the log's, counted and printed. err
 * may be NULL. */
int ag_emit(ag_agent *a, const char *short_name, const char *key, json_t *value, char *err,
            size_t err_size);

/* recording.c: sessions this node records. */
void ag_start_recording(ag_agent *a, const char *session_id, json_t *device_ids,
                        int64_t start_at_ns);
void ag_stop_recording(ag_agent *a, const char *session_id, int64_t stop_at_ns);
/* Sends `start` to a device that (re)registers during a session it records. */
void ag_recording_rejoin(ag_agent *a, ag_device *d);
/* The counter of stream for data at device time t: NULL when the data is
 * not part of a session (claimed: the envelope's session_id or NULL).
 * Unclaimed data is the session's when t is within the start and stop
 * instants exactly as they were sent to the device (its clock), so the
 * device and the agent draw the same line. *session is set to the id. */
ag_count *ag_recording_count(ag_agent *a, ag_device *d, const char *claimed, int64_t t,
                             const char *stream, const char **session);
/* Accounts n samples (bytes of data) of a device: delivered to the log, or
 * dropped because the log refused them. cnt: from ag_recording_count. */
void ag_recording_account(ag_agent *a, ag_count *cnt, int delivered, int64_t n, int64_t bytes);
/* Emits RecordingReport for sessions whose stop instant passed. */
void ag_recording_tick(ag_agent *a, int64_t now_ns);
void ag_recording_free(ag_agent *a);

/* control.c */
/* Parses agent.supervisor: "http://HOST:PORT[,http://HOST:PORT...]". */
/* Reads the supervisor list (URLs and/or the word "discover") and the
 * discovery.* keys; list NULL or empty: standalone. */
int ag_control_init(ag_control *c, const ev_conf *conf, const char *list, char *errstr,
                    size_t errstr_size);
/* Opens the discovery socket on the agent's loop (after the context and the
 * log exist); nothing when discovery is not configured. */
int ag_control_start(ag_agent *a, char *errstr, size_t errstr_size);
/* Runs the register / plan / probe / heartbeat cycle; called by the tick. */
void ag_control_tick(ag_agent *a, int64_t now_ns);
/* master clock minus agent clock at agent time t (0 until measured, and
 * standalone): device times convert to master time through it. */
int64_t ag_master_offset_ns(const ag_agent *a, int64_t agent_ns);
extern const struct lws_protocols ag_control_protocol;
/* A device's time on the master clock (its fit, then the node's offset),
 * and back: what records carry and what `start`/`stop` send. */
int64_t ag_device_to_master(const ag_agent *a, const ag_device *d, int64_t device_ns);
int64_t ag_master_to_device(const ag_agent *a, const ag_device *d, int64_t master_ns);

/* endpoint.c */
/* Creates the lws context (the client side for the control plane); the
 * device endpoint listens at once unless a supervisor is configured. */
int ag_endpoint_start(ag_agent *a, char *errstr, size_t errstr_size);
/* The device endpoint's listening vhost (what a plan's "devices" starts). */
int ag_endpoint_listen(ag_agent *a, char *errstr, size_t errstr_size);
void ag_endpoint_stop(ag_agent *a);
/* Asks lws for a writable callback on c (after queueing). */
void ag_wake(ag_conn *c);
/* Closes c with a WebSocket close code and reason. */
void ag_close(ag_conn *c, int code, const char *reason);
/* Writes the next queued message; returns -1 to close. */
int ag_write_next(ag_agent *a, ag_conn *c);
/* Appends n bytes to a growable buffer (doubled from 4 KiB; no NUL added:
 * a 1 MiB message fills a 1 MiB buffer exactly); -1 when out of memory.
 * Device messages and the control plane's HTTP answers are gathered with
 * it (both parsed by length). */
int ag_buf_append(unsigned char **buf, size_t *len, size_t *cap, const void *in, size_t n);

int64_t ag_now_ns(void);

#endif
