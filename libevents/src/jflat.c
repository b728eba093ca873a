/* jflat.c — one JSON object's members from yajl's events, no tree (see
 * ev.h, "flat JSON"). yajl checks the JSON (strict: no comments, no
 * trailing text, UTF-8); the callbacks below only keep what two levels
 * hold. */
#include "internal.h"

#include <string.h>
#include <yajl/yajl_parse.h>

/* Nesting below which nothing is kept: the top object is depth 1, objects
 * that are its members' values depth 2. */
#define KEPT_DEPTH 2

typedef struct reader {
    ev_jflat *j;
    int depth;
    int holder[KEPT_DEPTH + 1]; /* per depth: the member index of its object (-1: top),
                                   -2 when that container is not kept (an array, or deeper) */
    const char *key;            /* the pending key of the container at depth */
    int too_many;
    int not_object;
    int nul; /* a \u0000 in a key or string: refused, as jansson does */
} reader;

/* A NUL-terminated copy in j's text, or NULL when it is too long. */
static const char *keep_text(ev_jflat *j, const unsigned char *s, size_t len)
{
    if (len > EV_JFLAT_STR_MAX || len + 1 > sizeof(j->text) - j->text_used)
        return NULL;
    char *out = j->text + j->text_used;
    memcpy(out, s, len);
    out[len] = '\0';
    j->text_used += len + 1;
    return out;
}

/* A value begins: a new member when its container is kept. Returns the
 * member, or NULL when not kept (or on overflow, which stops the parse). */
static ev_jmember *member(reader *r, ev_jkind kind)
{
    if (r->depth == 0) {
        if (kind != EV_JOBJECT)
            r->not_object = 1;
        return NULL;
    }
    if (r->depth > KEPT_DEPTH || r->holder[r->depth] == -2)
        return NULL;
    int holder = r->holder[r->depth];
    if (r->j->count == EV_JFLAT_MAX) {
        r->too_many = 1;
        return NULL;
    }
    for (int i = 0; i < r->j->count; i++) {
        const ev_jmember *o = &r->j->m[i];
        if (o->parent == holder && o->key && r->key && strcmp(o->key, r->key) == 0) {
            r->j->duplicates++;
            break;
        }
    }
    ev_jmember *m = &r->j->m[r->j->count++];
    memset(m, 0, sizeof(*m));
    m->key = r->key;
    m->parent = holder;
    m->kind = kind;
    return m;
}

/* yajl's callbacks: 0 cancels the parse (too many members, a top-level
 * value that is not an object). */
static int go_on(const reader *r)
{
    return !r->too_many && !r->not_object && !r->nul;
}

static int on_null(void *ctx)
{
    member(ctx, EV_JNULL);
    return go_on(ctx);
}

static int on_boolean(void *ctx, int b)
{
    member(ctx, b ? EV_JTRUE : EV_JFALSE);
    return go_on(ctx);
}

static int on_integer(void *ctx, long long x)
{
    ev_jmember *m = member(ctx, EV_JINTEGER);
    if (m)
        m->integer = x;
    return go_on(ctx);
}

static int on_double(void *ctx, double x)
{
    ev_jmember *m = member(ctx, EV_JREAL);
    if (m)
        m->real = x;
    return go_on(ctx);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    reader *r = ctx;
    if (memchr(s, 0, len)) {
        r->nul = 1;
        return 0;
    }
    ev_jmember *m = member(r, EV_JSTRING);
    if (m) {
        m->str = keep_text(r->j, s, len);
        m->len = len;
    }
    return go_on(r);
}

static int open_container(reader *r, ev_jkind kind)
{
    ev_jmember *m = member(r, kind);
    if (!go_on(r))
        return 0;
    r->depth++;
    if (r->depth <= KEPT_DEPTH)
        r->holder[r->depth] =
            r->depth == 1 ? -1 : (m && kind == EV_JOBJECT ? (int)(m - r->j->m) : -2);
    r->key = NULL;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, EV_JOBJECT);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, EV_JARRAY);
}

static int on_end(void *ctx)
{
    reader *r = ctx;
    r->depth--;
    r->key = NULL;
    return 1;
}

static int on_key(void *ctx, const unsigned char *key, size_t len)
{
    reader *r = ctx;
    if (memchr(key, 0, len)) {
        r->nul = 1;
        return 0;
    }
    if (r->depth <= KEPT_DEPTH && r->holder[r->depth] != -2)
        r->key = keep_text(r->j, key, len);
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_integer = on_integer,
    .yajl_double = on_double,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

int ev_jflat_read(ev_jflat *j, const void *text, size_t len, char *errstr, size_t errstr_size)
{
    reader r = {.j = j};
    j->count = j->duplicates = 0;
    j->text_used = 0;
    yajl_handle h = yajl_alloc(&callbacks, NULL, &r);
    if (!h)
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "JSON: out of memory");
    yajl_status st = yajl_parse(h, text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    int rc = 0;
    if (r.too_many) {
        rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                      "JSON: more than %d members in the object and the objects it holds",
                      EV_JFLAT_MAX);
    } else if (r.not_object) {
        rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID, "JSON: expected an object");
    } else if (r.nul) {
        rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                      "JSON: at byte %zu: \\u0000 is not allowed in a string",
                      yajl_get_bytes_consumed(h));
    } else if (st != yajl_status_ok) {
        unsigned char *why = yajl_get_error(h, 0, NULL, 0);
        /* yajl's own words end in a newline */
        size_t n = why ? strcspn((const char *)why, "\n") : 0;
        rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID, "JSON: at byte %zu: %.*s",
                      yajl_get_bytes_consumed(h), (int)n, why ? (const char *)why : "malformed");
        yajl_free_error(h, why);
    }
    yajl_free(h);
    if (rc)
        j->count = 0;
    return rc;
}

const ev_jmember *ev_jflat_get(const ev_jflat *j, int parent, const char *key)
{
    for (int i = j->count - 1; i >= 0; i--) {
        const ev_jmember *m = &j->m[i];
        if (m->parent == parent && m->key && strcmp(m->key, key) == 0)
            return m;
    }
    return NULL;
}

int ev_jflat_object(const ev_jflat *j, int parent, const char *key)
{
    const ev_jmember *m = ev_jflat_get(j, parent, key);
    return m && m->kind == EV_JOBJECT ? (int)(m - j->m) : -2;
}

const char *ev_jflat_string(const ev_jflat *j, int parent, const char *key)
{
    const ev_jmember *m = ev_jflat_get(j, parent, key);
    return m && m->kind == EV_JSTRING ? m->str : NULL;
}

int ev_jflat_integer(const ev_jflat *j, int parent, const char *key, int64_t *out)
{
    const ev_jmember *m = ev_jflat_get(j, parent, key);
    if (!m || m->kind != EV_JINTEGER)
        return 0;
    *out = m->integer;
    return 1;
}
