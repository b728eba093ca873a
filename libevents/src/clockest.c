/* clockest.c — the live clock estimate of one remote clock from rounds of
 * two-way probes (see ev.h, "clock estimate"): a window of probes refitted
 * with the one clock fit (clockfit.c) at the end of every round. Moved here
 * from the agent (services/agent/clocksync.c) so every prober shares it. */
#include "ev.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ev_clock_est_init(ev_clock_est *c)
{
    memset(c, 0, sizeof(*c));
    c->best_rtt = INT64_MAX;
}

/* p's round trip, or -1 when p is impossible (t4 < t1, t3 < t2 or a
 * negative round trip: clocks went backwards). The order checks come
 * first: each difference is then >= 0, and none overflows. */
static int64_t round_trip(const ev_clock_probe *p)
{
    if (p->t4 < p->t1 || p->t3 < p->t2)
        return -1;
    int64_t rtt = (p->t4 - p->t1) - (p->t3 - p->t2);
    return rtt < 0 ? -1 : rtt;
}

/* p (round trip rtt) into the window's slot */
static void window_put(ev_clock_est *c, int slot, const ev_clock_probe *p, int64_t rtt)
{
    c->win_t[slot] = p->t1 + (p->t4 - p->t1) / 2;
    c->win_a[slot] = p->t2 - p->t1;
    c->win_b[slot] = p->t4 - p->t3;
    c->win_rtt[slot] = rtt;
}

int ev_clock_est_add_probe(ev_clock_est *c, const ev_clock_probe *p)
{
    int64_t rtt = round_trip(p);
    if (rtt < 0)
        return EV_ERR_INVALID;
    c->probes++;
    if (rtt < c->best_rtt) {
        c->best_rtt = rtt;
        c->best = *p;
    }
    window_put(c, c->win_next, p, rtt);
    c->last = *p;
    c->last_slot = c->win_next;
    c->last_round = c->rounds;
    c->last_open = 1;
    if (!c->fitted) {
        /* the first answer is an estimate at once (error <= rtt/2): data that
         * comes before the first round ends is not left at offset 0 */
        c->ref_t = p->t4;
        c->ref_offset = ((p->t2 - p->t1) + (p->t3 - p->t4)) / 2;
        c->drift = 0;
        c->fitted = 1;
    }
    c->win_next = (c->win_next + 1) % EV_CLOCK_WINDOW;
    if (c->win_count < EV_CLOCK_WINDOW)
        c->win_count++;
    return 0;
}

int ev_clock_est_sent(ev_clock_est *c, int64_t t1, int64_t t3_sent)
{
    if (!c->last_open || c->last.t1 != t1)
        return 1;
    if (t3_sent < c->last.t3)
        return EV_ERR_INVALID;
    ev_clock_probe p = c->last;
    p.t3 = t3_sent;
    int64_t rtt = round_trip(&p);
    if (rtt < 0)
        return EV_ERR_INVALID;
    c->last_open = 0;
    window_put(c, c->last_slot, &p, rtt);
    /* its round still open: it may now be the round's best (its round
     * trip only shrank, so if it was the best it still is) */
    if (c->last_round == c->rounds && c->probes > 0 && (c->best.t1 == t1 || rtt < c->best_rtt)) {
        c->best = p;
        c->best_rtt = rtt;
    }
    return 0;
}

/* Refits the line (see ev.h) relative to the newest probe with the
 * one clock fit (ev_clock_fit_probes); returns an estimate of the error of
 * the offset there. */
static double refit(ev_clock_est *c)
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
    /* Drift once the window spans EV_CLOCK_DRIFT_MIN_SPAN_NS; before, only the
     * last EV_CLOCK_NO_DRIFT_SPAN_NS, where drift is small. */
    int drift = t_new - t_old >= EV_CLOCK_DRIFT_MIN_SPAN_NS;
    int64_t from = drift ? t_old : t_new - EV_CLOCK_NO_DRIFT_SPAN_NS;
    static __thread double t[EV_CLOCK_WINDOW], a[EV_CLOCK_WINDOW], b[EV_CLOCK_WINDOW];
    /* oldest first: in time order as they came, so the fit need not sort */
    int first = n < EV_CLOCK_WINDOW ? 0 : c->win_next;
    for (int k = 0; k < n; k++) {
        int i = (first + k) % EV_CLOCK_WINDOW;
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

int ev_clock_est_end_round(ev_clock_est *c, ev_clock_round *out)
{
    if (c->probes == 0) {
        c->best_rtt = INT64_MAX;
        return EV_ERR_INVALID;
    }
    const ev_clock_probe *b = &c->best;
    double err = refit(c);
    c->rounds++;
    out->round = c->rounds;
    out->offset_ns = ev_clock_est_offset_at(c, b->t4);
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

int64_t ev_clock_est_offset_at(const ev_clock_est *c, int64_t local_ns)
{
    if (!c->fitted)
        return 0;
    return c->ref_offset + (int64_t)(c->drift * (double)(local_ns - c->ref_t));
}

int64_t ev_clock_est_remote_to_local(const ev_clock_est *c, int64_t remote_ns)
{
    /* remote = local + offset(local); solve with one fixed-point step, exact
     * enough for drifts of ppm. */
    int64_t guess = remote_ns - ev_clock_est_offset_at(c, remote_ns);
    return remote_ns - ev_clock_est_offset_at(c, guess);
}

int64_t ev_clock_est_local_to_remote(const ev_clock_est *c, int64_t local_ns)
{
    return local_ns + ev_clock_est_offset_at(c, local_ns);
}
