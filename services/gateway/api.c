/* api.c — the gateway's REST API below /api/v1 (docs/gateway.md): reads
 * answer from the projection's state, actions are records on the log
 * (CollectionRequested, CollectionStopRequested, SyncNow) acknowledged
 * before the answer, so a 202 means the log has it. Roles: a viewer reads,
 * an operator (or admin) acts. */
#include "gateway.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int gw_auth(gw_gateway *g, const char *token, gw_who *who, const char **why)
{
    memset(who, 0, sizeof(*who));
    if (!g->auth.enabled) { /* auth.required = false: said loudly at start */
        who->known = 1;
        snprintf(who->p.kind, sizeof(who->p.kind), "operator");
        snprintf(who->p.id, sizeof(who->p.id), "anonymous");
        snprintf(who->p.role, sizeof(who->p.role), "admin");
        return 0;
    }
    if (!token || !*token) {
        *why = "expected a login (POST /api/v1/login) or Authorization: Bearer TOKEN (an "
               "operator's token: msrs operators token NAME --role viewer|operator|admin)";
        return -1;
    }
    if (cli_auth_token_check(&g->auth, token, &who->p, why))
        return -1;
    if (strcmp(who->p.kind, "operator") != 0) {
        *why = "expected an operator's token, got a node's";
        return -1;
    }
    who->known = 1;
    return 0;
}

/* 0 when who may act (operator or admin), else 403 with *reply. */
static int may_act(gw_gateway *g, const gw_who *who, const char *what, json_t **reply)
{
    if (cli_auth_role_rank(who->p.role) >= 2)
        return 0;
    g->n.forbidden++;
    *reply =
        cli_json_error("forbidden", "%s: expected an operator's or an admin's role, %s is a %s",
                       what, who->p.id, who->p.role);
    return 403;
}

/* Queues a record (value stolen); 0, or 503 with *reply. */
static int emit(gw_gateway *g, const char *type, const char *key, json_t *value, json_t **reply)
{
    char err[512];
    int rc = ev_log_emit_json(g->log, ev_schema_by_name(type), key, value, NULL, err, sizeof(err));
    json_decref(value);
    if (rc) {
        fprintf(stderr, "msrs-gateway: emit %s for %s: %s\n", type, key, err);
        *reply = cli_json_error("log_failed", "the log refused the %s record: %s", type, err);
        return 503;
    }
    g->n.actions++;
    return 0;
}

/* Waits until the log acknowledged what was queued, at most ACK_MS (the
 * one loop serves every page meanwhile, so not the 10 s a CLI waits): 0,
 * or 503 with *reply saying the request may still be written. */
#define ACK_MS 2000
static int acknowledged(gw_gateway *g, const char *what, json_t **reply)
{
    char err[512];
    int rc = ev_log_flush(g->log, ACK_MS, err, sizeof(err));
    if (!rc)
        return 0;
    fprintf(stderr, "msrs-gateway: %s: %s\n", what, err);
    *reply = cli_json_error("log_slow",
                            "%s: the log did not acknowledge it within %d ms (%s); it may "
                            "still be written: look before asking again",
                            what, ACK_MS, err);
    return 503;
}

/* BIDS labels (subject, session, task, run) become file names: letters and
 * digits only. Others: ids. 0, or 400 with *reply naming the label. */
static int check_labels(const json_t *labels, json_t **reply)
{
    static const char *const bids[] = {"subject", "session", "task", "run"};
    const char *k;
    json_t *v;
    if (!labels)
        return 0;
    if (!json_is_object(labels)) {
        *reply = cli_json_error("invalid", "field labels: expected an object of strings");
        return 400;
    }
    json_object_foreach((json_t *)labels, k, v)
    {
        const char *s = json_string_value(v);
        int is_bids = 0;
        for (size_t i = 0; i < 4; i++)
            is_bids |= strcmp(k, bids[i]) == 0;
        int ok = s && *s && strlen(s) < EV_ID_MAX && ev_id_valid(k);
        for (const char *c = s; ok && is_bids && *c; c++)
            ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z');
        if (!ok) {
            *reply = cli_json_error("invalid", "field labels.%s: expected %s", k,
                                    is_bids ? "1-63 letters and digits (a BIDS label)"
                                            : "a string of 1-63 characters under a key of "
                                              "[A-Za-z0-9._:-]");
            return 400;
        }
    }
    return 0;
}

/* POST /sessions: {"session_id"?, "device_ids": [...] (none: the pool),
 * "min_group"?, "duration_s"?, "labels"?} -> CollectionRequested. */
static int start_session(gw_gateway *g, const gw_who *who, json_t *req, json_t **reply)
{
    json_t *ids = json_object_get(req, "device_ids"), *id;
    json_t *min_group = json_object_get(req, "min_group"),
           *dur = json_object_get(req, "duration_s");
    const char *sid = json_string_value(json_object_get(req, "session_id"));
    char made[EV_ID_MAX];
    size_t i;
    int status;
    if (ids && !json_is_array(ids)) {
        *reply = cli_json_error("invalid", "field device_ids: expected an array of device ids");
        return 400;
    }
    json_array_foreach(ids, i, id)
    {
        ev_device d;
        if (!json_is_string(id) || !ev_state_device(g->state, json_string_value(id), &d)) {
            *reply = cli_json_error("invalid",
                                    "field device_ids[%zu]: expected a device of the pool%s%s", i,
                                    json_is_string(id) ? ", got " : "",
                                    json_is_string(id) ? json_string_value(id) : "");
            return 400;
        }
    }
    if (min_group && (!json_is_integer(min_group) || json_integer_value(min_group) < 0)) {
        *reply = cli_json_error("invalid", "field min_group: expected an integer >= 0");
        return 400;
    }
    if (dur && (!json_is_number(dur) || json_number_value(dur) < 0 ||
                json_number_value(dur) > 7 * 24 * 3600)) {
        *reply =
            cli_json_error("invalid", "field duration_s: expected seconds, 0 (until stopped) to "
                                      "one week");
        return 400;
    }
    if ((status = check_labels(json_object_get(req, "labels"), reply)))
        return status;
    if (json_object_get(req, "session_id") && (!sid || !ev_id_valid(sid))) {
        *reply = cli_json_error("invalid", "field session_id: expected 1-63 of [A-Za-z0-9._:-]");
        return 400;
    }
    ev_session old;
    if (sid && json_object_get(g->requested, sid)) {
        *reply = cli_json_error("exists", "session %s exists already (requested just now)", sid);
        return 409;
    }
    if (sid && ev_state_session(g->state, sid, &old)) {
        *reply = cli_json_error("exists", "session %s exists already (%s)", sid,
                                ev_session_state_name(old.state));
        return 409;
    }
    if (!sid) { /* a new id from the time; -2, -3 ... when taken */
        cli_session_id(made, sizeof(made));
        size_t base = strlen(made);
        for (int n = 2;
             (ev_state_session(g->state, made, &old) || json_object_get(g->requested, made)) &&
             n < 1000;
             n++)
            snprintf(made + base, sizeof(made) - base, "-%d", n);
        sid = made;
    }
    json_t *labels = json_object_get(req, "labels");
    json_t *value = json_pack("{s:s, s:s, s:o, s:I, s:I, s:o}", "session_id", sid, "requested_by",
                              who->p.id, "device_ids", ids ? json_incref(ids) : json_array(),
                              "min_group", (json_int_t)json_integer_value(min_group), "duration_ms",
                              (json_int_t)(dur ? json_number_value(dur) * 1000.0 : 0), "labels",
                              labels ? json_incref(labels) : json_object());
    if ((status = emit(g, "CollectionRequested", sid, value, reply)))
        return status;
    json_object_set_new(g->requested, sid, json_integer(ev_mono_ms()));
    if ((status = acknowledged(g, "CollectionRequested", reply)))
        return status;
    *reply = json_pack("{s:s, s:s}", "session_id", sid, "requested_by", who->p.id);
    return 202;
}

/* POST /sessions/ID/stop {"reason"?} -> CollectionStopRequested. */
static int stop_session(gw_gateway *g, const gw_who *who, const char *sid, json_t *req,
                        json_t **reply)
{
    ev_session x;
    if (!ev_state_session(g->state, sid, &x)) {
        *reply = cli_json_error("not_found", "no session %s", sid);
        return 404;
    }
    if (x.state == EV_SESSION_STOPPED) {
        *reply = cli_json_error("stopped", "session %s has stopped already", sid);
        return 409;
    }
    const char *reason = json_string_value(json_object_get(req, "reason"));
    char why[160];
    snprintf(why, sizeof(why), "%s", reason && *reason ? reason : "stopped from the web app");
    int status = emit(
        g, "CollectionStopRequested", sid,
        json_pack("{s:s, s:s, s:s}", "session_id", sid, "requested_by", who->p.id, "reason", why),
        reply);
    if (status || (status = acknowledged(g, "CollectionStopRequested", reply)))
        return status;
    *reply = json_pack("{s:s, s:s}", "session_id", sid, "requested_by", who->p.id);
    return 202;
}

/* POST /sync {"device_ids"?}: a SyncNow to each node with connected devices
 * named (none: every connected device), reason "requested by NAME". */
static int sync_now(gw_gateway *g, const gw_who *who, json_t *req, json_t **reply)
{
    json_t *want = json_object_get(req, "device_ids"), *by_node;
    ev_device d;
    if (want && !json_is_array(want)) {
        *reply = cli_json_error("invalid", "field device_ids: expected an array of device ids");
        return 400;
    }
    by_node = json_object();
    char reason[128];
    int status = 0;
    snprintf(reason, sizeof(reason), "requested by %s", who->p.id);
    for (const char *k = NULL; (k = ev_state_device_next(g->state, k, &d));) {
        int named = !json_array_size(want);
        json_t *id;
        size_t i;
        json_array_foreach(want, i, id) named |=
            json_is_string(id) && strcmp(json_string_value(id), k) == 0;
        if (!named || !d.connected)
            continue;
        json_t *list = json_object_get(by_node, d.node_id);
        if (!list)
            json_object_set_new(by_node, d.node_id, list = json_array());
        json_array_append_new(list, json_string(k));
    }
    const char *node;
    json_t *list;
    json_object_foreach(by_node, node, list)
    {
        if ((status = emit(g, "SyncNow", node,
                           json_pack("{s:s, s:O, s:s}", "node_id", node, "device_ids", list,
                                     "reason", reason),
                           reply)))
            break;
    }
    if (!status) /* every SyncNow queued: one wait for them all */
        status = acknowledged(g, "SyncNow", reply);
    if (!status)
        *reply = json_pack("{s:O}", "nodes", by_node);
    json_decref(by_node);
    return status ? status : 202;
}

/* POST /devices/enroll {"device_id", "generation"?}: a browser device's
 * enrollment (docs/gateway.md, "Browser devices"): its credential from the
 * lab key, the device endpoint of the node the placement rule picks (the
 * rule the supervisor places devices with, over the same state), and the
 * device page's link with both in its fragment. */
static int enroll(gw_gateway *g, json_t *req, json_t **reply)
{
    const char *id = json_string_value(json_object_get(req, "device_id"));
    json_t *jgen = json_object_get(req, "generation");
    int64_t gen = jgen ? json_integer_value(jgen) : 1;
    char node_id[EV_ID_MAX], credential[CLI_AUTH_TOKEN_MAX] = "", url[320], link[1024];
    ev_node node;
    if (!id || !ev_id_valid(id)) {
        *reply = cli_json_error("invalid", "field device_id: expected 1-63 of [A-Za-z0-9._:-]");
        return 400;
    }
    if ((jgen && !json_is_integer(jgen)) || gen < 1) {
        *reply = cli_json_error("invalid", "field generation: expected an integer >= 1");
        return 400;
    }
    ev_place_policy policy = {.strategy = EV_PLACE_LEAST_LOADED};
    if (ev_place_choose(g->state, &policy, NULL, &g->rr_cursor, node_id, sizeof(node_id)) ||
        !ev_state_node(g->state, node_id, &node) || !*node.address) {
        *reply = cli_json_error("no_node", "no node is up with room for a device");
        return 503;
    }
    snprintf(url, sizeof(url), "%s://%s/v1/devices", g->tls.plain ? "ws" : "wss", node.address);
    if (g->auth.enabled)
        cli_auth_device_credential(g->auth.key, id, gen, credential, sizeof(credential));
    /* the fragment is never sent to a server; the URL's characters need no
     * escaping but ':' and '/' of the agent's URL */
    char agent[400];
    size_t k = 0;
    for (const char *c = url; *c && k + 4 < sizeof(agent); c++)
        k += (size_t)(*c == ':' || *c == '/' ? snprintf(agent + k, 4, "%%%02X", *c)
                                             : snprintf(agent + k, 2, "%c", *c));
    snprintf(link, sizeof(link), "/device.html#device=%s&cred=%s&agent=%s", id, credential, agent);
    *reply = json_pack("{s:s, s:s, s:s, s:I, s:s}", "device_id", id, "node_id", node_id,
                       "agent_url", url, "generation", (json_int_t)gen, "link", link);
    if (*credential)
        json_object_set_new(*reply, "credential", json_string(credential));
    g->n.actions++;
    return 200;
}

/* archive.dir/NAME/manifest.json as JSON, or NULL. */
static json_t *manifest(gw_gateway *g, const char *name)
{
    char path[PATH_MAX + 128];
    if (!ev_id_valid(name) || *name == '.') /* not ".", "..", hidden folders */
        return NULL;
    snprintf(path, sizeof(path), "%s/%s/manifest.json", g->archive_dir, name);
    return json_load_file(path, 0, NULL);
}

/* GET /archives: every archive folder with a manifest, newest name first. */
static json_t *archives(gw_gateway *g)
{
    json_t *out = json_array();
    DIR *d = opendir(g->archive_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        json_t *m = *e->d_name != '.' ? manifest(g, e->d_name) : NULL;
        if (!m)
            continue;
        json_int_t bytes = 0;
        const char *k;
        json_t *f;
        json_object_foreach(json_object_get(m, "files"), k, f) bytes +=
            json_integer_value(json_object_get(f, "bytes"));
        json_array_append_new(
            out,
            json_pack("{s:s, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:I, s:I}", "name", e->d_name,
                      "session_id", json_object_get(m, "session_id"), "complete",
                      json_object_get(m, "complete"), "start_at_ns",
                      json_object_get(m, "start_at_ns"), "duration_ns",
                      json_object_get(m, "duration_ns"), "labels", json_object_get(m, "labels"),
                      "xdf", json_object_get(m, "xdf"), "files",
                      (json_int_t)json_object_size(json_object_get(m, "files")), "bytes", bytes));
        json_decref(m);
    }
    if (d)
        closedir(d);
    /* newest first: names are session ids, which sort by time when made
     * from it (ses-YYYYMMDDTHHMMSS); insertion sort, a few hundred */
    for (size_t i = 1; i < json_array_size(out); i++)
        for (size_t j = i; j > 0; j--) {
            json_t *x = json_array_get(out, j - 1), *y = json_array_get(out, j);
            if (strcmp(json_string_value(json_object_get(x, "name")),
                       json_string_value(json_object_get(y, "name"))) >= 0)
                break;
            json_incref(x);
            json_array_set(out, j - 1, y);
            json_array_set_new(out, j, x);
        }
    return out;
}

/* GET /archives/NAME/files/REL: only a file the manifest lists (so no path
 * of the request reaches the file system unchecked), or the manifest. */
static int archive_file(gw_gateway *g, const char *name, const char *rel, json_t **reply,
                        char **file)
{
    json_t *m = manifest(g, name);
    int listed = m && (strcmp(rel, "manifest.json") == 0 ||
                       json_object_get(json_object_get(m, "files"), rel));
    json_decref(m);
    if (!listed) {
        *reply = cli_json_error("not_found", "archive %s has no file %s (its manifest lists them)",
                                name, rel);
        return 404;
    }
    size_t n = strlen(g->archive_dir) + strlen(name) + strlen(rel) + 3;
    *file = malloc(n);
    if (!*file) {
        *reply = cli_json_error("no_memory", "out of memory");
        return 503;
    }
    snprintf(*file, n, "%s/%s/%s", g->archive_dir, name, rel);
    g->n.files++;
    return 200;
}

int gw_api_handle(gw_gateway *g, const gw_who *who, const char *method, const char *path,
                  const char *body, size_t len, json_t **reply, char **file)
{
    char a[EV_ID_MAX + 1] = "", b[32] = "";
    const char *rest = NULL;
    int post = strcmp(method, "POST") == 0;
    *reply = NULL;
    *file = NULL;
    if (strcmp(path, "/me") == 0) {
        *reply = json_pack("{s:s, s:s, s:b}", "name", who->p.id, "role", who->p.role,
                           "auth_required", g->auth.enabled);
        return 200;
    }
    if (!g->caught_up) { /* a partial state is not the truth */
        *reply = cli_json_error("starting", "folding the log; try again");
        return 503;
    }
    /* /KIND, /KIND/ID, /KIND/ID/VERB..., ids at most 63 characters */
    char kind[16] = "";
    int end = 0;
    int parts = sscanf(path, "/%15[a-z]%n/%64[^/]%n/%31[a-z]%n", kind, &end, a, &end, b, &end);
    if (parts < 3 && path[end]) /* "/sessionsXYZ", "/nodes/": not ours */
        parts = 0;
    if (parts >= 2 && !ev_id_valid(a)) {
        *reply = cli_json_error("not_found", "%s: expected an id of 1-63 [A-Za-z0-9._:-]", path);
        return 404;
    }
    if (parts == 3) {
        size_t at = 1 + strlen(kind) + 1 + strlen(a) + 1 + strlen(b);
        rest = path[at] == '/' ? path + at + 1 : path[at] ? NULL : "";
    }
    json_t *req = NULL;
    if (post) {
        json_error_t jerr;
        req = len ? json_loadb(body, len, 0, &jerr) : json_object();
        if (!json_is_object(req)) {
            g->n.bad++;
            *reply = cli_json_error("invalid", "request body: expected a JSON object (%s)",
                                    req ? "got another JSON value" : jerr.text);
            json_decref(req);
            return 400;
        }
    }
    int status = 404;
    if (!post && parts == 1 && strcmp(kind, "nodes") == 0) {
        *reply = gw_view_nodes(g), status = 200;
    } else if (!post && parts == 1 && strcmp(kind, "devices") == 0) {
        *reply = gw_view_devices(g), status = 200;
    } else if (!post && parts == 2 && strcmp(kind, "devices") == 0) {
        status = (*reply = gw_view_device(g, a)) ? 200 : 404;
    } else if (!post && parts == 1 && strcmp(kind, "sessions") == 0) {
        *reply = gw_view_sessions(g, 0), status = 200;
    } else if (!post && parts == 2 && strcmp(kind, "sessions") == 0) {
        status = (*reply = gw_view_session(g, a, 1)) ? 200 : 404;
    } else if (!post && parts == 1 && strcmp(kind, "alerts") == 0) {
        *reply = json_incref(g->alerts), status = 200;
    } else if (!post && parts == 1 && strcmp(kind, "archives") == 0) {
        *reply = archives(g), status = 200;
    } else if (!post && parts == 2 && strcmp(kind, "archives") == 0) {
        status = (*reply = manifest(g, a)) ? 200 : 404;
    } else if (!post && parts == 3 && strcmp(kind, "archives") == 0 && strcmp(b, "files") == 0 &&
               rest && *rest && !strstr(rest, "..")) {
        status = archive_file(g, a, rest, reply, file);
    } else if (post && parts == 1 && strcmp(kind, "sessions") == 0) {
        status = may_act(g, who, "start a session", reply);
        status = status ? status : start_session(g, who, req, reply);
    } else if (post && parts == 3 && strcmp(kind, "sessions") == 0 && strcmp(b, "stop") == 0 &&
               rest && !*rest) {
        status = may_act(g, who, "stop a session", reply);
        status = status ? status : stop_session(g, who, a, req, reply);
    } else if (post && parts == 2 && strcmp(kind, "devices") == 0 && strcmp(a, "enroll") == 0) {
        status = may_act(g, who, "enroll a device", reply);
        status = status ? status : enroll(g, req, reply);
    } else if (post && parts == 1 && strcmp(kind, "sync") == 0) {
        status = may_act(g, who, "sync clocks", reply);
        status = status ? status : sync_now(g, who, req, reply);
    }
    json_decref(req);
    if (!*reply && !*file)
        *reply = cli_json_error("not_found", "%s /api/v1%s: no such resource (docs/gateway.md)",
                                method, path);
    return status;
}
