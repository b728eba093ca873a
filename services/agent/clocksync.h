/* clocksync.h — NTP-style clock estimation of one device (pure; no I/O).
 *
 * A round is several four-timestamp probes: t1 agent send, t2 device
 * receive, t3 device send, t4 agent receive (t1, t4 on the agent clock; t2,
 * t3 on the device clock). Each probe gives
 *     offset = ((t2 - t1) + (t3 - t4)) / 2     (device minus agent)
 *     rtt    = (t4 - t1) - (t3 - t2)
 * and its error is at most rtt / 2 (the unknown asymmetry of the path). A
 * round keeps its minimum-RTT probe (as LSL does) for the record.
 *
 * The estimate uses more than that probe. Every valid probe of the last
 * CS_WINDOW is kept as its two one-way measurements
 *     a = t2 - t1 = offset + down        b = t4 - t3 = up - offset
 * With the drift taken out, min(a) = offset + min(down) and min(b) =
 * min(up) - offset, so offset = (min a - min b) / 2 is exact when the two
 * directions' minimum delays are equal, however the delays spread above
 * them; timestamp noise biases both minima alike and cancels. Once the
 * window spans CS_DRIFT_MIN_SPAN_NS the drift is the slope that makes both
 * lower envelopes highest (ev_clock_fit_probes, the fit msrs-replay --refit
 * uses too); before that only the last CS_NO_DRIFT_SPAN_NS of probes count,
 * with no drift. Device times convert to agent time through the resulting
 * line, between rounds too; before the first round ends, through the first
 * answered probe's offset; before any answer, as they are (offset 0). */
#ifndef MSRS_CLOCKSYNC_H
#define MSRS_CLOCKSYNC_H
#include <stdint.h>

#define CS_WINDOW            512 /* probes: 64 rounds of 8 */
#define CS_DRIFT_MIN_SPAN_NS 16000000000LL
#define CS_NO_DRIFT_SPAN_NS  4000000000LL

typedef struct cs_probe {
    int64_t t1, t2, t3, t4;
} cs_probe;

typedef struct cs_round_result {
    int64_t round;
    int64_t offset_ns;      /* the fitted offset at the kept probe's t4 */
    int64_t rtt_ns;         /* of the kept (minimum-RTT) probe */
    int64_t uncertainty_ns; /* an estimate of the error of offset_ns (not a bound), >= 1 us */
    double drift_ppm;       /* slope of the fit over the last rounds */
    int probes;
    cs_probe best;
} cs_round_result;

typedef struct cs_clock {
    /* current round */
    int probes;
    cs_probe best;
    int64_t best_rtt;
    /* every valid probe of the window: agent time (mid-point), a, b, rtt */
    int64_t win_t[CS_WINDOW], win_a[CS_WINDOW], win_b[CS_WINDOW], win_rtt[CS_WINDOW];
    int win_count, win_next;
    int64_t rounds;
    /* the fit */
    int fitted;
    int64_t ref_t, ref_offset;
    double drift; /* ns per ns */
    int64_t last_uncertainty_ns;
} cs_clock;

void cs_init(cs_clock *c);
/* Adds one probe to the current round. Returns 0, or -1 when the probe is
 * impossible (t4 < t1 or t3 < t2: clocks went backwards), which is dropped. */
int cs_add_probe(cs_clock *c, const cs_probe *p);
/* Ends the round: keeps its best probe, refits. Returns 0 and fills out, or
 * -1 when the round had no valid probe. */
int cs_end_round(cs_clock *c, cs_round_result *out);
/* Device clock -> agent clock with the current fit (identity before any). */
int64_t cs_device_to_agent(const cs_clock *c, int64_t device_ns);
/* Agent clock -> device clock. */
int64_t cs_agent_to_device(const cs_clock *c, int64_t agent_ns);
/* The fitted offset (device - agent) at agent time t. */
int64_t cs_offset_at(const cs_clock *c, int64_t agent_ns);

#endif
