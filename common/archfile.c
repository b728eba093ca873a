/* archfile.c — see archfile.h. */
#define _XOPEN_SOURCE 700
#include "archfile.h"

#include <errno.h>
#include <ftw.h>
#include <libavutil/mem.h>
#include <libavutil/sha.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

int sha256_file(const char *path, char hex[65], int64_t *bytes)
{
    struct AVSHA *sha = av_sha_alloc();
    FILE *f = fopen(path, "rb");
    unsigned char buf[65536], digest[32];
    size_t n;
    *bytes = 0;
    if (!sha || !f) {
        av_free(sha);
        if (f)
            fclose(f);
        return -1;
    }
    av_sha_init(sha, 256);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        av_sha_update(sha, buf, n);
        *bytes += (int64_t)n;
    }
    int err = ferror(f);
    fclose(f);
    av_sha_final(sha, digest);
    av_free(sha);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return err ? -1 : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void rm_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }
