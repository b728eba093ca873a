/* The supervisor's placement rule (ev_place_choose, ev_place_limit) over
 * reducer state: only live nodes with an address and room, round robin in
 * node-id order, least loaded by device share + CPU (per core) + memory +
 * bandwidth, an excluded node. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define S 1000000000LL

static ev_codec *codec;
static ev_state *state;
static int seq;

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

static void apply(const char *type, const char *json)
{
    char id[16];
    snprintf(id, sizeof(id), "e%d", ++seq);
    ck_assert_int_eq(tu_apply(state, codec, id, ++seq * S, type, json), 0);
}

/* A node registered with an address and max, heartbeating devices and cpu. */
static void node(const char *id, int max, int devices, double cpu)
{
    char json[256];
    snprintf(json, sizeof(json),
             "{\"node_id\": \"%s\", \"address\": \"127.0.0.1:%d\", \"max_devices\": %d}", id,
             9000 + seq, max);
    apply("NodeRegistered", json);
    snprintf(json, sizeof(json), "{\"node_id\": \"%s\", \"device_count\": %d, \"cpu_load\": %g}",
             id, devices, cpu);
    apply("NodeHeartbeat", json);
}

static int64_t bandwidth; /* the policy's, 0 unless a test sets it */

static const char *choose(ev_place_strategy st, int64_t cap, const char *exclude, int64_t *rr)
{
    static char out[64];
    int64_t zero = 0;
    ev_place_policy policy = {st, cap, bandwidth};
    if (ev_place_choose(state, &policy, exclude, rr ? rr : &zero, out, sizeof(out)))
        return "-";
    return out;
}

START_TEST(limit_is_the_lower_of_two_with_zero_none)
{
    ck_assert_int_eq(ev_place_limit(0, 0), 0);
    ck_assert_int_eq(ev_place_limit(16, 0), 16);
    ck_assert_int_eq(ev_place_limit(0, 4), 4);
    ck_assert_int_eq(ev_place_limit(16, 4), 4);
    ck_assert_int_eq(ev_place_limit(3, 4), 3);
}
END_TEST

START_TEST(least_loaded_with_room)
{
    node("b", 16, 8, 0.0);  /* 0.5 */
    node("a", 16, 4, 0.5);  /* 0.75 */
    node("c", 16, 12, 0.0); /* 0.75 */
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "b");
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, "b", NULL), "a"); /* a, c tie: id order */
    /* cap 8: b is full, c too */
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 8, NULL, NULL), "a");
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 4, NULL, NULL), "-");
}
END_TEST

/* Each share counts only when reported: CPU per core, memory in use,
 * device traffic against the policy's bandwidth. */
START_TEST(least_loaded_counts_cores_memory_and_bandwidth)
{
    const ev_place_policy policy = {EV_PLACE_LEAST_LOADED, 0, 100000000};
    node("big", 16, 4, 2.0);   /* 0.25 + 2.0: no cores reported, 2 cores busy counts 2 */
    node("small", 16, 4, 0.5); /* 0.25 + 0.5 */
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "small");
    apply("NodeRegistered", "{\"node_id\": \"big\", \"address\": \"h:1\", \"max_devices\": 16, "
                            "\"cpu_cores\": 16}"); /* 0.25 + 2/16 */
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "big");

    /* memory: big has 1 GiB of 4 available (0.75 in use) */
    apply("NodeRegistered", "{\"node_id\": \"big\", \"address\": \"h:1\", \"max_devices\": 16, "
                            "\"cpu_cores\": 16, \"mem_total_bytes\": 4294967296}");
    apply("NodeHeartbeat", "{\"node_id\": \"big\", \"device_count\": 4, \"cpu_load\": 2.0, "
                           "\"mem_available_bytes\": 1073741824}");
    ev_node big;
    ck_assert_int_eq(ev_state_node(state, "big", &big), 1);
    ck_assert_double_eq_tol(ev_place_load(&big, &policy), 0.25 + 0.125 + 0.75, 1e-9);
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "small");

    /* bandwidth: small receives 80 MB/s of 100 */
    apply("NodeHeartbeat", "{\"node_id\": \"small\", \"device_count\": 4, \"cpu_load\": 0.5, "
                           "\"rx_bytes_per_s\": 80000000}");
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "small"); /* not counted */
    bandwidth = 100000000;
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "big"); /* 1.125 < 1.55 */
    bandwidth = 0;
}
END_TEST

START_TEST(round_robin_in_id_order)
{
    int64_t rr = 0;
    node("n2", 0, 100, 0.9);
    node("n1", 0, 0, 0.0);
    node("n3", 0, 5, 0.0);
    ck_assert_str_eq(choose(EV_PLACE_ROUND_ROBIN, 0, NULL, &rr), "n1");
    ck_assert_str_eq(choose(EV_PLACE_ROUND_ROBIN, 0, NULL, &rr), "n2");
    ck_assert_str_eq(choose(EV_PLACE_ROUND_ROBIN, 0, NULL, &rr), "n3");
    ck_assert_str_eq(choose(EV_PLACE_ROUND_ROBIN, 0, NULL, &rr), "n1");
    ck_assert_int_eq(rr, 4);
}
END_TEST

START_TEST(expired_or_addressless_nodes_are_not_candidates)
{
    node("gone", 0, 0, 0.0);
    apply("NodeExpired", "{\"node_id\": \"gone\"}");
    apply("NodeRegistered", "{\"node_id\": \"noaddr\"}");
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "-");
    node("live", 0, 0, 0.0);
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, NULL, NULL), "live");
    ck_assert_str_eq(choose(EV_PLACE_LEAST_LOADED, 0, "live", NULL), "-");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("placerule");
    TCase *tc = tcase_create("placerule");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, limit_is_the_lower_of_two_with_zero_none);
    tcase_add_test(tc, least_loaded_with_room);
    tcase_add_test(tc, least_loaded_counts_cores_memory_and_bandwidth);
    tcase_add_test(tc, round_robin_in_id_order);
    tcase_add_test(tc, expired_or_addressless_nodes_are_not_candidates);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
