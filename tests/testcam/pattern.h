/* pattern.h — the test camera's YUYV frame k (testcam.c), shared with
 * bench/bench_encode.c so that the raw encoder it measures encodes the same
 * frames msrs-capture does: a diagonal that moves with k, "MSRSFRM1" and k
 * (little-endian) in the first 16 bytes. */
#ifndef MSRS_TESTCAM_PATTERN_H
#define MSRS_TESTCAM_PATTERN_H
#include <stdint.h>
#include <string.h>

static inline void tc_pattern_yuyv(unsigned char *img, uint32_t width, uint32_t height, int64_t k)
{
    size_t row = (size_t)width * 2;
    for (uint32_t y = 0; y < height; y++) {
        unsigned char *p = img + y * row;
        for (size_t x = 0; x < row; x += 4) { /* Y U Y V */
            p[x] = p[x + 2] = (unsigned char)((x / 2 + y + (size_t)k * 4) & 0xff);
            p[x + 1] = (unsigned char)(128 + (y & 63));
            p[x + 3] = (unsigned char)(128 + ((size_t)k & 63));
        }
    }
    memcpy(img, "MSRSFRM1", 8);
    for (int i = 0; i < 8; i++)
        img[8 + i] = (unsigned char)((uint64_t)k >> (8 * i));
}

#endif
