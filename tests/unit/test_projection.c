/* The projection runner (libevents projection.c) on a real SQLite log:
 * folds to the end, positions and counters, bounds (limit, until), a
 * record that does not decode is skipped and named, a hole in the offsets
 * is counted and named, run's check and state file. */
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char db[512];
static ev_conf *conf;
static ev_log *log_w; /* the writer */
static char err[512];

/* Notes heard, by kind, with the last one's offset and count. */
static int heard[8];
static int64_t last_offset, last_count;

static void on_note(void *arg, const ev_projection_note *n)
{
    (void)arg;
    heard[n->kind]++;
    last_offset = n->offset;
    last_count = n->count;
}

static void setup(void)
{
    char uri[600];
    dir = tu_tmpdir("projection");
    snprintf(db, sizeof(db), "%s/log.db", dir);
    snprintf(uri, sizeof(uri), "sqlite:%s", db);
    conf = ev_conf_new();
    ev_conf_set(conf, "log", uri);
    ck_assert_int_eq(ev_catalog_init(err, sizeof(err)), 0);
    ck_assert_msg(ev_log_open(&log_w, conf, err, sizeof(err)) == 0, "%s", err);
    memset(heard, 0, sizeof(heard));
}

static void teardown(void)
{
    ev_log_destroy(log_w);
    ev_conf_destroy(conf);
    tu_rmrf(dir);
    free(dir);
}

/* Emits a NodeRegistered for node at event time t_ns and waits for it. */
static void register_node(const char *node, int64_t t_ns)
{
    char id[64];
    json_t *v = json_pack("{s:s, s:s}", "node_id", node, "hostname", "pc");
    snprintf(id, sizeof(id), "reg/%s", node);
    ev_emit_opts o = {.id = id, .time_ns = t_ns};
    ck_assert_msg(ev_log_emit_json(log_w, ev_schema_by_name("NodeRegistered"), node, v, &o, err,
                                   sizeof(err)) == 0,
                  "%s", err);
    ck_assert_msg(ev_log_flush(log_w, 10000, err, sizeof(err)) == 0, "%s", err);
    json_decref(v);
}

static const char *const nodes_topic[] = {"nodes"};

/* Folds the log to its end into a new state; returns the projection. */
static ev_projection *fold(ev_state *state, const ev_projection_opts *o, ev_log **log)
{
    ev_projection *p = NULL;
    ck_assert_int_eq(ev_log_open(log, conf, err, sizeof(err)), 0);
    ck_assert_msg(ev_projection_new(&p, *log, state, nodes_topic, 1, o, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(ev_projection_caught_up(p), 0);
    ck_assert_msg(ev_projection_fold(p, NULL, err, sizeof(err)) == 0, "%s", err);
    return p;
}

static int has_node(ev_state *state, const char *node)
{
    json_t *j = ev_state_to_json(state);
    int has = json_object_get(json_object_get(j, "nodes"), node) != NULL;
    json_decref(j);
    return has;
}

START_TEST(folds_to_the_end_with_positions)
{
    register_node("n1", 1000);
    register_node("n2", 2000);
    ev_state *state = ev_state_new();
    ev_log *log;
    ev_projection_opts o = {.on_note = on_note};
    ev_projection *p = fold(state, &o, &log);
    ck_assert_int_eq(ev_projection_caught_up(p), 1);
    ck_assert_int_eq(ev_projection_records(p), 2);
    ck_assert_int_eq(ev_projection_skipped(p), 0);
    ck_assert_int_eq(ev_projection_gaps(p), 0);
    ck_assert(has_node(state, "n1") && has_node(state, "n2"));
    json_t *snap = ev_projection_snapshot(p);
    json_t *pos = json_object_get(json_object_get(snap, "positions"), "msrs.nodes");
    ck_assert_int_eq(json_integer_value(json_object_get(pos, "0")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(snap, "records")), 2);
    ck_assert_ptr_nonnull(json_object_get(json_object_get(snap, "nodes"), "n2"));
    json_decref(snap);
    ck_assert_int_eq(heard[EV_PROJ_SKIPPED] + heard[EV_PROJ_GAP], 0);
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
}
END_TEST

/* The lag in time: the oldest record's age when folded since the last
 * call, or the last one's while the fold is not at the end. */
START_TEST(the_oldest_record_folded_gives_the_lag_in_time)
{
    int64_t now = ev_now_ns();
    register_node("n1", now - 5000000000LL); /* written 5 s ago */
    register_node("n2", now - 1000000000LL);
    ev_state *state = ev_state_new();
    ev_log *log;
    ev_projection *p = fold(state, NULL, &log);
    int64_t age = ev_projection_lag_ns(p, ev_now_ns());
    ck_assert_msg(age >= 5000000000LL && age < 65000000000LL, "age %lld", (long long)age);
    /* at the end and nothing folded since: no lag */
    ck_assert_int_eq(ev_projection_lag_ns(p, ev_now_ns()), 0);
    register_node("n3", now - 2000000000LL);
    char e[256];
    ck_assert_int_eq(ev_projection_step(p, 1000, e, sizeof(e)), 0); /* n3, not yet the end */
    /* behind: the age of the last record folded grows with the clock */
    ck_assert_int_ge(ev_projection_lag_ns(p, now + 60000000000LL), 60000000000LL);
    while (ev_projection_step(p, 1000, e, sizeof(e)) == 0)
        ;
    age = ev_projection_lag_ns(p, ev_now_ns());
    ck_assert_msg(age < 5000000000LL, "age %lld", (long long)age);
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
}
END_TEST

START_TEST(an_undecodable_record_is_skipped_and_named)
{
    static const unsigned char junk[] = {0x00, 0x00, 0x00, 0x00, 0x65, 0xff, 0xff};
    register_node("n1", 1000);
    ck_assert_int_eq(ev_log_produce(log_w, "msrs.nodes", "n9", 2, junk, sizeof(junk), NULL, 0, 0,
                                    err, sizeof(err)),
                     0);
    ck_assert_int_eq(ev_log_flush(log_w, 10000, err, sizeof(err)), 0);
    register_node("n2", 2000);
    ev_state *state = ev_state_new();
    ev_log *log;
    ev_projection_opts o = {.on_note = on_note};
    ev_projection *p = fold(state, &o, &log);
    ck_assert_int_eq(ev_projection_records(p), 3);
    ck_assert_int_eq(ev_projection_skipped(p), 1);
    ck_assert_int_eq(heard[EV_PROJ_SKIPPED], 1);
    ck_assert_int_eq(last_offset, 1);
    ck_assert(has_node(state, "n2")); /* the fold went on past it */
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
}
END_TEST

START_TEST(a_hole_in_the_offsets_is_counted_and_named)
{
    sqlite3 *h;
    register_node("n1", 1000);
    register_node("n2", 2000);
    register_node("n3", 3000);
    ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_exec(h, "DELETE FROM \"t:msrs.nodes\" WHERE offset = 1", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(h);
    ev_state *state = ev_state_new();
    ev_log *log;
    ev_projection_opts o = {.on_note = on_note};
    ev_projection *p = fold(state, &o, &log);
    ck_assert_int_eq(ev_projection_gaps(p), 1);
    ck_assert_int_eq(heard[EV_PROJ_GAP], 1);
    ck_assert_int_eq(last_offset, 1);
    ck_assert_int_eq(last_count, 1);
    ck_assert(has_node(state, "n3") && !has_node(state, "n2"));
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
}
END_TEST

START_TEST(limit_and_until_leave_later_records_out)
{
    register_node("n1", 1000);
    register_node("n2", 2000);
    register_node("n3", 3000);
    ev_log *log;
    /* limit: offsets at or past 1 are read, not folded */
    ev_state *state = ev_state_new();
    json_t *limit = json_pack("{s:{s:i}}", "msrs.nodes", "0", 1);
    ev_projection_opts o = {.limit = limit};
    ev_projection *p = fold(state, &o, &log);
    ck_assert_int_eq(ev_projection_records(p), 1);
    ck_assert(has_node(state, "n1") && !has_node(state, "n2"));
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
    json_decref(limit);
    /* until: events after 2000 ns are not folded */
    state = ev_state_new();
    o = (ev_projection_opts){.until_ns = 2000};
    p = fold(state, &o, &log);
    ck_assert_int_eq(ev_projection_records(p), 2);
    ck_assert(has_node(state, "n2") && !has_node(state, "n3"));
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
}
END_TEST

static volatile sig_atomic_t stop_run;
static int checks;
static void check_once(void *arg)
{
    (void)arg;
    checks++;
    stop_run = 1;
}

START_TEST(run_checks_once_caught_up_and_writes_the_state_file)
{
    char path[600];
    register_node("n1", 1000);
    snprintf(path, sizeof(path), "%s/state.json", dir);
    ev_state *state = ev_state_new();
    ev_log *log;
    ev_projection *p = NULL;
    ev_projection_opts o = {.on_note = on_note, .state_file = path};
    ck_assert_int_eq(ev_log_open(&log, conf, err, sizeof(err)), 0);
    ck_assert_int_eq(ev_projection_new(&p, log, state, nodes_topic, 1, &o, err, sizeof(err)), 0);
    stop_run = 0;
    checks = 0;
    ck_assert_msg(ev_projection_run(p, 50, check_once, NULL, &stop_run, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(checks, 1);
    ck_assert_int_eq(heard[EV_PROJ_CAUGHT_UP], 1);
    json_error_t je;
    json_t *snap = json_load_file(path, 0, &je);
    ck_assert_msg(snap != NULL, "%s", je.text);
    ck_assert_int_eq(json_integer_value(json_object_get(snap, "records")), 1);
    ck_assert_ptr_nonnull(json_object_get(json_object_get(snap, "nodes"), "n1"));
    json_decref(snap);
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
}
END_TEST

START_TEST(bad_arguments_are_refused)
{
    ev_projection *p = (ev_projection *)1;
    ev_state *state = ev_state_new();
    ck_assert_int_eq(ev_projection_new(&p, log_w, state, nodes_topic, 0, NULL, err, sizeof(err)),
                     EV_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert(strstr(err, "topics") != NULL);
    ev_projection_destroy(NULL);
    ev_state_destroy(state);
}
END_TEST

/* The offsets tracker both readers share: holes per topic and partition,
 * from the first offset (0) or from where the reader began. */
START_TEST(offsets_name_holes_per_partition)
{
    ev_msg m = {.topic = "msrs.nodes", .partition = 0};
    int64_t first = -1;
    ev_offsets *o = ev_offsets_new(1);
    m.offset = 0;
    ck_assert_int_eq(ev_offsets_see(o, &m, &first), 0);
    m.offset = 3;
    ck_assert_int_eq(ev_offsets_see(o, &m, &first), 2);
    ck_assert_int_eq(first, 1);
    ck_assert_int_eq(ev_offsets_mark(o, &m), 0);
    m.partition = 1;
    m.offset = 2; /* another partition: its own numbering, from 0 */
    ck_assert_int_eq(ev_offsets_see(o, &m, &first), 2);
    m.offset = 1; /* a redelivered older record is no hole */
    ck_assert_int_eq(ev_offsets_see(o, &m, &first), 0);
    json_t *marked = ev_offsets_marked(o);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(marked, "msrs.nodes"), "0")), 4);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(marked, "msrs.nodes"), "1")), 0);
    json_decref(marked);
    ev_offsets_destroy(o);
    o = ev_offsets_new(0); /* began at offset 10 */
    m.partition = 0;
    m.offset = 10;
    ck_assert_int_eq(ev_offsets_see(o, &m, NULL), 0);
    m.offset = 12;
    ck_assert_int_eq(ev_offsets_see(o, &m, NULL), 1);
    ev_offsets_destroy(o);
    ev_offsets_destroy(NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("projection");
    TCase *tc = tcase_create("projection");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, folds_to_the_end_with_positions);
    tcase_add_test(tc, the_oldest_record_folded_gives_the_lag_in_time);
    tcase_add_test(tc, an_undecodable_record_is_skipped_and_named);
    tcase_add_test(tc, a_hole_in_the_offsets_is_counted_and_named);
    tcase_add_test(tc, limit_and_until_leave_later_records_out);
    tcase_add_test(tc, run_checks_once_caught_up_and_writes_the_state_file);
    tcase_add_test(tc, bad_arguments_are_refused);
    tcase_add_test(tc, offsets_name_holes_per_partition);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
