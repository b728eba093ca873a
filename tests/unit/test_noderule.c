/* The supervisor's node rule (ev_node_known, ev_node_expire_due,
 * ev_node_presence_of) over reducer state: a node within its TTL stays,
 * past it expires (the exact boundary stays), the plan's TTL and heartbeat
 * interval win over the defaults, a new leader's start and a heartbeat heard
 * outside the state count as signs of life, an expired node is not expired
 * twice, and the presence classes up / stale / expired with their edges. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define MS 1000000LL
#define S  1000000000LL

static ev_codec *codec;
static ev_state *state;
static int seq;
/* supervisor.ttl_ms 6000, supervisor.heartbeat_ms 1000, leading since 0 */
static const ev_node_params params = {.ttl_ns = 6 * S, .heartbeat_ns = 1 * S};

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

static ev_node node(const char *id)
{
    ev_node n;
    ck_assert_int_eq(ev_state_node(state, id, &n), 1);
    return n;
}

static int due(const char *id, int64_t heard, const ev_node_params *p, int64_t now)
{
    ev_node n = node(id);
    return ev_node_expire_due(&n, heard, p, now);
}

static const char *presence(const char *id, int64_t now)
{
    ev_node n = node(id);
    return ev_node_presence_name(ev_node_presence_of(&n, &params, now));
}

START_TEST(within_ttl_stays_past_it_expires)
{
    apply(10 * S, "NodeRegistered", "{\"node_id\": \"n1\", \"address\": \"h:1\"}");
    ck_assert_int_eq(due("n1", 0, &params, 10 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 15 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 16 * S), 0);     /* silent exactly the TTL */
    ck_assert_int_eq(due("n1", 0, &params, 16 * S + 1), 1); /* one ns past it */
    /* a heartbeat moves the deadline */
    apply(14 * S, "NodeHeartbeat", "{\"node_id\": \"n1\", \"device_count\": 2}");
    ck_assert_int_eq(due("n1", 0, &params, 20 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 20 * S + 1), 1);
}
END_TEST

START_TEST(the_plan_ttl_wins_over_the_default)
{
    apply(10 * S, "NodeRegistered", "{\"node_id\": \"n1\"}");
    apply(10 * S, "NodePlanned",
          "{\"node_id\": \"n1\", \"ttl_ms\": 3000, \"heartbeat_interval_ms\": 500}");
    ck_assert_int_eq(due("n1", 0, &params, 13 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 13 * S + 1), 1);
}
END_TEST

/* What the supervisor heard itself (outside the state) and its leadership
 * start count as the latest sign of life. */
START_TEST(heard_and_listening_start_postpone_expiry)
{
    apply(10 * S, "NodeRegistered", "{\"node_id\": \"n1\"}");
    ck_assert_int_eq(due("n1", 12 * S, &params, 18 * S), 0);
    ck_assert_int_eq(due("n1", 12 * S, &params, 18 * S + 1), 1);
    ck_assert_int_eq(due("n1", 8 * S, &params, 16 * S + 1), 1); /* older than last seen */
    const ev_node_params leader = {.ttl_ns = 6 * S, .heartbeat_ns = 1 * S, .lead_since_ns = 30 * S};
    ck_assert_int_eq(due("n1", 0, &leader, 36 * S), 0);
    ck_assert_int_eq(due("n1", 0, &leader, 36 * S + 1), 1);
}
END_TEST

START_TEST(an_expired_node_is_not_expired_twice)
{
    apply(10 * S, "NodeRegistered", "{\"node_id\": \"n1\"}");
    ck_assert_int_eq(due("n1", 0, &params, 17 * S), 1);
    apply(17 * S, "NodeExpired",
          "{\"node_id\": \"n1\", \"last_seen_ns\": 10000000000, \"reason\": \"ttl\"}");
    ev_node n = node("n1");
    ck_assert_int_eq(n.state, EV_NODE_EXPIRED);
    ck_assert_int_eq(n.expired_at_ns, 17 * S);
    ck_assert_int_eq(ev_node_known(&n), 0);
    ck_assert_int_eq(due("n1", 0, &params, 17 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 100 * S), 0);
    /* registering again makes it known, and expirable, again */
    apply(200 * S, "NodeRegistered", "{\"node_id\": \"n1\"}");
    ck_assert_int_eq(due("n1", 0, &params, 206 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 206 * S + 1), 1);
}
END_TEST

START_TEST(known_means_in_the_state_and_not_expired)
{
    apply(1 * S, "NodeRegistered", "{\"node_id\": \"r\"}");
    apply(1 * S, "NodePlanned", "{\"node_id\": \"p\"}");
    apply(1 * S, "NodeHeartbeat", "{\"node_id\": \"u\"}");
    ck_assert_int_eq(node("r").state, EV_NODE_REGISTERED);
    ck_assert_int_eq(node("p").state, EV_NODE_PLANNED);
    ck_assert_int_eq(node("u").state, EV_NODE_UP);
    ev_node n = node("r");
    ck_assert_int_eq(ev_node_known(&n), 1);
    n = node("p");
    ck_assert_int_eq(ev_node_known(&n), 1);
    n = (ev_node){.node_id = "x"}; /* no state of its own */
    ck_assert_int_eq(ev_node_known(&n), 0);
    ck_assert_int_eq(ev_node_expire_due(&n, 0, &params, 100 * S), 0);
    ck_assert_int_eq(ev_node_presence_of(&n, &params, 0), EV_PRESENCE_EXPIRED);
    ck_assert_int_eq(ev_state_node(state, "nobody", &n), 0);
}
END_TEST

/* up within two heartbeat intervals (inclusive), then stale; expired once
 * NodeExpired. */
START_TEST(presence_classes_and_edges)
{
    apply(10 * S, "NodeRegistered", "{\"node_id\": \"n1\"}");
    ck_assert_str_eq(presence("n1", 10 * S), "up");
    ck_assert_str_eq(presence("n1", 12 * S), "up");        /* exactly 2 intervals */
    ck_assert_str_eq(presence("n1", 12 * S + 1), "stale"); /* past them */
    ck_assert_str_eq(presence("n1", 15 * S), "stale");
    /* the plan's interval wins: 2 x 3 s */
    apply(10 * S, "NodePlanned", "{\"node_id\": \"n1\", \"heartbeat_interval_ms\": 3000}");
    ck_assert_str_eq(presence("n1", 16 * S), "up");
    ck_assert_str_eq(presence("n1", 16 * S + 1), "stale");
    apply(20 * S, "NodeHeartbeat", "{\"node_id\": \"n1\"}");
    ck_assert_str_eq(presence("n1", 20 * S + 500 * MS), "up");
    apply(40 * S, "NodeExpired", "{\"node_id\": \"n1\"}");
    ck_assert_str_eq(presence("n1", 40 * S), "expired");
    ck_assert_str_eq(ev_node_presence_name(EV_PRESENCE_STALE), "stale");
}
END_TEST

/* The typed reads fill every field the rules use, and iterate in the order
 * the state first saw each node. */
START_TEST(typed_node_reads)
{
    apply(5 * S, "NodeRegistered",
          "{\"node_id\": \"b\", \"address\": \"h:2\", \"max_devices\": 8, "
          "\"cpu_cores\": 4, \"mem_total_bytes\": 1000}");
    apply(6 * S, "NodeHeartbeat",
          "{\"node_id\": \"b\", \"device_count\": 3, \"cpu_load\": 0.5, "
          "\"mem_available_bytes\": 400, \"rx_bytes_per_s\": 77}");
    apply(7 * S, "NodeRegistered", "{\"node_id\": \"a\"}");
    ev_node n = node("b");
    ck_assert_str_eq(n.node_id, "b");
    ck_assert_str_eq(n.address, "h:2");
    ck_assert_int_eq(n.max_devices, 8);
    ck_assert_int_eq(n.cpu_cores, 4);
    ck_assert_int_eq(n.mem_total_bytes, 1000);
    ck_assert_int_eq(n.device_count, 3);
    ck_assert_double_eq_tol(n.cpu_load, 0.5, 1e-9);
    ck_assert_int_eq(n.mem_available_bytes, 400);
    ck_assert_double_eq_tol(n.rx_bytes_per_s, 77, 1e-9);
    ck_assert_int_eq(n.registered_at_ns, 5 * S);
    ck_assert_int_eq(n.last_seen_ns, 6 * S);
    ck_assert_str_eq(ev_node_state_name(n.state), "up");
    const char *first = ev_state_node_next(state, NULL, &n);
    ck_assert_str_eq(first, "b");
    ck_assert_str_eq(ev_state_node_next(state, first, &n), "a");
    ck_assert_str_eq(n.address, "");
    ck_assert_ptr_null(ev_state_node_next(state, "a", &n));
}
END_TEST

static int connected(const char *device_id)
{
    ev_device d;
    ck_assert_int_eq(ev_state_device(state, device_id, &d), 1);
    return d.connected;
}

/* Steady heartbeats every second: the history is narrow, and the node is
 * expired at its TTL exactly as without it. */
START_TEST(a_steady_node_expires_at_its_ttl)
{
    apply(0, "NodeRegistered", "{\"node_id\": \"n1\"}");
    for (int i = 1; i <= 30; i++)
        apply(i * S, "NodeHeartbeat", "{\"node_id\": \"n1\"}");
    ev_node n = node("n1");
    ck_assert_int_eq(n.hb_mean_ns, 1 * S);
    ck_assert_int_lt(n.hb_dev_ns, 1 * MS);
    ck_assert_int_eq(due("n1", 0, &params, 36 * S), 0);
    ck_assert_int_eq(due("n1", 0, &params, 36 * S + 1), 1);
    ck_assert_str_eq(presence("n1", 32 * S), "up");
    ck_assert_str_eq(presence("n1", 32 * S + 1), "stale");
    ck_assert_double_eq_tol(ev_node_phi(&n, &params, 1 * S), 0, 1e-9); /* the mean: 0 */
    ck_assert(ev_node_phi(&n, &params, 2 * S) > 8);
}
END_TEST

/* A loaded node's heartbeats come at 1 s and 5 s in turn: a silence of a
 * TTL is what its history expects, so it is neither suspected nor expired
 * at the TTL; phi grows with the silence, and four TTLs expire it
 * whatever phi says. */
START_TEST(jitter_widens_the_patience)
{
    int64_t t = 0;
    apply(t, "NodeRegistered", "{\"node_id\": \"n1\"}");
    for (int i = 1; i <= 40; i++) {
        t += (i % 2 ? 1 : 5) * S;
        apply(t, "NodeHeartbeat", "{\"node_id\": \"n1\"}");
    }
    ev_node n = node("n1");
    ck_assert_int_gt(n.hb_mean_ns, 2 * S);
    ck_assert_int_gt(n.hb_dev_ns, 1 * S);
    ck_assert_str_eq(presence("n1", t + 5 * S), "up"); /* past 2 intervals, expected */
    ck_assert_int_eq(due("n1", 0, &params, t + 6 * S + 1), 0);
    ck_assert_int_eq(due("n1", 0, &params, t + 9 * S), 0);
    double prev = 0;
    for (int64_t x = 2 * S; x <= 20 * S; x += S) { /* phi never falls as silence grows */
        double phi = ev_node_phi(&n, &params, x);
        ck_assert(phi >= prev);
        prev = phi;
    }
    /* phi reaches 8 somewhere before four TTLs, and expiry with it */
    int64_t at = 0;
    for (int64_t x = 6 * S; x <= 24 * S && !at; x += 100 * MS)
        if (due("n1", 0, &params, t + x))
            at = x;
    ck_assert_int_gt(at, 9 * S);
    ck_assert_int_le(at, 24 * S);
    ck_assert(ev_node_phi(&n, &params, at) >= 8);
    ck_assert_int_eq(due("n1", 0, &params, t + 24 * S + 1), 1); /* four TTLs */
    /* a supervisor that raises phi_expire waits longer (up to four TTLs) */
    const ev_node_params patient = {.ttl_ns = 6 * S, .heartbeat_ns = 1 * S, .phi_expire = 30};
    ck_assert_int_eq(due("n1", 0, &patient, t + at), 0);
    ck_assert_int_eq(due("n1", 0, &patient, t + 24 * S + 1), 1);
}
END_TEST

/* A supervisor that stalls again and again (its listening_since moved to
 * the end of each stall) gives a silent node a TTL from each stall, but
 * never more than four TTLs from its last sign of life: a dead node is
 * expired; a new leader's start still counts as one. */
START_TEST(stalls_postpone_expiry_up_to_four_ttls)
{
    apply(10 * S, "NodeRegistered", "{\"node_id\": \"n1\"}");
    for (int64_t t = 10 * S; t < 60 * S; t += 500 * MS) {
        ev_node_params stalled = params;
        stalled.listening_since_ns = t - 100 * MS; /* a stall ended just now */
        ck_assert_int_eq(due("n1", 0, &stalled, t), t > 34 * S);
    }
    ev_node_params led = params;
    led.lead_since_ns = 40 * S;
    ck_assert_int_eq(due("n1", 0, &led, 45 * S), 0); /* one TTL from leading */
    ck_assert_int_eq(due("n1", 0, &led, 46 * S + 1), 1);
}
END_TEST

/* Expired because its heartbeats came late, the node registers again with
 * the incarnation it had: the devices its expiry disconnected are in the
 * pool again, a device that left on its own is not. A new incarnation (the
 * agent restarted) gets none back, and its heartbeat history starts anew. */
START_TEST(the_same_process_comes_back_with_its_devices)
{
    apply(1 * S, "NodeRegistered", "{\"node_id\": \"n1\", \"incarnation\": \"A\"}");
    for (int i = 2; i <= 5; i++)
        apply(i * S, "NodeHeartbeat", "{\"node_id\": \"n1\"}");
    apply(2 * S, "DeviceRegistered", "{\"device_id\": \"d1\", \"node_id\": \"n1\"}");
    apply(2 * S, "DeviceRegistered", "{\"device_id\": \"d2\", \"node_id\": \"n1\"}");
    apply(2 * S, "DeviceRegistered", "{\"device_id\": \"d3\", \"node_id\": \"n1\"}");
    apply(3 * S, "DeviceDisconnected", "{\"device_id\": \"d3\", \"node_id\": \"n1\"}");
    apply(12 * S, "NodeExpired", "{\"node_id\": \"n1\", \"last_seen_ns\": 5000000000}");
    ck_assert_int_eq(connected("d1"), 0);
    ck_assert_int_eq(connected("d2"), 0);
    ck_assert_str_eq(node("n1").incarnation, "A");
    apply(13 * S, "NodeRegistered", "{\"node_id\": \"n1\", \"incarnation\": \"A\"}");
    ck_assert_int_eq(connected("d1"), 1);
    ck_assert_int_eq(connected("d2"), 1);
    ck_assert_int_eq(connected("d3"), 0);
    ck_assert_int_eq(node("n1").hb_mean_ns, 1 * S); /* the same process: its history stays */
    apply(30 * S, "NodeExpired", "{\"node_id\": \"n1\", \"last_seen_ns\": 13000000000}");
    apply(31 * S, "NodeRegistered", "{\"node_id\": \"n1\", \"incarnation\": \"B\"}");
    ck_assert_int_eq(connected("d1"), 0);
    ck_assert_int_eq(node("n1").hb_mean_ns, 0);
    /* no incarnation said: never taken for the same process */
    apply(40 * S, "NodeRegistered", "{\"node_id\": \"n2\"}");
    apply(40 * S, "DeviceRegistered", "{\"device_id\": \"d4\", \"node_id\": \"n2\"}");
    apply(50 * S, "NodeExpired", "{\"node_id\": \"n2\"}");
    apply(51 * S, "NodeRegistered", "{\"node_id\": \"n2\"}");
    ck_assert_int_eq(connected("d4"), 0);
}
END_TEST

/* What the supervisor asks before it writes a NodeRegistered or a
 * NodePlanned: would the record change the node's state? */
START_TEST(a_record_that_changes_nothing_is_known)
{
    apply(1 * S, "NodeRegistered",
          "{\"node_id\": \"n1\", \"address\": \"h:1\", \"incarnation\": \"A\"}");
    json_t *same =
        json_pack("{s:s, s:s, s:s}", "node_id", "n1", "address", "h:1", "incarnation", "A");
    json_t *moved = json_pack("{s:s, s:s}", "node_id", "n1", "address", "h:2");
    json_t *plan = json_pack("{s:s, s:I}", "node_id", "n1", "ttl_ms", (json_int_t)3000);
    ck_assert_int_eq(ev_state_node_matches(state, "n1", same), 1);
    ck_assert_int_eq(ev_state_node_matches(state, "n1", moved), 0);
    ck_assert_int_eq(ev_state_node_matches(state, "n1", plan), 0);
    ck_assert_int_eq(ev_state_node_matches(state, "nobody", same), 0);
    apply(1 * S, "NodePlanned", "{\"node_id\": \"n1\", \"ttl_ms\": 3000}");
    ck_assert_int_eq(ev_state_node_matches(state, "n1", plan), 1);
    json_decref(same);
    json_decref(moved);
    json_decref(plan);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("noderule");
    TCase *tc = tcase_create("noderule");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, within_ttl_stays_past_it_expires);
    tcase_add_test(tc, the_plan_ttl_wins_over_the_default);
    tcase_add_test(tc, heard_and_listening_start_postpone_expiry);
    tcase_add_test(tc, an_expired_node_is_not_expired_twice);
    tcase_add_test(tc, known_means_in_the_state_and_not_expired);
    tcase_add_test(tc, presence_classes_and_edges);
    tcase_add_test(tc, typed_node_reads);
    tcase_add_test(tc, a_steady_node_expires_at_its_ttl);
    tcase_add_test(tc, jitter_widens_the_patience);
    tcase_add_test(tc, stalls_postpone_expiry_up_to_four_ttls);
    tcase_add_test(tc, the_same_process_comes_back_with_its_devices);
    tcase_add_test(tc, a_record_that_changes_nothing_is_known);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
