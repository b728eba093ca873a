/* noderule.c — is a node alive? The supervisor's expiry and presence rule,
 * a pure function of a node as the reducers hold it (see ev_node_* in
 * ev.h): every leader, replay and the unit tests agree on it. An accrual
 * detector: the node's own heartbeat history says how long a silence is
 * unusual, so load that delays heartbeats widens the patience instead of
 * expiring live nodes (issue: 64 agents on 2 cores churned for ever). */
#include "internal.h"

#include <math.h>

int ev_node_known(const ev_node *node)
{
    return node->state != EV_NODE_NONE && node->state != EV_NODE_EXPIRED;
}

static int64_t heartbeat_ns(const ev_node *node, const ev_node_params *p)
{
    return node->heartbeat_interval_ms > 0 ? node->heartbeat_interval_ms * 1000000
                                           : p->heartbeat_ns;
}

double ev_node_phi(const ev_node *node, const ev_node_params *p, int64_t silent_ns)
{
    int64_t hb = heartbeat_ns(node, p);
    double mean = (double)(node->hb_mean_ns > hb ? node->hb_mean_ns : hb);
    double sigma = 1.25 * (double)node->hb_dev_ns;
    if (sigma < mean / 10)
        sigma = mean / 10;
    double z = ((double)silent_ns - mean) / sigma;
    if (z <= 0)
        return 0;
    double later = 0.5 * erfc(z / sqrt(2.0)); /* P(interval > silence) */
    return later > 1e-100 ? -log10(later) : 100;
}

int64_t ev_node_silence_ns(const ev_node *node, int64_t heard_ns, const ev_node_params *p,
                           int64_t now_ns)
{
    int64_t since = node->last_seen_ns > heard_ns ? node->last_seen_ns : heard_ns;
    /* Nodes could not be heard while no one led, or while this supervisor
     * was stalled or behind its log: each gets one TTL from then. */
    if (p->lead_since_ns > since)
        since = p->lead_since_ns;
    if (p->listening_since_ns > since)
        since = p->listening_since_ns;
    return now_ns - since;
}

int64_t ev_node_ttl_ns(const ev_node *node, const ev_node_params *p)
{
    return node->ttl_ms > 0 ? node->ttl_ms * 1000000 : p->ttl_ns;
}

int ev_node_expire_due(const ev_node *node, int64_t heard_ns, const ev_node_params *p,
                       int64_t now_ns)
{
    if (!ev_node_known(node))
        return 0;
    int64_t ttl_ns = ev_node_ttl_ns(node, p),
            silent = ev_node_silence_ns(node, heard_ns, p, now_ns);
    const ev_node_params led = {.ttl_ns = p->ttl_ns, .lead_since_ns = p->lead_since_ns};
    if (ev_node_silence_ns(node, heard_ns, &led, now_ns) > 4 * ttl_ns)
        return 1; /* the cap: this supervisor's stalls do not postpone it */
    if (silent <= ttl_ns)
        return 0;
    return ev_node_phi(node, p, silent) >= (p->phi_expire > 0 ? p->phi_expire : 8);
}

ev_node_presence ev_node_presence_of(const ev_node *node, const ev_node_params *p, int64_t now_ns)
{
    if (!ev_node_known(node))
        return EV_PRESENCE_EXPIRED;
    int64_t silent = now_ns - node->last_seen_ns;
    if (silent <= 2 * heartbeat_ns(node, p) ||
        ev_node_phi(node, p, silent) < (p->phi_suspect > 0 ? p->phi_suspect : 3))
        return EV_PRESENCE_UP;
    return EV_PRESENCE_STALE;
}

const char *ev_node_presence_name(ev_node_presence presence)
{
    switch (presence) {
    case EV_PRESENCE_UP: return "up";
    case EV_PRESENCE_STALE: return "stale";
    case EV_PRESENCE_EXPIRED: return "expired";
    }
    return "expired";
}
