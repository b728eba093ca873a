/* msrs-gateway — the web app's server (docs/gateway.md): serves the page,
 * a REST API and a live WebSocket feed of the pool and its sessions. It
 * folds the nodes, devices, sessions and commands topics with the shared
 * projection (the reducers of replay), counts recording sessions' data
 * from the samples and media topics, and acts only by writing records. One
 * thread, one libwebsockets loop; a tick every TICK_US folds what came,
 * publishes what changed (at most every gateway.feed_ms) and re-checks the
 * alerts every second. */
#include "gateway.h"

#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_US        (50 * LWS_US_PER_MS)
#define FOLD_BUDGET    20000 /* records folded per tick at most */
#define LIVE_BUDGET_MS 20    /* ms of samples and media read per tick at most */

#ifndef MSRS_WEB_ROOT
#define MSRS_WEB_ROOT "web"
#endif

static void usage(FILE *f)
{
    fprintf(
        f, "usage: msrs-gateway --log URI [--listen HOST:PORT] [options]\n"
           "The web app's server: the page, a REST API below /api/v1 and a live feed\n"
           "(WebSocket /api/v1/feed) of nodes, devices and sessions, folded from the log;\n"
           "starting and stopping sessions are records it writes (docs/gateway.md).\n\n"
           "  --listen HOST:PORT  default 127.0.0.1:8640 (config gateway.listen)\n" CLI_COMMON_HELP
           "\nconfig keys (defaults): gateway.web_root (" MSRS_WEB_ROOT "), archive.dir (archive:\n"
           "what /api/v1/archives lists and serves), gateway.feed_ms (250: changes are\n"
           "published at most this often), gateway.feed_ring (1024 changes kept for clients\n"
           "that reconnect), gateway.feed_ring_bytes (64 MiB: at most this much of them),\n"
           "gateway.max_feed_clients (256), gateway.max_connections (max_feed_clients + 256,\n"
           "counted from accept; docs/security.md), gateway.clock_stale_ms (30000:\n"
           "a connected device without a clock offset this long is alerted),\n"
           "gateway.alert_window_s (3600: how long a disconnect, an expiry or an incomplete\n"
           "session stays an alert), gateway.live (true: count recording sessions' samples\n"
           "and media from the log), tls.cert, tls.key, tls.plain, auth.key_file (operators'\n"
           "tokens are checked against it; docs/security.md), auth.revoked_file,\n"
           "auth.required\n"
           "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

/* What a folded record changed (ev_projection_opts.on_apply; loop thread). */
static void on_apply(void *arg, const ev_event *ev)
{
    gw_gateway *g = arg;
    char key[EV_ID_MAX];
    gw_event_key(ev, key);
    gw_view_note(g, ev);
    if (ev->time_ns > g->dirty_newest_ns)
        g->dirty_newest_ns = ev->time_ns;
    if (!g->dirty_oldest_ns || ev->time_ns < g->dirty_oldest_ns)
        g->dirty_oldest_ns = ev->time_ns;
    const char *topic = ev_schema_topic(ev->schema);
    if (strcmp(topic, "nodes") == 0) {
        json_object_set_new(g->dirty_nodes, key, json_true());
        if (ev_schema_id(ev->schema) == EV_SCHEMA_NODE_EXPIRED) {
            /* the reducer disconnected the node's devices: they changed too */
            ev_device d;
            for (const char *k = NULL; (k = ev_state_device_next(g->state, k, &d));)
                if (!d.connected && strcmp(d.node_id, key) == 0)
                    json_object_set_new(g->dirty_devices, k, json_true());
        }
    } else if (strcmp(topic, "devices") == 0 || strcmp(topic, "clock") == 0) {
        json_object_set_new(g->dirty_devices, key, json_true());
    } else if (strcmp(topic, "sessions") == 0) {
        json_object_set_new(g->dirty_sessions, key, json_true());
        json_object_del(g->requested, key); /* folded: the state answers for it now */
        if (ev_schema_id(ev->schema) == EV_SCHEMA_COLLECTION_STOPPED && g->live)
            gw_live_forget(g->live, key); /* its CollectionStopped counts from now on */
    } else if (strcmp(topic, "commands") == 0) {
        /* a start or stop command changes its session's state: the command
         * is keyed by node, so every session not stopped is looked at */
        ev_session x;
        for (const char *k = NULL; (k = ev_state_session_next(g->state, k, &x));)
            if (x.state != EV_SESSION_STOPPED)
                json_object_set_new(g->dirty_sessions, k, json_true());
    }
}

/* {id: view or null (gone)} of every dirty id, which is cleared. */
static json_t *changed(gw_gateway *g, json_t *dirty, json_t *(*view)(gw_gateway *, const char *))
{
    json_t *out = json_object(), *v;
    const char *id;
    json_object_foreach(dirty, id, v)
    {
        json_t *x = view(g, id);
        json_object_set_new(out, id, x ? x : json_null());
    }
    json_object_clear(dirty);
    return out;
}

static json_t *session_view(gw_gateway *g, const char *id)
{
    return gw_view_session(g, id, 0);
}

/* Publishes what changed since the last change, when anything did. */
static void publish(gw_gateway *g, int alerts_changed)
{
    if (!json_object_size(g->dirty_nodes) && !json_object_size(g->dirty_devices) &&
        !json_object_size(g->dirty_sessions) && !alerts_changed)
        return;
    json_t *msg = json_pack("{s:s, s:I, s:I, s:I, s:o, s:o, s:o}", "type", "change", "newest_ns",
                            (json_int_t)g->dirty_newest_ns, "oldest_ns",
                            (json_int_t)g->dirty_oldest_ns, "published_ns", (json_int_t)ev_now_ns(),
                            "nodes", changed(g, g->dirty_nodes, gw_view_node), "devices",
                            changed(g, g->dirty_devices, gw_view_device), "sessions",
                            changed(g, g->dirty_sessions, session_view));
    if (alerts_changed)
        json_object_set(msg, "alerts", g->alerts);
    g->dirty_newest_ns = g->dirty_oldest_ns = 0;
    gw_feed_publish(g, msg);
    gw_http_feed_wake(g);
}

/* The first time the fold reaches the end: the whole view is one change
 * (clients connected while folding had a partial snapshot), and the live
 * counts start where the oldest session still recording started. */
static void caught_up(gw_gateway *g)
{
    char err[512];
    g->caught_up = 1;
    fprintf(stderr, "msrs-gateway: state folded from the log: %lld records\n",
            (long long)ev_projection_records(g->proj));
    cli_ready("state caught up with the log");
    json_object_clear(g->dirty_nodes);
    json_object_clear(g->dirty_devices);
    json_object_clear(g->dirty_sessions);
    json_decref(g->alerts);
    g->alerts = gw_view_alerts(g, ev_now_ns());
    json_t *all = gw_feed_snapshot(g);
    json_object_set_new(all, "type", json_string("change"));
    gw_feed_publish(g, all);
    gw_http_feed_wake(g);
    if (!g->live_enabled)
        return;
    int64_t from_ns = ev_now_ns();
    ev_session x;
    for (const char *k = NULL; (k = ev_state_session_next(g->state, k, &x));)
        if (x.state != EV_SESSION_STOPPED && x.state != EV_SESSION_NONE && x.start_at_ns &&
            x.start_at_ns < from_ns)
            from_ns = x.start_at_ns;
    if (gw_live_new(&g->live, g->conf, from_ns / 1000000 - 5000, err, sizeof(err)))
        fprintf(stderr,
                "msrs-gateway: live counts: %s: sessions show counts only once they "
                "stop\n",
                err);
}

/* The gateway's metrics (ops.h; docs/operations.md, "Metrics"). */
static void publish_metrics(gw_gateway *g)
{
    cli_buf b = {0};
    const gw_counters *n = &g->n;
    cli_admit_metrics(&b, "msrs_gateway", &g->admit);
    cli_metric(&b, "msrs_gateway_requests_total", "counter", "HTTP requests", (double)n->requests);
    cli_metric(&b, "msrs_gateway_unauthorized_total", "counter", "requests without a valid token",
               (double)n->unauthorized);
    cli_metric(&b, "msrs_gateway_actions_total", "counter", "sessions started or stopped",
               (double)n->actions);
    cli_metric(&b, "msrs_gateway_feed_clients_total", "counter", "feed connections",
               (double)n->feed_clients);
    cli_metric(&b, "msrs_gateway_feed_messages_total", "counter", "feed messages sent",
               (double)n->feed_messages);
    cli_metric(&b, "msrs_gateway_records_total", "counter", "records folded from the log",
               (double)ev_projection_records(g->proj));
    cli_lag_metric(&b, g->log, g->proj);
    cli_ops_publish(g->ops, &b, g->caught_up);
    cli_buf_free(&b);
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    gw_gateway *g = lws_container_of(sul, gw_gateway, tick);
    char err[512];
    for (int i = 0; i < FOLD_BUDGET; i++) {
        int rc = ev_projection_step(g->proj, 0, err, sizeof(err));
        if (rc == EV_ERR_END) {
            if (!g->caught_up)
                caught_up(g);
            break;
        }
        if (rc == EV_ERR_FATAL) { /* e.g. a malformed SQLite file: said once, stop */
            fprintf(stderr, "msrs-gateway: %s\n", err);
            g->log_failed = 1;
            cli_stop = 1;
            lws_cancel_service(g->ctx);
            return;
        }
        if (rc) {
            if (rc != EV_ERR_TIMED_OUT)
                fprintf(stderr, "msrs-gateway: %s\n", err);
            break;
        }
    }
    if (g->live &&
        gw_live_step(g->live, g->state, LIVE_BUDGET_MS, g->dirty_live, &g->n, err, sizeof(err))) {
        fprintf(stderr,
                "msrs-gateway: live counts: %s: stopped (sessions show counts once "
                "they stop)\n",
                err);
        gw_live_destroy(g->live);
        g->live = NULL;
    }
    int64_t mono = ev_mono_ms();
    int alerts_changed = 0;
    if (mono - g->last_live_ms >= GW_LIVE_MS) { /* live counts: a session's whole streams */
        g->last_live_ms = mono;
        json_object_update(g->dirty_sessions, g->dirty_live);
        json_object_clear(g->dirty_live);
    }
    if (g->caught_up && mono - g->last_alerts_ms >= 1000) {
        g->last_alerts_ms = mono;
        json_t *now = gw_view_alerts(g, ev_now_ns());
        alerts_changed = !json_equal(now, g->alerts);
        json_decref(g->alerts);
        g->alerts = now;
    }
    if (g->caught_up && (alerts_changed || mono - g->last_publish_ms >= g->feed_ms)) {
        g->last_publish_ms = mono;
        publish(g, alerts_changed);
    }
    if (cli_ops_due(g->ops))
        publish_metrics(g);
    lws_sul_schedule(g->ctx, 0, &g->tick, on_tick, TICK_US);
}

static int load_config(gw_gateway *g, const ev_conf *conf, const char *listen)
{
    char err[256];
    const char *l = listen ? listen : ev_conf_get(conf, "gateway.listen", "127.0.0.1:8640");
    if (cli_host_port(l, g->host, sizeof(g->host), &g->port)) {
        fprintf(stderr, "msrs-gateway: listen '%s': expected HOST:PORT\n", l);
        return -1;
    }
    const cli_int_key ints[] = {{"gateway.feed_ms", 250, &g->feed_ms, 10},
                                {"gateway.feed_ring", 1024, &g->ring_size, 16},
                                {"gateway.feed_ring_bytes", 64 << 20, &g->ring_max_bytes, 1 << 20},
                                {"gateway.max_feed_clients", 256, &g->max_feed_clients, 1},
                                {"gateway.clock_stale_ms", 30000, &g->clock_stale_ms, 100},
                                {"gateway.alert_window_s", 3600, &g->alert_window_s, 1}};
    if (cli_conf_ints(conf, ints, sizeof(ints) / sizeof(ints[0]), "msrs-gateway"))
        return -1;
    /* its range is checked where it is used (cli_admit_init) */
    if (ev_conf_get_int(conf, "gateway.max_connections", g->max_feed_clients + 256,
                        &g->max_connections, err, sizeof(err))) {
        fprintf(stderr, "msrs-gateway: %s\n", err);
        return -1;
    }
    int live = 1;
    if (ev_conf_get_bool(conf, "gateway.live", 1, &live, err, sizeof(err))) {
        fprintf(stderr, "msrs-gateway: %s\n", err);
        return -1;
    }
    g->live_enabled = live;
    snprintf(g->web_root, sizeof(g->web_root), "%s",
             ev_conf_get(conf, "gateway.web_root", MSRS_WEB_ROOT));
    snprintf(g->archive_dir, sizeof(g->archive_dir), "%s",
             ev_conf_get(conf, "archive.dir", "archive"));
    char index[PATH_MAX + 16];
    snprintf(index, sizeof(index), "%s/index.html", g->web_root);
    FILE *f = fopen(index, "r");
    if (!f) {
        fprintf(stderr,
                "msrs-gateway: config gateway.web_root '%s': expected the web app's folder "
                "(with index.html)\n",
                g->web_root);
        return -1;
    }
    fclose(f);
    return 0;
}

typedef struct gw_args {
    gw_gateway *g;
    const char *listen;
} gw_args;

static int on_opt(void *arg, int opt, const char *val)
{
    gw_args *a = arg;
    if (opt != 'L')
        return -1;
    a->listen = val;
    return 0;
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    gw_args *a = arg;
    if (cli_tls_load(&a->g->tls, conf, "msrs-gateway", 1, errstr, errstr_size) ||
        cli_auth_load(&a->g->auth, conf, "msrs-gateway", errstr, errstr_size))
        return -1;
    return load_config(a->g, conf, a->listen) ? -1 : 0; /* said on stderr */
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    gw_gateway *g = ((gw_args *)arg)->g;
    int exit_code = CLI_EXIT_OK;
    char err[512] = "out of memory";
    g->log = log;
    g->conf = conf;
    g->state = ev_state_new();
    g->dirty_nodes = json_object();
    g->dirty_devices = json_object();
    g->dirty_sessions = json_object();
    g->dirty_live = json_object();
    g->history = json_object();
    g->disconnected_at = json_object();
    g->alerts = json_array();
    g->requested = json_object();
    g->ring = calloc((size_t)g->ring_size, sizeof(*g->ring));
    char uuid[EV_ID_MAX];
    ev_new_id(uuid);
    snprintf(g->epoch, sizeof(g->epoch), "%.8s", uuid);
    ev_projection_opts po = {.on_note = cli_print_note,
                             .note_arg = (void *)"msrs-gateway",
                             .on_apply = on_apply,
                             .apply_arg = g};
    if (!g->state || !g->ring ||
        ev_projection_new(&g->proj, log, g->state, ev_state_topics, EV_STATE_TOPIC_COUNT, &po, err,
                          sizeof(err)) ||
        gw_http_start(g, err, sizeof(err))) {
        fprintf(stderr, "msrs-gateway: %s\n", err);
        exit_code = g->ctx || !g->proj ? CLI_EXIT_FAIL : CLI_EXIT_USAGE;
        goto out;
    }
    if (cli_ops_start(&g->ops, conf, "msrs-gateway", err, sizeof(err))) {
        fprintf(stderr, "msrs-gateway: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
        goto out;
    }
    fprintf(stderr, "msrs-gateway: %s://%s:%d/ (web app %s, archive %s, log %s)\n",
            g->tls.plain ? "http" : "https", g->host, g->port, g->web_root, g->archive_dir,
            ev_conf_get(conf, "log", ""));
    lws_sul_schedule(g->ctx, 0, &g->tick, on_tick, TICK_US);
    while (!cli_stop)
        if (lws_service(g->ctx, 0) < 0)
            break;
    if (g->log_failed)
        exit_code = CLI_EXIT_FAIL;
out:
    cli_ops_stop(g->ops);
    gw_http_stop(g);
    if (ev_log_flush(log, 10000, err, sizeof(err))) {
        fprintf(stderr, "msrs-gateway: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
    }
    fprintf(stderr,
            "msrs-gateway: stopped: %lld requests, %lld actions, %lld files, %lld "
            "unauthorized, %lld forbidden, %lld bad; feed: %lld changes, %lld snapshots, %lld "
            "refused; live: %lld records counted, %lld skipped\n",
            (long long)g->n.requests, (long long)g->n.actions, (long long)g->n.files,
            (long long)g->n.unauthorized, (long long)g->n.forbidden, (long long)g->n.bad,
            (long long)g->n.feed_messages, (long long)g->n.feed_snapshots,
            (long long)g->n.feed_refused, (long long)g->n.live_records,
            (long long)g->n.live_skipped);
    gw_live_destroy(g->live);
    ev_projection_destroy(g->proj);
    gw_feed_free(g);
    json_decref(g->dirty_nodes);
    json_decref(g->dirty_devices);
    json_decref(g->dirty_sessions);
    json_decref(g->dirty_live);
    json_decref(g->history);
    json_decref(g->disconnected_at);
    json_decref(g->alerts);
    json_decref(g->requested);
    cli_auth_free(&g->auth);
    ev_state_destroy(g->state);
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'L'},
                                         {NULL, 0, NULL, 0}};
    static gw_gateway g; /* lives as long as the process */
    gw_args a = {.g = &g};
    cli_svc svc = {.name = "msrs-gateway",
                   .source = "gateway",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &a};
    return cli_svc_main(&svc, argc, argv);
}
