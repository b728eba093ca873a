/* msrs-tail — prints the records of log topics as JSON, one object a line:
 * {"topic", "partition", "offset", "timestamp", "key", "type", "id",
 *  "source", "time", "value": <decoded Avro value>}. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: msrs-tail --log URI --topic NAME [--topic NAME...] [options]\n"
               "Prints every record of the topics as one JSON object a line.\n\n"
               "  --topic NAME       topic to read: a logical name (\"sessions\") gets the\n"
               "                     topic.prefix, a full name is used as it is; \"all\" = every\n"
               "                     topic of the catalog\n"
               "  --from WHERE       beginning (default) | end | OFFSET | RFC 3339 time\n"
               "  --follow           keep printing new records until interrupted\n"
               "  --cursor NAME      read as a named cursor (resume where it stopped; commit\n"
               "                     after each record printed); ignores --from\n"
               "  --max N            stop after N records\n"
               "  --json-ns-strings  every *_ns field (ns times and durations, 19 digits) as a\n"
               "                     string: JavaScript and jq 1.6 read numbers as doubles,\n"
               "                     exact only to 2^53 (about 104 days in ns)\n" CLI_COMMON_HELP
               "\nexit: 0 ok, 1 a record could not be decoded or failed its checksum, offsets\n"
               "are missing, or the log failed; 2 usage\n");
}

static int parse_from(const char *s, ev_from *from)
{
    char *end;
    if (strcmp(s, "beginning") == 0) {
        *from = (ev_from){EV_FROM_BEGINNING, 0};
        return 0;
    }
    if (strcmp(s, "end") == 0) {
        *from = (ev_from){EV_FROM_END, 0};
        return 0;
    }
    long long off = strtoll(s, &end, 10);
    if (*s && *end == '\0' && off >= 0) {
        *from = (ev_from){EV_FROM_OFFSET, off};
        return 0;
    }
    int64_t ns;
    if (ev_parse_time(s, strlen(s), &ns) == 0) {
        *from = (ev_from){EV_FROM_TIME, ns / 1000000};
        return 0;
    }
    return -1;
}

/* Every integer of v under a key ending in "_ns" (a time or a duration in
 * ns: 19 digits, past the 2^53 a JavaScript number or jq 1.6 keeps exact)
 * becomes its decimal string, in objects and arrays at any depth. */
static void ns_strings(json_t *v, int ns)
{
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, k, x)
        {
            size_t n = strlen(k);
            int is_ns = n > 3 && strcmp(k + n - 3, "_ns") == 0;
            if (is_ns && json_is_integer(x))
                json_object_set_new(v, k, json_sprintf("%lld", (long long)json_integer_value(x)));
            else
                ns_strings(x, is_ns);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x)
        {
            if (ns && json_is_integer(x))
                json_array_set_new(v, i, json_sprintf("%lld", (long long)json_integer_value(x)));
            else
                ns_strings(x, 0);
        }
    }
}

/* Prints msg as one JSON line; returns 0, or -1 when it could not decode.
 * corrupt is the log's error for a record that failed its checksum (NULL
 * for a sound one): printed with it, never decoded. ns_as_strings: the
 * value's *_ns integers as strings (ns_strings). */
static int print_record(ev_codec *codec, const ev_msg *m, const char *corrupt, int ns_as_strings)
{
    char err[2048], when[48];
    ev_event ev;
    json_t *value = NULL, *out;
    int rc = -1;
    if (corrupt)
        snprintf(err, sizeof(err), "%s", corrupt);
    else
        rc = ev_event_decode(codec, m, &ev, err, sizeof(err));
    if (rc == 0)
        rc = ev_value_to_json(ev.value, &value, err, sizeof(err));
    if (rc == 0 && ns_as_strings)
        ns_strings(value, 0);
    out = json_pack("{s:s, s:i, s:I, s:I, s:s%}", "topic", m->topic, "partition", (int)m->partition,
                    "offset", (json_int_t)m->offset, "timestamp", (json_int_t)m->timestamp_ms,
                    "key", m->key ? (const char *)m->key : "", m->key_len);
    if (rc == 0) {
        json_object_set_new(out, "type", json_string(ev_schema_name(ev.schema)));
        json_object_set_new(out, "id", json_string(ev.id));
        json_object_set_new(out, "source", json_string(ev.source));
        json_object_set_new(out, "time",
                            json_string(ev_format_time(ev.time_ns, when, sizeof(when))));
        json_object_set_new(out, "value", value);
    } else {
        json_object_set_new(out, "error", json_string(err));
        fprintf(stderr, "msrs-tail: %s\n", err);
    }
    char *line = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (line) {
        fputs(line, stdout);
        fputc('\n', stdout);
        free(line);
    }
    json_decref(out);
    return rc ? -1 : 0;
}

typedef struct tail_opts {
    const char *names[64];
    size_t name_count;
    ev_from from;
    const char *cursor;
    int follow;
    int ns_strings; /* --json-ns-strings */
    long long max;
} tail_opts;

static int on_opt(void *arg, int opt, const char *val)
{
    tail_opts *t = arg;
    switch (opt) {
    case 't':
        if (t->name_count < 64)
            t->names[t->name_count++] = val;
        return 0;
    case 'f':
        if (parse_from(val, &t->from) == 0)
            return 0;
        fprintf(stderr,
                "msrs-tail: --from '%s': expected beginning, end, an offset or "
                "an RFC 3339 time\n",
                val);
        return -1;
    case 'F': t->follow = 1; return 0;
    case 'S': t->ns_strings = 1; return 0;
    case 'C': t->cursor = val; return 0;
    case 'm': t->max = atoll(val); return 0;
    default: return -1;
    }
}

static int configure(void *arg, ev_conf *conf, char *errstr, size_t errstr_size)
{
    const tail_opts *t = arg;
    if (t->name_count == 0) {
        snprintf(errstr, errstr_size, "--topic is required (see --help)");
        return -1;
    }
    /* Without a cursor nothing is written: the log is opened read-only. */
    if (!t->cursor && !ev_conf_get(conf, "log.read_only", NULL))
        ev_conf_set(conf, "log.read_only", "true");
    return 0;
}

static int run(void *arg, ev_conf *conf, ev_log *log)
{
    tail_opts *t = arg;
    int exit_code = CLI_EXIT_OK;
    long long printed = 0, corrupt = 0;
    char err[2048], last_err[2048] = "";
    /* a hole in a partition's offsets means records were lost: said */
    ev_offsets *seen = ev_offsets_new(!t->cursor && t->from.kind == EV_FROM_BEGINNING);
    int64_t holes = 0;
    ev_codec *codec = NULL;
    char topics_buf[64][320];
    const char *topics[64];
    size_t topic_count = 0;

    for (size_t i = 0; i < t->name_count; i++) {
        if (strcmp(t->names[i], "all") == 0) {
            for (size_t k = 0; k < ev_schema_count() && topic_count < 64; k++) {
                const char *name = ev_schema_topic(ev_schema_at(k));
                ev_log_topic(log, name, topics_buf[topic_count], sizeof(topics_buf[0]));
                int dup = 0;
                for (size_t j = 0; j < topic_count; j++)
                    dup |= strcmp(topics[j], topics_buf[topic_count]) == 0;
                if (!dup) {
                    topics[topic_count] = topics_buf[topic_count];
                    topic_count++;
                }
            }
        } else if (topic_count < 64) {
            topics[topic_count] =
                ev_log_topic(log, t->names[i], topics_buf[topic_count], sizeof(topics_buf[0]));
            topic_count++;
        }
    }
    int rc = t->cursor ? ev_log_subscribe(log, t->cursor, topics, topic_count, err, sizeof(err))
                       : ev_log_assign(log, topics, topic_count, t->from, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "msrs-tail: %s\n", err);
        exit_code = CLI_EXIT_FAIL;
        goto out;
    }
    codec = ev_codec_new();
    if (t->follow) /* a reader at the other end of a pipe sees each record as it comes */
        setvbuf(stdout, NULL, _IOLBF, 0);
    while (!cli_stop && (t->max < 0 || printed < t->max)) {
        const ev_msg *m;
        rc = ev_log_poll(log, 200, &m, err, sizeof(err));
        if (rc == 0 || rc == EV_ERR_CORRUPT) {
            int64_t first, missing = seen ? ev_offsets_see(seen, m, &first) : 0;
            if (missing > 0) {
                holes++;
                fprintf(stderr, "msrs-tail: %s [%d]: offsets %lld..%lld are missing from the log\n",
                        m->topic, (int)m->partition, (long long)first,
                        (long long)(first + missing - 1));
            }
            if (rc == EV_ERR_CORRUPT)
                corrupt++;
            if (print_record(codec, m, rc == EV_ERR_CORRUPT ? err : NULL, t->ns_strings))
                exit_code = CLI_EXIT_FAIL;
            printed++;
            if (t->cursor && (rc = ev_log_commit(log, err, sizeof(err)))) {
                fprintf(stderr, "msrs-tail: %s\n", err);
                exit_code = CLI_EXIT_FAIL;
                break;
            }
            continue;
        }
        if (rc == EV_ERR_END && !t->follow)
            break;
        if (rc == EV_ERR_TIMED_OUT || rc == EV_ERR_END)
            continue;
        exit_code = CLI_EXIT_FAIL;
        if (strcmp(err, last_err) != 0) /* a retriable error is said once, not per retry */
            fprintf(stderr, "msrs-tail: %s\n", err);
        snprintf(last_err, sizeof(last_err), "%s", err);
        if (rc == EV_ERR_FATAL || rc == EV_ERR_INVALID)
            break;
        nanosleep(&(struct timespec){0, 100000000L}, NULL);
    }
    fflush(stdout);
    if (corrupt)
        fprintf(stderr, "msrs-tail: %lld record%s failed %s checksum\n", corrupt,
                corrupt == 1 ? "" : "s", corrupt == 1 ? "its" : "their");
    if (holes) {
        fprintf(stderr, "msrs-tail: %lld hole%s in the offsets\n", (long long)holes,
                holes == 1 ? "" : "s");
        exit_code = CLI_EXIT_FAIL;
    }
    if (ev_log_unchecked(log))
        fprintf(stderr,
                "msrs-tail: %lld record%s carry no checksum (written before msrs stored "
                "checksums): not checked\n",
                (long long)ev_log_unchecked(log), ev_log_unchecked(log) == 1 ? "" : "s");
out:
    ev_offsets_destroy(seen);
    ev_codec_destroy(codec);
    return exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"topic", required_argument, NULL, 't'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"follow", no_argument, NULL, 'F'},
                                         {"cursor", required_argument, NULL, 'C'},
                                         {"max", required_argument, NULL, 'm'},
                                         {"json-ns-strings", no_argument, NULL, 'S'},
                                         {NULL, 0, NULL, 0}};
    tail_opts t = {.from = {EV_FROM_BEGINNING, 0}, .max = -1};
    cli_svc svc = {.name = "msrs-tail",
                   .usage = usage,
                   .opts = opts,
                   .on_opt = on_opt,
                   .configure = configure,
                   .run = run,
                   .arg = &t};
    return cli_svc_main(&svc, argc, argv);
}
