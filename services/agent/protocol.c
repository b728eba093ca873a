/* protocol.c — the JSON device protocol (docs/protocol.md): envelope
 * checks, hello/register and rejoin, time probes, samples, status, sync
 * marks, media frames, and the events each turns into. Every malformed or
 * unwanted message gets an `error` reply and a counter; nothing here closes
 * a connection except a flood or a peer that cannot keep up. */
#include "agent.h"
#include "rxstamp.h"

#include <endian.h>
#include <stdio.h>
#include <string.h>

int64_t ag_now_ns(void)
{
    return ev_now_ns();
}

static void queue(ag_conn *c, int kind, const char *text, size_t len)
{
    ag_out *o = malloc(sizeof(*o) + LWS_PRE + len);
    if (!o)
        return;
    o->next = NULL;
    o->kind = kind;
    o->len = len;
    if (len)
        memcpy(o->buf + LWS_PRE, text, len);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_count++;
    ag_wake(c);
}

void ag_send(ag_agent *a, ag_conn *c, const char *type, json_t *payload)
{
    char id[48];
    snprintf(id, sizeof(id), "a%lld", (long long)++a->next_id);
    json_t *env = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", id, "type", type, "ts",
                            (json_int_t)ag_now_ns(), "device_id", c->dev ? c->dev->device_id : "",
                            "payload", payload);
    char *text = json_dumps(env, JSON_COMPACT);
    if (text)
        queue(c, AG_OUT_TEXT, text, strlen(text));
    free(text);
    json_decref(env);
}

void ag_send_error(ag_agent *a, ag_conn *c, const char *code, const char *message,
                   const char *ref_id)
{
    ag_send(a, c, "error",
            json_pack("{s:s, s:s, s:s}", "code", code, "message", message, "ref_id",
                      ref_id ? ref_id : ""));
}

int ag_emit(ag_agent *a, const char *short_name, const char *key, json_t *value, char *err,
            size_t err_size)
{
    char own[512];
    if (!err) {
        err = own;
        err_size = sizeof(own);
    }
    int rc =
        ev_log_emit_json(a->log, ev_schema_by_name(short_name), key, value, NULL, err, err_size);
    if (rc == EV_ERR_INVALID) {
        a->n.invalid++; /* the device's data does not fit the record: its error */
    } else if (rc) {
        a->n.emit_errors++;
        fprintf(stderr, "msrs-agent: emit %s for %s: %s\n", short_name, key, err);
    } else {
        a->n.events++;
    }
    json_decref(value);
    return rc;
}

/* Emits a record built as an Avro value (the data paths: samples, media).
 * Returns 1 when the log took it; else counts and names the failure. */
static int emit_value(ag_agent *a, const ev_schema *s, const char *key, avro_value_t *v)
{
    char err[512];
    if (ev_log_emit(a->log, s, key, v, NULL, err, sizeof(err)) == 0) {
        a->n.events++;
        return 1;
    }
    a->n.emit_errors++;
    fprintf(stderr, "msrs-agent: emit %s for %s: %s\n", ev_schema_short_name(s), key, err);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

/* Copies the keys named in `keys` (NULL-terminated) from src into a new
 * object: the protocol lets devices add fields, the records do not. */
static json_t *pick(json_t *src, const char *const *keys)
{
    json_t *o = json_object();
    for (size_t i = 0; keys[i]; i++) {
        json_t *v = json_object_get(src, keys[i]);
        if (v)
            json_object_set(o, keys[i], v);
    }
    return o;
}

static int valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= AG_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-' || ch == ':'))
            return 0;
    }
    return 1;
}

ag_device *ag_device_find(ag_agent *a, const char *id)
{
    for (size_t i = 0; i < a->device_count; i++)
        if (strcmp(a->devices[i]->device_id, id) == 0)
            return a->devices[i];
    return NULL;
}

static ag_device *device_add(ag_agent *a, const char *id)
{
    if (a->device_count == a->device_cap) {
        size_t cap = a->device_cap ? a->device_cap * 2 : 64;
        ag_device **d = realloc(a->devices, cap * sizeof(*d));
        if (!d)
            return NULL;
        a->devices = d;
        a->device_cap = cap;
    }
    ag_device *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    snprintf(d->device_id, sizeof(d->device_id), "%s", id);
    cs_init(&d->clock);
    d->next_seq = json_object();
    a->devices[a->device_count++] = d;
    return d;
}

/* ------------------------------------------------------------------ hello */

/* A message that does not fit the protocol: counted, and an `invalid`
 * error names what was expected; the connection stays open. */
static void invalid(ag_agent *a, ag_conn *c, const char *why, const char *ref)
{
    a->n.invalid++;
    ag_send_error(a, c, "invalid", why, ref);
}

static void reject(ag_agent *a, ag_conn *c, const char *ref, const char *code, const char *why)
{
    ag_send(a, c, "register",
            json_pack("{s:b, s:s, s:s}", "accepted", 0, "reason", why, "node_id", a->cfg.node_id));
    ag_send_error(a, c, code, why, ref);
}

static void on_hello(ag_agent *a, ag_conn *c, json_t *env, const char *ref)
{
    static const char *const hello_keys[] = {"name", "capabilities", "battery", "version", NULL};
    static const char *const stream_keys[] = {"stream_id", "type",   "rate_hz",
                                              "channels",  "format", NULL};
    const char *device_id = json_string_value(json_object_get(env, "device_id"));
    json_t *payload = json_object_get(env, "payload");
    char err[512], why[600];

    if (c->dev) {
        invalid(a, c, "already registered on this connection", ref);
        return;
    }
    if (!valid_id(device_id)) {
        a->n.invalid++;
        reject(a, c, ref, "invalid", "device_id: expected 1-63 characters of [A-Za-z0-9._:-]");
        return;
    }
    ag_device *d = ag_device_find(a, device_id);
    if (d && d->conn) {
        a->n.duplicates++;
        reject(a, c, ref, "duplicate_device", "device_id is already connected to this node");
        return;
    }
    int64_t limit = ev_place_limit(a->ctl.max_devices, a->cfg.max_devices);
    if ((int64_t)a->connected >= limit) {
        /* Full: tell the device where to go (the supervisor's placement,
         * from the last heartbeat), when another node has room. */
        json_t *p = json_pack("{s:b, s:s, s:s}", "accepted", 0, "reason", "node full", "node_id",
                              a->cfg.node_id);
        snprintf(why, sizeof(why), "this node serves its maximum of %lld devices%s%s",
                 (long long)limit, *a->ctl.redirect ? ": connect to " : "", a->ctl.redirect);
        if (*a->ctl.redirect)
            json_object_set_new(p, "redirect", json_string(a->ctl.redirect));
        ag_send(a, c, "register", p);
        ag_send_error(a, c, "node_full", why, ref);
        return;
    }
    if (!json_is_object(payload)) {
        a->n.invalid++;
        reject(a, c, ref, "invalid", "payload: expected an object");
        return;
    }
    json_t *rec = pick(payload, hello_keys);
    json_t *streams = json_object_get(payload, "streams");
    if (streams && !json_is_array(streams)) {
        json_decref(rec);
        a->n.invalid++;
        reject(a, c, ref, "invalid", "payload.streams: expected an array");
        return;
    }
    json_t *clean = json_array();
    size_t i;
    json_t *st;
    json_array_foreach(streams, i, st) json_array_append_new(clean, pick(st, stream_keys));
    json_object_set_new(rec, "streams", clean);
    json_object_set_new(rec, "device_id", json_string(device_id));
    json_object_set_new(rec, "node_id", json_string(a->cfg.node_id));
    /* The record's own conversion checks the payload: a device hears the
     * same field-path errors the schema gives. */
    if (ag_emit(a, "DeviceRegistered", device_id, rec, err, sizeof(err)) == EV_ERR_INVALID) {
        snprintf(why, sizeof(why), "payload.%s", err);
        reject(a, c, ref, "invalid", why);
        return;
    }
    if (!d && !(d = device_add(a, device_id))) {
        reject(a, c, ref, "internal", "out of memory");
        return;
    }
    d->conn = c;
    c->dev = d;
    a->connected++;
    d->stream_count = 0;
    json_array_foreach(clean, i, st)
    {
        const char *sid = json_string_value(json_object_get(st, "stream_id"));
        if (sid && d->stream_count < AG_MAX_STREAMS)
            snprintf(d->stream_ids[d->stream_count++], AG_ID_MAX, "%s", sid);
    }
    /* Rejoin: tell the device where each of its streams resumes. */
    ag_send(a, c, "register",
            json_pack("{s:b, s:s, s:s, s:O}", "accepted", 1, "reason", "", "node_id",
                      a->cfg.node_id, "resume", d->next_seq));
    d->round_active = 0;
    d->next_round_ns = ag_now_ns(); /* sync at once */
    ag_flow_greet(a, c);
    ag_recording_rejoin(a, d);
}

/* -------------------------------------------------------------- time sync */

static void on_time_resp(ag_agent *a, ag_conn *c, json_t *payload, int64_t t4, const char *ref)
{
    json_t *t1 = json_object_get(payload, "t1"), *t2 = json_object_get(payload, "t2"),
           *t3 = json_object_get(payload, "t3");
    ag_device *d = c->dev;
    if (!json_is_integer(t1) || !json_is_integer(t2) || !json_is_integer(t3)) {
        invalid(a, c, "payload: expected integers t1, t2, t3 (ns)", ref);
        return;
    }
    if (!d->round_active)
        return; /* a late answer to a finished round */
    cs_probe p = {json_integer_value(t1), json_integer_value(t2), json_integer_value(t3), t4};
    if (p.t1 < d->round_started_ns)
        return; /* from an earlier round */
    if (cs_add_probe(&d->clock, &p) != 0) {
        invalid(a, c, "time_resp: t3 < t2 or t4 < t1", ref);
        return;
    }
    if (!d->round_probes)
        d->round_probes = json_array();
    json_array_append_new(d->round_probes,
                          json_pack("{s:I, s:I, s:I, s:I}", "t1_ns", (json_int_t)p.t1, "t2_ns",
                                    (json_int_t)p.t2, "t3_ns", (json_int_t)p.t3, "t4_ns",
                                    (json_int_t)p.t4));
    d->probes_answered++;
}

static void end_round(ag_agent *a, ag_device *d)
{
    cs_round_result r;
    json_t *probes = d->round_probes ? d->round_probes : json_array();
    d->round_probes = NULL;
    d->round_active = 0;
    d->next_round_ns = ag_now_ns() + a->cfg.sync_interval_ms * 1000000LL;
    if (cs_end_round(&d->clock, &r) != 0) {
        json_decref(probes);
        return; /* no answer this round: try again next interval */
    }
    ag_emit(
        a, "ClockOffsetMeasured", d->device_id,
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:I, s:i, s:I, s:I, s:I, s:I, s:o}", "device_id",
                  d->device_id, "node_id", a->cfg.node_id, "round", (json_int_t)r.round,
                  "offset_ns", (json_int_t)r.offset_ns, "rtt_ns", (json_int_t)r.rtt_ns, "drift_ppm",
                  r.drift_ppm, "uncertainty_ns", (json_int_t)r.uncertainty_ns, "probes", r.probes,
                  "t1_ns", (json_int_t)r.best.t1, "t2_ns", (json_int_t)r.best.t2, "t3_ns",
                  (json_int_t)r.best.t3, "t4_ns", (json_int_t)r.best.t4, "round_probes", probes),
        NULL, 0);
}

void ag_sync_tick(ag_agent *a, int64_t now)
{
    for (size_t i = 0; i < a->device_count; i++) {
        ag_device *d = a->devices[i];
        if (!d->conn)
            continue;
        if (!d->round_active) {
            if (now < d->next_round_ns)
                continue;
            d->round_active = 1;
            json_decref(d->round_probes); /* of a round cut short */
            d->round_probes = NULL;
            d->probes_sent = d->probes_answered = 0;
            d->next_probe_ns = d->round_started_ns = now;
            /* more probes while the device's window is filling: its drift,
             * and so its offset, settle in half the time (NTP's iburst) */
            d->round_size =
                d->clock.win_count < CS_WINDOW ? a->cfg.sync_burst_probes : a->cfg.sync_probes;
            d->round_deadline_ns =
                now +
                (d->round_size * a->cfg.probe_spacing_ms + a->cfg.round_timeout_ms) * 1000000LL;
        }
        if (d->probes_sent < d->round_size && now >= d->next_probe_ns) {
            queue(d->conn, AG_OUT_TIME_REQ, NULL, 0);
            d->probes_sent++;
            d->next_probe_ns = now + a->cfg.probe_spacing_ms * 1000000LL;
        }
        if (d->probes_answered >= d->round_size || now >= d->round_deadline_ns)
            end_round(a, d);
    }
}

void ag_sync_now(ag_agent *a, const char *device_id)
{
    for (size_t i = 0; i < a->device_count; i++) {
        ag_device *d = a->devices[i];
        if (d->conn && !d->round_active && (!device_id || strcmp(device_id, d->device_id) == 0))
            d->next_round_ns = 0;
    }
}

/* ------------------------------------------------------------------- data */

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
        ag_recording_account(a, NULL, 0, n, 0);
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
    const char *session;
    avro_value_t f;
    ag_count *cnt = ag_recording_count(a, d, claimed, first, stream, &session);
    /* Sequence gaps: counted, not hidden. */
    json_t *next = json_object_get(d->next_seq, stream);
    if (next && seq > json_integer_value(next)) {
        d->gaps++;
        if (cnt)
            cnt->gaps++;
    }
    json_object_set_new(d->next_seq, stream, json_integer(seq + (int64_t)n));
    avro_value_get_by_name(r->v, "device_id", &f, NULL);
    avro_value_set_string(&f, d->device_id);
    avro_value_get_by_name(r->v, "session_id", &f, NULL);
    avro_value_set_string(&f, session);
    avro_value_get_by_name(r->v, "stream_id", &f, NULL);
    avro_value_set_string(&f, stream);
    avro_value_get_by_name(r->v, "seq", &f, NULL);
    avro_value_set_long(&f, seq);
    avro_value_get_by_name(r->v, "channels", &f, NULL);
    avro_value_set_int(&f, (int)channels);
    ag_recording_account(a, cnt, emit_value(a, r->schema, d->device_id, r->v), (int64_t)n,
                         (int64_t)(n * channels * sizeof(double)));
}

static void on_samples(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref)
{
    ag_device *d = c->dev;
    const char *stream = json_string_value(json_object_get(payload, "stream_id"));
    json_t *seq = json_object_get(payload, "seq"), *t = json_object_get(payload, "t"),
           *values = json_object_get(payload, "values");
    size_t n = json_array_size(t), channels = json_array_size(json_array_get(values, 0));
    if (!stream || !*stream || !json_is_integer(seq) || !json_is_array(t) ||
        !json_is_array(values) || json_array_size(values) != n || n == 0 || channels == 0) {
        invalid(a, c,
                "payload: expected stream_id, seq, t [ns...] and values [[...], ...] "
                "with one row per t",
                ref);
        return;
    }
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
            invalid(a, c, bad_row, ref);
            return;
        }
        samples_time(a, d, &r, json_integer_value(ti));
        json_array_foreach(row, k, x)
        {
            if (!json_is_number(x)) {
                invalid(a, c, bad_row, ref);
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
static void on_samples_binary(ag_agent *a, ag_conn *c, json_t *h, const unsigned char *body,
                              size_t len)
{
    const char *stream = json_string_value(json_object_get(h, "stream_id"));
    json_t *seq = json_object_get(h, "seq");
    json_int_t n = json_integer_value(json_object_get(h, "n")),
               channels = json_integer_value(json_object_get(h, "channels"));
    char why[256];
    if (!stream || !*stream || !json_is_integer(seq) || n < 1 || n > 65536 || channels < 1 ||
        channels > 1024) {
        invalid(a, c,
                "binary samples header: expected stream_id, seq, n (1..65536) and channels "
                "(1..1024)",
                NULL);
        return;
    }
    size_t want = (size_t)n * 8 * (1 + (size_t)channels);
    if (len != want) {
        snprintf(why, sizeof(why),
                 "binary samples body: %zu bytes, expected n x 8 x (1 + channels) = %zu "
                 "(n=%lld, channels=%lld)",
                 len, want, (long long)n, (long long)channels);
        invalid(a, c, why, NULL);
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

static void on_status(ag_agent *a, ag_conn *c, json_t *payload, const char *ref)
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

static void on_sync_mark(ag_agent *a, ag_conn *c, json_t *env, json_t *payload, const char *ref)
{
    const char *session = json_string_value(json_object_get(env, "session_id"));
    const char *mark = json_string_value(json_object_get(payload, "mark_id"));
    const char *label = json_string_value(json_object_get(payload, "label"));
    json_t *ts = json_object_get(env, "ts");
    if (!session || !*session || !mark || !*mark || !json_is_integer(ts)) {
        invalid(a, c, "sync_mark: expected session_id and ts in the envelope and payload.mark_id",
                ref);
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
static void on_media(ag_agent *a, ag_conn *c, json_t *h, const unsigned char *packet, size_t bytes)
{
    const char *stream = json_string_value(json_object_get(h, "stream_id"));
    const char *codec = json_string_value(json_object_get(h, "codec"));
    if (!stream || !codec || !json_is_integer(json_object_get(h, "pts"))) {
        invalid(a, c, "binary media header: expected {stream_id, codec, pts, ...}", NULL);
        return;
    }
    int64_t ts = json_integer_value(json_object_get(h, "ts"));
    int64_t master = ag_device_to_master(a, c->dev, ts);
    const char *session;
    ag_count *cnt = ag_recording_count(
        a, c->dev, json_string_value(json_object_get(h, "session_id")), ts, stream, &session);
    json_t *rec =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:I, s:b, s:I, s:I, s:i, s:i, s:s}", "device_id",
                  c->dev->device_id, "session_id", session, "stream_id", stream, "seq",
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
        invalid(a, c, err, NULL);
        return;
    }
    ag_recording_account(a, cnt, emit_value(a, s, c->dev->device_id, v), 1, (int64_t)bytes);
}

/* Binary frame: 4-byte big-endian length N, N bytes of JSON header, then
 * the body; the header's "type" says what the body is ("media" when
 * absent). */
static void on_binary(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len)
{
    size_t hlen =
        len >= 4 ? ((size_t)msg[0] << 24 | (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]) : 0;
    json_t *h = hlen && hlen <= len - 4 ? json_loadb((const char *)msg + 4, hlen, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(h, "type"));
    if (!json_is_object(h)) {
        invalid(a, c,
                "binary frame: expected a 4-byte big-endian header length, a JSON object "
                "header, then the body",
                NULL);
    } else if (!type || strcmp(type, "media") == 0) {
        on_media(a, c, h, msg + 4 + hlen, len - 4 - hlen);
    } else if (strcmp(type, "samples") == 0) {
        on_samples_binary(a, c, h, msg + 4 + hlen, len - 4 - hlen);
    } else {
        char why[128];
        a->n.unknown_type++;
        snprintf(why, sizeof(why), "unknown binary frame type '%.64s'", type);
        ag_send_error(a, c, "unknown_type", why, NULL);
    }
    json_decref(h);
}

/* --------------------------------------------------------------- dispatch */

/* Token bucket per connection: a flood gets one error, then silence, then
 * a close if it goes on. */
static int rate_ok(ag_agent *a, ag_conn *c, int64_t now)
{
    c->tokens += (double)(now - c->tokens_at_ns) * 1e-9 * (double)a->cfg.rate_per_s;
    if (c->tokens > (double)a->cfg.rate_burst)
        c->tokens = (double)a->cfg.rate_burst;
    c->tokens_at_ns = now;
    if (c->tokens >= 1.0) {
        c->tokens -= 1.0;
        c->flood_strikes = 0;
        return 1;
    }
    a->n.rate_limited++;
    if (c->flood_strikes++ == 0)
        ag_send_error(a, c, "rate_limited", "too many messages: slow down", NULL);
    if (c->flood_strikes > a->cfg.rate_burst * 10)
        ag_close(c, 1008, "flood: messages keep exceeding the rate limit");
    return 0;
}

void ag_on_message(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len, int binary)
{
    /* t4: when the message's last bytes reached this host (kernel stamp),
     * not when this loop, busy with other devices, read them */
    int64_t now = ag_now_ns(), t4 = c->rx_fd >= 0 ? rxstamp_arrival(c->rx_fd, now) : now;
    json_error_t jerr;
    char why[256];

    a->n.messages++;
    if (!rate_ok(a, c, now))
        return;
    if (binary) {
        if (!c->dev) {
            a->n.not_registered++;
            ag_send_error(a, c, "not_registered", "send hello first", NULL);
            return;
        }
        on_binary(a, c, msg, len);
        return;
    }
    json_t *env = json_loadb((const char *)msg, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!env) {
        a->n.bad_json++;
        snprintf(why, sizeof(why), "malformed JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        ag_send_error(a, c, "bad_json", why, NULL);
        return;
    }
    const char *type = json_string_value(json_object_get(env, "type"));
    const char *ref = json_string_value(json_object_get(env, "id"));
    json_t *payload = json_object_get(env, "payload");
    if (!json_is_object(env) || !type) {
        invalid(a, c, "expected an object with a string \"type\"", ref);
    } else if (strcmp(type, "hello") == 0) {
        on_hello(a, c, env, ref);
    } else if (!c->dev && strcmp(type, "ack") != 0 && strcmp(type, "error") != 0) {
        a->n.not_registered++;
        ag_send_error(a, c, "not_registered", "send hello first", ref);
    } else if (strcmp(type, "time_resp") == 0) {
        on_time_resp(a, c, payload, t4, ref);
    } else if (strcmp(type, "samples") == 0) {
        on_samples(a, c, env, payload, ref);
    } else if (strcmp(type, "status") == 0) {
        on_status(a, c, payload, ref);
    } else if (strcmp(type, "sync_mark") == 0) {
        on_sync_mark(a, c, env, payload, ref);
    } else if (strcmp(type, "ack") == 0 || strcmp(type, "error") == 0) {
        /* the device's answers to start/stop: counted for now */
    } else {
        a->n.unknown_type++;
        snprintf(why, sizeof(why), "unknown message type '%.64s'", type);
        ag_send_error(a, c, "unknown_type", why, ref);
    }
    json_decref(env);
}

void ag_on_closed(ag_agent *a, ag_conn *c)
{
    ag_device *d = c->dev;
    if (d) {
        d->conn = NULL;
        d->round_active = 0;
        a->connected--;
        ag_emit(a, "DeviceDisconnected", d->device_id,
                json_pack("{s:s, s:s, s:s}", "device_id", d->device_id, "node_id", a->cfg.node_id,
                          "reason", "connection closed"),
                NULL, 0);
    }
    while (c->out_head) {
        ag_out *o = c->out_head;
        c->out_head = o->next;
        free(o);
    }
    c->out_tail = NULL;
    free(c->rx);
    c->rx = NULL;
}

/* ------------------------------------------------------------------- flow */

static void flow_set(ag_agent *a, ag_conn *c, int slow)
{
    if (slow)
        ag_send(a, c, "flow",
                json_pack("{s:s, s:s, s:I}", "state", "slow_down", "reason", "log_behind",
                          "backlog_bytes", (json_int_t)a->backlog_bytes));
    else
        ag_send(a, c, "flow", json_pack("{s:s}", "state", "resume"));
    if (c->paused != slow) {
        c->paused = slow;
        lws_rx_flow_control(c->wsi, !slow);
    }
}

void ag_flow_greet(ag_agent *a, ag_conn *c)
{
    if (a->slowed)
        flow_set(a, c, 1);
}

void ag_flow_tick(ag_agent *a, int64_t now)
{
    int64_t records, bytes;
    char err[512];
    if (ev_log_backlog(a->log, &records, &bytes, err, sizeof(err)) &&
        now - a->log_error_at_ns >= 1000000000LL) {
        a->log_error_at_ns = now; /* once a second while it lasts */
        fprintf(stderr, "msrs-agent: log: %s\n", err);
    }
    a->backlog_bytes = bytes;
    int slow = a->slowed ? bytes > a->cfg.flow_low_bytes : bytes > a->cfg.flow_high_bytes;
    if (slow == a->slowed)
        return;
    a->slowed = slow;
    a->n.slow_downs += slow;
    fprintf(stderr, "msrs-agent: log backlog %lld bytes in %lld records: %s\n", (long long)bytes,
            (long long)records, slow ? "devices told to slow down" : "devices resume");
    for (size_t i = 0; i < a->device_count; i++)
        if (a->devices[i]->conn)
            flow_set(a, a->devices[i]->conn, slow);
}
