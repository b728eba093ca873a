/* The log conformance suite. The same tests run against every backend:
 * MSRS_TEST_BACKEND=sqlite uses a fresh SQLite file per test;
 * MSRS_TEST_BACKEND=kafka uses MSRS_TEST_LOG (a msrs-mockbroker started by
 * with-mockbroker.sh) with a fresh topic prefix per test. Producers and
 * consumers that must restart or die are real processes (log_producer,
 * msrs-tail). */
#include "testutil.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char uri[1024], prefix[64], *dir;

/* A disk that fails a write-back: while fail_sync_suffix is set, fdatasync
 * of a file whose path ends with it fails with EIO, as the kernel reports
 * a page it could not write. Defined here, it is the process's fdatasync
 * (libevents is linked in statically, and the executable's symbol comes
 * before libc's for SQLite too); the real one otherwise. There is no
 * failing block device on these machines (no dm-error, no loop devices). */
static const char *fail_sync_suffix;

int fdatasync(int fd)
{
    static int (*real)(int);
    const char *suffix = __atomic_load_n(&fail_sync_suffix, __ATOMIC_ACQUIRE);
    if (suffix) {
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof(path) - 1);
        size_t sl = strlen(suffix);
        if (n >= (ssize_t)sl && memcmp(path + n - sl, suffix, sl) == 0) {
            errno = EIO;
            return -1;
        }
    }
    int (*f)(int) = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
    if (!f) { /* the syncer and the checkpointer may both come first: same answer */
        *(void **)&f = dlsym(RTLD_NEXT, "fdatasync");
        __atomic_store_n(&real, f, __ATOMIC_RELEASE);
    }
    return f(fd);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static int is_sqlite;

static void setup(void)
{
    char id[EV_ID_MAX];
    ev_new_id(id);
    snprintf(prefix, sizeof(prefix), "t%.8s.", id);
    is_sqlite =
        strcmp(getenv("MSRS_TEST_BACKEND") ? getenv("MSRS_TEST_BACKEND") : "sqlite", "sqlite") == 0;
    dir = tu_tmpdir("log");
    if (is_sqlite) {
        snprintf(uri, sizeof(uri), "sqlite:%s/log.db", dir);
    } else {
        const char *l = getenv("MSRS_TEST_LOG");
        ck_assert_msg(l != NULL, "MSRS_TEST_LOG is not set (run through with-mockbroker.sh)");
        snprintf(uri, sizeof(uri), "%s", l);
    }
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* The test's log, with one more config key set when key is not NULL. */
static ev_log *open_log_set(const char *key, const char *value)
{
    char err[512];
    ev_log *log;
    ev_conf *c = ev_conf_new();
    ev_conf_set(c, "log", uri);
    ev_conf_set(c, "topic.prefix", prefix);
    if (key)
        ev_conf_set(c, key, value);
    ck_assert_msg(ev_log_open(&log, c, err, sizeof(err)) == 0, "%s", err);
    ev_conf_destroy(c);
    return log;
}

static ev_log *open_log(void)
{
    return open_log_set(NULL, NULL);
}

static const char *topic(ev_log *log, const char *name)
{
    static char buf[4][320];
    static int i;
    i = (i + 1) % 4;
    return ev_log_topic(log, name, buf[i], sizeof(buf[i]));
}

/* Emits a SyncMark with mark_id = seq on key; time_ns 0 = now. */
static void emit_mark(ev_log *log, ev_codec *codec, const char *key, long seq, int64_t time_ns)
{
    char json[256], err[512];
    snprintf(json, sizeof(json), "{\"session_id\": \"%s\", \"mark_id\": \"%ld\"}", key, seq);
    ev_emit_opts o = {.time_ns = time_ns};
    ck_assert_msg(ev_log_emit(log, ev_schema_by_name("SyncMark"), key,
                              tu_value(codec, "SyncMark", json), &o, err, sizeof(err)) == 0,
                  "%s", err);
}

/* Polls until EV_ERR_END (or limit); calls fn for each record. */
static long drain(ev_log *log, ev_codec *codec, void (*fn)(void *, const ev_event *), void *opaque,
                  int max_wait_ms)
{
    char err[512];
    long n = 0;
    int waited = 0;
    for (;;) {
        const ev_msg *m;
        int rc = ev_log_poll(log, 100, &m, err, sizeof(err));
        if (rc == EV_ERR_END)
            return n;
        if (rc == EV_ERR_TIMED_OUT) {
            waited += 100;
            ck_assert_msg(waited < max_wait_ms, "no end of log after %d ms (%ld records)", waited,
                          n);
            continue;
        }
        ck_assert_msg(rc == 0, "poll: %s", err);
        ev_event ev;
        ck_assert_msg(ev_event_decode(codec, m, &ev, err, sizeof(err)) == 0, "%s", err);
        if (fn)
            fn(opaque, &ev);
        n++;
    }
}

static long mark_seq(const ev_event *ev)
{
    avro_value_t f;
    const char *s;
    size_t len;
    avro_value_get_by_name(ev->value, "mark_id", &f, NULL);
    avro_value_get_string(&f, &s, &len);
    return atol(s);
}

static const char *mark_key(const ev_event *ev)
{
    avro_value_t f;
    const char *s;
    size_t len;
    avro_value_get_by_name(ev->value, "session_id", &f, NULL);
    avro_value_get_string(&f, &s, &len);
    return s;
}

/* ------------------------------------------------------------ ordering */

/* Marks of key "s" in order 0, 1, 2, ... each once. */
static void check_marks_in_order(void *opaque, const ev_event *ev)
{
    long *next = opaque;
    ck_assert_str_eq(mark_key(ev), "s");
    ck_assert_int_eq(mark_seq(ev), *next);
    (*next)++;
}

#define KEYS    8
#define PER_KEY 250

typedef struct order_ctx {
    long next[KEYS];
    long total;
} order_ctx;

static void check_order(void *opaque, const ev_event *ev)
{
    order_ctx *c = opaque;
    int k = atoi(mark_key(ev) + 1);
    ck_assert_int_lt(k, KEYS);
    ck_assert_msg(mark_seq(ev) == c->next[k], "key k%d: got %ld, expected %ld", k, mark_seq(ev),
                  c->next[k]);
    ck_assert_uint_eq(ev->msg->key_len, strlen(mark_key(ev)));
    ck_assert(memcmp(ev->msg->key, mark_key(ev), ev->msg->key_len) == 0);
    c->next[k]++;
    c->total++;
}

START_TEST(ordered_per_key)
{
    char err[512], key[8];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (long i = 0; i < PER_KEY; i++)
        for (int k = 0; k < KEYS; k++) {
            snprintf(key, sizeof(key), "k%d", k);
            emit_mark(log, codec, key, i, 0);
        }
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    const char *t = topic(log, "sessions");
    ck_assert_msg(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)) == 0,
                  "%s", err);
    order_ctx c = {{0}, 0};
    drain(log, codec, check_order, &c, 20000);
    ck_assert_int_eq(c.total, KEYS * PER_KEY);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

/* ------------------------------------------------- cursor across processes */

/* Runs msrs-tail as the cursor's consumer process; returns the mark_ids it
 * printed, appended to seen[] (count in *n). */
static void tail_process(const char *cursor, int max, long *seen, int *n)
{
    char cmd[2048], line[4096];
    snprintf(cmd, sizeof(cmd), "%s --log '%s' -X topic.prefix=%s --topic sessions --cursor %s %s%d",
             tu_bin("msrs-tail"), uri, prefix, cursor, max > 0 ? "--max " : "", max > 0 ? max : 0);
    if (max <= 0)
        cmd[strlen(cmd) - 1] = '\0'; /* drop the "0" */
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    while (fgets(line, sizeof(line), p)) {
        json_t *j = json_loads(line, 0, NULL);
        ck_assert_msg(j != NULL, "msrs-tail printed: %s", line);
        const char *m = json_string_value(json_object_get(json_object_get(j, "value"), "mark_id"));
        ck_assert_ptr_nonnull(m);
        seen[(*n)++] = atol(m);
        json_decref(j);
    }
    ck_assert_int_eq(pclose(p), 0);
}

START_TEST(cursor_resumes_after_process_restart)
{
    char err[512];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (long i = 0; i < 30; i++)
        emit_mark(log, codec, "s1", i, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    long seen[64];
    int n = 0;
    tail_process("c1", 10, seen, &n);
    ck_assert_int_eq(n, 10);
    tail_process("c1", 10, seen, &n);
    ck_assert_int_eq(n, 20);
    tail_process("c1", 0, seen, &n); /* the rest, then stop at the end */
    ck_assert_int_eq(n, 30);
    for (int i = 0; i < 30; i++)
        ck_assert_int_eq(seen[i], i); /* one key: one partition: in order, none twice */
    /* Another cursor starts from the beginning. */
    n = 0;
    tail_process("c2", 5, seen, &n);
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(seen[0], 0);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

/* ------------------------------------------------------------------ lag */

/* A consumer's lag is what the log holds beyond what it read: 12 records
 * behind while it has read 8 of 20 (once the backend knows the end: Kafka
 * learns it with its first fetch), 0 at the end, 5 again after 5 more. */
START_TEST(lag_is_what_is_left_to_read)
{
    char err[512];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (long i = 0; i < 20; i++)
        emit_mark(log, codec, "s1", i, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    const char *topics[1] = {topic(log, "sessions")};
    ck_assert_msg(
        ev_log_assign(log, topics, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)) == 0, "%s",
        err);
    int64_t lag = -1;
    const ev_msg *m;
    for (int read = 0; read < 8;) {
        int rc = ev_log_poll(log, 1000, &m, err, sizeof(err));
        ck_assert_msg(rc == 0 || rc == EV_ERR_TIMED_OUT, "poll: %d %s", rc, err);
        read += rc == 0;
    }
    ck_assert_msg(ev_log_lag(log, &lag, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(lag, 12);
    drain(log, codec, NULL, NULL, 30000);
    ck_assert_int_eq(ev_log_lag(log, &lag, err, sizeof(err)), 0);
    ck_assert_int_eq(lag, 0);
    for (long i = 20; i < 25; i++)
        emit_mark(log, codec, "s1", i, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    int64_t until = mono_ms() + 10000; /* Kafka: its next fetch brings the new end */
    do
        ck_assert_int_eq(ev_log_lag(log, &lag, err, sizeof(err)), 0);
    while (lag != 5 && mono_ms() < until && (usleep(50000), 1));
    ck_assert_int_eq(lag, 5);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

/* -------------------------------------------------------- seek by time */

typedef struct time_ctx {
    long count, min_seq;
    int64_t min_ts;
} time_ctx;

static void collect_time(void *opaque, const ev_event *ev)
{
    time_ctx *c = opaque;
    long s = mark_seq(ev);
    if (c->count == 0 || s < c->min_seq)
        c->min_seq = s;
    if (c->count == 0 || ev->msg->timestamp_ms < c->min_ts)
        c->min_ts = ev->msg->timestamp_ms;
    c->count++;
}

START_TEST(seek_by_time)
{
    char err[512], key[8];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    int64_t t0_ms = ev_now_ns() / 1000000 - 60000;
    for (long i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%ld", i % 5);
        emit_mark(log, codec, key, i, (t0_ms + i * 10) * 1000000LL);
    }
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    const char *t = topic(log, "sessions");
    ck_assert_msg(
        ev_log_assign(log, &t, 1, (ev_from){EV_FROM_TIME, t0_ms + 250}, err, sizeof(err)) == 0,
        "%s", err);
    time_ctx c = {0, 0, 0};
    drain(log, codec, collect_time, &c, 20000);
    ck_assert_int_eq(c.count, 25);
    ck_assert_int_eq(c.min_seq, 25);
    ck_assert_int_eq(c.min_ts, t0_ms + 250);
    ev_log_destroy(log);
    /* A time after every record: nothing, and the end. */
    log = open_log();
    ck_assert_int_eq(
        ev_log_assign(log, &t, 1, (ev_from){EV_FROM_TIME, t0_ms + 100000}, err, sizeof(err)), 0);
    ck_assert_int_eq(drain(log, codec, NULL, NULL, 20000), 0);
    ev_log_destroy(log);
    /* By offset: sqlite has one partition, so offset 40 leaves 10. */
    if (is_sqlite) {
        log = open_log();
        ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_OFFSET, 40}, err, sizeof(err)),
                         0);
        ck_assert_int_eq(drain(log, codec, NULL, NULL, 20000), 10);
        ev_log_destroy(log);
    }
    ev_codec_destroy(codec);
}
END_TEST

/* ------------------------------------------------ redelivery tolerated */

static void fold(void *opaque, const ev_event *ev)
{
    char err[256];
    ck_assert_int_ge(ev_state_apply(opaque, ev, err, sizeof(err)), 0);
}

START_TEST(redelivery_is_tolerated)
{
    char err[512], json[256];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (int i = 0; i < 20; i++) {
        snprintf(json, sizeof(json), "{\"node_id\": \"n%d\", \"device_count\": %d}", i % 3, i);
        char key[8];
        snprintf(key, sizeof(key), "n%d", i % 3);
        ck_assert_int_eq(ev_log_emit(log, ev_schema_by_name("NodeHeartbeat"), key,
                                     tu_value(codec, "NodeHeartbeat", json), NULL, err,
                                     sizeof(err)),
                         0);
    }
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);

    const char *t = topic(log = open_log(), "nodes");
    ev_state *state = ev_state_new();
    ck_assert_int_eq(ev_log_subscribe(log, "r", &t, 1, err, sizeof(err)), 0);
    ck_assert_int_eq(drain(log, codec, fold, state, 30000), 20);
    json_t *once = ev_state_to_json(state);
    char *once_text = json_dumps(json_object_get(once, "nodes"), JSON_SORT_KEYS);
    ev_log_destroy(log); /* no commit: everything comes again */

    t = topic(log = open_log(), "nodes");
    ck_assert_int_eq(ev_log_subscribe(log, "r", &t, 1, err, sizeof(err)), 0);
    ck_assert_int_eq(drain(log, codec, fold, state, 30000), 20);
    json_t *twice = ev_state_to_json(state);
    char *twice_text = json_dumps(json_object_get(twice, "nodes"), JSON_SORT_KEYS);
    ck_assert_str_eq(once_text, twice_text);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(twice, "events"), "duplicates")), 20);
    ck_assert_int_eq(ev_log_commit(log, err, sizeof(err)), 0);
    ev_log_destroy(log);

    t = topic(log = open_log(), "nodes");
    ck_assert_int_eq(ev_log_subscribe(log, "r", &t, 1, err, sizeof(err)), 0);
    ck_assert_int_eq(drain(log, codec, NULL, NULL, 30000), 0); /* committed: nothing left */
    ev_log_destroy(log);
    free(once_text);
    free(twice_text);
    json_decref(once);
    json_decref(twice);
    ev_state_destroy(state);
    ev_codec_destroy(codec);
}
END_TEST

/* --------------------------------------------- producer processes */

/* Starts log_producer; returns its pid and a FILE on its stdout. */
static pid_t spawn_producer(const char *keyprefix, long count, long every, FILE **out)
{
    int fd[2];
    char c[32], e[32];
    ck_assert_int_eq(pipe(fd), 0);
    snprintf(c, sizeof(c), "%ld", count);
    snprintf(e, sizeof(e), "%ld", every);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl(tu_bin("log_producer"), "log_producer", uri, prefix, keyprefix, c, e, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    *out = fdopen(fd[0], "r");
    return pid;
}

typedef struct kill_ctx {
    char *seen; /* per seq: times seen */
    long max;
} kill_ctx;

static void count_seen(void *opaque, const ev_event *ev)
{
    kill_ctx *c = opaque;
    long s = mark_seq(ev);
    ck_assert_int_lt(s, c->max);
    c->seen[s]++;
}

START_TEST(sigkill_loses_no_acknowledged_record)
{
    const long total = 2000000, every = 500;
    FILE *out;
    char line[128];
    long acked = 0;
    pid_t pid = spawn_producer("s", total, every, &out);
    /* Let it acknowledge a few batches, then kill it mid-stream. */
    while (acked < 20 * every && fgets(line, sizeof(line), out))
        acked = atol(line + 6);
    ck_assert_int_ge(acked, 20 * every);
    kill(pid, SIGKILL);
    while (fgets(line, sizeof(line), out)) /* acks printed before the kill landed */
        acked = atol(line + 6);
    fclose(out);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    kill_ctx c = {calloc((size_t)total, 1), total};
    const char *t = topic(log, "sessions");
    char err[512];
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    long n = drain(log, codec, count_seen, &c, 30000); /* every record decodes: none partial */
    ck_assert_int_ge(n, acked);
    for (long i = 0; i < acked; i++)
        ck_assert_msg(c.seen[i] == 1, "acknowledged record %ld seen %d times", i, c.seen[i]);
    for (long i = acked; i < total; i++)
        ck_assert_int_le(c.seen[i], 1);
    free(c.seen);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

START_TEST(concurrent_producer_processes)
{
    const long count = 5000;
    FILE *o1, *o2;
    char line[128];
    pid_t p1 = spawn_producer("a", count, 100, &o1), p2 = spawn_producer("b", count, 100, &o2);
    while (fgets(line, sizeof(line), o1)) {
    }
    while (fgets(line, sizeof(line), o2)) {
    }
    fclose(o1);
    fclose(o2);
    int s1, s2;
    waitpid(p1, &s1, 0);
    waitpid(p2, &s2, 0);
    ck_assert(WIFEXITED(s1) && WEXITSTATUS(s1) == 0);
    ck_assert(WIFEXITED(s2) && WEXITSTATUS(s2) == 0);

    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    kill_ctx a = {calloc((size_t)count, 1), count};
    const char *t = topic(log, "sessions");
    char err[512];
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    /* Both producers' records: each seq appears twice (once per producer). */
    long n = drain(log, codec, count_seen, &a, 30000);
    ck_assert_int_eq(n, 2 * count);
    for (long i = 0; i < count; i++)
        ck_assert_int_eq(a.seen[i], 2);
    free(a.seen);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

START_TEST(many_processes_open_a_new_log_at_once)
{
    /* Regression: two processes switching a new SQLite file to WAL at the
     * same moment got "database is locked" at once (no busy wait). */
    enum { N = 8 };
    FILE *out[N];
    pid_t pid[N];
    char line[128], key[8];
    if (_i == 1) { /* the second run: a 0-byte file, which every writer may make a log */
        if (!is_sqlite)
            return;
        char path[1100];
        snprintf(path, sizeof(path), "%s/log.db", dir);
        fclose(fopen(path, "wb"));
    }
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "p%d-", i);
        pid[i] = spawn_producer(key, 10, 10, &out[i]);
    }
    for (int i = 0; i < N; i++) {
        int status;
        while (fgets(line, sizeof(line), out[i])) {
        }
        fclose(out[i]);
        waitpid(pid[i], &status, 0);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer %d failed", i);
    }
}
END_TEST

/* ------------------------------------------------------- backlog */

START_TEST(a_blocked_writer_keeps_records_queued_and_retries)
{
    /* SQLite: another connection holds the write lock longer than the
     * writer's busy timeout. Records stay queued (the backlog says so and
     * names the error), flush times out or reports it, and once the lock is
     * released every record is written exactly once. */
    if (!is_sqlite)
        return; /* the mock broker cannot be blocked from outside */
    char err[512], path[1100];
    ev_log *log = open_log_set("sqlite.busy_timeout_ms", "50");
    ev_codec *codec = ev_codec_new();
    emit_mark(log, codec, "s", 0, 0); /* creates the table */
    ck_assert_msg(ev_log_flush(log, 10000, err, sizeof(err)) == 0, "%s", err);

    sqlite3 *other;
    snprintf(path, sizeof(path), "%s/log.db", dir);
    ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    for (long i = 1; i <= 100; i++)
        emit_mark(log, codec, "s", i, 0);
    int64_t records = 0, bytes = 0;
    int rc = EV_ERR_TIMED_OUT;
    for (int i = 0; i < 100 && rc != EV_ERR_IO; i++) {
        rc = ev_log_backlog(log, &records, &bytes, err, sizeof(err));
        usleep(20000);
    }
    ck_assert_msg(rc == EV_ERR_IO && strstr(err, "locked") != NULL, "backlog rc %d: %s", rc, err);
    ck_assert_int_eq(records, 100);
    ck_assert_int_gt(bytes, 100 * 20);
    rc = ev_log_flush(log, 300, err, sizeof(err));
    ck_assert_msg(rc == EV_ERR_IO || rc == EV_ERR_TIMED_OUT, "flush while blocked: %d %s", rc, err);
    ck_assert_msg(strstr(err, "100 records") != NULL, "%s", err);

    ck_assert_int_eq(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    ck_assert_msg(ev_log_flush(log, 10000, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ev_log_backlog(log, &records, &bytes, err, sizeof(err)), 0);
    ck_assert_int_eq(records, 0);
    ck_assert_int_eq(bytes, 0);
    const char *t = topic(log, "sessions");
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    long next = 0;
    ck_assert_int_eq(drain(log, codec, check_marks_in_order, &next, 10000), 101);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

START_TEST(the_wal_stays_bounded_under_a_writer_that_never_pauses)
{
    /* SQLite: checkpoints run on their own thread (docs/log.md), so the
     * writer never stops for one; 32 MB committed 50 records at a time, one
     * commit after another, with sqlite.wal_autocheckpoint 16 pages, leave
     * the WAL bounded (4 x 16 pages, and the commits made while a restart
     * waited for a checkpoint in progress: 8.6 MB here, not all 65 MB of
     * pages), the main file holding what was written, and every record
     * readable. */
    if (!is_sqlite)
        return;
    char err[512], path[1100];
    ev_log *log = open_log_set("sqlite.wal_autocheckpoint", "16");
    const char *t = topic(log, "media");
    static unsigned char value[8192];
    int64_t wal_max = 0;
    struct stat st;
    snprintf(path, sizeof(path), "%s/log.db-wal", dir);
    for (int i = 0; i < 4000; i++) {
        memset(value, i & 0xff, sizeof(value));
        ck_assert_msg(
            ev_log_produce(log, t, "k", 1, value, sizeof(value), NULL, 0, 0, err, sizeof(err)) == 0,
            "%s", err);
        if (i % 50 == 49) { /* commits of ~0.8 MB, one after another; the last at i 3999 */
            ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
            if (stat(path, &st) == 0 && st.st_size > wal_max)
                wal_max = st.st_size;
        }
    }
    ck_assert_msg(wal_max < 24 << 20,
                  /* 8.6 MB measured; 65 MB with no restart */ "the WAL grew to %lld bytes",
                  (long long)wal_max);
    snprintf(path, sizeof(path), "%s/log.db", dir);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_msg(st.st_size > 16 << 20, "the main file holds %lld bytes: checkpoints did not run",
                  (long long)st.st_size);
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    long n = 0;
    const ev_msg *m;
    int64_t deadline = mono_ms() + 20000;
    while (n < 4000 && mono_ms() < deadline) {
        int rc = ev_log_poll(log, 100, &m, err, sizeof(err));
        ck_assert_msg(rc == 0 || rc == EV_ERR_TIMED_OUT || rc == EV_ERR_END, "poll %d: %s", rc,
                      err);
        if (rc == 0) {
            ck_assert_uint_eq(m->value_len, sizeof(value));
            ck_assert_uint_eq(((const unsigned char *)m->value)[0], (unsigned char)(n & 0xff));
            n++;
        }
    }
    ck_assert_int_eq(n, 4000);
    ev_log_destroy(log);
}
END_TEST

/* ------------------------------------------------------- bad input */

START_TEST(bad_input_is_refused_and_nothing_lost)
{
    char err[512];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    emit_mark(log, codec, "s", 0, 0);
    ck_assert_int_eq(
        ev_log_produce(log, "bad topic!", "k", 1, "v", 1, NULL, 0, 0, err, sizeof(err)),
        EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "bad topic!") != NULL, "%s", err);
    ck_assert_int_eq(
        ev_log_emit(log, ev_schema_by_name("SyncMark"), "",
                    tu_value(codec, "SyncMark", "{\"session_id\": \"s\", \"mark_id\": \"x\"}"),
                    NULL, err, sizeof(err)),
        EV_ERR_INVALID);
    const ev_msg *m;
    ck_assert_int_eq(ev_log_poll(log, 0, &m, err, sizeof(err)), EV_ERR_INVALID);
    /* A record that is not ours (garbage bytes, no headers) is stored and
     * read back; decoding it fails clearly; the next one is fine. */
    const char *t = topic(log, "sessions");
    ck_assert_int_eq(ev_log_produce(log, t, "s", 1, "\x00\x00\x00\x03\xe7garbage", 12, NULL, 0, 0,
                                    err, sizeof(err)),
                     0);
    emit_mark(log, codec, "s", 1, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    ck_assert_int_eq(ev_log_commit(log, err, sizeof(err)), EV_ERR_INVALID);
    int ok = 0, bad = 0;
    for (;;) {
        int rc = ev_log_poll(log, 5000, &m, err, sizeof(err));
        if (rc == EV_ERR_END)
            break;
        ck_assert_int_eq(rc, 0);
        ev_event ev;
        rc = ev_event_decode(codec, m, &ev, err, sizeof(err));
        if (rc == 0)
            ok++;
        else {
            ck_assert_int_eq(rc, EV_ERR_UNKNOWN_SCHEMA);
            ck_assert_msg(strstr(err, "999") != NULL, "%s", err);
            bad++;
        }
    }
    ck_assert_int_eq(ok, 2);
    ck_assert_int_eq(bad, 1);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
}
END_TEST

/* ------------------------------------------------------------ integrity */

static ev_log *open_log_with(const char *u, const char *read_only, char *err, size_t n, int *rc)
{
    ev_log *log = NULL;
    ev_conf *c = ev_conf_new();
    ev_conf_set(c, "log", u);
    ev_conf_set(c, "topic.prefix", prefix);
    ev_conf_set(c, "sqlite.busy_timeout_ms", "2000");
    if (read_only)
        ev_conf_set(c, "log.read_only", read_only);
    *rc = ev_log_open(&log, c, err, n);
    ev_conf_destroy(c);
    return log;
}

/* sqlite3 on the test's log file, or on path when given. */
static sqlite3 *raw_db(const char *path)
{
    char buf[1100];
    sqlite3 *db;
    snprintf(buf, sizeof(buf), "%s/log.db", dir);
    ck_assert_int_eq(sqlite3_open(path ? path : buf, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

START_TEST(a_corrupt_page_stops_the_reader_once)
{
    /* Found by a fault injector: a zeroed page in a topic's table made
     * every poll fail with "database disk image is malformed" as a
     * retriable error, so readers spun on it forever. */
    if (!is_sqlite)
        return;
    char err[2048], path[1100], table[400];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (long i = 0; i < 3000; i++)
        emit_mark(log, codec, "s", i, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);

    /* Everything into the main file, then zero the table's root page. */
    sqlite3 *db = raw_db(NULL);
    snprintf(table, sizeof(table), "t:%ssessions", prefix);
    sqlite3_stmt *s;
    ck_assert_int_eq(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_prepare_v2(db,
                           "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM "
                           "sqlite_master WHERE name = ?",
                           -1, &s, NULL),
        SQLITE_OK);
    sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    long root = sqlite3_column_int(s, 0), page = sqlite3_column_int(s, 1);
    sqlite3_finalize(s);
    sqlite3_close(db);
    snprintf(path, sizeof(path), "%s/log.db", dir);
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    char *zero = calloc(1, (size_t)page);
    ck_assert_int_eq(fseek(f, (root - 1) * page, SEEK_SET), 0);
    ck_assert_int_eq(fwrite(zero, 1, (size_t)page, f), (size_t)page);
    fclose(f);
    free(zero);

    /* A reader and a writer's reader alike: one fatal error naming the
     * file and the table, the same on every later poll, within seconds. */
    const char *modes[2] = {"true", "false"};
    for (int k = 0; k < 2; k++) {
        int rc;
        log = open_log_with(uri, modes[k], err, sizeof(err), &rc);
        ck_assert_msg(rc == 0, "open (read_only %s): %s", modes[k], err);
        const char *t = topic(log, "sessions");
        ck_assert_int_eq(
            ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)), 0);
        int64_t t0 = mono_ms();
        const ev_msg *m;
        while ((rc = ev_log_poll(log, 100, &m, err, sizeof(err))) == 0)
            ;
        ck_assert_msg(rc == EV_ERR_FATAL, "poll: %d %s", rc, err);
        ck_assert_int_lt(mono_ms() - t0, 3000);
        ck_assert_msg(strstr(err, path) && strstr(err, table) && strstr(err, "malformed"), "%s",
                      err);
        ck_assert_int_eq(ev_log_poll(log, 100, &m, err, sizeof(err)), EV_ERR_FATAL);
        ck_assert_msg(strstr(err, table) != NULL, "%s", err);
        ev_log_destroy(log);
    }
    ev_codec_destroy(codec);
}
END_TEST

START_TEST(a_file_that_is_not_an_msrs_log_is_refused)
{
    /* Found by a fault injector: a 0-byte file was read as an empty log,
     * and the reader wrote the schema into it. */
    if (!is_sqlite)
        return;
    char err[2048], path[1100], u[1200];
    int rc;
    ev_log *log;

    /* 0 bytes: a reader refuses it and leaves it 0 bytes. */
    snprintf(path, sizeof(path), "%s/empty.db", dir);
    fclose(fopen(path, "wb"));
    snprintf(u, sizeof(u), "sqlite:%s", path);
    log = open_log_with(u, "true", err, sizeof(err), &rc);
    ck_assert_msg(rc != 0 && log == NULL, "a reader opened a 0-byte file");
    ck_assert_msg(strstr(err, path) && strstr(err, "not an msrs log"), "%s", err);
    ck_assert_int_eq(file_size(path), 0);

    /* Missing: a reader does not create it. */
    snprintf(path, sizeof(path), "%s/missing.db", dir);
    snprintf(u, sizeof(u), "sqlite:%s", path);
    log = open_log_with(u, "true", err, sizeof(err), &rc);
    ck_assert_msg(rc != 0 && strstr(err, path), "%d %s", rc, err);
    ck_assert_int_eq(file_size(path), -1);

    /* Not SQLite, or another program's database: reader and writer refuse
     * it and leave it as it was. */
    snprintf(path, sizeof(path), "%s/text.db", dir);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 200; i++)
        fputs("not a database at all, just text\n", f);
    fclose(f);
    long size = file_size(path);
    snprintf(u, sizeof(u), "sqlite:%s", path);
    for (int k = 0; k < 2; k++) {
        log = open_log_with(u, k ? "false" : "true", err, sizeof(err), &rc);
        ck_assert_msg(rc != 0 && log == NULL, "opened a text file (read_only %d)", !k);
        ck_assert_msg(strstr(err, path) && strstr(err, "not an msrs log"), "%s", err);
        ck_assert_int_eq(file_size(path), size);
    }
    snprintf(path, sizeof(path), "%s/other.db", dir);
    sqlite3 *db = raw_db(path);
    ck_assert_int_eq(
        sqlite3_exec(db, "CREATE TABLE x(a); INSERT INTO x VALUES(1);", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    size = file_size(path);
    snprintf(u, sizeof(u), "sqlite:%s", path);
    for (int k = 0; k < 2; k++) {
        log = open_log_with(u, k ? "false" : "true", err, sizeof(err), &rc);
        ck_assert_msg(rc != 0 && log == NULL, "opened another database (read_only %d)", !k);
        ck_assert_msg(strstr(err, path) && strstr(err, "no msrs_log table"), "%s", err);
        ck_assert_int_eq(file_size(path), size);
    }

    /* A writer makes a 0-byte file a log; then a reader reads it and
     * refuses to write. */
    snprintf(path, sizeof(path), "%s/empty.db", dir);
    snprintf(u, sizeof(u), "sqlite:%s", path);
    log = open_log_with(u, NULL, err, sizeof(err), &rc);
    ck_assert_msg(rc == 0, "a writer refused a 0-byte file: %s", err);
    ev_codec *codec = ev_codec_new();
    emit_mark(log, codec, "s", 0, 0);
    ck_assert_msg(ev_log_flush(log, 10000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);
    log = open_log_with(u, "true", err, sizeof(err), &rc);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(
        ev_log_produce(log, topic(log, "sessions"), "k", 1, "v", 1, NULL, 0, 0, err, sizeof(err)),
        EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "read-only") != NULL, "%s", err);
    const char *t = topic(log, "sessions");
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    ck_assert_int_eq(drain(log, codec, NULL, NULL, 10000), 1);
    ev_log_destroy(log);
    ev_codec_destroy(codec);
}
END_TEST

START_TEST(bit_flips_in_stored_records_are_detected)
{
    /* Found by a fault injector: 125 of 200 random bit flips in stored
     * records decoded silently as other values. */
    if (!is_sqlite)
        return;
    enum { VALUES = 200, KEYS_ = 20, HEADERS = 20, TOTAL = VALUES + KEYS_ + HEADERS + 10 };
    char err[2048], sql[600];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (long i = 0; i < TOTAL; i++)
        emit_mark(log, codec, "s", i, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);

    /* One random bit of one column flipped in each of the first rows:
     * values, then keys, then headers; the last 10 rows are left alone. */
    sqlite3 *db = raw_db(NULL);
    srand(20261122);
    for (long off = 0; off < VALUES + KEYS_ + HEADERS; off++) {
        const char *col = off < VALUES ? "value" : off < VALUES + KEYS_ ? "key" : "headers";
        sqlite3_stmt *get, *put;
        snprintf(sql, sizeof(sql), "SELECT %s FROM \"t:%ssessions\" WHERE offset = %ld", col,
                 prefix, off);
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &get, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(get), SQLITE_ROW);
        int len = sqlite3_column_bytes(get, 0);
        ck_assert_int_gt(len, 0);
        unsigned char *b = malloc((size_t)len);
        memcpy(b, sqlite3_column_blob(get, 0), (size_t)len);
        sqlite3_finalize(get);
        int bit = rand() % (len * 8);
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        snprintf(sql, sizeof(sql), "UPDATE \"t:%ssessions\" SET %s = ? WHERE offset = %ld", prefix,
                 col, off);
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &put, NULL), SQLITE_OK);
        sqlite3_bind_blob(put, 1, b, len, SQLITE_TRANSIENT);
        ck_assert_int_eq(sqlite3_step(put), SQLITE_DONE);
        sqlite3_finalize(put);
        free(b);
    }
    sqlite3_close(db);

    log = open_log();
    const char *t = topic(log, "sessions");
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    long detected = 0, sound = 0, silent = 0;
    for (;;) {
        const ev_msg *m;
        int rc = ev_log_poll(log, 5000, &m, err, sizeof(err));
        if (rc == EV_ERR_END)
            break;
        if (rc == EV_ERR_CORRUPT) {
            char at[64];
            snprintf(at, sizeof(at), "offset %lld", (long long)m->offset);
            ck_assert_msg(strstr(err, t) && strstr(err, at) && strstr(err, "checksum"), "%s", err);
            ck_assert_int_eq(m->partition, 0);
            ck_assert_int_lt(m->offset, VALUES + KEYS_ + HEADERS);
            detected++;
            continue;
        }
        ck_assert_msg(rc == 0, "poll: %d %s", rc, err);
        if (m->offset < VALUES + KEYS_ + HEADERS)
            silent++;
        else
            sound++;
    }
    ck_assert_int_eq(silent, 0);
    ck_assert_int_eq(detected, VALUES + KEYS_ + HEADERS);
    ck_assert_int_eq(sound, 10);
    ck_assert_int_eq(ev_log_unchecked(log), 0);
    ev_log_destroy(log);

    /* A projection skips them, counts and names each. */
    log = open_log();
    ev_state *state = ev_state_new();
    ev_projection *p;
    const char *sessions = "sessions";
    ck_assert_int_eq(ev_projection_new(&p, log, state, &sessions, 1, NULL, err, sizeof(err)), 0);
    ck_assert_msg(ev_projection_fold(p, NULL, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ev_projection_skipped(p), VALUES + KEYS_ + HEADERS);
    ck_assert_int_eq(ev_projection_records(p), TOTAL);
    ck_assert_int_eq(ev_projection_gaps(p), 0);
    ev_projection_destroy(p);
    ev_state_destroy(state);
    ev_log_destroy(log);
    ev_codec_destroy(codec);
}
END_TEST

/* Reads topic t of log from its beginning to its end: each record's
 * poll answer into rc[offset], its value's length into len[offset] and, for
 * a record read, whether its bytes are pattern(offset); the last corrupt
 * record's error into err. */
static void read_values(ev_log *log, const char *t, int count, int *rc, size_t *len, int *intact,
                        char *err, size_t n)
{
    char e[2048];
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, e, sizeof(e)), 0);
    err[0] = 0;
    for (;;) {
        const ev_msg *m;
        int r = ev_log_poll(log, 5000, &m, e, sizeof(e));
        if (r == EV_ERR_END)
            break;
        ck_assert_msg(r == 0 || r == EV_ERR_CORRUPT, "poll %d: %s", r, e);
        ck_assert_int_lt(m->offset, count);
        rc[m->offset] = r;
        len[m->offset] = m->value_len;
        intact[m->offset] = 1;
        for (size_t i = 0; i < m->value_len; i++)
            if (((const unsigned char *)m->value)[i] != (unsigned char)(m->offset * 31 + i))
                intact[m->offset] = 0;
        if (r)
            snprintf(err, n, "%s", e);
    }
}

START_TEST(large_values_are_written_once_outside_the_wal)
{
    /* SQLite: a value of sqlite.external_value_bytes or more goes to the
     * log's values file, written once (not into the WAL and again by a
     * checkpoint); its row names where. Read back the same, checked by the
     * row's checksum; a flipped, missing or cut-off value is that record's
     * EV_ERR_CORRUPT naming the file, and the records around it are read. */
    if (!is_sqlite)
        return;
    enum { N = 6 };
    const size_t sizes[N] = {100, 4095, 4096, 300000, 10, 70000};
    char err[2048], vpath[1100], u[1200];
    ev_log *log = open_log_set("sqlite.external_value_bytes", "4096");
    const char *t = topic(log, "media");
    static unsigned char value[300000];
    for (int i = 0; i < N; i++) {
        for (size_t k = 0; k < sizes[i]; k++)
            value[k] = (unsigned char)(i * 31 + k);
        ck_assert_msg(
            ev_log_produce(log, t, "k", 1, value, sizes[i], NULL, 0, 0, err, sizeof(err)) == 0,
            "%s", err);
    }
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);
    snprintf(vpath, sizeof(vpath), "%s/log.db-values", dir);
    ck_assert_int_eq(file_size(vpath), 4096 + 300000 + 70000);
    sqlite3 *db = raw_db(NULL);
    sqlite3_stmt *s;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT group_concat(offset) FROM \"t:%smedia\" WHERE value IS NULL AND value_at IS "
             "NOT NULL",
             prefix);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(s, 0), "2,3,5");
    sqlite3_finalize(s);
    sqlite3_close(db);

    /* read back, by a writer's handle and by a read-only one */
    int rc[N], intact[N];
    size_t len[N];
    snprintf(u, sizeof(u), "sqlite:%s/log.db", dir);
    for (int ro = 0; ro < 2; ro++) {
        int orc;
        log = open_log_with(u, ro ? "true" : NULL, err, sizeof(err), &orc);
        ck_assert_msg(orc == 0, "%s", err);
        memset(rc, -1, sizeof(rc));
        read_values(log, topic(log, "media"), N, rc, len, intact, err, sizeof(err));
        for (int i = 0; i < N; i++) {
            ck_assert_int_eq(rc[i], 0);
            ck_assert_uint_eq(len[i], sizes[i]);
            ck_assert_int_eq(intact[i], 1);
        }
        ev_log_destroy(log);
    }

    /* one flipped byte in offset 3's value; then the file cut off inside
     * offset 5's value; then no file */
    FILE *f = fopen(vpath, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 4096 + 1000, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 4096 + 1000, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
    for (int round = 0; round < 3; round++) {
        if (round == 1)
            ck_assert_int_eq(truncate(vpath, 4096 + 300000 + 100), 0);
        if (round == 2)
            ck_assert_int_eq(unlink(vpath), 0);
        int orc;
        log = open_log_with(u, "true", err, sizeof(err), &orc);
        ck_assert_msg(orc == 0, "%s", err);
        memset(rc, -1, sizeof(rc));
        read_values(log, topic(log, "media"), N, rc, len, intact, err, sizeof(err));
        ev_log_destroy(log);
        for (int i = 0; i < N; i++) {
            int bad = i == 3 || (round >= 1 && i == 5) || (round == 2 && i == 2);
            ck_assert_msg(rc[i] == (bad ? EV_ERR_CORRUPT : 0), "round %d offset %d: %d", round, i,
                          rc[i]);
            if (!bad)
                ck_assert_int_eq(intact[i], 1);
        }
        const char *want[3] = {"checksum", "truncated", "cannot be opened"};
        ck_assert_msg(strstr(err, want[round]) != NULL, "round %d: %s", round, err);
        if (round > 0)
            ck_assert_msg(strstr(err, vpath) != NULL, "round %d: %s", round, err);
    }
}
END_TEST

/* The value of record i of producer process child: its length and bytes. */
static size_t shared_len(int i)
{
    return 5000 + (size_t)i * 37;
}

static unsigned char shared_byte(int child, int i, size_t k)
{
    return k == 0   ? (unsigned char)child
           : k == 1 ? (unsigned char)i
                    : (unsigned char)(child * 101 + i * 31 + (int)k);
}

START_TEST(processes_share_the_values_file)
{
    /* SQLite: two processes append large values to one log at once; each
     * appends under the write lock, so every value is read back whole. */
    if (!is_sqlite)
        return;
    enum { PER = 200 };
    pid_t pid[2];
    for (int child = 0; child < 2; child++) {
        pid[child] = fork();
        ck_assert_int_ge(pid[child], 0);
        if (pid[child] == 0) {
            char err[512];
            static unsigned char v[5000 + PER * 37];
            ev_log *log = open_log_set("sqlite.external_value_bytes", "4096");
            const char *t = topic(log, "media");
            int failed = 0;
            for (int i = 0; i < PER && !failed; i++) {
                for (size_t k = 0; k < shared_len(i); k++)
                    v[k] = shared_byte(child, i, k);
                failed = ev_log_produce(log, t, "k", 1, v, shared_len(i), NULL, 0, 0, err,
                                        sizeof(err)) ||
                         (i % 20 == 19 && ev_log_flush(log, 30000, err, sizeof(err)));
            }
            failed = failed || ev_log_flush(log, 30000, err, sizeof(err));
            ev_log_destroy(log);
            _exit(failed);
        }
    }
    for (int child = 0; child < 2; child++) {
        int st;
        waitpid(pid[child], &st, 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    char err[512], vpath[1100];
    int seen[2][PER] = {{0}};
    ev_log *log = open_log();
    const char *t = topic(log, "media");
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)),
                     0);
    for (;;) {
        const ev_msg *m;
        int rc = ev_log_poll(log, 5000, &m, err, sizeof(err));
        if (rc == EV_ERR_END)
            break;
        ck_assert_msg(rc == 0, "poll %d: %s", rc, err);
        const unsigned char *b = m->value;
        ck_assert_uint_ge(m->value_len, 5000);
        int child = b[0], i = (int)(m->value_len - 5000) / 37;
        ck_assert(child < 2 && i < PER && m->value_len == shared_len(i));
        for (size_t k = 0; k < m->value_len; k++)
            ck_assert_uint_eq(b[k], shared_byte(child, i, k));
        seen[child][i]++;
    }
    for (int child = 0; child < 2; child++)
        for (int i = 0; i < PER; i++)
            ck_assert_int_eq(seen[child][i], 1);
    snprintf(vpath, sizeof(vpath), "%s/log.db-values", dir);
    long want = 0;
    for (int i = 0; i < PER; i++)
        want += 2 * (long)shared_len(i);
    ck_assert_int_eq(file_size(vpath), want);
    ev_log_destroy(log);
}
END_TEST

START_TEST(a_log_of_format_1_keeps_its_values_in_their_rows)
{
    /* Readers of an earlier msrs read value from the row only: a log they
     * made (format 1) gets no values file, whatever its writers now are. */
    if (!is_sqlite)
        return;
    char err[512], vpath[1100];
    ev_log *log = open_log();
    ev_log_destroy(log);
    sqlite3 *db = raw_db(NULL);
    ck_assert_int_eq(sqlite3_exec(db, "UPDATE msrs_log SET format = 1", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    snprintf(vpath, sizeof(vpath), "%s/log.db-values", dir);
    unlink(vpath);
    log = open_log();
    static unsigned char value[200000];
    const char *t = topic(log, "media");
    ck_assert_msg(
        ev_log_produce(log, t, "k", 1, value, sizeof(value), NULL, 0, 0, err, sizeof(err)) == 0,
        "%s", err);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);
    ck_assert_int_eq(file_size(vpath), -1);
    db = raw_db(NULL);
    sqlite3_stmt *s;
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT length(value), value_at FROM \"t:%smedia\"", prefix);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(s, 0), (int)sizeof(value));
    ck_assert_int_eq(sqlite3_column_type(s, 1), SQLITE_NULL);
    sqlite3_finalize(s);
    sqlite3_close(db);
}
END_TEST

/* The first byte of each of t's records' values, in offset order, into got
 * (a string, one character a record). */
static void read_keys(ev_log *log, const char *t, char *got, size_t n)
{
    char e[2048];
    size_t i = 0;
    ck_assert_int_eq(ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, e, sizeof(e)), 0);
    for (;;) {
        const ev_msg *m;
        int r = ev_log_poll(log, 5000, &m, e, sizeof(e));
        if (r == EV_ERR_END)
            break;
        ck_assert_msg(r == 0, "poll %d: %s", r, e);
        ck_assert_uint_lt(i, n - 1);
        got[i++] = ((const char *)m->value)[0];
    }
    got[i] = 0;
}

START_TEST(a_failed_sync_is_final_and_named)
{
    /* SQLite: when the syncer's fdatasync fails (of the WAL, or of the
     * values file) the records waiting for it are not acknowledged; the
     * handle refuses every produce and backlog from then on (the kernel may
     * have dropped the pages: a later sync that succeeds proves nothing),
     * each error names the file and the operation; what was acknowledged
     * before is read back after a restart, and a new handle writes again. */
    if (!is_sqlite)
        return;
    const char *files[2] = {"/log.db-wal", "/log.db-values"};
    const size_t sizes[2] = {1, 5000}; /* a value of 5000 bytes goes to -values */
    static char value[5000];
    char err[2048], want[1200], got[16];
    int64_t records, bytes;
    for (int f = 0; f < 2; f++) {
        ev_log *log = open_log_set("sqlite.external_value_bytes", "4096");
        const char *t = topic(log, "media");
        value[0] = (char)('a' + 3 * f);
        ck_assert_msg(
            ev_log_produce(log, t, "k", 1, value, sizes[f], NULL, 0, 0, err, sizeof(err)) == 0,
            "%s", err);
        ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);

        __atomic_store_n(&fail_sync_suffix, files[f], __ATOMIC_RELEASE);
        value[0] = (char)('b' + 3 * f);
        ck_assert_msg(
            ev_log_produce(log, t, "k", 1, value, sizes[f], NULL, 0, 0, err, sizeof(err)) == 0,
            "%s", err);
        ck_assert_int_eq(ev_log_flush(log, 30000, err, sizeof(err)), EV_ERR_IO);
        snprintf(want, sizeof(want), "%s%s: fdatasync: %s", dir, files[f], strerror(EIO));
        ck_assert_msg(strstr(err, want) && strstr(err, "1 records not acknowledged"), "flush: %s",
                      err);
        __atomic_store_n(&fail_sync_suffix, NULL, __ATOMIC_RELEASE); /* the disk is back */
        value[0] = 'x';
        ck_assert_int_eq(ev_log_produce(log, t, "k", 1, value, 1, NULL, 0, 0, err, sizeof(err)),
                         EV_ERR_IO);
        ck_assert_msg(strstr(err, want) && strstr(err, "acknowledges nothing more"), "produce: %s",
                      err);
        ck_assert_int_eq(ev_log_flush(log, 1000, err, sizeof(err)), EV_ERR_IO); /* and again */
        ck_assert_int_eq(ev_log_backlog(log, &records, &bytes, err, sizeof(err)), EV_ERR_IO);
        ck_assert_msg(strstr(err, want) != NULL, "backlog: %s", err);
        ev_log_destroy(log);

        /* restarted: what was acknowledged is there, and the refused one
         * is not; what was committed but never acknowledged may be */
        log = open_log_set("sqlite.external_value_bytes", "4096");
        t = topic(log, "media");
        value[0] = (char)('c' + 3 * f);
        ck_assert_msg(
            ev_log_produce(log, t, "k", 1, value, sizes[f], NULL, 0, 0, err, sizeof(err)) == 0,
            "%s", err);
        ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
        read_keys(log, t, got, sizeof(got));
        ck_assert_msg(strchr(got, 'a' + 3 * f) && strchr(got, 'c' + 3 * f) && !strchr(got, 'x'),
                      "file %s: read %s", files[f], got);
        ev_log_destroy(log);
    }
}
END_TEST

START_TEST(rows_without_a_checksum_are_read_unchecked)
{
    /* A log written before records carried a checksum: its tables have no
     * crc column and it has no msrs_log table. Readers read it (unchecked,
     * counted); the first writer migrates it. */
    if (!is_sqlite)
        return;
    char err[2048], sql[2048], path[1100], u[1200];
    ev_log *log = open_log();
    ev_codec *codec = ev_codec_new();
    for (long i = 0; i < 10; i++)
        emit_mark(log, codec, "s", i, 0);
    ck_assert_msg(ev_log_flush(log, 30000, err, sizeof(err)) == 0, "%s", err);
    ev_log_destroy(log);
    snprintf(path, sizeof(path), "%s/old.db", dir);
    sqlite3 *db = raw_db(path);
    snprintf(sql, sizeof(sql),
             "PRAGMA journal_mode=WAL;"
             "CREATE TABLE msrs_cursors(cursor TEXT NOT NULL, topic TEXT NOT NULL, partition "
             "INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_ms INTEGER, PRIMARY "
             "KEY(cursor, topic, partition));"
             "CREATE TABLE \"t:%ssessions\"(offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, "
             "key BLOB, value BLOB, headers BLOB);"
             "ATTACH '%s/log.db' AS new;"
             "INSERT INTO \"t:%ssessions\" SELECT offset, ts_ms, key, value, headers FROM "
             "new.\"t:%ssessions\";"
             "DETACH new;",
             prefix, dir, prefix, prefix);
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);

    snprintf(u, sizeof(u), "sqlite:%s", path);
    int rc;
    const char *t;
    for (int round = 0; round < 2; round++) {
        /* round 0: a reader; round 1: after a writer added one record */
        log = open_log_with(u, "true", err, sizeof(err), &rc);
        ck_assert_msg(rc == 0, "%s", err);
        t = topic(log, "sessions");
        ck_assert_int_eq(
            ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)), 0);
        long next = 0;
        ck_assert_int_eq(drain(log, codec, check_marks_in_order, &next, 10000), 10 + round);
        ck_assert_int_eq(ev_log_unchecked(log), 10);
        ev_log_destroy(log);
        if (round == 0) {
            log = open_log_with(u, NULL, err, sizeof(err), &rc);
            ck_assert_msg(rc == 0, "%s", err);
            emit_mark(log, codec, "s", 10, 0);
            ck_assert_msg(ev_log_flush(log, 10000, err, sizeof(err)) == 0, "%s", err);
            ev_log_destroy(log);
        }
    }
    db = raw_db(path);
    sqlite3_stmt *s;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT format FROM msrs_log", -1, &s, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(s), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(s, 0), 1); /* its tables were made without value_at */
    sqlite3_finalize(s);
    sqlite3_close(db);
    ev_codec_destroy(codec);
}
END_TEST

/* ------------------------------------------------------------ leadership */

/* Calls ev_log_lead every 50 ms until it returns want (or the deadline);
 * returns the ms it took, or -1. */
static long lead_until(ev_log *log, const char *holder, int want, long ttl_ms, long within_ms,
                       char *leader, size_t leader_size)
{
    char err[512];
    int64_t t0 = mono_ms();
    for (;;) {
        int rc = ev_log_lead(log, "test", holder, ttl_ms, leader, leader_size, err, sizeof(err));
        ck_assert_msg(rc >= 0, "lead: %s", err);
        long took = (long)(mono_ms() - t0);
        if (rc == want)
            return took;
        if (took > within_ms)
            return -1;
        usleep(50000);
    }
}

START_TEST(one_leader_and_failover)
{
    const long ttl = is_sqlite ? 1500 : 6000; /* Kafka's floor: ev.h */
    char leader[600], err[512];
    /* Kafka: the topic "<prefix>leader" must have one partition; the mock
     * broker makes msrs.leader so (auto-created ones get several). */
    if (!is_sqlite)
        snprintf(prefix, sizeof(prefix), "msrs.");
    ev_log *a = open_log(), *b = open_log();
    /* A leads (a Kafka group takes a join round), B does not while A renews. */
    ck_assert_int_ge(lead_until(a, "a@host:1", 1, ttl, 20000, leader, sizeof(leader)), 0);
    ck_assert_str_eq(leader, "a@host:1");
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(lead_until(b, "b@host:2", 1, ttl, 0, leader, sizeof(leader)), -1);
        if (is_sqlite)
            ck_assert_str_eq(leader, "a@host:1");
        ck_assert_int_eq(ev_log_lead(a, "test", "a@host:1", ttl, NULL, 0, err, sizeof(err)), 1);
        usleep(100000);
    }
    /* A resigns: B leads without waiting for the TTL... */
    ck_assert_int_eq(ev_log_resign(a, "test", "a@host:1", err, sizeof(err)), 0);
    long took = lead_until(b, "b@host:2", 1, ttl, 20000, leader, sizeof(leader));
    fprintf(stderr, "%s: leadership moved after a resign in %ld ms\n",
            getenv("MSRS_TEST_BACKEND") ?: "sqlite", took);
    ck_assert_int_ge(took, 0);
    ck_assert_str_eq(leader, "b@host:2");
    ev_log_destroy(b);
    ev_log_destroy(a);

    /* ...and a leader killed with SIGKILL loses it within the TTL (+ one
     * rebalance on Kafka). */
    FILE *out;
    char line[64];
    pid_t child = spawn_producer("--lead", ttl, 200, &out);
    ck_assert_msg(fgets(line, sizeof(line), out) && strcmp(line, "leading\n") == 0,
                  "child did not lead");
    ev_log *c = open_log();
    ck_assert_int_eq(lead_until(c, "c@host:3", 1, ttl, 1000, leader, sizeof(leader)), -1);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    fclose(out);
    took = lead_until(c, "c@host:3", 1, ttl, 20000, leader, sizeof(leader));
    fprintf(stderr, "%s: leadership moved after SIGKILL of the leader in %ld ms (ttl %ld)\n",
            getenv("MSRS_TEST_BACKEND") ?: "sqlite", took, ttl);
    ck_assert_int_ge(took, 0);
    ck_assert_int_le(took, 3 * ttl + 3000);
    ev_log_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create(getenv("MSRS_TEST_BACKEND") ? getenv("MSRS_TEST_BACKEND") : "sqlite");
    TCase *tc = tcase_create("log");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ordered_per_key);
    tcase_add_test(tc, cursor_resumes_after_process_restart);
    tcase_add_test(tc, lag_is_what_is_left_to_read);
    tcase_add_test(tc, seek_by_time);
    tcase_add_test(tc, redelivery_is_tolerated);
    tcase_add_test(tc, sigkill_loses_no_acknowledged_record);
    tcase_add_test(tc, concurrent_producer_processes);
    tcase_add_loop_test(tc, many_processes_open_a_new_log_at_once, 0, 2);
    tcase_add_test(tc, bad_input_is_refused_and_nothing_lost);
    tcase_add_test(tc, a_blocked_writer_keeps_records_queued_and_retries);
    tcase_add_test(tc, the_wal_stays_bounded_under_a_writer_that_never_pauses);
    tcase_add_test(tc, one_leader_and_failover);
    tcase_add_test(tc, a_corrupt_page_stops_the_reader_once);
    tcase_add_test(tc, a_file_that_is_not_an_msrs_log_is_refused);
    tcase_add_test(tc, bit_flips_in_stored_records_are_detected);
    tcase_add_test(tc, rows_without_a_checksum_are_read_unchecked);
    tcase_add_test(tc, large_values_are_written_once_outside_the_wal);
    tcase_add_test(tc, a_log_of_format_1_keeps_its_values_in_their_rows);
    tcase_add_test(tc, processes_share_the_values_file);
    tcase_add_test(tc, a_failed_sync_is_final_and_named);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
