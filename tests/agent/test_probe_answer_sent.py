#!/usr/bin/python3
"""A device says, with its next clock answer, when its previous answer
really left (payload prev_t1, prev_t3: NTP's interleaved mode), and the
agent measures that answer from then: a device that stamps t3 and then
encrypts or frames would otherwise count that time as network delay, on
its way up only.

A real msrs-agent on a SQLite log (plain: what is tested is the agent's
reading of the answers); a device that is not ours (Python's websockets)
answers every time_req at once with a t3 and, from the second answer on,
the previous answer's t3 made 5 us (plus its index, in ns) later. Two of
its corrections are wrong on purpose: one puts prev_t3 before the t3 it
corrects, one sends prev_t1 as a string. Then:
- both wrong ones get an `invalid` error naming prev_t3 / prev_t1, and the
  connection keeps answering (later rounds are recorded);
- in every round record, each probe whose correction was valid carries the
  corrected t3, except the round's last: its correction comes with the next
  round's first answer, after the record (docs/protocol.md says so);
- every other probe carries its t3 as written, and each round's kept probe
  (the record's t1_ns..t4_ns) is one of its probes as recorded: corrected
  when its correction came in time;
- the agent's status line counts the corrections: at least those recorded,
  at most those sent (an answer after its round's deadline is not taken,
  nor is its correction).
Then the SDK's side: msrs-devsim (4 devices, the LAN profile's simulated
link) over TLS with device credentials sends the corrections from its
filter BIO, and none is refused."""
import asyncio
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import (Checks, Procs, agent_conf, device_session, make_credentials,  # noqa: E402
                      start_agent, stop_all, tail, wait_listening)

check = Checks()

EARLY_NS = 5000  # each answer's bytes leave this long (+ its index, ns) after its t3
BAD_BEFORE = 5   # the correction sent with answer 5 puts prev_t3 before that answer's t3
BAD_TYPE = 9     # the one sent with answer 9 has prev_t1 as a string


async def device(url, seconds):
    """Registers as phone-1 and answers every probe for `seconds`. Returns
    {t1: (t3 written, t3 corrected or None)} and the error messages."""
    answers, errors, prev, k = {}, [], None, 0

    async def on_message(ws, m):
        nonlocal prev, k
        if m.get("type") == "error":
            errors.append(m)
        if m.get("type") != "time_req":
            return
        t1, t2 = m["payload"]["t1"], time.time_ns()
        payload = {"t1": t1, "t2": t2, "t3": t2 + 1000}
        if prev is not None:
            p1, p3 = prev
            corrected = p3 + EARLY_NS + k
            if k == BAD_BEFORE:
                payload.update(prev_t1=p1, prev_t3=p3 - 1)
            elif k == BAD_TYPE:
                payload.update(prev_t1=str(p1), prev_t3=corrected)
            else:
                payload.update(prev_t1=p1, prev_t3=corrected)
                answers[p1] = (p3, corrected)
        answers.setdefault(t1, (payload["t3"], None))
        prev = (t1, payload["t3"])
        k += 1
        await ws.send(json.dumps({"type": "time_resp", "device_id": "phone-1", "payload": payload}))
    await device_session(url, None, seconds, on_message)
    return answers, errors


def status(procs, name):
    """(corrections, invalid) from the agent's last status line."""
    lines = [l for l in procs.stderr_of(name).splitlines() if "clock answers corrected" in l]
    if not lines:
        return -1, -1
    return (int(lines[-1].split(" clock answers corrected")[0].rsplit(" ", 1)[1]),
            int(lines[-1].split(" invalid ")[0].rsplit(" ", 1)[1]))


def sdk_over_tls(tmp):
    conf = make_credentials(tmp)
    procs = Procs(tmp)
    try:
        _, port, _ = start_agent(procs, tmp, "tls", conf, "-X", "sync.interval_ms=300")
        check(wait_listening(port), "TLS: agent listening")
        sim = procs.start("devsim", ["msrs-devsim", "--url", "wss://127.0.0.1:%d/v1/devices" % port,
                                     "--devices", "4", "--profile", "lan", "--samples", "none",
                                     "--duration", "4"], env=dict(os.environ, MSRS_CONFIG=conf))
        check(sim.wait(30) == 0, "TLS: devsim ran and exited cleanly")
    finally:
        stop_all(procs)
    corrected, invalid = status(procs, "agent-tls")
    check(corrected >= 4 * 8 and invalid == 0,
          "TLS: the SDK corrected %d answers, %d messages refused as invalid" % (corrected, invalid))


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-answer-sent-")
    procs = Procs(tmp)
    try:
        _, port, db = start_agent(procs, tmp, "a", agent_conf(tmp, "a", None),
                                  "-X", "sync.interval_ms=300")
        check(wait_listening(port), "agent listening")
        answers, errors = asyncio.run(device("ws://127.0.0.1:%d/v1/devices" % port, 4))
        check(procs.alive("agent-a"), "the agent ran throughout")
    finally:
        stop_all(procs)

    invalid = [e["payload"].get("message", "") for e in errors if e["payload"].get("code") == "invalid"]
    check(len(invalid) == 2 and all("prev_t3" in r and "prev_t1" in r for r in invalid),
          "the two wrong corrections were refused as invalid, naming prev_t1 and prev_t3: %s"
          % invalid[:2])
    check(len(errors) == 2, "no other error (%d errors)" % len(errors))

    rounds = [r["value"]["round_probes"] for r in tail(db, "clock")
              if r["type"].endswith("ClockOffsetMeasured")]
    check(len(rounds) >= 4, "%d rounds recorded, the last ones after both wrong corrections"
          % len(rounds))
    records = [r["value"] for r in tail(db, "clock") if r["type"].endswith("ClockOffsetMeasured")]
    best_ok = all({k: v[k] for k in ("t1_ns", "t2_ns", "t3_ns", "t4_ns")} in v["round_probes"]
                  for v in records)
    check(best_ok, "each round's kept probe is one of its probes as recorded")
    wrong, kept, used, last_ok = [], 0, 0, True
    for probes in rounds:
        for i, p in enumerate(probes):
            written, corrected = answers[p["t1_ns"]]
            want = corrected if corrected is not None and i < len(probes) - 1 else written
            kept += want == written
            used += want != written
            if p["t3_ns"] != want:
                wrong.append((p["t1_ns"], p["t3_ns"], want))
        last_ok &= probes[-1]["t3_ns"] == answers[probes[-1]["t1_ns"]][0]
    check(not wrong, "every recorded t3 is the corrected one when the device corrected it in "
          "time for the record, else the written one (%d corrected, %d as written; wrong: %s)"
          % (used, kept, wrong[:3]))
    check(used >= 8 and kept >= len(rounds) + 2, "both kinds were recorded")
    check(last_ok, "each round's last answer is recorded as written (its correction comes later)")

    valid = sum(1 for w, c in answers.values() if c is not None)
    counted, invalid_n = status(procs, "agent-a")
    check(used <= counted <= valid and invalid_n == 2,
          "the agent counted %d corrections (%d recorded, %d valid sent) and 2 invalid (%d)"
          % (counted, used, valid, invalid_n))

    sdk_over_tls(tmp)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
