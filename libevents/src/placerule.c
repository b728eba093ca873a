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

static double share(double used, double of)
{
    return of > 0 ? used / of : 0.0;
}

double ev_place_load(const ev_node *n, const ev_place_policy *policy)
{
    int64_t max = ev_place_limit(n->max_devices, policy->max_per_node);
    double total = (double)n->mem_total_bytes;
    double avail = (double)n->mem_available_bytes;
    int64_t cores = n->cpu_cores;
    return share((double)n->device_count, (double)(max > 0 ? max : 1024)) +
           share(n->cpu_load, (double)(cores > 0 ? cores : 1)) +
           (total > 0 && avail > 0 && avail <= total ? 1.0 - avail / total : 0.0) +
           share(n->rx_bytes_per_s, (double)policy->bandwidth_bytes_per_s);
}

static int by_id(const void *x, const void *y)
{
    return strcmp(((const candidate *)x)->id, ((const candidate *)y)->id);
}

int ev_place_choose(const ev_state *state, const ev_place_policy *policy, const char *exclude,
                    int64_t *rr_cursor, char *out, size_t out_size)
{
    candidate *c = NULL;
    size_t count = 0, cap = 0, pick = 0;
    ev_node n;

    for (const char *k = NULL; (k = ev_state_node_next(state, k, &n));) {
        int64_t max = ev_place_limit(n.max_devices, policy->max_per_node);
        if (!ev_node_known(&n) || !*n.address || (exclude && strcmp(k, exclude) == 0) ||
            (max > 0 && n.device_count >= max))
            continue;
        if (count == cap) {
            candidate *more = realloc(c, (cap = cap * 2 + 16) * sizeof(*c));
            if (!more) {
                free(c);
                return -1;
            }
            c = more;
        }
        c[count].id = k;
        c[count].load = ev_place_load(&n, policy);
        count++;
    }
    /* Node-id order: every supervisor that replays the log picks alike. */
    if (count)
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
    return count ? 0 : -1;
}
