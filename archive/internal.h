/* internal.h — what the archive library's files share (prefix ar__);
 * nothing here is public. */
#ifndef MSRS_ARCHIVE_INTERNAL_H
#define MSRS_ARCHIVE_INTERNAL_H
#include "archive.h"

#include <stdarg.h>

/* Fills errstr (printf-style) and returns code. */
int ar__fail(char *errstr, size_t errstr_size, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A name safe as one path component: [A-Za-z0-9._-], others become '_';
 * a name that had to change (or be cut) ends in '~' and a hash of the
 * original, so two ids never map to one folder. */
void ar__safe_name(char *out, size_t size, const char *in);

/* Bytes a big file (video) may have written before the kernel is asked to
 * start writing them to disk (ar__writeback). */
#define AR__WRITEBACK_BYTES (4 << 20)

/* Counts len more bytes written to a big file: 1 (and the count starts
 * again) once AR__WRITEBACK_BYTES have come since the last time. Then the
 * writer flushes its own buffer into the file and calls ar__writeback. */
int ar__writeback_due(int64_t *unsynced_bytes, size_t len);

/* Paces a big file's writing to the disk (fd < 0: nothing): waits until
 * what the last call started (fd's first *started_to bytes) is written,
 * then starts the kernel writing the rest (sync_file_range) and sets
 * *started_to to the file's size. At 100 MB/s of video the archive's
 * files otherwise stayed in the page cache until the kernel's background
 * threshold (~2 GB here), which it then wrote in one burst that held up
 * every other writer's fsync, the log's commits among them, for ~1 s; and
 * started every 8 MiB without waiting, the archive's writes in flight still
 * held the log's syncs: sample -> visible p99 38-50 ms with Matroska on
 * against 13-15 ms with the archive on tmpfs (bench/README.md, session 30;
 * likely ext4's journal commits, which wait for the data of the blocks
 * they allocated). Paced, what is in flight of a file is what came since
 * the last call: about AR__WRITEBACK_BYTES (a .mkv grows by whole
 * clusters, up to ~5 MiB each). The waits make the archiver follow the
 * disk rather than the page cache. 0, or -1 with errno: a write error the
 * wait collected is reported here once, and not again to a later fsync of
 * another descriptor (ar__sync_path), so the caller fails the stream. */
int ar__writeback(int fd, int64_t *started_to);

/* fsync of the file or folder at path. 0, or -1 with errno. */
int ar__sync_path(const char *path);

/* A record as the log had it (events.avro). */
typedef struct ar__frame {
    char id[EV_ID_MAX], source[EV_SOURCE_MAX];
    int64_t time_ns;
    unsigned char *value; /* framed: 0x00, schema id, Avro */
    size_t len;
} ar__frame;

/* A kept clock round: the ClockOffsetMeasured frame and its t4. */
typedef struct ar__clock {
    int64_t t4_ns;
    unsigned char *value;
    size_t len;
} ar__clock;

/* device_id's last registration, or NULL. */
const ar__frame *ar__devices_registration(const ar_devices *d, const char *device_id);
/* device_id's kept rounds with t4 in [from_ns, to_ns], oldest first, into
 * out (up to cap). Returns how many. */
size_t ar__devices_clock(const ar_devices *d, const char *device_id, int64_t from_ns, int64_t to_ns,
                         const ar__clock **out, size_t cap);

/* The Avro schema of events.avro's records. New reference, or NULL. */
avro_schema_t ar__event_schema(void);

/* Checks an Avro container file's framing and every record against its
 * writer schema before avro-c reads it (container.c). 0 or EV_ERR_*. */
int ar__container_check(const char *path, char *errstr, size_t errstr_size);

#endif
