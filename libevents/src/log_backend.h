/* log_backend.h — the interface every log backend implements (internal).
 * log.c parses the URI and dispatches; a backend is one file behind this
 * table (log_sqlite.c, log_kafka.c). Semantics are those of ev.h's ev_log_*
 * functions with the same names. */
#ifndef MSRS_EV_LOG_BACKEND_H
#define MSRS_EV_LOG_BACKEND_H
#include "internal.h"

typedef struct ev__backend {
    /* target is the URI after "scheme:"; *impl receives the backend state. */
    int (*open)(void **impl, const char *scheme, const char *target, const ev_conf *conf,
                char *errstr, size_t errstr_size);
    void (*close)(void *impl);
    int (*produce)(void *impl, const char *topic, const void *key, size_t key_len,
                   const void *value, size_t value_len, const ev_header *headers,
                   size_t header_count, int64_t timestamp_ms, char *errstr, size_t errstr_size);
    int (*flush)(void *impl, int timeout_ms, char *errstr, size_t errstr_size);
    int (*backlog)(void *impl, int64_t *records, int64_t *bytes, char *errstr, size_t errstr_size);
    /* records produced that the backend gave up on, since open */
    int64_t (*lost)(void *impl);
    /* the consumer's lag (ev_log_lag), *records starts at 0 */
    int (*lag)(void *impl, int64_t *records, char *errstr, size_t errstr_size);
    /* alone: this process is the cursor's only reader (ev_log_subscribe_alone) */
    int (*subscribe)(void *impl, const char *cursor, const char *const *topics, size_t topic_count,
                     int alone, char *errstr, size_t errstr_size);
    int (*assign)(void *impl, const char *const *topics, size_t topic_count, ev_from from,
                  char *errstr, size_t errstr_size);
    int (*poll)(void *impl, int timeout_ms, const ev_msg **msg, char *errstr, size_t errstr_size);
    int (*commit)(void *impl, char *errstr, size_t errstr_size);
    /* leadership: topic is the prefixed "leader" topic (Kafka's group topic) */
    int (*lead)(void *impl, const char *topic, const char *name, const char *holder, int64_t ttl_ms,
                char *leader, size_t leader_size, char *errstr, size_t errstr_size);
    int (*resign)(void *impl, const char *name, const char *holder, char *errstr,
                  size_t errstr_size);
    /* ev_log_topics; NULL: the backend's topics need nothing of it */
    int (*topics)(void *impl, int create, int replication_factor, int timeout_ms,
                  ev_topic_say_fn say, void *opaque, int *problems, char *errstr,
                  size_t errstr_size);
    /* records polled whose checksum could not be checked; NULL: always 0 */
    int64_t (*unchecked)(void *impl);
} ev__backend;

extern const ev__backend ev__backend_sqlite;
extern const ev__backend ev__backend_kafka; /* schemes kafka and mock */

/* Topic names follow Kafka's rule: 1-249 of [A-Za-z0-9._-]. */
int ev__topic_valid(const char *topic);

#endif
