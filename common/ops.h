/* ops.h — the operations listener of a service (prefix cli_ops_, library
 * clisec): GET /metrics (the Prometheus text format, 0.0.4), /healthz and
 * /readyz on `ops.listen`, from a thread with a libwebsockets context of
 * its own, so a service whose loop is not libwebsockets' (syncd,
 * collectord, the archiver) serves them as one whose loop is does.
 *
 * Secure as every listener: TLS (tls.*) and a bearer token of at least
 * the viewer role (auth.*) unless tls.plain / auth.required = false say
 * otherwise. The service renders its metrics on its own thread, about once
 * a second, and hands the text over (cli_ops_publish); the listener
 * answers with the last text it was given:
 * - /metrics: that text (503 until the first);
 * - /healthz: 200 while the service published within the last 10 s (its
 *   loop turns), else 503;
 * - /readyz: 200 once the service said it is ready (its projection caught
 *   up, its endpoint listens: as cli_ready), else 503 "starting".
 * docs/operations.md lists each service's metrics. */
#ifndef MSRS_OPS_H
#define MSRS_OPS_H
#include "cli.h"

typedef struct cli_ops cli_ops;

/* Starts the listener on ops.listen (HOST:PORT; unset or "off": none,
 * *out NULL and 0). 0, or -1 with errstr (a bad key, a port in use). */
int cli_ops_start(cli_ops **out, const ev_conf *conf, const char *prog, char *errstr,
                  size_t errstr_size);
/* Any thread: the metrics text (copied; the process's own are added:
 * CPU, resident memory, start time, build, msrs_ready) and whether the
 * service is ready. NULL o: nothing. */
void cli_ops_publish(cli_ops *o, const cli_buf *text, int ready);
/* 1 when the metrics are due again: o is not NULL and its text was last
 * handed over a second ago or more (or never). The publisher's thread. */
int cli_ops_due(cli_ops *o);
/* Stops the thread and frees; NULL is a no-op. */
void cli_ops_stop(cli_ops *o);

/* ------------------------------------------------------------ metrics.c */

/* Text-format helpers (append to b; allocation failures leave b short).
 * A family's HELP and TYPE lines: */
void cli_metric_family(cli_buf *b, const char *name, const char *type, const char *help);
/* One sample: labels is "" or `key="value",...` (values escaped by the
 * caller: cli_metric_label_escape); the value printed as an integer when
 * it is one. */
void cli_metric_sample(cli_buf *b, const char *name, const char *labels, double value);
/* A family with one unlabelled sample. */
void cli_metric(cli_buf *b, const char *name, const char *type, const char *help, double value);
/* value with \, " and newline escaped, into out (size bytes, cut short). */
void cli_metric_label_escape(char *out, size_t size, const char *value);

/* Records per topic, for a metric labelled by topic: the first
 * CLI_TOPICS_MAX topics seen are counted (the catalog has 7). */
#define CLI_TOPICS_MAX 8
typedef struct cli_topic_counts {
    struct {
        char topic[128];
        int64_t records;
    } t[CLI_TOPICS_MAX];
    int n;
} cli_topic_counts;
/* One more record of topic. */
void cli_topic_count(cli_topic_counts *c, const char *topic);
/* The family name (a counter) with one sample per topic seen. */
void cli_topic_metric(cli_buf *b, const char *name, const char *help, const cli_topic_counts *c);

/* msrs_consumer_lag_records: what log holds beyond what this process has
 * read of its topics (ev_log_lag); left out when the log cannot say. With
 * a projection p (borrowed; NULL: none), msrs_consumer_lag_seconds: how far
 * behind the log its fold is in time (ev_projection_lag_ns). */
void cli_lag_metric(cli_buf *b, ev_log *log, ev_projection *p);

/* What a folded state (ev_state_to_json's view) says, at now_ns: sessions
 * and nodes by state, devices and how many are connected, and per device
 * its clock's uncertainty and the age of its last measurement. */
void cli_state_metrics(cli_buf *b, const json_t *view, int64_t now_ns);

/* Appends a service's own metrics (the helpers above) to b. */
typedef void (*cli_metrics_cb)(void *arg, cli_buf *b);
/* What a projection service (syncd, collectord) does once started: folds
 * topics of log into state from the beginning, then (ready: cli_ready)
 * until SIGINT/SIGTERM calls check(arg) every check_ms (config
 * state.file: a snapshot after each check), notes printed as
 * "<prog>: ...". With ops.listen it serves /metrics once a second, while
 * it folds too (not ready yet): records folded, consumer lag, the state's
 * sessions, nodes and devices, and what metrics (may be NULL) adds.
 * *records and *skipped (may be NULL) are the counts at the end. Returns
 * an exit code. */
int cli_projection_serve(const char *prog, ev_log *log, ev_state *state, const char *const *topics,
                         size_t topic_count, const ev_conf *conf, int64_t check_ms,
                         ev_projection_check_cb check, cli_metrics_cb metrics, void *arg,
                         int64_t *records, int64_t *skipped);

#endif
