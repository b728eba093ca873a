/* reduce.c — the pure reducers: node, device and session state folded from
 * events, idempotent by event id. Services and msrs-replay share them, so a
 * state rebuilt from the log is the state the services held. */
#include "internal.h"

#include <string.h>

struct ev_state {
    json_t *nodes, *devices, *sessions;
    uint64_t *seen; /* open-addressing set of event-id hashes; 0 = empty */
    size_t seen_cap, seen_count;
    int64_t applied, duplicates, ignored;
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
    if (!s->nodes || !s->devices || !s->sessions || !s->seen) {
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
    free(s);
}

/* FNV-1a 64, never 0 (0 marks an empty slot). */
static uint64_t id_hash(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
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
    } else if (strcmp(type, "DeviceStatus") == 0) {
        json_t *st = json_object();
        merge(st, r, "device_id");
        json_object_del(st, "node_id");
        set_int(st, "at_ns", t);
        json_object_set_new(d, "status", st);
    } else if (strcmp(type, "DeviceDisconnected") == 0) {
        json_object_set_new(d, "connected", json_false());
        set_str(d, "disconnect_reason", str(r, "reason"));
    } else if (strcmp(type, "ClockOffsetMeasured") == 0) {
        json_t *old = json_object_get(d, "clock");
        int64_t rounds = old ? json_integer_value(json_object_get(old, "rounds")) : 0;
        json_t *c = json_object();
        merge(c, r, "device_id");
        json_object_del(c, "node_id");
        set_int(c, "rounds", rounds + 1);
        set_int(c, "measured_at_ns", t);
        json_object_set_new(d, "clock", c);
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

int ev_state_apply(ev_state *s, const ev_event *ev, char *errstr, size_t errstr_size)
{
    const char *topic = ev_schema_topic(ev->schema);
    const char *type = ev_schema_short_name(ev->schema);
    json_t *record = NULL;
    int rc;

    if (strcmp(topic, "nodes") != 0 && strcmp(topic, "devices") != 0 &&
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
    rc = ev_value_to_json(ev->value, &record, errstr, errstr_size);
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
    return json_pack("{s:O, s:O, s:O, s:{s:I, s:I, s:I}}", "nodes", s->nodes, "devices",
                     s->devices, "sessions", s->sessions, "events", "applied",
                     (json_int_t)s->applied, "duplicates", (json_int_t)s->duplicates, "ignored",
                     (json_int_t)s->ignored);
}
