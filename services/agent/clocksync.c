/* clocksync.c — see clocksync.h. */
#include "clocksync.h"

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
    c->win_next = (c->win_next + 1) % CS_WINDOW;
    if (c->win_count < CS_WINDOW)
        c->win_count++;
    return 0;
}

/* The k smallest of v[0..n) (k <= 3): sorted into out. */
static void smallest3(const double *v, int n, double out[3])
{
    out[0] = out[1] = out[2] = 1e300;
    for (int i = 0; i < n; i++) {
        double x = v[i];
        if (x < out[2]) {
            out[2] = x;
            if (out[2] < out[1]) {
                double t = out[1];
                out[1] = out[2];
                out[2] = t;
            }
            if (out[1] < out[0]) {
                double t = out[0];
                out[0] = out[1];
                out[1] = t;
            }
        }
    }
}

/* Offset (device - agent) at t_ref from the minima of each direction over
 * the probes with window time in [from, to], with drift `slope` taken out:
 * (min a - min b) / 2. Fills the three smallest of each for the error
 * estimate; returns the number of probes used. */
static int envelope(const cs_clock *c, int64_t from, int64_t to, int64_t t_ref, double slope,
                    double *offset, double ma[3], double mb[3])
{
    double da[CS_WINDOW], db[CS_WINDOW];
    int m = 0;
    for (int i = 0; i < c->win_count; i++) {
        if (c->win_t[i] < from || c->win_t[i] > to)
            continue;
        double drift_part = slope * (double)(c->win_t[i] - t_ref);
        da[m] = (double)c->win_a[i] - drift_part;
        db[m] = (double)c->win_b[i] + drift_part;
        m++;
    }
    smallest3(da, m, ma);
    smallest3(db, m, mb);
    *offset = m ? (ma[0] - mb[0]) / 2 : 0;
    return m;
}

/* Refits the line (see clocksync.h) relative to the newest probe; returns
 * an estimate of the error of the offset there. */
static double refit(cs_clock *c)
{
    int n = c->win_count;
    int64_t t_new = INT64_MIN, t_old = INT64_MAX, min_rtt = INT64_MAX;
    for (int i = 0; i < n; i++) {
        if (c->win_t[i] > t_new)
            t_new = c->win_t[i];
        if (c->win_t[i] < t_old)
            t_old = c->win_t[i];
        if (c->win_rtt[i] < min_rtt)
            min_rtt = c->win_rtt[i];
    }
    double ma[3], mb[3], offset, slope = c->drift;
    int64_t span = t_new - t_old;
    if (span >= CS_DRIFT_MIN_SPAN_NS) {
        /* Drift from the envelopes of the two halves of the window, refined
         * twice (each pass takes the last slope out before taking minima). */
        int64_t mid = t_old + span / 2;
        for (int pass = 0; pass < 3; pass++) {
            double o1, o2, a3[3], b3[3];
            int n1 = envelope(c, t_old, mid, mid, slope, &o1, a3, b3);
            int n2 = envelope(c, mid + 1, t_new, mid, slope, &o2, a3, b3);
            if (n1 < 8 || n2 < 8)
                break;
            /* o1, o2 are residual offsets at mid after the current slope:
             * their difference over half a span corrects the slope */
            slope += (o2 - o1) / ((double)span / 2);
        }
        if (slope > 1e-3 || slope < -1e-3) /* beyond 1000 ppm is no crystal */
            slope = 0.0;
        envelope(c, t_old, t_new, t_new, slope, &offset, ma, mb);
    } else {
        /* No drift yet: only the last few seconds, where drift is small. */
        envelope(c, t_new - CS_NO_DRIFT_SPAN_NS, t_new, t_new, slope, &offset, ma, mb);
    }
    c->ref_t = t_new;
    c->ref_offset = (int64_t)offset;
    c->drift = slope;
    c->fitted = 1;
    /* Error estimate: how sharply the minima are resolved (gap to the third
     * smallest), or rtt/2 while there are too few probes. */
    if (ma[2] > 1e299 || mb[2] > 1e299)
        return (double)min_rtt / 2;
    return ((ma[2] - ma[0]) + (mb[2] - mb[0])) / 2;
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
