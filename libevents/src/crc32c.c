/* crc32c.c — CRC-32C (Castagnoli, the polynomial of iSCSI, ext4 and
 * Kafka's record batches), the checksum of every record the SQLite backend
 * stores. Debian ships no small C library for it (zlib has only the IEEE
 * CRC-32, whose hardware support is weaker), so it is written here: the
 * SSE4.2 instruction where the CPU has it (about 20 GB/s), a byte table
 * otherwise; both give the same value. tests/log/test_corrupt.py checks
 * stored checksums against an independent implementation. */
#include "internal.h"

#include <string.h>

#define CRC32C_POLY 0x82F63B78u /* reflected */

static uint32_t table[256];
static int use_sse42;

/* At load, before any thread can call ev__crc32c: no once-check on every
 * call (a row's checksum is seven calls, most of a few bytes). */
__attribute__((constructor)) static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    use_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_table(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const unsigned char *p,
                                                            size_t len)
{
    uint64_t c = crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
    }
    uint32_t c32 = (uint32_t)c;
    for (; len; p++, len--)
        c32 = __builtin_ia32_crc32qi(c32, *p);
    return c32;
}
#endif

uint32_t ev__crc32c(uint32_t crc, const void *buf, size_t len)
{
    crc = ~crc;
    if (len) {
#if defined(__x86_64__)
        if (use_sse42)
            return ~crc_sse42(crc, buf, len);
#endif
        crc = crc_table(crc, buf, len);
    }
    return ~crc;
}
