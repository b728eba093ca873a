/* clock.h — layer 4: clock sync of the devices. Every connected device
 * gets a round of time probes every sync.interval_ms (sync.burst_probes
 * while its window fills) while the node records a session or the
 * device's window fills, else every sync.idle_interval_ms; each interval is
 * drawn from 0.9 to 1.1 times that, so the rounds of devices that joined
 * together drift apart. Its answers go into its ev_clock_est, and each
 * round ends in ClockOffsetMeasured. Device times convert to the master
 * clock through the device's fit and then the node's offset to its
 * supervisor (a->master_clock, which control.c keeps). */
#ifndef MSRS_AG_CLOCK_H
#define MSRS_AG_CLOCK_H
#include "agent.h"

/* A device (re)registered: its next round starts at once. */
void ag_clock_join(ag_agent *a, ag_device *d);
/* A time_resp of d (p copied; t4 the arrival stamp). Returns 0 (taken, or
 * ignored as a late answer to an earlier round), or EV_ERR_INVALID when the
 * probe is impossible (t3 < t2 or t4 < t1): the device's error. */
int ag_clock_answer(ag_agent *a, ag_device *d, const ev_clock_probe *p);
/* d said, with its next answer, when its answer to the probe sent at t1
 * really left (t3_sent, its clock): that probe's t3 becomes t3_sent, in d's
 * window and, while its round lasts, in the round's record. Returns 0 (or
 * 1: not the last answer taken, nothing to correct), or EV_ERR_INVALID when
 * t3_sent is before that answer's t3 or makes its round trip negative. */
int ag_clock_sent(ag_agent *a, ag_device *d, int64_t t1, int64_t t3_sent);
/* Runs clock-sync rounds that are due; called by the tick. recording: the
 * node records a session (every device at sync.interval_ms). */
void ag_sync_tick(ag_agent *a, int64_t now_ns, int recording);
/* When ag_sync_tick has something to do next (a round to start, a probe to
 * send, a round's deadline), at most `until`. */
int64_t ag_sync_next_ns(const ag_agent *a, int64_t until, int recording);
/* Starts a round now for device_id (NULL: every connected device). */
void ag_sync_now(ag_agent *a, const char *device_id);

/* master clock minus agent clock at agent time t (0 until measured, and
 * standalone): device times convert to master time through it. */
int64_t ag_master_offset_ns(const ag_agent *a, int64_t agent_ns);
/* A device's time on the master clock (its fit, then the node's offset),
 * and back: what records carry and what `start`/`stop` send. */
int64_t ag_device_to_master(const ag_agent *a, const ag_device *d, int64_t device_ns);
int64_t ag_master_to_device(const ag_agent *a, const ag_device *d, int64_t master_ns);

#endif
