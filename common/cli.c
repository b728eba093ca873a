/* cli.c — what the msrs binaries share: options, configuration, signals,
 * the start-up prologue, notes, emit, a growable buffer (cli.h). */
#include "cli.h"

#include <stdarg.h>
#include <systemd/sd-daemon.h>

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

volatile sig_atomic_t cli_stop;

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_common_opt(cli_common *c, int opt, const char *arg)
{
    switch (opt) {
    case 'l': c->log_uri = arg; return 1;
    case 'c': c->config_path = arg; return 1;
    case 'X':
        if (c->prop_count < CLI_MAX_PROPS)
            c->props[c->prop_count++] = arg;
        else
            c->props_dropped++;
        return 1;
    default: return 0;
    }
}

ev_conf *cli_conf_build(const char *prog, const cli_common *c)
{
    char err[512];
    if (c->props_dropped) {
        fprintf(stderr, "%s: more than %d -X options (put them in a --config file)\n", prog,
                CLI_MAX_PROPS);
        return NULL;
    }
    ev_conf *conf = ev_conf_new();
    const char *path = c->config_path ? c->config_path : getenv("MSRS_CONFIG");
    if (!conf)
        return NULL;
    if (path && *path && ev_conf_load_file(conf, path, err, sizeof(err)))
        goto fail;
    if (ev_conf_apply_env(conf, err, sizeof(err)))
        goto fail;
    if (c->log_uri)
        ev_conf_set(conf, "log", c->log_uri);
    for (size_t i = 0; i < c->prop_count; i++)
        if (ev_conf_set_pair(conf, c->props[i], err, sizeof(err)))
            goto fail;
    if (ev_conf_check_keys(conf, ev_conf_known_keys, err, sizeof(err)))
        goto fail;
    return conf;
fail:
    fprintf(stderr, "%s: %s\n", prog, err);
    ev_conf_destroy(conf);
    return NULL;
}

int cli_host_port(const char *text, char *host, size_t size, int *port)
{
    const char *colon = strrchr(text, ':');
    char *end = NULL;
    long p = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == text || (size_t)(colon - text) >= size || !end || *end || p <= 0 ||
        p > 65535)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    *port = (int)p;
    return 0;
}

int cli_conf_ints(const ev_conf *conf, const cli_int_key *keys, size_t n, const char *prog)
{
    char err[256];
    for (size_t i = 0; i < n; i++) {
        if (ev_conf_get_int(conf, keys[i].key, keys[i].def, keys[i].out, err, sizeof(err))) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return -1;
        }
        if (*keys[i].out < keys[i].min) {
            fprintf(stderr, "%s: config %s (%lld): expected at least %lld\n", prog, keys[i].key,
                    (long long)*keys[i].out, (long long)keys[i].min);
            return -1;
        }
    }
    return 0;
}

json_t *cli_json_error(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:s, s:s}", "error", code, "message", msg);
}

void cli_session_id(char *out, size_t size)
{
    char when[64];
    ev_format_time(ev_now_ns(), when, sizeof(when));
    snprintf(out, size, "ses-%.4s%.2s%.2sT%.2s%.2s%.2s", when, when + 5, when + 8, when + 11,
             when + 14, when + 17);
}

int cli_emit(ev_log *log, const char *prog, const char *type, const char *key, json_t *value,
             const char *id)
{
    char err[512];
    ev_emit_opts o = {.id = id};
    int rc = ev_log_emit_json(log, ev_schema_by_name(type), key, value, &o, err, sizeof(err));
    if (!rc)
        rc = ev_log_flush(log, 10000, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s: emit %s for %s: %s\n", prog, type, key, err);
    return rc;
}

size_t cli_buf_cap_for(const cli_buf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    return b->len + n > b->cap ? cap : b->cap;
}

long cli_fd_limit_raise(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < want) {
        rlim_t to = (rlim_t)want;
        if (rl.rlim_max != RLIM_INFINITY && to > rl.rlim_max)
            to = rl.rlim_max;
        struct rlimit raised = {to, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = to;
    }
    return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
}

unsigned char *cli_buf_room(cli_buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = cli_buf_cap_for(b, n);
        unsigned char *grown = realloc(b->data, cap);
        if (!grown)
            return NULL;
        b->data = grown;
        b->cap = cap;
    }
    return b->data + b->len;
}

int cli_buf_append(cli_buf *b, const void *p, size_t n)
{
    unsigned char *at = cli_buf_room(b, n);
    if (!at)
        return -1;
    if (n)
        memcpy(at, p, n);
    b->len += n;
    return 0;
}

void cli_buf_free(cli_buf *b)
{
    free(b->data);
    *b = (cli_buf){0};
}

void cli_print_note(void *prog, const ev_projection_note *n)
{
    const char *name = prog;
    switch (n->kind) {
    case EV_PROJ_SKIPPED:
        fprintf(stderr, "%s: skipped %s offset %lld: %s\n", name, n->topic, (long long)n->offset,
                n->message);
        break;
    case EV_PROJ_GAP:
        fprintf(stderr, "%s: %s partition %d: offsets %lld..%lld are missing from the log\n", name,
                n->topic, (int)n->partition, (long long)n->offset,
                (long long)(n->offset + n->count - 1));
        break;
    case EV_PROJ_CAUGHT_UP:
        fprintf(stderr, "%s: state rebuilt from %lld records\n", name, (long long)n->records);
        break;
    case EV_PROJ_PROGRESS:
        fprintf(stderr, "%s: %lld records folded\n", name, (long long)n->records);
        break;
    case EV_PROJ_STATE_FILE: fprintf(stderr, "%s: %s\n", name, n->message); break;
    case EV_PROJ_LOG_ERROR: fprintf(stderr, "%s: log: %s (retrying)\n", name, n->message); break;
    }
}

/* ------------------------------------------------------------ svc_main */

static int svc_argc;
static char **svc_argv;

int cli_svc_args(char ***argv)
{
    *argv = svc_argv;
    return svc_argc;
}

/* The common long options followed by svc's own: a new array (free it). */
static struct option *svc_longopts(const cli_svc *svc)
{
    static const struct option common[] = {CLI_COMMON_LONGOPTS};
    _Static_assert(sizeof(common) / sizeof(common[0]) == CLI_COMMON_LONGOPT_COUNT,
                   "CLI_COMMON_LONGOPT_COUNT is the number of CLI_COMMON_LONGOPTS");
    size_t nc = sizeof(common) / sizeof(common[0]), no = 0;
    while (svc->opts && svc->opts[no].name)
        no++;
    struct option *all = calloc(nc + no + 1, sizeof(*all));
    if (!all)
        return NULL;
    memcpy(all, common, sizeof(common));
    if (no)
        memcpy(all + nc, svc->opts, no * sizeof(*all));
    return all;
}

int cli_svc_main(const cli_svc *svc, int argc, char **argv)
{
    char err[512], shortopts[128];
    cli_common common = {0};
    ev_conf *conf = NULL;
    ev_log *log = NULL;
    int opt, code = CLI_EXIT_USAGE;

    /* First thing: a SIGTERM that comes while starting must still stop us cleanly. */
    cli_install_signals();
    struct option *longopts = svc_longopts(svc);
    if (!longopts) {
        fprintf(stderr, "%s: out of memory\n", svc->name);
        return CLI_EXIT_FAIL;
    }
    snprintf(shortopts, sizeof(shortopts), "%s%s%s", svc->subcommands ? "+" : "",
             CLI_COMMON_SHORTOPTS, svc->shortopts ? svc->shortopts : "");
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        if (cli_common_opt(&common, opt, optarg))
            continue;
        if (opt == 'h') {
            svc->usage(stdout);
            code = CLI_EXIT_OK;
            goto out;
        }
        if (opt == CLI_OPT_VERSION) {
            printf("%s %s\n", svc->name, MSRS_VERSION);
            code = CLI_EXIT_OK;
            goto out;
        }
        if (opt == '?' || opt == ':' || !svc->on_opt || svc->on_opt(svc->arg, opt, optarg)) {
            svc->usage(stderr);
            goto out;
        }
    }
    if (argc - optind > svc->max_args) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", svc->name, argv[optind]);
        goto out;
    }
    svc_argc = argc - optind;
    svc_argv = argv + optind;
    if (!(conf = cli_conf_build(svc->name, &common)))
        goto out;
    if (svc->source && !ev_conf_get(conf, "source", NULL))
        ev_conf_set(conf, "source", svc->source);
    err[0] = '\0';
    if (svc->configure && svc->configure(svc->arg, conf, err, sizeof(err))) {
        if (err[0])
            fprintf(stderr, "%s: %s\n", svc->name, err);
        goto out;
    }
    if (ev_catalog_init(err, sizeof(err))) { /* a broken build, not the user's */
        fprintf(stderr, "%s: %s\n", svc->name, err);
        code = CLI_EXIT_FAIL;
        goto out;
    }
    int rc = svc->no_log ? 0 : ev_log_open(&log, conf, err, sizeof(err));
    if (rc) {
        /* a wrong URI or file is the configuration's (2); a log that is
         * there and fails is a failure at run time (1) */
        fprintf(stderr, "%s: %s\n", svc->name, err);
        code = rc == EV_ERR_IO || rc == EV_ERR_FATAL || rc == EV_ERR_NOMEM ? CLI_EXIT_FAIL
                                                                           : CLI_EXIT_USAGE;
        goto out;
    }
    code = svc->run(svc->arg, conf, log);
    sd_notify(0, "STOPPING=1");
out:
    ev_log_destroy(log);
    ev_conf_destroy(conf);
    free(longopts);
    return code;
}

void cli_ready(const char *status)
{
    static int said;
    sd_notifyf(0, "%sSTATUS=%s", said ? "" : "READY=1\n", status);
    said = 1;
}

static int copy_key(void *dst, const char *key, const char *value)
{
    return ev_conf_set(dst, key, value);
}

ev_conf *cli_conf_copy(const ev_conf *conf)
{
    ev_conf *c = ev_conf_new();
    if (c)
        ev_conf_foreach(conf, "", copy_key, c);
    return c;
}

int cli_read_topics(const ev_conf *conf, const char *const *topics, size_t count, ev_from from,
                    void (*fn)(void *arg, const ev_event *ev), void *arg, int64_t *records,
                    int64_t *skipped, char *errstr, size_t errstr_size)
{
    char full[8][320];
    const char *names[8];
    const ev_msg *m;
    ev_event ev;
    ev_log *log = NULL;
    ev_codec *codec = ev_codec_new();
    ev_conf *ro = cli_conf_copy(conf);
    int rc = codec && ro ? 0 : EV_ERR_NOMEM;
    if (count > 8)
        count = 8;
    if (!rc) {
        ev_conf_set(ro, "log.read_only", "true");
        rc = ev_log_open(&log, ro, errstr, errstr_size);
    }
    for (size_t i = 0; !rc && i < count; i++)
        names[i] = ev_log_topic(log, topics[i], full[i], sizeof(full[i]));
    if (!rc)
        rc = ev_log_assign(log, names, count, from, errstr, errstr_size);
    while (!rc && !cli_stop) {
        rc = ev_log_poll(log, 1000, &m, errstr, errstr_size);
        if (rc == EV_ERR_END) {
            rc = 0;
            break;
        }
        if (rc == EV_ERR_TIMED_OUT) {
            rc = 0;
        } else if (rc == EV_ERR_CORRUPT ||
                   (!rc && ev_event_decode(codec, m, &ev, errstr, errstr_size))) {
            rc = 0;
            if (skipped)
                (*skipped)++;
        } else if (!rc) {
            fn(arg, &ev);
            if (records)
                (*records)++;
        }
    }
    ev_log_destroy(log);
    ev_codec_destroy(codec);
    ev_conf_destroy(ro);
    return rc;
}

void cli_bucket_init(cli_bucket *b, double burst, int64_t now_ns)
{
    b->tokens = burst;
    b->at_ns = now_ns;
}

int cli_bucket_take(cli_bucket *b, double rate_per_s, double burst, int64_t now_ns)
{
    b->tokens += (double)(now_ns - b->at_ns) * 1e-9 * rate_per_s;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at_ns = now_ns;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

int64_t cli_bucket_wait_ms(const cli_bucket *b, double rate_per_s)
{
    return b->tokens >= 1.0 ? 0 : (int64_t)((1.0 - b->tokens) / rate_per_s * 1000) + 1;
}
