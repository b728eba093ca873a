/* codec.c — Confluent framing (0x00, 4-byte big-endian schema id, Avro
 * binary) over avro-c generic values, with one reusable value per record
 * type and one growable output buffer per codec. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_INITIAL_BUF (64 * 1024)

struct ev_codec {
    avro_value_t *values; /* one per catalog entry; iface NULL until used */
    size_t value_count;
    avro_writer_t writer;
    avro_reader_t reader;
    char *buf;
    size_t buf_size;
};

ev_codec *ev_codec_new(void)
{
    ev_codec *c = calloc(1, sizeof(*c));
    if (!c || ev_catalog_init(NULL, 0))
        goto fail;
    c->value_count = ev_schema_count();
    c->values = calloc(c->value_count, sizeof(*c->values));
    c->buf_size = CODEC_INITIAL_BUF;
    c->buf = malloc(c->buf_size);
    c->writer = avro_writer_memory(c->buf, (int64_t)c->buf_size);
    c->reader = avro_reader_memory("", 0);
    if (!c->values || !c->buf || !c->writer || !c->reader)
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

/* ---- validation of Avro binary before avro-c reads it ----
 * avro-c trusts length prefixes: a corrupt string length makes it allocate
 * that much and, when the read then fails, leak it. So every frame is first
 * walked against its schema here: lengths and counts must fit in the bytes
 * that remain, union and enum indexes must exist, and the record must end
 * exactly at the end of the frame. Only then does avro-c decode it. */

#define VALIDATE_MAX_DEPTH 32

typedef struct cursor {
    const unsigned char *p, *end;
} cursor;

/* Reads a zigzag varint (Avro int/long). 0 ok, EV_ERR_TRUNCATED, EV_ERR_CORRUPT. */
static int read_varint(cursor *c, int64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (c->p >= c->end)
            return EV_ERR_TRUNCATED;
        unsigned char b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return EV_ERR_CORRUPT; /* more than 10 bytes */
}

static int skip(cursor *c, int64_t n)
{
    if (n < 0)
        return EV_ERR_CORRUPT;
    if (n > c->end - c->p)
        return EV_ERR_TRUNCATED;
    c->p += n;
    return 0;
}

static int validate(avro_schema_t s, cursor *c, int depth)
{
    int64_t n;
    int rc;
    if (depth > VALIDATE_MAX_DEPTH)
        return EV_ERR_CORRUPT;
    switch (avro_typeof(s)) {
    case AVRO_NULL: return 0;
    case AVRO_BOOLEAN:
        if (c->p >= c->end)
            return EV_ERR_TRUNCATED;
        return *c->p++ > 1 ? EV_ERR_CORRUPT : 0;
    case AVRO_INT32:
        if ((rc = read_varint(c, &n)))
            return rc;
        return n < INT32_MIN || n > INT32_MAX ? EV_ERR_CORRUPT : 0;
    case AVRO_INT64: return read_varint(c, &n);
    case AVRO_FLOAT: return skip(c, 4);
    case AVRO_DOUBLE: return skip(c, 8);
    case AVRO_STRING:
    case AVRO_BYTES:
        if ((rc = read_varint(c, &n)))
            return rc;
        return skip(c, n);
    case AVRO_FIXED: return skip(c, avro_schema_fixed_size(s));
    case AVRO_ENUM:
        if ((rc = read_varint(c, &n)))
            return rc;
        return n < 0 || n >= avro_schema_enum_number_of_symbols(s) ? EV_ERR_CORRUPT : 0;
    case AVRO_UNION:
        if ((rc = read_varint(c, &n)))
            return rc;
        if (n < 0 || (size_t)n >= avro_schema_union_size(s))
            return EV_ERR_CORRUPT;
        return validate(avro_schema_union_branch(s, (int)n), c, depth + 1);
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            if ((rc = validate(avro_schema_record_field_get_by_index(s, (int)i), c, depth + 1)))
                return rc;
        return 0;
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int is_map = avro_typeof(s) == AVRO_MAP;
        avro_schema_t item = is_map ? avro_schema_map_values(s) : avro_schema_array_items(s);
        for (;;) {
            if ((rc = read_varint(c, &n)))
                return rc;
            if (n == 0)
                return 0;
            if (n < 0) { /* negative count: a byte size follows */
                int64_t bytes;
                if ((rc = read_varint(c, &bytes)))
                    return rc;
                if (n == INT64_MIN)
                    return EV_ERR_CORRUPT;
                n = -n;
            }
            /* Every item of our schemas takes at least one byte. */
            if (n > c->end - c->p)
                return EV_ERR_TRUNCATED;
            for (int64_t i = 0; i < n; i++) {
                int64_t key_len;
                if (is_map && ((rc = read_varint(c, &key_len)) || (rc = skip(c, key_len))))
                    return rc;
                if ((rc = validate(item, c, depth + 1)))
                    return rc;
            }
        }
    }
    case AVRO_LINK: return validate(avro_schema_link_target(s), c, depth + 1);
    default: return EV_ERR_CORRUPT;
    }
}

int ev_codec_encode(ev_codec *c, const ev_schema *s, avro_value_t *value, const void **out,
                    size_t *out_len, char *errstr, size_t errstr_size)
{
    uint32_t id = (uint32_t)ev_schema_id(s);
    int rc;

    if (avro_value_get_schema(value) != ev_schema_avro(s) &&
        !avro_schema_equal(avro_value_get_schema(value), ev_schema_avro(s)))
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "encode %s: value is of another schema", ev_schema_name(s));
    /* Try the current buffer first; size exactly and retry when it is full. */
    avro_writer_memory_set_dest(c->writer, c->buf + EV_FRAME_HEADER_LEN,
                                (int64_t)(c->buf_size - EV_FRAME_HEADER_LEN));
    rc = avro_value_write(c->writer, value);
    if (rc == ENOSPC) {
        size_t need = 0;
        if (avro_value_sizeof(value, &need) != 0)
            return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "encode %s: %s",
                            ev_schema_name(s), avro_strerror());
        char *nb = realloc(c->buf, need + EV_FRAME_HEADER_LEN);
        if (!nb)
            return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "encode %s: %zu bytes",
                            ev_schema_name(s), need);
        c->buf = nb;
        c->buf_size = need + EV_FRAME_HEADER_LEN;
        avro_writer_memory_set_dest(c->writer, c->buf + EV_FRAME_HEADER_LEN, (int64_t)need);
        rc = avro_value_write(c->writer, value);
    }
    if (rc != 0)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "encode %s: %s", ev_schema_name(s),
                        avro_strerror());
    c->buf[0] = EV_FRAME_MAGIC;
    c->buf[1] = (char)(id >> 24);
    c->buf[2] = (char)(id >> 16);
    c->buf[3] = (char)(id >> 8);
    c->buf[4] = (char)id;
    *out = c->buf;
    *out_len = EV_FRAME_HEADER_LEN + (size_t)avro_writer_tell(c->writer);
    return 0;
}

int ev_codec_decode(ev_codec *c, const void *buf, size_t len, const ev_schema **schema,
                    avro_value_t **value, char *errstr, size_t errstr_size)
{
    int32_t id = 0;
    int rc = ev_frame_schema_id(buf, len, &id);
    const ev_schema *s;
    avro_value_t *v;

    if (rc == EV_ERR_TRUNCATED)
        return ev__fail(errstr, errstr_size, rc,
                        "frame: %zu bytes, expected at least %d (magic + schema id)", len,
                        EV_FRAME_HEADER_LEN);
    if (rc)
        return ev__fail(errstr, errstr_size, rc, "frame: byte 0 is 0x%02x, expected 0x00",
                        ((const unsigned char *)buf)[0]);
    s = ev_schema_by_id(id);
    if (!s)
        return ev__fail(errstr, errstr_size, EV_ERR_UNKNOWN_SCHEMA,
                        "frame: schema id %d is not in schemas/catalog.json", id);
    cursor cur = {(const unsigned char *)buf + EV_FRAME_HEADER_LEN,
                  (const unsigned char *)buf + len};
    rc = validate(ev_schema_avro(s), &cur, 0);
    if (rc == EV_ERR_TRUNCATED)
        return ev__fail(errstr, errstr_size, rc,
                        "decode %s (id %d): record ends early in %zu bytes", ev_schema_name(s),
                        id, len);
    if (rc)
        return ev__fail(errstr, errstr_size, rc,
                        "decode %s (id %d): bytes %zu..: not a valid %s", ev_schema_name(s), id,
                        (size_t)(cur.p - (const unsigned char *)buf), ev_schema_short_name(s));
    if (cur.p != cur.end)
        return ev__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "decode %s (id %d): %zu trailing bytes after the record",
                        ev_schema_name(s), id, (size_t)(cur.end - cur.p));
    rc = ev_codec_value(c, s, &v);
    if (rc)
        return ev__fail(errstr, errstr_size, rc, "decode %s: out of memory", ev_schema_name(s));
    avro_reader_memory_set_source(c->reader, (const char *)buf + EV_FRAME_HEADER_LEN,
                                  (int64_t)(len - EV_FRAME_HEADER_LEN));
    rc = avro_value_read(c->reader, v);
    if (rc)
        return ev__fail(errstr, errstr_size, EV_ERR_CORRUPT, "decode %s (id %d): %s",
                        ev_schema_name(s), id, avro_strerror());
    *schema = s;
    *value = v;
    return 0;
}
