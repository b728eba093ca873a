/* endpoint.c — layer 1, connections: the device endpoint over
 * libwebsockets, ws://HOST:PORT/v1/devices, subprotocol "msrs.v1" accepted
 * and not required (it is protocols[0], where lws binds a client that names
 * none). Reassembles fragments up to agent.max_message_bytes and hands each
 * whole message up (message_cb); writes a message at once when nothing of
 * its connection waits, else drains the send queue one message per writable
 * callback; stamps t1 of time probes at the moment of writing and, over
 * TLS, keeps when their write began (ag_probe_sent_at); over TLS has
 * OpenSSL read ahead and services what it read ahead after each turn of
 * the loop (ag_endpoint_service_unread). */
#include "endpoint.h"

#include "rxstamp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------- TLS read-ahead */

/* What OpenSSL read ahead on a connection (cli_tls_read_ahead) and no
 * SSL_read has returned yet, no socket readiness announces: a connection
 * a read brought bytes to is listed in a->unread, and serviced after the
 * loop's turn (ag_endpoint_service_unread) until its SSL holds nothing
 * more, or part of a record only (a read found nothing: the socket will
 * announce the rest). a->unread has room for every connection that reads
 * ahead (made before one starts to), so listing one never fails. */

/* Services a connection gets after a turn of the loop before the loop
 * looks at the other sockets again: each one SSL_read, up to a record or
 * the protocol's rx buffer (4096 bytes). */
#define AG_UNREAD_PASSES 16

static void unread_add(ag_agent *a, ag_conn *c)
{
    if (!c->unread_slot && c->read_ahead && a->unread_len < a->unread_cap) {
        a->unread[a->unread_len++] = c;
        c->unread_slot = a->unread_len;
    }
}

static void unread_remove(ag_agent *a, ag_conn *c)
{
    if (c->unread_slot) {
        ag_conn *last = a->unread[--a->unread_len];
        a->unread[c->unread_slot - 1] = last;
        last->unread_slot = c->unread_slot;
        c->unread_slot = 0;
    }
}

static void on_tls_read(void *arg, int got)
{
    ag_conn *c = arg;
    ag_agent *a = lws_context_user(lws_get_context(c->wsi));
    if (got)
        unread_add(a, c);
    else
        unread_remove(a, c);
}

/* Reads ahead on c's TLS (cli_tls_read_ahead) when a->unread has room
 * for it too; plain connections, and TLS ones when it has not, read a
 * record's header, then its body. */
static void read_ahead(ag_agent *a, ag_conn *c)
{
    if (!lws_is_ssl(c->wsi))
        return;
    if (a->open_conns > a->unread_cap) {
        size_t cap = a->unread_cap ? 2 * a->unread_cap : 64;
        while (cap < a->open_conns)
            cap *= 2;
        ag_conn **grown = realloc(a->unread, cap * sizeof(*grown));
        if (!grown)
            return;
        a->unread = grown;
        a->unread_cap = cap;
    }
    c->read_ahead = cli_tls_read_ahead(c->wsi, on_tls_read, c) == 0;
}

int ag_endpoint_service_unread(ag_agent *a)
{
    /* one service a connection a pass, a bounded number of passes a turn:
     * a connection that keeps sending cannot hold the loop */
    for (int pass = 0; pass < AG_UNREAD_PASSES && a->unread_len; pass++)
        for (size_t i = a->unread_len; i-- > 0;) {
            if (i >= a->unread_len) /* closed during this pass */
                continue;
            ag_conn *c = a->unread[i];
            if (c->paused || !cli_tls_unread(c->wsi)) { /* resuming lists it again */
                unread_remove(a, c);
                continue;
            }
            struct lws_pollfd pfd = {lws_get_socket_fd(c->wsi), LWS_POLLIN, LWS_POLLIN};
            lws_service_fd(a->ctx, &pfd); /* as the loop does when the socket is readable */
        }
    return a->unread_len > 0;
}

static int write_next(ag_agent *a, ag_conn *c);

/* A message was queued on c. When it is the only one, c is not closing and
 * lws holds nothing of c's to send later, it is written now: waiting for
 * the writable callback would cost two epoll_ctl (POLLOUT on, then off)
 * and a turn of the loop per message, and delay a probe by that turn. lws
 * writes a WebSocket frame outside the callback as inside: what the kernel
 * does not take it keeps and sends first (lws_partial_buffered), asking
 * for writable itself. It does not check there whether it is closing the
 * connection itself (a protocol error of the peer's, a timeout): a message
 * may then follow its close frame, to a peer it is dropping. */
static void wake(ag_agent *a, ag_conn *c)
{
    if (!c->wsi)
        return;
    if (c->out_count == 1 && !c->closing && !lws_partial_buffered(c->wsi)) {
        if (write_next(a, c) < 0) {
            /* the socket failed: lws will not call back for writing on it */
            c->closing = 1;
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        }
        return;
    }
    lws_callback_on_writable(c->wsi);
}

static void queue(ag_agent *a, ag_conn *c, int kind, const char *text, size_t len)
{
    ag_out *o = malloc(sizeof(*o) + LWS_PRE + len);
    if (!o)
        return;
    o->next = NULL;
    o->kind = kind;
    o->len = len;
    if (len)
        memcpy(o->buf + LWS_PRE, text, len);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_count++;
    wake(a, c);
}

void ag_send(ag_agent *a, ag_conn *c, const char *type, json_t *payload)
{
    char id[48];
    snprintf(id, sizeof(id), "a%lld", (long long)++a->next_id);
    json_t *env = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", id, "type", type, "ts",
                            (json_int_t)ag_now_ns(), "device_id", c->device_id, "payload", payload);
    char *text = json_dumps(env, JSON_COMPACT);
    if (text)
        queue(a, c, AG_OUT_TEXT, text, strlen(text));
    free(text);
    json_decref(env);
}

void ag_send_error(ag_agent *a, ag_conn *c, const char *code, const char *message,
                   const char *ref_id)
{
    ag_send(a, c, "error",
            json_pack("{s:s, s:s, s:s}", "code", code, "message", message, "ref_id",
                      ref_id ? ref_id : ""));
}

void ag_send_invalid(ag_agent *a, ag_conn *c, const char *why, const char *ref_id)
{
    a->n.invalid++;
    ag_send_error(a, c, "invalid", why, ref_id);
}

void ag_send_time_req(ag_agent *a, ag_conn *c)
{
    queue(a, c, AG_OUT_TIME_REQ, NULL, 0);
}

void ag_conn_pause(ag_agent *a, ag_conn *c, int paused)
{
    if (c->paused != paused) {
        c->paused = paused;
        lws_rx_flow_control(c->wsi, !paused);
        if (!paused && cli_tls_unread(c->wsi)) /* records read ahead before the pause */
            unread_add(a, c);
    }
}

/* lws's per-connection deadlines are in whole seconds (lws_set_timeout_us
 * is not exported by Debian's 4.1.6): a timeout in ms, rounded up. */
static int secs(int64_t ms)
{
    return (int)((ms + 999) / 1000);
}

/* The connections that have not said an accepted hello, counted per
 * address. */
static void pending_add(ag_agent *a, ag_conn *c, int delta)
{
    json_t *n = json_object_get(a->pending, c->peer);
    json_int_t v = json_integer_value(n) + delta;
    if (v > 0)
        json_object_set_new(a->pending, c->peer, json_integer(v));
    else
        json_object_del(a->pending, c->peer); /* bounded by the addresses connecting now */
    c->pending = delta > 0;
}

void ag_endpoint_hello_accepted(ag_agent *a, ag_conn *c)
{
    if (c->pending)
        pending_add(a, c, -1);
    if (c->wsi) {
        cli_admit_proven(&a->admit, c->wsi); /* never evicted from now on */
        c->idle_armed_ns = ag_now_ns();
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, secs(a->cfg.idle_timeout_ms));
    }
}

/* Refuses c at once (before anything of it is handled): -1 for lws. */
static int refuse(ag_agent *a, struct lws *wsi, const char *why)
{
    a->n.refused_connections++;
    lws_close_reason(wsi, (enum lws_close_status)1013 /* try again later */, (unsigned char *)why,
                     strlen(why));
    return -1;
}

/* cli_admit evicts wsi, a connection without an accepted hello, for a
 * newcomer: nothing more of it is handled, and its close is counted as an
 * eviction, not as a connection that never said hello. */
static void on_evict(struct lws *wsi)
{
    ag_conn *c = lws_wsi_user(wsi);
    if (c && c->wsi == wsi) { /* an open WebSocket, not one still in its handshakes */
        c->evicted = 1;
        c->closing = 1;
    }
}

/* A new WebSocket: counted, bounded per address, given its hello deadline
 * and, when devices authenticate, its challenge. 0, or -1 to close it. */
static int on_established(ag_agent *a, ag_conn *c, struct lws *wsi)
{
    memset(c, 0, sizeof(*c));
    c->wsi = wsi;
    cli_bucket_init(&c->rate, (double)a->cfg.rate_burst, ag_now_ns());
    c->rx_fd = -1;
    lws_get_peer_simple(wsi, c->peer, sizeof(c->peer));
    if (json_integer_value(json_object_get(a->pending, c->peer)) >= a->cfg.max_pending_per_address)
        return refuse(a, wsi, "too many connections without hello from this address");
    if (a->auth.enabled && cli_auth_nonce(c->nonce))
        return refuse(a, wsi, "no random nonce");
    c->counted = 1;
    c->connected_ns = ag_now_ns();
    a->open_conns++;
    pending_add(a, c, 1);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, secs(a->cfg.hello_timeout_ms));
    cli_tls_send_stamps(wsi); /* TLS only; plain probes keep t1 as written */
    read_ahead(a, c);
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
    if (a->auth.enabled) {
        ag_send(a, c, "challenge",
                json_pack("{s:s, s:s}", "nonce", c->nonce, "alg", "hmac-sha256"));
    }
    return 0;
}

/* Frees what c still holds: its unsent messages and its receive buffer. */
static void conn_free(ag_agent *a, ag_conn *c)
{
    a->rx_held -= (int64_t)c->rx.cap;
    while (c->out_head) {
        ag_out *o = c->out_head;
        c->out_head = o->next;
        free(o);
    }
    c->out_tail = NULL;
    cli_buf_free(&c->rx);
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

int64_t ag_probe_sent_at(const ag_conn *c, int64_t t1)
{
    for (int k = 1; k <= AG_PROBES_KEEP; k++) { /* newest first */
        int i = (c->probe_sent_next - k + AG_PROBES_KEEP) % AG_PROBES_KEEP;
        if (c->probe_sent[i].t1_ns == t1 && t1)
            return c->probe_sent[i].sent_ns;
    }
    return t1;
}

/* Writes the next queued message; returns -1 to close. */
static int write_next(ag_agent *a, ag_conn *c)
{
    unsigned char probe[LWS_PRE + 256];
    ag_out *o = c->out_head;
    if (!o) /* closing: once what was queued (the reason, an error) is sent */
        return c->closing ? -1 : 0;
    c->out_head = o->next;
    if (!c->out_head)
        c->out_tail = NULL;
    c->out_count--;
    unsigned char *p = o->buf + LWS_PRE;
    size_t len = o->len;
    int64_t t1 = 0;
    if (o->kind == AG_OUT_TIME_REQ) {
        t1 = ag_now_ns();
        char id[48];
        snprintf(id, sizeof(id), "a%lld", (long long)++a->next_id);
        int n = snprintf((char *)probe + LWS_PRE, sizeof(probe) - LWS_PRE,
                         "{\"id\":\"%s\",\"type\":\"time_req\",\"ts\":%lld,\"device_id\":\"%s\","
                         "\"payload\":{\"t1\":%lld}}",
                         id, (long long)t1, c->device_id, (long long)t1);
        p = probe + LWS_PRE;
        len = (size_t)n;
    }
    int w = lws_write(c->wsi, p, len, LWS_WRITE_TEXT);
    int64_t sent = t1 ? cli_tls_sent_since(c->wsi, t1) : 0;
    if (sent != t1 && w == (int)len) {
        c->probe_sent[c->probe_sent_next].t1_ns = t1;
        c->probe_sent[c->probe_sent_next].sent_ns = sent;
        c->probe_sent_next = (c->probe_sent_next + 1) % AG_PROBES_KEEP;
    }
    free(o);
    if (w < (int)len)
        return -1;
    if (c->out_head)
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* Appends a fragment to c's message being reassembled, within bounds: a
 * connection without an accepted hello AG_HELLO_MAX (a hello is small: an
 * unauthenticated client pins little), a device agent.max_message_bytes,
 * and every connection's buffers together agent.max_buffered_bytes.
 * Beyond, the rest of the message is not kept (too_large when it ends). */
static int rx_append(ag_agent *a, ag_conn *c, const void *in, size_t len)
{
    size_t limit = c->pending ? AG_HELLO_MAX : (size_t)a->cfg.max_message_bytes;
    size_t cap = c->rx.cap, grown = cli_buf_cap_for(&c->rx, len);
    if (c->rx_too_large)
        return 0;
    if (c->rx.len + len > limit) {
        c->rx_too_large = c->pending ? AG_RX_OVER_HELLO : AG_RX_OVER_MESSAGE;
        return 0;
    }
    if (grown > cap && a->rx_held + (int64_t)(grown - cap) > a->cfg.max_buffered_bytes) {
        c->rx_too_large = AG_RX_OVER_TOTAL;
        return 0;
    }
    int rc = cli_buf_append(&c->rx, in, len);
    a->rx_held += (int64_t)(c->rx.cap - cap);
    return rc;
}

/* After a message: a buffer grown past AG_RX_KEEP (a large media frame)
 * is given back rather than kept for the connection's life. */
static void rx_done(ag_agent *a, ag_conn *c)
{
    c->rx_too_large = 0;
    c->rx.len = 0;
    if (c->rx.cap > AG_RX_KEEP) {
        a->rx_held -= (int64_t)c->rx.cap;
        cli_buf_free(&c->rx);
    }
}

/* The device protocol's lws callback; runs on the lws service thread. */
static int callback_devices(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                            size_t len)
{
    ag_agent *a = lws_context_user(lws_get_context(wsi));
    ag_conn *c = user;
    char uri[128];

    if (cli_admit_callback(&a->admit, wsi, reason))
        return -1; /* agent.max_connections: refused at accept */
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
            strcmp(uri, "/v1/devices") != 0)
            return -1; /* only the device endpoint speaks WebSocket */
        break;
    case LWS_CALLBACK_ESTABLISHED: return on_established(a, c, wsi);
    case LWS_CALLBACK_RECEIVE:
        if (c->closing)
            break; /* evicted, refused or flooding: nothing more of it is handled */
        a->n.rx_bytes += (int64_t)len;
        if (!c->pending) {             /* an accepted device: its idle deadline moves on, */
            int64_t now = ag_now_ns(); /* re-armed at most every tenth of it (a
                                          sorted insert in lws) */
            if (now - c->idle_armed_ns > a->cfg.idle_timeout_ms * 100000) {
                c->idle_armed_ns = now;
                lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, secs(a->cfg.idle_timeout_ms));
            }
        }
        if (c->rx.len == 0 && !c->rx_too_large)
            c->rx_binary = lws_frame_is_binary(wsi);
        if (rx_append(a, c, in, len))
            return -1;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            if (c->rx_too_large) {
                char why[160];
                a->n.too_large++;
                if (c->rx_too_large == AG_RX_OVER_TOTAL)
                    snprintf(why, sizeof(why),
                             "the agent holds %lld bytes of messages being received "
                             "(agent.max_buffered_bytes): dropped",
                             (long long)a->cfg.max_buffered_bytes);
                else
                    snprintf(
                        why, sizeof(why), "message larger than %lld bytes%s: dropped",
                        c->rx_too_large == AG_RX_OVER_HELLO ? (long long)AG_HELLO_MAX
                                                            : (long long)a->cfg.max_message_bytes,
                        c->rx_too_large == AG_RX_OVER_HELLO ? " before an accepted hello" : "");
                ag_send_error(a, c, "too_large", why, NULL);
            } else {
                a->message_cb(a, c, c->rx.data, c->rx.len, c->rx_binary);
            }
            rx_done(a, c);
        }
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        c->closing = 1; /* lws answers it: nothing more of ours goes out */
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: return write_next(a, c);
    case LWS_CALLBACK_CLOSED:
        if (c->counted) {
            a->open_conns--;
            if (c->pending) {
                a->n.no_hello += !c->evicted;
                pending_add(a, c, -1);
            }
        }
        if (c->read_ahead)
            cli_tls_read_ahead(wsi, NULL, NULL);
        unread_remove(a, c);
        a->closed_cb(a, c);
        conn_free(a, c);
        c->wsi = NULL;
        break;
    default: break;
    }
    return 0;
}

static struct lws_protocols protocols[] = {
    {"msrs.v1", callback_devices, sizeof(ag_conn), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* a->client_protocol, set at start */
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void fill_info(ag_agent *a, struct lws_context_creation_info *info, int port)
{
    memset(info, 0, sizeof(*info));
    info->port = port;
    info->iface = strcmp(a->cfg.host, "0.0.0.0") == 0 ? NULL : a->cfg.host;
    info->protocols = protocols;
    info->user = a;
    info->pt_serv_buf_size = 64 * 1024;
    /* no fd_limit_per_thread: lws sizes its table from the open-file limit
     * (raised at start, main.c) and indexes it by descriptor */
    info->options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (a->loop) {
        info->options |= LWS_SERVER_OPTION_LIBEV;
        info->foreign_loops = &a->loop;
    }
    /* the TLS and WebSocket handshakes get the hello's deadline too */
    info->timeout_secs = (unsigned int)secs(a->cfg.hello_timeout_ms);
    cli_tls_apply(&a->tls, info);
}

int ag_endpoint_start(ag_agent *a, char *errstr, size_t errstr_size)
{
    struct lws_context_creation_info info;
    if (a->client_protocol)
        protocols[1] = *a->client_protocol;
    if (cli_admit_init(&a->admit, a->cfg.max_connections, "agent.max_connections", on_evict, errstr,
                       errstr_size))
        return -1;
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
    cli_admit_free(&a->admit); /* after the context: its connections' WSI_DESTROY reads it */
    free(a->unread);
    a->unread = NULL;
    a->unread_len = a->unread_cap = 0;
}
