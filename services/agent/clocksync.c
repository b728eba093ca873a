/* clocksync.c — see clocksync.h. */
#include "clocksync.h"

#include "ev.h"

#include <math.h>
#include <stdlib.h>
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
    c->win_t[c->win_next] = p->t1 + (p->t4 - p->t1) / 2;
    c->win_a[c->win_next] = p->t2 - p->t1;
    c->win_b[c->win_next] = p->t4 - p->t3;
    c->win_rtt[c->win_next] = rtt;
    if (!c->fitted) {
        /* the first answer is an estimate at once (error <= rtt/2): data that
         * comes before the first round ends is not left at offset 0 */
        c->ref_t = p->t4;
        c->ref_offset = ((p->t2 - p->t1) + (p->t3 - p->t4)) / 2;
        c->drift = 0;
        c->fitted = 1;
    }
    c->win_next = (c->win_next + 1) % CS_WINDOW;
    if (c->win_count < CS_WINDOW)
        c->win_count++;
    return 0;
}

/* Refits the line (see clocksync.h) relative to the newest probe with the
 * one clock fit (ev_clock_fit_probes); returns an estimate of the error of
 * the offset there. */
static double refit(cs_clock *c)
{
    int n = c->win_count, m = 0;
    int64_t t_new = INT64_MIN, t_old = INT64_MAX, min_rtt = INT64_MAX;
    for (int i = 0; i < n; i++) {
        if (c->win_t[i] > t_new)
            t_new = c->win_t[i];
        if (c->win_t[i] < t_old)
            t_old = c->win_t[i];
        if (c->win_rtt[i] < min_rtt)
            min_rtt = c->win_rtt[i];
    }
    /* Drift once the window spans CS_DRIFT_MIN_SPAN_NS; before, only the
     * last CS_NO_DRIFT_SPAN_NS, where drift is small. */
    int drift = t_new - t_old >= CS_DRIFT_MIN_SPAN_NS;
    int64_t from = drift ? t_old : t_new - CS_NO_DRIFT_SPAN_NS;
    static __thread double t[CS_WINDOW], a[CS_WINDOW], b[CS_WINDOW];
    for (int i = 0; i < n; i++) {
        if (c->win_t[i] < from)
            continue;
        t[m] = (double)(c->win_t[i] - t_new);
        a[m] = (double)c->win_a[i];
        b[m] = (double)c->win_b[i];
        m++;
    }
    ev_clock_fit fit;
    ev_clock_fit_probes(t, a, b, m, drift, &fit);
    c->ref_t = t_new;
    c->ref_offset = (int64_t)fit.offset_ns;
    c->drift = fit.drift;
    c->fitted = 1;
    return fit.gap_ns < 0 ? (double)min_rtt / 2 : fit.gap_ns;
}

int cs_end_round(cs_clock *c, cs_round_result *out)
{
    if (c->probes == 0) {
        c->best_rtt = INT64_MAX;
        return -1;
    }
    const cs_probe *b = &c->best;
    double err = refit(c);
    c->rounds++;
    out->round = c->rounds;
    out->offset_ns = cs_offset_at(c, b->t4);
    out->rtt_ns = c->best_rtt;
    out->uncertainty_ns = (int64_t)err;
    if (out->uncertainty_ns < 1000)
        out->uncertainty_ns = 1000;
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
