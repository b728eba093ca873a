/* tlsfilter.c — a TLS connection's send stamps and read-ahead, through a
 * filter BIO in front of its socket (tlsfilter.h). */
#include "tlsfilter.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* A filter BIO (OpenSSL's own extension point, tlsfilter.h) in front of a
 * TLS connection's socket BIO: on the write side (send stamps) and, once
 * asked (cli_tls_read_ahead), on the read side too. */

typedef struct filter_data {
    int64_t sent_ns; /* when the last write the socket took began */
    void (*read_cb)(void *arg, int got);
    void *arg;
} filter_data;

static BIO_METHOD *filter_method;
static int filter_type; /* filter_method's BIO type: how the functions below know their filter */
static pthread_once_t filter_once = PTHREAD_ONCE_INIT;

static int filter_write(BIO *b, const char *data, int len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t began = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    int n = BIO_write(BIO_next(b), data, len);
    BIO_clear_retry_flags(b);
    BIO_copy_next_retry(b);
    if (n > 0) /* not a write the socket refused (EAGAIN): lws sends it later */
        ((filter_data *)BIO_get_data(b))->sent_ns = began;
    return n;
}

static int filter_read(BIO *b, char *data, int len)
{
    int n = BIO_read(BIO_next(b), data, len);
    BIO_clear_retry_flags(b);
    BIO_copy_next_retry(b);
    filter_data *d = BIO_get_data(b);
    if (d->read_cb)
        d->read_cb(d->arg, n > 0);
    return n;
}

static int filter_destroy(BIO *b)
{
    free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    return 1;
}

static long filter_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return BIO_ctrl(BIO_next(b), cmd, num, ptr);
}

static int filter_create(BIO *b)
{
    filter_data *d = calloc(1, sizeof(*d));
    if (!d)
        return 0;
    BIO_set_data(b, d);
    BIO_set_init(b, 1);
    return 1;
}

static void filter_method_new(void)
{
    int type = BIO_get_new_index() | BIO_TYPE_FILTER;
    BIO_METHOD *m = BIO_meth_new(type, "msrs socket filter");
    if (m && BIO_meth_set_write(m, filter_write) && BIO_meth_set_read(m, filter_read) &&
        BIO_meth_set_ctrl(m, filter_ctrl) && BIO_meth_set_create(m, filter_create) &&
        BIO_meth_set_destroy(m, filter_destroy)) {
        filter_type = type;
        filter_method = m;
    } else
        BIO_meth_free(m);
}

/* wsi's filter, NULL when it has none (plain, or never asked) */
static BIO *filter_of(struct lws *wsi)
{
    SSL *ssl = lws_get_ssl(wsi);
    BIO *filter = ssl ? SSL_get_wbio(ssl) : NULL;
    return filter && filter_method && BIO_method_type(filter) == filter_type ? filter : NULL;
}

int cli_tls_send_stamps(struct lws *wsi)
{
    SSL *ssl = lws_get_ssl(wsi);
    pthread_once(&filter_once, filter_method_new);
    BIO *sock = ssl ? SSL_get_wbio(ssl) : NULL, *filter;
    if (filter_of(wsi))
        return 0; /* already */
    if (!sock || !filter_method || !(filter = BIO_new(filter_method)))
        return -1;
    /* the socket BIO stays the read BIO too: the chain takes a reference
     * of its own, and SSL_set0_wbio gives up the one it held as wbio */
    BIO_up_ref(sock);
    BIO_push(filter, sock);
    SSL_set0_wbio(ssl, filter);
    return 0;
}

int cli_tls_read_ahead(struct lws *wsi, void (*read_cb)(void *arg, int got), void *arg)
{
    SSL *ssl = lws_get_ssl(wsi);
    if (cli_tls_send_stamps(wsi))
        return -1;
    BIO *filter = filter_of(wsi);
    filter_data *d = BIO_get_data(filter);
    d->read_cb = read_cb;
    d->arg = arg;
    if (read_cb && SSL_get_rbio(ssl) != filter) {
        /* the filter becomes the read BIO as well: SSL holds a reference
         * for each role, and gives up the socket BIO's as rbio (the chain
         * keeps its own) */
        BIO_up_ref(filter);
        SSL_set0_rbio(ssl, filter);
        SSL_set_read_ahead(ssl, 1);
    }
    return 0;
}

int cli_tls_unread(struct lws *wsi)
{
    SSL *ssl = lws_get_ssl(wsi);
    return ssl && SSL_has_pending(ssl);
}

int64_t cli_tls_sent_since(struct lws *wsi, int64_t since_ns)
{
    BIO *filter = filter_of(wsi);
    if (!filter || lws_partial_buffered(wsi))
        return since_ns;
    int64_t sent = ((filter_data *)BIO_get_data(filter))->sent_ns;
    return sent >= since_ns ? sent : since_ns;
}
