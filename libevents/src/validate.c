/* validate.c — checks Avro binary against a schema before avro-c reads it.
 * avro-c trusts length prefixes: a corrupt string length makes it allocate
 * that many bytes and leak them when the read then fails, and a corrupt
 * count makes it loop. The schema is compiled once into a flat tree (avro-c's
 * own field lookup by index is a hash lookup) and the walk allocates nothing. */
#include "internal.h"

#include <string.h>

#define MAX_DEPTH 32

typedef enum vkind {
    V_NULL,
    V_BOOL,
    V_INT,
    V_LONG,
    V_FLOAT,
    V_DOUBLE,
    V_BYTES,
    V_STRING,
    V_FIXED,
    V_ENUM,
    V_UNION,
    V_RECORD,
    V_ARRAY,
    V_MAP
} vkind;

typedef struct vnode {
    vkind kind;
    int64_t n;               /* fixed size, enum symbols, union branches, record fields */
    struct vnode **children; /* union branches, record fields, array/map item */
} vnode;

struct ev__validator {
    vnode *root;
};

static void node_free(vnode *v)
{
    if (!v)
        return;
    size_t count = v->kind == V_ARRAY || v->kind == V_MAP      ? 1
                   : v->kind == V_UNION || v->kind == V_RECORD ? (size_t)v->n
                                                               : 0;
    for (size_t i = 0; v->children && i < count; i++)
        node_free(v->children[i]);
    free(v->children);
    free(v);
}

static vnode *compile(avro_schema_t s, int depth)
{
    vnode *v;
    size_t count = 0;
    if (depth > MAX_DEPTH)
        return NULL; /* recursive schemas are not ours */
    while (avro_typeof(s) == AVRO_LINK)
        s = avro_schema_link_target(s);
    if (!(v = calloc(1, sizeof(*v))))
        return NULL;
    switch (avro_typeof(s)) {
    case AVRO_NULL: v->kind = V_NULL; break;
    case AVRO_BOOLEAN: v->kind = V_BOOL; break;
    case AVRO_INT32: v->kind = V_INT; break;
    case AVRO_INT64: v->kind = V_LONG; break;
    case AVRO_FLOAT: v->kind = V_FLOAT; break;
    case AVRO_DOUBLE: v->kind = V_DOUBLE; break;
    case AVRO_STRING: v->kind = V_STRING; break;
    case AVRO_BYTES: v->kind = V_BYTES; break;
    case AVRO_FIXED:
        v->kind = V_FIXED;
        v->n = avro_schema_fixed_size(s);
        break;
    case AVRO_ENUM:
        v->kind = V_ENUM;
        v->n = avro_schema_enum_number_of_symbols(s);
        break;
    case AVRO_UNION:
        v->kind = V_UNION;
        count = avro_schema_union_size(s);
        break;
    case AVRO_RECORD:
        v->kind = V_RECORD;
        count = avro_schema_record_size(s);
        break;
    case AVRO_ARRAY:
        v->kind = V_ARRAY;
        count = 1;
        break;
    case AVRO_MAP:
        v->kind = V_MAP;
        count = 1;
        break;
    default: free(v); return NULL;
    }
    if (count) {
        if (v->kind == V_UNION || v->kind == V_RECORD)
            v->n = (int64_t)count;
        if (!(v->children = calloc(count, sizeof(*v->children))))
            goto fail;
        for (size_t i = 0; i < count; i++) {
            avro_schema_t c = v->kind == V_UNION ? avro_schema_union_branch(s, (int)i)
                              : v->kind == V_RECORD
                                  ? avro_schema_record_field_get_by_index(s, (int)i)
                              : v->kind == V_ARRAY ? avro_schema_array_items(s)
                                                   : avro_schema_map_values(s);
            if (!(v->children[i] = compile(c, depth + 1)))
                goto fail;
        }
    }
    return v;
fail:
    node_free(v);
    return NULL;
}

ev__validator *ev__validator_new(avro_schema_t schema)
{
    ev__validator *v = calloc(1, sizeof(*v));
    if (v && !(v->root = compile(schema, 0))) {
        free(v);
        return NULL;
    }
    return v;
}

void ev__validator_destroy(ev__validator *v)
{
    if (!v)
        return;
    node_free(v->root);
    free(v);
}

typedef struct cursor {
    const unsigned char *p, *end;
} cursor;

/* A zigzag varint (Avro int and long). */
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
    return EV_ERR_CORRUPT; /* longer than 10 bytes */
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

/* A string: its bytes, with no NUL among them. Every string in our
 * schemas is an id or text, and C reads both up to the first NUL: an id
 * with one inside would be two different ids to two readers. */
static int skip_string(cursor *c, int64_t n)
{
    const unsigned char *at = c->p;
    int rc = skip(c, n);
    return rc ? rc : memchr(at, 0, (size_t)n) ? EV_ERR_CORRUPT : 0;
}

static int walk(const vnode *v, cursor *c)
{
    int64_t n;
    int rc;
    switch (v->kind) {
    case V_NULL: return 0;
    case V_BOOL:
        if (c->p >= c->end)
            return EV_ERR_TRUNCATED;
        return *c->p++ > 1 ? EV_ERR_CORRUPT : 0;
    case V_INT:
        if ((rc = read_varint(c, &n)))
            return rc;
        return n < INT32_MIN || n > INT32_MAX ? EV_ERR_CORRUPT : 0;
    case V_LONG: return read_varint(c, &n);
    case V_FLOAT: return skip(c, 4);
    case V_DOUBLE: return skip(c, 8);
    case V_BYTES:
        if ((rc = read_varint(c, &n)))
            return rc;
        return skip(c, n);
    case V_STRING:
        if ((rc = read_varint(c, &n)))
            return rc;
        return skip_string(c, n);
    case V_FIXED: return skip(c, v->n);
    case V_ENUM:
        if ((rc = read_varint(c, &n)))
            return rc;
        return n < 0 || n >= v->n ? EV_ERR_CORRUPT : 0;
    case V_UNION:
        if ((rc = read_varint(c, &n)))
            return rc;
        if (n < 0 || n >= v->n)
            return EV_ERR_CORRUPT;
        return walk(v->children[n], c);
    case V_RECORD:
        for (int64_t i = 0; i < v->n; i++)
            if ((rc = walk(v->children[i], c)))
                return rc;
        return 0;
    case V_ARRAY:
    case V_MAP:
        for (;;) {
            if ((rc = read_varint(c, &n)))
                return rc;
            if (n == 0)
                return 0;
            if (n < 0) { /* a negative count is followed by the block's byte size */
                int64_t bytes;
                if (n == INT64_MIN || (rc = read_varint(c, &bytes)))
                    return rc ? rc : EV_ERR_CORRUPT;
                n = -n;
            }
            /* Each item takes at least one byte (arrays of null are refused
             * here, and no msrs schema has one). */
            if (n > c->end - c->p)
                return EV_ERR_TRUNCATED;
            for (int64_t i = 0; i < n; i++) {
                int64_t key_len;
                if (v->kind == V_MAP &&
                    ((rc = read_varint(c, &key_len)) || (rc = skip_string(c, key_len))))
                    return rc;
                if ((rc = walk(v->children[0], c)))
                    return rc;
            }
        }
    }
    return EV_ERR_CORRUPT;
}

int ev__validate(const ev__validator *v, const unsigned char *buf, size_t len, size_t *consumed)
{
    cursor c = {buf, buf + len};
    int rc = walk(v->root, &c);
    *consumed = (size_t)(c.p - buf);
    return rc;
}

ev_validator *ev_validator_new(avro_schema_t schema)
{
    return ev__validator_new(schema);
}

void ev_validator_destroy(ev_validator *v)
{
    ev__validator_destroy(v);
}

int ev_validate(const ev_validator *v, const void *buf, size_t len, size_t *consumed)
{
    return ev__validate(v, buf, len, consumed);
}
