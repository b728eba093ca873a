/* msrs-mockbroker — hosts librdkafka's mock cluster so several processes
 * share one in-memory "Kafka" (tests, demos). Prints the bootstrap
 * servers on stdout, creates every catalog topic with its partitions
 * (schemas/catalog.json), and runs until SIGINT/SIGTERM. Not a durable store: each partition
 * keeps about 5 MiB. */
#include "cli.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Set by SIGUSR1 (brokers down) / SIGUSR2 (up); the loop applies it. */
static volatile sig_atomic_t want_down, want_up;
static void on_usr(int sig)
{
    if (sig == SIGUSR1)
        want_down = 1;
    else
        want_up = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-mockbroker [--brokers N] [--partitions N] [--prefix P]\n"
               "                       [--bootstrap-file PATH]\n"
               "Runs librdkafka's mock Kafka cluster until interrupted and prints its\n"
               "bootstrap servers (HOST:PORT,...) as the first line on stdout.\n\n"
               "  --brokers N          brokers in the cluster (default 1)\n"
               "  --partitions N       partitions of each msrs topic but the leader\n"
               "                       (default: the catalog's, docs/topics.md)\n"
               "  --prefix P           topic prefix (default: config topic.prefix or msrs.)\n"
               "  --bootstrap-file F   also write the bootstrap servers to F\n"
               "Fault injection (librdkafka's rd_kafka_mock_broker_set_down/up): SIGUSR1\n"
               "takes every broker down (connections closed, new ones refused), SIGUSR2\n"
               "brings them back; each is said on stderr.\n"
               "  --config FILE, -X KEY=VALUE, -h/--help as every msrs tool\n"
               "\nexit: 0 after a signal, 1 the cluster could not start, 2 usage\n");
}

typedef struct mb_opts {
    int brokers, partitions;
    const char *prefix, *bootstrap_file;
} mb_opts;

static int on_opt(void *arg, int opt, const char *val)
{
    mb_opts *m = arg;
    switch (opt) {
    case 'b': m->brokers = atoi(val); return 0;
    case 'p': m->partitions = atoi(val); return 0;
    case 'P': m->prefix = val; return 0;
    case 'B': m->bootstrap_file = val; return 0;
    default: return -1;
    }
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    mb_opts *m = arg;
    if (m->brokers < 1 || m->brokers > 16 || m->partitions < 0 || m->partitions > 1024) {
        snprintf(errstr, errstr_size,
                 "expected 1-16 brokers and 1-1024 partitions (0: the catalog's)");
        return -1;
    }
    if (!m->prefix)
        m->prefix = ev_conf_get(conf, "topic.prefix", "msrs.");
    return 0;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    mb_opts *m = arg;
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "log_level", "3", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "msrs-mockbroker: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, m->brokers);
    if (!mc) {
        fprintf(stderr, "msrs-mockbroker: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return CLI_EXIT_FAIL;
    }
    /* Every catalog topic with its partitions (docs/topics.md), or
     * --partitions for each whose count is not exact (the leader topic). */
    for (size_t i = 0; i < ev_topic_count(); i++) {
        const ev_topic *t = ev_topic_at(i);
        char topic[320];
        snprintf(topic, sizeof(topic), "%s%s", m->prefix, ev_topic_name(t));
        int parts =
            m->partitions && !ev_topic_partitions_exact(t) ? m->partitions : ev_topic_partitions(t);
        rd_kafka_mock_topic_create(mc, topic, parts, m->brokers < 3 ? m->brokers : 3);
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    printf("%s\n", bootstrap);
    fflush(stdout);
    if (m->bootstrap_file) {
        char tmp[1100];
        snprintf(tmp, sizeof(tmp), "%s.tmp", m->bootstrap_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", bootstrap) < 0 || fclose(f) != 0 ||
            rename(tmp, m->bootstrap_file)) {
            fprintf(stderr, "msrs-mockbroker: %s: cannot write\n", m->bootstrap_file);
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return CLI_EXIT_FAIL;
        }
    }
    struct sigaction sa = {.sa_handler = on_usr};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    while (!cli_stop) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        if (want_down || want_up) {
            int down = want_down;
            want_down = want_up = 0;
            for (int b = 1; b <= m->brokers; b++)
                down ? rd_kafka_mock_broker_set_down(mc, b) : rd_kafka_mock_broker_set_up(mc, b);
            fprintf(stderr, "msrs-mockbroker: %d brokers %s\n", m->brokers, down ? "down" : "up");
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"prefix", required_argument, NULL, 'P'},
                                         {"bootstrap-file", required_argument, NULL, 'B'},
                                         {NULL, 0, NULL, 0}};
    mb_opts m = {.brokers = 1, .partitions = 0};
    cli_svc svc = {.name = "msrs-mockbroker",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &m,
                   .no_log = 1};
    return cli_svc_main(&svc, argc, argv);
}
