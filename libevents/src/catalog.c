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
    const char *topic;     /* its ev_topic's */
    const char *key_field; /* its ev_topic's */
    avro_schema_t avro;
    avro_value_iface_t *iface;
    ev__validator *validator;
    char *json;          /* self-contained: shared types in place */
    char dataschema[32]; /* header ce_dataschema: "urn:msrs:schema:ID" */
};

struct ev_topic {
    char *name;
    char *key_field; /* NULL: a topic without records (leader) */
    int partitions;
    int partitions_exact; /* exactly partitions, not at least */
    json_t *config;
};

/* An earlier version of a record: records framed with its id are read with
 * its schema (the writer's), then as the current version (codec.c). */
struct ev__history {
    int32_t id;
    char *record;
    char *json; /* as written (self-contained) */
    const ev_topic *topic;
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
    ev_topic *topics;
    size_t topic_count;
    json_t *types;  /* shared named type's full name -> its definition */
    size_t inlined; /* shared types put in place by inline_type_at, in all */
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

/* ------------------------------------------------------------ named types */

/* The full name a reference or definition means, in namespace ns. */
static void full_name(const char *name, const char *ns, char *out, size_t size)
{
    snprintf(out, size, "%s%s%s", strchr(name, '.') || !ns ? "" : ns,
             strchr(name, '.') || !ns ? "" : ".", name);
}

static json_t *inline_types(json_t *j, const char *ns, json_t *defined);

/* A type position (a field's "type", "items", "values", a union's member):
 * a string naming a shared type not yet defined here becomes its
 * definition. Returns j or its replacement (a new reference either way). */
static json_t *inline_type_at(json_t *j, const char *ns, json_t *defined)
{
    if (json_is_string(j)) {
        char full[256];
        full_name(json_string_value(j), ns, full, sizeof(full));
        json_t *def = json_object_get(catalog.types, full);
        if (def && !json_object_get(defined, full)) {
            json_object_set_new(defined, full, json_true());
            catalog.inlined++;
            return inline_types(json_deep_copy(def), NULL, defined);
        }
        return json_incref(j);
    }
    return inline_types(json_incref(j), ns, defined);
}

/* Puts the definition of every shared type (catalog "types") in place of
 * its first reference, in Avro's parse order, so the result stands alone.
 * Takes j's reference; returns the (possibly same) JSON. */
static json_t *inline_types(json_t *j, const char *ns, json_t *defined)
{
    size_t i;
    json_t *item;
    if (json_is_array(j)) { /* a union */
        json_array_foreach(j, i, item) json_array_set_new(j, i, inline_type_at(item, ns, defined));
        return j;
    }
    if (!json_is_object(j))
        return j;
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *own_ns = json_string_value(json_object_get(j, "namespace"));
    if (own_ns)
        ns = own_ns;
    if (name) { /* a named type (record, enum, fixed) defined here */
        char full[256];
        full_name(name, ns, full, sizeof(full));
        json_object_set_new(defined, full, json_true());
    }
    json_array_foreach(json_object_get(j, "fields"), i, item) json_object_set_new(
        item, "type", inline_type_at(json_object_get(item, "type"), ns, defined));
    if (json_object_get(j, "items"))
        json_object_set_new(j, "items", inline_type_at(json_object_get(j, "items"), ns, defined));
    if (json_object_get(j, "values"))
        json_object_set_new(j, "values", inline_type_at(json_object_get(j, "values"), ns, defined));
    return j;
}

/* Loads catalog "types": {"FULL.NAME": "FILE.avsc"}. */
static int load_types(json_t *types)
{
    const char *name;
    json_t *path;
    catalog.types = json_object();
    json_object_foreach(types, name, path)
    {
        const ev__embedded_schema *file = find_path(json_string_value(path) ?: "");
        if (!file)
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: types \"%s\": expected the name of a file in "
                            "schemas/",
                            name);
        json_t *def = json_loadb(file->text, file->len, 0, NULL);
        char full[256] = "";
        if (json_is_object(def) && json_is_string(json_object_get(def, "name")))
            full_name(json_string_value(json_object_get(def, "name")),
                      json_string_value(json_object_get(def, "namespace")), full, sizeof(full));
        if (strcmp(full, name) != 0) {
            json_decref(def);
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/%s: expected the definition of %s (found %s)", file->file,
                            name, *full ? full : "none");
        }
        json_object_set_new(catalog.types, name, def);
    }
    return 0;
}

/* ---------------------------------------------------------------- ids */

/* One id's schema, parsed from its file with the shared types put in
 * place: *avro, *text (self-contained JSON, owned), *name (its full name).
 * A current version's fields are remembered for their defaults; an earlier
 * version must stand alone as it was written (a shared type changes with
 * the current version: it would be read with a writer schema it never had). */
static int parse_file(const ev__embedded_schema *file, int current, avro_schema_t *avro,
                      char **text, char name[256])
{
    json_error_t jerr;
    json_t *doc = json_loadb(file->text, file->len, 0, &jerr);
    json_t *defined = json_object();
    if (!doc) {
        json_decref(defined);
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID, "schemas/%s:%d: %s",
                        file->file, jerr.line, jerr.text);
    }
    size_t inlined = catalog.inlined;
    doc = inline_types(doc, NULL, defined);
    json_decref(defined);
    if (!current && catalog.inlined != inlined) {
        json_decref(doc);
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/%s: an earlier version refers to a shared type by name; it must "
                        "hold the type as it was then (msrs schemas ID prints a version whole)",
                        file->file);
    }
    if (current)
        collect_fields(doc, NULL);
    *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!*text || avro_schema_from_json_length(*text, strlen(*text), avro) != 0)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID, "schemas/%s: %s",
                        file->file, *text ? avro_strerror() : "out of memory");
    const char *ns = avro_schema_namespace(*avro);
    snprintf(name, 256, "%s%s%s", ns ? ns : "", ns ? "." : "", avro_schema_name(*avro));
    return 0;
}

/* A topic of the catalog by name; NULL when it has none. */
static const ev_topic *topic_named(const char *name)
{
    for (size_t i = 0; i < catalog.topic_count; i++)
        if (strcmp(catalog.topics[i].name, name) == 0)
            return &catalog.topics[i];
    return NULL;
}

/* One entry of "ids": "ID": {"record": FULL.NAME, "file": F, "topic": T}.
 * A file under history/ is an earlier version; any other the current one
 * (one per record). Errors name the id and what was expected. */
static int add_id(const char *id_text, json_t *spec)
{
    char *end = NULL;
    long id = id_text[0] >= '1' && id_text[0] <= '9' ? strtol(id_text, &end, 10) : 0;
    const char *record = json_string_value(json_object_get(spec, "record"));
    const char *path = json_string_value(json_object_get(spec, "file"));
    const char *topic_name = json_string_value(json_object_get(spec, "topic"));
    const ev_topic *topic = topic_name ? topic_named(topic_name) : NULL;
    if (!end || *end || id <= 0 || id > INT32_MAX || !record || !path || !topic_name)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: ids \"%s\": expected a positive id in plain "
                        "decimal and {\"record\", \"file\", \"topic\"} strings",
                        id_text);
    /* not ev_schema_by_id: we are in its once */
    for (size_t i = 0; i < catalog.count + catalog.history_count; i++)
        if ((i < catalog.count ? catalog.schemas[i].id : catalog.history[i - catalog.count].id) ==
            (int32_t)id)
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: id %ld is listed twice", id);
    if (!topic || !topic->key_field)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: id %ld: topic %s is not a topic with a key field",
                        id, topic_name);
    const ev__embedded_schema *file = find_path(path);
    if (!file)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                        "schemas/catalog.json: id %ld: no schemas/%s", id, path);
    avro_schema_t avro = NULL;
    char *text = NULL, name[256];
    int current = strncmp(path, "history/", 8) != 0;
    int rc = parse_file(file, current, &avro, &text, name);
    if (!rc && strcmp(name, record) != 0)
        rc = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                      "schemas/%s: record is named %s, catalog id %ld says %s", file->file, name,
                      id, record);
    if (rc) {
        if (avro)
            avro_schema_decref(avro);
        free(text);
        return rc;
    }
    avro_value_iface_t *iface = avro_generic_class_from_schema(avro);
    ev__validator *validator = ev__validator_new(avro);
    char *owned = strdup(record);
    if (!iface || !validator || !owned) {
        free(owned);
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_NOMEM,
                        "schemas/%s: cannot build its value class or validator", file->file);
    }
    if (!current) {
        ev__history *h = &catalog.history[catalog.history_count++];
        *h = (ev__history){.id = (int32_t)id, .record = owned, .topic = topic};
        h->avro = avro, h->iface = iface, h->validator = validator;
        h->json = text;
    } else {
        ev_schema *s = &catalog.schemas[catalog.count++];
        s->id = (int32_t)id;
        s->name = owned;
        s->short_name = strrchr(s->name, '.') ? strrchr(s->name, '.') + 1 : s->name;
        s->topic = topic->name;
        s->key_field = topic->key_field;
        s->avro = avro, s->iface = iface, s->validator = validator;
        s->json = text;
        snprintf(s->dataschema, sizeof(s->dataschema), "urn:msrs:schema:%ld", id);
    }
    return 0;
}

/* After every id: one current version per record, and each earlier one
 * on its record's topic. */
static int link_history(void)
{
    for (size_t i = 0; i < catalog.count; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(catalog.schemas[i].name, catalog.schemas[j].name) == 0)
                return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                                "schemas/catalog.json: %s has two current ids, %d and %d (an "
                                "earlier version's file belongs under history/)",
                                catalog.schemas[i].name, (int)catalog.schemas[j].id,
                                (int)catalog.schemas[i].id);
    for (size_t i = 0; i < catalog.history_count; i++) {
        ev__history *h = &catalog.history[i];
        for (size_t j = 0; j < catalog.count; j++)
            if (strcmp(catalog.schemas[j].name, h->record) == 0)
                h->current = &catalog.schemas[j];
        if (!h->current)
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: id %d: %s has no current version", (int)h->id,
                            h->record);
        if (h->topic != topic_named(h->current->topic))
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: id %d: topic %s, but %s is on %s", (int)h->id,
                            h->topic->name, h->record, h->current->topic);
    }
    return 0;
}

/* "topics": {"NAME": {"key": FIELD or null, "partitions": N, "config":
 * {"k": "v"}}}. */
static int load_topics(json_t *topics)
{
    const char *name;
    json_t *tv;
    catalog.topics = calloc(json_object_size(topics) + 1, sizeof(*catalog.topics));
    if (!catalog.topics)
        return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_NOMEM, "out of memory");
    json_object_foreach(topics, name, tv)
    {
        json_t *key = json_object_get(tv, "key"), *parts = json_object_get(tv, "partitions");
        json_t *config = json_object_get(tv, "config"), *v;
        json_t *exact = json_object_get(tv, "partitions_exact");
        const char *k;
        int strings = json_is_object(config);
        json_object_foreach(config, k, v) strings = strings && json_is_string(v);
        if (!(json_is_string(key) || json_is_null(key)) || !json_is_integer(parts) ||
            json_integer_value(parts) < 1 || json_integer_value(parts) > 100000 || !strings ||
            (exact && !json_is_boolean(exact)))
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                            "schemas/catalog.json: topic %s: expected \"key\" (a field or null), "
                            "\"partitions\" (1-100000), \"config\" (an object of strings) and, "
                            "if there, \"partitions_exact\" (a boolean)",
                            name);
        ev_topic *t = &catalog.topics[catalog.topic_count++];
        t->name = strdup(name);
        t->key_field = json_is_string(key) ? strdup(json_string_value(key)) : NULL;
        if (!t->name || (json_is_string(key) && !t->key_field))
            return ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_NOMEM, "out of memory");
        t->partitions = (int)json_integer_value(parts);
        t->partitions_exact = json_is_true(exact);
        t->config = json_incref(config);
    }
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
    json_t *root =
        json_loadb(ev__catalog_json, ev__catalog_json_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *topics = json_object_get(root, "topics"), *ids = json_object_get(root, "ids");
    json_t *types = json_object_get(root, "types");
    const char *id;
    json_t *spec;

    catalog.fields = json_object();
    if (!root) {
        catalog.err = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                               "schemas/catalog.json:%d: %s", jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_object(topics) || !json_is_object(ids) || (types && !json_is_object(types))) {
        catalog.err = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                               "schemas/catalog.json: expected \"topics\" and \"ids\" objects (and "
                               "\"types\", if there, an object)");
        goto out;
    }
    if ((catalog.err = load_topics(topics)) || (catalog.err = load_types(types)))
        goto out;
    catalog.schemas = calloc(json_object_size(ids) + 1, sizeof(*catalog.schemas));
    catalog.history = calloc(json_object_size(ids) + 1, sizeof(*catalog.history));
    if (!catalog.schemas || !catalog.history) {
        catalog.err =
            ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_object_foreach(ids, id, spec)
    {
        if ((catalog.err = add_id(id, spec)))
            goto out;
    }
    if ((catalog.err = link_history()))
        goto out;
    if (catalog.count + catalog.history_count + json_object_size(catalog.types) !=
        ev__embedded_schema_count)
        catalog.err = ev__fail(catalog.errstr, sizeof(catalog.errstr), EV_ERR_INVALID,
                               "schemas/: %zu .avsc files but %zu current ids, %zu earlier "
                               "versions and %zu shared types in the catalog",
                               ev__embedded_schema_count, catalog.count, catalog.history_count,
                               json_object_size(catalog.types));
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
const char *ev_catalog_schema_json(int32_t id)
{
    const ev_schema *s = ev_schema_by_id(id);
    const ev__history *h = s ? NULL : ev__history_by_id(id);
    return s ? s->json : h ? h->json : NULL;
}

size_t ev_topic_count(void)
{
    return ev_catalog_init(NULL, 0) ? 0 : catalog.topic_count;
}
const ev_topic *ev_topic_at(size_t i)
{
    return i < ev_topic_count() ? &catalog.topics[i] : NULL;
}
const ev_topic *ev_topic_by_name(const char *name)
{
    return ev_catalog_init(NULL, 0) || !name ? NULL : topic_named(name);
}
const char *ev_topic_name(const ev_topic *t)
{
    return t->name;
}
const char *ev_topic_key_field(const ev_topic *t)
{
    return t->key_field;
}
int ev_topic_partitions(const ev_topic *t)
{
    return t->partitions;
}
int ev_topic_partitions_exact(const ev_topic *t)
{
    return t->partitions_exact;
}
const json_t *ev_topic_config(const ev_topic *t)
{
    return t->config;
}

const char *ev__schema_dataschema(const ev_schema *s)
{
    return s->dataschema;
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
