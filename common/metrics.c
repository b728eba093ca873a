/* metrics.c — the Prometheus text format, the metrics of a folded state,
 * and the loop of a projection service that serves them (ops.h). */
#include "ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void cli_topic_count(cli_topic_counts *c, const char *topic)
{
    int i = 0;
    while (i < c->n && strcmp(c->t[i].topic, topic) != 0)
        i++;
    if (i == c->n) {
        if (i == CLI_TOPICS_MAX)
            return;
        snprintf(c->t[c->n++].topic, sizeof(c->t[0].topic), "%s", topic);
    }
    c->t[i].records++;
}

void cli_topic_metric(cli_buf *b, const char *name, const char *help, const cli_topic_counts *c)
{
    char label[192], esc[160];
    cli_metric_family(b, name, "counter", help);
    for (int i = 0; i < c->n; i++) {
        cli_metric_label_escape(esc, sizeof(esc), c->t[i].topic);
        snprintf(label, sizeof(label), "topic=\"%s\"", esc);
        cli_metric_sample(b, name, label, (double)c->t[i].records);
    }
}

void cli_lag_metric(cli_buf *b, ev_log *log, ev_projection *p)
{
    int64_t lag = 0;
    char err[256];
    if (ev_log_lag(log, &lag, err, sizeof(err)) == 0)
        cli_metric(b, "msrs_consumer_lag_records", "gauge",
                   "records of the topics this process reads that the log holds beyond what it "
                   "has read",
                   (double)lag);
    if (p)
        cli_metric(b, "msrs_consumer_lag_seconds", "gauge",
                   "how far behind the log this process's fold is: the largest age of a record "
                   "(now minus its ce_time) when it was folded since the last publish, or of the "
                   "last record folded while the fold has not reached the log's end",
                   (double)ev_projection_lag_ns(p, ev_now_ns()) / 1e9);
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
} serve_check;

static void publish(serve_check *c)
{
    cli_buf b = {0};
    json_t *view = ev_state_to_json(c->state);
    char name[128];
    const char *svc = strncmp(c->prog, "msrs-", 5) == 0 ? c->prog + 5 : c->prog;
    snprintf(name, sizeof(name), "msrs_%s_records_total", svc); /* msrs-syncd: syncd */
    cli_metric(&b, name, "counter", "records folded from the log",
               (double)ev_projection_records(c->p));
    snprintf(name, sizeof(name), "msrs_%s_records_skipped_total", svc);
    cli_metric(&b, name, "counter", "records the reducers refused (said on stderr)",
               (double)ev_projection_skipped(c->p));
    cli_state_metrics(&b, view, ev_now_ns());
    cli_lag_metric(&b, c->log, c->p);
    if (c->metrics)
        c->metrics(c->arg, &b);
    cli_ops_publish(c->ops, &b, c->ready);
    json_decref(view);
    cli_buf_free(&b);
}

/* While folding: the metrics once a second, not ready yet (a long fold
 * is when lag matters). */
static void on_apply(void *arg, const ev_event *ev)
{
    serve_check *c = arg;
    (void)ev;
    if (c->p && cli_ops_due(c->ops))
        publish(c);
}

static void check_ready(void *arg)
{
    serve_check *c = arg;
    if (!c->ready) {
        cli_ready("caught up with the log");
        c->ready = 1;
    }
    c->check(c->arg);
    if (cli_ops_due(c->ops))
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
    serve_check c = {check, arg, 0, prog, NULL, state, log, NULL, metrics};
    ev_projection_opts po = {.on_note = cli_print_note,
                             .note_arg = (void *)prog,
                             .state_file = ev_conf_get(conf, "state.file", NULL),
                             .on_apply = on_apply,
                             .apply_arg = &c};
    if (cli_ops_start(&c.ops, conf, prog, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return CLI_EXIT_USAGE;
    }
    int rc = ev_projection_new(&p, log, state, topics, topic_count, &po, err, sizeof(err));
    c.p = p; /* on_apply publishes only once it is set */
    if (rc || ev_projection_run(p, check_ms, check_ready, &c, &cli_stop, err, sizeof(err))) {
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
