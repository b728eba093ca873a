/* catalog.c — the schema catalog: schemas/catalog.json + schemas/NAME.avsc
 * (and schemas/history/NAME.vN.avsc, the earlier versions), embedded at
 * build time, parsed once, immutable afterwards. */
#include "embedded.h"
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct ev_schema {
    int32_t id;
    char *name; /* full name */
    const char *short_name;
    char *topic;
    char *key_field;
    avro_schema_t avro;
    avro_value_iface_t *iface;
    ev__validator *validator;
    const char *json;
};

/* An earlier version of a record: records framed with its id are read with
 * its schema (the writer's), then as the current version (codec.c). */
struct ev__history {
    int32_t id;
    const ev_schema *current;
    avro_schema_t avro;
    avro_value_iface_t *iface;
    ev__validator *validator;
};

static struct {
    ev_schema *schemas;
    size_t count;
    ev__history *history;
    size_t history_count;
    json_t *fields; /* record full name -> its "fields" array, for defaults */
    int err;
    char errstr[256];
} catalog;

static pthread_once_t catalog_once = PTHREAD_ONCE_INIT;

int ev__fail(char *errstr, size_t errstr_size, int err, const char *fmt, ...)
{
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}

const char *ev_err_str(int err)
{
    switch (err) {
    case EV_OK: return "ok";
    case EV_ERR_INVALID: return "invalid";
    case EV_ERR_UNKNOWN_SCHEMA: return "unknown schema";
    case EV_ERR_TRUNCATED: return "truncated";
    case EV_ERR_CORRUPT: return "corrupt";
    case EV_ERR_IO: return "i/o error";
    case EV_ERR_TIMED_OUT: return "timed out";
    case EV_ERR_END: return "end of log";
    case EV_ERR_NOMEM: return "out of memory";
    case EV_ERR_FATAL: return "fatal";
    default: return "unknown error";
    }
}

static const ev__embedded_schema *find_path(const char *file)
{
    for (size_t i = 0; i < ev__embedded_schema_count; i++)
        if (strcmp(ev__embedded_schemas[i].file, file) == 0)
            return &ev__embedded_schemas[i];
    return NULL;
}

static const ev__embedded_schema *find_file(const char *short_name)
{
    char file[256];
    snprintf(file, sizeof(file), "%s.avsc", short_name);
    for (size_t i = 0; i < ev__embedded_schema_count; i++)
        if (strcmp(ev__embedded_schemas[i].file, file) == 0)
            return &ev__embedded_schemas[i];
    return NULL;
}

/* Remembers the "fields" of every record defined in a schema's JSON, under
 * the record's full name, so defaults can be found later. */
static void collect_fields(json_t *j, const char *ns)
{
    size_t i;
    json_t *item;
    if (json_is_array(j)) {
        json_array_foreach(j, i, item) collect_fields(item, ns);
        return;
    }
    if (!json_is_object(j))
        return;
    const char *type = json_string_value(json_object_get(j, "type"));
    if (type && strcmp(type, "record") == 0) {
        const char *name = json_string_value(json_object_get(j, "name"));
        const char *own_ns = json_string_value(json_object_get(j, "namespace"));
        char full[256];
        if (own_ns)
            ns = own_ns;
        if (!name)
            return;
        snprintf(full, sizeof(full), "%s%s%s", strchr(name, '.') || !ns ? "" : ns,
                 strchr(name, '.') || !ns ? "" : ".", name);
        json_t *fields = json_object_get(j, "fields");
        json_object_set(catalog.fields, full, fields);
        json_array_foreach(fields, i, item) collect_fields(json_object_get(item, "type"), ns);
        return;
    }
    collect_fields(json_object_get(j, "type"), ns);
    collect_fields(json_object_get(j, "items"), ns);
    collect_fields(json_object_get(j, "values"), ns);
}

json_t *ev__field_default(avro_schema_t record, size_t index)
{
    const char *ns = avro_schema_namespace(record);
    char full[256];
    snprintf(full, sizeof(full), "%s%s%s", ns ? ns : "", ns ? "." : "", avro_schema_name(record));
    json_t *field = json_array_get(json_object_get(catalog.fields, full), index);
    return json_object_get(field, "default");
}

/* Adds one catalog entry: finds its .avsc, parses it, checks its name. */
static int add_entry(const char *topic, const char *key_field, const char *name, json_t *id)
{
    ev_schema *s = &catalog.schemas[catalog.count];
    const char *dot = strrchr(name, '.');
    const char *short_name = dot ? dot + 1 : name;
    const ev__embedded_schema *file = find_file(short_name);

    if (!json_is_integer(id) || json_integer_value(id) <= 0 || json_integer_value(id) > INT32_MAX)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: %s: expected a positive integer id", name);
    if (!file)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: %s: no schemas/%s.avsc", name, short_name);
    for (size_t i = 0; i < catalog.count; i++)
        if (catalog.schemas[i].id == (int32_t)json_integer_value(id))
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: %s: id %d already used by %s", name,
                            (int)json_integer_value(id), catalog.schemas[i].name);
    if (avro_schema_from_json_length(file->text, file->len, &s->avro) != 0)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID, "schemas/%s: %s",
                        file->file, avro_strerror());
    const char *ns = avro_schema_namespace(s->avro);
    char full[256];
    snprintf(full, sizeof(full), "%s%s%s", ns ? ns : "", ns ? "." : "", avro_schema_name(s->avro));
    if (strcmp(full, name) != 0) {
        avro_schema_decref(s->avro);
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/%s: record is named %s, catalog says %s", file->file, full, name);
    }
    json_t *doc = json_loadb(file->text, file->len, 0, NULL);
    collect_fields(doc, NULL);
    json_decref(doc);
    s->id = (int32_t)json_integer_value(id);
    s->name = strdup(name);
    s->short_name = strrchr(s->name, '.') ? strrchr(s->name, '.') + 1 : s->name;
    s->topic = strdup(topic);
    s->key_field = strdup(key_field);
    s->iface = avro_generic_class_from_schema(s->avro);
    s->validator = ev__validator_new(s->avro);
    if (!s->iface || !s->validator)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_NOMEM,
                        "schemas/%s: cannot build its value class or validator", file->file);
    s->json = file->text;
    catalog.count++;
    return 0;
}

/* Adds one earlier version: "ID": "history/NAME.vN.avsc", a record that is
 * in the catalog, under an id no record or other version has. */
static int add_history(const char *id_text, json_t *path)
{
    ev__history *h = &catalog.history[catalog.history_count];
    const ev__embedded_schema *file = find_path(json_string_value(path) ?: "");
    char *end = NULL;
    long id = strtol(id_text, &end, 10);
    if (!end || *end || id <= 0 || id > INT32_MAX || !json_is_string(path))
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: history \"%s\": expected \"ID\": "
                        "\"history/NAME.vN.avsc\"",
                        id_text);
    if (!file)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: history %ld: no schemas/%s", id,
                        json_string_value(path));
    for (size_t i = 0; i < catalog.count; i++) /* not ev_schema_by_id: we are in its once */
        if (catalog.schemas[i].id == (int32_t)id)
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: history %ld: the id of %s", id,
                            catalog.schemas[i].name);
    for (size_t i = 0; i < catalog.history_count; i++)
        if (catalog.history[i].id == (int32_t)id)
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: history %ld: listed twice", id);
    if (avro_schema_from_json_length(file->text, file->len, &h->avro) != 0)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID, "schemas/%s: %s",
                        file->file, avro_strerror());
    const char *ns = avro_schema_namespace(h->avro);
    char full[256];
    snprintf(full, sizeof(full), "%s%s%s", ns ? ns : "", ns ? "." : "", avro_schema_name(h->avro));
    h->current = NULL;
    for (size_t i = 0; i < catalog.count; i++)
        if (strcmp(catalog.schemas[i].name, full) == 0)
            h->current = &catalog.schemas[i];
    if (!h->current) {
        avro_schema_decref(h->avro);
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/%s: record %s is not in the catalog", file->file, full);
    }
    h->id = (int32_t)id;
    h->iface = avro_generic_class_from_schema(h->avro);
    h->validator = ev__validator_new(h->avro);
    if (!h->iface || !h->validator)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_NOMEM,
                        "schemas/%s: cannot build its value class or validator", file->file);
    catalog.history_count++;
    return 0;
}

/* ev.h's ev_schema_ids, checked against the catalog when it loads. */
static const struct {
    int32_t id;
    const char *short_name;
} known_ids[] = {
    {EV_SCHEMA_NODE_REGISTERED, "NodeRegistered"},
    {EV_SCHEMA_NODE_PLANNED, "NodePlanned"},
    {EV_SCHEMA_NODE_HEARTBEAT, "NodeHeartbeat"},
    {EV_SCHEMA_NODE_EXPIRED, "NodeExpired"},
    {EV_SCHEMA_DEVICE_REGISTERED, "DeviceRegistered"},
    {EV_SCHEMA_DEVICE_STATUS, "DeviceStatus"},
    {EV_SCHEMA_DEVICE_DISCONNECTED, "DeviceDisconnected"},
    {EV_SCHEMA_CLOCK_OFFSET_MEASURED, "ClockOffsetMeasured"},
    {EV_SCHEMA_COLLECTION_REQUESTED, "CollectionRequested"},
    {EV_SCHEMA_SYNCHRONIZATION_COMPLETED, "SynchronizationCompleted"},
    {EV_SCHEMA_COLLECTION_STARTED, "CollectionStarted"},
    {EV_SCHEMA_SYNC_MARK, "SyncMark"},
    {EV_SCHEMA_COLLECTION_STOPPED, "CollectionStopped"},
    {EV_SCHEMA_COLLECTION_STOP_REQUESTED, "CollectionStopRequested"},
    {EV_SCHEMA_RECORDING_REPORT, "RecordingReport"},
    {EV_SCHEMA_START_RECORDING, "StartRecording"},
    {EV_SCHEMA_STOP_RECORDING, "StopRecording"},
    {EV_SCHEMA_SYNC_NOW, "SyncNow"},
    {EV_SCHEMA_PRESENCE_SNAPSHOT, "PresenceSnapshot"},
    {EV_SCHEMA_SENSOR_SAMPLE_BATCH, "SensorSampleBatch"},
    {EV_SCHEMA_MEDIA_PACKET, "MediaPacket"},
};

static void catalog_load(void)
{
    json_error_t jerr;
    json_t *root = json_loadb(ev__catalog_json, ev__catalog_json_len, 0, &jerr);
    json_t *topics = json_object_get(root, "topics");
    const char *topic;
    json_t *tv;
    size_t total = 0;

    catalog.fields = json_object();

    if (!json_is_object(topics)) {
        catalog.err = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                               "schemas/catalog.json:%d: expected an object with \"topics\" (%s)",
                               jerr.line, root ? "no topics" : jerr.text);
        goto out;
    }
    json_object_foreach(topics, topic, tv) total +=
        json_object_size(json_object_get(tv, "records"));
    catalog.schemas = calloc(total ? total : 1, sizeof(*catalog.schemas));
    json_object_foreach(topics, topic, tv)
    {
        json_t *key = json_object_get(tv, "key");
        json_t *records = json_object_get(tv, "records");
        const char *name;
        json_t *id;
        if (!json_is_string(key) || !json_is_object(records)) {
            catalog.err = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                                   "schemas/catalog.json: topic %s: expected \"key\" (string) "
                                   "and \"records\" (object)",
                                   topic);
            goto out;
        }
        json_object_foreach(records, name, id)
        {
            catalog.err = add_entry(topic, json_string_value(key), name, id);
            if (catalog.err)
                goto out;
        }
    }
    json_t *history = json_object_get(root, "history");
    catalog.history = calloc(json_object_size(history) + 1, sizeof(*catalog.history));
    json_object_foreach(history, topic, tv)
    {
        if (strcmp(topic, "doc") == 0)
            continue;
        catalog.err = add_history(topic, tv);
        if (catalog.err)
            goto out;
    }
    if (catalog.count + catalog.history_count != ev__embedded_schema_count)
        catalog.err = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                               "schemas/: %zu .avsc files but %zu catalog entries and %zu "
                               "earlier versions",
                               ev__embedded_schema_count, catalog.count, catalog.history_count);
    for (size_t i = 0; !catalog.err && i < sizeof(known_ids) / sizeof(known_ids[0]); i++) {
        const ev_schema *k = NULL;
        for (size_t j = 0; j < catalog.count; j++) /* not ev_schema_by_id: we are in its once */
            if (catalog.schemas[j].id == known_ids[i].id)
                k = &catalog.schemas[j];
        if (!k || strcmp(k->short_name, known_ids[i].short_name) != 0)
            catalog.err =
                ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                         "schemas/catalog.json: id %d is %s, but ev.h's ev_schema_ids "
                         "names it %s",
                         (int)known_ids[i].id, k ? k->name : "no record", known_ids[i].short_name);
    }
out:
    json_decref(root);
}

int ev_catalog_init(char *errstr, size_t errstr_size)
{
    pthread_once(&catalog_once, catalog_load);
    if (catalog.err)
        return ev__fail(errstr, errstr_size, catalog.err, "%s", catalog.errstr);
    return 0;
}

const ev_schema *ev_schema_by_name(const char *name)
{
    if (ev_catalog_init(NULL, 0) || !name)
        return NULL;
    for (size_t i = 0; i < catalog.count; i++)
        if (strcmp(catalog.schemas[i].name, name) == 0 ||
            strcmp(catalog.schemas[i].short_name, name) == 0)
            return &catalog.schemas[i];
    return NULL;
}

const ev_schema *ev_schema_by_id(int32_t id)
{
    if (ev_catalog_init(NULL, 0))
        return NULL;
    for (size_t i = 0; i < catalog.count; i++)
        if (catalog.schemas[i].id == id)
            return &catalog.schemas[i];
    return NULL;
}

size_t ev_schema_count(void)
{
    return ev_catalog_init(NULL, 0) ? 0 : catalog.count;
}

const ev_schema *ev_schema_at(size_t i)
{
    return i < ev_schema_count() ? &catalog.schemas[i] : NULL;
}

int32_t ev_schema_id(const ev_schema *s)
{
    return s->id;
}
const char *ev_schema_name(const ev_schema *s)
{
    return s->name;
}
const char *ev_schema_short_name(const ev_schema *s)
{
    return s->short_name;
}
const char *ev_schema_topic(const ev_schema *s)
{
    return s->topic;
}
const char *ev_schema_key_field(const ev_schema *s)
{
    return s->key_field;
}
avro_schema_t ev_schema_avro(const ev_schema *s)
{
    return s->avro;
}
const char *ev_schema_json(const ev_schema *s)
{
    return s->json;
}
avro_value_iface_t *ev__schema_iface(const ev_schema *s)
{
    return s->iface;
}
const ev__validator *ev__schema_validator(const ev_schema *s)
{
    return s->validator;
}

size_t ev__schema_index(const ev_schema *s)
{
    return (size_t)(s - catalog.schemas);
}

const ev__history *ev__history_by_id(int32_t id)
{
    if (ev_catalog_init(NULL, 0))
        return NULL;
    for (size_t i = 0; i < catalog.history_count; i++)
        if (catalog.history[i].id == id)
            return &catalog.history[i];
    return NULL;
}

size_t ev__history_count(void)
{
    return ev_catalog_init(NULL, 0) ? 0 : catalog.history_count;
}
size_t ev__history_index(const ev__history *h)
{
    return (size_t)(h - catalog.history);
}
const ev_schema *ev__history_current(const ev__history *h)
{
    return h->current;
}
avro_value_iface_t *ev__history_iface(const ev__history *h)
{
    return h->iface;
}
const ev__validator *ev__history_validator(const ev__history *h)
{
    return h->validator;
}
