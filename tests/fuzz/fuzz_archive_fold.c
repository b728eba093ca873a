/* fuzz_archive_fold — what msrs-replay --archive reads of a session
 * archive folder (replay/archive_src.c's as_fold_archive): its
 * manifest.json, events.avro (framed records in an Avro object container
 * file) and DEVICE/clock.avro (ClockOffsetMeasured values), read with
 * avro-c's file reader and folded with the reducers.
 *
 * Input: the first byte says which file the rest is (even: events.avro,
 * odd: phone-1/clock.avro); the manifest names both, the other one is an
 * empty container file of the right schema written once. */
#include "archive_src.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256], events[320], clock_[320], manifest[320], device[320];
static char events_empty[320], clock_empty[320];

/* services/archiver/main.c's EVENT_SCHEMA: a record as the log held it */
static const char events_schema[] =
    "{\"type\":\"record\",\"name\":\"ArchivedEvent\",\"namespace\":\"msrs.archive\",\"fields\":["
    "{\"name\":\"topic\",\"type\":\"string\"},{\"name\":\"key\",\"type\":\"string\"},"
    "{\"name\":\"id\",\"type\":\"string\"},{\"name\":\"source\",\"type\":\"string\"},"
    "{\"name\":\"time_ns\",\"type\":\"long\"},{\"name\":\"value\",\"type\":\"bytes\"}]}";

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f))
        abort();
}

/* An empty object container file of the schema in json. */
static void write_empty(const char *path, const char *json)
{
    avro_schema_t s;
    avro_file_writer_t w;
    unlink(path);
    if (avro_schema_from_json_length(json, strlen(json), &s) ||
        avro_file_writer_create(path, s, &w))
        abort();
    avro_file_writer_close(w);
    avro_schema_decref(s);
}

static void copy_file(const char *from, const char *to)
{
    char buf[4096];
    FILE *f = fopen(from, "rb");
    size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (!f || n == sizeof(buf))
        abort();
    fclose(f);
    write_file(to, buf, n);
}

static void remove_all(void)
{
    unlink(events);
    unlink(clock_);
    unlink(manifest);
    unlink(events_empty);
    unlink(clock_empty);
    rmdir(device);
    rmdir(dir);
}

static void setup(void)
{
    static const char m[] = "{\"session_id\":\"s1\",\"files\":{\"events.avro\":{},"
                            "\"phone-1/clock.avro\":{}}}\n";
    snprintf(dir, sizeof(dir), "%s/fuzz_archive_fold.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(events, sizeof(events), "%s/events.avro", dir);
    snprintf(device, sizeof(device), "%s/phone-1", dir);
    snprintf(clock_, sizeof(clock_), "%s/clock.avro", device);
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", dir);
    snprintf(events_empty, sizeof(events_empty), "%s/events.empty", dir);
    snprintf(clock_empty, sizeof(clock_empty), "%s/clock.empty", dir);
    if (mkdir(device, 0700))
        abort();
    write_file(manifest, m, strlen(m));
    write_empty(events_empty, events_schema);
    write_empty(clock_empty, ev_schema_json(ev_schema_by_name("ClockOffsetMeasured")));
    atexit(remove_all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t records = 0;
    if (size < 1)
        return 0;
    if (!*dir)
        setup();
    if (data[0] % 2 == 0) {
        write_file(events, data + 1, size - 1);
        copy_file(clock_empty, clock_);
    } else {
        write_file(clock_, data + 1, size - 1);
        copy_file(events_empty, events);
    }
    ev_state *state = ev_state_new();
    as_fold_archive(dir, state, &records);
    json_decref(ev_state_to_json(state));
    ev_state_destroy(state);
    return 0;
}
