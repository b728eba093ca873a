/* clockfit.c — the clock line from two-way probes (see ev.h). One fit for
 * the agent's live estimate and replay's refit. */
#include "ev.h"

#include <math.h>

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

void ev_clock_fit_probes(const double *t, const double *a, const double *b, int n, int fit_drift,
                         ev_clock_fit *out)
{
    double ma[3], mb[3], drift = 0;
    if (fit_drift && n >= 2) {
        /* golden-section search in +-2000 ppm (a phone's crystal is within
         * +-100) down to 1e-5 ppm */
        double lo = -EV_CLOCK_MAX_DRIFT, hi = EV_CLOCK_MAX_DRIFT, g = (sqrt(5.0) - 1) / 2;
        double x1 = hi - g * (hi - lo), x2 = lo + g * (hi - lo);
        double f1 = envelopes(t, a, b, n, x1, ma, mb), f2 = envelopes(t, a, b, n, x2, ma, mb);
        while (hi - lo > 1e-11) {
            if (f1 < f2) {
                lo = x1;
                x1 = x2;
                f1 = f2;
                x2 = lo + g * (hi - lo);
                f2 = envelopes(t, a, b, n, x2, ma, mb);
            } else {
                hi = x2;
                x2 = x1;
                f2 = f1;
                x1 = hi - g * (hi - lo);
                f1 = envelopes(t, a, b, n, x1, ma, mb);
            }
        }
        drift = (lo + hi) / 2;
    }
    envelopes(t, a, b, n, drift, ma, mb);
    out->drift = drift;
    out->offset_ns = n ? (ma[0] - mb[0]) / 2 : 0; /* equal minimum delays both ways */
    out->gap_ns = isinf(ma[2]) || isinf(mb[2]) ? -1 : ((ma[2] - ma[0]) + (mb[2] - mb[0])) / 2;
}
