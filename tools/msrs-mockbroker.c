/* msrs-mockbroker — hosts librdkafka's mock cluster so several processes
 * share one in-memory "Kafka" (tests, demos). Prints the bootstrap
 * servers on stdout, creates every catalog topic with enough partitions
 * (and <prefix>leader with one, for ev_log_lead),
 * and runs until SIGINT/SIGTERM. Not a durable store: each partition
 * keeps about 5 MiB. */
#include "cli.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-mockbroker [--brokers N] [--partitions N] [--prefix P]\n"
               "                       [--bootstrap-file PATH]\n"
               "Runs librdkafka's mock Kafka cluster until interrupted and prints its\n"
               "bootstrap servers (HOST:PORT,...) as the first line on stdout.\n\n"
               "  --brokers N          brokers in the cluster (default 1)\n"
               "  --partitions N       partitions of each msrs topic (default 8)\n"
               "  --prefix P           topic prefix (default: config topic.prefix or msrs.)\n"
               "  --bootstrap-file F   also write the bootstrap servers to F\n"
               "  --config FILE, -X KEY=VALUE, -h/--help as every msrs tool\n"
               "\nexit: 0 after a signal, 1 the cluster could not start, 2 usage\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {CLI_COMMON_LONGOPTS,
                                              {"brokers", required_argument, NULL, 'b'},
                                              {"partitions", required_argument, NULL, 'p'},
                                              {"prefix", required_argument, NULL, 'P'},
                                              {"bootstrap-file", required_argument, NULL, 'B'},
                                              {NULL, 0, NULL, 0}};
    cli_common common = {0};
    int brokers = 1, partitions = 8, opt;
    const char *prefix = NULL, *bootstrap_file = NULL;
    char err[512];

    /* First thing: a SIGTERM that comes while starting must still stop us cleanly. */
    cli_install_signals();
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (cli_common_opt(&common, opt, optarg))
            continue;
        switch (opt) {
        case 'h': usage(stdout); return CLI_EXIT_OK;
        case 'b': brokers = atoi(optarg); break;
        case 'p': partitions = atoi(optarg); break;
        case 'P': prefix = optarg; break;
        case 'B': bootstrap_file = optarg; break;
        default: usage(stderr); return CLI_EXIT_USAGE;
        }
    }
    if (brokers < 1 || brokers > 16 || partitions < 1 || partitions > 1024 || optind < argc) {
        fprintf(stderr, "msrs-mockbroker: expected 1-16 brokers and 1-1024 partitions\n");
        return CLI_EXIT_USAGE;
    }
    ev_conf *conf = cli_conf_build("msrs-mockbroker", &common);
    if (!conf)
        return CLI_EXIT_USAGE;
    if (!prefix)
        prefix = ev_conf_get(conf, "topic.prefix", "msrs.");

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "log_level", "3", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "msrs-mockbroker: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "msrs-mockbroker: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return CLI_EXIT_FAIL;
    }
    for (size_t i = 0; i < ev_schema_count(); i++) {
        char topic[320];
        snprintf(topic, sizeof(topic), "%s%s", prefix, ev_schema_topic(ev_schema_at(i)));
        /* Several records share a topic: creating it twice is harmless. */
        rd_kafka_mock_topic_create(mc, topic, partitions, brokers < 3 ? brokers : 3);
    }
    /* Leadership (ev_log_lead) needs its topic with exactly one partition. */
    char leader[320];
    snprintf(leader, sizeof(leader), "%sleader", prefix);
    rd_kafka_mock_topic_create(mc, leader, 1, brokers < 3 ? brokers : 3);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    printf("%s\n", bootstrap);
    fflush(stdout);
    if (bootstrap_file) {
        char tmp[1100];
        snprintf(tmp, sizeof(tmp), "%s.tmp", bootstrap_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", bootstrap) < 0 || fclose(f) != 0 || rename(tmp, bootstrap_file)) {
            fprintf(stderr, "msrs-mockbroker: %s: cannot write\n", bootstrap_file);
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return CLI_EXIT_FAIL;
        }
    }
    while (!cli_stop) {
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    ev_conf_destroy(conf);
    return CLI_EXIT_OK;
}
