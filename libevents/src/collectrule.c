/* collectrule.c — what the DataCollectionService must do next for a
 * session. A pure function of the reducers' state (ev_collect_decide in
 * ev.h): collectord, replay and the unit tests agree on it. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void add(json_t *out, const char *type, const char *key, const char *id, json_t *value)
{
    json_array_append_new(
        out, json_pack("{s:s, s:s, s:s, s:o}", "type", type, "key", key, "id", id, "value", value));
}

/* node_id -> [device_id...] of the session's synchronised group. */
static json_t *nodes_of(const ev_session *x)
{
    json_t *nodes = json_object();
    const char *device, *node;
    for (size_t i = 0; ev_session_sync_device(x, i, &device, &node); i++) {
        json_t *list = json_object_get(nodes, node);
        if (!list) {
            list = json_array();
            json_object_set_new(nodes, node, list);
        }
        json_array_append_new(list, json_string(device));
    }
    return nodes;
}

static json_t *all_devices(json_t *nodes)
{
    json_t *all = json_array(), *list;
    const char *node;
    json_object_foreach(nodes, node, list) json_array_extend(all, list);
    return all;
}

/* One command per node that has not had it (its id names session and node,
 * so a resend after a crash is a duplicate the reducers and agents ignore). */
static void commands(json_t *out, const char *sid, json_t *nodes, const ev_session *done, int start,
                     int64_t at_ns)
{
    const char *node;
    json_t *list;
    json_object_foreach(nodes, node, list)
    {
        if (done && ev_session_command(done, node, !start, NULL))
            continue;
        char id[EV_ID_MAX];
        ev_event_id(id, "%s/%s/%s", start ? "startcmd" : "stopcmd", sid, node);
        add(out, start ? "StartRecording" : "StopRecording", node, id,
            json_pack("{s:s, s:s, s:O, s:I}", "node_id", node, "session_id", sid, "device_ids",
                      list, start ? "start_at_ns" : "stop_at_ns", (json_int_t)at_ns));
    }
}

/* Why a recording is not complete, one line per reason with its counts:
 * nodes that did not report, devices of the group with no data, and per
 * stream samples that never reached the log, were dropped or were written
 * outside the session. An empty array: complete. */
static json_t *incomplete_reasons(const ev_session *x, json_t *streams, const char *missing_nodes)
{
    json_t *why = json_array(), *st;
    size_t i;
    if (*missing_nodes)
        json_array_append_new(why, json_sprintf("no recording report from %s", missing_nodes));
    for (const char *node = NULL; x && (node = ev_session_report_next(x, node, NULL));) {
        const json_t *rep = ev_session_report(x, node);
        json_int_t lost = json_integer_value(json_object_get(rep, "log_lost_records"));
        json_int_t unacked = json_integer_value(json_object_get(rep, "unacknowledged_records"));
        if (lost)
            json_array_append_new(why, json_sprintf("node %s: the log lost %lld of its records "
                                                    "(streams unknown)",
                                                    node, (long long)lost));
        if (unacked)
            json_array_append_new(why, json_sprintf("node %s: %lld records not acknowledged by "
                                                    "the log when it reported",
                                                    node, (long long)unacked));
        /* asked to record, not connected at the start instant: what it made
         * until it came is not in the session (a device that resumed its
         * numbering also shows it as a gap) */
        size_t k;
        json_t *dev;
        json_array_foreach(json_object_get(rep, "missing_devices"), k, dev)
            json_array_append_new(why, json_sprintf("%s (node %s): not connected when the "
                                                    "session started",
                                                    json_string_value(dev) ?: "", node));
    }
    for (size_t k = 0; x; k++) {
        const char *dev, *node;
        if (!ev_session_sync_device(x, k, &dev, &node))
            break;
        int has = 0;
        json_array_foreach(streams, i, st) has |=
            strcmp(json_string_value(json_object_get(st, "device_id")) ?: "", dev) == 0;
        if (!has)
            json_array_append_new(why, json_sprintf("%s (node %s): no stream reported", dev, node));
    }
    json_array_foreach(streams, i, st)
    {
        const char *dev = json_string_value(json_object_get(st, "device_id")) ?: "";
        const char *stream = json_string_value(json_object_get(st, "stream_id")) ?: "";
        json_int_t gaps = json_integer_value(json_object_get(st, "gaps"));
        json_int_t gap_samples = json_integer_value(json_object_get(st, "gap_samples"));
        json_int_t dropped = json_integer_value(json_object_get(st, "dropped"));
        json_int_t late = json_integer_value(json_object_get(st, "late_start_samples"));
        if (gaps || gap_samples)
            json_array_append_new(why, json_sprintf("%s/%s: %lld samples in %lld gaps never "
                                                    "reached the log",
                                                    dev, stream, (long long)gap_samples,
                                                    (long long)gaps));
        if (dropped)
            json_array_append_new(
                why, json_sprintf("%s/%s: %lld samples dropped", dev, stream, (long long)dropped));
        if (late)
            json_array_append_new(why, json_sprintf("%s/%s: %lld samples after the start instant "
                                                    "written outside the session (the start "
                                                    "command came late)",
                                                    dev, stream, (long long)late));
    }
    return why;
}

static void stopped(json_t *out, const char *sid, int64_t start_at, int64_t stop_at,
                    const char *reason, json_t *streams, json_t *incomplete)
{
    char id[EV_ID_MAX];
    ev_event_id(id, "stopped/%s", sid);
    add(out, "CollectionStopped", sid, id,
        json_pack("{s:s, s:I, s:I, s:s, s:o, s:b, s:o}", "session_id", sid, "stop_at_ns",
                  (json_int_t)stop_at, "duration_ns",
                  (json_int_t)(start_at && stop_at > start_at ? stop_at - start_at : 0), "reason",
                  reason, "streams", streams ? streams : json_array(), "complete",
                  json_array_size(incomplete) == 0, "incomplete", incomplete));
}

json_t *ev_collect_decide(const ev_state *state, const char *sid, const ev_collect_params *p,
                          int64_t now_ns, char *why, size_t why_size)
{
    json_t *out = json_array();
    ev_session x;
    char reason[512];

    if (why && why_size)
        why[0] = '\0';
    if (!ev_state_session(state, sid, &x) || x.state == EV_SESSION_NONE ||
        x.state == EV_SESSION_STOPPED)
        return out;
    const char *req_reason = x.stop_request_reason;
    json_t *nodes = nodes_of(&x);
    if (x.state == EV_SESSION_REQUESTED || x.state == EV_SESSION_SYNCHRONIZED) {
        if (x.stop_requested) {
            snprintf(reason, sizeof(reason), "cancelled before the start: %s",
                     req_reason ? req_reason : "");
            stopped(out, sid, 0, now_ns, reason, NULL,
                    json_pack("[s]", "cancelled before the start: nothing was recorded"));
        } else if (x.state == EV_SESSION_REQUESTED) {
            if (why)
                snprintf(why, why_size, "waiting for SynchronizationCompleted");
        } else {
            int64_t start_at = now_ns + p->lead_ns;
            char id[EV_ID_MAX];
            ev_event_id(id, "start/%s", sid);
            add(out, "CollectionStarted", sid, id,
                json_pack("{s:s, s:I, s:o}", "session_id", sid, "start_at_ns", (json_int_t)start_at,
                          "device_ids", all_devices(nodes)));
            commands(out, sid, nodes, NULL, 1, start_at);
        }
        goto out;
    }
    /* recording or stopping */
    int64_t start_at = x.start_at_ns;
    int64_t duration_ns = x.duration_ms * 1000000LL;
    commands(out, sid, nodes, &x, 1, start_at);
    if (!x.has_stop_at) {
        int64_t stop_at = 0;
        if (x.stop_requested) {
            stop_at = x.stop_requested_at_ns + p->lead_ns;
            if (stop_at < start_at)
                stop_at = start_at;
        } else if (duration_ns > 0 &&
                   now_ns >=
                       start_at + duration_ns -
                           (p->stop_notice_ns > p->lead_ns ? p->stop_notice_ns : p->lead_ns)) {
            /* long before the instant: a command that reaches a loaded
             * agent late leaves devices tagging data past the stop */
            stop_at = start_at + duration_ns;
        }
        if (stop_at)
            commands(out, sid, nodes, NULL, 0, stop_at);
        else if (why)
            snprintf(why, why_size, "recording");
        goto out;
    }
    int64_t stop_at = x.stop_at_ns;
    commands(out, sid, nodes, &x, 0, stop_at);
    char missing[256] = "";
    size_t n_missing = 0;
    const char *node;
    json_t *list;
    json_object_foreach(nodes, node, list)
    {
        int reported = 0;
        for (const char *r = NULL; !reported && (r = ev_session_report_next(&x, r, NULL));)
            reported = strcmp(r, node) == 0;
        if (reported)
            continue;
        if (n_missing++ < 8)
            snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                     n_missing > 1 ? ", " : "", node);
    }
    if (n_missing && now_ns < stop_at + p->report_timeout_ns) {
        if (why)
            snprintf(why, why_size, "waiting for the recording reports of %zu nodes (%s)",
                     n_missing, missing);
        goto out;
    }
    json_t *streams = json_array(), *rep;
    for (const char *r = NULL; (r = ev_session_report_next(&x, r, &rep));)
        json_array_extend(streams, rep);
    snprintf(reason, sizeof(reason), "%s",
             x.stop_requested ? (req_reason ? req_reason : "requested") : "duration");
    if (n_missing)
        snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
                 "; no recording report from %zu nodes (%s)", n_missing, missing);
    char missing_nodes[300] = "";
    if (n_missing)
        snprintf(missing_nodes, sizeof(missing_nodes), "%zu nodes (%s)", n_missing, missing);
    stopped(out, sid, start_at, stop_at, reason, streams,
            incomplete_reasons(&x, streams, missing_nodes));
out:
    json_decref(nodes);
    return out;
}

int ev_collect_auto_start(const ev_state *state, const ev_auto_start_params *p, int64_t now_ns,
                          char *sid, size_t sid_size, json_t **request, size_t *connected_out)
{
    ev_session x;
    ev_device d;
    size_t connected = 0;
    char when[64];

    *request = NULL;
    for (const char *id = NULL; (id = ev_state_session_next(state, id, &x));)
        if (x.state != EV_SESSION_NONE && x.state != EV_SESSION_STOPPED)
            return 0; /* one live session at a time */
    for (const char *id = NULL; (id = ev_state_device_next(state, id, &d));)
        connected += d.connected != 0;
    if (connected < (size_t)p->min_group)
        return 0;
    ev_format_time(now_ns, when, sizeof(when));
    snprintf(sid, sid_size, "auto-%.4s%.2s%.2sT%.2s%.2s%.2s", when, when + 5, when + 8, when + 11,
             when + 14, when + 17);
    if (ev_state_session(state, sid, &x))
        return 0; /* one per second at most */
    *request = json_pack("{s:s, s:s, s:I, s:b, s:I}", "session_id", sid, "requested_by",
                         "collectord (auto start)", "min_group", (json_int_t)p->min_group,
                         "auto_start", 1, "duration_ms", (json_int_t)p->duration_ms);
    if (connected_out)
        *connected_out = connected;
    return 1;
}
