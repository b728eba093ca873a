/* msrs-collectord — the DataCollectionService. Folds nodes, devices,
 * sessions and commands with the shared reducers (its state is the log's
 * projection, rebuilt at every start) and every collect.check_ms applies
 * ev_collect_decide to each live session: CollectionStarted with one start
 * instant in the future, StartRecording / StopRecording to the nodes,
 * CollectionStopped with the nodes' stream counts. The events' ids are
 * deterministic, so a collectord killed between two emits and restarted
 * sends only what is missing, and a duplicate changes nothing.
 *
 * With collect.auto_start = true it also opens a session by itself
 * (CollectionRequested, auto_start = true) whenever no session is live and
 * sync.min_group devices are connected, so recording begins the moment
 * they are synchronised. */
#include "cli.h"
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct cd_collectd {
    ev_log *log;
    ev_state *state;
    ev_collect_params params;
    json_t *emitted; /* ids emitted by this process: not sent twice while the log catches up */
    json_t *waiting; /* session_id -> last reason printed */
    int auto_start;
    int64_t min_group, auto_duration_ms, check_ms;
    int64_t started, stopped;
} cd_collectd;

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-collectord --log URI [options]\n"
               "Starts synchronised sessions at one instant, stops them, and reports what\n"
               "every device stream delivered (CollectionStopped).\n\n" CLI_COMMON_HELP
               "\nconfig keys (defaults): collect.stop_notice_ms (5000) a duration's stop command\n"
               "this far before its instant, collect.lead_ms (1000) start/stop instants this far\n"
               "ahead, collect.report_timeout_ms (10000), collect.check_ms (100),\n"
               "collect.auto_start (false) open a session whenever sync.min_group (1) devices\n"
               "are connected and none is live, collect.auto_duration_ms (0 = until stopped),\n"
               "state.file (none: a JSON snapshot of the folded state and its log positions,\n"
               "rewritten after each check, for msrs-replay --verify)\n"
               "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

/* Auto start: a new session when the rule says (ev_collect_auto_start). */
static void maybe_auto_start(cd_collectd *c)
{
    const ev_auto_start_params params = {c->min_group, c->auto_duration_ms};
    char sid[64];
    json_t *req;
    size_t connected;
    if (!ev_collect_auto_start(c->state, &params, ev_now_ns(), sid, sizeof(sid), &req, &connected))
        return;
    if (cli_emit(c->log, "msrs-collectord", "CollectionRequested", sid, req, NULL) == 0)
        fprintf(stderr,
                "msrs-collectord: auto start: requested session %s (%zu devices connected)\n", sid,
                connected);
    json_decref(req);
}

static void check(void *arg)
{
    cd_collectd *c = arg;
    int64_t now = ev_now_ns();
    ev_session x;
    for (const char *sid = NULL; (sid = ev_state_session_next(c->state, sid, &x));) {
        char why[512];
        json_t *todo = ev_collect_decide(c->state, sid, &c->params, now, why, sizeof(why));
        size_t i;
        json_t *e;
        json_array_foreach(todo, i, e)
        {
            const char *id = json_string_value(json_object_get(e, "id"));
            const char *type = json_string_value(json_object_get(e, "type"));
            json_t *value = json_object_get(e, "value");
            if (json_object_get(c->emitted, id))
                continue;
            if (cli_emit(c->log, "msrs-collectord", type,
                         json_string_value(json_object_get(e, "key")), value, id))
                break; /* decided again at the next check */
            json_object_set_new(c->emitted, id, json_true());
            if (strcmp(type, "CollectionStarted") == 0) {
                c->started++;
                int64_t at = json_integer_value(json_object_get(value, "start_at_ns"));
                fprintf(stderr, "msrs-collectord: session %s starts in %lld ms with %zu devices\n",
                        sid, (long long)((at - now) / 1000000),
                        json_array_size(json_object_get(value, "device_ids")));
            } else if (strcmp(type, "CollectionStopped") == 0) {
                c->stopped++;
                fprintf(stderr,
                        "msrs-collectord: session %s stopped after %.3f s: %zu streams (%s)\n", sid,
                        (double)json_integer_value(json_object_get(value, "duration_ns")) / 1e9,
                        json_array_size(json_object_get(value, "streams")),
                        json_string_value(json_object_get(value, "reason")));
            } else if (strcmp(type, "StopRecording") == 0) {
                char at[64];
                fprintf(stderr, "msrs-collectord: session %s: node %s stops at %s\n", sid,
                        json_string_value(json_object_get(value, "node_id")),
                        ev_format_time(json_integer_value(json_object_get(value, "stop_at_ns")), at,
                                       sizeof(at)));
            }
        }
        json_decref(todo);
        const char *last = json_string_value(json_object_get(c->waiting, sid));
        if (why[0] && (!last || strcmp(last, why) != 0)) {
            fprintf(stderr, "msrs-collectord: session %s: %s\n", sid, why);
            json_object_set_new(c->waiting, sid, json_string(why));
        }
    }
    if (c->auto_start)
        maybe_auto_start(c);
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    cd_collectd *c = arg;
    int64_t lead_ms, timeout_ms, notice_ms;
    const char *auto_start = ev_conf_get(conf, "collect.auto_start", "false");
    if (ev_conf_get_int(conf, "collect.lead_ms", 1000, &lead_ms, errstr, errstr_size) ||
        ev_conf_get_int(conf, "collect.stop_notice_ms", 5000, &notice_ms, errstr, errstr_size) ||
        ev_conf_get_int(conf, "collect.report_timeout_ms", 10000, &timeout_ms, errstr,
                        errstr_size) ||
        ev_conf_get_int(conf, "collect.check_ms", 100, &c->check_ms, errstr, errstr_size) ||
        ev_conf_get_int(conf, "sync.min_group", 1, &c->min_group, errstr, errstr_size) ||
        ev_conf_get_int(conf, "collect.auto_duration_ms", 0, &c->auto_duration_ms, errstr,
                        errstr_size))
        return -1;
    if (strcmp(auto_start, "true") != 0 && strcmp(auto_start, "false") != 0) {
        snprintf(errstr, errstr_size, "config collect.auto_start: expected true or false, got '%s'",
                 auto_start);
        return -1;
    }
    c->auto_start = strcmp(auto_start, "true") == 0;
    if (lead_ms < 0 || timeout_ms < 0 || notice_ms < 0 || c->check_ms <= 0 || c->min_group < 1) {
        snprintf(errstr, errstr_size,
                 "config collect.lead_ms, collect.report_timeout_ms, collect.stop_notice_ms: "
                 "expected >= 0; "
                 "collect.check_ms: expected > 0; sync.min_group: expected >= 1");
        return -1;
    }
    c->params = (ev_collect_params){lead_ms * 1000000, timeout_ms * 1000000, notice_ms * 1000000};
    return 0;
}

static void metrics(void *arg, cli_buf *b)
{
    cd_collectd *c = arg;
    cli_metric(b, "msrs_collectord_sessions_started_total", "counter",
               "CollectionStarted emitted by this process", (double)c->started);
    cli_metric(b, "msrs_collectord_sessions_stopped_total", "counter",
               "CollectionStopped emitted by this process", (double)c->stopped);
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    static const char *const topics[] = {"nodes", "devices", "sessions", "commands"};
    cd_collectd *c = arg;
    int64_t records, skipped;
    c->log = log;
    c->state = ev_state_new();
    c->emitted = json_object();
    c->waiting = json_object();
    fprintf(stderr,
            "msrs-collectord: folding the log, then checking every %lld ms (lead %lld ms, "
            "report timeout %lld ms, auto start %s)\n",
            (long long)c->check_ms, (long long)(c->params.lead_ns / 1000000),
            (long long)(c->params.report_timeout_ns / 1000000), c->auto_start ? "true" : "false");
    int exit_code = cli_projection_serve("msrs-collectord", log, c->state, topics,
                                         sizeof(topics) / sizeof(*topics), conf, c->check_ms, check,
                                         metrics, c, &records, &skipped);
    fprintf(stderr,
            "msrs-collectord: stopped: %lld records, %lld skipped, %lld sessions started, "
            "%lld stopped\n",
            (long long)records, (long long)skipped, (long long)c->started, (long long)c->stopped);
    json_decref(c->emitted);
    json_decref(c->waiting);
    ev_state_destroy(c->state);
    return exit_code;
}

int main(int argc, char **argv)
{
    cd_collectd c = {0};
    cli_svc svc = {.name = "msrs-collectord",
                   .source = "collectord",
                   .usage = usage,
                   .configure = configure,
                   .run = run,
                   .arg = &c};
    return cli_svc_main(&svc, argc, argv);
}
