/* view.c — what the API and the feed show of the state: nodes, devices
 * (with a short clock history the state does not keep), sessions (with live
 * counts while they record) and alerts. */
#include "gateway.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

const char *gw_event_key(const ev_event *ev, char buf[EV_ID_MAX])
{
    size_t n = ev->msg && ev->msg->key_len < EV_ID_MAX ? ev->msg->key_len : 0;
    if (n)
        memcpy(buf, ev->msg->key, n);
    buf[n] = '\0';
    return buf;
}

void gw_view_note(gw_gateway *g, const ev_event *ev)
{
    char id[EV_ID_MAX];
    ev_device d;
    switch (ev_schema_id(ev->schema)) {
    case EV_SCHEMA_CLOCK_OFFSET_MEASURED: {
        if (!ev_state_device(g->state, gw_event_key(ev, id), &d) || !d.has_clock)
            return;
        json_t *h = json_object_get(g->history, id);
        if (!h) {
            h = json_array();
            json_object_set_new(g->history, id, h);
        }
        if (json_array_size(h) >= GW_HISTORY)
            json_array_remove(h, 0);
        json_array_append_new(h, json_pack("[I, f]", (json_int_t)(d.clock_measured_at_ns / 1000000),
                                           (double)d.clock_uncertainty_ns / 1e3));
        return;
    }
    case EV_SCHEMA_DEVICE_DISCONNECTED:
        json_object_set_new(g->disconnected_at, gw_event_key(ev, id), json_integer(ev->time_ns));
        return;
    case EV_SCHEMA_DEVICE_REGISTERED:
        json_object_del(g->disconnected_at, gw_event_key(ev, id));
        return;
    case EV_SCHEMA_NODE_EXPIRED: /* the reducer disconnected its devices */
        gw_event_key(ev, id);
        for (const char *k = NULL; (k = ev_state_device_next(g->state, k, &d));)
            if (!d.connected && strcmp(d.node_id, id) == 0 &&
                !json_object_get(g->disconnected_at, k))
                json_object_set_new(g->disconnected_at, k, json_integer(ev->time_ns));
        return;
    default: return;
    }
}

json_t *gw_view_node(gw_gateway *g, const char *node_id)
{
    json_t *all = ev_state_to_json(g->state);
    json_t *n = json_object_get(json_object_get(all, "nodes"), node_id);
    json_t *out = n ? json_deep_copy(n) : NULL;
    json_decref(all);
    if (out)
        json_object_set_new(out, "node_id", json_string(node_id));
    return out;
}

/* A device as the page shows it, from its full state entry d. */
static json_t *device_of(gw_gateway *g, const char *id, const json_t *d)
{
    ev_device dev;
    if (!d || !ev_state_device(g->state, id, &dev))
        return NULL;
    json_t *streams = json_array(), *s;
    size_t i;
    json_array_foreach(json_object_get(d, "streams"), i, s)
    {
        json_array_append_new(streams, json_pack("{s:O?, s:O?, s:O?, s:O?}", "stream_id",
                                                 json_object_get(s, "stream_id"), "type",
                                                 json_object_get(s, "type"), "rate_hz",
                                                 json_object_get(s, "rate_hz"), "channels",
                                                 json_object_get(s, "channels")));
    }
    json_t *clock = json_null();
    if (dev.has_clock)
        clock =
            json_pack("{s:I, s:f, s:I, s:I, s:I}", "offset_ns", (json_int_t)dev.clock_offset_ns,
                      "drift_ppm", dev.clock_drift_ppm, "uncertainty_ns",
                      (json_int_t)dev.clock_uncertainty_ns, "measured_at_ns",
                      (json_int_t)dev.clock_measured_at_ns, "rounds", (json_int_t)dev.clock_rounds);
    json_t *h = json_object_get(g->history, id);
    /* the battery the device last said: its latest DeviceStatus, else its hello's */
    json_t *battery = json_object_get(json_object_get(d, "status"), "battery");
    if (!battery || json_is_null(battery))
        battery = json_object_get(d, "battery");
    return json_pack("{s:s, s:O?, s:s, s:b, s:s, s:O?, s:O?, s:O?, s:o, s:o, s:o, s:O?}",
                     "device_id", id, "name", json_object_get(d, "name"), "node_id", dev.node_id,
                     "connected", dev.connected, "disconnect_reason", dev.disconnect_reason,
                     "disconnected_at_ns", json_object_get(g->disconnected_at, id), "battery",
                     battery, "capabilities", json_object_get(d, "capabilities"), "streams",
                     streams, "clock", clock, "history", h ? json_incref(h) : json_array(),
                     "registered_at_ns", json_object_get(d, "registered_at_ns"));
}

json_t *gw_view_device(gw_gateway *g, const char *device_id)
{
    json_t *all = ev_state_to_json(g->state);
    json_t *out =
        device_of(g, device_id, json_object_get(json_object_get(all, "devices"), device_id));
    json_decref(all);
    return out;
}

/* The archive folder of a session, when the archiver made one:
 * archive.dir/ID/manifest.json. */
static int archived(const gw_gateway *g, const char *session_id)
{
    char path[PATH_MAX + 128];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s/manifest.json", g->archive_dir, session_id);
    return stat(path, &st) == 0;
}

static json_t *session_of(gw_gateway *g, const char *id, const json_t *x, int detail)
{
    if (!x)
        return NULL;
    json_t *out = json_deep_copy(x);
    json_t *sync = json_object_get(out, "sync");
    json_object_set_new(out, "session_id", json_string(id));
    json_object_set_new(out, "stream_count",
                        json_integer((json_int_t)json_array_size(json_object_get(out, "streams"))));
    json_object_set_new(out, "archived", json_boolean(archived(g, id)));
    if (!detail) {
        json_object_del(out, "reports");
        json_object_del(out, "streams");
        json_object_del(out, "start_commands");
        json_object_del(out, "stop_commands");
        if (sync)
            json_object_set_new(
                sync, "devices",
                json_integer((json_int_t)json_array_size(json_object_get(sync, "devices"))));
    }
    const json_t *live = g->live ? gw_live_session(g->live, id) : NULL;
    if (live)
        json_object_set_new(out, "live", json_deep_copy(live));
    return out;
}

json_t *gw_view_session(gw_gateway *g, const char *session_id, int detail)
{
    json_t *x = ev_state_session_to_json(g->state, session_id);
    json_t *out = session_of(g, session_id, x, detail);
    json_decref(x);
    return out;
}

json_t *gw_view_nodes(gw_gateway *g)
{
    json_t *out = json_object();
    ev_node n;
    for (const char *k = NULL; (k = ev_state_node_next(g->state, k, &n));)
        if (n.state != EV_NODE_NONE)
            json_object_set_new(out, k, gw_view_node(g, k));
    return out;
}

json_t *gw_view_devices(gw_gateway *g)
{
    json_t *all = ev_state_to_json(g->state), *devices = json_object_get(all, "devices");
    json_t *out = json_object();
    ev_device d;
    for (const char *k = NULL; (k = ev_state_device_next(g->state, k, &d));) {
        json_t *v = device_of(g, k, json_object_get(devices, k));
        if (v)
            json_object_set_new(out, k, v);
    }
    json_decref(all);
    return out;
}

json_t *gw_view_sessions(gw_gateway *g, int detail)
{
    /* the newest GW_SESSION_PAGES: the state lists them oldest first */
    json_t *all = ev_state_to_json(g->state), *sessions = json_object_get(all, "sessions");
    json_t *out = json_object();
    size_t total = 0, i = 0;
    ev_session x;
    for (const char *k = NULL; (k = ev_state_session_next(g->state, k, &x));)
        total += x.state != EV_SESSION_NONE;
    for (const char *k = NULL; (k = ev_state_session_next(g->state, k, &x));) {
        if (x.state == EV_SESSION_NONE || i++ + GW_SESSION_PAGES < total)
            continue;
        json_object_set_new(out, k, session_of(g, k, json_object_get(sessions, k), detail));
    }
    json_decref(all);
    return out;
}

/* Appends one alert; message is printf'd. */
static void alert(json_t *a, const char *kind, const char *id, const char *severity,
                  int64_t since_ns, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void alert(json_t *a, const char *kind, const char *id, const char *severity,
                  int64_t since_ns, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(a,
                          json_pack("{s:s, s:s, s:s, s:I, s:s}", "kind", kind, "id", id, "severity",
                                    severity, "since_ns", (json_int_t)since_ns, "message", msg));
}

/* The reasons of an incomplete session, joined with "; ". */
static void joined(const json_t *reasons, char *out, size_t size)
{
    json_t *r;
    size_t i, len = 0;
    *out = '\0';
    json_array_foreach(reasons, i, r)
    {
        if (len < size)
            len += (size_t)snprintf(out + len, size - len, "%s%s", len ? "; " : "",
                                    json_string_value(r) ? json_string_value(r) : "?");
    }
}

json_t *gw_view_alerts(gw_gateway *g, int64_t now_ns)
{
    json_t *a = json_array(), *all = ev_state_to_json(g->state);
    json_t *devices = json_object_get(all, "devices"), *sessions = json_object_get(all, "sessions");
    const int64_t window_ns = g->alert_window_s * 1000000000LL;
    const int64_t stale_ns = g->clock_stale_ms * 1000000LL;
    ev_node n;
    for (const char *k = NULL; (k = ev_state_node_next(g->state, k, &n));) {
        json_t *node = json_object_get(json_object_get(all, "nodes"), k);
        if (n.state == EV_NODE_EXPIRED && now_ns - n.expired_at_ns < window_ns)
            alert(a, "node_expired", k, "error", n.expired_at_ns,
                  "node %s expired: no heartbeat within its TTL; its devices are disconnected", k);
        else if (n.state == EV_NODE_UP && json_is_true(json_object_get(node, "slowing_devices")))
            alert(a, "devices_slowed", k, "warning", n.last_seen_ns,
                  "node %s is slowing its devices down: the log is behind (%.1f MB not "
                  "acknowledged)",
                  k, (double)json_integer_value(json_object_get(node, "log_backlog_bytes")) / 1e6);
    }
    ev_device d;
    for (const char *k = NULL; (k = ev_state_device_next(g->state, k, &d));) {
        json_t *at = json_object_get(g->disconnected_at, k);
        if (!d.connected) {
            if (at && now_ns - json_integer_value(at) < window_ns)
                alert(a, "device_disconnected", k, "warning", json_integer_value(at),
                      "device %s disconnected from node %s: %s", k, d.node_id,
                      *d.disconnect_reason ? d.disconnect_reason : "no reason given");
            continue;
        }
        int64_t since = d.has_clock ? d.clock_measured_at_ns
                                    : json_integer_value(json_object_get(
                                          json_object_get(devices, k), "registered_at_ns"));
        if (since && now_ns - since > stale_ns)
            alert(a, "clock_stale", k, "warning", since,
                  d.has_clock ? "device %s: no clock offset measured for more than %.0f s"
                              : "device %s: no clock offset measured in the %.0f s since it "
                                "registered",
                  k, (double)g->clock_stale_ms / 1e3);
    }
    ev_session x;
    for (const char *k = NULL; (k = ev_state_session_next(g->state, k, &x));) {
        json_t *s = json_object_get(sessions, k);
        /* the stop instant (CollectionStopped's), also for a session that
         * never started */
        int64_t stopped_at = json_integer_value(json_object_get(s, "stop_at_ns"));
        if (!stopped_at)
            stopped_at = x.requested_at_ns;
        if (x.state != EV_SESSION_STOPPED || !json_is_false(json_object_get(s, "complete")) ||
            now_ns - stopped_at >= window_ns)
            continue;
        char reasons[400];
        joined(json_object_get(s, "incomplete"), reasons, sizeof(reasons));
        alert(a, "session_incomplete", k, "error", stopped_at, "session %s incomplete: %s", k,
              reasons);
    }
    json_decref(all);
    return a;
}
