/* security.h — transport security and credentials for every msrs listener
 * and client (prefix cli_tls_ and cli_auth_; docs/security.md).
 *
 * TLS: libwebsockets over OpenSSL. A listener serves TLS with tls.cert and
 * tls.key; a client verifies its server against tls.ca (or the system's
 * trust store). Plain transport only when tls.plain = true, said loudly on
 * stderr by whoever loads it.
 *
 * Credentials: one lab key (auth.key_file: 32 random bytes as 64 hex
 * digits, readable by its owner and group only) from which every
 * credential is derived with HMAC-SHA256, so that any service holding the
 * key can check a credential without a database:
 *   device credential  "G.HEX"  HEX = HMAC(key, "msrs-device:" ID ":" G)
 *   node token         "node:ID:G.HEX"  HEX = HMAC(key, "msrs-node:ID:G")
 *   operator token     "operator:NAME:ROLE:G.HEX"
 *                                HEX = HMAC(key, "msrs-operator:NAME:ROLE:G")
 * A device proves its credential over a nonce of the agent's (it never
 * sends it); nodes and operators send their token as an HTTP bearer token
 * over TLS. Revocation is a file (auth.revoked_file) of lines
 * "device|node|operator ID G" (generations up to G refused) re-read when
 * it changes.
 * Nothing here is thread-safe unless it says so. */
#ifndef MSRS_SECURITY_H
#define MSRS_SECURITY_H
#include "ev.h"

#include "tlsfilter.h"

#include <libwebsockets.h>
#include <limits.h>
#include <stdint.h>
#include <time.h>

typedef struct cli_tls {
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    int plain; /* tls.plain = true: no TLS at all */
} cli_tls;

/* Reads tls.*: a server (server = 1) needs tls.cert and tls.key, readable,
 * unless tls.plain; a client uses tls.ca when set. Prints the loud warning
 * for tls.plain as prog. 0 or -1 (errstr names the key and what was
 * expected). */
int cli_tls_load(cli_tls *t, const ev_conf *conf, const char *prog, int server, char *errstr,
                 size_t errstr_size);

/* Sets a context or vhost's TLS for serving (cert, key) and for its client
 * connections (CA); nothing when plain. */
void cli_tls_apply(const cli_tls *t, struct lws_context_creation_info *info);

/* LCCSCF_USE_SSL for a client connection, 0 when plain. */
int cli_tls_client_flags(const cli_tls *t);

/* "wss" or "ws" */
const char *cli_tls_ws_scheme(const cli_tls *t);

#define CLI_AUTH_KEY_BYTES 32
#define CLI_AUTH_HEX       (2 * 32 + 1) /* an HMAC-SHA256 in hex, with its NUL */

typedef struct cli_auth {
    int enabled; /* auth.key_file set: devices and nodes must prove a credential */
    unsigned char key[CLI_AUTH_KEY_BYTES];
    char revoked_path[PATH_MAX];
    struct timespec revoked_mtime;
    json_t *revoked; /* device id -> highest revoked generation */
} cli_auth;

/* Reads auth.key_file and auth.revoked_file. Without a key file, devices
 * and nodes are not authenticated only when auth.required = false (said
 * loudly as prog); otherwise that is an error. 0 or -1 (errstr says which
 * key and why). */
int cli_auth_load(cli_auth *a, const ev_conf *conf, const char *prog, char *errstr,
                  size_t errstr_size);
void cli_auth_free(cli_auth *a);

/* Reads only auth.key_file into key (for the tools that derive
 * credentials). 0 or -1. */
int cli_auth_read_key(const char *path, unsigned char key[CLI_AUTH_KEY_BYTES], char *errstr,
                      size_t errstr_size);

/* The device credential of generation gen: "G.HEX". */
void cli_auth_device_credential(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *device_id,
                                int64_t gen, char *out, size_t out_size);

/* Checks a hello's proof: generation gen of device_id not revoked and mac
 * the proof over nonce. 0 ok; -1 with why ("revoked", "bad proof"). */
int cli_auth_device_check(cli_auth *a, const char *device_id, int64_t gen, const char *nonce,
                          const char *mac, const char **why);

/* Who a token names: kind "node" or "operator", the node id or operator
 * name, the operator's role ("viewer", "operator", "admin"; "" for a node)
 * and the generation. */
typedef struct cli_principal {
    char kind[16];
    char id[EV_ID_MAX];
    char role[16];
    int64_t gen;
} cli_principal;

#define CLI_AUTH_TOKEN_MAX 192

/* 1 viewer, 2 operator, 3 admin; 0 for anything else. */
int cli_auth_role_rank(const char *role);

/* The token of p into out (CLI_AUTH_TOKEN_MAX bytes hold any). -1 when p
 * is not a valid principal (an id that is not 1-63 of [A-Za-z0-9._:-], an
 * unknown role, generation < 1) or out is too small. */
int cli_auth_token(const unsigned char key[CLI_AUTH_KEY_BYTES], const cli_principal *p, char *out,
                   size_t out_size);

/* The principal a token names, from its form alone (the MAC is not
 * checked). 0, or -1 when it is not of a token's form (*p zeroed). */
int cli_auth_token_parse(const char *token, cli_principal *p);

/* Checks a bearer token: issued with this lab key and not revoked. 0 with
 * *p filled; -1 with why. */
int cli_auth_token_check(cli_auth *a, const char *token, cli_principal *p, const char **why);

/* HMAC(HMAC(key, "msrs-" domain ":0"), msg) in hex: a message signed with
 * the lab key (discovery answers, domain "discovery"); and its check (0
 * when hex is that MAC). */
void cli_auth_mac(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *domain, const char *msg,
                  char hex[CLI_AUTH_HEX]);
int cli_auth_mac_check(const unsigned char key[CLI_AUTH_KEY_BYTES], const char *domain,
                       const char *msg, const char *hex);

/* A fresh nonce from the system's random source: 32 hex digits. */
int cli_auth_nonce(char out[33]);

#endif
