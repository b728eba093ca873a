/* log_producer — a producer process for the conformance suite. Emits
 * COUNT SyncMark records (mark_id = sequence number, session_id = KEYPREFIX
 * + seq % 4) and after every FLUSH_EVERY records flushes and prints
 * "acked N" (N = records acknowledged so far), so a parent can kill it
 * with SIGKILL mid-stream and check that every acknowledged record is in
 * the log.
 * usage: log_producer URI TOPIC_PREFIX KEYPREFIX COUNT FLUSH_EVERY */
#include "ev.h"

#include <stdio.h>
#include <stdlib.h>

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
        avro_value_set_string(&f, "a label that makes the record about two hundred bytes long with its headers");
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
