/* http.c — the supervisor's HTTP server over libwebsockets: one protocol,
 * no mounts. A request's body is gathered (up to SV_BODY_MAX bytes: more
 * gets 413), handed to sv_handle, and the answer written on the next
 * writable callback. Connections stay open for the next request
 * (keep-alive). */
#include "http.h"
#include "rxstamp.h"
#include "supervisor.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct sv_conn {
    char path[128];
    char token[CLI_AUTH_TOKEN_MAX + 1]; /* Authorization: Bearer TOKEN */
    int post;
    char *body;
    size_t len, cap;
    int too_large;
    json_t *reply; /* set once handled: written when writable */
    int status;
    int64_t t2; /* /v1/time: when the request was complete */
} sv_conn;

static void conn_reset(sv_conn *c)
{
    free(c->body);
    json_decref(c->reply);
    memset(c, 0, sizeof(*c));
}

static int body_append(sv_conn *c, const void *in, size_t len)
{
    if (c->too_large || c->len + len > SV_BODY_MAX) {
        c->too_large = 1;
        return 0;
    }
    if (c->len + len + 1 > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        while (cap < c->len + len + 1)
            cap *= 2;
        char *b = realloc(c->body, cap);
        if (!b)
            return -1;
        c->body = b;
        c->cap = cap;
    }
    memcpy(c->body + c->len, in, len);
    c->len += len;
    c->body[c->len] = '\0';
    return 0;
}

static void dispatch(sv_supervisor *s, struct lws *wsi, sv_conn *c)
{
    if (c->too_large) {
        c->status = 413;
        c->reply = cli_json_error("too_large", "request body over %d bytes", SV_BODY_MAX);
    } else {
        c->status =
            sv_handle(s, c->post ? "POST" : "GET", c->path, *c->token ? c->token : NULL,
                      c->body ? c->body : "", c->len, c->t2 ? c->t2 : ev_now_ns(), &c->reply);
        if (c->status != 401 && c->status != 403)
            cli_admit_proven(&s->admit, wsi); /* its token allowed it (any request when
                                                 auth.required = false): never evicted */
    }
    lws_callback_on_writable(wsi);
}

static int write_reply(struct lws *wsi, sv_conn *c)
{
    /* /v1/time: t3 is stamped now, as late as possible before sending. */
    if (json_object_get(c->reply, "t3"))
        json_object_set_new(c->reply, "t3", json_integer(ev_now_ns()));
    char *body = json_dumps(c->reply, JSON_COMPACT);
    unsigned int status = (unsigned int)c->status;
    conn_reset(c); /* c is lws's: the answer may free it (cli_http_answer) */
    int rc = body ? cli_http_answer(wsi, status, "application/json", body, strlen(body)) : -1;
    free(body);
    return rc;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    sv_supervisor *s = lws_context_user(lws_get_context(wsi));
    sv_conn *c = user;
    if (cli_admit_callback(&s->admit, wsi, reason))
        return -1; /* supervisor.max_connections: refused at accept */
    if (reason == LWS_CALLBACK_FILTER_NETWORK_CONNECTION) {
        /* before anything is read: a clock probe's t2 is the kernel's
         * receive stamp, not when this loop got to the request */
        const struct lws_filter_network_conn_args *args = user;
        rxstamp_enable(args ? args->accept_fd : (int)(intptr_t)in);
        return 0;
    }
    /* A connection that closes before its first request has no session
     * data yet (a port probe): nothing of ours to do. */
    if (!c && reason != LWS_CALLBACK_HTTP)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        conn_reset(c);
        snprintf(c->path, sizeof(c->path), "%s", (const char *)in);
        c->post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
        char auth[sizeof(c->token) + 16];
        int alen = lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
        if (alen > 7 && (size_t)alen - 7 < sizeof(c->token) && strncasecmp(auth, "Bearer ", 7) == 0)
            memcpy(c->token, auth + 7, (size_t)alen - 7 + 1); /* longer: no token, 401 */
        s->n.requests++;
        if (!c->post && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
            /* PUT, DELETE, PATCH, OPTIONS, HEAD: not answered as a GET. The
             * answer goes now and the connection closes: a body that may
             * follow is never read as the next request. */
            s->n.bad++;
            lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED,
                                   "only GET and POST are served");
            return -1;
        }
        if (!c->post) {
            dispatch(s, wsi, c);
            return 0;
        }
        char cl[32];
        if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
            atoll(cl) > SV_BODY_MAX)
            c->too_large = 1;
        return 0; /* the body follows */
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (body_append(c, in, len))
            return -1;
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        c->t2 = rxstamp_arrival(lws_get_socket_fd(wsi), ev_now_ns());
        dispatch(s, wsi, c);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c->reply)
            return 0;
        return write_reply(wsi, c);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP: conn_reset(c); return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* The discovery socket (a UDP descriptor adopted as a raw file): every
 * datagram waiting is read and answered when it becomes readable. */
static int callback_discovery(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                              void *in, size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    if (reason == LWS_CALLBACK_RAW_RX_FILE)
        sv_discovery_answer(lws_context_user(lws_get_context(wsi)));
    return 0;
}

static struct lws_protocols protocols[] = {{"http", callback_http, sizeof(sv_conn), 0, 0, NULL, 0},
                                           {"msrs-discovery", callback_discovery, 0, 0, 0, NULL, 0},
                                           {NULL, NULL, 0, 0, 0, NULL, 0}};

int sv_http_start(sv_supervisor *s, char *errstr, size_t errstr_size)
{
    struct lws_context_creation_info info;
    if (cli_admit_init(&s->admit, s->max_connections, "supervisor.max_connections", NULL, errstr,
                       errstr_size))
        return -1;
    memset(&info, 0, sizeof(info));
    info.port = s->port;
    info.iface = strcmp(s->host, "0.0.0.0") == 0 ? NULL : s->host;
    info.protocols = protocols;
    info.user = s;
    info.pt_serv_buf_size = 64 * 1024;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    cli_tls_apply(&s->tls, &info);
    lws_set_log_level(LLL_ERR, NULL);
    s->ctx = lws_create_context(&info);
    if (!s->ctx) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (in use, or not an address here)",
                 s->host, s->port);
        return -1;
    }
    if (s->discovery_fd >= 0) {
        lws_sock_file_fd_type fd = {.filefd = s->discovery_fd};
        if (!lws_adopt_descriptor_vhost(lws_get_vhost_by_name(s->ctx, "default"),
                                        LWS_ADOPT_RAW_FILE_DESC, fd, "msrs-discovery", NULL)) {
            snprintf(errstr, errstr_size, "discovery: cannot watch the UDP socket");
            return -1; /* lws closed the descriptor */
        }
    }
    return 0;
}

void sv_http_stop(sv_supervisor *s)
{
    if (s->ctx)
        lws_context_destroy(s->ctx);
    s->ctx = NULL;
    cli_admit_free(&s->admit); /* after the context: its connections' WSI_DESTROY reads it */
}
