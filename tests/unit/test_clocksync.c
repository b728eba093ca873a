/* Clock estimation (libevents/src/clockest.c): the four-timestamp offset,
 * the minimum-RTT probe, the drift fit, conversions both ways. */
#include "ev.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>

#define MS 1000000LL

/* A probe over a path with one-way delays up/down against a device clock
 * that is offset + drift * t ahead. */
static ev_clock_probe probe(int64_t t1, int64_t down, int64_t up, int64_t offset, double drift)
{
    int64_t t2_true = t1 + down, t3_true = t2_true + 50000;
    ev_clock_probe p = {t1, t2_true + offset + (int64_t)(drift * (double)t2_true),
                        t3_true + offset + (int64_t)(drift * (double)t3_true), t3_true + up};
    return p;
}

START_TEST(symmetric_path_gives_exact_offset)
{
    ev_clock_est c;
    ev_clock_round r;
    ev_clock_est_init(&c);
    ev_clock_probe p = probe(1000 * MS, 2 * MS, 2 * MS, 123456789, 0);
    ck_assert_int_eq(ev_clock_est_add_probe(&c, &p), 0);
    ck_assert_int_eq(ev_clock_est_end_round(&c, &r), 0);
    ck_assert_int_eq(r.offset_ns, 123456789);
    ck_assert_int_eq(r.rtt_ns, 4 * MS);
    ck_assert_int_eq(r.uncertainty_ns, 2 * MS);
}
END_TEST

START_TEST(keeps_minimum_rtt_probe_and_error_is_bounded)
{
    ev_clock_est c;
    ev_clock_round r;
    ev_clock_est_init(&c);
    int64_t downs[] = {5 * MS, 1 * MS, 9 * MS, 3 * MS},
            ups[] = {1 * MS, 1 * MS + 200000, 2 * MS, 7 * MS};
    for (int i = 0; i < 4; i++) {
        ev_clock_probe p = probe((1000 + i * 20) * MS, downs[i], ups[i], -5 * MS, 0);
        ck_assert_int_eq(ev_clock_est_add_probe(&c, &p), 0);
    }
    ck_assert_int_eq(ev_clock_est_end_round(&c, &r), 0);
    ck_assert_int_eq(r.probes, 4);
    ck_assert_int_eq(r.rtt_ns, 2 * MS + 200000); /* probe 1 */
    /* The estimate averages the lowest-RTT probes; each errs by at most half
     * its asymmetry, so the estimate errs by less than the best probe's rtt/2. */
    ck_assert_int_le(llabs(r.offset_ns - (-5 * MS)), r.rtt_ns / 2);
    ck_assert_int_eq(r.best.t1, 1020 * MS); /* the kept probe is the minimum-RTT one */
}
END_TEST

START_TEST(sent_corrects_the_last_probe)
{
    /* Each answer's t3 stamped 40 us before its bytes left (a device that
     * encrypts after stamping): 20 us of error, until the device says, with
     * its next answer, when each one really left. */
    const int64_t early = 40000, offset = 7 * MS;
    ev_clock_est c;
    ev_clock_round r;
    ev_clock_est_init(&c);
    ev_clock_probe p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = probe((1000 + i * 20) * MS, 1 * MS, 1 * MS, offset, 0);
        p[i].t3 -= early;
        ck_assert_int_eq(ev_clock_est_add_probe(&c, &p[i]), 0);
    }
    ck_assert_int_eq(ev_clock_est_end_round(&c, &r), 0);
    ck_assert_int_eq(r.offset_ns, offset - early / 2);
    /* only the probe added last can be corrected, and not to an earlier
     * t3 or a negative round trip */
    ck_assert_int_eq(ev_clock_est_sent(&c, p[2].t1, p[2].t3 + early), 1);
    ck_assert_int_eq(ev_clock_est_sent(&c, p[3].t1, p[3].t3 - 1), EV_ERR_INVALID);
    ck_assert_int_eq(ev_clock_est_sent(&c, p[3].t1, p[3].t3 + 3 * MS), EV_ERR_INVALID);
    /* the last probe of the round just ended: corrected in the window */
    ck_assert_int_eq(ev_clock_est_sent(&c, p[3].t1, p[3].t3 + early), 0);
    ck_assert_int_eq(ev_clock_est_sent(&c, p[3].t1, p[3].t3 + early), 1); /* once */
    /* a round whose answers are each corrected by the next; its last one
     * waits for the next round, as above */
    for (int i = 0; i < 4; i++) {
        ev_clock_probe q = probe((1200 + i * 20) * MS, 1 * MS, 1 * MS, offset, 0);
        q.t3 -= early;
        ck_assert_int_eq(ev_clock_est_add_probe(&c, &q), 0);
        if (i < 3)
            ck_assert_int_eq(ev_clock_est_sent(&c, q.t1, q.t3 + early), 0);
    }
    ck_assert_int_eq(ev_clock_est_end_round(&c, &r), 0);
    /* the corrected probes are the lowest round trips: the fit and the
     * round's best are theirs */
    ck_assert_int_eq(r.offset_ns, offset);
    ck_assert_int_eq(r.rtt_ns, 2 * MS);
    ck_assert_int_eq(r.best.t3 - r.best.t2, 50000);
}
END_TEST

START_TEST(many_noisy_probes_beat_the_best_one)
{
    /* Uniform 0.1-2 ms one-way delays, independent each way: the fit over
     * the lowest-RTT quarter of 32 rounds lands far closer than rtt/2. */
    ev_clock_est c;
    ev_clock_round r;
    ev_clock_est_init(&c);
    srand(7);
    for (int round = 0; round < 32; round++)
        for (int k = 0; k < 8; k++) {
            int64_t down = 100000 + rand() % 1900000, up = 100000 + rand() % 1900000;
            ev_clock_probe p = probe((int64_t)round * 2000 * MS + k * 15 * MS + 1000 * MS, down, up,
                                     3 * MS, 20e-6);
            ev_clock_est_add_probe(&c, &p);
            if (k == 7)
                ev_clock_est_end_round(&c, &r);
        }
    int64_t truth = 3 * MS + (int64_t)(20e-6 * (double)r.best.t4);
    ck_assert_msg(llabs(r.offset_ns - truth) < 60000, "error %lld ns",
                  (long long)llabs(r.offset_ns - truth));
    ck_assert_msg(r.drift_ppm > 18 && r.drift_ppm < 22, "drift %f", r.drift_ppm);
}
END_TEST

START_TEST(impossible_probe_dropped)
{
    ev_clock_est c;
    ev_clock_round r;
    ev_clock_est_init(&c);
    ev_clock_probe p = {100, 50, 40, 200}; /* t3 < t2 */
    ck_assert_int_eq(ev_clock_est_add_probe(&c, &p), EV_ERR_INVALID);
    ev_clock_probe q = {100, 50, 60, 90}; /* t4 < t1 */
    ck_assert_int_eq(ev_clock_est_add_probe(&c, &q), EV_ERR_INVALID);
    ck_assert_int_eq(ev_clock_est_end_round(&c, &r), EV_ERR_INVALID); /* nothing valid */
}
END_TEST

START_TEST(drift_recovered_over_rounds)
{
    ev_clock_est c;
    ev_clock_round r;
    ev_clock_est_init(&c);
    double drift = 50e-6; /* 50 ppm */
    for (int round = 0; round < 20; round++) {
        int64_t t = (int64_t)round * 2000 * MS + 1000 * MS;
        for (int k = 0; k < 8; k++) {
            ev_clock_probe p =
                probe(t + k * 15 * MS, (1 + k % 3) * MS, (1 + k % 3) * MS, 7 * MS, drift);
            ev_clock_est_add_probe(&c, &p);
        }
        ck_assert_int_eq(ev_clock_est_end_round(&c, &r), 0);
    }
    ck_assert_msg(r.drift_ppm > 49.9 && r.drift_ppm < 50.1, "drift %f ppm", r.drift_ppm);
    /* The fit predicts the offset between rounds. */
    int64_t t = 39 * 1000 * MS;
    int64_t want = 7 * MS + (int64_t)(drift * (double)t);
    ck_assert_int_le(llabs(ev_clock_est_offset_at(&c, t) - want), 2000);
    /* Conversions are inverse to each other. */
    int64_t dev = ev_clock_est_local_to_remote(&c, t);
    ck_assert_int_le(llabs(ev_clock_est_remote_to_local(&c, dev) - t), 2);
}
END_TEST

START_TEST(identity_before_any_round)
{
    ev_clock_est c;
    ev_clock_est_init(&c);
    ck_assert_int_eq(ev_clock_est_remote_to_local(&c, 12345), 12345);
}
END_TEST

/* Data that arrives while the first round is still running (16 probes
 * take a quarter of a second) converts through the first answer. */
START_TEST(first_answer_converts_before_the_round_ends)
{
    ev_clock_est c;
    ev_clock_est_init(&c);
    ev_clock_probe p = probe(1000 * MS, 3 * MS, 1 * MS, 250 * MS, 0);
    ck_assert_int_eq(ev_clock_est_add_probe(&c, &p), 0);
    int64_t err = ev_clock_est_offset_at(&c, 1010 * MS) - 250 * MS;
    ck_assert_int_le(llabs(err), 2 * MS); /* rtt/2 */
    ck_assert_int_ne(ev_clock_est_offset_at(&c, 1010 * MS), 0);
}
END_TEST

/* The search over every probe, as ev_clock_fit_probes did before it
 * searched only the lower hulls: the oracle the hull search must equal. */
static double every_probe_drift(const double *t, const double *a, const double *b, int n)
{
    double lo = -EV_CLOCK_MAX_DRIFT, hi = EV_CLOCK_MAX_DRIFT, g = (sqrt(5.0) - 1) / 2;
    double x[2] = {hi - g * (hi - lo), lo + g * (hi - lo)}, f[2];
    for (int k = 0; k < 2; k++) {
        double ma = INFINITY, mb = INFINITY;
        for (int i = 0; i < n; i++) {
            ma = fmin(ma, a[i] - x[k] * t[i]);
            mb = fmin(mb, b[i] + x[k] * t[i]);
        }
        f[k] = ma + mb;
    }
    while (hi - lo > 1e-11) {
        int k = f[0] < f[1];
        if (k) {
            lo = x[0];
            x[0] = x[1];
            f[0] = f[1];
            x[1] = lo + g * (hi - lo);
        } else {
            hi = x[1];
            x[1] = x[0];
            f[1] = f[0];
            x[0] = hi - g * (hi - lo);
        }
        double ma = INFINITY, mb = INFINITY;
        for (int i = 0; i < n; i++) {
            ma = fmin(ma, a[i] - x[k] * t[i]);
            mb = fmin(mb, b[i] + x[k] * t[i]);
        }
        f[k] = ma + mb;
    }
    return (lo + hi) / 2;
}

/* The drift search over the lower hulls finds exactly (to the bit) the
 * drift the search over every probe finds: random windows with drift,
 * delays and noise, probes out of time order, repeated times, few probes. */
START_TEST(hull_search_equals_every_probe_search)
{
    srand(7);
    enum { N = 600 };
    static double t[N], a[N], b[N];
    for (int run = 0; run < 200; run++) {
        int n = run < 20 ? 2 + run : 1 + rand() % N;
        double drift = ((rand() % 2001) - 1000) * 1e-7, offset = (rand() % 1000000) - 500000.0;
        for (int i = 0; i < n; i++) {
            /* out of order; a third of the runs with many equal times */
            t[i] = (double)(rand() % (run % 3 ? 100000 : 40)) * 1e6;
            double down = 50000 + rand() % 2000000, up = 50000 + rand() % 2000000;
            a[i] = offset + drift * t[i] + down;
            b[i] = up - offset - drift * t[i];
        }
        ev_clock_fit fit;
        ev_clock_fit_probes(t, a, b, n, 1, &fit);
        double want = every_probe_drift(t, a, b, n);
        ck_assert_msg(fit.drift == want, "run %d, %d probes: drift %.17g, every probe %.17g", run,
                      n, fit.drift, want);
        if (run % 2) { /* in time order, as the live window gives them: no sort */
            for (int i = 1; i < n; i++)
                for (int k = i; k > 0 && t[k - 1] > t[k]; k--) {
                    double x;
                    x = t[k], t[k] = t[k - 1], t[k - 1] = x;
                    x = a[k], a[k] = a[k - 1], a[k - 1] = x;
                    x = b[k], b[k] = b[k - 1], b[k - 1] = x;
                }
            ev_clock_fit_probes(t, a, b, n, 1, &fit);
            ck_assert(fit.drift == every_probe_drift(t, a, b, n));
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("clocksync");
    TCase *tc = tcase_create("clocksync");
    tcase_add_test(tc, symmetric_path_gives_exact_offset);
    tcase_add_test(tc, keeps_minimum_rtt_probe_and_error_is_bounded);
    tcase_add_test(tc, many_noisy_probes_beat_the_best_one);
    tcase_add_test(tc, sent_corrects_the_last_probe);
    tcase_add_test(tc, impossible_probe_dropped);
    tcase_add_test(tc, drift_recovered_over_rounds);
    tcase_add_test(tc, identity_before_any_round);
    tcase_add_test(tc, first_answer_converts_before_the_round_ends);
    tcase_add_test(tc, hull_search_equals_every_probe_search);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
