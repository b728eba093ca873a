/* offsets.c — what a reader has read of each topic and partition, and the
 * holes in it (ev.h, "offsets"): our logs number a partition's records
 * without gaps, so a skipped offset is a lost record. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct position {
    char topic[256];
    int32_t partition;
    int64_t next, marked;
} position;

struct ev_offsets {
    int from_start;
    position *pos;
    size_t count, last; /* last: the entry of the previous record (a cache) */
};

ev_offsets *ev_offsets_new(int from_start)
{
    ev_offsets *o = calloc(1, sizeof(*o));
    if (o)
        o->from_start = from_start;
    return o;
}

void ev_offsets_destroy(ev_offsets *o)
{
    if (!o)
        return;
    free(o->pos);
    free(o);
}

/* The entry of m's topic and partition, added if new; NULL when out of
 * memory. */
static position *entry(ev_offsets *o, const ev_msg *m)
{
    position *e = o->count ? &o->pos[o->last] : NULL;
    if (e && e->partition == m->partition && strcmp(e->topic, m->topic) == 0)
        return e;
    for (size_t i = 0; i < o->count; i++)
        if (o->pos[i].partition == m->partition && strcmp(o->pos[i].topic, m->topic) == 0) {
            o->last = i;
            return &o->pos[i];
        }
    position *grown = realloc(o->pos, (o->count + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    o->pos = grown;
    e = &o->pos[o->count];
    memset(e, 0, sizeof(*e));
    snprintf(e->topic, sizeof(e->topic), "%s", m->topic);
    e->partition = m->partition;
    e->next = o->from_start ? 0 : m->offset;
    o->last = o->count++;
    return e;
}

int64_t ev_offsets_see(ev_offsets *o, const ev_msg *m, int64_t *first_missing)
{
    position *e = entry(o, m);
    if (!e)
        return EV_ERR_NOMEM;
    int64_t missing = m->offset > e->next ? m->offset - e->next : 0;
    if (first_missing)
        *first_missing = e->next;
    if (m->offset >= e->next)
        e->next = m->offset + 1;
    return missing;
}

int ev_offsets_mark(ev_offsets *o, const ev_msg *m)
{
    position *e = entry(o, m);
    if (!e)
        return EV_ERR_NOMEM;
    e->marked = m->offset + 1;
    return 0;
}

json_t *ev_offsets_marked(const ev_offsets *o)
{
    json_t *pos = json_object();
    for (size_t i = 0; i < o->count; i++) {
        char part[16];
        json_t *t = json_object_get(pos, o->pos[i].topic);
        if (!t)
            json_object_set_new(pos, o->pos[i].topic, t = json_object());
        snprintf(part, sizeof(part), "%d", (int)o->pos[i].partition);
        json_object_set_new(t, part, json_integer(o->pos[i].marked));
    }
    return pos;
}
