/* http.c — the gateway's libwebsockets server: one protocol that answers
 * HTTP (the API below /api/v1, the web app's files, archive downloads) and
 * the feed's WebSocket connections (/api/v1/feed, subprotocol msrs-feed).
 * Who asks is an operator's token, sent as Authorization: Bearer (curl, a
 * script) or as the HttpOnly cookie POST /api/v1/login sets (the page, its
 * WebSocket and its download links). Every answer carries the vhost's
 * security headers (CSP, nosniff, no framing, no referrer). */
#include "http.h"
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* what a token is made of (security.h); anything else never reaches a cookie */
#define TOKEN_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-"

typedef struct gw_conn {
    int feed; /* a feed connection (the rest is HTTP) */
    /* HTTP */
    char path[512];
    char token[CLI_AUTH_TOKEN_MAX + 1];
    int post;
    cli_buf body;
    int64_t discard; /* a body over GW_BODY_MAX: bytes read and thrown away (413 at its end) */
    json_t *reply;
    int status;
    char cookie[CLI_AUTH_TOKEN_MAX + 128]; /* Set-Cookie of login and logout */
    /* feed */
    int64_t rev;       /* the last revision this client has */
    int need_snapshot; /* it gets a snapshot next */
} gw_conn;

static void conn_reset(gw_conn *c)
{
    cli_buf_free(&c->body);
    json_decref(c->reply);
    memset(c, 0, sizeof(*c));
}

/* The request's token: Authorization: Bearer, else the login cookie. */
static void read_token(struct lws *wsi, char *token, size_t size)
{
    char auth[CLI_AUTH_TOKEN_MAX + 16];
    int alen = lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
    size_t max = size;
    *token = '\0';
    if (alen > 7 && (size_t)alen - 7 < size && strncasecmp(auth, "Bearer ", 7) == 0)
        memcpy(token, auth + 7, (size_t)alen - 7 + 1); /* longer: no token, 401 */
    else if (lws_http_cookie_get(wsi, GW_COOKIE, token, &max))
        *token = '\0';
}

static void reply_with(gw_conn *c, int status, json_t *reply)
{
    c->status = status;
    c->reply = reply;
}

/* POST /api/v1/login {"token": T}: the token checked, then set as an
 * HttpOnly cookie (Secure on TLS) so the page never holds it in script.
 * POST /api/v1/logout clears it. */
static void login(gw_gateway *g, gw_conn *c, int out)
{
    json_t *req = out ? NULL : json_loadb((const char *)c->body.data, c->body.len, 0, NULL);
    const char *token = json_string_value(json_object_get(req, "token")), *why = "";
    const char *secure = g->tls.plain ? "" : "; Secure";
    gw_who who;
    if (out) {
        snprintf(c->cookie, sizeof(c->cookie),
                 GW_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0%s", secure);
        reply_with(c, 200, json_pack("{s:b}", "ok", 1));
    } else if (!token || strlen(token) > CLI_AUTH_TOKEN_MAX ||
               strspn(token, TOKEN_CHARS) != strlen(token) || gw_auth(g, token, &who, &why)) {
        g->n.unauthorized++;
        reply_with(c, 401,
                   cli_json_error("unauthorized", "%s",
                                  token ? why : "body: expected {\"token\": \"operator:...\"}"));
    } else {
        snprintf(c->cookie, sizeof(c->cookie),
                 GW_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200%s", token,
                 secure);
        reply_with(c, 200, json_pack("{s:s, s:s}", "name", who.p.id, "role", who.p.role));
    }
    json_decref(req);
}

/* The content type of a file by its name. */
static const char *mime_of(const char *path)
{
    static const char *const types[][2] = {{".html", "text/html; charset=utf-8"},
                                           {".js", "text/javascript; charset=utf-8"},
                                           {".mjs", "text/javascript; charset=utf-8"},
                                           {".css", "text/css; charset=utf-8"},
                                           {".json", "application/json"},
                                           {".svg", "image/svg+xml"},
                                           {".png", "image/png"},
                                           {".ico", "image/x-icon"},
                                           {".txt", "text/plain; charset=utf-8"},
                                           {".mkv", "video/x-matroska"},
                                           {".avro", "application/avro"}};
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i][0]) == 0)
            return types[i][1];
    return "application/octet-stream";
}

/* Serves a file; the transaction ends when it is sent. attachment: the
 * browser saves it, never shows it in the gateway's origin (an archive's
 * files are the devices' data, not ours). */
static int serve_file(struct lws *wsi, const char *path, int attachment)
{
    static const char disposition[] = "content-disposition: attachment\x0d\x0a";
    int n = lws_serve_http_file(wsi, path, mime_of(path), attachment ? disposition : NULL,
                                attachment ? (int)sizeof(disposition) - 1 : 0);
    if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
        return -1;
    return 0;
}

/* The web app's files, and nothing else of web_root (not its package
 * files, not node_modules): "/" is index.html; the pages and the style
 * sheet by name; /js/NAME.js; /vendor/uplot/ is two files of uPlot's dist
 * folder from npm. Names of [A-Za-z0-9_-] only. */
static int serve_static(gw_gateway *g, struct lws *wsi, const char *path)
{
    static const char *const files[] = {"/",
                                        "/index.html",
                                        "/app.css",
                                        "/device.html",
                                        "/vendor/uplot/uPlot.iife.min.js",
                                        "/vendor/uplot/uPlot.min.css"};
    char file[PATH_MAX + 600];
    int ok = 0;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        ok |= strcmp(path, files[i]) == 0;
    size_t n = strlen(path);
    if (!ok && strncmp(path, "/js/", 4) == 0 && n > 7 && strcmp(path + n - 3, ".js") == 0) {
        ok = 1;
        for (const char *p = path + 4; ok && p < path + n - 3; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '_' || *p == '-';
    }
    if (!ok) {
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return -1;
    }
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    if (strncmp(path, "/vendor/uplot/", 14) == 0)
        snprintf(file, sizeof(file), "%s/node_modules/uplot/dist/%s", g->web_root, path + 14);
    else
        snprintf(file, sizeof(file), "%s%s", g->web_root, path);
    return serve_file(wsi, file, 0);
}

/* An API request, its body read: answered now or when writable. */
static int dispatch(gw_gateway *g, struct lws *wsi, gw_conn *c)
{
    const char *sub = c->path + 7; /* after /api/v1 */
    g->n.requests++;
    if (c->post && (strcmp(sub, "/login") == 0 || strcmp(sub, "/logout") == 0)) {
        login(g, c, strcmp(sub, "/logout") == 0);
    } else {
        gw_who who;
        const char *why = "";
        char *file = NULL;
        json_t *reply = NULL;
        if (gw_auth(g, c->token, &who, &why)) {
            g->n.unauthorized++;
            reply_with(c, 401, cli_json_error("unauthorized", "%s", why));
        } else {
            cli_admit_proven(&g->admit, wsi); /* a token it knows: never evicted */
            int status = gw_api_handle(g, &who, c->post ? "POST" : "GET", sub,
                                       (const char *)c->body.data, c->body.len, &reply, &file);
            if (file) {
                int rc = serve_file(wsi, file, 1);
                free(file);
                return rc;
            }
            reply_with(c, status, reply);
        }
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int write_reply(struct lws *wsi, gw_conn *c)
{
    char cookie[sizeof(c->cookie)];
    const char *headers[] = {"set-cookie:", cookie, NULL};
    char *body = json_dumps(c->reply, JSON_COMPACT);
    unsigned int status = (unsigned int)c->status;
    memcpy(cookie, c->cookie, sizeof(cookie));
    conn_reset(c); /* c is lws's: the answer may free it (cli_http_answer) */
    int rc = body ? cli_http_answer_with(wsi, status, "application/json", body, strlen(body),
                                         *cookie ? headers : NULL)
                  : -1;
    free(body);
    return rc;
}

/* 1 when a browser's request comes from a page of this gateway: no Origin
 * (curl, scripts), or an Origin naming the Host it asked (another site, or
 * another port of this host, names its own). Checked for every POST and
 * the feed: a logged-in operator's cookie acts only through our page. */
static int same_origin(struct lws *wsi)
{
    char origin[256], host[200];
    if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
        return 1;
    if (lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) <= 0)
        return 0;
    const char *rest = strstr(origin, "://");
    return rest && strcmp(rest + 3, host) == 0;
}

/* What a POST must be before its body is read: from our origin, JSON, at
 * most GW_BODY_MAX bytes, and (but for login and logout) from someone the
 * gateway knows. 1 when it may go on; 0 when the answer went and the
 * connection must close (its body is never read as a request). */
static int post_allowed(gw_gateway *g, struct lws *wsi, gw_conn *c)
{
    char type[64] = "", cl[32] = "";
    const char *why = "";
    gw_who who;
    const char *sub = c->path + 7;
    lws_hdr_copy(wsi, type, sizeof(type), WSI_TOKEN_HTTP_CONTENT_TYPE);
    lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
    int status = 0;
    const char *msg = NULL;
    if (!same_origin(wsi))
        status = HTTP_STATUS_FORBIDDEN, msg = "Origin: expected this gateway's own page";
    else if (strncasecmp(type, "application/json", 16) != 0)
        status = HTTP_STATUS_UNSUPPORTED_MEDIA_TYPE,
        msg = "Content-Type: expected application/json";
    else if (atoll(cl) > GW_BODY_MAX && atoll(cl) <= GW_DRAIN_MAX) {
        /* read and thrown away, then 413: a client still sending when the
         * connection closed would see the close, not the answer */
        c->discard = 1;
        return 1;
    } else if (atoll(cl) > GW_BODY_MAX)
        status = HTTP_STATUS_REQ_ENTITY_TOO_LARGE, msg = "request body over 65536 bytes";
    else if (strcmp(sub, "/login") && strcmp(sub, "/logout") && gw_auth(g, c->token, &who, &why))
        status = HTTP_STATUS_UNAUTHORIZED, msg = why;
    if (!status)
        return 1;
    g->n.bad += status != HTTP_STATUS_UNAUTHORIZED;
    g->n.unauthorized += status == HTTP_STATUS_UNAUTHORIZED;
    lws_return_http_status(wsi, (unsigned int)status, msg);
    return 0;
}

static int on_http(gw_gateway *g, struct lws *wsi, gw_conn *c, const char *uri)
{
    conn_reset(c);
    snprintf(c->path, sizeof(c->path), "%s", uri);
    c->post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    if (!c->post && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        g->n.bad++;
        lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "only GET and POST are served");
        return -1; /* the body that may follow is never read as a request */
    }
    if (strncmp(c->path, "/api/v1/", 8) != 0) {
        if (c->post) {
            lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "POST only below /api/v1");
            return -1;
        }
        return serve_static(g, wsi, c->path);
    }
    read_token(wsi, c->token, sizeof(c->token));
    if (!c->post)
        return dispatch(g, wsi, c);
    return post_allowed(g, wsi, c) ? 0 : -1; /* the body follows, or the answer went */
}

/* A WebSocket upgrade: only /api/v1/feed, from someone the gateway knows,
 * within gateway.max_feed_clients. Non-zero refuses it. */
static int feed_filter(gw_gateway *g, struct lws *wsi)
{
    char uri[64], token[CLI_AUTH_TOKEN_MAX + 1];
    const char *why = "";
    gw_who who;
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
        strcmp(uri, "/api/v1/feed") != 0)
        return -1;
    if (!same_origin(wsi)) {
        g->n.bad++;
        return -1;
    }
    read_token(wsi, token, sizeof(token));
    if (gw_auth(g, token, &who, &why)) {
        g->n.unauthorized++;
        return -1;
    }
    cli_admit_proven(&g->admit, wsi);
    if (g->n.feed_clients >= g->max_feed_clients) {
        g->n.feed_refused++;
        return -1;
    }
    return 0;
}

/* The feed connected: from since=EPOCH:REV of this process when the ring
 * still has what follows it, else from a snapshot. */
static void feed_open(gw_gateway *g, struct lws *wsi, gw_conn *c)
{
    char arg[96];
    const char *since;
    conn_reset(c);
    c->feed = 1;
    c->need_snapshot = 1;
    g->n.feed_clients++;
    if ((since = lws_get_urlarg_by_name(wsi, "since=", arg, sizeof(arg)))) {
        char *colon = strrchr(since, ':');
        int gone = 0;
        if (colon && (size_t)(colon - since) == strlen(g->epoch) &&
            strncmp(since, g->epoch, strlen(g->epoch)) == 0) {
            int64_t rev = strtoll(colon + 1, NULL, 10);
            if (rev >= 0 && rev <= g->rev && (gw_feed_next(g, rev, &gone), !gone)) {
                c->rev = rev;
                c->need_snapshot = 0;
            }
        }
    }
    lws_callback_on_writable(wsi);
}

/* One message to a feed client per writable callback: a snapshot when it
 * needs one, else the next change. */
static int feed_write(gw_gateway *g, struct lws *wsi, gw_conn *c)
{
    if (!c->need_snapshot) {
        int gone = 0;
        const gw_change *next = gw_feed_next(g, c->rev, &gone);
        if (gone) {
            c->need_snapshot = 1; /* it fell behind the ring */
        } else if (!next) {
            return 0;
        } else {
            if (lws_write(wsi, (unsigned char *)next->text, next->len, LWS_WRITE_TEXT) <
                (int)next->len)
                return -1;
            c->rev = next->rev;
            if (c->rev < g->rev)
                lws_callback_on_writable(wsi);
            return 0;
        }
    }
    json_t *snap = gw_feed_snapshot(g);
    char *text = json_dumps(snap, JSON_COMPACT);
    json_decref(snap);
    if (!text)
        return -1;
    size_t len = strlen(text);
    unsigned char *buf = malloc(LWS_PRE + len);
    int rc = -1;
    if (buf) {
        memcpy(buf + LWS_PRE, text, len);
        rc = lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len ? -1 : 0;
    }
    free(buf);
    free(text);
    c->need_snapshot = 0;
    c->rev = g->rev;
    g->n.feed_snapshots++;
    return rc;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    gw_gateway *g = lws_context_user(lws_get_context(wsi));
    gw_conn *c = user;
    if (cli_admit_callback(&g->admit, wsi, reason))
        return -1; /* gateway.max_connections: refused at accept */
    /* a connection that closes before its first request has no data of ours */
    if (!c && reason != LWS_CALLBACK_HTTP)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP: return on_http(g, wsi, c, (const char *)in);
    case LWS_CALLBACK_HTTP_BODY:
        if (c->discard) {
            c->discard += (int64_t)len;
            return c->discard > GW_DRAIN_MAX + 1 ? -1 : 0; /* more than it said: cut */
        }
        if (c->body.len + len > GW_BODY_MAX) { /* more than its Content-Length said */
            g->n.bad++;
            lws_return_http_status(wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE,
                                   "request body over 65536 bytes");
            return -1;
        }
        return cli_buf_append(&c->body, in, len) ? -1 : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (c->discard) {
            g->n.bad++;
            lws_return_http_status(wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE,
                                   "request body over 65536 bytes");
            return -1;
        }
        return dispatch(g, wsi, c);
    case LWS_CALLBACK_HTTP_WRITEABLE: return c->reply ? write_reply(wsi, c) : 0;
    case LWS_CALLBACK_HTTP_FILE_COMPLETION: return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (!c->feed)
            conn_reset(c);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: return feed_filter(g, wsi);
    case LWS_CALLBACK_ESTABLISHED: feed_open(g, wsi, c); return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE: return feed_write(g, wsi, c);
    case LWS_CALLBACK_RECEIVE: return 0; /* a client has nothing to say */
    case LWS_CALLBACK_CLOSED:
        if (c->feed)
            g->n.feed_clients--;
        conn_reset(c);
        return 0;
    default: break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static struct lws_protocols protocols[] = {
    {"msrs-feed", callback, sizeof(gw_conn), GW_FEED_MSG_MAX, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* Sent with every answer. The page loads only its own files, talks only to
 * its own origin (the device page also to its agent's WebSocket: wss:), and
 * is never framed. */
static const struct lws_protocol_vhost_options security_headers[] = {
    {&security_headers[1], NULL, "content-security-policy:",
     "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
     "connect-src 'self' wss: ws:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"},
    /* cross-origin isolated: the device page's performance.now() is
     * fine-grained (its clock answers probes) */
    {&security_headers[2], NULL, "cross-origin-opener-policy:", "same-origin"},
    {&security_headers[3], NULL, "cross-origin-embedder-policy:", "require-corp"},
    {&security_headers[4], NULL, "x-content-type-options:", "nosniff"},
    {&security_headers[5], NULL, "x-frame-options:", "DENY"},
    {NULL, NULL, "referrer-policy:", "no-referrer"}};

int gw_http_start(gw_gateway *g, char *errstr, size_t errstr_size)
{
    struct lws_context_creation_info info;
    if (cli_admit_init(&g->admit, g->max_connections, "gateway.max_connections", NULL, errstr,
                       errstr_size))
        return -1;
    memset(&info, 0, sizeof(info));
    info.port = g->port;
    info.iface = strcmp(g->host, "0.0.0.0") == 0 ? NULL : g->host;
    info.protocols = protocols;
    info.user = g;
    info.headers = security_headers;
    info.alpn = "http/1.1"; /* one wire protocol for the API, files and the feed */
    info.pt_serv_buf_size = 64 * 1024;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    cli_tls_apply(&g->tls, &info);
    lws_set_log_level(LLL_ERR, NULL);
    g->ctx = lws_create_context(&info);
    if (!g->ctx) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (in use, or not an address here)",
                 g->host, g->port);
        return -1;
    }
    return 0;
}

void gw_http_feed_wake(gw_gateway *g)
{
    lws_callback_on_writable_all_protocol(g->ctx, &protocols[0]);
}

void gw_http_stop(gw_gateway *g)
{
    if (g->ctx)
        lws_context_destroy(g->ctx);
    g->ctx = NULL;
    cli_admit_free(&g->admit); /* after the context: its connections' WSI_DESTROY reads it */
}
