/* msrs-agent — runs on every recording node: the device endpoint
 * (ws://HOST:PORT/v1/devices, docs/protocol.md) with clock sync rounds, the
 * SyncNow command, recording sessions (StartRecording / StopRecording,
 * recording.c) and, with a supervisor configured, the control plane
 * (control.c, docs/control.md): node id, register, plan, heartbeats. V4L2
 * capture (collection issue) is not built yet.
 *
 * main.c is the top of the layers (agent.h lists them): it reads the
 * options, wires the layers together (the endpoint's handlers, the control
 * plane's protocol), runs the 2 ms tick and hands commands to the layers. */
#include "agent.h"
#include "cli.h"
#include "clock.h"
#include "control.h"
#include "device.h"
#include "endpoint.h"
#include "flow.h"
#include "loop.h"
#include "ops.h"
#include "protocol.h"
#include "recording.h"
#include "restore.h"
#include "rxstamp.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TICK_US              2000       /* the tick while busy */
#define IDLE_TICK_US         100000     /* the longest sleep while idle */
#define SYNC_INTERVAL_MAX_MS 86400000LL /* a day: the clock keys' bound (ns fit int64) */
#define COMMANDS_POLL_MS     100        /* how often the commands cursor is read */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: msrs-agent --log URI [--listen HOST:PORT] [--supervisor URL[,URL]] [options]\n"
        "Serves devices on wss://HOST:PORT/v1/devices (JSON protocol, docs/protocol.md; TLS\n"
        "with tls.cert and tls.key, devices proving a credential of auth.key_file's lab key;\n"
        "docs/security.md), "
        "syncs their clocks and writes their events to the log. With a supervisor it\n"
        "registers, listens when its plan says so and heartbeats (docs/control.md).\n\n"
        "  --listen HOST:PORT  default 127.0.0.1:8620 (config agent.listen)\n"
        "  --supervisor URLS   https://HOST:PORT of the supervisors, comma-separated, tried in\n"
        "                      turn; 'discover' (alone or after URLs): ask the network\n"
        "                      with a UDP query (config agent.supervisor; none: standalone)\n"
        "  --node-id ID        this node's id (config agent.node_id; else the id kept in\n"
        "                      agent.node_id_file, default ~/.config/msrs/node_id, made\n"
        "                      from the host name and a random suffix on first "
        "start)\n" CLI_COMMON_HELP
        "\nconfig keys (defaults): agent.max_message_bytes (1048576), agent.max_devices\n"
        "(1024), agent.rate_per_s (2000), agent.rate_burst (4000), sync.interval_ms (2000),\n"
        "sync.idle_interval_ms (8000: between rounds of a device whose window is full while\n"
        "this node records nothing), sync.probes (8), sync.burst_probes (16: per round until\n"
        "a device has 512 probes), sync.max_rounds_per_s (2000: rounds started a second, over\n"
        "every device; the rest wait),\n"
        "sync.probe_spacing_ms (15), sync.round_timeout_ms (500),\n"
        "agent.flow.high_bytes (67108864) / agent.flow.low_bytes (16777216: devices are told\n"
        "to slow down and not read while the log's backlog is above high, until below low),\n"
        "agent.report_delay_ms (1000: RecordingReport this long after a session's stop instant),\n"
        "agent.advertise (the listen host: the host others reach this node's devices at),\n"
        "sync.kernel_timestamps (1: t4 is the kernel's receive stamp; 0: stamped on reading),\n"
        "discovery.port (8611), discovery.targets (127.255.255.255,255.255.255.255: where\n"
        "queries go), discovery.wait_ms (300: how long to wait for a leader's answer),\n"
        "agent.hello_timeout_ms (5000), agent.idle_timeout_ms (60000), agent.max_connections\n"
        "(max_devices + 64), agent.max_pending_per_address (128), agent.max_buffered_bytes\n"
        "(268435456), auth.key_file, auth.revoked_file, auth.node_token, tls.cert, tls.key,\n"
        "tls.ca, tls.plain (docs/security.md), agent.event_loop (epoll: libev; poll: lws's\n"
        "own, which scans every socket each turn)\n"
        "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

/* The persistent node id: read from path, or made (host name + 8 random
 * hex digits) and written there on first start. */
static int node_id_from_file(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f) {
        char line[128] = "";
        int ok = fgets(line, sizeof(line), f) != NULL;
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        if (ok && *line) {
            snprintf(out, size, "%s", line);
            return 0;
        }
    }
    char host[48] = "node", id[EV_ID_MAX], dir[1024];
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    ev_new_id(id);
    snprintf(out, size, "%s-%.8s", host, id);
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        ev_mkdirs(dir); /* a failure shows as the fopen's below */
    }
    if (!(f = fopen(path, "w")) || fprintf(f, "%s\n", out) < 0 || fclose(f)) {
        fprintf(stderr, "msrs-agent: node id file %s: cannot write: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(stderr, "msrs-agent: new node id %s (kept in %s)\n", out, path);
    return 0;
}

static int load_config(ag_config *cfg, const ev_conf *conf, const char *listen, const char *node)
{
    char err[256] = "";
    const char *l = listen ? listen : ev_conf_get(conf, "agent.listen", "127.0.0.1:8620");
    struct {
        const char *key;
        int64_t def, *out;
    } ints[] = {{"agent.max_message_bytes", 1 << 20, &cfg->max_message_bytes},
                {"agent.max_devices", 1024, &cfg->max_devices},
                {"agent.rate_per_s", 2000, &cfg->rate_per_s},
                {"agent.rate_burst", 4000, &cfg->rate_burst},
                {"sync.interval_ms", 2000, &cfg->sync_interval_ms},
                {"sync.idle_interval_ms", 8000, &cfg->sync_idle_interval_ms},
                {"sync.probes", 8, &cfg->sync_probes},
                {"sync.burst_probes", 16, &cfg->sync_burst_probes},
                {"sync.max_rounds_per_s", 2000, &cfg->sync_max_rounds_per_s},
                {"sync.probe_spacing_ms", 15, &cfg->probe_spacing_ms},
                {"sync.round_timeout_ms", 500, &cfg->round_timeout_ms},
                {"agent.flow.high_bytes", 64 << 20, &cfg->flow_high_bytes},
                {"agent.flow.low_bytes", 16 << 20, &cfg->flow_low_bytes},
                {"agent.report_delay_ms", 1000, &cfg->report_delay_ms},
                {"agent.hello_timeout_ms", 5000, &cfg->hello_timeout_ms},
                {"agent.idle_timeout_ms", 60000, &cfg->idle_timeout_ms},
                {"agent.max_pending_per_address", 128, &cfg->max_pending_per_address},
                {"agent.max_buffered_bytes", 256 << 20, &cfg->max_buffered_bytes}};
    if (cli_host_port(l, cfg->host, sizeof(cfg->host), &cfg->port)) {
        fprintf(stderr, "msrs-agent: listen '%s': expected HOST:PORT\n", l);
        return -1;
    }
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (ev_conf_get_int(conf, ints[i].key, ints[i].def, ints[i].out, err, sizeof(err))) {
            fprintf(stderr, "msrs-agent: %s\n", err);
            return -1;
        }
        if (*ints[i].out <= 0) {
            fprintf(stderr, "msrs-agent: config %s: expected a positive integer\n", ints[i].key);
            return -1;
        }
    }
    const char *loop = ev_conf_get(conf, "agent.event_loop", "epoll");
    if (strcmp(loop, "epoll") != 0 && strcmp(loop, "poll") != 0) {
        fprintf(stderr, "msrs-agent: config agent.event_loop: expected epoll or poll, not '%s'\n",
                loop);
        return -1;
    }
    cfg->epoll = strcmp(loop, "epoll") == 0;
    /* default: every device, and room to refuse more */
    if (ev_conf_get_int(conf, "agent.max_connections", cfg->max_devices + 64, &cfg->max_connections,
                        err, sizeof(err)) ||
        cfg->max_connections <= 0) {
        fprintf(stderr, "msrs-agent: %s\n",
                *err ? err : "config agent.max_connections: expected a positive integer");
        return -1;
    }
    if (cfg->max_buffered_bytes < cfg->max_message_bytes) {
        fprintf(stderr,
                "msrs-agent: config agent.max_buffered_bytes (%lld): expected at least "
                "agent.max_message_bytes (%lld)\n",
                (long long)cfg->max_buffered_bytes, (long long)cfg->max_message_bytes);
        return -1;
    }
    if (!ev_conf_get(conf, "sync.idle_interval_ms", NULL) &&
        cfg->sync_idle_interval_ms < cfg->sync_interval_ms)
        cfg->sync_idle_interval_ms = cfg->sync_interval_ms; /* never faster than asked */
    if (cfg->sync_idle_interval_ms < cfg->sync_interval_ms ||
        cfg->sync_idle_interval_ms > SYNC_INTERVAL_MAX_MS) {
        fprintf(stderr,
                "msrs-agent: config sync.idle_interval_ms (%lld): expected from sync.interval_ms "
                "(%lld) to %lld\n",
                (long long)cfg->sync_idle_interval_ms, (long long)cfg->sync_interval_ms,
                (long long)SYNC_INTERVAL_MAX_MS);
        return -1;
    }
    if (cfg->sync_burst_probes < cfg->sync_probes) {
        fprintf(
            stderr,
            "msrs-agent: config sync.burst_probes (%lld): expected at least sync.probes (%lld)\n",
            (long long)cfg->sync_burst_probes, (long long)cfg->sync_probes);
        return -1;
    }
    if (ev_conf_get_int(conf, "sync.kernel_timestamps", 1, &cfg->kernel_timestamps, err,
                        sizeof(err)) ||
        (cfg->kernel_timestamps != 0 && cfg->kernel_timestamps != 1)) {
        fprintf(stderr, "msrs-agent: %s\n",
                *err ? err : "config sync.kernel_timestamps: expected 0 or 1");
        return -1;
    }
    if (cfg->flow_low_bytes >= cfg->flow_high_bytes) {
        fprintf(stderr,
                "msrs-agent: config agent.flow.low_bytes (%lld): expected less than "
                "agent.flow.high_bytes (%lld)\n",
                (long long)cfg->flow_low_bytes, (long long)cfg->flow_high_bytes);
        return -1;
    }
    const char *id = node ? node : ev_conf_get(conf, "agent.node_id", NULL);
    if (id) {
        if (!ev_id_valid(id)) {
            fprintf(stderr,
                    "msrs-agent: %s '%s': expected 1-%d characters of A-Z a-z 0-9 . _ : -\n",
                    node ? "--node-id" : "config agent.node_id", id, EV_ID_MAX - 1);
            return -1;
        }
        snprintf(cfg->node_id, sizeof(cfg->node_id), "%s", id);
    } else {
        char path[1024];
        const char *file = ev_conf_get(conf, "agent.node_id_file", NULL);
        if (!file) {
            snprintf(path, sizeof(path), "%s/.config/msrs/node_id", getenv("HOME") ?: ".");
            file = path;
        }
        if (node_id_from_file(file, cfg->node_id, sizeof(cfg->node_id)))
            return -1;
        if (!ev_id_valid(cfg->node_id)) {
            fprintf(stderr,
                    "msrs-agent: %s: node id '%s': expected 1-%d characters of A-Z a-z "
                    "0-9 . _ : -\n",
                    file, cfg->node_id, EV_ID_MAX - 1);
            return -1;
        }
    }
    snprintf(cfg->advertise, sizeof(cfg->advertise), "%s",
             ev_conf_get(conf, "agent.advertise", cfg->host));
    return 0;
}

/* Commands for this node: SyncNow, StartRecording, StopRecording. */
static void on_command(ag_agent *a, const char *type, json_t *cmd)
{
    json_t *devices = json_object_get(cmd, "device_ids");
    const char *session = json_string_value(json_object_get(cmd, "session_id"));
    if (strcmp(json_string_value(json_object_get(cmd, "node_id")) ?: "", a->cfg.node_id) != 0)
        return;
    if (strcmp(type, "SyncNow") == 0) {
        size_t i;
        json_t *d;
        if (json_array_size(devices) == 0)
            ag_sync_now(a, NULL);
        json_array_foreach(devices, i, d) ag_sync_now(a, json_string_value(d));
    } else if (strcmp(type, "StartRecording") == 0) {
        ag_start_recording(a, session, devices,
                           json_integer_value(json_object_get(cmd, "start_at_ns")));
    } else if (strcmp(type, "StopRecording") == 0) {
        ag_stop_recording(a, session, json_integer_value(json_object_get(cmd, "stop_at_ns")));
    }
}

static void on_tick(lws_sorted_usec_list_t *sul);

static void tick_soon(ag_agent *a)
{
    lws_sul_schedule(a->ctx, 0, &a->tick, on_tick, TICK_US);
}

/* Sets the upward calls: what the endpoint does with a whole message and a
 * closing connection (protocol.c), and the control plane's protocol served
 * by the endpoint's context. */
static void wire(ag_agent *a)
{
    a->message_cb = ag_on_message;
    a->closed_cb = ag_on_closed;
    a->tick_soon = tick_soon;
    a->client_protocol = &ag_control_protocol;
    ev_clock_est_init(&a->master_clock);
}

/* Reads the commands the log has for this node: every COMMANDS_POLL_MS
 * (a start comes collect.lead_ms, 1 s, ahead of its instant), at once
 * again while there are more. */
static void poll_commands(ag_agent *a, int64_t now)
{
    char err[512];
    const ev_msg *m;
    int handled = 0;
    int rc;
    while ((rc = ev_log_poll(a->log, 0, &m, err, sizeof(err))) == 0) {
        ev_event ev;
        json_t *cmd = NULL;
        handled++;
        if (ev_event_decode(a->codec, m, &ev, err, sizeof(err)) ||
            ev_value_to_json(ev.value, &cmd, err, sizeof(err))) {
            fprintf(stderr, "msrs-agent: command at offset %lld skipped: %s\n",
                    (long long)m->offset, err);
            continue;
        }
        on_command(a, ev_schema_short_name(ev.schema), cmd);
        json_decref(cmd);
    }
    if (rc == EV_ERR_END && !a->commands_live) {
        /* the commands partitions read to their end once (on Kafka: their
         * committed offsets fetched; no group join, docs/architecture.md) */
        a->commands_live = 1;
        fprintf(stderr, "msrs-agent: commands: reading as cursor agent.%s\n", a->cfg.node_id);
    }
    if (handled && ev_log_commit(a->log, err, sizeof(err)))
        fprintf(stderr, "msrs-agent: %s\n", err);
    /* at once again while there were some or a session records (a stop) */
    a->commands_next_ns =
        handled || ag_recording_active(a) ? now : now + COMMANDS_POLL_MS * 1000000LL;
}

/* Connections held that are not open WebSockets: in their TLS or HTTP
 * handshakes, or refused and closing. (An evicted WebSocket gives its slot
 * back before lws has closed it: hence the floor.) */
static int64_t handshaking(const ag_agent *a)
{
    int64_t n = a->admit.used - (int64_t)a->open_conns;
    return n > 0 ? n : 0;
}

/* The agent's metrics (ops.h; docs/operations.md, "Metrics"). */
static void publish_metrics(ag_agent *a)
{
    cli_buf b = {0};
    const ag_counters *n = &a->n;
    cli_metric(&b, "msrs_agent_devices_connected", "gauge", "devices registered and connected",
               (double)a->connected);
    cli_metric(&b, "msrs_agent_connections_open", "gauge", "WebSocket connections open",
               (double)a->open_conns);
    cli_admit_metrics(&b, "msrs_agent", &a->admit);
    cli_metric(&b, "msrs_agent_connections_handshaking", "gauge",
               "connections in their TLS or WebSocket handshake (or refused and closing)",
               (double)handshaking(a));
    cli_metric(&b, "msrs_agent_connections_total", "counter",
               "connections accepted (TCP), refused and evicted ones included",
               (double)a->admit.accepted);
    cli_metric(&b, "msrs_agent_messages_total", "counter", "messages from devices",
               (double)n->messages);
    cli_metric(&b, "msrs_agent_received_bytes_total", "counter",
               "WebSocket payload bytes received from devices (ingest)", (double)n->rx_bytes);
    cli_metric(&b, "msrs_agent_records_produced_total", "counter", "records the log took",
               (double)a->produced);
    cli_topic_metric(&b, "msrs_agent_records_out_total", "records the log took, per topic",
                     &a->out);
    cli_metric_family(&b, "msrs_agent_refused_total", "counter",
                      "messages and connections refused, by why");
    const struct {
        const char *kind;
        int64_t v;
    } refused[] = {{"bad_json", n->bad_json},
                   {"too_large", n->too_large},
                   {"unknown_type", n->unknown_type},
                   {"invalid", n->invalid},
                   {"rate_limited", n->rate_limited},
                   {"duplicate", n->duplicates},
                   {"not_registered", n->not_registered},
                   {"unauthorized", n->unauthorized},
                   {"no_hello", n->no_hello},
                   {"flood", n->flood_closed},
                   {"connection_limit", n->refused_connections + a->admit.refused}};
    char labels[64];
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        snprintf(labels, sizeof(labels), "why=\"%s\"", refused[i].kind);
        cli_metric_sample(&b, "msrs_agent_refused_total", labels, (double)refused[i].v);
    }
    cli_metric(&b, "msrs_agent_clock_sends_corrected_total", "counter",
               "clock answers whose t3 the device corrected with its next answer (when the "
               "answer's write really began: docs/protocol.md, prev_t3)",
               (double)n->sends_corrected);
    cli_metric(&b, "msrs_agent_samples_dropped_total", "counter",
               "samples the log refused or never acknowledged", (double)n->dropped);
    cli_metric(&b, "msrs_agent_gap_samples_total", "counter",
               "samples missing by sequence number, every device", (double)n->gap_samples);
    cli_metric(&b, "msrs_agent_late_total", "counter",
               "data tagged with a session after its report: not the session's", (double)n->late);
    cli_metric(&b, "msrs_agent_log_backlog_bytes", "gauge",
               "bytes produced and not yet acknowledged by the log", (double)a->backlog_bytes);
    cli_metric(&b, "msrs_agent_log_unacknowledged_records", "gauge",
               "records produced and not yet acknowledged by the log", (double)a->backlog_records);
    cli_metric(&b, "msrs_agent_log_delivery_failed_total", "counter",
               "records the log took and then failed to write", (double)n->delivery_failed);
    cli_metric(&b, "msrs_agent_devices_slowed", "gauge", "1 while devices are told to slow down",
               (double)a->slowed);
    cli_metric(&b, "msrs_agent_slow_downs_total", "counter", "times devices were told to slow down",
               (double)n->slow_downs);
    cli_metric(&b, "msrs_agent_report_timeouts_total", "counter",
               "recording reports sent before the log acknowledged their data",
               (double)n->report_timeouts);
    cli_lag_metric(&b, a->log, NULL);
    cli_ops_publish(a->ops, &b, a->ready);
    cli_buf_free(&b);
}

/* When the tick runs next, in us from now: every TICK_US while the agent
 * is busy (messages since the last tick, records the log has not
 * acknowledged, devices slowed, a session), else at the next time a layer
 * has something due (a probe, a round, a request of the control cycle),
 * at most IDLE_TICK_US away. An idle node with 16 devices used to wake 500
 * times a second for nothing (issue 23: its cost). Work that comes between
 * ticks is done where it comes (a message, a round's last answer), or
 * wakes the tick (a->tick_soon: an answer of the supervisor). */
static int64_t next_tick_us(ag_agent *a, int64_t now)
{
    int recording = ag_recording_active(a);
    int busy =
        a->n.messages != a->tick_messages || a->backlog_records > 0 || a->slowed || recording;
    a->tick_messages = a->n.messages;
    if (busy)
        return TICK_US;
    int64_t due = now + IDLE_TICK_US * 1000;
    due = ag_control_next_ns(a, due);
    due = ag_sync_next_ns(a, due, recording);
    if (a->commands_next_ns < due)
        due = a->commands_next_ns;
    int64_t us = (due - now) / 1000;
    return us < TICK_US ? TICK_US : us;
}

/* The agent's timer; runs on the lws service thread (next_tick_us). */
static void on_tick(lws_sorted_usec_list_t *sul)
{
    ag_agent *a = lws_container_of(sul, ag_agent, tick);
    int64_t now = ag_now_ns();
    ag_control_tick(a, now);
    ag_sync_tick(a, now, ag_recording_active(a));
    ag_recording_tick(a, now);
    ag_flow_tick(a, now); /* the log writes in its own thread: nothing to flush here */
    if (now - a->capture_checked_ns >= 1000000000) { /* msrs-capture: exited? due again? */
        a->capture_checked_ns = now;
        ag_spawn_tick(&a->capture, now);
    }
    if (now >= a->commands_next_ns)
        poll_commands(a, now);
    if (cli_ops_due(a->ops))
        publish_metrics(a);
    lws_sul_schedule(a->ctx, 0, &a->tick, on_tick, next_tick_us(a, ag_now_ns()));
}

static void print_counters(const ag_agent *a, const char *when)
{
    fprintf(stderr,
            "msrs-agent: %s: %zu connected, %lld connections (%zu open, %lld handshaking, %lld "
            "refused, %lld "
            "evicted, %lld closed without hello, %lld unauthorized, %lld closed for flooding), "
            "%lld messages, "
            "%lld events, "
            "errors: %lld bad_json %lld too_large %lld unknown_type %lld invalid %lld "
            "rate_limited %lld duplicate %lld not_registered %lld emit; %lld samples dropped, %lld "
            "late; "
            "%lld slow_down; %lld clock answers corrected by the next (prev_t3)\n",
            when, a->connected, (long long)a->admit.accepted, a->open_conns,
            (long long)handshaking(a), (long long)(a->n.refused_connections + a->admit.refused),
            (long long)a->admit.evicted, (long long)a->n.no_hello, (long long)a->n.unauthorized,
            (long long)a->n.flood_closed, (long long)a->n.messages, (long long)a->n.events,
            (long long)a->n.bad_json, (long long)a->n.too_large, (long long)a->n.unknown_type,
            (long long)a->n.invalid, (long long)a->n.rate_limited, (long long)a->n.duplicates,
            (long long)a->n.not_registered, (long long)a->n.emit_errors, (long long)a->n.dropped,
            (long long)a->n.late, (long long)a->n.slow_downs, (long long)a->n.sends_corrected);
}

typedef struct ag_args {
    ag_agent *a;
    const char *listen, *node, *supervisor;
} ag_args;

static int on_opt(void *arg, int opt, const char *val)
{
    ag_args *g = arg;
    switch (opt) {
    case 'L': g->listen = val; return 0;
    case 'N': g->node = val; return 0;
    case 'S': g->supervisor = val; return 0;
    default: return -1;
    }
}

/* The token this node shows the supervisor: auth.node_token when set (checked
 * now: a node token for this node), else generation 1 derived from the
 * lab key; none without a key. */
static int node_token(ag_agent *a, const ev_conf *conf, char *errstr, size_t errstr_size)
{
    const char *token = ev_conf_get(conf, "auth.node_token", ""), *why = NULL;
    cli_principal p = {.kind = "node", .gen = 1};
    snprintf(p.id, sizeof(p.id), "%s", a->cfg.node_id);
    if (*token && a->auth.enabled &&
        (cli_auth_token_check(&a->auth, token, &p, &why) || strcmp(p.kind, "node") ||
         strcmp(p.id, a->cfg.node_id))) {
        snprintf(errstr, errstr_size, "config auth.node_token: %s",
                 why ? why : "expected this node's token (msrs nodes token NODE_ID)");
        return -1;
    }
    if (*token)
        snprintf(a->ctl.token, sizeof(a->ctl.token), "%s", token);
    else if (a->auth.enabled &&
             cli_auth_token(a->auth.key, &p, a->ctl.token, sizeof(a->ctl.token))) {
        snprintf(errstr, errstr_size, "node id '%s': no node token can be made of it", p.id);
        return -1;
    }
    return 0;
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    ag_args *g = arg;
    ag_agent *a = g->a;
    const char *supervisor =
        g->supervisor ? g->supervisor : ev_conf_get(conf, "agent.supervisor", NULL);
    char err[512];
    if (ag_control_init(&a->ctl, conf, supervisor, err, sizeof(err))) {
        snprintf(errstr, errstr_size, "config agent.supervisor: %s", err);
        return -1;
    }
    if (load_config(&a->cfg, conf, g->listen, g->node))
        return -1; /* said on stderr */
    if (cli_tls_load(&a->tls, conf, "msrs-agent", 1, errstr, errstr_size) ||
        cli_auth_load(&a->auth, conf, "msrs-agent", errstr, errstr_size) ||
        node_token(a, conf, errstr, errstr_size) ||
        ag_spawn_init(&a->capture, conf, &a->cfg, &a->tls, errstr, errstr_size))
        return -1;
    a->pending = json_object();
    /* room to accept (and refuse) more than agent.max_connections, with the
     * log's files and the control client's sockets; before rxstamp and lws
     * size their tables from the limit */
    long want = (long)a->cfg.max_connections + 256, fds = cli_fd_limit_raise(want);
    if (fds < want)
        fprintf(stderr,
                "msrs-agent: the open-file limit is %ld, under agent.max_connections (%lld) + "
                "256: connections past it are refused by the kernel (raise LimitNOFILE / "
                "ulimit -n)\n",
                fds, (long long)a->cfg.max_connections);
    if (a->cfg.kernel_timestamps && rxstamp_check(err, sizeof(err))) {
        snprintf(errstr, errstr_size, "config sync.kernel_timestamps = 1: %s", err);
        return -1;
    }
    if (!ev_conf_get(conf, "source", NULL)) {
        char source[128];
        snprintf(source, sizeof(source), "agent/%s", a->cfg.node_id);
        ev_conf_set(conf, "source", source);
    }
    return 0;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    ag_agent *a = ((ag_args *)arg)->a;
    int exit_code = CLI_EXIT_OK;
    char err[512];
    a->log = log;
    a->codec = ev_codec_new();
    char cursor[128];
    snprintf(cursor, sizeof(cursor), "agent.%s", a->cfg.node_id);
    const char *topics[1] = {
        ev_log_topic(a->log, "commands", a->commands_topic, sizeof(a->commands_topic))};
    wire(a);
    if (a->cfg.epoll && !(a->loop = ag_loop_new())) {
        fprintf(stderr, "msrs-agent: agent.event_loop = epoll: libev cannot make its loop\n");
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    /* What this node was recording before it (re)started, from the log. */
    if (ag_restore(a, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs-agent: rebuilding sessions from the log: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    /* its own cursor, read by this process alone: on Kafka no group to join
     * (which took ~3 s: a node put into a session at once heard the start late) */
    if (ev_log_subscribe_alone(a->log, cursor, topics, 1, err, sizeof(err)) ||
        ag_endpoint_start(a, err, sizeof(err)) || ag_control_start(a, err, sizeof(err)) ||
        cli_ops_start(&a->ops, conf, "msrs-agent", err, sizeof(err))) {
        fprintf(stderr, "msrs-agent: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
        goto out;
    }
    if (a->ctl.url_count)
        fprintf(stderr, "msrs-agent: node %s, supervisor %s:%d%s, log %s\n", a->cfg.node_id,
                a->ctl.hosts[0], a->ctl.ports[0], a->ctl.discover ? " (and discovery)" : "",
                ev_conf_get(conf, "log", ""));
    else if (a->ctl.discover)
        fprintf(stderr, "msrs-agent: node %s, discovering its supervisor, log %s\n", a->cfg.node_id,
                ev_conf_get(conf, "log", ""));
    else {
        fprintf(stderr, "msrs-agent: node %s listening on %s://%s:%d/v1/devices, log %s\n",
                a->cfg.node_id, cli_tls_ws_scheme(&a->tls), a->cfg.host, a->cfg.port,
                ev_conf_get(conf, "log", ""));
        cli_ready("devices endpoint listening");
        a->ready = 1;
    }
    lws_sul_schedule(a->ctx, 0, &a->tick, on_tick, TICK_US);
    time_t last_report = time(NULL);
    int64_t trimmed_at = 0; /* a->admit.accepted at the last malloc_trim */
    int unread = 0;         /* TLS records read ahead are waiting (endpoint.c) */
    while (!cli_stop) {
        /* records OpenSSL read ahead: the turn does not wait while some
         * are still to handle, and they are handled after it */
        if (a->loop)
            ag_loop_run_once(a->loop, unread);
        else if (lws_service(a->ctx, unread ? -1 : 0) < 0)
            break;
        unread = ag_endpoint_service_unread(a);
        if (time(NULL) - last_report >= 10) {
            last_report = time(NULL);
            print_counters(a, "status");
            /* Connections that came and went (hostile ones, a reconnect
             * storm) leave their TLS and WebSocket buffers free in malloc's
             * heap: given back, so RSS returns to what the open ones use.
             * Only then: the trim walks the heap on this thread. */
            if (a->admit.accepted - trimmed_at > 64) {
                trimmed_at = a->admit.accepted;
                malloc_trim(0);
            }
        }
    }
out:
    a->tick_soon = NULL;        /* no tick is scheduled while the context goes */
    ag_spawn_free(&a->capture); /* msrs-capture stops first: its cameras disconnect */
    ag_endpoint_stop(a);        /* closes every connection: DeviceDisconnected for each */
    ag_loop_destroy(a->loop);   /* after lws let go of it */
    a->loop = NULL;
    if (a->log)
        ag_recording_drain(a);
    if (a->log && ev_log_flush(a->log, 10000, err, sizeof(err))) {
        fprintf(stderr, "msrs-agent: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
    }
    print_counters(a, "stopped");
    cli_ops_stop(a->ops);
    ag_device_free_all(a);
    ag_recording_free(a);
    ev_codec_destroy(a->codec);
    cli_buf_free(&a->samples_times);
    cli_buf_free(&a->samples_values);
    cli_auth_free(&a->auth);
    json_decref(a->pending);
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'L'},
                                         {"node-id", required_argument, NULL, 'N'},
                                         {"supervisor", required_argument, NULL, 'S'},
                                         {NULL, 0, NULL, 0}};
    static ag_agent a; /* large; lives as long as the process */
    ag_args g = {.a = &a};
    cli_svc svc = {.name = "msrs-agent",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &g};
    return cli_svc_main(&svc, argc, argv);
}
