/* json.c — Avro generic values <-> jansson, for tools, tests and the
 * JSON device protocol. Nullable unions are written as null or the plain
 * value; bytes as a string of code points 0-255 (Avro's JSON encoding). */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Paths name the field being converted in error messages: "streams[2].type". */
typedef struct path {
    char text[256];
    size_t len;
    int null_is_nan; /* ev__value_from_json_old: null in a float or double is NaN */
} path;

/* Every field of every converted value is pushed: no printf here. */
static size_t path_push_field(path *p, const char *name)
{
    size_t old = p->len, n = strlen(name);
    if (p->len && p->len < sizeof(p->text) - 1)
        p->text[p->len++] = '.';
    if (n > sizeof(p->text) - 1 - p->len)
        n = sizeof(p->text) - 1 - p->len;
    memcpy(p->text + p->len, name, n);
    p->len += n;
    p->text[p->len] = '\0';
    return old;
}

static size_t path_push_index(path *p, size_t i)
{
    size_t old = p->len;
    int n = snprintf(p->text + p->len, sizeof(p->text) - p->len, "[%zu]", i);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof(p->text) ? p->len + (size_t)n : sizeof(p->text) - 1;
    return old;
}

static void path_pop(path *p, size_t old)
{
    p->len = old;
    p->text[old] = '\0';
}

static const char *path_str(const path *p)
{
    return p->len ? p->text : "(record)";
}

static json_t *bytes_to_json(const void *buf, size_t len)
{
    /* Each byte becomes one code point U+0000..U+00FF, UTF-8 encoded. */
    const unsigned char *b = buf;
    char *s = malloc(len * 2 + 1);
    size_t o = 0;
    json_t *j;
    if (!s)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (b[i] < 0x80) {
            s[o++] = (char)b[i];
        } else {
            s[o++] = (char)(0xc0 | (b[i] >> 6));
            s[o++] = (char)(0x80 | (b[i] & 0x3f));
        }
    }
    j = json_stringn_nocheck(s, o);
    free(s);
    return j;
}

static int to_json(const avro_value_t *v, json_t **out, path *p, char *errstr, size_t n)
{
    avro_value_t *mv = (avro_value_t *)v; /* avro-c getters take non-const */
    json_t *j = NULL;
    size_t count = 0;

    switch (avro_value_get_type(v)) {
    case AVRO_STRING: {
        const char *s = NULL;
        size_t len = 0;
        avro_value_get_string(mv, &s, &len);
        j = json_stringn(s, len ? len - 1 : 0);
        if (!j) /* not UTF-8: keep the bytes visible rather than fail */
            j = bytes_to_json(s, len ? len - 1 : 0);
        break;
    }
    case AVRO_BYTES: {
        const void *b = NULL;
        size_t len = 0;
        avro_value_get_bytes(mv, &b, &len);
        j = bytes_to_json(b, len);
        break;
    }
    case AVRO_INT32: {
        int32_t x = 0;
        avro_value_get_int(mv, &x);
        j = json_integer(x);
        break;
    }
    case AVRO_INT64: {
        int64_t x = 0;
        avro_value_get_long(mv, &x);
        j = json_integer(x);
        break;
    }
    case AVRO_FLOAT: {
        float x = 0;
        avro_value_get_float(mv, &x);
        j = isfinite(x) ? json_real(x) : json_null();
        break;
    }
    case AVRO_DOUBLE: {
        double x = 0;
        avro_value_get_double(mv, &x);
        j = isfinite(x) ? json_real(x) : json_null();
        break;
    }
    case AVRO_BOOLEAN: {
        int x = 0;
        avro_value_get_boolean(mv, &x);
        j = json_boolean(x);
        break;
    }
    case AVRO_NULL: j = json_null(); break;
    case AVRO_ENUM: {
        int x = 0;
        avro_value_get_enum(mv, &x);
        const char *sym = avro_schema_enum_get(avro_value_get_schema(v), x);
        j = json_string(sym ? sym : "");
        break;
    }
    case AVRO_FIXED: {
        const void *b = NULL;
        size_t len = 0;
        avro_value_get_fixed(mv, &b, &len);
        j = bytes_to_json(b, len);
        break;
    }
    case AVRO_UNION: {
        avro_value_t branch;
        avro_value_get_current_branch(mv, &branch);
        return to_json(&branch, out, p, errstr, n);
    }
    case AVRO_RECORD:
    case AVRO_MAP: {
        int is_map = avro_value_get_type(v) == AVRO_MAP;
        j = json_object();
        avro_value_get_size(mv, &count);
        for (size_t i = 0; i < count; i++) {
            avro_value_t child;
            const char *name = NULL;
            json_t *cj;
            avro_value_get_by_index(mv, i, &child, &name);
            size_t old = path_push_field(p, name);
            int rc = to_json(&child, &cj, p, errstr, n);
            path_pop(p, old);
            if (rc) {
                json_decref(j);
                return rc;
            }
            json_object_set_new(j, name, cj);
        }
        (void)is_map;
        break;
    }
    case AVRO_ARRAY: {
        j = json_array();
        avro_value_get_size(mv, &count);
        for (size_t i = 0; i < count; i++) {
            avro_value_t child;
            json_t *cj;
            avro_value_get_by_index(mv, i, &child, NULL);
            size_t old = path_push_index(p, i);
            int rc = to_json(&child, &cj, p, errstr, n);
            path_pop(p, old);
            if (rc) {
                json_decref(j);
                return rc;
            }
            json_array_append_new(j, cj);
        }
        break;
    }
    default: return ev__fail(errstr, n, EV_ERR_INVALID, "%s: unsupported Avro type", path_str(p));
    }
    if (!j)
        return ev__fail(errstr, n, EV_ERR_NOMEM, "%s: out of memory", path_str(p));
    *out = j;
    return 0;
}

int ev_value_to_json(const avro_value_t *value, json_t **out, char *errstr, size_t errstr_size)
{
    path p = {.len = 0};
    p.text[0] = '\0';
    return to_json(value, out, &p, errstr, errstr_size);
}

static const char *json_kind(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

#define EXPECTED(what)                                                                             \
    ev__fail(errstr, n, EV_ERR_INVALID, "%s: expected %s, got %s", path_str(p), what,              \
             j ? json_kind(j) : "nothing")

/* Decodes a string of code points 0-255 into bytes (Avro's JSON encoding). */
static int json_to_bytes(json_t *j, unsigned char **out, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)json_string_value(j);
    size_t len = json_string_length(j), o = 0;
    unsigned char *b = malloc(len + 1);
    if (!b)
        return EV_ERR_NOMEM;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x80) {
            b[o++] = s[i];
        } else if ((s[i] & 0xe0) == 0xc0 && i + 1 < len && s[i] <= 0xc3) {
            b[o++] = (unsigned char)(((s[i] & 0x1f) << 6) | (s[i + 1] & 0x3f));
            i++;
        } else {
            free(b);
            return EV_ERR_INVALID;
        }
    }
    *out = b;
    *out_len = o;
    return 0;
}

static int from_json(avro_value_t *v, json_t *j, path *p, char *errstr, size_t n);

/* A record field missing from the JSON takes the default its .avsc gives
 * (avro-c does not keep defaults, so the catalog keeps them). */
static int field_default(avro_value_t *child, avro_schema_t record, size_t index, path *p,
                         char *errstr, size_t n)
{
    json_t *def = ev__field_default(record, index);
    if (!def)
        return ev__fail(errstr, n, EV_ERR_INVALID, "%s: missing, and the schema has no default",
                        path_str(p));
    return from_json(child, def, p, errstr, n);
}

static int from_json(avro_value_t *v, json_t *j, path *p, char *errstr, size_t n)
{
    avro_schema_t schema = avro_value_get_schema(v);
    int rc = 0;

    switch (avro_value_get_type(v)) {
    case AVRO_STRING:
        if (!json_is_string(j))
            return EXPECTED("a string");
        rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
        break;
    case AVRO_BYTES:
    case AVRO_FIXED: {
        unsigned char *b;
        size_t len;
        if (!json_is_string(j))
            return EXPECTED("a string of bytes");
        if (json_to_bytes(j, &b, &len))
            return EXPECTED("a string of code points U+0000..U+00FF");
        if (avro_value_get_type(v) == AVRO_FIXED) {
            if ((int64_t)len != avro_schema_fixed_size(schema)) {
                free(b);
                return EXPECTED("a fixed-size string");
            }
            rc = avro_value_set_fixed(v, b, len);
        } else {
            rc = avro_value_set_bytes(v, b, len);
        }
        free(b);
        break;
    }
    case AVRO_INT32:
        if (!json_is_integer(j) || json_integer_value(j) < INT32_MIN ||
            json_integer_value(j) > INT32_MAX)
            return EXPECTED("a 32-bit integer");
        rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
        break;
    case AVRO_INT64:
        if (!json_is_integer(j))
            return EXPECTED("an integer");
        rc = avro_value_set_long(v, json_integer_value(j));
        break;
    case AVRO_FLOAT:
        if (p->null_is_nan && json_is_null(j)) {
            rc = avro_value_set_float(v, NAN);
            break;
        }
        if (!json_is_number(j))
            return EXPECTED("a number");
        rc = avro_value_set_float(v, (float)json_number_value(j));
        break;
    case AVRO_DOUBLE:
        if (p->null_is_nan && json_is_null(j)) {
            rc = avro_value_set_double(v, NAN);
            break;
        }
        if (!json_is_number(j))
            return EXPECTED("a number");
        rc = avro_value_set_double(v, json_number_value(j));
        break;
    case AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            return EXPECTED("true or false");
        rc = avro_value_set_boolean(v, json_is_true(j));
        break;
    case AVRO_NULL:
        if (!json_is_null(j))
            return EXPECTED("null");
        rc = avro_value_set_null(v);
        break;
    case AVRO_ENUM: {
        int sym;
        if (!json_is_string(j) ||
            (sym = avro_schema_enum_get_by_name(schema, json_string_value(j))) < 0)
            return EXPECTED("an enum symbol");
        rc = avro_value_set_enum(v, sym);
        break;
    }
    case AVRO_UNION: {
        size_t branches = avro_schema_union_size(schema);
        avro_value_t branch;
        /* {"type": value}: Avro's JSON encoding names the branch. */
        if (json_is_object(j) && json_object_size(j) == 1) {
            const char *name = json_object_iter_key(json_object_iter(j));
            int disc;
            avro_schema_t bs = avro_schema_union_branch_by_name(schema, &disc, name);
            if (bs) {
                if (avro_value_set_branch(v, disc, &branch))
                    return ev__fail(errstr, n, EV_ERR_INVALID, "%s: %s", path_str(p),
                                    avro_strerror());
                return from_json(&branch, json_object_iter_value(json_object_iter(j)), p, errstr,
                                 n);
            }
        }
        /* A plain value: the first branch that takes it. */
        for (size_t i = 0; i < branches; i++) {
            if (avro_value_set_branch(v, (int)i, &branch))
                continue;
            if (from_json(&branch, j, p, NULL, 0) == 0)
                return 0;
        }
        return EXPECTED("a value of one of the union's types");
    }
    case AVRO_RECORD: {
        size_t count = avro_schema_record_size(schema);
        const char *key;
        json_t *val;
        if (!json_is_object(j))
            return EXPECTED("an object");
        json_object_foreach(j, key, val)
        {
            if (avro_schema_record_field_get_index(schema, key) < 0) {
                size_t old = path_push_field(p, key);
                rc = ev__fail(errstr, n, EV_ERR_INVALID, "%s: no such field in %s", path_str(p),
                              avro_schema_name(schema));
                path_pop(p, old);
                return rc;
            }
        }
        for (size_t i = 0; i < count; i++) {
            avro_value_t child;
            const char *name;
            avro_value_get_by_index(v, i, &child, &name);
            size_t old = path_push_field(p, name);
            json_t *cj = json_object_get(j, name);
            rc = cj ? from_json(&child, cj, p, errstr, n)
                    : field_default(&child, schema, i, p, errstr, n);
            path_pop(p, old);
            if (rc)
                return rc;
        }
        return 0;
    }
    case AVRO_MAP: {
        const char *key;
        json_t *val;
        if (!json_is_object(j))
            return EXPECTED("an object");
        json_object_foreach(j, key, val)
        {
            avro_value_t child;
            size_t old = path_push_field(p, key);
            rc = avro_value_add(v, key, &child, NULL, NULL);
            rc = rc ? ev__fail(errstr, n, EV_ERR_INVALID, "%s: %s", path_str(p), avro_strerror())
                    : from_json(&child, val, p, errstr, n);
            path_pop(p, old);
            if (rc)
                return rc;
        }
        return 0;
    }
    case AVRO_ARRAY: {
        size_t i;
        json_t *val;
        if (!json_is_array(j))
            return EXPECTED("an array");
        json_array_foreach(j, i, val)
        {
            avro_value_t child;
            size_t old = path_push_index(p, i);
            rc = avro_value_append(v, &child, NULL);
            rc = rc ? ev__fail(errstr, n, EV_ERR_INVALID, "%s: %s", path_str(p), avro_strerror())
                    : from_json(&child, val, p, errstr, n);
            path_pop(p, old);
            if (rc)
                return rc;
        }
        return 0;
    }
    default: return ev__fail(errstr, n, EV_ERR_INVALID, "%s: unsupported Avro type", path_str(p));
    }
    if (rc)
        return ev__fail(errstr, n, EV_ERR_INVALID, "%s: %s", path_str(p), avro_strerror());
    return 0;
}

int ev_value_from_json(avro_value_t *value, json_t *json, char *errstr, size_t errstr_size)
{
    path p = {.len = 0};
    p.text[0] = '\0';
    avro_value_reset(value);
    return from_json(value, json, &p, errstr, errstr_size);
}

int ev__value_from_json_old(avro_value_t *value, json_t *json, char *errstr, size_t errstr_size)
{
    path p = {.len = 0, .null_is_nan = 1};
    p.text[0] = '\0';
    avro_value_reset(value);
    return from_json(value, json, &p, errstr, errstr_size);
}
