/* ops.c — the operations listener: /metrics, /healthz, /readyz (ops.h). */
#include "ops.h"

#include "http.h"
#include "security.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define OPS_STALE_MS 10000

struct cli_ops {
    char prog[64];
    char host[128];
    int port;
    cli_tls tls;
    cli_auth auth;
    struct lws_context *ctx;
    pthread_t thread;
    int thread_started;
    volatile int stop;
    pthread_mutex_t mu; /* guards what follows: the publisher's thread and the listener's */
    char *text;
    size_t len;
    int ready;
    int64_t published_ms;
    double start_time_s;
};

/* One request: its answer, made when it came, written when writable. */
typedef struct ops_conn {
    unsigned int status;
    char *body;
    size_t len;
    const char *type;
} ops_conn;

static char *copy_text(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (out) {
        memcpy(out, s, len);
        out[len] = '\0';
    }
    return out;
}

/* The answer to GET path from a caller who showed token. */
static void answer_for(cli_ops *o, const char *path, const char *token, ops_conn *c)
{
    static const char json[] = "application/json", text[] = "text/plain; charset=utf-8";
    char msg[256];
    cli_principal p;
    const char *why = NULL;
    c->type = json;
    if (o->auth.enabled &&
        (cli_auth_token_check(&o->auth, token, &p, &why) || cli_auth_role_rank(p.role) < 1)) {
        c->status = 401;
        snprintf(msg, sizeof(msg),
                 "{\"error\": \"unauthorized\", \"message\": \"expected Authorization: Bearer "
                 "TOKEN (a viewer's or above): %s\"}\n",
                 why ? why : "not an operator's token");
        c->body = copy_text(msg, strlen(msg));
        c->len = strlen(msg);
        return;
    }
    pthread_mutex_lock(&o->mu);
    int ready = o->ready, have = o->text != NULL;
    int fresh = have && ev_mono_ms() - o->published_ms < OPS_STALE_MS;
    if (strcmp(path, "/metrics") == 0 && have) {
        c->status = 200;
        c->type = "text/plain; version=0.0.4; charset=utf-8";
        c->body = copy_text(o->text, o->len);
        c->len = o->len;
        pthread_mutex_unlock(&o->mu);
        return;
    }
    pthread_mutex_unlock(&o->mu);
    if (strcmp(path, "/metrics") == 0)
        c->status = 503, snprintf(msg, sizeof(msg), "starting: no metrics yet\n");
    else if (strcmp(path, "/healthz") == 0)
        c->status = fresh ? 200 : 503,
        snprintf(msg, sizeof(msg),
                 fresh ? "ok\n"
                       : "stalled: the service's loop has not turned for "
                         "10 s\n");
    else if (strcmp(path, "/readyz") == 0)
        c->status = ready ? 200 : 503, snprintf(msg, sizeof(msg), ready ? "ready\n" : "starting\n");
    else
        c->status = 404, snprintf(msg, sizeof(msg), "not found: GET /metrics, /healthz, /readyz\n");
    c->type = text;
    c->len = strlen(msg);
    c->body = copy_text(msg, c->len);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    cli_ops *o = lws_context_user(lws_get_context(wsi));
    ops_conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        char auth[CLI_AUTH_TOKEN_MAX + 16], token[CLI_AUTH_TOKEN_MAX + 1] = "";
        if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
            lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "only GET is served");
            return -1;
        }
        int alen = lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
        if (alen > 7 && (size_t)alen - 7 < sizeof(token) && strncasecmp(auth, "Bearer ", 7) == 0)
            memcpy(token, auth + 7, (size_t)alen - 7 + 1);
        free(c->body);
        memset(c, 0, sizeof(*c));
        answer_for(o, (const char *)in, token, c);
        if (!c->body) {
            lws_return_http_status(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, "out of memory");
            return -1;
        }
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (!c || !c->body)
            return 0;
        /* lws may free c once answered (keep-alive): take what we need */
        ops_conn a = *c;
        memset(c, 0, sizeof(*c));
        int rc = cli_http_answer(wsi, a.status, a.type, a.body, a.len);
        free(a.body);
        return rc;
    }
    case LWS_CALLBACK_CLOSED_HTTP:
        if (c) {
            free(c->body);
            c->body = NULL;
        }
        return 0;
    default: return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"http", callback, sizeof(ops_conn), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *serve(void *arg)
{
    cli_ops *o = arg;
    while (!o->stop)
        if (lws_service(o->ctx, 0) < 0)
            break;
    return NULL;
}

int cli_ops_start(cli_ops **out, const ev_conf *conf, const char *prog, char *errstr,
                  size_t errstr_size)
{
    *out = NULL;
    const char *listen = ev_conf_get(conf, "ops.listen", NULL);
    if (!listen || !*listen || strcmp(listen, "off") == 0)
        return 0;
    cli_ops *o = calloc(1, sizeof(*o));
    if (!o) {
        snprintf(errstr, errstr_size, "ops: out of memory");
        return -1;
    }
    snprintf(o->prog, sizeof(o->prog), "%s", prog);
    pthread_mutex_init(&o->mu, NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    o->start_time_s = (double)now.tv_sec + now.tv_nsec / 1e9;
    if (cli_host_port(listen, o->host, sizeof(o->host), &o->port)) {
        snprintf(errstr, errstr_size, "config ops.listen: '%s': expected HOST:PORT or off", listen);
        cli_ops_stop(o);
        return -1;
    }
    if (cli_tls_load(&o->tls, conf, prog, 1, errstr, errstr_size) ||
        cli_auth_load(&o->auth, conf, prog, errstr, errstr_size)) {
        cli_ops_stop(o);
        return -1;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = o->port;
    info.iface = strcmp(o->host, "0.0.0.0") == 0 ? NULL : o->host;
    info.protocols = protocols;
    info.user = o;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    cli_tls_apply(&o->tls, &info);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    o->ctx = lws_create_context(&info);
    if (!o->ctx) {
        snprintf(errstr, errstr_size,
                 "ops.listen %s:%d: cannot listen (in use, or not an address "
                 "here)",
                 o->host, o->port);
        cli_ops_stop(o);
        return -1;
    }
    if (pthread_create(&o->thread, NULL, serve, o)) {
        snprintf(errstr, errstr_size, "ops: cannot start a thread");
        cli_ops_stop(o);
        return -1;
    }
    o->thread_started = 1;
    fprintf(stderr, "%s: metrics, health and readiness at %s://%s:%d/metrics, /healthz, /readyz\n",
            prog, o->tls.plain ? "http" : "https", o->host, o->port);
    *out = o;
    return 0;
}

/* The process's own: CPU, memory, start time, build. */
static void process_metrics(cli_ops *o, cli_buf *b, int ready)
{
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6;
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    char labels[160];
    cli_metric(b, "process_cpu_seconds_total", "counter",
               "CPU time of this process (user + system)", cpu);
    cli_metric(b, "process_resident_memory_bytes", "gauge", "resident set size",
               (double)resident * (double)sysconf(_SC_PAGESIZE));
    cli_metric(b, "process_start_time_seconds", "gauge", "when the process started (Unix time)",
               o->start_time_s);
    cli_metric_family(b, "msrs_build_info", "gauge", "the program and its version");
    snprintf(labels, sizeof(labels), "program=\"%s\",version=\"%s\"", o->prog, MSRS_VERSION);
    cli_metric_sample(b, "msrs_build_info", labels, 1);
    cli_metric(b, "msrs_ready", "gauge",
               "1 once the service serves (its projection caught up with the log, its endpoint "
               "listens)",
               ready);
}

void cli_ops_publish(cli_ops *o, const cli_buf *text, int ready)
{
    if (!o)
        return;
    cli_buf all = {0};
    process_metrics(o, &all, ready);
    if (text && text->len)
        cli_buf_append(&all, text->data, text->len);
    pthread_mutex_lock(&o->mu);
    free(o->text);
    o->text = copy_text((const char *)all.data, all.len);
    o->len = o->text ? all.len : 0;
    o->ready = ready;
    o->published_ms = ev_mono_ms();
    pthread_mutex_unlock(&o->mu);
    cli_buf_free(&all);
}

void cli_ops_stop(cli_ops *o)
{
    if (!o)
        return;
    o->stop = 1;
    if (o->ctx)
        lws_cancel_service(o->ctx);
    if (o->thread_started)
        pthread_join(o->thread, NULL);
    if (o->ctx)
        lws_context_destroy(o->ctx);
    cli_auth_free(&o->auth);
    pthread_mutex_destroy(&o->mu);
    free(o->text);
    free(o);
}

static void appendf(cli_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(cli_buf *b, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        cli_buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void cli_metric_family(cli_buf *b, const char *name, const char *type, const char *help)
{
    appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void cli_metric_sample(cli_buf *b, const char *name, const char *labels, double value)
{
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    if (isfinite(value) && value == floor(value) && fabs(value) < 9e15)
        appendf(b, "%s%s%s%s %lld\n", name, open, labels, close, (long long)value);
    else
        appendf(b, "%s%s%s%s %.17g\n", name, open, labels, close, value);
}

void cli_metric(cli_buf *b, const char *name, const char *type, const char *help, double value)
{
    cli_metric_family(b, name, type, help);
    cli_metric_sample(b, name, "", value);
}

void cli_metric_label_escape(char *out, size_t size, const char *value)
{
    size_t n = 0;
    for (const char *p = value; *p && n + 3 < size; p++) {
        if (*p == '\\' || *p == '"')
            out[n++] = '\\', out[n++] = *p;
        else if (*p == '\n')
            out[n++] = '\\', out[n++] = 'n';
        else
            out[n++] = *p;
    }
    out[n] = '\0';
}

void cli_lag_metric(cli_buf *b, ev_log *log)
{
    int64_t lag = 0;
    char err[256];
    if (ev_log_lag(log, &lag, err, sizeof(err)) == 0)
        cli_metric(b, "msrs_consumer_lag_records", "gauge",
                   "records of the topics this process reads that the log holds beyond what it "
                   "has read",
                   (double)lag);
}

/* Counts of map's entries by their "state" field, as family name. */
static void by_state(cli_buf *b, const json_t *map, const char *name, const char *help)
{
    json_t *counts = json_object();
    const char *id;
    json_t *x;
    json_object_foreach((json_t *)map, id, x)
    {
        const char *st = json_string_value(json_object_get(x, "state")) ?: "unknown";
        json_object_set_new(counts, st,
                            json_integer(json_integer_value(json_object_get(counts, st)) + 1));
    }
    cli_metric_family(b, name, "gauge", help);
    char labels[160], esc[96];
    json_object_foreach(counts, id, x)
    {
        cli_metric_label_escape(esc, sizeof(esc), id);
        snprintf(labels, sizeof(labels), "state=\"%s\"", esc);
        cli_metric_sample(b, name, labels, (double)json_integer_value(x));
    }
    json_decref(counts);
}

void cli_state_metrics(cli_buf *b, const json_t *view, int64_t now_ns)
{
    const json_t *devices = json_object_get(view, "devices");
    by_state(b, json_object_get(view, "sessions"), "msrs_sessions", "sessions by state");
    by_state(b, json_object_get(view, "nodes"), "msrs_nodes", "nodes by state");
    const char *id;
    json_t *d;
    int64_t connected = 0;
    json_object_foreach((json_t *)devices, id, d) connected +=
        json_is_true(json_object_get(d, "connected"));
    cli_metric(b, "msrs_devices", "gauge", "devices registered (the pool)",
               (double)json_object_size(devices));
    cli_metric(b, "msrs_devices_connected", "gauge", "devices connected to a node",
               (double)connected);
    int64_t incomplete = 0;
    json_object_foreach((json_t *)json_object_get(view, "sessions"), id, d) incomplete +=
        json_is_false(json_object_get(d, "complete"));
    cli_metric(b, "msrs_sessions_incomplete", "gauge",
               "stopped sessions whose CollectionStopped says complete: false", (double)incomplete);
    static const char *const names[3] = {"msrs_device_connected",
                                         "msrs_device_clock_uncertainty_seconds",
                                         "msrs_device_clock_age_seconds"};
    static const char *const helps[3] = {"1 while a device is connected to its node",
                                         "the uncertainty of a device's last clock measurement",
                                         "how long ago a device's clock was last measured"};
    char labels[320], dev[140], node[140];
    for (int k = 0; k < 3; k++) {
        cli_metric_family(b, names[k], "gauge", helps[k]);
        json_object_foreach((json_t *)devices, id, d)
        {
            const json_t *clock = json_object_get(d, "clock");
            if (k > 0 && !clock)
                continue; /* never measured: no clock figures */
            cli_metric_label_escape(dev, sizeof(dev), id);
            cli_metric_label_escape(node, sizeof(node),
                                    json_string_value(json_object_get(d, "node_id")) ?: "");
            snprintf(labels, sizeof(labels), "device=\"%s\",node=\"%s\"", dev, node);
            double v =
                k == 0 ? json_is_true(json_object_get(d, "connected"))
                : k == 1
                    ? (double)json_integer_value(json_object_get(clock, "uncertainty_ns")) / 1e9
                    : (double)(now_ns -
                               json_integer_value(json_object_get(clock, "measured_at_ns"))) /
                          1e9;
            cli_metric_sample(b, names[k], labels, v);
        }
    }
}

/* The service's check, after saying it is ready at the first (the
 * projection has caught up), and its metrics once a second. */
typedef struct serve_check {
    ev_projection_check_cb check;
    void *arg;
    int ready;
    const char *prog;
    ev_projection *p;
    const ev_state *state;
    ev_log *log;
    cli_ops *ops;
    cli_metrics_cb metrics;
    int64_t published_ms;
} serve_check;

static void publish(serve_check *c)
{
    cli_buf b = {0};
    json_t *view = ev_state_to_json(c->state);
    char name[128];
    snprintf(name, sizeof(name), "msrs_%s_records_total", c->prog + 5); /* msrs-syncd: syncd */
    cli_metric(&b, name, "counter", "records folded from the log",
               (double)ev_projection_records(c->p));
    snprintf(name, sizeof(name), "msrs_%s_records_skipped_total", c->prog + 5);
    cli_metric(&b, name, "counter", "records the reducers refused (said on stderr)",
               (double)ev_projection_skipped(c->p));
    cli_state_metrics(&b, view, ev_now_ns());
    cli_lag_metric(&b, c->log);
    if (c->metrics)
        c->metrics(c->arg, &b);
    cli_ops_publish(c->ops, &b, c->ready);
    json_decref(view);
    cli_buf_free(&b);
    c->published_ms = ev_mono_ms();
}

static void check_ready(void *arg)
{
    serve_check *c = arg;
    if (!c->ready) {
        cli_ready("caught up with the log");
        c->ready = 1;
    }
    c->check(c->arg);
    if (c->ops && ev_mono_ms() - c->published_ms >= 1000)
        publish(c);
}

int cli_projection_serve(const char *prog, ev_log *log, ev_state *state, const char *const *topics,
                         size_t topic_count, const ev_conf *conf, int64_t check_ms,
                         ev_projection_check_cb check, cli_metrics_cb metrics, void *arg,
                         int64_t *records, int64_t *skipped)
{
    char err[512];
    int code = CLI_EXIT_OK;
    ev_projection *p = NULL;
    ev_projection_opts po = {.on_note = cli_print_note,
                             .note_arg = (void *)prog,
                             .state_file = ev_conf_get(conf, "state.file", NULL)};
    serve_check c = {check, arg, 0, prog, NULL, state, log, NULL, metrics, 0};
    if (cli_ops_start(&c.ops, conf, prog, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return CLI_EXIT_USAGE;
    }
    if (ev_projection_new(&p, log, state, topics, topic_count, &po, err, sizeof(err)) ||
        (c.p = p, ev_projection_run(p, check_ms, check_ready, &c, &cli_stop, err, sizeof(err)))) {
        fprintf(stderr, "%s: %s\n", prog, err);
        code = CLI_EXIT_FAIL;
    }
    cli_ops_stop(c.ops);
    if (records)
        *records = p ? ev_projection_records(p) : 0;
    if (skipped)
        *skipped = p ? ev_projection_skipped(p) : 0;
    ev_projection_destroy(p);
    return code;
}
