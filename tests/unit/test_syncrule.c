/* syncd's rule (ev_sync_decide) over reducer state: minimum group, fresh
 * and precise offsets, requested devices only, stale devices to re-sync. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define S 1000000000LL

static ev_codec *codec;
static ev_state *state;
static int seq;
static const ev_sync_params params = {
    .max_uncertainty_ns = 500000, .max_age_ns = 10 * S, .min_group = 1};

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

static void apply(int64_t t, const char *type, const char *json)
{
    char id[16];
    snprintf(id, sizeof(id), "e%d", ++seq);
    ck_assert_int_eq(tu_apply(state, codec, id, t, type, json), 0);
}

static void device(const char *id, const char *node, int64_t t)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"device_id\": \"%s\", \"node_id\": \"%s\"}", id, node);
    apply(t, "DeviceRegistered", json);
}

static void offset(const char *id, int64_t t, int64_t unc)
{
    char json[256];
    snprintf(json, sizeof(json),
             "{\"device_id\": \"%s\", \"offset_ns\": 1000, \"rtt_ns\": 300000, \"uncertainty_ns\": "
             "%lld, \"drift_ppm\": 3.5}",
             id, (long long)unc);
    apply(t, "ClockOffsetMeasured", json);
}

START_TEST(waits_for_minimum_group)
{
    char why[256];
    json_t *done, *stale;
    apply(1 * S, "CollectionRequested", "{\"session_id\": \"s\", \"min_group\": 3}");
    device("d1", "n1", 1 * S);
    device("d2", "n1", 1 * S);
    offset("d1", 2 * S, 100000);
    offset("d2", 2 * S, 100000);
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 3 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_WAIT);
    ck_assert_ptr_null(done);
    ck_assert_msg(strstr(why, "2 of the 3") != NULL, "%s", why);
    json_decref(stale);
    device("d3", "n2", 3 * S);
    offset("d3", 3 * S, 200000);
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 4 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_READY);
    ck_assert_int_eq(json_array_size(json_object_get(done, "devices")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(done, "max_uncertainty_ns")), 200000);
    ck_assert_int_eq(json_object_size(stale), 0);
    /* The record it makes is a valid SynchronizationCompleted. */
    char err[256];
    avro_value_t *v;
    ev_codec_value(codec, ev_schema_by_name("SynchronizationCompleted"), &v);
    ck_assert_msg(ev_value_from_json(v, done, err, sizeof(err)) == 0, "%s", err);
    json_decref(done);
    json_decref(stale);
}
END_TEST

START_TEST(uncertain_or_stale_offsets_block)
{
    char why[256];
    json_t *done, *stale;
    apply(1 * S, "CollectionRequested", "{\"session_id\": \"s\", \"min_group\": 2}");
    device("d1", "n1", 1 * S);
    device("d2", "n2", 1 * S);
    offset("d1", 2 * S, 900000); /* too uncertain */
    offset("d2", 2 * S, 100000);
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 3 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_WAIT);
    ck_assert_msg(strstr(why, "no fresh offset") != NULL, "%s", why);
    json_decref(stale);
    offset("d1", 4 * S, 100000);
    /* 20 s later both are stale: wait, and ask both nodes to re-sync. */
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 24 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_WAIT);
    ck_assert_int_eq(json_array_size(json_object_get(stale, "n1")), 1);
    ck_assert_int_eq(json_array_size(json_object_get(stale, "n2")), 1);
    json_decref(stale);
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 5 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_READY);
    json_decref(done);
    json_decref(stale);
}
END_TEST

START_TEST(only_requested_connected_devices)
{
    char why[256];
    json_t *done, *stale;
    apply(1 * S, "CollectionRequested",
          "{\"session_id\": \"s\", \"device_ids\": [\"d1\", \"d2\"], \"min_group\": 1}");
    device("d1", "n1", 1 * S);
    device("d2", "n1", 1 * S);
    device("other", "n1", 1 * S); /* not requested, never synced: irrelevant */
    offset("d1", 2 * S, 100000);
    apply(2 * S, "DeviceDisconnected", "{\"device_id\": \"d2\"}");
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 3 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_READY);
    json_t *devs = json_object_get(done, "devices");
    ck_assert_int_eq(json_array_size(devs), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(devs, 0), "device_id")),
                     "d1");
    json_decref(done);
    json_decref(stale);
}
END_TEST

START_TEST(not_requested_or_done_is_none)
{
    json_t *done, *stale;
    ck_assert_int_eq(ev_sync_decide(state, "nope", &params, 1, &done, &stale, NULL, 0),
                     EV_SYNC_NONE);
    json_decref(stale);
    apply(1 * S, "CollectionRequested", "{\"session_id\": \"s\"}");
    apply(2 * S, "SynchronizationCompleted", "{\"session_id\": \"s\"}");
    ck_assert_int_eq(ev_sync_decide(state, "s", &params, 3 * S, &done, &stale, NULL, 0),
                     EV_SYNC_NONE);
    ck_assert_ptr_null(done);
    json_decref(stale);
}
END_TEST

START_TEST(params_min_group_raises_the_session_s)
{
    char why[256];
    json_t *done, *stale;
    ev_sync_params p = params;
    p.min_group = 2;
    apply(1 * S, "CollectionRequested", "{\"session_id\": \"s\", \"min_group\": 1}");
    device("d1", "n1", 1 * S);
    offset("d1", 2 * S, 1000);
    ck_assert_int_eq(ev_sync_decide(state, "s", &p, 3 * S, &done, &stale, why, sizeof(why)),
                     EV_SYNC_WAIT);
    json_decref(stale);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("syncrule");
    TCase *tc = tcase_create("syncrule");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, waits_for_minimum_group);
    tcase_add_test(tc, uncertain_or_stale_offsets_block);
    tcase_add_test(tc, only_requested_connected_devices);
    tcase_add_test(tc, not_requested_or_done_is_none);
    tcase_add_test(tc, params_min_group_raises_the_session_s);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
