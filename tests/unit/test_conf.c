/* Configuration: file format and its errors, environment overrides,
 * precedence, typed reads. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *write_file(const char *text)
{
    char *dir = tu_tmpdir("conf");
    char *path = malloc(strlen(dir) + 16);
    sprintf(path, "%s/msrs.conf", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(dir);
    return path;
}

START_TEST(file_and_precedence)
{
    char err[256];
    char *path = write_file("# comment\nlog = sqlite:/tmp/a.db\n\n  kafka.linger.ms=7 # "
                            "trailing\ntopic.prefix = lab.\n");
    ev_conf *c = ev_conf_new();
    ck_assert_int_eq(ev_conf_load_file(c, path, err, sizeof(err)), 0);
    ck_assert_str_eq(ev_conf_get(c, "log", NULL), "sqlite:/tmp/a.db");
    ck_assert_str_eq(ev_conf_get(c, "kafka.linger.ms", NULL), "7");
    setenv("MSRS_LOG", "sqlite:/tmp/b.db", 1);
    setenv("MSRS_X", "kafka.linger.ms=9; source=test", 1);
    ck_assert_int_eq(ev_conf_apply_env(c, err, sizeof(err)), 0);
    ck_assert_str_eq(ev_conf_get(c, "log", NULL), "sqlite:/tmp/b.db");
    ck_assert_str_eq(ev_conf_get(c, "kafka.linger.ms", NULL), "9");
    ck_assert_str_eq(ev_conf_get(c, "source", NULL), "test");
    ck_assert_str_eq(ev_conf_get(c, "topic.prefix", NULL), "lab.");
    ck_assert_int_eq(ev_conf_set_pair(c, "log=sqlite:/tmp/c.db", err, sizeof(err)), 0);
    ck_assert_str_eq(ev_conf_get(c, "log", NULL), "sqlite:/tmp/c.db");
    ck_assert_str_eq(ev_conf_get(c, "nope", "def"), "def");
    unsetenv("MSRS_LOG");
    unsetenv("MSRS_X");
    ev_conf_destroy(c);
    remove(path);
    free(path);
}
END_TEST

START_TEST(file_errors_name_file_and_line)
{
    char err[256], want[512];
    char *path = write_file("log = sqlite:x\nthis line is wrong\n");
    ev_conf *c = ev_conf_new();
    ck_assert_int_eq(ev_conf_load_file(c, path, err, sizeof(err)), EV_ERR_INVALID);
    snprintf(want, sizeof(want), "%s:2: expected 'key = value', got 'this line is wrong'", path);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(ev_conf_load_file(c, "/nonexistent/msrs.conf", err, sizeof(err)),
                     EV_ERR_INVALID);
    ck_assert_str_eq(err, "/nonexistent/msrs.conf: No such file or directory");
    ck_assert_int_eq(ev_conf_set_pair(c, "novalue", err, sizeof(err)), EV_ERR_INVALID);
    ev_conf_destroy(c);
    remove(path);
    free(path);
}
END_TEST

START_TEST(typed_reads)
{
    char err[256];
    int64_t x;
    ev_conf *c = ev_conf_new();
    ev_conf_set(c, "a", "42");
    ev_conf_set(c, "b", "4x");
    ck_assert_int_eq(ev_conf_get_int(c, "a", 0, &x, err, sizeof(err)), 0);
    ck_assert_int_eq(x, 42);
    ck_assert_int_eq(ev_conf_get_int(c, "missing", 7, &x, err, sizeof(err)), 0);
    ck_assert_int_eq(x, 7);
    ck_assert_int_eq(ev_conf_get_int(c, "b", 0, &x, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_str_eq(err, "config b: expected an integer, got '4x'");
    ev_conf_destroy(c);
}
END_TEST

START_TEST(bad_log_config_is_clear)
{
    char err[256];
    ev_log *log;
    ev_conf *c = ev_conf_new();
    ck_assert_int_eq(ev_log_open(&log, c, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert(strstr(err, "no log configured") != NULL);
    ev_conf_set(c, "log", "postgres:db");
    ck_assert_int_eq(ev_log_open(&log, c, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert(strstr(err, "unknown scheme") != NULL);
    ev_conf_set(c, "log", "kafka:127.0.0.1:1");
    ev_conf_set(c, "kafka.linger.ms", "soon");
    ck_assert_int_eq(ev_log_open(&log, c, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "kafka.linger.ms=soon") != NULL, "%s", err);
    ev_conf_set(c, "log", "sqlite:/tmp/x.db");
    ev_conf_set(c, "sqlite.synchronous", "SOMETIMES");
    ck_assert_int_eq(ev_log_open(&log, c, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "sqlite.synchronous") != NULL, "%s", err);
    ev_conf_set(c, "sqlite.synchronous", "FULL");
    ev_conf_set(c, "log", "sqlite:/nonexistent/dir/x.db");
    ck_assert_int_eq(ev_log_open(&log, c, err, sizeof(err)), EV_ERR_IO);
    ck_assert_msg(strstr(err, "/nonexistent/dir/x.db") != NULL, "%s", err);
    ev_conf_destroy(c);
}
END_TEST

START_TEST(unknown_key_rejected_with_its_origin)
{
    char err[256], want[512];
    char *path = write_file("log = sqlite:x\nsync.min_grup = 2\n");
    ev_conf *c = ev_conf_new();
    ck_assert_int_eq(ev_conf_set_pair(c, "scaling.mode=x", err, sizeof(err)), 0);
    ck_assert_int_eq(ev_conf_check_keys(c, ev_conf_known_keys, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_str_eq(err,
                     "unknown configuration key \"scaling.mode\" (from -X; see docs/config.md)");
    ev_conf_destroy(c);

    c = ev_conf_new();
    ck_assert_int_eq(ev_conf_load_file(c, path, err, sizeof(err)), 0);
    ck_assert_int_eq(ev_conf_check_keys(c, ev_conf_known_keys, err, sizeof(err)), EV_ERR_INVALID);
    snprintf(want, sizeof(want),
             "unknown configuration key \"sync.min_grup\" (from %s:2; see docs/config.md)", path);
    ck_assert_str_eq(err, want);
    ev_conf_destroy(c);

    c = ev_conf_new();
    setenv("MSRS_X", "log=sqlite:y;agent.nope=1", 1);
    ck_assert_int_eq(ev_conf_apply_env(c, err, sizeof(err)), 0);
    unsetenv("MSRS_X");
    ck_assert_int_eq(ev_conf_check_keys(c, ev_conf_known_keys, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_str_eq(
        err,
        "unknown configuration key \"agent.nope\" (from environment MSRS_X; see docs/config.md)");
    ev_conf_destroy(c);

    c = ev_conf_new();
    ev_conf_set(c, "kafka", "x"); /* "kafka.*" needs something after the dot */
    ck_assert_int_eq(ev_conf_check_keys(c, ev_conf_known_keys, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert_str_eq(err, "unknown configuration key \"kafka\" (see docs/config.md)");
    ev_conf_destroy(c);
    remove(path);
    free(path);
}
END_TEST

START_TEST(known_keys_and_prefixes_accepted)
{
    char err[256] = "";
    static const char *const known[] = {"a.b", "p.*", NULL};
    ev_conf *c = ev_conf_new();
    ck_assert_int_eq(ev_conf_check_keys(c, ev_conf_known_keys, err, sizeof(err)), 0);
    ck_assert_int_eq(ev_conf_set_pair(c, "sync.min_group=2", err, sizeof(err)), 0);
    ck_assert_int_eq(ev_conf_set_pair(c, "kafka.anything=1", err, sizeof(err)), 0);
    ck_assert_int_eq(ev_conf_set_pair(c, "kafka.security.protocol=ssl", err, sizeof(err)), 0);
    ev_conf_set(c, "log", "sqlite:x");
    ck_assert_int_eq(ev_conf_check_keys(c, ev_conf_known_keys, err, sizeof(err)), 0);
    ev_conf_destroy(c);

    c = ev_conf_new();
    ev_conf_set(c, "a.b", "1");
    ev_conf_set(c, "p.q.r", "1");
    ck_assert_int_eq(ev_conf_check_keys(c, known, err, sizeof(err)), 0);
    ev_conf_set(c, "a.bc", "1"); /* exact keys are exact */
    ck_assert_int_eq(ev_conf_check_keys(c, known, err, sizeof(err)), EV_ERR_INVALID);
    ck_assert(strstr(err, "\"a.bc\"") != NULL);
    ev_conf_destroy(c);
}
END_TEST

/* docs/config.md documents exactly ev_conf_known_keys: every key has a
 * row "| `KEY` |", and every such row with a lower-case key is known. */
START_TEST(docs_config_md_lists_every_known_key)
{
    const char *src = getenv("MSRS_SOURCE_DIR");
    char path[1024], line[2048];
    size_t rows = 0;
    if (!src) {
        fprintf(stderr, "MSRS_SOURCE_DIR unset: docs/config.md not compared\n");
        return;
    }
    snprintf(path, sizeof(path), "%s/docs/config.md", src);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: cannot read", path);
    char *doc = calloc(1, 1 << 20);
    size_t len = fread(doc, 1, (1 << 20) - 1, f);
    doc[len] = '\0';
    rewind(f);
    for (size_t i = 0; ev_conf_known_keys[i]; i++) {
        char row[256];
        snprintf(row, sizeof(row), "\n| `%s` |", ev_conf_known_keys[i]);
        ck_assert_msg(strstr(doc, row) != NULL, "docs/config.md has no row for %s",
                      ev_conf_known_keys[i]);
    }
    while (fgets(line, sizeof(line), f)) {
        char key[256];
        if (strncmp(line, "| `", 3) != 0 || line[3] < 'a' || line[3] > 'z' ||
            sscanf(line + 3, "%255[^`]", key) != 1)
            continue;
        size_t i = 0;
        while (ev_conf_known_keys[i] && strcmp(ev_conf_known_keys[i], key) != 0)
            i++;
        ck_assert_msg(ev_conf_known_keys[i] != NULL,
                      "docs/config.md documents %s, which is not in ev_conf_known_keys", key);
        rows++;
    }
    ck_assert_uint_gt(rows, 0);
    fclose(f);
    free(doc);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conf");
    TCase *tc = tcase_create("conf");
    tcase_add_test(tc, file_and_precedence);
    tcase_add_test(tc, file_errors_name_file_and_line);
    tcase_add_test(tc, typed_reads);
    tcase_add_test(tc, bad_log_config_is_clear);
    tcase_add_test(tc, unknown_key_rejected_with_its_origin);
    tcase_add_test(tc, known_keys_and_prefixes_accepted);
    tcase_add_test(tc, docs_config_md_lists_every_known_key);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
