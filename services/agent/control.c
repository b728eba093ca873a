/* control.c — layer 9, the agent's side of the control plane (docs/control.md):
 * register with a supervisor, fetch the plan, apply it (the device endpoint
 * listens once the plan names "devices"), heartbeat at the plan's interval
 * with the node's load and its clock offset to the supervisor (a round of
 * time probes before each heartbeat, the devices' method), register again
 * when the supervisor no longer knows the node (404), and move to the next
 * supervisor of the list when one does not answer or does not lead.
 *
 * HTTP requests are lws client connections on the agent's own loop, one at
 * a time; each carries its ag_http (opaque user data) until it completes
 * or fails. */
#include "control.h"

#include "discovery.h"
#include "endpoint.h"
#include "rxstamp.h"

#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CTL_PROBES         4
#define CTL_RETRY_MS       300
#define CTL_BACKOFF_MAX_MS 2000
#define CTL_ANSWER_MAX     65536 /* a supervisor's answer; more is a failed request */

enum { REQ_REGISTER, REQ_PLAN, REQ_TIME, REQ_HEARTBEAT };
static const char *const req_path[] = {"/v1/nodes/register", "/v1/nodes/plan", "/v1/time",
                                       "/v1/nodes/heartbeat"};

typedef struct ag_http {
    ag_agent *a;
    int kind;
    char *body;
    size_t body_len;
    cli_buf resp;
    int resp_too_large; /* the answer passed CTL_ANSWER_MAX: not kept */
    int status;
    int64_t t1, t4;
} ag_http;

static void http_free(ag_http *h)
{
    free(h->body);
    cli_buf_free(&h->resp);
    free(h);
}

/* host and port of "[http[s]://]HOST:PORT[/...]" (the scheme is tls.plain's); -1 when it is not
 * one. */
static int parse_url(const char *url, char *host, size_t host_size, int *port)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", url);
    char *t = strncmp(buf, "http://", 7) == 0    ? buf + 7
              : strncmp(buf, "https://", 8) == 0 ? buf + 8
                                                 : buf;
    char *slash = strchr(t, '/');
    if (slash)
        *slash = '\0';
    char *colon = strrchr(t, ':');
    if (!colon || colon == t || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535 ||
        (size_t)(colon - t) >= host_size)
        return -1;
    memcpy(host, t, (size_t)(colon - t));
    host[colon - t] = '\0';
    *port = atoi(colon + 1);
    return 0;
}

/* The index of host:port in the list, added when new; -1 when the list is full. */
static int add_supervisor(ag_control *c, const char *host, int port)
{
    for (int i = 0; i < c->url_count; i++)
        if (c->ports[i] == port && strcmp(c->hosts[i], host) == 0)
            return i;
    if (c->url_count == AG_MAX_SUPERVISORS)
        return -1;
    snprintf(c->hosts[c->url_count], sizeof(c->hosts[0]), "%s", host);
    c->ports[c->url_count] = port;
    return c->url_count++;
}

int ag_control_init(ag_control *c, const ev_conf *conf, const char *list, char *errstr,
                    size_t errstr_size)
{
    char buf[1024];
    int64_t wait_ms;
    memset(c, 0, sizeof(*c));
    ev_new_id(c->incarnation);
    c->discovery_fd = -1;
    c->lead_hint = -1;
    snprintf(buf, sizeof(buf), "%s", list ? list : "");
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char host[128];
        int port;
        if (strcmp(t, "discover") == 0) {
            c->discover = 1;
        } else if (parse_url(t, host, sizeof(host), &port) || add_supervisor(c, host, port) < 0) {
            snprintf(errstr, errstr_size,
                     "supervisor '%s': expected https://HOST:PORT or 'discover' (at most %d, "
                     "comma-separated)",
                     t, AG_MAX_SUPERVISORS);
            return -1;
        }
    }
    c->managed = c->discover || c->url_count;
    c->phase = c->url_count ? AG_CTL_REGISTER : AG_CTL_DISCOVER;
    snprintf(c->discovery_targets, sizeof(c->discovery_targets), "%s",
             ev_conf_get(conf, "discovery.targets", DSC_TARGETS));
    if (ev_conf_get_int(conf, "discovery.port", DSC_PORT, &c->discovery_port, errstr,
                        errstr_size) ||
        ev_conf_get_int(conf, "discovery.wait_ms", 300, &wait_ms, errstr, errstr_size))
        return -1;
    if (c->discovery_port <= 0 || c->discovery_port > 65535 || wait_ms < 0) {
        snprintf(errstr, errstr_size,
                 "config discovery.port (%lld) / discovery.wait_ms (%lld): "
                 "expected a UDP port and a wait of 0 ms or more",
                 (long long)c->discovery_port, (long long)wait_ms);
        return -1;
    }
    c->discovery_wait_ns = wait_ms * 1000000;
    return 0;
}

int ag_control_start(ag_agent *a, char *errstr, size_t errstr_size)
{
    ag_control *c = &a->ctl;
    if (!c->discover)
        return 0;
    ev_log_topic(a->log, "", c->prefix, sizeof(c->prefix));
    /* the targets are checked now, not at the first failure */
    if ((c->discovery_fd = dsc_socket(0, errstr, errstr_size)) < 0 ||
        dsc_send_all(c->discovery_fd, c->discovery_targets, (int)c->discovery_port, NULL, errstr,
                     errstr_size) < 0)
        return -1;
    lws_sock_file_fd_type fd = {.filefd = c->discovery_fd};
    if (!lws_adopt_descriptor_vhost(lws_get_vhost_by_name(a->ctx, "default"),
                                    LWS_ADOPT_RAW_FILE_DESC, fd, "msrs-control", NULL)) {
        snprintf(errstr, errstr_size, "discovery: cannot watch the UDP socket");
        return -1;
    }
    return 0;
}

/* Asks every supervisor that hears the targets to answer (on_answers). */
static void discover(ag_agent *a, int64_t now)
{
    ag_control *c = &a->ctl;
    char err[256];
    if (cli_auth_nonce(c->discovery_nonce)) /* fresh per query: an old answer is not replayed */
        snprintf(c->discovery_nonce, sizeof(c->discovery_nonce), "%s", "");
    json_t *q = json_pack("{s:s, s:i, s:s, s:s, s:s}", "msrs", "discover", "v", 1, "prefix",
                          c->prefix, "node_id", a->cfg.node_id, "nonce", c->discovery_nonce);
    if (dsc_send_all(c->discovery_fd, c->discovery_targets, (int)c->discovery_port, q, err,
                     sizeof(err)) <= 0 &&
        c->queries % 10 == 0)
        fprintf(stderr, "msrs-agent: %s\n", err);
    json_decref(q);
    if (c->queries % 10 == 0 && c->phase == AG_CTL_DISCOVER)
        fprintf(stderr, "msrs-agent: looking for a supervisor of '%s' (UDP %s port %lld)\n",
                c->prefix, c->discovery_targets, (long long)c->discovery_port);
    if (c->phase == AG_CTL_DISCOVER && !c->query_started_ns)
        c->query_started_ns = now;
    c->queries++;
    c->next_query_ns = now + 1000000000LL;
}

/* Discovery answers: each supervisor joins the list; one that leads is
 * where the next request goes. A URL on 0.0.0.0 (a supervisor listening on
 * every address) is reached at the address the answer came from. */
static void on_answers(ag_agent *a)
{
    ag_control *c = &a->ctl;
    struct sockaddr_in from;
    json_t *m;
    while ((m = dsc_recv(c->discovery_fd, "supervisor", c->prefix, &from, &c->discovery_skipped))) {
        char host[128], text[DSC_MAX];
        int port, i;
        if (a->auth.enabled &&
            (strcmp(json_string_value(json_object_get(m, "nonce")) ?: "", c->discovery_nonce) ||
             dsc_signed_text(m, text, sizeof(text)) ||
             cli_auth_mac_check(a->auth.key, "discovery", text,
                                json_string_value(json_object_get(m, "mac"))))) {
            /* a rogue (or misconfigured) supervisor: never joined */
            if (c->discovery_forged++ % 100 == 0)
                fprintf(stderr,
                        "msrs-agent: discovery: ignored an answer from %s:%d naming %s: not "
                        "signed with the lab key over this agent's query (%lld ignored)\n",
                        inet_ntoa(from.sin_addr), ntohs(from.sin_port),
                        json_string_value(json_object_get(m, "url")) ?: "?",
                        (long long)c->discovery_forged);
            json_decref(m);
            continue;
        }
        if (parse_url(json_string_value(json_object_get(m, "url")) ?: "", host, sizeof(host),
                      &port) == 0) {
            if (strcmp(host, "0.0.0.0") == 0 && a->auth.enabled) {
                /* The sender's address is not what the MAC covers: a signed
                 * answer re-sent from elsewhere would send this node there. */
                if (c->discovery_forged++ % 100 == 0)
                    fprintf(stderr,
                            "msrs-agent: discovery: ignored %s's answer naming 0.0.0.0 (with "
                            "credentials the answer must name the address; set "
                            "supervisor.advertise)\n",
                            json_string_value(json_object_get(m, "node_id")) ?: "?");
                json_decref(m);
                continue;
            }
            if (strcmp(host, "0.0.0.0") == 0)
                inet_ntop(AF_INET, &from.sin_addr, host, sizeof(host));
            int known = c->url_count;
            if ((i = add_supervisor(c, host, port)) >= 0) {
                if (i == known)
                    fprintf(stderr, "msrs-agent: discovered supervisor %s at %s:%d%s\n",
                            json_string_value(json_object_get(m, "node_id")) ?: "?", host, port,
                            json_is_true(json_object_get(m, "leading")) ? " (leading)" : "");
                if (json_is_true(json_object_get(m, "leading")))
                    c->lead_hint = i;
            }
        } else {
            c->discovery_skipped++;
        }
        json_decref(m);
    }
}

/* The wait before the next try after `failures` failures in a row:
 * CTL_RETRY_MS doubling up to a cap, each drawn from half to the whole of
 * it, so nodes that failed together (a supervisor restarting, an
 * overloaded machine) do not come back together. The cap is the plan's
 * heartbeat interval once planned (a failover must find the new leader
 * well within the TTL it gives), CTL_BACKOFF_MAX_MS before. */
static int64_t backoff_ns(const ag_control *c)
{
    int64_t cap = c->planned && c->heartbeat_ns ? c->heartbeat_ns / 1000000 : CTL_BACKOFF_MAX_MS;
    int64_t ms = CTL_RETRY_MS;
    for (int64_t i = 1; i < c->failures && ms < cap; i++)
        ms *= 2;
    if (ms > cap)
        ms = cap;
    if (ms < CTL_RETRY_MS)
        ms = CTL_RETRY_MS;
    return (int64_t)((0.5 + 0.5 * ev_random_unit()) * (double)ms * 1e6);
}

static void next_supervisor(ag_agent *a, const char *why)
{
    ag_control *c = &a->ctl;
    int from = c->url_i;
    int64_t now = ag_now_ns();
    c->url_i = (c->url_i + 1) % c->url_count;
    c->failures++;
    if (c->url_count > 1 || c->failures % 10 == 1)
        fprintf(stderr, "msrs-agent: supervisor %s:%d: %s; trying %s:%d\n", c->hosts[from],
                c->ports[from], why, c->hosts[c->url_i], c->ports[c->url_i]);
    if (c->url_i != from)
        ev_clock_est_init(&a->master_clock); /* another supervisor: another master clock */
    if (c->discover && now >= c->next_query_ns)
        discover(a, now); /* a new leader, or a supervisor that moved, answers */
    c->next_at_ns = now + backoff_ns(c);
}

static int64_t mem_used_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (int64_t)rss * sysconf(_SC_PAGESIZE);
}

/* The machine's MemAvailable (bytes), 0 when /proc/meminfo does not say. */
static int64_t mem_available_bytes(void)
{
    long long kib = 0;
    char line[128];
    FILE *f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return (int64_t)kib * 1024;
}

/* Bytes per second received from devices since the last heartbeat. */
static int64_t rx_bytes_per_s(ag_agent *a, int64_t now)
{
    ag_control *c = &a->ctl;
    int64_t rate = c->rx_at_ns && now > c->rx_at_ns
                       ? (a->n.rx_bytes - c->rx_bytes) * 1000000000LL / (now - c->rx_at_ns)
                       : 0;
    c->rx_bytes = a->n.rx_bytes;
    c->rx_at_ns = now;
    return rate;
}

/* The agent's CPU since the last heartbeat, in cores (1.0 = one core busy). */
static double cpu_load(ag_control *c, int64_t now)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t cpu = (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                  (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
    double load = c->cpu_at_ns && now > c->cpu_at_ns
                      ? (double)(cpu - c->cpu_ns) / (double)(now - c->cpu_at_ns)
                      : 0.0;
    c->cpu_ns = cpu;
    c->cpu_at_ns = now;
    return load;
}

static json_t *request_body(ag_agent *a, int kind, int64_t now)
{
    ag_control *c = &a->ctl;
    switch (kind) {
    case REQ_REGISTER: {
        char host[64] = "", address[192];
        gethostname(host, sizeof(host) - 1);
        snprintf(address, sizeof(address), "%s:%d", a->cfg.advertise, a->cfg.port);
        json_t *body = json_pack("{s:s, s:s, s:s, s:[s,s], s:I, s:s, s:I, s:I, s:s}", "node_id",
                                 a->cfg.node_id, "hostname", host, "address", address, "caps",
                                 "devices", "clock", "max_devices", (json_int_t)a->cfg.max_devices,
                                 "version", MSRS_VERSION, "cpu_cores",
                                 (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "mem_total_bytes",
                                 (json_int_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE),
                                 "incarnation", c->incarnation);
        /* cameras here: the plan names capture (msrs-capture) */
        c->reported_cameras = ag_spawn_cameras(&a->capture);
        if (c->reported_cameras)
            json_array_append_new(json_object_get(body, "caps"), json_string("camera"));
        return body;
    }
    case REQ_PLAN: return json_pack("{s:s}", "node_id", a->cfg.node_id);
    case REQ_HEARTBEAT: {
        json_t *hb = json_pack(
            "{s:s, s:[], s:{s:s}, s:I, s:f, s:I, s:I, s:I, s:b, s:I}", "node_id", a->cfg.node_id,
            "services_running", "versions", "msrs-agent", MSRS_VERSION, "device_count",
            (json_int_t)a->connected, "cpu_load", cpu_load(c, now), "mem_used_bytes",
            (json_int_t)mem_used_bytes(), "mem_available_bytes", (json_int_t)mem_available_bytes(),
            "rx_bytes_per_s", (json_int_t)rx_bytes_per_s(a, now), "slowing_devices", a->slowed,
            "log_backlog_bytes", (json_int_t)a->backlog_bytes);
        if (a->listening)
            json_array_append_new(json_object_get(hb, "services_running"), json_string("devices"));
        if (a->capture.pid)
            json_array_append_new(json_object_get(hb, "services_running"), json_string("capture"));
        if (a->master_clock.fitted) {
            json_array_append_new(json_object_get(hb, "services_running"), json_string("clock"));
            /* node clock minus master clock; the probe's offset is master minus node */
            json_object_set_new(hb, "clock_offset_ns",
                                json_integer(-ev_clock_est_offset_at(&a->master_clock, now)));
            json_object_set_new(hb, "clock_uncertainty_ns", json_integer(c->clock_unc_ns));
            json_object_set_new(hb, "clock_rtt_ns", json_integer(c->clock_rtt_ns));
        }
        return hb;
    }
    default: return NULL; /* REQ_TIME: built when written, with t1 stamped then */
    }
}

static void send_request(ag_agent *a, int kind)
{
    ag_control *c = &a->ctl;
    int64_t now = ag_now_ns();
    ag_http *h = calloc(1, sizeof(*h));
    if (!h)
        return;
    h->a = a;
    h->kind = kind;
    json_t *body = request_body(a, kind, now);
    if (body) {
        h->body = json_dumps(body, JSON_COMPACT);
        h->body_len = h->body ? strlen(h->body) : 0;
        json_decref(body);
    }
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof(i));
    i.context = a->ctx;
    i.address = c->hosts[c->url_i];
    i.port = c->ports[c->url_i];
    i.path = req_path[kind];
    i.host = i.address;
    i.origin = i.address;
    i.method = "POST";
    i.protocol = "msrs-control";
    i.ssl_connection = cli_tls_client_flags(&a->tls);
    i.local_protocol_name = "msrs-control";
    i.opaque_user_data = h;
    c->busy = 1;
    if (!lws_client_connect_via_info(&i) && c->busy) {
        /* failed before any callback could take h */
        http_free(h);
        c->busy = 0;
        next_supervisor(a, "cannot connect");
    }
}

static int plan_names(json_t *plan, const char *service)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(plan, "services"), i,
                       v) if (strcmp(json_string_value(v) ?: "", service) == 0) return 1;
    return 0;
}

static void apply_plan(ag_agent *a, json_t *plan)
{
    ag_control *c = &a->ctl;
    char err[256];
    int64_t hb = json_integer_value(json_object_get(plan, "heartbeat_interval_ms"));
    c->heartbeat_ns = (hb > 0 ? hb : 1000) * 1000000;
    a->plan_max_devices = json_integer_value(json_object_get(plan, "max_devices"));
    c->planned = 1;
    ag_spawn_want(&a->capture, plan_names(plan, "capture"), ag_now_ns());
    if (plan_names(plan, "devices") && !a->listening) {
        if (ag_endpoint_listen(a, err, sizeof(err)))
            fprintf(stderr, "msrs-agent: plan: %s\n", err);
        else
            fprintf(stderr, "msrs-agent: plan: listening on %s://%s:%d/v1/devices\n",
                    cli_tls_ws_scheme(&a->tls), a->cfg.host, a->cfg.port);
    }
    fprintf(stderr,
            "msrs-agent: node %s planned by %s:%d: role %s, heartbeat %lld ms, max %lld "
            "devices\n",
            a->cfg.node_id, c->hosts[c->url_i], c->ports[c->url_i],
            json_string_value(json_object_get(plan, "role")) ?: "?",
            (long long)(c->heartbeat_ns / 1000000), (long long)a->plan_max_devices);
    cli_ready(a->listening ? "planned; devices endpoint listening" : "planned");
    a->ready = 1;
}

/* A request finished: status 0 = no answer (connection failed). */
static void on_done(ag_agent *a, ag_http *h)
{
    ag_control *c = &a->ctl;
    json_t *r = h->resp.data ? json_loadb((const char *)h->resp.data, h->resp.len, 0, NULL) : NULL;
    int64_t now = ag_now_ns();
    c->busy = 0;
    if (h->status != 200 && h->status != 404) { /* none, 5xx (not_leader, starting), other */
        char why[256];
        /* refused (401, 403): the supervisor's reason, e.g. a revoked token */
        const char *reason = h->status == 401 || h->status == 403
                                 ? json_string_value(json_object_get(r, "message"))
                                 : NULL;
        snprintf(why, sizeof(why), "%s %s%s%s", h->status ? "answered" : "no answer",
                 h->status ? (json_string_value(json_object_get(r, "error")) ?: "error") : "",
                 reason ? ": " : "", reason ? reason : "");
        next_supervisor(a, why);
        json_decref(r);
        return;
    }
    if (!json_is_object(r)) { /* a 200 or 404 whose body is not what we asked for */
        char why[128];
        snprintf(why, sizeof(why), "answered %d with %s", h->status,
                 h->resp_too_large ? "more than 64 KiB" : "a body that is not a JSON object");
        next_supervisor(a, why);
        json_decref(r);
        return;
    }
    c->failures = 0;
    if (h->status == 404 && h->kind != REQ_TIME) {
        /* The supervisor does not know this node (expired, or a new log):
         * register again. */
        fprintf(stderr, "msrs-agent: supervisor %s:%d does not know node %s: registering again\n",
                c->hosts[c->url_i], c->ports[c->url_i], a->cfg.node_id);
        c->reregistered++;
        c->phase = AG_CTL_REGISTER;
        /* within half a heartbeat, at random: nodes expired together (a
         * supervisor that came back) do not register in one burst */
        c->next_at_ns = now + (int64_t)(ev_random_unit() * (double)c->heartbeat_ns / 2);
        json_decref(r);
        return;
    }
    switch (h->kind) {
    case REQ_REGISTER:
        c->phase = AG_CTL_PLAN;
        c->next_at_ns = now;
        if (!c->registered_at_ns)
            c->registered_at_ns = now;
        break;
    case REQ_PLAN:
        apply_plan(a, r);
        c->phase = AG_CTL_PROBE;
        c->probes_left = CTL_PROBES;
        c->next_at_ns = now;
        break;
    case REQ_TIME: {
        ev_clock_probe p = {h->t1, json_integer_value(json_object_get(r, "t2")),
                            json_integer_value(json_object_get(r, "t3")), h->t4};
        ev_clock_est_add_probe(&a->master_clock, &p);
        if (--c->probes_left <= 0) {
            ev_clock_round res;
            if (ev_clock_est_end_round(&a->master_clock, &res) == 0) {
                c->clock_unc_ns = res.uncertainty_ns;
                c->clock_rtt_ns = res.rtt_ns;
            }
            c->phase = AG_CTL_HEARTBEAT;
        }
        c->next_at_ns = now;
        break;
    }
    case REQ_HEARTBEAT: {
        json_t *redirect = json_object_get(r, "redirect");
        const char *addr = json_string_value(json_object_get(redirect, "address"));
        if (addr && *addr)
            snprintf(a->redirect, sizeof(a->redirect), "%s://%s/v1/devices",
                     cli_tls_ws_scheme(&a->tls), addr);
        else
            a->redirect[0] = '\0';
        c->heartbeats++;
        c->last_ok_ns = now;
        c->phase = AG_CTL_PROBE;
        c->probes_left = CTL_PROBES;
        c->next_at_ns = now + c->heartbeat_ns;
        if (ag_spawn_cameras(&a->capture) != c->reported_cameras) {
            /* a first camera plugged in, or the last one out: the plan changes */
            fprintf(stderr, "msrs-agent: cameras %s: registering again for a new plan\n",
                    c->reported_cameras ? "gone" : "found");
            c->phase = AG_CTL_REGISTER;
            c->next_at_ns = now;
        }
        break;
    }
    }
    json_decref(r);
}

static void finish(struct lws *wsi, ag_http *h)
{
    lws_set_opaque_user_data(wsi, NULL);
    on_done(h->a, h);
    if (h->a->tick_soon)
        h->a->tick_soon(h->a); /* the next step of the cycle may be due now */
    http_free(h);
}

/* The control plane's lws callback (HTTP client connections and the
 * discovery socket); runs on the lws service thread. */
static int callback_control(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                            size_t len)
{
    ag_http *h = lws_get_opaque_user_data(wsi);
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return -1;                 /* a client's own protocol: no device upgrades to it */
    case LWS_CALLBACK_RAW_RX_FILE: /* the discovery socket */
        on_answers(lws_context_user(lws_get_context(wsi)));
        return 0;
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        if (!h)
            return -1;
        unsigned char **p = in, *end = *p + len;
        ag_agent *a = lws_context_user(lws_get_context(wsi));
        char cl[32];
        if (h->kind == REQ_TIME) {
            /* fixed width, so the length is known before t1 is stamped */
            h->body_len = strlen("{\"t1\":}") + 19;
            /* t4: the kernel's stamp of the answer (as for devices) */
            if (a->cfg.kernel_timestamps)
                rxstamp_enable(lws_get_socket_fd(wsi));
        }
        snprintf(cl, sizeof(cl), "%zu", h->body_len);
        char bearer[sizeof(a->ctl.token) + 8];
        int blen = snprintf(bearer, sizeof(bearer), "Bearer %s", a->ctl.token);
        if ((*a->ctl.token &&
             lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                          (const unsigned char *)bearer, blen, p, end)) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                         (const unsigned char *)"application/json", 16, p, end) ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH,
                                         (const unsigned char *)cl, (int)strlen(cl), p, end))
            return -1;
        lws_client_http_body_pending(wsi, 1);
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE: {
        if (!h)
            return -1;
        unsigned char buf[LWS_PRE + 4096];
        char *body = h->body;
        char probe[64];
        if (h->kind == REQ_TIME) {
            h->t1 = ag_now_ns();
            snprintf(probe, sizeof(probe), "{\"t1\":%019lld}", (long long)h->t1);
            body = probe;
        }
        if (h->body_len > sizeof(buf) - LWS_PRE)
            return -1;
        memcpy(buf + LWS_PRE, body, h->body_len);
        lws_client_http_body_pending(wsi, 0);
        if (h->kind == REQ_TIME)
            cli_tls_send_stamps(wsi);
        if (lws_write(wsi, buf + LWS_PRE, h->body_len, LWS_WRITE_HTTP_FINAL) != (int)h->body_len)
            return -1;
        if (h->kind == REQ_TIME) /* over TLS, from when the encrypted body's write began */
            h->t1 = cli_tls_sent_since(wsi, h->t1);
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
        if (h) {
            h->t4 = rxstamp_arrival(lws_get_socket_fd(wsi), ag_now_ns());
            h->status = (int)lws_http_client_http_response(wsi);
        }
        return 0;
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
        char buf[LWS_PRE + 4096], *px = buf + LWS_PRE;
        int lenx = (int)sizeof(buf) - LWS_PRE;
        if (lws_http_client_read(wsi, &px, &lenx) < 0)
            return -1;
        return 0;
    }
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
        if (h && h->resp.len + len > CTL_ANSWER_MAX)
            h->resp_too_large = 1;
        else if (h && cli_buf_append(&h->resp, in, len))
            return -1;
        return 0;
    case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
        if (h)
            finish(wsi, h);
        return -1; /* one request per connection */
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        if (h) {
            h->status = reason == LWS_CALLBACK_CLOSED_CLIENT_HTTP && h->resp.data ? h->status : 0;
            finish(wsi, h);
        }
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

const struct lws_protocols ag_control_protocol = {
    "msrs-control", callback_control, 0, 4096, 0, NULL, 0};

int64_t ag_control_next_ns(const ag_agent *a, int64_t until)
{
    const ag_control *c = &a->ctl;
    if (!c->managed || c->busy)
        return until;
    if (c->phase == AG_CTL_DISCOVER)
        return 0; /* answers and waits of discovery: the busy tick */
    return c->next_at_ns < until ? c->next_at_ns : until;
}

void ag_control_tick(ag_agent *a, int64_t now_ns)
{
    ag_control *c = &a->ctl;
    if (!c->managed || c->busy || now_ns < c->next_at_ns)
        return;
    if (c->phase == AG_CTL_DISCOVER) {
        /* Register once a leader answered, or with whoever answered after
         * discovery.wait_ms (a follower names the leader on failure). */
        if (!c->url_count ||
            (c->lead_hint < 0 && now_ns - c->query_started_ns < c->discovery_wait_ns)) {
            if (now_ns >= c->next_query_ns)
                discover(a, now_ns);
            return;
        }
        c->phase = AG_CTL_REGISTER;
    }
    if (c->lead_hint >= 0 && c->lead_hint != c->url_i) {
        c->url_i = c->lead_hint;
        ev_clock_est_init(&a->master_clock);
    }
    c->lead_hint = -1;
    switch (c->phase) {
    case AG_CTL_REGISTER: send_request(a, REQ_REGISTER); break;
    case AG_CTL_PLAN: send_request(a, REQ_PLAN); break;
    case AG_CTL_PROBE: send_request(a, REQ_TIME); break;
    case AG_CTL_HEARTBEAT: send_request(a, REQ_HEARTBEAT); break;
    }
}
