/* refit.h — msrs-replay --refit: post-hoc clock correction of a session
 * archive. For every device, all its recorded clock rounds (DEVICE/clock.avro:
 * the raw four-timestamp probe of each ClockOffsetMeasured) are fitted with a
 * robust line master − device = a + b·(device − x0) per clock segment (a
 * reset of the device clock starts a new one); every master_time_ns in the
 * device's Avro files is recomputed from its device_time_ns, into a copy of
 * the archive with a new manifest (the fits, how far times moved, SHA-256). */
#ifndef MSRS_REFIT_H
#define MSRS_REFIT_H
#include "ev.h"

#include <stdint.h>

#define RF_MAX_SEGMENTS 16

typedef struct rf_probe {
    int64_t t1, t2, t3, t4; /* master send, device receive, device send, master receive */
} rf_probe;

/* One recorded round: its kept (minimum-RTT) probe and all its probes
 * (round_probes; archives written before that field have only the kept). */
typedef struct rf_round {
    rf_probe best;
    rf_probe *probes;
    int n;
    int64_t round; /* the agent's round number: it restarts with the agent */
} rf_round;

/* offset (device − master) = offset_ns + drift · (m − origin), m master time. */
typedef struct rf_segment {
    int64_t master_from, master_to; /* t1 of its first and last round */
    int64_t origin;                 /* master time, ns */
    double offset_ns, drift;        /* drift in ns per ns */
    int rounds, probes;
    double rms_ns; /* of the rounds' kept-probe offsets about the line (a diagnostic) */
} rf_segment;

typedef struct rf_fit {
    rf_segment seg[RF_MAX_SEGMENTS];
    int n;
} rf_fit;

/* Fits rounds (sorted in place by the kept probe's t1). A jump of the
 * kept probes' offsets larger than reset_ns, confirmed by the next round,
 * starts a segment (a device clock reset), and so does a round number that
 * does not increase (a new agent process: the device it knows by that id
 * may be another clock). The estimate is the live one's fit
 * (ev_clock_fit_probes) over every probe of the segment at once: with
 * the drift taken out, the offset is half the difference of the two
 * directions' minimum one-way delays; the drift is the one that makes
 * those minima (the lower envelopes of both delay clouds) highest. Returns
 * 0, or -1 when there are fewer than 2 rounds. */
int rf_fit_rounds(rf_round *r, int n, int64_t reset_ns, rf_fit *out);

/* The corrected master time of device time x; master_hint (the old
 * estimate) picks the segment. */
int64_t rf_master(const rf_fit *f, int64_t x, int64_t master_hint);

/* Writes a refitted copy of the archive folder src into dst (which must not
 * exist). The rounds are those of each DEVICE/clock.avro and, when log is
 * not NULL, the device's ClockOffsetMeasured in the log from margin_ns
 * before the session's start to margin_ns after its stop (the archive is
 * written right after the stop: later rounds are only in the log, and a
 * line fitted on both sides of a session is better inside it). Progress and
 * errors (naming the file and field) on stderr. Returns 0, 1 (an input file
 * is truncated or not what the manifest says: nothing is left half-written
 * — dst is removed), 2 (usage: dst exists). */
int rf_refit_archive(const char *src, const char *dst, int64_t reset_ns, ev_log *log,
                     int64_t margin_ns);

#endif
