/* clocksync.h — NTP-style clock estimation of one device (pure; no I/O).
 *
 * A round is several four-timestamp probes: t1 agent send, t2 device
 * receive, t3 device send, t4 agent receive (t1, t4 on the agent clock; t2,
 * t3 on the device clock). Each probe gives
 *     offset = ((t2 - t1) + (t3 - t4)) / 2     (device minus agent)
 *     rtt    = (t4 - t1) - (t3 - t2)
 * and its error is at most rtt / 2 (the unknown asymmetry of the path). A
 * round keeps its minimum-RTT probe (as LSL does). Across rounds the kept
 * probes are fitted with a line (least squares over the last
 * CS_HISTORY rounds): offset(t) = offset_at_ref + drift * (t - ref), so
 * device times convert to agent time between rounds too. */
#ifndef MSRS_CLOCKSYNC_H
#define MSRS_CLOCKSYNC_H
#include <stdint.h>

#define CS_HISTORY 32

typedef struct cs_probe {
    int64_t t1, t2, t3, t4;
} cs_probe;

typedef struct cs_round_result {
    int64_t round;
    int64_t offset_ns;      /* of the minimum-RTT probe */
    int64_t rtt_ns;
    int64_t uncertainty_ns; /* rtt / 2: bound on the kept probe's error */
    double drift_ppm;       /* slope of the fit over the last rounds */
    int probes;
    cs_probe best;
} cs_round_result;

typedef struct cs_clock {
    /* current round */
    int probes;
    cs_probe best;
    int64_t best_rtt;
    /* history of kept probes: agent time (mid-point) and offset */
    int64_t hist_t[CS_HISTORY], hist_offset[CS_HISTORY];
    int hist_count, hist_next;
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
