/* CloudEvents attributes: ids, RFC 3339 time, header check on decode. */
#include "testutil.h"

#include <stdint.h>

#include <string.h>

START_TEST(ids_are_uuid_v4_and_unique)
{
    char a[EV_ID_MAX], b[EV_ID_MAX];
    ev_new_id(a);
    ev_new_id(b);
    ck_assert_uint_eq(strlen(a), 36);
    ck_assert_int_eq(a[14], '4');
    ck_assert(strchr("89ab", a[19]) != NULL);
    ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(time_roundtrip)
{
    char buf[48];
    int64_t ns = 1795347009281694617LL, back;
    ck_assert_str_eq(ev_format_time(ns, buf, sizeof(buf)), "2026-11-22T11:30:09.281694617Z");
    ck_assert_int_eq(ev_parse_time(buf, strlen(buf), &back), 0);
    ck_assert_int_eq(back, ns);
    ck_assert_int_eq(ev_parse_time("2026-11-22T12:30:09.5+01:00", 27, &back), 0);
    ck_assert_int_eq(back, 1795347009500000000LL);
    ck_assert_int_eq(ev_parse_time("2026-11-22", 10, &back), EV_ERR_INVALID);
    ck_assert_int_eq(ev_parse_time("2026-11-22T11:30:09.Z", 21, &back), EV_ERR_INVALID);
    ck_assert_int_eq(ev_parse_time("2026-11-22T11:30:09Zjunk", 24, &back), EV_ERR_INVALID);
}
END_TEST

/* A message as a backend would return it, built by hand. */
static void make_msg(ev_msg *m, ev_header *h, const void *value, size_t len, const char *type)
{
    memset(m, 0, sizeof(*m));
    m->topic = "msrs.commands";
    m->offset = 3;
    m->timestamp_ms = 1000;
    m->value = value;
    m->value_len = len;
    h[0] = (ev_header){"ce_id", "abc", 3};
    h[1] = (ev_header){"ce_type", type, strlen(type)};
    h[2] = (ev_header){"ce_time", "2026-11-22T11:30:09Z", 20};
    m->headers = h;
    m->header_count = 3;
}

/* Times outside int64 nanoseconds (1677..2262) are refused, not wrapped
 * (UBSan: signed overflow for "2263-..."). */
START_TEST(time_outside_int64_ns_is_refused)
{
    int64_t t;
    ck_assert_int_eq(ev_parse_time("2262-04-11T23:47:16.854775807Z", 30, &t), 0);
    ck_assert_int_eq(t, INT64_MAX);
    ck_assert_int_eq(ev_parse_time("2262-04-11T23:47:16.854775808Z", 30, &t), EV_ERR_INVALID);
    ck_assert_int_eq(ev_parse_time("2263-01-01T00:00:00Z", 20, &t), EV_ERR_INVALID);
    ck_assert_int_eq(ev_parse_time("9999-12-31T23:59:59Z", 20, &t), EV_ERR_INVALID);
    ck_assert_int_eq(ev_parse_time("1600-01-01T00:00:00Z", 20, &t), EV_ERR_INVALID);
    ck_assert_int_eq(ev_parse_time("1970-01-01T00:00:00Z", 20, &t), 0);
    ck_assert_int_eq(t, 0);
}
END_TEST

/* Composed event ids: exact when they fit, else a prefix and a hash of the
 * whole, so two long ids that differ anywhere differ. */
START_TEST(event_ids_from_long_parts_stay_distinct)
{
    char a[EV_ID_MAX], b[EV_ID_MAX], c[EV_ID_MAX];
    ev_event_id(a, "sync/%s", "s1");
    ck_assert_str_eq(a, "sync/s1");
    ev_event_id(a, "startcmd/%s/%s", "session-with-a-rather-long-name-0000000000001", "node-1");
    ev_event_id(b, "startcmd/%s/%s", "session-with-a-rather-long-name-0000000000001", "node-2");
    ev_event_id(c, "startcmd/%s/%s", "session-with-a-rather-long-name-0000000000001", "node-1");
    ck_assert_int_lt(strlen(a), EV_ID_MAX);
    ck_assert_str_ne(a, b);
    ck_assert_str_eq(a, c);
    ck_assert(strncmp(a, "startcmd/session-with", 21) == 0);
}
END_TEST

START_TEST(event_decode_checks_type)
{
    ev_codec *c = ev_codec_new();
    char err[256];
    const void *out;
    size_t len;
    ev_event ev;
    ev_msg m;
    ev_header h[3];
    avro_value_t *v = tu_value(c, "SyncNow", "{\"node_id\": \"n\"}");
    ck_assert_int_eq(
        ev_codec_encode(c, ev_schema_by_name("SyncNow"), v, &out, &len, err, sizeof(err)), 0);
    make_msg(&m, h, out, len, "msrs.events.SyncNow");
    ck_assert_int_eq(ev_event_decode(c, &m, &ev, err, sizeof(err)), 0);
    ck_assert_str_eq(ev.id, "abc");
    ck_assert_int_eq(ev.time_ns, 1795347009000000000LL);
    make_msg(&m, h, out, len, "msrs.events.NodeExpired");
    ck_assert_int_eq(ev_event_decode(c, &m, &ev, err, sizeof(err)), EV_ERR_CORRUPT);
    ck_assert_msg(strstr(err, "msrs.commands[0]@3") && strstr(err, "ce_type"), "%s", err);
    ev_codec_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cloudevents");
    TCase *tc = tcase_create("cloudevents");
    tcase_add_test(tc, ids_are_uuid_v4_and_unique);
    tcase_add_test(tc, time_roundtrip);
    tcase_add_test(tc, time_outside_int64_ns_is_refused);
    tcase_add_test(tc, event_ids_from_long_parts_stay_distinct);
    tcase_add_test(tc, event_decode_checks_type);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
