/* emit.c — layer 2: records to the log, counted (see emit.h). */
#include "emit.h"

#include <stdio.h>

/* A record the log took: counted, on its topic too. */
static int taken(ag_agent *a, const ev_schema *s)
{
    a->n.events++;
    a->produced++;
    cli_topic_count(&a->out, ev_schema_topic(s));
    return 1;
}

void ag_emit_failed(ag_agent *a, const char *short_name, const char *key, const char *err)
{
    a->n.emit_errors++;
    fprintf(stderr, "msrs-agent: emit %s for %s: %s\n", short_name, key, err);
}

int ag_emit(ag_agent *a, const char *short_name, const char *key, json_t *value, char *err,
            size_t err_size)
{
    char own[512];
    if (!err) {
        err = own;
        err_size = sizeof(own);
    }
    int rc =
        ev_log_emit_json(a->log, ev_schema_by_name(short_name), key, value, NULL, err, err_size);
    if (rc == EV_ERR_INVALID)
        a->n.invalid++; /* the device's data does not fit the record: its error */
    else if (rc)
        ag_emit_failed(a, short_name, key, err);
    else
        taken(a, ev_schema_by_name(short_name));
    json_decref(value);
    return rc;
}

int ag_emit_encoded(ag_agent *a, const ev_schema *s, const char *key, const void *frame, size_t len)
{
    char err[512];
    if (ev_log_emit_encoded(a->log, s, key, frame, len, NULL, err, sizeof(err)) == 0)
        return taken(a, s);
    ag_emit_failed(a, ev_schema_short_name(s), key, err);
    return 0;
}
