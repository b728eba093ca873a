/* msrs-archiver — writes every recorded session to a folder:
 *
 *   ARCHIVE/SESSION/
 *     manifest.json                 session, devices, streams, counts, clock
 *                                   fits, SHA-256 of every file
 *     DEVICE/STREAM.avro            SensorSampleBatch records (Avro object
 *                                   container: any Avro reader)
 *     DEVICE/STREAM.h264|.m4v|...   the video as an elementary stream
 *                                   (ffprobe/ffplay), from its first keyframe
 *     DEVICE/STREAM.frames.avro     every MediaPacket without its bytes:
 *                                   seq, pts, keyframe, device and master time
 *     DEVICE/clock.avro             the device's ClockOffsetMeasured records
 *                                   around the session, for refits
 *     events.avro                   the session's own records (sessions topic)
 *                                   and its devices' registrations, framed as
 *                                   on the log with id and time: msrs-replay
 *                                   --archive folds them into state
 *     sub-S_ses-S_task-T_run-R.xdf  the sensor streams and sync marks in XDF
 *                                   (LabRecorder's naming, from the labels)
 *
 * It consumes sessions, devices, samples and media as the cursor
 * "archiver". A session is built in ARCHIVE/.staging/SESSION and renamed
 * into place when it is complete: CollectionStopped came and every stream
 * has the counts it reports (or archive.finalize_timeout_ms passed: then
 * the manifest says complete=false and lists the differences). The cursor
 * is committed only while no session is being built, so a killed archiver
 * re-reads every open session from the log and rebuilds it. Records are
 * deduplicated by (device, stream, seq): redelivery never doubles data. An
 * existing session folder is never overwritten: the same session archived
 * before is left as it is; a different one with the same id gets "-2". */
#include "archfile.h"
#include "cli.h"
#include "xdf.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AR_CLOCK_RING      4096
#define AR_CLOCK_MARGIN_NS 30000000000LL /* offsets this long around a session go with it */

typedef struct ar_offset {
    int64_t t4, offset, rtt, uncertainty, round, t1, t2, t3;
    double drift_ppm;
    int probes;
    json_t *rec; /* the whole record (round_probes too): what clock.avro holds */
} ar_offset;

/* A record as the log had it, for events.avro. */
typedef struct ar_frame {
    char id[EV_ID_MAX], source[EV_SOURCE_MAX];
    int64_t time_ns;
    unsigned char *value;
    size_t len;
} ar_frame;

typedef struct ar_dev {
    char id[128];
    json_t *registered; /* last DeviceRegistered */
    ar_frame registered_frame;
    ar_offset *ring;
    size_t count, next;
} ar_dev;

enum { AR_SAMPLES, AR_MEDIA };

typedef struct ar_stream {
    char device_id[128], stream_id[128];
    int kind;
    avro_file_writer_t ocf;
    FILE *es;
    int seen_keyframe;
    int64_t next_seq, samples, bytes, gaps, duplicates, before_keyframe;
    int64_t first_master, last_master;
    uint32_t xdf_id;
    int channels;
    double first_t, last_t;
    int64_t xdf_count;
    char codec[32];
} ar_stream;

typedef struct ar_session {
    char id[128];
    char staging[1200]; /* archive.dir (< 1024) + /.staging/ + name */
    json_t *requested, *sync, *started, *stopped, *marks, *files;
    int64_t stopped_seen_ms;
    ar_stream **streams;
    size_t stream_count;
    xdf_writer xdf;
    char xdf_name[272];
    uint32_t next_xdf_id;
    int failed;                /* a write failed: finalized as incomplete */
    avro_file_writer_t events; /* events.avro */
} ar_session;

typedef struct ar_archiver {
    ev_log *log;
    ev_codec *codec;
    char dir[1024];
    int64_t finalize_timeout_ms;
    ar_dev *devs;
    size_t dev_count;
    ar_session **sessions;
    size_t session_count;
    json_t *done;               /* sessions finalized by this process */
    avro_schema_t event_schema; /* of events.avro records */
    avro_value_iface_t *event_iface;
    int64_t records, skipped, archived;
} ar_archiver;

/* ------------------------------------------------------------ utilities */

/* A name safe as one path component: [A-Za-z0-9._-], others become '_'. */
static void safe_name(char *out, size_t size, const char *in)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++) {
        char c = in[i];
        out[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                         c == '.' || c == '-' || c == '_'
                     ? c
                     : '_';
    }
    out[i] = '\0';
    if (i == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, size, "unnamed");
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int64_t jint(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* --------------------------------------------------------------- devices */

static ar_dev *dev_get(ar_archiver *a, const char *id)
{
    for (size_t i = 0; i < a->dev_count; i++)
        if (strcmp(a->devs[i].id, id) == 0)
            return &a->devs[i];
    ar_dev *grown = realloc(a->devs, (a->dev_count + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    a->devs = grown;
    ar_dev *d = &a->devs[a->dev_count++];
    memset(d, 0, sizeof(*d));
    snprintf(d->id, sizeof(d->id), "%s", id);
    return d;
}

static void on_clock(ar_archiver *a, json_t *r)
{
    ar_dev *d = dev_get(a, jstr(r, "device_id"));
    if (!d || (!d->ring && !(d->ring = calloc(AR_CLOCK_RING, sizeof(*d->ring)))))
        return;
    json_decref(d->ring[d->next].rec); /* the oldest, overwritten */
    d->ring[d->next] = (ar_offset){jint(r, "t4_ns"),
                                   jint(r, "offset_ns"),
                                   jint(r, "rtt_ns"),
                                   jint(r, "uncertainty_ns"),
                                   jint(r, "round"),
                                   jint(r, "t1_ns"),
                                   jint(r, "t2_ns"),
                                   jint(r, "t3_ns"),
                                   json_number_value(json_object_get(r, "drift_ppm")),
                                   (int)jint(r, "probes"),
                                   json_incref(r)};
    d->next = (d->next + 1) % AR_CLOCK_RING;
    if (d->count < AR_CLOCK_RING)
        d->count++;
}

/* The declared stream info {type, rate_hz, channels, format} or NULL. */
static json_t *stream_info(ar_archiver *a, const char *device, const char *stream)
{
    ar_dev *d = dev_get(a, device);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(d ? d->registered : NULL, "streams"), i,
                       s) if (strcmp(jstr(s, "stream_id"), stream) == 0) return s;
    return NULL;
}

/* -------------------------------------------------------------- sessions */

static ar_session *session_get(ar_archiver *a, const char *id)
{
    if (!*id || json_object_get(a->done, id))
        return NULL;
    for (size_t i = 0; i < a->session_count; i++)
        if (strcmp(a->sessions[i]->id, id) == 0)
            return a->sessions[i];
    ar_session *s = calloc(1, sizeof(*s));
    ar_session **grown = realloc(a->sessions, (a->session_count + 1) * sizeof(*grown));
    if (!s || !grown) {
        free(s);
        if (grown)
            a->sessions = grown;
        return NULL;
    }
    a->sessions = grown;
    a->sessions[a->session_count++] = s;
    snprintf(s->id, sizeof(s->id), "%s", id);
    char name[128];
    safe_name(name, sizeof(name), id);
    snprintf(s->staging, sizeof(s->staging), "%s/.staging/%s", a->dir, name);
    rm_tree(s->staging);
    if (cli_mkdirs(s->staging)) {
        fprintf(stderr, "msrs-archiver: %s: cannot create: %s\n", s->staging, strerror(errno));
        s->failed = 1;
    }
    s->marks = json_array();
    s->files = json_array();
    char path[1300];
    snprintf(path, sizeof(path), "%s/events.avro", s->staging);
    json_array_append_new(s->files, json_string("events.avro"));
    if (avro_file_writer_create_with_codec(path, a->event_schema, &s->events, "null", 1 << 20)) {
        fprintf(stderr, "msrs-archiver: %s: %s\n", path, avro_strerror());
        s->events = NULL;
        s->failed = 1;
    }
    fprintf(stderr, "msrs-archiver: session %s: building in %s\n", id, s->staging);
    return s;
}

/* The schema of events.avro: a record as the log held it. */
static const char EVENT_SCHEMA[] =
    "{\"type\": \"record\", \"name\": \"ArchivedEvent\", \"namespace\": \"msrs.archive\","
    " \"doc\": \"A record of the log: value is the framed record (0x00, 4-byte schema id, Avro)\","
    " \"fields\": [{\"name\": \"topic\", \"type\": \"string\"}, {\"name\": \"key\", \"type\": "
    "\"string\"},"
    " {\"name\": \"id\", \"type\": \"string\"}, {\"name\": \"source\", \"type\": \"string\"},"
    " {\"name\": \"time_ns\", \"type\": \"long\"}, {\"name\": \"value\", \"type\": \"bytes\"}]}";

static void archive_event(ar_archiver *a, ar_session *s, const char *topic, const char *key,
                          const ar_frame *f)
{
    avro_value_t v, x;
    if (!s->events || avro_generic_value_new(a->event_iface, &v))
        return;
    int rc = avro_value_get_by_index(&v, 0, &x, NULL) || avro_value_set_string(&x, topic) ||
             avro_value_get_by_index(&v, 1, &x, NULL) || avro_value_set_string(&x, key) ||
             avro_value_get_by_index(&v, 2, &x, NULL) || avro_value_set_string(&x, f->id) ||
             avro_value_get_by_index(&v, 3, &x, NULL) || avro_value_set_string(&x, f->source) ||
             avro_value_get_by_index(&v, 4, &x, NULL) || avro_value_set_long(&x, f->time_ns) ||
             avro_value_get_by_index(&v, 5, &x, NULL) ||
             avro_value_set_bytes(&x, f->value, f->len) ||
             avro_file_writer_append_value(s->events, &v);
    if (rc)
        s->failed = 1;
    avro_value_decref(&v);
}

static void frame_set(ar_frame *f, const ev_event *ev)
{
    free(f->value);
    snprintf(f->id, sizeof(f->id), "%s", ev->id);
    snprintf(f->source, sizeof(f->source), "%s", ev->source);
    f->time_ns = ev->time_ns;
    f->len = ev->msg ? ev->msg->value_len : 0;
    f->value = f->len ? malloc(f->len) : NULL;
    if (f->value)
        memcpy(f->value, ev->msg->value, f->len);
    else
        f->len = 0;
}

/* Path of a file of the session: staging/rel; rel is remembered for the
 * manifest. */
static void session_file(ar_session *s, char *path, size_t size, const char *rel)
{
    snprintf(path, size, "%s/%s", s->staging, rel);
    json_array_append_new(s->files, json_string(rel));
    char *slash = strrchr(path, '/');
    if (slash && slash > path + strlen(s->staging)) {
        *slash = '\0';
        cli_mkdirs(path);
        *slash = '/';
    }
}

static const char *es_extension(const char *codec)
{
    if (strstr(codec, "264"))
        return "h264";
    if (strstr(codec, "265") || strcmp(codec, "hevc") == 0)
        return "h265";
    if (strcmp(codec, "mpeg4") == 0)
        return "m4v";
    if (strstr(codec, "jpeg"))
        return "mjpeg";
    return "bin";
}

static ar_stream *stream_get(ar_archiver *a, ar_session *s, const char *device, const char *stream,
                             int kind, const char *codec, int channels)
{
    for (size_t i = 0; i < s->stream_count; i++)
        if (strcmp(s->streams[i]->device_id, device) == 0 &&
            strcmp(s->streams[i]->stream_id, stream) == 0)
            return s->streams[i];
    ar_stream *st = calloc(1, sizeof(*st));
    ar_stream **grown = realloc(s->streams, (s->stream_count + 1) * sizeof(*grown));
    if (!st || !grown) {
        free(st);
        if (grown)
            s->streams = grown;
        s->failed = 1;
        return NULL;
    }
    s->streams = grown;
    s->streams[s->stream_count++] = st;
    snprintf(st->device_id, sizeof(st->device_id), "%s", device);
    snprintf(st->stream_id, sizeof(st->stream_id), "%s", stream);
    snprintf(st->codec, sizeof(st->codec), "%s", codec ? codec : "");
    st->kind = kind;
    st->next_seq = -1;
    st->channels = channels;
    char dn[128], sn[128], rel[300], path[PATH_MAX];
    safe_name(dn, sizeof(dn), device);
    safe_name(sn, sizeof(sn), stream);
    const ev_schema *schema =
        ev_schema_by_name(kind == AR_SAMPLES ? "SensorSampleBatch" : "MediaPacket");
    snprintf(rel, sizeof(rel), "%s/%s%s", dn, sn, kind == AR_SAMPLES ? ".avro" : ".frames.avro");
    session_file(s, path, sizeof(path), rel);
    /* Blocks larger than any record (avro-c fails a record bigger than its block). */
    if (avro_file_writer_create_with_codec(path, ev_schema_avro(schema), &st->ocf, "null",
                                           1 << 20)) {
        fprintf(stderr, "msrs-archiver: %s: %s\n", path, avro_strerror());
        st->ocf = NULL;
        s->failed = 1;
    }
    if (kind == AR_MEDIA) {
        snprintf(rel, sizeof(rel), "%s/%s.%s", dn, sn, es_extension(st->codec));
        session_file(s, path, sizeof(path), rel);
        if (!(st->es = fopen(path, "wb"))) {
            fprintf(stderr, "msrs-archiver: %s: %s\n", path, strerror(errno));
            s->failed = 1;
        }
        return st;
    }
    if (!s->xdf.f) {
        char sub[64] = "", name[256] = "";
        json_t *labels = json_object_get(s->requested, "labels");
        static const char *const parts[][2] = {
            {"subject", "sub"}, {"session", "ses"}, {"task", "task"}, {"run", "run"}};
        for (size_t i = 0; i < 4; i++) {
            const char *v = jstr(labels, parts[i][0]);
            if (!*v)
                continue;
            safe_name(sub, sizeof(sub), v);
            snprintf(name + strlen(name), sizeof(name) - strlen(name), "%s%s-%s", *name ? "_" : "",
                     parts[i][1], sub);
        }
        if (!*name)
            safe_name(name, sizeof(name), s->id);
        snprintf(s->xdf_name, sizeof(s->xdf_name), "%s.xdf", name);
        session_file(s, path, sizeof(path), s->xdf_name);
        if (xdf_open(&s->xdf, path)) {
            fprintf(stderr, "msrs-archiver: %s: %s\n", path, strerror(errno));
            s->failed = 1;
        }
    }
    if (s->xdf.f) {
        json_t *info = stream_info(a, device, stream);
        char name[300];
        snprintf(name, sizeof(name), "%s/%s", device, stream);
        st->xdf_id = ++s->next_xdf_id;
        xdf_stream_header(&s->xdf, st->xdf_id, name,
                          *jstr(info, "type") ? jstr(info, "type") : stream, channels,
                          json_number_value(json_object_get(info, "rate_hz")), "double64", name);
    }
    return st;
}

/* Checks seq: 1 = new (gaps counted), 0 = a duplicate to skip. */
static int seq_ok(ar_stream *st, int64_t seq, int64_t n)
{
    if (st->next_seq >= 0 && seq < st->next_seq) {
        st->duplicates++;
        return 0;
    }
    if (st->next_seq >= 0 && seq > st->next_seq)
        st->gaps++;
    st->next_seq = seq + n;
    return 1;
}

static void on_samples(ar_archiver *a, avro_value_t *v, json_t *r)
{
    ar_session *s = session_get(a, jstr(r, "session_id"));
    json_t *dt = json_object_get(r, "device_time_ns"), *mt = json_object_get(r, "master_time_ns"),
           *values = json_object_get(r, "values");
    size_t n = json_array_size(dt);
    int channels = (int)jint(r, "channels");
    if (!s || n == 0 || channels <= 0 || json_array_size(values) != n * (size_t)channels)
        return;
    ar_stream *st =
        stream_get(a, s, jstr(r, "device_id"), jstr(r, "stream_id"), AR_SAMPLES, NULL, channels);
    if (!st || !seq_ok(st, jint(r, "seq"), (int64_t)n))
        return;
    if (st->ocf && avro_file_writer_append_value(st->ocf, v)) {
        fprintf(stderr, "msrs-archiver: session %s: %s/%s: %s\n", s->id, st->device_id,
                st->stream_id, avro_strerror());
        s->failed = 1;
    }
    if (s->xdf.f && channels == st->channels) {
        double *t = malloc(n * sizeof(double)), *x = malloc(n * (size_t)channels * sizeof(double));
        if (t && x) {
            for (size_t i = 0; i < n; i++)
                t[i] = (double)json_integer_value(json_array_get(dt, i)) / 1e9;
            for (size_t i = 0; i < n * (size_t)channels; i++)
                x[i] = json_number_value(json_array_get(values, i));
            xdf_samples(&s->xdf, st->xdf_id, n, t, channels, x);
            if (!st->xdf_count)
                st->first_t = t[0];
            st->last_t = t[n - 1];
            st->xdf_count += (int64_t)n;
            if (s->xdf.chunks_since_boundary >= 500)
                xdf_boundary(&s->xdf);
        }
        free(t);
        free(x);
    }
    if (!st->samples)
        st->first_master = json_integer_value(json_array_get(mt, 0));
    st->last_master = json_integer_value(json_array_get(mt, n - 1));
    st->samples += (int64_t)n;
    st->bytes += (int64_t)(n * (size_t)channels * sizeof(double));
}

/* v: the MediaPacket without its bytes (for the index); bytes: the packet. */
static void on_media(ar_archiver *a, avro_value_t *v, json_t *r, const void *bytes, size_t len)
{
    ar_session *s = session_get(a, jstr(r, "session_id"));
    if (!s)
        return;
    ar_stream *st =
        stream_get(a, s, jstr(r, "device_id"), jstr(r, "stream_id"), AR_MEDIA, jstr(r, "codec"), 0);
    if (!st || !seq_ok(st, jint(r, "seq"), 1))
        return;
    int key = json_is_true(json_object_get(r, "keyframe"));
    st->seen_keyframe |= key;
    if (!st->seen_keyframe)
        st->before_keyframe++; /* a decoder cannot start there */
    else if (st->es && len && fwrite(bytes, 1, len, st->es) != len)
        s->failed = 1;
    if (!st->samples)
        st->first_master = jint(r, "master_time_ns");
    st->last_master = jint(r, "master_time_ns");
    st->samples++;
    st->bytes += (int64_t)len;
    if (st->ocf && avro_file_writer_append_value(st->ocf, v))
        s->failed = 1;
}

/* ------------------------------------------------------------ finalizing */

/* The device's offsets within the session (with a margin), oldest first. */
static size_t offsets_in(const ar_dev *d, int64_t from, int64_t to, const ar_offset **out,
                         size_t cap)
{
    size_t n = 0;
    for (size_t k = 0; d && k < d->count && n < cap; k++) {
        const ar_offset *o = &d->ring[(d->next + AR_CLOCK_RING - d->count + k) % AR_CLOCK_RING];
        if (o->t4 >= from && o->t4 <= to)
            out[n++] = o;
    }
    return n;
}

/* Least-squares line offset(t4) over the session: drift and residual. */
static json_t *clock_fit(const ar_offset **o, size_t n, int64_t t0)
{
    if (n == 0)
        return json_pack("{s:i}", "offsets", 0);
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)(o[i]->t4 - t0) / 1e9, y = (double)(o[i]->offset - o[0]->offset);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    double den = (double)n * sxx - sx * sx;
    double slope = den > 0 ? ((double)n * sxy - sx * sy) / den : 0; /* ns per s */
    double icpt = (sy - slope * sx) / (double)n, rss = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)(o[i]->t4 - t0) / 1e9, y = (double)(o[i]->offset - o[0]->offset);
        double e = y - (icpt + slope * x);
        rss += e * e;
    }
    return json_pack("{s:i, s:I, s:f, s:f}", "offsets", (int)n, "offset_at_start_ns",
                     (json_int_t)((double)o[0]->offset + icpt), "drift_ppm", slope / 1e3,
                     "residual_rms_ns", sqrt(rss / (double)n));
}

static void write_clock_file(ar_archiver *a, ar_session *s, const char *device, const ar_offset **o,
                             size_t n)
{
    char dn[128], rel[300], path[PATH_MAX], err[256];
    const ev_schema *schema = ev_schema_by_name("ClockOffsetMeasured");
    avro_file_writer_t w;
    avro_value_t *v;
    safe_name(dn, sizeof(dn), device);
    snprintf(rel, sizeof(rel), "%s/clock.avro", dn);
    session_file(s, path, sizeof(path), rel);
    if (avro_file_writer_create_with_codec(path, ev_schema_avro(schema), &w, "null", 1 << 16)) {
        s->failed = 1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (ev_codec_value(a->codec, schema, &v) ||
            ev_value_from_json(v, o[i]->rec, err, sizeof(err)) ||
            avro_file_writer_append_value(w, v))
            s->failed = 1;
    avro_file_writer_close(w);
}

/* Differences between what CollectionStopped reports and what is here. */
static json_t *mismatches(ar_session *s)
{
    json_t *out = json_array(), *c;
    size_t i;
    json_array_foreach(json_object_get(s->stopped, "streams"), i, c)
    {
        ar_stream *st = NULL;
        for (size_t k = 0; k < s->stream_count; k++)
            if (strcmp(s->streams[k]->device_id, jstr(c, "device_id")) == 0 &&
                strcmp(s->streams[k]->stream_id, jstr(c, "stream_id")) == 0)
                st = s->streams[k];
        int64_t have = st ? st->samples : 0, bytes = st ? st->bytes : 0;
        if (have != jint(c, "samples") || bytes != jint(c, "bytes"))
            json_array_append_new(
                out, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "device_id", jstr(c, "device_id"),
                               "stream_id", jstr(c, "stream_id"), "reported_samples",
                               (json_int_t)jint(c, "samples"), "archived_samples", (json_int_t)have,
                               "reported_bytes", (json_int_t)jint(c, "bytes"), "archived_bytes",
                               (json_int_t)bytes));
    }
    return out;
}

static void session_free(ar_session *s)
{
    for (size_t i = 0; i < s->stream_count; i++) {
        if (s->streams[i]->ocf)
            avro_file_writer_close(s->streams[i]->ocf);
        if (s->streams[i]->es)
            fclose(s->streams[i]->es);
        free(s->streams[i]);
    }
    free(s->streams);
    if (s->xdf.f)
        xdf_close(&s->xdf);
    json_decref(s->requested);
    json_decref(s->sync);
    json_decref(s->started);
    json_decref(s->stopped);
    json_decref(s->marks);
    json_decref(s->files);
    if (s->events)
        avro_file_writer_close(s->events);
    free(s);
}

/* Where the session goes: ARCHIVE/NAME, or NAME-2.. when a different
 * session has that folder. Returns 1 when this very session is there
 * already (same id and start). */
static int final_dir(ar_archiver *a, ar_session *s, char *out, size_t size)
{
    char name[128];
    safe_name(name, sizeof(name), s->id);
    for (int k = 1;; k++) {
        char manifest[PATH_MAX + 16];
        struct stat st;
        if (k == 1)
            snprintf(out, size, "%s/%s", a->dir, name);
        else
            snprintf(out, size, "%s/%s-%d", a->dir, name, k);
        if (stat(out, &st) != 0)
            return 0;
        snprintf(manifest, sizeof(manifest), "%s/manifest.json", out);
        json_t *m = json_load_file(manifest, 0, NULL);
        int same = m && strcmp(jstr(m, "session_id"), s->id) == 0 &&
                   jint(m, "start_at_ns") == jint(s->started, "start_at_ns");
        json_decref(m);
        if (same)
            return 1;
    }
}

static void finalize(ar_archiver *a, ar_session *s)
{
    int64_t start = jint(s->started, "start_at_ns"), stop = jint(s->stopped, "stop_at_ns");
    json_t *devices = json_object(), *files = json_object();
    const ar_offset **offs = malloc(AR_CLOCK_RING * sizeof(*offs));
    size_t i;
    json_t *d;

    /* Devices: the session's sync group and every device with data. */
    json_array_foreach(json_object_get(s->sync, "devices"), i, d) json_object_set_new(
        devices, jstr(d, "device_id"),
        json_pack("{s:s, s:O, s:{}}", "node_id", jstr(d, "node_id"), "sync", d, "streams"));
    for (size_t k = 0; k < s->stream_count; k++)
        if (!json_object_get(devices, s->streams[k]->device_id))
            json_object_set_new(devices, s->streams[k]->device_id, json_pack("{s:{}}", "streams"));
    const char *dev_id;
    json_object_foreach(devices, dev_id, d)
    {
        ar_dev *dev = dev_get(a, dev_id);
        if (dev && dev->registered_frame.len)
            archive_event(a, s, "devices", dev_id, &dev->registered_frame);
        size_t n = offs ? offsets_in(dev, start - AR_CLOCK_MARGIN_NS, stop + AR_CLOCK_MARGIN_NS,
                                     offs, AR_CLOCK_RING)
                        : 0;
        json_object_set_new(d, "clock_fit", clock_fit(offs, n, start));
        write_clock_file(a, s, dev_id, offs, n);
        double *ct = malloc((n + 1) * sizeof(double)), *cv = malloc((n + 1) * sizeof(double));
        for (size_t k = 0; ct && cv && k < n; k++) {
            /* XDF: at this time on the device's clock it was this far behind the master's. */
            ct[k] = (double)(offs[k]->t4 + offs[k]->offset) / 1e9;
            cv[k] = -(double)offs[k]->offset / 1e9;
        }
        for (size_t k = 0; k < s->stream_count; k++) {
            ar_stream *st = s->streams[k];
            if (strcmp(st->device_id, dev_id) != 0)
                continue;
            json_t *info = stream_info(a, dev_id, st->stream_id);
            json_object_set_new(
                json_object_get(d, "streams"), st->stream_id,
                json_pack("{s:s, s:s, s:O?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i}", "kind",
                          st->kind == AR_SAMPLES ? "samples" : "video", "codec", st->codec,
                          "declared", info, "samples", (json_int_t)st->samples, "bytes",
                          (json_int_t)st->bytes, "gaps", (json_int_t)st->gaps, "duplicates",
                          (json_int_t)st->duplicates, "before_first_keyframe",
                          (json_int_t)st->before_keyframe, "first_master_ns",
                          (json_int_t)st->first_master, "last_master_ns",
                          (json_int_t)st->last_master, "xdf_stream", (int)st->xdf_id));
            if (st->kind == AR_SAMPLES && s->xdf.f && ct && cv) {
                for (size_t q = 0; q < n; q++)
                    xdf_clock_offset(&s->xdf, st->xdf_id, ct[q], cv[q]);
                xdf_stream_footer(&s->xdf, st->xdf_id, st->first_t, st->last_t, st->xdf_count, ct,
                                  cv, n);
            }
        }
        free(ct);
        free(cv);
    }
    free(offs);
    /* Sync marks: a string stream on the master clock (no offsets). */
    if (s->xdf.f && json_array_size(s->marks)) {
        uint32_t id = ++s->next_xdf_id;
        double first = 0, last = 0;
        xdf_stream_header(&s->xdf, id, "msrs/sync_marks", "Markers", 1, 0, "string", s->id);
        json_array_foreach(s->marks, i, d)
        {
            double t = (double)jint(d, "master_time_ns") / 1e9;
            xdf_string_sample(&s->xdf, id, t,
                              *jstr(d, "label") ? jstr(d, "label") : jstr(d, "mark_id"));
            first = i == 0 ? t : first;
            last = t;
        }
        xdf_stream_footer(&s->xdf, id, first, last, (int64_t)json_array_size(s->marks), NULL, NULL,
                          0);
    }
    if (s->xdf.f) {
        xdf_boundary(&s->xdf);
        if (xdf_close(&s->xdf))
            s->failed = 1;
    }
    if (s->events && avro_file_writer_close(s->events))
        s->failed = 1;
    s->events = NULL;
    for (size_t k = 0; k < s->stream_count; k++) {
        ar_stream *st = s->streams[k];
        if (st->ocf && avro_file_writer_close(st->ocf))
            s->failed = 1;
        st->ocf = NULL;
        if (st->es && fclose(st->es))
            s->failed = 1;
        st->es = NULL;
    }
    json_t *diff = mismatches(s);
    json_t *f;
    json_array_foreach(s->files, i, f)
    {
        char path[PATH_MAX + 1300], hex[65];
        int64_t bytes;
        snprintf(path, sizeof(path), "%s/%s", s->staging, json_string_value(f));
        if (sha256_file(path, hex, &bytes)) {
            s->failed = 1;
            continue;
        }
        json_object_set_new(files, json_string_value(f),
                            json_pack("{s:I, s:s}", "bytes", (json_int_t)bytes, "sha256", hex));
    }
    int complete = json_array_size(diff) == 0 && !s->failed;
    json_t *m = json_pack(
        "{s:s, s:s, s:O?, s:O?, s:I, s:I, s:I, s:s, s:b, s:o, s:o, s:O, s:O?, s:o, s:s?}", "format",
        "msrs-archive/1", "session_id", s->id, "labels", json_object_get(s->requested, "labels"),
        "requested", s->requested, "start_at_ns", (json_int_t)start, "stop_at_ns", (json_int_t)stop,
        "duration_ns", (json_int_t)jint(s->stopped, "duration_ns"), "reason",
        jstr(s->stopped, "reason"), "complete", complete, "mismatches", diff, "devices", devices,
        "marks", s->marks, "reported_streams", json_object_get(s->stopped, "streams"), "files",
        files, "xdf", *s->xdf_name ? s->xdf_name : NULL);
    char path[PATH_MAX], final[1200];
    snprintf(path, sizeof(path), "%s/manifest.json", s->staging);
    if (json_dump_file(m, path, JSON_INDENT(2) | JSON_SORT_KEYS))
        s->failed = 1;
    json_decref(m);
    if (final_dir(a, s, final, sizeof(final))) {
        fprintf(stderr, "msrs-archiver: session %s: archived before in %s; left as it is\n", s->id,
                final);
        rm_tree(s->staging);
    } else if (rename(s->staging, final)) {
        fprintf(stderr, "msrs-archiver: session %s: rename %s -> %s: %s\n", s->id, s->staging,
                final, strerror(errno));
    } else {
        a->archived++;
        fprintf(stderr, "msrs-archiver: session %s archived in %s: %zu streams, %s\n", s->id, final,
                s->stream_count,
                complete ? "complete" : "INCOMPLETE (see manifest.json mismatches)");
        printf("%s\n", final);
        fflush(stdout);
    }
}

static void check_sessions(ar_archiver *a, int force)
{
    for (size_t i = 0; i < a->session_count;) {
        ar_session *s = a->sessions[i];
        int ready = 0;
        if (s->stopped) {
            json_t *diff = mismatches(s);
            ready = json_array_size(diff) == 0 || force ||
                    ev_mono_ms() - s->stopped_seen_ms >= a->finalize_timeout_ms;
            json_decref(diff);
        }
        if (!ready) {
            i++;
            continue;
        }
        finalize(a, s);
        json_object_set_new(a->done, s->id, json_true());
        session_free(s);
        a->sessions[i] = a->sessions[--a->session_count];
    }
}

/* ------------------------------------------------------------- consuming */

static void on_record(ar_archiver *a, const ev_event *ev)
{
    const char *type = ev_schema_short_name(ev->schema);
    json_t *r = NULL;
    char err[512];
    int data = strcmp(type, "SensorSampleBatch") == 0 || strcmp(type, "MediaPacket") == 0;
    if (data) {
        /* Cheap test first: most data is outside sessions. */
        avro_value_t f;
        const char *sid = "";
        size_t len;
        if (avro_value_get_by_name(ev->value, "session_id", &f, NULL) == 0)
            avro_value_get_string(&f, &sid, &len);
        if (!sid || !*sid || json_object_get(a->done, sid))
            return;
        if (strcmp(type, "MediaPacket") == 0) {
            /* The packet goes to the video file; the index and the JSON
             * view get the record without it. */
            avro_value_t d;
            const void *b;
            size_t n;
            avro_value_get_by_name(ev->value, "data", &d, NULL);
            avro_value_get_bytes(&d, &b, &n);
            void *packet = malloc(n ? n : 1);
            if (!packet)
                return;
            memcpy(packet, b, n);
            avro_value_set_bytes(&d, (void *)"", 0); /* frees b */
            if (ev_value_to_json(ev->value, &r, err, sizeof(err)) == 0)
                on_media(a, ev->value, r, packet, n);
            free(packet);
            json_decref(r);
            return;
        }
    }
    if (!r && ev_value_to_json(ev->value, &r, err, sizeof(err))) {
        a->skipped++;
        fprintf(stderr, "msrs-archiver: %s skipped: %s\n", type, err);
        return;
    }
    if (strcmp(type, "SensorSampleBatch") == 0) {
        on_samples(a, ev->value, r);
    } else if (strcmp(type, "DeviceRegistered") == 0) {
        ar_dev *d = dev_get(a, jstr(r, "device_id"));
        if (d) {
            json_decref(d->registered);
            d->registered = json_incref(r);
            frame_set(&d->registered_frame, ev);
        }
    } else if (strcmp(type, "ClockOffsetMeasured") == 0) {
        on_clock(a, r);
    } else if (strcmp(ev_schema_topic(ev->schema), "sessions") == 0) {
        ar_session *s = session_get(a, jstr(r, "session_id"));
        if (s && ev->msg) {
            ar_frame f;
            memset(&f, 0, sizeof(f));
            frame_set(&f, ev);
            archive_event(a, s, "sessions", s->id, &f);
            free(f.value);
        }
        json_t **slot = !s                                              ? NULL
                        : strcmp(type, "CollectionRequested") == 0      ? &s->requested
                        : strcmp(type, "SynchronizationCompleted") == 0 ? &s->sync
                        : strcmp(type, "CollectionStarted") == 0        ? &s->started
                        : strcmp(type, "CollectionStopped") == 0        ? &s->stopped
                                                                        : NULL;
        if (slot) {
            json_decref(*slot);
            *slot = json_incref(r);
            if (slot == &s->stopped)
                s->stopped_seen_ms = ev_mono_ms();
        } else if (s && strcmp(type, "SyncMark") == 0) {
            json_array_append(s->marks, r);
        }
    }
    json_decref(r);
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
               "(marked incomplete), archive.cursor (archiver)\n"
               "exit: 0 after SIGINT/SIGTERM, 1 the log failed, 2 usage or configuration\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS, {"dir", required_argument, NULL, 'd'}, {NULL, 0, NULL, 0}};
    cli_common common = {0};
    const char *dir = NULL;
    char err[512], names[4][320];
    int opt, exit_code = CLI_EXIT_OK;
    ar_archiver a;
    memset(&a, 0, sizeof(a));

    cli_install_signals(); /* first: a SIGTERM while starting must still stop us cleanly */
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (cli_common_opt(&common, opt, optarg))
            continue;
        if (opt == 'h') {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (opt == 'd') {
            dir = optarg;
            continue;
        }
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    ev_conf *conf = cli_conf_build("msrs-archiver", &common);
    if (!conf)
        return CLI_EXIT_USAGE;
    if (!ev_conf_get(conf, "source", NULL))
        ev_conf_set(conf, "source", "archiver");
    if (!dir)
        dir = ev_conf_get(conf, "archive.dir", "archive");
    if (optind < argc || strlen(dir) >= sizeof(a.dir) ||
        ev_conf_get_int(conf, "archive.finalize_timeout_ms", 30000, &a.finalize_timeout_ms, err,
                        sizeof(err))) {
        fprintf(stderr, "msrs-archiver: %s\n", optind < argc ? "unexpected argument" : err);
        ev_conf_destroy(conf);
        return CLI_EXIT_USAGE;
    }
    snprintf(a.dir, sizeof(a.dir), "%s", dir);
    char staging[PATH_MAX];
    snprintf(staging, sizeof(staging), "%s/.staging", a.dir);
    if (cli_mkdirs(a.dir) || access(a.dir, W_OK)) {
        fprintf(stderr, "msrs-archiver: archive.dir %s: cannot write: %s\n", a.dir,
                strerror(errno));
        ev_conf_destroy(conf);
        return CLI_EXIT_USAGE;
    }
    rm_tree(staging); /* sessions left open are rebuilt from the log */
    if (ev_catalog_init(err, sizeof(err)) || ev_log_open(&a.log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs-archiver: %s\n", err);
        ev_conf_destroy(conf);
        return CLI_EXIT_USAGE;
    }
    a.codec = ev_codec_new();
    if (avro_schema_from_json_length(EVENT_SCHEMA, sizeof(EVENT_SCHEMA) - 1, &a.event_schema) ||
        !(a.event_iface = avro_generic_class_from_schema(a.event_schema))) {
        fprintf(stderr, "msrs-archiver: internal: events.avro schema: %s\n", avro_strerror());
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    a.done = json_object();
    const char *topics[4] = {ev_log_topic(a.log, "sessions", names[0], sizeof(names[0])),
                             ev_log_topic(a.log, "devices", names[1], sizeof(names[1])),
                             ev_log_topic(a.log, "samples", names[2], sizeof(names[2])),
                             ev_log_topic(a.log, "media", names[3], sizeof(names[3]))};
    if (ev_log_subscribe(a.log, ev_conf_get(conf, "archive.cursor", "archiver"), topics, 4, err,
                         sizeof(err))) {
        fprintf(stderr, "msrs-archiver: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    fprintf(stderr, "msrs-archiver: archiving sessions into %s\n", a.dir);
    int64_t last_commit = 0, last_progress = ev_mono_ms(), uncommitted = 0;
    while (!cli_stop) {
        const ev_msg *m;
        ev_event ev;
        int rc = ev_log_poll(a.log, 200, &m, err, sizeof(err));
        if (rc == 0) {
            a.records++;
            uncommitted++;
            if (ev_event_decode(a.codec, m, &ev, err, sizeof(err))) {
                a.skipped++;
                fprintf(stderr, "msrs-archiver: %s offset %lld skipped: %s\n", m->topic,
                        (long long)m->offset, err);
            } else {
                on_record(&a, &ev);
            }
        } else if (rc == EV_ERR_CORRUPT) { /* failed its checksum: named, counted */
            a.records++;
            uncommitted++;
            a.skipped++;
            fprintf(stderr, "msrs-archiver: skipped: %s\n", err);
        } else if (rc != EV_ERR_END && rc != EV_ERR_TIMED_OUT) {
            fprintf(stderr, "msrs-archiver: %s\n", err);
            if (rc == EV_ERR_FATAL) {
                exit_code = CLI_EXIT_FAIL;
                break;
            }
        }
        if (rc || a.records % 1000 == 0)
            check_sessions(&a, 0);
        /* The cursor moves only while nothing is half built. */
        if (uncommitted && a.session_count == 0 && ev_mono_ms() - last_commit >= 1000) {
            if (ev_log_commit(a.log, err, sizeof(err)))
                fprintf(stderr, "msrs-archiver: %s\n", err);
            last_commit = ev_mono_ms();
            uncommitted = 0;
        }
        if (ev_mono_ms() - last_progress >= 10000) {
            last_progress = ev_mono_ms();
            fprintf(stderr, "msrs-archiver: %lld records, %zu sessions open, %lld archived\n",
                    (long long)a.records, a.session_count, (long long)a.archived);
        }
    }
    fprintf(stderr,
            "msrs-archiver: stopped: %lld records, %lld skipped, %lld sessions archived, "
            "%zu left open (rebuilt from the log at the next start)\n",
            (long long)a.records, (long long)a.skipped, (long long)a.archived, a.session_count);
out:
    for (size_t i = 0; i < a.session_count; i++)
        session_free(a.sessions[i]);
    free(a.sessions);
    for (size_t i = 0; i < a.dev_count; i++) {
        json_decref(a.devs[i].registered);
        for (int k = 0; a.devs[i].ring && k < AR_CLOCK_RING; k++)
            json_decref(a.devs[i].ring[k].rec);
        free(a.devs[i].registered_frame.value);
        free(a.devs[i].ring);
    }
    free(a.devs);
    json_decref(a.done);
    ev_codec_destroy(a.codec);
    if (a.event_iface)
        avro_value_iface_decref(a.event_iface);
    if (a.event_schema)
        avro_schema_decref(a.event_schema);
    ev_log_destroy(a.log);
    ev_conf_destroy(conf);
    return exit_code;
}
