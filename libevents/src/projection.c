/* projection.c — a state folded from the log: the fold loop, per-partition
 * positions with offset-gap checks, bounds (limit, until), the state file,
 * and a fold with read-ahead on a second thread (ev.h, "projection"). */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROJ_MAX_TOPICS 8

const char *const ev_state_topics[EV_STATE_TOPIC_COUNT] = {"nodes", "devices", "clock", "sessions",
                                                           "commands"};
const char *const ev_clock_topics[2] = {"clock", "devices"};

struct ev_projection {
    ev_log *log;
    ev_state *state;
    ev_projection_opts opts;
    char *state_file;
    int caught_up;
    int64_t records, skipped, gaps;
    int64_t max_age_ns;   /* the oldest record's age when folded, since ev_projection_lag_ns */
    int64_t last_time_ns; /* ce_time of the last record folded */
    int at_end;           /* the last step found the end of the log */
    ev_offsets *offsets;  /* read (holes) and folded, per topic and partition */
};

static void note(const ev_projection *p, ev_projection_note n)
{
    n.records = p->records;
    if (p->opts.on_note)
        p->opts.on_note(p->opts.note_arg, &n);
}

int ev_projection_new(ev_projection **out, ev_log *log, ev_state *state, const char *const *topics,
                      size_t topic_count, const ev_projection_opts *opts, char *errstr,
                      size_t errstr_size)
{
    char names[PROJ_MAX_TOPICS][320];
    const char *full[PROJ_MAX_TOPICS];
    *out = NULL;
    if (!log || !state || topic_count == 0 || topic_count > PROJ_MAX_TOPICS) {
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "projection: 1 to %d topics, a log and a state", PROJ_MAX_TOPICS);
    }
    ev_projection *p = calloc(1, sizeof(*p));
    if (!p) {
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "out of memory");
    }
    p->log = log;
    p->state = state;
    if (opts)
        p->opts = *opts;
    if (!(p->offsets = ev_offsets_new(1)) ||
        (p->opts.state_file && !(p->state_file = strdup(p->opts.state_file)))) {
        ev_offsets_destroy(p->offsets);
        free(p);
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "out of memory");
    }
    p->opts.state_file = p->state_file;
    for (size_t i = 0; i < topic_count; i++)
        full[i] = ev_log_topic(log, topics[i], names[i], sizeof(names[i]));
    int rc =
        ev_log_assign(log, full, topic_count, (ev_from){EV_FROM_BEGINNING, 0}, errstr, errstr_size);
    if (rc) {
        ev_projection_destroy(p);
        return rc;
    }
    *out = p;
    return 0;
}

void ev_projection_destroy(ev_projection *p)
{
    if (!p)
        return;
    ev_offsets_destroy(p->offsets);
    free(p->state_file);
    free(p);
}

int ev_projection_caught_up(const ev_projection *p)
{
    return p->caught_up;
}
int64_t ev_projection_records(const ev_projection *p)
{
    return p->records;
}
int64_t ev_projection_skipped(const ev_projection *p)
{
    return p->skipped;
}
int64_t ev_projection_gaps(const ev_projection *p)
{
    return p->gaps;
}
int64_t ev_projection_lag_ns(ev_projection *p, int64_t now_ns)
{
    int64_t lag = p->max_age_ns;
    p->max_age_ns = 0;
    if (!p->at_end && p->last_time_ns && now_ns - p->last_time_ns > lag)
        lag = now_ns - p->last_time_ns; /* behind, or stuck, since that record */
    return lag;
}

/* A record not folded: counted and named. */
static void skip(ev_projection *p, const ev_msg *m, const char *why)
{
    p->skipped++;
    note(p, (ev_projection_note){.kind = EV_PROJ_SKIPPED,
                                 .topic = m->topic,
                                 .partition = m->partition,
                                 .offset = m->offset,
                                 .count = 1,
                                 .message = why});
}

/* 1 when m is at or past the limit. */
static int past_limit(const ev_projection *p, const ev_msg *m)
{
    char part[16];
    if (!p->opts.limit)
        return 0; /* the usual case: no formatting on every record */
    snprintf(part, sizeof(part), "%d", (int)m->partition);
    json_t *lim = json_object_get(json_object_get(p->opts.limit, m->topic), part);
    return lim && m->offset >= json_integer_value(lim);
}

/* Folds one record (unless past a bound). corrupt is the log's error for
 * a record that failed its checksum (poll's EV_ERR_CORRUPT), NULL for a
 * sound one: such a record is skipped, counted and named. 0, or
 * EV_ERR_NOMEM. */
static int fold_msg(ev_projection *p, const ev_msg *m, const char *corrupt, char *errstr,
                    size_t errstr_size)
{
    char err[512];
    ev_event ev;
    int64_t first, missing = ev_offsets_see(p->offsets, m, &first);
    if (missing < 0)
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "out of memory");
    if (missing) { /* records were lost (retention, the mock's 5 MiB): said */
        p->gaps++;
        note(p, (ev_projection_note){.kind = EV_PROJ_GAP,
                                     .topic = m->topic,
                                     .partition = m->partition,
                                     .offset = first,
                                     .count = missing});
    }
    if (past_limit(p, m))
        return 0;
    if (corrupt) {
        p->records++;
        skip(p, m, corrupt);
        return ev_offsets_mark(p->offsets, m);
    }
    /* peek: the reducers read the value only when they need it */
    int bad = ev_event_peek(m, &ev, err, sizeof(err));
    if (!bad && p->opts.until_ns && ev.time_ns > p->opts.until_ns)
        return 0;
    int applied = bad ? bad : ev_state_apply(p->state, &ev, err, sizeof(err));
    if (applied == EV_ERR_NOMEM) /* not the record's fault: the state is not whole */
        return ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "state: out of memory");
    p->records++;
    p->at_end = 0;
    if (!bad) {
        int64_t age = ev_now_ns() - ev.time_ns;
        p->last_time_ns = ev.time_ns;
        if (age > p->max_age_ns)
            p->max_age_ns = age;
    }
    if (applied < 0)
        skip(p, m, err);
    else if (applied == 0 && p->opts.on_apply)
        p->opts.on_apply(p->opts.apply_arg, &ev);
    return ev_offsets_mark(p->offsets, m);
}

int ev_projection_step(ev_projection *p, int timeout_ms, char *errstr, size_t errstr_size)
{
    const ev_msg *m;
    int rc = ev_log_poll(p->log, timeout_ms, &m, errstr, errstr_size);
    if (rc == 0)
        return fold_msg(p, m, NULL, errstr, errstr_size);
    if (rc == EV_ERR_CORRUPT) {
        char why[512];
        snprintf(why, sizeof(why), "%s", errstr ? errstr : "corrupt record");
        return fold_msg(p, m, why, errstr, errstr_size);
    }
    if (rc == EV_ERR_END)
        p->caught_up = p->at_end = 1;
    return rc;
}

json_t *ev_projection_snapshot(const ev_projection *p)
{
    json_t *j = json_object(), *state = ev_state_to_json(p->state);
    json_object_update(j, state);
    json_decref(state);
    json_t *pos = ev_offsets_marked(p->offsets);
    json_object_set_new(j, "positions", pos);
    json_object_set_new(j, "records", json_integer(p->records));
    json_object_set_new(j, "undecodable", json_integer(p->skipped));
    json_object_set_new(j, "offset_gaps", json_integer(p->gaps));
    return j;
}

/* The state file: written whole to PATH.tmp, then renamed over PATH. */
static void write_snapshot(const ev_projection *p)
{
    char tmp[4096], msg[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", p->state_file);
    json_t *j = ev_projection_snapshot(p);
    if (json_dump_file(j, tmp, JSON_SORT_KEYS | JSON_INDENT(1)) || rename(tmp, p->state_file)) {
        snprintf(msg, sizeof(msg), "state.file %s: cannot write: %s", p->state_file,
                 strerror(errno));
        note(p, (ev_projection_note){.kind = EV_PROJ_STATE_FILE, .message = msg});
    }
    json_decref(j);
}

int ev_projection_run(ev_projection *p, int64_t check_ms, ev_projection_check_cb check, void *arg,
                      const volatile sig_atomic_t *stop, char *errstr, size_t errstr_size)
{
    int64_t next_check = 0, written = -1;
    char said[512] = "";
    while (!*stop) {
        int was = p->caught_up;
        int rc = ev_projection_step(p, (int)check_ms, errstr, errstr_size);
        if (rc == EV_ERR_END && !was) {
            note(p, (ev_projection_note){.kind = EV_PROJ_CAUGHT_UP});
        } else if (rc == EV_ERR_FATAL || rc == EV_ERR_NOMEM || rc == EV_ERR_INVALID) {
            return rc;
        } else if (rc < 0 && rc != EV_ERR_END && rc != EV_ERR_TIMED_OUT) {
            /* retriable (EV_ERR_IO): said when it changes, not at every poll */
            if (errstr && strcmp(said, errstr) != 0) {
                snprintf(said, sizeof(said), "%s", errstr);
                note(p, (ev_projection_note){.kind = EV_PROJ_LOG_ERROR, .message = said});
            }
            continue;
        }
        if (p->caught_up && ev_mono_ms() >= next_check) {
            if (check)
                check(arg);
            next_check = ev_mono_ms() + check_ms;
            if (p->state_file && p->records != written) {
                write_snapshot(p);
                written = p->records;
            }
        }
    }
    return 0;
}
/* ----------------------------------------------- fold with read-ahead */

/* ev_projection_fold reads the log on a second thread: reading (the log's
 * own decoding of rows or fetches) and folding (checking and applying each
 * event) each take about half the time of a rebuild, so on two cores they
 * overlap. Records are copied into batches, two of them taking turns. */
#define FOLD_BATCH_BYTES (4 << 20)
#define FOLD_BATCH_MSGS  8192
#define FOLD_HEADERS     16

typedef struct fold_batch {
    ev_msg msgs[FOLD_BATCH_MSGS];
    ev_header headers[FOLD_BATCH_MSGS][FOLD_HEADERS];
    const char *corrupt[FOLD_BATCH_MSGS]; /* poll's EV_ERR_CORRUPT text, or NULL */
    unsigned char *arena;
    size_t count, len, cap;
    int full; /* handed to the folding thread */
    int rc;   /* after the last message: 0, EV_ERR_END or the log's error */
    char err[512];
} fold_batch;

typedef struct fold_reader {
    ev_log *log;
    fold_batch *batch[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    const volatile sig_atomic_t *interrupt; /* the caller's stop flag, or NULL */
    int caught_up; /* the log said its end once already: it will not again until
                      new records come, so a quiet poll is the end */
} fold_reader;

static unsigned char *arena_copy(fold_batch *b, const void *p, size_t n)
{
    unsigned char *at = b->arena + b->len;
    if (n)
        memcpy(at, p, n);
    b->len += n;
    return at;
}

/* The bytes batch_add copies for m (and the error text of a corrupt one). */
static size_t msg_bytes(const ev_msg *m, const char *corrupt)
{
    size_t n = strlen(m->topic) + 1 + m->key_len + m->value_len;
    if (corrupt)
        n += strlen(corrupt) + 1;
    for (size_t i = 0; i < m->header_count && i < FOLD_HEADERS; i++)
        n += strlen(m->headers[i].name) + 1 + m->headers[i].value_len;
    return n;
}

static void batch_add(fold_batch *b, const ev_msg *m, const char *corrupt)
{
    ev_msg *c = &b->msgs[b->count];
    b->corrupt[b->count] =
        corrupt ? (const char *)arena_copy(b, corrupt, strlen(corrupt) + 1) : NULL;
    ev_header *h = b->headers[b->count++];
    *c = *m;
    c->topic = (const char *)arena_copy(b, m->topic, strlen(m->topic) + 1);
    c->key = arena_copy(b, m->key, m->key_len);
    c->value = arena_copy(b, m->value, m->value_len);
    c->header_count = m->header_count < FOLD_HEADERS ? m->header_count : FOLD_HEADERS;
    for (size_t i = 0; i < c->header_count; i++) {
        h[i].name = (const char *)arena_copy(b, m->headers[i].name, strlen(m->headers[i].name) + 1);
        h[i].value = arena_copy(b, m->headers[i].value, m->headers[i].value_len);
        h[i].value_len = m->headers[i].value_len;
    }
    c->headers = h;
}

/* Grows b's arena to hold need more bytes, moving the copied messages'
 * pointers with it. */
static int arena_grow(fold_batch *b, size_t need)
{
    size_t cap = b->cap * 2 > b->len + need ? b->cap * 2 : b->len + need;
    unsigned char *a = malloc(cap);
    if (!a)
        return EV_ERR_NOMEM;
    memcpy(a, b->arena, b->len);
#define MOVE(ptr) ((ptr) = (void *)(a + ((const unsigned char *)(ptr)-b->arena)))
    for (size_t i = 0; i < b->count; i++) {
        ev_msg *m = &b->msgs[i];
        ev_header *h = b->headers[i];
        MOVE(m->topic);
        MOVE(m->key);
        MOVE(m->value);
        if (b->corrupt[i])
            MOVE(b->corrupt[i]);
        for (size_t k = 0; k < m->header_count; k++) {
            MOVE(h[k].name);
            MOVE(h[k].value);
        }
    }
#undef MOVE
    free(b->arena);
    b->arena = a;
    b->cap = cap;
    return 0;
}

static void *fold_read(void *arg)
{
    fold_reader *r = arg;
    for (int k = 0;; k ^= 1) {
        fold_batch *b = r->batch[k];
        pthread_mutex_lock(&r->mu);
        while (b->full && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        int stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            return NULL;
        b->count = b->len = 0;
        b->rc = 0;
        const ev_msg *m;
        for (;;) {
            int rc = ev_log_poll(r->log, 1000, &m, b->err, sizeof(b->err));
            if (rc == EV_ERR_TIMED_OUT && r->caught_up)
                rc = EV_ERR_END;
            else if (rc == EV_ERR_TIMED_OUT && !(r->interrupt && *r->interrupt))
                continue;
            if (rc && rc != EV_ERR_CORRUPT) {
                b->rc = rc;
                break;
            }
            const char *corrupt = rc == EV_ERR_CORRUPT ? b->err : NULL;
            size_t need = msg_bytes(m, corrupt);
            /* m must be copied now: the log's pointers die at the next poll */
            if (b->len + need > b->cap && arena_grow(b, need)) {
                b->rc = EV_ERR_NOMEM;
                snprintf(b->err, sizeof(b->err), "out of memory");
                break;
            }
            batch_add(b, m, corrupt);
            if (b->count == FOLD_BATCH_MSGS || b->len >= FOLD_BATCH_BYTES)
                break;
        }
        pthread_mutex_lock(&r->mu);
        b->full = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (b->rc)
            return NULL;
    }
}

int ev_projection_fold(ev_projection *p, const volatile sig_atomic_t *stop, char *errstr,
                       size_t errstr_size)
{
    int64_t last = ev_mono_ms();
    int rc = EV_ERR_NOMEM;
    fold_reader r = {.log = p->log, .interrupt = stop, .caught_up = p->caught_up};
    pthread_t th;
    for (int k = 0; k < 2; k++) {
        r.batch[k] = calloc(1, sizeof(fold_batch));
        if (r.batch[k] && (r.batch[k]->arena = malloc(FOLD_BATCH_BYTES)))
            r.batch[k]->cap = FOLD_BATCH_BYTES;
    }
    if (!r.batch[0] || !r.batch[1] || !r.batch[0]->arena || !r.batch[1]->arena) {
        ev__fail(errstr, errstr_size, EV_ERR_NOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    if (pthread_create(&th, NULL, fold_read, &r)) {
        rc = ev__fail(errstr, errstr_size, EV_ERR_FATAL, "cannot start the reading thread");
        goto destroy;
    }
    for (int k = 0;; k ^= 1) {
        fold_batch *b = r.batch[k];
        pthread_mutex_lock(&r.mu);
        while (!b->full)
            pthread_cond_wait(&r.cv, &r.mu);
        pthread_mutex_unlock(&r.mu);
        int failed = 0;
        for (size_t i = 0; i < b->count && !failed; i++)
            failed = fold_msg(p, &b->msgs[i], b->corrupt[i], errstr, errstr_size);
        int end = b->rc;
        int interrupted = stop && *stop;
        if (ev_mono_ms() - last >= 1000) {
            last = ev_mono_ms();
            note(p, (ev_projection_note){.kind = EV_PROJ_PROGRESS});
        }
        pthread_mutex_lock(&r.mu);
        b->full = 0;
        if (failed || end || interrupted)
            r.stop = 1;
        pthread_cond_broadcast(&r.cv);
        pthread_mutex_unlock(&r.mu);
        if (failed || end || interrupted) {
            if (failed)
                rc = failed;
            else if (end == EV_ERR_END && !interrupted)
                rc = 0, p->caught_up = p->at_end = 1;
            else if (end && end != EV_ERR_END)
                rc = ev__fail(errstr, errstr_size, end, "%s", b->err);
            else
                rc = ev__fail(errstr, errstr_size, EV_ERR_TIMED_OUT, "interrupted");
            break;
        }
    }
    pthread_join(th, NULL);
destroy:
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
out:
    for (int k = 0; k < 2; k++) {
        if (r.batch[k])
            free(r.batch[k]->arena);
        free(r.batch[k]);
    }
    return rc;
}
