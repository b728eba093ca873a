/* log_producer — a producer process for the conformance suite. Emits
 * COUNT SyncMark records (mark_id = sequence number, session_id = KEYPREFIX
 * + seq % 4) and after every FLUSH_EVERY records flushes and prints
 * "acked N" (N = records acknowledged so far), so a parent can kill it
 * with SIGKILL mid-stream and check that every acknowledged record is in
 * the log.
 * usage: log_producer URI TOPIC_PREFIX KEYPREFIX COUNT FLUSH_EVERY
 *
 * With KEYPREFIX "--lead", it competes for leadership instead: calls
 * ev_log_lead(name "test", holder "child", ttl COUNT ms) every FLUSH_EVERY
 * ms forever and prints "leading" once it leads (a parent kills it). */
#include "ev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int lead_forever(ev_log *log, long ttl_ms, long every_ms)
{
    char err[512];
    int said = 0;
    for (;;) {
        int rc = ev_log_lead(log, "test", "child", ttl_ms, NULL, 0, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "log_producer: %s\n", err);
            return 1;
        }
        if (rc == 1 && !said) {
            printf("leading\n");
            fflush(stdout);
            said = 1;
        }
        struct timespec ts = {every_ms / 1000, (every_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    char err[512], key[64], mark[32];
    ev_log *log;
    if (argc != 6) {
        fprintf(stderr, "usage: log_producer URI TOPIC_PREFIX KEYPREFIX COUNT FLUSH_EVERY\n");
        return 2;
    }
    long count = atol(argv[4]), every = atol(argv[5]);
    ev_conf *conf = ev_conf_new();
    ev_conf_set(conf, "log", argv[1]);
    ev_conf_set(conf, "topic.prefix", argv[2]);
    if (ev_log_open(&log, conf, err, sizeof(err))) {
        fprintf(stderr, "log_producer: %s\n", err);
        return 1;
    }
    if (strcmp(argv[3], "--lead") == 0)
        return lead_forever(log, count, every);
    ev_codec *codec = ev_codec_new();
    const ev_schema *s = ev_schema_by_name("SyncMark");
    for (long i = 0; i < count; i++) {
        avro_value_t *v, f;
        snprintf(key, sizeof(key), "%s%ld", argv[3], i % 4);
        snprintf(mark, sizeof(mark), "%ld", i);
        ev_codec_value(codec, s, &v);
        avro_value_get_by_name(v, "session_id", &f, NULL);
        avro_value_set_string(&f, key);
        avro_value_get_by_name(v, "mark_id", &f, NULL);
        avro_value_set_string(&f, mark);
        avro_value_get_by_name(v, "label", &f, NULL);
        avro_value_set_string(
            &f, "a label that makes the record about two hundred bytes long with its headers");
        if (ev_log_emit(log, s, key, v, NULL, err, sizeof(err))) {
            fprintf(stderr, "log_producer: %s\n", err);
            return 1;
        }
        if ((i + 1) % every == 0 || i + 1 == count) {
            if (ev_log_flush(log, 30000, err, sizeof(err))) {
                fprintf(stderr, "log_producer: %s\n", err);
                return 1;
            }
            printf("acked %ld\n", i + 1);
            fflush(stdout);
        }
    }
    ev_codec_destroy(codec);
    ev_log_destroy(log);
    ev_conf_destroy(conf);
    return 0;
}
