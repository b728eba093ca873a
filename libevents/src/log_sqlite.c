/* log_sqlite.c — the embedded log: one SQLite file in WAL mode.
 *
 * Layout: one table per topic, "t:<topic>"(offset INTEGER PRIMARY KEY,
 * ts_ms, key, value, headers, crc, value_at, value_len), so an append is a
 * rowid append; values of 64 KiB or more in the values file PATH-values
 * (value_at, value_len say where); a table of named cursors; one partition
 * (0) per topic; msrs_log(format, created_ms) says the file is an msrs log.
 * Produced records are queued in memory; a writer thread writes what is
 * queued in one IMMEDIATE transaction, so the write lock is held only while
 * writing. With sqlite.synchronous=FULL (the default) a syncer thread makes
 * commits durable behind the writer and a flush waits for it: an
 * acknowledged record survives power loss (with NORMAL, kill -9). Readers
 * never block writers.
 *
 * Integrity (docs/log.md): every row carries the CRC-32C of the record,
 * checked on read (a mismatch is EV_ERR_CORRUPT for that record; rows of
 * earlier versions have NULL: read unchecked and counted); a file SQLite
 * finds malformed stops the reader with EV_ERR_FATAL; a file that is not an
 * msrs log is refused, and only a writer creates one. */
#include "log_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SQL_TOPIC_MAX  256
#define SQL_TOPICS_MAX 64  /* topics one handle writes */
#define SQL_RETRY_MS   100 /* a failed batch is retried this often */
#define SQL_FORMAT     2   /* msrs_log.format this code writes and reads */
/* A value of sqlite.external_value_bytes (64 KiB) or more is written once,
 * to the log's values file (PATH-values), not into the WAL and again into
 * the main file by a checkpoint: docs/log.md "Values outside the WAL".
 * Logs of format 2 and later; format 1 keeps every value in its row. */
#define SQL_EXTERNAL_VALUE_BYTES 65536
#define SQL_EXTERNAL_FORMAT      2
#define SQL_VALUES_SUFFIX        "-values"
/* sqlite.page_size, .mmap_size, .wal_autocheckpoint defaults: 16 KiB
 * pages took the agent's CPU at 8 devices x 100 Mbit/s from 22.6 to 17.2 s
 * (bench/README.md, "The SQLite writer's settings"); the rest SQLite's own */
#define SQL_PAGE_SIZE          16384
#define SQL_MMAP_SIZE          0
#define SQL_WAL_AUTOCHECKPOINT 1000
#define SQL_LINGER_MS          2

#define SQL_TOPIC_COLUMNS                                                                          \
    "(offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, key BLOB, value BLOB, headers BLOB, "    \
    "crc INTEGER, value_at INTEGER, value_len INTEGER)"

typedef struct pending {
    int topic; /* index into topics */
    int64_t ts_ms;
    size_t key_off, key_len, value_off, value_len, hdr_off, hdr_len; /* into arena */
} pending;

/* Records queued for the writer thread: offsets into one arena. */
typedef struct batch {
    pending *pend;
    size_t count, pend_cap;
    unsigned char *arena;
    size_t len, cap;
} batch;

typedef struct topic_writer {
    sqlite3_stmt *insert;
    sqlite3_stmt *max_offset;
} topic_writer;

typedef struct topic_reader {
    char name[SQL_TOPIC_MAX];
    int64_t next_offset;  /* next offset to return */
    int64_t committed;    /* what the cursor table holds */
    sqlite3_stmt *select; /* open while rows of a batch remain; NULL while the
                             table does not exist (a read-only reader waits) */
    int batch_rows;       /* rows returned by the open batch */
} topic_reader;

typedef struct sqlite_log {
    char path[1024];
    sqlite3 *wdb, *rdb; /* writer and reader connections */
    sqlite3 *ldb;       /* leases (ev_log_lead), opened on first use */
    int synchronous_full;
    int read_only; /* log.read_only: no table, row or pragma is ever written */
    int64_t busy_timeout_ms, queue_max_bytes;
    int64_t page_size, mmap_size, wal_autocheckpoint; /* sqlite.*: see sqlite_open */
    int64_t linger_ms; /* sqlite.linger_ms: an idle writer waits this long for company */
    /* the values file (SQL_EXTERNAL_VALUE_BYTES): values_fd a writer's
     * (opened with a log of format 2, appended to by the writer thread under
     * the write lock, synced by the syncer and before every checkpoint),
     * values_rfd a reader's (opened at its first value there); vbuf holds
     * the value a reader returns. vpath and wal_path are absolute. */
    char vpath[PATH_MAX + 16], wal_path[PATH_MAX + 16];
    int64_t external_value_bytes; /* 0: every value in its row */
    int64_t format;               /* msrs_log.format of the file (a writer's handle) */
    int values_fd, values_rfd;
    unsigned char *vbuf;
    size_t vbuf_cap;
    int flushing;      /* callers in sqlite_flush: the writer does not linger for them */
    size_t max_length; /* SQLite's limit on a value */
    /* producer: callers append to `fill` under mu; the writer thread swaps
     * it with `work` and writes `work` without the lock. wdb, writers and
     * work belong to the thread once it runs. */
    pthread_mutex_t mu;
    pthread_cond_t wake, done, retry;
    pthread_t thread;
    int thread_started, stopping, work_busy, failing;
    batch fill, work;
    /* records produced, committed (visible to readers) and durable (what
     * flush acknowledges), counted since open */
    int64_t produced, committed, durable;
    /* sqlite.synchronous=FULL: the writer connection commits without a sync
     * (visible at once) and the syncer thread makes commits durable behind
     * it: fdatasync of the values file, then of the WAL (wal_fd, its own
     * descriptor); a flush waits for that. unsynced_bytes: committed, not
     * yet durable. A failed sync is final (sync_failed): the kernel may have
     * dropped the pages, and a retry that succeeds proves nothing. */
    int syncer, sync_started, sync_stopping, sync_failed, wal_fd;
    int64_t unsynced_bytes;
    pthread_t sync_thread;
    pthread_cond_t sync_wake;
    char sync_error[PATH_MAX + 256];
    char names[SQL_TOPICS_MAX][SQL_TOPIC_MAX]; /* topic index -> name, append-only */
    int name_count;
    topic_writer writers[SQL_TOPICS_MAX];
    /* the writer thread's BEGIN IMMEDIATE and COMMIT, prepared once: as
     * text each batch's were parsed again (9 % of an agent's instructions) */
    sqlite3_stmt *begin, *commit;
    int64_t attempts_failed;
    char last_error[256];
    /* the checkpointer: its own connection and thread copy the WAL into the
     * main file once it holds wal_autocheckpoint pages, so that a commit
     * never waits for a checkpoint's writes and fsync (SQLite's own
     * autocheckpoint runs in the committing thread) */
    sqlite3 *cdb;
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_wake;
    pthread_t ckpt_thread;
    int ckpt_started, ckpt_due, ckpt_stopping;
    int ckpt_running, ckpt_held; /* a pass is being made; restart_wal holds passes back */
    /* the writer thread's: the WAL is SQL_WAL_RESTART_FACTOR times too long;
     * after a restart found readers, not before it has this many pages */
    int restart_due;
    int64_t restart_after_pages;
    /* consumer */
    topic_reader *readers;
    size_t reader_count, current;
    char cursor[256];
    int end_reported;
    int64_t data_version;
    int64_t unchecked; /* rows returned without a checksum (earlier versions) */
    int fatal;         /* the file is corrupt: every poll repeats fatal_error */
    char fatal_error[2048];
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
    int64_t deadline = ev_mono_ms() + l->busy_timeout_ms;
    for (int delay_ms = 1;; delay_ms = delay_ms < 50 ? delay_ms * 2 : 50) {
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return db_fail(l, db, errstr, n, sql);
        if (ev_mono_ms() >= deadline)
            return db_fail(l, db, errstr, n, sql);
        struct timespec ts = {0, delay_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* 1 when SQLite's answer means the file itself is damaged or not a database:
 * retrying cannot help. */
static int is_damaged(int sqlite_rc)
{
    return (sqlite_rc & 0xff) == SQLITE_CORRUPT || (sqlite_rc & 0xff) == SQLITE_NOTADB;
}

/* What the file is (on db, before anything is written to it): *format is
 * msrs_log.format, 0 for a log of an earlier version (msrs_cursors without
 * msrs_log), -1 for an empty database (a new or 0-byte file). Anything
 * else is refused: not an SQLite file, another program's database, a
 * newer format. */
static int identify(sqlite_log *l, sqlite3 *db, int64_t *format, char *errstr, size_t n)
{
    sqlite3_stmt *s = NULL;
    int64_t deadline = ev_mono_ms() + l->busy_timeout_ms;
    int rc;
    for (int delay_ms = 1;; delay_ms = delay_ms < 50 ? delay_ms * 2 : 50) {
        rc = sqlite3_prepare_v2(
            db,
            "SELECT (SELECT COUNT(*) FROM sqlite_master),"
            " (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'msrs_log'),"
            " (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'msrs_cursors')",
            -1, &s, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
            break;
        sqlite3_finalize(s);
        s = NULL;
        if (((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) ||
            ev_mono_ms() >= deadline)
            return ev__fail(errstr, n, is_damaged(rc) ? EV_ERR_FATAL : EV_ERR_IO,
                            "%s: %s: not an msrs log (an msrs log is an SQLite file that msrs "
                            "created)",
                            l->path, sqlite3_errmsg(db));
        struct timespec ts = {0, delay_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    int64_t objects = sqlite3_column_int64(s, 0);
    int has_meta = sqlite3_column_int(s, 1), has_cursors = sqlite3_column_int(s, 2);
    sqlite3_finalize(s);
    if (objects == 0) {
        *format = -1;
        return 0;
    }
    if (!has_meta) {
        if (has_cursors) {
            *format = 0;
            return 0;
        }
        return ev__fail(errstr, n, EV_ERR_INVALID,
                        "%s: an SQLite database but not an msrs log (no msrs_log table): refused",
                        l->path);
    }
    rc = sqlite3_prepare_v2(db, "SELECT MAX(format) FROM msrs_log", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        *format = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW)
        return ev__fail(errstr, n, is_damaged(rc) ? EV_ERR_FATAL : EV_ERR_IO,
                        "%s: reading msrs_log: %s", l->path, sqlite3_errmsg(db));
    if (*format < 1 || *format > SQL_FORMAT)
        return ev__fail(errstr, n, EV_ERR_INVALID,
                        "%s: msrs log format %lld: this msrs reads formats 0 to %d", l->path,
                        (long long)*format, SQL_FORMAT);
    return 0;
}

/* Makes the file an msrs log of format (writers only): creates msrs_log
 * and msrs_cursors in one IMMEDIATE transaction, so processes that open a
 * new file at once all find it made, whoever came first. */
static int make_log(sqlite_log *l, sqlite3 *db, int64_t format, char *errstr, size_t n)
{
    char sql[512];
    int rc = exec_setup(l, db, "BEGIN IMMEDIATE", errstr, n);
    if (rc)
        return rc;
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS msrs_log(format INTEGER NOT NULL, created_ms INTEGER "
             "NOT NULL);"
             "INSERT INTO msrs_log SELECT %lld, %lld WHERE NOT EXISTS (SELECT 1 FROM msrs_log);"
             "CREATE TABLE IF NOT EXISTS msrs_cursors(cursor TEXT NOT NULL, topic TEXT NOT NULL,"
             " partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, updated_ms INTEGER,"
             " PRIMARY KEY(cursor, topic, partition));"
             "COMMIT;",
             (long long)format, (long long)(ev_now_ns() / 1000000));
    if ((rc = exec(l, db, sql, errstr, n)))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Opens a connection. The first one of a handle (check = 1) looks at what
 * the file is before anything is written to it: a reader (log.read_only)
 * opens it read-only and accepts only an msrs log; a writer also accepts a
 * missing or empty file and makes it one. */
static int open_db(sqlite_log *l, sqlite3 **db, int check, char *errstr, size_t n)
{
    char sql[256];
    int64_t format = SQL_FORMAT;
    int flags = l->read_only ? SQLITE_OPEN_READONLY
                             : SQLITE_OPEN_READWRITE | (check ? SQLITE_OPEN_CREATE : 0);
    /* A new log is made 0640 (less if the umask says so), not the umask's
     * 0644: its owner writes, its group (the services' and analysts'
     * accounts, docs/security.md) reads, others nothing. SQLite gives the
     * -wal and -shm files the database file's mode. */
    int fd = !l->read_only && check && strcmp(l->path, ":memory:") != 0
                 ? open(l->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640)
                 : -1;
    if (fd >= 0)
        close(fd);
    int rc = sqlite3_open_v2(l->path, db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return ev__fail(errstr, n, EV_ERR_IO, "%s: cannot open: %s%s", l->path,
                        *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc),
                        l->read_only && access(l->path, F_OK) != 0
                            ? " (no such file: a reader never creates the log)"
                            : "");
    sqlite3_busy_timeout(*db, (int)l->busy_timeout_ms);
    if (check && (rc = identify(l, *db, &format, errstr, n)))
        return rc;
    if (check)
        /* what make_log below makes of a new file (SQL_FORMAT) and of one of
         * an msrs before msrs_log (1: its tables were made without
         * value_at, and a reader that prepared its query before a writer
         * added it would read such a row's value as empty) */
        l->format = format < 0 ? SQL_FORMAT : format == 0 ? 1 : format;
    /* memory-mapped reads: a reader's pages come without a pread each */
    snprintf(sql, sizeof(sql), "PRAGMA mmap_size=%lld;", (long long)l->mmap_size);
    if ((rc = exec_setup(l, *db, sql, errstr, n)))
        return rc;
    if (l->read_only) {
        if (format < 0)
            return ev__fail(errstr, n, EV_ERR_INVALID,
                            "%s: empty, not an msrs log (yet): a reader does not make one; "
                            "start a writer on it first",
                            l->path);
        return 0;
    }
    /* page_size takes only while the file is new (before WAL and the first
     * table): an existing log keeps its own */
    snprintf(sql, sizeof(sql),
             "PRAGMA page_size=%lld; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
             "PRAGMA wal_autocheckpoint=%lld;",
             (long long)l->page_size, l->synchronous_full ? "FULL" : "NORMAL",
             (long long)l->wal_autocheckpoint);
    if ((rc = exec_setup(l, *db, sql, errstr, n)))
        return rc;
    return format < 1 ? make_log(l, *db, l->format, errstr, n) : 0;
}

/* A writer's values file, opened (made 0640, as the log) with a log of
 * format SQL_EXTERNAL_FORMAT or later, also when this handle keeps its
 * values in their rows (sqlite.external_value_bytes 0): its checkpoints
 * copy other writers' rows too, and sync their values first. None for
 * :memory: or a format 1 file. With synchronous=FULL the folder of a file
 * it makes is synced, as SQLite does for a new WAL. */
static int values_open(sqlite_log *l, char *errstr, size_t n)
{
    if (l->format < SQL_EXTERNAL_FORMAT || strcmp(l->path, ":memory:") == 0) {
        l->external_value_bytes = 0;
        return 0;
    }
    int made = (l->values_fd = open(l->vpath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640)) >= 0;
    if (!made && errno == EEXIST)
        l->values_fd = open(l->vpath, O_RDWR | O_CLOEXEC);
    if (l->values_fd < 0)
        return ev__fail(errstr, n, EV_ERR_IO, "%s: cannot open the log's values file: %s", l->vpath,
                        strerror(errno));
    if (made && l->synchronous_full) {
        char folder[sizeof(l->vpath)];
        snprintf(folder, sizeof(folder), "%s", l->vpath);
        char *slash = strrchr(folder, '/');
        if (slash)
            *slash = 0;
        int fd = open(slash ? folder : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int rc = fd < 0 ? -1 : fsync(fd);
        if (fd >= 0)
            close(fd);
        if (rc != 0)
            return ev__fail(errstr, n, EV_ERR_IO,
                            "%s: syncing the folder of the new values file: %s",
                            slash ? folder : ".", strerror(errno));
    }
    return 0;
}

/* A failed sync, final for the handle: the kernel may have dropped the pages
 * it could not write, and a later sync that succeeds proves nothing. Flush,
 * produce and ev_log_backlog return err from now on. */
static void sync_fail(sqlite_log *l, const char *err)
{
    pthread_mutex_lock(&l->mu);
    if (!l->sync_failed)
        snprintf(l->sync_error, sizeof(l->sync_error),
                 "%s: records committed since the last sync are not known to be durable; this "
                 "log handle acknowledges nothing more (restart the process)",
                 err);
    l->sync_failed = 1;
    pthread_cond_broadcast(&l->done);
    pthread_mutex_unlock(&l->mu);
}

/* The one sync of the values file: before the syncer syncs the WAL, and
 * before a checkpoint does (the syncer may not have got that far; with
 * synchronous=NORMAL there is none). 0, or -1 when the sync failed
 * (sync_fail): then no checkpoint may put those rows in the main file. */
static int values_sync(sqlite_log *l)
{
    char err[PATH_MAX + 64];
    if (l->values_fd < 0 || fdatasync(l->values_fd) == 0)
        return 0;
    snprintf(err, sizeof(err), "%s: fdatasync: %s", l->vpath, strerror(errno));
    sync_fail(l, err);
    return -1;
}

/* How far the WAL may outgrow sqlite.wal_autocheckpoint before the writer
 * starts it again from its beginning. A PASSIVE checkpoint never stops the
 * writer, but the writer restarts the WAL only if, when it begins a
 * transaction, a checkpoint has copied every frame: with checkpoints beside
 * a busy writer that was never the case (tests/log: 65 MB of WAL for 32 MB
 * written). So at this many times the threshold the writer thread, between
 * two batches, runs a RESTART checkpoint itself (restart_wal): it copies
 * what the checkpointer has not (little) and waits for readers on older
 * snapshots, at most SQL_RESTART_WAIT_MS. */
#define SQL_WAL_RESTART_FACTOR 4
#define SQL_RESTART_WAIT_MS    100

/* The writer connection's wal hook (after each commit, on the writer
 * thread): wakes the checkpointer when the WAL holds enough pages. */
static int on_wal(void *arg, sqlite3 *db, const char *name, int pages)
{
    sqlite_log *l = arg;
    (void)db;
    (void)name;
    if (pages >= SQL_WAL_RESTART_FACTOR * l->wal_autocheckpoint && pages >= l->restart_after_pages)
        l->restart_due = 1; /* the writer thread's own: restart_wal */
    if (pages >= l->wal_autocheckpoint) {
        pthread_mutex_lock(&l->ckpt_mu);
        l->ckpt_due = 1;
        pthread_cond_broadcast(&l->ckpt_wake);
        pthread_mutex_unlock(&l->ckpt_mu);
    }
    return SQLITE_OK;
}

/* The checkpointer thread (on_wal wakes it); it does not start a pass
 * while the writer restarts the WAL (ckpt_held). A failed checkpoint is
 * retried at the next wake: nothing is lost, the WAL only stays longer. */
static void *checkpointer_main(void *arg)
{
    sqlite_log *l = arg;
    pthread_mutex_lock(&l->ckpt_mu);
    for (;;) {
        while (!l->ckpt_stopping && (!l->ckpt_due || l->ckpt_held))
            pthread_cond_wait(&l->ckpt_wake, &l->ckpt_mu);
        if (l->ckpt_stopping)
            break;
        l->ckpt_due = 0;
        l->ckpt_running = 1;
        pthread_mutex_unlock(&l->ckpt_mu);
        if (values_sync(l) == 0)
            sqlite3_wal_checkpoint_v2(l->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&l->ckpt_mu);
        l->ckpt_running = 0;
        pthread_cond_broadcast(&l->ckpt_wake);
    }
    pthread_mutex_unlock(&l->ckpt_mu);
    return NULL;
}

/* The checkpointer's connection, opened with the log (not under the
 * producers' lock). With sqlite.wal_autocheckpoint 0 there are no
 * checkpoints, as in SQLite; when it cannot be opened SQLite's own
 * autocheckpoint stays, in the committing thread. */
static void checkpointer_open(sqlite_log *l)
{
    if (l->wal_autocheckpoint <= 0 || strcmp(l->path, ":memory:") == 0)
        return;
    if (sqlite3_open_v2(l->path, &l->cdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) ==
        SQLITE_OK) {
        sqlite3_busy_timeout(l->cdb, (int)l->busy_timeout_ms);
        /* a connection knows the file is in WAL mode once it has read it:
         * before, a checkpoint on it does nothing */
        if (sqlite3_exec(l->cdb, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) == SQLITE_OK)
            return;
    }
    sqlite3_close(l->cdb);
    l->cdb = NULL;
}

/* Hands the writer connection's checkpoints to the checkpointer thread (at
 * the writer thread's start, before it: the wal hook is set on wdb while no
 * other thread uses it). */
static void checkpointer_start(sqlite_log *l)
{
    if (l->ckpt_started || !l->cdb ||
        pthread_create(&l->ckpt_thread, NULL, checkpointer_main, l) != 0)
        return;
    l->ckpt_started = 1;
    sqlite3_wal_hook(l->wdb, on_wal, l); /* replaces SQLite's autocheckpoint */
}

static void checkpointer_stop(sqlite_log *l)
{
    if (!l->ckpt_started)
        return;
    pthread_mutex_lock(&l->ckpt_mu);
    l->ckpt_stopping = 1;
    pthread_cond_broadcast(&l->ckpt_wake);
    pthread_mutex_unlock(&l->ckpt_mu);
    pthread_join(l->ckpt_thread, NULL);
    l->ckpt_started = 0;
}

static void sqlite_close(void *impl)
{
    sqlite_log *l = impl;
    if (!l)
        return;
    if (l->thread_started) {
        /* What is still queued gets one attempt; a caller that needs it
         * durable flushes first. */
        pthread_mutex_lock(&l->mu);
        l->stopping = 1;
        pthread_cond_broadcast(&l->wake);
        pthread_cond_broadcast(&l->retry);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    if (l->sync_started) { /* after the writer: it syncs the writer's last commit */
        pthread_mutex_lock(&l->mu);
        l->sync_stopping = 1;
        pthread_cond_broadcast(&l->sync_wake);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->sync_thread, NULL);
    }
    if (l->wal_fd >= 0)
        close(l->wal_fd);
    checkpointer_stop(l);
    /* the last connection to close checkpoints the WAL into the main file:
     * the values its rows name go first */
    values_sync(l);
    sqlite3_close(l->cdb);
    for (int i = 0; i < SQL_TOPICS_MAX; i++) {
        sqlite3_finalize(l->writers[i].insert);
        sqlite3_finalize(l->writers[i].max_offset);
    }
    sqlite3_finalize(l->begin);
    sqlite3_finalize(l->commit);
    for (size_t i = 0; i < l->reader_count; i++)
        sqlite3_finalize(l->readers[i].select);
    sqlite3_close(l->wdb);
    sqlite3_close(l->rdb);
    sqlite3_close(l->ldb);
    if (l->values_fd >= 0)
        close(l->values_fd);
    if (l->values_rfd >= 0)
        close(l->values_rfd);
    free(l->vbuf);
    free(l->readers);
    free(l->fill.pend);
    free(l->fill.arena);
    free(l->work.pend);
    free(l->work.arena);
    pthread_cond_destroy(&l->wake);
    pthread_cond_destroy(&l->done);
    pthread_cond_destroy(&l->retry);
    pthread_cond_destroy(&l->sync_wake);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->ckpt_wake);
    pthread_mutex_destroy(&l->ckpt_mu);
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
    l->values_fd = l->values_rfd = l->wal_fd = -1;
    pthread_condattr_t mono;
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC); /* timed waits use deadline_after */
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, &mono);
    pthread_cond_init(&l->done, &mono);
    pthread_cond_init(&l->retry, &mono);
    pthread_cond_init(&l->sync_wake, NULL);
    pthread_condattr_destroy(&mono);
    pthread_mutex_init(&l->ckpt_mu, NULL);
    pthread_cond_init(&l->ckpt_wake, NULL); /* wakes passes, and restart_wal when one ends */
    snprintf(l->path, sizeof(l->path), "%s", target);
    l->synchronous_full = strcasecmp(sync, "FULL") == 0;
    if ((rc = ev_conf_get_bool(conf, "log.read_only", 0, &l->read_only, errstr, n)))
        goto fail;
    if ((rc = ev_conf_get_int(conf, "sqlite.busy_timeout_ms", 30000, &l->busy_timeout_ms, errstr,
                              n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.queue.max.bytes", 256 << 20, &l->queue_max_bytes,
                              errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.page_size", SQL_PAGE_SIZE, &l->page_size, errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.mmap_size", SQL_MMAP_SIZE, &l->mmap_size, errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.wal_autocheckpoint", SQL_WAL_AUTOCHECKPOINT,
                              &l->wal_autocheckpoint, errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.linger_ms", SQL_LINGER_MS, &l->linger_ms, errstr, n)) ||
        (rc = ev_conf_get_int(conf, "sqlite.external_value_bytes", SQL_EXTERNAL_VALUE_BYTES,
                              &l->external_value_bytes, errstr, n)))
        goto fail;
    if (l->linger_ms < 0 || l->linger_ms > 1000) {
        rc = ev__fail(errstr, n, EV_ERR_INVALID,
                      "config sqlite.linger_ms: expected 0 to 1000 (ms), got %lld",
                      (long long)l->linger_ms);
        goto fail;
    }
    if (l->page_size < 512 || l->page_size > 65536 || (l->page_size & (l->page_size - 1))) {
        rc = ev__fail(errstr, n, EV_ERR_INVALID,
                      "config sqlite.page_size: expected a power of two from 512 to 65536, got "
                      "%lld",
                      (long long)l->page_size);
        goto fail;
    }
    const struct {
        const char *key;
        int64_t value;
    } counts[] = {{"mmap_size", l->mmap_size},
                  {"wal_autocheckpoint", l->wal_autocheckpoint},
                  {"external_value_bytes", l->external_value_bytes}};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        if (counts[i].value < 0) {
            rc = ev__fail(errstr, n, EV_ERR_INVALID,
                          "config sqlite.%s: expected 0 or more, got %lld", counts[i].key,
                          (long long)counts[i].value);
            goto fail;
        }
    if (l->read_only)
        rc = open_db(l, &l->rdb, 1, errstr, n);
    else if (!(rc = open_db(l, &l->wdb, 1, errstr, n)))
        rc = open_db(l, &l->rdb, 0, errstr, n);
    if (rc)
        goto fail;
    /* the files beside the log, by absolute path: opened later (the WAL at
     * the first sync, the values at a reader's first), after a chdir too */
    char abs[PATH_MAX];
    const char *base = realpath(l->path, abs) ? abs : l->path;
    snprintf(l->vpath, sizeof(l->vpath), "%s" SQL_VALUES_SUFFIX, base);
    snprintf(l->wal_path, sizeof(l->wal_path), "%s-wal", base);
    if (l->wdb && (rc = values_open(l, errstr, n)))
        goto fail;
    /* synchronous=FULL: the syncer thread makes the writer connection's
     * commits durable behind it (see syncer); every other connection of
     * the handle (cursors, leases) syncs its own commits */
    l->syncer = l->wdb && l->synchronous_full && strcmp(l->path, ":memory:") != 0;
    if (l->syncer && (rc = exec(l, l->wdb, "PRAGMA synchronous=NORMAL", errstr, n)))
        goto fail;
    if (l->wdb)
        checkpointer_open(l);
    l->max_length = (size_t)sqlite3_limit(l->rdb, SQLITE_LIMIT_LENGTH, -1);
    *impl = l;
    return 0;
fail:
    sqlite_close(l);
    return rc;
}

/* The checksum of a row (docs/log.md): CRC-32C over offset and ts_ms (8
 * bytes little-endian each), then the key, the value and the headers as
 * stored, each after its length (4 bytes little-endian). */
static uint32_t row_crc(int64_t offset, int64_t ts_ms, const void *key, size_t key_len,
                        const void *value, size_t value_len, const void *hdr, size_t hdr_len)
{
    /* offset, ts_ms (8 bytes each) and the three lengths (4 each), little
     * endian, in one call; then the three parts */
    unsigned char head[28];
    const void *part[3] = {key, value, hdr};
    size_t part_len[3] = {key_len, value_len, hdr_len};
    for (int i = 0; i < 8; i++) {
        head[i] = (unsigned char)((uint64_t)offset >> (8 * i));
        head[8 + i] = (unsigned char)((uint64_t)ts_ms >> (8 * i));
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 4; i++)
            head[16 + 4 * k + i] = (unsigned char)((uint32_t)part_len[k] >> (8 * i));
    uint32_t crc = ev__crc32c(0, head, sizeof(head));
    for (int k = 0; k < 3; k++)
        crc = ev__crc32c(crc, part[k], part_len[k]);
    return crc;
}

/* Columns of table "t:<topic>" on db: *columns 0 when it does not exist;
 * *has_crc 1 when it has the crc column, *has_ext when it has value_at and
 * value_len (tables of earlier versions have neither). */
static int table_columns(sqlite_log *l, sqlite3 *db, const char *topic, int *columns, int *has_crc,
                         int *has_ext, char *errstr, size_t n)
{
    char table[SQL_TOPIC_MAX + 8];
    sqlite3_stmt *s;
    snprintf(table, sizeof(table), "t:%s", topic);
    int rc = sqlite3_prepare_v2(db,
                                "SELECT COUNT(*), COALESCE(SUM(name = 'crc'), 0), "
                                "COALESCE(SUM(name IN ('value_at', 'value_len')), 0) "
                                "FROM pragma_table_info(?)",
                                -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
    }
    if (rc == SQLITE_ROW) {
        *columns = sqlite3_column_int(s, 0);
        *has_crc = sqlite3_column_int(s, 1) > 0;
        *has_ext = sqlite3_column_int(s, 2) == 2;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW)
        return ev__fail(errstr, n, is_damaged(rc) ? EV_ERR_FATAL : EV_ERR_IO,
                        "%s: table \"%s\": %s", l->path, table, sqlite3_errmsg(db));
    return 0;
}

/* Gives a table of an earlier version the crc column (NULL in its old
 * rows: read unchecked) and value_at, value_len (NULL: the value is in its
 * row). Writers only, under the write lock: another writer may be adding
 * them too. */
static int table_migrate(sqlite_log *l, sqlite3 *db, const char *topic, char *errstr, size_t n)
{
    char sql[SQL_TOPIC_MAX + 128];
    int columns = 0, has_crc = 0, has_ext = 0, rc;
    if ((rc = table_columns(l, db, topic, &columns, &has_crc, &has_ext, errstr, n)) ||
        (has_crc && has_ext))
        return rc;
    if ((rc = exec_setup(l, db, "BEGIN IMMEDIATE", errstr, n)))
        return rc;
    rc = table_columns(l, db, topic, &columns, &has_crc, &has_ext, errstr, n);
    snprintf(sql, sizeof(sql), "ALTER TABLE \"t:%s\" ADD COLUMN crc INTEGER", topic);
    if (!rc && !has_crc)
        rc = exec(l, db, sql, errstr, n);
    snprintf(sql, sizeof(sql),
             "ALTER TABLE \"t:%s\" ADD COLUMN value_at INTEGER; "
             "ALTER TABLE \"t:%s\" ADD COLUMN value_len INTEGER",
             topic, topic);
    if (!rc && !has_ext)
        rc = exec(l, db, sql, errstr, n);
    if (!rc)
        rc = exec(l, db, "COMMIT", errstr, n);
    if (rc)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ------------------------------------------------------------- producer */

/* ensure_writer runs on the writer thread only: wdb belongs to it. */
static int ensure_writer(sqlite_log *l, int t, char *errstr, size_t n)
{
    topic_writer *w = &l->writers[t];
    char sql[SQL_TOPIC_MAX * 2 + 256];
    int rc;
    if (w->insert)
        return 0;
    snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS \"t:%s\"" SQL_TOPIC_COLUMNS ";",
             l->names[t]);
    if ((rc = exec_setup(l, l->wdb, sql, errstr, n)))
        return rc;
    if ((rc = table_migrate(l, l->wdb, l->names[t], errstr, n)))
        return rc;
    snprintf(sql, sizeof(sql),
             "INSERT INTO \"t:%s\"(offset, ts_ms, key, value, headers, crc, value_at, value_len) "
             "VALUES(?,?,?,?,?,?,?,?)",
             l->names[t]);
    if (sqlite3_prepare_v3(l->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &w->insert, NULL))
        return db_fail(l, l->wdb, errstr, n, sql);
    snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(offset) + 1, 0) FROM \"t:%s\"", l->names[t]);
    if (sqlite3_prepare_v3(l->wdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &w->max_offset, NULL)) {
        rc = db_fail(l, l->wdb, errstr, n, sql);
        sqlite3_finalize(w->insert);
        w->insert = NULL;
        return rc;
    }
    return 0;
}

/* Called with the lock held: the index of topic, added if new. */
static int topic_index(sqlite_log *l, const char *topic, char *errstr, size_t n)
{
    for (int i = 0; i < l->name_count; i++)
        if (strcmp(l->names[i], topic) == 0)
            return i;
    if (l->name_count == SQL_TOPICS_MAX)
        return ev__fail(errstr, n, EV_ERR_INVALID, "%s: one log handle writes at most %d topics",
                        topic, SQL_TOPICS_MAX);
    snprintf(l->names[l->name_count], SQL_TOPIC_MAX, "%s", topic);
    return l->name_count++;
}

static int arena_put(batch *b, const void *p, size_t len, size_t *off)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 20;
        while (cap < b->len + len)
            cap *= 2;
        unsigned char *a = realloc(b->arena, cap);
        if (!a)
            return EV_ERR_NOMEM;
        b->arena = a;
        b->cap = cap;
    }
    *off = b->len;
    if (len)
        memcpy(b->arena + b->len, p, len);
    b->len += len;
    return 0;
}

/* Headers on disk: per header, name + NUL, 4-byte little-endian length, value. */
static int arena_put_headers(batch *b, const ev_header *h, size_t count, size_t *off, size_t *len)
{
    size_t start = b->len, o;
    int rc = 0;
    for (size_t i = 0; i < count && !rc; i++) {
        uint32_t vl = (uint32_t)h[i].value_len;
        unsigned char le[4] = {(unsigned char)vl, (unsigned char)(vl >> 8),
                               (unsigned char)(vl >> 16), (unsigned char)(vl >> 24)};
        rc = arena_put(b, h[i].name, strlen(h[i].name) + 1, &o);
        if (!rc)
            rc = arena_put(b, le, 4, &o);
        if (!rc)
            rc = arena_put(b, h[i].value, h[i].value_len, &o);
    }
    *off = start;
    *len = b->len - start;
    return rc;
}

/* Writes batch b in one transaction (writer thread). On failure nothing of
 * it is written and it stays queued. */
/* Runs one prepared statement without rows (BEGIN, COMMIT); 0 or
 * SQLITE's code. */
static int step_once(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Appends a value to the values file at *at (writer thread, under the
 * write lock: no other process appends meanwhile). */
static int values_append(sqlite_log *l, const unsigned char *p, size_t len, int64_t *at,
                         char *errstr, size_t n)
{
    if (*at < 0 && (*at = lseek(l->values_fd, 0, SEEK_END)) < 0)
        return ev__fail(errstr, n, EV_ERR_IO, "%s: finding the end of the values file: %s",
                        l->vpath, strerror(errno));
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(l->values_fd, p + done, len - done, (off_t)(*at + (int64_t)done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return ev__fail(errstr, n, EV_ERR_IO, "%s: writing %zu bytes at %lld: %s", l->vpath,
                            len, (long long)(*at + (int64_t)done),
                            w < 0 ? strerror(errno) : "nothing written");
        done += (size_t)w;
    }
    return 0;
}

static int write_batch(sqlite_log *l, const batch *b, int topics, char *errstr, size_t n)
{
    int64_t next[SQL_TOPICS_MAX];
    int64_t values_at = -1, values_from = -1; /* the values file's end; where this batch began */
    char in_batch[SQL_TOPICS_MAX] = {0};
    int rc;
    for (int t = 0; t < topics; t++)
        if ((rc = ensure_writer(l, t, errstr, n)))
            return rc;
    if ((!l->begin && sqlite3_prepare_v3(l->wdb, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT,
                                         &l->begin, NULL)) ||
        (!l->commit &&
         sqlite3_prepare_v3(l->wdb, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &l->commit, NULL)))
        return db_fail(l, l->wdb, errstr, n, "prepare BEGIN/COMMIT");
    if (step_once(l->begin) != SQLITE_OK)
        return db_fail(l, l->wdb, errstr, n, "BEGIN IMMEDIATE");
    for (size_t i = 0; i < b->count; i++)
        in_batch[b->pend[i].topic] = 1;
    /* each topic's next offset, read inside the transaction (other
     * processes append to the same tables), for the topics this batch holds */
    for (int t = 0; t < topics; t++) {
        if (!in_batch[t])
            continue;
        sqlite3_stmt *s = l->writers[t].max_offset;
        if (sqlite3_step(s) != SQLITE_ROW) {
            rc = db_fail(l, l->wdb, errstr, n, "next offset");
            sqlite3_reset(s);
            goto rollback;
        }
        next[t] = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
    }
    for (size_t i = 0; i < b->count; i++) {
        const pending *p = &b->pend[i];
        sqlite3_stmt *s = l->writers[p->topic].insert;
        const unsigned char *key = b->arena + p->key_off, *value = b->arena + p->value_off,
                            *hdr = b->arena + p->hdr_off;
        int64_t offset = next[p->topic]++;
        sqlite3_bind_int64(s, 1, offset);
        sqlite3_bind_int64(s, 2, p->ts_ms);
        sqlite3_bind_blob(s, 3, key, (int)p->key_len, SQLITE_STATIC);
        sqlite3_bind_blob(s, 5, hdr, (int)p->hdr_len, SQLITE_STATIC);
        sqlite3_bind_int64(
            s, 6, row_crc(offset, p->ts_ms, key, p->key_len, value, p->value_len, hdr, p->hdr_len));
        if (l->external_value_bytes > 0 && p->value_len >= (size_t)l->external_value_bytes) {
            if ((rc = values_append(l, value, p->value_len, &values_at, errstr, n)))
                goto rollback;
            if (values_from < 0)
                values_from = values_at;
            sqlite3_bind_null(s, 4);
            sqlite3_bind_int64(s, 7, values_at);
            sqlite3_bind_int64(s, 8, (int64_t)p->value_len);
            values_at += (int64_t)p->value_len;
        } else {
            sqlite3_bind_blob(s, 4, value, (int)p->value_len, SQLITE_STATIC);
            sqlite3_bind_null(s, 7);
            sqlite3_bind_null(s, 8);
        }
        int src = sqlite3_step(s);
        sqlite3_reset(s);
        if (src != SQLITE_DONE) {
            rc = db_fail(l, l->wdb, errstr, n, "append");
            goto rollback;
        }
    }
    /* the values started on their way to the disk before the rows that
     * name them are committed (the syncer, or the checkpointer's
     * values_sync, waits for them), and not left to pile up in the page
     * cache */
    if (values_from >= 0)
        sync_file_range(l->values_fd, values_from, values_at - values_from, SYNC_FILE_RANGE_WRITE);
    if (step_once(l->commit) != SQLITE_OK) {
        rc = db_fail(l, l->wdb, errstr, n, "commit");
        goto rollback;
    }
    return 0;
rollback:
    sqlite3_exec(l->wdb, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* The writer thread, between batches (restart_due), without mu: see
 * SQL_WAL_RESTART_FACTOR. Producers go on queueing and flushes are not
 * held (the batch before was released); the checkpointer finishes the pass
 * it is making and starts none meanwhile. Readers on older snapshots are
 * waited for SQL_RESTART_WAIT_MS; then it is tried again once the WAL has
 * grown by another threshold, not after every commit. */
static void restart_wal(sqlite_log *l)
{
    pthread_mutex_lock(&l->ckpt_mu);
    l->ckpt_held = 1;
    while (l->ckpt_running)
        pthread_cond_wait(&l->ckpt_wake, &l->ckpt_mu);
    pthread_mutex_unlock(&l->ckpt_mu);
    int frames = 0, rc = SQLITE_IOERR;
    if (values_sync(l) == 0) {
        sqlite3_busy_timeout(l->wdb, SQL_RESTART_WAIT_MS);
        rc = sqlite3_wal_checkpoint_v2(l->wdb, NULL, SQLITE_CHECKPOINT_RESTART, &frames, NULL);
        sqlite3_busy_timeout(l->wdb, (int)l->busy_timeout_ms);
    }
    pthread_mutex_lock(&l->ckpt_mu);
    l->ckpt_held = 0;
    pthread_cond_broadcast(&l->ckpt_wake);
    pthread_mutex_unlock(&l->ckpt_mu);
    l->restart_due = 0;
    l->restart_after_pages = rc == SQLITE_OK ? 0 : frames + l->wal_autocheckpoint;
}

static void deadline_after(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Makes what is committed durable: the values (values_sync), then the WAL
 * whose rows name them. 0, or -1 once the failure is final (sync_fail). */
static int sync_files(sqlite_log *l)
{
    char err[PATH_MAX + 64];
    if (values_sync(l) != 0)
        return -1;
    if (l->wal_fd < 0 && (l->wal_fd = open(l->wal_path, O_RDONLY | O_CLOEXEC)) < 0)
        snprintf(err, sizeof(err), "%s: cannot open the WAL to sync it: %s", l->wal_path,
                 strerror(errno));
    else if (fdatasync(l->wal_fd) == 0)
        return 0;
    else
        snprintf(err, sizeof(err), "%s: fdatasync: %s", l->wal_path, strerror(errno));
    sync_fail(l, err);
    return -1;
}

/* The syncer thread (l->syncer): whenever commits are not yet durable, one
 * sync covers all of them (records committed during it wait for the next:
 * group sync, as the writer's group commit). On closing it syncs what is
 * left. */
static void *syncer_main(void *arg)
{
    sqlite_log *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->sync_stopping && (l->sync_failed || l->durable == l->committed))
            pthread_cond_wait(&l->sync_wake, &l->mu);
        if (l->sync_failed || l->durable == l->committed)
            break;
        int64_t target = l->committed, bytes = l->unsynced_bytes;
        pthread_mutex_unlock(&l->mu);
        int rc = sync_files(l); /* a failure is final: sync_fail said so */
        pthread_mutex_lock(&l->mu);
        if (rc == 0) {
            l->durable = target;
            l->unsynced_bytes -= bytes;
            pthread_cond_broadcast(&l->done);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* The writer thread: takes everything queued, writes it in one transaction,
 * repeats — a commit's fsync is the only wait, and records that arrive
 * during it are written together by the next one (group commit). A failed
 * batch is retried every SQL_RETRY_MS until it is written or the log is
 * closed. */
static void *writer_main(void *arg)
{
    sqlite_log *l = arg;
    char err[256];
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int slept = 0;
        while (!l->stopping && l->fill.count == 0) {
            pthread_cond_wait(&l->wake, &l->mu);
            slept = 1;
        }
        /* sqlite.linger_ms: woken by a first record, wait a little for
         * others to share its transaction (each commit costs its locks and
         * page writes: strace counted ~560 commits a second at 1024 devices without).
         * Records found on coming back from a commit have waited already,
         * and a flush or a close does not wait. */
        if (slept && l->linger_ms > 0) {
            struct timespec until;
            deadline_after(&until, l->linger_ms);
            while (!l->stopping && !l->flushing &&
                   pthread_cond_timedwait(&l->wake, &l->mu, &until) == 0)
                ;
        }
        if (l->fill.count == 0)
            break;
        batch t = l->work;
        l->work = l->fill;
        l->fill = t;
        l->fill.count = l->fill.len = 0;
        l->work_busy = 1;
        int topics = l->name_count;
        for (;;) {
            pthread_mutex_unlock(&l->mu);
            int rc = write_batch(l, &l->work, topics, err, sizeof(err));
            pthread_mutex_lock(&l->mu);
            if (rc == 0) {
                l->failing = 0;
                l->committed += (int64_t)l->work.count;
                if (l->syncer) {
                    l->unsynced_bytes += (int64_t)l->work.len;
                    pthread_cond_signal(&l->sync_wake);
                } else {
                    l->durable = l->committed;
                }
                break;
            }
            l->failing = 1;
            l->attempts_failed++;
            snprintf(l->last_error, sizeof(l->last_error), "%s", err);
            pthread_cond_broadcast(&l->done);
            if (l->stopping)
                break; /* closing: the one attempt failed, the batch is not written */
            struct timespec until;
            deadline_after(&until, SQL_RETRY_MS);
            while (!l->stopping && pthread_cond_timedwait(&l->retry, &l->mu, &until) == 0)
                ;
        }
        l->work.count = l->work.len = 0;
        l->work_busy = 0;
        pthread_cond_broadcast(&l->done);
        if (l->restart_due && !l->stopping) {
            pthread_mutex_unlock(&l->mu);
            restart_wal(l);
            pthread_mutex_lock(&l->mu);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int64_t queued_bytes(const sqlite_log *l)
{
    return (int64_t)(l->fill.len + (l->work_busy ? l->work.len : 0));
}

/* Records not yet acknowledged: queued, being written, or committed and
 * not yet durable. */
static int64_t queued_records(const sqlite_log *l)
{
    return l->produced - l->durable;
}

/* Queues a record for the writer thread; waits (up to busy_timeout_ms) only
 * when sqlite.queue.max.bytes are already queued. */
static int sqlite_produce(void *impl, const char *topic, const void *key, size_t key_len,
                          const void *value, size_t value_len, const ev_header *headers,
                          size_t header_count, int64_t timestamp_ms, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    pending p = {.ts_ms = timestamp_ms};
    int rc = 0, t;

    if (value_len >= l->max_length || key_len > 65536)
        return ev__fail(errstr, n, EV_ERR_INVALID, "%s: record of %zu bytes is too large", topic,
                        value_len);
    pthread_mutex_lock(&l->mu);
    if (!l->thread_started) {
        if (l->syncer && !l->sync_started) {
            if (pthread_create(&l->sync_thread, NULL, syncer_main, l) != 0) {
                rc = ev__fail(errstr, n, EV_ERR_IO, "%s: cannot start the syncer thread", l->path);
                goto out;
            }
            l->sync_started = 1;
        }
        checkpointer_start(l);
        if (pthread_create(&l->thread, NULL, writer_main, l) != 0) {
            rc = ev__fail(errstr, n, EV_ERR_IO, "%s: cannot start the writer thread", l->path);
            goto out;
        }
        l->thread_started = 1;
    }
    if (l->sync_failed) {
        rc = ev__fail(errstr, n, EV_ERR_IO, "%s", l->sync_error);
        goto out;
    }
    if ((t = topic_index(l, topic, errstr, n)) < 0) {
        rc = t;
        goto out;
    }
    if (queued_bytes(l) >= l->queue_max_bytes) {
        struct timespec until;
        deadline_after(&until, l->busy_timeout_ms);
        while (queued_bytes(l) >= l->queue_max_bytes)
            if (pthread_cond_timedwait(&l->done, &l->mu, &until) == ETIMEDOUT) {
                rc = ev__fail(errstr, n, EV_ERR_TIMED_OUT,
                              "%s: %lld bytes queued for more than %lld ms (writer: %s)", l->path,
                              (long long)queued_bytes(l), (long long)l->busy_timeout_ms,
                              l->failing ? l->last_error : "writing");
                goto out;
            }
    }
    p.topic = t;
    batch *b = &l->fill;
    if (b->count == b->pend_cap) {
        size_t cap = b->pend_cap ? b->pend_cap * 2 : 1024;
        pending *np = realloc(b->pend, cap * sizeof(*np));
        if (!np) {
            rc = EV_ERR_NOMEM;
            goto out;
        }
        b->pend = np;
        b->pend_cap = cap;
    }
    size_t mark = b->len;
    p.key_len = key_len;
    p.value_len = value_len;
    if ((rc = arena_put(b, key, key_len, &p.key_off)) ||
        (rc = arena_put(b, value, value_len, &p.value_off)) ||
        (rc = arena_put_headers(b, headers, header_count, &p.hdr_off, &p.hdr_len))) {
        b->len = mark;
        goto out;
    }
    b->pend[b->count++] = p;
    l->produced++;
    if (b->count == 1) /* the writer waits only for an empty queue: one wake per batch */
        pthread_cond_signal(&l->wake);
out:
    pthread_mutex_unlock(&l->mu);
    return rc;
}

static int sqlite_flush(void *impl, int timeout_ms, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    struct timespec until;
    int rc = 0;
    deadline_after(&until, timeout_ms);
    pthread_mutex_lock(&l->mu);
    int64_t attempts = l->attempts_failed;
    int64_t target = l->produced; /* what was produced before this flush */
    l->flushing++;
    pthread_cond_signal(&l->wake); /* a lingering writer goes now */
    while (l->durable < target) {
        if (l->sync_failed) {
            rc = ev__fail(errstr, n, EV_ERR_IO, "%lld records not acknowledged: %s",
                          (long long)(target - l->durable), l->sync_error);
            break;
        }
        if (l->attempts_failed != attempts) {
            rc = ev__fail(errstr, n, EV_ERR_IO, "%lld records not acknowledged: %s",
                          (long long)(target - l->durable), l->last_error);
            break;
        }
        if (pthread_cond_timedwait(&l->done, &l->mu, &until) == ETIMEDOUT && l->durable < target) {
            rc = ev__fail(errstr, n, EV_ERR_TIMED_OUT, "%lld records still queued after %d ms%s%s",
                          (long long)(target - l->durable), timeout_ms, l->failing ? ": " : "",
                          l->failing ? l->last_error : "");
            break;
        }
    }
    l->flushing--;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* The writer retries a failed batch until it is written: nothing is given
 * up on (what is queued when the process dies is not acknowledged, and
 * ev_log_backlog says so while it lives). */
static int64_t sqlite_lost(void *impl)
{
    (void)impl;
    return 0;
}

static int sqlite_backlog(void *impl, int64_t *records, int64_t *bytes, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    *records = queued_records(l);
    *bytes = queued_bytes(l) + l->unsynced_bytes;
    if (l->sync_failed)
        rc = ev__fail(errstr, n, EV_ERR_IO, "%lld records waiting: %s", (long long)*records,
                      l->sync_error);
    else if (l->failing)
        rc = ev__fail(errstr, n, EV_ERR_IO, "%lld records waiting, retrying: %s",
                      (long long)*records, l->last_error);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* ------------------------------------------------------------- consumer */

static void reader_reset(topic_reader *r)
{
    if (r->select)
        sqlite3_reset(r->select);
}

/* The reader's fatal error: SQLite found the file damaged (a zeroed page,
 * garbage in a b-tree). Said once with the file, the table and the offset
 * being read; every later poll returns it again. */
static int read_fail(sqlite_log *l, topic_reader *r, int sqlite_rc, char *errstr, size_t n,
                     const char *what)
{
    if (!is_damaged(sqlite_rc))
        return ev__fail(errstr, n, EV_ERR_IO, "%s: table \"t:%s\": %s: %s", l->path, r->name, what,
                        sqlite3_errmsg(l->rdb));
    l->fatal = 1;
    snprintf(l->fatal_error, sizeof(l->fatal_error),
             "%s: table \"t:%s\", reading from offset %lld: %s: the log file is corrupt; this "
             "reader stops",
             l->path, r->name, (long long)r->next_offset, sqlite3_errmsg(l->rdb));
    return ev__fail(errstr, n, EV_ERR_FATAL, "%s", l->fatal_error);
}

/* Prepares r's query when its table exists; r->select stays NULL while it
 * does not (a read-only reader creates nothing and looks again later). */
static int reader_prepare(sqlite_log *l, topic_reader *r, char *errstr, size_t n)
{
    char sql[SQL_TOPIC_MAX * 2 + 256];
    int columns = 0, has_crc = 0, has_ext = 0, rc;
    if ((rc = table_columns(l, l->rdb, r->name, &columns, &has_crc, &has_ext, errstr, n))) {
        if (rc == EV_ERR_FATAL)
            l->fatal = 1, snprintf(l->fatal_error, sizeof(l->fatal_error), "%s", errstr);
        return rc;
    }
    if (columns == 0)
        return 0;
    snprintf(sql, sizeof(sql),
             "SELECT offset, ts_ms, key, value, headers, %s, %s FROM \"t:%s\" WHERE offset >= ? "
             "ORDER BY offset LIMIT 512",
             has_crc ? "crc" : "NULL", has_ext ? "value_at, value_len" : "NULL, NULL", r->name);
    if ((rc = sqlite3_prepare_v3(l->rdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &r->select, NULL)))
        return read_fail(l, r, rc, errstr, n, "prepare");
    return 0;
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
        l->reader_count++;
        /* A writer creates the table, so its reader can wait for a topic no
         * one has written yet; a read-only reader waits without it. */
        if (!l->read_only) {
            snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS \"t:%s\"" SQL_TOPIC_COLUMNS ";",
                     topics[i]);
            if ((rc = exec_setup(l, l->rdb, sql, errstr, n)) ||
                (rc = table_migrate(l, l->rdb, topics[i], errstr, n)))
                return rc;
        }
        if ((rc = reader_prepare(l, r, errstr, n)))
            return rc;
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

static int sqlite_subscribe(void *impl, const char *cursor, const char *const *topics, size_t count,
                            int alone, char *errstr, size_t n)
{
    (void)alone; /* a SQLite cursor has no group to join */
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
        if (!r->select && from.kind != EV_FROM_OFFSET) {
            r->next_offset = 0; /* no table yet: everything is after */
            continue;
        }
        switch (from.kind) {
        case EV_FROM_BEGINNING: r->next_offset = 0; break;
        case EV_FROM_OFFSET: r->next_offset = from.value; break;
        case EV_FROM_END:
            snprintf(sql, sizeof(sql),
                     "SELECT COALESCE(MAX(offset) + 1, 0) FROM \"t:%s\" WHERE ? = 0", r->name);
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

/* Reads the value of the row at offset of topic from the values file into
 * l->vbuf: 0; EV_ERR_CORRUPT naming the file, the record and what is
 * missing when the row names bytes the file does not have (it ends before
 * them, or there is no file): the record is lost; EV_ERR_IO or
 * EV_ERR_NOMEM when reading failed otherwise (no descriptor, EIO, no
 * memory): the caller reads the row again at the next poll. */
static int values_read(sqlite_log *l, const char *topic, int64_t offset, int64_t at, int64_t len,
                       char *errstr, size_t n)
{
    if (at < 0 || len < 0 || (uint64_t)len >= l->max_length || at > INT64_MAX - len)
        return ev__fail(errstr, n, EV_ERR_CORRUPT,
                        "%s: topic %s offset %lld: value_at %lld, value_len %lld: not a place in "
                        "the values file",
                        l->path, topic, (long long)offset, (long long)at, (long long)len);
    if (l->values_rfd < 0 && (l->values_rfd = open(l->vpath, O_RDONLY | O_CLOEXEC)) < 0)
        return ev__fail(errstr, n, errno == ENOENT ? EV_ERR_CORRUPT : EV_ERR_IO,
                        "%s: topic %s offset %lld: its value (%lld bytes) is in the log's values "
                        "file, which cannot be opened: %s",
                        l->vpath, topic, (long long)offset, (long long)len, strerror(errno));
    if ((size_t)len > l->vbuf_cap) {
        unsigned char *b = realloc(l->vbuf, (size_t)len);
        if (!b)
            return ev__fail(errstr, n, EV_ERR_NOMEM,
                            "%s: topic %s offset %lld: no memory for its value of %lld bytes",
                            l->path, topic, (long long)offset, (long long)len);
        l->vbuf = b;
        l->vbuf_cap = (size_t)len;
    }
    for (int64_t done = 0; done < len;) {
        ssize_t r = pread(l->values_rfd, l->vbuf + done, (size_t)(len - done), (off_t)(at + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ev__fail(
                errstr, n, EV_ERR_IO, "%s: topic %s offset %lld: reading %lld bytes at %lld: %s",
                l->vpath, topic, (long long)offset, (long long)len, (long long)at, strerror(errno));
        if (r == 0)
            return ev__fail(errstr, n, EV_ERR_CORRUPT,
                            "%s: topic %s offset %lld: expected %lld bytes at %lld, the file ends "
                            "before them (truncated)",
                            l->vpath, topic, (long long)offset, (long long)len, (long long)at);
        done += r;
    }
    return 0;
}

/* Returns 1 and fills l->msg when reader r has a row, 0 when it has none. */
static int next_row(sqlite_log *l, topic_reader *r, char *errstr, size_t n, int *err)
{
    int rc;
    *err = 0;
    if (!r->select && ((*err = reader_prepare(l, r, errstr, n)) || !r->select))
        return 0; /* no table yet: nothing to read */
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
        *err = read_fail(l, r, rc, errstr, n, "read");
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
    size_t h_len = (size_t)sqlite3_column_bytes(s, 4);
    r->next_offset = l->msg.offset + 1;
    r->batch_rows++;
    if (sqlite3_column_type(s, 6) != SQLITE_NULL) {
        int64_t len = sqlite3_column_int64(s, 7);
        if ((*err = values_read(l, r->name, l->msg.offset, sqlite3_column_int64(s, 6), len, errstr,
                                n)) &&
            *err != EV_ERR_CORRUPT) { /* not read: the row again at the next poll */
            r->next_offset = l->msg.offset;
            sqlite3_reset(s);
            return 0;
        }
        if (*err) {
            l->msg.value = NULL;
            l->msg.value_len = 0;
            l->msg.headers = l->headers;
            l->msg.header_count = 0;
            return 1;
        }
        l->msg.value = l->vbuf;
        l->msg.value_len = (size_t)len;
    }
    if (sqlite3_column_type(s, 5) == SQLITE_NULL) {
        l->unchecked++; /* written before records carried a checksum */
    } else {
        uint32_t stored = (uint32_t)sqlite3_column_int64(s, 5);
        uint32_t crc = row_crc(l->msg.offset, l->msg.timestamp_ms, l->msg.key, l->msg.key_len,
                               l->msg.value, l->msg.value_len, h, h_len);
        if (crc != stored) {
            l->msg.headers = l->headers;
            l->msg.header_count = 0;
            *err = ev__fail(errstr, n, EV_ERR_CORRUPT,
                            "%s: topic %s offset %lld: checksum mismatch (stored %08x, computed "
                            "%08x): the record is corrupt",
                            l->path, r->name, (long long)l->msg.offset, stored, crc);
            return 1;
        }
    }
    if (parse_headers(l, h, h_len) != 0) {
        l->msg.header_count = 0; /* keep the record; its headers are unreadable */
    }
    return 1;
}

static int sqlite_poll(void *impl, int timeout_ms, const ev_msg **msg, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    int64_t deadline = ev_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int err;

    if (l->reader_count == 0)
        return ev__fail(errstr, n, EV_ERR_INVALID, "poll: neither subscribed nor assigned");
    if (l->fatal)
        return ev__fail(errstr, n, EV_ERR_FATAL, "%s", l->fatal_error);
    for (;;) {
        /* Round-robin over topics, draining the current batch first. */
        for (size_t k = 0; k < l->reader_count; k++) {
            topic_reader *r = &l->readers[(l->current + k) % l->reader_count];
            if (next_row(l, r, errstr, n, &err)) {
                l->current = (l->current + k) % l->reader_count;
                l->end_reported = 0;
                *msg = &l->msg;
                return err; /* 0, or EV_ERR_CORRUPT: a record whose checksum fails or whose value
                               the values file lacks */
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
        while (ev_mono_ms() < deadline) {
            sqlite3_stmt *s;
            int src = sqlite3_prepare_v2(l->rdb, "PRAGMA data_version", -1, &s, NULL);
            if (src == SQLITE_OK) {
                if ((src = sqlite3_step(s)) == SQLITE_ROW)
                    dv = sqlite3_column_int64(s, 0);
                sqlite3_finalize(s);
            }
            if (is_damaged(src))
                return read_fail(l, &l->readers[l->current], src, errstr, n, "data_version");
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

/* ------------------------------------------------------------- leases */

static int lease_db(sqlite_log *l, char *errstr, size_t n)
{
    if (l->ldb)
        return 0;
    int rc = open_db(l, &l->ldb, 0, errstr, n);
    if (!rc)
        rc = exec_setup(l, l->ldb,
                        "CREATE TABLE IF NOT EXISTS msrs_leases(name TEXT PRIMARY KEY,"
                        " holder TEXT NOT NULL, expires_ms INTEGER NOT NULL,"
                        " epoch INTEGER NOT NULL);",
                        errstr, n);
    if (rc) {
        sqlite3_close(l->ldb);
        l->ldb = NULL;
    }
    return rc;
}

/* One IMMEDIATE transaction: read the lease; take it when it is free,
 * expired or ours (renewing it), else report its holder. Wall-clock time:
 * every process of an embedded log runs on this machine's clock. */
static int sqlite_lead(void *impl, const char *topic, const char *name, const char *holder,
                       int64_t ttl_ms, char *leader, size_t leader_size, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    sqlite3_stmt *get = NULL, *put = NULL;
    int rc, lead = 0;
    (void)topic;
    if ((rc = lease_db(l, errstr, n)) || (rc = exec(l, l->ldb, "BEGIN IMMEDIATE", errstr, n)))
        return rc;
    int64_t now = ev_now_ns() / 1000000;
    if (sqlite3_prepare_v2(l->ldb, "SELECT holder, expires_ms, epoch FROM msrs_leases WHERE name=?",
                           -1, &get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(
            l->ldb,
            "INSERT INTO msrs_leases(name, holder, expires_ms, epoch) VALUES(?,?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET holder=excluded.holder,"
            " expires_ms=excluded.expires_ms, epoch=excluded.epoch",
            -1, &put, NULL) != SQLITE_OK) {
        rc = db_fail(l, l->ldb, errstr, n, "lease");
        goto out;
    }
    sqlite3_bind_text(get, 1, name, -1, SQLITE_STATIC);
    int64_t epoch = 0;
    rc = sqlite3_step(get);
    if (rc == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(get, 0);
        int64_t expires = sqlite3_column_int64(get, 1);
        epoch = sqlite3_column_int64(get, 2);
        if (strcmp(h, holder) != 0 && expires > now) {
            snprintf(leader, leader_size, "%s", h);
            rc = 0;
            goto out;
        }
        if (strcmp(h, holder) != 0)
            epoch++;
    } else if (rc != SQLITE_DONE) {
        rc = db_fail(l, l->ldb, errstr, n, "lease");
        goto out;
    } else {
        epoch = 1;
    }
    sqlite3_bind_text(put, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(put, 2, holder, -1, SQLITE_STATIC);
    sqlite3_bind_int64(put, 3, now + ttl_ms);
    sqlite3_bind_int64(put, 4, epoch);
    if (sqlite3_step(put) != SQLITE_DONE) {
        rc = db_fail(l, l->ldb, errstr, n, "lease");
        goto out;
    }
    snprintf(leader, leader_size, "%s", holder);
    lead = 1;
    rc = 0;
out:
    sqlite3_finalize(get);
    sqlite3_finalize(put);
    if (rc) {
        sqlite3_exec(l->ldb, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if ((rc = exec(l, l->ldb, "COMMIT", errstr, n))) {
        sqlite3_exec(l->ldb, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return lead;
}

static int sqlite_resign(void *impl, const char *name, const char *holder, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    sqlite3_stmt *del = NULL;
    int rc;
    if ((rc = lease_db(l, errstr, n)))
        return rc;
    if (sqlite3_prepare_v2(l->ldb, "DELETE FROM msrs_leases WHERE name=? AND holder=?", -1, &del,
                           NULL) != SQLITE_OK)
        return db_fail(l, l->ldb, errstr, n, "resign");
    sqlite3_bind_text(del, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(del, 2, holder, -1, SQLITE_STATIC);
    rc = sqlite3_step(del) == SQLITE_DONE ? 0 : db_fail(l, l->ldb, errstr, n, "resign");
    sqlite3_finalize(del);
    return rc;
}

static int64_t sqlite_unchecked(void *impl)
{
    return ((sqlite_log *)impl)->unchecked;
}

static int sqlite_lag(void *impl, int64_t *records, char *errstr, size_t n)
{
    sqlite_log *l = impl;
    char sql[SQL_TOPIC_MAX + 64];
    for (size_t i = 0; l->rdb && i < l->reader_count; i++) {
        topic_reader *r = &l->readers[i];
        sqlite3_stmt *s = NULL;
        snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(offset) + 1, 0) FROM \"t:%s\"", r->name);
        if (sqlite3_prepare_v2(l->rdb, sql, -1, &s, NULL) != SQLITE_OK) {
            sqlite3_finalize(s);
            continue; /* no table yet: nothing to lag behind */
        }
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW && sqlite3_column_int64(s, 0) > r->next_offset)
            *records += sqlite3_column_int64(s, 0) - r->next_offset;
        sqlite3_finalize(s);
        if (rc != SQLITE_ROW)
            return db_fail(l, l->rdb, errstr, n, "lag");
    }
    return 0;
}

const ev__backend ev__backend_sqlite = {
    .open = sqlite_open,
    .close = sqlite_close,
    .produce = sqlite_produce,
    .flush = sqlite_flush,
    .backlog = sqlite_backlog,
    .lost = sqlite_lost,
    .lag = sqlite_lag,
    .subscribe = sqlite_subscribe,
    .assign = sqlite_assign,
    .poll = sqlite_poll,
    .commit = sqlite_commit,
    .lead = sqlite_lead,
    .resign = sqlite_resign,
    .unchecked = sqlite_unchecked,
};
