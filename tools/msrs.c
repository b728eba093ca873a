/* msrs — the operator CLI:
 *   msrs schemas                      the catalog: id, record, topic, key
 *   msrs emit TYPE JSON|-             produce records (JSON, or one per line
 *                                     on stdin) on the record's topic
 *   msrs emit -                       produce {"type": T, "value": {...}}
 *                                     lines of stdin, each of its own type
 *   msrs session start|stop|list|status, msrs devices (session.c)
 * The session and device views are the reducers' state folded from the
 * log, the same state the services and msrs-replay hold. */
#include "cli.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs [options] COMMAND ...\n\n"
               "commands:\n"
               "  schemas                 list the record types: id, name, topic, key field\n"
               "  emit TYPE JSON|-        produce a record of TYPE (e.g. NodeRegistered) from\n"
               "                          JSON, or one record per line of stdin with '-';\n"
               "                          the key is the record's key field; missing fields\n"
               "                          take their schema defaults\n"
               "  emit -                  produce one record per stdin line, each written as\n"
               "                          {\"type\": TYPE, \"value\": {...}}\n"
               "  session start [ID] [--devices A,B] [--min-group N] [--duration SEC]\n"
               "                [--label K=V]... [--wait] [--timeout SEC]\n"
               "                          request a recording session (CollectionRequested);\n"
               "                          with --wait follow it until it stopped and print\n"
               "                          its counts\n"
               "  session stop ID [--reason TEXT] [--wait] [--timeout SEC]\n"
               "  session list            every session: state, devices, start, duration\n"
               "  session status ID       one session's state as JSON\n"
               "  devices                 the device pool: node, connection, clock offset\n\n"
               "options:\n" CLI_COMMON_HELP
               "\nexit: 0 ok, 1 a record was refused or not acknowledged (or, with --wait, the\n"
               "session did not stop in time), 2 usage or unknown session\n");
}

static int cmd_schemas(void)
{
    printf("%-6s %-45s %-10s %s\n", "id", "record", "topic", "key");
    for (size_t i = 0; i < ev_schema_count(); i++) {
        const ev_schema *s = ev_schema_at(i);
        printf("%-6d %-45s %-10s %s\n", (int)ev_schema_id(s), ev_schema_name(s), ev_schema_topic(s),
               ev_schema_key_field(s));
    }
    return CLI_EXIT_OK;
}

/* Produces one record from text; where names the input for errors. */
static int emit_one(ev_log *log, const ev_schema *s, const char *text, const char *where)
{
    char err[512];
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);
    int rc;
    if (!j) {
        fprintf(stderr, "msrs emit: %s: column %d: %s\n", where, jerr.column, jerr.text);
        return -1;
    }
    if (!s) { /* a typed line: {"type": T, "value": {...}} */
        const char *type = json_string_value(json_object_get(j, "type"));
        json_t *value = json_object_get(j, "value");
        if (!type || !(s = ev_schema_by_name(type)) || !json_is_object(value)) {
            fprintf(stderr, "msrs emit: %s: expected {\"type\": a record type, \"value\": {...}}\n",
                    where);
            json_decref(j);
            return -1;
        }
        json_incref(value);
        json_decref(j);
        j = value;
    }
    const char *key = json_string_value(json_object_get(j, ev_schema_key_field(s)));
    if (!key || !*key) {
        fprintf(stderr, "msrs emit: %s: %s: expected a non-empty string (the key)\n", where,
                ev_schema_key_field(s));
        json_decref(j);
        return -1;
    }
    rc = ev_log_emit_json(log, s, key, j, NULL, err, sizeof(err));
    if (rc)
        fprintf(stderr, "msrs emit: %s: %s: %s\n", where, ev_schema_short_name(s), err);
    json_decref(j);
    return rc ? -1 : 0;
}

static int cmd_emit(ev_conf *conf, int argc, char **argv)
{
    char err[512];
    ev_log *log = NULL;
    const ev_schema *s;
    int exit_code = CLI_EXIT_OK;
    long long sent = 0, refused = 0;

    const char *input = argc > 0 ? argv[argc - 1] : "";
    if (argc == 1 && strcmp(argv[0], "-") == 0) {
        s = NULL; /* typed lines */
    } else if (argc != 2) {
        fprintf(stderr, "msrs emit: expected TYPE and JSON (or -), or - alone\n");
        return CLI_EXIT_USAGE;
    } else if (!(s = ev_schema_by_name(argv[0]))) {
        fprintf(stderr, "msrs emit: unknown record type '%s' (see 'msrs schemas')\n", argv[0]);
        return CLI_EXIT_USAGE;
    }
    if (ev_log_open(&log, conf, err, sizeof(err))) {
        fprintf(stderr, "msrs emit: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(input, "-") == 0) {
        char *line = NULL;
        size_t cap = 0;
        long lineno = 0;
        while (getline(&line, &cap, stdin) > 0) {
            char where[64];
            lineno++;
            if (strspn(line, " \t\r\n") == strlen(line))
                continue;
            snprintf(where, sizeof(where), "stdin:%ld", lineno);
            if (emit_one(log, s, line, where))
                refused++;
            else
                sent++;
        }
        free(line);
    } else if (emit_one(log, s, input, "argument")) {
        refused++;
    } else {
        sent++;
    }
    if (ev_log_flush(log, 30000, err, sizeof(err))) {
        fprintf(stderr, "msrs emit: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
    } else {
        fprintf(stderr, "msrs emit: %lld acknowledged, %lld refused\n", sent, refused);
    }
    if (refused)
        exit_code = CLI_EXIT_FAIL;
    ev_log_destroy(log);
    return exit_code;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    char **args;
    int n = cli_svc_args(&args);
    if (n == 0) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = args[0];
    if (strcmp(cmd, "schemas") == 0)
        return cmd_schemas();
    if (strcmp(cmd, "emit") == 0)
        return cmd_emit(conf, n - 1, args + 1);
    if (strcmp(cmd, "devices") == 0)
        return cmd_devices(conf, n - 1, args + 1);
    if (strcmp(cmd, "session") == 0)
        return cmd_session(conf, n - 1, args + 1);
    fprintf(stderr, "msrs: unknown command '%s'\n", cmd);
    usage(stderr);
    return CLI_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    cli_svc svc = {.name = "msrs",
                   .usage = usage,
                   .run = run,
                   .max_args = argc,
                   .no_log = 1, /* each command opens it when it needs it */
                   .subcommands = 1};
    return cli_svc_main(&svc, argc, argv);
}
