/* collectord's rule (ev_collect_decide) over reducer state: start at one
 * instant after synchronisation, a command per node, stop on request or
 * duration, CollectionStopped from every node's report or after the report
 * timeout, cancellation before the start, and resending what a crash lost. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define S 1000000000LL

static ev_codec *codec;
static ev_state *state;
static int seq;
static const ev_collect_params params = {.lead_ns = 1 * S, .report_timeout_ns = 10 * S};

static void setup(void)
{
    codec = ev_codec_new();
    state = ev_state_new();
    seq = 0;
}
static void teardown(void)
{
    ev_state_destroy(state);
    ev_codec_destroy(codec);
}

static void apply(int64_t t, const char *type, const char *json)
{
    char id[16];
    snprintf(id, sizeof(id), "e%d", ++seq);
    ck_assert_int_eq(tu_apply(state, codec, id, t, type, json), 0);
}

/* Applies every decided event as if collectord emitted it at time t. */
static json_t *decide_apply(int64_t now)
{
    json_t *out = ev_collect_decide(state, "s1", &params, now, NULL, 0);
    size_t i;
    json_t *e;
    json_array_foreach(out, i, e)
    {
        char *text = json_dumps(json_object_get(e, "value"), JSON_COMPACT);
        ck_assert_int_eq(tu_apply(state, codec, json_string_value(json_object_get(e, "id")), now,
                                  json_string_value(json_object_get(e, "type")), text),
                         0);
        free(text);
    }
    return out;
}

static const char *type_of(json_t *out, size_t i)
{
    return json_string_value(json_object_get(json_array_get(out, i), "type"));
}

/* A session synchronised at t=10 s: a1, a2 on node n1; b1 on node n2. */
static void synced(const char *request)
{
    apply(1 * S, "CollectionRequested", request);
    apply(10 * S, "SynchronizationCompleted",
          "{\"session_id\": \"s1\", \"devices\": ["
          "{\"device_id\": \"a1\", \"node_id\": \"n1\", \"offset_ns\": 5},"
          "{\"device_id\": \"a2\", \"node_id\": \"n1\", \"offset_ns\": 6},"
          "{\"device_id\": \"b1\", \"node_id\": \"n2\", \"offset_ns\": 7}]}");
}

START_TEST(waits_for_sync)
{
    apply(1 * S, "CollectionRequested", "{\"session_id\": \"s1\"}");
    char why[128];
    json_t *out = ev_collect_decide(state, "s1", &params, 2 * S, why, sizeof(why));
    ck_assert_int_eq(json_array_size(out), 0);
    ck_assert_ptr_nonnull(strstr(why, "SynchronizationCompleted"));
    json_decref(out);
    out = ev_collect_decide(state, "nope", &params, 2 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 0);
    json_decref(out);
}
END_TEST

START_TEST(starts_at_one_instant_with_a_command_per_node)
{
    synced("{\"session_id\": \"s1\"}");
    json_t *out = decide_apply(11 * S);
    ck_assert_int_eq(json_array_size(out), 3);
    ck_assert_str_eq(type_of(out, 0), "CollectionStarted");
    json_t *started = json_object_get(json_array_get(out, 0), "value");
    ck_assert_int_eq(json_integer_value(json_object_get(started, "start_at_ns")), 12 * S);
    ck_assert_int_eq(json_array_size(json_object_get(started, "device_ids")), 3);
    for (size_t i = 1; i < 3; i++) {
        json_t *cmd = json_array_get(out, i);
        ck_assert_str_eq(type_of(out, i), "StartRecording");
        json_t *v = json_object_get(cmd, "value");
        ck_assert_int_eq(json_integer_value(json_object_get(v, "start_at_ns")), 12 * S);
        const char *node = json_string_value(json_object_get(v, "node_id"));
        ck_assert_str_eq(json_string_value(json_object_get(cmd, "key")), node);
        ck_assert_int_eq(json_array_size(json_object_get(v, "device_ids")),
                         strcmp(node, "n1") == 0 ? 2 : 1);
    }
    json_decref(out);
    /* Recording, no stop asked, no duration: nothing to do. */
    out = ev_collect_decide(state, "s1", &params, 100 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 0);
    json_decref(out);
}
END_TEST

START_TEST(stop_request_then_reports_then_stopped)
{
    synced("{\"session_id\": \"s1\"}");
    json_decref(decide_apply(11 * S));
    apply(20 * S, "CollectionStopRequested", "{\"session_id\": \"s1\", \"reason\": \"done\"}");
    json_t *out = decide_apply(20 * S + 5);
    ck_assert_int_eq(json_array_size(out), 2);
    ck_assert_str_eq(type_of(out, 0), "StopRecording");
    /* The stop instant comes from the request's time, so a restart decides the same. */
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_array_get(out, 0), "value"), "stop_at_ns")),
                     21 * S);
    json_decref(out);
    apply(22 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"streams\": [{\"device_id\": \"a1\", "
          "\"stream_id\": \"gsr\", \"samples\": 100}]}");
    char why[128];
    out = ev_collect_decide(state, "s1", &params, 23 * S, why, sizeof(why));
    ck_assert_int_eq(json_array_size(out), 0);
    ck_assert_ptr_nonnull(strstr(why, "n2"));
    json_decref(out);
    apply(23 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n2\", \"streams\": [{\"device_id\": \"b1\", "
          "\"stream_id\": \"gsr\", \"samples\": 90}]}");
    out = decide_apply(23 * S + 1);
    ck_assert_int_eq(json_array_size(out), 1);
    ck_assert_str_eq(type_of(out, 0), "CollectionStopped");
    json_t *v = json_object_get(json_array_get(out, 0), "value");
    ck_assert_int_eq(json_integer_value(json_object_get(v, "duration_ns")), 9 * S);
    ck_assert_int_eq(json_array_size(json_object_get(v, "streams")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(v, "reason")), "done");
    /* a2 of the group reported nothing: not complete, and said */
    ck_assert(json_is_false(json_object_get(v, "complete")));
    json_t *reasons = json_object_get(v, "incomplete");
    ck_assert_int_eq(json_array_size(reasons), 1);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_array_get(reasons, 0)), "a2 (node n1)"));
    json_decref(out);
    out = ev_collect_decide(state, "s1", &params, 50 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 0); /* stopped: nothing more */
    json_decref(out);
}
END_TEST

START_TEST(duration_stops_lead_ahead_and_missing_report_times_out)
{
    synced("{\"session_id\": \"s1\", \"duration_ms\": 5000}");
    json_decref(decide_apply(11 * S)); /* start at 12 s, stop due at 17 s */
    json_t *out = ev_collect_decide(state, "s1", &params, 15 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 0);
    json_decref(out);
    out = decide_apply(16 * S);
    ck_assert_int_eq(json_array_size(out), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_array_get(out, 0), "value"), "stop_at_ns")),
                     17 * S);
    json_decref(out);
    apply(18 * S, "RecordingReport", "{\"session_id\": \"s1\", \"node_id\": \"n1\"}");
    out = ev_collect_decide(state, "s1", &params, 26 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 0); /* n2 has until 27 s */
    json_decref(out);
    out = decide_apply(27 * S);
    ck_assert_int_eq(json_array_size(out), 1);
    const char *reason = json_string_value(
        json_object_get(json_object_get(json_array_get(out, 0), "value"), "reason"));
    ck_assert_ptr_nonnull(strstr(reason, "duration"));
    ck_assert_ptr_nonnull(strstr(reason, "n2"));
    json_decref(out);
}
END_TEST

/* A duration's stop goes collect.stop_notice_ms before its instant, so that
 * a loaded agent has it before devices make data past it. */
START_TEST(duration_stop_with_notice)
{
    const ev_collect_params notice = {
        .lead_ns = 1 * S, .report_timeout_ns = 10 * S, .stop_notice_ns = 4 * S};
    synced("{\"session_id\": \"s1\", \"duration_ms\": 5000}");
    json_decref(decide_apply(11 * S)); /* start at 12 s, stop at 17 s: the stop goes at 13 s */
    json_t *out = ev_collect_decide(state, "s1", &notice, 13 * S - 1, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 0);
    json_decref(out);
    out = ev_collect_decide(state, "s1", &notice, 13 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 2);
    ck_assert_str_eq(type_of(out, 0), "StopRecording");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_array_get(out, 0), "value"), "stop_at_ns")),
                     17 * S);
    json_decref(out);
}
END_TEST

START_TEST(cancel_before_start)
{
    apply(1 * S, "CollectionRequested", "{\"session_id\": \"s1\"}");
    apply(2 * S, "CollectionStopRequested", "{\"session_id\": \"s1\"}");
    json_t *out = decide_apply(3 * S);
    ck_assert_int_eq(json_array_size(out), 1);
    ck_assert_str_eq(type_of(out, 0), "CollectionStopped");
    json_decref(out);
}
END_TEST

START_TEST(resends_only_what_a_crash_lost)
{
    synced("{\"session_id\": \"s1\"}");
    json_t *out = ev_collect_decide(state, "s1", &params, 11 * S, NULL, 0);
    /* The crash: CollectionStarted and n1's command reached the log, n2's did not. */
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(out, i);
        char *text = json_dumps(json_object_get(e, "value"), JSON_COMPACT);
        ck_assert_int_eq(tu_apply(state, codec, json_string_value(json_object_get(e, "id")), 11 * S,
                                  json_string_value(json_object_get(e, "type")), text),
                         0);
        free(text);
    }
    json_t *lost = json_deep_copy(json_array_get(out, 2));
    json_decref(out);
    out = ev_collect_decide(state, "s1", &params, 30 * S, NULL, 0);
    ck_assert_int_eq(json_array_size(out), 1);
    ck_assert(json_equal(json_array_get(out, 0), lost)); /* same id, same instant */
    json_decref(out);
    json_decref(lost);
}
END_TEST

/* collect.auto_start (ev_collect_auto_start): a session when min_group
 * devices are connected and none is live, named after the second, at most
 * one per second. */
static int64_t at(const char *rfc3339)
{
    int64_t ns;
    ck_assert_int_eq(ev_parse_time(rfc3339, strlen(rfc3339), &ns), 0);
    return ns;
}

static int auto_start(int64_t now, char *sid, json_t **req)
{
    const ev_auto_start_params p = {.min_group = 2, .duration_ms = 5000};
    size_t connected = 99;
    int rc = ev_collect_auto_start(state, &p, now, sid, 64, req, &connected);
    if (rc)
        ck_assert_int_eq(connected, 2);
    else
        ck_assert_ptr_null(*req);
    return rc;
}

START_TEST(auto_start_needs_min_group_connected)
{
    char sid[64];
    json_t *req;
    int64_t now = at("2026-11-22T11:13:51.250Z");
    ck_assert_int_eq(auto_start(now, sid, &req), 0); /* no device */
    apply(1 * S, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}");
    ck_assert_int_eq(auto_start(now, sid, &req), 0); /* 1 of 2 */
    apply(2 * S, "DeviceRegistered", "{\"device_id\": \"d2\", \"node_id\": \"n1\"}");
    apply(3 * S, "DeviceRegistered", "{\"device_id\": \"d3\", \"node_id\": \"n2\"}");
    apply(4 * S, "DeviceDisconnected", "{\"device_id\": \"d3\", \"reason\": \"gone\"}");
    ck_assert_int_eq(auto_start(now, sid, &req), 1); /* d1, d2: d3 left */
    ck_assert_str_eq(sid, "auto-20261122T111351");
    ck_assert_str_eq(json_string_value(json_object_get(req, "session_id")), sid);
    ck_assert_str_eq(json_string_value(json_object_get(req, "requested_by")),
                     "collectord (auto start)");
    ck_assert_int_eq(json_integer_value(json_object_get(req, "min_group")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(req, "duration_ms")), 5000);
    ck_assert(json_is_true(json_object_get(req, "auto_start")));
    json_decref(req);
}
END_TEST

START_TEST(auto_start_waits_while_a_session_is_live_once_per_second)
{
    char sid[64];
    json_t *req;
    int64_t now = at("2026-11-22T11:13:51.250Z");
    apply(1 * S, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}");
    apply(2 * S, "DeviceRegistered", "{\"device_id\": \"d2\", \"node_id\": \"n1\"}");
    /* a session named only by a command has no state: not live */
    apply(3 * S, "StartRecording",
          "{\"node_id\": \"n1\", \"session_id\": \"ghost\", \"start_at_ns\": 1}");
    ck_assert_int_eq(auto_start(now, sid, &req), 1);
    json_decref(req);
    /* it is requested (live): no second one, whatever the state it reaches */
    apply(4 * S, "CollectionRequested", "{\"session_id\": \"auto-20261122T111351\"}");
    ck_assert_int_eq(auto_start(now, sid, &req), 0);
    ck_assert_int_eq(auto_start(now + 10 * S, sid, &req), 0);
    apply(5 * S, "CollectionStarted",
          "{\"session_id\": \"auto-20261122T111351\", \"start_at_ns\": 6}");
    ck_assert_int_eq(auto_start(now + 10 * S, sid, &req), 0);
    /* stopped: not live, but this second's id is taken */
    apply(6 * S, "CollectionStopped",
          "{\"session_id\": \"auto-20261122T111351\", \"stop_at_ns\": 7}");
    ck_assert_int_eq(auto_start(now, sid, &req), 0);
    ck_assert_int_eq(auto_start(now + 749 * 1000000LL, sid, &req), 0); /* :51.999 */
    ck_assert_int_eq(auto_start(now + 750 * 1000000LL, sid, &req), 1); /* :52.000 */
    ck_assert_str_eq(sid, "auto-20261122T111352");
    json_decref(req);
}
END_TEST

/* Two sessions whose ids share their first 40 characters, on a node with a
 * 63-character id: every command and event id differs between them (ids
 * used to be cut to 30 + 20 characters, and the second session's start
 * command was a duplicate the reducers ignored). */
START_TEST(long_ids_are_never_truncated_into_one)
{
    static const char *sids[2] = {
        "lab-2026-12-02-subject-0001-task-rest-run-A-with-a-long-tail-01",
        "lab-2026-12-02-subject-0001-task-rest-run-A-with-a-long-tail-02"};
    static const char *node = "node-with-a-sixty-three-character-identifier-0123456789abcdefgh";
    const char *ids[2][2];
    json_t *outs[2];
    for (int k = 0; k < 2; k++) {
        char req[256], sync[512];
        snprintf(req, sizeof(req), "{\"session_id\": \"%s\"}", sids[k]);
        snprintf(sync, sizeof(sync),
                 "{\"session_id\": \"%s\", \"devices\": [{\"device_id\": \"a1\", "
                 "\"node_id\": \"%s\", \"offset_ns\": 5}]}",
                 sids[k], node);
        apply(1 * S, "CollectionRequested", req);
        apply(10 * S, "SynchronizationCompleted", sync);
        outs[k] = ev_collect_decide(state, sids[k], &params, 11 * S, NULL, 0);
        ck_assert_int_eq(json_array_size(outs[k]), 2);
        for (int i = 0; i < 2; i++) {
            ids[k][i] = json_string_value(json_object_get(json_array_get(outs[k], i), "id"));
            ck_assert_int_lt(strlen(ids[k][i]), EV_ID_MAX);
            ck_assert(ev_id_valid(ids[k][i]) || strchr(ids[k][i], '/'));
        }
    }
    ck_assert_str_ne(ids[0][0], ids[1][0]); /* CollectionStarted */
    ck_assert_str_ne(ids[0][1], ids[1][1]); /* StartRecording */
    /* deterministic: deciding again gives the same ids */
    json_t *again = ev_collect_decide(state, sids[1], &params, 11 * S, NULL, 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(again, 1), "id")), ids[1][1]);
    json_decref(again);
    json_decref(outs[0]);
    json_decref(outs[1]);
}
END_TEST

/* CollectionStopped says complete only when every device of the group
 * reported and every stream is whole; otherwise each reason, with counts. */
START_TEST(complete_only_when_every_stream_is_whole)
{
    synced("{\"session_id\": \"s1\"}");
    json_decref(decide_apply(11 * S));
    apply(20 * S, "CollectionStopRequested", "{\"session_id\": \"s1\"}");
    json_decref(decide_apply(20 * S + 5));
    apply(22 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"streams\": ["
          "{\"device_id\": \"a1\", \"stream_id\": \"gsr\", \"samples\": 100},"
          "{\"device_id\": \"a2\", \"stream_id\": \"gsr\", \"samples\": 70, \"gaps\": 2, "
          "\"gap_samples\": 30, \"dropped\": 4, \"late_start_samples\": 5}]}");
    apply(23 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n2\", \"streams\": ["
          "{\"device_id\": \"b1\", \"stream_id\": \"gsr\", \"samples\": 100}], "
          "\"log_lost_records\": 7, \"unacknowledged_records\": 3}");
    json_t *out = decide_apply(23 * S + 1);
    json_t *v = json_object_get(json_array_get(out, 0), "value");
    ck_assert(json_is_false(json_object_get(v, "complete")));
    json_t *why = json_object_get(v, "incomplete");
    ck_assert_int_eq(json_array_size(why), 5);
    ck_assert_str_eq(json_string_value(json_array_get(why, 0)),
                     "node n2: the log lost 7 of its records (streams unknown)");
    ck_assert_str_eq(json_string_value(json_array_get(why, 1)),
                     "node n2: 3 records not acknowledged by the log when it reported");
    json_array_remove(why, 0);
    json_array_remove(why, 0);
    ck_assert_str_eq(json_string_value(json_array_get(why, 0)),
                     "a2/gsr: 30 samples in 2 gaps never reached the log");
    ck_assert_str_eq(json_string_value(json_array_get(why, 1)), "a2/gsr: 4 samples dropped");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_array_get(why, 2)), "a2/gsr: 5 samples"));
    json_decref(out);
}
END_TEST

START_TEST(complete_when_all_reported_whole)
{
    synced("{\"session_id\": \"s1\"}");
    json_decref(decide_apply(11 * S));
    apply(20 * S, "CollectionStopRequested", "{\"session_id\": \"s1\"}");
    json_decref(decide_apply(20 * S + 5));
    apply(22 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"streams\": ["
          "{\"device_id\": \"a1\", \"stream_id\": \"gsr\", \"samples\": 100, "
          "\"late_stop_samples\": 12, \"late_stop_bytes\": 96},"
          "{\"device_id\": \"a2\", \"stream_id\": \"gsr\", \"samples\": 100}]}");
    apply(23 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n2\", \"streams\": ["
          "{\"device_id\": \"b1\", \"stream_id\": \"gsr\", \"samples\": 100}]}");
    json_t *out = decide_apply(23 * S + 1);
    json_t *v = json_object_get(json_array_get(out, 0), "value");
    /* samples past a late stop are not the session's: nothing is missing */
    ck_assert(json_is_true(json_object_get(v, "complete")));
    ck_assert_int_eq(json_array_size(json_object_get(v, "incomplete")), 0);
    json_decref(out);
}
END_TEST

/* A device of the group that was not connected at the start instant and
 * came later: its streams are whole from then on, but the session misses
 * its beginning, and says so. */
START_TEST(a_device_absent_at_the_start_is_a_loss)
{
    synced("{\"session_id\": \"s1\"}");
    json_decref(decide_apply(11 * S));
    apply(20 * S, "CollectionStopRequested", "{\"session_id\": \"s1\"}");
    json_decref(decide_apply(20 * S + 5));
    apply(22 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n1\", \"missing_devices\": [\"a2\"], "
          "\"streams\": [{\"device_id\": \"a1\", \"stream_id\": \"gsr\", \"samples\": 100},"
          "{\"device_id\": \"a2\", \"stream_id\": \"gsr\", \"samples\": 40}]}");
    apply(23 * S, "RecordingReport",
          "{\"session_id\": \"s1\", \"node_id\": \"n2\", \"streams\": ["
          "{\"device_id\": \"b1\", \"stream_id\": \"gsr\", \"samples\": 100}]}");
    json_t *out = decide_apply(23 * S + 1);
    json_t *v = json_object_get(json_array_get(out, 0), "value");
    ck_assert(json_is_false(json_object_get(v, "complete")));
    json_t *why = json_object_get(v, "incomplete");
    ck_assert_int_eq(json_array_size(why), 1);
    ck_assert_str_eq(json_string_value(json_array_get(why, 0)),
                     "a2 (node n1): not connected when the session started");
    json_decref(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("collectrule");
    TCase *tc = tcase_create("rule");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, waits_for_sync);
    tcase_add_test(tc, complete_only_when_every_stream_is_whole);
    tcase_add_test(tc, complete_when_all_reported_whole);
    tcase_add_test(tc, a_device_absent_at_the_start_is_a_loss);
    tcase_add_test(tc, long_ids_are_never_truncated_into_one);
    tcase_add_test(tc, starts_at_one_instant_with_a_command_per_node);
    tcase_add_test(tc, stop_request_then_reports_then_stopped);
    tcase_add_test(tc, duration_stops_lead_ahead_and_missing_report_times_out);
    tcase_add_test(tc, duration_stop_with_notice);
    tcase_add_test(tc, cancel_before_start);
    tcase_add_test(tc, resends_only_what_a_crash_lost);
    tcase_add_test(tc, auto_start_needs_min_group_connected);
    tcase_add_test(tc, auto_start_waits_while_a_session_is_live_once_per_second);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
