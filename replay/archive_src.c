/* archive_src.c — see archive_src.h. */
#include "archive_src.h"

#include <avro.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

int as_each_record(const char *path, int (*fn)(void *, avro_value_t *), void *arg)
{
    avro_file_reader_t r;
    if (avro_file_reader(path, &r)) {
        fprintf(stderr, "msrs-replay: %s: cannot read: %s\n", path, avro_strerror());
        return -1;
    }
    avro_schema_t schema = avro_file_reader_get_writer_schema(r);
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    int got, n = 0, rc = 0;
    while ((got = avro_file_reader_read_value(r, &v)) == 0 && !rc) {
        n++;
        rc = fn(arg, &v);
    }
    if (!rc && got != EOF) {
        fprintf(stderr, "msrs-replay: %s: after record %d: %s (a truncated file?)\n", path, n,
                avro_strerror());
        rc = -1;
    }
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
    avro_file_reader_close(r);
    return rc;
}

typedef struct fold_ctx {
    const char *path;
    ev_state *state;
    ev_codec *codec;
    int64_t records, bad;
} fold_ctx;

static const char *string_field(avro_value_t *v, const char *name)
{
    avro_value_t f;
    const char *s = NULL;
    size_t len;
    if (avro_value_get_by_name(v, name, &f, NULL) || avro_value_get_string(&f, &s, &len))
        return "";
    return s;
}

/* One events.avro record: the framed value, decoded, with its id and time. */
static int fold_event(void *arg, avro_value_t *v)
{
    fold_ctx *c = arg;
    char err[512];
    avro_value_t f;
    const void *buf = NULL;
    size_t len = 0;
    int64_t t = 0;
    ev_event ev;
    memset(&ev, 0, sizeof(ev));
    if (avro_value_get_by_name(v, "value", &f, NULL) == 0)
        avro_value_get_bytes(&f, &buf, &len);
    if (avro_value_get_by_name(v, "time_ns", &f, NULL) == 0)
        avro_value_get_long(&f, &t);
    if (!buf || ev_codec_decode(c->codec, buf, len, &ev.schema, &ev.value, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s: record %lld: field value: %s\n", c->path,
                (long long)c->records + 1, buf ? err : "expected the framed record");
        c->bad++;
        c->records++;
        return 0;
    }
    snprintf(ev.id, sizeof(ev.id), "%s", string_field(v, "id"));
    snprintf(ev.source, sizeof(ev.source), "%s", string_field(v, "source"));
    ev.time_ns = t;
    if (ev_state_apply(c->state, &ev, err, sizeof(err)) < 0) {
        fprintf(stderr, "msrs-replay: %s: record %lld: %s\n", c->path, (long long)c->records + 1, err);
        c->bad++;
    }
    c->records++;
    return 0;
}

/* One clock.avro record (a ClockOffsetMeasured value, unframed). */
static int fold_clock(void *arg, avro_value_t *v)
{
    fold_ctx *c = arg;
    char err[512];
    json_t *j = NULL;
    ev_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.schema = ev_schema_by_name("ClockOffsetMeasured");
    if (ev_value_to_json(v, &j, err, sizeof(err)) || ev_codec_value(c->codec, ev.schema, &ev.value) ||
        ev_value_from_json(ev.value, j, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s: record %lld: %s\n", c->path, (long long)c->records + 1, err);
        json_decref(j);
        c->bad++;
        c->records++;
        return 0;
    }
    /* the record's own identity: device and its kept probe */
    snprintf(ev.id, sizeof(ev.id), "clock/%.40s/%lld", json_string_value(json_object_get(j, "device_id")),
             (long long)json_integer_value(json_object_get(j, "t1_ns")));
    ev.time_ns = json_integer_value(json_object_get(j, "t4_ns"));
    snprintf(ev.source, sizeof(ev.source), "archive");
    json_decref(j);
    if (ev_state_apply(c->state, &ev, err, sizeof(err)) < 0) {
        fprintf(stderr, "msrs-replay: %s: record %lld: %s\n", c->path, (long long)c->records + 1, err);
        c->bad++;
    }
    c->records++;
    return 0;
}

int as_fold_archive(const char *dir, ev_state *state, int64_t *records)
{
    char path[PATH_MAX + 64];
    json_error_t je;
    fold_ctx c = {path, state, ev_codec_new(), 0, 0};
    int rc = 0;
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    json_t *m = json_load_file(path, 0, &je), *files = json_object_get(m, "files");
    if (!json_is_object(files)) {
        fprintf(stderr, "msrs-replay: %s: %s\n", path,
                m ? "field \"files\": expected an object (an msrs archive's manifest)" : je.text);
        rc = 1;
    }
    const char *rel;
    json_t *info;
    /* clock rounds first (they came before and during the session), then
     * the session's records */
    json_object_foreach(files, rel, info)
    {
        size_t n = strlen(rel);
        if (n >= 11 && strcmp(rel + n - 11, "/clock.avro") == 0) {
            snprintf(path, sizeof(path), "%s/%s", dir, rel);
            rc |= as_each_record(path, fold_clock, &c) ? 1 : 0;
        }
    }
    if (json_object_get(files, "events.avro")) {
        snprintf(path, sizeof(path), "%s/events.avro", dir);
        rc |= as_each_record(path, fold_event, &c) ? 1 : 0;
    } else if (files) {
        fprintf(stderr, "msrs-replay: %s: no events.avro (archived before msrs kept it): only "
                        "the clock rounds are folded\n", dir);
        rc = 1;
    }
    json_decref(m);
    ev_codec_destroy(c.codec);
    *records = c.records;
    return rc || c.bad ? 1 : 0;
}
