/* cli.c — shared option handling of the msrs tools. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

volatile sig_atomic_t cli_stop;

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_common_opt(cli_common *c, int opt, const char *arg)
{
    switch (opt) {
    case 'l': c->log_uri = arg; return 1;
    case 'c': c->config_path = arg; return 1;
    case 'X':
        if (c->prop_count < CLI_MAX_PROPS)
            c->props[c->prop_count++] = arg;
        return 1;
    default: return 0;
    }
}

ev_conf *cli_conf_build(const char *prog, const cli_common *c)
{
    char err[512];
    ev_conf *conf = ev_conf_new();
    const char *path = c->config_path ? c->config_path : getenv("MSRS_CONFIG");
    if (!conf)
        return NULL;
    if (path && *path && ev_conf_load_file(conf, path, err, sizeof(err)))
        goto fail;
    if (ev_conf_apply_env(conf, err, sizeof(err)))
        goto fail;
    if (c->log_uri)
        ev_conf_set(conf, "log", c->log_uri);
    for (size_t i = 0; i < c->prop_count; i++)
        if (ev_conf_set_pair(conf, c->props[i], err, sizeof(err)))
            goto fail;
    if (ev_conf_check_keys(conf, ev_conf_known_keys, err, sizeof(err)))
        goto fail;
    return conf;
fail:
    fprintf(stderr, "%s: %s\n", prog, err);
    ev_conf_destroy(conf);
    return NULL;
}

int64_t cli_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *const cli_state_topics[4] = {"nodes", "devices", "sessions", "commands"};

int cli_projection_start(cli_projection *p, const char *const *topics, size_t topic_count)
{
    char err[512], names[8][320];
    const char *full[8];
    if (topic_count > 8)
        topic_count = 8;
    for (size_t i = 0; i < topic_count; i++)
        full[i] = ev_log_topic(p->log, topics[i], names[i], sizeof(names[i]));
    if (ev_log_assign(p->log, full, topic_count, (ev_from){EV_FROM_BEGINNING, 0}, err,
                      sizeof(err))) {
        fprintf(stderr, "%s: %s\n", p->prog, err);
        return -1;
    }
    return 0;
}

/* The position entry of m's topic and partition (added if new); NULL when
 * out of memory. */
static cli_position *position_of(cli_projection *p, const ev_msg *m)
{
    cli_position *e = p->pos_count ? &p->pos[p->pos_last] : NULL;
    if (e && e->partition == m->partition && strcmp(e->topic, m->topic) == 0)
        return e;
    for (size_t i = 0; i < p->pos_count; i++)
        if (p->pos[i].partition == m->partition && strcmp(p->pos[i].topic, m->topic) == 0) {
            p->pos_last = i;
            return &p->pos[i];
        }
    cli_position *grown = realloc(p->pos, (p->pos_count + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    p->pos = grown;
    e = &p->pos[p->pos_count];
    memset(e, 0, sizeof(*e));
    snprintf(e->topic, sizeof(e->topic), "%s", m->topic);
    e->partition = m->partition;
    p->pos_last = p->pos_count++;
    return e;
}

/* Offsets have no holes in our logs: one means records were lost
 * (retention, the mock's 5 MiB per partition). Said, not skipped over. */
static void check_gap(cli_projection *p, cli_position *e, const ev_msg *m)
{
    if (m->offset > e->read) {
        p->gaps++;
        fprintf(stderr, "%s: %s partition %d: offsets %lld..%lld are missing from the log\n",
                p->prog, m->topic, (int)m->partition, (long long)e->read, (long long)m->offset - 1);
    }
    e->read = m->offset + 1;
}

/* 1 when m is at or past the limit. */
static int past_limit(const cli_projection *p, const ev_msg *m)
{
    char part[16];
    if (!p->limit)
        return 0; /* the usual case: no formatting on every record */
    snprintf(part, sizeof(part), "%d", (int)m->partition);
    json_t *lim = json_object_get(json_object_get(p->limit, m->topic), part);
    return lim && m->offset >= json_integer_value(lim);
}

/* Folds one record (unless past the limit or --until). */
static int fold_msg(cli_projection *p, const ev_msg *m)
{
    char err[512];
    ev_event ev;
    cli_position *e = position_of(p, m);
    if (!e) {
        fprintf(stderr, "%s: out of memory\n", p->prog);
        return EV_ERR_NOMEM;
    }
    check_gap(p, e, m);
    if (past_limit(p, m))
        return 0; /* not folded */
    /* peek: the reducers read the value only when they need it */
    int bad = ev_event_peek(m, &ev, err, sizeof(err));
    if (!bad && p->until_ns && ev.time_ns > p->until_ns)
        return 0; /* after --until: not folded */
    e->folded = m->offset + 1;
    p->records++;
    if (bad || ev_state_apply(p->state, &ev, err, sizeof(err)) < 0) {
        p->bad++;
        fprintf(stderr, "%s: skipped %s offset %lld: %s\n", p->prog, m->topic,
                (long long)m->offset, err);
    }
    return 0;
}

int cli_projection_step(cli_projection *p, int timeout_ms)
{
    char err[512];
    const ev_msg *m;
    int rc = ev_log_poll(p->log, timeout_ms, &m, err, sizeof(err));
    if (rc == 0)
        return fold_msg(p, m);
    if (rc != EV_ERR_END && rc != EV_ERR_TIMED_OUT)
        fprintf(stderr, "%s: %s\n", p->prog, err);
    return rc;
}

json_t *cli_projection_snapshot(const cli_projection *p)
{
    json_t *j = json_object(), *state = ev_state_to_json(p->state);
    json_object_update(j, state);
    json_decref(state);
    json_t *pos = json_object();
    for (size_t i = 0; i < p->pos_count; i++) {
        char part[16];
        json_t *t = json_object_get(pos, p->pos[i].topic);
        if (!t)
            json_object_set_new(pos, p->pos[i].topic, t = json_object());
        snprintf(part, sizeof(part), "%d", (int)p->pos[i].partition);
        json_object_set_new(t, part, json_integer(p->pos[i].folded));
    }
    json_object_set_new(j, "positions", pos);
    json_object_set_new(j, "records", json_integer(p->records));
    json_object_set_new(j, "undecodable", json_integer(p->bad));
    json_object_set_new(j, "offset_gaps", json_integer(p->gaps));
    return j;
}

void cli_projection_free(cli_projection *p)
{
    free(p->pos);
    p->pos = NULL;
    p->pos_count = p->pos_last = 0;
}

/* state.file: written whole to PATH.tmp, then renamed over PATH. */
static void write_snapshot(const cli_projection *p)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", p->state_file);
    json_t *j = cli_projection_snapshot(p);
    if (json_dump_file(j, tmp, JSON_SORT_KEYS | JSON_INDENT(1)) || rename(tmp, p->state_file))
        fprintf(stderr, "%s: state.file %s: cannot write: %s\n", p->prog, p->state_file,
                strerror(errno));
    json_decref(j);
}

int cli_projection_run(cli_projection *p, const char *const *topics, size_t topic_count)
{
    if (cli_projection_start(p, topics, topic_count))
        return CLI_EXIT_FAIL;
    int caught_up = 0;
    int64_t next_check = 0, written = -1;
    while (!cli_stop) {
        int rc = cli_projection_step(p, (int)p->check_ms);
        if (rc == EV_ERR_END && !caught_up) {
            caught_up = 1;
            fprintf(stderr, "%s: state rebuilt from %lld records\n", p->prog,
                    (long long)p->records);
        } else if (rc == EV_ERR_FATAL) {
            return CLI_EXIT_FAIL;
        }
        if (caught_up && cli_mono_ms() >= next_check) {
            p->check(p->arg);
            next_check = cli_mono_ms() + p->check_ms;
            if (p->state_file && p->records != written) {
                write_snapshot(p);
                written = p->records;
            }
        }
    }
    return CLI_EXIT_OK;
}

/* ---------------------------------------------- fold with read-ahead */

/* cli_projection_fold reads the log on a second thread: reading (the log's
 * own decoding of rows or fetches) and folding (checking and applying each
 * event) each take about half the time of a rebuild, so on two cores they
 * overlap. Records are copied into batches, two of them taking turns. */
#define FOLD_BATCH_BYTES (4 << 20)
#define FOLD_BATCH_MSGS 8192
#define FOLD_HEADERS 16

typedef struct fold_batch {
    ev_msg msgs[FOLD_BATCH_MSGS];
    ev_header headers[FOLD_BATCH_MSGS][FOLD_HEADERS];
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
} fold_reader;

static unsigned char *arena_copy(fold_batch *b, const void *p, size_t n)
{
    unsigned char *at = b->arena + b->len;
    if (n)
        memcpy(at, p, n);
    b->len += n;
    return at;
}

/* The bytes batch_add copies for m. */
static size_t msg_bytes(const ev_msg *m)
{
    size_t n = strlen(m->topic) + 1 + m->key_len + m->value_len;
    for (size_t i = 0; i < m->header_count && i < FOLD_HEADERS; i++)
        n += strlen(m->headers[i].name) + 1 + m->headers[i].value_len;
    return n;
}

static void batch_add(fold_batch *b, const ev_msg *m)
{
    ev_msg *c = &b->msgs[b->count];
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
#define MOVE(ptr) ((ptr) = (void *)(a + ((const unsigned char *)(ptr) - b->arena)))
    for (size_t i = 0; i < b->count; i++) {
        ev_msg *m = &b->msgs[i];
        ev_header *h = b->headers[i];
        MOVE(m->topic);
        MOVE(m->key);
        MOVE(m->value);
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
            if (rc == EV_ERR_TIMED_OUT && !cli_stop)
                continue;
            if (rc) {
                b->rc = rc;
                break;
            }
            size_t need = msg_bytes(m);
            /* m must be copied now: the log's pointers die at the next poll */
            if (b->len + need > b->cap && arena_grow(b, need)) {
                b->rc = EV_ERR_NOMEM;
                snprintf(b->err, sizeof(b->err), "out of memory");
                break;
            }
            batch_add(b, m);
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

int cli_projection_fold(cli_projection *p, const char *const *topics, size_t topic_count)
{
    int64_t last = cli_mono_ms();
    int rc = -1;
    if (cli_projection_start(p, topics, topic_count))
        return -1;
    fold_reader r = {.log = p->log};
    pthread_t th;
    for (int k = 0; k < 2; k++) {
        r.batch[k] = calloc(1, sizeof(fold_batch));
        if (r.batch[k] && (r.batch[k]->arena = malloc(FOLD_BATCH_BYTES)))
            r.batch[k]->cap = FOLD_BATCH_BYTES;
    }
    if (!r.batch[0] || !r.batch[1] || !r.batch[0]->arena || !r.batch[1]->arena) {
        fprintf(stderr, "%s: out of memory\n", p->prog);
        goto out;
    }
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    if (pthread_create(&th, NULL, fold_read, &r)) {
        fprintf(stderr, "%s: cannot start the reading thread\n", p->prog);
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
            failed = fold_msg(p, &b->msgs[i]) != 0;
        int end = b->rc;
        if (end && end != EV_ERR_END)
            fprintf(stderr, "%s: %s\n", p->prog, b->err);
        if (cli_mono_ms() - last >= 1000) {
            last = cli_mono_ms();
            fprintf(stderr, "%s: %lld records folded\n", p->prog, (long long)p->records);
        }
        pthread_mutex_lock(&r.mu);
        b->full = 0;
        if (failed || end || cli_stop)
            r.stop = 1;
        pthread_cond_broadcast(&r.cv);
        pthread_mutex_unlock(&r.mu);
        if (failed || end || cli_stop) {
            rc = end == EV_ERR_END && !failed && !cli_stop ? 0 : -1;
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

int cli_emit(ev_log *log, const char *prog, const char *type, const char *key, json_t *value,
             const char *id)
{
    char err[512];
    ev_emit_opts o = {.id = id};
    int rc = ev_log_emit_json(log, ev_schema_by_name(type), key, value, &o, err, sizeof(err));
    if (!rc)
        rc = ev_log_flush(log, 10000, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s: emit %s for %s: %s\n", prog, type, key, err);
    return rc;
}

int cli_mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}
