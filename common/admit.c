/* admit.c — connections counted from their accept (admit.h). */
#include "admit.h"

#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int cli_admit_init(cli_admit *ad, int64_t max, const char *key, void (*on_evict)(struct lws *wsi),
                   char *errstr, size_t errstr_size)
{
    *ad = (cli_admit){.head = -1, .tail = -1, .on_evict = on_evict};
    if (max < 1 || max > CLI_ADMIT_MAX) {
        snprintf(errstr, errstr_size, "config %s (%lld): expected 1 to %d connections", key,
                 (long long)max, CLI_ADMIT_MAX);
        return -1;
    }
    if (!(ad->slots = calloc((size_t)max, sizeof(*ad->slots)))) {
        snprintf(errstr, errstr_size, "config %s (%lld): out of memory", key, (long long)max);
        return -1;
    }
    ad->max = max;
    for (int64_t i = 0; i < max; i++)
        ad->slots[i].next = i + 1 < max ? (int)i + 1 : -1;
    return 0;
}

void cli_admit_free(cli_admit *ad)
{
    free(ad->slots);
    ad->slots = NULL;
    ad->max = ad->used = 0;
    ad->head = ad->tail = ad->free_slot = -1;
}

/* wsi's slot, or NULL: a connection of this listener's without one (a
 * client connection on the same context keeps its own opaque pointer). */
static cli_admit_slot *slot_of(cli_admit *ad, struct lws *wsi)
{
    cli_admit_slot *s = lws_get_opaque_user_data(wsi);
    return s && s >= ad->slots && s < ad->slots + ad->max && s->wsi == wsi ? s : NULL;
}

/* Off the list of evictable connections: it proved itself, or it is going. */
static void unlist(cli_admit *ad, cli_admit_slot *s)
{
    if (!s->listed)
        return;
    *(s->prev >= 0 ? &ad->slots[s->prev].next : &ad->head) = s->next;
    *(s->next >= 0 ? &ad->slots[s->next].prev : &ad->tail) = s->prev;
    s->prev = s->next = -1;
    s->listed = 0;
}

static void slot_take(cli_admit *ad, struct lws *wsi)
{
    int i = ad->free_slot;
    if (i < 0) { /* not while admit() keeps used under max: closed as refused */
        ad->refused++;
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    cli_admit_slot *s = &ad->slots[i];
    ad->free_slot = s->next;
    *s =
        (cli_admit_slot){.wsi = wsi, .at_ns = mono_ns(), .prev = ad->tail, .next = -1, .listed = 1};
    *(ad->tail >= 0 ? &ad->slots[ad->tail].next : &ad->head) = i;
    ad->tail = i;
    ad->used++;
    lws_set_opaque_user_data(wsi, s);
}

static void slot_give_back(cli_admit *ad, struct lws *wsi)
{
    cli_admit_slot *s = slot_of(ad, wsi);
    if (!s)
        return;
    lws_set_opaque_user_data(wsi, NULL);
    unlist(ad, s);
    s->wsi = NULL;
    s->next = ad->free_slot;
    ad->free_slot = (int)(s - ad->slots);
    ad->used--;
}

/* 0 to admit a connection just accepted, -1 to close it at once. The
 * evicted connection's slot is the newcomer's at once: lws frees a
 * connection in its handshake there and then, but one that has answered
 * (HTTP) or been told to close first shuts down gracefully, waiting for the
 * peer up to the listener's timeout, and a peer that never answers would
 * hold the slot that long. Such a closing connection is not counted. */
static int admit(cli_admit *ad)
{
    ad->accepted++;
    if (ad->used < ad->max)
        return 0;
    cli_admit_slot *old = ad->head >= 0 ? &ad->slots[ad->head] : NULL;
    if (!old || mono_ns() - old->at_ns < CLI_ADMIT_MIN_AGE_NS) {
        ad->refused++;
        return -1;
    }
    struct lws *wsi = old->wsi;
    ad->evicted++;
    if (ad->on_evict)
        ad->on_evict(wsi);
    slot_give_back(ad, wsi);
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
    return 0;
}

int cli_admit_callback(cli_admit *ad, struct lws *wsi, enum lws_callback_reasons reason)
{
    if (!ad || !ad->slots)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: return admit(ad);
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED: slot_take(ad, wsi); return 0;
    case LWS_CALLBACK_WSI_DESTROY: slot_give_back(ad, wsi); return 0;
    default: return 0;
    }
}

void cli_admit_proven(cli_admit *ad, struct lws *wsi)
{
    cli_admit_slot *s = ad && ad->slots ? slot_of(ad, wsi) : NULL;
    if (s)
        unlist(ad, s);
}

void cli_admit_metrics(struct cli_buf *b, const char *prefix, const cli_admit *ad)
{
    char name[96];
    snprintf(name, sizeof(name), "%s_connections_held", prefix);
    cli_metric(b, name, "gauge", "connections held, from accept to close (TLS handshakes included)",
               (double)ad->used);
    snprintf(name, sizeof(name), "%s_connections_refused_total", prefix);
    cli_metric(b, name, "counter", "connections closed at accept: every slot taken",
               (double)ad->refused);
    snprintf(name, sizeof(name), "%s_connections_evicted_total", prefix);
    cli_metric(b, name, "counter", "connections without a proof closed to make room for a newcomer",
               (double)ad->evicted);
}
