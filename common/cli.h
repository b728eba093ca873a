/* cli.h — what every msrs binary shares (the common/ library, prefix cli_):
 * the common options (--log, --config, -X, --help), configuration
 * precedence (defaults < config file < environment < command line), exit
 * codes, signals, the start-up prologue (cli_svc_main), printing a
 * projection's notes, emitting one record and a growable buffer.
 * Unlike libevents, this library prints to stderr: it is the binaries'
 * voice. Nothing here is thread-safe unless it says so. */
#ifndef MSRS_CLI_H
#define MSRS_CLI_H
#include "ev.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

#define CLI_MAX_PROPS 64

typedef struct cli_common {
    const char *config_path;
    const char *log_uri;
    const char *props[CLI_MAX_PROPS]; /* -X key=value, in order */
    size_t prop_count;
    size_t props_dropped; /* -X past CLI_MAX_PROPS: refused by cli_conf_build */
} cli_common;

/* --version's getopt value (no short option). */
#define CLI_OPT_VERSION 0x100

/* The long options every tool accepts; append a tool's own after these
 * (CLI_COMMON_LONGOPT_COUNT of them). */
#define CLI_COMMON_LONGOPT_COUNT 5
#define CLI_COMMON_LONGOPTS                                                                        \
    {"log", required_argument, NULL, 'l'}, {"config", required_argument, NULL, 'c'},               \
        {"property", required_argument, NULL, 'X'}, {"help", no_argument, NULL, 'h'},              \
    {                                                                                              \
        "version", no_argument, NULL, CLI_OPT_VERSION                                              \
    }
#define CLI_COMMON_SHORTOPTS "l:c:X:h"
#define CLI_COMMON_HELP                                                                            \
    "  --log URI          the log: sqlite:PATH, kafka:HOST:PORT[,...], mock[:HOST:PORT]\n"         \
    "                     (env MSRS_LOG)\n"                                                        \
    "  --config FILE      key = value configuration file (env MSRS_CONFIG)\n"                      \
    "  -X KEY=VALUE       set a configuration key (docs/config.md); kafka.* go to librdkafka\n"    \
    "                     (env MSRS_X=\"k=v;k=v\")\n"                                              \
    "  -h, --help         show this help\n"                                                        \
    "  --version          print the version (msrs-NAME VERSION) and exit\n"

/* Handles a common option; returns 1 when opt was one, 0 otherwise. */
int cli_common_opt(cli_common *c, int opt, const char *arg);

/* Builds the configuration: file (--config or MSRS_CONFIG), environment,
 * then --log and -X. Prints the error and returns NULL on a bad one. The
 * caller owns the result (ev_conf_destroy). */
ev_conf *cli_conf_build(const char *prog, const cli_common *c);

/* Set by SIGINT/SIGTERM once cli_install_signals ran. */
extern volatile sig_atomic_t cli_stop;
void cli_install_signals(void);

/* ------------------------------------------------------------ svc_main */

/* What a binary's main() hands cli_svc_main. Everything is borrowed. */
typedef struct cli_svc {
    const char *name;   /* "msrs-syncd": messages are prefixed with it */
    const char *source; /* the "source" key when none is configured; NULL: leave it */
    void (*usage)(FILE *out);
    /* the binary's own options, after the common ones (NULL: none); opts
     * ends with a zero entry */
    const struct option *opts;
    const char *shortopts;
    /* called on the main thread for each of its own options: 0 taken,
     * non-zero a usage error */
    int (*on_opt)(void *arg, int opt, const char *optarg);
    /* after the configuration is built, before the log opens: read and
     * check keys, 0 or non-zero (a configuration error: errstr says which
     * key and what was expected; exit 2) */
    int (*configure)(void *arg, ev_conf *conf, char *errstr, size_t errstr_size);
    /* the binary's work, with the log open (NULL when CLI_SVC_NO_LOG);
     * returns the exit code. conf and log stay owned by cli_svc_main. */
    int (*run)(void *arg, ev_conf *conf, ev_log *log);
    void *arg;
    int max_args;    /* positional arguments allowed (argv[optind..]): see cli_svc_args */
    int no_log;      /* 1: do not open the log */
    int subcommands; /* 1: options end at the first argument (a subcommand's own follow) */
} cli_svc;

/* The start-up prologue every binary shares: signals first (a SIGTERM while
 * starting still stops cleanly), options (--help prints usage to stdout and
 * exits 0; a bad one prints it to stderr and exits 2), the configuration,
 * svc->configure, the catalog and the log, then svc->run. Returns the exit
 * code for main() to return. */
int cli_svc_main(const cli_svc *svc, int argc, char **argv);
/* Inside run: the positional arguments left after the options. */
int cli_svc_args(char ***argv);

/* Tells the service manager the service is ready — listening, its
 * projection caught up with the log — with status (one line, shown by
 * `systemctl status`): sd_notify READY=1 under a systemd unit of
 * Type=notify (deploy/systemd), nothing otherwise. Once per process: later
 * calls only update the status. cli_svc_main says STOPPING=1 when run
 * returns. */
void cli_ready(const char *status);

/* ------------------------------------------------------------- helpers */

/* Prints a projection's note on stderr as "<prog>: ..." (arg: the program
 * name, a const char *): an ev_projection_note_cb. */
void cli_print_note(void *prog, const ev_projection_note *note);

/* A copy of conf (every key), owned by the caller; NULL when out of
 * memory. */
ev_conf *cli_conf_copy(const ev_conf *conf);

/* Reads topics (logical names, at most 8) of the log conf names, from
 * `from` to their end, on a log handle of its own opened read-only (conf
 * is copied, not changed): fn(arg, ev) for each record that decodes (ev
 * lives during the call, on the calling thread). Records that fail their
 * checksum or do not decode are skipped, counted in *skipped. *records and
 * *skipped may be NULL. Returns 0 at the end (or when cli_stop is set), else
 * the log's error (errstr). */
int cli_read_topics(const ev_conf *conf, const char *const *topics, size_t count, ev_from from,
                    void (*fn)(void *arg, const ev_event *ev), void *arg, int64_t *records,
                    int64_t *skipped, char *errstr, size_t errstr_size);

/* "HOST:PORT" (a listener's address) into host (size bytes) and *port
 * (1-65535): 0, or -1 when text is not of that form. */
int cli_host_port(const char *text, char *host, size_t size, int *port);

/* An integer configuration key, its default, where it goes and its
 * smallest value. */
typedef struct cli_int_key {
    const char *key;
    int64_t def, *out, min;
} cli_int_key;
/* Reads each of keys[0..n) into its out: 0, or -1 said on stderr as prog
 * (the key, its value and what was expected). */
int cli_conf_ints(const ev_conf *conf, const cli_int_key *keys, size_t n, const char *prog);

/* {"error": code, "message": printf(fmt, ...)}: how every msrs HTTP API
 * says what went wrong. A new reference. */
json_t *cli_json_error(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A new session id from the wall clock, "ses-YYYYMMDDTHHMMSS" (UTC), as
 * msrs session start and the gateway name sessions they are not given an
 * id for. */
void cli_session_id(char *out, size_t size);
/* Emits a record given as JSON (borrowed) with event id id (NULL: a new
 * one) and waits until the log acknowledged it. Prints and returns the
 * error. */
int cli_emit(ev_log *log, const char *prog, const char *type, const char *key, json_t *value,
             const char *id);

/* A growable byte buffer. Zero-initialised is empty; cli_buf_free releases
 * it. Not NUL-terminated. */
typedef struct cli_buf {
    unsigned char *data;
    size_t len, cap;
} cli_buf;

/* Appends n bytes of p (copied). 0, or -1 when out of memory (the buffer
 * is unchanged). */
int cli_buf_append(cli_buf *b, const void *p, size_t n);
/* Room for n more bytes: where they go (b->data + b->len), or NULL when
 * out of memory (the buffer is unchanged). The caller writes them and adds
 * what it wrote to b->len; a buffer reused this way allocates only when a
 * message is larger than any before. */
unsigned char *cli_buf_room(cli_buf *b, size_t n);
/* The capacity cli_buf_append gives b to hold n more bytes (b->cap when
 * they fit): for callers that bound what a buffer may grow to. */
size_t cli_buf_cap_for(const cli_buf *b, size_t n);
void cli_buf_free(cli_buf *b);

/* Raises the process's soft limit on open descriptors to want (no higher
 * than the hard limit; never lowers it) and returns the soft limit then.
 * A server that holds many sockets calls it before libwebsockets sizes its
 * tables: lws indexes its table by descriptor when the table is as large as
 * this limit, and searches it linearly when fd_limit_per_thread makes it
 * smaller (~9 % of the agent at 1024 devices, perf). */
long cli_fd_limit_raise(long want);

/* A token bucket: rate_per_s tokens a second, at most burst held; starts
 * full (cli_bucket_init). Not thread-safe. */
typedef struct cli_bucket {
    double tokens;
    int64_t at_ns; /* when tokens was last brought up to date */
} cli_bucket;

void cli_bucket_init(cli_bucket *b, double burst, int64_t now_ns);
/* Takes one token: 1, or 0 when none is left (nothing taken). */
int cli_bucket_take(cli_bucket *b, double rate_per_s, double burst, int64_t now_ns);
/* ms until a token is there (0 when one is). */
int64_t cli_bucket_wait_ms(const cli_bucket *b, double rate_per_s);

#endif
