/* device.c — layer 3: the device registry (see device.h). */
#include "device.h"

#include "emit.h"

#include <stdio.h>
#include <string.h>

ag_device *ag_device_find(ag_agent *a, const char *id)
{
    for (size_t i = 0; i < a->device_count; i++)
        if (strcmp(a->devices[i]->device_id, id) == 0)
            return a->devices[i];
    return NULL;
}

ag_device *ag_device_add(ag_agent *a, const char *id)
{
    if (a->device_count == a->device_cap) {
        size_t cap = a->device_cap ? a->device_cap * 2 : 64;
        ag_device **d = realloc(a->devices, cap * sizeof(*d));
        if (!d)
            return NULL;
        a->devices = d;
        a->device_cap = cap;
    }
    ag_device *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    snprintf(d->device_id, sizeof(d->device_id), "%s", id);
    ev_clock_est_init(&d->clock);
    d->next_seq = json_object();
    a->devices[a->device_count++] = d;
    return d;
}

void ag_device_attach(ag_agent *a, ag_device *d, ag_conn *c, json_t *streams)
{
    size_t i;
    json_t *st;
    d->conn = c;
    c->dev = d;
    snprintf(c->device_id, sizeof(c->device_id), "%s", d->device_id);
    a->connected++;
    d->stream_count = 0;
    json_array_foreach(streams, i, st)
    {
        const char *sid = json_string_value(json_object_get(st, "stream_id"));
        if (sid && d->stream_count < AG_MAX_STREAMS)
            snprintf(d->stream_ids[d->stream_count++], AG_ID_MAX, "%s", sid);
    }
}

void ag_device_detach(ag_agent *a, ag_conn *c)
{
    ag_device *d = c->dev;
    if (!d)
        return;
    d->conn = NULL;
    d->round_active = 0;
    a->connected--;
    ag_emit(a, "DeviceDisconnected", d->device_id,
            json_pack("{s:s, s:s, s:s}", "device_id", d->device_id, "node_id", a->cfg.node_id,
                      "reason", "connection closed"),
            NULL, 0);
}

void ag_device_free_all(ag_agent *a)
{
    for (size_t i = 0; i < a->device_count; i++) {
        json_decref(a->devices[i]->next_seq);
        cli_buf_free(&a->devices[i]->round_probes);
        free(a->devices[i]);
    }
    free(a->devices);
    a->devices = NULL;
    a->device_count = a->device_cap = 0;
}

int ag_device_has_stream(const ag_device *d, const char *stream)
{
    for (int i = 0; d && stream && i < d->stream_count; i++)
        if (strcmp(d->stream_ids[i], stream) == 0)
            return 1;
    return 0;
}
