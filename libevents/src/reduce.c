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

static void set_str(json_t *a, const char *k, const char *v)
{
    json_object_set_new(a, k, json_string(v));
}
static void set_int(json_t *a, const char *k, int64_t v)
{
    json_object_set_new(a, k, json_integer(v));
}

static const char *str(json_t *record, const char *k)
{
    const char *v = json_string_value(json_object_get(record, k));
    return v ? v : "";
}

/* A heartbeat at t: folds the interval since the node was last heard into
 * its running mean and mean deviation (gains 1/8 and 1/4, as TCP's RTT
 * estimator), the history the failure detector reads (noderule.c). */
static void fold_interval(json_t *n, int64_t t)
{
    int64_t last = json_integer_value(json_object_get(n, "last_seen_ns")), x = t - last;
    if (!last || x <= 0)
        return;
    json_t *m = json_object_get(n, "hb_mean_ns");
    int64_t mean = json_integer_value(m), dev = json_integer_value(json_object_get(n, "hb_dev_ns"));
    if (!m) {
        mean = x;
        dev = x / 2;
    } else {
        int64_t err = x - mean;
        mean += err / 8;
        dev += ((err < 0 ? -err : err) - dev) / 4;
    }
    set_int(n, "hb_mean_ns", mean);
    set_int(n, "hb_dev_ns", dev);
}

/* A node that registers again after it expired, with the incarnation it
 * had (the same process: its heartbeats came late), gets back the devices
 * its expiry took out of the pool, without a record per device. */
static void revive_devices(ev_state *s, const char *node_id)
{
    const char *k;
    json_t *d;
    json_object_foreach(s->devices, k,
                        d) if (strcmp(str(d, "node_id"), node_id) == 0 &&
                               strcmp(str(d, "disconnect_reason"), "node_expired") == 0)
    {
        json_object_set_new(d, "connected", json_true());
        json_object_del(d, "disconnect_reason");
    }
}

static void reduce_node(ev_state *s, int32_t type, json_t *r, int64_t t)
{
    json_t *n = aggregate(s->nodes, str(r, "node_id"));
    switch (type) {
    case EV_SCHEMA_NODE_REGISTERED: {
        const char *was = str(n, "incarnation"), *is = str(r, "incarnation");
        int back = strcmp(str(n, "state"), "expired") == 0 && *is && strcmp(was, is) == 0;
        if (strcmp(was, is) != 0) { /* a new process: its heartbeat history starts again */
            json_object_del(n, "hb_mean_ns");
            json_object_del(n, "hb_dev_ns");
        }
        merge(n, r, "node_id");
        set_str(n, "state", "registered");
        set_int(n, "registered_at_ns", t);
        set_int(n, "last_seen_ns", t);
        if (back)
            revive_devices(s, str(r, "node_id"));
        break;
    }
    case EV_SCHEMA_NODE_PLANNED:
        merge(n, r, "node_id");
        if (strcmp(str(n, "state"), "up") != 0)
            set_str(n, "state", "planned");
        break;
    case EV_SCHEMA_NODE_HEARTBEAT:
        if (strcmp(str(n, "state"), "up") == 0)
            fold_interval(n, t);
        merge(n, r, "node_id");
        set_str(n, "state", "up");
        set_int(n, "last_seen_ns", t);
        break;
    case EV_SCHEMA_NODE_EXPIRED: {
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
        break;
    }
    }
}

static void reduce_device(ev_state *s, int32_t type, json_t *r, int64_t t)
{
    json_t *d = aggregate(s->devices, str(r, "device_id"));
    switch (type) {
    case EV_SCHEMA_DEVICE_REGISTERED:
        merge(d, r, "device_id");
        json_object_set_new(d, "connected", json_true());
        json_object_del(d, "disconnect_reason");
        set_int(d, "registered_at_ns", t);
        break;
    case EV_SCHEMA_DEVICE_DISCONNECTED:
        json_object_set_new(d, "connected", json_false());
        set_str(d, "disconnect_reason", str(r, "reason"));
        break;
    }
}

static void reduce_session(ev_state *s, int32_t type, json_t *r, int64_t t)
{
    json_t *x = aggregate(s->sessions, str(r, "session_id"));
    switch (type) {
    case EV_SCHEMA_COLLECTION_REQUESTED:
        /* the first request names a session; a later one for the same id
         * (two operators, two gateways, at once) changes nothing: it
         * must not reset a session that is synchronising or recording */
        if (json_object_get(x, "requested_at_ns"))
            break;
        merge(x, r, "session_id");
        set_str(x, "state", "requested");
        set_int(x, "requested_at_ns", t);
        set_int(x, "marks", 0);
        break;
    case EV_SCHEMA_SYNCHRONIZATION_COMPLETED: {
        json_t *sync = json_object();
        merge(sync, r, "session_id");
        set_int(sync, "at_ns", t);
        json_object_set_new(x, "sync", sync);
        if (strcmp(str(x, "state"), "requested") == 0 || !json_object_get(x, "state"))
            set_str(x, "state", "synchronized");
        break;
    }
    case EV_SCHEMA_COLLECTION_STARTED:
        set_int(x, "start_at_ns", json_integer_value(json_object_get(r, "start_at_ns")));
        json_object_set(x, "device_ids", json_object_get(r, "device_ids"));
        /* a stop command already folded (the commands topic read before
         * the sessions topic, as a replay with limits may): stopping, in
         * whichever order the two topics are read */
        if (strcmp(str(x, "state"), "stopped") != 0)
            set_str(x, "state", json_object_get(x, "stop_at_ns") ? "stopping" : "recording");
        break;
    case EV_SCHEMA_SYNC_MARK:
        set_int(x, "marks", json_integer_value(json_object_get(x, "marks")) + 1);
        set_str(x, "last_mark", str(r, "label"));
        break;
    case EV_SCHEMA_COLLECTION_STOP_REQUESTED: {
        json_t *q = json_object();
        merge(q, r, "session_id");
        set_int(q, "at_ns", t);
        json_object_set_new(x, "stop_requested", q);
        break;
    }
    case EV_SCHEMA_RECORDING_REPORT: {
        json_t *rep = json_object();
        merge(rep, r, "session_id");
        json_object_del(rep, "node_id");
        /* A report after CollectionStopped (a node whose log was behind
         * past collect.report_timeout_ms) still counts: its streams join
         * the stopped session's and the node is listed as late. */
        if (strcmp(str(x, "state"), "stopped") == 0 &&
            !json_object_get(json_object_get(x, "reports"), str(r, "node_id"))) {
            json_t *streams = json_object_get(x, "streams");
            if (!json_is_array(streams)) {
                streams = json_array();
                json_object_set_new(x, "streams", streams);
            }
            json_array_extend(streams, json_object_get(r, "streams"));
            json_t *late = json_object_get(x, "late_reports");
            if (!late) {
                late = json_array();
                json_object_set_new(x, "late_reports", late);
            }
            json_array_append_new(late, json_string(str(r, "node_id")));
        }
        json_object_set_new(aggregate(x, "reports"), str(r, "node_id"), rep);
        break;
    }
    case EV_SCHEMA_COLLECTION_STOPPED:
        merge(x, r, "session_id");
        set_str(x, "state", "stopped");
        break;
    }
}

/* Commands are keyed by node; what they did to a session is session state. */
static void reduce_command(ev_state *s, int32_t type, json_t *r, int64_t t)
{
    (void)t;
    json_t *x = aggregate(s->sessions, str(r, "session_id"));
    int start = type == EV_SCHEMA_START_RECORDING;
    json_object_set(aggregate(x, start ? "start_commands" : "stop_commands"), str(r, "node_id"),
                    json_object_get(r, start ? "start_at_ns" : "stop_at_ns"));
    if (!start) {
        json_object_set(x, "stop_at_ns", json_object_get(r, "stop_at_ns"));
        if (strcmp(str(x, "state"), "recording") == 0)
            set_str(x, "state", "stopping");
    }
}

/* The reducer of each record type that changes the state, by schema id;
 * NULL for the rest (ignored). ClockOffsetMeasured and DeviceStatus are
 * kept as frames (latest_put). */
typedef void (*reducer)(ev_state *s, int32_t type, json_t *record, int64_t time_ns);

static reducer reducer_of(int32_t id)
{
    switch (id) {
    case EV_SCHEMA_NODE_REGISTERED:
    case EV_SCHEMA_NODE_PLANNED:
    case EV_SCHEMA_NODE_HEARTBEAT:
    case EV_SCHEMA_NODE_EXPIRED: return reduce_node;
    case EV_SCHEMA_DEVICE_REGISTERED:
    case EV_SCHEMA_DEVICE_DISCONNECTED: return reduce_device;
    case EV_SCHEMA_COLLECTION_REQUESTED:
    case EV_SCHEMA_SYNCHRONIZATION_COMPLETED:
    case EV_SCHEMA_COLLECTION_STARTED:
    case EV_SCHEMA_SYNC_MARK:
    case EV_SCHEMA_COLLECTION_STOPPED:
    case EV_SCHEMA_COLLECTION_STOP_REQUESTED:
    case EV_SCHEMA_RECORDING_REPORT: return reduce_session;
    case EV_SCHEMA_START_RECORDING:
    case EV_SCHEMA_STOP_RECORDING: return reduce_command;
    default: return NULL;
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
    while (t->index[i] &&
           (strlen(t->index[i]->device_id) != n || memcmp(t->index[i]->device_id, id, n) != 0))
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
               !(t->dirty = realloc(t->dirty,
                                    (t->dirty_cap = t->dirty_cap * 2 + 64) * sizeof(*t->dirty)))))
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
    static const char *const key[2] = {"clock", "status"}, *const at[2] = {"measured_at_ns",
                                                                           "at_ns"};
    for (size_t i = 0; i < t->dirty_count; i++) {
        latest *l = t->dirty[i];
        for (int kind = 0; kind < 2; kind++) {
            const ev_schema *s;
            avro_value_t *v;
            json_t *r = NULL;
            if (!(l->dirty & (1 << kind)) ||
                ev_codec_check(l->frame[kind], l->len[kind], &s, NULL, 0) ||
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
    int32_t type = ev_schema_id(ev->schema);
    json_t *record = NULL;
    int rc;
    int kind = type == EV_SCHEMA_CLOCK_OFFSET_MEASURED ? L_CLOCK
               : type == EV_SCHEMA_DEVICE_STATUS       ? L_STATUS
                                                       : -1;
    reducer reduce = reducer_of(type);

    if (kind < 0 && !reduce) {
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
    reduce(s, type, record, ev->time_ns);
    json_decref(record);
    s->applied++;
    return 0;
}

json_t *ev_state_to_json(const ev_state *s)
{
    latest_materialise(s->latest, s->devices);
    return json_pack("{s:O, s:O, s:O, s:{s:I, s:I, s:I}}", "nodes", s->nodes, "devices", s->devices,
                     "sessions", s->sessions, "events", "applied", (json_int_t)s->applied,
                     "duplicates", (json_int_t)s->duplicates, "ignored", (json_int_t)s->ignored);
}

/* ------------------------------------------------------------ typed reads */

static int64_t get_int(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

const char *ev_node_state_name(ev_node_state state)
{
    static const char *const names[] = {"", "registered", "planned", "up", "expired"};
    return (unsigned)state < sizeof(names) / sizeof(names[0]) ? names[state] : "";
}

const char *ev_session_state_name(ev_session_state state)
{
    static const char *const names[] = {"",          "requested", "synchronized",
                                        "recording", "stopping",  "stopped"};
    return (unsigned)state < sizeof(names) / sizeof(names[0]) ? names[state] : "";
}

/* The enum value whose name is the record's "state" (0 when none). */
static int state_of(json_t *record, const char *(*name)(int), int count)
{
    const char *st = json_string_value(json_object_get(record, "state"));
    for (int i = 1; st && i < count; i++)
        if (strcmp(st, name(i)) == 0)
            return i;
    return 0;
}

static const char *node_name(int i)
{
    return ev_node_state_name((ev_node_state)i);
}
static const char *session_name(int i)
{
    return ev_session_state_name((ev_session_state)i);
}

static void fill_node(const char *id, json_t *n, ev_node *out)
{
    *out = (ev_node){
        .node_id = id,
        .state = (ev_node_state)state_of(n, node_name, 5),
        .address = str(n, "address"),
        .max_devices = get_int(n, "max_devices"),
        .cpu_cores = get_int(n, "cpu_cores"),
        .mem_total_bytes = get_int(n, "mem_total_bytes"),
        .ttl_ms = get_int(n, "ttl_ms"),
        .heartbeat_interval_ms = get_int(n, "heartbeat_interval_ms"),
        .device_count = get_int(n, "device_count"),
        .cpu_load = json_number_value(json_object_get(n, "cpu_load")),
        .mem_available_bytes = get_int(n, "mem_available_bytes"),
        .rx_bytes_per_s = json_number_value(json_object_get(n, "rx_bytes_per_s")),
        .registered_at_ns = get_int(n, "registered_at_ns"),
        .last_seen_ns = get_int(n, "last_seen_ns"),
        .expired_at_ns = get_int(n, "expired_at_ns"),
        .hb_mean_ns = get_int(n, "hb_mean_ns"),
        .hb_dev_ns = get_int(n, "hb_dev_ns"),
        .incarnation = str(n, "incarnation"),
    };
}

static void fill_device(const char *id, json_t *d, ev_device *out)
{
    json_t *c = json_object_get(d, "clock");
    *out = (ev_device){
        .device_id = id,
        .node_id = str(d, "node_id"),
        .connected = json_is_true(json_object_get(d, "connected")),
        .disconnect_reason = str(d, "disconnect_reason"),
        .has_clock = c != NULL,
        .clock_offset_ns = get_int(c, "offset_ns"),
        .clock_drift_ppm = json_number_value(json_object_get(c, "drift_ppm")),
        .clock_uncertainty_ns = get_int(c, "uncertainty_ns"),
        .clock_measured_at_ns = get_int(c, "measured_at_ns"),
        .clock_rounds = get_int(c, "rounds"),
    };
}

static void fill_session(const char *id, json_t *x, ev_session *out)
{
    json_t *sync = json_object_get(x, "sync"), *q = json_object_get(x, "stop_requested");
    json_t *streams = json_object_get(x, "streams");
    *out = (ev_session){
        .session_id = id,
        .state = (ev_session_state)state_of(x, session_name, 6),
        .requested_at_ns = get_int(x, "requested_at_ns"),
        .min_group = get_int(x, "min_group"),
        .duration_ms = get_int(x, "duration_ms"),
        .device_id_count = json_array_size(json_object_get(x, "device_ids")),
        .synchronized = sync != NULL,
        .sync_device_count = json_array_size(json_object_get(sync, "devices")),
        .sync_max_uncertainty_ns = get_int(sync, "max_uncertainty_ns"),
        .start_at_ns = get_int(x, "start_at_ns"),
        .has_stop_at = json_object_get(x, "stop_at_ns") != NULL,
        .stop_at_ns = get_int(x, "stop_at_ns"),
        .stop_requested = q != NULL,
        .stop_requested_at_ns = get_int(q, "at_ns"),
        .stop_request_reason = json_string_value(json_object_get(q, "reason")),
        .duration_ns = get_int(x, "duration_ns"),
        .reason = str(x, "reason"),
        .stream_count = json_array_size(streams),
        .streams = streams,
        .marks = get_int(x, "marks"),
        .ev__record = x,
    };
}

/* The aggregate after `after` in map (the first when after is NULL), or
 * NULL; *key is its id, borrowed from map. */
static json_t *next_in(json_t *map, const char *after, const char **key)
{
    void *it = after ? json_object_iter_at(map, after) : json_object_iter(map);
    if (it && after)
        it = json_object_iter_next(map, it);
    if (!it)
        return NULL;
    *key = json_object_iter_key(it);
    return json_object_iter_value(it);
}

int ev_state_node(const ev_state *s, const char *node_id, ev_node *out)
{
    void *it = node_id ? json_object_iter_at(s->nodes, node_id) : NULL;
    if (!it)
        return 0;
    fill_node(json_object_iter_key(it), json_object_iter_value(it), out);
    return 1;
}

int ev_state_node_matches(const ev_state *s, const char *node_id, const json_t *record)
{
    json_t *n = json_object_get(s->nodes, node_id ? node_id : "");
    const char *k;
    json_t *v;
    if (!n || !json_is_object(record))
        return 0;
    json_object_foreach((json_t *)record, k, v) if (strcmp(k, "node_id") != 0 &&
                                                    !json_equal(v, json_object_get(n, k))) return 0;
    return 1;
}

const char *ev_state_node_next(const ev_state *s, const char *after, ev_node *out)
{
    const char *id;
    json_t *n = next_in(s->nodes, after, &id);
    if (!n)
        return NULL;
    fill_node(id, n, out);
    return id;
}

int ev_state_node_capability(const ev_state *s, const char *node_id, const char *capability)
{
    json_t *caps =
        json_object_get(json_object_get(s->nodes, node_id ? node_id : ""), "capabilities");
    size_t i;
    json_t *c;
    json_array_foreach(caps, i,
                       c) if (strcmp(json_string_value(c) ?: "", capability) == 0) return 1;
    return 0;
}

int ev_state_device(const ev_state *s, const char *device_id, ev_device *out)
{
    latest_materialise(s->latest, s->devices);
    void *it = device_id ? json_object_iter_at(s->devices, device_id) : NULL;
    if (!it)
        return 0;
    fill_device(json_object_iter_key(it), json_object_iter_value(it), out);
    return 1;
}

const char *ev_state_device_next(const ev_state *s, const char *after, ev_device *out)
{
    const char *id;
    json_t *d;
    if (!after)
        latest_materialise(s->latest, s->devices);
    if (!(d = next_in(s->devices, after, &id)))
        return NULL;
    fill_device(id, d, out);
    return id;
}

int ev_state_session(const ev_state *s, const char *session_id, ev_session *out)
{
    void *it = session_id ? json_object_iter_at(s->sessions, session_id) : NULL;
    if (!it)
        return 0;
    fill_session(json_object_iter_key(it), json_object_iter_value(it), out);
    return 1;
}

const char *ev_state_session_next(const ev_state *s, const char *after, ev_session *out)
{
    const char *id;
    json_t *x = next_in(s->sessions, after, &id);
    if (!x)
        return NULL;
    fill_session(id, x, out);
    return id;
}

json_t *ev_state_session_to_json(const ev_state *s, const char *session_id)
{
    return json_incref(json_object_get(s->sessions, session_id));
}

const char *ev_session_device_id(const ev_session *x, size_t i)
{
    return json_string_value(json_array_get(json_object_get(x->ev__record, "device_ids"), i));
}

int ev_session_sync_device(const ev_session *x, size_t i, const char **device_id,
                           const char **node_id)
{
    json_t *sync = json_object_get(x->ev__record, "sync");
    json_t *d = json_array_get(json_object_get(sync, "devices"), i);
    if (!d)
        return 0;
    *device_id = str(d, "device_id");
    *node_id = str(d, "node_id");
    return 1;
}

int ev_session_command(const ev_session *x, const char *node_id, int stop, int64_t *at_ns)
{
    json_t *cmd = json_object_get(
        json_object_get(x->ev__record, stop ? "stop_commands" : "start_commands"), node_id);
    if (!cmd)
        return 0;
    if (at_ns)
        *at_ns = json_integer_value(cmd);
    return 1;
}

const json_t *ev_session_report(const ev_session *x, const char *node_id)
{
    return json_object_get(json_object_get(x->ev__record, "reports"), node_id);
}

const char *ev_session_report_next(const ev_session *x, const char *after, json_t **streams)
{
    const char *node;
    json_t *rep = next_in(json_object_get(x->ev__record, "reports"), after, &node);
    if (!rep)
        return NULL;
    if (streams)
        *streams = json_object_get(rep, "streams");
    return node;
}

int ev_session_stream(const ev_session *x, size_t i, ev_stream *out)
{
    json_t *st = json_array_get(x->streams, i);
    if (!st)
        return 0;
    *out = (ev_stream){str(st, "device_id"), str(st, "stream_id"), get_int(st, "samples"),
                       get_int(st, "bytes"), get_int(st, "gaps"),  get_int(st, "dropped")};
    return 1;
}
