/* The codec: every record type round-trips through the Confluent framing;
 * short, corrupt, unknown and oversized input gives an error, never a
 * crash (each byte of every record truncated and flipped). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ev_codec *codec;

static void setup(void)
{
    codec = ev_codec_new();
}
static void teardown(void)
{
    ev_codec_destroy(codec);
}

/* Encodes v (of schema s) with the generic encoder; the frame copied into
 * a new buffer. */
static unsigned char *encode_copy(const ev_schema *s, avro_value_t *v, size_t *len)
{
    char err[512];
    const void *out;
    ck_assert_msg(ev_codec_encode(codec, s, v, &out, len, err, sizeof(err)) == 0, "%s", err);
    unsigned char *copy = malloc(*len);
    memcpy(copy, out, *len);
    return copy;
}

/* Encodes the fixture of name; copies the frame into a new buffer. */
static unsigned char *encode_fixture(const char *name, size_t *len)
{
    char err[512];
    const ev_schema *s = ev_schema_by_name(name);
    avro_value_t *v;
    ck_assert_int_eq(ev_codec_value(codec, s, &v), 0);
    ck_assert_msg(ev_value_from_json(v, tu_fixture(name), err, sizeof(err)) == 0, "%s: %s", name,
                  err);
    return encode_copy(s, v, len);
}

START_TEST(roundtrip_every_record)
{
    for (size_t i = 0; i < ev_schema_count(); i++) {
        const ev_schema *s = ev_schema_at(i);
        const char *name = ev_schema_short_name(s);
        char err[512];
        size_t len;
        unsigned char *frame = encode_fixture(name, &len);
        const ev_schema *got;
        avro_value_t *v;
        json_t *j;

        ck_assert_int_eq(frame[0], 0x00);
        int32_t id;
        ck_assert_int_eq(ev_frame_schema_id(frame, len, &id), 0);
        ck_assert_int_eq(id, ev_schema_id(s));
        ck_assert_msg(ev_codec_decode(codec, frame, len, &got, &v, err, sizeof(err)) == 0, "%s: %s",
                      name, err);
        ck_assert_ptr_eq(got, s);
        ck_assert_int_eq(ev_value_to_json(v, &j, err, sizeof(err)), 0);
        char *a = json_dumps(j, JSON_SORT_KEYS), *b = json_dumps(tu_fixture(name), JSON_SORT_KEYS);
        ck_assert_msg(json_equal(j, tu_fixture(name)), "%s:\n got  %s\n want %s", name, a, b);
        free(a);
        free(b);
        json_decref(j);
        free(frame);
    }
}
END_TEST

/* The NodeHeartbeat fixture with the fields added since v1 at 0 (each then
 * one byte: the frame's last 4), cpu_load set to *cpu_load when given,
 * encoded: a malloc'd frame of *len bytes; *want (may be NULL) the JSON it
 * was made from. */
static unsigned char *heartbeat_frame(const float *cpu_load, json_t **want, size_t *len)
{
    char err[512];
    const ev_schema *s = ev_schema_by_name("NodeHeartbeat");
    json_t *j = json_deep_copy(tu_fixture("NodeHeartbeat"));
    avro_value_t *v, f;
    const void *out;
    json_object_set_new(j, "mem_available_bytes", json_integer(0));
    json_object_set_new(j, "rx_bytes_per_s", json_integer(0));
    json_object_set_new(j, "slowing_devices", json_false());
    json_object_set_new(j, "log_backlog_bytes", json_integer(0));
    ck_assert_int_eq(ev_codec_value(codec, s, &v), 0);
    ck_assert_int_eq(ev_value_from_json(v, j, err, sizeof(err)), 0);
    if (cpu_load) {
        ck_assert_int_eq(avro_value_get_by_name(v, "cpu_load", &f, NULL), 0);
        ck_assert_int_eq(avro_value_set_float(&f, *cpu_load), 0);
    }
    ck_assert_int_eq(ev_codec_encode(codec, s, v, &out, len, err, sizeof(err)), 0);
    unsigned char *frame = malloc(*len);
    memcpy(frame, out, *len);
    for (size_t i = 1; i <= 4; i++)
        ck_assert_int_eq(frame[*len - i], 0);
    if (want)
        *want = j;
    else
        json_decref(j);
    return frame;
}

/* Earlier versions (schemas/history/NodeHeartbeat.v1.avsc, id 103, and
 * .v2, id 106) are the current one without its last fields: v2 lacks
 * slowing_devices (a boolean) and log_backlog_bytes (a long), v1 also
 * mem_available_bytes and rx_bytes_per_s (longs). With all of them 0 each
 * is one byte, so the current encoding minus its last 4 (v1) or 2 (v2)
 * bytes is a record of that version. It decodes as the current version
 * with the added fields at their defaults; cut short or with bytes to
 * spare it is refused like any record. */
START_TEST(earlier_version_reads_as_current)
{
    static const struct {
        int id;
        size_t missing; /* bytes of the fields added since */
    } versions[] = {{103, 4}, {106, 2}};
    char err[512];
    const ev_schema *s = ev_schema_by_name("NodeHeartbeat"), *got = NULL;
    json_t *want, *j;
    avro_value_t *v;
    size_t len;
    unsigned char *frame = heartbeat_frame(NULL, &want, &len);
    for (size_t k = 0; k < sizeof(versions) / sizeof(versions[0]); k++) {
        size_t old_len = len - versions[k].missing;
        frame[4] = (unsigned char)versions[k].id; /* ids 0..255 fit the last byte */
        ck_assert_int_ne(ev_schema_id(s), versions[k].id);
        ck_assert_msg(ev_codec_decode(codec, frame, old_len, &got, &v, err, sizeof(err)) == 0,
                      "id %d: %s", versions[k].id, err);
        ck_assert_ptr_eq(got, s);
        ck_assert_int_eq(ev_value_to_json(v, &j, err, sizeof(err)), 0);
        ck_assert(json_equal(j, want));
        json_decref(j);
        for (size_t cut = EV_FRAME_HEADER_LEN; cut < old_len; cut++)
            ck_assert_int_eq(ev_codec_decode(codec, frame, cut, &got, &v, err, sizeof(err)),
                             EV_ERR_TRUNCATED);
        ck_assert_int_eq(ev_codec_decode(codec, frame, old_len + 1, &got, &v, err, sizeof(err)),
                         EV_ERR_CORRUPT);
        ck_assert_msg(strstr(err, "trailing") != NULL, "%s", err);
    }
    json_decref(want);
    free(frame);
}
END_TEST

/* An earlier version's float that is not a number (NaN, an infinity) reads
 * as NaN: the conversion goes through JSON, which has neither, and a record
 * ev_codec_check accepts must decode (fuzz_frame found one that did not). */
START_TEST(earlier_version_with_nan_reads)
{
    char err[512];
    const ev_schema *s = ev_schema_by_name("NodeHeartbeat"), *got = NULL;
    const float infinite = INFINITY;
    avro_value_t *v, f;
    size_t len;
    unsigned char *frame = heartbeat_frame(&infinite, NULL, &len);
    frame[4] = 103; /* v1: the last 4 bytes are fields it does not have */
    const ev_schema *checked = NULL;
    ck_assert_int_eq(ev_codec_check(frame, len - 4, &checked, err, sizeof(err)), 0);
    ck_assert_msg(ev_codec_decode(codec, frame, len - 4, &got, &v, err, sizeof(err)) == 0, "%s",
                  err);
    float x = 0;
    ck_assert_int_eq(avro_value_get_by_name(v, "cpu_load", &f, NULL), 0);
    ck_assert_int_eq(avro_value_get_float(&f, &x), 0);
    ck_assert(isnan(x));
    ck_assert_ptr_eq(got, s);
    free(frame);
}
END_TEST

START_TEST(short_frames)
{
    char err[256];
    const ev_schema *s;
    avro_value_t *v;
    unsigned char b[5] = {0, 0, 0, 0, 101};
    for (size_t len = 0; len < 5; len++)
        ck_assert_int_eq(ev_codec_decode(codec, b, len, &s, &v, err, sizeof(err)),
                         EV_ERR_TRUNCATED);
    ck_assert(strstr(err, "expected at least 5") != NULL);
}
END_TEST

START_TEST(bad_magic)
{
    char err[256];
    const ev_schema *s;
    avro_value_t *v;
    unsigned char b[] = {1, 0, 0, 0, 101, 2, 'a'};
    ck_assert_int_eq(ev_codec_decode(codec, b, sizeof(b), &s, &v, err, sizeof(err)),
                     EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "0x01") != NULL, "%s", err);
}
END_TEST

START_TEST(unknown_schema_id)
{
    char err[256];
    const ev_schema *s;
    avro_value_t *v;
    unsigned char b[] = {0, 0, 0, 0x03, 0xe7, 2, 'a'}; /* id 999 */
    ck_assert_int_eq(ev_codec_decode(codec, b, sizeof(b), &s, &v, err, sizeof(err)),
                     EV_ERR_UNKNOWN_SCHEMA);
    ck_assert_msg(strstr(err, "999") != NULL, "%s", err);
}
END_TEST

START_TEST(truncated_at_every_length)
{
    for (size_t i = 0; i < ev_schema_count(); i++) {
        const char *name = ev_schema_short_name(ev_schema_at(i));
        size_t len;
        unsigned char *frame = encode_fixture(name, &len);
        for (size_t cut = 0; cut < len; cut++) {
            char err[256];
            const ev_schema *s;
            avro_value_t *v;
            unsigned char *copy = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
            memcpy(copy, frame, cut);
            int rc = ev_codec_decode(codec, copy, cut, &s, &v, err, sizeof(err));
            ck_assert_msg(rc == EV_ERR_TRUNCATED || rc == EV_ERR_CORRUPT,
                          "%s cut at %zu of %zu: rc %d", name, cut, len, rc);
            free(copy);
        }
        free(frame);
    }
}
END_TEST

START_TEST(trailing_bytes)
{
    char err[256];
    size_t len;
    const ev_schema *s;
    avro_value_t *v;
    unsigned char *frame = encode_fixture("SyncNow", &len);
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, frame, len);
    longer[len] = 0;
    ck_assert_int_eq(ev_codec_decode(codec, longer, len + 1, &s, &v, err, sizeof(err)),
                     EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "trailing") != NULL, "%s", err);
    free(longer);
    free(frame);
}
END_TEST

/* A string with a NUL inside (a device id "d\0evil") is refused: C reads
 * ids up to the first NUL, and the reducers read past the end of one that
 * ends early (ASan: msrs-replay on a log with two such records). */
START_TEST(nul_inside_a_string_is_refused)
{
    char err[256];
    const ev_schema *s = ev_schema_by_name("DeviceRegistered");
    avro_value_t *v =
        tu_value(codec, "DeviceRegistered", "{\"device_id\": \"dXevil\", \"node_id\": \"n1\"}");
    const void *out;
    size_t len;
    ck_assert_int_eq(ev_codec_encode(codec, s, v, &out, &len, err, sizeof(err)), 0);
    unsigned char *frame = malloc(len);
    memcpy(frame, out, len);
    unsigned char *x = memmem(frame, len, "dXevil", 6);
    ck_assert_ptr_nonnull(x);
    x[1] = 0;
    const ev_schema *got;
    avro_value_t *value;
    ck_assert_int_eq(ev_codec_check(frame, len, &got, err, sizeof(err)), EV_ERR_CORRUPT);
    ck_assert_int_eq(ev_codec_decode(codec, frame, len, &got, &value, err, sizeof(err)),
                     EV_ERR_CORRUPT);
    free(frame);
}
END_TEST

START_TEST(corrupt_bytes_never_crash)
{
    /* Every byte of every record set to values that break lengths and
     * counts: decode must answer ok or an error, and the codec stays usable. */
    static const unsigned char evil[] = {0xff, 0x7f, 0x80, 0x01, 0x00, 0xfe};
    for (size_t i = 0; i < ev_schema_count(); i++) {
        const char *name = ev_schema_short_name(ev_schema_at(i));
        size_t len;
        unsigned char *frame = encode_fixture(name, &len);
        for (size_t pos = EV_FRAME_HEADER_LEN; pos < len; pos++) {
            for (size_t e = 0; e < sizeof(evil); e++) {
                char err[256];
                const ev_schema *s;
                avro_value_t *v;
                unsigned char *copy = malloc(len);
                memcpy(copy, frame, len);
                copy[pos] = evil[e];
                int rc = ev_codec_decode(codec, copy, len, &s, &v, err, sizeof(err));
                ck_assert(rc == 0 || rc == EV_ERR_TRUNCATED || rc == EV_ERR_CORRUPT);
                free(copy);
            }
        }
        /* Still decodes the intact record afterwards. */
        const ev_schema *s;
        avro_value_t *v;
        ck_assert_int_eq(ev_codec_decode(codec, frame, len, &s, &v, NULL, 0), 0);
        free(frame);
    }
}
END_TEST

START_TEST(large_record_grows_buffer)
{
    /* 4 MiB of video bytes: larger than the codec's initial buffer. */
    char err[256];
    const ev_schema *s = ev_schema_by_name("MediaPacket"), *got;
    avro_value_t *v, *field, *dv;
    const void *out;
    size_t len, size = 4u << 20;
    unsigned char *bytes = malloc(size);
    for (size_t i = 0; i < size; i++)
        bytes[i] = (unsigned char)(i * 31);
    ck_assert_int_eq(ev_codec_value(codec, s, &v), 0);
    ck_assert_int_eq(ev_value_from_json(v, tu_fixture("MediaPacket"), err, sizeof(err)), 0);
    avro_value_t data;
    ck_assert_int_eq(avro_value_get_by_name(v, "data", &data, NULL), 0);
    ck_assert_int_eq(avro_value_set_bytes(&data, bytes, size), 0);
    ck_assert_msg(ev_codec_encode(codec, s, v, &out, &len, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_gt(len, size);
    unsigned char *copy = malloc(len);
    memcpy(copy, out, len);
    ck_assert_int_eq(ev_codec_decode(codec, copy, len, &got, &dv, err, sizeof(err)), 0);
    field = &data;
    ck_assert_int_eq(avro_value_get_by_name(dv, "data", field, NULL), 0);
    const void *b;
    size_t blen;
    avro_value_get_bytes(field, &b, &blen);
    ck_assert_uint_eq(blen, size);
    ck_assert(memcmp(b, bytes, size) == 0);
    free(copy);
    free(bytes);
}
END_TEST

START_TEST(value_of_other_schema_refused)
{
    char err[256];
    const void *out;
    size_t len;
    avro_value_t *v = tu_value(codec, "SyncNow", "{\"node_id\": \"n\"}");
    ck_assert_int_eq(
        ev_codec_encode(codec, ev_schema_by_name("NodeExpired"), v, &out, &len, err, sizeof(err)),
        EV_ERR_INVALID);
    ck_assert(strstr(err, "another schema") != NULL);
}
END_TEST

/* ev_codec_encode_samples writes what the generic encoder writes for the
 * same SensorSampleBatch, byte for byte, whatever the sizes and values
 * (negative and 64-bit times, NaN and signed zero, empty strings). */
static void samples_both_ways(size_t n, int channels, const char *session, const char *type,
                              int64_t base)
{
    char err[512];
    const ev_schema *s = ev_schema_by_name("SensorSampleBatch");
    int64_t *dev = malloc(n * sizeof(*dev)), *master = malloc(n * sizeof(*master));
    double *x = malloc(n * (size_t)channels * sizeof(*x));
    avro_value_t *v, f, el;
    ck_assert_int_eq(ev_codec_value(codec, s, &v), 0);
    avro_value_get_by_name(v, "device_id", &f, NULL);
    avro_value_set_string(&f, "phone-7");
    avro_value_get_by_name(v, "session_id", &f, NULL);
    avro_value_set_string(&f, session);
    avro_value_get_by_name(v, "stream_id", &f, NULL);
    avro_value_set_string(&f, "gsr");
    avro_value_get_by_name(v, "stream_type", &f, NULL);
    avro_value_set_string(&f, type);
    avro_value_get_by_name(v, "seq", &f, NULL);
    avro_value_set_long(&f, base / 3);
    avro_value_get_by_name(v, "channels", &f, NULL);
    avro_value_set_int(&f, channels);
    for (size_t i = 0; i < n; i++) {
        dev[i] = base + (int64_t)i * 7919 - (i % 3 ? 0 : INT64_C(1) << 40);
        master[i] = -dev[i] + (int64_t)(i * i);
        avro_value_get_by_name(v, "device_time_ns", &f, NULL);
        avro_value_append(&f, &el, NULL);
        avro_value_set_long(&el, dev[i]);
        avro_value_get_by_name(v, "master_time_ns", &f, NULL);
        avro_value_append(&f, &el, NULL);
        avro_value_set_long(&el, master[i]);
    }
    for (size_t k = 0; k < n * (size_t)channels; k++) {
        x[k] = k % 5 == 0 ? NAN : k % 5 == 1 ? -0.0 : (double)k * -1.25e-3;
        avro_value_get_by_name(v, "values", &f, NULL);
        avro_value_append(&f, &el, NULL);
        avro_value_set_double(&el, x[k]);
    }
    const void *direct;
    size_t generic_len, direct_len;
    unsigned char *want = encode_copy(s, v, &generic_len);
    ev_samples b = {.device_id = "phone-7",
                    .session_id = *session ? session : NULL,
                    .stream_id = "gsr",
                    .stream_type = type,
                    .seq = base / 3,
                    .channels = channels,
                    .n = n,
                    .device_time_ns = dev,
                    .master_time_ns = master,
                    .values_le = x};
    ck_assert_msg(ev_codec_encode_samples(codec, &b, &direct, &direct_len, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_uint_eq(direct_len, generic_len);
    ck_assert_msg(memcmp(direct, want, generic_len) == 0, "n=%zu channels=%d: bytes differ", n,
                  channels);
    /* and it decodes as the record it is */
    const ev_schema *got;
    ck_assert_int_eq(ev_codec_decode(codec, direct, direct_len, &got, &v, err, sizeof(err)), 0);
    ck_assert_ptr_eq(got, s);
    free(want);
    free(dev);
    free(master);
    free(x);
}

START_TEST(samples_direct_equals_generic)
{
    samples_both_ways(1, 1, "", "", 0);
    samples_both_ways(13, 4, "s-20261204", "gsr", INT64_C(1764800000123456789));
    samples_both_ways(70, 130, "s", "", -INT64_C(4611686018427387904));
    samples_both_ways(5000, 3, "a-session-id-of-some-length", "thermal", 64); /* > 64 KiB */
}
END_TEST

START_TEST(samples_direct_refuses_empty)
{
    char err[256];
    const void *out;
    size_t len;
    int64_t t = 1;
    double x = 0;
    ev_samples b = {.device_id = "d",
                    .stream_id = "s",
                    .channels = 1,
                    .n = 0,
                    .device_time_ns = &t,
                    .master_time_ns = &t,
                    .values_le = &x};
    ck_assert_int_eq(ev_codec_encode_samples(codec, &b, &out, &len, err, sizeof(err)),
                     EV_ERR_INVALID);
    ck_assert(strstr(err, "n >= 1") != NULL);
}
END_TEST

/* ev_codec_encode_media: the generic encoder's bytes, for packets of 0
 * bytes to past the codec's first buffer, keyframe or not. */
static void media_both_ways(size_t bytes, int keyframe, const char *session)
{
    char err[512];
    const ev_schema *s = ev_schema_by_name("MediaPacket");
    unsigned char *packet = malloc(bytes + 1);
    for (size_t i = 0; i < bytes; i++)
        packet[i] = (unsigned char)(i * 131 + 7);
    json_t *rec = json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:i, s:i, s:I, s:b, s:I, s:I, s:s}", "device_id", "cam-1",
        "session_id", session, "stream_id", "rgb", "seq", (json_int_t)-3, "codec", "h264", "width",
        1280, "height", -720, "pts", (json_int_t)INT64_MIN, "keyframe", keyframe, "device_time_ns",
        (json_int_t)INT64_MAX, "master_time_ns", (json_int_t)1764800000123456789LL, "data", "");
    avro_value_t *v, data;
    ck_assert_int_eq(ev_codec_value(codec, s, &v), 0);
    ck_assert_msg(ev_value_from_json(v, rec, err, sizeof(err)) == 0, "%s", err);
    json_decref(rec);
    avro_value_get_by_name(v, "data", &data, NULL);
    avro_value_set_bytes(&data, packet, bytes);
    const void *direct;
    size_t generic_len, direct_len;
    unsigned char *want = encode_copy(s, v, &generic_len);
    ev_media m = {.device_id = "cam-1",
                  .session_id = *session ? session : NULL,
                  .stream_id = "rgb",
                  .codec = "h264",
                  .seq = -3,
                  .pts = INT64_MIN,
                  .device_time_ns = INT64_MAX,
                  .master_time_ns = 1764800000123456789LL,
                  .width = 1280,
                  .height = -720,
                  .time_base_den = 1000000000,
                  .keyframe = keyframe,
                  .data = packet,
                  .data_len = bytes};
    ck_assert_msg(ev_codec_encode_media(codec, &m, &direct, &direct_len, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_uint_eq(direct_len, generic_len);
    ck_assert_msg(memcmp(direct, want, generic_len) == 0, "%zu bytes: frames differ", bytes);
    free(want);
    free(packet);
}

START_TEST(media_direct_equals_generic)
{
    media_both_ways(0, 0, "");
    media_both_ways(1, 1, "s-1");
    media_both_ways(423000, 1, "a-session"); /* a 720p packet: past the first 64 KiB buffer */
    media_both_ways(17, 0, "");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, roundtrip_every_record);
    tcase_add_test(tc, earlier_version_reads_as_current);
    tcase_add_test(tc, earlier_version_with_nan_reads);
    tcase_add_test(tc, short_frames);
    tcase_add_test(tc, bad_magic);
    tcase_add_test(tc, unknown_schema_id);
    tcase_add_test(tc, truncated_at_every_length);
    tcase_add_test(tc, trailing_bytes);
    tcase_add_test(tc, nul_inside_a_string_is_refused);
    tcase_add_test(tc, corrupt_bytes_never_crash);
    tcase_add_test(tc, large_record_grows_buffer);
    tcase_add_test(tc, value_of_other_schema_refused);
    tcase_add_test(tc, samples_direct_equals_generic);
    tcase_add_test(tc, samples_direct_refuses_empty);
    tcase_add_test(tc, media_direct_equals_generic);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
