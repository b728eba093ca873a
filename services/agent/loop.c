/* loop.c — the agent's event loop: libev on epoll, handed to libwebsockets
 * as its foreign loop (loop.h). Alone in this file because libev's ev.h
 * and libevents' ev.h share the ev_ prefix. */
#include "loop.h"

#include <ev.h>

void *ag_loop_new(void)
{
    return ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOSIGMASK);
}

void ag_loop_run_once(void *loop)
{
    ev_run(loop, EVRUN_ONCE);
}

void ag_loop_destroy(void *loop)
{
    if (loop)
        ev_loop_destroy(loop);
}
