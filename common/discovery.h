/* discovery.h — finding a supervisor on the local network (docs/control.md,
 * "Discovery"). An agent sends a query datagram to broadcast addresses
 * (127.255.255.255 reaches every process on this host, 255.255.255.255 the
 * LAN); every supervisor bound to the discovery port answers the sender with
 * its URL and whether it leads. JSON datagrams of at most DSC_MAX bytes:
 *
 *   query   {"msrs": "discover", "v": 1, "prefix": P, "node_id": N,
 *            "nonce": HEX}
 *   answer  {"msrs": "supervisor", "v": 1, "prefix": P, "node_id": S,
 *            "url": "https://HOST:PORT", "leading": true|false,
 *            "nonce": the query's, "mac": HEX}
 *
 * With a lab key (auth.key_file) the answer is signed: mac =
 * cli_auth_mac(key, "discovery", dsc_signed_text(answer)), over the
 * query's nonce (fresh for every query), so an agent ignores (and counts)
 * an answer that was not made with the key or that answers another query.
 *
 * A supervisor answers only queries for its own topic prefix, so two systems
 * on one network stay apart. Several supervisors on one host share the port
 * (SO_REUSEADDR: a broadcast reaches each of them). Plain sockets, no
 * threads: the caller polls the descriptor in its own loop. */
#ifndef MSRS_DISCOVERY_H
#define MSRS_DISCOVERY_H
#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>

#define DSC_PORT    8611
#define DSC_MAX     1024
#define DSC_TARGETS "127.255.255.255,255.255.255.255"

/* A non-blocking UDP socket that may send to broadcast addresses, bound to
 * 0.0.0.0:port (port 0: an ephemeral one, for queries). Returns the
 * descriptor, or -1 with errstr filled. */
int dsc_socket(int port, char *errstr, size_t errstr_size);

/* Sends msg (borrowed) to one address. 0 ok, -1 failed (errno set). */
int dsc_send(int fd, const struct sockaddr_in *to, json_t *msg);

/* Sends msg to each dotted-quad address of the comma-separated targets on
 * port (msg NULL: sends nothing, checks the addresses). Returns how many
 * were sent; errstr names the first target that
 * failed (an unreachable broadcast address is normal on a host without
 * that network) or an address that is not an IPv4 dotted quad (-1). */
int dsc_send_all(int fd, const char *targets, int port, json_t *msg, char *errstr,
                 size_t errstr_size);

/* The next datagram of kind ("discover" or "supervisor") for prefix, as a
 * new JSON object (the caller owns it), with its sender in *from. Datagrams
 * that are not JSON, not msrs discovery messages, another version, kind or
 * prefix are read and skipped (*skipped counts them when not NULL). NULL
 * when nothing more is waiting. */
json_t *dsc_recv(int fd, const char *kind, const char *prefix, struct sockaddr_in *from,
                 int64_t *skipped);

/* What a discovery answer's mac covers: its nonce, prefix, node_id, url and
 * leading as compact JSON with sorted keys, into out. 0, or -1 when a field
 * is missing, the nonce is not 32 lowercase hex digits, or it does not fit. */
int dsc_signed_text(const json_t *answer, char *out, size_t out_size);

#endif
