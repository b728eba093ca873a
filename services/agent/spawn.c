/* spawn.c — the services of a node's plan that run as processes of their
 * own: msrs-capture, when the plan names "capture" (the supervisor names it
 * for a node that registered with the capability "camera": a path matches
 * capture.devices). The agent starts it beside itself, as a device client
 * of its own endpoint, passes it the configuration it needs (its device
 * URL, the node's id as the cameras' prefix, and its own tls.*, auth.* and
 * capture.* keys, whatever set them), restarts it when it exits (1 s, then
 * doubling to 30 s; the exit status said), and stops it (SIGTERM, SIGKILL
 * after 5 s) when the plan no longer names it or the agent stops. */
#include "agent.h"

#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int add_arg(ag_spawn *s, const char *a)
{
    if (s->argc + 2 > AG_SPAWN_ARGS)
        return -1;
    s->argv[s->argc] = strdup(a);
    if (!s->argv[s->argc])
        return -1;
    s->argv[++s->argc] = NULL;
    return 0;
}

typedef struct pass_ctx {
    ag_spawn *s;
    const char *prefix;
} pass_ctx;

/* key: without its prefix (ev_conf_foreach) */
static int pass_key(void *arg, const char *rest, const char *value)
{
    pass_ctx *p = arg;
    ag_spawn *s = p->s;
    char kv[1024], key[256];
    snprintf(key, sizeof(key), "%s%s", p->prefix, rest);
    if (strcmp(key, "capture.agent") == 0 || strcmp(key, "capture.id_prefix") == 0)
        return 0; /* the agent's own, below */
    if (strcmp(key, "auth.token") == 0 || strcmp(key, "auth.node_token") == 0)
        return 0; /* secrets never on a command line (and not capture's) */
    snprintf(kv, sizeof(kv), "%s=%s", key, value);
    return add_arg(s, "-X") || add_arg(s, kv);
}

int ag_spawn_init(ag_spawn *s, const ev_conf *conf, const ag_config *cfg, const cli_tls *tls,
                  char *errstr, size_t errstr_size)
{
    memset(s, 0, sizeof(*s));
    const char *mode = ev_conf_get(conf, "agent.capture", "auto");
    if (strcmp(mode, "auto") != 0 && strcmp(mode, "off") != 0) {
        snprintf(errstr, errstr_size, "config agent.capture: expected auto or off, got '%s'", mode);
        return -1;
    }
    s->enabled = strcmp(mode, "auto") == 0;
    snprintf(s->devices, sizeof(s->devices), "%s",
             ev_conf_get(conf, "capture.devices", "/dev/video*"));
    char bin[1024] = "";
    const char *path = ev_conf_get(conf, "agent.capture_bin", NULL);
    if (!path) { /* beside this binary */
        ssize_t n = readlink("/proc/self/exe", bin, sizeof(bin) - 32);
        char *slash = n > 0 ? (bin[n] = '\0', strrchr(bin, '/')) : NULL;
        if (slash)
            snprintf(slash + 1, sizeof(bin) - (size_t)(slash + 1 - bin), "msrs-capture");
        else
            snprintf(bin, sizeof(bin), "msrs-capture");
        path = bin;
    }
    char url[300], prefix[AG_ID_MAX + 2];
    const char *host = strcmp(cfg->host, "0.0.0.0") == 0 ? "127.0.0.1" : cfg->host;
    snprintf(url, sizeof(url), "capture.agent=%s://%s:%d/v1/devices", cli_tls_ws_scheme(tls), host,
             cfg->port);
    snprintf(prefix, sizeof(prefix), "%s.", cfg->node_id);
    char idp[AG_ID_MAX + 32];
    snprintf(idp, sizeof(idp), "capture.id_prefix=%s", prefix);
    if (add_arg(s, path) || add_arg(s, "-X") || add_arg(s, url) || add_arg(s, "-X") ||
        add_arg(s, idp) || ev_conf_foreach(conf, "tls.", pass_key, &(pass_ctx){s, "tls."}) ||
        ev_conf_foreach(conf, "auth.", pass_key, &(pass_ctx){s, "auth."}) ||
        ev_conf_foreach(conf, "capture.", pass_key, &(pass_ctx){s, "capture."})) {
        snprintf(errstr, errstr_size, "msrs-capture's arguments: out of memory or too many keys");
        ag_spawn_free(s);
        return -1;
    }
    return 0;
}

int ag_spawn_cameras(const ag_spawn *s)
{
    glob_t g;
    if (!s->enabled || glob(s->devices, 0, NULL, &g) != 0)
        return 0;
    int n = (int)g.gl_pathc;
    globfree(&g);
    return n > 0;
}

/* The next start after a failure: 1 s, doubling to 30 s. */
static void back_off(ag_spawn *s, int64_t now)
{
    s->backoff_ms = s->backoff_ms ? (s->backoff_ms * 2 > 30000 ? 30000 : s->backoff_ms * 2) : 1000;
    s->restart_at_ns = now + s->backoff_ms * 1000000;
}

static void start(ag_spawn *s, int64_t now)
{
    pid_t pid;
    int rc = posix_spawn(&pid, s->argv[0], NULL, NULL, s->argv, environ);
    if (rc != 0) {
        back_off(s, now);
        fprintf(stderr, "msrs-agent: plan: cannot start %s: %s (again in %lld ms)\n", s->argv[0],
                strerror(rc), (long long)s->backoff_ms);
        return;
    }
    s->pid = pid;
    s->started_at_ns = now;
    s->starts++;
    fprintf(stderr, "msrs-agent: plan: started %s (pid %d) for cameras %s\n", s->argv[0], (int)pid,
            s->devices);
}

void ag_spawn_want(ag_spawn *s, int wanted, int64_t now)
{
    if (!s->argc)
        return;
    if (wanted && !s->enabled) {
        if (!s->said_off)
            fprintf(stderr, "msrs-agent: plan names capture; agent.capture = off: not started\n");
        s->said_off = 1;
        return;
    }
    s->wanted = wanted;
    if (wanted && !s->pid && now >= s->restart_at_ns)
        start(s, now);
    else if (!wanted && s->pid && !s->kill_at_ns) { /* SIGTERM now, SIGKILL from the tick */
        kill(s->pid, SIGTERM);
        s->kill_at_ns = now + 5000000000LL;
    }
}

void ag_spawn_tick(ag_spawn *s, int64_t now)
{
    int status;
    if (s->pid && waitpid(s->pid, &status, WNOHANG) == s->pid) {
        s->pid = 0;
        if (s->kill_at_ns) { /* stopped as the plan asked */
            s->kill_at_ns = 0;
            fprintf(stderr, "msrs-agent: plan: %s stopped\n", s->argv[0]);
            return;
        }
        s->exits++;
        /* a run that lasted a minute starts the backoff again */
        if (now - s->started_at_ns > 60000000000LL)
            s->backoff_ms = 0;
        back_off(s, now);
        if (WIFSIGNALED(status))
            fprintf(stderr, "msrs-agent: %s was killed by signal %d: started again in %lld ms\n",
                    s->argv[0], WTERMSIG(status), (long long)s->backoff_ms);
        else
            fprintf(stderr, "msrs-agent: %s exited with %d: started again in %lld ms\n", s->argv[0],
                    WEXITSTATUS(status), (long long)s->backoff_ms);
    }
    if (s->pid && s->kill_at_ns && now >= s->kill_at_ns) {
        fprintf(stderr, "msrs-agent: %s did not stop within 5 s of SIGTERM: killed\n", s->argv[0]);
        kill(s->pid, SIGKILL);
        s->kill_at_ns = now + 1000000000LL; /* reaped by a later tick */
    }
    if (s->wanted && !s->pid && now >= s->restart_at_ns)
        start(s, now);
}

/* Waits (up to 5 s, then SIGKILL): for the agent's exit only, where
 * nothing else runs on its thread any more. */
void ag_spawn_stop(ag_spawn *s)
{
    int status;
    s->wanted = 0;
    if (!s->pid)
        return;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 500; i++) { /* 5 s */
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fprintf(stderr, "msrs-agent: %s stopped with %s %d\n", s->argv[0],
                        WIFEXITED(status) ? "exit status" : "signal",
                        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            return;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "msrs-agent: %s did not stop within 5 s of SIGTERM: killed\n", s->argv[0]);
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
}

void ag_spawn_free(ag_spawn *s)
{
    ag_spawn_stop(s);
    for (int i = 0; i < s->argc; i++)
        free(s->argv[i]);
    s->argc = 0;
}
