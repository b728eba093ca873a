/* devices.c — ar_devices: each device's last registration and newest clock
 * rounds, as framed on the log, for the archives (archive.h). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct dev {
    char *id;
    ar__frame registered; /* len 0: none yet */
    ar__clock *ring;      /* AR_CLOCK_RING, allocated with the first round */
    size_t count, next;
} dev;

struct ar_devices {
    dev *devs;
    size_t count, cap;
    const ev_schema *registered, *clock;
    ev_codec *codec; /* reads a round's t4 when the event was peeked */
};

ar_devices *ar_devices_new(void)
{
    ar_devices *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->registered = ev_schema_by_name("DeviceRegistered");
    d->clock = ev_schema_by_name("ClockOffsetMeasured");
    if (!d->registered || !d->clock || !(d->codec = ev_codec_new())) {
        ar_devices_destroy(d);
        return NULL;
    }
    return d;
}

void ar_devices_destroy(ar_devices *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++) {
        free(d->devs[i].id);
        free(d->devs[i].registered.value);
        for (size_t k = 0; d->devs[i].ring && k < AR_CLOCK_RING; k++)
            free(d->devs[i].ring[k].value);
        free(d->devs[i].ring);
    }
    free(d->devs);
    ev_codec_destroy(d->codec);
    free(d);
}

static dev *find(const ar_devices *d, const char *id)
{
    for (size_t i = 0; i < d->count; i++)
        if (strcmp(d->devs[i].id, id) == 0)
            return &d->devs[i];
    return NULL;
}

static dev *get(ar_devices *d, const char *id)
{
    dev *x = find(d, id);
    if (x)
        return x;
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        dev *grown = realloc(d->devs, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        d->devs = grown;
        d->cap = cap;
    }
    x = &d->devs[d->count];
    memset(x, 0, sizeof(*x));
    if (!(x->id = strdup(id)))
        return NULL;
    d->count++;
    return x;
}

static int copy_bytes(unsigned char **to, size_t *len, const void *from, size_t n)
{
    unsigned char *b = malloc(n ? n : 1);
    if (!b)
        return -1;
    memcpy(b, from, n);
    free(*to);
    *to = b;
    *len = n;
    return 0;
}

int ar_devices_add(ar_devices *d, const ev_event *ev, char *errstr, size_t errstr_size)
{
    if (ev->schema != d->registered && ev->schema != d->clock)
        return 1;
    avro_value_t *v = ev->value, f;
    const char *id = NULL;
    size_t len;
    int64_t t4 = 0;
    if (!ev->msg)
        return ar__fail(errstr, errstr_size, EV_ERR_INVALID, "%s %s: no frame to keep",
                        ev_schema_short_name(ev->schema), ev->id);
    const ev_schema *read_as;
    if (!v && ev_codec_decode(d->codec, ev->msg->value, ev->msg->value_len, &read_as, &v, errstr,
                              errstr_size) < 0)
        return EV_ERR_INVALID;
    if (avro_value_get_by_name(v, "device_id", &f, NULL) || avro_value_get_string(&f, &id, &len) ||
        (ev->schema == d->clock &&
         (avro_value_get_by_name(v, "t4_ns", &f, NULL) || avro_value_get_long(&f, &t4))))
        return ar__fail(errstr, errstr_size, EV_ERR_INVALID, "%s %s: no device_id or t4_ns",
                        ev_schema_short_name(ev->schema), ev->id);
    dev *x = get(d, id);
    if (!x)
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "devices: out of memory");
    if (ev->schema == d->registered) {
        if (copy_bytes(&x->registered.value, &x->registered.len, ev->msg->value,
                       ev->msg->value_len))
            return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "devices: out of memory");
        snprintf(x->registered.id, sizeof(x->registered.id), "%s", ev->id);
        snprintf(x->registered.source, sizeof(x->registered.source), "%s", ev->source);
        x->registered.time_ns = ev->time_ns;
        return 0;
    }
    if (!x->ring && !(x->ring = calloc(AR_CLOCK_RING, sizeof(*x->ring))))
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "devices: out of memory");
    ar__clock *c = &x->ring[x->next]; /* the oldest, overwritten */
    if (copy_bytes(&c->value, &c->len, ev->msg->value, ev->msg->value_len))
        return ar__fail(errstr, errstr_size, EV_ERR_NOMEM, "devices: out of memory");
    c->t4_ns = t4;
    x->next = (x->next + 1) % AR_CLOCK_RING;
    if (x->count < AR_CLOCK_RING)
        x->count++;
    return 0;
}

const ar__frame *ar__devices_registration(const ar_devices *d, const char *device_id)
{
    const dev *x = d ? find(d, device_id) : NULL;
    return x && x->registered.len ? &x->registered : NULL;
}

size_t ar__devices_clock(const ar_devices *d, const char *device_id, int64_t from_ns, int64_t to_ns,
                         const ar__clock **out, size_t cap)
{
    const dev *x = d ? find(d, device_id) : NULL;
    size_t n = 0;
    for (size_t k = 0; x && k < x->count && n < cap; k++) {
        const ar__clock *c = &x->ring[(x->next + AR_CLOCK_RING - x->count + k) % AR_CLOCK_RING];
        if (c->t4_ns >= from_ns && c->t4_ns <= to_ns)
            out[n++] = c;
    }
    return n;
}
