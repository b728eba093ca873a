/* Tokens and signed discovery answers (common/security.c, discovery.c):
 * tokens round-trip through parse and check for ids holding ':' and '.',
 * a token of another key, a changed character, another generation, a
 * revoked generation and malformed forms are refused; the text a discovery
 * answer's MAC covers cannot be made the same for two different answers
 * (the '|'-joined text of the first version could). */
#include "discovery.h"
#include "security.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static cli_auth auth;

static void setup(void)
{
    memset(&auth, 0, sizeof(auth));
    auth.enabled = 1;
    for (int i = 0; i < CLI_AUTH_KEY_BYTES; i++)
        auth.key[i] = (unsigned char)(i * 7 + 1);
    auth.revoked = json_object();
}

static void teardown(void)
{
    cli_auth_free(&auth);
}

static void make(const char *kind, const char *id, const char *role, int64_t gen, char *out)
{
    cli_principal p = {.gen = gen};
    snprintf(p.kind, sizeof(p.kind), "%s", kind);
    snprintf(p.id, sizeof(p.id), "%s", id);
    snprintf(p.role, sizeof(p.role), "%s", role);
    ck_assert_int_eq(cli_auth_token(auth.key, &p, out, CLI_AUTH_TOKEN_MAX), 0);
}

START_TEST(tokens_round_trip)
{
    char t[CLI_AUTH_TOKEN_MAX];
    const char *why;
    cli_principal p;
    make("node", "lab.node:7", "", 3, t);
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), 0);
    ck_assert_str_eq(p.kind, "node");
    ck_assert_str_eq(p.id, "lab.node:7");
    ck_assert_int_eq(p.gen, 3);
    make("operator", "ann.b:x", "operator", 1, t);
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), 0);
    ck_assert_str_eq(p.id, "ann.b:x");
    ck_assert_str_eq(p.role, "operator");
    ck_assert_int_eq(cli_auth_role_rank(p.role), 2);
}
END_TEST

START_TEST(forged_tokens_refused)
{
    char t[CLI_AUTH_TOKEN_MAX], other[CLI_AUTH_TOKEN_MAX];
    const char *why;
    cli_principal p;
    make("node", "n1", "", 1, t);
    /* one character of the MAC changed */
    snprintf(other, sizeof(other), "%s", t);
    other[strlen(other) - 1] = other[strlen(other) - 1] == '0' ? '1' : '0';
    ck_assert_int_eq(cli_auth_token_check(&auth, other, &p, &why), -1);
    ck_assert_str_eq(why, "the token was not issued with this lab key");
    /* the MAC of n1 under another id or generation */
    const char *mac = strrchr(t, '.');
    snprintf(other, sizeof(other), "node:n2:1%s", mac);
    ck_assert_int_eq(cli_auth_token_check(&auth, other, &p, &why), -1);
    snprintf(other, sizeof(other), "node:n1:2%s", mac);
    ck_assert_int_eq(cli_auth_token_check(&auth, other, &p, &why), -1);
    /* another key */
    auth.key[0] ^= 1;
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), -1);
    auth.key[0] ^= 1;
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), 0);
}
END_TEST

START_TEST(malformed_tokens_refused)
{
    char t[CLI_AUTH_TOKEN_MAX], bad[CLI_AUTH_TOKEN_MAX + 8];
    cli_principal p;
    make("node", "n1", "", 1, t);
    const char *mac = strrchr(t, '.') + 1;
    const char *const forms[] = {
        "",        "node",     "node:n1",         "node:n1:1",          "node:n1:1..",
        "x:n1:1.", "node::1.", "operator:ann:1.", "operator:ann:god:1."};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        snprintf(bad, sizeof(bad), "%s%s", forms[i], strchr(forms[i], '.') ? mac : "");
        ck_assert_msg(cli_auth_token_parse(bad, &p) == -1, "%s parsed", bad);
        ck_assert_str_eq(p.kind, "");
    }
    const char *const gens[] = {"0", "-1", "+1", "01", "1e3", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(gens) / sizeof(gens[0]); i++) {
        snprintf(bad, sizeof(bad), "node:n1:%s.%s", gens[i], mac);
        ck_assert_msg(cli_auth_token_parse(bad, &p) == -1, "generation %s parsed", gens[i]);
    }
    snprintf(bad, sizeof(bad), "node:n1:1.%.63s", mac); /* a digit short */
    ck_assert_int_eq(cli_auth_token_parse(bad, &p), -1);
    ck_assert_int_eq(cli_auth_token_parse(NULL, &p), -1);
}
END_TEST

START_TEST(revoked_generation_refused)
{
    char path[] = "/tmp/msrs-test-revoked-XXXXXX", t[CLI_AUTH_TOKEN_MAX];
    const char *why;
    cli_principal p;
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "node n1 2\ndevice n1 9\n", 22), 22);
    close(fd);
    snprintf(auth.revoked_path, sizeof(auth.revoked_path), "%s", path);
    make("node", "n1", "", 2, t);
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), -1);
    ck_assert_str_eq(why, "token revoked");
    make("node", "n1", "", 3, t);
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), 0);
    make("operator", "n1", "admin", 1, t); /* a revoked node is not a revoked operator */
    ck_assert_int_eq(cli_auth_token_check(&auth, t, &p, &why), 0);
    unlink(path);
}
END_TEST

static json_t *answer(const char *nonce, const char *node, const char *url)
{
    return json_pack("{s:s, s:i, s:s, s:s, s:s, s:b, s:s}", "msrs", "supervisor", "v", 1, "prefix",
                     "msrs.", "node_id", node, "url", url, "leading", 1, "nonce", nonce);
}

START_TEST(discovery_text_is_unambiguous)
{
    char a[DSC_MAX], b[DSC_MAX], mac[CLI_AUTH_HEX];
    const char *nonce = "0123456789abcdef0123456789abcdef";
    /* the attack on a '|'-joined text: fields moved across the separators */
    json_t *x = answer(nonce, "x", "1.2.3.4:9/|msrs.|sup|https://0.0.0.0:8610");
    json_t *y = answer(nonce, "sup", "https://0.0.0.0:8610");
    ck_assert_int_eq(dsc_signed_text(x, a, sizeof(a)), 0);
    ck_assert_int_eq(dsc_signed_text(y, b, sizeof(b)), 0);
    ck_assert_str_ne(a, b);
    cli_auth_mac(auth.key, "discovery", b, mac);
    ck_assert_int_eq(cli_auth_mac_check(auth.key, "discovery", b, mac), 0);
    ck_assert_int_eq(cli_auth_mac_check(auth.key, "discovery", a, mac), -1);
    json_decref(x);
    json_decref(y);
    /* only the 32 hex digits a query carries are signed */
    x = answer("0123456789abcdef0123456789abcdef|msrs.", "sup", "https://h:1");
    ck_assert_int_eq(dsc_signed_text(x, a, sizeof(a)), -1);
    json_decref(x);
    x = answer(nonce, "sup", "https://h:1");
    json_object_del(x, "leading");
    ck_assert_int_eq(dsc_signed_text(x, a, sizeof(a)), -1);
    json_decref(x);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("security");
    TCase *tc = tcase_create("security");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, tokens_round_trip);
    tcase_add_test(tc, forged_tokens_refused);
    tcase_add_test(tc, malformed_tokens_refused);
    tcase_add_test(tc, revoked_generation_refused);
    tcase_add_test(tc, discovery_text_is_unambiguous);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
