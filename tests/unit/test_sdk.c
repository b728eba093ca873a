/* The device SDK (sdk/device.c) without a network: the proof it makes is
 * the one the agent checks (common/security.c), over the nonce and for
 * the id and generation it was made for only; what md_client_new and
 * md_device_add refuse, with a message naming what; what a device that is
 * not registered is told when it sends. */
#include "msrs_device.h"
#include "security.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

static cli_auth auth;

static void setup(void)
{
    memset(&auth, 0, sizeof(auth));
    auth.enabled = 1;
    for (int i = 0; i < CLI_AUTH_KEY_BYTES; i++)
        auth.key[i] = (unsigned char)(i * 11 + 3);
    auth.revoked = json_object();
}

static void teardown(void)
{
    cli_auth_free(&auth);
}

START_TEST(proof_is_what_the_agent_checks)
{
    char cred[80], proof[65];
    const char *why = NULL;
    cli_auth_device_credential(auth.key, "cam-1", 2, cred, sizeof(cred));
    ck_assert_int_eq(md_auth_proof(cred, "9f86d081884c7d65", "cam-1", proof), MD_OK);
    ck_assert_uint_eq(strlen(proof), 64);
    ck_assert_int_eq(cli_auth_device_check(&auth, "cam-1", 2, "9f86d081884c7d65", proof, &why), 0);
    /* another nonce, id or generation: refused */
    ck_assert_int_ne(cli_auth_device_check(&auth, "cam-1", 2, "9f86d081884c7d66", proof, &why), 0);
    ck_assert_int_ne(cli_auth_device_check(&auth, "cam-2", 2, "9f86d081884c7d65", proof, &why), 0);
    ck_assert_int_ne(cli_auth_device_check(&auth, "cam-1", 1, "9f86d081884c7d65", proof, &why), 0);
    /* not a credential */
    ck_assert_int_eq(md_auth_proof("2.abc", "n", "cam-1", proof), MD_ERR_INVALID);
    ck_assert_int_eq(md_auth_proof("nodot", "n", "cam-1", proof), MD_ERR_INVALID);
    ck_assert_int_eq(md_auth_proof(NULL, "n", "cam-1", proof), MD_ERR_INVALID);
    char zs[80];
    snprintf(zs, sizeof(zs), "1.%064d", 0);
    zs[10] = 'g'; /* not hex */
    ck_assert_int_eq(md_auth_proof(zs, "n", "cam-1", proof), MD_ERR_INVALID);
}
END_TEST

START_TEST(bad_configuration_refused)
{
    char err[256] = "";
    ck_assert_ptr_null(md_client_new(&(md_client_config){.url = "http://h:1"}, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "url 'http://h:1'"));
    ck_assert_ptr_null(
        md_client_new(&(md_client_config){.url = "ws://h:99999/x"}, err, sizeof(err)));
    md_client *c =
        md_client_new(&(md_client_config){.url = "ws://127.0.0.1:9/v1/devices"}, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    md_stream ok = {"gsr", "gsr", 128, 1, "float64"}, bad = {"g sr", "gsr", 128, 1, "float64"};
    md_stream nine[9];
    for (int i = 0; i < 9; i++)
        nine[i] = ok;
    md_device_config dc = {.device_id = "bad id", .streams = &ok, .stream_count = 1};
    ck_assert_ptr_null(md_device_add(c, &dc, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "device_id 'bad id'"));
    dc.device_id = "d1";
    dc.stream_count = 0;
    ck_assert_ptr_null(md_device_add(c, &dc, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "1-8 streams"));
    dc.streams = nine;
    dc.stream_count = 9;
    ck_assert_ptr_null(md_device_add(c, &dc, err, sizeof(err)));
    dc.streams = &bad;
    dc.stream_count = 1;
    ck_assert_ptr_null(md_device_add(c, &dc, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "streams[0].stream_id 'g sr'"));
    dc.streams = &ok;
    dc.credential = "1.nothex";
    ck_assert_ptr_null(md_device_add(c, &dc, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "credential"));
    md_client_destroy(c);
}
END_TEST

START_TEST(not_registered_is_said)
{
    char err[256] = "", session[MD_ID_MAX];
    md_client *c =
        md_client_new(&(md_client_config){.url = "ws://127.0.0.1:9/v1/devices"}, err, sizeof(err));
    md_stream s = {"video", "rgb_video", 30, 3, "h264"};
    md_device_config dc = {.device_id = "d1", .streams = &s, .stream_count = 1};
    md_device *d = md_device_add(c, &dc, err, sizeof(err));
    ck_assert_ptr_nonnull(d);
    md_media m = {.stream_id = "video", .codec = "h264", .keyframe = 1, .width = 64, .height = 48};
    unsigned char pkt[4] = {0, 0, 0, 1};
    ck_assert_int_eq(md_device_send_media(d, &m, pkt, sizeof(pkt)), MD_ERR_NOT_REGISTERED);
    int64_t t[2] = {1, 2};
    double v[2] = {0.5, 0.6};
    ck_assert_int_eq(md_device_send_samples(d, "video", 0, t, v, 2, 1), MD_ERR_NOT_REGISTERED);
    ck_assert_int_eq(md_device_send_status(d, 0.5, 0), MD_ERR_NOT_REGISTERED);
    /* invalid before anything else */
    m.codec = "h\"264";
    ck_assert_int_eq(md_device_send_media(d, &m, pkt, sizeof(pkt)), MD_ERR_INVALID);
    ck_assert_int_eq(md_device_send_samples(d, "video", -1, t, v, 2, 1), MD_ERR_INVALID);
    ck_assert_int_eq(md_device_send_samples(d, "video", 0, t, v, 0, 1), MD_ERR_INVALID);
    ck_assert_int_eq(md_device_registered(d), 0);
    ck_assert_int_eq(md_device_session_at(d, 5, session, sizeof(session)), 0);
    ck_assert_str_eq(session, "");
    ck_assert_int_eq(md_device_resume_seq(d, "video"), -1);
    ck_assert_uint_eq(md_device_queued_bytes(d), 0);
    md_device_remove(d);
    md_client_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sdk");
    TCase *tc = tcase_create("sdk");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, proof_is_what_the_agent_checks);
    tcase_add_test(tc, bad_configuration_refused);
    tcase_add_test(tc, not_registered_is_said);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
