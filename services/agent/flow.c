/* flow.c — layer 5: backpressure from the log's backlog (see flow.h). */
#include "flow.h"

#include "endpoint.h"

#include <stdio.h>

static void flow_set(ag_agent *a, ag_conn *c, int slow)
{
    if (slow)
        ag_send(a, c, "flow",
                json_pack("{s:s, s:s, s:I}", "state", "slow_down", "reason", "log_behind",
                          "backlog_bytes", (json_int_t)a->backlog_bytes));
    else
        ag_send(a, c, "flow", json_pack("{s:s}", "state", "resume"));
    ag_conn_pause(a, c, slow);
}

void ag_flow_greet(ag_agent *a, ag_conn *c)
{
    if (a->slowed)
        flow_set(a, c, 1);
}

/* How long the log may acknowledge nothing while records wait before the
 * devices are slowed whatever the backlog's size (a Kafka cluster that is
 * gone takes records and never acknowledges them). */
#define AG_FLOW_STALL_NS 3000000000LL

void ag_flow_tick(ag_agent *a, int64_t now)
{
    int64_t records, bytes;
    char err[512];
    if (ev_log_backlog(a->log, &records, &bytes, err, sizeof(err)) &&
        now - a->log_error_at_ns >= 1000000000LL) {
        a->log_error_at_ns = now; /* once a second while it lasts */
        fprintf(stderr, "msrs-agent: log: %s\n", err);
    }
    a->backlog_bytes = bytes;
    a->backlog_records = records;
    /* acknowledged so far: produced less what waits */
    if (records == 0 || a->produced - records != a->acked_records || !a->acked_at_ns) {
        if (a->stalled)
            fprintf(stderr, "msrs-agent: log: acknowledging again (%lld records waiting)\n",
                    (long long)records);
        a->acked_records = a->produced - records;
        a->acked_at_ns = now;
        a->stalled = 0;
    } else if (!a->stalled && now - a->acked_at_ns >= AG_FLOW_STALL_NS) {
        a->stalled = 1;
        fprintf(stderr,
                "msrs-agent: log: nothing acknowledged for %lld s, %lld records (%lld bytes) "
                "waiting: the log is not answering (broker down?); devices are slowed until it "
                "does\n",
                (long long)((now - a->acked_at_ns) / 1000000000LL), (long long)records,
                (long long)bytes);
    }
    int slow =
        a->stalled || (a->slowed ? bytes > a->cfg.flow_low_bytes : bytes > a->cfg.flow_high_bytes);
    if (slow == a->slowed)
        return;
    a->slowed = slow;
    a->n.slow_downs += slow;
    if (!slow)
        a->resumed_at_ns = now; /* the devices' held data comes from now on */
    fprintf(stderr, "msrs-agent: log backlog %lld bytes in %lld records: %s\n", (long long)bytes,
            (long long)records, slow ? "devices told to slow down" : "devices resume");
    for (size_t i = 0; i < a->device_count; i++)
        if (a->devices[i]->conn)
            flow_set(a, a->devices[i]->conn, slow);
}
