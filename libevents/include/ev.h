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
 * Conventions (see ../shared/STYLE.md):
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
    EV_ERR_FATAL = -9,          /* the handle cannot continue; destroy it */
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
const char *ev_schema_json(const ev_schema *s);       /* the .avsc text */

/* ------------------------------------------------------------------- codec */

#define EV_FRAME_MAGIC 0x00
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
int ev_codec_encode(ev_codec *codec, const ev_schema *s, avro_value_t *value,
                    const void **out, size_t *out_len, char *errstr, size_t errstr_size);

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

/* ------------------------------------------------------------ configuration */

/* An ordered set of key = value strings. Keys used by libevents:
 *   log            URI: sqlite:PATH | kafka:HOST:PORT,... | mock:HOST:PORT,...
 *   topic.prefix   default "msrs."
 *   source         CloudEvents ce_source of produced records (default "msrs")
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
int ev_conf_get_int(const ev_conf *conf, const char *key, int64_t def, int64_t *out,
                    char *errstr, size_t errstr_size);
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

#define EV_ID_MAX 64
#define EV_SOURCE_MAX 128

/* A decoded event: a log record with its CloudEvents attributes. */
typedef struct ev_event {
    const ev_schema *schema;
    avro_value_t *value;   /* owned by the codec that decoded it */
    char id[EV_ID_MAX];    /* ce_id */
    char source[EV_SOURCE_MAX];
    int64_t time_ns;       /* ce_time, ns since the Unix epoch */
    const ev_msg *msg;     /* where it came from; NULL when built in memory */
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
/* Wall-clock time in ns since the Unix epoch. */
int64_t ev_now_ns(void);
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
int ev_log_backlog(ev_log *log, int64_t *records, int64_t *bytes, char *errstr,
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
int ev_log_subscribe(ev_log *log, const char *cursor, const char *const *topics,
                     size_t topic_count, char *errstr, size_t errstr_size);

/* Consumes every partition of topics from a position, with no cursor. */
int ev_log_assign(ev_log *log, const char *const *topics, size_t topic_count, ev_from from,
                  char *errstr, size_t errstr_size);

/* Returns the next record in *msg, or EV_ERR_TIMED_OUT when none came within
 * timeout_ms, or EV_ERR_END — once each time the consumer catches up — when
 * every partition it reads has been read to its end (with a cursor on Kafka:
 * once the group has assigned it partitions). Records of one key come in
 * produce order. */
int ev_log_poll(ev_log *log, int timeout_ms, const ev_msg **msg, char *errstr,
                size_t errstr_size);

/* Commits the cursor: everything returned by poll so far counts as
 * consumed. At-least-once: a crash before commit redelivers. */
int ev_log_commit(ev_log *log, char *errstr, size_t errstr_size);

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

/* A node's load (its state as the reducers hold it), the sum of four
 * shares, each 0 when the node did not report it: devices (device_count /
 * its limit, or / 1024 with none), CPU (cpu_load / cpu_cores), memory
 * (1 - mem_available_bytes / mem_total_bytes) and bandwidth
 * (rx_bytes_per_s / policy bandwidth). */
double ev_place_load(json_t *node, const ev_place_policy *policy);

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

/* ------------------------------------------------------------ collect rule */

/* The DataCollectionService's rule, a pure function of the state. */
typedef struct ev_collect_params {
    int64_t lead_ns;           /* collect.lead_ms: start and stop instants this far ahead */
    int64_t report_timeout_ns; /* collect.report_timeout_ms: after the stop instant, stop
                                  without the reports that did not come */
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

#ifdef __cplusplus
}
#endif
#endif /* MSRS_EV_H */
