/* endpoint.h — layer 1: connections. The device endpoint over
 * libwebsockets, message reassembly, one send queue per connection. Knows
 * no layer above it: whole messages and closes go up through
 * ag_agent.message_cb / closed_cb. */
#ifndef MSRS_AG_ENDPOINT_H
#define MSRS_AG_ENDPOINT_H
#include "agent.h"

/* Creates the lws context, serving the device protocol and
 * a->client_protocol (the control plane's client side; may be NULL); the
 * device endpoint listens at once unless a supervisor is configured.
 * a->message_cb and a->closed_cb must be set. */
int ag_endpoint_start(ag_agent *a, char *errstr, size_t errstr_size);
/* The device endpoint's listening vhost (what a plan's "devices" starts). */
int ag_endpoint_listen(ag_agent *a, char *errstr, size_t errstr_size);
/* Services the TLS connections whose SSL holds records it read ahead
 * (cli_tls_read_ahead), as if their sockets were readable: after every
 * turn of the loop. 1 when some still hold records (the next turn must
 * not wait), 0 otherwise. */
int ag_endpoint_service_unread(ag_agent *a);
/* Destroys the context: every connection closes (closed_cb for each). */
void ag_endpoint_stop(ag_agent *a);

/* c said an accepted hello: it no longer counts against its address's
 * pending connections, and its hello deadline becomes an idle one
 * (agent.idle_timeout_ms, moved on by every message). */
void ag_endpoint_hello_accepted(ag_agent *a, ag_conn *c);

/* Sends a JSON message {"id","type","ts","device_id","payload"} to c: written
 * at once when nothing of c's waits, else queued behind what does. */
void ag_send(ag_agent *a, ag_conn *c, const char *type, json_t *payload /* stolen */);
void ag_send_error(ag_agent *a, ag_conn *c, const char *code, const char *message,
                   const char *ref_id);
/* A message that does not fit the protocol: counted (invalid), and an
 * `invalid` error names what was expected; the connection stays open. */
void ag_send_invalid(ag_agent *a, ag_conn *c, const char *why, const char *ref_id);
/* Sends a time probe as ag_send; its t1 is stamped when it is written. */
void ag_send_time_req(ag_agent *a, ag_conn *c);
/* When the probe of c written with t1 went to the kernel: over TLS, the
 * start of the socket write that carried it, after OpenSSL encrypted it
 * (cli_tls_send_stamps; tens of microseconds, variable, that would
 * otherwise count on the way to the device only); t1 itself otherwise
 * (plain, where only lws's framing comes between; not one of c's latest
 * AG_PROBES_KEEP probes; a write lws kept to send later). */
int64_t ag_probe_sent_at(const ag_conn *c, int64_t t1);
/* Stops (paused 1) or resumes reading c. */
void ag_conn_pause(ag_agent *a, ag_conn *c, int paused);
/* Closes c with a WebSocket close code and reason. */
void ag_close(ag_conn *c, int code, const char *reason);

#endif
