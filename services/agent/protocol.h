/* protocol.h — layer 8: the JSON device protocol. Its two entry points are
 * the endpoint's handlers (main.c sets them as a->message_cb and
 * a->closed_cb); both run on the lws service thread. */
#ifndef MSRS_AG_PROTOCOL_H
#define MSRS_AG_PROTOCOL_H
#include "agent.h"

/* One whole message of c (msg borrowed; binary: a binary frame): checked,
 * answered and dispatched. An ag_message_cb. */
void ag_on_message(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len, int binary);
/* c is closing: its device is disconnected. An ag_closed_cb. */
void ag_on_closed(ag_agent *a, ag_conn *c);

#endif
