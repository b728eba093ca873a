/* clock.c — layer 4: clock sync of the devices (see clock.h). */
#include "clock.h"

#include "emit.h"
#include "endpoint.h"

#include <string.h>

static void end_round(ag_agent *a, ag_device *d);

void ag_clock_join(ag_agent *a, ag_device *d)
{
    d->round_active = 0;
    d->next_round_ns = d->idle_round_ns = ag_now_ns(); /* sync at once */
    /* probes from before a reconnect (a device that restarted may have a
     * new clock) leave the window at the full cadence, not the idle one */
    d->fast_rounds = (d->clock.win_count + a->cfg.sync_probes - 1) / a->cfg.sync_probes;
}

/* 1 when d's rounds come every sync.interval_ms: its node records, its
 * window fills, or probes from before a reconnect are still in it. Else
 * every sync.idle_interval_ms (issue 23: an idle node's cost, and the
 * devices topic's records, are mostly clock rounds). */
static int full_cadence(const ag_device *d, int recording)
{
    return recording || d->fast_rounds > 0 || d->clock.win_count < EV_CLOCK_WINDOW;
}

static int64_t round_due(const ag_device *d, int recording)
{
    return full_cadence(d, recording) ? d->next_round_ns : d->idle_round_ns;
}

int ag_clock_answer(ag_agent *a, ag_device *d, const ev_clock_probe *p)
{
    if (!d->round_active)
        return 0; /* a late answer to a finished round */
    if (p->t1 < d->round_started_ns)
        return 0; /* from an earlier round */
    if (ev_clock_est_add_probe(&d->clock, p) != 0)
        return EV_ERR_INVALID;
    /* kept as they are; JSON only for the round's record (end_round). A
     * full buffer only leaves the probe out of the record, not the fit. */
    cli_buf_append(&d->round_probes, p, sizeof(*p));
    d->probes_answered++;
    if (d->probes_answered >= d->round_size)
        end_round(a, d); /* at once: the tick may sleep until its next due time (main.c) */
    return 0;
}

int ag_clock_sent(ag_agent *a, ag_device *d, int64_t t1, int64_t t3_sent)
{
    int r = ev_clock_est_sent(&d->clock, t1, t3_sent);
    if (r != 0)
        return r;
    a->n.sends_corrected++;
    /* the round's record shows the t3 the fit uses; the correction of a
     * round's last answer comes with the next round's first, after the
     * record */
    ev_clock_probe *kept = (ev_clock_probe *)d->round_probes.data;
    size_t n = d->round_probes.len / sizeof(*kept);
    if (n && kept[n - 1].t1 == t1)
        kept[n - 1].t3 = t3_sent;
    return 0;
}

static void end_round(ag_agent *a, ag_device *d)
{
    ev_clock_round r;
    d->round_active = 0;
    /* 0.9 to 1.1 times the interval: devices that joined together (a
     * devsim, a lab's phones after a network blip) spread their rounds */
    double spread = 0.9 + 0.2 * ev_random_unit();
    int64_t now = ag_now_ns();
    if (d->fast_rounds > 0)
        d->fast_rounds--;
    d->next_round_ns = now + (int64_t)(spread * (double)a->cfg.sync_interval_ms * 1e6);
    d->idle_round_ns = now + (int64_t)(spread * (double)a->cfg.sync_idle_interval_ms * 1e6);
    if (ev_clock_est_end_round(&d->clock, &r) != 0)
        return; /* no answer this round: try again next interval */
    json_t *probes = json_array();
    const ev_clock_probe *kept = (const ev_clock_probe *)d->round_probes.data;
    for (size_t i = 0; i < d->round_probes.len / sizeof(*kept); i++)
        json_array_append_new(probes,
                              json_pack("{s:I, s:I, s:I, s:I}", "t1_ns", (json_int_t)kept[i].t1,
                                        "t2_ns", (json_int_t)kept[i].t2, "t3_ns",
                                        (json_int_t)kept[i].t3, "t4_ns", (json_int_t)kept[i].t4));
    ag_emit(
        a, "ClockOffsetMeasured", d->device_id,
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:I, s:i, s:I, s:I, s:I, s:I, s:o}", "device_id",
                  d->device_id, "node_id", a->cfg.node_id, "round", (json_int_t)r.round,
                  "offset_ns", (json_int_t)r.offset_ns, "rtt_ns", (json_int_t)r.rtt_ns, "drift_ppm",
                  r.drift_ppm, "uncertainty_ns", (json_int_t)r.uncertainty_ns, "probes", r.probes,
                  "t1_ns", (json_int_t)r.best.t1, "t2_ns", (json_int_t)r.best.t2, "t3_ns",
                  (json_int_t)r.best.t3, "t4_ns", (json_int_t)r.best.t4, "round_probes", probes),
        NULL, 0);
}

/* 1 when this second's rounds are all started (sync.max_rounds_per_s): a
 * thousand devices that join at once (a network blip ends) probe over
 * seconds, not all on one tick. */
static int rounds_capped(const ag_agent *a, int64_t now)
{
    return now - a->rounds_window_ns < 1000000000LL &&
           a->rounds_in_window >= a->cfg.sync_max_rounds_per_s;
}

void ag_sync_tick(ag_agent *a, int64_t now, int recording)
{
    /* a new second (or the wall clock stepped back) */
    if (now - a->rounds_window_ns >= 1000000000LL || now < a->rounds_window_ns) {
        a->rounds_window_ns = now;
        a->rounds_in_window = 0;
    }
    int started_recording = recording && !a->sync_recording;
    a->sync_recording = recording;
    /* the scan starts one device further each tick: when the cap holds
     * rounds back, no device is always last */
    size_t first = a->device_count ? a->sync_rotor++ % a->device_count : 0;
    for (size_t k = 0; k < a->device_count; k++) {
        ag_device *d = a->devices[(first + k) % a->device_count];
        if (!d->conn)
            continue;
        if (!d->round_active) {
            int64_t interval = a->cfg.sync_interval_ms * 1000000LL;
            if (started_recording && d->next_round_ns + interval / 4 < now)
                /* seconds overdue at the full cadence: the node has just
                 * started recording; each device starts at its idle
                 * schedule's phase within one interval, not all on this
                 * tick, so rounds stay spread */
                d->next_round_ns =
                    now + (d->idle_round_ns > now ? (d->idle_round_ns - now) % interval : 0);
            if (now < round_due(d, recording) || rounds_capped(a, now))
                continue;
            a->rounds_in_window++;
            d->round_active = 1;
            d->round_probes.len = 0; /* of a round cut short */
            d->probes_sent = d->probes_answered = 0;
            d->next_probe_ns = d->round_started_ns = now;
            /* more probes while the device's window is filling: its drift,
             * and so its offset, settle in half the time (NTP's iburst) */
            d->round_size = d->clock.win_count < EV_CLOCK_WINDOW ? a->cfg.sync_burst_probes
                                                                 : a->cfg.sync_probes;
            d->round_deadline_ns =
                now +
                (d->round_size * a->cfg.probe_spacing_ms + a->cfg.round_timeout_ms) * 1000000LL;
        }
        if (d->probes_sent < d->round_size && now >= d->next_probe_ns) {
            ag_send_time_req(a, d->conn);
            d->probes_sent++;
            d->next_probe_ns = now + a->cfg.probe_spacing_ms * 1000000LL;
        }
        if (d->probes_answered >= d->round_size || now >= d->round_deadline_ns)
            end_round(a, d);
    }
}

int64_t ag_sync_next_ns(const ag_agent *a, int64_t until, int recording)
{
    int64_t now = ag_now_ns(), window_end = a->rounds_window_ns + 1000000000LL;
    int capped = rounds_capped(a, now);
    for (size_t i = 0; i < a->device_count; i++) {
        const ag_device *d = a->devices[i];
        if (!d->conn)
            continue;
        int64_t due;
        if (d->round_active)
            due = d->probes_sent < d->round_size ? d->next_probe_ns : d->round_deadline_ns;
        else {
            due = round_due(d, recording);
            if (capped && due < window_end)
                due = window_end; /* this second's rounds are started: the next */
        }
        if (due < until)
            until = due;
    }
    return until;
}

void ag_sync_now(ag_agent *a, const char *device_id)
{
    for (size_t i = 0; i < a->device_count; i++) {
        ag_device *d = a->devices[i];
        if (d->conn && !d->round_active && (!device_id || strcmp(device_id, d->device_id) == 0))
            d->next_round_ns = d->idle_round_ns = 0;
    }
}

int64_t ag_master_offset_ns(const ag_agent *a, int64_t agent_ns)
{
    return a->master_clock.fitted ? ev_clock_est_offset_at(&a->master_clock, agent_ns) : 0;
}

int64_t ag_device_to_master(const ag_agent *a, const ag_device *d, int64_t device_ns)
{
    int64_t agent = ev_clock_est_remote_to_local(&d->clock, device_ns);
    return agent + ag_master_offset_ns(a, agent);
}

int64_t ag_master_to_device(const ag_agent *a, const ag_device *d, int64_t master_ns)
{
    return ev_clock_est_local_to_remote(&d->clock, master_ns - ag_master_offset_ns(a, master_ns));
}
