/* files.c — file helpers of the archive format: SHA-256 (OpenSSL's EVP
 * digest: SHA-NI or AVX2 where the CPU has them), writing back and
 * syncing, copies, removing and making folders, safe names, what a file of
 * an archive is. */
/* sync_file_range and nftw: _GNU_SOURCE, which the build defines */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ar__fail(char *errstr, size_t errstr_size, int code, const char *fmt, ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ar__writeback_due(int64_t *unsynced_bytes, size_t len)
{
    *unsynced_bytes += (int64_t)len;
    if (*unsynced_bytes < AR__WRITEBACK_BYTES)
        return 0;
    *unsynced_bytes = 0;
    return 1;
}

int ar__writeback(int fd, int64_t *started_to)
{
    struct stat st;
    if (fd < 0)
        return 0;
    if (fstat(fd, &st))
        return -1;
    /* waiting also collects a write error: it is reported once, to
     * whoever waits first, so it must not be dropped here */
    if (*started_to > 0 && sync_file_range(fd, 0, *started_to,
                                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                               SYNC_FILE_RANGE_WAIT_AFTER))
        return -1;
    /* pages already written are skipped */
    if (sync_file_range(fd, *started_to, 0, SYNC_FILE_RANGE_WRITE))
        return -1;
    *started_to = st.st_size;
    return 0;
}

int ar__sync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd), e = errno;
    close(fd);
    errno = e;
    return rc;
}

int ar_sha256_file(const char *path, char hex[65], int64_t *bytes, char *errstr, size_t errstr_size)
{
    EVP_MD_CTX *sha = EVP_MD_CTX_new();
    FILE *f = fopen(path, "rb");
    int open_errno = errno;
    size_t buf_size = 1 << 20;
    unsigned char *buf = malloc(buf_size);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    size_t n;
    int rc = 0;
    *bytes = 0;
    hex[0] = '\0';
    if (!f)
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", path, strerror(open_errno));
    else if (!sha || !buf)
        rc = ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "%s: out of memory", path);
    else if (!EVP_DigestInit_ex(sha, EVP_sha256(), NULL))
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot start a SHA-256 digest", path);
    while (!rc && (n = fread(buf, 1, buf_size, f)) > 0) {
        if (!EVP_DigestUpdate(sha, buf, n))
            rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: SHA-256 failed", path);
        *bytes += (int64_t)n;
    }
    if (!rc && ferror(f))
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: read error", path);
    if (!rc && !EVP_DigestFinal_ex(sha, digest, &digest_len))
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: SHA-256 failed", path);
    if (f)
        fclose(f);
    EVP_MD_CTX_free(sha);
    free(buf);
    for (unsigned int i = 0; !rc && i < digest_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return rc;
}

int ar_copy_file(const char *from, const char *to, char *errstr, size_t errstr_size)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    if (!in || !out)
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", in ? to : from, strerror(errno));
    while (!rc && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", to, strerror(errno));
    if (!rc && ferror(in))
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: read error", from);
    if (in)
        fclose(in);
    if (out && fclose(out) && !rc)
        rc = ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: %s", to, strerror(errno));
    return rc;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ar_rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void ar__safe_name(char *out, size_t size, const char *in)
{
    size_t i = 0;
    int changed = 0;
    for (; in[i] && i + 1 < size; i++) {
        char c = in[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_';
        out[i] = ok ? c : '_';
        changed |= !ok;
    }
    out[i] = '\0';
    changed |= in[i] != '\0'; /* cut short */
    if (i == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
        snprintf(out, size, "unnamed");
        changed = 1;
    }
    if (changed && size > 10) {
        /* "s:1" and "s_1" are both valid ids: a name that had to change
         * carries a hash of the original, so two ids never share a folder */
        uint32_t h = 2166136261u;
        for (const char *p = in; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        size_t keep = strlen(out) < size - 10 ? strlen(out) : size - 10;
        snprintf(out + keep, size - keep, "~%08x", h);
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

ar_file_kind ar_file_kind_of(const char *rel)
{
    const char *slash = strrchr(rel, '/');
    if (!slash) {
        if (strcmp(rel, "manifest.json") == 0)
            return AR_FILE_MANIFEST;
        if (strcmp(rel, "events.avro") == 0)
            return AR_FILE_EVENTS;
        return ends_with(rel, ".xdf") ? AR_FILE_XDF : AR_FILE_OTHER;
    }
    if (strcmp(slash + 1, "clock.avro") == 0)
        return AR_FILE_CLOCK;
    return ends_with(rel, ".avro") ? AR_FILE_STREAM : AR_FILE_MEDIA;
}
