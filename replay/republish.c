/* republish.c — see republish.h. */
#include "republish.h"

#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RP_MAX_TOPICS 16

typedef struct rp_source {
    char logical[64];
    ev_log *log;
    const ev_msg *head; /* next record of this topic, or NULL at its end */
} rp_source;

static void sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    nanosleep(&ts, NULL);
}

/* The next record of s within the window (NULL past it or at the end). */
static int advance(rp_source *s, int64_t until_ms, char *err, size_t n)
{
    for (;;) {
        int rc = ev_log_poll(s->log, 1000, &s->head, err, n);
        if (rc == EV_ERR_TIMED_OUT && !cli_stop)
            continue;
        if (rc) {
            s->head = NULL;
            return rc == EV_ERR_END ? 0 : rc;
        }
        if (until_ms && s->head->timestamp_ms > until_ms)
            s->head = NULL; /* the rest is after the window */
        return 0;
    }
}

/* The window of session sid: first to last record keyed sid on the
 * sessions topic, widened by margins. 0, or -1 when it has no record. */
static int session_window(const ev_conf *conf, const char *sid, int64_t *from_ms, int64_t *to_ms)
{
    char err[512], name[320];
    ev_log *log;
    const ev_msg *m;
    *from_ms = *to_ms = 0;
    if (ev_log_open(&log, conf, err, sizeof(err)))
        return -1;
    const char *t = ev_log_topic(log, "sessions", name, sizeof(name));
    if (ev_log_assign(log, &t, 1, (ev_from){EV_FROM_BEGINNING, 0}, err, sizeof(err)) == 0)
        while (ev_log_poll(log, 1000, &m, err, sizeof(err)) == 0)
            if (m->key_len == strlen(sid) && memcmp(m->key, sid, m->key_len) == 0) {
                if (!*from_ms)
                    *from_ms = m->timestamp_ms;
                *to_ms = m->timestamp_ms;
            }
    ev_log_destroy(log);
    return *from_ms ? 0 : -1;
}

int rp_republish(const ev_conf *src_conf, ev_log *dst, const char *const *topics,
                 size_t topic_count, const char *session, double speed, int64_t margin_ms)
{
    rp_source src[RP_MAX_TOPICS];
    char err[512], name[320];
    int64_t from_ms = 0, until_ms = 0, records = 0, bytes = 0;
    int rc = 0;
    size_t n = 0;
    memset(src, 0, sizeof(src));
    if (session) {
        if (session_window(src_conf, session, &from_ms, &until_ms)) {
            fprintf(stderr,
                    "msrs-replay: --republish --session %s: no record of it on the "
                    "sessions topic\n",
                    session);
            return 1;
        }
        from_ms -= margin_ms;
        until_ms += 5000; /* the last reports and data in flight */
    }
    for (; n < topic_count && n < RP_MAX_TOPICS; n++) {
        rp_source *s = &src[n];
        snprintf(s->logical, sizeof(s->logical), "%s", topics[n]);
        if (ev_log_open(&s->log, src_conf, err, sizeof(err))) {
            fprintf(stderr, "msrs-replay: %s\n", err);
            rc = 2;
            goto out;
        }
        const char *t = ev_log_topic(s->log, s->logical, name, sizeof(name));
        ev_from f = from_ms ? (ev_from){EV_FROM_TIME, from_ms} : (ev_from){EV_FROM_BEGINNING, 0};
        if (ev_log_assign(s->log, &t, 1, f, err, sizeof(err)) ||
            (rc = advance(s, until_ms, err, sizeof(err)))) {
            fprintf(stderr, "msrs-replay: %s: %s\n", t, err);
            rc = 1;
            n++;
            goto out;
        }
    }
    /* k-way merge by record time; paced by the first record's time */
    int64_t t0 = -1, wall0 = ev_mono_ms(), last_report = wall0;
    for (;;) {
        rp_source *next = NULL;
        for (size_t i = 0; i < n; i++)
            if (src[i].head && (!next || src[i].head->timestamp_ms < next->head->timestamp_ms))
                next = &src[i];
        if (!next || cli_stop)
            break;
        const ev_msg *m = next->head;
        if (t0 < 0)
            t0 = m->timestamp_ms;
        if (speed > 0)
            sleep_ns((int64_t)((double)(m->timestamp_ms - t0) / speed * 1e6) -
                     (ev_mono_ms() - wall0) * 1000000LL);
        const char *dt = ev_log_topic(dst, next->logical, name, sizeof(name));
        if (ev_log_produce(dst, dt, m->key, m->key_len, m->value, m->value_len, m->headers,
                           m->header_count, m->timestamp_ms, err, sizeof(err))) {
            fprintf(stderr, "msrs-replay: republish to %s: %s\n", dt, err);
            rc = 1;
            break;
        }
        records++;
        bytes += (int64_t)m->value_len;
        if ((rc = advance(next, until_ms, err, sizeof(err)))) {
            fprintf(stderr, "msrs-replay: %s: %s\n", next->logical, err);
            rc = 1;
            break;
        }
        if (ev_mono_ms() - last_report >= 1000) {
            last_report = ev_mono_ms();
            fprintf(stderr,
                    "msrs-replay: republished %lld records (%.1f MB), at %.1f s of the "
                    "recording\n",
                    (long long)records, (double)bytes / 1e6, (double)(m->timestamp_ms - t0) / 1e3);
        }
    }
    if (ev_log_flush(dst, 60000, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: republish: %s\n", err);
        rc = 1;
    }
    fprintf(stderr, "msrs-replay: republished %lld records (%.1f MB)%s\n", (long long)records,
            (double)bytes / 1e6, rc ? ", then failed" : "");
out:
    for (size_t i = 0; i < n; i++)
        ev_log_destroy(src[i].log);
    return rc;
}
