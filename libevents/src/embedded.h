/* embedded.h — the schema files CMake embeds into libevents (internal). */
#ifndef MSRS_EV_EMBEDDED_H
#define MSRS_EV_EMBEDDED_H
#include <stddef.h>

typedef struct ev__embedded_schema {
    const char *file; /* "NodeRegistered.avsc" */
    const char *text;
    size_t len;
} ev__embedded_schema;

extern const char *const ev__catalog_json;
extern const size_t ev__catalog_json_len;
extern const ev__embedded_schema ev__embedded_schemas[];
extern const size_t ev__embedded_schema_count;

#endif
