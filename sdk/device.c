/* device.c — the device SDK (msrs_device.h): one libwebsockets client
 * context, one connection per device, a bounded send queue per device that
 * any thread may fill, the protocol's answers on the client's thread. */
#include "msrs_device.h"

#include <errno.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlsfilter.h"

#define MD_RX_MAX        65536 /* the agent's messages are small JSON texts */
#define MD_DEFAULT_QUEUE (16u << 20)
#define MD_SPARE_MAX     16         /* written messages kept for reuse, per device */
#define MD_SPARE_BYTES   (1u << 20) /* larger ones are freed */
#define MD_PROBE_BYTES   256        /* a time_resp: 250 bytes at most (a 63-byte id, 5 stamps) */

/* Kernel receive stamps, when the program links common/rxstamp.c (weak:
 * the SDK never defines libc's names for the process itself). */
int rxstamp_enable(int fd) __attribute__((weak));
int64_t rxstamp_arrival(int fd, int64_t now_ns) __attribute__((weak));

typedef struct md_msg {
    struct md_msg *next;
    size_t len, cap; /* bytes used and held after LWS_PRE */
    int binary;
    int probe;                  /* a time_resp, made when written: */
    int64_t probe_t1, probe_t2; /* the agent's t1, the device's t2 */
    int64_t hold_ns;            /* t3 is stamped this long before the write (a link) */
    int64_t arrive_ns;          /* a link: the probe reaches the device then; 0: it has */
    int64_t due_ns;             /* a link: not written before (CLOCK_REALTIME); 0: at once */
    int stream;                 /* data: the stream's index (units of it inside); -1: a message */
    int64_t units;              /* its samples, or 1 media packet */
    unsigned char buf[];        /* LWS_PRE, then cap bytes */
} md_msg;

typedef struct md_url {
    char host[256], path[256];
    int port, tls;
} md_url;

/* A device's link wants its socket writable at due_ns (a min-heap entry;
 * stale when the device has since asked for an earlier time). */
typedef struct md_due {
    int64_t due_ns;
    md_device *dev;
} md_due;

struct md_client {
    struct lws_context *ctx;
    md_url url;
    int kernel_stamps;
    md_device *devices;          /* a list, through next */
    lws_sorted_usec_list_t tick; /* ends a md_client_service wait */
    lws_sorted_usec_list_t due;  /* the earliest held message of any device */
    md_due *heap;
    size_t heap_len, heap_cap;
    uint64_t rng; /* reconnect waits */
};

struct md_device {
    md_client *client;
    md_device *next;
    char id[MD_ID_MAX], name[128], version[64], credential[80];
    json_t *caps, *streams; /* for the hello */
    char stream_ids[MD_MAX_STREAMS][MD_ID_MAX];
    size_t stream_count;
    int64_t (*clock_ns)(void *arg, int64_t realtime_ns);
    void (*on_event)(void *arg, md_device *dev, const md_event *ev);
    int64_t (*link_delay_ns)(void *arg, int up);
    void *arg;
    size_t max_queued;

    /* the client's thread only */
    struct lws *wsi;
    int rx_fd;    /* its socket, when the kernel stamps what it receives; -1 */
    md_url where; /* where it connects: the client's url, or a redirect */
    int64_t reconnect_at_ns, backoff_ms;
    int closing, established;
    unsigned char rx[MD_RX_MAX];
    size_t rx_len;
    int rx_overflow;
    int64_t last_down_ns; /* a link: the last probe's simulated arrival */
    /* the last clock answer written whole: its t1, and its t3 as it really
     * was (when its write began), for the next answer (prev_t1, prev_t3) */
    int64_t prev_t1, prev_t3;
    int has_prev;
    int64_t armed_ns; /* a link: the heap wakes it then; 0: not armed */

    /* shared with other threads, under mu */
    pthread_mutex_t mu;
    md_msg *head, *tail, *probes, *probes_tail;
    md_msg *spare; /* written messages, for reuse */
    int spare_count;
    size_t queued;
    int64_t last_up_ns; /* a link: the last message's due time */
    int registered, slowed;
    int64_t resume[MD_MAX_STREAMS];
    int64_t discarded[MD_MAX_STREAMS]; /* accepted, then the connection closed first */
    char session[MD_ID_MAX];
    int64_t start_at, stop_at;
};

/* The client md_client_service is running on this thread, if any: a send
 * from inside a callback asks for writable at once instead of waking the
 * loop (a wake makes the loop look at every device). */
static __thread md_client *serving;

static int64_t now_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t host_clock(void *arg, int64_t realtime_ns)
{
    (void)arg;
    return realtime_ns;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* xorshift64*: uniform in [0, 1) */
static double unit_random(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (double)((*state * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static int fail(char *errstr, size_t size, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *errstr, size_t size, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (errstr && size)
        vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
    return code;
}

static int parse_url(const char *url, md_url *u)
{
    const char *rest;
    memset(u, 0, sizeof(*u));
    if (!url)
        return -1;
    if (strncmp(url, "wss://", 6) == 0)
        u->tls = 1, rest = url + 6;
    else if (strncmp(url, "ws://", 5) == 0)
        rest = url + 5;
    else
        return -1;
    const char *slash = strchr(rest, '/'), *colon = strchr(rest, ':');
    const char *end = slash ? slash : rest + strlen(rest);
    if (!colon || colon > end || colon == rest || (size_t)(colon - rest) >= sizeof(u->host))
        return -1;
    memcpy(u->host, rest, (size_t)(colon - rest));
    char *num_end;
    long port = strtol(colon + 1, &num_end, 10);
    if (num_end != end || port < 1 || port > 65535)
        return -1;
    u->port = (int)port;
    snprintf(u->path, sizeof(u->path), "%s", slash ? slash : "/v1/devices");
    return 0;
}

static int valid_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n >= MD_ID_MAX)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n;
}

int md_auth_proof(const char *credential, const char *nonce, const char *device_id, char out[65])
{
    const char *dot = credential ? strchr(credential, '.') : NULL;
    unsigned char secret[32], mac[32];
    unsigned int mac_len = 0;
    if (!dot || strlen(dot + 1) != 64 || !nonce || !device_id)
        return MD_ERR_INVALID;
    for (int i = 0; i < 32; i++) {
        unsigned int b;
        if (sscanf(dot + 1 + 2 * i, "%2x", &b) != 1)
            return MD_ERR_INVALID;
        secret[i] = (unsigned char)b;
    }
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "%s:%s", nonce, device_id);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return MD_ERR_INVALID;
    HMAC(EVP_sha256(), secret, sizeof(secret), (const unsigned char *)msg, (size_t)n, mac,
         &mac_len);
    OPENSSL_cleanse(secret, sizeof(secret));
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return MD_OK;
}

/* ------------------------------------------------------------- queueing */

/* A message of len bytes: the smallest written one of this device that
 * fits, reused, or a new one (capacity a power of two from 256, so reuse
 * finds it again). Under d->mu. NULL when out of memory. */
static md_msg *msg_take(md_device *d, size_t len)
{
    md_msg *m = NULL, **best = NULL;
    for (md_msg **p = &d->spare; *p; p = &(*p)->next) /* the smallest that fits */
        if ((*p)->cap >= len && (!best || (*p)->cap < (*best)->cap))
            best = p;
    if (best) {
        m = *best;
        *best = m->next;
        d->spare_count--;
    } else {
        size_t cap = MD_PROBE_BYTES;
        while (cap < len)
            cap *= 2;
        if (!(m = malloc(sizeof(*m) + LWS_PRE + cap)))
            return NULL;
        m->cap = cap;
    }
    size_t cap = m->cap;
    memset(m, 0, sizeof(*m));
    m->cap = cap;
    m->len = len;
    m->stream = -1;
    return m;
}

/* Gives m back for reuse, or frees it. Under d->mu. */
static void msg_give(md_device *d, md_msg *m)
{
    if (d->spare_count < MD_SPARE_MAX && m->cap <= MD_SPARE_BYTES) {
        m->next = d->spare;
        d->spare = m;
        d->spare_count++;
    } else {
        free(m);
    }
}

static void queue_free(md_msg **head, md_msg **tail)
{
    while (*head) {
        md_msg *m = *head;
        *head = m->next;
        free(m);
    }
    if (tail)
        *tail = NULL;
}

static void push(md_msg **head, md_msg **tail, md_msg *m)
{
    m->next = NULL;
    if (*tail)
        (*tail)->next = m;
    else
        *head = m;
    *tail = m;
}

/* A link's due time for a message that starts its way at t_ns in one
 * direction: the link's delay later, and after the last one (*last_ns,
 * updated), so a direction keeps its order as TCP does. */
static int64_t link_due(md_device *d, int up, int64_t t_ns, int64_t *last_ns)
{
    int64_t due = t_ns + d->link_delay_ns(d->arg, up);
    if (due <= *last_ns)
        due = *last_ns + 1;
    return *last_ns = due;
}

/* Why n more bytes of data may not be queued now (MD_ERR_NOT_REGISTERED,
 * MD_ERR_FULL), or MD_OK. Under d->mu. */
static int refusal(const md_device *d, size_t n)
{
    if (!d->registered)
        return MD_ERR_NOT_REGISTERED;
    return n > d->max_queued || d->queued > d->max_queued - n ? MD_ERR_FULL : MD_OK;
}

/* Asks for d's socket to be writable: at once on the client's thread
 * inside md_client_service, otherwise by waking the loop. Any thread. */
static void kick(md_device *d)
{
    if (serving == d->client) {
        if (d->wsi)
            lws_callback_on_writable(d->wsi);
    } else {
        lws_cancel_service(d->client->ctx);
    }
}

/* Queues m (m->len bytes), checked by refusal unless force (the protocol's
 * own answers: hello, acks); m is given back when refused. Any thread. */
static int queue(md_device *d, md_msg *m, int force)
{
    pthread_mutex_lock(&d->mu);
    int rc = force ? MD_OK : refusal(d, m->len);
    if (rc == MD_OK) {
        if (d->link_delay_ns)
            m->due_ns = link_due(d, 1, now_realtime_ns(), &d->last_up_ns);
        push(&d->head, &d->tail, m);
        d->queued += m->len;
    } else {
        msg_give(d, m);
    }
    pthread_mutex_unlock(&d->mu);
    if (rc == MD_OK)
        kick(d);
    return rc;
}

/* Queues text (client's thread or any). */
static int send_text(md_device *d, const char *text, size_t len, int force)
{
    pthread_mutex_lock(&d->mu);
    md_msg *m = msg_take(d, len);
    pthread_mutex_unlock(&d->mu);
    if (!m)
        return MD_ERR_NOMEM;
    memcpy(m->buf + LWS_PRE, text, len);
    return queue(d, m, force);
}

static void send_json(md_device *d, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (text)
        send_text(d, text, strlen(text), 1);
    free(text);
    json_decref(j);
}

static void emit(md_device *d, md_event ev)
{
    if (d->on_event)
        d->on_event(d->arg, d, &ev);
}

/* ------------------------------------------------------------ receiving */

static void send_hello(md_device *d, const char *nonce)
{
    json_t *payload = json_pack("{s:s, s:O, s:O, s:s}", "name", d->name, "capabilities", d->caps,
                                "streams", d->streams, "version", d->version);
    if (nonce && *d->credential) {
        char proof[65];
        if (md_auth_proof(d->credential, nonce, d->id, proof) == MD_OK)
            json_object_set_new(payload, "auth",
                                json_pack("{s:I, s:s}", "generation",
                                          (json_int_t)strtoll(d->credential, NULL, 10), "proof",
                                          proof));
    }
    send_json(d, json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", "hello", "type", "hello", "ts",
                           (json_int_t)d->clock_ns(d->arg, now_realtime_ns()), "device_id", d->id,
                           "payload", payload));
}

static void on_register(md_device *d, json_t *payload)
{
    int accepted = json_is_true(json_object_get(payload, "accepted"));
    json_t *resume = json_object_get(payload, "resume");
    pthread_mutex_lock(&d->mu);
    d->registered = accepted;
    for (size_t i = 0; i < d->stream_count; i++) {
        json_t *r = json_object_get(resume, d->stream_ids[i]);
        d->resume[i] = json_is_integer(r) ? json_integer_value(r) : -1;
    }
    pthread_mutex_unlock(&d->mu);
    if (accepted) {
        d->backoff_ms = 0;
        emit(d, (md_event){.kind = MD_EV_REGISTERED});
        return;
    }
    const char *reason = json_string_value(json_object_get(payload, "reason")) ?: "";
    const char *redirect = json_string_value(json_object_get(payload, "redirect"));
    md_url to;
    if (redirect && parse_url(redirect, &to) == 0)
        d->where = to; /* the supervisor placed it on another node */
    else
        redirect = NULL;
    emit(d, (md_event){
                .kind = MD_EV_REFUSED, .code = reason, .message = reason, .redirect = redirect});
    md_device_reconnect(d); /* closed on the next writable callback; reconnects after */
}

static void on_session(md_device *d, const char *type, json_t *m, json_t *payload)
{
    const char *session = json_string_value(json_object_get(payload, "session_id"));
    int start = strcmp(type, "start") == 0;
    int64_t at = json_integer_value(json_object_get(payload, start ? "start_at" : "stop_at"));
    if (session && valid_id(session)) {
        pthread_mutex_lock(&d->mu);
        if (start) {
            if (strcmp(d->session, session) != 0) { /* a resend after a rejoin keeps the stop */
                snprintf(d->session, sizeof(d->session), "%s", session);
                d->stop_at = INT64_MAX;
            }
            d->start_at = at;
        } else if (strcmp(session, d->session) == 0) {
            d->stop_at = at;
        }
        pthread_mutex_unlock(&d->mu);
        emit(d, (md_event){
                    .kind = start ? MD_EV_START : MD_EV_STOP, .session_id = session, .at_ns = at});
    }
    send_json(d, json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "ack", "device_id", d->id, "payload",
                           "ref_id", json_string_value(json_object_get(m, "id")) ?: "", "status",
                           "ok"));
}

/* A clock probe that reached the host at arrival_ns: t2 then (with a link:
 * at its simulated arrival, the downlink's delay later), its answer ahead
 * of queued data (with a link: made when the probe arrives, then in order
 * behind what was queued before, next_message). */
static void on_probe(md_device *d, int64_t t1, int64_t arrival_ns)
{
    int64_t at = d->link_delay_ns ? link_due(d, 0, arrival_ns, &d->last_down_ns) : arrival_ns;
    int64_t t2 = d->clock_ns(d->arg, at);
    pthread_mutex_lock(&d->mu);
    md_msg *r = msg_take(d, MD_PROBE_BYTES);
    if (r) {
        r->probe = 1;
        r->probe_t1 = t1;
        r->probe_t2 = t2;
        r->arrive_ns = d->link_delay_ns ? at : 0;
        push(&d->probes, &d->probes_tail, r);
    }
    pthread_mutex_unlock(&d->mu);
    if (r)
        lws_callback_on_writable(d->wsi);
}

static void on_text(md_device *d, const char *text, size_t len, int64_t arrival_ns)
{
    json_t *m = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(m, "type"));
    json_t *payload = json_object_get(m, "payload");
    if (!type) {
        json_decref(m);
        return;
    }
    if (strcmp(type, "time_req") == 0) {
        json_t *t1 = json_object_get(payload, "t1");
        if (json_is_integer(t1)) /* an answer without it could not be matched */
            on_probe(d, json_integer_value(t1), arrival_ns);
    } else if (strcmp(type, "challenge") == 0) {
        send_hello(d, json_string_value(json_object_get(payload, "nonce")) ?: "");
    } else if (strcmp(type, "register") == 0) {
        on_register(d, payload);
    } else if (strcmp(type, "start") == 0 || strcmp(type, "stop") == 0) {
        on_session(d, type, m, payload);
    } else if (strcmp(type, "flow") == 0) {
        int slow =
            strcmp(json_string_value(json_object_get(payload, "state")) ?: "", "slow_down") == 0;
        pthread_mutex_lock(&d->mu);
        int changed = slow != d->slowed;
        d->slowed = slow;
        pthread_mutex_unlock(&d->mu);
        if (changed)
            emit(d, (md_event){.kind = MD_EV_FLOW, .slow = slow});
    } else if (strcmp(type, "error") == 0) {
        emit(d,
             (md_event){.kind = MD_EV_ERROR,
                        .code = json_string_value(json_object_get(payload, "code")) ?: "",
                        .message = json_string_value(json_object_get(payload, "message")) ?: ""});
    }
    json_decref(m);
}

/* ------------------------------------------------------------- the loop */

/* 0, or -1 when out of memory. */
static int heap_push(md_client *c, md_due e)
{
    if (c->heap_len == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 64;
        md_due *h = realloc(c->heap, cap * sizeof(*h));
        if (!h)
            return -1;
        c->heap = h;
        c->heap_cap = cap;
    }
    size_t i = c->heap_len++;
    while (i > 0 && c->heap[(i - 1) / 2].due_ns > e.due_ns) {
        c->heap[i] = c->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    c->heap[i] = e;
    return 0;
}

static md_due heap_pop(md_client *c)
{
    md_due top = c->heap[0], last = c->heap[--c->heap_len];
    size_t i = 0;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= c->heap_len)
            break;
        if (k + 1 < c->heap_len && c->heap[k + 1].due_ns < c->heap[k].due_ns)
            k++;
        if (c->heap[k].due_ns >= last.due_ns)
            break;
        c->heap[i] = c->heap[k];
        i = k;
    }
    if (c->heap_len)
        c->heap[i] = last;
    return top;
}

static void on_due(lws_sorted_usec_list_t *sul);

static void schedule_due(md_client *c)
{
    if (!c->heap_len)
        return;
    int64_t wait_ns = c->heap[0].due_ns - now_realtime_ns();
    lws_sul_schedule(c->ctx, 0, &c->due, on_due, wait_ns > 0 ? (lws_usec_t)(wait_ns / 1000) : 0);
}

/* Held messages that are due: their devices' sockets are asked for. */
static void on_due(lws_sorted_usec_list_t *sul)
{
    md_client *c = lws_container_of(sul, md_client, due);
    int64_t now = now_realtime_ns();
    while (c->heap_len && c->heap[0].due_ns <= now) {
        md_due e = heap_pop(c);
        if (e.dev && e.dev->armed_ns == e.due_ns) {
            e.dev->armed_ns = 0;
            if (e.dev->wsi)
                lws_callback_on_writable(e.dev->wsi);
        }
    }
    schedule_due(c);
}

/* d's next message is held until due_ns: wake it then. */
static void arm(md_device *d, int64_t due_ns)
{
    md_client *c = d->client;
    if (d->armed_ns && d->armed_ns <= due_ns)
        return;
    if (heap_push(c, (md_due){due_ns, d}))
        return; /* out of memory: the next message or md_client_wake looks again */
    d->armed_ns = due_ns;
    if (c->heap[0].due_ns == due_ns)
        schedule_due(c);
}

/* The next attempt: 1 s after a registration, doubling to 8 s while
 * attempts fail, each drawn in [wait/2, wait) so a fleet that lost its
 * agent together does not come back together. */
static void reconnect_later(md_device *d)
{
    d->backoff_ms = d->backoff_ms ? (d->backoff_ms * 2 > 8000 ? 8000 : d->backoff_ms * 2) : 1000;
    double wait_ms = (double)d->backoff_ms * (0.5 + 0.5 * unit_random(&d->client->rng));
    d->reconnect_at_ns = mono_ns() + (int64_t)(wait_ms * 1e6);
}

static void connect_device(md_device *d);

static void closed(md_device *d)
{
    pthread_mutex_lock(&d->mu);
    d->registered = d->slowed = 0;
    /* data accepted and not written: lost, and said (md_device_discarded);
     * the agent counts its numbers as a gap */
    for (md_msg *m = d->head; m; m = m->next)
        if (m->stream >= 0)
            d->discarded[m->stream] += m->units;
    queue_free(&d->head, &d->tail);
    queue_free(&d->probes, &d->probes_tail);
    d->queued = 0;
    pthread_mutex_unlock(&d->mu);
    d->wsi = NULL;
    d->rx_fd = -1;
    d->closing = d->established = 0;
    d->rx_len = 0;
    d->armed_ns = 0;
    reconnect_later(d);
    emit(d, (md_event){.kind = MD_EV_CLOSED});
}

/* The next message to write, taken from its queue: a probe's answer ahead
 * of data (with a link: whichever is due first, as the link keeps their
 * order); NULL when none is ready, *wait_ns then when one will be (0:
 * none). With a link a probe's answer is made when the probe reaches the
 * device, and leaves the uplink's delay later, behind what the device
 * queued before (as the devsim of before did). Under d->mu. */
static md_msg *next_message(md_device *d, int64_t now, int64_t *wait_ns)
{
    md_msg *p = d->probes, *h = d->head, *m;
    int64_t wait = 0;
    *wait_ns = 0;
    if (p && p->arrive_ns) { /* a link: the probe is still on its way */
        if (p->arrive_ns > now) {
            wait = p->arrive_ns;
            p = NULL;
        } else { /* it has arrived: the answer is made now */
            p->due_ns = link_due(d, 1, now, &d->last_up_ns);
            p->hold_ns = p->due_ns - now;
            p->arrive_ns = 0;
        }
    }
    m = p && (!d->link_delay_ns || !h || p->due_ns <= h->due_ns) ? p : h;
    if (!m || m->due_ns > now) {
        *wait_ns = !m || (wait && wait < m->due_ns) ? wait : m->due_ns;
        return NULL;
    }
    if (m == p) {
        if (!(d->probes = p->next))
            d->probes_tail = NULL;
    } else {
        if (!(d->head = h->next))
            d->tail = NULL;
        d->queued -= h->len;
    }
    return m;
}

/* The message at m->buf + LWS_PRE as one masked WebSocket frame (RFC 6455
 * 5.2, 5.3), its header written into the LWS_PRE headroom in front; its
 * first byte, or NULL when no masking key could be drawn. lws 4.1.6 masks a
 * client's frame one byte per step through its connection struct (~5
 * cycles a byte: ~58 % of msrs-devsim's CPU sending 8 x 100 Mbit/s of
 * video, bench/README.md); eight bytes a step it is ~1 % of that. The key
 * is OpenSSL's RAND_bytes, as unpredictable as the RFC asks. */
static unsigned char *frame_masked(md_msg *m, size_t *frame_len)
{
    unsigned char *payload = m->buf + LWS_PRE, key[8];
    size_t len = m->len, ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
    unsigned char *h = payload - (2 + ext + 4);
    if (RAND_bytes(key, 4) != 1)
        return NULL;
    memcpy(key + 4, key, 4);
    h[0] = 0x80 | (m->binary ? 0x2 : 0x1); /* FIN, binary or text */
    h[1] = 0x80 | (unsigned char)(ext == 0 ? len : ext == 2 ? 126 : 127);
    for (size_t i = 0; i < ext; i++)
        h[2 + i] = (unsigned char)((uint64_t)len >> (8 * (ext - 1 - i)));
    memcpy(h + 2 + ext, key, 4);
    uint64_t k, w;
    memcpy(&k, key, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, payload + i, 8);
        w ^= k;
        memcpy(payload + i, &w, 8);
    }
    for (; i < len; i++)
        payload[i] ^= key[i & 3];
    *frame_len = (size_t)(payload - h) + len;
    return h;
}

static int writeable(md_device *d, struct lws *wsi)
{
    if (d->closing)
        return -1;
    int64_t now = d->link_delay_ns ? now_realtime_ns() : 0, wait_ns;
    pthread_mutex_lock(&d->mu);
    md_msg *m = next_message(d, now, &wait_ns);
    int more = m && (d->probes || d->head);
    pthread_mutex_unlock(&d->mu);
    if (!m) {
        if (wait_ns)
            arm(d, wait_ns);
        return 0;
    }
    int64_t t3 = 0, t3_at = 0;
    if (m->probe) {
        /* t3 now, less what a link held it (its simulated departure); the
         * previous answer's t3 as it really was, now that it is known */
        t3_at = now_realtime_ns() - m->hold_ns;
        t3 = d->clock_ns(d->arg, t3_at);
        t3 = t3 < m->probe_t2 ? m->probe_t2 : t3;
        char prev[64] = "";
        if (d->has_prev && d->prev_t3 <= t3) /* a link's holds may differ: never after t3 */
            snprintf(prev, sizeof(prev), ",\"prev_t1\":%lld,\"prev_t3\":%lld",
                     (long long)d->prev_t1, (long long)d->prev_t3);
        d->has_prev = 0;
        int n =
            snprintf((char *)m->buf + LWS_PRE, m->cap,
                     "{\"type\":\"time_resp\",\"device_id\":\"%s\",\"payload\":{\"t1\":%lld,"
                     "\"t2\":%lld,\"t3\":%lld%s}}",
                     d->id, (long long)m->probe_t1, (long long)m->probe_t2, (long long)t3, prev);
        m->len = n > 0 && (size_t)n < m->cap ? (size_t)n : 0;
    }
    /* framed here; lws_write's raw path (LWS_WRITE_HTTP) sends the bytes
     * as they are, keeping what the socket does not take for the next
     * writeable, in order */
    size_t frame_len = 0;
    unsigned char *frame = m->len ? frame_masked(m, &frame_len) : NULL;
    int64_t began = m->probe ? now_realtime_ns() : 0; /* a clock answer's write */
    int w = !m->len ? 0 : frame ? lws_write(wsi, frame, frame_len, LWS_WRITE_HTTP) : -1;
    if (m->probe && m->len && w >= 0 && !lws_partial_buffered(wsi)) {
        /* over TLS the encrypted write's start (tlsfilter.h): what
         * encrypting took is not counted as the uplink's delay. t3 plus
         * the time since it was stamped: one reading of the device's
         * clock, whose every reading may err (devsim draws noise for
         * each), not a second one */
        d->prev_t1 = m->probe_t1;
        d->prev_t3 = t3 + (cli_tls_sent_since(wsi, began) - m->hold_ns - t3_at);
        d->has_prev = 1;
    }
    pthread_mutex_lock(&d->mu);
    msg_give(d, m);
    pthread_mutex_unlock(&d->mu);
    if (w < 0)
        return -1;
    if (more)
        lws_callback_on_writable(wsi);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    md_device *d = user;
    if (!d && (reason == LWS_CALLBACK_CLIENT_ESTABLISHED || reason == LWS_CALLBACK_CLIENT_RECEIVE ||
               reason == LWS_CALLBACK_CLIENT_WRITEABLE))
        return -1; /* a removed device's connection: close it */
    if (!d && reason != LWS_CALLBACK_EVENT_WAIT_CANCELLED)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        d->established = 1;
        d->has_prev = 0;
        cli_tls_send_stamps(wsi); /* TLS only: when each answer really left */
        d->rx_len = 0;
        d->rx_fd = -1;
        if (d->client->kernel_stamps && rxstamp_enable(lws_get_socket_fd(wsi)) == 0)
            d->rx_fd = lws_get_socket_fd(wsi);
        if (!*d->credential) /* otherwise hello answers the agent's challenge */
            send_hello(d, NULL);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE: {
        if (d->rx_len + len <= sizeof(d->rx)) {
            memcpy(d->rx + d->rx_len, in, len);
            d->rx_len += len;
        } else {
            d->rx_overflow = 1;
        }
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            int64_t now = now_realtime_ns();
            if (!d->rx_overflow)
                on_text(d, (const char *)d->rx, d->rx_len,
                        d->rx_fd >= 0 ? rxstamp_arrival(d->rx_fd, now) : now);
            d->rx_len = 0;
            d->rx_overflow = 0;
        }
        break;
    }
    case LWS_CALLBACK_CLIENT_WRITEABLE: return writeable(d, wsi);
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_CLOSED: closed(d); break;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
        /* md_client_wake, or another thread queued data */
        md_client *c = lws_context_user(lws_get_context(wsi));
        for (md_device *x = c ? c->devices : NULL; x; x = x->next) {
            pthread_mutex_lock(&x->mu);
            int pending = x->head || x->probes;
            pthread_mutex_unlock(&x->mu);
            if (x->wsi && pending)
                lws_callback_on_writable(x->wsi);
        }
        break;
    }
    default: break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {{"msrs.v1", callback, 0, 65536, 0, NULL, 0},
                                                 {NULL, NULL, 0, 0, 0, NULL, 0}};

static void connect_device(md_device *d)
{
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof(i));
    i.context = d->client->ctx;
    i.address = d->where.host;
    i.port = d->where.port;
    i.path = d->where.path;
    i.host = i.address;
    i.origin = i.address;
    i.protocol = "msrs.v1";
    i.ssl_connection = d->where.tls ? LCCSCF_USE_SSL : 0;
    i.userdata = d;
    i.pwsi = &d->wsi;
    d->reconnect_at_ns = 0;
    if (!lws_client_connect_via_info(&i)) {
        d->wsi = NULL;
        reconnect_later(d);
    }
}

md_client *md_client_new(const md_client_config *cfg, char *errstr, size_t errstr_size)
{
    md_client *c = calloc(1, sizeof(*c));
    if (!c) {
        fail(errstr, errstr_size, MD_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!cfg || parse_url(cfg->url, &c->url)) {
        fail(errstr, errstr_size, MD_ERR_INVALID,
             "url '%s': expected wss://HOST:PORT[/PATH] (ws:// unencrypted)",
             cfg && cfg->url ? cfg->url : "");
        free(c);
        return NULL;
    }
    c->kernel_stamps = !cfg->stamp_on_read && rxstamp_enable && rxstamp_arrival;
    c->rng = (uint64_t)now_realtime_ns() ^ (uint64_t)(uintptr_t)c ^ 0x9E3779B97F4A7C15ULL;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL); /* the SDK's caller prints, not lws */
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = c;
    info.fd_limit_per_thread = cfg->max_connections;
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (cfg->ca_file && *cfg->ca_file)
        info.client_ssl_ca_filepath = cfg->ca_file;
    c->ctx = lws_create_context(&info);
    if (!c->ctx) {
        fail(errstr, errstr_size, MD_ERR_TRANSPORT,
             "libwebsockets could not start a client context%s%s",
             cfg->ca_file && *cfg->ca_file ? " (CA file " : "",
             cfg->ca_file && *cfg->ca_file ? cfg->ca_file : "");
        if (cfg->ca_file && *cfg->ca_file && errstr && errstr_size > strlen(errstr) + 1)
            strncat(errstr, ")", errstr_size - strlen(errstr) - 1);
        free(c);
        return NULL;
    }
    return c;
}

static void tick(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* lws_service returns after running it */
}

int md_client_service(md_client *c, int timeout_ms)
{
    int64_t now = mono_ns();
    for (md_device *d = c->devices; d; d = d->next)
        if (!d->wsi && d->reconnect_at_ns && now >= d->reconnect_at_ns)
            connect_device(d);
    /* lws 4 waits until its next timer whatever timeout lws_service is
     * given: the wait is bounded by a timer of ours */
    lws_sul_schedule(c->ctx, 0, &c->tick, tick,
                     (lws_usec_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000);
    serving = c;
    int rc = lws_service(c->ctx, 0);
    serving = NULL;
    return rc < 0 ? MD_ERR_TRANSPORT : MD_OK;
}

void md_client_wake(md_client *c)
{
    if (c)
        lws_cancel_service(c->ctx);
}

struct lws_context *md_client_lws_context(md_client *c)
{
    return c->ctx;
}

void md_client_destroy(md_client *c)
{
    if (!c)
        return;
    while (c->devices)
        md_device_remove(c->devices);
    lws_context_destroy(c->ctx);
    free(c->heap);
    free(c);
}

md_device *md_device_add(md_client *c, const md_device_config *cfg, char *errstr,
                         size_t errstr_size)
{
    if (!valid_id(cfg->device_id)) {
        fail(errstr, errstr_size, MD_ERR_INVALID,
             "device_id '%s': expected 1-63 of [A-Za-z0-9._:-]", cfg->device_id ?: "");
        return NULL;
    }
    if (cfg->stream_count < 1 || cfg->stream_count > MD_MAX_STREAMS) {
        fail(errstr, errstr_size, MD_ERR_INVALID, "device %s: expected 1-%d streams, got %zu",
             cfg->device_id, MD_MAX_STREAMS, cfg->stream_count);
        return NULL;
    }
    char proof[65];
    if (cfg->credential && *cfg->credential &&
        md_auth_proof(cfg->credential, "0", cfg->device_id, proof) != MD_OK) {
        fail(errstr, errstr_size, MD_ERR_INVALID,
             "device %s: credential: expected G.HEX (msrs devices credential ID)", cfg->device_id);
        return NULL;
    }
    md_device *d = calloc(1, sizeof(*d));
    if (!d) {
        fail(errstr, errstr_size, MD_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->client = c;
    d->rx_fd = -1;
    snprintf(d->id, sizeof(d->id), "%s", cfg->device_id);
    snprintf(d->name, sizeof(d->name), "%s", cfg->name ? cfg->name : cfg->device_id);
    snprintf(d->version, sizeof(d->version), "%s", cfg->version ? cfg->version : "");
    snprintf(d->credential, sizeof(d->credential), "%s", cfg->credential ? cfg->credential : "");
    d->caps = json_array();
    d->streams = json_array();
    for (size_t i = 0; i < cfg->capability_count; i++)
        json_array_append_new(d->caps, json_string(cfg->capabilities[i]));
    for (size_t i = 0; i < cfg->stream_count; i++) {
        const md_stream *s = &cfg->streams[i];
        if (!valid_id(s->stream_id)) {
            fail(errstr, errstr_size, MD_ERR_INVALID,
                 "device %s: streams[%zu].stream_id '%s': expected 1-63 of [A-Za-z0-9._:-]",
                 cfg->device_id, i, s->stream_id ?: "");
            md_device_remove(d);
            return NULL;
        }
        snprintf(d->stream_ids[i], MD_ID_MAX, "%s", s->stream_id);
        json_array_append_new(d->streams,
                              json_pack("{s:s, s:s, s:f, s:i, s:s}", "stream_id", s->stream_id,
                                        "type", s->type ?: "", "rate_hz", s->rate_hz, "channels",
                                        s->channels, "format", s->format ?: ""));
        d->resume[i] = -1;
    }
    d->stream_count = cfg->stream_count;
    d->clock_ns = cfg->clock_ns ? cfg->clock_ns : host_clock;
    d->on_event = cfg->on_event;
    d->link_delay_ns = cfg->link_delay_ns;
    d->arg = cfg->arg;
    d->max_queued = cfg->max_queued_bytes ? cfg->max_queued_bytes : MD_DEFAULT_QUEUE;
    d->where = c->url;
    d->stop_at = INT64_MAX;
    d->next = c->devices;
    c->devices = d;
    connect_device(d);
    return d;
}

void md_device_reconnect(md_device *d)
{
    if (!d->wsi || !d->established)
        return;     /* not connected (yet): a new connection is on its way */
    d->closing = 1; /* the next writable callback closes it */
    lws_callback_on_writable(d->wsi);
}

void md_device_remove(md_device *d)
{
    if (!d)
        return;
    md_client *c = d->client;
    if (c) {
        for (md_device **p = &c->devices; *p; p = &(*p)->next)
            if (*p == d) {
                *p = d->next;
                break;
            }
        for (size_t i = 0; i < c->heap_len; i++)
            if (c->heap[i].dev == d)
                c->heap[i].dev = NULL; /* skipped when it comes up */
        if (d->wsi) {
            /* lws calls back CLOSED for this wsi: it must not reach d */
            lws_set_wsi_user(d->wsi, NULL);
            lws_set_timeout(d->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        }
    }
    queue_free(&d->head, &d->tail);
    queue_free(&d->probes, &d->probes_tail);
    queue_free(&d->spare, NULL);
    json_decref(d->caps);
    json_decref(d->streams);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* --------------------------------------------------------- any thread */

/* The index of stream_id among d's streams, or -1. */
static int stream_index(const md_device *d, const char *stream_id)
{
    for (size_t i = 0; i < d->stream_count; i++)
        if (strcmp(d->stream_ids[i], stream_id) == 0)
            return (int)i;
    return -1;
}

/* Queues a binary frame of stream_id holding units: 4-byte big-endian
 * header length, the header, the body (body_len bytes, written by fill
 * into the frame). */
static int send_binary(md_device *d, const char *stream_id, int64_t units, const char *hdr,
                       size_t hl, size_t body_len,
                       void (*fill)(unsigned char *out, const void *arg), const void *arg)
{
    size_t total = 4 + hl + body_len;
    pthread_mutex_lock(&d->mu); /* refused before any work is spent on it */
    int rc = refusal(d, total);
    md_msg *msg = rc == MD_OK ? msg_take(d, total) : NULL;
    pthread_mutex_unlock(&d->mu);
    if (rc != MD_OK)
        return rc;
    if (!msg)
        return MD_ERR_NOMEM;
    unsigned char *p = msg->buf + LWS_PRE;
    msg->binary = 1;
    msg->stream = stream_index(d, stream_id);
    msg->units = units;
    p[0] = (unsigned char)(hl >> 24), p[1] = (unsigned char)(hl >> 16);
    p[2] = (unsigned char)(hl >> 8), p[3] = (unsigned char)hl;
    memcpy(p + 4, hdr, hl);
    fill(p + 4 + hl, arg);
    return queue(d, msg, 0); /* checked again: it may have changed meanwhile */
}

typedef struct samples_body {
    const int64_t *t;
    const double *values;
    size_t n;
    int channels;
} samples_body;

/* little-endian int64 times, then float64 values, row-major
 * (docs/protocol.md, Binary frames: Samples) */
static void fill_samples(unsigned char *out, const void *arg)
{
    const samples_body *b = arg;
    for (size_t i = 0; i < b->n; i++, out += 8) {
        uint64_t u = (uint64_t)b->t[i];
        for (int k = 0; k < 8; k++)
            out[k] = (unsigned char)(u >> (8 * k));
    }
    for (size_t i = 0; i < b->n * (size_t)b->channels; i++, out += 8) {
        uint64_t u;
        memcpy(&u, &b->values[i], 8);
        for (int k = 0; k < 8; k++)
            out[k] = (unsigned char)(u >> (8 * k));
    }
}

typedef struct media_body {
    const void *prefix, *data;
    size_t prefix_len, len;
} media_body;

static void fill_media(unsigned char *out, const void *arg)
{
    const media_body *b = arg;
    if (b->prefix_len)
        memcpy(out, b->prefix, b->prefix_len);
    if (b->len)
        memcpy(out + b->prefix_len, b->data, b->len);
}

int md_device_send_samples(md_device *d, const char *stream_id, int64_t seq, const int64_t *t,
                           const double *values, size_t n, int channels)
{
    char session[MD_ID_MAX], hdr[512];
    if (!stream_id || !valid_id(stream_id) || !t || !values || n < 1 || n > 65536 || channels < 1 ||
        channels > 1024 || seq < 0)
        return MD_ERR_INVALID;
    md_device_session_at(d, t[0], session, sizeof(session));
    int hl = snprintf(hdr, sizeof(hdr),
                      "{\"type\":\"samples\",\"stream_id\":\"%s\",\"seq\":%lld,\"n\":%zu,"
                      "\"channels\":%d,\"session_id\":\"%s\"}",
                      stream_id, (long long)seq, n, channels, session);
    if (hl < 0 || (size_t)hl >= sizeof(hdr))
        return MD_ERR_INVALID;
    samples_body b = {t, values, n, channels};
    return send_binary(d, stream_id, (int64_t)n, hdr, (size_t)hl, n * 8 * (1 + (size_t)channels),
                       fill_samples, &b);
}

int md_device_send_media(md_device *d, const md_media *m, const void *data, size_t len)
{
    char session[MD_ID_MAX], hdr[768];
    if (!m->stream_id || !m->codec || !valid_id(m->stream_id) || !valid_id(m->codec) ||
        (len && !data) || (m->prefix_len && !m->prefix))
        return MD_ERR_INVALID;
    md_device_session_at(d, m->device_time_ns, session, sizeof(session));
    int hl =
        snprintf(hdr, sizeof(hdr),
                 "{\"stream_id\":\"%s\",\"codec\":\"%s\",\"pts\":%lld,\"keyframe\":%s,"
                 "\"seq\":%lld,\"ts\":%lld,\"width\":%d,\"height\":%d,\"session_id\":\"%s\"}",
                 m->stream_id, m->codec, (long long)m->pts_ns, m->keyframe ? "true" : "false",
                 (long long)m->seq, (long long)m->device_time_ns, m->width, m->height, session);
    if (hl < 0 || (size_t)hl >= sizeof(hdr))
        return MD_ERR_INVALID;
    media_body b = {m->prefix, data, m->prefix_len, len};
    return send_binary(d, m->stream_id, 1, hdr, (size_t)hl, m->prefix_len + len, fill_media, &b);
}

int md_device_send_status(md_device *d, double battery, int recording)
{
    char text[256];
    int n =
        battery >= 0
            ? snprintf(text, sizeof(text),
                       "{\"type\":\"status\",\"device_id\":\"%s\",\"payload\":{\"battery\":%.3f,"
                       "\"recording\":%s}}",
                       d->id, battery, recording ? "true" : "false")
            : snprintf(text, sizeof(text),
                       "{\"type\":\"status\",\"device_id\":\"%s\",\"payload\":{\"recording\":%s}}",
                       d->id, recording ? "true" : "false");
    return send_text(d, text, (size_t)n, 0);
}

int md_device_send_sync_mark(md_device *d, const char *mark_id, const char *label, int64_t t)
{
    char sid[MD_ID_MAX];
    if (!valid_id(mark_id))
        return MD_ERR_INVALID;
    if (!md_device_session_at(d, t, sid, sizeof(sid)))
        return MD_ERR_INVALID; /* a mark belongs to a session (SyncMark is keyed by it) */
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:{s:s, s:s}}", "id", mark_id, "type", "sync_mark",
                          "ts", (json_int_t)t, "device_id", d->id, "payload", "mark_id", mark_id,
                          "label", label ? label : "");
    if (m)
        json_object_set_new(m, "session_id", json_string(sid));
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    if (!text)
        return MD_ERR_NOMEM;
    int rc = send_text(d, text, strlen(text), 0);
    free(text);
    return rc;
}

int md_device_session_at(md_device *d, int64_t t, char *out, size_t size)
{
    pthread_mutex_lock(&d->mu);
    int in = d->session[0] && t >= d->start_at && t < d->stop_at;
    snprintf(out, size, "%s", in ? d->session : "");
    pthread_mutex_unlock(&d->mu);
    return in;
}

int64_t md_device_discarded(md_device *d, const char *stream_id)
{
    int i = stream_index(d, stream_id);
    pthread_mutex_lock(&d->mu);
    int64_t n = i >= 0 ? d->discarded[i] : 0;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int64_t md_device_resume_seq(md_device *d, const char *stream_id)
{
    int i = stream_index(d, stream_id);
    pthread_mutex_lock(&d->mu);
    int64_t r = i >= 0 ? d->resume[i] : -1;
    pthread_mutex_unlock(&d->mu);
    return r;
}

int md_device_registered(md_device *d)
{
    pthread_mutex_lock(&d->mu);
    int r = d->registered;
    pthread_mutex_unlock(&d->mu);
    return r;
}

int md_device_slowed(md_device *d)
{
    pthread_mutex_lock(&d->mu);
    int r = d->slowed;
    pthread_mutex_unlock(&d->mu);
    return r;
}

size_t md_device_queued_bytes(md_device *d)
{
    pthread_mutex_lock(&d->mu);
    size_t r = d->queued;
    pthread_mutex_unlock(&d->mu);
    return r;
}
