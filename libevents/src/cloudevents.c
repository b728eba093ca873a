/* cloudevents.c — CloudEvents attributes (Kafka binding, binary mode) of
 * every record: ce_specversion, ce_id, ce_type, ce_source, ce_time,
 * content-type; event ids and RFC 3339 time. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static _Thread_local uint64_t rng_state;

/* splitmix64, seeded once per thread from the kernel: ids must be unique,
 * not secret, and a syscall per event would cost more than the event. */
static uint64_t rng_next(void)
{
    if (rng_state == 0) {
        if (getrandom(&rng_state, sizeof(rng_state), 0) != sizeof(rng_state))
            rng_state = (uint64_t)ev_now_ns() ^ (uint64_t)(uintptr_t)&rng_state;
        rng_state |= 1;
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Writes the low `digits` hex digits of v at p (an id per event: no printf). */
static char *hex(char *p, uint64_t v, int digits)
{
    static const char d[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--)
        p[i] = d[(v >> (4 * (digits - 1 - i))) & 0xf];
    return p + digits;
}

double ev_random_unit(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

void ev_new_id(char buf[EV_ID_MAX])
{
    uint64_t hi = rng_next(), lo = rng_next();
    hi = (hi & ~0xf000ULL) | 0x4000ULL;             /* version 4 */
    lo = (lo & ~(0xc0ULL << 56)) | (0x80ULL << 56); /* variant 1 */
    char *p = hex(buf, hi >> 32, 8);
    *p++ = '-';
    p = hex(p, hi >> 16, 4);
    *p++ = '-';
    p = hex(p, hi, 4);
    *p++ = '-';
    p = hex(p, lo >> 48, 4);
    *p++ = '-';
    p = hex(p, lo, 12);
    *p = '\0';
}

int64_t ev_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t ev_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *ev_format_time(int64_t ns, char *buf, size_t size)
{
    /* Every event is stamped: the date part is formatted once a second. */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[80]; /* "2026-11-22T11:30:09." */
    time_t sec = (time_t)(ns / 1000000000LL);
    long frac = (long)(ns % 1000000000LL);
    char out[96];
    if (frac < 0) {
        frac += 1000000000L;
        sec -= 1;
    }
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_sec = sec;
    }
    size_t n = strlen(cached);
    memcpy(out, cached, n);
    for (int i = 8; i >= 0; i--, frac /= 10)
        out[n + (size_t)i] = (char)('0' + frac % 10);
    out[n + 9] = 'Z';
    out[n + 10] = '\0';
    snprintf(buf, size, "%s", out);
    return buf;
}

/* n decimal digits at p (all digits) -> *out; 0 if not digits. */
static int digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil): no timegm, no time zone lookups —
 * every decoded event parses its ce_time. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int ev_parse_time(const char *s, size_t len, int64_t *ns)
{
    int y, mo, d, h, mi, sec;
    int64_t frac_ns = 0, offset_s = 0;
    const char *p = s, *end = s + len;
    /* YYYY-MM-DDTHH:MM:SS */
    if (len < 19 || !digits(p, 4, &y) || p[4] != '-' || !digits(p + 5, 2, &mo) || p[7] != '-' ||
        !digits(p + 8, 2, &d) || (p[10] != 'T' && p[10] != 't' && p[10] != ' ') ||
        !digits(p + 11, 2, &h) || p[13] != ':' || !digits(p + 14, 2, &mi) || p[16] != ':' ||
        !digits(p + 17, 2, &sec) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60)
        return EV_ERR_INVALID;
    p += 19;
    if (p < end && *p == '.') {
        int n = 0;
        for (p++; p < end && *p >= '0' && *p <= '9'; p++, n++)
            if (n < 9)
                frac_ns = frac_ns * 10 + (*p - '0');
        if (n == 0)
            return EV_ERR_INVALID;
        for (; n < 9; n++)
            frac_ns *= 10;
    }
    if (p < end && (*p == 'Z' || *p == 'z')) {
        p++;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int oh, om;
        if (end - p < 6 || !digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om))
            return EV_ERR_INVALID;
        offset_s = (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
        p += 6;
    } else {
        return EV_ERR_INVALID;
    }
    if (p != end)
        return EV_ERR_INVALID;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    /* int64 ns reach 1677-09-21 .. 2262-04-11: a time outside is an error,
     * not a wrapped number */
    if (__builtin_mul_overflow(secs, 1000000000LL, &secs) ||
        __builtin_add_overflow(secs, frac_ns, ns))
        return EV_ERR_INVALID;
    return 0;
}

void ev__ce_headers(const ev_schema *s, const ev_emit_opts *opts, const char *default_source,
                    ev__ce_storage *st, ev_header h[EV__CE_HEADERS])
{
    const char *source = opts && opts->source ? opts->source : default_source;
    int64_t t = opts && opts->time_ns ? opts->time_ns : ev_now_ns();
    if (opts && opts->id)
        snprintf(st->id, sizeof(st->id), "%s", opts->id);
    else
        ev_new_id(st->id);
    snprintf(st->source, sizeof(st->source), "%s", source ? source : "msrs");
    ev_format_time(t, st->time, sizeof(st->time));
    h[0] = (ev_header){"ce_specversion", "1.0", 3};
    h[1] = (ev_header){"ce_id", st->id, strlen(st->id)};
    h[2] = (ev_header){"ce_type", ev_schema_name(s), strlen(ev_schema_name(s))};
    h[3] = (ev_header){"ce_source", st->source, strlen(st->source)};
    h[4] = (ev_header){"ce_time", st->time, strlen(st->time)};
    h[5] = (ev_header){"content-type", EV_CONTENT_TYPE, sizeof(EV_CONTENT_TYPE) - 1};
    h[6] = (ev_header){"ce_dataschema", ev__schema_dataschema(s), strlen(ev__schema_dataschema(s))};
}

const void *ev_msg_header(const ev_msg *msg, const char *name, size_t *len)
{
    const void *found = NULL;
    for (size_t i = 0; i < msg->header_count; i++) {
        if (strcmp(msg->headers[i].name, name) == 0) {
            found = msg->headers[i].value;
            if (len)
                *len = msg->headers[i].value_len;
        }
    }
    return found;
}

/* Copies header name of msg into dst as a string; "" when absent. */
static size_t header_copy(const ev_msg *msg, const char *name, char *dst, size_t size)
{
    size_t len = 0;
    const void *v = ev_msg_header(msg, name, &len);
    if (!v)
        len = 0;
    if (len >= size)
        len = size - 1;
    if (len)
        memcpy(dst, v, len);
    dst[len] = '\0';
    return len;
}

int ev_event_decode(ev_codec *codec, const ev_msg *msg, ev_event *ev, char *errstr,
                    size_t errstr_size)
{
    int rc = ev_event_peek(msg, ev, errstr, errstr_size);
    if (!rc && (rc = ev__codec_read(codec, ev->schema, msg->value, msg->value_len, &ev->value,
                                    errstr, errstr_size)))
        ev->value = NULL;
    return rc;
}

int ev_event_peek(const ev_msg *msg, ev_event *ev, char *errstr, size_t errstr_size)
{
    char where[160]; /* "topic[partition]@offset": written only when needed */
    size_t type_len = 0;
    const void *type;
    int rc;
#define WHERE()                                                                                    \
    (snprintf(where, sizeof(where), "%s[%d]@%lld", msg->topic, (int)msg->partition,                \
              (long long)msg->offset),                                                             \
     where)

    ev->schema = NULL;
    ev->value = NULL;
    ev->time_ns = 0;
    ev->msg = NULL;
    rc = ev_codec_check(msg->value, msg->value_len, &ev->schema, errstr, errstr_size);
    if (rc) {
        char inner[256];
        snprintf(inner, sizeof(inner), "%s", errstr ? errstr : "");
        return ev__fail(errstr, errstr_size, rc, "%s: %s", WHERE(), inner);
    }
    type = ev_msg_header(msg, "ce_type", &type_len);
    if (type && (type_len != strlen(ev_schema_name(ev->schema)) ||
                 memcmp(type, ev_schema_name(ev->schema), type_len) != 0))
        return ev__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "%s: header ce_type is %.*s but the schema id %d is %s", WHERE(),
                        (int)type_len, (const char *)type, (int)ev_schema_id(ev->schema),
                        ev_schema_name(ev->schema));
    if (header_copy(msg, "ce_id", ev->id, sizeof(ev->id)) == 0)
        /* No id: derive a stable one from the position so redelivery of the
         * same record is still recognised. */
        snprintf(ev->id, sizeof(ev->id), "%.*s", (int)sizeof(ev->id) - 1, WHERE());
    header_copy(msg, "ce_source", ev->source, sizeof(ev->source));
    size_t tlen = 0;
    const void *t = ev_msg_header(msg, "ce_time", &tlen);
    if (!t || ev_parse_time(t, tlen, &ev->time_ns) != 0)
        ev->time_ns = msg->timestamp_ms * 1000000LL;
    ev->msg = msg;
    return 0;
#undef WHERE
}

int ev_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= EV_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == ':'))
            return 0;
    }
    return 1;
}

/* FNV-1a, 64 bits: ids only need to differ, not to resist an attacker
 * (anyone who may write to the log may write any id). */
static uint64_t fnv1a64(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void ev_event_id(char out[EV_ID_MAX], const char *fmt, ...)
{
    char full[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(full, sizeof(full), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t len = (size_t)n < sizeof(full) ? (size_t)n : sizeof(full) - 1;
    if (len < EV_ID_MAX) {
        memcpy(out, full, len + 1);
        return;
    }
    /* 40 characters of the text, '~', 16 hex digits of the whole: 57 */
    snprintf(out, EV_ID_MAX, "%.40s~%016llx", full, (unsigned long long)fnv1a64(full, len));
}
