/* ops.c — the operations listener: /metrics, /healthz, /readyz (ops.h). */
#include "ops.h"

#include "admit.h"
#include "http.h"
#include "security.h"

#include <pthread.h>
#include <stdatomic.h>
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
    cli_admit admit; /* ops.max_connections (admit.h) */
    struct lws_context *ctx;
    pthread_t thread;
    int thread_started;
    atomic_int stop;    /* set by cli_ops_stop; lws_cancel_service wakes the thread */
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
    if (o->auth.enabled && cli_auth_token_check(&o->auth, token, &p, &why) == 0)
        why = cli_auth_role_rank(p.role) < 1 ? "a node's token, not an operator's" : NULL;
    if (o->auth.enabled && why) {
        c->status = 401;
        snprintf(msg, sizeof(msg),
                 "{\"error\": \"unauthorized\", \"message\": \"expected Authorization: Bearer "
                 "TOKEN (a viewer's or above): %s\"}\n",
                 why);
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
    const char *say;
    if (strcmp(path, "/metrics") == 0) {
        c->status = 503;
        say = "starting: no metrics yet\n";
    } else if (strcmp(path, "/healthz") == 0) {
        c->status = fresh ? 200 : 503;
        say = fresh ? "ok\n" : "stalled: the service's loop has not turned for 10 s\n";
    } else if (strcmp(path, "/readyz") == 0) {
        c->status = ready ? 200 : 503;
        say = ready ? "ready\n" : "starting\n";
    } else {
        c->status = 404;
        say = "not found: GET /metrics, /healthz, /readyz\n";
    }
    snprintf(msg, sizeof(msg), "%s", say);
    c->type = text;
    c->len = strlen(msg);
    c->body = copy_text(msg, c->len);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    cli_ops *o = lws_context_user(lws_get_context(wsi));
    ops_conn *c = user;
    if (cli_admit_callback(&o->admit, wsi, reason))
        return -1; /* ops.max_connections: refused at accept */
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
        if (c->status != 401)
            cli_admit_proven(&o->admit, wsi); /* its token allowed it (any request when
                                                 auth.required = false): never evicted */
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
    int64_t max;
    if (cli_tls_load(&o->tls, conf, prog, 1, errstr, errstr_size) ||
        cli_auth_load(&o->auth, conf, prog, errstr, errstr_size) ||
        ev_conf_get_int(conf, "ops.max_connections", 64, &max, errstr, errstr_size) ||
        cli_admit_init(&o->admit, max, "ops.max_connections", NULL, errstr, errstr_size)) {
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

int cli_ops_due(cli_ops *o)
{
    if (!o)
        return 0;
    pthread_mutex_lock(&o->mu);
    int due = ev_mono_ms() - o->published_ms >= 1000;
    pthread_mutex_unlock(&o->mu);
    return due;
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
    cli_admit_free(&o->admit); /* after the context: its connections' WSI_DESTROY reads it */
    cli_auth_free(&o->auth);
    pthread_mutex_destroy(&o->mu);
    free(o->text);
    free(o);
}
