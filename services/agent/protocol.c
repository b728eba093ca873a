/* protocol.c — layer 8: the JSON device protocol (docs/protocol.md):
 * envelope checks, the rate limit, hello/register and rejoin, time_resp
 * parsing, binary frame parsing, and dispatch of each message to the layer
 * that handles it (ingest.c, clock.c). Every malformed or unwanted message
 * gets an `error` reply and a counter; nothing here closes a connection
 * except a flood. */
#include "protocol.h"

#include "clock.h"
#include "device.h"
#include "emit.h"
#include "endpoint.h"
#include "flow.h"
#include "ingest.h"
#include "recording.h"
#include "rxstamp.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

/* Copies the keys named in `keys` (NULL-terminated) from src into a new
 * object: the protocol lets devices add fields, the records do not. */
static json_t *pick(json_t *src, const char *const *keys)
{
    json_t *o = json_object();
    for (size_t i = 0; keys[i]; i++) {
        json_t *v = json_object_get(src, keys[i]);
        if (v)
            json_object_set(o, keys[i], v);
    }
    return o;
}

/* ------------------------------------------------------------------ hello */

static void reject(ag_agent *a, ag_conn *c, const char *ref, const char *code, const char *why)
{
    ag_send(a, c, "register",
            json_pack("{s:b, s:s, s:s}", "accepted", 0, "reason", why, "node_id", a->cfg.node_id));
    ag_send_error(a, c, code, why, ref);
}

static void on_hello(ag_agent *a, ag_conn *c, json_t *env, const char *ref)
{
    static const char *const hello_keys[] = {"name", "capabilities", "battery", "version", NULL};
    static const char *const stream_keys[] = {"stream_id", "type",   "rate_hz",
                                              "channels",  "format", NULL};
    const char *device_id = json_string_value(json_object_get(env, "device_id"));
    json_t *payload = json_object_get(env, "payload");
    char err[512], why[600];

    if (c->dev) {
        ag_send_invalid(a, c, "already registered on this connection", ref);
        return;
    }
    if (!ev_id_valid(device_id)) {
        a->n.invalid++;
        reject(a, c, ref, "invalid", "device_id: expected 1-63 characters of [A-Za-z0-9._:-]");
        return;
    }
    if (a->auth.enabled) {
        /* before anything else about the id: who is not its holder learns
         * nothing of it (connected, sequence numbers) */
        json_t *auth = json_object_get(payload, "auth");
        json_t *gen = json_object_get(auth, "generation");
        const char *proof = json_string_value(json_object_get(auth, "proof")), *refused = NULL;
        if (!json_is_integer(gen) || !proof) {
            refused = "payload.auth: expected {\"generation\": integer, \"proof\": HMAC of the "
                      "challenge's nonce} (docs/protocol.md)";
        } else if (cli_auth_device_check(&a->auth, device_id, json_integer_value(gen), c->nonce,
                                         proof, &refused) == 0) {
            refused = NULL;
        }
        if (refused) {
            a->n.unauthorized++;
            reject(a, c, ref, "unauthorized", refused);
            ag_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "unauthorized");
            return;
        }
    }
    ag_device *d = ag_device_find(a, device_id);
    if (d && d->conn) {
        a->n.duplicates++;
        reject(a, c, ref, "duplicate_device", "device_id is already connected to this node");
        return;
    }
    int64_t limit = ev_place_limit(a->plan_max_devices, a->cfg.max_devices);
    if ((int64_t)a->connected >= limit) {
        /* Full: tell the device where to go (the supervisor's placement,
         * from the last heartbeat), when another node has room. */
        json_t *p = json_pack("{s:b, s:s, s:s}", "accepted", 0, "reason", "node full", "node_id",
                              a->cfg.node_id);
        snprintf(why, sizeof(why), "this node serves its maximum of %lld devices%s%s",
                 (long long)limit, *a->redirect ? ": connect to " : "", a->redirect);
        if (*a->redirect)
            json_object_set_new(p, "redirect", json_string(a->redirect));
        ag_send(a, c, "register", p);
        ag_send_error(a, c, "node_full", why, ref);
        return;
    }
    if (!json_is_object(payload)) {
        a->n.invalid++;
        reject(a, c, ref, "invalid", "payload: expected an object");
        return;
    }
    json_t *rec = pick(payload, hello_keys);
    json_t *streams = json_object_get(payload, "streams");
    if (streams && !json_is_array(streams)) {
        json_decref(rec);
        a->n.invalid++;
        reject(a, c, ref, "invalid", "payload.streams: expected an array");
        return;
    }
    /* A device's streams are bounded and named like ids: what it sends
     * later must name one of them (ingest.c), so state per stream is too. */
    size_t k;
    json_t *one;
    json_array_foreach(streams, k, one)
    {
        if (k >= AG_MAX_STREAMS ||
            !ev_id_valid(json_string_value(json_object_get(one, "stream_id")))) {
            if (k >= AG_MAX_STREAMS)
                snprintf(why, sizeof(why), "payload.streams: at most %d streams", AG_MAX_STREAMS);
            else
                snprintf(why, sizeof(why),
                         "payload.streams[%zu].stream_id: expected 1-63 characters of "
                         "[A-Za-z0-9._:-]",
                         k);
            json_decref(rec);
            a->n.invalid++;
            reject(a, c, ref, "invalid", why);
            return;
        }
    }
    json_t *clean = json_array();
    size_t i;
    json_t *st;
    json_array_foreach(streams, i, st) json_array_append_new(clean, pick(st, stream_keys));
    json_object_set(rec, "streams", clean); /* clean stays ours: ag_emit takes rec */
    json_object_set_new(rec, "device_id", json_string(device_id));
    json_object_set_new(rec, "node_id", json_string(a->cfg.node_id));
    /* The record's own conversion checks the payload: a device hears the
     * same field-path errors the schema gives. */
    if (ag_emit(a, "DeviceRegistered", device_id, rec, err, sizeof(err)) == EV_ERR_INVALID) {
        snprintf(why, sizeof(why), "payload.%s", err);
        reject(a, c, ref, "invalid", why);
        json_decref(clean);
        return;
    }
    if (!d && !(d = ag_device_add(a, device_id))) {
        reject(a, c, ref, "internal", "out of memory");
        json_decref(clean);
        return;
    }
    ag_device_attach(a, d, c, clean);
    ag_endpoint_hello_accepted(a, c);
    json_decref(clean);
    /* Rejoin: tell the device where each of its streams resumes. */
    ag_send(a, c, "register",
            json_pack("{s:b, s:s, s:s, s:O}", "accepted", 1, "reason", "", "node_id",
                      a->cfg.node_id, "resume", d->next_seq));
    ag_clock_join(a, d);
    if (a->tick_soon)
        a->tick_soon(a); /* its first round is due now: an idle tick may be sleeping */
    ag_flow_greet(a, c);
    ag_recording_rejoin(a, d);
}

/* -------------------------------------------------------------- time sync */

/* A clock answer {type: "time_resp", id?, payload: {t1, t2, t3, prev_t1?,
 * prev_t3?}}, read
 * without a tree (ev_jflat): a device answers 8 probes a round. */
static void on_time_resp(ag_agent *a, ag_conn *c, const ev_jflat *j, int64_t t4)
{
    /* |t| < 2^62 ns (146 years): the estimator's differences and sums of
     * two stamps cannot overflow */
    const int64_t lim = (int64_t)1 << 62;
    int payload = ev_jflat_object(j, -1, "payload");
    ev_clock_probe p = {.t4 = t4};
    if (!ev_jflat_integer(j, payload, "t1", &p.t1) || !ev_jflat_integer(j, payload, "t2", &p.t2) ||
        !ev_jflat_integer(j, payload, "t3", &p.t3) || p.t1 <= -lim || p.t1 >= lim || p.t2 <= -lim ||
        p.t2 >= lim || p.t3 <= -lim || p.t3 >= lim) {
        ag_send_invalid(a, c, "payload: expected integers t1, t2, t3 (ns, |t| < 2^62)",
                        ev_jflat_string(j, -1, "id"));
        return;
    }
    /* prev_t1, prev_t3: when the device's previous answer really left
     * (NTP's interleaved mode), corrected before this answer is counted */
    int64_t prev_t1, prev_t3;
    int has_t1 = ev_jflat_get(j, payload, "prev_t1") != NULL,
        has_t3 = ev_jflat_get(j, payload, "prev_t3") != NULL;
    if ((has_t1 || has_t3) &&
        (!ev_jflat_integer(j, payload, "prev_t1", &prev_t1) ||
         !ev_jflat_integer(j, payload, "prev_t3", &prev_t3) || prev_t3 <= -lim || prev_t3 >= lim ||
         prev_t3 > p.t3 || ag_clock_sent(a, c->dev, ag_probe_sent_at(c, prev_t1), prev_t3) < 0))
        ag_send_invalid(a, c,
                        "payload: expected integers prev_t1 (the previous answer's t1) and "
                        "prev_t3 (ns, when that answer's write began: not before its t3, not "
                        "after this answer's, not making its round trip negative)",
                        ev_jflat_string(j, -1, "id"));
    p.t1 = ag_probe_sent_at(c, p.t1); /* the echoed t1 names the probe */
    if (ag_clock_answer(a, c->dev, &p) != 0)
        ag_send_invalid(a, c, "time_resp: t3 < t2 or t4 < t1", ev_jflat_string(j, -1, "id"));
}

/* ---------------------------------------------------------------- binary */

/* Binary frame: 4-byte big-endian length N, N bytes of JSON header, then
 * the body; the header's "type" says what the body is ("media" when
 * absent). The header is read without a tree (ev_jflat). */
static void on_binary(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len)
{
    size_t hlen =
        len >= 4 ? ((size_t)msg[0] << 24 | (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]) : 0;
    ev_jflat h;
    char err[160], why[320];
    if (!hlen || hlen > len - 4 || ev_jflat_read(&h, msg + 4, hlen, err, sizeof(err)) != 0) {
        snprintf(why, sizeof(why),
                 "binary frame: expected a 4-byte big-endian header length, a JSON object "
                 "header, then the body%s%s",
                 hlen && hlen <= len - 4 ? ": header: " : "", hlen && hlen <= len - 4 ? err : "");
        ag_send_invalid(a, c, why, NULL);
        return;
    }
    const ev_jmember *tm = ev_jflat_get(&h, -1, "type");
    const char *type = ev_jflat_string(&h, -1, "type");
    if (!tm || (type && strcmp(type, "media") == 0)) {
        ag_ingest_media(a, c, &h, msg + 4 + hlen, len - 4 - hlen);
    } else if (type && strcmp(type, "samples") == 0) {
        ag_ingest_samples_binary(a, c, &h, msg + 4 + hlen, len - 4 - hlen);
    } else {
        a->n.unknown_type++;
        snprintf(why, sizeof(why), "unknown binary frame type '%.64s'",
                 type ? type : "(not a string)");
        ag_send_error(a, c, "unknown_type", why, NULL);
    }
}

/* --------------------------------------------------------------- dispatch */

/* Text messages up to this long are first read by ev_jflat (a clock
 * answer is ~130 bytes); longer ones only by jansson. */
#define AG_FAST_TEXT_MAX 1024

/* Token bucket per connection: a flood gets one error a second, then
 * silence; a connection refused more than agent.rate_burst messages within
 * one second (twice its rate and more, for a whole second) is a flood and
 * is closed (1008). A refill does not forgive it: a flooder is refused
 * nearly every message, whatever trickles back in. */
static int rate_ok(ag_agent *a, ag_conn *c, int64_t now)
{
    if (cli_bucket_take(&c->rate, (double)a->cfg.rate_per_s, (double)a->cfg.rate_burst, now))
        return 1;
    a->n.rate_limited++;
    if (now - c->flood_window_start_ns >= 1000000000LL) {
        c->flood_window_start_ns = now;
        c->flood_refused = 0;
        ag_send_error(a, c, "rate_limited", "too many messages: slow down", NULL);
    }
    if (++c->flood_refused > a->cfg.rate_burst) {
        a->n.flood_closed++;
        ag_close(c, 1008, "flood: messages keep exceeding the rate limit");
    }
    return 0;
}

void ag_on_message(ag_agent *a, ag_conn *c, const unsigned char *msg, size_t len, int binary)
{
    /* t4: when the message's last bytes reached this host (kernel stamp),
     * not when this loop, busy with other devices, read them */
    int64_t now = ag_now_ns(), t4 = c->rx_fd >= 0 ? rxstamp_arrival(c->rx_fd, now) : now;
    json_error_t jerr;
    char why[256];

    a->n.messages++;
    if (!rate_ok(a, c, now))
        return;
    if (binary) {
        if (!c->dev) {
            a->n.not_registered++;
            ag_send_error(a, c, "not_registered", "send hello first", NULL);
            return;
        }
        on_binary(a, c, msg, len);
        return;
    }
    /* Clock answers, most of the text a device sends, are read without a
     * tree; the rest (and anything ev_jflat refuses) by jansson. */
    ev_jflat j;
    char fast_err[160] = "";
    const char *fast_type = NULL;
    if (len <= AG_FAST_TEXT_MAX && ev_jflat_read(&j, msg, len, fast_err, sizeof(fast_err)) == 0 &&
        !j.duplicates)
        fast_type = ev_jflat_string(&j, -1, "type");
    if (fast_type && c->dev && strcmp(fast_type, "time_resp") == 0) {
        on_time_resp(a, c, &j, t4);
        return;
    }
    json_t *env = json_loadb((const char *)msg, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!env) {
        a->n.bad_json++;
        snprintf(why, sizeof(why), "malformed JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        ag_send_error(a, c, "bad_json", why, NULL);
        return;
    }
    const char *type = json_string_value(json_object_get(env, "type"));
    const char *ref = json_string_value(json_object_get(env, "id"));
    json_t *payload = json_object_get(env, "payload");
    if (!json_is_object(env) || !type) {
        ag_send_invalid(a, c, "expected an object with a string \"type\"", ref);
    } else if (strcmp(type, "hello") == 0) {
        on_hello(a, c, env, ref);
    } else if (!c->dev && strcmp(type, "ack") != 0 && strcmp(type, "error") != 0) {
        a->n.not_registered++;
        ag_send_error(a, c, "not_registered", "send hello first", ref);
    } else if (strcmp(type, "time_resp") == 0) {
        /* jansson read it and ev_jflat did not: past ev_jflat's limits
         * (1 KiB, 32 members, -2^63) */
        snprintf(why, sizeof(why),
                 "payload: expected integers t1, t2, t3 (ns, |t| < 2^62) in at most 1 KiB of "
                 "JSON%s%s",
                 *fast_err ? ": " : "", fast_err);
        ag_send_invalid(a, c, why, ref);
    } else if (strcmp(type, "samples") == 0) {
        ag_ingest_samples(a, c, env, payload, ref);
    } else if (strcmp(type, "status") == 0) {
        ag_ingest_status(a, c, payload, ref);
    } else if (strcmp(type, "sync_mark") == 0) {
        ag_ingest_sync_mark(a, c, env, payload, ref);
    } else if (strcmp(type, "ack") == 0 || strcmp(type, "error") == 0) {
        /* the device's answers to start/stop: counted for now */
    } else {
        a->n.unknown_type++;
        snprintf(why, sizeof(why), "unknown message type '%.64s'", type);
        ag_send_error(a, c, "unknown_type", why, ref);
    }
    json_decref(env);
}

void ag_on_closed(ag_agent *a, ag_conn *c)
{
    ag_device_detach(a, c);
}
