/* log_sqlite.c — the embedded log: one SQLite file in WAL mode.
 *
 * Layout: one table per topic, "t:<topic>"(offset INTEGER PRIMARY KEY,
 * ts_ms, key, value, headers), so an append is a rowid append; a table of
 * named cursors; one partition (0) per topic. Produced records are kept in
 * memory and written in one IMMEDIATE transaction per flush (or when the
 * batch is full), so the write lock is held only while writing and an
 * acknowledged record survives kill -9 (and power loss with
 * sqlite.synchronous=FULL, the default). Readers never block writers. */
#include "log_backend.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SQL_TOPIC_MAX 256

typedef struct pending {
    int topic;     /* index into topics */
    int64_t ts_ms;
    size_t key_off, key_len, value_off, value_len, hdr_off, hdr_len; /* into arena */
} pending;

typedef struct topic_writer {
    char name[SQL_TOPIC_MAX];
    sqlite3_stmt *insert;
    sqlite3_stmt *max_offset;
} topic_writer;

typedef struct topic_reader {
    char name[SQL_TOPIC_MAX];
    int64_t next_offset;  /* next offset to return */
    int64_t committed;    /* what the cursor table holds */
    sqlite3_stmt *select; /* open while rows of a batch remain */
    int batch_rows;       /* rows returned by the open batch */
} topic_reader;

typedef struct sqlite_log {
    char path[1024];
    sqlite3 *wdb, *rdb; /* writer and reader connections */
    int synchronous_full;
    int64_t busy_timeout_ms, batch_max_records, batch_max_bytes;
    /* producer */
    topic_writer *writers;
    size_t writer_count;
    pending *pend;
    size_t pend_count, pend_cap;
    unsigned char *arena;
    size_t arena_len, arena_cap;
    int64_t failed; /* records whose batch could not be written */
    char last_error[256];
    /* consumer */
    topic_reader *readers;
    size_t reader_count, current;
    char cursor[256];
    int end_reported;
    int64_t data_version;
    ev_msg msg;
    ev_header headers[32];
} sqlite_log;

static int db_fail(sqlite_log *l, sqlite3 *db, char *errstr, size_t n, const char *what)
{
    return ev__fail(errstr, n, EV_ERR_IO, "%s: %s: %s", l->path, what, sqlite3_errmsg(db));
}

static int exec(sqlite_log *l, sqlite3 *db, const char *sql, char *errstr, size_t n)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(l, db, errstr, n, sql);
    return 0;
}

/* Runs set-up SQL, retrying while another process holds the lock: switching
 * a new file to WAL can answer SQLITE_BUSY at once, without the busy
 * handler, when two processes open it together. */
static int exec_setup(sqlite_log *l, sqlite3 *db, const char *sql, char *errstr, size_t n)
{
    int64_t deadline = ev__mono_ms() + l->busy_timeout_ms;
    for (int delay_ms = 1;; delay_ms = delay_ms < 50 ? delay_ms * 2 : 50) {
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return db_fail(l, db, errstr, n, sql);
        if (ev__mono_ms() >= deadline)
            return db_fail(l, db, errstr, n, sql);
        struct timespec ts = {0, delay_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int open_db(sqlite_log *l, sqlite3 **db, char *errstr, size_t n)
{
    char sql[256];
    int rc = sqlite3_open_v2(l->path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return ev__fail(errstr, n, EV_ERR_IO, "%s: cannot open: %s", l->path,
                        *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
    sqlite3_busy_timeout(*db, (int)l->busy_timeout_ms);
    snprintf(sql, sizeof(sql),
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=OFF;",
             l->synchronous_full ? "FULL" : "NORMAL");
    if ((rc = exec_setup(l, *db, sql, errstr, n)))
        return rc;
    return exec_setup(l, *db,
                "CREATE TABLE IF NOT EXISTS msrs_cursors(cursor TEXT NOT NULL, topic TEXT NOT NULL,"
                " partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_ms INTEGER,"
                " PRIMARY KEY(cursor, topic, partition));",
                errstr, n);
}

static void sqlite_close(void *impl)
{
    sqlite_log *l = impl;
    if (!l)
        return;
    for (size_t i = 0; i < l->writer_count; i++) {
        sqlite3_finalize(l->writers[i].insert);
        sqlite3_finalize(l->writers[i].max_offset);
    }
    for (size_t i = 0; i < l->reader_count; i++)
        sqlite3_finalize(l->readers[i].select);
    sqlite3_close(l->wdb);
    sqlite3_close(l->rdb);
    free(l->writers);
    free(l->readers);
    free(l->pend);
    free(l->arena);
    free(l);
}

static int sqlite_open(void **impl, const char *scheme, const char *target, const ev_conf *conf,
                       char *errstr, size_t n)
{
    sqlite_log *l;
    const char *sync = ev_conf_get(conf, "sqlite.synchronous", "FULL");
    int rc;

    if (!*target)
        return ev__fail(errstr, n, EV_ERR_INVALID, "log 'sqlite:': expected sqlite:PATH");
    if (strcasecmp(sync, "FULL") != 0 && strcasecmp(sync, "NORMAL") != 0)
        return ev__fail(errstr, n, EV_ERR_INVALID,
                        "config sqlite.synchronous: expected FULL or NORMAL, got '%s'", sync);
    if (!(l = calloc(1, sizeof(*l))))
        return EV_ERR_NOMEM;
    snprintf(l->path, sizeof(l->path), "%s", target);
    l->synchronous_full = strcasecmp(sync, "FULL") == 0;
    if ((rc = ev_conf_get_int(conf, "sqlite.busy_timeout_ms", 30000, &l->busy_timeout_ms, errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.batch.max.records", 10000, &l->batch_max_records, errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.batch.max.bytes", 16 << 20, &l->batch_max_bytes, errstr, n)))
        goto fail;
    if ((rc = open_db(l, &l->wdb, errstr, n)) || (rc = open_db(l, &l->rdb, errstr, n)))
        goto fail;
    *impl = l;
    return 0;
fail:
    sqlite_close(l);
    return rc;
}

/* ------------------------------------------------------------- producer */

static int topic_table(sqlite_log *l, const char *topic, char *errstr, size_t n)
{
    char sql[SQL_TOPIC_MAX * 2 + 256];
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS \"t:%s\"(offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT "
             "NULL, key BLOB, value BLOB, headers BLOB);",
             topic);
    return exec_setup(l, l->wdb, sql, errstr, n);
}

static int writer_for(sqlite_log *l, const char *topic, char *errstr, size_t n)
{
    for (size_t i = 0; i < l->writer_count; i++)
        if (strcmp(l->writers[i].name, topic) == 0)
            return (int)i;
    topic_writer *w = realloc(l->writers, (l->writer_count + 1) * sizeof(*w));
    char sql[SQL_TOPIC_MAX + 128];
    int rc;
    if (!w)
        return EV_ERR_NOMEM;
    l->writers = w;
    w = &l->writers[l->writer_count];
    memset(w, 0, sizeof(*w));
    snprintf(w->name, sizeof(w->name), "%s", topic);
    if ((rc = topic_table(l, topic, errstr, n)))
        return rc;
    snprintf(sql, sizeof(sql), "INSERT INTO \"t:%s\" VALUES(?,?,?,?,?)", topic);
    if (sqlite3_prepare_v3(l->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &w->insert, NULL))
        return db_fail(l, l->wdb, errstr, n, sql);
    snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(offset) + 1, 0) FROM \"t:%s\"", topic);
    if (sqlite3_prepare_v3(l->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &w->max_offset, NULL)) {
        sqlite3_finalize(w->insert);
        return db_fail(l, l->wdb, errstr, n, sql);
    }
    return (int)l->writer_count++;
}

static int arena_put(sqlite_log *l, const void *p, size_t len, size_t *off)
{
    if (l->arena_len + len > l->arena_cap) {
        size_t cap = l->arena_cap ? l->arena_cap : 1 << 20;
        while (cap < l->arena_len + len)
            cap *= 2;
        unsigned char *a = realloc(l->arena, cap);
        if (!a)
            return EV_ERR_NOMEM;
        l->arena = a;
        l->arena_cap = cap;
    }
    *off = l->arena_len;
    if (len)
        memcpy(l->arena + l->arena_len, p, len);
    l->arena_len += len;
    return 0;
}

/* Headers on disk: per header, name + NUL, 4-byte little-endian length, value. */
static int arena_put_headers(sqlite_log *l, const ev_header *h, size_t count, size_t *off,
                             size_t *len)
{
    size_t start = l->arena_len, o;
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++) {
        uint32_t vl = (uint32_t)h[i].value_len;
        unsigned char le[4] = {(unsigned char)vl, (unsigned char)(vl >> 8),
                               (unsigned char)(vl >> 16), (unsigned char)(vl >> 24)};
        rc = arena_put(l, h[i].name, strlen(h[i].name) + 1, &o);
        if (!rc)
            rc = arena_put(l, le, 4, &o);
        if (!rc)
            rc = arena_put(l, h[i].value, h[i].value_len, &o);
    }
    *off = start;
    *len = l->arena_len - start;
    return rc;
}

/* Writes every pending record in one transaction. On failure the records
 * stay pending, so a later flush retries them. */
static int write_batch(sqlite_log *l, char *errstr, size_t n)
{
    int64_t *next = NULL;
    int rc = 0;
    if (l->pend_count == 0)
        return 0;
    if (!(next = calloc(l->writer_count, sizeof(*next))))
        return EV_ERR_NOMEM;
    if ((rc = exec(l, l->wdb, "BEGIN IMMEDIATE", errstr, n)))
        goto out;
    for (size_t i = 0; i < l->writer_count; i++) {
        sqlite3_stmt *s = l->writers[i].max_offset;
        if (sqlite3_step(s) != SQLITE_ROW) {
            rc = db_fail(l, l->wdb, errstr, n, "next offset");
            sqlite3_reset(s);
            goto rollback;
        }
        next[i] = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
    }
    for (size_t i = 0; i < l->pend_count; i++) {
        const pending *p = &l->pend[i];
        sqlite3_stmt *s = l->writers[p->topic].insert;
        sqlite3_bind_int64(s, 1, next[p->topic]++);
        sqlite3_bind_int64(s, 2, p->ts_ms);
        sqlite3_bind_blob(s, 3, l->arena + p->key_off, (int)p->key_len, SQLITE_STATIC);
        sqlite3_bind_blob(s, 4, l->arena + p->value_off, (int)p->value_len, SQLITE_STATIC);
        sqlite3_bind_blob(s, 5, l->arena + p->hdr_off, (int)p->hdr_len, SQLITE_STATIC);
        int src = sqlite3_step(s);
        sqlite3_reset(s);
        if (src != SQLITE_DONE) {
            rc = db_fail(l, l->wdb, errstr, n, "append");
            goto rollback;
        }
    }
    if (sqlite3_exec(l->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(l, l->wdb, errstr, n, "commit");
        goto rollback;
    }
    l->pend_count = 0;
    l->arena_len = 0;
    goto out;
rollback:
    sqlite3_exec(l->wdb, "ROLLBACK", NULL, NULL, NULL);
out:
    free(next);
    return rc;
}

static int sqlite_produce(void *impl, const char *topic, const void *key, size_t key_len,
                          const void *value, size_t value_len, const ev_header *headers,
                          size_t header_count, int64_t timestamp_ms, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    pending p = {.ts_ms = timestamp_ms};
    int rc, t;

    if (value_len >= (size_t)sqlite3_limit(l->wdb, SQLITE_LIMIT_LENGTH, -1) || key_len > 65536)
        return ev__fail(errstr, n, EV_ERR_INVALID, "%s: record of %zu bytes is too large",
                        topic, value_len);
    if ((t = writer_for(l, topic, errstr, n)) < 0)
        return t;
    p.topic = t;
    if (l->pend_count == l->pend_cap) {
        size_t cap = l->pend_cap ? l->pend_cap * 2 : 1024;
        pending *np = realloc(l->pend, cap * sizeof(*np));
        if (!np)
            return EV_ERR_NOMEM;
        l->pend = np;
        l->pend_cap = cap;
    }
    size_t mark = l->arena_len;
    p.key_len = key_len;
    p.value_len = value_len;
    if ((rc = arena_put(l, key, key_len, &p.key_off)) ||
        (rc = arena_put(l, value, value_len, &p.value_off)) ||
        (rc = arena_put_headers(l, headers, header_count, &p.hdr_off, &p.hdr_len))) {
        l->arena_len = mark;
        return rc;
    }
    l->pend[l->pend_count++] = p;
    if ((int64_t)l->pend_count >= l->batch_max_records || (int64_t)l->arena_len >= l->batch_max_bytes) {
        /* A full batch is written now; if that fails the records stay
         * queued and the error is reported by this call and by flush. */
        rc = write_batch(l, l->last_error, sizeof(l->last_error));
        if (rc)
            return ev__fail(errstr, n, rc, "%s", l->last_error);
    }
    return 0;
}

static int sqlite_flush(void *impl, int timeout_ms, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    size_t count = l->pend_count;
    int rc = write_batch(l, errstr, n);
    if (rc) {
        char inner[256];
        snprintf(inner, sizeof(inner), "%s", errstr ? errstr : "");
        return ev__fail(errstr, n, rc, "%zu records not acknowledged: %s", count, inner);
    }
    return 0;
}

/* ------------------------------------------------------------- consumer */

static void reader_reset(topic_reader *r)
{
    if (r->select)
        sqlite3_reset(r->select);
}

static int readers_set(sqlite_log *l, const char *const *topics, size_t count, char *errstr,
                       size_t n)
{
    for (size_t i = 0; i < l->reader_count; i++)
        sqlite3_finalize(l->readers[i].select);
    free(l->readers);
    l->reader_count = 0;
    l->current = 0;
    l->end_reported = 0;
    if (!(l->readers = calloc(count, sizeof(*l->readers))))
        return EV_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) {
        topic_reader *r = &l->readers[i];
        char sql[SQL_TOPIC_MAX * 2 + 256];
        int rc;
        snprintf(r->name, sizeof(r->name), "%s", topics[i]);
        /* The reader creates the table too, so it can wait for a topic no
         * one has written yet. */
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE IF NOT EXISTS \"t:%s\"(offset INTEGER PRIMARY KEY, ts_ms INTEGER "
                 "NOT NULL, key BLOB, value BLOB, headers BLOB);",
                 topics[i]);
        if ((rc = exec_setup(l, l->rdb, sql, errstr, n)))
            return rc;
        snprintf(sql, sizeof(sql),
                 "SELECT offset, ts_ms, key, value, headers FROM \"t:%s\" WHERE offset >= ? "
                 "ORDER BY offset LIMIT 512",
                 topics[i]);
        if (sqlite3_prepare_v3(l->rdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &r->select, NULL))
            return db_fail(l, l->rdb, errstr, n, sql);
        l->reader_count++;
    }
    return 0;
}

static int query_int64(sqlite_log *l, const char *sql, const char *arg1, const char *arg2,
                       int64_t arg3, int64_t *out, int *found)
{
    sqlite3_stmt *s;
    *found = 0;
    if (sqlite3_prepare_v2(l->rdb, sql, -1, &s, NULL) != SQLITE_OK)
        return EV_ERR_IO;
    if (arg1)
        sqlite3_bind_text(s, 1, arg1, -1, SQLITE_STATIC);
    if (arg2)
        sqlite3_bind_text(s, 2, arg2, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, arg2 ? 3 : arg1 ? 2 : 1, arg3);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
        *out = sqlite3_column_int64(s, 0);
        *found = 1;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : EV_ERR_IO;
}

static int sqlite_subscribe(void *impl, const char *cursor, const char *const *topics,
                            size_t count, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    int rc = readers_set(l, topics, count, errstr, n);
    if (rc)
        return rc;
    snprintf(l->cursor, sizeof(l->cursor), "%s", cursor);
    for (size_t i = 0; i < count; i++) {
        int found;
        int64_t off = 0;
        if (query_int64(l,
                        "SELECT next_offset FROM msrs_cursors WHERE cursor = ? AND topic = ? AND "
                        "partition = ?",
                        cursor, topics[i], 0, &off, &found))
            return db_fail(l, l->rdb, errstr, n, "read cursor");
        l->readers[i].next_offset = l->readers[i].committed = found ? off : 0;
    }
    return 0;
}

/* First offset whose timestamp is >= ts_ms, by binary search over offsets
 * (timestamps are producer clocks: nearly, not strictly, increasing — the
 * same assumption Kafka's time index makes). */
static int seek_time(sqlite_log *l, topic_reader *r, int64_t ts_ms, int64_t *out)
{
    char sql[SQL_TOPIC_MAX + 128];
    int64_t lo = 0, hi = 0, v;
    int found;
    snprintf(sql, sizeof(sql), "SELECT MIN(offset) FROM \"t:%s\" WHERE ? = 0", r->name);
    if (query_int64(l, sql, NULL, NULL, 0, &lo, &found))
        return EV_ERR_IO;
    snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(offset) + 1, 0) FROM \"t:%s\" WHERE ? = 0",
             r->name);
    if (query_int64(l, sql, NULL, NULL, 0, &hi, &found))
        return EV_ERR_IO;
    snprintf(sql, sizeof(sql), "SELECT ts_ms FROM \"t:%s\" WHERE offset = ?", r->name);
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (query_int64(l, sql, NULL, NULL, mid, &v, &found))
            return EV_ERR_IO;
        if (found && v >= ts_ms)
            hi = mid;
        else
            lo = mid + 1;
    }
    *out = lo;
    return 0;
}

static int sqlite_assign(void *impl, const char *const *topics, size_t count, ev_from from,
                         char *errstr, size_t n)
{
    sqlite_log *l = impl;
    int rc = readers_set(l, topics, count, errstr, n);
    if (rc)
        return rc;
    l->cursor[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        topic_reader *r = &l->readers[i];
        char sql[SQL_TOPIC_MAX + 128];
        int found;
        switch (from.kind) {
        case EV_FROM_BEGINNING: r->next_offset = 0; break;
        case EV_FROM_OFFSET: r->next_offset = from.value; break;
        case EV_FROM_END:
            snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(offset) + 1, 0) FROM \"t:%s\" WHERE ? = 0", r->name);
            if (query_int64(l, sql, NULL, NULL, 0, &r->next_offset, &found))
                return db_fail(l, l->rdb, errstr, n, "seek to end");
            break;
        case EV_FROM_TIME:
            if (seek_time(l, r, from.value, &r->next_offset))
                return db_fail(l, l->rdb, errstr, n, "seek by time");
            break;
        }
    }
    return 0;
}

static int parse_headers(sqlite_log *l, const unsigned char *p, size_t len)
{
    size_t count = 0, o = 0;
    while (o < len && count < sizeof(l->headers) / sizeof(l->headers[0])) {
        const unsigned char *nul = memchr(p + o, 0, len - o);
        if (!nul || (size_t)(nul - p) + 5 > len)
            return EV_ERR_CORRUPT;
        size_t name_off = o;
        o = (size_t)(nul - p) + 1;
        uint32_t vl = (uint32_t)p[o] | (uint32_t)p[o + 1] << 8 | (uint32_t)p[o + 2] << 16 |
                      (uint32_t)p[o + 3] << 24;
        o += 4;
        if (vl > len - o)
            return EV_ERR_CORRUPT;
        l->headers[count++] = (ev_header){(const char *)p + name_off, p + o, vl};
        o += vl;
    }
    l->msg.headers = l->headers;
    l->msg.header_count = count;
    return 0;
}

/* Returns 1 and fills l->msg when reader r has a row, 0 when it has none. */
static int next_row(sqlite_log *l, topic_reader *r, char *errstr, size_t n, int *err)
{
    int rc;
    *err = 0;
    for (;;) {
        if (!sqlite3_stmt_busy(r->select)) {
            sqlite3_bind_int64(r->select, 1, r->next_offset);
            r->batch_rows = 0;
        }
        rc = sqlite3_step(r->select);
        if (rc != SQLITE_DONE)
            break;
        sqlite3_reset(r->select);
        if (r->batch_rows == 0)
            return 0; /* a fresh query found nothing: at the end */
        /* The batch (LIMIT) ran out, not necessarily the topic: query again. */
        r->batch_rows = 0;
    }
    if (rc != SQLITE_ROW) {
        *err = db_fail(l, l->rdb, errstr, n, "read");
        sqlite3_reset(r->select);
        return 0;
    }
    sqlite3_stmt *s = r->select;
    l->msg.topic = r->name;
    l->msg.partition = 0;
    l->msg.offset = sqlite3_column_int64(s, 0);
    l->msg.timestamp_ms = sqlite3_column_int64(s, 1);
    l->msg.key = sqlite3_column_blob(s, 2);
    l->msg.key_len = (size_t)sqlite3_column_bytes(s, 2);
    l->msg.value = sqlite3_column_blob(s, 3);
    l->msg.value_len = (size_t)sqlite3_column_bytes(s, 3);
    const void *h = sqlite3_column_blob(s, 4);
    if (parse_headers(l, h, (size_t)sqlite3_column_bytes(s, 4)) != 0) {
        l->msg.header_count = 0; /* keep the record; its headers are unreadable */
    }
    r->next_offset = l->msg.offset + 1;
    r->batch_rows++;
    return 1;
}

static int sqlite_poll(void *impl, int timeout_ms, const ev_msg **msg, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    int64_t deadline = ev__mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int err;

    if (l->reader_count == 0)
        return ev__fail(errstr, n, EV_ERR_INVALID, "poll: neither subscribed nor assigned");
    for (;;) {
        /* Round-robin over topics, draining the current batch first. */
        for (size_t k = 0; k < l->reader_count; k++) {
            topic_reader *r = &l->readers[(l->current + k) % l->reader_count];
            if (next_row(l, r, errstr, n, &err)) {
                l->current = (l->current + k) % l->reader_count;
                l->end_reported = 0;
                *msg = &l->msg;
                return 0;
            }
            if (err)
                return err;
        }
        if (!l->end_reported) {
            l->end_reported = 1;
            return EV_ERR_END;
        }
        /* Wait for another connection to commit: PRAGMA data_version moves. */
        int64_t dv = l->data_version;
        while (ev__mono_ms() < deadline) {
            sqlite3_stmt *s;
            if (sqlite3_prepare_v2(l->rdb, "PRAGMA data_version", -1, &s, NULL) == SQLITE_OK) {
                if (sqlite3_step(s) == SQLITE_ROW)
                    dv = sqlite3_column_int64(s, 0);
                sqlite3_finalize(s);
            }
            if (dv != l->data_version)
                break;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (dv == l->data_version)
            return EV_ERR_TIMED_OUT;
        l->data_version = dv;
    }
}

static int sqlite_commit(void *impl, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    sqlite3_stmt *s = NULL;
    int rc = 0;
    if (!l->cursor[0])
        return ev__fail(errstr, n, EV_ERR_INVALID, "commit: not subscribed with a cursor");
    /* No read may stay open across a write on this connection. */
    for (size_t i = 0; i < l->reader_count; i++)
        reader_reset(&l->readers[i]);
    if ((rc = exec(l, l->rdb, "BEGIN IMMEDIATE", errstr, n)))
        return rc;
    if (sqlite3_prepare_v2(l->rdb,
                           "INSERT INTO msrs_cursors VALUES(?,?,0,?,?) ON CONFLICT(cursor, topic, "
                           "partition) DO UPDATE SET next_offset = excluded.next_offset, "
                           "updated_ms = excluded.updated_ms",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = db_fail(l, l->rdb, errstr, n, "commit cursor");
        goto rollback;
    }
    for (size_t i = 0; i < l->reader_count; i++) {
        topic_reader *r = &l->readers[i];
        if (r->next_offset == r->committed)
            continue;
        sqlite3_bind_text(s, 1, l->cursor, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, r->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, r->next_offset);
        sqlite3_bind_int64(s, 4, ev_now_ns() / 1000000);
        if (sqlite3_step(s) != SQLITE_DONE) {
            rc = db_fail(l, l->rdb, errstr, n, "commit cursor");
            goto rollback;
        }
        sqlite3_reset(s);
    }
    if (sqlite3_exec(l->rdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(l, l->rdb, errstr, n, "commit cursor");
        goto rollback;
    }
    sqlite3_finalize(s);
    for (size_t i = 0; i < l->reader_count; i++)
        l->readers[i].committed = l->readers[i].next_offset;
    return 0;
rollback:
    sqlite3_finalize(s);
    sqlite3_exec(l->rdb, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

const ev__backend ev__backend_sqlite = {
    .open = sqlite_open,
    .close = sqlite_close,
    .produce = sqlite_produce,
    .flush = sqlite_flush,
    .subscribe = sqlite_subscribe,
    .assign = sqlite_assign,
    .poll = sqlite_poll,
    .commit = sqlite_commit,
};
