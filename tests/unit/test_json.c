/* JSON <-> Avro: defaults from the .avsc, errors that name the field path
 * and what was expected, both union forms, bytes 0-255. */
#include "testutil.h"

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

static json_t *roundtrip(const char *type, const char *text)
{
    json_t *out;
    char err[256];
    ck_assert_int_eq(ev_value_to_json(tu_value(codec, type, text), &out, err, sizeof(err)), 0);
    return out;
}

static int from_json_error(const char *type, const char *text, char *err, size_t n)
{
    avro_value_t *v;
    json_t *j = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(ev_codec_value(codec, ev_schema_by_name(type), &v), 0);
    int rc = ev_value_from_json(v, j, err, n);
    json_decref(j);
    return rc;
}

START_TEST(defaults_from_schema)
{
    json_t *j = roundtrip("NodePlanned", "{\"node_id\": \"n1\"}");
    ck_assert_str_eq(json_string_value(json_object_get(j, "role")), "recorder");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "ttl_ms")), 10000);
    ck_assert_int_eq(json_array_size(json_object_get(j, "services")), 0);
    json_decref(j);
    /* Nested record defaults and a nullable union's null default. */
    j = roundtrip("DeviceRegistered", "{\"device_id\": \"d\", \"node_id\": \"n\", \"streams\": "
                                      "[{\"stream_id\": \"s\", \"type\": \"gsr\"}]}");
    json_t *st = json_array_get(json_object_get(j, "streams"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(st, "channels")), 1);
    ck_assert(json_is_null(json_object_get(j, "battery")));
    json_decref(j);
}
END_TEST

START_TEST(missing_required_field)
{
    char err[256];
    ck_assert_int_eq(
        from_json_error("ClockOffsetMeasured", "{\"device_id\": \"d\"}", err, sizeof(err)),
        EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "offset_ns: missing") != NULL, "%s", err);
}
END_TEST

START_TEST(errors_name_path_and_expectation)
{
    char err[256];
    ck_assert_int_eq(from_json_error("DeviceRegistered",
                                     "{\"device_id\": \"d\", \"node_id\": \"n\", \"streams\": "
                                     "[{\"stream_id\": \"a\", \"type\": \"gsr\"}, {\"stream_id\": "
                                     "\"b\", \"type\": \"imu\", \"rate_hz\": \"fast\"}]}",
                                     err, sizeof(err)),
                     EV_ERR_INVALID);
    ck_assert_str_eq(err, "streams[1].rate_hz: expected a number, got string");
    ck_assert_int_eq(
        from_json_error("NodeRegistered", "{\"node_id\": \"n\", \"nodeid\": 1}", err, sizeof(err)),
        EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "nodeid: no such field") != NULL, "%s", err);
    ck_assert_int_eq(from_json_error("NodeRegistered", "[1]", err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_str_eq(err, "(record): expected an object, got array");
    ck_assert_int_eq(from_json_error("NodeRegistered",
                                     "{\"node_id\": \"n\", \"max_devices\": 9999999999}", err,
                                     sizeof(err)),
                     EV_ERR_INVALID);
    ck_assert_str_eq(err, "max_devices: expected a 32-bit integer, got integer");
}
END_TEST

START_TEST(union_forms)
{
    json_t *j = roundtrip(
        "DeviceStatus",
        "{\"device_id\": \"d\", \"battery\": {\"float\": 0.5}, \"storage_free_bytes\": 7}");
    ck_assert(json_real_value(json_object_get(j, "battery")) == 0.5);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "storage_free_bytes")), 7);
    ck_assert(json_is_null(json_object_get(j, "temperature_c")));
    json_decref(j);
    char err[256];
    ck_assert_int_eq(from_json_error("DeviceStatus",
                                     "{\"device_id\": \"d\", \"battery\": \"full\"}", err,
                                     sizeof(err)),
                     EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "battery: expected a value of one of the union's types") != NULL,
                  "%s", err);
}
END_TEST

START_TEST(bytes_all_values)
{
    /* Every byte value survives JSON -> Avro -> JSON. */
    json_t *str;
    char buf[256];
    for (int i = 0; i < 256; i++)
        buf[i] = (char)i;
    avro_value_t *v = tu_value(codec, "MediaPacket",
                               "{\"device_id\": \"c\", \"stream_id\": \"s\", \"codec\": \"h264\", "
                               "\"pts\": 1, \"data\": \"\"}");
    avro_value_t data;
    avro_value_get_by_name(v, "data", &data, NULL);
    avro_value_set_bytes(&data, buf, sizeof(buf));
    char err[256];
    json_t *j;
    ck_assert_int_eq(ev_value_to_json(v, &j, err, sizeof(err)), 0);
    str = json_object_get(j, "data");
    ck_assert(json_is_string(str));
    avro_value_t *v2;
    ck_assert_int_eq(ev_codec_value(codec, ev_schema_by_name("MediaPacket"), &v2), 0);
    ck_assert_int_eq(ev_value_from_json(v2, j, err, sizeof(err)), 0);
    const void *b;
    size_t blen;
    avro_value_get_by_name(v2, "data", &data, NULL);
    avro_value_get_bytes(&data, &b, &blen);
    ck_assert_uint_eq(blen, 256);
    ck_assert(memcmp(b, buf, 256) == 0);
    json_decref(j);
    /* A code point above U+00FF is not a byte. */
    ck_assert_int_eq(from_json_error("MediaPacket",
                                     "{\"device_id\": \"c\", \"stream_id\": \"s\", \"codec\": "
                                     "\"h264\", \"pts\": 1, \"data\": \"\\u0100\"}",
                                     err, sizeof(err)),
                     EV_ERR_INVALID);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults_from_schema);
    tcase_add_test(tc, missing_required_field);
    tcase_add_test(tc, errors_name_path_and_expectation);
    tcase_add_test(tc, union_forms);
    tcase_add_test(tc, bytes_all_values);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
