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
/* Monotonic milliseconds, for intervals and deadlines. */
int64_t cli_mono_ms(void);
void cli_install_signals(void);

/* A state that is a projection of the log: every record of its topics,
 * from the beginning, folded with the shared reducers. Services run it
 * (cli_projection_run: once caught up, check(arg) every check_ms); tools
 * fold to the end (cli_projection_fold) or step it themselves. */
typedef struct cli_position {
    char topic[256];
    int32_t partition;
    int64_t read, folded; /* next offsets */
} cli_position;

typedef struct cli_projection {
    const char *prog;
    ev_log *log;
    ev_state *state;
    int64_t check_ms;
    void (*check)(void *arg);
    void *arg;
    int64_t records, bad; /* out: folded, and skipped (named on stderr) */
    /* optional bounds: records at or past limit[topic][partition] (same
     * shape; borrowed) or with event time > until_ns (0: none) are not folded */
    json_t *limit;
    int64_t until_ns;
    /* cli_projection_run writes a snapshot here after each check (config
     * state.file; NULL: none) — what `msrs-replay --verify` compares */
    const char *state_file;
    int64_t gaps; /* out: holes in a partition's offsets (reported on stderr) */
    /* internal: per topic and partition, the next offset read and folded
     * (an array, not JSON: it is updated for every record) */
    struct cli_position *pos;
    size_t pos_count, pos_last;
} cli_projection;

/* The topics the reducers fold: nodes, devices, sessions, commands. */
extern const char *const cli_state_topics[4];

/* Assigns topics (logical names) from the beginning. */
int cli_projection_start(cli_projection *p, const char *const *topics, size_t topic_count);
/* Polls one record and folds it. Returns 0 (folded or skipped), EV_ERR_END
 * (caught up), EV_ERR_TIMED_OUT, or the log's error (printed). */
int cli_projection_step(cli_projection *p, int timeout_ms);
/* Start, then run until SIGINT/SIGTERM. Returns an exit code: CLI_EXIT_OK,
 * or CLI_EXIT_FAIL when the log failed. */
int cli_projection_run(cli_projection *p, const char *const *topics, size_t topic_count);
/* Start on topics and fold to their end, with progress on stderr every
 * second. Returns 0, or -1 when the log failed. */
int cli_projection_fold(cli_projection *p, const char *const *topics, size_t topic_count);
/* The state as JSON with "positions" ({"<topic>": {"<partition>": next
 * offset folded}}), "records", "undecodable" and "offset_gaps": what a
 * service's state.file holds and what msrs-replay prints. New object. */
json_t *cli_projection_snapshot(const cli_projection *p);
/* Frees what the projection owns (positions). */
void cli_projection_free(cli_projection *p);

/* mkdir -p. 0 or -1 (errno). */
int cli_mkdirs(const char *path);

/* Emits a record given as JSON (borrowed) with event id id (NULL: a new
 * one) and waits until the log acknowledged it. Prints and returns the
 * error. */
int cli_emit(ev_log *log, const char *prog, const char *type, const char *key, json_t *value,
             const char *id);

#endif
