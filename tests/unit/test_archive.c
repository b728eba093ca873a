/* The archive format (archive/archive.h): a small session written with
 * ar_writer (a device, two sensor streams, session records, clock rounds
 * with a known drift) and read back with ar_reader: the manifest's fields,
 * its clock fit (ev_clock_fit_probes), SHA-256s, the records; the "-2"
 * rule; a truncated stream file and a missing manifest named in the error. */
#include "archive.h"
#include "internal.h" /* ar__safe_name */
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define S       1000000000LL
#define START   (1795347000LL * S)
#define STOP    (START + 10 * S)
#define OFFSET0 1000000.0 /* device - master at START, ns */
#define DRIFT   50e-6

static ev_codec *codec;
static ev_state *state;
static ar_devices *history;
static char *root;
static int seq;

static void setup(void)
{
    codec = ev_codec_new();
    state = ev_state_new();
    history = ar_devices_new();
    root = tu_tmpdir("archive");
    ck_assert_ptr_nonnull(history);
}

static void teardown(void)
{
    ar_devices_destroy(history);
    ev_state_destroy(state);
    ev_codec_destroy(codec);
    tu_rmrf(root);
    free(root);
}

/* An event as a log would deliver it (framed), applied to the state and
 * given to the writer (session records) or kept (device records). */
static void deliver(ar_writer *w, const char *type, const char *json)
{
    char err[512];
    ev_event ev = {0};
    ev_msg msg = {0};
    const void *frame;
    size_t len;
    ev.schema = ev_schema_by_name(type);
    ev.value = tu_value(codec, type, json);
    ck_assert_int_eq(ev_codec_encode(codec, ev.schema, ev.value, &frame, &len, err, sizeof(err)),
                     0);
    msg.value = frame;
    msg.value_len = len;
    ev.msg = &msg;
    snprintf(ev.id, sizeof(ev.id), "e%d", ++seq);
    snprintf(ev.source, sizeof(ev.source), "test");
    ev.time_ns = START + seq;
    ck_assert_int_ge(ev_state_apply(state, &ev, err, sizeof(err)), 0);
    if (strcmp(ev_schema_topic(ev.schema), "sessions") == 0)
        ck_assert_msg(ar_writer_event(w, "sessions", "s1", &ev, err, sizeof(err)) == 0, "%s", err);
    else
        ck_assert_int_ge(ar_devices_add(history, &ev, err, sizeof(err)), 0);
}

static double device_offset(double master)
{
    return OFFSET0 + DRIFT * (master - (double)START);
}

/* A clock round at master time m: 4 probes, delays 100 us + jitter. */
static void clock_round(ar_writer *w, int round, int64_t m)
{
    char json[2048], probes[1200] = "";
    int64_t k1 = 0, k2 = 0, k3 = 0, k4 = 0;
    for (int k = 0; k < 4; k++) {
        int64_t t1 = m + k * 5000000LL, down = 100000 + k * 30000, up = 100000 + (3 - k) * 20000;
        int64_t t2 = t1 + down + (int64_t)device_offset((double)(t1 + down));
        int64_t m3 = t1 + down + 2000, t4 = m3 + up; /* answered 2 us later */
        int64_t t3 = m3 + (int64_t)device_offset((double)m3);
        snprintf(probes + strlen(probes), sizeof(probes) - strlen(probes),
                 "%s{\"t1_ns\": %lld, \"t2_ns\": %lld, \"t3_ns\": %lld, \"t4_ns\": %lld}",
                 k ? ", " : "", (long long)t1, (long long)t2, (long long)t3, (long long)t4);
        if (k == 0) {
            k1 = t1;
            k2 = t2;
            k3 = t3;
            k4 = t4;
        }
    }
    snprintf(json, sizeof(json),
             "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"round\": %d, \"offset_ns\": %lld, "
             "\"rtt_ns\": 200000, \"drift_ppm\": 50.0, \"uncertainty_ns\": 100000, \"probes\": 4, "
             "\"t1_ns\": %lld, \"t2_ns\": %lld, \"t3_ns\": %lld, \"t4_ns\": %lld, "
             "\"round_probes\": [%s]}",
             round, (long long)device_offset((double)k4), (long long)k1, (long long)k2,
             (long long)k3, (long long)k4, probes);
    deliver(w, "ClockOffsetMeasured", json);
}

static int batch(ar_writer *w, const char *stream, int64_t batch_seq, int channels)
{
    char json[1024], err[512];
    int64_t m = START + batch_seq * 10000000LL;
    snprintf(json, sizeof(json),
             "{\"device_id\": \"d1\", \"session_id\": \"s1\", \"stream_id\": \"%s\", "
             "\"stream_type\": \"%s\", \"seq\": %lld, \"channels\": %d, "
             "\"device_time_ns\": [%lld, %lld], \"master_time_ns\": [%lld, %lld], "
             "\"values\": [%s]}",
             stream, stream, (long long)batch_seq, channels, (long long)(m + 1000000),
             (long long)(m + 6000000), (long long)m, (long long)(m + 5000000),
             channels == 1 ? "0.5, 1.5" : "1, 2, 3, 4, 5, 6");
    avro_value_t *v = tu_value(codec, "SensorSampleBatch", json);
    json_t *view = ev_state_to_json(state);
    int rc = ar_writer_samples(w, v, json_object_get(json_object_get(view, "devices"), "d1"), err,
                               sizeof(err));
    json_decref(view);
    ck_assert_msg(rc >= 0, "%s", err);
    return rc;
}

/* Writes session s1 (CollectionStarted at start_at) and finishes it. */
static int write_session(int64_t start_at, char *final, size_t size, int *complete)
{
    char err[512], json[512];
    ar_writer *w;
    ck_assert_int_eq(ar_writer_new(&w, root, "s1", err, sizeof(err)), 0);
    deliver(w, "DeviceRegistered",
            "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"name\": \"sim\", \"streams\": "
            "[{\"stream_id\": \"gsr\", \"type\": \"GSR\", \"rate_hz\": 200.0, \"channels\": 1, "
            "\"format\": \"float64\"}, {\"stream_id\": \"imu\", \"type\": \"IMU\", "
            "\"rate_hz\": 200.0, \"channels\": 3, \"format\": \"float64\"}]}");
    for (int r = 0; r < 5; r++)
        clock_round(w, r + 1, START - 10 * S + r * 5 * S);
    deliver(w, "CollectionRequested",
            "{\"session_id\": \"s1\", \"requested_by\": \"t\", \"labels\": {\"subject\": "
            "\"01\", \"task\": \"rest\"}}");
    deliver(w, "SynchronizationCompleted",
            "{\"session_id\": \"s1\", \"devices\": [{\"device_id\": \"d1\", \"node_id\": "
            "\"n1\", \"offset_ns\": 1000000, \"drift_ppm\": 50.0, \"uncertainty_ns\": 1000}], "
            "\"max_uncertainty_ns\": 1000}");
    snprintf(json, sizeof(json),
             "{\"session_id\": \"s1\", \"start_at_ns\": %lld, \"device_ids\": [\"d1\"]}",
             (long long)start_at);
    deliver(w, "CollectionStarted", json);
    deliver(w, "SyncMark",
            "{\"session_id\": \"s1\", \"device_id\": \"d1\", \"mark_id\": \"m1\", \"label\": "
            "\"go\", \"device_time_ns\": 1, \"master_time_ns\": 1795347001000000000}");
    ck_assert_int_eq(batch(w, "gsr", 0, 1), 0);
    ck_assert_int_eq(batch(w, "gsr", 2, 1), 0);
    ck_assert_int_eq(batch(w, "gsr", 2, 1), 1); /* redelivered: skipped */
    ck_assert_int_eq(batch(w, "imu", 0, 3), 0);
    snprintf(json, sizeof(json),
             "{\"session_id\": \"s1\", \"stop_at_ns\": %lld, \"duration_ns\": %lld, \"reason\": "
             "\"requested\", \"streams\": [{\"device_id\": \"d1\", \"stream_id\": \"gsr\", "
             "\"samples\": 4, \"bytes\": 32, \"gaps\": 0, \"dropped\": 0}, {\"device_id\": "
             "\"d1\", \"stream_id\": \"imu\", \"samples\": 2, \"bytes\": 48, \"gaps\": 0, "
             "\"dropped\": 0}]}",
             (long long)STOP, (long long)(STOP - START));
    deliver(w, "CollectionStopped", json);

    json_t *view = ev_state_to_json(state);
    json_t *session = json_object_get(json_object_get(view, "sessions"), "s1");
    json_t *diff = ar_writer_mismatches(w, session);
    ck_assert_int_eq(json_array_size(diff), 0);
    json_decref(diff);
    int rc = ar_writer_finish(w, session, json_object_get(view, "devices"), history, final, size,
                              complete, err, sizeof(err));
    ck_assert_msg(rc >= 0, "%s", err);
    ar_writer_destroy(w);
    json_decref(view);
    return rc;
}

static int count_event(void *arg, const ev_event *ev, const char *error)
{
    ck_assert_msg(ev != NULL, "%s", error);
    (*(int *)arg)++;
    return 0;
}

static int count_record(void *arg, avro_value_t *record)
{
    (void)record;
    (*(int *)arg)++;
    return 0;
}

START_TEST(written_and_read_back)
{
    char final[1200], want[1200], err[1024], path[PATH_MAX], hex[65];
    int complete = 0, n = 0;
    int64_t bytes;
    ck_assert_int_eq(write_session(START, final, sizeof(final), &complete), 0);
    snprintf(want, sizeof(want), "%s/s1", root);
    ck_assert_str_eq(final, want);
    ck_assert_int_eq(complete, 1);

    ar_reader *r;
    ck_assert_msg(ar_reader_open(&r, final, err, sizeof(err)) == 0, "%s", err);
    const json_t *m = ar_reader_manifest(r);
    ck_assert_str_eq(json_string_value(json_object_get(m, "format")), "msrs-archive/1");
    ck_assert_str_eq(json_string_value(json_object_get(m, "session_id")), "s1");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(m, "labels"), "subject")),
                     "01");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(m, "requested"), "requested_by")), "t");
    ck_assert_int_eq(json_integer_value(json_object_get(m, "start_at_ns")), START);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "stop_at_ns")), STOP);
    ck_assert_str_eq(json_string_value(json_object_get(m, "reason")), "requested");
    ck_assert(json_is_true(json_object_get(m, "complete")));
    ck_assert_int_eq(json_array_size(json_object_get(m, "marks")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(m, "xdf")), "sub-01_task-rest.xdf");
    json_t *d1 = json_object_get(json_object_get(m, "devices"), "d1");
    json_t *gsr = json_object_get(json_object_get(d1, "streams"), "gsr");
    ck_assert_int_eq(json_integer_value(json_object_get(gsr, "samples")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(gsr, "duplicates")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(gsr, "gaps")), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(gsr, "declared"), "type")),
                     "GSR");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(d1, "sync"), "node_id")),
                     "n1");
    /* the clock fit: every probe of the 5 rounds, offset at the start */
    json_t *fit = json_object_get(d1, "clock_fit");
    ck_assert_int_eq(json_integer_value(json_object_get(fit, "offsets")), 5);
    double drift = json_real_value(json_object_get(fit, "drift_ppm"));
    double offset = (double)json_integer_value(json_object_get(fit, "offset_at_start_ns"));
    ck_assert_msg(fabs(drift - DRIFT * 1e6) < 0.1, "drift %.3f ppm", drift);
    ck_assert_msg(fabs(offset - OFFSET0) < 1000, "offset %.0f ns", offset);

    /* every file listed, with its size and SHA-256 */
    json_t *files = json_object_get(m, "files");
    static const char *const expect[] = {"events.avro", "d1/clock.avro", "d1/gsr.avro",
                                         "d1/imu.avro", "sub-01_task-rest.xdf"};
    ck_assert_int_eq(json_object_size(files), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *f = json_object_get(files, expect[i]);
        ck_assert_msg(f != NULL, "%s listed", expect[i]);
        ck_assert_int_eq(ar_reader_path(r, expect[i], path, sizeof(path)), 0);
        ck_assert_int_eq(ar_sha256_file(path, hex, &bytes, err, sizeof(err)), 0);
        ck_assert_str_eq(json_string_value(json_object_get(f, "sha256")), hex);
        ck_assert_int_eq(json_integer_value(json_object_get(f, "bytes")), bytes);
    }
    ck_assert_msg(ar_reader_verify(r, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ar_file_kind_of("d1/gsr.avro"), AR_FILE_STREAM);
    ck_assert_int_eq(ar_file_kind_of("d1/clock.avro"), AR_FILE_CLOCK);
    ck_assert_int_eq(ar_file_kind_of("events.avro"), AR_FILE_EVENTS);

    /* the records: 5 session records + the registration; 5 rounds; 2 batches */
    ck_assert_int_eq(ar_reader_events(r, count_event, &n, err, sizeof(err)), 0);
    ck_assert_int_eq(n, 6);
    n = 0;
    ck_assert_int_eq(ar_reader_clock(r, count_event, &n, err, sizeof(err)), 0);
    ck_assert_int_eq(n, 5);
    n = 0;
    ar_reader_path(r, "d1/gsr.avro", path, sizeof(path));
    ck_assert_int_eq(ar_each_record(path, count_record, &n, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(n, 2);
    ar_reader_destroy(r);
}
END_TEST

START_TEST(never_overwrites)
{
    char final[1200], want[1200];
    int complete;
    ck_assert_int_eq(write_session(START, final, sizeof(final), &complete), 0);
    /* the same session again: left as it is */
    ev_state_destroy(state);
    state = ev_state_new();
    ck_assert_int_eq(write_session(START, final, sizeof(final), &complete), 1);
    snprintf(want, sizeof(want), "%s/s1", root);
    ck_assert_str_eq(final, want);
    snprintf(want, sizeof(want), "%s/.staging/s1", root);
    ck_assert_int_ne(access(want, F_OK), 0);
    /* another session of that id: "-2" */
    ev_state_destroy(state);
    state = ev_state_new();
    ck_assert_int_eq(write_session(START + S, final, sizeof(final), &complete), 0);
    snprintf(want, sizeof(want), "%s/s1-2", root);
    ck_assert_str_eq(final, want);
}
END_TEST

START_TEST(truncated_and_missing)
{
    char final[1200], path[PATH_MAX], err[1024];
    int complete, n = 0;
    ck_assert_int_eq(write_session(START, final, sizeof(final), &complete), 0);
    snprintf(path, sizeof(path), "%s/d1/gsr.avro", final);
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    ck_assert_int_eq(truncate(path, size - 20), 0);

    ar_reader *r;
    ck_assert_int_eq(ar_reader_open(&r, final, err, sizeof(err)), 0);
    int rc = ar_each_record(path, count_record, &n, NULL, err, sizeof(err));
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strstr(err, "d1/gsr.avro") != NULL, "%s", err);
    ck_assert_int_eq(ar_reader_verify(r, err, sizeof(err)), EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "d1/gsr.avro") && strstr(err, "bytes"), "%s", err);
    ar_reader_destroy(r);

    snprintf(path, sizeof(path), "%s/manifest.json", final);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(ar_reader_open(&r, final, err, sizeof(err)), EV_ERR_IO);
    ck_assert_ptr_null(r);
    ck_assert_msg(strstr(err, path) != NULL, "%s", err);

    f = fopen(path, "w");
    fputs("{\"format\": \"something else\"}", f);
    fclose(f);
    ck_assert_int_eq(ar_reader_open(&r, final, err, sizeof(err)), EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "manifest.json") && strstr(err, "files"), "%s", err);
}
END_TEST

/* A block size that does not fit in the file, and a record that is not a
 * value of the schema, are refused before avro-c reads them (avro-c asked
 * for 14.5 GB on a corrupt block size: fuzz_archive_fold). */
START_TEST(corrupt_blocks_are_refused_before_avro_c)
{
    char final[1200], path[PATH_MAX], err[1024];
    int complete, n = 0;
    ck_assert_int_eq(write_session(START, final, sizeof(final), &complete), 0);
    snprintf(path, sizeof(path), "%s/d1/gsr.avro", final);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    ck_assert_uint_gt(len, 40);
    /* the header's sync marker is the file's last 16 bytes; the first
     * block's count and size follow its first appearance */
    unsigned char *hdr_end = memmem(buf, len, buf + len - 16, 16);
    ck_assert_ptr_nonnull(hdr_end);
    size_t block = (size_t)(hdr_end + 16 - buf);
    unsigned char huge[sizeof(buf) + 16];
    memcpy(huge, buf, block);
    size_t at = block;
    huge[at++] = buf[block]; /* the count, one byte for a small block */
    static const unsigned char big[] = {0xfe, 0xff, 0xff, 0xff, 0x7f}; /* ~17 GB */
    memcpy(huge + at, big, sizeof(big));
    at += sizeof(big);
    size_t skip = block + 1; /* past the old size varint */
    while (buf[skip] & 0x80)
        skip++;
    skip++;
    memcpy(huge + at, buf + skip, len - skip);
    at += len - skip;
    f = fopen(path, "wb");
    fwrite(huge, 1, at, f);
    fclose(f);
    ck_assert_int_eq(ar_each_record(path, count_record, &n, NULL, err, sizeof(err)),
                     EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "block 0") && strstr(err, "does not fit"), "%s", err);
    /* a record byte flipped into an impossible union index or length */
    memcpy(huge, buf, len);
    for (size_t i = block + 2; i < len - 16; i++)
        huge[i] = 0xff;
    f = fopen(path, "wb");
    fwrite(huge, 1, len, f);
    fclose(f);
    ck_assert_int_eq(ar_each_record(path, count_record, &n, NULL, err, sizeof(err)),
                     EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "d1/gsr.avro") != NULL, "%s", err);
    ck_assert_int_eq(n, 0);
}
END_TEST

/* Folder names of ids: kept when safe, else made safe with a hash of the id,
 * so the valid ids "s:1" and "s_1" never share a staging or session folder
 * (the second used to delete the first's staging folder). */
/* ar__writeback follows the file: nothing for no descriptor, each call
 * marks the size it started, and a descriptor that cannot be written back
 * (a pipe) is an error with errno, not silence. */
START_TEST(writeback_follows_the_file_and_reports_failure)
{
    char path[] = "/tmp/msrs-writeback-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    int64_t started = 0;
    ck_assert_int_eq(ar__writeback(-1, &started), 0);
    ck_assert_int_eq(started, 0);
    char block[65536];
    memset(block, 'v', sizeof(block));
    for (int i = 0; i < 16; i++)
        ck_assert_int_eq(write(fd, block, sizeof(block)), (int)sizeof(block));
    ck_assert_int_eq(ar__writeback(fd, &started), 0);
    ck_assert_int_eq(started, 16 * (int64_t)sizeof(block));
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(write(fd, block, sizeof(block)), (int)sizeof(block));
    ck_assert_int_eq(ar__writeback(fd, &started), 0); /* waits for the first 1 MiB */
    ck_assert_int_eq(started, 24 * (int64_t)sizeof(block));
    close(fd);
    unlink(path);

    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    started = 0;
    errno = 0;
    ck_assert_int_eq(ar__writeback(p[1], &started), -1);
    ck_assert_int_eq(errno, ESPIPE);
    ck_assert_int_eq(started, 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(ids_that_need_changing_never_share_a_folder)
{
    char a[64], b[64], c[64];
    ar__safe_name(a, sizeof(a), "s1");
    ck_assert_str_eq(a, "s1");
    ar__safe_name(a, sizeof(a), "s:1");
    ar__safe_name(b, sizeof(b), "s_1");
    ar__safe_name(c, sizeof(c), "s:1");
    ck_assert_str_eq(b, "s_1");
    ck_assert_str_ne(a, b);
    ck_assert_str_eq(a, c);
    ck_assert(strncmp(a, "s_1~", 4) == 0);
    ar__safe_name(a, sizeof(a), "..");
    ck_assert(strncmp(a, "unnamed~", 8) == 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("archive");
    TCase *tc = tcase_create("archive");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, written_and_read_back);
    tcase_add_test(tc, never_overwrites);
    tcase_add_test(tc, truncated_and_missing);
    tcase_add_test(tc, corrupt_blocks_are_refused_before_avro_c);
    tcase_add_test(tc, ids_that_need_changing_never_share_a_folder);
    tcase_add_test(tc, writeback_follows_the_file_and_reports_failure);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
