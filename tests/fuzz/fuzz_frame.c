/* fuzz_frame — framed records as they come off the log: ev_codec_check,
 * ev_codec_decode and ev_event_peek of each frame (an ev_msg with plausible
 * CloudEvents headers around the bytes), then ev_state_apply of what
 * decodes, once peeked and once decoded, into two states that must print
 * the same.
 *
 * Input: one or more chunks, each a 2-byte big-endian length and that many
 * bytes of frame (the last chunk is whatever remains), so one input is a
 * short history the reducers fold in order. */
#include "ev.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fold_one(ev_codec *codec, ev_state *peeked, ev_state *decoded, const uint8_t *frame,
                     size_t len, size_t i)
{
    char err[512], id[32], time[64];
    const ev_schema *s = NULL, *checked = NULL;
    avro_value_t *v = NULL;
    int32_t sid = 0;
    ev_header h[4];
    size_t n = 0;
    ev_event ev;

    int check_rc = ev_codec_check(frame, len, &checked, err, sizeof(err));
    int decode_rc = ev_codec_decode(codec, frame, len, &s, &v, err, sizeof(err));
    /* ev_codec_check is what ev_codec_decode checks, without reading */
    if ((check_rc == 0) != (decode_rc == 0) || (check_rc == 0 && checked != s))
        abort();
    if (decode_rc == 0) {
        json_t *j = NULL;
        if (ev_value_to_json(v, &j, err, sizeof(err)) == 0)
            json_decref(j);
    }

    /* The headers a producer writes: ce_type the frame's own type (when its
     * id is known), a position-derived id (every third chunk repeats the
     * previous id: a redelivery), a time that moves on. */
    snprintf(id, sizeof(id), "fuzz-%zu", i % 3 == 2 ? i - 1 : i);
    ev_format_time(1795347000000000000LL + (int64_t)i * 1000000, time, sizeof(time));
    if (ev_frame_schema_id(frame, len, &sid) == 0 && ev_schema_by_id(sid)) {
        const char *type = ev_schema_name(ev_schema_by_id(sid));
        h[n++] = (ev_header){"ce_type", type, strlen(type)};
    }
    h[n++] = (ev_header){"ce_id", id, strlen(id)};
    h[n++] = (ev_header){"ce_source", "fuzz", 4};
    h[n++] = (ev_header){"ce_time", time, strlen(time)};
    ev_msg m = {.topic = "msrs.fuzz",
                .partition = 0,
                .offset = (int64_t)i,
                .timestamp_ms = 1795347000000LL,
                .key = "k",
                .key_len = 1,
                .value = frame,
                .value_len = len,
                .headers = h,
                .header_count = n};

    if (ev_event_peek(&m, &ev, err, sizeof(err)) == 0)
        ev_state_apply(peeked, &ev, err, sizeof(err));
    if (ev_event_decode(codec, &m, &ev, err, sizeof(err)) == 0)
        ev_state_apply(decoded, &ev, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* one codec for every input, as a consumer keeps one for every record */
    static ev_codec *codec;
    if (!codec)
        codec = ev_codec_new();
    ev_state *peeked = ev_state_new(), *decoded = ev_state_new();
    size_t i = 0;

    while (size > 0) {
        size_t len = size >= 2 ? (size_t)data[0] << 8 | data[1] : 0;
        size_t skip = size >= 2 ? 2 : size;
        data += skip;
        size -= skip;
        if (len > size)
            len = size;
        fold_one(codec, peeked, decoded, data, len, i++);
        data += len;
        size -= len;
    }

    /* A fold that peeks and one that decodes give the same state. */
    json_t *a = ev_state_to_json(peeked), *b = ev_state_to_json(decoded);
    char *ta = json_dumps(a, JSON_SORT_KEYS), *tb = json_dumps(b, JSON_SORT_KEYS);
    if (!ta || !tb || strcmp(ta, tb) != 0) {
        fprintf(stderr, "fuzz_frame: peeked and decoded folds differ:\n%s\n%s\n", ta ? ta : "",
                tb ? tb : "");
        abort();
    }
    free(ta);
    free(tb);
    json_decref(a);
    json_decref(b);
    ev_state_destroy(peeked);
    ev_state_destroy(decoded);
    return 0;
}
