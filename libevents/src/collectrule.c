/* collectrule.c — what the DataCollectionService must do next for a
 * session. A pure function of the reducers' state (ev_collect_decide in
 * ev.h): collectord, replay and the unit tests agree on it. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void add(json_t *out, const char *type, const char *key, const char *id, json_t *value)
{
    json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:o}", "type", type, "key", key, "id",
                                          id, "value", value));
}

static int64_t get_int(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

/* node_id -> [device_id...] of the session's synchronised group. */
static json_t *nodes_of(json_t *session)
{
    json_t *nodes = json_object(), *d;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(session, "sync"), "devices"), i, d)
    {
        const char *node = json_string_value(json_object_get(d, "node_id"));
        json_t *list = json_object_get(nodes, node ? node : "");
        if (!list) {
            list = json_array();
            json_object_set_new(nodes, node ? node : "", list);
        }
        json_array_append(list, json_object_get(d, "device_id"));
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
static void commands(json_t *out, const char *sid, json_t *nodes, json_t *done, int start,
                     int64_t at_ns)
{
    const char *node;
    json_t *list;
    json_object_foreach(nodes, node, list)
    {
        if (json_object_get(done, node))
            continue;
        char id[EV_ID_MAX];
        snprintf(id, sizeof(id), "%s/%.30s/%.20s", start ? "startcmd" : "stopcmd", sid, node);
        add(out, start ? "StartRecording" : "StopRecording", node, id,
            json_pack("{s:s, s:s, s:O, s:I}", "node_id", node, "session_id", sid, "device_ids",
                      list, start ? "start_at_ns" : "stop_at_ns", (json_int_t)at_ns));
    }
}

static void stopped(json_t *out, const char *sid, int64_t start_at, int64_t stop_at,
                    const char *reason, json_t *streams)
{
    char id[EV_ID_MAX];
    snprintf(id, sizeof(id), "stopped/%.50s", sid);
    add(out, "CollectionStopped", sid, id,
        json_pack("{s:s, s:I, s:I, s:s, s:o}", "session_id", sid, "stop_at_ns",
                  (json_int_t)stop_at, "duration_ns",
                  (json_int_t)(start_at && stop_at > start_at ? stop_at - start_at : 0), "reason",
                  reason, "streams", streams ? streams : json_array()));
}

json_t *ev_collect_decide(const ev_state *state, const char *sid, const ev_collect_params *p,
                          int64_t now_ns, char *why, size_t why_size)
{
    json_t *all = ev_state_to_json(state);
    json_t *x = json_object_get(json_object_get(all, "sessions"), sid);
    json_t *out = json_array();
    const char *st = json_string_value(json_object_get(x, "state"));
    json_t *stop_req = json_object_get(x, "stop_requested");
    const char *req_reason = json_string_value(json_object_get(stop_req, "reason"));
    char reason[512];

    if (why && why_size)
        why[0] = '\0';
    if (!st || strcmp(st, "stopped") == 0)
        goto out;
    json_t *nodes = nodes_of(x);
    if (strcmp(st, "requested") == 0 || strcmp(st, "synchronized") == 0) {
        if (stop_req) {
            snprintf(reason, sizeof(reason), "cancelled before the start: %s",
                     req_reason ? req_reason : "");
            stopped(out, sid, 0, now_ns, reason, NULL);
        } else if (strcmp(st, "requested") == 0) {
            if (why)
                snprintf(why, why_size, "waiting for SynchronizationCompleted");
        } else {
            int64_t start_at = now_ns + p->lead_ns;
            char id[EV_ID_MAX];
            snprintf(id, sizeof(id), "start/%.50s", sid);
            add(out, "CollectionStarted", sid, id,
                json_pack("{s:s, s:I, s:o}", "session_id", sid, "start_at_ns",
                          (json_int_t)start_at, "device_ids", all_devices(nodes)));
            commands(out, sid, nodes, NULL, 1, start_at);
        }
        json_decref(nodes);
        goto out;
    }
    /* recording or stopping */
    int64_t start_at = get_int(x, "start_at_ns");
    int64_t duration_ns = get_int(x, "duration_ms") * 1000000LL;
    commands(out, sid, nodes, json_object_get(x, "start_commands"), 1, start_at);
    if (!json_object_get(x, "stop_at_ns")) {
        int64_t stop_at = 0;
        if (stop_req) {
            stop_at = get_int(stop_req, "at_ns") + p->lead_ns;
            if (stop_at < start_at)
                stop_at = start_at;
        } else if (duration_ns > 0 && now_ns >= start_at + duration_ns - p->lead_ns) {
            stop_at = start_at + duration_ns;
        }
        if (stop_at)
            commands(out, sid, nodes, NULL, 0, stop_at);
        else if (why)
            snprintf(why, why_size, "recording");
        json_decref(nodes);
        goto out;
    }
    int64_t stop_at = get_int(x, "stop_at_ns");
    commands(out, sid, nodes, json_object_get(x, "stop_commands"), 0, stop_at);
    json_t *reports = json_object_get(x, "reports");
    char missing[256] = "";
    size_t n_missing = 0;
    const char *node;
    json_t *list;
    json_object_foreach(nodes, node, list)
    {
        if (json_object_get(reports, node))
            continue;
        if (n_missing++ < 8)
            snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
                     n_missing > 1 ? ", " : "", node);
    }
    if (n_missing && now_ns < stop_at + p->report_timeout_ns) {
        if (why)
            snprintf(why, why_size, "waiting for the recording reports of %zu nodes (%s)",
                     n_missing, missing);
        json_decref(nodes);
        goto out;
    }
    json_t *streams = json_array(), *rep;
    json_object_foreach(reports, node, rep) json_array_extend(streams, json_object_get(rep, "streams"));
    snprintf(reason, sizeof(reason), "%s", stop_req ? (req_reason ? req_reason : "requested") : "duration");
    if (n_missing)
        snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason),
                 "; no recording report from %zu nodes (%s)", n_missing, missing);
    stopped(out, sid, start_at, stop_at, reason, streams);
    json_decref(nodes);
out:
    json_decref(all);
    return out;
}
