/* gateway.h — msrs-gateway internals (prefix gw_): the web app's server.
 * It reads by folding the log with the shared projection (the reducers of
 * replay) and acts only by writing records (CollectionRequested,
 * CollectionStopRequested, SyncNow); nothing in its memory is the only
 * copy of anything, so several gateways may serve one log (docs/gateway.md).
 *
 * Layers, each calling only downward:
 *   main.c   configuration, the loop, the tick (fold, live counts, alerts,
 *            publish a change to the feed)
 *   http.c   libwebsockets: HTTP requests (API, the web app's files, archive
 *            downloads) and the feed's WebSocket connections; who asks (a
 *            bearer token or the login cookie)
 *   api.c    the REST API: one request in, a status and JSON out; actions
 *            are records on the log
 *   feed.c   the change ring the feed's clients read from, snapshots
 *   live.c   live per-stream counts and sparklines of recording sessions,
 *            from the samples and media topics
 *   view.c   what the API and the feed show of nodes, devices, sessions and
 *            alerts (JSON built from the state)
 * One thread: every function here runs on the lws service thread. */
#ifndef MSRS_GATEWAY_H
#define MSRS_GATEWAY_H
#include "admit.h"
#include "cli.h"
#include "ev.h"
#include "security.h"

#include <libwebsockets.h>
#include <limits.h>

#define GW_BODY_MAX      65536   /* a request body; more gets 413 */
#define GW_DRAIN_MAX     1048576 /* a body over GW_BODY_MAX up to this is read before the 413 */
#define GW_HISTORY       60      /* clock points kept per device (the page's plot) */
#define GW_SPARK         32      /* values kept per live stream (the page's sparkline) */
#define GW_LIVE_MS       1000    /* sessions whose live counts changed are published this often */
#define GW_FEED_MSG_MAX  4096    /* what a feed client may send us (it sends nothing useful) */
#define GW_COOKIE        "msrs_token"
#define GW_SESSION_PAGES 200 /* sessions listed by GET /api/v1/sessions, newest first */

typedef struct gw_counters {
    int64_t requests, unauthorized, forbidden, bad, actions, files;
    int64_t feed_clients, feed_messages, feed_snapshots, feed_refused;
    int64_t live_records, live_skipped;
} gw_counters;

/* A change published to the feed: its revision and its text, which has
 * LWS_PRE bytes before it for lws_write (buf is the allocation). */
typedef struct gw_change {
    int64_t rev;
    unsigned char *buf;
    char *text;
    size_t len;
} gw_change;

typedef struct gw_live gw_live;

typedef struct gw_gateway {
    cli_tls tls;
    cli_auth auth; /* operators' tokens (auth.key_file) */
    char host[128];
    int port;
    char web_root[PATH_MAX];    /* gateway.web_root: index.html, app.js, ... */
    char archive_dir[PATH_MAX]; /* archive.dir: what /api/v1/archives lists */
    int64_t feed_ms, ring_size, max_feed_clients, clock_stale_ms, alert_window_s, live_enabled;
    int64_t max_connections; /* gateway.max_connections */
    cli_admit admit;         /* the listener's connections (admit.h) */
    ev_conf *conf;           /* borrowed from cli_svc_main: live.c opens its own log with it */
    ev_log *log;
    ev_state *state;
    ev_projection *proj;
    struct lws_context *ctx;
    lws_sorted_usec_list_t tick;
    int caught_up, log_failed;
    /* what changed since the last published change: id -> true */
    json_t *dirty_nodes, *dirty_devices, *dirty_sessions;
    json_t
        *dirty_live; /* sessions whose live counts changed: into dirty_sessions each GW_LIVE_MS */
    int64_t last_live_ms;
    int64_t dirty_newest_ns, dirty_oldest_ns; /* the newest and oldest ce_time folded into them */
    /* per device: clock history [[at_ms, uncertainty_us], ...] and
     * disconnected_at_ns; kept here because the state keeps only the last */
    json_t *history, *disconnected_at;
    json_t *alerts; /* the current alerts (view.c), compared each tick */
    /* sessions this gateway requested that the fold has not reached yet:
     * id -> ms (monotonic) when requested; a second request for one is 409 */
    json_t *requested;
    int64_t rr_cursor; /* the placement rule's, for enrollments */
    gw_live *live;
    /* the feed: the last ring_size changes, oldest first */
    gw_change *ring;
    size_t ring_count, ring_head;
    int64_t ring_bytes, ring_max_bytes; /* gateway.feed_ring_bytes */
    int64_t rev;
    char epoch[40]; /* this process's feed: a reconnect to another gateway gets a snapshot */
    int64_t last_publish_ms, last_alerts_ms;
    gw_counters n;
    struct cli_ops *ops; /* /metrics (ops.listen), or NULL */
} gw_gateway;

/* Who asks: an operator (kind "operator", role viewer/operator/admin), or
 * anyone with every role when auth.required = false. */
typedef struct gw_who {
    int known;
    cli_principal p;
} gw_who;

/* --- view.c: JSON of the state, new references owned by the caller --- */
json_t *gw_view_node(gw_gateway *g, const char *node_id);
json_t *gw_view_device(gw_gateway *g, const char *device_id);
/* detail: 1 with per-node reports, streams and the sync group (the
 * session page), 0 the list's fields */
json_t *gw_view_session(gw_gateway *g, const char *session_id, int detail);
json_t *gw_view_nodes(gw_gateway *g);
json_t *gw_view_devices(gw_gateway *g);
json_t *gw_view_sessions(gw_gateway *g, int detail);
/* The alerts now (nodes expired or slowing their devices, devices
 * disconnected, clocks stale, sessions incomplete), in the state's order of
 * nodes, then devices, then sessions. */
json_t *gw_view_alerts(gw_gateway *g, int64_t now_ns);
/* The record's key (its node, device or session id) into buf; returns buf. */
const char *gw_event_key(const ev_event *ev, char buf[EV_ID_MAX]);
/* Records a folded event's trace in the gateway's own per-device history
 * (clock points, when a device disconnected). */
void gw_view_note(gw_gateway *g, const ev_event *ev);

/* --- live.c --- */
/* Starts reading samples and media from `from_ms` (ms since the epoch). 0
 * or -1 (errstr). */
int gw_live_new(gw_live **out, const ev_conf *conf, int64_t from_ms, char *errstr,
                size_t errstr_size);
void gw_live_destroy(gw_live *l);
/* Reads what is there for at most budget_ms: records of sessions state
 * has and that have not stopped are counted into their streams. The
 * sessions whose counts changed are added to dirty (id -> true). 0, or the
 * log's error. */
int gw_live_step(gw_live *l, const ev_state *state, int64_t budget_ms, json_t *dirty,
                 gw_counters *n, char *errstr, size_t errstr_size);
/* {"DEVICE/STREAM": {"samples": n, "bytes": n, "spark": [...]}} of a
 * session (borrowed; NULL when none was counted). */
const json_t *gw_live_session(const gw_live *l, const char *session_id);
/* Forgets a session's counts (it stopped: its CollectionStopped says). */
void gw_live_forget(gw_live *l, const char *session_id);

/* --- feed.c --- */
/* Publishes msg (stolen) as the next change: it gets the next revision. */
void gw_feed_publish(gw_gateway *g, json_t *msg);
/* The whole view as one message: {"type": "snapshot", ...}. New reference. */
json_t *gw_feed_snapshot(gw_gateway *g);
/* The change after rev, or NULL when rev is the newest. *gone = 1 when
 * the ring no longer holds it (the client needs a snapshot). The change is
 * the ring's: valid until the next gw_feed_publish. */
const gw_change *gw_feed_next(const gw_gateway *g, int64_t rev, int *gone);
void gw_feed_free(gw_gateway *g);

/* --- api.c --- */
/* Answers one API request (path below /api/v1, query without '?', body
 * may be NULL). Returns the HTTP status, *reply a new JSON object. When
 * the answer is a file (an archive's), *file is set to its path
 * (malloc'd) and *reply is NULL. */
int gw_api_handle(gw_gateway *g, const gw_who *who, const char *method, const char *path,
                  const char *body, size_t len, json_t **reply, char **file);
/* Checks token: 0 and *who filled, or -1 with why. */
int gw_auth(gw_gateway *g, const char *token, gw_who *who, const char **why);

/* --- http.c --- */
int gw_http_start(gw_gateway *g, char *errstr, size_t errstr_size);
/* Asks every feed client that is behind to be written to. */
void gw_http_feed_wake(gw_gateway *g);
void gw_http_stop(gw_gateway *g);

#endif
