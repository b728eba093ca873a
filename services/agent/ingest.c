/* ingest.c — layer 7: device data and reports into events. samples (JSON
 * and binary) become SensorSampleBatch, media frames MediaPacket, status
 * DeviceStatus, sync marks SyncMark; device times are put on the master
 * clock, data in a session is tagged and counted (recording.c), and what
 * does not fit gets an `invalid` error. The message is already parsed
 * (protocol.c); nothing here reads the envelope's type. */
#include "ingest.h"

#include "clock.h"
#include "device.h"
#include "emit.h"
#include "endpoint.h"
#include "recording.h"

#include <endian.h>
#include <stdio.h>
#include <string.h>

/* The SensorSampleBatch value of a samples message, with its three arrays;
 * the caller fills them (from JSON or from a binary frame). */
typedef struct samples_rec {
    const ev_schema *schema;
    avro_value_t *v, dev_t, master_t, flat;
} samples_rec;

static int samples_open(ag_agent *a, samples_rec *r, int64_t n)
{
    r->schema = ev_schema_by_name("SensorSampleBatch");
    if (ev_codec_value(a->codec, r->schema, &r->v) ||
        avro_value_get_by_name(r->v, "device_time_ns", &r->dev_t, NULL) ||
        avro_value_get_by_name(r->v, "master_time_ns", &r->master_t, NULL) ||
        avro_value_get_by_name(r->v, "values", &r->flat, NULL)) {
        ag_recording_account(a, NULL, NULL, "", 0, n, 0);
        return -1;
    }
    return 0;
}

static void samples_time(const ag_agent *a, ag_device *d, samples_rec *r, int64_t dt)
{
    avro_value_t el;
    avro_value_append(&r->dev_t, &el, NULL);
    avro_value_set_long(&el, dt);
    avro_value_append(&r->master_t, &el, NULL);
    avro_value_set_long(&el, ag_device_to_master(a, d, dt));
}

static void samples_value(samples_rec *r, double x)
{
    avro_value_t el;
    avro_value_append(&r->flat, &el, NULL);
    avro_value_set_double(&el, x);
}

/* The common tail of both encodings: session membership, sequence gaps,
 * the record's scalar fields, emit and count. */
static void samples_emit(ag_agent *a, ag_device *d, samples_rec *r, const char *claimed,
                         const char *stream, int64_t seq, size_t n, size_t channels, int64_t first)
{
    avro_value_t f;
    ag_tag tag = ag_recording_tag(a, d, claimed, first, ag_device_to_master(a, d, first), stream);
    /* Sequence gaps: counted, not hidden. */
    json_t *next = json_object_get(d->next_seq, stream);
    if (next && seq > json_integer_value(next))
        ag_recording_gap(a, d, tag.cnt, seq - json_integer_value(next));
    json_object_set_new(d->next_seq, stream, json_integer(seq + (int64_t)n));
    avro_value_get_by_name(r->v, "device_id", &f, NULL);
    avro_value_set_string(&f, d->device_id);
    avro_value_get_by_name(r->v, "session_id", &f, NULL);
    avro_value_set_string(&f, tag.session);
    avro_value_get_by_name(r->v, "stream_id", &f, NULL);
    avro_value_set_string(&f, stream);
    avro_value_get_by_name(r->v, "seq", &f, NULL);
    avro_value_set_long(&f, seq);
    avro_value_get_by_name(r->v, "channels", &f, NULL);
    avro_value_set_int(&f, (int)channels);
    int64_t bytes = (int64_t)(n * channels * sizeof(double));
    int delivered = ag_emit_value(a, r->schema, d->device_id, r->v);
    ag_recording_account(a, d, &tag, stream, delivered, (int64_t)n, bytes);
}

/* A sequence number the agent can count gaps with: an integer in
 * 0 .. 2^53 (exact in every JSON reader), so seq + n never overflows. */
static int ag_seq_ok(const json_t *seq)
{
    return json_is_integer(seq) && json_integer_value(seq) >= 0 &&
           json_integer_value(seq) <= (1LL << 53);
}

/* 0 when stream was declared in the device's hello; else says so to the
 * device (invalid) and returns -1: a stream id the agent has not seen
 * never becomes state (a flood of new ids grew the agent without bound). */
static int declared(ag_agent *a, ag_conn *c, const char *stream, const char *ref)
{
    char why[160];
    if (ag_device_has_stream(c->dev, stream))
        return 0;
    snprintf(why, sizeof(why), "stream '%.64s' was not declared in hello", stream);
    ag_send_invalid(a, c, why, ref);
    return -1;
}

void ag_ingest_samples(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref)
{
    ag_device *d = c->dev;
    const char *stream = json_string_value(json_object_get(payload, "stream_id"));
    json_t *seq = json_object_get(payload, "seq"), *t = json_object_get(payload, "t"),
           *values = json_object_get(payload, "values");
    size_t n = json_array_size(t), channels = json_array_size(json_array_get(values, 0));
    if (!stream || !*stream || !ag_seq_ok(seq) || !json_is_array(t) || !json_is_array(values) ||
        json_array_size(values) != n || n == 0 || channels == 0) {
        ag_send_invalid(a, c,
                        "payload: expected stream_id, seq (0 .. 2^53), t [ns...] and values "
                        "[[...], ...] with one row per t",
                        ref);
        return;
    }
    if (declared(a, c, stream, ref))
        return;
    /* Written into the codec's Avro value straight from the parsed message
     * (no JSON record in between). */
    static const char bad_row[] = "payload: every t must be an integer and every row of values "
                                  "have the same number of channels, all numbers";
    samples_rec r;
    size_t i, k;
    json_t *row, *x;
    if (samples_open(a, &r, (int64_t)n))
        return;
    json_array_foreach(values, i, row)
    {
        json_t *ti = json_array_get(t, i);
        if (!json_is_integer(ti) || !json_is_array(row) || json_array_size(row) != channels) {
            ag_send_invalid(a, c, bad_row, ref);
            return;
        }
        samples_time(a, d, &r, json_integer_value(ti));
        json_array_foreach(row, k, x)
        {
            if (!json_is_number(x)) {
                ag_send_invalid(a, c, bad_row, ref);
                return;
            }
            samples_value(&r, json_number_value(x));
        }
    }
    samples_emit(a, d, &r, json_string_value(json_object_get(env, "session_id")), stream,
                 json_integer_value(seq), n, channels, json_integer_value(json_array_get(t, 0)));
}

/* Binary samples: header {type: "samples", stream_id, seq, n, channels,
 * session_id?}, body n int64 device timestamps then n x channels float64
 * values, row-major, all little-endian. No number is parsed from text:
 * at 1024 devices this is most of what the agent does. */
void ag_ingest_samples_binary(ag_agent *a, ag_conn *c, json_t *h, const unsigned char *body,
                              size_t len)
{
    const char *stream = json_string_value(json_object_get(h, "stream_id"));
    json_t *seq = json_object_get(h, "seq");
    json_int_t n = json_integer_value(json_object_get(h, "n")),
               channels = json_integer_value(json_object_get(h, "channels"));
    char why[256];
    if (!stream || !*stream || !ag_seq_ok(seq) || n < 1 || n > 65536 || channels < 1 ||
        channels > 1024) {
        ag_send_invalid(a, c,
                        "binary samples header: expected stream_id, seq (0 .. 2^53), n (1..65536) "
                        "and channels (1..1024)",
                        NULL);
        return;
    }
    if (declared(a, c, stream, NULL))
        return;
    size_t want = (size_t)n * 8 * (1 + (size_t)channels);
    if (len != want) {
        snprintf(why, sizeof(why),
                 "binary samples body: %zu bytes, expected n x 8 x (1 + channels) = %zu "
                 "(n=%lld, channels=%lld)",
                 len, want, (long long)n, (long long)channels);
        ag_send_invalid(a, c, why, NULL);
        return;
    }
    samples_rec r;
    if (samples_open(a, &r, (int64_t)n))
        return;
    uint64_t u;
    for (json_int_t i = 0; i < n; i++) {
        memcpy(&u, body + 8 * i, 8);
        samples_time(a, c->dev, &r, (int64_t)le64toh(u));
    }
    for (json_int_t i = 0; i < n * channels; i++) {
        double x;
        memcpy(&u, body + 8 * (n + i), 8);
        u = le64toh(u);
        memcpy(&x, &u, 8);
        samples_value(&r, x);
    }
    memcpy(&u, body, 8);
    samples_emit(a, c->dev, &r, json_string_value(json_object_get(h, "session_id")), stream,
                 json_integer_value(seq), (size_t)n, (size_t)channels, (int64_t)le64toh(u));
}

void ag_ingest_status(ag_agent *a, ag_conn *c, json_t *payload, const char *ref)
{
    json_t *rec =
        json_pack("{s:s, s:s}", "device_id", c->dev->device_id, "node_id", a->cfg.node_id);
    json_t *v;
    char err[512];
    if ((v = json_object_get(payload, "battery")))
        json_object_set(rec, "battery", v);
    if ((v = json_object_get(payload, "storage_free")))
        json_object_set(rec, "storage_free_bytes", v);
    if ((v = json_object_get(payload, "temperature")))
        json_object_set(rec, "temperature_c", v);
    if ((v = json_object_get(payload, "recording")))
        json_object_set(rec, "recording", v);
    if (ag_emit(a, "DeviceStatus", c->dev->device_id, rec, err, sizeof(err)) == EV_ERR_INVALID)
        ag_send_error(a, c, "invalid", err, ref);
}

void ag_ingest_sync_mark(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref)
{
    const char *session = json_string_value(json_object_get(env, "session_id"));
    const char *mark = json_string_value(json_object_get(payload, "mark_id"));
    const char *label = json_string_value(json_object_get(payload, "label"));
    json_t *ts = json_object_get(env, "ts");
    if (!session || !*session || !mark || !*mark || !json_is_integer(ts)) {
        ag_send_invalid(
            a, c, "sync_mark: expected session_id and ts in the envelope and payload.mark_id", ref);
        return;
    }
    int64_t t = json_integer_value(ts);
    ag_emit(a, "SyncMark", session,
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "session_id", session, "device_id",
                      c->dev->device_id, "mark_id", mark, "label", label ? label : "",
                      "device_time_ns", (json_int_t)t, "master_time_ns",
                      (json_int_t)ag_device_to_master(a, c->dev, t)),
            NULL, 0);
    ag_send(a, c, "ack", json_pack("{s:s, s:s}", "ref_id", ref ? ref : "", "status", "ok"));
}

/* Media: header {stream_id, seq, codec, pts, keyframe, ts, width, height,
 * session_id}, body the encoded packet. */
void ag_ingest_media(ag_agent *a, ag_conn *c, json_t *h, const unsigned char *packet, size_t bytes)
{
    const char *stream = json_string_value(json_object_get(h, "stream_id"));
    const char *codec = json_string_value(json_object_get(h, "codec"));
    if (!stream || !codec || !json_is_integer(json_object_get(h, "pts"))) {
        ag_send_invalid(a, c, "binary media header: expected {stream_id, codec, pts, ...}", NULL);
        return;
    }
    if (declared(a, c, stream, NULL))
        return;
    int64_t ts = json_integer_value(json_object_get(h, "ts"));
    int64_t master = ag_device_to_master(a, c->dev, ts);
    ag_tag tag = ag_recording_tag(a, c->dev, json_string_value(json_object_get(h, "session_id")),
                                  ts, master, stream);
    json_t *rec =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:b, s:I, s:I, s:i, s:i, s:s}", "device_id",
                  c->dev->device_id, "session_id", tag.session, "stream_id", stream, "seq",
                  (json_int_t)json_integer_value(json_object_get(h, "seq")), "codec", codec, "pts",
                  (json_int_t)json_integer_value(json_object_get(h, "pts")), "keyframe",
                  json_is_true(json_object_get(h, "keyframe")), "device_time_ns", (json_int_t)ts,
                  "master_time_ns", (json_int_t)master, "width",
                  (int)json_integer_value(json_object_get(h, "width")), "height",
                  (int)json_integer_value(json_object_get(h, "height")), "data", "");
    /* The packet goes into the record as it is, not through JSON. */
    char err[512];
    const ev_schema *s = ev_schema_by_name("MediaPacket");
    avro_value_t *v, data;
    int rc = ev_codec_value(a->codec, s, &v);
    if (!rc)
        rc = ev_value_from_json(v, rec, err, sizeof(err));
    json_decref(rec);
    if (!rc && avro_value_get_by_name(v, "data", &data, NULL) == 0)
        rc = avro_value_set_bytes(&data, (void *)packet, bytes);
    if (rc) {
        ag_send_invalid(a, c, err, NULL);
        return;
    }
    /* Packet sequence gaps (packets made while no agent read them), as for
     * samples; a device that sends no seq never has one. */
    json_t *seq = json_object_get(h, "seq"), *next = json_object_get(c->dev->next_seq, stream);
    if (json_is_integer(seq) && json_integer_value(seq) >= 0) {
        if (next && json_integer_value(seq) > json_integer_value(next))
            ag_recording_gap(a, c->dev, tag.cnt,
                             json_integer_value(seq) - json_integer_value(next));
        json_object_set_new(c->dev->next_seq, stream, json_integer(json_integer_value(seq) + 1));
    }
    int delivered = ag_emit_value(a, s, c->dev->device_id, v);
    ag_recording_account(a, c->dev, &tag, stream, delivered, 1, (int64_t)bytes);
}
