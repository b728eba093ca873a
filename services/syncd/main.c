/* msrs-syncd — the SynchronizationService. Folds nodes, devices and
 * sessions with the shared reducers (rebuilding its state from the start
 * of the log each time it starts: its projection is the log), and every
 * sync.check_ms decides each requested session with ev_sync_decide:
 *   ready  -> SynchronizationCompleted (event id "sync/<session>", so a
 *             restart that decides again produces the same event, which the
 *             reducers ignore)
 *   stale  -> SyncNow to the nodes of devices whose offset is too old
 *             (at most once per sync.max_age_ms / 2 per device). */
#include "cli.h"
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct sd_syncd {
    ev_log *log;
    ev_state *state;
    ev_sync_params params;
    json_t *asked;   /* device_id -> ns of the last SyncNow for it */
    json_t *waiting; /* session_id -> last reason printed */
    int64_t check_ms;
    int64_t completed, resyncs;
} sd_syncd;

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-syncd --log URI [options]\n"
               "Declares sessions synchronised when their device group is, and asks agents\n"
               "to re-sync stale clocks.\n\n" CLI_COMMON_HELP
               "\nconfig keys (defaults): sync.min_group (1), sync.max_uncertainty_us (1000),\n"
               "sync.max_age_ms (10000), sync.check_ms (200), state.file (none: a JSON snapshot\n"
               "of the folded state and its log positions, rewritten after each check, for\n"
               "msrs-replay --verify)\n"
               "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

static void resync(sd_syncd *s, json_t *stale, int64_t now)
{
    const char *node;
    json_t *devs;
    json_object_foreach(stale, node, devs)
    {
        json_t *ask = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(devs, i, d)
        {
            json_t *last = json_object_get(s->asked, json_string_value(d));
            if (last && now - json_integer_value(last) < s->params.max_age_ns / 2)
                continue;
            json_object_set_new(s->asked, json_string_value(d), json_integer(now));
            json_array_append(ask, d);
        }
        if (json_array_size(ask) && *node) {
            json_t *cmd = json_pack("{s:s, s:O, s:s}", "node_id", node, "device_ids", ask, "reason",
                                    "offset stale");
            s->resyncs++;
            cli_emit(s->log, "msrs-syncd", "SyncNow", node, cmd, NULL);
            json_decref(cmd);
        }
        json_decref(ask);
    }
}

static void check_sessions(void *arg)
{
    sd_syncd *s = arg;
    int64_t now = ev_now_ns();
    ev_session x;
    for (const char *sid = NULL; (sid = ev_state_session_next(s->state, sid, &x));) {
        char why[256];
        json_t *done = NULL, *stale = NULL;
        ev_sync_decision d =
            ev_sync_decide(s->state, sid, &s->params, now, &done, &stale, why, sizeof(why));
        if (d == EV_SYNC_READY) {
            char id[EV_ID_MAX];
            ev_event_id(id, "sync/%s", sid);
            if (cli_emit(s->log, "msrs-syncd", "SynchronizationCompleted", sid, done, id) == 0) {
                s->completed++;
                fprintf(
                    stderr,
                    "msrs-syncd: session %s synchronised: %zu devices, max uncertainty %lld us\n",
                    sid, json_array_size(json_object_get(done, "devices")),
                    (long long)json_integer_value(json_object_get(done, "max_uncertainty_ns")) /
                        1000);
            }
            json_decref(done);
        } else if (d == EV_SYNC_WAIT) {
            const char *last = json_string_value(json_object_get(s->waiting, sid));
            if (!last || strcmp(last, why) != 0) {
                fprintf(stderr, "msrs-syncd: session %s waits: %s\n", sid, why);
                json_object_set_new(s->waiting, sid, json_string(why));
            }
        }
        if (d != EV_SYNC_NONE || x.state == EV_SESSION_RECORDING)
            resync(s, stale, now);
        json_decref(stale);
    }
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    sd_syncd *s = arg;
    int64_t min_group, unc_us, age_ms;
    if (ev_conf_get_int(conf, "sync.min_group", 1, &min_group, errstr, errstr_size) ||
        ev_conf_get_int(conf, "sync.max_uncertainty_us", 1000, &unc_us, errstr, errstr_size) ||
        ev_conf_get_int(conf, "sync.max_age_ms", 10000, &age_ms, errstr, errstr_size) ||
        ev_conf_get_int(conf, "sync.check_ms", 200, &s->check_ms, errstr, errstr_size))
        return -1;
    if (min_group < 1 || unc_us <= 0 || age_ms <= 0 || s->check_ms <= 0) {
        snprintf(errstr, errstr_size,
                 "config sync.min_group: expected >= 1; sync.max_uncertainty_us, "
                 "sync.max_age_ms, sync.check_ms: expected > 0");
        return -1;
    }
    s->params = (ev_sync_params){unc_us * 1000, age_ms * 1000000, (int)min_group};
    return 0;
}

static void metrics(void *arg, cli_buf *b)
{
    sd_syncd *s = arg;
    cli_metric(b, "msrs_syncd_sessions_synchronised_total", "counter",
               "SynchronizationCompleted emitted by this process", (double)s->completed);
    cli_metric(b, "msrs_syncd_resync_requests_total", "counter",
               "SyncNow sent for devices whose offset was stale or uncertain", (double)s->resyncs);
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    static const char *const topics[] = {"nodes", "devices", "clock", "sessions"};
    sd_syncd *s = arg;
    int64_t records, skipped;
    s->log = log;
    s->state = ev_state_new();
    s->asked = json_object();
    s->waiting = json_object();
    fprintf(stderr,
            "msrs-syncd: folding the log, then checking every %lld ms (min group %d, "
            "max uncertainty %lld us, max age %lld ms)\n",
            (long long)s->check_ms, s->params.min_group,
            (long long)(s->params.max_uncertainty_ns / 1000),
            (long long)(s->params.max_age_ns / 1000000));
    int exit_code =
        cli_projection_serve("msrs-syncd", log, s->state, topics, sizeof(topics) / sizeof(*topics),
                             conf, s->check_ms, check_sessions, metrics, s, &records, &skipped);
    fprintf(stderr,
            "msrs-syncd: stopped: %lld records, %lld skipped, %lld sessions synchronised, "
            "%lld re-sync requests\n",
            (long long)records, (long long)skipped, (long long)s->completed, (long long)s->resyncs);
    json_decref(s->asked);
    json_decref(s->waiting);
    ev_state_destroy(s->state);
    return exit_code;
}

int main(int argc, char **argv)
{
    sd_syncd s = {0};
    cli_svc svc = {.name = "msrs-syncd",
                   .source = "syncd",
                   .usage = usage,
                   .configure = configure,
                   .run = run,
                   .arg = &s};
    return cli_svc_main(&svc, argc, argv);
}
