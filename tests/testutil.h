/* testutil.h — helpers shared by the Check tests. */
#ifndef MSRS_TESTUTIL_H
#define MSRS_TESTUTIL_H
#include "ev.h"

#include <check.h>

/* The example record of short_name from tests/data/records.json (borrowed). */
json_t *tu_fixture(const char *short_name);
/* A new empty directory under /tmp; the caller removes it (tu_rmrf). */
char *tu_tmpdir(const char *tag);
void tu_rmrf(const char *path);
/* $MSRS_BIN_DIR/name, in a static buffer. */
const char *tu_bin(const char *name);
/* Runs the suite, prints Check's summary, returns the process exit code. */
int tu_run(Suite *s);
/* Builds a value of short_name from JSON text; the value belongs to codec. */
avro_value_t *tu_value(ev_codec *codec, const char *short_name, const char *json_text);

/* Applies an event of short_name built from JSON, with event id and time,
 * to state; returns ev_state_apply's result. */
int tu_apply(ev_state *state, ev_codec *codec, const char *id, int64_t time_ns,
             const char *short_name, const char *json_text);

#endif
