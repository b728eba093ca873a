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

/* The parts of a samples message, however it came (JSON or binary): the
 * device times are in the first n of times (room for 2n: the master times
 * go after them), values n x channels little-endian doubles. */
typedef struct samples_msg {
    const char *stream, *claimed; /* claimed: the session_id the device said, or NULL */
    int64_t seq;
    size_t n, channels;
    int64_t *times;
    const void *values_le;
} samples_msg;

/* Room for 2n times in the agent's buffer (reused: no allocation per
 * message once it has held the largest). */
static int64_t *times_room(ag_agent *a, size_t n)
{
    a->samples_times.len = 0;
    return (int64_t *)cli_buf_room(&a->samples_times, 2 * n * sizeof(int64_t));
}

/* A record a direct encoder made (rc its result, err why not) to the log,
 * or counted as failed; 1 when the log took it. *schema caches the
 * catalog's (ev_schema_by_name compares names). */
static int emit_made(ag_agent *a, const ag_device *d, const ev_schema **schema,
                     const char *short_name, int rc, const void *frame, size_t len, const char *err)
{
    if (rc) {
        ag_emit_failed(a, short_name, d->device_id, err);
        return 0;
    }
    if (!*schema)
        *schema = ev_schema_by_name(short_name);
    return ag_emit_encoded(a, *schema, d->device_id, frame, len);
}

/* Sequence gaps of a stream (data made while no agent read it): counted,
 * not hidden; the next expected number is seq + count. */
static void seq_advance(ag_agent *a, ag_device *d, ag_count *cnt, const char *stream, int64_t seq,
                        int64_t count)
{
    json_t *next = json_object_get(d->next_seq, stream);
    if (next && seq > json_integer_value(next))
        ag_recording_gap(a, d, cnt, seq - json_integer_value(next));
    if (next)
        json_integer_set(next, seq + count);
    else
        json_object_set_new(d->next_seq, stream, json_integer(seq + count));
}

/* The common tail of both encodings: master times, session membership,
 * sequence gaps, the record (written straight from the parts,
 * ev_codec_encode_samples), emit and count. */
static void samples_emit(ag_agent *a, ag_device *d, const samples_msg *m)
{
    int64_t *dev_t = m->times, *master_t = m->times + m->n;
    for (size_t i = 0; i < m->n; i++)
        master_t[i] = ag_device_to_master(a, d, dev_t[i]);
    ag_tag tag = ag_recording_tag(a, d, m->claimed, dev_t[0], master_t[0], m->stream);
    seq_advance(a, d, tag.cnt, m->stream, m->seq, (int64_t)m->n);
    ev_samples rec = {.device_id = d->device_id,
                      .session_id = tag.session,
                      .stream_id = m->stream,
                      .seq = m->seq,
                      .channels = (int32_t)m->channels,
                      .n = m->n,
                      .device_time_ns = dev_t,
                      .master_time_ns = master_t,
                      .values_le = m->values_le};
    const void *frame = NULL;
    size_t len = 0;
    char err[512];
    static const ev_schema *schema;
    int rc = ev_codec_encode_samples(a->codec, &rec, &frame, &len, err, sizeof(err));
    int delivered = emit_made(a, d, &schema, "SensorSampleBatch", rc, frame, len, err);
    ag_recording_account(a, d, &tag, m->stream, delivered, (int64_t)m->n,
                         (int64_t)(m->n * m->channels * sizeof(double)));
}

/* A sequence number the agent can count gaps with: an integer in
 * 0 .. 2^53 (exact in every JSON reader), so seq + n never overflows. */
static int ag_seq_ok(int64_t seq)
{
    return seq >= 0 && seq <= (1LL << 53);
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

/* A little-endian copy of x at p (Avro's bytes for a double). */
static void put_double_le(unsigned char *p, double x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    u = htole64(u);
    memcpy(p, &u, 8);
}

void ag_ingest_samples(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref)
{
    const char *stream = json_string_value(json_object_get(payload, "stream_id"));
    json_t *seq = json_object_get(payload, "seq"), *t = json_object_get(payload, "t"),
           *values = json_object_get(payload, "values");
    size_t n = json_array_size(t), channels = json_array_size(json_array_get(values, 0));
    if (!stream || !*stream || !json_is_integer(seq) || !ag_seq_ok(json_integer_value(seq)) ||
        !json_is_array(t) || !json_is_array(values) || json_array_size(values) != n || n == 0 ||
        channels == 0) {
        ag_send_invalid(a, c,
                        "payload: expected stream_id, seq (0 .. 2^53), t [ns...] and values "
                        "[[...], ...] with one row per t",
                        ref);
        return;
    }
    if (declared(a, c, stream, ref))
        return;
    static const char bad_row[] = "payload: every t must be an integer and every row of values "
                                  "have the same number of channels, all numbers";
    int64_t *times = times_room(a, n);
    a->samples_values.len = 0;
    unsigned char *x = cli_buf_room(&a->samples_values, n * channels * 8);
    if (!times || !x) {
        ag_send_error(a, c, "internal", "out of memory", ref);
        return;
    }
    size_t i, k;
    json_t *row, *el;
    json_array_foreach(values, i, row)
    {
        json_t *ti = json_array_get(t, i);
        if (!json_is_integer(ti) || !json_is_array(row) || json_array_size(row) != channels) {
            ag_send_invalid(a, c, bad_row, ref);
            return;
        }
        times[i] = json_integer_value(ti);
        json_array_foreach(row, k, el)
        {
            if (!json_is_number(el)) {
                ag_send_invalid(a, c, bad_row, ref);
                return;
            }
            put_double_le(x + 8 * (i * channels + k), json_number_value(el));
        }
    }
    samples_emit(a, c->dev,
                 &(samples_msg){.stream = stream,
                                .claimed = json_string_value(json_object_get(env, "session_id")),
                                .seq = json_integer_value(seq),
                                .n = n,
                                .channels = channels,
                                .times = times,
                                .values_le = x});
}

/* Binary samples: header {type: "samples", stream_id, seq, n, channels,
 * session_id?}, body n int64 device timestamps then n x channels float64
 * values, row-major, all little-endian. No number is parsed from text and
 * the values go into the record as they came (Avro's doubles are the same
 * bytes): at 1024 devices this is most of what the agent does. */
void ag_ingest_samples_binary(ag_agent *a, ag_conn *c, const ev_jflat *h, const unsigned char *body,
                              size_t len)
{
    const char *stream = ev_jflat_string(h, -1, "stream_id");
    int64_t seq = -1, n = 0, channels = 0;
    char why[256];
    ev_jflat_integer(h, -1, "seq", &seq);
    ev_jflat_integer(h, -1, "n", &n);
    ev_jflat_integer(h, -1, "channels", &channels);
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
    int64_t *times = times_room(a, (size_t)n);
    if (!times) {
        ag_send_error(a, c, "internal", "out of memory", NULL);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, body + 8 * i, 8);
        times[i] = (int64_t)le64toh(u);
    }
    samples_emit(a, c->dev,
                 &(samples_msg){.stream = stream,
                                .claimed = ev_jflat_string(h, -1, "session_id"),
                                .seq = seq,
                                .n = (size_t)n,
                                .channels = (size_t)channels,
                                .times = times,
                                .values_le = body + 8 * n});
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
void ag_ingest_media(ag_agent *a, ag_conn *c, const ev_jflat *h, const unsigned char *packet,
                     size_t bytes)
{
    const char *stream = ev_jflat_string(h, -1, "stream_id");
    const char *codec = ev_jflat_string(h, -1, "codec");
    int64_t pts, ts = 0, seq = -1, width = 0, height = 0;
    if (!stream || !codec || !ev_jflat_integer(h, -1, "pts", &pts)) {
        ag_send_invalid(a, c, "binary media header: expected {stream_id, codec, pts, ...}", NULL);
        return;
    }
    if (declared(a, c, stream, NULL))
        return;
    ev_jflat_integer(h, -1, "ts", &ts);
    int has_seq = ev_jflat_integer(h, -1, "seq", &seq);
    ev_jflat_integer(h, -1, "width", &width);
    ev_jflat_integer(h, -1, "height", &height);
    const ev_jmember *key = ev_jflat_get(h, -1, "keyframe");
    int64_t master = ag_device_to_master(a, c->dev, ts);
    ag_tag tag =
        ag_recording_tag(a, c->dev, ev_jflat_string(h, -1, "session_id"), ts, master, stream);
    /* Packet sequence gaps, as for samples; a device that sends no seq
     * never has one. */
    if (has_seq && seq >= 0)
        seq_advance(a, c->dev, tag.cnt, stream, seq, 1);
    /* The packet goes into the record as it is: one copy, no Avro value. */
    ev_media rec = {.device_id = c->dev->device_id,
                    .session_id = tag.session,
                    .stream_id = stream,
                    .codec = codec,
                    .seq = has_seq ? seq : 0,
                    .pts = pts,
                    .device_time_ns = ts,
                    .master_time_ns = master,
                    .width = (int32_t)width,
                    .height = (int32_t)height,
                    .time_base_den = 1000000000,
                    .keyframe = key && key->kind == EV_JTRUE,
                    .data = packet,
                    .data_len = bytes};
    const void *frame = NULL;
    size_t len = 0;
    char err[512];
    static const ev_schema *schema;
    int rc = ev_codec_encode_media(a->codec, &rec, &frame, &len, err, sizeof(err));
    int delivered = emit_made(a, c->dev, &schema, "MediaPacket", rc, frame, len, err);
    ag_recording_account(a, c->dev, &tag, stream, delivered, 1, (int64_t)bytes);
}
