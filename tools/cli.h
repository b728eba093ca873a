/* cli.h — what every msrs command-line tool shares: the common options
 * (--log, --config, -X, --help), configuration precedence (defaults < config
 * file < environment < command line) and exit codes. */
#ifndef MSRS_CLI_H
#define MSRS_CLI_H
#include "ev.h"

#include <getopt.h>
#include <signal.h>

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

#define CLI_MAX_PROPS 64

typedef struct cli_common {
    const char *config_path;
    const char *log_uri;
    const char *props[CLI_MAX_PROPS]; /* -X key=value, in order */
    size_t prop_count;
} cli_common;

/* The long options every tool accepts; append a tool's own after these. */
#define CLI_COMMON_LONGOPTS                                    \
    {"log", required_argument, NULL, 'l'},                     \
        {"config", required_argument, NULL, 'c'},              \
        {"property", required_argument, NULL, 'X'},            \
        {"help", no_argument, NULL, 'h'}
#define CLI_COMMON_SHORTOPTS "l:c:X:h"
#define CLI_COMMON_HELP                                                                   \
    "  --log URI          the log: sqlite:PATH, kafka:HOST:PORT[,...], mock[:HOST:PORT]\n" \
    "                     (env MSRS_LOG)\n"                                                \
    "  --config FILE      key = value configuration file (env MSRS_CONFIG)\n"              \
    "  -X KEY=VALUE       set any configuration key; kafka.* keys go to librdkafka\n"      \
    "                     (env MSRS_X=\"k=v;k=v\")\n"                                      \
    "  -h, --help         show this help\n"

/* Handles a common option; returns 1 when opt was one, 0 otherwise. */
int cli_common_opt(cli_common *c, int opt, const char *arg);

/* Builds the configuration: file (--config or MSRS_CONFIG), environment,
 * then --log and -X. Prints the error and returns NULL on a bad one. */
ev_conf *cli_conf_build(const char *prog, const cli_common *c);

/* Set by SIGINT/SIGTERM once cli_install_signals ran. */
extern volatile sig_atomic_t cli_stop;
void cli_install_signals(void);

#endif
