/* security.c — TLS settings for libwebsockets and the lab key's
 * credentials (security.h). */
#include "security.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((format(printf, 3, 4))) static int fail(char *errstr, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A readable file named by key into out; "" when the key is unset. */
static int conf_file(const ev_conf *conf, const char *key, char *out, size_t size, char *errstr,
                     size_t n)
{
    const char *v = ev_conf_get(conf, key, "");
    *out = '\0';
    if (!*v)
        return 0;
    if (strlen(v) >= size)
        return fail(errstr, n, "config %s (%s): path too long", key, v);
    if (access(v, R_OK) != 0) {
        snprintf(errstr, n, "config %s: %s: %s", key, v, strerror(errno));
        return -1;
    }
    snprintf(out, size, "%s", v);
    return 0;
}

int cli_tls_load(cli_tls *t, const ev_conf *conf, const char *prog, int server, char *errstr,
                 size_t errstr_size)
{
    memset(t, 0, sizeof(*t));
    if (ev_conf_get_bool(conf, "tls.plain", 0, &t->plain, errstr, errstr_size) ||
        conf_file(conf, "tls.cert", t->cert, sizeof(t->cert), errstr, errstr_size) ||
        conf_file(conf, "tls.key", t->key, sizeof(t->key), errstr, errstr_size) ||
        conf_file(conf, "tls.ca", t->ca, sizeof(t->ca), errstr, errstr_size))
        return -1;
    if (t->plain) {
        fprintf(stderr,
                "%s: WARNING: tls.plain = true: %s WITHOUT ENCRYPTION; anyone on the network "
                "can read and change what is sent\n",
                prog, server ? "listening and connecting" : "connecting");
        return 0;
    }
    if (server && (!*t->cert || !*t->key))
        return fail(errstr, errstr_size,
                    "config %s: expected the path of a PEM %s (TLS is required; tls.plain = true "
                    "listens unencrypted)",
                    *t->cert ? "tls.key" : "tls.cert", *t->cert ? "private key" : "certificate");
    return 0;
}

void cli_tls_apply(const cli_tls *t, struct lws_context_creation_info *info)
{
    if (t->plain)
        return;
    info->options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    /* HTTP/1.1 only: libwebsockets 4.1.6's HTTP/2 server aborts (an assert
     * in lws_read_h1) when a stream the callback refused still sends DATA,
     * e.g. curl's PUT with a body, negotiated as h2 by ALPN. Our clients
     * make one request per connection and the feed is WebSocket over 1.1:
     * HTTP/2 would buy nothing. */
    info->alpn = "http/1.1";
    if (*t->cert) {
        info->ssl_cert_filepath = t->cert;
        info->ssl_private_key_filepath = t->key;
    }
    if (*t->ca)
        info->client_ssl_ca_filepath = t->ca;
}

int cli_tls_client_flags(const cli_tls *t)
{
    return t->plain ? 0 : LCCSCF_USE_SSL;
}

const char *cli_tls_ws_scheme(const cli_tls *t)
{
    return t->plain ? "ws" : "wss";
}

/* ----------------------------------------------------------- credentials */

static int nibble(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* n bytes from 2n hex digits; -1 at the first that is not one. */
static int unhex(const char *s, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = nibble(s[2 * i]), lo = hi < 0 ? -1 : nibble(s[2 * i + 1]);
        if (lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static void to_hex(const unsigned char *b, size_t n, char *out /* 2n + 1 */)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int cli_auth_read_key(const char *path, unsigned char key[CLI_AUTH_KEY_BYTES], char *errstr,
                      size_t errstr_size)
{
    char text[2 * CLI_AUTH_KEY_BYTES + 8] = "";
    struct stat st;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "config auth.key_file: %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0007)) {
        fclose(f);
        snprintf(errstr, errstr_size,
                 "config auth.key_file: %s: readable by others (mode %04o): expected 0600 or "
                 "0640 (chmod o-rwx)",
                 path, (unsigned)(st.st_mode & 07777));
        return -1;
    }
    size_t got = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    while (got && (text[got - 1] == '\n' || text[got - 1] == '\r' || text[got - 1] == ' '))
        text[--got] = '\0';
    if (got != 2 * CLI_AUTH_KEY_BYTES || unhex(text, key, CLI_AUTH_KEY_BYTES)) {
        snprintf(errstr, errstr_size,
                 "config auth.key_file: %s: expected %d hex digits (openssl rand -hex %d)", path,
                 2 * CLI_AUTH_KEY_BYTES, CLI_AUTH_KEY_BYTES);
        return -1;
    }
    return 0;
}

/* Re-reads the revocation file when its modification time changed. */
static void revoked_refresh(cli_auth *a)
{
    struct stat st;
    if (!*a->revoked_path)
        return;
    if (stat(a->revoked_path, &st) != 0) {
        json_object_clear(a->revoked); /* gone: nothing revoked */
        memset(&a->revoked_mtime, 0, sizeof(a->revoked_mtime));
        return;
    }
    if (st.st_mtim.tv_sec == a->revoked_mtime.tv_sec &&
        st.st_mtim.tv_nsec == a->revoked_mtime.tv_nsec)
        return;
    a->revoked_mtime = st.st_mtim;
    json_object_clear(a->revoked);
    FILE *f = fopen(a->revoked_path, "r");
    char line[256], kind[16], id[EV_ID_MAX + 1];
    long long gen;
    while (f && fgets(line, sizeof(line), f)) {
        char who[16 + EV_ID_MAX + 2];
        if (sscanf(line, "%15s %64s %lld", kind, id, &gen) != 3 ||
            (strcmp(kind, "device") != 0 && strcmp(kind, "node") != 0 &&
             strcmp(kind, "operator") != 0))
            continue;
        snprintf(who, sizeof(who), "%s:%s", kind, id);
        if (gen > json_integer_value(json_object_get(a->revoked, who)))
            json_object_set_new(a->revoked, who, json_integer(gen));
    }
    if (f)
        fclose(f);
}

int cli_auth_load(cli_auth *a, const ev_conf *conf, const char *prog, char *errstr,
                  size_t errstr_size)
{
    memset(a, 0, sizeof(*a));
    const char *path = ev_conf_get(conf, "auth.key_file", "");
    int required = 1;
    a->revoked = json_object();
    if (ev_conf_get_bool(conf, "auth.required", 1, &required, errstr, errstr_size))
        return -1;
    if (!*path) {
        if (required)
            return fail(errstr, errstr_size,
                        "config auth.key_file: expected the lab key's path (devices and nodes "
                        "must prove a credential; auth.required = false lets anyone in)");
        fprintf(stderr,
                "%s: WARNING: auth.required = false: ANY DEVICE OR NODE CAN JOIN UNDER ANY ID, "
                "without a credential\n",
                prog);
        return 0;
    }
    if (cli_auth_read_key(path, a->key, errstr, errstr_size))
        return -1;
    snprintf(a->revoked_path, sizeof(a->revoked_path), "%s",
             ev_conf_get(conf, "auth.revoked_file", ""));
    a->enabled = 1;
    revoked_refresh(a);
    return 0;
}

void cli_auth_free(cli_auth *a)
{
    json_decref(a->revoked);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    a->revoked = NULL;
}

static void hmac(const unsigned char *key, size_t key_len, const char *msg, int msg_len,
                 unsigned char mac[32])
{
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, (size_t)msg_len, mac, &len);
}

/* A principal's secret of generation gen: HMAC(lab key, "msrs-" WHO ":" G),
 * WHO "device:ID", "node:ID" or "operator:NAME:ROLE". */
static void secret_of(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *who, int64_t gen,
                      unsigned char secret[32])
{
    char msg[2 * EV_ID_MAX + 64];
    int n = snprintf(msg, sizeof(msg), "msrs-%s:%lld", who, (long long)gen);
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = (int)sizeof(msg) - 1; /* callers pass ids of at most EV_ID_MAX: never */
    hmac(key, CLI_AUTH_KEY_BYTES, msg, n, secret);
}

static void device_secret(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *device_id,
                          int64_t gen, unsigned char secret[32])
{
    char who[EV_ID_MAX + 8];
    snprintf(who, sizeof(who), "device:%s", device_id);
    secret_of(key, who, gen, secret);
}

/* The generation revoked for who ("KIND:ID"), 0 when none. */
static int64_t revoked_gen(cli_auth *a, const char *kind, const char *id)
{
    char who[16 + EV_ID_MAX + 2];
    revoked_refresh(a);
    snprintf(who, sizeof(who), "%s:%s", kind, id);
    return json_integer_value(json_object_get(a->revoked, who));
}

/* The proof over nonce: hex(HMAC(secret, NONCE ":" ID)). */
static void proof_of(const unsigned char secret[32], const char *nonce, const char *device_id,
                     char hex[CLI_AUTH_HEX])
{
    char msg[128 + EV_ID_MAX];
    unsigned char mac[32];
    int n = snprintf(msg, sizeof(msg), "%s:%s", nonce, device_id);
    hmac(secret, 32, msg, n, mac);
    to_hex(mac, sizeof(mac), hex);
}

void cli_auth_device_credential(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *device_id,
                                int64_t gen, char *out, size_t out_size)
{
    unsigned char secret[32];
    char hex[CLI_AUTH_HEX];
    device_secret(key, device_id, gen, secret);
    to_hex(secret, sizeof(secret), hex);
    snprintf(out, out_size, "%lld.%s", (long long)gen, hex);
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(hex, sizeof(hex));
}

int cli_auth_device_check(cli_auth *a, const char *device_id, int64_t gen, const char *nonce,
                          const char *mac, const char **why)
{
    unsigned char secret[32];
    char want[CLI_AUTH_HEX];
    if (gen <= revoked_gen(a, "device", device_id)) {
        *why = "credential revoked";
        return -1;
    }
    device_secret(a->key, device_id, gen, secret);
    proof_of(secret, nonce, device_id, want);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (!mac || strlen(mac) != 64 || CRYPTO_memcmp(want, mac, 64) != 0) {
        *why = "proof does not match the device's credential";
        return -1;
    }
    return 0;
}

int cli_auth_nonce(char out[33])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -1;
    to_hex(b, sizeof(b), out);
    return 0;
}

int cli_auth_role_rank(const char *role)
{
    static const char *const roles[] = {"viewer", "operator", "admin"};
    for (int i = 0; i < 3; i++)
        if (role && strcmp(role, roles[i]) == 0)
            return i + 1;
    return 0;
}

/* "node:ID" or "operator:NAME:ROLE" from a principal; -1 when it is not one. */
static int who_of(const cli_principal *p, char *who, size_t size)
{
    int node = strcmp(p->kind, "node") == 0;
    if (!ev_id_valid(p->id) ||
        (!node && (strcmp(p->kind, "operator") != 0 || !cli_auth_role_rank(p->role))))
        return -1;
    if (node)
        snprintf(who, size, "node:%s", p->id);
    else
        snprintf(who, size, "operator:%s:%s", p->id, p->role);
    return 0;
}

int cli_auth_token(const unsigned char key[CLI_AUTH_KEY_BYTES], const cli_principal *p, char *out,
                   size_t out_size)
{
    char who[2 * EV_ID_MAX + 32], hex[CLI_AUTH_HEX];
    unsigned char secret[32];
    if (p->gen < 1 || who_of(p, who, sizeof(who)))
        return -1;
    secret_of(key, who, p->gen, secret);
    to_hex(secret, sizeof(secret), hex);
    int n = snprintf(out, out_size, "%s:%lld.%s", who, (long long)p->gen, hex);
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_cleanse(hex, sizeof(hex));
    return n < 0 || (size_t)n >= out_size ? -1 : 0;
}

/* cli_auth_token_parse without zeroing *p on failure */
static int token_form(const char *token, cli_principal *p)
{
    char buf[CLI_AUTH_TOKEN_MAX], check[CLI_AUTH_TOKEN_MAX];
    static const unsigned char zero[CLI_AUTH_KEY_BYTES];
    if (!token || strlen(token) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", token);
    /* from the right: the MAC after the last '.', the generation after the
     * last ':' before it; ids may hold ':' and '.' themselves */
    char *dot = strrchr(buf, '.'), *colon, *end = NULL;
    if (!dot)
        return -1;
    *dot = '\0';
    if (!(colon = strrchr(buf, ':')))
        return -1;
    *colon = '\0';
    p->gen = strtoll(colon + 1, &end, 10);
    if (!end || *end || p->gen < 1)
        return -1;
    char *first = strchr(buf, ':');
    if (!first)
        return -1;
    *first = '\0';
    if (strlen(buf) >= sizeof(p->kind))
        return -1;
    memcpy(p->kind, buf, strlen(buf) + 1);
    char *rest = first + 1;
    if (strcmp(p->kind, "operator") == 0) {
        char *r = strrchr(rest, ':');
        if (!r || strlen(r + 1) >= sizeof(p->role))
            return -1;
        *r = '\0';
        memcpy(p->role, r + 1, strlen(r + 1) + 1);
    }
    if (strlen(rest) >= sizeof(p->id))
        return -1;
    snprintf(p->id, sizeof(p->id), "%s", rest);
    /* the same form as a token made of it (a valid principal, 64 hex digits) */
    if (cli_auth_token(zero, p, check, sizeof(check)) || strlen(check) != strlen(token) ||
        strspn(dot + 1, "0123456789abcdef") != 64)
        return -1;
    return 0;
}

int cli_auth_token_parse(const char *token, cli_principal *p)
{
    memset(p, 0, sizeof(*p));
    if (token_form(token, p) == 0)
        return 0;
    memset(p, 0, sizeof(*p));
    return -1;
}

int cli_auth_token_check(cli_auth *a, const char *token, cli_principal *p, const char **why)
{
    char want[CLI_AUTH_TOKEN_MAX];
    *why = "expected KIND:ID[:ROLE]:GENERATION.HEX (msrs nodes token, msrs operators token)";
    if (cli_auth_token_parse(token, p) || cli_auth_token(a->key, p, want, sizeof(want)))
        return -1;
    if (strlen(token) != strlen(want) || CRYPTO_memcmp(token, want, strlen(want)) != 0) {
        OPENSSL_cleanse(want, sizeof(want));
        *why = "the token was not issued with this lab key";
        return -1;
    }
    OPENSSL_cleanse(want, sizeof(want));
    if (p->gen <= revoked_gen(a, p->kind, p->id)) {
        *why = "token revoked";
        return -1;
    }
    return 0;
}

void cli_auth_mac(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *domain, const char *msg,
                  char hex[CLI_AUTH_HEX])
{
    unsigned char secret[32], mac[32];
    secret_of(key, domain, 0, secret);
    hmac(secret, sizeof(secret), msg, (int)strlen(msg), mac);
    OPENSSL_cleanse(secret, sizeof(secret));
    to_hex(mac, sizeof(mac), hex);
}

int cli_auth_mac_check(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *domain,
                       const char *msg, const char *hex)
{
    char want[CLI_AUTH_HEX];
    cli_auth_mac(key, domain, msg, want);
    return hex && strlen(hex) == 64 && CRYPTO_memcmp(want, hex, 64) == 0 ? 0 : -1;
}
