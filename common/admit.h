/* admit.h — how many connections a libwebsockets listener holds (prefix
 * cli_admit_, library clisec), the same for every msrs listener: the
 * agent's device endpoint, the supervisor, the gateway, the operations
 * listener.
 *
 * A connection takes a slot from its accept (FILTER_NETWORK_CONNECTION,
 * before lws does any TLS work for it) until lws frees it (WSI_DESTROY),
 * so the TLS and HTTP handshakes count as much as an open WebSocket. When
 * every slot is taken, a newcomer closes the oldest connection that has
 * not proven itself yet (a device's accepted hello, a request with a valid
 * token): a source holding many connections open cannot keep a real client
 * out, since a real one proves itself within milliseconds of connecting.
 * Never one younger than CLI_ADMIT_MIN_AGE_NS; a proven connection is never
 * moved. When all are proven or young, the newcomer is closed at accept.
 * The eviction is synchronous: an asynchronous kill would let a burst of
 * accepts hold thousands of connections (~50 KiB each with TLS) at once.
 * An evicted connection gives its slot to the newcomer at once; one that
 * lws closes gracefully (it had answered, or must flush first) is not
 * counted while it waits for its peer, up to the listener's timeout.
 *
 * Accepting as fast as connections arrive keeps the kernel's listen queue
 * from overflowing, so a client's SYN is not dropped with an attacker's.
 * Runs on the listener's lws service thread only. */
#ifndef MSRS_ADMIT_H
#define MSRS_ADMIT_H
#include <libwebsockets.h>
#include <stdint.h>

#define CLI_ADMIT_MIN_AGE_NS 100000000LL /* a connection younger is never evicted */
#define CLI_ADMIT_MAX        1048576     /* slots at most (they are indexed by int) */

typedef struct cli_admit_slot {
    struct lws *wsi; /* NULL: free */
    int64_t at_ns;   /* accepted then */
    int prev, next;  /* the evictable list, oldest first; or (next) the free list */
    int listed;      /* in the evictable list: not proven, not being evicted */
} cli_admit_slot;

typedef struct cli_admit {
    cli_admit_slot *slots;
    int64_t max;
    int head, tail, free_slot; /* -1: none */
    int64_t used;              /* connections held now, proven or not */
    int64_t accepted, refused, evicted;
    void (*on_evict)(struct lws *wsi); /* the service's bookkeeping, or NULL */
} cli_admit;

/* max slots (1 to CLI_ADMIT_MAX); on_evict (may be NULL) is called with a
 * connection about to be evicted, before lws closes it. 0, or -1
 * (out of memory, or max out of range) with errstr naming key, the
 * configuration key max came from. */
int cli_admit_init(cli_admit *ad, int64_t max, const char *key, void (*on_evict)(struct lws *wsi),
                   char *errstr, size_t errstr_size);
/* After the listener's context is destroyed (its WSI_DESTROYs read ad).
 * The counters stay, for a last status line. */
void cli_admit_free(cli_admit *ad);

/* For the listener's protocols[0] callback, first thing, whatever the
 * reason: it handles FILTER_NETWORK_CONNECTION (admits or refuses),
 * SERVER_NEW_CLIENT_INSTANTIATED (takes the slot) and WSI_DESTROY (gives it
 * back). -1: the callback returns -1 now (the newcomer is refused); 0: it
 * goes on as it would have. ad NULL: 0. The wsi's opaque user data holds
 * its slot; a client connection's own opaque pointer is left alone. */
int cli_admit_callback(cli_admit *ad, struct lws *wsi, enum lws_callback_reasons reason);

/* The connection proved itself (what that is, the service says: a
 * device's accepted hello, a request its token allows): never evicted.
 * Unknown wsi: nothing. */
void cli_admit_proven(cli_admit *ad, struct lws *wsi);

/* Appends PREFIX_connections_held (gauge), PREFIX_connections_refused_total
 * and PREFIX_connections_evicted_total to a service's metrics (ops.h). */
struct cli_buf;
void cli_admit_metrics(struct cli_buf *b, const char *prefix, const cli_admit *ad);

#endif
