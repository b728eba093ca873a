/* http.c — cli_http_answer, cli_http_answer_with (http.h). */
#include "http.h"

#include <stdlib.h>
#include <string.h>

int cli_http_answer(struct lws *wsi, unsigned int status, const char *content_type,
                    const void *body, size_t len)
{
    return cli_http_answer_with(wsi, status, content_type, body, len, NULL);
}

/* The extra headers; 0 when all fitted. */
static int add_headers(struct lws *wsi, const char *const *headers, unsigned char **p,
                       unsigned char *end)
{
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)headers[i],
                                        (const unsigned char *)headers[i + 1],
                                        (int)strlen(headers[i + 1]), p, end))
            return -1;
    return 0;
}

int cli_http_answer_with(struct lws *wsi, unsigned int status, const char *content_type,
                         const void *body, size_t len, const char *const *headers)
{
    static const char challenge[] = "Bearer realm=\"msrs\"";
    unsigned char *buf = malloc(LWS_PRE + 1024 + len);
    if (!buf)
        return -1;
    unsigned char *start = buf + LWS_PRE, *p = start, *end = start + 1024;
    int rc = -1;
    if (lws_add_http_common_headers(wsi, status, content_type, len, &p, end) == 0 &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) == 0 &&
        (status != 401 ||
         lws_add_http_header_by_name(
             wsi, (const unsigned char *)"www-authenticate:", (const unsigned char *)challenge,
             (int)strlen(challenge), &p, end) == 0) &&
        add_headers(wsi, headers, &p, end) == 0 &&
        lws_finalize_write_http_header(wsi, start, &p, end) == 0) {
        if (len)
            memcpy(start, body, len); /* the headers are written: the buffer is free */
        if (lws_write(wsi, start, len, LWS_WRITE_HTTP_FINAL) == (int)len)
            rc = 0;
    }
    free(buf);
    if (rc || lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}
