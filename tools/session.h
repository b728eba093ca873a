/* session.h — `msrs session ...` and `msrs devices` (session.c). */
#ifndef MSRS_SESSION_CMD_H
#define MSRS_SESSION_CMD_H
#include "ev.h"

/* argv holds the words after the command; return exit codes. */
int cmd_session(ev_conf *conf, int argc, char **argv);
int cmd_devices(ev_conf *conf, int argc, char **argv);

#endif
