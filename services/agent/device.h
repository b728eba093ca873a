/* device.h — layer 3: the device registry. A device the agent has seen
 * stays known across reconnects (its sequence numbers, clock history and
 * session counts); a connection is attached to it on hello and detached on
 * close. */
#ifndef MSRS_AG_DEVICE_H
#define MSRS_AG_DEVICE_H
#include "agent.h"

/* The device with id, or NULL. */
ag_device *ag_device_find(ag_agent *a, const char *id);
/* Registers a new device id (the registry owns it); NULL when out of memory. */
ag_device *ag_device_add(ag_agent *a, const char *id);
/* Links d and c (d's connection from now), counts it connected and keeps
 * the stream ids declared in streams (an array of hello's stream objects,
 * borrowed; at most AG_MAX_STREAMS). */
void ag_device_attach(ag_agent *a, ag_device *d, ag_conn *c, json_t *streams);
/* c closes: its device, if it registered, is disconnected (its clock round
 * ends unfinished) and DeviceDisconnected emitted. */
void ag_device_detach(ag_agent *a, ag_conn *c);
/* Frees every device (at exit). */
void ag_device_free_all(ag_agent *a);
/* 1 when d declared stream in its hello. */
int ag_device_has_stream(const ag_device *d, const char *stream);

#endif
