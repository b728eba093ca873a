/* discovery.c — the discovery datagrams (discovery.h). */
#include "discovery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int dsc_socket(int port, char *errstr, size_t errstr_size)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        snprintf(errstr, errstr_size, "discovery: UDP port %d: %s", port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int dsc_send(int fd, const struct sockaddr_in *to, json_t *msg)
{
    char buf[DSC_MAX];
    size_t n = json_dumpb(msg, buf, sizeof(buf), JSON_COMPACT);
    if (n == 0 || n > sizeof(buf)) {
        errno = EMSGSIZE;
        return -1;
    }
    return sendto(fd, buf, n, 0, (const struct sockaddr *)to, sizeof(*to)) == (ssize_t)n ? 0 : -1;
}

int dsc_send_all(int fd, const char *targets, int port, json_t *msg, char *errstr,
                 size_t errstr_size)
{
    char list[512];
    int sent = 0;
    snprintf(list, sizeof(list), "%s", targets);
    *errstr = '\0';
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (inet_pton(AF_INET, t, &to.sin_addr) != 1) {
            snprintf(errstr, errstr_size, "discovery target '%s': expected an IPv4 address", t);
            return -1;
        }
        if (!msg)
            continue;
        if (dsc_send(fd, &to, msg) == 0)
            sent++;
        else if (!*errstr)
            snprintf(errstr, errstr_size, "discovery: send to %s:%d: %s", t, port, strerror(errno));
    }
    return sent;
}

json_t *dsc_recv(int fd, const char *kind, const char *prefix, struct sockaddr_in *from,
                 int64_t *skipped)
{
    char buf[DSC_MAX + 1];
    for (;;) {
        socklen_t len = sizeof(*from);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)from, &len);
        if (n < 0)
            return NULL; /* EAGAIN: nothing more (or an error worth no more than that) */
        json_t *m = n <= DSC_MAX ? json_loadb(buf, (size_t)n, 0, NULL) : NULL;
        const char *k = json_string_value(json_object_get(m, "msrs"));
        const char *p = json_string_value(json_object_get(m, "prefix"));
        if (k && p && strcmp(k, kind) == 0 && strcmp(p, prefix) == 0 &&
            json_integer_value(json_object_get(m, "v")) == 1)
            return m;
        json_decref(m);
        if (skipped)
            (*skipped)++;
    }
}

int dsc_signed_text(const json_t *answer, char *out, size_t out_size)
{
    const char *nonce = json_string_value(json_object_get(answer, "nonce"));
    json_t *leading = json_object_get(answer, "leading");
    if (!nonce || strlen(nonce) != 32 || strspn(nonce, "0123456789abcdef") != 32 ||
        !json_is_string(json_object_get(answer, "prefix")) ||
        !json_is_string(json_object_get(answer, "node_id")) ||
        !json_is_string(json_object_get(answer, "url")) || !json_is_boolean(leading))
        return -1;
    /* JSON with sorted keys: one text for one set of fields, whatever the
     * fields hold (a '|'-joined text could be read two ways) */
    json_t *signed_fields =
        json_pack("{s:s, s:O, s:O, s:O, s:O}", "nonce", nonce, "prefix",
                  json_object_get(answer, "prefix"), "node_id", json_object_get(answer, "node_id"),
                  "url", json_object_get(answer, "url"), "leading", leading);
    char *text = signed_fields ? json_dumps(signed_fields, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(signed_fields);
    int rc = text && strlen(text) < out_size ? 0 : -1;
    if (rc == 0)
        memcpy(out, text, strlen(text) + 1);
    free(text);
    return rc;
}
