/* clocksync.c — see clocksync.h. */
#include "clocksync.h"

#include <string.h>

void cs_init(cs_clock *c)
{
    memset(c, 0, sizeof(*c));
    c->best_rtt = INT64_MAX;
}

int cs_add_probe(cs_clock *c, const cs_probe *p)
{
    int64_t rtt = (p->t4 - p->t1) - (p->t3 - p->t2);
    if (p->t4 < p->t1 || p->t3 < p->t2 || rtt < 0)
        return -1;
    c->probes++;
    if (rtt < c->best_rtt) {
        c->best_rtt = rtt;
        c->best = *p;
    }
    return 0;
}

static int64_t probe_offset(const cs_probe *p)
{
    return ((p->t2 - p->t1) + (p->t3 - p->t4)) / 2;
}

/* Least-squares line through the history, in coordinates relative to the
 * newest point (keeps the sums small and exact enough in double). */
static void refit(cs_clock *c)
{
    int n = c->hist_count;
    int newest = (c->hist_next + CS_HISTORY - 1) % CS_HISTORY;
    int64_t t0 = c->hist_t[newest], o0 = c->hist_offset[newest];
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        double x = (double)(c->hist_t[i] - t0), y = (double)(c->hist_offset[i] - o0);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    double den = n * sxx - sx * sx;
    double slope = n >= 2 && den > 0 ? (n * sxy - sx * sy) / den : 0.0;
    /* A drift beyond 1000 ppm is no crystal: treat it as noise. */
    if (slope > 1e-3 || slope < -1e-3)
        slope = 0.0;
    double mean_x = sx / n, mean_y = sy / n;
    c->ref_t = t0;
    c->ref_offset = o0 + (int64_t)(mean_y - slope * mean_x);
    c->drift = slope;
    c->fitted = 1;
}

int cs_end_round(cs_clock *c, cs_round_result *out)
{
    if (c->probes == 0) {
        c->best_rtt = INT64_MAX;
        return -1;
    }
    const cs_probe *b = &c->best;
    int64_t offset = probe_offset(b);
    c->hist_t[c->hist_next] = b->t1 + (b->t4 - b->t1) / 2;
    c->hist_offset[c->hist_next] = offset;
    c->hist_next = (c->hist_next + 1) % CS_HISTORY;
    if (c->hist_count < CS_HISTORY)
        c->hist_count++;
    c->rounds++;
    refit(c);
    out->round = c->rounds;
    out->offset_ns = offset;
    out->rtt_ns = c->best_rtt;
    out->uncertainty_ns = c->best_rtt / 2;
    out->drift_ppm = c->drift * 1e6;
    out->probes = c->probes;
    out->best = *b;
    c->last_uncertainty_ns = out->uncertainty_ns;
    c->probes = 0;
    c->best_rtt = INT64_MAX;
    return 0;
}

int64_t cs_offset_at(const cs_clock *c, int64_t agent_ns)
{
    if (!c->fitted)
        return 0;
    return c->ref_offset + (int64_t)(c->drift * (double)(agent_ns - c->ref_t));
}

int64_t cs_device_to_agent(const cs_clock *c, int64_t device_ns)
{
    /* device = agent + offset(agent); solve with one fixed-point step, exact
     * enough for drifts of ppm. */
    int64_t guess = device_ns - cs_offset_at(c, device_ns);
    return device_ns - cs_offset_at(c, guess);
}

int64_t cs_agent_to_device(const cs_clock *c, int64_t agent_ns)
{
    return agent_ns + cs_offset_at(c, agent_ns);
}
