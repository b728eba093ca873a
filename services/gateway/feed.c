/* feed.c — the live feed's changes (docs/gateway.md, "The feed"). Every
 * published change gets the next revision and is kept, as text, in a ring
 * of the last gateway.feed_ring changes (at most gateway.feed_ring_bytes). A client reads them in
 * order from its own revision; one that connects with `since=EPOCH:REV` of this process, still in
 * the ring, gets what it missed, and any other gets a snapshot first. Revisions are this process's:
 * another gateway, or this one restarted, has another epoch, so a page that reconnects there starts
 * from a snapshot (the log is the truth, not the revision). */
#include "gateway.h"

#include <stdlib.h>
#include <string.h>

void gw_feed_publish(gw_gateway *g, json_t *msg)
{
    json_object_set_new(msg, "epoch", json_string(g->epoch));
    json_object_set_new(msg, "rev", json_integer(g->rev + 1));
    char *text = json_dumps(msg, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    unsigned char *buf = text ? malloc(LWS_PRE + len) : NULL;
    json_decref(msg);
    if (buf)
        memcpy(buf + LWS_PRE, text, len);
    free(text);
    if (!buf)
        return; /* out of memory: the next change (or a snapshot) says it */
    g->rev++;
    /* the oldest go while the ring is full, by count or by bytes (a client
     * that wanted them gets a snapshot) */
    while (g->ring_count && (g->ring_count == (size_t)g->ring_size ||
                             g->ring_bytes + (int64_t)len > g->ring_max_bytes)) {
        gw_change *old = &g->ring[g->ring_head];
        g->ring_bytes -= (int64_t)old->len;
        free(old->buf);
        g->ring_head = (g->ring_head + 1) % (size_t)g->ring_size;
        g->ring_count--;
    }
    gw_change *slot = &g->ring[(g->ring_head + g->ring_count++) % (size_t)g->ring_size];
    g->ring_bytes += (int64_t)len;
    *slot = (gw_change){.rev = g->rev, .buf = buf, .text = (char *)buf + LWS_PRE, .len = len};
    g->n.feed_messages++;
}

json_t *gw_feed_snapshot(gw_gateway *g)
{
    return json_pack("{s:s, s:s, s:I, s:b, s:I, s:o, s:o, s:o, s:O}", "type", "snapshot", "epoch",
                     g->epoch, "rev", (json_int_t)g->rev, "caught_up", g->caught_up, "records",
                     (json_int_t)ev_projection_records(g->proj), "nodes", gw_view_nodes(g),
                     "devices", gw_view_devices(g), "sessions", gw_view_sessions(g, 0), "alerts",
                     g->alerts);
}

const gw_change *gw_feed_next(const gw_gateway *g, int64_t rev, int *gone)
{
    *gone = 0;
    if (rev >= g->rev)
        return NULL;
    int64_t oldest = g->ring_count ? g->ring[g->ring_head].rev : g->rev + 1;
    if (rev + 1 < oldest) {
        *gone = 1;
        return NULL;
    }
    return &g->ring[(g->ring_head + (size_t)(rev + 1 - oldest)) % (size_t)g->ring_size];
}

void gw_feed_free(gw_gateway *g)
{
    for (size_t i = 0; i < g->ring_count; i++)
        free(g->ring[(g->ring_head + i) % (size_t)g->ring_size].buf);
    free(g->ring);
    g->ring = NULL;
    g->ring_count = 0;
}
