/* preview.c — the camera proxy: each camera's latest JPEG and the camera
 * list over HTTPS, a vhost of the device SDK's libwebsockets context,
 * served by main.c's loop (the cameras' threads only leave a JPEG under
 * their mutex now and then: a slow viewer never holds up a camera). GET
 * only; a bearer token (node or operator, any role) unless
 * auth.required = false. */
#include "capture.h"
#include "cli.h"
#include "http.h"
#include "security.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct cp_preview {
    struct lws_vhost *vhost;
    cli_tls tls;
    cli_auth auth;
    cp_preview_source src;
};

typedef struct cp_req {
    unsigned char *body;
    size_t len;
    int status;
    const char *type;
} cp_req;

static void answer(struct lws *wsi, cp_req *r, int status, const char *type, unsigned char *body,
                   size_t len)
{
    free(r->body);
    r->status = status;
    r->type = type;
    r->body = body;
    r->len = len;
    lws_callback_on_writable(wsi);
}

static void answer_text(struct lws *wsi, cp_req *r, int status, const char *code, const char *msg)
{
    json_t *j = json_pack("{s:s, s:s}", "error", code, "message", msg);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    answer(wsi, r, status, "application/json", (unsigned char *)text, text ? strlen(text) : 0);
}

static void handle(cp_preview *p, struct lws *wsi, cp_req *r, const char *path)
{
    char auth[CLI_AUTH_TOKEN_MAX + 16];
    if (p->auth.enabled) {
        cli_principal who;
        const char *why = "no Authorization: Bearer token";
        int alen = lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
        if (alen <= 7 || strncasecmp(auth, "Bearer ", 7) != 0 ||
            cli_auth_token_check(&p->auth, auth + 7, &who, &why)) {
            answer_text(wsi, r, 401, "unauthorized", why);
            return;
        }
    }
    if (strcmp(path, "/v1/cameras") == 0) {
        char *text = p->src.list(p->src.arg);
        answer(wsi, r, 200, "application/json", (unsigned char *)text, text ? strlen(text) : 0);
        return;
    }
    const char *prefix = "/v1/cameras/";
    size_t n = strlen(path);
    if (strncmp(path, prefix, strlen(prefix)) == 0 && n > strlen(prefix) + 4 &&
        strcmp(path + n - 4, ".jpg") == 0 && n - strlen(prefix) - 4 < MD_ID_MAX) {
        char id[MD_ID_MAX];
        snprintf(id, sizeof(id), "%.*s", (int)(n - strlen(prefix) - 4), path + strlen(prefix));
        unsigned char *jpeg = NULL;
        size_t len = 0;
        if (p->src.jpeg(p->src.arg, id, &jpeg, &len) == 0)
            answer(wsi, r, 200, "image/jpeg", jpeg, len);
        else
            answer_text(wsi, r, 404, "not_found", "no such camera, or no image from it yet");
        return;
    }
    answer_text(wsi, r, 404, "not_found", "GET /v1/cameras or /v1/cameras/DEVICE_ID.jpg");
}

static int write_answer(struct lws *wsi, cp_req *r)
{
    cp_req a = *r; /* r is lws's: the answer may free it (cli_http_answer) */
    memset(r, 0, sizeof(*r));
    int rc = cli_http_answer(wsi, (unsigned int)a.status, a.type, a.body, a.len);
    free(a.body);
    return rc;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    cp_preview *p = lws_get_vhost_user(lws_get_vhost(wsi));
    cp_req *r = user;
    if (!r && reason != LWS_CALLBACK_HTTP)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
            lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "only GET is served");
            return -1;
        }
        handle(p, wsi, r, (const char *)in);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE: return r->status ? write_answer(wsi, r) : 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        free(r->body);
        memset(r, 0, sizeof(*r));
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(cp_req), 0, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

cp_preview *cp_preview_start(struct lws_context *ctx, const ev_conf *conf, const char *listen,
                             const cp_preview_source *src, char *errstr, size_t errstr_size)
{
    cp_preview *p = calloc(1, sizeof(*p));
    char host[128];
    int port = 0;
    if (!p || cli_host_port(listen, host, sizeof(host), &port)) {
        snprintf(errstr, errstr_size,
                 "config capture.preview_listen: expected HOST:PORT or off, got '%s'", listen);
        free(p);
        return NULL;
    }
    p->src = *src;
    if (cli_tls_load(&p->tls, conf, "msrs-capture", 1, errstr, errstr_size) ||
        cli_auth_load(&p->auth, conf, "msrs-capture", errstr, errstr_size)) {
        cli_auth_free(&p->auth);
        free(p);
        return NULL;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = port;
    info.iface = strcmp(host, "0.0.0.0") == 0 ? NULL : host;
    info.protocols = protocols;
    info.user = p;
    info.vhost_name = "camera-proxy";
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    cli_tls_apply(&p->tls, &info);
    info.client_ssl_ca_filepath = NULL; /* a server only */
    p->vhost = lws_create_vhost(ctx, &info);
    if (!p->vhost) {
        snprintf(errstr, errstr_size,
                 "config capture.preview_listen: cannot listen on %s (in use, or not an address "
                 "here)",
                 listen);
        cli_auth_free(&p->auth);
        free(p);
        return NULL;
    }
    return p;
}

void cp_preview_stop(cp_preview *p)
{
    if (!p)
        return;
    lws_vhost_destroy(p->vhost);
    cli_auth_free(&p->auth);
    free(p);
}
