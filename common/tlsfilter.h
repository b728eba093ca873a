/* tlsfilter.h — a TLS connection's send stamps and read-ahead (prefix
 * cli_tls_): a filter BIO, OpenSSL's own extension point, in front of the
 * socket of a libwebsockets connection. Its own library (tlsfilter), which
 * depends on libwebsockets and libssl only: the device SDK stamps its clock
 * answers with it too (docs/protocol.md, prev_t3). */
#ifndef MSRS_CLI_TLSFILTER_H
#define MSRS_CLI_TLSFILTER_H
#include <libwebsockets.h>
#include <stdint.h>

/* For a TLS connection: puts a filter in front of the socket that OpenSSL
 * writes to, which keeps the instant (CLOCK_REALTIME, ns) each write the socket
 * took began, after OpenSSL encrypted what it carries: a clock probe
 * stamped before lws_write would otherwise carry the encryption, on its
 * way out only. The instant lives in the filter, freed with the
 * connection's SSL. 0 (also when it has one already), or -1 when wsi is
 * no TLS connection (or out of memory). */
int cli_tls_send_stamps(struct lws *wsi);
/* When the message lws_write has just written on wsi went to the socket:
 * the start of the last write the socket took (cli_tls_send_stamps), if
 * that was at since_ns or later and lws kept nothing of the message to
 * send later (lws reports such a write as done; its instant is then not
 * the message's); since_ns otherwise, and for a connection without the
 * filter (plain). */
int64_t cli_tls_sent_since(struct lws *wsi, int64_t since_ns);
/* For a TLS connection: the filter of cli_tls_send_stamps (put in place if
 * it is not) reads the socket too, and OpenSSL reads ahead
 * (SSL_set_read_ahead): one read takes what the kernel holds, up to
 * OpenSSL's buffer, where it took a record's 5-byte header and then its
 * body, two reads a message. The cost: records read ahead beyond the one
 * SSL_read returns are seen by neither lws (which asks SSL_pending: the
 * record already opened only) nor the socket's readiness. So every socket
 * read calls read_cb(arg, got): got 1 when it brought bytes, and from then
 * on the caller must service wsi (lws_service_fd, POLLIN) for as long as
 * cli_tls_unread says so; got 0 when it found none (EAGAIN, or the end):
 * OpenSSL reads only when it holds no whole record, so what it holds then
 * is part of one at most, whose rest the socket will announce. read_cb
 * runs on the thread calling SSL_read (the connection's service), inside
 * OpenSSL: it must neither use the connection's SSL nor close it. read_cb
 * NULL stops the calls, for a connection that is closing (read-ahead stays
 * on). 0, or -1 when wsi is no TLS connection (or out of memory). */
int cli_tls_read_ahead(struct lws *wsi, void (*read_cb)(void *arg, int got), void *arg);
/* 1 when wsi's SSL holds received bytes not yet returned by SSL_read
 * (SSL_has_pending: whole records read ahead, or part of one), 0 otherwise
 * and for plain connections. */
int cli_tls_unread(struct lws *wsi);

#endif
