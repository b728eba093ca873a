/* cli.c — shared option handling of the msrs tools. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile sig_atomic_t cli_stop;

static void on_signal(int sig)
{
    (void)sig;
    cli_stop = 1;
}

void cli_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_common_opt(cli_common *c, int opt, const char *arg)
{
    switch (opt) {
    case 'l': c->log_uri = arg; return 1;
    case 'c': c->config_path = arg; return 1;
    case 'X':
        if (c->prop_count < CLI_MAX_PROPS)
            c->props[c->prop_count++] = arg;
        return 1;
    default: return 0;
    }
}

ev_conf *cli_conf_build(const char *prog, const cli_common *c)
{
    char err[512];
    ev_conf *conf = ev_conf_new();
    const char *path = c->config_path ? c->config_path : getenv("MSRS_CONFIG");
    if (!conf)
        return NULL;
    if (path && *path && ev_conf_load_file(conf, path, err, sizeof(err)))
        goto fail;
    if (ev_conf_apply_env(conf, err, sizeof(err)))
        goto fail;
    if (c->log_uri)
        ev_conf_set(conf, "log", c->log_uri);
    for (size_t i = 0; i < c->prop_count; i++)
        if (ev_conf_set_pair(conf, c->props[i], err, sizeof(err)))
            goto fail;
    return conf;
fail:
    fprintf(stderr, "%s: %s\n", prog, err);
    ev_conf_destroy(conf);
    return NULL;
}
