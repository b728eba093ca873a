/* The embedded catalog: every record of DESIGN.md's topic table is there,
 * with a unique fixed id, its topic and its key field. */
#include "testutil.h"

#include <string.h>

START_TEST(catalog_loads)
{
    char err[256] = "";
    ck_assert_msg(ev_catalog_init(err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(ev_schema_count(), 21);
}
END_TEST

START_TEST(design_topics_and_records)
{
    static const char *const expected[][2] = {{"NodeRegistered", "nodes"},
                                              {"NodePlanned", "nodes"},
                                              {"NodeHeartbeat", "nodes"},
                                              {"NodeExpired", "nodes"},
                                              {"DeviceRegistered", "devices"},
                                              {"DeviceStatus", "devices"},
                                              {"DeviceDisconnected", "devices"},
                                              {"ClockOffsetMeasured", "clock"},
                                              {"CollectionRequested", "sessions"},
                                              {"SynchronizationCompleted", "sessions"},
                                              {"CollectionStarted", "sessions"},
                                              {"SyncMark", "sessions"},
                                              {"CollectionStopped", "sessions"},
                                              {"StartRecording", "commands"},
                                              {"StopRecording", "commands"},
                                              {"SyncNow", "commands"},
                                              {"PresenceSnapshot", "presence"},
                                              {"SensorSampleBatch", "samples"},
                                              {"MediaPacket", "media"}};
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        const ev_schema *s = ev_schema_by_name(expected[i][0]);
        ck_assert_msg(s != NULL, "%s missing", expected[i][0]);
        ck_assert_str_eq(ev_schema_topic(s), expected[i][1]);
        /* The key field exists in the record and is a string. */
        int idx = avro_schema_record_field_get_index(ev_schema_avro(s), ev_schema_key_field(s));
        ck_assert_msg(idx >= 0, "%s has no key field %s", expected[i][0], ev_schema_key_field(s));
        ck_assert(is_avro_string(avro_schema_record_field_get_by_index(ev_schema_avro(s), idx)));
    }
}
END_TEST

START_TEST(lookup_by_full_name_and_id)
{
    const ev_schema *s = ev_schema_by_name("msrs.events.ClockOffsetMeasured");
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(ev_schema_id(s), 204);
    ck_assert_ptr_eq(ev_schema_by_id(204), s);
    ck_assert_str_eq(ev_schema_short_name(s), "ClockOffsetMeasured");
    ck_assert_ptr_null(ev_schema_by_name("NoSuchRecord"));
    ck_assert_ptr_null(ev_schema_by_name(NULL));
    ck_assert_ptr_null(ev_schema_by_id(0));
    ck_assert_ptr_null(ev_schema_by_id(-1));
}
END_TEST

START_TEST(ids_unique)
{
    for (size_t i = 0; i < ev_schema_count(); i++)
        for (size_t j = i + 1; j < ev_schema_count(); j++)
            ck_assert_int_ne(ev_schema_id(ev_schema_at(i)), ev_schema_id(ev_schema_at(j)));
    ck_assert_ptr_null(ev_schema_at(ev_schema_count()));
}
END_TEST

/* ev.h's ev_schema_ids name the records the catalog gives those ids. */
START_TEST(schema_id_constants_match_the_catalog)
{
    ck_assert_str_eq(ev_schema_short_name(ev_schema_by_id(EV_SCHEMA_NODE_REGISTERED)),
                     "NodeRegistered");
    ck_assert_str_eq(ev_schema_short_name(ev_schema_by_id(EV_SCHEMA_CLOCK_OFFSET_MEASURED)),
                     "ClockOffsetMeasured");
    ck_assert_str_eq(ev_schema_short_name(ev_schema_by_id(EV_SCHEMA_STOP_RECORDING)),
                     "StopRecording");
    ck_assert_int_eq(ev_schema_id(ev_schema_by_name("PresenceSnapshot")),
                     EV_SCHEMA_PRESENCE_SNAPSHOT);
    ck_assert_int_eq(ev_catalog_init(NULL, 0), 0); /* the load checks every constant */
}
END_TEST

/* StreamCount is defined once (schemas/StreamCount.avsc) and referred to by
 * name; each record's JSON stands alone with it in place of the first
 * reference, and both records share the one definition's fields. */
START_TEST(shared_types_are_put_in_place)
{
    const char *names[] = {"RecordingReport", "CollectionStopped"};
    for (size_t i = 0; i < 2; i++) {
        const ev_schema *s = ev_schema_by_name(names[i]);
        const char *json = ev_schema_json(s);
        ck_assert_ptr_nonnull(strstr(json, "\"name\":\"StreamCount\""));
        ck_assert_ptr_nonnull(strstr(json, "late_stop_bytes"));
        avro_schema_t alone;
        ck_assert_msg(avro_schema_from_json_length(json, strlen(json), &alone) == 0, "%s: %s",
                      names[i], avro_strerror());
        avro_schema_t streams = avro_schema_record_field_get(alone, "streams");
        avro_schema_t item = avro_schema_array_items(streams);
        ck_assert_str_eq(avro_schema_name(item), "StreamCount");
        ck_assert_int_eq(avro_schema_record_field_get_index(item, "bytes"), 3);
        ck_assert(avro_schema_equal(alone, ev_schema_avro(s)));
        avro_schema_decref(alone);
    }
}
END_TEST

/* Every topic says its key, partitions and configs; the leader topic has
 * one partition and no records; every record's topic is one of them. */
START_TEST(topics_say_what_a_cluster_needs)
{
    ck_assert_uint_eq(ev_topic_count(), 9);
    const ev_topic *leader = ev_topic_by_name("leader");
    ck_assert_ptr_nonnull(leader);
    ck_assert_int_eq(ev_topic_partitions(leader), 1);
    ck_assert(ev_topic_partitions_exact(leader));
    ck_assert(!ev_topic_partitions_exact(ev_topic_by_name("samples")));
    ck_assert_ptr_null(ev_topic_key_field(leader));
    const ev_topic *presence = ev_topic_by_name("presence");
    ck_assert_str_eq(
        json_string_value(json_object_get(ev_topic_config(presence), "cleanup.policy")), "compact");
    for (size_t i = 0; i < ev_schema_count(); i++) {
        const ev_topic *t = ev_topic_by_name(ev_schema_topic(ev_schema_at(i)));
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(ev_topic_key_field(t), ev_schema_key_field(ev_schema_at(i)));
        ck_assert_int_ge(ev_topic_partitions(t), 1);
    }
    ck_assert_ptr_null(ev_topic_at(ev_topic_count()));
    ck_assert_ptr_null(ev_topic_by_name("nosuch"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("catalog");
    TCase *tc = tcase_create("catalog");
    tcase_add_test(tc, catalog_loads);
    tcase_add_test(tc, design_topics_and_records);
    tcase_add_test(tc, lookup_by_full_name_and_id);
    tcase_add_test(tc, ids_unique);
    tcase_add_test(tc, schema_id_constants_match_the_catalog);
    tcase_add_test(tc, shared_types_are_put_in_place);
    tcase_add_test(tc, topics_say_what_a_cluster_needs);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
