/* internal.h — shared internals of libevents (ev__ prefix, not exported). */
#ifndef MSRS_EV_INTERNAL_H
#define MSRS_EV_INTERNAL_H
#include "ev.h"
#include <stdarg.h>

/* Writes a formatted message into errstr (if any) and returns err. */
int ev__fail(char *errstr, size_t errstr_size, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* CRC-32C (Castagnoli) of buf, continuing from crc (0 to start)
 * (crc32c.c). */
uint32_t ev__crc32c(uint32_t crc, const void *buf, size_t len);

/* The reusable generic value interface of a schema (owned by the catalog). */
avro_value_iface_t *ev__schema_iface(const ev_schema *s);
const char *ev__schema_dataschema(const ev_schema *s); /* "urn:msrs:schema:ID" */
/* The default (from the .avsc) of field index of a catalog record or of a
 * record nested in one; NULL when the field has none. Borrowed. */
json_t *ev__field_default(avro_schema_t record, size_t index);
/* Avro binary validation (validate.c): a schema compiled into a flat tree
 * that checks, without allocating, that bytes are one well-formed value:
 * every length and count fits in what remains, every union and enum index
 * exists. Thread-safe once built. */
typedef struct ev__validator ev__validator;
ev__validator *ev__validator_new(avro_schema_t schema);
void ev__validator_destroy(ev__validator *v);
/* Returns 0, EV_ERR_TRUNCATED or EV_ERR_CORRUPT; *consumed is where the value
 * ended (on success) or where the problem is. */
int ev__validate(const ev__validator *v, const unsigned char *buf, size_t len, size_t *consumed);
/* Reads a frame ev_codec_check accepted into the codec's value for s. */
int ev__codec_read(ev_codec *c, const ev_schema *s, const void *buf, size_t len,
                   avro_value_t **value, char *errstr, size_t errstr_size);
/* The validator of a catalog schema (owned by the catalog). */
const ev__validator *ev__schema_validator(const ev_schema *s);

/* The position of s in the catalog, in [0, ev_schema_count()). */
size_t ev__schema_index(const ev_schema *s);

/* An earlier version of a record (schemas/history/, docs/topics.md), by the
 * id its records carry; NULL when id is none. Owned by the catalog. */
typedef struct ev__history ev__history;
const ev__history *ev__history_by_id(int32_t id);
size_t ev__history_count(void);
size_t ev__history_index(const ev__history *h);             /* in [0, ev__history_count()) */
const ev_schema *ev__history_current(const ev__history *h); /* what it is read as */
avro_value_iface_t *ev__history_iface(const ev__history *h);
const ev__validator *ev__history_validator(const ev__history *h);

/* CloudEvents: builds the seven headers of an event into h[EV__CE_HEADERS].
 * Strings are copied into storage, which must outlive the headers. */
#define EV__CE_HEADERS 7
typedef struct ev__ce_storage {
    char id[EV_ID_MAX];
    char source[EV_SOURCE_MAX];
    char time[48];
} ev__ce_storage;
void ev__ce_headers(const ev_schema *s, const ev_emit_opts *opts, const char *default_source,
                    ev__ce_storage *st, ev_header h[EV__CE_HEADERS]);

/* ev_value_from_json for a record of an earlier version converted to the
 * current one (codec.c): JSON has no NaN or infinity, and ev_value_to_json
 * writes a non-finite float or double as null, so here null in a float or
 * double is NaN (an infinity comes back as NaN: the value is not a number
 * either way), and the record reads as ev_codec_check said it would. */
int ev__value_from_json_old(avro_value_t *value, json_t *json, char *errstr, size_t errstr_size);

#endif
