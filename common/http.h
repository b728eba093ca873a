/* http.h — answering an HTTP request on a libwebsockets server (the
 * supervisor's API, the camera proxy): one function, so that every msrs
 * listener answers alike (status, type, length, `Cache-Control: no-store`,
 * `WWW-Authenticate: Bearer` on a 401). In library clisec. */
#ifndef MSRS_HTTP_H
#define MSRS_HTTP_H
#include <libwebsockets.h>
#include <stddef.h>

/* Writes the whole answer on wsi (call it from LWS_CALLBACK_HTTP_WRITEABLE)
 * and completes the transaction (keep-alive). body is borrowed. 0, or -1:
 * the connection must close (return -1 from the callback). On a keep-alive
 * connection lws binds the protocol again for the next request, which
 * frees the connection's per-session data: take what the answer needs out
 * of it and reset it before the call, and touch nothing of it after. */
int cli_http_answer(struct lws *wsi, unsigned int status, const char *content_type,
                    const void *body, size_t len);
/* The same with more headers: pairs of "name:" and value, ending with NULL
 * (headers may be NULL). */
int cli_http_answer_with(struct lws *wsi, unsigned int status, const char *content_type,
                         const void *body, size_t len, const char *const *headers);

#endif
