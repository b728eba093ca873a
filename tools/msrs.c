/* msrs — the operator CLI:
 *   msrs schemas                      the catalog: id, record, topic, key
 *   msrs emit TYPE JSON|-             produce records (JSON, or one per line
 *                                     on stdin) on the record's topic
 *   msrs emit -                       produce {"type": T, "value": {...}}
 *                                     lines of stdin, each of its own type
 *   msrs session start|stop|list|status, msrs devices
 * The session and device views are the reducers' state folded from the
 * log, the same state the services and msrs-replay hold. */
#include "cli.h"
#include "security.h"

#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------- msrs session, msrs devices
 * Requests are records (CollectionRequested, CollectionStopRequested); the
 * views fold the log with the shared reducers. --wait follows the log until
 * the session stopped and prints what every stream delivered. */

typedef struct view {
    ev_log *log;
    ev_state *state;
    ev_projection *p;
} view;

static unsigned log_timeout_s = 30;
static volatile sig_atomic_t fold_stop;
static void on_alarm(int sig);

/* read_only: the view only reads (list, status, devices): the log is
 * opened so (log.read_only), never created. */
static int view_open(view *v, ev_conf *conf, int read_only)
{
    char err[512];
    memset(v, 0, sizeof(*v));
    struct sigaction sa = {.sa_handler = on_alarm};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    fold_stop = 0;
    alarm(log_timeout_s); /* until the fold is done: opening may wait too */
    if (read_only)
        ev_conf_set(conf, "log.read_only", "true");
    if (ev_log_open(&v->log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs: %s\n", err);
        return -1;
    }
    v->state = ev_state_new();
    ev_projection_opts po = {.on_note = cli_print_note, .note_arg = (void *)"msrs"};
    if (ev_projection_new(&v->p, v->log, v->state, ev_state_topics, EV_STATE_TOPIC_COUNT, &po, err,
                          sizeof(err))) {
        fprintf(stderr, "msrs: %s\n", err);
        ev_state_destroy(v->state);
        ev_log_destroy(v->log);
        return -1;
    }
    return 0;
}

/* Set by SIGALRM when reading the log took longer than cli.log_timeout_s.
 * The first alarm stops the fold (as SIGINT would); if closing the log
 * hangs as well (a Kafka consumer closing against brokers that are down),
 * the second, 5 s later, ends the process with exit 1. */
static void on_alarm(int sig)
{
    static const char msg[] =
        "msrs: the log did not answer within cli.log_timeout_s (is it running?)\n";
    (void)sig;
    if (fold_stop) {
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
        _exit(CLI_EXIT_FAIL);
    }
    fold_stop = 1;
    cli_stop = 1; /* what ev_projection_fold watches, as for SIGINT */
    alarm(5);
}

/* Folds the log to its end within cli.log_timeout_s, counted from
 * view_open (a log that does not answer — a Kafka cluster that is down —
 * must not hang the command). 0, or -1 (said on stderr). */
static int view_fold(view *v)
{
    char err[512] = "";
    int rc = fold_stop ? EV_ERR_TIMED_OUT : ev_projection_fold(v->p, &cli_stop, err, sizeof(err));
    if (!fold_stop)
        alarm(0);
    if (rc == 0)
        return 0;
    if (fold_stop)
        fprintf(stderr,
                "msrs: the log (%s) did not answer within %u s: %lld records read; is it "
                "running? (config cli.log_timeout_s)\n",
                ev_log_backend(v->log), log_timeout_s, (long long)ev_projection_records(v->p));
    else
        fprintf(stderr, "msrs: %s\n", *err ? err : "interrupted");
    return -1;
}

static void view_close(view *v)
{
    ev_projection_destroy(v->p);
    ev_state_destroy(v->state);
    ev_log_destroy(v->log);
}

/* Opens the view read-only and folds the log to its end: an exit code (the
 * view is open only on CLI_EXIT_OK). */
static int view_load(view *v, ev_conf *conf)
{
    if (view_open(v, conf, 1))
        return CLI_EXIT_USAGE;
    if (view_fold(v) == 0)
        return CLI_EXIT_OK;
    view_close(v);
    return CLI_EXIT_FAIL;
}

static void print_summary(const ev_session *x)
{
    printf("session %s: %s, %.3f s, %s\n", x->session_id, ev_session_state_name(x->state),
           (double)x->duration_ns / 1e9, x->reason);
    printf("  sync: %zu devices, max uncertainty %.1f us\n", x->sync_device_count,
           (double)x->sync_max_uncertainty_ns / 1e3);
    printf("  %-20s %-10s %10s %12s %6s %8s\n", "device", "stream", "samples", "bytes", "gaps",
           "dropped");
    ev_stream st;
    for (size_t i = 0; ev_session_stream(x, i, &st); i++)
        printf("  %-20s %-10s %10lld %12lld %6lld %8lld\n", st.device_id, st.stream_id,
               (long long)st.samples, (long long)st.bytes, (long long)st.gaps,
               (long long)st.dropped);
}

/* Who starts or stops a session, recorded as requested_by: the operator
 * named by auth.token (an operator token, role operator or admin), checked
 * against the lab key when this user can read it (else taken as written:
 * the log's own access control decides who may write; docs/security.md).
 * Without a token only when auth.required = false: the login name. 0, or
 * -1 said on stderr as prog. */
static int requester(const ev_conf *conf, const char *prog, char *by, size_t size)
{
    const char *token = ev_conf_get(conf, "auth.token", ""), *why = NULL;
    char err[512];
    int required = 1;
    cli_principal p;
    if (ev_conf_get_bool(conf, "auth.required", 1, &required, err, sizeof(err))) {
        fprintf(stderr, "msrs %s: %s\n", prog, err);
        return -1;
    }
    if (!*token) {
        if (required) {
            fprintf(stderr,
                    "msrs %s: config auth.token: expected an operator's token (msrs operators "
                    "token NAME --role operator), or auth.required = false\n",
                    prog);
            return -1;
        }
        snprintf(by, size, "%s",
                 getenv("USER") && ev_id_valid(getenv("USER")) ? getenv("USER") : "msrs");
        return 0;
    }
    cli_auth auth;
    const char *key = ev_conf_get(conf, "auth.key_file", "");
    int checked = *key && access(key, R_OK) == 0;
    memset(&auth, 0, sizeof(auth));
    if (checked && cli_auth_load(&auth, conf, "msrs", err, sizeof(err))) {
        fprintf(stderr, "msrs %s: %s\n", prog, err);
        cli_auth_free(&auth);
        return -1;
    }
    why = "expected KIND:ID[:ROLE]:GENERATION.HEX (msrs operators token)";
    if (checked ? cli_auth_token_check(&auth, token, &p, &why)
                : cli_auth_token_parse(token, &p)) /* without the key: the form alone */
        p.gen = 0;
    cli_auth_free(&auth);
    if (!p.gen || strcmp(p.kind, "operator") != 0 || cli_auth_role_rank(p.role) < 2) {
        fprintf(stderr, "msrs %s: config auth.token: %s\n", prog,
                !p.gen ? why
                       : "expected an operator's token with role operator or admin (a viewer "
                         "may only look)");
        return -1;
    }
    snprintf(by, size, "%s", p.id);
    return 0;
}

/* Follows the log (already folded to its end) until session sid is
 * stopped or timeout_s passes. */
static int wait_stopped(view *v, const char *sid, double timeout_s)
{
    time_t deadline = time(NULL) + (time_t)timeout_s;
    char last[64] = "";
    while (!cli_stop && time(NULL) <= deadline) {
        char err[512];
        int rc = ev_projection_step(v->p, 200, err, sizeof(err));
        if (rc && rc != EV_ERR_END && rc != EV_ERR_TIMED_OUT) {
            fprintf(stderr, "msrs: %s\n", err);
            return CLI_EXIT_FAIL;
        }
        if (rc == 0)
            continue; /* fold what is there before looking */
        ev_session x;
        int found = ev_state_session(v->state, sid, &x);
        const char *st = found ? ev_session_state_name(x.state) : "";
        if (found && strcmp(st, last) != 0) {
            snprintf(last, sizeof(last), "%s", st);
            fprintf(stderr, "msrs: session %s: %s\n", sid, st);
        }
        if (found && x.state == EV_SESSION_STOPPED) {
            print_summary(&x);
            return CLI_EXIT_OK;
        }
    }
    fprintf(stderr, "msrs: session %s: not stopped after %.0f s (state '%s')\n", sid, timeout_s,
            last);
    return CLI_EXIT_FAIL;
}

static int emit(view *v, const char *type, const char *sid, json_t *value)
{
    int rc = cli_emit(v->log, "msrs", type, sid, value, NULL);
    json_decref(value);
    return rc;
}

static int session_start(ev_conf *conf, int argc, char **argv)
{
    static const struct option opts[] = {{"devices", required_argument, NULL, 'd'},
                                         {"min-group", required_argument, NULL, 'm'},
                                         {"duration", required_argument, NULL, 'D'},
                                         {"label", required_argument, NULL, 'L'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    json_t *req = json_object(), *labels = json_object(), *devices = json_array();
    int opt, wait = 0;
    double duration = 0, timeout = -1;
    char sid[64];
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *eq, *end;
        switch (opt) {
        case 'd':
            for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ","))
                json_array_append_new(devices, json_string(tok));
            break;
        case 'm': json_object_set_new(req, "min_group", json_integer(atoi(optarg))); break;
        case 'D':
            duration = strtod(optarg, &end);
            if (*end || duration < 0) {
                fprintf(stderr, "msrs session start: --duration '%s': expected seconds >= 0\n",
                        optarg);
                goto usage;
            }
            break;
        case 'L':
            if (!(eq = strchr(optarg, '=')) || eq == optarg) {
                fprintf(stderr, "msrs session start: --label '%s': expected KEY=VALUE\n", optarg);
                goto usage;
            }
            *eq = '\0';
            json_object_set_new(labels, optarg, json_string(eq + 1));
            break;
        case 'w': wait = 1; break;
        case 't': timeout = atof(optarg); break;
        default: goto usage;
        }
    }
    if (optind < argc - 1)
        goto usage;
    if (optind == argc - 1) {
        if (!ev_id_valid(argv[optind])) {
            fprintf(stderr,
                    "msrs session start: session id '%s': expected 1-%d characters of "
                    "A-Z a-z 0-9 . _ : -\n",
                    argv[optind], EV_ID_MAX - 1);
            json_decref(req);
            json_decref(labels);
            json_decref(devices);
            return CLI_EXIT_USAGE;
        }
        snprintf(sid, sizeof(sid), "%s", argv[optind]);
    } else
        cli_session_id(sid, sizeof(sid));
    char by[EV_ID_MAX];
    if (requester(conf, "session start", by, sizeof(by))) {
        json_decref(req);
        json_decref(labels);
        json_decref(devices);
        return CLI_EXIT_USAGE;
    }
    json_object_set_new(req, "session_id", json_string(sid));
    json_object_set_new(req, "requested_by", json_string(by));
    json_object_set_new(req, "device_ids", devices);
    json_object_set_new(req, "duration_ms", json_integer((json_int_t)(duration * 1000)));
    json_object_set_new(req, "labels", labels);
    view v;
    if (view_open(&v, conf, 0)) {
        json_decref(req);
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    if (view_fold(&v) == 0) {
        ev_session old;
        if (ev_state_session(v.state, sid, &old)) {
            fprintf(stderr, "msrs session start: session '%s' exists already (state %s)\n", sid,
                    ev_session_state_name(old.state));
            json_decref(req);
            view_close(&v);
            return CLI_EXIT_USAGE;
        }
    }
    if (emit(&v, "CollectionRequested", sid, req))
        rc = CLI_EXIT_FAIL;
    else
        printf("%s\n", sid);
    fflush(stdout);
    if (!rc && wait)
        rc = wait_stopped(&v, sid, timeout > 0 ? timeout : duration + 120);
    view_close(&v);
    return rc;
usage:
    json_decref(req);
    json_decref(labels);
    json_decref(devices);
    fprintf(stderr, "usage: msrs session start [ID] [--devices A,B] [--min-group N] "
                    "[--duration SEC] [--label K=V]... [--wait] [--timeout SEC]\n");
    return CLI_EXIT_USAGE;
}

static int session_stop(ev_conf *conf, int argc, char **argv)
{
    static const struct option opts[] = {{"reason", required_argument, NULL, 'r'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    int opt, wait = 0;
    double timeout = 60;
    const char *reason = "requested";
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'r')
            reason = optarg;
        else if (opt == 'w')
            wait = 1;
        else if (opt == 't')
            timeout = atof(optarg);
        else
            goto usage;
    }
    if (optind != argc - 1)
        goto usage;
    const char *sid = argv[optind];
    view v;
    if (view_open(&v, conf, 0))
        return CLI_EXIT_USAGE;
    int rc = CLI_EXIT_OK;
    ev_session x;
    if (view_fold(&v) != 0 || !ev_state_session(v.state, sid, &x)) {
        fprintf(stderr, "msrs session stop: no session '%s' in the log\n", sid);
        view_close(&v);
        return CLI_EXIT_USAGE;
    }
    if (x.state == EV_SESSION_STOPPED) {
        fprintf(stderr, "msrs session stop: session '%s' is stopped already\n", sid);
    } else {
        char by[EV_ID_MAX];
        if (requester(conf, "session stop", by, sizeof(by)))
            rc = CLI_EXIT_USAGE;
        else if (emit(&v, "CollectionStopRequested", sid,
                      json_pack("{s:s, s:s, s:s}", "session_id", sid, "requested_by", by, "reason",
                                reason)))
            rc = CLI_EXIT_FAIL;
    }
    if (!rc && wait)
        rc = wait_stopped(&v, sid, timeout);
    view_close(&v);
    return rc;
usage:
    fprintf(stderr, "usage: msrs session stop ID [--reason TEXT] [--wait] [--timeout SEC]\n");
    return CLI_EXIT_USAGE;
}

static int session_view(ev_conf *conf, int argc, char **argv, int list)
{
    if ((list && argc != 1) || (!list && argc != 2)) {
        fprintf(stderr, "usage: msrs session list | msrs session status ID\n");
        return CLI_EXIT_USAGE;
    }
    view v;
    int opened = view_load(&v, conf);
    if (opened != CLI_EXIT_OK)
        return opened;
    int rc = CLI_EXIT_OK;
    if (list) {
        ev_session x;
        char when[64];
        printf("%-28s %-12s %7s %-30s %10s %s\n", "session", "state", "devices", "start",
               "duration", "reason");
        for (const char *sid = NULL; (sid = ev_state_session_next(v.state, sid, &x));)
            printf("%-28s %-12s %7zu %-30s %9.3fs %s\n", sid, ev_session_state_name(x.state),
                   x.sync_device_count,
                   x.start_at_ns ? ev_format_time(x.start_at_ns, when, sizeof(when)) : "-",
                   (double)x.duration_ns / 1e9, x.reason);
    } else {
        json_t *x = ev_state_session_to_json(v.state, argv[1]);
        if (!x) {
            fprintf(stderr, "msrs session status: no session '%s' in the log\n", argv[1]);
            rc = CLI_EXIT_USAGE;
        } else {
            json_dumpf(x, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
            fputc('\n', stdout);
            json_decref(x);
        }
    }
    view_close(&v);
    return rc;
}

/* cli.log_timeout_s: how long reading the log may take. 0 or -1 (said). */
static int read_log_timeout(ev_conf *conf)
{
    int64_t timeout_s = 30;
    char err[256] = "";
    if (ev_conf_get_int(conf, "cli.log_timeout_s", 30, &timeout_s, err, sizeof(err)) ||
        timeout_s <= 0) {
        fprintf(stderr, "msrs: %s\n", *err ? err : "config cli.log_timeout_s: expected > 0");
        return -1;
    }
    log_timeout_s = (unsigned)timeout_s;
    return 0;
}

static int cmd_session(ev_conf *conf, int argc, char **argv)
{
    if (read_log_timeout(conf))
        return CLI_EXIT_USAGE;
    const char *sub = argc > 0 ? argv[0] : "";
    if (strcmp(sub, "start") == 0)
        return session_start(conf, argc, argv);
    if (strcmp(sub, "stop") == 0)
        return session_stop(conf, argc, argv);
    if (strcmp(sub, "list") == 0 || strcmp(sub, "status") == 0)
        return session_view(conf, argc, argv, strcmp(sub, "list") == 0);
    fprintf(stderr, "msrs session: expected start, stop, list or status (see msrs --help)\n");
    return CLI_EXIT_USAGE;
}

/* msrs devices credential ID [--generation G], msrs nodes token ID
 * [--generation G], msrs operators token NAME --role ROLE [--generation G]:
 * what a device proves, what a node or an operator shows (security.h),
 * from the lab key of auth.key_file. */
enum issued { ISSUE_DEVICE, ISSUE_NODE, ISSUE_OPERATOR };

static int cmd_issue(ev_conf *conf, enum issued kind, int argc, char **argv)
{
    static const char *const names[] = {"devices credential", "nodes token", "operators token"};
    const char *what = names[kind];
    unsigned char key[CLI_AUTH_KEY_BYTES];
    char err[512], out[CLI_AUTH_TOKEN_MAX], *end = NULL;
    int device = kind == ISSUE_DEVICE, op = kind == ISSUE_OPERATOR;
    cli_principal p = {.gen = 1};
    snprintf(p.kind, sizeof(p.kind), "%s", op ? "operator" : "node");
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 < argc && strcmp(argv[i], "--generation") == 0) {
            p.gen = strtoll(argv[i + 1], &end, 10);
            if (!*argv[i + 1] || *end || p.gen < 1) {
                fprintf(stderr, "msrs %s: --generation %s: expected an integer >= 1\n", what,
                        argv[i + 1]);
                return CLI_EXIT_USAGE;
            }
        } else if (op && i + 1 < argc && strcmp(argv[i], "--role") == 0) {
            snprintf(p.role, sizeof(p.role), "%s", argv[i + 1]);
        } else {
            argc = 0; /* usage */
        }
    }
    if (argc < 1 || (op && !cli_auth_role_rank(p.role))) {
        fprintf(stderr, "usage: msrs %s %s [--generation G]%s\n", what, op ? "NAME" : "ID",
                op ? " --role viewer|operator|admin" : "");
        return CLI_EXIT_USAGE;
    }
    if (!ev_id_valid(argv[0])) {
        fprintf(stderr, "msrs %s: '%s': expected 1-%d characters of [A-Za-z0-9._:-]\n", what,
                argv[0], EV_ID_MAX - 1);
        return CLI_EXIT_USAGE;
    }
    const char *path = ev_conf_get(conf, "auth.key_file", "");
    if (!*path) {
        fprintf(stderr, "msrs %s: config auth.key_file: expected the lab key's path\n", what);
        return CLI_EXIT_USAGE;
    }
    if (cli_auth_read_key(path, key, err, sizeof(err))) {
        fprintf(stderr, "msrs %s: %s\n", what, err);
        return CLI_EXIT_USAGE;
    }
    snprintf(p.id, sizeof(p.id), "%s", argv[0]);
    if (device)
        cli_auth_device_credential(key, p.id, p.gen, out, sizeof(out));
    else if (cli_auth_token(key, &p, out, sizeof(out))) {
        OPENSSL_cleanse(key, sizeof(key));
        fprintf(stderr, "msrs %s: '%s': no token can be made of it\n", what, p.id);
        return CLI_EXIT_USAGE;
    }
    OPENSSL_cleanse(key, sizeof(key));
    printf("%s\n", out);
    return CLI_EXIT_OK;
}

static int cmd_devices(ev_conf *conf, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "credential") == 0)
        return cmd_issue(conf, ISSUE_DEVICE, argc - 1, argv + 1);
    if (read_log_timeout(conf))
        return CLI_EXIT_USAGE;
    (void)argv;
    if (argc != 0) {
        fprintf(stderr, "usage: msrs devices\n");
        return CLI_EXIT_USAGE;
    }
    view v;
    int opened = view_load(&v, conf);
    if (opened != CLI_EXIT_OK)
        return opened;
    ev_device d;
    int64_t connected = 0;
    json_t *with_devices = json_object(); /* the nodes with connected devices, as a set */
    printf("%-20s %-16s %-8s %-9s %14s %10s %10s %7s\n", "device", "node", "node_up", "connected",
           "offset_ms", "drift_ppm", "unc_us", "rounds");
    for (const char *id = NULL; (id = ev_state_device_next(v.state, id, &d));) {
        ev_node n;
        /* standalone agents do not register their node: "-" */
        ev_node_state node_state = ev_state_node(v.state, d.node_id, &n) ? n.state : EV_NODE_NONE;
        if (d.connected) {
            connected++;
            json_object_set_new(with_devices, d.node_id, json_true());
        }
        printf("%-20s %-16s %-8s %-9s %14.3f %10.2f %10.1f %7lld\n", id, d.node_id,
               node_state == EV_NODE_NONE      ? "-"
               : node_state == EV_NODE_EXPIRED ? "expired"
                                               : "yes",
               d.connected ? "yes" : "no", (double)d.clock_offset_ns / 1e6, d.clock_drift_ppm,
               (double)d.clock_uncertainty_ns / 1e3, (long long)d.clock_rounds);
    }
    printf("pool: %lld device%s connected on %zu node%s\n", (long long)connected,
           connected == 1 ? "" : "s", json_object_size(with_devices),
           json_object_size(with_devices) == 1 ? "" : "s");
    json_decref(with_devices);
    view_close(&v);
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------ the rest */

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs [options] COMMAND ...\n\n"
               "commands:\n"
               "  schemas                 list the record types: id, name, topic, key field\n"
               "  schemas ID              the schema of id ID (an earlier version's too) as\n"
               "                          standalone JSON, shared types in place: what a schema\n"
               "                          registry holds under that id\n"
               "  emit TYPE JSON|-        produce a record of TYPE (e.g. NodeRegistered) from\n"
               "                          JSON, or one record per line of stdin with '-';\n"
               "                          the key is the record's key field; missing fields\n"
               "                          take their schema defaults\n"
               "  emit -                  produce one record per stdin line, each written as\n"
               "                          {\"type\": TYPE, \"value\": {...}}\n"
               "  session start [ID] [--devices A,B] [--min-group N] [--duration SEC]\n"
               "                [--label K=V]... [--wait] [--timeout SEC]\n"
               "                          request a recording session (CollectionRequested);\n"
               "                          with --wait follow it until it stopped and print\n"
               "                          its counts\n"
               "  session stop ID [--reason TEXT] [--wait] [--timeout SEC]\n"
               "  session list            every session: state, devices, start, duration\n"
               "  session status ID       one session's state as JSON\n"
               "  devices                 the device pool: node, connection, clock offset\n"
               "  devices credential ID [--generation G]\n"
               "                          the credential device ID proves (from the lab key,\n"
               "                          auth.key_file; docs/security.md); revoke one with a\n"
               "                          line 'device ID G' in auth.revoked_file\n"
               "  nodes token ID [--generation G]\n"
               "                          the token node ID shows its supervisor (the agent\n"
               "                          derives generation 1 itself; auth.node_token)\n"
               "  operators token NAME --role viewer|operator|admin [--generation G]\n"
               "                          an operator's token (auth.token): viewers read the\n"
               "                          supervisor's API, operators also start and stop\n"
               "                          sessions, recorded as requested_by NAME\n"
               "  topics create [--replication-factor N] [--timeout SEC]\n"
               "                          make the catalog's topics missing on the Kafka\n"
               "                          cluster (partitions, cleanup.policy, retention.ms as\n"
               "                          docs/topics.md says; existing ones are not changed),\n"
               "                          then check them\n"
               "  topics check [--timeout SEC]\n"
               "                          check the cluster's topics against the catalog: one\n"
               "                          line per topic, ok or FAIL with what differs; each\n"
               "                          request is given SEC (30; its answer 5 s more)\n\n"
               "options:\n" CLI_COMMON_HELP
               "\nexit: 0 ok, 1 a record was refused or not acknowledged (or, with --wait, the\n"
               "session did not stop in time; topics: a topic not as the catalog says, or the\n"
               "cluster could not be asked), 2 usage or unknown session\n");
}

static int cmd_schemas(int argc, char **argv)
{
    if (argc == 1) { /* one id's schema, standalone */
        char *end = NULL;
        long id = strtol(argv[0], &end, 10);
        const char *json =
            *end == '\0' && id > 0 && id <= INT32_MAX ? ev_catalog_schema_json((int32_t)id) : NULL;
        if (!json) {
            fprintf(stderr,
                    "msrs schemas: '%s': expected a schema id of the catalog (see 'msrs "
                    "schemas')\n",
                    argv[0]);
            return CLI_EXIT_USAGE;
        }
        printf("%s\n", json);
        return CLI_EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "msrs schemas: expected at most one schema id\n");
        return CLI_EXIT_USAGE;
    }
    printf("%-6s %-45s %-10s %s\n", "id", "record", "topic", "key");
    for (size_t i = 0; i < ev_schema_count(); i++) {
        const ev_schema *s = ev_schema_at(i);
        printf("%-6d %-45s %-10s %s\n", (int)ev_schema_id(s), ev_schema_name(s), ev_schema_topic(s),
               ev_schema_key_field(s));
    }
    return CLI_EXIT_OK;
}

/* One line per topic: "ok   NAME  what" or "FAIL NAME  what". */
static void say_topic(void *opaque, const char *topic, int ok, const char *what)
{
    (void)opaque;
    printf("%-4s %-24s %s\n", ok ? "ok" : "FAIL", topic, what);
    fflush(stdout);
}

/* msrs topics create [--replication-factor N] | check: the catalog's
 * topics on a Kafka cluster (ev_log_topics, docs/operations.md). */
static int cmd_topics(ev_conf *conf, int argc, char **argv)
{
    char err[512];
    int replication = -1, problems = 0, create = argc >= 1 && strcmp(argv[0], "create") == 0;
    if (argc < 1 || (!create && strcmp(argv[0], "check") != 0)) {
        fprintf(stderr, "msrs topics: expected create or check\n");
        return CLI_EXIT_USAGE;
    }
    int timeout_s = 30;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
        int number = end && end != argv[i + 1] && *end == '\0';
        if (create && number && strcmp(argv[i], "--replication-factor") == 0 &&
            (v == -1 || (v >= 1 && v <= 32))) {
            replication = (int)v, i++;
            continue;
        }
        if (number && strcmp(argv[i], "--timeout") == 0 && v >= 1 && v <= 3600) {
            timeout_s = (int)v, i++;
            continue;
        }
        fprintf(stderr,
                "msrs topics: unexpected '%s' (expected --timeout SEC: 1-3600; create also "
                "--replication-factor N: 1-32, or -1 for the broker's default)\n",
                argv[i]);
        return CLI_EXIT_USAGE;
    }
    ev_log *log;
    if (ev_log_open(&log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs topics: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    int rc = ev_log_topics(log, create, replication, timeout_s * 1000, say_topic, NULL, &problems,
                           err, sizeof(err));
    ev_log_destroy(log);
    if (rc) {
        fprintf(stderr, "msrs topics %s: %s\n", argv[0], err);
        return rc == EV_ERR_INVALID ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    fprintf(stderr, "msrs topics %s: %d of %zu topics as the catalog says\n", argv[0],
            (int)ev_topic_count() - problems, ev_topic_count());
    return problems ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* Produces one record from text; where names the input for errors. */
static int emit_one(ev_log *log, const ev_schema *s, const char *text, const char *where)
{
    char err[512];
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);
    int rc;
    if (!j) {
        fprintf(stderr, "msrs emit: %s: column %d: %s\n", where, jerr.column, jerr.text);
        return -1;
    }
    if (!s) { /* a typed line: {"type": T, "value": {...}} */
        const char *type = json_string_value(json_object_get(j, "type"));
        json_t *value = json_object_get(j, "value");
        if (!type || !(s = ev_schema_by_name(type)) || !json_is_object(value)) {
            fprintf(stderr, "msrs emit: %s: expected {\"type\": a record type, \"value\": {...}}\n",
                    where);
            json_decref(j);
            return -1;
        }
        json_incref(value);
        json_decref(j);
        j = value;
    }
    const char *key = json_string_value(json_object_get(j, ev_schema_key_field(s)));
    if (!key || !*key) {
        fprintf(stderr, "msrs emit: %s: %s: expected a non-empty string (the key)\n", where,
                ev_schema_key_field(s));
        json_decref(j);
        return -1;
    }
    rc = ev_log_emit_json(log, s, key, j, NULL, err, sizeof(err));
    if (rc)
        fprintf(stderr, "msrs emit: %s: %s: %s\n", where, ev_schema_short_name(s), err);
    json_decref(j);
    return rc ? -1 : 0;
}

static int cmd_emit(ev_conf *conf, int argc, char **argv)
{
    char err[512];
    ev_log *log = NULL;
    const ev_schema *s;
    int exit_code = CLI_EXIT_OK;
    long long sent = 0, refused = 0;

    const char *input = argc > 0 ? argv[argc - 1] : "";
    if (argc == 1 && strcmp(argv[0], "-") == 0) {
        s = NULL; /* typed lines */
    } else if (argc != 2) {
        fprintf(stderr, "msrs emit: expected TYPE and JSON (or -), or - alone\n");
        return CLI_EXIT_USAGE;
    } else if (!(s = ev_schema_by_name(argv[0]))) {
        fprintf(stderr, "msrs emit: unknown record type '%s' (see 'msrs schemas')\n", argv[0]);
        return CLI_EXIT_USAGE;
    }
    if (ev_log_open(&log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs emit: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(input, "-") == 0) {
        char *line = NULL;
        size_t cap = 0;
        long lineno = 0;
        while (!cli_stop && getline(&line, &cap, stdin) > 0) {
            char where[64];
            lineno++;
            if (strspn(line, " \t\r\n") == strlen(line))
                continue;
            snprintf(where, sizeof(where), "stdin:%ld", lineno);
            if (emit_one(log, s, line, where))
                refused++;
            else
                sent++;
        }
        free(line);
        if (cli_stop) {
            fprintf(stderr, "msrs emit: interrupted after line %ld\n", lineno);
            refused++; /* the rest of stdin was not sent: not a success */
        }
    } else if (emit_one(log, s, input, "argument")) {
        refused++;
    } else {
        sent++;
    }
    if (ev_log_flush(log, 30000, err, sizeof(err))) {
        fprintf(stderr, "msrs emit: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
    } else {
        fprintf(stderr, "msrs emit: %lld acknowledged, %lld refused\n", sent, refused);
    }
    if (refused)
        exit_code = CLI_EXIT_FAIL;
    ev_log_destroy(log);
    return exit_code;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    char **args;
    int n = cli_svc_args(&args);
    if (n == 0) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = args[0];
    if (strcmp(cmd, "schemas") == 0)
        return cmd_schemas(n - 1, args + 1);
    if (strcmp(cmd, "emit") == 0)
        return cmd_emit(conf, n - 1, args + 1);
    if (strcmp(cmd, "devices") == 0)
        return cmd_devices(conf, n - 1, args + 1);
    if (strcmp(cmd, "topics") == 0)
        return cmd_topics(conf, n - 1, args + 1);
    if (strcmp(cmd, "session") == 0)
        return cmd_session(conf, n - 1, args + 1);
    if (strcmp(cmd, "nodes") == 0 && n >= 2 && strcmp(args[1], "token") == 0)
        return cmd_issue(conf, ISSUE_NODE, n - 2, args + 2);
    if (strcmp(cmd, "operators") == 0 && n >= 2 && strcmp(args[1], "token") == 0)
        return cmd_issue(conf, ISSUE_OPERATOR, n - 2, args + 2);
    fprintf(stderr, "msrs: unknown command '%s'\n", cmd);
    usage(stderr);
    return CLI_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    cli_svc svc = {.name = "msrs",
                   .usage = usage,
                   .run = run,
                   .max_args = argc,
                   .no_log = 1, /* each command opens it when it needs it */
                   .subcommands = 1};
    return cli_svc_main(&svc, argc, argv);
}
