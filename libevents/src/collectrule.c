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

static void stopped(json_t *out, const char *sid, int64_t start_at, int64_t stop_at,
                    const char *reason, json_t *streams)
{
    char id[EV_ID_MAX];
    ev_event_id(id, "stopped/%s", sid);
    add(out, "CollectionStopped", sid, id,
        json_pack("{s:s, s:I, s:I, s:s, s:o}", "session_id", sid, "stop_at_ns", (json_int_t)stop_at,
                  "duration_ns",
                  (json_int_t)(start_at && stop_at > start_at ? stop_at - start_at : 0), "reason",
                  reason, "streams", streams ? streams : json_array()));
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
            stopped(out, sid, 0, now_ns, reason, NULL);
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
        } else if (duration_ns > 0 && now_ns >= start_at + duration_ns - p->lead_ns) {
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
    stopped(out, sid, start_at, stop_at, reason, streams);
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
