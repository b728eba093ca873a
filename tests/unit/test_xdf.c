/* The XDF writer (archive.h, ar_xdf_*): a file written and parsed back
 * chunk by chunk against the XDF 1.0 spec — magic, varlen chunk lengths,
 * tags, the stream header's XML, samples with their timestamps,
 * ClockOffset chunks, boundary, footer. (tests/pylib/xdfread.py reads the
 * archiver's XDF files in the session e2e test.) */
#include "archive.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *buf;
static size_t len, pos;

static uint64_t u(int bytes)
{
    uint64_t v = 0;
    ck_assert_uint_le(pos + (size_t)bytes, len);
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)buf[pos + (size_t)i] << (8 * i);
    pos += (size_t)bytes;
    return v;
}

static double dbl(void)
{
    uint64_t v = u(8);
    double d;
    memcpy(&d, &v, sizeof(d));
    return d;
}

static uint64_t varlen(void)
{
    int n = (int)u(1);
    ck_assert_msg(n == 1 || n == 4 || n == 8, "NumLengthBytes %d", n);
    return u(n);
}

typedef struct chunk {
    int tag;
    size_t content, end; /* offsets in buf */
} chunk;

static chunk next_chunk(void)
{
    chunk c;
    uint64_t length = varlen();
    c.tag = (int)u(2);
    c.content = pos;
    c.end = pos + (size_t)length - 2;
    ck_assert_uint_le(c.end, len);
    return c;
}

static void read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    buf = malloc(1 << 20);
    len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    pos = 0;
}

START_TEST(written_and_parsed)
{
    char *dir = tu_tmpdir("xdf"), path[512], err[256];
    ar_xdf *x;
    double t[3] = {10.0, 10.005, 10.01}, v[6] = {1, 2, 3, 4, 5, 6};
    double ot[2] = {9.5, 10.5}, ov[2] = {-0.25, -0.2500001};
    snprintf(path, sizeof(path), "%s/t.xdf", dir);
    ck_assert_int_eq(ar_xdf_open(&x, path, err, sizeof(err)), 0);
    ar_xdf_stream_header(x, 1, "d1/imu", "IMU <&>", 2, 200.0, "double64", "d1/imu");
    ar_xdf_samples(x, 1, 3, t, 2, v);
    ck_assert_int_eq(ar_xdf_chunks_since_boundary(x), 1);
    ar_xdf_stream_header(x, 2, "msrs/sync_marks", "Markers", 1, 0, "string", "s1");
    ar_xdf_string_sample(x, 2, 10.002, "go");
    ar_xdf_clock_offset(x, 1, ot[0], ov[0]);
    ar_xdf_clock_offset(x, 1, ot[1], ov[1]);
    ar_xdf_boundary(x);
    ck_assert_int_eq(ar_xdf_chunks_since_boundary(x), 0);
    ar_xdf_stream_footer(x, 1, 10.0, 10.01, 3, ot, ov, 2);
    ck_assert_int_eq(ar_xdf_close(x), 0);

    read_file(path);
    ck_assert_int_eq(memcmp(buf, "XDF:", 4), 0);
    pos = 4;
    chunk c = next_chunk(); /* FileHeader */
    ck_assert_int_eq(c.tag, 1);
    ck_assert_ptr_nonnull(memmem(buf + c.content, c.end - c.content, "<version>1.0</version>", 22));
    pos = c.end;

    c = next_chunk(); /* StreamHeader, XML escaped */
    ck_assert_int_eq(c.tag, 2);
    ck_assert_int_eq(u(4), 1);
    char xml[1024];
    snprintf(xml, sizeof(xml), "%.*s", (int)(c.end - pos), buf + pos);
    ck_assert_ptr_nonnull(strstr(xml, "<name>d1/imu</name>"));
    ck_assert_ptr_nonnull(strstr(xml, "<type>IMU &lt;&amp;&gt;</type>"));
    ck_assert_ptr_nonnull(strstr(xml, "<channel_count>2</channel_count>"));
    ck_assert_ptr_nonnull(strstr(xml, "<nominal_srate>200</nominal_srate>"));
    ck_assert_ptr_nonnull(strstr(xml, "<channel_format>double64</channel_format>"));
    pos = c.end;

    c = next_chunk(); /* Samples: every sample with its timestamp */
    ck_assert_int_eq(c.tag, 3);
    ck_assert_int_eq(u(4), 1);
    ck_assert_int_eq(varlen(), 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(u(1), 8);
        ck_assert(dbl() == t[i]);
        ck_assert(dbl() == v[2 * i]);
        ck_assert(dbl() == v[2 * i + 1]);
    }
    ck_assert_uint_eq(pos, c.end);

    c = next_chunk(); /* the string stream */
    ck_assert_int_eq(c.tag, 2);
    pos = c.end;
    c = next_chunk();
    ck_assert_int_eq(c.tag, 3);
    ck_assert_int_eq(u(4), 2);
    ck_assert_int_eq(varlen(), 1);
    ck_assert_int_eq(u(1), 8);
    ck_assert(dbl() == 10.002);
    ck_assert_int_eq(varlen(), 2);
    ck_assert_int_eq(memcmp(buf + pos, "go", 2), 0);
    pos += 2;
    ck_assert_uint_eq(pos, c.end);

    for (int i = 0; i < 2; i++) { /* ClockOffset: stream, collection time, offset */
        c = next_chunk();
        ck_assert_int_eq(c.tag, 4);
        ck_assert_int_eq(u(4), 1);
        ck_assert(dbl() == ot[i]);
        ck_assert(dbl() == ov[i]);
    }
    c = next_chunk(); /* Boundary: the spec's UUID */
    ck_assert_int_eq(c.tag, 5);
    ck_assert_int_eq(c.end - c.content, 16);
    ck_assert_int_eq(buf[pos], 0x43);
    pos = c.end;

    c = next_chunk(); /* StreamFooter */
    ck_assert_int_eq(c.tag, 6);
    ck_assert_int_eq(u(4), 1);
    snprintf(xml, sizeof(xml), "%.*s", (int)(c.end - pos), buf + pos);
    ck_assert_ptr_nonnull(strstr(xml, "<sample_count>3</sample_count>"));
    ck_assert_ptr_nonnull(strstr(xml, "<offset><time>9.5</time><value>-0.25</value></offset>"));
    pos = c.end;
    ck_assert_uint_eq(pos, len);
    free(buf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(open_fails_with_the_path)
{
    char err[256];
    ar_xdf *x = (ar_xdf *)1;
    ck_assert_int_eq(ar_xdf_open(&x, "/nonexistent-dir/t.xdf", err, sizeof(err)), EV_ERR_IO);
    ck_assert_ptr_null(x);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/t.xdf"));
    ck_assert_int_eq(ar_xdf_close(NULL), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("xdf");
    TCase *tc = tcase_create("xdf");
    tcase_add_test(tc, written_and_parsed);
    tcase_add_test(tc, open_fails_with_the_path);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
