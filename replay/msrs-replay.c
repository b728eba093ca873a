/* msrs-replay — rebuilds state from the log: folds node, device, session
 * and command events with the reducers the services use (libevents'
 * ev_state) and prints the state as JSON, as it is now or as it was
 * (--until), or checks it against a service's snapshot (--verify).
 * --refit rewrites an archive's master times from all its clock rounds
 * (refit.c); --republish re-emits a recorded session into a log
 * (republish.c); --archive folds a session archive folder instead of a log
 * (archive_src.c). */
#include "archive_src.h"
#include "cli.h"
#include "refit.h"
#include "republish.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DIFFS 50

static void usage(FILE *f)
{
    fprintf(
        f, "usage: msrs-replay --log URI [options]    |    msrs-replay --archive DIR [--compact]\n"
           "Folds the nodes, devices, clock, sessions and commands topics from the beginning with\n"
           "the services' reducers and prints the resulting state as JSON on stdout.\n\n"
           "  --archive DIR      fold a session archive folder instead of a log: its\n"
           "                     events.avro (the session's records, its devices'\n"
           "                     registrations) and clock rounds; no --log needed\n"
           "  --topics LIST      fold these topics (comma-separated logical names) instead\n"
           "  --until WHEN       the state as it was: WHEN is a time (RFC 3339, e.g.\n"
           "                     2026-11-22T10:00:00.5Z, or ns since the epoch) — records\n"
           "                     with a later event time are not folded — or positions\n"
           "                     TOPIC:OFFSET[,TOPIC:OFFSET...] — records at or past OFFSET\n"
           "                     (partition 0; TOPIC/P:OFFSET for partition P) are not folded\n"
           "  --verify FILE      compare with a snapshot a service wrote (config state.file):\n"
           "                     fold the snapshot's topics up to its positions, print every\n"
           "                     difference in nodes, devices and sessions (path: replay vs\n"
           "                     snapshot), exit 1 if any\n"
           "  --refit ARCHIVE --out DIR\n"
           "                     post-hoc clock correction of a session archive folder: per\n"
           "                     device a robust line through all its recorded clock rounds\n"
           "                     (a new segment after a clock reset: config refit.reset_ns,\n"
           "                     default 50000000), every master_time_ns recomputed from its\n"
           "                     device time, written to DIR (a copy; never overwritten) with\n"
           "                     the fits and new SHA-256 in its manifest. With --log, the\n"
           "                     devices' rounds in the log from refit.margin_ms (60000)\n"
           "                     before the session to as long after it are used too.\n"
           "  --republish --to URI [--prefix P] [--speed X] [--session ID]\n"
           "                     re-emit the log's records (every topic, or --topics) into the\n"
           "                     log URI with topic prefix P (default: this log's), in their\n"
           "                     recorded order and pace (X times faster; 0: as fast as it\n"
           "                     goes), keys, headers and event ids kept; --session: only from\n"
           "                     republish.margin_ms (60000) before the session to 5 s after\n"
           "  --compact          one line of JSON instead of indented\n" CLI_COMMON_HELP
           "\nThe output adds \"positions\" (next offset per topic and partition folded),\n"
           "\"records\", \"undecodable\" and \"offset_gaps\". Progress goes to stderr every\n"
           "second on long logs.\n"
           "exit: 0 ok; 1 a record could not be decoded or applied, offsets are missing\n"
           "(each named on stderr; the rest is still folded) or --verify found differences;\n"
           "2 usage, or a snapshot that cannot be read\n");
}

/* "sessions:12,devices/0:40" -> {"<prefixed topic>": {"0": 12}, ...}. */
static json_t *parse_positions(ev_log *log, const char *text)
{
    json_t *lim = json_object();
    char *copy = strdup(text), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':'), *end, *slash, full[320], part[16] = "0";
        if (!colon || colon == tok)
            goto bad;
        *colon = '\0';
        long long off = strtoll(colon + 1, &end, 10);
        if (*end || off < 0)
            goto bad;
        if ((slash = strchr(tok, '/'))) {
            *slash = '\0';
            snprintf(part, sizeof(part), "%d", atoi(slash + 1));
        }
        ev_log_topic(log, tok, full, sizeof(full));
        json_t *t = json_object_get(lim, full);
        if (!t)
            json_object_set_new(lim, full, t = json_object());
        json_object_set_new(t, part, json_integer(off));
    }
    free(copy);
    return lim;
bad:
    free(copy);
    json_decref(lim);
    return NULL;
}

/* Prints where a and b differ below path; returns how many differences. */
static int diff(const char *path, json_t *a, json_t *b, int printed)
{
    char sub[1024];
    int n = 0;
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v)
        {
            if (snprintf(sub, sizeof(sub), "%s.%s", path, k) >= (int)sizeof(sub))
                sub[sizeof(sub) - 2] = '~'; /* a path this deep is cut */
            n += diff(sub, v, json_object_get(b, k), printed + n);
        }
        json_object_foreach(b, k, v) if (!json_object_get(a, k))
        {
            if (snprintf(sub, sizeof(sub), "%s.%s", path, k) >= (int)sizeof(sub))
                sub[sizeof(sub) - 2] = '~';
            n += diff(sub, NULL, v, printed + n);
        }
        return n;
    }
    if (json_is_array(a) && json_is_array(b) && json_array_size(a) == json_array_size(b)) {
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (snprintf(sub, sizeof(sub), "%s[%zu]", path, i) >= (int)sizeof(sub))
                sub[sizeof(sub) - 2] = '~';
            n += diff(sub, json_array_get(a, i), json_array_get(b, i), printed + n);
        }
        return n;
    }
    if (a && b && json_equal(a, b))
        return 0;
    if (printed < MAX_DIFFS) {
        char *x = a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        char *y = b ? json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        fprintf(stderr, "msrs-replay: differs at %s: replay %.200s, snapshot %.200s\n", path + 1,
                x ? x : "(absent)", y ? y : "(absent)");
        free(x);
        free(y);
    }
    return 1;
}

/* list ("a,b,c") split into at most max topics; returns the copy they
 * point into (to free). */
static char *split_topics(const char *list, const char **topics, size_t max, size_t *count)
{
    char *copy = strdup(list), *save = NULL;
    *count = 0;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t && *count < max;
         t = strtok_r(NULL, ",", &save))
        topics[(*count)++] = t;
    return copy;
}

/* --republish: the destination takes this log's config (kafka.*, sqlite.*,
 * prefix) with log = --to and topic.prefix = --prefix. */
static int run_republish(const ev_conf *conf, int republish, const char *to, const char *prefix,
                         const char *speed_arg, const char *session, const char *topics_arg)
{
    const char *topics[16];
    size_t count = 0;
    char err[512], *end = NULL, *copy = NULL;
    double speed = speed_arg ? strtod(speed_arg, &end) : 1;
    int64_t margin_ms = 0;
    ev_log *dst = NULL;
    int rc = CLI_EXIT_USAGE;
    if (!republish || !to) {
        fprintf(stderr, "msrs-replay: --to, --prefix, --speed and --session go with --republish, "
                        "which needs --to URI\n");
        return CLI_EXIT_USAGE;
    }
    if (speed_arg && (*end || speed < 0)) {
        fprintf(stderr, "msrs-replay: --speed '%s': expected a number >= 0 (1 = recorded pace)\n",
                speed_arg);
        return CLI_EXIT_USAGE;
    }
    if (ev_conf_get_int(conf, "republish.margin_ms", 60000, &margin_ms, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    copy = split_topics(topics_arg ? topics_arg
                                   : "nodes,devices,clock,sessions,commands,presence,samples,media",
                        topics, 16, &count);
    ev_conf *dc = cli_conf_copy(conf);
    ev_conf_set(dc, "log", to);
    ev_conf_set(dc, "log.read_only", "false"); /* the destination is written */
    if (prefix)
        ev_conf_set(dc, "topic.prefix", prefix);
    if (ev_log_open(&dst, dc, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: --to %s: %s\n", to, err);
    } else {
        rc = rp_republish(conf, dst, topics, count, session, speed, margin_ms);
    }
    ev_log_destroy(dst);
    ev_conf_destroy(dc);
    free(copy);
    return rc;
}

typedef struct rp_opts {
    int compact, republish;
    const char *topics_arg, *until, *verify, *refit, *out_dir, *to, *prefix, *speed_arg, *session;
    const char *archive;
} rp_opts;

static int on_opt(void *arg, int opt, const char *val)
{
    rp_opts *o = arg;
    switch (opt) {
    case 'C': o->compact = 1; return 0;
    case 'T': o->topics_arg = val; return 0;
    case 'U': o->until = val; return 0;
    case 'V': o->verify = val; return 0;
    case 'R': o->refit = val; return 0;
    case 'O': o->out_dir = val; return 0;
    case 'P': o->republish = 1; return 0;
    case 'A': o->archive = val; return 0;
    case 'o': o->to = val; return 0;
    case 'p': o->prefix = val; return 0;
    case 's': o->speed_arg = val; return 0;
    case 'S': o->session = val; return 0;
    default: return -1;
    }
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    const rp_opts *o = arg;
    if (o->verify && (o->until || o->topics_arg)) {
        snprintf(errstr, errstr_size,
                 "--verify takes its topics and positions from the "
                 "snapshot: not with --until or --topics");
        return -1;
    }
    return 0;
}

/* --archive DIR: the state of a session archive folder. */
static int run_archive(const rp_opts *o)
{
    char err[512];
    int exit_code;
    int64_t records = 0;
    ev_state *st = NULL;
    if (ev_catalog_init(err, sizeof(err)) || !(st = ev_state_new())) {
        fprintf(stderr, "msrs-replay: %s\n", st ? err : "out of memory");
        return CLI_EXIT_USAGE;
    }
    exit_code = as_fold_archive(o->archive, st, &records) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    json_t *state = ev_state_to_json(st), *j = json_object();
    json_object_update(j, state);
    json_object_set_new(j, "records", json_integer(records));
    json_object_set_new(j, "archive", json_string(o->archive));
    json_dumpf(j, stdout, JSON_SORT_KEYS | (o->compact ? JSON_COMPACT : JSON_INDENT(2)));
    fputc('\n', stdout);
    json_decref(state);
    json_decref(j);
    ev_state_destroy(st);
    return exit_code;
}

/* --refit ARCHIVE --out DIR [--log URI] */
static int run_refit(const rp_opts *o, ev_conf *conf)
{
    char err[512];
    int exit_code = CLI_EXIT_OK;
    ev_log *log = NULL;
    int64_t reset_ns = 0, margin_ms = 0;
    if (!o->refit || !o->out_dir) {
        fprintf(stderr, "msrs-replay: --refit ARCHIVE and --out DIR go together\n");
        exit_code = CLI_EXIT_USAGE;
    } else if (ev_conf_get_int(conf, "refit.reset_ns", 50000000, &reset_ns, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
    } else if (reset_ns <= 0) {
        fprintf(stderr, "msrs-replay: config refit.reset_ns: expected a positive integer\n");
        exit_code = CLI_EXIT_USAGE;
    } else if (ev_conf_get_int(conf, "refit.margin_ms", 60000, &margin_ms, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
    } else if (ev_conf_get(conf, "log", NULL) &&
               (ev_catalog_init(err, sizeof(err)) || ev_log_open(&log, conf, err, sizeof(err)))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
    } else {
        exit_code = rf_refit_archive(o->refit, o->out_dir, reset_ns, log, margin_ms * 1000000LL);
    }
    ev_log_destroy(log);
    return exit_code;
}

/* The log folded into state (--until, --verify, --topics). */
static int run_fold(const rp_opts *o, ev_conf *conf)
{
    char err[512];
    int exit_code = CLI_EXIT_OK;
    ev_log *log = NULL;
    json_t *snapshot = NULL, *limit = NULL;
    if (ev_catalog_init(err, sizeof(err)) || ev_log_open(&log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    ev_state *state = ev_state_new();
    ev_projection *p = NULL;
    ev_projection_opts po = {.on_note = cli_print_note, .note_arg = (void *)"msrs-replay"};
    const char *topics[8];
    size_t topic_count = 0;
    char *topic_copy = NULL;

    if (o->verify) {
        json_error_t je;
        if (!(snapshot = json_load_file(o->verify, 0, &je))) {
            fprintf(stderr, "msrs-replay: %s:%d: %s\n", o->verify, je.line, je.text);
            exit_code = CLI_EXIT_USAGE;
            goto out;
        }
        json_t *pos = json_object_get(snapshot, "positions");
        const char *k;
        json_t *v;
        if (!json_is_object(pos) || json_object_size(pos) == 0 || json_object_size(pos) > 8) {
            fprintf(stderr,
                    "msrs-replay: %s: field \"positions\": expected an object of 1 to 8 "
                    "topics (a snapshot written by a service's state.file)\n",
                    o->verify);
            exit_code = CLI_EXIT_USAGE;
            goto out;
        }
        json_object_foreach(pos, k, v) topics[topic_count++] = k;
        po.limit = pos;
    } else {
        topic_copy =
            split_topics(o->topics_arg ? o->topics_arg : "nodes,devices,clock,sessions,commands",
                         topics, 8, &topic_count);
        if (o->until && strchr(o->until, ':') && !strchr(o->until, 'T')) {
            if (!(limit = parse_positions(log, o->until))) {
                fprintf(stderr,
                        "msrs-replay: --until '%s': expected TOPIC:OFFSET[,TOPIC:OFFSET...]\n",
                        o->until);
                exit_code = CLI_EXIT_USAGE;
                goto out;
            }
            po.limit = limit;
        } else if (o->until) {
            char *end;
            long long ns = strtoll(o->until, &end, 10);
            int64_t t;
            if (*end == '\0' && ns > 0)
                po.until_ns = ns;
            else if (ev_parse_time(o->until, strlen(o->until), &t) == 0)
                po.until_ns = t;
            else {
                fprintf(stderr,
                        "msrs-replay: --until '%s': expected an RFC 3339 time, ns since "
                        "the epoch, or TOPIC:OFFSET\n",
                        o->until);
                exit_code = CLI_EXIT_USAGE;
                goto out;
            }
        }
    }
    if (ev_projection_new(&p, log, state, topics, topic_count, &po, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
        goto out;
    }
    if (ev_projection_fold(p, &cli_stop, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
    }
    json_t *j = ev_projection_snapshot(p);
    if (o->verify) {
        static const char *const parts[] = {"nodes", "devices", "sessions"};
        int n = 0;
        for (size_t i = 0; i < 3; i++) {
            char path[64];
            snprintf(path, sizeof(path), ".%s", parts[i]);
            n += diff(path, json_object_get(j, parts[i]), json_object_get(snapshot, parts[i]), n);
        }
        if (n) {
            fprintf(stderr, "msrs-replay: %d difference%s from %s\n", n, n == 1 ? "" : "s",
                    o->verify);
            exit_code = CLI_EXIT_FAIL;
        } else {
            fprintf(stderr, "msrs-replay: the replayed state matches %s (%lld records folded)\n",
                    o->verify, (long long)ev_projection_records(p));
        }
    } else {
        json_dumpf(j, stdout, JSON_SORT_KEYS | (o->compact ? JSON_COMPACT : JSON_INDENT(2)));
        fputc('\n', stdout);
    }
    json_decref(j);
    if (ev_projection_skipped(p) || ev_projection_gaps(p))
        exit_code = CLI_EXIT_FAIL;
out:
    free(topic_copy);
    json_decref(snapshot);
    json_decref(limit);
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
    return exit_code;
}

static int run(void *arg, ev_conf *conf, ev_log *unused)
{
    const rp_opts *o = arg;
    /* The log replayed from is only read: opened read-only, never created. */
    ev_conf_set(conf, "log.read_only", "true");
    if (o->archive)
        return run_archive(o);
    if (o->refit || o->out_dir)
        return run_refit(o, conf);
    if (o->republish || o->to || o->prefix || o->speed_arg || o->session) {
        /* it opens a reader per topic */
        return run_republish(conf, o->republish, o->to, o->prefix, o->speed_arg, o->session,
                             o->topics_arg);
    }
    return run_fold(o, conf);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"compact", no_argument, NULL, 'C'},
                                         {"topics", required_argument, NULL, 'T'},
                                         {"until", required_argument, NULL, 'U'},
                                         {"verify", required_argument, NULL, 'V'},
                                         {"refit", required_argument, NULL, 'R'},
                                         {"out", required_argument, NULL, 'O'},
                                         {"republish", no_argument, NULL, 'P'},
                                         {"archive", required_argument, NULL, 'A'},
                                         {"to", required_argument, NULL, 'o'},
                                         {"prefix", required_argument, NULL, 'p'},
                                         {"speed", required_argument, NULL, 's'},
                                         {"session", required_argument, NULL, 'S'},
                                         {NULL, 0, NULL, 0}};
    rp_opts o = {0};
    cli_svc svc = {.name = "msrs-replay",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &o,
                   .no_log = 1}; /* each mode opens the logs it reads */
    return cli_svc_main(&svc, argc, argv);
}
