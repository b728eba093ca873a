/* clockfit.c — the clock line from two-way probes (see ev.h). One fit for
 * the agent's live estimate and replay's refit. */
#include "ev.h"

#include <math.h>
#include <stdlib.h>

/* Keeps the three smallest values seen in m (sorted). */
static void keep3(double m[3], double x)
{
    if (x >= m[2])
        return;
    m[2] = x;
    for (int k = 2; k > 0 && m[k] < m[k - 1]; k--) {
        double s = m[k];
        m[k] = m[k - 1];
        m[k - 1] = s;
    }
}

/* The lower envelopes of both one-way delays with the drift beta taken out:
 * a - beta*t = offset + down, b + beta*t = up - offset. Fills the three
 * smallest of each (sorted); returns min a + min b, which is largest at the
 * true drift (tilting either cloud lowers its minimum) and concave in beta. */
static double envelopes(const double *t, const double *a, const double *b, int n, double beta,
                        double ma[3], double mb[3])
{
    ma[0] = ma[1] = ma[2] = mb[0] = mb[1] = mb[2] = INFINITY;
    for (int i = 0; i < n; i++) {
        double x = a[i] - beta * t[i], y = b[i] + beta * t[i];
        keep3(ma, x);
        keep3(mb, y);
    }
    return ma[0] + mb[0];
}

/* The probes a drift search needs: min over i of a[i] - beta*t[i] is, for
 * every beta, reached at a vertex of the lower convex hull of the points
 * (t[i], a[i]) (and likewise for b + beta*t), so the search evaluates
 * only those vertices: the same minima, the same doubles, the same drift,
 * for a few dozen points instead of the window's 512 (or a session's
 * probes in msrs-replay --refit). */
static int by_t(const void *x, const void *y, void *t)
{
    double u = ((const double *)t)[*(const int *)x], v = ((const double *)t)[*(const int *)y];
    return (u > v) - (u < v);
}

/* order: the indexes of t by time; sorted only when t is not in time order
 * already (the live window is given oldest first). */
static void time_order(const double *t, int n, int *order)
{
    int sorted = 1;
    for (int i = 0; i < n; i++) {
        order[i] = i;
        sorted &= i == 0 || t[i - 1] <= t[i];
    }
    if (!sorted)
        qsort_r(order, (size_t)n, sizeof(*order), by_t, (void *)t);
}

/* Writes the lower hull of the n points (t[i], v[i]) taken in `order` (by
 * t; among equal t only the lowest is kept, whatever their order) to ht, hv
 * (Andrew's monotone chain); returns its size. */
static int lower_hull(const double *t, const double *v, int n, const int *order, double *ht,
                      double *hv)
{
    int m = 0;
    for (int k = 0; k < n; k++) {
        double x = t[order[k]], y = v[order[k]];
        if (m >= 1 && x == ht[m - 1]) { /* the same time: only the lower point can be lowest */
            if (y >= hv[m - 1])
                continue;
            m--;
        }
        while (m >= 2 && (ht[m - 1] - ht[m - 2]) * (y - hv[m - 2]) -
                                 (hv[m - 1] - hv[m - 2]) * (x - ht[m - 2]) <=
                             0)
            m--;
        ht[m] = x;
        hv[m] = y;
        m++;
    }
    return m;
}

/* min over i of v[i] - beta*t[i] */
static double lowest(const double *t, const double *v, int n, double beta)
{
    double m = INFINITY;
    for (int i = 0; i < n; i++) {
        double x = v[i] - beta * t[i];
        if (x < m)
            m = x;
    }
    return m;
}

/* min a + min b with the drift beta taken out (see envelopes) */
static double both(const double *ta, const double *a, int na, const double *tb, const double *b,
                   int nb, double beta)
{
    return lowest(ta, a, na, beta) + lowest(tb, b, nb, -beta);
}

/* The golden-section search for the drift that makes min a + min b
 * highest, in +-2000 ppm (a phone's crystal is within +-100) down to
 * 1e-5 ppm. */
static double search_drift(const double *ta, const double *a, int na, const double *tb,
                           const double *b, int nb)
{
    double lo = -EV_CLOCK_MAX_DRIFT, hi = EV_CLOCK_MAX_DRIFT, g = (sqrt(5.0) - 1) / 2;
    double x1 = hi - g * (hi - lo), x2 = lo + g * (hi - lo);
    double f1 = both(ta, a, na, tb, b, nb, x1), f2 = both(ta, a, na, tb, b, nb, x2);
    while (hi - lo > 1e-11) {
        if (f1 < f2) {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + g * (hi - lo);
            f2 = both(ta, a, na, tb, b, nb, x2);
        } else {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - g * (hi - lo);
            f1 = both(ta, a, na, tb, b, nb, x1);
        }
    }
    return (lo + hi) / 2;
}

void ev_clock_fit_probes(const double *t, const double *a, const double *b, int n, int fit_drift,
                         ev_clock_fit *out)
{
    double ma[3], mb[3], drift = 0;
    if (fit_drift && n >= 2) {
        int *order = malloc((size_t)n * sizeof(*order));
        double *h = malloc((size_t)n * 4 * sizeof(*h));
        if (order && h) {
            double *ta = h, *ha = h + n, *tb = h + 2 * (size_t)n, *hb = h + 3 * (size_t)n;
            time_order(t, n, order);
            int na = lower_hull(t, a, n, order, ta, ha), nb = lower_hull(t, b, n, order, tb, hb);
            drift = search_drift(ta, ha, na, tb, hb, nb);
        } else { /* no memory for the hulls: every probe, the same answer slower */
            drift = search_drift(t, a, n, t, b, n);
        }
        free(order);
        free(h);
    }
    envelopes(t, a, b, n, drift, ma, mb);
    out->drift = drift;
    out->offset_ns = n ? (ma[0] - mb[0]) / 2 : 0; /* equal minimum delays both ways */
    out->gap_ns = isinf(ma[2]) || isinf(mb[2]) ? -1 : ((ma[2] - ma[0]) + (mb[2] - mb[0])) / 2;
}
