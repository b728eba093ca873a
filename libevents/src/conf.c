/* conf.c — key = value configuration: defaults < file < environment <
 * command line, the same for every msrs binary. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct conf_entry {
    char *key;
    char *value;
} conf_entry;

struct ev_conf {
    conf_entry *entries;
    size_t count, cap;
};

ev_conf *ev_conf_new(void) { return calloc(1, sizeof(ev_conf)); }

void ev_conf_destroy(ev_conf *conf)
{
    if (!conf)
        return;
    for (size_t i = 0; i < conf->count; i++) {
        free(conf->entries[i].key);
        free(conf->entries[i].value);
    }
    free(conf->entries);
    free(conf);
}

int ev_conf_set(ev_conf *conf, const char *key, const char *value)
{
    char *v = strdup(value);
    if (!v)
        return EV_ERR_NOMEM;
    for (size_t i = 0; i < conf->count; i++) {
        if (strcmp(conf->entries[i].key, key) == 0) {
            free(conf->entries[i].value);
            conf->entries[i].value = v;
            return 0;
        }
    }
    if (conf->count == conf->cap) {
        size_t cap = conf->cap ? conf->cap * 2 : 16;
        conf_entry *e = realloc(conf->entries, cap * sizeof(*e));
        if (!e) {
            free(v);
            return EV_ERR_NOMEM;
        }
        conf->entries = e;
        conf->cap = cap;
    }
    conf->entries[conf->count].key = strdup(key);
    conf->entries[conf->count].value = v;
    if (!conf->entries[conf->count].key) {
        free(v);
        return EV_ERR_NOMEM;
    }
    conf->count++;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Splits "key = value" in place; returns 0 or EV_ERR_INVALID. */
static int split_pair(char *line, char **key, char **value)
{
    char *eq = strchr(line, '=');
    if (!eq)
        return EV_ERR_INVALID;
    *eq = '\0';
    *key = trim(line);
    *value = trim(eq + 1);
    return **key ? 0 : EV_ERR_INVALID;
}

int ev_conf_set_pair(ev_conf *conf, const char *pair, char *errstr, size_t errstr_size)
{
    char *copy = strdup(pair), *key, *value;
    int rc;
    if (!copy)
        return EV_ERR_NOMEM;
    rc = split_pair(copy, &key, &value);
    if (rc)
        rc = ev__fail(errstr, errstr_size, rc, "config '%s': expected key=value", pair);
    else
        rc = ev_conf_set(conf, key, value);
    free(copy);
    return rc;
}

const char *ev_conf_get(const ev_conf *conf, const char *key, const char *def)
{
    for (size_t i = 0; conf && i < conf->count; i++)
        if (strcmp(conf->entries[i].key, key) == 0)
            return conf->entries[i].value;
    return def;
}

int ev_conf_get_int(const ev_conf *conf, const char *key, int64_t def, int64_t *out,
                    char *errstr, size_t errstr_size)
{
    const char *v = ev_conf_get(conf, key, NULL);
    char *end;
    long long x;
    if (!v) {
        *out = def;
        return 0;
    }
    errno = 0;
    x = strtoll(v, &end, 0);
    if (errno || end == v || *end != '\0')
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "config %s: expected an integer, got '%s'", key, v);
    *out = x;
    return 0;
}

int ev_conf_load_file(ev_conf *conf, const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int lineno = 0, rc = 0;
    if (!f)
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID, "%s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char *key, *value, *s;
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID, "%s:%d: line longer than %zu",
                          path, lineno, sizeof(line) - 1);
            break;
        }
        if ((s = strchr(line, '#')))
            *s = '\0';
        s = trim(line);
        if (!*s)
            continue;
        if (split_pair(s, &key, &value)) {
            rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                          "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            break;
        }
        if ((rc = ev_conf_set(conf, key, value)))
            break;
    }
    fclose(f);
    return rc;
}

int ev_conf_apply_env(ev_conf *conf, char *errstr, size_t errstr_size)
{
    static const struct {
        const char *env, *key;
    } map[] = {{"MSRS_LOG", "log"}, {"MSRS_TOPIC_PREFIX", "topic.prefix"}, {"MSRS_SOURCE", "source"}};
    int rc = 0;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const char *v = getenv(map[i].env);
        if (v && *v && (rc = ev_conf_set(conf, map[i].key, v)))
            return rc;
    }
    const char *x = getenv("MSRS_X");
    if (x && *x) {
        char *copy = strdup(x), *save = NULL;
        if (!copy)
            return EV_ERR_NOMEM;
        for (char *tok = strtok_r(copy, ";", &save); tok && !rc; tok = strtok_r(NULL, ";", &save))
            if (*trim(tok))
                rc = ev_conf_set_pair(conf, tok, errstr, errstr_size);
        free(copy);
        if (rc)
            return ev__fail(errstr, errstr_size, rc, "MSRS_X: expected 'key=value;key=value'");
    }
    return 0;
}

int ev_conf_foreach(const ev_conf *conf, const char *prefix,
                    int (*fn)(void *opaque, const char *key, const char *value), void *opaque)
{
    size_t plen = strlen(prefix);
    for (size_t i = 0; conf && i < conf->count; i++) {
        if (strncmp(conf->entries[i].key, prefix, plen) != 0)
            continue;
        int rc = fn(opaque, conf->entries[i].key + plen, conf->entries[i].value);
        if (rc)
            return rc;
    }
    return 0;
}
