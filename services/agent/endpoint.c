/* endpoint.c — the device endpoint over libwebsockets: ws://HOST:PORT/v1/devices,
 * subprotocol "msrs.v1" accepted and not required (it is protocols[0], where
 * lws binds a client that names none). Reassembles fragments up to
 * agent.max_message_bytes, drains each connection's send queue one message
 * per writable callback, stamps t1 of time probes at the moment of writing. */
#include "agent.h"
#include "rxstamp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void ag_wake(ag_conn *c)
{
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

void ag_close(ag_conn *c, int code, const char *reason)
{
    if (!c->wsi)
        return;
    lws_close_reason(c->wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    /* Closing happens on the next writable callback, inside lws. */
    c->closing = 1;
    lws_callback_on_writable(c->wsi);
}

int ag_write_next(ag_agent *a, ag_conn *c)
{
    unsigned char probe[LWS_PRE + 256];
    ag_out *o = c->out_head;
    if (c->closing)
        return -1;
    if (!o)
        return 0;
    c->out_head = o->next;
    if (!c->out_head)
        c->out_tail = NULL;
    c->out_count--;
    unsigned char *p = o->buf + LWS_PRE;
    size_t len = o->len;
    if (o->kind == AG_OUT_TIME_REQ) {
        int64_t t1 = ag_now_ns();
        char id[48];
        snprintf(id, sizeof(id), "a%lld", (long long)++a->next_id);
        int n = snprintf((char *)probe + LWS_PRE, sizeof(probe) - LWS_PRE,
                         "{\"id\":\"%s\",\"type\":\"time_req\",\"ts\":%lld,\"device_id\":\"%s\","
                         "\"payload\":{\"t1\":%lld}}",
                         id, (long long)t1, c->dev ? c->dev->device_id : "", (long long)t1);
        p = probe + LWS_PRE;
        len = (size_t)n;
    }
    int w = lws_write(c->wsi, p, len, LWS_WRITE_TEXT);
    free(o);
    if (w < (int)len)
        return -1;
    if (c->out_head)
        lws_callback_on_writable(c->wsi);
    return 0;
}

static int rx_append(ag_agent *a, ag_conn *c, const void *in, size_t len)
{
    if (c->rx_too_large)
        return 0;
    if (c->rx_len + len > (size_t)a->cfg.max_message_bytes) {
        c->rx_too_large = 1;
        return 0;
    }
    return ag_buf_append(&c->rx, &c->rx_len, &c->rx_cap, in, len);
}

int ag_buf_append(unsigned char **buf, size_t *len, size_t *cap, const void *in, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n)
            c *= 2;
        unsigned char *b = realloc(*buf, c);
        if (!b)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, in, n);
    *len += n;
    return 0;
}

static int callback_devices(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                            size_t len)
{
    ag_agent *a = lws_context_user(lws_get_context(wsi));
    ag_conn *c = user;
    char uri[128];

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
            strcmp(uri, "/v1/devices") != 0)
            return -1; /* only the device endpoint speaks WebSocket */
        break;
    case LWS_CALLBACK_ESTABLISHED:
        memset(c, 0, sizeof(*c));
        c->wsi = wsi;
        c->tokens = (double)a->cfg.rate_burst;
        c->tokens_at_ns = ag_now_ns();
        c->rx_fd = -1;
        if (a->cfg.kernel_timestamps) {
            int fd = lws_get_socket_fd(wsi);
            if (rxstamp_enable(fd) == 0)
                c->rx_fd = fd;
            else if (!a->n.stamp_errors++)
                fprintf(stderr,
                        "msrs-agent: kernel receive stamps (SO_TIMESTAMPNS) refused: %s; "
                        "t4 is stamped on reading\n",
                        strerror(errno));
        }
        lws_get_peer_simple(wsi, c->peer, sizeof(c->peer));
        a->n.connections++;
        break;
    case LWS_CALLBACK_RECEIVE:
        a->n.rx_bytes += (int64_t)len;
        if (c->rx_len == 0 && !c->rx_too_large)
            c->rx_binary = lws_frame_is_binary(wsi);
        if (rx_append(a, c, in, len))
            return -1;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            if (c->rx_too_large) {
                char why[128];
                a->n.too_large++;
                snprintf(why, sizeof(why), "message larger than %lld bytes: dropped",
                         (long long)a->cfg.max_message_bytes);
                ag_send_error(a, c, "too_large", why, NULL);
            } else {
                ag_on_message(a, c, c->rx, c->rx_len, c->rx_binary);
            }
            c->rx_too_large = 0;
            c->rx_len = 0;
        }
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: return ag_write_next(a, c);
    case LWS_CALLBACK_CLOSED:
        ag_on_closed(a, c);
        c->wsi = NULL;
        break;
    default: break;
    }
    return 0;
}

static struct lws_protocols protocols[] = {
    {"msrs.v1", callback_devices, sizeof(ag_conn), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* ag_control_protocol, set at start */
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void fill_info(ag_agent *a, struct lws_context_creation_info *info, int port)
{
    memset(info, 0, sizeof(*info));
    info->port = port;
    info->iface = strcmp(a->cfg.host, "0.0.0.0") == 0 ? NULL : a->cfg.host;
    info->protocols = protocols;
    info->user = a;
    info->pt_serv_buf_size = 64 * 1024;
    info->fd_limit_per_thread = (unsigned int)(a->cfg.max_devices * 2 + 64);
    info->options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
}

int ag_endpoint_start(ag_agent *a, char *errstr, size_t errstr_size)
{
    struct lws_context_creation_info info;
    protocols[1] = ag_control_protocol;
    /* With a supervisor the endpoint listens when the plan says so
     * (ag_endpoint_listen); the context's own vhost only makes requests. */
    fill_info(a, &info, a->ctl.managed ? CONTEXT_PORT_NO_LISTEN : a->cfg.port);
    lws_set_log_level(LLL_ERR, NULL);
    a->ctx = lws_create_context(&info);
    if (!a->ctx) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (in use, or not an address here)",
                 a->cfg.host, a->cfg.port);
        return -1;
    }
    a->listening = !a->ctl.managed;
    return 0;
}

int ag_endpoint_listen(ag_agent *a, char *errstr, size_t errstr_size)
{
    struct lws_context_creation_info info;
    if (a->listening)
        return 0;
    fill_info(a, &info, a->cfg.port);
    info.vhost_name = "devices";
    if (!lws_create_vhost(a->ctx, &info)) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (in use, or not an address here)",
                 a->cfg.host, a->cfg.port);
        return -1;
    }
    a->listening = 1;
    return 0;
}

void ag_endpoint_stop(ag_agent *a)
{
    if (a->ctx)
        lws_context_destroy(a->ctx);
    a->ctx = NULL;
}
