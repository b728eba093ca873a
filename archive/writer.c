/* writer.c — ar_writer: one session written into its staging folder, its
 * streams (Avro object containers, elementary video streams, XDF) and
 * events.avro as records come (archive.h). Finishing it is finish.c. */
#include "writer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ar__jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

int64_t ar__jint(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* Remembers a failure for the manifest and returns code. */
static int failed(ar_writer *w, int code)
{
    w->failed = 1;
    return code;
}

int ar_writer_new(ar_writer **out, const char *root, const char *session_id, char *errstr,
                  size_t errstr_size)
{
    char name[128], path[1300];
    ar_writer *w = calloc(1, sizeof(*w));
    *out = NULL;
    if (!w)
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "session %s: out of memory", session_id);
    snprintf(w->id, sizeof(w->id), "%s", session_id);
    w->stop_at_ns = INT64_MAX;
    snprintf(w->root, sizeof(w->root), "%s", root);
    w->matroska = 1;
    ar__safe_name(name, sizeof(name), session_id);
    snprintf(w->staging, sizeof(w->staging), "%s/.staging/%s", root, name);
    w->marks = json_array();
    w->files = json_array();
    w->codec = ev_codec_new();
    w->event_schema = ar__event_schema();
    w->event_iface = w->event_schema ? avro_generic_class_from_schema(w->event_schema) : NULL;
    w->requested_schema = ev_schema_by_name("CollectionRequested");
    w->mark_schema = ev_schema_by_name("SyncMark");
    if (!w->marks || !w->files || !w->codec || !w->event_iface) {
        ar_writer_destroy(w);
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "session %s: cannot set up: %s",
                        session_id, avro_strerror());
    }
    *out = w;
    ar_rm_tree(w->staging);
    if (ev_mkdirs(w->staging))
        return failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot create: %s",
                                  w->staging, strerror(errno)));
    snprintf(path, sizeof(path), "%s/events.avro", w->staging);
    json_array_append_new(w->files, json_string("events.avro"));
    if (avro_file_writer_create_with_codec(path, w->event_schema, &w->events, "null", 1 << 20)) {
        w->events = NULL;
        return failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", path, avro_strerror()));
    }
    return 0;
}

void ar__writer_close_files(ar_writer *w)
{
    for (size_t i = 0; i < w->stream_count; i++) {
        ar__stream *st = w->streams[i];
        if (st->ocf && avro_file_writer_close(st->ocf))
            w->failed = 1;
        st->ocf = NULL;
        if (st->es && fclose(st->es))
            w->failed = 1;
        st->es = NULL;
        if (ar__mkv_close(st->mkv))
            w->failed = 1;
        st->mkv = NULL;
    }
    if (w->xdf && ar_xdf_close(w->xdf))
        w->failed = 1;
    w->xdf = NULL;
    if (w->events && avro_file_writer_close(w->events))
        w->failed = 1;
    w->events = NULL;
}

void ar_writer_set_matroska(ar_writer *w, int on)
{
    w->matroska = on;
}

void ar_writer_destroy(ar_writer *w)
{
    if (!w)
        return;
    ar__writer_close_files(w);
    for (size_t i = 0; i < w->stream_count; i++)
        free(w->streams[i]);
    free(w->streams);
    free(w->xdf_t);
    free(w->xdf_x);
    json_decref(w->requested);
    json_decref(w->marks);
    json_decref(w->files);
    ev_codec_destroy(w->codec);
    if (w->event_iface)
        avro_value_iface_decref(w->event_iface);
    if (w->event_schema)
        avro_schema_decref(w->event_schema);
    free(w);
}

const char *ar_writer_staging(const ar_writer *w)
{
    return w->staging;
}
size_t ar_writer_stream_count(const ar_writer *w)
{
    return w->stream_count;
}

int ar__writer_append_event(ar_writer *w, const char *topic, const char *key, const ar__frame *f,
                            char *errstr, size_t errstr_size)
{
    avro_value_t v, x;
    if (!w->events)
        return failed(
            w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s/events.avro: not open", w->staging));
    if (avro_generic_value_new(w->event_iface, &v))
        return failed(
            w, ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "events.avro: %s", avro_strerror()));
    int rc = avro_value_get_by_index(&v, 0, &x, NULL) || avro_value_set_string(&x, topic) ||
             avro_value_get_by_index(&v, 1, &x, NULL) || avro_value_set_string(&x, key) ||
             avro_value_get_by_index(&v, 2, &x, NULL) || avro_value_set_string(&x, f->id) ||
             avro_value_get_by_index(&v, 3, &x, NULL) || avro_value_set_string(&x, f->source) ||
             avro_value_get_by_index(&v, 4, &x, NULL) || avro_value_set_long(&x, f->time_ns) ||
             avro_value_get_by_index(&v, 5, &x, NULL) ||
             avro_value_set_bytes(&x, f->value, f->len) ||
             avro_file_writer_append_value(w->events, &v);
    avro_value_decref(&v);
    if (rc)
        return failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s/events.avro: %s", w->staging,
                                  avro_strerror()));
    return 0;
}

int ar_writer_event(ar_writer *w, const char *topic, const char *key, const ev_event *ev,
                    char *errstr, size_t errstr_size)
{
    ar__frame f;
    if (!ev->msg)
        return ar__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "session %s: event %s without its frame", w->id, ev->id);
    snprintf(f.id, sizeof(f.id), "%s", ev->id);
    snprintf(f.source, sizeof(f.source), "%s", ev->source);
    f.time_ns = ev->time_ns;
    f.value = (unsigned char *)ev->msg->value;
    f.len = ev->msg->value_len;
    int rc = ar__writer_append_event(w, topic, key, &f, errstr, errstr_size);
    if (ev->schema != w->requested_schema && ev->schema != w->mark_schema)
        return rc;
    /* The manifest's "requested" and "marks" are these records. */
    const ev_schema *s;
    avro_value_t *v = ev->value;
    json_t *j = NULL;
    if ((!v && ev_codec_decode(w->codec, f.value, f.len, &s, &v, errstr, errstr_size)) ||
        ev_value_to_json(v, &j, errstr, errstr_size))
        return EV_ERR_CORRUPT;
    if (ev->schema == w->mark_schema) {
        json_array_append_new(w->marks, j);
    } else {
        json_decref(w->requested);
        w->requested = j;
    }
    return rc;
}

/* Path of a file of the session: staging/rel, its folder made; rel is
 * remembered for the manifest. */
void ar__writer_file(ar_writer *w, char *path, size_t size, const char *rel)
{
    snprintf(path, size, "%s/%s", w->staging, rel);
    json_array_append_new(w->files, json_string(rel));
    char *slash = strrchr(path, '/');
    if (slash && slash > path + strlen(w->staging)) {
        *slash = '\0';
        ev_mkdirs(path);
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

/* The declared stream info {type, rate_hz, channels, format} or NULL. */
const json_t *ar__stream_info(const json_t *device, const char *stream)
{
    size_t i;
    const json_t *s;
    json_array_foreach(json_object_get(device, "streams"), i, s)
    {
        if (strcmp(ar__jstr(s, "stream_id"), stream) == 0)
            return s;
    }
    return NULL;
}

/* The XDF file, named from the request's labels as LabRecorder does. */
static int open_xdf(ar_writer *w, char *errstr, size_t errstr_size)
{
    char sub[64] = "", name[256] = "", path[PATH_MAX];
    json_t *labels = json_object_get(w->requested, "labels");
    static const char *const parts[][2] = {
        {"subject", "sub"}, {"session", "ses"}, {"task", "task"}, {"run", "run"}};
    for (size_t i = 0; i < 4; i++) {
        const char *v = ar__jstr(labels, parts[i][0]);
        if (!*v)
            continue;
        ar__safe_name(sub, sizeof(sub), v);
        snprintf(name + strlen(name), sizeof(name) - strlen(name), "%s%s-%s", *name ? "_" : "",
                 parts[i][1], sub);
    }
    if (!*name)
        ar__safe_name(name, sizeof(name), w->id);
    snprintf(w->xdf_name, sizeof(w->xdf_name), "%s.xdf", name);
    ar__writer_file(w, path, sizeof(path), w->xdf_name);
    return ar_xdf_open(&w->xdf, path, errstr, errstr_size) ? failed(w, EV_ERR_IO) : 0;
}

static ar__stream *stream_find(const ar_writer *w, const char *device_id, const char *stream)
{
    for (size_t i = 0; i < w->stream_count; i++)
        if (strcmp(w->streams[i]->device_id, device_id) == 0 &&
            strcmp(w->streams[i]->stream_id, stream) == 0)
            return w->streams[i];
    return NULL;
}

int ar_writer_has_stream(const ar_writer *w, const char *device_id, const char *stream_id)
{
    return stream_find(w, device_id, stream_id) != NULL;
}

static ar__stream *stream_get(ar_writer *w, const char *device_id, const char *stream, int kind,
                              const char *codec, int channels, const json_t *device, int *rc,
                              char *errstr, size_t errstr_size)
{
    ar__stream *found = stream_find(w, device_id, stream);
    if (found)
        return found;
    ar__stream *st = calloc(1, sizeof(*st));
    ar__stream **grown = realloc(w->streams, (w->stream_count + 1) * sizeof(*grown));
    if (!st || !grown) {
        free(st);
        if (grown)
            w->streams = grown;
        *rc = failed(w, ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "out of memory"));
        return NULL;
    }
    w->streams = grown;
    w->streams[w->stream_count++] = st;
    snprintf(st->device_id, sizeof(st->device_id), "%s", device_id);
    snprintf(st->stream_id, sizeof(st->stream_id), "%s", stream);
    snprintf(st->codec, sizeof(st->codec), "%s", codec ? codec : "");
    st->kind = kind;
    st->next_seq = -1;
    st->channels = channels;
    char dn[128], sn[128], rel[300], path[PATH_MAX];
    ar__safe_name(dn, sizeof(dn), device_id);
    ar__safe_name(sn, sizeof(sn), stream);
    snprintf(st->base, sizeof(st->base), "%s/%s", dn, sn);
    const ev_schema *schema =
        ev_schema_by_name(kind == AR__SAMPLES ? "SensorSampleBatch" : "MediaPacket");
    snprintf(rel, sizeof(rel), "%s%s", st->base, kind == AR__SAMPLES ? ".avro" : ".frames.avro");
    ar__writer_file(w, path, sizeof(path), rel);
    /* Blocks larger than any record (avro-c fails a record bigger than its block). */
    if (avro_file_writer_create_with_codec(path, ev_schema_avro(schema), &st->ocf, "null",
                                           1 << 20)) {
        st->ocf = NULL;
        *rc = failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", path, avro_strerror()));
    }
    if (kind == AR__MEDIA) {
        snprintf(rel, sizeof(rel), "%s.%s", st->base, es_extension(st->codec));
        ar__writer_file(w, path, sizeof(path), rel);
        if (!(st->es = fopen(path, "wb")))
            *rc = failed(w,
                         ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", path, strerror(errno)));
        return st;
    }
    if (!w->xdf && !w->xdf_name[0] && open_xdf(w, errstr, errstr_size))
        *rc = EV_ERR_IO;
    if (w->xdf) {
        const json_t *info = ar__stream_info(device, stream);
        char name[300];
        snprintf(name, sizeof(name), "%s/%s", device_id, stream);
        st->xdf_id = ++w->next_xdf_id;
        ar_xdf_stream_header(w->xdf, st->xdf_id, name,
                             *ar__jstr(info, "type") ? ar__jstr(info, "type") : stream, channels,
                             json_number_value(json_object_get(info, "rate_hz")), "double64", name);
    }
    return st;
}

/* Checks seq: 1 = new (gaps counted), 0 = a duplicate to skip. */
static int seq_ok(ar__stream *st, int64_t seq, int64_t n)
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

/* A SensorSampleBatch's arrays, read where they are in its Avro value:
 * no JSON per batch (issue 22: the archiver turned every batch into a
 * jansson tree, one allocation per number, to read it back). */
typedef struct batch_view {
    avro_value_t device_time, master_time, values;
    size_t n;
    int channels;
} batch_view;

/* 0; 1 when the batch has no samples; EV_ERR_CORRUPT, said in errstr,
 * when it is not a SensorSampleBatch or its arrays disagree. */
static int batch_view_read(const avro_value_t *batch, batch_view *v, char *errstr,
                           size_t errstr_size)
{
    avro_value_t f;
    int32_t channels = 0;
    size_t masters = 0, values = 0;
    if (avro_value_get_by_name(batch, "device_time_ns", &v->device_time, NULL) ||
        avro_value_get_by_name(batch, "master_time_ns", &v->master_time, NULL) ||
        avro_value_get_by_name(batch, "values", &v->values, NULL) ||
        avro_value_get_by_name(batch, "channels", &f, NULL) || avro_value_get_int(&f, &channels) ||
        avro_value_get_size(&v->device_time, &v->n) ||
        avro_value_get_size(&v->master_time, &masters) || avro_value_get_size(&v->values, &values))
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "not a SensorSampleBatch");
    v->channels = channels;
    if (v->n == 0)
        return 1;
    if (channels <= 0 || masters != v->n || values != v->n * (size_t)channels)
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "SensorSampleBatch %s/%s seq %lld: %zu device_time_ns, %zu master_time_ns, "
                        "%zu values for %d channels: expected as many master as device times and "
                        "channels (> 0) values for each",
                        ev_value_string(batch, "device_id"), ev_value_string(batch, "stream_id"),
                        (long long)ev_value_long(batch, "seq"), v->n, masters, values, channels);
    return 0;
}

static int64_t long_at(const avro_value_t *array, size_t i)
{
    avro_value_t e;
    int64_t x = 0;
    if (avro_value_get_by_index(array, i, &e, NULL) == 0)
        avro_value_get_long(&e, &x);
    return x;
}

/* Grows *buf to hold n doubles; 0, or -1 out of memory. */
static int doubles(double **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    double *b = realloc(*buf, n * sizeof(double));
    if (!b)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

static void xdf_batch(ar_writer *w, ar__stream *st, const batch_view *v)
{
    size_t n = v->n, count = n * (size_t)st->channels;
    if (doubles(&w->xdf_t, &w->xdf_t_cap, n) || doubles(&w->xdf_x, &w->xdf_x_cap, count))
        return;
    for (size_t i = 0; i < n; i++)
        w->xdf_t[i] = (double)long_at(&v->device_time, i) / 1e9;
    for (size_t i = 0; i < count; i++) {
        avro_value_t e;
        double x = 0;
        if (avro_value_get_by_index(&v->values, i, &e, NULL) == 0)
            avro_value_get_double(&e, &x);
        w->xdf_x[i] = x;
    }
    ar_xdf_samples(w->xdf, st->xdf_id, n, w->xdf_t, st->channels, w->xdf_x);
    if (!st->xdf_count)
        st->first_t = w->xdf_t[0];
    st->last_t = w->xdf_t[n - 1];
    st->xdf_count += (int64_t)n;
    if (ar_xdf_chunks_since_boundary(w->xdf) >= 500)
        ar_xdf_boundary(w->xdf);
}

void ar_writer_stop_at(ar_writer *w, int64_t stop_at_ns)
{
    w->stop_at_ns = stop_at_ns;
}

/* 1 when data of st whose first master time is first_master is past the
 * stop instant: counted (samples, bytes), left out. */
static int after_stop(ar_writer *w, ar__stream *st, int64_t first_master, int64_t samples,
                      int64_t bytes)
{
    if (first_master < w->stop_at_ns)
        return 0;
    st->after_stop_samples += samples;
    st->after_stop_bytes += bytes;
    return 1;
}

int ar_writer_samples(ar_writer *w, const avro_value_t *batch, const json_t *device, char *errstr,
                      size_t errstr_size)
{
    batch_view v;
    int rc = batch_view_read(batch, &v, errstr, errstr_size);
    if (rc)
        return rc;
    int64_t bytes = (int64_t)(v.n * (size_t)v.channels * sizeof(double));
    ar__stream *st =
        stream_get(w, ev_value_string(batch, "device_id"), ev_value_string(batch, "stream_id"),
                   AR__SAMPLES, NULL, v.channels, device, &rc, errstr, errstr_size);
    if (!st || !seq_ok(st, ev_value_long(batch, "seq"), (int64_t)v.n) ||
        after_stop(w, st, long_at(&v.master_time, 0), (int64_t)v.n, bytes))
        return st ? 1 : rc;
    if (st->ocf && avro_file_writer_append_value(st->ocf, (avro_value_t *)batch))
        rc = failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s/%s/%s.avro: %s", w->staging,
                                st->device_id, st->stream_id, avro_strerror()));
    if (w->xdf && v.channels == st->channels)
        xdf_batch(w, st, &v);
    if (!st->samples)
        st->first_master = long_at(&v.master_time, 0);
    st->last_master = long_at(&v.master_time, v.n - 1);
    st->samples += (int64_t)v.n;
    st->bytes += bytes;
    return rc;
}

/* A packet onto the elementary stream, written back every
 * AR__WRITEBACK_BYTES (ar__writeback). 0, or -1 with errno. */
static int es_write(ar__stream *st, const void *bytes, size_t len)
{
    if (fwrite(bytes, 1, len, st->es) != len)
        return -1;
    if (ar__writeback_due(&st->es_unsynced_bytes, len)) {
        if (fflush(st->es) || ar__writeback(fileno(st->es), &st->es_started_to))
            return -1;
    }
    return 0;
}

/* The packet into the stream's Matroska file, opened at its first
 * keyframe. A codec without a mapping has none, nor has any stream with
 * archive.matroska off (its elementary stream is there); a keyframe without
 * headers fails the archive, as a write would. */
static int mkv_packet(ar_writer *w, ar__stream *st, const json_t *r, const void *bytes, size_t len,
                      int key, char *errstr, size_t errstr_size)
{
    if (!st->mkv && key && w->matroska && ar__mkv_codec_known(st->codec) && !st->mkv_tried) {
        char rel[300], path[PATH_MAX];
        st->mkv_tried = 1;
        snprintf(rel, sizeof(rel), "%s.mkv", st->base);
        ar__writer_file(w, path, sizeof(path), rel);
        int rc = 0;
        st->mkv = ar__mkv_open(path, st->codec, (int)ar__jint(r, "width"),
                               (int)ar__jint(r, "height"), bytes, len, &rc, errstr, errstr_size);
        if (!st->mkv)
            return failed(w, rc);
    }
    int rc = st->mkv ? ar__mkv_write(st->mkv, bytes, len, ar__jint(r, "master_time_ns"), key,
                                     errstr, errstr_size)
                     : 0;
    return rc ? failed(w, rc) : 0;
}

int ar_writer_media(ar_writer *w, avro_value_t *packet, char *errstr, size_t errstr_size)
{
    /* The packet goes to the video file; the index gets the record without it. */
    avro_value_t d;
    const void *b = NULL;
    size_t len = 0;
    json_t *r = NULL;
    int rc = 0;
    if (avro_value_get_by_name(packet, "data", &d, NULL) || avro_value_get_bytes(&d, &b, &len))
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "MediaPacket: no field data");
    void *bytes = malloc(len ? len : 1);
    if (!bytes)
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "out of memory");
    memcpy(bytes, b, len);
    avro_value_set_bytes(&d, (void *)"", 0); /* frees b */
    if (ev_value_to_json(packet, &r, errstr, errstr_size)) {
        free(bytes);
        return EV_ERR_CORRUPT;
    }
    ar__stream *st = stream_get(w, ar__jstr(r, "device_id"), ar__jstr(r, "stream_id"), AR__MEDIA,
                                ar__jstr(r, "codec"), 0, NULL, &rc, errstr, errstr_size);
    if (!st || !seq_ok(st, ar__jint(r, "seq"), 1) ||
        after_stop(w, st, ar__jint(r, "master_time_ns"), 1, (int64_t)len)) {
        free(bytes);
        json_decref(r);
        return st ? 1 : rc;
    }
    int key = json_is_true(json_object_get(r, "keyframe"));
    st->seen_keyframe |= key;
    if (!st->seen_keyframe)
        st->before_keyframe++; /* a decoder cannot start there */
    else if (st->es && len && es_write(st, bytes, len))
        rc = failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s/%s/%s: %s", w->staging,
                                st->device_id, st->stream_id, strerror(errno)));
    else if (rc == 0 && len)
        rc = mkv_packet(w, st, r, bytes, len, key, errstr, errstr_size);
    if (!st->samples)
        st->first_master = ar__jint(r, "master_time_ns");
    st->last_master = ar__jint(r, "master_time_ns");
    st->samples++;
    st->bytes += (int64_t)len;
    if (st->ocf && avro_file_writer_append_value(st->ocf, packet))
        rc = failed(w, ar__fail(errstr, errstr_size, EV_ERR_IO, "%s/%s/%s.frames.avro: %s",
                                w->staging, st->device_id, st->stream_id, avro_strerror()));
    free(bytes);
    json_decref(r);
    return rc;
}

json_t *ar_writer_mismatches(const ar_writer *w, const json_t *session)
{
    json_t *out = json_array();
    const json_t *c;
    size_t i;
    json_array_foreach(json_object_get(session, "streams"), i, c)
    {
        const ar__stream *st = NULL;
        for (size_t k = 0; k < w->stream_count; k++)
            if (strcmp(w->streams[k]->device_id, ar__jstr(c, "device_id")) == 0 &&
                strcmp(w->streams[k]->stream_id, ar__jstr(c, "stream_id")) == 0)
                st = w->streams[k];
        int64_t have = st ? st->samples : 0, bytes = st ? st->bytes : 0;
        if (have != ar__jint(c, "samples") || bytes != ar__jint(c, "bytes"))
            json_array_append_new(out, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "device_id",
                                                 ar__jstr(c, "device_id"), "stream_id",
                                                 ar__jstr(c, "stream_id"), "reported_samples",
                                                 (json_int_t)ar__jint(c, "samples"),
                                                 "archived_samples", (json_int_t)have,
                                                 "reported_bytes", (json_int_t)ar__jint(c, "bytes"),
                                                 "archived_bytes", (json_int_t)bytes));
    }
    return out;
}
