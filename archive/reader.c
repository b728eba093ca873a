/* reader.c — ar_reader: an archive folder read back through its manifest;
 * Avro object container files record by record (archive.h). */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ar_reader {
    char dir[PATH_MAX];
    json_t *manifest;
    ev_codec *codec;
};

int ar_reader_open(ar_reader **out, const char *dir, char *errstr, size_t errstr_size)
{
    char path[PATH_MAX + 16];
    json_error_t je;
    *out = NULL;
    if (strlen(dir) >= PATH_MAX - 1)
        return ar__fail(errstr, errstr_size, EV_ERR_INVALID, "%s: path too long", dir);
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot read: %s", path,
                        strerror(errno));
    json_t *m = json_loadf(f, 0, &je);
    fclose(f);
    if (!m)
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: line %d: %s", path, je.line,
                        je.text);
    if (!json_is_object(json_object_get(m, "files"))) {
        json_decref(m);
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "%s: field \"files\": expected an object (an msrs archive's manifest)",
                        path);
    }
    ar_reader *r = calloc(1, sizeof(*r));
    if (!r || !(r->codec = ev_codec_new())) {
        free(r);
        json_decref(m);
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    r->manifest = m;
    *out = r;
    return 0;
}

void ar_reader_destroy(ar_reader *r)
{
    if (!r)
        return;
    json_decref(r->manifest);
    ev_codec_destroy(r->codec);
    free(r);
}

const json_t *ar_reader_manifest(const ar_reader *r)
{
    return r->manifest;
}

int ar_reader_path(const ar_reader *r, const char *rel, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%s", r->dir, rel);
    return n < 0 || (size_t)n >= size ? EV_ERR_INVALID : 0;
}

int ar_reader_verify(const ar_reader *r, char *errstr, size_t errstr_size)
{
    const char *rel;
    json_t *info;
    json_object_foreach(json_object_get(r->manifest, "files"), rel, info)
    {
        char path[PATH_MAX * 2], hex[65];
        int64_t bytes;
        int rc;
        if (ar_reader_path(r, rel, path, sizeof(path)))
            return ar__fail(errstr, errstr_size, EV_ERR_INVALID, "%s/%s: path too long", r->dir,
                            rel);
        if ((rc = ar_sha256_file(path, hex, &bytes, errstr, errstr_size)))
            return rc;
        json_int_t want = json_integer_value(json_object_get(info, "bytes"));
        if (bytes != want)
            return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                            "%s: %lld bytes, the manifest says %lld (a truncated file?)", path,
                            (long long)bytes, (long long)want);
        const char *sha = json_string_value(json_object_get(info, "sha256"));
        if (!sha || strcmp(sha, hex) != 0)
            return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                            "%s: SHA-256 %s, the manifest says %s", path, hex, sha ? sha : "none");
    }
    return 0;
}

int ar_each_record(const char *path, ar_record_cb fn, void *arg, int64_t *records, char *errstr,
                   size_t errstr_size)
{
    avro_file_reader_t r;
    int64_t n = 0;
    if (records)
        *records = 0;
    int checked = ar__container_check(path, errstr, errstr_size);
    if (checked)
        return checked;
    if (avro_file_reader(path, &r))
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot read: %s", path,
                        avro_strerror());
    avro_schema_t schema = avro_file_reader_get_writer_schema(r);
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    int got, rc = 0;
    while (!rc && (got = avro_file_reader_read_value(r, &v)) == 0) {
        n++;
        rc = fn(arg, &v);
    }
    if (!rc && got != EOF)
        rc = ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                      "%s: after record %lld: %s (a truncated file?)", path, (long long)n,
                      avro_strerror());
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema); /* get_writer_schema gave a reference */
    avro_file_reader_close(r);
    if (records)
        *records = n;
    return rc;
}

typedef struct rewrite_ctx {
    const char *to;
    avro_file_writer_t w;
    ar_rewrite_cb fn;
    void *arg;
    char *errstr;
    size_t errstr_size;
} rewrite_ctx;

static int rewrite_one(void *arg, avro_value_t *v)
{
    rewrite_ctx *c = arg;
    int rc = c->fn(c->arg, v, c->errstr, c->errstr_size);
    if (rc)
        return rc;
    if (avro_file_writer_append_value(c->w, v))
        return ar__fail(c->errstr, c->errstr_size, EV_ERR_IO, "%s: %s", c->to, avro_strerror());
    return 0;
}

int ar_rewrite_records(const char *from, const char *to, ar_rewrite_cb fn, void *arg,
                       int64_t *records, char *errstr, size_t errstr_size)
{
    avro_file_reader_t r;
    rewrite_ctx c = {to, NULL, fn, arg, errstr, errstr_size};
    int checked = ar__container_check(from, errstr, errstr_size);
    if (checked)
        return checked;
    if (avro_file_reader(from, &r))
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot read: %s", from,
                        avro_strerror());
    avro_schema_t schema = avro_file_reader_get_writer_schema(r);
    avro_file_reader_close(r);
    int rc = avro_file_writer_create_with_codec(to, schema, &c.w, "null", 1 << 20);
    avro_schema_decref(schema);
    if (rc)
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot write: %s", to,
                        avro_strerror());
    rc = ar_each_record(from, rewrite_one, &c, records, errstr, errstr_size);
    if (avro_file_writer_close(c.w) && !rc)
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", to, avro_strerror());
    return rc;
}

typedef struct events_ctx {
    ar_reader *r;
    const char *path;
    ar_event_cb fn;
    void *arg;
    int64_t records;
} events_ctx;

static int bad_record(events_ctx *c, const char *what)
{
    char msg[768];
    snprintf(msg, sizeof(msg), "%s: record %lld: %s", c->path, (long long)c->records, what);
    return c->fn(c->arg, NULL, msg);
}

/* One events.avro record: the framed value, decoded, with its id and time. */
static int one_event(void *arg, avro_value_t *v)
{
    events_ctx *c = arg;
    char err[512], what[600];
    avro_value_t f;
    const void *buf = NULL;
    size_t len = 0;
    ev_event ev;
    memset(&ev, 0, sizeof(ev));
    c->records++;
    if (avro_value_get_by_name(v, "value", &f, NULL) == 0)
        avro_value_get_bytes(&f, &buf, &len);
    if (avro_value_get_by_name(v, "time_ns", &f, NULL) == 0)
        avro_value_get_long(&f, &ev.time_ns);
    if (!buf || ev_codec_decode(c->r->codec, buf, len, &ev.schema, &ev.value, err, sizeof(err))) {
        snprintf(what, sizeof(what), "field value: %s", buf ? err : "expected the framed record");
        return bad_record(c, what);
    }
    snprintf(ev.id, sizeof(ev.id), "%s", ev_value_string(v, "id"));
    snprintf(ev.source, sizeof(ev.source), "%s", ev_value_string(v, "source"));
    return c->fn(c->arg, &ev, NULL);
}

/* One clock.avro record (a ClockOffsetMeasured value, unframed), as the
 * catalog's value. */
static int one_clock(void *arg, avro_value_t *v)
{
    events_ctx *c = arg;
    char err[512];
    json_t *j = NULL;
    ev_event ev;
    memset(&ev, 0, sizeof(ev));
    c->records++;
    ev.schema = ev_schema_by_name("ClockOffsetMeasured");
    if (ev_value_to_json(v, &j, err, sizeof(err)) ||
        ev_codec_value(c->r->codec, ev.schema, &ev.value) ||
        ev_value_from_json(ev.value, j, err, sizeof(err))) {
        json_decref(j);
        return bad_record(c, err);
    }
    /* the record's own identity: device and its kept probe */
    snprintf(ev.id, sizeof(ev.id), "clock/%.40s/%lld",
             json_string_value(json_object_get(j, "device_id")),
             (long long)json_integer_value(json_object_get(j, "t1_ns")));
    ev.time_ns = json_integer_value(json_object_get(j, "t4_ns"));
    snprintf(ev.source, sizeof(ev.source), "archive");
    json_decref(j);
    return c->fn(c->arg, &ev, NULL);
}

int ar_reader_events(ar_reader *r, ar_event_cb fn, void *arg, char *errstr, size_t errstr_size)
{
    char path[PATH_MAX + 16];
    events_ctx c = {r, path, fn, arg, 0};
    snprintf(path, sizeof(path), "%s/events.avro", r->dir);
    if (!json_object_get(json_object_get(r->manifest, "files"), "events.avro"))
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "%s: no events.avro (archived before msrs kept it)", r->dir);
    return ar_each_record(path, one_event, &c, NULL, errstr, errstr_size);
}

int ar_reader_clock(ar_reader *r, ar_event_cb fn, void *arg, char *errstr, size_t errstr_size)
{
    char path[PATH_MAX * 2];
    const char *rel;
    json_t *info;
    int rc = 0;
    json_object_foreach(json_object_get(r->manifest, "files"), rel, info)
    {
        if (ar_file_kind_of(rel) != AR_FILE_CLOCK)
            continue;
        events_ctx c = {r, path, fn, arg, 0};
        snprintf(path, sizeof(path), "%s/%s", r->dir, rel);
        int one =
            ar_each_record(path, one_clock, &c, NULL, rc ? NULL : errstr, rc ? 0 : errstr_size);
        if (one > 0)
            return one;     /* fn stopped it */
        rc = rc ? rc : one; /* the first error; the other devices are still read */
    }
    return rc;
}
