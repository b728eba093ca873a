/* fuzz_conf — the configuration parser: the input as a config file
 * (ev_conf_load_file on a temporary file), each of its lines as a -X pair
 * (ev_conf_set_pair), then ev_conf_check_keys against the known keys and
 * ev_conf_get_int of every key that was set; the same input as MSRS_X
 * (ev_conf_apply_env). MSRS_X is put once with putenv on a static buffer
 * that each input overwrites: glibc's setenv keeps every value it was ever
 * given (so that old getenv pointers stay valid), which grew this target
 * by ~1 GB per 2 M inputs until libFuzzer stopped it out of memory. */
#include "ev.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];
static char env_x[sizeof("MSRS_X=") + 65536] = "MSRS_X=";

static void remove_file(void)
{
    unlink(path);
}

static int get_each(void *opaque, const char *key, const char *value)
{
    const ev_conf *conf = opaque;
    char err[256];
    int64_t n;
    ev_conf_get_int(conf, key, 0, &n, err, sizeof(err));
    if (strcmp(ev_conf_get(conf, key, ""), value) != 0)
        abort(); /* foreach and get disagree */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    if (!*path) {
        snprintf(path, sizeof(path), "%s/fuzz_conf.%d",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
        atexit(remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);

    ev_conf *conf = ev_conf_new();
    ev_conf_load_file(conf, path, err, sizeof(err));
    ev_conf_check_keys(conf, ev_conf_known_keys, err, sizeof(err));
    ev_conf_foreach(conf, "", get_each, conf);
    ev_conf_destroy(conf);

    /* the same lines as -X key=value pairs */
    conf = ev_conf_new();
    char *copy = malloc(size + 1), *save = NULL;
    memcpy(copy, data, size);
    copy[size] = '\0';
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        ev_conf_set_pair(conf, line, err, sizeof(err));
    ev_conf_check_keys(conf, ev_conf_known_keys, err, sizeof(err));
    ev_conf_foreach(conf, "", get_each, conf);
    ev_conf_destroy(conf);

    /* the whole input (to its first NUL, at most 64 KiB) as MSRS_X="k=v;k=v" */
    conf = ev_conf_new();
    size_t n = size < sizeof(env_x) - sizeof("MSRS_X=") ? size : sizeof(env_x) - sizeof("MSRS_X=");
    memcpy(env_x + strlen("MSRS_X="), data, n);
    env_x[strlen("MSRS_X=") + n] = '\0';
    static int put;
    if (!put++ && putenv(env_x) != 0)
        abort();
    ev_conf_apply_env(conf, err, sizeof(err));
    ev_conf_check_keys(conf, ev_conf_known_keys, err, sizeof(err));
    ev_conf_foreach(conf, "", get_each, conf);
    ev_conf_destroy(conf);
    free(copy);
    return 0;
}
