/* agent.h — msrs-agent internals (prefix ag_): the types every layer
 * shares. One thread runs it all: every callback of the agent runs on the
 * lws service thread (the one in main()'s loop: libev's, loop.c, or
 * lws_service's).
 *
 * Layers, bottom to top; a file calls only the files below it and knows
 * nothing of the ones above (upward calls go through the handler pointers
 * main.c sets in ag_agent, as libuv's read_cb/close_cb):
 *   0. loop.c       the event loop: libev on epoll, lws's foreign loop
 *   1. endpoint.c   connections: the lws device endpoint, reassembly, one
 *                   send queue per connection (ag_send), t1 stamping
 *   2. emit.c       records to the log, counted (ag_emit)
 *   3. device.c     the device registry: find, add, attach, detach
 *   4. clock.c      clock sync of devices (probe schedule, rounds) and the
 *                   device <-> master time conversions
 *   5. flow.c       backpressure: the log's backlog -> `flow` to devices
 *   6. recording.c  sessions this node records and their RecordingReport
 *   6b. restore.c   at start: the sessions this node was recording, rebuilt
 *                   from the log (commands, sessions, devices, samples, media)
 *   7. ingest.c     samples, media, status, sync_mark -> events
 *   8. protocol.c   device messages: envelope checks, hello, dispatch
 *   8b. spawn.c     the plan's services that are processes of their own
 *                   (msrs-capture): started, restarted, stopped
 *   9. control.c    the control plane (a supervisor client)
 *  10. main.c       options, the tick (2 ms while busy, the next due time while
 *                   idle), commands; wires the layers
 * The pure clock estimator is libevents' ev_clock_est (clockest.c). */
#ifndef MSRS_AGENT_H
#define MSRS_AGENT_H
#include "admit.h"
#include "cli.h"
#include "ev.h"
#include "ops.h"
#include "security.h"

#include <libwebsockets.h>
#include <sys/types.h>

#define AG_ID_MAX          EV_ID_MAX
#define AG_MAX_STREAMS     8
#define AG_MAX_SUPERVISORS 8
#define AG_HELLO_MAX       65536 /* bytes of a message before an accepted hello */
enum { AG_RX_OVER_MESSAGE = 1, AG_RX_OVER_HELLO, AG_RX_OVER_TOTAL };
#define AG_RX_KEEP 262144 /* a reassembly buffer larger is freed after its message */
/* probes a TLS connection remembers the send instant of: a round's 16 at
 * 15 ms apart are answered within milliseconds; an answer that comes after
 * 32 newer probes is measured from the t1 it echoes */
#define AG_PROBES_KEEP 32

typedef struct ag_config {
    int epoll; /* agent.event_loop: 1 libev on epoll (loop.h), 0 lws's poll() */
    char host[128];
    int port;
    char advertise[128]; /* the host devices reach us at (agent.advertise; default host) */
    char node_id[AG_ID_MAX];
    int64_t max_message_bytes;  /* a bigger message gets error too_large */
    int64_t max_buffered_bytes; /* messages being reassembled, over every connection */
    int64_t max_devices;
    int64_t rate_per_s, rate_burst; /* per connection token bucket */
    int64_t sync_interval_ms, sync_idle_interval_ms, sync_probes, probe_spacing_ms,
        round_timeout_ms;
    int64_t sync_burst_probes;     /* probes per round while a device's window is not full */
    int64_t sync_max_rounds_per_s; /* rounds this node starts in a second, at most */
    int64_t flow_high_bytes, flow_low_bytes; /* log backlog: slow_down above, resume below */
    int64_t report_delay_ms;   /* RecordingReport this long after a session's stop instant
                                  and after its stop command came */
    int64_t kernel_timestamps; /* sync.kernel_timestamps: t4 is the kernel's receive stamp */
    /* bounds on connections before and after hello (docs/security.md) */
    int64_t hello_timeout_ms, idle_timeout_ms, max_connections, max_pending_per_address;
} ag_config;

typedef struct ag_conn ag_conn;
typedef struct ag_agent ag_agent;

/* What one device stream delivered to the log for a session. */
typedef struct ag_count {
    char stream_id[AG_ID_MAX];
    int64_t samples, bytes, gaps, dropped;
    int64_t gap_samples; /* samples (media: packets) whose seq never reached the log */
    int64_t late_start_samples, late_start_bytes; /* in the window, written untagged
                                                     before the start command came */
    int64_t late_stop_samples, late_stop_bytes;   /* tagged with the session, first master time
                                                     at or after the stop instant (the stop
                                                     command came late): not the session's */
} ag_count;

/* A batch written untagged (no session), remembered for a while so that a
 * start command that arrives after its start instant can count what it
 * missed (late_start). */
typedef struct ag_untagged {
    int64_t first_t; /* device clock */
    int64_t samples, bytes;
    char stream_id[AG_ID_MAX];
} ag_untagged;

/* A batch counted for a session whose stop instant was not known yet,
 * remembered for a while so that a stop command that arrives after its
 * instant can move what was past it to late_stop. */
typedef struct ag_tagged {
    int64_t first_master; /* as written in the record */
    int64_t samples, bytes;
    int count; /* its ag_count: an index into the device's counts */
} ag_tagged;

#define AG_UNTAGGED_KEEP 128
#define AG_TAGGED_KEEP   256

/* A session this node records (StartRecording .. RecordingReport). */
typedef struct ag_session {
    char session_id[AG_ID_MAX];
    int64_t start_at_ns, stop_at_ns; /* master clock; stop INT64_MAX until known */
    int64_t stop_heard_ns;           /* when the stop command came (agent clock) */
    int64_t last_tagged_ns;          /* when data claiming it last came (agent clock): the report
                                        waits until the devices' held data has drained */
    json_t *missing;                 /* devices asked for but not connected at the start */
    json_t *expected;                /* rebuilt after a restart (restore.c): devices not yet back */
    /* the report (recording.c): due at stop + agent.report_delay_ms, when
     * the counts are frozen; emitted once the log acknowledged every record
     * produced before that (or report_timeout_ms passed) */
    int report_phase;       /* AG_REPORT_NONE, _WAIT_DATA, _WAIT_ACK, _DONE */
    json_t *report_streams; /* the frozen counts, until emitted */
    int64_t report_target;  /* ag_agent.produced when the report fell due */
    int64_t report_due_ns;  /* when it fell due (agent clock) */
    int64_t report_emitted; /* ag_agent.produced once the report itself was produced */
    int64_t lost_at_start;  /* ev_log_lost when the session began here */
    int64_t unacknowledged; /* of report_target, not acknowledged when the report was sent */
} ag_session;

enum { AG_REPORT_NONE, AG_REPORT_WAIT_DATA, AG_REPORT_WAIT_ACK, AG_REPORT_DONE };

/* A device the agent has seen; survives reconnects so a rejoin resumes its
 * sequence numbers and clock history. */
typedef struct ag_device {
    char device_id[AG_ID_MAX];
    ag_conn *conn;      /* NULL while disconnected */
    ev_clock_est clock; /* the device's clock seen from the agent (remote = device) */
    json_t *next_seq;   /* stream_id -> next expected seq */
    int64_t gaps;
    char stream_ids[AG_MAX_STREAMS][AG_ID_MAX]; /* declared in hello */
    int stream_count;
    /* the session it records, if any: its counts per stream */
    ag_session *rec;
    int64_t rec_start_dev, rec_stop_dev; /* the instants as sent (device clock); stop INT64_MAX */
    ag_count counts[AG_MAX_STREAMS];
    int count_n;
    ag_untagged untagged[AG_UNTAGGED_KEEP]; /* the latest untagged batches, a ring */
    int untagged_next;
    ag_tagged tagged[AG_TAGGED_KEEP]; /* the latest batches counted while rec's stop was
                                         not known, a ring (tagged_n used) */
    int tagged_next, tagged_n;
    int64_t tagged_evicted_master; /* the latest first_master that left the full ring */
    /* clock-sync round */
    int round_active;
    cli_buf round_probes; /* this round's valid probes (ev_clock_probe), for the record (refits) */
    int64_t probes_sent, probes_answered;
    int64_t next_probe_ns, round_deadline_ns, round_started_ns;
    /* the next round is due at next_round_ns while the node records or the
     * device's window fills, else at idle_round_ns (clock.c) */
    int64_t next_round_ns, idle_round_ns;
    int64_t fast_rounds; /* rounds at sync.interval_ms still owed after a reconnect */
    int64_t round_size;  /* probes this round: sync.burst_probes or sync.probes */
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
    ag_device *dev; /* set once hello is accepted (device.c); endpoint.c never reads it */
    char device_id[AG_ID_MAX]; /* the device's, once hello is accepted: what ag_send stamps */
    cli_buf rx;                /* the message being reassembled */
    int rx_too_large;          /* 0, or which bound the message passed: AG_RX_OVER_* */
    int rx_binary;
    int64_t connected_ns; /* when it was established (eviction spares the youngest) */
    ag_out *out_head, *out_tail;
    size_t out_count;
    cli_bucket rate;                              /* agent.rate_per_s, agent.rate_burst */
    int64_t flood_refused, flood_window_start_ns; /* messages refused in the current second */
    int closing; /* ag_close was called, the peer sent a close, or a write
                    failed: nothing more is written at once or handled */
    int evicted; /* closed by cli_admit for a newcomer (agent.max_connections) */
    int paused;  /* not read while the log is behind (flow slow_down) */
    char peer[64];
    int counted;           /* in a->open_conns */
    int pending;           /* in a->pending: counted against its address until hello is accepted */
    char nonce[33];        /* the challenge this connection's hello must answer */
    int64_t idle_armed_ns; /* when the idle deadline was last set */
    int rx_fd; /* the socket whose kernel receive stamps give t4; -1: stamped on reading */
    /* TLS: the latest probes' t1 as written in them with when their write
     * began (cli_tls_send_stamps), a ring (ag_probe_sent_at) */
    struct {
        int64_t t1_ns, sent_ns;
    } probe_sent[AG_PROBES_KEEP];
    int probe_sent_next;
    int read_ahead;     /* TLS, OpenSSL reads ahead (cli_tls_read_ahead) */
    size_t unread_slot; /* 1 + its index in a->unread; 0: not there */
};

typedef struct ag_counters {
    int64_t refused_connections, unauthorized, no_hello, flood_closed, messages, bad_json,
        too_large, unknown_type, invalid, rate_limited, duplicates, not_registered, events,
        emit_errors, dropped, late, slow_downs;
    int64_t rx_bytes;        /* WebSocket payload received from devices */
    int64_t stamp_errors;    /* connections whose kernel receive stamps could not be enabled */
    int64_t report_timeouts; /* reports emitted before the log acknowledged their data */
    int64_t gap_samples;     /* samples missing by sequence number, every device */
    int64_t restored;        /* sessions rebuilt from the log at start */
    int64_t delivery_failed; /* records the log took and then failed to write */
    int64_t sends_corrected; /* clock answers whose t3 the device's next answer corrected */
} ag_counters;

/* The control plane (control.c): this node's registration, plan and
 * heartbeats with a supervisor, and its clock against the supervisor's. */
enum { AG_CTL_DISCOVER, AG_CTL_REGISTER, AG_CTL_PLAN, AG_CTL_PROBE, AG_CTL_HEARTBEAT };

typedef struct ag_control {
    int managed; /* a supervisor list or discovery is configured; 0: standalone */
    char hosts[AG_MAX_SUPERVISORS][128];
    int ports[AG_MAX_SUPERVISORS];
    int url_count, url_i; /* configured ones first, then discovered ones */
    /* discovery (common/discovery.h): a query to the targets when no
     * supervisor is known or the known ones fail, at most one a second */
    int discover, discovery_fd, lead_hint; /* lead_hint: the index that said it leads, or -1 */
    int64_t discovery_port, discovery_wait_ns, query_started_ns, next_query_ns, queries;
    int64_t discovery_skipped, discovery_forged; /* answers ignored: unsigned, or naming 0.0.0.0 */
    char discovery_nonce[33];                    /* the last query's nonce (fresh per query) */
    char token[CLI_AUTH_TOKEN_MAX];              /* this node's bearer token; "" none */
    char discovery_targets[256];
    char prefix[128]; /* the log's topic prefix: which system to join */
    int phase, busy, planned;
    int reported_cameras; /* the last registration said "camera" */
    int64_t next_at_ns, heartbeat_ns;
    int probes_left;
    int64_t clock_unc_ns, clock_rtt_ns;
    int64_t cpu_ns, cpu_at_ns, rx_bytes, rx_at_ns; /* at the last heartbeat */
    int64_t registered_at_ns, last_ok_ns, heartbeats, reregistered, failures;
    char incarnation[EV_ID_MAX]; /* this process's id, new at each start (NodeRegistered) */
} ag_control;

/* The endpoint's upward calls (endpoint.c -> protocol.c), set by main.c
 * before ag_endpoint_start. Both run on the lws service thread, inside
 * lws_service. message_cb: one whole message of c (msg borrowed for the
 * call; binary: a binary frame). closed_cb: c is closing; its send queue is
 * freed after the call. */
/* spawn.c: a service of the plan run as a process (msrs-capture). */
#define AG_SPAWN_ARGS 96
typedef struct ag_spawn {
    int enabled;               /* agent.capture = auto */
    char devices[512];         /* capture.devices: a node with a match has cameras */
    char *argv[AG_SPAWN_ARGS]; /* msrs-capture -X ... */
    int argc;
    pid_t pid; /* 0: not running */
    int wanted, said_off;
    int64_t started_at_ns, restart_at_ns, backoff_ms, starts, exits;
    int64_t kill_at_ns; /* stopping (SIGTERM sent): SIGKILL then; 0 not stopping */
} ag_spawn;

/* Builds the command line from conf (agent.capture, agent.capture_bin,
 * tls.*, auth.*, capture.*) and the endpoint's address. 0 or -1 (errstr). */
int ag_spawn_init(ag_spawn *s, const ev_conf *conf, const ag_config *cfg, const cli_tls *tls,
                  char *errstr, size_t errstr_size);
/* 1 when capture is enabled and a path matches capture.devices. */
int ag_spawn_cameras(const ag_spawn *s);
/* The plan names the service (1) or not (0): started, or sent SIGTERM
 * (SIGKILL after 5 s, from ag_spawn_tick: the agent's thread never waits). */
void ag_spawn_want(ag_spawn *s, int wanted, int64_t now_ns);
/* Reaps an exit (said) and restarts it when due. */
void ag_spawn_tick(ag_spawn *s, int64_t now_ns);
/* SIGTERM, waiting up to 5 s, then SIGKILL; then not wanted (at exit). */
void ag_spawn_stop(ag_spawn *s);
/* Stops it and frees the command line. */
void ag_spawn_free(ag_spawn *s);

typedef void (*ag_message_cb)(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len,
                              int binary);
typedef void (*ag_closed_cb)(ag_agent *a, ag_conn *c);

struct ag_agent {
    ag_config cfg;
    ev_log *log;
    ev_codec *codec;
    cli_buf samples_times;  /* ingest.c: one samples message's device and master times */
    cli_buf samples_values; /* ingest.c: a JSON samples message's values, as Avro's bytes */
    struct lws_context *ctx;
    void *loop; /* libev's, lws's foreign loop (loop.h); NULL: lws's poll() loop */
    lws_sorted_usec_list_t tick;
    ag_device **devices;
    size_t device_count, device_cap;
    size_t connected;
    int slowed;              /* devices were told to slow down */
    int64_t resumed_at_ns;   /* when they were last told to resume (0: never) */
    int64_t backlog_bytes;   /* the log's, at the last tick */
    int64_t backlog_records; /* records produced and not yet acknowledged, at the last tick */
    int64_t acked_records;   /* produced - backlog at the last tick that saw progress */
    int64_t acked_at_ns;     /* when the log last acknowledged something */
    int stalled;             /* records wait and nothing was acknowledged for 3 s */
    int64_t log_error_at_ns; /* last time a failing log writer was reported */
    int64_t next_id;
    ag_counters n;
    char commands_topic[320];
    int commands_live;        /* the commands cursor reached the end once (said on stderr) */
    int64_t commands_next_ns; /* when the commands cursor is read next */
    int64_t tick_messages;    /* a->n.messages at the last tick: traffic since? */
    ag_session **sessions;
    size_t session_count;
    ag_control ctl;
    ag_spawn capture; /* msrs-capture, when the plan names it */
    int64_t capture_checked_ns;
    int listening;     /* the device endpoint's vhost exists */
    cli_tls tls;       /* the endpoint's TLS and the control client's */
    cli_auth auth;     /* device credentials (auth.key_file) */
    size_t open_conns; /* device connections open now */
    ag_conn **unread;  /* TLS connections whose SSL may hold records read ahead (endpoint.c) */
    size_t unread_len, unread_cap;
    json_t *pending;      /* peer address -> its connections without an accepted hello */
    int64_t rx_held;      /* bytes the connections' reassembly buffers hold (their capacity) */
    cli_admit admit;      /* every connection from its accept: agent.max_connections (admit.h) */
    int64_t produced;     /* records the log took (ev_log_emit* returned 0) */
    struct cli_ops *ops;  /* /metrics (ops.listen), or NULL */
    cli_topic_counts out; /* records the log took, per logical topic (emit.c) */
    int ready;            /* listening, or planned: cli_ready said it */
    /* the control plane's results (control.c), read by the layers below */
    ev_clock_est master_clock;                  /* the supervisor's clock (master) seen from here */
    int64_t rounds_window_ns, rounds_in_window; /* clock.c: rounds started this second, */
    size_t sync_rotor;                          /* where its scan starts, */
    int sync_recording;                         /* and whether the last tick's node recorded */
    int64_t plan_max_devices;                   /* the plan's; 0: no limit but agent.max_devices */
    char redirect[256];                         /* where a device this node refuses should go */
    /* upward calls, set by main.c */
    ag_message_cb message_cb;
    ag_closed_cb closed_cb;
    /* main.c's: runs the tick within its busy period (an answer of the
     * supervisor may make the next step of the control cycle due now; a
     * hello, a device's first round); on the lws service thread; NULL
     * while the agent stops */
    void (*tick_soon)(ag_agent *a);
    const struct lws_protocols *client_protocol; /* control.c's, served by the same context */
};

static inline int64_t ag_now_ns(void)
{
    return ev_now_ns();
}

#endif
