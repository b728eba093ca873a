/* xdf.c — the XDF 1.0 writer (archive.h, "XDF"). */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ar_xdf {
    FILE *f;
    int64_t chunks_since_boundary;
    int error;
};

static const unsigned char boundary_uuid[16] = {0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F,
                                                0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4};

static void put(ar_xdf *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->f) != n)
        w->error = 1;
}

static void put_u(ar_xdf *w, uint64_t v, int bytes)
{
    unsigned char b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put(w, b, (size_t)bytes);
}

static void put_double(ar_xdf *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof(v));
    put_u(w, v, 8);
}

/* A variable-length integer: [NumLengthBytes: 1, 4 or 8][value]. */
static void put_varlen(ar_xdf *w, uint64_t v)
{
    int bytes = v <= 0xff ? 1 : v <= 0xffffffffULL ? 4 : 8;
    put_u(w, (uint64_t)bytes, 1);
    put_u(w, v, bytes);
}

/* Chunk head: varlen length of tag + content, then the tag. */
static void chunk(ar_xdf *w, uint16_t tag, size_t content_len)
{
    put_varlen(w, (uint64_t)content_len + 2);
    put_u(w, tag, 2);
}

int ar_xdf_open(ar_xdf **out, const char *path, char *errstr, size_t errstr_size)
{
    static const char header[] = "<?xml version=\"1.0\"?><info><version>1.0</version>"
                                 "<writer>msrs-archiver</writer></info>";
    ar_xdf *w = calloc(1, sizeof(*w));
    *out = NULL;
    if (!w)
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "%s: out of memory", path);
    if (!(w->f = fopen(path, "wb"))) {
        int e = errno;
        free(w);
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", path, strerror(e));
    }
    put(w, "XDF:", 4);
    chunk(w, 1, sizeof(header) - 1);
    put(w, header, sizeof(header) - 1);
    *out = w;
    return w->error ? ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot write", path) : 0;
}

int64_t ar_xdf_chunks_since_boundary(const ar_xdf *x)
{
    return x ? x->chunks_since_boundary : 0;
}

/* XML text with &, <, > escaped. */
static void xml_text(char *out, size_t size, const char *s)
{
    size_t o = 0;
    for (; *s && o + 6 < size; s++) {
        const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : NULL;
        if (e) {
            memcpy(out + o, e, strlen(e));
            o += strlen(e);
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

void ar_xdf_stream_header(ar_xdf *w, uint32_t id, const char *name, const char *type, int channels,
                          double srate, const char *format, const char *source_id)
{
    char xml[2048], n[256], t[256], s[256];
    xml_text(n, sizeof(n), name);
    xml_text(t, sizeof(t), type);
    xml_text(s, sizeof(s), source_id);
    int len = snprintf(xml, sizeof(xml),
                       "<?xml version=\"1.0\"?><info><name>%s</name><type>%s</type>"
                       "<channel_count>%d</channel_count><nominal_srate>%.17g</nominal_srate>"
                       "<channel_format>%s</channel_format><source_id>%s</source_id>"
                       "<created_at>0</created_at></info>",
                       n, t, channels, srate, format, s);
    chunk(w, 2, 4 + (size_t)len);
    put_u(w, id, 4);
    put(w, xml, (size_t)len);
}

static size_t varlen_size(uint64_t v)
{
    return 1 + (v <= 0xff ? 1 : v <= 0xffffffffULL ? 4 : 8);
}

void ar_xdf_samples(ar_xdf *w, uint32_t id, size_t n, const double *t, int channels,
                    const double *values)
{
    size_t per = 1 + 8 + (size_t)channels * 8;
    chunk(w, 3, 4 + varlen_size(n) + n * per);
    put_u(w, id, 4);
    put_varlen(w, n);
    for (size_t i = 0; i < n; i++) {
        put_u(w, 8, 1); /* TimeStampBytes: every sample carries its time */
        put_double(w, t[i]);
        for (int c = 0; c < channels; c++)
            put_double(w, values[i * (size_t)channels + (size_t)c]);
    }
    w->chunks_since_boundary++;
}

void ar_xdf_string_sample(ar_xdf *w, uint32_t id, double t, const char *text)
{
    size_t len = strlen(text);
    chunk(w, 3, 4 + varlen_size(1) + 1 + 8 + varlen_size(len) + len);
    put_u(w, id, 4);
    put_varlen(w, 1);
    put_u(w, 8, 1);
    put_double(w, t);
    put_varlen(w, len);
    put(w, text, len);
    w->chunks_since_boundary++;
}

void ar_xdf_clock_offset(ar_xdf *w, uint32_t id, double collection_time, double offset)
{
    chunk(w, 4, 4 + 16);
    put_u(w, id, 4);
    put_double(w, collection_time);
    put_double(w, offset);
}

void ar_xdf_boundary(ar_xdf *w)
{
    chunk(w, 5, sizeof(boundary_uuid));
    put(w, boundary_uuid, sizeof(boundary_uuid));
    w->chunks_since_boundary = 0;
}

void ar_xdf_stream_footer(ar_xdf *w, uint32_t id, double first, double last, int64_t count,
                          const double *offset_times, const double *offset_values, size_t offsets)
{
    size_t cap = 512 + offsets * 96, len;
    char *xml = malloc(cap);
    if (!xml) {
        w->error = 1;
        return;
    }
    len = (size_t)snprintf(xml, cap,
                           "<?xml version=\"1.0\"?><info><first_timestamp>%.17g</first_timestamp>"
                           "<last_timestamp>%.17g</last_timestamp><sample_count>%lld"
                           "</sample_count><clock_offsets>",
                           first, last, (long long)count);
    for (size_t i = 0; i < offsets; i++)
        len += (size_t)snprintf(xml + len, cap - len,
                                "<offset><time>%.17g</time><value>%.17g</value></offset>",
                                offset_times[i], offset_values[i]);
    len += (size_t)snprintf(xml + len, cap - len, "</clock_offsets></info>");
    chunk(w, 6, 4 + len);
    put_u(w, id, 4);
    put(w, xml, len);
    free(xml);
}

int ar_xdf_close(ar_xdf *w)
{
    if (!w)
        return 0;
    if (fclose(w->f) != 0)
        w->error = 1;
    int rc = w->error ? EV_ERR_IO : 0;
    free(w);
    return rc;
}
