/* refit.c — see refit.h. */
#define _XOPEN_SOURCE 700
#include "refit.h"
#include "archive.h"
#include "cli.h"

#include <avro.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ fit */

static int cmp_round(const void *a, const void *b)
{
    const rf_round *x = a, *y = b;
    return (x->best.t1 > y->best.t1) - (x->best.t1 < y->best.t1);
}

/* The kept probe's offset (device − master), ns. */
static double round_offset(const rf_round *r)
{
    return ((double)(r->best.t2 - r->best.t1) + (double)(r->best.t3 - r->best.t4)) / 2;
}

static void fit_segment(const rf_round *r, int n, rf_segment *s)
{
    int total = 0;
    for (int i = 0; i < n; i++)
        total += r[i].n ? r[i].n : 1;
    double *t = malloc(sizeof(double) * (size_t)total * 3), *a = t + total, *b = a + total;
    memset(s, 0, sizeof(*s));
    s->master_from = r[0].best.t1;
    s->master_to = r[n - 1].best.t1;
    s->origin = r[0].best.t1;
    s->rounds = n;
    s->probes = total;
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < (r[i].n ? r[i].n : 1); j++) {
            const rf_probe *p = r[i].n ? &r[i].probes[j] : &r[i].best;
            t[k] = ((double)(p->t1 - s->origin) + (double)(p->t4 - s->origin)) / 2;
            a[k] = (double)(p->t2 - p->t1);
            b[k] = (double)(p->t4 - p->t3);
            k++;
        }
    ev_clock_fit fit;
    ev_clock_fit_probes(t, a, b, total, total >= 2 && t[total - 1] > t[0], &fit);
    double drift = fit.drift;
    s->drift = drift;
    s->offset_ns = fit.offset_ns;
    /* diagnostic: the kept probes' offsets about the line */
    double rss = 0;
    for (int i = 0; i < n; i++) {
        double ti = ((double)(r[i].best.t1 - s->origin) + (double)(r[i].best.t4 - s->origin)) / 2;
        double e = round_offset(&r[i]) - (s->offset_ns + drift * ti);
        rss += e * e;
    }
    s->rms_ns = sqrt(rss / n);
    free(t);
}

int rf_fit_rounds(rf_round *r, int n, int64_t reset_ns, rf_fit *out)
{
    memset(out, 0, sizeof(*out));
    if (n < 2)
        return -1;
    qsort(r, (size_t)n, sizeof(*r), cmp_round);
    int from = 0;
    for (int i = 1; i <= n; i++) {
        int cut = i == n;
        if (!cut) {
            int jump = fabs(round_offset(&r[i]) - round_offset(&r[i - 1])) > (double)reset_ns;
            if (jump && i + 1 < n) /* confirmed by the next round: not one bad probe */
                jump = fabs(round_offset(&r[i + 1]) - round_offset(&r[i])) <= (double)reset_ns;
            cut = (jump || r[i].round <= r[i - 1].round) && out->n < RF_MAX_SEGMENTS - 1;
        }
        if (cut) {
            fit_segment(r + from, i - from, &out->seg[out->n++]);
            from = i;
        }
    }
    return 0;
}

int64_t rf_master(const rf_fit *f, int64_t x, int64_t hint)
{
    const rf_segment *best = &f->seg[0];
    int64_t best_d = INT64_MAX;
    for (int i = 0; i < f->n; i++) {
        const rf_segment *s = &f->seg[i];
        int64_t d = hint < s->master_from ? s->master_from - hint
                    : hint > s->master_to ? hint - s->master_to
                                          : 0;
        if (d < best_d) {
            best_d = d;
            best = s;
        }
    }
    /* x = m + offset + drift·(m − origin)  =>  m − origin = (x − origin − offset) / (1 + drift),
     * in differences (ns since the epoch do not fit a double exactly) */
    double dm = ((double)(x - best->origin) - best->offset_ns) / (1 + best->drift);
    return best->origin + (int64_t)llround(dm);
}

/* ---------------------------------------------------------------- files */

/* The rounds of DIR/clock.avro (*device: its device_id). -1 if unreadable. */
static rf_probe probe_of(avro_value_t *v)
{
    return (rf_probe){ev_value_long(v, "t1_ns"), ev_value_long(v, "t2_ns"),
                      ev_value_long(v, "t3_ns"), ev_value_long(v, "t4_ns")};
}

static void free_rounds(rf_round *r, int n)
{
    for (int i = 0; r && i < n; i++)
        free(r[i].probes);
    free(r);
}

typedef struct rewrite_ctx {
    const rf_fit *fit;
    const char *from;
    int64_t records;
    double moved; /* the largest change, ns */
} rewrite_ctx;

/* One record of a stream file: master_time_ns (a long or an array of
 * longs) recomputed from device_time_ns. */
static int rewrite_times(void *arg, avro_value_t *v, char *errstr, size_t errstr_size)
{
    rewrite_ctx *c = arg;
    avro_value_t dev, mas;
    c->records++;
    if (avro_value_get_by_name(v, "device_time_ns", &dev, NULL) ||
        avro_value_get_by_name(v, "master_time_ns", &mas, NULL)) {
        snprintf(errstr, errstr_size,
                 "%s: record %lld: expected fields device_time_ns and "
                 "master_time_ns",
                 c->from, (long long)c->records);
        return EV_ERR_CORRUPT;
    }
    size_t count = 1;
    int is_array = avro_value_get_type(&dev) == AVRO_ARRAY;
    if (is_array)
        avro_value_get_size(&dev, &count);
    for (size_t i = 0; i < count; i++) {
        avro_value_t d = dev, m = mas;
        int64_t x = 0, old = 0;
        if (is_array && (avro_value_get_by_index(&dev, i, &d, NULL) ||
                         avro_value_get_by_index(&mas, i, &m, NULL))) {
            snprintf(errstr, errstr_size,
                     "%s: record %lld: master_time_ns has fewer entries "
                     "than device_time_ns",
                     c->from, (long long)c->records);
            return EV_ERR_CORRUPT;
        }
        avro_value_get_long(&d, &x);
        avro_value_get_long(&m, &old);
        int64_t now = rf_master(c->fit, x, old);
        double dm = fabs((double)(now - old));
        if (dm > c->moved)
            c->moved = dm;
        avro_value_set_long(&m, now);
    }
    return 0;
}

/* ClockOffsetMeasured of the log, per device, within a time window. */
typedef struct log_rounds {
    char device[128];
    rf_round *r;
    int n, cap;
} log_rounds;

static int append_round(log_rounds *l, avro_value_t *v)
{
    if (l->n == l->cap) {
        rf_round *g = realloc(l->r, sizeof(*g) * (size_t)(l->cap = l->cap * 2 + 64));
        if (!g)
            return -1;
        l->r = g;
    }
    rf_round *x = &l->r[l->n++];
    avro_value_t all, one;
    size_t count = 0;
    *x = (rf_round){probe_of(v), NULL, 0, ev_value_long(v, "round")};
    if (avro_value_get_by_name(v, "round_probes", &all, NULL) == 0 &&
        avro_value_get_size(&all, &count) == 0 && count > 0 &&
        (x->probes = malloc(sizeof(rf_probe) * count)))
        for (size_t k = 0; k < count; k++)
            if (avro_value_get_by_index(&all, k, &one, NULL) == 0)
                x->probes[x->n++] = probe_of(&one);
    return 0;
}

static int add_clock_record(void *arg, avro_value_t *v)
{
    log_rounds *l = arg;
    avro_value_t f;
    const char *s;
    size_t len;
    if (avro_value_get_by_name(v, "device_id", &f, NULL) == 0 &&
        avro_value_get_string(&f, &s, &len) == 0)
        snprintf(l->device, sizeof(l->device), "%s", s);
    return append_round(l, v);
}

/* The rounds of a DEVICE/clock.avro (*device: its device_id). -1 if it
 * cannot be read to its end (named on stderr). */
static int read_rounds(const char *path, rf_round **out, int *n, char *device, size_t dsize)
{
    log_rounds l;
    char err[1024];
    memset(&l, 0, sizeof(l));
    int rc = ar_each_record(path, add_clock_record, &l, NULL, err, sizeof(err));
    if (rc)
        fprintf(stderr, "msrs-replay: %s\n", err);
    *out = l.r;
    *n = l.n;
    snprintf(device, dsize, "%s", l.device);
    return rc;
}

/* Reads ev_clock_topics from `from` (master ns) to `to`; *out: one entry
 * per device. Returns the number of devices, or -1. (Rounds are sorted
 * before the fit, so the two topics' order does not matter.) */
static int read_log_rounds(ev_log *log, int64_t from, int64_t to, log_rounds **out)
{
    char err[512], names[2][320];
    const char *topics[2] = {ev_log_topic(log, ev_clock_topics[0], names[0], sizeof(names[0])),
                             ev_log_topic(log, ev_clock_topics[1], names[1], sizeof(names[1]))};
    const ev_schema *clock = ev_schema_by_name("ClockOffsetMeasured");
    ev_codec *codec = ev_codec_new();
    int count = 0, rc;
    const ev_msg *m;
    *out = NULL;
    if (ev_log_assign(log, topics, 2, (ev_from){EV_FROM_TIME, from / 1000000}, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: --refit --log: %s\n", err);
        ev_codec_destroy(codec);
        return -1;
    }
    while ((rc = ev_log_poll(log, 1000, &m, err, sizeof(err))) == 0) {
        ev_event ev;
        avro_value_t f;
        const char *dev;
        size_t len;
        if (ev_event_decode(codec, m, &ev, err, sizeof(err)) || ev.schema != clock)
            continue; /* other records; an undecodable one is the fold's business */
        int64_t t1 = ev_value_long(ev.value, "t1_ns");
        if (t1 < from || t1 > to || avro_value_get_by_name(ev.value, "device_id", &f, NULL) ||
            avro_value_get_string(&f, &dev, &len))
            continue;
        int i = 0;
        while (i < count && strcmp((*out)[i].device, dev) != 0)
            i++;
        if (i == count) {
            log_rounds *g = realloc(*out, sizeof(*g) * (size_t)(count + 1));
            if (!g)
                break;
            *out = g;
            memset(&g[count], 0, sizeof(*g));
            snprintf(g[count++].device, sizeof(g->device), "%s", dev);
        }
        if (append_round(&(*out)[i], ev.value))
            break;
    }
    ev_codec_destroy(codec);
    if (rc != EV_ERR_END && rc != 0) {
        fprintf(stderr, "msrs-replay: --refit --log: %s\n", err);
        return -1;
    }
    return count;
}

static json_t *fit_json(const rf_fit *f, int rounds)
{
    json_t *segs = json_array();
    for (int i = 0; i < f->n; i++) {
        const rf_segment *s = &f->seg[i];
        json_array_append_new(segs, json_pack("{s:I, s:I, s:I, s:f, s:f, s:i, s:i, s:f}",
                                              "master_from_ns", (json_int_t)s->master_from,
                                              "master_to_ns", (json_int_t)s->master_to, "origin_ns",
                                              (json_int_t)s->origin, "offset_ns", s->offset_ns,
                                              "drift_ppm", s->drift * 1e6, "rounds", s->rounds,
                                              "probes", s->probes, "kept_probe_rms_ns", s->rms_ns));
    }
    return json_pack("{s:i, s:o, s:s}", "rounds", rounds, "segments", segs, "offset",
                     "device - master = offset_ns + drift_ppm/1e6 * (master - origin_ns)");
}

int rf_refit_archive(const char *src, const char *dst, int64_t reset_ns, ev_log *log,
                     int64_t margin_ns)
{
    char path[PATH_MAX], out[PATH_MAX], err[1024];
    struct stat st;
    ar_reader *reader;
    if (stat(dst, &st) == 0) {
        fprintf(stderr, "msrs-replay: --out %s exists: a refit never overwrites\n", dst);
        return 2;
    }
    if (ar_reader_open(&reader, src, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        return 1;
    }
    /* the copy's manifest: the source's with new files and the fits */
    json_t *m = json_deep_copy(ar_reader_manifest(reader));
    json_t *files = json_object_get(m, "files");
    ar_reader_destroy(reader);
    log_rounds *from_log = NULL;
    int log_devices = 0;
    if (log) {
        int64_t start = json_integer_value(json_object_get(m, "start_at_ns")),
                stop = json_integer_value(json_object_get(m, "stop_at_ns"));
        if (!start || !stop) {
            fprintf(stderr,
                    "msrs-replay: %s/manifest.json: fields start_at_ns and stop_at_ns: "
                    "expected the session's instants (ns)\n",
                    src);
            json_decref(m);
            return 1;
        }
        if ((log_devices = read_log_rounds(log, start - margin_ns, stop + margin_ns, &from_log)) <
            0) {
            json_decref(m);
            return 1;
        }
    }
    if (ev_mkdirs(dst)) {
        fprintf(stderr, "msrs-replay: %s: %s\n", dst, strerror(errno));
        json_decref(m);
        for (int l = 0; l < log_devices; l++)
            free_rounds(from_log[l].r, from_log[l].n);
        free(from_log);
        return 1;
    }
    json_t *fits = json_object(), *new_files = json_object();
    const char *rel;
    json_t *info;
    int rc = 0;
    size_t done = 0, total = json_object_size(files);
    json_object_foreach(files, rel, info)
    {
        char dir[PATH_MAX], device[256] = "";
        const char *slash = strrchr(rel, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - rel) : 0, rel);
        snprintf(path, sizeof(path), "%s/%s", src, rel);
        snprintf(out, sizeof(out), "%s/%s", dst, rel);
        if (*dir) {
            char od[PATH_MAX * 2 + 2];
            snprintf(od, sizeof(od), "%s/%s", dst, dir);
            ev_mkdirs(od);
        }
        if (ar_file_kind_of(rel) != AR_FILE_STREAM) {
            if (ar_copy_file(path, out, err, sizeof(err))) {
                fprintf(stderr, "msrs-replay: cannot copy %s to %s: %s\n", path, out, err);
                rc = 1;
                break;
            }
        } else {
            char clock[PATH_MAX * 2 + 16];
            rf_round *rounds = NULL;
            int n = 0;
            rf_fit fit;
            snprintf(clock, sizeof(clock), "%s/%s/clock.avro", src, dir);
            if (read_rounds(clock, &rounds, &n, device, sizeof(device))) {
                free_rounds(rounds, n);
                rc = 1;
                break;
            }
            for (int l = 0; l < log_devices; l++) {
                if (strcmp(from_log[l].device, device) != 0)
                    continue;
                for (int k = 0; k < from_log[l].n; k++) { /* the log's rounds the archive lacks */
                    int dup = 0;
                    for (int j = 0; j < n && !dup; j++)
                        dup = rounds[j].best.t1 == from_log[l].r[k].best.t1;
                    if (dup)
                        continue;
                    rf_round *g = realloc(rounds, sizeof(*g) * (size_t)(n + 1));
                    if (!g)
                        break;
                    rounds = g;
                    rf_round x = {from_log[l].r[k].best, NULL, 0, from_log[l].r[k].round};
                    size_t bytes = sizeof(rf_probe) * (size_t)from_log[l].r[k].n;
                    if (bytes && (x.probes = malloc(bytes))) {
                        memcpy(x.probes, from_log[l].r[k].probes, bytes);
                        x.n = from_log[l].r[k].n;
                    }
                    rounds[n++] = x;
                }
            }
            if (rf_fit_rounds(rounds, n, reset_ns, &fit)) {
                fprintf(stderr,
                        "msrs-replay: %s: %d clock rounds, expected at least 2 to fit; "
                        "%s copied as it is\n",
                        clock, n, rel);
                free_rounds(rounds, n);
                if (ar_copy_file(path, out, err, sizeof(err))) {
                    fprintf(stderr, "msrs-replay: %s\n", err);
                    rc = 1;
                }
            } else {
                rewrite_ctx c = {&fit, path, 0, 0};
                int64_t records = 0;
                if (ar_rewrite_records(path, out, rewrite_times, &c, &records, err, sizeof(err))) {
                    fprintf(stderr, "msrs-replay: %s\n", err);
                    free_rounds(rounds, n);
                    rc = 1;
                    break;
                }
                double moved = c.moved;
                json_t *f = json_object_get(fits, device);
                if (!f)
                    json_object_set_new(fits, device, f = fit_json(&fit, n));
                json_object_set_new(f, rel,
                                    json_pack("{s:I, s:f}", "records", (json_int_t)records,
                                              "max_change_ns", moved));
                free_rounds(rounds, n);
            }
        }
        char hex[65];
        int64_t bytes;
        if (ar_sha256_file(out, hex, &bytes, err, sizeof(err))) {
            fprintf(stderr, "msrs-replay: %s\n", err);
            rc = 1;
            break;
        }
        json_object_set_new(new_files, rel,
                            json_pack("{s:I, s:s}", "bytes", (json_int_t)bytes, "sha256", hex));
        fprintf(stderr, "msrs-replay: refit %zu/%zu %s\n", ++done, total, rel);
    }
    if (!rc) {
        char abs[PATH_MAX];
        json_object_set(m, "files", new_files);
        json_object_set_new(m, "refit",
                            json_pack("{s:s, s:I, s:b, s:o}", "of", realpath(src, abs) ? abs : src,
                                      "reset_ns", (json_int_t)reset_ns, "rounds_from_log",
                                      log != NULL, "devices", fits));
        fits = NULL;
        if (ar_manifest_save(dst, m, err, sizeof(err))) {
            fprintf(stderr, "msrs-replay: %s\n", err);
            rc = 1;
        }
    }
    json_decref(fits);
    json_decref(new_files);
    json_decref(m);
    for (int l = 0; l < log_devices; l++)
        free_rounds(from_log[l].r, from_log[l].n);
    free(from_log);
    if (rc) {
        fprintf(stderr, "msrs-replay: refit failed: %s removed\n", dst);
        ar_rm_tree(dst);
    }
    return rc;
}
