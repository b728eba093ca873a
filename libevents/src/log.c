/* log.c — the log front: picks the backend from the URI scheme, prefixes
 * topics, and turns events into framed records with CloudEvents headers. */
#include "log_backend.h"

#include <stdio.h>
#include <string.h>

struct ev_log {
    const ev__backend *backend;
    const char *scheme;
    void *impl;
    char prefix[64];
    int read_only; /* log.read_only: produce, commit and lead are refused */
    char source[EV_SOURCE_MAX];
    ev_codec *codec;     /* for ev_log_emit; created on first use */
    char (*topics)[320]; /* prefixed topic of each catalog record, for emit */
};

static const struct {
    const char *scheme;
    const ev__backend *backend;
} backends[] = {
    {"sqlite", &ev__backend_sqlite}, {"kafka", &ev__backend_kafka}, {"mock", &ev__backend_kafka}};

int ev__topic_valid(const char *topic)
{
    size_t len = strlen(topic);
    if (len == 0 || len > 249)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = topic[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* The refusal of a write on a read-only handle. */
static int refuse_write(const char *what, char *errstr, size_t errstr_size)
{
    return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                    "%s: the log was opened read-only (log.read_only = true)", what);
}

int ev_log_open(ev_log **out, const ev_conf *conf, char *errstr, size_t errstr_size)
{
    const char *uri = ev_conf_get(conf, "log", NULL);
    const char *prefix = ev_conf_get(conf, "topic.prefix", "msrs.");
    const char *colon;
    ev_log *log;
    int rc;

    *out = NULL;
    if (!uri || !*uri)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "no log configured: pass --log sqlite:PATH or kafka:HOST:PORT "
                        "(or set MSRS_LOG)");
    colon = strchr(uri, ':');
    size_t scheme_len = colon ? (size_t)(colon - uri) : strlen(uri);
    const ev__backend *backend = NULL;
    const char *scheme = NULL;
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strlen(backends[i].scheme) == scheme_len &&
            strncmp(backends[i].scheme, uri, scheme_len) == 0) {
            backend = backends[i].backend;
            scheme = backends[i].scheme;
        }
    if (!backend)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "log '%s': unknown scheme, expected sqlite:PATH, kafka:HOST:PORT[,...] "
                        "or mock[:HOST:PORT]",
                        uri);
    if (strlen(prefix) >= sizeof(log->prefix) || (*prefix && !ev__topic_valid(prefix)))
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "config topic.prefix '%s': expected up to 63 of [A-Za-z0-9._-]", prefix);
    int read_only;
    if ((rc = ev_conf_get_bool(conf, "log.read_only", 0, &read_only, errstr, errstr_size)))
        return rc;
    log = calloc(1, sizeof(*log));
    if (!log)
        return EV_ERR_NOMEM;
    log->read_only = read_only;
    log->backend = backend;
    log->scheme = scheme;
    snprintf(log->prefix, sizeof(log->prefix), "%s", prefix);
    snprintf(log->source, sizeof(log->source), "%s", ev_conf_get(conf, "source", "msrs"));
    log->topics = calloc(ev_schema_count() ? ev_schema_count() : 1, sizeof(*log->topics));
    if (!log->topics) {
        free(log);
        return EV_ERR_NOMEM;
    }
    for (size_t i = 0; i < ev_schema_count(); i++)
        ev_log_topic(log, ev_schema_topic(ev_schema_at(i)), log->topics[i], sizeof(log->topics[i]));
    rc = backend->open(&log->impl, scheme, colon ? colon + 1 : "", conf, errstr, errstr_size);
    if (rc) {
        free(log->topics);
        free(log);
        return rc;
    }
    *out = log;
    return 0;
}

void ev_log_destroy(ev_log *log)
{
    if (!log)
        return;
    log->backend->close(log->impl);
    ev_codec_destroy(log->codec);
    free(log->topics);
    free(log);
}

const char *ev_log_backend(const ev_log *log)
{
    return log->scheme;
}

const char *ev_log_topic(const ev_log *log, const char *name, char *buf, size_t size)
{
    size_t plen = strlen(log->prefix);
    if (strncmp(name, log->prefix, plen) == 0)
        snprintf(buf, size, "%s", name);
    else
        snprintf(buf, size, "%s%s", log->prefix, name);
    return buf;
}

int ev_log_produce(ev_log *log, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t value_len, const ev_header *headers,
                   size_t header_count, int64_t timestamp_ms, char *errstr, size_t errstr_size)
{
    if (!ev__topic_valid(topic))
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "topic '%s': expected 1-249 of [A-Za-z0-9._-]", topic);
    if (log->read_only)
        return refuse_write("produce", errstr, errstr_size);
    if (timestamp_ms <= 0)
        timestamp_ms = ev_now_ns() / 1000000;
    return log->backend->produce(log->impl, topic, key, key_len, value, value_len, headers,
                                 header_count, timestamp_ms, errstr, errstr_size);
}

int ev_log_emit(ev_log *log, const ev_schema *s, const char *key, avro_value_t *value,
                const ev_emit_opts *opts, char *errstr, size_t errstr_size)
{
    const void *buf;
    size_t len;
    int rc;

    if (!key || !*key)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "emit %s: empty key (%s)",
                        ev_schema_name(s), ev_schema_key_field(s));
    if (!log->codec && !(log->codec = ev_codec_new()))
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "emit: out of memory");
    rc = ev_codec_encode(log->codec, s, value, &buf, &len, errstr, errstr_size);
    if (rc)
        return rc;
    return ev_log_emit_encoded(log, s, key, buf, len, opts, errstr, errstr_size);
}

int ev_log_emit_encoded(ev_log *log, const ev_schema *s, const char *key, const void *frame,
                        size_t len, const ev_emit_opts *opts, char *errstr, size_t errstr_size)
{
    ev__ce_storage st;
    ev_header h[EV__CE_HEADERS];

    if (!key || !*key)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "emit %s: empty key (%s)",
                        ev_schema_name(s), ev_schema_key_field(s));
    ev__ce_headers(s, opts, log->source, &st, h);
    return ev_log_produce(
        log, log->topics[ev__schema_index(s)], key, strlen(key), frame, len, h, EV__CE_HEADERS,
        (opts && opts->time_ns ? opts->time_ns : ev_now_ns()) / 1000000, errstr, errstr_size);
}

int ev_log_emit_json(ev_log *log, const ev_schema *s, const char *key, json_t *value,
                     const ev_emit_opts *opts, char *errstr, size_t errstr_size)
{
    avro_value_t *v;
    int rc;
    if (!log->codec && !(log->codec = ev_codec_new()))
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "emit: out of memory");
    if ((rc = ev_codec_value(log->codec, s, &v)) ||
        (rc = ev_value_from_json(v, value, errstr, errstr_size)))
        return rc;
    return ev_log_emit(log, s, key, v, opts, errstr, errstr_size);
}

int ev_log_flush(ev_log *log, int timeout_ms, char *errstr, size_t errstr_size)
{
    return log->backend->flush(log->impl, timeout_ms, errstr, errstr_size);
}

int ev_log_backlog(ev_log *log, int64_t *records, int64_t *bytes, char *errstr, size_t errstr_size)
{
    return log->backend->backlog(log->impl, records, bytes, errstr, errstr_size);
}

int ev_log_lag(ev_log *log, int64_t *records, char *errstr, size_t errstr_size)
{
    *records = 0;
    return log->backend->lag(log->impl, records, errstr, errstr_size);
}

int ev_log_topics(ev_log *log, int create, int replication_factor, int timeout_ms,
                  ev_topic_say_fn say, void *opaque, int *problems, char *errstr,
                  size_t errstr_size)
{
    *problems = 0;
    if (!log->backend->topics)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "this log keeps each topic in a table it makes itself: nothing to create "
                        "or check (topics create|check are for a Kafka cluster)");
    return log->backend->topics(log->impl, create, replication_factor, timeout_ms, say, opaque,
                                problems, errstr, errstr_size);
}

int64_t ev_log_lost(ev_log *log)
{
    return log->backend->lost(log->impl);
}

static int check_topics(const char *const *topics, size_t n, char *errstr, size_t errstr_size)
{
    if (n == 0)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "no topic to consume");
    for (size_t i = 0; i < n; i++)
        if (!ev__topic_valid(topics[i]))
            return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                            "topic '%s': expected 1-249 of [A-Za-z0-9._-]", topics[i]);
    return 0;
}

static int subscribe(ev_log *log, const char *cursor, const char *const *topics, size_t topic_count,
                     int alone, char *errstr, size_t errstr_size)
{
    int rc = check_topics(topics, topic_count, errstr, errstr_size);
    if (rc)
        return rc;
    if (!cursor || !*cursor)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "subscribe: empty cursor name");
    return log->backend->subscribe(log->impl, cursor, topics, topic_count, alone, errstr,
                                   errstr_size);
}

int ev_log_subscribe(ev_log *log, const char *cursor, const char *const *topics, size_t topic_count,
                     char *errstr, size_t errstr_size)
{
    return subscribe(log, cursor, topics, topic_count, 0, errstr, errstr_size);
}

int ev_log_subscribe_alone(ev_log *log, const char *cursor, const char *const *topics,
                           size_t topic_count, char *errstr, size_t errstr_size)
{
    return subscribe(log, cursor, topics, topic_count, 1, errstr, errstr_size);
}

int ev_log_assign(ev_log *log, const char *const *topics, size_t topic_count, ev_from from,
                  char *errstr, size_t errstr_size)
{
    int rc = check_topics(topics, topic_count, errstr, errstr_size);
    if (rc)
        return rc;
    return log->backend->assign(log->impl, topics, topic_count, from, errstr, errstr_size);
}

int ev_log_poll(ev_log *log, int timeout_ms, const ev_msg **msg, char *errstr, size_t errstr_size)
{
    return log->backend->poll(log->impl, timeout_ms, msg, errstr, errstr_size);
}

int ev_log_commit(ev_log *log, char *errstr, size_t errstr_size)
{
    if (log->read_only)
        return refuse_write("commit", errstr, errstr_size);
    return log->backend->commit(log->impl, errstr, errstr_size);
}

int ev_log_lead(ev_log *log, const char *name, const char *holder, int64_t ttl_ms, char *leader,
                size_t leader_size, char *errstr, size_t errstr_size)
{
    char topic[320], scratch[8];
    if (!name || !*name || strlen(name) > 128 || !holder || !*holder || strlen(holder) > 512)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "lead: expected a name (1-128 chars) and a holder (1-512 chars)");
    if (ttl_ms < 100)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "lead: ttl %lld ms: expected at least 100", (long long)ttl_ms);
    if (log->read_only)
        return refuse_write("lead", errstr, errstr_size);
    if (!leader) {
        leader = scratch;
        leader_size = sizeof(scratch);
    }
    leader[0] = '\0';
    return log->backend->lead(log->impl, ev_log_topic(log, "leader", topic, sizeof(topic)), name,
                              holder, ttl_ms, leader, leader_size, errstr, errstr_size);
}

int ev_log_resign(ev_log *log, const char *name, const char *holder, char *errstr,
                  size_t errstr_size)
{
    if (log->read_only)
        return refuse_write("resign", errstr, errstr_size);
    return log->backend->resign(log->impl, name, holder, errstr, errstr_size);
}

int64_t ev_log_unchecked(const ev_log *log)
{
    return log->backend->unchecked ? log->backend->unchecked(log->impl) : 0;
}
