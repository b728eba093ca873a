/* reduce.c — the pure reducers: node, device and session state folded from
 * events, idempotent by event id. Services and msrs-replay share them, so a
 * state rebuilt from the log is the state the services held. */
#include "internal.h"

#include <string.h>

/* The latest ClockOffsetMeasured (L_CLOCK) and DeviceStatus (L_STATUS) of
 * a device, kept as the record's frame and turned into JSON only when the
 * state is read. They are most of a log's state events (a clock round every
 * few seconds per device) and only the last of each shows in the state, so
 * the fold copies ~100 bytes for them instead of building JSON. */
enum { L_CLOCK, L_STATUS };

typedef struct latest {
    char *device_id;
    unsigned char *frame[2];
    size_t len[2], cap[2];
    int64_t at_ns[2];
    int64_t rounds; /* clock rounds folded */
    int dirty;      /* bit per kind: a frame newer than the JSON */
} latest;

typedef struct latest_table {
    latest **items; /* stable pointers */
    size_t count, cap;
    latest **index; /* open addressing by device id hash */
    size_t index_cap;
    latest **dirty;
    size_t dirty_count, dirty_cap;
    ev_codec *codec; /* reads frames (and frames in-memory events) */
    const ev_schema *kind_schema[2]; /* ClockOffsetMeasured, DeviceStatus */
} latest_table;

struct ev_state {
    json_t *nodes, *devices, *sessions;
    uint64_t *seen; /* open-addressing set of event-id hashes; 0 = empty */
    size_t seen_cap, seen_count;
    int64_t applied, duplicates, ignored;
    latest_table *latest; /* a pointer: ev_state_to_json (const) materialises it */
};

ev_state *ev_state_new(void)
{
    ev_state *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->nodes = json_object();
    s->devices = json_object();
    s->sessions = json_object();
    s->seen_cap = 1024;
    s->seen = calloc(s->seen_cap, sizeof(*s->seen));
    s->latest = calloc(1, sizeof(*s->latest));
    if (s->latest) {
        s->latest->codec = ev_codec_new();
        s->latest->kind_schema[L_CLOCK] = ev_schema_by_name("ClockOffsetMeasured");
        s->latest->kind_schema[L_STATUS] = ev_schema_by_name("DeviceStatus");
    }
    if (!s->nodes || !s->devices || !s->sessions || !s->seen || !s->latest || !s->latest->codec) {
        ev_state_destroy(s);
        return NULL;
    }
    return s;
}

void ev_state_destroy(ev_state *s)
{
    if (!s)
        return;
    json_decref(s->nodes);
    json_decref(s->devices);
    json_decref(s->sessions);
    free(s->seen);
    if (s->latest) {
        for (size_t i = 0; i < s->latest->count; i++) {
            latest *l = s->latest->items[i];
            free(l->device_id);
            free(l->frame[0]);
            free(l->frame[1]);
            free(l);
        }
        free(s->latest->items);
        free(s->latest->index);
        free(s->latest->dirty);
        ev_codec_destroy(s->latest->codec);
        free(s->latest);
    }
    free(s);
}

/* 64-bit hash of an event id, 8 bytes a step with a murmur3 finaliser
 * (every event of a fold hashes its id); never 0 (0 marks an empty slot). */
static uint64_t id_hash(const char *id)
{
    size_t n = strlen(id), i = 0;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, id + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, id + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h ? h : 1;
}

static int seen_slot(uint64_t *set, size_t cap, uint64_t h)
{
    size_t i = (size_t)(h & (cap - 1));
    while (set[i] && set[i] != h)
        i = (i + 1) & (cap - 1);
    return (int)i;
}

/* Returns 1 when id was seen before; otherwise remembers it, returns 0. */
static int seen_check_add(ev_state *s, const char *id)
{
    uint64_t h = id_hash(id);
    size_t i = (size_t)seen_slot(s->seen, s->seen_cap, h);
    if (s->seen[i] == h)
        return 1;
    if ((s->seen_count + 1) * 2 > s->seen_cap) {
        size_t cap = s->seen_cap * 2;
        uint64_t *n = calloc(cap, sizeof(*n));
        if (!n)
            return -1;
        for (size_t k = 0; k < s->seen_cap; k++)
            if (s->seen[k])
                n[seen_slot(n, cap, s->seen[k])] = s->seen[k];
        free(s->seen);
        s->seen = n;
        s->seen_cap = cap;
        i = (size_t)seen_slot(s->seen, s->seen_cap, h);
    }
    s->seen[i] = h;
    s->seen_count++;
    return 0;
}

/* The aggregate object for key in map, created empty when absent. */
static json_t *aggregate(json_t *map, const char *key)
{
    json_t *a = json_object_get(map, key);
    if (!a) {
        a = json_object();
        json_object_set_new(map, key, a);
    }
    return a;
}

/* Copies every field of the event's record except skip into a. */
static void merge(json_t *a, json_t *record, const char *skip)
{
    const char *k;
    json_t *v;
    json_object_foreach(record, k, v) if (!skip || strcmp(k, skip) != 0) json_object_set(a, k, v);
}

static void set_str(json_t *a, const char *k, const char *v) { json_object_set_new(a, k, json_string(v)); }
static void set_int(json_t *a, const char *k, int64_t v) { json_object_set_new(a, k, json_integer(v)); }

static const char *str(json_t *record, const char *k)
{
    const char *v = json_string_value(json_object_get(record, k));
    return v ? v : "";
}

static void reduce_node(ev_state *s, const char *type, json_t *r, int64_t t)
{
    json_t *n = aggregate(s->nodes, str(r, "node_id"));
    if (strcmp(type, "NodeRegistered") == 0) {
        merge(n, r, "node_id");
        set_str(n, "state", "registered");
        set_int(n, "registered_at_ns", t);
        set_int(n, "last_seen_ns", t);
    } else if (strcmp(type, "NodePlanned") == 0) {
        merge(n, r, "node_id");
        if (strcmp(str(n, "state"), "up") != 0)
            set_str(n, "state", "planned");
    } else if (strcmp(type, "NodeHeartbeat") == 0) {
        merge(n, r, "node_id");
        set_str(n, "state", "up");
        set_int(n, "last_seen_ns", t);
    } else if (strcmp(type, "NodeExpired") == 0) {
        const char *node_id = str(r, "node_id"), *k;
        json_t *d;
        set_str(n, "state", "expired");
        set_int(n, "expired_at_ns", t);
        /* Its devices leave the pool. */
        json_object_foreach(s->devices, k, d) if (strcmp(str(d, "node_id"), node_id) == 0 &&
                                                  json_is_true(json_object_get(d, "connected")))
        {
            json_object_set_new(d, "connected", json_false());
            set_str(d, "disconnect_reason", "node_expired");
        }
    }
}

static void reduce_device(ev_state *s, const char *type, json_t *r, int64_t t)
{
    json_t *d = aggregate(s->devices, str(r, "device_id"));
    if (strcmp(type, "DeviceRegistered") == 0) {
        merge(d, r, "device_id");
        json_object_set_new(d, "connected", json_true());
        json_object_del(d, "disconnect_reason");
        set_int(d, "registered_at_ns", t);
    } else if (strcmp(type, "DeviceDisconnected") == 0) {
        json_object_set_new(d, "connected", json_false());
        set_str(d, "disconnect_reason", str(r, "reason"));
    }
}

static void reduce_session(ev_state *s, const char *type, json_t *r, int64_t t)
{
    json_t *x = aggregate(s->sessions, str(r, "session_id"));
    if (strcmp(type, "CollectionRequested") == 0) {
        merge(x, r, "session_id");
        set_str(x, "state", "requested");
        set_int(x, "requested_at_ns", t);
        set_int(x, "marks", 0);
    } else if (strcmp(type, "SynchronizationCompleted") == 0) {
        json_t *sync = json_object();
        merge(sync, r, "session_id");
        set_int(sync, "at_ns", t);
        json_object_set_new(x, "sync", sync);
        if (strcmp(str(x, "state"), "requested") == 0 || !json_object_get(x, "state"))
            set_str(x, "state", "synchronized");
    } else if (strcmp(type, "CollectionStarted") == 0) {
        set_int(x, "start_at_ns", json_integer_value(json_object_get(r, "start_at_ns")));
        json_object_set(x, "device_ids", json_object_get(r, "device_ids"));
        if (strcmp(str(x, "state"), "stopped") != 0)
            set_str(x, "state", "recording");
    } else if (strcmp(type, "SyncMark") == 0) {
        set_int(x, "marks", json_integer_value(json_object_get(x, "marks")) + 1);
        set_str(x, "last_mark", str(r, "label"));
    } else if (strcmp(type, "CollectionStopRequested") == 0) {
        json_t *q = json_object();
        merge(q, r, "session_id");
        set_int(q, "at_ns", t);
        json_object_set_new(x, "stop_requested", q);
    } else if (strcmp(type, "RecordingReport") == 0) {
        json_t *rep = json_object();
        merge(rep, r, "session_id");
        json_object_del(rep, "node_id");
        json_object_set_new(aggregate(x, "reports"), str(r, "node_id"), rep);
    } else if (strcmp(type, "CollectionStopped") == 0) {
        merge(x, r, "session_id");
        set_str(x, "state", "stopped");
    }
}

/* Commands are keyed by node; what they did to a session is session state. */
static void reduce_command(ev_state *s, const char *type, json_t *r, int64_t t)
{
    (void)t;
    if (strcmp(type, "StartRecording") != 0 && strcmp(type, "StopRecording") != 0)
        return;
    json_t *x = aggregate(s->sessions, str(r, "session_id"));
    int start = type[2] == 'a';
    json_object_set(aggregate(x, start ? "start_commands" : "stop_commands"), str(r, "node_id"),
                    json_object_get(r, start ? "start_at_ns" : "stop_at_ns"));
    if (!start) {
        json_object_set(x, "stop_at_ns", json_object_get(r, "stop_at_ns"));
        if (strcmp(str(x, "state"), "recording") == 0)
            set_str(x, "state", "stopping");
    }
}

/* The device id of a validated frame whose first field is the id string. */
static int frame_device_id(const unsigned char *f, size_t len, const char **id, size_t *id_len)
{
    const unsigned char *p = f + EV_FRAME_HEADER_LEN, *end = f + len;
    uint64_t u = 0;
    for (int shift = 0; p < end && shift < 64; shift += 7) {
        u |= (uint64_t)(*p & 0x7f) << shift;
        if (!(*p++ & 0x80))
            break;
    }
    int64_t n = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    if (n < 0 || n > end - p)
        return EV_ERR_CORRUPT;
    *id = (const char *)p;
    *id_len = (size_t)n;
    return 0;
}

static uint64_t hash_n(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return h;
}

static latest **latest_slot(latest_table *t, const char *id, size_t n)
{
    size_t i = (size_t)hash_n(id, n) & (t->index_cap - 1);
    while (t->index[i] && (strncmp(t->index[i]->device_id, id, n) != 0 || t->index[i]->device_id[n]))
        i = (i + 1) & (t->index_cap - 1);
    return &t->index[i];
}

static latest *latest_get(latest_table *t, const char *id, size_t n)
{
    if ((t->count + 1) * 2 > t->index_cap) {
        size_t cap = t->index_cap ? t->index_cap * 2 : 256;
        latest **idx = calloc(cap, sizeof(*idx));
        if (!idx)
            return NULL;
        free(t->index);
        t->index = idx;
        t->index_cap = cap;
        for (size_t k = 0; k < t->count; k++)
            *latest_slot(t, t->items[k]->device_id, strlen(t->items[k]->device_id)) = t->items[k];
    }
    latest **slot = latest_slot(t, id, n);
    if (*slot)
        return *slot;
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        latest **items = realloc(t->items, cap * sizeof(*items));
        if (!items)
            return NULL;
        t->items = items;
        t->cap = cap;
    }
    latest *l = calloc(1, sizeof(*l));
    if (!l || !(l->device_id = strndup(id, n))) {
        free(l);
        return NULL;
    }
    t->items[t->count++] = l;
    return *slot = l;
}

/* Keeps ev as the device's latest of its kind. */
static int latest_put(latest_table *t, int kind, const ev_event *ev, char *errstr, size_t n)
{
    const void *frame;
    size_t len;
    const char *id;
    size_t id_len;
    int rc;
    if (ev->msg) {
        frame = ev->msg->value;
        len = ev->msg->value_len;
    } else if ((rc = ev_codec_encode(t->codec, ev->schema, ev->value, &frame, &len, errstr, n))) {
        return rc;
    }
    if (frame_device_id(frame, len, &id, &id_len))
        return ev__fail(errstr, n, EV_ERR_CORRUPT, "state: %s without a device_id",
                        ev_schema_short_name(ev->schema));
    latest *l = latest_get(t, id, id_len);
    if (!l || (t->dirty_count == t->dirty_cap &&
               !(t->dirty = realloc(t->dirty, (t->dirty_cap = t->dirty_cap * 2 + 64) * sizeof(*t->dirty)))))
        return ev__fail(errstr, n, EV_ERR_NOMEM, "state: out of memory");
    if (len > l->cap[kind]) {
        unsigned char *f = realloc(l->frame[kind], len);
        if (!f)
            return ev__fail(errstr, n, EV_ERR_NOMEM, "state: out of memory");
        l->frame[kind] = f;
        l->cap[kind] = len;
    }
    memcpy(l->frame[kind], frame, len);
    l->len[kind] = len;
    l->at_ns[kind] = ev->time_ns;
    l->rounds += kind == L_CLOCK;
    if (!l->dirty)
        t->dirty[t->dirty_count++] = l;
    l->dirty |= 1 << kind;
    return 0;
}

/* The latest frames into the devices' JSON: "clock" (with the rounds
 * folded and measured_at_ns) and "status" (with at_ns). */
static void latest_materialise(latest_table *t, json_t *devices)
{
    static const char *const key[2] = {"clock", "status"}, *const at[2] = {"measured_at_ns", "at_ns"};
    for (size_t i = 0; i < t->dirty_count; i++) {
        latest *l = t->dirty[i];
        for (int kind = 0; kind < 2; kind++) {
            const ev_schema *s;
            avro_value_t *v;
            json_t *r = NULL;
            if (!(l->dirty & (1 << kind)) || ev_codec_check(l->frame[kind], l->len[kind], &s, NULL, 0) ||
                ev__codec_read(t->codec, s, l->frame[kind], l->len[kind], &v, NULL, 0) ||
                ev_value_to_json(v, &r, NULL, 0))
                continue; /* checked when it was folded: cannot fail */
            json_object_del(r, "device_id");
            json_object_del(r, "node_id");
            if (kind == L_CLOCK)
                set_int(r, "rounds", l->rounds);
            set_int(r, at[kind], l->at_ns[kind]);
            json_object_set_new(aggregate(devices, l->device_id), key[kind], r);
        }
        l->dirty = 0;
    }
    t->dirty_count = 0;
}

int ev_state_apply(ev_state *s, const ev_event *ev, char *errstr, size_t errstr_size)
{
    const char *topic = ev_schema_topic(ev->schema);
    const char *type = ev_schema_short_name(ev->schema);
    json_t *record = NULL;
    int rc;
    /* the bulk of the events first: pointer compares, no strcmp */
    int kind = ev->schema == s->latest->kind_schema[L_CLOCK]    ? L_CLOCK
               : ev->schema == s->latest->kind_schema[L_STATUS] ? L_STATUS
                                                                : -1;

    if (kind < 0 && strcmp(topic, "nodes") != 0 && strcmp(topic, "devices") != 0 &&
        strcmp(topic, "sessions") != 0 &&
        (strcmp(topic, "commands") != 0 || strcmp(type, "SyncNow") == 0)) {
        s->ignored++;
        return 1;
    }
    rc = seen_check_add(s, ev->id);
    if (rc < 0)
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "state: out of memory");
    if (rc == 1) {
        s->duplicates++;
        return 1;
    }
    if (kind >= 0) {
        if ((rc = latest_put(s->latest, kind, ev, errstr, errstr_size)))
            return rc;
        s->applied++;
        return 0;
    }
    const avro_value_t *value = ev->value;
    avro_value_t *read = NULL;
    if (!value) { /* peeked (ev_event_peek): read it now */
        if (!ev->msg)
            return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "state: event without a value");
        if ((rc = ev__codec_read(s->latest->codec, ev->schema, ev->msg->value, ev->msg->value_len,
                                 &read, errstr, errstr_size)))
            return rc;
        value = read;
    }
    rc = ev_value_to_json(value, &record, errstr, errstr_size);
    if (rc)
        return rc;
    if (strcmp(topic, "nodes") == 0)
        reduce_node(s, type, record, ev->time_ns);
    else if (strcmp(topic, "devices") == 0)
        reduce_device(s, type, record, ev->time_ns);
    else if (strcmp(topic, "commands") == 0)
        reduce_command(s, type, record, ev->time_ns);
    else
        reduce_session(s, type, record, ev->time_ns);
    json_decref(record);
    s->applied++;
    return 0;
}

json_t *ev_state_to_json(const ev_state *s)
{
    latest_materialise(s->latest, s->devices);
    return json_pack("{s:O, s:O, s:O, s:{s:I, s:I, s:I}}", "nodes", s->nodes, "devices",
                     s->devices, "sessions", s->sessions, "events", "applied",
                     (json_int_t)s->applied, "duplicates", (json_int_t)s->duplicates, "ignored",
                     (json_int_t)s->ignored);
}
