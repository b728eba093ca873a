/* The reducers: lifecycle of nodes, devices and sessions; idempotent by
 * event id; node expiry takes its devices out of the pool. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ev_codec *codec;
static ev_state *state;
static void setup(void)
{
    codec = ev_codec_new();
    state = ev_state_new();
}
static void teardown(void)
{
    ev_state_destroy(state);
    ev_codec_destroy(codec);
}

static int apply(const char *id, int64_t t, const char *type, const char *json)
{
    return tu_apply(state, codec, id, t, type, json);
}

static json_t *get(const char *path1, const char *path2)
{
    json_t *j = ev_state_to_json(state);
    json_t *r = json_object_get(json_object_get(j, path1), path2);
    json_incref(r);
    json_decref(j);
    return r;
}

START_TEST(node_lifecycle)
{
    ck_assert_int_eq(
        apply("e1", 10, "NodeRegistered", "{\"node_id\": \"n1\", \"hostname\": \"pc\"}"), 0);
    json_t *n = get("nodes", "n1");
    ck_assert_str_eq(json_string_value(json_object_get(n, "state")), "registered");
    json_decref(n);
    ck_assert_int_eq(apply("e2", 20, "NodePlanned", "{\"node_id\": \"n1\"}"), 0);
    ck_assert_int_eq(apply("e3", 30, "NodeHeartbeat", "{\"node_id\": \"n1\", \"device_count\": 2}"),
                     0);
    n = get("nodes", "n1");
    ck_assert_str_eq(json_string_value(json_object_get(n, "state")), "up");
    ck_assert_str_eq(json_string_value(json_object_get(n, "role")), "recorder");
    ck_assert_int_eq(json_integer_value(json_object_get(n, "last_seen_ns")), 30);
    ck_assert_str_eq(json_string_value(json_object_get(n, "hostname")), "pc");
    json_decref(n);
}
END_TEST

/* The plan's capture service follows the node's last registration. */
START_TEST(node_capabilities)
{
    ck_assert_int_eq(apply("c1", 10, "NodeRegistered",
                           "{\"node_id\": \"n1\", \"capabilities\": [\"devices\", \"camera\"]}"),
                     0);
    ck_assert_int_eq(ev_state_node_capability(state, "n1", "camera"), 1);
    ck_assert_int_eq(ev_state_node_capability(state, "n1", "gpu"), 0);
    ck_assert_int_eq(ev_state_node_capability(state, "n2", "camera"), 0);
    ck_assert_int_eq(ev_state_node_capability(state, NULL, "camera"), 0);
    /* registered again without cameras: no longer */
    ck_assert_int_eq(
        apply("c2", 20, "NodeRegistered", "{\"node_id\": \"n1\", \"capabilities\": [\"devices\"]}"),
        0);
    ck_assert_int_eq(ev_state_node_capability(state, "n1", "camera"), 0);
}
END_TEST

/* A session's state does not depend on the order its two topics are read:
 * a StopRecording (commands) folded before its CollectionStarted
 * (sessions) still gives "stopping". */
/* A second CollectionRequested for a session (two operators or two
 * gateways at once) neither resets its state nor replaces its request. */
START_TEST(second_request_changes_nothing)
{
    apply("r1", 1, "CollectionRequested",
          "{\"session_id\": \"s1\", \"requested_by\": \"olga\", \"duration_ms\": 7}");
    apply("r2", 2, "SynchronizationCompleted", "{\"session_id\": \"s1\"}");
    apply("r3", 3, "CollectionStarted", "{\"session_id\": \"s1\", \"start_at_ns\": 100}");
    apply("r4", 4, "CollectionRequested",
          "{\"session_id\": \"s1\", \"requested_by\": \"adam\", \"duration_ms\": 9}");
    ev_session x;
    ck_assert_int_eq(ev_state_session(state, "s1", &x), 1);
    ck_assert_int_eq(x.state, EV_SESSION_RECORDING);
    ck_assert_int_eq(x.requested_at_ns, 1);
    ck_assert_int_eq(x.duration_ms, 7);
    json_t *j = ev_state_session_to_json(state, "s1");
    ck_assert_str_eq(json_string_value(json_object_get(j, "requested_by")), "olga");
    json_decref(j);
}
END_TEST

START_TEST(stop_command_before_start_across_topics)
{
    ck_assert_int_eq(apply("r1", 10, "CollectionRequested", "{\"session_id\": \"s1\"}"), 0);
    ck_assert_int_eq(apply("r2", 20, "StopRecording",
                           "{\"node_id\": \"n1\", \"session_id\": \"s1\", \"stop_at_ns\": 90}"),
                     0);
    ck_assert_int_eq(apply("r3", 15, "CollectionStarted",
                           "{\"session_id\": \"s1\", \"start_at_ns\": 40, \"device_ids\": []}"),
                     0);
    json_t *x = get("sessions", "s1");
    ck_assert_str_eq(json_string_value(json_object_get(x, "state")), "stopping");
    json_decref(x);
}
END_TEST

START_TEST(duplicate_event_ids_change_nothing)
{
    ck_assert_int_eq(
        apply("e1", 10, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}"), 0);
    ck_assert_int_eq(apply("e2", 20, "ClockOffsetMeasured",
                           "{\"device_id\": \"d1\", \"offset_ns\": 5, \"rtt_ns\": 100}"),
                     0);
    json_t *before = ev_state_to_json(state);
    char *a = json_dumps(before, JSON_SORT_KEYS);
    json_decref(before);
    /* Redelivery of both: nothing moves but the duplicate counter. */
    ck_assert_int_eq(
        apply("e1", 10, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}"), 1);
    ck_assert_int_eq(apply("e2", 20, "ClockOffsetMeasured",
                           "{\"device_id\": \"d1\", \"offset_ns\": 5, \"rtt_ns\": 100}"),
                     1);
    json_t *d = get("devices", "d1");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(d, "clock"), "rounds")), 1);
    json_decref(d);
    json_t *after = ev_state_to_json(state);
    json_object_del(after, "events");
    json_t *b0 = json_loads(a, 0, NULL);
    json_object_del(b0, "events");
    ck_assert(json_equal(after, b0));
    json_decref(b0);
    json_decref(after);
    free(a);
    json_t *all = ev_state_to_json(state);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(all, "events"), "duplicates")), 2);
    json_decref(all);
}
END_TEST

START_TEST(many_ids_stay_distinct)
{
    /* The id set grows past its first size without losing or confusing ids. */
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        ck_assert_int_eq(apply(id, i, "DeviceStatus", "{\"device_id\": \"d\"}"), 0);
    }
    for (int i = 0; i < 5000; i += 7) {
        snprintf(id, sizeof(id), "id-%d", i);
        ck_assert_int_eq(apply(id, i, "DeviceStatus", "{\"device_id\": \"d\"}"), 1);
    }
}
END_TEST

START_TEST(node_expiry_removes_its_devices)
{
    apply("e1", 1, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}");
    apply("e2", 2, "DeviceRegistered", "{\"device_id\": \"d2\", \"node_id\": \"n2\"}");
    apply("e3", 3, "NodeExpired", "{\"node_id\": \"n1\"}");
    json_t *d1 = get("devices", "d1"), *d2 = get("devices", "d2");
    ck_assert(json_is_false(json_object_get(d1, "connected")));
    ck_assert_str_eq(json_string_value(json_object_get(d1, "disconnect_reason")), "node_expired");
    ck_assert(json_is_true(json_object_get(d2, "connected")));
    json_decref(d1);
    json_decref(d2);
}
END_TEST

START_TEST(session_lifecycle)
{
    apply("e1", 1, "CollectionRequested", "{\"session_id\": \"s1\", \"min_group\": 2}");
    apply("e2", 2, "SynchronizationCompleted",
          "{\"session_id\": \"s1\", \"max_uncertainty_ns\": 300}");
    json_t *s = get("sessions", "s1");
    ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "synchronized");
    json_decref(s);
    apply("e3", 3, "CollectionStarted",
          "{\"session_id\": \"s1\", \"start_at_ns\": 100, \"device_ids\": [\"d1\"]}");
    apply("e4", 4, "SyncMark", "{\"session_id\": \"s1\", \"mark_id\": \"m\", \"label\": \"go\"}");
    apply("e5", 5, "CollectionStopped",
          "{\"session_id\": \"s1\", \"stop_at_ns\": 200, \"streams\": [{\"device_id\": \"d1\", "
          "\"stream_id\": \"gsr\", \"samples\": 9}]}");
    s = get("sessions", "s1");
    ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "stopped");
    ck_assert_int_eq(json_integer_value(json_object_get(s, "start_at_ns")), 100);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "marks")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(s, "streams")), 1);
    json_decref(s);
}
END_TEST

/* The typed reads (ev_state_session, ev_state_device, ev_session_*) show
 * what the JSON shows, without its field names. */
START_TEST(typed_session_and_device_reads)
{
    apply("e1", 1, "CollectionRequested",
          "{\"session_id\": \"s1\", \"min_group\": 2, \"duration_ms\": 7, \"device_ids\": [\"d1\", "
          "\"d2\"]}");
    apply("e2", 2, "SynchronizationCompleted",
          "{\"session_id\": \"s1\", \"max_uncertainty_ns\": 300, \"devices\": [{\"device_id\": "
          "\"d1\", \"node_id\": \"n1\", \"offset_ns\": 3}]}");
    apply("e3", 3, "CollectionStarted",
          "{\"session_id\": \"s1\", \"start_at_ns\": 100, \"device_ids\": [\"d1\"]}");
    apply("e4", 4, "StartRecording",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"start_at_ns\": 100}");
    apply("e5", 5, "CollectionStopRequested", "{\"session_id\": \"s1\", \"reason\": \"enough\"}");
    apply("e6", 6, "StopRecording",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"stop_at_ns\": 150}");
    apply("e7", 7, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"streams\": [{\"device_id\": \"d1\", "
          "\"stream_id\": \"gsr\", \"samples\": 9}]}");
    ev_session x;
    ck_assert_int_eq(ev_state_session(state, "s1", &x), 1);
    ck_assert_int_eq(x.state, EV_SESSION_STOPPING);
    ck_assert_str_eq(ev_session_state_name(x.state), "stopping");
    ck_assert_int_eq(x.min_group, 2);
    ck_assert_int_eq(x.duration_ms, 7);
    ck_assert_int_eq(x.requested_at_ns, 1);
    ck_assert_uint_eq(x.device_id_count, 1); /* CollectionStarted's group replaces the request's */
    ck_assert_str_eq(ev_session_device_id(&x, 0), "d1");
    ck_assert_ptr_null(ev_session_device_id(&x, 1));
    ck_assert(x.synchronized);
    ck_assert_uint_eq(x.sync_device_count, 1);
    ck_assert_int_eq(x.sync_max_uncertainty_ns, 300);
    const char *dev, *node;
    ck_assert_int_eq(ev_session_sync_device(&x, 0, &dev, &node), 1);
    ck_assert_str_eq(dev, "d1");
    ck_assert_str_eq(node, "n1");
    ck_assert_int_eq(ev_session_sync_device(&x, 1, &dev, &node), 0);
    ck_assert_int_eq(x.start_at_ns, 100);
    int64_t at = 0;
    ck_assert_int_eq(ev_session_command(&x, "n1", 0, &at), 1);
    ck_assert_int_eq(at, 100);
    ck_assert_int_eq(ev_session_command(&x, "n1", 1, &at), 1);
    ck_assert_int_eq(at, 150);
    ck_assert_int_eq(ev_session_command(&x, "n2", 0, NULL), 0);
    ck_assert(x.has_stop_at);
    ck_assert_int_eq(x.stop_at_ns, 150);
    ck_assert(x.stop_requested);
    ck_assert_int_eq(x.stop_requested_at_ns, 5);
    ck_assert_str_eq(x.stop_request_reason, "enough");
    json_t *streams;
    const char *r = ev_session_report_next(&x, NULL, &streams);
    ck_assert_str_eq(r, "n1");
    ck_assert_uint_eq(json_array_size(streams), 1);
    ck_assert_ptr_null(ev_session_report_next(&x, r, NULL));
    apply("e8", 8, "CollectionStopped",
          "{\"session_id\": \"s1\", \"stop_at_ns\": 150, \"duration_ns\": 50, \"reason\": "
          "\"enough\", \"streams\": [{\"device_id\": \"d1\", \"stream_id\": \"gsr\", \"samples\": "
          "9, \"bytes\": 90}]}");
    ck_assert_int_eq(ev_state_session(state, "s1", &x), 1);
    ck_assert_int_eq(x.state, EV_SESSION_STOPPED);
    ck_assert_int_eq(x.duration_ns, 50);
    ck_assert_str_eq(x.reason, "enough");
    ev_stream st;
    ck_assert_uint_eq(x.stream_count, 1);
    ck_assert_int_eq(ev_session_stream(&x, 0, &st), 1);
    ck_assert_str_eq(st.stream_id, "gsr");
    ck_assert_int_eq(st.samples, 9);
    ck_assert_int_eq(st.bytes, 90);
    ck_assert_int_eq(ev_session_stream(&x, 1, &st), 0);
    ck_assert_int_eq(ev_state_session(state, "none", &x), 0);

    apply("d1", 10, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}");
    apply("d2", 11, "ClockOffsetMeasured",
          "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"offset_ns\": -5, \"drift_ppm\": 1.5, "
          "\"uncertainty_ns\": 40, \"rtt_ns\": 80}");
    apply("d3", 12, "DeviceRegistered", "{\"device_id\": \"d0\", \"node_id\": \"n2\"}");
    apply("d4", 13, "DeviceDisconnected", "{\"device_id\": \"d0\", \"reason\": \"unplugged\"}");
    ev_device d;
    ck_assert_str_eq(ev_state_device_next(state, NULL, &d), "d1");
    ck_assert(d.connected);
    ck_assert_str_eq(d.node_id, "n1");
    ck_assert(d.has_clock);
    ck_assert_int_eq(d.clock_offset_ns, -5);
    ck_assert_double_eq_tol(d.clock_drift_ppm, 1.5, 1e-9);
    ck_assert_int_eq(d.clock_uncertainty_ns, 40);
    ck_assert_int_eq(d.clock_measured_at_ns, 11);
    ck_assert_int_eq(d.clock_rounds, 1);
    ck_assert_str_eq(ev_state_device_next(state, "d1", &d), "d0");
    ck_assert(!d.connected && !d.has_clock);
    ck_assert_str_eq(d.disconnect_reason, "unplugged");
    ck_assert_ptr_null(ev_state_device_next(state, "d0", &d));
}
END_TEST

/* The same clock and status events folded as a service folds them from the
 * log (peeked frames, read lazily) and from memory give one state; the last
 * of each kind wins, rounds count them, and reading the state in between
 * changes nothing. */
static void apply_framed(ev_state *st, const char *id, int64_t t, const char *type,
                         const char *json)
{
    char err[256];
    const void *frame;
    size_t len;
    ev_codec *c = ev_codec_new();
    const ev_schema *s = ev_schema_by_name(type);
    ck_assert_int_eq(ev_codec_encode(c, s, tu_value(c, type, json), &frame, &len, err, sizeof(err)),
                     0);
    ev_header h[2] = {{"ce_id", id, strlen(id)},
                      {"ce_type", ev_schema_name(s), strlen(ev_schema_name(s))}};
    ev_msg m = {.topic = "devices",
                .value = frame,
                .value_len = len,
                .headers = h,
                .header_count = 2,
                .timestamp_ms = t / 1000000};
    ev_event ev;
    ck_assert_msg(ev_event_peek(&m, &ev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_ptr_null(ev.value);
    ck_assert_msg(ev_state_apply(st, &ev, err, sizeof(err)) == 0, "%s", err);
    ev_codec_destroy(c);
}

START_TEST(latest_clock_and_status_from_frames_equal_from_memory)
{
    ev_state *framed = ev_state_new();
    static const char *const ev[][3] = {
        {"r1", "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}"},
        {"c1", "ClockOffsetMeasured",
         "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"offset_ns\": 5, \"rtt_ns\": 100}"},
        {"s1", "DeviceStatus", "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"battery\": 0.5}"},
        {"c2", "ClockOffsetMeasured",
         "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"offset_ns\": 7, \"rtt_ns\": 90}"},
        {"c3", "ClockOffsetMeasured",
         "{\"device_id\": \"d2\", \"node_id\": \"n1\", \"offset_ns\": -3, \"rtt_ns\": 80}"},
        {"s2", "DeviceStatus", "{\"device_id\": \"d1\", \"node_id\": \"n1\", \"battery\": 0.25}"},
    };
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(apply(ev[i][0], 1000000 * (i + 1), ev[i][1], ev[i][2]), 0);
        apply_framed(framed, ev[i][0], 1000000 * (i + 1), ev[i][1], ev[i][2]);
        if (i == 2) { /* read in between: materialises, then more events come */
            json_t *mid = ev_state_to_json(framed);
            json_decref(mid);
        }
    }
    json_t *a = ev_state_to_json(state), *b = ev_state_to_json(framed);
    char *ta = json_dumps(a, JSON_SORT_KEYS), *tb = json_dumps(b, JSON_SORT_KEYS);
    ck_assert_str_eq(ta, tb);
    json_t *d1 = json_object_get(json_object_get(b, "devices"), "d1");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(d1, "clock"), "offset_ns")),
                     7);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(d1, "clock"), "rounds")),
                     2);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(d1, "clock"), "measured_at_ns")),
        4000000);
    ck_assert(json_real_value(json_object_get(json_object_get(d1, "status"), "battery")) == 0.25);
    ck_assert_ptr_null(json_object_get(json_object_get(d1, "clock"), "device_id"));
    ck_assert_int_eq(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(json_object_get(b, "devices"), "d2"), "clock"),
            "rounds")),
        1);
    free(ta);
    free(tb);
    json_decref(a);
    json_decref(b);
    ev_state_destroy(framed);
}
END_TEST

START_TEST(data_topics_are_ignored)
{
    ck_assert_int_eq(apply("e1", 1, "SyncNow", "{\"node_id\": \"n\"}"), 1);
    json_t *all = ev_state_to_json(state);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(all, "events"), "ignored")),
                     1);
    ck_assert_int_eq(json_object_size(json_object_get(all, "nodes")), 0);
    json_decref(all);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reduce");
    TCase *tc = tcase_create("reduce");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, node_lifecycle);
    tcase_add_test(tc, node_capabilities);
    tcase_add_test(tc, stop_command_before_start_across_topics);
    tcase_add_test(tc, second_request_changes_nothing);
    tcase_add_test(tc, duplicate_event_ids_change_nothing);
    tcase_add_test(tc, many_ids_stay_distinct);
    tcase_add_test(tc, node_expiry_removes_its_devices);
    tcase_add_test(tc, session_lifecycle);
    tcase_add_test(tc, typed_session_and_device_reads);
    tcase_add_test(tc, data_topics_are_ignored);
    tcase_add_test(tc, latest_clock_and_status_from_frames_equal_from_memory);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
