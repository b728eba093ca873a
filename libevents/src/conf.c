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
    char *origin; /* where it was set ("FILE:LINE", "-X", ...); NULL: by the program */
} conf_entry;

struct ev_conf {
    conf_entry *entries;
    size_t count, cap;
};

ev_conf *ev_conf_new(void)
{
    return calloc(1, sizeof(ev_conf));
}

void ev_conf_destroy(ev_conf *conf)
{
    if (!conf)
        return;
    for (size_t i = 0; i < conf->count; i++) {
        free(conf->entries[i].key);
        free(conf->entries[i].value);
        free(conf->entries[i].origin);
    }
    free(conf->entries);
    free(conf);
}

/* Sets key to value and remembers origin (copied; NULL: set by the program). */
static int conf_set_from(ev_conf *conf, const char *key, const char *value, const char *origin)
{
    char *v = strdup(value), *o = origin ? strdup(origin) : NULL;
    if (!v || (origin && !o)) {
        free(v);
        free(o);
        return EV_ERR_NOMEM;
    }
    for (size_t i = 0; i < conf->count; i++) {
        if (strcmp(conf->entries[i].key, key) == 0) {
            free(conf->entries[i].value);
            free(conf->entries[i].origin);
            conf->entries[i].value = v;
            conf->entries[i].origin = o;
            return 0;
        }
    }
    if (conf->count == conf->cap) {
        size_t cap = conf->cap ? conf->cap * 2 : 16;
        conf_entry *e = realloc(conf->entries, cap * sizeof(*e));
        if (!e) {
            free(v);
            free(o);
            return EV_ERR_NOMEM;
        }
        conf->entries = e;
        conf->cap = cap;
    }
    conf->entries[conf->count].key = strdup(key);
    conf->entries[conf->count].value = v;
    conf->entries[conf->count].origin = o;
    if (!conf->entries[conf->count].key) {
        free(v);
        free(o);
        return EV_ERR_NOMEM;
    }
    conf->count++;
    return 0;
}

int ev_conf_set(ev_conf *conf, const char *key, const char *value)
{
    return conf_set_from(conf, key, value, NULL);
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

/* ev_conf_set_pair, remembering origin. */
static int conf_set_pair_from(ev_conf *conf, const char *pair, const char *origin, char *errstr,
                              size_t errstr_size)
{
    char *copy = strdup(pair), *key, *value;
    int rc;
    if (!copy)
        return EV_ERR_NOMEM;
    rc = split_pair(copy, &key, &value);
    if (rc)
        rc = ev__fail(errstr, errstr_size, rc, "config '%s': expected key=value", pair);
    else
        rc = conf_set_from(conf, key, value, origin);
    free(copy);
    return rc;
}

int ev_conf_set_pair(ev_conf *conf, const char *pair, char *errstr, size_t errstr_size)
{
    return conf_set_pair_from(conf, pair, "-X", errstr, errstr_size);
}

const char *ev_conf_get(const ev_conf *conf, const char *key, const char *def)
{
    for (size_t i = 0; conf && i < conf->count; i++)
        if (strcmp(conf->entries[i].key, key) == 0)
            return conf->entries[i].value;
    return def;
}

int ev_conf_get_int(const ev_conf *conf, const char *key, int64_t def, int64_t *out, char *errstr,
                    size_t errstr_size)
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

int ev_conf_get_bool(const ev_conf *conf, const char *key, int def, int *out, char *errstr,
                     size_t errstr_size)
{
    const char *v = ev_conf_get(conf, key, def ? "true" : "false");
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "config %s: expected true or false, got '%s'", key, v);
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
            rc = ev__fail(errstr, errstr_size, EV_ERR_INVALID, "%s:%d: line longer than %zu", path,
                          lineno, sizeof(line) - 1);
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
        char origin[1100];
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        if ((rc = conf_set_from(conf, key, value, origin)))
            break;
    }
    fclose(f);
    return rc;
}

int ev_conf_apply_env(ev_conf *conf, char *errstr, size_t errstr_size)
{
    static const struct {
        const char *env, *key;
    } map[] = {
        {"MSRS_LOG", "log"}, {"MSRS_TOPIC_PREFIX", "topic.prefix"}, {"MSRS_SOURCE", "source"}};
    int rc = 0;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        const char *v = getenv(map[i].env);
        char origin[64];
        snprintf(origin, sizeof(origin), "environment %s", map[i].env);
        if (v && *v && (rc = conf_set_from(conf, map[i].key, v, origin)))
            return rc;
    }
    const char *x = getenv("MSRS_X");
    if (x && *x) {
        char *copy = strdup(x), *save = NULL;
        if (!copy)
            return EV_ERR_NOMEM;
        for (char *tok = strtok_r(copy, ";", &save); tok && !rc; tok = strtok_r(NULL, ";", &save))
            if (*trim(tok))
                rc = conf_set_pair_from(conf, tok, "environment MSRS_X", errstr, errstr_size);
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

/* 1 when key is pattern: an exact key, or "prefix.*" and key starts with
 * "prefix." and has more after it. */
static int key_matches(const char *key, const char *pattern)
{
    size_t n = strlen(pattern);
    if (n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.')
        return strncmp(key, pattern, n - 1) == 0 && key[n - 1] != '\0';
    return strcmp(key, pattern) == 0;
}

int ev_conf_check_keys(const ev_conf *conf, const char *const *known, char *errstr,
                       size_t errstr_size)
{
    for (size_t i = 0; conf && i < conf->count; i++) {
        const conf_entry *e = &conf->entries[i];
        size_t k = 0;
        while (known[k] && !key_matches(e->key, known[k]))
            k++;
        if (known[k])
            continue;
        if (e->origin)
            return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                            "unknown configuration key \"%s\" (from %s; see docs/config.md)",
                            e->key, e->origin);
        return ev__fail(errstr, errstr_size, EV_ERR_INVALID,
                        "unknown configuration key \"%s\" (see docs/config.md)", e->key);
    }
    return 0;
}
