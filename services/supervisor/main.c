/* msrs-supervisor — the node registry and plan service (docs/control.md).
 *
 * HTTP (http.c): POST /v1/nodes/register, /v1/nodes/plan,
 * /v1/nodes/heartbeat, /v1/devices/place, /v1/time; GET /v1/nodes.
 * Its registry is a projection of the nodes and devices topics, folded from
 * the start of the log each time it starts (restart it and it rebuilds);
 * what it emits it also applies at once, so an answer never contradicts
 * the request before it (the reducers ignore the event id when the log
 * brings it back). Several supervisors may run: they compete with
 * ev_log_lead (a lease row in SQLite, a consumer group in Kafka) and only
 * the leader answers node requests, expires silent nodes and publishes
 * PresenceSnapshot; the others answer 503 not_leader, naming the leader
 * when the log knows it. */
#include "supervisor.h"

#include "discovery.h"
#include "ops.h"
#include "rxstamp.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TICK_US 20000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: msrs-supervisor --log URI [--listen HOST:PORT] [--node-id ID] [options]\n"
            "The node registry and plan service: agents register, fetch their plan and\n"
            "heartbeat over HTTP (docs/control.md); nodes silent past their TTL are expired.\n\n"
            "  --listen HOST:PORT  default 127.0.0.1:8610 (config supervisor.listen)\n"
            "  --node-id ID        this supervisor's id (config supervisor.node_id; default\n"
            "                      the host name)\n" CLI_COMMON_HELP
            "\nconfig keys (defaults): supervisor.ttl_ms (6000: a node silent this long may be\n"
            "expired), supervisor.phi_expire (8: ...when its silence's phi, by its heartbeats'\n"
            "history, reaches this), supervisor.phi_suspect (3: stale in presence),\n"
            "supervisor.heartbeat_ms (1000: the plan's heartbeat interval),\n"
            "supervisor.presence_ms (2000: PresenceSnapshot period), supervisor.lease_ms (3000:\n"
            "leadership TTL; at least 6000 on Kafka), supervisor.services (devices,clock: what a\n"
            "recorder runs), supervisor.advertise (https://LISTEN: the address agents are told),\n"
            "scaling.max_devices_per_node (0: the node's own limit), scaling.strategy\n"
            "(least_loaded | round_robin), scaling.node_bandwidth_bytes_per_s (125000000: what\n"
            "least_loaded counts a node's device traffic against; 0: not counted),\n"
            "discovery.port (8611: UDP, answers agents' discovery queries for this log's topic\n"
            "prefix; 0: none), supervisor.max_nodes (4096 live), supervisor.max_connections\n"
            "(max_nodes + 256, counted from accept; docs/security.md),\n"
            "supervisor.max_registrations_per_s (100), tls.cert, tls.key, tls.plain,\n"
            "auth.key_file (nodes' and operators' tokens are checked against it;\n"
            "docs/security.md), auth.revoked_file, auth.required\n"
            "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

/* Queues a node record on the log and applies it to the registry at once.
 * id NULL: a new one. It does not wait for the log's acknowledgement: one
 * thread serves every node, and waiting per request (a flush each) let 64
 * nodes' heartbeats queue past their TTL on a busy machine (bench_nodes).
 * Every node request is repeated (heartbeats) or repeatable, so a record
 * lost in a crash is re-established: the next heartbeat gets 404 and the
 * node registers again. The log is flushed at exit. */
static int emit_apply(sv_supervisor *s, const char *type, const char *key, json_t *value,
                      const char *id, char *err, size_t err_size)
{
    char new_id[EV_ID_MAX];
    const ev_schema *schema = ev_schema_by_name(type);
    ev_event ev = {.schema = schema, .time_ns = ev_now_ns()};
    if (!id) {
        ev_new_id(new_id);
        id = new_id;
    }
    snprintf(ev.id, sizeof(ev.id), "%s", id);
    ev_emit_opts o = {.id = id, .time_ns = ev.time_ns};
    int rc = ev_log_emit_json(s->log, schema, key, value, &o, err, err_size);
    if (rc)
        return rc;
    if (ev_codec_value(s->codec, schema, &ev.value) == 0 &&
        ev_value_from_json(ev.value, value, err, err_size) == 0)
        ev_state_apply(s->state, &ev, err, err_size);
    return 0;
}

/* 1 when node_id is registered and not expired (ev_node_known). */
static int known(sv_supervisor *s, const char *node_id, ev_node *node)
{
    return ev_state_node(s->state, node_id, node) && ev_node_known(node);
}

/* The rule's parameters: this supervisor's defaults and leadership. */
static ev_node_params node_params(const sv_supervisor *s)
{
    return (ev_node_params){.ttl_ns = s->ttl_ms * 1000000,
                            .heartbeat_ns = s->heartbeat_ms * 1000000,
                            .lead_since_ns = s->leading_since_ns,
                            .listening_since_ns = s->listening_since_ns,
                            .phi_suspect = s->phi_suspect,
                            .phi_expire = s->phi_expire};
}

/* The body as a JSON object with a valid node_id, or an error reply. */
static json_t *parse_node_request(const char *body, size_t len, const char **node_id,
                                  json_t **reply)
{
    json_error_t je;
    json_t *req = json_loadb(body, len, 0, &je);
    if (!req || !json_is_object(req)) {
        *reply =
            req ? cli_json_error("bad_json", "expected a JSON object")
                : cli_json_error("bad_json", "line %d column %d: %s", je.line, je.column, je.text);
        json_decref(req);
        return NULL;
    }
    *node_id = json_string_value(json_object_get(req, "node_id"));
    if (!ev_id_valid(*node_id)) {
        *reply = cli_json_error("invalid", "field node_id: expected 1-63 of [A-Za-z0-9._:-]");
        json_decref(req);
        return NULL;
    }
    return req;
}

static int fail_log(const char *err, json_t **reply)
{
    fprintf(stderr, "msrs-supervisor: %s\n", err);
    *reply = cli_json_error("log_failed", "%s", err);
    return 500;
}

static int do_register(sv_supervisor *s, json_t *req, const char *node_id, json_t **reply)
{
    char err[512];
    json_t *caps = json_object_get(req, "caps");
    if (!caps)
        caps = json_object_get(req, "capabilities");
    json_t *rec = json_pack(
        "{s:s, s:s, s:s, s:o, s:I, s:s, s:I, s:I, s:s}", "node_id", node_id, "hostname",
        json_string_value(json_object_get(req, "hostname")) ?: "", "address",
        json_string_value(json_object_get(req, "address")) ?: "", "capabilities",
        json_is_array(caps) ? json_incref(caps) : json_array(), "max_devices",
        (json_int_t)json_integer_value(json_object_get(req, "max_devices")), "version",
        json_string_value(json_object_get(req, "version")) ?: "", "cpu_cores",
        (json_int_t)json_integer_value(json_object_get(req, "cpu_cores")), "mem_total_bytes",
        (json_int_t)json_integer_value(json_object_get(req, "mem_total_bytes")), "incarnation",
        json_string_value(json_object_get(req, "incarnation")) ?: "");
    ev_node node;
    int was = ev_state_node(s->state, node_id, &node);
    if (was && ev_node_known(&node) && ev_state_node_matches(s->state, node_id, rec)) {
        /* registering again, nothing changed (its heartbeat got a 404 from
         * a supervisor that had not caught up, or it retried): no record */
        json_decref(rec);
        json_object_set_new(s->heard, node_id, json_integer(ev_now_ns()));
        s->n.unchanged++;
        *reply = json_pack("{s:b, s:s, s:s, s:b}", "registered", 1, "node_id", node_id,
                           "supervisor", s->node_id, "unchanged", 1);
        return 200;
    }
    int back =
        was && node.state == EV_NODE_EXPIRED && *node.incarnation &&
        strcmp(node.incarnation, json_string_value(json_object_get(rec, "incarnation"))) == 0;
    int rc = emit_apply(s, "NodeRegistered", node_id, rec, NULL, err, sizeof(err));
    json_decref(rec);
    if (rc) {
        *reply = cli_json_error(rc == EV_ERR_INVALID ? "invalid" : "log_failed", "%s", err);
        return rc == EV_ERR_INVALID ? 400 : 500;
    }
    json_object_set_new(s->heard, node_id, json_integer(ev_now_ns()));
    s->n.registered++;
    s->n.revived += back;
    fprintf(stderr, "msrs-supervisor: node %s registered (%s)%s\n", node_id,
            json_string_value(json_object_get(req, "address")) ?: "no address",
            back ? ": back after its expiry as the same process, with its devices" : "");
    *reply =
        json_pack("{s:b, s:s, s:s}", "registered", 1, "node_id", node_id, "supervisor", s->node_id);
    return 200;
}

static int do_plan(sv_supervisor *s, const char *node_id, json_t **reply)
{
    char err[512];
    ev_node node;
    if (!known(s, node_id, &node)) {
        *reply =
            cli_json_error("unknown_node", "node %s is not registered: register first", node_id);
        return 404;
    }
    int64_t max = ev_place_limit(node.max_devices, s->place.max_per_node);
    json_t *services = json_deep_copy(s->services);
    /* a node with cameras runs msrs-capture (docs/control.md, The plan) */
    if (ev_state_node_capability(s->state, node_id, "camera"))
        json_array_append_new(services, json_string("capture"));
    json_t *plan =
        json_pack("{s:s, s:s, s:o, s:I, s:I, s:I}", "node_id", node_id, "role", "recorder",
                  "services", services, "ttl_ms", (json_int_t)s->ttl_ms, "heartbeat_interval_ms",
                  (json_int_t)s->heartbeat_ms, "max_devices", (json_int_t)max);
    if (ev_state_node_matches(s->state, node_id, plan)) {
        s->n.unchanged++; /* the plan it has: no record */
    } else if (emit_apply(s, "NodePlanned", node_id, plan, NULL, err, sizeof(err))) {
        json_decref(plan);
        return fail_log(err, reply);
    } else {
        s->n.planned++;
    }
    json_object_set_new(plan, "ttl", json_integer(s->ttl_ms)); /* DESIGN.md's name */
    *reply = plan;
    return 200;
}

/* The node a device refused by exclude should go to: {node_id, address}
 * or null. */
static json_t *placement(sv_supervisor *s, const char *exclude)
{
    char id[64];
    if (ev_place_choose(s->state, &s->place, exclude, &s->rr_cursor, id, sizeof(id)))
        return json_null();
    ev_node node;
    return json_pack("{s:s, s:s}", "node_id", id, "address",
                     ev_state_node(s->state, id, &node) ? node.address : "");
}

static int do_heartbeat(sv_supervisor *s, json_t *req, const char *node_id, json_t **reply)
{
    char err[512];
    ev_node node;
    if (!known(s, node_id, &node)) {
        *reply = cli_json_error("unknown_node",
                                "node %s is not registered (or expired): register again", node_id);
        return 404;
    }
    static const char *const fields[] = {
        "services_running",    "versions",        "device_count",         "cpu_load",
        "mem_used_bytes",      "clock_offset_ns", "clock_uncertainty_ns", "clock_rtt_ns",
        "mem_available_bytes", "rx_bytes_per_s",  "slowing_devices",      "log_backlog_bytes"};
    json_t *hb = json_pack("{s:s}", "node_id", node_id);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (json_object_get(req, fields[i]))
            json_object_set(hb, fields[i], json_object_get(req, fields[i]));
    int rc = emit_apply(s, "NodeHeartbeat", node_id, hb, NULL, err, sizeof(err));
    json_decref(hb);
    if (rc) {
        *reply = cli_json_error(rc == EV_ERR_INVALID ? "invalid" : "log_failed", "%s", err);
        return rc == EV_ERR_INVALID ? 400 : 500;
    }
    json_object_set_new(s->heard, node_id, json_integer(ev_now_ns()));
    s->n.heartbeats++;
    *reply = json_pack("{s:b, s:o}", "ok", 1, "redirect", placement(s, node_id));
    return 200;
}

/* GET /v1/nodes: the pool as this supervisor's registry holds it. */
static json_t *pool(sv_supervisor *s)
{
    /* output: every node as the state shows it, with its connected devices */
    json_t *all = ev_state_to_json(s->state);
    json_t *nodes = json_deep_copy(json_object_get(all, "nodes")), *devices = json_object();
    int64_t connected = 0;
    ev_device d;
    json_decref(all);
    for (const char *k = NULL; (k = ev_state_device_next(s->state, k, &d));) {
        if (!d.connected)
            continue;
        json_t *n = json_object_get(nodes, d.node_id);
        connected++;
        json_object_set_new(devices, k, json_string(d.node_id));
        if (n)
            json_object_set_new(
                n, "pool_devices",
                json_integer(json_integer_value(json_object_get(n, "pool_devices")) + 1));
    }
    return json_pack("{s:s, s:b, s:s, s:o, s:o, s:I}", "supervisor", s->node_id, "leading",
                     s->leading, "leader", s->leader, "nodes", nodes, "devices", devices,
                     "device_count", (json_int_t)connected);
}

/* Who may ask what (docs/security.md): a node's token for its own
 * register, plan and heartbeat; a node's or a viewer's (or higher) for the
 * rest. node_only: an operator's token is not enough. 0 allowed, or the
 * status (401 no valid token, 403 the wrong one) with *reply. Everyone
 * when auth.required = false. */
static int authorize(sv_supervisor *s, const char *path, const char *token, int node_only,
                     cli_principal *who, json_t **reply)
{
    const char *why;
    memset(who, 0, sizeof(*who));
    if (!s->auth.enabled)
        return 0;
    if (!token || cli_auth_token_check(&s->auth, token, who, &why)) {
        s->n.unauthorized++;
        *reply = cli_json_error("unauthorized", "%s",
                                token ? why
                                      : "expected Authorization: Bearer TOKEN (a node's or an "
                                        "operator's token)");
        return 401;
    }
    int node = strcmp(who->kind, "node") == 0;
    if (node_only ? !node : !node && cli_auth_role_rank(who->role) < 1) {
        s->n.forbidden++;
        *reply =
            cli_json_error("forbidden", "%s: expected %s, got %s %s's", path,
                           node_only ? "the node's own token" : "a node's or an operator's token",
                           who->kind, who->id);
        return 403;
    }
    return 0;
}

/* The number of nodes registered and not expired. */
static int64_t live_nodes(sv_supervisor *s)
{
    int64_t n = 0;
    ev_node node;
    for (const char *k = NULL; (k = ev_state_node_next(s->state, k, &node));)
        n += ev_node_known(&node);
    return n;
}

/* Bounds on registering (supervisor.max_registrations_per_s, a bucket of a
 * second's worth, refused attempts included; supervisor.max_nodes live at once): 0, or 429 / 503
 * with *reply. A node registered and not expired registers again freely. */
static int admit_registration(sv_supervisor *s, const char *node_id, json_t **reply)
{
    ev_node node;
    if (known(s, node_id, &node))
        return 0; /* registering again (a restarted agent): no new state */
    double rate = (double)s->max_registrations_per_s;
    if (!cli_bucket_take(&s->registrations, rate, rate, ev_now_ns())) {
        s->n.rate_limited++;
        *reply = cli_json_error("rate_limited", "more than %lld registrations a second; try again",
                                (long long)s->max_registrations_per_s);
        json_object_set_new(*reply, "retry_after_ms",
                            json_integer((json_int_t)cli_bucket_wait_ms(&s->registrations, rate)));
        return 429;
    }
    if (live_nodes(s) >= s->max_nodes) {
        s->n.refused++;
        *reply =
            cli_json_error("too_many_nodes", "%lld nodes are registered (supervisor.max_nodes)",
                           (long long)s->max_nodes);
        return 503;
    }
    return 0;
}

int sv_handle(sv_supervisor *s, const char *method, const char *path, const char *token,
              const char *body, size_t len, int64_t received_ns, json_t **reply)
{
    int status;
    cli_principal who;
    int node_route = strcmp(method, "POST") == 0 && strncmp(path, "/v1/nodes/", 10) == 0;
    if ((status = authorize(s, path, token, node_route, &who, reply)))
        return status;
    if (strcmp(method, "GET") == 0 && strcmp(path, "/v1/nodes") == 0) {
        if (!s->caught_up) { /* a partial registry is not the truth */
            s->n.refused++;
            *reply = cli_json_error("starting", "folding the log; try again");
            return 503;
        }
        *reply = pool(s);
        return 200;
    }
    if (strcmp(method, "POST") != 0) {
        *reply = cli_json_error("not_found",
                                "%s %s: expected POST /v1/nodes/{register,plan,heartbeat}, "
                                "/v1/devices/place, /v1/time or GET /v1/nodes",
                                method, path);
        return 404;
    }
    if (strcmp(path, "/v1/time") == 0) {
        /* a clock probe: t2 when the request arrived, t3 when the answer
         * leaves (http.c stamps it) */
        json_t *req = json_loadb(body, len, 0, NULL);
        json_t *t1 = json_object_get(req, "t1");
        if (!json_is_integer(t1)) {
            json_decref(req);
            *reply =
                cli_json_error("invalid", "field t1: expected an integer (ns, the node's clock)");
            return 400;
        }
        *reply = json_pack("{s:O, s:I, s:I}", "t1", t1, "t2", (json_int_t)received_ns, "t3",
                           (json_int_t)0);
        json_decref(req);
        return 200;
    }
    static const char *const routes[] = {"/v1/nodes/register", "/v1/nodes/plan",
                                         "/v1/nodes/heartbeat", "/v1/devices/place"};
    size_t route = 0;
    while (route < 4 && strcmp(path, routes[route]) != 0)
        route++;
    if (route == 4) {
        *reply = cli_json_error("not_found", "POST %s: no such endpoint", path);
        return 404;
    }
    if (!s->caught_up || !s->leading) {
        s->n.refused++;
        *reply = s->caught_up ? cli_json_error("not_leader", "this supervisor does not lead")
                              : cli_json_error("starting", "folding the log; try again");
        if (*s->leader && s->caught_up)
            json_object_set_new(*reply, "leader", json_string(s->leader));
        return 503;
    }
    if (route == 3) {
        json_t *r = placement(s, NULL);
        if (json_is_null(r)) {
            *reply = cli_json_error("pool_full", "no node has room for another device");
            json_decref(r);
            return 503;
        }
        *reply = r;
        return 200;
    }
    const char *node_id;
    json_t *req = parse_node_request(body, len, &node_id, reply);
    if (!req) {
        s->n.bad++;
        return 400;
    }
    if (s->auth.enabled && strcmp(who.id, node_id) != 0) { /* a node speaks for itself only */
        s->n.forbidden++;
        *reply = cli_json_error("forbidden", "%s: expected node %s's token, got node %s's", path,
                                node_id, who.id);
        json_decref(req);
        return 403;
    }
    if (route == 0 && (status = admit_registration(s, node_id, reply))) {
        json_decref(req);
        return status;
    }
    status = route == 0   ? do_register(s, req, node_id, reply)
             : route == 1 ? do_plan(s, node_id, reply)
                          : do_heartbeat(s, req, node_id, reply);
    json_decref(req);
    return status;
}

/* ----------------------------------------------------------------- tick */

static void expire_silent(sv_supervisor *s, int64_t now)
{
    const ev_node_params params = node_params(s);
    ev_node n;
    json_t *due = json_array();
    int64_t held = 0;
    for (const char *k = NULL; (k = ev_state_node_next(s->state, k, &n));) {
        int64_t heard = json_integer_value(json_object_get(s->heard, k));
        int64_t silent = ev_node_silence_ns(&n, heard, &params, now);
        if (ev_node_expire_due(&n, heard, &params, now)) {
            json_array_append_new(due, json_pack("{s:s, s:I}", "node_id", k, "last_seen_ns",
                                                 (json_int_t)n.last_seen_ns));
            fprintf(stderr,
                    "msrs-supervisor: node %s silent %.1f s, phi %.1f (its heartbeats every "
                    "%.2f s, deviation %.2f s): expired\n",
                    k, (double)silent / 1e9, ev_node_phi(&n, &params, silent),
                    (double)n.hb_mean_ns / 1e9, (double)n.hb_dev_ns / 1e9);
        } else if (ev_node_known(&n) && silent > ev_node_ttl_ns(&n, &params)) {
            held++; /* past its TTL, but its history explains the silence */
        }
    }
    s->nodes_held = held;
    /* Emitted once the state is read: emit_apply changes it. */
    size_t i;
    json_t *x;
    json_array_foreach(due, i, x)
    {
        char id[EV_ID_MAX], err[512];
        const char *node = json_string_value(json_object_get(x, "node_id"));
        int64_t last = json_integer_value(json_object_get(x, "last_seen_ns"));
        /* Deterministic: two leaders (or a restart) expire a node once. */
        ev_event_id(id, "expire/%s/%lld", node, (long long)last);
        json_object_set_new(x, "reason", json_string("ttl"));
        if (emit_apply(s, "NodeExpired", node, x, id, err, sizeof(err)) == 0) {
            s->n.expired++;
        } else {
            fprintf(stderr, "msrs-supervisor: expire %s: %s\n", node, err);
        }
    }
    json_decref(due);
}

static void publish_presence(sv_supervisor *s, int64_t now)
{
    char err[512];
    const ev_node_params params = node_params(s);
    json_t *list = json_array();
    int64_t total = 0;
    ev_node n;
    for (const char *k = NULL; (k = ev_state_node_next(s->state, k, &n));) {
        ev_node_presence p = ev_node_presence_of(&n, &params, now);
        if (p == EV_PRESENCE_EXPIRED)
            continue; /* bounded by supervisor.max_nodes, whatever was ever registered */
        total += n.device_count;
        json_array_append_new(list, json_pack("{s:s, s:s, s:I, s:I}", "node_id", k, "state",
                                              ev_node_presence_name(p), "device_count",
                                              (json_int_t)n.device_count, "last_seen_ns",
                                              (json_int_t)n.last_seen_ns));
    }
    json_t *snap = json_pack("{s:s, s:o, s:I, s:s}", "node_id", s->node_id, "nodes", list,
                             "device_count", (json_int_t)total, "address", s->address);
    if (ev_log_emit_json(s->log, ev_schema_by_name("PresenceSnapshot"), s->node_id, snap, NULL, err,
                         sizeof(err)))
        fprintf(stderr, "msrs-supervisor: presence: %s\n", err);
    else
        s->n.presence++;
    json_decref(snap);
}

static void lead(sv_supervisor *s, int64_t now)
{
    char err[512];
    int rc = ev_log_lead(s->log, "supervisor", s->holder, s->lease_ms, s->leader, sizeof(s->leader),
                         err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "msrs-supervisor: leadership: %s\n", err);
        rc = 0; /* cannot renew: act as a follower */
    }
    if (rc && !s->leading) {
        s->leading_since_ns = now;
        s->listening_since_ns = now;
        fprintf(stderr, "msrs-supervisor: %s leads\n", s->holder);
    } else if (!rc && s->leading) {
        fprintf(stderr, "msrs-supervisor: %s no longer leads (leader: %s)\n", s->holder,
                *s->leader ? s->leader : "unknown");
    }
    s->leading = rc;
}

void sv_discovery_answer(sv_supervisor *s)
{
    struct sockaddr_in from;
    json_t *q;
    while ((q = dsc_recv(s->discovery_fd, "discover", s->prefix, &from, &s->n.discovery_skipped))) {
        json_t *a = json_pack("{s:s, s:i, s:s, s:s, s:s, s:b}", "msrs", "supervisor", "v", 1,
                              "prefix", s->prefix, "node_id", s->node_id, "url", s->address,
                              "leading", s->leading && s->caught_up);
        const char *nonce = json_string_value(json_object_get(q, "nonce"));
        char text[DSC_MAX], mac[CLI_AUTH_HEX];
        if (s->auth.enabled && nonce && strlen(nonce) == 32) {
            /* signed over the query's nonce: docs/control.md, Discovery */
            json_object_set_new(a, "nonce", json_string(nonce));
            if (dsc_signed_text(a, text, sizeof(text)) == 0) {
                cli_auth_mac(s->auth.key, "discovery", text, mac);
                json_object_set_new(a, "mac", json_string(mac));
            }
        }
        if (dsc_send(s->discovery_fd, &from, a) == 0)
            s->n.discovery_answers++;
        json_decref(a);
        json_decref(q);
    }
}

/* The supervisor's metrics (ops.h; docs/operations.md, "Metrics"). */
static void publish_metrics(sv_supervisor *s, int64_t now)
{
    cli_buf b = {0};
    const sv_counters *n = &s->n;
    cli_metric(&b, "msrs_supervisor_leading", "gauge", "1 while this supervisor leads",
               s->leading && s->caught_up);
    cli_admit_metrics(&b, "msrs_supervisor", &s->admit);
    cli_metric(&b, "msrs_supervisor_requests_total", "counter", "HTTP requests",
               (double)n->requests);
    cli_metric(&b, "msrs_supervisor_registrations_total", "counter", "node registrations",
               (double)n->registered);
    cli_metric(&b, "msrs_supervisor_heartbeats_total", "counter", "node heartbeats answered",
               (double)n->heartbeats);
    cli_metric(&b, "msrs_supervisor_expired_total", "counter", "nodes this supervisor expired",
               (double)n->expired);
    cli_metric(&b, "msrs_supervisor_nodes_held", "gauge",
               "nodes silent past their TTL and not expired: their heartbeats' history explains "
               "the silence (phi below supervisor.phi_expire)",
               (double)s->nodes_held);
    cli_metric(&b, "msrs_supervisor_revived_total", "counter",
               "nodes that registered again after expiry as the same process: their devices "
               "returned to the pool",
               (double)n->revived);
    cli_metric(&b, "msrs_supervisor_unchanged_total", "counter",
               "register and plan requests that changed nothing: answered without a record",
               (double)n->unchanged);
    cli_metric(&b, "msrs_supervisor_deaf_total", "counter",
               "times this supervisor could not hear nodes for a heartbeat interval (its loop "
               "stalled, or its registry was behind the log): expiry waited a TTL",
               (double)n->deaf_periods);
    cli_metric(&b, "msrs_supervisor_max_tick_gap_seconds", "gauge",
               "the longest stall of this supervisor's loop", (double)s->max_tick_gap_ms / 1e3);
    cli_metric(&b, "msrs_supervisor_refused_total", "counter",
               "requests refused (unauthorized, forbidden, rate-limited, bounds)",
               (double)(n->refused + n->unauthorized + n->forbidden + n->rate_limited));
    cli_metric(&b, "msrs_supervisor_records_total", "counter", "records folded from the log",
               (double)ev_projection_records(s->proj));
    json_t *view = ev_state_to_json(s->state);
    cli_state_metrics(&b, view, now);
    json_decref(view);
    cli_lag_metric(&b, s->log, s->proj);
    cli_ops_publish(s->ops, &b, s->caught_up);
    cli_buf_free(&b);
}

/* This supervisor could not hear nodes until now: its loop stalled (no
 * tick for a heartbeat interval: heartbeats waited in its sockets) or its
 * fold is behind the log. Nodes are not expired for a silence it caused. */
static void deaf_until_now(sv_supervisor *s, int64_t now, const char *why)
{
    if (now - s->listening_since_ns > s->heartbeat_ms * 1000000) { /* a new deaf period */
        s->n.deaf_periods++;
        if (s->leading)
            fprintf(stderr,
                    "msrs-supervisor: %s: no node expires for a TTL from now (four TTLs of "
                    "silence still expire it)\n",
                    why);
    }
    s->listening_since_ns = now;
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    sv_supervisor *s = lws_container_of(sul, sv_supervisor, tick);
    int64_t gap = ev_mono_ms() - s->last_tick_ms;
    if (s->last_tick_ms && gap > s->max_tick_gap_ms)
        s->max_tick_gap_ms = gap;
    if (s->last_tick_ms && gap > s->heartbeat_ms) {
        char why[96];
        snprintf(why, sizeof(why), "this supervisor's loop stalled %lld ms", (long long)gap);
        deaf_until_now(s, ev_now_ns(), why);
    }
    int behind = 1;
    for (int i = 0; i < 20000; i++) {
        char err[512];
        int rc = ev_projection_step(s->proj, 0, err, sizeof(err));
        if (rc == EV_ERR_END) {
            if (!s->caught_up) {
                fprintf(stderr, "msrs-supervisor: registry folded from the log: %lld records\n",
                        (long long)ev_projection_records(s->proj));
                cli_ready("registry caught up with the log");
            }
            s->caught_up = 1;
            behind = 0;
            break;
        }
        if (rc == EV_ERR_FATAL) { /* e.g. a malformed SQLite file: said once, stop */
            fprintf(stderr, "msrs-supervisor: %s\n", err);
            s->log_failed = 1;
            cli_stop = 1;
            lws_cancel_service(s->ctx); /* wake the loop: no tick comes again */
            return;
        }
        if (rc) {
            if (rc != EV_ERR_TIMED_OUT)
                fprintf(stderr, "msrs-supervisor: %s\n", err);
            behind = 0; /* nothing more to read now */
            break;
        }
    }
    int64_t now = ev_now_ns(), mono = ev_mono_ms();
    if (behind) /* more records than a tick folds: the registry is behind */
        deaf_until_now(s, now, "the registry is behind the log (a tick folded 20000 records)");
    /* Compete only with the whole log folded: a leader acts on the registry. */
    if (s->caught_up && mono - s->last_lead_ms >= s->lease_ms / 4) {
        s->last_lead_ms = mono;
        lead(s, now);
    }
    if (cli_ops_due(s->ops))
        publish_metrics(s, now);
    if (s->leading) {
        expire_silent(s, now);
        if (mono - s->last_presence_ms >= s->presence_ms) {
            s->last_presence_ms = mono;
            publish_presence(s, now);
        }
    }
    s->last_tick_ms = ev_mono_ms();
    lws_sul_schedule(s->ctx, 0, &s->tick, on_tick, TICK_US);
}

static int load_config(sv_supervisor *s, const ev_conf *conf, const char *listen, const char *node)
{
    const char *l = listen ? listen : ev_conf_get(conf, "supervisor.listen", "127.0.0.1:8610");
    if (cli_host_port(l, s->host, sizeof(s->host), &s->port)) {
        fprintf(stderr, "msrs-supervisor: listen '%s': expected HOST:PORT\n", l);
        return -1;
    }
    int64_t phi_suspect, phi_expire;
    const cli_int_key ints[] = {
        {"supervisor.ttl_ms", 6000, &s->ttl_ms, 100},
        {"supervisor.heartbeat_ms", 1000, &s->heartbeat_ms, 10},
        {"supervisor.presence_ms", 2000, &s->presence_ms, 10},
        {"supervisor.lease_ms", 3000, &s->lease_ms, 100},
        {"scaling.max_devices_per_node", 0, &s->place.max_per_node, 0},
        {"scaling.node_bandwidth_bytes_per_s", 125000000, &s->place.bandwidth_bytes_per_s, 0},
        {"discovery.port", DSC_PORT, &s->discovery_port, 0},
        {"supervisor.max_nodes", 4096, &s->max_nodes, 1},
        {"supervisor.max_registrations_per_s", 100, &s->max_registrations_per_s, 1},
        {"supervisor.phi_suspect", 3, &phi_suspect, 1},
        {"supervisor.phi_expire", 8, &phi_expire, 1}};
    if (cli_conf_ints(conf, ints, sizeof(ints) / sizeof(ints[0]), "msrs-supervisor"))
        return -1;
    s->phi_suspect = (double)phi_suspect;
    s->phi_expire = (double)phi_expire;
    char err[256];
    /* its range is checked where it is used (cli_admit_init) */
    if (ev_conf_get_int(conf, "supervisor.max_connections", s->max_nodes + 256, &s->max_connections,
                        err, sizeof(err))) {
        fprintf(stderr, "msrs-supervisor: %s\n", err);
        return -1;
    }
    if (s->discovery_port > 65535) {
        fprintf(stderr,
                "msrs-supervisor: config discovery.port (%lld): expected a UDP port, or "
                "0 for none\n",
                (long long)s->discovery_port);
        return -1;
    }
    if (s->heartbeat_ms >= s->ttl_ms) {
        fprintf(stderr,
                "msrs-supervisor: config supervisor.heartbeat_ms (%lld): expected less "
                "than supervisor.ttl_ms (%lld)\n",
                (long long)s->heartbeat_ms, (long long)s->ttl_ms);
        return -1;
    }
    const char *strategy = ev_conf_get(conf, "scaling.strategy", "least_loaded");
    if (strcmp(strategy, "least_loaded") == 0)
        s->place.strategy = EV_PLACE_LEAST_LOADED;
    else if (strcmp(strategy, "round_robin") == 0)
        s->place.strategy = EV_PLACE_ROUND_ROBIN;
    else {
        fprintf(stderr,
                "msrs-supervisor: config scaling.strategy '%s': expected least_loaded "
                "or round_robin\n",
                strategy);
        return -1;
    }
    s->services = json_array();
    char list[512];
    snprintf(list, sizeof(list), "%s", ev_conf_get(conf, "supervisor.services", "devices,clock"));
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        json_array_append_new(s->services, json_string(t));
    const char *id = node ? node : ev_conf_get(conf, "supervisor.node_id", NULL);
    char host[64] = "supervisor";
    if (!id) {
        gethostname(host, sizeof(host) - 1);
        id = host;
    }
    if (!ev_id_valid(id)) {
        fprintf(stderr, "msrs-supervisor: node id '%s': expected 1-63 of [A-Za-z0-9._:-]\n", id);
        return -1;
    }
    snprintf(s->node_id, sizeof(s->node_id), "%s", id);
    const char *adv = ev_conf_get(conf, "supervisor.advertise", NULL);
    if (adv)
        snprintf(s->address, sizeof(s->address), "%s", adv);
    else
        snprintf(s->address, sizeof(s->address), "%s://%s:%d", s->tls.plain ? "http" : "https",
                 s->host, s->port);
    snprintf(s->holder, sizeof(s->holder), "%s@%s", s->node_id, s->address);
    return 0;
}

typedef struct sv_args {
    sv_supervisor *s;
    const char *listen, *node;
} sv_args;

static int on_opt(void *arg, int opt, const char *val)
{
    sv_args *a = arg;
    switch (opt) {
    case 'L': a->listen = val; return 0;
    case 'N': a->node = val; return 0;
    default: return -1;
    }
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    sv_args *a = arg;
    if (cli_tls_load(&a->s->tls, conf, "msrs-supervisor", 1, errstr, errstr_size) ||
        cli_auth_load(&a->s->auth, conf, "msrs-supervisor", errstr, errstr_size))
        return -1;
    if (load_config(a->s, conf, a->listen, a->node))
        return -1; /* said on stderr */
    if (!ev_conf_get(conf, "source", NULL)) {
        char source[128];
        snprintf(source, sizeof(source), "supervisor/%s", a->s->node_id);
        ev_conf_set(conf, "source", source);
    }
    return 0;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    sv_supervisor *s = ((sv_args *)arg)->s;
    int exit_code = CLI_EXIT_OK;
    char err[512];
    s->log = log;
    if (rxstamp_check(err, sizeof(err))) { /* node clock probes' t2 */
        fprintf(stderr, "msrs-supervisor: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    ev_log_topic(s->log, "", s->prefix, sizeof(s->prefix));
    s->discovery_fd = -1;
    if (s->discovery_port &&
        (s->discovery_fd = dsc_socket((int)s->discovery_port, err, sizeof(err))) < 0)
        fprintf(stderr, "msrs-supervisor: %s: agents must be given its address\n", err);
    s->codec = ev_codec_new();
    s->state = ev_state_new();
    s->heard = json_object();
    cli_bucket_init(&s->registrations, (double)s->max_registrations_per_s, ev_now_ns());
    static const char *const topics[] = {"nodes", "devices"};
    ev_projection_opts po = {.on_note = cli_print_note, .note_arg = (void *)"msrs-supervisor"};
    if (cli_ops_start(&s->ops, conf, "msrs-supervisor", err, sizeof(err))) {
        fprintf(stderr, "msrs-supervisor: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
        goto out;
    }
    if (ev_projection_new(&s->proj, s->log, s->state, topics, sizeof(topics) / sizeof(*topics), &po,
                          err, sizeof(err)) ||
        sv_http_start(s, err, sizeof(err))) {
        fprintf(stderr, "msrs-supervisor: %s\n", s->ctx ? "" : err);
        exit_code = s->ctx ? CLI_EXIT_FAIL : CLI_EXIT_USAGE;
        goto out;
    }
    fprintf(stderr,
            "msrs-supervisor: %s on %s, log %s, ttl %lld ms, heartbeat %lld ms, "
            "strategy %s, max %lld devices per node\n",
            s->node_id, s->address, ev_conf_get(conf, "log", ""), (long long)s->ttl_ms,
            (long long)s->heartbeat_ms,
            s->place.strategy == EV_PLACE_ROUND_ROBIN ? "round_robin" : "least_loaded",
            (long long)s->place.max_per_node);
    lws_sul_schedule(s->ctx, 0, &s->tick, on_tick, TICK_US);
    while (!cli_stop)
        if (lws_service(s->ctx, 0) < 0)
            break;
    if (s->log_failed)
        exit_code = CLI_EXIT_FAIL;
out:
    cli_ops_stop(s->ops);
    sv_http_stop(s);
    if (s->leading && ev_log_resign(s->log, "supervisor", s->holder, err, sizeof(err)))
        fprintf(stderr, "msrs-supervisor: resign: %s\n", err);
    if (ev_log_flush(s->log, 10000, err, sizeof(err))) {
        fprintf(stderr, "msrs-supervisor: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
    }
    fprintf(stderr,
            "msrs-supervisor: stopped: %lld requests, %lld registered, %lld planned, "
            "%lld heartbeats, %lld expired, %lld revived, %lld unchanged, %lld deaf, %lld "
            "presence, %lld refused, %lld bad, %lld "
            "unauthorized, %lld forbidden, %lld rate-limited; discovery: %lld answered, %lld "
            "skipped\n",
            (long long)s->n.requests, (long long)s->n.registered, (long long)s->n.planned,
            (long long)s->n.heartbeats, (long long)s->n.expired, (long long)s->n.revived,
            (long long)s->n.unchanged, (long long)s->n.deaf_periods, (long long)s->n.presence,
            (long long)s->n.refused, (long long)s->n.bad, (long long)s->n.unauthorized,
            (long long)s->n.forbidden, (long long)s->n.rate_limited,
            (long long)s->n.discovery_answers, (long long)s->n.discovery_skipped);
    ev_projection_destroy(s->proj);
    json_decref(s->heard);
    cli_auth_free(&s->auth);
    ev_state_destroy(s->state);
    ev_codec_destroy(s->codec);
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'L'},
                                         {"node-id", required_argument, NULL, 'N'},
                                         {NULL, 0, NULL, 0}};
    static sv_supervisor s; /* large; lives as long as the process */
    sv_args a = {.s = &s};
    cli_svc svc = {.name = "msrs-supervisor",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &a};
    int code = cli_svc_main(&svc, argc, argv);
    json_decref(s.services);
    return code;
}
