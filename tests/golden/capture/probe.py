#!/usr/bin/env python3
"""Raw CTDB client used by capture_all.sh to produce packets the stock CLI
never sends: unpadded controls, unknown and obsolete opcodes, srvid
registration followed by a message round trip, ECHO_DATA, tunnels.

usage: probe.py SOCKET_PATH

Talks to SOCKET_PATH (normally the recording proxy in front of a node) and
prints one line per exchange.  It does not judge the answers; the capture
keeps whatever the daemon sends.
"""

import socket
import struct
import sys
import time

MAGIC = 0x43544442
CURRENT_NODE = 0xF0000001
OP_REQ_MESSAGE = 5
OP_REQ_CONTROL = 7
OP_REPLY_CONTROL = 8
OP_REQ_TUNNEL = 10

SRVID_LEADER = 0xF101000000000000
# Private srvid for the message round trip (arbitrary, outside the reserved ranges).
SRVID_PROBE = 0x0000000012345678

OPC_PROCESS_EXISTS = 0
OPC_REGISTER_SRVID = 23
OPC_DEREGISTER_SRVID = 24
OPC_GET_PNN = 35
OPC_GET_NODEMAPV4 = 10
OPC_GET_RECMASTER = 31
OPC_GET_BAN_STATE = 110
OPC_GET_NODES_FILE = 140
OPC_TUNNEL_REGISTER = 152
OPC_TUNNEL_DEREGISTER = 153
OPC_ECHO_DATA = 156
OPC_CHECK_PID_SRVID = 151
OPC_START_PERSISTENT_UPDATE = 81
OPC_GET_DB_SEQNUM = 120
OPC_SET_TUNABLE = 48
OPC_GET_TUNABLE = 49

REQID = [0x5000]


def pad8(frame):
    rem = len(frame) % 8
    return frame + b"\0" * ((8 - rem) % 8)


def header(length, op, dest, reqid, generation=0, src=0):
    return struct.pack("<8I", length, MAGIC, 1, generation, op, dest, src, reqid)


def control(opcode, data=b"", srvid=0, flags=0, dest=CURRENT_NODE, padded=True, reqid=None):
    if reqid is None:
        REQID[0] += 1
        reqid = REQID[0]
    body = struct.pack("<IIQIII", opcode, 0, srvid, 0, flags, len(data)) + data
    frame = header(32 + len(body), OP_REQ_CONTROL, dest, reqid) + body
    if padded:
        frame = pad8(frame)
        frame = struct.pack("<I", len(frame)) + frame[4:]
    return reqid, frame


def message(srvid, data, dest=CURRENT_NODE):
    body = struct.pack("<QI", srvid, len(data)) + data
    frame = pad8(header(32 + len(body), OP_REQ_MESSAGE, dest, 0, generation=1) + body)
    return struct.pack("<I", len(frame)) + frame[4:]


def tunnel(tunnel_id, flags, data, dest):
    REQID[0] += 1
    body = struct.pack("<QII", tunnel_id, flags, len(data)) + data
    frame = pad8(header(32 + len(body), OP_REQ_TUNNEL, dest, REQID[0]) + body)
    return struct.pack("<I", len(frame)) + frame[4:]


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def send(self, frame):
        self.sock.sendall(frame)

    def read_frame(self, timeout):
        self.sock.settimeout(timeout)
        try:
            while True:
                if len(self.buf) >= 4:
                    (length,) = struct.unpack_from("<I", self.buf)
                    if len(self.buf) >= length:
                        frame, self.buf = self.buf[:length], self.buf[length:]
                        return frame
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self.buf += chunk
        except socket.timeout:
            return None

    def wait_reply(self, reqid, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            frame = self.read_frame(deadline - time.time())
            if frame is None:
                return None
            op, rid = struct.unpack_from("<I", frame, 16)[0], struct.unpack_from("<I", frame, 28)[0]
            if op == OP_REPLY_CONTROL and rid == reqid:
                return frame
        return None

    def wait_message(self, srvid, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            frame = self.read_frame(deadline - time.time())
            if frame is None:
                return None
            op = struct.unpack_from("<I", frame, 16)[0]
            if op == OP_REQ_MESSAGE and struct.unpack_from("<Q", frame, 32)[0] == srvid:
                return frame
        return None

    def call(self, name, opcode, **kw):
        reqid, frame = control(opcode, **kw)
        self.send(frame)
        reply = self.wait_reply(reqid)
        if reply is None:
            print("%-28s no reply" % name)
            return None
        status, datalen, errlen = struct.unpack_from("<iII", reply, 32)
        print("%-28s len=%d status=%d datalen=%d errorlen=%d" % (name, len(reply), status, datalen, errlen))
        return reply


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    conn = Conn(sys.argv[1])

    reply = conn.call("GET_PNN padded", OPC_GET_PNN)
    pnn = struct.unpack_from("<i", reply, 32)[0] if reply else 0
    conn.call("GET_PNN unpadded (60)", OPC_GET_PNN, padded=False)
    conn.call("opcode 999 (unknown)", 999)
    conn.call("GET_NODEMAPv4 (obsolete)", OPC_GET_NODEMAPV4)
    conn.call("GET_RECMASTER (obsolete)", OPC_GET_RECMASTER)
    conn.call("GET_BAN_STATE", OPC_GET_BAN_STATE)
    conn.call("GET_NODES_FILE", OPC_GET_NODES_FILE)
    conn.call("START_PERSISTENT_UPDATE", OPC_START_PERSISTENT_UPDATE)
    conn.call("GET_DB_SEQNUM bogus db", OPC_GET_DB_SEQNUM, data=struct.pack("<II", 0xDEADBEEF, 0))

    # Tunables by name: the CLI checks names itself, so only a raw client
    # gets the daemon's answers for unknown and obsolete names.
    for label, name in (("GET_TUNABLE bogus", b"bogus\0"),
                        ("GET_TUNABLE obsolete", b"MaxRedirectCount\0")):
        conn.call(label, OPC_GET_TUNABLE, data=struct.pack("<I", len(name)) + name)
    for label, name in (("SET_TUNABLE bogus", b"bogus\0"),
                        ("SET_TUNABLE obsolete", b"MaxRedirectCount\0")):
        conn.call(label, OPC_SET_TUNABLE, data=struct.pack("<II", 3, len(name)) + name)

    # srvid registration and a message round trip through the daemon
    conn.call("REGISTER_SRVID probe", OPC_REGISTER_SRVID, srvid=SRVID_PROBE)
    conn.send(message(SRVID_PROBE, b"golden probe message\0"))
    got = conn.wait_message(SRVID_PROBE, timeout=3)
    print("%-28s %s" % ("message round trip", "ok" if got else "nothing"))
    conn.call("CHECK_PID_SRVID self", OPC_CHECK_PID_SRVID,
              data=struct.pack("<iQ", 0x7FFFFFF0, SRVID_PROBE))
    conn.call("DEREGISTER_SRVID probe", OPC_DEREGISTER_SRVID, srvid=SRVID_PROBE)
    conn.call("DEREGISTER_SRVID unknown", OPC_DEREGISTER_SRVID, srvid=SRVID_PROBE + 1)

    conn.call("REGISTER_SRVID leader", OPC_REGISTER_SRVID, srvid=SRVID_LEADER)
    got = conn.wait_message(SRVID_LEADER, timeout=4)
    print("%-28s %s" % ("leader broadcast", "ok" if got else "nothing"))

    # ECHO_DATA: u32 delay (ms), then datan
    payload = b"echo-golden-12345"
    conn.call("ECHO_DATA", OPC_ECHO_DATA,
              data=struct.pack("<II", 10, len(payload)) + payload)

    # Tunnel to ourselves
    tunnel_id = 0xDE00000000000001
    conn.call("TUNNEL_REGISTER", OPC_TUNNEL_REGISTER, srvid=tunnel_id)
    conn.send(tunnel(tunnel_id, 0x1, b"tunnel-request-data", pnn))
    frame = conn.read_frame(2.0)
    while frame is not None and struct.unpack_from("<I", frame, 16)[0] != OP_REQ_TUNNEL:
        frame = conn.read_frame(2.0)
    print("%-28s %s" % ("tunnel round trip", "ok" if frame else "nothing"))
    conn.call("TUNNEL_DEREGISTER", OPC_TUNNEL_DEREGISTER, srvid=tunnel_id)

    # A control for a node that does not exist: the daemon answers itself,
    # with an error string ("ctdb_control to disconnected node").
    conn.call("GET_PID to pnn 99", 30, dest=99)
    conn.call("PROCESS_EXISTS bogus pid", OPC_PROCESS_EXISTS, data=struct.pack("<i", 0x7FFFFFF0))
    # give the proxy a moment to log the last frames before we hang up
    time.sleep(0.3)


if __name__ == "__main__":
    main()
