/* finish.c — ar_writer_finish: the devices' registrations and clock
 * rounds, the XDF's offsets and footers, manifest.json with the SHA-256 of
 * every file, and the rename into place (archive.h). */
#include "writer.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The schema of events.avro: a record as the log held it. */
static const char EVENT_SCHEMA[] =
    "{\"type\": \"record\", \"name\": \"ArchivedEvent\", \"namespace\": \"msrs.archive\","
    " \"doc\": \"A record of the log: value is the framed record (0x00, 4-byte schema id, Avro)\","
    " \"fields\": [{\"name\": \"topic\", \"type\": \"string\"}, {\"name\": \"key\", \"type\": "
    "\"string\"},"
    " {\"name\": \"id\", \"type\": \"string\"}, {\"name\": \"source\", \"type\": \"string\"},"
    " {\"name\": \"time_ns\", \"type\": \"long\"}, {\"name\": \"value\", \"type\": \"bytes\"}]}";

avro_schema_t ar__event_schema(void)
{
    avro_schema_t s;
    return avro_schema_from_json_length(EVENT_SCHEMA, sizeof(EVENT_SCHEMA) - 1, &s) ? NULL : s;
}

/* A device's clock rounds in the session's window: what clock.avro, the
 * manifest's clock_fit and the XDF's ClockOffset chunks are made of. */
typedef struct clock_rounds {
    double *t, *a, *b; /* every probe: master time from origin, t2 - t1, t4 - t3 */
    size_t probes, cap;
    double *kept_t, *kept_offset; /* each round's offset_ns at its t4 (the fit's residuals) */
    double *xdf_t, *xdf_offset;   /* device time (s), master - device (s) */
    size_t rounds;
    int64_t origin;
} clock_rounds;

static int add_probe(clock_rounds *c, avro_value_t *p)
{
    if (c->probes == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        double *t = realloc(c->t, cap * sizeof(double)),
               *a = t ? realloc(c->a, cap * sizeof(double)) : NULL;
        if (t)
            c->t = t;
        if (a)
            c->a = a;
        double *b = a ? realloc(c->b, cap * sizeof(double)) : NULL;
        if (!b)
            return -1;
        c->b = b;
        c->cap = cap;
    }
    int64_t t1 = ev_value_long(p, "t1_ns"), t2 = ev_value_long(p, "t2_ns"),
            t3 = ev_value_long(p, "t3_ns"), t4 = ev_value_long(p, "t4_ns");
    c->t[c->probes] = ((double)(t1 - c->origin) + (double)(t4 - c->origin)) / 2;
    c->a[c->probes] = (double)(t2 - t1);
    c->b[c->probes] = (double)(t4 - t3);
    c->probes++;
    return 0;
}

/* One ClockOffsetMeasured value: its probes (round_probes, or the kept one
 * in records written before that field), its kept probe, its XDF offset. */
static int add_round(clock_rounds *c, avro_value_t *v, size_t i)
{
    avro_value_t all, one;
    size_t count = 0;
    int64_t t1 = ev_value_long(v, "t1_ns"), t4 = ev_value_long(v, "t4_ns"),
            offset = ev_value_long(v, "offset_ns");
    if (i == 0 && !c->origin)
        c->origin = t1;
    if (avro_value_get_by_name(v, "round_probes", &all, NULL) == 0 &&
        avro_value_get_size(&all, &count) == 0 && count > 0) {
        for (size_t k = 0; k < count; k++)
            if (avro_value_get_by_index(&all, k, &one, NULL) == 0 && add_probe(c, &one))
                return -1;
    } else if (add_probe(c, v)) {
        return -1;
    }
    c->kept_t[i] = (double)(t4 - c->origin);
    c->kept_offset[i] = (double)offset; /* the agent's estimate after the round */
    /* XDF: at this time on the device's clock it was this far behind the master's. */
    c->xdf_t[i] = (double)(t4 + offset) / 1e9;
    c->xdf_offset[i] = -(double)offset / 1e9;
    c->rounds = i + 1;
    return 0;
}

static void rounds_free(clock_rounds *c)
{
    free(c->t);
    free(c->a);
    free(c->b);
    free(c->kept_t);
    free(c->kept_offset);
    free(c->xdf_t);
    free(c->xdf_offset);
}

/* The manifest's clock_fit: the live estimator's fit (ev_clock_fit_probes)
 * over every probe of the rounds; offset (device - master) at the origin,
 * the session's start; residual_rms_ns: the rounds' offset_ns (the agent's
 * estimates) about the line, as before the fit was shared. */
static json_t *clock_fit_json(const clock_rounds *c)
{
    if (c->rounds == 0)
        return json_pack("{s:i}", "offsets", 0);
    ev_clock_fit fit;
    int span = c->probes >= 2 && c->t[c->probes - 1] > c->t[0];
    ev_clock_fit_probes(c->t, c->a, c->b, (int)c->probes, span, &fit);
    double rss = 0;
    for (size_t i = 0; i < c->rounds; i++) {
        double e = c->kept_offset[i] - (fit.offset_ns + fit.drift * c->kept_t[i]);
        rss += e * e;
    }
    return json_pack("{s:i, s:I, s:f, s:f}", "offsets", (int)c->rounds, "offset_at_start_ns",
                     (json_int_t)llround(fit.offset_ns), "drift_ppm", fit.drift * 1e6,
                     "residual_rms_ns", sqrt(rss / (double)c->rounds));
}

/* DEVICE/clock.avro of dev_id and its rounds in c. */
static void device_clock(ar_writer *w, const char *dev_id, const ar_devices *history, int64_t from,
                         int64_t to, clock_rounds *c)
{
    char dn[128], rel[300], path[PATH_MAX], err[256];
    const ar__clock **frames = malloc(AR_CLOCK_RING * sizeof(*frames));
    size_t n = frames ? ar__devices_clock(history, dev_id, from, to, frames, AR_CLOCK_RING) : 0;
    const ev_schema *schema = ev_schema_by_name("ClockOffsetMeasured"), *s;
    avro_file_writer_t out;
    avro_value_t *v;
    c->kept_t = malloc((n + 1) * sizeof(double));
    c->kept_offset = malloc((n + 1) * sizeof(double));
    c->xdf_t = malloc((n + 1) * sizeof(double));
    c->xdf_offset = malloc((n + 1) * sizeof(double));
    ar__safe_name(dn, sizeof(dn), dev_id);
    snprintf(rel, sizeof(rel), "%s/clock.avro", dn);
    ar__writer_file(w, path, sizeof(path), rel);
    if (!frames || !c->kept_t || !c->kept_offset || !c->xdf_t || !c->xdf_offset ||
        avro_file_writer_create_with_codec(path, ev_schema_avro(schema), &out, "null", 1 << 16)) {
        w->failed = 1;
        free(frames);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (ev_codec_decode(w->codec, frames[i]->value, frames[i]->len, &s, &v, err, sizeof(err)) ||
            avro_file_writer_append_value(out, v) || add_round(c, v, c->rounds))
            w->failed = 1;
    if (avro_file_writer_close(out))
        w->failed = 1;
    free(frames);
}

/* Where the session goes: ROOT/NAME, or NAME-2.. when a different session
 * has that folder. Returns 1 when this very session is there already
 * (same id and start). */
static int final_dir(const ar_writer *w, int64_t start, char *out, size_t size)
{
    char name[128];
    ar__safe_name(name, sizeof(name), w->id);
    for (int k = 1;; k++) {
        char manifest[PATH_MAX + 16];
        struct stat st;
        if (k == 1)
            snprintf(out, size, "%s/%s", w->root, name);
        else
            snprintf(out, size, "%s/%s-%d", w->root, name, k);
        if (stat(out, &st) != 0)
            return 0;
        snprintf(manifest, sizeof(manifest), "%s/manifest.json", out);
        json_t *m = json_load_file(manifest, 0, NULL);
        int same = m && strcmp(ar__jstr(m, "session_id"), w->id) == 0 &&
                   ar__jint(m, "start_at_ns") == start;
        json_decref(m);
        if (same)
            return 1;
    }
}

/* A device's entry of the manifest: its clock, its streams, its XDF
 * offsets and footers. */
static void finish_device(ar_writer *w, const char *dev_id, json_t *d, const json_t *device,
                          const ar_devices *history, int64_t start, int64_t stop)
{
    char err[256];
    const ar__frame *reg = ar__devices_registration(history, dev_id);
    if (reg)
        ar__writer_append_event(w, "devices", dev_id, reg, err, sizeof(err));
    clock_rounds c;
    memset(&c, 0, sizeof(c));
    c.origin = start;
    device_clock(w, dev_id, history, start - AR_CLOCK_MARGIN_NS, stop + AR_CLOCK_MARGIN_NS, &c);
    json_object_set_new(d, "clock_fit", clock_fit_json(&c));
    for (size_t k = 0; k < w->stream_count; k++) {
        ar__stream *st = w->streams[k];
        if (strcmp(st->device_id, dev_id) != 0)
            continue;
        json_object_set_new(
            json_object_get(d, "streams"), st->stream_id,
            json_pack("{s:s, s:s, s:O?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i}", "kind",
                      st->kind == AR__SAMPLES ? "samples" : "video", "codec", st->codec, "declared",
                      ar__stream_info(device, st->stream_id), "samples", (json_int_t)st->samples,
                      "bytes", (json_int_t)st->bytes, "gaps", (json_int_t)st->gaps, "duplicates",
                      (json_int_t)st->duplicates, "after_stop_samples",
                      (json_int_t)st->after_stop_samples, "after_stop_bytes",
                      (json_int_t)st->after_stop_bytes, "before_first_keyframe",
                      (json_int_t)st->before_keyframe, "first_master_ns",
                      (json_int_t)st->first_master, "last_master_ns", (json_int_t)st->last_master,
                      "xdf_stream", (int)st->xdf_id));
        if (st->kind == AR__SAMPLES && w->xdf && c.xdf_t && c.xdf_offset) {
            for (size_t q = 0; q < c.rounds; q++)
                ar_xdf_clock_offset(w->xdf, st->xdf_id, c.xdf_t[q], c.xdf_offset[q]);
            ar_xdf_stream_footer(w->xdf, st->xdf_id, st->first_t, st->last_t, st->xdf_count,
                                 c.xdf_t, c.xdf_offset, c.rounds);
        }
    }
    rounds_free(&c);
}

/* Sync marks: a string stream on the master clock (no offsets). */
static void finish_marks(ar_writer *w)
{
    size_t i;
    json_t *d;
    if (!w->xdf || !json_array_size(w->marks))
        return;
    uint32_t id = ++w->next_xdf_id;
    double first = 0, last = 0;
    ar_xdf_stream_header(w->xdf, id, "msrs/sync_marks", "Markers", 1, 0, "string", w->id);
    json_array_foreach(w->marks, i, d)
    {
        double t = (double)ar__jint(d, "master_time_ns") / 1e9;
        ar_xdf_string_sample(w->xdf, id, t,
                             *ar__jstr(d, "label") ? ar__jstr(d, "label") : ar__jstr(d, "mark_id"));
        first = i == 0 ? t : first;
        last = t;
    }
    ar_xdf_stream_footer(w->xdf, id, first, last, (int64_t)json_array_size(w->marks), NULL, NULL,
                         0);
}

int ar_writer_finish(ar_writer *w, const json_t *session, const json_t *devices_state,
                     const ar_devices *history, char *final, size_t final_size, int *complete,
                     char *errstr, size_t errstr_size)
{
    int64_t start = ar__jint(session, "start_at_ns"), stop = ar__jint(session, "stop_at_ns");
    json_t *devices = json_object(), *files = json_object(), *d, *f;
    const char *dev_id;
    size_t i;

    /* Devices: the session's sync group and every device with data. */
    json_array_foreach(json_object_get(json_object_get(session, "sync"), "devices"), i, d)
        json_object_set_new(
            devices, ar__jstr(d, "device_id"),
            json_pack("{s:s, s:O, s:{}}", "node_id", ar__jstr(d, "node_id"), "sync", d, "streams"));
    for (size_t k = 0; k < w->stream_count; k++)
        if (!json_object_get(devices, w->streams[k]->device_id))
            json_object_set_new(devices, w->streams[k]->device_id, json_pack("{s:{}}", "streams"));
    json_object_foreach(devices, dev_id, d)
        finish_device(w, dev_id, d, json_object_get(devices_state, dev_id), history, start, stop);
    finish_marks(w);
    if (w->xdf)
        ar_xdf_boundary(w->xdf);
    ar__writer_close_files(w);
    json_t *diff = ar_writer_mismatches(w, session);
    json_t *failures = json_array(), *folders = json_object();
    json_object_set_new(folders, w->staging, json_true());
    json_array_foreach(w->files, i, f)
    {
        char path[PATH_MAX + 1300], hex[65], err[PATH_MAX + 300];
        int64_t bytes;
        snprintf(path, sizeof(path), "%s/%s", w->staging, json_string_value(f));
        /* on disk before the manifest names it: a power cut after the
         * archiver moves its cursor on must not leave a manifest over
         * files the page cache had not written yet */
        if (ar_sha256_file(path, hex, &bytes, err, sizeof(err)) ||
            (ar__sync_path(path) &&
             snprintf(err, sizeof(err), "%s: cannot sync: %s", path, strerror(errno)) > 0)) {
            w->failed = 1;
            json_array_append_new(failures, json_string(err));
            continue;
        }
        json_object_set_new(files, json_string_value(f),
                            json_pack("{s:I, s:s}", "bytes", (json_int_t)bytes, "sha256", hex));
        char *slash = strrchr(path, '/'); /* its folder's entry for it, too */
        *slash = '\0';
        json_object_set_new(folders, path, json_true());
    }
    const char *folder;
    json_t *unused;
    json_object_foreach(folders, folder, unused)
    {
        if (ar__sync_path(folder)) {
            w->failed = 1;
            json_array_append_new(failures,
                                  json_sprintf("%s: cannot sync: %s", folder, strerror(errno)));
        }
    }
    json_decref(folders);
    /* complete: what the nodes reported is complete (CollectionStopped's
     * verdict) and the archive holds exactly that */
    json_t *incomplete = json_array(), *line;
    json_array_extend(incomplete, json_object_get(session, "incomplete"));
    json_array_foreach(diff, i, line)
    {
        char *text = json_dumps(line, JSON_COMPACT | JSON_SORT_KEYS);
        json_array_append_new(
            incomplete, json_sprintf("archive differs from the report: %s", text ? text : "?"));
        free(text);
    }
    if (w->failed)
        json_array_append_new(incomplete, json_string("a file could not be written"));
    json_array_extend(incomplete, failures);
    json_decref(failures);
    if (json_is_false(json_object_get(session, "complete")) &&
        json_array_size(json_object_get(session, "incomplete")) == 0)
        json_array_append_new(incomplete, json_string("the session's stop says incomplete"));
    *complete = json_array_size(incomplete) == 0;
    json_t *m = json_pack(
        "{s:s, s:s, s:O?, s:O?, s:I, s:I, s:I, s:s, s:b, s:o, s:o, s:o, s:O, s:O?, s:o, s:s?}",
        "format", "msrs-archive/1", "session_id", w->id, "labels",
        json_object_get(w->requested, "labels"), "requested", w->requested, "start_at_ns",
        (json_int_t)start, "stop_at_ns", (json_int_t)stop, "duration_ns",
        (json_int_t)ar__jint(session, "duration_ns"), "reason", ar__jstr(session, "reason"),
        "complete", *complete, "incomplete", incomplete, "mismatches", diff, "devices", devices,
        "marks", w->marks, "reported_streams", json_object_get(session, "streams"), "files", files,
        "xdf", *w->xdf_name ? w->xdf_name : NULL);
    char manifest[PATH_MAX + 16], staging_parent[sizeof(w->root) + 16];
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", w->staging);
    int rc = ar_manifest_save(w->staging, m, errstr, errstr_size);
    json_decref(m);
    /* a manifest that is not on disk is not moved into place: the staging
     * folder stays, and errstr names what failed */
    if (rc)
        return rc;
    const char *unsynced = ar__sync_path(manifest)     ? manifest
                           : ar__sync_path(w->staging) ? w->staging
                                                       : NULL;
    if (unsynced)
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot sync: %s", unsynced,
                        strerror(errno));
    if (final_dir(w, start, final, final_size)) {
        ar_rm_tree(w->staging);
        return 1;
    }
    if (rename(w->staging, final))
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "rename %s -> %s: %s", w->staging, final,
                        strerror(errno));
    /* the rename itself: both folders' entries */
    snprintf(staging_parent, sizeof(staging_parent), "%s/.staging", w->root);
    if (ar__sync_path(w->root) || ar__sync_path(staging_parent)) {
        ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot sync the rename: %s", w->root,
                 strerror(errno));
        return 2;
    }
    return 0;
}

int ar_manifest_save(const char *dir, const json_t *manifest, char *errstr, size_t errstr_size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    if (json_dump_file(manifest, path, JSON_INDENT(2) | JSON_SORT_KEYS))
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot write: %s", path,
                        strerror(errno));
    return 0;
}
