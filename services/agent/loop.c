/* loop.c — the agent's event loop: libev on epoll, handed to libwebsockets
 * as its foreign loop (loop.h). Alone in this file because libev's ev.h
 * and libevents' ev.h share the ev_ prefix. */
#include "loop.h"

#include <ev.h>

/* Bounds each turn (AG_LOOP_TURN_MAX_S): one per process, as the loop. */
static ev_timer wake;

static void on_wake(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

void *ag_loop_new(void)
{
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOSIGMASK);
    if (loop) {
        ev_timer_init(&wake, on_wake, AG_LOOP_TURN_MAX_S, AG_LOOP_TURN_MAX_S);
        ev_timer_start(loop, &wake);
    }
    return loop;
}

void ag_loop_run_once(void *loop, int nowait)
{
    ev_run(loop, nowait ? EVRUN_NOWAIT : EVRUN_ONCE);
}

void ag_loop_destroy(void *loop)
{
    if (loop) {
        ev_timer_stop(loop, &wake);
        ev_loop_destroy(loop);
    }
}
