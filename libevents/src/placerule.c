/* placerule.c — where should a new device go? A pure function of the
 * reducers' node state (see ev_place_choose in ev.h). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static int64_t node_int(json_t *n, const char *k)
{
    return json_integer_value(json_object_get(n, k));
}

int ev_place_choose(const ev_state *state, ev_place_strategy strategy, int64_t max_per_node,
                    const char *exclude, int64_t *rr_cursor, char *out, size_t out_size)
{
    json_t *all = ev_state_to_json(state);
    json_t *nodes = json_object_get(all, "nodes");
    const char **ids = NULL;
    size_t count = 0;
    const char *k;
    json_t *n;
    int found = -1;

    ids = calloc(json_object_size(nodes) + 1, sizeof(*ids));
    if (!ids) {
        json_decref(all);
        return -1;
    }
    json_object_foreach(nodes, k, n)
    {
        const char *st = json_string_value(json_object_get(n, "state"));
        const char *addr = json_string_value(json_object_get(n, "address"));
        int64_t max = node_int(n, "max_devices");
        if (max_per_node > 0 && (max <= 0 || max > max_per_node))
            max = max_per_node;
        if (!st || strcmp(st, "expired") == 0 || !addr || !*addr ||
            (exclude && strcmp(k, exclude) == 0))
            continue;
        if (max > 0 && node_int(n, "device_count") >= max)
            continue;
        ids[count++] = k;
    }
    /* Node-id order: every supervisor that replays the log picks alike. */
    for (size_t i = 1; i < count; i++)
        for (size_t j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
            const char *t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    if (count && strategy == EV_PLACE_ROUND_ROBIN) {
        size_t i = (size_t)((*rr_cursor < 0 ? 0 : *rr_cursor) % (int64_t)count);
        (*rr_cursor)++;
        snprintf(out, out_size, "%s", ids[i]);
        found = 0;
    } else if (count) {
        double best = 0;
        for (size_t i = 0; i < count; i++) {
            json_t *x = json_object_get(nodes, ids[i]);
            int64_t max = node_int(x, "max_devices");
            if (max_per_node > 0 && (max <= 0 || max > max_per_node))
                max = max_per_node;
            double cpu = json_number_value(json_object_get(x, "cpu_load"));
            double load = (double)node_int(x, "device_count") / (double)(max > 0 ? max : 1024) + cpu;
            if (found < 0 || load < best) {
                best = load;
                snprintf(out, out_size, "%s", ids[i]);
                found = 0;
            }
        }
    }
    free(ids);
    json_decref(all);
    return found;
}
