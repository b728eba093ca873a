/* The flat JSON reader (ev_jflat): what it keeps of an object, what it
 * refuses, and that it accepts exactly the objects jansson accepts (the
 * agent answers a message the same whichever of the two read it). */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static ev_jflat j;
static char err[256];

static int read_str(const char *text)
{
    return ev_jflat_read(&j, text, strlen(text), err, sizeof(err));
}

START_TEST(binary_samples_header)
{
    ck_assert_int_eq(read_str("{\"type\":\"samples\",\"stream_id\":\"gsr\",\"seq\":1234567890123,"
                              "\"n\":13,\"channels\":4,\"session_id\":\"\"}"),
                     0);
    int64_t x = 0;
    ck_assert_str_eq(ev_jflat_string(&j, -1, "type"), "samples");
    ck_assert_str_eq(ev_jflat_string(&j, -1, "stream_id"), "gsr");
    ck_assert_str_eq(ev_jflat_string(&j, -1, "session_id"), "");
    ck_assert(ev_jflat_integer(&j, -1, "seq", &x) && x == 1234567890123LL);
    ck_assert(ev_jflat_integer(&j, -1, "channels", &x) && x == 4);
    ck_assert(!ev_jflat_integer(&j, -1, "type", &x));
    ck_assert_ptr_null(ev_jflat_string(&j, -1, "n"));
    ck_assert_ptr_null(ev_jflat_get(&j, -1, "absent"));
    ck_assert_int_eq(j.count, 6);
}
END_TEST

START_TEST(every_kind_and_one_level_down)
{
    ck_assert_int_eq(
        read_str(" {\"type\" : \"time_resp\", \"payload\": {\"t1\": -9223372036854775807, "
                 "\"t2\": 2.5, \"t3\": true, \"deep\": {\"x\": 1}, \"list\": [1, {\"y\": 2}]},"
                 "\"f\": false, \"z\": null, \"esc\": \"a\\u0041\\n\\u00e9\"}\n"),
        0);
    int p = ev_jflat_object(&j, -1, "payload");
    ck_assert_int_ge(p, 0);
    int64_t x = 0;
    ck_assert(ev_jflat_integer(&j, p, "t1", &x) && x == -INT64_MAX);
    ck_assert_int_eq(ev_jflat_get(&j, p, "t2")->kind, EV_JREAL);
    ck_assert(ev_jflat_get(&j, p, "t2")->real == 2.5);
    ck_assert_int_eq(ev_jflat_get(&j, p, "t3")->kind, EV_JTRUE);
    ck_assert_int_eq(ev_jflat_get(&j, p, "deep")->kind, EV_JOBJECT);
    ck_assert_int_eq(ev_jflat_get(&j, p, "list")->kind, EV_JARRAY);
    ck_assert_int_eq(ev_jflat_get(&j, -1, "f")->kind, EV_JFALSE);
    ck_assert_int_eq(ev_jflat_get(&j, -1, "z")->kind, EV_JNULL);
    ck_assert_str_eq(ev_jflat_string(&j, -1, "esc"), "aA\n\xc3\xa9");
    /* two levels down and inside arrays: checked, not kept */
    ck_assert_int_eq(ev_jflat_object(&j, ev_jflat_object(&j, p, "deep"), "x"), -2);
    ck_assert_ptr_null(ev_jflat_get(&j, ev_jflat_object(&j, p, "deep"), "x"));
    for (int i = 0; i < j.count; i++)
        ck_assert(strcmp(j.m[i].key, "x") != 0 && strcmp(j.m[i].key, "y") != 0);
    /* a lookup under a member that is not an object finds nothing */
    ck_assert_int_eq(ev_jflat_object(&j, -1, "f"), -2);
    ck_assert_ptr_null(ev_jflat_get(&j, -2, "t1"));
}
END_TEST

START_TEST(duplicates_counted_last_found)
{
    ck_assert_int_eq(read_str("{\"a\":1,\"b\":{\"a\":5},\"a\":2}"), 0);
    int64_t x = 0;
    ck_assert_int_eq(j.duplicates, 1); /* b's a is another object's */
    ck_assert(ev_jflat_integer(&j, -1, "a", &x) && x == 2);
    ck_assert(ev_jflat_integer(&j, ev_jflat_object(&j, -1, "b"), "a", &x) && x == 5);
    ck_assert_int_eq(read_str("{\"a\":1}"), 0);
    ck_assert_int_eq(j.duplicates, 0); /* a new read starts afresh */
}
END_TEST

START_TEST(long_strings_kept_as_null)
{
    char text[4000];
    char big[600];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    snprintf(text, sizeof(text), "{\"s\":\"%s\",\"%s\":1,\"t\":\"ok\"}", big, big);
    ck_assert_int_eq(read_str(text), 0);
    const ev_jmember *s = ev_jflat_get(&j, -1, "s");
    ck_assert_int_eq(s->kind, EV_JSTRING);
    ck_assert_ptr_null(s->str);
    ck_assert_uint_eq(s->len, sizeof(big) - 1);
    ck_assert_ptr_null(j.m[1].key); /* matches no lookup */
    ck_assert_str_eq(ev_jflat_string(&j, -1, "t"), "ok");
    /* many short strings past the copy space: the later ones NULL */
    size_t at = (size_t)snprintf(text, sizeof(text), "{");
    for (int i = 0; i < 30; i++)
        at += (size_t)snprintf(text + at, sizeof(text) - at, "%s\"k%d\":\"%0100d\"", i ? "," : "",
                               i, i);
    snprintf(text + at, sizeof(text) - at, "}");
    ck_assert_int_eq(read_str(text), 0);
    ck_assert_ptr_nonnull(ev_jflat_string(&j, -1, "k0"));
    ck_assert_ptr_null(ev_jflat_string(&j, -1, "k29")); /* its key fits, its value not */
    ck_assert_int_eq(ev_jflat_get(&j, -1, "k29")->kind, EV_JSTRING);
    ck_assert_uint_le(j.text_used, EV_JFLAT_TEXT);
}
END_TEST

START_TEST(refusals_name_the_byte)
{
    static const char *const bad[] = {
        "",
        "   ",
        "[1,2]",
        "\"s\"",
        "7",
        "{",
        "{\"a\":}",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "{\"a\":1}x",
        "{\"a\":1}{}",
        "{a:1}",
        "{\"a\":01}",
        "{\"a\":\"\x01\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":99999999999999999999}",
        "{\"a\":\"x\\u0000y\"}",
        "{\"a\\u0000\":1}",
        "{\"a\":1e999}",
        "{\"a\":tru}",
        "{/*c*/\"a\":1}",
        "{\"a\":'x'}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ck_assert_msg(read_str(bad[i]) == EV_ERR_INVALID, "accepted: %s", bad[i]);
        ck_assert_msg(strncmp(err, "JSON: ", 6) == 0, "%s: %s", bad[i], err);
        ck_assert_int_eq(j.count, 0);
    }
    ck_assert_int_eq(read_str("{\"a\":1}x"), EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "at byte") != NULL, "%s", err);
    /* the one integer jansson reads and yajl does not: -2^63 (docs/protocol.md) */
    ck_assert_int_eq(read_str("{\"a\":-9223372036854775808}"), EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "integer overflow") != NULL, "%s", err);
    ck_assert_int_eq(read_str("[]"), EV_ERR_INVALID);
    ck_assert_str_eq(err, "JSON: expected an object");
}
END_TEST

START_TEST(too_many_members)
{
    char text[2048];
    size_t at = (size_t)snprintf(text, sizeof(text), "{");
    for (int i = 0; i <= EV_JFLAT_MAX; i++)
        at += (size_t)snprintf(text + at, sizeof(text) - at, "%s\"k%d\":%d", i ? "," : "", i, i);
    snprintf(text + at, sizeof(text) - at, "}");
    ck_assert_int_eq(read_str(text), EV_ERR_INVALID);
    ck_assert_msg(strstr(err, "more than 32 members") != NULL, "%s", err);
    /* members of deeper objects and arrays do not count */
    ck_assert_int_eq(read_str("{\"a\":{\"b\":{\"1\":1,\"2\":2,\"3\":3}},\"l\":[1,2,3,4,5,6,7,8,9,"
                              "10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,"
                              "31,32,33,34]}"),
                     0);
    ck_assert_int_eq(j.count, 3);
}
END_TEST

/* Whether jansson reads text as an object (json_loadb, flags 0: what the
 * agent read binary headers with before ev_jflat). */
static int jansson_object(const char *text, size_t len)
{
    json_t *v = json_loadb(text, len, 0, NULL);
    int ok = json_is_object(v);
    json_decref(v);
    return ok;
}

/* Byte mutations of real messages: ev_jflat accepts exactly what jansson
 * accepts, and keeps the same top-level strings and integers. */
START_TEST(accepts_what_jansson_accepts)
{
    static const char *const seeds[] = {
        "{\"type\":\"samples\",\"stream_id\":\"gsr\",\"seq\":12,\"n\":13,\"channels\":4,"
        "\"session_id\":\"s-1\"}",
        "{\"stream_id\":\"rgb\",\"codec\":\"h264\",\"pts\":-5,\"keyframe\":true,\"seq\":0,"
        "\"ts\":1764800000123456789,\"width\":320,\"height\":240,\"session_id\":\"\"}",
        "{\"type\":\"time_resp\",\"device_id\":\"p-1\",\"payload\":{\"t1\":1,\"t2\":2,\"t3\":3}}",
        "{\"a\":[1,2.5e3,{\"b\":null}],\"c\":\"\\u00e9\\\"\",\"d\":-0,\"e\":false}",
    };
    unsigned long long seed = 42;
    int both = 0, neither = 0;
    for (int round = 0; round < 40000; round++) {
        const char *src = seeds[round % 4];
        char text[256];
        size_t len = strlen(src);
        memcpy(text, src, len);
        int edits = 1 + (int)(seed % 3);
        for (int e = 0; e < edits; e++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(seed >> 33) % len;
            static const char alphabet[] = "{}[]:,\"\\ 0123456789-+.eEtrufalsn\x01\x80\xc3\xa9uU";
            switch ((seed >> 20) % 3) {
            case 0: /* replace */ text[at] = alphabet[(seed >> 40) % (sizeof(alphabet) - 1)]; break;
            case 1: /* delete */
                memmove(text + at, text + at + 1, len - at - 1);
                len--;
                break;
            default: /* insert */
                if (len + 1 < sizeof(text)) {
                    memmove(text + at + 1, text + at, len - at);
                    text[at] = alphabet[(seed >> 40) % (sizeof(alphabet) - 1)];
                    len++;
                }
            }
        }
        int ours = ev_jflat_read(&j, text, len, err, sizeof(err)) == 0;
        int theirs = jansson_object(text, len);
        ck_assert_msg(ours == theirs, "ev_jflat %s, jansson %s: %.*s (%s)",
                      ours ? "accepts" : "refuses", theirs ? "accepts" : "refuses", (int)len, text,
                      ours ? "" : err);
        if (ours) {
            both++;
            json_t *v = json_loadb(text, len, 0, NULL);
            const char *key;
            json_t *x;
            json_object_foreach(v, key, x)
            {
                int64_t got;
                if (json_is_string(x) && strlen(key) <= EV_JFLAT_STR_MAX)
                    ck_assert_str_eq(ev_jflat_string(&j, -1, key), json_string_value(x));
                if (json_is_integer(x))
                    ck_assert(ev_jflat_integer(&j, -1, key, &got) && got == json_integer_value(x));
            }
            json_decref(v);
        } else {
            neither++;
        }
    }
    /* both outcomes were tried many times */
    ck_assert_int_gt(both, 2000);
    ck_assert_int_gt(neither, 2000);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jflat");
    TCase *tc = tcase_create("jflat");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, binary_samples_header);
    tcase_add_test(tc, every_kind_and_one_level_down);
    tcase_add_test(tc, duplicates_counted_last_found);
    tcase_add_test(tc, long_strings_kept_as_null);
    tcase_add_test(tc, refusals_name_the_byte);
    tcase_add_test(tc, too_many_members);
    tcase_add_test(tc, accepts_what_jansson_accepts);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
