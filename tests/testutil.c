#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *tu_fixture(const char *short_name)
{
    static json_t *root;
    if (!root) {
        char path[1024];
        json_error_t err;
        snprintf(path, sizeof(path), "%s/tests/data/records.json", getenv("MSRS_SOURCE_DIR"));
        root = json_load_file(path, JSON_ALLOW_NUL, &err);
        ck_assert_msg(root != NULL, "%s: %s", path, err.text);
    }
    return json_object_get(json_object_get(root, "records"), short_name);
}

char *tu_tmpdir(const char *tag)
{
    char tmpl[256];
    snprintf(tmpl, sizeof(tmpl), "/tmp/msrs-%s-XXXXXX", tag);
    char *d = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(d);
    return strdup(d);
}

void tu_rmrf(const char *path)
{
    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

const char *tu_bin(const char *name)
{
    static char path[1024];
    const char *dir = getenv("MSRS_BIN_DIR");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "build/bin", name);
    return path;
}

int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

avro_value_t *tu_value(ev_codec *codec, const char *short_name, const char *json_text)
{
    char err[512];
    const ev_schema *s = ev_schema_by_name(short_name);
    avro_value_t *v;
    json_t *j = json_loads(json_text, 0, NULL);
    ck_assert_msg(s && j, "%s: %s", short_name, json_text);
    ck_assert_int_eq(ev_codec_value(codec, s, &v), 0);
    ck_assert_msg(ev_value_from_json(v, j, err, sizeof(err)) == 0, "%s", err);
    json_decref(j);
    return v;
}

int tu_apply(ev_state *state, ev_codec *codec, const char *id, int64_t time_ns,
             const char *short_name, const char *json_text)
{
    char err[256];
    ev_event ev = {0};
    ev.schema = ev_schema_by_name(short_name);
    ev.value = tu_value(codec, short_name, json_text);
    snprintf(ev.id, sizeof(ev.id), "%s", id);
    ev.time_ns = time_ns;
    return ev_state_apply(state, &ev, err, sizeof(err));
}
