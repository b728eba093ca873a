/* msrs-replay — rebuilds state from the log: folds every node, device and
 * session event with the reducers the services use (libevents' ev_state)
 * and prints the state as JSON.
 * This is the first slice of replay: --until, --verify, --refit and
 * --republish are not built yet (see docs/architecture.md). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-replay --log URI [options]\n"
               "Folds the nodes, devices, sessions and commands topics from the beginning with the\n"
               "services' reducers and prints the resulting state as JSON on stdout.\n\n"
               "  --compact          one line of JSON instead of indented\n"
               CLI_COMMON_HELP
               "\nProgress goes to stderr every second on long logs.\n"
               "exit: 0 ok, 1 a record could not be decoded or applied (named on stderr;\n"
               "the rest is still folded), 2 usage\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {CLI_COMMON_LONGOPTS,
                                              {"compact", no_argument, NULL, 'C'},
                                              {NULL, 0, NULL, 0}};
    cli_common common = {0};
    int opt, compact = 0, exit_code = CLI_EXIT_OK;
    char err[512];
    ev_log *log = NULL;
    ev_conf *conf;

    /* First thing: a SIGTERM that comes while starting must still stop us cleanly. */
    cli_install_signals();
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (cli_common_opt(&common, opt, optarg))
            continue;
        if (opt == 'h') {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (opt == 'C') {
            compact = 1;
            continue;
        }
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (optind < argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!(conf = cli_conf_build("msrs-replay", &common)))
        return CLI_EXIT_USAGE;
    if (ev_catalog_init(err, sizeof(err)) || ev_log_open(&log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        ev_conf_destroy(conf);
        return CLI_EXIT_USAGE;
    }
    ev_codec *codec = ev_codec_new();
    ev_state *state = ev_state_new();
    cli_projection p = {"msrs-replay", log, codec, state, 0, NULL, NULL, 0, 0};
    if (cli_projection_fold(&p))
        exit_code = CLI_EXIT_FAIL;
    int64_t records = p.records, bad = p.bad;
    json_t *j = ev_state_to_json(state);
    json_object_set_new(j, "records", json_integer(records));
    json_object_set_new(j, "undecodable", json_integer(bad));
    json_dumpf(j, stdout, JSON_SORT_KEYS | (compact ? JSON_COMPACT : JSON_INDENT(2)));
    fputc('\n', stdout);
    json_decref(j);
    if (bad)
        exit_code = CLI_EXIT_FAIL;
    ev_state_destroy(state);
    ev_codec_destroy(codec);
    ev_log_destroy(log);
    ev_conf_destroy(conf);
    return exit_code;
}
