/* control.h — layer 9: the node's control plane, a supervisor client
 * (docs/control.md): registration, plan, heartbeats, failover, discovery,
 * and the node's clock against the supervisor's (a->master_clock). Its
 * results go into a->master_clock, a->plan_max_devices and a->redirect,
 * where the layers below read them. */
#ifndef MSRS_AG_CONTROL_H
#define MSRS_AG_CONTROL_H
#include "agent.h"

/* Reads the supervisor list (URLs "http://HOST:PORT[,http://HOST:PORT...]"
 * and/or the word "discover") and the discovery.* keys; list NULL or
 * empty: standalone. */
int ag_control_init(ag_control *c, const ev_conf *conf, const char *list, char *errstr,
                    size_t errstr_size);
/* Opens the discovery socket on the agent's loop (after the context and the
 * log exist); nothing when discovery is not configured. */
int ag_control_start(ag_agent *a, char *errstr, size_t errstr_size);
/* Runs the register / plan / probe / heartbeat cycle; called by the tick. */
void ag_control_tick(ag_agent *a, int64_t now_ns);
/* When ag_control_tick has something to do next, at most `until` (a
 * request in flight: its answer wakes the tick, a->tick_soon). */
int64_t ag_control_next_ns(const ag_agent *a, int64_t until);
/* The control plane's lws protocol (HTTP client and the discovery
 * socket); main.c hands it to the endpoint's context. Its callback runs on
 * the lws service thread. */
extern const struct lws_protocols ag_control_protocol;

#endif
