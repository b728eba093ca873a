/* restore.c — layer 6b: an agent that starts again rebuilds the sessions
 * it was recording from the log, not from its cursor (see restore.h). */
#include "restore.h"

#include "device.h"
#include "recording.h"

#include <stdio.h>
#include <string.h>

/* How far back the devices topic is read for a device's clock probes (the
 * estimator's window is 512 probes, about 64 rounds of 2 s). */
#define RESTORE_CLOCK_MS 150000
/* How long before the earliest start instant the data topics are read:
 * the last sequence numbers before a session began, for a crash early in
 * it. */
#define RESTORE_DATA_LEAD_MS 10000

static int open_log(ev_log **out, const ev_conf *conf, char *err, size_t n)
{
    int rc = ev_log_open(out, conf, err, n);
    if (rc)
        *out = NULL;
    return rc;
}

/* The sessions whose StartRecording for this node is on the log and that
 * neither stopped nor have this node's RecordingReport. */
static int restore_sessions(ag_agent *a, const ev_conf *conf, int64_t *min_start, char *err,
                            size_t n)
{
    static const char *const topics[] = {"sessions", "commands"};
    ev_log *log = NULL;
    ev_state *state = ev_state_new();
    ev_projection *p = NULL;
    ev_session x;
    int rc = state ? open_log(&log, conf, err, n) : EV_ERR_NOMEM;
    if (!rc)
        rc = ev_projection_new(&p, log, state, topics, 2, NULL, err, n);
    if (!rc)
        rc = ev_projection_fold(p, &cli_stop, err, n);
    if (rc)
        goto out;
    for (const char *id = NULL; (id = ev_state_session_next(state, id, &x));) {
        int64_t start_at, stop_at = INT64_MAX;
        int reported = 0;
        if (x.state == EV_SESSION_STOPPED || !ev_session_command(&x, a->cfg.node_id, 0, &start_at))
            continue;
        for (const char *r = NULL; !reported && (r = ev_session_report_next(&x, r, NULL));)
            reported = strcmp(r, a->cfg.node_id) == 0;
        if (reported)
            continue;
        ev_session_command(&x, a->cfg.node_id, 1, &stop_at);
        /* the devices of this node in the session's group, as collectord
         * sent them in StartRecording */
        json_t *devices = json_array();
        const char *device, *node;
        for (size_t i = 0; ev_session_sync_device(&x, i, &device, &node); i++)
            if (strcmp(node, a->cfg.node_id) == 0)
                json_array_append_new(devices, json_string(device));
        if (ag_recording_restore(a, id, start_at, stop_at, devices) && start_at < *min_start)
            *min_start = start_at;
        fprintf(stderr,
                "msrs-agent: session %s: was recording here before this start (start at %lld, "
                "stop %s): %zu devices expected back\n",
                id, (long long)start_at, stop_at == INT64_MAX ? "not yet known" : "known",
                json_array_size(devices));
        json_decref(devices);
    }
out:
    ev_projection_destroy(p);
    ev_log_destroy(log);
    ev_state_destroy(state);
    return rc;
}

/* The session restored for d (a device it expects), or NULL. */
static ag_session *expecting(ag_agent *a, const char *device_id)
{
    for (size_t i = 0; i < a->session_count; i++) {
        ag_session *s = a->sessions[i];
        size_t k;
        json_t *id;
        json_array_foreach(s->expected, k,
                           id) if (strcmp(json_string_value(id), device_id) == 0) return s;
    }
    return NULL;
}

static ag_device *device_of(ag_agent *a, const char *device_id)
{
    ag_device *d = ag_device_find(a, device_id);
    return d ? d : ag_device_add(a, device_id);
}

/* ClockOffsetMeasured of an expected device from this node: its probes go
 * into the device's estimator again, round by round, so the instants sent
 * when it comes back are on its clock as before. */
static void on_clock(void *arg, const ev_event *ev)
{
    ag_agent *a = arg;
    json_t *rec = NULL;
    char err[256];
    if (ev_schema_id(ev->schema) != EV_SCHEMA_CLOCK_OFFSET_MEASURED ||
        strcmp(ev_value_string(ev->value, "node_id"), a->cfg.node_id) != 0 ||
        !expecting(a, ev_value_string(ev->value, "device_id")) ||
        ev_value_to_json(ev->value, &rec, err, sizeof(err)))
        return;
    ag_device *d = device_of(a, ev_value_string(ev->value, "device_id"));
    size_t i;
    json_t *p;
    ev_clock_round r;
    if (d) {
        json_array_foreach(json_object_get(rec, "round_probes"), i, p)
        {
            ev_clock_probe probe = {json_integer_value(json_object_get(p, "t1_ns")),
                                    json_integer_value(json_object_get(p, "t2_ns")),
                                    json_integer_value(json_object_get(p, "t3_ns")),
                                    json_integer_value(json_object_get(p, "t4_ns"))};
            ev_clock_est_add_probe(&d->clock, &probe);
        }
        ev_clock_est_end_round(&d->clock, &r);
    }
    json_decref(rec);
}

/* A SensorSampleBatch or MediaPacket of an expected device: the next
 * sequence number of its stream, and, when tagged with a restored
 * session, that session's counts (samples, bytes, gaps). */
static void on_data(void *arg, const ev_event *ev)
{
    ag_agent *a = arg;
    int media = ev_schema_id(ev->schema) != ev_schema_id(ev_schema_by_name("SensorSampleBatch"));
    const char *device_id = ev_value_string(ev->value, "device_id"),
               *session_id = ev_value_string(ev->value, "session_id"),
               *stream = ev_value_string(ev->value, "stream_id");
    ag_session *s = expecting(a, device_id);
    if (!s)
        return;
    ag_device *d = device_of(a, device_id);
    if (!d)
        return;
    int64_t seq = ev_value_long(ev->value, "seq"), n = 1, bytes = 0, first_t = 0, first_master = 0;
    avro_value_t f, el;
    if (media) {
        const void *buf;
        size_t size = 0;
        if (avro_value_get_by_name(ev->value, "data", &f, NULL) == 0)
            avro_value_get_bytes(&f, &buf, &size);
        bytes = (int64_t)size;
        first_t = ev_value_long(ev->value, "device_time_ns");
        first_master = ev_value_long(ev->value, "master_time_ns");
    } else {
        size_t count = 0;
        int32_t channels = 0;
        if (avro_value_get_by_name(ev->value, "device_time_ns", &f, NULL) == 0 &&
            avro_value_get_size(&f, &count) == 0 && count &&
            avro_value_get_by_index(&f, 0, &el, NULL) == 0)
            avro_value_get_long(&el, &first_t);
        if (avro_value_get_by_name(ev->value, "master_time_ns", &f, NULL) == 0 &&
            avro_value_get_by_index(&f, 0, &el, NULL) == 0)
            avro_value_get_long(&el, &first_master);
        if (avro_value_get_by_name(ev->value, "channels", &f, NULL) == 0)
            avro_value_get_int(&f, &channels);
        n = (int64_t)count;
        bytes = n * channels * (int64_t)sizeof(double);
    }
    ag_count *cnt =
        strcmp(session_id, s->session_id) == 0 ? ag_recording_restore_count(a, s, d, stream) : NULL;
    json_t *next = json_object_get(d->next_seq, stream);
    if (cnt && next && seq > json_integer_value(next))
        ag_recording_gap(a, d, cnt, seq - json_integer_value(next));
    if (!next || seq + n > json_integer_value(next))
        json_object_set_new(d->next_seq, stream, json_integer(seq + n));
    if (cnt) {
        /* as the agent counted it when it came (recording.c) */
        ag_tag tag = ag_recording_restore_tag(s, cnt, first_t, first_master);
        ag_recording_account(a, d, &tag, stream, 1, n, bytes);
    }
}

int ag_restore(ag_agent *a, const ev_conf *conf, char *err, size_t n)
{
    int64_t min_start = INT64_MAX, clock_records = 0, data_records = 0;
    size_t before = a->session_count;
    int64_t t0 = ev_mono_ms();
    int rc = restore_sessions(a, conf, &min_start, err, n);
    if (rc || a->session_count == before)
        return rc;
    static const char *const data[] = {"samples", "media"};
    rc = cli_read_topics(conf, ev_clock_topics, 2,
                         (ev_from){EV_FROM_TIME, ev_now_ns() / 1000000 - RESTORE_CLOCK_MS},
                         on_clock, a, &clock_records, NULL, err, n);
    if (!rc)
        rc = cli_read_topics(conf, data, 2,
                             (ev_from){EV_FROM_TIME, min_start / 1000000 - RESTORE_DATA_LEAD_MS},
                             on_data, a, &data_records, NULL, err, n);
    if (rc)
        return rc;
    for (size_t i = 0; i < a->device_count; i++) {
        ag_device *d = a->devices[i];
        if (!d->rec)
            continue;
        for (int k = 0; k < d->count_n; k++)
            fprintf(
                stderr,
                "msrs-agent: session %s: %s/%s: %lld samples, %lld bytes on the log before this "
                "start; resumes at seq %lld\n",
                d->rec->session_id, d->device_id, d->counts[k].stream_id,
                (long long)d->counts[k].samples, (long long)d->counts[k].bytes,
                (long long)json_integer_value(
                    json_object_get(d->next_seq, d->counts[k].stream_id)));
    }
    fprintf(stderr,
            "msrs-agent: %zu sessions rebuilt from the log in %lld ms (%lld clock rounds, %lld "
            "data records read)\n",
            a->session_count - before, (long long)(ev_mono_ms() - t0), (long long)clock_records,
            (long long)data_records);
    return 0;
}
