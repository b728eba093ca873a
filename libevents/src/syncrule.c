/* syncrule.c — when is a session's device group synchronised? A pure
 * function of the reducers' state (see ev_sync_decide in ev.h). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void add_stale(json_t *stale, const char *node_id, const char *device_id)
{
    json_t *list = json_object_get(stale, node_id);
    if (!list) {
        list = json_array();
        json_object_set_new(stale, node_id, list);
    }
    json_array_append_new(list, json_string(device_id));
}

ev_sync_decision ev_sync_decide(const ev_state *state, const char *session_id,
                                const ev_sync_params *p, int64_t now_ns, json_t **completed,
                                json_t **stale_out, char *why, size_t why_size)
{
    json_t *all = ev_state_to_json(state);
    json_t *session = json_object_get(json_object_get(all, "sessions"), session_id);
    json_t *devices = json_object_get(all, "devices");
    json_t *stale = json_object(), *group = json_array();
    const char *st = json_string_value(json_object_get(session, "state"));
    ev_sync_decision d = EV_SYNC_NONE;
    int64_t worst = 0;
    size_t waiting = 0;

    *completed = NULL;
    if (why && why_size)
        why[0] = '\0';
    if (!st || strcmp(st, "requested") != 0)
        goto out;
    d = EV_SYNC_WAIT;
    json_t *wanted = json_object_get(session, "device_ids");
    int min_group = (int)json_integer_value(json_object_get(session, "min_group"));
    if (p->min_group > min_group)
        min_group = p->min_group;
    if (min_group < 1)
        min_group = 1;

    /* The group: requested (or all) devices that are connected, by id. */
    const char *id;
    json_t *dev;
    json_object_foreach(devices, id, dev)
    {
        if (!json_is_true(json_object_get(dev, "connected")))
            continue;
        if (json_array_size(wanted)) {
            size_t i;
            json_t *w;
            int in = 0;
            json_array_foreach(wanted, i, w) in |= json_is_string(w) && strcmp(json_string_value(w), id) == 0;
            if (!in)
                continue;
        }
        json_t *clock = json_object_get(dev, "clock");
        const char *node = json_string_value(json_object_get(dev, "node_id"));
        int64_t at = json_integer_value(json_object_get(clock, "measured_at_ns"));
        int64_t unc = json_integer_value(json_object_get(clock, "uncertainty_ns"));
        if (!clock || now_ns - at > p->max_age_ns) {
            add_stale(stale, node ? node : "", id);
            waiting++;
            continue;
        }
        if (unc > p->max_uncertainty_ns) {
            waiting++;
            continue;
        }
        if (unc > worst)
            worst = unc;
        json_array_append_new(
            group, json_pack("{s:s, s:s, s:O, s:O, s:O}", "device_id", id, "node_id",
                             node ? node : "", "offset_ns", json_object_get(clock, "offset_ns"),
                             "drift_ppm", json_object_get(clock, "drift_ppm"), "uncertainty_ns",
                             json_object_get(clock, "uncertainty_ns")));
    }
    if (json_array_size(group) + waiting < (size_t)min_group) {
        if (why)
            snprintf(why, why_size, "the pool has %zu of the %d devices the group needs",
                     json_array_size(group) + waiting, min_group);
    } else if (waiting) {
        if (why)
            snprintf(why, why_size,
                     "%zu devices have no fresh offset within %lld us (stale or uncertain)",
                     waiting, (long long)(p->max_uncertainty_ns / 1000));
    } else {
        d = EV_SYNC_READY;
        *completed = json_pack("{s:s, s:O, s:I}", "session_id", session_id, "devices", group,
                               "max_uncertainty_ns", (json_int_t)worst);
    }
out:
    json_decref(group);
    if (stale_out)
        *stale_out = stale;
    else
        json_decref(stale);
    json_decref(all);
    return d;
}
