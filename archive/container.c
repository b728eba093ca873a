/* container.c — checks an Avro object container file before avro-c reads
 * it. avro-c trusts the lengths it reads: a corrupt block size made it ask
 * for 14.5 GB (found by fuzz_archive_fold), a truncated first block makes
 * it leak its reader. Here every block's count and size must fit in the
 * file, every record in a block must be a well-formed value of the writer's
 * schema (ev_validate: nothing allocated) and end exactly at the block's
 * end, and every sync marker must be the header's. Archives are written
 * with the "null" codec; another codec is refused (its blocks could not be
 * checked without inflating them). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct in {
    const unsigned char *p, *end;
} in;

/* A zigzag varint long; -1 when it does not fit. */
static int read_long(in *c, int64_t *out)
{
    uint64_t u = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->p >= c->end)
            return -1;
        unsigned char b = *c->p++;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
            return 0;
        }
    }
    return -1;
}

/* Avro bytes/string: a length and that many bytes, inside the file. */
static int read_bytes(in *c, const unsigned char **at, int64_t *len)
{
    if (read_long(c, len) || *len < 0 || *len > c->end - c->p)
        return -1;
    *at = c->p;
    c->p += *len;
    return 0;
}

static int check(const char *path, in *c, char *errstr, size_t errstr_size)
{
    const unsigned char *start = c->p, *schema_json = NULL, *codec = NULL, *sync;
    int64_t schema_len = 0, codec_len = 0, count, n;
    if (c->end - c->p < 4 || memcmp(c->p, "Obj\x01", 4) != 0)
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "%s: not an Avro container file (no Obj\\x01 magic)", path);
    c->p += 4;
    for (;;) { /* the metadata map, in blocks */
        if (read_long(c, &count))
            goto truncated;
        if (count == 0)
            break;
        if (count < 0 && (count == INT64_MIN || read_long(c, &n)))
            goto truncated;
        for (int64_t i = count < 0 ? count : -count; i < 0; i++) {
            const unsigned char *key, *value;
            int64_t key_len, value_len;
            if (read_bytes(c, &key, &key_len) || read_bytes(c, &value, &value_len))
                goto truncated;
            if (key_len == 11 && memcmp(key, "avro.schema", 11) == 0)
                schema_json = value, schema_len = value_len;
            if (key_len == 10 && memcmp(key, "avro.codec", 10) == 0)
                codec = value, codec_len = value_len;
        }
    }
    if (c->end - c->p < 16)
        goto truncated;
    sync = c->p;
    c->p += 16;
    if (!schema_json)
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: header: no avro.schema", path);
    if (codec && !(codec_len == 4 && memcmp(codec, "null", 4) == 0))
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "%s: codec '%.*s': archives are written with the null codec", path,
                        (int)(codec_len < 32 ? codec_len : 32), (const char *)codec);
    avro_schema_t schema;
    if (avro_schema_from_json_length((const char *)schema_json, (size_t)schema_len, &schema))
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: header: avro.schema: %s", path,
                        avro_strerror());
    ev_validator *v = ev_validator_new(schema);
    avro_schema_decref(schema);
    if (!v)
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                        "%s: header: avro.schema cannot be checked", path);
    int rc = 0;
    for (int64_t block = 0; c->p < c->end && !rc; block++) {
        int64_t size;
        if (read_long(c, &count) || read_long(c, &size) || count < 0 || size < 0 ||
            size > c->end - c->p - 16) {
            rc = ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                          "%s: block %lld at byte %lld: its count or size does not fit in the "
                          "file (a truncated file?)",
                          path, (long long)block, (long long)(c->p - start));
            break;
        }
        const unsigned char *data = c->p, *data_end = c->p + size;
        for (int64_t i = 0; i < count && !rc; i++) {
            size_t used;
            if (ev_validate(v, data, (size_t)(data_end - data), &used))
                rc = ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                              "%s: block %lld, record %lld: not a value of the file's schema", path,
                              (long long)block, (long long)i);
            data += used;
        }
        if (!rc && data != data_end)
            rc = ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                          "%s: block %lld: %lld records end %lld bytes before the block does", path,
                          (long long)block, (long long)count, (long long)(data_end - data));
        c->p = data_end;
        if (!rc && memcmp(c->p, sync, 16) != 0)
            rc = ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: block %lld: wrong sync marker",
                          path, (long long)block);
        c->p += 16;
    }
    ev_validator_destroy(v);
    return rc;
truncated:
    return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT,
                    "%s: header ends early (a truncated file?)", path);
}

int ar__container_check(const char *path, char *errstr, size_t errstr_size)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st)) {
        if (fd >= 0)
            close(fd);
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot read: %s", path,
                        strerror(errno));
    }
    if (st.st_size == 0) {
        close(fd);
        return ar__fail(errstr, errstr_size, EV_ERR_CORRUPT, "%s: empty file", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return ar__fail(errstr, errstr_size, EV_ERR_IO, "%s: cannot map: %s", path,
                        strerror(errno));
    in c = {map, (const unsigned char *)map + st.st_size};
    int rc = check(path, &c, errstr, errstr_size);
    munmap(map, (size_t)st.st_size);
    return rc;
}
