/* msrs-archiver — writes every recorded session to a folder (the format:
 * archive/archive.h; manifest.json, events.avro, DEVICE/clock.avro,
 * DEVICE/STREAM.avro, video elementary streams, XDF).
 *
 * A thin loop: read -> reduce -> write. It consumes sessions, devices,
 * samples, media and commands (for each session's stop instant: data
 * whose first master time is at or after it is left out, counted) as the
 * cursor "archiver"; sessions, commands and devices are
 * folded into an ev_state by the shared reducers (ev_state_apply), and
 * each device's registration and clock rounds are kept for the archives
 * (ar_devices). A session's records and its data go to its ar_writer,
 * which builds it in ARCHIVE/.staging/SESSION; when the session's state is
 * "stopped" and every stream has the counts CollectionStopped reports (or
 * archive.finalize_timeout_ms passed: then the manifest says
 * complete=false and lists the differences) ar_writer_finish writes the
 * manifest and renames the folder into place. The cursor is committed only
 * while no session is being built, so a killed archiver re-reads every
 * open session from the log and rebuilds it. Records are deduplicated by
 * (device, stream, seq): redelivery never doubles data. An existing
 * session folder is never overwritten: the same session archived before is
 * left as it is; a different one with the same id gets "-2". */
#include "archive.h"
#include "cli.h"
#include "ops.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A data record held back while its session's stop instant is not known
 * (archive.hold_ms): the frame as the log had it. */
typedef struct ac_held {
    int64_t first_master;
    size_t len;
    unsigned char frame[];
} ac_held;

/* A session being built. */
typedef struct ac_session {
    char id[EV_ID_MAX];
    ar_writer *w;
    int64_t stopped_seen_ms; /* 0 until its state is "stopped" */
    /* held records, oldest first (held[held_head .. held_n)); the newest
     * first master time seen in the session's data */
    ac_held **held;
    size_t held_head, held_n, held_cap;
    int64_t newest_master;
    int64_t known_at_master; /* newest_master when the stop instant came; 0 before */
} ac_session;

typedef struct ac_archiver {
    ev_log *log;
    ev_codec *codec;
    ev_state *state; /* sessions and devices, folded by the shared reducers */
    json_t *view;    /* ev_state_to_json(state), refreshed when stale */
    int view_stale;
    ar_devices *history; /* registrations and clock rounds for the archives */
    const ev_schema *samples, *media;
    char dir[1024];
    int64_t finalize_timeout_ms;
    int64_t hold_ns;      /* archive.hold_ms */
    int matroska;         /* archive.matroska */
    ev_codec *held_codec; /* decodes held records as they are written */
    ac_session *sessions;
    size_t session_count;
    json_t *done;        /* sessions finalized by this process */
    cli_topic_counts in; /* records read, per topic (the metrics) */
    int64_t records, skipped, archived;
} ac_archiver;

/* The state's sessions.ID or devices.ID (borrowed), or NULL. */
static json_t *state_of(ac_archiver *a, const char *map, const char *id)
{
    if (a->view_stale || !a->view) {
        json_decref(a->view);
        a->view = ev_state_to_json(a->state);
        a->view_stale = 0;
    }
    return json_object_get(json_object_get(a->view, map), id);
}

/* The open session id, created (its writer started) when new; NULL when it
 * was archived by this process already or cannot be started. */
static ac_session *session_get(ac_archiver *a, const char *id)
{
    char err[512];
    if (!*id || json_object_get(a->done, id))
        return NULL;
    for (size_t i = 0; i < a->session_count; i++)
        if (strcmp(a->sessions[i].id, id) == 0)
            return &a->sessions[i];
    ac_session *grown = realloc(a->sessions, (a->session_count + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    a->sessions = grown;
    ac_session *s = &a->sessions[a->session_count];
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id);
    int rc = ar_writer_new(&s->w, a->dir, id, err, sizeof(err));
    if (s->w)
        ar_writer_set_matroska(s->w, a->matroska);
    if (rc)
        fprintf(stderr, "msrs-archiver: session %s: %s\n", id, err);
    if (!s->w)
        return NULL;
    a->session_count++;
    fprintf(stderr, "msrs-archiver: session %s: building in %s\n", id, ar_writer_staging(s->w));
    return s;
}

static int release_held(ac_archiver *a, ac_session *s, int all);
static void free_held(ac_session *s);

/* Finalizes every session whose data is complete (or timed out). */
static void check_sessions(ac_archiver *a)
{
    char err[512], final[1200];
    for (size_t i = 0; i < a->session_count;) {
        ac_session *s = &a->sessions[i];
        json_t *state = state_of(a, "sessions", s->id);
        int ready = 0, complete = 0;
        int stopped =
            strcmp(json_string_value(json_object_get(state, "state")) ?: "", "stopped") == 0;
        /* the stop instant may have come since; once the session is
         * stopped, what is held goes out. Writing it folds nothing into the
         * state, but may rebuild its JSON view: state is looked up again */
        release_held(a, s, stopped);
        state = state_of(a, "sessions", s->id);
        if (stopped) {
            if (!s->stopped_seen_ms)
                s->stopped_seen_ms = ev_mono_ms();
            json_t *diff = ar_writer_mismatches(s->w, state);
            ready = json_array_size(diff) == 0 ||
                    ev_mono_ms() - s->stopped_seen_ms >= a->finalize_timeout_ms;
            json_decref(diff);
        }
        if (!ready) {
            i++;
            continue;
        }
        int rc = ar_writer_finish(s->w, state, json_object_get(a->view, "devices"), a->history,
                                  final, sizeof(final), &complete, err, sizeof(err));
        if (rc == 1) {
            fprintf(stderr, "msrs-archiver: session %s: archived before in %s; left as it is\n",
                    s->id, final);
        } else if (rc < 0) {
            fprintf(stderr, "msrs-archiver: session %s: %s\n", s->id, err);
        } else {
            if (rc == 2)
                fprintf(stderr, "msrs-archiver: session %s: warning: %s\n", s->id, err);
            a->archived++;
            fprintf(stderr, "msrs-archiver: session %s archived in %s: %zu streams, %s\n", s->id,
                    final, ar_writer_stream_count(s->w),
                    complete ? "complete" : "INCOMPLETE (see manifest.json mismatches)");
            printf("%s\n", final);
            fflush(stdout);
        }
        json_object_set_new(a->done, s->id, json_true());
        ar_writer_destroy(s->w);
        free_held(s);
        a->sessions[i] = a->sessions[--a->session_count];
    }
}

/* One data record of s (samples or media) to its writer. */
static void write_data(ac_archiver *a, ac_session *s, const ev_schema *schema, avro_value_t *v)
{
    char err[512];
    int rc;
    if (schema == a->media)
        rc = ar_writer_media(s->w, v, err, sizeof(err));
    else {
        /* the device's declared streams are read only for a stream the
         * writer opens: the state's JSON view is rebuilt after each clock
         * round or status, not for each batch */
        const char *device_id = ev_value_string(v, "device_id");
        const json_t *device =
            ar_writer_has_stream(s->w, device_id, ev_value_string(v, "stream_id"))
                ? NULL
                : state_of(a, "devices", device_id);
        rc = ar_writer_samples(s->w, v, device, err, sizeof(err));
    }
    if (rc < 0)
        fprintf(stderr, "msrs-archiver: session %s: %s\n", s->id, err);
}

/* Writes s's held records older than the hold behind the newest, or all
 * of them (all: the session is stopped). The hold is archive.hold_ms until
 * the stop instant is known (the writer then leaves out what is past it);
 * from then on it shrinks by half the master time that passes, so what it
 * held goes out at 1.5 times the rate the data comes, not all at once: at
 * 100 MB/s a hold of 3 s is 300 MB, written in one burst that the log's
 * syncs waited behind (bench/README.md, session 28). 1 once the hold is
 * gone: a record then goes straight to the writer. */
static int release_held(ac_archiver *a, ac_session *s, int all)
{
    char err[512];
    ev_session x;
    int64_t hold = a->hold_ns;
    if (ev_state_session(a->state, s->id, &x) && x.has_stop_at) {
        ar_writer_stop_at(s->w, x.stop_at_ns);
        if (!s->known_at_master)
            s->known_at_master = s->newest_master ? s->newest_master : 1;
        int64_t gone = (s->newest_master - s->known_at_master) / 2;
        hold = gone >= hold ? 0 : hold - gone;
    }
    while (s->held_head < s->held_n) {
        ac_held *h = s->held[s->held_head];
        if (!all && hold > 0 && h->first_master >= s->newest_master - hold)
            break;
        const ev_schema *schema;
        avro_value_t *v;
        if (ev_codec_decode(a->held_codec, h->frame, h->len, &schema, &v, err, sizeof(err)) < 0)
            fprintf(stderr, "msrs-archiver: session %s: a held record: %s\n", s->id, err);
        else
            write_data(a, s, schema, v);
        free(h);
        s->held[s->held_head++] = NULL;
    }
    if (s->held_head == s->held_n)
        s->held_head = s->held_n = 0;
    return hold == 0;
}

static void free_held(ac_session *s)
{
    for (size_t i = s->held_head; i < s->held_n; i++)
        free(s->held[i]);
    free(s->held);
    s->held = NULL;
    s->held_head = s->held_n = s->held_cap = 0;
}

/* Samples and media of a session: to its writer. While the session's stop
 * instant is not known, archive.hold_ms of them (by master time) wait:
 * a stop command that comes late is written after the data past it (a
 * node too loaded to send it, collectord stalled), and that data is not
 * the session's (the writer leaves it out once the instant is known). */
static void on_data(ac_archiver *a, const ev_event *ev)
{
    /* Cheap test first: most data is outside sessions. */
    const char *sid = ev_value_string(ev->value, "session_id");
    if (!*sid || json_object_get(a->done, sid))
        return;
    ac_session *s = session_get(a, sid);
    if (!s)
        return;
    if (release_held(a, s, 0) && s->held_n == 0) {
        write_data(a, s, ev->schema, ev->value);
        return;
    }
    avro_value_t f, el;
    int64_t first = 0;
    if (avro_value_get_by_name(ev->value, "master_time_ns", &f, NULL) == 0) {
        if (ev->schema == a->media)
            avro_value_get_long(&f, &first);
        else if (avro_value_get_by_index(&f, 0, &el, NULL) == 0)
            avro_value_get_long(&el, &first);
    }
    ac_held *h = malloc(sizeof(*h) + ev->msg->value_len);
    if (s->held_n == s->held_cap) {
        size_t cap = s->held_cap ? 2 * s->held_cap : 256;
        ac_held **grown = h ? realloc(s->held, cap * sizeof(*grown)) : NULL;
        if (grown) {
            s->held = grown;
            s->held_cap = cap;
        }
    }
    if (!h || s->held_n == s->held_cap) { /* out of memory: written now, not held */
        free(h);
        write_data(a, s, ev->schema, ev->value);
        return;
    }
    h->first_master = first;
    h->len = ev->msg->value_len;
    memcpy(h->frame, ev->msg->value, h->len);
    s->held[s->held_n++] = h;
    if (first > s->newest_master)
        s->newest_master = first;
    release_held(a, s, 0);
}

static void on_record(ac_archiver *a, const ev_event *ev)
{
    char err[512];
    if (ev->schema == a->samples || ev->schema == a->media) {
        on_data(a, ev);
        return;
    }
    int rc = ev_state_apply(a->state, ev, err, sizeof(err));
    if (rc < 0) {
        a->skipped++;
        fprintf(stderr, "msrs-archiver: %s %s skipped: %s\n", ev_schema_short_name(ev->schema),
                ev->id, err);
        return;
    }
    a->view_stale |= rc == 0;
    if (rc == 0 && ar_devices_add(a->history, ev, err, sizeof(err)) < 0)
        fprintf(stderr, "msrs-archiver: %s %s: %s\n", ev_schema_short_name(ev->schema), ev->id,
                err);
    if (rc != 0 || strcmp(ev_schema_topic(ev->schema), "sessions") != 0)
        return;
    /* A session's own record: into its events.avro. Every record of the
     * sessions topic is keyed by its session id. */
    const char *sid = ev_value_string(ev->value, ev_schema_key_field(ev->schema));
    ac_session *s = session_get(a, sid);
    if (s && ar_writer_event(s->w, "sessions", sid, ev, err, sizeof(err)))
        fprintf(stderr, "msrs-archiver: session %s: %s\n", sid, err);
}

/* The archiver's metrics (ops.h; docs/operations.md, "Metrics"). */
static void publish_metrics(ac_archiver *a, cli_ops *ops)
{
    cli_buf b = {0};
    cli_metric(&b, "msrs_archiver_records_total", "counter", "records read from the log",
               (double)a->records);
    cli_topic_metric(&b, "msrs_archiver_records_in_total", "records read from the log, per topic",
                     &a->in);
    cli_metric(&b, "msrs_archiver_records_skipped_total", "counter",
               "records that could not be decoded or folded (said on stderr)", (double)a->skipped);
    cli_metric(&b, "msrs_archiver_sessions_archived_total", "counter",
               "sessions this process archived", (double)a->archived);
    cli_metric(&b, "msrs_archiver_sessions_open", "gauge", "sessions being built",
               (double)a->session_count);
    cli_lag_metric(&b, a->log, NULL);
    cli_ops_publish(ops, &b, 1);
    cli_buf_free(&b);
}

/* on_record for cli_read_topics. */
static void fold_one(void *arg, const ev_event *ev)
{
    on_record(arg, ev);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-archiver --log URI [--dir DIR] [options]\n"
               "Writes each recorded session to DIR/SESSION: Avro object container files per\n"
               "device stream, video as elementary streams, an XDF file, manifest.json with\n"
               "SHA-256 of every file. Prints each archived session's folder on stdout.\n\n"
               "  --dir DIR          archive root (config archive.dir, default "
               "./archive)\n" CLI_COMMON_HELP
               "\nconfig keys (defaults): archive.finalize_timeout_ms (30000) how long after\n"
               "CollectionStopped to wait for data the stop reports before archiving what came\n"
               "(marked incomplete), archive.hold_ms (3000) how far behind the newest a session's\n"
               "data waits while its stop instant is not known, archive.matroska (true) video\n"
               "also as DEVICE/STREAM.mkv (false: each video byte is written once, not twice),\n"
               "archive.cursor (archiver)\n"
               "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

typedef struct ac_args {
    ac_archiver *a;
    const char *dir;
} ac_args;

static int on_opt(void *arg, int opt, const char *val)
{
    if (opt != 'd')
        return -1;
    ((ac_args *)arg)->dir = val;
    return 0;
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    ac_args *g = arg;
    ac_archiver *a = g->a;
    const char *dir = g->dir ? g->dir : ev_conf_get(conf, "archive.dir", "archive");
    char staging[PATH_MAX];
    int64_t hold_ms;
    if (ev_conf_get_int(conf, "archive.finalize_timeout_ms", 30000, &a->finalize_timeout_ms, errstr,
                        errstr_size) ||
        ev_conf_get_int(conf, "archive.hold_ms", 3000, &hold_ms, errstr, errstr_size) ||
        ev_conf_get_bool(conf, "archive.matroska", 1, &a->matroska, errstr, errstr_size))
        return -1;
    if (hold_ms < 0) {
        snprintf(errstr, errstr_size, "config archive.hold_ms: expected 0 or more ms, got %lld",
                 (long long)hold_ms);
        return -1;
    }
    a->hold_ns = hold_ms * 1000000;
    if (strlen(dir) >= sizeof(a->dir)) {
        snprintf(errstr, errstr_size, "archive.dir: expected a path under %zu characters",
                 sizeof(a->dir));
        return -1;
    }
    snprintf(a->dir, sizeof(a->dir), "%s", dir);
    snprintf(staging, sizeof(staging), "%s/.staging", a->dir);
    if (ev_mkdirs(a->dir) || access(a->dir, W_OK)) {
        snprintf(errstr, errstr_size, "archive.dir %s: cannot write: %s", a->dir, strerror(errno));
        return -1;
    }
    ar_rm_tree(staging); /* sessions left open are rebuilt from the log */
    return 0;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    ac_archiver *a = ((ac_args *)arg)->a;
    char err[512], names[6][320];
    cli_ops *ops = NULL;
    int exit_code = CLI_EXIT_OK;
    a->log = log;
    a->codec = ev_codec_new();
    a->held_codec = ev_codec_new();
    a->state = ev_state_new();
    a->history = ar_devices_new();
    a->samples = ev_schema_by_name("SensorSampleBatch");
    a->media = ev_schema_by_name("MediaPacket");
    if (!a->codec || !a->held_codec || !a->state || !a->history) {
        fprintf(stderr, "msrs-archiver: out of memory\n");
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    a->done = json_object();
    /* commands: for each session's stop instant (StopRecording; on_data
     * holds data back while it is not known) */
    const char *topics[6] = {ev_log_topic(a->log, "sessions", names[0], sizeof(names[0])),
                             ev_log_topic(a->log, "devices", names[1], sizeof(names[1])),
                             ev_log_topic(a->log, "clock", names[2], sizeof(names[2])),
                             ev_log_topic(a->log, "samples", names[3], sizeof(names[3])),
                             ev_log_topic(a->log, "media", names[4], sizeof(names[4])),
                             ev_log_topic(a->log, "commands", names[5], sizeof(names[5]))};
    /* ev_clock_topics (devices among them) from the beginning, before the cursor takes over:
     * a restarted archiver's cursor is past the registrations and clock
     * rounds of devices that registered before it, which an archive needs
     * (found by the session e2e test under ASan: a device archived without
     * its streams after the archiver's SIGKILL). Redeliveries through the
     * cursor are ignored by event id. */
    if (cli_read_topics(conf, ev_clock_topics, 2, (ev_from){EV_FROM_BEGINNING, 0}, fold_one, a,
                        NULL, NULL, err, sizeof(err))) {
        fprintf(stderr, "msrs-archiver: devices, clock: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    if (ev_log_subscribe(a->log, ev_conf_get(conf, "archive.cursor", "archiver"), topics,
                         sizeof(topics) / sizeof(*topics), err, sizeof(err))) {
        fprintf(stderr, "msrs-archiver: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    if (cli_ops_start(&ops, conf, "msrs-archiver", err, sizeof(err))) {
        fprintf(stderr, "msrs-archiver: %s\n", err);
        exit_code = CLI_EXIT_USAGE;
        goto out;
    }
    fprintf(stderr, "msrs-archiver: archiving sessions into %s\n", a->dir);
    cli_ready("archiving");
    int64_t last_commit = 0, last_progress = ev_mono_ms(), uncommitted = 0;
    while (!cli_stop) {
        const ev_msg *m;
        ev_event ev;
        int rc = ev_log_poll(a->log, 200, &m, err, sizeof(err));
        if (rc == 0) {
            a->records++;
            uncommitted++;
            cli_topic_count(&a->in, m->topic);
            if (ev_event_decode(a->codec, m, &ev, err, sizeof(err))) {
                a->skipped++;
                fprintf(stderr, "msrs-archiver: %s offset %lld skipped: %s\n", m->topic,
                        (long long)m->offset, err);
            } else {
                on_record(a, &ev);
            }
        } else if (rc == EV_ERR_CORRUPT) { /* failed its checksum: named, counted */
            a->skipped++;
            fprintf(stderr, "msrs-archiver: skipped: %s\n", err);
        } else if (rc != EV_ERR_END && rc != EV_ERR_TIMED_OUT) {
            fprintf(stderr, "msrs-archiver: %s\n", err);
            if (rc == EV_ERR_FATAL) {
                exit_code = CLI_EXIT_FAIL;
                break;
            }
        }
        if (rc || a->records % 1000 == 0)
            check_sessions(a);
        /* The cursor moves only while nothing is half built. */
        if (uncommitted && a->session_count == 0 && ev_mono_ms() - last_commit >= 1000) {
            if (ev_log_commit(a->log, err, sizeof(err)))
                fprintf(stderr, "msrs-archiver: %s\n", err);
            last_commit = ev_mono_ms();
            uncommitted = 0;
        }
        if (cli_ops_due(ops))
            publish_metrics(a, ops);
        if (ev_mono_ms() - last_progress >= 10000) {
            last_progress = ev_mono_ms();
            fprintf(stderr, "msrs-archiver: %lld records, %zu sessions open, %lld archived\n",
                    (long long)a->records, a->session_count, (long long)a->archived);
        }
    }
    fprintf(stderr,
            "msrs-archiver: stopped: %lld records, %lld skipped, %lld sessions archived, "
            "%zu left open (rebuilt from the log at the next start)\n",
            (long long)a->records, (long long)a->skipped, (long long)a->archived, a->session_count);
out:
    cli_ops_stop(ops);
    for (size_t i = 0; i < a->session_count; i++) {
        ar_writer_destroy(a->sessions[i].w);
        free_held(&a->sessions[i]); /* rebuilt from the log at the next start */
    }
    free(a->sessions);
    ar_devices_destroy(a->history);
    json_decref(a->view);
    ev_state_destroy(a->state);
    json_decref(a->done);
    ev_codec_destroy(a->held_codec);
    ev_codec_destroy(a->codec);
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'}, {NULL, 0, NULL, 0}};
    static ac_archiver a; /* lives as long as the process */
    ac_args g = {.a = &a};
    cli_svc svc = {.name = "msrs-archiver",
                   .source = "archiver",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &g};
    return cli_svc_main(&svc, argc, argv);
}
