/* codec.c — Confluent framing (0x00, 4-byte big-endian schema id, Avro
 * binary) over avro-c generic values, with one reusable value per record
 * type and one growable output buffer per codec. A record framed with an
 * earlier version's id is read with that version's schema and converted to
 * the current one through JSON, which fills added fields with their
 * defaults (avro-c's resolved reader refuses a reader field the writer
 * lacks, even with a default: it does not keep defaults). */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_INITIAL_BUF (64 * 1024)

/* A direct encoder's schema: 0 not checked yet, 1 fits, -1 does not. */
typedef struct ev_codec_shape {
    int state;
    const ev_schema *schema;
} ev_codec_shape;

struct ev_codec {
    avro_value_t *values; /* one per catalog entry; iface NULL until used */
    size_t value_count;
    avro_value_t *old_values; /* one per earlier version, the same way */
    size_t old_count;
    avro_writer_t writer;
    avro_reader_t reader;
    char *buf;
    size_t buf_size;
    ev_codec_shape samples, media; /* the direct encoders' schemas, checked once */
};

ev_codec *ev_codec_new(void)
{
    ev_codec *c = calloc(1, sizeof(*c));
    if (!c || ev_catalog_init(NULL, 0))
        goto fail;
    c->value_count = ev_schema_count();
    c->values = calloc(c->value_count, sizeof(*c->values));
    c->old_count = ev__history_count();
    c->old_values = calloc(c->old_count + 1, sizeof(*c->old_values));
    /* the encode buffer comes with the first encode: a codec that only
     * decodes (a reducer's, a reader's) never needs it */
    c->writer = avro_writer_memory("", 0);
    c->reader = avro_reader_memory("", 0);
    if (!c->values || !c->old_values || !c->writer || !c->reader)
        goto fail;
    return c;
fail:
    ev_codec_destroy(c);
    return NULL;
}

void ev_codec_destroy(ev_codec *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->values && i < c->value_count; i++)
        if (c->values[i].iface)
            avro_value_decref(&c->values[i]);
    free(c->values);
    for (size_t i = 0; c->old_values && i < c->old_count; i++)
        if (c->old_values[i].iface)
            avro_value_decref(&c->old_values[i]);
    free(c->old_values);
    if (c->writer)
        avro_writer_free(c->writer);
    if (c->reader)
        avro_reader_free(c->reader);
    free(c->buf);
    free(c);
}

int ev_codec_value(ev_codec *c, const ev_schema *s, avro_value_t **value)
{
    avro_value_t *v = &c->values[ev__schema_index(s)];
    if (!v->iface) {
        if (avro_generic_value_new(ev__schema_iface(s), v) != 0) {
            v->iface = NULL;
            return EV_ERR_NOMEM;
        }
    } else {
        avro_value_reset(v);
    }
    *value = v;
    return 0;
}

int ev_frame_schema_id(const void *buf, size_t len, int32_t *id)
{
    const unsigned char *p = buf;
    if (len < EV_FRAME_HEADER_LEN)
        return EV_ERR_TRUNCATED;
    if (p[0] != EV_FRAME_MAGIC)
        return EV_ERR_CORRUPT;
    *id = (int32_t)((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]);
    return 0;
}

/* The encode buffer holds at least size bytes (frame header included). */
static int reserve(ev_codec *c, const ev_schema *s, size_t size, char *errstr, size_t errstr_size)
{
    if (size < CODEC_INITIAL_BUF)
        size = CODEC_INITIAL_BUF;
    if (c->buf && c->buf_size >= size)
        return 0;
    char *nb = realloc(c->buf, size);
    if (!nb)
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "encode %s: %zu bytes",
                        ev_schema_name(s), size);
    c->buf = nb;
    c->buf_size = size;
    return 0;
}

/* The frame header: magic byte and big-endian schema id. */
static void put_frame_header(char *buf, const ev_schema *s)
{
    uint32_t id = (uint32_t)ev_schema_id(s);
    buf[0] = EV_FRAME_MAGIC;
    buf[1] = (char)(id >> 24);
    buf[2] = (char)(id >> 16);
    buf[3] = (char)(id >> 8);
    buf[4] = (char)id;
}

int ev_codec_encode(ev_codec *c, const ev_schema *s, avro_value_t *value, const void **out,
                    size_t *out_len, char *errstr, size_t errstr_size)
{
    int rc;

    if (avro_value_get_schema(value) != ev_schema_avro(s) &&
        !avro_schema_equal(avro_value_get_schema(value), ev_schema_avro(s)))
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "encode %s: value is of another schema", ev_schema_name(s));
    if ((rc = reserve(c, s, CODEC_INITIAL_BUF, errstr, errstr_size)))
        return rc;
    /* Try the current buffer first; size exactly and retry when it is full. */
    avro_writer_memory_set_dest(c->writer, c->buf + EV_FRAME_HEADER_LEN,
                                (int64_t)(c->buf_size - EV_FRAME_HEADER_LEN));
    rc = avro_value_write(c->writer, value);
    if (rc == ENOSPC) {
        size_t need = 0;
        if (avro_value_sizeof(value, &need) != 0)
            return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "encode %s: %s", ev_schema_name(s),
                            avro_strerror());
        if ((rc = reserve(c, s, need + EV_FRAME_HEADER_LEN, errstr, errstr_size)))
            return rc;
        avro_writer_memory_set_dest(c->writer, c->buf + EV_FRAME_HEADER_LEN, (int64_t)need);
        rc = avro_value_write(c->writer, value);
    }
    if (rc != 0)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "encode %s: %s", ev_schema_name(s),
                        avro_strerror());
    put_frame_header(c->buf, s);
    *out = c->buf;
    *out_len = EV_FRAME_HEADER_LEN + (size_t)avro_writer_tell(c->writer);
    return 0;
}

/* ------------------------- direct encoders: SensorSampleBatch, MediaPacket */

/* A record's fields as a direct encoder writes them, in the schema's
 * order: it checks the catalog's schema against this once per codec. */
typedef struct shape_field {
    const char *name;
    avro_type_t type, items; /* items: of an array */
} shape_field;

static const shape_field samples_fields[] = {
    {"device_id", AVRO_STRING, 0},
    {"session_id", AVRO_STRING, 0},
    {"stream_id", AVRO_STRING, 0},
    {"stream_type", AVRO_STRING, 0},
    {"seq", AVRO_INT64, 0},
    {"channels", AVRO_INT32, 0},
    {"device_time_ns", AVRO_ARRAY, AVRO_INT64},
    {"master_time_ns", AVRO_ARRAY, AVRO_INT64},
    {"values", AVRO_ARRAY, AVRO_DOUBLE},
};

static const shape_field media_fields[] = {
    {"device_id", AVRO_STRING, 0},     {"session_id", AVRO_STRING, 0},
    {"stream_id", AVRO_STRING, 0},     {"seq", AVRO_INT64, 0},
    {"codec", AVRO_STRING, 0},         {"width", AVRO_INT32, 0},
    {"height", AVRO_INT32, 0},         {"pts", AVRO_INT64, 0},
    {"time_base_den", AVRO_INT32, 0},  {"keyframe", AVRO_BOOLEAN, 0},
    {"device_time_ns", AVRO_INT64, 0}, {"master_time_ns", AVRO_INT64, 0},
    {"data", AVRO_BYTES, 0},
};

static int shape_fits(avro_schema_t rec, const shape_field *fields, size_t count)
{
    if (avro_schema_record_size(rec) != count)
        return 0;
    for (size_t i = 0; i < count; i++) {
        avro_schema_t f = avro_schema_record_field_get_by_index(rec, (int)i);
        const char *name = avro_schema_record_field_name(rec, (int)i);
        if (!f || !name || strcmp(name, fields[i].name) != 0 || avro_typeof(f) != fields[i].type ||
            (fields[i].type == AVRO_ARRAY &&
             avro_typeof(avro_schema_array_items(f)) != fields[i].items))
            return 0;
    }
    return 1;
}

/* Avro's long and int: zig-zag, then 7 bits a byte, low first. */
static char *put_long(char *p, int64_t x)
{
    uint64_t z = ((uint64_t)x << 1) ^ (uint64_t)(x >> 63);
    while (z > 0x7f) {
        *p++ = (char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *p++ = (char)z;
    return p;
}

static char *put_string(char *p, const char *str)
{
    size_t len = str ? strlen(str) : 0;
    p = put_long(p, (int64_t)len);
    if (len)
        memcpy(p, str, len);
    return p + len;
}

/* An array of n longs in one block (count, items, then the 0 that ends
 * it), as avro-c writes one. */
static char *put_long_array(char *p, const int64_t *x, size_t n)
{
    p = put_long(p, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        p = put_long(p, x[i]);
    return n ? put_long(p, 0) : p;
}

/* The summed lengths of count strings (NULL: ""). */
static size_t lengths(const char *const *strs, size_t count)
{
    size_t sum = 0;
    for (size_t i = 0; i < count; i++)
        sum += strs[i] ? strlen(strs[i]) : 0;
    return sum;
}

/* A direct encoder's start: the catalog's schema of name, checked once
 * (*checked) to be the shape fields say, room for bound bytes and the
 * frame header written; *p is where the record's fields go. EV_ERR_INVALID
 * when the schema is not that shape. */
static int start_frame(ev_codec *c, ev_codec_shape *checked, const char *name,
                       const shape_field *fields, size_t count, size_t bound, char **p,
                       char *errstr, size_t errstr_size)
{
    if (!checked->state) {
        checked->schema = ev_schema_by_name(name);
        checked->state =
            checked->schema && shape_fits(ev_schema_avro(checked->schema), fields, count) ? 1 : -1;
    }
    if (checked->state < 0)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "encode %s: the catalog's schema is not the shape "
                        "libevents/src/codec.c writes straight",
                        name);
    int rc = reserve(c, checked->schema, bound, errstr, errstr_size);
    if (rc)
        return rc;
    put_frame_header(c->buf, checked->schema);
    *p = c->buf + EV_FRAME_HEADER_LEN;
    return 0;
}

/* The encoded frame from the codec's buffer up to p. */
static int frame_out(const ev_codec *c, const char *p, const void **out, size_t *out_len)
{
    *out = c->buf;
    *out_len = (size_t)(p - c->buf);
    return 0;
}

int ev_codec_encode_samples(ev_codec *c, const ev_samples *b, const void **out, size_t *out_len,
                            char *errstr, size_t errstr_size)
{
    if (b->n < 1 || b->channels < 1 || !b->device_time_ns || !b->master_time_ns || !b->values_le)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "encode SensorSampleBatch: expected n >= 1, channels >= 1 and all "
                        "three arrays");
    size_t values = b->n * (size_t)b->channels;
    const char *strs[] = {b->device_id, b->session_id, b->stream_id, b->stream_type};
    /* at most 10 bytes a long; 4 strings, 2 scalars, 3 arrays of count and
     * end */
    size_t bound = EV_FRAME_HEADER_LEN + lengths(strs, 4) + 4 * 10 + 2 * 10 + 3 * 20 +
                   2 * 10 * b->n + 8 * values;
    char *p;
    int rc = start_frame(c, &c->samples, "SensorSampleBatch", samples_fields,
                         sizeof(samples_fields) / sizeof(samples_fields[0]), bound, &p, errstr,
                         errstr_size);
    if (rc)
        return rc;
    p = put_string(p, b->device_id);
    p = put_string(p, b->session_id);
    p = put_string(p, b->stream_id);
    p = put_string(p, b->stream_type);
    p = put_long(p, b->seq);
    p = put_long(p, b->channels);
    p = put_long_array(p, b->device_time_ns, b->n);
    p = put_long_array(p, b->master_time_ns, b->n);
    p = put_long(p, (int64_t)values);
    memcpy(p, b->values_le, 8 * values);
    p = put_long(p + 8 * values, 0);
    return frame_out(c, p, out, out_len);
}

int ev_codec_encode_media(ev_codec *c, const ev_media *m, const void **out, size_t *out_len,
                          char *errstr, size_t errstr_size)
{
    if (!m->data && m->data_len)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "encode MediaPacket: data is NULL with %zu bytes", m->data_len);
    const char *strs[] = {m->device_id, m->session_id, m->stream_id, m->codec};
    /* 4 strings and bytes with their lengths, 8 numbers, 1 boolean */
    size_t bound = EV_FRAME_HEADER_LEN + lengths(strs, 4) + m->data_len + 5 * 10 + 8 * 10 + 1;
    char *p;
    int rc =
        start_frame(c, &c->media, "MediaPacket", media_fields,
                    sizeof(media_fields) / sizeof(media_fields[0]), bound, &p, errstr, errstr_size);
    if (rc)
        return rc;
    p = put_string(p, m->device_id);
    p = put_string(p, m->session_id);
    p = put_string(p, m->stream_id);
    p = put_long(p, m->seq);
    p = put_string(p, m->codec);
    p = put_long(p, m->width);
    p = put_long(p, m->height);
    p = put_long(p, m->pts);
    p = put_long(p, m->time_base_den);
    *p++ = (char)(m->keyframe ? 1 : 0);
    p = put_long(p, m->device_time_ns);
    p = put_long(p, m->master_time_ns);
    p = put_long(p, (int64_t)m->data_len);
    if (m->data_len)
        memcpy(p, m->data, m->data_len);
    return frame_out(c, p + m->data_len, out, out_len);
}

int ev_codec_check(const void *buf, size_t len, const ev_schema **schema, char *errstr,
                   size_t errstr_size)
{
    int32_t id = 0;
    int rc = ev_frame_schema_id(buf, len, &id);
    const ev_schema *s;

    if (rc == EV_ERR_TRUNCATED)
        return ev__fail(errstr, errstr_size, rc,
                        "frame: %zu bytes, expected at least %d (magic + schema id)", len,
                        EV_FRAME_HEADER_LEN);
    if (rc)
        return ev__fail(errstr, errstr_size, rc, "frame: byte 0 is 0x%02x, expected 0x00",
                        ((const unsigned char *)buf)[0]);
    s = ev_schema_by_id(id);
    const ev__history *old = s ? NULL : ev__history_by_id(id);
    if (old)
        s = ev__history_current(old);
    if (!s)
        return ev__fail(errstr, errstr_size, EV_ERR_UNKNOWN_SCHEMA,
                        "frame: schema id %d is not in schemas/catalog.json", id);
    /* avro-c trusts length prefixes (a corrupt one makes it allocate that
     * much and leak it when the read fails): check the bytes first. */
    size_t at = 0;
    rc = ev__validate(old ? ev__history_validator(old) : ev__schema_validator(s),
                      (const unsigned char *)buf + EV_FRAME_HEADER_LEN, len - EV_FRAME_HEADER_LEN,
                      &at);
    if (rc == EV_ERR_TRUNCATED)
        return ev__fail(errstr, errstr_size, rc,
                        "decode %s (id %d): record ends early in %zu bytes", ev_schema_name(s), id,
                        len);
    if (rc)
        return ev__fail(errstr, errstr_size, rc, "decode %s (id %d): byte %zu: not a valid %s",
                        ev_schema_name(s), id, at + EV_FRAME_HEADER_LEN, ev_schema_short_name(s));
    if (at != len - EV_FRAME_HEADER_LEN)
        return ev__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "decode %s (id %d): %zu trailing bytes after the record", ev_schema_name(s),
                        id, len - EV_FRAME_HEADER_LEN - at);
    *schema = s;
    return 0;
}

/* A record of an earlier version: read as written, then as s through JSON. */
static int read_old(ev_codec *c, const ev__history *old, const ev_schema *s, avro_value_t *v,
                    char *errstr, size_t errstr_size)
{
    avro_value_t *ov = &c->old_values[ev__history_index(old)];
    json_t *j = NULL;
    int rc;
    if (!ov->iface && avro_generic_value_new(ev__history_iface(old), ov) != 0) {
        ov->iface = NULL;
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "decode %s: out of memory",
                        ev_schema_name(s));
    }
    avro_value_reset(ov);
    if (avro_value_read(c->reader, ov))
        return ev__fail(errstr, errstr_size, EV_ERR_CORRUPT, "decode %s (earlier version): %s",
                        ev_schema_name(s), avro_strerror());
    rc = ev_value_to_json(ov, &j, errstr, errstr_size);
    if (rc == 0)
        rc = ev__value_from_json_old(v, j, errstr, errstr_size);
    json_decref(j);
    return rc;
}

int ev__codec_read(ev_codec *c, const ev_schema *s, const void *buf, size_t len,
                   avro_value_t **value, char *errstr, size_t errstr_size)
{
    avro_value_t *v;
    int32_t id = ev_schema_id(s);
    const ev__history *old = NULL;
    int rc = ev_codec_value(c, s, &v);
    if (rc)
        return ev__fail(errstr, errstr_size, rc, "decode %s: out of memory", ev_schema_name(s));
    avro_reader_memory_set_source(c->reader, (const char *)buf + EV_FRAME_HEADER_LEN,
                                  (int64_t)(len - EV_FRAME_HEADER_LEN));
    if (ev_frame_schema_id(buf, len, &id) == 0 && id != ev_schema_id(s) &&
        (old = ev__history_by_id(id)) != NULL) {
        if ((rc = read_old(c, old, s, v, errstr, errstr_size)))
            return rc;
        *value = v;
        return 0;
    }
    if (avro_value_read(c->reader, v))
        return ev__fail(errstr, errstr_size, EV_ERR_CORRUPT, "decode %s (id %d): %s",
                        ev_schema_name(s), (int)ev_schema_id(s), avro_strerror());
    *value = v;
    return 0;
}

int ev_codec_decode(ev_codec *c, const void *buf, size_t len, const ev_schema **schema,
                    avro_value_t **value, char *errstr, size_t errstr_size)
{
    int rc = ev_codec_check(buf, len, schema, errstr, errstr_size);
    return rc ? rc : ev__codec_read(c, *schema, buf, len, value, errstr, errstr_size);
}

int64_t ev_value_long(const avro_value_t *record, const char *name)
{
    avro_value_t f;
    int64_t x = 0;
    if (avro_value_get_by_name(record, name, &f, NULL) == 0)
        avro_value_get_long(&f, &x);
    return x;
}

const char *ev_value_string(const avro_value_t *record, const char *name)
{
    avro_value_t f;
    const char *s = NULL;
    size_t len;
    if (avro_value_get_by_name(record, name, &f, NULL) || avro_value_get_string(&f, &s, &len) || !s)
        return "";
    return s;
}
