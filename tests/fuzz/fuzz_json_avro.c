/* fuzz_json_avro — JSON to Avro and back: the first input byte picks a
 * record type of the catalog (modulo their count), the rest is JSON for
 * ev_value_from_json; what converts is encoded, decoded and turned back
 * into JSON with ev_value_to_json, which must give the same JSON again. */
#include "ev.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    avro_value_t *v, *back;
    const ev_schema *got;
    const void *frame;
    size_t frame_len;
    json_t *out = NULL, *again = NULL;

    if (size < 1)
        return 0;
    const ev_schema *s = ev_schema_at(data[0] % ev_schema_count());
    json_t *in = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!in)
        return 0;
    ev_codec *codec = ev_codec_new();
    if (ev_codec_value(codec, s, &v) || ev_value_from_json(v, in, err, sizeof(err)))
        goto out;
    if (ev_value_to_json(v, &out, err, sizeof(err)))
        abort(); /* a value that was filled can be read */
    if (ev_codec_encode(codec, s, v, &frame, &frame_len, err, sizeof(err)))
        goto out; /* e.g. a union branch avro-c refuses to write */
    /* the frame outlives the next decode: it is the codec's output buffer */
    if (ev_codec_decode(codec, frame, frame_len, &got, &back, err, sizeof(err)) || got != s) {
        fprintf(stderr, "fuzz_json_avro: %s: own frame does not decode: %s\n",
                ev_schema_short_name(s), err);
        abort();
    }
    if (ev_value_to_json(back, &again, err, sizeof(err)) || !json_equal(out, again)) {
        fprintf(stderr, "fuzz_json_avro: %s: JSON changed through Avro\n", ev_schema_short_name(s));
        abort();
    }
out:
    json_decref(again);
    json_decref(out);
    json_decref(in);
    ev_codec_destroy(codec);
    return 0;
}
