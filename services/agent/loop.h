/* loop.h — the agent's event loop (docs/architecture.md, "The agent's
 * event loop"). libwebsockets 4.1.6 polls every socket on each turn of its
 * default loop: at 1024 devices that scan was a fifth of the agent. With
 * agent.event_loop = epoll (the default) lws runs on this libev loop
 * (LWS_SERVER_OPTION_LIBEV, a foreign loop) and the kernel reports only the
 * sockets that are ready. */
#ifndef MSRS_AGENT_LOOP_H
#define MSRS_AGENT_LOOP_H

/* The longest one turn waits, so that a stop (cli_stop, set by a signal
 * between the loop's check and its wait) is seen without depending on the
 * agent's own timers. A signal that comes during the wait ends it at once
 * (epoll_wait is never restarted), and the agent's tick (at most 100 ms
 * apart) ends one too: a second bounds only the rare race, and this timer
 * no longer adds its own ten wake-ups a second to the tick's (issue 23). */
#define AG_LOOP_TURN_MAX_S 1.0

/* A libev loop on epoll; NULL when it cannot be made. Signals stay with
 * the process's own handlers (EVFLAG_NOSIGMASK). One per process. */
void *ag_loop_new(void);
/* One turn: waits for the next event or timer (lws's timers are libev
 * timers on it; at most AG_LOOP_TURN_MAX_S), handles what is ready,
 * returns. nowait: handles what is ready without waiting. */
void ag_loop_run_once(void *loop, int nowait);
void ag_loop_destroy(void *loop);

#endif
