/* bench_log — throughput of the log and the codec, each beside its raw
 * ceiling measured in the same run:
 *   codec:  ev_codec_encode/decode (framing + validation) vs raw avro-c
 *           avro_value_write/avro_value_read of the same record
 *   sqlite: ev_log produce+flush (and poll) vs raw batched INSERT (and
 *           SELECT) of the same bytes into the same table layout, same pragmas
 *   kafka:  ev_log produce+flush (and poll) vs raw librdkafka produce (and
 *           consume) of the same bytes and headers, both against one
 *           librdkafka mock cluster in this process
 *   replay: rebuilding state from N recorded events (1024 devices: clock
 *           rounds, status, registrations, sessions) on a SQLite log with the
 *           fold msrs-replay runs, vs raw avro_value_read and ev_codec_decode
 *           of the same records (already in memory)
 *   archive: a SensorSampleBatch (3 channels x 50 samples) decoded and
 *           written by ar_writer_samples (the stream's Avro file and the
 *           XDF), what msrs-archiver does per batch, vs raw avro-c
 *           avro_value_read of the same bytes
 * Under valgrind --tool=callgrind every measured loop runs once and its
 * instructions are dumped when its row prints (bench/bench_callgrind.sh
 * turns the dumps into instructions per record beside the raw library's).
 * It runs bench_log_cg, this file built with BENCH_NO_ARCHIVE: the archive
 * library links ffmpeg, whose libjxl loads libhwy, whose constructor runs
 * RDTSCP, an instruction valgrind 3.19 stops at (SIGILL).
 * usage: bench_log [codec|sqlite|kafka|replay|archive|all] [--records N] [--dir DIR]
 *        bench_log blob [--records N] [--dir DIR] */
#ifndef BENCH_NO_ARCHIVE
#include "archive.h"
#endif
#include "cli.h"
#include "ev.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

#define EVENT_BYTES 200

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "bench_log: %s: %s\n", what, err);
    exit(1);
}

/* A generic value of the record's schema, as a raw avro-c reader makes it
 * (the value holds its class: the class's own reference is dropped). */
static void raw_value(const ev_schema *s, avro_value_t *v)
{
    avro_value_iface_t *iface = avro_generic_class_from_schema(ev_schema_avro(s));
    avro_generic_value_new(iface, v);
    avro_value_iface_decref(iface);
}

/* Best of 3, or once under valgrind (instructions repeat exactly). */
static int reps(void)
{
    return RUNNING_ON_VALGRIND ? 1 : 3;
}

/* The start of a measured loop: its time, and under callgrind its
 * instruction count from zero. */
/* 1 in the produce-only modes: callgrind counts the whole process, every
 * thread, start to end (no zeroing, no dumps at rows). */
static int whole_process;

static double t_start(void)
{
    if (!whole_process)
        CALLGRIND_ZERO_STATS;
    return now_s();
}

/* 1 while the measured work runs on threads of the log or librdkafka:
 * callgrind's dump at a row holds only the calling thread's count, so
 * bench_callgrind.sh says such a row is not counted. */
static int other_threads;

/* Called as soon as the loop it reports ends: under callgrind the count
 * since t_start is dumped as "row;NAME;N;OTHER_THREADS" for
 * bench_callgrind.sh. */
static void row(const char *name, long n, double secs, size_t bytes_each, double ceiling)
{
    if (RUNNING_ON_VALGRIND && !whole_process) {
        char label[160];
        snprintf(label, sizeof(label), "row;%s;%ld;%d", name, n, other_threads);
        CALLGRIND_DUMP_STATS_AT(label);
    }
    double rate = (double)n / secs;
    printf("  %-44s %11.0f rec/s %8.1f MB/s", name, rate, rate * (double)bytes_each / 1e6);
    if (ceiling > 0)
        printf("   ratio %.2f", rate / ceiling);
    printf("\n");
}

/* A SyncMark whose framed encoding is exactly EVENT_BYTES bytes. */
static avro_value_t *event_value(ev_codec *codec, long seq)
{
    char err[256], mark[32], label[EVENT_BYTES];
    const ev_schema *s = ev_schema_by_name("SyncMark");
    avro_value_t *v, f;
    const void *out;
    size_t len;
    ev_codec_value(codec, s, &v);
    snprintf(mark, sizeof(mark), "%08ld", seq % 100000000);
    avro_value_get_by_name(v, "session_id", &f, NULL);
    avro_value_set_string(&f, "session-0001");
    avro_value_get_by_name(v, "device_id", &f, NULL);
    avro_value_set_string(&f, "phone-0001");
    avro_value_get_by_name(v, "mark_id", &f, NULL);
    avro_value_set_string(&f, mark);
    avro_value_get_by_name(v, "device_time_ns", &f, NULL);
    avro_value_set_long(&f, 1795347000000000000LL + seq);
    avro_value_get_by_name(v, "master_time_ns", &f, NULL);
    avro_value_set_long(&f, 1795347000000000000LL + seq);
    avro_value_get_by_name(v, "label", &f, NULL);
    avro_value_set_string(&f, "");
    if (ev_codec_encode(codec, s, v, &out, &len, err, sizeof(err)))
        die("encode", err);
    size_t pad = EVENT_BYTES - len;
    if (pad > 63)
        pad--; /* a string of 64 or more bytes takes two length bytes */
    memset(label, 'x', pad);
    label[pad] = '\0';
    avro_value_set_string(&f, label);
    return v;
}

/* ------------------------------------------------------------- codec */

/* One codec loop; returns records/s. Best of 3 runs is reported, as the
 * loops are short and this machine is shared. */
typedef enum codec_op { RAW_WRITE, EV_ENCODE, RAW_READ, EV_DECODE } codec_op;

typedef struct codec_ctx {
    ev_codec *codec;
    const ev_schema *s;
    avro_value_t *v, raw_v;
    avro_writer_t w;
    avro_reader_t r;
    char buf[1024];
    char *frame;
    size_t len, raw_len;
} codec_ctx;

static double codec_loop(codec_ctx *c, codec_op op, long n)
{
    char err[256];
    const void *out;
    const ev_schema *got;
    avro_value_t *dv;
    size_t len;
    double best = 0;
    for (int rep = 0; rep < reps(); rep++) {
        double t = t_start();
        for (long i = 0; i < n; i++) {
            switch (op) {
            case RAW_WRITE:
                avro_writer_reset(c->w);
                if (avro_value_write(c->w, c->v))
                    die("avro_value_write", avro_strerror());
                break;
            case EV_ENCODE:
                if (ev_codec_encode(c->codec, c->s, c->v, &out, &len, err, sizeof(err)))
                    die("encode", err);
                break;
            case RAW_READ:
                avro_reader_memory_set_source(c->r, c->frame + 5, (int64_t)c->len - 5);
                if (avro_value_read(c->r, &c->raw_v))
                    die("avro_value_read", avro_strerror());
                break;
            case EV_DECODE:
                if (ev_codec_decode(c->codec, c->frame, c->len, &got, &dv, err, sizeof(err)))
                    die("decode", err);
                break;
            }
        }
        double rate = (double)n / (now_s() - t);
        if (rate > best)
            best = rate;
    }
    return best;
}

static void bench_codec(long n)
{
    char err[256];
    const void *out;
    codec_ctx c = {.codec = ev_codec_new(), .s = ev_schema_by_name("SyncMark")};
    c.v = event_value(c.codec, 1);
    c.w = avro_writer_memory(c.buf, sizeof(c.buf));
    if (ev_codec_encode(c.codec, c.s, c.v, &out, &c.len, err, sizeof(err)))
        die("encode", err);
    c.frame = malloc(c.len);
    memcpy(c.frame, out, c.len);
    c.raw_len = c.len - 5;
    raw_value(c.s, &c.raw_v);
    c.r = avro_reader_memory(c.frame + 5, (int64_t)c.len - 5);

    printf("codec: %d-byte SyncMark, %ld records, best of 3\n", EVENT_BYTES, n);
    double raw = codec_loop(&c, RAW_WRITE, n);
    row("raw avro-c avro_value_write", n, (double)n / raw, c.raw_len, 0);
    row("ev_codec_encode (framed)", n, (double)n / codec_loop(&c, EV_ENCODE, n), c.len, raw);
    raw = codec_loop(&c, RAW_READ, n);
    row("raw avro-c avro_value_read", n, (double)n / raw, c.raw_len, 0);
    row("ev_codec_decode (framed, validated)", n, (double)n / codec_loop(&c, EV_DECODE, n), c.len,
        raw);
    avro_value_decref(&c.raw_v);
    avro_reader_free(c.r);
    avro_writer_free(c.w);
    free(c.frame);
    ev_codec_destroy(c.codec);
}

/* Pre-encoded events and their CloudEvents headers, as ev_log_emit makes them. */
typedef struct corpus {
    char *values;
    size_t value_len;
    long n;
} corpus;

static corpus make_corpus(long n)
{
    ev_codec *codec = ev_codec_new();
    corpus c = {malloc((size_t)n * EVENT_BYTES), EVENT_BYTES, n};
    char err[256];
    for (long i = 0; i < n; i++) {
        const void *out;
        size_t len;
        if (ev_codec_encode(codec, ev_schema_by_name("SyncMark"), event_value(codec, i), &out, &len,
                            err, sizeof(err)))
            die("encode", err);
        if (len != EVENT_BYTES)
            die("encode", "event is not EVENT_BYTES long");
        memcpy(c.values + (size_t)i * EVENT_BYTES, out, len);
    }
    ev_codec_destroy(codec);
    return c;
}

static const ev_header *headers(int *count)
{
    static ev_header h[7] = {{"ce_specversion", "1.0", 3},
                             {"ce_id", "0b4c5d4e-8f6a-4b1c-9d2e-3f4a5b6c7d8e", 36},
                             {"ce_type", "msrs.events.SyncMark", 20},
                             {"ce_source", "bench", 5},
                             {"ce_time", "2026-11-22T11:30:09.281694617Z", 30},
                             {"content-type", EV_CONTENT_TYPE, sizeof(EV_CONTENT_TYPE) - 1},
                             {"ce_dataschema", "urn:msrs:schema:304", 20}};
    *count = 7;
    return h;
}

static ev_log *open_log(const char *uri)
{
    char err[512];
    ev_log *log;
    ev_conf *c = ev_conf_new();
    ev_conf_set(c, "log", uri);
    ev_conf_set(c, "topic.prefix", "bench.");
    if (ev_log_open(&log, c, err, sizeof(err)))
        die(uri, err);
    ev_conf_destroy(c);
    return log;
}

static double log_produce(ev_log *log, const corpus *c, const char *topic)
{
    char err[512];
    int hn;
    const ev_header *h = headers(&hn);
    double t = t_start();
    for (long i = 0; i < c->n; i++) {
        char key[16];
        int kl = snprintf(key, sizeof(key), "phone-%04ld", i % 256);
        if (ev_log_produce(log, topic, key, (size_t)kl, c->values + (size_t)i * c->value_len,
                           c->value_len, h, (size_t)hn, 1795347000000 + i, err, sizeof(err)))
            die("produce", err);
    }
    if (ev_log_flush(log, 60000, err, sizeof(err)))
        die("flush", err);
    return now_s() - t;
}

static double log_read(ev_log *log, const char *topic, long expect)
{
    char err[512];
    const ev_msg *m;
    long got = 0;
    double t = 0;
    if (ev_log_assign(log, &topic, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)))
        die("assign", err);
    /* Timed from the first record: steady-state reading, not start-up. */
    for (;;) {
        int rc = ev_log_poll(log, 1000, &m, err, sizeof(err));
        if (rc == EV_ERR_END)
            break;
        if (rc == 0) {
            if (got++ == 0)
                t = t_start();
        } else if (rc != EV_ERR_TIMED_OUT)
            die("poll", rc == EV_ERR_END ? "end" : err[0] ? err : ev_err_str(rc));
    }
    if (got != expect) {
        fprintf(stderr, "bench_log: read %ld records, expected %ld\n", got, expect);
        exit(1);
    }
    return now_s() - t;
}

/* Raw SQLite: c's records and the headers blob as the backend stores it
 * into PATH (created anew): same table layout and pragmas (16 KiB pages,
 * WAL, synchronous=FULL), a prepared INSERT, transactions of per_txn rows.
 * Its row is printed as NAME, the seconds it took set; the database is left
 * open for reading. */
static sqlite3 *raw_sqlite_insert(const char *path, const corpus *c, const char *name, long per_txn,
                                  double *secs)
{
    int hn;
    const ev_header *h = headers(&hn);
    unsigned char hblob[512];
    size_t hl = 0;
    for (int i = 0; i < hn; i++) {
        size_t nl = strlen(h[i].name) + 1;
        memcpy(hblob + hl, h[i].name, nl);
        hl += nl;
        uint32_t vl = (uint32_t)h[i].value_len;
        memcpy(hblob + hl, &vl, 4);
        hl += 4;
        memcpy(hblob + hl, h[i].value, vl);
        hl += vl;
    }
    unlink(path);
    sqlite3 *db;
    sqlite3_stmt *ins;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(path, sqlite3_errmsg(db));
    sqlite3_exec(db,
                 "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                 "CREATE TABLE \"t:raw\"(offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, key "
                 "BLOB, value BLOB, headers BLOB)",
                 NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO \"t:raw\" VALUES(?,?,?,?,?)", -1, &ins, NULL);
    double t = t_start();
    for (long i = 0; i < c->n; i++) {
        if (i % per_txn == 0)
            sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        char key[16];
        int kl = snprintf(key, sizeof(key), "phone-%04ld", i % 256);
        sqlite3_bind_int64(ins, 1, i);
        sqlite3_bind_int64(ins, 2, 1795347000000 + i);
        sqlite3_bind_blob(ins, 3, key, kl, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 4, c->values + (size_t)i * c->value_len, (int)c->value_len,
                          SQLITE_STATIC);
        sqlite3_bind_blob(ins, 5, hblob, (int)hl, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE)
            die("raw insert", sqlite3_errmsg(db));
        sqlite3_reset(ins);
        if (i % per_txn == per_txn - 1 || i == c->n - 1)
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    *secs = now_s() - t;
    row(name, c->n, *secs, c->value_len, 0);
    sqlite3_finalize(ins);
    return db;
}

/* ------------------------------------------------------------- sqlite */

/* Media-sized records: a 720p30 packet at 100 Mbit/s (bench_ingest's mean
 * packet, 424 000 bytes). The SQLite log's produce + flush (its writer,
 * syncer and checkpointer threads, the row checksum; the values in the
 * values file) against SQLite's own blob INSERT in transactions of 50, as
 * bench_ingest's ceiling, and against the disk: the same bytes appended to
 * a file with an fdatasync every 50; twice each, alternated: issue 22's
 * "log append at 0.9x raw SQLite blob insert" without the devices, the
 * agent and the archiver sharing the machine. */
#define BLOB_BYTES 424000

/* c's values appended to a new file at path, fdatasync after every per. */
static double raw_append(const char *path, const corpus *c, int per)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, strerror(errno));
    double t = t_start();
    for (long i = 0; i < c->n; i++) {
        const char *p = c->values + (size_t)i * c->value_len;
        for (size_t done = 0; done < c->value_len;) {
            ssize_t w = write(fd, p + done, c->value_len - done);
            if (w <= 0)
                die(path, strerror(errno));
            done += (size_t)w;
        }
        if ((i + 1) % per == 0 || i + 1 == c->n)
            if (fdatasync(fd) != 0)
                die(path, strerror(errno));
    }
    double secs = now_s() - t;
    close(fd);
    return secs;
}

static void bench_blob(long n, const char *dir)
{
    char path[1024], uri[1100];
    corpus c = {malloc((size_t)n * BLOB_BYTES), BLOB_BYTES, n};
    if (!c.values)
        die("blob", "out of memory for the records");
    uint64_t x = 0x9e3779b97f4a7c15ULL; /* incompressible-looking bytes */
    for (size_t i = 0; i + 8 <= (size_t)n * BLOB_BYTES; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(c.values + i, &x, 8);
    }
    printf("blob: %ld records of %d bytes + 6 CloudEvents headers, 16 KiB pages, WAL, "
           "synchronous=FULL\n",
           n, BLOB_BYTES);
    char msrs_path[1024];
    snprintf(path, sizeof(path), "%s/raw.db", dir);
    snprintf(msrs_path, sizeof(msrs_path), "%s/msrs.db", dir);
    snprintf(uri, sizeof(uri), "sqlite:%s", msrs_path);
    for (int round = 0; round < 2; round++) {
        double raw_secs, append_secs;
        char append_path[1100], values_path[1100];
        sqlite3_close(raw_sqlite_insert(path, &c, "raw SQLite blob INSERT", 50, &raw_secs));
        snprintf(append_path, sizeof(append_path), "%s/raw.append", dir);
        append_secs = raw_append(append_path, &c, 50);
        row("raw file append, fdatasync every 50", n, append_secs, BLOB_BYTES,
            (double)n / raw_secs);
        unlink(append_path);
        snprintf(values_path, sizeof(values_path), "%s-values", msrs_path);
        unlink(msrs_path);
        unlink(values_path);
        ev_log *log = open_log(uri);
        other_threads = 1; /* the log's writer, syncer and checkpointer threads */
        double secs = log_produce(log, &c, "bench.media");
        row("ev_log_produce + flush (sqlite, blobs)", n, secs, BLOB_BYTES, (double)n / raw_secs);
        printf("  %-44s %.2f\n", "  the same, ratio to the raw file append", append_secs / secs);
        other_threads = 0;
        ev_log_destroy(log);
    }
    free(c.values);
}

static void bench_sqlite(long n, const char *dir)
{
    char path[1024], uri[1100], err[256];
    corpus c = make_corpus(n);
    printf("sqlite: %ld records of %d bytes + 6 CloudEvents headers, WAL, synchronous=FULL, "
           "batches of 10000\n",
           n, EVENT_BYTES);

    snprintf(path, sizeof(path), "%s/raw.db", dir);
    double raw_secs;
    sqlite3 *db = raw_sqlite_insert(path, &c, "raw SQLite batched INSERT", 10000, &raw_secs);
    double raw_w = (double)n / raw_secs;
    double t;

    snprintf(uri, sizeof(uri), "sqlite:%s/msrs.db", dir);
    snprintf(path, sizeof(path), "%s/msrs.db", dir);
    unlink(path);
    ev_log *log = open_log(uri);
    other_threads = 1; /* the log's writer thread */
    row("ev_log_produce + flush (sqlite)", n, log_produce(log, &c, "bench.samples"), EVENT_BYTES,
        raw_w);
    ev_log_destroy(log);

    /* emit: encode + CloudEvents headers + produce, the whole write path */
    log = open_log(uri);
    ev_codec *codec = ev_codec_new();
    avro_value_t *ev = event_value(codec, 1);
    t = t_start();
    for (long i = 0; i < n; i++)
        if (ev_log_emit(log, ev_schema_by_name("SyncMark"), "session-0001", ev, NULL, err,
                        sizeof(err)))
            die("emit", err);
    if (ev_log_flush(log, 60000, err, sizeof(err)))
        die("flush", err);
    row("ev_log_emit + flush (encode+headers+append)", n, now_s() - t, EVENT_BYTES, raw_w);
    ev_codec_destroy(codec);
    ev_log_destroy(log);

    other_threads = 0;
    /* reads */
    sqlite3_stmt *sel;
    sqlite3_prepare_v2(db,
                       "SELECT offset, ts_ms, key, value, headers FROM \"t:raw\" WHERE offset >= ? "
                       "ORDER BY offset",
                       -1, &sel, NULL);
    sqlite3_bind_int64(sel, 1, 0);
    long rows = 0;
    size_t bytes = 0;
    t = t_start();
    while (sqlite3_step(sel) == SQLITE_ROW) {
        bytes += (size_t)sqlite3_column_bytes(sel, 3) + (size_t)sqlite3_column_bytes(sel, 4);
        (void)sqlite3_column_blob(sel, 3);
        (void)sqlite3_column_blob(sel, 4);
        rows++;
    }
    double raw_r = (double)rows / (now_s() - t);
    row("raw SQLite SELECT (step all rows)", rows, (double)rows / raw_r, EVENT_BYTES, 0);
    sqlite3_finalize(sel);
    sqlite3_close(db);
    log = open_log(uri);
    row("ev_log_poll (sqlite, from 1st record to end)", n, log_read(log, "bench.samples", n),
        EVENT_BYTES, raw_r);
    ev_log_destroy(log);
    free(c.values);
}

/* ------------------------------------------------------------- kafka */

static int64_t dr_failed;
static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        dr_failed++;
}

/* Raw librdkafka: c's records and the CloudEvents headers to topic, with
 * the backend's producer defaults, then flush; its row printed as NAME
 * (before the producer is destroyed), the seconds it took returned. */
static double raw_kafka_produce(const char *bootstrap, const corpus *c, const char *topic,
                                const char *name)
{
    char err[512];
    int hn;
    const ev_header *h = headers(&hn);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", bootstrap},
                              {"enable.idempotence", "true"},
                              {"acks", "all"},
                              {"partitioner", "murmur2_random"},
                              {"linger.ms", "5"},
                              {"queue.buffering.max.messages", "1000000"},
                              {"queue.buffering.max.kbytes", "1048576"},
                              {"batch.num.messages", "10000"},
                              {"log_level", "3"}};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], err, sizeof(err)))
            die(props[i][0], err);
    rd_kafka_conf_set_dr_msg_cb(conf, raw_dr);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!p)
        die("raw producer", err);
    double t = t_start();
    for (long i = 0; i < c->n; i++) {
        char key[16];
        int kl = snprintf(key, sizeof(key), "phone-%04ld", i % 256);
        rd_kafka_headers_t *hd = rd_kafka_headers_new(6);
        for (int k = 0; k < hn; k++)
            rd_kafka_header_add(hd, h[k].name, -1, h[k].value, (ssize_t)h[k].value_len);
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(
                    p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, (size_t)kl),
                    RD_KAFKA_V_VALUE(c->values + (size_t)i * c->value_len, c->value_len),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hd),
                    RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(p, 10);
        if (e)
            die("raw produce", rd_kafka_err2str(e));
        rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 60000);
    double secs = now_s() - t;
    if (dr_failed)
        die("raw produce", "delivery failures");
    row(name, c->n, secs, EVENT_BYTES, 0);
    rd_kafka_destroy(p);
    return secs;
}

/* One write path alone in this process, every thread counted by callgrind
 * (the caller's, the SQLite log's writer, librdkafka's), no zeroing and no
 * dumps at rows: bench_callgrind.sh threads runs it twice with different
 * N and takes the difference, so what is set up once drops out. TARGET is
 * sqlite:DIR or kafka:BOOTSTRAP, a broker in another process
 * (msrs-mockbroker), so none of the counted threads is the broker's. */
static void bench_produce_only(long n, const char *target, int ours)
{
    whole_process = 1;
    corpus c = make_corpus(n);
    int kafka = strncmp(target, "kafka:", 6) == 0;
    char uri[1100], path[1100];
    if (!kafka && strncmp(target, "sqlite:", 7) != 0)
        die(target, "expected sqlite:DIR or kafka:HOST:PORT");
    printf("%s: %ld records of %d bytes + 6 CloudEvents headers, %s\n", kafka ? "kafka" : "sqlite",
           n, EVENT_BYTES, target);
    if (ours) {
        if (kafka)
            snprintf(uri, sizeof(uri), "%s", target);
        else
            snprintf(uri, sizeof(uri), "%s/msrs.db", target);
        ev_log *log = open_log(uri);
        row("ev_log_produce + flush, all threads", n, log_produce(log, &c, "bench.samples"),
            EVENT_BYTES, 0);
        ev_log_destroy(log);
    } else if (kafka) {
        raw_kafka_produce(target + 6, &c, "bench.samples", "raw librdkafka produce + flush");
    } else {
        double secs;
        snprintf(path, sizeof(path), "%s/raw.db", target + 7);
        sqlite3_close(raw_sqlite_insert(path, &c, "raw SQLite batched INSERT", 10000, &secs));
    }
    free(c.values);
}

static void bench_kafka(long n)
{
    other_threads = 1; /* librdkafka's and the mock cluster's threads */
    char err[512];
    corpus c = make_corpus(n);

    rd_kafka_conf_t *mc_conf = rd_kafka_conf_new();
    rd_kafka_conf_set(mc_conf, "log_level", "3", NULL, 0);
    rd_kafka_t *host = rd_kafka_new(RD_KAFKA_PRODUCER, mc_conf, err, sizeof(err));
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(host, 1);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    rd_kafka_mock_topic_create(mc, "bench.raw", 8, 1);
    rd_kafka_mock_topic_create(mc, "bench.samples", 8, 1);
    rd_kafka_mock_topic_create(mc, "bench.read", 32, 1); /* 32 x 5 MiB retained */
    printf("kafka: %ld records of %d bytes + 6 CloudEvents headers, librdkafka mock cluster (in "
           "process),\n"
           "       idempotent producer, acks=all, linger.ms=5, murmur2_random, 8 partitions\n",
           n, EVENT_BYTES);

    double raw_w =
        (double)n / raw_kafka_produce(bootstrap, &c, "bench.raw", "raw librdkafka produce + flush");

    char uri[1100];
    snprintf(uri, sizeof(uri), "kafka:%s", bootstrap);
    ev_log *log = open_log(uri);
    row("ev_log_produce + flush (kafka)", n, log_produce(log, &c, "bench.samples"), EVENT_BYTES,
        raw_w);
    ev_log_destroy(log);

    /* Reads: the mock keeps ~5 MiB per partition, so read a set that fits in 32. */
    long rn = n < 100000 ? n : 100000;
    corpus rc = c;
    rc.n = rn;
    log = open_log(uri);
    log_produce(log, &rc, "bench.read");
    ev_log_destroy(log);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "bench-raw", NULL, 0);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", NULL, 0);
    rd_kafka_conf_set(conf, "queued.min.messages", "1000000", NULL, 0);
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    rd_kafka_poll_set_consumer(cons);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(32);
    for (int i = 0; i < 32; i++)
        rd_kafka_topic_partition_list_add(l, "bench.read", i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    const struct rd_kafka_metadata *md;
    rd_kafka_metadata(cons, 1, NULL, &md, 5000); /* metadata first: assign is slow without it */
    rd_kafka_metadata_destroy(md);
    long got = 0, eofs = 0;
    double t = 0;
    rd_kafka_assign(cons, l);
    while (eofs < 32) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 1000);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eofs++;
        else if (!m->err && got++ == 0)
            t = t_start();
        /* (other errors: none expected from the in-process mock) */
        rd_kafka_message_destroy(m);
    }
    double raw_r = (double)got / (now_s() - t);
    row("raw librdkafka consume (from 1st record to EOF)", got, (double)got / raw_r, EVENT_BYTES,
        0);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(cons);
    rd_kafka_destroy(cons);
    log = open_log(uri);
    row("ev_log_poll (kafka, from 1st record to end)", rn, log_read(log, "bench.read", rn),
        EVENT_BYTES, raw_r);
    ev_log_destroy(log);

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    free(c.values);
    other_threads = 0;
}

/* ------------------------------------------------------------ replay */

#define REPLAY_DEVICES 1024

/* The i-th event of the replay corpus: every device registers, then mostly
 * clock rounds and status, and a session (request .. stop) every 1000. */
static const char *replay_event(json_t *examples, long i, json_t **value, char key[64])
{
    static const char *const session_types[] = {"CollectionRequested", "SynchronizationCompleted",
                                                "CollectionStarted", "CollectionStopped"};
    long dev = i % REPLAY_DEVICES;
    const char *type;
    if (i < REPLAY_DEVICES)
        type = "DeviceRegistered";
    else if (i % 250 < 4)
        type = session_types[i % 250];
    else
        type = i % 4 == 0 ? "DeviceStatus" : "ClockOffsetMeasured";
    *value = json_deep_copy(json_object_get(examples, type));
    char id[32];
    if (strncmp(type, "Collection", 10) == 0 || strcmp(type, "SynchronizationCompleted") == 0) {
        snprintf(id, sizeof(id), "s-%06ld", i / 250);
        json_object_set_new(*value, "session_id", json_string(id));
    } else {
        snprintf(id, sizeof(id), "phone-%04ld", dev);
        json_object_set_new(*value, "device_id", json_string(id));
        if (strcmp(type, "ClockOffsetMeasured") == 0) {
            json_object_set_new(*value, "round", json_integer(i / REPLAY_DEVICES));
            json_object_set_new(*value, "offset_ns", json_integer(-123456789012LL + i));
        }
    }
    snprintf(key, 64, "%s", id);
    return type;
}

static void bench_replay(long n, const char *dir)
{
    char uri[1100], err[512], key[64];
    snprintf(uri, sizeof(uri), "sqlite:%s/replay.db", dir);
    json_error_t je;
    json_t *all = json_load_file(MSRS_RECORDS_JSON, JSON_ALLOW_NUL, &je);
    if (!all)
        die(MSRS_RECORDS_JSON, je.text);
    json_t *examples = json_object_get(all, "records");

    ev_log *log = open_log(uri);
    double t = now_s();
    for (long i = 0; i < n; i++) {
        json_t *v;
        const char *type = replay_event(examples, i, &v, key);
        if (ev_log_emit_json(log, ev_schema_by_name(type), key, v, NULL, err, sizeof(err)))
            die("emit", err);
        json_decref(v);
    }
    if (ev_log_flush(log, 60000, err, sizeof(err)))
        die("flush", err);
    printf("replay: %ld events (1024 devices: registrations, clock rounds, status, a session "
           "every 250) written in %.1f s\n",
           n, now_s() - t);

    /* The same records in memory: raw avro-c read and ev_codec_decode. */
    const char *topics[3] = {"devices", "clock", "sessions"};
    char names[3][320];
    const char *full[3] = {ev_log_topic(log, topics[0], names[0], sizeof(names[0])),
                           ev_log_topic(log, topics[1], names[1], sizeof(names[1])),
                           ev_log_topic(log, topics[2], names[2], sizeof(names[2]))};
    if (ev_log_assign(log, full, 3, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)))
        die("assign", err);
    size_t cap = (size_t)n * 160, used = 0;
    char *buf = malloc(cap);
    size_t *off = malloc(sizeof(*off) * (size_t)(n + 1));
    long got = 0;
    const ev_msg *m;
    int rc;
    while ((rc = ev_log_poll(log, 1000, &m, err, sizeof(err))) == 0 && got < n) {
        if (used + m->value_len > cap)
            buf = realloc(buf, cap *= 2);
        memcpy(buf + used, m->value, m->value_len);
        off[got++] = used;
        used += m->value_len;
    }
    off[got] = used;
    if (got != n)
        die("read back", rc == EV_ERR_END ? "fewer records than written" : err);
    ev_log_destroy(log);

    ev_codec *codec = ev_codec_new();
    avro_value_t raw[64];
    int have[64] = {0};
    avro_reader_t r = avro_reader_memory(buf, 1);
    double raw_rate = 0, dec_rate = 0;
    for (int rep = 0; rep < reps(); rep++) { /* best of 3, as in codec */
        t = t_start();
        for (long i = 0; i < n; i++) {
            const unsigned char *f = (const unsigned char *)buf + off[i];
            int id =
                (int)((uint32_t)f[1] << 24 | (uint32_t)f[2] << 16 | (uint32_t)f[3] << 8 | f[4]);
            const ev_schema *s = ev_schema_by_id(id);
            int slot = id % 64;
            if (!have[slot]) {
                raw_value(s, &raw[slot]);
                have[slot] = 1;
            }
            avro_reader_memory_set_source(r, (const char *)f + 5,
                                          (int64_t)(off[i + 1] - off[i] - 5));
            if (avro_value_read(r, &raw[slot]))
                die("avro_value_read", avro_strerror());
        }
        double rate = (double)n / (now_s() - t);
        raw_rate = rate > raw_rate ? rate : raw_rate;
    }
    row("raw avro-c avro_value_read (in memory)", n, (double)n / raw_rate, used / (size_t)n, 0);
    for (int rep = 0; rep < reps(); rep++) {
        t = t_start();
        for (long i = 0; i < n; i++) {
            const ev_schema *got_s;
            avro_value_t *v;
            if (ev_codec_decode(codec, buf + off[i], off[i + 1] - off[i], &got_s, &v, err,
                                sizeof(err)))
                die("decode", err);
        }
        double rate = (double)n / (now_s() - t);
        dec_rate = rate > dec_rate ? rate : dec_rate;
    }
    row("ev_codec_decode (in memory, validated)", n, (double)n / dec_rate, used / (size_t)n,
        raw_rate);

    /* Its parts: reading the log, and reading + checking each event. */
    double read_rate = 0;
    for (int peek = 0; peek < 2; peek++) {
        log = open_log(uri);
        if (ev_log_assign(log, full, 3, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)))
            die("assign", err);
        long k = 0;
        t = t_start();
        while (ev_log_poll(log, 1000, &m, err, sizeof(err)) == 0) {
            ev_event ev;
            if (peek && ev_event_peek(m, &ev, err, sizeof(err)))
                die("peek", err);
            k++;
        }
        if (k != n)
            die("read", "count");
        double secs = now_s() - t;
        row(peek ? "  of which: read + ev_event_peek (headers, check)"
                 : "  of which: ev_log_poll (SQLite read)",
            n, secs, used / (size_t)n, 0);
        if (!peek)
            read_rate = (double)n / secs;
        ev_log_destroy(log);
    }

    /* The rebuild msrs-replay does: read the log, check, fold (two
     * threads). Best of 3 into a new state each, as the codec loops. */
    double secs = 1e9;
    printf("  rebuild runs:");
    other_threads = 1; /* the fold's reading thread */
    for (int rep = 0; rep < reps(); rep++) {
        ev_state *state = ev_state_new();
        log = open_log(uri);
        ev_projection *p = NULL;
        t = t_start();
        if (ev_projection_new(&p, log, state, topics, 3, NULL, err, sizeof(err)) ||
            ev_projection_fold(p, NULL, err, sizeof(err)))
            die("fold", err);
        double s = now_s() - t;
        secs = s < secs ? s : secs;
        printf(" %.0f", (double)n / s);
        if (ev_projection_records(p) != n || ev_projection_skipped(p))
            die("fold", "records missing or undecodable");
        ev_projection_destroy(p);
        ev_state_destroy(state);
        ev_log_destroy(log);
    }
    printf(" rec/s\n");
    row("rebuild: read + check + ev_state fold, best of 3", n, secs, used / (size_t)n, raw_rate);
    double both = 1.0 / (1.0 / read_rate + 1.0 / raw_rate);
    printf("  %-44s %11.0f rec/s   (SQLite read, then raw avro_value_read: rebuild ratio %.2f)\n",
           "raw ceiling of a rebuild", both, (double)n / secs / both);
    for (int i = 0; i < 64; i++)
        if (have[i])
            avro_value_decref(&raw[i]);
    avro_reader_free(r);
    ev_codec_destroy(codec);
    free(buf);
    free(off);
    json_decref(all);
}

#ifndef BENCH_NO_ARCHIVE
#define ARCHIVE_SAMPLES  50
#define ARCHIVE_CHANNELS 3

/* One batch as the archiver gets it: framed, decoded, then written. */
static void bench_archive(long n, const char *dir)
{
    char err[512] = "";
    if (n < 1)
        n = 1;
    ev_codec *codec = ev_codec_new();
    const ev_schema *s = ev_schema_by_name("SensorSampleBatch");
    json_t *dt = json_array(), *mt = json_array(), *values = json_array();
    for (int i = 0; i < ARCHIVE_SAMPLES; i++) {
        json_array_append_new(dt, json_integer(1000000000LL + i * 5000000LL));
        json_array_append_new(mt, json_integer(1795347000000000000LL + i * 5000000LL));
        for (int c = 0; c < ARCHIVE_CHANNELS; c++)
            json_array_append_new(values, json_real(0.25 * i + c));
    }
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:o, s:o, s:o}", "device_id", "d1", "session_id",
                  "bench", "stream_id", "imu", "stream_type", "IMU", "seq", 0, "channels",
                  ARCHIVE_CHANNELS, "device_time_ns", dt, "master_time_ns", mt, "values", values);
    avro_value_t *v;
    const void *out;
    size_t len;
    ev_codec_value(codec, s, &v);
    if (ev_value_from_json(v, j, err, sizeof(err)) ||
        ev_codec_encode(codec, s, v, &out, &len, err, sizeof(err)))
        die("SensorSampleBatch", err);
    json_decref(j);
    char *frame = malloc(len);
    memcpy(frame, out, len);
    size_t payload = ARCHIVE_SAMPLES * ARCHIVE_CHANNELS * sizeof(double);
    printf("archive: %zu-byte SensorSampleBatch (%d channels x %d samples), %ld batches\n", len,
           ARCHIVE_CHANNELS, ARCHIVE_SAMPLES, n);

    avro_value_t raw_v;
    raw_value(s, &raw_v);
    avro_reader_t r = avro_reader_memory(frame + 5, (int64_t)len - 5);
    double t = t_start();
    for (long i = 0; i < n; i++) {
        avro_reader_memory_set_source(r, frame + 5, (int64_t)len - 5);
        if (avro_value_read(r, &raw_v))
            die("avro_value_read", avro_strerror());
    }
    double raw = (double)n / (now_s() - t);
    row("raw avro-c avro_value_read", n, (double)n / raw, payload, 0);

    ar_writer *w;
    if (ar_writer_new(&w, dir, "bench", err, sizeof(err)))
        die("ar_writer_new", err);
    t = t_start();
    for (long i = 0; i < n; i++) {
        const ev_schema *got;
        avro_value_t *dv, f;
        if (ev_codec_decode(codec, frame, len, &got, &dv, err, sizeof(err)))
            die("decode", err);
        if (avro_value_get_by_name(dv, "seq", &f, NULL) ||
            avro_value_set_long(&f, i * ARCHIVE_SAMPLES)) /* new samples, not a redelivery */
            die("seq", avro_strerror());
        int rc = ar_writer_samples(w, dv, NULL, err, sizeof(err));
        if (rc)
            die("ar_writer_samples", rc > 0 ? "skipped (a duplicate seq?)" : err);
    }
    row("ev_codec_decode + ar_writer_samples (Avro + XDF)", n, now_s() - t, payload, raw);
    ar_writer_destroy(w);
    avro_value_decref(&raw_v);
    avro_reader_free(r);
    free(frame);
    ev_codec_destroy(codec);
}

#endif

int main(int argc, char **argv)
{
    const char *what = "all", *dir = NULL, *target = NULL;
    long n = 500000;
    int records_given = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--records") == 0 && i + 1 < argc) {
            n = atol(argv[++i]);
            records_given = 1;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc)
            target = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: bench_log [codec|sqlite|kafka|replay|archive|all] [--records N] [--dir "
                   "DIR]\n"
                   "       bench_log blob [--records N (1000)] [--dir DIR]\n"
                   "         424 000-byte records: the SQLite log against raw blob INSERT\n"
                   "       bench_log produce-raw|produce-ev --log sqlite:DIR|kafka:HOST:PORT "
                   "[--records N]\n"
                   "         one write path alone, every thread counted under callgrind "
                   "(bench_callgrind.sh threads)\n");
            return 0;
        } else
            what = argv[i];
    }
    char tmpl[] = "/tmp/msrs-bench-XXXXXX";
    if (!dir && !(dir = mkdtemp(tmpl)))
        die("mkdtemp", "failed");
    printf("# command: ");
    for (int i = 0; i < argc; i++)
        printf("%s ", argv[i]);
    printf("\n# ratio = msrs rate / raw rate measured just before it in this run\n");
    if (strncmp(what, "produce-", 8) == 0) {
        if (!target || (strcmp(what + 8, "raw") != 0 && strcmp(what + 8, "ev") != 0))
            die(what, "expected produce-raw or produce-ev with --log sqlite:DIR|kafka:HOST:PORT");
        bench_produce_only(n, target, strcmp(what + 8, "ev") == 0);
        return 0;
    }
    if (strcmp(what, "blob") == 0)
        bench_blob(records_given ? n : 1000, dir);
    int all = strcmp(what, "all") == 0;
    if (all || strcmp(what, "codec") == 0)
        bench_codec(n * 4);
    if (all || strcmp(what, "sqlite") == 0)
        bench_sqlite(n, dir);
    if (all || strcmp(what, "kafka") == 0)
        bench_kafka(n);
    if (all || strcmp(what, "replay") == 0)
        bench_replay(n * 2, dir);
#ifndef BENCH_NO_ARCHIVE
    if (all || strcmp(what, "archive") == 0)
        bench_archive(n / 5, dir);
#else
    if (strcmp(what, "archive") == 0)
        die("archive", "not in this build (BENCH_NO_ARCHIVE: run bench_log)");
#endif
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("# max RSS %ld MiB\n", ru.ru_maxrss / 1024);
    if (dir == tmpl) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpl);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_log: cannot remove %s\n", tmpl);
    }
    return 0;
}
