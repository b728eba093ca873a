"""An XDF 1.0 reader written from the specification (github.com/sccn/xdf
wiki, "Specifications"), independently of msrs's writer: the tests check
it against XDF files LSL's tools wrote (tests/data/xdf) and then read
msrs-archiver's output with it.

read(path) -> {"header": xml, "streams": {id: {"header": {tag: text},
"time": [...], "values": [[...]...], "offsets": [(time, value)...],
"footer": {tag: text}}}, "boundaries": n}"""
import struct
import xml.etree.ElementTree as ET

FORMATS = {"int8": "<b", "int16": "<h", "int32": "<i", "int64": "<q", "float32": "<f",
           "double64": "<d"}
BOUNDARY = bytes([0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46,
                  0x73, 0x83, 0xCB, 0xE4])


class XdfError(Exception):
    pass


class Buf:
    def __init__(self, data, pos=0, end=None):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def take(self, n):
        if self.pos + n > self.end:
            raise XdfError("truncated at byte %d: wanted %d more bytes" % (self.pos, n))
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def varlen(self):
        n = self.unpack("<B")
        if n not in (1, 4, 8):
            raise XdfError("bad length-byte count %d at byte %d" % (n, self.pos - 1))
        return self.unpack({1: "<B", 4: "<I", 8: "<Q"}[n])


def _xml(raw):
    root = ET.fromstring(raw.decode("utf-8"))
    return {child.tag: (child.text or "") for child in root}, root


def read(path):
    data = open(path, "rb").read()
    if data[:4] != b"XDF:":
        raise XdfError("%s: no XDF: magic" % path)
    b = Buf(data, 4)
    out = {"header": None, "streams": {}, "boundaries": 0}
    last_time = {}
    while b.pos < len(data):
        length = b.varlen()
        start = b.pos
        tag = b.unpack("<H")
        c = Buf(data, b.pos, start + length)
        if start + length > len(data):
            raise XdfError("chunk at byte %d runs past the end" % start)
        if tag == 1:
            out["header"] = data[c.pos:c.end].decode("utf-8")
        elif tag in (2, 3, 4, 6):
            sid = c.unpack("<I")
            s = out["streams"].setdefault(sid, {"header": None, "time": [], "values": [],
                                                "offsets": [], "footer": None})
            if tag == 2:
                s["header"], root = _xml(data[c.pos:c.end])
                s["header_root"] = root
            elif tag == 3:
                h = s["header"]
                if h is None:
                    raise XdfError("samples of stream %d before its header" % sid)
                fmt, channels = h["channel_format"], int(h["channel_count"])
                srate = float(h.get("nominal_srate") or 0)
                n = c.varlen()
                for _ in range(n):
                    tsb = c.unpack("<B")
                    if tsb == 8:
                        t = c.unpack("<d")
                    elif tsb == 0:  # deduced from the previous sample and the rate
                        t = last_time.get(sid, 0.0) + (1.0 / srate if srate else 0.0)
                    else:
                        raise XdfError("bad TimeStampBytes %d" % tsb)
                    last_time[sid] = t
                    if fmt == "string":
                        row = [c.take(c.varlen()).decode("utf-8") for _ in range(channels)]
                    else:
                        row = [c.unpack(FORMATS[fmt]) for _ in range(channels)]
                    s["time"].append(t)
                    s["values"].append(row)
            elif tag == 4:
                s["offsets"].append((c.unpack("<d"), c.unpack("<d")))
            else:
                s["footer"], _ = _xml(data[c.pos:c.end])
        elif tag == 5:
            if data[c.pos:c.end] != BOUNDARY:
                raise XdfError("boundary chunk at byte %d has the wrong UUID" % start)
            out["boundaries"] += 1
        else:
            raise XdfError("unknown chunk tag %d at byte %d" % (tag, start))
        b.pos = start + length
    return out


def synced_times(stream):
    """The stream's times on the recorder's clock: plus a least-squares line
    through its ClockOffset chunks (as pyxdf does without jitter removal)."""
    o = stream["offsets"]
    if not o:
        return list(stream["time"])
    if len(o) == 1:
        return [t + o[0][1] for t in stream["time"]]
    n = len(o)
    mx = sum(x for x, _ in o) / n
    my = sum(y for _, y in o) / n
    sxx = sum((x - mx) ** 2 for x, _ in o)
    slope = sum((x - mx) * (y - my) for x, y in o) / sxx if sxx else 0.0
    return [t + my + slope * (t - mx) for t in stream["time"]]
