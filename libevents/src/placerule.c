/* placerule.c — where should a new device go? A pure function of the
 * reducers' node state (see ev_place_choose in ev.h). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

int64_t ev_place_limit(int64_t node_max, int64_t cap)
{
    return cap > 0 && (node_max <= 0 || node_max > cap) ? cap : node_max;
}

typedef struct candidate {
    const char *id;
    double load; /* ev_place_load */
} candidate;

static double share(json_t *node, const char *used, double of)
{
    return of > 0 ? json_number_value(json_object_get(node, used)) / of : 0.0;
}

double ev_place_load(json_t *n, const ev_place_policy *policy)
{
    int64_t max = ev_place_limit(json_integer_value(json_object_get(n, "max_devices")),
                                 policy->max_per_node);
    double total = (double)json_integer_value(json_object_get(n, "mem_total_bytes"));
    double avail = (double)json_integer_value(json_object_get(n, "mem_available_bytes"));
    int64_t cores = json_integer_value(json_object_get(n, "cpu_cores"));
    return share(n, "device_count", (double)(max > 0 ? max : 1024)) +
           share(n, "cpu_load", (double)(cores > 0 ? cores : 1)) +
           (total > 0 && avail > 0 && avail <= total ? 1.0 - avail / total : 0.0) +
           share(n, "rx_bytes_per_s", (double)policy->bandwidth_bytes_per_s);
}

static int by_id(const void *x, const void *y)
{
    return strcmp(((const candidate *)x)->id, ((const candidate *)y)->id);
}

int ev_place_choose(const ev_state *state, const ev_place_policy *policy, const char *exclude,
                    int64_t *rr_cursor, char *out, size_t out_size)
{
    json_t *all = ev_state_to_json(state);
    json_t *nodes = json_object_get(all, "nodes");
    candidate *c = calloc(json_object_size(nodes) + 1, sizeof(*c));
    size_t count = 0, pick = 0;
    const char *k;
    json_t *n;

    if (!c) {
        json_decref(all);
        return -1;
    }
    json_object_foreach(nodes, k, n)
    {
        const char *st = json_string_value(json_object_get(n, "state"));
        const char *addr = json_string_value(json_object_get(n, "address"));
        int64_t max = ev_place_limit(json_integer_value(json_object_get(n, "max_devices")),
                                     policy->max_per_node);
        int64_t devices = json_integer_value(json_object_get(n, "device_count"));
        if (!st || strcmp(st, "expired") == 0 || !addr || !*addr ||
            (exclude && strcmp(k, exclude) == 0) || (max > 0 && devices >= max))
            continue;
        c[count].id = k;
        c[count].load = ev_place_load(n, policy);
        count++;
    }
    /* Node-id order: every supervisor that replays the log picks alike. */
    qsort(c, count, sizeof(*c), by_id);
    if (count && policy->strategy == EV_PLACE_ROUND_ROBIN) {
        pick = (size_t)((*rr_cursor < 0 ? 0 : *rr_cursor) % (int64_t)count);
        (*rr_cursor)++;
    } else {
        for (size_t i = 1; i < count; i++)
            if (c[i].load < c[pick].load)
                pick = i;
    }
    if (count)
        snprintf(out, out_size, "%s", c[pick].id);
    free(c);
    json_decref(all);
    return count ? 0 : -1;
}
