/* log_kafka.c — the Kafka log through librdkafka: an idempotent producer
 * (murmur2_random, so keys land where Java clients put them) and a consumer
 * whose group is the named cursor. Scheme "mock" is the same code against
 * librdkafka's mock cluster: "mock:" alone starts one inside this process,
 * "mock:HOST:PORT" talks to the one msrs-mockbroker hosts. */
#include "log_backend.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <string.h>

#define KAFKA_MAX_HEADERS 32

typedef struct part_state {
    char *topic;
    int32_t partition;
    int at_eof;
} part_state;

typedef struct kafka_log {
    char bootstrap[1024];
    char prefix[64];             /* topic.prefix: the catalog topics the producer learns at open */
    rd_kafka_topic_t *known[16]; /* their handles, kept while the producer lives */
    size_t known_count;
    ev_conf *props;        /* kafka.* properties, prefix removed */
    rd_kafka_t *mock_host; /* owns the in-process mock cluster, if any */
    rd_kafka_mock_cluster_t *mcluster;
    rd_kafka_t *producer, *consumer;
    int64_t failed;       /* delivery failures since the last flush */
    int64_t lost;         /* delivery failures since open (ev_log_lost) */
    int64_t queued_bytes; /* key + value bytes produced, not yet delivered */
    char failure[256];    /* the first of them */
    /* consumer */
    int assigned;      /* assign mode (no cursor) */
    part_state *parts; /* what this consumer reads now, for EV_ERR_END */
    size_t part_count;
    int end_reported;
    int64_t min_time_ms; /* assign by time: records older are skipped */
    rd_kafka_message_t *current;
    /* leadership (ev_log_lead): a consumer of its own in the group */
    rd_kafka_t *lead_rk;
    char lead_name[160], lead_topic[320];
    int leading; /* partition 0 of lead_topic is assigned to us */
    ev_msg msg;
    ev_header headers[KAFKA_MAX_HEADERS];
} kafka_log;

static void parts_clear(kafka_log *k);

/* Called by rd_kafka_poll/flush on the producing thread. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kafka_log *k = opaque;
    (void)rk;
    k->queued_bytes -= (int64_t)(m->len + m->key_len);
    if (m->err) {
        k->lost++;
        if (k->failed++ == 0)
            snprintf(k->failure, sizeof(k->failure), "%s: %s",
                     m->rkt ? rd_kafka_topic_name(m->rkt) : "?", rd_kafka_err2str(m->err));
    }
}

typedef struct conf_ctx {
    rd_kafka_conf_t *rk_conf;
    char *errstr;
    size_t n;
} conf_ctx;

static int set_prop(void *opaque, const char *key, const char *value)
{
    conf_ctx *c = opaque;
    char err[256];
    if (rd_kafka_conf_set(c->rk_conf, key, value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
        return ev__fail(c->errstr, c->n, EV_ERR_INVALID, "config kafka.%s=%s: %s", key, value, err);
    return 0;
}

static int copy_prop(void *opaque, const char *key, const char *value)
{
    return ev_conf_set(opaque, key, value);
}

/* Builds an rd_kafka_conf_t: our defaults, then the user's kafka.* keys. */
static rd_kafka_conf_t *make_conf(kafka_log *k, const char *const *defaults, char *errstr, size_t n)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    conf_ctx ctx = {c, errstr, n};
    if (set_prop(&ctx, "bootstrap.servers", k->bootstrap))
        goto fail;
    for (size_t i = 0; defaults[i]; i += 2)
        if (set_prop(&ctx, defaults[i], defaults[i + 1]))
            goto fail;
    if (ev_conf_foreach(k->props, "", set_prop, &ctx))
        goto fail;
    rd_kafka_conf_set_opaque(c, k);
    return c;
fail:
    rd_kafka_conf_destroy(c);
    return NULL;
}

static void kafka_close(void *impl)
{
    kafka_log *k = impl;
    if (!k)
        return;
    if (k->current)
        rd_kafka_message_destroy(k->current);
    if (k->consumer) {
        rd_kafka_consumer_close(k->consumer);
        rd_kafka_destroy(k->consumer);
    }
    if (k->lead_rk) {
        rd_kafka_consumer_close(k->lead_rk);
        rd_kafka_destroy(k->lead_rk);
    }
    if (k->producer) {
        rd_kafka_flush(k->producer, 5000);
        for (size_t i = 0; i < k->known_count; i++)
            rd_kafka_topic_destroy(k->known[i]);
        rd_kafka_destroy(k->producer);
    }
    if (k->mcluster)
        rd_kafka_mock_cluster_destroy(k->mcluster);
    if (k->mock_host)
        rd_kafka_destroy(k->mock_host);
    parts_clear(k);
    ev_conf_destroy(k->props);
    free(k);
}

static int start_mock(kafka_log *k, char *errstr, size_t n)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "3", NULL, 0);
    k->mock_host = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!k->mock_host) {
        rd_kafka_conf_destroy(c);
        return ev__fail(errstr, n, EV_ERR_IO, "mock: %s", err);
    }
    k->mcluster = rd_kafka_mock_cluster_new(k->mock_host, 1);
    if (!k->mcluster)
        return ev__fail(errstr, n, EV_ERR_IO, "mock: cannot start a mock cluster");
    snprintf(k->bootstrap, sizeof(k->bootstrap), "%s",
             rd_kafka_mock_cluster_bootstraps(k->mcluster));
    return 0;
}

static int kafka_open_common(void **impl, const char *scheme, const char *target,
                             const ev_conf *conf, char *errstr, size_t n)
{
    kafka_log *k = calloc(1, sizeof(*k));
    int rc = 0;
    if (!k || !(k->props = ev_conf_new())) {
        free(k);
        return EV_ERR_NOMEM;
    }
    if ((rc = ev_conf_foreach(conf, "kafka.", copy_prop, k->props)))
        goto fail;
    snprintf(k->prefix, sizeof(k->prefix), "%s", ev_conf_get(conf, "topic.prefix", "msrs."));
    if (*target) {
        snprintf(k->bootstrap, sizeof(k->bootstrap), "%s", target);
    } else if (strcmp(scheme, "mock") == 0) {
        if ((rc = start_mock(k, errstr, n)))
            goto fail;
    } else {
        rc = ev__fail(errstr, n, EV_ERR_INVALID, "log 'kafka:': expected kafka:HOST:PORT[,...]");
        goto fail;
    }
    /* Check the properties now, so a typo fails at start, not at first use. */
    static const char *const none[] = {NULL};
    rd_kafka_conf_t *probe = make_conf(k, none, errstr, n);
    if (!probe) {
        rc = EV_ERR_INVALID;
        goto fail;
    }
    rd_kafka_conf_destroy(probe);
    *impl = k;
    return 0;
fail:
    kafka_close(k);
    return rc;
}

/* ------------------------------------------------------------- producer */

/* Asks the cluster for the metadata of every catalog topic, one topic
 * handle each, before the first record is produced. Without it librdkafka
 * holds a topic's first record until its metadata comes (up to ~1 s): a
 * StartRecording sent with collect.lead_ms = 1000 reached agents after the
 * start instant in 12 of 12 sessions. Best effort, within 2 s in all: a
 * cluster that does not answer fails the records later, as before. */
static void learn_topics(kafka_log *k)
{
    int64_t deadline = ev_mono_ms() + 2000;
    for (size_t i = 0; i < ev_topic_count(); i++) {
        char topic[320];
        const ev_topic *t = ev_topic_at(i);
        int64_t left = deadline - ev_mono_ms();
        if (!ev_topic_key_field(t) || left <= 0)
            continue; /* a topic without records (leader) is never produced to */
        snprintf(topic, sizeof(topic), "%s%s", k->prefix, ev_topic_name(t));
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->producer, topic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (rkt && rd_kafka_metadata(k->producer, 0, rkt, &md, (int)left) == 0)
            rd_kafka_metadata_destroy(md);
        if (rkt && k->known_count < sizeof(k->known) / sizeof(k->known[0]))
            k->known[k->known_count++] = rkt;
        else if (rkt)
            rd_kafka_topic_destroy(rkt);
    }
}

static int ensure_producer(kafka_log *k, char *errstr, size_t n)
{
    static const char *const defaults[] = {"enable.idempotence",
                                           "true",
                                           "acks",
                                           "all",
                                           "partitioner",
                                           "murmur2_random",
                                           "linger.ms",
                                           "5",
                                           "queue.buffering.max.messages",
                                           "1000000",
                                           "queue.buffering.max.kbytes",
                                           "1048576",
                                           "batch.num.messages",
                                           "10000",
                                           "message.max.bytes",
                                           "16777216",
                                           "log_level",
                                           "3",
                                           NULL};
    char err[512];
    rd_kafka_conf_t *c;
    if (k->producer)
        return 0;
    if (!(c = make_conf(k, defaults, errstr, n)))
        return EV_ERR_INVALID;
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    k->producer = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!k->producer) {
        rd_kafka_conf_destroy(c);
        return ev__fail(errstr, n, EV_ERR_INVALID, "kafka producer: %s", err);
    }
    learn_topics(k);
    return 0;
}

static int kafka_produce(void *impl, const char *topic, const void *key, size_t key_len,
                         const void *value, size_t value_len, const ev_header *headers,
                         size_t header_count, int64_t timestamp_ms, char *errstr, size_t n)
{
    kafka_log *k = impl;
    rd_kafka_resp_err_t err;
    int rc = ensure_producer(k, errstr, n);
    if (rc)
        return rc;
    for (int attempt = 0;; attempt++) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(header_count);
        for (size_t i = 0; i < header_count; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                (ssize_t)headers[i].value_len);
        err = rd_kafka_producev(
            k->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
            RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_TIMESTAMP(timestamp_ms), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (!err) {
            k->queued_bytes += (int64_t)(key_len + value_len);
            break;
        }
        rd_kafka_headers_destroy(hdrs);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && attempt < 1000) {
            rd_kafka_poll(k->producer, 10); /* backpressure: wait for deliveries */
            continue;
        }
        return ev__fail(errstr, n, err == RD_KAFKA_RESP_ERR__FATAL ? EV_ERR_FATAL : EV_ERR_IO,
                        "%s: produce: %s", topic, rd_kafka_err2str(err));
    }
    rd_kafka_poll(k->producer, 0);
    return 0;
}

static int kafka_flush(void *impl, int timeout_ms, char *errstr, size_t n)
{
    kafka_log *k = impl;
    if (!k->producer)
        return 0;
    rd_kafka_resp_err_t err = rd_kafka_flush(k->producer, timeout_ms);
    if (k->failed) {
        int rc = ev__fail(errstr, n, EV_ERR_IO, "%lld records not acknowledged, first: %s",
                          (long long)k->failed, k->failure);
        k->failed = 0;
        return rc;
    }
    if (err == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return ev__fail(errstr, n, EV_ERR_TIMED_OUT, "%d records still in flight after %d ms",
                        rd_kafka_outq_len(k->producer), timeout_ms);
    return 0;
}

static int kafka_backlog(void *impl, int64_t *records, int64_t *bytes, char *errstr, size_t n)
{
    kafka_log *k = impl;
    *records = *bytes = 0;
    if (!k->producer)
        return 0;
    rd_kafka_poll(k->producer, 0); /* serve delivery reports */
    *records = rd_kafka_outq_len(k->producer);
    *bytes = k->queued_bytes;
    if (k->failed)
        return ev__fail(errstr, n, EV_ERR_IO, "%lld records not delivered, first: %s",
                        (long long)k->failed, k->failure);
    return 0;
}

static int64_t kafka_lost(void *impl)
{
    kafka_log *k = impl;
    if (k->producer)
        rd_kafka_poll(k->producer, 0); /* serve delivery reports */
    return k->lost;
}

/* ------------------------------------------------------------- consumer */

static void parts_clear(kafka_log *k)
{
    for (size_t i = 0; i < k->part_count; i++)
        free(k->parts[i].topic);
    free(k->parts);
    k->parts = NULL;
    k->part_count = 0;
}

static int parts_set(kafka_log *k, const rd_kafka_topic_partition_list_t *l)
{
    parts_clear(k);
    k->end_reported = 0;
    k->parts = calloc(l->cnt > 0 ? (size_t)l->cnt : 1, sizeof(*k->parts));
    if (!k->parts)
        return EV_ERR_NOMEM;
    for (int i = 0; i < l->cnt; i++) {
        k->parts[i].topic = strdup(l->elems[i].topic);
        k->parts[i].partition = l->elems[i].partition;
    }
    k->part_count = (size_t)l->cnt;
    return 0;
}

/* Runs inside rd_kafka_consumer_poll, on the polling thread: keeps the list
 * of partitions this group member reads, so EV_ERR_END works with cursors. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_log *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        parts_set(k, parts);
        rd_kafka_assign(rk, parts);
    } else {
        parts_clear(k);
        rd_kafka_assign(rk, NULL);
    }
}

/* fetch_wait_ms: fetch.wait.max.ms, how long a broker holds a fetch that
 * finds nothing. A real broker answers as soon as data comes, the mock
 * cluster only after the wait: short for readers that follow the log (10),
 * longer for one that reads rare records (the agent's commands: 100), since
 * every idle consumer sends a fetch per wait — 64 agents at 10 ms send one
 * mock broker 6400 fetches a second (issue 23). */
static int ensure_consumer(kafka_log *k, const char *group, const char *fetch_wait_ms, char *errstr,
                           size_t n)
{
    const char *const defaults[] = {
        "enable.auto.commit", "false", "enable.auto.offset.store", "true", "auto.offset.reset",
        "earliest", "enable.partition.eof", "true", "queued.min.messages", "1000000",
        "fetch.wait.max.ms", fetch_wait_ms, "session.timeout.ms", "6000", "heartbeat.interval.ms",
        "500", "allow.auto.create.topics", "true", "log_level", "3",
        /* verify every fetched batch's
         * CRC-32C (docs/log.md) */
        "check.crcs", "true", NULL};
    char err[512];
    rd_kafka_conf_t *c;
    if (k->consumer) {
        return ev__fail(errstr, n, EV_ERR_INVALID,
                        "a log handle consumes once: open another to subscribe or assign again");
    }
    if (!(c = make_conf(k, defaults, errstr, n)))
        return EV_ERR_INVALID;
    rd_kafka_conf_set_rebalance_cb(c, on_rebalance);
    if (rd_kafka_conf_set(c, "group.id", group, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(c);
        return ev__fail(errstr, n, EV_ERR_INVALID, "cursor '%s': %s", group, err);
    }
    k->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (!k->consumer) {
        rd_kafka_conf_destroy(c);
        return ev__fail(errstr, n, EV_ERR_INVALID, "kafka consumer: %s", err);
    }
    rd_kafka_poll_set_consumer(k->consumer);
    return 0;
}

static rd_kafka_topic_partition_list_t *topic_list(const char *const *topics, size_t count)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)count);
    for (size_t i = 0; i < count; i++)
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    return l;
}

static int every_partition(kafka_log *k, const char *const *topics, size_t count, int64_t offset,
                           rd_kafka_topic_partition_list_t *l, char *errstr, size_t n);
static int assign_list(kafka_log *k, rd_kafka_topic_partition_list_t *l, char *errstr, size_t n);

/* ev_log_subscribe_alone: every partition assigned, each from the group's
 * committed offset (RD_KAFKA_OFFSET_STORED), without joining the group. */
static int subscribe_alone(kafka_log *k, const char *const *topics, size_t count, char *errstr,
                           size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    int rc = every_partition(k, topics, count, RD_KAFKA_OFFSET_STORED, l, errstr, n);
    if (!rc)
        rc = assign_list(k, l, errstr, n);
    rd_kafka_topic_partition_list_destroy(l);
    k->assigned = 0; /* a cursor: commits go to it */
    return rc;
}

static int kafka_subscribe(void *impl, const char *cursor, const char *const *topics, size_t count,
                           int alone, char *errstr, size_t n)
{
    kafka_log *k = impl;
    int rc = ensure_consumer(k, cursor, alone ? "100" : "10", errstr, n);
    if (rc)
        return rc;
    if (alone)
        return subscribe_alone(k, topics, count, errstr, n);
    rd_kafka_topic_partition_list_t *l = topic_list(topics, count);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(k->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return ev__fail(errstr, n, EV_ERR_IO, "subscribe: %s", rd_kafka_err2str(err));
    k->assigned = 0;
    return 0;
}

/* Number of partitions of topic; creates it on brokers that auto-create. */
static int partition_count(rd_kafka_t *rk, const char *topic, int *count, char *errstr, size_t n)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TRANSPORT;
    for (int attempt = 0; attempt < 20; attempt++) {
        err = rd_kafka_metadata(rk, 0, t, &md, 5000);
        if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0)
            break;
        if (!err) {
            err = md->topic_cnt == 1 && md->topics[0].err ? md->topics[0].err
                                                          : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
            rd_kafka_metadata_destroy(md);
            md = NULL;
        }
        rd_kafka_poll(rk, 100); /* topic being created: ask again */
    }
    rd_kafka_topic_destroy(t);
    if (!md)
        return ev__fail(errstr, n, EV_ERR_IO, "%s: metadata: %s", topic, rd_kafka_err2str(err));
    *count = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return 0;
}

/* Adds every partition of topics to l, each at offset. */
static int every_partition(kafka_log *k, const char *const *topics, size_t count, int64_t offset,
                           rd_kafka_topic_partition_list_t *l, char *errstr, size_t n)
{
    for (size_t i = 0; i < count; i++) {
        int parts = 0, rc = partition_count(k->consumer, topics[i], &parts, errstr, n);
        if (rc)
            return rc;
        for (int p = 0; p < parts; p++)
            rd_kafka_topic_partition_list_add(l, topics[i], p)->offset = offset;
    }
    return 0;
}

/* Reads the partitions of l: kept for EV_ERR_END, and assigned. */
static int assign_list(kafka_log *k, rd_kafka_topic_partition_list_t *l, char *errstr, size_t n)
{
    int rc = parts_set(k, l);
    if (rc)
        return rc;
    rd_kafka_resp_err_t err = rd_kafka_assign(k->consumer, l);
    return err ? ev__fail(errstr, n, EV_ERR_IO, "assign: %s", rd_kafka_err2str(err)) : 0;
}

static int kafka_assign(void *impl, const char *const *topics, size_t count, ev_from from,
                        char *errstr, size_t n)
{
    kafka_log *k = impl;
    char group[96], id[EV_ID_MAX];
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t err;
    int rc;

    ev_new_id(id);
    snprintf(group, sizeof(group), "msrs-assign-%s", id); /* never committed */
    if ((rc = ensure_consumer(k, group, "10", errstr, n)))
        return rc;
    l = rd_kafka_topic_partition_list_new(16);
    if ((rc = every_partition(k, topics, count,
                              from.kind == EV_FROM_BEGINNING ? RD_KAFKA_OFFSET_BEGINNING
                              : from.kind == EV_FROM_END     ? RD_KAFKA_OFFSET_END
                                                             : from.value,
                              l, errstr, n)))
        goto out;
    if (from.kind == EV_FROM_TIME) {
        err = rd_kafka_offsets_for_times(k->consumer, l, 10000);
        if (err) {
            rc = ev__fail(errstr, n, EV_ERR_IO, "seek by time: %s", rd_kafka_err2str(err));
            goto out;
        }
        /* A broker answers -1 both for "no record at or after" and, the mock
         * cluster, for "no time index": read such a partition from its start
         * and skip older records here (min_time_ms), which is right either way. */
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].offset < 0)
                l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        k->min_time_ms = from.value;
    }
    rc = assign_list(k, l, errstr, n);
    k->assigned = 1;
out:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static part_state *find_part(kafka_log *k, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    for (size_t i = 0; i < k->part_count; i++)
        if (k->parts[i].partition == m->partition && strcmp(k->parts[i].topic, topic) == 0)
            return &k->parts[i];
    return NULL;
}

static int all_at_eof(kafka_log *k)
{
    for (size_t i = 0; i < k->part_count; i++)
        if (!k->parts[i].at_eof)
            return 0;
    return 1;
}

static void fill_msg(kafka_log *k, rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    k->msg.topic = rd_kafka_topic_name(m->rkt);
    k->msg.partition = m->partition;
    k->msg.offset = m->offset;
    k->msg.timestamp_ms = rd_kafka_message_timestamp(m, NULL);
    k->msg.key = m->key;
    k->msg.key_len = m->key_len;
    k->msg.value = m->payload;
    k->msg.value_len = m->len;
    k->msg.headers = k->headers;
    k->msg.header_count = 0;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0;
             i < KAFKA_MAX_HEADERS && rd_kafka_header_get_all(hdrs, i, &name, &val, &len) == 0; i++)
            k->headers[k->msg.header_count++] = (ev_header){name, val ? val : "", val ? len : 0};
    }
}

static int kafka_poll(void *impl, int timeout_ms, const ev_msg **msg, char *errstr, size_t n)
{
    kafka_log *k = impl;
    int64_t deadline = ev_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    if (!k->consumer)
        return ev__fail(errstr, n, EV_ERR_INVALID, "poll: neither subscribed nor assigned");
    if (k->current) {
        rd_kafka_message_destroy(k->current);
        k->current = NULL;
    }
    for (;;) {
        int64_t left = deadline - ev_mono_ms();
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->consumer, left > 0 ? (int)left : 0);
        if (!m) {
            if (ev_mono_ms() >= deadline)
                return EV_ERR_TIMED_OUT;
            continue;
        }
        if (!m->err && k->min_time_ms && rd_kafka_message_timestamp(m, NULL) < k->min_time_ms) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!m->err) {
            part_state *ps = find_part(k, m);
            if (ps)
                ps->at_eof = 0;
            k->end_reported = 0;
            k->current = m;
            fill_msg(k, m);
            *msg = &k->msg;
            return 0;
        }
        rd_kafka_resp_err_t err = m->err;
        if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            part_state *ps = find_part(k, m);
            rd_kafka_message_destroy(m);
            if (ps)
                ps->at_eof = 1;
            if (!k->end_reported && k->part_count > 0 && all_at_eof(k)) {
                k->end_reported = 1;
                return EV_ERR_END;
            }
            continue;
        }
        char text[256];
        snprintf(text, sizeof(text), "%s", rd_kafka_message_errstr(m));
        if (err == RD_KAFKA_RESP_ERR__BAD_MSG && m->rkt) {
            /* check.crcs: a batch whose checksum does not match. The
             * record is named and the consumer goes on after it. */
            k->current = m;
            k->msg = (ev_msg){.topic = rd_kafka_topic_name(m->rkt),
                              .partition = m->partition,
                              .offset = m->offset,
                              .headers = k->headers};
            *msg = &k->msg;
            return ev__fail(errstr, n, EV_ERR_CORRUPT, "%s [%d] offset %lld: corrupt: %s",
                            k->msg.topic, (int)m->partition, (long long)m->offset, text);
        }
        rd_kafka_message_destroy(m);
        if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
            err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
            continue; /* subscribed before the topic exists: it will appear */
        char fatal[256];
        if (err == RD_KAFKA_RESP_ERR__FATAL &&
            rd_kafka_fatal_error(k->consumer, fatal, sizeof(fatal)))
            return ev__fail(errstr, n, EV_ERR_FATAL, "kafka consumer: %s", fatal);
        return ev__fail(errstr, n, EV_ERR_IO, "kafka consumer: %s", text);
    }
}

static int kafka_commit(void *impl, char *errstr, size_t n)
{
    kafka_log *k = impl;
    if (!k->consumer || k->assigned)
        return ev__fail(errstr, n, EV_ERR_INVALID, "commit: not subscribed with a cursor");
    rd_kafka_resp_err_t err = rd_kafka_commit(k->consumer, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        return ev__fail(errstr, n, EV_ERR_IO, "commit: %s", rd_kafka_err2str(err));
    return 0;
}

/* ------------------------------------------------------------ leadership */

/* Cooperative (incremental) rebalancing: a member joining or leaving moves
 * only the partitions that must move, so the leader keeps partition 0 while
 * others come and go (an eager rebalance would revoke it from everyone for
 * the length of the rebalance: no leader for seconds). */
static void on_lead_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                              rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kafka_log *k = opaque;
    int has0 = 0;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition == 0 && strcmp(parts->elems[i].topic, k->lead_topic) == 0)
            has0 = 1;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        k->leading |= has0;
        rd_kafka_error_destroy(rd_kafka_incremental_assign(rk, parts));
    } else {
        if (has0 || err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            k->leading = 0;
        rd_kafka_error_destroy(rd_kafka_incremental_unassign(rk, parts));
    }
}

/* The group "<prefix>lead.<name>" on topic: the member holding partition 0
 * leads. The group's own liveness (session.timeout.ms = ttl) is the lease. */
static int kafka_lead(void *impl, const char *topic, const char *name, const char *holder,
                      int64_t ttl_ms, char *leader, size_t leader_size, char *errstr, size_t n)
{
    kafka_log *k = impl;
    (void)leader_size;
    if (k->lead_rk && strcmp(k->lead_name, name) != 0)
        return ev__fail(errstr, n, EV_ERR_INVALID,
                        "lead: this log handle already competes for '%s'", k->lead_name);
    if (!k->lead_rk) {
        char session[32], heartbeat[32], group[512], err[512];
        size_t plen = strlen(topic) - strlen("leader");
        /* Brokers refuse sessions under group.min.session.timeout.ms (6 s by
         * default), and the mock cluster never answers their JoinGroup. */
        ttl_ms = ttl_ms < 6000 ? 6000 : ttl_ms;
        snprintf(session, sizeof(session), "%lld", (long long)ttl_ms);
        snprintf(heartbeat, sizeof(heartbeat), "%lld",
                 (long long)(ttl_ms / 4 > 0 ? ttl_ms / 4 : 1));
        snprintf(group, sizeof(group), "%.*slead.%s", (int)plen, topic, name);
        const char *const defaults[] = {"enable.auto.commit",
                                        "false",
                                        "auto.offset.reset",
                                        "latest",
                                        "session.timeout.ms",
                                        session,
                                        "heartbeat.interval.ms",
                                        heartbeat,
                                        "allow.auto.create.topics",
                                        "true",
                                        "client.id",
                                        holder,
                                        "partition.assignment.strategy",
                                        "cooperative-sticky",
                                        "log_level",
                                        "3",
                                        NULL};
        rd_kafka_conf_t *c = make_conf(k, defaults, errstr, n);
        if (!c)
            return EV_ERR_INVALID;
        rd_kafka_conf_set_rebalance_cb(c, on_lead_rebalance);
        if (rd_kafka_conf_set(c, "group.id", group, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(c);
            return ev__fail(errstr, n, EV_ERR_INVALID, "lead '%s': %s", name, err);
        }
        if (!(k->lead_rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err)))) {
            rd_kafka_conf_destroy(c);
            return ev__fail(errstr, n, EV_ERR_INVALID, "lead '%s': kafka consumer: %s", name, err);
        }
        snprintf(k->lead_name, sizeof(k->lead_name), "%s", name);
        snprintf(k->lead_topic, sizeof(k->lead_topic), "%s", topic);
        rd_kafka_poll_set_consumer(k->lead_rk);
        /* One partition, or a rebalance could hand partition 0 (the lead)
         * to a member that just joined. */
        int parts = 0, rc;
        if (k->mcluster)
            rd_kafka_mock_topic_create(k->mcluster, topic, 1, 1);
        if ((rc = partition_count(k->lead_rk, topic, &parts, errstr, n)))
            return rc;
        if (parts != 1)
            return ev__fail(errstr, n, EV_ERR_INVALID,
                            "lead '%s': topic %s has %d partitions: leadership needs a topic of "
                            "exactly one (create it so)",
                            name, topic, parts);
        rd_kafka_topic_partition_list_t *l = topic_list(&topic, 1);
        rd_kafka_resp_err_t e = rd_kafka_subscribe(k->lead_rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (e)
            return ev__fail(errstr, n, EV_ERR_IO, "lead '%s': subscribe %s: %s", name, topic,
                            rd_kafka_err2str(e));
    }
    /* Serves the group: heartbeats run in librdkafka's thread, rebalances here. */
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(k->lead_rk, 0)))
        rd_kafka_message_destroy(m);
    if (k->leading)
        snprintf(leader, leader_size, "%s", holder);
    return k->leading;
}

static int kafka_resign(void *impl, const char *name, const char *holder, char *errstr, size_t n)
{
    kafka_log *k = impl;
    (void)holder, (void)errstr, (void)n;
    if (!k->lead_rk || strcmp(k->lead_name, name) != 0)
        return 0;
    rd_kafka_consumer_close(k->lead_rk); /* leaves the group: it rebalances at once */
    rd_kafka_destroy(k->lead_rk);
    k->lead_rk = NULL;
    k->leading = 0;
    return 0;
}

static int kafka_lag(void *impl, int64_t *records, char *errstr, size_t n)
{
    kafka_log *k = impl;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (!k->consumer)
        return 0;
    rd_kafka_resp_err_t e = rd_kafka_assignment(k->consumer, &parts);
    if (e)
        return ev__fail(errstr, n, EV_ERR_IO, "kafka lag: %s", rd_kafka_err2str(e));
    rd_kafka_position(k->consumer, parts);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t lo = 0, hi = 0;
        if (rd_kafka_get_watermark_offsets(k->consumer, p->topic, p->partition, &lo, &hi) || hi < 0)
            continue; /* its end not fetched yet */
        int64_t at = p->offset >= 0 ? p->offset : lo;
        if (hi > at)
            *records += hi - at;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return 0;
}

/* ------------------------------------------------------------ topics admin */

/* What ev_log_topics learns of each catalog topic (index as ev_topic_at). */
typedef struct topic_state {
    int partitions; /* found or made; -1: not on the cluster */
    int created;    /* made by this call: its configs are the catalog's */
    char why[256];  /* the first problem; "" none */
} topic_state;

/* The catalog topic's configs as "k=v, k=v" into buf. */
static void config_text(const ev_topic *t, char *buf, size_t size)
{
    const char *key;
    json_t *v;
    size_t o = 0;
    buf[0] = '\0';
    json_object_foreach((json_t *)ev_topic_config(t), key, v)
    {
        int w = snprintf(buf + o, size - o, "%s%s=%s", o ? ", " : "", key, json_string_value(v));
        if (w < 0 || (size_t)w >= size - o)
            break;
        o += (size_t)w;
    }
}

/* Waits for an admin result on q: the request was given timeout_ms, its
 * answer 5 s more. The event (caller destroys), or NULL with errstr set. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, int timeout_ms, const char *what,
                                    char *errstr, size_t n)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 5000);
    if (!ev)
        ev__fail(errstr, n, EV_ERR_TIMED_OUT, "%s: no answer within %d ms", what,
                 timeout_ms + 5000);
    else if (rd_kafka_event_error(ev)) {
        ev__fail(errstr, n, EV_ERR_IO, "%s: %s", what, rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        ev = NULL;
    }
    return ev;
}

/* What an admin request leaves: its result, options and queue (any NULL). */
static void admin_free(rd_kafka_event_t *ev, rd_kafka_AdminOptions_t *o, rd_kafka_queue_t *q)
{
    if (ev)
        rd_kafka_event_destroy(ev);
    if (o)
        rd_kafka_AdminOptions_destroy(o);
    if (q)
        rd_kafka_queue_destroy(q);
}

/* A new topic as the catalog says, or NULL with why set. */
static rd_kafka_NewTopic_t *new_topic(const char *name, const ev_topic *t, int replication,
                                      char *why, size_t why_size)
{
    char err[256];
    const char *key;
    json_t *v;
    rd_kafka_NewTopic_t *nw =
        rd_kafka_NewTopic_new(name, ev_topic_partitions(t), replication, err, sizeof(err));
    if (!nw) {
        snprintf(why, why_size, "not created: %.200s", err);
        return NULL;
    }
    json_object_foreach((json_t *)ev_topic_config(t), key, v)
    {
        if (rd_kafka_NewTopic_set_config(nw, key, json_string_value(v))) {
            snprintf(why, why_size, "not created: config %s refused by librdkafka", key);
            rd_kafka_NewTopic_destroy(nw);
            return NULL;
        }
    }
    return nw;
}

/* CreateTopics for the catalog topics not on the cluster. */
static int create_missing(kafka_log *k, rd_kafka_t *rk, int replication, int timeout_ms,
                          topic_state *st)
{
    size_t nt = ev_topic_count(), count = 0, rc = 0;
    rd_kafka_NewTopic_t **nts = calloc(nt, sizeof(*nts));
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *o = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_topic_result_t **res = NULL;
    char err[512], name[320];
    if (!nts)
        return EV_ERR_NOMEM;
    for (size_t i = 0; i < nt; i++) {
        snprintf(name, sizeof(name), "%s%s", k->prefix, ev_topic_name(ev_topic_at(i)));
        if (st[i].partitions < 0 && (nts[count] = new_topic(name, ev_topic_at(i), replication,
                                                            st[i].why, sizeof(st[i].why))))
            count++;
    }
    if (!count)
        goto out;
    q = rd_kafka_queue_new(rk);
    o = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(o, timeout_ms, err, sizeof(err));
    rd_kafka_AdminOptions_set_request_timeout(o, timeout_ms, err, sizeof(err));
    rd_kafka_CreateTopics(rk, nts, count, o, q);
    if ((ev = admin_wait(q, timeout_ms, "CreateTopics", err, sizeof(err))))
        res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &rc);
    for (size_t i = 0; i < nt; i++) {
        if (st[i].partitions >= 0 || st[i].why[0])
            continue;
        snprintf(name, sizeof(name), "%s%s", k->prefix, ev_topic_name(ev_topic_at(i)));
        snprintf(st[i].why, sizeof(st[i].why), "not created: %.200s", ev ? "no result" : err);
        for (size_t j = 0; j < rc; j++) {
            if (strcmp(rd_kafka_topic_result_name(res[j]), name) != 0)
                continue;
            if (rd_kafka_topic_result_error(res[j])) {
                snprintf(st[i].why, sizeof(st[i].why), "not created: %s",
                         rd_kafka_topic_result_error_string(res[j]));
            } else {
                st[i].partitions = ev_topic_partitions(ev_topic_at(i));
                st[i].created = 1;
                st[i].why[0] = '\0';
            }
        }
    }
out:
    admin_free(ev, o, q);
    rd_kafka_NewTopic_destroy_array(nts, count);
    free(nts);
    return 0;
}

/* The first of a topic's catalog configs the resource r differs in, into
 * why; nothing when all match. */
static void compare_configs(const ev_topic *t, const rd_kafka_ConfigResource_t *r, char *why,
                            size_t why_size)
{
    size_t ec = 0;
    const rd_kafka_ConfigEntry_t **entries = rd_kafka_ConfigResource_configs(r, &ec);
    const char *key;
    json_t *want;
    json_object_foreach((json_t *)ev_topic_config(t), key, want)
    {
        const char *got = NULL;
        for (size_t e = 0; e < ec; e++)
            if (strcmp(rd_kafka_ConfigEntry_name(entries[e]), key) == 0)
                got = rd_kafka_ConfigEntry_value(entries[e]);
        if (!why[0] && (!got || strcmp(got, json_string_value(want)) != 0))
            snprintf(why, why_size, "%s: expected %s, found %s", key, json_string_value(want),
                     got ? got : "none");
    }
}

/* DescribeConfigs of the topics found (not the ones just made, whose
 * configs are the catalog's: `check` reads those back). */
static int check_configs(kafka_log *k, rd_kafka_t *rk, int timeout_ms, topic_state *st)
{
    size_t nt = ev_topic_count(), count = 0, rc = 0;
    rd_kafka_ConfigResource_t **rs = calloc(nt, sizeof(*rs));
    size_t *index = calloc(nt, sizeof(*index));
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *o = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_ConfigResource_t **res = NULL;
    char err[512], name[320];
    int status = 0;
    if (!rs || !index) {
        status = EV_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < nt; i++) {
        if (st[i].partitions < 0 || st[i].created || st[i].why[0])
            continue;
        snprintf(name, sizeof(name), "%s%s", k->prefix, ev_topic_name(ev_topic_at(i)));
        index[count] = i;
        rs[count++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
    }
    if (!count)
        goto out;
    q = rd_kafka_queue_new(rk);
    o = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(o, timeout_ms, err, sizeof(err));
    rd_kafka_DescribeConfigs(rk, rs, count, o, q);
    if ((ev = admin_wait(q, timeout_ms, "DescribeConfigs", err, sizeof(err))))
        res = rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev),
                                                        &rc);
    for (size_t c = 0; c < count; c++) {
        topic_state *t = &st[index[c]];
        const rd_kafka_ConfigResource_t *r = NULL;
        for (size_t j = 0; j < rc; j++)
            if (strcmp(rd_kafka_ConfigResource_name(res[j]), rd_kafka_ConfigResource_name(rs[c])) ==
                0)
                r = res[j];
        if (!r || rd_kafka_ConfigResource_error(r))
            snprintf(t->why, sizeof(t->why), "configs not checked: %.200s",
                     !ev ? err
                     : r ? rd_kafka_ConfigResource_error_string(r)
                         : "no result");
        else
            compare_configs(ev_topic_at(index[c]), r, t->why, sizeof(t->why));
    }
out:
    admin_free(ev, o, q);
    if (rs)
        rd_kafka_ConfigResource_destroy_array(rs, count);
    free(rs);
    free(index);
    return status;
}

/* Partitions of each catalog topic from the cluster's metadata. */
static int read_partitions(kafka_log *k, rd_kafka_t *rk, int timeout_ms, topic_state *st,
                           char *errstr, size_t n)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (e)
        return ev__fail(errstr, n, EV_ERR_IO, "kafka %s: cannot read the cluster's topics: %s",
                        k->bootstrap, rd_kafka_err2str(e));
    for (size_t i = 0; i < ev_topic_count(); i++) {
        char name[320];
        snprintf(name, sizeof(name), "%s%s", k->prefix, ev_topic_name(ev_topic_at(i)));
        st[i].partitions = -1;
        for (int j = 0; j < md->topic_cnt; j++)
            if (strcmp(md->topics[j].topic, name) == 0 && !md->topics[j].err)
                st[i].partitions = md->topics[j].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return 0;
}

/* What each topic's partitions say against the catalog, into why. */
static void check_partitions(topic_state *st)
{
    for (size_t i = 0; i < ev_topic_count(); i++) {
        const ev_topic *t = ev_topic_at(i);
        if (st[i].why[0])
            continue;
        if (st[i].partitions < 0)
            snprintf(st[i].why, sizeof(st[i].why), "missing (msrs topics create makes it)");
        else if (ev_topic_partitions_exact(t) && st[i].partitions != ev_topic_partitions(t))
            snprintf(st[i].why, sizeof(st[i].why), "partitions: expected exactly %d, found %d",
                     ev_topic_partitions(t), st[i].partitions);
        else if (st[i].partitions < ev_topic_partitions(t))
            snprintf(st[i].why, sizeof(st[i].why), "partitions: expected at least %d, found %d",
                     ev_topic_partitions(t), st[i].partitions);
    }
}

static int kafka_topics(void *impl, int create, int replication, int timeout_ms,
                        ev_topic_say_fn say, void *opaque, int *problems, char *errstr, size_t n)
{
    kafka_log *k = impl;
    static const char *const defaults[] = {NULL};
    char err[512];
    size_t nt = ev_topic_count();
    topic_state *st = calloc(nt ? nt : 1, sizeof(*st));
    rd_kafka_conf_t *c = st ? make_conf(k, defaults, errstr, n) : NULL;
    rd_kafka_t *rk = c ? rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err)) : NULL;
    int rc = 0;
    if (!rk) {
        if (c)
            rd_kafka_conf_destroy(c);
        rc = !st  ? ev__fail(errstr, n, EV_ERR_NOMEM, "out of memory")
             : !c ? EV_ERR_INVALID
                  : ev__fail(errstr, n, EV_ERR_INVALID, "kafka: %s", err);
        goto out;
    }
    if ((rc = read_partitions(k, rk, timeout_ms, st, errstr, n)) ||
        (create && (rc = create_missing(k, rk, replication, timeout_ms, st))))
        goto out;
    check_partitions(st);
    if ((rc = check_configs(k, rk, timeout_ms, st)))
        goto out;
    for (size_t i = 0; i < nt; i++) {
        const ev_topic *t = ev_topic_at(i);
        char name[320], text[640], cfg[256];
        snprintf(name, sizeof(name), "%s%s", k->prefix, ev_topic_name(t));
        config_text(t, cfg, sizeof(cfg));
        if (st[i].why[0])
            (*problems)++;
        else
            snprintf(text, sizeof(text), "%s%d partitions, %s", st[i].created ? "created: " : "",
                     st[i].partitions, cfg);
        say(opaque, name, !st[i].why[0], st[i].why[0] ? st[i].why : text);
    }
out:
    if (rc == EV_ERR_NOMEM)
        ev__fail(errstr, n, rc, "out of memory");
    if (rk)
        rd_kafka_destroy(rk);
    free(st);
    return rc;
}

/* Serves both "kafka:" and "mock:" (log.c passes the scheme to open). */
const ev__backend ev__backend_kafka = {
    .open = kafka_open_common,
    .close = kafka_close,
    .produce = kafka_produce,
    .flush = kafka_flush,
    .backlog = kafka_backlog,
    .lag = kafka_lag,
    .lost = kafka_lost,
    .subscribe = kafka_subscribe,
    .assign = kafka_assign,
    .poll = kafka_poll,
    .commit = kafka_commit,
    .lead = kafka_lead,
    .resign = kafka_resign,
    .topics = kafka_topics,
};
