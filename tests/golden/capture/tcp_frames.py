#!/usr/bin/env python3
"""Reassemble CTDB node-to-node TCP streams from a classic pcap file and
split them into CTDB frames.

usage: tcp_frames.py CAPTURE.pcap [PORT]   (PORT defaults to 4379)

Prints JSON lines, one per frame, ordered by the capture time of the
segment that carried the frame's first byte:

  {"ev":"frame","transport":"tcp","src":"127.0.9.1:41234",
   "dst":"127.0.9.2:4379","t":...,"hex":...}

Only IPv4/TCP is handled (the local clusters use 127.x addresses).  A
stream is cut at its first gap (lost segment), which is reported on stderr.
"""

import json
import struct
import sys


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return 1, []
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        magic = struct.unpack_from(">I", data, 0)[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            raise SystemExit("%s: not a classic pcap file" % path)
        endian = ">"
    nano = magic == 0xA1B23C4D
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    packets = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "4I", data, off)
        off += 16
        pkt = data[off:off + incl]
        off += incl
        packets.append((sec + frac / (1e9 if nano else 1e6), pkt))
    return linktype, packets


def ip_payload(linktype, pkt):
    if linktype == 1:  # Ethernet
        if len(pkt) < 14 or struct.unpack_from(">H", pkt, 12)[0] != 0x0800:
            return None
        return pkt[14:]
    if linktype == 113:  # Linux cooked v1
        if len(pkt) < 16 or struct.unpack_from(">H", pkt, 14)[0] != 0x0800:
            return None
        return pkt[16:]
    if linktype == 276:  # Linux cooked v2
        if len(pkt) < 20 or struct.unpack_from(">H", pkt, 0)[0] != 0x0800:
            return None
        return pkt[20:]
    if linktype == 0:  # BSD loopback
        return pkt[4:] if len(pkt) >= 4 and pkt[0] in (2, 0) else None
    if linktype in (12, 101):  # raw IP
        return pkt
    raise SystemExit("unsupported pcap link type %d" % linktype)


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    port = int(sys.argv[2]) if len(sys.argv) == 3 else 4379
    linktype, packets = read_pcap(sys.argv[1])

    flows = {}  # (src, dst) -> {"isn": int|None, "segs": {seq: (t, bytes)}}
    for t, pkt in packets:
        ip = ip_payload(linktype, pkt)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0xF) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        ip = ip[:total]
        src_ip = ".".join(str(b) for b in ip[12:16])
        dst_ip = ".".join(str(b) for b in ip[16:20])
        tcp = ip[ihl:]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        if port not in (sport, dport):
            continue
        doff = (tcp[12] >> 4) * 4
        flags = tcp[13]
        payload = tcp[doff:]
        key = ("%s:%d" % (src_ip, sport), "%s:%d" % (dst_ip, dport))
        flow = flows.setdefault(key, {"isn": None, "segs": {}})
        if flags & 0x02:  # SYN
            flow["isn"] = seq
        if payload and seq not in flow["segs"]:
            flow["segs"][seq] = (t, payload)

    out = []
    for (src, dst), flow in flows.items():
        if not flow["segs"]:
            continue
        segs = flow["segs"]
        base = flow["isn"] + 1 if flow["isn"] is not None else min(segs)
        if flow["isn"] is None:
            print("%s -> %s: no SYN seen, starting mid-stream" % (src, dst), file=sys.stderr)
        # relative sequence numbers make wrap-around harmless
        ordered = sorted(((s - base) & 0xFFFFFFFF, t, p) for s, (t, p) in segs.items())
        stream = bytearray()
        times = []  # (stream offset, time)
        for rel, t, p in ordered:
            end = rel + len(p)
            if rel > len(stream):
                print("%s -> %s: gap at offset %d, stream cut" % (src, dst, len(stream)), file=sys.stderr)
                break
            if end <= len(stream):
                continue  # retransmission
            times.append((len(stream), t))
            stream += p[len(stream) - rel:]
        # split into frames
        off = 0
        ti = 0
        while off + 4 <= len(stream):
            (length,) = struct.unpack_from("<I", stream, off)
            if length < 4:
                print("%s -> %s: bad length %d at %d" % (src, dst, length, off), file=sys.stderr)
                break
            if off + length > len(stream):
                break
            while ti + 1 < len(times) and times[ti + 1][0] <= off:
                ti += 1
            out.append({"ev": "frame", "transport": "tcp", "src": src, "dst": dst,
                        "t": times[ti][1], "hex": bytes(stream[off:off + length]).hex()})
            off += length
    out.sort(key=lambda r: r["t"])
    for r in out:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
