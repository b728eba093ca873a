/* live.c — counts per stream of the sessions that record, as their data
 * reaches the log: samples and bytes of every SensorSampleBatch and
 * MediaPacket tagged with a session, and a sparkline (each batch's last
 * value of channel 0; a video packet's size in KiB). The agents' own
 * counts arrive only with their RecordingReport at the end; these are
 * what the page shows meanwhile. The gateway starts reading where the
 * oldest session still recording started, so a restarted gateway shows
 * the same counts. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_live {
    ev_log *log;
    ev_codec *codec;
    json_t *sessions; /* session_id -> {"DEVICE/STREAM": {samples, bytes, spark}} */
};

int gw_live_new(gw_live **out, const ev_conf *conf, int64_t from_ms, char *errstr,
                size_t errstr_size)
{
    char full[2][320];
    const char *names[2];
    gw_live *l = calloc(1, sizeof(*l));
    ev_conf *ro = cli_conf_copy(conf);
    int rc = -1;
    *out = NULL;
    if (!l || !ro || !(l->codec = ev_codec_new()) || !(l->sessions = json_object())) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    ev_conf_set(ro, "log.read_only", "true");
    if (ev_log_open(&l->log, ro, errstr, errstr_size))
        goto out;
    names[0] = ev_log_topic(l->log, "samples", full[0], sizeof(full[0]));
    names[1] = ev_log_topic(l->log, "media", full[1], sizeof(full[1]));
    if (ev_log_assign(l->log, names, 2, (ev_from){EV_FROM_TIME, from_ms}, errstr, errstr_size))
        goto out;
    *out = l;
    l = NULL;
    rc = 0;
out:
    ev_conf_destroy(ro);
    gw_live_destroy(l);
    return rc;
}

void gw_live_destroy(gw_live *l)
{
    if (!l)
        return;
    ev_log_destroy(l->log);
    ev_codec_destroy(l->codec);
    json_decref(l->sessions);
    free(l);
}

/* A string field of v into buf ("" when absent). */
static const char *field_str(avro_value_t *v, const char *name, char *buf, size_t size)
{
    avro_value_t f;
    const char *s = NULL;
    size_t n = 0;
    *buf = '\0';
    if (avro_value_get_by_name(v, name, &f, NULL) == 0 && avro_value_get_string(&f, &s, &n) == 0 &&
        s)
        snprintf(buf, size, "%s", s);
    return buf;
}

static size_t field_size(avro_value_t *v, const char *name, avro_value_t *f)
{
    size_t n = 0;
    if (avro_value_get_by_name(v, name, f, NULL) || avro_value_get_size(f, &n))
        return 0;
    return n;
}

/* Counts one record into its session's stream; 1 when it was counted:
 * tagged with a session the state has and that has not stopped (a stopped
 * one's counts are its CollectionStopped's; late data is not live). */
static int count(gw_live *l, const ev_state *state, const ev_event *ev, json_t *dirty)
{
    char sid[EV_ID_MAX], dev[EV_ID_MAX], stream[EV_ID_MAX], key[2 * EV_ID_MAX];
    avro_value_t *v = ev->value, f;
    ev_session x;
    if (!*field_str(v, "session_id", sid, sizeof(sid)) || !ev_state_session(state, sid, &x) ||
        x.state == EV_SESSION_STOPPED)
        return 0;
    field_str(v, "device_id", dev, sizeof(dev));
    field_str(v, "stream_id", stream, sizeof(stream));
    int media = ev_schema_id(ev->schema) == EV_SCHEMA_MEDIA_PACKET;
    int64_t samples = 0, bytes = 0;
    double last = 0;
    if (media) {
        const void *data = NULL;
        size_t n = 0;
        if (avro_value_get_by_name(v, "data", &f, NULL) == 0)
            avro_value_get_bytes(&f, &data, &n);
        samples = 1;
        bytes = (int64_t)n;
        last = (double)n / 1024.0;
    } else {
        int32_t channels = 1;
        if (avro_value_get_by_name(v, "channels", &f, NULL) == 0)
            avro_value_get_int(&f, &channels);
        avro_value_t times, e;
        size_t values = field_size(v, "values", &f);
        samples = (int64_t)field_size(v, "device_time_ns", &times);
        if (!samples && channels > 0)
            samples = (int64_t)values / channels;
        bytes = (int64_t)values * 8;
        if (samples && channels > 0 && (size_t)((samples - 1) * channels) < values &&
            avro_value_get_by_index(&f, (size_t)((samples - 1) * channels), &e, NULL) == 0)
            avro_value_get_double(&e, &last);
    }
    json_t *s = json_object_get(l->sessions, sid);
    if (!s) {
        s = json_object();
        json_object_set_new(l->sessions, sid, s);
    }
    snprintf(key, sizeof(key), "%s/%s", dev, stream);
    json_t *st = json_object_get(s, key);
    if (!st) {
        st = json_pack("{s:s, s:s, s:s, s:I, s:I, s:[]}", "device_id", dev, "stream_id", stream,
                       "kind", media ? "video" : "samples", "samples", (json_int_t)0, "bytes",
                       (json_int_t)0, "spark");
        json_object_set_new(s, key, st);
    }
    json_object_set_new(st, "samples",
                        json_integer(json_integer_value(json_object_get(st, "samples")) + samples));
    json_object_set_new(st, "bytes",
                        json_integer(json_integer_value(json_object_get(st, "bytes")) + bytes));
    json_t *spark = json_object_get(st, "spark");
    if (json_array_size(spark) >= GW_SPARK)
        json_array_remove(spark, 0);
    json_array_append_new(spark, json_real(last));
    json_object_set_new(dirty, sid, json_true());
    return 1;
}

int gw_live_step(gw_live *l, const ev_state *state, int64_t budget_ms, json_t *dirty,
                 gw_counters *n, char *errstr, size_t errstr_size)
{
    const int64_t until = ev_mono_ms() + budget_ms;
    for (int i = 0; ev_mono_ms() < until || (i & 63); i++) {
        const ev_msg *m;
        ev_event ev;
        char err[512];
        int rc = ev_log_poll(l->log, 0, &m, errstr, errstr_size);
        if (rc == EV_ERR_END || rc == EV_ERR_TIMED_OUT)
            return 0;
        if (rc == EV_ERR_CORRUPT || (!rc && ev_event_decode(l->codec, m, &ev, err, sizeof(err)))) {
            n->live_skipped++;
            continue;
        }
        if (rc)
            return rc;
        n->live_records += count(l, state, &ev, dirty);
    }
    return 0;
}

const json_t *gw_live_session(const gw_live *l, const char *session_id)
{
    return json_object_get(l->sessions, session_id);
}

void gw_live_forget(gw_live *l, const char *session_id)
{
    json_object_del(l->sessions, session_id);
}
