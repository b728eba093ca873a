/* archive_src.c — see archive_src.h. The archive is read through
 * archive/ (ar_reader); this file only folds what it gives. */
#include "archive_src.h"
#include "archive.h"

#include <stdio.h>

typedef struct fold_ctx {
    const char *dir;
    ev_state *state;
    int64_t records, bad;
} fold_ctx;

/* One record of events.avro or clock.avro: folded, or named on stderr. */
static int fold_one(void *arg, const ev_event *ev, const char *error)
{
    fold_ctx *c = arg;
    char err[512];
    c->records++;
    if (!ev) {
        fprintf(stderr, "msrs-replay: %s\n", error);
        c->bad++;
        return 0;
    }
    if (ev_state_apply(c->state, ev, err, sizeof(err)) < 0) {
        fprintf(stderr, "msrs-replay: %s: %s %s: %s\n", c->dir, ev_schema_short_name(ev->schema),
                ev->id, err);
        c->bad++;
    }
    return 0;
}

int as_fold_archive(const char *dir, ev_state *state, int64_t *records)
{
    char err[1024];
    fold_ctx c = {dir, state, 0, 0};
    ar_reader *r;
    int rc = 0;
    *records = 0;
    if (ar_reader_open(&r, dir, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        return 1;
    }
    /* clock rounds first (they came before and during the session), then
     * the session's records */
    if (ar_reader_clock(r, fold_one, &c, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s\n", err);
        rc = 1;
    }
    if (ar_reader_events(r, fold_one, &c, err, sizeof(err))) {
        fprintf(stderr, "msrs-replay: %s%s\n", err,
                json_object_get(json_object_get(ar_reader_manifest(r), "files"), "events.avro")
                    ? ""
                    : ": only the clock rounds are folded");
        rc = 1;
    }
    ar_reader_destroy(r);
    *records = c.records;
    return rc || c.bad ? 1 : 0;
}
