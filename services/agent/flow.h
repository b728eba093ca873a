/* flow.h — layer 5: backpressure. When the log's backlog passes
 * agent.flow.high_bytes every device is sent `flow` slow_down and is no
 * longer read; below agent.flow.low_bytes, `flow` resume and reading again. */
#ifndef MSRS_AG_FLOW_H
#define MSRS_AG_FLOW_H
#include "agent.h"

/* Reads the log's backlog (a->backlog_bytes) and applies the rule above;
 * called by the tick. */
void ag_flow_tick(ag_agent *a, int64_t now_ns);
/* A device that registers while the log is behind is told so at once. */
void ag_flow_greet(ag_agent *a, ag_conn *c);

#endif
