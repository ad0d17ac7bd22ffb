#!/usr/bin/env python3
"""Sends one CTDB_EVENT_CMD_SCRIPT request to a ctdb-eventd socket and prints the result.

Usage: eventd_script_request.py <socket> <reqid> <component> <script> <enable|disable>

No stock 4.17 program sends SCRIPT requests (`ctdb-event script enable|disable` changes the
execute bit itself), so the request bytes are built here from event_protocol.c's layout:
header {length, version=0, reqid} then cmd=3, component stringn, script stringn, action u32.
"""

import socket
import struct
import sys


def stringn(s):
    b = s.encode() + b"\0"
    return struct.pack("=I", len(b)) + b


def main():
    path, reqid, component, script, action = sys.argv[1:6]
    body = struct.pack("=I", 3) + stringn(component) + stringn(script)
    body += struct.pack("=I", 1 if action == "enable" else 0)
    packet = struct.pack("=III", 12 + len(body), 0, int(reqid)) + body
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(packet)
    reply = b""
    while len(reply) < 4 or len(reply) < struct.unpack("=I", reply[:4])[0]:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    sock.close()
    _, _, rid, cmd, result = struct.unpack("=IIIIi", reply[:20])
    print("reqid=%d cmd=%d result=%d" % (rid, cmd, result))


if __name__ == "__main__":
    main()
