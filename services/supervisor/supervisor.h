/* supervisor.h — msrs-supervisor internals (prefix sv_): the HTTP server
 * (http.c, libwebsockets) and the registry (main.c): a projection of the
 * nodes and devices topics, the plan, expiry, presence and leadership. One
 * thread: every function here runs on the lws service thread. */
#ifndef MSRS_SUPERVISOR_H
#define MSRS_SUPERVISOR_H
#include "admit.h"
#include "cli.h"
#include "ev.h"
#include "security.h"

#include <libwebsockets.h>

#define SV_BODY_MAX 65536

typedef struct sv_counters {
    int64_t requests, registered, planned, heartbeats, expired, presence, refused, bad;
    int64_t unauthorized, forbidden, rate_limited;
    int64_t discovery_answers, discovery_skipped;
    int64_t unchanged;    /* register or plan requests that changed nothing: no record */
    int64_t revived;      /* nodes back after expiry with the incarnation they had */
    int64_t deaf_periods; /* stalls of this supervisor's loop, or folds behind its log */
} sv_counters;

typedef struct sv_supervisor {
    cli_tls tls;
    cli_auth auth; /* nodes' and operators' tokens (auth.key_file) */
    char host[128];
    int port;
    char node_id[64];
    char address[192]; /* https://host:port, what agents are told */
    char holder[320];  /* node_id@address: the lease holder */
    int64_t ttl_ms, heartbeat_ms, presence_ms, lease_ms, discovery_port;
    int64_t max_nodes, max_registrations_per_s; /* bounds: live nodes, new registrations */
    int64_t max_connections;                    /* supervisor.max_connections */
    cli_admit admit;                            /* the API's connections (admit.h) */
    cli_bucket registrations;                   /* new registrations allowed now */
    ev_place_policy place;
    int64_t rr_cursor;
    json_t *services; /* the plan's services for a recorder */
    ev_log *log;
    ev_codec *codec;
    ev_state *state;
    ev_projection *proj;
    struct lws_context *ctx;
    lws_sorted_usec_list_t tick;
    int leading;
    char leader[600]; /* the holder that leads, when known */
    int64_t leading_since_ns, last_lead_ms, last_presence_ms;
    int64_t listening_since_ns;     /* the latest of leading_since_ns and the end of the last
                                       stall or fold behind the log: nodes are heard from then */
    int64_t last_tick_ms;           /* monotonic: when the previous tick ran */
    int64_t max_tick_gap_ms;        /* the longest stall seen (/metrics) */
    double phi_suspect, phi_expire; /* supervisor.phi_suspect, supervisor.phi_expire */
    int64_t nodes_held; /* silent past their TTL, not expired: their history explains it */
    json_t *heard;      /* node_id -> ns of the last heartbeat this process answered */
    int caught_up;
    int log_failed;   /* the log cannot be read on (EV_ERR_FATAL): stop, exit 1 */
    int discovery_fd; /* UDP, answering agents' queries; -1: none */
    char prefix[128]; /* the log's topic prefix: the queries answered */
    sv_counters n;
    struct cli_ops *ops; /* /metrics (ops.listen), or NULL */
} sv_supervisor;

/* main.c: answers one request. Returns the HTTP status; *reply a new JSON
 * object. token: the request's bearer token (NULL: none). received_ns:
 * when the request was complete (t2 of /v1/time). */
int sv_handle(sv_supervisor *s, const char *method, const char *path, const char *token,
              const char *body, size_t len, int64_t received_ns, json_t **reply);
/* main.c: reads every discovery datagram waiting and answers the queries
 * for this supervisor's prefix with its address and whether it leads. */
void sv_discovery_answer(sv_supervisor *s);

/* http.c */
int sv_http_start(sv_supervisor *s, char *errstr, size_t errstr_size);
void sv_http_stop(sv_supervisor *s);

#endif
