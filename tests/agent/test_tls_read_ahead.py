#!/usr/bin/python3
"""Records OpenSSL read ahead are handled without more bytes arriving.

Over TLS the agent has OpenSSL read ahead (cli_tls_read_ahead): one read
takes every record the kernel holds, and the records beyond the one SSL_read
returns are announced by neither the socket nor SSL_pending; the agent
services such connections itself after each turn of its loop
(ag_endpoint_service_unread). Without that, a device that sends a burst
and then waits would wait for ever.

A real msrs-agent on a SQLite log and on TLS; a client that is not ours
(Python's ssl, the WebSocket frames written by hand) registers, then sends,
with the socket corked so that they reach the agent in one TCP segment:
24 messages the agent answers (each an `invalid` error naming its id), two
pings in a row among them, and one message of 40 000 bytes that spans three
TLS records. Then it only reads: every answer and both pongs must come
within 5 s. A second burst ends with a close frame: the agent must answer
it. The same on a plain connection, where nothing is read ahead."""
import base64
import json
import os
import socket
import ssl
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
from msrstest import (Checks, Procs, agent_conf, make_credentials, start_agent, stop_all,  # noqa: E402
                      wait_listening)

check = Checks()
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def frame(opcode, payload):
    """A masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Conn:
    """A WebSocket client over a socket; over TLS through ssl's SSLObject,
    so that the test decides what goes on the wire: records whole, several
    in one send, or half of one."""

    def __init__(self, port, ctx):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf, self.tls = b"", None
        if ctx:
            self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self.sock.sendall(self.out.read())
                    data = self.sock.recv(65536)
                    if not data:
                        raise EOFError("TLS handshake: connection closed")
                    self.inc.write(data)
            self.sock.sendall(self.out.read())
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(self.wire(
            ("GET /v1/devices HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: msrs.v1\r\n\r\n"
             % key).encode()))
        while b"\r\n\r\n" not in self.buf:
            self.fill(5)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("no upgrade: %r" % head[:80])

    def wire(self, data):
        """data as it goes on the wire: over TLS, one record (16 KiB at most)."""
        if not self.tls:
            return data
        self.tls.write(data)
        return self.out.read()

    def fill(self, timeout):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        if not self.tls:
            self.buf += data
            return
        self.inc.write(data)
        while True:
            try:
                data = self.tls.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return
            if not data:  # the peer's close_notify
                return
            self.buf += data

    def frame(self, deadline):
        """(opcode, payload) of the next server frame; None at the deadline."""
        try:
            while True:
                if len(self.buf) >= 2:
                    n, at = self.buf[1] & 0x7F, 2
                    if n == 126 and len(self.buf) >= 4:
                        n, at = struct.unpack("!H", self.buf[2:4])[0], 4
                    elif n == 127 and len(self.buf) >= 10:
                        n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
                    if n < 126 or at > 2:
                        if len(self.buf) >= at + n:
                            op, payload = self.buf[0] & 0x0F, self.buf[at:at + n]
                            self.buf = self.buf[at + n:]
                            return op, payload
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.fill(left)
        except (socket.timeout, EOFError, ssl.SSLError, OSError):
            return None

    def answer_to(self, ref, seconds=5):
        """The ref_id of the next error the agent sends (probes skipped)."""
        deadline = time.monotonic() + seconds
        while True:
            f = self.frame(deadline)
            if f is None:
                return None
            if f[0] == TEXT and json.loads(f[1]).get("type") == "error":
                return json.loads(f[1])["payload"].get("ref_id")


def cpu_s(pid):
    """User + system CPU seconds pid has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(name, port, ctx, pid):
    c = Conn(port, ctx)
    c.sock.sendall(c.wire(frame(TEXT, json.dumps({
        "id": "h", "type": "hello", "ts": time.time_ns(), "device_id": "phone-1",
        "payload": {"name": "phone-1", "streams": []}}).encode())))
    deadline = time.monotonic() + 5
    while True:
        f = c.frame(deadline)
        if f is None or (f[0] == TEXT and json.loads(f[1]).get("type") == "register"):
            break
    check(f is not None, "%s: registered" % name)

    # 25 messages and 2 pings, each a record of its own, in one send
    ids = ["m%d" % i for i in range(24)]
    frames = [frame(TEXT, json.dumps({"id": i}).encode()) for i in ids[:12]]
    frames += [frame(PING, b"p1"), frame(PING, b"p2")]
    frames.append(frame(TEXT, json.dumps({"id": "big", "pad": "x" * 40000}).encode()))
    frames += [frame(TEXT, json.dumps({"id": i}).encode()) for i in ids[12:]]
    c.sock.sendall(b"".join(c.wire(f) for f in frames))
    answered, pongs = set(), []
    deadline = time.monotonic() + 5
    while len(answered) < len(ids) + 1 or not pongs:
        f = c.frame(deadline)
        if f is None:
            break
        if f[0] == PONG:
            pongs.append(f[1])
        elif f[0] == TEXT:
            m = json.loads(f[1])
            if m.get("type") == "error":
                answered.add(m["payload"].get("ref_id"))
    # lws answers the latest ping it has not answered yet (RFC 6455 5.5.3)
    check(answered == set(ids) | {"big"} and pongs and set(pongs) <= {b"p1", b"p2"},
          "%s: a burst of 25 messages and 2 pings in one send is answered in full without "
          "more bytes (%d of 25 answered, pongs %s)" % (name, len(answered), pongs))

    # half a record, then nothing for a second: the agent waits for the
    # rest without spinning (what OpenSSL holds is part of a record)
    rec = c.wire(frame(TEXT, json.dumps({"id": "half", "pad": "y" * 3000}).encode()))
    c.sock.sendall(rec[:len(rec) // 2])
    cpu0 = cpu_s(pid)
    time.sleep(1.0)
    used = cpu_s(pid) - cpu0
    check(used < 0.25, "%s: with half a record received the agent used %.2f s of CPU in 1 s "
          "(idle, it uses a few hundredths; spinning, a whole second)" % (name, used))
    c.sock.sendall(rec[len(rec) // 2:])
    got = c.answer_to("half")
    check(got == "half", "%s: the record's second half completes it: answered (%s)" % (name, got))

    # a message and a close frame in one send
    c.sock.sendall(c.wire(frame(TEXT, json.dumps({"id": "last"}).encode())) +
                   c.wire(frame(CLOSE, struct.pack("!H", 1000) + b"bye")))
    got, closed = None, None
    deadline = time.monotonic() + 5
    while closed is None:
        f = c.frame(deadline)
        if f is None:
            break
        if f[0] == TEXT and json.loads(f[1]).get("type") == "error":
            got = json.loads(f[1])["payload"].get("ref_id")
        elif f[0] == CLOSE:
            closed = struct.unpack("!H", f[1][:2])[0] if len(f[1]) >= 2 else 0
    check(got == "last" and closed == 1000,
          "%s: a message and a close frame in one send: answered (%s), close answered (%s)"
          % (name, got, closed))
    c.sock.close()


def main():
    tmp = tempfile.mkdtemp(prefix="msrs-read-ahead-")
    make_credentials(tmp)
    tls = os.path.join(tmp, "tls")
    ctx = ssl.create_default_context(cafile=os.path.join(tls, "ca.pem"))
    for name, folder, c in (("tls", tls, ctx), ("plain", None, None)):
        procs = Procs(tmp)
        try:
            agent, port, _ = start_agent(procs, tmp, name, agent_conf(tmp, name, folder))
            check(wait_listening(port), "%s: agent listening" % name)
            burst(name, port, c, agent.pid)
            check(procs.alive("agent-" + name), "%s: the agent ran throughout" % name)
        finally:
            stop_all(procs)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
