/* recording.c — layer 6: the sessions this node records. StartRecording
 * gives a session, its devices and one start instant on the master clock;
 * each device gets `start` with that instant converted to its own clock
 * (and again when it rejoins mid-session). Data of a device in a session is
 * tagged with the session and counted per stream (samples, bytes, gaps,
 * drops). After the stop instant plus agent.report_delay_ms, and as long
 * after the stop command came — time for data still in flight — the
 * counts are frozen (data that comes later is not the
 * session's, counted as late) and RecordingReport is emitted once the log
 * has acknowledged every record produced until then: the tick checks the
 * log's backlog, the loop never waits for it. After AG_REPORT_TIMEOUT_MS
 * the report goes out anyway, counted (report_timeouts) and said. */
#include "recording.h"

#include "clock.h"
#include "device.h"
#include "endpoint.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static ag_session *session_find(ag_agent *a, const char *id)
{
    for (size_t i = 0; i < a->session_count; i++)
        if (strcmp(a->sessions[i]->session_id, id) == 0)
            return a->sessions[i];
    return NULL;
}

/* `start` or `stop` with the session's instant on the device's clock. */
static void send_instant(ag_agent *a, ag_device *d, const char *type, int64_t at_ns)
{
    int start = strcmp(type, "start") == 0;
    int64_t at = ag_master_to_device(a, d, at_ns);
    *(start ? &d->rec_start_dev : &d->rec_stop_dev) = at;
    ag_send(a, d->conn, type,
            json_pack("{s:s, s:I}", "session_id", d->rec->session_id,
                      start ? "start_at" : "stop_at", (json_int_t)at));
}

static void send_start(ag_agent *a, ag_device *d)
{
    send_instant(a, d, "start", d->rec->start_at_ns);
    if (d->rec->stop_at_ns != INT64_MAX)
        send_instant(a, d, "stop", d->rec->stop_at_ns);
}

/* The counter of stream in d's current counts; a new one when the stream
 * was not declared (more streams than AG_MAX_STREAMS: the last, lumped). */
static ag_count *count_of(ag_device *d, const char *stream)
{
    for (int i = 0; i < d->count_n; i++)
        if (strcmp(d->counts[i].stream_id, stream) == 0)
            return &d->counts[i];
    if (d->count_n == AG_MAX_STREAMS)
        return &d->counts[AG_MAX_STREAMS - 1];
    ag_count *c = &d->counts[d->count_n++];
    snprintf(c->stream_id, sizeof(c->stream_id), "%s", stream);
    return c;
}

/* Empties d's ring of batches counted while the stop was not known. */
static void tagged_reset(ag_device *d)
{
    d->tagged_next = 0;
    d->tagged_n = 0;
    d->tagged_evicted_master = INT64_MIN;
}

/* A start that came after its instant: what d had already written
 * untagged at or after the instant (whole batches whose first time is at
 * or after it) is counted as late_start, so the report says it. */
static void count_late_start(ag_agent *a, ag_session *s, ag_device *d)
{
    int64_t late_samples = 0;
    for (int i = 0; i < AG_UNTAGGED_KEEP; i++) {
        ag_untagged *u = &d->untagged[i];
        if (!u->samples || u->first_t < d->rec_start_dev)
            continue;
        ag_count *c = count_of(d, u->stream_id);
        c->late_start_samples += u->samples;
        c->late_start_bytes += u->bytes;
        late_samples += u->samples;
    }
    memset(d->untagged, 0, sizeof(d->untagged));
    if (late_samples)
        fprintf(stderr,
                "msrs-agent: session %s: %s had written %lld samples untagged after the start "
                "instant before the start command came (counted as late_start)\n",
                s->session_id, d->device_id, (long long)late_samples);
    (void)a;
}

static void attach(ag_agent *a, ag_session *s, ag_device *d)
{
    if (d->rec)
        return; /* already recording (this session, or another: one at a time) */
    d->rec = s;
    /* until sent, the instants converted now */
    d->rec_start_dev = ag_master_to_device(a, d, s->start_at_ns);
    d->rec_stop_dev = INT64_MAX;
    d->count_n = d->stream_count;
    memset(d->counts, 0, sizeof(d->counts));
    for (int i = 0; i < d->stream_count; i++)
        snprintf(d->counts[i].stream_id, AG_ID_MAX, "%s", d->stream_ids[i]);
    tagged_reset(d);
    count_late_start(a, s, d);
    if (d->conn)
        send_start(a, d);
}

/* Removes device_id from s->expected; 1 when it was there. */
static int expected_take(ag_session *s, const char *device_id)
{
    size_t i;
    json_t *id;
    json_array_foreach(s->expected, i, id) if (strcmp(json_string_value(id), device_id) == 0)
    {
        json_array_remove(s->expected, i);
        return 1;
    }
    return 0;
}

static ag_session *session_new(ag_agent *a, const char *session_id, int64_t start_at)
{
    ag_session **grown = realloc(a->sessions, (a->session_count + 1) * sizeof(*grown));
    ag_session *s = calloc(1, sizeof(*s));
    if (!grown || !s) {
        free(s);
        if (grown)
            a->sessions = grown;
        fprintf(stderr, "msrs-agent: session %s: out of memory\n", session_id);
        return NULL;
    }
    a->sessions = grown;
    a->sessions[a->session_count++] = s;
    snprintf(s->session_id, sizeof(s->session_id), "%s", session_id);
    s->start_at_ns = start_at;
    s->lost_at_start = ev_log_lost(a->log);
    s->stop_at_ns = INT64_MAX;
    s->missing = json_array();
    s->expected = json_array();
    return s;
}

void ag_start_recording(ag_agent *a, const char *session_id, json_t *device_ids, int64_t start_at)
{
    if (session_find(a, session_id) || !*session_id || strlen(session_id) >= AG_ID_MAX)
        return; /* a redelivered command */
    ag_session *s = session_new(a, session_id, start_at);
    if (!s)
        return;
    size_t i, attached = 0;
    json_t *id;
    if (json_array_size(device_ids) == 0) {
        for (size_t k = 0; k < a->device_count; k++)
            if (a->devices[k]->conn) {
                attach(a, s, a->devices[k]);
                attached++;
            }
    }
    json_array_foreach(device_ids, i, id)
    {
        ag_device *d = ag_device_find(a, json_string_value(id));
        if (!d || !d->conn) {
            json_array_append(s->missing, id);
            if (!d) {
                /* it never registered here: attached if it does, once its
                 * clock is measured (what it sends before is late_start) */
                json_array_append(s->expected, id);
                continue;
            }
        }
        attach(a, s, d);
        attached++;
    }
    /* the margin: how long before the start instant the command came
     * (negative: late; the data already written untagged is late_start) */
    fprintf(stderr,
            "msrs-agent: session %s: %zu devices start at %lld (%.1f ms from now), %zu missing\n",
            session_id, attached, (long long)start_at, (double)(start_at - ag_now_ns()) / 1e6,
            json_array_size(s->missing));
}

/* A stop that came after its instant: what d had counted for the session
 * at or after the instant (whole batches whose first master time is at or
 * after it) moves to late_stop; the archive leaves those records out. */
static void count_late_stop(ag_session *s, ag_device *d)
{
    for (int i = 0; i < d->tagged_n; i++) {
        ag_tagged *b = &d->tagged[i];
        if (b->first_master < s->stop_at_ns)
            continue;
        ag_count *c = &d->counts[b->count];
        c->samples -= b->samples;
        c->bytes -= b->bytes;
        c->late_stop_samples += b->samples;
        c->late_stop_bytes += b->bytes;
    }
    if (d->tagged_evicted_master >= s->stop_at_ns)
        fprintf(stderr,
                "msrs-agent: session %s: %s: the stop command came more than %d batches late: "
                "some batches past the instant had left the ring and stay counted as the "
                "session's (the archive leaves them out and says the counts differ)\n",
                s->session_id, d->device_id, AG_TAGGED_KEEP);
    tagged_reset(d);
}

void ag_stop_recording(ag_agent *a, const char *session_id, int64_t stop_at)
{
    ag_session *s = session_find(a, session_id);
    if (!s || s->stop_at_ns != INT64_MAX)
        return; /* not ours, or a redelivered command */
    s->stop_at_ns = stop_at;
    s->stop_heard_ns = ag_now_ns();
    for (size_t i = 0; i < a->device_count; i++) {
        ag_device *d = a->devices[i];
        if (d->rec == s)
            count_late_stop(s, d);
        if (d->rec == s && d->conn)
            send_instant(a, d, "stop", stop_at);
        else if (d->rec == s)
            d->rec_stop_dev = ag_master_to_device(a, d, stop_at);
    }
}

/* Attaches d to a session that expects it (rebuilt after a restart, or
 * named at the start before d registered here) once d is connected and
 * its clock measured: the instants it is sent are on its clock. */
static void attach_expected(ag_agent *a, ag_device *d)
{
    if (d->rec || !d->conn || !d->clock.fitted)
        return;
    for (size_t i = 0; i < a->session_count && !d->rec; i++) {
        ag_session *s = a->sessions[i];
        if (s->report_phase == AG_REPORT_NONE && expected_take(s, d->device_id))
            attach(a, s, d);
    }
}

void ag_recording_rejoin(ag_agent *a, ag_device *d)
{
    /* attached already from the log (restore.c): it is back */
    if (d->rec && d->rec->report_phase == AG_REPORT_NONE)
        expected_take(d->rec, d->device_id);
    if (d->rec && d->conn)
        send_start(a, d);
    else
        attach_expected(a, d);
}

ag_session *ag_recording_restore(ag_agent *a, const char *session_id, int64_t start_at,
                                 int64_t stop_at, json_t *device_ids)
{
    if (session_find(a, session_id) || !*session_id || strlen(session_id) >= AG_ID_MAX)
        return NULL;
    ag_session *s = session_new(a, session_id, start_at);
    if (!s)
        return NULL;
    s->stop_at_ns = stop_at;
    json_array_extend(s->expected, device_ids);
    a->n.restored++;
    return s;
}

ag_tag ag_recording_restore_tag(ag_session *s, ag_count *cnt, int64_t first_t, int64_t first_master)
{
    return (ag_tag){s->session_id, cnt, first_master >= s->stop_at_ns, first_t, first_master};
}

ag_count *ag_recording_restore_count(ag_agent *a, ag_session *s, ag_device *d, const char *stream)
{
    if (d->rec && d->rec != s)
        return NULL; /* one session at a time */
    if (!d->rec) {
        d->rec = s;
        d->rec_start_dev = ag_master_to_device(a, d, s->start_at_ns);
        d->rec_stop_dev =
            s->stop_at_ns == INT64_MAX ? INT64_MAX : ag_master_to_device(a, d, s->stop_at_ns);
        d->count_n = 0;
        memset(d->counts, 0, sizeof(d->counts));
        tagged_reset(d);
    }
    return count_of(d, stream);
}

/* Remembers a batch of d written without a session: a start command that
 * comes after its instant counts the ones at or after it as late_start. */
static void remember_untagged(ag_device *d, const char *stream, int64_t first_t, int64_t samples,
                              int64_t bytes)
{
    ag_untagged *u = &d->untagged[d->untagged_next];
    d->untagged_next = (d->untagged_next + 1) % AG_UNTAGGED_KEEP;
    u->first_t = first_t;
    u->samples = samples;
    u->bytes = bytes;
    snprintf(u->stream_id, sizeof(u->stream_id), "%s", stream);
}

/* Remembers a batch counted for d's session while its stop instant is not
 * known: a stop command that comes after its instant moves the ones at or
 * after it to late_stop. */
static void remember_tagged(ag_device *d, const ag_count *c, int64_t first_master, int64_t samples,
                            int64_t bytes)
{
    ag_tagged *b = &d->tagged[d->tagged_next];
    d->tagged_next = (d->tagged_next + 1) % AG_TAGGED_KEEP;
    if (d->tagged_n < AG_TAGGED_KEEP)
        d->tagged_n++;
    else if (b->first_master > d->tagged_evicted_master)
        d->tagged_evicted_master = b->first_master;
    *b = (ag_tagged){first_master, samples, bytes, (int)(c - d->counts)};
}

void ag_recording_gap(ag_agent *a, ag_device *d, ag_count *cnt, int64_t missing)
{
    d->gaps++;
    a->n.gap_samples += missing;
    if (cnt) {
        cnt->gaps++;
        cnt->gap_samples += missing;
    }
}

ag_tag ag_recording_tag(ag_agent *a, ag_device *d, const char *claimed, int64_t first_t,
                        int64_t first_master, const char *stream)
{
    ag_session *s = d->rec;
    ag_tag tag = {"", NULL, 0, first_t, first_master};
    if (!s) {
        if (claimed && *claimed && session_find(a, claimed))
            a->n.late++; /* after its report: not the session's any more */
        return tag;
    }
    if (claimed && *claimed) {
        if (strcmp(claimed, s->session_id) != 0)
            return tag;
    } else if (first_t < d->rec_start_dev || first_t >= d->rec_stop_dev) {
        return tag;
    }
    tag.session = s->session_id;
    tag.cnt = count_of(d, stream);
    tag.after_stop = first_master >= s->stop_at_ns;
    return tag;
}

void ag_recording_account(ag_agent *a, ag_device *d, const ag_tag *tag, const char *stream,
                          int delivered, int64_t n, int64_t bytes)
{
    ag_count *c = tag ? tag->cnt : NULL;
    if (delivered && c && d->rec) /* data claiming the session came (the report waits) */
        d->rec->last_tagged_ns = ag_now_ns();
    if (!delivered) {
        a->n.dropped += n;
        if (c && !tag->after_stop) /* past the stop: not the session's to lose */
            c->dropped += n;
    } else if (!tag) {
        return;
    } else if (!c) {
        remember_untagged(d, stream, tag->first_t, n, bytes);
    } else if (tag->after_stop) {
        c->late_stop_samples += n;
        c->late_stop_bytes += bytes;
    } else {
        c->samples += n;
        c->bytes += bytes;
        if (d->rec->stop_at_ns == INT64_MAX)
            remember_tagged(d, c, tag->first_master, n, bytes);
    }
}

/* Freezes the counts of s: each device's streams into s->report_streams,
 * and the devices leave the session. */
static void freeze(ag_agent *a, ag_session *s)
{
    json_t *streams = json_array();
    int64_t late_stop = 0;
    for (size_t i = 0; i < a->device_count; i++) {
        ag_device *d = a->devices[i];
        if (d->rec != s)
            continue;
        for (int k = 0; k < d->count_n; k++) {
            ag_count *c = &d->counts[k];
            late_stop += c->late_stop_samples;
            json_array_append_new(
                streams, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                                   "device_id", d->device_id, "stream_id", c->stream_id, "samples",
                                   (json_int_t)c->samples, "bytes", (json_int_t)c->bytes, "gaps",
                                   (json_int_t)c->gaps, "dropped", (json_int_t)c->dropped,
                                   "gap_samples", (json_int_t)c->gap_samples, "late_start_samples",
                                   (json_int_t)c->late_start_samples, "late_start_bytes",
                                   (json_int_t)c->late_start_bytes, "late_stop_samples",
                                   (json_int_t)c->late_stop_samples, "late_stop_bytes",
                                   (json_int_t)c->late_stop_bytes));
        }
        d->rec = NULL;
    }
    if (late_stop)
        fprintf(stderr,
                "msrs-agent: session %s: %lld samples sent past the stop instant before the "
                "devices heard the stop (counted as late_stop, not the session's)\n",
                s->session_id, (long long)late_stop);
    s->report_streams = streams;
}

/* 1 when the log has acknowledged (or given up on) every record produced
 * before a->produced reached target: what is not acknowledged is the
 * backlog, the newest records (SQLite's one writer acknowledges in order;
 * Kafka per partition). 0 while they wait; a negative ev_err when the log
 * is failing (err says why). *pending (may be NULL): how many of those
 * are still waiting (backlog records produced before target). */
static int acked(ag_agent *a, int64_t target, int64_t *pending, char *err, size_t err_size)
{
    int64_t records = 0, bytes;
    int rc = ev_log_backlog(a->log, &records, &bytes, err, err_size);
    int64_t waiting = target - (a->produced - records);
    if (pending)
        *pending = waiting > 0 ? waiting : 0;
    if (rc)
        return rc;
    return waiting <= 0;
}

static void emit_report(ag_agent *a, ag_session *s, int64_t now)
{
    char err[512];
    char id[EV_ID_MAX];
    ev_event_id(id, "report/%s/%s", s->session_id, a->cfg.node_id);
    /* devices it waited for that never came (back) are missing, once */
    size_t i, k;
    json_t *dev, *m;
    json_array_foreach(s->expected, i, dev)
    {
        int listed = 0;
        json_array_foreach(s->missing, k, m) listed |= json_equal(m, dev);
        if (!listed)
            json_array_append(s->missing, dev);
    }
    json_array_clear(s->expected);
    int64_t lost = ev_log_lost(a->log) - s->lost_at_start;
    if (lost > 0 || s->unacknowledged > 0)
        fprintf(stderr,
                "msrs-agent: session %s: the log lost %lld records and had not acknowledged "
                "%lld when the report was sent (reported)\n",
                s->session_id, (long long)lost, (long long)s->unacknowledged);
    json_t *rec = json_pack("{s:s, s:s, s:O, s:O, s:I, s:I}", "session_id", s->session_id,
                            "node_id", a->cfg.node_id, "missing_devices", s->missing, "streams",
                            s->report_streams, "log_lost_records", (json_int_t)lost,
                            "unacknowledged_records", (json_int_t)s->unacknowledged);
    ev_emit_opts o = {.id = id};
    int rc = ev_log_emit_json(a->log, ev_schema_by_name("RecordingReport"), s->session_id, rec, &o,
                              err, sizeof(err));
    json_decref(rec);
    json_decref(s->missing);
    s->missing = NULL; /* reported; the id stays known so redeliveries are ignored */
    if (rc) {
        fprintf(stderr, "msrs-agent: session %s: RecordingReport: %s\n", s->session_id, err);
        s->report_phase = AG_REPORT_DONE;
        return;
    }
    a->produced++;
    s->report_emitted = a->produced;
    s->report_due_ns = now;
    s->report_phase = AG_REPORT_WAIT_ACK;
}

/* Moves s's report on as far as the log allows now. */
static void report_step(ag_agent *a, ag_session *s, int64_t now)
{
    char err[512];
    int64_t timeout_ns = (int64_t)AG_REPORT_TIMEOUT_MS * 1000000;
    int rc;
    if (s->report_phase == AG_REPORT_WAIT_DATA) {
        /* Everything counted must be on the log before the report says so. */
        rc = acked(a, s->report_target, &s->unacknowledged, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr,
                    "msrs-agent: session %s: %s (the report counts records not acknowledged)\n",
                    s->session_id, err);
        } else if (!rc && now - s->report_due_ns >= timeout_ns) {
            a->n.report_timeouts++;
            fprintf(stderr,
                    "msrs-agent: session %s: records still not acknowledged after %d ms (the "
                    "report counts records not acknowledged; %lld report timeouts)\n",
                    s->session_id, AG_REPORT_TIMEOUT_MS, (long long)a->n.report_timeouts);
        } else if (!rc) {
            return;
        }
        emit_report(a, s, now);
    }
    if (s->report_phase == AG_REPORT_WAIT_ACK) {
        rc = acked(a, s->report_emitted, NULL, err, sizeof(err));
        if (!rc && now - s->report_due_ns < timeout_ns)
            return;
        if (rc > 0)
            fprintf(stderr, "msrs-agent: session %s: reported %zu streams\n", s->session_id,
                    json_array_size(s->report_streams));
        else if (rc < 0)
            fprintf(stderr, "msrs-agent: session %s: RecordingReport: %s\n", s->session_id, err);
        else
            fprintf(stderr,
                    "msrs-agent: session %s: RecordingReport: not acknowledged after %d ms\n",
                    s->session_id, AG_REPORT_TIMEOUT_MS);
        s->report_phase = AG_REPORT_DONE;
    }
    if (s->report_phase == AG_REPORT_DONE) {
        json_decref(s->report_streams);
        s->report_streams = NULL;
    }
}

void ag_recording_tick(ag_agent *a, int64_t now)
{
    for (size_t i = 0; i < a->session_count; i++) {
        ag_session *s = a->sessions[i];
        /* devices it waits for whose clock has been measured since */
        for (size_t k = json_array_size(s->expected);
             s->report_phase == AG_REPORT_NONE && k-- > 0;) {
            ag_device *d = ag_device_find(a, json_string_value(json_array_get(s->expected, k)));
            if (d)
                attach_expected(a, d);
        }
        /* Due report_delay after the stop instant and after the stop
         * command came (one that came late — this agent too loaded to read
         * it, or frozen — finds the devices' data of those seconds still
         * waiting in its sockets) — and, while the devices are held back
         * (flow slow_down: not read), only report_delay after they resume,
         * so data of the window they held is still counted; and once no
         * data claiming the session has come for report_delay (devices
         * that held seconds of it send it after they resume, and a stop
         * heard soon after an outage came before that had drained: seen
         * as `late` under ASan), or AG_REPORT_TIMEOUT_MS after the stop
         * was heard, whatever a device still claims. */
        int64_t delay_ns = a->cfg.report_delay_ms * 1000000LL;
        int drained = now >= s->last_tagged_ns + delay_ns ||
                      now >= s->stop_heard_ns + AG_REPORT_TIMEOUT_MS * 1000000LL;
        if (s->report_phase == AG_REPORT_NONE && s->stop_at_ns != INT64_MAX && !a->slowed &&
            now >= s->stop_at_ns + delay_ns && now >= s->stop_heard_ns + delay_ns &&
            now >= a->resumed_at_ns + delay_ns && drained) {
            freeze(a, s);
            s->report_target = a->produced;
            s->report_due_ns = now;
            s->report_phase = AG_REPORT_WAIT_DATA;
        }
        if (s->report_phase == AG_REPORT_WAIT_DATA || s->report_phase == AG_REPORT_WAIT_ACK)
            report_step(a, s, now);
    }
}

int ag_recording_active(const ag_agent *a)
{
    for (size_t i = 0; i < a->session_count; i++)
        if (a->sessions[i]->report_phase != AG_REPORT_DONE)
            return 1;
    return 0;
}

void ag_recording_drain(ag_agent *a)
{
    for (size_t i = 0; i < a->session_count; i++) {
        ag_session *s = a->sessions[i];
        if (s->report_phase == AG_REPORT_WAIT_DATA)
            emit_report(a, s, ag_now_ns());
    }
}

void ag_recording_free(ag_agent *a)
{
    for (size_t i = 0; i < a->session_count; i++) {
        json_decref(a->sessions[i]->missing);
        json_decref(a->sessions[i]->expected);
        json_decref(a->sessions[i]->report_streams);
        free(a->sessions[i]);
    }
    free(a->sessions);
    a->sessions = NULL;
    a->session_count = 0;
}
