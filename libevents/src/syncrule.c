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

/* 1 when id is one of the session's requested devices, or it names none. */
static int wanted(const ev_session *x, const char *id)
{
    for (size_t i = 0; i < x->device_id_count; i++) {
        const char *w = ev_session_device_id(x, i);
        if (w && strcmp(w, id) == 0)
            return 1;
    }
    return x->device_id_count == 0;
}

ev_sync_decision ev_sync_decide(const ev_state *state, const char *session_id,
                                const ev_sync_params *p, int64_t now_ns, json_t **completed,
                                json_t **stale_out, char *why, size_t why_size)
{
    json_t *stale = json_object(), *group = json_array();
    ev_sync_decision d = EV_SYNC_NONE;
    ev_session x;
    int64_t worst = 0;
    size_t waiting = 0;

    *completed = NULL;
    if (why && why_size)
        why[0] = '\0';
    if (!ev_state_session(state, session_id, &x) || x.state != EV_SESSION_REQUESTED)
        goto out;
    d = EV_SYNC_WAIT;
    int min_group = (int)x.min_group;
    if (p->min_group > min_group)
        min_group = p->min_group;
    if (min_group < 1)
        min_group = 1;

    /* The group: requested (or all) devices that are connected, by id. */
    ev_device dev;
    for (const char *id = NULL; (id = ev_state_device_next(state, id, &dev));) {
        if (!dev.connected || !wanted(&x, id))
            continue;
        if (!dev.has_clock || now_ns - dev.clock_measured_at_ns > p->max_age_ns) {
            add_stale(stale, dev.node_id, id);
            waiting++;
            continue;
        }
        if (dev.clock_uncertainty_ns > p->max_uncertainty_ns) {
            waiting++;
            continue;
        }
        if (dev.clock_uncertainty_ns > worst)
            worst = dev.clock_uncertainty_ns;
        json_array_append_new(group,
                              json_pack("{s:s, s:s, s:I, s:f, s:I}", "device_id", id, "node_id",
                                        dev.node_id, "offset_ns", (json_int_t)dev.clock_offset_ns,
                                        "drift_ppm", dev.clock_drift_ppm, "uncertainty_ns",
                                        (json_int_t)dev.clock_uncertainty_ns));
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
    return d;
}
