/* noderule.c — is a node alive? The supervisor's expiry and presence rule,
 * a pure function of a node as the reducers hold it (see ev_node_* in
 * ev.h): every leader, replay and the unit tests agree on it. */
#include "internal.h"

int ev_node_known(const ev_node *node)
{
    return node->state != EV_NODE_NONE && node->state != EV_NODE_EXPIRED;
}

int ev_node_expire_due(const ev_node *node, int64_t heard_ns, const ev_node_params *p,
                       int64_t now_ns)
{
    if (!ev_node_known(node))
        return 0;
    int64_t since = node->last_seen_ns > heard_ns ? node->last_seen_ns : heard_ns;
    /* A new leader gives every node one TTL from its start: nodes could not
     * heartbeat while no one led. */
    if (p->lead_since_ns > since)
        since = p->lead_since_ns;
    int64_t ttl_ns = node->ttl_ms > 0 ? node->ttl_ms * 1000000 : p->ttl_ns;
    return now_ns - since > ttl_ns;
}

ev_node_presence ev_node_presence_of(const ev_node *node, const ev_node_params *p, int64_t now_ns)
{
    if (!ev_node_known(node))
        return EV_PRESENCE_EXPIRED;
    int64_t hb_ns =
        node->heartbeat_interval_ms > 0 ? node->heartbeat_interval_ms * 1000000 : p->heartbeat_ns;
    return now_ns - node->last_seen_ns <= 2 * hb_ns ? EV_PRESENCE_UP : EV_PRESENCE_STALE;
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
