/*
 * ev.h — libevents, the one public header of msrs's event library.
 *
 * libevents owns everything that touches records on the log:
 *   - the schema catalog (schemas/NAME.avsc + schemas/catalog.json, embedded),
 *   - the codec (Confluent framing: 0x00, 4-byte big-endian schema id, Avro),
 *   - JSON <-> Avro value conversion,
 *   - CloudEvents headers (ce_id, ce_type, ce_source, ce_time, ...),
 *   - the log (produce / subscribe / assign / poll / commit) over three
 *     backends: sqlite:PATH, kafka:BOOTSTRAP, mock (librdkafka mock cluster),
 *   - configuration (file + environment + command line),
 *   - the pure reducers that fold events into node/device/session state.
 *
 * Conventions (see docs/style.md):
 *   - Every function returning int returns 0 on success or a negative ev_err.
 *     Where a person needs detail, it is written into a caller-supplied
 *     errstr of errstr_size bytes (always NUL-terminated when size > 0).
 *   - Handles are opaque, created by X_new/X_open, freed by X_destroy;
 *     X_destroy(NULL) is a no-op.
 *   - Nothing here prints or exits. No handle is thread-safe: use one per
 *     thread. Callbacks run on the caller's thread, inside the call that
 *     names them.
 */
#ifndef MSRS_EV_H
#define MSRS_EV_H

#include <avro.h>
#include <jansson.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ errors */

typedef enum ev_err {
    EV_OK = 0,
    EV_ERR_INVALID = -1,        /* bad argument, config or input; fatal for that input */
    EV_ERR_UNKNOWN_SCHEMA = -2, /* schema id or name not in the catalog */
    EV_ERR_TRUNCATED = -3,      /* framed bytes end early */
    EV_ERR_CORRUPT = -4,        /* bytes do not decode as the schema says */
    EV_ERR_IO = -5,             /* backend failure; retriable */
    EV_ERR_TIMED_OUT = -6,      /* nothing happened within the timeout; retriable */
    EV_ERR_END = -7,            /* consumer reached the end of every assigned partition */
    EV_ERR_NOMEM = -8,
    EV_ERR_FATAL = -9, /* the handle cannot continue; destroy it */
} ev_err;

/* A static string naming err ("truncated", ...). Never NULL. */
const char *ev_err_str(int err);

/* ----------------------------------------------------------------- catalog */

/* One record type of the catalog. Immutable, owned by the library, valid for
 * the life of the process. */
typedef struct ev_schema ev_schema;

/* Loads the embedded catalog once (thread-safe). Every ev_schema_* function
 * calls it implicitly; call it directly to get the error text of a broken
 * build (a catalog entry without its .avsc, a duplicate id, ...). */
int ev_catalog_init(char *errstr, size_t errstr_size);

/* Looks a record type up by full name ("msrs.events.NodeRegistered") or by
 * short name ("NodeRegistered"). NULL when unknown. */
const ev_schema *ev_schema_by_name(const char *name);
/* Looks a record type up by its fixed schema id. NULL when unknown. */
const ev_schema *ev_schema_by_id(int32_t id);
/* Iterates the catalog: i in [0, ev_schema_count()). */
size_t ev_schema_count(void);
const ev_schema *ev_schema_at(size_t i);

int32_t ev_schema_id(const ev_schema *s);
const char *ev_schema_name(const ev_schema *s);       /* full name */
const char *ev_schema_short_name(const ev_schema *s); /* name without namespace */
const char *ev_schema_topic(const ev_schema *s);      /* logical topic: "nodes" */
const char *ev_schema_key_field(const ev_schema *s);  /* field holding the key */
avro_schema_t ev_schema_avro(const ev_schema *s);     /* borrowed */
const char *ev_schema_json(const ev_schema *s);       /* self-contained .avsc JSON */
/* The self-contained JSON of any schema id of the catalog, an earlier
 * version's too (what a schema registry holds under that id); NULL when
 * the id is not in the catalog. */
const char *ev_catalog_schema_json(int32_t id);

/* A topic of the catalog (docs/topics.md): its logical name ("samples",
 * "leader"), the field its records are keyed by (NULL for a topic without
 * records), and what it needs of a Kafka cluster: the partitions it is
 * created with and its topic configs ({"cleanup.policy": "delete", ...};
 * borrowed), used by msrs-mockbroker and `msrs topics create|check`.
 * Owned by the library, valid for the life of the process, as ev_schema. */
typedef struct ev_topic ev_topic;
size_t ev_topic_count(void);
const ev_topic *ev_topic_at(size_t i);
const ev_topic *ev_topic_by_name(const char *name);
const char *ev_topic_name(const ev_topic *t);
const char *ev_topic_key_field(const ev_topic *t);
int ev_topic_partitions(const ev_topic *t);
/* 1: exactly ev_topic_partitions (the leader topic: leadership is one
 * consumer group's assignment of its one partition); 0: at least. */
int ev_topic_partitions_exact(const ev_topic *t);
const json_t *ev_topic_config(const ev_topic *t);

/* ------------------------------------------------------------------- codec */

/* The content-type header of every record (docs/topics.md): Avro binary in
 * Confluent's framing; header ce_dataschema names its schema id. */
#define EV_CONTENT_TYPE "application/avro; framing=confluent"

#define EV_FRAME_MAGIC      0x00
#define EV_FRAME_HEADER_LEN 5

/* A codec encodes and decodes framed records. It keeps one reusable Avro
 * value per record type and one growable output buffer. Not thread-safe. */
typedef struct ev_codec ev_codec;

ev_codec *ev_codec_new(void);
void ev_codec_destroy(ev_codec *codec);

/* Returns, in *value, the codec's reusable value for schema s, reset to
 * empty. The value is owned by the codec and is the same one that
 * ev_codec_decode fills for s: it stays valid until the next call of either
 * for the same schema. */
int ev_codec_value(ev_codec *codec, const ev_schema *s, avro_value_t **value);

/* Encodes value (of schema s) as a framed record. *out points into the
 * codec's buffer and stays valid until the next encode. */
int ev_codec_encode(ev_codec *codec, const ev_schema *s, avro_value_t *value, const void **out,
                    size_t *out_len, char *errstr, size_t errstr_size);

/* A SensorSampleBatch given as its parts (schemas/SensorSampleBatch.avsc):
 * everything is borrowed for the call. */
typedef struct ev_samples {
    const char *device_id, *session_id, *stream_id, *stream_type; /* NULL: "" */
    int64_t seq;
    int32_t channels;
    size_t n;                      /* samples, >= 1 */
    const int64_t *device_time_ns; /* n */
    const int64_t *master_time_ns; /* n */
    const void *values_le;         /* n x channels IEEE-754 doubles, little-endian, any alignment:
                                      Avro's own bytes for a double, copied as they are */
} ev_samples;

/* Encodes a SensorSampleBatch from its parts straight into the codec's
 * buffer: byte for byte what ev_codec_encode writes for the same value, at a
 * tenth of the cost (no Avro value is filled or walked; the agent writes one
 * per samples message). *out as for ev_codec_encode. EV_ERR_INVALID when the
 * catalog's SensorSampleBatch is not the shape this writes (a schema change
 * must change it too: tests/unit/test_codec.c compares the two encoders). */
int ev_codec_encode_samples(ev_codec *codec, const ev_samples *samples, const void **out,
                            size_t *out_len, char *errstr, size_t errstr_size);

/* A MediaPacket given as its parts (schemas/MediaPacket.avsc), borrowed
 * for the call. */
typedef struct ev_media {
    const char *device_id, *session_id, *stream_id, *codec; /* NULL: "" */
    int64_t seq, pts, device_time_ns, master_time_ns;
    int32_t width, height, time_base_den; /* time_base_den: the schema's default is 1e9 */
    int keyframe;
    const void *data; /* the encoded packet, copied once into the codec's buffer */
    size_t data_len;
} ev_media;

/* The same for a MediaPacket: one copy of the packet, no Avro value. */
int ev_codec_encode_media(ev_codec *codec, const ev_media *media, const void **out, size_t *out_len,
                          char *errstr, size_t errstr_size);

/* Decodes a framed record. On success *schema is its record type and *value
 * the codec's reusable value for it (see ev_codec_value). Errors:
 * EV_ERR_TRUNCATED (shorter than a frame or than its fields),
 * EV_ERR_CORRUPT (bad magic byte, bad Avro, trailing bytes),
 * EV_ERR_UNKNOWN_SCHEMA (id not in the catalog). Never crashes on any input. */
int ev_codec_decode(ev_codec *codec, const void *buf, size_t len, const ev_schema **schema,
                    avro_value_t **value, char *errstr, size_t errstr_size);
/* What ev_codec_decode checks, without reading the value: the frame, the
 * schema id and every byte against the schema. Same errors. */
int ev_codec_check(const void *buf, size_t len, const ev_schema **schema, char *errstr,
                   size_t errstr_size);

/* A long field of a record value by name (0 when absent or not a long). */
int64_t ev_value_long(const avro_value_t *record, const char *name);
/* A string field of a record value by name ("" when absent or not a
 * string); it points into the value and lives as long as the value does. */
const char *ev_value_string(const avro_value_t *record, const char *name);

/* Checks Avro binary against a schema without allocating: every length and
 * count fits in what remains, every union and enum index exists — what
 * ev_codec_check does for frames, for other Avro data (container files'
 * blocks). Build one per schema (not thread-safe to build; safe to share
 * once built); NULL when out of memory or the schema is recursive. */
typedef struct ev__validator ev_validator;
ev_validator *ev_validator_new(avro_schema_t schema);
void ev_validator_destroy(ev_validator *v);
/* One value at buf: 0, EV_ERR_TRUNCATED or EV_ERR_CORRUPT; *consumed is
 * where the value ended (on success) or where the problem is. */
int ev_validate(const ev_validator *v, const void *buf, size_t len, size_t *consumed);

/* Reads the schema id of a framed record without decoding it. */
int ev_frame_schema_id(const void *buf, size_t len, int32_t *id);

/* -------------------------------------------------------------------- JSON */

/* Converts an Avro value to JSON (new reference in *out). Records become
 * objects, arrays arrays, maps objects; a nullable union is null or the plain
 * value; bytes become a string of code points 0-255 (Avro's JSON encoding). */
int ev_value_to_json(const avro_value_t *value, json_t **out, char *errstr, size_t errstr_size);

/* Fills value (reset first) from JSON. Missing record fields take the
 * schema's default. Errors name the field path and what was expected:
 * "streams[0].rate_hz: expected a number, got string". */
int ev_value_from_json(avro_value_t *value, json_t *json, char *errstr, size_t errstr_size);

/* --------------------------------------------------------------- flat JSON */

/* One JSON object's members, read without building a tree (yajl's event
 * parser, strict JSON, UTF-8 checked): for the small messages a service
 * reads thousands of a second (the agent's binary frame headers and clock
 * answers; a jansson tree costs ~20 k instructions for one of them). The
 * members of the top object and of objects one level down are kept, in
 * order; deeper values and arrays' contents are checked and dropped. Keys
 * and strings are NUL-terminated copies; one longer than EV_JFLAT_STR_MAX
 * bytes (or past the reader's EV_JFLAT_TEXT bytes of copies) is kept as NULL
 * with its length. A key that repeats one of the same object is counted in
 * duplicates; lookups find the last (jansson's default). Everything lives in
 * the ev_jflat itself (~4 KiB): nothing to free, no handle. */
#define EV_JFLAT_MAX     32
#define EV_JFLAT_STR_MAX 255
#define EV_JFLAT_TEXT    2048

typedef enum ev_jkind {
    EV_JSTRING = 1,
    EV_JINTEGER, /* fits int64_t; a larger one is an error, as in jansson */
    EV_JREAL,
    EV_JTRUE,
    EV_JFALSE,
    EV_JNULL,
    EV_JOBJECT,
    EV_JARRAY,
} ev_jkind;

typedef struct ev_jmember {
    const char *key; /* NULL when longer than EV_JFLAT_STR_MAX: matches no lookup */
    int parent;      /* index of the member whose object holds it; -1: the top object */
    ev_jkind kind;
    const char *str; /* EV_JSTRING: the value, NULL when too long */
    size_t len;      /* EV_JSTRING: its length in bytes */
    int64_t integer; /* EV_JINTEGER */
    double real;     /* EV_JREAL */
} ev_jmember;

typedef struct ev_jflat {
    ev_jmember m[EV_JFLAT_MAX];
    int count;
    int duplicates;
    size_t text_used;
    char text[EV_JFLAT_TEXT];
} ev_jflat;

/* Reads text (len bytes, not NUL-terminated) as exactly one JSON object.
 * 0 on success; EV_ERR_INVALID when it is not one (errstr: the byte offset
 * and yajl's reason) or has more than EV_JFLAT_MAX members at the two kept
 * levels. */
int ev_jflat_read(ev_jflat *j, const void *text, size_t len, char *errstr, size_t errstr_size);
/* The last member named key of the object at member index parent (-1: the
 * top object), or NULL. */
const ev_jmember *ev_jflat_get(const ev_jflat *j, int parent, const char *key);
/* Its index (for ev_jflat_get's parent), or -2 when there is none or it is
 * not an object: a lookup under -2 finds nothing. */
int ev_jflat_object(const ev_jflat *j, int parent, const char *key);
/* The string member's value; NULL when absent, not a string or too long. */
const char *ev_jflat_string(const ev_jflat *j, int parent, const char *key);
/* 1 and *out when the member is an integer; else 0 (*out untouched). */
int ev_jflat_integer(const ev_jflat *j, int parent, const char *key, int64_t *out);

/* ------------------------------------------------------------ configuration */

/* An ordered set of key = value strings. Keys used by libevents:
 *   log            URI: sqlite:PATH | kafka:HOST:PORT,... | mock:HOST:PORT,...
 *   topic.prefix   default "msrs."
 *   source         CloudEvents ce_source of produced records (default "msrs")
 *   log.read_only  true: the process only reads (produce, commit and lead are
 *                  refused; an SQLite file is opened read-only, never
 *                  created or changed); default false
 *   sqlite.*       sqlite backend (docs/log.md), e.g. sqlite.synchronous=FULL
 *   kafka.*        passed to librdkafka with the prefix removed
 */
typedef struct ev_conf ev_conf;

ev_conf *ev_conf_new(void);
void ev_conf_destroy(ev_conf *conf);
/* Copies key and value. Setting a key again replaces its value. */
int ev_conf_set(ev_conf *conf, const char *key, const char *value);
/* Parses "key=value" (a -X argument). */
int ev_conf_set_pair(ev_conf *conf, const char *pair, char *errstr, size_t errstr_size);
/* The value of key, or def when unset. Borrowed from conf. */
const char *ev_conf_get(const ev_conf *conf, const char *key, const char *def);
/* Reads key as an integer; errors name the key and the bad value. */
int ev_conf_get_int(const ev_conf *conf, const char *key, int64_t def, int64_t *out, char *errstr,
                    size_t errstr_size);
/* Reads key as a boolean: true/1 or false/0; errors name the key and the
 * bad value. */
int ev_conf_get_bool(const ev_conf *conf, const char *key, int def, int *out, char *errstr,
                     size_t errstr_size);
/* Loads "key = value" lines ('#' starts a comment). Errors name the file and
 * the line. Keys already set are replaced. */
int ev_conf_load_file(ev_conf *conf, const char *path, char *errstr, size_t errstr_size);
/* Applies environment overrides: MSRS_LOG -> log, MSRS_TOPIC_PREFIX ->
 * topic.prefix, MSRS_SOURCE -> source, and MSRS_X="k=v;k=v" for any key. */
int ev_conf_apply_env(ev_conf *conf, char *errstr, size_t errstr_size);
/* Calls fn for every key starting with prefix, in insertion order, with the
 * prefix removed from the key. Stops at and returns fn's first non-zero. */
int ev_conf_foreach(const ev_conf *conf, const char *prefix,
                    int (*fn)(void *opaque, const char *key, const char *value), void *opaque);
/* Every configuration key an msrs binary reads: exact keys and "prefix.*"
 * patterns (any key that starts with "prefix."), NULL-terminated. The one
 * list of known keys, the same one docs/config.md documents (a unit test
 * compares them). Static, owned by the library. */
extern const char *const ev_conf_known_keys[];
/* Checks that every key set in conf is in known (exact keys and "prefix.*"
 * patterns, NULL-terminated; borrowed), so that a typo fails at start
 * instead of being ignored. Returns 0, or EV_ERR_INVALID for the first
 * unknown key with errstr naming it and where it was set: "FILE:LINE",
 * "environment MSRS_X", "-X" (ev_conf_set_pair), nothing for ev_conf_set:
 *   unknown configuration key "scaling.mode" (from -X; see docs/config.md) */
int ev_conf_check_keys(const ev_conf *conf, const char *const *known, char *errstr,
                       size_t errstr_size);

/* ---------------------------------------------------------------- messages */

typedef struct ev_header {
    const char *name;  /* NUL-terminated */
    const void *value; /* not NUL-terminated */
    size_t value_len;
} ev_header;

/* A record as stored on the log. Returned by ev_log_poll; every pointer is
 * owned by the log handle and valid until the next poll or destroy. */
typedef struct ev_msg {
    const char *topic; /* full topic name, prefix included */
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* producer create time, ms since the Unix epoch */
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    const ev_header *headers;
    size_t header_count;
} ev_msg;

/* The value of header name (last one wins), or NULL. */
const void *ev_msg_header(const ev_msg *msg, const char *name, size_t *len);

/* ----------------------------------------------------------------- events */

#define EV_ID_MAX     64
#define EV_SOURCE_MAX 128

/* A decoded event: a log record with its CloudEvents attributes. */
typedef struct ev_event {
    const ev_schema *schema;
    avro_value_t *value; /* owned by the codec that decoded it */
    char id[EV_ID_MAX];  /* ce_id */
    char source[EV_SOURCE_MAX];
    int64_t time_ns;   /* ce_time, ns since the Unix epoch */
    const ev_msg *msg; /* where it came from; NULL when built in memory */
} ev_event;

/* Decodes msg into ev using codec: checks the CloudEvents headers (ce_type
 * must match the framed schema id) and decodes the value. */
int ev_event_decode(ev_codec *codec, const ev_msg *msg, ev_event *ev, char *errstr,
                    size_t errstr_size);
/* The same checks (the whole record is validated) without reading the
 * value: ev->value is NULL. ev_state_apply reads it when it needs it; the
 * fold of msrs-replay and the services peeks. */
int ev_event_peek(const ev_msg *msg, ev_event *ev, char *errstr, size_t errstr_size);

/* Writes a new random event id (UUID v4 text, 36 chars + NUL) into buf. */
void ev_new_id(char buf[EV_ID_MAX]);
/* A uniform number in [0, 1) from the same generator: jitter, not secrets. */
double ev_random_unit(void);
/* Wall-clock time in ns since the Unix epoch. */
int64_t ev_now_ns(void);
/* Monotonic milliseconds (CLOCK_MONOTONIC), for intervals and deadlines. */
int64_t ev_mono_ms(void);
/* 1 when id is a valid node, device, session or stream id: 1 to
 * EV_ID_MAX - 1 characters of A-Z a-z 0-9 . _ : - (no NUL, no '/', so ids
 * compose into keys and paths); 0 otherwise. */
int ev_id_valid(const char *id);
/* mkdir -p: makes path and its missing parents (mode 0755). 0, or -1 with
 * errno set. */
int ev_mkdirs(const char *path);
/* A deterministic event id made from parts ("startcmd/%s/%s", session,
 * node): the text itself when it is shorter than EV_ID_MAX, else its first
 * 40 characters, '~' and 16 hex digits of a 64-bit hash of all of it — never
 * cut short into another id's prefix. */
void ev_event_id(char out[EV_ID_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Formats ns since the epoch as RFC 3339 UTC with nanoseconds; returns buf. */
char *ev_format_time(int64_t ns, char *buf, size_t size);
/* Parses RFC 3339 ("2026-11-22T11:13:51.123Z", offsets allowed). */
int ev_parse_time(const char *text, size_t len, int64_t *ns);

/* --------------------------------------------------------------------- log */

typedef struct ev_log ev_log;

/* Opens the log named by conf's "log" key. The backend is chosen by the URI
 * scheme. conf is read during the call only. */
int ev_log_open(ev_log **out, const ev_conf *conf, char *errstr, size_t errstr_size);
void ev_log_destroy(ev_log *log);

/* "sqlite", "kafka" or "mock". */
const char *ev_log_backend(const ev_log *log);
/* Writes prefix + name into buf ("sessions" -> "msrs.sessions"); a name that
 * already starts with the prefix is copied as it is. Returns buf. */
const char *ev_log_topic(const ev_log *log, const char *name, char *buf, size_t size);

/* Queues one raw record for topic. Copies everything passed and returns at
 * once: a backend thread writes it (librdkafka's, or the SQLite writer that
 * commits whatever is queued, one transaction at a time). Waits only when
 * the backend's queue is full (queue.buffering.max.*, sqlite.queue.max.bytes).
 * Returns EV_ERR_IO / EV_ERR_FATAL when the backend refuses it. The record
 * is acknowledged (durable) once a later ev_log_flush returns 0. */
int ev_log_produce(ev_log *log, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t value_len, const ev_header *headers,
                   size_t header_count, int64_t timestamp_ms, char *errstr, size_t errstr_size);

typedef struct ev_emit_opts {
    const char *id;     /* ce_id; NULL = new random id */
    int64_t time_ns;    /* ce_time; 0 = now */
    const char *source; /* ce_source; NULL = the log's "source" */
} ev_emit_opts;

/* Encodes value (of schema s) and queues it on the schema's topic with key
 * and the CloudEvents headers. opts may be NULL. */
int ev_log_emit(ev_log *log, const ev_schema *s, const char *key, avro_value_t *value,
                const ev_emit_opts *opts, char *errstr, size_t errstr_size);

/* Like ev_log_emit, with the record already framed (frame, len: what
 * ev_codec_encode or ev_codec_encode_samples gave for schema s; borrowed,
 * copied before it returns). */
int ev_log_emit_encoded(ev_log *log, const ev_schema *s, const char *key, const void *frame,
                        size_t len, const ev_emit_opts *opts, char *errstr, size_t errstr_size);

/* Like ev_log_emit, with the value given as JSON (borrowed; see
 * ev_value_from_json: missing fields take their defaults, errors name the
 * field). */
int ev_log_emit_json(ev_log *log, const ev_schema *s, const char *key, json_t *value,
                     const ev_emit_opts *opts, char *errstr, size_t errstr_size);

/* Waits until every queued record is acknowledged. Returns 0 when all were;
 * EV_ERR_TIMED_OUT when some are still pending; EV_ERR_IO when any failed
 * (errstr says how many and why). */
int ev_log_flush(ev_log *log, int timeout_ms, char *errstr, size_t errstr_size);

/* What is produced and not yet acknowledged: records and key+value bytes.
 * Never blocks; a producer that must not outrun the log (the agent) watches
 * it and slows its sources down. Returns EV_ERR_IO (errstr says why) while
 * the backend is failing to write them — still queued and retried (SQLite)
 * or lost (Kafka deliveries that expired). */
int ev_log_backlog(ev_log *log, int64_t *records, int64_t *bytes, char *errstr, size_t errstr_size);
/* Records produced since open that the backend gave up on and will never
 * write: Kafka deliveries that failed for good (message.timeout.ms passed,
 * a non-retriable error); 0 on SQLite, whose writer retries until written.
 * Never blocks. A producer that promises completeness (the agent) counts
 * them as lost in what it reports. */
int64_t ev_log_lost(ev_log *log);
/* The consumer's lag: records of the topics it reads (subscribed or
 * assigned) that the log holds beyond what it has polled. Never blocks:
 * Kafka's from the watermarks librdkafka last fetched (partitions whose
 * end is not known yet are left out), SQLite's from each table's last
 * offset. 0 with *records, or EV_ERR_IO (errstr). */
int ev_log_lag(ev_log *log, int64_t *records, char *errstr, size_t errstr_size);

/* Called once per catalog topic by ev_log_topics, on the caller's thread
 * before it returns (the strings are valid during the call): the full topic name,
 * ok (1: as the catalog says; 0: a problem), and what was found or done,
 * e.g. "16 partitions, cleanup.policy=delete, retention.ms=-1" or
 * "partitions: expected at least 16, found 3". */
typedef void (*ev_topic_say_fn)(void *opaque, const char *topic, int ok, const char *what);

/* Kafka: checks every catalog topic (ev_topic_*) on the cluster — it
 * exists; its partitions are at least the catalog's (the leader topic:
 * exactly 1); each catalog config (cleanup.policy, retention.ms) has the
 * catalog's value (DescribeConfigs) — and, when create is set, first makes
 * the missing ones through the Admin API (CreateTopics) with the catalog's
 * partitions and configs and replication_factor (-1: the broker's
 * default). Each request is given timeout_ms (and its answer 5 s more);
 * a topic just made is reported as made, its configs not read back (check
 * again to read them). Existing topics are
 * never changed. *problems counts topics
 * said not ok. 0, or EV_ERR_IO when the cluster cannot be asked at all;
 * EV_ERR_INVALID on SQLite, whose tables need nothing of either. */
int ev_log_topics(ev_log *log, int create, int replication_factor, int timeout_ms,
                  ev_topic_say_fn say, void *opaque, int *problems, char *errstr,
                  size_t errstr_size);

typedef enum ev_from_kind {
    EV_FROM_BEGINNING,
    EV_FROM_END,
    EV_FROM_OFFSET, /* value = offset, in every partition */
    EV_FROM_TIME,   /* value = ms since the epoch: first record at or after */
} ev_from_kind;

typedef struct ev_from {
    ev_from_kind kind;
    int64_t value;
} ev_from;

/* Consumes topics as the named cursor: starts after the cursor's committed
 * position (from the beginning when it has none) and moves it on
 * ev_log_commit. On Kafka the cursor is a consumer group: several processes
 * with one cursor share the partitions. */
int ev_log_subscribe(ev_log *log, const char *cursor, const char *const *topics, size_t topic_count,
                     char *errstr, size_t errstr_size);

/* As ev_log_subscribe, for a cursor this process alone reads (the agent's
 * commands: agent.NODE): on Kafka no consumer-group membership, so no
 * join and no rebalance — every partition of topics is assigned at once,
 * each from the cursor's committed offset (the group coordinator's
 * OffsetFetch; auto.offset.reset when none), and ev_log_commit commits to
 * it. It reads from the moment it is open (a group join took ~3 s). Two
 * processes on one such cursor would each read everything. */
int ev_log_subscribe_alone(ev_log *log, const char *cursor, const char *const *topics,
                           size_t topic_count, char *errstr, size_t errstr_size);

/* Consumes every partition of topics from a position, with no cursor. */
int ev_log_assign(ev_log *log, const char *const *topics, size_t topic_count, ev_from from,
                  char *errstr, size_t errstr_size);

/* Returns the next record in *msg, or EV_ERR_TIMED_OUT when none came within
 * timeout_ms, or EV_ERR_END — once each time the consumer catches up — when
 * every partition it reads has been read to its end (with a cursor on Kafka:
 * once the group has assigned it partitions). Records of one key come in
 * produce order. Integrity (docs/log.md):
 *   EV_ERR_CORRUPT  one record failed its checksum: *msg names it (topic,
 *                   partition, offset; its bytes are not to be trusted),
 *                   errstr too; the consumer has moved past it and the next
 *                   poll goes on. Skip it and count it.
 *   EV_ERR_FATAL    the log cannot be read on (SQLite: the file is
 *                   malformed); errstr names the file, the table and the
 *                   offset; every later poll returns it again. */
int ev_log_poll(ev_log *log, int timeout_ms, const ev_msg **msg, char *errstr, size_t errstr_size);

/* Commits the cursor: everything returned by poll so far counts as
 * consumed. At-least-once: a crash before commit redelivers. */
int ev_log_commit(ev_log *log, char *errstr, size_t errstr_size);

/* Records returned by poll whose checksum could not be checked: SQLite rows
 * written by msrs before records carried one (docs/log.md). 0 on Kafka,
 * where librdkafka checks batches (check.crcs). */
int64_t ev_log_unchecked(const ev_log *log);

/* Leadership through the log engine's own coordination, never a home-made
 * consensus. Among the processes that call ev_log_lead with one name, at
 * most one leads at a time:
 *   sqlite  a lease row (table msrs_leases) that its holder renews; a
 *           holder silent for ttl_ms loses it to the next caller.
 *   kafka   a consumer group "<prefix>lead.<name>" subscribed to the topic
 *           "<prefix>leader" (create it with one partition where brokers do
 *           not auto-create topics); the member the group assigns partition
 *           0 leads; the broker drops a member silent for ttl_ms
 *           (session.timeout.ms, at least 6000: brokers refuse less by
 *           default) and rebalances.
 * Call it at least every ttl_ms / 3: it renews the lease or serves the
 * group's heartbeats. Returns 1 when holder leads, 0 when it does not
 * (*leader: the holder that leads when the backend knows it — sqlite —
 * else ""), <0 on error. leader may be NULL. */
int ev_log_lead(ev_log *log, const char *name, const char *holder, int64_t ttl_ms, char *leader,
                size_t leader_size, char *errstr, size_t errstr_size);
/* Gives leadership of name up at once (a clean stop), so the next caller
 * leads without waiting for ttl_ms. Nothing happens when holder does not
 * lead. */
int ev_log_resign(ev_log *log, const char *name, const char *holder, char *errstr,
                  size_t errstr_size);

/* ------------------------------------------------------------------- state */

/* The state folded from node, device and session events by the reducers
 * the services and replay share. Reducers are pure: the state depends only
 * on the events applied, and applying an event id twice changes nothing. */
typedef struct ev_state ev_state;

ev_state *ev_state_new(void);
void ev_state_destroy(ev_state *state);

/* Applies one event. Returns 0 when applied, 1 when its id was seen before
 * or its record type does not change this state (ignored), <0 on an event
 * that cannot apply (errstr says why; the state is unchanged). */
int ev_state_apply(ev_state *state, const ev_event *ev, char *errstr, size_t errstr_size);

/* The state as JSON: {"nodes": {...}, "devices": {...}, "sessions": {...},
 * "events": {"applied": n, "duplicates": n, "ignored": n}}. Dump it with
 * JSON_SORT_KEYS and equal states print byte-identically. New reference
 * that shares the state's objects: do not modify it. */
json_t *ev_state_to_json(const ev_state *state);

/* ----------------------------------------------------------------- offsets */

/* What a reader has read of each topic and partition. Our logs number a
 * partition's records from 0 without gaps (SQLite by construction, Kafka
 * unless retention or the mock's 5 MiB dropped some), so a skipped offset
 * is a lost record: readers say so (ev_projection, msrs-tail). Not
 * thread-safe. */
typedef struct ev_offsets ev_offsets;

/* from_start: the reader began at the beginning, so a partition's first
 * offset must be 0; else its first record read is where it begins. NULL
 * when out of memory. */
ev_offsets *ev_offsets_new(int from_start);
void ev_offsets_destroy(ev_offsets *o);
/* Records that msg was read. Returns how many offsets before it were
 * skipped (0: none; *first_missing, may be NULL, is the first of them), or
 * EV_ERR_NOMEM. */
int64_t ev_offsets_see(ev_offsets *o, const ev_msg *msg, int64_t *first_missing);
/* Marks msg as taken (folded, applied): ev_offsets_marked says up to where. */
int ev_offsets_mark(ev_offsets *o, const ev_msg *msg);
/* {"<topic>": {"<partition>": next offset after the last marked}}: a new
 * object, owned by the caller. */
json_t *ev_offsets_marked(const ev_offsets *o);

/* -------------------------------------------------------------- projection */

/* A projection is a state folded from every record of some topics, from the
 * beginning of the log, with the shared reducers: what the services hold,
 * what msrs-replay prints. It tracks, per topic and partition, the next
 * offset read and folded; a hole in a partition's offsets (records lost,
 * e.g. to retention or the mock's 5 MiB) is counted and reported, never
 * skipped over in silence. It never prints: what a person should hear
 * comes through the note callback. Not thread-safe: one thread steps it
 * (ev_projection_fold uses a second, internal reading thread). */
typedef struct ev_projection ev_projection;

/* The topics the reducers fold: nodes, devices, clock, sessions, commands
 * (EV_STATE_TOPIC_COUNT). A read model that needs no clock leaves out
 * "clock", the busiest of them (a round per device every few seconds). */
#define EV_STATE_TOPIC_COUNT 5
extern const char *const ev_state_topics[EV_STATE_TOPIC_COUNT];

/* Where clock rounds (ClockOffsetMeasured) are: "clock", and "devices",
 * where a log written before 2026-12-04 has them. A reader of clock
 * history reads both. */
extern const char *const ev_clock_topics[2];

typedef enum ev_projection_note_kind {
    EV_PROJ_SKIPPED,    /* a record that does not decode or apply: topic, partition,
                           offset, message */
    EV_PROJ_GAP,        /* offsets offset .. offset + count - 1 of topic/partition are
                           missing from the log */
    EV_PROJ_CAUGHT_UP,  /* ev_projection_run reached the end for the first time */
    EV_PROJ_PROGRESS,   /* ev_projection_fold, about once a second */
    EV_PROJ_STATE_FILE, /* the state file could not be written: message */
    EV_PROJ_LOG_ERROR,  /* ev_projection_run: the log failed and is retried; message
                           (said once for each new message, not at every retry) */
} ev_projection_note_kind;

typedef struct ev_projection_note {
    ev_projection_note_kind kind;
    const char *topic; /* NULL for CAUGHT_UP, PROGRESS, STATE_FILE */
    int32_t partition;
    int64_t offset, count;
    int64_t records;     /* records folded so far */
    const char *message; /* what went wrong; NULL when nothing did */
} ev_projection_note;

/* Called on the thread that steps, runs or folds the projection; note and
 * its strings are valid during the call only. */
typedef void (*ev_projection_note_cb)(void *arg, const ev_projection_note *note);

typedef struct ev_projection_opts {
    ev_projection_note_cb on_note; /* NULL: notes are only counted */
    void *note_arg;
    /* Records at or past limit[topic][partition] ({"msrs.sessions": {"0": 12}},
     * full topic names) are read and not folded. Borrowed: it must outlive
     * the projection. NULL: none. */
    const json_t *limit;
    int64_t until_ns;       /* events with a later ce_time are not folded; 0: none */
    const char *state_file; /* ev_projection_run writes a snapshot here after each
                               check (copied; NULL: none) */
    /* Called after each record the reducers applied (not a duplicate, an
     * ignored type or a skipped record), on the thread that folds, with the
     * state already changed: what a live view needs to know what changed
     * (msrs-gateway). ev and ev->msg live during the call. NULL: none. */
    void (*on_apply)(void *arg, const ev_event *ev);
    void *apply_arg;
} ev_projection_opts;

/* Creates a projection of topics (logical names, at most 8) into state and
 * assigns them on log from the beginning. log and state are borrowed and
 * must outlive the projection, which is their only reader while it runs.
 * opts may be NULL. */
int ev_projection_new(ev_projection **out, ev_log *log, ev_state *state, const char *const *topics,
                      size_t topic_count, const ev_projection_opts *opts, char *errstr,
                      size_t errstr_size);
void ev_projection_destroy(ev_projection *p);

/* Polls one record and folds it. Returns 0 (folded, skipped or past a
 * bound), EV_ERR_END (caught up), EV_ERR_TIMED_OUT, or the log's error. */
int ev_projection_step(ev_projection *p, int timeout_ms, char *errstr, size_t errstr_size);

/* Called by ev_projection_run on its thread once caught up. */
typedef void (*ev_projection_check_cb)(void *arg);

/* Folds until *stop becomes non-zero; once caught up, calls check(arg)
 * every check_ms and writes the state file when records were folded since
 * the last one. Returns 0 when stopped, or the log's fatal error. */
int ev_projection_run(ev_projection *p, int64_t check_ms, ev_projection_check_cb check, void *arg,
                      const volatile sig_atomic_t *stop, char *errstr, size_t errstr_size);

/* Folds to the end of the log, reading on a second thread while this one
 * folds. Returns 0 at the end, EV_ERR_TIMED_OUT when *stop (may be NULL)
 * became non-zero first, or the log's error. */
int ev_projection_fold(ev_projection *p, const volatile sig_atomic_t *stop, char *errstr,
                       size_t errstr_size);

/* 1 once the projection has read every partition to its end at least once
 * (a service that has not must not answer from its state). */
int ev_projection_caught_up(const ev_projection *p);
/* Counters: records folded, records skipped, offset holes seen. */
int64_t ev_projection_records(const ev_projection *p);
int64_t ev_projection_skipped(const ev_projection *p);
int64_t ev_projection_gaps(const ev_projection *p);
/* How far behind the log the fold is, in time, at now_ns: the largest age
 * (now minus ce_time, so across machines it includes their clocks'
 * difference) of a record when it was folded since the last call, or, when
 * the last step did not reach the end of the log, the age of the last
 * record folded if that is more (a fold that is behind or stuck); 0 when
 * nothing was folded since and the fold is at the end. */
int64_t ev_projection_lag_ns(ev_projection *p, int64_t now_ns);

/* The state as JSON (ev_state_to_json) plus "positions" ({"<topic>":
 * {"<partition>": next offset folded}}), "records", "undecodable" and
 * "offset_gaps": what a service's state file holds and msrs-replay prints.
 * New reference, owned by the caller. */
json_t *ev_projection_snapshot(const ev_projection *p);

/* --------------------------------------------------------- placement rule */

/* Where a new device should go (scaling.strategy), a pure function of the
 * node state so every supervisor and replay agree. */
typedef enum ev_place_strategy {
    EV_PLACE_ROUND_ROBIN = 0, /* the candidates in node-id order, in turn */
    EV_PLACE_LEAST_LOADED = 1 /* the smallest ev_place_load */
} ev_place_strategy;

typedef struct ev_place_policy {
    ev_place_strategy strategy;    /* scaling.strategy */
    int64_t max_per_node;          /* scaling.max_devices_per_node; 0: the node's own */
    int64_t bandwidth_bytes_per_s; /* scaling.node_bandwidth_bytes_per_s; 0: not counted */
} ev_place_policy;

/* A node's load (its state as the reducers hold it: ev_state_node), the sum of four
 * shares, each 0 when the node did not report it: devices (device_count /
 * its limit, or / 1024 with none), CPU (cpu_load / cpu_cores), memory
 * (1 - mem_available_bytes / mem_total_bytes) and bandwidth
 * (rx_bytes_per_s / policy bandwidth). */
struct ev_node;
double ev_place_load(const struct ev_node *node, const ev_place_policy *policy);

/* Candidates: nodes not expired, with an address, with room (their last
 * heartbeat's device_count below their max_devices, capped by
 * max_per_node when it is > 0), other than exclude (may be NULL).
 * rr_cursor: round robin's position, kept by the caller. Writes the node
 * id to out and returns 0, or returns -1 when no node has room. */
int ev_place_choose(const ev_state *state, const ev_place_policy *policy, const char *exclude,
                    int64_t *rr_cursor, char *out, size_t out_size);
/* The devices a node may take: its own limit node_max capped by cap (for
 * both, 0 = no limit). The supervisor's plan and the agent's hello use it. */
int64_t ev_place_limit(int64_t node_max, int64_t cap);

/* -------------------------------------------------------------- sync rule */

/* The SynchronizationService's rule, a pure function of the state so syncd,
 * replay and tests agree. */
typedef struct ev_sync_params {
    int64_t max_uncertainty_ns; /* sync.max_uncertainty_us */
    int64_t max_age_ns;         /* sync.max_age_ms: an older offset is stale */
    int min_group;              /* sync.min_group: used when larger than the session's */
} ev_sync_params;

typedef enum ev_sync_decision {
    EV_SYNC_NONE = 0,  /* no such session, or past synchronisation */
    EV_SYNC_WAIT = 1,  /* requested, not ready: *why says what is missing */
    EV_SYNC_READY = 2, /* *completed is the SynchronizationCompleted record (JSON) */
} ev_sync_decision;

/* Decides for session_id at now_ns. The group is the session's device_ids
 * that are connected (every connected device when it names none); it is
 * ready when it has at least max(min_group of the request, params
 * min_group) devices and each has an offset no older than max_age_ns with
 * uncertainty at most max_uncertainty_ns. *completed (READY) and *stale
 * (always: {node_id: [device_id...]} of group devices whose offset is
 * missing or too old, to re-sync) are new references or NULL. */
ev_sync_decision ev_sync_decide(const ev_state *state, const char *session_id,
                                const ev_sync_params *params, int64_t now_ns, json_t **completed,
                                json_t **stale, char *why, size_t why_size);

/* --------------------------------------------------------------- clock fit */

/* The clock line of one device from two-way probes (t1 master send, t2
 * device receive, t3 device send, t4 master receive), as two one-way
 * measurements per probe: a = t2 - t1 = offset + down, b = t4 - t3 = up -
 * offset. Delays only add to their minimum, so with the drift taken out
 * offset = (min a - min b) / 2, exact when both directions' minimum delays
 * are equal however widely delays spread above them. The drift is the one
 * that makes both lower envelopes highest (their sum is concave in it:
 * golden-section search within +-EV_CLOCK_MAX_DRIFT). The agent fits its
 * window of probes live; msrs-replay --refit fits every recorded probe. */
#define EV_CLOCK_MAX_DRIFT 2e-3

typedef struct ev_clock_fit {
    double drift;     /* ns per ns (ppm * 1e-6) */
    double offset_ns; /* device - master at t = 0 */
    double gap_ns;    /* how sharply the minima are resolved: third smallest minus smallest,
                         averaged over both directions (an error estimate); -1 below 3 probes */
} ev_clock_fit;

/* t: each probe's time on the master clock, ns from an origin the caller
 * picks (offset_ns is at that origin); a, b as above; n probes. fit_drift
 * 0: the drift is taken as 0. */
void ev_clock_fit_probes(const double *t, const double *a, const double *b, int n, int fit_drift,
                         ev_clock_fit *out);

/* ---------------------------------------------------------- clock estimate */

/* The live estimate of one remote clock, kept by whoever probes it (the
 * agent for each device, the agent for its supervisor). Pure: no I/O, no
 * time read, no allocation; the ev_clock_est is plain memory the caller
 * owns (embed it or allocate it) and initialises with ev_clock_est_init.
 *
 * A round is several four-timestamp probes: t1 local send, t2 remote
 * receive, t3 remote send, t4 local receive (t1, t4 on the local clock, the
 * prober's; t2, t3 on the remote clock). Each probe gives
 *     offset = ((t2 - t1) + (t3 - t4)) / 2     (remote minus local)
 *     rtt    = (t4 - t1) - (t3 - t2)
 * and its error is at most rtt / 2 (the unknown asymmetry of the path). A
 * round keeps its minimum-RTT probe (as LSL does) for the record.
 *
 * The estimate uses more than that probe. Every valid probe of the last
 * EV_CLOCK_WINDOW is kept as its two one-way measurements
 *     a = t2 - t1 = offset + down        b = t4 - t3 = up - offset
 * With the drift taken out, min(a) = offset + min(down) and min(b) =
 * min(up) - offset, so offset = (min a - min b) / 2 is exact when the two
 * directions' minimum delays are equal, however the delays spread above
 * them; timestamp noise biases both minima alike and cancels. Once the
 * window spans EV_CLOCK_DRIFT_MIN_SPAN_NS the drift is the slope that makes
 * both lower envelopes highest (ev_clock_fit_probes, the fit msrs-replay
 * --refit uses too); before that only the last EV_CLOCK_NO_DRIFT_SPAN_NS of
 * probes count, with no drift. Remote times convert to local time through
 * the resulting line, between rounds too; before the first round ends,
 * through the first answered probe's offset; before any answer, as they
 * are (offset 0). */
#define EV_CLOCK_WINDOW            512 /* probes: 64 rounds of 8 */
#define EV_CLOCK_DRIFT_MIN_SPAN_NS 16000000000LL
#define EV_CLOCK_NO_DRIFT_SPAN_NS  4000000000LL

typedef struct ev_clock_probe {
    int64_t t1, t2, t3, t4;
} ev_clock_probe;

typedef struct ev_clock_round {
    int64_t round;
    int64_t offset_ns;      /* the fitted offset at the kept probe's t4 */
    int64_t rtt_ns;         /* of the kept (minimum-RTT) probe */
    int64_t uncertainty_ns; /* an estimate of the error of offset_ns (not a bound), >= 1 us */
    double drift_ppm;       /* slope of the fit over the last rounds */
    int probes;
    ev_clock_probe best;
} ev_clock_round;

/* Read win_count (probes in the window) and fitted (an estimate exists);
 * the rest is the estimator's. */
typedef struct ev_clock_est {
    /* current round */
    int probes;
    ev_clock_probe best;
    int64_t best_rtt;
    /* every valid probe of the window: local time (mid-point), a, b, rtt */
    int64_t win_t[EV_CLOCK_WINDOW], win_a[EV_CLOCK_WINDOW], win_b[EV_CLOCK_WINDOW],
        win_rtt[EV_CLOCK_WINDOW];
    int win_count, win_next;
    /* the probe added last, while its t3 may still be corrected
     * (ev_clock_est_sent): its slot in the window, its round */
    ev_clock_probe last;
    int last_slot, last_open;
    int64_t last_round;
    int64_t rounds;
    /* the fit */
    int fitted;
    int64_t ref_t, ref_offset;
    double drift; /* ns per ns */
    int64_t last_uncertainty_ns;
} ev_clock_est;

/* Empties c (no probe, no fit): a new remote clock. c is the caller's. */
void ev_clock_est_init(ev_clock_est *c);
/* Adds one probe (copied) to the current round. Returns 0, or
 * EV_ERR_INVALID when the probe is impossible (t4 < t1 or t3 < t2: clocks
 * went backwards), which is dropped. */
int ev_clock_est_add_probe(ev_clock_est *c, const ev_clock_probe *p);
/* The remote said, with its next answer, when its answer to the probe
 * added last really left (NTP's interleaved mode): that probe's t3 becomes
 * t3_sent, in the window and, while its round lasts, as the round's best.
 * Once per probe. Returns 0; 1 when t1 is not the probe added last, or it
 * was corrected already (nothing to correct: its answer was not used);
 * EV_ERR_INVALID, changing nothing, when t3_sent is before the t3 it
 * corrects or makes the round trip negative. */
int ev_clock_est_sent(ev_clock_est *c, int64_t t1, int64_t t3_sent);
/* Ends the round: keeps its best probe, refits. Returns 0 and fills *out
 * (the caller's), or EV_ERR_INVALID when the round had no valid probe (the
 * estimate is unchanged; the next round starts empty either way). */
int ev_clock_est_end_round(ev_clock_est *c, ev_clock_round *out);
/* Remote clock -> local clock with the current fit (identity before any). */
int64_t ev_clock_est_remote_to_local(const ev_clock_est *c, int64_t remote_ns);
/* Local clock -> remote clock. */
int64_t ev_clock_est_local_to_remote(const ev_clock_est *c, int64_t local_ns);
/* The fitted offset (remote - local) at local time local_ns; 0 before any
 * probe was answered. */
int64_t ev_clock_est_offset_at(const ev_clock_est *c, int64_t local_ns);

/* ------------------------------------------------------------ collect rule */

/* The DataCollectionService's rule, a pure function of the state. */
typedef struct ev_collect_params {
    int64_t lead_ns;           /* collect.lead_ms: start and stop instants this far ahead */
    int64_t report_timeout_ns; /* collect.report_timeout_ms: after the stop instant, stop
                                  without the reports that did not come */
    int64_t stop_notice_ns;    /* collect.stop_notice_ms: a duration's StopRecording goes
                                  this far before its instant (at least lead_ns) */
} ev_collect_params;

/* What collectord must emit now for session_id, as a JSON array (new
 * reference, possibly empty) of {"type", "key", "id", "value"}:
 *   synchronised          -> CollectionStarted (start_at = now + lead) and a
 *                            StartRecording per node of the sync group
 *   recording             -> StopRecording per node once a stop was asked
 *                            (at the request's time + lead) or the duration
 *                            ends (at start + duration, sent lead ahead)
 *   stopping              -> CollectionStopped once every node reported
 *                            (RecordingReport) or report_timeout passed,
 *                            with the reports' stream counts
 *   stop asked before the start -> CollectionStopped ("cancelled")
 * A command a node never got (a crash between emits) is sent again. Ids
 * are deterministic (start/<session>, startcmd/<session>/<node>, ...), so
 * deciding again after a restart emits duplicates every consumer ignores.
 * why, when not NULL, says what the session waits for. */
json_t *ev_collect_decide(const ev_state *state, const char *session_id,
                          const ev_collect_params *params, int64_t now_ns, char *why,
                          size_t why_size);

/* ------------------------------------------------------ schema ids (reducers) */

/* The fixed ids of schemas/catalog.json that the reducers and rules
 * dispatch on (ev_schema_id). ev_catalog_init fails when one of them does
 * not name the record its constant says, so they cannot drift apart. */
typedef enum ev_schema_ids {
    EV_SCHEMA_NODE_REGISTERED = 108,
    EV_SCHEMA_NODE_PLANNED = 102,
    EV_SCHEMA_NODE_HEARTBEAT = 107,
    EV_SCHEMA_NODE_EXPIRED = 104,
    EV_SCHEMA_DEVICE_REGISTERED = 201,
    EV_SCHEMA_DEVICE_STATUS = 202,
    EV_SCHEMA_DEVICE_DISCONNECTED = 203,
    EV_SCHEMA_CLOCK_OFFSET_MEASURED = 204,
    EV_SCHEMA_COLLECTION_REQUESTED = 301,
    EV_SCHEMA_SYNCHRONIZATION_COMPLETED = 302,
    EV_SCHEMA_COLLECTION_STARTED = 303,
    EV_SCHEMA_SYNC_MARK = 304,
    EV_SCHEMA_COLLECTION_STOPPED = 311,
    EV_SCHEMA_COLLECTION_STOP_REQUESTED = 306,
    EV_SCHEMA_RECORDING_REPORT = 310,
    EV_SCHEMA_START_RECORDING = 401,
    EV_SCHEMA_STOP_RECORDING = 402,
    EV_SCHEMA_SYNC_NOW = 403,
    EV_SCHEMA_PRESENCE_SNAPSHOT = 501,
    EV_SCHEMA_SENSOR_SAMPLE_BATCH = 601,
    EV_SCHEMA_MEDIA_PACKET = 701,
} ev_schema_ids;

/* ------------------------------------------------------ state: typed reads */

/* Reading the reducers' state without knowing its JSON layout. Every
 * const char * and json_t * that the structs below hold is borrowed from
 * the state: valid until the next ev_state_apply on it or its destroy, never
 * to be modified. Strings are "" when the state has none, unless a field
 * says otherwise. The structs are filled by value; the library keeps no
 * reference to them.
 *
 * Iteration is in the order the state first saw each id, as
 * ev_state_to_json lists them: pass after = NULL for the first; the next
 * call takes the id the last one returned. Each returns that id (the same
 * pointer as out->..._id) or NULL at the end (out untouched). Apply no event
 * to the state while iterating it. */

typedef enum ev_node_state {
    EV_NODE_NONE = 0,       /* only named by another record: no state of its own */
    EV_NODE_REGISTERED = 1, /* NodeRegistered */
    EV_NODE_PLANNED = 2,    /* NodePlanned before any heartbeat */
    EV_NODE_UP = 3,         /* NodeHeartbeat */
    EV_NODE_EXPIRED = 4,    /* NodeExpired, until it registers again */
} ev_node_state;

/* "registered", "planned", "up", "expired"; "" for EV_NODE_NONE. Static. */
const char *ev_node_state_name(ev_node_state state);

typedef struct ev_node {
    const char *node_id;
    ev_node_state state;
    const char *address;           /* NodeRegistered */
    int64_t max_devices;           /* its own limit, from registration or plan; 0: none */
    int64_t cpu_cores;             /* 0: not reported */
    int64_t mem_total_bytes;       /* 0: not reported */
    int64_t ttl_ms;                /* its plan's; 0: no plan */
    int64_t heartbeat_interval_ms; /* its plan's; 0: no plan */
    int64_t device_count;          /* last heartbeat's */
    double cpu_load;               /* last heartbeat's, busy cores */
    int64_t mem_available_bytes;   /* last heartbeat's; 0: not reported */
    double rx_bytes_per_s;         /* last heartbeat's; 0: not reported */
    int64_t registered_at_ns;      /* ce_time of its NodeRegistered; 0: none */
    int64_t last_seen_ns;          /* ce_time of its last NodeRegistered / NodeHeartbeat */
    int64_t expired_at_ns;         /* ce_time of its NodeExpired; 0: none */
    int64_t hb_mean_ns, hb_dev_ns; /* its heartbeats' interval: running mean and mean
                                      deviation (ce_time to ce_time); 0: none yet */
    const char *incarnation;       /* its agent process's id (NodeRegistered); "" */
} ev_node;

/* Fills *out with node_id's state: returns 1, or 0 when the state has no
 * such node (out untouched). */
int ev_state_node(const ev_state *state, const char *node_id, ev_node *out);
const char *ev_state_node_next(const ev_state *state, const char *after, ev_node *out);
/* 1 when node_id's last NodeRegistered named capability ("camera"), else 0. */
int ev_state_node_capability(const ev_state *state, const char *node_id, const char *capability);
/* 1 when node_id's state already has every field of record (a NodeRegistered
 * or NodePlanned value as JSON, node_id aside; borrowed) with the same
 * value: a record of it would change nothing. 0 when record is not an
 * object. */
int ev_state_node_matches(const ev_state *state, const char *node_id, const json_t *record);

typedef struct ev_device {
    const char *device_id;
    const char *node_id;           /* where it is connected (or was) */
    int connected;                 /* 1 from DeviceRegistered to DeviceDisconnected / NodeExpired */
    const char *disconnect_reason; /* "" while connected */
    int has_clock;                 /* 1 once a ClockOffsetMeasured was folded: */
    int64_t clock_offset_ns;       /*   the latest one's offset (device - master), */
    double clock_drift_ppm;        /*   drift, */
    int64_t clock_uncertainty_ns;  /*   uncertainty, */
    int64_t clock_measured_at_ns;  /*   its ce_time */
    int64_t clock_rounds;          /*   and how many were folded */
} ev_device;

/* As ev_state_node, for devices. */
int ev_state_device(const ev_state *state, const char *device_id, ev_device *out);
const char *ev_state_device_next(const ev_state *state, const char *after, ev_device *out);

typedef enum ev_session_state {
    EV_SESSION_NONE = 0,         /* only named by a command or report so far */
    EV_SESSION_REQUESTED = 1,    /* CollectionRequested */
    EV_SESSION_SYNCHRONIZED = 2, /* SynchronizationCompleted */
    EV_SESSION_RECORDING = 3,    /* CollectionStarted */
    EV_SESSION_STOPPING = 4,     /* a StopRecording was sent */
    EV_SESSION_STOPPED = 5,      /* CollectionStopped */
} ev_session_state;

/* "requested", "synchronized", "recording", "stopping", "stopped"; "" for
 * EV_SESSION_NONE. Static. */
const char *ev_session_state_name(ev_session_state state);

typedef struct ev_session {
    const char *session_id;
    ev_session_state state;
    int64_t requested_at_ns;         /* 0: not requested */
    int64_t min_group;               /* requested; 0: none */
    int64_t duration_ms;             /* requested; 0: until stopped */
    size_t device_id_count;          /* requested device_ids (ev_session_device_id); 0: all */
    int synchronized;                /* 1 once SynchronizationCompleted: */
    size_t sync_device_count;        /*   its group (ev_session_sync_device) */
    int64_t sync_max_uncertainty_ns; /*   and their worst uncertainty */
    int64_t start_at_ns;             /* CollectionStarted's instant; 0: not started */
    int has_stop_at;                 /* 1 once a StopRecording was sent: */
    int64_t stop_at_ns;              /*   its stop instant */
    int stop_requested;              /* 1 once CollectionStopRequested: */
    int64_t stop_requested_at_ns;    /*   its ce_time */
    const char *stop_request_reason; /*   its reason (NULL when it had none) */
    int64_t duration_ns;             /* CollectionStopped's; 0 before */
    const char *reason;              /* CollectionStopped's; "" before */
    size_t stream_count;             /* CollectionStopped's streams (ev_session_stream) */
    json_t *streams;                 /* the same streams as records (array), for output */
    int64_t marks;                   /* SyncMarks folded */
    const void *ev__record;          /* the library's: do not use */
} ev_session;

/* As ev_state_node, for sessions. */
int ev_state_session(const ev_state *state, const char *session_id, ev_session *out);
const char *ev_state_session_next(const ev_state *state, const char *after, ev_session *out);

/* The i-th requested device id, i < x->device_id_count; NULL past it. */
const char *ev_session_device_id(const ev_session *x, size_t i);
/* The i-th device of the synchronised group, i < x->sync_device_count:
 * writes its device and node ids ("" when absent) and returns 1; 0 past it. */
int ev_session_sync_device(const ev_session *x, size_t i, const char **device_id,
                           const char **node_id);
/* 1 when node_id was sent the session's StartRecording (stop = 0) or
 * StopRecording (stop = 1), with its instant in *at_ns (may be NULL). */
int ev_session_command(const ev_session *x, const char *node_id, int stop, int64_t *at_ns);
/* Iterates the nodes that sent a RecordingReport, in the order they came
 * (after as for ev_state_*_next); *streams (may be NULL) is the report's
 * streams array, borrowed. Returns the node id or NULL at the end. */
const char *ev_session_report_next(const ev_session *x, const char *after, json_t **streams);
/* The RecordingReport node_id sent for the session as the reducers keep it
 * (its fields but session_id and node_id), borrowed like the session; NULL
 * when the node did not report. */
const json_t *ev_session_report(const ev_session *x, const char *node_id);

/* One stream of CollectionStopped: what a device stream delivered. */
typedef struct ev_stream {
    const char *device_id, *stream_id;
    int64_t samples, bytes, gaps, dropped;
} ev_stream;
/* The i-th stream, i < x->stream_count: fills *out and returns 1; 0 past it. */
int ev_session_stream(const ev_session *x, size_t i, ev_stream *out);

/* The session as ev_state_to_json shows it (for output: msrs session
 * status): a new reference sharing the state's objects (do not modify it),
 * or NULL when there is none. */
json_t *ev_state_session_to_json(const ev_state *state, const char *session_id);

/* -------------------------------------------------------------- node rule */

/* The supervisor's rule for node liveness, a pure function of a node as
 * the state holds it (ev_state_node) and of the supervisor's parameters, so
 * leaders, replay and tests agree. It is an accrual failure detector
 * (Hayashibara's phi): from the node's heartbeat intervals (hb_mean_ns,
 * hb_dev_ns, folded from the log) it says how unlikely a silence this long
 * is, so a node whose heartbeats come late and irregularly (an overloaded
 * machine) is given longer before it is suspected or expired, and a steady
 * one is expired at its TTL as before. */
typedef struct ev_node_params {
    int64_t ttl_ns;             /* supervisor.ttl_ms: a node's TTL when its plan names none */
    int64_t heartbeat_ns;       /* supervisor.heartbeat_ms: when its plan names none */
    int64_t lead_since_ns;      /* when this supervisor began to lead: nodes could not
                                   heartbeat while no one led */
    int64_t listening_since_ns; /* since when it hears nodes again: it came back from a
                                   stall of its own loop, or caught up with its log */
    double phi_suspect;         /* supervisor.phi_suspect: stale at or above (0: 3) */
    double phi_expire;          /* supervisor.phi_expire: expired at or above (0: 8) */
} ev_node_params;

/* 1 when the node is known: in the state and not expired. Only a known
 * node is planned, heartbeats or takes devices. */
int ev_node_known(const ev_node *node);

/* phi of a silence of silent_ns: -log10 of the probability that the next
 * heartbeat comes later than that, the intervals taken as normal with the
 * node's mean (at least its heartbeat interval) and deviation (1.25 mean
 * deviations, at least a tenth of the mean). 0 for a silence shorter than
 * the mean, up to 100. */
double ev_node_phi(const ev_node *node, const ev_node_params *params, int64_t silent_ns);

/* How long the node has been silent at now_ns, counted from the latest
 * of its last_seen_ns, heard_ns and params lead_since_ns and
 * listening_since_ns; and its TTL (its plan's ttl_ms, else params ttl_ns). */
int64_t ev_node_silence_ns(const ev_node *node, int64_t heard_ns, const ev_node_params *params,
                           int64_t now_ns);
int64_t ev_node_ttl_ns(const ev_node *node, const ev_node_params *params);

/* 1 when node must expire at now_ns: it is known, silent for more than its
 * TTL (its plan's ttl_ms, else params ttl_ns) since the latest of its
 * last_seen_ns, heard_ns (when this process last heard it, outside the
 * state; 0: never) and params lead_since_ns and listening_since_ns, and
 * that silence's phi is at least phi_expire; or silent more than four TTLs
 * since the latest of last_seen_ns, heard_ns and lead_since_ns whatever
 * phi says (a supervisor that stalls again and again still expires a dead
 * node, and one stalled longer than that expires the nodes it could not
 * hear: they come back with their devices).
 * Silent exactly its TTL is not yet. An expired node is never due again
 * until it registers. */
int ev_node_expire_due(const ev_node *node, int64_t heard_ns, const ev_node_params *params,
                       int64_t now_ns);

typedef enum ev_node_presence {
    EV_PRESENCE_UP = 0,      /* heard recently, or a silence its history explains */
    EV_PRESENCE_STALE = 1,   /* known and suspected */
    EV_PRESENCE_EXPIRED = 2, /* not known (ev_node_known) */
} ev_node_presence;

/* The node's class in PresenceSnapshot at now_ns: up while now_ns -
 * last_seen_ns <= 2 heartbeat intervals (its plan's, else params
 * heartbeat_ns) or that silence's phi is below phi_suspect, then stale;
 * expired when not known. */
ev_node_presence ev_node_presence_of(const ev_node *node, const ev_node_params *params,
                                     int64_t now_ns);
/* "up", "stale", "expired". Static. */
const char *ev_node_presence_name(ev_node_presence presence);

/* ------------------------------------------------------ auto-start rule */

/* collectord's collect.auto_start: a session opened without an operator. */
typedef struct ev_auto_start_params {
    int64_t min_group;   /* sync.min_group: devices that must be connected */
    int64_t duration_ms; /* collect.auto_duration_ms: the session's; 0 = until stopped */
} ev_auto_start_params;

/* Decides at now_ns whether to open a session: when no session is live
 * (each is stopped or has no state), at least params min_group devices are
 * connected, and no session has this second's id ("auto-YYYYMMDDTHHMMSS",
 * UTC: one per second at most). Returns 1 with the id in session_id, the
 * CollectionRequested record in *request (new reference) and the connected
 * count in *connected (may be NULL); else 0 (*request NULL). */
int ev_collect_auto_start(const ev_state *state, const ev_auto_start_params *params, int64_t now_ns,
                          char *session_id, size_t session_id_size, json_t **request,
                          size_t *connected);

#ifdef __cplusplus
}
#endif
#endif /* MSRS_EV_H */
